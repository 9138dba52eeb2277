//! Compaction of a partition's sealed segments (Kafka's log cleaner): of the records
//! whose keys repeat, only the latest is kept; offsets never change.
//!
//! # One pass
//!
//! 1. The *dirty* part of the log is what lies at or after the last offset a pass
//!    reached (the checkpoint, see below), in sealed segments only: the active segment
//!    is never compacted. A pass starts when dirty bytes make at least
//!    `min_dirty_ratio` of the sealed bytes.
//! 2. An [`OffsetMap`] of fixed size (128-bit key hash → latest offset) is built over
//!    the dirty part, oldest first. It stops at the first batch with a record younger
//!    than `min_compaction_lag_ms`, and when it is full; the offset where it stopped is
//!    the pass's *end*. Memory is the map's, plus one batch at a time.
//! 3. Every sealed segment that begins before the end is rewritten: a record before the
//!    end is dropped when the map holds a later offset for its key. A tombstone (a
//!    record with no value) that is its key's latest stays until `delete_retention_ms`
//!    after the pass that first reached it, then goes at the next pass. Records at or
//!    after the end, control batches and transactional batches are kept as they are.
//!    A batch whose records all stay is copied byte for byte; otherwise each run of
//!    consecutive kept records becomes a batch of its own, with the records' original
//!    offsets, timestamps, producer fields (the sequence moved with the run) and codec
//!    (recompressed with it), and a new CRC. So offsets inside a batch have no gaps, as
//!    every reader expects; the gaps lie between batches. A batch left with no record
//!    is dropped; a segment left with no batch stays as an empty file, so the log's
//!    first offset never moves because of compaction.
//!
//! # Crash-safe swap
//!
//! A segment `<base>.log` is rewritten as `<base>.log.cleaned`, synced, and renamed to
//! `<base>.log.swap` (the folder synced): from then on the cleaned copy is whole. Then
//! the old segment's index files are removed, `<base>.log.swap` is renamed over
//! `<base>.log` (the folder synced), and the new indexes are written. When a partition
//! opens ([`recover_swaps`]) a `.log.cleaned` is deleted (the original is intact) and a
//! `.log.swap` is renamed over `<base>.log` after removing that segment's index files,
//! which are rebuilt from the segment. A crash at any point thus leaves either the
//! original segment or its whole cleaned copy: nothing lost, nothing twice.
//!
//! A failed write or sync of the cleaned copy deletes it and leaves the original in
//! place; the pass fails. A failed rename or folder sync after the copy was made whole
//! stops the log (see the log's "Failures"): what the folder holds is known again only
//! after a restart recovers it.
//!
//! # Readers
//!
//! Readers take a segment's file handle and positions under the log's lock and read
//! after releasing it. The swap replaces the file's name, not its contents: a reader
//! holding the old handle reads the old, uncompacted bytes, which are still correct
//! records at their offsets. New reads see the cleaned segment.
//!
//! # Checkpoint
//!
//! `cleaner-checkpoint` in the partition folder lists each pass as `<end> <at_ms>`: the
//! offset the pass reached and when. A tombstone's first pass is the first whose end is
//! past it. The file is replaced whole (temporary file, sync, rename, folder sync) after
//! a pass's segments are swapped; a crash before that only makes the next pass redo
//! the work. A missing or unreadable file means nothing was compacted yet, which keeps
//! tombstones longer, never shorter. Passes that lie wholly before the log's first
//! segment are forgotten, and neighbouring passes whose tombstones have all expired are
//! merged, so the file stays small.

mod checkpoint;
mod offset_map;
mod rebuild;

pub use checkpoint::CHECKPOINT_FILE;
pub use offset_map::{key_hash, OffsetMap, OFFSET_MAP_BYTES_MIN, OFFSET_MAP_SLOT_BYTES};

use super::{sync_dir, PartitionLog};
use crate::batch::{self, BatchHeader, DecodeLimits, Record};
use crate::error::{LogError, Result};
use crate::fault;
use crate::segment::{self, Segment};
use crate::sync::lock;
use bytes::Bytes;
use checkpoint::{first_cleaned_at, load_checkpoint, prune, store_checkpoint, Pass};
use rebuild::rebuild_batch;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bytes written to the cleaned copy at once.
const WRITE_BUFFER_BYTES: usize = 1 << 20;
/// Largest batch compaction reads (the log's hard limit for recovery).
const BATCH_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Settings of one compaction pass.
#[derive(Debug, Clone, Copy)]
pub struct CompactConfig {
    /// The time of the pass, in milliseconds since the epoch.
    pub now_ms: u64,
    /// Records younger than this are not compacted.
    pub min_compaction_lag_ms: u64,
    /// How long a tombstone stays after the pass that first reached it.
    pub delete_retention_ms: u64,
    /// The least share of dirty bytes among sealed bytes that starts a pass (0 to 1).
    pub min_dirty_ratio: f64,
    /// A pass also starts, whatever the dirty share, once the oldest record not yet
    /// compacted is older than this (Kafka's `max.compaction.lag.ms`).
    pub max_compaction_lag_ms: u64,
    /// Memory of the offset map, in bytes.
    pub offset_map_bytes: usize,
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compacted {
    /// Segments rewritten.
    pub segments: usize,
    /// Bytes of the rewritten segments before and after.
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Records read from the rewritten segments, and how many were dropped.
    pub records_read: u64,
    pub records_removed: u64,
    /// Of those dropped, tombstones past their retention.
    pub tombstones_removed: u64,
    /// Offsets below this have been compacted.
    pub cleaned_to: u64,
    /// Keys the offset map held.
    pub keys: usize,
}

fn cleaned_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log.cleaned"))
}
fn swap_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log.swap"))
}
fn index_paths(dir: &Path, base: u64) -> [PathBuf; 2] {
    [
        dir.join(format!("{base:020}.index")),
        dir.join(format!("{base:020}.timeindex")),
    ]
}

fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(LogError::io(format!("removing {}", path.display()), e)),
    }
}

/// Finishes or discards compaction swaps a crash interrupted (see the module's
/// "Crash-safe swap"); run when a partition opens, before its segments are listed.
pub fn recover_swaps(dir: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(LogError::io(format!("listing {}", dir.display()), e)),
    };
    let mut changed = false;
    for entry in entries {
        let entry = entry.map_err(|e| LogError::io("listing partition", e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(".cleaned") {
            if segment::parse_log_name(stem).is_some() {
                remove_if_present(&entry.path())?;
                changed = true;
                tracing::info!(file = %entry.path().display(), "Discarded a compacted copy left unfinished by a crash.");
            }
        } else if let Some(stem) = name.strip_suffix(".swap") {
            if let Some(base) = segment::parse_log_name(stem) {
                for p in index_paths(dir, base) {
                    remove_if_present(&p)?;
                }
                fault::rename(&entry.path(), &segment::log_path(dir, base))
                    .map_err(|e| LogError::io(format!("renaming {}", entry.path().display()), e))?;
                changed = true;
                tracing::info!(base_offset = base, dir = %dir.display(), "Finished swapping in a compacted segment after a crash.");
            }
        }
    }
    if changed {
        sync_dir(dir)?;
    }
    Ok(())
}

/// A sealed segment as a pass sees it.
struct SealedView {
    base: u64,
    file: Arc<File>,
    path: PathBuf,
    size: u64,
    next_offset: u64,
}

/// Reads the batch at `pos` of `file` (whose whole batches end at `size`).
fn read_batch(file: &File, path: &Path, pos: u64, size: u64) -> Result<Bytes> {
    let corrupt = |reason: String| LogError::Corrupt {
        segment: path.display().to_string(),
        position: pos,
        reason,
    };
    let mut prefix = [0u8; batch::BATCH_PREFIX_BYTES];
    file.read_exact_at(&mut prefix, pos)
        .map_err(|e| LogError::io(format!("reading {}", path.display()), e))?;
    let (_, total) =
        batch::read_prefix(&prefix, BATCH_BYTES_MAX).map_err(|e| corrupt(e.to_string()))?;
    if pos + total as u64 > size {
        return Err(corrupt("batch runs past the end of the segment".into()));
    }
    let mut buf = vec![0u8; total];
    file.read_exact_at(&mut buf, pos)
        .map_err(|e| LogError::io(format!("reading {}", path.display()), e))?;
    Ok(Bytes::from(buf))
}

/// Calls `visit` with each batch of a segment and its position.
fn for_each_batch(
    seg: &SealedView,
    mut visit: impl FnMut(u64, Bytes) -> Result<bool>,
) -> Result<()> {
    let mut pos = 0;
    while pos < seg.size {
        let one = read_batch(&seg.file, &seg.path, pos, seg.size)?;
        let len = one.len() as u64;
        if !visit(pos, one)? {
            break;
        }
        pos += len;
    }
    Ok(())
}

/// Whether compaction leaves a batch alone whatever its records.
fn kept_whole(h: &BatchHeader) -> bool {
    h.is_control() || h.is_transactional()
}
/// The cleaned copy of one segment while it is written.
struct CleanedCopy {
    seg: Segment,
    tmp: PathBuf,
    buf: Vec<u8>,
    /// Where `buf` begins in the file.
    flushed: u64,
    index_interval_bytes: u64,
}

impl CleanedCopy {
    fn create(dir: &Path, base: u64, index_interval_bytes: u64) -> Result<CleanedCopy> {
        let tmp = cleaned_path(dir, base);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    LogError::Stopped(format!(
                        "{} exists: a compaction of this partition is already running",
                        tmp.display()
                    ))
                } else {
                    LogError::io(format!("creating {}", tmp.display()), e)
                }
            })?;
        Ok(CleanedCopy {
            seg: Segment::empty(base, segment::log_path(dir, base), file),
            tmp,
            buf: Vec::with_capacity(WRITE_BUFFER_BYTES),
            flushed: 0,
            index_interval_bytes,
        })
    }

    fn push(&mut self, one: &[u8]) -> Result<()> {
        let h = BatchHeader::parse(one).map_err(LogError::InvalidBatch)?;
        let position = self.seg.size;
        self.seg.note_batch(position, &h, self.index_interval_bytes);
        if self.buf.len() + one.len() > WRITE_BUFFER_BYTES {
            self.flush()?;
        }
        self.buf.extend_from_slice(one);
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        fault::write_all_at(&self.seg.file, &self.tmp, &self.buf, self.flushed)
            .map_err(|e| LogError::io(format!("writing {}", self.tmp.display()), e))?;
        self.flushed += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Writes what is buffered and syncs: the copy is then whole on disk.
    fn finish(&mut self) -> Result<()> {
        self.flush()?;
        debug_assert_eq!(self.flushed, self.seg.size);
        fault::sync_data(&self.seg.file, &self.tmp)
            .map_err(|e| LogError::io(format!("syncing {}", self.tmp.display()), e))
    }
}

impl PartitionLog {
    /// The sealed segments and the share of their bytes not yet compacted.
    fn sealed_views(&self) -> Vec<SealedView> {
        let inner = lock(&self.inner);
        let n = inner.segments.len();
        inner
            .segments
            .values()
            .take(n.saturating_sub(1))
            .map(|s| SealedView {
                base: s.base_offset,
                file: Arc::clone(&s.file),
                path: s.path.clone(),
                size: s.size,
                next_offset: s.next_offset,
            })
            .collect()
    }

    /// The share (0 to 1) of the sealed segments' bytes at or after the last compacted
    /// offset; 0 when nothing is sealed.
    pub fn dirty_ratio(&self) -> f64 {
        let cleaned_to = load_checkpoint(&self.dir).last().map_or(0, |p| p.end);
        dirty_ratio(&self.sealed_views(), cleaned_to)
    }

    /// Runs one compaction pass if the dirty share of the sealed segments has reached
    /// `config.min_dirty_ratio` (see the module). `None`: nothing was due.
    pub fn compact(&self, config: &CompactConfig) -> Result<Option<Compacted>> {
        if lock(&self.inner).closed {
            return Ok(None);
        }
        self.check_running()?;
        let mut passes = load_checkpoint(&self.dir);
        let cleaned_to = passes.last().map_or(0, |p| p.end);
        let sealed = self.sealed_views();
        if sealed.is_empty() {
            return Ok(None);
        }
        if dirty_ratio(&sealed, cleaned_to) < config.min_dirty_ratio
            && !oldest_dirty_older_than(&sealed, cleaned_to, config)?
        {
            return Ok(None);
        }
        let (map, end) = self.build_offset_map(&sealed, cleaned_to, config)?;
        if end <= cleaned_to {
            return Ok(None);
        }
        let limits = DecodeLimits {
            decompressed_bytes_max: BATCH_BYTES_MAX,
            ..DecodeLimits::default()
        };
        let mut done = Compacted {
            keys: map.len(),
            cleaned_to: end,
            ..Compacted::default()
        };
        let horizon = |offset: u64| {
            first_cleaned_at(&passes, offset)
                .is_some_and(|at| at.saturating_add(config.delete_retention_ms) <= config.now_ms)
        };
        for seg in sealed.iter().filter(|s| s.base < end) {
            let copy = match self.clean_segment(seg, &map, end, &horizon, &limits, &mut done) {
                // Closed meanwhile: what was swapped stays, the rest is left alone.
                Err(LogError::Closed) => return Ok(None),
                other => other?,
            };
            self.swap_in(seg, copy)?;
            done.segments += 1;
        }
        passes.push(Pass {
            end,
            at_ms: config.now_ms,
        });
        let first = sealed.first().map_or(0, |s| s.base);
        prune(
            &mut passes,
            first,
            config.now_ms,
            config.delete_retention_ms,
        );
        store_checkpoint(&self.dir, &passes)?;
        debug_assert_eq!(self.check_invariants(), Ok(()));
        tracing::info!(
            dir = %self.dir.display(),
            segments = done.segments,
            bytes_before = done.bytes_before,
            bytes_after = done.bytes_after,
            records_removed = done.records_removed,
            cleaned_to = end,
            "Compacted a partition."
        );
        Ok(Some(done))
    }

    /// The offset map over the dirty part, and the offset where it stops.
    fn build_offset_map(
        &self,
        sealed: &[SealedView],
        cleaned_to: u64,
        config: &CompactConfig,
    ) -> Result<(OffsetMap, u64)> {
        let mut map = OffsetMap::new(config.offset_map_bytes);
        let lag_limit = config.now_ms.saturating_sub(config.min_compaction_lag_ms);
        let limits = DecodeLimits {
            decompressed_bytes_max: BATCH_BYTES_MAX,
            ..DecodeLimits::default()
        };
        let mut end = cleaned_to;
        let mut stopped = false;
        for seg in sealed.iter().filter(|s| s.next_offset > cleaned_to) {
            for_each_batch(seg, |_, one| {
                let h = BatchHeader::parse(&one).map_err(LogError::InvalidBatch)?;
                let last = h.last_offset() as u64;
                if last < cleaned_to {
                    return Ok(true);
                }
                if config.min_compaction_lag_ms > 0 && h.max_timestamp > lag_limit as i64 {
                    stopped = true;
                    return Ok(false);
                }
                if !kept_whole(&h) {
                    let (_, records) =
                        batch::decode_records(&one, &limits).map_err(LogError::InvalidBatch)?;
                    let keys: Vec<(u128, u64)> = records
                        .iter()
                        .filter_map(|r| r.key.as_ref().map(|k| (key_hash(k), r.offset as u64)))
                        .collect();
                    for (hash, offset) in &keys {
                        if !map.put(*hash, *offset) {
                            // Full: the keys of this batch already put point at offsets
                            // that exist, so they only make older records go; the map
                            // ends before this batch.
                            stopped = true;
                            return Ok(false);
                        }
                    }
                }
                end = last + 1;
                Ok(true)
            })?;
            if stopped {
                break;
            }
            // Gaps between segments belong to the one before.
            end = end.max(seg.next_offset);
        }
        Ok((map, end))
    }

    /// Writes the cleaned copy of one sealed segment, whole and synced.
    fn clean_segment(
        &self,
        seg: &SealedView,
        map: &OffsetMap,
        end: u64,
        tombstone_expired: &dyn Fn(u64) -> bool,
        limits: &DecodeLimits,
        done: &mut Compacted,
    ) -> Result<CleanedCopy> {
        let mut copy = {
            // Under `removing`, which `close` takes: once a log is closed (its topic
            // deleted and its folder about to go) no copy is made in its folder.
            let _removing = lock(&self.removing);
            let inner = lock(&self.inner);
            if inner.closed {
                return Err(LogError::Closed);
            }
            let index_interval = inner.config.index_interval_bytes;
            drop(inner);
            CleanedCopy::create(&self.dir, seg.base, index_interval)?
        };
        let result = (|| {
            for_each_batch(seg, |_, one| {
                let h = BatchHeader::parse(&one).map_err(LogError::InvalidBatch)?;
                if kept_whole(&h) || h.base_offset as u64 >= end {
                    copy.push(&one)?;
                    return Ok(true);
                }
                let (_, records) =
                    batch::decode_records(&one, limits).map_err(LogError::InvalidBatch)?;
                done.records_read += records.len() as u64;
                let mut removed = 0usize;
                let mut kept = Vec::with_capacity(records.len());
                for r in &records {
                    let offset = r.offset as u64;
                    let keep = match &r.key {
                        _ if offset >= end => true,
                        None => true,
                        Some(key) => match map.get(key_hash(key)) {
                            Some(latest) if latest > offset => false,
                            _ if r.value.is_none() && tombstone_expired(offset) => {
                                done.tombstones_removed += 1;
                                false
                            }
                            _ => true,
                        },
                    };
                    removed += usize::from(!keep);
                    kept.push(keep);
                }
                done.records_removed += removed as u64;
                if removed == 0 {
                    copy.push(&one)?;
                    return Ok(true);
                }
                let mut run: Vec<Record> = Vec::new();
                for (r, k) in records.into_iter().zip(kept) {
                    if !k {
                        if !run.is_empty() {
                            copy.push(&rebuild_batch(&h, &run)?)?;
                            run.clear();
                        }
                        continue;
                    }
                    run.push(r);
                }
                if !run.is_empty() {
                    copy.push(&rebuild_batch(&h, &run)?)?;
                }
                Ok(true)
            })?;
            copy.finish()
        })();
        if let Err(e) = result {
            drop(copy.seg);
            let _ = std::fs::remove_file(&copy.tmp);
            return Err(e);
        }
        done.bytes_before += seg.size;
        done.bytes_after += copy.seg.size;
        Ok(copy)
    }

    /// Swaps a cleaned copy in for its segment (see the module's "Crash-safe swap").
    fn swap_in(&self, old: &SealedView, copy: CleanedCopy) -> Result<()> {
        let discard = |copy: CleanedCopy| {
            let tmp = copy.tmp.clone();
            drop(copy);
            let _ = std::fs::remove_file(&tmp);
        };
        // Retention and DeleteRecords wait: the segment must not go meanwhile.
        let _removing = lock(&self.removing);
        {
            let inner = lock(&self.inner);
            let current = inner.segments.get(&old.base);
            let is_sealed = inner.segments.keys().next_back() != Some(&old.base);
            let same =
                current.is_some_and(|s| s.size == old.size && Arc::ptr_eq(&s.file, &old.file));
            if inner.closed || !same || !is_sealed {
                drop(inner);
                discard(copy);
                return Ok(());
            }
        }
        let CleanedCopy { mut seg, tmp, .. } = copy;
        let swap = swap_path(&self.dir, old.base);
        // Until the copy is named `.swap` a failure leaves the original as it was.
        if let Err(e) = fault::rename(&tmp, &swap) {
            let _ = std::fs::remove_file(&tmp);
            return Err(LogError::io(format!("renaming {}", tmp.display()), e));
        }
        let stop = |what: String, e: LogError| self.stop(format!("{what}: {e}"));
        sync_dir(&self.dir).map_err(|e| stop("compaction swap".into(), e))?;
        for p in index_paths(&self.dir, old.base) {
            remove_if_present(&p).map_err(|e| stop("compaction swap".into(), e))?;
        }
        fault::rename(&swap, &old.path).map_err(|e| {
            stop(
                format!("renaming {}", swap.display()),
                LogError::io("rename", e),
            )
        })?;
        sync_dir(&self.dir).map_err(|e| stop("compaction swap".into(), e))?;
        seg.path = old.path.clone();
        // Missing index files are rebuilt when the partition opens; in memory the
        // segment is whole either way.
        if let Err(e) = seg.write_indexes() {
            tracing::warn!(dir = %self.dir.display(), base_offset = old.base, error = %e, "Could not write the indexes of a compacted segment; they are rebuilt at the next start.");
        }
        let mut inner = lock(&self.inner);
        inner.segments.insert(old.base, seg);
        debug_assert_eq!(self.invariants(&inner), Ok(()));
        Ok(())
    }
}

/// Whether the first batch not yet compacted is older than `max_compaction_lag_ms`.
fn oldest_dirty_older_than(
    sealed: &[SealedView],
    cleaned_to: u64,
    config: &CompactConfig,
) -> Result<bool> {
    if config.max_compaction_lag_ms >= i64::MAX as u64 {
        return Ok(false);
    }
    let limit = config.now_ms.saturating_sub(config.max_compaction_lag_ms);
    let mut oldest = None;
    for seg in sealed.iter().filter(|s| s.next_offset > cleaned_to) {
        for_each_batch(seg, |_, one| {
            let h = BatchHeader::parse(&one).map_err(LogError::InvalidBatch)?;
            if (h.last_offset() as u64) < cleaned_to {
                return Ok(true);
            }
            oldest = Some(h.max_timestamp);
            Ok(false)
        })?;
        if oldest.is_some() {
            break;
        }
    }
    Ok(oldest.is_some_and(|ts| ts >= 0 && (ts as u64) < limit))
}

fn dirty_ratio(sealed: &[SealedView], cleaned_to: u64) -> f64 {
    let total: u64 = sealed.iter().map(|s| s.size).sum();
    if total == 0 {
        return 0.0;
    }
    let dirty: u64 = sealed
        .iter()
        .filter(|s| s.next_offset > cleaned_to)
        .map(|s| s.size)
        .sum();
    dirty as f64 / total as f64
}
