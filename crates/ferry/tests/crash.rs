//! Kill -9 under load: every acknowledged record survives exactly once, in order, and
//! nothing half-written is ever served.
//!
//! Cycles: `FERRY_CRASH_CYCLES` (20 by default; the soak in scripts/soak.sh runs 1,000
//! and checks every 100th restart with `FERRY_CRASH_VERIFY_EVERY`, and the last).
//! The seed is printed so a failure can be replayed with `FERRY_CRASH_SEED`.

mod common;
use common::*;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const PRODUCERS: usize = 4;
const PARTITIONS: u32 = 3;

#[derive(Clone, Copy, Debug)]
struct Ack {
    partition: u32,
    offset: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_records_survive_kill_9_exactly_once_and_in_order() {
    let cycles: usize = std::env::var("FERRY_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    // Every restart is checked by default; the soak checks every Nth and the last.
    let verify_every: usize = std::env::var("FERRY_CRASH_VERIFY_EVERY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    let seed: u64 = std::env::var("FERRY_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    println!("crash test: {cycles} cycles, seed {seed} (replay with FERRY_CRASH_SEED={seed})");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    // Every acknowledged record id, with where the server said it landed.
    let acked: Arc<Mutex<HashMap<String, Ack>>> = Arc::new(Mutex::new(HashMap::new()));
    let mut sent_total = 0usize;
    let mut cuts_logged = 0usize;
    for cycle in 0..cycles {
        let server = Server::start(dir.path(), &[]);
        if cycle == 0 {
            create_topic(
                &server.url,
                json!({"name": "crash", "partitions": PARTITIONS, "segment_bytes": 65536}),
            )
            .await;
        }
        if cycle % verify_every == 0 {
            let snapshot = acked.lock().unwrap().clone();
            verify(&server.url, &snapshot).await;
        }
        cuts_logged += server.logs().iter().filter(|l| l.contains("Cut ")).count();
        let mut tasks = Vec::new();
        for p in 0..PRODUCERS {
            let (url, acked) = (server.url.clone(), Arc::clone(&acked));
            let batch = 1 + (p * 3) % 7;
            tasks.push(tokio::spawn(async move {
                let client = http();
                let mut seq = 0usize;
                loop {
                    let ids: Vec<String> = (0..batch)
                        .map(|i| format!("c{cycle}-p{p}-s{}", seq + i))
                        .collect();
                    let records: Vec<_> = ids
                        .iter()
                        .map(|id| json!({"key": format!("producer-{p}"), "value": id}))
                        .collect();
                    seq += batch;
                    let resp = client
                        .post(format!("{url}/v1/topics/crash/records"))
                        .json(&json!({"records": records}))
                        .send()
                        .await;
                    let Ok(resp) = resp else { return seq };
                    let Ok(body) = resp.json::<serde_json::Value>().await else {
                        return seq;
                    };
                    let Some(offsets) = body["offsets"].as_array() else {
                        return seq;
                    };
                    let mut a = acked.lock().unwrap();
                    for (id, o) in ids.iter().zip(offsets) {
                        a.insert(
                            id.clone(),
                            Ack {
                                partition: o["partition"].as_u64().unwrap() as u32,
                                offset: o["offset"].as_u64().unwrap(),
                            },
                        );
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(30..400))).await;
        server.kill9();
        for t in tasks {
            sent_total += t.await.unwrap();
        }
    }
    let server = Server::start(dir.path(), &[]);
    let acked = acked.lock().unwrap().clone();
    verify(&server.url, &acked).await;
    println!(
        "crash test: {} records acknowledged of {sent_total} sent over {cycles} kills; {cuts_logged} torn tails cut",
        acked.len()
    );
    assert!(acked.len() > cycles, "the producers made progress");
}

/// Reads every partition and checks the acknowledged records against it.
async fn verify(url: &str, acked: &HashMap<String, Ack>) {
    let mut seen: HashMap<String, (u32, u64)> = HashMap::new();
    for p in 0..PARTITIONS {
        let mut last_seq: HashMap<String, (usize, usize)> = HashMap::new();
        for (expected_offset, r) in read_all(url, "crash", p, 0).await.into_iter().enumerate() {
            let offset = r["offset"].as_u64().unwrap();
            assert_eq!(
                offset, expected_offset as u64,
                "offsets are dense in partition {p}"
            );
            let id = r["value"]
                .as_str()
                .unwrap_or_else(|| panic!("a record is intact: {r}"))
                .to_string();
            assert!(
                seen.insert(id.clone(), (p, offset)).is_none(),
                "{id} appears once"
            );
            // Within one producer and cycle, sequence numbers only grow.
            let (stream, seq) = id.rsplit_once("-s").unwrap();
            let (cycle_p, seq): (String, usize) = (stream.to_string(), seq.parse().unwrap());
            let cycle: usize = cycle_p[1..cycle_p.find('-').unwrap()].parse().unwrap();
            if let Some((c, prev)) = last_seq.get(&cycle_p) {
                assert!(*c == cycle && seq > *prev, "{id} is in order");
            }
            last_seq.insert(cycle_p, (cycle, seq));
        }
    }
    let missing: HashSet<_> = acked.keys().filter(|id| !seen.contains_key(*id)).collect();
    assert!(
        missing.is_empty(),
        "acknowledged records lost: {:?}",
        missing.iter().take(5).collect::<Vec<_>>()
    );
    for (id, ack) in acked {
        assert_eq!(
            seen[id],
            (ack.partition, ack.offset),
            "{id} is where its acknowledgement said"
        );
    }
}
