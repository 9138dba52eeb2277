//! A small async client for Ferry's HTTP API, used by the `ferry` CLI and benchmarks.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("could not reach Ferry at {url}: {reason}. Is `ferry serve` running? Point the CLI elsewhere with --url or FERRY_URL")]
    Unreachable { url: String, reason: String },
    #[error("{detail}")]
    Problem {
        status: u16,
        problem_type: String,
        title: String,
        detail: String,
        body: Value,
    },
    #[error("unexpected response from Ferry: {0}")]
    Protocol(String),
}

/// A record as the read API returns it.
#[derive(Debug, Clone, Deserialize)]
pub struct RecordOut {
    pub offset: u64,
    pub timestamp: i64,
    pub key: Value,
    pub value: Value,
    pub headers: serde_json::Map<String, Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ReadResponse {
    pub records: Vec<RecordOut>,
    pub next_offset: u64,
    pub earliest: u64,
    pub latest: u64,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub struct Placed {
    pub partition: u32,
    pub offset: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ProduceResponse {
    pub offsets: Vec<Placed>,
}

#[derive(Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    pub fn new(base_url: &str) -> Self {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Client {
            base: base_url.trim_end_matches('/').to_string(),
            http,
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    async fn send<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let resp = req.send().await.map_err(|e| ClientError::Unreachable {
            url: self.base.clone(),
            reason: std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string()),
        })?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        if !status.is_success() {
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let s = |k: &str| {
                body.get(k)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string()
            };
            return Err(ClientError::Problem {
                status: status.as_u16(),
                problem_type: s("type"),
                title: if s("title").is_empty() {
                    status.to_string()
                } else {
                    s("title")
                },
                detail: if s("detail").is_empty() {
                    String::from_utf8_lossy(&bytes).into_owned()
                } else {
                    s("detail")
                },
                body,
            });
        }
        if bytes.is_empty() {
            return serde_json::from_value(Value::Null)
                .map_err(|e| ClientError::Protocol(e.to_string()));
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn create_topic(&self, body: &Value) -> Result<Value, ClientError> {
        self.send(self.http.post(self.url("/v1/topics")).json(body))
            .await
    }

    pub async fn list_topics(&self) -> Result<Value, ClientError> {
        self.send(self.http.get(self.url("/v1/topics"))).await
    }

    pub async fn describe_topic(&self, topic: &str) -> Result<Value, ClientError> {
        self.send(self.http.get(self.url(&format!("/v1/topics/{topic}"))))
            .await
    }

    pub async fn update_topic(&self, topic: &str, body: &Value) -> Result<Value, ClientError> {
        self.send(
            self.http
                .patch(self.url(&format!("/v1/topics/{topic}")))
                .json(body),
        )
        .await
    }

    pub async fn delete_topic(&self, topic: &str) -> Result<(), ClientError> {
        let _: Value = self
            .send(self.http.delete(self.url(&format!("/v1/topics/{topic}"))))
            .await?;
        Ok(())
    }

    /// Produces records given in the API's JSON shape.
    pub async fn produce(
        &self,
        topic: &str,
        records: Vec<Value>,
    ) -> Result<ProduceResponse, ClientError> {
        self.send(
            self.http
                .post(self.url(&format!("/v1/topics/{topic}/records")))
                .json(&json!({ "records": records })),
        )
        .await
    }

    /// Produces a pre-serialised request body (benchmarks use this to keep JSON encoding
    /// out of the measurement).
    pub async fn produce_raw(
        &self,
        topic: &str,
        body: bytes_body::Body,
    ) -> Result<ProduceResponse, ClientError> {
        self.send(
            self.http
                .post(self.url(&format!("/v1/topics/{topic}/records")))
                .header("content-type", "application/json")
                .body(body.0),
        )
        .await
    }

    pub async fn read(
        &self,
        topic: &str,
        partition: u32,
        offset: Option<u64>,
        max_records: usize,
        wait: Duration,
    ) -> Result<ReadResponse, ClientError> {
        let mut url = format!(
            "/v1/topics/{topic}/partitions/{partition}/records?max_records={max_records}&wait_ms={}",
            wait.as_millis()
        );
        if let Some(o) = offset {
            url.push_str(&format!("&offset={o}"));
        }
        self.send(self.http.get(self.url(&url))).await
    }

    pub async fn offset_for_time(
        &self,
        topic: &str,
        partition: u32,
        timestamp_ms: i64,
    ) -> Result<u64, ClientError> {
        let v: Value = self
            .send(self.http.get(self.url(&format!(
                "/v1/topics/{topic}/partitions/{partition}/offsets?timestamp={timestamp_ms}"
            ))))
            .await?;
        v.get("offset")
            .and_then(|o| o.as_u64())
            .ok_or_else(|| ClientError::Protocol("no offset in answer".into()))
    }
}

/// A request body already serialised.
pub mod bytes_body {
    pub struct Body(pub Vec<u8>);
}
