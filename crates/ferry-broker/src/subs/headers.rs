//! The record headers Ferry reads and writes, and how it rewrites them when a record is
//! copied: to the dead-letter topic, or back to its topic by a redrive or a retry.
//!
//! Header names are compared ASCII case-insensitively, as [`Record::header`] does
//! everywhere in Ferry; Ferry writes its own in lower case.

use bytes::Bytes;
use ferry_log::batch::RecordHeader;
use ferry_log::Record;

/// When to deliver the record, in ms since 1970 (scheduled delivery).
pub const HEADER_DELIVER_AT: &str = "ferry-deliver-at";
/// A redriven or retried copy is for this subscription alone.
pub const HEADER_REDRIVE_TO: &str = "ferry-redrive-subscription";
/// Where a dead letter came from.
pub const HEADER_ORIGIN_SUBSCRIPTION: &str = "ferry-origin-subscription";
pub const HEADER_ORIGIN_TOPIC: &str = "ferry-origin-topic";
pub const HEADER_ORIGIN_PARTITION: &str = "ferry-origin-partition";
pub const HEADER_ORIGIN_OFFSET: &str = "ferry-origin-offset";
/// Deliveries a dead letter had, its last error and its latest failed attempts.
pub const HEADER_ATTEMPTS: &str = "ferry-attempts";
pub const HEADER_LAST_ERROR: &str = "ferry-last-error";
pub const HEADER_DELIVERY_HISTORY: &str = "ferry-delivery-history";

/// Prefix of every origin header.
const ORIGIN_PREFIX: &str = "ferry-origin-";

fn named(h: &RecordHeader, name: &str) -> bool {
    h.key.eq_ignore_ascii_case(name.as_bytes())
}

/// When a record asks to be delivered: its `ferry-deliver-at` header (ms since 1970).
pub(crate) fn deliver_at(r: &Record) -> Option<u64> {
    std::str::from_utf8(r.header(HEADER_DELIVER_AT)?)
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether the record is a redriven or retried copy, and for which subscription.
pub(crate) fn redrive_target(r: &Record) -> Option<&[u8]> {
    r.header(HEADER_REDRIVE_TO)
}

/// A record's headers with its redrive routing replaced by one to subscription `name`.
pub(crate) fn redrive_headers(headers: &[RecordHeader], name: &str) -> Vec<RecordHeader> {
    let mut out: Vec<RecordHeader> = headers
        .iter()
        .filter(|h| !named(h, HEADER_REDRIVE_TO))
        .cloned()
        .collect();
    out.push(string_header(HEADER_REDRIVE_TO, name));
    out
}

/// Where a dead letter came from and how its deliveries went.
pub(crate) struct DeadLetterOrigin<'a> {
    pub subscription: &'a str,
    pub topic: &'a str,
    pub partition: u32,
    pub offset: u64,
    pub attempts: u32,
    pub last_error: Option<&'a str>,
    pub history: Option<&'a str>,
}

/// The headers of a record's dead-letter copy: its own, less any earlier origin,
/// routing and delivery headers, plus its origin and delivery history.
pub(crate) fn dead_letter_headers(
    headers: &[RecordHeader],
    origin: &DeadLetterOrigin<'_>,
) -> Vec<RecordHeader> {
    let mut out: Vec<RecordHeader> = headers
        .iter()
        .filter(|h| {
            let origin_header = h.key.len() >= ORIGIN_PREFIX.len()
                && h.key[..ORIGIN_PREFIX.len()].eq_ignore_ascii_case(ORIGIN_PREFIX.as_bytes());
            !origin_header
                && !named(h, HEADER_REDRIVE_TO)
                && !named(h, HEADER_ATTEMPTS)
                && !named(h, HEADER_LAST_ERROR)
                && !named(h, HEADER_DELIVERY_HISTORY)
        })
        .cloned()
        .collect();
    out.push(string_header(
        HEADER_ORIGIN_SUBSCRIPTION,
        origin.subscription,
    ));
    out.push(string_header(HEADER_ORIGIN_TOPIC, origin.topic));
    out.push(string_header(HEADER_ORIGIN_PARTITION, origin.partition));
    out.push(string_header(HEADER_ORIGIN_OFFSET, origin.offset));
    if let Some(h) = origin.history {
        out.push(string_header(HEADER_DELIVERY_HISTORY, h));
    }
    out.push(string_header(HEADER_ATTEMPTS, origin.attempts));
    out.push(string_header(
        HEADER_LAST_ERROR,
        origin.last_error.unwrap_or(""),
    ));
    out
}

/// A dead-letter copy without the headers that can be long (history, last error), for
/// a record that is too large with them.
pub(crate) fn without_long_headers(headers: &mut Vec<RecordHeader>) {
    headers.retain(|h| !named(h, HEADER_DELIVERY_HISTORY) && !named(h, HEADER_LAST_ERROR));
}

fn string_header(name: &str, value: impl ToString) -> RecordHeader {
    RecordHeader {
        key: Bytes::from(name.to_string()),
        value: Some(Bytes::from(value.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(k: &str, v: &str) -> RecordHeader {
        string_header(k, v)
    }

    fn keys(hs: &[RecordHeader]) -> Vec<String> {
        hs.iter()
            .map(|h| String::from_utf8_lossy(&h.key).into_owned())
            .collect()
    }

    #[test]
    fn a_dead_letter_copy_replaces_earlier_origin_and_delivery_headers() {
        let own = [
            h("trace", "1"),
            h("ferry-origin-topic", "old"),
            h("Ferry-Attempts", "9"),
            h("ferry-redrive-subscription", "s"),
        ];
        let origin = DeadLetterOrigin {
            subscription: "s",
            topic: "t",
            partition: 2,
            offset: 7,
            attempts: 3,
            last_error: Some("boom"),
            history: None,
        };
        let out = dead_letter_headers(&own, &origin);
        assert_eq!(
            keys(&out),
            [
                "trace",
                HEADER_ORIGIN_SUBSCRIPTION,
                HEADER_ORIGIN_TOPIC,
                HEADER_ORIGIN_PARTITION,
                HEADER_ORIGIN_OFFSET,
                HEADER_ATTEMPTS,
                HEADER_LAST_ERROR
            ]
        );
    }

    #[test]
    fn a_redriven_copy_is_routed_to_one_subscription_only() {
        let out = redrive_headers(&[h("a", "1"), h("FERRY-REDRIVE-SUBSCRIPTION", "x")], "s");
        assert_eq!(keys(&out), ["a", HEADER_REDRIVE_TO]);
        assert_eq!(out[1].value.as_deref(), Some(&b"s"[..]));
    }
}
