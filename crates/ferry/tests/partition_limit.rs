//! `--max-partitions` bounds the partitions of all topics together: each holds an open
//! file, so a client creating topics in a loop cannot exhaust the process's files.

mod common;
use common::*;
use serde_json::json;

#[tokio::test]
async fn creating_or_growing_topics_past_max_partitions_is_refused_with_409() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--max-partitions", "5"]);
    create_topic(&s.url, json!({"name": "a", "partitions": 3})).await;
    let (status, v) = call(
        http()
            .post(format!("{}/v1/topics", s.url))
            .json(&json!({"name": "b", "partitions": 3})),
    )
    .await;
    assert_eq!(status, 409, "{v}");
    assert_eq!(v["type"], "urn:ferry:problem:partition-limit", "{v}");
    assert_eq!(v["max_partitions"], 5, "{v}");
    assert!(
        v["detail"].as_str().unwrap().contains("6 partitions"),
        "{v}"
    );
    let (status, v) = call(
        http()
            .patch(format!("{}/v1/topics/a", s.url))
            .json(&json!({"partitions": 6})),
    )
    .await;
    assert_eq!(status, 409, "{v}");
    // Up to the limit is fine, and nothing was left behind by the refusals.
    create_topic(&s.url, json!({"name": "b", "partitions": 2})).await;
    let (status, v) = call(http().get(format!("{}/v1/topics", s.url))).await;
    assert_eq!(status, 200, "{v}");
    let names: Vec<&str> = v["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b"]);
    // Topics already on disk are opened at start even under a smaller limit.
    s.kill9();
    let s = Server::start(dir.path(), &["--max-partitions", "1"]);
    let (status, v) = call(http().get(format!("{}/v1/topics/a", s.url))).await;
    assert_eq!(status, 200, "{v}");
}
