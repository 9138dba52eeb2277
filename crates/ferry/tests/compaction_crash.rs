//! Compacted topics through the real binary: kill -9 while the cleaner rewrites
//! segments loses nothing and serves nothing twice; reads across the gaps it leaves
//! (HTTP from any offset, queue subscriptions) see each key's latest record.

mod common;
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const KEYS: usize = 25;

/// Writes `rounds` versions of every key (the last round of key 0 a tombstone);
/// returns each key's latest offset and value.
async fn write_versions(url: &str, rounds: usize) -> BTreeMap<String, (u64, Value)> {
    let mut latest = BTreeMap::new();
    for round in 0..rounds {
        let records: Vec<Value> = (0..KEYS)
            .map(|k| {
                if round == rounds - 1 && k == 0 {
                    json!({"key": format!("k{k}"), "value": null})
                } else {
                    json!({"key": format!("k{k}"), "value": format!("k{k}-v{round}-{}", "x".repeat(80))})
                }
            })
            .collect();
        let (status, v) = produce(url, "table", json!(records)).await;
        assert_eq!(status, 200, "{v}");
        for (k, o) in v["offsets"].as_array().unwrap().iter().enumerate() {
            let value = records[k]["value"].clone();
            latest.insert(format!("k{k}"), (o["offset"].as_u64().unwrap(), value));
        }
    }
    // Other keys roll the segment holding the last versions.
    let filler: Vec<Value> = (0..100)
        .map(|i| json!({"key": format!("f{i}"), "value": "y".repeat(100)}))
        .collect();
    let (status, v) = produce(url, "table", json!(filler)).await;
    assert_eq!(status, 200, "{v}");
    latest
}

/// Checks what a server reads: every offset once, in order, each key's latest record
/// at its offset; with `compacted`, older versions gone.
async fn check(url: &str, latest: &BTreeMap<String, (u64, Value)>, compacted: bool) -> bool {
    let records = read_all(url, "table", 0, 0).await;
    let offsets: Vec<u64> = records
        .iter()
        .map(|r| r["offset"].as_u64().unwrap())
        .collect();
    let mut sorted = offsets.clone();
    sorted.dedup();
    assert_eq!(offsets, sorted, "every offset once, in order");
    let mut by_key: BTreeMap<String, Vec<(u64, Value)>> = BTreeMap::new();
    for r in &records {
        let key = r["key"].as_str().unwrap().to_string();
        by_key
            .entry(key)
            .or_default()
            .push((r["offset"].as_u64().unwrap(), r["value"].clone()));
    }
    for (k, (o, v)) in latest {
        let last = by_key[k].last().unwrap();
        assert_eq!(&last.0, o, "{k}: its latest record is at its offset");
        assert_eq!(&last.1, v, "{k}: with its value");
    }
    let versions: usize = by_key
        .iter()
        .filter(|(k, _)| k.starts_with('k'))
        .map(|(_, v)| v.len())
        .sum();
    !compacted || versions < KEYS * 3
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_compaction_loses_nothing_and_serves_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--retention-check-ms", "10"];
    let server = Server::start(dir.path(), &args);
    let t = create_topic(
        &server.url,
        json!({"name": "table", "segment_bytes": 4096, "cleanup_policy": "compact",
               "min_cleanable_dirty_ratio": 0.01}),
    )
    .await;
    assert_eq!(t["cleanup_policy"], "compact");
    // A record without a key is refused with a problem.
    let (status, v) = produce(&server.url, "table", json!([{"value": "no key"}])).await;
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["type"], "urn:ferry:problem:key-required", "{v}");
    assert_eq!(v["record_index"], 0, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("key"), "{v}");
    let latest = write_versions(&server.url, 40).await;
    let mut server = server;
    // Kills at different moments of the cleaner's work.
    for delay_ms in [0u64, 5, 15, 30, 60, 120] {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        server.kill9();
        server = Server::start(dir.path(), &args);
        assert!(check(&server.url, &latest, false).await);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check(&server.url, &latest, true).await {
        assert!(Instant::now() < deadline, "the partition was not compacted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let leftovers: Vec<String> = std::fs::read_dir(dir.path().join("topics/table/0"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".cleaned") || n.ends_with(".swap"))
        .collect();
    assert!(
        leftovers.is_empty() || server.logs().iter().any(|l| l.contains("Compacted")),
        "{leftovers:?}"
    );
    // A read from inside a gap starts at the next record.
    let first_kept = read_all(&server.url, "table", 0, 0).await[0]["offset"]
        .as_u64()
        .unwrap();
    if first_kept > 0 {
        let from_gap = read_all(&server.url, "table", 0, first_kept - 1).await;
        assert_eq!(from_gap[0]["offset"].as_u64(), Some(first_kept));
    }
    // A queue subscription from the start delivers each kept record once.
    create_subscription(
        &server.url,
        json!({"name": "table-sub", "topic": "table", "mode": "queue", "start": "earliest"}),
    )
    .await;
    let kept = read_all(&server.url, "table", 0, 0).await.len();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < kept && Instant::now() < deadline {
        let (status, v) = call(
            http()
                .post(format!("{}/v1/subscriptions/table-sub/pull", server.url))
                .json(&json!({"max_records": 500, "wait_ms": 200})),
        )
        .await;
        assert_eq!(status, 200, "{v}");
        let records = v["records"].as_array().unwrap();
        let ids: Vec<Value> = records.iter().map(|r| r["lease_id"].clone()).collect();
        seen.extend(records.iter().map(|r| r["offset"].as_u64().unwrap()));
        if !ids.is_empty() {
            let (status, v) = call(
                http()
                    .post(format!("{}/v1/subscriptions/table-sub/ack", server.url))
                    .json(&json!({"lease_ids": ids})),
            )
            .await;
            assert!(status < 300, "{v}");
        }
    }
    let mut sorted = seen.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), seen.len(), "each record delivered once");
    assert_eq!(
        seen.len(),
        kept,
        "the subscription delivers every kept record"
    );
}
