//! Topic administration: `/v1/topics` and `/v1/topics/{topic}`.

use crate::problem::Problem;
use crate::{json_body, AppState};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use ferry_broker::{DurabilityPolicy, NewTopic, TopicInfo, TopicUpdate};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTopicBody {
    name: String,
    partitions: Option<u32>,
    retention_ms: Option<i64>,
    retention_bytes: Option<i64>,
    segment_bytes: Option<u64>,
    segment_ms: Option<u64>,
    max_record_bytes: Option<u64>,
    durability: Option<DurabilityPolicy>,
    flush_interval_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateTopicBody {
    partitions: Option<u32>,
    retention_ms: Option<i64>,
    retention_bytes: Option<i64>,
    segment_bytes: Option<u64>,
    segment_ms: Option<u64>,
    max_record_bytes: Option<u64>,
    durability: Option<DurabilityPolicy>,
    flush_interval_ms: Option<u64>,
}

/// The JSON form of a topic: its settings and each partition's bounds and size.
pub fn topic_json(t: &TopicInfo) -> Value {
    let c = &t.config;
    json!({
        "name": c.name,
        "partitions": c.partitions,
        "retention_ms": c.retention_ms.map_or(-1, |v| v as i64),
        "retention_bytes": c.retention_bytes.map_or(-1, |v| v as i64),
        "segment_bytes": c.segment_bytes,
        "segment_ms": c.segment_ms,
        "max_record_bytes": c.max_record_bytes,
        "durability": c.durability.as_str(),
        "flush_interval_ms": c.flush_interval_ms,
        "created_at_ms": c.created_at_ms,
        "partition_stats": t.partitions.iter().map(|p| json!({
            "partition": p.partition,
            "earliest": p.earliest,
            "latest": p.latest,
            "size_bytes": p.size_bytes,
            "segments": p.segments,
        })).collect::<Vec<_>>(),
    })
}

pub async fn create(State(state): State<AppState>, body: Bytes) -> Result<Response, Problem> {
    let b: CreateTopicBody = json_body(&body)?;
    let info = state
        .broker
        .create_topic(NewTopic {
            name: b.name,
            partitions: b.partitions,
            retention_ms: b.retention_ms,
            retention_bytes: b.retention_bytes,
            segment_bytes: b.segment_bytes,
            segment_ms: b.segment_ms,
            max_record_bytes: b.max_record_bytes,
            durability: b.durability,
            flush_interval_ms: b.flush_interval_ms,
        })
        .await?;
    let location = format!("/v1/topics/{}", info.config.name);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(topic_json(&info))).into_response())
}

pub async fn list(State(state): State<AppState>) -> Json<Value> {
    let topics: Vec<Value> = state.broker.list_topics().iter().map(topic_json).collect();
    Json(json!({ "topics": topics }))
}

pub async fn describe(State(state): State<AppState>, Path(topic): Path<String>) -> Result<Json<Value>, Problem> {
    Ok(Json(topic_json(&state.broker.describe_topic(&topic)?)))
}

pub async fn update(State(state): State<AppState>, Path(topic): Path<String>, body: Bytes) -> Result<Json<Value>, Problem> {
    let b: UpdateTopicBody = json_body(&body)?;
    let info = state
        .broker
        .update_topic(
            &topic,
            TopicUpdate {
                partitions: b.partitions,
                retention_ms: b.retention_ms,
                retention_bytes: b.retention_bytes,
                segment_bytes: b.segment_bytes,
                segment_ms: b.segment_ms,
                max_record_bytes: b.max_record_bytes,
                durability: b.durability,
                flush_interval_ms: b.flush_interval_ms,
            },
        )
        .await?;
    Ok(Json(topic_json(&info)))
}

pub async fn delete(State(state): State<AppState>, Path(topic): Path<String>) -> Result<StatusCode, Problem> {
    state.broker.delete_topic(&topic).await?;
    Ok(StatusCode::NO_CONTENT)
}
