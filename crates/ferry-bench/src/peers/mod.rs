//! `ferry-bench peers`: the same workloads against Ferry (over HTTP and over the Kafka
//! protocol) and against the brokers its users would pick instead (NATS JetStream,
//! RabbitMQ, Redis Streams), one after the other in one run on one machine, with the
//! disk's own limits measured in the same run.
//!
//! Workloads, each on a fresh topic, stream or queue:
//! - durable produce: 1 and 16 producers publish batches of 100 records of 1 KiB and
//!   wait for the system's acknowledgement of the whole batch before the next;
//! - single-record produce: 16 publishers each keep 64 publishes of one record in
//!   flight (the way services publish an event per request);
//! - end-to-end latency: one producer publishes at half the rate that one producer
//!   reached, one consumer receives; the time from when a record was due to be
//!   published to when the consumer has it, in an HdrHistogram;
//! - single-record latency: the same at a fixed rate (5,000 records/s), each record
//!   published alone, up to 64 in flight;
//! - consume: a preloaded backlog is received and acknowledged by 1 and 4 consumers;
//! - backlog: a fresh instance gets many records with no consumer running; the peak
//!   resident memory of its processes, then the time 4 consumers take to drain it.

pub mod adapters;
mod chart;
mod report;
pub mod systems;

use adapters::{Consumer, Peer, Producer};
use bytes::Bytes;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
pub use systems::System;

use crate::Ctx;

/// Bytes per record.
pub const RECORD_BYTES: usize = 1024;
/// Records per publish.
const BATCH: usize = 100;
/// Producers that preload backlogs.
const PRELOAD_PRODUCERS: usize = 16;
/// Longest a consume or drain may go without receiving anything.
const STALL: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct Options {
    pub systems: Vec<System>,
    /// Seconds of each produce run.
    pub seconds: u64,
    /// Seconds of the latency run.
    pub latency_seconds: u64,
    /// Records preloaded for each consume run.
    pub consume_records: u64,
    /// Records for the backlog run (0 skips it).
    pub backlog_records: u64,
    pub producers: Vec<usize>,
    pub consumers: Vec<usize>,
    /// Publishers of the single-record produce run.
    pub single_publishers: usize,
    /// Single-record publishes each publisher keeps in flight.
    pub window: usize,
    /// Records per second of the single-record latency run.
    pub single_rate: f64,
}

#[derive(Debug, Clone)]
pub struct Latency {
    pub rate: f64,
    pub sent: u64,
    pub received: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
}

#[derive(Debug, Clone)]
pub struct Backlog {
    pub publish_per_s: f64,
    pub idle_mib: f64,
    pub peak_mib: f64,
    pub drain_secs: f64,
}

type Outcome<T> = Result<T, String>;

#[derive(Debug, Clone)]
pub struct SystemResult {
    pub system: System,
    pub version: String,
    /// Why the system was not run, if it was not.
    pub skipped: Option<String>,
    /// (producers, records per second)
    pub produce: Vec<(usize, Outcome<f64>)>,
    pub latency: Option<Outcome<Latency>>,
    /// Single-record produce, records per second.
    pub single: Option<Outcome<f64>>,
    pub single_latency: Option<Outcome<Latency>>,
    /// (consumers, records per second)
    pub consume: Vec<(usize, Outcome<f64>)>,
    pub backlog: Option<Outcome<Backlog>>,
}

pub struct PeersReport {
    pub disk: crate::disk::DiskResult,
    pub options: Options,
    pub results: Vec<SystemResult>,
    pub date: String,
}

/// A record: the time it was due, in nanoseconds as 20 ASCII digits (0 for records
/// whose time does not matter), then filler up to [`RECORD_BYTES`].
pub fn payload(due_ns: u64) -> Bytes {
    let mut v = format!("{due_ns:020}").into_bytes();
    v.resize(RECORD_BYTES, b'x');
    Bytes::from(v)
}

/// The due time a payload carries.
pub fn stamp(b: &[u8]) -> Option<u64> {
    std::str::from_utf8(b.get(..20)?).ok()?.parse().ok()
}

fn steps(o: &Options) -> u64 {
    let per = o.producers.len() + 3 + o.consumers.len() + usize::from(o.backlog_records > 0);
    (o.systems.len() * per) as u64
}

/// Runs every workload against every system; a failed workload is reported as failed
/// and the run goes on.
pub fn run(ctx: &Ctx, rt: &tokio::runtime::Runtime, o: Options) -> anyhow::Result<PeersReport> {
    let pb = ProgressBar::new(steps(&o));
    pb.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} workloads · {msg}")?
            .progress_chars("=> "),
    );
    pb.enable_steady_tick(Duration::from_millis(500));
    let date = report::today();
    pb.set_message("disk");
    let disk = crate::disk::run(ctx, 5)?;
    say(
        &pb,
        format!(
            "disk: {:.0} MB/s sequential, {:.0} fdatasync/s",
            disk.seq_mb_s, disk.fsyncs_per_s
        ),
    );
    let mut results = Vec::new();
    for &system in &o.systems {
        let r = rt.block_on(bench_system(ctx, system, &o, &pb));
        say(&pb, report::one_line(&r));
        results.push(r);
    }
    pb.finish_with_message("done");
    Ok(PeersReport {
        disk,
        options: o,
        results,
        date,
    })
}

/// A line above the progress bar, or on its own when standard error is not a terminal
/// (the bar is then hidden).
fn say(pb: &ProgressBar, line: String) {
    if pb.is_hidden() {
        eprintln!("{line}");
    } else {
        pb.println(line);
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// The bar's message; also a line of its own when the bar is hidden.
fn status(pb: &ProgressBar, msg: String) {
    if pb.is_hidden() {
        eprintln!("[{}/{}] {msg}", pb.position() + 1, pb.length().unwrap_or(0));
    }
    pb.set_message(msg);
}

async fn bench_system(ctx: &Ctx, system: System, o: &Options, pb: &ProgressBar) -> SystemResult {
    use adapters::*;
    let mut r = SystemResult {
        system,
        version: systems::version(system, ctx),
        skipped: system.missing(),
        produce: Vec::new(),
        latency: None,
        single: None,
        single_latency: None,
        consume: Vec::new(),
        backlog: None,
    };
    if r.skipped.is_some() {
        pb.inc(steps(&Options {
            systems: vec![system],
            ..o.clone()
        }));
        return r;
    }
    let outcome = match system {
        System::FerryHttp => {
            run_with(ctx, system, o, pb, &mut r, |x| {
                FerryHttp::new(x.url.clone())
            })
            .await
        }
        System::FerryHttp2 => {
            run_with(ctx, system, o, pb, &mut r, |x| {
                FerryHttp::new_http2(x.url.clone())
            })
            .await
        }
        System::FerryKafka => {
            run_with(ctx, system, o, pb, &mut r, |x| {
                Ok(Kafka {
                    bootstrap: x.kafka_addr.clone(),
                    admin: FerryHttp::new(x.url.clone())?,
                })
            })
            .await
        }
        System::Nats => {
            run_with(ctx, system, o, pb, &mut r, |x| {
                Ok(Nats { url: x.url.clone() })
            })
            .await
        }
        System::RabbitQuorum | System::RabbitClassic => {
            run_with(ctx, system, o, pb, &mut r, |x| {
                Ok(Rabbit {
                    url: x.url.clone(),
                    quorum: system == System::RabbitQuorum,
                })
            })
            .await
        }
        System::RedisAlways | System::RedisEverysec => {
            run_with(ctx, system, o, pb, &mut r, |x| {
                Ok(Redis { url: x.url.clone() })
            })
            .await
        }
    };
    if let Err(e) = outcome {
        r.skipped = Some(format!("{e:#}"));
    }
    r
}

async fn run_with<P: Peer>(
    ctx: &Ctx,
    system: System,
    o: &Options,
    pb: &ProgressBar,
    r: &mut SystemResult,
    make: impl Fn(&systems::Running) -> anyhow::Result<P>,
) -> anyhow::Result<()> {
    let id = system.id();
    let dir = ctx.dir.join(id);
    status(pb, format!("{id}: starting"));
    let running = systems::start(ctx, system, &dir).await?;
    let peer = Arc::new(make(&running)?);
    let err = |e: anyhow::Error| format!("{e:#}");
    for &n in &o.producers {
        status(pb, format!("{id}: produce, {n} producer{}", plural(n)));
        let name = format!("produce{n}");
        let res = produce(&peer, &name, n, Duration::from_secs(o.seconds)).await;
        let _ = peer.delete(&name).await;
        r.produce.push((n, res.map_err(err)));
        pb.inc(1);
    }
    let one = r
        .produce
        .iter()
        .find_map(|(n, x)| (*n == 1).then_some(x.clone()))
        .and_then(Result::ok);
    status(pb, format!("{id}: end-to-end latency"));
    r.latency = Some(match one {
        Some(max) => {
            let res = latency(
                &peer,
                "latency",
                (max / 2.0).max(1.0),
                Duration::from_secs(o.latency_seconds),
            )
            .await;
            let _ = peer.delete("latency").await;
            res.map_err(err)
        }
        None => Err("no rate for one producer to take half of".into()),
    });
    pb.inc(1);
    status(
        pb,
        format!(
            "{id}: single-record produce, {} publishers × {} in flight",
            o.single_publishers, o.window
        ),
    );
    let res = produce_single(
        &peer,
        "single",
        o.single_publishers,
        o.window,
        Duration::from_secs(o.seconds),
    )
    .await;
    let _ = peer.delete("single").await;
    r.single = Some(res.map_err(err));
    pb.inc(1);
    status(pb, format!("{id}: single-record latency"));
    let res = latency_single(
        &peer,
        "single-latency",
        o.single_rate,
        o.window,
        Duration::from_secs(o.latency_seconds),
    )
    .await;
    let _ = peer.delete("single-latency").await;
    r.single_latency = Some(res.map_err(err));
    pb.inc(1);
    for &n in &o.consumers {
        status(pb, format!("{id}: consume, {n} consumer{}", plural(n)));
        let name = format!("consume{n}");
        let res = consume(&peer, &name, n, o.consume_records).await;
        let _ = peer.delete(&name).await;
        r.consume.push((n, res.map_err(err)));
        pb.inc(1);
    }
    drop(peer);
    drop(running);
    if o.backlog_records > 0 {
        status(pb, format!("{id}: backlog, starting afresh"));
        let res = async {
            let running = systems::start(ctx, system, &dir).await?;
            let peer = Arc::new(make(&running)?);
            backlog(&peer, &running, o.backlog_records, pb, id).await
        }
        .await;
        r.backlog = Some(res.map_err(err));
        pb.inc(1);
    }
    Ok(())
}

/// `producers` producers publish batches for `duration`; records acknowledged per second.
async fn produce<P: Peer>(
    peer: &Arc<P>,
    name: &str,
    producers: usize,
    duration: Duration,
) -> anyhow::Result<f64> {
    let batch = (0..BATCH).map(|_| payload(0)).collect();
    produce_windows(peer, name, producers, 1, batch, duration).await
}

/// `publishers` publishers each keep `window` publishes of one record in flight for
/// `duration`; records acknowledged per second.
async fn produce_single<P: Peer>(
    peer: &Arc<P>,
    name: &str,
    publishers: usize,
    window: usize,
    duration: Duration,
) -> anyhow::Result<f64> {
    produce_windows(peer, name, publishers, window, vec![payload(0)], duration).await
}

/// `publishers` publishers each keep `window` publishes of `batch` in flight (each on a
/// clone of the publisher's producer) for `duration`; records acknowledged per second.
async fn produce_windows<P: Peer>(
    peer: &Arc<P>,
    name: &str,
    publishers: usize,
    window: usize,
    batch: Vec<Bytes>,
    duration: Duration,
) -> anyhow::Result<f64> {
    peer.create(name).await?;
    let mut ps = Vec::new();
    for _ in 0..publishers {
        ps.push(peer.producer(name).await?);
    }
    let batch = Arc::new(batch);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in ps {
        for _ in 0..window {
            let (mut p, batch) = (p.clone(), Arc::clone(&batch));
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while started.elapsed() < duration {
                    p.publish(&batch).await?;
                    n += batch.len() as u64;
                }
                Ok::<_, anyhow::Error>(n)
            }));
        }
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// Publishes `records` records with [`PRELOAD_PRODUCERS`] producers; `done` counts them.
async fn preload<P: Peer>(
    peer: &Arc<P>,
    name: &str,
    records: u64,
    done: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let batches = Arc::new(AtomicU64::new(records.div_ceil(BATCH as u64)));
    let batch: Arc<Vec<Bytes>> = Arc::new((0..BATCH).map(|_| payload(0)).collect());
    let mut tasks = Vec::new();
    for _ in 0..PRELOAD_PRODUCERS {
        let mut p = peer.producer(name).await?;
        let (batches, batch, done) = (Arc::clone(&batches), Arc::clone(&batch), Arc::clone(&done));
        tasks.push(tokio::spawn(async move {
            while batches
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |x| x.checked_sub(1))
                .is_ok()
            {
                p.publish(&batch).await?;
                done.fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// `consumers` consumers receive and acknowledge until `records` have arrived; returns
/// (records per second, seconds), timed from when the consumers were made (a Kafka
/// consumer group's join is part of it) to the last record.
async fn drain<P: Peer>(
    peer: &Arc<P>,
    name: &str,
    consumers: usize,
    records: u64,
) -> anyhow::Result<(f64, f64)> {
    let received = Arc::new(AtomicU64::new(0));
    let last: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    let mut cs = Vec::new();
    for i in 0..consumers {
        cs.push(peer.consumer(name, i).await?);
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for mut c in cs {
        let (received, last) = (Arc::clone(&received), Arc::clone(&last));
        tasks.push(tokio::spawn(async move {
            let mut progress = Instant::now();
            while received.load(Ordering::Acquire) < records {
                let got = c.receive(BATCH).await?;
                if got.is_empty() {
                    anyhow::ensure!(
                        progress.elapsed() < STALL,
                        "nothing received for {} s, {} of {records} records in",
                        STALL.as_secs(),
                        received.load(Ordering::Acquire)
                    );
                    continue;
                }
                progress = Instant::now();
                c.ack().await?;
                let total =
                    received.fetch_add(got.len() as u64, Ordering::AcqRel) + got.len() as u64;
                if total >= records {
                    last.lock()
                        .map_err(|_| anyhow::anyhow!("poisoned"))?
                        .get_or_insert_with(Instant::now);
                }
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let end = last
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .unwrap_or_else(Instant::now);
    let secs = end.duration_since(start).as_secs_f64().max(1e-6);
    Ok((records as f64 / secs, secs))
}

async fn consume<P: Peer>(
    peer: &Arc<P>,
    name: &str,
    consumers: usize,
    records: u64,
) -> anyhow::Result<f64> {
    peer.create(name).await?;
    preload(peer, name, records, Arc::default()).await?;
    Ok(drain(peer, name, consumers, records).await?.0)
}

/// What a latency run's consumer shares with its publisher.
struct LatencyRun {
    epoch: Instant,
    /// The consumer has received a warm-up record.
    ready: AtomicBool,
    /// Timed records acknowledged to the publisher.
    sent: AtomicU64,
    /// The publisher is done.
    stop: AtomicBool,
}

type Received = (Histogram<u64>, u64);

/// The consumer of a latency run: receives and acknowledges, and records how long after
/// its due time each timed record arrived, until every sent record is in (or 10 s after
/// the publisher stopped).
fn latency_consumer<C: Consumer>(
    mut c: C,
    run: Arc<LatencyRun>,
) -> tokio::task::JoinHandle<anyhow::Result<Received>> {
    tokio::spawn(async move {
        let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
        let mut received = 0u64;
        let mut stopped_at: Option<Instant> = None;
        loop {
            let got = c.receive(500).await?;
            let now = run.epoch.elapsed().as_nanos() as u64;
            for r in &got {
                match stamp(r) {
                    Some(0) | None => run.ready.store(true, Ordering::Release),
                    Some(due) => {
                        received += 1;
                        h.saturating_record(now.saturating_sub(due).max(1000) / 1000);
                    }
                }
            }
            c.ack().await?;
            if run.stop.load(Ordering::Acquire) {
                let at = *stopped_at.get_or_insert_with(Instant::now);
                if received >= run.sent.load(Ordering::Acquire)
                    || at.elapsed() > Duration::from_secs(10)
                {
                    return Ok((h, received));
                }
            }
        }
    })
}

/// Publishes untimed records until the consumer has one (a Kafka group must join first).
async fn warm_up<Pr: Producer>(p: &mut Pr, run: &LatencyRun) -> anyhow::Result<()> {
    let warm = Instant::now();
    while !run.ready.load(Ordering::Acquire) {
        anyhow::ensure!(
            warm.elapsed() < Duration::from_secs(60),
            "the consumer received nothing in 60 s"
        );
        p.publish(&[payload(0)]).await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn latency_figures(rate: f64, sent: u64, (h, received): Received) -> Latency {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Latency {
        rate,
        sent,
        received,
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
    }
}

/// Creates the destination, a producer and the consumer task, and warms up; returns
/// the producer, the shared state, the consumer and when the timed part starts.
async fn start_latency_run<P: Peer>(
    peer: &Arc<P>,
    name: &str,
) -> anyhow::Result<(
    P::P,
    Arc<LatencyRun>,
    tokio::task::JoinHandle<anyhow::Result<Received>>,
    Duration,
)> {
    peer.create(name).await?;
    let mut p = peer.producer(name).await?;
    let c = peer.consumer(name, 0).await?;
    let run = Arc::new(LatencyRun {
        epoch: Instant::now(),
        ready: AtomicBool::new(false),
        sent: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let consumer = latency_consumer(c, Arc::clone(&run));
    warm_up(&mut p, &run).await?;
    let start = run.epoch.elapsed();
    Ok((p, run, consumer, start))
}

/// One producer publishes at `rate` records/s for `duration`, in batches of whatever is
/// due; one consumer receives.
async fn latency<P: Peer>(
    peer: &Arc<P>,
    name: &str,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<Latency> {
    let (mut p, run, consumer, start) = start_latency_run(peer, name).await?;
    let mut n = 0u64;
    loop {
        let elapsed = run.epoch.elapsed() - start;
        if elapsed >= duration {
            break;
        }
        let due = (elapsed.as_secs_f64() * rate) as u64;
        if due <= n {
            tokio::time::sleep(Duration::from_micros(200)).await;
            continue;
        }
        let k = (due - n).min(1000);
        let batch: Vec<Bytes> = (n..n + k)
            .map(|i| payload((start + Duration::from_secs_f64(i as f64 / rate)).as_nanos() as u64))
            .collect();
        p.publish(&batch).await?;
        n += k;
        run.sent.store(n, Ordering::Release);
    }
    run.stop.store(true, Ordering::Release);
    Ok(latency_figures(rate, n, consumer.await??))
}

/// One publisher publishes one record at a time at `rate` records/s for `duration`,
/// keeping up to `window` in flight; one consumer receives. A thread paces the records
/// (a timer of the async runtime is too coarse for 200 µs apart), and each carries the
/// time it was due, so a publisher held up by its window still counts the wait.
async fn latency_single<P: Peer>(
    peer: &Arc<P>,
    name: &str,
    rate: f64,
    window: usize,
    duration: Duration,
) -> anyhow::Result<Latency> {
    let (p, run, consumer, start) = start_latency_run(peer, name).await?;
    let (tx, mut due_rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let epoch = run.epoch;
    let pacer = std::thread::spawn(move || {
        for i in 0u64.. {
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            if due - start >= duration {
                break;
            }
            if let Some(wait) = due.checked_sub(epoch.elapsed()) {
                std::thread::sleep(wait);
            }
            if tx.send(due.as_nanos() as u64).is_err() {
                break;
            }
        }
    });
    let slots = Arc::new(tokio::sync::Semaphore::new(window));
    let mut publishes = tokio::task::JoinSet::new();
    let mut n = 0u64;
    while let Some(due) = due_rx.recv().await {
        let slot = Arc::clone(&slots).acquire_owned().await?;
        let (mut p, run) = (p.clone(), Arc::clone(&run));
        publishes.spawn(async move {
            p.publish(&[payload(due)]).await?;
            run.sent.fetch_add(1, Ordering::AcqRel);
            drop(slot);
            Ok::<_, anyhow::Error>(())
        });
        n += 1;
        while let Some(done) = publishes.try_join_next() {
            done??;
        }
    }
    while let Some(done) = publishes.join_next().await {
        done??;
    }
    pacer
        .join()
        .map_err(|_| anyhow::anyhow!("the pacing thread panicked"))?;
    run.stop.store(true, Ordering::Release);
    Ok(latency_figures(rate, n, consumer.await??))
}

/// Fills a fresh instance with `records` records no one consumes, sampling its memory,
/// then drains it with 4 consumers.
async fn backlog<P: Peer>(
    peer: &Arc<P>,
    running: &systems::Running,
    records: u64,
    pb: &ProgressBar,
    id: &str,
) -> anyhow::Result<Backlog> {
    let name = "backlog";
    peer.create(name).await?;
    let idle_mib = running.memory_mib();
    let mut peak = idle_mib;
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    {
        let load = preload(peer, name, records, Arc::clone(&done));
        tokio::pin!(load);
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                res = &mut load => { res?; break; }
                _ = tick.tick() => {
                    peak = peak.max(running.memory_mib());
                    pb.set_message(format!(
                        "{id}: backlog, {} of {records} published, peak memory {peak:.0} MiB",
                        done.load(Ordering::Relaxed)
                    ));
                }
            }
        }
    }
    let publish_per_s = records as f64 / started.elapsed().as_secs_f64();
    peak = peak.max(running.memory_mib());
    status(pb, format!("{id}: backlog, draining"));
    let drained = drain(peer, name, 4, records);
    tokio::pin!(drained);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let drain_secs = loop {
        tokio::select! {
            res = &mut drained => break res?.1,
            _ = tick.tick() => peak = peak.max(running.memory_mib()),
        }
    };
    Ok(Backlog {
        publish_per_s,
        idle_mib,
        peak_mib: peak,
        drain_secs,
    })
}

/// Every system that could not run and every workload that failed, one line each.
pub fn failures(rep: &PeersReport) -> Vec<String> {
    let mut out = Vec::new();
    for r in &rep.results {
        let id = r.system.id();
        if let Some(why) = &r.skipped {
            out.push(format!("{id}: {why}"));
        }
        for (n, x) in &r.produce {
            if let Err(e) = x {
                out.push(format!("{id}: produce with {n}: {e}"));
            }
        }
        if let Some(Err(e)) = &r.latency {
            out.push(format!("{id}: latency: {e}"));
        }
        if let Some(Err(e)) = &r.single {
            out.push(format!("{id}: single-record produce: {e}"));
        }
        if let Some(Err(e)) = &r.single_latency {
            out.push(format!("{id}: single-record latency: {e}"));
        }
        for (n, x) in &r.consume {
            if let Err(e) = x {
                out.push(format!("{id}: consume with {n}: {e}"));
            }
        }
        if let Some(Err(e)) = &r.backlog {
            out.push(format!("{id}: backlog: {e}"));
        }
    }
    out
}

pub use chart::svg;
pub use report::{markdown, update_doc};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_is_1_kib_and_carries_its_due_time() {
        for t in [0, 1, 123_456_789, u64::MAX] {
            let p = payload(t);
            assert_eq!(p.len(), RECORD_BYTES);
            assert_eq!(stamp(&p), Some(t));
        }
        assert_eq!(stamp(b"short"), None);
        assert_eq!(stamp(&[b'x'; 40]), None);
    }

    #[test]
    fn steps_count_every_workload_of_every_system() {
        let o = Options {
            systems: vec![System::FerryHttp, System::Nats],
            seconds: 1,
            latency_seconds: 1,
            consume_records: 1,
            backlog_records: 1,
            producers: vec![1, 16],
            consumers: vec![1, 4],
            single_publishers: 16,
            window: 64,
            single_rate: 5000.0,
        };
        // 2 batched produce + 1 single-record produce + 2 latency + 2 consume + backlog
        assert_eq!(steps(&o), 2 * 8);
        assert_eq!(
            steps(&Options {
                backlog_records: 0,
                ..o
            }),
            2 * 7
        );
    }
}
