//! Kill -9 under load with queue subscriptions: producers and consumers run while the
//! real process is killed again and again. By the consumers' own accounting, every
//! produced record is acknowledged, no record is delivered again once its ack was
//! confirmed, and no ack is confirmed twice. Redeliveries are counted and reported.
//!
//! Cycles: `FERRY_SUB_CRASH_CYCLES` (6 by default). Seed: `FERRY_SUB_CRASH_SEED`.

mod common;
use common::*;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CONSUMERS: usize = 3;

#[derive(Default)]
struct Books {
    /// Ids whose produce was acknowledged.
    produced: HashSet<String>,
    /// Ids whose ack was confirmed (200).
    acked: HashSet<String>,
    /// Ids whose ack was sent but not answered (the process died): stored or not.
    unsure: HashSet<String>,
    /// Deliveries per id.
    deliveries: HashMap<String, u32>,
    violations: Vec<String>,
}

async fn consume(url: String, consumer: usize, books: Arc<Mutex<Books>>) {
    let client = http();
    loop {
        let resp = client
            .post(format!("{url}/v1/subscriptions/work/pull"))
            .json(&json!({"max_records": 50, "wait_ms": 200, "consumer": format!("c{consumer}")}))
            .send()
            .await;
        let Ok(resp) = resp else { return };
        let Ok(v) = resp.json::<Value>().await else {
            return;
        };
        let records = v["records"].as_array().cloned().unwrap_or_default();
        if records.is_empty() {
            continue;
        }
        let mut ids = Vec::new();
        let mut leases = Vec::new();
        {
            let mut b = books.lock().unwrap();
            for r in &records {
                let id = r["value"]["id"].as_str().unwrap().to_string();
                if b.acked.contains(&id) {
                    b.violations
                        .push(format!("{id} delivered again after its ack was confirmed"));
                }
                *b.deliveries.entry(id.clone()).or_default() += 1;
                ids.push(id);
                leases.push(r["lease_id"].clone());
            }
        }
        // Until the answer is read, an ack may or may not be stored: the task can be
        // aborted (after the kill) before it sees the connection fail. Book the ids as
        // unsure first, and settle them when the answer comes.
        let newly_unsure: Vec<String> = {
            let mut b = books.lock().unwrap();
            ids.iter()
                .filter(|id| b.unsure.insert((*id).clone()))
                .cloned()
                .collect()
        };
        let resp = client
            .post(format!("{url}/v1/subscriptions/work/ack"))
            .json(&json!({ "lease_ids": leases }))
            .send()
            .await;
        let mut b = books.lock().unwrap();
        match resp.map(|r| r.status().as_u16()) {
            Ok(200) => {
                for id in ids {
                    b.unsure.remove(&id);
                    if !b.acked.insert(id.clone()) {
                        b.violations.push(format!("{id} acked twice"));
                    }
                }
            }
            // A lease that expired under load: nothing was stored, the record comes again.
            Ok(404) => {
                for id in newly_unsure {
                    b.unsure.remove(&id);
                }
            }
            Ok(other) => b.violations.push(format!("ack answered {other}")),
            Err(_) => return,
        }
    }
}

async fn produce_some(
    url: String,
    start: usize,
    books: Arc<Mutex<Books>>,
    next: Arc<Mutex<usize>>,
) {
    let client = http();
    let mut n = start;
    loop {
        let batch: Vec<Value> = (n..n + 20)
            .map(|i| json!({"key": format!("k{}", i % 50), "value": {"id": format!("r{i}")}}))
            .collect();
        let resp = client
            .post(format!("{url}/v1/topics/jobs/records"))
            .json(&json!({ "records": batch }))
            .send()
            .await;
        match resp.map(|r| r.status().as_u16()) {
            Ok(200) => {
                let mut b = books.lock().unwrap();
                b.produced.extend((n..n + 20).map(|i| format!("r{i}")));
            }
            _ => return,
        }
        n += 20;
        *next.lock().unwrap() = n;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscription_state_survives_kill_9_under_load() {
    let cycles: usize = std::env::var("FERRY_SUB_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let seed: u64 = std::env::var("FERRY_SUB_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    println!("subscription crash test: {cycles} cycles, seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let books = Arc::new(Mutex::new(Books::default()));
    let next = Arc::new(Mutex::new(0usize));
    for cycle in 0..cycles {
        let server = Server::start(dir.path(), &[]);
        if cycle == 0 {
            create_topic(&server.url, json!({"name": "jobs", "partitions": 2})).await;
            create_subscription(
                &server.url,
                json!({
                    "name": "work", "topic": "jobs", "start": "earliest",
                    "visibility_timeout_ms": 2000, "max_deliveries": 0
                }),
            )
            .await;
        }
        let mut tasks = Vec::new();
        let start = *next.lock().unwrap();
        tasks.push(tokio::spawn(produce_some(
            server.url.clone(),
            start + 1_000_000 * cycle,
            Arc::clone(&books),
            Arc::clone(&next),
        )));
        for c in 0..CONSUMERS {
            tasks.push(tokio::spawn(consume(
                server.url.clone(),
                c,
                Arc::clone(&books),
            )));
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(300..1200))).await;
        server.kill9();
        for t in tasks {
            t.abort();
            let _ = t.await;
        }
    }
    // A last run drains everything.
    let server = Server::start(dir.path(), &[]);
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut tasks = Vec::new();
    for c in 0..CONSUMERS {
        tasks.push(tokio::spawn(consume(
            server.url.clone(),
            c,
            Arc::clone(&books),
        )));
    }
    loop {
        let done = {
            let b = books.lock().unwrap();
            b.produced
                .iter()
                .all(|id| b.acked.contains(id) || b.unsure.contains(id))
        };
        let (_, d) = call(http().get(format!("{}/v1/subscriptions/work", server.url))).await;
        if done && d["backlog"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "not drained in time: {d}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for t in tasks {
        t.abort();
    }
    let b = books.lock().unwrap();
    assert!(
        b.violations.is_empty(),
        "{:?}",
        &b.violations[..b.violations.len().min(10)]
    );
    let missing: Vec<_> = b
        .produced
        .iter()
        .filter(|id| !b.acked.contains(*id) && !b.unsure.contains(*id))
        .collect();
    assert!(missing.is_empty(), "never acked: {missing:?}");
    let redeliveries: u32 = b.deliveries.values().map(|n| n - 1).sum();
    println!(
        "subscription crash test: {} records produced, {} acks confirmed, {} acks unanswered (stored before the kill), {} redeliveries over {} kills",
        b.produced.len(),
        b.acked.len(),
        b.unsure.len(),
        redeliveries,
        cycles
    );
    assert!(
        b.produced.len() > 100,
        "the test produced too little to mean anything"
    );
}
