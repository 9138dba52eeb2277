//! One group's state machine. Every step takes the time it happens at (`now`), so a
//! test can drive time; nothing here reads the clock, waits or touches the disk.
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
//! wait ends by the rebalance timeout, checked by [`Group::expire`].
//!
//! # Static members
//!
//! A member that joins with a group instance id (KIP-345) is static: the instance id
//! stays with the member however often its process restarts. A JoinGroup with that
//! instance id and no member id is a restart: the member gets a new member id and
//! keeps its assignment, and in a stable group nobody else rebalances (the leader is
//! not asked to assign again). Whoever still uses the old member id with that instance
//! id is fenced (FENCED_INSTANCE_ID). A static member that stops is removed only when
//! its session runs out (or by a LeaveGroup naming its instance id), and then the group
//! rebalances as for any member.

use super::types::{
    GroupDescription, GroupError, GroupResult, GroupState, JoinMember, JoinRequest, JoinResult,
    LeavingMember, MemberDescription, Pending, INITIAL_REBALANCE_DELAY_MS, MEMBERS_PER_GROUP_MAX,
};
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Where a waiting request's answer goes.
type Reply<T> = oneshot::Sender<GroupResult<T>>;

/// The rebalance timeout of a group that has no members left to say.
const REBALANCE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);

pub(super) struct Member {
    group_instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    /// (protocol name, member metadata), in the member's order of preference.
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    last_seen: Instant,
    join_reply: Option<Reply<JoinResult>>,
    sync_reply: Option<Reply<Bytes>>,
}

impl Member {
    fn supports(&self, protocol: &str) -> bool {
        self.protocols.iter().any(|(name, _)| name == protocol)
    }

    /// The member's metadata for `protocol` (empty if it does not support it).
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, metadata)| metadata.clone())
            .unwrap_or_default()
    }

    /// A member with a request waiting is not silent, whatever its last heartbeat.
    fn is_waiting(&self) -> bool {
        self.join_reply.is_some() || self.sync_reply.is_some()
    }

    fn session_expired(&self, now: Instant) -> bool {
        !self.is_waiting() && now.duration_since(self.last_seen) > self.session_timeout
    }
}

pub(super) struct Group {
    pub(super) state: GroupState,
    pub(super) generation: i32,
    pub(super) protocol_type: String,
    protocol_name: String,
    leader: String,
    members: BTreeMap<String, Member>,
    /// Static members: group instance id → the member id that holds it. Exactly the
    /// members with an instance id are here, so it is bounded as `members` is.
    static_members: HashMap<String, String>,
    /// PreparingRebalance: when to complete regardless; CompletingRebalance: when to give up on the leader.
    deadline: Instant,
    /// PreparingRebalance of a group that was empty: not before this.
    not_before: Instant,
}

impl Group {
    pub(super) fn new(now: Instant) -> Self {
        Group {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: String::new(),
            protocol_name: String::new(),
            leader: String::new(),
            members: BTreeMap::new(),
            static_members: HashMap::new(),
            deadline: now,
            not_before: now,
        }
    }

    pub(super) fn has_members(&self) -> bool {
        !self.members.is_empty()
    }

    /// The protocol type members joined with, and the metadata each member sent, for
    /// every protocol it offered (what OffsetDelete reads subscriptions from).
    pub(super) fn member_metadata(&self) -> (&str, Vec<Bytes>) {
        let metadata = self
            .members
            .values()
            .flat_map(|member| member.protocols.iter().map(|(_, m)| m.clone()))
            .collect();
        (&self.protocol_type, metadata)
    }

    pub(super) fn has_member(&self, member_id: &str) -> bool {
        self.members.contains_key(member_id)
    }

    pub(super) fn member_count(&self) -> usize {
        self.members.len()
    }

    /// The member id holding `instance`, if a static member does.
    pub(super) fn static_member(&self, instance: &str) -> Option<&str> {
        self.static_members.get(instance).map(String::as_str)
    }

    /// Kafka's check of a request that names a member and maybe its instance id: the
    /// instance id must be held, and by this member (else FENCED_INSTANCE_ID: a newer
    /// process took it over).
    fn check_instance(&self, member_id: &str, instance: Option<&str>) -> GroupResult<()> {
        let Some(instance) = instance else {
            return Ok(());
        };
        match self.static_member(instance) {
            None => Err(GroupError::UnknownMember),
            Some(holder) if holder != member_id => Err(GroupError::FencedInstanceId),
            Some(_) => Ok(()),
        }
    }

    /// Takes a member out of the group (and its instance id out of the static ones);
    /// its waiting requests are the caller's to answer.
    fn take_member(&mut self, member_id: &str) -> Option<Member> {
        let member = self.members.remove(member_id)?;
        if let Some(instance) = &member.group_instance_id {
            if self.static_member(instance) == Some(member_id) {
                self.static_members.remove(instance);
            }
        }
        Some(member)
    }

    /// Does `protocols` share a protocol with every member but `member_id`?
    pub(super) fn others_accept(&self, member_id: &str, protocols: &[(String, Bytes)]) -> bool {
        let mut others = self
            .members
            .iter()
            .filter(|(id, _)| *id != member_id)
            .map(|(_, member)| member)
            .peekable();
        if others.peek().is_none() {
            return true;
        }
        let others: Vec<&Member> = others.collect();
        protocols
            .iter()
            .any(|(name, _)| others.iter().all(|member| member.supports(name)))
    }

    fn rebalance_timeout(&self) -> Duration {
        self.members
            .values()
            .map(|member| member.rebalance_timeout)
            .max()
            .unwrap_or(REBALANCE_TIMEOUT_DEFAULT)
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
        for member in self.members.values_mut() {
            if let Some(reply) = member.sync_reply.take() {
                let _ = reply.send(Err(GroupError::RebalanceInProgress));
            }
        }
        self.state = GroupState::PreparingRebalance;
    }

    /// Completes the join phase if every member has joined (or time is up).
    fn maybe_complete_join(&mut self, now: Instant) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let all_joined = self
            .members
            .values()
            .all(|member| member.join_reply.is_some());
        if !((all_joined && now >= self.not_before) || now >= self.deadline) {
            return;
        }
        let late: Vec<String> = self
            .members
            .iter()
            .filter(|(_, member)| member.join_reply.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for member_id in late {
            // Not waiting to join, and no sync waits while members rejoin: nobody to tell.
            let _ = self.take_member(&member_id);
        }
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.generation += 1;
            return;
        }
        if !self.members.contains_key(&self.leader) {
            self.leader = self.members.keys().next().cloned().unwrap_or_default();
        }
        match self.common_protocol() {
            Some(protocol) => self.start_generation(protocol, now),
            None => self.refuse_all(GroupError::InconsistentProtocol),
        }
    }

    /// The protocol every member supports, in the leader's order of preference.
    fn common_protocol(&self) -> Option<String> {
        let leader = self.members.get(&self.leader)?;
        leader
            .protocols
            .iter()
            .map(|(name, _)| name)
            .find(|name| self.members.values().all(|member| member.supports(name)))
            .cloned()
    }

    /// Every joined member is told `error` and the group empties.
    fn refuse_all(&mut self, error: GroupError) {
        for member in self.members.values_mut() {
            if let Some(reply) = member.join_reply.take() {
                let _ = reply.send(Err(error.clone()));
            }
        }
        self.members.clear();
        self.static_members.clear();
        self.state = GroupState::Empty;
    }

    /// A new generation on `protocol`: every member gets its JoinGroup answer, the
    /// leader with the roster it assigns from.
    fn start_generation(&mut self, protocol: String, now: Instant) {
        self.generation += 1;
        self.protocol_name = protocol;
        self.state = GroupState::CompletingRebalance;
        self.deadline = now + self.rebalance_timeout();
        let roster: Vec<JoinMember> = self
            .members
            .iter()
            .map(|(id, member)| JoinMember {
                member_id: id.clone(),
                group_instance_id: member.group_instance_id.clone(),
                metadata: member.metadata_for(&self.protocol_name),
            })
            .collect();
        for (id, member) in self.members.iter_mut() {
            member.last_seen = now;
            member.assignment = Bytes::new();
            if let Some(reply) = member.join_reply.take() {
                let _ = reply.send(Ok(JoinResult {
                    generation: self.generation,
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: self.protocol_name.clone(),
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

    /// Removes a member and rebalances the others. A member that is gone already (a
    /// rebalance that ended dropped it) changes nothing.
    fn remove_member(&mut self, member_id: &str, now: Instant) {
        if self.drop_member(member_id) {
            self.rebalance_after_removal(now);
        }
    }

    /// Takes a member out, telling its waiting requests it is gone; false if it was
    /// not there.
    fn drop_member(&mut self, member_id: &str) -> bool {
        let Some(mut member) = self.take_member(member_id) else {
            return false;
        };
        if let Some(reply) = member.join_reply.take() {
            let _ = reply.send(Err(GroupError::UnknownMember));
        }
        if let Some(reply) = member.sync_reply.take() {
            let _ = reply.send(Err(GroupError::UnknownMember));
        }
        true
    }

    /// After members were removed: the others rebalance, or the group is empty.
    fn rebalance_after_removal(&mut self, now: Instant) {
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.leader.clear();
        } else {
            self.prepare(now);
            self.maybe_complete_join(now);
        }
    }

    /// JoinGroup of `member_id` (already checked: known, or new and allowed in): the
    /// member (re)joins and the group rebalances, unless a follower of a stable group
    /// rejoins with nothing new, which gets the current generation back at once.
    pub(super) fn join(
        &mut self,
        member_id: String,
        request: JoinRequest,
        now: Instant,
    ) -> Pending<JoinResult> {
        if let Some(instance) = request.group_instance_id.clone() {
            match self.static_members.get(&instance) {
                Some(holder) if *holder != member_id => {
                    let old = holder.clone();
                    return self.replace_static(instance, old, member_id, request, now);
                }
                Some(_) => {}
                None => debug_assert!(
                    !self.members.contains_key(&member_id),
                    "a known member cannot take an instance id"
                ),
            }
        }
        let known = self.members.contains_key(&member_id);
        debug_assert!(known || self.members.len() < MEMBERS_PER_GROUP_MAX);
        self.protocol_type = request.protocol_type;
        let unchanged = known
            && self.state == GroupState::Stable
            && self.members[&member_id].protocols == request.protocols;
        if unchanged && self.leader != member_id {
            return Pending::ready(Ok(JoinResult {
                generation: self.generation,
                protocol_type: self.protocol_type.clone(),
                protocol_name: self.protocol_name.clone(),
                leader: self.leader.clone(),
                member_id,
                members: Vec::new(),
            }));
        }
        let (reply, answer) = oneshot::channel();
        if let (Some(instance), false) = (&request.group_instance_id, known) {
            self.static_members
                .insert(instance.clone(), member_id.clone());
        }
        let member = self.members.entry(member_id).or_insert_with(|| Member {
            group_instance_id: request.group_instance_id,
            client_id: request.client_id,
            client_host: request.client_host,
            session_timeout: Duration::ZERO,
            rebalance_timeout: Duration::ZERO,
            protocols: Vec::new(),
            assignment: Bytes::new(),
            last_seen: now,
            join_reply: None,
            sync_reply: None,
        });
        let session_timeout_ms = request.session_timeout_ms;
        member.session_timeout = Duration::from_millis(session_timeout_ms as u64);
        member.rebalance_timeout =
            Duration::from_millis(request.rebalance_timeout_ms.max(session_timeout_ms) as u64);
        member.protocols = request.protocols;
        member.last_seen = now;
        if let Some(old) = member.join_reply.replace(reply) {
            let _ = old.send(Err(GroupError::RebalanceInProgress));
        }
        if self.state != GroupState::PreparingRebalance {
            self.prepare(now);
        }
        self.maybe_complete_join(now);
        Pending::waiting(answer)
    }

    /// A static member's new process (`new`, a fresh member id) takes over the member
    /// `old` that holds `instance`: its assignment, its place as leader. Whatever `old`
    /// still waits for is fenced. A stable group whose protocol the member still speaks
    /// carries on without a rebalance: the answer is the current generation, naming the
    /// leader as before, so the new process does not take itself for the leader and
    /// assign again (it syncs and gets its assignment back). In any other state the
    /// group rebalances, as the leader may be assigning to the old id.
    fn replace_static(
        &mut self,
        instance: String,
        old: String,
        new: String,
        request: JoinRequest,
        now: Instant,
    ) -> Pending<JoinResult> {
        debug_assert!(!self.members.contains_key(&new), "{new} is fresh");
        let Some(mut member) = self.take_member(&old) else {
            debug_assert!(false, "static member {old} is not a member");
            return Pending::ready(Err(GroupError::UnknownMember));
        };
        if let Some(reply) = member.join_reply.take() {
            let _ = reply.send(Err(GroupError::FencedInstanceId));
        }
        if let Some(reply) = member.sync_reply.take() {
            let _ = reply.send(Err(GroupError::FencedInstanceId));
        }
        member.client_id = request.client_id;
        member.client_host = request.client_host;
        member.session_timeout = Duration::from_millis(request.session_timeout_ms as u64);
        member.rebalance_timeout = Duration::from_millis(
            request.rebalance_timeout_ms.max(request.session_timeout_ms) as u64,
        );
        member.protocols = request.protocols;
        member.last_seen = now;
        let leader_before = self.leader.clone();
        if self.leader == old {
            self.leader = new.clone();
        }
        let stays = self.state == GroupState::Stable && member.supports(&self.protocol_name);
        self.static_members.insert(instance, new.clone());
        self.members.insert(new.clone(), member);
        if stays {
            return Pending::ready(Ok(JoinResult {
                generation: self.generation,
                protocol_type: self.protocol_type.clone(),
                protocol_name: self.protocol_name.clone(),
                leader: leader_before,
                member_id: new,
                members: Vec::new(),
            }));
        }
        let (reply, answer) = oneshot::channel();
        if let Some(member) = self.members.get_mut(&new) {
            member.join_reply = Some(reply);
        }
        if self.state != GroupState::PreparingRebalance {
            self.prepare(now);
        }
        self.maybe_complete_join(now);
        Pending::waiting(answer)
    }

    /// SyncGroup: the leader brings assignments; everyone gets their own.
    pub(super) fn sync(
        &mut self,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
        now: Instant,
    ) -> Pending<Bytes> {
        if let Err(e) = self.check_instance(member_id, instance) {
            return Pending::ready(Err(e));
        }
        let Some(member) = self.members.get_mut(member_id) else {
            return Pending::ready(Err(GroupError::UnknownMember));
        };
        if generation != self.generation {
            return Pending::ready(Err(GroupError::IllegalGeneration));
        }
        match self.state {
            GroupState::Empty | GroupState::PreparingRebalance => {
                return Pending::ready(Err(GroupError::RebalanceInProgress))
            }
            GroupState::Stable => return Pending::ready(Ok(member.assignment.clone())),
            GroupState::CompletingRebalance => {}
        }
        if member_id != self.leader {
            let (reply, answer) = oneshot::channel();
            member.sync_reply = Some(reply);
            member.last_seen = now;
            return Pending::waiting(answer);
        }
        let given: HashMap<String, Bytes> = assignments.into_iter().collect();
        for (id, member) in self.members.iter_mut() {
            member.assignment = given.get(id).cloned().unwrap_or_default();
            if let Some(reply) = member.sync_reply.take() {
                let _ = reply.send(Ok(member.assignment.clone()));
            }
        }
        self.state = GroupState::Stable;
        Pending::ready(Ok(self.members[member_id].assignment.clone()))
    }

    pub(super) fn heartbeat(
        &mut self,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> GroupResult<()> {
        self.check_instance(member_id, instance)?;
        let member = self
            .members
            .get_mut(member_id)
            .ok_or(GroupError::UnknownMember)?;
        member.last_seen = now;
        match self.state {
            GroupState::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            _ if generation != self.generation => Err(GroupError::IllegalGeneration),
            _ => Ok(()),
        }
    }

    /// LeaveGroup of several members at once (one rebalance for all), each named by
    /// member id, instance id, or both (which must agree: else FENCED_INSTANCE_ID);
    /// the answer per member.
    pub(super) fn leave(
        &mut self,
        leaving: &[LeavingMember],
        now: Instant,
    ) -> Vec<GroupResult<()>> {
        let mut removed = false;
        let results = leaving
            .iter()
            .map(|member| {
                let member_id = match member.group_instance_id.as_deref() {
                    Some(instance) => match self.static_member(instance) {
                        None => return Err(GroupError::UnknownMember),
                        Some(holder)
                            if !member.member_id.is_empty() && holder != member.member_id =>
                        {
                            return Err(GroupError::FencedInstanceId)
                        }
                        Some(holder) => holder.to_string(),
                    },
                    None => member.member_id.clone(),
                };
                if !self.drop_member(&member_id) {
                    return Err(GroupError::UnknownMember);
                }
                removed = true;
                Ok(())
            })
            .collect();
        if removed {
            self.rebalance_after_removal(now);
        }
        results
    }

    /// Drops members whose session ran out and ends an overdue rebalance.
    pub(super) fn expire(&mut self, group_id: &str, now: Instant) {
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, member)| member.session_expired(now))
            .map(|(id, _)| id.clone())
            .collect();
        for member_id in expired {
            tracing::info!(group = %group_id, member = %member_id, "A group member's session expired; rebalancing.");
            self.remove_member(&member_id, now);
        }
        match self.state {
            GroupState::PreparingRebalance => self.maybe_complete_join(now),
            GroupState::CompletingRebalance if now >= self.deadline => {
                tracing::info!(group = %group_id, "The group leader sent no assignment in time; rebalancing.");
                self.prepare(now);
            }
            _ => {}
        }
    }

    /// An empty group needs no memory: its committed offsets stay in the store.
    pub(super) fn is_forgettable(&self) -> bool {
        self.state == GroupState::Empty && self.members.is_empty()
    }

    /// Commits are taken from members of the current generation, outside a
    /// rebalance's completion; from outside any generation (no member id) only while
    /// the group has no members.
    pub(super) fn check_commit(
        &self,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
    ) -> GroupResult<()> {
        if instance.is_some() {
            // A static member commits as a member (Kafka's rule), empty group or not.
            self.check_instance(member_id, instance)?;
        }
        if self.members.is_empty() {
            return if member_id.is_empty() {
                Ok(())
            } else {
                Err(GroupError::UnknownMember)
            };
        }
        if member_id.is_empty() && generation < 0 {
            return Err(GroupError::UnknownMember);
        }
        if !self.members.contains_key(member_id) {
            return Err(GroupError::UnknownMember);
        }
        if generation != self.generation {
            return Err(GroupError::IllegalGeneration);
        }
        if self.state == GroupState::CompletingRebalance {
            return Err(GroupError::RebalanceInProgress);
        }
        Ok(())
    }

    pub(super) fn describe(&self, group_id: &str) -> GroupDescription {
        let settled = matches!(
            self.state,
            GroupState::Stable | GroupState::CompletingRebalance
        );
        GroupDescription {
            group: group_id.to_string(),
            state: self.state,
            protocol_type: self.protocol_type.clone(),
            protocol_name: if settled {
                self.protocol_name.clone()
            } else {
                String::new()
            },
            generation: self.generation,
            leader: self.leader.clone(),
            members: self
                .members
                .iter()
                .map(|(id, member)| MemberDescription {
                    member_id: id.clone(),
                    group_instance_id: member.group_instance_id.clone(),
                    client_id: member.client_id.clone(),
                    client_host: member.client_host.clone(),
                    metadata: member.metadata_for(&self.protocol_name),
                    assignment: member.assignment.clone(),
                })
                .collect(),
        }
    }

    /// The group's invariants; the coordinator checks them (in debug builds) after
    /// every change, so every test checks them.
    pub(super) fn check_invariants(&self) {
        let state = self.state;
        assert!(
            self.members.len() <= MEMBERS_PER_GROUP_MAX,
            "too many members"
        );
        assert_eq!(
            state == GroupState::Empty,
            self.members.is_empty(),
            "a group is Empty exactly when it has no members"
        );
        assert!(self.generation >= 0, "generation {}", self.generation);
        for (instance, holder) in &self.static_members {
            let member = self.members.get(holder);
            assert!(
                member.is_some_and(|m| m.group_instance_id.as_deref() == Some(instance.as_str())),
                "instance {instance:?} is held by {holder:?}, not a member with it"
            );
        }
        let with_instance = self
            .members
            .values()
            .filter(|m| m.group_instance_id.is_some())
            .count();
        assert_eq!(
            with_instance,
            self.static_members.len(),
            "every static member is in the table of instance ids, once"
        );
        let waiting_to_join = self
            .members
            .values()
            .any(|member| member.join_reply.is_some());
        let waiting_to_sync = self
            .members
            .values()
            .any(|member| member.sync_reply.is_some());
        match state {
            GroupState::Empty => {}
            GroupState::PreparingRebalance => {
                assert!(!waiting_to_sync, "a sync waits while members rejoin");
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                assert!(self.generation > 0, "{state:?} at generation 0");
                assert!(
                    self.members.contains_key(&self.leader),
                    "the leader {:?} is not a member",
                    self.leader
                );
                assert!(!waiting_to_join, "a join waits in {state:?}");
                assert!(
                    self.members
                        .values()
                        .all(|member| member.supports(&self.protocol_name)),
                    "a member does not support the group's protocol {:?}",
                    self.protocol_name
                );
                // Every member's assignment is what the leader gave it (bytes, maybe
                // empty): once stable, nobody still waits for one.
                if state == GroupState::Stable {
                    assert!(!waiting_to_sync, "a sync waits in a stable group");
                }
            }
        }
    }
}
