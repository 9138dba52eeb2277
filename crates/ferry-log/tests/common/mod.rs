//! Helpers shared by the log's integration tests.

use bytes::Bytes;
use ferry_log::batch::build_batch;
use ferry_log::{Compression, LogConfig, NewRecord};

/// One batch of records with these values, all at timestamp `ts`.
pub fn batch_of(values: &[&str], ts: i64) -> Vec<u8> {
    let records: Vec<_> = values
        .iter()
        .map(|v| NewRecord {
            timestamp: ts,
            value: Some(Bytes::copy_from_slice(v.as_bytes())),
            ..Default::default()
        })
        .collect();
    build_batch(&records, Compression::None).unwrap()
}

/// Small segments and a dense index, so that tests cross segment boundaries.
pub fn small() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        index_interval_bytes: 128,
        ..Default::default()
    }
}
