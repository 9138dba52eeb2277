//! The disk's own limits, measured with the same calls the log makes.

use crate::Ctx;
use std::fs::OpenOptions;
use std::io::Write;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Default)]
pub struct DiskResult {
    pub seq_mb_s: f64,
    pub fsyncs_per_s: f64,
}

pub fn run(ctx: &Ctx, seconds: u64) -> anyhow::Result<DiskResult> {
    run_sized(ctx, 1024, seconds as f64)
}

/// Writes `mib` MiB sequentially in 1 MiB writes with one fdatasync at the end, then
/// appends 4 KiB + fdatasync for `fsync_secs`.
pub fn run_sized(ctx: &Ctx, mib: usize, fsync_secs: f64) -> anyhow::Result<DiskResult> {
    let path = ctx.dir.join("disk-seq");
    let chunk = vec![0x5au8; 1 << 20];
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)?;
    let started = Instant::now();
    for _ in 0..mib {
        f.write_all(&chunk)?;
    }
    f.sync_data()?;
    let seq_mb_s = (mib as f64 * 1048576.0) / started.elapsed().as_secs_f64() / 1e6;
    drop(f);
    std::fs::remove_file(&path)?;
    let path = ctx.dir.join("disk-fsync");
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)?;
    let block = vec![0x5au8; 4096];
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < Duration::from_secs_f64(fsync_secs) {
        f.write_all(&block)?;
        f.sync_data()?;
        n += 1;
    }
    let fsyncs_per_s = n as f64 / started.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(&path)?;
    Ok(DiskResult {
        seq_mb_s,
        fsyncs_per_s,
    })
}
