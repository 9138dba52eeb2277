//! Every subscription of the broker, and `meta/subscriptions.json`, the file that names
//! them with their settings.
//!
//! # File
//! `{"version": 1, "subscriptions": [<config>, ...]}`, replaced atomically on every
//! change (docs/format.md). A file written before the version field existed (a plain
//! array of configs) is read as version 1 and rewritten in the new shape at the next
//! change. Each subscription's own files are in `subscriptions/<name>/`.

use super::config::SubscriptionConfig;
use super::push_api::PushRuntime;
use super::subscription::Subscription;
use crate::error::{BrokerError, Result};
use ferry_log::sync::{read, write};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock, RwLockWriteGuard};

/// The version of `meta/subscriptions.json` this Ferry reads and writes.
pub const SUBSCRIPTIONS_FILE_VERSION: u32 = 1;

/// On-disk shape of `meta/subscriptions.json`.
#[derive(Serialize, Deserialize)]
struct SubscriptionsFile {
    version: u32,
    subscriptions: Vec<SubscriptionConfig>,
}

/// The subscriptions a data folder names, read from `path`.
fn read_file(path: &Path) -> Result<Vec<SubscriptionConfig>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(BrokerError::Meta(format!(
                "reading {}: {e}",
                path.display()
            )))
        }
    };
    let invalid =
        |e: serde_json::Error| BrokerError::Meta(format!("{} is not valid: {e}", path.display()));
    // Earlier releases wrote a plain array of configs: that is version 1's content.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return serde_json::from_slice(&bytes).map_err(invalid);
    }
    let file: SubscriptionsFile = serde_json::from_slice(&bytes).map_err(invalid)?;
    if file.version != SUBSCRIPTIONS_FILE_VERSION {
        return Err(BrokerError::Meta(format!(
            "{} has version {}, this Ferry reads version {SUBSCRIPTIONS_FILE_VERSION}",
            path.display(),
            file.version
        )));
    }
    Ok(file.subscriptions)
}

/// The registry of subscriptions, kept in the broker.
pub struct Subscriptions {
    pub(crate) dir: PathBuf,
    meta_path: PathBuf,
    map: RwLock<HashMap<String, Arc<Subscription>>>,
    /// The webhook dispatcher, once it has started.
    pub(crate) push_runtime: OnceLock<Arc<dyn PushRuntime>>,
}

impl Subscriptions {
    /// Opens every subscription named in `meta/subscriptions.json`.
    pub(crate) fn open(data_dir: &Path, now: u64) -> Result<Self> {
        let dir = data_dir.join("subscriptions");
        std::fs::create_dir_all(&dir)
            .map_err(|e| BrokerError::io(format!("creating {}", dir.display()), e))?;
        let meta_path = data_dir.join("meta").join("subscriptions.json");
        let configs = read_file(&meta_path)?;
        // Folders the file does not name are left from an interrupted create or delete.
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !configs.iter().any(|c| c.name == name) {
                    if let Err(err) = std::fs::remove_dir_all(e.path()) {
                        tracing::warn!(dir = %e.path().display(), error = %err, "Could not remove a subscription folder left from an interrupted create or delete.");
                    }
                }
            }
        }
        let mut map = HashMap::new();
        for c in configs {
            let name = c.name.clone();
            let sub = Subscription::open(&dir.join(&name), c, None, now)?;
            map.insert(name, Arc::new(sub));
        }
        Ok(Subscriptions {
            dir,
            meta_path,
            map: RwLock::new(map),
            push_runtime: OnceLock::new(),
        })
    }

    pub(crate) fn get(&self, name: &str) -> Result<Arc<Subscription>> {
        read(&self.map)
            .get(name)
            .cloned()
            .ok_or_else(|| BrokerError::SubscriptionNotFound(name.to_string()))
    }

    pub(crate) fn all(&self) -> Vec<Arc<Subscription>> {
        read(&self.map).values().cloned().collect()
    }

    /// The map, locked for a change that is then saved with [`Subscriptions::save`].
    pub(crate) fn lock_map(&self) -> RwLockWriteGuard<'_, HashMap<String, Arc<Subscription>>> {
        write(&self.map)
    }

    /// Writes `meta/subscriptions.json` from `map`, atomically.
    pub(crate) fn save(&self, map: &HashMap<String, Arc<Subscription>>) -> Result<()> {
        let mut subscriptions: Vec<SubscriptionConfig> = map.values().map(|s| s.config()).collect();
        subscriptions.sort_by(|a, b| a.name.cmp(&b.name));
        let file = SubscriptionsFile {
            version: SUBSCRIPTIONS_FILE_VERSION,
            subscriptions,
        };
        let bytes = serde_json::to_vec_pretty(&file)
            .map_err(|e| BrokerError::Meta(format!("encoding subscriptions: {e}")))?;
        crate::fsutil::replace_file(&self.meta_path, &bytes).map_err(BrokerError::Meta)
    }

    pub(crate) fn shutdown(&self) {
        for s in self.all() {
            s.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"{"name": "s", "topic": "t", "mode": "queue",
        "visibility_timeout_ms": 30000, "max_deliveries": 5, "dead_letter_topic": "s-dlq",
        "retry": {"strategy": "fixed", "delay_ms": 1000, "max_delay_ms": 3600000, "jitter": "none"},
        "max_in_flight": 10, "max_in_flight_per_consumer": 10, "ordering": "none",
        "created_at_ms": 1}"#;

    #[test]
    fn the_file_of_an_earlier_release_without_a_version_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("subscriptions.json");
        std::fs::write(&path, format!("[{CONFIG}]")).unwrap();
        let configs = read_file(&path).unwrap();
        assert_eq!(configs.len(), 1);
        assert_eq!(configs[0].name, "s");
    }

    #[test]
    fn a_versioned_file_is_read_and_an_unknown_version_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("subscriptions.json");
        std::fs::write(
            &path,
            format!(r#"{{"version": 1, "subscriptions": [{CONFIG}]}}"#),
        )
        .unwrap();
        assert_eq!(read_file(&path).unwrap().len(), 1);
        std::fs::write(&path, r#"{"version": 2, "subscriptions": []}"#).unwrap();
        let e = read_file(&path).unwrap_err().to_string();
        assert!(e.contains("has version 2"), "{e}");
        assert!(read_file(&dir.path().join("missing.json"))
            .unwrap()
            .is_empty());
    }
}
