//! Batches of the records a pass keeps: each run of consecutive offsets of one
//! batch becomes a batch of its own (see the compaction module's "One pass").

use crate::batch::{self, BatchHeader, DecodeLimits, Record};
use crate::compression::{self, Compression};
use crate::error::{LogError, Result};
use bytes::Bytes;

/// A batch of `records` (consecutive offsets, taken from the batch `h`), with the
/// original batch's attributes, codec and producer fields.
pub(super) fn rebuild_batch(h: &BatchHeader, records: &[Record]) -> Result<Vec<u8>> {
    debug_assert!(!records.is_empty());
    debug_assert!(records.windows(2).all(|w| w[1].offset == w[0].offset + 1));
    let first = records[0].offset;
    let log_append = h.is_log_append_time();
    let (base_ts, max_ts) = if log_append {
        (h.base_timestamp, h.max_timestamp)
    } else {
        (
            records.iter().map(|r| r.timestamp).min().unwrap_or(0),
            records.iter().map(|r| r.timestamp).max().unwrap_or(0),
        )
    };
    let mut body = Vec::new();
    let mut scratch = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let timestamp_delta = if log_append { 0 } else { r.timestamp - base_ts };
        batch::put_record(
            &mut body,
            &mut scratch,
            &batch::RecordParts {
                attributes: r.attributes,
                timestamp_delta,
                offset_delta: i as i64,
                key: r.key.as_deref(),
                value: r.value.as_deref(),
                headers: &r.headers,
            },
        );
    }
    let codec = h.compression().map_err(LogError::InvalidBatch)?;
    let body = match codec {
        Compression::None => body,
        other => compression::compress(other, &body).map_err(LogError::InvalidBatch)?,
    };
    let count = i32::try_from(records.len())
        .map_err(|_| LogError::InvalidBatch(batch::BatchError::BadLength(records.len() as i64)))?;
    let sequence = if h.base_sequence < 0 {
        h.base_sequence
    } else {
        // Sequences wrap past i32::MAX, as Kafka's do.
        ((i64::from(h.base_sequence) + (first - h.base_offset)) % (i64::from(i32::MAX) + 1)) as i32
    };
    let out = batch::assemble(
        &batch::NewHeader {
            base_offset: first,
            partition_leader_epoch: h.partition_leader_epoch,
            attributes: h.attributes,
            last_offset_delta: count - 1,
            base_timestamp: base_ts,
            max_timestamp: max_ts,
            producer_id: h.producer_id,
            producer_epoch: h.producer_epoch,
            base_sequence: sequence,
            record_count: count,
        },
        &body,
    )
    .map_err(LogError::InvalidBatch)?;
    debug_assert_eq!(
        batch::check_batch(
            &Bytes::copy_from_slice(&out),
            usize::MAX,
            &DecodeLimits::default()
        )
        .map(|c| c.header.last_offset()),
        Ok(records[records.len() - 1].offset),
        "a rebuilt batch passes the check every stored batch passes"
    );
    Ok(out)
}
