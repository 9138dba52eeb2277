//! The web console's files and the consumer group routes it reads, through the real
//! binary. The pages themselves are tested in Chromium by scripts/test-ui.sh.

mod common;
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A client that shows redirects instead of following them.
fn no_redirects() -> reqwest::Client {
    ferry_client::install_tls();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// The local files a page or script names: `src="..."`, `href="..."` (not `#...`, not
/// absolute) and `from './x.js'`, resolved against `base` (a path ending with `/`).
fn references(text: &str, base: &str) -> Vec<String> {
    let mut out = Vec::new();
    for marker in ["src=\"", "href=\"", "from '"] {
        for piece in text.split(marker).skip(1) {
            let end = marker.chars().last().unwrap();
            let target = piece.split(end).next().unwrap_or_default();
            if target.is_empty() || target.starts_with('#') || target.starts_with('/') {
                continue;
            }
            let mut parts: Vec<&str> = base.trim_end_matches('/').split('/').collect();
            for segment in target.split('/') {
                match segment {
                    "." => {}
                    ".." => {
                        parts.pop();
                    }
                    s => parts.push(s),
                }
            }
            out.push(parts.join("/"));
        }
    }
    out
}

#[tokio::test]
async fn the_console_page_is_html_with_a_content_security_policy() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let r = http().get(format!("{}/ui/", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), "text/html; charset=utf-8");
    let csp = header(&r, "content-security-policy").to_string();
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(header(&r, "x-content-type-options"), "nosniff");
    assert_eq!(header(&r, "x-frame-options"), "DENY");
    let etag = header(&r, "etag").to_string();
    let page = r.text().await.unwrap();
    assert!(page.contains("<script type=\"module\" src=\"js/app.js\"></script>"));

    let again = http()
        .get(format!("{}/ui/", s.url))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304, "the same version is not sent twice");

    for (from, to, status) in [("/ui", "/ui/", 308), ("/", "/ui/", 307)] {
        let r = no_redirects()
            .get(format!("{}{from}", s.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{from}");
        assert_eq!(header(&r, "location"), to, "{from}");
    }
}

/// Every file the page names, and every module each script imports, is served with its
/// content type and the security headers: a missing one would leave the console blank.
#[tokio::test]
async fn every_console_file_the_page_needs_is_served_with_its_content_type() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let page = http()
        .get(format!("{}/ui/", s.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut todo = references(&page, "/ui/");
    let mut seen = BTreeSet::new();
    while let Some(path) = todo.pop() {
        if !seen.insert(path.clone()) {
            continue;
        }
        let r = http().get(format!("{}{path}", s.url)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let expected = match path.rsplit_once('.').map(|(_, e)| e) {
            Some("js") => "text/javascript; charset=utf-8",
            Some("css") => "text/css; charset=utf-8",
            Some("svg") => "image/svg+xml",
            other => panic!("unexpected file {path} ({other:?})"),
        };
        assert_eq!(header(&r, "content-type"), expected, "{path}");
        assert!(
            header(&r, "content-security-policy").starts_with("default-src 'self'"),
            "{path}"
        );
        if path.ends_with(".js") {
            let text = r.text().await.unwrap();
            for markup in [
                ".innerHTML",
                ".outerHTML",
                "insertAdjacentHTML(",
                "document.write(",
            ] {
                assert!(!text.contains(markup), "{path} writes markup with {markup}");
            }
            let base = format!("{}/", path.rsplit_once('/').unwrap().0);
            todo.extend(references(&text, &base));
        }
    }
    for needed in [
        "/ui/app.css",
        "/ui/favicon.svg",
        "/ui/js/app.js",
        "/ui/js/pages/groups.js",
    ] {
        assert!(seen.contains(needed), "{needed} in {seen:?}");
    }

    let (status, problem) = call(http().get(format!("{}/ui/js/missing.js", s.url))).await;
    assert_eq!(status, 404);
    assert_eq!(problem["type"], "urn:ferry:problem:not-found");
    let (status, problem) = call(http().post(format!("{}/ui/", s.url))).await;
    assert_eq!(status, 405, "{problem}");
}

/// The members of a JSON object, and those the OpenAPI schema `name` lists: the same,
/// as every schema of the document refuses other members.
fn assert_shape(doc: &Value, name: &str, object: &Value) {
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

#[tokio::test]
async fn without_groups_the_list_is_empty_and_a_group_is_404() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let (status, list) = call(http().get(format!("{}/v1/groups", s.url))).await;
    assert_eq!(status, 200);
    assert_eq!(list, json!({"groups": []}));
    let (status, problem) = call(http().get(format!("{}/v1/groups/nobody", s.url))).await;
    assert_eq!(status, 404, "{problem}");
    assert_eq!(problem["type"], "urn:ferry:problem:group-not-found");
    assert_eq!(problem["status"], 404);
    let (_, doc) = call(http().get(format!("{}/v1/openapi.json", s.url))).await;
    for path in ["/v1/groups", "/v1/groups/{group}", "/ui/"] {
        assert!(doc["paths"].get(path).is_some(), "{path} is documented");
    }
}

/// A kcat consumer, a member of `group` reading `topic` from the start and committing
/// often.
fn kcat_member(kafka: &str, group: &str, topic: &str) -> Child {
    Command::new("kcat")
        .env_remove("LD_LIBRARY_PATH")
        .args(["-b", kafka, "-G", group, "-q"])
        .args(["-X", "auto.offset.reset=earliest"])
        .args(["-X", "auto.commit.interval.ms=100"])
        .args(["-X", "client.id=console-test"])
        .arg(topic)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("kcat is installed (scripts/test.sh installs it with apt-get)")
}

async fn group_until(url: &str, group: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, g) = call(http().get(format!("{url}/v1/groups/{group}"))).await;
        if status == 200 && ok(&g) {
            return g;
        }
        assert!(Instant::now() < deadline, "{what}: {status} {g}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_kafka_consumer_group_shows_its_member_assignment_and_lag() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    create_topic(&s.url, json!({"name": "orders", "partitions": 2})).await;
    let records: Vec<Value> = (0..6)
        .map(|i| json!({"value": i, "partition": i % 2}))
        .collect();
    produce(&s.url, "orders", json!(records)).await;
    let mut member = kcat_member(&s.kafka, "audit", "orders");
    let g = group_until(&s.url, "audit", "a member that read everything", |g| {
        g["state"] == "Stable"
            && g["lag"] == 0
            && g["offsets"].as_array().map(Vec::len) == Some(2)
            && g["offsets"]
                .as_array()
                .unwrap()
                .iter()
                .all(|o| o["committed"] == 3)
    })
    .await;
    let (_, doc) = call(http().get(format!("{}/v1/openapi.json", s.url))).await;
    assert_shape(&doc, "Group", &g);
    assert_eq!(g["protocol_type"], "consumer");
    assert_eq!(g["topics"], json!(["orders"]));
    let members = g["members"].as_array().unwrap();
    assert_eq!(members.len(), 1);
    assert_shape(&doc, "GroupMember", &members[0]);
    assert_eq!(members[0]["client_id"], "console-test");
    assert_eq!(members[0]["member_id"], g["leader"]);
    assert_eq!(
        members[0]["assignment"],
        json!([{"topic": "orders", "partitions": [0, 1]}])
    );
    for o in g["offsets"].as_array().unwrap() {
        assert_shape(&doc, "GroupOffset", o);
        assert_eq!(o["end_offset"], 3);
    }

    member.kill().unwrap();
    member.wait().unwrap();
    produce(&s.url, "orders", json!([{"value": "late", "partition": 1}])).await;
    produce(
        &s.url,
        "orders",
        json!([{"value": "later", "partition": 1}]),
    )
    .await;
    let g = group_until(&s.url, "audit", "lag 2 on partition 1", |g| g["lag"] == 2).await;
    let by_partition: Vec<(Value, Value, Value)> = g["offsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["committed"].clone(),
                o["end_offset"].clone(),
                o["lag"].clone(),
            )
        })
        .collect();
    assert_eq!(
        by_partition,
        vec![
            (json!(3), json!(3), json!(0)),
            (json!(3), json!(5), json!(2))
        ]
    );
    let (status, list) = call(http().get(format!("{}/v1/groups", s.url))).await;
    assert_eq!(status, 200);
    let summary = &list["groups"][0];
    assert_shape(&doc, "GroupSummary", summary);
    assert_eq!(summary["group"], "audit");
    assert_eq!(summary["lag"], 2);
    assert_eq!(summary["topics"], json!(["orders"]));
}
