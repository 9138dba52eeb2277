//! Where topic metadata lives: one narrow interface, so that a shared database can take
//! the place of the local file when Ferry runs on several machines.
//!
//! # The local store
//!
//! `meta/topics.json` holds every topic's settings. It is replaced atomically: the new
//! content goes to a temporary file, which is synced, renamed over the old one, and the
//! folder is synced. A crash leaves either the old or the new file, never a mix.

use crate::config::TopicConfig;
use crate::error::{BrokerError, Result};
use ferry_log::sync::lock;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Durable topic metadata.
pub trait MetaStore: Send + Sync {
    fn load_topics(&self) -> Result<Vec<TopicConfig>>;
    fn put_topic(&self, topic: &TopicConfig) -> Result<()>;
    fn delete_topic(&self, name: &str) -> Result<()>;
}

/// On-disk shape of `meta/topics.json`.
#[derive(Serialize, Deserialize)]
struct TopicsFile {
    version: u32,
    topics: Vec<TopicConfig>,
}

const TOPICS_FILE_VERSION: u32 = 1;

/// The embedded store: an atomically replaced JSON file.
pub struct FileMetaStore {
    path: PathBuf,
    topics: Mutex<BTreeMap<String, TopicConfig>>,
}

impl FileMetaStore {
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| BrokerError::Meta(format!("creating {}: {e}", dir.display())))?;
        let path = dir.join("topics.json");
        let mut topics = BTreeMap::new();
        match std::fs::read(&path) {
            Ok(bytes) => {
                let file: TopicsFile = serde_json::from_slice(&bytes).map_err(|e| {
                    BrokerError::Meta(format!("{} is not valid: {e}", path.display()))
                })?;
                if file.version != TOPICS_FILE_VERSION {
                    return Err(BrokerError::Meta(format!(
                        "{} has version {}, this Ferry reads version {TOPICS_FILE_VERSION}",
                        path.display(),
                        file.version
                    )));
                }
                for t in file.topics {
                    topics.insert(t.name.clone(), t);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(BrokerError::Meta(format!(
                    "reading {}: {e}",
                    path.display()
                )))
            }
        }
        Ok(FileMetaStore {
            path,
            topics: Mutex::new(topics),
        })
    }

    fn write(&self, topics: &BTreeMap<String, TopicConfig>) -> Result<()> {
        let file = TopicsFile {
            version: TOPICS_FILE_VERSION,
            topics: topics.values().cloned().collect(),
        };
        let bytes =
            serde_json::to_vec_pretty(&file).map_err(|e| BrokerError::Meta(e.to_string()))?;
        crate::fsutil::replace_file(&self.path, &bytes).map_err(BrokerError::Meta)
    }
}

impl MetaStore for FileMetaStore {
    fn load_topics(&self) -> Result<Vec<TopicConfig>> {
        Ok(lock(&self.topics).values().cloned().collect())
    }

    fn put_topic(&self, topic: &TopicConfig) -> Result<()> {
        let mut topics = lock(&self.topics);
        let mut next = topics.clone();
        next.insert(topic.name.clone(), topic.clone());
        self.write(&next)?;
        *topics = next;
        Ok(())
    }

    fn delete_topic(&self, name: &str) -> Result<()> {
        let mut topics = lock(&self.topics);
        let mut next = topics.clone();
        next.remove(name);
        self.write(&next)?;
        *topics = next;
        Ok(())
    }
}
