//! The cleaner: compacts the partitions of compacted topics (`cleanup_policy` `compact`
//! or `compact,delete`) in the background, one partition at a time, each when its
//! dirty share reaches the topic's `min_cleanable_dirty_ratio` (see
//! `ferry_log::log::compaction`). Memory is one offset map of
//! [`crate::BrokerConfig::cleaner_offset_map_bytes`], reused by each pass in turn.
//!
//! # Failures
//!
//! A pass that fails leaves the partition as it was (the log's swap is crash-safe) and
//! is logged; the partition is tried again at the next check.

use crate::broker::{now_ms, Broker};
use crate::config::TopicConfig;
use crate::partition::Partition;
use ferry_log::CompactConfig;
use prometheus_client::metrics::counter::Counter;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The default memory of the cleaner's offset map.
pub const CLEANER_OFFSET_MAP_BYTES_DEFAULT: usize = 16 << 20;

/// What the cleaner did since the broker started, for `/metrics` (cloning shares).
#[derive(Debug, Default, Clone)]
pub struct CleanerCounters {
    /// Compaction passes that completed.
    pub passes: Counter,
    /// Passes that failed.
    pub failures: Counter,
    /// Bytes of the segments rewritten, before and after.
    pub bytes_read: Counter,
    pub bytes_written: Counter,
    /// Records dropped (older versions and expired tombstones).
    pub records_removed: Counter,
    /// Seconds spent in passes that compacted something or failed.
    pub seconds: Counter<f64, AtomicU64>,
}

impl Broker {
    /// Compacts the partitions of compacted topics every `retention_check_ms` until
    /// the broker is dropped.
    pub(crate) fn spawn_cleaner(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        let every = Duration::from_millis(self.config().retention_check_ms.max(10));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let Some(broker) = weak.upgrade() else { return };
                let parts: Vec<_> = broker
                    .all_partitions()
                    .into_iter()
                    .filter(|(c, _)| c.cleanup_policy.compacts())
                    .collect();
                if parts.is_empty() {
                    continue;
                }
                let _ = tokio::task::spawn_blocking(move || broker.clean(parts)).await;
            }
        })
    }

    /// One compaction check of each partition given.
    pub fn clean(&self, parts: Vec<(TopicConfig, Arc<Partition>)>) {
        let c = &self.cleaner;
        for (config, p) in parts {
            let started = Instant::now();
            let pass = CompactConfig {
                now_ms: now_ms(),
                min_compaction_lag_ms: config.min_compaction_lag_ms,
                delete_retention_ms: config.delete_retention_ms,
                min_dirty_ratio: config.min_cleanable_dirty_ratio.0,
                max_compaction_lag_ms: config.max_compaction_lag_ms,
                offset_map_bytes: self.config().cleaner_offset_map_bytes,
            };
            match p.log.compact(&pass) {
                Ok(None) => continue,
                Ok(Some(done)) => {
                    c.passes.inc();
                    c.bytes_read.inc_by(done.bytes_before);
                    c.bytes_written.inc_by(done.bytes_after);
                    c.records_removed.inc_by(done.records_removed);
                }
                Err(e) => {
                    c.failures.inc();
                    tracing::error!(topic = %config.name, partition = p.id, error = %e, "Compaction failed; the partition stays as it was.");
                }
            }
            c.seconds.inc_by(started.elapsed().as_secs_f64());
        }
    }

    /// The cleaner's counters.
    pub fn cleaner_counters(&self) -> &CleanerCounters {
        &self.cleaner
    }
}
