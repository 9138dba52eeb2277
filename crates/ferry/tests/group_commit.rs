//! Concurrent single-record produces to one partition share their write and their sync:
//! their records land in shared batches, each request still gets its own offset, and
//! every acknowledged record survives kill -9.

mod common;
use common::*;
use serde_json::json;
use std::collections::BTreeMap;

#[tokio::test]
async fn concurrent_single_record_produces_share_batches_each_with_its_own_offset_and_survive_kill_9(
) {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    create_topic(&s.url, json!({"name": "t", "partitions": 1})).await;
    let client = http();
    let (rounds, in_flight) = (10, 64);
    let mut acked: BTreeMap<u64, String> = BTreeMap::new();
    for round in 0..rounds {
        let requests: Vec<_> = (0..in_flight)
            .map(|i| {
                let value = format!("r{round}-{i}");
                let req = client
                    .post(format!("{}/v1/topics/t/records", s.url))
                    .json(&json!({"records": [{"value": value}]}));
                tokio::spawn(async move { (value, call(req).await) })
            })
            .collect();
        for r in requests {
            let (value, (status, v)) = r.await.unwrap();
            assert_eq!(status, 200, "{v}");
            let offset = v["offsets"][0]["offset"].as_u64().unwrap();
            assert_eq!(v["offsets"][0]["partition"], 0);
            assert!(
                acked.insert(offset, value).is_none(),
                "offset {offset} given twice"
            );
        }
    }
    let total = (rounds * in_flight) as u64;
    assert_eq!(
        acked.keys().copied().collect::<Vec<_>>(),
        (0..total).collect::<Vec<_>>(),
        "offsets 0.. with no gap"
    );
    s.kill9();

    // Requests that arrived while a sync ran were written as one batch.
    let bytes = std::fs::read(active_segment(dir.path(), "t", 0)).unwrap();
    let batches = batch_positions(&bytes).len() - 1;
    assert!(
        (batches as u64) < total,
        "{total} concurrent requests were written as {batches} batches: none shared"
    );

    let s = Server::start(dir.path(), &[]);
    let read = read_all(&s.url, "t", 0, 0).await;
    assert_eq!(read.len() as u64, total);
    for r in read {
        let offset = r["offset"].as_u64().unwrap();
        assert_eq!(r["value"].as_str(), Some(acked[&offset].as_str()), "{r}");
    }
}
