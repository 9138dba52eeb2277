//! Subscriptions' settings and state in Postgres (migration 0007).
//!
//! The settings are a row every node reads. The state belongs to the node holding the
//! lease ([`SUBSCRIPTION_LEASE`], name): a snapshot, the journal of events after it
//! (blocks of encoded events, numbered from the snapshot on), and delayed records by
//! minute. This crate keeps the bytes; the broker encodes and checks them. Every write
//! names the lease's epoch and changes nothing once another node took the lease.

use crate::error::{Result, SharedError};
use crate::meta::Meta;
use std::collections::BTreeMap;

/// The kind of lease the node owning a subscription holds.
pub const SUBSCRIPTION_LEASE: &str = "subscription";

/// A lease as a write names it: the holder and the epoch it took the lease under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub node_id: i32,
    pub epoch: i64,
}

/// A subscription's stored state: the snapshot, and the journal blocks after it in
/// order, each with its sequence number.
#[derive(Debug, Default)]
pub struct StoredState {
    pub snapshot: Option<Vec<u8>>,
    pub journal: Vec<(u64, Vec<u8>)>,
}

/// Journal sequence numbers and buckets are kept as `bigint`.
fn to_i64(v: u64, what: &str) -> Result<i64> {
    i64::try_from(v).map_err(|_| SharedError::Invalid(format!("{what} {v} is out of range")))
}

fn fenced(name: &str) -> SharedError {
    SharedError::Fenced(format!(
        "subscription '{name}' is now owned by another node; this node stopped serving it"
    ))
}

impl Meta {
    /// Stores a new subscription's settings (JSON) and first snapshot; false when a
    /// subscription of that name exists.
    pub async fn create_subscription(
        &self,
        name: &str,
        topic: &str,
        config_json: &str,
        snapshot: &[u8],
    ) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let inserted = tx
            .execute(
                "INSERT INTO ferry_subscriptions (name, topic, config) VALUES ($1, $2, $3::text::jsonb)
                 ON CONFLICT (name) DO NOTHING",
                &[&name, &topic, &config_json],
            )
            .await?;
        if inserted == 0 {
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO ferry_subscription_snapshots (name, snapshot) VALUES ($1, $2)",
            &[&name, &snapshot],
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Every subscription's settings (JSON), by name.
    pub async fn subscriptions(&self) -> Result<BTreeMap<String, String>> {
        let client = self.client().await?;
        let rows = client
            .query("SELECT name, config::text FROM ferry_subscriptions", &[])
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// One subscription's settings (JSON), if it exists.
    pub async fn subscription(&self, name: &str) -> Result<Option<String>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT config::text FROM ferry_subscriptions WHERE name = $1",
                &[&name],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Replaces a subscription's settings; false when it does not exist.
    pub async fn update_subscription(&self, name: &str, config_json: &str) -> Result<bool> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE ferry_subscriptions SET config = $2::text::jsonb WHERE name = $1",
                &[&name, &config_json],
            )
            .await?;
        Ok(n == 1)
    }

    /// Deletes a subscription with its state and lease; false when it did not exist.
    pub async fn delete_subscription(&self, name: &str) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let n = tx
            .execute("DELETE FROM ferry_subscriptions WHERE name = $1", &[&name])
            .await?;
        tx.execute(
            "DELETE FROM ferry_leases WHERE kind = $1 AND name = $2",
            &[&SUBSCRIPTION_LEASE, &name],
        )
        .await?;
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Subscriptions whose lease no live node holds, by name (at most `limit`).
    pub async fn unserved_subscriptions(&self, limit: i64) -> Result<Vec<String>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT s.name FROM ferry_subscriptions s
                  WHERE NOT EXISTS (
                        SELECT 1 FROM ferry_leases l JOIN ferry_nodes n USING (node_id)
                         WHERE l.kind = $1 AND l.name = s.name
                           AND n.heartbeat_at > now() - make_interval(secs => $2))
                  ORDER BY s.name LIMIT $3",
                &[
                    &SUBSCRIPTION_LEASE,
                    &f64::from(crate::meta::NODE_TIMEOUT_SECS),
                    &limit,
                ],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// A subscription's snapshot and the journal after it.
    pub async fn subscription_state(&self, name: &str) -> Result<StoredState> {
        let mut client = self.client().await?;
        // One snapshot of the tables: a checkpoint between the two reads would
        // otherwise pair a new snapshot with an old journal.
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let snapshot = tx
            .query_opt(
                "SELECT snapshot FROM ferry_subscription_snapshots WHERE name = $1",
                &[&name],
            )
            .await?
            .map(|r| r.get::<_, Vec<u8>>(0));
        let rows = tx
            .query(
                "SELECT seq, events FROM ferry_subscription_journal WHERE name = $1 ORDER BY seq",
                &[&name],
            )
            .await?;
        tx.commit().await?;
        let mut journal = Vec::with_capacity(rows.len());
        for r in rows {
            let seq: i64 = r.get(0);
            let seq = u64::try_from(seq).map_err(|_| {
                SharedError::Invalid(format!("subscription '{name}' has journal block {seq}"))
            })?;
            journal.push((seq, r.get(1)));
        }
        Ok(StoredState { snapshot, journal })
    }

    /// Appends journal blocks numbered from `first`, under `lease`.
    pub async fn append_subscription_journal(
        &self,
        name: &str,
        lease: Lease,
        first: u64,
        blocks: &[Vec<u8>],
    ) -> Result<()> {
        let mut seqs = Vec::with_capacity(blocks.len());
        for i in 0..blocks.len() as u64 {
            seqs.push(to_i64(first + i, "journal block")?);
        }
        self.under_lease(
            name,
            lease,
            &[(
                "INSERT INTO ferry_subscription_journal (name, seq, events)
                 SELECT $1, s, e FROM unnest($2::bigint[], $3::bytea[]) AS u(s, e)",
                &[&name, &seqs, &blocks],
            )],
        )
        .await
    }

    /// Replaces the snapshot and drops the journal blocks before `journal_next` and
    /// the delay buckets up to `delays_upto`, under `lease`.
    pub async fn checkpoint_subscription(
        &self,
        name: &str,
        lease: Lease,
        snapshot: &[u8],
        journal_next: u64,
        delays_upto: u64,
    ) -> Result<()> {
        let (next, upto) = (
            to_i64(journal_next, "journal block")?,
            to_i64(delays_upto, "delay bucket")?,
        );
        self.under_lease(
            name,
            lease,
            &[
                (
                    "UPDATE ferry_subscription_snapshots SET snapshot = $2 WHERE name = $1",
                    &[&name, &snapshot],
                ),
                (
                    "DELETE FROM ferry_subscription_journal WHERE name = $1 AND seq < $2",
                    &[&name, &next],
                ),
                (
                    "DELETE FROM ferry_subscription_delays WHERE name = $1 AND bucket <= $2",
                    &[&name, &upto],
                ),
            ],
        )
        .await
    }

    /// Stores delayed records: (bucket, entries, bytes) each, under `lease`.
    pub async fn write_subscription_delays(
        &self,
        name: &str,
        lease: Lease,
        by_bucket: &[(u64, u32, Vec<u8>)],
    ) -> Result<()> {
        let mut buckets = Vec::with_capacity(by_bucket.len());
        let mut counts = Vec::with_capacity(by_bucket.len());
        let mut bytes = Vec::with_capacity(by_bucket.len());
        for (b, n, data) in by_bucket {
            buckets.push(to_i64(*b, "delay bucket")?);
            counts.push(i32::try_from(*n).map_err(|_| {
                SharedError::Invalid(format!("{n} delayed records in one write is too many"))
            })?);
            bytes.push(data.as_slice());
        }
        self.under_lease(
            name,
            lease,
            &[(
                "INSERT INTO ferry_subscription_delays (name, bucket, entries, bytes)
                 SELECT $1, b, n, d FROM unnest($2::bigint[], $3::integer[], $4::bytea[]) AS u(b, n, d)",
                &[&name, &buckets, &counts, &bytes],
            )],
        )
        .await
    }

    /// The delayed records of one bucket, as stored (blocks in the order written).
    pub async fn subscription_delays(&self, name: &str, bucket: u64) -> Result<Vec<Vec<u8>>> {
        let b = to_i64(bucket, "delay bucket")?;
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT bytes FROM ferry_subscription_delays WHERE name = $1 AND bucket = $2 ORDER BY id",
                &[&name, &b],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Buckets with delayed records, with how many each holds.
    pub async fn subscription_delay_buckets(&self, name: &str) -> Result<BTreeMap<u64, u64>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT bucket, sum(entries)::bigint FROM ferry_subscription_delays
                  WHERE name = $1 GROUP BY bucket",
                &[&name],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let (b, n): (i64, i64) = (r.get(0), r.get(1));
                (b.max(0) as u64, n.max(0) as u64)
            })
            .collect())
    }

    /// Drops delay buckets up to `upto`, under `lease`.
    pub async fn remove_subscription_delays(
        &self,
        name: &str,
        lease: Lease,
        upto: u64,
    ) -> Result<()> {
        let upto = to_i64(upto, "delay bucket")?;
        self.under_lease(
            name,
            lease,
            &[(
                "DELETE FROM ferry_subscription_delays WHERE name = $1 AND bucket <= $2",
                &[&name, &upto],
            )],
        )
        .await
    }

    /// Runs `statements` in one transaction, on a connection for commits, if `lease`
    /// still holds when it begins (the lease row is read `FOR SHARE`, so a node taking
    /// the lease waits for the transaction); [`SharedError::Fenced`], with nothing
    /// written, if it does not.
    async fn under_lease(
        &self,
        name: &str,
        lease: Lease,
        statements: &[(&str, &[&(dyn tokio_postgres::types::ToSql + Sync)])],
    ) -> Result<()> {
        let mut client = self.commit_client().await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_one(
                "SELECT ferry_holds_lease($1, $2, $3, $4)",
                &[&SUBSCRIPTION_LEASE, &name, &lease.node_id, &lease.epoch],
            )
            .await?;
        if !row.get::<_, bool>(0) {
            return Err(fenced(name));
        }
        for (sql, params) in statements {
            tx.execute(*sql, params).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Every consumer group with committed offsets or a lease a live node holds.
    pub async fn group_names(&self) -> Result<Vec<String>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT group_id FROM ferry_group_offsets
                 UNION
                 SELECT l.name FROM ferry_leases l JOIN ferry_nodes n USING (node_id)
                  WHERE l.kind = $1 AND n.heartbeat_at > now() - make_interval(secs => $2)
                 ORDER BY 1",
                &[
                    &crate::leases::GROUP_LEASE,
                    &f64::from(crate::meta::NODE_TIMEOUT_SECS),
                ],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Where live node `node_id`'s HTTP API answers, if it published it (for a node
    /// that joined since the last beat read the nodes).
    pub async fn http_addr(&self, node_id: i32) -> Result<Option<String>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT http_addr FROM ferry_nodes
                  WHERE node_id = $1 AND heartbeat_at > now() - make_interval(secs => $2)",
                &[&node_id, &f64::from(crate::meta::NODE_TIMEOUT_SECS)],
            )
            .await?;
        Ok(row.and_then(|r| r.get(0)))
    }

    /// Publishes where `node_id`'s HTTP API answers.
    pub async fn set_http_addr(&self, node_id: i32, addr: &str) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE ferry_nodes SET http_addr = $2 WHERE node_id = $1",
                &[&node_id, &addr],
            )
            .await?;
        Ok(())
    }
}
