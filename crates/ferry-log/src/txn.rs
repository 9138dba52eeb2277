//! Transactions as one partition sees them: which producers have a transaction open
//! here (and from which offset), which transactions were aborted (so that
//! `read_committed` readers skip their records), and the last stable offset.
//!
//! A producer's transactional batches open a transaction at the first one's offset; a
//! control batch (a COMMIT or ABORT marker written by the transaction coordinator)
//! closes it. An aborted transaction is remembered as (producer id, first offset,
//! marker offset).
//!
//! # Last stable offset
//!
//! The first offset of the earliest transaction still open, else the readable end
//! (Kafka's high watermark). A transaction counts as open until its marker is
//! readable: under durability `always` a marker appended but not yet synced must not
//! let a reader see the records before it, which a crash could still leave without
//! their marker. With no transaction open the last stable offset is the readable end,
//! read without a lock ([`TxnIndex::is_empty`] is checked first by the log).
//!
//! # After a restart
//!
//! A partition that ever took a transactional batch has a file named
//! [`TRANSACTIONAL_FLAG_FILE`] in its folder (made durable before that first batch is
//! appended); when it is present the log scans the batch headers of every segment at
//! open and rebuilds this index (reading the record of each control batch). Partitions
//! that never saw a transaction pay nothing.
//!
//! # Memory
//!
//! One entry per open transaction (at most one per producer) and one per aborted
//! transaction still in the log; aborted entries below the log's start are dropped by
//! [`TxnIndex::forget_below`].

use std::collections::BTreeMap;

/// Present in a partition folder once the partition has taken a transactional batch.
pub const TRANSACTIONAL_FLAG_FILE: &str = "transactional";

/// Control record type of an ABORT marker (the key's second `i16`).
pub const CONTROL_ABORT: i16 = 0;
/// Control record type of a COMMIT marker.
pub const CONTROL_COMMIT: i16 = 1;

/// A transaction that was aborted: readers at `read_committed` skip the producer's
/// transactional records from `first_offset` up to the marker at `last_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: u64,
    /// The offset of the ABORT marker.
    pub last_offset: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OpenTxn {
    first_offset: u64,
    /// The offset of the marker that closed it, once one is appended; the transaction
    /// counts as open until the marker is readable.
    marker: Option<u64>,
}

/// The transactions of one partition (see the module doc).
#[derive(Debug, Default)]
pub struct TxnIndex {
    open: BTreeMap<i64, OpenTxn>,
    /// By marker offset, increasing.
    aborted: Vec<AbortedTxn>,
}

/// A control record's key: `version: i16 (0)`, `type: i16`; returns the type.
pub fn control_type(key: &[u8]) -> Option<i16> {
    if key.len() < 4 {
        return None;
    }
    let version = i16::from_be_bytes([key[0], key[1]]);
    (version == 0).then(|| i16::from_be_bytes([key[2], key[3]]))
}

impl TxnIndex {
    /// No transaction is open (closed ones whose markers are not yet readable count as
    /// open).
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Notes a transactional data batch of `producer_id` at `base_offset`.
    pub fn data(&mut self, producer_id: i64, base_offset: u64) {
        let entry = self.open.entry(producer_id).or_insert(OpenTxn {
            first_offset: base_offset,
            marker: None,
        });
        if entry.marker.is_some() {
            // The previous transaction's marker is appended; this batch opens the next.
            // Readers cannot be past that marker before it is readable, and by then
            // the next transaction's first offset is what bounds them.
            *entry = OpenTxn {
                first_offset: base_offset,
                marker: None,
            };
        }
    }

    /// Notes a marker of `producer_id` at `offset` (`commit` or abort). A marker for a
    /// producer with no transaction open here changes nothing (a coordinator finishing
    /// a decision again after a restart writes markers twice).
    pub fn marker(&mut self, producer_id: i64, offset: u64, commit: bool) {
        let Some(entry) = self.open.get_mut(&producer_id) else {
            return;
        };
        if entry.marker.is_some() {
            return;
        }
        debug_assert!(entry.first_offset < offset, "a marker before its data");
        entry.marker = Some(offset);
        if !commit {
            debug_assert!(self.aborted.last().is_none_or(|a| a.last_offset < offset));
            self.aborted.push(AbortedTxn {
                producer_id,
                first_offset: entry.first_offset,
                last_offset: offset,
            });
        }
    }

    /// Forgets transactions whose markers are below `visible` (readable).
    pub fn settle(&mut self, visible: u64) {
        self.open
            .retain(|_, t| t.marker.is_none_or(|marker| marker >= visible));
    }

    /// The last stable offset for a log whose readable end is `visible`.
    pub fn last_stable(&self, visible: u64) -> u64 {
        self.open
            .values()
            .filter(|t| t.marker.is_none_or(|m| m >= visible))
            .map(|t| t.first_offset)
            .min()
            .unwrap_or(visible)
            .min(visible)
    }

    /// The aborted transactions with records in `from..to`.
    pub fn aborted_in(&self, from: u64, to: u64) -> Vec<AbortedTxn> {
        let start = self.aborted.partition_point(|a| a.last_offset < from);
        self.aborted[start..]
            .iter()
            .filter(|a| a.first_offset < to)
            .copied()
            .collect()
    }

    /// Whether a transactional batch of `producer_id` at `offset` belongs to an aborted
    /// transaction.
    pub fn is_aborted(&self, producer_id: i64, offset: u64) -> bool {
        // A producer's transactions follow one another: only its first aborted one
        // ending at or after `offset` can hold it.
        let start = self.aborted.partition_point(|a| a.last_offset < offset);
        self.aborted[start..]
            .iter()
            .find(|a| a.producer_id == producer_id)
            .is_some_and(|a| a.first_offset <= offset)
    }

    /// The first offset of each open transaction, by producer id.
    pub fn open_transactions(&self) -> Vec<(i64, u64)> {
        self.open
            .iter()
            .filter(|(_, t)| t.marker.is_none())
            .map(|(p, t)| (*p, t.first_offset))
            .collect()
    }

    /// Checks what must hold for a log whose next offset is `end`: every open
    /// transaction and every marker lies below it, a marker follows its transaction's
    /// first offset, and aborted transactions are in marker order. `Err` names the
    /// first broken one.
    pub fn check(&self, end: u64) -> Result<(), String> {
        for (pid, t) in &self.open {
            if t.first_offset >= end || t.marker.is_some_and(|m| m >= end || m <= t.first_offset) {
                return Err(format!(
                    "producer {pid}'s open transaction {t:?} does not fit below {end}"
                ));
            }
        }
        for pair in self.aborted.windows(2) {
            if pair[0].last_offset >= pair[1].last_offset {
                return Err(format!("aborted transactions out of order: {pair:?}"));
            }
        }
        match self.aborted.last() {
            Some(a) if a.last_offset >= end || a.first_offset >= a.last_offset => Err(format!(
                "aborted transaction {a:?} does not fit below {end}"
            )),
            _ => Ok(()),
        }
    }

    /// Drops aborted transactions wholly below `offset` (the log's start).
    pub fn forget_below(&mut self, offset: u64) {
        let n = self.aborted.partition_point(|a| a.last_offset < offset);
        self.aborted.drain(..n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_stable_offset_is_the_first_offset_of_the_earliest_open_transaction() {
        let mut t = TxnIndex::default();
        assert_eq!(t.last_stable(10), 10);
        t.data(7, 10);
        t.data(7, 12);
        t.data(8, 11);
        assert_eq!(t.last_stable(14), 10);
        t.marker(7, 14, true);
        // The marker is not readable yet: still bounded by the transaction.
        assert_eq!(t.last_stable(14), 10);
        assert_eq!(t.last_stable(15), 11);
        t.settle(15);
        t.marker(8, 15, false);
        assert_eq!(t.last_stable(16), 16);
        t.settle(16);
        assert!(t.is_empty());
    }

    #[test]
    fn aborted_transactions_are_listed_for_the_range_read() {
        let mut t = TxnIndex::default();
        t.data(1, 0);
        t.data(2, 1);
        t.marker(1, 3, false);
        t.marker(2, 4, true);
        t.data(1, 5);
        t.marker(1, 6, false);
        t.settle(7);
        assert_eq!(
            t.aborted_in(0, 7),
            vec![
                AbortedTxn {
                    producer_id: 1,
                    first_offset: 0,
                    last_offset: 3
                },
                AbortedTxn {
                    producer_id: 1,
                    first_offset: 5,
                    last_offset: 6
                }
            ]
        );
        assert_eq!(t.aborted_in(4, 5), vec![]);
        assert_eq!(t.aborted_in(4, 6).len(), 1);
        assert!(t.is_aborted(1, 0));
        assert!(!t.is_aborted(2, 1));
        assert!(t.is_aborted(1, 5));
        assert!(!t.is_aborted(1, 4));
        t.forget_below(4);
        assert_eq!(t.aborted_in(0, 7).len(), 1);
    }

    #[test]
    fn a_marker_for_no_open_transaction_changes_nothing() {
        let mut t = TxnIndex::default();
        t.marker(3, 5, false);
        assert!(t.is_empty());
        assert_eq!(t.aborted_in(0, 10), vec![]);
    }

    #[test]
    fn control_keys_name_their_type() {
        assert_eq!(control_type(&[0, 0, 0, 1]), Some(CONTROL_COMMIT));
        assert_eq!(control_type(&[0, 0, 0, 0]), Some(CONTROL_ABORT));
        assert_eq!(control_type(&[0, 1, 0, 0]), None);
        assert_eq!(control_type(&[0]), None);
    }
}
