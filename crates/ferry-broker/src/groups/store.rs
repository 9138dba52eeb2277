//! Committed offsets of consumer groups, behind a narrow interface (a shared database
//! takes the place of the file when Ferry runs on several machines).
//!
//! # The local store
//!
//! `meta/groups.json` holds every group's committed offsets and is replaced atomically
//! (temporary file, fsync, rename, fsync of the folder) on each commit, so a crash leaves
//! the old or the new content. A commit is acknowledged only after that.
//!
//! # Compatibility
//!
//! `leader_epoch` came after the first release of the file: an entry without it reads
//! as "no epoch", and an older Ferry ignores it (the epoch is lost, the offset is not),
//! so the file's version stays 1.

use crate::error::{BrokerError, Result};
use ferry_log::sync::lock;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// One partition's commit, stored as `{"offset": 12, "metadata": "..", "leader_epoch": 3}`
/// (the last two left out when absent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    pub offset: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
    /// The leader epoch of the record before `offset`, as the client committed it
    /// (Kafka's `committed_leader_epoch`); `None` when it sent -1 or none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_epoch: Option<i32>,
}

/// The offset committed for one partition of a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionOffset {
    pub topic: String,
    pub partition: u32,
    pub committed: CommittedOffset,
}

/// group → topic → partition → committed offset.
pub type GroupOffsets = BTreeMap<String, BTreeMap<u32, CommittedOffset>>;

pub trait OffsetStore: Send + Sync {
    fn load(&self) -> Result<BTreeMap<String, GroupOffsets>>;
    /// Records `offsets` for `group` durably (other partitions keep theirs).
    fn commit(&self, group: &str, offsets: &[PartitionOffset]) -> Result<()>;
    fn delete_group(&self, group: &str) -> Result<()>;
    /// Drops the offsets of `partitions` (topic, partition) of `group`, durably; a group
    /// left with none is dropped from the store.
    fn delete_offsets(&self, group: &str, partitions: &[(String, u32)]) -> Result<()>;
    /// Drops a deleted topic's offsets from every group.
    fn delete_topic(&self, topic: &str) -> Result<()>;
}

#[derive(Serialize, Deserialize)]
struct GroupsFile {
    version: u32,
    groups: BTreeMap<String, GroupOffsets>,
}

const GROUPS_FILE_VERSION: u32 = 1;

pub struct FileOffsetStore {
    path: PathBuf,
    groups: Mutex<BTreeMap<String, GroupOffsets>>,
}

impl FileOffsetStore {
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join("groups.json");
        let groups = match std::fs::read(&path) {
            Ok(bytes) => {
                let file: GroupsFile = serde_json::from_slice(&bytes).map_err(|e| {
                    BrokerError::Meta(format!("{} is not valid: {e}", path.display()))
                })?;
                if file.version != GROUPS_FILE_VERSION {
                    return Err(BrokerError::Meta(format!(
                        "{} has version {}, this Ferry reads version {GROUPS_FILE_VERSION}",
                        path.display(),
                        file.version
                    )));
                }
                file.groups
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                return Err(BrokerError::Meta(format!(
                    "reading {}: {e}",
                    path.display()
                )))
            }
        };
        Ok(FileOffsetStore {
            path,
            groups: Mutex::new(groups),
        })
    }

    fn write(&self, groups: &BTreeMap<String, GroupOffsets>) -> Result<()> {
        let bytes = serde_json::to_vec(&GroupsFile {
            version: GROUPS_FILE_VERSION,
            groups: groups.clone(),
        })
        .map_err(|e| BrokerError::Meta(e.to_string()))?;
        crate::fsutil::replace_file(&self.path, &bytes).map_err(BrokerError::Meta)
    }

    fn update(&self, change: impl FnOnce(&mut BTreeMap<String, GroupOffsets>)) -> Result<()> {
        let mut groups = lock(&self.groups);
        let mut next = groups.clone();
        change(&mut next);
        self.write(&next)?;
        *groups = next;
        Ok(())
    }
}

impl OffsetStore for FileOffsetStore {
    fn load(&self) -> Result<BTreeMap<String, GroupOffsets>> {
        Ok(lock(&self.groups).clone())
    }

    fn commit(&self, group: &str, offsets: &[PartitionOffset]) -> Result<()> {
        self.update(|groups| {
            let group_offsets = groups.entry(group.to_string()).or_default();
            for offset in offsets {
                group_offsets
                    .entry(offset.topic.clone())
                    .or_default()
                    .insert(offset.partition, offset.committed.clone());
            }
        })
    }

    fn delete_group(&self, group: &str) -> Result<()> {
        self.update(|groups| {
            groups.remove(group);
        })
    }

    fn delete_offsets(&self, group: &str, partitions: &[(String, u32)]) -> Result<()> {
        self.update(|groups| remove_offsets(groups, group, partitions))
    }

    fn delete_topic(&self, topic: &str) -> Result<()> {
        self.update(|groups| {
            for group_offsets in groups.values_mut() {
                group_offsets.remove(topic);
            }
        })
    }
}

/// Removes the offsets of `partitions` of `group`, then the topics and the group left
/// without any (shared by the store and the coordinator's copy in memory).
pub(crate) fn remove_offsets(
    groups: &mut BTreeMap<String, GroupOffsets>,
    group: &str,
    partitions: &[(String, u32)],
) {
    let Some(group_offsets) = groups.get_mut(group) else {
        return;
    };
    for (topic, partition) in partitions {
        if let Some(by_partition) = group_offsets.get_mut(topic) {
            by_partition.remove(partition);
            if by_partition.is_empty() {
                group_offsets.remove(topic);
            }
        }
    }
    if group_offsets.is_empty() {
        groups.remove(group);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(topic: &str, partition: u32, offset: i64, epoch: Option<i32>) -> PartitionOffset {
        PartitionOffset {
            topic: topic.into(),
            partition,
            committed: CommittedOffset {
                offset,
                metadata: None,
                leader_epoch: epoch,
            },
        }
    }

    #[test]
    fn a_file_written_before_leader_epochs_reads_with_none() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("groups.json"),
            r#"{"version":1,"groups":{"g":{"t":{"0":{"offset":7,"metadata":"m"}}}}}"#,
        )
        .unwrap();
        let store = FileOffsetStore::open(dir.path()).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(
            loaded["g"]["t"][&0],
            CommittedOffset {
                offset: 7,
                metadata: Some("m".into()),
                leader_epoch: None
            }
        );
    }

    #[test]
    fn leader_epochs_survive_a_reopen_and_absent_ones_are_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileOffsetStore::open(dir.path()).unwrap();
        store
            .commit("g", &[at("t", 0, 5, Some(2)), at("t", 1, 9, None)])
            .unwrap();
        let text = std::fs::read_to_string(dir.path().join("groups.json")).unwrap();
        assert_eq!(text.matches("leader_epoch").count(), 1, "{text}");
        let loaded = FileOffsetStore::open(dir.path()).unwrap().load().unwrap();
        assert_eq!(loaded["g"]["t"][&0].leader_epoch, Some(2));
        assert_eq!(loaded["g"]["t"][&1].leader_epoch, None);
    }

    #[test]
    fn deleting_offsets_drops_emptied_topics_and_groups_durably() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileOffsetStore::open(dir.path()).unwrap();
        store
            .commit(
                "g",
                &[
                    at("a", 0, 1, None),
                    at("a", 1, 2, None),
                    at("b", 0, 3, None),
                ],
            )
            .unwrap();
        store.commit("h", &[at("a", 0, 4, None)]).unwrap();
        store
            .delete_offsets("g", &[("a".into(), 0), ("a".into(), 1), ("zz".into(), 0)])
            .unwrap();
        let loaded = FileOffsetStore::open(dir.path()).unwrap().load().unwrap();
        assert!(!loaded["g"].contains_key("a"));
        assert_eq!(loaded["g"]["b"][&0].offset, 3);
        assert_eq!(loaded["h"]["a"][&0].offset, 4, "other groups keep theirs");
        store.delete_offsets("g", &[("b".into(), 0)]).unwrap();
        let loaded = FileOffsetStore::open(dir.path()).unwrap().load().unwrap();
        assert!(
            !loaded.contains_key("g"),
            "a group left with nothing is dropped"
        );
    }
}
