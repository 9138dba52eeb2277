//! Deleting records over HTTP (`POST /v1/topics/{topic}/partitions/{partition}/delete-records`)
//! and with `ferry topic delete-records`, through the real binary: the partition's start
//! moves for HTTP reads and Kafka alike, durably, and bad requests get the problem types
//! the document lists.

mod common;
use common::kafka::KafkaConn;
use common::*;

use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use serde_json::{json, Value};

async fn delete_records(url: &str, topic: &str, partition: &str, body: Value) -> (u16, Value) {
    call(
        http()
            .post(format!(
                "{url}/v1/topics/{topic}/partitions/{partition}/delete-records"
            ))
            .json(&body),
    )
    .await
}

/// The partition's earliest offset as Kafka's ListOffsets gives it.
async fn kafka_earliest(addr: &str, topic: &str) -> i64 {
    let mut k = KafkaConn::connect(addr).await;
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(-2)])]);
    let resp = kafka_call!(k, ListOffsets, 6, req);
    let p = &resp.topics[0].partitions[0];
    assert_eq!(p.error_code, 0);
    p.offset
}

#[tokio::test]
async fn records_below_an_offset_are_deleted_for_every_reader_and_stay_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    create_topic(&s.url, json!({"name": "t", "partitions": 2})).await;
    let records: Vec<_> = (0..20)
        .map(|i| json!({"partition": 0, "value": i}))
        .collect();
    let (status, _) = produce(&s.url, "t", json!(records)).await;
    assert_eq!(status, 200);

    let (status, v) = delete_records(&s.url, "t", "0", json!({"before_offset": 5})).await;
    assert_eq!(
        (status, v),
        (200, json!({"partition": 0, "earliest": 5, "latest": 20}))
    );
    let read = read_all(&s.url, "t", 0, 5).await;
    assert_eq!(read.len(), 15);
    assert_eq!(read[0]["value"], 5);
    let (status, p) = call(http().get(format!(
        "{}/v1/topics/t/partitions/0/records?offset=0",
        s.url
    )))
    .await;
    assert_eq!(status, 416, "{p}");
    assert_eq!(kafka_earliest(&s.kafka, "t").await, 5);
    // At or below the start: nothing changes.
    let (status, v) = delete_records(&s.url, "t", "0", json!({"before_offset": 2})).await;
    assert_eq!((status, v["earliest"].clone()), (200, json!(5)));

    // Refusals, each with its problem type; nothing changes.
    for (partition, body, status, slug) in [
        (
            "0",
            json!({"before_offset": 21}),
            416,
            "offset-out-of-range",
        ),
        ("0", json!({"before_offset": -1}), 400, "invalid-json"),
        (
            "0",
            json!({"before_offset": "earliest"}),
            400,
            "invalid-json",
        ),
        (
            "0",
            json!({"before_offset": 3, "partition": 0}),
            400,
            "invalid-json",
        ),
        ("0", json!({}), 400, "invalid-json"),
        ("0", json!([5]), 400, "invalid-json"),
        ("x", json!({"before_offset": 3}), 400, "invalid-parameter"),
        ("7", json!({"before_offset": 3}), 404, "partition-not-found"),
    ] {
        let (got, p) = delete_records(&s.url, "t", partition, body.clone()).await;
        assert_eq!(got, status, "{body}: {p}");
        assert_eq!(p["type"], format!("urn:ferry:problem:{slug}"), "{body}");
    }
    let (got, p) = delete_records(&s.url, "nope", "0", json!({"before_offset": 0})).await;
    assert_eq!(
        (got, p["type"].as_str()),
        (404, Some("urn:ferry:problem:topic-not-found"))
    );

    // The CLI: everything readable now, by `latest`.
    let out = std::process::Command::new(BIN)
        .args([
            "topic",
            "delete-records",
            "t",
            "-p",
            "0",
            "--before",
            "latest",
            "--url",
            &s.url,
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v, json!({"partition": 0, "earliest": 20, "latest": 20}));
    let out = std::process::Command::new(BIN)
        .args([
            "topic",
            "delete-records",
            "t",
            "-p",
            "0",
            "--before",
            "soon",
            "--url",
            &s.url,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());

    // The start is durable: after kill -9 it is where it was left.
    s.kill9();
    let s = Server::start(dir.path(), &[]);
    let (_, t) = call(http().get(format!("{}/v1/topics/t", s.url))).await;
    assert_eq!(t["partition_stats"][0]["earliest"], 20);
    assert_eq!(
        t["partition_stats"][1]["earliest"], 0,
        "other partitions untouched"
    );
    assert_eq!(kafka_earliest(&s.kafka, "t").await, 20);
}
