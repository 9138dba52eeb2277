//! Leases and consumer groups' committed offsets in Postgres (migration 0005).
//!
//! A lease names the node that owns a piece of work, such as a consumer group's
//! coordinator. It holds while its node beats (`ferry_nodes`), so one beat per node
//! renews all of its leases; a node taking a lease from a dead one bumps its epoch, and
//! writes made under a lease carry the epoch and are refused once it moved on.

use crate::error::{Result, SharedError};
use crate::meta::{Meta, NODE_TIMEOUT_SECS};
use std::collections::BTreeMap;

/// The kind of lease a consumer group's coordinator holds.
pub const GROUP_LEASE: &str = "group";

/// Who holds a lease after [`Meta::take_lease`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseHolder {
    /// The caller, under this epoch.
    Taken { epoch: i64 },
    /// Another live node.
    Other { node_id: i32 },
}

/// A lease held by a node: (kind, name) → epoch.
pub type HeldLeases = BTreeMap<(String, String), i64>;

/// One committed offset of a group, as Postgres keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredOffset {
    pub topic: String,
    pub partition: u32,
    pub offset: i64,
    pub metadata: Option<String>,
    pub leader_epoch: Option<i32>,
}

/// The liveness window in milliseconds, as the lease functions take it.
fn live_ms() -> i64 {
    i64::from(NODE_TIMEOUT_SECS) * 1000
}

impl Meta {
    /// Takes the lease (`kind`, `name`) for `node_id` if it is free or its holder is
    /// dead; answers who holds it afterwards.
    pub async fn take_lease(&self, kind: &str, name: &str, node_id: i32) -> Result<LeaseHolder> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT o_node, o_epoch FROM ferry_take_lease($1, $2, $3, $4)",
                &[&kind, &name, &node_id, &live_ms()],
            )
            .await?;
        let (holder, epoch): (i32, i64) = (row.get(0), row.get(1));
        if holder == -1 {
            return Err(SharedError::Metadata(format!(
                "node {node_id} has not beaten within {NODE_TIMEOUT_SECS} s, so it takes no lease until it beats again"
            )));
        }
        debug_assert!(epoch > 0, "a held lease has a positive epoch");
        Ok(if holder == node_id {
            LeaseHolder::Taken { epoch }
        } else {
            LeaseHolder::Other { node_id: holder }
        })
    }

    /// Gives up the lease (`kind`, `name`) if `node_id` still holds it under `epoch`.
    pub async fn release_lease(
        &self,
        kind: &str,
        name: &str,
        node_id: i32,
        epoch: i64,
    ) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM ferry_leases WHERE kind = $1 AND name = $2 AND node_id = $3 AND epoch = $4",
                &[&kind, &name, &node_id, &epoch],
            )
            .await?;
        Ok(())
    }

    /// The live node holding the lease (`kind`, `name`), if any.
    /// The live node holding the lease (`kind`, `name`), with where it answers; `None`
    /// when the lease is free or its holder is dead. Read from Postgres, so a node that
    /// joined a moment ago is found as well.
    pub async fn lease_holder_node(&self, kind: &str, name: &str) -> Result<Option<crate::Node>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT n.node_id, n.kafka_host, n.kafka_port, n.http_addr
                   FROM ferry_leases l JOIN ferry_nodes n USING (node_id)
                  WHERE l.kind = $1 AND l.name = $2
                    AND n.heartbeat_at > now() - make_interval(secs => $3)",
                &[&kind, &name, &f64::from(NODE_TIMEOUT_SECS)],
            )
            .await?;
        Ok(row.map(|r| crate::Node {
            node_id: r.get(0),
            kafka_host: r.get(1),
            kafka_port: r.get::<_, i32>(2).clamp(1, 65535) as u16,
            http_addr: r.get(3),
        }))
    }

    pub async fn lease_holder(&self, kind: &str, name: &str) -> Result<Option<i32>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT l.node_id FROM ferry_leases l JOIN ferry_nodes n USING (node_id)
                  WHERE l.kind = $1 AND l.name = $2
                    AND n.heartbeat_at > now() - make_interval(secs => $3)",
                &[&kind, &name, &f64::from(NODE_TIMEOUT_SECS)],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Every lease `node_id` holds, with its epoch.
    pub async fn held_leases(&self, node_id: i32) -> Result<HeldLeases> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT kind, name, epoch FROM ferry_leases WHERE node_id = $1",
                &[&node_id],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| ((r.get(0), r.get(1)), r.get(2)))
            .collect())
    }

    /// Drops the leases of consumer groups that no live node holds and that have no
    /// committed offsets (nothing is lost: the next node to coordinate such a group
    /// takes a new lease); answers how many.
    pub async fn drop_idle_group_leases(&self) -> Result<u64> {
        let client = self.client().await?;
        let n = client
            .execute(
                "DELETE FROM ferry_leases l
                  WHERE l.kind = $1
                    AND NOT EXISTS (SELECT 1 FROM ferry_nodes n WHERE n.node_id = l.node_id
                                       AND n.heartbeat_at > now() - make_interval(secs => $2))
                    AND NOT EXISTS (SELECT 1 FROM ferry_group_offsets o WHERE o.group_id = l.name)",
                &[&GROUP_LEASE, &f64::from(NODE_TIMEOUT_SECS)],
            )
            .await?;
        Ok(n)
    }

    /// Groups with committed offsets whose lease no live node holds, by name.
    pub async fn unheld_groups(&self) -> Result<Vec<String>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT DISTINCT o.group_id FROM ferry_group_offsets o
                  WHERE NOT EXISTS (
                        SELECT 1 FROM ferry_leases l JOIN ferry_nodes n USING (node_id)
                         WHERE l.kind = $1 AND l.name = o.group_id
                           AND n.heartbeat_at > now() - make_interval(secs => $2))
                  ORDER BY o.group_id",
                &[&GROUP_LEASE, &f64::from(NODE_TIMEOUT_SECS)],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// A group's committed offsets.
    pub async fn group_offsets(&self, group: &str) -> Result<Vec<StoredOffset>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT topic, partition, committed_offset, metadata, leader_epoch
                   FROM ferry_group_offsets WHERE group_id = $1 ORDER BY topic, partition",
                &[&group],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| StoredOffset {
                topic: r.get(0),
                partition: r.get::<_, i32>(1).max(0) as u32,
                offset: r.get(2),
                metadata: r.get(3),
                leader_epoch: r.get(4),
            })
            .collect())
    }

    /// Records `offsets` of `group` under the lease epoch `epoch` of `node_id`; false,
    /// with nothing written, when that lease is no longer held. A partition named twice
    /// keeps its last offset.
    pub async fn commit_offsets(
        &self,
        group: &str,
        node_id: i32,
        epoch: i64,
        offsets: &[StoredOffset],
    ) -> Result<bool> {
        let mut last: BTreeMap<(&str, u32), &StoredOffset> = BTreeMap::new();
        for offset in offsets {
            last.insert((offset.topic.as_str(), offset.partition), offset);
        }
        let partition = |p: u32| {
            i32::try_from(p)
                .map_err(|_| SharedError::Invalid(format!("partition {p} is too large")))
        };
        let topics: Vec<&str> = last.keys().map(|(t, _)| *t).collect();
        let partitions = last
            .keys()
            .map(|(_, p)| partition(*p))
            .collect::<Result<Vec<i32>>>()?;
        let values: Vec<i64> = last.values().map(|o| o.offset).collect();
        let metadata: Vec<Option<&str>> = last.values().map(|o| o.metadata.as_deref()).collect();
        let epochs: Vec<Option<i32>> = last.values().map(|o| o.leader_epoch).collect();
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT ferry_commit_offsets($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    &group,
                    &node_id,
                    &epoch,
                    &topics,
                    &partitions,
                    &values,
                    &metadata,
                    &epochs,
                ],
            )
            .await?;
        Ok(row.get(0))
    }

    /// Drops `group`'s offsets of `partitions` (topic, partition), or all of them when
    /// `partitions` is `None`, under the lease epoch `epoch` of `node_id`; false, with
    /// nothing dropped, when that lease is no longer held.
    pub async fn delete_offsets(
        &self,
        group: &str,
        node_id: i32,
        epoch: i64,
        partitions: Option<&[(String, u32)]>,
    ) -> Result<bool> {
        let (topics, numbers): (Option<Vec<&str>>, Option<Vec<i32>>) = match partitions {
            None => (None, None),
            Some(list) => (
                Some(list.iter().map(|(t, _)| t.as_str()).collect()),
                Some(
                    list.iter()
                        .map(|(_, p)| i32::try_from(*p).unwrap_or(i32::MAX))
                        .collect(),
                ),
            ),
        };
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT ferry_delete_offsets($1, $2, $3, $4, $5)",
                &[&group, &node_id, &epoch, &topics, &numbers],
            )
            .await?;
        Ok(row.get(0))
    }
}
