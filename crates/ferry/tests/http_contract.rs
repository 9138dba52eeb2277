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
    assert!(slug.ends_with(cause.split(':').next().unwrap_or("?")), "{cause} / {slug}");
    assert!(cause.contains(problem["detail"].as_str().unwrap_or("?")), "{cause}");
}
