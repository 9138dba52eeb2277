//! Where a subscription's state is kept: [`SubscriptionStore`], a narrow interface so
//! that a shared database can take its place later, and [`JournalStore`], its
//! implementation in the data folder:
//!
//! ```text
//! <data>/subscriptions/<name>/journal/     events, in Ferry's log format (CRC, group commit)
//! <data>/subscriptions/<name>/snapshot.json  the state at a journal position, replaced atomically
//! <data>/subscriptions/<name>/delays/<bucket>.dly  far-off delayed records, one file a minute
//! ```
//!
//! Recovery loads the snapshot and replays the journal after it. A checkpoint writes a
//! new snapshot once the journal is synced up to it, then deletes journal segments and
//! delay files the snapshot covers.

use super::codec::{self, DelayEntry};
use super::state::{Counters, Event, SavedPart};
use crate::error::{BrokerError, Result};
use crate::fsutil::replace_file;
use bytes::Bytes;
use ferry_log::batch::{build_batch, Batches, DecodeLimits, NewRecord};
use ferry_log::sync::lock;
use ferry_log::{Compression, Durability, LogConfig, PartitionLog};
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The state at a journal position.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    pub version: u32,
    /// Every event before this journal offset is reflected here.
    pub journal_offset: u64,
    pub loaded_upto: u64,
    pub redriven: BTreeMap<u32, u64>,
    pub counters: Counters,
    pub partitions: Vec<SavedPart>,
}

/// Largest offset a snapshot may name (Kafka offsets are i64).
const SNAPSHOT_OFFSET_MAX: u64 = i64::MAX as u64;

impl Snapshot {
    /// Refuses values no running Ferry writes, so that a damaged file cannot make the
    /// state's arithmetic overflow or its partition table huge.
    pub(crate) fn check(&self) -> std::result::Result<(), String> {
        if self.partitions.len() > crate::config::PARTITIONS_MAX as usize {
            return Err(format!("{} partitions", self.partitions.len()));
        }
        for (p, part) in self.partitions.iter().enumerate() {
            let offsets = [part.floor, part.head]
                .into_iter()
                .chain(part.acked.iter().flat_map(|&(lo, hi)| [lo, hi]))
                .chain(part.pending.iter().map(|x| x.offset));
            if let Some(o) = offsets.into_iter().find(|o| *o > SNAPSHOT_OFFSET_MAX) {
                return Err(format!("partition {p} names offset {o}"));
            }
            if let Some((lo, hi)) = part.acked.iter().find(|(lo, hi)| hi < lo) {
                return Err(format!("partition {p} has an acked range {lo}..{hi}"));
            }
        }
        Ok(())
    }
}

pub trait SubscriptionStore: Send + Sync {
    /// The last checkpoint and the events journaled after it, in order.
    fn load(&self) -> Result<(Option<Snapshot>, Vec<Event>)>;
    /// Appends events; returns the position to wait for with `wait_durable`.
    fn append(&self, events: &[Event]) -> Result<u64>;
    fn wait_durable(&self, position: u64) -> Result<()>;
    /// The journal position after everything appended so far.
    fn position(&self) -> u64;
    /// Stores a snapshot; everything before `snapshot.journal_offset` must be durable.
    fn checkpoint(&self, snapshot: &Snapshot) -> Result<()>;
    /// Stores delayed records durably before the events that refer to them.
    fn write_delays(&self, entries: &[DelayEntry]) -> Result<()>;
    fn read_delays(&self, bucket: u64) -> Result<Vec<DelayEntry>>;
    /// Buckets that have a delay file, in order.
    fn delay_buckets(&self) -> Vec<u64>;
    /// Entries in delay files of buckets after `bucket` (an upper bound: an entry may
    /// be stale).
    fn delayed_on_disk(&self, bucket: u64) -> u64;
    fn remove_delays_upto(&self, bucket: u64) -> Result<()>;
    /// Makes everything appended durable; the store is not used after this.
    fn close(&self) -> Result<()> {
        Ok(())
    }
}

pub struct JournalStore {
    dir: PathBuf,
    journal: PartitionLog,
    /// Known delay files: bucket → entries.
    buckets: Mutex<BTreeMap<u64, u64>>,
    /// Set when a delay file failed to write or sync: the store takes no more writes
    /// until restart (the journal stops itself the same way).
    stopped: Mutex<Option<String>>,
}

const JOURNAL_SEGMENT_BYTES: u64 = 8 * 1024 * 1024;
/// Events per journal record, so that a record stays well under the batch limit.
const EVENTS_PER_RECORD: usize = 16 * 1024;

fn storage(what: String, e: std::io::Error) -> BrokerError {
    BrokerError::io(what, e)
}

fn bucket_name(bucket: u64) -> String {
    format!("{bucket:020}.dly")
}

impl JournalStore {
    pub fn open(dir: &Path) -> Result<Self> {
        let delays = dir.join("delays");
        std::fs::create_dir_all(&delays)
            .map_err(|e| storage(format!("creating {}", delays.display()), e))?;
        let config = LogConfig {
            segment_bytes: JOURNAL_SEGMENT_BYTES,
            segment_ms: None,
            durability: Durability::Always,
            ..LogConfig::default()
        };
        let (journal, cuts) = PartitionLog::open(&dir.join("journal"), config)
            .map_err(|e| BrokerError::from_log(0, e))?;
        for cut in cuts {
            tracing::warn!(dir = %dir.display(), ?cut, "Cut a damaged tail from a subscription journal.");
        }
        let mut buckets = BTreeMap::new();
        let entries = std::fs::read_dir(&delays)
            .map_err(|e| storage(format!("listing {}", delays.display()), e))?;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(b) = name
                .strip_suffix(".dly")
                .and_then(|s| s.parse::<u64>().ok())
            {
                let len = e.metadata().map_or(0, |m| m.len());
                buckets.insert(b, len / codec::DELAY_ENTRY_BYTES as u64);
            }
        }
        Ok(JournalStore {
            dir: dir.to_path_buf(),
            journal,
            buckets: Mutex::new(buckets),
            stopped: Mutex::new(None),
        })
    }

    fn snapshot_path(&self) -> PathBuf {
        self.dir.join("snapshot.json")
    }

    fn check_running(&self) -> Result<()> {
        match &*lock(&self.stopped) {
            Some(why) => Err(BrokerError::Unavailable(format!(
                "subscription store {} stopped after a failed disk operation ({why}); restart Ferry to recover it",
                self.dir.display()
            ))),
            None => Ok(()),
        }
    }

    fn stop(&self, e: BrokerError) -> BrokerError {
        tracing::error!(dir = %self.dir.display(), error = %e, "Writing a delay file failed; the subscription takes no more writes until restart.");
        lock(&self.stopped).get_or_insert_with(|| e.to_string());
        self.check_running().err().unwrap_or(e)
    }
}

impl SubscriptionStore for JournalStore {
    fn load(&self) -> Result<(Option<Snapshot>, Vec<Event>)> {
        let path = self.snapshot_path();
        let snapshot = match std::fs::read(&path) {
            Ok(bytes) => {
                let snap = serde_json::from_slice::<Snapshot>(&bytes)
                    .map_err(|e| e.to_string())
                    .and_then(|s| s.check().map(|()| s))
                    .map_err(|e| {
                        BrokerError::Meta(format!(
                            "{} is not a valid snapshot: {e}",
                            path.display()
                        ))
                    })?;
                Some(snap)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(storage(format!("reading {}", path.display()), e)),
        };
        let stats = self.journal.stats();
        let mut at = snapshot
            .as_ref()
            .map_or(stats.earliest, |s| s.journal_offset)
            .max(stats.earliest);
        let mut events = Vec::new();
        let limits = DecodeLimits::default();
        while at < stats.latest {
            let read = self
                .journal
                .read(at, 4 * 1024 * 1024)
                .map_err(|e| BrokerError::from_log(0, e))?;
            if read.batches.is_empty() {
                break;
            }
            for one in Batches::new(read.batches) {
                let (header, records) = one
                    .and_then(|b| ferry_log::batch::decode_records(&b, &limits))
                    .map_err(|e| BrokerError::Corrupt {
                        offset: Some(at),
                        reason: format!("subscription journal {}: {e}", self.dir.display()),
                    })?;
                for r in records {
                    if (r.offset as u64) < at {
                        continue;
                    }
                    let value = r.value.unwrap_or_default();
                    events.extend(codec::decode_events(&value).map_err(|e| {
                        BrokerError::Corrupt {
                            offset: Some(r.offset as u64),
                            reason: format!("subscription journal {}: {e}", self.dir.display()),
                        }
                    })?);
                }
                at = at.max(header.last_offset() as u64 + 1);
            }
        }
        Ok((snapshot, events))
    }

    fn append(&self, events: &[Event]) -> Result<u64> {
        self.check_running()?;
        let mut end = self.journal.next_offset();
        for chunk in events.chunks(EVENTS_PER_RECORD) {
            let mut value = Vec::with_capacity(chunk.len() * codec::EVENT_BYTES);
            codec::encode_events(chunk, &mut value);
            let record = NewRecord {
                timestamp: crate::now_ms() as i64,
                value: Some(Bytes::from(value)),
                ..NewRecord::default()
            };
            let mut batch = build_batch(&[record], Compression::None)
                .map_err(|e| BrokerError::Storage(format!("encoding journal events: {e}")))?;
            let info = self
                .journal
                .append(&mut batch, crate::now_ms())
                .map_err(|e| BrokerError::from_log(0, e))?;
            end = info.end_offset;
        }
        Ok(end)
    }

    fn wait_durable(&self, position: u64) -> Result<()> {
        self.journal
            .wait_durable(position)
            .map_err(|e| BrokerError::from_log(0, e))
    }

    fn position(&self) -> u64 {
        self.journal.next_offset()
    }

    fn checkpoint(&self, snapshot: &Snapshot) -> Result<()> {
        self.check_running()?;
        let bytes = serde_json::to_vec(snapshot)
            .map_err(|e| BrokerError::Storage(format!("encoding a snapshot: {e}")))?;
        replace_file(&self.snapshot_path(), &bytes).map_err(BrokerError::Storage)?;
        self.journal
            .delete_before(snapshot.journal_offset)
            .map_err(|e| BrokerError::from_log(0, e))?;
        self.remove_delays_upto(snapshot.loaded_upto)
    }

    fn write_delays(&self, entries: &[DelayEntry]) -> Result<()> {
        self.check_running()?;
        let mut by_bucket: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        for e in entries {
            codec::encode_delay(
                e,
                by_bucket.entry(super::state::bucket_of(e.due)).or_default(),
            );
        }
        let dir = self.dir.join("delays");
        let mut created = false;
        for (bucket, bytes) in &by_bucket {
            let path = dir.join(bucket_name(*bucket));
            created |= !path.exists();
            let f = File::options()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| storage(format!("opening {}", path.display()), e))?;
            ferry_log::fault::write_all(&f, &path, bytes)
                .and_then(|()| ferry_log::fault::sync_data(&f, &path))
                .map_err(|e| self.stop(storage(format!("writing {}", path.display()), e)))?;
        }
        if created {
            ferry_log::fault::sync_dir(&dir)
                .map_err(|e| self.stop(storage(format!("syncing {}", dir.display()), e)))?;
        }
        let mut known = lock(&self.buckets);
        for (bucket, bytes) in by_bucket {
            *known.entry(bucket).or_default() += (bytes.len() / codec::DELAY_ENTRY_BYTES) as u64;
        }
        Ok(())
    }

    fn read_delays(&self, bucket: u64) -> Result<Vec<DelayEntry>> {
        let path = self.dir.join("delays").join(bucket_name(bucket));
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(storage(format!("reading {}", path.display()), e)),
        };
        let (entries, bad) = codec::decode_delays(&bytes);
        if bad > 0 {
            // Only a torn write can do this, and its event was never journaled.
            tracing::warn!(file = %path.display(), bad, "Skipped damaged entries in a delay file.");
        }
        Ok(entries)
    }

    fn delay_buckets(&self) -> Vec<u64> {
        let known = lock(&self.buckets);
        known.keys().copied().collect()
    }

    fn delayed_on_disk(&self, bucket: u64) -> u64 {
        let known = lock(&self.buckets);
        known
            .range(bucket.saturating_add(1)..)
            .map(|(_, n)| n)
            .sum()
    }

    fn remove_delays_upto(&self, bucket: u64) -> Result<()> {
        let doomed: Vec<u64> = {
            let known = lock(&self.buckets);
            known.range(..=bucket).map(|(b, _)| *b).collect()
        };
        for b in doomed {
            let path = self.dir.join("delays").join(bucket_name(b));
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(storage(format!("deleting {}", path.display()), e)),
            }
            lock(&self.buckets).remove(&b);
        }
        Ok(())
    }

    fn close(&self) -> Result<()> {
        self.journal
            .close()
            .map_err(|e| BrokerError::from_log(0, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subs::state::SavedPart;

    #[test]
    fn a_snapshot_with_impossible_values_is_refused_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let store = JournalStore::open(dir.path()).unwrap();
        let mut snap = Snapshot {
            version: 1,
            partitions: vec![SavedPart {
                floor: 0,
                head: u64::MAX,
                ..SavedPart::default()
            }],
            ..Snapshot::default()
        };
        store.checkpoint(&snap).unwrap();
        let err = store.load().unwrap_err().to_string();
        assert!(err.contains("offset"), "{err}");
        snap.partitions[0] = SavedPart {
            head: 10,
            acked: vec![(5, 3)],
            ..SavedPart::default()
        };
        store.checkpoint(&snap).unwrap();
        assert!(store.load().is_err());
        snap.partitions[0].acked = vec![(3, 5)];
        store.checkpoint(&snap).unwrap();
        assert!(store.load().is_ok());
    }
}
