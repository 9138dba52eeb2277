//! Batches of the records a pass keeps: each run of consecutive offsets of one
//! batch becomes a batch of its own (see the compaction module's "One pass").

use crate::batch::{self, BatchHeader, DecodeLimits, Record, BATCH_HEADER_BYTES};
use crate::compression::{self, Compression};
use crate::error::{LogError, Result};
use bytes::Bytes;

fn put_varlong(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn put_nullable(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => put_varlong(out, -1),
        Some(b) => {
            put_varlong(out, b.len() as i64);
            out.extend_from_slice(b);
        }
    }
}

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
    let mut rec = Vec::new();
    for (i, r) in records.iter().enumerate() {
        rec.clear();
        rec.push(r.attributes as u8);
        let ts_delta = if log_append { 0 } else { r.timestamp - base_ts };
        put_varlong(&mut rec, ts_delta);
        put_varlong(&mut rec, i as i64);
        put_nullable(&mut rec, r.key.as_deref());
        put_nullable(&mut rec, r.value.as_deref());
        put_varlong(&mut rec, r.headers.len() as i64);
        for hd in &r.headers {
            put_nullable(&mut rec, Some(&hd.key));
            put_nullable(&mut rec, hd.value.as_deref());
        }
        put_varlong(&mut body, rec.len() as i64);
        body.extend_from_slice(&rec);
    }
    let codec = h.compression().map_err(LogError::InvalidBatch)?;
    let body = match codec {
        Compression::None => body,
        other => compression::compress(other, &body).map_err(LogError::InvalidBatch)?,
    };
    let count = i32::try_from(records.len())
        .map_err(|_| LogError::InvalidBatch(batch::BatchError::BadLength(records.len() as i64)))?;
    let batch_length =
        i32::try_from(BATCH_HEADER_BYTES - batch::BATCH_PREFIX_BYTES + body.len())
            .map_err(|_| LogError::InvalidBatch(batch::BatchError::BadLength(body.len() as i64)))?;
    let sequence = if h.base_sequence < 0 {
        h.base_sequence
    } else {
        // Sequences wrap past i32::MAX, as Kafka's do.
        ((i64::from(h.base_sequence) + (first - h.base_offset)) % (i64::from(i32::MAX) + 1)) as i32
    };
    let mut out = Vec::with_capacity(BATCH_HEADER_BYTES + body.len());
    out.extend_from_slice(&first.to_be_bytes());
    out.extend_from_slice(&batch_length.to_be_bytes());
    out.extend_from_slice(&h.partition_leader_epoch.to_be_bytes());
    out.push(batch::MAGIC_V2 as u8);
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&h.attributes.to_be_bytes());
    out.extend_from_slice(&(count - 1).to_be_bytes());
    out.extend_from_slice(&base_ts.to_be_bytes());
    out.extend_from_slice(&max_ts.to_be_bytes());
    out.extend_from_slice(&h.producer_id.to_be_bytes());
    out.extend_from_slice(&h.producer_epoch.to_be_bytes());
    out.extend_from_slice(&sequence.to_be_bytes());
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(&body);
    // The CRC covers everything from the attributes on (byte 21).
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
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
