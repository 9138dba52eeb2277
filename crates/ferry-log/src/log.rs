//! The log of one partition: an ordered set of segments, of which the last is active.
//!
//! # Durability and group commit
//!
//! With [`Durability::Always`] an append is acknowledged only once it is on disk. Many
//! appenders share one `fdatasync`: whoever finds no sync running becomes the leader,
//! captures the current end of the log and syncs; appenders that arrive meanwhile wait
//! and are covered by the next sync. So N concurrent writers cost about one sync per
//! round, not N. Readers see only what is durable under `Always`, so a reader never
//! sees a record that a crash could take back; under `Interval` and `Never` readers
//! see every append at once.
//!
//! # Failures
//!
//! A write refused for lack of space (ENOSPC, EDQUOT) is undone and reported; the log
//! stays usable. Any other failed write, and any failed sync (of a segment, before a
//! roll or by group commit, or of the folder), stops the log: the kernel may have
//! dropped the pages and reports that only once, so a later sync of the same file
//! could succeed without them. From then on appends fail with [`LogError::Stopped`],
//! waiters are told so, and nothing more is acknowledged or made readable until a
//! restart recovers the log from what is really on disk. The first failure is logged.
//!
//! Syncs of the log never run at once: the group-commit leader and a roll each claim
//! `sync_state.syncing` first, so that one sync cannot consume the error another needed
//! to see.
//!
//! # Locks
//!
//! The order is `inner`, then `sync_state`; `failure` is taken last and alone. A roll
//! holds `inner` while it waits for a running group commit to end; the leader never
//! takes `inner` while it syncs (it captures the active file before it claims the sync).
//!
//! # Log start offset
//!
//! The first readable offset is the larger of the first segment's base offset and the
//! log start offset, which [`PartitionLog::delete_records`] moves forward (Kafka's
//! DeleteRecords). It is kept in the partition folder (see [`crate::start`]) before the
//! caller is answered, so it survives `kill -9`; segments whose records all lie below it
//! are deleted at once, and, should a crash come between, by the next retention check.
//!
//! # Invariants
//!
//! After every change (open, append, roll, retention, deletion of old segments) the log
//! checks, under `debug_assert!` so that every test and fuzz run does and release builds
//! do not, what [`PartitionLog::check_invariants`] lists: there is an active segment;
//! segments are keyed by their base offset and their offsets increase without overlap
//! from one to the next; the log's next offset is the active segment's; nothing beyond
//! it is synced or visible; the log start offset is not past the end; the earliest
//! offset is visible; open and aborted transactions lie below the end. Each segment
//! checks its own
//! (see `Segment::check_invariants`), and indexes check that their keys increase.

use crate::batch::{self, DecodeLimits};
use crate::error::{LogError, Result};
use crate::fault;
use crate::metrics::{LogCounters, LogMetrics};
use crate::producers::{Producers, SequenceCheck};
use crate::segment::{self, Cut, FirstBatch, Segment};
use crate::start;
use crate::sync::{lock, wait};
use crate::txn::{TxnIndex, TRANSACTIONAL_FLAG_FILE};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

pub mod compaction;
mod removal;
mod transactions;

/// When an append is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// After `fdatasync`; concurrent appends share one sync.
    Always,
    /// At once; a background task syncs every `ms` milliseconds.
    Interval { ms: u64 },
    /// At once; the operating system writes back when it likes.
    Never,
}

/// Settings of one partition log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll the active segment when the next batch would take it past this size.
    pub segment_bytes: u64,
    /// Roll the active segment when its first batch is older than this.
    pub segment_ms: Option<u64>,
    /// Bytes of batches between two offset index entries.
    pub index_interval_bytes: u64,
    /// Largest batch accepted (Kafka's `max.message.bytes`).
    pub max_batch_bytes: usize,
    pub durability: Durability,
    /// Stamp every appended batch with the append time (Kafka's LogAppendTime): the
    /// timestamp-type attribute bit set and `max_timestamp` the time of the append,
    /// which every record of the batch then takes. Off: records keep their producer's
    /// timestamps (CreateTime).
    pub log_append_time: bool,
}

/// The partition leader epoch of every batch appended: one node leads every partition
/// and its epoch never changes.
pub const LEADER_EPOCH: i32 = 0;

/// Largest segment: index positions are 32-bit.
pub const SEGMENT_BYTES_MAX: u64 = 1 << 31;

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 128 * 1024 * 1024,
            segment_ms: Some(7 * 24 * 3600 * 1000),
            index_interval_bytes: 4096,
            max_batch_bytes: 1024 * 1024 + 12,
            durability: Durability::Always,
            log_append_time: false,
        }
    }
}

/// Where an appended batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: u64,
    pub last_offset: u64,
    /// One past the last offset; wait for this with [`PartitionLog::wait_durable`].
    pub end_offset: u64,
    /// The batch was a producer's retry of one already stored at these offsets;
    /// nothing was written.
    pub duplicate: bool,
    /// The time the batch was stamped with, in milliseconds since the epoch, when the
    /// log stamps appends ([`LogConfig::log_append_time`]) and the batch was written.
    pub log_append_time_ms: Option<i64>,
}

impl AppendInfo {
    fn at(base_offset: u64, count: u64, duplicate: bool) -> Self {
        AppendInfo {
            base_offset,
            last_offset: base_offset + count - 1,
            end_offset: base_offset + count,
            duplicate,
            log_append_time_ms: None,
        }
    }
}

/// Raw batches read from the log, with the partition's bounds at the time of the read.
#[derive(Debug, Clone)]
pub struct ReadResult {
    pub batches: Bytes,
    /// First offset still stored.
    pub earliest: u64,
    /// One past the last readable offset (Kafka's high watermark).
    pub latest: u64,
}

/// Size and bounds of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogStats {
    pub earliest: u64,
    pub latest: u64,
    pub size_bytes: u64,
    pub segments: usize,
}

struct Inner {
    segments: BTreeMap<u64, Segment>,
    next_offset: u64,
    config: LogConfig,
    closed: bool,
    producers: Producers,
    /// Offsets below this are gone for readers even while a segment still holds them
    /// (see the module's "Log start offset").
    log_start: u64,
    /// Open and aborted transactions (see [`crate::txn`]).
    txns: TxnIndex,
    /// The partition's folder holds [`TRANSACTIONAL_FLAG_FILE`].
    transactional: bool,
}

impl Inner {
    /// The first readable offset.
    fn earliest(&self) -> u64 {
        self.segments
            .values()
            .next()
            .map_or(0, |s| s.base_offset)
            .max(self.log_start)
    }
}

struct SyncState {
    /// A sync of this log (group commit or roll) is running.
    syncing: bool,
}

pub struct PartitionLog {
    dir: PathBuf,
    inner: Mutex<Inner>,
    sync_state: Mutex<SyncState>,
    sync_done: Condvar,
    /// Why the log stopped taking writes (see the module's "Failures").
    failure: Mutex<Option<String>>,
    /// Offsets below this are on disk.
    synced: AtomicU64,
    /// Offsets below this are readable.
    visible: AtomicU64,
    /// fdatasync calls made by group commit (for benchmarks and metrics).
    syncs: AtomicU64,
    /// Some transaction may be open (see [`crate::txn`]): false means the last stable
    /// offset is the readable end, read without a lock.
    txns_open: AtomicBool,
    /// The partition ever took a transactional batch (its folder has
    /// [`TRANSACTIONAL_FLAG_FILE`]): false means no aborted transaction to list, known
    /// without a lock (librdkafka consumers read `read_committed` by default).
    ever_transactional: AtomicBool,
    /// Records and bytes in and out, for `/metrics`.
    pub counters: LogCounters,
    /// Shared histograms, when the broker measures (see [`PartitionLog::set_metrics`]).
    metrics: std::sync::OnceLock<LogMetrics>,
    /// Held while segments are chosen for deletion and their files unlinked, and by
    /// [`PartitionLog::close`]: once closed, the log removes nothing, so a log kept by
    /// a task after its topic was deleted never unlinks files of a topic made again in
    /// the same folder.
    removing: Mutex<()>,
}

fn sync_dir(dir: &Path) -> Result<()> {
    fault::sync_dir(dir)
        .map_err(|e| LogError::io(format!("syncing directory {}", dir.display()), e))
}

/// Checks an idempotent producer's sequence: `Some(base offset)` when the batch is a
/// retry of one already stored there, `None` when it is to be appended.
fn check_sequence(producers: &Producers, header: &batch::BatchHeader) -> Result<Option<u64>> {
    let (producer_id, epoch) = (header.producer_id, header.producer_epoch);
    match producers.check(
        producer_id,
        epoch,
        header.base_sequence,
        header.record_count,
    ) {
        SequenceCheck::Append => Ok(None),
        SequenceCheck::Duplicate { base_offset } => Ok(Some(base_offset)),
        SequenceCheck::StaleEpoch { current } => Err(LogError::InvalidProducerEpoch {
            producer_id,
            epoch,
            current,
        }),
        SequenceCheck::OutOfOrder { expected, got } => Err(LogError::OutOfOrderSequence {
            producer_id,
            expected,
            got,
        }),
    }
}

/// The base offsets of the segments in `dir`, in order; half-written index files are
/// removed on the way.
fn segment_bases(dir: &Path) -> Result<Vec<u64>> {
    let mut bases = Vec::new();
    let entries = std::fs::read_dir(dir)
        .map_err(|e| LogError::io(format!("listing {}", dir.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| LogError::io("listing partition", e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(base) = segment::parse_log_name(&name) {
            bases.push(base);
        } else if name.ends_with(".tmp-index") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

impl PartitionLog {
    /// Opens (or creates) the log in `dir`, recovering the active segment.
    pub fn open(dir: &Path, config: LogConfig) -> Result<(PartitionLog, Vec<Cut>)> {
        std::fs::create_dir_all(dir)
            .map_err(|e| LogError::io(format!("creating {}", dir.display()), e))?;
        compaction::recover_swaps(dir)?;
        let bases = segment_bases(dir)?;
        let mut segments = BTreeMap::new();
        let mut cuts = Vec::new();
        let max_batch = config.max_batch_bytes.max(batch::BATCH_HEADER_BYTES);
        // Recovery reads batches up to the hard limit, not the topic's current limit,
        // which may have been lowered since they were written.
        let scan_limit = max_batch.max(64 * 1024 * 1024);
        if bases.is_empty() {
            segments.insert(0, Segment::create(dir, 0)?);
            sync_dir(dir)?;
        }
        let last = bases.last().copied();
        let mut producers = Producers::default();
        for base in bases {
            let (seg, cut) = if Some(base) == last {
                let (seg, cut, headers) =
                    Segment::recover(dir, base, config.index_interval_bytes, scan_limit)?;
                for h in headers {
                    producers.record(
                        h.producer_id,
                        h.producer_epoch,
                        h.base_sequence,
                        h.record_count,
                        h.base_offset as u64,
                        h.max_timestamp,
                    );
                }
                (seg, cut)
            } else {
                Segment::open_sealed(dir, base, config.index_interval_bytes, scan_limit)?
            };
            cuts.extend(cut);
            segments.insert(base, seg);
        }
        let next_offset = segments.values().next_back().map_or(0, |s| s.next_offset);
        let mut log_start = start::load(dir)?;
        if log_start > next_offset {
            // Only damage or a lost tail can do this: the start is made durable only
            // after everything below it is.
            tracing::warn!(dir = %dir.display(), log_start, next_offset, "The log start offset is past the end of the log; starting at the end.");
            log_start = next_offset;
        }
        let transactional = dir.join(TRANSACTIONAL_FLAG_FILE).exists();
        let mut txns = TxnIndex::default();
        if transactional {
            for seg in segments.values() {
                for (h, marker) in seg.transactional_batches(scan_limit)? {
                    let base = h.base_offset as u64;
                    match (h.is_control(), marker) {
                        (true, Some(commit)) => txns.marker(h.producer_id, base, commit),
                        (true, None) => {}
                        (false, _) => txns.data(h.producer_id, base),
                    }
                }
            }
            txns.settle(next_offset);
        }
        let txns_open = !txns.is_empty();
        let log = PartitionLog {
            dir: dir.to_path_buf(),
            inner: Mutex::new(Inner {
                segments,
                next_offset,
                config,
                closed: false,
                producers,
                log_start,
                txns,
                transactional,
            }),
            sync_state: Mutex::new(SyncState { syncing: false }),
            sync_done: Condvar::new(),
            failure: Mutex::new(None),
            synced: AtomicU64::new(next_offset),
            visible: AtomicU64::new(next_offset),
            syncs: AtomicU64::new(0),
            txns_open: AtomicBool::new(txns_open),
            ever_transactional: AtomicBool::new(transactional),
            counters: LogCounters::default(),
            metrics: std::sync::OnceLock::new(),
            removing: Mutex::new(()),
        };
        debug_assert_eq!(log.check_invariants(), Ok(()));
        Ok((log, cuts))
    }

    /// Checks what must hold after every change (see the module's "Invariants"); the
    /// log runs this under `debug_assert!` itself. `Err` names the first broken one.
    pub fn check_invariants(&self) -> std::result::Result<(), String> {
        self.invariants(&lock(&self.inner))
    }

    fn invariants(&self, inner: &Inner) -> std::result::Result<(), String> {
        let Some(active) = inner.segments.values().next_back() else {
            return Err("the log has no active segment".into());
        };
        let mut prev_end: Option<u64> = None;
        for (base, seg) in &inner.segments {
            if *base != seg.base_offset {
                return Err(format!(
                    "segment keyed {base} has base offset {}",
                    seg.base_offset
                ));
            }
            if let Some(end) = prev_end {
                if seg.base_offset < end {
                    return Err(format!(
                        "segment {} begins before the previous one ends ({end})",
                        seg.base_offset
                    ));
                }
            }
            seg.check_invariants()?;
            prev_end = Some(seg.next_offset);
        }
        let end = inner.next_offset;
        if active.next_offset != end {
            return Err(format!(
                "the log's next offset {end} is not the active segment's {}",
                active.next_offset
            ));
        }
        // Under `Always` what is visible is synced and under the other policies what is
        // synced is visible; the policy can change while running, so only the bound by
        // the end holds for both at all times.
        let synced = self.synced.load(Ordering::Acquire);
        let visible = self.visible.load(Ordering::Acquire);
        if synced > end || visible > end {
            return Err(format!(
                "synced {synced} or visible {visible} is past the end {end}"
            ));
        }
        if inner.log_start > end {
            return Err(format!(
                "the log start offset {} is past the end {end}",
                inner.log_start
            ));
        }
        inner.txns.check(end)?;
        let earliest = inner.earliest();
        if earliest > visible {
            return Err(format!(
                "the earliest offset {earliest} is past the visible end {visible}"
            ));
        }
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> LogConfig {
        lock(&self.inner).config
    }

    /// Changes settings; they apply from the next append.
    pub fn set_config(&self, config: LogConfig) {
        lock(&self.inner).config = config;
    }

    /// Appends one batch (CRC, length and codec checked) and assigns its offsets. Under
    /// [`Durability::Always`] the caller must then [`wait_durable`](Self::wait_durable)
    /// before acknowledging.
    pub fn append(&self, batch: &mut [u8], now_ms: u64) -> Result<AppendInfo> {
        match self.append_admitted(batch, now_ms, |_| Ok::<(), std::convert::Infallible>(()))? {
            Ok(info) => Ok(info),
            Err(never) => match never {},
        }
    }

    /// As [`append`](Self::append), with `admit` deciding, under the log's lock and
    /// after a retried batch is recognised, whether the batch may go in: a refusal is
    /// returned as it is and nothing is written. Used for transactional batches, so that
    /// the transaction's state is checked in the same step as the append (a marker
    /// appended after the check comes after the batch).
    pub fn append_admitted<E>(
        &self,
        batch: &mut [u8],
        now_ms: u64,
        admit: impl FnOnce(&batch::BatchHeader) -> std::result::Result<(), E>,
    ) -> Result<std::result::Result<AppendInfo, E>> {
        let started = self.metrics.get().map(|_| Instant::now());
        let mut admit = Some(admit);
        let mut refused = None;
        let mut inner = lock(&self.inner);
        let result = {
            let mut hook = |h: &batch::BatchHeader| match admit.take().map(|f| f(h)) {
                Some(Err(e)) => {
                    refused = Some(e);
                    false
                }
                _ => true,
            };
            self.append_locked(&mut inner, batch, now_ms, &mut hook)
        };
        debug_assert_eq!(self.invariants(&inner), Ok(()));
        drop(inner);
        let result = match (result, refused) {
            (Ok(None), Some(e)) => return Ok(Err(e)),
            (Ok(Some(info)), _) => Ok(info),
            (Ok(None), None) => unreachable!("a batch not admitted without a refusal"),
            (Err(e), _) => Err(e),
        };
        if let Ok(info) = &result {
            if !info.duplicate {
                let c = &self.counters;
                c.records_in
                    .fetch_add(info.end_offset - info.base_offset, Ordering::Relaxed);
                c.bytes_in.fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
        }
        if let (Some(m), Some(t)) = (self.metrics.get(), started) {
            m.append_seconds.observe(t.elapsed().as_secs_f64());
        }
        result.map(Ok)
    }

    /// Measures this log's appends and syncs into `metrics` from now on (once; a
    /// second call changes nothing).
    pub fn set_metrics(&self, metrics: LogMetrics) {
        let _ = self.metrics.set(metrics);
    }

    /// Times one `fdatasync` of a segment into the sync histogram.
    fn timed_sync(&self, file: &File, path: &Path) -> std::io::Result<()> {
        let started = Instant::now();
        let result = fault::sync_data(file, path);
        if let Some(m) = self.metrics.get() {
            m.sync_seconds.observe(started.elapsed().as_secs_f64());
        }
        result
    }

    /// Appends under the lock; `Ok(None)` when `admit` refused the batch.
    fn append_locked(
        &self,
        inner: &mut Inner,
        batch: &mut [u8],
        now_ms: u64,
        admit: &mut dyn FnMut(&batch::BatchHeader) -> bool,
    ) -> Result<Option<AppendInfo>> {
        let config = inner.config;
        if batch.len() > config.max_batch_bytes {
            return Err(LogError::BatchTooLarge {
                size: batch.len(),
                max: config.max_batch_bytes,
            });
        }
        let mut header = batch::validate_incoming(batch, config.max_batch_bytes)?;
        // Every batch reaching the log passed `batch::check_batch` (client batches) or was
        // built by `batch::build_batch`; in debug builds the full check runs again here.
        debug_assert_eq!(
            batch::check_batch(
                &bytes::Bytes::copy_from_slice(batch),
                config.max_batch_bytes,
                &DecodeLimits::default()
            )
            .map(|c| c.max_timestamp == c.header.max_timestamp),
            Ok(true),
            "a batch that fails the full check reached the log"
        );
        if inner.closed {
            return Err(LogError::Closed);
        }
        self.check_running()?;
        let count = header.last_offset_delta as u64 + 1;
        if let Some(stored) = check_sequence(&inner.producers, &header)? {
            return Ok(Some(AppendInfo::at(stored, count, true)));
        }
        if !admit(&header) {
            return Ok(None);
        }
        if header.is_transactional() && !inner.transactional {
            self.mark_transactional()?;
            inner.transactional = true;
            self.ever_transactional.store(true, Ordering::Release);
        }
        let base = inner.next_offset;
        self.maybe_roll(inner, batch.len() as u64, count, now_ms)?;
        batch::set_base_offset(batch, base as i64);
        header.base_offset = base as i64;
        // One node, one leader epoch: what a producer put there is replaced, as a Kafka
        // leader stamps its epoch (outside the CRC, like the base offset).
        batch::set_partition_leader_epoch(batch, LEADER_EPOCH);
        header.partition_leader_epoch = LEADER_EPOCH;
        let mut stamped = None;
        if config.log_append_time {
            let at = i64::try_from(now_ms).unwrap_or(i64::MAX);
            batch::set_log_append_time(batch, at);
            header = batch::BatchHeader::parse(batch)?;
            debug_assert!(header.is_log_append_time() && header.max_timestamp == at);
            debug_assert_eq!(batch::verify_crc(batch), Ok(()));
            stamped = Some(at);
        }
        let active = inner
            .segments
            .values_mut()
            .next_back()
            .expect("a log always has an active segment");
        if let Err(e) = active.append(batch, &header, config.index_interval_bytes, now_ms) {
            // Only a write refused for space was surely undone; anything else may have
            // left the file in an unknown state.
            if !matches!(e, LogError::DiskFull { .. }) {
                return Err(self.stop(e.to_string()));
            }
            return Err(e);
        }
        inner.next_offset = base + count;
        inner.producers.record(
            header.producer_id,
            header.producer_epoch,
            header.base_sequence,
            header.record_count,
            base,
            header.max_timestamp,
        );
        if header.is_transactional() {
            if header.is_control() {
                let commit = batch::control_batch_commits(&Bytes::copy_from_slice(batch));
                debug_assert!(commit.is_some(), "a control batch without a marker");
                if let Some(commit) = commit {
                    inner.txns.marker(header.producer_id, base, commit);
                }
            } else {
                inner.txns.data(header.producer_id, base);
            }
        }
        if config.durability != Durability::Always {
            self.visible.fetch_max(inner.next_offset, Ordering::AcqRel);
        }
        if header.is_transactional() || self.txns_open.load(Ordering::Relaxed) {
            inner.txns.settle(self.latest());
            self.txns_open
                .store(!inner.txns.is_empty(), Ordering::Release);
        }
        Ok(Some(AppendInfo {
            log_append_time_ms: stamped,
            ..AppendInfo::at(base, count, false)
        }))
    }

    fn maybe_roll(
        &self,
        inner: &mut Inner,
        batch_bytes: u64,
        count: u64,
        now_ms: u64,
    ) -> Result<()> {
        let config = inner.config;
        let segment_bytes = config.segment_bytes.min(SEGMENT_BYTES_MAX);
        let next_offset = inner.next_offset;
        let active = inner
            .segments
            .values_mut()
            .next_back()
            .expect("a log always has an active segment");
        if active.size == 0 {
            return Ok(());
        }
        let full = active.size + batch_bytes > segment_bytes;
        let old = match (config.segment_ms, active.first_append_ms) {
            (Some(ms), Some(first)) => now_ms.saturating_sub(first) >= ms,
            _ => false,
        };
        let offsets_exhausted = next_offset + count - active.base_offset > u32::MAX as u64;
        if !(full || old || offsets_exhausted) {
            return Ok(());
        }
        // Claim the sync, so that no group commit syncs the same file at once.
        {
            let mut st = lock(&self.sync_state);
            while st.syncing {
                st = wait(&self.sync_done, st);
            }
            st.syncing = true;
        }
        let synced = self.timed_sync(&active.file, &active.path);
        let stopped = synced.map_err(|e| {
            self.stop(format!(
                "fdatasync of {} before rolling failed: {e}",
                active.path.display()
            ))
        });
        {
            let mut st = lock(&self.sync_state);
            st.syncing = false;
            if stopped.is_ok() {
                self.synced.fetch_max(next_offset, Ordering::AcqRel);
                if config.durability == Durability::Always {
                    self.visible.fetch_max(next_offset, Ordering::AcqRel);
                }
            }
            self.sync_done.notify_all();
        }
        stopped?;
        // Index files refused for space fail this append; the segment stays active with
        // its indexes in memory and the next append tries again. Any other failure of
        // theirs stops the log like a failed sync of the segment.
        match active.write_indexes() {
            Err(e @ LogError::DiskFull { .. }) => return Err(e),
            Err(e) => return Err(self.stop(e.to_string())),
            Ok(()) => {}
        }
        let seg = Segment::create(&self.dir, next_offset)?;
        inner.segments.insert(next_offset, seg);
        // Without its folder entry on disk the new segment could vanish with its data.
        sync_dir(&self.dir).map_err(|e| self.stop(e.to_string()))?;
        tracing::debug!(dir = %self.dir.display(), base_offset = next_offset, "Rolled to a new segment.");
        Ok(())
    }

    /// Fails with [`LogError::Stopped`] once a write or sync has failed.
    fn check_running(&self) -> Result<()> {
        match &*lock(&self.failure) {
            Some(why) => Err(LogError::Stopped(why.clone())),
            None => Ok(()),
        }
    }

    /// Stops the log for `why` (the first reason is kept and logged); returns the error
    /// to give the caller.
    fn stop(&self, why: String) -> LogError {
        let mut failure = lock(&self.failure);
        if failure.is_none() {
            tracing::error!(dir = %self.dir.display(), error = %why, "Disk write or sync failed; the partition stops taking writes until restart.");
            *failure = Some(why);
        }
        LogError::Stopped(failure.clone().unwrap_or_default())
    }

    /// Why the log stopped taking writes, if it did.
    pub fn failure(&self) -> Option<String> {
        lock(&self.failure).clone()
    }

    /// Waits until every offset below `end_offset` is on disk, syncing if no one else
    /// is (group commit).
    pub fn wait_durable(&self, end_offset: u64) -> Result<()> {
        loop {
            if self.synced.load(Ordering::Acquire) >= end_offset {
                return Ok(());
            }
            {
                let mut st = lock(&self.sync_state);
                loop {
                    if self.synced.load(Ordering::Acquire) >= end_offset {
                        return Ok(());
                    }
                    self.check_running()?;
                    if !st.syncing {
                        break;
                    }
                    st = wait(&self.sync_done, st);
                }
            }
            // Capture what to sync before claiming the sync: a roll claims it while
            // holding `inner`. A roll in between only makes this sync cover less.
            let target = self.sync_target();
            let mut st = lock(&self.sync_state);
            if st.syncing {
                continue;
            }
            self.check_running()?;
            st.syncing = true;
            drop(st);
            self.sync_once(target);
        }
    }

    /// Syncs whatever has been appended so far (used by the interval policy and on close).
    pub fn sync(&self) -> Result<()> {
        let end = lock(&self.inner).next_offset;
        self.wait_durable(end)
    }

    /// The active file, the end of the log and whether readers wait for syncs.
    fn sync_target(&self) -> (Arc<File>, PathBuf, u64, bool) {
        let inner = lock(&self.inner);
        let active = inner
            .segments
            .values()
            .next_back()
            .expect("a log always has an active segment");
        (
            Arc::clone(&active.file),
            active.path.clone(),
            inner.next_offset,
            inner.config.durability == Durability::Always,
        )
    }

    /// One sync by the leader, which has claimed `syncing`; wakes every waiter.
    fn sync_once(&self, (file, path, end, always): (Arc<File>, PathBuf, u64, bool)) {
        let result = self
            .timed_sync(&file, &path)
            .map_err(|e| self.stop(format!("fdatasync of {} failed: {e}", path.display())));
        self.syncs.fetch_add(1, Ordering::Relaxed);
        let mut st = lock(&self.sync_state);
        st.syncing = false;
        // A write that failed meanwhile stops the log too: nothing more is acknowledged.
        if result.is_ok() && self.check_running().is_ok() {
            let before = self.synced.fetch_max(end, Ordering::AcqRel);
            if let (Some(m), true) = (self.metrics.get(), end > before) {
                m.records_per_sync.observe((end - before) as f64);
            }
            if always {
                self.visible.fetch_max(end, Ordering::AcqRel);
            }
        }
        self.sync_done.notify_all();
        drop(st);
        debug_assert_eq!(self.check_invariants(), Ok(()));
    }

    /// Offsets below this are on disk.
    pub fn synced(&self) -> u64 {
        self.synced.load(Ordering::Acquire)
    }

    /// How many group-commit syncs this log has made since it was opened.
    pub fn sync_count(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// One past the last appended offset, synced or not.
    pub fn next_offset(&self) -> u64 {
        lock(&self.inner).next_offset
    }

    /// One past the last readable offset.
    pub fn latest(&self) -> u64 {
        self.visible.load(Ordering::Acquire)
    }

    pub fn stats(&self) -> LogStats {
        let inner = lock(&self.inner);
        LogStats {
            earliest: inner.earliest(),
            latest: self.latest(),
            size_bytes: inner.segments.values().map(|s| s.size).sum(),
            segments: inner.segments.len(),
        }
    }

    /// Reads raw batches from `offset` (the first may start before it), at most
    /// `max_bytes` but always one whole batch when there is one.
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<ReadResult> {
        self.read_batches(offset, max_bytes, FirstBatch::Whole)
    }

    /// Reads raw whole batches from `offset` (the first may start before it), at most
    /// `max_bytes`, except that with [`FirstBatch::Whole`] a first batch larger than
    /// that is returned alone.
    pub fn read_batches(
        &self,
        offset: u64,
        max_bytes: usize,
        first_batch: FirstBatch,
    ) -> Result<ReadResult> {
        self.read_batches_bounded(offset, max_bytes, first_batch, None)
    }

    fn read_batches_bounded(
        &self,
        offset: u64,
        max_bytes: usize,
        first_batch: FirstBatch,
        end: Option<u64>,
    ) -> Result<ReadResult> {
        let visible = self.latest();
        let data_end = end.map_or(visible, |e| e.min(visible));
        let (file, path, position, limit, earliest, max_batch) = {
            let inner = lock(&self.inner);
            let earliest = inner.earliest();
            if offset < earliest || offset > visible {
                return Err(LogError::OffsetOutOfRange {
                    requested: offset,
                    earliest,
                    latest: visible,
                });
            }
            let max_batch = inner.config.max_batch_bytes.max(64 * 1024 * 1024);
            let mut found = None;
            let start = inner
                .segments
                .range(..=offset)
                .next_back()
                .map_or(earliest, |(b, _)| *b);
            for seg in inner.segments.range(start..).map(|(_, s)| s) {
                if offset >= data_end {
                    break;
                }
                if let Some(pos) = seg.position_for(offset, seg.size)? {
                    found = Some((Arc::clone(&seg.file), seg.path.clone(), pos, seg.size));
                    break;
                }
            }
            match found {
                None => {
                    return Ok(ReadResult {
                        batches: Bytes::new(),
                        earliest,
                        latest: visible,
                    })
                }
                Some((f, p, pos, limit)) => (f, p, pos, limit, earliest, max_batch),
            }
        };
        let bytes = segment::read_batches(
            &file,
            &path,
            position,
            max_bytes,
            first_batch,
            limit,
            data_end,
            max_batch,
        )?;
        Ok(ReadResult {
            batches: Bytes::from(bytes),
            earliest,
            latest: visible,
        })
    }

    /// The first record whose timestamp is ≥ `ts` (its offset and timestamp), or `None`
    /// if every record is older.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(u64, i64)>> {
        let visible = self.latest();
        let start = {
            let inner = lock(&self.inner);
            let earliest = inner.earliest();
            let mut start = None;
            for seg in inner.segments.values() {
                if seg.max_timestamp >= ts {
                    // Scan from the last batch the time index knows to be older than `ts`.
                    let entry = seg
                        .time_index
                        .floor(ts, true)
                        .map_err(|e| LogError::io("reading time index", e))?;
                    start = Some(
                        entry
                            .map_or(seg.base_offset, |e| seg.base_offset + e.rel_offset as u64)
                            .max(earliest),
                    );
                    break;
                }
            }
            start
        };
        let Some(mut offset) = start else {
            return Ok(None);
        };
        let limits = DecodeLimits::default();
        while offset < visible {
            let read = self.read(offset, 1 << 20)?;
            if read.batches.is_empty() {
                break;
            }
            for one in batch::Batches::new(read.batches) {
                let (header, records) = batch::decode_records(&one?, &limits)?;
                if header.max_timestamp >= ts {
                    if let Some(r) = records
                        .iter()
                        .find(|r| r.timestamp >= ts && r.offset as u64 >= offset)
                    {
                        return Ok(Some((r.offset as u64, r.timestamp)));
                    }
                }
                offset = header.last_offset() as u64 + 1;
            }
        }
        Ok(None)
    }

    /// Syncs and closes: later appends fail with [`LogError::Closed`].
    pub fn close(&self) -> Result<()> {
        let result = self.sync();
        // Waits for a removal under way: after this, nothing is unlinked.
        let _removing = lock(&self.removing);
        lock(&self.inner).closed = true;
        result
    }
}
