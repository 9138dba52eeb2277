//! A hostile Kafka client against the real binary, while ordinary clients keep working.
//!
//! For every API and version Ferry advertises in ApiVersions, seeded generators build
//! requests that are valid in shape (encoded by `kafka-protocol`) but carry hostile values:
//! negative and huge counts, offsets, timeouts, partition indexes, generations and
//! producer ids, empty, odd and very long names, nulls where nullable, duplicates. Beside
//! them: connections beyond `--kafka-max-connections` held open, slow connections that
//! stop mid-frame, and frames above `--kafka-max-request-bytes`. Meanwhile an ordinary
//! Kafka producer (plain frames, acks=-1) and an HTTP producer and reader keep going.
//!
//! At the end: the process is alive, its RSS stayed under the bound computed in
//! `rss_bound_mib`, every hostile request got a well-formed answer or a closed connection
//! within `ANSWER_DEADLINE`, the ordinary clients were served within `ORDINARY_DEADLINE`
//! each time, and every record they had acknowledged reads back.
//!
//! Short by default (`FERRY_HOSTILE_SECONDS`, 10 s); `FERRY_HOSTILE_SEED` replays a run
//! (the seed is printed at the start). See docs/kafka.md, "Hostile clients".

mod common;
use common::*;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::alter_user_scram_credentials_request::{
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest Kafka request frame of the server under test.
const MAX_REQUEST_BYTES: usize = 1024 * 1024;
/// Kafka connections the server serves at once.
const MAX_CONNECTIONS: usize = 64;
/// Partitions of all topics together: hostile CreateTopics and CreatePartitions are
/// refused beyond it.
const MAX_PARTITIONS: u32 = 2000;
/// Hostile request loops running at once, each on its own connection.
const HOSTILE_WORKERS: usize = 6;
/// A hostile request is answered (or its connection closed) within this: a Fetch may wait
/// up to 30 s (FETCH_WAIT_MS_MAX), a produce for its fsync; the rest at once.
const ANSWER_DEADLINE: Duration = Duration::from_secs(35);
/// Each ordinary produce or read is served within this, hostile load or not.
const ORDINARY_DEADLINE: Duration = Duration::from_secs(10);
const STEADY: &str = "steady";
const STEADY_PARTITIONS: i32 = 3;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

// ---------------------------------------------------------------------------------------
// Frames

fn encode_request(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    client_id: Option<StrBytes>,
    body: &RequestKind,
) -> anyhow::Result<Bytes> {
    let mut out = BytesMut::new();
    out.put_i32(0);
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(client_id)
        .encode(&mut out, key.request_header_version(version))?;
    body.encode(&mut out, version)?;
    let len = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    Ok(out.freeze())
}

/// One answer frame, or `None` when the server closed the connection.
async fn read_answer(s: &mut TcpStream) -> std::io::Result<Option<Bytes>> {
    let len = match s.read_i32().await {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(None),
        Err(e) => return Err(e),
    };
    assert!(len >= 4, "answer frame of {len} bytes");
    let mut buf = vec![0; len as usize];
    s.read_exact(&mut buf).await?;
    Ok(Some(Bytes::from(buf)))
}

/// Decodes an answer completely: header with the expected correlation id, body of the
/// request's API and version, and nothing left over.
fn decode_answer(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    mut frame: Bytes,
) -> Result<ResponseKind, String> {
    let header_version = if key == ApiKey::ApiVersions {
        0
    } else {
        key.response_header_version(version)
    };
    let header =
        ResponseHeader::decode(&mut frame, header_version).map_err(|e| format!("header: {e}"))?;
    if header.correlation_id != correlation_id {
        return Err(format!(
            "correlation id {} for {correlation_id}",
            header.correlation_id
        ));
    }
    let body = ResponseKind::decode(key, &mut frame, version).map_err(|e| format!("body: {e}"))?;
    if frame.has_remaining() {
        return Err(format!("{} bytes after the body", frame.remaining()));
    }
    Ok(body)
}

struct Conn {
    s: TcpStream,
    next: i32,
}

impl Conn {
    async fn open(addr: &str) -> Conn {
        let s = TcpStream::connect(addr)
            .await
            .expect("connect to the Kafka listener");
        s.set_nodelay(true).unwrap();
        Conn { s, next: 1 }
    }

    /// Sends a request that gets no answer (a Produce with acks=0), then an
    /// ApiVersions whose answer shows the connection is still served: `Ok(None)` when
    /// the server closed it instead.
    async fn call_unanswered(
        &mut self,
        key: ApiKey,
        version: i16,
        body: &RequestKind,
        client_id: Option<StrBytes>,
    ) -> Result<Option<ResponseKind>, String> {
        let id = self.next;
        self.next = self.next.wrapping_add(1);
        let frame = encode_request(key, version, id, client_id, body)
            .map_err(|e| format!("encode: {e}"))?;
        if self.s.write_all(&frame).await.is_err() {
            return Ok(None);
        }
        self.call(
            ApiKey::ApiVersions,
            0,
            &RequestKind::ApiVersions(ApiVersionsRequest::default()),
            None,
        )
        .await
    }

    /// Sends one request and reads its answer: `Ok(None)` when the server closed.
    async fn call(
        &mut self,
        key: ApiKey,
        version: i16,
        body: &RequestKind,
        client_id: Option<StrBytes>,
    ) -> Result<Option<ResponseKind>, String> {
        let id = self.next;
        self.next = self.next.wrapping_add(1);
        let frame = encode_request(key, version, id, client_id, body)
            .map_err(|e| format!("encode: {e}"))?;
        if self.s.write_all(&frame).await.is_err() {
            return Ok(None);
        }
        match read_answer(&mut self.s).await {
            Ok(Some(f)) => decode_answer(key, version, id, f).map(Some),
            Ok(None) | Err(_) => Ok(None),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Hostile values

struct Gen {
    rng: StdRng,
    topics: Vec<String>,
    /// The ids of `topics` (ids of deleted or re-created topics go stale, as a
    /// client's would).
    topic_ids: Vec<uuid::Uuid>,
    /// What the request being built may still take, in bytes, roughly: nested lists
    /// and long strings draw on it, so that a request stays near the frame limit (and
    /// the generator's own memory small).
    budget: usize,
}

/// The size a generated request aims to stay under.
const REQUEST_BUDGET: usize = MAX_REQUEST_BYTES / 2;
/// The largest request the generators may build (the budget counts an element as 64
/// bytes, so a request can outgrow it a little; never by orders of magnitude).
const GENERATED_BYTES_MAX: usize = 8 * MAX_REQUEST_BYTES;

impl Gen {
    fn chance(&mut self, p: f64) -> bool {
        self.rng.gen_bool(p)
    }

    fn i32(&mut self) -> i32 {
        match self.rng.gen_range(0..10) {
            0 => i32::MIN,
            1 => i32::MAX,
            2 => -1,
            3 => 0,
            4 => 1,
            5 => -2,
            6 => self.rng.gen_range(0..8),
            7 => self.rng.gen(),
            8 => i32::MAX - 1,
            _ => self.rng.gen_range(-1000..100_000),
        }
    }

    fn i64(&mut self) -> i64 {
        match self.rng.gen_range(0..10) {
            0 => i64::MIN,
            1 => i64::MAX,
            2 => -1,
            3 => -2,
            4 => 0,
            5 => self.rng.gen_range(0..100),
            6 => self.rng.gen(),
            7 => i64::from(i32::MAX) + 1,
            8 => i64::MAX - 1,
            _ => -3,
        }
    }

    fn i16(&mut self) -> i16 {
        match self.rng.gen_range(0..6) {
            0 => i16::MIN,
            1 => i16::MAX,
            2 => -1,
            3 => 0,
            4 => 1,
            _ => self.rng.gen(),
        }
    }

    fn i8(&mut self) -> i8 {
        match self.rng.gen_range(0..4) {
            0 => 0,
            1 => 1,
            2 => -1,
            _ => self.rng.gen(),
        }
    }

    /// A count of elements: usually small, sometimes many, within the request's budget
    /// (each element counted as 64 bytes).
    fn count(&mut self) -> usize {
        let n = match self.rng.gen_range(0..10) {
            0 => 0,
            1 => self.rng.gen_range(200..2000),
            _ => self.rng.gen_range(1..5),
        };
        let n = n.min(self.budget / 64);
        self.budget -= n * 64;
        n
    }

    /// A length for a long string or byte field, within the request's budget.
    fn long(&mut self, lo: usize, hi: usize) -> usize {
        let n = self.rng.gen_range(lo..hi).min(self.budget);
        self.budget -= n;
        n
    }

    /// A string: empty, long (up to the protocol's i16 length), odd bytes, or a real name.
    fn string(&mut self) -> String {
        match self.rng.gen_range(0..10) {
            0 => String::new(),
            1 => "x".repeat(self.long(250, 32_000)),
            2 => "\0\u{1}\u{7f}/../.\u{feff}".into(),
            3 => "é∂😀".repeat(self.long(1, 300 * 9) / 9),
            4 => ".".into(),
            5 => "..".into(),
            6 => " a b ".into(),
            7 => format!("h-{}", self.rng.gen_range(0..4)),
            _ => {
                let n = self.rng.gen_range(1..40);
                (0..n)
                    .map(|_| self.rng.gen_range(b'!'..=b'~') as char)
                    .collect()
            }
        }
    }

    /// A config name: one Ferry knows (so that changes happen), or a hostile one.
    fn config_name(&mut self) -> StrBytes {
        const NAMES: &[&str] = &[
            "retention.ms",
            "retention.bytes",
            "segment.bytes",
            "segment.ms",
            "max.message.bytes",
            "cleanup.policy",
            "ferry.durability",
            "ferry.flush.interval.ms",
            "min.insync.replicas",
            "log.retention.ms",
        ];
        if self.chance(0.6) {
            StrBytes::from_static_str(pick::<&'static str>(&mut self.rng, NAMES))
        } else {
            self.str_bytes()
        }
    }

    /// A config value: plausible, out of range, or hostile. (Never a segment size so
    /// small that every batch opens a file: that is an operator's choice, not an attack.)
    fn config_value(&mut self) -> Option<StrBytes> {
        const VALUES: &[&str] = &[
            "-1",
            "0",
            "1",
            "1024",
            "1048576",
            "9223372036854775807",
            "99999999999999999999",
            "delete",
            "compact,delete",
            "never",
        ];
        if self.chance(0.6) {
            Some(StrBytes::from_static_str(pick::<&'static str>(
                &mut self.rng,
                VALUES,
            )))
        } else {
            self.opt_str()
        }
    }

    fn str_bytes(&mut self) -> StrBytes {
        StrBytes::from_string(self.string())
    }

    fn opt_str(&mut self) -> Option<StrBytes> {
        if self.chance(0.3) {
            None
        } else {
            Some(self.str_bytes())
        }
    }

    /// A topic that exists (the ordinary clients' one included) or a hostile name.
    fn topic(&mut self) -> TopicName {
        if self.chance(0.6) {
            let i = self.rng.gen_range(0..self.topics.len());
            TopicName(StrBytes::from_string(self.topics[i].clone()))
        } else {
            TopicName(self.str_bytes())
        }
    }

    /// A topic id: one of the topics', a random one, or the zero id.
    fn topic_id(&mut self) -> uuid::Uuid {
        if self.chance(0.6) {
            let i = self.rng.gen_range(0..self.topic_ids.len());
            self.topic_ids[i]
        } else if self.chance(0.5) {
            uuid::Uuid::from_bytes(self.rng.gen())
        } else {
            uuid::Uuid::nil()
        }
    }

    /// A topic that may be created, changed or deleted: never the ordinary clients' one.
    fn own_topic(&mut self) -> TopicName {
        let t = self.topic();
        if t.0.as_str() == STEADY {
            TopicName(StrBytes::from_static_str("h-0"))
        } else {
            t
        }
    }

    fn group(&mut self) -> GroupId {
        if self.chance(0.5) {
            GroupId(StrBytes::from_string(format!(
                "g-{}",
                self.rng.gen_range(0..3)
            )))
        } else {
            GroupId(self.str_bytes())
        }
    }

    /// A group instance id (static membership): one of a few, so that static members
    /// take each other's places, none, or a hostile one. Set only half the time: older
    /// versions cannot carry it (`request_at` draws again).
    fn instance(&mut self) -> Option<StrBytes> {
        if self.chance(0.5) {
            None
        } else if self.chance(0.6) {
            Some(StrBytes::from_string(format!(
                "i-{}",
                self.rng.gen_range(0..3)
            )))
        } else {
            self.opt_str()
        }
    }

    fn member(&mut self) -> StrBytes {
        if self.chance(0.3) {
            StrBytes::from_static_str("")
        } else {
            self.str_bytes()
        }
    }

    fn partition(&mut self) -> i32 {
        if self.chance(0.4) {
            self.rng.gen_range(0..STEADY_PARTITIONS + 1)
        } else {
            self.i32()
        }
    }

    /// A SASL mechanism: one Ferry offers (so that exchanges begin) or a hostile name.
    fn mechanism(&mut self) -> StrBytes {
        if self.chance(0.7) {
            let m = *pick(&mut self.rng, &["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]);
            StrBytes::from_static_str(m)
        } else {
            self.str_bytes()
        }
    }

    /// A SASL message: a well-formed PLAIN or SCRAM first message for a user that does
    /// not exist, or hostile bytes.
    fn sasl_message(&mut self) -> Bytes {
        match self.rng.gen_range(0..4) {
            0 => Bytes::from(format!("\0{}\0{}", self.string(), self.string())),
            1 => Bytes::from(format!("n,,n={},r={}", self.string(), self.string())),
            2 => Bytes::from(self.string()),
            _ => Bytes::from(vec![0u8; self.long(0, 10_000)]),
        }
    }

    /// A Kafka ACL code (resource type, pattern type, operation, permission): a valid
    /// one mostly, else any byte.
    fn acl_code(&mut self) -> i8 {
        if self.chance(0.8) {
            self.rng.gen_range(0..15)
        } else {
            self.i8()
        }
    }

    fn principal(&mut self) -> StrBytes {
        if self.chance(0.6) {
            StrBytes::from_string(format!("User:{}", self.rng.gen_range(0..3)))
        } else {
            self.str_bytes()
        }
    }

    /// A list of `count()` items, sometimes all the same item (duplicates). Each copy
    /// of a duplicated item draws on the budget as the item did: copies of copies in
    /// nested lists would otherwise build requests of gigabytes in the test itself.
    fn list<T: Clone>(&mut self, mut item: impl FnMut(&mut Gen) -> T) -> Vec<T> {
        let n = self.count();
        if n > 1 && self.chance(0.3) {
            let before = self.budget;
            let one = item(self);
            let cost = (before - self.budget).max(1);
            let n = n.min(1 + self.budget / cost);
            self.budget -= cost * (n - 1);
            vec![one; n]
        } else {
            (0..n).map(|_| item(self)).collect()
        }
    }

    /// Record batches: a valid batch with hostile producer fields and timestamps, random
    /// bytes, empty or null. Offset deltas stay in order: out-of-order deltas are issue 19
    /// point 1 (checked by the batch validation and its own tests).
    fn records(&mut self) -> Option<Bytes> {
        match self.rng.gen_range(0..8) {
            0 => None,
            1 => Some(Bytes::new()),
            2 => {
                let n = self.rng.gen_range(1..200);
                Some(Bytes::from(
                    (0..n).map(|_| self.rng.gen::<u8>()).collect::<Vec<_>>(),
                ))
            }
            _ => {
                let n = self.rng.gen_range(1..20);
                let (pid, epoch, seq, ts) = (self.i64(), self.i16(), self.i32(), self.i64());
                let big = self.chance(0.1) && self.budget >= 40_000 * n;
                if big {
                    self.budget -= 40_000 * n;
                }
                let records: Vec<Record> = (0..n)
                    .map(|i| Record {
                        transactional: self.chance(0.1),
                        control: self.chance(0.1),
                        delete_horizon: false,
                        partition_leader_epoch: self.i32(),
                        producer_id: pid,
                        producer_epoch: epoch,
                        timestamp_type: TimestampType::Creation,
                        offset: i as i64,
                        sequence: seq.wrapping_add(i as i32),
                        timestamp: ts.saturating_add(i as i64),
                        key: if self.chance(0.5) {
                            None
                        } else {
                            Some(Bytes::from(self.string()))
                        },
                        value: if big {
                            Some(Bytes::from(vec![b'v'; 40_000]))
                        } else {
                            Some(Bytes::from(self.string()))
                        },
                        headers: Default::default(),
                    })
                    .collect();
                let mut buf = BytesMut::new();
                RecordBatchEncoder::encode(
                    &mut buf,
                    &records,
                    &RecordEncodeOptions {
                        version: 2,
                        compression: Compression::None,
                    },
                )
                .ok()?;
                Some(buf.freeze())
            }
        }
    }

    fn request(&mut self, key: ApiKey) -> RequestKind {
        match key {
            ApiKey::Produce => {
                let topics = self.list(|g| {
                    let parts = g.list(|g| {
                        PartitionProduceData::default()
                            .with_index(g.partition())
                            .with_records(g.records())
                    });
                    TopicProduceData::default()
                        .with_name(g.topic())
                        .with_topic_id(g.topic_id())
                        .with_partition_data(parts)
                });
                let acks = *[-1i16, 0, 1, 2, -2, i16::MIN, i16::MAX][self.rng.gen_range(0..7)..]
                    [..1]
                    .first()
                    .unwrap_or(&-1);
                RequestKind::Produce(
                    ProduceRequest::default()
                        .with_acks(acks)
                        .with_timeout_ms(self.i32())
                        .with_topic_data(topics),
                )
            }
            ApiKey::Fetch => {
                let topics = self.list(|g| {
                    let parts = g.list(|g| {
                        FetchPartition::default()
                            .with_partition(g.partition())
                            .with_fetch_offset(g.i64())
                            .with_log_start_offset(g.i64())
                            .with_partition_max_bytes(g.i32())
                            .with_current_leader_epoch(g.i32())
                    });
                    FetchTopic::default()
                        .with_topic(g.topic())
                        .with_topic_id(g.topic_id())
                        .with_partitions(parts)
                });
                // A long wait blocks only this connection; it is bounded by FETCH_WAIT_MS_MAX.
                RequestKind::Fetch(
                    FetchRequest::default()
                        .with_replica_id(BrokerId(if self.chance(0.8) { -1 } else { self.i32() }))
                        .with_max_wait_ms(self.i32())
                        .with_min_bytes(self.i32())
                        .with_max_bytes(self.i32())
                        .with_isolation_level(self.i8())
                        .with_session_id(if self.chance(0.7) { 0 } else { self.i32() })
                        .with_session_epoch(if self.chance(0.7) { -1 } else { self.i32() })
                        .with_topics(topics),
                )
            }
            ApiKey::ListOffsets => {
                let topics = self.list(|g| {
                    let parts = g.list(|g| {
                        ListOffsetsPartition::default()
                            .with_partition_index(g.partition())
                            .with_timestamp(g.i64())
                            .with_current_leader_epoch(g.i32())
                    });
                    ListOffsetsTopic::default()
                        .with_name(g.topic())
                        .with_partitions(parts)
                });
                RequestKind::ListOffsets(
                    ListOffsetsRequest::default()
                        .with_replica_id(BrokerId(self.i32()))
                        .with_isolation_level(self.i8())
                        .with_topics(topics),
                )
            }
            ApiKey::Metadata => {
                let topics = if self.chance(0.2) {
                    None
                } else {
                    Some(self.list(|g| {
                        // By name, by id (v12+; before, a null name does not encode and
                        // the request is built again), or both.
                        let name = if g.chance(0.8) { Some(g.topic()) } else { None };
                        MetadataRequestTopic::default()
                            .with_name(name)
                            .with_topic_id(g.topic_id())
                    }))
                };
                RequestKind::Metadata(
                    MetadataRequest::default()
                        .with_topics(topics)
                        // Off: auto-creation is off on this server anyway.
                        .with_allow_auto_topic_creation(self.chance(0.5)),
                )
            }
            ApiKey::ApiVersions => RequestKind::ApiVersions(
                ApiVersionsRequest::default()
                    .with_client_software_name(self.str_bytes())
                    .with_client_software_version(self.str_bytes()),
            ),
            ApiKey::CreateTopics => {
                let topics = self.list(|g| {
                    let configs = g.list(|g| {
                        CreatableTopicConfig::default()
                            .with_name(g.str_bytes())
                            .with_value(g.opt_str())
                    });
                    let partitions = match g.rng.gen_range(0..4) {
                        0 => g.i32(),
                        _ => g.rng.gen_range(-1..4),
                    };
                    CreatableTopic::default()
                        .with_name(g.own_topic())
                        .with_num_partitions(partitions)
                        .with_replication_factor(g.i16())
                        .with_configs(configs)
                });
                RequestKind::CreateTopics(
                    CreateTopicsRequest::default()
                        .with_topics(topics)
                        .with_timeout_ms(self.i32())
                        .with_validate_only(self.chance(0.3)),
                )
            }
            ApiKey::DeleteTopics => {
                // Names (v1-5; a non-empty v6 list does not encode there) or, for v6,
                // names, ids (never the ordinary clients' topic's), both or neither.
                let req = if self.chance(0.5) {
                    DeleteTopicsRequest::default().with_topic_names(self.list(|g| g.own_topic()))
                } else {
                    let steady = self.topic_ids.first().copied();
                    DeleteTopicsRequest::default().with_topics(self.list(|g| {
                        let name = if g.chance(0.6) {
                            Some(g.own_topic())
                        } else {
                            None
                        };
                        let id = Some(g.topic_id())
                            .filter(|id| Some(*id) != steady)
                            .unwrap_or_default();
                        DeleteTopicState::default()
                            .with_name(name)
                            .with_topic_id(id)
                    }))
                };
                RequestKind::DeleteTopics(req.with_timeout_ms(self.i32()))
            }
            ApiKey::CreatePartitions => {
                let topics = self.list(|g| {
                    let count = if g.chance(0.5) {
                        g.rng.gen_range(-1..6)
                    } else {
                        g.i32()
                    };
                    CreatePartitionsTopic::default()
                        .with_name(g.own_topic())
                        .with_count(count)
                });
                RequestKind::CreatePartitions(
                    CreatePartitionsRequest::default()
                        .with_topics(topics)
                        .with_timeout_ms(self.i32())
                        .with_validate_only(self.chance(0.3)),
                )
            }
            ApiKey::InitProducerId => RequestKind::InitProducerId(
                InitProducerIdRequest::default()
                    .with_transactional_id(self.opt_str().map(TransactionalId))
                    .with_transaction_timeout_ms(self.i32())
                    .with_producer_id(ProducerId(self.i64()))
                    .with_producer_epoch(self.i16()),
            ),
            ApiKey::DescribeConfigs => {
                let resources = self.list(|g| {
                    let keys = if g.chance(0.3) {
                        None
                    } else {
                        Some(g.list(|g| g.str_bytes()))
                    };
                    DescribeConfigsResource::default()
                        .with_resource_type(if g.chance(0.5) { 2 } else { g.i8() })
                        .with_resource_name(g.topic().0)
                        .with_configuration_keys(keys)
                });
                RequestKind::DescribeConfigs(
                    DescribeConfigsRequest::default()
                        .with_resources(resources)
                        .with_include_synonyms(self.chance(0.5)),
                )
            }
            ApiKey::AlterConfigs => {
                let resources = self.list(|g| {
                    let configs = g.list(|g| {
                        alter_configs_request::AlterableConfig::default()
                            .with_name(g.config_name())
                            .with_value(g.config_value())
                    });
                    alter_configs_request::AlterConfigsResource::default()
                        .with_resource_type(*pick(&mut g.rng, &[2i8, 2, 4, 8, -1, 99]))
                        .with_resource_name(g.own_topic().0)
                        .with_configs(configs)
                });
                RequestKind::AlterConfigs(
                    AlterConfigsRequest::default()
                        .with_resources(resources)
                        .with_validate_only(self.chance(0.3)),
                )
            }
            ApiKey::IncrementalAlterConfigs => {
                let resources = self.list(|g| {
                    let configs = g.list(|g| {
                        incremental_alter_configs_request::AlterableConfig::default()
                            .with_name(g.config_name())
                            .with_config_operation(if g.chance(0.8) {
                                g.rng.gen_range(0..4)
                            } else {
                                g.i8()
                            })
                            .with_value(g.config_value())
                    });
                    incremental_alter_configs_request::AlterConfigsResource::default()
                        .with_resource_type(*pick(&mut g.rng, &[2i8, 2, 4, 8, -1, 99]))
                        .with_resource_name(g.own_topic().0)
                        .with_configs(configs)
                });
                RequestKind::IncrementalAlterConfigs(
                    IncrementalAlterConfigsRequest::default()
                        .with_resources(resources)
                        .with_validate_only(self.chance(0.3)),
                )
            }
            ApiKey::OffsetDelete => {
                let topics = self.list(|g| {
                    OffsetDeleteRequestTopic::default()
                        .with_name(g.topic())
                        .with_partitions(g.list(|g| {
                            OffsetDeleteRequestPartition::default()
                                .with_partition_index(g.partition())
                        }))
                });
                RequestKind::OffsetDelete(
                    OffsetDeleteRequest::default()
                        .with_group_id(self.group())
                        .with_topics(topics),
                )
            }
            ApiKey::FindCoordinator => {
                let key = self.group().0;
                let keys = self.list(|g| g.group().0);
                RequestKind::FindCoordinator(
                    FindCoordinatorRequest::default()
                        .with_key(key)
                        .with_key_type(if self.chance(0.5) { 0 } else { self.i8() })
                        .with_coordinator_keys(keys),
                )
            }
            ApiKey::JoinGroup => {
                let protocols = self.list(|g| {
                    let meta = if g.chance(0.5) {
                        Bytes::new()
                    } else {
                        Bytes::from(g.string())
                    };
                    JoinGroupRequestProtocol::default()
                        .with_name(g.str_bytes())
                        .with_metadata(meta)
                });
                // A join legitimately waits up to the largest rebalance timeout among the
                // group's members (Kafka's rule): timeouts past ANSWER_DEADLINE would be
                // waits, not hangs, so valid ones stay below it; invalid ones are kept.
                let session = *pick(
                    &mut self.rng,
                    &[i32::MIN, -1, 0, 999, 1000, 6000, 20_000, 300_001, i32::MAX],
                );
                let rebalance = *pick(&mut self.rng, &[i32::MIN, -1, 0, 1, 1000, 20_000]);
                RequestKind::JoinGroup(
                    JoinGroupRequest::default()
                        .with_group_id(self.group())
                        .with_session_timeout_ms(session)
                        .with_rebalance_timeout_ms(rebalance)
                        .with_member_id(self.member())
                        .with_group_instance_id(self.instance())
                        .with_reason(if self.chance(0.2) {
                            self.opt_str()
                        } else {
                            None
                        })
                        .with_protocol_type(if self.chance(0.5) {
                            StrBytes::from_static_str("consumer")
                        } else {
                            self.str_bytes()
                        })
                        .with_protocols(protocols),
                )
            }
            ApiKey::SyncGroup => {
                let assignments = self.list(|g| {
                    SyncGroupRequestAssignment::default()
                        .with_member_id(g.member())
                        .with_assignment(Bytes::from(g.string()))
                });
                RequestKind::SyncGroup(
                    SyncGroupRequest::default()
                        .with_group_id(self.group())
                        .with_generation_id(self.i32())
                        .with_member_id(self.member())
                        .with_group_instance_id(self.instance())
                        .with_assignments(assignments),
                )
            }
            ApiKey::Heartbeat => RequestKind::Heartbeat(
                HeartbeatRequest::default()
                    .with_group_id(self.group())
                    .with_generation_id(self.i32())
                    .with_member_id(self.member())
                    .with_group_instance_id(self.instance()),
            ),
            ApiKey::LeaveGroup => {
                // v0-2 name one member; v3+ a batch, by member id, instance id or both.
                let members = if self.chance(0.5) {
                    self.list(|g| {
                        MemberIdentity::default()
                            .with_member_id(g.member())
                            .with_group_instance_id(g.instance())
                            .with_reason(if g.chance(0.2) { g.opt_str() } else { None })
                    })
                } else {
                    Vec::new()
                };
                RequestKind::LeaveGroup(
                    LeaveGroupRequest::default()
                        .with_group_id(self.group())
                        .with_member_id(self.member())
                        .with_members(members),
                )
            }
            ApiKey::OffsetCommit => {
                let topics = self.list(|g| {
                    let parts = g.list(|g| {
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(g.partition())
                            .with_committed_offset(g.i64())
                            .with_committed_leader_epoch(g.i32())
                            .with_committed_metadata(g.opt_str())
                    });
                    OffsetCommitRequestTopic::default()
                        .with_name(g.topic())
                        .with_partitions(parts)
                });
                RequestKind::OffsetCommit(
                    OffsetCommitRequest::default()
                        .with_group_id(self.group())
                        .with_generation_id_or_member_epoch(self.i32())
                        .with_member_id(self.member())
                        .with_group_instance_id(self.instance())
                        .with_retention_time_ms(self.i64())
                        .with_topics(topics),
                )
            }
            ApiKey::OffsetFetch => {
                let topics = if self.chance(0.3) {
                    None
                } else {
                    Some(self.list(|g| {
                        OffsetFetchRequestTopic::default()
                            .with_name(g.topic())
                            .with_partition_indexes(g.list(|g| g.partition()))
                    }))
                };
                RequestKind::OffsetFetch(
                    OffsetFetchRequest::default()
                        .with_group_id(self.group())
                        .with_topics(topics)
                        .with_require_stable(self.chance(0.5)),
                )
            }
            ApiKey::ListGroups => RequestKind::ListGroups(
                ListGroupsRequest::default().with_states_filter(self.list(|g| g.str_bytes())),
            ),
            ApiKey::DescribeGroups => RequestKind::DescribeGroups(
                DescribeGroupsRequest::default().with_groups(self.list(|g| g.group())),
            ),
            ApiKey::DeleteGroups => RequestKind::DeleteGroups(
                DeleteGroupsRequest::default().with_groups_names(self.list(|g| g.group())),
            ),
            ApiKey::SaslHandshake => RequestKind::SaslHandshake(
                SaslHandshakeRequest::default().with_mechanism(self.mechanism()),
            ),
            ApiKey::SaslAuthenticate => RequestKind::SaslAuthenticate(
                SaslAuthenticateRequest::default().with_auth_bytes(self.sasl_message()),
            ),
            ApiKey::CreateAcls => {
                let creations = self.list(|g| {
                    AclCreation::default()
                        .with_resource_type(g.acl_code())
                        .with_resource_name(g.str_bytes())
                        .with_resource_pattern_type(g.acl_code())
                        .with_principal(g.principal())
                        .with_host(g.str_bytes())
                        .with_operation(g.acl_code())
                        .with_permission_type(g.acl_code())
                });
                RequestKind::CreateAcls(CreateAclsRequest::default().with_creations(creations))
            }
            ApiKey::DescribeAcls => RequestKind::DescribeAcls(
                DescribeAclsRequest::default()
                    .with_resource_type_filter(self.acl_code())
                    .with_resource_name_filter(self.opt_str())
                    .with_pattern_type_filter(self.acl_code())
                    .with_principal_filter(self.opt_str())
                    .with_host_filter(self.opt_str())
                    .with_operation(self.acl_code())
                    .with_permission_type(self.acl_code()),
            ),
            ApiKey::DeleteAcls => {
                let filters = self.list(|g| {
                    DeleteAclsFilter::default()
                        .with_resource_type_filter(g.acl_code())
                        .with_resource_name_filter(g.opt_str())
                        .with_pattern_type_filter(g.acl_code())
                        .with_principal_filter(g.opt_str())
                        .with_host_filter(g.opt_str())
                        .with_operation(g.acl_code())
                        .with_permission_type(g.acl_code())
                });
                RequestKind::DeleteAcls(DeleteAclsRequest::default().with_filters(filters))
            }
            ApiKey::DescribeUserScramCredentials => {
                let users = if self.chance(0.3) {
                    None
                } else {
                    Some(self.list(|g| {
                        describe_user_scram_credentials_request::UserName::default()
                            .with_name(g.str_bytes())
                    }))
                };
                RequestKind::DescribeUserScramCredentials(
                    DescribeUserScramCredentialsRequest::default().with_users(users),
                )
            }
            ApiKey::AlterUserScramCredentials => {
                let deletions = self.list(|g| {
                    ScramCredentialDeletion::default()
                        .with_name(g.str_bytes())
                        .with_mechanism(g.i8())
                });
                let upsertions = self.list(|g| {
                    let len = *pick(&mut g.rng, &[0usize, 32, 64, 65, 1025]);
                    ScramCredentialUpsertion::default()
                        .with_name(g.str_bytes())
                        .with_mechanism(g.rng.gen_range(-1..4))
                        .with_iterations(if g.chance(0.5) { 4096 } else { g.i32() })
                        .with_salt(Bytes::from(vec![7u8; len.min(64)]))
                        .with_salted_password(Bytes::from(vec![1u8; len]))
                });
                RequestKind::AlterUserScramCredentials(
                    AlterUserScramCredentialsRequest::default()
                        .with_deletions(deletions)
                        .with_upsertions(upsertions),
                )
            }
            // Never the steady topic: its acknowledged records must all read back.
            ApiKey::DeleteRecords => {
                let topics = self.list(|g| {
                    let parts = g.list(|g| {
                        DeleteRecordsPartition::default()
                            .with_partition_index(g.partition())
                            .with_offset(g.i64())
                    });
                    DeleteRecordsTopic::default()
                        .with_name(g.own_topic())
                        .with_partitions(parts)
                });
                RequestKind::DeleteRecords(
                    DeleteRecordsRequest::default()
                        .with_topics(topics)
                        .with_timeout_ms(self.i32()),
                )
            }
            ApiKey::DescribeLogDirs => {
                let topics = if self.chance(0.3) {
                    None
                } else {
                    Some(self.list(|g| {
                        let parts = g.list(|g| g.partition());
                        DescribableLogDirTopic::default()
                            .with_topic(g.topic())
                            .with_partitions(parts)
                    }))
                };
                RequestKind::DescribeLogDirs(DescribeLogDirsRequest::default().with_topics(topics))
            }
            ApiKey::DescribeProducers => {
                let topics = self.list(|g| {
                    let parts = g.list(|g| g.partition());
                    describe_producers_request::TopicRequest::default()
                        .with_name(g.topic())
                        .with_partition_indexes(parts)
                });
                RequestKind::DescribeProducers(
                    DescribeProducersRequest::default().with_topics(topics),
                )
            }
            ApiKey::OffsetForLeaderEpoch => {
                let topics = self.list(|g| {
                    let parts = g.list(|g| {
                        OffsetForLeaderPartition::default()
                            .with_partition(g.partition())
                            .with_current_leader_epoch(g.i32())
                            .with_leader_epoch(g.i32())
                    });
                    OffsetForLeaderTopic::default()
                        .with_topic(g.topic())
                        .with_partitions(parts)
                });
                RequestKind::OffsetForLeaderEpoch(
                    OffsetForLeaderEpochRequest::default()
                        .with_replica_id(BrokerId(self.i32()))
                        .with_topics(topics),
                )
            }
            ApiKey::ElectLeaders => {
                let topics = if self.chance(0.3) {
                    None
                } else {
                    Some(self.list(|g| {
                        let parts = g.list(|g| g.partition());
                        elect_leaders_request::TopicPartitions::default()
                            .with_topic(g.topic())
                            .with_partitions(parts)
                    }))
                };
                RequestKind::ElectLeaders(
                    ElectLeadersRequest::default()
                        .with_election_type(self.i8())
                        .with_topic_partitions(topics)
                        .with_timeout_ms(self.i32()),
                )
            }
            ApiKey::DescribeCluster => RequestKind::DescribeCluster(
                DescribeClusterRequest::default()
                    .with_include_cluster_authorized_operations(self.chance(0.5))
                    .with_endpoint_type(self.i8())
                    .with_include_fenced_brokers(self.chance(0.5)),
            ),
            ApiKey::ConsumerGroupHeartbeat => {
                let owned = if self.chance(0.5) {
                    None
                } else {
                    Some(self.list(|g| {
                        let parts = g.list(|g| g.partition());
                        consumer_group_heartbeat_request::TopicPartitions::default()
                            .with_topic_id(g.topic_id())
                            .with_partitions(parts)
                    }))
                };
                let subscribed = if self.chance(0.3) {
                    None
                } else {
                    Some(self.list(|g| g.topic()))
                };
                let epoch = *pick(&mut self.rng, &[0, -1, -2, 1, 2, i32::MAX, i32::MIN]);
                RequestKind::ConsumerGroupHeartbeat(
                    ConsumerGroupHeartbeatRequest::default()
                        .with_group_id(self.group())
                        .with_member_id(self.str_bytes())
                        .with_member_epoch(if self.chance(0.8) { epoch } else { self.i32() })
                        .with_instance_id(self.opt_str())
                        .with_rack_id(self.opt_str())
                        .with_rebalance_timeout_ms(self.i32())
                        .with_subscribed_topic_names(subscribed)
                        .with_subscribed_topic_regex(if self.chance(0.9) {
                            None
                        } else {
                            self.opt_str()
                        })
                        .with_server_assignor(self.opt_str())
                        .with_topic_partitions(owned),
                )
            }
            ApiKey::ConsumerGroupDescribe => RequestKind::ConsumerGroupDescribe(
                ConsumerGroupDescribeRequest::default()
                    .with_group_ids(self.list(|g| g.group()))
                    .with_include_authorized_operations(self.chance(0.5)),
            ),
            ApiKey::DescribeTopicPartitions => {
                let topics = self.list(|g| {
                    describe_topic_partitions_request::TopicRequest::default().with_name(g.topic())
                });
                let cursor = if self.chance(0.5) {
                    None
                } else {
                    Some(
                        describe_topic_partitions_request::Cursor::default()
                            .with_topic_name(self.topic())
                            .with_partition_index(self.partition()),
                    )
                };
                RequestKind::DescribeTopicPartitions(
                    DescribeTopicPartitionsRequest::default()
                        .with_topics(topics)
                        .with_response_partition_limit(self.i32())
                        .with_cursor(cursor),
                )
            }
            ApiKey::AddPartitionsToTxn => {
                let topics = self.list(|g| {
                    let parts = g.list(|g| g.partition());
                    kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                        .with_name(g.topic())
                        .with_partitions(parts)
                });
                RequestKind::AddPartitionsToTxn(
                    kafka_protocol::messages::AddPartitionsToTxnRequest::default()
                        .with_v3_and_below_transactional_id(TransactionalId(self.str_bytes()))
                        .with_v3_and_below_producer_id(ProducerId(self.i64()))
                        .with_v3_and_below_producer_epoch(self.i16())
                        .with_v3_and_below_topics(topics),
                )
            }
            ApiKey::AddOffsetsToTxn => RequestKind::AddOffsetsToTxn(
                kafka_protocol::messages::AddOffsetsToTxnRequest::default()
                    .with_transactional_id(TransactionalId(self.str_bytes()))
                    .with_producer_id(ProducerId(self.i64()))
                    .with_producer_epoch(self.i16())
                    .with_group_id(self.group()),
            ),
            ApiKey::EndTxn => RequestKind::EndTxn(
                kafka_protocol::messages::EndTxnRequest::default()
                    .with_transactional_id(TransactionalId(self.str_bytes()))
                    .with_producer_id(ProducerId(self.i64()))
                    .with_producer_epoch(self.i16())
                    .with_committed(self.chance(0.5)),
            ),
            ApiKey::TxnOffsetCommit => {
                use kafka_protocol::messages::txn_offset_commit_request::{
                    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
                };
                let topics = self.list(|g| {
                    let parts = g.list(|g| {
                        TxnOffsetCommitRequestPartition::default()
                            .with_partition_index(g.partition())
                            .with_committed_offset(g.i64())
                            .with_committed_leader_epoch(g.i32())
                            .with_committed_metadata(g.opt_str())
                    });
                    TxnOffsetCommitRequestTopic::default()
                        .with_name(g.topic())
                        .with_partitions(parts)
                });
                RequestKind::TxnOffsetCommit(
                    kafka_protocol::messages::TxnOffsetCommitRequest::default()
                        .with_transactional_id(TransactionalId(self.str_bytes()))
                        .with_group_id(self.group())
                        .with_producer_id(ProducerId(self.i64()))
                        .with_producer_epoch(self.i16())
                        .with_generation_id(self.i32())
                        .with_member_id(self.str_bytes())
                        .with_group_instance_id(self.opt_str())
                        .with_topics(topics),
                )
            }
            ApiKey::ListTransactions => {
                let states = self.list(|g| g.str_bytes());
                let pids = self.list(|g| ProducerId(g.i64()));
                RequestKind::ListTransactions(
                    kafka_protocol::messages::ListTransactionsRequest::default()
                        .with_state_filters(states)
                        .with_producer_id_filters(pids)
                        .with_duration_filter(self.i64()),
                )
            }
            ApiKey::DescribeTransactions => {
                let ids = self.list(|g| TransactionalId(g.str_bytes()));
                RequestKind::DescribeTransactions(
                    kafka_protocol::messages::DescribeTransactionsRequest::default()
                        .with_transactional_ids(ids),
                )
            }
            other => panic!(
                "no generator for {other:?}: Ferry advertises an API this test does not know"
            ),
        }
    }

    /// The same request with fields a version lacks set back to their defaults, so that
    /// it encodes at that version (the codec refuses non-default values it cannot carry).
    fn request_at(&mut self, key: ApiKey, version: i16) -> Option<(RequestKind, usize)> {
        for tries in 0..20 {
            self.budget = REQUEST_BUDGET;
            let body = self.request(key);
            if let Ok(frame) = encode_request(key, version, 0, None, &body) {
                assert!(
                    frame.len() <= GENERATED_BYTES_MAX,
                    "{key:?} v{version}: a generated request of {} bytes",
                    frame.len()
                );
                return Some((body, tries));
            }
        }
        None
    }
}

fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    &items[rng.gen_range(0..items.len())]
}

// ---------------------------------------------------------------------------------------
// The run

#[derive(Default)]
struct Tally {
    sent: BTreeMap<(i16, i16), u64>,
    closed: BTreeMap<(i16, i16), u64>,
    error_codes: u64,
    not_encodable: BTreeMap<(i16, i16), u64>,
    failures: Vec<String>,
}

/// Offsets the ordinary producers were acknowledged: (partition, offset) -> value.
type Acked = Arc<Mutex<Vec<(i32, i64, String)>>>;

fn advertised(versions: &ApiVersionsResponse) -> Vec<(ApiKey, i16)> {
    let mut out = Vec::new();
    for v in &versions.api_keys {
        let Ok(key) = ApiKey::try_from(v.api_key) else {
            continue;
        };
        // Produce v0-v2 are listed for old clients' feature checks and answered by closing.
        for version in v.min_version..=v.max_version {
            out.push((key, version));
        }
    }
    out
}

async fn hostile_worker(
    addr: String,
    mut g: Gen,
    apis: Arc<Vec<(ApiKey, i16)>>,
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
) {
    let mut conn = Conn::open(&addr).await;
    // Every advertised version at least once, in order, then at random.
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let (key, version) = if i < apis.len() {
            apis[i]
        } else {
            *pick(&mut g.rng, &apis)
        };
        i += 1;
        let Some((body, _)) = g.request_at(key, version) else {
            *tally
                .lock()
                .unwrap()
                .not_encodable
                .entry((key as i16, version))
                .or_default() += 1;
            continue;
        };
        if i <= apis.len() && std::env::var("FERRY_WRITE_SEEDS").is_ok() {
            write_seed(key, version, &body);
        }
        let client_id = match g.rng.gen_range(0..4) {
            0 => None,
            1 => Some(g.str_bytes()),
            _ => Some(StrBytes::from_static_str("hostile")),
        };
        *tally
            .lock()
            .unwrap()
            .sent
            .entry((key as i16, version))
            .or_default() += 1;
        let started = Instant::now();
        let unanswered = matches!(&body, RequestKind::Produce(p) if p.acks == 0);
        let result = tokio::time::timeout(ANSWER_DEADLINE, async {
            if unanswered {
                conn.call_unanswered(key, version, &body, client_id).await
            } else {
                conn.call(key, version, &body, client_id).await
            }
        })
        .await;
        let what = format!("{key:?} v{version}");
        match result {
            Err(_) => {
                let mut body = format!("{body:?}");
                body.truncate(2000);
                let failure = format!("{what}: no answer within {ANSWER_DEADLINE:?}: {body}");
                tally.lock().unwrap().failures.push(failure);
                conn = Conn::open(&addr).await;
            }
            Ok(Err(e)) => {
                let failure = format!(
                    "{what}: malformed answer ({e}) after {:?}",
                    started.elapsed()
                );
                tally.lock().unwrap().failures.push(failure);
                conn = Conn::open(&addr).await;
            }
            Ok(Ok(None)) => {
                *tally
                    .lock()
                    .unwrap()
                    .closed
                    .entry((key as i16, version))
                    .or_default() += 1;
                conn = Conn::open(&addr).await;
            }
            Ok(Ok(Some(answer))) => {
                if format!("{answer:?}").contains("error_code: ")
                    && !format!("{answer:?}").contains("error_code: 0")
                {
                    tally.lock().unwrap().error_codes += 1;
                }
            }
        }
    }
}

/// `FERRY_WRITE_SEEDS=1` adds the first hostile request of each API version to the
/// `kafka_request` fuzz corpus (the frame after its length, as the target takes it).
fn write_seed(key: ApiKey, version: i16, body: &RequestKind) {
    let Ok(frame) = encode_request(key, version, 1, None, body) else {
        return;
    };
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/kafka_request");
    let path = dir.join(format!("hostile-{}-v{version}", key as i16));
    if !path.exists() && frame.len() <= 64 * 1024 {
        let _ = std::fs::write(path, &frame[4..]);
    }
}

/// An ordinary producer: one record per request over Kafka frames, acks=-1; every
/// answer within ORDINARY_DEADLINE and without error.
async fn kafka_producer(addr: String, stop: Arc<AtomicBool>, acked: Acked, worst: Arc<AtomicU64>) {
    let mut conn = Conn::open(&addr).await;
    let mut n = 0i64;
    while !stop.load(Ordering::Relaxed) {
        let partition = (n % STEADY_PARTITIONS as i64) as i32;
        let value = format!("kafka-{n}");
        let record = Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: 0,
            sequence: -1,
            timestamp: 1_700_000_000_000 + n,
            key: None,
            value: Some(Bytes::from(value.clone())),
            headers: Default::default(),
        };
        let mut batch = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut batch,
            [&record],
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .unwrap();
        let body = RequestKind::Produce(
            ProduceRequest::default()
                .with_acks(-1)
                .with_timeout_ms(30_000)
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_static_str(STEADY)))
                    .with_partition_data(vec![PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(batch.freeze()))])]),
        );
        let started = Instant::now();
        let answer = tokio::time::timeout(
            ORDINARY_DEADLINE,
            conn.call(
                ApiKey::Produce,
                8,
                &body,
                Some(StrBytes::from_static_str("ordinary")),
            ),
        )
        .await
        .unwrap_or_else(|_| {
            panic!("the ordinary Kafka produce {n} was not answered within {ORDINARY_DEADLINE:?}")
        });
        worst.fetch_max(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        let Ok(Some(ResponseKind::Produce(r))) = answer else {
            panic!("the ordinary Kafka produce {n} failed: {answer:?}");
        };
        let p = &r.responses[0].partition_responses[0];
        assert_eq!(p.error_code, 0, "ordinary Kafka produce {n}: {p:?}");
        acked
            .lock()
            .unwrap()
            .push((partition, p.base_offset, value));
        n += 1;
    }
}

/// An ordinary Kafka reader: fetches each partition of the steady topic from its start.
async fn kafka_reader(addr: String, stop: Arc<AtomicBool>, worst: Arc<AtomicU64>) -> u64 {
    let mut conn = Conn::open(&addr).await;
    let mut next = [0i64; STEADY_PARTITIONS as usize];
    let mut read = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for p in 0..STEADY_PARTITIONS {
            let body = RequestKind::Fetch(
                FetchRequest::default()
                    .with_replica_id(BrokerId(-1))
                    .with_max_wait_ms(100)
                    .with_min_bytes(1)
                    .with_max_bytes(1 << 20)
                    .with_topics(vec![FetchTopic::default()
                        .with_topic(TopicName(StrBytes::from_static_str(STEADY)))
                        .with_partitions(vec![FetchPartition::default()
                            .with_partition(p)
                            .with_fetch_offset(next[p as usize])
                            .with_partition_max_bytes(1 << 20)])]),
            );
            let started = Instant::now();
            let answer = tokio::time::timeout(
                ORDINARY_DEADLINE,
                conn.call(ApiKey::Fetch, 11, &body, None),
            )
            .await
            .unwrap_or_else(|_| {
                panic!("the ordinary Kafka fetch was not answered within {ORDINARY_DEADLINE:?}")
            });
            worst.fetch_max(started.elapsed().as_millis() as u64, Ordering::Relaxed);
            let Ok(Some(ResponseKind::Fetch(r))) = answer else {
                panic!("the ordinary Kafka fetch failed: {answer:?}");
            };
            let part = &r.responses[0].partitions[0];
            assert_eq!(part.error_code, 0, "ordinary fetch: {part:?}");
            if let Some(mut records) = part.records.clone() {
                while records.has_remaining() {
                    let Ok(set) = RecordBatchDecoder::decode(&mut records) else {
                        break;
                    };
                    for r in set.records {
                        next[p as usize] = next[p as usize].max(r.offset + 1);
                        read += 1;
                    }
                }
            }
        }
    }
    read
}

/// An ordinary HTTP client: produces one record and reads it back each round.
async fn http_client(url: String, stop: Arc<AtomicBool>, acked: Acked, worst: Arc<AtomicU64>) {
    let client = http();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let value = format!("http-{n}");
        let partition = (n % STEADY_PARTITIONS as u64) as i32;
        let started = Instant::now();
        let (status, v) = tokio::time::timeout(
            ORDINARY_DEADLINE,
            call(
                client
                    .post(format!("{url}/v1/topics/{STEADY}/records"))
                    .json(&json!({"records": [{"value": value, "partition": partition}]})),
            ),
        )
        .await
        .unwrap_or_else(|_| {
            panic!("the ordinary HTTP produce {n} was not answered within {ORDINARY_DEADLINE:?}")
        });
        assert_eq!(status, 200, "ordinary HTTP produce {n}: {v}");
        let offset = v["offsets"][0]["offset"].as_i64().unwrap();
        acked
            .lock()
            .unwrap()
            .push((partition, offset, value.clone()));
        let (status, v) = tokio::time::timeout(
            ORDINARY_DEADLINE,
            call(client.get(format!("{url}/v1/topics/{STEADY}/partitions/{partition}/records?offset={offset}&max_records=1"))),
        )
        .await
        .unwrap_or_else(|_| panic!("the ordinary HTTP read {n} was not answered within {ORDINARY_DEADLINE:?}"));
        assert_eq!(status, 200, "ordinary HTTP read {n}: {v}");
        assert!(
            v["records"][0]["value"].to_string().contains(&value),
            "read back {v} for {value}"
        );
        worst.fetch_max(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        n += 1;
    }
}

/// Connections beyond the limit, connections that stop mid-frame, and frames above the
/// request limit, over and over; an oversized frame must close its connection at once.
async fn abusive_connections(
    addr: String,
    stop: Arc<AtomicBool>,
    failures: Arc<Mutex<Vec<String>>>,
) -> (u64, u64) {
    let mut oversized = 0;
    let mut held_total = 0;
    while !stop.load(Ordering::Relaxed) {
        // Many: more than the server serves at once, held idle for a while.
        let mut held = Vec::new();
        for _ in 0..(MAX_CONNECTIONS + 16) {
            if let Ok(Ok(s)) =
                tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(&addr)).await
            {
                held.push(s);
            }
        }
        // Slow: half a frame, then nothing.
        for s in held.iter_mut().take(8) {
            let _ = s.write_all(&[0, 0, 0, 64, 0, 18, 0]).await;
        }
        held_total += held.len() as u64;
        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(held);
        // Oversized: the length alone must close the connection, before the body is read.
        for len in [MAX_REQUEST_BYTES as i32 + 1, i32::MAX, -1, i32::MIN, 3] {
            let Ok(mut s) = TcpStream::connect(&addr).await else {
                continue;
            };
            let _ = s.write_all(&len.to_be_bytes()).await;
            let _ = s.write_all(&[0, 18, 0, 3, 0, 0, 0, 1]).await;
            let mut b = [0u8; 16];
            match tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await {
                Ok(Ok(0)) | Ok(Err(_)) => oversized += 1,
                Ok(Ok(n)) => failures
                    .lock()
                    .unwrap()
                    .push(format!("a frame of length {len} got {n} answer bytes")),
                Err(_) => failures.lock().unwrap().push(format!(
                    "a frame of length {len} was neither refused nor answered within 5 s"
                )),
            }
        }
    }
    (held_total, oversized)
}

/// A record's value as the HTTP API shows it: JSON, a string, or bytes in base64 (what
/// the Kafka producer's plain text becomes), as text.
fn value_text(v: &serde_json::Value) -> String {
    use base64::Engine;
    match v["base64"].as_str() {
        Some(b) => String::from_utf8_lossy(
            &base64::engine::general_purpose::STANDARD
                .decode(b)
                .unwrap_or_default(),
        )
        .into_owned(),
        None => v.to_string(),
    }
}

/// Resident memory allowed: what the idle server used, plus, for every connection it
/// serves at once, one request frame at the limit and its 64 KiB read buffer, twice over
/// (a frame and its decoded form), plus the answers the steady and hostile topics can
/// produce (Fetch answers of the little data written here), within 64 MiB, plus 8 KiB
/// for each partition hostile clients may create.
fn rss_bound_mib(idle_mib: f64) -> f64 {
    let per_connection = 2.0 * (MAX_REQUEST_BYTES as f64 + 64.0 * 1024.0) / (1024.0 * 1024.0);
    let partitions = f64::from(MAX_PARTITIONS) * 8.0 / 1024.0;
    idle_mib + MAX_CONNECTIONS as f64 * per_connection + partitions + 64.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_kafka_requests_on_every_advertised_version_leave_ordinary_clients_served() {
    let seconds = env_u64("FERRY_HOSTILE_SECONDS").unwrap_or(10);
    let seed = env_u64("FERRY_HOSTILE_SEED").unwrap_or_else(|| rand::thread_rng().gen());
    println!("hostile Kafka run: FERRY_HOSTILE_SEED={seed} FERRY_HOSTILE_SECONDS={seconds}");

    let dir = tempfile::tempdir().unwrap();
    let max_request = MAX_REQUEST_BYTES.to_string();
    let max_connections = MAX_CONNECTIONS.to_string();
    let s = Server::start(
        dir.path(),
        &[
            "--kafka-max-request-bytes",
            &max_request,
            "--kafka-max-connections",
            &max_connections,
            "--max-request-bytes",
            &max_request,
            "--max-partitions",
            &MAX_PARTITIONS.to_string(),
        ],
    );
    create_topic(
        &s.url,
        json!({"name": STEADY, "partitions": STEADY_PARTITIONS}),
    )
    .await;
    let mut topics = vec![STEADY.to_string()];
    for i in 0..4 {
        let name = format!("h-{i}");
        create_topic(&s.url, json!({"name": name, "partitions": 2})).await;
        topics.push(name);
    }
    let mut topic_ids = Vec::new();
    for name in &topics {
        let (_, t) = call(http().get(format!("{}/v1/topics/{name}", s.url))).await;
        topic_ids.push(
            t["topic_id"]
                .as_str()
                .unwrap()
                .parse::<uuid::Uuid>()
                .unwrap(),
        );
    }
    let idle_mib = s.rss_mib();

    let mut conn = Conn::open(&s.kafka).await;
    let Ok(Some(ResponseKind::ApiVersions(versions))) = conn
        .call(
            ApiKey::ApiVersions,
            3,
            &RequestKind::ApiVersions(ApiVersionsRequest::default()),
            None,
        )
        .await
    else {
        panic!("ApiVersions");
    };
    let apis = Arc::new(advertised(&versions));
    assert!(apis.len() > 100, "advertised {} API versions", apis.len());

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let acked: Acked = Arc::default();
    let (worst_kafka, worst_read, worst_http) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let conn_failures = Arc::new(Mutex::new(Vec::new()));

    let producer = tokio::spawn(kafka_producer(
        s.kafka.clone(),
        stop.clone(),
        acked.clone(),
        worst_kafka.clone(),
    ));
    let reader = tokio::spawn(kafka_reader(
        s.kafka.clone(),
        stop.clone(),
        worst_read.clone(),
    ));
    let web = tokio::spawn(http_client(
        s.url.clone(),
        stop.clone(),
        acked.clone(),
        worst_http.clone(),
    ));
    let abuse = tokio::spawn(abusive_connections(
        s.kafka.clone(),
        stop.clone(),
        conn_failures.clone(),
    ));
    let mut workers = Vec::new();
    for w in 0..HOSTILE_WORKERS {
        let g = Gen {
            budget: REQUEST_BUDGET,
            rng: StdRng::seed_from_u64(seed.wrapping_add(w as u64)),
            topics: topics.clone(),
            topic_ids: topic_ids.clone(),
        };
        workers.push(tokio::spawn(hostile_worker(
            s.kafka.clone(),
            g,
            apis.clone(),
            stop.clone(),
            tally.clone(),
        )));
    }

    let started = Instant::now();
    let mut peak_mib: f64 = idle_mib;
    while started.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        peak_mib = peak_mib.max(s.rss_mib());
        let finished = [
            producer.is_finished(),
            reader.is_finished(),
            web.is_finished(),
        ];
        if finished.iter().any(|f| *f) {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    producer.await.expect("the ordinary Kafka producer");
    let read = reader.await.expect("the ordinary Kafka reader");
    web.await.expect("the ordinary HTTP client");
    let (held, refused) = abuse.await.unwrap();
    for w in workers {
        // Each worker finishes its last request within ANSWER_DEADLINE.
        tokio::time::timeout(ANSWER_DEADLINE + Duration::from_secs(5), w)
            .await
            .expect("a hostile worker hung")
            .unwrap();
    }
    peak_mib = peak_mib.max(s.rss_mib());

    let t = std::mem::take(&mut *tally.lock().unwrap());
    let sent: u64 = t.sent.values().sum();
    let closed: u64 = t.closed.values().sum();
    let acked = acked.lock().unwrap().clone();
    println!(
        "hostile Kafka run: {sent} hostile requests over {} API versions ({closed} closed the connection, {} answers with an error code), {held} extra connections held, {refused} bad frame lengths refused; ordinary: {} acked records, {read} read over Kafka; worst latency produce {} ms, fetch {} ms, HTTP {} ms; RSS idle {idle_mib:.0} MiB, peak {peak_mib:.0} MiB",
        t.sent.len(),
        t.error_codes,
        acked.len(),
        worst_kafka.load(Ordering::Relaxed),
        worst_read.load(Ordering::Relaxed),
        worst_http.load(Ordering::Relaxed),
    );
    if !t.not_encodable.is_empty() {
        println!(
            "not encodable at their version (skipped): {:?}",
            t.not_encodable
        );
    }
    let conn_failures = conn_failures.lock().unwrap().clone();
    assert!(
        t.failures.is_empty() && conn_failures.is_empty(),
        "seed {seed}: {:#?} {conn_failures:#?}",
        t.failures
    );
    // Every advertised version was tried.
    for (key, version) in apis.iter() {
        assert!(
            t.sent.contains_key(&(*key as i16, *version))
                || t.not_encodable.contains_key(&(*key as i16, *version)),
            "{key:?} v{version} never sent"
        );
    }

    // The process is alive and answers; memory stayed bounded.
    let (status, _) = call(http().get(format!("{}/readyz", s.url))).await;
    assert_eq!(status, 200, "seed {seed}: ferry still answers");
    let bound = rss_bound_mib(idle_mib);
    assert!(
        peak_mib <= bound,
        "seed {seed}: RSS peaked at {peak_mib:.0} MiB, bound {bound:.0} MiB"
    );
    assert!(!acked.is_empty(), "the ordinary clients were served");

    // Every acknowledged record reads back at its offset.
    let mut by_partition: BTreeMap<i32, BTreeMap<i64, String>> = BTreeMap::new();
    for p in 0..STEADY_PARTITIONS {
        for r in read_all(&s.url, STEADY, p as u32, 0).await {
            by_partition
                .entry(p)
                .or_default()
                .insert(r["offset"].as_i64().unwrap(), value_text(&r["value"]));
        }
    }
    for (p, offset, value) in &acked {
        let got = by_partition.get(p).and_then(|m| m.get(offset));
        assert!(
            got.is_some_and(|g| g.contains(value.as_str())),
            "seed {seed}: acknowledged {value} at {p}/{offset} reads back as {got:?}"
        );
    }
}
