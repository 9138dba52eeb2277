//! Topic ids through the real binary: every topic has one (Metadata v10+, CreateTopics
//! v7, the HTTP description), topics are found by id in Metadata v12+, Fetch v13+,
//! Produce v13 and DeleteTopics v6, an id survives a restart, and a topic deleted and
//! created again under its name has a new id, so its old id answers UNKNOWN_TOPIC_ID.

mod common;
use common::kafka::KafkaConn;
use common::*;

use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use serde_json::json;
use uuid::Uuid;

const UNKNOWN_TOPIC_ID: i16 = 100;
const INVALID_REQUEST: i16 = 42;

fn name(n: &str) -> TopicName {
    TopicName(StrBytes::from_string(n.to_string()))
}

async fn metadata_by_name(k: &mut KafkaConn, version: i16, topic: &str) -> MetadataResponse {
    let req = MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default().with_name(Some(name(topic)))
    ]));
    kafka_call!(k, Metadata, version, req)
}

async fn metadata_by_id(k: &mut KafkaConn, id: Uuid) -> MetadataResponse {
    let req = MetadataRequest::default().with_topics(Some(vec![MetadataRequestTopic::default()
        .with_name(None)
        .with_topic_id(id)]));
    kafka_call!(k, Metadata, 12, req)
}

async fn fetch_by_id(k: &mut KafkaConn, version: i16, id: Uuid) -> FetchResponse {
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic_id(id)
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)
                .with_log_start_offset(-1)])]);
    kafka_call!(k, Fetch, version, req)
}

async fn create(k: &mut KafkaConn, topic: &str, partitions: i32) -> Uuid {
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(5000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(name(topic))
            .with_num_partitions(partitions)
            .with_replication_factor(-1)]);
    let resp = kafka_call!(k, CreateTopics, 7, req);
    assert_eq!(resp.topics[0].error_code, 0, "{resp:?}");
    assert!(!resp.topics[0].topic_id.is_nil());
    resp.topics[0].topic_id
}

/// A produce of one small batch to partition 0 of the topic with this id (v13).
async fn produce_by_id(k: &mut KafkaConn, id: Uuid, batch: Bytes) -> i16 {
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_topic_id(id)
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch))])]);
    let resp = kafka_call!(k, Produce, 13, req);
    assert_eq!(resp.responses[0].topic_id, id);
    resp.responses[0].partition_responses[0].error_code
}

#[tokio::test]
async fn topics_are_found_by_id_and_a_recreated_topic_has_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let mut k = KafkaConn::connect(&s.kafka).await;

    // Every topic has an id: CreateTopics, Metadata and HTTP agree on it.
    let old = create(&mut k, "recreated", 10).await;
    let md = metadata_by_name(&mut k, 12, "recreated").await;
    assert_eq!(md.topics[0].topic_id, old);
    assert_eq!(md.topics[0].partitions.len(), 10);
    let (_, topic) = call(http().get(format!("{}/v1/topics/recreated", s.url))).await;
    assert_eq!(topic["topic_id"], old.to_string());
    // Before v10 there is no id on the wire.
    let md = metadata_by_name(&mut k, 9, "recreated").await;
    assert!(md.topics[0].topic_id.is_nil());

    // Found by id in Metadata v12 and Fetch v13+.
    let md = metadata_by_id(&mut k, old).await;
    assert_eq!(md.topics[0].error_code, 0);
    assert_eq!(
        md.topics[0].name.as_ref().map(|n| n.0.as_str()),
        Some("recreated")
    );
    let (status, _) = produce(
        &s.url,
        "recreated",
        json!([{"partition": 0, "value": "one"}]),
    )
    .await;
    assert_eq!(status, 200);
    for version in [13, 16] {
        let f = fetch_by_id(&mut k, version, old).await;
        let p = &f.responses[0].partitions[0];
        assert_eq!(
            (f.responses[0].topic_id, p.error_code, p.high_watermark),
            (old, 0, 1)
        );
        assert!(!p.records.as_ref().unwrap().is_empty());
    }
    // A stored batch, to produce again by id.
    let batch = fetch_by_id(&mut k, 13, old).await.responses[0].partitions[0]
        .records
        .clone()
        .unwrap();
    assert_eq!(produce_by_id(&mut k, old, batch.clone()).await, 0);

    // Deleted and created again with 3 partitions: a new id; the old one is unknown.
    let (status, _) = call(http().delete(format!("{}/v1/topics/recreated", s.url))).await;
    assert_eq!(status, 204);
    let new = create(&mut k, "recreated", 3).await;
    assert_ne!(new, old);
    let md = metadata_by_name(&mut k, 12, "recreated").await;
    assert_eq!(
        (md.topics[0].topic_id, md.topics[0].partitions.len()),
        (new, 3)
    );
    let md = metadata_by_id(&mut k, old).await;
    assert_eq!(md.topics[0].error_code, UNKNOWN_TOPIC_ID);
    assert_eq!(md.topics[0].name, None, "an unknown id has no name");
    let f = fetch_by_id(&mut k, 13, old).await;
    assert_eq!(f.responses[0].partitions[0].error_code, UNKNOWN_TOPIC_ID);
    assert_eq!(
        produce_by_id(&mut k, old, batch.clone()).await,
        UNKNOWN_TOPIC_ID
    );
    assert_eq!(produce_by_id(&mut k, new, batch).await, 0);
    let f = fetch_by_id(&mut k, 13, new).await;
    assert_eq!(f.responses[0].partitions[0].high_watermark, 1);

    // A topic named by neither name nor id is an invalid request.
    let md = kafka_call!(
        k,
        Metadata,
        12,
        MetadataRequest::default()
            .with_topics(Some(vec![MetadataRequestTopic::default().with_name(None)]))
    );
    assert_eq!(md.topics[0].error_code, INVALID_REQUEST);

    // The id survives a restart.
    drop(k);
    s.kill9();
    let s = Server::start(dir.path(), &[]);
    let mut k = KafkaConn::connect(&s.kafka).await;
    let md = metadata_by_id(&mut k, new).await;
    assert_eq!(md.topics[0].error_code, 0);
    assert_eq!(md.topics[0].partitions.len(), 3);

    // DeleteTopics v6 by id: an unknown id, a name and an id at once, then the topic.
    let delete = |topics: Vec<DeleteTopicState>| {
        DeleteTopicsRequest::default()
            .with_timeout_ms(5000)
            .with_topics(topics)
    };
    let r = kafka_call!(
        k,
        DeleteTopics,
        6,
        delete(vec![
            DeleteTopicState::default()
                .with_name(None)
                .with_topic_id(old),
            DeleteTopicState::default()
                .with_name(Some(name("recreated")))
                .with_topic_id(new),
        ])
    );
    assert_eq!(r.responses[0].error_code, UNKNOWN_TOPIC_ID);
    assert_eq!(r.responses[1].error_code, INVALID_REQUEST);
    let r = kafka_call!(
        k,
        DeleteTopics,
        6,
        delete(vec![DeleteTopicState::default()
            .with_name(None)
            .with_topic_id(new)])
    );
    assert_eq!(r.responses[0].error_code, 0);
    assert_eq!(r.responses[0].topic_id, new);
    assert_eq!(
        r.responses[0].name.as_ref().map(|n| n.0.as_str()),
        Some("recreated")
    );
    let (status, _) = call(http().get(format!("{}/v1/topics/recreated", s.url))).await;
    assert_eq!(status, 404);
}
