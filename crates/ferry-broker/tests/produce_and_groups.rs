//! Broker behaviour behind the Kafka front end: checks on client batches, and the
//! group coordinator.

use bytes::Bytes;
use ferry_broker::groups::{GroupError, JoinRequest};
use ferry_broker::{Broker, BrokerConfig, BrokerError, TopicDefaults, TopicSettings};
use ferry_log::batch::{build_batch, NewRecord};
use ferry_log::Compression;
use std::sync::Arc;
use std::time::Instant;

/// A broker with its maintenance task running (it completes group rebalances).
fn broker(dir: &std::path::Path) -> Arc<Broker> {
    let b = Broker::open(BrokerConfig {
        data_dir: dir.to_path_buf(),
        defaults: TopicDefaults::default(),
        retention_check_ms: 60_000,
        max_partitions: ferry_broker::broker::MAX_PARTITIONS_DEFAULT,
        max_open_segments: None,
        cleaner_offset_map_bytes: 1 << 20,
    })
    .unwrap();
    b.spawn_maintenance();
    b
}

/// Regression: a batch with a valid CRC whose records do not match its header was
/// stored, and every reader then stopped at it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_records_do_not_match_its_count_is_refused_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    b.create_topic("t", TopicSettings::default()).await.unwrap();
    let records: Vec<NewRecord> = (0..3)
        .map(|i| NewRecord {
            timestamp: 1,
            value: Some(Bytes::from(format!("v{i}"))),
            ..Default::default()
        })
        .collect();
    let good = build_batch(&records, Compression::None).unwrap();
    // Claim 10 records (last offset delta 9) over the body of 3, and fix the CRC.
    let mut lying = good.clone();
    lying[23..27].copy_from_slice(&9i32.to_be_bytes());
    lying[57..61].copy_from_slice(&10i32.to_be_bytes());
    let crc = crc32c::crc32c(&lying[21..]);
    lying[17..21].copy_from_slice(&crc.to_be_bytes());
    let refused = b
        .append_client_batches("t", 0, Bytes::from(lying))
        .await
        .unwrap();
    let err = refused.error.expect("refused");
    assert!(matches!(err, BrokerError::InvalidRecord(_)), "{err}");
    assert_eq!(refused.end_offset, None);
    assert_eq!(b.bounds("t", 0).unwrap(), (0, 0));
    let accepted = b
        .append_client_batches("t", 0, Bytes::from(good))
        .await
        .unwrap();
    b.make_durable("t", 0, accepted.end_offset.unwrap())
        .await
        .unwrap();
    assert_eq!(accepted.first_offset, Some(0));
}

fn join(group: &str, member: &str, protocol: &str) -> JoinRequest {
    JoinRequest {
        group: group.into(),
        member_id: member.into(),
        group_instance_id: None,
        client_id: "test".into(),
        client_host: "127.0.0.1".into(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 10_000,
        protocol_type: "consumer".into(),
        protocols: vec![(protocol.into(), Bytes::from_static(b"meta"))],
        require_member_id: false,
    }
}

/// Regression: a newcomer with no protocol in common made the whole group fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_with_a_foreign_assignor_is_refused_alone() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    let first = b
        .groups
        .join(join("g", "", "range"), Instant::now())
        .await
        .unwrap();
    assert_eq!(first.generation, 1);
    assert_eq!(first.leader, first.member_id);
    b.groups
        .sync(
            "g",
            &first.member_id,
            None,
            1,
            vec![(first.member_id.clone(), Bytes::from_static(b"a"))],
            Instant::now(),
        )
        .await
        .unwrap();
    let refused = b
        .groups
        .join(join("g", "", "roundrobin"), Instant::now())
        .await
        .unwrap_err();
    assert_eq!(refused, GroupError::InconsistentProtocol);
    b.groups
        .heartbeat("g", &first.member_id, None, 1, Instant::now())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_group_leaves_memory_but_keeps_its_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    b.create_topic("t", TopicSettings::default()).await.unwrap();
    let m = b
        .groups
        .join(join("g", "", "range"), Instant::now())
        .await
        .unwrap();
    b.groups
        .sync(
            "g",
            &m.member_id,
            None,
            m.generation,
            vec![],
            Instant::now(),
        )
        .await
        .unwrap();
    let offset = ferry_broker::groups::CommittedOffset {
        offset: 42,
        metadata: None,
        leader_epoch: Some(3),
    };
    b.groups
        .commit(
            "g",
            &m.member_id,
            None,
            m.generation,
            vec![ferry_broker::groups::PartitionOffset {
                topic: "t".into(),
                partition: 0,
                committed: offset,
            }],
        )
        .await
        .unwrap();
    b.groups
        .leave(
            "g",
            &[ferry_broker::groups::LeavingMember {
                member_id: m.member_id.clone(),
                group_instance_id: None,
            }],
            Instant::now(),
        )
        .await;
    b.groups.tick(Instant::now()).await;
    let listed = b.groups.list().await;
    assert_eq!(listed.len(), 1, "still listed through its offsets");
    assert_eq!(
        b.groups.fetch_offsets("g", None)[0]
            .committed
            .as_ref()
            .unwrap()
            .offset,
        42
    );
    // A fresh join starts a new group under the same name.
    assert!(b
        .groups
        .join(join("g", "", "range"), Instant::now())
        .await
        .is_ok());
}

/// Reads of a few records from large batches step through them in order: nothing is
/// skipped when a read stops inside a batch, and the next read goes on from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_reads_walk_large_batches_without_skipping() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    b.create_topic("t", TopicSettings::default()).await.unwrap();
    // Three batches of 2,000 records, each about 40 KiB.
    for batch in 0..3 {
        let records: Vec<NewRecord> = (0..2000)
            .map(|i| NewRecord {
                timestamp: 1,
                value: Some(Bytes::from(format!("{:016}", batch * 2000 + i))),
                ..Default::default()
            })
            .collect();
        let bytes = build_batch(&records, Compression::None).unwrap();
        let r = b
            .append_client_batches("t", 0, Bytes::from(bytes))
            .await
            .unwrap();
        b.make_durable("t", 0, r.end_offset.unwrap()).await.unwrap();
    }
    for step in [1usize, 7, 64, 1999, 2001] {
        let mut offset = 0u64;
        let mut seen = 0u64;
        while offset < 6000 {
            let r = b
                .read("t", 0, offset, step, 1 << 20, std::time::Duration::ZERO)
                .await
                .unwrap();
            assert!(!r.records.is_empty(), "step {step}: stuck at {offset}");
            assert!(r.records.len() <= step);
            for rec in &r.records {
                assert_eq!(rec.offset as u64, seen, "step {step}");
                let v = rec.value.as_deref().unwrap();
                assert_eq!(std::str::from_utf8(v).unwrap(), format!("{seen:016}"));
                seen += 1;
            }
            assert_eq!(r.next_offset, seen);
            offset = r.next_offset;
        }
        assert_eq!(seen, 6000);
    }
}
