//! Model-based test of the group coordinator: random sequences of JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup, time passing (sessions and rebalances running out), offset
//! commits and fetches, group and topic deletion and reopening from the store, each
//! applied to the real coordinator and to a plain model written here. After every step
//! the answers (error codes, generations, leaders, rosters, assignments delivered to the
//! members who waited for them), the description of every group, the group list and the
//! committed offsets must agree.
//!
//! Time is driven by the test: the coordinator takes `now` on every call.
//!
//! Seeds: `GROUPS_MODEL_SEEDS=n` runs seeds 0..n (default 120); `GROUPS_MODEL_SEED=s`
//! runs seed `s` alone; `GROUPS_MODEL_STEPS` sets the steps per seed (default 200). A
//! failure names its seed and the last steps.
//!
//! Member ids are minted by the coordinator from the client id, the wall clock and a
//! counter. Every fresh member here has a client id of its own (`c00042`), so the
//! part before the first `-` names the member: the model works with those names, and
//! the answers of the real coordinator are compared after cutting ids down to them.
//! Ids sort like their names, so the model orders members as the coordinator does.

use bytes::Bytes;
use ferry_broker::groups::{
    CommittedOffset, Coordinator, FileOffsetStore, GroupDescription, GroupError, GroupListing,
    GroupResult, GroupState, JoinMember, JoinRequest, JoinResult, MemberDescription, Pending,
};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

const GROUP_NAMES: [&str; 2] = ["g0", "g1"];
const CLIENTS: usize = 8;
const PROTOCOLS: [&str; 3] = ["range", "roundrobin", "sticky"];
const TOPICS: [&str; 2] = ["t0", "t1"];
const INITIAL_DELAY_MS: u64 = 300;
const REBALANCE_TIMEOUT_DEFAULT_MS: u64 = 30_000;

/// The member name inside a member id (see the module doc).
fn name_of(member_id: &str) -> String {
    member_id.split('-').next().unwrap_or_default().to_string()
}

fn named_error(e: GroupError) -> GroupError {
    match e {
        GroupError::MemberIdRequired(id) => GroupError::MemberIdRequired(name_of(&id)),
        other => other,
    }
}

fn named_join(result: GroupResult<JoinResult>) -> GroupResult<JoinResult> {
    result
        .map(|r| JoinResult {
            leader: name_of(&r.leader),
            member_id: name_of(&r.member_id),
            members: r
                .members
                .into_iter()
                .map(|m| JoinMember {
                    member_id: name_of(&m.member_id),
                    ..m
                })
                .collect(),
            ..r
        })
        .map_err(named_error)
}

fn named_description(d: GroupDescription) -> GroupDescription {
    GroupDescription {
        leader: name_of(&d.leader),
        members: d
            .members
            .into_iter()
            .map(|m| MemberDescription {
                member_id: name_of(&m.member_id),
                ..m
            })
            .collect(),
        ..d
    }
}

// ---------------------------------------------------------------------------------
// The model: the group protocol written plainly, time in milliseconds.
// ---------------------------------------------------------------------------------

/// An answer a member waited for.
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    Join(GroupResult<JoinResult>),
    Sync(GroupResult<Bytes>),
}

type Ticket = u64;

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
    deadline_ms: u64,
    not_before_ms: u64,
}

#[derive(Default)]
struct Model {
    now_ms: u64,
    groups: BTreeMap<String, ModelGroup>,
    /// group → topic → partition → offset.
    committed: BTreeMap<String, BTreeMap<String, BTreeMap<u32, CommittedOffset>>>,
    /// Answers given to waiting members, not yet looked at.
    delivered: BTreeMap<Ticket, Answer>,
}

/// A JoinGroup as the model takes it: member ids are names.
struct ModelJoin {
    group: String,
    member_id: String,
    group_instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_ms: i32,
    rebalance_ms: i32,
    protocol_type: String,
    protocols: Vec<(String, Bytes)>,
    require_member_id: bool,
}

impl Model {
    fn answer(&mut self, ticket: Ticket, answer: Answer) {
        let old = self.delivered.insert(ticket, answer);
        assert!(old.is_none(), "ticket {ticket} answered twice by the model");
    }

    fn join(&mut self, request: ModelJoin, ticket: Ticket) {
        let refused = |model: &mut Model, e| model.answer(ticket, Answer::Join(Err(e)));
        if request.group.is_empty() || request.group.len() > 255 {
            return refused(self, GroupError::InvalidGroupId);
        }
        if !(1_000..=300_000).contains(&request.session_ms) {
            return refused(self, GroupError::InvalidSessionTimeout);
        }
        if request.protocols.is_empty() || request.protocol_type.is_empty() {
            return refused(self, GroupError::InconsistentProtocol);
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
                deadline_ms: now,
                not_before_ms: now,
            });
        if !group.members.is_empty() && group.protocol_type != request.protocol_type {
            return refused(self, GroupError::InconsistentProtocol);
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
            return refused(self, GroupError::InconsistentProtocol);
        }
        let known = group.members.contains_key(&request.member_id);
        let member_id = if request.member_id.is_empty() {
            // The client ids used here are plain: the name is the client id.
            if request.require_member_id {
                return refused(self, GroupError::MemberIdRequired(request.client_id));
            }
            request.client_id.clone()
        } else if known || request.require_member_id {
            request.member_id.clone()
        } else {
            return refused(self, GroupError::UnknownMember);
        };
        let group = self.groups.get_mut(&request.group).expect("made above");
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
        let mut answers = Vec::new();
        match common {
            None => {
                for m in group.members.values() {
                    let ticket = m.join_ticket.expect("joined");
                    answers.push((ticket, Err(GroupError::InconsistentProtocol)));
                }
                group.members.clear();
                group.state = GroupState::Empty;
            }
            Some(protocol) => {
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
                for (id, m) in group.members.iter_mut() {
                    m.last_seen_ms = now;
                    m.assignment = Bytes::new();
                    let ticket = m.join_ticket.take().expect("joined");
                    let is_leader = *id == group.leader;
                    answers.push((
                        ticket,
                        Ok(JoinResult {
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
                        }),
                    ));
                }
            }
        }
        for (ticket, result) in answers {
            self.answer(ticket, Answer::Join(result));
        }
    }

    fn remove_member(&mut self, name: &str, member_id: &str) {
        let group = self.groups.get_mut(name).expect("group");
        if let Some(m) = group.members.remove(member_id) {
            if let Some(ticket) = m.join_ticket {
                self.answer(ticket, Answer::Join(Err(GroupError::UnknownMember)));
            }
            if let Some(ticket) = m.sync_ticket {
                self.answer(ticket, Answer::Sync(Err(GroupError::UnknownMember)));
            }
        }
        let group = self.groups.get_mut(name).expect("group");
        if group.members.is_empty() {
            group.state = GroupState::Empty;
            group.leader.clear();
        } else {
            self.prepare(name);
            self.try_complete_join(name);
        }
    }

    fn sync(
        &mut self,
        name: &str,
        member_id: &str,
        generation: i32,
        assignments: &[(String, Bytes)],
        ticket: Ticket,
    ) {
        let now = self.now_ms;
        let refuse = |model: &mut Model, e| model.answer(ticket, Answer::Sync(Err(e)));
        let Some(group) = self.groups.get_mut(name) else {
            return refuse(self, GroupError::UnknownMember);
        };
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

    fn heartbeat(&mut self, name: &str, member_id: &str, generation: i32) -> GroupResult<()> {
        let now = self.now_ms;
        let group = self.groups.get_mut(name).ok_or(GroupError::UnknownMember)?;
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

    fn leave(&mut self, name: &str, member_ids: &[String]) -> Vec<GroupResult<()>> {
        let mut results = Vec::new();
        for member_id in member_ids {
            let known = self
                .groups
                .get(name)
                .is_some_and(|g| g.members.contains_key(member_id));
            if known {
                self.remove_member(name, member_id);
                results.push(Ok(()));
            } else {
                results.push(Err(GroupError::UnknownMember));
            }
        }
        results
    }

    fn tick(&mut self) {
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
                self.remove_member(&name, &member_id);
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

    fn commit(
        &mut self,
        name: &str,
        member_id: &str,
        generation: i32,
        offsets: &[(String, u32, CommittedOffset)],
    ) -> GroupResult<()> {
        if name.is_empty() || name.len() > 255 {
            return Err(GroupError::InvalidGroupId);
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
        let too_large = offsets
            .iter()
            .any(|(_, _, c)| c.metadata.as_ref().is_some_and(|m| m.len() > 4096));
        if too_large {
            return Err(GroupError::MetadataTooLarge);
        }
        if offsets.is_empty() {
            return Ok(());
        }
        let by_topic = self.committed.entry(name.to_string()).or_default();
        for (topic, partition, offset) in offsets {
            by_topic
                .entry(topic.clone())
                .or_default()
                .insert(*partition, offset.clone());
        }
        Ok(())
    }

    fn fetch(
        &self,
        name: &str,
        wanted: Option<&[(String, Vec<u32>)]>,
    ) -> Vec<(String, u32, Option<CommittedOffset>)> {
        let empty = BTreeMap::new();
        let by_topic = self.committed.get(name).unwrap_or(&empty);
        let mut rows = Vec::new();
        match wanted {
            None => {
                for (topic, partitions) in by_topic {
                    for (partition, offset) in partitions {
                        rows.push((topic.clone(), *partition, Some(offset.clone())));
                    }
                }
            }
            Some(wanted) => {
                for (topic, partitions) in wanted {
                    for partition in partitions {
                        let offset = by_topic.get(topic).and_then(|p| p.get(partition));
                        rows.push((topic.clone(), *partition, offset.cloned()));
                    }
                }
            }
        }
        rows
    }

    fn delete(&mut self, name: &str) -> GroupResult<()> {
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

    fn forget_topic(&mut self, topic: &str) {
        for by_topic in self.committed.values_mut() {
            by_topic.remove(topic);
        }
    }

    /// The coordinator is dropped and opened again: members are gone (whoever waited
    /// hears the wait was given up), committed offsets stay.
    fn reopen(&mut self) {
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

    fn describe(&self, name: &str) -> GroupDescription {
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

    fn list(&self) -> Vec<GroupListing> {
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

// ---------------------------------------------------------------------------------
// The run: random steps applied to both, compared after each.
// ---------------------------------------------------------------------------------

/// What a well-behaved client does next.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
enum Next {
    #[default]
    Join,
    Sync,
    Heartbeat,
}

/// What a simulated client knows of itself.
#[derive(Debug, Clone, Default)]
struct Client {
    next: Next,
    group: String,
    client_id: String,
    /// The member id the coordinator gave it.
    member_id: Option<String>,
    generation: i32,
    /// The roster of the generation it leads.
    roster: Option<Vec<String>>,
}

#[derive(Debug)]
enum Op {
    Join {
        client: usize,
        request: JoinRequest,
    },
    Sync {
        client: usize,
        group: String,
        member_id: String,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
    },
    Heartbeat {
        client: usize,
        group: String,
        member_id: String,
        generation: i32,
    },
    Leave {
        group: String,
        member_ids: Vec<String>,
    },
    /// Time passes, then the maintenance tick runs.
    Advance {
        ms: u64,
    },
    Commit {
        group: String,
        member_id: String,
        generation: i32,
        offsets: Vec<(String, u32, CommittedOffset)>,
    },
    Fetch {
        group: String,
        wanted: Option<Vec<(String, Vec<u32>)>>,
    },
    Delete {
        group: String,
    },
    ForgetTopic {
        topic: String,
    },
    Reopen,
}

enum Waiting {
    Join(Pending<JoinResult>),
    Sync(Pending<Bytes>),
}

/// A request whose answer has not been looked at: the client that sent it, under
/// which client id, and the answer to come.
struct Outstanding {
    client: usize,
    client_id: String,
    answer: Waiting,
}

struct Run {
    rng: SmallRng,
    dir: tempfile::TempDir,
    runtime: tokio::runtime::Runtime,
    real: Coordinator,
    start: Instant,
    model: Model,
    clients: Vec<Client>,
    outstanding: BTreeMap<Ticket, Outstanding>,
    next_ticket: Ticket,
    next_name: u64,
    step: usize,
}

fn open(dir: &std::path::Path) -> Coordinator {
    Coordinator::new(Arc::new(
        FileOffsetStore::open(dir).expect("open the store"),
    ))
    .expect("open the coordinator")
}

impl Run {
    fn new(seed: u64) -> Run {
        let dir = tempfile::tempdir().expect("tempdir");
        let real = open(dir.path());
        let mut run = Run {
            rng: SmallRng::seed_from_u64(seed),
            dir,
            runtime: tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime"),
            real,
            start: Instant::now(),
            model: Model::default(),
            clients: vec![Client::default(); CLIENTS],
            outstanding: BTreeMap::new(),
            next_ticket: 0,
            next_name: 0,
            step: 0,
        };
        run.clients = (0..CLIENTS).map(|_| run.fresh_client()).collect();
        run
    }

    /// A client starting over: a client id of its own, no member id yet.
    fn fresh_client(&mut self) -> Client {
        Client {
            next: Next::Join,
            group: self.pick_group(),
            client_id: self.fresh_name('c'),
            member_id: None,
            generation: -1,
            roster: None,
        }
    }

    fn fresh_name(&mut self, letter: char) -> String {
        self.next_name += 1;
        format!("{letter}{:05}", self.next_name)
    }

    /// Mostly the first group, so that it gets crowded.
    fn pick_group(&mut self) -> String {
        let index = usize::from(self.rng.gen_bool(0.3));
        GROUP_NAMES[index].to_string()
    }

    /// A client with a request waiting for its answer.
    fn is_waiting(&self, client: usize) -> bool {
        let client_id = &self.clients[client].client_id;
        self.outstanding
            .values()
            .any(|o| o.client == client && o.client_id == *client_id)
    }

    /// What a well-behaved client does now: wait for its answer, join, sync or
    /// heartbeat.
    fn natural_op(&mut self, client: usize) -> Op {
        if self.is_waiting(client) {
            return Op::Advance {
                ms: *[0, 20, 50, 100, 300].choose(&mut self.rng).expect("steps"),
            };
        }
        match self.clients[client].next {
            Next::Join => self.join_op(client),
            Next::Sync => self.sync_op(client),
            Next::Heartbeat => self.heartbeat_op(client),
        }
    }

    fn heartbeat_op(&mut self, client: usize) -> Op {
        Op::Heartbeat {
            client,
            group: if self.rng.gen_bool(0.05) {
                self.pick_group()
            } else {
                self.clients[client].group.clone()
            },
            member_id: self.member_id_of(client),
            generation: self.generation_of(client),
        }
    }

    /// The client's generation, now and then off by one.
    fn generation_of(&mut self, client: usize) -> i32 {
        let known = self.clients[client].generation;
        if self.rng.gen_bool(0.1) {
            known + self.rng.gen_range(-1..=1)
        } else {
            known
        }
    }

    fn member_id_of(&self, client: usize) -> String {
        self.clients[client].member_id.clone().unwrap_or_default()
    }

    fn next_op(&mut self) -> Op {
        let client = self.rng.gen_range(0..CLIENTS);
        if self.rng.gen_bool(0.65) {
            return self.natural_op(client);
        }
        match self.rng.gen_range(0..100) {
            0..=19 => self.join_op(client),
            20..=33 => self.sync_op(client),
            34..=53 => self.heartbeat_op(client),
            54..=58 => {
                let group = self.clients[client].group.clone();
                let count = self.rng.gen_range(1..=2);
                let member_ids = (0..count)
                    .map(|_| {
                        if self.rng.gen_bool(0.1) {
                            self.fresh_name('z')
                        } else {
                            let other = self.rng.gen_range(0..CLIENTS);
                            self.member_id_of(other)
                        }
                    })
                    .collect();
                Op::Leave { group, member_ids }
            }
            59..=78 => {
                let steps: &[u64] = if self.rng.gen_bool(0.85) {
                    &[0, 20, 50, 100, 200, 300, 500]
                } else {
                    &[1000, 1500, 3000, 6000]
                };
                Op::Advance {
                    ms: *steps.choose(&mut self.rng).expect("steps"),
                }
            }
            79..=87 => self.commit_op(client),
            88..=92 => {
                let group = self.pick_group();
                let wanted = self.rng.gen_bool(0.5).then(|| {
                    let mut wanted = Vec::new();
                    for topic in TOPICS {
                        if self.rng.gen_bool(0.7) {
                            wanted.push((topic.to_string(), vec![0, self.rng.gen_range(0..3)]));
                        }
                    }
                    wanted
                });
                Op::Fetch { group, wanted }
            }
            93..=95 => Op::Delete {
                group: self.pick_group(),
            },
            96 => Op::ForgetTopic {
                topic: TOPICS.choose(&mut self.rng).expect("topics").to_string(),
            },
            _ => Op::Reopen,
        }
    }

    fn join_op(&mut self, client: usize) -> Op {
        let fresh = self.clients[client].member_id.is_none() || self.rng.gen_bool(0.05);
        if fresh {
            self.clients[client] = self.fresh_client();
        }
        let known = &self.clients[client];
        let (group, client_id) = (known.group.clone(), known.client_id.clone());
        let mut member_id = self.member_id_of(client);
        if self.rng.gen_bool(0.03) {
            member_id = self.fresh_name('z');
        }
        // Mostly a shared protocol, sometimes not; sometimes new metadata.
        let count = self.rng.gen_range(1..=PROTOCOLS.len());
        let mut names: Vec<&str> = PROTOCOLS
            .choose_multiple(&mut self.rng, count)
            .copied()
            .collect();
        if self.rng.gen_bool(0.8) && !names.contains(&"range") {
            names.push("range");
        }
        if self.rng.gen_bool(0.02) {
            names.clear();
        }
        let version = self.rng.gen_range(0..2);
        let protocols = names
            .iter()
            .map(|name| {
                (
                    name.to_string(),
                    Bytes::from(format!("{client_id}:{name}:{version}")),
                )
            })
            .collect();
        let session_timeout_ms = if self.rng.gen_bool(0.03) {
            999
        } else {
            *[1000, 1500, 3000].choose(&mut self.rng).expect("timeouts")
        };
        Op::Join {
            client,
            request: JoinRequest {
                group: if self.rng.gen_bool(0.02) {
                    String::new()
                } else {
                    group
                },
                member_id,
                group_instance_id: self.rng.gen_bool(0.2).then(|| format!("instance-{client}")),
                client_id,
                client_host: format!("10.0.0.{client}"),
                session_timeout_ms,
                rebalance_timeout_ms: *[1000, 2000, 5000].choose(&mut self.rng).expect("timeouts"),
                protocol_type: if self.rng.gen_bool(0.95) {
                    "consumer".into()
                } else {
                    "connect".into()
                },
                protocols,
                require_member_id: self.rng.gen_bool(0.6),
            },
        }
    }

    fn sync_op(&mut self, client: usize) -> Op {
        let member_id = self.member_id_of(client);
        let generation = self.generation_of(client);
        let step = self.step;
        let mut assignments: Vec<(String, Bytes)> = match self.clients[client].roster.clone() {
            Some(roster) => roster
                .into_iter()
                .filter(|_| self.rng.gen_bool(0.85))
                .map(|id| {
                    let bytes = Bytes::from(format!("{step}:{}", name_of(&id)));
                    (id, bytes)
                })
                .collect(),
            None if self.rng.gen_bool(0.1) => {
                vec![(member_id.clone(), Bytes::from_static(b"not the leader"))]
            }
            None => Vec::new(),
        };
        if self.rng.gen_bool(0.1) {
            assignments.push((self.fresh_name('z'), Bytes::from_static(b"nobody")));
        }
        if self.rng.gen_bool(0.1) {
            if let Some((id, _)) = assignments.first().cloned() {
                assignments.push((id, Bytes::from(format!("{step}:again"))));
            }
        }
        Op::Sync {
            client,
            group: self.clients[client].group.clone(),
            member_id,
            generation,
            assignments,
        }
    }

    fn commit_op(&mut self, client: usize) -> Op {
        let outsider = self.rng.gen_bool(0.2);
        let (group, member_id, generation) = if outsider {
            (self.pick_group(), String::new(), -1)
        } else {
            let generation = self.generation_of(client);
            (
                self.clients[client].group.clone(),
                self.member_id_of(client),
                generation,
            )
        };
        let count = self.rng.gen_range(0..=3);
        let offsets = (0..count)
            .map(|_| {
                let metadata = match self.rng.gen_range(0..20) {
                    0 => Some("x".repeat(4097)),
                    1..=7 => Some(format!("m{}", self.step)),
                    _ => None,
                };
                (
                    TOPICS.choose(&mut self.rng).expect("topics").to_string(),
                    self.rng.gen_range(0..3),
                    CommittedOffset {
                        offset: self.rng.gen_range(0..1000),
                        metadata,
                    },
                )
            })
            .collect();
        Op::Commit {
            group,
            member_id,
            generation,
            offsets,
        }
    }

    fn now(&self) -> Instant {
        self.start + Duration::from_millis(self.model.now_ms)
    }

    fn wait_for(&mut self, client: usize, answer: Waiting) -> Ticket {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        let client_id = self.clients[client].client_id.clone();
        self.outstanding.insert(
            ticket,
            Outstanding {
                client,
                client_id,
                answer,
            },
        );
        ticket
    }

    fn apply(&mut self, op: &Op) {
        let now = self.now();
        match op {
            Op::Join { client, request } => {
                let pending = self
                    .runtime
                    .block_on(self.real.begin_join(request.clone(), now));
                let ticket = self.wait_for(*client, Waiting::Join(pending));
                let request = request.clone();
                let modelled = ModelJoin {
                    group: request.group,
                    member_id: name_of(&request.member_id),
                    group_instance_id: request.group_instance_id,
                    client_id: request.client_id,
                    client_host: request.client_host,
                    session_ms: request.session_timeout_ms,
                    rebalance_ms: request.rebalance_timeout_ms,
                    protocol_type: request.protocol_type,
                    protocols: request.protocols,
                    require_member_id: request.require_member_id,
                };
                self.model.join(modelled, ticket);
            }
            Op::Sync {
                client,
                group,
                member_id,
                generation,
                assignments,
            } => {
                let pending = self.runtime.block_on(self.real.begin_sync(
                    group,
                    member_id,
                    *generation,
                    assignments.clone(),
                    now,
                ));
                let ticket = self.wait_for(*client, Waiting::Sync(pending));
                let named: Vec<(String, Bytes)> = assignments
                    .iter()
                    .map(|(id, bytes)| (name_of(id), bytes.clone()))
                    .collect();
                self.model
                    .sync(group, &name_of(member_id), *generation, &named, ticket);
            }
            Op::Heartbeat {
                client,
                group,
                member_id,
                generation,
            } => {
                let real =
                    self.runtime
                        .block_on(self.real.heartbeat(group, member_id, *generation, now));
                let expected = self
                    .model
                    .heartbeat(group, &name_of(member_id), *generation);
                assert_eq!(real, expected, "heartbeat");
                self.clients[*client].next = if real.is_ok() {
                    Next::Heartbeat
                } else {
                    Next::Join
                };
            }
            Op::Leave { group, member_ids } => {
                let real = self
                    .runtime
                    .block_on(self.real.leave(group, member_ids, now));
                let named: Vec<String> = member_ids.iter().map(|id| name_of(id)).collect();
                assert_eq!(real, self.model.leave(group, &named), "leave");
            }
            Op::Advance { ms } => {
                self.model.now_ms += ms;
                let now = self.now();
                self.runtime.block_on(self.real.tick(now));
                self.model.tick();
            }
            Op::Commit {
                group,
                member_id,
                generation,
                offsets,
            } => {
                let real = self.runtime.block_on(self.real.commit(
                    group,
                    member_id,
                    *generation,
                    offsets.clone(),
                ));
                let expected = self
                    .model
                    .commit(group, &name_of(member_id), *generation, offsets);
                assert_eq!(real, expected, "commit");
            }
            Op::Fetch { group, wanted } => {
                let real = self.real.fetch_offsets(group, wanted.as_deref());
                assert_eq!(real, self.model.fetch(group, wanted.as_deref()), "fetch");
            }
            Op::Delete { group } => {
                let real = self.runtime.block_on(self.real.delete(group));
                assert_eq!(real, self.model.delete(group), "delete");
            }
            Op::ForgetTopic { topic } => {
                self.real.forget_topic(topic).expect("forget a topic");
                self.model.forget_topic(topic);
            }
            Op::Reopen => {
                self.real = open(self.dir.path());
                self.model.reopen();
            }
        }
    }

    /// Answers that arrived must be the model's; the client learns from them.
    fn check_answers(&mut self) {
        let tickets: Vec<Ticket> = self.outstanding.keys().copied().collect();
        for ticket in tickets {
            let waiting = self.outstanding.get_mut(&ticket).expect("listed");
            let real = match &mut waiting.answer {
                Waiting::Join(pending) => pending.try_take().map(|r| {
                    learn_join(&mut self.clients, waiting.client, &waiting.client_id, &r);
                    Answer::Join(named_join(r))
                }),
                Waiting::Sync(pending) => pending.try_take().map(|r| {
                    let client = &mut self.clients[waiting.client];
                    if client.client_id == waiting.client_id {
                        client.next = if r.is_ok() {
                            Next::Heartbeat
                        } else {
                            Next::Join
                        };
                    }
                    Answer::Sync(r.map_err(named_error))
                }),
            };
            let expected = self.model.delivered.remove(&ticket);
            assert_eq!(real, expected, "the answer to request #{ticket}");
            if real.is_some() {
                self.outstanding.remove(&ticket);
            }
        }
        assert!(
            self.model.delivered.is_empty(),
            "the model answered requests the coordinator never had: {:?}",
            self.model.delivered
        );
    }

    /// Every group, the list and the committed offsets agree.
    fn check_groups(&mut self) {
        for group in GROUP_NAMES {
            let real = named_description(self.runtime.block_on(self.real.describe(group)));
            assert_eq!(real, self.model.describe(group), "description of {group}");
            assert_eq!(
                self.real.fetch_offsets(group, None),
                self.model.fetch(group, None),
                "offsets of {group}"
            );
        }
        let listed = self.runtime.block_on(self.real.list());
        assert_eq!(listed, self.model.list(), "group list");
    }
}

/// A client learns its id, generation and (as leader) roster from a JoinGroup answer
/// to a request it sent under its current client id.
fn learn_join(
    clients: &mut [Client],
    client: usize,
    client_id: &str,
    result: &GroupResult<JoinResult>,
) {
    let client = &mut clients[client];
    if client.client_id != client_id {
        return;
    }
    match result {
        Ok(joined) => {
            client.next = Next::Sync;
            client.member_id = Some(joined.member_id.clone());
            client.generation = joined.generation;
            client.roster = (joined.leader == joined.member_id)
                .then(|| joined.members.iter().map(|m| m.member_id.clone()).collect());
        }
        Err(GroupError::MemberIdRequired(id)) => {
            client.next = Next::Join;
            client.member_id = Some(id.clone());
        }
        Err(_) => client.next = Next::Join,
    }
}

fn env_number(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value} is not a number")),
    )
}

fn run_seed(seed: u64, steps: usize, trace: &mut Vec<String>) {
    let mut run = Run::new(seed);
    for step in 0..steps {
        run.step = step;
        let op = run.next_op();
        trace.push(format!("step {step} at {} ms: {op:?}", run.model.now_ms));
        run.apply(&op);
        run.check_answers();
        run.check_groups();
    }
}

#[test]
fn the_coordinator_agrees_with_a_plain_model() {
    let seeds: Vec<u64> = match env_number("GROUPS_MODEL_SEED") {
        Some(seed) => vec![seed],
        None => (0..env_number("GROUPS_MODEL_SEEDS").unwrap_or(120)).collect(),
    };
    let steps = env_number("GROUPS_MODEL_STEPS").unwrap_or(200) as usize;
    for seed in seeds {
        let mut trace = Vec::new();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_seed(seed, steps, &mut trace)
        }));
        if outcome.is_err() {
            let from = trace.len().saturating_sub(40);
            for line in &trace[from..] {
                eprintln!("{line}");
            }
            panic!(
                "seed {seed} failed at step {} (the last steps are above); replay it with \
                 GROUPS_MODEL_SEED={seed} cargo test -p ferry-broker --test groups_model",
                trace.len().saturating_sub(1)
            );
        }
    }
}
