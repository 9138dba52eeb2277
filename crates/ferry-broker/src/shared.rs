//! Shared mode in the broker: topics whose records live in object storage and whose
//! offsets, locations and settings live in Postgres ([`ferry_shared`]), so that any
//! number of nodes serve the same topics. See docs/scale-out.md.
//!
//! A topic of shared mode is a [`Topic`] with its settings and no local partitions: the
//! broker's data paths (produce, reads, bounds) look at [`Broker::shared`] first and go
//! to the shared log; anything that would touch a local partition log finds none and
//! fails cleanly, and what shared mode does not do yet is refused with
//! [`BrokerError::NotInSharedMode`] where it is asked for.
//!
//! # What a node keeps
//!
//! Only caches: the topics (refreshed from Postgres every second and when another node
//! announces a change), each partition's bounds (raised by every append this node sees,
//! its own and other nodes', announced through Postgres notifications, and refreshed
//! every second), and the shared log's cache of batches.

use crate::broker::{now_ms, Broker, PartitionInfo, StableBounds, TopicInfo};
use crate::config::TopicConfig;
use crate::error::{BrokerError, Result};
use crate::partition::{Gathered, ReadRecords};
use crate::produce::{Appended, Produced};
use crate::topic::Topic;
use crate::topic_id::TopicId;
use bytes::Bytes;
use ferry_log::batch::{self, NewRecord};
use ferry_log::sync::{read, write};
use ferry_log::{FirstBatch, ReadResult};
use ferry_shared::{AppendBatch, Outcome, SharedError, SharedLog, StoredTopic};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Idempotent producers without a batch for this long are forgotten.
const PRODUCER_IDLE: Duration = Duration::from_secs(7 * 24 * 3600);

/// The lease of the one node that merges small objects and sweeps orphans.
const MAINTENANCE_LEASE: &str = "maintenance";

/// How often the node holding the maintenance lease looks for objects to merge.
const COMPACT_EVERY: Duration = Duration::from_secs(10);

/// Passes of compaction per look, at most (each merges up to 16 partitions).
const COMPACT_PASSES: usize = 8;

/// Topics one request may make this node look up in Postgres, at most.
const LEARN_TOPICS_MAX: usize = 16;

/// How often a node beats in Postgres (see [`ferry_shared::NODE_TIMEOUT_SECS`]).
const BEAT_EVERY: Duration = Duration::from_secs(1);

/// How often a node reads every topic and partition bound from Postgres again.
const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// The shared log and what this node caches of it.
pub struct SharedTopics {
    pub(crate) log: SharedLog,
    /// Each partition's first readable and next offsets, as last seen.
    bounds: RwLock<HashMap<(TopicId, u32), (u64, u64)>>,
    /// Each partition's last stable offset, as last read from Postgres (it never moves
    /// back, so an old value is a safe one).
    stables: RwLock<HashMap<(TopicId, u32), u64>>,
    /// This node's id once it joined (0 before).
    node_id: std::sync::atomic::AtomicI32,
    /// The live nodes, as last seen.
    nodes: RwLock<Vec<ferry_shared::Node>>,
    /// Topics this node created or deleted: a refresh that read Postgres before one of
    /// them does not replace the topics with what it read.
    changes: std::sync::atomic::AtomicU64,
    /// The leases this node holds (see [`crate::shared_groups`]).
    pub(crate) leases: crate::shared_groups::Leases,
}

impl SharedTopics {
    pub fn new(log: SharedLog) -> Self {
        SharedTopics {
            log,
            bounds: RwLock::new(HashMap::new()),
            stables: RwLock::new(HashMap::new()),
            node_id: std::sync::atomic::AtomicI32::new(0),
            nodes: RwLock::new(Vec::new()),
            changes: std::sync::atomic::AtomicU64::new(0),
            leases: Default::default(),
        }
    }

    /// This node's id once it joined, 0 before.
    pub(crate) fn node_id(&self) -> i32 {
        self.node_id.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn cached(&self, id: TopicId, partition: u32) -> (u64, u64) {
        read(&self.bounds)
            .get(&(id, partition))
            .copied()
            .unwrap_or((0, 0))
    }

    /// Raises a partition's known next offset; true when it moved.
    fn raise(&self, id: TopicId, partition: u32, latest: u64) -> bool {
        let mut bounds = write(&self.bounds);
        let b = bounds.entry((id, partition)).or_insert((0, 0));
        if latest > b.1 {
            b.1 = latest;
            true
        } else {
            false
        }
    }

    /// The last stable offset as last seen (never past the known next offset).
    fn cached_stable(&self, id: TopicId, partition: u32) -> u64 {
        let stable = read(&self.stables)
            .get(&(id, partition))
            .copied()
            .unwrap_or(0);
        stable.min(self.cached(id, partition).1)
    }

    fn raise_stable(&self, id: TopicId, partition: u32, stable: u64) {
        let mut stables = write(&self.stables);
        let s = stables.entry((id, partition)).or_insert(0);
        *s = (*s).max(stable);
    }

    fn set(&self, id: TopicId, partition: u32, earliest: u64, latest: u64) -> bool {
        let mut bounds = write(&self.bounds);
        let b = bounds.entry((id, partition)).or_insert((0, 0));
        let moved = latest > b.1;
        b.0 = earliest;
        b.1 = b.1.max(latest);
        moved
    }
}

/// A partition as [`Broker::shared_fresh`] reads it.
struct Fresh<'a> {
    sh: &'a SharedTopics,
    config: TopicConfig,
    topic_id: String,
    earliest: u64,
    latest: u64,
    stable: u64,
}

/// The broker's error for a shared log's: unavailable storage is retriable.
pub(crate) fn from_shared(partition: u32, e: SharedError) -> BrokerError {
    match e {
        SharedError::OffsetOutOfRange {
            offset,
            earliest,
            latest,
        } => BrokerError::OffsetOutOfRange {
            partition,
            requested: offset,
            earliest,
            latest,
        },
        SharedError::Corrupt { .. } => BrokerError::Corrupt {
            offset: None,
            reason: e.to_string(),
        },
        SharedError::Invalid(m) => BrokerError::refused(m),
        SharedError::Config(m) => BrokerError::InvalidConfig(m),
        SharedError::UnknownPartition { .. } => BrokerError::Meta(e.to_string()),
        SharedError::Fenced(m) => BrokerError::Unavailable(m),
        SharedError::ObjectStore(_)
        | SharedError::ObjectGone(_)
        | SharedError::Metadata(_)
        | SharedError::Busy { .. }
        | SharedError::Closed => BrokerError::Unavailable(e.to_string()),
    }
}

/// Takes the start a retention pass left (or says why it could not run).
fn note_retention(
    sh: &SharedTopics,
    config: &TopicConfig,
    partition: u32,
    applied: std::result::Result<u64, SharedError>,
) {
    match applied {
        Ok(start) => {
            let (_, latest) = sh.cached(config.topic_id, partition);
            sh.set(config.topic_id, partition, start, latest);
        }
        Err(e) => {
            tracing::warn!(topic = %config.name, partition, error = %e, "Retention could not run; it runs again at the next check.");
        }
    }
}

fn stored(config: &TopicConfig) -> Result<StoredTopic> {
    Ok(StoredTopic {
        name: config.name.clone(),
        topic_id: config.topic_id.to_string(),
        config_json: serde_json::to_string(config)
            .map_err(|e| BrokerError::Meta(format!("encoding topic settings: {e}")))?,
    })
}

impl Broker {
    /// Opens a node of shared mode: `config.data_dir` holds only this node's lock and
    /// caches; topics come from Postgres through `log`.
    pub async fn open_shared(config: BrokerConfig, log: SharedLog) -> Result<Arc<Broker>> {
        let shared = Arc::new(SharedTopics::new(log));
        let broker = Broker::open_with(config, Some(Arc::clone(&shared)))?;
        broker.refresh_shared().await?;
        let weak = Arc::downgrade(&broker);
        let mut notes = shared.log.appends();
        // Retention on its own task: many partitions must not hold up the beats.
        let retention_every = Duration::from_millis(broker.config().retention_check_ms);
        let for_retention = Arc::downgrade(&broker);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(retention_every);
            loop {
                tick.tick().await;
                let Some(b) = for_retention.upgrade() else {
                    return;
                };
                b.shared_retention().await;
            }
        });
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REFRESH_EVERY);
            loop {
                let refresh = tokio::select! {
                    _ = tick.tick() => true,
                    note = notes.recv() => match note {
                        Ok(n) if !n.topic_id.is_empty() => {
                            let Some(b) = weak.upgrade() else { return };
                            b.note_append(&n.topic_id, n.partition, n.next_offset);
                            false
                        }
                        Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => true,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    },
                };
                if refresh {
                    let Some(b) = weak.upgrade() else { return };
                    if let Err(e) = b.refresh_shared().await {
                        tracing::warn!(error = %e, "Could not refresh topics from the metadata database.");
                    }
                }
            }
        });
        // Merging small objects and sweeping orphans, by the node holding the
        // maintenance lease.
        let for_maintenance = Arc::downgrade(&broker);
        let sweep_every = shared.log.sweep_every();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(COMPACT_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_sweep = Instant::now();
            loop {
                tick.tick().await;
                let Some(b) = for_maintenance.upgrade() else {
                    return;
                };
                b.release_idle_groups().await;
                let sweep = last_sweep.elapsed() >= sweep_every;
                if sweep {
                    last_sweep = Instant::now();
                }
                b.shared_maintenance(sweep).await;
            }
        });
        // Subscriptions nobody serves (new, or their node died) are taken by the node
        // rendezvous hashing picks, without waiting for a request: push subscriptions
        // get none.
        let for_claims = Arc::downgrade(&broker);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(BEAT_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(b) = for_claims.upgrade() else {
                    return;
                };
                b.claim_unserved_subscriptions().await;
                b.serve_unserved_transactions().await;
            }
        });
        // Beats on their own task, so that a slow refresh never ages this node's
        // leases.
        let for_beats = Arc::downgrade(&broker);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(BEAT_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(b) = for_beats.upgrade() else { return };
                if let Err(e) = b.beat().await {
                    tracing::warn!(error = %e, "Could not beat in the metadata database.");
                    b.settle_leases(None).await;
                }
            }
        });
        Ok(broker)
    }

    /// Registers this node, as Kafka clients reach it, among the live nodes; returns
    /// its id (new at every start). It then beats every second.
    pub async fn join_shared(&self, kafka_host: &str, kafka_port: u16) -> Result<i32> {
        let Some(sh) = &self.shared else {
            return Err(BrokerError::Meta("not in shared mode".into()));
        };
        let id = sh
            .log
            .join(kafka_host, kafka_port)
            .await
            .map_err(|e| from_shared(0, e))?;
        sh.node_id.store(id, std::sync::atomic::Ordering::Relaxed);
        self.beat().await?;
        tracing::info!(node_id = id, "Joined the nodes of shared mode.");
        Ok(id)
    }

    async fn beat(&self) -> Result<()> {
        let Some(sh) = &self.shared else {
            return Ok(());
        };
        let id = sh.node_id();
        if id == 0 {
            return Ok(());
        }
        let sent = Instant::now();
        let nodes = sh.log.heartbeat(id).await.map_err(|e| from_shared(0, e))?;
        *write(&sh.nodes) = nodes;
        let asked = Instant::now();
        let held = sh
            .log
            .metadata()
            .held_leases(id)
            .await
            .map_err(|e| from_shared(0, e))?;
        sh.leases.beat_sent(sent);
        self.settle_leases(Some((&held, asked))).await;
        Ok(())
    }

    /// Maintenance of the shared log (merging small objects, and, when `sweep`, the
    /// orphan sweep) if this node holds or can take the maintenance lease: one node at
    /// a time does it.
    async fn shared_maintenance(&self, sweep: bool) {
        let Some(sh) = &self.shared else {
            return;
        };
        let id = sh.node_id();
        if id == 0 {
            return;
        }
        match sh
            .log
            .metadata()
            .take_lease(MAINTENANCE_LEASE, "objects", id)
            .await
        {
            Ok(ferry_shared::LeaseHolder::Taken { .. }) => {}
            Ok(ferry_shared::LeaseHolder::Other { .. }) => return,
            Err(e) => {
                tracing::debug!(error = %e, "Could not take the maintenance lease.");
                return;
            }
        }
        match sh.log.maintain(COMPACT_PASSES, sweep).await {
            Ok(done) if done.objects > 0 => {
                tracing::debug!(
                    objects = done.objects,
                    batches = done.batches,
                    "Merged small objects."
                )
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "Maintenance of the shared log failed; it runs again later.")
            }
        }
    }

    /// In shared mode, looks up in Postgres the topics of `names` this node does not
    /// know (another node may have made them since this one last read the topics, up
    /// to a second ago), so that a client told of a new topic by one node finds it on
    /// any. At most [`LEARN_TOPICS_MAX`] look-ups, one query each.
    pub async fn learn_topics(&self, names: &[String]) {
        let Some(sh) = &self.shared else {
            return;
        };
        let unknown = names
            .iter()
            .filter(|n| self.topic(n).is_err())
            .take(LEARN_TOPICS_MAX);
        for name in unknown {
            let found = match sh.log.find_topic(name).await {
                Ok(Some(t)) => t,
                Ok(None) => continue,
                Err(e) => {
                    tracing::debug!(error = %e, "Could not look up a topic in the metadata database.");
                    return;
                }
            };
            let config = match serde_json::from_str::<TopicConfig>(&found.config_json) {
                Ok(c) if c.name == found.name && c.topic_id.to_string() == found.topic_id => c,
                _ => continue,
            };
            let _admin = self.admin.lock().await;
            if self.topic(name).is_err() {
                self.insert_topic(Arc::new(Topic::new(config, Vec::new())));
                // A refresh that read Postgres before the topic was made does not drop it.
                sh.changes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    }

    /// The live nodes of shared mode, by id (`None` in the local mode).
    pub fn shared_nodes(&self) -> Option<Vec<ferry_shared::Node>> {
        self.shared.as_ref().map(|sh| read(&sh.nodes).clone())
    }

    /// This node's id in shared mode (0 before it joined); `None` in the local mode.
    pub fn shared_node_id(&self) -> Option<i32> {
        self.shared.as_ref().map(|sh| sh.node_id())
    }

    /// True when this node runs in shared mode.
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// The shared log, in shared mode.
    pub fn shared_log(&self) -> Option<&SharedLog> {
        self.shared.as_ref().map(|s| &s.log)
    }

    fn note_append(&self, topic_id: &str, partition: u32, next: u64) {
        let (Some(sh), Ok(id)) = (&self.shared, TopicId::from_str(topic_id)) else {
            return;
        };
        if sh.raise(id, partition, next) {
            self.any_readable().notify_waiters();
        }
    }

    /// Reads every topic and partition bound from Postgres, adding topics other nodes
    /// created and dropping those they deleted.
    pub(crate) async fn refresh_shared(&self) -> Result<()> {
        let Some(sh) = &self.shared else {
            return Ok(());
        };
        let changes = sh.changes.load(std::sync::atomic::Ordering::SeqCst);
        let topics = sh.log.list_topics().await.map_err(|e| from_shared(0, e))?;
        let mut configs = Vec::with_capacity(topics.len());
        for t in topics {
            match serde_json::from_str::<TopicConfig>(&t.config_json) {
                Ok(c) if c.name == t.name && c.topic_id.to_string() == t.topic_id => {
                    configs.push(c)
                }
                Ok(_) => {
                    tracing::warn!(topic = %t.name, "A topic row's settings name another topic; it is skipped.")
                }
                Err(e) => {
                    tracing::warn!(topic = %t.name, error = %e, "A topic row's settings do not parse; it is skipped.")
                }
            }
        }
        // Under the admin lock, so that no create or delete runs between the check and
        // the replacement.
        {
            let _admin = self.admin.lock().await;
            if sh.changes.load(std::sync::atomic::Ordering::SeqCst) == changes {
                self.replace_topics(configs);
            }
        }
        let mut moved = false;
        for b in sh.log.all_bounds().await.map_err(|e| from_shared(0, e))? {
            if let Ok(id) = TopicId::from_str(&b.topic_id) {
                moved |= sh.set(id, b.partition, b.earliest, b.latest);
                sh.raise_stable(id, b.partition, b.stable);
            }
        }
        if moved {
            self.any_readable().notify_waiters();
        }
        Ok(())
    }

    /// Creates a topic in Postgres (and so for every node).
    pub(crate) async fn create_shared_topic(&self, config: TopicConfig) -> Result<TopicInfo> {
        let Some(sh) = &self.shared else {
            return Err(BrokerError::Meta("not in shared mode".into()));
        };
        if config.cleanup_policy.compacts() {
            return Err(BrokerError::NotInSharedMode("a compacted topic"));
        }
        let created = sh
            .log
            .create_topic(&stored(&config)?, config.partitions)
            .await
            .map_err(|e| from_shared(0, e))?;
        if !created {
            return Err(BrokerError::TopicExists(config.name));
        }
        let topic = Arc::new(Topic::new(config.clone(), Vec::new()));
        self.insert_topic(Arc::clone(&topic));
        sh.changes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tracing::info!(topic = %config.name, topic_id = %config.topic_id, partitions = config.partitions, "Created topic in the metadata database.");
        Ok(self.shared_describe(&topic))
    }

    pub(crate) async fn delete_shared_topic(&self, name: &str) -> Result<()> {
        let Some(sh) = &self.shared else {
            return Err(BrokerError::Meta("not in shared mode".into()));
        };
        self.topic(name)?;
        // As in the local mode: the topic's subscriptions go with it, and the
        // dead-letter topic of another topic's subscription stays.
        let subscriptions = self.shared_subscription_configs().await?;
        if let Some(user) = subscriptions
            .iter()
            .find(|c| c.topic != name && c.dead_letter_topic.as_deref() == Some(name))
        {
            return Err(BrokerError::InvalidConfig(format!(
                "topic '{name}' is the dead-letter topic of subscription '{}'; delete that subscription or give it another dead_letter_topic first",
                user.name
            )));
        }
        for c in subscriptions.iter().filter(|c| c.topic == name) {
            self.delete_shared_subscription(&c.name).await?;
        }
        let deleted = sh
            .log
            .delete_topic(name)
            .await
            .map_err(|e| from_shared(0, e))?;
        self.remove_topic(name);
        sh.changes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if !deleted {
            return Err(BrokerError::TopicNotFound(name.to_string()));
        }
        tracing::info!(topic = %name, "Deleted topic from the metadata database.");
        Ok(())
    }

    pub(crate) fn shared_describe(&self, topic: &Topic) -> TopicInfo {
        let config = topic.config();
        let partitions = match &self.shared {
            Some(sh) => (0..config.partitions)
                .map(|p| {
                    let (earliest, latest) = sh.cached(config.topic_id, p);
                    PartitionInfo {
                        partition: p,
                        earliest,
                        latest,
                        size_bytes: 0,
                        segments: 0,
                    }
                })
                .collect(),
            None => Vec::new(),
        };
        TopicInfo { config, partitions }
    }

    /// The topic's id, after checking that it has `partition`.
    pub(crate) fn shared_partition(&self, topic: &str, partition: u32) -> Result<TopicConfig> {
        let config = self.topic(topic)?.config();
        if partition >= config.partitions {
            return Err(BrokerError::PartitionNotFound {
                topic: topic.to_string(),
                partition,
                count: config.partitions,
            });
        }
        Ok(config)
    }

    /// Bounds as this node last saw them (see [`Broker::fresh_stable_bounds`]).
    pub(crate) fn shared_bounds(
        &self,
        sh: &SharedTopics,
        topic: &str,
        partition: u32,
    ) -> Result<(u64, u64)> {
        let config = self.shared_partition(topic, partition)?;
        Ok(sh.cached(config.topic_id, partition))
    }

    /// The last stable offset as this node last saw it (an old value is a safe one:
    /// it never moves back).
    pub(crate) fn shared_stable(
        &self,
        sh: &SharedTopics,
        topic: &str,
        partition: u32,
    ) -> Result<u64> {
        let config = self.shared_partition(topic, partition)?;
        Ok(sh.cached_stable(config.topic_id, partition))
    }

    /// A partition's settings, id and bounds read from Postgres (and this node's cache
    /// of its bounds raised to them).
    async fn shared_fresh<'a>(
        &self,
        sh: &'a SharedTopics,
        topic: &str,
        partition: u32,
    ) -> Result<Fresh<'a>> {
        let config = self.shared_partition(topic, partition)?;
        let topic_id = config.topic_id.to_string();
        let ferry_shared::Bounds {
            earliest,
            latest,
            stable,
        } = sh
            .log
            .stable_bounds(&topic_id, partition)
            .await
            .map_err(|e| from_shared(partition, e))?;
        if sh.set(config.topic_id, partition, earliest, latest) {
            self.any_readable().notify_waiters();
        }
        sh.raise_stable(config.topic_id, partition, stable);
        Ok(Fresh {
            sh,
            config,
            topic_id,
            earliest,
            latest,
            stable,
        })
    }

    /// [`Broker::stable_bounds`], read from the partition's own store: in shared mode a
    /// node's cache may trail appends other nodes made a moment ago, and a reader that
    /// learned an offset elsewhere must not be told it is out of range.
    pub async fn fresh_stable_bounds(&self, topic: &str, partition: u32) -> Result<StableBounds> {
        let Some(sh) = &self.shared else {
            return self.stable_bounds(topic, partition);
        };
        let Fresh {
            earliest,
            latest,
            stable,
            ..
        } = self.shared_fresh(sh, topic, partition).await?;
        Ok(StableBounds {
            earliest,
            latest,
            stable,
        })
    }

    /// Appends routed records: one batch per partition, all in one call to the shared
    /// log (and so in one object).
    pub(crate) async fn shared_produce(
        &self,
        topic: &Topic,
        by_partition: std::collections::BTreeMap<u32, Vec<(usize, NewRecord)>>,
        total: usize,
    ) -> Result<Vec<Produced>> {
        let Some(sh) = &self.shared else {
            return Err(BrokerError::Meta("not in shared mode".into()));
        };
        let config = topic.config();
        let topic_id = config.topic_id.to_string();
        let mut batches = Vec::with_capacity(by_partition.len());
        let mut placed = Vec::with_capacity(by_partition.len());
        for (partition, recs) in by_partition {
            let records: Vec<NewRecord> = recs.iter().map(|(_, r)| r.clone()).collect();
            let mut one = batch::build_batch(&records, ferry_log::Compression::None)?;
            if config.timestamp_type == crate::config::TimestampType::LogAppendTime {
                batch::set_log_append_time(&mut one, now_ms() as i64);
            }
            batches.push(AppendBatch {
                topic_id: topic_id.clone(),
                partition,
                batch: Bytes::from(one),
            });
            placed.push((
                partition,
                recs.into_iter().map(|(i, _)| i).collect::<Vec<_>>(),
            ));
        }
        let outcomes = sh
            .log
            .append(batches)
            .await
            .map_err(|e| from_shared(0, e))?;
        let mut out = vec![
            Produced {
                partition: 0,
                offset: 0
            };
            total
        ];
        for ((partition, indexes), outcome) in placed.into_iter().zip(outcomes) {
            let base = match outcome {
                Outcome::Appended { base_offset } | Outcome::Duplicate { base_offset } => {
                    base_offset
                }
                other => return Err(self.refusal(&config, partition, other)),
            };
            self.note_local(sh, config.topic_id, partition, base + indexes.len() as u64);
            for (k, index) in indexes.into_iter().enumerate() {
                out[index] = Produced {
                    partition,
                    offset: base + k as u64,
                };
            }
        }
        Ok(out)
    }

    pub(crate) fn note_local(&self, sh: &SharedTopics, id: TopicId, partition: u32, end: u64) {
        if sh.raise(id, partition, end) {
            self.any_readable().notify_waiters();
        }
    }

    fn refusal(&self, config: &TopicConfig, partition: u32, outcome: Outcome) -> BrokerError {
        match outcome {
            Outcome::UnknownPartition => BrokerError::PartitionNotFound {
                topic: config.name.clone(),
                partition,
                count: config.partitions,
            },
            Outcome::StaleEpoch => BrokerError::InvalidProducerEpoch(format!(
                "a newer producer with this id writes to partition {partition} of '{}'",
                config.name
            )),
            Outcome::OutOfOrderSequence => BrokerError::OutOfOrderSequence(format!(
                "the batch's sequence number does not follow the producer's last in partition {partition} of '{}'",
                config.name
            )),
            Outcome::TxnRefused => BrokerError::Transaction(crate::txn::TxnError::InvalidTxnState),
            Outcome::Appended { .. } | Outcome::Duplicate { .. } | Outcome::NothingToMark => {
                BrokerError::Meta(format!("outcome {outcome:?} taken for a refusal"))
            }
        }
    }

    /// Appends a Kafka client's checked batches to the shared log; answered once they
    /// are stored (so [`Broker::make_durable`] has nothing left to wait for).
    pub(crate) async fn shared_append_client_batches(
        &self,
        topic: &str,
        partition: u32,
        checked: Vec<(Vec<u8>, u64)>,
        early_error: Option<BrokerError>,
    ) -> Result<Appended> {
        let Some(sh) = &self.shared else {
            return Err(BrokerError::Meta("not in shared mode".into()));
        };
        let config = self.shared_partition(topic, partition)?;
        let mut out = Appended {
            first_offset: None,
            end_offset: None,
            error: early_error,
            records: 0,
            log_append_time_ms: None,
        };
        if checked.is_empty() {
            if out.error.is_none() {
                out.error = Some(BrokerError::refused("no record batch in the request"));
            }
            return Ok(out);
        }
        let now = now_ms() as i64;
        let max = config.max_record_bytes as usize;
        let mut batches = Vec::with_capacity(checked.len());
        let mut counts = Vec::with_capacity(checked.len());
        for (mut one, records) in checked {
            if one.len() > max {
                out.error = Some(BrokerError::RecordTooLarge {
                    index: 0,
                    size: one.len(),
                    max,
                });
                break;
            }
            if config.timestamp_type == crate::config::TimestampType::LogAppendTime {
                batch::set_log_append_time(&mut one, now);
                out.log_append_time_ms = Some(now);
            }
            counts.push(records);
            batches.push(AppendBatch {
                topic_id: config.topic_id.to_string(),
                partition,
                batch: Bytes::from(one),
            });
        }
        if batches.is_empty() {
            return Ok(out);
        }
        let outcomes = sh
            .log
            .append(batches)
            .await
            .map_err(|e| from_shared(partition, e))?;
        for (outcome, records) in outcomes.into_iter().zip(counts) {
            match outcome {
                Outcome::Appended { base_offset } | Outcome::Duplicate { base_offset } => {
                    out.records += records;
                    out.first_offset.get_or_insert(base_offset);
                    let end = base_offset + records;
                    out.end_offset = Some(out.end_offset.map_or(end, |e| e.max(end)));
                }
                other => {
                    out.error = Some(self.refusal(&config, partition, other));
                    break;
                }
            }
        }
        if let Some(end) = out.end_offset {
            self.note_local(sh, config.topic_id, partition, end);
        }
        Ok(out)
    }

    /// Whole batches from `offset` of the shared log, with this node's cache of the
    /// partition's bounds raised to what the read saw.
    async fn shared_read_raw(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
    ) -> Result<(&SharedTopics, String, ferry_shared::ReadBatches)> {
        let Some(sh) = &self.shared else {
            return Err(BrokerError::Meta("not in shared mode".into()));
        };
        let config = self.shared_partition(topic, partition)?;
        let topic_id = config.topic_id.to_string();
        let read = sh
            .log
            .read(&topic_id, partition, offset, max_bytes)
            .await
            .map_err(|e| from_shared(partition, e))?;
        sh.set(config.topic_id, partition, read.earliest, read.latest);
        sh.raise_stable(config.topic_id, partition, read.stable);
        Ok((sh, topic_id, read))
    }

    /// Whole batches from `offset`, as [`Broker::read_batches`] reads them locally.
    pub(crate) async fn shared_read_batches(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
        first_batch: FirstBatch,
    ) -> Result<ReadResult> {
        let (_, _, read) = self
            .shared_read_raw(topic, partition, offset, max_bytes)
            .await?;
        Ok(ReadResult {
            batches: within_limit(read.batches, first_batch, max_bytes),
            earliest: read.earliest,
            latest: read.latest,
        })
    }

    /// [`Broker::read_committed_batches`] in shared mode: the batches before the last
    /// stable offset, with the aborted transactions Postgres knows in their range
    /// (looked up only when a batch returned belongs to a transaction).
    pub(crate) async fn shared_read_committed_batches(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
        first_batch: FirstBatch,
    ) -> Result<(ReadResult, Vec<ferry_log::AbortedTxn>)> {
        let (sh, topic_id, read) = self
            .shared_read_raw(topic, partition, offset, max_bytes)
            .await?;
        let Committed {
            batches,
            transactional,
            end,
        } = before_stable(read.batches, read.stable);
        let batches = within_limit(batches, first_batch, max_bytes);
        // The aborted transactions the batches returned may hold records of.
        let aborted = if transactional && !batches.is_empty() {
            sh.log
                .metadata()
                .aborted_transactions(&topic_id, partition, offset, end)
                .await
                .map_err(|e| from_shared(partition, e))?
        } else {
            Vec::new()
        };
        Ok((
            ReadResult {
                batches,
                earliest: read.earliest,
                latest: read.latest,
            },
            aborted,
        ))
    }

    /// Records from `offset` (see [`Broker::read`]), waiting up to `wait` for some.
    pub(crate) async fn shared_read(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_records: usize,
        max_bytes: usize,
        wait: Duration,
    ) -> Result<ReadRecords> {
        let Some(sh) = &self.shared else {
            return Err(BrokerError::Meta("not in shared mode".into()));
        };
        let config = self.shared_partition(topic, partition)?;
        let topic_id = config.topic_id.to_string();
        let deadline = Instant::now() + wait;
        loop {
            let res = self
                .shared_read_once(&topic_id, partition, offset, max_records, max_bytes)
                .await?;
            sh.set(config.topic_id, partition, res.earliest, res.latest);
            let now = Instant::now();
            if !res.records.is_empty() || now >= deadline || res.next_offset > offset {
                return Ok(res);
            }
            // Records past the last stable offset wait for the next append (their
            // transaction's marker is one).
            sh.log
                .wait_for(&topic_id, partition, offset.max(res.latest), deadline - now)
                .await
                .map_err(|e| from_shared(partition, e))?;
        }
    }

    async fn shared_read_once(
        &self,
        topic_id: &str,
        partition: u32,
        offset: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<ReadRecords> {
        let Some(sh) = &self.shared else {
            return Err(BrokerError::Meta("not in shared mode".into()));
        };
        let mut got = Gathered {
            records: Vec::new(),
            bytes: 0,
            next: offset,
            max_records,
            max_bytes,
        };
        let mut bounds = (0, 0);
        let read_size = max_bytes.clamp(64 * 1024, 4 * 1024 * 1024);
        'outer: loop {
            if got.records.len() >= max_records || got.bytes >= max_bytes {
                break;
            }
            let read = match sh.log.read(topic_id, partition, got.next, read_size).await {
                Ok(r) => r,
                Err(e) if !got.records.is_empty() => {
                    tracing::warn!(partition, offset = got.next, error = %e, "Read stopped early.");
                    break;
                }
                Err(e) => return Err(from_shared(partition, e)),
            };
            bounds = (read.earliest, read.latest);
            // Committed records only, as a read_committed Kafka consumer sees them.
            let Committed {
                batches,
                transactional,
                end,
            } = before_stable(read.batches, read.stable);
            if batches.is_empty() {
                break;
            }
            let aborted = if transactional {
                sh.log
                    .metadata()
                    .aborted_transactions(topic_id, partition, got.next, end)
                    .await
                    .map_err(|e| from_shared(partition, e))?
            } else {
                Vec::new()
            };
            let is_aborted = |h: &ferry_log::batch::BatchHeader| {
                let base = h.base_offset as u64;
                h.is_transactional()
                    && aborted.iter().any(|a| {
                        a.producer_id == h.producer_id
                            && a.first_offset <= base
                            && base <= a.last_offset
                    })
            };
            if !got.take_batches(partition, batches, &self.limits, is_aborted)? {
                break 'outer;
            }
        }
        Ok(ReadRecords {
            records: got.records,
            next_offset: got.next,
            earliest: bounds.0,
            latest: bounds.1,
        })
    }

    /// [`Broker::find_by_time`] in shared mode: Postgres names the first batch whose
    /// largest timestamp reaches `ts`; its records say which one is first.
    pub(crate) async fn shared_find_by_time(
        &self,
        topic: &str,
        partition: u32,
        ts: i64,
    ) -> Result<crate::broker::TimeLookup> {
        let Some(sh) = &self.shared else {
            return Err(BrokerError::Meta("not in shared mode".into()));
        };
        let Fresh {
            sh,
            topic_id,
            earliest,
            latest,
            ..
        } = self.shared_fresh(sh, topic, partition).await?;
        let mut from = earliest;
        loop {
            let Some(base) = sh
                .log
                .first_batch_at_time(&topic_id, partition, ts, from)
                .await
                .map_err(|e| from_shared(partition, e))?
            else {
                return Ok(crate::broker::TimeLookup {
                    first: None,
                    latest,
                });
            };
            let start = base.max(earliest);
            let read = self
                .shared_read_once(&topic_id, partition, start, 10_000, 4 << 20)
                .await?;
            if let Some(r) = read.records.iter().find(|r| r.timestamp >= ts) {
                return Ok(crate::broker::TimeLookup {
                    first: Some((r.offset as u64, r.timestamp)),
                    latest,
                });
            }
            // Only control records, or a batch whose stamps say otherwise: go on after it.
            if read.next_offset <= from {
                return Ok(crate::broker::TimeLookup {
                    first: None,
                    latest,
                });
            }
            from = read.next_offset;
        }
    }

    /// [`Broker::delete_records`] in shared mode: the partition's start moves in
    /// Postgres, for every node's readers at once.
    pub(crate) async fn shared_delete_records(
        &self,
        topic: &str,
        partition: u32,
        offset: Option<u64>,
    ) -> Result<u64> {
        let Some(sh) = &self.shared else {
            return Err(BrokerError::Meta("not in shared mode".into()));
        };
        let Fresh {
            sh,
            config,
            topic_id,
            earliest,
            latest,
            ..
        } = self.shared_fresh(sh, topic, partition).await?;
        let target = offset.unwrap_or(latest);
        if target > latest {
            return Err(BrokerError::OffsetOutOfRange {
                partition,
                requested: target,
                earliest,
                latest,
            });
        }
        let start = sh
            .log
            .trim(&topic_id, partition, target)
            .await
            .map_err(|e| from_shared(partition, e))?;
        sh.set(config.topic_id, partition, start, latest);
        Ok(start)
    }

    /// Time retention over every topic that has it: each partition's batches older
    /// than `retention_ms` go, from its start. Any node may run it; running it on
    /// several at once is harmless (each move is one locked update).
    pub(crate) async fn shared_retention(&self) {
        let Some(sh) = &self.shared else { return };
        // Producers are remembered as long as the local mode remembers transactional
        // ids: a week without a batch.
        if let Err(e) = sh.log.expire_producers(PRODUCER_IDLE).await {
            tracing::warn!(error = %e, "Could not forget idle producers; tried again at the next check.");
        }
        let topics: Vec<TopicConfig> = self.list_topics().into_iter().map(|t| t.config).collect();
        let now = now_ms() as i64;
        for config in topics {
            let topic_id = config.topic_id.to_string();
            for p in 0..config.partitions {
                let by_time = config.retention_ms.map(|ms| {
                    let cutoff = now.saturating_sub(i64::try_from(ms).unwrap_or(i64::MAX));
                    sh.log.apply_retention(&topic_id, p, cutoff)
                });
                if let Some(applied) = by_time {
                    note_retention(sh, &config, p, applied.await);
                }
                if let Some(bytes) = config.retention_bytes {
                    let applied = sh.log.apply_size_retention(&topic_id, p, bytes).await;
                    note_retention(sh, &config, p, applied);
                }
            }
        }
    }

    /// A producer id for an idempotent producer: from Postgres in shared mode, where
    /// every node hands them out.
    pub async fn new_producer_id(&self) -> Result<i64> {
        match &self.shared {
            Some(sh) => sh
                .log
                .new_producer_id()
                .await
                .map_err(|e| from_shared(0, e)),
            None => Ok(self.txns.new_producer_id()),
        }
    }
}

use crate::broker::BrokerConfig;

/// `batches`, or none when [`FirstBatch::WithinLimit`] asks that they fit `max_bytes`
/// and they do not (the shared log returns a first batch whole whatever its size).
fn within_limit(batches: Bytes, first_batch: FirstBatch, max_bytes: usize) -> Bytes {
    if first_batch == FirstBatch::WithinLimit && batches.len() > max_bytes {
        Bytes::new()
    } else {
        batches
    }
}

/// Batches read for a `read_committed` reader (see [`before_stable`]).
struct Committed {
    batches: Bytes,
    /// Whether one of them belongs to a transaction.
    transactional: bool,
    /// The offset after the last of them that parsed.
    end: u64,
}

/// The whole batches of `batches` that begin before `stable` (a transaction's records
/// begin a batch, so the last stable offset never falls inside one). Batches that do
/// not parse are kept, for the reader's checks to report.
fn before_stable(batches: Bytes, stable: u64) -> Committed {
    let mut cut = 0usize;
    let (mut transactional, mut end) = (false, 0u64);
    for one in batch::Batches::new(batches.clone()) {
        let Ok(one) = one else { break };
        match batch::BatchHeader::parse(&one) {
            Ok(h) if h.base_offset >= 0 && (h.base_offset as u64) < stable => {
                transactional |= h.is_transactional();
                end = end.max(h.last_offset().max(0) as u64 + 1);
            }
            Ok(_) => break,
            Err(_) => {}
        }
        cut += one.len();
    }
    Committed {
        batches: batches.slice(..cut.min(batches.len())),
        transactional,
        end,
    }
}
