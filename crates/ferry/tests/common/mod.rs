//! Starts the real `ferry` binary for tests and talks to it over HTTP.
#![allow(dead_code)]

pub mod endpoint;

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_ferry");

pub struct Server {
    pub child: Child,
    pub url: String,
    /// host:port of the Kafka listener.
    pub kafka: String,
    pub data_dir: PathBuf,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `ferry serve` on a free port with `data_dir` and waits until it is ready.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Server {
        Self::try_start(data_dir, extra)
            .unwrap_or_else(|logs| panic!("ferry did not start:\n{}", logs.join("\n")))
    }

    pub fn try_start(data_dir: &Path, extra: &[&str]) -> Result<Server, Vec<String>> {
        let mut child = Command::new(BIN)
            .args([
                "serve",
                "--http-addr",
                "127.0.0.1:0",
                "--kafka-addr",
                "127.0.0.1:0",
                "--log-format",
                "json",
                "--data-dir",
            ])
            .arg(data_dir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ferry");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if v["fields"]["message"] == "Ferry is ready." {
                        let field =
                            |k: &str| v["fields"][k].as_str().unwrap_or_default().to_string();
                        let _ = tx.send((field("http_addr"), field("kafka_addr")));
                    }
                }
                sink.lock().unwrap().push(line);
            }
        });
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok((addr, kafka)) => Ok(Server {
                child,
                url: format!("http://{addr}"),
                kafka,
                data_dir: data_dir.to_path_buf(),
                logs,
            }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                let l = logs.lock().unwrap().clone();
                Err(l)
            }
        }
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// `kill -9`: no chance to sync or clean up.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("ferry did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
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
