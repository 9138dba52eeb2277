//! Ferry's shared mode, its storage layer: partition logs whose batches live in
//! S3-compatible object storage and whose offsets, locations and idempotent producers
//! live in Postgres. Nodes keep only caches; any node appends to and reads from any
//! partition, and two nodes appending to one partition at once get dense offsets,
//! because Postgres gives them out ([`writer`] and the migration's
//! `ferry_commit_object`).
//!
//! ```text
//! append ─► gather (linger, size) ─► PUT one object ─► one Postgres transaction:
//!                                                       offsets, sequences, locations
//! read ─► Postgres: which batches, where ─► cache or ranged GETs ─► checked batches
//! ```
//!
//! The batch bytes are Kafka's RecordBatch v2, as in the local log; an object holds
//! the batches of one write back to back, each as its producer sent it, and the base
//! offset is set from Postgres when read.

mod auth;
mod cache;
pub mod compact;
pub mod config;
pub mod error;
mod leases;
mod meta;
mod objects;
mod pg_tls;
pub mod probe;
mod reader;
mod subs;
mod txns;
mod writer;

pub use config::{ObjectStoreUrl, SharedConfig};
pub use error::{Result, SharedError};
pub use leases::{HeldLeases, LeaseHolder, StoredOffset, GROUP_LEASE};
pub use meta::{Bounds, Meta, Node, PartitionBounds, StoredTopic, NODE_TIMEOUT_SECS};
pub use reader::ReadBatches;
pub use subs::{Lease, StoredState, SUBSCRIPTION_LEASE};
pub use txns::{Staged, TxnRow, TRANSACTION_LEASE};

use bytes::Bytes;
use ferry_log::batch::validate_incoming;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

/// The largest batch accepted (Kafka's default `message.max.bytes` is 1 MiB; Ferry's
/// topics allow more).
pub const BATCH_BYTES_MAX: usize = 64 * 1024 * 1024;

/// One batch to append: a whole, valid RecordBatch v2 (its base offset is ignored).
#[derive(Debug, Clone)]
pub struct AppendBatch {
    pub topic_id: String,
    pub partition: u32,
    pub batch: Bytes,
}

/// What became of one appended batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Appended {
        base_offset: u64,
    },
    /// A retry of one of the producer's last batches: stored before, at this offset.
    Duplicate {
        base_offset: u64,
    },
    UnknownPartition,
    /// The producer's epoch is older than the partition's newest for that producer id.
    StaleEpoch,
    OutOfOrderSequence,
    /// A transaction's batch whose producer has no ongoing transaction at its epoch
    /// holding the partition (the transaction ended, or never added the partition).
    TxnRefused,
    /// A marker for a producer with no transaction open in the partition: nothing was
    /// appended.
    NothingToMark,
}

impl Outcome {
    fn from_sequencer(outcome: i16, base_offset: i64) -> Result<Outcome> {
        let offset = || {
            u64::try_from(base_offset).map_err(|_| {
                SharedError::Metadata(format!("the sequencer answered offset {base_offset}"))
            })
        };
        Ok(match outcome {
            0 => Outcome::Appended {
                base_offset: offset()?,
            },
            1 => Outcome::Duplicate {
                base_offset: offset()?,
            },
            2 => Outcome::UnknownPartition,
            3 => Outcome::StaleEpoch,
            4 => Outcome::OutOfOrderSequence,
            5 => Outcome::TxnRefused,
            6 => Outcome::NothingToMark,
            other => {
                return Err(SharedError::Metadata(format!(
                    "the sequencer answered unknown outcome {other}"
                )))
            }
        })
    }
}

/// A partition reached `next_offset` (or, with an empty `topic_id`, notifications may
/// have been missed: look again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendNote {
    pub topic_id: String,
    pub partition: u32,
    pub next_offset: u64,
}

/// Counters and timings of the shared log (registered by the binary).
pub struct Metrics {
    pub objects_written: Counter,
    pub object_bytes_written: Counter,
    pub object_batches_written: Counter,
    pub object_write_failures: Counter,
    /// Seconds of each object's PUT.
    pub put_seconds: Histogram,
    /// Seconds of each object's commit in Postgres.
    pub commit_seconds: Histogram,
    pub orphans_removed: Counter,
    /// Objects written by compaction, and the batches and bytes they took.
    pub compacted_objects: Counter,
    pub compacted_batches: Counter,
    pub compacted_bytes: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let buckets = || {
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.0005, 2.0, 16,
            ))
        };
        Metrics {
            objects_written: Counter::default(),
            object_bytes_written: Counter::default(),
            object_batches_written: Counter::default(),
            object_write_failures: Counter::default(),
            put_seconds: buckets(),
            commit_seconds: buckets(),
            orphans_removed: Counter::default(),
            compacted_objects: Counter::default(),
            compacted_batches: Counter::default(),
            compacted_bytes: Counter::default(),
        }
    }
}

/// Per partition waited on, the next offset it is known to have reached.
type Ends = Arc<Mutex<HashMap<(String, u32), watch::Sender<u64>>>>;

/// The shared log of one node. Cheap to clone.
#[derive(Clone)]
pub struct SharedLog {
    inner: Arc<Inner>,
}

struct Inner {
    meta: meta::Meta,
    objects: objects::Objects,
    cache: Arc<cache::Cache>,
    queue: mpsc::Sender<writer::Pending>,
    pending: Arc<Semaphore>,
    pending_max: usize,
    /// The next offset each partition waited on is known to have reached.
    ends: Ends,
    commit_deadline: Duration,
    compaction: compact::Settings,
    metrics: Arc<Metrics>,
    notes: tokio::sync::broadcast::Sender<AppendNote>,
    /// Background tasks, stopped when the log is dropped.
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let tasks = self.tasks.get_mut().unwrap_or_else(|e| e.into_inner());
        for t in tasks.iter() {
            t.abort();
        }
    }
}

impl SharedLog {
    /// Connects to Postgres (applying the schema's migrations) and to the object
    /// store, and starts the writer and the append listener. Sweeping orphans and
    /// merging small objects are the caller's to schedule
    /// ([`SharedLog::maintain`]): one node at a time is enough.
    pub async fn open(config: SharedConfig) -> Result<SharedLog> {
        config.validate()?;
        let url = ObjectStoreUrl::parse(&config.object_store_url)?;
        // Each upload in flight registers and commits on a connection of its own.
        let meta = meta::Meta::connect(
            &config.metadata_url,
            config.metadata_connections,
            config.uploads_in_flight,
        )
        .await?;
        let objects = objects::Objects::s3(&url, &config.object_store_options)?;
        let cache = Arc::new(cache::Cache::new(config.cache_bytes));
        let metrics = Arc::new(Metrics::default());
        let (queue, rx) = mpsc::channel(1024);
        let writer = Arc::new(writer::WriterShared {
            meta: meta.clone(),
            objects: objects.clone(),
            cache: cache.clone(),
            linger: config.linger,
            object_bytes: config.object_bytes,
            uploads_in_flight: config.uploads_in_flight,
            commit_deadline: config.commit_deadline,
            metrics: metrics.clone(),
        });
        let ends: Ends = Default::default();
        let (notes, _) = tokio::sync::broadcast::channel(4096);
        let on_append = {
            let ends = ends.clone();
            let notes = notes.clone();
            move |topic_id: &str, partition: u32, next: u64| {
                let _ = notes.send(AppendNote {
                    topic_id: topic_id.to_string(),
                    partition,
                    next_offset: next,
                });
                let ends = ends.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(tx) = ends.get(&(topic_id.to_string(), partition)) {
                    tx.send_if_modified(|v| {
                        let moved = next > *v;
                        *v = (*v).max(next);
                        moved
                    });
                }
            }
        };
        let on_gap = {
            let ends = ends.clone();
            let notes = notes.clone();
            move || {
                let _ = notes.send(AppendNote {
                    topic_id: String::new(),
                    partition: 0,
                    next_offset: 0,
                });
                let ends = ends.lock().unwrap_or_else(|e| e.into_inner());
                for tx in ends.values() {
                    tx.send_modify(|_| {});
                }
            }
        };
        let listener = meta.listen(on_append, on_gap);
        let gather = tokio::spawn(writer::gather(writer, rx));
        let log = SharedLog {
            inner: Arc::new(Inner {
                meta,
                objects,
                cache,
                queue,
                pending: Arc::new(Semaphore::new(config.pending_bytes_max)),
                pending_max: config.pending_bytes_max,
                ends,
                commit_deadline: config.commit_deadline,
                compaction: compact::Settings {
                    after: config.compact_after,
                    object_bytes: config.compacted_object_bytes,
                },
                metrics,
                notes,
                tasks: Mutex::new(vec![listener, gather]),
            }),
        };
        Ok(log)
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Bytes of batches held in this node's read cache.
    pub fn cached_bytes(&self) -> usize {
        self.inner.cache.bytes()
    }

    /// Records a new topic and its partitions; false when the name is taken.
    pub async fn create_topic(&self, topic: &StoredTopic, partitions: u32) -> Result<bool> {
        self.inner.meta.create_topic(topic, partitions).await
    }

    /// Deletes a topic and what Postgres knows of its records; false when unknown.
    pub async fn delete_topic(&self, name: &str) -> Result<bool> {
        self.inner.meta.delete_topic(name).await
    }

    /// One topic by name, if Postgres has it.
    pub async fn find_topic(&self, name: &str) -> Result<Option<StoredTopic>> {
        self.inner.meta.find_topic(name).await
    }

    pub async fn list_topics(&self) -> Result<Vec<StoredTopic>> {
        self.inner.meta.list_topics().await
    }

    /// Forgets idempotent producers not heard from for `idle` (a producer that comes
    /// back later starts again from whatever sequence number it sends, as after a
    /// restart in the local mode).
    pub async fn expire_producers(&self, idle: Duration) -> Result<u64> {
        self.inner.meta.expire_producers(idle).await
    }

    /// Registers this node (as Kafka clients reach it); returns its id.
    pub async fn join(&self, kafka_host: &str, kafka_port: u16) -> Result<i32> {
        self.inner.meta.join(kafka_host, kafka_port).await
    }

    /// Beats for this node and answers the live nodes, by id.
    pub async fn heartbeat(&self, node_id: i32) -> Result<Vec<Node>> {
        self.inner.meta.heartbeat(node_id).await
    }

    /// Takes this node out of the live nodes (it is stopping), freeing its leases.
    pub async fn leave(&self, node_id: i32) -> Result<()> {
        self.inner.meta.leave(node_id).await
    }

    /// The metadata database, for the state kept there beside the log (subscriptions).
    pub fn metadata(&self) -> &Meta {
        &self.inner.meta
    }

    /// A producer id for an idempotent producer, unique across every node.
    pub async fn new_producer_id(&self) -> Result<i64> {
        self.inner.meta.new_producer_id().await
    }

    /// Every partition's bounds, in one query.
    pub async fn all_bounds(&self) -> Result<Vec<PartitionBounds>> {
        self.inner.meta.all_bounds().await
    }

    /// Appends seen by this node, its own and other nodes' (from Postgres's
    /// notifications): (topic id, partition, next offset). A receiver that lags has
    /// missed some and should look at the bounds again.
    pub fn appends(&self) -> tokio::sync::broadcast::Receiver<AppendNote> {
        self.inner.notes.subscribe()
    }

    /// Makes sure partitions `0..count` of the topic exist.
    pub async fn create_partitions(&self, topic_id: &str, count: u32) -> Result<()> {
        self.inner.meta.create_partitions(topic_id, count).await
    }

    /// Appends batches (of any partitions) and answers, in their order, once they are
    /// in the object store and their offsets are committed in Postgres. Every batch is
    /// checked first (length, magic, CRC, record count, codec): one bad batch refuses
    /// the whole call, and nothing of it is written.
    pub async fn append(&self, batches: Vec<AppendBatch>) -> Result<Vec<Outcome>> {
        if batches.is_empty() {
            return Ok(Vec::new());
        }
        let mut incoming = Vec::with_capacity(batches.len());
        let mut bytes = 0usize;
        for (i, b) in batches.into_iter().enumerate() {
            let h = validate_incoming(&b.batch, BATCH_BYTES_MAX)
                .map_err(|e| SharedError::Invalid(format!("batch {i}: {e}")))?;
            let partition = i32::try_from(b.partition)
                .map_err(|_| SharedError::Invalid(format!("partition {}", b.partition)))?;
            if b.topic_id.is_empty() {
                return Err(SharedError::Invalid(format!("batch {i}: no topic id")));
            }
            let kind = if h.is_control() {
                match ferry_log::batch::control_batch_commits(&b.batch) {
                    Some(true) => 2,
                    Some(false) => 3,
                    None => {
                        return Err(SharedError::Invalid(format!(
                            "batch {i}: a control batch holding no COMMIT or ABORT marker"
                        )))
                    }
                }
            } else if h.is_transactional() {
                1
            } else {
                0
            };
            if kind != 0 && h.producer_id < 0 {
                return Err(SharedError::Invalid(format!(
                    "batch {i}: a transaction's batch without a producer id"
                )));
            }
            bytes += b.batch.len();
            incoming.push(writer::Incoming {
                item: meta::CommitItem {
                    topic_id: b.topic_id,
                    partition,
                    position: 0,
                    length: b.batch.len() as i32,
                    records: h.record_count,
                    max_timestamp: h.max_timestamp,
                    producer_id: h.producer_id,
                    producer_epoch: h.producer_epoch,
                    first_sequence: h.base_sequence,
                    kind,
                },
                batch: b.batch,
            });
        }
        let max = self.inner.pending_max;
        let busy = || SharedError::Busy {
            waiting: max - self.inner.pending.available_permits().min(max),
            max,
        };
        if bytes > max {
            return Err(SharedError::Invalid(format!(
                "{bytes} bytes in one append, more than the {max} bytes that may wait to be written"
            )));
        }
        // Wait a little for room; past that, refuse (the producer retries).
        let permit = tokio::time::timeout(
            Duration::from_secs(5),
            self.inner.pending.clone().acquire_many_owned(bytes as u32),
        )
        .await
        .map_err(|_| busy())?
        .map_err(|_| SharedError::Closed)?;
        let (done, answer) = oneshot::channel();
        self.inner
            .queue
            .send(writer::Pending {
                batches: incoming,
                done,
                permit,
            })
            .await
            .map_err(|_| SharedError::Closed)?;
        answer.await.map_err(|_| SharedError::Closed)?
    }

    /// Reads whole batches from `offset`, at most `max_bytes` of them except that the
    /// first is returned whole whatever its size.
    pub async fn read(
        &self,
        topic_id: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
    ) -> Result<ReadBatches> {
        let read = || {
            reader::read(
                &self.inner.meta,
                &self.inner.objects,
                &self.inner.cache,
                topic_id,
                partition,
                offset,
                max_bytes,
            )
        };
        match read().await {
            // Compaction moved the batches and the sweep removed their old object
            // between the look-up and the fetch: the new look-up finds the new one.
            Err(SharedError::ObjectGone(key)) => {
                tracing::debug!(object = %key, "An object was removed during a read; reading again.");
                read().await
            }
            other => other,
        }
    }

    /// Maintenance for one node at a time (the broker runs it on the node holding the
    /// maintenance lease): merges small objects, up to `passes` times while there is
    /// something to merge, and, when `sweep` is true, removes the objects no batch
    /// names that are older than twice the commit deadline, the leases of groups
    /// nobody coordinates that have no offsets, and the aborted transactions below
    /// their partition's first readable offset.
    pub async fn maintain(&self, passes: usize, sweep: bool) -> Result<compact::Compacted> {
        let mut total = compact::Compacted::default();
        for _ in 0..passes {
            let done = self.compact_once().await?;
            if done.objects == 0 {
                break;
            }
            total.objects += done.objects;
            total.batches += done.batches;
            total.bytes += done.bytes;
        }
        if sweep {
            self.sweep_orphans(self.inner.commit_deadline * 2).await?;
            self.inner.meta.drop_idle_group_leases().await?;
        }
        Ok(total)
    }

    /// How often the orphan sweep should run: the commit deadline.
    pub fn sweep_every(&self) -> Duration {
        self.inner.commit_deadline
    }

    /// Merges small objects once: for up to 16 partitions with batches old enough in
    /// objects shared with other partitions, copies them into one object of that
    /// partition (up to `compacted_object_bytes`) and points their rows at it. The
    /// sweep later removes the objects left without batches. Answers what moved.
    pub async fn compact_once(&self) -> Result<compact::Compacted> {
        compact::compact_once(
            &self.inner.meta,
            &self.inner.objects,
            &self.inner.compaction,
            self.inner.commit_deadline,
            &self.inner.metrics,
        )
        .await
    }

    /// The base offset of the first batch from `from` on whose largest timestamp is at
    /// or after `timestamp` (Kafka's look-up by time starts there).
    pub async fn first_batch_at_time(
        &self,
        topic_id: &str,
        partition: u32,
        timestamp: i64,
        from: u64,
    ) -> Result<Option<u64>> {
        self.inner
            .meta
            .first_batch_at_time(topic_id, partition, timestamp, from)
            .await
    }

    /// Moves a partition's first readable offset up to `before` (never down, never past
    /// its end) and forgets the batches wholly below it; returns the first readable
    /// offset afterwards.
    pub async fn trim(&self, topic_id: &str, partition: u32, before: u64) -> Result<u64> {
        self.inner
            .meta
            .trim(topic_id, partition, before)
            .await?
            .ok_or_else(|| SharedError::UnknownPartition {
                topic_id: topic_id.to_string(),
                partition,
            })
    }

    /// Applies time retention to a partition: every batch before the first one holding
    /// a record stamped at or after `cutoff_ms` goes. Returns the first readable offset.
    pub async fn apply_retention(
        &self,
        topic_id: &str,
        partition: u32,
        cutoff_ms: i64,
    ) -> Result<u64> {
        match self
            .inner
            .meta
            .retention_point(topic_id, partition, cutoff_ms)
            .await?
        {
            Some(point) => self.trim(topic_id, partition, point).await,
            None => Err(SharedError::UnknownPartition {
                topic_id: topic_id.to_string(),
                partition,
            }),
        }
    }

    /// Applies size retention to a partition: its oldest batches go until the rest
    /// holds at most `max_bytes`. Returns the first readable offset.
    pub async fn apply_size_retention(
        &self,
        topic_id: &str,
        partition: u32,
        max_bytes: u64,
    ) -> Result<u64> {
        let max = i64::try_from(max_bytes).unwrap_or(i64::MAX);
        match self
            .inner
            .meta
            .size_retention_point(topic_id, partition, max)
            .await?
        {
            Some(point) => self.trim(topic_id, partition, point).await,
            None => Ok(self.bounds(topic_id, partition).await?.0),
        }
    }

    /// The partition's first readable offset and next offset.
    pub async fn bounds(&self, topic_id: &str, partition: u32) -> Result<(u64, u64)> {
        let b = self.stable_bounds(topic_id, partition).await?;
        Ok((b.earliest, b.latest))
    }

    /// The partition's first readable, next and last stable offsets, read together.
    pub async fn stable_bounds(&self, topic_id: &str, partition: u32) -> Result<Bounds> {
        self.inner
            .meta
            .bounds(topic_id, partition)
            .await?
            .ok_or_else(|| SharedError::UnknownPartition {
                topic_id: topic_id.to_string(),
                partition,
            })
    }

    /// Waits until the partition's next offset is past `offset` or `timeout` passes,
    /// woken by Postgres's notifications (and looking again each second, in case one
    /// was missed). Returns the next offset last seen.
    pub async fn wait_for(
        &self,
        topic_id: &str,
        partition: u32,
        offset: u64,
        timeout: Duration,
    ) -> Result<u64> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = {
            let mut ends = self.inner.ends.lock().unwrap_or_else(|e| e.into_inner());
            ends.retain(|_, tx| tx.receiver_count() > 0);
            ends.entry((topic_id.to_string(), partition))
                .or_insert_with(|| watch::channel(0).0)
                .subscribe()
        };
        loop {
            let (_, next) = self.bounds(topic_id, partition).await?;
            if next > offset || tokio::time::Instant::now() >= deadline {
                return Ok(next);
            }
            let nap = (tokio::time::Instant::now() + Duration::from_secs(1)).min(deadline);
            tokio::select! {
                _ = rx.changed() => {}
                _ = tokio::time::sleep_until(nap) => {}
            }
        }
    }

    /// Removes the objects no commit can name any more: those whose commit deadline
    /// passed without one, and those no batch names (their commit took none, or their
    /// batches were deleted). Objects younger than `older_than` by the store's clock
    /// are left for the next sweep. Returns how many were removed.
    pub async fn sweep_orphans(&self, older_than: Duration) -> Result<usize> {
        let cutoff = SystemTime::now()
            .checked_sub(older_than)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let old: Vec<String> = self
            .inner
            .objects
            .list_data()
            .await?
            .into_iter()
            .filter(|o| o.last_modified <= cutoff)
            .map(|o| o.key)
            .collect();
        let mut removed = 0;
        for chunk in old.chunks(1000) {
            let removable = self
                .inner
                .meta
                .removable(chunk, self.inner.commit_deadline)
                .await?;
            for key in removable {
                // One that fails is tried again by the next sweep.
                match self.inner.objects.delete(&key).await {
                    Ok(()) => {
                        removed += 1;
                        self.inner.metrics.orphans_removed.inc();
                        tracing::info!(object = %key, "Removed an object no batch names.");
                    }
                    Err(e) => {
                        tracing::warn!(object = %key, error = %e, "Could not remove an object no batch names.")
                    }
                }
            }
        }
        Ok(removed)
    }
}
