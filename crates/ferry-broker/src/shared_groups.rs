//! Consumer groups in shared mode: each group has one coordinating node, named by a
//! lease row in Postgres, and its committed offsets live in Postgres.
//!
//! - A node answers a group's requests only while it holds the group's lease; it takes
//!   the lease at the group's first request if the lease is free or its holder is dead
//!   (its beat older than [`ferry_shared::NODE_TIMEOUT_SECS`]), loading the offsets the
//!   previous holder committed. Otherwise it answers NOT_COORDINATOR and the client asks
//!   FindCoordinator again.
//! - FindCoordinator names the live holder, or, for a group nobody holds, the live node
//!   that rendezvous hashing picks, so that every node names the same one.
//! - Members live in memory on the coordinator, as in the local mode: after a failover
//!   clients join again. Offsets are written to Postgres before a commit is answered,
//!   under the lease's epoch, and Postgres refuses a write from a node whose lease was
//!   taken since.
//! - A node whose beat has not succeeded for [`LEASE_TRUST`] stops answering for its
//!   groups before anyone else may take them (the window is shorter than the liveness
//!   window, measured from when the beat was sent), and one that finds, at a beat, a
//!   lease gone lets the group go.

use crate::error::{BrokerError, Result};
use crate::groups::store::{CommittedOffset, GroupOffsets, OffsetStore, PartitionOffset};
use crate::groups::types::{GROUPS_MAX, GROUP_ID_BYTES_MAX};
use crate::groups::GroupError;
use crate::shared::SharedTopics;
use crate::Broker;
use ferry_log::sync::lock;
use ferry_shared::{
    LeaseHolder, Node, StoredOffset, GROUP_LEASE, SUBSCRIPTION_LEASE, TRANSACTION_LEASE,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long after its last successful beat was sent a node goes on answering for its
/// leases. Shorter than the liveness window (6 s) by enough for a slow answer, so a
/// node stops before another may take over.
pub const LEASE_TRUST: Duration = Duration::from_secs(4);

/// A group held this long with neither members nor offsets is let go.
pub const IDLE_GROUP_AFTER: Duration = Duration::from_secs(60);

/// The leases this node holds, as it knows them.
#[derive(Default)]
pub(crate) struct Leases {
    /// Consumer groups this node coordinates → the lease's epoch, and when this node
    /// took it (a beat that asked Postgres before then cannot know of it).
    groups: Mutex<HashMap<String, (i64, Instant)>>,
    /// Subscriptions this node serves → the lease's epoch, and when it took it.
    subscriptions: Mutex<HashMap<String, (i64, Instant)>>,
    /// Transactional ids this node coordinates → the lease's epoch, and when it took it.
    pub(crate) transactions: Mutex<HashMap<String, (i64, Instant)>>,
    /// When the last beat that succeeded was sent.
    last_beat: Mutex<Option<Instant>>,
    /// Claims of groups, one at a time (they are rare: once per group and tenure).
    pub(crate) claims: tokio::sync::Mutex<()>,
}

impl Leases {
    fn trusted(&self) -> bool {
        lock(&self.last_beat).is_some_and(|sent| sent.elapsed() < LEASE_TRUST)
    }

    /// The epoch of `group`'s lease, while this node holds it and may trust that.
    pub(crate) fn group_epoch(&self, group: &str) -> Option<i64> {
        if !self.trusted() {
            return None;
        }
        lock(&self.groups).get(group).map(|(epoch, _)| *epoch)
    }

    pub(crate) fn beat_sent(&self, sent: Instant) {
        let mut last = lock(&self.last_beat);
        if last.is_none_or(|l| l < sent) {
            *last = Some(sent);
        }
    }

    fn forget(&self, group: &str) {
        lock(&self.groups).remove(group);
    }

    /// The epoch of `name`'s subscription lease, while this node holds it and may trust
    /// that.
    pub(crate) fn subscription_epoch(&self, name: &str) -> Option<i64> {
        if !self.trusted() {
            return None;
        }
        lock(&self.subscriptions).get(name).map(|(epoch, _)| *epoch)
    }

    pub(crate) fn hold_subscription(&self, name: &str, epoch: i64) {
        lock(&self.subscriptions).insert(name.to_string(), (epoch, Instant::now()));
    }

    pub(crate) fn forget_subscription(&self, name: &str) {
        lock(&self.subscriptions).remove(name);
    }

    /// The epoch of `txn_id`'s lease, while this node holds it and may trust that.
    pub(crate) fn transaction_epoch(&self, txn_id: &str) -> Option<i64> {
        if !self.trusted() {
            return None;
        }
        lock(&self.transactions)
            .get(txn_id)
            .map(|(epoch, _)| *epoch)
    }
}

/// Of `held` (name → epoch, when taken), the entries whose lease of `kind` this node no
/// longer holds under that epoch, taken out: every one when `beat` is `None` (the
/// beat failed), else those Postgres did not list when asked (a lease taken since the
/// beat asked is left alone).
fn take_lost(
    held: &Mutex<HashMap<String, (i64, Instant)>>,
    kind: &str,
    beat: Option<(&ferry_shared::HeldLeases, Instant)>,
) -> Vec<String> {
    let mut held = lock(held);
    let lost: Vec<String> = held
        .iter()
        .filter(|(name, (epoch, taken))| {
            beat.is_none_or(|(h, asked)| {
                *taken < asked && h.get(&(kind.to_string(), (*name).clone())) != Some(epoch)
            })
        })
        .map(|(name, _)| name.clone())
        .collect();
    for name in &lost {
        held.remove(name);
    }
    lost
}

/// Committed offsets in Postgres, written under the group's lease.
pub(crate) struct SharedOffsetStore {
    pub(crate) shared: Arc<SharedTopics>,
}

impl SharedOffsetStore {
    /// Runs a write of `group`'s offsets under its lease; called by the coordinator off
    /// the async threads (its store calls run on the blocking pool), so it may wait.
    fn under_lease<F>(&self, group: &str, write: impl FnOnce(i32, i64) -> F) -> Result<()>
    where
        F: std::future::Future<Output = ferry_shared::Result<bool>>,
    {
        let sh = &self.shared;
        let Some(epoch) = sh.leases.group_epoch(group) else {
            return Err(moved(group));
        };
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| BrokerError::Unavailable("no runtime for the metadata database".into()))?;
        let written = handle
            .block_on(write(sh.node_id(), epoch))
            .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
        if written {
            Ok(())
        } else {
            sh.leases.forget(group);
            Err(moved(group))
        }
    }
}

fn moved(group: &str) -> BrokerError {
    BrokerError::Unavailable(format!(
        "this node no longer coordinates group '{group}': ask for its coordinator again"
    ))
}

fn stored(offsets: &[PartitionOffset]) -> Vec<StoredOffset> {
    offsets
        .iter()
        .map(|o| StoredOffset {
            topic: o.topic.clone(),
            partition: o.partition,
            offset: o.committed.offset,
            metadata: o.committed.metadata.clone(),
            leader_epoch: o.committed.leader_epoch,
        })
        .collect()
}

impl OffsetStore for SharedOffsetStore {
    /// Nothing up front: a group's offsets are read when this node takes its lease.
    fn load(&self) -> Result<BTreeMap<String, GroupOffsets>> {
        Ok(BTreeMap::new())
    }

    fn commit(&self, group: &str, offsets: &[PartitionOffset]) -> Result<()> {
        let rows = stored(offsets);
        let log = &self.shared.log;
        self.under_lease(group, |node, epoch| {
            log.metadata().commit_offsets(group, node, epoch, &rows)
        })
    }

    fn delete_group(&self, group: &str) -> Result<()> {
        let log = &self.shared.log;
        self.under_lease(group, |node, epoch| {
            log.metadata().delete_offsets(group, node, epoch, None)
        })
    }

    fn delete_offsets(&self, group: &str, partitions: &[(String, u32)]) -> Result<()> {
        let log = &self.shared.log;
        self.under_lease(group, |node, epoch| {
            log.metadata()
                .delete_offsets(group, node, epoch, Some(partitions))
        })
    }

    /// Postgres drops a deleted topic's offsets with the topic (in the same
    /// transaction), so there is nothing left to do here.
    fn delete_topic(&self, _topic: &str) -> Result<()> {
        Ok(())
    }
}

fn group_offsets(rows: Vec<StoredOffset>) -> GroupOffsets {
    let mut offsets = GroupOffsets::new();
    for row in rows {
        offsets.entry(row.topic).or_default().insert(
            row.partition,
            CommittedOffset {
                offset: row.offset,
                metadata: row.metadata,
                leader_epoch: row.leader_epoch,
            },
        );
    }
    offsets
}

/// FNV-1a of the group and a node id: each node's weight for the group. The same on
/// every node and every version of Ferry, unlike the standard library's hasher.
fn weight(group: &str, node_id: i32) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in group.bytes().chain(node_id.to_be_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The node rendezvous hashing gives `group` among `nodes` (none when empty).
pub(crate) fn pick<'n>(group: &str, nodes: &'n [Node]) -> Option<&'n Node> {
    nodes
        .iter()
        .max_by_key(|n| (weight(group, n.node_id), n.node_id))
}

impl Broker {
    /// Makes sure this node may answer for `group`: always in the local mode; in shared
    /// mode, while it holds the group's lease, taking it if it is free.
    /// [`GroupError::NotCoordinator`] when another live node holds it.
    pub async fn claim_group(&self, group: &str) -> std::result::Result<(), GroupError> {
        let Some(sh) = &self.shared else {
            return Ok(());
        };
        if sh.leases.group_epoch(group).is_some() {
            return Ok(());
        }
        // Names the coordinator refuses take no lease: a client cannot fill the table
        // of leases with them.
        if group.is_empty() || group.len() > GROUP_ID_BYTES_MAX {
            return Err(GroupError::InvalidGroupId);
        }
        let unavailable = |e: String| GroupError::Storage(e);
        let _one = sh.leases.claims.lock().await;
        if sh.leases.group_epoch(group).is_some() {
            return Ok(());
        }
        let node = sh.node_id();
        if node == 0 {
            return Err(unavailable(
                "this node has not joined the cluster yet".into(),
            ));
        }
        if lock(&sh.leases.groups).len() >= GROUPS_MAX {
            return Err(GroupError::TooManyGroups);
        }
        let epoch = match sh.log.metadata().take_lease(GROUP_LEASE, group, node).await {
            Ok(LeaseHolder::Taken { epoch }) => epoch,
            Ok(LeaseHolder::Other { .. }) => return Err(GroupError::NotCoordinator),
            Err(e) => return Err(unavailable(e.to_string())),
        };
        // The same tenure as before (the lease never moved, this node only stopped
        // trusting it for a while): keep the members.
        let same_tenure = lock(&sh.leases.groups)
            .get(group)
            .is_some_and(|(held, _)| *held == epoch);
        if !same_tenure {
            let rows = sh
                .log
                .metadata()
                .group_offsets(group)
                .await
                .map_err(|e| unavailable(e.to_string()))?;
            self.groups.adopt(group, group_offsets(rows)).await;
            tracing::info!(group, epoch, "Coordinating a consumer group.");
        }
        lock(&sh.leases.groups).insert(group.to_string(), (epoch, Instant::now()));
        Ok(())
    }

    /// Shared mode, on the group's coordinator: reads `group`'s committed offsets from
    /// Postgres into this node's copy, since a transaction another node coordinates
    /// may have committed some (they are committed in Postgres with the transaction).
    pub async fn refresh_group_offsets(&self, group: &str) -> Result<()> {
        let Some(sh) = &self.shared else {
            return Ok(());
        };
        if sh.leases.group_epoch(group).is_none() {
            return Ok(());
        }
        let rows = sh
            .log
            .metadata()
            .group_offsets(group)
            .await
            .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
        self.groups.replace_offsets(group, group_offsets(rows));
        Ok(())
    }

    /// The node that coordinates `group` in shared mode: the live holder of its lease,
    /// else the live node rendezvous hashing picks (which takes the lease at the first
    /// request). `None` in the local mode.
    pub async fn group_coordinator(&self, group: &str) -> Option<Result<Node>> {
        self.lease_coordinator(GROUP_LEASE, group).await
    }

    /// The node that answers for lease (`kind`, `name`) in shared mode: its live
    /// holder (read with where it answers from Postgres, so that one that joined since
    /// this node's last beat is named too), else the live node rendezvous hashing
    /// picks. `None` in the local mode.
    pub(crate) async fn lease_coordinator(&self, kind: &str, name: &str) -> Option<Result<Node>> {
        let sh = self.shared.as_ref()?;
        match sh.log.metadata().lease_holder_node(kind, name).await {
            Ok(Some(holder)) => Some(Ok(holder)),
            Ok(None) => {
                let nodes = self.shared_nodes().unwrap_or_default();
                Some(
                    pick(name, &nodes).cloned().ok_or_else(|| {
                        BrokerError::Unavailable("no live node is known yet".into())
                    }),
                )
            }
            Err(e) => Some(Err(BrokerError::Unavailable(e.to_string()))),
        }
    }

    /// Gives up the leases of groups this node has held for [`IDLE_GROUP_AFTER`] with
    /// neither members nor committed offsets (a client asked about a group that does
    /// not exist, or one that emptied), so that such names cannot fill the node's
    /// table of groups. A request for one of them takes the lease again.
    pub(crate) async fn release_idle_groups(&self) {
        let Some(sh) = &self.shared else {
            return;
        };
        let candidates: Vec<(String, i64)> = lock(&sh.leases.groups)
            .iter()
            .filter(|(_, (_, taken))| taken.elapsed() >= IDLE_GROUP_AFTER)
            .map(|(name, (epoch, _))| (name.clone(), *epoch))
            .collect();
        for (group, epoch) in candidates {
            if !self.groups.is_idle(&group).await {
                continue;
            }
            // Out of the table first, under the claims' lock: a request for the group
            // now waits for the claim that follows.
            let _one = sh.leases.claims.lock().await;
            if lock(&sh.leases.groups).remove(&group).is_none() {
                continue;
            }
            self.groups.release(&group).await;
            if let Err(e) = sh
                .log
                .metadata()
                .release_lease(GROUP_LEASE, &group, sh.node_id(), epoch)
                .await
            {
                tracing::debug!(group, error = %e, "Could not give up an idle group's lease; it is dropped once this node stops.");
            }
        }
    }

    /// Leaves the live nodes (shared mode, at a clean stop): this node's leases are
    /// free for others at once. Its groups are let go first, so nothing is answered
    /// under a lease another node may hold.
    pub async fn leave_shared(&self) {
        let Some(sh) = &self.shared else {
            return;
        };
        let id = sh.node_id();
        if id == 0 {
            return;
        }
        *lock(&sh.leases.last_beat) = None;
        self.settle_leases(None).await;
        match sh.log.leave(id).await {
            Ok(()) => tracing::info!(node_id = id, "Left the nodes of shared mode."),
            Err(e) => {
                tracing::warn!(error = %e, "Could not leave the nodes; others take this node's work once its beat ages.")
            }
        }
    }

    /// Groups with committed offsets that no live node coordinates and that this node
    /// would take (shared mode; empty in the local mode): ListGroups lists them here,
    /// so that a listing over every node names each group once.
    pub async fn unheld_groups_here(&self) -> Result<Vec<String>> {
        let Some(sh) = &self.shared else {
            return Ok(Vec::new());
        };
        let nodes = self.shared_nodes().unwrap_or_default();
        let me = sh.node_id();
        let names = sh
            .log
            .metadata()
            .unheld_groups()
            .await
            .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
        Ok(names
            .into_iter()
            .filter(|g| pick(g, &nodes).is_some_and(|n| n.node_id == me))
            .collect())
    }

    /// After a beat: lets go of the groups whose lease this node no longer holds under
    /// the epoch it knows (`held`: every lease Postgres said it held when asked at
    /// `asked`; a group taken since is left alone), or of every group when `held` is
    /// `None` (the beat failed and the leases can no longer be trusted).
    pub(crate) async fn settle_leases(&self, held: Option<(&ferry_shared::HeldLeases, Instant)>) {
        let Some(sh) = &self.shared else {
            return;
        };
        if held.is_none() && sh.leases.trusted() {
            return;
        }
        let _one = sh.leases.claims.lock().await;
        for group in take_lost(&sh.leases.groups, GROUP_LEASE, held) {
            self.groups.release(&group).await;
            tracing::info!(group, "No longer coordinating a consumer group.");
        }
        for name in take_lost(&sh.leases.subscriptions, SUBSCRIPTION_LEASE, held) {
            self.let_go_subscription(&name);
        }
        for txn_id in take_lost(&sh.leases.transactions, TRANSACTION_LEASE, held) {
            self.txns.drop_local(&txn_id);
            tracing::info!(transactional_id = %txn_id, "No longer coordinating a transactional id.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: i32) -> Node {
        Node {
            node_id: id,
            kafka_host: "h".into(),
            kafka_port: 9092,
            http_addr: None,
        }
    }

    #[test]
    fn rendezvous_moves_only_the_groups_of_a_node_that_left() {
        let three = [node(1), node(2), node(3)];
        let two = [node(1), node(3)];
        let groups: Vec<String> = (0..300).map(|i| format!("group-{i}")).collect();
        let mut on_each = HashMap::new();
        for g in &groups {
            let before = pick(g, &three).unwrap().node_id;
            *on_each.entry(before).or_insert(0) += 1;
            let after = pick(g, &two).unwrap().node_id;
            if before != 2 {
                assert_eq!(before, after, "{g} moved though its node stayed");
            }
        }
        for id in [1, 2, 3] {
            assert!(on_each[&id] > 50, "groups spread over nodes: {on_each:?}");
        }
        assert!(pick("g", &[]).is_none());
    }
}
