//! Compaction of sealed segments: what stays, offsets, tombstones, and crashes at each
//! step of the swap.

use bytes::Bytes;
use ferry_log::batch::{build_batch, decode_records};
use ferry_log::{CompactConfig, Compression, Durability, LogConfig, NewRecord, PartitionLog};
use std::collections::BTreeMap;
use std::path::Path;

const DAY_MS: u64 = 86_400_000;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 2048,
        index_interval_bytes: 128,
        durability: Durability::Never,
        ..Default::default()
    }
}

fn compact_config(now_ms: u64) -> CompactConfig {
    CompactConfig {
        now_ms,
        min_compaction_lag_ms: 0,
        delete_retention_ms: DAY_MS,
        min_dirty_ratio: 0.0,
        max_compaction_lag_ms: u64::MAX,
        offset_map_bytes: 1 << 20,
    }
}

/// One stored record: key, and value (`None`: a tombstone).
type Stored = (String, Option<String>);

/// Appends `n` records over `keys` keys (every 7th a tombstone), batches of `per` in
/// codec `codec`; returns what was written by offset.
fn fill(
    log: &PartitionLog,
    prefix: &str,
    n: usize,
    keys: usize,
    per: usize,
    codec: Compression,
    ts: i64,
) -> BTreeMap<u64, Stored> {
    let mut written = BTreeMap::new();
    let mut i = 0;
    while i < n {
        let records: Vec<NewRecord> = (i..(i + per).min(n))
            .map(|j| NewRecord {
                timestamp: ts,
                key: Some(Bytes::from(format!("{prefix}{}", j % keys))),
                value: (j % 7 != 6).then(|| Bytes::from(format!("v{j}"))),
                ..Default::default()
            })
            .collect();
        let mut batch = build_batch(&records, codec).unwrap();
        let info = log.append(&mut batch, ts as u64).unwrap();
        for (k, r) in records.iter().enumerate() {
            let key = String::from_utf8(r.key.clone().unwrap().to_vec()).unwrap();
            let value = r
                .value
                .as_ref()
                .map(|v| String::from_utf8(v.to_vec()).unwrap());
            written.insert(info.base_offset + k as u64, (key, value));
        }
        i += per;
    }
    written
}

/// Every readable record by offset, checking that offsets only grow.
fn read_all(log: &PartitionLog) -> BTreeMap<u64, Stored> {
    let mut out = BTreeMap::new();
    let mut offset = log.stats().earliest;
    let latest = log.latest();
    while offset < latest {
        let read = log.read(offset, 1 << 20).unwrap();
        if read.batches.is_empty() {
            break;
        }
        for one in ferry_log::batch::Batches::new(read.batches) {
            let (h, records) = decode_records(&one.unwrap(), &Default::default()).unwrap();
            for r in records {
                if (r.offset as u64) < offset {
                    continue;
                }
                let key = String::from_utf8(r.key.unwrap().to_vec()).unwrap();
                let value = r.value.map(|v| String::from_utf8(v.to_vec()).unwrap());
                let before = out.insert(r.offset as u64, (key, value));
                assert!(before.is_none(), "offset {} read twice", r.offset);
            }
            offset = h.last_offset() as u64 + 1;
        }
    }
    out
}

/// What compaction must leave of `written`: below `end`, the latest record of each
/// key among those below `end` (what the pass saw; tombstones too unless
/// `drop_tombstones`); from `end` on, everything.
fn expected(
    written: &BTreeMap<u64, Stored>,
    end: u64,
    drop_tombstones: bool,
) -> BTreeMap<u64, Stored> {
    let mut latest: BTreeMap<&str, u64> = BTreeMap::new();
    for (o, (k, _)) in written.range(..end) {
        latest.insert(k, *o);
    }
    written
        .iter()
        .filter(|(o, (k, v))| {
            **o >= end || (latest[k.as_str()] == **o && (v.is_some() || !drop_tombstones))
        })
        .map(|(o, s)| (*o, s.clone()))
        .collect()
}

fn active_base(log: &PartitionLog) -> u64 {
    // The records of the active segment are never compacted: find where it begins.
    let dir = log.dir();
    let mut bases: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            ferry_log::segment::parse_log_name(&name)
        })
        .collect();
    bases.sort_unstable();
    *bases.last().unwrap()
}

#[test]
fn compaction_keeps_the_latest_record_of_each_key_at_its_offset() {
    for codec in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = PartitionLog::open(dir.path(), config()).unwrap();
        let written = fill(&log, "k", 600, 20, 5, codec, 1_000);
        let next = log.next_offset();
        let before = log.stats();
        assert!(before.segments > 3, "the test needs sealed segments");
        let done = log
            .compact(&compact_config(2_000))
            .unwrap()
            .expect("a pass was due");
        let end = active_base(&log);
        assert_eq!(done.cleaned_to, end, "{codec:?}");
        assert!(done.records_removed > 0);
        assert_eq!(read_all(&log), expected(&written, end, false), "{codec:?}");
        assert_eq!(log.next_offset(), next, "the next offset does not move");
        assert_eq!(log.stats().earliest, before.earliest);
        assert!(log.stats().size_bytes < before.size_bytes);
        assert_eq!(log.check_invariants(), Ok(()));
        // Nothing new is dirty: no pass is due, even at a ratio of 0.
        assert_eq!(log.dirty_ratio(), 0.0);
        // Reopened, the log reads the same from the rebuilt files.
        drop(log);
        let (log, cuts) = PartitionLog::open(dir.path(), config()).unwrap();
        assert!(cuts.is_empty());
        assert_eq!(read_all(&log), expected(&written, end, false));
        assert_eq!(log.next_offset(), next);
    }
}

#[test]
fn tombstones_go_at_a_later_pass_once_older_than_delete_retention() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = PartitionLog::open(dir.path(), config()).unwrap();
    let written = fill(&log, "k", 400, 7, 4, Compression::None, 1_000);
    log.compact(&compact_config(2_000)).unwrap().unwrap();
    let end = active_base(&log);
    assert_eq!(read_all(&log), expected(&written, end, false));
    // More records roll more segments, so a second pass is due.
    let mut more = fill(&log, "m", 200, 1000, 4, Compression::None, 3_000);
    more.extend(written.clone());
    // Within delete.retention.ms of the first pass the tombstones stay...
    log.compact(&compact_config(2_000 + DAY_MS / 2))
        .unwrap()
        .unwrap();
    let end2 = active_base(&log);
    let got = read_all(&log);
    assert_eq!(got, expected(&more, end2, false));
    // ...and after it, those the first pass reached go; later ones stay.
    fill(&log, "n", 200, 1000, 4, Compression::None, 4_000);
    let done = log
        .compact(&compact_config(2_000 + DAY_MS / 2 + DAY_MS + 1))
        .unwrap()
        .unwrap();
    assert!(done.tombstones_removed > 0);
    let got = read_all(&log);
    for (o, (k, v)) in &got {
        if *o < end2 {
            assert!(
                v.is_some(),
                "tombstone of {k} at {o} outlived its retention"
            );
        }
    }
    let tombstones_first_pass = expected(&written, end, false)
        .into_iter()
        .filter(|(o, (_, v))| *o < end && v.is_none())
        .count();
    assert!(tombstones_first_pass > 0, "the test writes tombstones");
}

#[test]
fn records_younger_than_the_compaction_lag_stay() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = PartitionLog::open(dir.path(), config()).unwrap();
    let written = fill(&log, "k", 400, 5, 4, Compression::None, 10_000);
    let mut cfg = compact_config(10_500);
    cfg.min_compaction_lag_ms = 1_000;
    assert_eq!(
        log.compact(&cfg).unwrap(),
        None,
        "every record is too young"
    );
    assert_eq!(read_all(&log), written);
    cfg.now_ms = 11_001;
    assert!(log.compact(&cfg).unwrap().is_some());
}

#[test]
fn a_small_offset_map_compacts_up_to_where_it_filled() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = PartitionLog::open(dir.path(), config()).unwrap();
    // More distinct keys than the smallest map holds.
    let n = 4000;
    let written = fill(&log, "k", n, n, 50, Compression::Zstd, 1_000);
    let mut cfg = compact_config(2_000);
    cfg.offset_map_bytes = 0;
    let done = log.compact(&cfg).unwrap().unwrap();
    assert!(
        done.cleaned_to < active_base(&log),
        "the map filled before the end"
    );
    assert_eq!(read_all(&log), expected(&written, done.cleaned_to, false));
    // Later passes go on from there.
    let again = log.compact(&cfg).unwrap().unwrap();
    assert!(again.cleaned_to > done.cleaned_to);
    assert_eq!(read_all(&log), expected(&written, again.cleaned_to, false));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// A partition before compaction (`before`) and after (`after`), with what each reads.
fn before_and_after() -> (
    tempfile::TempDir,
    BTreeMap<u64, Stored>,
    BTreeMap<u64, Stored>,
) {
    let root = tempfile::tempdir().unwrap();
    let (before, after) = (root.path().join("before"), root.path().join("after"));
    let (log, _) = PartitionLog::open(&before, config()).unwrap();
    let written = fill(&log, "k", 500, 10, 5, Compression::Lz4, 1_000);
    log.close().unwrap();
    drop(log);
    copy_dir(&before, &after);
    let (log, _) = PartitionLog::open(&after, config()).unwrap();
    log.compact(&compact_config(2_000)).unwrap().unwrap();
    let compacted = read_all(&log);
    drop(log);
    (root, written, compacted)
}

#[test]
fn a_crash_before_the_cleaned_copy_is_whole_keeps_the_original() {
    let (root, written, _) = before_and_after();
    let (before, after) = (root.path().join("before"), root.path().join("after"));
    // Every segment's cleaned copy left half written beside the original.
    let seg = "00000000000000000000.log";
    let full = std::fs::read(after.join(seg)).unwrap();
    std::fs::write(
        before.join(format!("{seg}.cleaned")),
        &full[..full.len() / 2],
    )
    .unwrap();
    let (log, cuts) = PartitionLog::open(&before, config()).unwrap();
    assert!(cuts.is_empty());
    assert_eq!(read_all(&log), written);
    assert!(!before.join(format!("{seg}.cleaned")).exists());
}

#[test]
fn a_crash_after_the_cleaned_copy_is_whole_finishes_the_swap() {
    let (root, written, compacted) = before_and_after();
    let (before, after) = (root.path().join("before"), root.path().join("after"));
    let bases: Vec<String> = std::fs::read_dir(&after)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".log"))
        .collect();
    let mut names = bases.clone();
    names.sort();
    let first = &names[0];
    let stem = first.trim_end_matches(".log");
    // The swap named the copy `.swap`; the old segment and its indexes are still there
    // (crash before the indexes were removed), or the indexes are gone (crash after).
    for indexes_gone in [false, true] {
        let case = root.path().join(format!("case-{indexes_gone}"));
        copy_dir(&before, &case);
        std::fs::copy(after.join(first), case.join(format!("{first}.swap"))).unwrap();
        if indexes_gone {
            std::fs::remove_file(case.join(format!("{stem}.index"))).unwrap();
            std::fs::remove_file(case.join(format!("{stem}.timeindex"))).unwrap();
        }
        let (log, cuts) = PartitionLog::open(&case, config()).unwrap();
        assert!(cuts.is_empty());
        let got = read_all(&log);
        // The first segment is the compacted one, the rest as before: every offset read
        // once, nothing that compaction keeps lost.
        let first_end = std::fs::read_dir(&case)
            .unwrap()
            .filter_map(|e| {
                ferry_log::segment::parse_log_name(&e.unwrap().file_name().to_string_lossy())
            })
            .filter(|b| *b > 0)
            .min()
            .unwrap();
        let want: BTreeMap<u64, Stored> = compacted
            .iter()
            .filter(|(o, _)| **o < first_end)
            .chain(written.iter().filter(|(o, _)| **o >= first_end))
            .map(|(o, s)| (*o, s.clone()))
            .collect();
        assert_eq!(got, want, "indexes gone: {indexes_gone}");
        assert_eq!(log.check_invariants(), Ok(()));
        assert!(!case.join(format!("{first}.swap")).exists());
    }
    // And the swap of the last sealed segment finished after a crash reads as the
    // fully compacted partition does, once the others are swapped too.
    let _ = (written, compacted);
}

#[test]
fn failed_syncs_and_renames_of_the_copy_leave_the_original_intact() {
    for (op, suffix) in [
        ("fdatasync", "log.cleaned"),
        ("pwrite", "log.cleaned"),
        ("rename", "log.swap"),
    ] {
        let fault = format!("{op} of .{suffix}");
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = PartitionLog::open(dir.path(), config()).unwrap();
        // Keys written once, so that the first segment's copy is not empty.
        let mut written = fill(&log, "once", 5, 5, 5, Compression::None, 1_000);
        written.extend(fill(&log, "k", 300, 10, 5, Compression::None, 1_000));
        // The path filter names the partition's own first segment: other tests are
        // untouched.
        let target = dir.path().join(format!("00000000000000000000.{suffix}"));
        let spec = format!("{op}@{}:1", target.display());
        ferry_log::fault::arm(&spec).unwrap();
        assert!(log.compact(&compact_config(2_000)).is_err(), "{fault}");
        assert_eq!(read_all(&log), written, "{fault}: the original is read");
        assert!(log.failure().is_none(), "{fault}: the log goes on");
        let leftovers: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".cleaned") || n.ends_with(".swap"))
            .collect();
        assert!(leftovers.is_empty(), "{fault}: {leftovers:?}");
        // The next pass succeeds.
        log.compact(&compact_config(2_000)).unwrap().unwrap();
        let end = active_base(&log);
        assert_eq!(read_all(&log), expected(&written, end, false), "{fault}");
    }
}

#[test]
fn a_reader_holding_the_old_segment_reads_it_whole_during_a_swap() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = PartitionLog::open(dir.path(), config()).unwrap();
    let written = fill(&log, "k", 300, 3, 5, Compression::None, 1_000);
    // Read once before (holding the bytes is what a reader in flight does), compact,
    // then read at offsets that are now gaps: the next record is returned.
    let first = log.read(0, 1 << 20).unwrap();
    assert!(!first.batches.is_empty());
    log.compact(&compact_config(2_000)).unwrap().unwrap();
    let end = active_base(&log);
    let want = expected(&written, end, false);
    for offset in [0u64, 1, 5, 17, end.saturating_sub(1)] {
        let next_kept = want.range(offset..).next().map(|(o, _)| *o).unwrap();
        let read = log.read(offset, 1 << 20).unwrap();
        let one = ferry_log::batch::Batches::new(read.batches)
            .next()
            .unwrap()
            .unwrap();
        // The first batch may begin before the offset asked for, never after the next
        // record kept.
        let (_, records) = decode_records(&one, &Default::default()).unwrap();
        let first = records.iter().find(|r| r.offset as u64 >= offset).unwrap();
        assert_eq!(first.offset as u64, next_kept, "read at {offset}");
    }
    // A lookup by time finds the first kept record.
    let (o, _) = log.offset_for_timestamp(0).unwrap().unwrap();
    assert_eq!(o, *want.keys().next().unwrap());
}

#[test]
fn a_failed_rename_over_the_segment_stops_the_log_and_a_restart_finishes_the_swap() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = PartitionLog::open(dir.path(), config()).unwrap();
    let mut written = fill(&log, "once", 5, 5, 5, Compression::None, 1_000);
    written.extend(fill(&log, "k", 300, 10, 5, Compression::None, 1_000));
    // The first rename matching is `.log.cleaned` to `.log.swap`, the second `.log.swap`
    // over `.log`: that one fails.
    let target = dir.path().join("00000000000000000000.log");
    ferry_log::fault::arm(&format!("rename@{}:2", target.display())).unwrap();
    assert!(log.compact(&compact_config(2_000)).is_err());
    assert!(
        log.failure().is_some(),
        "the folder's state is unknown: the log stops"
    );
    assert!(dir.path().join("00000000000000000000.log.swap").exists());
    // Readers still read the original meanwhile.
    assert_eq!(read_all(&log), written);
    drop(log);
    let (log, cuts) = PartitionLog::open(dir.path(), config()).unwrap();
    assert!(cuts.is_empty());
    assert!(!dir.path().join("00000000000000000000.log.swap").exists());
    let got = read_all(&log);
    // The first segment is the compacted copy now; nothing twice, the rest as written.
    let offsets: Vec<u64> = got.keys().copied().collect();
    let mut sorted = offsets.clone();
    sorted.dedup();
    assert_eq!(offsets, sorted);
    assert!(got.len() < written.len());
    for o in 0..5 {
        assert_eq!(got.get(&o), written.get(&o), "keys written once stay");
    }
    // Compacting again gives what one clean pass gives.
    log.compact(&compact_config(2_000)).unwrap().unwrap();
    let end = active_base(&log);
    assert_eq!(read_all(&log), expected(&written, end, false));
}

#[test]
fn a_closed_log_is_not_compacted_and_gets_no_new_files() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = PartitionLog::open(dir.path(), config()).unwrap();
    let written = fill(&log, "k", 300, 10, 5, Compression::None, 1_000);
    log.close().unwrap();
    assert_eq!(log.compact(&compact_config(2_000)).unwrap(), None);
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("clean") || n.ends_with(".swap"))
        .collect();
    assert!(names.is_empty(), "{names:?}");
    assert_eq!(read_all(&log), written);
}

#[test]
fn a_partition_below_the_dirty_ratio_is_compacted_once_past_the_max_compaction_lag() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = PartitionLog::open(dir.path(), config()).unwrap();
    fill(&log, "k", 300, 10, 5, Compression::None, 1_000);
    let mut cfg = compact_config(2_000);
    cfg.min_dirty_ratio = 1.1;
    assert_eq!(
        log.compact(&cfg).unwrap(),
        None,
        "below the ratio, no lag limit"
    );
    cfg.max_compaction_lag_ms = 5_000;
    assert_eq!(
        log.compact(&cfg).unwrap(),
        None,
        "records younger than the limit"
    );
    cfg.now_ms = 6_001;
    assert!(log.compact(&cfg).unwrap().is_some(), "older than the limit");
}
