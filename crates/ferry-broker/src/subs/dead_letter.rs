//! Records leaving a subscription's normal flow: out of deliveries to the dead-letter
//! topic (written by the broker's periodic tick), back from it (redrive), and single
//! records delivered again on request (retry).

use super::headers::{self, DeadLetterOrigin, HEADER_ORIGIN_PARTITION, HEADER_ORIGIN_SUBSCRIPTION};
use super::lease::RecordAt;
use super::state::Event;
use super::subscription::Subscription;
use super::SubscriptionConfig;
use crate::broker::blocking;
use crate::error::{BrokerError, Result};
use crate::{now_ms, Broker, ProduceRecord, Produced};
use ferry_log::batch::{RecordHeader, RECORD_ATTR_JSON_VALUE};
use ferry_log::sync::lock;
use ferry_log::Record;
use std::sync::Arc;
use std::time::Duration;

/// Records a redrive reads from the dead-letter topic at a time, at most...
const REDRIVE_READ_RECORDS_MAX: usize = 500;
/// ...and bytes.
const REDRIVE_READ_BYTES_MAX: usize = 4 << 20;

/// A record out of deliveries, waiting to be written to the dead-letter topic.
#[derive(Debug, Clone)]
pub struct DeadLetterCandidate {
    pub at: RecordAt,
    /// Deliveries it had.
    pub attempts: u32,
    pub last_error: Option<Arc<str>>,
    /// Its latest failed attempts (see `state::Pending::history`).
    pub history: Option<Box<str>>,
}

/// A copy of `r` to produce, with `headers`.
fn copy_of(
    r: &Record,
    headers: Vec<RecordHeader>,
    partition: Option<u32>,
    timestamp: Option<i64>,
) -> ProduceRecord {
    ProduceRecord {
        key: r.key.clone(),
        value: r.value.clone(),
        headers,
        partition,
        timestamp,
        value_is_json: r.attributes & RECORD_ATTR_JSON_VALUE != 0,
    }
}

/// Copies of the dead letters among `records` that came from subscription `name`, for
/// it alone, each to its original partition when the topic still has it.
fn redrive_copies(records: &[Record], name: &str, source_parts: u32) -> Vec<ProduceRecord> {
    records
        .iter()
        .filter(|r| r.header(HEADER_ORIGIN_SUBSCRIPTION) == Some(name.as_bytes()))
        .map(|r| {
            let partition = r
                .header(HEADER_ORIGIN_PARTITION)
                .and_then(|v| std::str::from_utf8(v).ok()?.parse::<u32>().ok())
                .filter(|p| *p < source_parts);
            // A new record: its age (push.max_age_ms) starts now.
            copy_of(
                r,
                headers::redrive_headers(&r.headers, name),
                partition,
                None,
            )
        })
        .collect()
}

impl Broker {
    /// The record at `offset` of a topic's partition, if the topic still has it (read
    /// from the local log or, in shared mode, the shared one).
    async fn record_at(&self, topic: &str, partition: u32, offset: u64) -> Result<Option<Record>> {
        match self
            .read_uncounted(topic, partition, offset, 1, 1, std::time::Duration::ZERO)
            .await
        {
            Ok(r) => Ok(r
                .records
                .into_iter()
                .next()
                .filter(|r| r.offset as u64 == offset)),
            Err(BrokerError::OffsetOutOfRange { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Delivers one record of the topic to this subscription again: a copy is produced
    /// to the topic (same partition) for this subscription alone.
    pub async fn retry_record(&self, name: &str, partition: u32, offset: u64) -> Result<Produced> {
        let cfg = self.subscription(name)?.config();
        self.topic(&cfg.topic)?;
        let rec = self
            .record_at(&cfg.topic, partition, offset)
            .await?
            .ok_or_else(|| {
                let (earliest, latest) = self.bounds(&cfg.topic, partition).unwrap_or((0, 0));
                BrokerError::OffsetOutOfRange {
                    partition,
                    requested: offset,
                    earliest,
                    latest,
                }
            })?;
        let headers = headers::redrive_headers(&rec.headers, name);
        // A new record: its age (push.max_age_ms) starts now.
        let copy = copy_of(&rec, headers, Some(partition), None);
        let produced = self.produce(&cfg.topic, vec![copy]).await?;
        produced
            .into_iter()
            .next()
            .ok_or_else(|| BrokerError::Storage("the copy was not produced".into()))
    }

    /// Produces records of the dead-letter topic that came from this subscription back
    /// to its topic, addressed to it alone. Returns how many.
    pub async fn redrive(&self, name: &str, max_records: usize) -> Result<usize> {
        let sub = self.subscription(name)?;
        let _one_at_a_time = sub.redriving.lock().await;
        let cfg = sub.config();
        let dlq_name = cfg.dead_letter_topic.clone().ok_or_else(|| {
            BrokerError::InvalidConfig(format!(
                "subscription '{name}' has no dead_letter_topic to redrive from"
            ))
        })?;
        self.topic(&dlq_name)?;
        self.topic(&cfg.topic)?;
        let source_parts = self.partition_ends(&cfg.topic).len() as u32;
        let mut total = 0;
        for (p, (earliest, _)) in (0u32..).zip(self.partition_ends(&dlq_name)) {
            while total < max_records {
                // Off the async threads: a pull holds the lock while it reads.
                let s = Arc::clone(&sub);
                let mark = blocking(move || {
                    Ok(lock(&s.inner).state.redriven.get(&p).copied().unwrap_or(0))
                })
                .await?;
                let from = mark.max(earliest);
                let want = (max_records - total).min(REDRIVE_READ_RECORDS_MAX);
                // Ferry's own read: not counted as records handed to a consumer.
                let read = self
                    .read_uncounted(
                        &dlq_name,
                        p,
                        from,
                        want,
                        REDRIVE_READ_BYTES_MAX,
                        Duration::ZERO,
                    )
                    .await?;
                if read.records.is_empty() {
                    break;
                }
                let copies = redrive_copies(&read.records, name, source_parts);
                let n = copies.len();
                if !copies.is_empty() {
                    self.produce(&cfg.topic, copies).await?;
                }
                total += n;
                let next = read.next_offset;
                let s = Arc::clone(&sub);
                blocking(move || {
                    s.record(|c| {
                        c.push(Event::Redriven {
                            partition: p,
                            upto: next,
                        })
                    })
                })
                .await?;
            }
            if total >= max_records {
                break;
            }
        }
        Ok(total)
    }

    /// Runs each subscription's periodic work: expiry, delays, dead letters, checkpoints.
    pub(crate) async fn tick_subscriptions(&self) {
        for sub in self.subs.all() {
            let Ok(_ticking) = sub.ticking.try_lock() else {
                continue;
            };
            let s = Arc::clone(&sub);
            let dead = match blocking(move || s.tick(now_ms())).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(subscription = %sub.config().name, error = %e, "Subscription upkeep failed.");
                    continue;
                }
            };
            if !dead.is_empty() {
                if let Err(e) = self.dead_letter(&sub, dead).await {
                    tracing::error!(subscription = %sub.config().name, error = %e, "Could not write to the dead-letter topic; will retry.");
                }
            }
        }
    }

    /// Writes records out of deliveries to the dead-letter topic and marks those
    /// written (or gone from the topic, or without a dead-letter topic) done.
    async fn dead_letter(
        &self,
        sub: &Arc<Subscription>,
        dead: Vec<DeadLetterCandidate>,
    ) -> Result<()> {
        let cfg = sub.config();
        let (copies, mut done) = self.dead_letter_copies(&cfg, dead).await?;
        match &cfg.dead_letter_topic {
            None if !copies.is_empty() => {
                tracing::warn!(subscription = %cfg.name, "Dropping records out of deliveries: no dead_letter_topic is set.");
                done.extend(copies.iter().map(|(at, _)| *at));
            }
            None => {}
            Some(dlq) => done.extend(self.write_dead_letters(&cfg, dlq, copies).await),
        }
        let s = Arc::clone(sub);
        blocking(move || s.dead_lettered(&done)).await
    }

    /// The dead-letter copies of `dead`, and the records already gone from the topic
    /// (retention), which need no copy.
    async fn dead_letter_copies(
        &self,
        cfg: &SubscriptionConfig,
        dead: Vec<DeadLetterCandidate>,
    ) -> Result<(Vec<(RecordAt, ProduceRecord)>, Vec<RecordAt>)> {
        let (mut copies, mut gone) = (Vec::new(), Vec::new());
        for d in dead {
            let offset = d.at.offset;
            let Some(r) = self.record_at(&cfg.topic, d.at.partition, offset).await? else {
                gone.push(d.at);
                continue;
            };
            let origin = DeadLetterOrigin {
                subscription: &cfg.name,
                topic: &cfg.topic,
                partition: d.at.partition,
                offset,
                attempts: d.attempts,
                last_error: d.last_error.as_deref(),
                history: d.history.as_deref(),
            };
            let headers = headers::dead_letter_headers(&r.headers, &origin);
            copies.push((d.at, copy_of(&r, headers, None, Some(r.timestamp))));
        }
        Ok((copies, gone))
    }

    /// Produces `copies` to `dlq`; returns the records now done. All at once first, then
    /// one by one so that one record the topic refuses does not hold back the others;
    /// those not written are tried again at the next tick.
    async fn write_dead_letters(
        &self,
        cfg: &SubscriptionConfig,
        dlq: &str,
        copies: Vec<(RecordAt, ProduceRecord)>,
    ) -> Vec<RecordAt> {
        let all: Vec<ProduceRecord> = copies.iter().map(|(_, r)| r.clone()).collect();
        if all.is_empty() || self.produce(dlq, all).await.is_ok() {
            return copies.into_iter().map(|(at, _)| at).collect();
        }
        let mut done = Vec::new();
        let mut first_error = None;
        for (at, mut r) in copies {
            match self.produce(dlq, vec![r.clone()]).await {
                Ok(_) => done.push(at),
                Err(BrokerError::RecordTooLarge { .. }) => {
                    // Without the history headers, or not at all: it stays in its own
                    // topic.
                    headers::without_long_headers(&mut r.headers);
                    if self.produce(dlq, vec![r]).await.is_err() {
                        tracing::error!(subscription = %cfg.name, partition = at.partition, offset = at.offset, dead_letter_topic = %dlq, "A record out of deliveries is too large for the dead-letter topic; it is marked done and stays in its own topic.");
                    }
                    done.push(at);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            tracing::warn!(subscription = %cfg.name, error = %e, "Could not write to the dead-letter topic; will retry.");
        }
        done
    }
}
