//! The group APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! OffsetCommit, OffsetFetch, ListGroups, DescribeGroups, DeleteGroups, mapped onto the
//! broker's group coordinator (OffsetDelete is in `offset_delete`).
//!
//! ACLs as in Kafka: FindCoordinator, DescribeGroups and OffsetFetch need Describe on the
//! group, the membership APIs and OffsetCommit need Read on it, DeleteGroups Delete;
//! OffsetCommit needs Read on each topic and OffsetFetch Describe on each topic.

use super::{Ctx, Session};
use crate::errors;
use bytes::Bytes;
use ferry_auth::{Operation, ResourceType};
use ferry_broker::groups::{
    CommittedOffset, GroupError, GroupListing, GroupState, JoinRequest, LeavingMember,
    PartitionOffset,
};
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator as KafkaCoordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use std::time::Instant;

pub(super) fn code(e: &GroupError) -> i16 {
    match e {
        GroupError::UnknownMember => ResponseError::UnknownMemberId,
        GroupError::IllegalGeneration => ResponseError::IllegalGeneration,
        GroupError::RebalanceInProgress => ResponseError::RebalanceInProgress,
        GroupError::MemberIdRequired(_) => ResponseError::MemberIdRequired,
        GroupError::FencedInstanceId => ResponseError::FencedInstanceId,
        GroupError::InconsistentProtocol => ResponseError::InconsistentGroupProtocol,
        GroupError::InvalidSessionTimeout => ResponseError::InvalidSessionTimeout,
        GroupError::GroupNotFound => ResponseError::GroupIdNotFound,
        GroupError::NonEmptyGroup => ResponseError::NonEmptyGroup,
        GroupError::InvalidGroupId => ResponseError::InvalidGroupId,
        GroupError::GroupFull => ResponseError::GroupMaxSizeReached,
        GroupError::TooManyGroups => ResponseError::CoordinatorNotAvailable,
        GroupError::MetadataTooLarge => ResponseError::OffsetMetadataTooLarge,
        GroupError::Storage(_) => ResponseError::CoordinatorNotAvailable,
        GroupError::FencedMemberEpoch => ResponseError::FencedMemberEpoch,
        GroupError::StaleMemberEpoch => ResponseError::StaleMemberEpoch,
        GroupError::UnreleasedInstanceId => ResponseError::UnreleasedInstanceId,
        GroupError::UnsupportedAssignor => ResponseError::UnsupportedAssignor,
        GroupError::NotCoordinator => ResponseError::NotCoordinator,
        GroupError::InvalidRequest(_) => ResponseError::InvalidRequest,
    }
    .code()
}

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

fn may_group(ctx: &Ctx, session: &Session, op: Operation, group: &str) -> bool {
    session.may(&ctx.auth, op, ResourceType::Group, group)
}

/// The error a membership API answers before reaching the coordinator:
/// GROUP_AUTHORIZATION_FAILED when the session may not Read the group, and in shared
/// mode NOT_COORDINATOR when another node coordinates it; else `None`.
pub async fn group_refused(ctx: &Ctx, session: &Session, group: &GroupId) -> Option<i16> {
    if !may_group(ctx, session, Operation::Read, &group.0) {
        return Some(ResponseError::GroupAuthorizationFailed.code());
    }
    not_here(ctx, &group.0).await
}

/// A JoinGroup refused before it reached the coordinator.
pub fn join_denied(error: i16, version: i16) -> JoinGroupResponse {
    JoinGroupResponse::default()
        .with_error_code(error)
        .with_generation_id(-1)
        .with_protocol_name(if version >= 7 { None } else { Some(s("")) })
}

pub async fn find_coordinator(
    ctx: &Ctx,
    req: FindCoordinatorRequest,
    version: i16,
    session: &Session,
) -> FindCoordinatorResponse {
    let error_for = |key: &str| {
        if req.key_type == KEY_TYPE_TRANSACTION {
            if session.may(
                &ctx.auth,
                Operation::Describe,
                ferry_auth::ResourceType::TransactionalId,
                key,
            ) {
                errors::NONE
            } else {
                ResponseError::TransactionalIdAuthorizationFailed.code()
            }
        } else if req.key_type != KEY_TYPE_GROUP {
            ResponseError::CoordinatorNotAvailable.code()
        } else if !may_group(ctx, session, Operation::Describe, key) {
            ResponseError::GroupAuthorizationFailed.code()
        } else {
            errors::NONE
        }
    };
    // The coordinator of `key`, or the error to answer: this node in the local mode; in
    // shared mode, the node holding (or due to take) the group's or the transactional
    // id's lease.
    let answer_for = |key: String| async move {
        let error = error_for(&key);
        if error != errors::NONE {
            return Err(error);
        }
        let coordinator = if req.key_type == KEY_TYPE_TRANSACTION {
            ctx.broker.transaction_coordinator(&key).await
        } else {
            ctx.broker.group_coordinator(&key).await
        };
        match coordinator {
            None => Ok((
                BrokerId(ctx.config.node_id),
                s(ctx.config.advertised_host.clone()),
                ctx.config.advertised_port as i32,
            )),
            Some(Ok(node)) => Ok((
                BrokerId(node.node_id),
                s(node.kafka_host),
                i32::from(node.kafka_port),
            )),
            Some(Err(_)) => Err(ResponseError::CoordinatorNotAvailable.code()),
        }
    };
    if version >= 4 {
        let mut coordinators = Vec::with_capacity(req.coordinator_keys.len());
        for key in req.coordinator_keys {
            let c = KafkaCoordinator::default().with_key(key.clone());
            coordinators.push(match answer_for(key.to_string()).await {
                Ok((node, host, port)) => c.with_node_id(node).with_host(host).with_port(port),
                Err(error) => c
                    .with_error_code(error)
                    .with_node_id(BrokerId(-1))
                    .with_port(-1),
            });
        }
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    match answer_for(req.key.to_string()).await {
        Ok((node, host, port)) => FindCoordinatorResponse::default()
            .with_node_id(node)
            .with_host(host)
            .with_port(port),
        Err(error) => FindCoordinatorResponse::default()
            .with_error_code(error)
            .with_node_id(BrokerId(-1))
            .with_port(-1),
    }
}

/// In shared mode, the error to answer when this node may not answer for `group`
/// (another node coordinates it, or the lease cannot be read); `None` when it may.
pub async fn not_here(ctx: &Ctx, group: &str) -> Option<i16> {
    ctx.broker.claim_group(group).await.err().map(|e| code(&e))
}

/// [`not_here`] for OffsetFetch: in shared mode the coordinator also reads the group's
/// offsets from Postgres first, where a transaction coordinated by another node may
/// have committed some.
async fn not_here_or_stale(ctx: &Ctx, group: &str) -> Option<i16> {
    if let Some(code) = not_here(ctx, group).await {
        return Some(code);
    }
    match ctx.broker.refresh_group_offsets(group).await {
        Ok(()) => None,
        Err(e) => {
            tracing::debug!(group, error = %e, "Could not read a group's offsets from the metadata database.");
            Some(ResponseError::CoordinatorNotAvailable.code())
        }
    }
}

pub async fn join_group(
    ctx: &Ctx,
    req: JoinGroupRequest,
    version: i16,
    client_id: &str,
    peer: &str,
) -> JoinGroupResponse {
    let session = req.session_timeout_ms;
    let request = JoinRequest {
        group: req.group_id.0.to_string(),
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.map(|g| g.to_string()),
        client_id: client_id.to_string(),
        client_host: peer.to_string(),
        session_timeout_ms: session,
        rebalance_timeout_ms: if req.rebalance_timeout_ms > 0 {
            req.rebalance_timeout_ms
        } else {
            session
        },
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .into_iter()
            .map(|p| (p.name.to_string(), p.metadata))
            .collect(),
        require_member_id: version >= 4,
    };
    let base = JoinGroupResponse::default()
        .with_generation_id(-1)
        .with_protocol_name(if version >= 7 { None } else { Some(s("")) });
    match ctx.broker.groups.join(request, Instant::now()).await {
        Ok(r) => JoinGroupResponse::default()
            .with_generation_id(r.generation)
            .with_protocol_type(if version >= 7 {
                Some(s(r.protocol_type))
            } else {
                None
            })
            .with_protocol_name(Some(s(r.protocol_name)))
            .with_leader(s(r.leader))
            .with_member_id(s(r.member_id))
            .with_members(
                r.members
                    .into_iter()
                    .map(|member| {
                        JoinGroupResponseMember::default()
                            .with_member_id(s(member.member_id))
                            .with_group_instance_id(if version >= 5 {
                                member.group_instance_id.map(s)
                            } else {
                                None
                            })
                            .with_metadata(member.metadata)
                    })
                    .collect(),
            ),
        Err(GroupError::MemberIdRequired(id)) => base
            .with_error_code(ResponseError::MemberIdRequired.code())
            .with_member_id(s(id)),
        Err(e) => base.with_error_code(code(&e)),
    }
}

pub async fn sync_group(ctx: &Ctx, req: SyncGroupRequest, version: i16) -> SyncGroupResponse {
    let assignments = req
        .assignments
        .into_iter()
        .map(|a| (a.member_id.to_string(), a.assignment))
        .collect();
    let result = ctx
        .broker
        .groups
        .sync(
            &req.group_id.0,
            &req.member_id,
            req.group_instance_id.as_deref(),
            req.generation_id,
            assignments,
            Instant::now(),
        )
        .await;
    let resp = if version >= 5 {
        SyncGroupResponse::default()
            .with_protocol_type(req.protocol_type)
            .with_protocol_name(req.protocol_name)
    } else {
        SyncGroupResponse::default()
    };
    match result {
        Ok(assignment) => resp.with_assignment(assignment),
        Err(e) => resp.with_error_code(code(&e)).with_assignment(Bytes::new()),
    }
}

pub async fn heartbeat(ctx: &Ctx, req: HeartbeatRequest) -> HeartbeatResponse {
    match ctx
        .broker
        .groups
        .heartbeat(
            &req.group_id.0,
            &req.member_id,
            req.group_instance_id.as_deref(),
            req.generation_id,
            Instant::now(),
        )
        .await
    {
        Ok(()) => HeartbeatResponse::default(),
        Err(e) => HeartbeatResponse::default().with_error_code(code(&e)),
    }
}

pub async fn leave_group(ctx: &Ctx, req: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    if version < 3 {
        let leaving = LeavingMember {
            member_id: req.member_id.to_string(),
            group_instance_id: None,
        };
        let r = ctx
            .broker
            .groups
            .leave(&req.group_id.0, &[leaving], Instant::now())
            .await;
        let error = r
            .first()
            .and_then(|r| r.as_ref().err())
            .map_or(errors::NONE, code);
        return LeaveGroupResponse::default().with_error_code(error);
    }
    // v3+: a batch, each member by member id, group instance id or both.
    let leaving: Vec<LeavingMember> = req
        .members
        .iter()
        .map(|m| LeavingMember {
            member_id: m.member_id.to_string(),
            group_instance_id: m.group_instance_id.as_ref().map(|i| i.to_string()),
        })
        .collect();
    let results = ctx
        .broker
        .groups
        .leave(&req.group_id.0, &leaving, Instant::now())
        .await;
    let members = req
        .members
        .into_iter()
        .zip(results)
        .map(|(m, r)| {
            MemberResponse::default()
                .with_member_id(m.member_id)
                .with_group_instance_id(m.group_instance_id)
                .with_error_code(r.err().map_or(errors::NONE, |e| code(&e)))
        })
        .collect();
    LeaveGroupResponse::default().with_members(members)
}

pub async fn offset_commit(
    ctx: &Ctx,
    req: OffsetCommitRequest,
    session: &Session,
) -> OffsetCommitResponse {
    let group_allowed = may_group(ctx, session, Operation::Read, &req.group_id.0);
    let topic_allowed = |t: &str| session.may(&ctx.auth, Operation::Read, ResourceType::Topic, t);
    let readable: Vec<bool> = req
        .topics
        .iter()
        .map(|t| topic_allowed(&t.name.0))
        .collect();
    let mut offsets = Vec::new();
    for (t, _) in req
        .topics
        .iter()
        .zip(&readable)
        .filter(|(_, ok)| group_allowed && **ok)
    {
        for p in &t.partitions {
            if p.partition_index >= 0 {
                offsets.push(PartitionOffset {
                    topic: t.name.0.to_string(),
                    partition: p.partition_index as u32,
                    committed: CommittedOffset {
                        offset: p.committed_offset,
                        metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                        // -1 (or, before v6, absent): the client knows no epoch.
                        leader_epoch: (p.committed_leader_epoch >= 0)
                            .then_some(p.committed_leader_epoch),
                    },
                });
            }
        }
    }
    // Offsets for topics Ferry does not have are refused one by one.
    let unknown = |topic: &str, partition: i32| {
        ctx.broker.bounds(topic, partition.max(0) as u32).is_err() || partition < 0
    };
    offsets.retain(|o| !unknown(&o.topic, o.partition as i32));
    // A group the session may not use is not touched at all.
    let result = if group_allowed {
        match ctx.broker.claim_group(&req.group_id.0).await {
            Ok(()) => {
                ctx.broker
                    .groups
                    .commit(
                        &req.group_id.0,
                        &req.member_id,
                        req.group_instance_id.as_deref(),
                        req.generation_id_or_member_epoch,
                        offsets,
                    )
                    .await
            }
            Err(e) => Err(e),
        }
    } else {
        Ok(())
    };
    let topics = req
        .topics
        .into_iter()
        .zip(readable)
        .map(|(t, topic_ok)| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let error = if !group_allowed {
                        ResponseError::GroupAuthorizationFailed.code()
                    } else if !topic_ok {
                        ResponseError::TopicAuthorizationFailed.code()
                    } else if unknown(&t.name.0, p.partition_index) {
                        ResponseError::UnknownTopicOrPartition.code()
                    } else {
                        result.as_ref().err().map_or(errors::NONE, code)
                    };
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(error)
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// The partitions asked for, by topic; `None` asks for every committed one.
type Wanted = Option<Vec<(String, Vec<u32>)>>;
/// A committed offset as OffsetFetch answers it.
struct Committed {
    partition: i32,
    /// -1: nothing committed.
    offset: i64,
    /// -1: none known.
    leader_epoch: i32,
    metadata: Option<String>,
    error: i16,
}

impl Committed {
    /// A partition answered with an error and no offset.
    fn refused(partition: u32, error: i16) -> Self {
        Committed {
            partition: partition as i32,
            offset: -1,
            leader_epoch: -1,
            metadata: None,
            error,
        }
    }
}

/// The committed offsets of `group` the session may see: topics it may not Describe are
/// left out of a listing, and answer TOPIC_AUTHORIZATION_FAILED when asked for by name.
fn fetched(
    ctx: &Ctx,
    session: &Session,
    group: &str,
    wanted: Wanted,
) -> Vec<(String, Vec<Committed>)> {
    let describable = |t: &str| session.may(&ctx.auth, Operation::Describe, ResourceType::Topic, t);
    let mut denied: Vec<(String, Vec<Committed>)> = Vec::new();
    let wanted = wanted.map(|topics| {
        let (ok, refused): (Vec<_>, Vec<_>) = topics.into_iter().partition(|(t, _)| describable(t));
        let code = ResponseError::TopicAuthorizationFailed.code();
        denied = refused
            .into_iter()
            .map(|(t, parts)| {
                let parts = parts.iter().map(|p| Committed::refused(*p, code)).collect();
                (t, parts)
            })
            .collect();
        ok
    });
    let rows = ctx.broker.groups.fetch_offsets(group, wanted.as_deref());
    let mut by_topic: Vec<(String, Vec<Committed>)> = Vec::new();
    for row in rows {
        let (topic, partition) = (row.topic, row.partition);
        if wanted.is_none() && !describable(&topic) {
            continue;
        }
        let entry = match row.committed {
            Some(c) => Committed {
                partition: partition as i32,
                offset: c.offset,
                leader_epoch: c.leader_epoch.unwrap_or(-1),
                metadata: c.metadata,
                error: errors::NONE,
            },
            None => Committed::refused(partition, errors::NONE),
        };
        match by_topic.iter_mut().find(|(t, _)| *t == topic) {
            Some((_, v)) => v.push(entry),
            None => by_topic.push((topic, vec![entry])),
        }
    }
    by_topic.extend(denied);
    by_topic
}

/// The partition numbers a client asks for; negative ones name nothing.
fn partition_indexes(indexes: &[i32]) -> Vec<u32> {
    indexes
        .iter()
        .filter(|p| **p >= 0)
        .map(|p| *p as u32)
        .collect()
}

/// OffsetFetch, in both its forms (one group, v0–7; many groups, v8+). Longer than
/// most functions on purpose: the two forms share their checks and differ only in shape.
pub async fn offset_fetch(
    ctx: &Ctx,
    req: OffsetFetchRequest,
    version: i16,
    session: &Session,
) -> OffsetFetchResponse {
    let group_denied = |g: &str| !may_group(ctx, session, Operation::Describe, g);
    let group_code = ResponseError::GroupAuthorizationFailed.code();
    if version >= 8 {
        let mut seen = std::collections::HashSet::new();
        let mut elsewhere = std::collections::HashMap::new();
        for g in &req.groups {
            if !group_denied(&g.group_id.0) {
                if let Some(code) = not_here_or_stale(ctx, &g.group_id.0).await {
                    elsewhere.insert(g.group_id.0.to_string(), code);
                }
            }
        }
        let groups = req
            .groups
            .into_iter()
            .filter(|g| seen.insert(g.group_id.0.to_string()))
            .map(|g| {
                if group_denied(&g.group_id.0) {
                    return OffsetFetchResponseGroup::default()
                        .with_group_id(g.group_id)
                        .with_error_code(group_code);
                }
                if let Some(code) = elsewhere.get(g.group_id.0.as_str()) {
                    return OffsetFetchResponseGroup::default()
                        .with_group_id(g.group_id)
                        .with_error_code(*code);
                }
                let wanted: Wanted = g.topics.map(|ts| {
                    ts.into_iter()
                        .map(|t| {
                            (
                                t.name.0.to_string(),
                                partition_indexes(&t.partition_indexes),
                            )
                        })
                        .collect()
                });
                let topics = fetched(ctx, session, &g.group_id.0, wanted)
                    .into_iter()
                    .map(|(topic, parts)| {
                        OffsetFetchResponseTopics::default()
                            .with_name(TopicName(s(topic)))
                            .with_partitions(
                                parts
                                    .into_iter()
                                    .map(|c| {
                                        OffsetFetchResponsePartitions::default()
                                            .with_partition_index(c.partition)
                                            .with_committed_offset(c.offset)
                                            .with_committed_leader_epoch(c.leader_epoch)
                                            .with_metadata(Some(s(c.metadata.unwrap_or_default())))
                                            .with_error_code(c.error)
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
                OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id)
                    .with_topics(topics)
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let denied = group_denied(&req.group_id.0);
    if denied && version >= 2 {
        return OffsetFetchResponse::default().with_error_code(group_code);
    }
    if !denied {
        if let Some(code) = not_here_or_stale(ctx, &req.group_id.0).await {
            // Before v2 an error can only ride on each partition asked for.
            if version >= 2 {
                return OffsetFetchResponse::default().with_error_code(code);
            }
            let topics = req
                .topics
                .unwrap_or_default()
                .into_iter()
                .map(|t| {
                    let parts = partition_indexes(&t.partition_indexes)
                        .into_iter()
                        .map(|p| {
                            OffsetFetchResponsePartition::default()
                                .with_partition_index(p as i32)
                                .with_committed_offset(-1)
                                .with_committed_leader_epoch(-1)
                                .with_error_code(code)
                        })
                        .collect();
                    OffsetFetchResponseTopic::default()
                        .with_name(t.name)
                        .with_partitions(parts)
                })
                .collect();
            return OffsetFetchResponse::default().with_topics(topics);
        }
    }
    let wanted: Wanted = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| {
                (
                    t.name.0.to_string(),
                    partition_indexes(&t.partition_indexes),
                )
            })
            .collect()
    });
    let rows = if denied {
        // v1 has no group-level error: each partition asked for carries it.
        wanted
            .unwrap_or_default()
            .into_iter()
            .map(|(t, parts)| {
                let parts = parts
                    .iter()
                    .map(|p| Committed::refused(*p, group_code))
                    .collect();
                (t, parts)
            })
            .collect()
    } else {
        fetched(ctx, session, &req.group_id.0, wanted)
    };
    let topics = rows
        .into_iter()
        .map(|(topic, parts)| {
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(s(topic)))
                .with_partitions(
                    parts
                        .into_iter()
                        .map(|c| {
                            OffsetFetchResponsePartition::default()
                                .with_partition_index(c.partition)
                                .with_committed_offset(c.offset)
                                .with_committed_leader_epoch(c.leader_epoch)
                                .with_metadata(Some(s(c.metadata.unwrap_or_default())))
                                .with_error_code(c.error)
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetFetchResponse::default().with_topics(topics)
}

/// The groups the session may Describe (all of them with Describe on the cluster).
pub async fn list_groups(ctx: &Ctx, version: i16, session: &Session) -> ListGroupsResponse {
    let all = session.may_on_cluster(&ctx.auth, Operation::Describe);
    // Groups of the consumer protocol (KIP-848) with members, then the classic ones
    // (and those known by their committed offsets alone).
    let consumer = ctx.broker.groups.consumer_group_listings();
    let consumer_names: std::collections::HashSet<&str> =
        consumer.iter().map(|(g, _)| g.as_str()).collect();
    let mut classic = ctx.broker.groups.list().await;
    // In shared mode, also the groups nobody coordinates now that fall to this node.
    match ctx.broker.unheld_groups_here().await {
        Ok(names) => classic.extend(names.into_iter().map(|group| GroupListing {
            group,
            protocol_type: "consumer".into(),
            state: GroupState::Empty,
        })),
        Err(e) => {
            tracing::warn!(error = %e, "Could not list the groups nobody coordinates.");
            return ListGroupsResponse::default()
                .with_error_code(ResponseError::CoordinatorNotAvailable.code());
        }
    }
    let listed = consumer
        .iter()
        .map(|(group, state)| (group.clone(), "consumer".to_string(), *state, "consumer"))
        .chain(
            classic
                .into_iter()
                .filter(|l| !consumer_names.contains(l.group.as_str()))
                .map(|l| (l.group, l.protocol_type, l.state.name(), "classic")),
        );
    let mut groups: Vec<ListedGroup> = listed
        .filter(|(group, ..)| all || may_group(ctx, session, Operation::Describe, group))
        .map(|(group, protocol_type, state, group_type)| {
            let g = ListedGroup::default()
                .with_group_id(GroupId(s(group)))
                .with_protocol_type(s(protocol_type));
            let g = if version >= 4 {
                g.with_group_state(s(state))
            } else {
                g
            };
            if version >= 5 {
                g.with_group_type(s(group_type))
            } else {
                g
            }
        })
        .collect();
    groups.sort_by(|a, b| a.group_id.0.cmp(&b.group_id.0));
    ListGroupsResponse::default().with_groups(groups)
}

pub async fn describe_groups(
    ctx: &Ctx,
    req: DescribeGroupsRequest,
    version: i16,
    session: &Session,
) -> DescribeGroupsResponse {
    let mut groups = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for g in req
        .groups
        .into_iter()
        .filter(|g| seen.insert(g.0.to_string()))
    {
        if !may_group(ctx, session, Operation::Describe, &g.0) {
            groups.push(
                DescribedGroup::default()
                    .with_group_id(g)
                    .with_error_code(ResponseError::GroupAuthorizationFailed.code()),
            );
            continue;
        }
        if let Some(code) = not_here(ctx, &g.0).await {
            groups.push(
                DescribedGroup::default()
                    .with_group_id(g)
                    .with_error_code(code),
            );
            continue;
        }
        let d = ctx.broker.groups.describe(&g.0).await;
        let state = if d.members.is_empty()
            && ctx.broker.groups.fetch_offsets(&g.0, None).is_empty()
            && d.protocol_type.is_empty()
        {
            "Dead"
        } else {
            d.state.name()
        };
        groups.push(
            DescribedGroup::default()
                .with_group_id(g)
                .with_group_state(s(state))
                .with_protocol_type(s(d.protocol_type))
                .with_protocol_data(s(d.protocol_name))
                .with_members(
                    d.members
                        .into_iter()
                        .map(|m| {
                            DescribedGroupMember::default()
                                .with_member_id(s(m.member_id))
                                // v4+ carries it (an older answer cannot).
                                .with_group_instance_id(if version >= 4 {
                                    m.group_instance_id.map(s)
                                } else {
                                    None
                                })
                                .with_client_id(s(m.client_id))
                                .with_client_host(s(m.client_host))
                                .with_member_metadata(m.metadata)
                                .with_member_assignment(m.assignment)
                        })
                        .collect(),
                ),
        );
    }
    DescribeGroupsResponse::default().with_groups(groups)
}

pub async fn delete_groups(
    ctx: &Ctx,
    req: DeleteGroupsRequest,
    session: &Session,
) -> DeleteGroupsResponse {
    let mut results = Vec::new();
    for g in req.groups_names {
        let error = if !may_group(ctx, session, Operation::Delete, &g.0) {
            ResponseError::GroupAuthorizationFailed.code()
        } else {
            let deleted = match ctx.broker.claim_group(&g.0).await {
                Ok(()) => ctx.broker.groups.delete(&g.0).await,
                Err(e) => Err(e),
            };
            match deleted {
                Ok(()) => errors::NONE,
                Err(e) => code(&e),
            }
        };
        results.push(
            DeletableGroupResult::default()
                .with_group_id(g)
                .with_error_code(error),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}
