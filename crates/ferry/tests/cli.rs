//! The `ferry` command line against a real server.

mod common;
use common::endpoint::{Endpoint, Received};
use common::*;
use serde_json::Value;
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn ferry(url: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("FERRY_URL", url)
        .output()
        .unwrap()
}

fn ferry_stdin(url: &str, args: &[&str], input: &str) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env("FERRY_URL", url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[test]
fn topics_are_managed_with_tables_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let out = stdout(&ferry(
        &s.url,
        &[
            "topic",
            "create",
            "orders",
            "--partitions",
            "3",
            "--retention-ms",
            "-1",
        ],
    ));
    assert!(
        out.contains("Created topic orders with 3 partition(s)."),
        "{out}"
    );
    let list = stdout(&ferry(&s.url, &["topic", "list"]));
    assert!(list.lines().next().unwrap().starts_with("TOPIC"), "{list}");
    assert!(
        list.contains("orders") && list.contains("forever"),
        "{list}"
    );
    let json: Value = serde_json::from_str(&stdout(&ferry(
        &s.url,
        &["topic", "describe", "orders", "--json"],
    )))
    .unwrap();
    assert_eq!(json["partitions"], 3);
    let grown: Value = serde_json::from_str(&stdout(&ferry(
        &s.url,
        &["topic", "update", "orders", "-p", "4", "--json"],
    )))
    .unwrap();
    assert_eq!(grown["partitions"], 4);
    let described = stdout(&ferry(&s.url, &["topic", "describe", "orders"]));
    assert!(
        described.contains("PARTITION") && described.lines().count() >= 8,
        "{described}"
    );
    let dup = ferry(&s.url, &["topic", "create", "orders"]);
    assert_eq!(dup.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already exists"));
    stdout(&ferry(&s.url, &["topic", "delete", "orders"]));
    assert!(!stdout(&ferry(&s.url, &["topic", "list"])).contains("orders"));
}

#[test]
fn lines_from_stdin_are_produced_and_consumed_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    stdout(&ferry(&s.url, &["topic", "create", "t"]));
    let input: String = (0..1200)
        .map(|i| format!("user{}:line {i}\n", i % 7))
        .collect();
    let out = stdout(&ferry_stdin(
        &s.url,
        &["produce", "t", "--key-separator", ":"],
        &input,
    ));
    assert!(out.contains("Produced 1200 records"), "{out}");
    let out = stdout(&ferry(
        &s.url,
        &[
            "produce",
            "t",
            "--value",
            "{\"n\": 1}",
            "--format",
            "json",
            "-H",
            "trace=abc",
        ],
    ));
    assert!(out.contains("at offset 1200"), "{out}");
    let lines: Vec<Value> = stdout(&ferry(&s.url, &["consume", "t", "--json"]))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1201);
    assert_eq!(lines[5]["key"], "user5");
    assert_eq!(lines[5]["value"], serde_json::json!({"base64": "bGluZSA1"}));
    assert_eq!(lines[1200]["value"], serde_json::json!({"n": 1}));
    assert_eq!(lines[1200]["headers"]["trace"], "abc");
    let human = stdout(&ferry(&s.url, &["consume", "t", "--from", "1199"]));
    assert_eq!(human.lines().count(), 2);
    assert!(
        human.lines().next().unwrap().contains("line 1199"),
        "{human}"
    );
    let limited = stdout(&ferry(&s.url, &["consume", "t", "-n", "3"]));
    assert_eq!(limited.lines().count(), 3);
    // From a time after every record: nothing.
    let later = stdout(&ferry(
        &s.url,
        &["consume", "t", "--from", "2100-01-01T00:00:00Z"],
    ));
    assert!(later.is_empty(), "{later}");
    let bad = ferry(&s.url, &["consume", "t", "--from", "yesterday"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--from must be"));
}

#[test]
fn consume_follow_prints_records_as_they_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    stdout(&ferry(&s.url, &["topic", "create", "live", "-p", "2"]));
    let follower = Command::new(BIN)
        .args(["consume", "live", "--follow", "--from", "end", "-n", "2"])
        .env("FERRY_URL", &s.url)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    stdout(&ferry(
        &s.url,
        &["produce", "live", "--value", "first", "-k", "a"],
    ));
    stdout(&ferry(
        &s.url,
        &["produce", "live", "--value", "second", "-k", "b"],
    ));
    let out = follower.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("first") && text.contains("second"), "{text}");
}

#[test]
fn an_unreachable_server_is_reported_with_exit_code_3() {
    let out = ferry("http://127.0.0.1:9", &["topic", "list"]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("could not reach Ferry") && err.contains("FERRY_URL"),
        "{err}"
    );
}

#[test]
fn settings_come_from_defaults_then_file_then_environment_then_flags() {
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("ferry.toml");
    std::fs::write(
        &toml,
        "default_partitions = 2\nretention_ms = 1000\ndurability = \"interval\"\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    // File: partitions 2. Environment overrides retention; the flag overrides durability.
    // The log pipe is closed once the address is read: Ferry must keep serving
    // (regression: a closed stderr used to fail every request that logged).
    let server = ferry_testkit::Launch::new(BIN, &data)
        .args(["--durability", "never", "--config"])
        .args([&toml])
        .env("FERRY_RETENTION_MS", "5000")
        .close_log_when_ready()
        .start()
        .expect("ready");
    let t: Value = serde_json::from_str(&stdout(&ferry(
        &server.url,
        &["topic", "create", "x", "--json"],
    )))
    .unwrap();
    drop(server);
    assert_eq!(
        (
            t["partitions"].as_u64(),
            t["retention_ms"].as_i64(),
            t["durability"].as_str()
        ),
        (Some(2), Some(5000), Some("never"))
    );
    // An unknown key in the file is refused with a message naming it.
    std::fs::write(&toml, "partitons = 2\n").unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&toml)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown field `partitons`"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn subscriptions_are_created_pulled_acked_and_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    stdout(&ferry(&s.url, &["topic", "create", "jobs", "-p", "2"]));
    stdout(&ferry_stdin(
        &s.url,
        &["produce", "jobs", "--key-separator", ":"],
        "a:one\nb:two\nc:three\n",
    ));
    let out = stdout(&ferry(
        &s.url,
        &[
            "sub",
            "create",
            "workers",
            "--topic",
            "jobs",
            "--start",
            "earliest",
            "--visibility-timeout-ms",
            "60000",
        ],
    ));
    assert!(
        out.contains("Created subscription workers on topic jobs."),
        "{out}"
    );

    // Pull as JSON lines, then ack every lease.
    let pulled: Vec<Value> = stdout(&ferry(&s.url, &["sub", "pull", "workers", "--json"]))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(pulled.len(), 3, "{pulled:?}");
    assert!(pulled.iter().all(|r| r["attempt"] == 1));
    let leases: Vec<&str> = pulled
        .iter()
        .map(|r| r["lease_id"].as_str().unwrap())
        .collect();
    // Extend first: the leases stay valid.
    let mut args = vec![
        "sub",
        "extend",
        "workers",
        "--visibility-timeout-ms",
        "60000",
    ];
    args.extend(&leases);
    let out = stdout(&ferry(&s.url, &args));
    assert!(out.starts_with("extended 3 lease(s) to 20"), "{out}");
    let short = ferry(
        &s.url,
        &[
            "sub",
            "extend",
            "workers",
            "--visibility-timeout-ms",
            "5",
            leases[0],
        ],
    );
    assert_eq!(short.status.code(), Some(1), "a 5 ms lease is refused");
    let mut args = vec!["sub", "ack", "workers"];
    args.extend(&leases);
    let out = stdout(&ferry(&s.url, &args));
    assert_eq!(out.trim(), "acked 3");
    let d: Value = serde_json::from_str(&stdout(&ferry(
        &s.url,
        &["sub", "describe", "workers", "--json"],
    )))
    .unwrap();
    assert_eq!(
        (d["backlog"].as_u64(), d["acked"].as_u64()),
        (Some(0), Some(3))
    );
    let human = stdout(&ferry(&s.url, &["sub", "describe", "workers"]));
    assert!(
        human.contains("backlog") && human.contains("ACK_FLOOR"),
        "{human}"
    );

    // Acking again is refused: exit code 1 and the server's reason.
    let again = ferry(&s.url, &["sub", "ack", "workers", leases[0]]);
    assert_eq!(again.status.code(), Some(1));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("already acknowledged"), "{err}");

    // A bad filter or start is refused naming what is wrong.
    let bad = ferry(
        &s.url,
        &[
            "sub",
            "create",
            "bad",
            "--topic",
            "jobs",
            "--filter",
            r#"{"subject":"a.>.b"}"#,
        ],
    );
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("invalid filter at subject"), "{err}");
    let bad = ferry(
        &s.url,
        &["sub", "create", "bad", "--topic", "jobs", "--start", "soon"],
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--start must be"));

    // Replay from the start, pull as a table and ack in one go.
    let out = stdout(&ferry(
        &s.url,
        &["sub", "seek", "workers", "--to", "earliest"],
    ));
    assert!(out.contains("backlog 3"), "{out}");
    let out = stdout(&ferry(&s.url, &["sub", "pull", "workers", "--ack"]));
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("LEASE_ID"), "{out}");
    assert_eq!(lines.len(), 5, "{out}");
    assert!(
        ["one", "two", "three"].iter().all(|v| out.contains(v)),
        "{out}"
    );
    assert_eq!(lines[4], "acked 3");
    let d: Value = serde_json::from_str(&stdout(&ferry(
        &s.url,
        &["sub", "describe", "workers", "--json"],
    )))
    .unwrap();
    assert_eq!(d["backlog"], 0, "{d}");

    // Nack gives a record back for another attempt.
    stdout(&ferry(
        &s.url,
        &["sub", "seek", "workers", "--to", "offset:0", "-p", "0"],
    ));
    let first: Vec<Value> = stdout(&ferry(
        &s.url,
        &["sub", "pull", "workers", "-n", "1", "--json"],
    ))
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect();
    assert_eq!(first.len(), 1);
    let out = stdout(&ferry(
        &s.url,
        &[
            "sub",
            "nack",
            "workers",
            first[0]["lease_id"].as_str().unwrap(),
            "--error",
            "try later",
        ],
    ));
    assert_eq!(out.trim(), "nacked 1");
    let retried: Vec<Value> = stdout(&ferry(
        &s.url,
        &["sub", "pull", "workers", "--wait-ms", "2000", "--json"],
    ))
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect();
    assert!(
        retried
            .iter()
            .any(|r| r["offset"] == first[0]["offset"] && r["attempt"] == 2),
        "{retried:?}"
    );

    let list = stdout(&ferry(&s.url, &["sub", "list"]));
    assert!(
        list.lines().next().unwrap().starts_with("SUBSCRIPTION"),
        "{list}"
    );
    assert!(
        list.lines()
            .any(|l| l.starts_with("workers") && l.contains("jobs")),
        "{list}"
    );
    let out = stdout(&ferry(&s.url, &["sub", "purge", "workers"]));
    assert!(out.contains("Purged subscription workers"), "{out}");
    stdout(&ferry(&s.url, &["sub", "delete", "workers"]));
    assert!(!stdout(&ferry(&s.url, &["sub", "list"])).contains("workers"));
    let gone = ferry(&s.url, &["sub", "describe", "workers"]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&gone.stderr).contains("does not exist"));
}

/// The secret of a `Signing secret (shown once): whsec_…` line.
fn shown_secret(out: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix("Signing secret (shown once): "))
        .unwrap_or_else(|| panic!("no secret printed: {out}"))
        .to_string()
}

fn header(r: &Received, name: &str) -> String {
    r.headers
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// Whether one of the request's signatures is made with `secret`.
fn signed_with(r: &Received, secret: &str) -> bool {
    let id = header(r, "webhook-id");
    let ts: u64 = header(r, "webhook-timestamp").parse().unwrap();
    let sig = ferry_push::sign::sign(secret, &id, ts, &r.body).unwrap();
    header(r, "webhook-signature").split(' ').any(|s| s == sig)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_subscriptions_are_managed_from_the_command_line() {
    let ep = Endpoint::start().await;
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--push-allow-private"]);
    let url = s.url.as_str();
    stdout(&ferry(url, &["topic", "create", "orders", "-p", "1"]));
    let hook = ep.url();

    // Other --push-* flags need --push-url; bad values are refused before sending.
    let bad = ferry(
        url,
        &[
            "sub",
            "create",
            "x",
            "--topic",
            "orders",
            "--push-timeout-ms",
            "2000",
        ],
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--push-url is required"));

    let out = stdout(&ferry(
        url,
        &[
            "sub",
            "create",
            "hook",
            "--topic",
            "orders",
            "--start",
            "earliest",
            "--push-url",
            &hook,
            "--push-header",
            "X-Team: billing",
            "--push-concurrency",
            "4",
            "--push-breaker",
            r#"{"cooldown_ms": 5000}"#,
        ],
    ));
    assert!(
        out.contains(&format!(
            "Created push subscription hook on topic orders: POST {hook}."
        )),
        "{out}"
    );
    let secret = shown_secret(&out);
    assert!(secret.starts_with("whsec_"), "{out}");

    // With --json the answer is printed as it is, the secret in it.
    stdout(&ferry(url, &["topic", "create", "other"]));
    let created: Value = serde_json::from_str(&stdout(&ferry(
        url,
        &[
            "sub",
            "create",
            "hook2",
            "--topic",
            "other",
            "--push-url",
            &hook,
            "--json",
        ],
    )))
    .unwrap();
    assert_eq!(created["push"]["secret_shown_once"], true, "{created}");
    assert!(created["push"]["secret"]
        .as_str()
        .unwrap()
        .starts_with("whsec_"));
    stdout(&ferry(url, &["sub", "delete", "hook2"]));

    // A record is pushed, signed with the printed secret.
    stdout(&ferry(url, &["produce", "orders", "--value", "first"]));
    ep.wait_for("the first delivery", Duration::from_secs(10), |r| {
        r.len() == 1
    })
    .await;
    let first = ep.received().remove(0);
    assert_eq!(&first.body[..], b"first");
    assert_eq!(header(&first, "x-team"), "billing");
    assert!(signed_with(&first, &secret));

    // The delivery log shows the attempt.
    let deadline = Instant::now() + Duration::from_secs(10);
    let table = loop {
        let t = stdout(&ferry(url, &["sub", "deliveries", "hook"]));
        if t.lines().count() >= 2 {
            break t;
        }
        assert!(Instant::now() < deadline, "no delivery logged: {t}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("TIME") && lines[0].contains("OUTCOME"),
        "{table}"
    );
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert!(row[0].ends_with('Z'), "{table}");
    assert_eq!(row[1..6], ["0", "0", "1", "delivered", "200"], "{table}");
    assert!(row[6].parse::<u64>().is_ok() && row[7] == "-", "{table}");
    let one: Value = serde_json::from_str(&stdout(&ferry(
        url,
        &[
            "sub",
            "deliveries",
            "hook",
            "-p",
            "0",
            "-o",
            "0",
            "-n",
            "5",
            "--json",
        ],
    )))
    .unwrap();
    assert_eq!(one["deliveries"][0]["outcome"], "delivered", "{one}");
    assert_eq!(one["deliveries"][0]["status"], 200, "{one}");

    // Pause, and describe says so; with the push settings and the dispatcher's state.
    let out = stdout(&ferry(url, &["sub", "pause", "hook"]));
    assert!(out.contains("Paused subscription hook"), "{out}");
    let described = stdout(&ferry(url, &["sub", "describe", "hook"]));
    let has = |k: &str, v: &str| {
        described
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == [k, v])
    };
    assert!(has("paused", "true"), "{described}");
    assert!(has("push.url", &hook), "{described}");
    assert!(has("push.concurrency", "4"), "{described}");
    assert!(has("push_status.delivered", "1"), "{described}");
    assert!(
        described.contains("push.headers") && described.contains("X-Team: billing"),
        "{described}"
    );
    assert!(
        !described.contains(&secret),
        "the secret is never shown again"
    );
    let out = stdout(&ferry(url, &["sub", "resume", "hook"]));
    assert!(out.contains("Resumed subscription hook"), "{out}");

    // A manual retry sends the record again.
    let out = stdout(&ferry(
        url,
        &["sub", "retry", "hook", "--partition", "0", "--offset", "0"],
    ));
    assert!(out.contains("partition 0 offset 0"), "{out}");
    ep.wait_for("the retried record", Duration::from_secs(10), |r| {
        r.len() == 2
    })
    .await;
    assert_eq!(&ep.received()[1].body[..], b"first");

    // A new secret, printed once.
    let out = stdout(&ferry(url, &["sub", "rotate-secret", "hook"]));
    assert!(out.contains("the previous one also signs until"), "{out}");
    let new_secret = shown_secret(&out);
    assert!(
        new_secret.starts_with("whsec_") && new_secret != secret,
        "{out}"
    );

    // Changing one push setting keeps the others, and the stored secret.
    let updated = stdout(&ferry(
        url,
        &["sub", "update", "hook", "--push-timeout-ms", "2000"],
    ));
    assert!(updated.contains("push.timeout_ms"), "{updated}");
    let d: Value =
        serde_json::from_str(&stdout(&ferry(url, &["sub", "describe", "hook", "--json"]))).unwrap();
    assert_eq!(d["push"]["timeout_ms"], 2000, "{d}");
    assert_eq!(d["push"]["concurrency"], 4, "{d}");
    assert_eq!(d["push"]["headers"]["X-Team"], "billing", "{d}");
    assert_eq!(d["push"]["breaker"]["cooldown_ms"], 5000, "{d}");
    stdout(&ferry(url, &["produce", "orders", "--value", "second"]));
    ep.wait_for(
        "the record after the update",
        Duration::from_secs(10),
        |r| r.len() == 3,
    )
    .await;
    let third = ep.received().remove(2);
    assert_eq!(&third.body[..], b"second");
    assert!(signed_with(&third, &new_secret));

    // A queue subscription has no push settings to change.
    stdout(&ferry(url, &["sub", "create", "q", "--topic", "orders"]));
    let bad = ferry(url, &["sub", "update", "q", "--push-timeout-ms", "2000"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a push subscription"));
}

#[test]
fn a_decompression_budget_below_one_mebibyte_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--decompress-memory-bytes", "4096", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("decompress_memory_bytes must be at least 1048576, got 4096"),
        "{err}"
    );
}
