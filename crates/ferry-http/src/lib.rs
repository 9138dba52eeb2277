//! Ferry's HTTP/JSON API, versioned under `/v1`. docs/http-api.md describes every
//! route; `/v1/openapi.json` serves the OpenAPI document. The web console is served at
//! `/ui/` ([`console`]).

pub mod auth;
pub mod codec;
pub mod console;
pub mod forward;
pub mod groups;
pub mod json_out;
pub mod metrics;
pub mod observe;
pub mod problem;
pub mod records;
pub mod server;
pub mod sources;
pub mod subscriptions;
pub mod topics;
pub mod trace;

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
    /// What `/metrics` shows; `None` serves no metrics and measures no requests.
    pub metrics: Option<Arc<metrics::Metrics>>,
    /// Users, tokens and ACLs; with authentication off, everyone may do everything.
    pub auth: Arc<ferry_auth::Auth>,
    /// Postgres sources (change data capture and the outbox).
    pub sources: Arc<ferry_source_pg::Sources>,
}

/// Parses a JSON object body into `T`, answering a problem that names what was wrong.
/// `objects` names members (dotted paths; `[]` for each item of an array) that must be
/// JSON objects when present and not null: serde would otherwise read an array as a
/// struct's members in order, which the OpenAPI document does not allow.
pub fn json_body<T: DeserializeOwned>(body: &[u8], objects: &[&str]) -> Result<T, Problem> {
    let value = json_value(body)?;
    if !value.is_object() {
        return Err(Problem::invalid_json("the body must be a JSON object"));
    }
    for path in objects {
        require_objects(&value, path, path)?;
    }
    serde_json::from_value(value).map_err(|e| Problem::invalid_json(e.to_string()))
}

/// [`json_body`] for a body whose fields are all plain (numbers, strings, booleans,
/// lists of them: no `serde_json::Value` and no member that must be an object): parsed
/// straight into `T`, without a tree, when that succeeds. A body that needs
/// [`json_body`]'s care (`300.0` for an integer, a repeated member) or is refused goes
/// through it, so that the answer is the same either way.
pub fn plain_json_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, Problem> {
    // A struct would also parse from an array of its fields in order: only an object
    // takes the short way.
    let object = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    match serde_json::from_slice(body) {
        Ok(t) if object => Ok(t),
        _ => json_body(body, &[]),
    }
}

/// Parses a JSON body of any type, with integral numbers written as decimals (`300.0`)
/// turned into integers, as JSON Schema counts them (see [`integral_numbers`]).
pub fn json_value(body: &[u8]) -> Result<serde_json::Value, Problem> {
    let mut value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| Problem::invalid_json(e.to_string()))?;
    integral_numbers(&mut value);
    Ok(value)
}

/// Members whose values are the client's own data, kept exactly as sent: a record's
/// key, value and headers, and a subscription's filter (which compares with such data).
const OPAQUE_MEMBERS: [&str; 4] = ["key", "value", "headers", "filter"];

/// Rewrites numbers with a zero fraction (`300.0`, `1e3`) as integers, as JSON Schema
/// (and so the OpenAPI document) counts them, except inside [`OPAQUE_MEMBERS`]. Numbers
/// outside the 64-bit range stay as they are and are refused where an integer is due.
fn integral_numbers(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Number(n) if n.is_f64() => {
            let Some(f) = n.as_f64() else { return };
            // Both bounds are powers of two, so exact as f64.
            if f.fract() == 0.0
                && (-9_223_372_036_854_775_808.0..18_446_744_073_709_551_616.0).contains(&f)
            {
                *n = if f < 0.0 {
                    serde_json::Number::from(f as i64)
                } else {
                    serde_json::Number::from(f as u64)
                };
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_numbers),
        Value::Object(members) => members
            .iter_mut()
            .filter(|(k, _)| !OPAQUE_MEMBERS.contains(&k.as_str()))
            .for_each(|(_, v)| integral_numbers(v)),
        _ => {}
    }
}

/// Checks that what `path` names in `value` is an object (or absent or null).
fn require_objects(value: &serde_json::Value, path: &str, whole: &str) -> Result<(), Problem> {
    use serde_json::Value;
    let (head, rest) = match path.split_once('.') {
        Some((h, r)) => (h, Some(r)),
        None => (path, None),
    };
    let items: Vec<&Value> = match (head, value) {
        ("[]", Value::Array(items)) => items.iter().collect(),
        ("[]", _) => return Ok(()),
        (member, Value::Object(m)) => m.get(member).into_iter().collect(),
        _ => return Ok(()),
    };
    for item in items {
        match (item, rest) {
            (Value::Null, _) => {}
            (Value::Object(_), None) => {}
            (_, None) => {
                return Err(Problem::invalid_json(format!(
                    "{whole} must be a JSON object"
                )))
            }
            (v, Some(rest)) => require_objects(v, rest, whole)?,
        }
    }
    Ok(())
}

/// A write sent by a web page of another site: a browser names the page's origin in
/// `Origin`, and it differs from the server the request is for (`Host`). Such requests
/// are refused, so that a page an operator visits cannot purge or pause
/// subscriptions through the operator's browser (the web console's own requests are
/// same-origin). Clients that are not browsers send no `Origin` and are not affected.
fn cross_site_write(req: &Request) -> Option<Problem> {
    if matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    ) {
        return None;
    }
    let headers = req.headers();
    let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    let origin = headers
        .get(header::ORIGIN)
        .map(|v| v.to_str().unwrap_or(""));
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let foreign = match (origin, host) {
        (Some("null"), _) => true,
        (Some(origin), Some(host)) => {
            let authority = origin.split_once("://").map_or("", |(_, rest)| rest);
            !authority.eq_ignore_ascii_case(host)
        }
        (Some(_), None) => true,
        (None, _) => false,
    };
    (foreign || fetch_site == Some("cross-site")).then(|| {
        Problem::new(
            StatusCode::FORBIDDEN,
            "cross-site-request",
            "Cross-site request",
            format!(
                "a web page of another origin ({}) may not change anything here; send the request from the server's own origin or from a client that is not a browser",
                origin.unwrap_or("unknown")
            ),
        )
    })
}

/// Refuses a cross-site write ([`cross_site_write`]) and a body whose declared length
/// is over the limit, before reading any of it (bodies without a length are cut off by
/// `DefaultBodyLimit` at the same limit); then turns axum's plain-text rejections (a
/// body over the limit, a method not allowed, a bad path parameter) into problems.
async fn refuse_and_rewrite(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(problem) = cross_site_write(&req) {
        return problem.into_response();
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > state.max_request_bytes as u64) {
        return Problem::too_large(state.max_request_bytes).into_response();
    }
    // In shared mode another node may have made the topic within the last second.
    if state.broker.is_shared() {
        if let Some(topic) = req
            .uri()
            .path()
            .strip_prefix("/v1/topics/")
            .and_then(|rest| rest.split('/').next())
            .filter(|t| !t.is_empty())
        {
            state.broker.learn_topics(&[topic.to_string()]).await;
        }
    }
    // In shared mode a subscription or a group is served by one node: pass the request
    // on to it. (Boxed, so that this middleware's future stays small in the local mode.)
    let req = if state.broker.is_shared() {
        match Box::pin(forward::pass_on(&state, req)).await {
            Ok(answered) => return answered,
            Err(req) => req,
        }
    } else {
        req
    };
    let (method, uri) = (req.method().clone(), req.uri().clone());
    let response = next.run(req).await;
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v == "application/problem+json");
    if is_problem || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return Problem::too_large(state.max_request_bytes).into_response();
    }
    let path = uri.path();
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

/// Every route of the API. Longer than most functions on purpose: the route table reads
/// best whole, in the order of docs/http-api.md.
pub fn router(state: AppState) -> Router {
    let limit = state.max_request_bytes;
    let api = Router::new()
        .route("/metrics", get(metrics::handler))
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
            "/v1/topics/{topic}/partitions/{partition}/delete-records",
            post(records::delete_records),
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
        .route("/v1/sources", get(sources::list).post(sources::create))
        .route(
            "/v1/sources/{name}",
            get(sources::describe)
                .patch(sources::update)
                .delete(sources::delete),
        )
        .route("/v1/sources/{name}/pause", post(sources::pause))
        .route("/v1/sources/{name}/resume", post(sources::resume))
        .route("/v1/sources/{name}/backfills", post(sources::backfill))
        .route(
            "/v1/sources/{name}/backfills/{id}",
            axum::routing::delete(sources::cancel_backfill),
        )
        .route("/v1/groups", get(groups::list))
        .route("/v1/groups/{group}", get(groups::describe))
        .route("/v1/whoami", get(auth::whoami))
        .route("/v1/users", get(auth::list_users).post(auth::create_user))
        .route(
            "/v1/users/{name}",
            get(auth::describe_user)
                .patch(auth::update_user)
                .delete(auth::delete_user),
        )
        .route(
            "/v1/tokens",
            get(auth::list_tokens).post(auth::create_token),
        )
        .route("/v1/tokens/{id}", axum::routing::delete(auth::delete_token))
        .route(
            "/v1/acls",
            get(auth::list_acls)
                .post(auth::create_acls)
                .delete(auth::delete_acls),
        );
    // With authentication on, every route above needs credentials and its permission
    // (`auth`). With it off, every request is anonymous and allowed, and passes no layer.
    let api = if state.auth.required() {
        api.route_layer(middleware::from_fn_with_state(state.clone(), auth::guard))
    } else {
        api
    };
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/openapi.json", get(openapi))
        .merge(api)
        .merge(console::routes())
        .fallback(not_found)
        // One stack, outermost first: each `Router::layer` call would box every route
        // once more, an allocation per request per level.
        .layer(
            tower::ServiceBuilder::new()
                .layer(observe::ObserveLayer(state.metrics.clone()))
                .layer(DefaultBodyLimit::max(limit))
                .layer(middleware::from_fn_with_state(
                    state.clone(),
                    refuse_and_rewrite,
                )),
        )
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The answer to `GET path` from `app`, served on a free port, as text.
    async fn answer_to_get(app: Router, path: &str) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        conn.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).await.unwrap();
        answer
    }

    #[test]
    fn a_plain_body_parses_as_json_body_parses_it() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        #[serde(deny_unknown_fields)]
        struct Plain {
            #[serde(default)]
            n: Option<u64>,
            #[serde(default)]
            ids: Vec<String>,
            #[serde(default)]
            on: Option<bool>,
        }
        for body in [
            &b"{}"[..],
            b" {\"n\": 3, \"ids\": [\"a\", \"b\"], \"on\": true}",
            b"{\"n\": 300.0}",
            b"{\"n\": 1, \"n\": 2}",
            b"[3, [\"a\"], true]",
            b"{\"n\": -1}",
            b"{\"n\": 1e30}",
            b"{\"other\": 1}",
            b"{\"n\": 1} x",
            b"",
        ] {
            let plain = plain_json_body::<Plain>(body).map_err(|p| (p.status, p.detail));
            let careful = json_body::<Plain>(body, &[]).map_err(|p| (p.status, p.detail));
            assert_eq!(plain, careful, "{}", String::from_utf8_lossy(body));
        }
    }

    #[tokio::test]
    async fn a_panic_in_a_handler_is_answered_500_with_its_message() {
        let app = Router::new()
            .route(
                "/boom",
                get(|| async {
                    if true {
                        panic!("the disk is made of cheese");
                    }
                    "unreachable"
                }),
            )
            .layer(observe::ObserveLayer(None));
        let answer = answer_to_get(app, "/boom").await;
        assert!(answer.starts_with("HTTP/1.1 500"), "{answer}");
        assert!(
            answer.contains("urn:ferry:problem:internal-error"),
            "{answer}"
        );
        assert!(answer.contains("the disk is made of cheese"), "{answer}");
    }
}
