//! The model of the group coordinator: the group protocol written plainly, with time
//! in milliseconds and member names for member ids (see the test's doc).

use bytes::Bytes;
use ferry_broker::groups::{
    CommittedOffset, FetchedOffset, GroupDescription, GroupError, GroupListing, GroupResult,
    GroupState, JoinMember, JoinResult, LeavingMember, MemberDescription, PartitionOffset,
};
use std::collections::{BTreeMap, HashMap};

const GROUP_ID_BYTES_MAX: usize = 255;
const OFFSET_METADATA_BYTES_MAX: usize = 4096;
const INITIAL_DELAY_MS: u64 = 300;
const REBALANCE_TIMEOUT_DEFAULT_MS: u64 = 30_000;

/// An answer a member waited for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Answer {
    Join(GroupResult<JoinResult>),
    Sync(GroupResult<Bytes>),
}

pub(crate) type Ticket = u64;

#[derive(Debug, Clone)]
struct ModelMember {
    group_instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_ms: u64,
    rebalance_ms: u64,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    last_seen_ms: u64,
    join_ticket: Option<Ticket>,
    sync_ticket: Option<Ticket>,
}

impl ModelMember {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, metadata)| metadata.clone())
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone)]
struct ModelGroup {
    state: GroupState,
    generation: i32,
    protocol_type: String,
    protocol_name: String,
    leader: String,
    members: BTreeMap<String, ModelMember>,
    /// Static members: instance id → the name holding it.
    static_members: BTreeMap<String, String>,
    deadline_ms: u64,
    not_before_ms: u64,
}

#[derive(Default)]
pub(crate) struct Model {
    pub(crate) now_ms: u64,
    groups: BTreeMap<String, ModelGroup>,
    /// group → topic → partition → offset.
    committed: BTreeMap<String, BTreeMap<String, BTreeMap<u32, CommittedOffset>>>,
    /// Answers given to waiting members, not yet looked at.
    pub(crate) delivered: BTreeMap<Ticket, Answer>,
}

/// A JoinGroup as the model takes it: member ids are names.
pub(crate) struct ModelJoin {
    pub(crate) group: String,
    pub(crate) member_id: String,
    pub(crate) group_instance_id: Option<String>,
    pub(crate) client_id: String,
    pub(crate) client_host: String,
    pub(crate) session_ms: i32,
    pub(crate) rebalance_ms: i32,
    pub(crate) protocol_type: String,
    pub(crate) protocols: Vec<(String, Bytes)>,
    pub(crate) require_member_id: bool,
}

impl ModelGroup {
    /// A member named with an instance id must be the one holding it.
    fn check_instance(&self, member_id: &str, instance: Option<&str>) -> GroupResult<()> {
        match instance.map(|i| self.static_members.get(i)) {
            None => Ok(()),
            Some(None) => Err(GroupError::UnknownMember),
            Some(Some(holder)) if holder != member_id => Err(GroupError::FencedInstanceId),
            Some(Some(_)) => Ok(()),
        }
    }

    fn take(&mut self, member_id: &str) -> Option<ModelMember> {
        let m = self.members.remove(member_id)?;
        if let Some(i) = &m.group_instance_id {
            if self.static_members.get(i).map(String::as_str) == Some(member_id) {
                self.static_members.remove(i);
            }
        }
        Some(m)
    }
}

impl Model {
    fn answer(&mut self, ticket: Ticket, answer: Answer) {
        let old = self.delivered.insert(ticket, answer);
        assert!(old.is_none(), "ticket {ticket} answered twice by the model");
    }

    /// JoinGroup: refused, answered at once, or waiting under `ticket`.
    pub(crate) fn join(&mut self, request: ModelJoin, ticket: Ticket) {
        let member_id = match self.admit(&request) {
            Ok(member_id) => member_id,
            Err(e) => return self.answer(ticket, Answer::Join(Err(e))),
        };
        let now = self.now_ms;
        let group = self.groups.get_mut(&request.group).expect("admitted");
        if let Some(instance) = &request.group_instance_id {
            if let Some(old) = group.static_members.get(instance).cloned() {
                if old != member_id {
                    return self.replace_static(request, old, member_id, ticket);
                }
            }
        }
        let group = self.groups.get_mut(&request.group).expect("admitted");
        let known = group.members.contains_key(&member_id);
        if let (Some(instance), false) = (&request.group_instance_id, known) {
            group
                .static_members
                .insert(instance.clone(), member_id.clone());
        }
        group.protocol_type = request.protocol_type.clone();
        if known
            && group.state == GroupState::Stable
            && group.members[&member_id].protocols == request.protocols
            && group.leader != member_id
        {
            let current = JoinResult {
                generation: group.generation,
                protocol_type: group.protocol_type.clone(),
                protocol_name: group.protocol_name.clone(),
                leader: group.leader.clone(),
                member_id,
                members: Vec::new(),
            };
            return self.answer(ticket, Answer::Join(Ok(current)));
        }
        let member = group
            .members
            .entry(member_id)
            .or_insert_with(|| ModelMember {
                group_instance_id: request.group_instance_id.clone(),
                client_id: request.client_id.clone(),
                client_host: request.client_host.clone(),
                session_ms: 0,
                rebalance_ms: 0,
                protocols: Vec::new(),
                assignment: Bytes::new(),
                last_seen_ms: now,
                join_ticket: None,
                sync_ticket: None,
            });
        member.session_ms = request.session_ms as u64;
        member.rebalance_ms = request.rebalance_ms.max(request.session_ms) as u64;
        member.protocols = request.protocols;
        member.last_seen_ms = now;
        let replaced = member.join_ticket.replace(ticket);
        if let Some(old) = replaced {
            self.answer(old, Answer::Join(Err(GroupError::RebalanceInProgress)));
        }
        let name = request.group;
        if self.groups[&name].state != GroupState::PreparingRebalance {
            self.prepare(&name);
        }
        self.try_complete_join(&name);
    }

    /// A static member's new process takes over the old member: in a stable group
    /// that keeps its protocol, at once and without a rebalance (the leader named as
    /// before); else the group rebalances.
    fn replace_static(&mut self, request: ModelJoin, old: String, new: String, ticket: Ticket) {
        let now = self.now_ms;
        let name = request.group.clone();
        let group = self.groups.get_mut(&name).expect("admitted");
        let mut member = group.take(&old).expect("the holder is a member");
        let fenced: Vec<(Ticket, Answer)> = member
            .join_ticket
            .take()
            .map(|t| (t, Answer::Join(Err(GroupError::FencedInstanceId))))
            .into_iter()
            .chain(
                member
                    .sync_ticket
                    .take()
                    .map(|t| (t, Answer::Sync(Err(GroupError::FencedInstanceId)))),
            )
            .collect();
        member.client_id = request.client_id;
        member.client_host = request.client_host;
        member.session_ms = request.session_ms as u64;
        member.rebalance_ms = request.rebalance_ms.max(request.session_ms) as u64;
        member.protocols = request.protocols;
        member.last_seen_ms = now;
        let leader_before = group.leader.clone();
        if group.leader == old {
            group.leader = new.clone();
        }
        let stays = group.state == GroupState::Stable
            && member
                .protocols
                .iter()
                .any(|(n, _)| *n == group.protocol_name);
        let instance = request.group_instance_id.expect("static");
        group.static_members.insert(instance, new.clone());
        group.members.insert(new.clone(), member);
        let current = JoinResult {
            generation: group.generation,
            protocol_type: group.protocol_type.clone(),
            protocol_name: group.protocol_name.clone(),
            leader: leader_before,
            member_id: new.clone(),
            members: Vec::new(),
        };
        for (t, answer) in fenced {
            self.answer(t, answer);
        }
        if stays {
            return self.answer(ticket, Answer::Join(Ok(current)));
        }
        let group = self.groups.get_mut(&name).expect("admitted");
        group.members.get_mut(&new).expect("inserted").join_ticket = Some(ticket);
        if group.state != GroupState::PreparingRebalance {
            self.prepare(&name);
        }
        self.try_complete_join(&name);
    }

    /// The checks of a JoinGroup, and the member id it joins under. A group is made
    /// (empty) once the request names a valid one, even if it is then refused.
    fn admit(&mut self, request: &ModelJoin) -> GroupResult<String> {
        if request.group.is_empty() || request.group.len() > GROUP_ID_BYTES_MAX {
            return Err(GroupError::InvalidGroupId);
        }
        if !(1_000..=300_000).contains(&request.session_ms) {
            return Err(GroupError::InvalidSessionTimeout);
        }
        if request.protocols.is_empty() || request.protocol_type.is_empty() {
            return Err(GroupError::InconsistentProtocol);
        }
        let now = self.now_ms;
        let group = self
            .groups
            .entry(request.group.clone())
            .or_insert_with(|| ModelGroup {
                state: GroupState::Empty,
                generation: 0,
                protocol_type: String::new(),
                protocol_name: String::new(),
                leader: String::new(),
                members: BTreeMap::new(),
                static_members: BTreeMap::new(),
                deadline_ms: now,
                not_before_ms: now,
            });
        if !group.members.is_empty() && group.protocol_type != request.protocol_type {
            return Err(GroupError::InconsistentProtocol);
        }
        let others: Vec<&ModelMember> = group
            .members
            .iter()
            .filter(|(id, _)| **id != request.member_id)
            .map(|(_, m)| m)
            .collect();
        let shares_one = request.protocols.iter().any(|(name, _)| {
            others
                .iter()
                .all(|m| m.protocols.iter().any(|(n, _)| n == name))
        });
        if !others.is_empty() && !shares_one {
            return Err(GroupError::InconsistentProtocol);
        }
        let known = group.members.contains_key(&request.member_id);
        if let Some(instance) = &request.group_instance_id {
            return match group.static_members.get(instance) {
                _ if request.member_id.is_empty() => Ok(request.client_id.clone()),
                Some(holder) if *holder == request.member_id => Ok(holder.clone()),
                Some(_) => Err(GroupError::FencedInstanceId),
                None => Err(GroupError::UnknownMember),
            };
        }
        let member_id = if request.member_id.is_empty() {
            // The client ids used here are plain: the name is the client id.
            if request.require_member_id {
                return Err(GroupError::MemberIdRequired(request.client_id.clone()));
            }
            request.client_id.clone()
        } else if known || request.require_member_id {
            request.member_id.clone()
        } else {
            return Err(GroupError::UnknownMember);
        };
        Ok(member_id)
    }

    fn rebalance_timeout_ms(group: &ModelGroup) -> u64 {
        group
            .members
            .values()
            .map(|m| m.rebalance_ms)
            .max()
            .unwrap_or(REBALANCE_TIMEOUT_DEFAULT_MS)
    }

    fn prepare(&mut self, name: &str) {
        let now = self.now_ms;
        let group = self.groups.get_mut(name).expect("group");
        group.not_before_ms = if group.state == GroupState::Empty {
            now + INITIAL_DELAY_MS
        } else {
            now
        };
        if group.state != GroupState::PreparingRebalance {
            group.deadline_ms = now + Self::rebalance_timeout_ms(group);
        }
        group.state = GroupState::PreparingRebalance;
        let waiting: Vec<Ticket> = group
            .members
            .values_mut()
            .filter_map(|m| m.sync_ticket.take())
            .collect();
        for ticket in waiting {
            self.answer(ticket, Answer::Sync(Err(GroupError::RebalanceInProgress)));
        }
    }

    fn try_complete_join(&mut self, name: &str) {
        let now = self.now_ms;
        let group = self.groups.get_mut(name).expect("group");
        if group.state != GroupState::PreparingRebalance {
            return;
        }
        let everyone_joined = group.members.values().all(|m| m.join_ticket.is_some());
        let due = (everyone_joined && now >= group.not_before_ms) || now >= group.deadline_ms;
        if !due {
            return;
        }
        group.members.retain(|_, m| m.join_ticket.is_some());
        let members = &group.members;
        group
            .static_members
            .retain(|_, holder| members.contains_key(holder));
        if group.members.is_empty() {
            group.state = GroupState::Empty;
            group.generation += 1;
            return;
        }
        if !group.members.contains_key(&group.leader) {
            group.leader = group.members.keys().next().expect("not empty").clone();
        }
        let leader_choices: Vec<String> = group.members[&group.leader]
            .protocols
            .iter()
            .map(|(n, _)| n.clone())
            .collect();
        let common = leader_choices.into_iter().find(|p| {
            group
                .members
                .values()
                .all(|m| m.protocols.iter().any(|(n, _)| n == p))
        });
        let answers = match common {
            None => {
                let refused = group
                    .members
                    .values()
                    .map(|m| {
                        (
                            m.join_ticket.expect("joined"),
                            Err(GroupError::InconsistentProtocol),
                        )
                    })
                    .collect();
                group.members.clear();
                group.static_members.clear();
                group.state = GroupState::Empty;
                refused
            }
            Some(protocol) => Self::form_generation(group, protocol, now),
        };
        for (ticket, result) in answers {
            self.answer(ticket, Answer::Join(result));
        }
    }

    /// The next generation on `protocol`: the JoinGroup answers of every member.
    fn form_generation(
        group: &mut ModelGroup,
        protocol: String,
        now: u64,
    ) -> Vec<(Ticket, GroupResult<JoinResult>)> {
        group.generation += 1;
        group.protocol_name = protocol.clone();
        group.state = GroupState::CompletingRebalance;
        group.deadline_ms = now + Self::rebalance_timeout_ms(group);
        let roster: Vec<JoinMember> = group
            .members
            .iter()
            .map(|(id, m)| JoinMember {
                member_id: id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                metadata: m.metadata_for(&protocol),
            })
            .collect();
        let mut answers = Vec::new();
        for (id, m) in group.members.iter_mut() {
            m.last_seen_ms = now;
            m.assignment = Bytes::new();
            let ticket = m.join_ticket.take().expect("joined");
            let is_leader = *id == group.leader;
            let joined = JoinResult {
                generation: group.generation,
                protocol_type: group.protocol_type.clone(),
                protocol_name: protocol.clone(),
                leader: group.leader.clone(),
                member_id: id.clone(),
                members: if is_leader {
                    roster.clone()
                } else {
                    Vec::new()
                },
            };
            answers.push((ticket, Ok(joined)));
        }
        answers
    }

    fn remove_member(&mut self, name: &str, member_id: &str) {
        self.drop_member(name, member_id);
        self.after_removal(name);
    }

    fn drop_member(&mut self, name: &str, member_id: &str) -> bool {
        let group = self.groups.get_mut(name).expect("group");
        let Some(m) = group.take(member_id) else {
            return false;
        };
        if let Some(ticket) = m.join_ticket {
            self.answer(ticket, Answer::Join(Err(GroupError::UnknownMember)));
        }
        if let Some(ticket) = m.sync_ticket {
            self.answer(ticket, Answer::Sync(Err(GroupError::UnknownMember)));
        }
        true
    }

    fn after_removal(&mut self, name: &str) {
        let group = self.groups.get_mut(name).expect("group");
        if group.members.is_empty() {
            group.state = GroupState::Empty;
            group.leader.clear();
        } else {
            self.prepare(name);
            self.try_complete_join(name);
        }
    }

    pub(crate) fn sync(
        &mut self,
        name: &str,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
        assignments: &[(String, Bytes)],
        ticket: Ticket,
    ) {
        let now = self.now_ms;
        let refuse = |model: &mut Model, e| model.answer(ticket, Answer::Sync(Err(e)));
        let Some(group) = self.groups.get_mut(name) else {
            return refuse(self, GroupError::UnknownMember);
        };
        if let Err(e) = group.check_instance(member_id, instance) {
            return refuse(self, e);
        }
        if !group.members.contains_key(member_id) {
            return refuse(self, GroupError::UnknownMember);
        }
        if generation != group.generation {
            return refuse(self, GroupError::IllegalGeneration);
        }
        match group.state {
            GroupState::Empty | GroupState::PreparingRebalance => {
                return refuse(self, GroupError::RebalanceInProgress)
            }
            GroupState::Stable => {
                let assignment = group.members[member_id].assignment.clone();
                return self.answer(ticket, Answer::Sync(Ok(assignment)));
            }
            GroupState::CompletingRebalance => {}
        }
        if member_id != group.leader {
            let member = group.members.get_mut(member_id).expect("member");
            member.last_seen_ms = now;
            // A second SyncGroup of the same member replaces the first.
            if let Some(old) = member.sync_ticket.replace(ticket) {
                self.answer(old, Answer::Sync(Err(GroupError::RebalanceInProgress)));
            }
            return;
        }
        // An id given twice: the last assignment counts.
        let mut given: HashMap<&str, &Bytes> = HashMap::new();
        for (id, assignment) in assignments {
            given.insert(id, assignment);
        }
        let mut answers = Vec::new();
        for (id, member) in group.members.iter_mut() {
            member.assignment = given
                .get(id.as_str())
                .map(|a| (*a).clone())
                .unwrap_or_default();
            if let Some(waiting) = member.sync_ticket.take() {
                answers.push((waiting, member.assignment.clone()));
            }
        }
        group.state = GroupState::Stable;
        answers.push((ticket, group.members[member_id].assignment.clone()));
        for (ticket, assignment) in answers {
            self.answer(ticket, Answer::Sync(Ok(assignment)));
        }
    }

    pub(crate) fn heartbeat(
        &mut self,
        name: &str,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
    ) -> GroupResult<()> {
        let now = self.now_ms;
        let group = self.groups.get_mut(name).ok_or(GroupError::UnknownMember)?;
        group.check_instance(member_id, instance)?;
        let member = group
            .members
            .get_mut(member_id)
            .ok_or(GroupError::UnknownMember)?;
        member.last_seen_ms = now;
        if group.state == GroupState::PreparingRebalance {
            Err(GroupError::RebalanceInProgress)
        } else if generation != group.generation {
            Err(GroupError::IllegalGeneration)
        } else {
            Ok(())
        }
    }

    /// LeaveGroup of a batch: each removed (or refused), then one rebalance.
    pub(crate) fn leave(&mut self, name: &str, leaving: &[LeavingMember]) -> Vec<GroupResult<()>> {
        if !self.groups.contains_key(name) {
            return leaving
                .iter()
                .map(|_| Err(GroupError::UnknownMember))
                .collect();
        }
        let mut results = Vec::new();
        let mut removed = false;
        for m in leaving {
            let group = &self.groups[name];
            let member_id = match &m.group_instance_id {
                Some(i) => match group.static_members.get(i) {
                    None => {
                        results.push(Err(GroupError::UnknownMember));
                        continue;
                    }
                    Some(holder) if !m.member_id.is_empty() && *holder != m.member_id => {
                        results.push(Err(GroupError::FencedInstanceId));
                        continue;
                    }
                    Some(holder) => holder.clone(),
                },
                None => m.member_id.clone(),
            };
            if self.drop_member(name, &member_id) {
                removed = true;
                results.push(Ok(()));
            } else {
                results.push(Err(GroupError::UnknownMember));
            }
        }
        if removed {
            self.after_removal(name);
        }
        results
    }

    pub(crate) fn tick(&mut self) {
        let now = self.now_ms;
        let names: Vec<String> = self.groups.keys().cloned().collect();
        for name in names {
            let silent: Vec<String> = self.groups[&name]
                .members
                .iter()
                .filter(|(_, m)| {
                    m.join_ticket.is_none()
                        && m.sync_ticket.is_none()
                        && now.saturating_sub(m.last_seen_ms) > m.session_ms
                })
                .map(|(id, _)| id.clone())
                .collect();
            for member_id in silent {
                // A rebalance that ended with an earlier removal may have dropped it.
                if self.groups[&name].members.contains_key(&member_id) {
                    self.remove_member(&name, &member_id);
                }
            }
            let group = &self.groups[&name];
            match group.state {
                GroupState::PreparingRebalance => self.try_complete_join(&name),
                GroupState::CompletingRebalance if now >= group.deadline_ms => self.prepare(&name),
                _ => {}
            }
        }
        self.groups
            .retain(|_, g| !(g.state == GroupState::Empty && g.members.is_empty()));
    }

    pub(crate) fn commit(
        &mut self,
        name: &str,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
        offsets: &[PartitionOffset],
    ) -> GroupResult<()> {
        if name.is_empty() || name.len() > GROUP_ID_BYTES_MAX {
            return Err(GroupError::InvalidGroupId);
        }
        if instance.is_some() {
            match self.groups.get(name) {
                Some(group) => group.check_instance(member_id, instance)?,
                None => return Err(GroupError::UnknownMember),
            }
        }
        match self.groups.get(name) {
            Some(group) if !group.members.is_empty() => {
                if member_id.is_empty() && generation < 0 {
                    return Err(GroupError::UnknownMember);
                }
                if !group.members.contains_key(member_id) {
                    return Err(GroupError::UnknownMember);
                }
                if generation != group.generation {
                    return Err(GroupError::IllegalGeneration);
                }
                if group.state == GroupState::CompletingRebalance {
                    return Err(GroupError::RebalanceInProgress);
                }
            }
            _ if !member_id.is_empty() => return Err(GroupError::UnknownMember),
            _ => {}
        }
        let too_large = offsets.iter().any(|o| {
            o.committed
                .metadata
                .as_ref()
                .is_some_and(|m| m.len() > OFFSET_METADATA_BYTES_MAX)
        });
        if too_large {
            return Err(GroupError::MetadataTooLarge);
        }
        if offsets.is_empty() {
            return Ok(());
        }
        let by_topic = self.committed.entry(name.to_string()).or_default();
        for o in offsets {
            by_topic
                .entry(o.topic.clone())
                .or_default()
                .insert(o.partition, o.committed.clone());
        }
        Ok(())
    }

    pub(crate) fn fetch(
        &self,
        name: &str,
        wanted: Option<&[(String, Vec<u32>)]>,
    ) -> Vec<FetchedOffset> {
        let empty = BTreeMap::new();
        let by_topic = self.committed.get(name).unwrap_or(&empty);
        let mut rows = Vec::new();
        match wanted {
            None => {
                for (topic, partitions) in by_topic {
                    for (partition, offset) in partitions {
                        rows.push(FetchedOffset {
                            topic: topic.clone(),
                            partition: *partition,
                            committed: Some(offset.clone()),
                        });
                    }
                }
            }
            Some(wanted) => {
                for (topic, partitions) in wanted {
                    for partition in partitions {
                        let offset = by_topic.get(topic).and_then(|p| p.get(partition));
                        rows.push(FetchedOffset {
                            topic: topic.clone(),
                            partition: *partition,
                            committed: offset.cloned(),
                        });
                    }
                }
            }
        }
        rows
    }

    pub(crate) fn delete(&mut self, name: &str) -> GroupResult<()> {
        if !self.groups.contains_key(name) && !self.committed.contains_key(name) {
            return Err(GroupError::GroupNotFound);
        }
        if self.groups.get(name).is_some_and(|g| !g.members.is_empty()) {
            return Err(GroupError::NonEmptyGroup);
        }
        self.committed.remove(name);
        self.groups.remove(name);
        Ok(())
    }

    pub(crate) fn forget_topic(&mut self, topic: &str) {
        for by_topic in self.committed.values_mut() {
            by_topic.remove(topic);
        }
    }

    /// The coordinator is dropped and opened again: members are gone (whoever waited
    /// hears the wait was given up), committed offsets stay.
    pub(crate) fn reopen(&mut self) {
        let groups = std::mem::take(&mut self.groups);
        for member in groups.into_values().flat_map(|g| g.members.into_values()) {
            if let Some(ticket) = member.join_ticket {
                self.answer(ticket, Answer::Join(Err(GroupError::RebalanceInProgress)));
            }
            if let Some(ticket) = member.sync_ticket {
                self.answer(ticket, Answer::Sync(Err(GroupError::RebalanceInProgress)));
            }
        }
    }

    pub(crate) fn describe(&self, name: &str) -> GroupDescription {
        let Some(group) = self.groups.get(name) else {
            return GroupDescription {
                group: name.to_string(),
                state: GroupState::Empty,
                protocol_type: String::new(),
                protocol_name: String::new(),
                generation: 0,
                leader: String::new(),
                members: Vec::new(),
            };
        };
        let formed = matches!(
            group.state,
            GroupState::CompletingRebalance | GroupState::Stable
        );
        GroupDescription {
            group: name.to_string(),
            state: group.state,
            protocol_type: group.protocol_type.clone(),
            protocol_name: if formed {
                group.protocol_name.clone()
            } else {
                String::new()
            },
            generation: group.generation,
            leader: group.leader.clone(),
            members: group
                .members
                .iter()
                .map(|(id, m)| MemberDescription {
                    member_id: id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: m.metadata_for(&group.protocol_name),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    pub(crate) fn list(&self) -> Vec<GroupListing> {
        let mut listings: Vec<GroupListing> = self
            .groups
            .iter()
            .map(|(name, g)| GroupListing {
                group: name.clone(),
                protocol_type: g.protocol_type.clone(),
                state: g.state,
            })
            .collect();
        for name in self.committed.keys() {
            if !self.groups.contains_key(name) {
                listings.push(GroupListing {
                    group: name.clone(),
                    protocol_type: "consumer".to_string(),
                    state: GroupState::Empty,
                });
            }
        }
        listings.sort_by(|a, b| a.group.cmp(&b.group));
        listings
    }
}
