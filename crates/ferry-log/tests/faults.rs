//! Failed syncs, through the storage seam (`ferry_log::fault`, debug builds only): after
//! one, nothing is acknowledged that a later sync claims to have made durable.

use bytes::Bytes;
use ferry_log::batch::build_batch;
use ferry_log::{fault, Compression, LogConfig, LogError, NewRecord, PartitionLog};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

fn batch_of(value: &str) -> Vec<u8> {
    let record = NewRecord {
        timestamp: 1,
        value: Some(Bytes::copy_from_slice(value.as_bytes())),
        ..Default::default()
    };
    build_batch(&[record], Compression::None).unwrap()
}

fn small() -> LogConfig {
    LogConfig {
        segment_bytes: 300,
        index_interval_bytes: 128,
        ..Default::default()
    }
}

#[test]
fn a_failed_sync_while_rolling_stops_the_log_and_an_earlier_append_is_never_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = PartitionLog::open(dir.path(), small()).unwrap();
    let first = log.append(&mut batch_of(&"a".repeat(200)), 0).unwrap();
    // The next append rolls the segment, and the roll's fdatasync fails.
    fault::arm(&format!("fdatasync@{}:1", dir.path().display())).unwrap();
    let rolled = log.append(&mut batch_of(&"b".repeat(200)), 0);
    assert!(
        matches!(rolled, Err(LogError::Stopped(_))),
        "the roll's failed sync stops the log: {rolled:?}"
    );
    // The kernel reported the error once; a second fdatasync would return 0 although
    // the first record's pages may be lost. It must not be acknowledged.
    let waited = log.wait_durable(first.end_offset);
    assert!(
        matches!(waited, Err(LogError::Stopped(_))),
        "an append before the failed sync is not acknowledged: {waited:?}"
    );
    assert_eq!(log.latest(), 0, "nothing unsynced becomes readable");
    let later = log.append(&mut batch_of("c"), 0);
    assert!(matches!(later, Err(LogError::Stopped(_))), "{later:?}");
    assert!(log.sync().is_err());
}

#[test]
fn a_failed_group_commit_sync_stops_the_log_until_it_is_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    fault::arm(&format!("fdatasync@{}:1", dir.path().display())).unwrap();
    let info = log.append(&mut batch_of("x"), 0).unwrap();
    assert!(log.wait_durable(info.end_offset).is_err());
    assert!(
        log.wait_durable(info.end_offset).is_err(),
        "still not acknowledged"
    );
    let again = log.append(&mut batch_of("y"), 0);
    assert!(matches!(again, Err(LogError::Stopped(_))), "{again:?}");
    drop(log);
    let (log, _) = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    let info = log.append(&mut batch_of("z"), 0).unwrap();
    log.wait_durable(info.end_offset).unwrap();
}

#[test]
fn an_enospc_write_is_undone_and_writes_resume() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    fault::arm(&format!("pwrite@{}:1:enospc", dir.path().display())).unwrap();
    let full = log.append(&mut batch_of("x"), 0);
    assert!(matches!(full, Err(LogError::DiskFull { .. })), "{full:?}");
    let info = log.append(&mut batch_of("y"), 0).unwrap();
    assert_eq!(info.base_offset, 0);
    log.wait_durable(info.end_offset).unwrap();
}

#[test]
fn an_io_error_on_a_write_stops_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    fault::arm(&format!("pwrite@{}:1", dir.path().display())).unwrap();
    assert!(log.append(&mut batch_of("x"), 0).is_err());
    let next = log.append(&mut batch_of("y"), 0);
    assert!(matches!(next, Err(LogError::Stopped(_))), "{next:?}");
}

/// The log under test in the race below and what was synced when its fault fired.
static RACED: Mutex<Option<(String, Arc<PartitionLog>)>> = Mutex::new(None);
static SYNCED_AT_FAULT: AtomicU64 = AtomicU64::new(u64::MAX);

/// Notes the log's synced end when its first fault fires. A failed segment sync holds
/// the sync claim, so no other segment sync is in flight and that end is exact. A failed
/// index sync comes after a roll synced the whole segment: a group commit still in
/// flight then covers no more than the roll did, which the synced end already counts
/// (reading only what was visible missed such a commit publishing just after).
fn note_fault(path: &Path) {
    if let Some((dir, log)) = &*RACED.lock().unwrap() {
        if path.to_string_lossy().contains(dir.as_str()) {
            SYNCED_AT_FAULT.fetch_min(log.synced(), Ordering::SeqCst);
        }
    }
}

#[test]
fn a_failed_sync_during_a_roll_racing_a_group_commit_never_acknowledges_an_append() {
    fault::on_inject(note_fault);
    for nth in 2..14 {
        let dir = tempfile::tempdir().unwrap();
        let name = dir.path().display().to_string();
        let (log, _) = PartitionLog::open(dir.path(), small()).unwrap();
        let log = Arc::new(log);
        SYNCED_AT_FAULT.store(u64::MAX, Ordering::SeqCst);
        *RACED.lock().unwrap() = Some((name.clone(), Arc::clone(&log)));
        fault::arm(&format!("fdatasync@{name}:{nth}")).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let log = Arc::clone(&log);
                std::thread::spawn(move || {
                    let mut acked = Vec::new();
                    for i in 0..40 {
                        let Ok(info) = log.append(&mut batch_of(&format!("{t}-{i:0>60}")), 0)
                        else {
                            break;
                        };
                        match log.wait_durable(info.end_offset) {
                            Ok(()) => acked.push(info.end_offset),
                            Err(_) => break,
                        }
                    }
                    acked
                })
            })
            .collect();
        let acked: Vec<u64> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        *RACED.lock().unwrap() = None;
        if fault::injected(&name) == 0 {
            continue;
        }
        let bound = SYNCED_AT_FAULT.load(Ordering::SeqCst);
        let max = acked.iter().copied().max().unwrap_or(0);
        assert!(
            max <= bound,
            "fault at fdatasync {nth}: offsets up to {max} acknowledged, only {bound} synced before the failure"
        );
        assert!(
            log.latest() <= bound,
            "nothing synced after the failure is readable"
        );
        assert!(log.append(&mut batch_of("after"), 0).is_err());
    }
}
