//! Topic administration: `/v1/topics` and `/v1/topics/{topic}`.

use crate::auth::{caller, Caller};
use crate::problem::Problem;
use crate::{json_body, AppState};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use ferry_auth::acl::CLUSTER_NAME;
use ferry_auth::{Operation, ResourceType};
use ferry_broker::{TopicInfo, TopicSettings};
use serde_json::{json, Value};

/// The JSON form of a topic: its settings and each partition's bounds and size.
pub fn topic_json(t: &TopicInfo) -> Value {
    let c = &t.config;
    json!({
        "name": c.name,
        "topic_id": c.topic_id.to_string(),
        "partitions": c.partitions,
        "retention_ms": c.retention_ms.map_or(-1, |v| v as i64),
        "retention_bytes": c.retention_bytes.map_or(-1, |v| v as i64),
        "segment_bytes": c.segment_bytes,
        "segment_ms": c.segment_ms,
        "max_record_bytes": c.max_record_bytes,
        "durability": c.durability.as_str(),
        "flush_interval_ms": c.flush_interval_ms,
        "timestamp_type": c.timestamp_type.as_str(),
        "cleanup_policy": c.cleanup_policy.as_str(),
        "delete_retention_ms": c.delete_retention_ms,
        "min_compaction_lag_ms": c.min_compaction_lag_ms,
        "min_cleanable_dirty_ratio": c.min_cleanable_dirty_ratio.0,
        "max_compaction_lag_ms": c.max_compaction_lag_ms,
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

pub async fn create(
    State(state): State<AppState>,
    c: Option<axum::Extension<Caller>>,
    body: Bytes,
) -> Result<Response, Problem> {
    // `name` plus the settings; the settings type refuses unknown fields.
    let mut fields: serde_json::Map<String, Value> = json_body(&body, &[])?;
    let name = match fields.remove("name") {
        Some(Value::String(n)) => n,
        Some(_) => return Err(Problem::invalid_json("name must be a string")),
        None => return Err(Problem::invalid_json("missing field `name`")),
    };
    let settings: TopicSettings = serde_json::from_value(Value::Object(fields))
        .map_err(|e| Problem::invalid_json(e.to_string()))?;
    // As in Kafka: `create` on the cluster, or on the topic's name.
    let c = caller(c);
    if !c.may(
        &state,
        Operation::Create,
        ResourceType::Cluster,
        CLUSTER_NAME,
    ) {
        c.check(&state, Operation::Create, ResourceType::Topic, &name)?;
    }
    let info = state.broker.create_topic(&name, settings).await?;
    let location = format!("/v1/topics/{}", info.config.name);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(topic_json(&info)),
    )
        .into_response())
}

pub async fn list(
    State(state): State<AppState>,
    c: Option<axum::Extension<Caller>>,
) -> Json<Value> {
    let c = caller(c);
    let topics: Vec<Value> = state
        .broker
        .list_topics()
        .iter()
        .filter(|t| {
            c.may(
                &state,
                Operation::Describe,
                ResourceType::Topic,
                &t.config.name,
            )
        })
        .map(topic_json)
        .collect();
    Json(json!({ "topics": topics }))
}

pub async fn describe(
    State(state): State<AppState>,
    Path(topic): Path<String>,
) -> Result<Json<Value>, Problem> {
    Ok(Json(topic_json(&state.broker.describe_topic(&topic)?)))
}

pub async fn update(
    State(state): State<AppState>,
    Path(topic): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, Problem> {
    let settings: TopicSettings = json_body(&body, &[])?;
    Ok(Json(topic_json(
        &state.broker.update_topic(&topic, settings).await?,
    )))
}

pub async fn delete(
    State(state): State<AppState>,
    Path(topic): Path<String>,
) -> Result<StatusCode, Problem> {
    state.broker.delete_topic(&topic).await?;
    Ok(StatusCode::NO_CONTENT)
}
