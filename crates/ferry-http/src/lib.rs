//! Ferry's HTTP/JSON API, versioned under `/v1`. docs/http-api.md describes every
//! route; `/v1/openapi.json` serves the OpenAPI document.

pub mod codec;
pub mod problem;
pub mod records;
pub mod subscriptions;
pub mod topics;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ferry_broker::Broker;
use problem::Problem;
use serde::de::DeserializeOwned;
use serde_json::json;
use std::sync::Arc;

/// The OpenAPI 3.1 document of this API.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

#[derive(Clone)]
pub struct AppState {
    pub broker: Arc<Broker>,
    pub max_request_bytes: usize,
}

/// Parses a JSON body into `T`, answering a problem that names what was wrong.
pub fn json_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, Problem> {
    serde_json::from_slice(body).map_err(|e| Problem::invalid_json(e.to_string()))
}

/// Refuses a body whose declared length is over the limit before reading any of it;
/// bodies without a length are cut off by `DefaultBodyLimit` at the same limit.
async fn refuse_oversized(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > state.max_request_bytes as u64) {
        return Problem::too_large(state.max_request_bytes).into_response();
    }
    let response = next.run(req).await;
    // axum's own rejection of a body over the limit is plain text; make it a problem.
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE
        && response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v != "application/problem+json")
    {
        return Problem::too_large(state.max_request_bytes).into_response();
    }
    response
}

/// Logs every 5xx answer with its method, path and cause, whichever layer made it: a
/// 5xx is a bug or a failing disk, and the operator must be able to tell which.
async fn log_server_errors(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let response = next.run(req).await;
    let status = response.status();
    if status.is_server_error() {
        let cause = response
            .extensions()
            .get::<problem::ServerErrorCause>()
            .map_or("no cause recorded (not a problem answer)", |c| c.0.as_str());
        tracing::error!(
            %method,
            %path,
            status = status.as_u16(),
            cause,
            "HTTP request failed with a server error."
        );
    }
    response
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz() -> Json<serde_json::Value> {
    Json(json!({"status": "ready"}))
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response()
}

async fn not_found(req: Request<Body>) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "not-found",
        "Not found",
        format!("no route for {} {}", req.method(), req.uri().path()),
    )
}

/// Turns axum's plain-text rejections (a method not allowed, a bad path parameter)
/// into problems.
async fn problem_for_plain_errors(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let response = next.run(req).await;
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v == "application/problem+json");
    // 413 is left to `refuse_oversized`, which knows the limit.
    if is_problem
        || status == StatusCode::PAYLOAD_TOO_LARGE
        || !(status.is_client_error() || status.is_server_error())
    {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let detail = String::from_utf8_lossy(&text).into_owned();
    match parts.status {
        StatusCode::METHOD_NOT_ALLOWED => {
            let mut r = Problem::new(
                status,
                "method-not-allowed",
                "Method not allowed",
                format!("{method} is not allowed on {path}"),
            )
            .into_response();
            if let Some(allow) = parts.headers.get(header::ALLOW) {
                r.headers_mut().insert(header::ALLOW, allow.clone());
            }
            r
        }
        StatusCode::BAD_REQUEST => Problem::invalid_parameter(detail).into_response(),
        s => Problem::new(s, "http-error", "HTTP error", detail).into_response(),
    }
}

/// Every route of the API. Longer than most functions on purpose: the route table reads
/// best whole, in the order of docs/http-api.md.
pub fn router(state: AppState) -> Router {
    let limit = state.max_request_bytes;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/topics", get(topics::list).post(topics::create))
        .route(
            "/v1/topics/{topic}",
            get(topics::describe)
                .patch(topics::update)
                .delete(topics::delete),
        )
        .route(
            "/v1/topics/{topic}/records",
            axum::routing::post(records::produce),
        )
        .route(
            "/v1/topics/{topic}/partitions/{partition}/records",
            get(records::read),
        )
        .route(
            "/v1/topics/{topic}/partitions/{partition}/offsets",
            get(records::offset_for_time),
        )
        .route(
            "/v1/subscriptions",
            get(subscriptions::list).post(subscriptions::create),
        )
        .route(
            "/v1/subscriptions/{name}",
            get(subscriptions::describe)
                .patch(subscriptions::update)
                .delete(subscriptions::delete),
        )
        .route("/v1/subscriptions/{name}/pull", post(subscriptions::pull))
        .route("/v1/subscriptions/{name}/ack", post(subscriptions::ack))
        .route("/v1/subscriptions/{name}/nack", post(subscriptions::nack))
        .route(
            "/v1/subscriptions/{name}/extend",
            post(subscriptions::extend),
        )
        .route("/v1/subscriptions/{name}/seek", post(subscriptions::seek))
        .route("/v1/subscriptions/{name}/purge", post(subscriptions::purge))
        .route(
            "/v1/subscriptions/{name}/redrive",
            post(subscriptions::redrive),
        )
        .route(
            "/v1/subscriptions/{name}/events",
            get(subscriptions::events),
        )
        .route("/v1/subscriptions/{name}/pause", post(subscriptions::pause))
        .route(
            "/v1/subscriptions/{name}/resume",
            post(subscriptions::resume),
        )
        .route("/v1/subscriptions/{name}/retry", post(subscriptions::retry))
        .route(
            "/v1/subscriptions/{name}/rotate-secret",
            post(subscriptions::rotate_secret),
        )
        .route(
            "/v1/subscriptions/{name}/deliveries",
            get(subscriptions::deliveries),
        )
        .fallback(not_found)
        .layer(middleware::from_fn(problem_for_plain_errors))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            refuse_oversized,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn(log_server_errors))
        .with_state(state)
}
