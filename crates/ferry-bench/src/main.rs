//! `ferry-bench`: Ferry's benchmarks. Every run measures the disk's own limits in the
//! same run, so figures are reported as ratios that survive a noisy, shared machine.
//! docs/benchmarks.md gives the commands and the latest results.

mod auth;
mod compaction;
mod disk;
mod http;
mod log_append;
mod peers;
mod push;
mod queue;
mod server;
mod shared;
mod tls;
mod transactions;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "ferry-bench",
    about = "Benchmarks of Ferry against the disk's own limits"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Folder for benchmark data (a fresh subfolder is made and removed)
    #[arg(long, global = true)]
    dir: Option<PathBuf>,
    /// The ferry binary to start [default: next to this program]
    #[arg(long, global = true)]
    ferry_bin: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Every workload, then a Markdown report on standard output.
    All {
        /// Seconds per timed workload
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Size of the log for the recovery measurement, in MiB
        #[arg(long, default_value_t = 1024)]
        recovery_mib: u64,
    },
    /// A tiny run of every workload, to keep the tool working (CI runs this).
    Smoke,
    /// The disk's sequential write bandwidth and fsync rate.
    Disk {
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
    /// Kafka connections per second that authenticate (PLAIN, SCRAM-SHA-256/512) against
    /// ones that do not, and the server's CPU per connection, on `ferry serve --auth`.
    Auth {
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Clients connecting in a loop at once
        #[arg(long, default_value_t = 4)]
        clients: usize,
    },
    /// One compaction pass over an in-process log of many versions per key: MB/s of
    /// segments rewritten with a fixed-size offset map.
    Compaction {
        /// Records of 100 bytes to write before the pass
        #[arg(long, default_value_t = 2_000_000)]
        records: u64,
        /// Distinct keys among them
        #[arg(long, default_value_t = 100_000)]
        keys: u64,
        /// Memory of the offset map, in bytes
        #[arg(long, default_value_t = 16 << 20)]
        offset_map_bytes: usize,
    },
    /// In-process appends under durability "always" with 1, 8 and 64 producers.
    LogAppend {
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Records of 1 KiB per append
        #[arg(long, default_value_t = 1)]
        records_per_append: usize,
    },
    /// HTTP produce and read against a started `ferry serve`.
    Http {
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Records of 1 KiB in each produce request (1: one event per request)
        #[arg(long, default_value_t = 100)]
        records_per_request: usize,
        /// Producer counts to run in turn, each producer with one request in flight
        #[arg(long, value_delimiter = ',', default_value = "1,16")]
        clients: Vec<usize>,
    },
    /// HTTP produce over TLS against plaintext on the same binary, alternating runs; a
    /// test authority and certificate are made for the run.
    Tls {
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Producer counts to run in turn
        #[arg(long, value_delimiter = ',', default_value = "1,16")]
        clients: Vec<usize>,
        /// Records of 1 KiB per request to run in turn
        #[arg(long, value_delimiter = ',', default_value = "100,1")]
        records_per_request: Vec<usize>,
        /// The topic's durability (never: the cost of TLS, not of the disk)
        #[arg(long, default_value = "never")]
        durability: String,
        /// Plaintext and TLS runs of each workload, alternating; the best of each kept
        #[arg(long, default_value_t = 3)]
        rounds: u32,
    },
    /// Queue subscriptions: the disk's limits, pull+ack with 1, 4 and 16 consumers over
    /// a preloaded backlog, memory with a large backlog and with scheduled records.
    Queue {
        /// Records of 1 KiB to preload and drain per consumer count
        #[arg(long, default_value_t = 200_000)]
        records: u64,
        /// Unconsumed records for the memory measurement (0 skips it)
        #[arg(long, default_value_t = 10_000_000)]
        backlog: u64,
        /// Records scheduled an hour ahead for the memory measurement (0 skips it)
        #[arg(long, default_value_t = 1_000_000)]
        delayed: u64,
    },
    /// Server memory with a large backlog no one consumes (100-byte records).
    Backlog {
        #[arg(long, default_value_t = 10_000_000)]
        records: u64,
    },
    /// Push subscriptions: deliveries/s to a local endpoint with 1 and 64 in flight,
    /// against wrk on the same endpoint; memory with a backlog behind an open breaker.
    Push {
        #[arg(long, default_value_t = 100_000)]
        records: u64,
        /// Records behind the open breaker (0 skips it)
        #[arg(long, default_value_t = 1_000_000)]
        open_records: u64,
        /// Seconds of each wrk run (0 skips wrk)
        #[arg(long, default_value_t = 5)]
        wrk_seconds: u64,
        /// In-flight limits to run, comma-separated
        #[arg(long, value_delimiter = ',', default_value = "1,64")]
        in_flight: Vec<u32>,
        /// Rounds of wrk then Ferry per in-flight limit; the median ratio is reported
        #[arg(long, default_value_t = 5)]
        rounds: u32,
    },
    /// Ferry against NATS JetStream, RabbitMQ and Redis Streams, every workload on every
    /// system in one run (bench/run-peers.sh installs the peers and runs this).
    Peers {
        /// Systems to run, comma-separated: ferry-http, ferry-http2, ferry-kafka, nats,
        /// rabbitmq-quorum, rabbitmq-classic, redis-always, redis-everysec
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "ferry-http,ferry-http2,ferry-kafka,nats,rabbitmq-quorum,rabbitmq-classic,redis-always,redis-everysec"
        )]
        systems: Vec<String>,
        /// Seconds of each durable produce run
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Seconds of the end-to-end latency run
        #[arg(long, default_value_t = 10)]
        latency_seconds: u64,
        /// Records preloaded for each consume run
        #[arg(long, default_value_t = 200_000)]
        consume_records: u64,
        /// Records of the backlog run (0 skips it)
        #[arg(long, default_value_t = 10_000_000)]
        backlog_records: u64,
        /// Publishers of the single-record produce run
        #[arg(long, default_value_t = 16)]
        single_publishers: usize,
        /// Single-record publishes each publisher keeps in flight
        #[arg(long, default_value_t = 64)]
        window: usize,
        /// Records per second of the single-record latency run
        #[arg(long, default_value_t = 5000.0)]
        single_rate: f64,
        /// Write the Markdown report to this file too
        #[arg(long)]
        out: Option<PathBuf>,
        /// Write the chart (SVG) to this file
        #[arg(long)]
        chart: Option<PathBuf>,
        /// Replace the section between `<!-- peers:begin -->` and `<!-- peers:end -->`
        /// of this Markdown file with the report
        #[arg(long)]
        doc: Option<PathBuf>,
        /// Exit with an error if any system could not run or any workload failed
        #[arg(long)]
        strict: bool,
    },
    /// Kafka transactions through librdkafka: transactional against idempotent produce,
    /// and read_committed against read_uncommitted consumption of the same records.
    Transactions {
        /// Seconds of each producer run
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Records per transaction to run in turn
        #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
        txn_records: Vec<usize>,
        /// Records preloaded (in transactions of 100, one in ten aborted) for the drains
        #[arg(long, default_value_t = 200_000)]
        consume_records: u64,
    },
    /// Shared mode against the local mode over HTTP, with the object store's PUT
    /// latency and Postgres's sequencing rate beside (a real s3s-fs and Postgres).
    Shared {
        /// Postgres to make a scratch database on [default: FERRY_TEST_POSTGRES_URL]
        #[arg(long, env = "FERRY_TEST_POSTGRES_URL")]
        metadata_url: String,
        /// The s3s-fs binary to start
        #[arg(long, default_value = "s3s-fs")]
        s3fs_bin: String,
        /// Seconds of each producer run
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Concurrent HTTP producers to run in turn
        #[arg(long, value_delimiter = ',', default_value = "1,16")]
        clients: Vec<usize>,
        /// Records of a backlog written through one shared node, for its memory
        /// (0: none)
        #[arg(long, default_value_t = 0)]
        backlog_records: u64,
        /// Rounds of a consumer group's failover: three nodes, the group's coordinator
        /// killed with SIGKILL (0: none)
        #[arg(long, default_value_t = 3)]
        failovers: usize,
        /// Skip the reads before and after merging small objects
        #[arg(long)]
        no_merge: bool,
    },
    /// Server memory with records scheduled an hour ahead (100-byte records).
    Delayed {
        #[arg(long, default_value_t = 1_000_000)]
        records: u64,
    },
    /// Start time on an empty folder, and recovery of a large log after kill -9.
    Start {
        #[arg(long, default_value_t = 1024)]
        recovery_mib: u64,
    },
}

pub struct Ctx {
    pub dir: PathBuf,
    pub ferry_bin: PathBuf,
}

/// Runs one subcommand. Longer than most functions on purpose: one arm per
/// subcommand, each naming the workloads it runs and the report it prints.
fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    ferry_client::install_tls();
    let base = cli.dir.unwrap_or_else(std::env::temp_dir);
    let holder = tempfile::Builder::new()
        .prefix("ferry-bench-")
        .tempdir_in(&base)?;
    let ferry_bin = match cli.ferry_bin {
        Some(p) => p,
        None => std::env::current_exe()?.with_file_name("ferry"),
    };
    if !ferry_bin.exists() {
        anyhow::bail!(
            "no ferry binary at {}; build it (cargo build --release -p ferry) or pass --ferry-bin",
            ferry_bin.display()
        );
    }
    let ctx = Ctx {
        dir: holder.path().to_path_buf(),
        ferry_bin,
    };
    let rt = tokio::runtime::Runtime::new()?;
    match cli.command {
        Command::All {
            seconds,
            recovery_mib,
        } => {
            let disk = disk::run(&ctx, seconds)?;
            let appends = log_append::run(&ctx, seconds, &[1, 8, 64], 1)?;
            let batched = log_append::run(&ctx, seconds, &[64], 16)?;
            let http = rt.block_on(http::run(&ctx, seconds, &[1, 16]))?;
            let start = rt.block_on(server::start_and_recovery(&ctx, recovery_mib))?;
            let q = rt.block_on(queue::run(&ctx, 100_000, &[1, 4, 16]))?;
            println!("{}", report(&disk, &appends, &batched, &http, &start));
            println!("{}", queue::report_with_disk(&q, None, disk.seq_mb_s));
        }
        Command::Smoke => smoke(&ctx, &rt)?,
        Command::Compaction {
            records,
            keys,
            offset_map_bytes,
        } => {
            let r = compaction::run(&ctx, records, keys, offset_map_bytes)?;
            println!("{}", compaction::report(&r));
        }
        Command::Disk { seconds } => println!("{:#?}", disk::run(&ctx, seconds)?),
        Command::LogAppend {
            seconds,
            records_per_append,
        } => {
            let disk = disk::run(&ctx, seconds)?;
            let r = log_append::run(&ctx, seconds, &[1, 8, 64], records_per_append)?;
            println!(
                "{}",
                report(&disk, &r, &[], &[], &server::StartResult::default())
            );
        }
        Command::Auth { seconds, clients } => {
            let rows = rt.block_on(auth::run(
                &ctx,
                std::time::Duration::from_secs(seconds),
                clients.max(1),
            ))?;
            println!("{}", auth::report(&rows, clients.max(1)));
        }
        Command::Http {
            seconds,
            records_per_request,
            clients,
        } => {
            let disk = disk::run(&ctx, seconds)?;
            let r = rt.block_on(http::run_for(
                &ctx,
                std::time::Duration::from_secs(seconds),
                &clients,
                records_per_request.max(1),
            ))?;
            println!(
                "{}",
                report(&disk, &[], &[], &r, &server::StartResult::default())
            );
        }
        Command::Tls {
            seconds,
            clients,
            records_per_request,
            durability,
            rounds,
        } => {
            let rows = rt.block_on(tls::run(
                &ctx,
                seconds,
                &clients,
                &records_per_request,
                &durability,
                rounds,
            ))?;
            println!("{}", tls::report(&rows, &durability));
        }
        Command::Queue {
            records,
            backlog,
            delayed,
        } => {
            let disk = disk::run(&ctx, 5)?;
            let q = rt.block_on(queue::run(&ctx, records, &[1, 4, 16]))?;
            let b = (backlog > 0)
                .then(|| rt.block_on(queue::backlog(&ctx, backlog)))
                .transpose()?;
            let d = (delayed > 0)
                .then(|| rt.block_on(queue::delayed(&ctx, delayed)))
                .transpose()?;
            println!(
                "{}",
                report(&disk, &[], &[], &[], &server::StartResult::default())
            );
            println!("{}", queue::report_with_disk(&q, b.as_ref(), disk.seq_mb_s));
            if let Some(d) = d {
                println!("{}", queue::report_delayed(&d));
            }
        }
        Command::Backlog { records } => {
            let b = rt.block_on(queue::backlog(&ctx, records))?;
            println!("{}", queue::report_with_disk(&[], Some(&b), 1.0));
        }
        Command::Push {
            records,
            open_records,
            wrk_seconds,
            in_flight,
            rounds,
        } => {
            let r = rt.block_on(push::run(&ctx, records, &in_flight, wrk_seconds, rounds))?;
            let o = (open_records > 0)
                .then(|| rt.block_on(push::open_breaker(&ctx, open_records)))
                .transpose()?;
            println!("{}", push::report(&r, o.as_ref()));
        }
        Command::Peers {
            systems,
            seconds,
            latency_seconds,
            consume_records,
            backlog_records,
            single_publishers,
            window,
            single_rate,
            out,
            chart,
            doc,
            strict,
        } => {
            anyhow::ensure!(
                single_publishers > 0 && window > 0 && single_rate > 0.0,
                "--single-publishers, --window and --single-rate must be above 0"
            );
            let options = peers::Options {
                systems: parse_systems(&systems)?,
                seconds,
                latency_seconds,
                consume_records,
                backlog_records,
                producers: vec![1, 16],
                consumers: vec![1, 4],
                single_publishers,
                window,
                single_rate,
            };
            let outputs = PeerOutputs { out, chart, doc };
            run_peers(&ctx, &rt, options, &outputs, strict)?
        }
        Command::Transactions {
            seconds,
            txn_records,
            consume_records,
        } => {
            anyhow::ensure!(
                txn_records.iter().all(|&n| n > 0),
                "--txn-records must be above 0"
            );
            let r = transactions::run(&ctx, &rt, seconds as f64, &txn_records, consume_records)?;
            println!("{}", transactions::report(&r));
        }
        Command::Shared {
            metadata_url,
            s3fs_bin,
            seconds,
            clients,
            backlog_records,
            failovers,
            no_merge,
        } => {
            let r = rt.block_on(shared::run(
                &ctx,
                shared::Options {
                    metadata_url: &metadata_url,
                    s3fs_bin: &s3fs_bin,
                    seconds,
                    clients: &clients,
                    backlog_records,
                    failovers,
                    merge: !no_merge,
                },
            ))?;
            println!("{}", shared::report(&r));
        }
        Command::Delayed { records } => {
            let d = rt.block_on(queue::delayed(&ctx, records))?;
            println!("{}", queue::report_delayed(&d));
        }
        Command::Start { recovery_mib } => println!(
            "{:#?}",
            rt.block_on(server::start_and_recovery(&ctx, recovery_mib))?
        ),
    }
    Ok(())
}

/// A tiny run of every workload, failing when one makes no progress (run in CI).
fn smoke(ctx: &Ctx, rt: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    let disk = disk::run_sized(ctx, 8, 0.2)?;
    let appends = log_append::run_for(ctx, std::time::Duration::from_millis(200), &[1, 8], 1)?;
    let http = rt.block_on(http::run_for(
        ctx,
        std::time::Duration::from_millis(300),
        &[2],
        100,
    ))?;
    let start = rt.block_on(server::start_and_recovery(ctx, 8))?;
    let q = rt.block_on(queue::run(ctx, 2_000, &[1, 4]))?;
    let b = rt.block_on(queue::backlog(ctx, 20_000))?;
    let d = rt.block_on(queue::delayed(ctx, 20_000))?;
    println!("{}", report(&disk, &appends, &[], &http, &start));
    println!("{}", queue::report_with_disk(&q, Some(&b), disk.seq_mb_s));
    println!("{}", queue::report_delayed(&d));
    anyhow::ensure!(d.delayed_reported == 20_000, "delayed records counted");
    let p = rt.block_on(push::run(ctx, 500, &[1, 8], 0, 1))?;
    let o = rt.block_on(push::open_breaker(ctx, 2_000))?;
    println!("{}", push::report(&p, Some(&o)));
    anyhow::ensure!(o.breaker == "open", "the breaker opened");
    anyhow::ensure!(
        q.iter().all(|x| x.records >= 2_000),
        "queue consumers drained the backlog"
    );
    anyhow::ensure!(b.backlog_reported == 20_000, "backlog counted");
    anyhow::ensure!(
        appends.iter().all(|a| a.records > 0),
        "appends made progress"
    );
    anyhow::ensure!(
        http.iter()
            .all(|h| h.produce_records > 0 && h.read_records > 0),
        "HTTP made progress"
    );
    let c = compaction::run(ctx, 200_000, 1_000, 1 << 20)?;
    println!("{}", compaction::report(&c));
    anyhow::ensure!(
        c.segments > 0 && c.records_removed > 0,
        "compaction removed older versions"
    );
    let t = transactions::run(ctx, rt, 0.3, &[10], 200)?;
    println!("{}", transactions::report(&t));
    anyhow::ensure!(
        t.produce.iter().all(|p| p.records > 0),
        "transactional and idempotent producers made progress"
    );
    println!("ferry-bench smoke: 1 passed, 0 failed");
    Ok(())
}

/// The systems named on the command line.
fn parse_systems(names: &[String]) -> anyhow::Result<Vec<peers::System>> {
    names
        .iter()
        .map(|s| {
            peers::System::parse(s).ok_or_else(|| {
                anyhow::anyhow!(
                    "unknown system {s:?}; choose from {}",
                    peers::systems::ALL.map(|x| x.id()).join(", ")
                )
            })
        })
        .collect()
}

/// Where `ferry-bench peers` writes its report besides standard output.
struct PeerOutputs {
    out: Option<PathBuf>,
    chart: Option<PathBuf>,
    doc: Option<PathBuf>,
}

/// Runs the peer comparison and writes its table, chart and doc section.
fn run_peers(
    ctx: &Ctx,
    rt: &tokio::runtime::Runtime,
    options: peers::Options,
    outputs: &PeerOutputs,
    strict: bool,
) -> anyhow::Result<()> {
    let rep = peers::run(ctx, rt, options)?;
    let mut md = peers::markdown(&rep);
    if let Some(chart) = &outputs.chart {
        std::fs::write(chart, peers::svg(&rep)?)?;
        if let Some(name) = chart.file_name() {
            md.push_str(&format!(
                "![Ferry and its peers](bench/{})\n",
                name.to_string_lossy()
            ));
        }
    }
    println!("{md}");
    if let Some(out) = &outputs.out {
        std::fs::write(out, &md)?;
    }
    if let Some(doc) = &outputs.doc {
        peers::update_doc(doc, &md)?;
    }
    let failed = peers::failures(&rep);
    if strict && !failed.is_empty() {
        anyhow::bail!("{} failed:\n{}", failed.len(), failed.join("\n"));
    }
    Ok(())
}

fn mb(bytes: f64, secs: f64) -> f64 {
    bytes / secs / 1e6
}

fn report(
    disk: &disk::DiskResult,
    appends: &[log_append::AppendResult],
    batched: &[log_append::AppendResult],
    http: &[http::HttpResult],
    start: &server::StartResult,
) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "Disk (same run): sequential write {:.0} MB/s (1 MiB writes, one fdatasync at the end); {:.0} fdatasync/s (4 KiB append + fdatasync).\n\n",
        disk.seq_mb_s, disk.fsyncs_per_s
    ));
    if !appends.is_empty() || !batched.is_empty() {
        s.push_str("| log append, durability always | producers | records/append | records/s | MB/s | % of disk sequential | appends per fsync |\n|---|---|---|---|---|---|---|\n");
        for a in appends.iter().chain(batched) {
            let rate = mb(a.bytes as f64, a.secs);
            s.push_str(&format!(
                "| 1 KiB records | {} | {} | {:.0} | {:.1} | {:.0} % | {:.1} |\n",
                a.producers,
                a.records_per_append,
                a.records as f64 / a.secs,
                rate,
                100.0 * rate / disk.seq_mb_s,
                a.appends as f64 / (a.syncs.max(1)) as f64,
            ));
        }
        s.push('\n');
    }
    if !http.is_empty() {
        s.push_str("| HTTP, durability always | clients | produce records/s | produce MB/s | % of disk sequential | produce p50 ms | produce p99 ms | read records/s | read MB/s |\n|---|---|---|---|---|---|---|---|---|\n");
        for h in http {
            let rate = mb(h.produce_bytes as f64, h.produce_secs);
            s.push_str(&format!(
                "| {} × 1 KiB per request | {} | {:.0} | {:.1} | {:.0} % | {:.1} | {:.1} | {:.0} | {:.1} |\n",
                h.per_request,
                h.clients,
                h.produce_records as f64 / h.produce_secs,
                rate,
                100.0 * rate / disk.seq_mb_s,
                h.p50_ms,
                h.p99_ms,
                h.read_records as f64 / h.read_secs,
                mb(h.read_bytes as f64, h.read_secs),
            ));
        }
        s.push('\n');
    }
    if start.empty_ready_ms > 0.0 {
        s.push_str(&format!(
            "| start | ready after | server RSS |\n|---|---|---|\n| empty data folder (median of {}) | {:.1} ms | {:.1} MiB |\n| {} MiB log after kill -9 | {:.1} ms | {:.1} MiB (after reading the whole log: {:.1} MiB) |\n",
            start.runs,
            start.empty_ready_ms,
            start.empty_rss_mib,
            start.log_mib,
            start.recovery_ready_ms,
            start.recovery_rss_mib,
            start.after_read_rss_mib,
        ));
    }
    s
}
