//! The coordinator: every group of the broker and their committed offsets. It checks
//! requests, finds or makes the group, hands the step to the group's state machine
//! ([`super::group`]), and keeps committed offsets in memory and in the store.
//!
//! Every call that changes a group takes the time it happens at (`now`): the Kafka
//! handlers and the broker's maintenance tick read the clock once and pass it in, and a
//! test drives time itself.
//!
//! Members live in memory: after a restart clients rejoin (their heartbeats get
//! "unknown member" and they join again). Committed offsets are durable (`store`).

use super::consumer::{
    ConsumerGroup, ConsumerGroupDescription, ConsumerHeartbeat, ConsumerHeartbeatResult,
};
use super::group::Group;
use super::store::{remove_offsets, GroupOffsets, OffsetStore, PartitionOffset};
use super::types::{
    FetchedOffset, GroupDescription, GroupError, GroupListing, GroupResult, GroupState,
    JoinRequest, JoinResult, LeavingMember, OffsetDeletion, Pending, SubscribedTopics, GROUPS_MAX,
    GROUP_ID_BYTES_MAX, MEMBERS_PER_GROUP_MAX, MEMBER_ID_BYTES_MAX, OFFSET_METADATA_BYTES_MAX,
    PROTOCOL_METADATA_BYTES_MAX, SESSION_TIMEOUT_MS_MAX, SESSION_TIMEOUT_MS_MIN,
};
use crate::error::Result;
use bytes::Bytes;
use ferry_log::sync::lock;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Mutex;

pub struct Coordinator {
    groups: Mutex<HashMap<String, Group>>,
    /// Groups of the next-generation protocol (KIP-848), with members. A group id is
    /// in one map or the other, never both.
    consumer_groups: std::sync::Mutex<HashMap<String, ConsumerGroup>>,
    offsets: Arc<dyn OffsetStore>,
    /// group → its committed offsets, as in the store.
    committed: std::sync::Mutex<BTreeMap<String, GroupOffsets>>,
    next_member: AtomicU64,
    /// Most groups held: with members, or with committed offsets ([`GROUPS_MAX`]).
    groups_max: usize,
}

fn valid_group_id(group_id: &str) -> GroupResult<()> {
    if group_id.is_empty() || group_id.len() > GROUP_ID_BYTES_MAX {
        Err(GroupError::InvalidGroupId)
    } else {
        Ok(())
    }
}

/// The checks of a JoinGroup that need no group.
fn check_join(request: &JoinRequest) -> GroupResult<()> {
    valid_group_id(&request.group)?;
    if !(SESSION_TIMEOUT_MS_MIN..=SESSION_TIMEOUT_MS_MAX).contains(&request.session_timeout_ms) {
        return Err(GroupError::InvalidSessionTimeout);
    }
    if request.protocols.is_empty() || request.protocol_type.is_empty() {
        return Err(GroupError::InconsistentProtocol);
    }
    let metadata_bytes: usize = request
        .protocols
        .iter()
        .map(|(name, metadata)| name.len() + metadata.len())
        .sum();
    let instance_bytes = request.group_instance_id.as_ref().map_or(0, String::len);
    if request.member_id.len() > MEMBER_ID_BYTES_MAX
        || instance_bytes > MEMBER_ID_BYTES_MAX
        || request.client_id.len() > MEMBER_ID_BYTES_MAX
        || metadata_bytes > PROTOCOL_METADATA_BYTES_MAX
    {
        return Err(GroupError::InconsistentProtocol);
    }
    Ok(())
}

/// Checks `group` after a change (debug builds): its invariants hold and its
/// generation did not go back.
fn checked(group: &Group, generation_before: i32) {
    if cfg!(debug_assertions) {
        group.check_invariants();
        assert!(
            group.generation >= generation_before,
            "generation went back from {generation_before} to {}",
            group.generation
        );
    }
}

/// A group Ferry holds no members of: empty, generation 0.
fn absent_group(group_id: &str) -> GroupDescription {
    GroupDescription {
        group: group_id.to_string(),
        state: GroupState::Empty,
        protocol_type: String::new(),
        protocol_name: String::new(),
        generation: 0,
        leader: String::new(),
        members: Vec::new(),
    }
}

/// Runs a store call off the async threads.
async fn blocking_store(call: impl FnOnce() -> Result<()> + Send + 'static) -> GroupResult<()> {
    tokio::task::spawn_blocking(call)
        .await
        .map_err(|e| GroupError::Storage(e.to_string()))?
        .map_err(|e| GroupError::Storage(e.to_string()))
}

impl Coordinator {
    pub fn new(offsets: Arc<dyn OffsetStore>) -> Result<Self> {
        let committed = offsets.load()?;
        Ok(Coordinator {
            groups: Mutex::new(HashMap::new()),
            consumer_groups: std::sync::Mutex::new(HashMap::new()),
            offsets,
            committed: std::sync::Mutex::new(committed),
            next_member: AtomicU64::new(0),
            groups_max: GROUPS_MAX,
        })
    }

    /// The coordinator with another limit on groups (for tests).
    #[doc(hidden)]
    pub fn with_groups_max(mut self, groups_max: usize) -> Self {
        self.groups_max = groups_max;
        self
    }

    /// A fresh member id: the client id's safe characters, the wall clock (so ids
    /// differ across restarts) and a counter.
    fn new_member_id(&self, client_id: &str) -> String {
        let sequence = self.next_member.fetch_add(1, AtomicOrdering::Relaxed);
        let prefix: String = client_id
            .chars()
            .filter(|ch| ch.is_ascii_alphanumeric() || *ch == '-' || *ch == '_')
            .take(64)
            .collect();
        format!(
            "{}-{:x}-{sequence}",
            if prefix.is_empty() { "member" } else { &prefix },
            crate::now_ms()
        )
    }

    /// JoinGroup at `now`: answers when the rebalance completes.
    pub async fn join(&self, request: JoinRequest, now: Instant) -> GroupResult<JoinResult> {
        self.begin_join(request, now).await.wait().await
    }

    /// JoinGroup at `now`, without waiting for the rebalance: the answer comes later
    /// through the returned [`Pending`].
    pub async fn begin_join(&self, request: JoinRequest, now: Instant) -> Pending<JoinResult> {
        if let Err(e) = check_join(&request) {
            return Pending::ready(Err(e));
        }
        // A group of the next-generation protocol takes no classic members.
        if lock(&self.consumer_groups).contains_key(&request.group) {
            return Pending::ready(Err(GroupError::InconsistentProtocol));
        }
        // Keep the metadata, not the whole request frame it points into.
        let mut request = request;
        request.protocols = request
            .protocols
            .into_iter()
            .map(|(name, metadata)| (name, Bytes::copy_from_slice(&metadata)))
            .collect();
        let mut groups = self.groups.lock().await;
        if !groups.contains_key(&request.group) && groups.len() >= self.groups_max {
            return Pending::ready(Err(GroupError::TooManyGroups));
        }
        let group = groups
            .entry(request.group.clone())
            .or_insert_with(|| Group::new(now));
        let generation_before = group.generation;
        let member_id = match self.admit(group, &request) {
            Ok(member_id) => member_id,
            Err(e) => return Pending::ready(Err(e)),
        };
        let answer = group.join(member_id, request, now);
        checked(group, generation_before);
        answer
    }

    /// Whether `request` may join `group`, and the member id it joins under.
    fn admit(&self, group: &Group, request: &JoinRequest) -> GroupResult<String> {
        if group.has_members() && group.protocol_type != request.protocol_type {
            return Err(GroupError::InconsistentProtocol);
        }
        // A newcomer must share a protocol with everyone already in the group; only
        // it is refused, the group carries on.
        if !group.others_accept(&request.member_id, &request.protocols) {
            return Err(GroupError::InconsistentProtocol);
        }
        let member_id = if let Some(instance) = &request.group_instance_id {
            // A static member: known by its instance id, so it needs no round trip
            // for a member id (Kafka hands it one at once).
            match group.static_member(instance) {
                _ if request.member_id.is_empty() => self.new_member_id(&request.client_id),
                Some(holder) if holder == request.member_id => request.member_id.clone(),
                Some(_) => return Err(GroupError::FencedInstanceId),
                None => return Err(GroupError::UnknownMember),
            }
        } else if request.member_id.is_empty() {
            let id = self.new_member_id(&request.client_id);
            if request.require_member_id {
                return Err(GroupError::MemberIdRequired(id));
            }
            id
        } else if group.has_member(&request.member_id) || request.require_member_id {
            // v4+: the id was handed out by MemberIdRequired just before.
            request.member_id.clone()
        } else {
            return Err(GroupError::UnknownMember);
        };
        // A static member taking over its instance id does not add a member.
        let takes_over = request
            .group_instance_id
            .as_deref()
            .is_some_and(|instance| group.static_member(instance).is_some());
        if !group.has_member(&member_id)
            && !takes_over
            && group.member_count() >= MEMBERS_PER_GROUP_MAX
        {
            return Err(GroupError::GroupFull);
        }
        Ok(member_id)
    }

    /// SyncGroup at `now`: the leader brings assignments; everyone gets their own.
    /// `instance` is the member's group instance id, if it sent one.
    pub async fn sync(
        &self,
        group_id: &str,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
        now: Instant,
    ) -> GroupResult<Bytes> {
        self.begin_sync(group_id, member_id, instance, generation, assignments, now)
            .await
            .wait()
            .await
    }

    /// SyncGroup at `now`, without waiting for the leader's assignments.
    pub async fn begin_sync(
        &self,
        group_id: &str,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
        now: Instant,
    ) -> Pending<Bytes> {
        let mut groups = self.groups.lock().await;
        let Some(group) = groups.get_mut(group_id) else {
            return Pending::ready(Err(GroupError::UnknownMember));
        };
        let generation_before = group.generation;
        let answer = group.sync(member_id, instance, generation, assignments, now);
        checked(group, generation_before);
        answer
    }

    /// Heartbeat at `now` (with the member's group instance id, if it sent one).
    pub async fn heartbeat(
        &self,
        group_id: &str,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> GroupResult<()> {
        let mut groups = self.groups.lock().await;
        let group = groups.get_mut(group_id).ok_or(GroupError::UnknownMember)?;
        let generation_before = group.generation;
        let result = group.heartbeat(member_id, instance, generation, now);
        checked(group, generation_before);
        result
    }

    /// LeaveGroup at `now` of each member (by member id, instance id or both), in
    /// one rebalance; the answer per member.
    pub async fn leave(
        &self,
        group_id: &str,
        members: &[LeavingMember],
        now: Instant,
    ) -> Vec<GroupResult<()>> {
        let mut groups = self.groups.lock().await;
        let Some(group) = groups.get_mut(group_id) else {
            return members
                .iter()
                .map(|_| Err(GroupError::UnknownMember))
                .collect();
        };
        let generation_before = group.generation;
        let results = group.leave(members, now);
        checked(group, generation_before);
        debug_assert_eq!(results.len(), members.len());
        results
    }

    /// One ConsumerGroupHeartbeat (KIP-848). `partitions` gives a topic's partition
    /// count (`None`: no such topic). A group id a classic group uses is refused with
    /// InconsistentProtocol, as the classic JoinGroup refuses one this protocol uses.
    pub async fn consumer_heartbeat(
        &self,
        heartbeat: &ConsumerHeartbeat,
        now: Instant,
        partitions: &(dyn Fn(&str) -> Option<u32> + Sync),
    ) -> GroupResult<ConsumerHeartbeatResult> {
        valid_group_id(&heartbeat.group)?;
        let classic = self
            .groups
            .lock()
            .await
            .get(&heartbeat.group)
            .is_some_and(|g| !g.is_forgettable());
        if classic {
            return Err(GroupError::InconsistentProtocol);
        }
        let mut groups = lock(&self.consumer_groups);
        if !groups.contains_key(&heartbeat.group) {
            if heartbeat.member_epoch != 0 {
                return Err(GroupError::UnknownMember);
            }
            let held = groups.len() + lock(&self.committed).len();
            if held >= self.groups_max && !self.has_offsets(&heartbeat.group) {
                return Err(GroupError::TooManyGroups);
            }
        }
        let group = groups.entry(heartbeat.group.clone()).or_default();
        let result = group.heartbeat(heartbeat, now, partitions, || {
            self.new_member_id(&heartbeat.client_id)
        });
        if group.is_empty() {
            groups.remove(&heartbeat.group);
        }
        result
    }

    /// The groups of the next-generation protocol with members: (group, state).
    pub fn consumer_group_listings(&self) -> Vec<(String, &'static str)> {
        let mut out: Vec<_> = lock(&self.consumer_groups)
            .iter()
            .map(|(id, g)| (id.clone(), g.describe(id).state))
            .collect();
        out.sort();
        out
    }

    /// A group of the next-generation protocol, if it has members.
    pub fn describe_consumer_group(&self, group_id: &str) -> Option<ConsumerGroupDescription> {
        lock(&self.consumer_groups)
            .get(group_id)
            .map(|g| g.describe(group_id))
    }

    /// Drops members whose session ran out by `now` and ends overdue rebalances.
    /// Call often.
    pub async fn tick(&self, now: Instant) {
        {
            let mut consumer_groups = lock(&self.consumer_groups);
            for group in consumer_groups.values_mut() {
                group.expire(now);
            }
            consumer_groups.retain(|_, group| !group.is_empty());
        }
        let mut groups = self.groups.lock().await;
        for (group_id, group) in groups.iter_mut() {
            let generation_before = group.generation;
            group.expire(group_id, now);
            checked(group, generation_before);
        }
        // An empty group needs no memory: its committed offsets stay in the store, and
        // list and describe find it there.
        groups.retain(|_, group| !group.is_forgettable());
    }

    fn has_offsets(&self, group_id: &str) -> bool {
        lock(&self.committed).contains_key(group_id)
    }

    /// The checks of a commit to a classic group (or to a group with no members).
    async fn check_classic_commit(
        &self,
        group_id: &str,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
    ) -> GroupResult<()> {
        match self.groups.lock().await.get(group_id) {
            Some(group) => group.check_commit(member_id, instance, generation),
            None if !member_id.is_empty() || instance.is_some() => Err(GroupError::UnknownMember),
            None => {
                // A commit from outside any generation may name a new group: those
                // count against the same limit, or clients could add groups (and their
                // offsets, and their metrics series) without end.
                let committed = lock(&self.committed);
                if !committed.contains_key(group_id) && committed.len() >= self.groups_max {
                    return Err(GroupError::TooManyGroups);
                }
                Ok(())
            }
        }
    }

    /// OffsetCommit. `member_id` empty and `generation` -1 is a commit from outside any
    /// generation, allowed while the group has no members. A commit naming a group
    /// instance id (`instance`) must come from the static member holding it.
    pub async fn commit(
        &self,
        group_id: &str,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
        offsets: Vec<PartitionOffset>,
    ) -> GroupResult<()> {
        valid_group_id(group_id)?;
        let consumer_group = lock(&self.consumer_groups)
            .get(group_id)
            .map(|g| g.check_commit(member_id, generation));
        if let Some(check) = consumer_group {
            check?;
        } else {
            self.check_classic_commit(group_id, member_id, instance, generation)
                .await?;
        }
        let too_large = offsets.iter().any(|offset| {
            offset
                .committed
                .metadata
                .as_ref()
                .is_some_and(|metadata| metadata.len() > OFFSET_METADATA_BYTES_MAX)
        });
        if too_large {
            return Err(GroupError::MetadataTooLarge);
        }
        if offsets.is_empty() {
            return Ok(());
        }
        let store = Arc::clone(&self.offsets);
        let (group, batch) = (group_id.to_string(), offsets.clone());
        blocking_store(move || store.commit(&group, &batch)).await?;
        let mut committed = lock(&self.committed);
        let group_offsets = committed.entry(group_id.to_string()).or_default();
        for offset in offsets {
            group_offsets
                .entry(offset.topic)
                .or_default()
                .insert(offset.partition, offset.committed);
        }
        Ok(())
    }

    /// Whether a member of `group_id` may commit offsets (TxnOffsetCommit v3+ names the
    /// member): as OffsetCommit checks it; a group with no members takes commits from
    /// outside any generation (empty member id, generation -1).
    pub async fn check_member(
        &self,
        group_id: &str,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
    ) -> GroupResult<()> {
        valid_group_id(group_id)?;
        match self.groups.lock().await.get(group_id) {
            Some(group) => group.check_commit(member_id, instance, generation),
            None if !member_id.is_empty() || instance.is_some() => Err(GroupError::UnknownMember),
            None => Ok(()),
        }
    }

    /// Commits offsets a transaction staged (TxnOffsetCommit), as its commit completes:
    /// no member or generation is checked (the group may have moved on since; Kafka
    /// commits them all the same).
    pub async fn commit_transactional(
        &self,
        group_id: &str,
        offsets: Vec<PartitionOffset>,
    ) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let store = Arc::clone(&self.offsets);
        let (group, batch) = (group_id.to_string(), offsets.clone());
        crate::broker::blocking(move || store.commit(&group, &batch)).await?;
        let mut committed = lock(&self.committed);
        let group_offsets = committed.entry(group_id.to_string()).or_default();
        for offset in offsets {
            group_offsets
                .entry(offset.topic)
                .or_default()
                .insert(offset.partition, offset.committed);
        }
        Ok(())
    }

    /// Committed offsets of a group: of the given partitions, or of every one.
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        wanted: Option<&[(String, Vec<u32>)]>,
    ) -> Vec<FetchedOffset> {
        let committed = lock(&self.committed);
        let group_offsets = committed.get(group_id);
        let Some(wanted) = wanted else {
            return group_offsets
                .into_iter()
                .flat_map(|by_topic| by_topic.iter())
                .flat_map(|(topic, partitions)| {
                    partitions
                        .iter()
                        .map(move |(partition, committed)| FetchedOffset {
                            topic: topic.clone(),
                            partition: *partition,
                            committed: Some(committed.clone()),
                        })
                })
                .collect();
        };
        wanted
            .iter()
            .flat_map(|(topic, partitions)| {
                partitions.iter().map(move |partition| {
                    let committed = group_offsets
                        .and_then(|by_topic| by_topic.get(topic))
                        .and_then(|by_partition| by_partition.get(partition))
                        .cloned();
                    FetchedOffset {
                        topic: topic.clone(),
                        partition: *partition,
                        committed,
                    }
                })
            })
            .collect()
    }

    /// Every group in memory, and every group with committed offsets, by name.
    pub async fn list(&self) -> Vec<GroupListing> {
        let groups = self.groups.lock().await;
        let mut listings: Vec<GroupListing> = groups
            .iter()
            .map(|(group_id, group)| GroupListing {
                group: group_id.clone(),
                protocol_type: group.protocol_type.clone(),
                state: group.state,
            })
            .collect();
        let committed = lock(&self.committed);
        for group_id in committed.keys() {
            if !groups.contains_key(group_id) {
                listings.push(GroupListing {
                    group: group_id.clone(),
                    protocol_type: "consumer".to_string(),
                    state: GroupState::Empty,
                });
            }
        }
        listings.sort_by(|a, b| a.group.cmp(&b.group));
        listings
    }

    pub async fn describe(&self, group_id: &str) -> GroupDescription {
        let groups = self.groups.lock().await;
        match groups.get(group_id) {
            Some(group) => group.describe(group_id),
            None => absent_group(group_id),
        }
    }

    /// The group as [`Coordinator::describe`] gives it, or `None` when Ferry knows
    /// nothing of it: neither in memory nor with committed offsets (the groups that
    /// [`Coordinator::list`] lists are exactly those found).
    pub async fn find(&self, group_id: &str) -> Option<GroupDescription> {
        let groups = self.groups.lock().await;
        if let Some(group) = groups.get(group_id) {
            return Some(group.describe(group_id));
        }
        drop(groups);
        self.has_offsets(group_id).then(|| absent_group(group_id))
    }

    /// Deletes a group with no members, with its committed offsets.
    pub async fn delete(&self, group_id: &str) -> GroupResult<()> {
        let mut groups = self.groups.lock().await;
        let known = groups.contains_key(group_id) || self.has_offsets(group_id);
        if !known {
            return Err(GroupError::GroupNotFound);
        }
        if groups.get(group_id).is_some_and(Group::has_members) {
            return Err(GroupError::NonEmptyGroup);
        }
        let store = Arc::clone(&self.offsets);
        let group = group_id.to_string();
        blocking_store(move || store.delete_group(&group)).await?;
        lock(&self.committed).remove(group_id);
        groups.remove(group_id);
        Ok(())
    }

    /// OffsetDelete: drops the committed offsets of `partitions` (topic, partition),
    /// except those of topics a member of the group reads, as `subscribed` tells from
    /// the members' metadata, which are kept and answered
    /// [`OffsetDeletion::Subscribed`]. A group with members whose topics cannot be told
    /// is refused whole ([`GroupError::NonEmptyGroup`]), an unknown one with
    /// [`GroupError::GroupNotFound`]. Decided and done under the groups' lock, so no
    /// member joins in between.
    pub async fn delete_offsets(
        &self,
        group_id: &str,
        partitions: &[(String, u32)],
        subscribed: SubscribedTopics<'_>,
    ) -> GroupResult<Vec<OffsetDeletion>> {
        valid_group_id(group_id)?;
        let groups = self.groups.lock().await;
        let group = groups.get(group_id);
        if group.is_none() && !self.has_offsets(group_id) {
            return Err(GroupError::GroupNotFound);
        }
        let reading = match group.filter(|g| g.has_members()) {
            None => Default::default(),
            Some(group) => {
                let (protocol_type, metadata) = group.member_metadata();
                subscribed(protocol_type, &metadata).ok_or(GroupError::NonEmptyGroup)?
            }
        };
        let outcome: Vec<OffsetDeletion> = partitions
            .iter()
            .map(|(topic, _)| {
                if reading.contains(topic) {
                    OffsetDeletion::Subscribed
                } else {
                    OffsetDeletion::Deleted
                }
            })
            .collect();
        let doomed: Vec<(String, u32)> = partitions
            .iter()
            .zip(&outcome)
            .filter(|(_, o)| **o == OffsetDeletion::Deleted)
            .map(|(p, _)| p.clone())
            .collect();
        let held = {
            let committed = lock(&self.committed);
            committed.get(group_id).is_some_and(|by_topic| {
                doomed.iter().any(|(t, p)| {
                    by_topic
                        .get(t)
                        .is_some_and(|by_partition| by_partition.contains_key(p))
                })
            })
        };
        if held {
            let store = Arc::clone(&self.offsets);
            let (group, batch) = (group_id.to_string(), doomed.clone());
            blocking_store(move || store.delete_offsets(&group, &batch)).await?;
            remove_offsets(&mut lock(&self.committed), group_id, &doomed);
        }
        drop(groups);
        Ok(outcome)
    }

    /// Takes over `group_id` with the committed offsets another node left (shared mode,
    /// when this node takes the group's lease): whatever this node held of it before
    /// (members of an earlier tenure, offsets since changed) is dropped, so its clients
    /// join again as after a restart.
    pub async fn adopt(&self, group_id: &str, offsets: GroupOffsets) {
        let mut groups = self.groups.lock().await;
        groups.remove(group_id);
        lock(&self.consumer_groups).remove(group_id);
        let mut committed = lock(&self.committed);
        if offsets.is_empty() {
            committed.remove(group_id);
        } else {
            committed.insert(group_id.to_string(), offsets);
        }
    }

    /// Replaces `group_id`'s committed offsets with `offsets` as read from where they
    /// are kept (shared mode, before OffsetFetch), keeping its members.
    pub fn replace_offsets(&self, group_id: &str, offsets: GroupOffsets) {
        let mut committed = lock(&self.committed);
        if offsets.is_empty() {
            committed.remove(group_id);
        } else {
            committed.insert(group_id.to_string(), offsets);
        }
    }

    /// True when `group_id` has neither members (of either protocol) nor committed
    /// offsets here: nothing of it would be lost by letting it go.
    pub async fn is_idle(&self, group_id: &str) -> bool {
        let groups = self.groups.lock().await;
        !groups.get(group_id).is_some_and(Group::has_members)
            && !lock(&self.consumer_groups).contains_key(group_id)
            && !self.has_offsets(group_id)
    }

    /// Lets go of `group_id` (shared mode, when another node took its lease): its
    /// members and offsets are no longer this node's to answer for. Waiting joins and
    /// syncs are answered REBALANCE_IN_PROGRESS, and their clients find the new
    /// coordinator.
    pub async fn release(&self, group_id: &str) {
        let mut groups = self.groups.lock().await;
        groups.remove(group_id);
        lock(&self.consumer_groups).remove(group_id);
        lock(&self.committed).remove(group_id);
    }

    /// Forgets a deleted topic's committed offsets.
    pub fn forget_topic(&self, topic: &str) -> Result<()> {
        self.offsets.delete_topic(topic)?;
        for group_offsets in lock(&self.committed).values_mut() {
            group_offsets.remove(topic);
        }
        Ok(())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::groups::store::{CommittedOffset, FileOffsetStore, PartitionOffset};

    /// A commit of offset `o` for partition 0 of topic `t`.
    pub(in crate::groups) fn offset(o: i64) -> Vec<PartitionOffset> {
        vec![PartitionOffset {
            topic: "t".into(),
            partition: 0,
            committed: CommittedOffset {
                offset: o,
                metadata: None,
                leader_epoch: None,
            },
        }]
    }

    #[tokio::test]
    async fn commits_from_outside_a_generation_cannot_add_groups_past_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(FileOffsetStore::open(dir.path()).unwrap());
        let c = Coordinator::new(store).unwrap().with_groups_max(2);
        c.commit("a", "", None, -1, offset(1)).await.unwrap();
        c.commit("b", "", None, -1, offset(1)).await.unwrap();
        assert_eq!(
            c.commit("c", "", None, -1, offset(1)).await,
            Err(GroupError::TooManyGroups)
        );
        // Groups already held keep committing.
        c.commit("a", "", None, -1, offset(5)).await.unwrap();
        let listed: Vec<String> = c.list().await.into_iter().map(|g| g.group).collect();
        assert_eq!(listed, ["a", "b"]);
    }

    fn at(topic: &str, partition: u32, o: i64) -> PartitionOffset {
        PartitionOffset {
            topic: topic.into(),
            partition,
            committed: CommittedOffset {
                offset: o,
                metadata: None,
                leader_epoch: Some(4),
            },
        }
    }

    /// A dynamic member of group `group` that reads topic `t`.
    pub(in crate::groups) fn member_reading(group: &str) -> JoinRequest {
        JoinRequest {
            group: group.into(),
            member_id: String::new(),
            group_instance_id: None,
            client_id: "c".into(),
            client_host: "127.0.0.1".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 10_000,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"reads t"))],
            require_member_id: false,
        }
    }

    #[tokio::test]
    async fn offsets_are_deleted_except_those_of_topics_a_member_reads() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(FileOffsetStore::open(dir.path()).unwrap());
        let c = Coordinator::new(store).unwrap();
        let parts = [("t".to_string(), 0), ("u".to_string(), 0)];
        let none = |_: &str, _: &[Bytes]| None;
        assert_eq!(
            c.delete_offsets("nobody", &parts, &none).await,
            Err(GroupError::GroupNotFound)
        );
        c.commit(
            "g",
            "",
            None,
            -1,
            vec![at("t", 0, 5), at("u", 0, 6), at("u", 1, 7)],
        )
        .await
        .unwrap();
        let _joining = c.begin_join(member_reading("g"), Instant::now()).await;
        // Members whose topics cannot be told: nothing is touched.
        assert_eq!(
            c.delete_offsets("g", &parts, &none).await,
            Err(GroupError::NonEmptyGroup)
        );
        let reads_t = |kind: &str, metadata: &[Bytes]| {
            assert_eq!(kind, "consumer");
            assert_eq!(metadata, [Bytes::from_static(b"reads t")]);
            Some(["t".to_string()].into_iter().collect())
        };
        assert_eq!(
            c.delete_offsets("g", &parts, &reads_t).await,
            Ok(vec![OffsetDeletion::Subscribed, OffsetDeletion::Deleted])
        );
        let left: Vec<(String, u32)> = c
            .fetch_offsets("g", None)
            .into_iter()
            .map(|f| (f.topic, f.partition))
            .collect();
        assert_eq!(left, [("t".to_string(), 0), ("u".to_string(), 1)]);
        // Durable: a coordinator on the same store finds the same.
        let again = Coordinator::new(Arc::new(FileOffsetStore::open(dir.path()).unwrap())).unwrap();
        assert_eq!(again.fetch_offsets("g", None).len(), 2);
        assert_eq!(
            again.fetch_offsets("g", None)[0]
                .committed
                .as_ref()
                .unwrap()
                .leader_epoch,
            Some(4)
        );
    }

    #[tokio::test]
    async fn a_group_without_members_loses_any_offset_and_then_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let c = Coordinator::new(Arc::new(FileOffsetStore::open(dir.path()).unwrap())).unwrap();
        c.commit("g", "", None, -1, vec![at("t", 0, 5)])
            .await
            .unwrap();
        let never = |_: &str, _: &[Bytes]| -> Option<std::collections::HashSet<String>> {
            panic!("an empty group has no subscriptions to read")
        };
        let out = c
            .delete_offsets("g", &[("t".into(), 0), ("t".into(), 9)], &never)
            .await;
        assert_eq!(
            out,
            Ok(vec![OffsetDeletion::Deleted, OffsetDeletion::Deleted])
        );
        assert!(
            c.find("g").await.is_none(),
            "no members, no offsets: unknown"
        );
    }
}
