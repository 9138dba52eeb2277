//! A small async client for Ferry's HTTP API, used by the `ferry` CLI and benchmarks.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
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
    /// The client cannot be made as asked (an unreadable CA file, for one).
    #[error("{0}")]
    Setup(String),
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

/// How a client proves who it is (docs/security.md).
#[derive(Clone, Default)]
pub enum Credentials {
    #[default]
    None,
    /// An API token, sent as `Authorization: Bearer`.
    Token(String),
    /// A user and password, sent as HTTP Basic.
    Basic { user: String, password: String },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::None => write!(f, "None"),
            Credentials::Token(_) => write!(f, "Token(..)"),
            Credentials::Basic { user, .. } => write!(f, "Basic({user})"),
        }
    }
}

#[derive(Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    credentials: Credentials,
}

impl Client {
    pub fn new(base_url: &str) -> Self {
        install_tls();
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Client {
            base: base_url.trim_end_matches('/').to_string(),
            http,
            credentials: Credentials::None,
        }
    }

    /// The same client, sending `credentials` with every request.
    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = credentials;
        self
    }

    fn authorize(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.credentials {
            Credentials::None => req,
            Credentials::Token(t) => req.bearer_auth(t),
            Credentials::Basic { user, password } => req.basic_auth(user, Some(password)),
        }
    }

    /// Any request to the API: `path` from the base URL, a JSON body if given; the JSON
    /// answer (`null` for an empty one).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let mut req = self.http.request(method, self.url(path));
        if let Some(b) = body {
            req = req.json(b);
        }
        self.send(req).await
    }

    /// A client with more settings than [`Client::new`]'s.
    pub fn builder(base_url: &str) -> ClientBuilder {
        ClientBuilder {
            base: base_url.to_string(),
            ca_file: None,
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    async fn send<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let resp = self
            .authorize(req)
            .send()
            .await
            .map_err(|e| ClientError::Unreachable {
                url: self.base.clone(),
                reason: std::error::Error::source(&e)
                    .map_or_else(|| e.to_string(), |s| s.to_string()),
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

    /// Deletes a partition's records below `before_offset` (`None`: every record
    /// readable now); answers the partition's new bounds.
    pub async fn delete_records(
        &self,
        topic: &str,
        partition: u32,
        before_offset: Option<u64>,
    ) -> Result<Value, ClientError> {
        let before = before_offset.map_or(Value::from("latest"), Value::from);
        self.send(
            self.http
                .post(self.url(&format!(
                    "/v1/topics/{topic}/partitions/{partition}/delete-records"
                )))
                .json(&serde_json::json!({ "before_offset": before })),
        )
        .await
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

    pub async fn create_subscription(&self, body: &Value) -> Result<Value, ClientError> {
        self.send(self.http.post(self.url("/v1/subscriptions")).json(body))
            .await
    }

    pub async fn list_subscriptions(&self) -> Result<Value, ClientError> {
        self.send(self.http.get(self.url("/v1/subscriptions")))
            .await
    }

    pub async fn describe_subscription(&self, name: &str) -> Result<Value, ClientError> {
        self.send(
            self.http
                .get(self.url(&format!("/v1/subscriptions/{name}"))),
        )
        .await
    }

    pub async fn update_subscription(
        &self,
        name: &str,
        body: &Value,
    ) -> Result<Value, ClientError> {
        self.send(
            self.http
                .patch(self.url(&format!("/v1/subscriptions/{name}")))
                .json(body),
        )
        .await
    }

    pub async fn delete_subscription(&self, name: &str) -> Result<(), ClientError> {
        let _: Value = self
            .send(
                self.http
                    .delete(self.url(&format!("/v1/subscriptions/{name}"))),
            )
            .await?;
        Ok(())
    }

    /// POSTs `body` to one of a subscription's operations (`pull`, `ack`, `seek`, …).
    async fn subscription_op(
        &self,
        name: &str,
        op: &str,
        body: &Value,
    ) -> Result<Value, ClientError> {
        self.send(
            self.http
                .post(self.url(&format!("/v1/subscriptions/{name}/{op}")))
                .json(body),
        )
        .await
    }

    /// Leases records; `body` as the pull API takes it (`max_records`, `wait_ms`,
    /// `consumer`, `visibility_timeout_ms`). Each record carries its `lease_id`.
    pub async fn pull(&self, name: &str, body: &Value) -> Result<Vec<Value>, ClientError> {
        let v = self.subscription_op(name, "pull", body).await?;
        match v.get("records") {
            Some(Value::Array(records)) => Ok(records.clone()),
            _ => Err(ClientError::Protocol("no records in answer".into())),
        }
    }

    /// Acknowledges leases; answers `{"acked": n}`.
    pub async fn ack(&self, name: &str, lease_ids: &[String]) -> Result<Value, ClientError> {
        self.subscription_op(name, "ack", &json!({ "lease_ids": lease_ids }))
            .await
    }

    /// Extends leases to end `visibility_timeout_ms` from now. Answers
    /// `{"lease_expires_at": ms}`.
    pub async fn extend(
        &self,
        name: &str,
        lease_ids: &[String],
        visibility_timeout_ms: u64,
    ) -> Result<Value, ClientError> {
        self.subscription_op(
            name,
            "extend",
            &json!({ "lease_ids": lease_ids, "visibility_timeout_ms": visibility_timeout_ms }),
        )
        .await
    }

    /// Gives leases back for redelivery, after `delay_ms` if given (else the retry
    /// policy's delay); `error` is kept with the record. Answers `{"nacked": n}`.
    pub async fn nack(
        &self,
        name: &str,
        lease_ids: &[String],
        delay_ms: Option<u64>,
        error: Option<&str>,
    ) -> Result<Value, ClientError> {
        let mut body = json!({ "lease_ids": lease_ids });
        if let Some(d) = delay_ms {
            body["delay_ms"] = json!(d);
        }
        if let Some(e) = error {
            body["error"] = json!(e);
        }
        self.subscription_op(name, "nack", &body).await
    }

    /// Moves a subscription to a position (`{"to": "earliest"}`, `{"offset": n}`, …);
    /// answers the subscription as `describe` does.
    pub async fn seek(&self, name: &str, body: &Value) -> Result<Value, ClientError> {
        self.subscription_op(name, "seek", body).await
    }

    /// Drops every record not yet done; answers the subscription as `describe` does.
    pub async fn purge(&self, name: &str) -> Result<Value, ClientError> {
        self.subscription_op(name, "purge", &json!({})).await
    }

    /// Sends dead-lettered records back to the subscription; answers `{"redriven": n}`.
    pub async fn redrive(
        &self,
        name: &str,
        max_records: Option<usize>,
    ) -> Result<Value, ClientError> {
        let body = match max_records {
            Some(n) => json!({ "max_records": n }),
            None => json!({}),
        };
        self.subscription_op(name, "redrive", &body).await
    }

    /// Stops a push subscription from sending (records wait); answers the subscription
    /// as `describe` does.
    pub async fn pause_subscription(&self, name: &str) -> Result<Value, ClientError> {
        self.subscription_op(name, "pause", &json!({})).await
    }

    /// Lets a paused push subscription send again; answers the subscription as
    /// `describe` does.
    pub async fn resume_subscription(&self, name: &str) -> Result<Value, ClientError> {
        self.subscription_op(name, "resume", &json!({})).await
    }

    /// Delivers one record of the topic to this subscription again; answers
    /// `{"partition", "offset", "copy": {"partition", "offset"}}`.
    pub async fn retry_record(
        &self,
        name: &str,
        partition: u32,
        offset: u64,
    ) -> Result<Value, ClientError> {
        self.subscription_op(
            name,
            "retry",
            &json!({ "partition": partition, "offset": offset }),
        )
        .await
    }

    /// Gives a push subscription a new signing secret (`secret`, or one generated by the
    /// server and shown once in the answer); the old one keeps signing for
    /// `previous_valid_ms` (the server's default when `None`). Answers the subscription.
    pub async fn rotate_secret(
        &self,
        name: &str,
        secret: Option<&str>,
        previous_valid_ms: Option<u64>,
    ) -> Result<Value, ClientError> {
        let mut body = json!({});
        if let Some(s) = secret {
            body["secret"] = json!(s);
        }
        if let Some(ms) = previous_valid_ms {
            body["previous_valid_ms"] = json!(ms);
        }
        self.subscription_op(name, "rotate-secret", &body).await
    }

    /// Attempts of a push subscription from its delivery log, newest first; of one
    /// record when `record` is `(partition, offset)`. Answers `{"deliveries": [...]}`.
    pub async fn deliveries(
        &self,
        name: &str,
        record: Option<(u32, u64)>,
        limit: Option<usize>,
    ) -> Result<Value, ClientError> {
        let mut query: Vec<String> = Vec::new();
        if let Some((p, o)) = record {
            query.push(format!("partition={p}"));
            query.push(format!("offset={o}"));
        }
        if let Some(n) = limit {
            query.push(format!("limit={n}"));
        }
        let mut path = format!("/v1/subscriptions/{name}/deliveries");
        if !query.is_empty() {
            path.push('?');
            path.push_str(&query.join("&"));
        }
        self.send(self.http.get(self.url(&path))).await
    }
}

/// Settings of a [`Client`], from [`Client::builder`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    base: String,
    ca_file: Option<PathBuf>,
}

impl ClientBuilder {
    /// Also trusts the authorities in this PEM file (for an `https` server whose
    /// certificate a private authority signed); `None` leaves the system's alone.
    pub fn ca_file(mut self, path: Option<&Path>) -> Self {
        self.ca_file = path.map(Path::to_path_buf);
        self
    }

    pub fn build(self) -> Result<Client, ClientError> {
        install_tls();
        let mut http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true);
        if let Some(path) = &self.ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                ClientError::Setup(format!("cannot read the CA file {}: {e}", path.display()))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                ClientError::Setup(format!(
                    "the CA file {} is not PEM certificates: {e}",
                    path.display()
                ))
            })?;
            if certs.is_empty() {
                return Err(ClientError::Setup(format!(
                    "the CA file {} holds no certificate",
                    path.display()
                )));
            }
            http = http.tls_certs_merge(certs);
        }
        let http = http
            .build()
            .map_err(|e| ClientError::Setup(format!("cannot make an HTTP client: {e}")))?;
        Ok(Client {
            base: self.base.trim_end_matches('/').to_string(),
            http,
            credentials: Credentials::None,
        })
    }
}

/// A request body already serialised.
pub mod bytes_body {
    pub struct Body(pub Vec<u8>);
}

/// Installs the TLS crypto provider (ring) for HTTP clients in this process; needed
/// once before the first client is built, harmless after.
pub fn install_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
