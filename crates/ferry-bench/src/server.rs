//! Starting the real `ferry serve`: start time on an empty folder, recovery of a large
//! log after kill -9, and the server's memory.

use crate::Ctx;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// A running `ferry serve` (see `ferry_testkit`), killed when dropped.
pub struct Server {
    ferry: ferry_testkit::Server,
    pub url: String,
    /// The Kafka listener's address (host:port).
    pub kafka_addr: String,
    /// Wall time from spawn to the first answer of /readyz.
    pub ready_ms: f64,
}

impl std::ops::Deref for Server {
    type Target = ferry_testkit::Server;

    fn deref(&self) -> &ferry_testkit::Server {
        &self.ferry
    }
}

impl Server {
    /// Stops the server with SIGTERM and waits for it.
    pub fn terminate(self) {
        let _ = self.ferry.terminate();
    }

    /// Kills the server with SIGKILL.
    pub fn kill9(self) {
        self.ferry.kill9();
    }

    pub async fn start(ctx: &Ctx, data: &Path) -> anyhow::Result<Server> {
        Self::start_with(ctx, data, &[]).await
    }

    /// Starts with extra `ferry serve` arguments.
    pub async fn start_with(ctx: &Ctx, data: &Path, extra: &[&str]) -> anyhow::Result<Server> {
        Self::start_env(ctx, data, extra, &[]).await
    }

    /// Starts with extra `ferry serve` arguments and environment variables.
    pub async fn start_env(
        ctx: &Ctx,
        data: &Path,
        extra: &[&str],
        env: &[(String, String)],
    ) -> anyhow::Result<Server> {
        let started = Instant::now();
        let mut launch = ferry_testkit::Launch::new(&ctx.ferry_bin, data);
        for (k, v) in env {
            launch = launch.env(k, v);
        }
        let ferry = launch
            .args(["--log", "warn,ferry::serve=info"])
            .args(extra)
            .wait(Duration::from_secs(120))
            .drop_log_when_ready()
            .start()?;
        // Over TLS the log line that testkit waits for is the readiness signal.
        if !extra.contains(&"--tls-cert") {
            let http = reqwest::Client::new();
            while !http
                .get(format!("{}/readyz", ferry.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        }
        Ok(Server {
            url: ferry.url.clone(),
            kafka_addr: ferry.kafka.clone(),
            ready_ms: started.elapsed().as_secs_f64() * 1000.0,
            ferry,
        })
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
