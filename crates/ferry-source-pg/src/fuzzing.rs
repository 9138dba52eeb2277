//! Bodies of the fuzz targets in `fuzz/`, kept here so that the corpus replay test on
//! stable Rust (`tests/fuzz_corpus.rs`) runs exactly what the fuzzer ran. Each must
//! never panic, whatever bytes it is given, and checks what must hold for any input.

use crate::pgoutput::{self, Datum, Limits, Message, OldTuple, Tuple};
use crate::values;
use bytes::Bytes;
use serde_json::Value;

/// Type OIDs whose values the fuzz target also reads through [`values::to_json`]:
/// every parser there (scalars, dates and times, arrays).
const VALUE_OIDS: &[u32] = &[
    16, 17, 20, 21, 23, 26, 700, 701, 1082, 1083, 1114, 1184, 1266, 1700, 3802, 1000, 1007, 1009,
    1022, 3807,
];

/// Decodes bytes as one pgoutput message with the default limits; what decodes must
/// respect the limits, hold values that are slices of the input, and decode the same
/// again. Text values, and the input itself, go through [`values::to_json`].
pub fn pgoutput_decode(data: &[u8]) {
    let limits = Limits::default();
    let input = Bytes::copy_from_slice(data);
    let decoded = pgoutput::decode(&input, &limits);
    assert_eq!(
        decoded,
        pgoutput::decode(&input, &limits),
        "decoding is pure"
    );
    if let Ok(message) = &decoded {
        check_message(message, &input, &limits);
    }
    // The input itself as a value of the type its first byte picks.
    if let Some((first, text)) = data.split_first() {
        let oid = VALUE_OIDS[usize::from(*first) % VALUE_OIDS.len()];
        check_value(oid, text);
    }
}

fn check_message(message: &Message, input: &Bytes, limits: &Limits) {
    let name_ok = |s: &str| s.len() <= limits.name_bytes_max && !s.contains('\0');
    match message {
        Message::Begin { .. } | Message::Commit { .. } => {}
        Message::Origin { name, .. } => assert!(name_ok(name)),
        Message::Type {
            namespace, name, ..
        } => assert!(name_ok(namespace) && name_ok(name)),
        Message::Relation(relation) => {
            assert!(!relation.name.is_empty());
            assert!(name_ok(&relation.name) && name_ok(&relation.namespace));
            assert!(matches!(
                relation.replica_identity,
                b'd' | b'n' | b'f' | b'i'
            ));
            assert!(relation.columns.len() <= limits.columns_max);
            assert!(relation.columns.iter().all(|c| name_ok(&c.name)));
        }
        Message::Insert { new, .. } => check_tuple(new, input, limits),
        Message::Update { old, new, .. } => {
            if let Some(OldTuple::Key(t) | OldTuple::Full(t)) = old {
                check_tuple(t, input, limits);
            }
            check_tuple(new, input, limits);
        }
        Message::Delete {
            old: OldTuple::Key(t) | OldTuple::Full(t),
            ..
        } => check_tuple(t, input, limits),
        Message::Truncate { relation_ids, .. } => {
            assert!(relation_ids.len() <= limits.truncate_relations_max);
            assert_eq!(relation_ids.len() * 4 + 6, input.len());
        }
        Message::Message {
            prefix, content, ..
        } => {
            assert!(name_ok(prefix));
            assert!(within(content, input));
        }
    }
}

fn check_tuple(tuple: &Tuple, input: &Bytes, limits: &Limits) {
    assert!(tuple.0.len() <= limits.columns_max);
    for datum in &tuple.0 {
        match datum {
            Datum::Null | Datum::Unchanged => {}
            Datum::Binary(b) => assert!(within(b, input)),
            Datum::Text(b) => {
                assert!(within(b, input));
                for oid in VALUE_OIDS {
                    check_value(*oid, b);
                }
            }
        }
    }
}

/// Whether `part` is a slice of `whole`'s buffer (empty slices may point anywhere).
fn within(part: &Bytes, whole: &Bytes) -> bool {
    let start = whole.as_ptr() as usize;
    let at = part.as_ptr() as usize;
    part.is_empty() || (at >= start && at + part.len() <= start + whole.len())
}

/// [`values::to_json`] gives scalars for scalar types and arrays or strings for arrays.
fn check_value(oid: u32, text: &[u8]) {
    let value = values::to_json(oid, text);
    let is_array_type = values::type_name(oid).is_some_and(|name| name.starts_with('_'));
    match value {
        Value::Object(_) => panic!("no type maps to an object"),
        Value::Array(_) => assert!(is_array_type, "a scalar type gave an array"),
        Value::Null => panic!("a value's text is never null"),
        Value::Bool(_) | Value::Number(_) | Value::String(_) => {}
    }
}
