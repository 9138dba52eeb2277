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
    out.push(seg);
    out
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
