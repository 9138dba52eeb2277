//! RFC 9457 problem details: every HTTP error, with a stable `type` per kind. Broker
//! errors map to problems here and nowhere else.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use ferry_broker::BrokerError;
use serde_json::{json, Map, Value};

/// The cause of a 5xx answer, carried in the response's extensions from where the
/// problem was made to the layer that logs every 5xx (`observe.rs`).
#[derive(Clone, Debug)]
pub struct ServerErrorCause(pub String);

/// Prefix of every problem `type`; the rest is a stable slug documented in docs/http-api.md.
pub const PROBLEM_TYPE_PREFIX: &str = "urn:ferry:problem:";

#[derive(Debug)]
pub struct Problem {
    pub status: StatusCode,
    pub slug: &'static str,
    pub title: &'static str,
    pub detail: String,
    pub extra: Map<String, Value>,
}

impl Problem {
    pub fn new(
        status: StatusCode,
        slug: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Problem {
            status,
            slug,
            title,
            detail: detail.into(),
            extra: Map::new(),
        }
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_string(), value.into());
        self
    }

    pub fn bad_request(slug: &'static str, detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::BAD_REQUEST, slug, "Bad request", detail)
    }

    pub fn invalid_json(detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-json",
            "Request body is not valid JSON for this operation",
            detail,
        )
    }

    pub fn invalid_parameter(detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-parameter",
            "Invalid query or path parameter",
            detail,
        )
    }

    pub fn too_large(limit: usize) -> Self {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request-too-large",
            "Request body too large",
            format!("the request body is larger than the limit of {limit} bytes (setting max_request_bytes)"),
        )
        .with("limit_bytes", limit)
    }
}

impl From<BrokerError> for Problem {
    /// The mapping table of broker errors to problems: one arm per variant, told apart
    /// by variant only, which is why this function runs past ~70 lines (kept whole so
    /// the table reads in one place; `tests::table` lists the same cases).
    fn from(e: BrokerError) -> Self {
        use BrokerError::*;
        let detail = e.to_string();
        match e {
            TopicNotFound(_) => Problem::new(
                StatusCode::NOT_FOUND,
                "topic-not-found",
                "Topic not found",
                detail,
            ),
            TopicExists(_) => Problem::new(
                StatusCode::CONFLICT,
                "topic-exists",
                "Topic already exists",
                detail,
            ),
            PartitionLimit { limit, .. } => Problem::new(
                StatusCode::CONFLICT,
                "partition-limit",
                "Too many partitions",
                detail,
            )
            .with("max_partitions", limit),
            PartitionNotFound { count, .. } => Problem::new(
                StatusCode::NOT_FOUND,
                "partition-not-found",
                "Partition not found",
                detail,
            )
            .with("partitions", count),
            InvalidTopicName { .. } => Problem::bad_request("invalid-topic-name", detail),
            InvalidConfig(_) => Problem::bad_request("invalid-config", detail),
            InvalidRecord(_) => Problem::bad_request("invalid-record", detail),
            RecordTooLarge { index, max, .. } => Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "record-too-large",
                "Record too large",
                detail,
            )
            .with("record_index", index)
            .with("max_record_bytes", max),
            OffsetOutOfRange {
                earliest, latest, ..
            } => Problem::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "offset-out-of-range",
                "Offset out of range",
                detail,
            )
            .with("earliest", earliest)
            .with("latest", latest),
            DiskFull(_) => Problem::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "disk-full",
                "Disk full",
                detail,
            ),
            Corrupt { .. } => Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "corrupt-data",
                "Stored data is corrupt",
                detail,
            ),
            Unavailable(_) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Partition unavailable",
                detail,
            ),
            Storage(_) | Io { .. } | DataDirLocked { .. } => Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "storage-error",
                "Storage error",
                detail,
            ),
            Meta(_) => Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "metadata-error",
                "Metadata store error",
                detail,
            ),
            SubscriptionNotFound(_) => Problem::new(
                StatusCode::NOT_FOUND,
                "subscription-not-found",
                "Subscription not found",
                detail,
            ),
            SubscriptionExists(_) => Problem::new(
                StatusCode::CONFLICT,
                "subscription-exists",
                "Subscription already exists",
                detail,
            ),
            InvalidFilter(f) => Problem::bad_request("invalid-filter", detail).with("path", f.path),
            InvalidTimeout(_) => Problem::bad_request("invalid-timeout", detail),
            LeaseNotFound { ids, .. } => Problem::new(
                StatusCode::NOT_FOUND,
                "lease-not-found",
                "Lease not found",
                detail,
            )
            .with("lease_ids", ids),
            LeaseAlreadyAcked { ids } => Problem::new(
                StatusCode::CONFLICT,
                "lease-already-acked",
                "Already acknowledged",
                detail,
            )
            .with("lease_ids", ids),
            PushEndpointForbidden(_) => Problem::new(
                StatusCode::FORBIDDEN,
                "push-endpoint-forbidden",
                "Push endpoint not allowed",
                detail,
            ),
            OpenFileLimit { limit, .. } => Problem::new(
                StatusCode::CONFLICT,
                "partition-limit",
                "Too many partitions",
                detail,
            )
            .with("max_open_segments", limit),
            OutOfOrderSequence(_) | InvalidProducerEpoch(_) => Problem::new(
                StatusCode::CONFLICT,
                "producer-sequence",
                "Producer sequence conflict",
                detail,
            ),
            KeyRequired { index, .. } => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "key-required",
                "Record needs a key",
                detail,
            )
            .with("record_index", index),
            NotInSharedMode(_) => Problem::new(
                StatusCode::NOT_IMPLEMENTED,
                "not-in-shared-mode",
                "Not available in shared mode",
                detail,
            ),
            // Transactions are Kafka's; HTTP never reaches the coordinator.
            Transaction(_) => Problem::new(
                StatusCode::CONFLICT,
                "transaction-state",
                "Transaction state conflict",
                detail,
            ),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut body = json!({
            "type": format!("{PROBLEM_TYPE_PREFIX}{}", self.slug),
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if let Value::Object(m) = &mut body {
            m.extend(self.extra);
        }
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            bytes,
        )
            .into_response();
        if self.status.is_server_error() {
            response
                .extensions_mut()
                .insert(ServerErrorCause(format!("{}: {}", self.slug, self.detail)));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_broker::filter::FilterError;
    use ferry_broker::RecordError;
    use ferry_log::BatchError;

    /// Every broker error, one of each kind, with the status and problem type it answers
    /// (a table: one entry per variant, hence its length).
    fn table() -> Vec<(BrokerError, u16, &'static str)> {
        use BrokerError::*;
        vec![
            (TopicNotFound("t".into()), 404, "topic-not-found"),
            (TopicExists("t".into()), 409, "topic-exists"),
            (
                PartitionLimit {
                    limit: 10,
                    wanted: 11,
                },
                409,
                "partition-limit",
            ),
            (
                PartitionNotFound {
                    topic: "t".into(),
                    partition: 3,
                    count: 1,
                },
                404,
                "partition-not-found",
            ),
            (
                InvalidTopicName {
                    name: "..".into(),
                    reason: "bad",
                },
                400,
                "invalid-topic-name",
            ),
            (InvalidConfig("x".into()), 400, "invalid-config"),
            (
                BatchError::CrcMismatch {
                    stored: 1,
                    computed: 2,
                }
                .into(),
                400,
                "invalid-record",
            ),
            (BatchError::BadMagic(1).into(), 400, "invalid-record"),
            (
                InvalidRecord(RecordError::Refused("no batch".into())),
                400,
                "invalid-record",
            ),
            (
                RecordTooLarge {
                    index: 0,
                    size: 2,
                    max: 1,
                },
                413,
                "record-too-large",
            ),
            (
                OffsetOutOfRange {
                    partition: 0,
                    requested: 9,
                    earliest: 0,
                    latest: 1,
                },
                416,
                "offset-out-of-range",
            ),
            (DiskFull("full".into()), 507, "disk-full"),
            (
                Corrupt {
                    offset: None,
                    reason: "bad".into(),
                },
                500,
                "corrupt-data",
            ),
            (Unavailable("stopped".into()), 503, "unavailable"),
            (Storage("task".into()), 500, "storage-error"),
            (
                BrokerError::io("writing f", std::io::Error::other("no")),
                500,
                "storage-error",
            ),
            (
                DataDirLocked {
                    path: "d".into(),
                    lock: "l".into(),
                },
                500,
                "storage-error",
            ),
            (Meta("m".into()), 500, "metadata-error"),
            (
                SubscriptionNotFound("s".into()),
                404,
                "subscription-not-found",
            ),
            (SubscriptionExists("s".into()), 409, "subscription-exists"),
            (
                OpenFileLimit {
                    asked: 2,
                    open: 9,
                    limit: 10,
                },
                409,
                "partition-limit",
            ),
            (
                InvalidFilter(FilterError {
                    path: "p".into(),
                    message: "m".into(),
                }),
                400,
                "invalid-filter",
            ),
            (InvalidTimeout("t".into()), 400, "invalid-timeout"),
            (
                LeaseNotFound {
                    ids: vec!["a".into()],
                    reason: "r".into(),
                },
                404,
                "lease-not-found",
            ),
            (
                LeaseAlreadyAcked {
                    ids: vec!["a".into()],
                },
                409,
                "lease-already-acked",
            ),
            (OutOfOrderSequence("s".into()), 409, "producer-sequence"),
            (InvalidProducerEpoch("e".into()), 409, "producer-sequence"),
            (
                Transaction(ferry_broker::txn::TxnError::InvalidTxnState),
                409,
                "transaction-state",
            ),
        ]
    }

    #[test]
    fn every_broker_error_has_its_problem_type() {
        for (e, status, slug) in table() {
            let text = e.to_string();
            let p = Problem::from(e);
            assert_eq!((p.status.as_u16(), p.slug), (status, slug), "{text}");
            assert_eq!(p.detail, text);
        }
    }

    #[test]
    fn a_storage_error_reads_as_before_with_its_io_error_kept() {
        let e = BrokerError::io("creating /d", std::io::Error::other("denied"));
        assert_eq!(e.to_string(), "storage error: creating /d: denied");
        assert_eq!(e.io_error().map(|io| io.to_string()), Some("denied".into()));
    }
}
