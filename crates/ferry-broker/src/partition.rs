//! A partition: its log plus the signal long-polling readers wait on.

use crate::error::{BrokerError, Result};
use ferry_log::batch::{self, DecodeLimits};
use ferry_log::{BatchHeader, PartitionLog, Record};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;

pub struct Partition {
    pub id: u32,
    pub log: PartitionLog,
    /// The latest readable offset, published after each append becomes visible.
    latest: watch::Sender<u64>,
    pub(crate) last_flush: std::sync::Mutex<Instant>,
    /// Shared by every partition of the broker: woken when any becomes readable further.
    any_readable: Arc<tokio::sync::Notify>,
    /// Appends and syncs for requests (see [`crate::writer`]).
    pub(crate) writer: crate::writer::Writer,
}

/// Records read from one partition.
#[derive(Debug, Clone)]
pub struct ReadRecords {
    pub records: Vec<Record>,
    /// Offset to read next.
    pub next_offset: u64,
    pub earliest: u64,
    pub latest: u64,
}

impl Partition {
    pub fn new(id: u32, log: PartitionLog, any_readable: Arc<tokio::sync::Notify>) -> Arc<Self> {
        let (latest, _) = watch::channel(log.latest());
        Arc::new(Partition {
            id,
            log,
            latest,
            last_flush: std::sync::Mutex::new(Instant::now()),
            any_readable,
            writer: Default::default(),
        })
    }

    /// Wakes readers waiting for records if the readable end moved.
    pub fn publish_latest(&self) {
        let now = self.log.latest();
        let moved = self.latest.send_if_modified(|v| {
            if now > *v {
                *v = now;
                true
            } else {
                false
            }
        });
        if moved {
            self.any_readable.notify_waiters();
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.latest.subscribe()
    }

    /// Reads and decodes committed records from `offset` (blocking I/O): only up to
    /// the last stable offset, without control batches or aborted transactions' records,
    /// as a Kafka `read_committed` consumer sees them. Stops at `max_records`
    /// or once `max_bytes` of keys and values are gathered (always returning at least
    /// one record when there is one). A corrupt batch ends the read: what precedes it
    /// is returned; if nothing does, the corruption is the error.
    pub fn read_records(
        &self,
        offset: u64,
        max_records: usize,
        max_bytes: usize,
        limits: &DecodeLimits,
    ) -> Result<ReadRecords> {
        let mut got = Gathered {
            records: Vec::new(),
            bytes: 0,
            next: offset,
            max_records,
            max_bytes,
        };
        let mut bounds = (0, 0);
        // Read little first (a few records may be all that is wanted), more each time.
        let read_max = max_bytes.clamp(64 * 1024, 4 * 1024 * 1024);
        let mut read_size = 64 * 1024;
        'outer: loop {
            if got.records.len() >= max_records || got.bytes >= max_bytes {
                break;
            }
            let size = read_size;
            read_size = (read_size * 2).min(read_max);
            let stable = self.log.last_stable();
            let read = match self.log.read_batches_until(
                got.next,
                size,
                ferry_log::FirstBatch::Whole,
                stable,
            ) {
                Ok(r) => r,
                Err(e) if !got.records.is_empty() => {
                    tracing::warn!(partition = self.id, offset = got.next, error = %e, "Read stopped early.");
                    break;
                }
                Err(e) => return Err(BrokerError::from_log(self.id, e)),
            };
            bounds = (read.earliest, read.latest);
            if read.batches.is_empty() {
                break;
            }
            let log = &self.log;
            let aborted = |h: &BatchHeader| {
                h.is_transactional() && log.is_aborted(h.producer_id, h.base_offset as u64)
            };
            if !got.take_batches(self.id, read.batches, limits, aborted)? {
                break 'outer;
            }
        }
        Ok(ReadRecords {
            records: got.records,
            next_offset: got.next,
            earliest: bounds.0,
            latest: bounds.1,
        })
    }
}

/// The records a read has gathered so far, within its limits.
pub(crate) struct Gathered {
    pub(crate) records: Vec<Record>,
    /// Bytes of keys and values in `records`.
    pub(crate) bytes: usize,
    /// Offset to read next.
    pub(crate) next: u64,
    pub(crate) max_records: usize,
    pub(crate) max_bytes: usize,
}

impl Gathered {
    /// Takes the records of whole batches read from `partition`, skipping those
    /// `aborted` says belong to an aborted transaction. False when the read is full or
    /// ended early: a corrupt batch after some records ends it (logged); one before
    /// any is the error.
    pub(crate) fn take_batches(
        &mut self,
        partition: u32,
        batches: bytes::Bytes,
        limits: &DecodeLimits,
        aborted: impl Fn(&BatchHeader) -> bool,
    ) -> Result<bool> {
        for one in batch::Batches::new(batches) {
            let wanted = self.wanted();
            if wanted == 0 {
                return Ok(false);
            }
            let decoded = one
                .and_then(|one| batch::decode_records_from(&one, limits, self.next as i64, wanted));
            let (header, batch_records) = match decoded {
                Ok(d) => d,
                Err(e) if self.records.is_empty() => {
                    return Err(BrokerError::Corrupt {
                        offset: Some(self.next),
                        reason: e.to_string(),
                    })
                }
                Err(e) => {
                    tracing::warn!(partition, offset = self.next, error = %e, "Corrupt batch; serving what precedes it.");
                    return Ok(false);
                }
            };
            if aborted(&header) {
                self.next = self.next.max(header.last_offset() as u64 + 1);
                continue;
            }
            if !self.take(&header, batch_records, wanted) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    pub(crate) fn wanted(&self) -> usize {
        self.max_records.saturating_sub(self.records.len())
    }

    /// Takes the records decoded from one batch (at most `wanted` were decoded); false
    /// when the read is full or the batch was not decoded to its end.
    pub(crate) fn take(
        &mut self,
        header: &BatchHeader,
        batch_records: Vec<Record>,
        wanted: usize,
    ) -> bool {
        // Decoding stopped before the batch's end: the rest is for the next read.
        let complete = batch_records.len() < wanted
            || batch_records
                .last()
                .is_some_and(|r| r.offset >= header.last_offset());
        if !header.is_control() {
            for r in batch_records {
                if (r.offset as u64) < self.next {
                    continue;
                }
                let size =
                    r.key.as_ref().map_or(0, |k| k.len()) + r.value.as_ref().map_or(0, |v| v.len());
                if self.records.len() >= self.max_records
                    || (!self.records.is_empty() && self.bytes + size > self.max_bytes)
                {
                    return false;
                }
                self.bytes += size;
                self.next = r.offset as u64 + 1;
                self.records.push(r);
            }
        }
        if !complete {
            return false;
        }
        self.next = self.next.max(header.last_offset() as u64 + 1);
        true
    }
}
