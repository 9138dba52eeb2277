//! What a log measures for `/metrics`: histograms shared by every partition of a broker
//! (how long appends and syncs take, how many records one sync made durable), and each
//! log's own counters of what went in and out.
//!
//! Counters are plain atomics on the log, read at scrape time; the histograms are
//! shared handles (`prometheus-client`), so a log only observes into them.

use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use std::sync::atomic::{AtomicU64, Ordering};

/// Histogram bounds 1, 2.5 and 5 times each power of ten from `10^lo` up to `10^hi`
/// (each the double nearest its decimal, so that bounds print as written).
pub fn buckets(lo: i32, hi: i32) -> Vec<f64> {
    let mut out = Vec::new();
    for exp in lo..=hi {
        for m in ["1", "2.5", "5"] {
            if let Ok(v) = format!("{m}e{exp}").parse() {
                out.push(v);
            }
        }
    }
    out
}

/// The histogram of a request's seconds, HTTP or Kafka: 10 µs to 50 s (long polls and
/// Fetch waits last up to 30 s).
pub fn request_histogram() -> Histogram {
    Histogram::new(buckets(-5, 1))
}

/// Histograms shared by the logs of one broker. Cloning shares them.
#[derive(Debug, Clone)]
pub struct LogMetrics {
    /// Seconds of each `fdatasync` of a segment (group commit and roll).
    pub sync_seconds: Histogram,
    /// Seconds of each append (validation and the write to the file, and the sync of a
    /// segment rolled on the way; not the group commit's sync).
    pub append_seconds: Histogram,
    /// Records made durable by one group-commit sync.
    pub records_per_sync: Histogram,
}

impl Default for LogMetrics {
    fn default() -> Self {
        LogMetrics {
            // 10 µs .. 5 s.
            sync_seconds: Histogram::new(buckets(-5, 0)),
            // 1 µs .. 0.5 s.
            append_seconds: Histogram::new(buckets(-6, -1)),
            // 1 .. 65,536 records.
            records_per_sync: Histogram::new(exponential_buckets(1.0, 2.0, 17)),
        }
    }
}

/// A log's own counters since it was opened.
#[derive(Debug, Default)]
pub struct LogCounters {
    pub records_in: AtomicU64,
    pub bytes_in: AtomicU64,
    /// Bytes of batches handed to readers.
    pub bytes_out: AtomicU64,
    /// Records in the batches handed to readers.
    pub records_out: AtomicU64,
}

/// A copy of [`LogCounters`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogTraffic {
    pub records_in: u64,
    pub bytes_in: u64,
    pub records_out: u64,
    pub bytes_out: u64,
}

impl LogCounters {
    pub fn snapshot(&self) -> LogTraffic {
        LogTraffic {
            records_in: self.records_in.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            records_out: self.records_out.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
        }
    }

    /// Counts batches read for a consumer (the records of each whole batch).
    pub fn count_out(&self, records: u64, bytes: u64) {
        self.records_out.fetch_add(records, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes, Ordering::Relaxed);
    }
}

impl std::ops::AddAssign for LogTraffic {
    fn add_assign(&mut self, o: LogTraffic) {
        self.records_in += o.records_in;
        self.bytes_in += o.bytes_in;
        self.records_out += o.records_out;
        self.bytes_out += o.bytes_out;
    }
}

/// Records in a run of whole batches as the log returns them (read from its own disk,
/// but still walked with checked lengths: a short or odd run ends the count).
pub fn records_in_batches(mut batches: &[u8]) -> u64 {
    use crate::batch::{BATCH_HEADER_BYTES, BATCH_PREFIX_BYTES};
    let mut records = 0u64;
    while batches.len() >= BATCH_HEADER_BYTES {
        let length = i32::from_be_bytes([batches[8], batches[9], batches[10], batches[11]]);
        let last_delta = i32::from_be_bytes([batches[23], batches[24], batches[25], batches[26]]);
        let Ok(length) = usize::try_from(length) else {
            break;
        };
        let size = BATCH_PREFIX_BYTES.saturating_add(length);
        if size < BATCH_HEADER_BYTES || size > batches.len() || last_delta < 0 {
            break;
        }
        records += last_delta as u64 + 1;
        batches = &batches[size..];
    }
    records
}

/// Key and value bytes of a record, as counted in bytes out for decoded reads.
pub fn record_payload_bytes(r: &crate::Record) -> u64 {
    (r.key.as_ref().map_or(0, |k| k.len()) + r.value.as_ref().map_or(0, |v| v.len())) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{build_batch, NewRecord};
    use crate::Compression;

    #[test]
    fn buckets_are_one_two_and_a_half_and_five_per_decade_printed_as_written() {
        let b = buckets(-2, 0);
        assert_eq!(b, vec![0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]);
        assert_eq!(buckets(-6, -6)[1].to_string(), "0.0000025");
    }

    #[test]
    fn records_in_batches_counts_whole_batches_and_stops_at_a_short_one() {
        let rec = |v: &str| NewRecord {
            value: Some(bytes::Bytes::from(v.to_string())),
            ..NewRecord::default()
        };
        let a = build_batch(&[rec("a"), rec("b"), rec("c")], Compression::None).unwrap();
        let b = build_batch(&[rec("d")], Compression::None).unwrap();
        let mut run = a.to_vec();
        run.extend_from_slice(&b);
        assert_eq!(records_in_batches(&run), 4);
        assert_eq!(records_in_batches(&run[..run.len() - 1]), 3);
        assert_eq!(records_in_batches(&run[..10]), 0);
        assert_eq!(records_in_batches(&[0xff; 100]), 0);
    }
}
