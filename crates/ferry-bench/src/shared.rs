//! Shared mode against the local mode, in one run: HTTP produce (batches of 100
//! records of 1 KiB, durability "always" in the local mode) through the real binary,
//! with the object store's own PUT latency and Postgres's sequencing transactions per
//! second measured beside it as the design's floor and ceiling.
//!
//! The object store is a real S3-compatible server, `s3s-fs` (started here on a free
//! port over a folder of the benchmark's), and Postgres the server `--metadata-url`
//! names: a fresh database is made on it for the run and dropped afterwards.

use crate::http::{self, HttpResult, Target};
use crate::Ctx;
use ferry_shared::SharedConfig;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct SharedRun {
    pub put_bytes: usize,
    pub put_p50_ms: f64,
    pub put_p99_ms: f64,
    pub sequencer_connections: usize,
    pub sequencer_tps: f64,
    pub local: Vec<HttpResult>,
    pub shared: Vec<HttpResult>,
}

struct S3Server(Child);

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const BUCKET: &str = "ferry-bench";

fn start_s3(bin: &str, root: &std::path::Path) -> anyhow::Result<(S3Server, u16)> {
    std::fs::create_dir_all(root.join(BUCKET))?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let child = Command::new(bin)
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

pub async fn run(
    ctx: &Ctx,
    metadata_url: &str,
    s3fs_bin: &str,
    seconds: u64,
    clients: &[usize],
) -> anyhow::Result<SharedRun> {
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
        Ok::<_, anyhow::Error>(SharedRun {
            put_bytes,
            put_p50_ms: quantile_ms(&mut puts, 0.5),
            put_p99_ms: quantile_ms(&mut puts, 0.99),
            sequencer_connections,
            sequencer_tps,
            local,
            shared,
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
        "Postgres sequencing transactions ({} connections, one batch each): {:.0}/s\n\n",
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
    out
}
