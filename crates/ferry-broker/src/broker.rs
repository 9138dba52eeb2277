//! The broker: topics and their partitions in one data folder. Producing is in
//! [`crate::produce`], subscriptions in [`crate::subs`], groups in [`crate::groups`].
//!
//! # Data folder
//!
//! ```text
//! <data>/ferry.lock                       held (flock) while a Ferry process uses the folder
//! <data>/meta/topics.json                 topic settings (see `meta`)
//! <data>/meta/groups.json                 consumer groups' committed offsets (see `groups::store`)
//! <data>/meta/subscriptions.json          subscription settings (see `subs::registry`)
//! <data>/meta/transactions.json           transactional ids and their transactions (see `txn`)
//! <data>/topics/<topic>/<partition>/      one partition log (see ferry-log)
//! <data>/subscriptions/<name>/            one subscription's journal, snapshot and delay
//!                                         files (see `subs::store`)
//! ```
//!
//! # Crash during admin
//!
//! Creating a topic opens its folders, then records it in the metadata store; deleting
//! records the deletion first, then moves the folder aside and removes it. A folder
//! that the metadata store does not name is left from an interrupted operation: it is
//! cleared when a topic of that name is created again.
//!
//! # Shutdown
//!
//! [`Broker::shutdown`] syncs every partition and closes it; later writes fail.

use crate::config::{
    validate_topic_name, CleanupPolicy, DirtyRatio, DurabilityPolicy, TimestampType, TopicConfig,
    TopicDefaults, DELETE_RETENTION_MS_DEFAULT, MAX_COMPACTION_LAG_MS_DEFAULT,
    MIN_COMPACTION_LAG_MS_DEFAULT,
};
use crate::error::{BrokerError, Result};
use crate::meta::{FileMetaStore, MetaStore};
use crate::partition::{Partition, ReadRecords};
use crate::topic::Topic;
use crate::topic_id::TopicId;
use ferry_log::metrics::record_payload_bytes;
use ferry_log::sync::{lock, read, write};
use ferry_log::{DecodeLimits, FirstBatch, PartitionLog};
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Where a time begins in a partition (see [`Broker::find_by_time`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeLookup {
    /// The first record with a timestamp at or after the time: its offset and timestamp.
    pub first: Option<(u64, i64)>,
    /// The partition's latest (next) offset, read after the lookup.
    pub latest: u64,
}

impl TimeLookup {
    /// The offset to start reading at: the first record's, else the latest offset.
    pub fn offset(&self) -> u64 {
        self.first.map_or(self.latest, |(offset, _)| offset)
    }
}

/// Topic settings as users send them, for a new topic (absent fields take the server's
/// defaults) or for a change (absent fields stay as they are). Unknown fields are refused.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSettings {
    /// On update, only growth is allowed.
    pub partitions: Option<u32>,
    /// -1 keeps data forever.
    pub retention_ms: Option<i64>,
    /// -1 means no size limit.
    pub retention_bytes: Option<i64>,
    pub segment_bytes: Option<u64>,
    pub segment_ms: Option<u64>,
    pub max_record_bytes: Option<u64>,
    pub durability: Option<DurabilityPolicy>,
    pub flush_interval_ms: Option<u64>,
    /// Which time records carry; CreateTime when absent at creation.
    pub timestamp_type: Option<TimestampType>,
    /// `delete`, `compact` or `compact,delete`; delete when absent at creation.
    pub cleanup_policy: Option<CleanupPolicy>,
    pub delete_retention_ms: Option<u64>,
    pub min_compaction_lag_ms: Option<u64>,
    pub min_cleanable_dirty_ratio: Option<f64>,
    pub max_compaction_lag_ms: Option<u64>,
}

/// One partition's state for `describe`.
#[derive(Debug, Clone, Copy)]
pub struct PartitionInfo {
    pub partition: u32,
    pub earliest: u64,
    pub latest: u64,
    pub size_bytes: u64,
    pub segments: usize,
}

#[derive(Debug, Clone)]
pub struct TopicInfo {
    pub config: TopicConfig,
    pub partitions: Vec<PartitionInfo>,
}

/// A partition's first readable offset, latest (next readable) offset, and last
/// stable offset (≤ latest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StableBounds {
    pub earliest: u64,
    pub latest: u64,
    pub stable: u64,
}

/// Server-wide settings of the broker.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub data_dir: PathBuf,
    pub defaults: TopicDefaults,
    /// How often retention is checked.
    pub retention_check_ms: u64,
    /// Most partitions all topics together may have: each holds an open file and a
    /// few KiB of memory. Topics already on disk are opened whatever their number.
    pub max_partitions: u32,
    /// The most segment files the broker may hold open (each segment keeps its file
    /// open): a topic created or grown past it is refused with
    /// [`BrokerError::PartitionLimit`] instead of failing on the open-file limit.
    /// `None`: no limit.
    pub max_open_segments: Option<u64>,
    /// Memory of the cleaner's offset map, which compacts compacted topics (see
    /// [`crate::cleaner`]).
    pub cleaner_offset_map_bytes: usize,
}

/// The default of `max_partitions`.
pub const MAX_PARTITIONS_DEFAULT: u32 = 20_000;

fn limit(v: Option<i64>, default: Option<u64>, what: &str) -> Result<Option<u64>> {
    match v {
        None => Ok(default),
        Some(-1) => Ok(None),
        Some(n) if n > 0 => Ok(Some(n as u64)),
        Some(n) => Err(BrokerError::InvalidConfig(format!(
            "{what} must be positive or -1 (no limit), got {n}"
        ))),
    }
}

pub struct Broker {
    config: BrokerConfig,
    _lock: File,
    meta: Box<dyn MetaStore>,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    /// The same topics by id; changed together with `topics`, under the admin lock.
    topic_ids: RwLock<HashMap<TopicId, Arc<Topic>>>,
    pub(crate) admin: tokio::sync::Mutex<()>,
    pub(crate) limits: DecodeLimits,
    any_readable: Arc<tokio::sync::Notify>,
    /// Histograms every partition log of this broker observes into.
    log_metrics: ferry_log::LogMetrics,
    /// Consumer groups and their committed offsets.
    pub groups: crate::groups::Coordinator,
    /// Queue subscriptions.
    pub(crate) subs: crate::subs::Subscriptions,
    /// Transactional ids and their transactions.
    pub txns: Arc<crate::txn::TxnCoordinator>,
    /// What the cleaner did.
    pub(crate) cleaner: crate::cleaner::CleanerCounters,
    /// Shared mode's log and caches; `None` in the local mode (see [`crate::shared`]).
    pub(crate) shared: Option<Arc<crate::shared::SharedTopics>>,
}

impl Broker {
    /// Opens the data folder: takes its lock, loads topics and recovers every partition.
    pub fn open(config: BrokerConfig) -> Result<Arc<Broker>> {
        Broker::open_with(config, None)
    }

    /// Opens the data folder; in shared mode (`shared`) topics are not loaded from it.
    pub(crate) fn open_with(
        config: BrokerConfig,
        shared: Option<Arc<crate::shared::SharedTopics>>,
    ) -> Result<Arc<Broker>> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir)
            .map_err(|e| BrokerError::io(format!("creating {}", dir.display()), e))?;
        let lock_path = dir.join("ferry.lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| BrokerError::io(format!("opening {}", lock_path.display()), e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(BrokerError::DataDirLocked {
                    path: dir.display().to_string(),
                    lock: lock_path.display().to_string(),
                })
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(BrokerError::io(
                    format!("locking {}", lock_path.display()),
                    e,
                ))
            }
        }
        let topics_dir = dir.join("topics");
        std::fs::create_dir_all(&topics_dir)
            .map_err(|e| BrokerError::io(format!("creating {}", topics_dir.display()), e))?;
        if let Ok(entries) = std::fs::read_dir(&topics_dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(".trash-") {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let meta = FileMetaStore::open(&dir.join("meta"))?;
        let offsets: Arc<dyn crate::groups::OffsetStore> = match &shared {
            Some(sh) => Arc::new(crate::shared_groups::SharedOffsetStore {
                shared: Arc::clone(sh),
            }),
            None => Arc::new(crate::groups::FileOffsetStore::open(&dir.join("meta"))?),
        };
        let groups = crate::groups::Coordinator::new(offsets)?;
        let txns = Arc::new(crate::txn::TxnCoordinator::open(&dir.join("meta"))?);
        let any_readable = Arc::new(tokio::sync::Notify::new());
        let log_metrics = ferry_log::LogMetrics::default();
        let mut topics = HashMap::new();
        let local_topics = if shared.is_some() {
            Vec::new()
        } else {
            meta.load_topics()?
        };
        for mut tc in local_topics {
            // Topics created before ids existed get one now, kept from then on.
            if tc.topic_id.is_none() {
                tc.topic_id = TopicId::random();
                meta.put_topic(&tc)?;
                tracing::info!(topic = %tc.name, topic_id = %tc.topic_id, "Gave a topic created before topic ids its id.");
            }
            // The names become folder names: a hand-edited file must not point elsewhere.
            tc.validate().map_err(|e| {
                BrokerError::Meta(format!(
                    "{} names a topic Ferry cannot open: {e}",
                    dir.join("meta/topics.json").display()
                ))
            })?;
            let parts = (0..tc.partitions)
                .map(|p| {
                    let dir = topics_dir.join(&tc.name);
                    open_partition(&dir, p, &tc, &any_readable, &log_metrics)
                })
                .collect::<Result<Vec<_>>>()?;
            topics.insert(tc.name.clone(), Arc::new(Topic::new(tc, parts)));
        }
        let mut topic_ids = HashMap::new();
        for t in topics.values() {
            let id = t.config().topic_id;
            if topic_ids.insert(id, Arc::clone(t)).is_some() {
                return Err(BrokerError::Meta(format!(
                    "{} gives two topics the id {id}",
                    dir.join("meta/topics.json").display()
                )));
            }
        }
        let subs = crate::subs::Subscriptions::open(dir, now_ms())?;
        clamp_subscriptions(&subs, &topics)?;
        Ok(Arc::new(Broker {
            config,
            _lock: lock,
            meta: Box::new(meta),
            topics: RwLock::new(topics),
            topic_ids: RwLock::new(topic_ids),
            admin: tokio::sync::Mutex::new(()),
            limits: DecodeLimits::default(),
            any_readable,
            log_metrics,
            groups,
            subs,
            txns,
            cleaner: Default::default(),
            shared,
        }))
    }

    /// Adds a topic to the maps by name and id.
    pub(crate) fn insert_topic(&self, topic: Arc<Topic>) {
        let config = topic.config();
        write(&self.topics).insert(config.name.clone(), Arc::clone(&topic));
        write(&self.topic_ids).insert(config.topic_id, topic);
    }

    pub(crate) fn remove_topic(&self, name: &str) {
        if let Some(t) = write(&self.topics).remove(name) {
            write(&self.topic_ids).remove(&t.config().topic_id);
        }
    }

    /// Makes the maps hold exactly these topics (shared mode: as Postgres has them),
    /// keeping the [`Topic`] of each that is unchanged.
    pub(crate) fn replace_topics(&self, configs: Vec<TopicConfig>) {
        let mut topics = write(&self.topics);
        let mut ids = write(&self.topic_ids);
        let wanted: std::collections::HashSet<&str> =
            configs.iter().map(|c| c.name.as_str()).collect();
        topics.retain(|name, _| wanted.contains(name.as_str()));
        for c in configs {
            let same = topics.get(&c.name).is_some_and(|t| t.config() == c);
            if !same {
                topics.insert(c.name.clone(), Arc::new(Topic::new(c, Vec::new())));
            }
        }
        *ids = topics
            .values()
            .map(|t| (t.config().topic_id, Arc::clone(t)))
            .collect();
    }

    /// A topic's description: its partitions' bounds from the log, or in shared mode
    /// from what this node last saw.
    fn describe(&self, topic: &Topic) -> TopicInfo {
        if self.shared.is_some() {
            self.shared_describe(topic)
        } else {
            describe(topic)
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }

    pub(crate) fn config(&self) -> &BrokerConfig {
        &self.config
    }

    pub fn defaults(&self) -> &TopicDefaults {
        &self.config.defaults
    }

    fn topic_dir(&self, name: &str) -> PathBuf {
        self.config.data_dir.join("topics").join(name)
    }

    pub fn topic(&self, name: &str) -> Result<Arc<Topic>> {
        read(&self.topics)
            .get(name)
            .cloned()
            .ok_or_else(|| BrokerError::TopicNotFound(name.to_string()))
    }

    /// The topic with this id, if there is one. A topic deleted and created again under
    /// its name has a new id, so an old id finds nothing.
    pub fn topic_by_id(&self, id: TopicId) -> Option<Arc<Topic>> {
        read(&self.topic_ids).get(&id).cloned()
    }

    pub async fn create_topic(&self, name: &str, req: TopicSettings) -> Result<TopicInfo> {
        let _admin = self.admin.lock().await;
        self.create_topic_locked(name, req).await
    }

    /// Creates a topic; the caller holds the admin lock.
    pub(crate) async fn create_topic_locked(
        &self,
        name: &str,
        req: TopicSettings,
    ) -> Result<TopicInfo> {
        validate_topic_name(name)?;
        let d = &self.config.defaults;
        let config = TopicConfig {
            name: name.to_string(),
            partitions: req.partitions.unwrap_or(d.partitions),
            retention_ms: limit(req.retention_ms, d.retention_ms, "retention_ms")?,
            retention_bytes: limit(req.retention_bytes, d.retention_bytes, "retention_bytes")?,
            segment_bytes: req.segment_bytes.unwrap_or(d.segment_bytes),
            segment_ms: req.segment_ms.or(d.segment_ms),
            max_record_bytes: req.max_record_bytes.unwrap_or(d.max_record_bytes),
            durability: req.durability.unwrap_or(d.durability),
            flush_interval_ms: req.flush_interval_ms.unwrap_or(d.flush_interval_ms),
            created_at_ms: now_ms(),
            timestamp_type: req.timestamp_type.unwrap_or_default(),
            topic_id: self.new_topic_id(),
            cleanup_policy: req.cleanup_policy.unwrap_or_default(),
            delete_retention_ms: req
                .delete_retention_ms
                .unwrap_or(DELETE_RETENTION_MS_DEFAULT),
            min_compaction_lag_ms: req
                .min_compaction_lag_ms
                .unwrap_or(MIN_COMPACTION_LAG_MS_DEFAULT),
            min_cleanable_dirty_ratio: req
                .min_cleanable_dirty_ratio
                .map_or_else(DirtyRatio::default, DirtyRatio),
            max_compaction_lag_ms: req
                .max_compaction_lag_ms
                .unwrap_or(MAX_COMPACTION_LAG_MS_DEFAULT),
        };
        config.validate()?;
        if self.shared.is_some() {
            return self.create_shared_topic(config).await;
        }
        if self.topic(&config.name).is_ok() {
            return Err(BrokerError::TopicExists(config.name));
        }
        self.check_partition_limit(u64::from(config.partitions))?;
        self.check_room_for(u64::from(config.partitions))?;
        let dir = self.topic_dir(&config.name);
        let cfg = config.clone();
        let notify = Arc::clone(&self.any_readable);
        let metrics = self.log_metrics.clone();
        let parts = blocking(move || {
            if dir.exists() {
                // Left by an interrupted delete: the metadata store does not know it.
                std::fs::remove_dir_all(&dir)
                    .map_err(|e| BrokerError::io(format!("clearing {}", dir.display()), e))?;
            }
            (0..cfg.partitions)
                .map(|p| open_partition(&dir, p, &cfg, &notify, &metrics))
                .collect::<Result<Vec<_>>>()
        })
        .await?;
        if let Err(e) = self.meta.put_topic(&config) {
            let _ = std::fs::remove_dir_all(self.topic_dir(&config.name));
            return Err(e);
        }
        let topic = Arc::new(Topic::new(config.clone(), parts));
        write(&self.topics).insert(config.name.clone(), Arc::clone(&topic));
        write(&self.topic_ids).insert(config.topic_id, Arc::clone(&topic));
        tracing::info!(topic = %config.name, topic_id = %config.topic_id, partitions = config.partitions, "Created topic.");
        Ok(self.describe(&topic))
    }

    /// A random id no topic has (a clash is all but impossible, but cheap to rule out).
    /// The caller holds the admin lock.
    fn new_topic_id(&self) -> TopicId {
        loop {
            let id = TopicId::random();
            if !read(&self.topic_ids).contains_key(&id) {
                return id;
            }
        }
    }

    /// Refuses `more` partitions when all topics would then have more than
    /// `max_partitions`. The caller holds the admin lock, so counts do not race.
    fn check_partition_limit(&self, more: u64) -> Result<()> {
        let now: u64 = read(&self.topics)
            .values()
            .map(|t| u64::from(t.config().partitions))
            .sum();
        let wanted = now + more;
        if wanted > u64::from(self.config.max_partitions) {
            return Err(BrokerError::PartitionLimit {
                limit: self.config.max_partitions,
                wanted,
            });
        }
        Ok(())
    }

    /// Refuses `partitions` new partitions (one segment file each) when they would take
    /// the open segment files past [`BrokerConfig::max_open_segments`].
    fn check_room_for(&self, partitions: u64) -> Result<()> {
        let Some(limit) = self.config.max_open_segments else {
            return Ok(());
        };
        if partitions == 0 {
            return Ok(());
        }
        let topics: Vec<_> = read(&self.topics).values().cloned().collect();
        let open: u64 = topics
            .iter()
            .flat_map(|t| t.partitions())
            .map(|p| p.log.stats().segments as u64)
            .sum();
        if open.saturating_add(partitions) > limit {
            return Err(BrokerError::OpenFileLimit {
                asked: partitions,
                open,
                limit,
            });
        }
        Ok(())
    }

    pub fn list_topics(&self) -> Vec<TopicInfo> {
        let topics: Vec<_> = read(&self.topics).values().cloned().collect();
        let mut out: Vec<_> = topics.iter().map(|t| self.describe(t)).collect();
        out.sort_by(|a, b| a.config.name.cmp(&b.config.name));
        out
    }

    pub fn describe_topic(&self, name: &str) -> Result<TopicInfo> {
        Ok(self.describe(&*self.topic(name)?))
    }

    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let _admin = self.admin.lock().await;
        if self.shared.is_some() {
            return self.delete_shared_topic(name).await;
        }
        let topic = self.topic(name)?;
        if let Some(user) = self.dead_letter_users(name).first() {
            return Err(BrokerError::InvalidConfig(format!(
                "topic '{name}' is the dead-letter topic of subscription '{user}'; delete that subscription or give it another dead_letter_topic first"
            )));
        }
        for sub in self.subscriptions_of(name) {
            self.delete_subscription_locked(&sub).await?;
        }
        self.meta.delete_topic(name)?;
        write(&self.topics).remove(name);
        write(&self.topic_ids).remove(&topic.config().topic_id);
        if let Err(e) = self.groups.forget_topic(name) {
            tracing::warn!(topic = %name, error = %e, "Could not drop the deleted topic's committed offsets.");
        }
        let dir = self.topic_dir(name);
        let trash = self
            .config
            .data_dir
            .join("topics")
            .join(format!(".trash-{name}-{}", now_ms()));
        blocking(move || {
            for p in topic.partitions() {
                let _ = p.log.close();
            }
            std::fs::rename(&dir, &trash)
                .map_err(|e| BrokerError::io(format!("moving {} aside", dir.display()), e))?;
            std::fs::remove_dir_all(&trash)
                .map_err(|e| BrokerError::io(format!("removing {}", trash.display()), e))
        })
        .await?;
        tracing::info!(topic = %name, "Deleted topic.");
        Ok(())
    }

    /// Changes the settings `update` names; the others stay as they are.
    pub async fn update_topic(&self, name: &str, update: TopicSettings) -> Result<TopicInfo> {
        self.change_topic(name, |old| updated(old, &update), false)
            .await
    }

    /// Replaces every setting of a topic but its partition count, as Kafka's
    /// AlterConfigs does: what `settings` leaves out returns to the server's default.
    /// With `validate_only` the change is checked (as [`Broker::update_topic`] checks
    /// it) and nothing is changed. Gives the settings the topic has (or would have).
    pub async fn replace_topic_settings(
        &self,
        name: &str,
        settings: TopicSettings,
        validate_only: bool,
    ) -> Result<TopicConfig> {
        if settings.partitions.is_some() {
            return Err(BrokerError::InvalidConfig(
                "the partition count is not a setting to replace; add partitions instead".into(),
            ));
        }
        let d = self.config.defaults.clone();
        let info = self
            .change_topic(
                name,
                |old| {
                    let mut base = old.clone();
                    base.retention_ms = d.retention_ms;
                    base.retention_bytes = d.retention_bytes;
                    base.segment_bytes = d.segment_bytes;
                    base.segment_ms = d.segment_ms;
                    base.max_record_bytes = d.max_record_bytes;
                    base.durability = d.durability;
                    base.flush_interval_ms = d.flush_interval_ms;
                    base.timestamp_type = TimestampType::default();
                    base.cleanup_policy = CleanupPolicy::default();
                    base.delete_retention_ms = DELETE_RETENTION_MS_DEFAULT;
                    base.min_compaction_lag_ms = MIN_COMPACTION_LAG_MS_DEFAULT;
                    base.min_cleanable_dirty_ratio = DirtyRatio::default();
                    base.max_compaction_lag_ms = MAX_COMPACTION_LAG_MS_DEFAULT;
                    updated(&base, &settings)
                },
                validate_only,
            )
            .await?;
        Ok(info.config)
    }

    /// Changes a topic's settings to what `change` makes of the current ones, after
    /// the checks every change passes; with `dry_run`, only checks.
    async fn change_topic(
        &self,
        name: &str,
        change: impl FnOnce(&TopicConfig) -> Result<TopicConfig>,
        dry_run: bool,
    ) -> Result<TopicInfo> {
        if self.shared.is_some() {
            return Err(BrokerError::NotInSharedMode("changing a topic's settings"));
        }
        let _admin = self.admin.lock().await;
        let topic = self.topic(name)?;
        let old = topic.config();
        let config = change(&old)?;
        debug_assert_eq!(config.name, old.name, "a change renamed the topic");
        debug_assert_eq!(
            config.topic_id, old.topic_id,
            "a change gave the topic a new id"
        );
        if config.partitions < old.partitions {
            return Err(BrokerError::InvalidConfig(format!(
                "partitions can only grow: the topic has {}, asked for {}",
                old.partitions, config.partitions
            )));
        }
        config.validate()?;
        let more = u64::from(config.partitions - old.partitions);
        if more > 0 {
            // (Topics on disk may already be past the limit: a change of settings alone
            // is not refused for that.)
            self.check_partition_limit(more)?;
            self.check_room_for(more)?;
        }
        if dry_run {
            return Ok(TopicInfo {
                config,
                partitions: self.describe(&topic).partitions,
            });
        }
        let dir = self.topic_dir(name);
        let cfg = config.clone();
        let notify = Arc::clone(&self.any_readable);
        let metrics = self.log_metrics.clone();
        let new_parts = blocking(move || {
            (old.partitions..cfg.partitions)
                .map(|p| open_partition(&dir, p, &cfg, &notify, &metrics))
                .collect::<Result<Vec<_>>>()
        })
        .await?;
        self.meta.put_topic(&config)?;
        let log_config = config.log_config();
        for p in topic.partitions() {
            p.log.set_config(log_config);
        }
        write(&topic.partitions).extend(new_parts);
        *write(&topic.config) = config;
        Ok(self.describe(&topic))
    }

    /// Reads records of one partition from `offset`; with `wait` > 0 and nothing to
    /// read, waits up to `wait` for records to arrive (long polling).
    pub async fn read(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_records: usize,
        max_bytes: usize,
        wait: Duration,
    ) -> Result<ReadRecords> {
        let read = self
            .read_uncounted(topic, partition, offset, max_records, max_bytes, wait)
            .await?;
        if let Ok(part) = self.topic(topic).and_then(|t| t.partition(partition)) {
            let bytes = read.records.iter().map(record_payload_bytes).sum();
            part.log
                .counters
                .count_out(read.records.len() as u64, bytes);
        }
        Ok(read)
    }

    /// [`Broker::read`] without counting the records as read by a consumer (for
    /// Ferry's own looks at a partition, such as the oldest record's age).
    pub(crate) async fn read_uncounted(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_records: usize,
        max_bytes: usize,
        wait: Duration,
    ) -> Result<ReadRecords> {
        if self.shared.is_some() {
            return self
                .shared_read(topic, partition, offset, max_records, max_bytes, wait)
                .await;
        }
        let part = self.topic(topic)?.partition(partition)?;
        let deadline = Instant::now() + wait;
        loop {
            let mut changed = part.subscribe();
            let p = Arc::clone(&part);
            let limits = self.limits;
            let res =
                blocking(move || p.read_records(offset, max_records, max_bytes, &limits)).await?;
            let now = Instant::now();
            if !res.records.is_empty() || now >= deadline || res.next_offset > offset {
                return Ok(res);
            }
            if tokio::time::timeout(deadline - now, changed.changed())
                .await
                .is_err()
            {
                return Ok(res);
            }
        }
    }

    /// Raw whole batches of one partition from `offset` (the first may begin before
    /// it), at most `max_bytes`; with [`FirstBatch::Whole`] a first batch larger than
    /// that is returned alone, with [`FirstBatch::WithinLimit`] nothing is then.
    pub async fn read_batches(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
        first_batch: FirstBatch,
    ) -> Result<ferry_log::ReadResult> {
        if self.shared.is_some() {
            return self
                .shared_read_batches(topic, partition, offset, max_bytes, first_batch)
                .await;
        }
        let part = self.topic(topic)?.partition(partition)?;
        blocking(move || {
            let read = part
                .log
                .read_batches(offset, max_bytes, first_batch)
                .map_err(|e| BrokerError::from_log(partition, e))?;
            let records = ferry_log::metrics::records_in_batches(&read.batches);
            part.log
                .counters
                .count_out(records, read.batches.len() as u64);
            Ok(read)
        })
        .await
    }

    /// [`Broker::read_batches`] for a `read_committed` reader: only batches before the
    /// last stable offset, with the aborted transactions whose records the batches
    /// returned may hold.
    pub async fn read_committed_batches(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
        first_batch: FirstBatch,
    ) -> Result<(ferry_log::ReadResult, Vec<ferry_log::AbortedTxn>)> {
        if self.shared.is_some() {
            return self
                .shared_read_committed_batches(topic, partition, offset, max_bytes, first_batch)
                .await;
        }
        let part = self.topic(topic)?.partition(partition)?;
        blocking(move || {
            let stable = part.log.last_stable();
            let read = part
                .log
                .read_batches_until(offset, max_bytes, first_batch, stable)
                .map_err(|e| BrokerError::from_log(partition, e))?;
            let records = ferry_log::metrics::records_in_batches(&read.batches);
            part.log
                .counters
                .count_out(records, read.batches.len() as u64);
            let aborted = if read.batches.is_empty() {
                Vec::new()
            } else {
                part.log.aborted_in(offset, stable)
            };
            Ok((read, aborted))
        })
        .await
    }

    /// A partition's last stable offset: the first offset of its earliest open
    /// transaction, else its latest (next readable) offset.
    pub fn last_stable(&self, topic: &str, partition: u32) -> Result<u64> {
        if let Some(sh) = &self.shared {
            return self.shared_stable(sh, topic, partition);
        }
        Ok(self.topic(topic)?.partition(partition)?.log.last_stable())
    }

    /// [`Broker::bounds`] and the last stable offset, in one look-up (Fetch).
    pub fn stable_bounds(&self, topic: &str, partition: u32) -> Result<StableBounds> {
        if let Some(sh) = &self.shared {
            let (earliest, latest) = self.shared_bounds(sh, topic, partition)?;
            return Ok(StableBounds {
                earliest,
                latest,
                stable: self.shared_stable(sh, topic, partition)?,
            });
        }
        let part = self.topic(topic)?.partition(partition)?;
        let s = part.log.stats();
        // Read after the latest offset, so never past it.
        let stable = part.log.last_stable().min(s.latest);
        Ok(StableBounds {
            earliest: s.earliest,
            latest: s.latest,
            stable,
        })
    }

    /// The transactions open in a partition: producer id and first offset.
    pub fn open_transactions(&self, topic: &str, partition: u32) -> Result<Vec<(i64, u64)>> {
        if let Some(sh) = &self.shared {
            self.shared_bounds(sh, topic, partition)?;
            return Ok(Vec::new());
        }
        Ok(self
            .topic(topic)?
            .partition(partition)?
            .log
            .open_transactions())
    }

    /// The histograms every partition log of this broker observes into.
    pub fn log_metrics(&self) -> &ferry_log::LogMetrics {
        &self.log_metrics
    }

    /// Earliest and latest (next) offsets of a partition.
    pub fn bounds(&self, topic: &str, partition: u32) -> Result<(u64, u64)> {
        if let Some(sh) = &self.shared {
            return self.shared_bounds(sh, topic, partition);
        }
        let s = self.topic(topic)?.partition(partition)?.log.stats();
        Ok((s.earliest, s.latest))
    }

    /// Moves a partition's first readable offset to `offset` (`None`: its readable
    /// end), durably, deleting whole segments below it; returns the first readable
    /// offset afterwards. An offset at or below it changes nothing; one past the
    /// readable end is [`BrokerError::OffsetOutOfRange`]. Every reader (Kafka, HTTP,
    /// subscriptions, groups) sees the new start at once.
    pub async fn delete_records(
        &self,
        topic: &str,
        partition: u32,
        offset: Option<u64>,
    ) -> Result<u64> {
        if self.shared.is_some() {
            return self.shared_delete_records(topic, partition, offset).await;
        }
        let part = self.topic(topic)?.partition(partition)?;
        blocking(move || {
            part.log
                .delete_records(offset)
                .map_err(|e| BrokerError::from_log(partition, e))
        })
        .await
    }

    /// The idempotent producers a partition remembers.
    pub fn producers(&self, topic: &str, partition: u32) -> Result<Vec<ferry_log::ProducerState>> {
        if let Some(sh) = &self.shared {
            // Postgres keeps them (ferry_producers); not listed yet.
            self.shared_bounds(sh, topic, partition)?;
            return Ok(Vec::new());
        }
        Ok(self.topic(topic)?.partition(partition)?.log.producers())
    }

    /// Woken whenever any partition has new readable records; create the `notified()`
    /// future before checking, then await it, to miss nothing.
    pub fn any_readable(&self) -> &tokio::sync::Notify {
        &self.any_readable
    }

    /// Where time `ts` begins in a partition: the first record with a timestamp ≥ `ts`,
    /// and the latest offset for when there is none. The one lookup by time: Kafka's
    /// ListOffsets answers with the record (or -1), HTTP and subscriptions start at
    /// [`TimeLookup::offset`].
    pub async fn find_by_time(&self, topic: &str, partition: u32, ts: i64) -> Result<TimeLookup> {
        if self.shared.is_some() {
            return self.shared_find_by_time(topic, partition, ts).await;
        }
        let part = self.topic(topic)?.partition(partition)?;
        blocking(move || {
            let first = part
                .log
                .offset_for_timestamp(ts)
                .map_err(|e| BrokerError::from_log(partition, e))?;
            Ok(TimeLookup {
                first,
                latest: part.log.latest(),
            })
        })
        .await
    }

    pub(crate) fn all_partitions(&self) -> Vec<(TopicConfig, Arc<Partition>)> {
        let topics: Vec<_> = read(&self.topics).values().cloned().collect();
        topics
            .iter()
            .flat_map(|t| {
                let c = t.config();
                t.partitions().into_iter().map(move |p| (c.clone(), p))
            })
            .collect()
    }

    /// Runs retention and interval flushes until the broker is dropped.
    pub fn spawn_maintenance(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        // The cleaner runs beside, and ends with the broker.
        drop(self.spawn_cleaner());
        tokio::spawn(async move {
            let mut last_retention = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            loop {
                tick.tick().await;
                let Some(broker) = weak.upgrade() else { return };
                broker.groups.tick(Instant::now()).await;
                broker.expire_transactions().await;
                broker.tick_subscriptions().await;
                let retention_due = last_retention.elapsed()
                    >= Duration::from_millis(broker.config.retention_check_ms);
                if retention_due {
                    last_retention = Instant::now();
                }
                let parts = broker.all_partitions();
                drop(broker);
                let _ = tokio::task::spawn_blocking(move || maintain(parts, retention_due)).await;
            }
        })
    }

    /// Syncs and closes every partition; false if any could not be synced.
    pub fn shutdown(&self) -> bool {
        self.subs.shutdown();
        let mut ok = true;
        for (_, p) in self.all_partitions() {
            if let Err(e) = p.log.close() {
                ok = false;
                tracing::error!(dir = %p.log.dir().display(), error = %e, "Could not sync a partition at shutdown.");
            }
        }
        ok
    }
}

/// `old` with the settings `update` names changed (the partition count only checked
/// for growth by the caller).
fn updated(old: &TopicConfig, update: &TopicSettings) -> Result<TopicConfig> {
    let mut config = old.clone();
    if let Some(p) = update.partitions {
        config.partitions = p;
    }
    if update.retention_ms.is_some() {
        config.retention_ms = limit(update.retention_ms, None, "retention_ms")?;
    }
    if update.retention_bytes.is_some() {
        config.retention_bytes = limit(update.retention_bytes, None, "retention_bytes")?;
    }
    config.segment_bytes = update.segment_bytes.unwrap_or(config.segment_bytes);
    config.segment_ms = update.segment_ms.or(config.segment_ms);
    config.max_record_bytes = update.max_record_bytes.unwrap_or(config.max_record_bytes);
    config.durability = update.durability.unwrap_or(config.durability);
    config.flush_interval_ms = update.flush_interval_ms.unwrap_or(config.flush_interval_ms);
    config.timestamp_type = update.timestamp_type.unwrap_or(config.timestamp_type);
    config.cleanup_policy = update.cleanup_policy.unwrap_or(config.cleanup_policy);
    config.delete_retention_ms = update
        .delete_retention_ms
        .unwrap_or(config.delete_retention_ms);
    config.min_compaction_lag_ms = update
        .min_compaction_lag_ms
        .unwrap_or(config.min_compaction_lag_ms);
    config.max_compaction_lag_ms = update
        .max_compaction_lag_ms
        .unwrap_or(config.max_compaction_lag_ms);
    if let Some(r) = update.min_cleanable_dirty_ratio {
        config.min_cleanable_dirty_ratio = DirtyRatio(r);
    }
    Ok(config)
}

fn maintain(parts: Vec<(TopicConfig, Arc<Partition>)>, retention_due: bool) {
    for (config, p) in parts {
        if config.durability == DurabilityPolicy::Interval {
            let due = {
                let mut last = lock(&p.last_flush);
                let due = last.elapsed() >= Duration::from_millis(config.flush_interval_ms);
                if due {
                    *last = Instant::now();
                }
                due
            };
            if due {
                if let Err(e) = p.log.sync() {
                    tracing::error!(topic = %config.name, partition = p.id, error = %e, "Interval flush failed.");
                }
            }
        }
        // A topic that is only compacted keeps its old segments (compacted).
        let deletes = config.cleanup_policy.deletes();
        if retention_due
            && deletes
            && (config.retention_ms.is_some() || config.retention_bytes.is_some())
        {
            if let Err(e) =
                p.log
                    .apply_retention(now_ms(), config.retention_ms, config.retention_bytes)
            {
                tracing::error!(topic = %config.name, partition = p.id, error = %e, "Retention failed.");
            }
        }
    }
}

/// Runs blocking file I/O off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BrokerError::Storage(format!("storage task failed: {e}")))?
}

/// Clamps every subscription to the end of its topic's partitions: under durability
/// `interval` or `never` the topic's unsynced tail can be lost with the page cache while
/// the subscription's journal, always synced, kept what it saw there.
fn clamp_subscriptions(
    subs: &crate::subs::Subscriptions,
    topics: &HashMap<String, Arc<Topic>>,
) -> Result<()> {
    for sub in subs.all() {
        let config = sub.config();
        let Some(topic) = topics.get(&config.topic) else {
            continue;
        };
        let ends: Vec<(u32, u64)> = topic
            .partitions()
            .iter()
            .map(|p| (p.id, p.log.next_offset()))
            .collect();
        for p in sub.clamp_to_log(&ends)? {
            tracing::warn!(
                subscription = %config.name,
                topic = %config.topic,
                partition = p,
                end = ends.iter().find(|e| e.0 == p).map_or(0, |e| e.1),
                "The subscription had seen records past the end of the partition (an unsynced tail lost at a crash); it continues from the end, and records written there from now on are delivered."
            );
        }
    }
    Ok(())
}

fn open_partition(
    topic_dir: &Path,
    p: u32,
    config: &TopicConfig,
    notify: &Arc<tokio::sync::Notify>,
    metrics: &ferry_log::LogMetrics,
) -> Result<Arc<Partition>> {
    let dir = topic_dir.join(p.to_string());
    let (log, cuts) =
        PartitionLog::open(&dir, config.log_config()).map_err(|e| BrokerError::from_log(p, e))?;
    log.set_metrics(metrics.clone());
    for cut in cuts {
        tracing::warn!(
            segment = %cut.segment.display(),
            position = cut.position,
            bytes = cut.bytes,
            reason = %cut.reason,
            kept_in = ?cut.kept_in.as_ref().map(|k| k.display().to_string()),
            "Cut {} bytes from the end of a segment at recovery: {}.", cut.bytes, cut.reason
        );
    }
    Ok(Partition::new(p, log, Arc::clone(notify)))
}

fn describe(topic: &Topic) -> TopicInfo {
    let partitions = topic
        .partitions()
        .iter()
        .map(|p| {
            let s = p.log.stats();
            PartitionInfo {
                partition: p.id,
                earliest: s.earliest,
                latest: s.latest,
                size_bytes: s.size_bytes,
                segments: s.segments,
            }
        })
        .collect();
    TopicInfo {
        config: topic.config(),
        partitions,
    }
}
