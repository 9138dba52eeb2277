//! `/v1/sources`: Postgres sources (change data capture and the outbox). Managing them
//! needs `alter` on the cluster, reading them `describe` (the guard's table in auth.rs):
//! a source writes into any topic its tables name.

use crate::problem::Problem;
use crate::{json_body, AppState};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use bytes::Bytes;
use ferry_source_pg::spec::{SourceSpec, SourceUpdate};
use ferry_source_pg::SourceError;
use serde_json::{json, Value};

impl From<SourceError> for Problem {
    fn from(e: SourceError) -> Self {
        let detail = e.to_string();
        match e {
            SourceError::NotFound(_) => Problem::new(
                StatusCode::NOT_FOUND,
                "source-not-found",
                "Source not found",
                detail,
            ),
            SourceError::BackfillNotFound { .. } => Problem::new(
                StatusCode::NOT_FOUND,
                "backfill-not-found",
                "Backfill not found",
                detail,
            ),
            SourceError::Exists(_) => Problem::new(
                StatusCode::CONFLICT,
                "source-exists",
                "Source already exists",
                detail,
            ),
            SourceError::Invalid(_) => Problem::bad_request("invalid-source", detail),
            SourceError::Unreachable(_) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "source-unreachable",
                "The source's database cannot be used",
                detail,
            ),
            SourceError::Limit => Problem::new(
                StatusCode::CONFLICT,
                "source-limit",
                "Too many sources",
                detail,
            ),
            SourceError::Storage(_) => Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "storage-error",
                "Storage error",
                detail,
            ),
        }
    }
}

fn out(info: ferry_source_pg::SourceInfo) -> Json<Value> {
    Json(serde_json::to_value(info).unwrap_or(Value::Null))
}

pub async fn create(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<impl IntoResponse, Problem> {
    let spec: SourceSpec = json_body(&body, &["outbox"])?;
    let info = state.sources.create(spec).await?;
    Ok((StatusCode::CREATED, out(info)))
}

pub async fn list(State(state): State<AppState>) -> Json<Value> {
    Json(json!({"sources": state.sources.list()}))
}

pub async fn describe(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, Problem> {
    Ok(out(state.sources.get(&name)?))
}

pub async fn update(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, Problem> {
    let update: SourceUpdate = json_body(&body, &[])?;
    Ok(out(state.sources.update(&name, update).await?))
}

pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, Problem> {
    match state.sources.delete(&name).await? {
        None => Ok(StatusCode::NO_CONTENT.into_response()),
        Some(warning) => Ok((
            StatusCode::OK,
            Json(json!({"deleted": name, "warning": warning})),
        )
            .into_response()),
    }
}

pub async fn pause(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, Problem> {
    Ok(out(state.sources.pause(&name).await?))
}

pub async fn resume(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, Problem> {
    Ok(out(state.sources.resume(&name).await?))
}

pub async fn backfill(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<impl IntoResponse, Problem> {
    let req: ferry_source_pg::BackfillRequest = json_body(&body, &[])?;
    let b = state.sources.backfill(&name, req).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::to_value(b).unwrap_or(Value::Null)),
    ))
}

pub async fn cancel_backfill(
    State(state): State<AppState>,
    Path((name, id)): Path<(String, u64)>,
) -> Result<Json<Value>, Problem> {
    let b = state.sources.cancel_backfill(&name, id).await?;
    Ok(Json(serde_json::to_value(b).unwrap_or(Value::Null)))
}
