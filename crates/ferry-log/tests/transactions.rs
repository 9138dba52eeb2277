//! Transactions in one partition: the last stable offset, the aborted-transactions
//! index, reads bounded by the last stable offset, and the index rebuilt after a
//! restart.

mod common;
use common::{batch_of, small};
use ferry_log::batch::{build_control_batch, BatchHeader, Batches};
use ferry_log::{AbortedTxn, FirstBatch, PartitionLog};

/// A transactional batch of `producer_id` (epoch 0) starting at sequence `seq`.
fn txn_batch(values: &[&str], producer_id: i64, seq: i32) -> Vec<u8> {
    let mut b = batch_of(values, 1_000);
    b[21..23].copy_from_slice(&0x10i16.to_be_bytes());
    b[43..51].copy_from_slice(&producer_id.to_be_bytes());
    b[51..53].copy_from_slice(&0i16.to_be_bytes());
    b[53..57].copy_from_slice(&seq.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

fn append(log: &PartitionLog, mut b: Vec<u8>) -> u64 {
    let info = log.append(&mut b, 0).unwrap();
    log.wait_durable(info.end_offset).unwrap();
    info.base_offset
}

fn marker(log: &PartitionLog, producer_id: i64, commit: bool) -> u64 {
    append(log, build_control_batch(producer_id, 0, commit, 0, 2_000))
}

#[test]
fn the_last_stable_offset_stops_at_the_first_open_transaction_until_its_marker() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = PartitionLog::open(dir.path(), small()).unwrap();
    append(&log, batch_of(&["plain"], 1_000));
    assert_eq!(log.last_stable(), 1);
    let first = append(&log, txn_batch(&["a", "b"], 7, 0));
    append(&log, batch_of(&["after"], 1_000));
    assert_eq!(log.latest(), 4);
    assert_eq!(log.last_stable(), first);
    // A committed read stops before the open transaction.
    let read = log
        .read_batches_until(0, 1 << 20, FirstBatch::Whole, log.last_stable())
        .unwrap();
    assert_eq!(Batches::new(read.batches).count(), 1);
    let m = marker(&log, 7, true);
    assert_eq!(m, 4);
    assert_eq!(log.last_stable(), 5);
    assert!(log.aborted_in(0, 5).is_empty());
}

#[test]
fn aborted_transactions_are_listed_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (log, _) = PartitionLog::open(dir.path(), small()).unwrap();
        // Enough batches to cross segment boundaries.
        for i in 0..20 {
            append(&log, txn_batch(&["x"; 8], 1, i * 8));
        }
        marker(&log, 1, false);
        append(&log, txn_batch(&["y"], 2, 0));
        marker(&log, 2, true);
        append(&log, txn_batch(&["open"], 3, 0));
        assert_eq!(log.last_stable(), 163);
        assert!(log.stats().segments > 1);
        log.close().unwrap();
    }
    let (log, _) = PartitionLog::open(dir.path(), small()).unwrap();
    assert_eq!(
        log.aborted_in(0, 200),
        vec![AbortedTxn {
            producer_id: 1,
            first_offset: 0,
            last_offset: 160
        }]
    );
    assert!(log.is_aborted(1, 8));
    assert!(!log.is_aborted(2, 161));
    assert_eq!(log.last_stable(), 163, "the open transaction is still open");
    assert_eq!(log.open_transactions(), vec![(3, 163)]);
    marker(&log, 3, false);
    assert_eq!(log.last_stable(), log.latest());
}

#[test]
fn a_partition_without_transactions_has_no_flag_file_and_its_lso_is_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = PartitionLog::open(dir.path(), small()).unwrap();
    append(&log, batch_of(&["a"], 1));
    assert_eq!(log.last_stable(), log.latest());
    assert!(!dir
        .path()
        .join(ferry_log::txn::TRANSACTIONAL_FLAG_FILE)
        .exists());
    let h = BatchHeader::parse(&build_control_batch(5, 1, true, 0, 0)).unwrap();
    assert!(h.is_control() && h.is_transactional());
}

#[test]
fn a_batch_refused_by_its_admission_check_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = PartitionLog::open(dir.path(), small()).unwrap();
    let mut b = txn_batch(&["a"], 9, 0);
    let refused = log
        .append_admitted(&mut b, 0, |h| {
            assert!(h.is_transactional());
            Err("not in a transaction")
        })
        .unwrap();
    assert_eq!(refused, Err("not in a transaction"));
    assert_eq!(log.next_offset(), 0);
    let mut b = txn_batch(&["a"], 9, 0);
    let admitted = log
        .append_admitted(&mut b, 0, |_| Ok::<(), ()>(()))
        .unwrap();
    assert_eq!(admitted.map(|i| i.base_offset), Ok(0));
    // A retry of a stored batch is answered with its offsets, not checked again.
    let mut again = txn_batch(&["a"], 9, 0);
    let retried = log
        .append_admitted(&mut again, 0, |_| Err("checked"))
        .unwrap();
    assert!(retried.is_ok_and(|i| i.duplicate));
}
