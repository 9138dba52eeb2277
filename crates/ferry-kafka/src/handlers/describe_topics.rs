//! DescribeTopicPartitions (KIP-966), answered as a one-node cluster: this node leads
//! every partition and is its only replica, in sync, with leader epoch 0; no eligible
//! leader replicas beyond it, none offline.
//!
//! # Pages
//!
//! Topics are answered in name order, whether the request names them or asks for all
//! (an empty list: every topic the session may Describe). An answer holds at most the
//! request's `response_partition_limit` partitions (at most
//! [`PARTITIONS_PER_ANSWER_MAX`], at least 1); when more remain, `next_cursor` names the
//! topic and partition to start from, and the client asks again with it as `cursor`.
//! A cursor with a negative partition, or naming a topic the request does not list,
//! is refused: every requested topic answers INVALID_REQUEST. Topics that answer an
//! error (unknown: UNKNOWN_TOPIC_OR_PARTITION; not describable:
//! TOPIC_AUTHORIZATION_FAILED) take no room in the page.

use super::{cluster, topic_ids, Ctx, Session};
use ferry_auth::{Operation, ResourceType};
use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

/// Most partitions one answer describes, whatever the request asks (Kafka's default
/// `max.request.partition.size.limit`).
pub const PARTITIONS_PER_ANSWER_MAX: usize = 2000;

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn failed(name: &str, code: ResponseError) -> DescribeTopicPartitionsResponseTopic {
    DescribeTopicPartitionsResponseTopic::default()
        .with_name(Some(topic_name(name)))
        .with_error_code(code.code())
        .with_topic_authorized_operations(cluster::NOT_REQUESTED)
}

pub fn describe_topic_partitions(
    ctx: &Ctx,
    req: DescribeTopicPartitionsRequest,
    session: &Session,
) -> DescribeTopicPartitionsResponse {
    let describable =
        |name: &str| session.may(&ctx.auth, Operation::Describe, ResourceType::Topic, name);
    let all = req.topics.is_empty();
    let mut names: Vec<String> = if all {
        ctx.broker
            .list_topics()
            .into_iter()
            .map(|t| t.config.name)
            .filter(|n| describable(n))
            .collect()
    } else {
        req.topics.iter().map(|t| t.name.0.to_string()).collect()
    };
    // In name order, each once however often the request repeats it.
    names.sort_unstable();
    names.dedup();
    let start = match &req.cursor {
        None => None,
        Some(c) => {
            let cursor_name = c.topic_name.0.as_str();
            if c.partition_index < 0
                || (!all
                    && names
                        .binary_search_by(|n| n.as_str().cmp(cursor_name))
                        .is_err())
            {
                let topics = names
                    .iter()
                    .map(|n| failed(n, ResponseError::InvalidRequest))
                    .collect();
                return DescribeTopicPartitionsResponse::default().with_topics(topics);
            }
            Some((cursor_name.to_string(), c.partition_index as u32))
        }
    };
    let limit = (req.response_partition_limit.max(1) as usize).min(PARTITIONS_PER_ANSWER_MAX);
    let node = BrokerId(ctx.config.node_id);
    let mut left = limit;
    let mut topics = Vec::new();
    let mut next_cursor = None;
    let after_cursor = names
        .iter()
        .filter(|n| start.as_ref().is_none_or(|(s, _)| n.as_str() >= s.as_str()));
    for name in after_cursor {
        if !describable(name) {
            topics.push(failed(name, ResponseError::TopicAuthorizationFailed));
            continue;
        }
        let Ok(info) = ctx.broker.describe_topic(name) else {
            topics.push(failed(name, ResponseError::UnknownTopicOrPartition));
            continue;
        };
        if left == 0 {
            next_cursor = Some(Cursor::default().with_topic_name(topic_name(name)));
            break;
        }
        let first = match &start {
            Some((s, p)) if s == name => *p,
            _ => 0,
        };
        let remaining = info.config.partitions.saturating_sub(first) as usize;
        let taken = remaining.min(left);
        left -= taken;
        let partitions = (first..first + taken as u32)
            .map(|p| {
                DescribeTopicPartitionsResponsePartition::default()
                    .with_partition_index(p as i32)
                    .with_leader_id(node)
                    .with_leader_epoch(ferry_log::LEADER_EPOCH)
                    .with_replica_nodes(vec![node])
                    .with_isr_nodes(vec![node])
                    .with_eligible_leader_replicas(Some(Vec::new()))
                    .with_last_known_elr(Some(Vec::new()))
            })
            .collect();
        topics.push(
            DescribeTopicPartitionsResponseTopic::default()
                .with_name(Some(topic_name(name)))
                .with_topic_id(topic_ids::to_wire(info.config.topic_id))
                .with_partitions(partitions)
                .with_topic_authorized_operations(cluster::topic_operations(ctx, session, name)),
        );
        if taken < remaining {
            next_cursor = Some(
                Cursor::default()
                    .with_topic_name(topic_name(name))
                    .with_partition_index((first + taken as u32) as i32),
            );
            break;
        }
    }
    debug_assert!(left <= limit);
    DescribeTopicPartitionsResponse::default()
        .with_topics(topics)
        .with_next_cursor(next_cursor)
}
