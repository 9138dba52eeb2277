//! Shared mode against the local mode, in one run: HTTP produce (batches of 100
//! records of 1 KiB, durability "always" in the local mode) through the real binary,
//! with the object store's own PUT latency and Postgres's sequencing transactions per
//! second measured beside it as the design's floor and ceiling.
//!
//! The object store is a real S3-compatible server, `s3s-fs` (started here on a free
//! port over a folder of the benchmark's), and Postgres the server `--metadata-url`
//! names: a fresh database is made on it for the run and dropped afterwards.

mod subs;

use crate::http::{self, HttpResult, Target};
use crate::Ctx;
use ferry_shared::SharedConfig;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A backlog written through one shared node, and the node's memory.
pub struct Backlog {
    pub records: u64,
    pub produce_secs: f64,
    pub rss_after_produce_mib: f64,
    pub read_records: u64,
    pub read_secs: f64,
    pub rss_after_read_mib: f64,
}

pub struct SharedRun {
    pub backlog: Option<Backlog>,
    pub put_bytes: usize,
    pub put_p50_ms: f64,
    pub put_p99_ms: f64,
    pub sequencer_connections: usize,
    pub sequencer_tps: f64,
    pub local: Vec<HttpResult>,
    pub shared: Vec<HttpResult>,
    /// Seconds from kill -9 of a consumer group's coordinator to the first offset
    /// commit another node accepted, one per round.
    pub failover_secs: Vec<f64>,
    pub merged: Option<MergedReads>,
    /// Queue subscription pull-and-ack, records per second: local, then shared.
    pub pull_rates: Option<(f64, f64)>,
    /// Seconds from kill -9 of the node serving a queue subscription to the first pull
    /// another node answered with records, one per round.
    pub subscription_failover_secs: Vec<f64>,
    /// Kafka transactions of [`TXN_RECORDS`] records through one node: local, then
    /// shared.
    pub transactions: Option<(crate::transactions::Report, crate::transactions::Report)>,
}

/// Records per transaction in the transactions comparison.
const TXN_RECORDS: usize = 100;
/// Records the transactions comparison drains at each isolation level.
const TXN_DRAIN_RECORDS: u64 = 20_000;

/// The transactions workload ([`crate::transactions::run_on`]) on one node started
/// with `args`, off the async threads (librdkafka's transactional calls block).
async fn transactions_on(
    ctx: &Ctx,
    dir: &str,
    args: &[&str],
    env: &[(String, String)],
    seconds: f64,
) -> anyhow::Result<crate::transactions::Report> {
    let server = crate::server::Server::start_env(ctx, &ctx.dir.join(dir), args, env).await?;
    tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        crate::transactions::run_on(&rt, &server, seconds, &[TXN_RECORDS], TXN_DRAIN_RECORDS)
    })
    .await?
}

/// Reads of partitions written by small requests, from a node with nothing cached,
/// before and after their objects were merged.
pub struct MergedReads {
    pub records: u64,
    pub objects_before: i64,
    pub objects_after: i64,
    pub before_records_per_sec: f64,
    pub after_records_per_sec: f64,
}

struct S3Server(Child);

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const BUCKET: &str = "ferry-bench";

/// Builds the TCP_NODELAY shim for s3s-fs (`nodelay.c`) with the C compiler Rust links
/// with; `None`, with a warning, when it cannot.
fn nodelay_shim(dir: &std::path::Path) -> Option<std::path::PathBuf> {
    std::fs::create_dir_all(dir).ok()?;
    let source = dir.join("nodelay.c");
    let shim = dir.join("nodelay.so");
    std::fs::write(&source, include_str!("nodelay.c")).ok()?;
    let built = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&shim)
        .arg(&source)
        .arg("-ldl")
        .status();
    match built {
        Ok(s) if s.success() => Some(shim),
        other => {
            eprintln!("warning: could not build the TCP_NODELAY shim for s3s-fs ({other:?}); its GETs wait for delayed ACKs");
            None
        }
    }
}

fn start_s3(bin: &str, root: &std::path::Path) -> anyhow::Result<(S3Server, u16)> {
    std::fs::create_dir_all(root.join(BUCKET))?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut command = Command::new(bin);
    // Beside the store's folder, where it would be taken for a bucket.
    let shim_dir = root.parent().unwrap_or(root).join("s3-shim");
    if let Some(shim) = nodelay_shim(&shim_dir) {
        command.env("LD_PRELOAD", shim);
    }
    let child = command
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", "bench", "--secret-key", "bench-secret"])
        .arg(root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot start {bin}: {e} (cargo install s3s-fs --version 0.14.1 --features binary --locked)"))?;
    let server = S3Server(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "{bin} did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((server, port))
}

/// A fresh database on the server of `url`; returns its URL and name.
async fn fresh_database(url: &str) -> anyhow::Result<(String, String)> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let name = format!("ferry_bench_{:012x}", rand::random::<u64>() >> 16);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await?;
    let mut config: tokio_postgres::Config = url.parse()?;
    config.dbname(&name);
    // Back to a URL the binary takes: key=value form works for both.
    let mut parts = Vec::new();
    if let Some(tokio_postgres::config::Host::Tcp(h)) = config.get_hosts().first() {
        parts.push(format!("host={h}"));
    }
    if let Some(p) = config.get_ports().first() {
        parts.push(format!("port={p}"));
    }
    if let Some(u) = config.get_user() {
        parts.push(format!("user={u}"));
    }
    if let Some(pw) = config.get_password() {
        parts.push(format!("password={}", String::from_utf8_lossy(pw)));
    }
    parts.push(format!("dbname={name}"));
    Ok((parts.join(" "), name))
}

async fn drop_database(url: &str, name: &str) -> anyhow::Result<()> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await?;
    Ok(())
}

fn quantile_ms(times: &mut [Duration], q: f64) -> f64 {
    times.sort();
    let i = ((times.len() as f64 - 1.0) * q).round() as usize;
    times.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// Writes `records` records of 100 bytes (requests of 1,000, 8 producers) through one
/// shared node, then reads the first 1,000,000 back from the store; the node's resident
/// memory after each.
async fn backlog(
    ctx: &Ctx,
    db_url: &str,
    env: &[(String, String)],
    records: u64,
) -> anyhow::Result<Backlog> {
    use serde_json::json;
    let args = [
        "--metadata-url",
        db_url,
        "--object-store-url",
        "s3://ferry-bench/backlog",
    ];
    let server =
        crate::server::Server::start_env(ctx, &ctx.dir.join("backlog"), &args, env).await?;
    let http = reqwest::Client::new();
    let url = server.url.clone();
    let created = http
        .post(format!("{url}/v1/topics"))
        .json(&json!({"name": "backlog", "partitions": 4, "retention_ms": -1}))
        .send()
        .await?;
    anyhow::ensure!(created.status().is_success(), "creating the topic failed");
    let value = "x".repeat(100);
    let body: Vec<u8> = serde_json::to_vec(&json!({
        "records": (0..1000).map(|_| json!({"value": value})).collect::<Vec<_>>()
    }))?;
    let requests = records.div_ceil(1000);
    let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (http, body, next) = (http.clone(), body.clone(), next.clone());
            let records_url = format!("{url}/v1/topics/backlog/records");
            tokio::spawn(async move {
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < requests {
                    http::produce(&http, &records_url, body.clone()).await?;
                }
                Ok::<_, anyhow::Error>(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    let produce_secs = started.elapsed().as_secs_f64();
    let rss_after_produce_mib = server.rss_mib();
    let (read_records, read_secs) = read_topic(&http, &url, "backlog", 250_000).await?;
    Ok(Backlog {
        records: requests * 1000,
        produce_secs,
        rss_after_produce_mib,
        read_records,
        read_secs,
        rss_after_read_mib: server.rss_mib(),
    })
}

/// Three nodes of shared mode over `db_url`, with data folders and a prefix in the
/// bucket named after `name`.
async fn start_nodes(
    ctx: &Ctx,
    db_url: &str,
    env: &[(String, String)],
    name: &str,
) -> anyhow::Result<Vec<Option<crate::server::Server>>> {
    let prefix = format!("s3://ferry-bench/{name}");
    let args = ["--metadata-url", db_url, "--object-store-url", &prefix];
    let mut nodes = Vec::new();
    for i in 0..3 {
        let dir = ctx.dir.join(format!("{name}-{i}"));
        nodes.push(Some(
            crate::server::Server::start_env(ctx, &dir, &args, env).await?,
        ));
    }
    Ok(nodes)
}

/// One failover: three nodes, a consumer group (librdkafka) reading and committing
/// through them; its coordinator is killed with SIGKILL. Answers the seconds until a
/// commit is accepted again (by the node that took the group's lease).
async fn failover(
    ctx: &Ctx,
    db_url: &str,
    env: &[(String, String)],
    round: usize,
) -> anyhow::Result<f64> {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _};
    use serde_json::json;
    let mut nodes = start_nodes(ctx, db_url, env, &format!("failover-{round}")).await?;
    let node = |i: usize, nodes: &[Option<crate::server::Server>]| -> anyhow::Result<String> {
        Ok(nodes[i]
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("node {i} is gone"))?
            .url
            .clone())
    };
    let http = reqwest::Client::new();
    let created = http
        .post(format!("{}/v1/topics", node(0, &nodes)?))
        .json(&json!({"name": "failover", "partitions": 4}))
        .send()
        .await?;
    anyhow::ensure!(created.status().is_success(), "creating the topic failed");
    let body = serde_json::to_vec(&json!({
        "records": (0..1000).map(|i| json!({"key": format!("k{i}"), "value": i})).collect::<Vec<_>>()
    }))?;
    http::produce(
        &http,
        &format!("{}/v1/topics/failover/records", node(0, &nodes)?),
        body,
    )
    .await?;
    // Every node knows the topic (each reads topics from Postgres every second).
    for n in nodes.iter().flatten() {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !http
            .get(format!("{}/v1/topics/failover", n.url))
            .send()
            .await?
            .status()
            .is_success()
        {
            anyhow::ensure!(
                Instant::now() < deadline,
                "a node did not learn of the topic"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let bootstrap: Vec<String> = nodes
        .iter()
        .flatten()
        .map(|n| n.kafka_addr.clone())
        .collect();
    let group = format!("bench-failover-{round}");
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap.join(","))
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .create()?;
    consumer.subscribe(&["failover"])?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut read = 0;
    while read < 200 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the group read only {read} records"
        );
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
            read += 1;
        }
    }
    consumer.commit(&consumer.position()?, CommitMode::Sync)?;
    // The coordinator, as Postgres names it.
    let (client, conn) = tokio_postgres::connect(db_url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT n.kafka_port FROM ferry_leases l JOIN ferry_nodes n USING (node_id)
              WHERE l.kind = 'group' AND l.name = $1",
            &[&group],
        )
        .await?;
    let port: i32 = row.get(0);
    let victim = bootstrap
        .iter()
        .position(|a| a.ends_with(&format!(":{port}")))
        .ok_or_else(|| anyhow::anyhow!("no node listens on port {port}"))?;
    if let Some(node) = nodes[victim].take() {
        node.kill9();
    }
    let killed = Instant::now();
    loop {
        anyhow::ensure!(
            killed.elapsed() < Duration::from_secs(60),
            "the group did not come back within 60 s"
        );
        let _ = consumer.poll(Duration::from_millis(50));
        if consumer
            .commit(&consumer.position()?, CommitMode::Sync)
            .is_ok()
        {
            return Ok(killed.elapsed().as_secs_f64());
        }
    }
}

/// Reads partitions 0..4 of `topic` through `url` from their starts, up to
/// `per_partition` records each (or to their ends); records and seconds.
async fn read_topic(
    http: &reqwest::Client,
    url: &str,
    topic: &str,
    per_partition: u64,
) -> anyhow::Result<(u64, f64)> {
    let started = Instant::now();
    let mut records = 0u64;
    for p in 0..4u32 {
        let (mut offset, mut read) = (0u64, 0u64);
        while read < per_partition {
            let v: serde_json::Value = http
                .get(format!("{url}/v1/topics/{topic}/partitions/{p}/records?offset={offset}&max_records=5000"))
                .send()
                .await?
                .json()
                .await?;
            let n = v["records"].as_array().map_or(0, |r| r.len()) as u64;
            if n == 0 {
                break;
            }
            read += n;
            offset = v["next_offset"].as_u64().unwrap_or(offset);
        }
        records += read;
    }
    Ok((records, started.elapsed().as_secs_f64()))
}

/// Objects the batches live in.
async fn objects_in_use(db_url: &str) -> anyhow::Result<i64> {
    let (client, conn) = tokio_postgres::connect(db_url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let row = client
        .query_one("SELECT count(DISTINCT object_key) FROM ferry_batches", &[])
        .await?;
    Ok(row.get(0))
}

/// 40,000 records of 1 KiB written by requests of 10 (4 producers, 4 partitions), so
/// that each object holds a few batches of several partitions; read back from a node
/// with nothing cached, then again from another once the objects are merged.
async fn merged_reads(
    ctx: &Ctx,
    db_url: &str,
    env: &[(String, String)],
) -> anyhow::Result<MergedReads> {
    use serde_json::json;
    // Every node but the one that merges has merging off.
    let node = |i: usize, compact_after: &'static str| {
        let dir = ctx.dir.join(format!("merged-{i}"));
        let args = [
            "--metadata-url",
            db_url,
            "--object-store-url",
            "s3://ferry-bench/merged",
            "--shared-compact-after-ms",
            compact_after,
        ];
        async move { crate::server::Server::start_env(ctx, &dir, &args, env).await }
    };
    let writer = node(0, "0").await?;
    let http = reqwest::Client::new();
    let created = http
        .post(format!("{}/v1/topics", writer.url))
        .json(&json!({"name": "merged", "partitions": 4, "retention_ms": -1}))
        .send()
        .await?;
    anyhow::ensure!(created.status().is_success(), "creating the topic failed");
    let value = "x".repeat(1024);
    let requests = 4000u64;
    let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let tasks: Vec<_> = (0..4u32)
        .map(|p| {
            let (http, next) = (http.clone(), next.clone());
            let url = format!("{}/v1/topics/merged/records", writer.url);
            let body = serde_json::to_vec(&json!({
                "records": (0..10).map(|_| json!({"value": value, "partition": p})).collect::<Vec<_>>()
            }));
            tokio::spawn(async move {
                let body = body?;
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < requests {
                    http::produce(&http, &url, body.clone()).await?;
                }
                Ok::<_, anyhow::Error>(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    writer.terminate();
    let objects_before = objects_in_use(db_url).await?;
    let reader = node(1, "0").await?;
    let (records, before_secs) = read_topic(&http, &reader.url, "merged", u64::MAX).await?;
    // Stopped cleanly, the nodes leave at once, and the merging node takes the
    // maintenance lease at its first look.
    reader.terminate();
    let merger = node(2, "1000").await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while objects_in_use(db_url).await? > 8 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the objects were not merged within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let objects_after = objects_in_use(db_url).await?;
    merger.terminate();
    let reader = node(3, "0").await?;
    let (again, after_secs) = read_topic(&http, &reader.url, "merged", u64::MAX).await?;
    anyhow::ensure!(
        again == records,
        "read {records} records before merging, {again} after"
    );
    Ok(MergedReads {
        records,
        objects_before,
        objects_after,
        before_records_per_sec: records as f64 / before_secs.max(1e-9),
        after_records_per_sec: records as f64 / after_secs.max(1e-9),
    })
}

/// What `ferry-bench shared` runs.
pub struct Options<'a> {
    pub metadata_url: &'a str,
    pub s3fs_bin: &'a str,
    pub seconds: u64,
    pub clients: &'a [usize],
    pub backlog_records: u64,
    pub failovers: usize,
    pub merge: bool,
}

pub async fn run(ctx: &Ctx, options: Options<'_>) -> anyhow::Result<SharedRun> {
    let Options {
        metadata_url,
        s3fs_bin,
        seconds,
        clients,
        backlog_records,
        failovers,
        merge,
    } = options;
    let (_s3, port) = start_s3(s3fs_bin, &ctx.dir.join("s3"))?;
    let (db_url, db_name) = fresh_database(metadata_url).await?;
    let env = vec![
        (
            "AWS_ENDPOINT_URL".to_string(),
            format!("http://127.0.0.1:{port}"),
        ),
        ("AWS_ACCESS_KEY_ID".to_string(), "bench".to_string()),
        (
            "AWS_SECRET_ACCESS_KEY".to_string(),
            "bench-secret".to_string(),
        ),
        ("AWS_REGION".to_string(), "us-east-1".to_string()),
    ];
    let object_store_url = format!("s3://{BUCKET}/bench");
    let result = async {
        let mut config = SharedConfig::new(db_url.clone(), object_store_url.clone());
        config.object_store_options = env
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        // The floors and ceilings: one PUT of the size of an object under load, and
        // sequencing transactions from as many connections as a node keeps.
        let put_bytes = 100 * 1024 + 4096;
        let mut puts = ferry_shared::probe::put_latency(&config, put_bytes, 200).await?;
        let sequencer_connections = 8;
        let sequencer_tps = ferry_shared::probe::sequencer_rate(
            &config,
            sequencer_connections,
            Duration::from_secs(seconds.clamp(1, 5)),
        )
        .await?;
        let duration = Duration::from_secs(seconds);
        let local = http::run_with(ctx, duration, clients, 100, &Target::default()).await?;
        // Each shared run on a database of its own (each makes the topic `bench`).
        let mut shared = Vec::new();
        for &c in clients {
            let (url, name) = fresh_database(metadata_url).await?;
            let target = Target {
                server_args: vec![
                    "--metadata-url".into(),
                    url,
                    "--object-store-url".into(),
                    format!("s3://{BUCKET}/bench-{c}"),
                ],
                env: env.clone(),
                ..Target::default()
            };
            let run = http::run_with(ctx, duration, &[c], 100, &target).await;
            drop_database(metadata_url, &name).await?;
            shared.extend(run?);
        }
        let backlog = if backlog_records > 0 {
            let (url, name) = fresh_database(metadata_url).await?;
            let b = backlog(ctx, &url, &env, backlog_records).await;
            drop_database(metadata_url, &name).await?;
            Some(b?)
        } else {
            None
        };
        let merged = if merge {
            let (url, name) = fresh_database(metadata_url).await?;
            let m = merged_reads(ctx, &url, &env).await;
            drop_database(metadata_url, &name).await?;
            Some(m?)
        } else {
            None
        };
        let mut failover_secs = Vec::new();
        let mut subscription_failover_secs = Vec::new();
        for round in 0..failovers {
            let (url, name) = fresh_database(metadata_url).await?;
            let secs = failover(ctx, &url, &env, round).await;
            drop_database(metadata_url, &name).await?;
            failover_secs.push(secs?);
            let (url, name) = fresh_database(metadata_url).await?;
            let secs = subs::failover(ctx, &url, &env, round).await;
            drop_database(metadata_url, &name).await?;
            subscription_failover_secs.push(secs?);
        }
        let pull_records = 20_000;
        let local_pull = subs::pull_rate(ctx, "pull-local", &[], &[], pull_records).await?;
        let (url, name) = fresh_database(metadata_url).await?;
        let shared_args = [
            "--metadata-url",
            url.as_str(),
            "--object-store-url",
            "s3://ferry-bench/pull",
        ];
        let shared_pull =
            subs::pull_rate(ctx, "pull-shared", &shared_args, &env, pull_records).await;
        drop_database(metadata_url, &name).await?;
        let pull_rates = Some((local_pull, shared_pull?));
        let txn_seconds = duration.as_secs_f64();
        let local_txn = transactions_on(ctx, "txn-local", &[], &[], txn_seconds).await?;
        let (url, name) = fresh_database(metadata_url).await?;
        let shared_args = [
            "--metadata-url",
            url.as_str(),
            "--object-store-url",
            "s3://ferry-bench/txn",
        ];
        let shared_txn = transactions_on(ctx, "txn-shared", &shared_args, &env, txn_seconds).await;
        drop_database(metadata_url, &name).await?;
        let transactions = Some((local_txn, shared_txn?));
        Ok::<_, anyhow::Error>(SharedRun {
            backlog,
            put_bytes,
            put_p50_ms: quantile_ms(&mut puts, 0.5),
            put_p99_ms: quantile_ms(&mut puts, 0.99),
            sequencer_connections,
            sequencer_tps,
            local,
            shared,
            failover_secs,
            merged,
            pull_rates,
            subscription_failover_secs,
            transactions,
        })
    }
    .await;
    drop_database(metadata_url, &db_name).await?;
    result
}

pub fn report(r: &SharedRun) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "Object store PUT of {} KiB, one at a time: p50 {:.2} ms, p99 {:.2} ms\n",
        r.put_bytes / 1024,
        r.put_p50_ms,
        r.put_p99_ms
    ));
    out.push_str(&format!(
        "Objects sequenced in Postgres, registration and commit ({} connections, one batch each): {:.0}/s\n\n",
        r.sequencer_connections, r.sequencer_tps
    ));
    out.push_str("| HTTP producers (100 × 1 KiB per request) | mode | records/s | against local | ack p50 ms | ack p99 ms | read records/s |\n|---|---|---:|---:|---:|---:|---:|\n");
    for (l, s) in r.local.iter().zip(&r.shared) {
        let rate = |h: &HttpResult| h.produce_records as f64 / h.produce_secs;
        let read = |h: &HttpResult| h.read_records as f64 / h.read_secs.max(1e-9);
        for (mode, h) in [("local", l), ("shared", s)] {
            out.push_str(&format!(
                "| {} | {mode} | {:.0} | {:.2}× | {:.2} | {:.2} | {:.0} |\n",
                h.clients,
                rate(h),
                rate(h) / rate(l).max(1e-9),
                h.p50_ms,
                h.p99_ms,
                read(h)
            ));
        }
    }
    if let Some(m) = &r.merged {
        out.push_str(&format!(
            "\nReads of {} records of 1 KiB written by requests of 10, from a node with nothing cached: {:.0}/s from {} objects, {:.0}/s once merged into {} ({:.2}×)\n",
            m.records,
            m.before_records_per_sec,
            m.objects_before,
            m.after_records_per_sec,
            m.objects_after,
            m.after_records_per_sec / m.before_records_per_sec.max(1e-9)
        ));
    }
    if !r.failover_secs.is_empty() {
        let times: Vec<String> = r.failover_secs.iter().map(|s| format!("{s:.1}")).collect();
        out.push_str(&format!(
            "\nConsumer group failover, kill -9 of its coordinator to the first commit another node accepts (s): {}\n",
            times.join(", ")
        ));
    }
    if !r.subscription_failover_secs.is_empty() {
        let times: Vec<String> = r
            .subscription_failover_secs
            .iter()
            .map(|s| format!("{s:.1}"))
            .collect();
        out.push_str(&format!(
            "Queue subscription failover, kill -9 of the node serving it to the first pull another node answers with records (s): {}\n",
            times.join(", ")
        ));
    }
    if let Some((local, shared)) = r.pull_rates {
        out.push_str(&format!(
            "\nQueue subscription, one consumer pulling 100 records of 1 KiB at a time and acking each pull: local {local:.0}/s, shared {shared:.0}/s ({:.2}×)\n",
            shared / local.max(1e-9)
        ));
    }
    if let Some((local, shared)) = &r.transactions {
        out.push_str(&format!(
            "\nKafka transactions of {TXN_RECORDS} records of 100 B through one node (librdkafka), local against shared:\n"
        ));
        for (mode, rep) in [("local", local), ("shared", shared)] {
            for row in rep.produce.iter().filter(|row| row.txn_records > 0) {
                out.push_str(&format!(
                    "- {mode}: {:.0} records/s, commit p50 {:.2} ms, p99 {:.2} ms\n",
                    row.records as f64 / row.secs.max(1e-9),
                    row.commit_p50_ms,
                    row.commit_p99_ms
                ));
            }
            for c in &rep.consume {
                out.push_str(&format!(
                    "- {mode}: {} drains {} records at {:.0}/s\n",
                    c.isolation,
                    c.records,
                    c.records as f64 / c.secs.max(1e-9)
                ));
            }
        }
    }
    if let Some(b) = &r.backlog {
        out.push_str(&format!(
            "\nBacklog through one shared node: {} records of 100 B in {:.1} s ({:.0}/s), node RSS {:.1} MiB; then {} read from the store in {:.1} s ({:.0}/s), node RSS {:.1} MiB\n",
            b.records,
            b.produce_secs,
            b.records as f64 / b.produce_secs,
            b.rss_after_produce_mib,
            b.read_records,
            b.read_secs,
            b.read_records as f64 / b.read_secs.max(1e-9),
            b.rss_after_read_mib
        ));
    }
    out
}
