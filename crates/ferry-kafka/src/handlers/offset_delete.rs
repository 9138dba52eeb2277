//! OffsetDelete: drops a group's committed offsets for some partitions.
//!
//! As in Kafka: the session needs Delete on the group (else GROUP_AUTHORIZATION_FAILED
//! for the whole request) and Read on each topic (else TOPIC_AUTHORIZATION_FAILED for its
//! partitions); a partition Ferry does not have answers UNKNOWN_TOPIC_OR_PARTITION. A
//! group with members keeps the offsets of the topics they are subscribed to
//! (GROUP_SUBSCRIBED_TO_TOPIC); which topics those are is read from the subscriptions
//! the members sent when they joined. A group with members of another protocol type, or
//! whose subscriptions cannot be read, is refused whole with NON_EMPTY_GROUP, and a
//! group Ferry does not know with GROUP_ID_NOT_FOUND.

use super::groups::code as group_code;
use super::{Ctx, Session};
use crate::errors;
use bytes::Bytes;
use ferry_auth::{Operation, ResourceType};
use ferry_broker::groups::OffsetDeletion;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use std::collections::HashSet;

/// Most topics read from one member's subscription: more than any client subscribes to
/// by name (a pattern subscription sends the topics it matched).
pub const SUBSCRIPTION_TOPICS_MAX: usize = 100_000;

/// The topics of a `ConsumerProtocolSubscription` (every version starts with them; what
/// follows is not read). `None` when the bytes are not one.
///
/// ```text
/// version: int16 (not negative)
/// topics: int32 count, then per topic an int16 length and that many UTF-8 bytes
/// ```
pub fn decode_subscription(bytes: &[u8]) -> Option<Vec<String>> {
    let mut rest = bytes;
    let mut take = |n: usize| -> Option<&[u8]> {
        if rest.len() < n {
            return None;
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Some(head)
    };
    let version = i16::from_be_bytes(take(2)?.try_into().ok()?);
    if version < 0 {
        return None;
    }
    let count = i32::from_be_bytes(take(4)?.try_into().ok()?);
    let count = usize::try_from(count)
        .ok()
        .filter(|n| *n <= SUBSCRIPTION_TOPICS_MAX)?;
    let mut topics = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let len = i16::from_be_bytes(take(2)?.try_into().ok()?);
        let len = usize::try_from(len).ok()?;
        topics.push(String::from_utf8(take(len)?.to_vec()).ok()?);
    }
    Some(topics)
}

/// The topics a group's members read, from their subscriptions; `None` for another
/// protocol type than `consumer` or a subscription that cannot be read.
fn subscribed_topics(protocol_type: &str, metadata: &[Bytes]) -> Option<HashSet<String>> {
    if protocol_type != "consumer" {
        return None;
    }
    let mut topics = HashSet::new();
    for m in metadata {
        topics.extend(decode_subscription(m)?);
    }
    Some(topics)
}

pub async fn offset_delete(
    ctx: &Ctx,
    req: OffsetDeleteRequest,
    session: &Session,
) -> OffsetDeleteResponse {
    let group = req.group_id.0.as_str();
    if !session.may(&ctx.auth, Operation::Delete, ResourceType::Group, group) {
        return OffsetDeleteResponse::default()
            .with_error_code(ResponseError::GroupAuthorizationFailed.code());
    }
    if let Some(code) = super::groups::not_here(ctx, group).await {
        return OffsetDeleteResponse::default().with_error_code(code);
    }
    // Each (topic, partition) is answered once, in the order first asked.
    let mut seen = HashSet::new();
    let mut answers: Vec<(String, i32, i16)> = Vec::new();
    for t in &req.topics {
        let topic = t.name.0.as_str();
        let readable = session.may(&ctx.auth, Operation::Read, ResourceType::Topic, topic);
        for p in &t.partitions {
            if !seen.insert((topic, p.partition_index)) {
                continue;
            }
            let code = if !readable {
                ResponseError::TopicAuthorizationFailed.code()
            } else if u32::try_from(p.partition_index)
                .map_or(true, |i| ctx.broker.bounds(topic, i).is_err())
            {
                ResponseError::UnknownTopicOrPartition.code()
            } else {
                errors::NONE
            };
            answers.push((topic.to_string(), p.partition_index, code));
        }
    }
    let asked: Vec<(String, u32)> = answers
        .iter()
        .filter(|(_, _, code)| *code == errors::NONE)
        .filter_map(|(t, p, _)| Some((t.clone(), u32::try_from(*p).ok()?)))
        .collect();
    let outcome = ctx
        .broker
        .groups
        .delete_offsets(group, &asked, &subscribed_topics)
        .await;
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => return OffsetDeleteResponse::default().with_error_code(group_code(&e)),
    };
    debug_assert_eq!(outcome.len(), asked.len());
    let mut results = outcome.into_iter();
    let mut topics: Vec<OffsetDeleteResponseTopic> = Vec::new();
    for (topic, partition, code) in answers {
        let code = if code != errors::NONE {
            code
        } else {
            match results.next() {
                Some(OffsetDeletion::Deleted) => errors::NONE,
                Some(OffsetDeletion::Subscribed) => ResponseError::GroupSubscribedToTopic.code(),
                None => ResponseError::UnknownServerError.code(),
            }
        };
        let answer = OffsetDeleteResponsePartition::default()
            .with_partition_index(partition)
            .with_error_code(code);
        match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
            Some(t) => t.partitions.push(answer),
            None => topics.push(
                OffsetDeleteResponseTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic)))
                    .with_partitions(vec![answer]),
            ),
        }
    }
    OffsetDeleteResponse::default().with_topics(topics)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscription(version: i16, topics: &[&str], tail: &[u8]) -> Vec<u8> {
        let mut out = version.to_be_bytes().to_vec();
        out.extend((topics.len() as i32).to_be_bytes());
        for t in topics {
            out.extend((t.len() as i16).to_be_bytes());
            out.extend(t.as_bytes());
        }
        out.extend(tail);
        out
    }

    #[test]
    fn subscriptions_of_every_version_give_their_topics() {
        for version in 0..=3 {
            let bytes = subscription(version, &["orders", "audit"], &[0xff, 0xff, 0xff, 0xff]);
            assert_eq!(
                decode_subscription(&bytes),
                Some(vec!["orders".to_string(), "audit".to_string()])
            );
        }
    }

    #[test]
    fn broken_subscriptions_are_not_read() {
        let good = subscription(1, &["orders"], &[]);
        for cut in 0..good.len() {
            assert_eq!(decode_subscription(&good[..cut]), None, "cut at {cut}");
        }
        assert_eq!(decode_subscription(&subscription(-1, &["a"], &[])), None);
        let mut huge = 0i16.to_be_bytes().to_vec();
        huge.extend(i32::MAX.to_be_bytes());
        assert_eq!(decode_subscription(&huge), None);
        let mut negative = 0i16.to_be_bytes().to_vec();
        negative.extend(1i32.to_be_bytes());
        negative.extend((-3i16).to_be_bytes());
        assert_eq!(decode_subscription(&negative), None);
    }

    #[test]
    fn only_consumer_groups_have_readable_subscriptions() {
        let m = Bytes::from(subscription(0, &["a"], &[]));
        assert_eq!(
            subscribed_topics("consumer", std::slice::from_ref(&m)),
            Some(["a".to_string()].into())
        );
        assert_eq!(subscribed_topics("connect", &[m]), None);
        assert_eq!(
            subscribed_topics("consumer", &[Bytes::from_static(b"x")]),
            None
        );
    }
}
