//! Appends straight into a partition log under durability "always": what the storage
//! engine gives before any protocol is involved.

use crate::Ctx;
use batches::record_batch;
use ferry_log::{Durability, LogConfig, PartitionLog};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct AppendResult {
    pub producers: usize,
    pub records_per_append: usize,
    pub records: u64,
    pub appends: u64,
    pub syncs: u64,
    pub bytes: u64,
    pub secs: f64,
}

mod batches {
    use ferry_log::batch::{build_batch, NewRecord};
    use ferry_log::Compression;

    /// A batch of `n` records with 1 KiB values.
    pub fn record_batch(n: usize) -> Vec<u8> {
        let records: Vec<NewRecord> = (0..n)
            .map(|i| NewRecord {
                timestamp: 1_700_000_000_000 + i as i64,
                value: Some(vec![0x42u8; 1024].into()),
                ..Default::default()
            })
            .collect();
        build_batch(&records, Compression::None).expect("build batch")
    }
}

pub fn run(
    ctx: &Ctx,
    seconds: u64,
    producers: &[usize],
    records_per_append: usize,
) -> anyhow::Result<Vec<AppendResult>> {
    run_for(
        ctx,
        Duration::from_secs(seconds),
        producers,
        records_per_append,
    )
}

pub fn run_for(
    ctx: &Ctx,
    duration: Duration,
    producers: &[usize],
    records_per_append: usize,
) -> anyhow::Result<Vec<AppendResult>> {
    let mut out = Vec::new();
    for &p in producers {
        let dir = ctx.dir.join(format!("append-{p}-{records_per_append}"));
        let config = LogConfig {
            durability: Durability::Always,
            ..LogConfig::default()
        };
        let (log, _) = PartitionLog::open(&dir, config)?;
        let log = Arc::new(log);
        let stop = Arc::new(AtomicBool::new(false));
        let appends = Arc::new(AtomicU64::new(0));
        let template = record_batch(records_per_append);
        let started = Instant::now();
        let threads: Vec<_> = (0..p)
            .map(|_| {
                let (log, stop, appends, template) = (
                    Arc::clone(&log),
                    Arc::clone(&stop),
                    Arc::clone(&appends),
                    template.clone(),
                );
                std::thread::spawn(move || -> anyhow::Result<()> {
                    while !stop.load(Ordering::Relaxed) {
                        let mut b = template.clone();
                        let info = log.append(&mut b, 0)?;
                        log.wait_durable(info.end_offset)?;
                        appends.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(())
                })
            })
            .collect();
        std::thread::sleep(duration);
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join()
                .map_err(|_| anyhow::anyhow!("producer thread panicked"))??;
        }
        let secs = started.elapsed().as_secs_f64();
        let n = appends.load(Ordering::Relaxed);
        let syncs = log.sync_count();
        let stats = log.stats();
        out.push(AppendResult {
            producers: p,
            records_per_append,
            records: n * records_per_append as u64,
            appends: n,
            syncs,
            bytes: stats.size_bytes,
            secs,
        });
        drop(log);
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(out)
}
