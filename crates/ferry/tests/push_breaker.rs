//! The push circuit breaker through the real binary: every probe it lets out ends in an
//! outcome or is given back, so a half-open breaker always closes (or opens again).

mod common;
use common::endpoint::{Endpoint, Reply};
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const ALLOW: &[&str] = &["--push-allow-private"];

async fn describe(url: &str, name: &str) -> Value {
    call(http().get(format!("{url}/v1/subscriptions/{name}")))
        .await
        .1
}

async fn wait_for_breaker(url: &str, name: &str, state: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let d = describe(url, name).await;
        if d["push_status"]["breaker"] == state {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for the breaker to be {state}: {d}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One sender, three probes, a queue of three records (the rate limit sizes it), and a
/// cool-down longer than the leases of the records queued when the breaker opened: once
/// half-open, the first probe goes out with the record its sender kept, and the records
/// after it in the queue have outlived their lease. Their probes must not be lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_breaker_closes_when_queued_records_outlived_their_lease() {
    const RECORDS: u64 = 8;
    let ep = Endpoint::start().await;
    ep.script.lock().unwrap().default = Some(Reply::Status(503));
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), ALLOW);
    let url = &server.url;
    create_topic(url, json!({"name": "t", "partitions": 1})).await;
    // Leases: (queue depth 3 / concurrency 1 + 1) × timeout 100 ms + 3 records at 3/s
    // + 10 s = 11.4 s, shorter than the cool-down of 13 s.
    let (s, v) = call(http().post(format!("{url}/v1/subscriptions")).json(&json!({
        "name": "p", "topic": "t", "start": "earliest", "max_deliveries": 0,
        "retry": {"strategy": "fixed", "delay_ms": 100},
        "push": {"url": ep.url(), "concurrency": 1, "rate_limit_per_s": 3, "timeout_ms": 100,
                 "breaker": {"min_calls": 2, "failure_rate_percent": 50, "window_ms": 10000,
                             "cooldown_ms": 13000, "probes": 3}}
    })))
    .await;
    assert_eq!(s, 201, "{v}");
    let records: Vec<Value> = (0..RECORDS).map(|i| json!({ "value": i })).collect();
    let (s, v) = produce(url, "t", Value::Array(records)).await;
    assert_eq!(s, 200, "{v}");

    wait_for_breaker(url, "p", "open", Duration::from_secs(20)).await;
    ep.script.lock().unwrap().default = Some(Reply::Status(200));
    wait_for_breaker(url, "p", "half_open", Duration::from_secs(20)).await;
    // Three probes at 3 requests a second take about a second.
    wait_for_breaker(url, "p", "closed", Duration::from_secs(15)).await;

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let d = describe(url, "p").await;
        if d["backlog"] == 0 && ep.count_ok() as u64 >= RECORDS {
            break;
        }
        assert!(Instant::now() < deadline, "timed out delivering: {d}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut accepted: BTreeMap<u64, usize> = BTreeMap::new();
    for r in ep.received().iter().filter(|r| r.answered == 200) {
        let offset = r.headers["ferry-offset"].to_str().unwrap().parse().unwrap();
        *accepted.entry(offset).or_default() += 1;
    }
    assert_eq!(
        accepted,
        (0..RECORDS).map(|o| (o, 1)).collect(),
        "every record accepted once"
    );
}
