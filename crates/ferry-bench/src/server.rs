//! Starting the real `ferry serve`: start time on an empty folder, recovery of a large
//! log after kill -9, and the server's memory.

use crate::Ctx;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    pub child: Child,
    pub url: String,
    /// The Kafka listener's address (host:port).
    pub kafka_addr: String,
    /// Wall time from spawn to the first answer of /readyz.
    pub ready_ms: f64,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    pub async fn start(ctx: &Ctx, data: &Path) -> anyhow::Result<Server> {
        Self::start_with(ctx, data, &[]).await
    }

    /// Starts with extra `ferry serve` arguments.
    pub async fn start_with(ctx: &Ctx, data: &Path, extra: &[&str]) -> anyhow::Result<Server> {
        let started = Instant::now();
        let mut child = Command::new(&ctx.ferry_bin)
            .args([
                "serve",
                "--http-addr",
                "127.0.0.1:0",
                "--kafka-addr",
                "127.0.0.1:0",
                "--log-format",
                "json",
                "--log",
                "warn,ferry::serve=info",
                "--data-dir",
            ])
            .arg(data)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if v["fields"]["message"] == "Ferry is ready." {
                        let field =
                            |k: &str| v["fields"][k].as_str().unwrap_or_default().to_string();
                        let _ = tx.send((field("http_addr"), field("kafka_addr")));
                    }
                }
            }
        });
        let (addr, kafka_addr) = rx
            .recv_timeout(Duration::from_secs(120))
            .map_err(|_| anyhow::anyhow!("ferry did not start"))?;
        let url = format!("http://{addr}");
        let http = reqwest::Client::new();
        loop {
            if http
                .get(format!("{url}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                break;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        Ok(Server {
            child,
            url,
            kafka_addr,
            ready_ms: started.elapsed().as_secs_f64() * 1000.0,
        })
    }

    /// Resident memory of the server process, in MiB.
    pub fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }
}

#[derive(Debug, Clone, Default)]
pub struct StartResult {
    pub runs: usize,
    pub empty_ready_ms: f64,
    pub empty_rss_mib: f64,
    pub log_mib: u64,
    pub recovery_ready_ms: f64,
    pub recovery_rss_mib: f64,
    pub after_read_rss_mib: f64,
}

pub async fn start_and_recovery(ctx: &Ctx, log_mib: u64) -> anyhow::Result<StartResult> {
    let mut times = Vec::new();
    let mut rss = 0.0;
    let runs = 7;
    for i in 0..runs {
        let s = Server::start(ctx, &ctx.dir.join(format!("empty-{i}"))).await?;
        times.push(s.ready_ms);
        rss = s.rss_mib();
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let data = ctx.dir.join("recovery");
    let s = Server::start(ctx, &data).await?;
    let http = reqwest::Client::new();
    http.post(format!("{}/v1/topics", s.url))
        .json(&json!({"name": "big", "partitions": 1, "durability": "never", "retention_ms": -1}))
        .send()
        .await?
        .error_for_status()?;
    let body = crate::http::produce_body(100);
    let batches = (log_mib * 1024 * 1024) / (100 * 1024);
    for _ in 0..batches {
        http.post(format!("{}/v1/topics/big/records", s.url))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await?
            .error_for_status()?;
    }
    drop(s); // kill -9
    let s = Server::start(ctx, &data).await?;
    let recovery_ready_ms = s.ready_ms;
    let recovery_rss_mib = s.rss_mib();
    let mut offset = 0u64;
    loop {
        let v: Value = http
            .get(format!("{}/v1/topics/big/partitions/0/records?offset={offset}&max_records=5000&max_bytes=8388608", s.url))
            .send()
            .await?
            .json()
            .await?;
        let n = v["records"].as_array().map_or(0, |r| r.len());
        if n == 0 {
            break;
        }
        offset = v["next_offset"].as_u64().unwrap_or(offset);
    }
    let after_read_rss_mib = s.rss_mib();
    Ok(StartResult {
        runs,
        empty_ready_ms: times[times.len() / 2],
        empty_rss_mib: rss,
        log_mib,
        recovery_ready_ms,
        recovery_rss_mib,
        after_read_rss_mib,
    })
}
