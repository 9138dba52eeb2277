//! The broker: topics and their partitions in one data folder.
//!
//! # Data folder
//!
//! ```text
//! <data>/ferry.lock                       held (flock) while a Ferry process uses the folder
//! <data>/meta/topics.json                 topic settings (see `meta`)
//! <data>/topics/<topic>/<partition>/      one partition log (see ferry-log)
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

use crate::config::{validate_topic_name, DurabilityPolicy, TopicConfig, TopicDefaults};
use crate::error::{BrokerError, Result};
use crate::meta::{FileMetaStore, MetaStore};
use crate::partition::{Partition, ReadRecords};
use crate::partitioner::partition_for_key;
use crate::topic::Topic;
use bytes::Bytes;
use ferry_log::batch::{build_batch, NewRecord, RecordHeader};
use ferry_log::{AppendInfo, Compression, DecodeLimits, PartitionLog};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A record to produce.
#[derive(Debug, Clone, Default)]
pub struct ProduceRecord {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<RecordHeader>,
    pub partition: Option<u32>,
    /// Milliseconds since the epoch; the broker's clock when absent.
    pub timestamp: Option<i64>,
    /// The value was given as JSON and should be read back as JSON.
    pub value_is_json: bool,
}

/// What [`Broker::append_client_batches`] did.
#[derive(Debug)]
pub struct Appended {
    /// Base offset of the first appended batch.
    pub first_offset: Option<u64>,
    /// One past the last appended offset: what to make durable.
    pub end_offset: Option<u64>,
    /// Why appending stopped early, if it did.
    pub error: Option<BrokerError>,
}

/// Where a produced record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Produced {
    pub partition: u32,
    pub offset: u64,
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

/// Server-wide settings of the broker.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub data_dir: PathBuf,
    pub defaults: TopicDefaults,
    /// How often retention is checked.
    pub retention_check_ms: u64,
}

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
    pub(crate) admin: tokio::sync::Mutex<()>,
    limits: DecodeLimits,
    any_readable: Arc<tokio::sync::Notify>,
    /// Consumer groups and their committed offsets.
    pub groups: crate::groups::Coordinator,
    /// Queue subscriptions.
    pub(crate) subs: crate::subs::Subscriptions,
}

impl Broker {
    /// Opens the data folder: takes its lock, loads topics and recovers every partition.
    pub fn open(config: BrokerConfig) -> Result<Arc<Broker>> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir)
            .map_err(|e| BrokerError::Storage(format!("creating {}: {e}", dir.display())))?;
        let lock_path = dir.join("ferry.lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| BrokerError::Storage(format!("opening {}: {e}", lock_path.display())))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(BrokerError::DataDirLocked {
                    path: dir.display().to_string(),
                    lock: lock_path.display().to_string(),
                })
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(BrokerError::Storage(format!(
                    "locking {}: {e}",
                    lock_path.display()
                )))
            }
        }
        let topics_dir = dir.join("topics");
        std::fs::create_dir_all(&topics_dir)
            .map_err(|e| BrokerError::Storage(format!("creating {}: {e}", topics_dir.display())))?;
        if let Ok(entries) = std::fs::read_dir(&topics_dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(".trash-") {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let meta = FileMetaStore::open(&dir.join("meta"))?;
        let groups = crate::groups::Coordinator::new(Arc::new(
            crate::groups::FileOffsetStore::open(&dir.join("meta"))?,
        ))?;
        let any_readable = Arc::new(tokio::sync::Notify::new());
        let mut topics = HashMap::new();
        for tc in meta.load_topics()? {
            // The names become folder names: a hand-edited file must not point elsewhere.
            tc.validate().map_err(|e| {
                BrokerError::Meta(format!(
                    "{} names a topic Ferry cannot open: {e}",
                    dir.join("meta/topics.json").display()
                ))
            })?;
            let parts = (0..tc.partitions)
                .map(|p| open_partition(&topics_dir.join(&tc.name), p, &tc, &any_readable))
                .collect::<Result<Vec<_>>>()?;
            topics.insert(tc.name.clone(), Arc::new(Topic::new(tc, parts)));
        }
        let subs = crate::subs::Subscriptions::open(dir)?;
        Ok(Arc::new(Broker {
            config,
            _lock: lock,
            meta: Box::new(meta),
            topics: RwLock::new(topics),
            admin: tokio::sync::Mutex::new(()),
            limits: DecodeLimits::default(),
            any_readable,
            groups,
            subs,
        }))
    }

    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }

    pub fn defaults(&self) -> &TopicDefaults {
        &self.config.defaults
    }

    fn topic_dir(&self, name: &str) -> PathBuf {
        self.config.data_dir.join("topics").join(name)
    }

    pub fn topic(&self, name: &str) -> Result<Arc<Topic>> {
        self.topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| BrokerError::TopicNotFound(name.to_string()))
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
        };
        config.validate()?;
        if self.topic(&config.name).is_ok() {
            return Err(BrokerError::TopicExists(config.name));
        }
        let dir = self.topic_dir(&config.name);
        let cfg = config.clone();
        let notify = Arc::clone(&self.any_readable);
        let parts = blocking(move || {
            if dir.exists() {
                // Left by an interrupted delete: the metadata store does not know it.
                std::fs::remove_dir_all(&dir).map_err(|e| {
                    BrokerError::Storage(format!("clearing {}: {e}", dir.display()))
                })?;
            }
            (0..cfg.partitions)
                .map(|p| open_partition(&dir, p, &cfg, &notify))
                .collect::<Result<Vec<_>>>()
        })
        .await?;
        if let Err(e) = self.meta.put_topic(&config) {
            let _ = std::fs::remove_dir_all(self.topic_dir(&config.name));
            return Err(e);
        }
        let topic = Arc::new(Topic::new(config.clone(), parts));
        self.topics
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(config.name.clone(), Arc::clone(&topic));
        tracing::info!(topic = %config.name, partitions = config.partitions, "Created topic.");
        Ok(describe(&topic))
    }

    pub fn list_topics(&self) -> Vec<TopicInfo> {
        let topics: Vec<_> = self
            .topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        let mut out: Vec<_> = topics.iter().map(|t| describe(t)).collect();
        out.sort_by(|a, b| a.config.name.cmp(&b.config.name));
        out
    }

    pub fn describe_topic(&self, name: &str) -> Result<TopicInfo> {
        Ok(describe(&*self.topic(name)?))
    }

    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let _admin = self.admin.lock().await;
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
        self.topics
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
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
            std::fs::rename(&dir, &trash).map_err(|e| {
                BrokerError::Storage(format!("moving {} aside: {e}", dir.display()))
            })?;
            std::fs::remove_dir_all(&trash)
                .map_err(|e| BrokerError::Storage(format!("removing {}: {e}", trash.display())))
        })
        .await?;
        tracing::info!(topic = %name, "Deleted topic.");
        Ok(())
    }

    pub async fn update_topic(&self, name: &str, update: TopicSettings) -> Result<TopicInfo> {
        let _admin = self.admin.lock().await;
        let topic = self.topic(name)?;
        let old = topic.config();
        let mut config = old.clone();
        if let Some(p) = update.partitions {
            if p < old.partitions {
                return Err(BrokerError::InvalidConfig(format!(
                    "partitions can only grow: the topic has {}, asked for {p}",
                    old.partitions
                )));
            }
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
        config.validate()?;
        let dir = self.topic_dir(name);
        let cfg = config.clone();
        let notify = Arc::clone(&self.any_readable);
        let new_parts = blocking(move || {
            (old.partitions..cfg.partitions)
                .map(|p| open_partition(&dir, p, &cfg, &notify))
                .collect::<Result<Vec<_>>>()
        })
        .await?;
        self.meta.put_topic(&config)?;
        let log_config = config.log_config();
        for p in topic.partitions() {
            p.log.set_config(log_config);
        }
        topic
            .partitions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .extend(new_parts);
        *topic.config.write().unwrap_or_else(|p| p.into_inner()) = config;
        Ok(describe(&topic))
    }

    /// Appends records and answers where each landed, once the topic's durability
    /// policy is met. Every record is checked before anything is written.
    pub async fn produce(
        &self,
        topic_name: &str,
        records: Vec<ProduceRecord>,
    ) -> Result<Vec<Produced>> {
        let topic = self.topic(topic_name)?;
        let config = topic.config();
        let count = topic.partitions().len() as u32;
        let max = config.max_record_bytes as usize;
        let now = now_ms() as i64;
        let mut by_partition: BTreeMap<u32, Vec<(usize, NewRecord)>> = BTreeMap::new();
        for (index, r) in records.into_iter().enumerate() {
            let partition = match (r.partition, &r.key) {
                (Some(p), _) if p >= count => {
                    return Err(BrokerError::PartitionNotFound {
                        topic: topic_name.to_string(),
                        partition: p,
                        count,
                    })
                }
                (Some(p), _) => p,
                (None, Some(key)) => partition_for_key(key, count),
                (None, None) => topic.next_round_robin(count),
            };
            let rec = NewRecord {
                timestamp: r.timestamp.unwrap_or(now),
                attributes: if r.value_is_json {
                    ferry_log::batch::RECORD_ATTR_JSON_VALUE
                } else {
                    0
                },
                key: r.key,
                value: r.value,
                headers: r.headers,
            };
            let size = record_size_bound(&rec);
            if size > max {
                return Err(BrokerError::RecordTooLarge { index, size, max });
            }
            by_partition
                .entry(partition)
                .or_default()
                .push((index, rec));
        }
        let total: usize = by_partition.values().map(|v| v.len()).sum();
        let mut tasks = Vec::new();
        for (pid, recs) in by_partition {
            let part = topic.partition(pid)?;
            let batches = split_batches(recs, max);
            tasks.push(tokio::task::spawn_blocking(move || {
                append_built_batches(&part, batches)
            }));
        }
        let mut out = vec![
            Produced {
                partition: 0,
                offset: 0
            };
            total
        ];
        let mut first_error = None;
        for t in tasks {
            match t.await {
                Ok(Ok(placed)) => {
                    for (index, produced) in placed {
                        out[index] = produced;
                    }
                }
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(e) => {
                    first_error
                        .get_or_insert(BrokerError::Storage(format!("append task failed: {e}")));
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(out),
        }
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

    /// Appends a client's batches in order without waiting for durability, so that a
    /// connection can go on appending its next request while this one syncs. Each batch
    /// is checked as a reader will need it (CRC, every record decodable within the limits,
    /// an honest record count, no control or transactional batch) and stored with its
    /// codec. Stops at the first failing batch; what was appended before it stays and is
    /// reported in the result with the error.
    pub async fn append_client_batches(
        &self,
        topic: &str,
        partition: u32,
        batches: Bytes,
    ) -> Result<Appended> {
        let part = self.topic(topic)?.partition(partition)?;
        let limits = self.limits;
        blocking(move || {
            let mut out = Appended {
                first_offset: None,
                end_offset: None,
                error: None,
            };
            let mut p = 0;
            while p < batches.len() {
                let (end, mut one) = match check_client_batch(&batches, p, &limits) {
                    Ok(c) => c,
                    Err(e) => {
                        out.error = Some(e);
                        break;
                    }
                };
                match part.log.append(&mut one, now_ms()) {
                    Ok(info) => {
                        out.first_offset.get_or_insert(info.base_offset);
                        out.end_offset = Some(info.end_offset);
                    }
                    Err(e) => {
                        out.error = Some(BrokerError::from_log(partition, e));
                        break;
                    }
                }
                p = end;
            }
            if out.first_offset.is_none() && out.error.is_none() {
                out.error = Some(BrokerError::InvalidRecord(
                    "no record batch in the request".into(),
                ));
            }
            if part.log.config().durability != ferry_log::Durability::Always {
                part.publish_latest();
            }
            Ok(out)
        })
        .await
    }

    /// Waits until every offset below `end_offset` meets the topic's durability policy
    /// (one shared sync for everything appended meanwhile), and wakes readers.
    pub async fn make_durable(&self, topic: &str, partition: u32, end_offset: u64) -> Result<()> {
        let part = self.topic(topic)?.partition(partition)?;
        blocking(move || {
            if part.log.config().durability == ferry_log::Durability::Always {
                part.log
                    .wait_durable(end_offset)
                    .map_err(|e| BrokerError::from_log(partition, e))?;
            }
            part.publish_latest();
            Ok(())
        })
        .await
    }

    /// Raw batches of one partition from `offset` (the first may begin before it), at
    /// most `max_bytes` but always one whole batch when there is one.
    pub async fn read_batches(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
    ) -> Result<ferry_log::ReadResult> {
        let part = self.topic(topic)?.partition(partition)?;
        blocking(move || {
            part.log
                .read(offset, max_bytes)
                .map_err(|e| BrokerError::from_log(partition, e))
        })
        .await
    }

    /// Earliest and latest (next) offsets of a partition.
    pub fn bounds(&self, topic: &str, partition: u32) -> Result<(u64, u64)> {
        let s = self.topic(topic)?.partition(partition)?.log.stats();
        Ok((s.earliest, s.latest))
    }

    /// Woken whenever any partition has new readable records; create the `notified()`
    /// future before checking, then await it, to miss nothing.
    pub fn any_readable(&self) -> &tokio::sync::Notify {
        &self.any_readable
    }

    /// The first offset with a timestamp ≥ `ts`, or the latest offset if none.
    pub async fn offset_for_timestamp(&self, topic: &str, partition: u32, ts: i64) -> Result<u64> {
        let part = self.topic(topic)?.partition(partition)?;
        blocking(move || match part.log.offset_for_timestamp(ts) {
            Ok(Some((o, _))) => Ok(o),
            Ok(None) => Ok(part.log.latest()),
            Err(e) => Err(BrokerError::from_log(partition, e)),
        })
        .await
    }

    /// The first record with a timestamp ≥ `ts`: its offset and timestamp, or `None`.
    pub async fn find_by_time(
        &self,
        topic: &str,
        partition: u32,
        ts: i64,
    ) -> Result<Option<(u64, i64)>> {
        let part = self.topic(topic)?.partition(partition)?;
        blocking(move || {
            part.log
                .offset_for_timestamp(ts)
                .map_err(|e| BrokerError::from_log(partition, e))
        })
        .await
    }

    fn all_partitions(&self) -> Vec<(TopicConfig, Arc<Partition>)> {
        let topics: Vec<_> = self
            .topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
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
        tokio::spawn(async move {
            let mut last_retention = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            loop {
                tick.tick().await;
                let Some(broker) = weak.upgrade() else { return };
                broker.groups.tick(Instant::now()).await;
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

fn maintain(parts: Vec<(TopicConfig, Arc<Partition>)>, retention_due: bool) {
    for (config, p) in parts {
        if config.durability == DurabilityPolicy::Interval {
            let due = {
                let mut last = p.last_flush.lock().unwrap_or_else(|e| e.into_inner());
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
        if retention_due && (config.retention_ms.is_some() || config.retention_bytes.is_some()) {
            if let Err(e) =
                p.log
                    .apply_retention(now_ms(), config.retention_ms, config.retention_bytes)
            {
                tracing::error!(topic = %config.name, partition = p.id, error = %e, "Retention failed.");
            }
        }
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BrokerError::Storage(format!("storage task failed: {e}")))?
}

fn open_partition(
    topic_dir: &Path,
    p: u32,
    config: &TopicConfig,
    notify: &Arc<tokio::sync::Notify>,
) -> Result<Arc<Partition>> {
    let dir = topic_dir.join(p.to_string());
    let (log, cuts) =
        PartitionLog::open(&dir, config.log_config()).map_err(|e| BrokerError::from_log(p, e))?;
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

/// An upper bound of the bytes one record adds to a batch, plus the batch header.
fn record_size_bound(r: &NewRecord) -> usize {
    ferry_log::batch::BATCH_HEADER_BYTES
        + 5
        + 1
        + 10
        + 5
        + 5
        + 5
        + r.key.as_ref().map_or(0, |k| k.len())
        + r.value.as_ref().map_or(0, |v| v.len())
        + r.headers
            .iter()
            .map(|h| 10 + h.key.len() + h.value.as_ref().map_or(0, |v| v.len()))
            .sum::<usize>()
}

/// Splits one partition's records into batches that each fit under `max` bytes.
fn split_batches(recs: Vec<(usize, NewRecord)>, max: usize) -> Vec<Vec<(usize, NewRecord)>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut size = ferry_log::batch::BATCH_HEADER_BYTES;
    for (i, r) in recs {
        let s = record_size_bound(&r) - ferry_log::batch::BATCH_HEADER_BYTES;
        if !cur.is_empty() && size + s > max {
            out.push(std::mem::take(&mut cur));
            size = ferry_log::batch::BATCH_HEADER_BYTES;
        }
        size += s;
        cur.push((i, r));
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn append_built_batches(
    part: &Partition,
    batches: Vec<Vec<(usize, NewRecord)>>,
) -> Result<Vec<(usize, Produced)>> {
    let mut placed = Vec::new();
    let mut last: Option<AppendInfo> = None;
    let mut result = Ok(());
    for b in batches {
        let recs: Vec<NewRecord> = b.iter().map(|(_, r)| r.clone()).collect();
        let mut bytes = build_batch(&recs, Compression::None)
            .map_err(|e| BrokerError::InvalidRecord(e.to_string()))?;
        match part.log.append(&mut bytes, now_ms()) {
            Ok(info) => {
                for (k, (index, _)) in b.iter().enumerate() {
                    placed.push((
                        *index,
                        Produced {
                            partition: part.id,
                            offset: info.base_offset + k as u64,
                        },
                    ));
                }
                last = Some(info);
            }
            Err(e) => {
                result = Err(BrokerError::from_log(part.id, e));
                break;
            }
        }
    }
    if let Some(info) = last {
        if part.log.config().durability == ferry_log::Durability::Always {
            part.log
                .wait_durable(info.end_offset)
                .map_err(|e| BrokerError::from_log(part.id, e))?;
        }
        part.publish_latest();
    }
    result.map(|_| placed)
}

/// Checks the batch starting at `p` of a client's request; returns where it ends and a
/// copy to append (the log stamps offsets into it).
fn check_client_batch(
    batches: &Bytes,
    p: usize,
    limits: &DecodeLimits,
) -> Result<(usize, Vec<u8>)> {
    let invalid = |m: String| BrokerError::InvalidRecord(m);
    let one = ferry_log::batch::Batches::new(batches.slice(p..))
        .next()
        .unwrap_or_else(|| {
            Err(ferry_log::BatchError::Truncated {
                needed: 12,
                available: 0,
            })
        })
        .map_err(|e| invalid(e.to_string()))?;
    // The log checks the CRC when it appends; here only what readers need beyond it,
    // without keeping the records. A batch that fails is reported by its CRC first.
    let header = ferry_log::batch::check_records(&one, limits).map_err(|e| {
        let reason = ferry_log::batch::verify_crc(&one).err().unwrap_or(e);
        invalid(reason.to_string())
    })?;
    if header.is_control() || header.is_transactional() {
        return Err(invalid(
            "control and transactional batches are not accepted from clients".into(),
        ));
    }
    Ok((p + one.len(), one.to_vec()))
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
