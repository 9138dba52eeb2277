//! JSON shapes of records on the wire, and their mapping to the broker's records.
//!
//! A value sent as JSON is stored as its compact JSON text and read back as JSON. Bytes
//! are sent and read as `{"base64": "..."}`. Keys are strings, or `{"base64": ...}` for
//! bytes that are not UTF-8. Headers are an object of name → string (or `{"base64"}`,
//! or null); a name that occurs more than once on a stored record is read back as an
//! array of its values.

use crate::problem::Problem;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;
use ferry_broker::subs::HEADER_DELIVER_AT;
use ferry_broker::ProduceRecord;
use ferry_log::batch::{RecordHeader, RECORD_ATTR_JSON_VALUE};
use ferry_log::Record;
use serde::Deserialize;
use serde_json::{Map, Value};

/// Limits on a produce request, named with their unit last.
pub const RECORDS_PER_REQUEST_MAX: usize = 10_000;
pub const HEADERS_PER_RECORD_MAX: usize = 64;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProduceBody {
    pub records: Vec<RecordIn>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordIn {
    #[serde(default)]
    pub key: Option<Value>,
    #[serde(default)]
    pub value: Option<Value>,
    #[serde(default)]
    pub headers: Option<Value>,
    #[serde(default)]
    pub partition: Option<u32>,
    #[serde(default)]
    pub timestamp: Option<i64>,
    /// Not to be delivered by queue subscriptions before this time (ms since 1970);
    /// stored as the `ferry-deliver-at` header.
    #[serde(default)]
    pub deliver_at: Option<u64>,
    /// As `deliver_at`, relative to now.
    #[serde(default)]
    pub delay_ms: Option<u64>,
}

/// Longest `delay_ms` a record may ask for: one year.
pub const RECORD_DELAY_MS_MAX: u64 = 365 * 24 * 3600 * 1000;

/// Bytes given as `{"base64": "..."}`, if `v` has that shape.
fn as_base64(v: &Value, what: &str) -> Result<Option<Bytes>, String> {
    let Value::Object(m) = v else { return Ok(None) };
    if m.len() != 1 {
        return Ok(None);
    }
    let Some(inner) = m.get("base64") else {
        return Ok(None);
    };
    let Value::String(s) = inner else {
        return Err(format!("{what}: \"base64\" must be a string"));
    };
    B64.decode(s)
        .map(|b| Some(Bytes::from(b)))
        .map_err(|e| format!("{what}: invalid base64 ({e})"))
}

fn bytes_field(v: &Value, what: &str) -> Result<Option<Bytes>, String> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(Bytes::copy_from_slice(s.as_bytes()))),
        other => match as_base64(other, what)? {
            Some(b) => Ok(Some(b)),
            None => Err(format!(
                "{what} must be a string, null or {{\"base64\": \"...\"}}"
            )),
        },
    }
}

/// Record headers as JSON: an object of name to value, or an array of
/// `{"key": ..., "value": ...}` (for repeated names).
fn headers_in(headers_json: Option<Value>) -> Result<Vec<RecordHeader>, String> {
    let mut headers = Vec::new();
    match headers_json {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                headers.push(RecordHeader {
                    key: Bytes::from(k.into_bytes()),
                    value: bytes_field(&v, "header value")?,
                });
            }
        }
        Some(Value::Array(items)) => {
            for item in items {
                let Value::Object(m) = item else {
                    return Err("each header must be {\"key\": ..., \"value\": ...}".into());
                };
                let Some(Value::String(k)) = m.get("key") else {
                    return Err("header key must be a string".into());
                };
                let v = m.get("value").cloned().unwrap_or(Value::Null);
                headers.push(RecordHeader {
                    key: Bytes::from(k.clone().into_bytes()),
                    value: bytes_field(&v, "header value")?,
                });
            }
        }
        Some(_) => return Err("headers must be an object or an array".into()),
    }
    Ok(headers)
}

/// When a record asks to be delivered: `deliver_at` (ms since 1970) or `delay_ms` from
/// now, not both.
fn deliver_at(at: Option<u64>, delay_ms: Option<u64>) -> Result<Option<u64>, String> {
    match (at, delay_ms) {
        (Some(_), Some(_)) => Err("give deliver_at or delay_ms, not both".into()),
        (Some(at), None) => Ok(Some(at)),
        (None, Some(d)) if d > RECORD_DELAY_MS_MAX => Err(format!(
            "delay_ms {d} is over the limit of {RECORD_DELAY_MS_MAX} (one year)"
        )),
        (None, Some(d)) => Ok(Some(ferry_broker::now_ms() + d)),
        (None, None) => Ok(None),
    }
}

/// A JSON value as the text Ferry stores, exactly as `serde_json::to_vec` writes it. A
/// string with nothing to escape (the usual payload) is copied between quotes at once
/// instead of byte by byte through the escaper, which took a tenth of a single-record
/// produce's instructions.
pub fn json_text(v: &Value) -> serde_json::Result<Vec<u8>> {
    if let Value::String(s) = v {
        // serde_json escapes `"`, `\` and the control characters below 0x20, nothing else.
        if !needs_escape(s.as_bytes()) {
            let mut out = Vec::with_capacity(s.len() + 2);
            out.push(b'"');
            out.extend_from_slice(s.as_bytes());
            out.push(b'"');
            return Ok(out);
        }
    }
    serde_json::to_vec(v)
}

/// Whether JSON must escape any of `bytes`. Checked 64 bytes at a time without an early
/// exit inside a block, so that the compiler turns the inner loop into vector code.
pub(crate) fn needs_escape(bytes: &[u8]) -> bool {
    bytes.chunks(64).any(|block| {
        block.iter().fold(false, |bad, &b| {
            bad | (b < 0x20) | (b == b'"') | (b == b'\\')
        })
    })
}

pub fn to_produce(index: usize, r: RecordIn) -> Result<ProduceRecord, Problem> {
    let bad = |m: String| Problem::bad_request("invalid-record", format!("record {index}: {m}"));
    let key = match &r.key {
        None => None,
        Some(k) => bytes_field(k, "key").map_err(bad)?,
    };
    let (value, value_is_json) = match r.value {
        None | Some(Value::Null) => (None, false),
        Some(v) => match as_base64(&v, "value").map_err(bad)? {
            Some(b) => (Some(b), false),
            None => (
                Some(Bytes::from(json_text(&v).map_err(|e| bad(e.to_string()))?)),
                true,
            ),
        },
    };
    let mut headers = headers_in(r.headers).map_err(bad)?;
    // The limit is on the headers the client sends, not on the one Ferry adds.
    if headers.len() > HEADERS_PER_RECORD_MAX {
        return Err(bad(format!(
            "{} headers, more than the limit of {HEADERS_PER_RECORD_MAX}",
            headers.len()
        )));
    }
    if let Some(at) = deliver_at(r.deliver_at, r.delay_ms).map_err(bad)? {
        headers.retain(|h| !h.key.eq_ignore_ascii_case(HEADER_DELIVER_AT.as_bytes()));
        headers.push(RecordHeader {
            key: Bytes::from_static(HEADER_DELIVER_AT.as_bytes()),
            value: Some(Bytes::from(at.to_string())),
        });
    }
    if let Some(ts) = r.timestamp {
        if ts < 0 {
            return Err(bad(format!(
                "timestamp must be milliseconds since 1970, got {ts}"
            )));
        }
    }
    Ok(ProduceRecord {
        key,
        value,
        headers,
        partition: r.partition,
        timestamp: r.timestamp,
        value_is_json,
    })
}

fn bytes_out(b: &Bytes) -> Value {
    match std::str::from_utf8(b) {
        Ok(s) => Value::String(s.to_string()),
        Err(_) => base64_out(b),
    }
}

fn base64_out(b: &Bytes) -> Value {
    let mut m = Map::new();
    m.insert("base64".into(), Value::String(B64.encode(b)));
    Value::Object(m)
}

/// The JSON form of a stored record, as the read API returns it.
pub fn record_out(r: &Record) -> Value {
    let value = match &r.value {
        None => Value::Null,
        Some(v) if r.attributes & RECORD_ATTR_JSON_VALUE != 0 => {
            serde_json::from_slice::<Value>(v).unwrap_or_else(|_| base64_out(v))
        }
        Some(v) => base64_out(v),
    };
    let mut headers = Map::new();
    for h in &r.headers {
        let name = String::from_utf8_lossy(&h.key).into_owned();
        let v = h.value.as_ref().map_or(Value::Null, bytes_out);
        match headers.get_mut(&name) {
            None => {
                headers.insert(name, v);
            }
            // A single header value is never an array, so an array means "seen before".
            Some(Value::Array(vs)) => vs.push(v),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, v]);
            }
        }
    }
    serde_json::json!({
        "offset": r.offset,
        "timestamp": r.timestamp,
        "key": r.key.as_ref().map_or(Value::Null, bytes_out),
        "value": value,
        "headers": headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn json_text_writes_what_serde_json_writes() {
        for s in [
            "",
            "plain",
            "with \"quotes\"",
            "back\\slash",
            "tab\tand\nnewline",
            "\u{1}\u{1f}",
            "\u{7f} del",
            "é 日本 🚢",
        ] {
            let v = Value::String(s.to_string());
            assert_eq!(
                json_text(&v).unwrap(),
                serde_json::to_vec(&v).unwrap(),
                "{s:?}"
            );
        }
        let v = serde_json::json!({"a": [1, "x"]});
        assert_eq!(json_text(&v).unwrap(), serde_json::to_vec(&v).unwrap());
    }

    proptest! {
        #[test]
        fn json_text_of_any_string_is_serde_jsons(s in any::<String>()) {
            let v = Value::String(s);
            prop_assert_eq!(json_text(&v).unwrap(), serde_json::to_vec(&v).unwrap());
        }
    }
}
