//! Postgres sources through the real binary against a real PostgreSQL (see
//! common/pg.rs): every kind of change checked field by field in Debezium's envelope,
//! the outbox and logical decoding messages, a snapshot under concurrent writes, a
//! webhook fed by an INSERT, and the API's and CLI's answers.

mod common;
use common::endpoint::Endpoint;
use common::pg::{self, create_source, describe, fresh_db, wait_records, wait_state};
use common::*;

use serde_json::{json, Value};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn value(r: &Value) -> &Value {
    &r["value"]
}

fn header<'a>(r: &'a Value, name: &str) -> &'a str {
    r["headers"][name].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_change_arrives_in_debezium_envelopes_field_by_field() {
    let Some(base) = pg::base_url() else { return };
    let (url, db) = fresh_db(&base, "src_kinds").await;
    db.batch_execute(
        "CREATE TABLE kinds (
            id int PRIMARY KEY, b bool, i2 smallint, i8 bigint, f8 float8, num numeric(10,3),
            t text, vc varchar(10), ts timestamp, tstz timestamptz, d date, tm time,
            j jsonb, by bytea, u uuid, arr int[], tarr text[], nothing text,
            ts3 timestamp(3), tm0 time(0));
         INSERT INTO kinds (id, t) VALUES (1, 'before the source');
         CREATE TABLE toast_default (id int PRIMARY KEY, big text, n int);
         ALTER TABLE toast_default ALTER COLUMN big SET STORAGE EXTERNAL;
         CREATE TABLE toast_full (id int PRIMARY KEY, big text, n int);
         ALTER TABLE toast_full ALTER COLUMN big SET STORAGE EXTERNAL;
         ALTER TABLE toast_full REPLICA IDENTITY FULL;
         CREATE TABLE many (id int PRIMARY KEY, v text);
         CREATE TABLE nokey (v text);",
    )
    .await
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let ferry = &server.url;
    let created = create_source(
        ferry,
        json!({"name": "kinds", "url": url, "topic_partitions": 1}),
    )
    .await;
    assert_eq!(created["url"], json!(url.replace(":ferry@", ":***@")));
    assert_eq!(created["slot"], "ferry_kinds");
    wait_state(ferry, "kinds", "streaming", WAIT).await;

    // The row that was there first, read by the snapshot.
    let topic = "kinds.public.kinds";
    let snap = wait_records(ferry, topic, 0, 1, WAIT).await;
    assert_eq!(value(&snap[0])["op"], "r");
    assert_eq!(value(&snap[0])["after"]["t"], "before the source");
    assert_eq!(value(&snap[0])["source"]["snapshot"], "true");
    assert_eq!(snap[0]["key"], r#"{"id":1}"#);

    db.batch_execute(
        "INSERT INTO kinds VALUES (2, true, -7, 9007199254740993, 1.5, 12.345, 'text é',
            'short', '2026-12-06 08:30:00.123456', '2026-12-06 08:30:00.5+02', '2024-02-29',
            '13:14:15.000016', '{\"a\": [1, 2]}', '\\x000102ff',
            'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{1,NULL,3}', '{\"a b\",c}', NULL,
            '2026-12-06 08:30:00.123', '13:14:15')",
    )
    .await
    .unwrap();
    let recs = wait_records(ferry, topic, 0, 2, WAIT).await;
    let v = value(&recs[1]);
    assert_eq!(v["op"], "c");
    assert_eq!(v["before"], Value::Null);
    assert_eq!(
        v["after"],
        json!({
            "id": 2, "b": true, "i2": -7, "i8": 9007199254740993_i64, "f8": 1.5,
            "num": "12.345", "t": "text é", "vc": "short",
            "ts": 1796545800123456_i64, "tstz": "2026-12-06T06:30:00.5Z",
            "d": 19782, "tm": 47655000016_i64, "j": "{\"a\": [1, 2]}", "by": "AAEC/w==",
            "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "arr": [1, null, 3],
            "tarr": ["a b", "c"], "nothing": null,
            "ts3": 1796545800123_i64, "tm0": 47655000
        })
    );
    let src = &v["source"];
    assert_eq!(src["connector"], "postgresql");
    assert_eq!(src["db"], "src_kinds");
    assert_eq!(src["schema"], "public");
    assert_eq!(src["table"], "kinds");
    assert_eq!(src["snapshot"], "false");
    assert!(src["lsn"].as_u64().unwrap() > 0, "{src}");
    assert!(src["txId"].as_u64().unwrap() > 0, "{src}");
    assert!(v["ts_ms"].as_i64().unwrap() >= src["ts_ms"].as_i64().unwrap());
    assert_eq!(header(&recs[1], "ferry.source"), "kinds");

    // Update (default identity: no before), delete (the key in before), tombstone.
    db.batch_execute(
        "UPDATE kinds SET t = 'changed' WHERE id = 2; DELETE FROM kinds WHERE id = 2;",
    )
    .await
    .unwrap();
    let recs = wait_records(ferry, topic, 0, 5, WAIT).await;
    assert_eq!(value(&recs[2])["op"], "u");
    assert_eq!(value(&recs[2])["before"], Value::Null);
    assert_eq!(value(&recs[2])["after"]["t"], "changed");
    assert_eq!(value(&recs[3])["op"], "d");
    assert_eq!(value(&recs[3])["before"]["id"], 2);
    assert_eq!(value(&recs[3])["before"]["t"], Value::Null);
    assert_eq!(value(&recs[3])["after"], Value::Null);
    assert_eq!(recs[4]["key"], r#"{"id":2}"#);
    assert_eq!(recs[4]["value"], Value::Null, "the tombstone");
    // One transaction: one commit LSN, positions in order, each change its own LSN,
    // a delete and its tombstone one change.
    assert_eq!(
        value(&recs[2])["source"]["lsn"],
        value(&recs[3])["source"]["lsn"]
    );
    let pos = |r: &Value| {
        ferry_source_pg::envelope::Position::parse(header(r, "ferry.source.position")).unwrap()
    };
    let (u, d, t) = (pos(&recs[2]), pos(&recs[3]), pos(&recs[4]));
    assert!(u < d && d < t, "{u:?} {d:?} {t:?}");
    assert!(
        u.change < d.change && u.sub == 0 && d.sub == 0,
        "{u:?} {d:?}"
    );
    assert_eq!((t.change, t.sub), (d.change, 1));

    // A new column mid-stream, then a key change (delete old key, create new).
    db.batch_execute(
        "ALTER TABLE kinds ADD COLUMN extra text DEFAULT 'x';
         INSERT INTO kinds (id) VALUES (3);
         UPDATE kinds SET id = 4 WHERE id = 3;",
    )
    .await
    .unwrap();
    let recs = wait_records(ferry, topic, 0, 9, WAIT).await;
    assert_eq!(value(&recs[5])["after"]["extra"], "x");
    assert_eq!(value(&recs[6])["op"], "d");
    assert_eq!(recs[6]["key"], r#"{"id":3}"#);
    assert_eq!(recs[7]["value"], Value::Null);
    assert_eq!(value(&recs[8])["op"], "c");
    assert_eq!(recs[8]["key"], r#"{"id":4}"#);

    // Truncate.
    db.batch_execute("TRUNCATE kinds").await.unwrap();
    let recs = wait_records(ferry, topic, 0, 10, WAIT).await;
    assert_eq!(value(&recs[9])["op"], "t");
    assert_eq!(value(&recs[9])["source"]["table"], "kinds");

    // TOASTed values: an update that leaves them alone. Under the default identity the
    // value is not sent and is marked; under FULL it comes from the old row.
    let big: String = (0..12_000)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    for t in ["toast_default", "toast_full"] {
        db.execute(&format!("INSERT INTO {t} VALUES (1, $1, 0)"), &[&big])
            .await
            .unwrap();
        db.batch_execute(&format!("UPDATE {t} SET n = 1 WHERE id = 1"))
            .await
            .unwrap();
    }
    let d = wait_records(ferry, "kinds.public.toast_default", 0, 2, WAIT).await;
    assert_eq!(value(&d[0])["after"]["big"], json!(big));
    assert_eq!(value(&d[1])["after"]["big"], "__debezium_unavailable_value");
    assert_eq!(value(&d[1])["after"]["n"], 1);
    let f = wait_records(ferry, "kinds.public.toast_full", 0, 2, WAIT).await;
    assert_eq!(value(&f[1])["after"]["big"], json!(big));
    assert_eq!(value(&f[1])["before"]["big"], json!(big));
    assert_eq!(value(&f[1])["before"]["n"], 0);

    // A transaction of many rows: all of them, in order; a table without a key.
    db.batch_execute(
        "BEGIN; INSERT INTO many SELECT g, 'row ' || g FROM generate_series(1, 5000) g;
         INSERT INTO nokey VALUES ('free'); COMMIT;",
    )
    .await
    .unwrap();
    let m = wait_records(ferry, "kinds.public.many", 0, 5000, WAIT).await;
    assert_eq!(m.len(), 5000);
    for (i, r) in m.iter().enumerate() {
        assert_eq!(value(r)["after"]["id"], i as u64 + 1);
    }
    let lsns: std::collections::BTreeSet<String> = m
        .iter()
        .map(|r| value(r)["source"]["lsn"].to_string())
        .collect();
    assert_eq!(lsns.len(), 1, "one transaction, one commit LSN");
    let n = wait_records(ferry, "kinds.public.nokey", 0, 1, WAIT).await;
    assert_eq!(n[0]["key"], Value::Null);

    let d = describe(ferry, "kinds").await;
    assert_eq!(d["status"]["state"], "streaming");
    assert!(d["status"]["records"].as_u64().unwrap() >= 5000, "{d}");
    assert_eq!(d["snapshot_done"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_table_and_logical_messages_publish_only_committed_events() {
    let Some(base) = pg::base_url() else { return };
    let (url, db) = fresh_db(&base, "src_outbox").await;
    db.batch_execute(
        "CREATE TABLE orders (id int PRIMARY KEY, total int);
         CREATE TABLE outbox (id uuid PRIMARY KEY, aggregatetype text NOT NULL,
            aggregateid text NOT NULL, type text NOT NULL, payload jsonb);",
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let ferry = &server.url;
    create_source(
        ferry,
        json!({"name": "outboxed", "url": url, "snapshot": "never",
               "outbox": {"table": "public.outbox"}, "topic_partitions": 1}),
    )
    .await;
    wait_state(ferry, "outboxed", "streaming", WAIT).await;

    // Rolled back: nothing. Committed: the order's change and its event.
    db.batch_execute(
        "BEGIN;
         INSERT INTO orders VALUES (41, 5);
         INSERT INTO outbox VALUES ('00000000-0000-0000-0000-000000000041', 'order', '41', 'OrderCreated', '{\"total\": 5}');
         SELECT pg_logical_emit_message(true, 'billing', '{\"order\": 41}');
         ROLLBACK;
         SELECT pg_logical_emit_message(false, 'billing', '{\"untransactional\": true}');
         BEGIN;
         INSERT INTO orders VALUES (42, 7);
         INSERT INTO outbox VALUES ('00000000-0000-0000-0000-000000000042', 'order', '42', 'OrderCreated', '{\"total\": 7}');
         SELECT pg_logical_emit_message(true, 'billing', '{\"order\": 42}');
         COMMIT;",
    )
    .await
    .unwrap();
    let events = wait_records(ferry, "outbox.event.order", 0, 1, WAIT).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e["key"], "42");
    assert_eq!(e["value"], json!({"total": 7}));
    assert_eq!(header(e, "id"), "00000000-0000-0000-0000-000000000042");
    assert_eq!(header(e, "type"), "OrderCreated");
    let msgs = wait_records(ferry, "outboxed.messages", 0, 1, WAIT).await;
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_eq!(msgs[0]["value"], json!({"order": 42}));
    assert_eq!(header(&msgs[0], "ferry.pg.prefix"), "billing");
    let orders = wait_records(ferry, "outboxed.public.orders", 0, 1, WAIT).await;
    assert_eq!(orders.len(), 1);
    assert_eq!(value(&orders[0])["after"]["id"], 42);
    // The outbox table's own rows are not change events.
    let (s, _) = call(http().get(format!("{ferry}/v1/topics/outboxed.public.outbox"))).await;
    assert_eq!(s, 404);
    // An event whose type makes an invalid topic name is skipped and counted.
    db.batch_execute(
        "INSERT INTO outbox VALUES ('00000000-0000-0000-0000-000000000043', 'bad type/!', '43', 'X', '{}');
         INSERT INTO outbox VALUES ('00000000-0000-0000-0000-000000000044', 'order', '44', 'OrderCreated', '{\"total\": 9}');",
    )
    .await
    .unwrap();
    let events = wait_records(ferry, "outbox.event.order", 0, 2, WAIT).await;
    assert_eq!(events[1]["key"], "44");
    let d = describe(ferry, "outboxed").await;
    assert_eq!(d["status"]["skipped"], 1, "{d}");
    assert!(
        d["status"]["last_error"]
            .as_str()
            .unwrap()
            .contains("bad type/!"),
        "{d}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_under_concurrent_writes_misses_and_doubles_no_row() {
    let Some(base) = pg::base_url() else { return };
    let (url, db) = fresh_db(&base, "src_snapshot").await;
    db.batch_execute(
        "CREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL);
         INSERT INTO accounts SELECT g, 0 FROM generate_series(1, 20000) g;",
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let ferry = server.url.clone();

    // A writer changes rows (updates, inserts, deletes) while the snapshot is read.
    let writer = pg::Writer::start(&url, |i| {
        format!(
            "BEGIN; UPDATE accounts SET balance = balance + 1 WHERE id = {};
             INSERT INTO accounts VALUES ({}, {i}) ON CONFLICT DO NOTHING;
             DELETE FROM accounts WHERE id = {}; COMMIT;",
            i * 7919 % 20000 + 1,
            20000 + i,
            20000 + i - 5,
        )
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    create_source(
        &ferry,
        json!({"name": "snap", "url": url, "topic_partitions": 1, "tombstones": false}),
    )
    .await;
    wait_state(&ferry, "snap", "streaming", Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let writes = writer.stop().await;
    assert!(writes > 10, "the writer ran during the snapshot ({writes})");

    // Everything committed is captured; a consumer rebuilds the table exactly.
    let recs = pg::caught_up_records(&ferry, "snap", &db, "snap.public.accounts").await;
    let (rebuilt, reads) = pg::rebuild(&recs);
    assert!(reads.values().all(|n| *n == 1), "a row read twice");
    let table = pg::table_rows(&db, "accounts").await;
    assert_eq!(rebuilt.len(), table.len());
    assert!(rebuilt == table, "the topic rebuilds the table exactly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insert_in_postgres_reaches_a_webhook_signed_through_an_outage() {
    let Some(base) = pg::base_url() else { return };
    let (url, db) = fresh_db(&base, "src_hook").await;
    db.batch_execute("CREATE TABLE signups (id int PRIMARY KEY, email text)")
        .await
        .unwrap();
    let mut ep = Endpoint::start().await;
    ep.down().await;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--push-allow-private"]);
    let ferry = &server.url;
    create_source(
        ferry,
        json!({"name": "app", "url": url, "tables": ["public.signups"], "topic_partitions": 1}),
    )
    .await;
    wait_state(ferry, "app", "streaming", WAIT).await;
    // The topic exists once the source wrote to it; make it now for the subscription.
    create_topic(
        ferry,
        json!({"name": "app.public.signups", "partitions": 1}),
    )
    .await;
    let sub = create_subscription(
        ferry,
        json!({"name": "welcome", "topic": "app.public.signups", "start": "earliest",
               "max_deliveries": 0, "retry": {"strategy": "fixed", "delay_ms": 200},
               "push": {"url": ep.url()}}),
    )
    .await;
    let secret = sub["push"]["secret"].as_str().unwrap().to_string();
    db.batch_execute("INSERT INTO signups VALUES (1, 'ada@example.com')")
        .await
        .unwrap();
    // Ferry retries while the endpoint is down; then it comes back.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    ep.up().await;
    ep.wait_for("the delivery", WAIT, |r| {
        r.iter().any(|x| x.answered == 200)
    })
    .await;
    let got = ep.received();
    let ok = got.iter().find(|r| r.answered == 200).unwrap();
    let body: Value = serde_json::from_slice(&ok.body).unwrap();
    assert_eq!(body["op"], "c");
    assert_eq!(body["after"]["email"], "ada@example.com");
    let h = |n: &str| ok.headers.get(n).unwrap().to_str().unwrap().to_string();
    let attempt: u32 = h("ferry-attempt").parse().unwrap();
    assert!(attempt > 1, "delivered after retries (attempt {attempt})");
    assert_eq!(
        h("webhook-signature"),
        ferry_push::sign::sign(
            &secret,
            &h("webhook-id"),
            h("webhook-timestamp").parse().unwrap(),
            &ok.body
        )
        .unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_are_managed_over_http_and_the_command_line_with_clear_errors() {
    let Some(base) = pg::base_url() else { return };
    let (url, db) = fresh_db(&base, "src_api").await;
    db.batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let ferry = &server.url;
    let post = |body: Value| {
        let ferry = ferry.clone();
        async move { call(http().post(format!("{ferry}/v1/sources")).json(&body)).await }
    };
    for (body, status, kind, says) in [
        (
            json!({"name": "Bad Name", "url": url}),
            400,
            "invalid-source",
            "source name",
        ),
        (
            json!({"name": "a", "url": "mysql://x@h/d"}),
            400,
            "invalid-source",
            "postgres://",
        ),
        (
            json!({"name": "a", "url": url, "tables": ["public.nope"]}),
            400,
            "invalid-source",
            "does not exist",
        ),
        (
            json!({"name": "a", "url": url, "operations": ["x"]}),
            400,
            "invalid-source",
            "operation",
        ),
        (
            json!({"name": "a", "url": url, "surprise": 1}),
            400,
            "invalid-json",
            "surprise",
        ),
        (
            json!({"name": "a", "url": url.replace(":ferry@", ":wrong@")}),
            422,
            "source-unreachable",
            "password",
        ),
        (
            json!({"name": "a", "url": "postgres://u:p@127.0.0.1:1/d"}),
            422,
            "source-unreachable",
            "",
        ),
    ] {
        let (s, v) = post(body.clone()).await;
        assert_eq!(s, status, "{body} -> {v}");
        assert_eq!(v["type"], format!("urn:ferry:problem:{kind}"), "{v}");
        assert!(v["detail"].as_str().unwrap().contains(says), "{v}");
    }
    create_source(ferry, json!({"name": "a", "url": url, "snapshot": "never"})).await;
    let (s, v) = post(json!({"name": "a", "url": url})).await;
    assert_eq!(
        (s, v["type"].as_str().unwrap()),
        (409, "urn:ferry:problem:source-exists")
    );
    let (s, v) = post(json!({"name": "b", "url": url, "slot": "ferry_a"})).await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["detail"].as_str().unwrap().contains("already used"),
        "{v}"
    );
    wait_state(ferry, "a", "streaming", WAIT).await;

    // Its metrics (the slot's state is read as the stream starts, and then every 5 s).
    let until = std::time::Instant::now() + WAIT;
    loop {
        let metrics = http()
            .get(format!("{ferry}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let missing: Vec<&str> = [
            "ferry_source_streaming{source=\"a\"} 1",
            "ferry_source_slot_wal_warning{source=\"a\"} 0",
            "ferry_source_records_total{source=\"a\"}",
            "ferry_source_lag_seconds{source=\"a\"}",
            "ferry_source_slot_wal_bytes{source=\"a\"}",
        ]
        .into_iter()
        .filter(|line| !metrics.contains(line))
        .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "{missing:?} not in {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The command line: list, describe, update, pause, resume, delete.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(BIN)
            .args(args)
            .args(["--url", ferry])
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, _) = cli(&["source", "list"]);
    assert_eq!(code, 0);
    assert!(out.contains("streaming"), "{out}");
    let (code, out, _) = cli(&["source", "describe", "a"]);
    assert_eq!(code, 0);
    assert!(out.contains("ferry_a") && !out.contains(":ferry@"), "{out}");
    let (code, _, err) = cli(&["source", "describe", "nope"]);
    assert_ne!(code, 0);
    assert!(err.contains("does not exist"), "{err}");
    let (code, out, _) = cli(&["source", "update", "a", "--format", "cloudevents", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["format"],
        "cloudevents"
    );
    wait_state(ferry, "a", "streaming", WAIT).await;
    db.batch_execute("INSERT INTO t VALUES (1)").await.unwrap();
    let r = wait_records(ferry, "a.public.t", 0, 1, WAIT).await;
    assert_eq!(header(&r[0], "ce_specversion"), "1.0");
    assert_eq!(header(&r[0], "ce_type"), "ferry.postgres.public.t.created");
    assert_eq!(header(&r[0], "ce_source"), "/ferry/sources/a");
    assert_eq!(value(&r[0])["op"], "c");

    let (code, _, _) = cli(&["source", "pause", "a"]);
    assert_eq!(code, 0);
    assert_eq!(describe(ferry, "a").await["status"]["state"], "paused");
    db.batch_execute("INSERT INTO t VALUES (2)").await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, v) = call(http().get(format!(
        "{ferry}/v1/topics/a.public.t/partitions/0/records?offset=0"
    )))
    .await;
    assert_eq!(v["records"].as_array().unwrap().len(), 1, "paused: {v}");
    let (code, _, _) = cli(&["source", "resume", "a"]);
    assert_eq!(code, 0);
    wait_records(ferry, "a.public.t", 0, 2, WAIT).await;

    // A backfill from the command line: the rows again, as reads.
    let (code, out, err) = cli(&["source", "backfill", "a", "--table", "public.t", "--json"]);
    assert_eq!(code, 0, "{err}");
    let id = serde_json::from_str::<Value>(&out).unwrap()["id"].clone();
    let r = wait_records(ferry, "a.public.t", 0, 4, WAIT).await;
    assert_eq!(value(&r[2])["op"], "r");
    assert_eq!(value(&r[3])["op"], "r");
    let (code, out, _) = cli(&["source", "describe", "a"]);
    assert_eq!(code, 0);
    assert!(out.contains(&format!("backfill {id}")), "{out}");

    // A restart resumes streaming where it was.
    drop(server);
    let server = Server::start(dir.path(), &[]);
    let ferry = &server.url;
    wait_state(ferry, "a", "streaming", WAIT).await;
    db.batch_execute("INSERT INTO t VALUES (3)").await.unwrap();
    let r = wait_records(ferry, "a.public.t", 0, 5, WAIT).await;
    assert_eq!(r.len(), 5, "nothing written twice across the restart");
    assert_eq!(value(&r[4])["after"]["id"], 3);

    // An idle database does not hold WAL back: while only another database writes,
    // Postgres's keepalives let the slot's confirmed position follow the WAL's end.
    let other = pg::connect(&base).await;
    other
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS busy (v text);
             INSERT INTO busy SELECT repeat('x', 1000) FROM generate_series(1, 5000);",
        )
        .await
        .unwrap();
    let end: String = other
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    let end = ferry_source_pg::envelope::parse_lsn(&end).unwrap();
    let until = std::time::Instant::now() + WAIT;
    loop {
        let confirmed: String = db
            .query_one(
                "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'ferry_a'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if ferry_source_pg::envelope::parse_lsn(&confirmed).unwrap() >= end {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "the slot stayed at {confirmed} behind {end}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    other.batch_execute("DROP TABLE busy").await.unwrap();

    // A slot holding more WAL than allowed is warned about.
    let (s, v) = call(
        http()
            .patch(format!("{ferry}/v1/sources/a"))
            .json(&json!({"max_slot_wal_bytes": 1})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let until = std::time::Instant::now() + WAIT;
    while describe(ferry, "a").await["status"]["slot_wal_warning"] != true {
        assert!(std::time::Instant::now() < until, "no warning");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let slots = || async {
        db.query_one(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'ferry_a'",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
    };
    assert_eq!(slots().await, 1);
    let (s, _) = call(http().delete(format!("{ferry}/v1/sources/a"))).await;
    assert_eq!(s, 204);
    assert_eq!(slots().await, 0, "deleting the source drops its slot");
    let pubs: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_publication WHERE pubname = 'ferry_a'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(pubs, 0, "and the publication Ferry made");
    let (s, v) = call(http().get(format!("{ferry}/v1/sources/a"))).await;
    assert_eq!(
        (s, v["type"].as_str().unwrap()),
        (404, "urn:ferry:problem:source-not-found")
    );
    // The file of sources is private: its URLs hold passwords.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("sources.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_can_have_its_own_row_filter_topic_and_key() {
    let Some(base) = pg::base_url() else { return };
    let (url, db) = fresh_db(&base, "src_tables").await;
    db.batch_execute(
        "CREATE TABLE orders (id int PRIMARY KEY, customer text, status text);
         ALTER TABLE orders REPLICA IDENTITY FULL;
         INSERT INTO orders VALUES (1, 'ann', 'paid'), (2, 'bob', 'open');
         CREATE TABLE other (id int PRIMARY KEY);",
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let ferry = &server.url;
    let (s, v) = call(http().post(format!("{ferry}/v1/sources")).json(&json!({
        "name": "paid", "url": url,
        "tables": [{"table": "public.orders", "where": "status = 'paid'", "key": ["nope"]}]
    })))
    .await;
    assert_eq!(s, 400, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("'nope'"), "{v}");
    // Made from the command line; its flags name the table's settings.
    let cli = |extra: &[&str]| {
        let mut args = vec![
            "source",
            "create",
            "paid",
            "--pg-url",
            &url,
            "--table",
            "public.orders",
            "--topic-partitions",
            "1",
            "--tombstones",
            "false",
            "--json",
            "--url",
            ferry,
        ];
        args.extend_from_slice(extra);
        std::process::Command::new(BIN)
            .args(&args)
            .output()
            .unwrap()
    };
    let out = cli(&["--table-where", "public.other=true"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--table public.other"),
        "{out:?}"
    );
    let out = cli(&[
        "--table-where",
        "public.orders=status = 'paid'",
        "--table-topic",
        "public.orders=paid-orders",
        "--table-key",
        "public.orders=customer",
    ]);
    assert!(out.status.success(), "{out:?}");
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        created["tables"],
        json!([{"table": "public.orders", "where": "status = 'paid'",
                "topic": "paid-orders", "key": ["customer"]}])
    );
    wait_state(ferry, "paid", "streaming", WAIT).await;
    db.batch_execute(
        "INSERT INTO orders VALUES (3, 'cy', 'open'), (4, 'dee', 'paid');
         INSERT INTO other VALUES (1);
         DELETE FROM orders WHERE id = 4;",
    )
    .await
    .unwrap();
    let recs = wait_records(ferry, "paid-orders", 0, 3, WAIT).await;
    let seen: Vec<(String, String)> = recs
        .iter()
        .map(|r| {
            (
                value(r)["op"].as_str().unwrap().to_string(),
                r["key"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("r".to_string(), r#"{"customer":"ann"}"#.to_string()),
            ("c".into(), r#"{"customer":"dee"}"#.into()),
            ("d".into(), r#"{"customer":"dee"}"#.into()),
        ],
        "only paid orders, keyed by customer, in their own topic"
    );
    // Tables the source does not name are not captured.
    let (s, _) = call(http().get(format!("{ferry}/v1/topics/paid.public.other"))).await;
    assert_eq!(s, 404);

    // A backfill reads only the rows the table's filter lets through.
    db.batch_execute("INSERT INTO orders VALUES (5, 'eve', 'paid'), (6, 'fay', 'open')")
        .await
        .unwrap();
    let (s, v) = call(
        http()
            .post(format!("{ferry}/v1/sources/paid/backfills"))
            .json(&json!({"table": "public.orders"})),
    )
    .await;
    assert_eq!(s, 202, "{v}");
    let recs = wait_records(ferry, "paid-orders", 0, 6, WAIT).await;
    let read: Vec<&str> = recs[4..]
        .iter()
        .map(|r| {
            assert_eq!(value(r)["op"], "r");
            r["key"].as_str().unwrap()
        })
        .collect();
    assert_eq!(read, [r#"{"customer":"ann"}"#, r#"{"customer":"eve"}"#]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_under_concurrent_writes_never_overwrites_a_newer_change() {
    let Some(base) = pg::base_url() else { return };
    let (url, db) = fresh_db(&base, "src_backfill").await;
    db.batch_execute(
        "CREATE TABLE items (id int PRIMARY KEY, n int NOT NULL, kind text NOT NULL);
         INSERT INTO items SELECT g, 0, CASE WHEN g % 2 = 0 THEN 'even' ELSE 'odd' END
           FROM generate_series(1, 6000) g;",
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let ferry = server.url.clone();
    create_source(
        &ferry,
        json!({"name": "bf", "url": url, "snapshot": "never", "topic_partitions": 1,
               "tombstones": false}),
    )
    .await;
    wait_state(&ferry, "bf", "streaming", WAIT).await;
    let post = |body: Value| {
        let ferry = ferry.clone();
        async move {
            call(
                http()
                    .post(format!("{ferry}/v1/sources/bf/backfills"))
                    .json(&body),
            )
            .await
        }
    };
    let (s, v) = post(json!({"table": "public.nope"})).await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = post(json!({"table": "items", "where": "kind = 'even') OR (true"})).await;
    assert_eq!(
        s, 400,
        "a condition cannot close the parentheses it is put in: {v}"
    );
    let (s, v) = post(json!({"table": "items", "where": "kind = 'even'"})).await;
    assert_eq!(s, 202, "{v}");
    let (s, v) = call(http().delete(format!("{ferry}/v1/sources/bf/backfills/{}", v["id"]))).await;
    assert_eq!((s, v["state"].as_str().unwrap()), (200, "cancelled"), "{v}");
    let (s, v) = call(http().delete(format!("{ferry}/v1/sources/bf/backfills/99"))).await;
    assert_eq!(s, 404, "{v}");
    assert_eq!(v["type"], "urn:ferry:problem:backfill-not-found");

    // A writer changes, adds and removes rows while the backfill reads them.
    let writer = pg::Writer::start(&url, |i| {
        format!(
            "UPDATE items SET n = n + 1 WHERE id = {};
             INSERT INTO items VALUES ({}, 1, 'new');
             DELETE FROM items WHERE id = {};",
            i * 37 % 6000 + 1,
            6000 + i,
            i * 53 % 6000 + 1
        )
    });
    let (s, v) = post(json!({"table": "public.items"})).await;
    assert_eq!(s, 202, "{v}");
    let id = v["id"].as_u64().unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let d = describe(&ferry, "bf").await;
        let b = d["backfills"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["id"] == id)
            .cloned()
            .unwrap();
        if b["state"] == "done" {
            break;
        }
        assert_ne!(b["state"], "failed", "{b}");
        assert!(std::time::Instant::now() < until, "{b}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    writer.stop().await;
    // Everything committed is captured; a consumer rebuilds the table exactly.
    let recs = pg::caught_up_records(&ferry, "bf", &db, "bf.public.items").await;
    for r in recs.iter().filter(|r| value(r)["op"] == "r") {
        assert_eq!(value(r)["source"]["snapshot"], "incremental");
    }
    let (rebuilt, reads) = pg::rebuild(&recs);
    // Rows the writer changed during their chunk are left to the stream; the rest are
    // read (on a slow machine the writer changes more of them).
    assert!(
        reads.len() >= 1000,
        "the backfill wrote the rows ({})",
        reads.len()
    );
    let table = pg::table_rows(&db, "items").await;
    assert_eq!(rebuilt.len(), table.len());
    assert!(rebuilt == table, "the topic rebuilds the table exactly");
    let d = describe(&ferry, "bf").await;

    // A backfill with a condition writes only the rows that meet it.
    let before = d["status"]["records"].as_u64().unwrap();
    let (s, v) = post(json!({"table": "items", "where": "id <= 10 AND kind = 'even'"})).await;
    assert_eq!(s, 202, "{v}");
    let until = std::time::Instant::now() + WAIT;
    loop {
        let d = describe(&ferry, "bf").await;
        let b = d["backfills"].as_array().unwrap().last().cloned().unwrap();
        if b["state"] == "done" {
            let evens = table.keys().filter(|k| **k <= 10 && **k % 2 == 0).count() as u64;
            assert_eq!(b["rows"].as_u64().unwrap(), evens, "{b}");
            assert_eq!(d["status"]["records"].as_u64().unwrap(), before + evens);
            break;
        }
        assert!(std::time::Instant::now() < until, "{b}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The source and its backfills have the members the OpenAPI document lists.
    let (_, doc) = call(http().get(format!("{ferry}/v1/openapi.json"))).await;
    let d = describe(&ferry, "bf").await;
    assert_documented_members(&doc, "Source", &d);
    let backfills = d["backfills"].as_array().unwrap();
    assert_eq!(backfills.len(), 3, "{d}");
    for b in backfills {
        assert_documented_members(&doc, "Backfill", b);
    }
}

/// `object` has exactly the members the document's schema `name` lists, and the
/// schema requires them all.
fn assert_documented_members(doc: &Value, name: &str, object: &Value) {
    use std::collections::BTreeSet;
    let schema = &doc["components"]["schemas"][name];
    let listed: BTreeSet<&str> = schema["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("schema {name}"))
        .keys()
        .map(String::as_str)
        .collect();
    let required: BTreeSet<&str> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let given: BTreeSet<&str> = object
        .as_object()
        .unwrap_or_else(|| panic!("{name}: {object}"))
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(given, listed, "{name}: {object}");
    assert_eq!(required, listed, "{name}: every member is always there");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_ferry_did_not_make_is_used_as_it_is_and_left_on_delete() {
    let Some(base) = pg::base_url() else { return };
    let (url, db) = fresh_db(&base, "src_ownslot").await;
    db.batch_execute("CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION mine FOR TABLE t;")
        .await
        .unwrap();
    // Its own statement: a slot cannot be made in a transaction that wrote.
    db.batch_execute("SELECT pg_create_logical_replication_slot('my_slot', 'pgoutput')")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let ferry = &server.url;
    // A snapshot cannot be consistent with a slot that exists already: said, not done.
    create_source(
        ferry,
        json!({"name": "snap", "url": url, "slot": "my_slot", "publication": "mine"}),
    )
    .await;
    let v = wait_state(ferry, "snap", "retrying", WAIT).await;
    assert!(
        v["status"]["last_error"]
            .as_str()
            .unwrap()
            .contains("snapshot never"),
        "{v}"
    );
    let (s, _) = call(http().delete(format!("{ferry}/v1/sources/snap"))).await;
    assert_eq!(s, 204);
    create_source(
        ferry,
        json!({"name": "own", "url": url, "slot": "my_slot", "publication": "mine",
               "snapshot": "never", "topic_partitions": 1}),
    )
    .await;
    wait_state(ferry, "own", "streaming", WAIT).await;
    db.batch_execute("INSERT INTO t VALUES (1)").await.unwrap();
    wait_records(ferry, "own.public.t", 0, 1, WAIT).await;
    let (s, _) = call(http().delete(format!("{ferry}/v1/sources/own"))).await;
    assert_eq!(s, 204);
    let left: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'my_slot'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 1, "the user's slot stays");
    let pubs: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_publication WHERE pubname = 'mine'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(pubs, 1, "and the user's publication");
    db.batch_execute("SELECT pg_drop_replication_slot('my_slot')")
        .await
        .unwrap();
}
