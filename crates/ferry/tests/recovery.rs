//! Damaged segments found at start, and a full disk, through the real process.

mod common;
use common::*;
use serde_json::json;
use std::path::PathBuf;
use std::process::Command;

async fn fill(url: &str, n: usize) {
    create_topic(url, json!({"name": "t"})).await;
    for i in 0..n {
        let (status, _) = produce(url, "t", json!([{"value": format!("record-{i:03}")}])).await;
        assert_eq!(status, 200);
    }
}

#[tokio::test]
async fn a_truncated_tail_is_cut_with_one_log_line_and_writes_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    fill(&s.url, 10).await;
    s.kill9();
    let seg = active_segment(dir.path(), "t", 0);
    let len = std::fs::metadata(&seg).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    let s = Server::start(dir.path(), &[]);
    let cuts: Vec<_> = s
        .logs()
        .into_iter()
        .filter(|l| l.contains("Cut "))
        .collect();
    assert_eq!(cuts.len(), 1, "{cuts:?}");
    assert!(
        cuts[0].contains("runs past the end of the file"),
        "{}",
        cuts[0]
    );
    let got = read_all(&s.url, "t", 0, 0).await;
    assert_eq!(got.len(), 9);
    assert_eq!(got[8]["value"], "record-008");
    let (_, v) = produce(&s.url, "t", json!([{"value": "after"}])).await;
    assert_eq!(v["offsets"][0]["offset"], 9);
}

#[tokio::test]
async fn a_flipped_byte_in_the_middle_is_cut_and_the_damaged_bytes_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    fill(&s.url, 10).await;
    assert!(s.terminate().success());
    let seg = active_segment(dir.path(), "t", 0);
    let mut bytes = std::fs::read(&seg).unwrap();
    let batch = bytes.len() / 10;
    bytes[4 * batch + batch - 2] ^= 0x01;
    std::fs::write(&seg, &bytes).unwrap();
    let s = Server::start(dir.path(), &[]);
    let cut = s
        .logs()
        .into_iter()
        .find(|l| l.contains("Cut "))
        .expect("a cut is logged");
    assert!(cut.contains("CRC mismatch"), "{cut}");
    assert!(
        cut.contains(".log.cut-"),
        "names where the bytes are kept: {cut}"
    );
    let got = read_all(&s.url, "t", 0, 0).await;
    assert_eq!(got.len(), 4, "serves everything before the damage");
    let kept: Vec<_> = std::fs::read_dir(seg.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".log.cut-"))
        .collect();
    assert_eq!(kept.len(), 1);
}

#[tokio::test]
async fn a_corrupt_batch_in_a_sealed_segment_is_reported_and_earlier_records_still_served() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    create_topic(&s.url, json!({"name": "t", "segment_bytes": 16384})).await;
    for i in 0..200 {
        produce(
            &s.url,
            "t",
            json!([{"value": format!("record-{i:03}-{}", "x".repeat(40))}]),
        )
        .await;
    }
    assert!(s.terminate().success());
    // Damage a value byte of record 10, deep in the first (sealed) segment: the start-up
    // check of a sealed segment reads only its tail, so a read is what finds this.
    let first = dir.path().join("topics/t/0").join(format!("{:020}.log", 0));
    let mut bytes = std::fs::read(&first).unwrap();
    let at = bytes.windows(10).position(|w| w == b"record-010").unwrap();
    bytes[at + 8] ^= 0x01;
    std::fs::write(&first, &bytes).unwrap();
    let s = Server::start(dir.path(), &[]);
    // Reading from the start serves what precedes the damage, then stops there.
    let (status, v) = call(http().get(format!(
        "{}/v1/topics/t/partitions/0/records?offset=0&max_records=1000",
        s.url
    )))
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        v["records"].as_array().unwrap().len(),
        10,
        "records 0-9 precede the damage"
    );
    // Reading at the damaged record reports it.
    let next = v["next_offset"].as_u64().unwrap();
    let (status, p) = call(http().get(format!(
        "{}/v1/topics/t/partitions/0/records?offset={next}",
        s.url
    )))
    .await;
    assert_eq!(
        (status, p["type"].as_str()),
        (500, Some("urn:ferry:problem:corrupt-data")),
        "{p}"
    );
}

/// Mounts a tiny tmpfs; needs root (CI runs as root). Returns None where mounting is
/// not allowed, and the test says so.
fn tiny_fs(size: &str) -> Option<(tempfile::TempDir, PathBuf)> {
    let holder = tempfile::tempdir().unwrap();
    let mnt = holder.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(&mnt)
        .status()
        .ok()?
        .success();
    ok.then_some((holder, mnt))
}

#[tokio::test]
async fn a_full_disk_fails_writes_clearly_keeps_data_readable_and_recovers() {
    let Some((_holder, mnt)) = tiny_fs("2m") else {
        eprintln!(
            "SKIPPED: cannot mount a tmpfs here (needs root); the full-disk test did not run"
        );
        return;
    };
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    let data = mnt.join("data");
    let s = Server::start(&data, &[]);
    create_topic(&s.url, json!({"name": "t"})).await;
    create_topic(&s.url, json!({"name": "filler"})).await;
    let big = "x".repeat(50_000);
    let mut ok = 0;
    let mut problem = None;
    for _ in 0..200 {
        let (status, v) = produce(&s.url, "filler", json!([{"value": big}])).await;
        if status == 200 {
            ok += 1;
        } else {
            problem = Some((status, v));
            break;
        }
    }
    let (status, v) = problem.expect("the disk filled up");
    assert_eq!(
        (status, v["type"].as_str()),
        (507, Some("urn:ferry:problem:disk-full")),
        "{v}"
    );
    assert!(v["detail"].as_str().unwrap().contains("disk is full"));
    // Stored data stays readable and intact.
    let got = read_all(&s.url, "filler", 0, 0).await;
    assert_eq!(got.len(), ok);
    // Space comes back (the operator deletes a topic); writes resume.
    let (status, _) = call(http().delete(format!("{}/v1/topics/filler", s.url))).await;
    assert_eq!(status, 204);
    let (status, v) = produce(&s.url, "t", json!([{"value": "after"}])).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(read_all(&s.url, "t", 0, 0).await[0]["value"], "after");
    // And a restart finds every partition intact.
    assert!(s.terminate().success());
    let s = Server::start(&data, &[]);
    let cuts = s.logs().into_iter().filter(|l| l.contains("Cut ")).count();
    assert_eq!(cuts, 0, "no partial batch was left behind");
    assert_eq!(read_all(&s.url, "t", 0, 0).await.len(), 1);
}
