//! One regression test per bug found in the broker (issue 19, point 9), each named for
//! what must hold.

mod common;
use bytes::Bytes;
use common::broker;
use ferry_broker::subs::Completion;
use ferry_broker::TopicSettings;
use ferry_log::batch::{build_batch, NewRecord};
use ferry_log::Compression;
use std::sync::Arc;

/// An idempotent producer's batch of `n` records with sequence `seq` (header fields
/// patched in, CRC made again).
fn idempotent_batch(producer_id: i64, seq: i32, n: usize) -> Vec<u8> {
    let records: Vec<NewRecord> = (0..n)
        .map(|i| NewRecord {
            timestamp: 1_700_000_000_000,
            value: Some(Bytes::from(format!("s{seq}-{i}"))),
            ..NewRecord::default()
        })
        .collect();
    let mut b = build_batch(&records, Compression::None).unwrap();
    b[43..51].copy_from_slice(&producer_id.to_be_bytes());
    b[51..53].copy_from_slice(&0i16.to_be_bytes());
    b[53..57].copy_from_slice(&seq.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// A produce request holding a new batch and then a retry of an older one: the end to
/// make durable is the new batch's end, not the retried batch's (which would let the
/// new batch be acknowledged before its fsync).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_older_batch_after_a_new_one_does_not_lower_the_end_to_sync() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    b.create_topic("t", TopicSettings::default()).await.unwrap();
    let first = idempotent_batch(7, 0, 3);
    let a = b
        .append_client_batches("t", 0, Bytes::from(first.clone()))
        .await
        .unwrap();
    assert_eq!(a.end_offset, Some(3));
    let mut request = idempotent_batch(7, 3, 2);
    request.extend_from_slice(&first);
    let a = b
        .append_client_batches("t", 0, Bytes::from(request))
        .await
        .unwrap();
    assert!(a.error.is_none(), "{:?}", a.error);
    assert_eq!(a.first_offset, Some(3));
    assert_eq!(
        a.end_offset,
        Some(5),
        "the end to sync covers the new batch"
    );
}

/// Two redrives of one subscription at once: every dead letter goes back once, not
/// twice, and the redrive mark never moves back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_redrives_send_each_dead_letter_back_once() {
    use ferry_broker::subs::{SubscriptionSettings, HEADER_ORIGIN_SUBSCRIPTION};
    use ferry_broker::ProduceRecord;
    use ferry_log::batch::RecordHeader;
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    b.create_topic("t", TopicSettings::default()).await.unwrap();
    b.create_subscription(SubscriptionSettings {
        name: Some("s".into()),
        topic: Some("t".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    // Dead letters as the subscription writes them, in its dead-letter topic.
    const DEAD: usize = 3000;
    let records: Vec<ProduceRecord> = (0..DEAD)
        .map(|i| ProduceRecord {
            value: Some(Bytes::from(format!("dead {i}"))),
            headers: vec![RecordHeader {
                key: Bytes::from_static(HEADER_ORIGIN_SUBSCRIPTION.as_bytes()),
                value: Some(Bytes::from_static(b"s")),
            }],
            ..Default::default()
        })
        .collect();
    b.produce("s-dlq", records).await.unwrap();
    let (b1, b2) = (Arc::clone(&b), Arc::clone(&b));
    let one = tokio::spawn(async move { b1.redrive("s", 100_000).await.unwrap() });
    let two = tokio::spawn(async move { b2.redrive("s", 100_000).await.unwrap() });
    let (one, two) = (one.await.unwrap(), two.await.unwrap());
    assert_eq!(one + two, DEAD, "redriven: {one} + {two}");
    let latest = b.bounds("t", 0).unwrap().1;
    assert_eq!(latest as usize, DEAD, "copies in the topic");
}

/// After a subscription's write fails, it stops: later changes are refused until a
/// restart loads it from disk. (It used to load its state again at once, dropping
/// changes that other callers, waiting for their own fsync, were told succeeded.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_whose_write_failed_refuses_changes_until_restart() {
    use ferry_broker::subs::{PullRequest, SubscriptionSettings};
    use ferry_broker::{BrokerError, ProduceRecord};
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    b.create_topic("t", TopicSettings::default()).await.unwrap();
    b.create_subscription(SubscriptionSettings {
        name: Some("s".into()),
        topic: Some("t".into()),
        start: Some(serde_json::json!("earliest")),
        ..Default::default()
    })
    .await
    .unwrap();
    let two = (0..2)
        .map(|i| ProduceRecord {
            value: Some(Bytes::from(format!("r{i}"))),
            ..Default::default()
        })
        .collect();
    b.produce("t", two).await.unwrap();
    let req = PullRequest {
        consumer: Arc::from("c"),
        max_records: 2,
        wait: Duration::ZERO,
        visibility_timeout_ms: None,
    };
    let leases = b.pull("s", req.clone()).await.unwrap();
    assert_eq!(leases.len(), 2);
    // Delay files can no longer be written: their folder is now a file.
    let delays = b.subscription_dir("s").unwrap().join("delays");
    std::fs::remove_dir_all(&delays).unwrap();
    std::fs::write(&delays, b"not a folder").unwrap();
    let day = 24 * 3600 * 1000;
    let nacked = b
        .nack("s", vec![leases[0].lease_id.clone()], Some(day), None)
        .await;
    assert!(nacked.is_err(), "the delay could not be stored");
    let acked = b
        .ack("s", vec![leases[1].lease_id.clone()], Completion::Durable)
        .await;
    assert!(
        matches!(acked, Err(BrokerError::Unavailable(_))),
        "changes after a failed write are refused: {acked:?}"
    );
    assert!(matches!(
        b.pull("s", req).await,
        Err(BrokerError::Unavailable(_))
    ));
}

/// Regression (found by the subscription model test): a nack straight to the
/// dead-letter topic changed only memory, so after a restart the record was delivered
/// again instead of being dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_nacked_to_the_dead_letter_topic_stays_dead_after_a_restart() {
    use ferry_broker::subs::{PullRequest, SubscriptionSettings};
    use ferry_broker::ProduceRecord;
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let req = PullRequest {
        consumer: Arc::from(ferry_broker::subs::PUSH_CONSUMER),
        max_records: 10,
        wait: Duration::ZERO,
        visibility_timeout_ms: None,
    };
    {
        let b = broker(dir.path());
        b.create_topic("t", TopicSettings::default()).await.unwrap();
        b.create_subscription(SubscriptionSettings {
            name: Some("s".into()),
            topic: Some("t".into()),
            start: Some(serde_json::json!("earliest")),
            ..Default::default()
        })
        .await
        .unwrap();
        let one = vec![ProduceRecord {
            value: Some(Bytes::from_static(b"refused")),
            ..Default::default()
        }];
        b.produce("t", one).await.unwrap();
        let leases = b.pull("s", req.clone()).await.unwrap();
        assert_eq!(leases.len(), 1);
        b.dead_letter_now("s", vec![leases[0].lease_id.clone()], "410 Gone".into())
            .await
            .unwrap();
        assert_eq!(
            b.describe_subscription("s")
                .await
                .unwrap()
                .dead_letter_pending,
            1
        );
        b.shutdown();
    }
    let b = broker(dir.path());
    assert!(
        b.pull("s", req).await.unwrap().is_empty(),
        "not delivered again"
    );
    let status = b.describe_subscription("s").await.unwrap();
    assert_eq!(
        status.dead_letter_pending, 1,
        "still waiting for the dead-letter topic"
    );
}
