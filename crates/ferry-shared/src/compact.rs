//! Merging small objects. A node writes one object for whatever all its partitions
//! appended while it gathered, so a partition read from its start touches many small
//! objects. Once batches are [`Settings::after`] old, compaction copies a partition's
//! batches, in offset order, into one object of that partition alone and points their
//! rows at it (`ferry_relocate_batches`, migration 0006). Readers stay correct while it
//! runs:
//!
//! - a batch's bytes never change, only where they live; each copied batch is checked
//!   (length, header, CRC, record count) before it is written again;
//! - the rows move in one transaction, and only rows still naming the object and
//!   length they were copied from: a batch trimmed or moved meanwhile is left alone;
//! - the old objects are removed by the orphan sweep once no row names them, and a
//!   read whose object was removed between its look-up and its fetch looks up again;
//! - a compacted object is registered before its PUT, like any object, so the sweep
//!   never removes one rows are about to name; one whose rows moved nowhere (another
//!   node compacted the same batches first) is an orphan the sweep removes.

use crate::error::{Result, SharedError};
use crate::meta::{BatchLocation, Meta};
use crate::objects::Objects;
use crate::reader::fetch_missing;
use crate::Metrics;
use bytes::{Bytes, BytesMut};
use std::time::{Duration, SystemTime};

/// When and how big.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Batches in objects at least this old are merged; zero: never.
    pub after: Duration,
    /// Largest object written.
    pub object_bytes: usize,
}

/// What one pass moved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Compacted {
    /// Objects written.
    pub objects: u64,
    /// Batches pointed at them.
    pub batches: u64,
    pub bytes: u64,
}

/// Partitions looked at per pass.
const PARTITIONS_PER_PASS: i64 = 16;
/// Batch rows looked at per partition and pass.
const ROWS_PER_PARTITION: i64 = 20_000;

/// The run of `rows` (by offset) one object takes: whole batches up to `max_bytes`.
fn run(rows: &[BatchLocation], max_bytes: usize) -> usize {
    let mut total = 0usize;
    rows.iter()
        .take_while(|l| {
            total += l.length as usize;
            total <= max_bytes
        })
        .count()
}

pub(crate) async fn compact_once(
    meta: &Meta,
    objects: &Objects,
    settings: &Settings,
    deadline: Duration,
    metrics: &Metrics,
) -> Result<Compacted> {
    let mut done = Compacted::default();
    if settings.after.is_zero() {
        return Ok(done);
    }
    let before = objects.key_before(
        SystemTime::now()
            .checked_sub(settings.after)
            .unwrap_or(SystemTime::UNIX_EPOCH),
    );
    // A batch of at least a quarter of an object is big enough where it is.
    let small = i32::try_from(settings.object_bytes / 4).unwrap_or(i32::MAX);
    let candidates = meta
        .compaction_candidates(&before, small, PARTITIONS_PER_PASS)
        .await?;
    for (topic_id, partition) in candidates {
        let rows = meta
            .uncompacted(&topic_id, partition, &before, small, ROWS_PER_PARTITION)
            .await?;
        let take = run(&rows, settings.object_bytes);
        if take < 2 {
            continue;
        }
        let moving = &rows[..take];
        let mut bytes: Vec<Option<Bytes>> = vec![None; moving.len()];
        fetch_missing(objects, None, moving, &mut bytes).await?;
        let mut body = BytesMut::with_capacity(moving.iter().map(|l| l.length as usize).sum());
        let mut positions = Vec::with_capacity(moving.len());
        for (loc, b) in moving.iter().zip(bytes) {
            let b = b.ok_or_else(|| SharedError::Corrupt {
                key: loc.object_key.clone(),
                position: loc.position,
                reason: "a batch was not fetched".into(),
            })?;
            positions.push(body.len() as u64);
            body.extend_from_slice(&b);
        }
        let size = body.len() as u64;
        let key = objects.new_key();
        meta.register_object(&key).await?;
        objects.put(&key, body.freeze()).await?;
        let moved = meta
            .relocate(&key, deadline, &topic_id, partition, moving, &positions)
            .await?;
        tracing::debug!(object = %key, topic_id, partition, moved, "Merged batches into an object of their partition.");
        done.objects += 1;
        done.batches += moved;
        done.bytes += size;
        metrics.compacted_objects.inc();
        metrics.compacted_batches.inc_by(moved);
        metrics.compacted_bytes.inc_by(size);
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(length: u32) -> BatchLocation {
        BatchLocation {
            base_offset: 0,
            last_offset: 0,
            object_key: "k".into(),
            position: 0,
            length,
        }
    }

    #[test]
    fn a_run_takes_whole_batches_up_to_the_size() {
        let rows = [loc(40), loc(40), loc(40)];
        assert_eq!(run(&rows, 100), 2);
        assert_eq!(run(&rows, 120), 3);
        assert_eq!(run(&rows, 39), 0);
        assert_eq!(run(&[], 100), 0);
    }
}
