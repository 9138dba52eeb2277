//! Batches a Kafka client builds by hand, sent over a raw socket to the real binary:
//! whatever their CRC says, a batch whose records disagree with its header is refused
//! with Kafka's own code, nothing of it is stored, and subscriptions keep delivering.

mod common;
use common::*;
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// INVALID_RECORD, as Kafka answers a batch whose records are inconsistent.
const INVALID_RECORD: i16 = 87;

fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn varlong(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// One record of a hand-built batch: its offset and timestamp deltas and its value.
struct Raw {
    offset_delta: i64,
    timestamp_delta: i64,
    value: &'static [u8],
}

/// An uncompressed RecordBatch v2 with a correct CRC and whatever header fields and
/// record deltas the caller chose.
fn raw_batch(
    records: &[Raw],
    record_count: i32,
    last_offset_delta: i32,
    base_ts: i64,
    max_ts: i64,
) -> Vec<u8> {
    let mut body = Vec::new();
    for r in records {
        let mut rec = vec![0u8];
        varlong(&mut rec, r.timestamp_delta);
        varlong(&mut rec, r.offset_delta);
        varlong(&mut rec, -1);
        varlong(&mut rec, r.value.len() as i64);
        rec.extend_from_slice(r.value);
        varlong(&mut rec, 0);
        varlong(&mut body, rec.len() as i64);
        body.extend_from_slice(&rec);
    }
    let mut b = Vec::new();
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&((49 + body.len()) as i32).to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes());
    b.push(2);
    b.extend_from_slice(&0u32.to_be_bytes());
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&last_offset_delta.to_be_bytes());
    b.extend_from_slice(&base_ts.to_be_bytes());
    b.extend_from_slice(&max_ts.to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes());
    b.extend_from_slice(&(-1i16).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.extend_from_slice(&record_count.to_be_bytes());
    b.extend_from_slice(&body);
    let crc = crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// Sends one Produce v3 (acks all) of `batch` to partition 0 of `topic` and answers
/// the partition's error code.
fn produce_v3(kafka: &str, topic: &str, batch: &[u8]) -> i16 {
    let mut req = Vec::new();
    req.extend_from_slice(&0i16.to_be_bytes()); // Produce
    req.extend_from_slice(&3i16.to_be_bytes());
    req.extend_from_slice(&7i32.to_be_bytes()); // correlation id
    req.extend_from_slice(&4i16.to_be_bytes());
    req.extend_from_slice(b"test");
    req.extend_from_slice(&(-1i16).to_be_bytes()); // no transactional id
    req.extend_from_slice(&(-1i16).to_be_bytes()); // acks all
    req.extend_from_slice(&10_000i32.to_be_bytes());
    req.extend_from_slice(&1i32.to_be_bytes());
    req.extend_from_slice(&(topic.len() as i16).to_be_bytes());
    req.extend_from_slice(topic.as_bytes());
    req.extend_from_slice(&1i32.to_be_bytes());
    req.extend_from_slice(&0i32.to_be_bytes());
    req.extend_from_slice(&(batch.len() as i32).to_be_bytes());
    req.extend_from_slice(batch);
    let mut conn = TcpStream::connect(kafka).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    conn.write_all(&(req.len() as i32).to_be_bytes()).unwrap();
    conn.write_all(&req).unwrap();
    let mut len = [0u8; 4];
    conn.read_exact(&mut len).unwrap();
    let mut resp = vec![0u8; i32::from_be_bytes(len) as usize];
    conn.read_exact(&mut resp).unwrap();
    // correlation id, topic count, topic name, partition count, partition index.
    let at = 4 + 4 + 2 + topic.len() + 4 + 4;
    i16::from_be_bytes([resp[at], resp[at + 1]])
}

async fn latest(url: &str, topic: &str) -> u64 {
    let (s, t) = call(http().get(format!("{url}/v1/topics/{topic}"))).await;
    assert_eq!(s, 200, "{t}");
    t["partition_stats"][0]["latest"].as_u64().unwrap()
}

/// Refuses `batch` with INVALID_RECORD and shows that nothing was stored.
async fn refused(s: &Server, batch: Vec<u8>) {
    let kafka = s.kafka.clone();
    let code = tokio::task::spawn_blocking(move || produce_v3(&kafka, "t", &batch))
        .await
        .unwrap();
    assert_eq!(code, INVALID_RECORD);
    assert_eq!(latest(&s.url, "t").await, 0, "nothing is stored");
}

fn two(d0: i64, d1: i64) -> [Raw; 2] {
    [
        Raw {
            offset_delta: d0,
            timestamp_delta: 0,
            value: b"a",
        },
        Raw {
            offset_delta: d1,
            timestamp_delta: 1,
            value: b"b",
        },
    ]
}

#[tokio::test]
async fn a_kafka_batch_whose_record_offsets_disagree_with_its_header_is_refused_and_subscriptions_keep_delivering(
) {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    create_topic(&s.url, json!({"name": "t"})).await;
    create_subscription(
        &s.url,
        json!({"name": "q", "topic": "t", "start": "earliest"}),
    )
    .await;

    // The batch of the report: two records, offset deltas 0 and 2147483647.
    refused(&s, raw_batch(&two(0, i32::MAX as i64), 2, 1, 1000, 1001)).await;
    // A negative delta, which once reached lookups by time.
    refused(&s, raw_batch(&two(0, -5), 2, 1, 1000, 1001)).await;
    // In the wrong order.
    refused(&s, raw_batch(&two(1, 0), 2, 1, 1000, 1001)).await;
    // The header claims more records than there are.
    refused(&s, raw_batch(&two(0, 1)[..1], 2, 1, 1000, 1001)).await;
    // Fewer records than there are.
    refused(&s, raw_batch(&two(0, 1), 1, 0, 1000, 1001)).await;

    // A good batch from the same socket path is taken.
    let kafka = s.kafka.clone();
    let code = tokio::task::spawn_blocking(move || {
        produce_v3(&kafka, "t", &raw_batch(&two(0, 1), 2, 1, 1000, 1001))
    })
    .await
    .unwrap();
    assert_eq!(code, 0);
    let (st, v) = produce(
        &s.url,
        "t",
        json!([{"value": 1}, {"value": 2}, {"value": 3}, {"value": 4}, {"value": 5}]),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let records = read_all(&s.url, "t", 0, 0).await;
    let offsets: Vec<u64> = records
        .iter()
        .map(|r| r["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, vec![0, 1, 2, 3, 4, 5, 6]);

    let (st, v) = call(
        http()
            .post(format!("{}/v1/subscriptions/q/pull", s.url))
            .json(&json!({"max_records": 100, "wait_ms": 2000})),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["records"].as_array().unwrap().len(), 7, "{v}");
}

/// Peak resident memory of a process, from /proc (VmHWM, in bytes).
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// A zstd batch of a few KiB whose records inflate to 256 MiB of zeros.
fn zstd_bomb() -> Vec<u8> {
    let zeros = vec![0u8; 256 << 20];
    let body = ferry_log::compression::compress(ferry_log::Compression::Zstd, &zeros).unwrap();
    drop(zeros);
    let mut b = Vec::new();
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&((49 + body.len()) as i32).to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes());
    b.push(2);
    b.extend_from_slice(&0u32.to_be_bytes());
    b.extend_from_slice(&4i16.to_be_bytes()); // zstd
    b.extend_from_slice(&0i32.to_be_bytes());
    b.extend_from_slice(&1000i64.to_be_bytes());
    b.extend_from_slice(&1000i64.to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes());
    b.extend_from_slice(&(-1i16).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.extend_from_slice(&1i32.to_be_bytes());
    b.extend_from_slice(&body);
    let crc = crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

#[tokio::test]
async fn zstd_bombs_over_many_connections_stay_within_the_decompression_budget() {
    let dir = tempfile::tempdir().unwrap();
    let budget: u64 = 64 << 20;
    let s = Server::start(
        dir.path(),
        &["--decompress-memory-bytes", &budget.to_string()],
    );
    create_topic(&s.url, json!({"name": "t"})).await;
    let bomb = std::sync::Arc::new(zstd_bomb());
    assert!(bomb.len() < 64 << 10, "{}", bomb.len());
    let before = peak_rss(s.child.id());
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let kafka = s.kafka.clone();
        let bomb = bomb.clone();
        tasks.push(tokio::task::spawn_blocking(move || {
            (0..2)
                .map(|_| produce_v3(&kafka, "t", &bomb))
                .collect::<Vec<_>>()
        }));
    }
    for t in tasks {
        for code in t.await.unwrap() {
            assert_eq!(code, INVALID_RECORD);
        }
    }
    let peak = peak_rss(s.child.id());
    eprintln!(
        "peak RSS {} MiB (before the bombs {} MiB, budget {} MiB)",
        peak >> 20,
        before >> 20,
        budget >> 20
    );
    // The budget, plus what growing the buffers may briefly hold on top of it.
    assert!(
        peak < before + budget * 2,
        "peak RSS {} MiB, {} MiB before",
        peak >> 20,
        before >> 20
    );
    assert_eq!(latest(&s.url, "t").await, 0, "nothing is stored");
    // The broker still takes ordinary compressed batches.
    let good = ferry_log::batch::build_batch(
        &[ferry_log::NewRecord {
            timestamp: 1,
            value: Some(vec![b'x'; 100_000].into()),
            ..Default::default()
        }],
        ferry_log::Compression::Zstd,
    )
    .unwrap();
    let kafka = s.kafka.clone();
    let code = tokio::task::spawn_blocking(move || produce_v3(&kafka, "t", &good))
        .await
        .unwrap();
    assert_eq!(code, 0);
}
