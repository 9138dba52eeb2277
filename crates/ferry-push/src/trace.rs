//! Trace context: the `traceparent` header of a request (W3C Trace Context), and the
//! span of each push attempt when tracing is on.
//!
//! With tracing on, an attempt is a `push` span, the child of the record's
//! `traceparent` header, and the request carries that span's own context. A record
//! without a valid header gets the trace this module has always derived for it from
//! the webhook id (the same on every attempt), with a parent span id derived the same
//! way: that parent is never exported, it names the record. With tracing off, the
//! request carries the record's header, or the derived trace with a new span id per
//! attempt.

use crate::cloudevents::header_text;
use ferry_broker::subs::{Delivery, SubscriptionConfig};
use ferry_trace::{attr, KeyValue, Span, SpanKind, Start, TraceParent};
use rand::Rng;

thread_local! {
    /// Span ids need to be unique, not secret: a fast generator seeded once per thread.
    static SPAN_RNG: std::cell::RefCell<rand::rngs::SmallRng> =
        std::cell::RefCell::new(rand::SeedableRng::from_entropy());
}

/// The record's `traceparent` header, when it is valid.
fn record_trace(r: &ferry_log::Record) -> Option<TraceParent> {
    header_text(r, "traceparent").and_then(TraceParent::parse_str)
}

/// A non-zero FNV-1a hash of `id` (the webhook id), seeded by `seed`.
fn hash_id(id: &str, seed: u128) -> u128 {
    let mut h = seed;
    for b in id.as_bytes() {
        h ^= u128::from(*b);
        h = h.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
    }
    h.max(1)
}

/// The trace of a record without a `traceparent` (`id` is the webhook id): one per
/// record, the same on every attempt.
fn derived_trace(id: &str) -> u128 {
    hash_id(id, 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d)
}

/// The record's `traceparent` header when it has a valid one, else a new span in the
/// record's derived trace. What requests carry when tracing is off.
pub(crate) fn traceparent(r: &ferry_log::Record, id: &str) -> String {
    if let Some(tp) = record_trace(r) {
        return tp.to_string();
    }
    let span: u64 = SPAN_RNG.with(|r| r.borrow_mut().gen::<u64>()).max(1);
    TraceParent {
        trace_id: derived_trace(id),
        span_id: span,
        flags: 1,
    }
    .to_string()
}

/// The span of one attempt to deliver `x` to `host`, when tracing is on.
pub(crate) fn attempt_span(cfg: &SubscriptionConfig, x: &Delivery, host: Option<&str>) -> Span {
    if !ferry_trace::enabled() {
        return Span::OFF;
    }
    let r = &x.record;
    let parent = record_trace(r).or_else(|| {
        let id = format!("{}-{}-{}", cfg.name, x.partition, r.offset);
        TraceParent::new(
            derived_trace(&id),
            // Any non-zero 64 bits of another hash of the id.
            (hash_id(&id, 0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834) as u64).max(1),
            1,
        )
    });
    let mut attributes = vec![
        KeyValue::new(attr::MESSAGING_SYSTEM, attr::SYSTEM_FERRY),
        KeyValue::new(attr::OPERATION_TYPE, "process"),
        KeyValue::new(attr::OPERATION_NAME, "push"),
        KeyValue::new(attr::SUBSCRIPTION, cfg.name.clone()),
        KeyValue::new(attr::DESTINATION, cfg.topic.clone()),
        KeyValue::new(attr::PARTITION, x.partition.to_string()),
        KeyValue::new(attr::OFFSET, r.offset),
        KeyValue::new(attr::PUSH_ATTEMPT, i64::from(x.attempt)),
    ];
    if let Some(host) = host {
        attributes.push(KeyValue::new(attr::SERVER_ADDRESS, host.to_string()));
    }
    Span::start(Start {
        parent,
        attributes,
        ..Start::new("push", SpanKind::Client)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use ferry_log::batch::RecordHeader;

    fn record(traceparent: Option<&str>) -> ferry_log::Record {
        ferry_log::Record {
            offset: 7,
            timestamp: 0,
            attributes: 0,
            key: None,
            value: None,
            headers: traceparent
                .map(|tp| RecordHeader {
                    key: Bytes::from_static(b"traceparent"),
                    value: Some(Bytes::copy_from_slice(tp.as_bytes())),
                })
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn a_valid_record_traceparent_is_sent_on_in_lower_case() {
        let tp = "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01";
        assert_eq!(
            traceparent(&record(Some(tp)), "s-0-7"),
            tp.to_ascii_lowercase()
        );
    }

    #[test]
    fn an_invalid_record_traceparent_gets_the_records_own_trace() {
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "garbage",
        ] {
            let a = traceparent(&record(Some(bad)), "s-0-7");
            let b = traceparent(&record(None), "s-0-7");
            let (a, b) = (
                TraceParent::parse_str(&a).expect("valid"),
                TraceParent::parse_str(&b).expect("valid"),
            );
            assert_eq!(a.trace_id, b.trace_id, "{bad}");
            assert_eq!(a.trace_id, derived_trace("s-0-7"));
        }
    }
}
