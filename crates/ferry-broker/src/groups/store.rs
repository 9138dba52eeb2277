//! Committed offsets of consumer groups, behind a narrow interface (a shared database
//! takes the place of the file when Ferry runs on several machines).
//!
//! # The local store
//!
//! `meta/groups.json` holds every group's committed offsets and is replaced atomically
//! (temporary file, fsync, rename, fsync of the folder) on each commit, so a crash leaves
//! the old or the new content. A commit is acknowledged only after that.

use crate::error::{BrokerError, Result};
use ferry_log::sync::lock;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    pub offset: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
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

    fn delete_topic(&self, topic: &str) -> Result<()> {
        self.update(|groups| {
            for group_offsets in groups.values_mut() {
                group_offsets.remove(topic);
            }
        })
    }
}
