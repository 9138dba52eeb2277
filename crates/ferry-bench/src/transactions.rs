//! Kafka transactions through librdkafka against one `ferry serve`: what a transactional
//! producer costs against an idempotent one for a few transaction sizes, and what
//! `read_committed` costs a consumer against `read_uncommitted` over the same records.

use crate::server::Server;
use crate::Ctx;
use hdrhistogram::Histogram;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer as _, ProducerContext};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Partitions of each benchmark topic.
const PARTITIONS: i32 = 4;
/// Bytes of each record's value.
const VALUE_BYTES: usize = 100;
/// How long a client call may take before the run fails.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// One producer run: idempotent (`txn_records` 0) or transactions of `txn_records`.
#[derive(Debug, Clone)]
pub struct ProduceRow {
    pub txn_records: usize,
    pub records: u64,
    pub secs: f64,
    pub transactions: u64,
    pub commit_p50_ms: f64,
    pub commit_p99_ms: f64,
}

/// One drain of a preloaded topic from its start to its end.
#[derive(Debug, Clone)]
pub struct ConsumeRow {
    pub isolation: &'static str,
    pub records: u64,
    pub secs: f64,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub produce: Vec<ProduceRow>,
    pub consume: Vec<ConsumeRow>,
    /// Records written by committed transactions in the preload, and by aborted ones.
    pub committed: u64,
    pub aborted: u64,
}

/// Counts the delivery reports, so only records the broker acknowledged are counted.
#[derive(Default)]
struct Deliveries {
    delivered: AtomicU64,
    failed: AtomicU64,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let counter = if result.is_ok() {
            &self.delivered
        } else {
            &self.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

type Producer = BaseProducer<Deliveries>;

fn producer(bootstrap: &str, transactional_id: Option<&str>) -> anyhow::Result<Producer> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("compression.type", "none")
        .set("linger.ms", "5");
    if let Some(id) = transactional_id {
        config.set("transactional.id", id);
    }
    Ok(config.create_with_context(Deliveries::default())?)
}

fn create_topic(rt: &tokio::runtime::Runtime, server: &Server, name: &str) -> anyhow::Result<()> {
    rt.block_on(crate::queue::post(
        &reqwest::Client::new(),
        format!("{}/v1/topics", server.url),
        serde_json::json!({"name": name, "partitions": PARTITIONS, "retention_ms": -1}),
    ))?;
    Ok(())
}

/// Sends one record, serving delivery reports while librdkafka's queue is full.
fn send(p: &Producer, topic: &str, key: &[u8], value: &[u8]) -> anyhow::Result<()> {
    let mut record = BaseRecord::<[u8], [u8]>::to(topic).key(key).payload(value);
    loop {
        match p.send(record) {
            Ok(()) => return Ok(()),
            Err((
                KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                r,
            )) => {
                record = r;
                p.poll(Duration::from_millis(1));
            }
            Err((e, _)) => return Err(e.into()),
        }
    }
}

/// Serves delivery reports until none is outstanding. (`flush` of this client polls in
/// steps of 100 ms, which would time librdkafka's polling instead of Ferry.)
fn delivered(p: &Producer) -> anyhow::Result<()> {
    let started = Instant::now();
    while p.in_flight_count() > 0 {
        anyhow::ensure!(
            started.elapsed() < CALL_TIMEOUT,
            "records not delivered in time"
        );
        p.poll(Duration::from_millis(1));
    }
    Ok(())
}

/// Produces for `seconds`: idempotent when `txn_records` is 0, else transactions of
/// `txn_records` records each, timing every commit.
fn produce(
    bootstrap: &str,
    topic: &str,
    txn_records: usize,
    seconds: f64,
) -> anyhow::Result<ProduceRow> {
    let id = format!("bench-{topic}");
    let p = producer(bootstrap, (txn_records > 0).then_some(id.as_str()))?;
    if txn_records > 0 {
        p.init_transactions(CALL_TIMEOUT)?;
    }
    let value = vec![b'x'; VALUE_BYTES];
    let mut commits = Histogram::<u64>::new(3)?;
    let (mut records, mut transactions) = (0u64, 0u64);
    let started = Instant::now();
    while started.elapsed().as_secs_f64() < seconds {
        if txn_records == 0 {
            for _ in 0..1000 {
                send(&p, topic, &records.to_be_bytes(), &value)?;
                records += 1;
            }
            p.poll(Duration::ZERO);
            continue;
        }
        p.begin_transaction()?;
        for _ in 0..txn_records {
            send(&p, topic, &records.to_be_bytes(), &value)?;
            records += 1;
        }
        let commit = Instant::now();
        delivered(&p)?;
        p.commit_transaction(CALL_TIMEOUT)?;
        commits.record(commit.elapsed().as_micros() as u64)?;
        transactions += 1;
    }
    delivered(&p)?;
    let secs = started.elapsed().as_secs_f64();
    let failed = p.context().failed.load(Ordering::Relaxed);
    anyhow::ensure!(failed == 0, "{failed} records were not delivered");
    let acked = p.context().delivered.load(Ordering::Relaxed);
    anyhow::ensure!(
        acked == records,
        "{acked} of {records} records acknowledged"
    );
    Ok(ProduceRow {
        txn_records,
        records,
        secs,
        transactions,
        commit_p50_ms: commits.value_at_quantile(0.5) as f64 / 1000.0,
        commit_p99_ms: commits.value_at_quantile(0.99) as f64 / 1000.0,
    })
}

/// Writes `records` in transactions of 100, aborting one transaction in ten; returns
/// the records committed and aborted.
fn preload(bootstrap: &str, topic: &str, records: u64) -> anyhow::Result<(u64, u64)> {
    let p = producer(bootstrap, Some(&format!("preload-{topic}")))?;
    p.init_transactions(CALL_TIMEOUT)?;
    let value = vec![b'x'; VALUE_BYTES];
    let (mut committed, mut aborted, mut n) = (0u64, 0u64, 0u64);
    for t in 0u64.. {
        if committed + aborted >= records {
            break;
        }
        let size = 100.min(records - committed - aborted);
        p.begin_transaction()?;
        for _ in 0..size {
            send(&p, topic, &n.to_be_bytes(), &value)?;
            n += 1;
        }
        if t % 10 == 9 {
            // An abort wants the delivery reports of its records served first.
            delivered(&p)?;
            p.abort_transaction(CALL_TIMEOUT)?;
            aborted += size;
        } else {
            delivered(&p)?;
            p.commit_transaction(CALL_TIMEOUT)?;
            committed += size;
        }
    }
    Ok((committed, aborted))
}

/// Reads every partition of `topic` from its start until each reports its end.
fn drain(bootstrap: &str, topic: &str, isolation: &'static str) -> anyhow::Result<ConsumeRow> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("bench-{isolation}"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", isolation)
        .create()?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
    }
    c.assign(&assignment)?;
    let mut ended = std::collections::HashSet::new();
    let mut records = 0u64;
    let started = Instant::now();
    while ended.len() < PARTITIONS as usize {
        anyhow::ensure!(
            started.elapsed() < CALL_TIMEOUT,
            "{isolation} consumer read {records} records and stalled"
        );
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(_)) => records += 1,
            Some(Err(KafkaError::PartitionEOF(p))) => {
                ended.insert(p);
            }
            Some(Err(e)) => return Err(e.into()),
            None => {}
        }
    }
    Ok(ConsumeRow {
        isolation,
        records,
        secs: started.elapsed().as_secs_f64(),
    })
}

/// The whole workload on one fresh server; blocking (librdkafka's transactional calls
/// block), so run it outside the async runtime's threads.
pub fn run(
    ctx: &Ctx,
    rt: &tokio::runtime::Runtime,
    seconds: f64,
    txn_sizes: &[usize],
    consume_records: u64,
) -> anyhow::Result<Report> {
    let server = rt.block_on(Server::start(ctx, &ctx.dir.join("transactions")))?;
    run_on(rt, &server, seconds, txn_sizes, consume_records)
}

/// The whole workload on `server` (local or shared mode), which has none of its
/// topics yet; blocking.
pub fn run_on(
    rt: &tokio::runtime::Runtime,
    server: &Server,
    seconds: f64,
    txn_sizes: &[usize],
    consume_records: u64,
) -> anyhow::Result<Report> {
    let bootstrap = server.kafka_addr.clone();
    let mut produce_rows = Vec::new();
    // Idempotent first, then each transaction size, each on a topic of its own.
    for (i, &size) in std::iter::once(&0).chain(txn_sizes).enumerate() {
        let topic = format!("produce-{i}");
        create_topic(rt, server, &topic)?;
        produce_rows.push(produce(&bootstrap, &topic, size, seconds)?);
    }
    create_topic(rt, server, "drain")?;
    let (committed, aborted) = preload(&bootstrap, "drain", consume_records)?;
    let mut consume = Vec::new();
    for isolation in ["read_uncommitted", "read_committed"] {
        consume.push(drain(&bootstrap, "drain", isolation)?);
    }
    anyhow::ensure!(
        consume[0].records == committed + aborted,
        "read_uncommitted read {} records of {}",
        consume[0].records,
        committed + aborted
    );
    anyhow::ensure!(
        consume[1].records == committed,
        "read_committed read {} records; {committed} were committed",
        consume[1].records
    );
    Ok(Report {
        produce: produce_rows,
        consume,
        committed,
        aborted,
    })
}

pub fn report(r: &Report) -> String {
    let mut s = String::from(
        "| producer (acks=all, 100-byte records, 4 partitions) | records/s | against idempotent | transactions/s | commit p50 ms | commit p99 ms |\n|---|---:|---:|---:|---:|---:|\n",
    );
    let base = r
        .produce
        .first()
        .map(|p| p.records as f64 / p.secs)
        .unwrap_or(1.0);
    for p in &r.produce {
        let rate = p.records as f64 / p.secs;
        let (label, txns, p50, p99) = if p.txn_records == 0 {
            ("idempotent".to_string(), "".into(), "".into(), "".into())
        } else {
            (
                format!("transactions of {} records", p.txn_records),
                format!("{:.0}", p.transactions as f64 / p.secs),
                format!("{:.1}", p.commit_p50_ms),
                format!("{:.1}", p.commit_p99_ms),
            )
        };
        s.push_str(&format!(
            "| {label} | {rate:.0} | {:.2}× | {txns} | {p50} | {p99} |\n",
            rate / base
        ));
    }
    s.push_str(&format!(
        "\n| consumer, from the start to the end ({} records committed, {} aborted, transactions of 100) | records read | records/s | seconds |\n|---|---:|---:|---:|\n",
        r.committed, r.aborted
    ));
    for c in &r.consume {
        s.push_str(&format!(
            "| {} | {} | {:.0} | {:.2} |\n",
            c.isolation,
            c.records,
            c.records as f64 / c.secs,
            c.secs
        ));
    }
    s
}
