//! Fetch limits as Kafka defines them (KIP-74), through the real binary: a Fetch's record
//! data stays within the request's `max_bytes` and each partition's within its
//! `partition_max_bytes`, in whole batches, except that the first batch of the first
//! partition with data comes whole when it alone is larger, so a consumer always moves
//! on. A consumer once got an answer of 1,843,824 bytes for a limit of 1,000,512 and
//! dropped the connection.

mod common;
use common::*;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use serde_json::json;
use std::collections::BTreeMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOPIC: &str = "limits";
const PARTITIONS: u32 = 3;
/// Batches produced into each partition.
const BATCHES: u64 = 12;
/// Records in each batch.
const RECORDS_PER_BATCH: usize = 8;
const FETCH_VERSION: i16 = 12;

/// One stored batch as found in a fetch answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BatchSpan {
    base_offset: i64,
    last_offset: i64,
    bytes: usize,
}

/// Splits a partition's record data into batches; panics unless it is whole batches.
fn batches(data: &[u8]) -> Vec<BatchSpan> {
    let mut out = Vec::new();
    let mut p = 0;
    while p < data.len() {
        assert!(p + 61 <= data.len(), "a cut batch header at byte {p}");
        let base = i64::from_be_bytes(data[p..p + 8].try_into().unwrap());
        let len = i32::from_be_bytes(data[p + 8..p + 12].try_into().unwrap()) as usize;
        let delta = i32::from_be_bytes(data[p + 23..p + 27].try_into().unwrap());
        let bytes = 12 + len;
        assert!(p + bytes <= data.len(), "a cut batch at byte {p}");
        out.push(BatchSpan {
            base_offset: base,
            last_offset: base + i64::from(delta),
            bytes,
        });
        p += bytes;
    }
    out
}

struct Kafka {
    conn: TcpStream,
    correlation_id: i32,
}

impl Kafka {
    async fn connect(addr: &str) -> Kafka {
        Kafka {
            conn: TcpStream::connect(addr).await.unwrap(),
            correlation_id: 0,
        }
    }

    /// One Fetch (no waiting) of every partition from its offset in `offsets`.
    async fn fetch(
        &mut self,
        offsets: &BTreeMap<i32, i64>,
        max_bytes: i32,
        partition_max_bytes: i32,
    ) -> FetchResponse {
        let partitions = offsets
            .iter()
            .map(|(p, o)| {
                FetchPartition::default()
                    .with_partition(*p)
                    .with_fetch_offset(*o)
                    .with_partition_max_bytes(partition_max_bytes)
                    .with_log_start_offset(-1)
            })
            .collect();
        let req = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(0)
            .with_min_bytes(0)
            .with_max_bytes(max_bytes)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str(TOPIC)))
                .with_partitions(partitions)]);
        self.correlation_id += 1;
        let mut out = BytesMut::new();
        out.put_i32(0);
        RequestHeader::default()
            .with_request_api_key(ApiKey::Fetch as i16)
            .with_request_api_version(FETCH_VERSION)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("fetch-limits")))
            .encode(
                &mut out,
                ApiKey::Fetch.request_header_version(FETCH_VERSION),
            )
            .unwrap();
        req.encode(&mut out, FETCH_VERSION).unwrap();
        let len = (out.len() - 4) as i32;
        out[..4].copy_from_slice(&len.to_be_bytes());
        self.conn.write_all(&out).await.unwrap();
        let len = self.conn.read_i32().await.unwrap();
        let mut frame = vec![0; len as usize];
        self.conn.read_exact(&mut frame).await.unwrap();
        let mut frame = Bytes::from(frame);
        let header = ResponseHeader::decode(
            &mut frame,
            ApiKey::Fetch.response_header_version(FETCH_VERSION),
        )
        .unwrap();
        assert_eq!(header.correlation_id, self.correlation_id);
        FetchResponse::decode(&mut frame, FETCH_VERSION).unwrap()
    }
}

/// Produces `BATCHES` batches of `RECORDS_PER_BATCH` records into every partition, over
/// HTTP (one request, one batch); a partition's values grow with its index, so that
/// batch sizes differ between partitions. Answers each partition's batch sizes.
async fn fill(url: &str, kafka_addr: &str) -> BTreeMap<i32, Vec<usize>> {
    for p in 0..PARTITIONS {
        let value = "v".repeat(700 * (p as usize + 1));
        for b in 0..BATCHES {
            let records: Vec<_> = (0..RECORDS_PER_BATCH)
                .map(|i| json!({"partition": p, "key": format!("{b}-{i}"), "value": value}))
                .collect();
            let (status, v) = produce(url, TOPIC, json!(records)).await;
            assert_eq!(status, 200, "{v}");
        }
    }
    // Read each partition whole to learn its batches.
    let mut kafka = Kafka::connect(kafka_addr).await;
    let mut sizes = BTreeMap::new();
    for p in 0..PARTITIONS as i32 {
        let offsets = BTreeMap::from([(p, 0)]);
        let resp = kafka.fetch(&offsets, 64 << 20, 64 << 20).await;
        let data = resp.responses[0].partitions[0].records.clone().unwrap();
        let spans = batches(&data);
        assert_eq!(spans.len() as u64, BATCHES, "one batch per HTTP request");
        sizes.insert(p, spans.iter().map(|s| s.bytes).collect());
    }
    sizes
}

/// Reads the whole topic with Fetches of these limits, checking every answer against
/// KIP-74's rule, and answers how many answers it took.
async fn read_all_within(
    kafka_addr: &str,
    max_bytes: i32,
    partition_max_bytes: i32,
    sizes: &BTreeMap<i32, Vec<usize>>,
) -> usize {
    let mut kafka = Kafka::connect(kafka_addr).await;
    let mut offsets: BTreeMap<i32, i64> = (0..PARTITIONS as i32).map(|p| (p, 0)).collect();
    let end = (BATCHES as usize * RECORDS_PER_BATCH) as i64;
    let mut answers = 0;
    while offsets.values().any(|o| *o < end) {
        answers += 1;
        assert!(answers < 1000, "no progress at {offsets:?}");
        let resp = kafka.fetch(&offsets, max_bytes, partition_max_bytes).await;
        assert_eq!(resp.error_code, 0);
        let mut total = 0usize;
        let mut first_with_data = None;
        for part in &resp.responses[0].partitions {
            assert_eq!(part.error_code, 0, "partition {}", part.partition_index);
            let data = part.records.clone().unwrap_or_default();
            let spans = batches(&data);
            if spans.is_empty() {
                continue;
            }
            let p = part.partition_index;
            let bytes: usize = spans.iter().map(|s| s.bytes).sum();
            let at = offsets[&p];
            assert_eq!(spans[0].base_offset, at, "partition {p} starts where asked");
            // The batches are the ones stored, in order.
            let first_index = (at as usize) / RECORDS_PER_BATCH;
            for (k, s) in spans.iter().enumerate() {
                assert_eq!(s.bytes, sizes[&p][first_index + k]);
            }
            let first = *first_with_data.get_or_insert(p) == p;
            let over_alone = spans.len() == 1
                && (bytes > partition_max_bytes as usize || bytes > max_bytes as usize);
            if first && over_alone {
                // The one exception: a first batch larger than the limits comes alone.
                assert_eq!(total, 0);
            } else {
                assert!(
                    bytes <= partition_max_bytes as usize,
                    "partition {p} gave {bytes} bytes for a partition limit of {partition_max_bytes}"
                );
                assert!(
                    total + bytes <= max_bytes as usize,
                    "{} bytes for a limit of {max_bytes} ({first_with_data:?} first)",
                    total + bytes
                );
            }
            // As much as the limits allow: the next batch would not have fitted.
            let next = first_index + spans.len();
            if let Some(more) = sizes[&p].get(next) {
                let left = (max_bytes as usize).saturating_sub(total);
                let room = left.min(partition_max_bytes as usize);
                assert!(
                    bytes + more > room,
                    "partition {p} stopped at {bytes} bytes with {room} allowed and a next batch of {more}"
                );
            }
            total += bytes;
            offsets.insert(p, spans.last().unwrap().last_offset + 1);
        }
        assert!(total > 0, "an answer with nothing at {offsets:?}");
    }
    answers
}

#[tokio::test]
async fn fetch_answers_stay_within_max_bytes_and_partition_max_bytes_except_a_lone_first_batch() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    create_topic(&s.url, json!({"name": TOPIC, "partitions": PARTITIONS})).await;
    let sizes = fill(&s.url, &s.kafka).await;
    let smallest = *sizes.values().flatten().min().unwrap() as i32;
    let largest = *sizes.values().flatten().max().unwrap() as i32;
    // Partition 0's batches are the smallest, partition 2's the largest.
    assert!(sizes[&0][0] < sizes[&1][0] && sizes[&1][0] < sizes[&2][0]);

    // Everything in one answer when the limits are large.
    assert_eq!(
        read_all_within(&s.kafka, 64 << 20, 64 << 20, &sizes).await,
        1
    );
    // The request's limit binds across partitions (the reported bug: later partitions
    // each added a whole batch past it).
    read_all_within(&s.kafka, 3 * largest + 10, 64 << 20, &sizes).await;
    read_all_within(&s.kafka, 5 * smallest, 2 * largest, &sizes).await;
    // The partition limit binds.
    read_all_within(&s.kafka, 64 << 20, 2 * smallest + 1, &sizes).await;
    read_all_within(&s.kafka, 2 * largest, largest + 1, &sizes).await;
    // Limits between the batch sizes: some partitions' batches fit, others' do not.
    read_all_within(&s.kafka, 64 << 20, sizes[&1][0] as i32, &sizes).await;
    // Limits smaller than any batch: each answer is one whole batch of the first
    // partition that has data, and nothing else.
    let answers = read_all_within(&s.kafka, 100, 100, &sizes).await;
    assert_eq!(answers as u64, BATCHES * u64::from(PARTITIONS));
    let answers = read_all_within(&s.kafka, smallest - 1, 64 << 20, &sizes).await;
    assert_eq!(answers as u64, BATCHES * u64::from(PARTITIONS));
    let answers = read_all_within(&s.kafka, 64 << 20, smallest - 1, &sizes).await;
    assert_eq!(answers as u64, BATCHES * u64::from(PARTITIONS));
}
