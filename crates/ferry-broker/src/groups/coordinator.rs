//! The group state machine.
//!
//! ```text
//!            join                 every member joined           leader's sync
//!   Empty ─────────► Preparing ─────────────────────► Completing ─────────────► Stable
//!     ▲              Rebalance   (or rebalance timeout)  Rebalance                 │
//!     │                  ▲                                  │  join, leave,        │
//!     └── last member ───┴──────────────────────────────────┴── session expiry ◄───┘
//!         leaves
//! ```
//!
//! A JoinGroup answer waits until every member has (re)joined, or the rebalance
//! timeout passes (members that did not rejoin are dropped). A group that was empty
//! waits a short initial delay so that members starting together share one rebalance.
//! A SyncGroup answer waits for the leader's assignments. Waiting is bounded: every
//! wait ends by the rebalance timeout, checked by [`Coordinator::tick`].
//!
//! Members live in memory: after a restart clients rejoin (their heartbeats get
//! "unknown member" and they join again). Committed offsets are durable (`store`).

use super::store::{CommittedOffset, OffsetStore};
use crate::error::Result;
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Mutex};

/// How long a group that was empty waits for more members before its first rebalance.
pub const INITIAL_REBALANCE_DELAY_MS: u64 = 300;
/// Limits on client-chosen timeouts, named with their unit last.
pub const SESSION_TIMEOUT_MS_MIN: i32 = 1_000;
pub const SESSION_TIMEOUT_MS_MAX: i32 = 300_000;
/// Members of one group, and groups, at most.
pub const MEMBERS_PER_GROUP_MAX: usize = 1_000;
pub const GROUPS_MAX: usize = 10_000;
/// Largest metadata string stored with a committed offset (as Kafka's default).
pub const OFFSET_METADATA_BYTES_MAX: usize = 4096;
/// Largest member id, client id and protocol metadata a member may send.
pub const MEMBER_ID_BYTES_MAX: usize = 512;
pub const PROTOCOL_METADATA_BYTES_MAX: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupError {
    UnknownMember,
    IllegalGeneration,
    RebalanceInProgress,
    /// The member must join again with this id (Kafka's MEMBER_ID_REQUIRED).
    MemberIdRequired(String),
    InconsistentProtocol,
    InvalidSessionTimeout,
    GroupNotFound,
    NonEmptyGroup,
    InvalidGroupId,
    /// The group has `MEMBERS_PER_GROUP_MAX` members.
    GroupFull,
    /// `GROUPS_MAX` groups have members; try again later.
    TooManyGroups,
    /// Offset metadata over `OFFSET_METADATA_BYTES_MAX`.
    MetadataTooLarge,
    Storage(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub group: String,
    /// Empty for a member joining for the first time.
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    /// (protocol name, member metadata), in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    /// A new member must first ask for an id (JoinGroup v4 and later).
    pub require_member_id: bool,
}

#[derive(Debug, Clone, Default)]
pub struct JoinResult {
    pub generation: i32,
    pub protocol_type: String,
    pub protocol_name: String,
    pub leader: String,
    pub member_id: String,
    /// For the leader only: every member with its metadata for the chosen protocol.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

#[derive(Debug, Clone)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone)]
pub struct GroupDescription {
    pub group: String,
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol_name: String,
    pub members: Vec<MemberDescription>,
}

struct Member {
    group_instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    last_seen: Instant,
    join_waiter: Option<oneshot::Sender<std::result::Result<JoinResult, GroupError>>>,
    sync_waiter: Option<oneshot::Sender<std::result::Result<Bytes, GroupError>>>,
}

struct Group {
    state: GroupState,
    generation: i32,
    protocol_type: String,
    protocol_name: String,
    leader: String,
    members: BTreeMap<String, Member>,
    /// PreparingRebalance: when to complete regardless; CompletingRebalance: when to give up on the leader.
    deadline: Instant,
    /// PreparingRebalance of a group that was empty: not before this.
    not_before: Instant,
}

impl Group {
    fn new() -> Self {
        let now = Instant::now();
        Group {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: String::new(),
            protocol_name: String::new(),
            leader: String::new(),
            members: BTreeMap::new(),
            deadline: now,
            not_before: now,
        }
    }

    fn rebalance_timeout(&self) -> Duration {
        self.members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::from_secs(30))
    }

    /// Starts a rebalance: members must join again.
    fn prepare(&mut self, now: Instant) {
        if self.state == GroupState::Empty {
            self.not_before = now + Duration::from_millis(INITIAL_REBALANCE_DELAY_MS);
        } else {
            self.not_before = now;
        }
        if self.state != GroupState::PreparingRebalance {
            self.deadline = now + self.rebalance_timeout();
        }
        // Members waiting for an assignment of the old generation learn it is gone.
        for m in self.members.values_mut() {
            if let Some(w) = m.sync_waiter.take() {
                let _ = w.send(Err(GroupError::RebalanceInProgress));
            }
        }
        self.state = GroupState::PreparingRebalance;
    }

    /// Completes the join phase if every member has joined (or time is up).
    fn maybe_complete_join(&mut self, now: Instant) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let all_joined = self.members.values().all(|m| m.join_waiter.is_some());
        if !((all_joined && now >= self.not_before) || now >= self.deadline) {
            return;
        }
        self.members.retain(|_, m| m.join_waiter.is_some());
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.generation += 1;
            return;
        }
        // The protocol every member supports, in the leader's order of preference.
        if !self.members.contains_key(&self.leader) {
            self.leader = self.members.keys().next().cloned().unwrap_or_default();
        }
        let leader_protocols: Vec<String> = self.members[&self.leader]
            .protocols
            .iter()
            .map(|(n, _)| n.clone())
            .collect();
        let chosen = leader_protocols.into_iter().find(|p| {
            self.members
                .values()
                .all(|m| m.protocols.iter().any(|(n, _)| n == p))
        });
        let Some(protocol) = chosen else {
            for m in self.members.values_mut() {
                if let Some(w) = m.join_waiter.take() {
                    let _ = w.send(Err(GroupError::InconsistentProtocol));
                }
            }
            self.members.clear();
            self.state = GroupState::Empty;
            return;
        };
        self.generation += 1;
        self.protocol_name = protocol.clone();
        self.state = GroupState::CompletingRebalance;
        self.deadline = now + self.rebalance_timeout();
        let roster: Vec<(String, Option<String>, Bytes)> = self
            .members
            .iter()
            .map(|(id, m)| {
                let meta = m
                    .protocols
                    .iter()
                    .find(|(n, _)| *n == protocol)
                    .map(|(_, b)| b.clone())
                    .unwrap_or_default();
                (id.clone(), m.group_instance_id.clone(), meta)
            })
            .collect();
        for (id, m) in self.members.iter_mut() {
            m.last_seen = now;
            m.assignment = Bytes::new();
            if let Some(w) = m.join_waiter.take() {
                let _ = w.send(Ok(JoinResult {
                    generation: self.generation,
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: protocol.clone(),
                    leader: self.leader.clone(),
                    member_id: id.clone(),
                    members: if *id == self.leader {
                        roster.clone()
                    } else {
                        Vec::new()
                    },
                }));
            }
        }
    }

    fn remove_member(&mut self, id: &str, now: Instant) {
        if let Some(mut m) = self.members.remove(id) {
            if let Some(w) = m.join_waiter.take() {
                let _ = w.send(Err(GroupError::UnknownMember));
            }
            if let Some(w) = m.sync_waiter.take() {
                let _ = w.send(Err(GroupError::UnknownMember));
            }
        }
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.leader.clear();
        } else {
            self.prepare(now);
            self.maybe_complete_join(now);
        }
    }
}

pub struct Coordinator {
    groups: Mutex<HashMap<String, Group>>,
    offsets: std::sync::Arc<dyn OffsetStore>,
    committed: std::sync::Mutex<BTreeMap<String, super::store::GroupOffsets>>,
    next_member: AtomicU64,
}

fn valid_group_id(g: &str) -> std::result::Result<(), GroupError> {
    if g.is_empty() || g.len() > 255 {
        Err(GroupError::InvalidGroupId)
    } else {
        Ok(())
    }
}

impl Coordinator {
    pub fn new(offsets: std::sync::Arc<dyn OffsetStore>) -> Result<Self> {
        let committed = offsets.load()?;
        Ok(Coordinator {
            groups: Mutex::new(HashMap::new()),
            offsets,
            committed: std::sync::Mutex::new(committed),
            next_member: AtomicU64::new(0),
        })
    }

    fn new_member_id(&self, client_id: &str) -> String {
        let n = self.next_member.fetch_add(1, Ordering::Relaxed);
        let prefix: String = client_id
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .take(64)
            .collect();
        format!(
            "{}-{:x}-{n}",
            if prefix.is_empty() { "member" } else { &prefix },
            crate::now_ms()
        )
    }

    /// JoinGroup: answers when the rebalance completes.
    pub async fn join(&self, req: JoinRequest) -> std::result::Result<JoinResult, GroupError> {
        valid_group_id(&req.group)?;
        if !(SESSION_TIMEOUT_MS_MIN..=SESSION_TIMEOUT_MS_MAX).contains(&req.session_timeout_ms) {
            return Err(GroupError::InvalidSessionTimeout);
        }
        if req.protocols.is_empty() || req.protocol_type.is_empty() {
            return Err(GroupError::InconsistentProtocol);
        }
        if req.member_id.len() > MEMBER_ID_BYTES_MAX
            || req.client_id.len() > MEMBER_ID_BYTES_MAX
            || req
                .protocols
                .iter()
                .map(|(n, m)| n.len() + m.len())
                .sum::<usize>()
                > PROTOCOL_METADATA_BYTES_MAX
        {
            return Err(GroupError::InconsistentProtocol);
        }
        // Keep the metadata, not the whole request frame it points into.
        let mut req = req;
        req.protocols = req
            .protocols
            .into_iter()
            .map(|(n, m)| (n, Bytes::copy_from_slice(&m)))
            .collect();
        let now = Instant::now();
        let rx = {
            let mut groups = self.groups.lock().await;
            if !groups.contains_key(&req.group) && groups.len() >= GROUPS_MAX {
                return Err(GroupError::TooManyGroups);
            }
            let group = groups.entry(req.group.clone()).or_insert_with(Group::new);
            if !group.members.is_empty() && group.protocol_type != req.protocol_type {
                return Err(GroupError::InconsistentProtocol);
            }
            // A newcomer must share a protocol with everyone already in the group; only
            // it is refused, the group carries on.
            let others: Vec<&Member> = group
                .members
                .iter()
                .filter(|(id, _)| **id != req.member_id)
                .map(|(_, m)| m)
                .collect();
            if !others.is_empty()
                && !req.protocols.iter().any(|(name, _)| {
                    others
                        .iter()
                        .all(|m| m.protocols.iter().any(|(n, _)| n == name))
                })
            {
                return Err(GroupError::InconsistentProtocol);
            }
            let member_id = if req.member_id.is_empty() {
                let id = self.new_member_id(&req.client_id);
                if req.require_member_id {
                    return Err(GroupError::MemberIdRequired(id));
                }
                id
            } else if group.members.contains_key(&req.member_id) || req.require_member_id {
                // v4+: the id was handed out by MemberIdRequired just before.
                req.member_id.clone()
            } else {
                return Err(GroupError::UnknownMember);
            };
            if !group.members.contains_key(&member_id)
                && group.members.len() >= MEMBERS_PER_GROUP_MAX
            {
                return Err(GroupError::GroupFull);
            }
            group.protocol_type = req.protocol_type.clone();
            let (tx, rx) = oneshot::channel();
            let known = group.members.contains_key(&member_id);
            let unchanged = known
                && group.state == GroupState::Stable
                && group.members[&member_id].protocols == req.protocols;
            if unchanged && group.leader != member_id {
                // A follower rejoining with nothing new: hand back the current generation.
                let result = JoinResult {
                    generation: group.generation,
                    protocol_type: group.protocol_type.clone(),
                    protocol_name: group.protocol_name.clone(),
                    leader: group.leader.clone(),
                    member_id: member_id.clone(),
                    members: Vec::new(),
                };
                return Ok(result);
            }
            let member = group
                .members
                .entry(member_id.clone())
                .or_insert_with(|| Member {
                    group_instance_id: req.group_instance_id.clone(),
                    client_id: req.client_id.clone(),
                    client_host: req.client_host.clone(),
                    session_timeout: Duration::ZERO,
                    rebalance_timeout: Duration::ZERO,
                    protocols: Vec::new(),
                    assignment: Bytes::new(),
                    last_seen: now,
                    join_waiter: None,
                    sync_waiter: None,
                });
            member.session_timeout = Duration::from_millis(req.session_timeout_ms as u64);
            member.rebalance_timeout =
                Duration::from_millis(req.rebalance_timeout_ms.max(req.session_timeout_ms) as u64);
            member.protocols = req.protocols.clone();
            member.last_seen = now;
            if let Some(old) = member.join_waiter.replace(tx) {
                let _ = old.send(Err(GroupError::RebalanceInProgress));
            }
            if group.state != GroupState::PreparingRebalance {
                group.prepare(now);
            }
            group.maybe_complete_join(now);
            rx
        };
        match rx.await {
            Ok(r) => r,
            Err(_) => Err(GroupError::RebalanceInProgress),
        }
    }

    /// SyncGroup: the leader brings assignments; everyone gets their own.
    pub async fn sync(
        &self,
        group_id: &str,
        member_id: &str,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
    ) -> std::result::Result<Bytes, GroupError> {
        let rx = {
            let mut groups = self.groups.lock().await;
            let group = groups.get_mut(group_id).ok_or(GroupError::UnknownMember)?;
            if !group.members.contains_key(member_id) {
                return Err(GroupError::UnknownMember);
            }
            if generation != group.generation {
                return Err(GroupError::IllegalGeneration);
            }
            match group.state {
                GroupState::Empty | GroupState::PreparingRebalance => {
                    return Err(GroupError::RebalanceInProgress)
                }
                GroupState::Stable => return Ok(group.members[member_id].assignment.clone()),
                GroupState::CompletingRebalance => {}
            }
            if member_id == group.leader {
                let given: HashMap<String, Bytes> = assignments.into_iter().collect();
                for (id, m) in group.members.iter_mut() {
                    m.assignment = given.get(id).cloned().unwrap_or_default();
                    if let Some(w) = m.sync_waiter.take() {
                        let _ = w.send(Ok(m.assignment.clone()));
                    }
                }
                group.state = GroupState::Stable;
                return Ok(group.members[member_id].assignment.clone());
            }
            let (tx, rx) = oneshot::channel();
            if let Some(m) = group.members.get_mut(member_id) {
                m.sync_waiter = Some(tx);
                m.last_seen = Instant::now();
            }
            rx
        };
        match rx.await {
            Ok(r) => r,
            Err(_) => Err(GroupError::RebalanceInProgress),
        }
    }

    pub async fn heartbeat(
        &self,
        group_id: &str,
        member_id: &str,
        generation: i32,
    ) -> std::result::Result<(), GroupError> {
        let mut groups = self.groups.lock().await;
        let group = groups.get_mut(group_id).ok_or(GroupError::UnknownMember)?;
        let state = group.state;
        let current = group.generation;
        let m = group
            .members
            .get_mut(member_id)
            .ok_or(GroupError::UnknownMember)?;
        m.last_seen = Instant::now();
        match state {
            GroupState::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            _ if generation != current => Err(GroupError::IllegalGeneration),
            _ => Ok(()),
        }
    }

    /// LeaveGroup for each member id; the answer per member.
    pub async fn leave(
        &self,
        group_id: &str,
        members: &[String],
    ) -> Vec<std::result::Result<(), GroupError>> {
        let mut groups = self.groups.lock().await;
        let now = Instant::now();
        let Some(group) = groups.get_mut(group_id) else {
            return members
                .iter()
                .map(|_| Err(GroupError::UnknownMember))
                .collect();
        };
        members
            .iter()
            .map(|id| {
                if group.members.contains_key(id) {
                    group.remove_member(id, now);
                    Ok(())
                } else {
                    Err(GroupError::UnknownMember)
                }
            })
            .collect()
    }

    /// Drops members whose session ran out and ends overdue rebalances. Call often.
    pub async fn tick(&self) {
        let now = Instant::now();
        let mut groups = self.groups.lock().await;
        for (name, group) in groups.iter_mut() {
            let expired: Vec<String> = group
                .members
                .iter()
                .filter(|(_, m)| {
                    m.join_waiter.is_none()
                        && m.sync_waiter.is_none()
                        && now.duration_since(m.last_seen) > m.session_timeout
                })
                .map(|(id, _)| id.clone())
                .collect();
            for id in expired {
                tracing::info!(group = %name, member = %id, "A group member's session expired; rebalancing.");
                group.remove_member(&id, now);
            }
            match group.state {
                GroupState::PreparingRebalance => group.maybe_complete_join(now),
                GroupState::CompletingRebalance if now >= group.deadline => {
                    tracing::info!(group = %name, "The group leader sent no assignment in time; rebalancing.");
                    group.prepare(now);
                }
                _ => {}
            }
        }
        // An empty group needs no memory: its committed offsets stay in the store, and
        // list and describe find it there.
        groups.retain(|_, g| g.state != GroupState::Empty || !g.members.is_empty());
    }

    fn has_offsets(&self, group: &str) -> bool {
        self.committed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(group)
    }

    /// OffsetCommit. `member_id` empty and `generation` -1 is a commit from outside any
    /// generation, allowed while the group has no members.
    pub async fn commit(
        &self,
        group_id: &str,
        member_id: &str,
        generation: i32,
        offsets: Vec<(String, u32, CommittedOffset)>,
    ) -> std::result::Result<(), GroupError> {
        valid_group_id(group_id)?;
        {
            let groups = self.groups.lock().await;
            match groups.get(group_id) {
                Some(g) if !g.members.is_empty() => {
                    if member_id.is_empty() && generation < 0 {
                        return Err(GroupError::UnknownMember);
                    }
                    if !g.members.contains_key(member_id) {
                        return Err(GroupError::UnknownMember);
                    }
                    if generation != g.generation {
                        return Err(GroupError::IllegalGeneration);
                    }
                    if g.state == GroupState::CompletingRebalance {
                        return Err(GroupError::RebalanceInProgress);
                    }
                }
                _ if !member_id.is_empty() => return Err(GroupError::UnknownMember),
                _ => {}
            }
        }
        if offsets.iter().any(|(_, _, c)| {
            c.metadata
                .as_ref()
                .is_some_and(|m| m.len() > OFFSET_METADATA_BYTES_MAX)
        }) {
            return Err(GroupError::MetadataTooLarge);
        }
        if offsets.is_empty() {
            return Ok(());
        }
        let store = std::sync::Arc::clone(&self.offsets);
        let (group, batch) = (group_id.to_string(), offsets.clone());
        tokio::task::spawn_blocking(move || store.commit(&group, &batch))
            .await
            .map_err(|e| GroupError::Storage(e.to_string()))?
            .map_err(|e| GroupError::Storage(e.to_string()))?;
        let mut committed = self.committed.lock().unwrap_or_else(|p| p.into_inner());
        let g = committed.entry(group_id.to_string()).or_default();
        for (topic, partition, c) in offsets {
            g.entry(topic).or_default().insert(partition, c);
        }
        Ok(())
    }

    /// Committed offsets of a group: of the given partitions, or of every one.
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        wanted: Option<&[(String, Vec<u32>)]>,
    ) -> Vec<(String, u32, Option<CommittedOffset>)> {
        let committed = self.committed.lock().unwrap_or_else(|p| p.into_inner());
        let group = committed.get(group_id);
        match wanted {
            Some(list) => list
                .iter()
                .flat_map(|(topic, parts)| {
                    parts.iter().map(move |p| {
                        let c = group
                            .and_then(|g| g.get(topic))
                            .and_then(|t| t.get(p))
                            .cloned();
                        (topic.clone(), *p, c)
                    })
                })
                .collect(),
            None => group
                .map(|g| {
                    g.iter()
                        .flat_map(|(t, parts)| {
                            parts
                                .iter()
                                .map(move |(p, c)| (t.clone(), *p, Some(c.clone())))
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    pub async fn list(&self) -> Vec<(String, String, GroupState)> {
        let groups = self.groups.lock().await;
        let mut out: Vec<_> = groups
            .iter()
            .map(|(n, g)| (n.clone(), g.protocol_type.clone(), g.state))
            .collect();
        let committed = self.committed.lock().unwrap_or_else(|p| p.into_inner());
        for name in committed.keys() {
            if !groups.contains_key(name) {
                out.push((name.clone(), "consumer".to_string(), GroupState::Empty));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    pub async fn describe(&self, group_id: &str) -> GroupDescription {
        let groups = self.groups.lock().await;
        match groups.get(group_id) {
            None => GroupDescription {
                group: group_id.to_string(),
                state: GroupState::Empty,
                protocol_type: String::new(),
                protocol_name: String::new(),
                members: Vec::new(),
            },
            Some(g) => GroupDescription {
                group: group_id.to_string(),
                state: g.state,
                protocol_type: g.protocol_type.clone(),
                protocol_name: if g.state == GroupState::Stable
                    || g.state == GroupState::CompletingRebalance
                {
                    g.protocol_name.clone()
                } else {
                    String::new()
                },
                members: g
                    .members
                    .iter()
                    .map(|(id, m)| MemberDescription {
                        member_id: id.clone(),
                        group_instance_id: m.group_instance_id.clone(),
                        client_id: m.client_id.clone(),
                        client_host: m.client_host.clone(),
                        metadata: m
                            .protocols
                            .iter()
                            .find(|(n, _)| *n == g.protocol_name)
                            .map(|(_, b)| b.clone())
                            .unwrap_or_default(),
                        assignment: m.assignment.clone(),
                    })
                    .collect(),
            },
        }
    }

    /// Deletes a group with no members, with its committed offsets.
    pub async fn delete(&self, group_id: &str) -> std::result::Result<(), GroupError> {
        let mut groups = self.groups.lock().await;
        let known = groups.contains_key(group_id) || self.has_offsets(group_id);
        if !known {
            return Err(GroupError::GroupNotFound);
        }
        if groups.get(group_id).is_some_and(|g| !g.members.is_empty()) {
            return Err(GroupError::NonEmptyGroup);
        }
        let store = std::sync::Arc::clone(&self.offsets);
        let group = group_id.to_string();
        tokio::task::spawn_blocking(move || store.delete_group(&group))
            .await
            .map_err(|e| GroupError::Storage(e.to_string()))?
            .map_err(|e| GroupError::Storage(e.to_string()))?;
        self.committed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(group_id);
        groups.remove(group_id);
        Ok(())
    }

    /// Forgets a deleted topic's committed offsets.
    pub fn forget_topic(&self, topic: &str) -> Result<()> {
        self.offsets.delete_topic(topic)?;
        for g in self
            .committed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values_mut()
        {
            g.remove(topic);
        }
        Ok(())
    }
}
