//! The `ferry sub` commands: queue subscriptions over the HTTP API.

use crate::cli::{PushSettings, SubCommand, SubSettings};
use crate::commands::text_of;
use crate::output;
use crate::time::parse_time_ms;
use anyhow::{bail, Context};
use ferry_client::Client;
use serde_json::{json, Map, Value};

/// `earliest`, `latest`, `offset:N` or `time:T` as the API's position: `"earliest"`,
/// `"latest"`, `{"offset": n}` or `{"timestamp": ms}`.
fn position(flag: &str, s: &str) -> anyhow::Result<Value> {
    let parsed = match s {
        "earliest" | "latest" => Some(Value::from(s)),
        _ => {
            if let Some(n) = s.strip_prefix("offset:") {
                n.parse::<u64>().ok().map(|o| json!({ "offset": o }))
            } else if let Some(t) = s.strip_prefix("time:") {
                parse_time_ms(t)
                    .filter(|ms| *ms >= 0)
                    .map(|ms| json!({ "timestamp": ms }))
            } else {
                None
            }
        }
    };
    parsed.with_context(|| {
        format!("{flag} must be earliest, latest, offset:N, or time:T with T in milliseconds since 1970 or a time such as 2026-11-23T10:00:00Z; got {s:?}")
    })
}

fn json_flag(flag: &str, text: &str) -> anyhow::Result<Value> {
    serde_json::from_str(text).with_context(|| format!("{flag} is not valid JSON: {text:?}"))
}

fn settings_json(s: &SubSettings) -> anyhow::Result<Map<String, Value>> {
    let mut m = Map::new();
    if let Some(f) = &s.filter {
        m.insert("filter".into(), json_flag("--filter", f)?);
    }
    if let Some(r) = &s.retry {
        m.insert("retry".into(), json_flag("--retry", r)?);
    }
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            m.insert(k.to_string(), v);
        }
    };
    put(
        "visibility_timeout_ms",
        s.visibility_timeout_ms.map(Value::from),
    );
    put("max_deliveries", s.max_deliveries.map(Value::from));
    put(
        "dead_letter_topic",
        s.dead_letter_topic.clone().map(Value::from),
    );
    put("max_in_flight", s.max_in_flight.map(Value::from));
    put(
        "max_in_flight_per_consumer",
        s.max_in_flight_per_consumer.map(Value::from),
    );
    Ok(m)
}

/// `Name: value` of `--push-header` as its name and value, both trimmed.
fn header_flag(h: &str) -> anyhow::Result<(String, String)> {
    match h.split_once(':') {
        Some((n, v)) if !n.trim().is_empty() => Ok((n.trim().to_string(), v.trim().to_string())),
        _ => bail!("--push-header must be 'Name: value', got {h:?}"),
    }
}

fn push_given(f: &PushSettings) -> bool {
    f.push_url.is_some()
        || f.push_method.is_some()
        || !f.push_headers.is_empty()
        || f.push_timeout_ms.is_some()
        || f.push_concurrency.is_some()
        || f.push_rate_limit.is_some()
        || f.push_payload.is_some()
        || f.push_max_age_ms.is_some()
        || f.push_secret.is_some()
        || f.push_follow_redirects.is_some()
        || f.push_breaker.is_some()
}

/// Writes the `--push-*` flags given into `push`, the API's push object: empty for
/// `create`, the current one for `update`. Headers are set one by one (a name given
/// with no value removes that header) and `--push-breaker` sets only the breaker fields
/// it names; every other flag replaces its field.
fn merge_push(push: &mut Map<String, Value>, f: &PushSettings) -> anyhow::Result<()> {
    if let Some(u) = &f.push_url {
        push.insert("url".into(), Value::from(u.clone()));
    }
    if let Some(m) = &f.push_method {
        let m = m.to_ascii_uppercase();
        if !["POST", "PUT"].contains(&m.as_str()) {
            bail!("--push-method must be POST or PUT, got {m:?}");
        }
        push.insert("method".into(), Value::from(m));
    }
    if !f.push_headers.is_empty() {
        let mut headers = match push.remove("headers") {
            Some(Value::Object(h)) => h,
            _ => Map::new(),
        };
        for h in &f.push_headers {
            let (name, value) = header_flag(h)?;
            headers.retain(|k, _| !k.eq_ignore_ascii_case(&name));
            if !value.is_empty() {
                headers.insert(name, Value::from(value));
            }
        }
        push.insert("headers".into(), Value::Object(headers));
    }
    if let Some(given) = &f.push_payload {
        let p = given.replace('-', "_");
        if !["raw", "cloudevents_binary", "cloudevents_structured"].contains(&p.as_str()) {
            bail!("--push-payload must be raw, cloudevents-binary or cloudevents-structured, got {given:?}");
        }
        push.insert("payload".into(), Value::from(p));
    }
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            push.insert(k.to_string(), v);
        }
    };
    put("timeout_ms", f.push_timeout_ms.map(Value::from));
    put("concurrency", f.push_concurrency.map(Value::from));
    put("secret", f.push_secret.clone().map(Value::from));
    put("follow_redirects", f.push_follow_redirects.map(Value::from));
    // 0 lifts these limits: the API has them absent.
    for (k, v) in [
        ("rate_limit_per_s", f.push_rate_limit.map(u64::from)),
        ("max_age_ms", f.push_max_age_ms),
    ] {
        match v {
            Some(0) => {
                push.remove(k);
            }
            Some(n) => {
                push.insert(k.into(), Value::from(n));
            }
            None => {}
        }
    }
    if let Some(b) = &f.push_breaker {
        let given = json_flag("--push-breaker", b)?;
        let Value::Object(given) = given else {
            bail!(
                "--push-breaker must be a JSON object, e.g. '{{\"cooldown_ms\":60000}}'; got {b:?}"
            );
        };
        let mut breaker = match push.remove("breaker") {
            Some(Value::Object(m)) => m,
            _ => Map::new(),
        };
        breaker.extend(given);
        push.insert("breaker".into(), Value::Object(breaker));
    }
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

fn print_secret_shown_once(s: &Value) -> anyhow::Result<()> {
    if let Some(secret) = secret_shown_once(s) {
        output::line(&format!("Signing secret (shown once): {secret}"))?;
    }
    Ok(())
}

/// Milliseconds since 1970 as RFC 3339; anything else as a cell.
fn time_cell(v: &Value) -> String {
    match v.as_u64() {
        Some(ms) => output::rfc3339_ms(ms),
        None => cell(v),
    }
}

/// A field of the API's answer as one table cell: strings bare, absent as `-`.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn sub_rows(subs: &[Value]) -> Vec<Vec<String>> {
    subs.iter()
        .map(|s| {
            [
                "name",
                "topic",
                "backlog",
                "in_flight",
                "delayed",
                "dead_lettered",
            ]
            .iter()
            .map(|k| cell(&s[*k]))
            .collect()
        })
        .collect()
}

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

fn print_subscription(s: &Value) -> anyhow::Result<()> {
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
    let rows: Vec<Vec<String>> = s["partitions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|p| {
            ["partition", "ack_floor", "head", "latest", "backlog"]
                .iter()
                .map(|k| cell(&p[*k]))
                .collect()
        })
        .collect();
    output::table(
        &["PARTITION", "ACK_FLOOR", "HEAD", "LATEST", "BACKLOG"],
        &rows,
    )?;
    Ok(())
}

fn lease_ids(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .filter_map(|r| r["lease_id"].as_str().map(str::to_string))
        .collect()
}

pub async fn sub(cmd: SubCommand) -> anyhow::Result<()> {
    match cmd {
        SubCommand::Create {
            name,
            topic,
            start,
            ordering,
            settings,
            push,
            client,
        } => {
            let mut body = settings_json(&settings)?;
            body.insert("name".into(), Value::from(name));
            body.insert("topic".into(), Value::from(topic));
            if push_given(&push) {
                if push.push_url.is_none() {
                    bail!("--push-url is required for a push subscription: the other --push-* flags need it");
                }
                let mut p = Map::new();
                merge_push(&mut p, &push)?;
                body.insert("push".into(), Value::Object(p));
            }
            if let Some(s) = &start {
                body.insert("start".into(), position("--start", s)?);
            }
            if let Some(o) = ordering {
                if !["none", "key"].contains(&o.as_str()) {
                    bail!("--ordering must be none or key, got {o:?}");
                }
                body.insert("ordering".into(), Value::from(o));
            }
            let s = Client::new(&client.url)
                .create_subscription(&Value::Object(body))
                .await?;
            if client.json {
                output::json(&s)?;
            } else if s["push"].is_object() {
                output::line(&format!(
                    "Created push subscription {} on topic {}: {} {}.",
                    cell(&s["name"]),
                    cell(&s["topic"]),
                    cell(&s["push"]["method"]),
                    cell(&s["push"]["url"])
                ))?;
                print_secret_shown_once(&s)?;
            } else {
                output::line(&format!(
                    "Created subscription {} on topic {}.",
                    cell(&s["name"]),
                    cell(&s["topic"])
                ))?;
            }
        }
        SubCommand::List { client } => {
            let v = Client::new(&client.url).list_subscriptions().await?;
            if client.json {
                output::json(&v)?;
            } else {
                let subs = v["subscriptions"].as_array().cloned().unwrap_or_default();
                output::table(
                    &[
                        "SUBSCRIPTION",
                        "TOPIC",
                        "BACKLOG",
                        "IN_FLIGHT",
                        "DELAYED",
                        "DEAD_LETTERED",
                    ],
                    &sub_rows(&subs),
                )?;
            }
        }
        SubCommand::Describe { name, client } => {
            let s = Client::new(&client.url)
                .describe_subscription(&name)
                .await?;
            if client.json {
                output::json(&s)?;
            } else {
                print_subscription(&s)?;
            }
        }
        SubCommand::Update {
            name,
            settings,
            push,
            client,
        } => {
            let api = Client::new(&client.url);
            let mut body = settings_json(&settings)?;
            if push_given(&push) {
                // The server replaces the whole push object: start from the current one.
                let current = api.describe_subscription(&name).await?;
                let Value::Object(mut p) = current["push"].clone() else {
                    bail!("subscription '{name}' is not a push subscription: --push-* flags change push subscriptions only, and a subscription's mode cannot change");
                };
                // Shown redacted; sent without them, the server keeps the stored secrets.
                for k in [
                    "secret",
                    "previous_secret",
                    "previous_secret_expires_at_ms",
                    "secret_shown_once",
                ] {
                    p.remove(k);
                }
                merge_push(&mut p, &push)?;
                body.insert("push".into(), Value::Object(p));
            }
            if body.is_empty() {
                bail!("nothing to change: give a setting such as --visibility-timeout-ms, --max-deliveries or --push-timeout-ms");
            }
            let s = api.update_subscription(&name, &Value::Object(body)).await?;
            if client.json {
                output::json(&s)?;
            } else {
                print_subscription(&s)?;
                print_secret_shown_once(&s)?;
            }
        }
        SubCommand::Delete { name, client } => {
            Client::new(&client.url).delete_subscription(&name).await?;
            if client.json {
                output::json(&json!({ "deleted": name }))?;
            } else {
                output::line(&format!("Deleted subscription {name}."))?;
            }
        }
        SubCommand::Pull {
            name,
            max_records,
            wait_ms,
            consumer,
            visibility_timeout_ms,
            ack,
            client,
        } => {
            let mut body = Map::new();
            body.insert("max_records".into(), Value::from(max_records));
            if let Some(w) = wait_ms {
                body.insert("wait_ms".into(), Value::from(w));
            }
            if let Some(c) = consumer {
                body.insert("consumer".into(), Value::from(c));
            }
            if let Some(v) = visibility_timeout_ms {
                body.insert("visibility_timeout_ms".into(), Value::from(v));
            }
            let api = Client::new(&client.url);
            let records = api.pull(&name, &Value::Object(body)).await?;
            if client.json {
                for r in &records {
                    output::line(&r.to_string())?;
                }
            } else {
                let rows: Vec<Vec<String>> = records
                    .iter()
                    .map(|r| {
                        vec![
                            cell(&r["lease_id"]),
                            cell(&r["attempt"]),
                            cell(&r["partition"]),
                            cell(&r["offset"]),
                            text_of(&r["key"]),
                            text_of(&r["value"]),
                        ]
                    })
                    .collect();
                output::table(
                    &["LEASE_ID", "ATTEMPT", "PARTITION", "OFFSET", "KEY", "VALUE"],
                    &rows,
                )?;
            }
            if ack {
                let ids = lease_ids(&records);
                let acked = if ids.is_empty() {
                    Value::from(0)
                } else {
                    api.ack(&name, &ids)
                        .await
                        .context("the records were printed but not acknowledged")?["acked"]
                        .clone()
                };
                if !client.json {
                    output::line(&format!("acked {}", cell(&acked)))?;
                }
            }
        }
        SubCommand::Ack {
            name,
            lease_ids,
            client,
        } => {
            let v = Client::new(&client.url).ack(&name, &lease_ids).await?;
            if client.json {
                output::json(&v)?;
            } else {
                output::line(&format!("acked {}", cell(&v["acked"])))?;
            }
        }
        SubCommand::Extend {
            name,
            lease_ids,
            visibility_timeout_ms,
            client,
        } => {
            let v = Client::new(&client.url)
                .extend(&name, &lease_ids, visibility_timeout_ms)
                .await?;
            if client.json {
                output::json(&v)?;
            } else {
                let at = v["lease_expires_at"].as_u64().unwrap_or(0);
                output::line(&format!(
                    "extended {} lease(s) to {}",
                    lease_ids.len(),
                    output::rfc3339_ms(at)
                ))?;
            }
        }
        SubCommand::Nack {
            name,
            lease_ids,
            delay_ms,
            error,
            client,
        } => {
            let v = Client::new(&client.url)
                .nack(&name, &lease_ids, delay_ms, error.as_deref())
                .await?;
            if client.json {
                output::json(&v)?;
            } else {
                output::line(&format!("nacked {}", cell(&v["nacked"])))?;
            }
        }
        SubCommand::Seek {
            name,
            to,
            partition,
            client,
        } => {
            let body = match (position("--to", &to)?, partition) {
                (Value::Object(mut m), Some(p)) if m.contains_key("offset") => {
                    m.insert("partition".into(), Value::from(p));
                    Value::Object(m)
                }
                (_, Some(_)) => bail!("--partition works only with --to offset:N"),
                (s @ Value::String(_), None) => json!({ "to": s }),
                (other, None) => other,
            };
            let s = Client::new(&client.url).seek(&name, &body).await?;
            if client.json {
                output::json(&s)?;
            } else {
                output::line(&format!(
                    "Moved subscription {name} to {to}; backlog {}.",
                    cell(&s["backlog"])
                ))?;
            }
        }
        SubCommand::Purge { name, client } => {
            let s = Client::new(&client.url).purge(&name).await?;
            if client.json {
                output::json(&s)?;
            } else {
                output::line(&format!(
                    "Purged subscription {name}; backlog {}.",
                    cell(&s["backlog"])
                ))?;
            }
        }
        SubCommand::Redrive {
            name,
            max_records,
            client,
        } => {
            let v = Client::new(&client.url).redrive(&name, max_records).await?;
            if client.json {
                output::json(&v)?;
            } else {
                output::line(&format!("redriven {}", cell(&v["redriven"])))?;
            }
        }
        SubCommand::Pause { name, client } => {
            let s = Client::new(&client.url).pause_subscription(&name).await?;
            if client.json {
                output::json(&s)?;
            } else {
                output::line(&format!(
                    "Paused subscription {name}: records wait until it is resumed."
                ))?;
            }
        }
        SubCommand::Resume { name, client } => {
            let s = Client::new(&client.url).resume_subscription(&name).await?;
            if client.json {
                output::json(&s)?;
            } else {
                output::line(&format!("Resumed subscription {name}."))?;
            }
        }
        SubCommand::Retry {
            name,
            partition,
            offset,
            client,
        } => {
            let v = Client::new(&client.url)
                .retry_record(&name, partition, offset)
                .await?;
            if client.json {
                output::json(&v)?;
            } else {
                output::line(&format!(
                    "Queued partition {partition} offset {offset} for subscription {name} again (as a copy at partition {} offset {}).",
                    cell(&v["copy"]["partition"]),
                    cell(&v["copy"]["offset"])
                ))?;
            }
        }
        SubCommand::RotateSecret {
            name,
            secret,
            previous_valid_ms,
            client,
        } => {
            let s = Client::new(&client.url)
                .rotate_secret(&name, secret.as_deref(), previous_valid_ms)
                .await?;
            if client.json {
                output::json(&s)?;
            } else {
                let until = &s["push"]["previous_secret_expires_at_ms"];
                if until.is_u64() {
                    output::line(&format!(
                        "Rotated the signing secret of subscription {name}; the previous one also signs until {}.",
                        time_cell(until)
                    ))?;
                } else {
                    output::line(&format!(
                        "Rotated the signing secret of subscription {name}."
                    ))?;
                }
                print_secret_shown_once(&s)?;
            }
        }
        SubCommand::Deliveries {
            name,
            partition,
            offset,
            limit,
            client,
        } => {
            let record = partition.zip(offset);
            let v = Client::new(&client.url)
                .deliveries(&name, record, limit)
                .await?;
            if client.json {
                output::json(&v)?;
            } else {
                let rows: Vec<Vec<String>> = v["deliveries"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|d| {
                        let mut row = vec![time_cell(&d["time"])];
                        row.extend(
                            [
                                "partition",
                                "offset",
                                "attempt",
                                "outcome",
                                "status",
                                "latency_ms",
                                "error",
                            ]
                            .iter()
                            .map(|k| cell(&d[*k])),
                        );
                        row
                    })
                    .collect();
                output::table(
                    &[
                        "TIME",
                        "PARTITION",
                        "OFFSET",
                        "ATTEMPT",
                        "OUTCOME",
                        "STATUS",
                        "LATENCY_MS",
                        "ERROR",
                    ],
                    &rows,
                )?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{merge_push, position};
    use crate::cli::PushSettings;
    use serde_json::{json, Value};

    #[test]
    fn push_flags_change_only_what_they_name() {
        let mut current = json!({
            "url": "http://a/hook",
            "method": "POST",
            "headers": {"X-Team": "billing", "Authorization": "Bearer a"},
            "timeout_ms": 10000,
            "breaker": {"failure_rate_percent": 50, "cooldown_ms": 30000},
            "payload": "raw",
            "rate_limit_per_s": 100
        });
        let flags = PushSettings {
            push_method: Some("put".into()),
            push_headers: vec!["authorization: Bearer b".into(), "X-Team:".into()],
            push_timeout_ms: Some(2000),
            push_payload: Some("cloudevents-binary".into()),
            push_follow_redirects: Some(true),
            push_rate_limit: Some(0),
            push_max_age_ms: Some(60000),
            push_breaker: Some(r#"{"cooldown_ms": 5000}"#.into()),
            ..PushSettings::default()
        };
        let Value::Object(m) = &mut current else {
            unreachable!()
        };
        merge_push(m, &flags).unwrap();
        assert_eq!(
            current,
            json!({
                "url": "http://a/hook",
                "method": "PUT",
                "headers": {"authorization": "Bearer b"},
                "timeout_ms": 2000,
                "breaker": {"failure_rate_percent": 50, "cooldown_ms": 5000},
                "payload": "cloudevents_binary",
                "follow_redirects": true,
                "max_age_ms": 60000
            })
        );
        for (bad, start) in [
            (
                PushSettings {
                    push_method: Some("GET".into()),
                    ..PushSettings::default()
                },
                "--push-method must be",
            ),
            (
                PushSettings {
                    push_headers: vec!["no colon".into()],
                    ..PushSettings::default()
                },
                "--push-header must be",
            ),
            (
                PushSettings {
                    push_payload: Some("json".into()),
                    ..PushSettings::default()
                },
                "--push-payload must be",
            ),
            (
                PushSettings {
                    push_breaker: Some("[1]".into()),
                    ..PushSettings::default()
                },
                "--push-breaker must be",
            ),
        ] {
            let e = merge_push(&mut serde_json::Map::new(), &bad)
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(start), "{e}");
        }
    }

    #[test]
    fn positions_parse_from_flags() {
        assert_eq!(position("--to", "earliest").unwrap(), json!("earliest"));
        assert_eq!(position("--to", "latest").unwrap(), json!("latest"));
        assert_eq!(
            position("--to", "offset:42").unwrap(),
            json!({"offset": 42})
        );
        assert_eq!(position("--to", "time:5").unwrap(), json!({"timestamp": 5}));
        assert_eq!(
            position("--to", "time:2026-11-23T10:00:00Z").unwrap(),
            json!({"timestamp": 1_795_428_000_000i64})
        );
        for bad in [
            "",
            "beginning",
            "offset:",
            "offset:-1",
            "time:yesterday",
            "time:-5",
        ] {
            let e = position("--start", bad).unwrap_err().to_string();
            assert!(e.starts_with("--start must be"), "{bad}: {e}");
        }
    }
}
