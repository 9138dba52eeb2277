//! Request bodies: the record's value as it is, or a CloudEvents event (structured: the
//! event as JSON; binary: the value as it is, the attributes as `ce-` headers).

use bytes::Bytes;
use ferry_broker::subs::push::{Payload, PushConfig};
use ferry_broker::subs::{Delivery, SubscriptionConfig};
use ferry_log::batch::RECORD_ATTR_JSON_VALUE;
use serde_json::{json, Value};

/// A record header's value, when it is text.
pub(crate) fn header_text<'a>(r: &'a ferry_log::Record, name: &str) -> Option<&'a str> {
    r.header(name).and_then(|v| std::str::from_utf8(v).ok())
}

/// The record's `content-type` header when it is printable, else JSON for a JSON
/// value, else bytes.
fn content_type(r: &ferry_log::Record) -> String {
    match header_text(r, "content-type") {
        Some(ct) if !ct.is_empty() && ct.bytes().all(|c| (b' '..=b'~').contains(&c)) => ct.into(),
        _ if r.attributes & RECORD_ATTR_JSON_VALUE != 0 => "application/json".into(),
        _ => "application/octet-stream".into(),
    }
}

/// The CloudEvents attributes of a delivery (`id` is the webhook id).
pub(crate) fn cloudevent_attributes(
    cfg: &SubscriptionConfig,
    x: &Delivery,
    id: &str,
) -> Vec<(&'static str, Value)> {
    let r = &x.record;
    let mut a = vec![
        ("specversion", json!("1.0")),
        ("id", json!(id)),
        ("source", json!(format!("/ferry/topics/{}", cfg.topic))),
        (
            "type",
            json!(header_text(r, "ce-type")
                .filter(|t| !t.is_empty() && t.bytes().all(|c| (b' '..=b'~').contains(&c)))
                .unwrap_or("ferry.record")),
        ),
        ("time", json!(ferry_broker::time::rfc3339(r.timestamp))),
    ];
    if let Some(k) = r.key.as_deref().and_then(|k| std::str::from_utf8(k).ok()) {
        if k.bytes().all(|c| (b' '..=b'~').contains(&c)) {
            a.push(("subject", json!(k)));
        }
    }
    a
}

/// The request body and its content type.
pub(crate) fn payload(
    cfg: &SubscriptionConfig,
    push: &PushConfig,
    x: &Delivery,
    id: &str,
) -> (Bytes, String) {
    let r = &x.record;
    let value = r.value.clone().unwrap_or_default();
    match push.payload {
        Payload::Raw | Payload::CloudeventsBinary => (value, content_type(r)),
        Payload::CloudeventsStructured => {
            let mut ev = serde_json::Map::new();
            for (k, v) in cloudevent_attributes(cfg, x, id) {
                ev.insert(k.into(), v);
            }
            let ct = content_type(r);
            let is_json =
                r.attributes & RECORD_ATTR_JSON_VALUE != 0 || ct.starts_with("application/json");
            match serde_json::from_slice::<Value>(&value) {
                Ok(v) if is_json => {
                    ev.insert("datacontenttype".into(), json!(ct));
                    ev.insert("data".into(), v);
                }
                _ => {
                    use base64::Engine;
                    ev.insert("datacontenttype".into(), json!(ct));
                    ev.insert(
                        "data_base64".into(),
                        json!(base64::engine::general_purpose::STANDARD.encode(&value)),
                    );
                }
            }
            (
                Bytes::from(serde_json::to_vec(&Value::Object(ev)).unwrap_or_default()),
                "application/cloudevents+json".into(),
            )
        }
    }
}
