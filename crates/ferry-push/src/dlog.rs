//! The delivery log of a push subscription: one entry per attempt (time, status,
//! latency, error, an excerpt of the response), kept in a log of Ferry's own format in
//! `<data>/subscriptions/<name>/deliveries/` and trimmed by age and size.

use bytes::Bytes;
use ferry_log::batch::{build_batch, Batches, DecodeLimits, NewRecord};
use ferry_log::{Compression, Durability, LogConfig, PartitionLog};
use serde_json::Value;
use std::path::Path;

/// Entries looked at, at most, when a listing is filtered by record.
pub const SCAN_ENTRIES_MAX: u64 = 100_000;
pub const LOG_BYTES_MAX: u64 = 64 * 1024 * 1024;

pub struct DeliveryLog {
    log: PartitionLog,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Attempt {
    /// When the request started, ms since 1970.
    pub time: u64,
    pub partition: u32,
    pub offset: u64,
    pub attempt: u32,
    /// `delivered`, `retry`, `dead_letter` (refused, too old or out of attempts).
    pub outcome: Logged,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub latency_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_in_ms: Option<u64>,
}

/// How the delivery log names what became of a record after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Logged {
    /// Acked: `delivered`.
    Delivered,
    /// To be tried again: `retry`.
    Retry,
    /// Dead-lettered (refused, too old or out of attempts): `dead_letter`.
    DeadLetter,
}

impl DeliveryLog {
    pub fn open(dir: &Path) -> ferry_log::Result<Self> {
        let config = LogConfig {
            segment_bytes: 4 * 1024 * 1024,
            segment_ms: Some(3_600_000),
            durability: Durability::Never,
            ..LogConfig::default()
        };
        let (log, _) = PartitionLog::open(&dir.join("deliveries"), config)?;
        Ok(DeliveryLog { log })
    }

    /// Appends attempts as one batch.
    pub fn append_all(&self, attempts: &[Attempt]) {
        let records: Vec<NewRecord> = attempts
            .iter()
            .filter_map(|a| {
                Some(NewRecord {
                    timestamp: a.time as i64,
                    key: Some(Bytes::from(format!("{}-{}", a.partition, a.offset))),
                    value: Some(Bytes::from(serde_json::to_vec(a).ok()?)),
                    ..NewRecord::default()
                })
            })
            .collect();
        // Batches stay well under the log's batch limit.
        for chunk in records.chunks(500) {
            let res = build_batch(chunk, Compression::None)
                .map_err(|e| e.to_string())
                .and_then(|mut b| {
                    self.log
                        .append(&mut b, ferry_broker::now_ms())
                        .map_err(|e| e.to_string())
                });
            if let Err(e) = res {
                tracing::warn!(error = %e, "Could not write to the delivery log.");
            }
        }
    }

    pub fn trim(&self, retention_ms: u64) {
        if let Err(e) = self.log.apply_retention(
            ferry_broker::now_ms(),
            Some(retention_ms),
            Some(LOG_BYTES_MAX),
        ) {
            tracing::warn!(error = %e, "Could not trim the delivery log.");
        }
    }

    /// The newest attempts first, at most `limit`; only one record's with `record`.
    pub fn list(&self, record: Option<(u32, u64)>, limit: usize) -> Vec<Value> {
        let stats = self.log.stats();
        let latest = self.log.next_offset();
        let window = if record.is_some() {
            SCAN_ENTRIES_MAX
        } else {
            limit as u64
        };
        let mut at = latest.saturating_sub(window).max(stats.earliest);
        let want_key = record.map(|(p, o)| format!("{p}-{o}"));
        let mut out = Vec::new();
        let limits = DecodeLimits::default();
        while at < latest {
            let Ok(read) = self.log.read(at, 1024 * 1024) else {
                break;
            };
            if read.batches.is_empty() {
                break;
            }
            for one in Batches::new(read.batches) {
                let Ok((header, records)) =
                    one.and_then(|b| ferry_log::batch::decode_records(&b, &limits))
                else {
                    return newest_first(out, limit);
                };
                for r in records {
                    if (r.offset as u64) < at {
                        continue;
                    }
                    let matches = want_key
                        .as_ref()
                        .is_none_or(|k| r.key.as_deref() == Some(k.as_bytes()));
                    if matches {
                        if let Some(v) = r.value.and_then(|v| serde_json::from_slice(&v).ok()) {
                            out.push(v);
                        }
                    }
                }
                at = at.max(header.last_offset() as u64 + 1);
            }
        }
        newest_first(out, limit)
    }

    pub fn close(&self) {
        let _ = self.log.close();
    }
}

fn newest_first(mut v: Vec<Value>, limit: usize) -> Vec<Value> {
    v.reverse();
    v.truncate(limit);
    v
}
