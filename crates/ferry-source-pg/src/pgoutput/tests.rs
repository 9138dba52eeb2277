//! Tests of the pgoutput decoder: round trips of every message kind, truncation at every
//! byte, hostile counts, and proptests.

use super::test_encoder::{encode, samples, text};
use super::*;
use proptest::prelude::*;

fn decode_default(bytes: &[u8]) -> Result<Message, DecodeError> {
    decode(&Bytes::copy_from_slice(bytes), &Limits::default())
}

#[test]
fn every_message_kind_round_trips() {
    for (name, message) in samples() {
        let bytes = encode(&message);
        assert_eq!(decode_default(&bytes), Ok(message), "{name}");
    }
}

#[test]
fn a_begin_decodes_from_bytes_written_by_hand() {
    let mut bytes = vec![b'B'];
    bytes.extend([0, 0, 0, 1, 0x6B, 0x37, 0x4D, 0x48]);
    bytes.extend(1_000_i64.to_be_bytes());
    bytes.extend([0, 0, 3, 3]);
    assert_eq!(
        decode_default(&bytes),
        Ok(Message::Begin {
            final_lsn: 0x1_6B37_4D48,
            commit_time_us: 1000,
            xid: 0x303,
        })
    );
}

#[test]
fn truncation_at_every_byte_fails_cleanly() {
    for (name, message) in samples() {
        let bytes = encode(&message);
        for len in 0..bytes.len() {
            let result = decode_default(&bytes[..len]);
            assert!(
                matches!(result, Err(DecodeError::Truncated { .. })),
                "{name} cut to {len} bytes: {result:?}"
            );
        }
    }
}

#[test]
fn trailing_bytes_after_a_message_are_an_error() {
    for (name, message) in samples() {
        let mut bytes = encode(&message);
        let at = bytes.len();
        bytes.push(0);
        assert_eq!(
            decode_default(&bytes),
            Err(DecodeError::TrailingBytes { at, count: 1 }),
            "{name}"
        );
    }
}

#[test]
fn datums_are_slices_of_the_input() {
    let message = Message::Insert {
        relation_id: 1,
        new: Tuple(vec![text("hello")]),
    };
    let input = Bytes::from(encode(&message));
    let Ok(Message::Insert { new, .. }) = decode(&input, &Limits::default()) else {
        panic!("an insert decodes");
    };
    let Some(Datum::Text(value)) = new.0.first() else {
        panic!("a text datum");
    };
    let range = input.as_ptr() as usize..input.as_ptr() as usize + input.len();
    assert!(range.contains(&(value.as_ptr() as usize)));
}

#[test]
fn a_relation_announcing_65535_columns_in_three_bytes_fails_without_allocating() {
    let mut bytes = vec![b'R', 0, 0, 0, 1, 0, b'o', 0, b'd', 0xff, 0xff, 1, 2, 3];
    let limits = Limits {
        columns_max: usize::MAX,
        ..Limits::default()
    };
    let result = decode(&Bytes::from(bytes.clone()), &limits);
    assert!(
        matches!(
            result,
            Err(DecodeError::Truncated {
                field: "column",
                needed: 655_350,
                remaining: 3,
                ..
            })
        ),
        "{result:?}"
    );
    // With the default limit, the count itself is refused.
    assert_eq!(
        decode_default(&bytes),
        Err(DecodeError::CountOverLimit {
            at: 9,
            what: "column",
            count: 65_535,
            max: 1664,
        })
    );
    bytes.truncate(9);
    assert!(decode_default(&bytes).is_err());
}

#[test]
fn a_tuple_announcing_more_columns_than_the_limit_fails() {
    let bytes = [b'I', 0, 0, 0, 1, b'N', 0x07, 0x00, b'n'];
    assert_eq!(
        decode_default(&bytes),
        Err(DecodeError::CountOverLimit {
            at: 6,
            what: "tuple column",
            count: 1792,
            max: 1664,
        })
    );
}

#[test]
fn a_truncate_announcing_a_huge_or_negative_count_fails() {
    let huge = [b'T', 0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0, 1];
    assert!(matches!(
        decode_default(&huge),
        Err(DecodeError::CountOverLimit {
            at: 1,
            what: "truncated relation",
            ..
        })
    ));
    let negative = [b'T', 0xff, 0xff, 0xff, 0xff, 0];
    assert_eq!(
        decode_default(&negative),
        Err(DecodeError::Negative {
            at: 1,
            what: "truncated relation count",
            value: -1,
        })
    );
    let more_than_sent = [b'T', 0, 0, 0, 3, 0, 0, 0, 0, 1];
    assert!(matches!(
        decode_default(&more_than_sent),
        Err(DecodeError::Truncated { needed: 12, .. })
    ));
}

#[test]
fn a_negative_value_length_fails() {
    let bytes = [b'I', 0, 0, 0, 1, b'N', 0, 1, b't', 0xff, 0xff, 0xff, 0xfe];
    assert_eq!(
        decode_default(&bytes),
        Err(DecodeError::Negative {
            at: 9,
            what: "text value length",
            value: -2,
        })
    );
}

#[test]
fn a_value_longer_than_the_payload_fails() {
    let bytes = [
        b'I', 0, 0, 0, 1, b'N', 0, 1, b'b', 0x7f, 0xff, 0xff, 0xff, 1,
    ];
    assert!(matches!(
        decode_default(&bytes),
        Err(DecodeError::Truncated {
            at: 13,
            field: "binary value",
            remaining: 1,
            ..
        })
    ));
}

#[test]
fn unknown_tags_are_named() {
    assert_eq!(
        decode_default(b"Zzz"),
        Err(DecodeError::UnknownTag { tag: b'Z' })
    );
    // Protocol version 2's stream messages are not version 1's.
    assert_eq!(
        decode_default(b"S"),
        Err(DecodeError::UnknownTag { tag: b'S' })
    );
    assert!(matches!(
        decode_default(b""),
        Err(DecodeError::Truncated { at: 0, .. })
    ));
}

#[test]
fn bad_tuple_tags_and_value_kinds_are_named() {
    assert_eq!(
        decode_default(&[b'I', 0, 0, 0, 1, b'K', 0, 0]),
        Err(DecodeError::BadTupleTag {
            at: 5,
            tag: b'K',
            expected: "'N'",
        })
    );
    assert_eq!(
        decode_default(&[b'U', 0, 0, 0, 1, b'X']),
        Err(DecodeError::BadTupleTag {
            at: 5,
            tag: b'X',
            expected: "'K', 'O' or 'N'",
        })
    );
    assert_eq!(
        decode_default(&[b'U', 0, 0, 0, 1, b'K', 0, 0, b'K', 0, 0]),
        Err(DecodeError::BadTupleTag {
            at: 8,
            tag: b'K',
            expected: "'N'",
        })
    );
    assert_eq!(
        decode_default(&[b'D', 0, 0, 0, 1, b'N', 0, 0]),
        Err(DecodeError::BadTupleTag {
            at: 5,
            tag: b'N',
            expected: "'K' or 'O'",
        })
    );
    assert_eq!(
        decode_default(&[b'I', 0, 0, 0, 1, b'N', 0, 1, b'x']),
        Err(DecodeError::BadDatumKind { at: 8, kind: b'x' })
    );
}

#[test]
fn names_must_be_utf8_non_empty_and_within_the_limit() {
    assert_eq!(
        decode_default(&[b'O', 0, 0, 0, 0, 0, 0, 0, 1, 0xc3, 0x28, 0]),
        Err(DecodeError::NameNotUtf8 {
            at: 9,
            what: "origin name",
        })
    );
    assert_eq!(
        decode_default(&[b'R', 0, 0, 0, 1, b'p', 0, 0, b'd', 0, 0]),
        Err(DecodeError::EmptyName {
            at: 7,
            what: "relation name",
        })
    );
    assert_eq!(
        decode_default(&[b'R', 0, 0, 0, 1, 0, b'o', 0, b'x', 0, 0]),
        Err(DecodeError::BadReplicaIdentity { at: 8, value: b'x' })
    );
    let limits = Limits {
        name_bytes_max: 4,
        ..Limits::default()
    };
    let ok = Bytes::from_static(b"O\0\0\0\0\0\0\0\x01abcd\0");
    assert!(decode(&ok, &limits).is_ok());
    let long = Bytes::from_static(b"O\0\0\0\0\0\0\0\x01abcde\0");
    assert_eq!(
        decode(&long, &limits),
        Err(DecodeError::NameTooLong {
            at: 9,
            what: "origin name",
            max: 4,
        })
    );
    let unterminated = Bytes::from_static(b"O\0\0\0\0\0\0\0\x01abc");
    assert!(matches!(
        decode(&unterminated, &limits),
        Err(DecodeError::Truncated { at: 9, .. })
    ));
}

#[test]
fn errors_say_what_and_where() {
    let err = decode_default(&[b'B', 0, 0]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "truncated at byte 1: final LSN needs 8 bytes, 2 remain"
    );
    let err = decode_default(b"Q").unwrap_err();
    assert_eq!(err.to_string(), "unknown message tag 0x51 at byte 0");
}

/// Writes the seed corpus of the fuzz target `pgoutput_decode` when
/// `FERRY_WRITE_FUZZ_CORPUS` is set: a valid encoding of every sample message, and a
/// few truncated or damaged ones.
#[test]
fn write_the_fuzz_seed_corpus_when_asked() {
    if std::env::var_os("FERRY_WRITE_FUZZ_CORPUS").is_none() {
        return;
    }
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/pgoutput_decode");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, message) in samples() {
        let bytes = encode(&message);
        std::fs::write(dir.join(format!("{name}.bin")), &bytes).unwrap();
    }
    let relation = encode(&samples()[3].1);
    let insert = encode(&samples()[5].1);
    let mut damaged: Vec<(&str, Vec<u8>)> = vec![
        (
            "relation_truncated.bin",
            relation[..relation.len() / 2].to_vec(),
        ),
        ("insert_truncated.bin", insert[..insert.len() - 1].to_vec()),
        ("relation_huge_column_count.bin", {
            let mut b = vec![b'R', 0, 0, 0, 1, 0, b'o', 0, b'd', 0xff, 0xff];
            b.extend([0; 3]);
            b
        }),
        (
            "truncate_huge_count.bin",
            vec![b'T', 0x7f, 0xff, 0xff, 0xff, 3, 0, 0, 0, 1],
        ),
        ("unknown_tag.bin", b"S\0\0\0\x01garbage".to_vec()),
        (
            "insert_negative_length.bin",
            vec![b'I', 0, 0, 0, 1, b'N', 0, 1, b't', 0xff, 0xff, 0xff, 0xff],
        ),
    ];
    let mut trailing = insert.clone();
    trailing.extend(b"\0\0");
    damaged.push(("insert_trailing_bytes.bin", trailing));
    for (name, bytes) in damaged {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

fn name() -> impl Strategy<Value = String> {
    "[a-z_][a-z0-9_ é]{0,12}"
}

fn datum() -> impl Strategy<Value = Datum> {
    prop_oneof![
        Just(Datum::Null),
        Just(Datum::Unchanged),
        proptest::collection::vec(any::<u8>(), 0..16).prop_map(|b| Datum::Text(b.into())),
        proptest::collection::vec(any::<u8>(), 0..16).prop_map(|b| Datum::Binary(b.into())),
    ]
}

fn tuple() -> impl Strategy<Value = Tuple> {
    proptest::collection::vec(datum(), 0..8).prop_map(Tuple)
}

fn old_tuple() -> impl Strategy<Value = OldTuple> {
    prop_oneof![
        tuple().prop_map(OldTuple::Key),
        tuple().prop_map(OldTuple::Full)
    ]
}

fn column() -> impl Strategy<Value = Column> {
    (any::<bool>(), name(), any::<u32>(), any::<i32>()).prop_map(
        |(key, name, type_oid, type_modifier)| Column {
            key,
            name,
            type_oid,
            type_modifier,
        },
    )
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (any::<u64>(), any::<i64>(), any::<u32>()).prop_map(|(final_lsn, commit_time_us, xid)| {
            Message::Begin {
                final_lsn,
                commit_time_us,
                xid,
            }
        }),
        (any::<u8>(), any::<u64>(), any::<u64>(), any::<i64>()).prop_map(
            |(flags, commit_lsn, end_lsn, commit_time_us)| Message::Commit {
                flags,
                commit_lsn,
                end_lsn,
                commit_time_us,
            }
        ),
        (any::<u64>(), "[^\0]{0,12}")
            .prop_map(|(commit_lsn, name)| Message::Origin { commit_lsn, name }),
        (
            any::<u32>(),
            prop_oneof![Just(String::new()), name()],
            name(),
            prop::sample::select(vec![b'd', b'n', b'f', b'i']),
            proptest::collection::vec(column(), 0..6),
        )
            .prop_map(|(id, namespace, name, replica_identity, columns)| {
                Message::Relation(Relation {
                    id,
                    namespace,
                    name,
                    replica_identity,
                    columns,
                })
            }),
        (any::<u32>(), name(), name()).prop_map(|(id, namespace, name)| Message::Type {
            id,
            namespace,
            name
        }),
        (any::<u32>(), tuple()).prop_map(|(relation_id, new)| Message::Insert { relation_id, new }),
        (any::<u32>(), proptest::option::of(old_tuple()), tuple()).prop_map(
            |(relation_id, old, new)| Message::Update {
                relation_id,
                old,
                new
            }
        ),
        (any::<u32>(), old_tuple())
            .prop_map(|(relation_id, old)| Message::Delete { relation_id, old }),
        (
            proptest::collection::vec(any::<u32>(), 0..8),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(
                |(relation_ids, cascade, restart_identity)| Message::Truncate {
                    relation_ids,
                    cascade,
                    restart_identity,
                }
            ),
        (
            any::<bool>(),
            any::<u64>(),
            "[^\0]{0,12}",
            proptest::collection::vec(any::<u8>(), 0..32)
        )
            .prop_map(|(transactional, lsn, prefix, content)| Message::Message {
                transactional,
                lsn,
                prefix,
                content: content.into(),
            }),
    ]
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_default(&bytes);
    }

    #[test]
    fn arbitrary_bytes_after_a_valid_tag_never_panic(
        tag in prop::sample::select(b"BCORYIUDTM".to_vec()),
        rest in proptest::collection::vec(any::<u8>(), 0..128),
    ) {
        let mut bytes = vec![tag];
        bytes.extend(rest);
        let _ = decode_default(&bytes);
    }

    #[test]
    fn generated_messages_round_trip(message in message()) {
        let bytes = encode(&message);
        prop_assert_eq!(decode_default(&bytes), Ok(message));
    }

    #[test]
    fn generated_messages_with_a_flipped_byte_never_panic(
        message in message(),
        index in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut bytes = encode(&message);
        let i = index.index(bytes.len());
        bytes[i] = byte;
        let _ = decode_default(&bytes);
    }
}

proptest! {
    #[test]
    fn generated_messages_pass_the_fuzz_target_checks(message in message()) {
        crate::fuzzing::pgoutput_decode(&encode(&message));
    }
}
