//! The log start offset: DeleteRecords moves the first readable offset forward, durably,
//! and whole segments below it are deleted.

mod common;
use common::{batch_of, small};
use ferry_log::batch::{decode_records, BatchHeader};
use ferry_log::{DecodeLimits, LogError, PartitionLog};
use std::path::Path;

/// A log of `n` records, one a batch, record `i` with timestamp `1000 + i`.
fn log_of(dir: &Path, n: u64) -> PartitionLog {
    let (log, _) = PartitionLog::open(dir, small()).unwrap();
    for i in 0..n {
        let mut b = batch_of(&[&format!("value-{i:04}")], 1000 + i as i64);
        let info = log.append(&mut b, 0).unwrap();
        log.wait_durable(info.end_offset).unwrap();
    }
    log
}

/// The offsets of the records read from `from` on.
fn offsets_from(log: &PartitionLog, from: u64) -> Vec<u64> {
    let mut out = Vec::new();
    let mut offset = from;
    loop {
        let r = log.read(offset, 4096).unwrap();
        if r.batches.is_empty() {
            return out;
        }
        for one in ferry_log::batch::Batches::new(r.batches) {
            let (_, recs) = decode_records(&one.unwrap(), &DecodeLimits::default()).unwrap();
            out.extend(
                recs.iter()
                    .map(|r| r.offset as u64)
                    .filter(|o| *o >= offset),
            );
        }
        offset = out.last().map_or(offset, |o| o + 1);
    }
}

fn segment_count(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".log")
        })
        .count()
}

#[test]
fn delete_records_moves_the_earliest_offset_deletes_whole_segments_and_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_of(dir.path(), 100);
    let before = segment_count(dir.path());
    assert!(before > 3, "small segments roll");
    assert_eq!(log.delete_records(Some(57)).unwrap(), 57);
    assert_eq!(log.stats().earliest, 57);
    assert!(
        segment_count(dir.path()) < before,
        "segments below 57 are gone"
    );
    match log.read(56, 100) {
        Err(LogError::OffsetOutOfRange {
            requested: 56,
            earliest: 57,
            latest: 100,
        }) => {}
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(offsets_from(&log, 57), (57..100).collect::<Vec<_>>());
    // A time before every record now finds the first readable one.
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((57, 1057)));
    drop(log);
    // As after kill -9: no close, no sync beyond what delete_records did.
    let (log, _) = PartitionLog::open(dir.path(), small()).unwrap();
    assert_eq!(log.stats().earliest, 57);
    assert_eq!(log.latest(), 100);
    assert_eq!(offsets_from(&log, 57), (57..100).collect::<Vec<_>>());
}

#[test]
fn delete_records_to_the_high_watermark_empties_the_partition_and_new_records_follow() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_of(dir.path(), 20);
    assert_eq!(log.delete_records(None).unwrap(), 20);
    let s = log.stats();
    assert_eq!((s.earliest, s.latest), (20, 20));
    assert!(log.read(20, 100).unwrap().batches.is_empty());
    let mut b = batch_of(&["next"], 5000);
    let info = log.append(&mut b, 0).unwrap();
    log.wait_durable(info.end_offset).unwrap();
    assert_eq!(info.base_offset, 20);
    assert_eq!(offsets_from(&log, 20), vec![20]);
}

#[test]
fn delete_records_below_the_start_changes_nothing_and_past_the_end_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_of(dir.path(), 10);
    assert_eq!(log.delete_records(Some(4)).unwrap(), 4);
    assert_eq!(log.delete_records(Some(2)).unwrap(), 4, "never moves back");
    assert_eq!(log.delete_records(Some(4)).unwrap(), 4);
    match log.delete_records(Some(11)) {
        Err(LogError::OffsetOutOfRange {
            requested: 11,
            earliest: 4,
            latest: 10,
        }) => {}
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(log.stats().earliest, 4);
}

#[test]
fn segments_left_below_the_start_by_a_crash_are_deleted_by_the_next_retention_check() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_of(dir.path(), 100);
    log.close().unwrap();
    drop(log);
    let before = segment_count(dir.path());
    // The start kept, then a crash before any segment was deleted.
    ferry_log::start::store(dir.path(), 80).unwrap();
    let (log, _) = PartitionLog::open(dir.path(), small()).unwrap();
    assert_eq!(log.stats().earliest, 80);
    assert_eq!(segment_count(dir.path()), before);
    assert!(log.apply_retention(0, None, None).unwrap() > 0);
    assert!(segment_count(dir.path()) < before);
    assert_eq!(log.stats().earliest, 80);
    assert_eq!(offsets_from(&log, 80), (80..100).collect::<Vec<_>>());
}

#[test]
fn a_start_past_the_end_after_damage_is_brought_back_to_the_end() {
    let dir = tempfile::tempdir().unwrap();
    log_of(dir.path(), 5).close().unwrap();
    ferry_log::start::store(dir.path(), 1_000).unwrap();
    let (log, _) = PartitionLog::open(dir.path(), small()).unwrap();
    let s = log.stats();
    assert_eq!((s.earliest, s.latest), (5, 5));
}

#[test]
fn appended_batches_carry_the_one_leader_epoch_whatever_the_producer_sent() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = PartitionLog::open(dir.path(), small()).unwrap();
    let mut b = batch_of(&["x"], 1);
    b[12..16].copy_from_slice(&7i32.to_be_bytes());
    let info = log.append(&mut b, 0).unwrap();
    log.wait_durable(info.end_offset).unwrap();
    let read = log.read(0, 4096).unwrap();
    let header = BatchHeader::parse(&read.batches).unwrap();
    assert_eq!(header.partition_leader_epoch, ferry_log::LEADER_EPOCH);
    assert_eq!(ferry_log::batch::verify_crc(&read.batches), Ok(()));
}

#[test]
fn the_idempotent_producers_of_a_partition_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = PartitionLog::open(dir.path(), small()).unwrap();
    let mut b = batch_of(&["a", "b", "c"], 4242);
    b[43..51].copy_from_slice(&77i64.to_be_bytes());
    b[51..53].copy_from_slice(&3i16.to_be_bytes());
    b[53..57].copy_from_slice(&0i32.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    log.append(&mut b, 0).unwrap();
    let p = log.producers();
    assert_eq!(p.len(), 1);
    assert_eq!(
        (
            p[0].producer_id,
            p[0].epoch,
            p[0].last_sequence,
            p[0].last_timestamp
        ),
        (77, 3, 2, 4242)
    );
}
