//! Model-based test of the log: random appends (of random sizes, so segments roll),
//! reads, roll by age, retention and reopenings, each also applied to a plain vector;
//! the log must always agree with it. Proptest prints the failing case and keeps its
//! seed in proptest-regressions/.

use bytes::Bytes;
use ferry_log::batch::{build_batch, decode_records, read_prefix, NewRecord};
use ferry_log::{Compression, DecodeLimits, Durability, LogConfig, PartitionLog};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// Append a batch of `n` records of `size` bytes each, at clock `now_ms`.
    Append { n: usize, size: usize, now_ms: u64 },
    /// Read from a position in the model (a fraction of its length).
    Read { at: u8, max_bytes: usize },
    /// Close and open again.
    Reopen,
    /// Retention by bytes.
    Retain { bytes: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..6, 0usize..300, 0u64..3).prop_map(|(n, size, t)| Op::Append { n, size, now_ms: t * 1000 }),
        3 => (any::<u8>(), 1usize..3000).prop_map(|(at, max_bytes)| Op::Read { at, max_bytes }),
        1 => Just(Op::Reopen),
        1 => (500u64..5000).prop_map(|bytes| Op::Retain { bytes }),
    ]
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 2048,
        segment_ms: Some(1500),
        index_interval_bytes: 256,
        max_batch_bytes: 1 << 20,
        durability: Durability::Always,
        log_append_time: false,
    }
}

/// Decodes every record of `batches` with offset ≥ `from`.
fn values(batches: &Bytes, from: u64) -> Vec<(u64, Bytes)> {
    let mut out = Vec::new();
    let mut p = 0;
    while p < batches.len() {
        let (_, total) = read_prefix(&batches[p..], usize::MAX).unwrap();
        let (_, recs) =
            decode_records(&batches.slice(p..p + total), &DecodeLimits::default()).unwrap();
        out.extend(
            recs.into_iter()
                .filter(|r| r.offset as u64 >= from)
                .map(|r| (r.offset as u64, r.value.unwrap())),
        );
        p += total;
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_log_agrees_with_a_vector_model(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = PartitionLog::open(dir.path(), config()).unwrap();
        // model[i] = value at offset i; `earliest` moves with retention.
        let mut model: Vec<Bytes> = Vec::new();
        let mut earliest = 0u64;
        let mut counter = 0u64;
        for op in ops {
            match op {
                Op::Append { n, size, now_ms } => {
                    let records: Vec<NewRecord> = (0..n).map(|_| {
                        counter += 1;
                        let mut v = format!("{counter:08}").into_bytes();
                        v.resize(8 + size, b'.');
                        NewRecord { timestamp: 1, value: Some(Bytes::from(v)), ..Default::default() }
                    }).collect();
                    let mut batch = build_batch(&records, Compression::None).unwrap();
                    let info = log.append(&mut batch, now_ms).unwrap();
                    log.wait_durable(info.end_offset).unwrap();
                    prop_assert_eq!(info.base_offset, model.len() as u64);
                    model.extend(records.into_iter().map(|r| r.value.unwrap()));
                }
                Op::Read { at, max_bytes } => {
                    let len = model.len() as u64 - earliest;
                    let offset = earliest + (len * at as u64) / 256;
                    let r = log.read(offset, max_bytes).unwrap();
                    prop_assert_eq!(r.latest, model.len() as u64);
                    let got = values(&r.batches, offset);
                    if offset < model.len() as u64 {
                        prop_assert!(!got.is_empty(), "a read below latest returns at least one record");
                    }
                    for (i, (o, v)) in got.iter().enumerate() {
                        prop_assert_eq!(*o, offset + i as u64, "offsets are dense");
                        prop_assert_eq!(v, &model[*o as usize]);
                    }
                }
                Op::Reopen => {
                    log.close().unwrap();
                    drop(log);
                    let (l, cuts) = PartitionLog::open(dir.path(), config()).unwrap();
                    prop_assert!(cuts.is_empty(), "a clean close leaves nothing to cut");
                    log = l;
                    prop_assert_eq!(log.latest(), model.len() as u64);
                    prop_assert_eq!(log.stats().earliest, earliest);
                }
                Op::Retain { bytes } => {
                    log.apply_retention(0, None, Some(bytes)).unwrap();
                    let s = log.stats();
                    prop_assert!(s.earliest >= earliest);
                    earliest = s.earliest;
                    prop_assert!(s.segments >= 1);
                }
            }
        }
        // Finally every stored record reads back from the earliest offset.
        let mut offset = earliest;
        while offset < model.len() as u64 {
            let r = log.read(offset, 4096).unwrap();
            let got = values(&r.batches, offset);
            for (o, v) in &got {
                prop_assert_eq!(v, &model[*o as usize]);
            }
            offset = got.last().unwrap().0 + 1;
        }
    }
}

#[test]
fn a_segment_older_than_segment_ms_rolls_at_the_next_append() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = PartitionLog::open(dir.path(), config()).unwrap();
    let mut b = build_batch(
        &[NewRecord {
            timestamp: 1,
            value: Some(Bytes::from_static(b"a")),
            ..Default::default()
        }],
        Compression::None,
    )
    .unwrap();
    log.append(&mut b.clone(), 0).unwrap();
    log.append(&mut b.clone(), 1000).unwrap();
    assert_eq!(log.stats().segments, 1);
    log.append(&mut b, 1600).unwrap();
    assert_eq!(log.stats().segments, 2);
}
