//! Queue subscriptions against the real binary: pull+ack throughput with several
//! consumers, and the server's memory with a large backlog of unacknowledged records.

use crate::server::Server;
use crate::Ctx;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct QueueResult {
    pub consumers: usize,
    pub records: u64,
    pub secs: f64,
    /// One pull of up to 100 records plus the ack of what it got.
    pub cycle_p50_ms: f64,
    pub cycle_p99_ms: f64,
    pub redelivered: u64,
}

#[derive(Debug, Clone, Default)]
pub struct BacklogResult {
    pub records: u64,
    pub value_bytes: usize,
    pub produce_secs: f64,
    pub rss_before_mib: f64,
    pub peak_rss_mib: f64,
    pub backlog_reported: u64,
    pub rss_with_backlog_mib: f64,
    pub rss_with_leases_mib: f64,
    pub in_flight: u64,
}

/// A subscription's status.
pub async fn describe(http: &reqwest::Client, url: &str, name: &str) -> anyhow::Result<Value> {
    Ok(http
        .get(format!("{url}/v1/subscriptions/{name}"))
        .send()
        .await?
        .json()
        .await?)
}

/// POSTs JSON and returns the JSON answer; a non-2xx answer is an error.
pub async fn post(http: &reqwest::Client, url: String, body: Value) -> anyhow::Result<Value> {
    let r = http.post(url).json(&body).send().await?;
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    anyhow::ensure!(status.is_success(), "request failed: {status} {v}");
    Ok(v)
}

/// Produces `n` records with `value_bytes`-byte values using `clients` concurrent
/// requests of `batch` records.
async fn preload(
    http: &reqwest::Client,
    url: &str,
    n: u64,
    value_bytes: usize,
    batch: u64,
    clients: usize,
) -> anyhow::Result<()> {
    let record = json!({"value": "x".repeat(value_bytes)});
    preload_records(http, url, n, record, batch, clients).await
}

async fn preload_records(
    http: &reqwest::Client,
    url: &str,
    n: u64,
    record: Value,
    batch: u64,
    clients: usize,
) -> anyhow::Result<()> {
    let records: Vec<Value> = (0..batch).map(|_| record.clone()).collect();
    let body = Arc::new(serde_json::to_vec(&json!({ "records": records }))?);
    let left = Arc::new(AtomicU64::new(n.div_ceil(batch)));
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (http, url, body, left) = (
                http.clone(),
                format!("{url}/v1/topics/bench/records"),
                Arc::clone(&body),
                Arc::clone(&left),
            );
            tokio::spawn(async move {
                while left
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |x| x.checked_sub(1))
                    .is_ok()
                {
                    crate::http::produce(&http, &url, body.as_ref().clone()).await?;
                }
                Ok::<_, anyhow::Error>(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    Ok(())
}

async fn setup(
    ctx: &Ctx,
    name: &str,
    partitions: u32,
) -> anyhow::Result<(Server, reqwest::Client)> {
    let server = Server::start(ctx, &ctx.dir.join(name)).await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let url = &server.url;
    post(
        &http,
        format!("{url}/v1/topics"),
        json!({"name": "bench", "partitions": partitions, "retention_ms": -1}),
    )
    .await?;
    post(
        &http,
        format!("{url}/v1/subscriptions"),
        json!({"name": "work", "topic": "bench", "start": "earliest",
               "max_in_flight": 100000, "max_in_flight_per_consumer": 10000, "max_deliveries": 0}),
    )
    .await?;
    Ok((server, http))
}

/// Preloads `records` 1 KiB records, then drains them with each consumer count:
/// every consumer pulls up to 100 records and acks them, until all are acked.
pub async fn run(ctx: &Ctx, records: u64, consumers: &[usize]) -> anyhow::Result<Vec<QueueResult>> {
    let mut out = Vec::new();
    for &c in consumers {
        let (server, http) = setup(ctx, &format!("queue-{c}"), 4).await?;
        let url = server.url.clone();
        preload(&http, &url, records, 1024, 500, 4).await?;
        let acked = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let tasks: Vec<_> = (0..c)
            .map(|i| {
                let (http, url, acked) = (http.clone(), url.clone(), Arc::clone(&acked));
                tokio::spawn(async move {
                    let mut h = Histogram::<u64>::new(3).expect("histogram");
                    while acked.load(Ordering::Acquire) < records {
                        let t = Instant::now();
                        let v = post(
                            &http,
                            format!("{url}/v1/subscriptions/work/pull"),
                            json!({"max_records": 100, "wait_ms": 100, "consumer": format!("c{i}")}),
                        )
                        .await?;
                        let leases: Vec<Value> = v["records"]
                            .as_array()
                            .map(|r| r.iter().map(|x| x["lease_id"].clone()).collect())
                            .unwrap_or_default();
                        if leases.is_empty() {
                            continue;
                        }
                        let n = leases.len() as u64;
                        post(
                            &http,
                            format!("{url}/v1/subscriptions/work/ack"),
                            json!({ "lease_ids": leases }),
                        )
                        .await?;
                        acked.fetch_add(n, Ordering::AcqRel);
                        h.record(t.elapsed().as_micros() as u64).ok();
                    }
                    Ok::<_, anyhow::Error>(h)
                })
            })
            .collect();
        let mut hist = Histogram::<u64>::new(3)?;
        for t in tasks {
            hist.add(t.await??)?;
        }
        let secs = started.elapsed().as_secs_f64();
        let d: Value = describe(&http, &url, "work").await?;
        anyhow::ensure!(d["backlog"] == 0, "backlog left after draining: {d}");
        out.push(QueueResult {
            consumers: c,
            records: acked.load(Ordering::Acquire),
            secs,
            cycle_p50_ms: hist.value_at_quantile(0.5) as f64 / 1000.0,
            cycle_p99_ms: hist.value_at_quantile(0.99) as f64 / 1000.0,
            redelivered: d["redelivered"].as_u64().unwrap_or(0),
        });
    }
    Ok(out)
}

/// Produces `records` small records that no one consumes and measures the server's
/// resident memory: before, at its peak while producing, with the backlog, and with
/// 10,000 records leased out of it.
pub async fn backlog(ctx: &Ctx, records: u64) -> anyhow::Result<BacklogResult> {
    let (server, http) = setup(ctx, "backlog", 4).await?;
    let url = server.url.clone();
    let mut r = BacklogResult {
        records,
        value_bytes: 100,
        rss_before_mib: server.rss_mib(),
        ..BacklogResult::default()
    };
    let started = Instant::now();
    let load = preload(&http, &url, records, r.value_bytes, 5000, 4);
    tokio::pin!(load);
    let mut peak: f64 = r.rss_before_mib;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            res = &mut load => { res?; break; }
            _ = tick.tick() => peak = peak.max(server.rss_mib()),
        }
    }
    r.produce_secs = started.elapsed().as_secs_f64();
    let d: Value = describe(&http, &url, "work").await?;
    r.backlog_reported = d["backlog"].as_u64().unwrap_or(0);
    r.rss_with_backlog_mib = server.rss_mib();
    peak = peak.max(r.rss_with_backlog_mib);
    for i in 0..10 {
        post(
            &http,
            format!("{url}/v1/subscriptions/work/pull"),
            json!({"max_records": 1000, "consumer": format!("c{i}")}),
        )
        .await?;
    }
    let d: Value = describe(&http, &url, "work").await?;
    r.in_flight = d["in_flight"].as_u64().unwrap_or(0);
    r.rss_with_leases_mib = server.rss_mib();
    r.peak_rss_mib = peak.max(r.rss_with_leases_mib);
    Ok(r)
}

#[derive(Debug, Clone, Default)]
pub struct DelayedResult {
    pub records: u64,
    pub delayed_reported: u64,
    pub scan_secs: f64,
    pub rss_before_mib: f64,
    pub peak_rss_mib: f64,
    pub delay_file_mib: f64,
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|it| {
            it.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Produces `records` records scheduled an hour ahead (`ferry-deliver-at`), lets pulls
/// scan past them all, and measures the server's memory: delayed records wait in delay
/// files, not in memory.
pub async fn delayed(ctx: &Ctx, records: u64) -> anyhow::Result<DelayedResult> {
    let (server, http) = setup(ctx, "delayed", 4).await?;
    let url = server.url.clone();
    let mut r = DelayedResult {
        records,
        rss_before_mib: server.rss_mib(),
        ..DelayedResult::default()
    };
    let due = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64
        + 3_600_000;
    let record =
        json!({"value": "x".repeat(100), "headers": {"ferry-deliver-at": due.to_string()}});
    preload_records(&http, &url, records, record, 5000, 4).await?;
    let mut peak = server.rss_mib();
    let started = Instant::now();
    loop {
        let v = post(
            &http,
            format!("{url}/v1/subscriptions/work/pull"),
            json!({"max_records": 1000}),
        )
        .await?;
        anyhow::ensure!(
            v["records"].as_array().is_some_and(|r| r.is_empty()),
            "a record scheduled an hour ahead was delivered"
        );
        peak = peak.max(server.rss_mib());
        let d: Value = describe(&http, &url, "work").await?;
        let head: u64 = d["partitions"]
            .as_array()
            .map(|p| p.iter().map(|x| x["head"].as_u64().unwrap_or(0)).sum())
            .unwrap_or(0);
        if head >= records {
            r.delayed_reported = d["delayed"].as_u64().unwrap_or(0);
            break;
        }
    }
    r.scan_secs = started.elapsed().as_secs_f64();
    r.peak_rss_mib = peak.max(server.rss_mib());
    r.delay_file_mib =
        dir_bytes(&ctx.dir.join("delayed/subscriptions/work/delays")) as f64 / 1024.0 / 1024.0;
    Ok(r)
}

pub fn report_delayed(d: &DelayedResult) -> String {
    format!(
        "| scheduled an hour ahead, 100-byte records | records | delayed reported | scan time | RSS before | peak RSS | delay files |\n|---|---|---|---|---|---|---|\n| one queue subscription | {} | {} | {:.1} s | {:.1} MiB | {:.1} MiB | {:.1} MiB |\n",
        d.records, d.delayed_reported, d.scan_secs, d.rss_before_mib, d.peak_rss_mib, d.delay_file_mib
    )
}

/// The Markdown tables; `disk_mb_s` is the disk's sequential bandwidth from the same run.
pub fn report_with_disk(
    queue: &[QueueResult],
    backlog: Option<&BacklogResult>,
    disk_mb_s: f64,
) -> String {
    let mut s = String::new();
    if !queue.is_empty() {
        s.push_str("| queue pull+ack over HTTP, 1 KiB records | consumers | records/s | MB/s | % of disk sequential | pull+ack p50 ms | pull+ack p99 ms | redelivered |\n|---|---|---|---|---|---|---|---|\n");
        for q in queue {
            let rate = q.records as f64 * 1024.0 / q.secs / 1e6;
            s.push_str(&format!(
                "| pull ≤ 100, then ack | {} | {:.0} | {:.1} | {:.0} % | {:.1} | {:.1} | {} |\n",
                q.consumers,
                q.records as f64 / q.secs,
                rate,
                100.0 * rate / disk_mb_s,
                q.cycle_p50_ms,
                q.cycle_p99_ms,
                q.redelivered
            ));
        }
        s.push('\n');
    }
    if let Some(b) = backlog {
        s.push_str(&format!(
            "| backlog, {}-byte records | records | backlog reported | RSS before | peak RSS | RSS with backlog | RSS with {} leased |\n|---|---|---|---|---|---|---|\n| one queue subscription, nothing acked | {} | {} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.1} MiB |\n\nProduced in {:.1} s.\n",
            b.value_bytes,
            b.in_flight,
            b.records,
            b.backlog_reported,
            b.rss_before_mib,
            b.peak_rss_mib,
            b.rss_with_backlog_mib,
            b.rss_with_leases_mib,
            b.produce_secs
        ));
    }
    s
}
