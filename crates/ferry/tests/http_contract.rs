//! The HTTP API against its OpenAPI document (issue 19, point 3): what schemathesis found,
//! as tests through the real binary. scripts/schemathesis.sh runs schemathesis itself.

mod common;
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The log lines of `s` (JSON) that say a request failed with a 5xx, waiting up to 5 s.
async fn server_error_lines(s: &Server) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let lines: Vec<Value> = s
            .logs()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["fields"]["message"] == "HTTP request failed with a server error.")
            .collect();
        if !lines.is_empty() || Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn every_5xx_answer_is_logged_with_its_method_path_and_cause() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    // A file where the topic's folder must go: creating the topic fails on the disk.
    std::fs::create_dir_all(dir.path().join("topics")).unwrap();
    std::fs::write(dir.path().join("topics").join("blocked"), b"not a folder").unwrap();
    let (status, problem) = call(
        http()
            .post(format!("{}/v1/topics", s.url))
            .json(&json!({"name": "blocked"})),
    )
    .await;
    assert!(status >= 500, "{status} {problem}");
    let lines = server_error_lines(&s).await;
    assert_eq!(lines.len(), 1, "{:?}", s.logs());
    let f = &lines[0]["fields"];
    assert_eq!(f["method"], "POST");
    assert_eq!(f["path"], "/v1/topics");
    assert_eq!(f["status"], status);
    let cause = f["cause"].as_str().unwrap_or_default();
    let slug = problem["type"].as_str().unwrap_or_default();
    assert!(
        slug.ends_with(cause.split(':').next().unwrap_or("?")),
        "{cause} / {slug}"
    );
    assert!(
        cause.contains(problem["detail"].as_str().unwrap_or("?")),
        "{cause}"
    );
}

/// Each segment keeps its file open: topics with more partitions than the server has
/// files left once failed with 500 `storage-error` ("Too many open files") and left
/// the server short of files for everything else. They are now refused up front with
/// 409 `partition-limit`, and the server goes on answering.
#[tokio::test]
async fn partitions_past_the_open_file_limit_are_409_not_a_5xx() {
    let dir = tempfile::tempdir().unwrap();
    // 256 files: 128 are set aside for connections and other files, 128 for segments.
    let s = ferry_testkit::Launch::new(BIN, dir.path())
        .open_files_limit(256)
        .start()
        .expect("ferry serve starts");
    let create = |name: &str, partitions: u32| {
        http()
            .post(format!("{}/v1/topics", s.url))
            .json(&json!({"name": name, "partitions": partitions}))
    };
    let (status, _) = call(create("a", 100)).await;
    assert_eq!(status, 201);
    let (status, problem) = call(create("b", 200)).await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(problem["type"], "urn:ferry:problem:partition-limit");
    assert_eq!(problem["max_open_segments"], 128);
    let grow = |partitions: u32| {
        http()
            .patch(format!("{}/v1/topics/a", s.url))
            .json(&json!({ "partitions": partitions }))
    };
    let (status, problem) = call(grow(10_000)).await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(problem["type"], "urn:ferry:problem:partition-limit");
    let (status, topic) = call(grow(120)).await;
    assert_eq!(status, 200, "{topic}");
    assert_eq!(topic["partitions"], 120);
    let (status, _) = call(create("c", 8)).await;
    assert_eq!(status, 201, "the files left still take a small topic");
    let (status, _) = call(create("d", 8)).await;
    assert_eq!(status, 409);
    let (status, list) = call(http().get(format!("{}/v1/topics", s.url))).await;
    assert_eq!(status, 200, "{list}");
    assert!(
        server_error_lines(&s).await.is_empty(),
        "no 5xx: {:?}",
        s.logs()
    );
}

/// `headers` takes up to 64 headers (the OpenAPI document); `deliver_at` and `delay_ms`
/// add Ferry's own `ferry-deliver-at`, which once counted against the client's 64 and
/// refused a valid record with 400.
#[tokio::test]
async fn sixty_four_headers_and_a_delivery_time_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    create_topic(&s.url, json!({"name": "t"})).await;
    let headers: Vec<Value> = (0..64)
        .map(|i| json!({"key": format!("h{i}"), "value": "v"}))
        .collect();
    for extra in [json!({"deliver_at": 0}), json!({"delay_ms": 10})] {
        let mut record = json!({"value": 1, "headers": headers});
        record
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (status, body) = produce(&s.url, "t", json!([record])).await;
        assert_eq!(status, 200, "{extra}: {body}");
    }
    let (status, body) = produce(
        &s.url,
        "t",
        json!([{"value": 1, "headers": headers, "delay_ms": 10}, {"headers": (0..65).map(|i| json!({"key": format!("h{i}")})).collect::<Vec<_>>()}]),
    )
    .await;
    assert_eq!(status, 400, "65 headers of the client's own: {body}");
    let records = read_all(&s.url, "t", 0, 0).await;
    assert_eq!(records.len(), 2);
    assert!(records
        .iter()
        .all(|r| r["headers"].as_object().unwrap().len() == 65));
}

/// JSON numbers are read exactly: a decimal in a record's value is stored as sent (it
/// was once read to the nearest of a few neighbours, `2251799813685247.0` becoming
/// `2251799813685247.2`), and an integral decimal where an integer is due is that
/// integer (`flush_interval_ms` `2251799813685247.0` was refused as a fraction).
#[tokio::test]
async fn decimal_numbers_are_read_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let (status, topic) = call(
        http()
            .post(format!("{}/v1/topics", s.url))
            .header("content-type", "application/json")
            .body(r#"{"name": "t", "flush_interval_ms": 2251799813685247.0}"#),
    )
    .await;
    assert_eq!(status, 201, "{topic}");
    assert_eq!(topic["flush_interval_ms"], 2_251_799_813_685_247u64);
    let (status, body) = call(
        http()
            .post(format!("{}/v1/topics/t/records", s.url))
            .header("content-type", "application/json")
            .body(r#"{"records": [{"value": [2251799813685247.0, 0.1, 1e300]}]}"#),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let text = http()
        .get(format!("{}/v1/topics/t/partitions/0/records", s.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(r#""value":[2251799813685247.0,0.1,1e+300]"#),
        "{text}"
    );
}

/// A push subscription cannot be pulled: its event stream is refused with 400
/// `invalid-config` before it starts, as a pull is. It used to answer 200 and send
/// the same `event: error` every second for as long as the client listened.
#[tokio::test]
async fn the_event_stream_of_a_push_subscription_is_400() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--push-allow-private"]);
    create_topic(&s.url, json!({"name": "t"})).await;
    let (status, sub) = call(
        http()
            .post(format!("{}/v1/subscriptions", s.url))
            .json(&json!({"name": "hook", "topic": "t", "push": {"url": "http://127.0.0.1:9/"}})),
    )
    .await;
    assert_eq!(status, 201, "{sub}");
    let (status, problem) = call(
        http()
            .get(format!("{}/v1/subscriptions/hook/events", s.url))
            .timeout(Duration::from_secs(5)),
    )
    .await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(problem["type"], "urn:ferry:problem:invalid-config");
}

/// The answers of the source routes that need no database are those the document
/// gives: an empty list, 404 for a name no source has, 400 for settings that break a
/// rule, 422 for a database that cannot be reached (port 1 of the loopback refuses at
/// once), after which nothing is kept.
#[tokio::test]
async fn source_routes_answer_as_the_document_says_without_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let (_, doc) = call(http().get(format!("{}/v1/openapi.json", s.url))).await;
    let documented = |path: &str, method: &str, status: u16| {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is documented");
        assert!(
            op["responses"].get(status.to_string()).is_some(),
            "{method} {path} documents {status}"
        );
    };

    let (status, list) = call(http().get(format!("{}/v1/sources", s.url))).await;
    assert_eq!((status, list), (200, json!({"sources": []})));
    documented("/v1/sources", "get", 200);

    for (method, path) in [
        (reqwest::Method::GET, "/v1/sources/nope"),
        (reqwest::Method::DELETE, "/v1/sources/nope"),
        (reqwest::Method::POST, "/v1/sources/nope/pause"),
        (reqwest::Method::POST, "/v1/sources/nope/resume"),
    ] {
        let (status, problem) =
            call(http().request(method.clone(), format!("{}{path}", s.url))).await;
        assert_eq!(status, 404, "{method} {path}: {problem}");
        assert_eq!(problem["type"], "urn:ferry:problem:source-not-found");
    }
    let (status, problem) = call(
        http()
            .patch(format!("{}/v1/sources/nope", s.url))
            .json(&json!({"tombstones": false})),
    )
    .await;
    assert_eq!(status, 404, "{problem}");
    documented("/v1/sources/{name}", "patch", 404);

    let create = |body: Value| http().post(format!("{}/v1/sources", s.url)).json(&body);
    let unreachable = "postgres://nobody:x@127.0.0.1:1/none";
    for (body, status, slug) in [
        (
            json!({"name": "Shop", "url": unreachable}),
            400,
            "invalid-source",
        ),
        (
            json!({"name": "shop", "url": "mysql://u@h/d"}),
            400,
            "invalid-source",
        ),
        (
            json!({"name": "shop", "url": unreachable, "operations": ["x"]}),
            400,
            "invalid-source",
        ),
        (
            json!({"name": "shop", "url": unreachable, "tables": [".t"]}),
            400,
            "invalid-source",
        ),
        (
            json!({"name": "shop", "url": unreachable, "nope": 1}),
            400,
            "invalid-json",
        ),
        (
            json!({"name": "shop", "url": unreachable, "outbox": "t"}),
            400,
            "invalid-json",
        ),
        (
            json!({"name": "shop", "url": unreachable}),
            422,
            "source-unreachable",
        ),
    ] {
        let (got, problem) = call(create(body.clone())).await;
        assert_eq!(got, status, "{body}: {problem}");
        assert_eq!(
            problem["type"],
            format!("urn:ferry:problem:{slug}"),
            "{body}"
        );
        documented("/v1/sources", "post", status);
    }
    let (_, list) = call(http().get(format!("{}/v1/sources", s.url))).await;
    assert_eq!(list, json!({"sources": []}), "a refused source is not kept");
}

/// The backfill routes of a source that does not exist: the body is parsed first
/// (`invalid-json`), then the source is looked up (404 `source-not-found`, before the
/// table or `where` is looked at); a backfill id that is not an unsigned integer is a
/// bad path parameter. `backfill-not-found` needs a source, so a database: the
/// Postgres tests cover it.
#[tokio::test]
async fn backfill_routes_of_a_missing_source_answer_as_the_document_says() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let (_, doc) = call(http().get(format!("{}/v1/openapi.json", s.url))).await;
    let documented = |path: &str, method: &str, status: u16| {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is documented");
        assert!(
            op["responses"].get(status.to_string()).is_some(),
            "{method} {path} documents {status}"
        );
    };

    let backfill = |body: Value| {
        http()
            .post(format!("{}/v1/sources/nope/backfills", s.url))
            .json(&body)
    };
    for (body, status, slug) in [
        (json!({"table": "public.orders"}), 404, "source-not-found"),
        (
            json!({"table": "public.orders", "where": "id > 10"}),
            404,
            "source-not-found",
        ),
        (
            json!({"table": "public.orders", "where": "1; DROP TABLE orders"}),
            404,
            "source-not-found",
        ),
        (json!({"where": "id > 10"}), 400, "invalid-json"),
        (
            json!({"table": "public.orders", "nope": 1}),
            400,
            "invalid-json",
        ),
        (json!({"table": 7}), 400, "invalid-json"),
    ] {
        let (got, problem) = call(backfill(body.clone())).await;
        assert_eq!(got, status, "{body}: {problem}");
        assert_eq!(
            problem["type"],
            format!("urn:ferry:problem:{slug}"),
            "{body}"
        );
        documented("/v1/sources/{name}/backfills", "post", status);
    }

    for (id, status, slug) in [
        ("1", 404, "source-not-found"),
        ("0", 404, "source-not-found"),
        ("x", 400, "invalid-parameter"),
        ("-1", 400, "invalid-parameter"),
        ("18446744073709551616", 400, "invalid-parameter"),
    ] {
        let (got, problem) =
            call(http().delete(format!("{}/v1/sources/nope/backfills/{id}", s.url))).await;
        assert_eq!(got, status, "{id}: {problem}");
        assert_eq!(problem["type"], format!("urn:ferry:problem:{slug}"), "{id}");
        documented("/v1/sources/{name}/backfills/{id}", "delete", status);
    }
    assert!(doc["components"]["schemas"]["Problem"]["description"]
        .as_str()
        .unwrap_or_default()
        .contains("backfill-not-found"));
}
