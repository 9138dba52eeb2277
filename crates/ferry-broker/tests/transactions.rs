//! The transaction coordinator on real partition logs: transactional batches checked
//! against the ongoing transaction, markers, fencing, and recovery after a crash.

mod common;
use bytes::Bytes;
use common::broker;
use ferry_broker::txn::{TopicPartition, TxnError, TxnStatus};
use ferry_broker::{BrokerError, TopicSettings};
use ferry_log::batch::{build_batch, NewRecord};
use ferry_log::Compression;
use std::time::Duration;

/// A transactional batch of `producer_id` at `epoch`, `n` records from sequence `seq`.
fn txn_batch(producer_id: i64, epoch: i16, seq: i32, n: usize, tag: &str) -> Bytes {
    let records: Vec<NewRecord> = (0..n)
        .map(|i| NewRecord {
            timestamp: 1_700_000_000_000,
            value: Some(Bytes::from(format!("{tag}-{i}"))),
            ..NewRecord::default()
        })
        .collect();
    let mut b = build_batch(&records, Compression::None).unwrap();
    b[21..23].copy_from_slice(&0x10i16.to_be_bytes());
    b[43..51].copy_from_slice(&producer_id.to_be_bytes());
    b[51..53].copy_from_slice(&epoch.to_be_bytes());
    b[53..57].copy_from_slice(&seq.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(b)
}

fn tp(partition: u32) -> TopicPartition {
    TopicPartition {
        topic: "t".into(),
        partition,
    }
}

async fn values(b: &ferry_broker::Broker, partition: u32) -> Vec<String> {
    let read = b
        .read("t", partition, 0, 1000, 1 << 20, Duration::ZERO)
        .await
        .unwrap();
    read.records
        .iter()
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
        .collect()
}

#[tokio::test]
async fn transactional_batches_go_only_into_their_ongoing_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    let settings = TopicSettings {
        partitions: Some(2),
        ..TopicSettings::default()
    };
    b.create_topic("t", settings).await.unwrap();
    let (pid, epoch) = b
        .init_transactional_producer("tx", None, 60_000)
        .await
        .unwrap();
    // Not added yet: refused.
    let refused = b
        .append_client_batches("t", 0, txn_batch(pid, epoch, 0, 2, "a"))
        .await
        .unwrap();
    assert!(matches!(
        refused.error,
        Some(BrokerError::Transaction(TxnError::InvalidTxnState))
    ));
    b.add_partitions_to_txn("tx", pid, epoch, &[tp(0)])
        .await
        .unwrap();
    let ok = b
        .append_client_batches("t", 0, txn_batch(pid, epoch, 0, 2, "a"))
        .await
        .unwrap();
    assert!(ok.error.is_none(), "{:?}", ok.error);
    b.make_durable("t", 0, ok.end_offset.unwrap())
        .await
        .unwrap();
    assert_eq!(b.last_stable("t", 0).unwrap(), 0);
    assert!(values(&b, 0).await.is_empty(), "open records are not read");
    b.end_txn("tx", pid, epoch, true).await.unwrap();
    assert_eq!(
        b.last_stable("t", 0).unwrap(),
        3,
        "two records and the marker"
    );
    assert_eq!(values(&b, 0).await, vec!["a-0", "a-1"]);
    // A new instance fences the old one.
    let (pid2, epoch2) = b
        .init_transactional_producer("tx", None, 60_000)
        .await
        .unwrap();
    assert_eq!((pid2, epoch2), (pid, epoch + 1));
    assert!(matches!(
        b.add_partitions_to_txn("tx", pid, epoch, &[tp(1)]).await,
        Err(BrokerError::Transaction(TxnError::ProducerFenced))
    ));
    assert_eq!(b.txns.get("tx").map(|m| m.status), Some(TxnStatus::Empty));
}

#[tokio::test]
async fn a_transaction_open_at_a_crash_is_aborted_at_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (pid, epoch) = {
        let b = broker(dir.path());
        b.create_topic("t", TopicSettings::default()).await.unwrap();
        let (pid, epoch) = b
            .init_transactional_producer("crash", None, 60_000)
            .await
            .unwrap();
        b.add_partitions_to_txn("crash", pid, epoch, &[tp(0)])
            .await
            .unwrap();
        let a = b
            .append_client_batches("t", 0, txn_batch(pid, epoch, 0, 3, "lost"))
            .await
            .unwrap();
        b.make_durable("t", 0, a.end_offset.unwrap()).await.unwrap();
        // Dropped without shutdown: what a kill -9 leaves.
        (pid, epoch)
    };
    let b = broker(dir.path());
    assert_eq!(
        b.last_stable("t", 0).unwrap(),
        0,
        "still open before recovery"
    );
    b.recover_transactions().await.unwrap();
    let (latest, stable) = (b.bounds("t", 0).unwrap().1, b.last_stable("t", 0).unwrap());
    assert_eq!((latest, stable), (4, 4), "aborted: the marker closes it");
    assert!(values(&b, 0).await.is_empty());
    let meta = b.txns.get("crash").unwrap();
    assert_eq!(
        (meta.status, meta.epoch),
        (TxnStatus::CompleteAbort, epoch + 1)
    );
    assert!(
        b.end_txn("crash", pid, epoch, true).await.is_err(),
        "fenced"
    );
}
