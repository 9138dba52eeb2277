//! Fetch: stored batches are served as they are on disk, never re-encoded. With
//! `min_bytes` not yet available the answer waits (up to `max_wait_ms`) for any
//! partition to grow.
//!
//! # Limits (KIP-74)
//!
//! The record data of an answer stays within the request's `max_bytes`, and each
//! partition's within its `partition_max_bytes`, in whole batches. One exception, so
//! that a consumer is never stuck behind a batch larger than its limits: the first
//! partition (in request order) that has data returns its first batch whole whatever
//! its size; the partitions after it then get only what fits in what is left.
//!
//! # Topic ids
//!
//! From v13 topics are named by id. The id is looked up again each time the answer is
//! built (also after a long-poll wait), so a topic deleted meanwhile, or deleted and
//! created again under its name, answers UNKNOWN_TOPIC_ID rather than another topic's
//! records.

use super::{topic_ids, Ctx, Session};
use crate::config::FETCH_WAIT_MS_MAX;
use crate::errors;
use bytes::Bytes;
use ferry_auth::{Operation, ResourceType};
use ferry_broker::BrokerError;
use ferry_log::FirstBatch;
use kafka_protocol::messages::fetch_request::FetchPartition;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::ProducerId;
use kafka_protocol::messages::{FetchRequest, FetchResponse};
use std::time::{Duration, Instant};

/// `isolation_level` of a `read_committed` consumer: records up to the last stable
/// offset, with the aborted transactions among them.
const READ_COMMITTED: i8 = 1;

/// Each topic of the request: its name, or the error all its partitions answer.
fn resolve(ctx: &Ctx, req: &FetchRequest, version: i16) -> Vec<Result<String, i16>> {
    req.topics
        .iter()
        .map(|t| {
            if version >= 13 {
                topic_ids::name_of(ctx, t.topic_id)
                    .ok_or(kafka_protocol::ResponseError::UnknownTopicId.code())
            } else {
                Ok(t.topic.0.to_string())
            }
        })
        .collect()
}

pub async fn fetch(ctx: &Ctx, req: FetchRequest, version: i16, session: &Session) -> FetchResponse {
    // Topics the session may not read answer TOPIC_AUTHORIZATION_FAILED (decided once:
    // a topic named by id that is later re-created is refused by its new id anyway).
    let readable: Vec<bool> = resolve(ctx, &req, version)
        .iter()
        .map(|t| match t {
            Ok(name) => session.may(&ctx.auth, Operation::Read, ResourceType::Topic, name),
            // An unknown id answers UNKNOWN_TOPIC_ID, whoever asks.
            Err(_) => true,
        })
        .collect();
    let wait = Duration::from_millis(req.max_wait_ms.clamp(0, FETCH_WAIT_MS_MAX) as u64);
    let deadline = Instant::now() + wait;
    let min_bytes = req.min_bytes.max(0) as usize;
    let max_bytes = (req.max_bytes.max(0) as usize).min(ctx.config.fetch_bytes_max);
    let (mut resp, bytes, errored) = fetch_once(ctx, &req, version, &readable, max_bytes).await;
    if bytes >= min_bytes || errored {
        return resp;
    }
    // Wait for one of this request's partitions to grow; appends elsewhere only cost a
    // cheap check of the bounds, not a re-read.
    let mut seen = ends(ctx, &req, version);
    loop {
        let notified = ctx.broker.any_readable().notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let now_ends = ends(ctx, &req, version);
        if now_ends != seen {
            seen = now_ends;
            let (again, bytes, errored) =
                fetch_once(ctx, &req, version, &readable, max_bytes).await;
            resp = again;
            if bytes >= min_bytes || errored {
                return resp;
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return resp;
        }
        let _ = tokio::time::timeout(deadline - now, notified).await;
    }
}

/// The latest offset of every partition the request names (unknown ones as `None`).
fn ends(ctx: &Ctx, req: &FetchRequest, version: i16) -> Vec<Option<u64>> {
    let names = resolve(ctx, req, version);
    req.topics
        .iter()
        .zip(names)
        .flat_map(|(t, name)| {
            t.partitions
                .iter()
                .map(move |p| (name.clone(), p.partition))
        })
        .map(|(name, p)| match name {
            Ok(name) if p >= 0 => ctx.broker.bounds(&name, p as u32).ok().map(|(_, l)| l),
            _ => None,
        })
        .collect()
}

async fn fetch_once(
    ctx: &Ctx,
    req: &FetchRequest,
    version: i16,
    readable: &[bool],
    max_bytes: usize,
) -> (FetchResponse, usize, bool) {
    let mut total = 0usize;
    let mut errored = false;
    let mut responses = Vec::new();
    let names = resolve(ctx, req, version);
    debug_assert_eq!(names.len(), req.topics.len());
    for (i, (topic, name)) in req.topics.iter().zip(names).enumerate() {
        let mut partitions = Vec::new();
        for p in &topic.partitions {
            let refused = match &name {
                Err(code) => Some(*code),
                Ok(_) if !readable.get(i).copied().unwrap_or(false) => {
                    Some(kafka_protocol::ResponseError::TopicAuthorizationFailed.code())
                }
                Ok(_) => None,
            };
            if let Some(code) = refused {
                errored = true;
                partitions.push(
                    PartitionData::default()
                        .with_partition_index(p.partition)
                        .with_error_code(code)
                        .with_high_watermark(-1)
                        .with_last_stable_offset(-1)
                        .with_records(Some(Bytes::new())),
                );
                continue;
            }
            let Ok(name) = &name else {
                continue;
            };
            // Until a partition has given data, the first batch comes whole.
            let first_batch = if total == 0 {
                FirstBatch::Whole
            } else {
                FirstBatch::WithinLimit
            };
            let left = max_bytes.saturating_sub(total);
            let committed = req.isolation_level == READ_COMMITTED;
            let (data, read, failed) =
                fetch_partition(ctx, name, p, left, first_batch, committed).await;
            debug_assert!(
                read <= left || total == 0,
                "partition gave {read} bytes with {left} left"
            );
            total += read;
            errored |= failed;
            partitions.push(data);
        }
        responses.push(
            FetchableTopicResponse::default()
                .with_topic(topic.topic.clone())
                .with_topic_id(topic.topic_id)
                .with_partitions(partitions),
        );
    }
    (
        FetchResponse::default().with_responses(responses),
        total,
        errored,
    )
}

/// One partition's part of a fetch, reading at most `left` bytes and the partition's
/// own limit (except a larger first batch, with [`FirstBatch::Whole`]): its data, the
/// bytes read, and whether it is an error.
async fn fetch_partition(
    ctx: &Ctx,
    name: &str,
    p: &FetchPartition,
    left: usize,
    first_batch: FirstBatch,
    committed: bool,
) -> (PartitionData, usize, bool) {
    let data = PartitionData::default()
        .with_partition_index(p.partition)
        .with_last_stable_offset(-1)
        .with_records(Some(Bytes::new()));
    let bounds = if p.partition < 0 {
        Err(BrokerError::PartitionNotFound {
            topic: name.to_string(),
            partition: 0,
            count: 0,
        })
    } else {
        ctx.broker
            .fresh_stable_bounds(name, p.partition as u32)
            .await
    };
    let (earliest, latest, stable) = match bounds {
        Ok(b) => (b.earliest, b.latest, b.stable),
        Err(e) => {
            let data = data
                .with_error_code(errors::code(&e))
                .with_high_watermark(-1);
            return (data, 0, true);
        }
    };
    let data = data
        .with_high_watermark(latest as i64)
        .with_last_stable_offset(stable as i64)
        .with_log_start_offset(earliest as i64);
    let budget = (p.partition_max_bytes.max(0) as usize).min(left);
    // A read_committed reader reads up to the last stable offset only.
    let end = if committed { stable } else { latest };
    if budget > 0 && p.fetch_offset >= 0 && (p.fetch_offset as u64) < end {
        let (offset, partition) = (p.fetch_offset as u64, p.partition as u32);
        let read = if committed {
            ctx.broker
                .read_committed_batches(name, partition, offset, budget, first_batch)
                .await
                .map(|(read, aborted)| (read, Some(aborted)))
        } else {
            ctx.broker
                .read_batches(name, partition, offset, budget, first_batch)
                .await
                .map(|read| (read, None))
        };
        match read {
            Ok((read, aborted)) => {
                let n = read.batches.len();
                let data = data.with_records(Some(read.batches));
                let data = match aborted {
                    Some(list) => data.with_aborted_transactions(Some(
                        list.into_iter()
                            .map(|a| {
                                AbortedTransaction::default()
                                    .with_producer_id(ProducerId(a.producer_id))
                                    .with_first_offset(a.first_offset as i64)
                            })
                            .collect(),
                    )),
                    None => data,
                };
                (data, n, false)
            }
            Err(e) => (data.with_error_code(errors::code(&e)), 0, true),
        }
    } else if p.fetch_offset < 0
        || (p.fetch_offset as u64) < earliest
        || (p.fetch_offset as u64) > latest
    {
        let code = kafka_protocol::ResponseError::OffsetOutOfRange.code();
        (data.with_error_code(code), 0, true)
    } else {
        (data, 0, false)
    }
}
