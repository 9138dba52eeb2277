//! The consumer group protocol (KIP-848) on the wire, through the real binary: the
//! answers' shapes and error codes that the confluent-kafka test does not reach.

mod common;
use common::kafka::KafkaConn;
use common::*;

use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use serde_json::json;

const FENCED_MEMBER_EPOCH: i16 = 110;
const STALE_MEMBER_EPOCH: i16 = 113;
const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
const INVALID_REQUEST: i16 = 42;
const GROUP_ID_NOT_FOUND: i16 = 69;
const UNSUPPORTED_ASSIGNOR: i16 = 112;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn heartbeat(member: &str, epoch: i32) -> ConsumerGroupHeartbeatRequest {
    ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_member_id(s(member))
        .with_member_epoch(epoch)
        .with_rebalance_timeout_ms(30_000)
}

async fn commit(k: &mut KafkaConn, member: &str, epoch: i32) -> i16 {
    let req = OffsetCommitRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_member_id(s(member))
        .with_generation_id_or_member_epoch(epoch)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(s("t")))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(0)])]);
    let r = kafka_call!(k, OffsetCommit, 9, req);
    r.topics[0].partitions[0].error_code
}

#[tokio::test]
async fn heartbeats_assign_by_topic_id_and_refuse_what_the_protocol_forbids() {
    let dir = tempfile::tempdir().unwrap();
    let s_ = Server::start(dir.path(), &[]);
    create_topic(&s_.url, json!({"name": "t", "partitions": 3})).await;
    let (_, topic) = call(http().get(format!("{}/v1/topics/t", s_.url))).await;
    let mut k = KafkaConn::connect(&s_.kafka).await;

    // A regular expression, an unknown assignor, a join without subscription.
    let r = kafka_call!(
        k,
        ConsumerGroupHeartbeat,
        1,
        heartbeat("m-1", 0).with_subscribed_topic_regex(Some(s("t.*")))
    );
    assert_eq!(r.error_code, INVALID_REQUEST);
    let r = kafka_call!(
        k,
        ConsumerGroupHeartbeat,
        0,
        heartbeat("", 0)
            .with_subscribed_topic_names(Some(vec![TopicName(s("t"))]))
            .with_server_assignor(Some(s("sticky")))
    );
    assert_eq!(r.error_code, UNSUPPORTED_ASSIGNOR);
    let r = kafka_call!(k, ConsumerGroupHeartbeat, 0, heartbeat("", 0));
    assert_eq!(r.error_code, INVALID_REQUEST);

    // A member joins (v0: Ferry gives the id) and gets every partition, by topic id.
    let r = kafka_call!(
        k,
        ConsumerGroupHeartbeat,
        0,
        heartbeat("", 0)
            .with_subscribed_topic_names(Some(vec![TopicName(s("t"))]))
            .with_topic_partitions(Some(vec![]))
    );
    assert_eq!(r.error_code, 0, "{r:?}");
    let member = r.member_id.unwrap().to_string();
    let epoch = r.member_epoch;
    assert!(epoch > 0 && r.heartbeat_interval_ms > 0);
    let assigned = &r.assignment.unwrap().topic_partitions[0];
    assert_eq!(
        assigned.topic_id.to_string(),
        topic["topic_id"].as_str().unwrap()
    );
    assert_eq!(assigned.partitions, [0, 1, 2]);

    // Epochs: a wrong one is fenced; commits need the current one.
    let r = kafka_call!(k, ConsumerGroupHeartbeat, 0, heartbeat(&member, epoch + 5));
    assert_eq!(r.error_code, FENCED_MEMBER_EPOCH);
    assert_eq!(commit(&mut k, &member, epoch - 1).await, STALE_MEMBER_EPOCH);
    assert_eq!(commit(&mut k, &member, epoch).await, 0);

    // A classic member may not join a group of the consumer protocol.
    let join = JoinGroupRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(s("range"))
            .with_metadata(bytes::Bytes::from_static(&[0, 0]))]);
    let r = kafka_call!(k, JoinGroup, 5, join);
    assert_eq!(r.error_code, INCONSISTENT_GROUP_PROTOCOL);

    // Described and listed as a group of the consumer protocol.
    let describe = ConsumerGroupDescribeRequest::default().with_group_ids(vec![GroupId(s("g"))]);
    let d = kafka_call!(k, ConsumerGroupDescribe, 1, describe.clone());
    let g = &d.groups[0];
    assert_eq!((g.error_code, g.group_state.as_str()), (0, "Stable"));
    assert_eq!(g.members.len(), 1);
    assert_eq!(
        g.members[0].assignment.topic_partitions[0].partitions,
        [0, 1, 2]
    );
    let l = kafka_call!(k, ListGroups, 4, ListGroupsRequest::default());
    let listed = l
        .groups
        .iter()
        .find(|g| g.group_id.0.as_str() == "g")
        .unwrap();
    assert_eq!(listed.protocol_type.as_str(), "consumer");

    // Leaving: the group is gone, its offsets stay.
    let r = kafka_call!(k, ConsumerGroupHeartbeat, 0, heartbeat(&member, -1));
    assert_eq!((r.error_code, r.member_epoch), (0, -1));
    let d = kafka_call!(k, ConsumerGroupDescribe, 1, describe);
    assert_eq!(d.groups[0].error_code, GROUP_ID_NOT_FOUND);
    let (_, groups) = call(http().get(format!("{}/v1/groups", s_.url))).await;
    assert!(groups.to_string().contains("\"g\""), "{groups}");
}
