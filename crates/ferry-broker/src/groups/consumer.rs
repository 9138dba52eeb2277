//! Consumer groups of the next-generation protocol (KIP-848): the coordinator assigns
//! partitions itself, members heartbeat their subscriptions and what they own, and
//! partitions move between members incrementally. One group's state machine: time is
//! an input; no clock, no waiting, no disk.
//!
//! # Epochs
//!
//! The group epoch grows whenever the membership or what it subscribes to changes
//! (a member joins, leaves or expires, a subscription changes, a subscribed topic gains
//! partitions or appears). A new group epoch computes a new target assignment (the
//! range assignor: each topic's partitions split in contiguous ranges over the members
//! subscribed to it, in member id order). A member's epoch reaches the group's when
//! it has been given its target, as far as others have let go of its partitions.
//!
//! # Revocation first
//!
//! A partition is never given to a member while another member holds it. A member
//! whose target lacks partitions it holds is first asked to give them up (its
//! assignment without them, its epoch unchanged); once a heartbeat shows it no longer
//! owns them they are free, and it moves on to its target. Partitions still held by a
//! member that has not revoked them yet are given later, on a heartbeat after their
//! release. A member that has not revoked within its rebalance timeout is removed
//! from the group (its partitions go to the others), as if its session had ended.
//!
//! # Leaving
//!
//! Member epoch -1 leaves at once. A static member (one with an instance id) that
//! leaves with epoch -2 keeps its place and assignment until its session runs out, so
//! that a process restarting with the same instance id takes over where it was,
//! without moving any partition.

use super::types::{GroupError, GroupResult, MEMBERS_PER_GROUP_MAX, MEMBER_ID_BYTES_MAX};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// How often members are told to heartbeat.
pub const HEARTBEAT_INTERVAL_MS: i32 = 2_500;
/// A member that does not heartbeat for this long is removed (Kafka's default
/// `group.consumer.session.timeout.ms`).
pub const SESSION_TIMEOUT_MS: u64 = 45_000;
/// How long a member may take to revoke partitions, when it does not say
/// (`rebalance_timeout_ms`), and the bounds on what it may say.
pub const REBALANCE_TIMEOUT_MS_DEFAULT: u64 = 300_000;
pub const REBALANCE_TIMEOUT_MS_MIN: u64 = 1_000;
pub const REBALANCE_TIMEOUT_MS_MAX: u64 = 300_000;
/// Topics one member may subscribe to, at most.
pub const SUBSCRIBED_TOPICS_MAX: usize = 10_000;
/// The only assignor: the range assignor. `uniform` (Kafka's default name) is
/// answered with it too.
pub const ASSIGNORS: [&str; 2] = ["range", "uniform"];

/// Member epoch of a member leaving the group.
pub const LEAVE_EPOCH: i32 = -1;
/// Member epoch of a static member leaving for a while (it may come back).
pub const STATIC_LEAVE_EPOCH: i32 = -2;

/// Partitions by topic.
pub type Assignment = BTreeMap<String, BTreeSet<u32>>;

/// One ConsumerGroupHeartbeat, in Ferry's terms.
#[derive(Debug, Clone, Default)]
pub struct ConsumerHeartbeat {
    pub group: String,
    /// Empty on a first heartbeat of a client that lets the coordinator choose.
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack: Option<String>,
    pub rebalance_timeout_ms: i32,
    /// `None`: unchanged since the last heartbeat.
    pub subscribed: Option<Vec<String>>,
    pub assignor: Option<String>,
    /// What the member owns now; `None`: unchanged.
    pub owned: Option<Assignment>,
    pub client_id: String,
    pub client_host: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerHeartbeatResult {
    pub member_id: String,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    /// The member's assignment when it changed (or on joining); `None`: unchanged.
    pub assignment: Option<Assignment>,
}

/// A member as ConsumerGroupDescribe shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerMemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack: Option<String>,
    pub member_epoch: i32,
    pub client_id: String,
    pub client_host: String,
    pub subscribed: Vec<String>,
    pub assignment: Assignment,
    pub target: Assignment,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupDescription {
    pub group: String,
    /// `Empty`, `Reconciling` (members still moving to the target) or `Stable`.
    pub state: &'static str,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: &'static str,
    pub members: Vec<ConsumerMemberDescription>,
}

#[derive(Debug, Clone)]
struct Member {
    instance_id: Option<String>,
    rack: Option<String>,
    client_id: String,
    client_host: String,
    subscribed: BTreeSet<String>,
    member_epoch: i32,
    /// The epoch before the last change, accepted once more (the member may have
    /// missed the answer that moved it on).
    previous_epoch: i32,
    /// What the member holds (as far as the coordinator knows).
    assigned: Assignment,
    /// Partitions the member was asked to give up and has not yet.
    revoking: Assignment,
    /// The assignment last sent, so that only changes are sent again.
    sent: Option<Assignment>,
    deadline: Instant,
    /// How long it may take to revoke partitions.
    rebalance_timeout: Duration,
    /// When the partitions it is revoking must be released by.
    revoke_deadline: Option<Instant>,
    /// A static member that left with epoch -2: kept until its session ends.
    away: bool,
}

#[derive(Debug, Default)]
pub struct ConsumerGroup {
    pub group_epoch: i32,
    target_epoch: i32,
    members: BTreeMap<String, Member>,
    target: BTreeMap<String, Assignment>,
    /// Partition counts of the subscribed topics when the target was computed.
    topics: BTreeMap<String, u32>,
}

/// A member's rebalance timeout: what it asked, within bounds; the default when it
/// asked for none (-1 or 0).
fn rebalance_timeout(ms: i32) -> Duration {
    let ms = u64::try_from(ms)
        .ok()
        .filter(|ms| *ms > 0)
        .unwrap_or(REBALANCE_TIMEOUT_MS_DEFAULT)
        .clamp(REBALANCE_TIMEOUT_MS_MIN, REBALANCE_TIMEOUT_MS_MAX);
    Duration::from_millis(ms)
}

fn count(a: &Assignment) -> usize {
    a.values().map(BTreeSet::len).sum()
}

fn minus(a: &Assignment, b: &Assignment) -> Assignment {
    let mut out = Assignment::new();
    for (topic, parts) in a {
        let rest: BTreeSet<u32> = match b.get(topic) {
            Some(other) => parts.difference(other).copied().collect(),
            None => parts.clone(),
        };
        if !rest.is_empty() {
            out.insert(topic.clone(), rest);
        }
    }
    out
}

fn intersects(a: &Assignment, b: &Assignment) -> bool {
    a.iter()
        .any(|(t, ps)| b.get(t).is_some_and(|o| !ps.is_disjoint(o)))
}

impl ConsumerGroup {
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn has_member(&self, member_id: &str) -> bool {
        self.members.contains_key(member_id)
    }

    /// The topics the members subscribe to.
    pub fn subscribed_topics(&self) -> BTreeSet<String> {
        self.members
            .values()
            .flat_map(|m| m.subscribed.iter().cloned())
            .collect()
    }

    /// An offset commit from `member_id` at `epoch` (OffsetCommit v9's member epoch).
    pub fn check_commit(&self, member_id: &str, epoch: i32) -> GroupResult<()> {
        let member = self
            .members
            .get(member_id)
            .ok_or(GroupError::UnknownMember)?;
        if epoch != member.member_epoch {
            return Err(GroupError::StaleMemberEpoch);
        }
        Ok(())
    }

    /// One heartbeat. `partitions` gives a topic's partition count (`None`: no such
    /// topic); `new_member_id` makes an id for a member that did not bring one.
    pub fn heartbeat(
        &mut self,
        hb: &ConsumerHeartbeat,
        now: Instant,
        partitions: &(dyn Fn(&str) -> Option<u32> + Sync),
        new_member_id: impl FnOnce() -> String,
    ) -> GroupResult<ConsumerHeartbeatResult> {
        if hb.member_id.len() > MEMBER_ID_BYTES_MAX
            || hb
                .instance_id
                .as_ref()
                .is_some_and(|i| i.len() > MEMBER_ID_BYTES_MAX)
            || hb
                .rack
                .as_ref()
                .is_some_and(|r| r.len() > MEMBER_ID_BYTES_MAX)
            || hb.client_id.len() > MEMBER_ID_BYTES_MAX
            || hb.subscribed.as_ref().is_some_and(|s| {
                s.len() > SUBSCRIBED_TOPICS_MAX
                    || s.iter()
                        .any(|t| t.len() > crate::config::TOPIC_NAME_BYTES_MAX)
            })
        {
            return Err(GroupError::InvalidRequest("a field over its limit".into()));
        }
        if let Some(a) = &hb.assignor {
            if !ASSIGNORS.contains(&a.as_str()) {
                return Err(GroupError::UnsupportedAssignor);
            }
        }
        let session = Duration::from_millis(SESSION_TIMEOUT_MS);
        let mut changed = false;
        let member_id = match hb.member_epoch {
            0 => {
                let (id, joined) = self.join(hb, now + session, new_member_id)?;
                changed = joined;
                id
            }
            LEAVE_EPOCH | STATIC_LEAVE_EPOCH => {
                return self.leave(hb);
            }
            epoch if epoch > 0 => {
                let m = self
                    .members
                    .get_mut(&hb.member_id)
                    .ok_or(GroupError::UnknownMember)?;
                if epoch != m.member_epoch && epoch != m.previous_epoch {
                    return Err(GroupError::FencedMemberEpoch);
                }
                if m.away {
                    return Err(GroupError::UnknownMember);
                }
                m.deadline = now + session;
                hb.member_id.clone()
            }
            _ => return Err(GroupError::InvalidRequest("a negative member epoch".into())),
        };
        // The member's news: subscriptions, what it owns.
        let m = self
            .members
            .get_mut(&member_id)
            .ok_or(GroupError::UnknownMember)?;
        if let Some(subscribed) = &hb.subscribed {
            let subscribed: BTreeSet<String> = subscribed.iter().cloned().collect();
            if subscribed != m.subscribed {
                m.subscribed = subscribed;
                changed = true;
            }
        }
        if let Some(rack) = &hb.rack {
            m.rack = Some(rack.clone());
        }
        if let Some(owned) = &hb.owned {
            // Whatever it asked to give up and no longer owns is free.
            if !m.revoking.is_empty() && !intersects(owned, &m.revoking) {
                m.assigned = minus(&m.assigned, &m.revoking);
                m.revoking.clear();
                m.revoke_deadline = None;
            }
        }
        // Topics gaining partitions (or appearing) change the target too.
        let topics: BTreeMap<String, u32> = self
            .subscribed_topics()
            .into_iter()
            .filter_map(|t| partitions(&t).map(|n| (t, n)))
            .collect();
        if changed || topics != self.topics {
            self.topics = topics;
            self.bump();
        }
        if self.target_epoch < self.group_epoch {
            self.compute_target();
        }
        let result = self.reconcile(&member_id, now);
        self.check_invariants();
        Ok(result)
    }

    fn join(
        &mut self,
        hb: &ConsumerHeartbeat,
        deadline: Instant,
        new_member_id: impl FnOnce() -> String,
    ) -> GroupResult<(String, bool)> {
        if hb.subscribed.is_none() {
            return Err(GroupError::InvalidRequest(
                "a joining member must send its subscription".into(),
            ));
        }
        // A static member coming back takes over the member it was.
        if let Some(instance) = &hb.instance_id {
            let holder = self
                .members
                .iter()
                .find(|(_, m)| m.instance_id.as_ref() == Some(instance))
                .map(|(id, m)| (id.clone(), m.away));
            if let Some((old_id, away)) = holder {
                if !away && old_id != hb.member_id {
                    return Err(GroupError::UnreleasedInstanceId);
                }
                let mut m = self
                    .members
                    .remove(&old_id)
                    .ok_or(GroupError::UnknownMember)?;
                let id = if hb.member_id.is_empty() {
                    new_member_id()
                } else {
                    hb.member_id.clone()
                };
                m.away = false;
                m.deadline = deadline;
                m.sent = None;
                m.client_id = hb.client_id.clone();
                m.client_host = hb.client_host.clone();
                if let Some(t) = self.target.remove(&old_id) {
                    self.target.insert(id.clone(), t);
                }
                self.members.insert(id.clone(), m);
                return Ok((id, false));
            }
        }
        let id = if hb.member_id.is_empty() {
            new_member_id()
        } else {
            hb.member_id.clone()
        };
        if let Some(m) = self.members.get_mut(&id) {
            // The same member joining again (it lost its state): it keeps nothing.
            m.assigned.clear();
            m.revoking.clear();
            m.revoke_deadline = None;
            m.rebalance_timeout = rebalance_timeout(hb.rebalance_timeout_ms);
            m.sent = None;
            m.member_epoch = 0;
            m.previous_epoch = 0;
            m.deadline = deadline;
            return Ok((id, true));
        }
        if self.members.len() >= MEMBERS_PER_GROUP_MAX {
            return Err(GroupError::GroupFull);
        }
        self.members.insert(
            id.clone(),
            Member {
                instance_id: hb.instance_id.clone(),
                rack: hb.rack.clone(),
                client_id: hb.client_id.clone(),
                client_host: hb.client_host.clone(),
                subscribed: BTreeSet::new(),
                member_epoch: 0,
                previous_epoch: 0,
                assigned: Assignment::new(),
                revoking: Assignment::new(),
                sent: None,
                deadline,
                rebalance_timeout: rebalance_timeout(hb.rebalance_timeout_ms),
                revoke_deadline: None,
                away: false,
            },
        );
        Ok((id, true))
    }

    fn leave(&mut self, hb: &ConsumerHeartbeat) -> GroupResult<ConsumerHeartbeatResult> {
        let static_member = hb.member_epoch == STATIC_LEAVE_EPOCH;
        let Some(m) = self.members.get_mut(&hb.member_id) else {
            return Err(GroupError::UnknownMember);
        };
        if static_member && m.instance_id.is_some() {
            m.away = true;
        } else {
            self.remove(&hb.member_id);
        }
        self.check_invariants();
        Ok(ConsumerHeartbeatResult {
            member_id: hb.member_id.clone(),
            member_epoch: hb.member_epoch,
            heartbeat_interval_ms: 0,
            assignment: None,
        })
    }

    fn remove(&mut self, member_id: &str) {
        if self.members.remove(member_id).is_some() {
            self.target.remove(member_id);
            self.bump();
        }
    }

    fn bump(&mut self) {
        self.group_epoch = self.group_epoch.saturating_add(1);
    }

    /// Drops members whose session ran out. True when the group changed.
    pub fn expire(&mut self, now: Instant) -> bool {
        let gone: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| m.deadline <= now || m.revoke_deadline.is_some_and(|d| d <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &gone {
            self.remove(id);
        }
        self.check_invariants();
        !gone.is_empty()
    }

    /// The range assignor over the members present, into `self.target`.
    fn compute_target(&mut self) {
        let mut target: BTreeMap<String, Assignment> = self
            .members
            .keys()
            .map(|id| (id.clone(), Assignment::new()))
            .collect();
        for (topic, &n) in &self.topics {
            let readers: Vec<&String> = self
                .members
                .iter()
                .filter(|(_, m)| m.subscribed.contains(topic))
                .map(|(id, _)| id)
                .collect();
            if readers.is_empty() {
                continue;
            }
            let k = readers.len() as u32;
            let (each, extra) = (n / k, n % k);
            let mut next = 0;
            for (i, id) in readers.iter().enumerate() {
                let take = each + u32::from((i as u32) < extra);
                if take > 0 {
                    if let Some(a) = target.get_mut(*id) {
                        a.insert(topic.clone(), (next..next + take).collect());
                    }
                }
                next += take;
            }
            debug_assert_eq!(next, n, "the range assignor left partitions of {topic}");
        }
        self.target = target;
        self.target_epoch = self.group_epoch;
    }

    /// Moves one member towards its target: revocation first, then the partitions no
    /// one else holds.
    fn reconcile(&mut self, member_id: &str, now: Instant) -> ConsumerHeartbeatResult {
        let target = self.target.get(member_id).cloned().unwrap_or_default();
        // Partitions held by the other members.
        let mut held = Assignment::new();
        for (id, m) in &self.members {
            if id != member_id {
                for (t, ps) in &m.assigned {
                    held.entry(t.clone())
                        .or_default()
                        .extend(ps.iter().copied());
                }
            }
        }
        let target_epoch = self.target_epoch;
        let Some(m) = self.members.get_mut(member_id) else {
            return ConsumerHeartbeatResult {
                member_id: member_id.to_string(),
                member_epoch: 0,
                heartbeat_interval_ms: HEARTBEAT_INTERVAL_MS,
                assignment: None,
            };
        };
        if m.revoking.is_empty() {
            let revoke = minus(&m.assigned, &target);
            if !revoke.is_empty() {
                m.revoking = revoke;
                m.revoke_deadline = Some(now + m.rebalance_timeout);
            } else {
                let free = minus(&minus(&target, &m.assigned), &held);
                for (t, ps) in free {
                    m.assigned.entry(t).or_default().extend(ps);
                }
                if m.member_epoch != target_epoch {
                    m.previous_epoch = m.member_epoch;
                    m.member_epoch = target_epoch;
                }
            }
        }
        let now_assigned = minus(&m.assigned, &m.revoking);
        let assignment = if m.sent.as_ref() != Some(&now_assigned) {
            m.sent = Some(now_assigned.clone());
            Some(now_assigned)
        } else {
            None
        };
        ConsumerHeartbeatResult {
            member_id: member_id.to_string(),
            member_epoch: m.member_epoch,
            heartbeat_interval_ms: HEARTBEAT_INTERVAL_MS,
            assignment,
        }
    }

    /// No partition is held by two members; revoking is part of what is held.
    fn check_invariants(&self) {
        if cfg!(debug_assertions) {
            let mut seen: BTreeSet<(&str, u32)> = BTreeSet::new();
            for m in self.members.values() {
                for (t, ps) in &m.assigned {
                    for p in ps {
                        assert!(seen.insert((t, *p)), "{t}/{p} held by two members");
                    }
                }
                assert_eq!(
                    count(&minus(&m.revoking, &m.assigned)),
                    0,
                    "revoking what is not held"
                );
            }
            assert!(self.target_epoch <= self.group_epoch);
        }
    }

    pub fn describe(&self, group: &str) -> ConsumerGroupDescription {
        let stable = self
            .members
            .values()
            .all(|m| m.member_epoch == self.target_epoch && m.revoking.is_empty());
        ConsumerGroupDescription {
            group: group.to_string(),
            state: if self.members.is_empty() {
                "Empty"
            } else if stable {
                "Stable"
            } else {
                "Reconciling"
            },
            group_epoch: self.group_epoch,
            assignment_epoch: self.target_epoch,
            assignor: ASSIGNORS[0],
            members: self
                .members
                .iter()
                .map(|(id, m)| ConsumerMemberDescription {
                    member_id: id.clone(),
                    instance_id: m.instance_id.clone(),
                    rack: m.rack.clone(),
                    member_epoch: m.member_epoch,
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    subscribed: m.subscribed.iter().cloned().collect(),
                    assignment: m.assigned.clone(),
                    target: self.target.get(id).cloned().unwrap_or_default(),
                })
                .collect(),
        }
    }
}
