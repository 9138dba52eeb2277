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

use super::{sync_dir, PartitionLog};
use crate::batch::{self, BatchHeader, DecodeLimits, Record, BATCH_HEADER_BYTES};
use crate::compression::{self, Compression};
use crate::error::{LogError, Result};
use crate::fault;
use crate::segment::{self, Segment};
use crate::sync::lock;
use bytes::Bytes;
use std::fs::{File, OpenOptions};
use std::hash::Hasher;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The checkpoint's file name in the partition folder.
pub const CHECKPOINT_FILE: &str = "cleaner-checkpoint";
const CHECKPOINT_TMP: &str = "cleaner-checkpoint.tmp";
const CHECKPOINT_HEADER: &str = "ferry-cleaner-checkpoint 1";
/// Passes remembered at most; older ones are merged first.
const CHECKPOINT_PASSES_MAX: usize = 1024;
/// Bytes of one offset map slot: a 128-bit hash and an offset.
pub const OFFSET_MAP_SLOT_BYTES: usize = 24;
/// The least memory an offset map is given.
pub const OFFSET_MAP_BYTES_MIN: usize = 64 * 1024;
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

/// A fixed-size map of key hashes to the latest offset seen, by open addressing with
/// linear probing. It never grows: it is full at 90% of its slots.
pub struct OffsetMap {
    slots: Vec<(u128, u64)>,
    used: usize,
    max: usize,
}

impl OffsetMap {
    /// A map using about `bytes` of memory.
    pub fn new(bytes: usize) -> OffsetMap {
        let n = bytes.max(OFFSET_MAP_BYTES_MIN) / OFFSET_MAP_SLOT_BYTES;
        OffsetMap {
            slots: vec![(0, 0); n],
            used: 0,
            max: n / 10 * 9,
        }
    }

    /// How many keys it holds.
    pub fn len(&self) -> usize {
        self.used
    }

    pub fn is_empty(&self) -> bool {
        self.used == 0
    }

    /// The slot of `hash`: where it is, or the empty one where it would go.
    fn slot(&self, hash: u128) -> usize {
        let n = self.slots.len();
        let mut i = (hash % n as u128) as usize;
        loop {
            let h = self.slots[i].0;
            if h == hash || h == 0 {
                return i;
            }
            i = (i + 1) % n;
        }
    }

    /// Records `offset` as the latest of `hash`; false (and nothing changed) when the
    /// key is new and the map full.
    pub fn put(&mut self, hash: u128, offset: u64) -> bool {
        debug_assert_ne!(hash, 0, "hash 0 marks an empty slot");
        let i = self.slot(hash);
        if self.slots[i].0 == 0 {
            if self.used >= self.max {
                return false;
            }
            self.used += 1;
        }
        debug_assert!(self.slots[i].0 == 0 || self.slots[i].1 <= offset);
        self.slots[i] = (hash, offset);
        true
    }

    pub fn get(&self, hash: u128) -> Option<u64> {
        let i = self.slot(hash);
        (self.slots[i].0 == hash).then_some(self.slots[i].1)
    }
}

/// The 128-bit hash of a key (two SipHash runs; never 0, which marks an empty slot).
pub fn key_hash(key: &[u8]) -> u128 {
    let half = |tag: u8| {
        #[allow(deprecated)]
        let mut h = std::hash::SipHasher::new_with_keys(0x6665_7272_7963_6c65, u64::from(tag));
        h.write(key);
        h.finish()
    };
    let hash = (u128::from(half(1)) << 64) | u128::from(half(2));
    hash.max(1)
}

/// One pass as the checkpoint remembers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pass {
    end: u64,
    at_ms: u64,
}

fn load_checkpoint(dir: &Path) -> Vec<Pass> {
    let path = dir.join(CHECKPOINT_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "Could not read the compaction checkpoint; compacting from the start.");
            return Vec::new();
        }
    };
    let parsed = parse_checkpoint(&text);
    if parsed.is_none() {
        tracing::warn!(path = %path.display(), "The compaction checkpoint is damaged; compacting from the start.");
    }
    parsed.unwrap_or_default()
}

fn parse_checkpoint(text: &str) -> Option<Vec<Pass>> {
    let mut lines = text.lines();
    if lines.next()? != CHECKPOINT_HEADER {
        return None;
    }
    let mut passes: Vec<Pass> = Vec::new();
    for line in lines {
        let (end, at) = line.split_once(' ')?;
        let pass = Pass {
            end: end.parse().ok()?,
            at_ms: at.parse().ok()?,
        };
        if passes.last().is_some_and(|p| p.end >= pass.end) {
            return None;
        }
        passes.push(pass);
    }
    Some(passes)
}

fn store_checkpoint(dir: &Path, passes: &[Pass]) -> Result<()> {
    let mut text = format!("{CHECKPOINT_HEADER}\n");
    for p in passes {
        text.push_str(&format!("{} {}\n", p.end, p.at_ms));
    }
    fault::replace_file(
        &dir.join(CHECKPOINT_TMP),
        &dir.join(CHECKPOINT_FILE),
        text.as_bytes(),
    )
    .map_err(|e| LogError::io("writing the compaction checkpoint", e))?;
    sync_dir(dir)
}

/// Drops passes wholly before `first` and merges neighbours whose tombstones have all
/// expired by `now_ms`.
fn prune(passes: &mut Vec<Pass>, first: u64, now_ms: u64, delete_retention_ms: u64) {
    let keep_from = passes
        .iter()
        .position(|p| p.end > first)
        .unwrap_or(passes.len());
    passes.drain(..keep_from);
    let expired = |p: &Pass| p.at_ms.saturating_add(delete_retention_ms) <= now_ms;
    let mut merged: Vec<Pass> = Vec::with_capacity(passes.len());
    for p in passes.drain(..) {
        match merged.last_mut() {
            Some(last) if expired(last) && expired(&p) => {
                last.end = p.end;
                last.at_ms = last.at_ms.max(p.at_ms);
            }
            _ => merged.push(p),
        }
    }
    // Past the limit the oldest are merged whatever their age: their tombstones then
    // count from the later time, so they stay longer, never shorter.
    while merged.len() > CHECKPOINT_PASSES_MAX {
        let second = merged.remove(1);
        merged[0] = second;
    }
    *passes = merged;
}

/// When the pass that first reached `offset` ran, if one did.
fn first_cleaned_at(passes: &[Pass], offset: u64) -> Option<u64> {
    passes.iter().find(|p| p.end > offset).map(|p| p.at_ms)
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

fn put_varlong(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn put_nullable(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => put_varlong(out, -1),
        Some(b) => {
            put_varlong(out, b.len() as i64);
            out.extend_from_slice(b);
        }
    }
}

/// A batch of `records` (consecutive offsets, taken from the batch `h`), with the
/// original batch's attributes, codec and producer fields.
fn rebuild_batch(h: &BatchHeader, records: &[Record]) -> Result<Vec<u8>> {
    debug_assert!(!records.is_empty());
    debug_assert!(records.windows(2).all(|w| w[1].offset == w[0].offset + 1));
    let first = records[0].offset;
    let log_append = h.is_log_append_time();
    let (base_ts, max_ts) = if log_append {
        (h.base_timestamp, h.max_timestamp)
    } else {
        (
            records.iter().map(|r| r.timestamp).min().unwrap_or(0),
            records.iter().map(|r| r.timestamp).max().unwrap_or(0),
        )
    };
    let mut body = Vec::new();
    let mut rec = Vec::new();
    for (i, r) in records.iter().enumerate() {
        rec.clear();
        rec.push(r.attributes as u8);
        let ts_delta = if log_append { 0 } else { r.timestamp - base_ts };
        put_varlong(&mut rec, ts_delta);
        put_varlong(&mut rec, i as i64);
        put_nullable(&mut rec, r.key.as_deref());
        put_nullable(&mut rec, r.value.as_deref());
        put_varlong(&mut rec, r.headers.len() as i64);
        for hd in &r.headers {
            put_nullable(&mut rec, Some(&hd.key));
            put_nullable(&mut rec, hd.value.as_deref());
        }
        put_varlong(&mut body, rec.len() as i64);
        body.extend_from_slice(&rec);
    }
    let codec = h.compression().map_err(LogError::InvalidBatch)?;
    let body = match codec {
        Compression::None => body,
        other => compression::compress(other, &body).map_err(LogError::InvalidBatch)?,
    };
    let count = i32::try_from(records.len())
        .map_err(|_| LogError::InvalidBatch(batch::BatchError::BadLength(records.len() as i64)))?;
    let batch_length =
        i32::try_from(BATCH_HEADER_BYTES - batch::BATCH_PREFIX_BYTES + body.len())
            .map_err(|_| LogError::InvalidBatch(batch::BatchError::BadLength(body.len() as i64)))?;
    let sequence = if h.base_sequence < 0 {
        h.base_sequence
    } else {
        // Sequences wrap past i32::MAX, as Kafka's do.
        ((i64::from(h.base_sequence) + (first - h.base_offset)) % (i64::from(i32::MAX) + 1)) as i32
    };
    let mut out = Vec::with_capacity(BATCH_HEADER_BYTES + body.len());
    out.extend_from_slice(&first.to_be_bytes());
    out.extend_from_slice(&batch_length.to_be_bytes());
    out.extend_from_slice(&h.partition_leader_epoch.to_be_bytes());
    out.push(batch::MAGIC_V2 as u8);
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&h.attributes.to_be_bytes());
    out.extend_from_slice(&(count - 1).to_be_bytes());
    out.extend_from_slice(&base_ts.to_be_bytes());
    out.extend_from_slice(&max_ts.to_be_bytes());
    out.extend_from_slice(&h.producer_id.to_be_bytes());
    out.extend_from_slice(&h.producer_epoch.to_be_bytes());
    out.extend_from_slice(&sequence.to_be_bytes());
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(&body);
    // The CRC covers everything from the attributes on (byte 21).
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    debug_assert_eq!(
        batch::check_batch(
            &Bytes::copy_from_slice(&out),
            usize::MAX,
            &DecodeLimits::default()
        )
        .map(|c| c.header.last_offset()),
        Ok(records[records.len() - 1].offset),
        "a rebuilt batch passes the check every stored batch passes"
    );
    Ok(out)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offset_map_keeps_the_latest_offset_and_refuses_new_keys_when_full() {
        let mut m = OffsetMap::new(0);
        assert!(m.put(key_hash(b"a"), 1));
        assert!(m.put(key_hash(b"a"), 5));
        assert_eq!(m.get(key_hash(b"a")), Some(5));
        assert_eq!(m.get(key_hash(b"b")), None);
        let mut n = 0u64;
        while m.put(key_hash(&n.to_be_bytes()), n) {
            n += 1;
        }
        assert_eq!(
            m.len(),
            OFFSET_MAP_BYTES_MIN / OFFSET_MAP_SLOT_BYTES / 10 * 9
        );
        assert!(
            m.put(key_hash(b"a"), 9),
            "a known key still updates when full"
        );
    }

    #[test]
    fn checkpoints_round_trip_and_damage_reads_as_none() {
        let passes = vec![Pass { end: 10, at_ms: 5 }, Pass { end: 20, at_ms: 7 }];
        let dir = tempfile::tempdir().unwrap();
        store_checkpoint(dir.path(), &passes).unwrap();
        assert_eq!(load_checkpoint(dir.path()), passes);
        assert_eq!(
            parse_checkpoint("ferry-cleaner-checkpoint 1\n20 1\n10 2\n"),
            None
        );
        assert_eq!(parse_checkpoint("something else"), None);
    }

    #[test]
    fn expired_passes_merge_and_passes_before_the_log_are_forgotten() {
        let mut p = vec![
            Pass { end: 10, at_ms: 0 },
            Pass { end: 20, at_ms: 1 },
            Pass {
                end: 30,
                at_ms: 100,
            },
        ];
        prune(&mut p, 12, 50, 10);
        assert_eq!(
            p,
            vec![
                Pass { end: 20, at_ms: 1 },
                Pass {
                    end: 30,
                    at_ms: 100
                }
            ]
        );
        prune(&mut p, 0, 200, 10);
        assert_eq!(
            p,
            vec![Pass {
                end: 30,
                at_ms: 100
            }]
        );
    }
}
