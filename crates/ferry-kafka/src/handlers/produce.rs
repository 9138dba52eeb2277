//! Produce: batches go to the log as they arrived (checked, codec kept) in request order;
//! the answer waits for the topic's durability policy without holding up the
//! connection's next requests, so one sync covers several of them. acks=0 gets no
//! answer at all, but its records still complete the durability policy.
//!
//! With tracing on, each request is a `produce` span (a new trace: a Kafka request has
//! no trace context of its own, and its records' `traceparent` headers are stored as
//! they are, for what the records cause later), the parent of each partition's append
//! span and of the fsync spans its durability waits join.
//!
//! From v13 topics are named by id; an id no topic has answers UNKNOWN_TOPIC_ID for
//! each of its partitions, so a producer whose topic was deleted and created again
//! under its name learns it at once.

use super::{topic_ids, Ctx, Reply, Session};
use crate::errors;
use ferry_auth::{Operation, ResourceType};
use ferry_broker::{Appended, Broker};
use ferry_trace::{attr, KeyValue, Span, SpanKind, Start, TraceParent};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, ResponseKind, TopicName};
use kafka_protocol::ResponseError;
use std::collections::HashMap;
use std::sync::Arc;

/// A partition index and what appending its batches did (or the Kafka error code).
type PartitionAppend = (i32, Result<Appended, i16>);

/// A topic of the request: its name (empty for an id no topic has) and its id as the
/// request gave it (zero before v13).
struct Target {
    name: TopicName,
    id: uuid::Uuid,
}

/// What appending each topic's partitions did, in request order.
type Appends = Vec<(Target, Vec<PartitionAppend>)>;

/// One partition's append, not yet awaited.
type PendingAppend = std::pin::Pin<Box<dyn std::future::Future<Output = PartitionAppend> + Send>>;

/// Failed durability waits, by topic and partition: their Kafka error codes.
type SyncErrors = HashMap<(String, i32), i16>;

pub async fn produce(ctx: &Ctx, req: ProduceRequest, version: i16, session: &Session) -> Reply {
    let answer = req.acks != 0;
    let mut span = produce_span(&req);
    let trace = span.context();
    let appended = append_all(ctx, req, version, trace, session).await;
    // Durability and the answer complete later.
    let broker = ctx.broker.clone();
    Reply::Later(Box::pin(async move {
        let sync_errors = wait_durable(&broker, &appended, trace).await;
        if span.is_on() {
            finish_span(&mut span, &appended, &sync_errors);
        }
        span.end();
        if !answer {
            return None;
        }
        Some(ResponseKind::Produce(respond(
            &broker,
            appended,
            &sync_errors,
        )))
    }))
}

/// Appends every partition's batches, here and in request order; topics the session may
/// not write to get TOPIC_AUTHORIZATION_FAILED.
async fn append_all(
    ctx: &Ctx,
    req: ProduceRequest,
    version: i16,
    trace: Option<TraceParent>,
    session: &Session,
) -> Appends {
    let bad_acks = !matches!(req.acks, -1..=1);
    // A transactional producer needs Write on its transactional id, as in Kafka; its
    // batches are checked against its transaction by the broker.
    let txn_denied = req.transactional_id.as_ref().is_some_and(|id| {
        !session.may(
            &ctx.auth,
            Operation::Write,
            ResourceType::TransactionalId,
            &id.0,
        )
    });
    let mut appended = Vec::new();
    for topic in req.topic_data {
        let (name, unknown_id) = if version >= 13 {
            match topic_ids::name_of(ctx, topic.topic_id) {
                Some(name) => (name, false),
                None => (String::new(), true),
            }
        } else {
            (topic.name.0.to_string(), false)
        };
        let allowed = session.may(&ctx.auth, Operation::Write, ResourceType::Topic, &name);
        let invalid_name = ferry_broker::config::validate_topic_name(&name).is_err();
        let mut pending: Vec<PendingAppend> = Vec::new();
        for p in topic.partition_data {
            let refused = if bad_acks {
                Err(ResponseError::InvalidRequiredAcks.code())
            } else if unknown_id {
                Err(ResponseError::UnknownTopicId.code())
            } else if !allowed {
                Err(ResponseError::TopicAuthorizationFailed.code())
            } else if txn_denied {
                Err(ResponseError::TransactionalIdAuthorizationFailed.code())
            } else if invalid_name {
                // At once, so that a client fails its records instead of retrying.
                Err(ResponseError::InvalidTopicException.code())
            } else if p.index < 0 {
                Err(ResponseError::UnknownTopicOrPartition.code())
            } else {
                Ok(())
            };
            let index = p.index;
            pending.push(match refused {
                Err(code) => Box::pin(async move { (index, Err(code)) }),
                Ok(()) => {
                    let (broker, name) = (ctx.broker.clone(), name.clone());
                    Box::pin(async move {
                        let r = broker
                            .append_client_batches_traced(
                                &name,
                                index as u32,
                                p.records.unwrap_or_default(),
                                trace,
                            )
                            .await
                            .map_err(|e| errors::code(&e));
                        (index, r)
                    })
                }
            });
        }
        // In shared mode an append waits for its object and its commit: the request's
        // partitions go together (their batches then share objects). Locally they go in
        // turn, each append quick.
        let parts = if ctx.broker.is_shared() {
            futures_util::future::join_all(pending).await
        } else {
            let mut parts = Vec::with_capacity(pending.len());
            for p in pending {
                parts.push(p.await);
            }
            parts
        };
        let target = Target {
            name: TopicName(name.into()),
            id: topic.topic_id,
        };
        appended.push((target, parts));
    }
    appended
}

/// Waits, all at once, for every partition that took records to meet its durability
/// policy.
async fn wait_durable(
    broker: &Arc<Broker>,
    appended: &Appends,
    trace: Option<TraceParent>,
) -> SyncErrors {
    let mut waits = Vec::new();
    for (Target { name, .. }, parts) in appended {
        for (index, result) in parts {
            if let Ok(Appended {
                end_offset: Some(end),
                ..
            }) = result
            {
                let (b, n, i, e) = (broker.clone(), name.0.to_string(), *index as u32, *end);
                waits.push((
                    (name.0.to_string(), *index),
                    tokio::spawn(async move { b.make_durable_traced(&n, i, e, trace).await }),
                ));
            }
        }
    }
    let mut sync_errors = HashMap::new();
    for (key, w) in waits {
        match w.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                sync_errors.insert(key, errors::code(&e));
            }
            Err(_) => {
                sync_errors.insert(key, ResponseError::UnknownServerError.code());
            }
        }
    }
    sync_errors
}

/// Most topics or partitions a produce span names; the rest are counted only.
const SPAN_LIST_MAX: usize = 32;
/// Longest topic name a span carries, in bytes (longer ones are cut at a character).
const SPAN_NAME_BYTES_MAX: usize = 256;

/// A topic name as a span attribute: at most [`SPAN_NAME_BYTES_MAX`] bytes.
fn bounded_name(name: &str) -> String {
    let mut end = name.len().min(SPAN_NAME_BYTES_MAX);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_string()
}

/// A topic as a span names it: its name, or its id when the request names it by id.
fn topic_label(t: &kafka_protocol::messages::produce_request::TopicProduceData) -> String {
    if t.name.0.is_empty() && !t.topic_id.is_nil() {
        t.topic_id.to_string()
    } else {
        bounded_name(&t.name.0)
    }
}

/// The request's span when tracing is on: its topics and partitions.
fn produce_span(req: &ProduceRequest) -> Span {
    if !ferry_trace::enabled() {
        return Span::OFF;
    }
    let mut attributes = vec![
        KeyValue::new(attr::MESSAGING_SYSTEM, attr::SYSTEM_FERRY),
        KeyValue::new(attr::OPERATION_TYPE, "send"),
        KeyValue::new(attr::OPERATION_NAME, "produce"),
        KeyValue::new(attr::PROTOCOL, "kafka"),
    ];
    // Attributes come from the request: a bounded number of them, names cut short, so
    // that one span stays small whatever a client sends.
    match &req.topic_data[..] {
        [one] => {
            attributes.push(KeyValue::new(attr::DESTINATION, topic_label(one)));
            let partitions: Vec<i64> = one
                .partition_data
                .iter()
                .take(SPAN_LIST_MAX)
                .map(|p| i64::from(p.index))
                .collect();
            if let [p] = partitions[..] {
                attributes.push(KeyValue::new(attr::PARTITION, p.to_string()));
            }
            attributes.push(KeyValue::new(
                attr::PARTITIONS,
                ferry_trace::Value::Array(partitions.into()),
            ));
        }
        topics => {
            let names: Vec<ferry_trace::StringValue> = topics
                .iter()
                .take(SPAN_LIST_MAX)
                .map(|t| topic_label(t).into())
                .collect();
            attributes.push(KeyValue::new(
                attr::TOPICS,
                ferry_trace::Value::Array(names.into()),
            ));
        }
    }
    attributes.push(KeyValue::new(
        "ferry.topic_count",
        req.topic_data.len() as i64,
    ));
    Span::start(Start {
        attributes,
        ..Start::new("produce", SpanKind::Server)
    })
}

/// Records what the request did on its span: records appended, and the first error.
fn finish_span(span: &mut Span, appended: &Appends, sync_errors: &SyncErrors) {
    let mut records = 0;
    let mut error = sync_errors.values().next().copied();
    for (_, parts) in appended {
        for (_, result) in parts {
            match result {
                Ok(a) => {
                    records += a.records;
                    if let Some(e) = &a.error {
                        error.get_or_insert(errors::code(e));
                    }
                }
                Err(code) => {
                    error.get_or_insert(*code);
                }
            }
        }
    }
    span.set(attr::MESSAGE_COUNT, records as i64);
    if let Some(code) = error {
        span.set(attr::ERROR_TYPE, code.to_string());
        span.fail(format!("Kafka error code {code}"));
    }
}

/// The answer: each partition's first offset and, on a topic stamped with the append
/// time, that time (-1 otherwise), or the first error it met.
fn respond(broker: &Broker, appended: Appends, sync_errors: &SyncErrors) -> ProduceResponse {
    let responses = appended
        .into_iter()
        .map(|(Target { name, id }, parts)| {
            let partition_responses = parts
                .into_iter()
                .map(|(index, result)| {
                    let (error_code, base_offset, log_append_time) = match result {
                        Ok(a) => {
                            let code = sync_errors
                                .get(&(name.0.to_string(), index))
                                .copied()
                                .or(a.error.as_ref().map(errors::code))
                                .unwrap_or(errors::NONE);
                            if code == errors::NONE {
                                (
                                    code,
                                    a.first_offset.map_or(-1, |o| o as i64),
                                    a.log_append_time_ms.unwrap_or(-1),
                                )
                            } else {
                                (code, -1, -1)
                            }
                        }
                        Err(code) => (code, -1, -1),
                    };
                    let log_start = broker
                        .bounds(&name.0, index.max(0) as u32)
                        .map_or(-1, |(e, _)| e as i64);
                    PartitionProduceResponse::default()
                        .with_index(index)
                        .with_error_code(error_code)
                        .with_base_offset(base_offset)
                        .with_log_append_time_ms(log_append_time)
                        .with_log_start_offset(log_start)
                })
                .collect();
            TopicProduceResponse::default()
                .with_name(name)
                .with_topic_id(id)
                .with_partition_responses(partition_responses)
        })
        .collect();
    ProduceResponse::default().with_responses(responses)
}
