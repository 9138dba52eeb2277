//! The next-generation consumer group protocol (KIP-848): ConsumerGroupHeartbeat and
//! ConsumerGroupDescribe. Ferry assigns the partitions itself (the coordinator in
//! `ferry_broker::groups::consumer`); on the wire, topics are named by id.
//!
//! A heartbeat naming topics Ferry does not know in what the member owns ignores
//! them (the topic was deleted); a regular-expression subscription is refused with
//! INVALID_REQUEST (Ferry takes topic names only).

use super::{cluster, groups, topic_ids, Ctx, Session};
use ferry_auth::{Operation, ResourceType};
use ferry_broker::groups::consumer::{Assignment, ConsumerHeartbeat};
use ferry_broker::groups::GroupError;
use kafka_protocol::messages::consumer_group_describe_response::{
    Assignment as DescribedAssignment, DescribedGroup, Member,
    TopicPartitions as DescribedTopicPartitions,
};
use kafka_protocol::messages::consumer_group_heartbeat_response::{
    Assignment as WireAssignment, TopicPartitions,
};
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, ConsumerGroupHeartbeatRequest,
    ConsumerGroupHeartbeatResponse, GroupId, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use std::time::Instant;

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

fn refused(code: i16, message: String) -> ConsumerGroupHeartbeatResponse {
    ConsumerGroupHeartbeatResponse::default()
        .with_error_code(code)
        .with_error_message(Some(s(message)))
        .with_member_id(None)
}

pub async fn heartbeat(
    ctx: &Ctx,
    req: ConsumerGroupHeartbeatRequest,
    peer: &str,
    client_id: &str,
    session: &Session,
) -> ConsumerGroupHeartbeatResponse {
    if let Some(code) = groups::group_refused(ctx, session, &req.group_id).await {
        return refused(code, "not allowed to read the group".into());
    }
    if req
        .subscribed_topic_regex
        .as_ref()
        .is_some_and(|r| !r.is_empty())
    {
        return refused(
            ResponseError::InvalidRequest.code(),
            "Ferry takes subscriptions by topic name, not by regular expression".into(),
        );
    }
    // Topics the member owns, from ids to names; ids of topics gone are dropped.
    let owned = req.topic_partitions.as_ref().map(|topics| {
        let mut owned = Assignment::new();
        for t in topics {
            if let Some(name) = topic_ids::name_of(ctx, t.topic_id) {
                let parts = owned.entry(name).or_default();
                parts.extend(t.partitions.iter().filter_map(|p| u32::try_from(*p).ok()));
            }
        }
        owned
    });
    let hb = ConsumerHeartbeat {
        group: req.group_id.0.to_string(),
        member_id: req.member_id.to_string(),
        member_epoch: req.member_epoch,
        instance_id: req.instance_id.as_ref().map(|i| i.to_string()),
        rack: req.rack_id.as_ref().map(|r| r.to_string()),
        rebalance_timeout_ms: req.rebalance_timeout_ms,
        subscribed: req
            .subscribed_topic_names
            .as_ref()
            .map(|names| names.iter().map(|n| n.0.to_string()).collect()),
        assignor: req.server_assignor.as_ref().map(|a| a.to_string()),
        owned,
        client_id: client_id.to_string(),
        client_host: peer.to_string(),
    };
    // Only topics the member may read are assigned to it.
    let partitions = |topic: &str| {
        if !session.may(&ctx.auth, Operation::Read, ResourceType::Topic, topic) {
            return None;
        }
        ctx.broker.topic(topic).ok().map(|t| t.config().partitions)
    };
    let result = ctx
        .broker
        .groups
        .consumer_heartbeat(&hb, Instant::now(), &partitions)
        .await;
    match result {
        Ok(r) => {
            let assignment = r.assignment.map(|a| {
                WireAssignment::default().with_topic_partitions(
                    a.into_iter()
                        .filter_map(|(topic, parts)| {
                            let t = ctx.broker.topic(&topic).ok()?;
                            Some(
                                TopicPartitions::default()
                                    .with_topic_id(topic_ids::to_wire(t.config().topic_id))
                                    .with_partitions(parts.into_iter().map(|p| p as i32).collect()),
                            )
                        })
                        .collect(),
                )
            });
            ConsumerGroupHeartbeatResponse::default()
                .with_member_id(Some(s(r.member_id)))
                .with_member_epoch(r.member_epoch)
                .with_heartbeat_interval_ms(r.heartbeat_interval_ms)
                .with_assignment(assignment)
        }
        Err(e) => {
            let message = match &e {
                GroupError::InvalidRequest(why) => why.clone(),
                other => format!("{other:?}"),
            };
            refused(groups::code(&e), message)
        }
    }
}

fn described(ctx: &Ctx, a: &Assignment) -> DescribedAssignment {
    DescribedAssignment::default().with_topic_partitions(
        a.iter()
            .map(|(topic, parts)| {
                let id = ctx.broker.topic(topic).map_or(uuid::Uuid::nil(), |t| {
                    topic_ids::to_wire(t.config().topic_id)
                });
                DescribedTopicPartitions::default()
                    .with_topic_id(id)
                    .with_topic_name(TopicName(s(topic.clone())))
                    .with_partitions(parts.iter().map(|p| *p as i32).collect())
            })
            .collect(),
    )
}

pub async fn describe(
    ctx: &Ctx,
    req: ConsumerGroupDescribeRequest,
    session: &Session,
) -> ConsumerGroupDescribeResponse {
    // In shared mode, groups another node coordinates are answered NOT_COORDINATOR.
    let mut elsewhere = std::collections::HashMap::new();
    for g in &req.group_ids {
        if let Some(code) = groups::not_here(ctx, &g.0).await {
            elsewhere.insert(g.0.to_string(), code);
        }
    }
    let mut seen = std::collections::HashSet::new();
    let groups = req
        .group_ids
        .into_iter()
        .filter(|g| seen.insert(g.0.to_string()))
        .map(|g: GroupId| {
            let base = DescribedGroup::default()
                .with_group_id(g.clone())
                .with_authorized_operations(cluster::NOT_REQUESTED);
            if !session.may(&ctx.auth, Operation::Describe, ResourceType::Group, &g.0) {
                return base.with_error_code(ResponseError::GroupAuthorizationFailed.code());
            }
            if let Some(code) = elsewhere.get(g.0.as_str()) {
                return base.with_error_code(*code);
            }
            let Some(d) = ctx.broker.groups.describe_consumer_group(&g.0) else {
                return base
                    .with_error_code(ResponseError::GroupIdNotFound.code())
                    .with_error_message(Some(s(format!(
                        "group {} has no members of the consumer protocol",
                        g.0.as_str()
                    ))));
            };
            let members = d
                .members
                .iter()
                .map(|m| {
                    Member::default()
                        .with_member_id(s(m.member_id.clone()))
                        .with_instance_id(m.instance_id.clone().map(s))
                        .with_rack_id(m.rack.clone().map(s))
                        .with_member_epoch(m.member_epoch)
                        .with_client_id(s(m.client_id.clone()))
                        .with_client_host(s(m.client_host.clone()))
                        .with_subscribed_topic_names(
                            m.subscribed
                                .iter()
                                .map(|t| TopicName(s(t.clone())))
                                .collect(),
                        )
                        .with_assignment(described(ctx, &m.assignment))
                        .with_target_assignment(described(ctx, &m.target))
                        .with_member_type(-1)
                })
                .collect();
            base.with_group_state(s(d.state))
                .with_group_epoch(d.group_epoch)
                .with_assignment_epoch(d.assignment_epoch)
                .with_assignor_name(s(d.assignor))
                .with_members(members)
        })
        .collect();
    ConsumerGroupDescribeResponse::default().with_groups(groups)
}
