//! Records written as JSON straight into the response body.
//!
//! A pull or a read answers many records; building a `serde_json::Value` tree for each
//! and serializing it took most of the server's work per record (a value stored as JSON
//! was parsed into a tree only to be written out again). Here each record is written
//! once, field by field, in the same shape and key order as the tree gave (keys in
//! byte order, as `serde_json::Map` keeps them): a value stored as JSON is checked to be
//! one JSON text and copied as it is.
//!
//! Values stored by the HTTP API are compact JSON, and for them the bytes are exactly
//! those `serde_json` wrote for the tree (a property test holds this). A value that
//! arrived over Kafka with the JSON attribute set is copied as its client wrote it if it
//! is valid JSON, and read as `{"base64": ...}` otherwise, as before.

use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;
use ferry_broker::subs::Delivery;
use ferry_log::batch::RECORD_ATTR_JSON_VALUE;
use ferry_log::Record;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// A JSON body for an answer.
pub struct JsonBody(pub Vec<u8>);

impl IntoResponse for JsonBody {
    fn into_response(self) -> Response {
        debug_assert!(is_json(&self.0), "a JSON body is one JSON text");
        let mut resp = self.0.into_response();
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        resp
    }
}

/// A rough size of `r` as JSON, to size the body once.
pub fn size_hint(r: &Record) -> usize {
    let bytes = |b: &Option<Bytes>| b.as_ref().map_or(4, |b| b.len() * 4 / 3 + 16);
    let headers: usize = r
        .headers
        .iter()
        .map(|h| h.key.len() + bytes(&h.value) + 4)
        .sum();
    160 + bytes(&r.key) + bytes(&r.value) + headers
}

/// Writes a stored record as the read API returns it.
pub fn record(out: &mut Vec<u8>, r: &Record) {
    write(out, r, None);
}

/// Writes a leased record as a pull returns it: the record with its lease.
pub fn delivery(out: &mut Vec<u8>, d: &Delivery) {
    write(out, &d.record, Some(d));
}

/// The fields in byte order of their names: attempt, headers, key, lease_expires_at,
/// lease_id, offset, partition, timestamp, value.
fn write(out: &mut Vec<u8>, r: &Record, lease: Option<&Delivery>) {
    out.push(b'{');
    if let Some(d) = lease {
        out.extend_from_slice(b"\"attempt\":");
        int(out, d.attempt);
        out.push(b',');
    }
    out.extend_from_slice(b"\"headers\":");
    headers(out, r);
    out.extend_from_slice(b",\"key\":");
    match &r.key {
        None => out.extend_from_slice(b"null"),
        Some(k) => bytes(out, k),
    }
    if let Some(d) = lease {
        out.extend_from_slice(b",\"lease_expires_at\":");
        int(out, d.lease_expires_ms);
        out.extend_from_slice(b",\"lease_id\":");
        string(out, &d.lease_id);
    }
    out.extend_from_slice(b",\"offset\":");
    int(out, r.offset);
    if let Some(d) = lease {
        out.extend_from_slice(b",\"partition\":");
        int(out, d.partition);
    }
    out.extend_from_slice(b",\"timestamp\":");
    int(out, r.timestamp);
    out.extend_from_slice(b",\"value\":");
    match &r.value {
        None => out.extend_from_slice(b"null"),
        Some(v) if r.attributes & RECORD_ATTR_JSON_VALUE != 0 && is_json(v) => {
            out.extend_from_slice(v)
        }
        Some(v) => base64(out, v),
    }
    out.push(b'}');
}

/// Whether `v` is exactly one JSON text (surrounding whitespace allowed), checked
/// without building it. A string with nothing escaped in it, the usual value, is
/// checked at once: UTF-8 between quotes, with no quote, backslash or control
/// character inside. JSON text is UTF-8, so anything else is not JSON.
fn is_json(v: &[u8]) -> bool {
    if let [b'"', inner @ .., b'"'] = v {
        if !crate::codec::needs_escape(inner) && std::str::from_utf8(inner).is_ok() {
            return true;
        }
    }
    // Skipping a string does not check its UTF-8: the whole text is checked first.
    std::str::from_utf8(v)
        .is_ok_and(|text| serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok())
}

/// Headers as an object of name → value; a name given more than once → an array of its
/// values in their order. Names that are not UTF-8 are read lossily.
fn headers(out: &mut Vec<u8>, r: &Record) {
    if r.headers.is_empty() {
        out.extend_from_slice(b"{}");
        return;
    }
    let mut by_name: BTreeMap<Cow<'_, str>, Vec<Option<&Bytes>>> = BTreeMap::new();
    for h in &r.headers {
        by_name
            .entry(String::from_utf8_lossy(&h.key))
            .or_default()
            .push(h.value.as_ref());
    }
    out.push(b'{');
    for (i, (name, values)) in by_name.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(out, name);
        out.push(b':');
        let one = |out: &mut Vec<u8>, v: &Option<&Bytes>| match v {
            None => out.extend_from_slice(b"null"),
            Some(b) => bytes(out, b),
        };
        match values.as_slice() {
            [v] => one(out, v),
            vs => {
                out.push(b'[');
                for (j, v) in vs.iter().enumerate() {
                    if j > 0 {
                        out.push(b',');
                    }
                    one(out, v);
                }
                out.push(b']');
            }
        }
    }
    out.push(b'}');
}

/// Bytes as a string when they are UTF-8, else as `{"base64": ...}`.
fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    match std::str::from_utf8(b) {
        Ok(s) => string(out, s),
        Err(_) => base64(out, b),
    }
}

fn base64(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(b"{\"base64\":\"");
    let start = out.len();
    out.resize(start + b.len().div_ceil(3) * 4, 0);
    let written = B64
        .encode_slice(b, &mut out[start..])
        .expect("the room for base64 is computed from the length");
    out.truncate(start + written);
    out.extend_from_slice(b"\"}");
}

/// A JSON string, escaped as `serde_json` escapes it; a string with nothing to escape
/// is copied at once.
fn string(out: &mut Vec<u8>, s: &str) {
    if crate::codec::needs_escape(s.as_bytes()) {
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    } else {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

fn int(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// `{` then the fields `before` writes (each followed by a comma), then
/// `"records":[...]}` with each item written by `each`.
pub fn records_body<T>(
    items: &[T],
    hint: impl Fn(&T) -> usize,
    each: impl Fn(&mut Vec<u8>, &T),
    before: impl FnOnce(&mut Vec<u8>),
) -> Vec<u8> {
    let mut out = Vec::with_capacity(96 + items.iter().map(&hint).sum::<usize>());
    out.push(b'{');
    before(&mut out);
    out.extend_from_slice(b"\"records\":[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        each(&mut out, item);
    }
    out.extend_from_slice(b"]}");
    out
}

/// Writes `"name":n,` (a field before others).
pub fn int_field(out: &mut Vec<u8>, name: &str, n: impl itoa::Integer) {
    string(out, name);
    out.push(b':');
    int(out, n);
    out.push(b',');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{json_text, record_out};
    use ferry_broker::subs::Delivery;
    use ferry_log::batch::RecordHeader;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    fn delivery_value(d: &Delivery) -> Value {
        let mut v = record_out(&d.record);
        if let Value::Object(m) = &mut v {
            m.insert("lease_id".into(), json!(d.lease_id));
            m.insert("attempt".into(), json!(d.attempt));
            m.insert("partition".into(), json!(d.partition));
            m.insert("lease_expires_at".into(), json!(d.lease_expires_ms));
        }
        v
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(any::<String>(), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn some_bytes() -> impl Strategy<Value = Option<Bytes>> {
        prop_oneof![
            Just(None),
            any::<String>().prop_map(|s| Some(Bytes::from(s))),
            prop::collection::vec(any::<u8>(), 0..40).prop_map(|v| Some(Bytes::from(v))),
        ]
    }

    prop_compose! {
        fn stored_record()(
            offset in 0i64..i64::MAX,
            timestamp in any::<i64>(),
            key in some_bytes(),
            value in prop_oneof![
                json_value().prop_map(|v| (Some(Bytes::from(json_text(&v).unwrap())), true)),
                some_bytes().prop_map(|b| (b, false)),
                // The JSON attribute on bytes that are not JSON (a Kafka client may set it).
                prop::collection::vec(any::<u8>(), 0..20).prop_map(|v| (Some(Bytes::from(v)), true)),
            ],
            headers in prop::collection::vec(
                (prop_oneof![Just("a".to_string()), Just("b".to_string()), any::<String>()],
                 some_bytes()),
                0..5),
        ) -> Record {
            Record {
                offset,
                timestamp,
                attributes: if value.1 { RECORD_ATTR_JSON_VALUE } else { 0 },
                key,
                value: value.0,
                headers: headers
                    .into_iter()
                    .map(|(k, v)| RecordHeader { key: Bytes::from(k), value: v })
                    .collect(),
            }
        }
    }

    proptest! {
        #[test]
        fn a_record_is_written_as_the_value_tree_was(r in stored_record()) {
            let mut out = Vec::new();
            record(&mut out, &r);
            prop_assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(&record_out(&r)).unwrap()
            );
        }

        #[test]
        fn a_delivery_is_written_as_the_value_tree_was(
            r in stored_record(),
            attempt in any::<u32>(),
            partition in any::<u32>(),
            expires in any::<u64>(),
            lease_id in "[0-9a-z.\"\\\\-]{0,30}",
        ) {
            let d = Delivery { lease_id, attempt, partition, lease_expires_ms: expires, record: r };
            let mut out = Vec::new();
            delivery(&mut out, &d);
            prop_assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(&delivery_value(&d)).unwrap()
            );
        }
    }

    #[test]
    fn a_json_value_from_a_kafka_client_is_copied_as_written_and_stays_valid() {
        let r = Record {
            offset: 1,
            timestamp: 2,
            attributes: RECORD_ATTR_JSON_VALUE,
            key: None,
            value: Some(Bytes::from_static(b" {\"b\": 1, \"a\": [1e400]} ")),
            headers: vec![],
        };
        let mut out = Vec::new();
        record(&mut out, &r);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.ends_with(",\"value\": {\"b\": 1, \"a\": [1e400]} }"),
            "{text}"
        );
        serde_json::from_str::<serde::de::IgnoredAny>(&text).unwrap();
        // Two JSON texts, or one cut short, are not one value: read as bytes.
        for bad in [
            &b"1 2"[..],
            b"{\"a\":",
            b"\"\x01\"",
            b"\"a\"b\"",
            b"\"\xff\"",
            b"\"",
            b"\"\\\"",
        ] {
            let r = Record {
                value: Some(Bytes::copy_from_slice(bad)),
                ..r.clone()
            };
            let mut out = Vec::new();
            record(&mut out, &r);
            let v: Value = serde_json::from_slice(&out).unwrap();
            assert!(v["value"]["base64"].is_string(), "{v}");
        }
    }

    #[test]
    fn a_body_of_records_is_one_json_text() {
        let r = Record {
            offset: 7,
            timestamp: 8,
            attributes: 0,
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from_static(b"\xff")),
            headers: vec![],
        };
        let body = records_body(&[r.clone(), r], size_hint, record, |out| {
            int_field(out, "next_offset", 9u64)
        });
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["records"].as_array().unwrap().len(), 2);
        assert_eq!(v["records"][1]["value"]["base64"], "/w==");
        assert_eq!(v["next_offset"], 9);
    }
}
