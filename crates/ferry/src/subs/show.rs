//! A subscription as `describe` and `update` print it: its fields, its push settings and
//! dispatcher numbers, then each partition's progress.

use super::{cell, rows, time_cell};
use crate::output;
use serde_json::{Map, Value};

/// The fields `describe` prints first, in this order; any others follow.
const DESCRIBE_FIELDS: [&str; 23] = [
    "name",
    "topic",
    "mode",
    "paused",
    "ordering",
    "filter",
    "visibility_timeout_ms",
    "max_deliveries",
    "dead_letter_topic",
    "retry",
    "max_in_flight",
    "max_in_flight_per_consumer",
    "created_at_ms",
    "backlog",
    "oldest_unacked_age_ms",
    "in_flight",
    "waiting",
    "delayed",
    "dead_letter_pending",
    "dead_lettered",
    "delivered",
    "redelivered",
    "acked",
];

/// Push settings `describe` prints first, in this order; any others follow.
const PUSH_FIELDS: [&str; 15] = [
    "url",
    "method",
    "headers",
    "payload",
    "timeout_ms",
    "concurrency",
    "rate_limit_per_s",
    "max_age_ms",
    "retry_statuses",
    "breaker",
    "follow_redirects",
    "secret",
    "previous_secret",
    "previous_secret_expires_at_ms",
    "delivery_log_retention_ms",
];

/// Live numbers of a push subscription's dispatcher, in this order; any others follow.
const PUSH_STATUS_FIELDS: [&str; 10] = [
    "breaker",
    "breaker_changed_at",
    "window_calls",
    "window_failures",
    "in_flight",
    "delivered",
    "retried",
    "dead_lettered",
    "last_status",
    "last_error",
];

/// `prefix.key  value` pairs of an object, `first` keys in order, then the others.
fn prefixed_pairs(
    prefix: &str,
    obj: &Map<String, Value>,
    first: &[&str],
    show: impl Fn(&str, &Value) -> String,
) -> Vec<(String, String)> {
    let rest = obj
        .keys()
        .map(String::as_str)
        .filter(|k| !first.contains(k));
    first
        .iter()
        .copied()
        .filter(|k| obj.contains_key(*k))
        .chain(rest)
        .map(|k| (format!("{prefix}.{k}"), show(k, &obj[k])))
        .collect()
}

fn push_pairs(s: &Value) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    if let Value::Object(p) = &s["push"] {
        pairs.extend(prefixed_pairs("push", p, &PUSH_FIELDS, |k, v| {
            match (k, v) {
                ("headers", Value::Object(h)) if !h.is_empty() => h
                    .iter()
                    .map(|(n, v)| format!("{n}: {}", cell(v)))
                    .collect::<Vec<_>>()
                    .join(", "),
                ("headers", _) => "-".into(),
                ("previous_secret_expires_at_ms", v) => time_cell(v),
                (_, v) => cell(v),
            }
        }));
    }
    if let Value::Object(st) = &s["push_status"] {
        pairs.extend(prefixed_pairs(
            "push_status",
            st,
            &PUSH_STATUS_FIELDS,
            |k, v| match k {
                "breaker_changed_at" => time_cell(v),
                _ => cell(v),
            },
        ));
    }
    pairs
}

pub(super) fn print_subscription(s: &Value) -> anyhow::Result<()> {
    let mut pairs: Vec<(String, String)> = DESCRIBE_FIELDS
        .iter()
        .map(|k| (k.to_string(), cell(&s[*k])))
        .collect();
    if let Value::Object(m) = s {
        for (k, v) in m {
            if !["partitions", "push", "push_status"].contains(&k.as_str())
                && !DESCRIBE_FIELDS.contains(&k.as_str())
            {
                pairs.push((k.clone(), cell(v)));
            }
        }
    }
    pairs.extend(push_pairs(s));
    output::pairs(&pairs)?;
    output::line("")?;
    output::table(
        &["PARTITION", "ACK_FLOOR", "HEAD", "LATEST", "BACKLOG"],
        &rows(
            &s["partitions"],
            &["partition", "ack_floor", "head", "latest", "backlog"],
        ),
    )?;
    Ok(())
}

/// The signing secret of an answer that shows it (once, when the server made it).
fn secret_shown_once(s: &Value) -> Option<&str> {
    if s["push"]["secret_shown_once"] == Value::Bool(true) {
        s["push"]["secret"].as_str()
    } else {
        None
    }
}

pub(super) fn print_secret_shown_once(s: &Value) -> anyhow::Result<()> {
    if let Some(secret) = secret_shown_once(s) {
        output::line(&format!("Signing secret (shown once): {secret}"))?;
    }
    Ok(())
}
