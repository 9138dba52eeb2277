//! Golden tests of the request decoder: byte-exact requests captured from kcat,
//! confluent-kafka (both librdkafka) and kafka-python by tests/kafka/capture.py. Each
//! must decode as the API and version its file names, and encode back to the very same
//! bytes, so nothing a real client sends is lost or misread.

use bytes::{Bytes, BytesMut};
use ferry_kafka::frame::{decode_request, Request};
use kafka_protocol::messages::{RequestHeader, RequestKind};
use kafka_protocol::protocol::{Encodable, StrBytes};
use std::path::Path;

/// The request `name` captured from `client`, decoded.
fn captured(all: &[(String, String, Vec<u8>)], client: &str, name: &str) -> Request {
    let (_, _, b) = all
        .iter()
        .find(|(c, n, _)| c == client && n == name)
        .unwrap_or_else(|| panic!("{client}/{name}"));
    decode_request(Bytes::from(b.clone())).unwrap()
}

fn fixtures() -> Vec<(String, String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut out = Vec::new();
    for client in std::fs::read_dir(&root).expect("fixtures folder").flatten() {
        for f in std::fs::read_dir(client.path()).unwrap().flatten() {
            out.push((
                client.file_name().to_string_lossy().into_owned(),
                f.file_name().to_string_lossy().into_owned(),
                std::fs::read(f.path()).unwrap(),
            ));
        }
    }
    out.sort();
    out
}

#[test]
fn every_captured_request_decodes_and_encodes_back_to_the_same_bytes() {
    let all = fixtures();
    assert!(
        all.len() >= 40,
        "fixtures from three clients, got {}",
        all.len()
    );
    for (client, name, bytes) in &all {
        let req = decode_request(Bytes::from(bytes.clone()))
            .unwrap_or_else(|e| panic!("{client}/{name}: {e}"));
        let version: i16 = name
            .rsplit_once("-v")
            .unwrap()
            .1
            .trim_end_matches(".bin")
            .parse()
            .unwrap();
        assert_eq!(req.version, version, "{client}/{name}");
        let mut again = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(req.api_key as i16)
            .with_request_api_version(req.version)
            .with_correlation_id(req.correlation_id)
            .with_client_id(req.client_id.clone().map(StrBytes::from_string))
            .encode(&mut again, req.api_key.request_header_version(req.version))
            .unwrap();
        req.body.encode(&mut again, req.version).unwrap();
        assert_eq!(
            &again[..],
            &bytes[..],
            "{client}/{name} re-encodes identically"
        );
    }
}

#[test]
fn captured_requests_carry_what_each_client_sent() {
    let all = fixtures();
    let get = |client: &str, name: &str| captured(&all, client, name);
    // kcat produced two records with a header to "golden" (librdkafka leaves a batch
    // this small uncompressed, since gzip would not make it smaller).
    let RequestKind::Produce(p) = get("kcat", "produce-v7.bin").body else {
        panic!("not a produce")
    };
    assert_eq!(p.topic_data[0].name.0.as_str(), "golden");
    let records = p.topic_data[0].partition_data[0].records.clone().unwrap();
    let (_, decoded) =
        ferry_log::batch::decode_records(&records, &ferry_log::DecodeLimits::default()).unwrap();
    assert_eq!(decoded.len(), 2);
    assert_eq!(decoded[1].key.as_deref(), Some(&b"k"[..]));
    assert_eq!(decoded[1].value.as_deref(), Some(&b"v2"[..]));
    assert_eq!(decoded[0].headers[0].key.as_ref(), b"h");
    // confluent-kafka's idempotent producer: a producer id and sequence 0.
    let RequestKind::Produce(p) = get("confluent-kafka", "produce-v10.bin").body else {
        panic!("not a produce")
    };
    let records = p.topic_data[0].partition_data[0].records.clone().unwrap();
    let header = ferry_log::BatchHeader::parse(&records).unwrap();
    assert!(header.producer_id >= 0);
    assert_eq!(header.base_sequence, 0);
    let (_, decoded) =
        ferry_log::batch::decode_records(&records, &ferry_log::DecodeLimits::default()).unwrap();
    assert_eq!(decoded[0].value.as_deref(), Some(&b"v"[..]));
    // Group membership requests name their group.
    let RequestKind::JoinGroup(j) = get("kafka-python", "join_group-v4.bin").body else {
        panic!("not a join")
    };
    assert_eq!(j.group_id.0.as_str(), "pyg");
    assert_eq!(j.protocol_type.as_str(), "consumer");
    // Settings changed by confluent-kafka: the whole set, then SET and DELETE.
    let RequestKind::AlterConfigs(a) = get("confluent-kafka", "alter_configs-v2.bin").body else {
        panic!("not an AlterConfigs")
    };
    assert_eq!(a.resources[0].resource_name.as_str(), "golden3");
    assert_eq!(a.resources[0].configs[0].name.as_str(), "retention.ms");
    assert_eq!(a.resources[0].configs[0].value.as_deref(), Some("3600000"));
    let RequestKind::IncrementalAlterConfigs(a) =
        get("confluent-kafka", "incremental_alter_configs-v1.bin").body
    else {
        panic!("not an IncrementalAlterConfigs")
    };
    let ops: Vec<(&str, i8)> = a.resources[0]
        .configs
        .iter()
        .map(|c| (c.name.as_str(), c.config_operation))
        .collect();
    assert_eq!(ops, [("max.message.bytes", 0), ("retention.ms", 1)]);
    // kafka-python deletes a group's offset.
    let RequestKind::OffsetDelete(d) = get("kafka-python", "offset_delete-v0.bin").body else {
        panic!("not an OffsetDelete")
    };
    assert_eq!(d.group_id.0.as_str(), "og");
    assert_eq!(d.topics[0].name.0.as_str(), "golden3");
    assert_eq!(d.topics[0].partitions[0].partition_index, 0);
}

#[test]
fn static_members_carry_their_group_instance_id_in_every_group_request() {
    let all = fixtures();
    let get = |client: &str, name: &str| captured(&all, client, name).body;
    let instance = |i: &Option<StrBytes>| i.as_ref().map(|s| s.to_string());
    let one = Some("static-1".to_string());
    // librdkafka: JoinGroup v5, SyncGroup and Heartbeat v3, OffsetCommit v8.
    let c = "confluent-kafka-static";
    let RequestKind::JoinGroup(j) = get(c, "join_group-v5.bin") else {
        panic!("not a join")
    };
    assert_eq!(instance(&j.group_instance_id), one);
    assert!(
        j.member_id.is_empty(),
        "a static member asks for no member id"
    );
    let RequestKind::SyncGroup(r) = get(c, "sync_group-v3.bin") else {
        panic!("not a sync")
    };
    assert_eq!(instance(&r.group_instance_id), one);
    let RequestKind::Heartbeat(r) = get(c, "heartbeat-v3.bin") else {
        panic!("not a heartbeat")
    };
    assert_eq!(instance(&r.group_instance_id), one);
    let RequestKind::OffsetCommit(r) = get(c, "offset_commit-v8.bin") else {
        panic!("not a commit")
    };
    assert_eq!(instance(&r.group_instance_id), one);
    // kafka-python: JoinGroup v7 with its instance id; a dynamic member leaves with a
    // LeaveGroup v5 batch of itself.
    let RequestKind::JoinGroup(j) = get("kafka-python-static", "join_group-v7.bin") else {
        panic!("not a join")
    };
    assert_eq!(instance(&j.group_instance_id), Some("static-2".to_string()));
    let RequestKind::LeaveGroup(l) = get("kafka-python-static", "leave_group-v5.bin") else {
        panic!("not a leave")
    };
    assert_eq!(l.members.len(), 1);
    assert!(!l.members[0].member_id.is_empty());
    assert_eq!(l.members[0].group_instance_id, None);
}
