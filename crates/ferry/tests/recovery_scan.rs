//! Recovery meets a length field corrupted in the middle of the active segment: the
//! batches after it are fsynced data, not a torn tail, so what is cut is kept.

mod common;
use common::*;
use serde_json::json;
use std::path::PathBuf;

#[tokio::test]
async fn a_length_corrupted_mid_segment_past_the_end_of_the_file_is_cut_and_kept_not_taken_for_a_torn_tail(
) {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    create_topic(&s.url, json!({"name": "t", "partitions": 1})).await;
    for i in 0..10 {
        let (status, v) = produce(&s.url, "t", json!([{"value": format!("r{i}")}])).await;
        assert_eq!(status, 200, "{v}");
    }
    s.kill9();
    let seg = active_segment(dir.path(), "t", 0);
    let mut bytes = std::fs::read(&seg).unwrap();
    let positions = batch_positions(&bytes);
    assert_eq!(positions.len(), 11, "10 batches and the end");
    // The third batch claims more bytes than are left in the file (well under the
    // 64 MiB limit, so the length alone looks plausible).
    let third = positions[2];
    let claimed = (bytes.len() - third + 1000) as u32;
    bytes[third + 8..third + 12].copy_from_slice(&claimed.to_be_bytes());
    std::fs::write(&seg, &bytes).unwrap();

    let s = Server::start(dir.path(), &[]);
    let kept = PathBuf::from(format!("{}.cut-{third}", seg.display()));
    assert!(
        kept.exists(),
        "the cut bytes are kept in {}; logs: {:?}",
        kept.display(),
        s.logs()
    );
    assert_eq!(std::fs::read(&kept).unwrap(), bytes[third..]);
    let cut_line = s
        .logs()
        .into_iter()
        .find(|l| l.contains("Cut "))
        .expect("the cut is logged");
    assert!(cut_line.contains("a good batch follows"), "{cut_line}");
    assert!(cut_line.contains(".cut-"), "{cut_line}");
    let read = read_all(&s.url, "t", 0, 0).await;
    let values: Vec<&str> = read.iter().map(|r| r["value"].as_str().unwrap()).collect();
    assert_eq!(values, ["r0", "r1"]);
    let (status, v) = produce(&s.url, "t", json!([{"value": "after"}])).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["offsets"][0]["offset"], 2);
}
