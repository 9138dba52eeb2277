//! Push subscriptions through the real binary against a real HTTP endpoint: signed
//! deliveries, payload modes, retry schedules, Retry-After, refusals, timeouts, dropped
//! connections, the circuit breaker through an outage, kill -9, pause and resume,
//! manual retry, the delivery log and the address guard.

mod common;
use common::endpoint::{Endpoint, Received, Reply};
use common::*;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const ALLOW: &[&str] = &["--push-allow-private"];

async fn describe(url: &str, name: &str) -> Value {
    call(http().get(format!("{url}/v1/subscriptions/{name}")))
        .await
        .1
}

fn header(r: &Received, name: &str) -> String {
    r.headers
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

fn offset_of(r: &Received) -> u64 {
    header(r, "ferry-offset").parse().unwrap()
}

/// Arrival times of each attempt of `offset`.
fn attempts_of(rs: &[Received], offset: u64) -> Vec<Instant> {
    rs.iter()
        .filter(|r| offset_of(r) == offset)
        .map(|r| r.at)
        .collect()
}

/// The delivery log's attempts of one record (partition 0).
async fn logged_attempts(url: &str, sub: &str, offset: u64) -> Value {
    call(http().get(format!(
        "{url}/v1/subscriptions/{sub}/deliveries?partition=0&offset={offset}"
    )))
    .await
    .1
}

async fn wait_until(what: &str, timeout: Duration, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_signed_and_carry_their_record() {
    let ep = Endpoint::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), ALLOW);
    let url = &server.url;
    create_topic(url, json!({"name": "orders", "partitions": 1})).await;
    let created = create_subscription(
        url,
        json!({"name": "hook", "topic": "orders", "start": "earliest",
               "push": {"url": ep.url(), "headers": {"x-static": "yes"}}}),
    )
    .await;
    assert_eq!(created["mode"], "push");
    let secret = created["push"]["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"), "{created}");
    assert_eq!(created["push"]["secret_shown_once"], true);
    let shown = describe(url, "hook").await;
    assert!(
        shown["push"]["secret"].as_str().unwrap().ends_with('…'),
        "{shown}"
    );

    let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    produce(
        url,
        "orders",
        json!([
            {"key": "order-1", "value": {"total": 5}, "headers": {"traceparent": tp}},
            {"key": "order-2", "value": {"base64": "AAEC"}, "headers": {"content-type": "application/x-bin"}},
        ]),
    )
    .await;
    ep.wait_for("2 deliveries", Duration::from_secs(10), |r| r.len() >= 2)
        .await;
    let mut got = ep.received();
    got.sort_by_key(offset_of);
    let first = &got[0];
    assert_eq!(&first.body[..], br#"{"total":5}"#);
    assert_eq!(header(first, "content-type"), "application/json");
    assert_eq!(header(first, "traceparent"), tp);
    assert_eq!(header(first, "x-static"), "yes");
    assert_eq!(header(first, "ferry-key"), "order-1");
    assert_eq!(header(first, "ferry-topic"), "orders");
    assert_eq!(header(first, "ferry-attempt"), "1");
    let id = header(first, "webhook-id");
    let ts: u64 = header(first, "webhook-timestamp").parse().unwrap();
    assert_eq!(
        header(first, "webhook-signature"),
        ferry_push::sign::sign(&secret, &id, ts, &first.body).unwrap()
    );
    let second = &got[1];
    assert_eq!(&second.body[..], &[0u8, 1, 2]);
    assert_eq!(header(second, "content-type"), "application/x-bin");
    assert!(header(second, "traceparent").starts_with("00-"));

    // The delivery log has both, newest first; one record's history by itself.
    wait_until("the log", Duration::from_secs(5), async || {
        let (_, v) = call(http().get(format!("{url}/v1/subscriptions/hook/deliveries"))).await;
        v["deliveries"].as_array().is_some_and(|d| d.len() == 2)
    })
    .await;
    let v = logged_attempts(url, "hook", 1).await;
    let d = v["deliveries"].as_array().unwrap();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0]["outcome"], "delivered");
    assert_eq!(d[0]["status"], 200);
    let d = describe(url, "hook").await;
    assert_eq!(d["backlog"], 0, "{d}");
    assert_eq!(d["push_status"]["breaker"], "closed", "{d}");

    // Rotation: both secrets sign for a while.
    let (s, v) = call(
        http()
            .post(format!("{url}/v1/subscriptions/hook/rotate-secret"))
            .json(&json!({})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let new_secret = v["push"]["secret"].as_str().unwrap().to_string();
    produce(url, "orders", json!([{"value": "after rotation"}])).await;
    ep.wait_for("a third delivery", Duration::from_secs(10), |r| {
        r.len() >= 3
    })
    .await;
    let third = ep
        .received()
        .into_iter()
        .find(|r| offset_of(r) == 2)
        .unwrap();
    let (id, ts) = (
        header(&third, "webhook-id"),
        header(&third, "webhook-timestamp").parse().unwrap(),
    );
    let sigs = header(&third, "webhook-signature");
    let sigs: Vec<&str> = sigs.split(' ').collect();
    assert_eq!(sigs.len(), 2, "{sigs:?}");
    assert!(sigs.contains(
        &ferry_push::sign::sign(&new_secret, &id, ts, &third.body)
            .unwrap()
            .as_str()
    ));
    assert!(sigs.contains(
        &ferry_push::sign::sign(&secret, &id, ts, &third.body)
            .unwrap()
            .as_str()
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudevents_in_both_modes() {
    let ep = Endpoint::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), ALLOW);
    let url = &server.url;
    create_topic(url, json!({"name": "ev", "partitions": 1})).await;
    for (name, mode) in [
        ("bin", "cloudevents_binary"),
        ("st", "cloudevents_structured"),
    ] {
        create_subscription(
            url,
            json!({"name": name, "topic": "ev", "push": {"url": ep.url(), "payload": mode}}),
        )
        .await;
    }
    produce(
        url,
        "ev",
        json!([{"key": "user.1", "value": {"a": 1}, "headers": {"ce-type": "com.example.signup"}}]),
    )
    .await;
    ep.wait_for("two deliveries", Duration::from_secs(10), |r| r.len() >= 2)
        .await;
    let got = ep.received();
    let bin = got
        .iter()
        .find(|r| header(r, "ferry-subscription") == "bin")
        .unwrap();
    assert_eq!(header(bin, "ce-specversion"), "1.0");
    assert_eq!(header(bin, "ce-type"), "com.example.signup");
    assert_eq!(header(bin, "ce-source"), "/ferry/topics/ev");
    assert_eq!(header(bin, "ce-subject"), "user.1");
    assert!(header(bin, "ce-time").ends_with('Z'));
    assert_eq!(&bin.body[..], br#"{"a":1}"#);
    let st = got
        .iter()
        .find(|r| header(r, "ferry-subscription") == "st")
        .unwrap();
    assert_eq!(header(st, "content-type"), "application/cloudevents+json");
    let ev: Value = serde_json::from_slice(&st.body).unwrap();
    assert_eq!(ev["specversion"], "1.0");
    assert_eq!(ev["type"], "com.example.signup");
    assert_eq!(ev["data"], json!({"a": 1}));
    assert_eq!(ev["datacontenttype"], "application/json");
    assert_eq!(ev["id"], header(st, "webhook-id"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_strategies_follow_their_schedules() {
    let ep = Endpoint::start().await;
    // Every record fails three times, then succeeds.
    {
        let mut s = ep.script.lock().unwrap();
        for o in 0..3u64 {
            for a in 1..=3u32 {
                s.by_attempt.push(((o, a), Reply::Status(503)));
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), ALLOW);
    let url = &server.url;
    // One topic per strategy so that offsets name records alone.
    let cases = [
        (
            "fixed",
            json!({"strategy": "fixed", "delay_ms": 300}),
            [300u64, 300, 300],
        ),
        (
            "linear",
            json!({"strategy": "linear", "delay_ms": 200, "step_ms": 200}),
            [200, 400, 600],
        ),
        (
            "exponential",
            json!({"strategy": "exponential", "delay_ms": 200}),
            [200, 400, 800],
        ),
    ];
    for (i, (name, retry, _)) in cases.iter().enumerate() {
        create_topic(url, json!({"name": name, "partitions": 1})).await;
        // Offsets differ per topic so that the endpoint's script tells them apart.
        for _ in 0..i {
            produce(url, name, json!([{"value": "filler"}])).await;
        }
        create_subscription(
            url,
            json!({"name": format!("s-{name}"), "topic": name, "retry": retry,
            "push": {"url": ep.url(), "breaker": {"min_calls": 1000}}}),
        )
        .await;
        produce(url, name, json!([{"value": name}])).await;
    }
    ep.wait_for("every record delivered", Duration::from_secs(20), |r| {
        cases.iter().enumerate().all(|(i, (name, _, _))| {
            r.iter().any(|x| {
                header(x, "ferry-topic") == *name && offset_of(x) == i as u64 && x.answered == 200
            })
        })
    })
    .await;
    let got = ep.received();
    for (i, (name, _, expected)) in cases.iter().enumerate() {
        let mine: Vec<Received> = got
            .iter()
            .filter(|r| header(r, "ferry-topic") == *name)
            .cloned()
            .collect();
        let times = attempts_of(&mine, i as u64);
        assert_eq!(times.len(), 4, "{name}: 3 failures then a success");
        for (k, want) in expected.iter().enumerate() {
            let gap = times[k + 1].duration_since(times[k]).as_millis() as u64;
            assert!(
                gap + 20 >= *want && gap <= want + 500,
                "{name}: gap {k} was {gap} ms, expected about {want} ms"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_refusals_timeouts_resets_and_redirects() {
    let ep = Endpoint::start().await;
    {
        let mut s = ep.script.lock().unwrap();
        s.by_attempt.push(((0, 1), Reply::RetryAfter(1)));
        s.by_attempt.push(((1, 1), Reply::Status(400)));
        s.by_attempt
            .push(((2, 1), Reply::Hang(Duration::from_secs(3))));
        s.by_attempt.push(((3, 1), Reply::Reset));
        s.by_attempt.push(((4, 1), Reply::Redirect));
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), ALLOW);
    let url = &server.url;
    create_topic(url, json!({"name": "t", "partitions": 1})).await;
    create_subscription(
        url,
        json!({"name": "p", "topic": "t", "retry": {"strategy": "fixed", "delay_ms": 100},
        "push": {"url": ep.url(), "timeout_ms": 500, "breaker": {"min_calls": 1000}}}),
    )
    .await;
    produce(
        url,
        "t",
        json!([{"value": 0}, {"value": 1}, {"value": 2}, {"value": 3}, {"value": 4}]),
    )
    .await;
    ep.wait_for("retries of 0, 2 and 3", Duration::from_secs(15), |r| {
        [0u64, 2, 3]
            .iter()
            .all(|o| r.iter().any(|x| offset_of(x) == *o && x.answered == 200))
    })
    .await;
    let got = ep.received();
    let t0 = attempts_of(&got, 0);
    assert!(
        t0[1].duration_since(t0[0]) >= Duration::from_millis(950),
        "Retry-After: 1 honoured: {:?}",
        t0[1].duration_since(t0[0])
    );
    assert_eq!(attempts_of(&got, 1).len(), 1, "400 cancels at once");
    assert_eq!(
        attempts_of(&got, 4).len(),
        1,
        "a redirect is not followed and not retried"
    );
    // Refused records are in the dead-letter topic with the reason.
    wait_until("dead letters", Duration::from_secs(10), async || {
        read_all(url, "p-dlq", 0, 0).await.len() == 2
    })
    .await;
    let dlq = read_all(url, "p-dlq", 0, 0).await;
    let reasons: Vec<String> = dlq
        .iter()
        .map(|r| {
            r["headers"]["ferry-last-error"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(reasons.iter().any(|e| e.contains("400")), "{reasons:?}");
    assert!(
        reasons.iter().any(|e| e.contains("redirect")),
        "{reasons:?}"
    );
    for r in &dlq {
        let h = r["headers"]["ferry-delivery-history"]
            .as_str()
            .unwrap_or_default();
        assert!(h.starts_with("1@"), "the history names the attempts: {r}");
    }
    // The log tells the timeout and the dropped connection.
    let v = logged_attempts(url, "p", 2).await;
    let d = v["deliveries"].as_array().unwrap();
    assert!(
        d.iter()
            .any(|a| a["error"].as_str().is_some_and(|e| e.contains("timed out"))),
        "{v}"
    );
    let v = logged_attempts(url, "p", 3).await;
    assert!(
        v["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["outcome"] == "retry"),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_followed_when_the_subscription_allows_it() {
    let ep = Endpoint::start().await;
    let port = ep.addr.port();
    let same = format!("http://127.0.0.1:{port}/moved");
    let other = format!("http://localhost:{port}/moved");
    {
        let mut s = ep.script.lock().unwrap();
        s.by_attempt
            .push(((0, 1), Reply::RedirectTo(307, same.clone())));
        s.by_attempt
            .push(((1, 1), Reply::RedirectTo(303, same.clone())));
        // Always sent back to /hook: more than 5 redirects in a row.
        s.by_attempt
            .push(((2, 1), Reply::RedirectTo(302, "/hook".into())));
        s.by_attempt.push(((3, 1), Reply::RedirectTo(308, other)));
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), ALLOW);
    let url = &server.url;
    create_topic(url, json!({"name": "t", "partitions": 1})).await;
    create_subscription(
        url,
        json!({"name": "p", "topic": "t", "retry": {"strategy": "fixed", "delay_ms": 100},
        "push": {"url": ep.url(), "follow_redirects": true, "concurrency": 1,
                 "headers": {"authorization": "Bearer t0ken"},
                 "breaker": {"min_calls": 1000}}}),
    )
    .await;
    produce(
        url,
        "t",
        json!([{"value": {"n": 0}}, {"value": {"n": 1}}, {"value": {"n": 2}}, {"value": {"n": 3}}]),
    )
    .await;
    ep.wait_for("every record delivered", Duration::from_secs(15), |r| {
        (0u64..4).all(|o| r.iter().any(|x| offset_of(x) == o && x.answered == 200))
    })
    .await;
    let got = ep.received();
    let at = |o: u64, path: &str| -> Vec<&Received> {
        got.iter()
            .filter(|r| offset_of(r) == o && r.path == path)
            .collect()
    };
    // 307 repeats the request; 303 turns it into a GET without a body.
    let moved = at(0, "/moved");
    assert_eq!(moved.len(), 1);
    assert_eq!(moved[0].method, "POST");
    assert_eq!(&moved[0].body[..], br#"{"n":0}"#);
    assert_eq!(
        header(moved[0], "webhook-id"),
        header(at(0, "/hook")[0], "webhook-id")
    );
    let moved = at(1, "/moved");
    assert_eq!(moved[0].method, "GET");
    assert!(moved[0].body.is_empty());
    assert_eq!(header(moved[0], "content-type"), "");
    // Six requests (the first and 5 redirects), a failed attempt, then a retry.
    let looped = at(2, "/hook");
    assert_eq!(looped.len(), 7, "{looped:?}");
    assert_eq!(header(looped[6], "ferry-attempt"), "2");
    let v = logged_attempts(url, "p", 2).await;
    assert!(
        v["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["outcome"] == "retry"
                && a["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("more than 5 redirects"))),
        "{v}"
    );
    // Credentials do not follow a redirect to another origin.
    assert_eq!(header(at(3, "/hook")[0], "authorization"), "Bearer t0ken");
    let moved = at(3, "/moved");
    assert_eq!(moved.len(), 1);
    assert_eq!(header(moved[0], "authorization"), "");
    assert!(!header(moved[0], "webhook-signature").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_holds_records_through_an_outage_and_keeps_key_order() {
    let records: usize = std::env::var("FERRY_PUSH_OUTAGE_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let outage = Duration::from_secs(
        std::env::var("FERRY_PUSH_OUTAGE_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(5),
    );
    let mut ep = Endpoint::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), ALLOW);
    let url = server.url.clone();
    create_topic(&url, json!({"name": "o", "partitions": 4})).await;
    create_subscription(&url, json!({"name": "k", "topic": "o", "ordering": "key", "max_deliveries": 0,
        "retry": {"strategy": "fixed", "delay_ms": 200},
        "push": {"url": ep.url(), "concurrency": 64, "timeout_ms": 2000,
                 "breaker": {"min_calls": 5, "window_ms": 2000, "cooldown_ms": 1000, "probes": 2}}})).await;
    ep.down().await;
    let started = Instant::now();
    let keys = 100;
    for chunk in (0..records).collect::<Vec<_>>().chunks(1000) {
        let batch: Vec<Value> = chunk
            .iter()
            .map(|i| json!({"key": format!("k{}", i % keys), "value": {"seq": i}}))
            .collect();
        let (s, v) = produce(&url, "o", json!(batch)).await;
        assert_eq!(s, 200, "{v}");
    }
    wait_until("the breaker to open", Duration::from_secs(20), async || {
        describe(&url, "k").await["push_status"]["breaker"] == "open"
    })
    .await;
    let rss_open = rss_mib(server.child.id());
    tokio::time::sleep(outage.saturating_sub(started.elapsed())).await;
    assert_ne!(
        describe(&url, "k").await["push_status"]["breaker"],
        "closed"
    );
    ep.up().await;
    ep.wait_for("every record", Duration::from_secs(180), |r| {
        r.iter().filter(|x| x.answered == 200).count() >= records
    })
    .await;
    let rss_after = rss_mib(server.child.id());
    let got = ep.received();
    let mut last: HashMap<String, i64> = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    for r in got.iter().filter(|x| x.answered == 200) {
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        let seq = v["seq"].as_i64().unwrap();
        let key = header(r, "ferry-key");
        let prev = last.insert(key.clone(), seq).unwrap_or(-1);
        assert!(seq > prev, "key {key}: {seq} arrived after {prev}");
        seen.insert(seq);
    }
    assert_eq!(seen.len(), records, "nothing lost");
    wait_until("backlog 0", Duration::from_secs(10), async || {
        describe(&url, "k").await["backlog"] == 0
    })
    .await;
    println!(
        "push outage: {records} records, breaker open during a {outage:?} outage, RSS {rss_open:.1} MiB while open, {rss_after:.1} MiB after; {} requests in all",
        got.len()
    );
    assert!(
        rss_open < 128.0 && rss_after < 128.0,
        "memory stays bounded"
    );
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_delivery_loses_nothing() {
    let ep = Endpoint::start().await;
    ep.script.lock().unwrap().delay = Duration::from_millis(5);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), ALLOW);
    let url = server.url.clone();
    create_topic(&url, json!({"name": "c", "partitions": 2})).await;
    create_subscription(
        &url,
        json!({"name": "c", "topic": "c", "max_deliveries": 0,
        "push": {"url": ep.url(), "concurrency": 8}}),
    )
    .await;
    // Kills: `FERRY_PUSH_KILLS` (1 by default), each after a few more deliveries.
    let kills: usize = std::env::var("FERRY_PUSH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let n = 3000 * kills.max(1);
    let batch: Vec<Value> = (0..n).map(|i| json!({"value": {"id": i}})).collect();
    for chunk in batch.chunks(5000) {
        produce(&url, "c", json!(chunk)).await;
    }
    let mut server = server;
    for k in 0..kills {
        let seen = ep.received().len();
        ep.wait_for("more deliveries", Duration::from_secs(30), |r| {
            r.len() > seen + 300
        })
        .await;
        server.kill9();
        println!(
            "push kill -9 #{}: after {} requests",
            k + 1,
            ep.received().len()
        );
        server = Server::start(dir.path(), ALLOW);
    }
    let ids_ok = |r: &[Received]| -> std::collections::HashSet<i64> {
        r.iter()
            .filter(|x| x.answered == 200)
            .map(|x| {
                serde_json::from_slice::<Value>(&x.body).unwrap()["id"]
                    .as_i64()
                    .unwrap()
            })
            .collect()
    };
    ep.wait_for("every record", Duration::from_secs(120), |r| {
        ids_ok(r).len() == n
    })
    .await;
    let got = ep.received();
    let duplicates = got.len() - n;
    println!("push kill -9: {n} records, {kills} kills, nothing lost, {duplicates} duplicate requests (at-least-once)");
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_manual_retry_and_the_address_guard() {
    let ep = Endpoint::start().await;
    let dir = tempfile::tempdir().unwrap();
    {
        // Without the flag, a loopback endpoint is refused.
        let server = Server::start(dir.path(), &[]);
        create_topic(&server.url, json!({"name": "g", "partitions": 1})).await;
        for target in [
            ep.url(),
            "http://169.254.169.254/latest".to_string(),
            "http://[::1]:9/x".to_string(),
        ] {
            let (s, v) = call(
                http()
                    .post(format!("{}/v1/subscriptions", server.url))
                    .json(&json!({"name": "g1", "topic": "g", "push": {"url": target}})),
            )
            .await;
            assert_eq!(
                (s, v["type"].as_str().unwrap()),
                (403, "urn:ferry:problem:push-endpoint-forbidden"),
                "{v}"
            );
        }
        let (s, v) = call(
            http()
                .post(format!("{}/v1/subscriptions", server.url))
                .json(&json!({"name": "g1", "topic": "g", "push": {"url": "ftp://x"}})),
        )
        .await;
        assert_eq!(
            (s, v["type"].as_str().unwrap()),
            (400, "urn:ferry:problem:invalid-config"),
            "{v}"
        );
        let (s, v) = call(http().post(format!("{}/v1/subscriptions", server.url)).json(&json!({"name": "g1", "topic": "g", "push": {"url": ep.url(), "timeout_ms": 5}}))).await;
        assert!(s == 403 || s == 400, "{v}");
    }
    // An allowed network opens exactly that.
    let server = Server::start(dir.path(), &["--push-allow-networks", "127.0.0.0/8"]);
    let url = server.url.clone();
    create_subscription(
        &url,
        json!({"name": "p", "topic": "g", "push": {"url": ep.url()}}),
    )
    .await;
    let (s, v) = call(http().post(format!("{url}/v1/subscriptions/p/pause"))).await;
    assert_eq!((s, v["paused"].as_bool()), (200, Some(true)), "{v}");
    produce(&url, "g", json!([{"value": "held"}])).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        ep.received().is_empty(),
        "a paused subscription sends nothing"
    );
    let (s, _) = call(http().post(format!("{url}/v1/subscriptions/p/resume"))).await;
    assert_eq!(s, 200);
    ep.wait_for("the held record", Duration::from_secs(10), |r| r.len() == 1)
        .await;
    // Records of a push subscription are not for pulling; pause is for push only; a
    // header Ferry sets itself is refused.
    let (s, v) = call(
        http()
            .post(format!("{url}/v1/subscriptions/p/pull"))
            .json(&json!({})),
    )
    .await;
    assert_eq!(
        (s, v["type"].as_str().unwrap()),
        (400, "urn:ferry:problem:invalid-config"),
        "{v}"
    );
    let (s, v) = call(
        http()
            .post(format!("{url}/v1/subscriptions"))
            .json(&json!({"name": "q", "topic": "g"})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = call(http().post(format!("{url}/v1/subscriptions/q/pause"))).await;
    assert_eq!(
        (s, v["type"].as_str().unwrap()),
        (400, "urn:ferry:problem:invalid-config"),
        "{v}"
    );
    let (s, v) = call(
        http()
            .patch(format!("{url}/v1/subscriptions/p"))
            .json(&json!({"push": {"url": ep.url(), "headers": {"Content-Type": "text/plain"}}})),
    )
    .await;
    assert_eq!(
        (s, v["type"].as_str().unwrap()),
        (400, "urn:ferry:problem:invalid-config"),
        "{v}"
    );
    let (s, v) = call(
        http()
            .patch(format!("{url}/v1/subscriptions/p"))
            .json(&json!({"push": {"url": ep.url(), "headers": {"Authorization": "Bearer abc"}}})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["push"]["headers"]["Authorization"], "…",
        "credentials are not shown: {v}"
    );
    // Manual retry of one record sends it again.
    let (s, v) = call(
        http()
            .post(format!("{url}/v1/subscriptions/p/retry"))
            .json(&json!({"partition": 0, "offset": 0})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    ep.wait_for("the retried record", Duration::from_secs(10), |r| {
        r.len() == 2
    })
    .await;
    let got = ep.received();
    assert_eq!(got[0].body, got[1].body);
    let (s, v) = call(
        http()
            .post(format!("{url}/v1/subscriptions/p/retry"))
            .json(&json!({"partition": 0, "offset": 99})),
    )
    .await;
    assert_eq!(
        (s, v["type"].as_str().unwrap()),
        (416, "urn:ferry:problem:offset-out-of-range"),
        "{v}"
    );
}
