//! DescribeTopicPartitions (API 75) through the real binary: one node leads every
//! partition; topics come in name order, in pages of at most the asked number of
//! partitions, each page naming where the next starts.

mod common;
use common::kafka::KafkaConn;
use common::*;

use kafka_protocol::messages::describe_topic_partitions_request::{Cursor, TopicRequest};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use serde_json::json;

fn name(n: &str) -> TopicName {
    TopicName(StrBytes::from_string(n.to_string()))
}

async fn describe(
    k: &mut KafkaConn,
    topics: &[&str],
    limit: i32,
    cursor: Option<(&str, i32)>,
) -> DescribeTopicPartitionsResponse {
    let req = DescribeTopicPartitionsRequest::default()
        .with_topics(
            topics
                .iter()
                .map(|t| TopicRequest::default().with_name(name(t)))
                .collect(),
        )
        .with_response_partition_limit(limit)
        .with_cursor(cursor.map(|(t, p)| {
            Cursor::default()
                .with_topic_name(name(t))
                .with_partition_index(p)
        }));
    kafka_call!(k, DescribeTopicPartitions, 0, req)
}

/// (topic, error, partitions) of each topic in an answer.
fn summary(r: &DescribeTopicPartitionsResponse) -> Vec<(String, i16, Vec<i32>)> {
    r.topics
        .iter()
        .map(|t| {
            (
                t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default(),
                t.error_code,
                t.partitions.iter().map(|p| p.partition_index).collect(),
            )
        })
        .collect()
}

fn cursor(r: &DescribeTopicPartitionsResponse) -> Option<(String, i32)> {
    r.next_cursor
        .as_ref()
        .map(|c| (c.topic_name.0.to_string(), c.partition_index))
}

#[tokio::test]
async fn topics_are_described_in_name_order_in_pages_of_the_asked_size() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    for (t, n) in [("b", 5), ("a", 3), ("c", 1)] {
        create_topic(&s.url, json!({"name": t, "partitions": n})).await;
    }
    let mut k = KafkaConn::connect(&s.kafka).await;

    // Every topic, 4 partitions a page.
    let page = describe(&mut k, &[], 4, None).await;
    assert_eq!(
        summary(&page),
        [("a".into(), 0, vec![0, 1, 2]), ("b".into(), 0, vec![0])]
    );
    assert_eq!(cursor(&page), Some(("b".into(), 1)));
    let page = describe(&mut k, &[], 4, Some(("b", 1))).await;
    assert_eq!(summary(&page), [("b".into(), 0, vec![1, 2, 3, 4])]);
    assert_eq!(cursor(&page), Some(("c".into(), 0)));
    let page = describe(&mut k, &[], 4, Some(("c", 0))).await;
    assert_eq!(summary(&page), [("c".into(), 0, vec![0])]);
    assert_eq!(cursor(&page), None);

    // One node: leader, only replica, in sync, epoch 0; the id Metadata gives.
    let a = &describe(&mut k, &["a"], 100, None).await.topics[0];
    let (_, http_topic) = call(http().get(format!("{}/v1/topics/a", s.url))).await;
    assert_eq!(
        a.topic_id.to_string(),
        http_topic["topic_id"].as_str().unwrap()
    );
    let p = &a.partitions[0];
    assert_eq!(
        (
            p.leader_id.0,
            p.leader_epoch,
            p.replica_nodes.len(),
            p.isr_nodes.len()
        ),
        (0, 0, 1, 1)
    );
    assert!(
        a.topic_authorized_operations > 0,
        "everything is allowed without --auth"
    );

    // Named topics, repeated and unknown: each once, in order; unknown ones answer
    // UNKNOWN_TOPIC_OR_PARTITION and take no room in the page.
    let named = ["c", "zz", "a", "c"];
    let page = describe(&mut k, &named, 3, None).await;
    assert_eq!(summary(&page), [("a".into(), 0, vec![0, 1, 2])]);
    assert_eq!(cursor(&page), Some(("c".into(), 0)));
    let page = describe(&mut k, &named, 3, Some(("c", 0))).await;
    assert_eq!(
        summary(&page),
        [("c".into(), 0, vec![0]), ("zz".into(), 3, vec![])]
    );
    assert_eq!(cursor(&page), None);

    // A cursor naming a topic the request does not list, or a negative partition.
    for (topics, c) in [(&["a"][..], ("b", 0)), (&["a"][..], ("a", -1))] {
        let page = describe(&mut k, topics, 10, Some(c)).await;
        assert_eq!(summary(&page), [("a".into(), 42, vec![])], "{c:?}");
        assert_eq!(cursor(&page), None);
    }
    // A limit of 0 or less still moves: one partition a page.
    let page = describe(&mut k, &["a"], 0, None).await;
    assert_eq!(summary(&page), [("a".into(), 0, vec![0])]);
    assert_eq!(cursor(&page), Some(("a".into(), 1)));
}
