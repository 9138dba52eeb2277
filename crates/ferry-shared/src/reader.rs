//! The read path: Postgres says which batches hold the offsets wanted and where they
//! live; the bytes come from the cache or from ranged GETs (adjacent batches of one
//! object in one range, objects fetched concurrently). Every batch from the store is
//! checked (length, header, CRC, record count against Postgres's offsets) before its
//! base offset is set and it is returned.

use crate::cache::Cache;
use crate::error::{Result, SharedError};
use crate::meta::{BatchLocation, Meta};
use crate::objects::Objects;
use bytes::{Bytes, BytesMut};
use ferry_log::batch::{set_base_offset, verify_crc, BatchHeader};
use std::collections::HashMap;
use std::ops::Range;

/// Batches read from one partition.
#[derive(Debug, Clone)]
pub struct ReadBatches {
    /// Whole RecordBatch v2 batches with their offsets, back to back.
    pub batches: Bytes,
    /// The offset after the last record returned (the requested offset when none).
    pub next_offset: u64,
    pub earliest: u64,
    pub latest: u64,
    /// The last stable offset when the read began (see [`crate::Bounds`]).
    pub stable: u64,
}

/// Most batch rows looked up per read.
const ROWS_PER_READ: i64 = 512;
/// Objects one read fetches at the same time.
const FETCHES_AT_ONCE: usize = 16;
/// Ranges of one object closer than this are fetched as one.
const COALESCE_GAP: u64 = 64 * 1024;

pub(crate) async fn read(
    meta: &Meta,
    objects: &Objects,
    cache: &Cache,
    topic_id: &str,
    partition: u32,
    offset: u64,
    max_bytes: usize,
) -> Result<ReadBatches> {
    let crate::Bounds {
        earliest,
        latest,
        stable,
    } = meta
        .bounds(topic_id, partition)
        .await?
        .ok_or_else(|| SharedError::UnknownPartition {
            topic_id: topic_id.to_string(),
            partition,
        })?;
    if offset < earliest || offset > latest {
        return Err(SharedError::OffsetOutOfRange {
            offset,
            earliest,
            latest,
        });
    }
    let empty = ReadBatches {
        batches: Bytes::new(),
        next_offset: offset,
        earliest,
        latest,
        stable,
    };
    if offset == latest {
        return Ok(empty);
    }
    let mut locs = meta
        .locate(topic_id, partition, offset, ROWS_PER_READ)
        .await?;
    // Whole batches within max_bytes; the first whole whatever its size.
    let mut total = 0usize;
    let keep = locs
        .iter()
        .take_while(|l| {
            let first = total == 0;
            total += l.length as usize;
            first || total <= max_bytes
        })
        .count();
    locs.truncate(keep);
    let Some(last) = locs.last() else {
        return Ok(empty);
    };
    let next_offset = last.last_offset + 1;
    let mut bytes: Vec<Option<Bytes>> = locs
        .iter()
        .map(|l| cache.get(&l.object_key, l.position))
        .collect();
    fetch_missing(objects, Some(cache), &locs, &mut bytes).await?;
    let mut out = BytesMut::with_capacity(total.min(max_bytes.saturating_add(1 << 20)));
    for (loc, b) in locs.iter().zip(bytes) {
        let b = b.ok_or_else(|| SharedError::Corrupt {
            key: loc.object_key.clone(),
            position: loc.position,
            reason: "a batch was not fetched".into(),
        })?;
        let at = out.len();
        out.extend_from_slice(&b);
        set_base_offset(&mut out[at..], loc.base_offset as i64);
    }
    Ok(ReadBatches {
        batches: out.freeze(),
        next_offset,
        earliest,
        latest: latest.max(next_offset),
        stable,
    })
}

/// Checks a batch as fetched against what Postgres says of it.
fn check(loc: &BatchLocation, batch: &[u8]) -> Result<()> {
    let corrupt = |reason: String| SharedError::Corrupt {
        key: loc.object_key.clone(),
        position: loc.position,
        reason,
    };
    let header = BatchHeader::parse(batch).map_err(|e| corrupt(e.to_string()))?;
    if header.total_bytes() != batch.len() {
        return Err(corrupt(format!(
            "the batch says it has {} bytes, Postgres {}",
            header.total_bytes(),
            batch.len()
        )));
    }
    verify_crc(batch).map_err(|e| corrupt(e.to_string()))?;
    if header.last_offset_delta as u64 != loc.last_offset - loc.base_offset {
        return Err(corrupt(format!(
            "the batch holds offsets for {} records, Postgres {}",
            header.last_offset_delta as i64 + 1,
            loc.last_offset - loc.base_offset + 1
        )));
    }
    Ok(())
}

/// Fetches the batches of `locs` whose `bytes` are `None`, checking each, and keeps
/// them in `cache` when there is one.
pub(crate) async fn fetch_missing(
    objects: &Objects,
    cache: Option<&Cache>,
    locs: &[BatchLocation],
    bytes: &mut [Option<Bytes>],
) -> Result<()> {
    // Missing batches by object, then merged into ranges.
    let mut by_object: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, b) in bytes.iter().enumerate() {
        if b.is_none() {
            by_object.entry(&locs[i].object_key).or_default().push(i);
        }
    }
    let fetches = by_object.into_iter().map(|(key, mut idx)| async move {
        idx.sort_by_key(|i| locs[*i].position);
        let mut ranges: Vec<Range<u64>> = Vec::new();
        for i in &idx {
            let l = &locs[*i];
            let r = l.position..l.position + u64::from(l.length);
            match ranges.last_mut() {
                Some(last) if r.start >= last.end && r.start - last.end <= COALESCE_GAP => {
                    last.end = r.end
                }
                _ => ranges.push(r),
            }
        }
        let got = objects.get_ranges(key, &ranges).await?;
        let mut out = Vec::with_capacity(idx.len());
        for i in idx {
            let l = &locs[i];
            let (r, b) = ranges
                .iter()
                .zip(&got)
                .find(|(r, _)| r.start <= l.position && l.position < r.end)
                .ok_or_else(|| SharedError::Corrupt {
                    key: key.to_string(),
                    position: l.position,
                    reason: "no fetched range holds the batch".into(),
                })?;
            let start = (l.position - r.start) as usize;
            let end = start + l.length as usize;
            if end > b.len() {
                return Err(SharedError::Corrupt {
                    key: key.to_string(),
                    position: l.position,
                    reason: "batches overlap in the object".into(),
                });
            }
            // A copy: a slice would keep the whole fetched range alive (the store
            // client merges nearby ranges into one GET), and the cache counts only
            // the batch's own bytes.
            let batch = Bytes::copy_from_slice(&b[start..end]);
            check(l, &batch)?;
            out.push((i, batch));
        }
        Ok::<_, SharedError>(out)
    });
    // At most FETCHES_AT_ONCE objects fetched at once per read.
    let mut fetches = fetches.collect::<Vec<_>>().into_iter();
    let mut results = Vec::new();
    loop {
        let group: Vec<_> = fetches.by_ref().take(FETCHES_AT_ONCE).collect();
        if group.is_empty() {
            break;
        }
        results.extend(futures_util::future::join_all(group).await);
    }
    for result in results {
        for (i, batch) in result? {
            if let Some(cache) = cache {
                cache.insert(&locs[i].object_key, locs[i].position, batch.clone());
            }
            bytes[i] = Some(batch);
        }
    }
    Ok(())
}
