//! Push subscriptions against a local endpoint that answers at once: deliveries per
//! second with 1 and 64 requests in flight, next to what `wrk` reaches on the same
//! endpoint in the same run; and the server's memory with a backlog behind an open
//! circuit breaker.

use crate::queue::{describe, post};
use crate::server::Server;
use crate::Ctx;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One round: `wrk`, then Ferry, on the same endpoint.
#[derive(Debug, Clone)]
pub struct Round {
    /// Ferry's deliveries per second.
    pub rate: f64,
    /// `wrk` on the same endpoint with as many connections, requests/s (0: no wrk).
    pub wrk_rps: f64,
    /// Ferry's CPU time (user and system, all threads) per delivery, microseconds.
    pub cpu_us: f64,
}

#[derive(Debug, Clone)]
pub struct PushResult {
    pub in_flight: u32,
    pub records: u64,
    pub rounds: Vec<Round>,
}

impl PushResult {
    /// The round with the median Ferry / wrk ratio (the median rate without wrk).
    pub fn median(&self) -> Option<&Round> {
        let mut r: Vec<&Round> = self.rounds.iter().collect();
        let key = |x: &Round| {
            if x.wrk_rps > 0.0 {
                x.rate / x.wrk_rps
            } else {
                x.rate
            }
        };
        r.sort_by(|a, b| key(a).total_cmp(&key(b)));
        r.get(r.len() / 2).copied()
    }
}

/// CPU seconds (user and system) a process has used so far.
fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) closed by ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(11) + ticks(12)) / hz
}

#[derive(Debug, Clone, Default)]
pub struct OpenBreakerResult {
    pub records: u64,
    pub rss_before_mib: f64,
    pub peak_rss_mib: f64,
    pub rss_after_mib: f64,
    pub endpoint_requests: u64,
    pub breaker: String,
}

struct Endpoint {
    addr: std::net::SocketAddr,
    hits: Arc<AtomicU64>,
    failing: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An endpoint that answers 200 at once (or 503 while `failing`).
async fn endpoint() -> anyhow::Result<Endpoint> {
    let hits = Arc::new(AtomicU64::new(0));
    let failing = Arc::new(AtomicBool::new(false));
    let (h, f) = (Arc::clone(&hits), Arc::clone(&failing));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::any(move || {
            let (h, f) = (Arc::clone(&h), Arc::clone(&f));
            async move {
                h.fetch_add(1, Ordering::Relaxed);
                if f.load(Ordering::Relaxed) {
                    axum::http::StatusCode::SERVICE_UNAVAILABLE
                } else {
                    axum::http::StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(Endpoint {
        addr,
        hits,
        failing,
        task,
    })
}

/// `wrk` against `url` with `connections` for `secs`; requests/s, or 0 without wrk.
fn wrk(url: &str, connections: u32, secs: u64) -> f64 {
    let threads = connections.clamp(1, 2).to_string();
    let out = std::process::Command::new("wrk")
        .args([
            "-t",
            &threads,
            "-c",
            &connections.to_string(),
            "-d",
            &format!("{secs}s"),
            "-s",
        ])
        .arg(wrk_post_script())
        .arg(url)
        .output();
    let Ok(out) = out else { return 0.0 };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A wrk script that POSTs a small JSON body, like a webhook.
fn wrk_post_script() -> std::path::PathBuf {
    let path = std::env::temp_dir().join("ferry-bench-wrk-post.lua");
    let _ = std::fs::write(
        &path,
        "wrk.method = \"POST\"\nwrk.body = '{\"n\":1}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\n",
    );
    path
}

async fn produce(http: &reqwest::Client, url: &str, topic: &str, n: u64) -> anyhow::Result<()> {
    let batch = 5000u64;
    let records: Vec<Value> = (0..batch).map(|i| json!({"value": {"n": i}})).collect();
    let body = serde_json::to_vec(&json!({ "records": records }))?;
    let mut left = n;
    while left > 0 {
        let take = left.min(batch);
        let b = if take == batch {
            body.clone()
        } else {
            let r: Vec<Value> = (0..take).map(|i| json!({"value": {"n": i}})).collect();
            serde_json::to_vec(&json!({ "records": r }))?
        };
        let r = http
            .post(format!("{url}/v1/topics/{topic}/records"))
            .header("content-type", "application/json")
            .body(b)
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "produce failed: {}", r.status());
        left -= take;
    }
    Ok(())
}

/// Delivers `records` records with each in-flight limit and measures the rate. Each
/// limit runs `rounds` rounds of `wrk` then Ferry, so that every ratio compares runs a
/// few seconds apart on a machine whose speed varies.
pub async fn run(
    ctx: &Ctx,
    records: u64,
    in_flight: &[u32],
    wrk_secs: u64,
    rounds: u32,
) -> anyhow::Result<Vec<PushResult>> {
    let mut out = Vec::new();
    for &c in in_flight {
        let ep = endpoint().await?;
        let hook = format!("http://{}/hook", ep.addr);
        let server = Server::start_with(
            ctx,
            &ctx.dir.join(format!("push-{c}")),
            &["--push-allow-private"],
        )
        .await?;
        let http = reqwest::Client::new();
        let url = server.url.clone();
        let mut result = PushResult {
            in_flight: c,
            records,
            rounds: Vec::new(),
        };
        for round in 0..rounds.max(1) {
            let wrk_rps = if wrk_secs > 0 {
                wrk(&hook, c, wrk_secs)
            } else {
                0.0
            };
            // A topic and a subscription per round: the records wait before it starts.
            let (topic, sub) = (format!("bench-{round}"), format!("hook-{round}"));
            post(
                &http,
                format!("{url}/v1/topics"),
                json!({"name": topic, "partitions": 4, "retention_ms": -1}),
            )
            .await?;
            produce(&http, &url, &topic, records).await?;
            let before = ep.hits.load(Ordering::Relaxed);
            let cpu_before = cpu_secs(server.child.id());
            let started = Instant::now();
            post(
                &http,
                format!("{url}/v1/subscriptions"),
                json!({"name": sub, "topic": topic, "start": "earliest", "max_in_flight": 100000,
                       "push": {"url": hook, "concurrency": c, "breaker": {"min_calls": 1000000}}}),
            )
            .await?;
            let deadline = Instant::now() + Duration::from_secs(600);
            while ep.hits.load(Ordering::Relaxed) - before < records {
                anyhow::ensure!(Instant::now() < deadline, "push delivery did not finish");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let secs = started.elapsed().as_secs_f64();
            let cpu = cpu_secs(server.child.id()) - cpu_before;
            // Its dispatcher stops, so that the next round has the machine to itself.
            http.delete(format!("{url}/v1/subscriptions/{sub}"))
                .send()
                .await?;
            result.rounds.push(Round {
                rate: records as f64 / secs,
                wrk_rps,
                cpu_us: cpu * 1e6 / records as f64,
            });
        }
        out.push(result);
    }
    Ok(out)
}

/// Produces `records` records to a push subscription whose endpoint fails, so that
/// its breaker is open, and measures the server's memory.
pub async fn open_breaker(ctx: &Ctx, records: u64) -> anyhow::Result<OpenBreakerResult> {
    let ep = endpoint().await?;
    ep.failing.store(true, Ordering::Relaxed);
    let hook = format!("http://{}/hook", ep.addr);
    let server =
        Server::start_with(ctx, &ctx.dir.join("push-open"), &["--push-allow-private"]).await?;
    let http = reqwest::Client::new();
    let url = server.url.clone();
    let mut r = OpenBreakerResult {
        records,
        rss_before_mib: server.rss_mib(),
        ..OpenBreakerResult::default()
    };
    post(
        &http,
        format!("{url}/v1/topics"),
        json!({"name": "bench", "partitions": 4, "retention_ms": -1}),
    )
    .await?;
    post(
        &http,
        format!("{url}/v1/subscriptions"),
        json!({"name": "hook", "topic": "bench", "max_deliveries": 0,
               "push": {"url": hook, "concurrency": 64, "breaker": {"min_calls": 5, "cooldown_ms": 30000}}}),
    )
    .await?;
    produce(&http, &url, "bench", 100).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d: Value = describe(&http, &url, "hook").await?;
        if d["push_status"]["breaker"] == "open" {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the breaker did not open: {d}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let load = produce(&http, &url, "bench", records);
    tokio::pin!(load);
    let mut peak = server.rss_mib();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            res = &mut load => { res?; break; }
            _ = tick.tick() => peak = peak.max(server.rss_mib()),
        }
    }
    let d: Value = describe(&http, &url, "hook").await?;
    r.breaker = d["push_status"]["breaker"]
        .as_str()
        .unwrap_or("?")
        .to_string();
    r.rss_after_mib = server.rss_mib();
    r.peak_rss_mib = peak.max(r.rss_after_mib);
    r.endpoint_requests = ep.hits.load(Ordering::Relaxed);
    Ok(r)
}

pub fn report(results: &[PushResult], open: Option<&OpenBreakerResult>) -> String {
    let mut s = String::new();
    if !results.is_empty() {
        let ratio = |r: &Round| {
            if r.wrk_rps > 0.0 {
                format!("{:.0} %", 100.0 * r.rate / r.wrk_rps)
            } else {
                "no wrk".into()
            }
        };
        s.push_str("| push to a local endpoint answering 200 | in flight | deliveries/s | wrk requests/s, same endpoint and connections | Ferry / wrk | Ferry CPU per delivery |\n|---|---|---|---|---|---|\n");
        for r in results {
            let Some(m) = r.median() else { continue };
            s.push_str(&format!(
                "| {} records, median of {} rounds | {} | {:.0} | {:.0} | **{}** | {:.1} µs |\n",
                r.records,
                r.rounds.len(),
                r.in_flight,
                m.rate,
                m.wrk_rps,
                ratio(m),
                m.cpu_us
            ));
        }
        s.push_str("\nEvery round (wrk, then Ferry):\n\n| in flight | round | deliveries/s | wrk requests/s | Ferry / wrk | Ferry CPU per delivery |\n|---|---|---|---|---|---|\n");
        for r in results {
            for (i, x) in r.rounds.iter().enumerate() {
                s.push_str(&format!(
                    "| {} | {} | {:.0} | {:.0} | {} | {:.1} µs |\n",
                    r.in_flight,
                    i + 1,
                    x.rate,
                    x.wrk_rps,
                    ratio(x),
                    x.cpu_us
                ));
            }
        }
        s.push('\n');
    }
    if let Some(o) = open {
        s.push_str(&format!(
            "| backlog behind an open breaker | records | breaker | RSS before | peak RSS | RSS after | requests to the endpoint |\n|---|---|---|---|---|---|---|\n| endpoint answering 503 | {} | {} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {} |\n",
            o.records, o.breaker, o.rss_before_mib, o.peak_rss_mib, o.rss_after_mib, o.endpoint_requests
        ));
    }
    s
}
