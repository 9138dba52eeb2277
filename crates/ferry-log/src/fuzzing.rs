//! Bodies of the fuzz targets in `fuzz/`, kept here so that the corpus replay test on
//! stable Rust runs exactly what the fuzzer ran. Each must never panic, whatever bytes
//! it is given; each also checks what must hold for any input.

use crate::batch::{self, DecodeLimits};
use crate::log::{Durability, LogConfig, PartitionLog};
use bytes::Bytes;
use std::sync::atomic::{AtomicU64, Ordering};

/// Decodes bytes as a batch the way every reader does, then again with the length and
/// CRC fixed up so that the record parser and codecs see mutated input past the CRC.
/// Anything that decodes must survive a round trip through the builder.
pub fn batch_decode(data: &[u8]) {
    decode_one(data);
    if data.len() >= batch::BATCH_HEADER_BYTES {
        let mut fixed = data.to_vec();
        let len = (fixed.len() - batch::BATCH_PREFIX_BYTES) as i32;
        fixed[8..12].copy_from_slice(&len.to_be_bytes());
        let crc = crc32c::crc32c(&fixed[21..]);
        fixed[17..21].copy_from_slice(&crc.to_be_bytes());
        decode_one(&fixed);
    }
}

fn decode_one(data: &[u8]) {
    let _ = batch::read_prefix(data, 1 << 20);
    let _ = batch::validate_incoming(data, 1 << 20);
    let limits = DecodeLimits {
        decompressed_bytes_max: 1 << 20,
        headers_per_record_max: 64,
    };
    let bytes = Bytes::copy_from_slice(data);
    // A partial decode from any offset, with any limit, never panics.
    let (from, max) = match data {
        [a, b, ..] => (i64::from(*a) - 8, usize::from(*b % 16)),
        _ => (0, 1),
    };
    let partial = batch::decode_records_from(&bytes, &limits, from, max);
    // What the full check accepts, every reader decodes, at consecutive offsets.
    if let Ok(checked) = batch::check_batch(&bytes, 1 << 20, &limits) {
        let (_, records) = batch::decode_records(&bytes, &limits).expect("checked batch decodes");
        assert_eq!(records.len(), checked.header.record_count as usize);
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.offset, checked.header.base_offset + i as i64);
        }
    }
    if let Ok((header, records)) = batch::decode_records(&bytes, &limits) {
        assert!(records.len() <= header.record_count.max(0) as usize);
        // What a partial decode gives is what the full decode has from that offset.
        if let Ok((_, some)) = &partial {
            let want: Vec<_> = records
                .iter()
                .filter(|r| r.offset >= from)
                .take(max)
                .collect();
            assert_eq!(some.len(), want.len());
            for (a, b) in some.iter().zip(want) {
                assert_eq!((a.offset, &a.key, &a.value), (b.offset, &b.key, &b.value));
            }
        }
        let rebuilt: Vec<_> = records
            .iter()
            .map(|r| batch::NewRecord {
                timestamp: r.timestamp,
                attributes: r.attributes,
                key: r.key.clone(),
                value: r.value.clone(),
                headers: r.headers.clone(),
            })
            .collect();
        if !rebuilt.is_empty() {
            let again = batch::build_batch(&rebuilt, crate::Compression::None)
                .expect("decoded records re-encode");
            let (_, back) = batch::decode_records(&Bytes::from(again), &limits)
                .expect("re-encoded records decode");
            assert_eq!(back.len(), records.len());
            for (a, b) in back.iter().zip(&records) {
                assert_eq!(
                    (&a.key, &a.value, &a.headers),
                    (&b.key, &b.value, &b.headers)
                );
            }
        }
    }
}

static RUN: AtomicU64 = AtomicU64::new(0);

/// Treats bytes as the active segment of a partition, opens the log (recovery), then
/// reads everything and appends once. Recovery must leave a log in which every stored
/// batch is valid and offsets are dense from the segment's base.
pub fn segment_recovery(data: &[u8]) {
    let dir = std::env::temp_dir().join(format!(
        "ferry-fuzz-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join(format!("{:020}.log", 0)), data).expect("write segment");
    let config = LogConfig {
        durability: Durability::Never,
        segment_bytes: 1 << 20,
        ..LogConfig::default()
    };
    if let Ok((log, _cuts)) = PartitionLog::open(&dir, config) {
        let latest = log.latest();
        let mut offset = 0;
        while offset < latest {
            let read = log
                .read(offset, 1 << 16)
                .expect("a recovered log reads back");
            assert!(
                !read.batches.is_empty(),
                "offsets below latest are readable"
            );
            for one in batch::Batches::new(read.batches) {
                let one = one.expect("whole batches");
                batch::verify_crc(&one).expect("only valid batches survive recovery");
                let header = batch::BatchHeader::parse(&one).expect("valid header");
                assert!(header.base_offset as u64 <= offset.max(header.base_offset as u64));
                offset = header.last_offset() as u64 + 1;
            }
        }
        let mut b = batch::build_batch(
            &[batch::NewRecord {
                value: Some(Bytes::from_static(b"after")),
                ..Default::default()
            }],
            crate::Compression::None,
        )
        .expect("build");
        let info = log
            .append(&mut b, 0)
            .expect("a recovered log takes appends");
        assert_eq!(info.base_offset, latest);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
