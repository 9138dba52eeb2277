//! One segment: a file of whole batches named by its base offset, and its indexes.
//!
//! # Crash and torn writes
//!
//! Appends go to the end of the file with `pwrite`. A crash can leave a partly written
//! batch at the end; [`Segment::recover`] reads the segment batch by batch, checks each
//! CRC and that offsets only grow, and cuts the file at the end of the last good batch.
//! If a good batch follows the bad one (damage in the middle, not a torn tail), the cut
//! bytes are kept in a `<base>.log.cut-<position>` file so nothing is destroyed.
//!
//! # Failed writes
//!
//! A write that fails (a full disk) is undone by truncating the file back to its size
//! before the write, so the segment never holds a partial batch while running.

use crate::batch::{self, BatchHeader, BATCH_HEADER_BYTES, BATCH_PREFIX_BYTES};
use crate::error::{LogError, Result};
use crate::fault;
use crate::index::{Index, OffsetEntry, TimeEntry};
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where and why a recovery cut a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    pub segment: PathBuf,
    pub position: u64,
    pub bytes: u64,
    pub reason: String,
    /// Set when a good batch followed the damage; the cut bytes were kept here.
    pub kept_in: Option<PathBuf>,
}

#[derive(Debug)]
pub struct Segment {
    pub base_offset: u64,
    pub path: PathBuf,
    pub file: Arc<File>,
    /// Bytes of whole batches in the file.
    pub size: u64,
    /// One past the last offset stored here (equals `base_offset` when empty).
    pub next_offset: u64,
    pub max_timestamp: i64,
    max_timestamp_offset: u64,
    /// Wall-clock time of the first append, for rolling by age.
    pub first_append_ms: Option<u64>,
    pub index: Index<OffsetEntry>,
    pub time_index: Index<TimeEntry>,
    bytes_since_index: u64,
    last_indexed_timestamp: i64,
}

pub fn log_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}
fn index_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.index"))
}
fn time_index_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.timeindex"))
}

/// One past the last offset a segment based at `base` can hold: its indexes count
/// offsets relative to the base in 32 bits.
fn offset_range_end(base: u64) -> u64 {
    base.saturating_add(u32::MAX as u64 + 1)
}

/// Parses a segment file name back to its base offset.
pub fn parse_log_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".log")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Why a scan stopped early.
struct Problem {
    reason: String,
    /// The file simply ends inside a batch: what a crash mid-write leaves.
    torn: bool,
}

/// Why a good batch cannot follow in the segment: its offsets go backwards (below
/// `next_expected`) or leave the segment's range (`range_end`).
fn out_of_range(header: &BatchHeader, next_expected: u64, range_end: u64) -> Option<Problem> {
    let reason = if header.base_offset < 0 || (header.base_offset as u64) < next_expected {
        format!(
            "batch offset {} goes backwards (expected at least {next_expected})",
            header.base_offset
        )
    } else if header.last_offset() < 0 || header.last_offset() as u64 >= range_end {
        // The writer rolls before a segment's offsets leave the 32-bit range its
        // indexes count in; a batch past it was not written by Ferry.
        format!(
            "batch offsets up to {} are past the segment's range (below {range_end})",
            header.last_offset()
        )
    } else {
        return None;
    };
    Some(Problem {
        reason,
        torn: false,
    })
}

/// What one scan of a segment found.
struct Scan {
    /// End of the last good batch.
    good_end: u64,
    /// Why the scan stopped before the end of the file.
    problem: Option<Problem>,
}

impl Segment {
    /// Creates a new, empty segment file.
    pub fn create(dir: &Path, base_offset: u64) -> Result<Segment> {
        let path = log_path(dir, base_offset);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| LogError::io(format!("creating segment {}", path.display()), e))?;
        Ok(Segment::empty(base_offset, path, file))
    }

    pub(crate) fn empty(base_offset: u64, path: PathBuf, file: File) -> Segment {
        Segment {
            base_offset,
            path,
            file: Arc::new(file),
            size: 0,
            next_offset: base_offset,
            max_timestamp: i64::MIN,
            max_timestamp_offset: base_offset,
            first_append_ms: None,
            index: Index::new(),
            time_index: Index::new(),
            bytes_since_index: 0,
            last_indexed_timestamp: i64::MIN,
        }
    }

    /// Opens an existing segment for reading and writing, with its size.
    fn open_rw(path: &Path) -> Result<(File, u64)> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| LogError::io(format!("opening segment {}", path.display()), e))?;
        let len = file
            .metadata()
            .map_err(|e| LogError::io(format!("reading the size of {}", path.display()), e))?
            .len();
        Ok((file, len))
    }

    /// Records a batch that is now in the file at `position` in the indexes.
    pub(crate) fn note_batch(&mut self, position: u64, h: &BatchHeader, index_interval_bytes: u64) {
        // Batches follow one another in the file, each with offsets after the last.
        debug_assert_eq!(
            position, self.size,
            "a batch is noted where the segment ends"
        );
        debug_assert!(
            h.base_offset >= 0 && h.base_offset as u64 >= self.next_offset,
            "batch offset {} goes backwards in segment {} (next is {})",
            h.base_offset,
            self.base_offset,
            self.next_offset
        );
        let total = h.total_bytes() as u64;
        let rel = (h.base_offset as u64 - self.base_offset) as u32;
        if self.index.is_empty() || self.bytes_since_index >= index_interval_bytes {
            self.index.push(OffsetEntry {
                rel_offset: rel,
                position: position as u32,
            });
            if self.max_timestamp.max(h.max_timestamp) > self.last_indexed_timestamp {
                let ts = self.max_timestamp.max(h.max_timestamp);
                let last_rel = (h.last_offset() as u64 - self.base_offset) as u32;
                self.time_index.push(TimeEntry {
                    timestamp: ts,
                    rel_offset: last_rel,
                });
                self.last_indexed_timestamp = ts;
            }
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += total;
        if h.max_timestamp > self.max_timestamp {
            self.max_timestamp = h.max_timestamp;
            self.max_timestamp_offset = h.last_offset() as u64;
        }
        self.size = position + total;
        self.next_offset = h.last_offset() as u64 + 1;
    }

    /// Appends a batch whose base offset is already set. On a failed write the file is
    /// cut back to its previous size.
    pub fn append(
        &mut self,
        batch: &[u8],
        header: &BatchHeader,
        index_interval_bytes: u64,
        now_ms: u64,
    ) -> Result<()> {
        let position = self.size;
        debug_assert!(
            batch::verify_crc(batch).is_ok(),
            "a batch is checked before it is written"
        );
        debug_assert_eq!(
            header.total_bytes(),
            batch.len(),
            "the header describes the batch"
        );
        if let Err(e) = fault::write_all_at(&self.file, &self.path, batch, position) {
            let undo = self.file.set_len(position);
            if let Err(undo) = undo {
                return Err(LogError::Stopped(format!(
                    "write failed ({e}) and the partial batch could not be cut ({undo})"
                )));
            }
            return Err(LogError::io(
                format!("writing to {}", self.path.display()),
                e,
            ));
        }
        self.first_append_ms.get_or_insert(now_ms);
        self.note_batch(position, header, index_interval_bytes);
        Ok(())
    }

    /// Makes the segment read-only: syncs its data and writes its indexes.
    pub fn seal(&mut self) -> Result<()> {
        fault::sync_data(&self.file, &self.path)
            .map_err(|e| LogError::Stopped(format!("syncing {}: {e}", self.path.display())))?;
        self.write_indexes()
    }

    /// Writes the in-memory indexes to their files. On failure (a full disk) they stay in
    /// memory and the segment stays active; the next roll tries again.
    pub fn write_indexes(&mut self) -> Result<()> {
        if self.max_timestamp > self.last_indexed_timestamp {
            let rel = (self.max_timestamp_offset - self.base_offset) as u32;
            self.time_index.push(TimeEntry {
                timestamp: self.max_timestamp,
                rel_offset: rel,
            });
            self.last_indexed_timestamp = self.max_timestamp;
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        self.index
            .seal(&index_path(dir, self.base_offset))
            .map_err(|e| LogError::io("writing offset index", e))?;
        self.time_index
            .seal(&time_index_path(dir, self.base_offset))
            .map_err(|e| LogError::io("writing time index", e))?;
        Ok(())
    }

    /// Scans `[from, end)` batch by batch, calling `visit` for each good one. Offsets
    /// of good batches lie in `offsets` and only grow.
    fn scan(
        file: &File,
        from: u64,
        end: u64,
        offsets: Range<u64>,
        max_batch_bytes: usize,
        mut visit: impl FnMut(u64, &BatchHeader),
    ) -> io::Result<Scan> {
        let mut reader = BufReader::with_capacity(1 << 20, file);
        reader.seek(SeekFrom::Start(from))?;
        let mut pos = from;
        let mut next_expected = offsets.start;
        let mut buf = Vec::new();
        while pos < end {
            let stop = |problem| {
                Ok(Scan {
                    good_end: pos,
                    problem: Some(problem),
                })
            };
            let (header, total) =
                match Self::read_one(&mut reader, &mut buf, end - pos, max_batch_bytes)? {
                    Ok(one) => one,
                    Err(problem) => return stop(problem),
                };
            if let Some(problem) = out_of_range(&header, next_expected, offsets.end) {
                return stop(problem);
            }
            visit(pos, &header);
            next_expected = header.last_offset() as u64 + 1;
            pos += total as u64;
        }
        Ok(Scan {
            good_end: pos,
            problem: None,
        })
    }

    /// Reads the next batch (with `left` bytes left in the scan) into `buf` and checks
    /// its header and CRC: its header and size, or why it is not a good batch.
    fn read_one(
        reader: &mut impl Read,
        buf: &mut Vec<u8>,
        left: u64,
        max_batch_bytes: usize,
    ) -> io::Result<std::result::Result<(BatchHeader, usize), Problem>> {
        if left < BATCH_PREFIX_BYTES as u64 {
            return Ok(Err(Problem {
                reason: format!("{left} trailing bytes, too few for a batch"),
                torn: true,
            }));
        }
        let mut prefix = [0u8; BATCH_PREFIX_BYTES];
        reader.read_exact(&mut prefix)?;
        let total = match batch::read_prefix(&prefix, max_batch_bytes) {
            Ok((_, t)) => t,
            Err(e) => {
                return Ok(Err(Problem {
                    reason: e.to_string(),
                    torn: false,
                }))
            }
        };
        if total as u64 > left {
            return Ok(Err(Problem {
                reason: format!("batch of {total} bytes runs past the end of the file"),
                torn: true,
            }));
        }
        buf.clear();
        buf.extend_from_slice(&prefix);
        buf.resize(total, 0);
        reader.read_exact(&mut buf[BATCH_PREFIX_BYTES..])?;
        // The header checks of every stored batch (magic, CRC, codec, record count = last
        // offset delta + 1). Records are not decoded again: the CRC proves these are the
        // bytes that passed `check_batch` on append, and readers check offsets as they go.
        let checked = batch::validate_incoming(buf, max_batch_bytes);
        Ok(checked.map(|h| (h, total)).map_err(|e| Problem {
            reason: e.to_string(),
            torn: false,
        }))
    }

    /// The position of the first good batch (whole, with a valid CRC) starting in
    /// `(from, end)`, searched byte by byte: it tells damage in the middle, after which
    /// fsynced batches follow, from a torn tail. Reads a window at a time.
    fn next_good_batch(
        file: &File,
        from: u64,
        end: u64,
        max_batch_bytes: usize,
    ) -> io::Result<Option<u64>> {
        const WINDOW: usize = 1 << 20;
        let mut buf = vec![0u8; WINDOW + BATCH_HEADER_BYTES];
        let mut one = Vec::new();
        let mut start = from + 1;
        while start + BATCH_HEADER_BYTES as u64 <= end {
            let n = (buf.len() as u64).min(end - start) as usize;
            file.read_exact_at(&mut buf[..n], start)?;
            for i in 0..n.min(WINDOW) {
                if i + BATCH_HEADER_BYTES > n {
                    break;
                }
                let at = &buf[i..n];
                // Cheap checks first: the magic byte, then a length that fits.
                if at[16] != 2 {
                    continue;
                }
                let Ok((_, total)) = batch::read_prefix(at, max_batch_bytes) else {
                    continue;
                };
                let pos = start + i as u64;
                if total as u64 > end - pos || BatchHeader::parse(at).is_err() {
                    continue;
                }
                let whole = if total <= at.len() {
                    &at[..total]
                } else {
                    one.resize(total, 0);
                    file.read_exact_at(&mut one, pos)?;
                    &one[..]
                };
                if batch::verify_crc(whole).is_ok() {
                    return Ok(Some(pos));
                }
            }
            start += WINDOW as u64;
        }
        Ok(None)
    }

    /// The transactional batches of this segment, in order, each with its marker type
    /// when it is a control batch (`Some(true)` COMMIT, `Some(false)` ABORT); used to
    /// rebuild a partition's transaction index after a restart.
    pub fn transactional_batches(
        &self,
        max_batch_bytes: usize,
    ) -> Result<Vec<(BatchHeader, Option<bool>)>> {
        let mut found = Vec::new();
        let offsets = self.base_offset..offset_range_end(self.base_offset);
        Self::scan(
            &self.file,
            0,
            self.size,
            offsets,
            max_batch_bytes,
            |pos, h| {
                if h.is_transactional() {
                    found.push((pos, *h));
                }
            },
        )
        .map_err(|e| LogError::io(format!("reading {}", self.path.display()), e))?;
        let mut out = Vec::with_capacity(found.len());
        for (pos, h) in found {
            let marker = if h.is_control() {
                let mut buf = vec![0u8; h.total_bytes()];
                self.file
                    .read_exact_at(&mut buf, pos)
                    .map_err(|e| LogError::io(format!("reading {}", self.path.display()), e))?;
                batch::control_batch_commits(&bytes::Bytes::from(buf))
            } else {
                None
            };
            out.push((h, marker));
        }
        Ok(out)
    }

    /// Opens the active (last) segment after a restart: every batch is checked and a
    /// bad tail is cut. Indexes are rebuilt in memory.
    pub fn recover(
        dir: &Path,
        base_offset: u64,
        index_interval_bytes: u64,
        max_batch_bytes: usize,
    ) -> Result<(Segment, Option<Cut>, Vec<BatchHeader>)> {
        let path = log_path(dir, base_offset);
        let (file, len) = Self::open_rw(&path)?;
        let mut seg = Segment::empty(base_offset, path.clone(), file);
        let mut found = Vec::new();
        let offsets = base_offset..offset_range_end(base_offset);
        let scan = Self::scan(&seg.file, 0, len, offsets, max_batch_bytes, |pos, h| {
            found.push((pos, *h))
        })
        .map_err(|e| LogError::io(format!("reading {}", path.display()), e))?;
        for (pos, h) in &found {
            seg.note_batch(*pos, h, index_interval_bytes);
        }
        seg.size = scan.good_end;
        let mut cut = None;
        if let Some(Problem { mut reason, torn }) = scan.problem {
            let bytes = len - scan.good_end;
            let mut kept_in = None;
            // A torn tail (the file ends inside a batch) is what a crash mid-write leaves
            // and holds nothing acknowledged. But a damaged length can look the same, so
            // the rest of the file is searched for a good batch: if one follows, this is
            // damage before fsynced data. Damage of any kind is kept before the cut.
            let later_good = if torn {
                Self::next_good_batch(&seg.file, scan.good_end, len, max_batch_bytes)
                    .map_err(|e| LogError::io(format!("reading {}", path.display()), e))?
            } else {
                None
            };
            if let Some(at) = later_good {
                reason = format!("{reason}; a good batch follows at byte {at}, so this is damage, not a torn tail");
            }
            if !torn || later_good.is_some() {
                kept_in = Some(keep_damaged(dir, &seg, scan.good_end, bytes)?);
            }
            seg.file
                .set_len(scan.good_end)
                .map_err(|e| LogError::io("cutting torn tail", e))?;
            cut = Some(Cut {
                segment: path,
                position: scan.good_end,
                bytes,
                reason,
                kept_in,
            });
        }
        // Whatever survived may still sit only in the page cache (a killed process, not a
        // lost machine): sync it before anyone is told it is durable.
        fault::sync_all(&seg.file, &seg.path)
            .map_err(|e| LogError::io("syncing recovered segment", e))?;
        // Rolling by age counts from the first batch's time, as it did before the restart.
        if let Some((_, first)) = found.first() {
            seg.first_append_ms = Some(first.max_timestamp.max(0) as u64);
        }
        // The active segment's indexes live in memory; stale files on disk would be
        // mistaken for sealed ones after the next roll.
        let _ = std::fs::remove_file(index_path(dir, base_offset));
        let _ = std::fs::remove_file(time_index_path(dir, base_offset));
        Ok((seg, cut, found.into_iter().map(|(_, h)| h).collect()))
    }

    /// Opens a sealed segment, trusting its indexes when they are whole and agree with
    /// the file's tail; otherwise recovers it like the active segment and seals it again.
    pub fn open_sealed(
        dir: &Path,
        base_offset: u64,
        index_interval_bytes: u64,
        max_batch_bytes: usize,
    ) -> Result<(Segment, Option<Cut>)> {
        let path = log_path(dir, base_offset);
        let (file, len) = Self::open_rw(&path)?;
        let index = Index::<OffsetEntry>::open(&index_path(dir, base_offset))
            .map_err(|e| LogError::io("opening index", e))?;
        let time_index = Index::<TimeEntry>::open(&time_index_path(dir, base_offset))
            .map_err(|e| LogError::io("opening time index", e))?;
        if let (Some(index), Some(time_index)) = (index, time_index) {
            let last = index.last().map_err(|e| LogError::io("reading index", e))?;
            let last_ts = time_index
                .last()
                .map_err(|e| LogError::io("reading time index", e))?;
            let from = last.map_or(0, |e| e.position as u64);
            let from_offset = base_offset + last.map_or(0, |e| e.rel_offset as u64);
            if from <= len && (last.is_some() || len == 0) {
                let mut tail_last = None;
                let offsets = from_offset..offset_range_end(base_offset);
                let scan = Self::scan(&file, from, len, offsets, max_batch_bytes, |_, h| {
                    tail_last = Some(*h)
                })
                .map_err(|e| LogError::io(format!("reading {}", path.display()), e))?;
                if scan.problem.is_none() {
                    let mut seg = Segment::empty(base_offset, path, file);
                    seg.size = len;
                    seg.next_offset = tail_last.map_or(base_offset, |h| h.last_offset() as u64 + 1);
                    if let Some(t) = last_ts {
                        seg.max_timestamp = t.timestamp;
                        seg.max_timestamp_offset = base_offset + t.rel_offset as u64;
                        seg.last_indexed_timestamp = t.timestamp;
                    }
                    seg.index = index;
                    seg.time_index = time_index;
                    return Ok((seg, None));
                }
            }
        }
        drop(file);
        let (mut seg, cut, _) =
            Self::recover(dir, base_offset, index_interval_bytes, max_batch_bytes)?;
        seg.seal()?;
        Ok((seg, cut))
    }

    /// File position of the batch holding `offset`, or of the first batch after it;
    /// `None` when no batch at or after `offset` is in the first `limit` bytes.
    pub fn position_for(&self, offset: u64, limit: u64) -> Result<Option<u64>> {
        let rel = offset.saturating_sub(self.base_offset).min(u32::MAX as u64) as u32;
        let mut pos = match self
            .index
            .floor(rel, false)
            .map_err(|e| LogError::io("reading index", e))?
        {
            Some(e) => e.position as u64,
            None => 0,
        };
        let mut header = [0u8; BATCH_HEADER_BYTES];
        while pos + BATCH_HEADER_BYTES as u64 <= limit {
            self.file
                .read_exact_at(&mut header, pos)
                .map_err(|e| LogError::io(format!("reading {}", self.path.display()), e))?;
            let h = BatchHeader::parse(&header).map_err(|e| self.corrupt(pos, e.to_string()))?;
            if h.last_offset() >= offset as i64 {
                return Ok(Some(pos));
            }
            pos += h.total_bytes() as u64;
        }
        Ok(None)
    }

    /// What must hold for a segment after every change, checked in constant time (the
    /// log runs it under `debug_assert!`): offsets and sizes agree with the last entries
    /// of the in-memory indexes. What is on disk is not read: damage found there is an
    /// operating error ([`LogError::Corrupt`]), not a broken invariant.
    pub(crate) fn check_invariants(&self) -> std::result::Result<(), String> {
        let name = self.path.display();
        if self.next_offset < self.base_offset {
            return Err(format!(
                "{name}: next offset {} is below the base offset {}",
                self.next_offset, self.base_offset
            ));
        }
        if self.next_offset - self.base_offset > u32::MAX as u64 + 1 {
            return Err(format!("{name}: offsets past the 32-bit relative range"));
        }
        if let Some(e) = self.index.last_in_memory() {
            if e.position as u64 >= self.size
                || self.base_offset + e.rel_offset as u64 >= self.next_offset
            {
                return Err(format!(
                    "{name}: index entry {e:?} points past the end (size {}, next offset {})",
                    self.size, self.next_offset
                ));
            }
        }
        if let Some(t) = self.time_index.last_in_memory() {
            if t.timestamp != self.last_indexed_timestamp
                || t.timestamp > self.max_timestamp
                || self.base_offset + t.rel_offset as u64 >= self.next_offset
            {
                return Err(format!(
                    "{name}: time index entry {t:?} disagrees with the segment (max timestamp {}, last indexed {}, next offset {})",
                    self.max_timestamp, self.last_indexed_timestamp, self.next_offset
                ));
            }
        }
        if self.last_indexed_timestamp > self.max_timestamp {
            return Err(format!(
                "{name}: indexed timestamp {} is past the max timestamp {}",
                self.last_indexed_timestamp, self.max_timestamp
            ));
        }
        Ok(())
    }

    pub(crate) fn corrupt(&self, position: u64, reason: String) -> LogError {
        LogError::Corrupt {
            segment: self.path.display().to_string(),
            position,
            reason,
        }
    }
}

/// Copies the `bytes` damaged bytes of `seg` from `position` into
/// `<base>.log.cut-<position>` beside it, durably, before they are cut.
fn keep_damaged(dir: &Path, seg: &Segment, position: u64, bytes: u64) -> Result<PathBuf> {
    let keep = dir.join(format!("{:020}.log.cut-{position}", seg.base_offset));
    // Streamed, so that keeping a large damaged tail costs no memory.
    let mut from = &*seg.file;
    from.seek(SeekFrom::Start(position))
        .map_err(|e| LogError::io("reading damaged bytes", e))?;
    let mut to = File::create(&keep).map_err(|e| LogError::io("keeping damaged bytes", e))?;
    std::io::copy(&mut from.take(bytes), &mut to)
        .map_err(|e| LogError::io("keeping damaged bytes", e))?;
    fault::sync_all(&to, &keep).map_err(|e| LogError::io("syncing kept bytes", e))?;
    fault::sync_dir(dir).map_err(|e| LogError::io("syncing partition folder", e))?;
    Ok(keep)
}

/// Reads whole batches of `file` starting at `position`, up to `max_bytes`, stopping
/// before `limit` bytes and before offset `visible_end`. With [`FirstBatch::Whole`] the
/// first batch is returned whole even when it alone is larger than `max_bytes`; with
/// [`FirstBatch::WithinLimit`] nothing is returned then. Batches are never cut.
#[allow(clippy::too_many_arguments)]
pub fn read_batches(
    file: &File,
    path: &Path,
    position: u64,
    max_bytes: usize,
    first_batch: FirstBatch,
    limit: u64,
    visible_end: u64,
    max_batch_bytes: usize,
) -> Result<Vec<u8>> {
    let corrupt = |at: u64, reason: String| LogError::Corrupt {
        segment: path.display().to_string(),
        position: at,
        reason,
    };
    if position + BATCH_PREFIX_BYTES as u64 > limit {
        return Ok(Vec::new());
    }
    let avail = (limit - position) as usize;
    let mut prefix = [0u8; BATCH_PREFIX_BYTES];
    file.read_exact_at(&mut prefix, position)
        .map_err(|e| LogError::io(format!("reading {}", path.display()), e))?;
    let (_, first) = batch::read_prefix(&prefix, max_batch_bytes)
        .map_err(|e| corrupt(position, e.to_string()))?;
    let want = match first_batch {
        FirstBatch::Whole => max_bytes.max(first),
        FirstBatch::WithinLimit if first > max_bytes => return Ok(Vec::new()),
        FirstBatch::WithinLimit => max_bytes,
    }
    .min(avail);
    let mut buf = vec![0u8; want];
    file.read_exact_at(&mut buf, position)
        .map_err(|e| LogError::io(format!("reading {}", path.display()), e))?;
    let mut p = 0usize;
    while p + BATCH_PREFIX_BYTES <= buf.len() {
        let (base, total) = batch::read_prefix(&buf[p..], max_batch_bytes)
            .map_err(|e| corrupt(position + p as u64, e.to_string()))?;
        if base < 0 || base as u64 >= visible_end || p + total > buf.len() {
            break;
        }
        p += total;
    }
    buf.truncate(p);
    debug_assert!(
        p <= max_bytes || (first_batch == FirstBatch::Whole && p == first),
        "a read of at most {max_bytes} bytes gave {p}"
    );
    Ok(buf)
}

/// Whether a read bounded by a byte limit returns its first batch when that batch
/// alone is larger than the limit (so that a reader can always make progress), as
/// Kafka does for the first partition of a fetch that has data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstBatch {
    /// The first batch whole, whatever its size; then more only within the limit.
    Whole,
    /// Only batches within the limit: nothing when the first is larger.
    WithinLimit,
}
