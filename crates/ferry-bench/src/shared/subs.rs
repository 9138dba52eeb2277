//! Queue subscriptions in shared mode: pull-and-ack throughput against the local mode,
//! and the time another node takes to serve a subscription after its node is killed.

use crate::http;
use crate::server::Server;
use crate::Ctx;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Records pulled per request.
const PULL_BATCH: usize = 100;

/// Makes topic `topic` (4 partitions) through `url` and writes `records` records of
/// 1 KiB to it, 100 per request.
async fn fill(
    http: &reqwest::Client,
    url: &str,
    topic: &str,
    records: usize,
) -> anyhow::Result<()> {
    let created = http
        .post(format!("{url}/v1/topics"))
        .json(&json!({"name": topic, "partitions": 4}))
        .send()
        .await?;
    anyhow::ensure!(
        created.status().is_success(),
        "creating the topic failed: {}",
        created.status()
    );
    let value = "x".repeat(1024);
    for start in (0..records).step_by(100) {
        let body = serde_json::to_vec(&json!({
            "records": (start..(start + 100).min(records))
                .map(|i| json!({"key": format!("k{i}"), "value": value}))
                .collect::<Vec<_>>()
        }))?;
        http::produce(http, &format!("{url}/v1/topics/{topic}/records"), body).await?;
    }
    Ok(())
}

/// One pull of up to [`PULL_BATCH`] records; the status and the lease ids.
async fn pull(http: &reqwest::Client, url: &str, sub: &str) -> anyhow::Result<(u16, Vec<String>)> {
    let r = http
        .post(format!("{url}/v1/subscriptions/{sub}/pull"))
        .json(&json!({"max_records": PULL_BATCH, "wait_ms": 100}))
        .send()
        .await?;
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    let ids = body["records"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .filter_map(|r| r["lease_id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Ok((status, ids))
}

async fn ack(http: &reqwest::Client, url: &str, sub: &str, ids: Vec<String>) -> anyhow::Result<()> {
    let r = http
        .post(format!("{url}/v1/subscriptions/{sub}/ack"))
        .json(&json!({ "lease_ids": ids }))
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "ack failed: {}", r.status());
    Ok(())
}

/// Pull-and-ack through one node (started with `args` and `env` in `dir`): `records`
/// records of 1 KiB are written, then one consumer pulls them 100 at a time and acks
/// each pull. Records per second of the pulls and acks.
pub(super) async fn pull_rate(
    ctx: &Ctx,
    dir: &str,
    args: &[&str],
    env: &[(String, String)],
    records: usize,
) -> anyhow::Result<f64> {
    let server = Server::start_env(ctx, &ctx.dir.join(dir), args, env).await?;
    let http = reqwest::Client::new();
    fill(&http, &server.url, "jobs", records).await?;
    let created = http
        .post(format!("{}/v1/subscriptions", server.url))
        .json(&json!({"name": "work", "topic": "jobs", "start": "earliest"}))
        .send()
        .await?;
    anyhow::ensure!(
        created.status().is_success(),
        "creating the subscription failed: {}",
        created.status()
    );
    let started = Instant::now();
    let mut done = 0;
    while done < records {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(300),
            "only {done} of {records} records were pulled in 300 s"
        );
        let (status, ids) = pull(&http, &server.url, "work").await?;
        anyhow::ensure!(status == 200, "a pull answered {status}");
        done += ids.len();
        if !ids.is_empty() {
            ack(&http, &server.url, "work", ids).await?;
        }
    }
    Ok(done as f64 / started.elapsed().as_secs_f64())
}

/// One failover of a queue subscription: three nodes, a consumer pulling and acking
/// through the first; the node serving the subscription is killed with SIGKILL.
/// Seconds until a pull through a surviving node is answered again.
pub(super) async fn failover(
    ctx: &Ctx,
    db_url: &str,
    env: &[(String, String)],
    round: usize,
) -> anyhow::Result<f64> {
    let mut nodes =
        super::start_nodes(ctx, db_url, env, &format!("subscription-failover-{round}")).await?;
    let urls: Vec<String> = nodes.iter().flatten().map(|n| n.url.clone()).collect();
    let http = reqwest::Client::new();
    fill(&http, &urls[0], "jobs", 2000).await?;
    let created = http
        .post(format!("{}/v1/subscriptions", urls[1]))
        .json(&json!({"name": "work", "topic": "jobs", "start": "earliest"}))
        .send()
        .await?;
    let status = created.status();
    anyhow::ensure!(
        status.is_success(),
        "creating the subscription failed: {status} {}",
        created.text().await.unwrap_or_default()
    );
    for _ in 0..5 {
        let (status, ids) = pull(&http, &urls[0], "work").await?;
        anyhow::ensure!(status == 200, "a pull answered {status}");
        ack(&http, &urls[0], "work", ids).await?;
    }
    // The serving node, as Postgres names it.
    let (client, conn) = tokio_postgres::connect(db_url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT n.http_addr FROM ferry_leases l JOIN ferry_nodes n USING (node_id)
              WHERE l.kind = 'subscription' AND l.name = 'work'",
            &[],
        )
        .await?;
    let addr: String = row.get(0);
    let port = addr.rsplit(':').next().unwrap_or_default().to_string();
    let victim = urls
        .iter()
        .position(|u| u.ends_with(&format!(":{port}")))
        .ok_or_else(|| anyhow::anyhow!("no node serves HTTP on port {port}"))?;
    if let Some(node) = nodes[victim].take() {
        node.kill9();
    }
    let killed = Instant::now();
    let survivor = &urls[(victim + 1) % urls.len()];
    loop {
        anyhow::ensure!(
            killed.elapsed() < Duration::from_secs(60),
            "no node served the subscription within 60 s"
        );
        match pull(&http, survivor, "work").await {
            Ok((200, ids)) if !ids.is_empty() => return Ok(killed.elapsed().as_secs_f64()),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
