//! Starts the real `ferry` binary for tests and talks to it over HTTP.
#![allow(dead_code)]

pub mod endpoint;
pub mod kafka;
pub mod pg;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use ferry_testkit::Server;

pub const BIN: &str = env!("CARGO_BIN_EXE_ferry");

/// Starts this package's `ferry` binary: `Server::start(data_dir, extra)`.
pub trait StartFerry {
    /// Starts `ferry serve` on free ports with `data_dir` and waits until it is ready.
    fn start(data_dir: &Path, extra: &[&str]) -> Server {
        Self::try_start(data_dir, extra)
            .unwrap_or_else(|logs| panic!("ferry did not start:\n{}", logs.join("\n")))
    }

    /// As `start`; a server that does not get ready gives its log lines.
    fn try_start(data_dir: &Path, extra: &[&str]) -> Result<Server, Vec<String>>;
}

impl StartFerry for Server {
    fn try_start(data_dir: &Path, extra: &[&str]) -> Result<Server, Vec<String>> {
        match ferry_testkit::Launch::new(BIN, data_dir)
            .args(extra)
            .start()
        {
            Ok(s) => Ok(s),
            Err(ferry_testkit::StartError::NotReady(logs)) => Err(logs),
            Err(e) => panic!("spawn ferry: {e}"),
        }
    }
}

pub fn http() -> reqwest::Client {
    ferry_client::install_tls();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Sends a request and returns status and JSON body (Null when empty).
pub async fn call(req: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = resp.bytes().await.unwrap();
    if status >= 400 {
        assert_eq!(
            ctype.as_deref(),
            Some("application/problem+json"),
            "errors are problem+json: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, body)
}

pub async fn create_topic(url: &str, body: Value) -> Value {
    let (status, v) = call(http().post(format!("{url}/v1/topics")).json(&body)).await;
    assert_eq!(status, 201, "{v}");
    v
}

/// Creates a subscription (queue or push) and returns its description.
pub async fn create_subscription(url: &str, body: Value) -> Value {
    let (status, v) = call(http().post(format!("{url}/v1/subscriptions")).json(&body)).await;
    assert_eq!(status, 201, "{v}");
    v
}

pub async fn produce(url: &str, topic: &str, records: Value) -> (u16, Value) {
    call(
        http()
            .post(format!("{url}/v1/topics/{topic}/records"))
            .json(&serde_json::json!({ "records": records })),
    )
    .await
}

/// Every record of a partition from `offset` to the end.
pub async fn read_all(url: &str, topic: &str, partition: u32, offset: u64) -> Vec<Value> {
    let mut out = Vec::new();
    let mut next = offset;
    loop {
        let (status, v) = call(http().get(format!(
            "{url}/v1/topics/{topic}/partitions/{partition}/records?offset={next}&max_records=1000"
        )))
        .await;
        assert_eq!(status, 200, "{v}");
        let records = v["records"].as_array().unwrap().clone();
        if records.is_empty() {
            return out;
        }
        next = v["next_offset"].as_u64().unwrap();
        out.extend(records);
    }
}

/// The active (last) segment file of a partition in a data folder.
pub fn active_segment(data: &Path, topic: &str, partition: u32) -> PathBuf {
    let dir = data.join("topics").join(topic).join(partition.to_string());
    let mut logs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs.pop().unwrap()
}

/// Where each batch of a segment file starts, by the length fields (the file as Ferry
/// wrote it); the file's length last.
pub fn batch_positions(bytes: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut p = 0;
    while p + 12 <= bytes.len() {
        out.push(p);
        let len = u32::from_be_bytes(bytes[p + 8..p + 12].try_into().unwrap()) as usize;
        p += 12 + len;
    }
    out.push(bytes.len());
    out
}
