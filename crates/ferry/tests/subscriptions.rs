//! Queue subscriptions through the real binary's HTTP API: leases, acks, nacks,
//! redelivery, dead letters, redrive, delays, ordering, seek, limits, the event stream,
//! and bad input that must leave state unchanged.

mod common;
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn pull(url: &str, name: &str, body: Value) -> Vec<Value> {
    let (s, v) = call(
        http()
            .post(format!("{url}/v1/subscriptions/{name}/pull"))
            .json(&body),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    v["records"].as_array().unwrap().clone()
}

async fn op(url: &str, name: &str, verb: &str, body: Value) -> (u16, Value) {
    call(
        http()
            .post(format!("{url}/v1/subscriptions/{name}/{verb}"))
            .json(&body),
    )
    .await
}

async fn describe(url: &str, name: &str) -> Value {
    let (s, v) = call(http().get(format!("{url}/v1/subscriptions/{name}"))).await;
    assert_eq!(s, 200, "{v}");
    v
}

fn leases(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| r["lease_id"].as_str().unwrap().to_string())
        .collect()
}

fn values(records: &[Value]) -> Vec<Value> {
    let mut v: Vec<Value> = records.iter().map(|r| r["value"].clone()).collect();
    v.sort_by_key(|x| x.to_string());
    v
}

#[tokio::test]
async fn filters_fan_out_and_acks_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let url = &server.url;
    create_topic(url, json!({"name": "orders", "partitions": 2})).await;
    produce(
        url,
        "orders",
        json!([
            {"key": "orders.eu.created", "value": 1},
            {"key": "orders.us.created", "value": 2, "headers": {"tier": "gold"}},
            {"key": "orders.eu.paid", "value": 3, "headers": {"tier": "gold"}},
            {"value": 4}
        ]),
    )
    .await;
    create_subscription(url, json!({"name": "created", "topic": "orders", "start": "earliest", "filter": {"subject": "orders.*.created"}})).await;
    create_subscription(url, json!({"name": "gold", "topic": "orders", "start": "earliest", "filter": {"headers": {"tier": "gold"}}})).await;
    create_subscription(
        url,
        json!({"name": "all", "topic": "orders", "start": "earliest"}),
    )
    .await;
    create_subscription(url, json!({"name": "new", "topic": "orders"})).await;

    let created = pull(url, "created", json!({"max_records": 10})).await;
    assert_eq!(values(&created), vec![json!(1), json!(2)]);
    assert!(created.iter().all(|r| r["attempt"] == 1));
    let gold = pull(url, "gold", json!({"max_records": 10})).await;
    assert_eq!(values(&gold), vec![json!(2), json!(3)]);
    assert_eq!(pull(url, "all", json!({"max_records": 10})).await.len(), 4);
    assert!(
        pull(url, "new", json!({})).await.is_empty(),
        "starts at latest by default"
    );

    // Ack: once is fine, twice is a conflict, an unknown lease is not found.
    let ids = leases(&created);
    let (s, v) = op(url, "created", "ack", json!({"lease_ids": ids})).await;
    assert_eq!((s, v["acked"].clone()), (200, json!(2)));
    let (s, v) = op(url, "created", "ack", json!({"lease_ids": ids})).await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["type"], "urn:ferry:problem:lease-already-acked");
    let before = describe(url, "gold").await;
    let mut mixed = leases(&gold);
    mixed.push("0-999-1-abc".into());
    let (s, v) = op(url, "gold", "ack", json!({"lease_ids": mixed})).await;
    assert_eq!(s, 404, "{v}");
    assert_eq!(v["type"], "urn:ferry:problem:lease-not-found");
    assert_eq!(v["lease_ids"], json!(["0-999-1-abc"]));
    for garbage in ["", "x", "1-2-3", "1-2-3-zz-9"] {
        let (s, _) = op(url, "gold", "ack", json!({"lease_ids": [garbage]})).await;
        assert_eq!(s, 404);
    }
    let after = describe(url, "gold").await;
    assert_eq!(before["in_flight"], 2);
    assert_eq!(after["in_flight"], 2, "a failed ack changes nothing");
    assert_eq!(after["acked"], 0);

    // Bad settings and timeouts are refused with their own problem types.
    for (body, ty) in [
        (
            json!({"name": "b1", "topic": "orders", "filter": {"subject": "a.>.b"}}),
            "invalid-filter",
        ),
        (
            json!({"name": "b2", "topic": "orders", "visibility_timeout_ms": -5}),
            "invalid-timeout",
        ),
        (
            json!({"name": "b3", "topic": "orders", "visibility_timeout_ms": 1_000_000_000_000i64}),
            "invalid-timeout",
        ),
        (json!({"name": "b4", "topic": "nope"}), "topic-not-found"),
        (
            json!({"name": "b5", "topic": "orders", "colour": "red"}),
            "invalid-json",
        ),
        (
            json!({"name": "created", "topic": "orders"}),
            "subscription-exists",
        ),
        (
            json!({"name": "b6", "topic": "orders", "retry": {"strategy": "fixed"}}),
            "invalid-config",
        ),
    ] {
        let (s, v) = call(http().post(format!("{url}/v1/subscriptions")).json(&body)).await;
        assert!(s >= 400, "{body} -> {v}");
        assert_eq!(
            v["type"],
            format!("urn:ferry:problem:{ty}"),
            "{body} -> {v}"
        );
    }
    let (s, v) = op(
        url,
        "gold",
        "extend",
        json!({"lease_ids": leases(&gold), "visibility_timeout_ms": -1}),
    )
    .await;
    assert_eq!(
        (s, v["type"].as_str().unwrap()),
        (400, "urn:ferry:problem:invalid-timeout")
    );
    let (s, v) = op(url, "gold", "pull", json!({"wait_ms": 3_600_000})).await;
    assert_eq!(
        (s, v["type"].as_str().unwrap()),
        (400, "urn:ferry:problem:invalid-timeout")
    );
    let (s, v) = op(
        url,
        "gold",
        "nack",
        json!({"lease_ids": leases(&gold), "delay_ms": -1}),
    )
    .await;
    assert_eq!(
        (s, v["type"].as_str().unwrap()),
        (400, "urn:ferry:problem:invalid-timeout")
    );
    assert_eq!(describe(url, "gold").await["in_flight"], 2);
    let (s, v) = op(url, "missing", "pull", json!({})).await;
    assert_eq!(
        (s, v["type"].as_str().unwrap()),
        (404, "urn:ferry:problem:subscription-not-found")
    );

    // A filter can be changed and removed; a start naming one partition is refused.
    let (s, v) = call(
        http()
            .patch(format!("{url}/v1/subscriptions/gold"))
            .json(&json!({"filter": {"subject": "x.>"}})),
    )
    .await;
    assert_eq!(
        (s, v["filter"]["subject"].as_str()),
        (200, Some("x.>")),
        "{v}"
    );
    let (s, v) = call(
        http()
            .patch(format!("{url}/v1/subscriptions/gold"))
            .json(&json!({"filter": null})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert!(v.get("filter").is_none(), "{v}");
    let (s, v) = call(
        http()
            .patch(format!("{url}/v1/subscriptions/gold"))
            .json(&json!({"ordering": "key"})),
    )
    .await;
    assert_eq!(
        (s, v["type"].as_str().unwrap()),
        (400, "urn:ferry:problem:invalid-config")
    );
    let (s, v) =
        call(http().post(format!("{url}/v1/subscriptions")).json(
            &json!({"name": "b7", "topic": "orders", "start": {"partition": 1, "offset": 0}}),
        ))
        .await;
    assert_eq!(
        (s, v["type"].as_str().unwrap()),
        (400, "urn:ferry:problem:invalid-config")
    );

    // Listing and deleting.
    let (_, list) = call(http().get(format!("{url}/v1/subscriptions"))).await;
    assert_eq!(list["subscriptions"].as_array().unwrap().len(), 4);
    let (s, _) = call(http().delete(format!("{url}/v1/subscriptions/new"))).await;
    assert_eq!(s, 204);
    let (s, _) = call(http().get(format!("{url}/v1/subscriptions/new"))).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn expired_leases_redeliver_then_dead_letter_and_redrive() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let url = &server.url;
    create_topic(url, json!({"name": "jobs", "partitions": 1})).await;
    create_subscription(
        url,
        json!({"name": "w", "topic": "jobs", "visibility_timeout_ms": 300, "max_deliveries": 2}),
    )
    .await;
    create_subscription(url, json!({"name": "other", "topic": "jobs"})).await;
    produce(
        url,
        "jobs",
        json!([{"key": "k", "value": {"job": 1}, "headers": {"h": "v"}}]),
    )
    .await;

    let first = pull(url, "w", json!({"wait_ms": 2000})).await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0]["attempt"], 1);
    assert!(
        pull(url, "w", json!({})).await.is_empty(),
        "leased records are invisible"
    );
    // The lease runs out: delivered again with the next attempt number.
    let second = pull(url, "w", json!({"wait_ms": 3000})).await;
    assert_eq!(second.len(), 1);
    assert_eq!(second[0]["attempt"], 2);
    let (s, _) = op(url, "w", "ack", json!({"lease_ids": leases(&first)})).await;
    assert_eq!(s, 404, "the first lease expired");
    let (s, _) = op(
        url,
        "w",
        "nack",
        json!({"lease_ids": leases(&second), "error": "boom"}),
    )
    .await;
    assert_eq!(s, 200);
    // Out of deliveries: to the dead-letter topic with its history.
    let deadline = Instant::now() + Duration::from_secs(10);
    let dlq = loop {
        let recs = read_all(url, "w-dlq", 0, 0).await;
        if !recs.is_empty() || Instant::now() > deadline {
            break recs;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(dlq.len(), 1);
    let h = &dlq[0]["headers"];
    assert_eq!(dlq[0]["value"], json!({"job": 1}));
    assert_eq!(h["h"], "v");
    assert_eq!(h["ferry-origin-topic"], "jobs");
    assert_eq!(h["ferry-origin-partition"], "0");
    assert_eq!(h["ferry-origin-offset"], "0");
    assert_eq!(h["ferry-attempts"], "2");
    assert_eq!(h["ferry-last-error"], "boom");
    let history = h["ferry-delivery-history"].as_str().unwrap();
    assert!(
        history.starts_with("1@")
            && history.contains("lease expired")
            && history.ends_with(": boom"),
        "{history}"
    );
    // A topic in use as a dead-letter topic is not deleted from under it.
    let (s, v) = call(http().delete(format!("{url}/v1/topics/w-dlq"))).await;
    assert_eq!(
        (s, v["type"].as_str().unwrap()),
        (400, "urn:ferry:problem:invalid-config"),
        "{v}"
    );
    let d = describe(url, "w").await;
    assert_eq!(d["dead_lettered"], 1);
    assert_eq!(d["backlog"], 0);
    assert_eq!(d["in_flight"], 0);

    // Redrive: back to this subscription only.
    let (s, v) = op(url, "w", "redrive", json!({})).await;
    assert_eq!((s, v["redriven"].clone()), (200, json!(1)));
    let again = pull(url, "w", json!({"wait_ms": 2000})).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0]["value"], json!({"job": 1}));
    assert_eq!(again[0]["attempt"], 1);
    let (s, _) = op(url, "w", "ack", json!({"lease_ids": leases(&again)})).await;
    assert_eq!(s, 200);
    let (_, v) = op(url, "w", "redrive", json!({})).await;
    assert_eq!(v["redriven"], 0, "redrive moves each record once");
    let others = pull(url, "other", json!({"max_records": 10})).await;
    assert_eq!(
        others.len(),
        1,
        "the redriven copy is not for other subscriptions"
    );
}

#[tokio::test]
async fn nack_delays_retry_backoff_and_scheduled_records() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let url = &server.url;
    create_topic(url, json!({"name": "t", "partitions": 1})).await;
    create_subscription(
        url,
        json!({"name": "s", "topic": "t", "retry": {"strategy": "fixed", "delay_ms": 600}}),
    )
    .await;
    produce(url, "t", json!([{"value": "a"}])).await;
    let r = pull(url, "s", json!({"wait_ms": 2000})).await;
    // A nack with an explicit delay.
    let t0 = Instant::now();
    op(
        url,
        "s",
        "nack",
        json!({"lease_ids": leases(&r), "delay_ms": 800}),
    )
    .await;
    assert!(pull(url, "s", json!({"wait_ms": 400})).await.is_empty());
    let r = pull(url, "s", json!({"wait_ms": 3000})).await;
    let waited = t0.elapsed();
    assert_eq!(r.len(), 1);
    assert!(waited >= Duration::from_millis(800), "{waited:?}");
    // A nack without one follows the retry policy (fixed 600 ms).
    let t0 = Instant::now();
    op(url, "s", "nack", json!({"lease_ids": leases(&r)})).await;
    let r = pull(url, "s", json!({"wait_ms": 3000})).await;
    assert_eq!(r[0]["attempt"], 3);
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(600) && waited < Duration::from_millis(2000),
        "{waited:?}"
    );
    op(url, "s", "ack", json!({"lease_ids": leases(&r)})).await;

    // Scheduled delivery with the ferry-deliver-at header.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    produce(
        url,
        "t",
        json!([
            {"value": "later", "headers": {"ferry-deliver-at": (now + 1500).to_string()}},
            {"value": "far", "headers": {"ferry-deliver-at": (now + 3_600_000).to_string()}},
            {"value": "now"}
        ]),
    )
    .await;
    let r = pull(url, "s", json!({"max_records": 10, "wait_ms": 500})).await;
    assert_eq!(values(&r), vec![json!("now")]);
    op(url, "s", "ack", json!({"lease_ids": leases(&r)})).await;
    let r = pull(url, "s", json!({"max_records": 10, "wait_ms": 5000})).await;
    assert_eq!(values(&r), vec![json!("later")]);
    assert!(now + 1500 <= r[0]["lease_expires_at"].as_u64().unwrap());
    op(url, "s", "ack", json!({"lease_ids": leases(&r)})).await;
    let d = describe(url, "s").await;
    assert_eq!(d["delayed"], 1, "{d}");
    assert_eq!(d["backlog"], 1, "{d}");

    // The same as a produce option.
    let (s, v) = produce(url, "t", json!([{"value": "opt", "delay_ms": 1000}])).await;
    assert_eq!(s, 200, "{v}");
    let t0 = Instant::now();
    let r = pull(url, "s", json!({"wait_ms": 5000})).await;
    assert_eq!(values(&r), vec![json!("opt")]);
    assert!(
        t0.elapsed() >= Duration::from_millis(700),
        "{:?}",
        t0.elapsed()
    );
    assert!(r[0]["headers"]["ferry-deliver-at"].is_string());
    op(url, "s", "ack", json!({"lease_ids": leases(&r)})).await;
    let (s, v) = produce(
        url,
        "t",
        json!([{"value": "x", "delay_ms": 1, "deliver_at": 5}]),
    )
    .await;
    assert_eq!(
        (s, v["type"].as_str().unwrap()),
        (400, "urn:ferry:problem:invalid-record")
    );

    // The far-off record waits in a delay file, across a restart.
    drop(server);
    let server = Server::start(dir.path(), &[]);
    let d = describe(&server.url, "s").await;
    assert_eq!(d["delayed"], 1, "{d}");
    assert!(pull(&server.url, "s", json!({"wait_ms": 300}))
        .await
        .is_empty());
}

#[tokio::test]
async fn per_key_ordering_limits_extend_seek_and_purge() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let url = &server.url;
    create_topic(url, json!({"name": "o", "partitions": 1})).await;
    create_subscription(
        url,
        json!({"name": "ord", "topic": "o", "ordering": "key", "start": "earliest"}),
    )
    .await;
    create_subscription(url, json!({"name": "lim", "topic": "o", "start": "earliest", "max_in_flight": 3, "max_in_flight_per_consumer": 2})).await;
    produce(
        url,
        "o",
        json!([{"key": "a", "value": 1}, {"key": "a", "value": 2}, {"key": "b", "value": 3}, {"key": "a", "value": 4}]),
    )
    .await;
    // One record per key in flight.
    let r = pull(url, "ord", json!({"max_records": 10})).await;
    assert_eq!(values(&r), vec![json!(1), json!(3)]);
    let a1: Vec<String> = r
        .iter()
        .filter(|x| x["value"] == 1)
        .map(|x| x["lease_id"].as_str().unwrap().to_string())
        .collect();
    op(url, "ord", "nack", json!({"lease_ids": a1})).await;
    let r2 = pull(url, "ord", json!({"max_records": 10})).await;
    assert_eq!(
        values(&r2),
        vec![json!(1)],
        "a nacked record keeps its key's turn"
    );
    op(url, "ord", "ack", json!({"lease_ids": leases(&r2)})).await;
    let r3 = pull(url, "ord", json!({"max_records": 10})).await;
    assert_eq!(values(&r3), vec![json!(2)]);

    // In-flight limits per consumer and per subscription.
    let c1 = pull(url, "lim", json!({"max_records": 10, "consumer": "c1"})).await;
    assert_eq!(c1.len(), 2);
    let c2 = pull(url, "lim", json!({"max_records": 10, "consumer": "c2"})).await;
    assert_eq!(c2.len(), 1);
    assert!(
        pull(url, "lim", json!({"max_records": 10, "consumer": "c3"}))
            .await
            .is_empty()
    );

    // Extend keeps a short lease alive.
    let (s, v) = op(
        url,
        "lim",
        "extend",
        json!({"lease_ids": leases(&c2), "visibility_timeout_ms": 60000}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert!(v["lease_expires_at"].as_u64().is_some());
    let (s, _) = op(url, "lim", "ack", json!({"lease_ids": leases(&c2)})).await;
    assert_eq!(s, 200);

    // Seek replays; purge drops everything.
    let (s, v) = op(url, "lim", "seek", json!({"to": "earliest"})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["backlog"], 4);
    assert_eq!(v["in_flight"], 0);
    let r = pull(url, "lim", json!({"max_records": 2, "consumer": "c9"})).await;
    assert_eq!(r[0]["offset"], 0);
    let (s, v) = op(url, "lim", "seek", json!({"offset": 3})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["backlog"], 1);
    let (s, v) = op(url, "lim", "seek", json!({"to": "sideways"})).await;
    assert_eq!(
        (s, v["type"].as_str().unwrap()),
        (400, "urn:ferry:problem:invalid-config")
    );
    let (s, v) = op(url, "lim", "purge", json!({})).await;
    assert_eq!(s, 200);
    assert_eq!(v["backlog"], 0);
}

#[tokio::test]
async fn the_event_stream_delivers_leases_to_ack() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let url = &server.url;
    create_topic(url, json!({"name": "e", "partitions": 1})).await;
    create_subscription(url, json!({"name": "es", "topic": "e"})).await;
    let mut resp = http()
        .get(format!("{url}/v1/subscriptions/es/events?consumer=sse"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    produce(url, "e", json!([{"value": "hello"}])).await;
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !text.contains("\n\n") && Instant::now() < deadline {
        if let Ok(Ok(Some(chunk))) =
            tokio::time::timeout(Duration::from_secs(5), resp.chunk()).await
        {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
    let data = text
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap_or_else(|| panic!("no data line in {text:?}"));
    assert!(text.contains("event: record"), "{text}");
    let rec: Value = serde_json::from_str(data).unwrap();
    assert_eq!(rec["value"], "hello");
    let (s, _) = op(url, "es", "ack", json!({"lease_ids": [rec["lease_id"]]})).await;
    assert_eq!(s, 200);
    let (s, v) = call(http().get(format!("{url}/v1/subscriptions/nope/events"))).await;
    assert_eq!(
        (s, v["type"].as_str().unwrap()),
        (404, "urn:ferry:problem:subscription-not-found")
    );
}

#[tokio::test]
async fn acks_and_attempts_survive_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let url = server.url.clone();
    create_topic(&url, json!({"name": "r", "partitions": 2})).await;
    create_subscription(
        &url,
        json!({"name": "rs", "topic": "r", "max_deliveries": 0}),
    )
    .await;
    let recs: Vec<Value> = (0..100)
        .map(|i| json!({"key": format!("k{i}"), "value": i}))
        .collect();
    produce(&url, "r", json!(recs)).await;
    let got = pull(&url, "rs", json!({"max_records": 60})).await;
    assert_eq!(got.len(), 60);
    let (acked, kept) = got.split_at(40);
    op(&url, "rs", "ack", json!({"lease_ids": leases(acked)})).await;
    server.kill9();
    let server = Server::start(dir.path(), &[]);
    let url = server.url.clone();
    let d = describe(&url, "rs").await;
    assert_eq!(d["backlog"], 60, "{d}");
    assert_eq!(d["in_flight"], 0, "leases end with the process");
    let mut seen = std::collections::HashMap::new();
    loop {
        let r = pull(&url, "rs", json!({"max_records": 100})).await;
        if r.is_empty() {
            break;
        }
        for x in &r {
            seen.insert(x["value"].as_i64().unwrap(), x["attempt"].as_u64().unwrap());
        }
        op(&url, "rs", "ack", json!({"lease_ids": leases(&r)})).await;
    }
    assert_eq!(seen.len(), 60);
    for x in kept {
        assert_eq!(
            seen[&x["value"].as_i64().unwrap()],
            2,
            "a delivered record keeps its attempt"
        );
    }
    for x in acked {
        assert!(
            !seen.contains_key(&x["value"].as_i64().unwrap()),
            "acked records never come back"
        );
    }
    assert_eq!(describe(&url, "rs").await["backlog"], 0);
}

#[tokio::test]
async fn an_ack_without_waiting_for_the_disk_is_applied_at_once_and_delivery_stays_at_least_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let url = &server.url;
    create_topic(url, json!({"name": "t", "partitions": 1})).await;
    produce(url, "t", json!([{"value": 1}, {"value": 2}, {"value": 3}])).await;
    create_subscription(url, json!({"name": "s", "topic": "t", "start": "earliest"})).await;
    let got = pull(url, "s", json!({"max_records": 10})).await;
    assert_eq!(values(&got), vec![json!(1), json!(2), json!(3)]);
    let ids = leases(&got);

    // Only ack takes `durable`, and only as a boolean; nothing changes when refused.
    for (verb, body) in [
        ("nack", json!({"lease_ids": [ids[2]], "durable": false})),
        ("ack", json!({"lease_ids": [ids[0]], "durable": "no"})),
    ] {
        let (s, v) = op(url, "s", verb, body).await;
        assert_eq!(
            (s, v["type"].as_str()),
            (400, Some("urn:ferry:problem:invalid-json")),
            "{verb}: {v}"
        );
    }

    let (s, v) = op(
        url,
        "s",
        "ack",
        json!({"lease_ids": [ids[0], ids[1]], "durable": false}),
    )
    .await;
    assert_eq!((s, v["acked"].clone()), (200, json!(2)), "{v}");
    // Applied at once: acking again is a conflict, and the status counts them.
    let (s, v) = op(url, "s", "ack", json!({"lease_ids": [ids[0]]})).await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(
        describe(url, "s").await["backlog"],
        1,
        "only record 3 is left"
    );

    // Whatever a crash takes, no record is lost: the unacked one comes back, and an
    // unsynced ack can only bring its record back too.
    server.kill9();
    let server = Server::start(dir.path(), &[]);
    let again = pull(&server.url, "s", json!({"max_records": 10})).await;
    let again = values(&again);
    assert!(again.contains(&json!(3)), "{again:?}");
    assert!(
        again
            .iter()
            .all(|v| [json!(1), json!(2), json!(3)].contains(v)),
        "{again:?}"
    );
}
