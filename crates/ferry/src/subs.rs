//! The `ferry sub` commands: queue subscriptions over the HTTP API.

use crate::cli::{SubCommand, SubSettings};
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
const DESCRIBE_FIELDS: [&str; 22] = [
    "name",
    "topic",
    "mode",
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

fn print_subscription(s: &Value) -> anyhow::Result<()> {
    let mut pairs: Vec<(String, String)> = DESCRIBE_FIELDS
        .iter()
        .map(|k| (k.to_string(), cell(&s[*k])))
        .collect();
    if let Value::Object(m) = s {
        for (k, v) in m {
            if k != "partitions" && !DESCRIBE_FIELDS.contains(&k.as_str()) {
                pairs.push((k.clone(), cell(v)));
            }
        }
    }
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
            client,
        } => {
            let mut body = settings_json(&settings)?;
            body.insert("name".into(), Value::from(name));
            body.insert("topic".into(), Value::from(topic));
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
            client,
        } => {
            let body = settings_json(&settings)?;
            if body.is_empty() {
                bail!("nothing to change: give a setting such as --visibility-timeout-ms or --max-deliveries");
            }
            let s = Client::new(&client.url)
                .update_subscription(&name, &Value::Object(body))
                .await?;
            if client.json {
                output::json(&s)?;
            } else {
                print_subscription(&s)?;
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
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::position;
    use serde_json::json;

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
