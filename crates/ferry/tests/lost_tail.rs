//! A topic's unsynced tail lost with the page cache (durability `never`), while its
//! subscription's journal, always synced, kept what it saw there. Simulated by cutting
//! the segment file with Ferry stopped.

mod common;
use common::*;
use serde_json::{json, Value};

/// Pulls whatever is there, acks it, and returns the values with their offsets.
async fn pull_and_ack(url: &str) -> Vec<(u64, String)> {
    let (status, v) = call(
        http()
            .post(format!("{url}/v1/subscriptions/s/pull"))
            .json(&json!({"max_records": 100, "wait_ms": 500})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let records = v["records"].as_array().cloned().unwrap_or_default();
    let leases: Vec<Value> = records.iter().map(|r| r["lease_id"].clone()).collect();
    if !leases.is_empty() {
        let (status, v) = call(
            http()
                .post(format!("{url}/v1/subscriptions/s/ack"))
                .json(&json!({ "lease_ids": leases })),
        )
        .await;
        assert_eq!(status, 200, "{v}");
    }
    records
        .iter()
        .map(|r| {
            (
                r["offset"].as_u64().unwrap(),
                r["value"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

async fn produce_one(url: &str, value: &str) -> u64 {
    let (status, v) = produce(url, "t", json!([{ "value": value }])).await;
    assert_eq!(status, 200, "{v}");
    v["offsets"][0]["offset"].as_u64().unwrap()
}

#[tokio::test]
async fn records_produced_after_a_lost_unsynced_tail_are_delivered_to_a_subscription_that_had_seen_past_it(
) {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    create_topic(
        &s.url,
        json!({"name": "t", "partitions": 1, "durability": "never"}),
    )
    .await;
    create_subscription(
        &s.url,
        json!({"name": "s", "topic": "t", "start": "earliest"}),
    )
    .await;
    for i in 0..6 {
        produce_one(&s.url, &format!("r{i}")).await;
    }
    let got = pull_and_ack(&s.url).await;
    assert_eq!(got.len(), 6, "{got:?}");
    s.kill9();

    // The page cache lost the last four batches: only r0 and r1 reached the disk.
    let seg = active_segment(dir.path(), "t", 0);
    let bytes = std::fs::read(&seg).unwrap();
    let keep = batch_positions(&bytes)[2];
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(keep as u64)
        .unwrap();

    let s = Server::start(dir.path(), &[]);
    let logs = s.logs().join("\n");
    assert!(logs.contains("past the end of the partition"), "{logs}");
    let mut produced = Vec::new();
    for i in 0..3 {
        produced.push((produce_one(&s.url, &format!("n{i}")).await, format!("n{i}")));
    }
    assert_eq!(
        produced[0].0, 2,
        "the lost offsets are given to new records"
    );
    let got = pull_and_ack(&s.url).await;
    assert_eq!(
        got, produced,
        "records written over the lost tail are delivered"
    );
    let (_, d) = call(http().get(format!("{}/v1/subscriptions/s", s.url))).await;
    assert_eq!(d["backlog"], 0, "{d}");
    s.kill9();

    // The clamp was journaled: after another restart the next record is new too.
    let s = Server::start(dir.path(), &[]);
    let offset = produce_one(&s.url, "n3").await;
    assert_eq!(offset, 5);
    let got = pull_and_ack(&s.url).await;
    assert_eq!(got, [(5, "n3".to_string())]);
}
