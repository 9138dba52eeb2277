//! Compaction of a partition log in process: a log of `records` records over `keys`
//! keys (100-byte values, batches of 100, every 10th version a tombstone) is written
//! under durability "never", then one compaction pass rewrites its sealed segments.
//! Reported: MB/s of segments read and rewritten, and the offset map's memory bound.

use crate::Ctx;
use ferry_log::batch::{build_batch, NewRecord};
use ferry_log::{CompactConfig, Compression, Durability, LogConfig, PartitionLog};
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct CompactionResult {
    pub records: u64,
    pub keys: u64,
    pub offset_map_bytes: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub segments: usize,
    pub records_removed: u64,
    pub secs: f64,
}

impl CompactionResult {
    /// Megabytes (10^6) of segments read per second of the pass.
    pub fn mb_s(&self) -> f64 {
        self.bytes_before as f64 / 1e6 / self.secs.max(1e-9)
    }
}

pub fn run(
    ctx: &Ctx,
    records: u64,
    keys: u64,
    offset_map_bytes: usize,
) -> anyhow::Result<CompactionResult> {
    anyhow::ensure!(keys > 0, "--keys must be at least 1");
    let dir = ctx.dir.join(format!("compaction-{records}-{keys}"));
    let config = LogConfig {
        durability: Durability::Never,
        segment_bytes: 16 << 20,
        ..LogConfig::default()
    };
    let (log, _) = PartitionLog::open(&dir, config)?;
    let per = 100u64;
    let value = vec![0x42u8; 100];
    let mut n = 0u64;
    while n < records {
        let batch: Vec<NewRecord> = (n..(n + per).min(records))
            .map(|i| NewRecord {
                timestamp: 1_700_000_000_000,
                key: Some(format!("key-{:012}", (i * 7919) % keys).into_bytes().into()),
                value: (i % 10 != 9).then(|| value.clone().into()),
                ..Default::default()
            })
            .collect();
        let mut b = build_batch(&batch, Compression::None)?;
        log.append(&mut b, 0)?;
        n += per;
    }
    log.sync()?;
    let pass = CompactConfig {
        now_ms: 1_700_000_001_000,
        min_compaction_lag_ms: 0,
        delete_retention_ms: 86_400_000,
        min_dirty_ratio: 0.0,
        max_compaction_lag_ms: u64::MAX,
        offset_map_bytes,
    };
    let started = Instant::now();
    let done = log
        .compact(&pass)?
        .ok_or_else(|| anyhow::anyhow!("no compaction pass was due: write more records"))?;
    let secs = started.elapsed().as_secs_f64();
    drop(log);
    std::fs::remove_dir_all(&dir)?;
    Ok(CompactionResult {
        records,
        keys,
        offset_map_bytes,
        bytes_before: done.bytes_before,
        bytes_after: done.bytes_after,
        segments: done.segments,
        records_removed: done.records_removed,
        secs,
    })
}

pub fn report(r: &CompactionResult) -> String {
    format!(
        "| records | keys | offset map | segments | before | after | removed | seconds | MB/s |\n\
         |---|---|---|---|---|---|---|---|---|\n\
         | {} | {} | {} MiB | {} | {:.1} MB | {:.1} MB | {} | {:.2} | {:.0} |",
        r.records,
        r.keys,
        r.offset_map_bytes >> 20,
        r.segments,
        r.bytes_before as f64 / 1e6,
        r.bytes_after as f64 / 1e6,
        r.records_removed,
        r.secs,
        r.mb_s()
    )
}
