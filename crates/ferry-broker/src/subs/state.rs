//! The state of one queue subscription, in memory, with no I/O.
//!
//! Per partition of the topic:
//!
//! ```text
//! floor    every offset below it is done (acknowledged, skipped or dead-lettered)
//! acked    offsets at or above the floor that are done, as ranges [lo, hi)
//! pending  offsets handed out or waiting: leased, ready again, delayed, or dead
//! head     the next offset never looked at
//! ```
//!
//! An offset in `[floor, head)` is either done or pending, except delayed records
//! whose due time is far off: those live in the delay files and come back into
//! `pending` when their bucket is loaded. Memory is the number of acked ranges plus the
//! pending records, never the backlog: ten million records not yet pulled are
//! `head - floor` and nothing else.
//!
//! Changes that must survive a crash are [`Event`]s; the journal stores them and replay
//! applies them again with the same code ([`State::apply`]). Leases are not events of
//! their own: a record delivered before a crash is ready again after it, with its
//! attempt count kept.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// Key hash of a record without a key: it is never held back by per-key ordering.
pub const NO_KEY: u64 = 0;

/// Delayed records due within the same bucket share a delay file.
pub const BUCKET_MS: u64 = 60_000;

pub fn bucket_of(due_ms: u64) -> u64 {
    due_ms / BUCKET_MS
}

/// FNV-1a of a record key; never [`NO_KEY`].
pub fn key_hash(key: Option<&[u8]>) -> u64 {
    let Some(key) = key else { return NO_KEY };
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h.max(1)
}

/// A change to the subscription's durable state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Leased to a consumer for its `attempt`-th delivery.
    Deliver {
        partition: u32,
        offset: u64,
        attempt: u32,
        key: u64,
    },
    /// Acknowledged.
    Ack { partition: u32, offset: u64 },
    /// Offsets `[lo, hi)` need no delivery (filtered out, gone, or not records).
    Skip { partition: u32, lo: u64, hi: u64 },
    /// Waiting for its turn (per-key ordering) after `attempt` deliveries.
    Ready {
        partition: u32,
        offset: u64,
        attempt: u32,
        key: u64,
    },
    /// Not to be delivered before `due`.
    Delay {
        partition: u32,
        offset: u64,
        attempt: u32,
        due: u64,
        key: u64,
    },
    /// Written to the dead-letter topic: done.
    DeadLetter { partition: u32, offset: u64 },
    /// Given up before it ran out of deliveries (a nack straight to the dead-letter
    /// topic): it waits for the dead-letter topic.
    GaveUp { partition: u32, offset: u64 },
    /// Start again from offset `to`: everything before is done, everything after is new.
    Seek { partition: u32, to: u64 },
    /// Delay buckets up to and including `upto` were read into memory.
    BucketsLoaded { upto: u64 },
    /// The dead-letter topic's partition `partition` was redriven up to offset `upto`.
    Redriven { partition: u32, upto: u64 },
    /// The topic's partition ends at `end` (its unsynced tail was lost with the page
    /// cache): everything the subscription knew at or past `end` is forgotten, so that
    /// records written there later are new.
    Truncate { partition: u32, end: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PState {
    Ready,
    Leased {
        expires: u64,
        token: u64,
        consumer: Arc<str>,
    },
    Delayed {
        due: u64,
    },
    /// Out of deliveries, waiting to be written to the dead-letter topic.
    Dead,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// Deliveries so far.
    pub attempt: u32,
    pub key: u64,
    pub state: PState,
    /// What the consumer said when it last gave the record back.
    pub last_error: Option<Arc<str>>,
    /// The latest failed attempts, newest last: `<attempt>@<ms>: <error>; ...`, at most
    /// `HISTORY_BYTES_MAX` bytes (the dead-letter copy carries it).
    pub history: Option<Box<str>>,
}

/// Bytes of attempt history kept per record, and per entry.
pub const HISTORY_BYTES_MAX: usize = 512;
const HISTORY_ENTRY_BYTES_MAX: usize = 120;

fn cut(s: &str, max: usize) -> &str {
    let mut n = s.len().min(max);
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    &s[..n]
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Part {
    pub floor: u64,
    pub head: u64,
    /// Bumped by every seek, so that delay entries from before it are ignored.
    pub gen: u32,
    acked: BTreeMap<u64, u64>,
    acked_count: u64,
    pub pending: BTreeMap<u64, Pending>,
}

impl Part {
    pub fn is_done(&self, o: u64) -> bool {
        o < self.floor
            || self
                .acked
                .range(..=o)
                .next_back()
                .is_some_and(|(_, &hi)| o < hi)
    }

    /// Records at or above the floor and below `latest` that are not done.
    pub fn backlog(&self, latest: u64) -> u64 {
        latest
            .saturating_sub(self.floor)
            .saturating_sub(self.acked_count)
    }

    /// Acked ranges are disjoint, not touching, above the floor, and counted.
    fn check_ranges(&self) -> Result<(), String> {
        let mut sum = 0;
        let mut prev_hi = None;
        for (lo, hi) in self.acked_ranges() {
            if lo <= self.floor || hi <= lo || prev_hi.is_some_and(|h| lo <= h) {
                return Err(format!(
                    "acked range [{lo}, {hi}) overlaps, touches or is below the floor {}",
                    self.floor
                ));
            }
            prev_hi = Some(hi);
            sum += hi - lo;
        }
        if sum != self.acked_count {
            return Err(format!(
                "acked ranges hold {sum} offsets, counted {}",
                self.acked_count
            ));
        }
        Ok(())
    }

    /// Forgets acked offsets at or past `end` and lowers floor and head to it.
    fn truncate(&mut self, end: u64) {
        let beyond: Vec<(u64, u64)> = self
            .acked
            .iter()
            .filter(|&(_, &hi)| hi > end)
            .map(|(&lo, &hi)| (lo, hi))
            .collect();
        for (lo, hi) in beyond {
            self.acked.remove(&lo);
            self.acked_count -= hi - lo;
            if lo < end {
                self.acked.insert(lo, end);
                self.acked_count += end - lo;
            }
        }
        self.floor = self.floor.min(end);
        self.head = self.head.min(end);
    }

    pub fn acked_ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.acked.iter().map(|(&lo, &hi)| (lo, hi))
    }

    /// Marks `[lo, hi)` done, merging it with the ranges it touches, and moves the
    /// floor up over ranges that start at it.
    fn mark_done(&mut self, lo: u64, hi: u64) {
        let lo = lo.max(self.floor);
        if hi <= lo {
            return;
        }
        let start = self.acked.range(..=lo).next_back().map_or(lo, |(&l, _)| l);
        let touching: Vec<(u64, u64)> = self
            .acked
            .range(start..=hi)
            .map(|(&l, &h)| (l, h))
            .filter(|&(l, h)| h >= lo && l <= hi)
            .collect();
        let (mut new_lo, mut new_hi) = (lo, hi);
        for (l, h) in touching {
            self.acked.remove(&l);
            self.acked_count -= h - l;
            new_lo = new_lo.min(l);
            new_hi = new_hi.max(h);
        }
        self.acked_count += new_hi - new_lo;
        self.acked.insert(new_lo, new_hi);
        while let Some((&l, &h)) = self.acked.first_key_value() {
            if l > self.floor {
                break;
            }
            self.acked.remove(&l);
            self.acked_count -= h - l;
            self.floor = self.floor.max(h);
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    pub delivered: u64,
    pub redelivered: u64,
    pub acked: u64,
    pub dead_lettered: u64,
}

#[derive(Debug, Default)]
pub struct State {
    pub ordering: bool,
    pub parts: Vec<Part>,
    /// Pending records that may be delivered now.
    ready: BTreeSet<(u32, u64)>,
    expiries: BTreeSet<(u64, u32, u64)>,
    dues: BTreeSet<(u64, u32, u64)>,
    dead: BTreeSet<(u32, u64)>,
    /// Per-key ordering: the pending offsets of each key, per partition.
    keys: HashMap<(u32, u64), BTreeSet<u64>>,
    /// Leases per consumer.
    consumers: HashMap<Arc<str>, u32>,
    leased: u32,
    delayed: u64,
    pub loaded_upto: u64,
    pub redriven: BTreeMap<u32, u64>,
    pub counters: Counters,
}

/// One pending record in a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedPending {
    pub offset: u64,
    pub attempt: u32,
    pub key: u64,
    /// 0: ready, otherwise the due time of a delayed record; `u64::MAX`: dead.
    pub due: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedPart {
    pub floor: u64,
    pub head: u64,
    pub gen: u32,
    pub acked: Vec<(u64, u64)>,
    pub pending: Vec<SavedPending>,
}

impl State {
    pub fn new(ordering: bool) -> Self {
        State {
            ordering,
            ..State::default()
        }
    }

    /// Pending records above which [`State::check_invariants`] checks only what costs
    /// O(partitions): the full check is O(pending) and runs after every change.
    pub const FULL_CHECK_PENDING_MAX: usize = 4096;

    /// Checks what must hold after every change: acked ranges are disjoint, above the
    /// floor and counted; no pending record is done; every index (ready, expiries,
    /// dues, dead, per-consumer and total lease counts) agrees with the pending
    /// records. Returns what is broken. Run after every change in debug builds.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut pending_total = 0usize;
        for (p, part) in self.parts.iter().enumerate() {
            part.check_ranges()
                .map_err(|e| format!("partition {p}: {e}"))?;
            pending_total += part.pending.len();
        }
        if self.expiries.len() != self.leased as usize
            || self.consumers.values().map(|&n| n as u64).sum::<u64>() != u64::from(self.leased)
            || self.dues.len() as u64 != self.delayed
        {
            return Err(format!(
                "lease or delay counts disagree: {} leased, {} expiries, {} delayed, {} dues",
                self.leased,
                self.expiries.len(),
                self.delayed,
                self.dues.len()
            ));
        }
        if pending_total > Self::FULL_CHECK_PENDING_MAX {
            return Ok(());
        }
        let (mut leased, mut delayed, mut dead) = (0u32, 0u64, 0usize);
        for (p, part) in self.parts.iter().enumerate() {
            for (&o, pending) in &part.pending {
                if part.is_done(o) {
                    return Err(format!("partition {p}: pending offset {o} is done"));
                }
                let indexed = match &pending.state {
                    PState::Ready => true,
                    PState::Leased { expires, .. } => {
                        leased += 1;
                        self.expiries.contains(&(*expires, p as u32, o))
                    }
                    PState::Delayed { due } => {
                        delayed += 1;
                        self.dues.contains(&(*due, p as u32, o))
                    }
                    PState::Dead => {
                        dead += 1;
                        self.dead.contains(&(p as u32, o))
                    }
                };
                if !indexed {
                    return Err(format!(
                        "partition {p}: pending offset {o} ({:?}) is not indexed",
                        pending.state
                    ));
                }
            }
        }
        if leased != self.leased || delayed != self.delayed || dead != self.dead.len() {
            return Err(format!(
                "indexes hold records that are not pending: {leased}/{} leased, {delayed}/{} delayed, {dead}/{} dead",
                self.leased,
                self.delayed,
                self.dead.len()
            ));
        }
        for &(p, o) in &self.ready {
            if self.pending(p, o).map(|pending| &pending.state) != Some(&PState::Ready) {
                return Err(format!(
                    "partition {p}: offset {o} is in the ready set but not ready"
                ));
            }
        }
        Ok(())
    }

    pub fn part(&self, p: u32) -> Option<&Part> {
        self.parts.get(p as usize)
    }

    /// Makes sure partition `p` exists; new partitions start at `start`.
    pub fn ensure_part(&mut self, p: u32, start: u64) -> &mut Part {
        while self.parts.len() <= p as usize {
            self.parts.push(Part {
                floor: start,
                head: start,
                ..Part::default()
            });
        }
        &mut self.parts[p as usize]
    }

    pub fn leased(&self) -> u32 {
        self.leased
    }

    pub fn leased_by(&self, consumer: &str) -> u32 {
        self.consumers.get(consumer).copied().unwrap_or(0)
    }

    /// Delayed records held in memory.
    pub fn delayed_in_memory(&self) -> u64 {
        self.delayed
    }

    pub fn dead_pending(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.dead.iter().copied()
    }

    /// Records held back by per-key ordering or waiting to be redelivered.
    pub fn ready_count(&self) -> usize {
        self.parts
            .iter()
            .map(|p| {
                p.pending
                    .values()
                    .filter(|pending| pending.state == PState::Ready)
                    .count()
            })
            .sum()
    }

    pub fn pending(&self, p: u32, o: u64) -> Option<&Pending> {
        self.part(p)?.pending.get(&o)
    }

    pub fn is_done(&self, p: u32, o: u64) -> bool {
        self.part(p).is_some_and(|part| part.is_done(o))
    }

    /// Whether a new record with this key must wait for an earlier one (ordering on).
    pub fn key_busy(&self, p: u32, key: u64) -> bool {
        self.ordering && key != NO_KEY && self.keys.get(&(p, key)).is_some_and(|s| !s.is_empty())
    }

    fn eligible(&self, p: u32, o: u64, key: u64) -> bool {
        !self.ordering
            || key == NO_KEY
            || self
                .keys
                .get(&(p, key))
                .and_then(|s| s.first())
                .is_none_or(|&first| first == o)
    }

    fn index(&mut self, p: u32, o: u64) {
        let Some(pending) = self.parts[p as usize].pending.get(&o) else {
            return;
        };
        let key = pending.key;
        match &pending.state {
            PState::Ready => {
                if self.eligible(p, o, key) {
                    self.ready.insert((p, o));
                }
            }
            PState::Leased {
                expires, consumer, ..
            } => {
                self.expiries.insert((*expires, p, o));
                *self.consumers.entry(Arc::clone(consumer)).or_default() += 1;
                self.leased += 1;
            }
            PState::Delayed { due } => {
                self.dues.insert((*due, p, o));
                self.delayed += 1;
            }
            PState::Dead => {
                self.dead.insert((p, o));
            }
        }
    }

    fn unindex(&mut self, p: u32, o: u64) {
        let Some(pending) = self.parts[p as usize].pending.get(&o) else {
            return;
        };
        match &pending.state {
            PState::Ready => {
                self.ready.remove(&(p, o));
            }
            PState::Leased {
                expires, consumer, ..
            } => {
                self.expiries.remove(&(*expires, p, o));
                if let Some(n) = self.consumers.get_mut(consumer) {
                    *n -= 1;
                    if *n == 0 {
                        self.consumers.remove(consumer);
                    }
                }
                self.leased -= 1;
            }
            PState::Delayed { due } => {
                self.dues.remove(&(*due, p, o));
                self.delayed -= 1;
            }
            PState::Dead => {
                self.dead.remove(&(p, o));
            }
        }
    }

    /// Puts a record into `state`, adding it to `pending` if it is not there.
    pub fn set(&mut self, p: u32, o: u64, attempt: u32, key: u64, state: PState) {
        self.ensure_part(p, 0);
        if self.is_done(p, o) {
            // Done is final until a seek.
            return;
        }
        self.unindex(p, o);
        let part = &mut self.parts[p as usize];
        part.head = part.head.max(o + 1);
        let fresh = !part.pending.contains_key(&o);
        let entry = part.pending.entry(o).or_insert(Pending {
            attempt,
            key,
            state: PState::Ready,
            last_error: None,
            history: None,
        });
        entry.attempt = attempt;
        entry.key = key;
        entry.state = state;
        if fresh && self.ordering && key != NO_KEY {
            let offsets = self.keys.entry((p, key)).or_default();
            offsets.insert(o);
            // A record may join its key below one already waiting (a pull journals
            // the records it holds back before the ones it delivers, so replay meets
            // them in that order): only the first of a key may be ready.
            if offsets.first() == Some(&o) {
                if let Some(&next) = offsets.range(o + 1..).next() {
                    self.ready.remove(&(p, next));
                }
            }
        }
        self.index(p, o);
    }

    /// Takes a record out of `pending`; the next record of its key may go.
    pub fn remove(&mut self, p: u32, o: u64) -> Option<Pending> {
        self.part(p)?.pending.get(&o)?;
        self.unindex(p, o);
        let pending = self.parts[p as usize].pending.remove(&o)?;
        if self.ordering && pending.key != NO_KEY {
            if let Some(set) = self.keys.get_mut(&(p, pending.key)) {
                set.remove(&o);
                match set.first().copied() {
                    None => {
                        self.keys.remove(&(p, pending.key));
                    }
                    Some(next) => {
                        if self.parts[p as usize]
                            .pending
                            .get(&next)
                            .is_some_and(|n| n.state == PState::Ready)
                        {
                            self.ready.insert((p, next));
                        }
                    }
                }
            }
        }
        Some(pending)
    }

    fn done(&mut self, p: u32, lo: u64, hi: u64) {
        let inside: Vec<u64> = self
            .ensure_part(p, 0)
            .pending
            .range(lo..hi)
            .map(|(&o, _)| o)
            .collect();
        for o in inside {
            self.remove(p, o);
        }
        let part = self.ensure_part(p, 0);
        part.head = part.head.max(hi);
        part.mark_done(lo, hi);
    }

    /// Applies one durable change. A `BucketsLoaded` only moves the mark: the caller
    /// reads the delay files.
    ///
    /// Longer than most functions on purpose: one arm per event, so the whole state
    /// machine reads in one place, in the order of the `Event` enum.
    pub fn apply(&mut self, e: &Event) {
        match *e {
            Event::Deliver {
                partition: p,
                offset: o,
                attempt,
                key,
            } => {
                // Replay: a lease from before a restart is ready again, its attempt kept.
                self.set(p, o, attempt, key, PState::Ready);
                // Counted here, so that replay counts the deliveries after the snapshot.
                self.counters.delivered += 1;
                if attempt > 1 {
                    self.counters.redelivered += 1;
                }
            }
            Event::Ack {
                partition: p,
                offset: o,
            } => {
                if self.remove(p, o).is_some() || !self.is_done(p, o) {
                    self.done(p, o, o + 1);
                    self.counters.acked += 1;
                }
            }
            Event::Skip {
                partition: p,
                lo,
                hi,
            } => self.done(p, lo, hi),
            Event::Ready {
                partition: p,
                offset: o,
                attempt,
                key,
            } => self.set(p, o, attempt, key, PState::Ready),
            Event::Delay {
                partition: p,
                offset: o,
                attempt,
                due,
                key,
            } => {
                if self.ordering || bucket_of(due) <= self.loaded_upto {
                    self.set(p, o, attempt, key, PState::Delayed { due });
                } else {
                    // The delay file holds it until its bucket is loaded.
                    self.remove(p, o);
                    let part = self.ensure_part(p, 0);
                    part.head = part.head.max(o + 1);
                }
            }
            Event::GaveUp {
                partition: p,
                offset: o,
            } => {
                if let Some(pending) = self.pending(p, o) {
                    let (attempt, key) = (pending.attempt, pending.key);
                    self.set(p, o, attempt, key, PState::Dead);
                }
            }
            Event::DeadLetter {
                partition: p,
                offset: o,
            } => {
                if self.remove(p, o).is_some() || !self.is_done(p, o) {
                    self.done(p, o, o + 1);
                    self.counters.dead_lettered += 1;
                }
            }
            Event::Seek {
                partition: p,
                to: offset,
            } => {
                // Partitions below `p` that are new start from their beginning.
                self.ensure_part(p, 0);
                let offsets: Vec<u64> = self.parts[p as usize].pending.keys().copied().collect();
                for o in offsets {
                    self.remove(p, o);
                }
                let part = &mut self.parts[p as usize];
                part.floor = offset;
                part.head = offset;
                part.acked.clear();
                part.acked_count = 0;
                part.gen = part.gen.wrapping_add(1);
            }
            Event::BucketsLoaded { upto } => self.loaded_upto = self.loaded_upto.max(upto),
            Event::Redriven {
                partition: p,
                upto: offset,
            } => {
                // The mark only moves forward.
                let mark = self.redriven.entry(p).or_insert(0);
                *mark = (*mark).max(offset);
            }
            Event::Truncate { partition: p, end } => {
                let beyond: Vec<u64> = self
                    .ensure_part(p, 0)
                    .pending
                    .range(end..)
                    .map(|(&o, _)| o)
                    .collect();
                for o in beyond {
                    self.remove(p, o);
                }
                // Delay entries past `end` are refused when read: they lie past the head.
                self.parts[p as usize].truncate(end);
            }
        }
    }

    /// Whether a delay entry read from a file still stands: same seek generation, not
    /// done, and not pending in some other way.
    pub fn accepts_delayed(&self, p: u32, o: u64, gen: u32) -> bool {
        self.part(p).is_some_and(|part| {
            part.gen == gen && o < part.head && !part.is_done(o) && !part.pending.contains_key(&o)
        })
    }

    /// Leases that ran out by `now`: `(partition, offset)`, earliest first.
    pub fn expired(&self, now: u64) -> Vec<(u32, u64)> {
        self.expiries
            .range(..(now + 1, 0, 0))
            .map(|&(_, p, o)| (p, o))
            .collect()
    }

    /// Moves delayed records due by `now` to ready; returns how many.
    pub fn release_due(&mut self, now: u64) -> usize {
        let due: Vec<(u32, u64)> = self
            .dues
            .range(..(now + 1, 0, 0))
            .map(|&(_, p, o)| (p, o))
            .collect();
        for &(p, o) in &due {
            if let Some(pending) = self.pending(p, o) {
                let (attempt, key) = (pending.attempt, pending.key);
                self.set(p, o, attempt, key, PState::Ready);
            }
        }
        due.len()
    }

    /// Takes the lowest ready record out of the ready set (it stays pending).
    pub fn pop_ready(&mut self) -> Option<(u32, u64)> {
        self.ready.pop_first()
    }

    /// Keeps a record out of the ready set while it is being leased.
    pub fn remove_from_ready(&mut self, p: u32, o: u64) {
        self.ready.remove(&(p, o));
    }

    /// Puts a popped record back in the ready set.
    pub fn set_ready_again(&mut self, p: u32, o: u64) {
        if let Some(pending) = self.pending(p, o) {
            if pending.state == PState::Ready && self.eligible(p, o, pending.key) {
                self.ready.insert((p, o));
            }
        }
    }

    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Leases a pending record.
    pub fn lease(&mut self, p: u32, o: u64, lease: PState) -> Option<u32> {
        let pending = self.pending(p, o)?;
        let (attempt, key) = (pending.attempt, pending.key);
        self.set(p, o, attempt, key, lease);
        Some(attempt)
    }

    pub fn set_last_error(&mut self, p: u32, o: u64, error: Option<Arc<str>>) {
        if let Some(pending) = self
            .parts
            .get_mut(p as usize)
            .and_then(|part| part.pending.get_mut(&o))
        {
            if let Some(e) = &error {
                let entry = format!(
                    "{}@{}: {}",
                    pending.attempt,
                    crate::now_ms(),
                    cut(e, HISTORY_ENTRY_BYTES_MAX)
                );
                let mut h = match pending.history.take() {
                    Some(old) => format!("{old}; {entry}"),
                    None => entry,
                };
                while h.len() > HISTORY_BYTES_MAX {
                    match h.find("; ") {
                        Some(i) => {
                            h.drain(..i + 2);
                        }
                        None => h = cut(&h, HISTORY_BYTES_MAX).to_string(),
                    }
                }
                pending.history = Some(h.into_boxed_str());
            }
            pending.last_error = error;
        }
    }

    pub fn save(&self) -> Vec<SavedPart> {
        self.parts
            .iter()
            .map(|part| SavedPart {
                floor: part.floor,
                head: part.head,
                gen: part.gen,
                acked: part.acked_ranges().collect(),
                pending: part
                    .pending
                    .iter()
                    .map(|(&offset, pending)| SavedPending {
                        offset,
                        attempt: pending.attempt,
                        key: pending.key,
                        due: match pending.state {
                            PState::Ready | PState::Leased { .. } => 0,
                            PState::Delayed { due } => due.max(1),
                            PState::Dead => u64::MAX,
                        },
                    })
                    .collect(),
            })
            .collect()
    }

    /// Rebuilds the state from a snapshot's partitions.
    pub fn restore(&mut self, parts: &[SavedPart]) {
        for (p, saved) in parts.iter().enumerate() {
            let p = p as u32;
            let part = self.ensure_part(p, saved.floor);
            part.floor = saved.floor;
            part.head = saved.head.max(saved.floor);
            part.gen = saved.gen;
            for &(lo, hi) in &saved.acked {
                if lo >= saved.floor && hi > lo {
                    part.mark_done(lo, hi);
                }
            }
            for pending in &saved.pending {
                if self.is_done(p, pending.offset) {
                    continue;
                }
                let state = match pending.due {
                    0 => PState::Ready,
                    u64::MAX => PState::Dead,
                    due => PState::Delayed { due },
                };
                self.set(p, pending.offset, pending.attempt, pending.key, state);
            }
        }
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
