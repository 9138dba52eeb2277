//! Queue subscriptions over HTTP: admin, pull, ack, nack, extend, seek, purge, redrive,
//! and a server-sent-event stream.

use crate::auth::{caller, Caller};
use crate::json_out::{self, JsonBody};
use crate::problem::Problem;
use crate::trace::RequestTrace;
use crate::{json_body, plain_json_body, AppState};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::IntoResponse;
use axum::Json;
use bytes::Bytes;
use ferry_auth::{Operation, ResourceType};
use ferry_broker::subs::{
    Completion, Delivery, Mode, Position, PullRequest, SubscriptionSettings, SubscriptionStatus,
};
use ferry_broker::BrokerError;
use ferry_trace::{attr, Span, TraceParent};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// Consumer name used when a pull does not give one.
pub const ANONYMOUS_CONSUMER: &str = "anonymous";
pub const CONSUMER_BYTES_MAX: usize = 256;

/// A status as JSON, with the dispatcher's live state for push subscriptions and a
/// secret shown once when given.
fn status_out(state: &AppState, status: SubscriptionStatus) -> Value {
    let name = status.config.name.clone();
    let mut v = serde_json::to_value(&status).unwrap_or(Value::Null);
    if let Some(live) = state.broker.push_live_status(&name) {
        v["push_status"] = live;
    }
    if let Some(s) = status.new_secret {
        v["push"]["secret"] = json!(s);
        v["push"]["secret_shown_once"] = json!(true);
    }
    v
}

/// Members of a subscription's settings that are objects (see [`json_body`]).
const SUBSCRIPTION_OBJECTS: &[&str] = &["retry", "push", "push.breaker"];

pub async fn create(
    State(state): State<AppState>,
    c: Option<axum::Extension<Caller>>,
    body: Bytes,
) -> Result<impl IntoResponse, Problem> {
    let s: SubscriptionSettings = json_body(&body, SUBSCRIPTION_OBJECTS)?;
    // A subscription reads its topic for its consumers; a push subscription also sends
    // the records out of Ferry, which needs its own permission (`write`).
    let c = caller(c);
    let name = s.name.clone().unwrap_or_default();
    c.check(&state, Operation::Create, ResourceType::Subscription, &name)?;
    if let Some(topic) = &s.topic {
        c.check(&state, Operation::Read, ResourceType::Topic, topic)?;
    }
    if s.mode == Some(Mode::Push) || s.push.is_some() {
        c.check(&state, Operation::Write, ResourceType::Subscription, &name)?;
    }
    let status = state.broker.create_subscription(s).await?;
    Ok((StatusCode::CREATED, Json(status_out(&state, status))))
}

pub async fn list(
    State(state): State<AppState>,
    c: Option<axum::Extension<Caller>>,
    headers: axum::http::HeaderMap,
) -> Result<Json<Value>, Problem> {
    let c = caller(c);
    if state.broker.is_shared() {
        return Ok(Json(
            json!({ "subscriptions": list_shared(&state, &c, &headers).await? }),
        ));
    }
    let all: Vec<Value> = state
        .broker
        .list_subscriptions()
        .await
        .into_iter()
        .filter(|s| {
            c.may(
                &state,
                Operation::Describe,
                ResourceType::Subscription,
                &s.config.name,
            )
        })
        .map(|s| status_out(&state, s))
        .collect();
    Ok(Json(json!({ "subscriptions": all })))
}

/// Every subscription in shared mode, each described by the node that serves it (a
/// subscription nobody serves yet is taken by the node rendezvous hashing picks).
async fn list_shared(
    state: &AppState,
    c: &Caller,
    headers: &axum::http::HeaderMap,
) -> Result<Vec<Value>, Problem> {
    use ferry_broker::shared_subs::Owner;
    let mut all = Vec::new();
    for name in state.broker.subscription_names().await? {
        if !c.may(
            state,
            Operation::Describe,
            ResourceType::Subscription,
            &name,
        ) {
            continue;
        }
        let described = match state.broker.subscription_owner(&name).await {
            Ok(Owner::Here) => match state.broker.describe_subscription(&name).await {
                Ok(s) => Some(status_out(state, s)),
                Err(_) => None,
            },
            Ok(Owner::Node { http_addr, .. }) => {
                crate::forward::describe_at(state, &http_addr, "subscriptions", &name, headers)
                    .await
            }
            Err(_) => None,
        };
        // One that was deleted, or whose node did not answer, is left out.
        if let Some(d) = described {
            all.push(d);
        }
    }
    Ok(all)
}

pub async fn describe(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, Problem> {
    let status = state.broker.describe_subscription(&name).await?;
    Ok(Json(status_out(&state, status)))
}

pub async fn update(
    State(state): State<AppState>,
    c: Option<axum::Extension<Caller>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<impl IntoResponse, Problem> {
    let s: SubscriptionSettings = json_body(&body, SUBSCRIPTION_OBJECTS)?;
    // Changing where a push subscription sends records needs what creating one needs.
    if s.mode == Some(Mode::Push) || s.push.is_some() {
        caller(c).check(&state, Operation::Write, ResourceType::Subscription, &name)?;
    }
    let status = state.broker.update_subscription(&name, s).await?;
    Ok(Json(status_out(&state, status)))
}

pub async fn pause(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, Problem> {
    let status = state.broker.set_paused(&name, true).await?;
    Ok(Json(status_out(&state, status)))
}

pub async fn resume(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, Problem> {
    let status = state.broker.set_paused(&name, false).await?;
    Ok(Json(status_out(&state, status)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordRef {
    partition: u32,
    offset: u64,
}

/// Delivers one record of the topic to this subscription again.
pub async fn retry(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, Problem> {
    let r: RecordRef = json_body(&body, &[])?;
    let copy = state
        .broker
        .retry_record(&name, r.partition, r.offset)
        .await?;
    Ok(Json(json!({
        "partition": r.partition,
        "offset": r.offset,
        "copy": {"partition": copy.partition, "offset": copy.offset},
    })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    previous_valid_ms: Option<u64>,
}

/// Makes a new signing secret; the old one keeps signing for `previous_valid_ms`
/// (default one day), so that endpoints can switch over.
pub async fn rotate_secret(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, Problem> {
    let b: RotateBody = if body.is_empty() {
        RotateBody::default()
    } else {
        json_body(&body, &[])?
    };
    let status = state
        .broker
        .rotate_push_secret(&name, b.secret, b.previous_valid_ms)
        .await?;
    Ok(Json(status_out(&state, status)))
}

const DELIVERIES_PARAMS: [&str; 3] = ["partition", "offset", "limit"];
pub const DELIVERIES_LIMIT_MAX: usize = 1000;

/// Attempts of a push subscription, newest first; of one record with partition and
/// offset.
pub async fn deliveries(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, Problem> {
    if let Some(unknown) = q.keys().find(|k| !DELIVERIES_PARAMS.contains(&k.as_str())) {
        return Err(Problem::invalid_parameter(format!(
            "unknown parameter {unknown:?}; expected one of {DELIVERIES_PARAMS:?}"
        )));
    }
    let num = |k: &str| crate::records::param::<u64>(&q, k);
    let limit = num("limit")?.unwrap_or(100) as usize;
    if limit == 0 || limit > DELIVERIES_LIMIT_MAX {
        return Err(Problem::invalid_parameter(format!(
            "limit must be between 1 and {DELIVERIES_LIMIT_MAX}"
        )));
    }
    let record = match (num("partition")?, num("offset")?) {
        (Some(p), Some(o)) => Some((
            u32::try_from(p)
                .map_err(|_| Problem::invalid_parameter(format!("partition {p} is too large")))?,
            o,
        )),
        (None, None) => None,
        _ => {
            return Err(Problem::invalid_parameter(
                "give partition and offset together, or neither",
            ))
        }
    };
    let list = state.broker.push_deliveries(&name, record, limit)?;
    Ok(Json(json!({ "deliveries": list })))
}

pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, Problem> {
    state.broker.delete_subscription(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn consumer_name(c: Option<String>) -> Result<Arc<str>, Problem> {
    let c = c.unwrap_or_else(|| ANONYMOUS_CONSUMER.to_string());
    if c.is_empty() || c.len() > CONSUMER_BYTES_MAX {
        return Err(Problem::bad_request(
            "invalid-config",
            format!("consumer must be 1 to {CONSUMER_BYTES_MAX} bytes"),
        ));
    }
    Ok(Arc::from(c))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullBody {
    #[serde(default)]
    max_records: Option<usize>,
    #[serde(default)]
    wait_ms: Option<u64>,
    #[serde(default)]
    consumer: Option<String>,
    #[serde(default)]
    visibility_timeout_ms: Option<i64>,
}

/// One delivery as JSON text (a stream's event data).
fn delivery_text(d: &Delivery) -> String {
    let mut out = Vec::with_capacity(json_out::size_hint(&d.record) + 64);
    json_out::delivery(&mut out, d);
    String::from_utf8(out).expect("JSON text is UTF-8")
}

pub async fn pull(
    State(state): State<AppState>,
    Path(name): Path<String>,
    trace: RequestTrace,
    body: Bytes,
) -> Result<JsonBody, Problem> {
    let mut span = trace.server_span("lease", "receive", attr::SUBSCRIPTION, &name);
    let result = pull_records(&state, &name, &body, &mut span).await;
    crate::trace::finish(&mut span, &result);
    result
}

async fn pull_records(
    state: &AppState,
    name: &str,
    body: &[u8],
    span: &mut Span,
) -> Result<JsonBody, Problem> {
    let b: PullBody = if body.is_empty() {
        PullBody {
            max_records: None,
            wait_ms: None,
            consumer: None,
            visibility_timeout_ms: None,
        }
    } else {
        plain_json_body(body)?
    };
    let visibility = match b.visibility_timeout_ms {
        None => None,
        Some(v) => Some(ferry_broker::subs::check_timeout(
            "visibility_timeout_ms",
            v,
        )?),
    };
    let req = PullRequest {
        consumer: consumer_name(b.consumer)?,
        max_records: b.max_records.unwrap_or(10),
        wait: Duration::from_millis(b.wait_ms.unwrap_or(0)),
        visibility_timeout_ms: visibility,
    };
    let out = state.broker.pull(name, req).await?;
    if span.is_on() {
        span.set(attr::MESSAGE_COUNT, out.len() as i64);
        span.link_all(
            out.iter()
                .filter_map(|d| d.record.header("traceparent").and_then(TraceParent::parse)),
        );
    }
    Ok(JsonBody(json_out::records_body(
        &out,
        |d| json_out::size_hint(&d.record) + 64,
        json_out::delivery,
        |_| {},
    )))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeasesBody {
    lease_ids: Vec<String>,
    #[serde(default)]
    delay_ms: Option<i64>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    visibility_timeout_ms: Option<i64>,
    /// Ack only: false answers once the acks are written, before they are synced.
    #[serde(default)]
    durable: Option<bool>,
}

fn only(b: &LeasesBody, allowed: &[&str]) -> Result<(), Problem> {
    let given = [
        ("delay_ms", b.delay_ms.is_some()),
        ("error", b.error.is_some()),
        ("visibility_timeout_ms", b.visibility_timeout_ms.is_some()),
        ("durable", b.durable.is_some()),
    ];
    for (field, present) in given {
        if present && !allowed.contains(&field) {
            return Err(Problem::invalid_json(format!(
                "unknown field `{field}` for this operation"
            )));
        }
    }
    Ok(())
}

pub async fn ack(
    State(state): State<AppState>,
    Path(name): Path<String>,
    trace: RequestTrace,
    body: Bytes,
) -> Result<Json<Value>, Problem> {
    let mut span = trace.server_span("ack", "settle", attr::SUBSCRIPTION, &name);
    let result = ack_leases(&state, &name, &body, &mut span).await;
    crate::trace::finish(&mut span, &result);
    result
}

async fn ack_leases(
    state: &AppState,
    name: &str,
    body: &[u8],
    span: &mut Span,
) -> Result<Json<Value>, Problem> {
    let b: LeasesBody = plain_json_body(body)?;
    only(&b, &["durable"])?;
    let completion = match b.durable {
        Some(false) => Completion::Buffered,
        Some(true) | None => Completion::Durable,
    };
    span.set(attr::LEASES, b.lease_ids.len() as i64);
    let n = state.broker.ack(name, b.lease_ids, completion).await?;
    span.set(attr::MESSAGE_COUNT, n as i64);
    Ok(Json(json!({ "acked": n })))
}

pub async fn nack(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, Problem> {
    let b: LeasesBody = plain_json_body(&body)?;
    only(&b, &["delay_ms", "error"])?;
    let n = state
        .broker
        .nack(&name, b.lease_ids, b.delay_ms, b.error)
        .await?;
    Ok(Json(json!({ "nacked": n })))
}

pub async fn extend(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, Problem> {
    let b: LeasesBody = plain_json_body(&body)?;
    only(&b, &["visibility_timeout_ms"])?;
    let t = b.visibility_timeout_ms.ok_or_else(|| {
        Problem::invalid_json("visibility_timeout_ms is required: the new lease length from now")
    })?;
    let expires = state.broker.extend(&name, b.lease_ids, t).await?;
    Ok(Json(json!({ "lease_expires_at": expires })))
}

/// `{"to": "earliest"|"latest"}`, `{"offset": n, "partition"?: p}` or
/// `{"timestamp": ms}`.
pub async fn seek(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<impl IntoResponse, Problem> {
    let v: Value = crate::json_value(&body)?;
    let target = match &v {
        Value::Object(m) if m.len() == 1 && m.contains_key("to") => &m["to"],
        other => other,
    };
    let pos = Position::parse(target).map_err(Problem::from)?;
    Ok(Json(state.broker.seek(&name, pos).await?))
}

pub async fn purge(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, Problem> {
    Ok(Json(state.broker.seek(&name, Position::Latest).await?))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RedriveBody {
    #[serde(default)]
    max_records: Option<usize>,
}

pub async fn redrive(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, Problem> {
    let b: RedriveBody = if body.is_empty() {
        RedriveBody::default()
    } else {
        json_body(&body, &[])?
    };
    let n = state
        .broker
        .redrive(&name, b.max_records.unwrap_or(usize::MAX))
        .await?;
    Ok(Json(json!({ "redriven": n })))
}

const EVENTS_PARAMS: [&str; 3] = ["consumer", "max_records", "visibility_timeout_ms"];

/// A stream of leased records as server-sent events (`event: record`, `id:` the lease
/// id); the client acks over the ack endpoint. The consumer's in-flight limit paces it.
pub async fn events(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<impl IntoResponse, Problem> {
    if let Some(unknown) = q.keys().find(|k| !EVENTS_PARAMS.contains(&k.as_str())) {
        return Err(Problem::invalid_parameter(format!(
            "unknown parameter {unknown:?}; expected one of {EVENTS_PARAMS:?}"
        )));
    }
    let num = |k: &str| crate::records::param::<u64>(&q, k);
    let max_records = num("max_records")?.unwrap_or(100) as usize;
    let visibility = match num("visibility_timeout_ms")? {
        None => None,
        Some(v) => Some(ferry_broker::subs::check_timeout(
            "visibility_timeout_ms",
            v.min(i64::MAX as u64) as i64,
        )?),
    };
    // Fail before the stream starts for an unknown subscription, and for a push
    // subscription, which cannot be pulled (as a pull answers).
    if state.broker.subscription_config(&name)?.mode == ferry_broker::subs::Mode::Push {
        return Err(BrokerError::InvalidConfig(format!(
            "subscription '{name}' is a push subscription: Ferry delivers its records to its endpoint; create a queue subscription to pull"
        ))
        .into());
    }
    let req = PullRequest {
        consumer: consumer_name(q.get("consumer").cloned())?,
        max_records: max_records.clamp(1, ferry_broker::subs::PULL_RECORDS_MAX),
        wait: Duration::from_secs(15),
        visibility_timeout_ms: visibility,
    };
    let broker = Arc::clone(&state.broker);
    let stream = futures_util::stream::unfold(
        (broker, name, req, VecDeque::<Delivery>::new(), false),
        |(broker, name, req, mut buf, ended)| async move {
            if ended {
                return None;
            }
            loop {
                if let Some(d) = buf.pop_front() {
                    let ev = SseEvent::default()
                        .event("record")
                        .id(d.lease_id.clone())
                        .data(delivery_text(&d));
                    return Some((
                        Ok::<_, std::convert::Infallible>(ev),
                        (broker, name, req, buf, false),
                    ));
                }
                match broker.pull(&name, req.clone()).await {
                    Ok(out) => buf.extend(out),
                    Err(e) => {
                        let gone = matches!(e, BrokerError::SubscriptionNotFound(_));
                        let problem = Problem::from(e);
                        // The stream answered 200 already: the layer that logs every
                        // 5xx cannot see this one, so it is logged here the same way.
                        if problem.status.is_server_error() {
                            tracing::error!(
                                method = "GET",
                                path = %format!("/v1/subscriptions/{name}/events"),
                                status = problem.status.as_u16(),
                                cause = %format!("{}: {}", problem.slug, problem.detail),
                                in_stream = true,
                                "HTTP request failed with a server error."
                            );
                        }
                        let ev = SseEvent::default().event("error").data(
                            json!({"type": format!("{}{}", crate::problem::PROBLEM_TYPE_PREFIX, problem.slug), "detail": problem.detail}).to_string(),
                        );
                        if !gone {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                        return Some((Ok(ev), (broker, name, req, buf, gone)));
                    }
                }
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
