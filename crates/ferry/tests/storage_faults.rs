//! Failed disk operations, injected through the real binary with `FERRY_FAULTS` (honoured
//! by debug builds only, see `ferry_log::fault`): after a failed fdatasync the partition
//! takes no more writes, acknowledges nothing, answers 503 and logs what failed.

mod common;
use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn after_a_failed_fdatasync_produces_are_refused_with_503_and_nothing_unsynced_is_acknowledged(
) {
    let dir = tempfile::tempdir().unwrap();
    let s = ferry_testkit::Launch::new(BIN, dir.path())
        .env("FERRY_FAULTS", "fdatasync@topics/t/0/0000:3")
        .start()
        .unwrap();
    create_topic(&s.url, json!({"name": "t", "partitions": 1})).await;
    let mut acked = Vec::new();
    let mut refused: Vec<(u16, Value)> = Vec::new();
    for i in 0..8 {
        let (status, v) = produce(&s.url, "t", json!([{"value": format!("r{i}")}])).await;
        if status == 200 {
            assert!(refused.is_empty(), "acknowledged after a failed sync: {v}");
            acked.push(format!("r{i}"));
        } else {
            refused.push((status, v));
        }
    }
    assert_eq!(acked, ["r0", "r1"], "the third sync failed");
    assert_eq!(refused.len(), 6);
    for (status, problem) in &refused {
        assert_eq!(*status, 503, "{problem}");
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("fdatasync"), "says what failed: {problem}");
    }
    let read: Vec<Value> = read_all(&s.url, "t", 0, 0).await;
    let values: Vec<&str> = read.iter().map(|r| r["value"].as_str().unwrap()).collect();
    assert_eq!(values, ["r0", "r1"], "nothing unsynced is readable");
    let logs = s.logs().join("\n");
    assert!(logs.contains("Injected storage fault"), "{logs}");
    assert!(
        logs.contains("the partition stops taking writes until restart"),
        "{logs}"
    );
    s.kill9();
    // A restart recovers the partition from the disk and writes go on.
    let s = Server::start(dir.path(), &[]);
    let (status, v) = produce(&s.url, "t", json!([{"value": "after restart"}])).await;
    assert_eq!(status, 200, "{v}");
    let read = read_all(&s.url, "t", 0, 0).await;
    assert_eq!(read.last().unwrap()["value"], "after restart");
    assert_eq!(read[0]["value"], "r0");
    assert_eq!(read[1]["value"], "r1");
}
