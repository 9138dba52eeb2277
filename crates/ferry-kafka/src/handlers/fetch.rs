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

use super::{Ctx, Session};
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

pub async fn fetch(ctx: &Ctx, req: FetchRequest, session: &Session) -> FetchResponse {
    // Topics the session may not read answer TOPIC_AUTHORIZATION_FAILED (decided once).
    let readable: Vec<bool> = req
        .topics
        .iter()
        .map(|t| session.may(&ctx.auth, Operation::Read, ResourceType::Topic, &t.topic.0))
        .collect();
    let wait = Duration::from_millis(req.max_wait_ms.clamp(0, FETCH_WAIT_MS_MAX) as u64);
    let deadline = Instant::now() + wait;
    let min_bytes = req.min_bytes.max(0) as usize;
    let max_bytes = (req.max_bytes.max(0) as usize).min(ctx.config.fetch_bytes_max);
    let (mut resp, bytes, errored) = fetch_once(ctx, &req, &readable, max_bytes).await;
    if bytes >= min_bytes || errored {
        return resp;
    }
    // Wait for one of this request's partitions to grow; appends elsewhere only cost a
    // cheap check of the bounds, not a re-read.
    let mut seen = ends(ctx, &req);
    loop {
        let notified = ctx.broker.any_readable().notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let now_ends = ends(ctx, &req);
        if now_ends != seen {
            seen = now_ends;
            let (again, bytes, errored) = fetch_once(ctx, &req, &readable, max_bytes).await;
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
fn ends(ctx: &Ctx, req: &FetchRequest) -> Vec<Option<u64>> {
    req.topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.topic.0.to_string(), p.partition))
        })
        .map(|(name, p)| {
            if p < 0 {
                None
            } else {
                ctx.broker.bounds(&name, p as u32).ok().map(|(_, l)| l)
            }
        })
        .collect()
}

async fn fetch_once(
    ctx: &Ctx,
    req: &FetchRequest,
    readable: &[bool],
    max_bytes: usize,
) -> (FetchResponse, usize, bool) {
    let mut total = 0usize;
    let mut errored = false;
    let mut responses = Vec::new();
    for (i, topic) in req.topics.iter().enumerate() {
        let name = topic.topic.0.to_string();
        let mut partitions = Vec::new();
        for p in &topic.partitions {
            if !readable.get(i).copied().unwrap_or(false) {
                errored = true;
                partitions.push(
                    PartitionData::default()
                        .with_partition_index(p.partition)
                        .with_error_code(
                            kafka_protocol::ResponseError::TopicAuthorizationFailed.code(),
                        )
                        .with_high_watermark(-1)
                        .with_last_stable_offset(-1)
                        .with_records(Some(Bytes::new())),
                );
                continue;
            }
            // Until a partition has given data, the first batch comes whole.
            let first_batch = if total == 0 {
                FirstBatch::Whole
            } else {
                FirstBatch::WithinLimit
            };
            let left = max_bytes.saturating_sub(total);
            let committed = req.isolation_level == READ_COMMITTED;
            let (data, read, failed) =
                fetch_partition(ctx, &name, p, left, first_batch, committed).await;
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
        ctx.broker.stable_bounds(name, p.partition as u32)
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
