//! The broker's operating errors. Each front end maps these to its own codes in one
//! place (HTTP problem types, Kafka error codes), by variant: the typed cause travels
//! with the error (the [`BatchError`] of a refused batch, the [`io::Error`] of a failed
//! file operation), so no front end reads an error's text to tell errors apart.

use ferry_log::{BatchError, LogError};
use std::io;

/// Why records were refused.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The batch is malformed: its CRC, a length, a record that does not decode.
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// Well formed, but not accepted here (a control batch from a client, no batch at
    /// all, an unsupported special timestamp).
    #[error("{0}")]
    Refused(String),
}

impl RecordError {
    /// The batch's stored CRC does not match its bytes (Kafka's CORRUPT_MESSAGE).
    pub fn is_crc_mismatch(&self) -> bool {
        matches!(self, RecordError::Batch(BatchError::CrcMismatch { .. }))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("topic '{0}' does not exist")]
    TopicNotFound(String),
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    #[error("the broker would hold {wanted} partitions, over its limit of {limit} (max_partitions); delete topics or raise the limit")]
    PartitionLimit { limit: u32, wanted: u64 },
    #[error("topic '{topic}' has no partition {partition} (it has {count})")]
    PartitionNotFound {
        topic: String,
        partition: u32,
        count: u32,
    },
    #[error("invalid topic name '{name}': {reason}")]
    InvalidTopicName { name: String, reason: &'static str },
    #[error("invalid setting: {0}")]
    InvalidConfig(String),
    #[error("invalid record: {0}")]
    InvalidRecord(RecordError),
    #[error("record {index} is {size} bytes, larger than the topic's max_record_bytes of {max}")]
    RecordTooLarge {
        index: usize,
        size: usize,
        max: usize,
    },
    #[error("offset {requested} is out of range for partition {partition}: earliest is {earliest}, latest is {latest}")]
    OffsetOutOfRange {
        partition: u32,
        requested: u64,
        earliest: u64,
        latest: u64,
    },
    #[error("{0}")]
    DiskFull(String),
    #[error("corrupt data{}: {reason}", offset.map(|o| format!(" at offset {o}")).unwrap_or_default())]
    Corrupt { offset: Option<u64>, reason: String },
    #[error("{0}")]
    Unavailable(String),
    /// A storage failure with no operating-system error behind it (a storage task that
    /// did not finish, an encoding that failed). A failed file operation is [`Self::Io`].
    #[error("storage error: {0}")]
    Storage(String),
    /// A file operation failed: what Ferry was doing, and the operating system's error.
    /// The error's text already holds the I/O error's text, so the I/O error is kept as
    /// a field (see [`Self::io_error`]) and not as the `source()` too, which would print
    /// it twice in a chain of causes (`ferry serve` prints the chain when it cannot start).
    #[error("storage error: {context}: {error}")]
    Io { context: String, error: io::Error },
    #[error("data folder {path} is in use by another Ferry process (lock file {lock}); stop it or choose another --data-dir")]
    DataDirLocked { path: String, lock: String },
    #[error("metadata store error: {0}")]
    Meta(String),
    #[error("{0}")]
    OutOfOrderSequence(String),
    #[error("{0}")]
    InvalidProducerEpoch(String),
    #[error("subscription '{0}' does not exist")]
    SubscriptionNotFound(String),
    #[error("subscription '{0}' already exists")]
    SubscriptionExists(String),
    #[error(transparent)]
    InvalidFilter(#[from] crate::filter::FilterError),
    #[error("{0}")]
    InvalidTimeout(String),
    #[error("{reason}: {}", ids.join(", "))]
    LeaseNotFound { ids: Vec<String>, reason: String },
    #[error("already acknowledged: {}", ids.join(", "))]
    LeaseAlreadyAcked { ids: Vec<String> },
    /// A push endpoint the address guard refuses (a private or special address).
    #[error("{0}")]
    PushEndpointForbidden(String),
    /// New partitions that would take the server past the segment files it may hold
    /// open ([`crate::BrokerConfig::max_open_segments`]).
    #[error("{asked} new partition(s) do not fit: the server has {open} segment files open and may hold {limit} (from its limit of open files); delete topics or raise the limit (ulimit -n)")]
    OpenFileLimit { asked: u64, open: u64, limit: u64 },
    /// A record without a key for a compacted topic (Kafka's INVALID_RECORD):
    /// compaction keeps the latest record of each key, and a record without one has
    /// nothing to be kept by.
    #[error("record {index} has no key: topic '{topic}' is compacted (cleanup_policy compact), and every record of a compacted topic needs a key")]
    KeyRequired { topic: String, index: usize },
    /// Something the local mode does that shared mode does not do yet (its text says
    /// what).
    #[error("{0} is not available in shared mode yet (docs/scale-out.md)")]
    NotInSharedMode(&'static str),
    /// A transaction request that does not fit the coordinator's state.
    #[error(transparent)]
    Transaction(#[from] crate::txn::TxnError),
}

impl BrokerError {
    /// A failed file operation: `context` says what Ferry was doing ("creating <path>").
    pub fn io(context: impl Into<String>, error: io::Error) -> Self {
        BrokerError::Io {
            context: context.into(),
            error,
        }
    }

    /// Records refused for a reason other than a malformed batch.
    pub fn refused(reason: impl Into<String>) -> Self {
        BrokerError::InvalidRecord(RecordError::Refused(reason.into()))
    }

    /// The operating system's error behind this one, if there is one.
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            BrokerError::Io { error, .. } => Some(error),
            _ => None,
        }
    }

    pub(crate) fn from_log(partition: u32, e: LogError) -> Self {
        match e {
            LogError::OffsetOutOfRange {
                requested,
                earliest,
                latest,
            } => BrokerError::OffsetOutOfRange {
                partition,
                requested,
                earliest,
                latest,
            },
            LogError::DiskFull { .. } => BrokerError::DiskFull(e.to_string()),
            LogError::BatchTooLarge { size, max } => BrokerError::RecordTooLarge {
                index: 0,
                size,
                max,
            },
            LogError::InvalidBatch(b) => BrokerError::InvalidRecord(RecordError::Batch(b)),
            LogError::Stopped(_) | LogError::Closed => BrokerError::Unavailable(e.to_string()),
            LogError::Corrupt { .. } => BrokerError::Corrupt {
                offset: None,
                reason: e.to_string(),
            },
            LogError::Io { context, source } => BrokerError::Io {
                context,
                error: source,
            },
            LogError::OutOfOrderSequence { .. } => BrokerError::OutOfOrderSequence(e.to_string()),
            LogError::InvalidProducerEpoch { .. } => {
                BrokerError::InvalidProducerEpoch(e.to_string())
            }
        }
    }
}

pub type Result<T, E = BrokerError> = std::result::Result<T, E>;

impl From<RecordError> for BrokerError {
    fn from(e: RecordError) -> Self {
        BrokerError::InvalidRecord(e)
    }
}

impl From<BatchError> for BrokerError {
    fn from(e: BatchError) -> Self {
        BrokerError::InvalidRecord(RecordError::Batch(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_errors_keep_their_cause_and_their_text() {
        let io = LogError::Io {
            context: "writing seg".into(),
            source: io::Error::other("denied"),
        };
        let text = format!("storage error: {io}");
        let e = BrokerError::from_log(0, io);
        assert_eq!(e.to_string(), text);
        assert!(e.io_error().is_some());

        let crc = BatchError::CrcMismatch {
            stored: 1,
            computed: 2,
        };
        let text = format!("invalid record: {crc}");
        let e = BrokerError::from_log(0, LogError::InvalidBatch(crc));
        assert_eq!(e.to_string(), text);
        assert!(matches!(&e, BrokerError::InvalidRecord(r) if r.is_crc_mismatch()));
        let refused = BrokerError::refused("no record batch in the request");
        assert_eq!(
            refused.to_string(),
            "invalid record: no record batch in the request"
        );
    }
}
