//! Unit tests of the batch format.

use super::*;
use proptest::prelude::*;

fn rec(key: &str, value: &[u8], ts: i64) -> NewRecord {
    NewRecord {
        timestamp: ts,
        attributes: 0,
        key: Some(Bytes::copy_from_slice(key.as_bytes())),
        value: Some(Bytes::copy_from_slice(value)),
        headers: vec![RecordHeader {
            key: Bytes::from_static(b"h"),
            value: Some(Bytes::from_static(b"v")),
        }],
    }
}

#[test]
fn a_built_batch_decodes_to_the_same_records() {
    let records = vec![rec("a", b"one", 1000), rec("b", b"two", 1005)];
    let mut batch = build_batch(&records, Compression::None).unwrap();
    set_base_offset(&mut batch, 42);
    let header = validate_incoming(&batch, 1 << 20).unwrap();
    assert_eq!(header.record_count, 2);
    assert_eq!(header.last_offset(), 43);
    let (_, decoded) = decode_records(&Bytes::from(batch), &DecodeLimits::default()).unwrap();
    assert_eq!(decoded[0].offset, 42);
    assert_eq!(decoded[1].offset, 43);
    assert_eq!(decoded[1].timestamp, 1005);
    assert_eq!(decoded[1].value.as_deref(), Some(&b"two"[..]));
    assert_eq!(decoded[0].headers[0].key.as_ref(), b"h");
}

#[test]
fn decoding_from_an_offset_steps_over_earlier_records_and_stops_at_the_limit() {
    let records: Vec<_> = (0..100)
        .map(|i| rec(&format!("k{i}"), format!("v{i}").as_bytes(), i))
        .collect();
    for codec in [Compression::None, Compression::Lz4] {
        let mut batch = build_batch(&records, codec).unwrap();
        set_base_offset(&mut batch, 1000);
        let batch = Bytes::from(batch);
        let limits = DecodeLimits::default();
        let (_, all) = decode_records(&batch, &limits).unwrap();
        let (header, some) = decode_records_from(&batch, &limits, 1040, 7).unwrap();
        assert_eq!(header.last_offset(), 1099);
        assert_eq!(some.len(), 7);
        assert_eq!(some[0].offset, 1040);
        assert_eq!(some[6].value.as_deref(), Some(&b"v46"[..]));
        for r in &some {
            let same = &all[(r.offset - 1000) as usize];
            assert_eq!(
                (r.timestamp, &r.key, &r.headers),
                (same.timestamp, &same.key, &same.headers)
            );
        }
        // Past the end, before the start, none wanted.
        assert!(decode_records_from(&batch, &limits, 1100, 5)
            .unwrap()
            .1
            .is_empty());
        assert_eq!(
            decode_records_from(&batch, &limits, 0, 1000)
                .unwrap()
                .1
                .len(),
            100
        );
        assert!(decode_records_from(&batch, &limits, 0, 0)
            .unwrap()
            .1
            .is_empty());
    }
    // The CRC covers the records stepped over too.
    let mut bad = build_batch(&records, Compression::None).unwrap();
    bad[BATCH_HEADER_BYTES + 3] ^= 1;
    assert!(decode_records_from(&Bytes::from(bad), &DecodeLimits::default(), 99, 1).is_err());
}

#[test]
fn a_flipped_byte_is_caught_by_the_crc() {
    let mut batch = build_batch(&[rec("k", b"value", 1)], Compression::None).unwrap();
    let last = batch.len() - 1;
    batch[last] ^= 0x40;
    assert!(matches!(
        validate_incoming(&batch, 1 << 20),
        Err(BatchError::CrcMismatch { .. })
    ));
}

#[test]
fn the_base_offset_is_outside_the_crc() {
    let mut batch = build_batch(&[rec("k", b"value", 1)], Compression::None).unwrap();
    set_base_offset(&mut batch, 1 << 40);
    verify_crc(&batch).unwrap();
}

#[test]
fn an_oversized_length_is_refused_before_reading() {
    let mut batch = build_batch(&[rec("k", b"value", 1)], Compression::None).unwrap();
    batch[8..12].copy_from_slice(&i32::MAX.to_be_bytes());
    assert!(matches!(
        read_prefix(&batch, 1 << 20),
        Err(BatchError::BadLength(_))
    ));
}

#[test]
fn every_codec_round_trips() {
    let records: Vec<_> = (0..50)
        .map(|i| rec(&format!("k{i}"), &vec![b'x'; 300], i))
        .collect();
    for codec in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let batch = build_batch(&records, codec).unwrap();
        let header = validate_incoming(&batch, 1 << 20).unwrap();
        assert_eq!(header.compression().unwrap(), codec);
        let (_, decoded) = decode_records(&Bytes::from(batch), &DecodeLimits::default()).unwrap();
        assert_eq!(decoded.len(), 50, "{codec:?}");
        assert_eq!(decoded[49].value.as_deref(), Some(&vec![b'x'; 300][..]));
    }
}

#[test]
fn a_decompression_bomb_is_stopped_at_the_limit() {
    let records = vec![rec("k", &vec![0u8; 1 << 20], 1)];
    let batch = build_batch(&records, Compression::Zstd).unwrap();
    let limits = DecodeLimits {
        decompressed_bytes_max: 4096,
        ..Default::default()
    };
    assert!(matches!(
        decode_records(&Bytes::from(batch), &limits),
        Err(BatchError::TooLarge { .. })
    ));
}

fn arb_record() -> impl Strategy<Value = NewRecord> {
    (
        any::<i64>().prop_map(|t| t >> 2),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
        proptest::collection::vec(
            (
                proptest::collection::vec(any::<u8>(), 0..10),
                proptest::option::of(proptest::collection::vec(any::<u8>(), 0..10)),
            ),
            0..4,
        ),
        any::<i8>(),
    )
        .prop_map(|(timestamp, key, value, headers, attributes)| NewRecord {
            timestamp,
            attributes,
            key: key.map(Bytes::from),
            value: value.map(Bytes::from),
            headers: headers
                .into_iter()
                .map(|(k, v)| RecordHeader {
                    key: Bytes::from(k),
                    value: v.map(Bytes::from),
                })
                .collect(),
        })
}

/// A built batch with record `i`'s offset delta replaced by `deltas[i]` and the CRC
/// made right again.
fn with_offset_deltas(deltas: &[i64]) -> Bytes {
    let records: Vec<_> = (0..deltas.len())
        .map(|i| NewRecord {
            timestamp: 1000 + i as i64,
            value: Some(Bytes::from_static(b"v")),
            ..NewRecord::default()
        })
        .collect();
    let built = build_batch(&records, Compression::None).unwrap();
    let mut body = Vec::new();
    let mut r = Reader {
        buf: &built[BATCH_HEADER_BYTES..],
        pos: 0,
    };
    for d in deltas {
        let len = r.varint().unwrap() as usize;
        let rec = r.bytes(len).unwrap();
        let mut rr = Reader { buf: rec, pos: 0 };
        let attributes = rr.i8().unwrap();
        let ts = rr.varlong().unwrap();
        rr.varint().unwrap();
        let mut out = vec![attributes as u8];
        put_varlong(&mut out, ts);
        put_varlong(&mut out, *d);
        out.extend_from_slice(&rec[rr.pos..]);
        put_varlong(&mut body, out.len() as i64);
        body.extend_from_slice(&out);
    }
    let mut batch = built[..BATCH_HEADER_BYTES].to_vec();
    batch.extend_from_slice(&body);
    let len = (batch.len() - BATCH_PREFIX_BYTES) as i32;
    batch[8..12].copy_from_slice(&len.to_be_bytes());
    let crc = crc32c::crc32c(&batch[CRC_START..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(batch)
}

#[test]
fn a_batch_whose_record_offset_deltas_are_not_their_positions_fails_the_check() {
    let limits = DecodeLimits::default();
    assert!(check_batch(&with_offset_deltas(&[0, 1, 2]), 1 << 20, &limits).is_ok());
    for deltas in [
        &[0, i32::MAX as i64, 2][..],
        &[0, -5, 2],
        &[1, 0, 2],
        &[0, 2, 2],
        &[i32::MIN as i64, 1, 2],
    ] {
        let batch = with_offset_deltas(deltas);
        assert!(
            matches!(
                check_batch(&batch, 1 << 20, &limits),
                Err(BatchError::BadRecord { .. })
            ),
            "{deltas:?}"
        );
        // Readers never see an offset outside the batch's range either.
        assert!(decode_records(&batch, &limits).is_err(), "{deltas:?}");
    }
}

#[test]
fn a_header_max_timestamp_that_disagrees_with_the_records_is_rewritten_with_its_crc() {
    // Negative timestamp deltas are legal: Kafka producers take the first record's
    // timestamp as the base, and a later record may be older.
    let records = [1000i64, 900, 1500].map(|ts| NewRecord {
        timestamp: ts,
        ..NewRecord::default()
    });
    let built = build_batch(&records, Compression::None).unwrap();
    for wrong in [-1i64, 0, 1499, i64::MAX] {
        let mut batch = built.clone();
        set_max_timestamp(&mut batch, wrong);
        let checked = check_batch(
            &Bytes::from(batch.clone()),
            1 << 20,
            &DecodeLimits::default(),
        )
        .unwrap();
        assert_eq!(checked.header.max_timestamp, wrong);
        assert_eq!(checked.max_timestamp, 1500);
        set_max_timestamp(&mut batch, checked.max_timestamp);
        verify_crc(&batch).unwrap();
        assert_eq!(BatchHeader::parse(&batch).unwrap().max_timestamp, 1500);
    }
}

#[test]
fn a_batch_with_fewer_or_more_records_than_its_header_fails_the_check() {
    let records = [rec("a", b"1", 1), rec("b", b"2", 2)];
    let built = build_batch(&records, Compression::None).unwrap();
    for count in [1i32, 3] {
        let mut batch = built.clone();
        batch[23..27].copy_from_slice(&(count - 1).to_be_bytes());
        batch[57..61].copy_from_slice(&count.to_be_bytes());
        let crc = crc32c::crc32c(&batch[CRC_START..]);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(
            check_batch(&Bytes::from(batch), 1 << 20, &DecodeLimits::default()).is_err(),
            "{count}"
        );
    }
}

proptest! {
    #[test]
    fn any_records_round_trip_through_a_batch(
        records in proptest::collection::vec(arb_record(), 1..20),
        base in 0i64..(1 << 50),
        codec in prop_oneof![Just(Compression::None), Just(Compression::Gzip), Just(Compression::Lz4), Just(Compression::Snappy), Just(Compression::Zstd)],
    ) {
        // Timestamps within one batch stay close, as from any producer.
        let t0 = records[0].timestamp;
        let records: Vec<_> = records.into_iter().enumerate().map(|(i, mut r)| { r.timestamp = t0.wrapping_add(i as i64); r }).collect();
        let mut batch = build_batch(&records, codec).unwrap();
        set_base_offset(&mut batch, base);
        validate_incoming(&batch, 1 << 24).unwrap();
        // Every batch Ferry builds passes the full check, its header's max timestamp true.
        let checked = check_batch(&Bytes::copy_from_slice(&batch), 1 << 24, &DecodeLimits::default()).unwrap();
        prop_assert_eq!(checked.max_timestamp, checked.header.max_timestamp);
        let (header, decoded) = decode_records(&Bytes::from(batch), &DecodeLimits::default()).unwrap();
        prop_assert_eq!(header.base_offset, base);
        prop_assert_eq!(decoded.len(), records.len());
        for (i, (d, r)) in decoded.iter().zip(records.iter()).enumerate() {
            prop_assert_eq!(d.offset, base + i as i64);
            prop_assert_eq!(d.timestamp, r.timestamp);
            prop_assert_eq!(&d.key, &r.key);
            prop_assert_eq!(&d.value, &r.value);
            prop_assert_eq!(&d.headers, &r.headers);
            prop_assert_eq!(d.attributes, r.attributes);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = read_prefix(&bytes, 1 << 20);
        let _ = validate_incoming(&bytes, 1 << 20);
        let _ = decode_records(&Bytes::from(bytes), &DecodeLimits::default());
    }
}
