//! Behaviour of the partition log through its public interface.

mod common;
use common::{batch_of, small};
use ferry_log::batch::decode_records;
use ferry_log::{DecodeLimits, Durability, LogConfig, LogError, PartitionLog};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

fn append(log: &PartitionLog, values: &[&str], ts: i64) -> u64 {
    let mut b = batch_of(values, ts);
    let info = log.append(&mut b, 0).unwrap();
    log.wait_durable(info.end_offset).unwrap();
    info.base_offset
}

/// Every value from `from` on, in order, reading batch by batch.
fn read_all(log: &PartitionLog, from: u64) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut offset = from;
    loop {
        let r = log.read(offset, 300).unwrap();
        if r.batches.is_empty() {
            return out;
        }
        let mut p = 0;
        while p < r.batches.len() {
            let (_, total) = ferry_log::batch::read_prefix(&r.batches[p..], usize::MAX).unwrap();
            let (_, recs) =
                decode_records(&r.batches.slice(p..p + total), &DecodeLimits::default()).unwrap();
            for rec in recs {
                if rec.offset as u64 >= offset {
                    out.push((
                        rec.offset as u64,
                        String::from_utf8(rec.value.unwrap().to_vec()).unwrap(),
                    ));
                }
            }
            p += total;
        }
        offset = out.last().map_or(offset, |(o, _)| o + 1);
    }
}

#[test]
fn appended_records_read_back_in_order_across_segments_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let expected: Vec<String> = (0..200).map(|i| format!("value-{i:04}")).collect();
    {
        let (log, cuts) = PartitionLog::open(dir.path(), small()).unwrap();
        assert!(cuts.is_empty());
        for chunk in expected.chunks(3) {
            let refs: Vec<&str> = chunk.iter().map(|s| s.as_str()).collect();
            append(&log, &refs, 1000);
        }
        assert!(log.stats().segments > 3, "small segments roll");
        let got = read_all(&log, 0);
        assert_eq!(
            got.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>(),
            expected
        );
        log.close().unwrap();
    }
    let (log, cuts) = PartitionLog::open(dir.path(), small()).unwrap();
    assert!(cuts.is_empty());
    assert_eq!(log.latest(), 200);
    let got = read_all(&log, 137);
    assert_eq!(got.first().unwrap(), &(137, "value-0137".to_string()));
    assert_eq!(got.len(), 63);
    assert_eq!(append(&log, &["after"], 1000), 200);
}

#[test]
fn reading_before_the_earliest_or_past_the_latest_says_both() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = PartitionLog::open(dir.path(), small()).unwrap();
    append(&log, &["a", "b"], 1);
    match log.read(5, 100) {
        Err(LogError::OffsetOutOfRange {
            requested: 5,
            earliest: 0,
            latest: 2,
        }) => {}
        other => panic!("unexpected {other:?}"),
    }
    assert!(log.read(2, 100).unwrap().batches.is_empty());
}

fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

#[test]
fn a_torn_tail_is_cut_at_the_last_good_batch() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (log, _) = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
        for i in 0..10 {
            append(&log, &[&format!("v{i}")], 1);
        }
    }
    let seg = segment_files(dir.path()).pop().unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    // A crash in the middle of a write: half a batch at the end.
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 7).unwrap();
    let (log, cuts) = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(cuts.len(), 1);
    assert!(
        cuts[0].kept_in.is_none(),
        "a torn tail is not worth keeping"
    );
    assert_eq!(log.latest(), 9);
    assert_eq!(read_all(&log, 0).len(), 9);
    assert_eq!(append(&log, &["next"], 1), 9);
}

#[test]
fn garbage_after_the_last_batch_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (log, _) = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
        append(&log, &["a", "b", "c"], 1);
    }
    let seg = segment_files(dir.path()).pop().unwrap();
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&[0xAB; 100]).unwrap();
    let (log, cuts) = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(cuts[0].bytes, 100);
    assert_eq!(log.latest(), 3);
}

#[test]
fn damage_in_the_middle_is_cut_but_the_bytes_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (log, _) = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
        for i in 0..5 {
            append(&log, &[&format!("value number {i}")], 1);
        }
    }
    let seg = segment_files(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let one = bytes.len() / 5;
    bytes[2 * one + one - 3] ^= 0xFF; // inside the third batch's last record
    std::fs::write(&seg, &bytes).unwrap();
    let (log, cuts) = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(log.latest(), 2, "serves what precedes the damage");
    let kept = cuts[0]
        .kept_in
        .clone()
        .expect("good batches followed, so the bytes are kept");
    assert_eq!(std::fs::read(kept).unwrap(), bytes[2 * one..]);
    assert_eq!(read_all(&log, 0).len(), 2);
}

#[test]
fn a_batch_past_the_segments_offset_range_is_cut_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (log, _) = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
        append(&log, &["a"], 1);
    }
    let seg = segment_files(dir.path()).pop().unwrap();
    // Indexes count offsets from the segment's base in 32 bits; Ferry never writes past.
    let mut far = batch_of(&["far"], 1);
    ferry_log::batch::set_base_offset(&mut far, 1 << 32);
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&far).unwrap();
    let (log, cuts) = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(cuts.len(), 1);
    assert!(
        cuts[0].kept_in.is_some(),
        "a whole batch is damage, not a torn tail"
    );
    assert_eq!(log.latest(), 1);
    assert_eq!(append(&log, &["b"], 1), 1);
    assert_eq!(log.check_invariants(), Ok(()));
}

#[test]
fn a_missing_or_broken_index_of_a_sealed_segment_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (log, _) = PartitionLog::open(dir.path(), small()).unwrap();
        for i in 0..100 {
            append(&log, &[&format!("v{i:03}")], 1);
        }
    }
    let first_index = dir.path().join(format!("{:020}.index", 0));
    std::fs::remove_file(&first_index).unwrap();
    let second = segment_files(dir.path())[1].with_extension("index");
    std::fs::write(&second, [1u8; 5]).unwrap();
    let (log, _) = PartitionLog::open(dir.path(), small()).unwrap();
    assert!(first_index.exists());
    let got = read_all(&log, 0);
    assert_eq!(got.len(), 100);
    assert!(got
        .iter()
        .enumerate()
        .all(|(i, (o, v))| *o == i as u64 && *v == format!("v{i:03}")));
}

#[test]
fn retention_deletes_whole_old_segments_and_keeps_the_active_one() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = PartitionLog::open(dir.path(), small()).unwrap();
    for i in 0..60 {
        append(&log, &[&format!("value-{i:04}")], 1_000 + i);
    }
    let before = log.stats();
    assert!(before.segments > 2);
    // Every record is older than an hour at "now" = 10 hours.
    let deleted = log
        .apply_retention(36_000_000, Some(3_600_000), None)
        .unwrap();
    assert_eq!(deleted, before.segments - 1);
    let after = log.stats();
    assert_eq!(after.segments, 1);
    assert!(after.earliest > 0);
    assert!(matches!(
        log.read(0, 100),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert_eq!(
        read_all(&log, after.earliest).last().unwrap().1,
        "value-0059"
    );
}

#[test]
fn retention_by_bytes_keeps_the_newest_data_under_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = PartitionLog::open(dir.path(), small()).unwrap();
    for i in 0..100 {
        append(&log, &[&format!("value-{i:04}")], 1);
    }
    log.apply_retention(0, None, Some(2048)).unwrap();
    let s = log.stats();
    assert!(s.size_bytes <= 2048 + 1024, "size {}", s.size_bytes);
    assert_eq!(read_all(&log, s.earliest).last().unwrap().1, "value-0099");
}

#[test]
fn time_lookup_finds_the_first_record_at_or_after_a_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = PartitionLog::open(dir.path(), small()).unwrap();
    for i in 0..100i64 {
        append(&log, &[&format!("v{i}")], 10_000 + i * 10);
    }
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((0, 10_000)));
    assert_eq!(
        log.offset_for_timestamp(10_500).unwrap(),
        Some((50, 10_500))
    );
    assert_eq!(
        log.offset_for_timestamp(10_505).unwrap(),
        Some((51, 10_510))
    );
    assert_eq!(log.offset_for_timestamp(99_999).unwrap(), None);
}

#[test]
fn a_batch_over_the_limit_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        max_batch_bytes: 200,
        ..Default::default()
    };
    let (log, _) = PartitionLog::open(dir.path(), config).unwrap();
    let mut big = batch_of(&[&"x".repeat(500)], 1);
    assert!(matches!(
        log.append(&mut big, 0),
        Err(LogError::BatchTooLarge { .. })
    ));
    assert_eq!(log.stats().size_bytes, 0);
}

#[test]
fn under_always_readers_see_only_synced_records() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    let mut b = batch_of(&["a"], 1);
    let info = log.append(&mut b, 0).unwrap();
    assert_eq!(log.latest(), 0, "not yet durable");
    log.wait_durable(info.end_offset).unwrap();
    assert_eq!(log.latest(), 1);
    let (never, _) = PartitionLog::open(
        &dir.path().join("n"),
        LogConfig {
            durability: Durability::Never,
            ..Default::default()
        },
    )
    .unwrap();
    let mut b = batch_of(&["a"], 1);
    never.append(&mut b, 0).unwrap();
    assert_eq!(never.latest(), 1);
}

#[test]
fn concurrent_appenders_all_get_distinct_offsets_and_all_are_durable() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = PartitionLog::open(dir.path(), small()).unwrap();
    let log = Arc::new(log);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                (0..50)
                    .map(|i| {
                        let mut b = batch_of(&[&format!("t{t}-{i}")], 1);
                        let info = log.append(&mut b, 0).unwrap();
                        log.wait_durable(info.end_offset).unwrap();
                        info.base_offset
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut offsets: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    offsets.sort();
    assert_eq!(offsets, (0..400).collect::<Vec<_>>());
    assert_eq!(read_all(&log, 0).len(), 400);
}

/// A batch from an idempotent producer: id, epoch and first sequence set, CRC redone.
fn producer_batch(values: &[&str], id: i64, epoch: i16, seq: i32) -> Vec<u8> {
    let mut b = batch_of(values, 1);
    b[43..51].copy_from_slice(&id.to_be_bytes());
    b[51..53].copy_from_slice(&epoch.to_be_bytes());
    b[53..57].copy_from_slice(&seq.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

#[test]
fn an_idempotent_producers_retry_is_stored_once_even_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (log, _) = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
        let first = log
            .append(&mut producer_batch(&["a", "b"], 42, 0, 0), 0)
            .unwrap();
        let retry = log
            .append(&mut producer_batch(&["a", "b"], 42, 0, 0), 0)
            .unwrap();
        assert!(retry.duplicate);
        assert_eq!(retry.base_offset, first.base_offset);
        log.append(&mut producer_batch(&["c"], 42, 0, 2), 0)
            .unwrap();
        assert!(matches!(
            log.append(&mut producer_batch(&["e"], 42, 0, 5), 0),
            Err(LogError::OutOfOrderSequence {
                expected: 3,
                got: 5,
                ..
            })
        ));
        log.close().unwrap();
    }
    let (log, _) = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    let retry = log
        .append(&mut producer_batch(&["c"], 42, 0, 2), 0)
        .unwrap();
    assert!(
        retry.duplicate,
        "the producer state is rebuilt from the log"
    );
    assert_eq!(retry.base_offset, 2);
    log.append(&mut producer_batch(&["x"], 42, 1, 0), 0)
        .unwrap();
    assert!(matches!(
        log.append(&mut producer_batch(&["y"], 42, 0, 3), 0),
        Err(LogError::InvalidProducerEpoch { .. })
    ));
    log.sync().unwrap();
    assert_eq!(log.stats().latest, 4, "a, b, c and x, each once");
}

/// Regression (issue 19, point 9): retention working on a log captured before its
/// topic was deleted removed the files of a topic re-created under the same name. A
/// closed log deletes nothing.
#[test]
fn retention_on_a_closed_log_never_touches_the_folder_it_had() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p");
    let (old, _) = PartitionLog::open(&path, small()).unwrap();
    for i in 0..20 {
        append(
            &old,
            &[&format!(
                "old record {i} padded to fill segments quickly......"
            )],
            1,
        );
    }
    assert!(segment_files(&path).len() > 2, "several segments");
    old.close().unwrap();
    // The topic is deleted (its folder moved away) and made again under the same name.
    std::fs::rename(&path, dir.path().join("trash")).unwrap();
    let (new, _) = PartitionLog::open(&path, small()).unwrap();
    for i in 0..20 {
        append(
            &new,
            &[&format!(
                "new record {i} padded to fill segments quickly......"
            )],
            1,
        );
    }
    let before = segment_files(&path);
    assert_eq!(
        old.apply_retention(u64::MAX / 2, Some(1), Some(1)).unwrap(),
        0
    );
    assert_eq!(old.delete_before(u64::MAX).unwrap(), 0);
    assert_eq!(
        segment_files(&path),
        before,
        "the new log's files are all there"
    );
    assert_eq!(read_all(&new, 0).len(), 20);
}

#[test]
fn a_length_damaged_mid_segment_past_the_end_is_damage_and_the_cut_bytes_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (log, _) = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
        for i in 0..6 {
            append(&log, &[&format!("value number {i}")], 1);
        }
    }
    let seg = segment_files(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let one = bytes.len() / 6;
    let third = 2 * one;
    // The third batch's length claims more than is left: it looks like a torn tail.
    let claimed = (bytes.len() - third + 1000) as u32;
    bytes[third + 8..third + 12].copy_from_slice(&claimed.to_be_bytes());
    std::fs::write(&seg, &bytes).unwrap();
    let (log, cuts) = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(log.latest(), 2, "serves what precedes the damage");
    assert!(
        cuts[0].reason.contains("a good batch follows"),
        "{:?}",
        cuts[0]
    );
    let kept = cuts[0]
        .kept_in
        .clone()
        .expect("good batches followed, so the bytes are kept");
    assert_eq!(std::fs::read(kept).unwrap(), bytes[third..]);
}

#[test]
fn a_log_append_time_log_stamps_batches_with_the_append_time_and_a_valid_crc() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        log_append_time: true,
        ..small()
    };
    let (log, _) = PartitionLog::open(dir.path(), config).unwrap();
    let mut b = batch_of(&["a", "b"], 1_000);
    let info = log.append(&mut b, 1_700_000_000_123).unwrap();
    assert_eq!(info.log_append_time_ms, Some(1_700_000_000_123));
    log.wait_durable(info.end_offset).unwrap();
    log.close().unwrap();
    // Reopened: recovery checks every CRC, and the records read with the append time.
    let (log, _) = PartitionLog::open(dir.path(), config).unwrap();
    let read = log.read(0, 1 << 20).unwrap();
    ferry_log::batch::verify_crc(&read.batches).unwrap();
    let (header, records) = decode_records(&read.batches, &DecodeLimits::default()).unwrap();
    assert!(header.is_log_append_time());
    assert_eq!(header.max_timestamp, 1_700_000_000_123);
    let stamps: Vec<i64> = records.iter().map(|r| r.timestamp).collect();
    assert_eq!(stamps, vec![1_700_000_000_123; 2]);

    // Without the setting, the producer's timestamps stay.
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = PartitionLog::open(dir.path(), small()).unwrap();
    let mut b = batch_of(&["a"], 1_000);
    let info = log.append(&mut b, 5).unwrap();
    assert_eq!(info.log_append_time_ms, None);
    log.wait_durable(info.end_offset).unwrap();
    let read = log.read(0, 1 << 20).unwrap();
    let (header, records) = decode_records(&read.batches, &DecodeLimits::default()).unwrap();
    assert!(!header.is_log_append_time());
    assert_eq!(records[0].timestamp, 1_000);
}
