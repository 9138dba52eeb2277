//! The Kafka listener with kcat (librdkafka), a client Ferry did not write. kcat comes
//! from Debian's package; scripts/test.sh installs it.

mod common;
use common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::process::{Command, Output, Stdio};

fn kcat(broker: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new("kcat")
        // Cargo points the library path at the build folders of -sys crates; the bundled
        // librdkafka of ferry-bench's rdkafka there must not stand in for Debian's.
        .env_remove("LD_LIBRARY_PATH")
        .arg("-b")
        .arg(broker)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat is installed (scripts/test.sh installs it with apt-get)");
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "kcat failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[tokio::test]
async fn kcat_lists_topics_and_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    create_topic(&s.url, json!({"name": "orders", "partitions": 3})).await;
    let meta: Value = serde_json::from_str(&ok(&kcat(&s.kafka, &["-L", "-J"], None))).unwrap();
    assert_eq!(meta["brokers"][0]["name"], s.kafka.as_str());
    let topic = meta["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["topic"] == "orders")
        .unwrap();
    assert_eq!(topic["partitions"].as_array().unwrap().len(), 3);
    assert_eq!(topic["partitions"][2]["leader"], 0);
}

#[tokio::test]
async fn records_produced_with_every_codec_read_back_over_http_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    create_topic(&s.url, json!({"name": "t"})).await;
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let input: String = (0..50)
            .map(|i| format!("{codec}-key-{i}:{codec} value {i}\n"))
            .collect();
        ok(&kcat(
            &s.kafka,
            &[
                "-P",
                "-t",
                "t",
                "-p",
                "0",
                "-K:",
                "-z",
                codec,
                "-H",
                "origin=kcat",
                "-H",
                &format!("codec={codec}"),
            ],
            Some(&input),
        ));
    }
    let got = read_all(&s.url, "t", 0, 0).await;
    assert_eq!(got.len(), 250);
    for (i, codec) in ["none", "gzip", "snappy", "lz4", "zstd"].iter().enumerate() {
        let r = &got[i * 50 + 7];
        assert_eq!(r["key"], format!("{codec}-key-7"));
        // Kafka clients send bytes; HTTP readers get them as base64 unless written as JSON.
        let value = r["value"]["base64"].as_str().unwrap();
        assert_eq!(decode_b64(value), format!("{codec} value 7"));
        assert_eq!(r["headers"], json!({"origin": "kcat", "codec": codec}));
        assert!(r["timestamp"].as_i64().unwrap() > 1_600_000_000_000);
    }
}

fn decode_b64(s: &str) -> String {
    let table = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes().filter(|c| *c != b'=') {
        bits = (bits << 6) | table.iter().position(|t| *t == c).unwrap() as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    String::from_utf8(out).unwrap()
}

#[tokio::test]
async fn records_produced_over_http_are_consumed_by_kcat_with_keys_and_headers() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    create_topic(&s.url, json!({"name": "h", "partitions": 2})).await;
    let records: Vec<_> =
        (0..20).map(|i| json!({"key": format!("k{i}"), "value": {"n": i}, "headers": {"trace": format!("t{i}")}, "partition": i % 2})).collect();
    produce(&s.url, "h", json!(records)).await;
    let out = ok(&kcat(
        &s.kafka,
        &[
            "-C",
            "-t",
            "h",
            "-o",
            "beginning",
            "-e",
            "-q",
            "-f",
            "%p|%o|%k|%s|%h\n",
        ],
        None,
    ));
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert_eq!(lines.len(), 20, "{out}");
    assert!(lines.contains(&"0|0|k0|{\"n\":0}|trace=t0"), "{out}");
    assert!(lines.contains(&"1|9|k19|{\"n\":19}|trace=t19"), "{out}");
    // Offsets from the end and by time work too.
    let tail = ok(&kcat(
        &s.kafka,
        &[
            "-C", "-t", "h", "-p", "0", "-o", "-2", "-e", "-q", "-f", "%o\n",
        ],
        None,
    ));
    assert_eq!(tail.lines().collect::<Vec<_>>(), vec!["8", "9"]);
}

#[tokio::test]
async fn producing_to_an_unknown_topic_fails_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let out = kcat(
        &s.kafka,
        &["-P", "-t", "missing", "-X", "message.timeout.ms=2000"],
        Some("x\n"),
    );
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success() || err.contains("Unknown topic"),
        "{err}"
    );
    let (_, list) = call(http().get(format!("{}/v1/topics", s.url))).await;
    assert!(list["topics"].as_array().unwrap().is_empty());
}

fn raw_exchange(addr: &str, frame: &[u8]) -> Vec<u8> {
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let _ = conn.write_all(frame);
    let mut out = Vec::new();
    let _ = conn.read_to_end(&mut out);
    out
}

#[tokio::test]
async fn hostile_frames_close_the_connection_and_the_broker_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--kafka-max-request-bytes", "65536"]);
    create_topic(&s.url, json!({"name": "t"})).await;
    let frames: Vec<Vec<u8>> = vec![
        // Metadata v0 claiming 2^31-1 topics in a 13-byte frame.
        vec![0, 0, 0, 13, 0, 3, 0, 0, 0, 0, 0, 1, 0, 0, 0x7f, 0xff, 0xff],
        // Produce v9 whose topic array claims about 2 billion entries.
        vec![
            0, 0, 0, 16, 0, 0, 0, 9, 0, 0, 0, 2, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f, 0,
        ],
        // A frame larger than the limit, announced and never sent.
        vec![0x10, 0, 0, 0],
        // Negative and tiny lengths.
        vec![0xff, 0xff, 0xff, 0xff],
        vec![0, 0, 0, 2, 0, 3],
        // Unknown API key.
        vec![0, 0, 0, 8, 0x7f, 0x7f, 0, 0, 0, 0, 0, 1],
        // Produce v1: listed for old clients, not handled.
        vec![0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0, 1],
    ];
    for f in &frames {
        let answer = raw_exchange(&s.kafka, f);
        assert!(
            answer.is_empty(),
            "no answer to a frame that cannot be answered"
        );
    }
    // An ApiVersions of an unknown version is answered with UNSUPPORTED_VERSION (35).
    let answer = raw_exchange(&s.kafka, &[0, 0, 0, 8, 0, 18, 0, 99, 0, 0, 0, 42]);
    assert!(answer.len() > 10, "{answer:?}");
    assert_eq!(&answer[4..8], &42i32.to_be_bytes(), "correlation id");
    assert_eq!(&answer[8..10], &35i16.to_be_bytes(), "error code");
    // Still serving both front ends.
    let (status, _) = call(http().get(format!("{}/healthz", s.url))).await;
    assert_eq!(status, 200);
    ok(&kcat(&s.kafka, &["-L"], None));
}

#[tokio::test]
async fn with_auto_create_on_producing_to_a_new_topic_creates_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        dir.path(),
        &["--kafka-auto-create-topics", "--default-partitions", "2"],
    );
    ok(&kcat(
        &s.kafka,
        &["-P", "-t", "fresh", "-p", "1"],
        Some("hello\n"),
    ));
    let (status, t) = call(http().get(format!("{}/v1/topics/fresh", s.url))).await;
    assert_eq!((status, t["partitions"].as_u64()), (200, Some(2)));
    assert_eq!(read_all(&s.url, "fresh", 1, 0).await.len(), 1);
}

/// Regression: with acks=0 on a durability-"always" topic, records stayed invisible
/// because nothing synced them.
#[tokio::test]
async fn records_produced_with_acks_0_become_readable() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    create_topic(&s.url, json!({"name": "fire"})).await;
    ok(&kcat(
        &s.kafka,
        &["-P", "-t", "fire", "-X", "acks=0"],
        Some("a\nb\nc\n"),
    ));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while read_all(&s.url, "fire", 0, 0).await.len() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "acks=0 records never became readable"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
