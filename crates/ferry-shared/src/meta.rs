//! Postgres: the schema's migrations, the sequencer call that commits an object's
//! batches, where-is-offset look-ups, and the notifications that wake readers.

use crate::error::{Result, SharedError};
use crate::pg_tls::Tls;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures_util::StreamExt;
use std::collections::HashSet;
use std::time::Duration;
use tokio_postgres::{AsyncMessage, NoTls};

/// The schema, one file per version, applied in order. A file never changes once
/// shipped: a change is a new file.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("../migrations/0001_shared_log.sql")),
    (2, include_str!("../migrations/0002_topics.sql")),
    (3, include_str!("../migrations/0003_trim.sql")),
    (4, include_str!("../migrations/0004_nodes.sql")),
    (5, include_str!("../migrations/0005_leases_groups.sql")),
    (6, include_str!("../migrations/0006_compaction.sql")),
    (7, include_str!("../migrations/0007_subscriptions.sql")),
    (8, include_str!("../migrations/0008_transactions.sql")),
    (9, include_str!("../migrations/0009_auth.sql")),
];

/// A node whose last beat is older than this is taken for dead, and its leases are
/// free for others to take. Nodes beat every second.
pub const NODE_TIMEOUT_SECS: i32 = 6;

/// The advisory lock that serializes migrations among nodes starting together.
const MIGRATION_LOCK: i64 = 0x0046_4552_5259_0001;

/// Notification channel of appends (see the migration's `ferry_commit_object`).
pub(crate) const APPENDED_CHANNEL: &str = "ferry_appended";

/// One batch to commit: which partition, where it sits in the object, and what the
/// sequencer needs from its header.
#[derive(Debug, Clone)]
pub(crate) struct CommitItem {
    pub topic_id: String,
    pub partition: i32,
    pub position: i64,
    pub length: i32,
    pub records: i32,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub first_sequence: i32,
    /// 0 plain, 1 a transaction's records, 2 a COMMIT marker, 3 an ABORT marker.
    pub kind: i16,
}

/// The sequencer's answer for one item (see the migration for the outcomes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Committed {
    pub base_offset: i64,
    pub outcome: i16,
}

/// A topic as Postgres keeps it: Ferry's JSON of its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTopic {
    pub name: String,
    pub topic_id: String,
    pub config_json: String,
}

/// A live node of shared mode, as Kafka clients reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub node_id: i32,
    pub kafka_host: String,
    pub kafka_port: u16,
    /// Where its HTTP API answers (`host:port`), once it published it.
    pub http_addr: Option<String>,
}

/// A partition's first readable offset and next offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionBounds {
    pub topic_id: String,
    pub partition: u32,
    pub earliest: u64,
    pub latest: u64,
    /// The last stable offset: the first offset of the earliest open transaction, else
    /// `latest`.
    pub stable: u64,
}

/// A partition's first readable, next and last stable offsets, read together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub earliest: u64,
    pub latest: u64,
    pub stable: u64,
}

impl Bounds {
    fn from_row(start: i64, next: i64, first_open: Option<i64>) -> Bounds {
        let latest = next.max(0) as u64;
        // Read from Postgres, so clamped rather than trusted: its checks keep
        // log_start <= first_open <= next_offset.
        let stable = first_open.map_or(latest, |f| (f.max(0) as u64).min(latest));
        Bounds {
            earliest: (start.max(0) as u64).min(latest),
            latest,
            stable,
        }
    }
}

/// Where one batch lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BatchLocation {
    pub base_offset: u64,
    pub last_offset: u64,
    pub object_key: String,
    pub position: u64,
    pub length: u32,
}

/// A batch row (base_offset, last_offset, object_key, position, length) as a location;
/// the table's checks make its values sane, and a row that breaks them is not used.
fn location(r: &tokio_postgres::Row) -> Result<BatchLocation> {
    let (base, last, key, position, length): (i64, i64, String, i64, i32) =
        (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
    if base < 0 || last < base || position < 0 || length <= 0 {
        return Err(SharedError::Metadata(format!(
            "the batch row at offset {base} of object {key} is inconsistent"
        )));
    }
    Ok(BatchLocation {
        base_offset: base as u64,
        last_offset: last as u64,
        object_key: key,
        position: position as u64,
        length: length as u32,
    })
}

#[derive(Clone)]
pub struct Meta {
    /// Reads, admin and the sweep.
    pool: Pool,
    /// Registrations and commits of objects only, so that readers never hold up an
    /// acknowledgement (nor push a commit past its deadline).
    commits: Pool,
    config: tokio_postgres::Config,
    tls: Tls,
}

impl Meta {
    /// Connects (lazily: the pool opens connections when first used) and applies the
    /// schema's missing migrations.
    pub async fn connect(url: &str, connections: usize, commit_connections: usize) -> Result<Meta> {
        let (mut config, tls) = crate::pg_tls::connection(url)?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        // A statement that runs this long is stuck: fail it so that its caller answers.
        config.options("-c statement_timeout=30000");
        config.application_name("ferry");
        let pool_of = |size: usize| {
            let manager_config = ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            };
            let manager = match &tls {
                Tls::Off => Manager::from_config(config.clone(), NoTls, manager_config),
                Tls::On(connector) => {
                    Manager::from_config(config.clone(), connector.clone(), manager_config)
                }
            };
            Pool::builder(manager)
                .max_size(size.max(1))
                .wait_timeout(Some(Duration::from_secs(10)))
                .create_timeout(Some(Duration::from_secs(10)))
                .recycle_timeout(Some(Duration::from_secs(5)))
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .build()
                .map_err(|e| SharedError::Config(format!("metadata connections: {e}")))
        };
        let meta = Meta {
            pool: pool_of(connections)?,
            commits: pool_of(commit_connections)?,
            config: config.clone(),
            tls: tls.clone(),
        };
        meta.migrate().await?;
        Ok(meta)
    }

    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object> {
        Self::get(&self.pool).await
    }

    pub(crate) async fn commit_client(&self) -> Result<deadpool_postgres::Object> {
        Self::get(&self.commits).await
    }

    async fn get(pool: &Pool) -> Result<deadpool_postgres::Object> {
        pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            deadpool_postgres::PoolError::Timeout(_) => {
                SharedError::Metadata("no connection to the metadata database within 10 s".into())
            }
            other => SharedError::Metadata(other.to_string()),
        })
    }

    async fn migrate(&self) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        // "already exists, skipping" notices are not news.
        tx.batch_execute("SET LOCAL client_min_messages = warning")
            .await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS ferry_migrations (
                 version integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await?;
        let applied: HashSet<i32> = tx
            .query("SELECT version FROM ferry_migrations", &[])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let newest = MIGRATIONS.last().map_or(0, |m| m.0);
        if let Some(v) = applied.iter().find(|v| **v > newest) {
            return Err(SharedError::Config(format!(
                "the metadata database has schema version {v}, newer than this Ferry knows ({newest}): run a newer Ferry"
            )));
        }
        for (version, sql) in MIGRATIONS {
            if applied.contains(version) {
                continue;
            }
            tx.batch_execute(sql).await?;
            tx.execute(
                "INSERT INTO ferry_migrations (version) VALUES ($1)",
                &[version],
            )
            .await?;
            tracing::info!(version, "Applied a metadata schema migration.");
        }
        tx.commit().await?;
        Ok(())
    }

    /// Makes sure partitions `0..count` of a topic exist (existing ones are kept).
    pub async fn create_partitions(&self, topic_id: &str, count: u32) -> Result<()> {
        let client = self.client().await?;
        let count = i32::try_from(count)
            .map_err(|_| SharedError::Invalid(format!("{count} partitions is too many")))?;
        client
            .execute(
                "INSERT INTO ferry_partitions (topic_id, partition)
                 SELECT $1, p FROM generate_series(0, $2 - 1) AS p
                 ON CONFLICT DO NOTHING",
                &[&topic_id, &count],
            )
            .await?;
        Ok(())
    }

    /// Records a new topic and its partitions in one transaction; false when a topic
    /// of that name exists (nothing is changed then).
    pub async fn create_topic(&self, topic: &StoredTopic, partitions: u32) -> Result<bool> {
        let mut client = self.client().await?;
        let count = i32::try_from(partitions)
            .map_err(|_| SharedError::Invalid(format!("{partitions} partitions is too many")))?;
        let tx = client.transaction().await?;
        let inserted = tx
            .execute(
                "INSERT INTO ferry_topics (name, topic_id, config) VALUES ($1, $2, $3::text::jsonb)
                 ON CONFLICT (name) DO NOTHING",
                &[&topic.name, &topic.topic_id, &topic.config_json],
            )
            .await?;
        if inserted == 0 {
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO ferry_partitions (topic_id, partition)
             SELECT $1, p FROM generate_series(0, $2 - 1) AS p ON CONFLICT DO NOTHING",
            &[&topic.topic_id, &count],
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Deletes a topic with its partitions and batch rows (the objects go with the
    /// orphan sweep once no batch names them); false when there was no such topic.
    pub async fn delete_topic(&self, name: &str) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let Some(row) = tx
            .query_opt(
                "DELETE FROM ferry_topics WHERE name = $1 RETURNING topic_id",
                &[&name],
            )
            .await?
        else {
            return Ok(false);
        };
        let topic_id: String = row.get(0);
        // The partitions' rows first, in the sequencer's order: a commit in flight
        // finishes before its rows are deleted, or starts after and finds no partition.
        tx.execute(
            "SELECT 1 FROM ferry_partitions WHERE topic_id = $1 ORDER BY partition FOR UPDATE",
            &[&topic_id],
        )
        .await?;
        for table in ["ferry_batches", "ferry_producers", "ferry_partitions"] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE topic_id = $1"),
                &[&topic_id],
            )
            .await?;
        }
        // Groups' offsets name topics by name: a topic made again under it starts
        // with none.
        tx.execute("DELETE FROM ferry_group_offsets WHERE topic = $1", &[&name])
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Every topic, by name.
    /// One topic by name, if Postgres has it.
    pub async fn find_topic(&self, name: &str) -> Result<Option<StoredTopic>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT name, topic_id, config::text FROM ferry_topics WHERE name = $1",
                &[&name],
            )
            .await?;
        Ok(row.map(|r| StoredTopic {
            name: r.get(0),
            topic_id: r.get(1),
            config_json: r.get(2),
        }))
    }

    pub async fn list_topics(&self) -> Result<Vec<StoredTopic>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT name, topic_id, config::text FROM ferry_topics ORDER BY name",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| StoredTopic {
                name: r.get(0),
                topic_id: r.get(1),
                config_json: r.get(2),
            })
            .collect())
    }

    /// A producer id no node has handed out.
    pub async fn new_producer_id(&self) -> Result<i64> {
        let client = self.client().await?;
        let row = client
            .query_one("SELECT nextval('ferry_producer_ids')", &[])
            .await?;
        Ok(row.get(0))
    }

    /// Forgets idempotent producers not heard from for `idle`; returns how many.
    pub async fn expire_producers(&self, idle: Duration) -> Result<u64> {
        let client = self.client().await?;
        let idle_ms = idle.as_millis().min(i64::MAX as u128) as i64;
        Ok(client
            .execute(
                "DELETE FROM ferry_producers
                 WHERE updated_at < now() - make_interval(secs => $1::bigint / 1000.0)",
                &[&idle_ms],
            )
            .await?)
    }

    /// Registers an object about to be written (see `ferry_objects`).
    pub async fn register_object(&self, key: &str) -> Result<()> {
        let client = self.commit_client().await?;
        client
            .execute(
                "INSERT INTO ferry_objects (object_key) VALUES ($1)",
                &[&key],
            )
            .await?;
        Ok(())
    }

    /// Partitions with at least two batches not yet compacted, shorter than `small`
    /// bytes, in objects whose keys sort before `before` (older objects), at most
    /// `limit`.
    pub async fn compaction_candidates(
        &self,
        before: &str,
        small: i32,
        limit: i64,
    ) -> Result<Vec<(String, u32)>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT topic_id, partition FROM ferry_batches
                  WHERE NOT compacted AND object_key < $1 AND length < $2
                  GROUP BY topic_id, partition HAVING count(*) >= 2
                  ORDER BY topic_id, partition LIMIT $3",
                &[&before, &small, &limit],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get::<_, i32>(1).max(0) as u32))
            .collect())
    }

    /// A partition's batches not yet compacted, as [`Meta::compaction_candidates`]
    /// picks them, by offset.
    pub(crate) async fn uncompacted(
        &self,
        topic_id: &str,
        partition: u32,
        before: &str,
        small: i32,
        limit: i64,
    ) -> Result<Vec<BatchLocation>> {
        let client = self.client().await?;
        let partition = partition as i32;
        let rows = client
            .query(
                "SELECT base_offset, last_offset, object_key, position, length
                   FROM ferry_batches
                  WHERE topic_id = $1 AND partition = $2 AND NOT compacted
                    AND object_key < $3 AND length < $4
                  ORDER BY base_offset LIMIT $5",
                &[&topic_id, &partition, &before, &small, &limit],
            )
            .await?;
        rows.iter().map(location).collect()
    }

    /// Points the batches `moved` (as they were located) at `object`, at `positions`;
    /// answers how many moved (see the migration's `ferry_relocate_batches`).
    pub(crate) async fn relocate(
        &self,
        object: &str,
        deadline: Duration,
        topic_id: &str,
        partition: u32,
        moved: &[BatchLocation],
        positions: &[u64],
    ) -> Result<u64> {
        debug_assert_eq!(moved.len(), positions.len());
        let client = self.commit_client().await?;
        let deadline_ms = deadline.as_millis().min(i64::MAX as u128) as i64;
        let to_i64 = |v: u64| {
            i64::try_from(v).map_err(|_| SharedError::Invalid(format!("{v} is out of range")))
        };
        let bases = moved
            .iter()
            .map(|l| to_i64(l.base_offset))
            .collect::<Result<Vec<i64>>>()?;
        let from: Vec<&str> = moved.iter().map(|l| l.object_key.as_str()).collect();
        let at = positions
            .iter()
            .map(|p| to_i64(*p))
            .collect::<Result<Vec<i64>>>()?;
        let lengths: Vec<i32> = moved
            .iter()
            .map(|l| i32::try_from(l.length).unwrap_or(i32::MAX))
            .collect();
        let row = client
            .query_one(
                "SELECT ferry_relocate_batches($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    &object,
                    &deadline_ms,
                    &topic_id,
                    &(partition as i32),
                    &bases,
                    &from,
                    &at,
                    &lengths,
                ],
            )
            .await?;
        Ok(row.get::<_, i32>(0).max(0) as u64)
    }

    /// Of `keys` (objects in the store), those that may be removed: pending ones whose
    /// deadline passed (their rows are taken, so no commit can name them any more), and
    /// those neither pending nor named by a batch.
    pub async fn removable(&self, keys: &[String], deadline: Duration) -> Result<Vec<String>> {
        let client = self.client().await?;
        let deadline_ms = deadline.as_millis().min(i64::MAX as u128) as i64;
        let mut out: Vec<String> = client
            .query(
                "DELETE FROM ferry_objects
                 WHERE object_key = ANY($1)
                   AND created_at <= now() - make_interval(secs => $2::bigint / 1000.0)
                 RETURNING object_key",
                &[&keys, &deadline_ms],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let rows = client
            .query(
                "SELECT k FROM unnest($1::text[]) AS k
                 WHERE NOT EXISTS (SELECT 1 FROM ferry_objects o WHERE o.object_key = k)
                   AND NOT EXISTS (SELECT 1 FROM ferry_batches b WHERE b.object_key = k)",
                &[&keys],
            )
            .await?;
        for r in rows {
            let k: String = r.get(0);
            if !out.contains(&k) {
                out.push(k);
            }
        }
        Ok(out)
    }

    /// First readable and next offsets of every partition.
    pub async fn all_bounds(&self) -> Result<Vec<PartitionBounds>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT topic_id, partition, log_start, next_offset, first_open FROM ferry_partitions",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let (p, start, next): (i32, i64, i64) = (r.get(1), r.get(2), r.get(3));
                let b = Bounds::from_row(start, next, r.get(4));
                PartitionBounds {
                    topic_id: r.get(0),
                    partition: p.max(0) as u32,
                    earliest: b.earliest,
                    latest: b.latest,
                    stable: b.stable,
                }
            })
            .collect())
    }

    /// Gives the object's batches their offsets in one transaction; the answers are in
    /// the order of `items`.
    pub(crate) async fn commit_object(
        &self,
        key: &str,
        deadline: Duration,
        items: &[CommitItem],
    ) -> Result<Vec<Committed>> {
        let client = self.commit_client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT item, base_offset, outcome FROM ferry_commit_object(
                     $1, $11, $2, $3, $4, $5, $6, $7, $8, $9, $10, $12)",
            )
            .await?;
        let col = |f: fn(&CommitItem) -> i64| items.iter().map(f).collect::<Vec<i64>>();
        let topics: Vec<&str> = items.iter().map(|i| i.topic_id.as_str()).collect();
        let partitions: Vec<i32> = items.iter().map(|i| i.partition).collect();
        let lengths: Vec<i32> = items.iter().map(|i| i.length).collect();
        let records: Vec<i32> = items.iter().map(|i| i.records).collect();
        let epochs: Vec<i16> = items.iter().map(|i| i.producer_epoch).collect();
        let seqs: Vec<i32> = items.iter().map(|i| i.first_sequence).collect();
        let kinds: Vec<i16> = items.iter().map(|i| i.kind).collect();
        let rows = client
            .query(
                &stmt,
                &[
                    &key,
                    &topics,
                    &partitions,
                    &col(|i| i.position),
                    &lengths,
                    &records,
                    &col(|i| i.max_timestamp),
                    &col(|i| i.producer_id),
                    &epochs,
                    &seqs,
                    &(deadline.as_millis().min(i64::MAX as u128) as i64),
                    &kinds,
                ],
            )
            .await?;
        let mut out: Vec<Option<Committed>> = vec![None; items.len()];
        for row in rows {
            let item: i32 = row.get(0);
            let slot = usize::try_from(item)
                .ok()
                .and_then(|i| i.checked_sub(1))
                .and_then(|i| out.get_mut(i))
                .ok_or_else(|| {
                    SharedError::Metadata(format!("the sequencer answered unknown item {item}"))
                })?;
            *slot = Some(Committed {
                base_offset: row.get(1),
                outcome: row.get(2),
            });
        }
        out.into_iter()
            .enumerate()
            .map(|(i, c)| {
                c.ok_or_else(|| {
                    SharedError::Metadata(format!("the sequencer did not answer item {}", i + 1))
                })
            })
            .collect()
    }

    /// A partition's first readable, next and last stable offsets; `None` when it does
    /// not exist.
    pub async fn bounds(&self, topic_id: &str, partition: u32) -> Result<Option<Bounds>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT log_start, next_offset, first_open FROM ferry_partitions
                 WHERE topic_id = $1 AND partition = $2",
            )
            .await?;
        let partition = partition as i32;
        let row = client.query_opt(&stmt, &[&topic_id, &partition]).await?;
        Ok(row.map(|r| Bounds::from_row(r.get(0), r.get(1), r.get(2))))
    }

    /// The batches holding `offset` and after, in offset order, at most `max_rows`.
    pub(crate) async fn locate(
        &self,
        topic_id: &str,
        partition: u32,
        offset: u64,
        max_rows: i64,
    ) -> Result<Vec<BatchLocation>> {
        let client = self.client().await?;
        // The batch that holds `offset` is the last one starting at or before it: two
        // index look-ups on the primary key, never a scan of the partition.
        let stmt = client
            .prepare_cached(
                "SELECT base_offset, last_offset, object_key, position, length
                 FROM ferry_batches
                 WHERE topic_id = $1 AND partition = $2
                   AND base_offset >= coalesce(
                       (SELECT b.base_offset FROM ferry_batches b
                        WHERE b.topic_id = $1 AND b.partition = $2 AND b.base_offset <= $3
                        ORDER BY b.base_offset DESC LIMIT 1), $3)
                 ORDER BY base_offset
                 LIMIT $4",
            )
            .await?;
        let partition = partition as i32;
        let offset = i64::try_from(offset)
            .map_err(|_| SharedError::Invalid(format!("offset {offset} is out of range")))?;
        let rows = client
            .query(&stmt, &[&topic_id, &partition, &offset, &max_rows])
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let loc = location(r)?;
            if loc.last_offset < offset as u64 {
                continue;
            }
            out.push(loc);
        }
        debug_assert!(out.windows(2).all(|w| w[0].last_offset < w[1].base_offset));
        Ok(out)
    }

    /// The first batch (by offset) holding a record stamped at or after `timestamp`
    /// (by its largest timestamp), from `from` on.
    pub async fn first_batch_at_time(
        &self,
        topic_id: &str,
        partition: u32,
        timestamp: i64,
        from: u64,
    ) -> Result<Option<u64>> {
        let client = self.client().await?;
        let partition = partition as i32;
        let from = i64::try_from(from).unwrap_or(i64::MAX);
        let row = client
            .query_opt(
                "SELECT base_offset FROM ferry_batches
                 WHERE topic_id = $1 AND partition = $2 AND max_timestamp >= $3
                   AND last_offset >= $4
                 ORDER BY base_offset LIMIT 1",
                &[&topic_id, &partition, &timestamp, &from],
            )
            .await?;
        Ok(row.map(|r| r.get::<_, i64>(0).max(0) as u64))
    }

    /// Moves a partition's start up to `before` (see `ferry_trim_partition`); `None`
    /// when the partition does not exist.
    pub async fn trim(&self, topic_id: &str, partition: u32, before: u64) -> Result<Option<u64>> {
        let client = self.client().await?;
        let partition = partition as i32;
        let before = i64::try_from(before).unwrap_or(i64::MAX);
        let row = client
            .query_one(
                "SELECT ferry_trim_partition($1, $2, $3)",
                &[&topic_id, &partition, &before],
            )
            .await?;
        let start: i64 = row.get(0);
        Ok(u64::try_from(start).ok())
    }

    /// Where time retention cuts a partition for records older than `cutoff` (ms).
    pub async fn retention_point(
        &self,
        topic_id: &str,
        partition: u32,
        cutoff: i64,
    ) -> Result<Option<u64>> {
        let client = self.client().await?;
        let partition = partition as i32;
        let row = client
            .query_one(
                "SELECT ferry_retention_point($1, $2, $3)",
                &[&topic_id, &partition, &cutoff],
            )
            .await?;
        let point: Option<i64> = row.get(0);
        Ok(point.map(|p| p.max(0) as u64))
    }

    /// The offset before which a partition's batches go so that the rest holds at most
    /// `max_bytes` (whole batches, newest kept first); `None` when all of it fits. The
    /// newest batches are read back from the end until they pass `max_bytes`, so a
    /// check reads about as many rows as are kept, not the whole partition.
    pub async fn size_retention_point(
        &self,
        topic_id: &str,
        partition: u32,
        max_bytes: i64,
    ) -> Result<Option<u64>> {
        let client = self.client().await?;
        let partition = partition as i32;
        let row = client
            .query_opt(
                "SELECT last_offset + 1 FROM (
                    SELECT base_offset, last_offset,
                           sum(length) OVER (ORDER BY base_offset DESC) AS tail
                      FROM ferry_batches WHERE topic_id = $1 AND partition = $2) t
                  WHERE tail > $3::bigint ORDER BY base_offset DESC LIMIT 1",
                &[&topic_id, &partition, &max_bytes],
            )
            .await?;
        Ok(row.map(|r| r.get::<_, i64>(0).max(0) as u64))
    }

    /// Registers a starting node; returns its id, new for every start.
    pub async fn join(&self, kafka_host: &str, kafka_port: u16) -> Result<i32> {
        let client = self.client().await?;
        let port = i32::from(kafka_port);
        let row = client
            .query_one(
                "INSERT INTO ferry_nodes (node_id, kafka_host, kafka_port)
                 VALUES (nextval('ferry_node_ids'), $1, $2) RETURNING node_id",
                &[&kafka_host, &port],
            )
            .await?;
        // Rows of nodes long gone are dropped by whoever starts.
        client
            .execute(
                "DELETE FROM ferry_nodes WHERE heartbeat_at < now() - interval '1 hour'",
                &[],
            )
            .await?;
        Ok(row.get(0))
    }

    /// Takes `node_id` out of the live nodes at once (a node stopping): its leases are
    /// free for others without waiting for its beat to age.
    pub async fn leave(&self, node_id: i32) -> Result<()> {
        let client = self.client().await?;
        client
            .execute("DELETE FROM ferry_nodes WHERE node_id = $1", &[&node_id])
            .await?;
        Ok(())
    }

    /// Beats for `node_id` and answers the live nodes, by id.
    pub async fn heartbeat(&self, node_id: i32) -> Result<Vec<Node>> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE ferry_nodes SET heartbeat_at = now() WHERE node_id = $1",
                &[&node_id],
            )
            .await?;
        let rows = client
            .query(
                "SELECT node_id, kafka_host, kafka_port, http_addr FROM ferry_nodes
                 WHERE heartbeat_at > now() - make_interval(secs => $1) ORDER BY node_id",
                &[&f64::from(NODE_TIMEOUT_SECS)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| Node {
                node_id: r.get(0),
                kafka_host: r.get(1),
                kafka_port: r.get::<_, i32>(2).clamp(1, 65535) as u16,
                http_addr: r.get(3),
            })
            .collect())
    }

    /// Listens for appends until the returned task is aborted: `on_append(topic_id,
    /// partition, next_offset)` for each, and `on_gap()` whenever notifications may
    /// have been missed (at each (re)connection), so that waiters look again.
    pub fn listen(
        &self,
        on_append: impl Fn(&str, u32, u64) + Send + Sync + 'static,
        on_gap: impl Fn() + Send + Sync + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let (config, tls) = (self.config.clone(), self.tls.clone());
        tokio::spawn(async move {
            loop {
                let listened = match &tls {
                    Tls::Off => match config.connect(NoTls).await {
                        Ok((client, connection)) => {
                            listen_once(client, connection, &on_append, &on_gap).await
                        }
                        Err(e) => Err(e.into()),
                    },
                    Tls::On(connector) => match config.connect(connector.clone()).await {
                        Ok((client, connection)) => {
                            listen_once(client, connection, &on_append, &on_gap).await
                        }
                        Err(e) => Err(e.into()),
                    },
                };
                match listened {
                    Ok(()) => {
                        tracing::warn!("The metadata database closed the notification connection.")
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "Notifications from the metadata database stopped; reconnecting.")
                    }
                }
                on_gap();
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    }
}

/// Listens on one connection until it ends.
async fn listen_once<S, T>(
    client: tokio_postgres::Client,
    mut connection: tokio_postgres::Connection<S, T>,
    on_append: &(impl Fn(&str, u32, u64) + Send + Sync),
    on_gap: &(impl Fn() + Send + Sync),
) -> Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    let sql = format!("LISTEN {APPENDED_CHANNEL}");
    {
        let listen = client.batch_execute(&sql);
        tokio::pin!(listen);
        // The connection must be polled for the LISTEN to complete.
        loop {
            tokio::select! {
                done = &mut listen => { done?; break; }
                m = messages.next() => match m {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e.into()),
                    None => return Ok(()),
                }
            }
        }
    }
    on_gap();
    while let Some(m) = messages.next().await {
        match m? {
            AsyncMessage::Notification(n) => match parse_appended(n.payload()) {
                Some((topic_id, partition, next)) => on_append(topic_id, partition, next),
                None => tracing::warn!(payload = n.payload(), "Unreadable append notification."),
            },
            AsyncMessage::Notice(_) => {}
            _ => {}
        }
    }
    drop(client);
    Ok(())
}

/// `'<next_offset> <partition> <topic_id>'`.
pub(crate) fn parse_appended(payload: &str) -> Option<(&str, u32, u64)> {
    let mut parts = payload.splitn(3, ' ');
    let next = parts.next()?.parse().ok()?;
    let partition = parts.next()?.parse().ok()?;
    let topic_id = parts.next().filter(|t| !t.is_empty())?;
    Some((topic_id, partition, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_notifications_parse() {
        assert_eq!(parse_appended("12 3 a b"), Some(("a b", 3, 12)));
        for bad in ["", "12", "12 3", "12 3 ", "x 3 t", "12 -1 t", "-5 1 t"] {
            assert_eq!(parse_appended(bad), None, "{bad}");
        }
    }
}
