//! Replays the fuzz corpora (fuzz/corpus/<target>/) on stable Rust, plus seeds built
//! here, through the same bodies the fuzz targets run.

use bytes::Bytes;
use ferry_log::batch::{build_batch, set_base_offset, NewRecord, RecordHeader};
use ferry_log::{fuzzing, Compression};
use std::path::Path;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            out.push(std::fs::read(e.path()).unwrap());
        }
    }
    out
}

fn seeds() -> Vec<Vec<u8>> {
    let records: Vec<_> = (0..5)
        .map(|i| NewRecord {
            timestamp: 1000 + i,
            attributes: 0,
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from(vec![b'v'; 50])),
            headers: vec![RecordHeader {
                key: Bytes::from_static(b"h"),
                value: None,
            }],
        })
        .collect();
    let mut out = Vec::new();
    for codec in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        out.push(build_batch(&records, codec).unwrap());
    }
    // Two batches in a row, with a torn third.
    let mut seg = out[0].clone();
    let mut second = out[4].clone();
    set_base_offset(&mut second, 5);
    seg.extend_from_slice(&second);
    seg.extend_from_slice(&out[0][..30]);
    out.push(seg.clone());
    // Issue 19: a length damaged mid-segment that runs past the end of the file, with
    // good batches after it (recovery must look past it and keep what it cuts).
    let mut damaged = out[0].clone();
    let mut third = out[0].clone();
    set_base_offset(&mut third, 5);
    damaged.extend_from_slice(&third);
    let mut fourth = out[0].clone();
    set_base_offset(&mut fourth, 10);
    damaged.extend_from_slice(&fourth);
    let at = out[0].len();
    let claimed = (damaged.len() - at + 1000) as u32;
    damaged[at + 8..at + 12].copy_from_slice(&claimed.to_be_bytes());
    out.push(damaged);
    // Record offset deltas that disagree with the header: negative, a gap, a repeat
    // (one-byte varints, so that the record's length stays right).
    for delta in [-1i64, 5, 0] {
        let mut bad = out[0].clone();
        if let Some(pos) = second_record_delta(&bad) {
            bad[pos] = ((delta << 1) ^ (delta >> 63)) as u8;
            let crc = crc32c::crc32c(&bad[21..]);
            bad[17..21].copy_from_slice(&crc.to_be_bytes());
            out.push(bad);
        }
    }
    // A small zstd batch whose records inflate far past any limit.
    let zeros = vec![0u8; 16 << 20];
    let body = ferry_log::compression::compress(Compression::Zstd, &zeros).unwrap();
    let mut bomb = out[4][..61].to_vec();
    bomb.extend_from_slice(&body);
    let len = (bomb.len() - 12) as u32;
    bomb[8..12].copy_from_slice(&len.to_be_bytes());
    let crc = crc32c::crc32c(&bomb[21..]);
    bomb[17..21].copy_from_slice(&crc.to_be_bytes());
    out.push(bomb);
    out
}

/// Reads a zigzag varint at `pos`; returns the value and its length.
fn get_varint(b: &[u8], pos: usize) -> Option<(i64, usize)> {
    let mut z: u64 = 0;
    for i in 0..10 {
        let byte = *b.get(pos + i)?;
        z |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((((z >> 1) as i64) ^ -((z & 1) as i64), i + 1));
        }
    }
    None
}

/// Where the second record's offset delta (one byte, 1) sits in an uncompressed batch.
fn second_record_delta(batch: &[u8]) -> Option<usize> {
    let (len, n) = get_varint(batch, 61)?;
    let second = 61 + n + len as usize;
    let (_, n2) = get_varint(batch, second)?;
    // length, attributes (1 byte), timestamp delta (varint), offset delta.
    let after_attr = second + n2 + 1;
    let (_, n3) = get_varint(batch, after_attr)?;
    let pos = after_attr + n3;
    (get_varint(batch, pos)? == (1, 1)).then_some(pos)
}

#[test]
fn the_batch_decoder_corpus_replays_without_panics() {
    let inputs: Vec<_> = corpus("batch_decode").into_iter().chain(seeds()).collect();
    for input in &inputs {
        fuzzing::batch_decode(input);
    }
    println!("replayed {} inputs", inputs.len());
}

#[test]
fn the_segment_recovery_corpus_replays_without_panics() {
    let inputs: Vec<_> = corpus("segment_recovery")
        .into_iter()
        .chain(seeds())
        .collect();
    for input in &inputs {
        fuzzing::segment_recovery(input);
    }
    println!("replayed {} inputs", inputs.len());
}

/// `FERRY_WRITE_SEEDS=1 cargo test -p ferry-log --test fuzz_corpus -- --ignored` writes
/// the seeds above into fuzz/corpus/ as starting points for the fuzzer.
#[test]
#[ignore]
fn write_seed_corpus() {
    if std::env::var("FERRY_WRITE_SEEDS").is_err() {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    for target in ["batch_decode", "segment_recovery"] {
        for (i, s) in seeds().iter().enumerate() {
            std::fs::write(root.join(target).join(format!("seed-{i}")), s).unwrap();
        }
    }
}
