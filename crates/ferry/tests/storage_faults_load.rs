//! Storage faults injected into the real binary under load (`FERRY_FAULTS`, honoured by
//! debug builds only: see `ferry_log::fault`). Producers write to both partitions of a
//! topic and consumers pull and ack from a queue subscription while one write or sync
//! fails: of a partition's segment (EIO or ENOSPC) or of the subscription's journal.
//!
//! While the process runs: nothing acknowledged is lost, nothing unacknowledged is
//! readable, every refusal is 503 `unavailable` or 507 `disk-full`, nothing sent after a
//! 503 from the stopped partition is acknowledged, and the process logs what failed.
//! After `kill -9` and a restart without faults: every acknowledged record is there,
//! writes go on, and the subscription delivers every acknowledged record that its
//! consumers had not acknowledged, never one whose ack was confirmed.
//!
//! Rounds: `FERRY_FAULT_ROUNDS` (1 by default: each kind of fault once). Seed:
//! `FERRY_FAULT_SEED`. The long run: `FERRY_FAULT_ROUNDS=20 cargo test -p ferry --test
//! storage_faults_load -- --nocapture` (docs/operations.md).

mod common;
use common::*;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PRODUCERS: usize = 4;
const CONSUMERS: usize = 2;
const PER_REQUEST: usize = 10;

/// One kind of fault: the `FERRY_FAULTS` spec without its count, and what it stops.
struct Kind {
    op: &'static str,
    path: &'static str,
    errno: &'static str,
    /// The partition that stops (a failed write or sync not for space).
    stops_partition: Option<u32>,
    /// The subscription stops.
    stops_subscription: bool,
}

const KINDS: &[Kind] = &[
    Kind {
        op: "fdatasync",
        path: "topics/t/0/",
        errno: "eio",
        stops_partition: Some(0),
        stops_subscription: false,
    },
    Kind {
        op: "pwrite",
        path: "topics/t/1/",
        errno: "eio",
        stops_partition: Some(1),
        stops_subscription: false,
    },
    Kind {
        op: "pwrite",
        path: "topics/t/0/",
        errno: "enospc",
        stops_partition: None,
        stops_subscription: false,
    },
    Kind {
        op: "fdatasync",
        path: "topics/t/1/",
        errno: "enospc",
        stops_partition: Some(1),
        stops_subscription: false,
    },
    Kind {
        op: "fdatasync",
        path: "subscriptions/s/journal",
        errno: "eio",
        stops_partition: None,
        stops_subscription: true,
    },
    Kind {
        op: "pwrite",
        path: "subscriptions/s/journal",
        errno: "eio",
        stops_partition: None,
        stops_subscription: true,
    },
];

#[derive(Default)]
struct Books {
    /// Record ids whose produce answered 200, by partition.
    produced: [HashSet<String>; 2],
    /// Answers other than 200, with the partition and whether the request was sent
    /// after a 503 from that partition had been received.
    refused: Vec<(u32, u16, Value)>,
    /// A 503 was received from the partition.
    stopped_seen: [bool; 2],
    /// Acks confirmed (200), by record id.
    acked: HashSet<String>,
    /// Acks sent and not answered, or not yet answered.
    unsure: HashSet<String>,
    /// Deliveries per record id.
    deliveries: HashMap<String, u32>,
    violations: Vec<String>,
}

async fn produce_until(
    url: String,
    producer: usize,
    stop: Arc<AtomicBool>,
    books: Arc<Mutex<Books>>,
) {
    let client = http();
    let partition = (producer % 2) as u32;
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let ids: Vec<String> = (0..PER_REQUEST)
            .map(|i| format!("p{producer}-{}", n + i))
            .collect();
        n += PER_REQUEST;
        let records: Vec<Value> = ids
            .iter()
            .map(|id| json!({"partition": partition, "value": {"id": id}}))
            .collect();
        let sent_after_stop = books.lock().unwrap().stopped_seen[partition as usize];
        let (status, v) = call(
            client
                .post(format!("{url}/v1/topics/t/records"))
                .json(&json!({ "records": records })),
        )
        .await;
        {
            let mut b = books.lock().unwrap();
            match status {
                200 => {
                    if sent_after_stop {
                        b.violations.push(format!(
                        "partition {partition} acknowledged a produce sent after it answered 503"
                    ));
                    }
                    b.produced[partition as usize].extend(ids);
                }
                503 => {
                    b.stopped_seen[partition as usize] = true;
                    b.refused.push((partition, status, v));
                }
                _ => b.refused.push((partition, status, v)),
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn consume_until(
    url: String,
    consumer: usize,
    stop: Arc<AtomicBool>,
    books: Arc<Mutex<Books>>,
) {
    let client = http();
    while !stop.load(Ordering::Relaxed) {
        let (status, v) =
            call(client.post(format!("{url}/v1/subscriptions/s/pull")).json(
                &json!({"max_records": 50, "wait_ms": 100, "consumer": format!("c{consumer}")}),
            ))
            .await;
        if status != 200 {
            if status != 503 {
                books
                    .lock()
                    .unwrap()
                    .violations
                    .push(format!("pull answered {status}: {v}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let records = v["records"].as_array().cloned().unwrap_or_default();
        if records.is_empty() {
            continue;
        }
        let mut ids = Vec::new();
        let mut leases = Vec::new();
        let newly_unsure: Vec<String> = {
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
            ids.iter()
                .filter(|id| b.unsure.insert((*id).clone()))
                .cloned()
                .collect()
        };
        let (status, v) = call(
            client
                .post(format!("{url}/v1/subscriptions/s/ack"))
                .json(&json!({ "lease_ids": leases })),
        )
        .await;
        let mut b = books.lock().unwrap();
        match status {
            200 => {
                for id in ids {
                    b.unsure.remove(&id);
                    if !b.acked.insert(id.clone()) {
                        b.violations.push(format!("{id} acked twice"));
                    }
                }
            }
            // A lease ran out: nothing was stored and the record comes again.
            404 => {
                for id in newly_unsure {
                    b.unsure.remove(&id);
                }
            }
            // The subscription stopped: the ack may have been written before the sync
            // that failed, and be found after the restart. It stays unsure.
            503 => {}
            other => b.violations.push(format!("ack answered {other}: {v}")),
        }
    }
}

async fn readable(url: &str, partition: u32) -> Vec<String> {
    read_all(url, "t", partition, 0)
        .await
        .iter()
        .map(|r| r["value"]["id"].as_str().unwrap().to_string())
        .collect()
}

fn start(dir: &std::path::Path, faults: Option<&str>) -> Server {
    let mut launch = ferry_testkit::Launch::new(BIN, dir);
    if let Some(spec) = faults {
        launch = launch.env("FERRY_FAULTS", spec);
    }
    launch.start().expect("ferry starts")
}

async fn run_one(kind: &Kind, nth: u32, rng: &mut rand::rngs::StdRng) {
    let spec = format!("{}@{}:{nth}:{}", kind.op, kind.path, kind.errno);
    println!("fault {spec}");
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), Some(&spec));
    create_topic(&s.url, json!({"name": "t", "partitions": 2})).await;
    create_subscription(
        &s.url,
        json!({
            "name": "s", "topic": "t", "start": "earliest",
            "visibility_timeout_ms": 5000, "max_deliveries": 0
        }),
    )
    .await;

    let books = Arc::new(Mutex::new(Books::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for p in 0..PRODUCERS {
        tasks.push(tokio::spawn(produce_until(
            s.url.clone(),
            p,
            Arc::clone(&stop),
            Arc::clone(&books),
        )));
    }
    for c in 0..CONSUMERS {
        tasks.push(tokio::spawn(consume_until(
            s.url.clone(),
            c,
            Arc::clone(&stop),
            Arc::clone(&books),
        )));
    }
    tokio::time::sleep(Duration::from_millis(rng.gen_range(800..1500))).await;
    // Every request in flight gets its answer: the books are exact.
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }

    let logs = s.logs().join("\n");
    assert!(
        logs.contains("Injected storage fault"),
        "{spec}: the fault was never reached; logs:\n{logs}"
    );
    if kind.stops_partition.is_some() {
        assert!(
            logs.contains("the partition stops taking writes until restart"),
            "{spec}: the process says what failed:\n{logs}"
        );
    }
    if kind.stops_subscription {
        assert!(
            logs.contains("the subscription stops until Ferry restarts"),
            "{spec}: the process says what failed:\n{logs}"
        );
    }
    {
        let b = books.lock().unwrap();
        assert!(
            b.violations.is_empty(),
            "{spec}: {:?}",
            &b.violations[..b.violations.len().min(10)]
        );
        for (partition, status, problem) in &b.refused {
            assert!(
                matches!(status, 503 | 507),
                "{spec}: partition {partition} answered {status}: {problem}"
            );
            if *status == 503 {
                assert_eq!(
                    Some(*partition),
                    kind.stops_partition,
                    "{spec}: only the failed partition refuses: {problem}"
                );
            }
        }
        if let Some(p) = kind.stops_partition {
            assert!(
                b.stopped_seen[p as usize],
                "{spec}: partition {p} never answered 503"
            );
        }
        // A write refused for space answers 507, unless it held several requests: then
        // each is tried alone, and the one-shot fault lets them all through.
        if kind.errno == "enospc" && kind.stops_partition.is_none() {
            assert!(
                b.refused.iter().any(|(_, status, _)| *status == 507)
                    || logs.contains("A grouped append failed; each request is tried alone."),
                "{spec}: the refused write answered 507 disk-full"
            );
        }
    }
    // While the process runs, exactly the acknowledged records are readable.
    for p in 0..2u32 {
        let read = readable(&s.url, p).await;
        let b = books.lock().unwrap();
        let read_set: HashSet<&String> = read.iter().collect();
        assert_eq!(read.len(), read_set.len(), "{spec}: a record stored twice");
        let lost: Vec<_> = b.produced[p as usize]
            .iter()
            .filter(|id| !read_set.contains(id))
            .take(5)
            .collect();
        assert!(
            lost.is_empty(),
            "{spec}: acknowledged and not readable: {lost:?}"
        );
        let unacked: Vec<_> = read
            .iter()
            .filter(|id| !b.produced[p as usize].contains(*id))
            .take(5)
            .collect();
        assert!(
            unacked.is_empty(),
            "{spec}: readable but never acknowledged: {unacked:?}"
        );
    }
    s.kill9();

    // A restart without faults: every acknowledged record is there and writes go on.
    let s = start(dir.path(), None);
    let mut written_not_acked = 0;
    for p in 0..2u32 {
        let read: HashSet<String> = readable(&s.url, p).await.into_iter().collect();
        let b = books.lock().unwrap();
        // Ids are unique; a record written twice would show here as a lost one.
        let lost: Vec<_> = b.produced[p as usize]
            .iter()
            .filter(|id| !read.contains(*id))
            .take(5)
            .collect();
        assert!(lost.is_empty(), "{spec}: lost at restart: {lost:?}");
        written_not_acked += read.len() - b.produced[p as usize].len();
    }
    for p in 0..2u32 {
        let (status, v) = produce(
            &s.url,
            "t",
            json!([{"partition": p, "value": {"id": format!("after-{p}")}}]),
        )
        .await;
        assert_eq!(status, 200, "{spec}: {v}");
        books.lock().unwrap().produced[p as usize].insert(format!("after-{p}"));
    }
    // The subscription drains: every acknowledged record reaches a confirmed ack.
    let stop = Arc::new(AtomicBool::new(false));
    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|c| {
            tokio::spawn(consume_until(
                s.url.clone(),
                c,
                Arc::clone(&stop),
                Arc::clone(&books),
            ))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = {
            let b = books.lock().unwrap();
            b.produced
                .iter()
                .flatten()
                .filter(|id| !b.acked.contains(*id) && !b.unsure.contains(*id))
                .count()
        };
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{spec}: {left} acknowledged records never delivered and acked after the restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for c in consumers {
        c.await.unwrap();
    }
    let b = books.lock().unwrap();
    assert!(
        b.violations.is_empty(),
        "{spec}: {:?}",
        &b.violations[..b.violations.len().min(10)]
    );
    println!(
        "fault {spec}: {} records acknowledged, {} refusals, {} written but not acknowledged (found after the restart), {} acks confirmed",
        b.produced.iter().map(|p| p.len()).sum::<usize>(),
        b.refused.len(),
        written_not_acked,
        b.acked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_load_a_failed_write_or_sync_never_loses_an_acknowledged_record_nor_shows_an_unacknowledged_one(
) {
    let rounds: usize = std::env::var("FERRY_FAULT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let seed: u64 = std::env::var("FERRY_FAULT_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    println!("storage faults under load: {rounds} round(s), seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for _ in 0..rounds {
        for kind in KINDS {
            // Late enough that records were stored and acknowledged before it, early
            // enough that the load reaches it on a slow machine.
            let nth = rng.gen_range(3..25);
            run_one(kind, nth, &mut rng).await;
        }
    }
}
