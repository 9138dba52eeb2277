//! The HTTP API of the real binary: topics, produce, read, errors.

mod common;
use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test]
async fn a_topic_is_created_listed_described_grown_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let url = &s.url;
    let t = create_topic(
        url,
        json!({"name": "orders", "partitions": 2, "retention_ms": -1}),
    )
    .await;
    assert_eq!(t["partitions"], 2);
    assert_eq!(t["retention_ms"], -1);
    assert_eq!(t["durability"], "always");
    let (status, list) = call(http().get(format!("{url}/v1/topics"))).await;
    assert_eq!(status, 200);
    assert_eq!(list["topics"][0]["name"], "orders");
    let (status, again) = call(
        http()
            .post(format!("{url}/v1/topics"))
            .json(&json!({"name": "orders"})),
    )
    .await;
    assert_eq!(
        (status, again["type"].as_str()),
        (409, Some("urn:ferry:problem:topic-exists"))
    );
    let (status, grown) = call(
        http()
            .patch(format!("{url}/v1/topics/orders"))
            .json(&json!({"partitions": 5})),
    )
    .await;
    assert_eq!(
        (status, grown["partition_stats"].as_array().unwrap().len()),
        (200, 5)
    );
    let (status, shrink) = call(
        http()
            .patch(format!("{url}/v1/topics/orders"))
            .json(&json!({"partitions": 1})),
    )
    .await;
    assert_eq!(
        (status, shrink["type"].as_str()),
        (400, Some("urn:ferry:problem:invalid-config"))
    );
    let (status, _) = produce(url, "orders", json!([{"value": 1, "partition": 4}])).await;
    assert_eq!(status, 200);
    let (status, _) = call(http().delete(format!("{url}/v1/topics/orders"))).await;
    assert_eq!(status, 204);
    let (status, gone) = call(http().get(format!("{url}/v1/topics/orders"))).await;
    assert_eq!(
        (status, gone["type"].as_str()),
        (404, Some("urn:ferry:problem:topic-not-found"))
    );
    // A topic made again under the same name starts empty.
    create_topic(url, json!({"name": "orders"})).await;
    assert!(read_all(url, "orders", 0, 0).await.is_empty());
}

#[tokio::test]
async fn records_read_back_as_written_json_bytes_keys_and_headers() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let url = &s.url;
    create_topic(url, json!({"name": "t"})).await;
    let records = json!([
        {"key": "k1", "value": {"order": 7, "items": ["a", "b"]}, "headers": {"trace": "abc"}, "timestamp": 1700000000000i64},
        {"value": {"base64": "AAEC/w=="}},
        {"key": {"base64": "//4="}, "value": "a string", "headers": [{"key": "h", "value": "1"}, {"key": "h", "value": "2"}]},
        {"value": null},
    ]);
    let (status, v) = produce(url, "t", records).await;
    assert_eq!(status, 200, "{v}");
    let offsets: Vec<u64> = v["offsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, vec![0, 1, 2, 3]);
    let got = read_all(url, "t", 0, 0).await;
    assert_eq!(got[0]["key"], "k1");
    assert_eq!(got[0]["value"], json!({"order": 7, "items": ["a", "b"]}));
    assert_eq!(got[0]["headers"], json!({"trace": "abc"}));
    assert_eq!(got[0]["timestamp"], 1700000000000i64);
    assert_eq!(got[1]["value"], json!({"base64": "AAEC/w=="}));
    assert_eq!(got[2]["key"], json!({"base64": "//4="}));
    assert_eq!(got[2]["value"], "a string");
    assert_eq!(got[2]["headers"], json!({"h": ["1", "2"]}));
    assert_eq!(got[3]["value"], json!(null));
    // Reading from the middle starts at that offset.
    let (_, v) = call(http().get(format!(
        "{url}/v1/topics/t/partitions/0/records?offset=2&max_records=1"
    )))
    .await;
    assert_eq!(v["records"].as_array().unwrap().len(), 1);
    assert_eq!(v["records"][0]["offset"], 2);
    assert_eq!(v["next_offset"], 3);
}

#[tokio::test]
async fn keyed_records_land_where_kafka_clients_would_put_them() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    create_topic(&s.url, json!({"name": "k", "partitions": 3})).await;
    // murmur2("21") = -973932308 in Kafka's test vectors; (h & 0x7fffffff) % 3 = 0.
    // murmur2("foobar") = -790332482; (h & 0x7fffffff) % 3 = 1.
    let (_, v) = produce(&s.url, "k", json!([{"key": "21", "value": 1}, {"key": "foobar", "value": 2}, {"key": "21", "value": 3}])).await;
    let parts: Vec<u64> = v["offsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["partition"].as_u64().unwrap())
        .collect();
    assert_eq!(
        parts,
        vec![(1173551340 % 3), (1357151166 % 3), (1173551340 % 3)]
    );
    // Records without a key spread over every partition.
    let (_, v) = produce(
        &s.url,
        "k",
        json!([{"value": 1}, {"value": 2}, {"value": 3}]),
    )
    .await;
    let mut spread: Vec<u64> = v["offsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["partition"].as_u64().unwrap())
        .collect();
    spread.sort();
    assert_eq!(spread, vec![0, 1, 2]);
}

#[tokio::test]
async fn bad_requests_get_problems_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--max-request-bytes", "65536"]);
    let url = &s.url;
    create_topic(
        url,
        json!({"name": "t", "partitions": 2, "max_record_bytes": 1024}),
    )
    .await;
    let post = |body: &'static str| {
        http()
            .post(format!("{url}/v1/topics/t/records"))
            .header("content-type", "application/json")
            .body(body)
    };
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (post("{\"records\": [{\"value\": 1}"), 400, "invalid-json"),
        (post("{\"records\": [{\"valu\": 1}]}"), 400, "invalid-json"),
        (post("{\"records\": []}"), 400, "invalid-record"),
        (
            post("{\"records\": [{\"value\": {\"base64\": \"!!\"}}]}"),
            400,
            "invalid-record",
        ),
        (
            post("{\"records\": [{\"value\": 1, \"partition\": 9}]}"),
            404,
            "partition-not-found",
        ),
        (
            http()
                .post(format!("{url}/v1/topics/nope/records"))
                .json(&json!({"records": [{"value": 1}]})),
            404,
            "topic-not-found",
        ),
        (
            http()
                .post(format!("{url}/v1/topics/t/records"))
                .json(&json!({"records": [{"value": "x".repeat(2000)}]})),
            413,
            "record-too-large",
        ),
        (
            http()
                .post(format!("{url}/v1/topics/t/records"))
                .body(vec![b' '; 100_000]),
            413,
            "request-too-large",
        ),
        (
            http().get(format!("{url}/v1/topics/t/partitions/0/records?offset=5")),
            416,
            "offset-out-of-range",
        ),
        (
            http().get(format!("{url}/v1/topics/t/partitions/7/records")),
            404,
            "partition-not-found",
        ),
        (
            http().get(format!(
                "{url}/v1/topics/t/partitions/0/records?max_records=0"
            )),
            400,
            "invalid-parameter",
        ),
        (
            http().get(format!("{url}/v1/topics/t/partitions/0/records?offset=-1")),
            400,
            "invalid-parameter",
        ),
        (
            http().get(format!("{url}/v1/topics/t/partitions/x/records")),
            400,
            "invalid-parameter",
        ),
        (
            http().get(format!("{url}/v1/topics/t/partitions/0/records?ofset=1")),
            400,
            "invalid-parameter",
        ),
        (
            http()
                .post(format!("{url}/v1/topics"))
                .json(&json!({"name": "bad name"})),
            400,
            "invalid-topic-name",
        ),
        (
            http()
                .post(format!("{url}/v1/topics"))
                .json(&json!({"name": "x", "partitions": 0})),
            400,
            "invalid-config",
        ),
        (
            http()
                .post(format!("{url}/v1/topics"))
                .json(&json!({"name": "x", "retention_ms": -5})),
            400,
            "invalid-config",
        ),
        (
            http()
                .post(format!("{url}/v1/topics"))
                .json(&json!({"name": "x", "durability": "sometimes"})),
            400,
            "invalid-json",
        ),
        (
            http().put(format!("{url}/v1/topics/t")),
            405,
            "method-not-allowed",
        ),
        (http().get(format!("{url}/v2/nothing")), 404, "not-found"),
    ];
    for (i, (req, status, slug)) in cases.into_iter().enumerate() {
        let (got, body) = call(req).await;
        assert_eq!(got, status, "case {i}: {body}");
        assert_eq!(
            body["type"],
            format!("urn:ferry:problem:{slug}"),
            "case {i}: {body}"
        );
        assert_eq!(body["status"], status);
        assert!(!body["detail"].as_str().unwrap().is_empty());
    }
    // The out-of-range answer says where the partition's offsets are.
    let (_, body) =
        call(http().get(format!("{url}/v1/topics/t/partitions/0/records?offset=5"))).await;
    assert_eq!(
        (body["earliest"].as_u64(), body["latest"].as_u64()),
        (Some(0), Some(0))
    );
    // Nothing above wrote anything, and the topic that failed to be made does not exist.
    let (_, t) = call(http().get(format!("{url}/v1/topics/t"))).await;
    assert!(t["partition_stats"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["latest"] == 0 && p["size_bytes"] == 0));
    let (_, list) = call(http().get(format!("{url}/v1/topics"))).await;
    assert_eq!(list["topics"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_long_poll_returns_as_soon_as_a_record_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let url = s.url.clone();
    create_topic(&url, json!({"name": "t"})).await;
    let reader = tokio::spawn({
        let url = url.clone();
        async move {
            let started = Instant::now();
            let (_, v) = call(http().get(format!(
                "{url}/v1/topics/t/partitions/0/records?offset=0&wait_ms=10000"
            )))
            .await;
            (started.elapsed(), v)
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    produce(&url, "t", json!([{"value": "wake"}])).await;
    let (elapsed, v) = reader.await.unwrap();
    assert_eq!(v["records"][0]["value"], "wake");
    assert!(
        elapsed < Duration::from_secs(5),
        "returned after {elapsed:?}"
    );
    // With nothing to read, the wait ends at wait_ms with no records.
    let started = Instant::now();
    let (_, v) = call(http().get(format!(
        "{url}/v1/topics/t/partitions/0/records?offset=1&wait_ms=300"
    )))
    .await;
    assert!(v["records"].as_array().unwrap().is_empty());
    assert!(started.elapsed() >= Duration::from_millis(250));
}

#[tokio::test]
async fn data_and_topics_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    create_topic(
        &s.url,
        json!({"name": "keep", "partitions": 2, "retention_bytes": 1000000}),
    )
    .await;
    let records: Vec<_> = (0..50)
        .map(|i| json!({"key": format!("k{i}"), "value": i}))
        .collect();
    produce(&s.url, "keep", json!(records)).await;
    assert!(s.terminate().success());
    let s = Server::start(dir.path(), &[]);
    let (_, t) = call(http().get(format!("{}/v1/topics/keep", s.url))).await;
    assert_eq!(t["retention_bytes"], 1000000);
    let mut values: Vec<i64> = Vec::new();
    for p in 0..2 {
        values.extend(
            read_all(&s.url, "keep", p, 0)
                .await
                .iter()
                .map(|r| r["value"].as_i64().unwrap()),
        );
    }
    values.sort();
    assert_eq!(values, (0..50).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_second_server_on_the_same_data_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Server::start(dir.path(), &[]);
    let out = ferry_testkit::serve_command(BIN, dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another Ferry process"), "{err}");
}

#[tokio::test]
async fn old_segments_are_deleted_by_retention() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--retention-check-ms", "100"]);
    create_topic(
        &s.url,
        json!({"name": "r", "segment_bytes": 4096, "retention_ms": 60000}),
    )
    .await;
    // Records stamped in 2001 are past a one-minute retention at once.
    for _ in 0..10 {
        let records: Vec<_> = (0..10)
            .map(|_| json!({"value": "x".repeat(100), "timestamp": 1000000000000i64}))
            .collect();
        produce(&s.url, "r", json!(records)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, t) = call(http().get(format!("{}/v1/topics/r", s.url))).await;
        let p = &t["partition_stats"][0];
        // Retention removes expired segments one at a time: wait for all of them (on a
        // busy machine a look may fall between two removals).
        if p["earliest"].as_u64().unwrap() > 0 && p["segments"] == 1 {
            assert_eq!(p["latest"], 100);
            break;
        }
        assert!(Instant::now() < deadline, "retention did not run: {t}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_openapi_document_names_every_route() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let (status, doc) = call(http().get(format!("{}/v1/openapi.json", s.url))).await;
    assert_eq!(status, 200);
    for path in [
        "/v1/topics",
        "/v1/topics/{topic}",
        "/v1/topics/{topic}/records",
        "/v1/topics/{topic}/partitions/{partition}/records",
        "/v1/topics/{topic}/partitions/{partition}/offsets",
        "/v1/topics/{topic}/partitions/{partition}/delete-records",
        "/v1/subscriptions",
        "/v1/subscriptions/{name}",
        "/v1/subscriptions/{name}/pull",
        "/v1/subscriptions/{name}/ack",
        "/v1/subscriptions/{name}/nack",
        "/v1/subscriptions/{name}/extend",
        "/v1/subscriptions/{name}/seek",
        "/v1/subscriptions/{name}/purge",
        "/v1/subscriptions/{name}/redrive",
        "/v1/subscriptions/{name}/events",
        "/v1/subscriptions/{name}/pause",
        "/v1/subscriptions/{name}/resume",
        "/v1/subscriptions/{name}/retry",
        "/v1/subscriptions/{name}/rotate-secret",
        "/v1/subscriptions/{name}/deliveries",
        "/v1/sources",
        "/v1/sources/{name}",
        "/v1/sources/{name}/pause",
        "/v1/sources/{name}/resume",
        "/v1/sources/{name}/backfills",
        "/v1/sources/{name}/backfills/{id}",
        "/v1/groups",
        "/v1/groups/{group}",
        "/v1/whoami",
        "/v1/users",
        "/v1/users/{name}",
        "/v1/tokens",
        "/v1/tokens/{id}",
        "/v1/acls",
        "/healthz",
        "/readyz",
    ] {
        assert!(doc["paths"].get(path).is_some(), "missing {path}");
    }
    let (status, h) = call(http().get(format!("{}/healthz", s.url))).await;
    assert_eq!((status, h["status"].as_str()), (200, Some("ok")));
}

#[tokio::test]
async fn a_record_is_found_by_time() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    create_topic(&s.url, json!({"name": "t"})).await;
    let records: Vec<_> = (0..20)
        .map(|i| json!({"value": i, "timestamp": 1_000_000 + i * 1000}))
        .collect();
    produce(&s.url, "t", json!(records)).await;
    let (_, v) = call(http().get(format!(
        "{}/v1/topics/t/partitions/0/offsets?timestamp=1005500",
        s.url
    )))
    .await;
    assert_eq!(v["offset"], 6);
    let (_, v) = call(http().get(format!(
        "{}/v1/topics/t/partitions/0/offsets?timestamp=9999999999",
        s.url
    )))
    .await;
    assert_eq!(v["offset"], 20, "past every record: the latest offset");
}

#[tokio::test]
async fn an_oversized_chunked_body_without_a_length_is_refused_as_too_large() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--max-request-bytes", "4096"]);
    create_topic(&s.url, json!({"name": "t"})).await;
    let addr = s.url.trim_start_matches("http://").to_string();
    let answer = tokio::task::spawn_blocking(move || {
        let mut conn = std::net::TcpStream::connect(addr).unwrap();
        let mut req = b"POST /v1/topics/t/records HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
        for _ in 0..10 {
            req.extend_from_slice(b"400\r\n");
            req.extend_from_slice(&[b' '; 0x400]);
            req.extend_from_slice(b"\r\n");
        }
        req.extend_from_slice(b"0\r\n\r\n");
        let _ = conn.write_all(&req);
        let mut out = String::new();
        let _ = conn.read_to_string(&mut out);
        out
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains("urn:ferry:problem:request-too-large"),
        "{answer}"
    );
    let (_, t) = call(http().get(format!("{}/v1/topics/t", s.url))).await;
    assert_eq!(t["partition_stats"][0]["latest"], 0);
}

#[tokio::test]
async fn a_method_not_allowed_answer_says_which_are() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let resp = http()
        .put(format!("{}/v1/topics", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    let allow = resp
        .headers()
        .get("allow")
        .expect("Allow header")
        .to_str()
        .unwrap()
        .to_string();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
}

#[tokio::test]
async fn http2_cleartext_serves_the_api_with_many_requests_on_one_connection() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    create_topic(&s.url, json!({"name": "t", "partitions": 2})).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let requests: Vec<_> = (0..64)
        .map(|i| {
            let req = h2
                .post(format!("{}/v1/topics/t/records", s.url))
                .json(&json!({"records": [{"key": format!("k{i}"), "value": i}]}));
            tokio::spawn(async move {
                let resp = req.send().await.unwrap();
                assert_eq!(resp.version(), reqwest::Version::HTTP_2);
                assert_eq!(resp.status(), 200);
                resp.json::<serde_json::Value>().await.unwrap()
            })
        })
        .collect();
    for r in requests {
        let v = r.await.unwrap();
        assert!(v["offsets"][0]["offset"].is_u64(), "{v}");
    }
    // Problems are the same over HTTP/2.
    let resp = h2
        .post(format!("{}/v1/topics/missing/records", s.url))
        .json(&json!({"records": [{"value": 1}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let stored = read_all(&s.url, "t", 0, 0).await.len() + read_all(&s.url, "t", 1, 0).await.len();
    assert_eq!(stored, 64);
}

#[tokio::test]
async fn a_web_page_of_another_origin_cannot_change_anything() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    create_topic(&s.url, json!({"name": "orders"})).await;
    create_subscription(
        &s.url,
        json!({"name": "billing", "topic": "orders", "start": "earliest"}),
    )
    .await;
    let records = json!({"records": [{"value": 1}, {"value": 2}, {"value": 3}]});
    let (status, v) = call(
        http()
            .post(format!("{}/v1/topics/orders/records", s.url))
            .json(&records),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let host = s.url.trim_start_matches("http://").to_string();
    let purge = || http().post(format!("{}/v1/subscriptions/billing/purge", s.url));
    let backlog = || async {
        let (_, sub) = call(http().get(format!("{}/v1/subscriptions/billing", s.url))).await;
        sub["backlog"].as_u64()
    };
    // A page elsewhere, as a browser sends it: refused, and nothing changed.
    for req in [
        purge().header("origin", "http://evil.example"),
        purge().header("origin", "null"),
        purge().header("sec-fetch-site", "cross-site"),
    ] {
        let (status, v) = call(req).await;
        assert_eq!(status, 403, "{v}");
        assert_eq!(v["type"], "urn:ferry:problem:cross-site-request");
    }
    assert_eq!(backlog().await, Some(3));
    // Reads from anywhere are answered; the server's own origin (the web console) may
    // write, as may clients that send no origin.
    let (status, _) = call(
        http()
            .get(format!("{}/v1/subscriptions/billing", s.url))
            .header("origin", "http://evil.example"),
    )
    .await;
    assert_eq!(status, 200);
    let (status, v) = call(purge().header("origin", format!("http://{host}"))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(backlog().await, Some(0));
    let (status, v) = call(purge()).await;
    assert_eq!(status, 200, "{v}");
}
