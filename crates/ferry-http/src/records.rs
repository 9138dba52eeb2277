//! Producing and reading records.

use crate::codec::{to_produce, ProduceBody, RECORDS_PER_REQUEST_MAX};
use crate::json_out::{self, JsonBody};
use crate::problem::Problem;
use crate::trace::RequestTrace;
use crate::{json_body, AppState};
use axum::extract::{Path, Query, State};
use axum::Json;
use bytes::Bytes;
use ferry_broker::ProduceRecord;
use ferry_log::batch::RecordHeader;
use ferry_trace::{attr, Span, TraceParent};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

/// Limits on reads, named with their unit last.
pub const READ_RECORDS_MAX: usize = 10_000;
pub const READ_BYTES_MAX: usize = 64 * 1024 * 1024;
pub const WAIT_MS_MAX: u64 = 60_000;

pub async fn produce(
    State(state): State<AppState>,
    Path(topic): Path<String>,
    trace: RequestTrace,
    body: Bytes,
) -> Result<Json<Value>, Problem> {
    let mut span = trace.server_span("produce", "send", attr::DESTINATION, &topic);
    let result = produce_records(&state, &topic, &body, &mut span).await;
    crate::trace::finish(&mut span, &result);
    result
}

async fn produce_records(
    state: &AppState,
    topic: &str,
    body: &[u8],
    span: &mut Span,
) -> Result<Json<Value>, Problem> {
    let b: ProduceBody = json_body(body, &["records.[]"])?;
    if b.records.is_empty() {
        return Err(Problem::bad_request(
            "invalid-record",
            "records is empty: send at least one record",
        ));
    }
    if b.records.len() > RECORDS_PER_REQUEST_MAX {
        return Err(Problem::bad_request(
            "too-many-records",
            format!(
                "{} records in one request, more than the limit of {RECORDS_PER_REQUEST_MAX}",
                b.records.len()
            ),
        ));
    }
    let mut records = b
        .records
        .into_iter()
        .enumerate()
        .map(|(i, r)| to_produce(i, r))
        .collect::<Result<Vec<_>, _>>()?;
    let context = span.context();
    if let Some(context) = context {
        span.set(attr::MESSAGE_COUNT, records.len() as i64);
        continue_trace(&mut records, context);
    }
    let produced = state.broker.produce_traced(topic, records, context).await?;
    if span.is_on() {
        let mut partitions: Vec<i64> = produced.iter().map(|p| i64::from(p.partition)).collect();
        partitions.sort_unstable();
        partitions.dedup();
        if let [one] = partitions[..] {
            span.set(attr::PARTITION, one.to_string());
        }
        span.set(
            attr::PARTITIONS,
            ferry_trace::Value::Array(partitions.into()),
        );
    }
    let offsets: Vec<Value> = produced
        .iter()
        .map(|p| json!({"partition": p.partition, "offset": p.offset}))
        .collect();
    Ok(Json(json!({ "offsets": offsets })))
}

/// Gives each record without a `traceparent` header one naming the produce span
/// (`context`), so that what the record causes later (deliveries, webhook calls)
/// continues this trace. A record's own header is kept.
fn continue_trace(records: &mut [ProduceRecord], context: TraceParent) {
    let value = Bytes::from(context.to_string());
    for r in records {
        if !r
            .headers
            .iter()
            .any(|h| h.key.eq_ignore_ascii_case(b"traceparent"))
        {
            r.headers.push(RecordHeader {
                key: Bytes::from_static(b"traceparent"),
                value: Some(value.clone()),
            });
        }
    }
}

/// A query parameter parsed as `T`, or a problem naming it.
pub(crate) fn param<T: std::str::FromStr>(
    q: &HashMap<String, String>,
    name: &str,
) -> Result<Option<T>, Problem> {
    match q.get(name) {
        None => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| {
            Problem::invalid_parameter(format!("{name}={s:?} is not a valid non-negative integer"))
        }),
    }
}

const READ_PARAMS: [&str; 4] = ["offset", "max_records", "max_bytes", "wait_ms"];

pub async fn read(
    State(state): State<AppState>,
    Path((topic, partition)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<JsonBody, Problem> {
    if let Some(unknown) = q.keys().find(|k| !READ_PARAMS.contains(&k.as_str())) {
        return Err(Problem::invalid_parameter(format!(
            "unknown parameter {unknown:?}; expected one of {READ_PARAMS:?}"
        )));
    }
    let partition: u32 = partition.parse().map_err(|_| {
        Problem::invalid_parameter(format!(
            "partition {partition:?} is not a non-negative integer"
        ))
    })?;
    let max_records: usize = param(&q, "max_records")?.unwrap_or(100);
    let max_bytes: usize = param(&q, "max_bytes")?.unwrap_or(1024 * 1024);
    let wait_ms: u64 = param(&q, "wait_ms")?.unwrap_or(0);
    if max_records == 0 || max_records > READ_RECORDS_MAX {
        return Err(Problem::invalid_parameter(format!(
            "max_records must be between 1 and {READ_RECORDS_MAX}"
        )));
    }
    if max_bytes == 0 || max_bytes > READ_BYTES_MAX {
        return Err(Problem::invalid_parameter(format!(
            "max_bytes must be between 1 and {READ_BYTES_MAX}"
        )));
    }
    if wait_ms > WAIT_MS_MAX {
        return Err(Problem::invalid_parameter(format!(
            "wait_ms must be at most {WAIT_MS_MAX}"
        )));
    }
    let offset = match param::<u64>(&q, "offset")? {
        Some(o) => o,
        None => state.broker.bounds(&topic, partition)?.0,
    };
    let res = state
        .broker
        .read(
            &topic,
            partition,
            offset,
            max_records,
            max_bytes,
            Duration::from_millis(wait_ms),
        )
        .await?;
    Ok(JsonBody(json_out::records_body(
        &res.records,
        json_out::size_hint,
        json_out::record,
        |out| {
            json_out::int_field(out, "earliest", res.earliest);
            json_out::int_field(out, "latest", res.latest);
            json_out::int_field(out, "next_offset", res.next_offset);
        },
    )))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OffsetQuery {
    timestamp: i64,
}

/// The first offset whose timestamp is at or after `timestamp` (ms), or the latest.
pub async fn offset_for_time(
    State(state): State<AppState>,
    Path((topic, partition)): Path<(String, u32)>,
    q: Result<Query<OffsetQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, Problem> {
    let Query(q) = q.map_err(|e| {
        Problem::invalid_parameter(format!(
            "{e}; expected ?timestamp=<milliseconds since 1970>"
        ))
    })?;
    let offset = state
        .broker
        .find_by_time(&topic, partition, q.timestamp)
        .await?
        .offset();
    Ok(Json(
        json!({ "partition": partition, "timestamp": q.timestamp, "offset": offset }),
    ))
}

/// Where `delete-records` moves a partition's start: an offset, or `"latest"` (the
/// partition's end: every record readable now).
#[derive(Deserialize)]
#[serde(untagged)]
enum DeleteBefore {
    Offset(u64),
    Named(DeleteBeforeName),
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum DeleteBeforeName {
    Latest,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteRecordsBody {
    before_offset: DeleteBefore,
}

/// Deletes a partition's records below an offset, as Kafka's DeleteRecords does: the
/// partition's start (`earliest`) moves there, durably, for every reader.
pub async fn delete_records(
    State(state): State<AppState>,
    Path((topic, partition)): Path<(String, u32)>,
    body: Bytes,
) -> Result<Json<Value>, Problem> {
    let body: DeleteRecordsBody = serde_json::from_value(Value::Object(json_body(&body, &[])?))
        .map_err(|e| {
            Problem::invalid_json(format!(
                "{e}; expected {{\"before_offset\": <offset> or \"latest\"}}"
            ))
        })?;
    let offset = match body.before_offset {
        // Offsets are Kafka's int64.
        DeleteBefore::Offset(o) if o > i64::MAX as u64 => {
            return Err(Problem::invalid_json(format!(
                "before_offset {o} is larger than the largest offset, {}",
                i64::MAX
            )))
        }
        DeleteBefore::Offset(o) => Some(o),
        DeleteBefore::Named(DeleteBeforeName::Latest) => None,
    };
    let earliest = state
        .broker
        .delete_records(&topic, partition, offset)
        .await?;
    let (_, latest) = state.broker.bounds(&topic, partition)?;
    debug_assert!(earliest <= latest, "a start past the end");
    Ok(Json(
        json!({ "partition": partition, "earliest": earliest, "latest": latest }),
    ))
}
