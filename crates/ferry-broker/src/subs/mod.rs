//! Queue subscriptions: named, durable consumers of a topic that hand records out one
//! lease at a time, with acks, nacks, redelivery with backoff, dead letters, delays and
//! per-key ordering. A subscription is a view over the topic's log, never a copy.
//!
//! The state machine is in [`state`]; its storage in [`store`]. This module joins them
//! to the topic: the head scan (filter, scheduled delivery, ordering), leases, the
//! periodic tick (expiry, loading delay files, dead-lettering, checkpoints).

pub mod codec;
pub mod push;
pub mod retry;
pub mod state;
pub mod store;

use crate::error::{BrokerError, Result};
use crate::filter::Filter;
use crate::partition::Partition;
use crate::topic::Topic;
use crate::{now_ms, Broker, ProduceRecord, Produced};
use bytes::Bytes;
use codec::DelayEntry;
use ferry_log::batch::{DecodeLimits, RecordHeader};
use ferry_log::Record;
use retry::RetryPolicy;
use serde_json::Value;
use state::{bucket_of, key_hash, Event, PState, State, BUCKET_MS};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};
use store::{JournalStore, Snapshot, SubscriptionStore};

/// Limits, named with their unit last.
pub const VISIBILITY_TIMEOUT_MS_MIN: u64 = 100;
pub const VISIBILITY_TIMEOUT_MS_MAX: u64 = 12 * 3600 * 1000;
pub const MAX_IN_FLIGHT_MAX: u32 = 100_000;
pub const PULL_RECORDS_MAX: usize = 1000;
pub const PULL_WAIT_MS_MAX: u64 = 60_000;
pub const LEASES_PER_REQUEST_MAX: usize = 1000;
pub const DELAY_MS_MAX: u64 = retry::RETRY_DELAY_MS_MAX;
pub const ERROR_BYTES_MAX: usize = 1024;
/// Records one pull looks at, at most, while it scans for deliverable ones.
pub const SCAN_RECORDS_MAX: usize = 20_000;
/// Records held back by per-key ordering before the head scan pauses.
pub const HELD_RECORDS_MAX: usize = 100_000;

/// The consumer name of Ferry's webhook dispatcher, the only one that pulls from push
/// subscriptions.
pub const PUSH_CONSUMER: &str = "ferry-push";

/// Headers Ferry reads and writes on records.
pub const HEADER_DELIVER_AT: &str = "ferry-deliver-at";
pub const HEADER_REDRIVE_TO: &str = "ferry-redrive-subscription";
pub const HEADER_ORIGIN_SUBSCRIPTION: &str = "ferry-origin-subscription";
pub const HEADER_ORIGIN_TOPIC: &str = "ferry-origin-topic";
pub const HEADER_ORIGIN_PARTITION: &str = "ferry-origin-partition";
pub const HEADER_ORIGIN_OFFSET: &str = "ferry-origin-offset";
pub const HEADER_ATTEMPTS: &str = "ferry-attempts";
pub const HEADER_LAST_ERROR: &str = "ferry-last-error";
pub const HEADER_DELIVERY_HISTORY: &str = "ferry-delivery-history";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Queue,
    Push,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ordering {
    #[default]
    None,
    /// One record per key in flight at a time.
    Key,
}

/// A subscription's settings, as stored and as the API shows them.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SubscriptionConfig {
    pub name: String,
    pub topic: String,
    pub mode: Mode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<Value>,
    pub visibility_timeout_ms: u64,
    /// 0: unlimited, no dead-lettering.
    pub max_deliveries: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letter_topic: Option<String>,
    pub retry: RetryPolicy,
    pub max_in_flight: u32,
    pub max_in_flight_per_consumer: u32,
    pub ordering: Ordering,
    pub created_at_ms: u64,
    /// Push subscriptions: the endpoint and how to call it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<push::PushConfig>,
    /// A paused push subscription sends nothing; records wait.
    #[serde(default)]
    pub paused: bool,
}

/// Where a new subscription starts, or where a seek goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    Earliest,
    Latest,
    /// The same offset in every partition (clamped to what is stored).
    Offset(u64),
    /// One partition only.
    PartitionOffset(u32, u64),
    Timestamp(i64),
}

impl Position {
    /// Parses `"earliest"`, `"latest"`, `{"offset": n, "partition"?: p}` or
    /// `{"timestamp": ms}`.
    pub fn parse(v: &Value) -> Result<Position> {
        let bad = || {
            BrokerError::InvalidConfig(format!(
                "position {v} is not \"earliest\", \"latest\", {{\"offset\": n}}, {{\"partition\": p, \"offset\": n}} or {{\"timestamp\": ms}}"
            ))
        };
        match v {
            Value::String(s) if s == "earliest" => Ok(Position::Earliest),
            Value::String(s) if s == "latest" => Ok(Position::Latest),
            Value::Object(m) => {
                let num = |k: &str| m.get(k).map(|x| x.as_u64().ok_or_else(bad)).transpose();
                if m.keys()
                    .any(|k| !["offset", "partition", "timestamp"].contains(&k.as_str()))
                {
                    return Err(bad());
                }
                match (num("offset")?, num("partition")?, m.get("timestamp")) {
                    (Some(o), None, None) => Ok(Position::Offset(o)),
                    (Some(o), Some(p), None) => Ok(Position::PartitionOffset(
                        u32::try_from(p).map_err(|_| bad())?,
                        o,
                    )),
                    (None, None, Some(t)) => Ok(Position::Timestamp(
                        t.as_i64().filter(|t| *t >= 0).ok_or_else(bad)?,
                    )),
                    _ => Err(bad()),
                }
            }
            _ => Err(bad()),
        }
    }
}

/// Settings sent to create (absent: defaults) or update (absent: unchanged) a
/// subscription. Unknown fields are refused.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionSettings {
    pub name: Option<String>,
    pub topic: Option<String>,
    pub mode: Option<Mode>,
    /// `null` removes the filter (on update), so a present null is kept as `Some(Null)`.
    #[serde(default, deserialize_with = "present")]
    pub filter: Option<Value>,
    pub start: Option<Value>,
    pub visibility_timeout_ms: Option<i64>,
    pub max_deliveries: Option<u32>,
    pub dead_letter_topic: Option<String>,
    pub retry: Option<RetryPolicy>,
    pub max_in_flight: Option<u32>,
    pub max_in_flight_per_consumer: Option<u32>,
    pub ordering: Option<Ordering>,
    /// Replaces the whole push configuration.
    pub push: Option<push::PushConfig>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<Value>, D::Error> {
    <Value as serde::Deserialize>::deserialize(d).map(Some)
}

pub fn check_timeout(what: &str, ms: i64) -> Result<u64> {
    if ms < VISIBILITY_TIMEOUT_MS_MIN as i64 || ms > VISIBILITY_TIMEOUT_MS_MAX as i64 {
        return Err(BrokerError::InvalidTimeout(format!(
            "{what} must be between {VISIBILITY_TIMEOUT_MS_MIN} ms and {VISIBILITY_TIMEOUT_MS_MAX} ms (12 hours), got {ms}"
        )));
    }
    Ok(ms as u64)
}

impl SubscriptionConfig {
    fn validate(&self) -> Result<Filter> {
        crate::config::validate_topic_name(&self.name).map_err(|e| match e {
            BrokerError::InvalidTopicName { name, reason } => {
                BrokerError::InvalidConfig(format!("invalid subscription name '{name}': {reason}"))
            }
            other => other,
        })?;
        match (self.mode, &self.push) {
            (Mode::Push, None) => {
                return Err(BrokerError::InvalidConfig(
                    "mode \"push\" needs push settings: {\"push\": {\"url\": ...}}".into(),
                ))
            }
            (Mode::Queue, Some(_)) => {
                return Err(BrokerError::InvalidConfig(
                    "push settings are for mode \"push\"".into(),
                ))
            }
            (Mode::Push, Some(p)) => {
                p.validate()?;
                if p.concurrency > self.max_in_flight_per_consumer {
                    return Err(BrokerError::InvalidConfig(format!(
                        "push.concurrency {} is over max_in_flight_per_consumer {}; raise that too",
                        p.concurrency, self.max_in_flight_per_consumer
                    )));
                }
            }
            (Mode::Queue, None) => {}
        }
        check_timeout("visibility_timeout_ms", self.visibility_timeout_ms as i64)?;
        self.retry.validate()?;
        if self.max_in_flight == 0 || self.max_in_flight > MAX_IN_FLIGHT_MAX {
            return Err(BrokerError::InvalidConfig(format!(
                "max_in_flight must be between 1 and {MAX_IN_FLIGHT_MAX}, got {}",
                self.max_in_flight
            )));
        }
        if self.max_in_flight_per_consumer == 0
            || self.max_in_flight_per_consumer > self.max_in_flight
        {
            return Err(BrokerError::InvalidConfig(format!(
                "max_in_flight_per_consumer must be between 1 and max_in_flight ({}), got {}",
                self.max_in_flight, self.max_in_flight_per_consumer
            )));
        }
        if let Some(d) = &self.dead_letter_topic {
            crate::config::validate_topic_name(d)?;
            if *d == self.topic {
                return Err(BrokerError::InvalidConfig(
                    "dead_letter_topic must not be the subscription's own topic".into(),
                ));
            }
        }
        match &self.filter {
            None => Ok(Filter::default()),
            Some(v) => Ok(Filter::parse(v)?),
        }
    }

    fn apply(&mut self, s: &SubscriptionSettings) -> Result<()> {
        if let Some(f) = &s.filter {
            self.filter = (!f.is_null()).then(|| f.clone());
        }
        if let Some(v) = s.visibility_timeout_ms {
            self.visibility_timeout_ms = check_timeout("visibility_timeout_ms", v)?;
        }
        if let Some(v) = s.max_deliveries {
            self.max_deliveries = v;
        }
        if let Some(v) = &s.dead_letter_topic {
            self.dead_letter_topic = Some(v.clone());
        }
        if let Some(v) = s.retry {
            self.retry = v;
        }
        if let Some(v) = s.max_in_flight {
            self.max_in_flight = v;
        }
        if let Some(v) = s.max_in_flight_per_consumer {
            self.max_in_flight_per_consumer = v;
        }
        if let Some(p) = &s.push {
            self.push = Some(p.clone());
        }
        Ok(())
    }
}

/// A record out of deliveries: partition, offset, deliveries made, last error, history.
type DeadRecord = (u32, u64, u32, Option<Arc<str>>, Option<Box<str>>);

/// A record handed to a consumer.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub lease_id: String,
    pub attempt: u32,
    pub partition: u32,
    pub lease_expires_ms: u64,
    pub record: Record,
}

/// What a pull asks for.
#[derive(Debug, Clone)]
pub struct PullRequest {
    pub consumer: Arc<str>,
    pub max_records: usize,
    pub wait: Duration,
    pub visibility_timeout_ms: Option<u64>,
}

/// A subscription's numbers for `describe`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SubscriptionStatus {
    #[serde(flatten)]
    pub config: SubscriptionConfig,
    /// Records not yet done: not delivered, in flight, waiting or delayed.
    pub backlog: u64,
    pub oldest_unacked_age_ms: Option<u64>,
    pub in_flight: u32,
    /// Given back and waiting for redelivery (or for their key's turn).
    pub waiting: usize,
    pub delayed: u64,
    pub dead_letter_pending: usize,
    pub dead_lettered: u64,
    pub delivered: u64,
    pub redelivered: u64,
    pub acked: u64,
    pub partitions: Vec<PartitionStatus>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PartitionStatus {
    pub partition: u32,
    /// Every offset below is done.
    pub ack_floor: u64,
    /// The next offset never delivered.
    pub head: u64,
    pub latest: u64,
    pub backlog: u64,
}

struct Inner {
    state: State,
    next_token: u64,
    rr: usize,
    last_checkpoint: Instant,
    checkpoint_position: u64,
    rng: rand::rngs::SmallRng,
}

pub struct Subscription {
    config: RwLock<SubscriptionConfig>,
    filter: RwLock<Filter>,
    store: JournalStore,
    inner: Mutex<Inner>,
    /// Woken when records may have become deliverable (given back, acked, due).
    changed: tokio::sync::Notify,
    /// Tells this process's lease ids apart from an earlier one's.
    epoch: u32,
    limits: DecodeLimits,
    /// Ticks run one at a time.
    ticking: tokio::sync::Mutex<()>,
    deleted: std::sync::atomic::AtomicBool,
    dir: PathBuf,
}

static EPOCH_SEQ: AtomicU64 = AtomicU64::new(0);

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A lease id names the record, its attempt, and a token only this lease has:
/// `<partition>-<offset>-<attempt>-<token hex>`.
fn lease_id(p: u32, o: u64, attempt: u32, token: u64) -> String {
    format!("{p}-{o}-{attempt}-{token:x}")
}

fn parse_lease(id: &str) -> Option<(u32, u64, u32, u64)> {
    let mut it = id.split('-');
    let p = it.next()?.parse().ok()?;
    let o = it.next()?.parse().ok()?;
    let a = it.next()?.parse().ok()?;
    let t = u64::from_str_radix(it.next()?, 16).ok()?;
    if it.next().is_some() {
        return None;
    }
    Some((p, o, a, t))
}

fn header<'a>(r: &'a Record, name: &str) -> Option<&'a [u8]> {
    r.headers
        .iter()
        .find(|h| h.key.as_ref() == name.as_bytes())
        .and_then(|h| h.value.as_deref())
}

/// When a record asks to be delivered: its `ferry-deliver-at` header (ms since 1970).
fn deliver_at(r: &Record) -> Option<u64> {
    std::str::from_utf8(header(r, HEADER_DELIVER_AT)?)
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn read_one(part: &Partition, o: u64, limits: &DecodeLimits) -> Result<Option<Record>> {
    match part.read_records(o, 1, 1, limits) {
        Ok(r) => Ok(r
            .records
            .into_iter()
            .next()
            .filter(|r| r.offset as u64 == o)),
        Err(BrokerError::OffsetOutOfRange { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Events gathered under the lock, applied to the state as they are made.
struct Batch<'a> {
    state: &'a mut State,
    events: Vec<Event>,
    delays: Vec<DelayEntry>,
}

impl Batch<'_> {
    fn push(&mut self, e: Event) {
        self.state.apply(&e);
        if let (
            Some(Event::Skip { p, hi, .. }),
            Event::Skip {
                p: p2,
                lo: lo2,
                hi: hi2,
            },
        ) = (self.events.last_mut(), e)
        {
            if *p == p2 && *hi == lo2 {
                *hi = hi2;
                return;
            }
        }
        self.events.push(e);
    }

    /// A record waits until `due`: in memory when its bucket is loaded (or ordering is
    /// on), else in a delay file.
    fn delay(&mut self, p: u32, o: u64, attempt: u32, due: u64, key: u64) {
        if !self.state.ordering && bucket_of(due) > self.state.loaded_upto {
            let gen = self.state.part(p).map_or(0, |x| x.gen);
            self.delays.push(DelayEntry {
                due,
                offset: o,
                partition: p,
                attempt,
                gen,
            });
        }
        self.push(Event::Delay {
            p,
            o,
            attempt,
            due,
            key,
        });
    }
}

impl Subscription {
    fn open(dir: &Path, config: SubscriptionConfig, initial: Option<Snapshot>) -> Result<Self> {
        let filter = config.validate()?;
        let store = JournalStore::open(dir)?;
        if let Some(s) = &initial {
            store.checkpoint(s)?;
        }
        let (state, replayed) = load_state(&store, &config)?;
        tracing::info!(subscription = %config.name, replayed, "Opened subscription.");
        let position = store.position();
        let epoch = (now_ms() as u32)
            .wrapping_mul(2_654_435_761)
            .wrapping_add(EPOCH_SEQ.fetch_add(1, AtomicOrdering::Relaxed) as u32);
        Ok(Subscription {
            config: RwLock::new(config),
            filter: RwLock::new(filter),
            store,
            inner: Mutex::new(Inner {
                state,
                next_token: 0,
                rr: 0,
                last_checkpoint: Instant::now(),
                checkpoint_position: position,
                rng: rand::SeedableRng::from_entropy(),
            }),
            changed: tokio::sync::Notify::new(),
            epoch,
            limits: DecodeLimits::default(),
            ticking: tokio::sync::Mutex::new(()),
            deleted: std::sync::atomic::AtomicBool::new(false),
            dir: dir.to_path_buf(),
        })
    }

    pub fn config(&self) -> SubscriptionConfig {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn filter(&self) -> Filter {
        self.filter
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether this subscription delivers the record at all.
    fn wants(&self, filter: &Filter, name: &str, r: &Record) -> bool {
        if let Some(to) = header(r, HEADER_REDRIVE_TO) {
            return to == name.as_bytes();
        }
        filter.matches(r.key.as_deref(), &r.headers)
    }

    /// Gives a leased (or expired) record back: ready again, delayed, or dead when out
    /// of deliveries.
    fn give_back(
        cfg: &SubscriptionConfig,
        b: &mut Batch<'_>,
        rng: &mut rand::rngs::SmallRng,
        p: u32,
        o: u64,
        delay: Option<u64>,
        now: u64,
    ) {
        let Some(x) = b.state.pending(p, o) else {
            return;
        };
        let (attempt, key) = (x.attempt, x.key);
        if cfg.max_deliveries > 0 && attempt >= cfg.max_deliveries {
            b.state.set(p, o, attempt, key, PState::Dead);
            return;
        }
        let d = delay.unwrap_or_else(|| cfg.retry.delay(attempt, rng));
        if d == 0 {
            b.state.set(p, o, attempt, key, PState::Ready);
        } else {
            b.delay(p, o, attempt, now + d, key);
        }
    }

    /// Ends expired leases and releases due delays.
    fn settle(
        &self,
        inner: &mut Inner,
        b: &mut Vec<Event>,
        delays: &mut Vec<DelayEntry>,
        now: u64,
    ) {
        let cfg = self.config();
        let expired = inner.state.expired(now);
        let mut batch = Batch {
            state: &mut inner.state,
            events: std::mem::take(b),
            delays: std::mem::take(delays),
        };
        let expired_error: Arc<str> = Arc::from("lease expired");
        for (p, o) in expired {
            batch
                .state
                .set_last_error(p, o, Some(Arc::clone(&expired_error)));
            Self::give_back(&cfg, &mut batch, &mut inner.rng, p, o, None, now);
        }
        batch.state.release_due(now);
        *b = batch.events;
        *delays = batch.delays;
    }

    /// Stores delay entries, then events; returns the journal position to wait for.
    ///
    /// The state already holds these changes. If they cannot be stored, the state is
    /// loaded again from what is stored, so that memory never runs ahead of the disk
    /// (a record taken out of the pending set but written nowhere would be lost).
    fn persist(
        &self,
        inner: &mut Inner,
        events: &[Event],
        delays: &[DelayEntry],
    ) -> Result<Option<u64>> {
        let stored = (|| {
            if !delays.is_empty() {
                self.store.write_delays(delays)?;
            }
            if events.is_empty() {
                return Ok(None);
            }
            self.store.append(events).map(Some)
        })();
        if let Err(e) = &stored {
            let cfg = self.config();
            match load_state(&self.store, &cfg) {
                Ok((state, _)) => inner.state = state,
                Err(again) => {
                    tracing::error!(subscription = %cfg.name, error = %again, "Could not reload a subscription's state after a failed write.")
                }
            }
            tracing::error!(subscription = %cfg.name, error = %e, "A subscription change could not be stored; its state was reloaded from disk.");
        }
        stored
    }

    /// One pull without waiting (blocking I/O).
    fn pull_once(&self, topic: &Topic, req: &PullRequest) -> Result<Vec<Delivery>> {
        let cfg = self.config();
        let filter = self.filter();
        let parts = topic.partitions();
        let mut guard = lock(&self.inner);
        let inner = &mut *guard;
        let now = now_ms();
        let (mut events, mut delays) = (Vec::new(), Vec::new());
        self.settle(inner, &mut events, &mut delays, now);
        let room_sub = cfg.max_in_flight.saturating_sub(inner.state.leased()) as usize;
        let room_consumer =
            cfg.max_in_flight_per_consumer
                .saturating_sub(inner.state.leased_by(&req.consumer)) as usize;
        let cap = req.max_records.min(room_sub).min(room_consumer);
        let visibility = req
            .visibility_timeout_ms
            .unwrap_or(cfg.visibility_timeout_ms);
        let expires = now + visibility;
        let mut out: Vec<(u32, u64, Record)> = Vec::new();
        let mut b = Batch {
            state: &mut inner.state,
            events,
            delays,
        };
        // Redeliveries first, lowest offsets first.
        let mut held_back = Vec::new();
        let mut scan_error = None;
        while out.len() < cap {
            let Some((p, o)) = b.state.pop_ready() else {
                break;
            };
            let Some(part) = parts.get(p as usize) else {
                held_back.push((p, o));
                continue;
            };
            match read_one(part, o, &self.limits) {
                Err(e) => {
                    held_back.push((p, o));
                    scan_error = Some(e);
                    break;
                }
                Ok(Some(r)) => out.push((p, o, r)),
                Ok(None) => {
                    // Gone from the topic (retention): nothing left to deliver.
                    b.state.remove(p, o);
                    b.push(Event::Skip {
                        p,
                        lo: o,
                        hi: o + 1,
                    });
                }
            }
        }
        // Then new records from the head of each partition, in turn.
        let n = parts.len();
        // Records skipped on the way (filtered out, delayed, held back) do not fill the
        // pull: go on scanning, within a budget that bounds how long the lock is held.
        let mut scanned = 0usize;
        loop {
            let before = scanned;
            for i in 0..n {
                if out.len() >= cap || scan_error.is_some() {
                    break;
                }
                let p = ((inner.rr + i) % n) as u32;
                let part = &parts[p as usize];
                let stats = part.log.stats();
                if b.state.part(p).is_none() {
                    // A partition added to the topic: start at its beginning.
                    b.push(Event::Seek {
                        p,
                        offset: stats.earliest,
                    });
                }
                let head = b.state.part(p).map_or(0, |x| x.head);
                if head < stats.earliest {
                    b.push(Event::Skip {
                        p,
                        lo: head,
                        hi: stats.earliest,
                    });
                }
                let mut cursor = head.max(stats.earliest);
                if cursor >= part.log.latest() {
                    continue;
                }
                if b.state.ordering
                    && b.state.part(p).map_or(0, |x| x.pending.len()) >= HELD_RECORDS_MAX
                {
                    continue;
                }
                let want = (cap - out.len()).max(64);
                let read = match part.read_records(cursor, want, 1024 * 1024, &self.limits) {
                    Ok(r) => r,
                    Err(e) => {
                        scan_error = Some(e);
                        break;
                    }
                };
                let mut stopped = false;
                scanned += read.records.len();
                for r in read.records {
                    let o = r.offset as u64;
                    if o > cursor {
                        b.push(Event::Skip {
                            p,
                            lo: cursor,
                            hi: o,
                        });
                    }
                    if !self.wants(&filter, &cfg.name, &r) {
                        b.push(Event::Skip {
                            p,
                            lo: o,
                            hi: o + 1,
                        });
                        cursor = o + 1;
                        continue;
                    }
                    let key = key_hash(r.key.as_deref());
                    match deliver_at(&r).filter(|&due| due > now) {
                        Some(due) => b.delay(p, o, 0, due, key),
                        None if b.state.key_busy(p, key) => b.push(Event::Ready {
                            p,
                            o,
                            attempt: 0,
                            key,
                        }),
                        None if out.len() >= cap => {
                            stopped = true;
                            break;
                        }
                        None => {
                            b.state.set(p, o, 0, key, PState::Ready);
                            b.state.remove_from_ready(p, o);
                            out.push((p, o, r));
                        }
                    }
                    cursor = o + 1;
                }
                if !stopped && read.next_offset > cursor {
                    b.push(Event::Skip {
                        p,
                        lo: cursor,
                        hi: read.next_offset,
                    });
                }
            }
            if out.len() >= cap
                || scan_error.is_some()
                || scanned == before
                || scanned >= SCAN_RECORDS_MAX
            {
                break;
            }
        }
        inner.rr = inner.rr.wrapping_add(1);
        // Lease what was taken.
        let mut deliveries = Vec::with_capacity(out.len());
        for (p, o, record) in out {
            let Some(x) = b.state.pending(p, o) else {
                continue;
            };
            let (attempt, key) = (x.attempt + 1, x.key);
            inner.next_token = inner.next_token.wrapping_add(1);
            let token = (u64::from(self.epoch) << 32)
                | u64::from((inner.next_token as u32).wrapping_mul(0x9E37_79B1));
            b.push(Event::Deliver { p, o, attempt, key });
            b.state.lease(
                p,
                o,
                PState::Leased {
                    expires,
                    token,
                    consumer: Arc::clone(&req.consumer),
                },
            );
            b.state.counters.delivered += 1;
            if attempt > 1 {
                b.state.counters.redelivered += 1;
            }
            deliveries.push(Delivery {
                lease_id: lease_id(p, o, attempt, token),
                attempt,
                partition: p,
                lease_expires_ms: expires,
                record,
            });
        }
        for (p, o) in held_back {
            b.state.set_ready_again(p, o);
        }
        let (events, delays) = (std::mem::take(&mut b.events), std::mem::take(&mut b.delays));
        // Journal order must be the order the state saw: append under the lock.
        self.persist(&mut guard, &events, &delays)?;
        drop(guard);
        match (deliveries.is_empty(), scan_error) {
            (true, Some(e)) => Err(e),
            _ => Ok(deliveries),
        }
    }

    /// Checks lease ids: each must name a live lease. Returns `(partition, offset)`s.
    /// `lenient` skips ids that do not instead of failing.
    fn check_leases(
        &self,
        state: &State,
        ids: &[String],
        lenient: bool,
    ) -> Result<Vec<(u32, u64)>> {
        if ids.is_empty() || ids.len() > LEASES_PER_REQUEST_MAX {
            return Err(BrokerError::InvalidConfig(format!(
                "lease_ids must hold between 1 and {LEASES_PER_REQUEST_MAX} ids, got {}",
                ids.len()
            )));
        }
        let mut ok = Vec::with_capacity(ids.len());
        let (mut missing, mut acked) = (Vec::new(), Vec::new());
        let mut seen = std::collections::HashSet::new();
        for id in ids {
            if !seen.insert(id.as_str()) {
                continue;
            }
            let Some((p, o, attempt, token)) = parse_lease(id) else {
                missing.push(id.clone());
                continue;
            };
            match state.pending(p, o) {
                Some(x)
                    if x.attempt == attempt
                        && matches!(&x.state, PState::Leased { token: t, .. } if *t == token) =>
                {
                    ok.push((p, o))
                }
                _ if state.is_done(p, o) => acked.push(id.clone()),
                _ => missing.push(id.clone()),
            }
        }
        if lenient {
            return Ok(ok);
        }
        if !missing.is_empty() {
            return Err(BrokerError::LeaseNotFound {
                ids: missing,
                reason: "no such lease: it expired (the record may be delivered again), was given back, or never existed".into(),
            });
        }
        if !acked.is_empty() {
            return Err(BrokerError::LeaseAlreadyAcked { ids: acked });
        }
        Ok(ok)
    }

    /// Checks lease ids and applies `f` to each live lease, in one journal append. With
    /// `lenient`, ids that name no live lease are skipped; otherwise any such id fails the
    /// whole request and nothing changes. With `wait`, returns once the changes are
    /// durable. Returns how many leases `f` saw.
    fn on_leases(
        &self,
        ids: &[String],
        lenient: bool,
        wait: bool,
        mut f: impl FnMut(&mut Batch<'_>, &mut rand::rngs::SmallRng, u32, u64, u64),
    ) -> Result<usize> {
        let mut guard = lock(&self.inner);
        let inner = &mut *guard;
        let now = now_ms();
        let (mut events, mut delays) = (Vec::new(), Vec::new());
        self.settle(inner, &mut events, &mut delays, now);
        let checked = self.check_leases(&inner.state, ids, lenient);
        let mut b = Batch {
            state: &mut inner.state,
            events,
            delays,
        };
        if let Ok(leases) = &checked {
            for &(p, o) in leases {
                f(&mut b, &mut inner.rng, p, o, now);
            }
        }
        let n = checked.as_ref().map_or(0, |l| l.len());
        let (events, delays) = (std::mem::take(&mut b.events), std::mem::take(&mut b.delays));
        let position = self.persist(&mut guard, &events, &delays)?;
        drop(guard);
        checked?;
        if let (true, Some(pos)) = (wait, position) {
            self.store.wait_durable(pos)?;
        }
        self.changed.notify_waiters();
        Ok(n)
    }

    /// Acknowledges leased records; returns once the acks are durable.
    fn ack(&self, ids: &[String], lenient: bool) -> Result<usize> {
        self.on_leases(ids, lenient, true, |b, _, p, o, _| {
            b.push(Event::Ack { p, o })
        })
    }

    /// Gives leased records back, for redelivery after `delay_ms` (or the retry policy),
    /// or with `dead_letter` straight to the dead-letter topic.
    fn nack(
        &self,
        ids: &[String],
        delay_ms: Option<u64>,
        error: Option<Arc<str>>,
        dead_letter: bool,
    ) -> Result<usize> {
        let cfg = self.config();
        self.on_leases(ids, false, true, |b, rng, p, o, now| {
            b.state.set_last_error(p, o, error.clone());
            if dead_letter {
                if let Some(x) = b.state.pending(p, o) {
                    let (a, k) = (x.attempt, x.key);
                    b.state.set(p, o, a, k, PState::Dead);
                }
            } else {
                Self::give_back(&cfg, b, rng, p, o, delay_ms, now);
            }
        })
    }

    /// Extends leases to `now + timeout_ms`; returns the new expiry.
    fn extend(&self, ids: &[String], timeout_ms: u64) -> Result<u64> {
        let mut expires = 0;
        self.on_leases(ids, false, false, |b, _, p, o, now| {
            expires = now + timeout_ms;
            if let Some(PState::Leased {
                token, consumer, ..
            }) = b.state.pending(p, o).map(|x| x.state.clone())
            {
                b.state.lease(
                    p,
                    o,
                    PState::Leased {
                        expires,
                        token,
                        consumer,
                    },
                );
            }
        })?;
        Ok(expires)
    }

    /// Moves partitions to new starting offsets; returns once durable.
    fn seek(&self, targets: &[(u32, u64)]) -> Result<()> {
        let mut guard = lock(&self.inner);
        let mut b = Batch {
            state: &mut guard.state,
            events: Vec::new(),
            delays: Vec::new(),
        };
        for &(p, offset) in targets {
            b.push(Event::Seek { p, offset });
        }
        let events = std::mem::take(&mut b.events);
        let position = self.persist(&mut guard, &events, &[])?;
        drop(guard);
        if let Some(pos) = position {
            self.store.wait_durable(pos)?;
        }
        self.changed.notify_waiters();
        Ok(())
    }

    /// Expiry, delay buckets and checkpoints (blocking I/O). Returns records waiting for
    /// the dead-letter topic.
    fn tick_blocking(&self) -> Result<Vec<DeadRecord>> {
        self.tick_at(now_ms())
    }

    fn tick_at(&self, now: u64) -> Result<Vec<DeadRecord>> {
        let mut guard = lock(&self.inner);
        let inner = &mut *guard;
        let (mut events, mut delays) = (Vec::new(), Vec::new());
        // Load the next buckets first: delays made by `settle` below then see the new
        // mark, so none is written to a file that was already read.
        let target = bucket_of(now + BUCKET_MS);
        if target > inner.state.loaded_upto {
            if !inner.state.ordering {
                load_buckets(&mut inner.state, &self.store, target)?;
            }
            inner.state.loaded_upto = target;
            events.push(Event::BucketsLoaded { upto: target });
        }
        self.settle(inner, &mut events, &mut delays, now);
        let wake = inner.state.has_ready();
        let dead: Vec<_> = inner
            .state
            .dead_pending()
            .take(100)
            .filter_map(|(p, o)| {
                let x = inner.state.pending(p, o)?;
                Some((p, o, x.attempt, x.last_error.clone(), x.history.clone()))
            })
            .collect();
        let position = self.store.position();
        let due = position > inner.checkpoint_position
            && (inner.last_checkpoint.elapsed() >= Duration::from_secs(5)
                || position - inner.checkpoint_position >= 10_000);
        let snapshot = due.then(|| Snapshot {
            version: 1,
            journal_offset: position,
            loaded_upto: inner.state.loaded_upto,
            redriven: inner.state.redriven.clone(),
            counters: inner.state.counters,
            partitions: inner.state.save(),
        });
        if due {
            inner.last_checkpoint = Instant::now();
            inner.checkpoint_position = position;
        }
        // Events made now come after the snapshot's position: they are replayed on it.
        self.persist(&mut guard, &events, &delays)?;
        drop(guard);
        if let Some(s) = snapshot {
            self.store.wait_durable(s.journal_offset)?;
            self.store.checkpoint(&s)?;
        }
        if wake {
            self.changed.notify_waiters();
        }
        Ok(dead)
    }

    fn status(&self, topic: Option<&Topic>) -> (SubscriptionStatus, Vec<(u32, u64)>) {
        let config = self.config();
        let inner = lock(&self.inner);
        let s = &inner.state;
        let parts = topic.map(|t| t.partitions()).unwrap_or_default();
        let mut partitions = Vec::new();
        let mut oldest = Vec::new();
        for (p, part) in parts.iter().enumerate() {
            let latest = part.log.latest();
            let (floor, head, backlog) = match s.part(p as u32) {
                Some(x) => (x.floor, x.head, x.backlog(latest)),
                None => {
                    let e = part.log.stats().earliest;
                    (e, e, latest.saturating_sub(e))
                }
            };
            if backlog > 0 {
                oldest.push((p as u32, floor));
            }
            partitions.push(PartitionStatus {
                partition: p as u32,
                ack_floor: floor,
                head,
                latest,
                backlog,
            });
        }
        let status = SubscriptionStatus {
            config,
            backlog: partitions.iter().map(|p| p.backlog).sum(),
            oldest_unacked_age_ms: None,
            in_flight: s.leased(),
            waiting: s.ready_count(),
            delayed: s.delayed_in_memory() + self.store.delayed_on_disk(s.loaded_upto),
            dead_letter_pending: s.dead_pending().count(),
            dead_lettered: s.counters.dead_lettered,
            delivered: s.counters.delivered,
            redelivered: s.counters.redelivered,
            acked: s.counters.acked,
            partitions,
        };
        (status, oldest)
    }

    fn close(&self) {
        if let Err(e) = self.store.close() {
            tracing::error!(dir = %self.dir.display(), error = %e, "Could not sync a subscription journal at shutdown.");
        }
    }
}

/// The state as stored: the snapshot, then the journal after it. Leases of a previous
/// run are ready again; records out of deliveries wait for the dead-letter topic.
fn load_state(store: &JournalStore, config: &SubscriptionConfig) -> Result<(State, usize)> {
    let (snapshot, events) = store.load()?;
    let mut state = State::new(config.ordering == Ordering::Key);
    if let Some(s) = &snapshot {
        state.restore(&s.partitions);
        state.loaded_upto = s.loaded_upto;
        state.redriven = s.redriven.clone();
        state.counters = s.counters;
    }
    let replayed = events.len();
    for e in events {
        match e {
            Event::BucketsLoaded { upto } => load_buckets(&mut state, store, upto)?,
            e => state.apply(&e),
        }
    }
    if config.max_deliveries > 0 {
        let spent: Vec<(u32, u64, u32, u64)> = state
            .parts
            .iter()
            .enumerate()
            .flat_map(|(p, part)| {
                part.pending.iter().filter_map(move |(&o, x)| {
                    (x.state == PState::Ready && x.attempt >= config.max_deliveries)
                        .then_some((p as u32, o, x.attempt, x.key))
                })
            })
            .collect();
        for (p, o, a, k) in spent {
            state.set(p, o, a, k, PState::Dead);
        }
    }
    Ok((state, replayed))
}

/// Reads delay files of buckets in `(loaded_upto, upto]` into memory.
fn load_buckets(state: &mut State, store: &dyn SubscriptionStore, upto: u64) -> Result<()> {
    for bucket in store.delay_buckets() {
        if bucket <= state.loaded_upto || bucket > upto {
            continue;
        }
        for e in store.read_delays(bucket)? {
            if state.accepts_delayed(e.partition, e.offset, e.gen) {
                state.set(
                    e.partition,
                    e.offset,
                    e.attempt,
                    state::NO_KEY,
                    PState::Delayed { due: e.due },
                );
            }
        }
    }
    state.loaded_upto = state.loaded_upto.max(upto);
    Ok(())
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BrokerError::Storage(format!("subscription task failed: {e}")))?
}

/// The registry of subscriptions, kept in the broker.
pub struct Subscriptions {
    dir: PathBuf,
    meta_path: PathBuf,
    map: RwLock<HashMap<String, Arc<Subscription>>>,
}

impl Subscriptions {
    /// Opens every subscription named in `meta/subscriptions.json`.
    pub(crate) fn open(data_dir: &Path) -> Result<Self> {
        let dir = data_dir.join("subscriptions");
        std::fs::create_dir_all(&dir)
            .map_err(|e| BrokerError::Storage(format!("creating {}: {e}", dir.display())))?;
        let meta_path = data_dir.join("meta").join("subscriptions.json");
        let configs: Vec<SubscriptionConfig> = match std::fs::read(&meta_path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                BrokerError::Meta(format!("{} is not valid: {e}", meta_path.display()))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                return Err(BrokerError::Meta(format!(
                    "reading {}: {e}",
                    meta_path.display()
                )))
            }
        };
        // Folders the store does not name are left from an interrupted create or delete.
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !configs.iter().any(|c| c.name == name) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let mut map = HashMap::new();
        for c in configs {
            let name = c.name.clone();
            let sub = Subscription::open(&dir.join(&name), c, None)?;
            map.insert(name, Arc::new(sub));
        }
        Ok(Subscriptions {
            dir,
            meta_path,
            map: RwLock::new(map),
        })
    }

    fn get(&self, name: &str) -> Result<Arc<Subscription>> {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| BrokerError::SubscriptionNotFound(name.to_string()))
    }

    fn all(&self) -> Vec<Arc<Subscription>> {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    fn save(&self, map: &HashMap<String, Arc<Subscription>>) -> Result<()> {
        let mut configs: Vec<SubscriptionConfig> = map.values().map(|s| s.config()).collect();
        configs.sort_by(|a, b| a.name.cmp(&b.name));
        let bytes = serde_json::to_vec_pretty(&configs)
            .map_err(|e| BrokerError::Meta(format!("encoding subscriptions: {e}")))?;
        crate::fsutil::replace_file(&self.meta_path, &bytes).map_err(BrokerError::Meta)
    }

    pub(crate) fn shutdown(&self) {
        for s in self.all() {
            s.close();
        }
    }
}

/// An error text as kept with a record: its first `ERROR_BYTES_MAX` bytes.
fn error_text(mut e: String) -> Arc<str> {
    if e.len() > ERROR_BYTES_MAX {
        let mut cut = ERROR_BYTES_MAX;
        while !e.is_char_boundary(cut) {
            cut -= 1;
        }
        e.truncate(cut);
    }
    Arc::from(e)
}

/// A record's headers with its redrive routing replaced by one to subscription `name`.
fn redrive_headers(headers: &[RecordHeader], name: &str) -> Vec<RecordHeader> {
    let mut out: Vec<RecordHeader> = headers
        .iter()
        .filter(|h| h.key.as_ref() != HEADER_REDRIVE_TO.as_bytes())
        .cloned()
        .collect();
    out.push(string_header(HEADER_REDRIVE_TO, name));
    out
}

fn string_header(name: &str, value: impl ToString) -> RecordHeader {
    RecordHeader {
        key: Bytes::from(name.to_string()),
        value: Some(Bytes::from(value.to_string())),
    }
}

impl Broker {
    fn subscription(&self, name: &str) -> Result<Arc<Subscription>> {
        self.subs.get(name)
    }

    async fn positions(&self, topic: &Topic, pos: Position) -> Result<Vec<(u32, u64)>> {
        let mut out = Vec::new();
        for part in topic.partitions() {
            let s = part.log.stats();
            let latest = part.log.latest();
            let o = match pos {
                Position::Earliest => s.earliest,
                Position::Latest => latest,
                Position::Offset(o) => o.clamp(s.earliest, latest),
                Position::PartitionOffset(p, o) if p == part.id => o.clamp(s.earliest, latest),
                Position::PartitionOffset(..) => continue,
                Position::Timestamp(ts) => {
                    self.offset_for_timestamp(&topic.config().name, part.id, ts)
                        .await?
                }
            };
            out.push((part.id, o));
        }
        if let Position::PartitionOffset(p, _) = pos {
            if out.is_empty() {
                return Err(BrokerError::PartitionNotFound {
                    topic: topic.config().name,
                    partition: p,
                    count: topic.partitions().len() as u32,
                });
            }
        }
        Ok(out)
    }

    /// Creates a subscription; its dead-letter topic is created when missing.
    pub async fn create_subscription(&self, s: SubscriptionSettings) -> Result<SubscriptionStatus> {
        let name = s
            .name
            .clone()
            .ok_or_else(|| BrokerError::InvalidConfig("name is required".into()))?;
        let topic_name = s
            .topic
            .clone()
            .ok_or_else(|| BrokerError::InvalidConfig("topic is required".into()))?;
        let mode = s.mode.unwrap_or(if s.push.is_some() {
            Mode::Push
        } else {
            Mode::Queue
        });
        // Webhooks retry longer by default: exponential from 1 s, up to an hour, jittered.
        let (default_deliveries, default_retry) = match mode {
            Mode::Queue => (5, RetryPolicy::default()),
            Mode::Push => (
                20,
                RetryPolicy {
                    strategy: retry::Strategy::Exponential,
                    delay_ms: 1000,
                    step_ms: None,
                    max_delay_ms: 3_600_000,
                    jitter: retry::Jitter::Full,
                },
            ),
        };
        let max_deliveries = s.max_deliveries.unwrap_or(default_deliveries);
        let mut config = SubscriptionConfig {
            name: name.clone(),
            topic: topic_name.clone(),
            mode,
            filter: None,
            visibility_timeout_ms: 30_000,
            max_deliveries,
            dead_letter_topic: (max_deliveries > 0).then(|| format!("{name}-dlq")),
            retry: default_retry,
            max_in_flight: 10_000,
            max_in_flight_per_consumer: 1_000,
            ordering: s.ordering.unwrap_or_default(),
            created_at_ms: now_ms(),
            push: None,
            paused: false,
        };
        config.apply(&s)?;
        if s.max_in_flight.is_some() && s.max_in_flight_per_consumer.is_none() {
            config.max_in_flight_per_consumer =
                config.max_in_flight_per_consumer.min(config.max_in_flight);
        }
        config.validate()?;
        let start = match &s.start {
            None => Position::Latest,
            Some(v) => Position::parse(v)?,
        };
        if let Position::PartitionOffset(..) = start {
            return Err(BrokerError::InvalidConfig(
                "start names one partition; a new subscription starts every partition: use {\"offset\": n}, then seek a single partition".into(),
            ));
        }
        let _admin = self.admin.lock().await;
        if self.subs.get(&name).is_ok() {
            return Err(BrokerError::SubscriptionExists(name));
        }
        let topic = self.topic(&topic_name)?;
        if config.max_deliveries > 0 {
            if let Some(dlq) = &config.dead_letter_topic {
                if self.topic(dlq).is_err() {
                    self.create_topic_locked(
                        dlq,
                        crate::TopicSettings {
                            partitions: Some(1),
                            ..Default::default()
                        },
                    )
                    .await?;
                }
            }
        }
        let starts = self.positions(&topic, start).await?;
        let mut state = State::new(config.ordering == Ordering::Key);
        for (p, o) in &starts {
            state.ensure_part(*p, *o);
        }
        let snapshot = Snapshot {
            version: 1,
            partitions: state.save(),
            loaded_upto: bucket_of(now_ms() + BUCKET_MS),
            ..Snapshot::default()
        };
        let dir = self.subs.dir.join(&name);
        let cfg = config.clone();
        let sub = blocking(move || {
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(|e| {
                    BrokerError::Storage(format!("clearing {}: {e}", dir.display()))
                })?;
            }
            Subscription::open(&dir, cfg, Some(snapshot))
        })
        .await?;
        let sub = Arc::new(sub);
        {
            let mut map = self.subs.map.write().unwrap_or_else(|p| p.into_inner());
            map.insert(name.clone(), Arc::clone(&sub));
            if let Err(e) = self.subs.save(&map) {
                map.remove(&name);
                return Err(e);
            }
        }
        tracing::info!(subscription = %name, topic = %topic_name, "Created subscription.");
        self.describe_subscription(&name).await
    }

    pub async fn update_subscription(
        &self,
        name: &str,
        s: SubscriptionSettings,
    ) -> Result<SubscriptionStatus> {
        if s.name.is_some() || s.topic.is_some() || s.mode.is_some() || s.start.is_some() {
            return Err(BrokerError::InvalidConfig(
                "name, topic, mode and start cannot change; create a new subscription, or seek"
                    .into(),
            ));
        }
        let _admin = self.admin.lock().await;
        let sub = self.subscription(name)?;
        let mut config = sub.config();
        if s.ordering.is_some_and(|o| o != config.ordering) {
            return Err(BrokerError::InvalidConfig(
                "ordering cannot change after creation".into(),
            ));
        }
        config.apply(&s)?;
        let filter = config.validate()?;
        if config.max_deliveries > 0 {
            if let Some(dlq) = config.dead_letter_topic.clone() {
                if self.topic(&dlq).is_err() {
                    self.create_topic_locked(
                        &dlq,
                        crate::TopicSettings {
                            partitions: Some(1),
                            ..Default::default()
                        },
                    )
                    .await?;
                }
            }
        }
        {
            let mut map = self.subs.map.write().unwrap_or_else(|p| p.into_inner());
            let old = std::mem::replace(
                &mut *sub.config.write().unwrap_or_else(|p| p.into_inner()),
                config,
            );
            if let Err(e) = self.subs.save(&map) {
                *sub.config.write().unwrap_or_else(|p| p.into_inner()) = old;
                return Err(e);
            }
            *sub.filter.write().unwrap_or_else(|p| p.into_inner()) = filter;
            map.entry(name.to_string())
                .or_insert_with(|| Arc::clone(&sub));
        }
        self.describe_subscription(name).await
    }

    pub async fn delete_subscription(&self, name: &str) -> Result<()> {
        let _admin = self.admin.lock().await;
        self.delete_subscription_locked(name).await
    }

    pub(crate) async fn delete_subscription_locked(&self, name: &str) -> Result<()> {
        let sub = {
            let mut map = self.subs.map.write().unwrap_or_else(|p| p.into_inner());
            let sub = map
                .remove(name)
                .ok_or_else(|| BrokerError::SubscriptionNotFound(name.to_string()))?;
            if let Err(e) = self.subs.save(&map) {
                map.insert(name.to_string(), sub);
                return Err(e);
            }
            sub
        };
        sub.deleted.store(true, AtomicOrdering::Release);
        sub.changed.notify_waiters();
        let dir = sub.dir.clone();
        blocking(move || {
            sub.close();
            std::fs::remove_dir_all(&dir)
                .map_err(|e| BrokerError::Storage(format!("removing {}: {e}", dir.display())))
        })
        .await?;
        tracing::info!(subscription = %name, "Deleted subscription.");
        Ok(())
    }

    /// Subscriptions of other topics that dead-letter into `topic`.
    pub(crate) fn dead_letter_users(&self, topic: &str) -> Vec<String> {
        self.subs
            .all()
            .iter()
            .map(|s| s.config())
            .filter(|c| c.topic != topic && c.dead_letter_topic.as_deref() == Some(topic))
            .map(|c| c.name)
            .collect()
    }

    /// Names of the subscriptions on a topic.
    pub(crate) fn subscriptions_of(&self, topic: &str) -> Vec<String> {
        self.subs
            .all()
            .iter()
            .map(|s| s.config())
            .filter(|c| c.topic == topic)
            .map(|c| c.name)
            .collect()
    }

    pub async fn list_subscriptions(&self) -> Vec<SubscriptionStatus> {
        let mut names: Vec<String> = self.subs.all().iter().map(|s| s.config().name).collect();
        names.sort();
        let mut out = Vec::new();
        for n in names {
            if let Ok(s) = self.describe_subscription(&n).await {
                out.push(s);
            }
        }
        out
    }

    pub async fn describe_subscription(&self, name: &str) -> Result<SubscriptionStatus> {
        let sub = self.subscription(name)?;
        let topic_name = sub.config().topic;
        let topic = self.topic(&topic_name).ok();
        let (mut status, oldest) = sub.status(topic.as_deref());
        let now = now_ms() as i64;
        let mut min_ts: Option<i64> = None;
        for (p, floor) in oldest {
            if let Ok(r) = self.read(&topic_name, p, floor, 1, 1, Duration::ZERO).await {
                if let Some(rec) = r.records.first() {
                    min_ts = Some(min_ts.map_or(rec.timestamp, |m: i64| m.min(rec.timestamp)));
                }
            }
        }
        status.oldest_unacked_age_ms = min_ts.map(|t| now.saturating_sub(t).max(0) as u64);
        status.config.push = status.config.push.as_ref().map(|p| p.redacted());
        Ok(status)
    }

    /// Leases up to `max_records` records; with a wait, long-polls until one is there.
    pub async fn pull(&self, name: &str, req: PullRequest) -> Result<Vec<Delivery>> {
        if req.max_records == 0 || req.max_records > PULL_RECORDS_MAX {
            return Err(BrokerError::InvalidConfig(format!(
                "max_records must be between 1 and {PULL_RECORDS_MAX}, got {}",
                req.max_records
            )));
        }
        if req.wait > Duration::from_millis(PULL_WAIT_MS_MAX) {
            return Err(BrokerError::InvalidTimeout(format!(
                "wait_ms must be at most {PULL_WAIT_MS_MAX}, got {}",
                req.wait.as_millis()
            )));
        }
        if let Some(v) = req.visibility_timeout_ms {
            check_timeout("visibility_timeout_ms", v as i64)?;
        }
        let sub = self.subscription(name)?;
        if sub.config().mode == Mode::Push && &*req.consumer != PUSH_CONSUMER {
            return Err(BrokerError::InvalidConfig(format!(
                "subscription '{name}' is a push subscription: Ferry delivers its records to its endpoint; create a queue subscription to pull"
            )));
        }
        let deadline = Instant::now() + req.wait;
        let req = Arc::new(req);
        loop {
            let changed = sub.changed.notified();
            let readable = self.any_readable().notified();
            tokio::pin!(changed, readable);
            changed.as_mut().enable();
            readable.as_mut().enable();
            let topic = self.topic(&sub.config().topic)?;
            let (s, r) = (Arc::clone(&sub), Arc::clone(&req));
            let out = blocking(move || s.pull_once(&topic, &r)).await?;
            let now = Instant::now();
            if !out.is_empty() || now >= deadline || sub.deleted.load(AtomicOrdering::Acquire) {
                return Ok(out);
            }
            // Leases end and delays fall due without any signal: look again soon.
            let nap = (deadline - now).min(Duration::from_millis(100));
            tokio::select! {
                _ = changed => {}
                _ = readable => {}
                _ = tokio::time::sleep(nap) => {}
            }
        }
    }

    pub async fn ack(&self, name: &str, ids: Vec<String>) -> Result<usize> {
        let sub = self.subscription(name)?;
        blocking(move || sub.ack(&ids, false)).await
    }

    /// Acknowledges the leases that are still live among `ids` and skips the others
    /// (expired meanwhile: those records come again). Returns how many were acked.
    pub async fn ack_live(&self, name: &str, ids: Vec<String>) -> Result<usize> {
        let sub = self.subscription(name)?;
        blocking(move || sub.ack(&ids, true)).await
    }

    pub async fn nack(
        &self,
        name: &str,
        ids: Vec<String>,
        delay_ms: Option<i64>,
        error: Option<String>,
    ) -> Result<usize> {
        let delay = match delay_ms {
            None => None,
            Some(d) if d < 0 || d as u64 > DELAY_MS_MAX => {
                return Err(BrokerError::InvalidTimeout(format!(
                    "delay_ms must be between 0 and {DELAY_MS_MAX} (one week), got {d}"
                )))
            }
            Some(d) => Some(d as u64),
        };
        let error = error.map(error_text);
        let sub = self.subscription(name)?;
        blocking(move || sub.nack(&ids, delay, error, false)).await
    }

    /// Ends leases and sends the records to the dead-letter topic at once, without
    /// more deliveries (a push endpoint refused them).
    pub async fn dead_letter_now(
        &self,
        name: &str,
        ids: Vec<String>,
        error: String,
    ) -> Result<usize> {
        let sub = self.subscription(name)?;
        let error = error_text(error);
        let n = blocking(move || sub.nack(&ids, None, Some(error), true)).await?;
        Ok(n)
    }

    pub fn subscription_config(&self, name: &str) -> Result<SubscriptionConfig> {
        Ok(self.subscription(name)?.config())
    }

    /// Settings of every push subscription.
    pub fn push_subscriptions(&self) -> Vec<SubscriptionConfig> {
        self.subs
            .all()
            .iter()
            .map(|s| s.config())
            .filter(|c| c.mode == Mode::Push)
            .collect()
    }

    /// The folder of a subscription's own files.
    pub fn subscription_dir(&self, name: &str) -> Result<PathBuf> {
        Ok(self.subscription(name)?.dir.clone())
    }

    /// Pauses or resumes a subscription (push subscriptions send nothing while paused).
    pub async fn set_paused(&self, name: &str, paused: bool) -> Result<SubscriptionStatus> {
        self.change_config(name, |c| {
            if c.mode != Mode::Push {
                return Err(BrokerError::InvalidConfig(format!(
                    "subscription '{}' is a queue: consumers pause by not pulling; pause and resume are for push subscriptions",
                    c.name
                )));
            }
            c.paused = paused;
            Ok(())
        })
        .await
    }

    /// Changes a stored setting under the admin lock.
    pub async fn change_config(
        &self,
        name: &str,
        change: impl FnOnce(&mut SubscriptionConfig) -> Result<()>,
    ) -> Result<SubscriptionStatus> {
        let _admin = self.admin.lock().await;
        let sub = self.subscription(name)?;
        let mut config = sub.config();
        change(&mut config)?;
        config.validate()?;
        {
            let map = self.subs.map.write().unwrap_or_else(|p| p.into_inner());
            let old = std::mem::replace(
                &mut *sub.config.write().unwrap_or_else(|p| p.into_inner()),
                config,
            );
            if let Err(e) = self.subs.save(&map) {
                *sub.config.write().unwrap_or_else(|p| p.into_inner()) = old;
                return Err(e);
            }
        }
        sub.changed.notify_waiters();
        self.describe_subscription(name).await
    }

    /// Delivers one record of the topic to this subscription again: a copy is produced
    /// to the topic (same partition) for this subscription alone.
    pub async fn retry_record(&self, name: &str, partition: u32, offset: u64) -> Result<Produced> {
        let cfg = self.subscription(name)?.config();
        let topic = self.topic(&cfg.topic)?;
        let part = topic.partition(partition)?;
        let limits = DecodeLimits::default();
        let rec = blocking(move || read_one(&part, offset, &limits))
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
        let headers = redrive_headers(&rec.headers, name);
        let produced = self
            .produce(
                &cfg.topic,
                vec![ProduceRecord {
                    key: rec.key.clone(),
                    value: rec.value.clone(),
                    headers,
                    partition: Some(partition),
                    // A new record: its age (push.max_age_ms) starts now.
                    timestamp: None,
                    value_is_json: rec.attributes & ferry_log::batch::RECORD_ATTR_JSON_VALUE != 0,
                }],
            )
            .await?;
        produced
            .into_iter()
            .next()
            .ok_or_else(|| BrokerError::Storage("the copy was not produced".into()))
    }

    pub async fn extend(&self, name: &str, ids: Vec<String>, timeout_ms: i64) -> Result<u64> {
        let t = check_timeout("visibility_timeout_ms", timeout_ms)?;
        let sub = self.subscription(name)?;
        blocking(move || sub.extend(&ids, t)).await
    }

    pub async fn seek(&self, name: &str, to: Position) -> Result<SubscriptionStatus> {
        let sub = self.subscription(name)?;
        let topic = self.topic(&sub.config().topic)?;
        let targets = self.positions(&topic, to).await?;
        let s = Arc::clone(&sub);
        blocking(move || s.seek(&targets)).await?;
        self.describe_subscription(name).await
    }

    /// Produces records of the dead-letter topic that came from this subscription back
    /// to its topic, addressed to it alone. Returns how many.
    pub async fn redrive(&self, name: &str, max_records: usize) -> Result<usize> {
        let sub = self.subscription(name)?;
        let cfg = sub.config();
        let dlq_name = cfg.dead_letter_topic.clone().ok_or_else(|| {
            BrokerError::InvalidConfig(format!(
                "subscription '{name}' has no dead_letter_topic to redrive from"
            ))
        })?;
        let dlq = self.topic(&dlq_name)?;
        let source_parts = self.topic(&cfg.topic)?.partitions().len() as u32;
        let mut total = 0;
        for part in dlq.partitions() {
            let p = part.id;
            loop {
                if total >= max_records {
                    return Ok(total);
                }
                let from = {
                    let inner = lock(&sub.inner);
                    inner.state.redriven.get(&p).copied().unwrap_or(0)
                };
                let from = from.max(part.log.stats().earliest);
                let read = self
                    .read(
                        &dlq_name,
                        p,
                        from,
                        (max_records - total).min(500),
                        4 << 20,
                        Duration::ZERO,
                    )
                    .await?;
                if read.records.is_empty() {
                    break;
                }
                let mut out = Vec::new();
                for r in &read.records {
                    if header(r, HEADER_ORIGIN_SUBSCRIPTION) != Some(name.as_bytes()) {
                        continue;
                    }
                    let partition = header(r, HEADER_ORIGIN_PARTITION)
                        .and_then(|v| std::str::from_utf8(v).ok()?.parse::<u32>().ok())
                        .filter(|p| *p < source_parts);
                    let headers = redrive_headers(&r.headers, name);
                    out.push(ProduceRecord {
                        key: r.key.clone(),
                        value: r.value.clone(),
                        headers,
                        partition,
                        // A new record: its age (push.max_age_ms) starts now.
                        timestamp: None,
                        value_is_json: r.attributes & ferry_log::batch::RECORD_ATTR_JSON_VALUE != 0,
                    });
                }
                let n = out.len();
                if !out.is_empty() {
                    self.produce(&cfg.topic, out).await?;
                }
                total += n;
                let next = read.next_offset;
                let s = Arc::clone(&sub);
                blocking(move || {
                    let mut guard = lock(&s.inner);
                    let e = Event::Redriven { p, offset: next };
                    guard.state.apply(&e);
                    let position = s.persist(&mut guard, &[e], &[])?;
                    drop(guard);
                    if let Some(pos) = position {
                        s.store.wait_durable(pos)?;
                    }
                    Ok(())
                })
                .await?;
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
            let dead = match blocking(move || s.tick_blocking()).await {
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

    async fn dead_letter(&self, sub: &Arc<Subscription>, dead: Vec<DeadRecord>) -> Result<()> {
        let cfg = sub.config();
        let topic = self.topic(&cfg.topic)?;
        let mut records = Vec::new();
        let mut done = Vec::new();
        for (p, o, attempts, last_error, history) in dead {
            let part = topic.partition(p)?;
            let limits = sub.limits;
            let rec = blocking(move || read_one(&part, o, &limits)).await?;
            let Some(r) = rec else {
                // Gone from the topic (retention): nothing to dead-letter.
                done.push((p, o));
                continue;
            };
            let mut headers: Vec<RecordHeader> = r
                .headers
                .iter()
                .filter(|h| {
                    !h.key.starts_with(b"ferry-origin-")
                        && h.key.as_ref() != HEADER_REDRIVE_TO.as_bytes()
                })
                .cloned()
                .collect();
            headers.push(string_header(HEADER_ORIGIN_SUBSCRIPTION, &cfg.name));
            headers.push(string_header(HEADER_ORIGIN_TOPIC, &cfg.topic));
            headers.push(string_header(HEADER_ORIGIN_PARTITION, p));
            headers.push(string_header(HEADER_ORIGIN_OFFSET, o));
            headers.retain(|h| {
                h.key.as_ref() != HEADER_ATTEMPTS.as_bytes()
                    && h.key.as_ref() != HEADER_LAST_ERROR.as_bytes()
                    && h.key.as_ref() != HEADER_DELIVERY_HISTORY.as_bytes()
            });
            if let Some(h) = &history {
                headers.push(string_header(HEADER_DELIVERY_HISTORY, h));
            }
            headers.push(string_header(HEADER_ATTEMPTS, attempts));
            headers.push(string_header(
                HEADER_LAST_ERROR,
                last_error.as_deref().unwrap_or(""),
            ));
            records.push((
                (p, o),
                ProduceRecord {
                    key: r.key.clone(),
                    value: r.value.clone(),
                    headers,
                    partition: None,
                    timestamp: Some(r.timestamp),
                    value_is_json: r.attributes & ferry_log::batch::RECORD_ATTR_JSON_VALUE != 0,
                },
            ));
        }
        match &cfg.dead_letter_topic {
            None if !records.is_empty() => {
                tracing::warn!(subscription = %cfg.name, "Dropping records out of deliveries: no dead_letter_topic is set.");
                done.extend(records.iter().map(|(at, _)| *at));
            }
            None => {}
            Some(dlq) => {
                let all: Vec<ProduceRecord> = records.iter().map(|(_, r)| r.clone()).collect();
                if all.is_empty() || self.produce(dlq, all).await.is_ok() {
                    done.extend(records.iter().map(|(at, _)| *at));
                } else {
                    // One by one, so that one record the topic refuses does not hold
                    // back the others.
                    let mut first_error = None;
                    for ((p, o), mut r) in records {
                        match self.produce(dlq, vec![r.clone()]).await {
                            Ok(_) => done.push((p, o)),
                            Err(BrokerError::RecordTooLarge { .. }) => {
                                // Without the history headers, or not at all: it stays
                                // in its own topic.
                                r.headers.retain(|h| {
                                    h.key.as_ref() != HEADER_DELIVERY_HISTORY.as_bytes()
                                        && h.key.as_ref() != HEADER_LAST_ERROR.as_bytes()
                                });
                                if self.produce(dlq, vec![r]).await.is_err() {
                                    tracing::error!(subscription = %cfg.name, partition = p, offset = o, dead_letter_topic = %dlq, "A record out of deliveries is too large for the dead-letter topic; it is marked done and stays in its own topic.");
                                }
                                done.push((p, o));
                            }
                            Err(e) => {
                                first_error.get_or_insert(e);
                            }
                        }
                    }
                    if let Some(e) = first_error {
                        // The rest are tried again at the next tick.
                        tracing::warn!(subscription = %cfg.name, error = %e, "Could not write to the dead-letter topic; will retry.");
                    }
                }
            }
        }
        let s = Arc::clone(sub);
        blocking(move || {
            let mut guard = lock(&s.inner);
            let mut b = Batch {
                state: &mut guard.state,
                events: Vec::new(),
                delays: Vec::new(),
            };
            for (p, o) in done {
                if b.state
                    .pending(p, o)
                    .is_some_and(|x| x.state == PState::Dead)
                {
                    b.push(Event::DeadLetter { p, o });
                }
            }
            let events = std::mem::take(&mut b.events);
            s.persist(&mut guard, &events, &[])?;
            drop(guard);
            Ok(())
        })
        .await?;
        sub.changed.notify_waiters();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(name: &str, retry_delay_ms: u64) -> SubscriptionConfig {
        SubscriptionConfig {
            name: name.into(),
            topic: "t".into(),
            mode: Mode::Queue,
            filter: None,
            visibility_timeout_ms: 30_000,
            max_deliveries: 0,
            dead_letter_topic: None,
            retry: RetryPolicy {
                strategy: retry::Strategy::Fixed,
                delay_ms: retry_delay_ms,
                step_ms: None,
                max_delay_ms: 3_600_000,
                jitter: retry::Jitter::None,
            },
            max_in_flight: 100,
            max_in_flight_per_consumer: 100,
            ordering: Ordering::None,
            created_at_ms: 0,
            push: None,
            paused: false,
        }
    }

    /// A lease that runs out in the tick where the next delay bucket is loaded, with a
    /// retry delay that falls into that bucket: the record must stay pending, at once
    /// and after a reload from disk (it once went into a file that was already read).
    #[test]
    fn a_delay_into_the_bucket_being_loaded_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_800_000_000_000u64 - 1; // just before a bucket boundary
        let target = bucket_of(now + BUCKET_MS);
        let mut state = State::new(false);
        state.ensure_part(0, 0);
        let snapshot = Snapshot {
            version: 1,
            loaded_upto: target - 1,
            partitions: state.save(),
            ..Snapshot::default()
        };
        let cfg = config("s", BUCKET_MS);
        let sub = Subscription::open(dir.path(), cfg.clone(), Some(snapshot)).unwrap();
        {
            let mut inner = lock(&sub.inner);
            inner.state.set(
                0,
                7,
                1,
                state::NO_KEY,
                PState::Leased {
                    expires: now - 1,
                    token: 1,
                    consumer: Arc::from("c"),
                },
            );
            // The lease is journaled as a real pull would.
            let e = Event::Deliver {
                p: 0,
                o: 7,
                attempt: 1,
                key: state::NO_KEY,
            };
            sub.persist(&mut inner, &[e], &[]).unwrap();
        }
        sub.tick_at(now).unwrap();
        let due = bucket_of(now + BUCKET_MS);
        assert_eq!(due, target, "the retry falls into the bucket being loaded");
        {
            let inner = lock(&sub.inner);
            let x = inner
                .state
                .pending(0, 7)
                .expect("still pending after the tick");
            assert_eq!(
                x.state,
                PState::Delayed {
                    due: now + BUCKET_MS
                }
            );
        }
        // What a restart would see.
        sub.store.wait_durable(sub.store.position()).unwrap();
        let (again, _) = load_state(&sub.store, &cfg).unwrap();
        assert!(again.pending(0, 7).is_some(), "pending after a reload");
    }
}
