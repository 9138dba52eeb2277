//! One open subscription: its state behind one lock, its journal written in the order
//! the state saw the changes, and the operations that change it (ack, nack, extend,
//! seek, the periodic tick). A pull is in [`super::pull`].
//!
//! # Durability
//! Every change is applied to the state and appended to the journal under the lock,
//! so the journal's order is the state's order. Callers that answer a client wait for
//! the append to be durable ([`Completion::Durable`]); concurrent callers share one
//! fsync. If a write fails, the subscription stops: every later change is refused
//! until Ferry restarts and loads the state from what is stored. (Loading it again at
//! once would drop changes that other callers, waiting for their own fsync, are told
//! succeeded.) Records whose changes were lost are delivered again after the restart:
//! at least once.
//!
//! # Time
//! Nothing here reads the clock: every operation that depends on time takes `now` (ms
//! since 1970) from its caller, so tests drive time.

use super::codec::DelayEntry;
use super::config::{KeyOrdering, SubscriptionConfig};
use super::dead_letter::DeadLetterCandidate;
use super::headers;
use super::lease::{self, RecordAt, UnknownLeases};
use super::pull::Source;
use super::state::{bucket_of, Event, PState, State, BUCKET_MS};
use super::store::{JournalStore, Snapshot, SubscriptionStore};
use crate::error::{BrokerError, Result};
use crate::filter::Filter;
use ferry_log::batch::DecodeLimits;
use ferry_log::sync::{lock, read, write};
use ferry_log::Record;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, RwLock};

/// A checkpoint is written at most this often...
const CHECKPOINT_INTERVAL_MS: u64 = 5_000;
/// ...or once the journal has grown by this many records since the last one.
const CHECKPOINT_JOURNAL_RECORDS: u64 = 10_000;
/// Records out of deliveries handed to the dead-letter writer per tick, at most.
const DEAD_LETTERS_PER_TICK_MAX: usize = 100;

/// When a caller returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// Once the change is durable (acks, nacks, seeks: a client is told it happened).
    Durable,
    /// Once the change is written, before it is synced (lease extensions: losing one
    /// in a crash only makes a lease end sooner, and leases end with the process; acks
    /// whose client asked not to wait: losing one delivers its record again).
    Buffered,
}

/// What a nack does with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveBack {
    /// Deliver it again after `delay_ms`, or after the retry policy's delay when `None`;
    /// to the dead-letter topic when out of deliveries.
    Retry { delay_ms: Option<u64> },
    /// Straight to the dead-letter topic, without more deliveries.
    DeadLetter,
}

pub(crate) struct Inner {
    pub(crate) state: State,
    pub(crate) next_token: u64,
    /// The partition the next head scan starts at, so partitions take turns.
    pub(crate) next_scan_partition: usize,
    pub(crate) last_checkpoint_ms: u64,
    pub(crate) checkpoint_position: u64,
    pub(crate) rng: rand::rngs::SmallRng,
    /// Why the subscription stopped: a write failed. Nothing changes after it.
    pub(crate) failed: Option<Arc<str>>,
}

impl Inner {
    /// Refuses every change once a write has failed.
    pub(crate) fn check_running(&self, name: &str) -> Result<()> {
        match &self.failed {
            None => Ok(()),
            Some(why) => Err(BrokerError::Unavailable(format!(
                "subscription '{name}' stopped after a failed write ({why}); it is loaded again from what is stored when Ferry restarts (in shared mode, at the next request)"
            ))),
        }
    }
}

pub struct Subscription {
    config: RwLock<SubscriptionConfig>,
    filter: RwLock<Filter>,
    pub(crate) store: Box<dyn SubscriptionStore>,
    pub(crate) inner: Mutex<Inner>,
    /// Woken when records may have become deliverable (given back, acked, due).
    pub(crate) changed: tokio::sync::Notify,
    /// Tells this process's lease ids apart from an earlier one's.
    pub(crate) epoch: u32,
    pub(crate) limits: DecodeLimits,
    /// Ticks run one at a time.
    pub(crate) ticking: tokio::sync::Mutex<()>,
    /// Redrives run one at a time: each reads the mark the previous one left.
    pub(crate) redriving: tokio::sync::Mutex<()>,
    pub(crate) deleted: AtomicBool,
    pub(crate) dir: PathBuf,
    /// Leases given back by consumers (nack) since the subscription was opened; not
    /// kept across restarts (a counter for `/metrics`).
    pub(crate) nacked: AtomicU64,
    /// Set with `Inner::failed`, to be read without the lock (which a pull holds while
    /// it reads, in shared mode over the network).
    failed: AtomicBool,
}

static EPOCH_SEQ: AtomicU64 = AtomicU64::new(0);

/// The record at `o` of partition `p`, if the topic still has it.
pub(crate) fn read_one(
    source: &dyn Source,
    p: u32,
    o: u64,
    limits: &DecodeLimits,
) -> Result<Option<Record>> {
    match source.read(p, o, 1, 1, limits) {
        Ok(r) => Ok(r
            .records
            .into_iter()
            .next()
            .filter(|r| r.offset as u64 == o)),
        Err(BrokerError::OffsetOutOfRange { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Changes gathered under the lock: each event is applied to the state as it is made,
/// and kept (with any delay-file entries) for one journal append.
pub(crate) struct Changes<'a> {
    pub(crate) state: &'a mut State,
    pub(crate) events: Vec<Event>,
    pub(crate) delays: Vec<DelayEntry>,
}

impl<'a> Changes<'a> {
    pub(crate) fn new(state: &'a mut State) -> Self {
        Changes {
            state,
            events: Vec::new(),
            delays: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, e: Event) {
        self.state.apply(&e);
        // Adjacent skips of one partition are journaled as one.
        if let (
            Some(Event::Skip {
                partition: p, hi, ..
            }),
            Event::Skip {
                partition: p2,
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
    pub(crate) fn delay(&mut self, p: u32, o: u64, attempt: u32, due: u64, key: u64) {
        if !self.state.ordering && bucket_of(due) > self.state.loaded_upto {
            let gen = self.state.part(p).map_or(0, |part| part.gen);
            self.delays.push(DelayEntry {
                due,
                offset: o,
                partition: p,
                attempt,
                gen,
            });
        }
        self.push(Event::Delay {
            partition: p,
            offset: o,
            attempt,
            due,
            key,
        });
    }

    /// The gathered events and delay entries, leaving none behind.
    pub(crate) fn take(&mut self) -> (Vec<Event>, Vec<DelayEntry>) {
        (
            std::mem::take(&mut self.events),
            std::mem::take(&mut self.delays),
        )
    }
}

impl Subscription {
    /// Opens the subscription stored in `dir` (with `initial` as its first checkpoint
    /// when it is new). `now` starts its checkpoint clock.
    pub fn open(
        dir: &Path,
        config: SubscriptionConfig,
        initial: Option<Snapshot>,
        now: u64,
    ) -> Result<Self> {
        let store = JournalStore::open(dir)?;
        if let Some(s) = &initial {
            store.checkpoint(s)?;
        }
        Subscription::open_in(Box::new(store), dir, config, now)
    }

    /// Opens the subscription `store` keeps (in shared mode, Postgres; `dir` is then
    /// empty).
    pub(crate) fn open_in(
        store: Box<dyn SubscriptionStore>,
        dir: &Path,
        config: SubscriptionConfig,
        now: u64,
    ) -> Result<Self> {
        let filter = config.validate()?;
        let (state, replayed) = load_state(&*store, &config)?;
        tracing::info!(subscription = %config.name, replayed, "Opened subscription.");
        let position = store.position();
        let epoch = (crate::now_ms() as u32)
            .wrapping_mul(2_654_435_761)
            .wrapping_add(EPOCH_SEQ.fetch_add(1, AtomicOrdering::Relaxed) as u32);
        Ok(Subscription {
            config: RwLock::new(config),
            filter: RwLock::new(filter),
            store,
            inner: Mutex::new(Inner {
                state,
                next_token: 0,
                next_scan_partition: 0,
                last_checkpoint_ms: now,
                checkpoint_position: position,
                rng: rand::SeedableRng::from_entropy(),
                failed: None,
            }),
            changed: tokio::sync::Notify::new(),
            epoch,
            limits: DecodeLimits::default(),
            ticking: tokio::sync::Mutex::new(()),
            redriving: tokio::sync::Mutex::new(()),
            deleted: AtomicBool::new(false),
            dir: dir.to_path_buf(),
            nacked: AtomicU64::new(0),
            failed: AtomicBool::new(false),
        })
    }

    /// Creates a new subscription in `dir` (emptied first), starting each partition at
    /// the offset `starts` gives.
    pub fn create(
        dir: &Path,
        config: SubscriptionConfig,
        starts: &[(u32, u64)],
        now: u64,
    ) -> Result<Self> {
        let snapshot = first_snapshot(&config, starts, now);
        if dir.exists() {
            std::fs::remove_dir_all(dir)
                .map_err(|e| BrokerError::io(format!("clearing {}", dir.display()), e))?;
        }
        Subscription::open(dir, config, Some(snapshot), now)
    }

    /// Seeds the generator of retry jitter, for tests that replay a run.
    #[doc(hidden)]
    pub fn seed_jitter(&self, seed: u64) {
        lock(&self.inner).rng = rand::SeedableRng::seed_from_u64(seed);
    }

    /// A record the subscription holds in memory (leased, waiting, delayed or dead):
    /// its deliveries so far and where it stands. For tests that compare a reopened
    /// subscription with a model (`tests/subscription_model.rs`).
    #[doc(hidden)]
    pub fn pending_record(&self, partition: u32, offset: u64) -> Option<(u32, PState)> {
        let inner = lock(&self.inner);
        let x = inner.state.pending(partition, offset)?;
        Some((x.attempt, x.state.clone()))
    }

    pub fn config(&self) -> SubscriptionConfig {
        read(&self.config).clone()
    }

    /// Whether a write failed, so that the subscription takes no more changes.
    pub(crate) fn has_failed(&self) -> bool {
        self.failed.load(AtomicOrdering::Acquire)
    }

    pub(crate) fn filter(&self) -> Filter {
        read(&self.filter).clone()
    }

    /// Replaces the settings (already validated, with their parsed filter); returns
    /// the old ones.
    pub(crate) fn set_config(
        &self,
        config: SubscriptionConfig,
        filter: Filter,
    ) -> (SubscriptionConfig, Filter) {
        let old_config = std::mem::replace(&mut *write(&self.config), config);
        let old_filter = std::mem::replace(&mut *write(&self.filter), filter);
        (old_config, old_filter)
    }

    /// Whether this subscription delivers the record at all.
    pub(crate) fn wants(&self, filter: &Filter, name: &str, r: &Record) -> bool {
        if let Some(to) = headers::redrive_target(r) {
            return to == name.as_bytes();
        }
        filter.matches(r.key.as_deref(), &r.headers)
    }

    /// Gives a leased (or expired) record back: ready again, delayed, or dead when out
    /// of deliveries.
    pub(crate) fn give_back(
        cfg: &SubscriptionConfig,
        changes: &mut Changes<'_>,
        rng: &mut rand::rngs::SmallRng,
        at: RecordAt,
        delay: Option<u64>,
        now: u64,
    ) {
        let RecordAt {
            partition: p,
            offset: o,
        } = at;
        let Some(pending) = changes.state.pending(p, o) else {
            return;
        };
        let (attempt, key) = (pending.attempt, pending.key);
        if cfg.max_deliveries > 0 && attempt >= cfg.max_deliveries {
            changes.state.set(p, o, attempt, key, PState::Dead);
            return;
        }
        let d = delay.unwrap_or_else(|| cfg.retry.delay(attempt, rng));
        if d == 0 {
            changes.state.set(p, o, attempt, key, PState::Ready);
        } else {
            changes.delay(p, o, attempt, now + d, key);
        }
    }

    /// Stores delay entries, then events; returns the journal position to wait for.
    ///
    /// The state already holds these changes. If they cannot be stored, the
    /// subscription stops (see the module's notes on durability).
    pub(crate) fn persist(
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
            let name = self.config().name;
            tracing::error!(subscription = %name, error = %e, "A subscription change could not be stored; the subscription stops until Ferry restarts.");
            inner.failed = Some(Arc::from(e.to_string()));
            self.failed.store(true, AtomicOrdering::Release);
        }
        debug_assert_state(&inner.state);
        stored
    }

    /// Waits until the journal is durable up to `position`, when there is one.
    fn wait(&self, position: Option<u64>, completion: Completion) -> Result<()> {
        match (completion, position) {
            (Completion::Durable, Some(pos)) => self.store.wait_durable(pos),
            _ => Ok(()),
        }
    }

    /// Checks lease ids and applies `f` to each live lease, in one journal append.
    /// Ids that name no live lease fail the whole request (nothing changes) or are
    /// skipped, as `unknown` says. Returns how many leases `f` saw.
    fn on_leases(
        &self,
        ids: &[String],
        unknown: UnknownLeases,
        completion: Completion,
        now: u64,
        mut f: impl FnMut(&mut Changes<'_>, &mut rand::rngs::SmallRng, RecordAt),
    ) -> Result<usize> {
        let cfg = self.config();
        let mut guard = lock(&self.inner);
        guard.check_running(&cfg.name)?;
        let inner = &mut *guard;
        let mut changes = Changes::new(&mut inner.state);
        settle(&cfg, &mut changes, &mut inner.rng, now);
        let checked = lease::check(changes.state, ids, unknown);
        if let Ok(leases) = &checked {
            for &at in leases {
                f(&mut changes, &mut inner.rng, at);
            }
        }
        let n = checked.as_ref().map_or(0, |l| l.len());
        let (events, delays) = changes.take();
        let position = self.persist(&mut guard, &events, &delays)?;
        drop(guard);
        checked?;
        self.wait(position, completion)?;
        self.changed.notify_waiters();
        Ok(n)
    }

    /// Acknowledges leased records; returns once the acks are durable, or with
    /// [`Completion::Buffered`] once they are written (synced with the next change).
    pub fn ack(
        &self,
        ids: &[String],
        unknown: UnknownLeases,
        completion: Completion,
        now: u64,
    ) -> Result<usize> {
        self.on_leases(ids, unknown, completion, now, |c, _, at| {
            c.push(Event::Ack {
                partition: at.partition,
                offset: at.offset,
            })
        })
    }

    /// Gives leased records back, with `error` as what the consumer said; returns once
    /// durable.
    pub fn nack(
        &self,
        ids: &[String],
        action: GiveBack,
        error: Option<Arc<str>>,
        now: u64,
    ) -> Result<usize> {
        let cfg = self.config();
        let given_back = self.on_leases(
            ids,
            UnknownLeases::Refuse,
            Completion::Durable,
            now,
            |c, rng, at| {
                let RecordAt {
                    partition: p,
                    offset: o,
                } = at;
                c.state.set_last_error(p, o, error.clone());
                match action {
                    GiveBack::DeadLetter => c.push(Event::GaveUp {
                        partition: p,
                        offset: o,
                    }),
                    GiveBack::Retry { delay_ms } => {
                        Self::give_back(&cfg, c, rng, at, delay_ms, now)
                    }
                }
            },
        )?;
        self.nacked
            .fetch_add(given_back as u64, AtomicOrdering::Relaxed);
        Ok(given_back)
    }

    /// Extends leases to `now + timeout_ms`; returns the new expiry.
    pub fn extend(&self, ids: &[String], timeout_ms: u64, now: u64) -> Result<u64> {
        let expires = now + timeout_ms;
        self.on_leases(
            ids,
            UnknownLeases::Refuse,
            Completion::Buffered,
            now,
            |c, _, at| {
                let (p, o) = (at.partition, at.offset);
                if let Some(PState::Leased {
                    token, consumer, ..
                }) = c.state.pending(p, o).map(|pending| pending.state.clone())
                {
                    c.state.lease(
                        p,
                        o,
                        PState::Leased {
                            expires,
                            token,
                            consumer,
                        },
                    );
                }
            },
        )?;
        Ok(expires)
    }

    /// Applies the changes `make` makes in one journal append; returns once durable.
    pub(crate) fn record(&self, make: impl FnOnce(&mut Changes<'_>)) -> Result<()> {
        let mut guard = lock(&self.inner);
        guard.check_running(&self.config().name)?;
        let mut changes = Changes::new(&mut guard.state);
        make(&mut changes);
        let (events, delays) = changes.take();
        let position = self.persist(&mut guard, &events, &delays)?;
        drop(guard);
        self.wait(position, Completion::Durable)?;
        self.changed.notify_waiters();
        Ok(())
    }

    /// Moves partitions to new starting offsets; returns once durable.
    pub fn seek(&self, targets: &[(u32, u64)]) -> Result<()> {
        self.record(|c| {
            for &(p, offset) in targets {
                c.push(Event::Seek {
                    partition: p,
                    to: offset,
                });
            }
        })
    }

    /// Forgets what the subscription knew past the end of each partition `(p, end)` of
    /// its topic (the topic's unsynced tail lost with the page cache, under durability
    /// `interval` or `never`), durably, so that records written there later are
    /// delivered. Returns the partitions it clamped.
    pub fn clamp_to_log(&self, ends: &[(u32, u64)]) -> Result<Vec<u32>> {
        let beyond: Vec<(u32, u64)> = {
            let guard = lock(&self.inner);
            ends.iter()
                .copied()
                .filter(|&(p, end)| guard.state.part(p).is_some_and(|part| part.head > end))
                .collect()
        };
        if beyond.is_empty() {
            return Ok(Vec::new());
        }
        self.record(|c| {
            for &(p, end) in &beyond {
                c.push(Event::Truncate { partition: p, end });
            }
        })?;
        Ok(beyond.into_iter().map(|(p, _)| p).collect())
    }

    /// Marks records written to the dead-letter topic (or gone) as done.
    pub fn dead_lettered(&self, done: &[RecordAt]) -> Result<()> {
        self.record(|c| {
            for at in done {
                let (p, o) = (at.partition, at.offset);
                if c.state
                    .pending(p, o)
                    .is_some_and(|pending| pending.state == PState::Dead)
                {
                    c.push(Event::DeadLetter {
                        partition: p,
                        offset: o,
                    });
                }
            }
        })
    }

    /// The periodic work at `now`: loads delay files falling due, ends expired leases,
    /// releases due delays, writes a checkpoint when one is due. Returns records
    /// waiting for the dead-letter topic.
    pub fn tick(&self, now: u64) -> Result<Vec<DeadLetterCandidate>> {
        let cfg = self.config();
        let mut guard = lock(&self.inner);
        guard.check_running(&cfg.name)?;
        let inner = &mut *guard;
        let mut changes = Changes::new(&mut inner.state);
        // Load the next buckets first: delays made by `settle` below then see the new
        // mark, so none is written to a file that was already read.
        let target = bucket_of(now + BUCKET_MS);
        if target > changes.state.loaded_upto {
            if !changes.state.ordering {
                load_buckets(changes.state, &*self.store, target)?;
            }
            changes.state.loaded_upto = target;
            // Applied above already: journaled only, for replay.
            changes.events.push(Event::BucketsLoaded { upto: target });
        }
        settle(&cfg, &mut changes, &mut inner.rng, now);
        let (events, delays) = changes.take();
        let wake = inner.state.has_ready();
        let dead: Vec<DeadLetterCandidate> = inner
            .state
            .dead_pending()
            .take(DEAD_LETTERS_PER_TICK_MAX)
            .filter_map(|(p, o)| {
                let pending = inner.state.pending(p, o)?;
                Some(DeadLetterCandidate {
                    at: RecordAt {
                        partition: p,
                        offset: o,
                    },
                    attempts: pending.attempt,
                    last_error: pending.last_error.clone(),
                    history: pending.history.clone(),
                })
            })
            .collect();
        let snapshot = self.checkpoint_due(inner, now);
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

    /// A snapshot of the state when a checkpoint is due at `now`.
    fn checkpoint_due(&self, inner: &mut Inner, now: u64) -> Option<Snapshot> {
        let position = self.store.position();
        let due = position > inner.checkpoint_position
            && (now.saturating_sub(inner.last_checkpoint_ms) >= CHECKPOINT_INTERVAL_MS
                || position - inner.checkpoint_position >= CHECKPOINT_JOURNAL_RECORDS);
        if !due {
            return None;
        }
        inner.last_checkpoint_ms = now;
        inner.checkpoint_position = position;
        Some(Snapshot {
            version: 1,
            journal_offset: position,
            loaded_upto: inner.state.loaded_upto,
            redriven: inner.state.redriven.clone(),
            counters: inner.state.counters,
            partitions: inner.state.save(),
        })
    }

    /// Syncs the journal; the subscription is not used after this.
    pub fn close(&self) {
        if let Err(e) = self.store.close() {
            tracing::error!(dir = %self.dir.display(), error = %e, "Could not sync a subscription journal at shutdown.");
        }
    }
}

/// The first checkpoint of a new subscription: each partition at the offset `starts`
/// gives.
pub(crate) fn first_snapshot(
    config: &SubscriptionConfig,
    starts: &[(u32, u64)],
    now: u64,
) -> Snapshot {
    let mut state = State::new(config.ordering == KeyOrdering::Key);
    for &(p, o) in starts {
        state.ensure_part(p, o);
    }
    Snapshot {
        version: 1,
        partitions: state.save(),
        loaded_upto: bucket_of(now + BUCKET_MS),
        ..Snapshot::default()
    }
}

/// Ends expired leases and releases records whose delay is due.
pub(crate) fn settle(
    cfg: &SubscriptionConfig,
    changes: &mut Changes<'_>,
    rng: &mut rand::rngs::SmallRng,
    now: u64,
) {
    let expired = changes.state.expired(now);
    let expired_error: Arc<str> = Arc::from("lease expired");
    for (p, o) in expired {
        changes
            .state
            .set_last_error(p, o, Some(Arc::clone(&expired_error)));
        let at = RecordAt {
            partition: p,
            offset: o,
        };
        Subscription::give_back(cfg, changes, rng, at, None, now);
    }
    changes.state.release_due(now);
}

/// The state's own invariants, checked after every change in debug builds (so every
/// test and fuzz run checks them).
fn debug_assert_state(state: &State) {
    if cfg!(debug_assertions) {
        if let Err(broken) = state.check_invariants() {
            panic!("subscription state invariant broken: {broken}");
        }
    }
}

/// The state as stored: the snapshot, then the journal after it. Leases of a previous
/// run are ready again; records out of deliveries wait for the dead-letter topic.
pub(crate) fn load_state(
    store: &dyn SubscriptionStore,
    config: &SubscriptionConfig,
) -> Result<(State, usize)> {
    let (snapshot, events) = store.load()?;
    let mut state = State::new(config.ordering == KeyOrdering::Key);
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
                part.pending.iter().filter_map(move |(&o, pending)| {
                    (pending.state == PState::Ready && pending.attempt >= config.max_deliveries)
                        .then_some((p as u32, o, pending.attempt, pending.key))
                })
            })
            .collect();
        for (p, o, a, k) in spent {
            state.set(p, o, a, k, PState::Dead);
        }
    }
    debug_assert_state(&state);
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
                    super::state::NO_KEY,
                    PState::Delayed { due: e.due },
                );
            }
        }
    }
    state.loaded_upto = state.loaded_upto.max(upto);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subs::retry::{self, RetryPolicy};
    use crate::subs::state::NO_KEY;
    use crate::subs::Mode;

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
            ordering: KeyOrdering::None,
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
        let sub = Subscription::open(dir.path(), cfg.clone(), Some(snapshot), now).unwrap();
        {
            let mut inner = lock(&sub.inner);
            inner.state.set(
                0,
                7,
                1,
                NO_KEY,
                PState::Leased {
                    expires: now - 1,
                    token: 1,
                    consumer: Arc::from("c"),
                },
            );
            // The lease is journaled as a real pull would.
            let e = Event::Deliver {
                partition: 0,
                offset: 7,
                attempt: 1,
                key: NO_KEY,
            };
            sub.persist(&mut inner, &[e], &[]).unwrap();
        }
        sub.tick(now).unwrap();
        let due = bucket_of(now + BUCKET_MS);
        assert_eq!(due, target, "the retry falls into the bucket being loaded");
        {
            let inner = lock(&sub.inner);
            let pending = inner
                .state
                .pending(0, 7)
                .expect("still pending after the tick");
            assert_eq!(
                pending.state,
                PState::Delayed {
                    due: now + BUCKET_MS
                }
            );
        }
        // What a restart would see.
        sub.store.wait_durable(sub.store.position()).unwrap();
        let (again, _) = load_state(&*sub.store, &cfg).unwrap();
        assert!(again.pending(0, 7).is_some(), "pending after a reload");
    }
}
