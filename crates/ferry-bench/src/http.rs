//! HTTP produce and read against the real binary, durability "always".

use crate::server::Server;
use crate::Ctx;
use base64::Engine;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct HttpResult {
    pub clients: usize,
    /// Records in each produce request.
    pub per_request: usize,
    pub produce_records: u64,
    pub produce_bytes: u64,
    pub produce_secs: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub read_records: u64,
    pub read_bytes: u64,
    pub read_secs: f64,
}

/// A produce request body of `n` records with 1 KiB values (as base64 bytes).
pub fn produce_body(n: usize) -> Vec<u8> {
    let value = base64::engine::general_purpose::STANDARD.encode(vec![0x42u8; 1024]);
    let records: Vec<Value> = (0..n)
        .map(|_| json!({"value": {"base64": value}}))
        .collect();
    serde_json::to_vec(&json!({ "records": records })).expect("serialise")
}

/// Posts a produce request body to `url` (a topic's records route); an answer that is
/// not a success is an error.
pub async fn produce(
    http: &reqwest::Client,
    url: &str,
    body: impl Into<reqwest::Body>,
) -> anyhow::Result<()> {
    let r = http
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    let status = r.status();
    let text = r.text().await?;
    anyhow::ensure!(status.is_success(), "produce failed: {status} {text}");
    Ok(())
}

pub async fn run(ctx: &Ctx, seconds: u64, clients: &[usize]) -> anyhow::Result<Vec<HttpResult>> {
    run_for(ctx, Duration::from_secs(seconds), clients, 100).await
}

/// Runs of the HTTP workload so far in this process.
static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// What the HTTP workload runs against, besides the defaults.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// Extra `ferry serve` arguments.
    pub server_args: Vec<String>,
    /// Serve and call over TLS (HTTP/1.1), trusting this PEM authority.
    pub tls_ca_pem: Option<Vec<u8>>,
    /// The topic's durability [default: the server's, always].
    pub durability: Option<String>,
    /// Skip reading the records back.
    pub produce_only: bool,
    /// Environment variables of the server.
    pub env: Vec<(String, String)>,
}

/// Producers and readers over HTTP for `duration`, each client count in turn.
pub async fn run_for(
    ctx: &Ctx,
    duration: Duration,
    clients: &[usize],
    per_request: usize,
) -> anyhow::Result<Vec<HttpResult>> {
    run_with(ctx, duration, clients, per_request, &Target::default()).await
}

/// As [`run_for`], against `target`.
///
/// Longer than most functions on purpose: the whole measurement (start, load, stop,
/// figures) reads in one place, as the report describes it.
pub async fn run_with(
    ctx: &Ctx,
    duration: Duration,
    clients: &[usize],
    per_request: usize,
    target: &Target,
) -> anyhow::Result<Vec<HttpResult>> {
    let mut out = Vec::new();
    for &c in clients {
        let tls = if target.tls_ca_pem.is_some() {
            "-tls"
        } else {
            ""
        };
        // A fresh folder for each run, also when a workload is repeated.
        let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let data = ctx.dir.join(format!("http-{c}-{per_request}{tls}-{run}"));
        let args: Vec<&str> = target.server_args.iter().map(String::as_str).collect();
        let server = Server::start_env(ctx, &data, &args, &target.env).await?;
        let mut url = server.url.clone();
        let mut http = reqwest::Client::builder().pool_max_idle_per_host(c * 2);
        if let Some(ca) = &target.tls_ca_pem {
            url = url.replacen("http://", "https://", 1);
            http = http
                .http1_only()
                .tls_certs_only(vec![reqwest::Certificate::from_pem(ca)?]);
        }
        let http = http.build()?;
        let mut topic = json!({"name": "bench", "partitions": 4, "retention_ms": -1});
        if let Some(d) = &target.durability {
            topic["durability"] = json!(d);
        }
        let created = http
            .post(format!("{url}/v1/topics"))
            .json(&topic)
            .send()
            .await?;
        let status = created.status();
        anyhow::ensure!(
            status.is_success(),
            "creating the topic failed: {status} {}",
            created.text().await?
        );
        let body = Arc::new(produce_body(per_request));
        let started = Instant::now();
        let tasks: Vec<_> = (0..c)
            .map(|_| {
                let (http, body) = (http.clone(), Arc::clone(&body));
                let records_url = format!("{url}/v1/topics/bench/records");
                tokio::spawn(async move {
                    let mut h = Histogram::<u64>::new(3).expect("histogram");
                    let mut n = 0u64;
                    while started.elapsed() < duration {
                        let t = Instant::now();
                        produce(&http, &records_url, body.as_ref().clone()).await?;
                        h.record(t.elapsed().as_micros() as u64).ok();
                        n += per_request as u64;
                    }
                    Ok::<_, anyhow::Error>((n, h))
                })
            })
            .collect();
        let mut hist = Histogram::<u64>::new(3)?;
        let mut produced = 0u64;
        for t in tasks {
            let (n, h) = t.await??;
            produced += n;
            hist.add(h)?;
        }
        let produce_secs = started.elapsed().as_secs_f64();
        // Read every partition back, as fast as one reader per partition can.
        let started = Instant::now();
        let readers: Vec<_> = (0..4u32)
            .filter(|_| !target.produce_only)
            .map(|p| {
                let (http, url) = (http.clone(), url.clone());
                tokio::spawn(async move {
                    let (mut offset, mut n, mut bytes) = (0u64, 0u64, 0u64);
                    loop {
                        let r = http
                            .get(format!("{url}/v1/topics/bench/partitions/{p}/records?offset={offset}&max_records=2000&max_bytes=4194304"))
                            .send()
                            .await?;
                        let raw = r.bytes().await?;
                        let v: Value = serde_json::from_slice(&raw)?;
                        let k = v["records"].as_array().map_or(0, |r| r.len()) as u64;
                        if k == 0 {
                            return Ok::<_, anyhow::Error>((n, bytes));
                        }
                        n += k;
                        bytes += k * 1024;
                        offset = v["next_offset"].as_u64().unwrap_or(offset);
                    }
                })
            })
            .collect();
        let (mut read_records, mut read_bytes) = (0, 0);
        for r in readers {
            let (n, b) = r.await??;
            read_records += n;
            read_bytes += b;
        }
        let read_secs = started.elapsed().as_secs_f64();
        out.push(HttpResult {
            clients: c,
            per_request,
            produce_records: produced,
            produce_bytes: produced * 1024,
            produce_secs,
            p50_ms: hist.value_at_quantile(0.5) as f64 / 1000.0,
            p99_ms: hist.value_at_quantile(0.99) as f64 / 1000.0,
            read_records,
            read_bytes,
            read_secs,
        });
        drop(server);
    }
    Ok(out)
}
