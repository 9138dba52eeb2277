//! A partition's transactions: the last stable offset, the aborted transactions, and
//! reads bounded by the last stable offset (see [`crate::txn`]).

use super::{sync_dir, PartitionLog, ReadResult};
use crate::error::{LogError, Result};
use crate::fault;
use crate::segment::FirstBatch;
use crate::sync::lock;
use crate::txn::{AbortedTxn, TRANSACTIONAL_FLAG_FILE};
use std::fs::File;
use std::sync::atomic::Ordering;

impl PartitionLog {
    /// Creates [`TRANSACTIONAL_FLAG_FILE`] durably (the file and the folder synced), so
    /// that the transaction index is rebuilt after a restart.
    pub(super) fn mark_transactional(&self) -> Result<()> {
        let path = self.dir.join(TRANSACTIONAL_FLAG_FILE);
        let file = File::create(&path)
            .map_err(|e| LogError::io(format!("creating {}", path.display()), e))?;
        fault::sync_all(&file, &path)
            .map_err(|e| LogError::io(format!("syncing {}", path.display()), e))?;
        sync_dir(&self.dir)
    }

    /// The last stable offset: the first offset of the earliest open transaction, else
    /// the readable end. Costs one atomic load when no transaction is open.
    pub fn last_stable(&self) -> u64 {
        if !self.txns_open.load(Ordering::Acquire) {
            return self.latest();
        }
        let mut inner = lock(&self.inner);
        let visible = self.latest();
        inner.txns.settle(visible);
        self.txns_open
            .store(!inner.txns.is_empty(), Ordering::Release);
        let lso = inner.txns.last_stable(visible);
        debug_assert!(lso <= visible);
        lso
    }

    /// The aborted transactions with records in `from..to`, for `read_committed`
    /// readers.
    pub fn aborted_in(&self, from: u64, to: u64) -> Vec<AbortedTxn> {
        if !self.ever_transactional.load(Ordering::Acquire) {
            return Vec::new();
        }
        lock(&self.inner).txns.aborted_in(from, to)
    }

    /// Whether the transactional batch of `producer_id` at `offset` was aborted.
    pub fn is_aborted(&self, producer_id: i64, offset: u64) -> bool {
        lock(&self.inner).txns.is_aborted(producer_id, offset)
    }

    /// The transactions open in this partition: producer id and first offset.
    pub fn open_transactions(&self) -> Vec<(i64, u64)> {
        lock(&self.inner).txns.open_transactions()
    }

    /// As [`PartitionLog::read_batches`], but only batches before `end` (the last
    /// stable offset, for `read_committed` readers); `end` is capped at the readable
    /// end.
    pub fn read_batches_until(
        &self,
        offset: u64,
        max_bytes: usize,
        first_batch: FirstBatch,
        end: u64,
    ) -> Result<ReadResult> {
        self.read_batches_bounded(offset, max_bytes, first_batch, Some(end))
    }
}
