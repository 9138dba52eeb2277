//! Producing: routing records to partitions and appending them as batches Ferry
//! builds, appending batches a client built (Kafka), and waiting for durability.

use crate::broker::{blocking, now_ms};
use crate::error::{BrokerError, Result};
use crate::partitioner::partition_for_key;
use crate::topic::Topic;
use crate::Broker;
use bytes::Bytes;
use ferry_log::batch::{NewRecord, RecordHeader};
use ferry_log::DecodeLimits;
use ferry_trace::{attr, Span, SpanKind, Start, TraceParent};
use std::collections::BTreeMap;

/// A record to produce.
#[derive(Debug, Clone, Default)]
pub struct ProduceRecord {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<RecordHeader>,
    pub partition: Option<u32>,
    /// Milliseconds since the epoch; the broker's clock when absent.
    pub timestamp: Option<i64>,
    /// The value was given as JSON and should be read back as JSON.
    pub value_is_json: bool,
}

/// What [`Broker::append_client_batches`] did.
#[derive(Debug)]
pub struct Appended {
    /// Base offset of the first appended batch.
    pub first_offset: Option<u64>,
    /// One past the last appended offset: what to make durable.
    pub end_offset: Option<u64>,
    /// Why appending stopped early, if it did.
    pub error: Option<BrokerError>,
    /// Records appended (as the batches' headers count them).
    pub records: u64,
    /// The broker's time the batches were stamped with, on a topic whose records carry
    /// the append time ([`crate::TimestampType::LogAppendTime`]); `None` otherwise.
    pub log_append_time_ms: Option<i64>,
}

/// Where a produced record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Produced {
    pub partition: u32,
    pub offset: u64,
}

impl Broker {
    /// Appends records and answers where each landed, once the topic's durability
    /// policy is met. Every record is checked before anything is written.
    pub async fn produce(
        &self,
        topic_name: &str,
        records: Vec<ProduceRecord>,
    ) -> Result<Vec<Produced>> {
        self.produce_traced(topic_name, records, None).await
    }

    /// [`Broker::produce`] for a request whose span is `trace`: the partition writers'
    /// append and fsync spans are its children or link to it.
    pub async fn produce_traced(
        &self,
        topic_name: &str,
        records: Vec<ProduceRecord>,
        trace: Option<TraceParent>,
    ) -> Result<Vec<Produced>> {
        let topic = self.topic(topic_name)?;
        let by_partition = route(&topic, records, now_ms() as i64)?;
        let total: usize = by_partition.values().map(|v| v.len()).sum();
        if self.shared.is_some() {
            return self.shared_produce(&topic, by_partition, total).await;
        }
        let mut answers = Vec::with_capacity(by_partition.len());
        for (pid, recs) in by_partition {
            let part = topic.partition(pid)?;
            answers.push(part.append_records(recs, trace));
        }
        let mut out = vec![
            Produced {
                partition: 0,
                offset: 0
            };
            total
        ];
        let mut first_error = None;
        for answer in answers {
            match answer.await {
                Ok(placed) => {
                    for (index, produced) in placed {
                        out[index] = produced;
                    }
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// Appends a client's batches in order without waiting for durability, so that a
    /// connection can go on appending its next request while this one syncs. Each batch
    /// is checked as a reader will need it (CRC, every record decodable within the limits,
    /// an honest record count, no control batch) and stored with its
    /// codec. Stops at the first failing batch; what was appended before it stays and is
    /// reported in the result with the error.
    pub async fn append_client_batches(
        &self,
        topic: &str,
        partition: u32,
        batches: Bytes,
    ) -> Result<Appended> {
        self.append_client_batches_traced(topic, partition, batches, None)
            .await
    }

    /// [`Broker::append_client_batches`] for a request whose span is `trace`: the
    /// append span is its child.
    pub async fn append_client_batches_traced(
        &self,
        topic: &str,
        partition: u32,
        batches: Bytes,
        trace: Option<TraceParent>,
    ) -> Result<Appended> {
        if self.shared.is_some() {
            return self.shared_client_batches(topic, partition, batches).await;
        }
        let topic = self.topic(topic)?;
        let part = topic.partition(partition)?;
        let config = topic.config();
        let limits = client_batch_limits(self.limits, config.max_record_bytes);
        let compacted = config.cleanup_policy.compacts();
        let topic_name = config.name;
        let txns = std::sync::Arc::clone(&self.txns);
        blocking(move || {
            let mut span = match trace {
                Some(parent) => append_span(partition, parent),
                None => Span::OFF,
            };
            let mut out = Appended {
                first_offset: None,
                end_offset: None,
                error: None,
                records: 0,
                log_append_time_ms: None,
            };
            // One time for all of the request's batches, as Kafka stamps them.
            let now = now_ms();
            let mut p = 0;
            while p < batches.len() {
                let checked = check_client_batch(&batches, p, &limits).and_then(|c| {
                    if compacted {
                        check_keyed(&topic_name, &c.bytes, &limits)?;
                    }
                    Ok(c)
                });
                let ClientBatch {
                    end,
                    bytes: mut one,
                    records: count,
                    txn,
                } = match checked {
                    Ok(c) => c,
                    Err(e) => {
                        out.error = Some(e);
                        break;
                    }
                };
                let appended = match txn {
                    // A transactional batch goes in only as part of its producer's
                    // ongoing transaction holding this partition.
                    Some((pid, epoch)) => part
                        .log
                        .append_admitted(&mut one, now, |_| {
                            txns.admit(pid, epoch, &topic_name, partition)
                        })
                        .map_err(|e| BrokerError::from_log(partition, e))
                        .and_then(|admitted| admitted),
                    None => part
                        .log
                        .append(&mut one, now)
                        .map_err(|e| BrokerError::from_log(partition, e)),
                };
                match appended {
                    Ok(info) => {
                        out.records += count;
                        if let Some(at) = info.log_append_time_ms {
                            out.log_append_time_ms.get_or_insert(at);
                        }
                        out.first_offset.get_or_insert(info.base_offset);
                        // A retried older batch reports where it was stored before:
                        // the end to make durable never moves back.
                        out.end_offset = Some(
                            out.end_offset
                                .map_or(info.end_offset, |e| e.max(info.end_offset)),
                        );
                    }
                    Err(e) => {
                        out.error = Some(e);
                        break;
                    }
                }
                p = end;
            }
            if out.first_offset.is_none() && out.error.is_none() {
                out.error = Some(BrokerError::refused("no record batch in the request"));
            }
            if part.log.config().durability != ferry_log::Durability::Always {
                part.publish_latest();
            }
            if span.is_on() {
                span.set(attr::MESSAGE_COUNT, out.records as i64);
                if let (Some(base), Some(end)) = (out.first_offset, out.end_offset) {
                    span.set(attr::BASE_OFFSET, base as i64);
                    span.set(attr::END_OFFSET, end as i64);
                }
                if let Some(e) = &out.error {
                    span.fail(e);
                }
            }
            Ok(out)
        })
        .await
    }

    /// Waits until every offset below `end_offset` meets the topic's durability policy
    /// (one shared sync for everything appended meanwhile), and wakes readers.
    pub async fn make_durable(&self, topic: &str, partition: u32, end_offset: u64) -> Result<()> {
        self.make_durable_traced(topic, partition, end_offset, None)
            .await
    }

    /// [`Broker::make_durable`] for a request whose span is `trace`: the fsync span
    /// that covers it is its child or links to it.
    pub async fn make_durable_traced(
        &self,
        topic: &str,
        partition: u32,
        end_offset: u64,
        trace: Option<TraceParent>,
    ) -> Result<()> {
        if self.shared.is_some() {
            // Shared mode answers appends once they are stored.
            return Ok(());
        }
        let part = self.topic(topic)?.partition(partition)?;
        part.durable(end_offset, trace).await
    }
}

impl Broker {
    /// Checks a client's batches as the local path does, then appends them to the
    /// shared log (see [`crate::shared`]), transactional ones included.
    async fn shared_client_batches(
        &self,
        topic: &str,
        partition: u32,
        batches: Bytes,
    ) -> Result<Appended> {
        let config = self.topic(topic)?.config();
        let limits = client_batch_limits(self.limits, config.max_record_bytes);
        let mut checked = Vec::new();
        let mut error = None;
        let mut p = 0;
        while p < batches.len() {
            // A transaction's batch is admitted by Postgres, in the commit that appends
            // it (see crate::shared_txn).
            match check_client_batch(&batches, p, &limits) {
                Ok(c) => {
                    checked.push((c.bytes, c.records));
                    p = c.end;
                }
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        self.shared_append_client_batches(topic, partition, checked, error)
            .await
    }
}

/// The span of appending to `partition` for the request whose span is `parent`.
pub(crate) fn append_span(partition: u32, parent: TraceParent) -> Span {
    Span::start(Start {
        parent: Some(parent),
        attributes: vec![
            ferry_trace::KeyValue::new(attr::MESSAGING_SYSTEM, attr::SYSTEM_FERRY),
            ferry_trace::KeyValue::new(attr::PARTITION, partition.to_string()),
        ],
        ..Start::new("append", SpanKind::Internal)
    })
}

/// The partition of each record (the one it names, its key's, or the next in turn),
/// with the record as the log takes it, each checked against the topic's size limit.
/// Records keep their index in the request.
fn route(
    topic: &Topic,
    records: Vec<ProduceRecord>,
    now: i64,
) -> Result<BTreeMap<u32, Vec<(usize, NewRecord)>>> {
    let config = topic.config();
    let count = config.partitions;
    let max = config.max_record_bytes as usize;
    let compacted = config.cleanup_policy.compacts();
    let mut by_partition: BTreeMap<u32, Vec<(usize, NewRecord)>> = BTreeMap::new();
    for (index, r) in records.into_iter().enumerate() {
        if compacted && r.key.is_none() {
            return Err(keyless(&config.name, index));
        }
        let partition = match (r.partition, &r.key) {
            (Some(p), _) if p >= count => {
                return Err(BrokerError::PartitionNotFound {
                    topic: config.name.clone(),
                    partition: p,
                    count,
                })
            }
            (Some(p), _) => p,
            (None, Some(key)) => partition_for_key(key, count),
            (None, None) => topic.next_round_robin(count),
        };
        let rec = NewRecord {
            timestamp: r.timestamp.unwrap_or(now),
            attributes: if r.value_is_json {
                ferry_log::batch::RECORD_ATTR_JSON_VALUE
            } else {
                0
            },
            key: r.key,
            value: r.value,
            headers: r.headers,
        };
        let size = record_size_bound(&rec);
        if size > max {
            return Err(BrokerError::RecordTooLarge { index, size, max });
        }
        by_partition
            .entry(partition)
            .or_default()
            .push((index, rec));
    }
    Ok(by_partition)
}

/// The refusal of a record without a key on a compacted topic (Kafka answers
/// INVALID_RECORD): compaction keeps the latest record of each key, and a record
/// without one has nothing to be kept by.
fn keyless(topic: &str, index: usize) -> BrokerError {
    BrokerError::KeyRequired {
        topic: topic.to_string(),
        index,
    }
}

/// Refuses a client's batch for a compacted topic when one of its records has no key.
/// Only compacted topics pay for this second decoding.
fn check_keyed(topic: &str, batch: &[u8], limits: &DecodeLimits) -> Result<()> {
    let bytes = Bytes::copy_from_slice(batch);
    let (_, records) =
        ferry_log::batch::decode_records(&bytes, limits).map_err(BrokerError::from)?;
    match records.iter().position(|r| r.key.is_none()) {
        Some(index) => Err(keyless(topic, index)),
        None => Ok(()),
    }
}

/// An upper bound of the bytes one record adds to a batch, plus the batch header.
pub(crate) fn record_size_bound(r: &NewRecord) -> usize {
    ferry_log::batch::BATCH_HEADER_BYTES
        + 5
        + 1
        + 10
        + 5
        + 5
        + 5
        + r.key.as_ref().map_or(0, |k| k.len())
        + r.value.as_ref().map_or(0, |v| v.len())
        + r.headers
            .iter()
            .map(|h| 10 + h.key.len() + h.value.as_ref().map_or(0, |v| v.len()))
            .sum::<usize>()
}

/// How many times its stored size a client's compressed batch may inflate to.
pub const INFLATE_RATIO_MAX: usize = 64;

/// The limits a client's batch is checked with: inflated, it may hold at most
/// [`INFLATE_RATIO_MAX`] times the largest batch the topic stores (`max_record_bytes`),
/// and never more than the broker's limit.
fn client_batch_limits(broker: DecodeLimits, max_record_bytes: u64) -> DecodeLimits {
    let by_topic = usize::try_from(max_record_bytes)
        .unwrap_or(usize::MAX)
        .saturating_mul(INFLATE_RATIO_MAX);
    DecodeLimits {
        decompressed_bytes_max: broker.decompressed_bytes_max.min(by_topic),
        ..broker
    }
}

/// A client's batch, checked.
struct ClientBatch {
    /// Where it ends in the request.
    end: usize,
    /// A copy to append (the log stamps offsets into it).
    bytes: Vec<u8>,
    /// Its record count.
    records: u64,
    /// Its producer id and epoch, when it is transactional.
    txn: Option<(i64, i16)>,
}

/// Checks the batch starting at `p` of a client's request; returns where it ends, a
/// copy to append (the log stamps offsets into it), its record count, and its producer
/// id and epoch when it is transactional. The check is
/// [`ferry_log::batch::check_batch`], the one every stored batch passes; a header whose
/// `max_timestamp` disagrees with its records is rewritten, as Kafka does.
fn check_client_batch(batches: &Bytes, p: usize, limits: &DecodeLimits) -> Result<ClientBatch> {
    let one = ferry_log::batch::Batches::new(batches.slice(p..))
        .next()
        .unwrap_or_else(|| {
            Err(ferry_log::BatchError::Truncated {
                needed: 12,
                available: 0,
            })
        })
        .map_err(BrokerError::from)?;
    // The log checks the size against the topic's limit when it appends. A batch that
    // fails is reported by its CRC first.
    let checked = ferry_log::batch::check_batch(&one, usize::MAX, limits)
        .map_err(|e| BrokerError::from(ferry_log::batch::verify_crc(&one).err().unwrap_or(e)))?;
    if checked.header.is_control() {
        return Err(BrokerError::refused(
            "control batches are not accepted from clients",
        ));
    }
    let txn = checked
        .header
        .is_transactional()
        .then_some((checked.header.producer_id, checked.header.producer_epoch));
    if txn.is_some_and(|(pid, _)| pid < 0) {
        return Err(BrokerError::refused(
            "a transactional batch must carry a producer id",
        ));
    }
    let mut copy = one.to_vec();
    if checked.max_timestamp != checked.header.max_timestamp {
        ferry_log::batch::set_max_timestamp(&mut copy, checked.max_timestamp);
    }
    Ok(ClientBatch {
        end: p + one.len(),
        bytes: copy,
        records: u64::try_from(checked.header.record_count).unwrap_or(0),
        txn,
    })
}
