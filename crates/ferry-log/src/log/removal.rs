//! What leaves a partition log: segments past retention, records below the log start
//! offset (Kafka's DeleteRecords), and a checkpointed log's old segments. Removals hold
//! `removing` (see [`PartitionLog::close`]), then `inner` while segments are chosen; the
//! files are unlinked after `inner` is released.

use super::{PartitionLog, Segment};
use crate::error::{LogError, Result};
use crate::start;
use crate::sync::lock;

impl PartitionLog {
    /// Deletes whole sealed segments that are past the retention limits. Returns how
    /// many were deleted.
    pub fn apply_retention(
        &self,
        now_ms: u64,
        retention_ms: Option<u64>,
        retention_bytes: Option<u64>,
    ) -> Result<usize> {
        let _removing = lock(&self.removing);
        let mut doomed = Vec::new();
        {
            let mut inner = lock(&self.inner);
            if inner.closed {
                return Ok(0);
            }
            let mut total: u64 = inner.segments.values().map(|s| s.size).sum();
            let sealed: Vec<u64> = inner.segments.keys().copied().collect();
            let log_start = inner.log_start;
            for (i, base) in sealed
                .iter()
                .enumerate()
                .take(sealed.len().saturating_sub(1))
            {
                let seg = &inner.segments[base];
                // A segment ends where the next begins; one wholly below the log start
                // offset is left from a crash between keeping the offset and deleting.
                let below_start = sealed.get(i + 1).is_some_and(|next| *next <= log_start);
                let expired = retention_ms.is_some_and(|ms| {
                    seg.max_timestamp == i64::MIN
                        || (seg.max_timestamp.max(0) as u64).saturating_add(ms) < now_ms
                });
                let oversize = retention_bytes.is_some_and(|b| total.saturating_sub(seg.size) >= b);
                if !(expired || oversize || below_start) {
                    break;
                }
                total -= seg.size;
                if let Some(seg) = inner.segments.remove(base) {
                    doomed.push(seg);
                }
            }
            // Aborted transactions wholly gone need no entry any more.
            let earliest = inner.earliest();
            inner.txns.forget_below(earliest);
            debug_assert_eq!(self.invariants(&inner), Ok(()));
        }
        let n = doomed.len();
        for seg in doomed {
            let base = seg.base_offset;
            self.remove_segment(seg)?;
            tracing::info!(dir = %self.dir.display(), base_offset = base, "Deleted a segment past retention.");
        }
        Ok(n)
    }

    /// Deletes the files of a segment already taken out of the log.
    fn remove_segment(&self, seg: Segment) -> Result<()> {
        let base = seg.base_offset;
        drop(seg);
        for ext in ["log", "index", "timeindex"] {
            let path = self.dir.join(format!("{base:020}.{ext}"));
            if let Err(e) = std::fs::remove_file(&path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    return Err(LogError::io(format!("deleting {}", path.display()), e));
                }
            }
        }
        Ok(())
    }

    /// Moves the log start offset to `offset` (`None`: the readable end, Kafka's high
    /// watermark), durably, and deletes the sealed segments wholly below it. An offset
    /// at or below the current first readable offset changes nothing; one past the
    /// readable end is refused with [`LogError::OffsetOutOfRange`]. Returns the first
    /// readable offset afterwards (Kafka's low watermark).
    pub fn delete_records(&self, offset: Option<u64>) -> Result<u64> {
        let _removing = lock(&self.removing);
        let visible = self.latest();
        let (current, closed) = {
            let inner = lock(&self.inner);
            (inner.earliest(), inner.closed)
        };
        if closed {
            return Err(LogError::Closed);
        }
        let target = offset.unwrap_or(visible);
        if target > visible {
            return Err(LogError::OffsetOutOfRange {
                requested: target,
                earliest: current,
                latest: visible,
            });
        }
        if target <= current {
            return Ok(current);
        }
        // Readable but perhaps not yet synced (durability `interval` or `never`): what
        // lies below the start must be on disk first, so that after a crash the log
        // still reaches its start.
        self.wait_durable(target)?;
        start::store(&self.dir, target)?;
        let earliest = {
            let mut inner = lock(&self.inner);
            debug_assert!(target <= inner.next_offset);
            inner.log_start = target;
            let earliest = inner.earliest();
            inner.txns.forget_below(earliest);
            debug_assert_eq!(self.invariants(&inner), Ok(()));
            inner.earliest()
        };
        let removed = self.remove_below(target)?;
        tracing::info!(dir = %self.dir.display(), log_start = target, segments_deleted = removed, "Moved the log start offset.");
        Ok(earliest)
    }

    /// The idempotent producers this partition remembers.
    pub fn producers(&self) -> Vec<crate::producers::ProducerState> {
        lock(&self.inner).producers.states()
    }

    /// Deletes whole sealed segments whose records all lie below `offset` (the active
    /// segment is kept). Used by logs that are checkpointed, such as subscription
    /// journals. Returns how many were deleted.
    pub fn delete_before(&self, offset: u64) -> Result<usize> {
        let _removing = lock(&self.removing);
        self.remove_below(offset)
    }

    /// [`PartitionLog::delete_before`], with `removing` held by the caller.
    fn remove_below(&self, offset: u64) -> Result<usize> {
        let mut doomed = Vec::new();
        {
            let mut inner = lock(&self.inner);
            if inner.closed {
                return Ok(0);
            }
            let bases: Vec<u64> = inner.segments.keys().copied().collect();
            for pair in bases.windows(2) {
                // A segment ends where the next one begins.
                if pair[1] > offset {
                    break;
                }
                if let Some(seg) = inner.segments.remove(&pair[0]) {
                    doomed.push(seg);
                }
            }
            debug_assert_eq!(self.invariants(&inner), Ok(()));
        }
        let n = doomed.len();
        for seg in doomed {
            self.remove_segment(seg)?;
        }
        Ok(n)
    }
}
