//! Model-based test of a queue subscription: random produces, pulls, acks, nacks,
//! extends, time passing with ticks, dead-lettering, seeks and reopenings, applied both
//! to a real subscription over a real two-partition topic and to a plain model written
//! here (one small state per record). After every step they must agree: every delivery
//! names a record the model says may be delivered now, with its attempt number; no
//! record is leased twice at once; an acknowledged record never comes back; acks, nacks
//! and extends count (or refuse) alike; the exact numbers of `describe` match; a tick
//! hands out exactly the records out of deliveries.
//!
//! Where the subscription may choose (which of several deliverable records a pull
//! returns, how far a pull scans the heads), the model checks that the choice is
//! allowed, then adopts it.
//!
//! Every seed is one run, with the same operations and answers on every machine (only
//! lease tokens differ: they carry the process's epoch). `FERRY_MODEL_SEED=<n>`
//! replays one seed, `FERRY_MODEL_SEEDS=<count>` runs seeds `0..count`,
//! `FERRY_MODEL_STEPS=<n>` sets the steps of a run. A failure names its seed and step
//! and prints the steps that led there.
//!
//! One known bug is accepted (and counted) rather than failed on, so that everything
//! else stays checked: see `Model::reopened`.
//!
//! Why this file is long (over 800 lines): the model, its checks of a pull, the
//! operations and their generator belong together, and the model must stay a plain
//! reading of the rules, next to the run that compares it with the subscription.

use bytes::Bytes;
use ferry_broker::config::{DurabilityPolicy, TopicConfig};
use ferry_broker::partition::Partition;
use ferry_broker::subs::dead_letter::DeadLetterCandidate;
use ferry_broker::subs::lease::{LeaseId, RecordAt, UnknownLeases};
use ferry_broker::subs::retry::{Jitter, RetryPolicy, Strategy};
use ferry_broker::subs::state::{bucket_of, PState, BUCKET_MS};
use ferry_broker::subs::subscription::{Completion, GiveBack};
use ferry_broker::subs::{
    Delivery, KeyOrdering, Mode, PullRequest, Subscription, SubscriptionConfig, SubscriptionStatus,
    HEADER_DELIVER_AT,
};
use ferry_broker::topic::Topic;
use ferry_broker::BrokerError;
use ferry_log::batch::{build_batch, NewRecord, RecordHeader};
use ferry_log::{Compression, Durability, LogConfig, PartitionLog};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Seeds run by default, and their steps: every path the tally counts is taken, in
/// about a second in a debug build (the journal in memory; some 20 s on a disk).
const SEEDS_DEFAULT: u64 = 32;
const STEPS_DEFAULT: u64 = 250;
const PARTITIONS: usize = 2;
const CONSUMERS: usize = 3;
/// Where the clock starts (plus up to a bucket, so bucket edges fall anywhere).
const EPOCH_MS: u64 = 1_800_000_000_000;
/// Records out of deliveries a tick hands out at most (`DEAD_LETTERS_PER_TICK_MAX`).
const DEAD_PER_TICK_MAX: usize = 100;

// ---------------------------------------------------------------------------------
// The model.

/// Where one record of the topic stands for the subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    /// At or above the partition's head: never looked at.
    New,
    /// Leased for its `attempt`-th delivery.
    Leased {
        attempt: u32,
        expires: u64,
        consumer: usize,
        token: u64,
    },
    /// Given back (or its lease ran out) after `attempt` deliveries, held back by
    /// per-key ordering, or out of a delay due at `released` (a release is not
    /// journaled: after a reopen the record may be delayed again, already due).
    Ready { attempt: u32, released: Option<u64> },
    /// Not to be delivered before `due`.
    Delayed { attempt: u32, due: u64 },
    /// Out of deliveries, waiting for the dead-letter topic.
    Dead { attempt: u32 },
    /// Acknowledged, dead-lettered, or below a seek.
    Done,
}

impl St {
    fn attempt(self) -> Option<u32> {
        match self {
            St::Leased { attempt, .. }
            | St::Ready { attempt, .. }
            | St::Delayed { attempt, .. }
            | St::Dead { attempt } => Some(attempt),
            St::New | St::Done => None,
        }
    }
}

#[derive(Debug, Clone)]
struct Rec {
    key: Option<u8>,
    /// Its `ferry-deliver-at`, when that reads as a time.
    deliver_at: Option<u64>,
    /// Its value: tells a delivered record apart from every other.
    serial: u64,
    st: St,
}

/// The settings the model needs (the same the real subscription gets).
#[derive(Debug, Clone, Copy)]
struct Settings {
    ordering: bool,
    max_deliveries: u32,
    retry_ms: u64,
    visibility_ms: u64,
    max_in_flight: u32,
    per_consumer: u32,
}

/// What an ack, nack or extend answers.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Count(usize),
    NotFound(Vec<String>),
    AlreadyAcked(Vec<String>),
    Refused,
}

/// How often the runs took each path: printed at the end, and the default runs must
/// take every one (else the operation mix no longer reaches it).
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    deliveries: u64,
    redeliveries: u64,
    acks: u64,
    give_backs: u64,
    extends: u64,
    refusals: u64,
    expiries: u64,
    delay_files: u64,
    releases: u64,
    held_by_key: u64,
    spent: u64,
    dead_handed_out: u64,
    dead_lettered: u64,
    seeks: u64,
    reopens: u64,
    leases_ended_by_reopen: u64,
    delayed_again_by_reopen: u64,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        let (a, b) = (self.fields_mut(), o.fields());
        for (x, y) in a.into_iter().zip(b) {
            *x += y;
        }
    }

    fn fields(&self) -> [u64; 17] {
        let mut t = *self;
        t.fields_mut().map(|x| *x)
    }

    fn fields_mut(&mut self) -> [&mut u64; 17] {
        [
            &mut self.deliveries,
            &mut self.redeliveries,
            &mut self.acks,
            &mut self.give_backs,
            &mut self.extends,
            &mut self.refusals,
            &mut self.expiries,
            &mut self.delay_files,
            &mut self.releases,
            &mut self.held_by_key,
            &mut self.spent,
            &mut self.dead_handed_out,
            &mut self.dead_lettered,
            &mut self.seeks,
            &mut self.reopens,
            &mut self.leases_ended_by_reopen,
            &mut self.delayed_again_by_reopen,
        ]
    }
}

struct Model {
    s: Settings,
    tally: Tally,
    /// Per partition, the records by offset.
    parts: Vec<Vec<Rec>>,
    head: Vec<u64>,
    /// Delayed records due in buckets up to here are in memory; later ones in files.
    loaded_upto: u64,
    /// Entries written to each delay file, stale ones too (the status counts them).
    files: BTreeMap<u64, u64>,
    acked: u64,
    dead_lettered: u64,
    delivered: u64,
    redelivered: u64,
}

impl Model {
    fn st(&self, p: u32, o: u64) -> Option<St> {
        self.parts.get(p as usize)?.get(o as usize).map(|r| r.st)
    }

    fn set(&mut self, p: u32, o: u64, st: St) {
        self.parts[p as usize][o as usize].st = st;
    }

    fn all(&self) -> impl Iterator<Item = (u32, u64, St)> + '_ {
        self.parts.iter().enumerate().flat_map(|(p, part)| {
            part.iter()
                .enumerate()
                .map(move |(o, r)| (p as u32, o as u64, r.st))
        })
    }

    fn count(&self, f: impl Fn(St) -> bool) -> usize {
        self.all().filter(|&(_, _, st)| f(st)).count()
    }

    fn in_memory(&self, due: u64) -> bool {
        self.s.ordering || bucket_of(due) <= self.loaded_upto
    }

    /// Whether the subscription holds the record (leased, waiting, delayed in memory,
    /// or dead): per-key ordering holds later records of its key back.
    fn held(&self, st: St) -> bool {
        match st {
            St::Leased { .. } | St::Ready { .. } | St::Dead { .. } => true,
            St::Delayed { due, .. } => self.in_memory(due),
            St::New | St::Done => false,
        }
    }

    /// Per-key ordering: an earlier record of the same key is held.
    fn key_busy(&self, p: u32, o: u64) -> bool {
        let part = &self.parts[p as usize];
        let key = part[o as usize].key;
        self.s.ordering
            && key.is_some()
            && part[..o as usize]
                .iter()
                .any(|r| r.key == key && self.held(r.st))
    }

    fn delay(&mut self, p: u32, o: u64, attempt: u32, due: u64) {
        if !self.in_memory(due) {
            *self.files.entry(bucket_of(due)).or_default() += 1;
            self.tally.delay_files += 1;
        }
        self.set(p, o, St::Delayed { attempt, due });
    }

    /// A leased record given back: dead when out of deliveries, else ready or delayed.
    fn give_back(&mut self, p: u32, o: u64, delay: Option<u64>, now: u64) {
        let Some(attempt) = self.st(p, o).and_then(St::attempt) else {
            return;
        };
        if self.s.max_deliveries > 0 && attempt >= self.s.max_deliveries {
            self.tally.spent += 1;
            self.set(p, o, St::Dead { attempt });
            return;
        }
        match delay.unwrap_or(self.s.retry_ms) {
            0 => self.set(
                p,
                o,
                St::Ready {
                    attempt,
                    released: None,
                },
            ),
            d => self.delay(p, o, attempt, now + d),
        }
    }

    /// Expired leases given back, then due delays (in memory) ready.
    fn settle(&mut self, now: u64) {
        let expired: Vec<(u32, u64)> = self
            .all()
            .filter(|&(_, _, st)| matches!(st, St::Leased { expires, .. } if expires <= now))
            .map(|(p, o, _)| (p, o))
            .collect();
        self.tally.expiries += expired.len() as u64;
        for (p, o) in expired {
            self.give_back(p, o, None, now);
        }
        let due: Vec<(u32, u64, u32, u64)> = self
            .all()
            .filter_map(|(p, o, st)| match st {
                St::Delayed { attempt, due } if due <= now && self.in_memory(due) => {
                    Some((p, o, attempt, due))
                }
                _ => None,
            })
            .collect();
        self.tally.releases += due.len() as u64;
        for (p, o, attempt, due) in due {
            self.set(
                p,
                o,
                St::Ready {
                    attempt,
                    released: Some(due),
                },
            );
        }
    }

    /// The next time after `now` at which a lease expires or a record falls due.
    fn next_deadline(&self, now: u64) -> Option<u64> {
        let parts = self.parts.iter().flatten();
        parts
            .filter_map(|r| match r.st {
                St::Leased { expires, .. } => Some(expires),
                St::Delayed { due, .. } => Some(due),
                St::New => r.deliver_at,
                _ => None,
            })
            .filter(|&at| at > now)
            .min()
    }

    fn leased(&self, consumer: Option<usize>) -> usize {
        self.count(
            |st| matches!(st, St::Leased { consumer: c, .. } if consumer.is_none_or(|x| x == c)),
        )
    }

    /// Records a pull could take now (after settling): ready ones first of their key,
    /// and new ones a full scan of the heads would take.
    fn deliverable(&self, now: u64) -> usize {
        let ready = self
            .all()
            .filter(|&(p, o, st)| matches!(st, St::Ready { .. }) && !self.key_busy(p, o))
            .count();
        let mut new = 0;
        for (p, part) in self.parts.iter().enumerate() {
            let mut busy: BTreeSet<u8> = part
                .iter()
                .filter(|r| self.held(r.st))
                .filter_map(|r| r.key)
                .collect();
            for r in &part[self.head[p] as usize..] {
                let hold = |busy: &mut BTreeSet<u8>| {
                    if let Some(k) = r.key.filter(|_| self.s.ordering) {
                        busy.insert(k);
                    }
                };
                if r.deliver_at.is_some_and(|due| due > now) {
                    hold(&mut busy);
                } else if !(self.s.ordering && r.key.is_some_and(|k| busy.contains(&k))) {
                    new += 1;
                    hold(&mut busy);
                }
            }
        }
        ready + new
    }

    /// What `lease::check` and the operation make of `ids`: the outcome and the live
    /// leases, each once.
    fn check_ids(&mut self, ids: &[String], unknown: UnknownLeases) -> (Outcome, Vec<(u32, u64)>) {
        if ids.is_empty() {
            return (Outcome::Refused, Vec::new());
        }
        let (mut live, mut missing, mut acked) = (Vec::new(), Vec::new(), Vec::new());
        let mut seen = BTreeSet::new();
        for id in ids {
            if !seen.insert(id.as_str()) {
                continue;
            }
            let Some(l) = LeaseId::parse(id) else {
                missing.push(id.clone());
                continue;
            };
            let (p, o) = (l.at.partition, l.at.offset);
            match self.st(p, o) {
                Some(St::Leased { attempt, token, .. })
                    if attempt == l.attempt && token == l.token =>
                {
                    if !live.contains(&(p, o)) {
                        live.push((p, o));
                    }
                }
                Some(St::Done) => acked.push(id.clone()),
                _ => missing.push(id.clone()),
            }
        }
        let outcome = match unknown {
            UnknownLeases::Skip => Outcome::Count(live.len()),
            UnknownLeases::Refuse if !missing.is_empty() => Outcome::NotFound(missing),
            UnknownLeases::Refuse if !acked.is_empty() => Outcome::AlreadyAcked(acked),
            UnknownLeases::Refuse => Outcome::Count(live.len()),
        };
        if !matches!(outcome, Outcome::Count(_)) {
            live.clear();
        }
        self.tally.refusals += u64::from(!matches!(outcome, Outcome::Count(_)));
        (outcome, live)
    }

    fn ack(&mut self, ids: &[String], unknown: UnknownLeases, now: u64) -> Outcome {
        self.settle(now);
        let (outcome, live) = self.check_ids(ids, unknown);
        for (p, o) in live {
            self.set(p, o, St::Done);
            self.acked += 1;
            self.tally.acks += 1;
        }
        outcome
    }

    fn nack(&mut self, ids: &[String], action: GiveBack, now: u64) -> Outcome {
        self.settle(now);
        let (outcome, live) = self.check_ids(ids, UnknownLeases::Refuse);
        self.tally.give_backs += live.len() as u64;
        for (p, o) in live {
            match action {
                GiveBack::DeadLetter => {
                    let attempt = self.st(p, o).and_then(St::attempt).unwrap_or(0);
                    self.set(p, o, St::Dead { attempt });
                }
                GiveBack::Retry { delay_ms } => self.give_back(p, o, delay_ms, now),
            }
        }
        outcome
    }

    fn extend(&mut self, ids: &[String], timeout_ms: u64, now: u64) -> Outcome {
        self.settle(now);
        let (outcome, live) = self.check_ids(ids, UnknownLeases::Refuse);
        self.tally.extends += live.len() as u64;
        for (p, o) in live {
            if let Some(St::Leased {
                attempt,
                consumer,
                token,
                ..
            }) = self.st(p, o)
            {
                let expires = now + timeout_ms;
                self.set(
                    p,
                    o,
                    St::Leased {
                        attempt,
                        expires,
                        consumer,
                        token,
                    },
                );
            }
        }
        outcome
    }

    /// The tick: load the delay buckets falling due, settle; returns the records out of
    /// deliveries a tick hands out, with their attempts.
    fn tick(&mut self, now: u64) -> Vec<(RecordAt, u32)> {
        self.loaded_upto = self.loaded_upto.max(bucket_of(now + BUCKET_MS));
        self.settle(now);
        let dead: Vec<(RecordAt, u32)> = self
            .all()
            .filter_map(|(partition, offset, st)| match st {
                St::Dead { attempt } => Some((RecordAt { partition, offset }, attempt)),
                _ => None,
            })
            .take(DEAD_PER_TICK_MAX)
            .collect();
        self.tally.dead_handed_out += dead.len() as u64;
        dead
    }

    fn dead_lettered(&mut self, done: &[RecordAt]) {
        for at in done {
            if matches!(self.st(at.partition, at.offset), Some(St::Dead { .. })) {
                self.set(at.partition, at.offset, St::Done);
                self.dead_lettered += 1;
                self.tally.dead_lettered += 1;
            }
        }
    }

    fn seek(&mut self, p: u32, offset: u64) {
        for (o, r) in self.parts[p as usize].iter_mut().enumerate() {
            r.st = if (o as u64) < offset {
                St::Done
            } else {
                St::New
            };
        }
        self.head[p as usize] = offset;
        self.tally.seeks += 1;
    }

    /// Leases end with the process (attempts kept); records out of deliveries are dead.
    /// Where what was stored leaves a choice, `real` (the reopened subscription's
    /// record: deliveries and state) says which was made.
    fn reopen(&mut self, real: impl Fn(u32, u64) -> Option<(u32, PState)>) {
        self.tally.reopens += 1;
        for p in 0..self.parts.len() as u32 {
            for o in 0..self.parts[p as usize].len() as u64 {
                let st = self.reopened(p, o, real(p, o));
                self.set(p, o, st);
            }
        }
    }

    /// What a record is after a reopen, `real` being what the subscription holds.
    fn reopened(&mut self, p: u32, o: u64, real: Option<(u32, PState)>) -> St {
        let max = self.s.max_deliveries;
        let spent = |attempt: u32| max > 0 && attempt >= max;
        let ready = |attempt| St::Ready {
            attempt,
            released: None,
        };
        let st = match self.st(p, o) {
            Some(St::Leased { attempt, .. }) => {
                self.tally.leases_ended_by_reopen += 1;
                ready(attempt)
            }
            // A release from a delay is not journaled: delayed again (already due)
            // unless a checkpoint came after it.
            Some(St::Ready {
                attempt,
                released: Some(due),
            }) if real == Some((attempt, PState::Delayed { due })) => {
                self.tally.delayed_again_by_reopen += 1;
                St::Delayed { attempt, due }
            }
            Some(st) => st,
            None => St::New,
        };
        match st {
            St::Ready { attempt, .. } if spent(attempt) => St::Dead { attempt },
            st => st,
        }
    }
}

// ---------------------------------------------------------------------------------
// A pull, checked against the model.

#[derive(Debug)]
struct Pull {
    consumer: usize,
    max_records: usize,
    visibility_ms: Option<u64>,
}

/// What one real pull took: its records' attempts and lease tokens, to whom, until when.
struct Taken {
    records: BTreeMap<(u32, u64), (u32, u64)>,
    consumer: usize,
    expires: u64,
    now: u64,
    /// How many records the pull had room for.
    cap: usize,
}

impl Taken {
    fn lease(&self, (p, o): (u32, u64)) -> Option<St> {
        let &(attempt, token) = self.records.get(&(p, o))?;
        Some(St::Leased {
            attempt,
            expires: self.expires,
            consumer: self.consumer,
            token,
        })
    }
}

impl Model {
    /// Checks a real pull at `now` (its deliveries, and the heads it left) against the
    /// model, then adopts it: which deliverable records it took, and how far it scanned.
    fn pull(
        &mut self,
        req: &Pull,
        now: u64,
        got: &[Delivery],
        heads: &[u64],
    ) -> Result<(), String> {
        self.settle(now);
        let room_sub = (self.s.max_in_flight as usize).saturating_sub(self.leased(None));
        let room_mine =
            (self.s.per_consumer as usize).saturating_sub(self.leased(Some(req.consumer)));
        let cap = req.max_records.min(room_sub).min(room_mine);
        let want = cap.min(self.deliverable(now));
        if got.len() != want {
            return Err(format!(
                "pull returned {} records; {want} expected (room {cap}, deliverable {})",
                got.len(),
                self.deliverable(now)
            ));
        }
        let expires = now + req.visibility_ms.unwrap_or(self.s.visibility_ms);
        let mut taken = Taken {
            records: BTreeMap::new(),
            consumer: req.consumer,
            expires,
            now,
            cap,
        };
        for d in got {
            let (p, o) = (d.partition, d.record.offset as u64);
            let token = self.check_delivery(d, expires)?;
            if taken.records.insert((p, o), (d.attempt, token)).is_some() {
                return Err(format!("{p}/{o} delivered twice in one pull"));
            }
        }
        if heads.len() != PARTITIONS {
            return Err(format!("status shows {} partitions", heads.len()));
        }
        self.adopt_redeliveries(&taken)?;
        for (p, &to) in heads.iter().enumerate() {
            self.adopt_scan(p as u32, to, &taken)?;
        }
        self.delivered += got.len() as u64;
        self.tally.deliveries += got.len() as u64;
        self.tally.redeliveries += got.iter().filter(|d| d.attempt > 1).count() as u64;
        self.redelivered += got.iter().filter(|d| d.attempt > 1).count() as u64;
        Ok(())
    }

    /// Checks what a delivery says of itself: its lease id, its record, its lease's
    /// expiry. Returns the lease's token.
    fn check_delivery(&self, d: &Delivery, expires: u64) -> Result<u64, String> {
        let (p, o) = (d.partition, d.record.offset as u64);
        let at = RecordAt {
            partition: p,
            offset: o,
        };
        let lease = LeaseId::parse(&d.lease_id)
            .filter(|l| l.at == at && l.attempt == d.attempt)
            .ok_or_else(|| format!("lease id {} is not {p}/{o} #{}", d.lease_id, d.attempt))?;
        let serial = self
            .parts
            .get(p as usize)
            .and_then(|part| part.get(o as usize))
            .map(|r| r.serial)
            .ok_or_else(|| format!("delivered {p}/{o}, which was never produced"))?;
        if d.record.value.as_deref() != Some(serial.to_string().as_bytes()) {
            return Err(format!("delivered {p}/{o} with another record's value"));
        }
        if d.lease_expires_ms != expires {
            let until = d.lease_expires_ms;
            return Err(format!("{p}/{o} leased until {until}, not {expires}"));
        }
        Ok(lease.token)
    }

    /// Deliveries below the heads: each must be ready and first of its key.
    fn adopt_redeliveries(&mut self, taken: &Taken) -> Result<(), String> {
        let below: Vec<_> = taken
            .records
            .iter()
            .filter(|(&(p, o), _)| o < self.head[p as usize])
            .map(|(&at, &x)| (at, x))
            .collect();
        for &((p, o), (attempt, _)) in &below {
            match self.st(p, o) {
                Some(St::Ready { attempt: a, .. }) if !self.key_busy(p, o) => {
                    if attempt != a + 1 {
                        return Err(format!(
                            "{p}/{o} redelivered as attempt {attempt} after {a}"
                        ));
                    }
                }
                Some(St::Ready { .. }) => {
                    return Err(format!(
                        "{p}/{o} delivered while an earlier record of its key is held"
                    ))
                }
                Some(St::Leased { consumer: c, .. }) => {
                    return Err(format!("{p}/{o} delivered while leased to consumer {c}"))
                }
                Some(St::Done) => return Err(format!("{p}/{o} delivered after it was done")),
                other => return Err(format!("{p}/{o} delivered while {other:?}")),
            }
        }
        for ((p, o), _) in below {
            if let Some(lease) = taken.lease((p, o)) {
                self.set(p, o, lease);
            }
        }
        Ok(())
    }

    /// The head scan of partition `p` up to the real head `to`: every record it passed
    /// was delayed (scheduled later), held (its key busy) or taken.
    fn adopt_scan(&mut self, p: u32, to: u64, taken: &Taken) -> Result<(), String> {
        let (cap, now) = (taken.cap, taken.now);
        let from = self.head[p as usize];
        let latest = self.parts[p as usize].len() as u64;
        if to < from || to > latest || (cap == 0 && to != from) {
            return Err(format!(
                "partition {p}: the head went from {from} to {to} (latest {latest}, room {cap})"
            ));
        }
        for o in from..to {
            let r = &self.parts[p as usize][o as usize];
            let got = taken.lease((p, o));
            match r.deliver_at.filter(|&due| due > now) {
                Some(due) if got.is_some() => {
                    return Err(format!("{p}/{o} delivered before its time {due}"))
                }
                Some(due) => self.delay(p, o, 0, due),
                None if self.key_busy(p, o) => {
                    if got.is_some() {
                        return Err(format!(
                            "{p}/{o} delivered while an earlier record of its key is held"
                        ));
                    }
                    self.tally.held_by_key += 1;
                    self.set(
                        p,
                        o,
                        St::Ready {
                            attempt: 0,
                            released: None,
                        },
                    );
                }
                None => {
                    let lease = got.ok_or_else(|| {
                        format!("{p}/{o} was scanned past without being delivered, delayed or held")
                    })?;
                    if lease.attempt() != Some(1) {
                        return Err(format!("new record {p}/{o} delivered as {lease:?}"));
                    }
                    self.set(p, o, lease);
                }
            }
        }
        if let Some(((_, o), _)) = taken.records.range((p, to)..(p + 1, 0)).next() {
            return Err(format!("{p}/{o} delivered beyond the head {to}"));
        }
        self.head[p as usize] = to;
        Ok(())
    }

    /// Compares what `describe` shows with the model.
    fn check_status(&self, s: &SubscriptionStatus) -> Result<(), String> {
        let delayed = self.count(|st| matches!(st, St::Delayed { due, .. } if self.in_memory(due)))
            as u64
            + self
                .files
                .range(self.loaded_upto + 1..)
                .map(|(_, n)| n)
                .sum::<u64>();
        let want = [
            (
                "in_flight",
                self.leased(None) as u64,
                u64::from(s.in_flight),
            ),
            (
                "waiting",
                self.count(|st| matches!(st, St::Ready { .. })) as u64,
                s.waiting as u64,
            ),
            ("delayed", delayed, s.delayed),
            (
                "dead_letter_pending",
                self.count(|st| matches!(st, St::Dead { .. })) as u64,
                s.dead_letter_pending as u64,
            ),
            ("dead_lettered", self.dead_lettered, s.dead_lettered),
            ("acked", self.acked, s.acked),
            ("delivered", self.delivered, s.delivered),
            ("redelivered", self.redelivered, s.redelivered),
            ("backlog", self.count(|st| st != St::Done) as u64, s.backlog),
        ];
        for (name, model, real) in want {
            if model != real {
                return Err(format!("status {name}: {real}, the model says {model}"));
            }
        }
        for (p, part) in self.parts.iter().enumerate() {
            let got = s
                .partitions
                .get(p)
                .ok_or_else(|| format!("status has no partition {p}"))?;
            let latest = part.len() as u64;
            let floor = part
                .iter()
                .position(|r| r.st != St::Done)
                .map_or(latest, |o| o as u64);
            let backlog = part.iter().filter(|r| r.st != St::Done).count() as u64;
            let want = (floor, self.head[p], latest, backlog);
            let real = (got.ack_floor, got.head, got.latest, got.backlog);
            if want != real {
                return Err(format!(
                    "partition {p} (floor, head, latest, backlog): {real:?}, the model says {want:?}"
                ));
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------
// The real subscription.

fn topic(dir: &Path) -> Topic {
    let notify = Arc::new(tokio::sync::Notify::new());
    let partitions = (0..PARTITIONS as u32)
        .map(|p| {
            let config = LogConfig {
                segment_bytes: 4096,
                durability: Durability::Never,
                ..LogConfig::default()
            };
            let (log, _) = PartitionLog::open(&dir.join(format!("p{p}")), config)
                .expect("opening a partition log");
            Partition::new(p, log, Arc::clone(&notify))
        })
        .collect();
    let config = TopicConfig {
        name: "t".into(),
        partitions: PARTITIONS as u32,
        retention_ms: None,
        retention_bytes: None,
        segment_bytes: 4096,
        segment_ms: None,
        max_record_bytes: 1 << 20,
        durability: DurabilityPolicy::Never,
        flush_interval_ms: 1000,
        created_at_ms: 0,
        timestamp_type: Default::default(),
        topic_id: Default::default(),
        cleanup_policy: Default::default(),
        delete_retention_ms: 86_400_000,
        min_compaction_lag_ms: 0,
        min_cleanable_dirty_ratio: Default::default(),
        max_compaction_lag_ms: ferry_broker::config::MAX_COMPACTION_LAG_MS_DEFAULT,
    };
    Topic::new(config, partitions)
}

/// A temporary directory, in memory where the system has one: the subscription syncs
/// its journal at every ack, and the model tests its logic, not the disk.
fn temp_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::Builder::new()
            .prefix("ferry-model")
            .tempdir_in(shm)
    } else {
        tempfile::tempdir()
    };
    dir.expect("a temporary directory")
}

fn sub_config(s: &Settings) -> SubscriptionConfig {
    SubscriptionConfig {
        name: "s".into(),
        topic: "t".into(),
        mode: Mode::Queue,
        filter: None,
        visibility_timeout_ms: s.visibility_ms,
        max_deliveries: s.max_deliveries,
        dead_letter_topic: None,
        retry: RetryPolicy {
            strategy: if s.retry_ms == 0 {
                Strategy::Immediate
            } else {
                Strategy::Fixed
            },
            delay_ms: s.retry_ms,
            step_ms: None,
            max_delay_ms: 3_600_000,
            jitter: Jitter::None,
        },
        max_in_flight: s.max_in_flight,
        max_in_flight_per_consumer: s.per_consumer,
        ordering: if s.ordering {
            KeyOrdering::Key
        } else {
            KeyOrdering::None
        },
        created_at_ms: 0,
        push: None,
        paused: false,
    }
}

/// One record to produce: its key and its `ferry-deliver-at` header (name, value).
type NewOne = (Option<u8>, Option<(&'static str, String)>);

/// Appends records to partition `p`; returns the offset of the first.
fn produce(topic: &Topic, p: u32, records: &[NewOne], serial: u64, now: u64) -> u64 {
    let new: Vec<NewRecord> = records
        .iter()
        .enumerate()
        .map(|(i, (key, header))| NewRecord {
            timestamp: now as i64,
            key: key.map(|k| Bytes::from(vec![b'a' + k])),
            value: Some(Bytes::from((serial + i as u64).to_string())),
            headers: header
                .iter()
                .map(|(name, value)| RecordHeader {
                    key: Bytes::from_static(name.as_bytes()),
                    value: Some(Bytes::from(value.clone())),
                })
                .collect(),
            ..NewRecord::default()
        })
        .collect();
    let part = topic.partition(p).expect("partition");
    let mut batch = build_batch(&new, Compression::None).expect("a batch");
    let info = part.log.append(&mut batch, now).expect("append");
    part.log.wait_durable(info.end_offset).expect("durable");
    part.publish_latest();
    info.base_offset
}

fn outcome<T>(r: &Result<T, BrokerError>, count: impl Fn(&T) -> usize) -> Result<Outcome, String> {
    match r {
        Ok(x) => Ok(Outcome::Count(count(x))),
        Err(BrokerError::LeaseNotFound { ids, .. }) => Ok(Outcome::NotFound(ids.clone())),
        Err(BrokerError::LeaseAlreadyAcked { ids }) => Ok(Outcome::AlreadyAcked(ids.clone())),
        Err(BrokerError::InvalidConfig(_)) => Ok(Outcome::Refused),
        Err(e) => Err(format!("unexpected error: {e}")),
    }
}

// ---------------------------------------------------------------------------------
// Random operations.

#[derive(Debug)]
enum Op {
    Produce {
        p: u32,
        records: Vec<NewOne>,
    },
    Pull(Pull),
    Ack {
        ids: Vec<String>,
        unknown: UnknownLeases,
    },
    Nack {
        ids: Vec<String>,
        action: GiveBack,
    },
    Extend {
        ids: Vec<String>,
        timeout_ms: u64,
    },
    Advance {
        ms: u64,
    },
    Tick,
    Seek {
        p: u32,
        offset: u64,
    },
    Reopen,
}

fn pick<T: Copy>(rng: &mut SmallRng, xs: &[T]) -> T {
    xs[rng.gen_range(0..xs.len())]
}

/// Lease ids for an ack, nack or extend: live ones mostly, and stale, unknown,
/// malformed, repeated ones, and the same live lease spelled another way.
fn lease_ids(rng: &mut SmallRng, m: &Model, issued: &[String]) -> Vec<String> {
    let live: Vec<String> = m
        .all()
        .filter_map(|(p, o, st)| match st {
            St::Leased { attempt, token, .. } => Some(
                LeaseId {
                    at: RecordAt {
                        partition: p,
                        offset: o,
                    },
                    attempt,
                    token,
                }
                .to_string(),
            ),
            _ => None,
        })
        .collect();
    let n = if rng.gen_ratio(1, 40) {
        0
    } else {
        rng.gen_range(1..=4)
    };
    let mut ids: Vec<String> = Vec::new();
    for _ in 0..n {
        let id = match rng.gen_range(0..100) {
            0..=59 if !live.is_empty() => live[rng.gen_range(0..live.len())].clone(),
            60..=74 if !issued.is_empty() => issued[rng.gen_range(0..issued.len())].clone(),
            75..=84 if !ids.is_empty() => ids[rng.gen_range(0..ids.len())].clone(),
            85..=89 if !live.is_empty() => {
                // The offset with a leading zero: the same lease, another string.
                let id = &live[rng.gen_range(0..live.len())];
                let (p, rest) = id.split_once('-').unwrap_or(("0", id));
                format!("{p}-0{rest}")
            }
            90..=94 => pick(rng, &["nope", "1-2-3", "0-1-1-zz", ""]).to_string(),
            _ => {
                let p = rng.gen_range(0..=PARTITIONS as u32);
                let len = m.parts.get(p as usize).map_or(3, |x| x.len() as u64 + 2);
                let at = RecordAt {
                    partition: p,
                    offset: rng.gen_range(0..len.max(1)),
                };
                LeaseId {
                    at,
                    attempt: rng.gen_range(1..4),
                    token: rng.gen(),
                }
                .to_string()
            }
        };
        ids.push(id);
    }
    ids
}

fn records(rng: &mut SmallRng, now: u64) -> Vec<NewOne> {
    // Now and then a burst, so that a scan reads a head in several windows.
    let n = if rng.gen_ratio(1, 25) {
        80
    } else {
        rng.gen_range(1..=4)
    };
    (0..n)
        .map(|_| {
            let key = rng.gen_bool(0.6).then(|| rng.gen_range(0..3u8));
            let name = pick(
                rng,
                &[HEADER_DELIVER_AT, HEADER_DELIVER_AT, "Ferry-Deliver-At"],
            );
            let header = match rng.gen_range(0..100) {
                0..=69 => None,
                70..=74 => Some((name, "soon".to_string())),
                75..=79 => Some((name, (now - 1000).to_string())),
                _ => {
                    let ahead = pick(rng, &[0, 1, 300, 3_000, 70_000, 150_000]);
                    Some((name, format!(" {} ", now + ahead)))
                }
            };
            (key, header)
        })
        .collect()
}

fn op(rng: &mut SmallRng, m: &Model, issued: &[String], now: u64) -> Op {
    match rng.gen_range(0..100) {
        0..=19 => Op::Produce {
            p: rng.gen_range(0..PARTITIONS as u32),
            records: records(rng, now),
        },
        20..=44 => Op::Pull(Pull {
            consumer: rng.gen_range(0..CONSUMERS),
            max_records: rng.gen_range(1..=6),
            visibility_ms: pick(rng, &[None, None, Some(100), Some(1_000), Some(5_000)]),
        }),
        45..=59 => Op::Ack {
            ids: lease_ids(rng, m, issued),
            unknown: pick(rng, &[UnknownLeases::Refuse, UnknownLeases::Skip]),
        },
        60..=67 => Op::Nack {
            ids: lease_ids(rng, m, issued),
            action: pick(
                rng,
                &[
                    GiveBack::Retry { delay_ms: None },
                    GiveBack::Retry { delay_ms: Some(0) },
                    GiveBack::Retry {
                        delay_ms: Some(500),
                    },
                    GiveBack::Retry {
                        delay_ms: Some(100_000),
                    },
                    GiveBack::DeadLetter,
                ],
            ),
        },
        68..=72 => Op::Extend {
            ids: lease_ids(rng, m, issued),
            timeout_ms: pick(rng, &[100, 1_000, 10_000]),
        },
        73..=84 => Op::Advance {
            ms: match (rng.gen_range(0..12), m.next_deadline(now)) {
                // To the next lease expiry or due time, or just before it: the edges.
                (0, Some(at)) => at - now,
                (1, Some(at)) => at - now - 1,
                (0..=6, _) => rng.gen_range(0..300),
                (7..=9, _) => rng.gen_range(300..6_000),
                _ => rng.gen_range(20_000..130_000),
            },
        },
        85..=94 => Op::Tick,
        95..=97 => {
            let p = rng.gen_range(0..PARTITIONS as u32);
            let latest = m.parts[p as usize].len() as u64;
            Op::Seek {
                p,
                offset: rng.gen_range(0..=latest),
            }
        }
        _ => Op::Reopen,
    }
}

// ---------------------------------------------------------------------------------
// One run.

/// Prints the steps of a run that panicked (a broken invariant inside the
/// subscription, say), so that it can be read without replaying.
struct Trail {
    seed: u64,
    steps: Vec<String>,
}

impl Drop for Trail {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "seed {} panicked after these steps:\n{}",
                self.seed,
                self.steps.join("\n")
            );
        }
    }
}

struct Run {
    rng: SmallRng,
    dir: tempfile::TempDir,
    topic: Topic,
    sub: Subscription,
    config: SubscriptionConfig,
    model: Model,
    now: u64,
    serial: u64,
    issued: Vec<String>,
}

impl Run {
    fn new(seed: u64) -> Run {
        let mut rng = SmallRng::seed_from_u64(seed);
        let s = Settings {
            ordering: rng.gen_bool(0.5),
            max_deliveries: pick(&mut rng, &[0, 2, 3, 5]),
            retry_ms: pick(&mut rng, &[0, 100, 2_000, 90_000]),
            visibility_ms: pick(&mut rng, &[500, 2_000, 30_000]),
            max_in_flight: rng.gen_range(3..=8),
            per_consumer: 0,
        };
        let s = Settings {
            per_consumer: rng.gen_range(1..=s.max_in_flight),
            ..s
        };
        let dir = temp_dir();
        let topic = topic(dir.path());
        let now = EPOCH_MS + rng.gen_range(0..BUCKET_MS);
        let mut model = Model {
            s,
            tally: Tally::default(),
            parts: vec![Vec::new(); PARTITIONS],
            head: vec![0; PARTITIONS],
            loaded_upto: bucket_of(now + BUCKET_MS),
            files: BTreeMap::new(),
            acked: 0,
            dead_lettered: 0,
            delivered: 0,
            redelivered: 0,
        };
        let mut serial = 0;
        let mut starts = Vec::new();
        for p in 0..PARTITIONS as u32 {
            let before: Vec<NewOne> = (0..rng.gen_range(0..4)).map(|_| (None, None)).collect();
            if !before.is_empty() {
                produce(&topic, p, &before, serial, now);
            }
            let part = &mut model.parts[p as usize];
            for _ in &before {
                part.push(Rec {
                    key: None,
                    deliver_at: None,
                    serial,
                    st: St::New,
                });
                serial += 1;
            }
            let start = if rng.gen_bool(0.5) {
                0
            } else {
                part.len() as u64
            };
            starts.push((p, start));
            model.seek(p, start);
        }
        let config = sub_config(&s);
        let sub = Subscription::create(&dir.path().join("sub"), config.clone(), &starts, now)
            .expect("creating the subscription");
        sub.seed_jitter(seed);
        Run {
            rng,
            dir,
            topic,
            sub,
            config,
            model,
            now,
            serial,
            issued: Vec::new(),
        }
    }

    /// Applies one operation to both; returns what happened, for the trail.
    fn step(&mut self, op: &Op) -> Result<String, String> {
        let now = self.now;
        let m = &mut self.model;
        match op {
            Op::Produce { p, records } => self.produce(*p, records),
            Op::Pull(req) => self.pull(req),
            Op::Ack { ids, unknown } => {
                let real = outcome(
                    &self.sub.ack(ids, *unknown, Completion::Durable, now),
                    |n| *n,
                )?;
                agree(real, m.ack(ids, *unknown, now))
            }
            Op::Nack { ids, action } => {
                let real = self.sub.nack(ids, *action, Some(Arc::from("no")), now);
                agree(outcome(&real, |n| *n)?, m.nack(ids, *action, now))
            }
            Op::Extend { ids, timeout_ms } => {
                let real = self.sub.extend(ids, *timeout_ms, now);
                if let Ok(expires) = real {
                    if expires != now + timeout_ms {
                        return Err(format!("extended to {expires}, not {}", now + timeout_ms));
                    }
                }
                // A successful extend answers its expiry, not a count.
                let model = match m.extend(ids, *timeout_ms, now) {
                    Outcome::Count(_) => Outcome::Count(0),
                    other => other,
                };
                agree(outcome(&real, |_| 0)?, model)
            }
            Op::Advance { ms } => {
                self.now += ms;
                Ok(String::new())
            }
            Op::Tick => self.tick(),
            Op::Seek { p, offset } => {
                self.sub
                    .seek(&[(*p, *offset)])
                    .map_err(|e| format!("seek failed: {e}"))?;
                m.seek(*p, *offset);
                Ok(String::new())
            }
            Op::Reopen => self.reopen(),
        }
    }

    fn produce(&mut self, p: u32, records: &[NewOne]) -> Result<String, String> {
        let base = produce(&self.topic, p, records, self.serial, self.now);
        let part = &mut self.model.parts[p as usize];
        if base != part.len() as u64 {
            return Err(format!("appended at {base}, the model has {}", part.len()));
        }
        for (key, header) in records {
            let deliver_at = header.as_ref().and_then(|(_, v)| v.trim().parse().ok());
            part.push(Rec {
                key: *key,
                deliver_at,
                serial: self.serial,
                st: St::New,
            });
            self.serial += 1;
        }
        Ok(format!("at {base}"))
    }

    fn pull(&mut self, req: &Pull) -> Result<String, String> {
        let real = PullRequest {
            consumer: Arc::from(format!("c{}", req.consumer)),
            max_records: req.max_records,
            wait: Duration::ZERO,
            visibility_timeout_ms: req.visibility_ms,
        };
        let got = self
            .sub
            .pull_once(&self.topic, &real, self.now)
            .map_err(|e| format!("pull failed: {e}"))?;
        let status = self.sub.status_now(&self.topic);
        let heads: Vec<u64> = status.partitions.iter().map(|x| x.head).collect();
        self.model.pull(req, self.now, &got, &heads)?;
        self.issued.extend(got.iter().map(|d| d.lease_id.clone()));
        let names: Vec<String> = got
            .iter()
            .map(|d| format!("{}/{}#{}", d.partition, d.record.offset, d.attempt))
            .collect();
        Ok(format!("{names:?}, heads {heads:?}"))
    }

    fn reopen(&mut self) -> Result<String, String> {
        self.sub.close();
        let dir = self.dir.path().join("sub");
        self.sub = Subscription::open(&dir, self.config.clone(), None, self.now)
            .map_err(|e| format!("reopening failed: {e}"))?;
        let sub = &self.sub;
        self.model.reopen(|p, o| sub.pending_record(p, o));
        Ok(String::new())
    }

    /// A tick: its records out of deliveries must be the model's; some of them are then
    /// marked written to the dead-letter topic (with a record that is not dead, too).
    fn tick(&mut self) -> Result<String, String> {
        let real: Vec<DeadLetterCandidate> = self
            .sub
            .tick(self.now)
            .map_err(|e| format!("tick failed: {e}"))?;
        let real: Vec<(RecordAt, u32)> = real.iter().map(|c| (c.at, c.attempts)).collect();
        let want = self.model.tick(self.now);
        if real != want {
            return Err(format!("tick handed out {real:?}, the model says {want:?}"));
        }
        let mut done: Vec<RecordAt> = real
            .iter()
            .map(|(at, _)| *at)
            .filter(|_| self.rng.gen_bool(0.7))
            .collect();
        if self.rng.gen_bool(0.2) {
            let p = self.rng.gen_range(0..PARTITIONS as u32);
            let len = self.model.parts[p as usize].len() as u64;
            done.push(RecordAt {
                partition: p,
                offset: self.rng.gen_range(0..len + 1),
            });
        }
        if !done.is_empty() {
            self.sub
                .dead_lettered(&done)
                .map_err(|e| format!("dead_lettered failed: {e}"))?;
            self.model.dead_lettered(&done);
        }
        Ok(format!("dead {real:?}, written {done:?}"))
    }
}

fn agree(real: Outcome, model: Outcome) -> Result<String, String> {
    if real == model {
        Ok(format!("{real:?}"))
    } else {
        Err(format!("answered {real:?}, the model says {model:?}"))
    }
}

fn run(seed: u64, steps: u64) -> Result<Tally, String> {
    let mut trail = Trail {
        seed,
        steps: Vec::new(),
    };
    let mut r = Run::new(seed);
    trail.steps.push(format!("settings {:?}", r.model.s));
    for i in 0..steps {
        let op = op(&mut r.rng, &r.model, &r.issued, r.now);
        let line = format!("{i} @{}: {op:?}", r.now - EPOCH_MS);
        let result = r.step(&op).and_then(|what| {
            let status = r.sub.status_now(&r.topic);
            r.model.check_status(&status).map(|()| what)
        });
        match result {
            Ok(what) => trail.steps.push(format!("{line} -> {what}")),
            Err(e) => {
                trail.steps.push(format!("{line}\n  FAILED: {e}"));
                let steps = std::mem::take(&mut trail.steps);
                return Err(format!("step {i}: {e}\n{}", steps.join("\n")));
            }
        }
    }
    Ok(r.model.tally)
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    match v.trim().parse() {
        Ok(n) => Some(n),
        Err(_) => panic!("{name}={v:?} is not a number"),
    }
}

#[test]
fn a_subscription_agrees_with_a_plain_model() {
    let steps = env_u64("FERRY_MODEL_STEPS").unwrap_or(STEPS_DEFAULT);
    let seeds: Vec<u64> = match env_u64("FERRY_MODEL_SEED") {
        Some(seed) => vec![seed],
        None => (0..env_u64("FERRY_MODEL_SEEDS").unwrap_or(SEEDS_DEFAULT)).collect(),
    };
    let all = seeds.len() as u64 >= SEEDS_DEFAULT && steps >= STEPS_DEFAULT;
    let mut tally = Tally::default();
    for seed in seeds {
        match run(seed, steps) {
            Ok(t) => tally.add(&t),
            Err(report) => panic!(
                "seed {seed} failed at {report}\nreplay: FERRY_MODEL_SEED={seed} cargo test -p ferry-broker --test subscription_model"
            ),
        }
    }
    eprintln!("{tally:#?}");
    if all {
        assert!(
            tally.fields().iter().all(|&n| n > 0),
            "the runs no longer take every path: {tally:#?}"
        );
    }
}
