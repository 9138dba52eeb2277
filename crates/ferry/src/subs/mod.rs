//! The `ferry sub` commands: queue and push subscriptions over the HTTP API.
//!
//! One function per subcommand, grouped by what they act on: `manage` (create, list,
//! describe, update, delete), `records` (pull, ack, extend, nack, seek, purge,
//! redrive) and `push` (pause, resume, retry, rotate-secret, deliveries). `flags`
//! turns the settings flags into the API's JSON; `show` prints a subscription.

mod flags;
mod manage;
mod push;
mod records;
mod show;

use crate::cli::SubCommand;
use crate::output;
use crate::time::parse_time_ms;
use anyhow::Context;
use serde_json::{json, Value};

pub async fn sub(cmd: SubCommand) -> anyhow::Result<()> {
    match cmd {
        SubCommand::Create(a) => manage::create(a).await,
        SubCommand::List(client) => manage::list(client).await,
        SubCommand::Describe(a) => manage::describe(a).await,
        SubCommand::Update(a) => manage::update(a).await,
        SubCommand::Delete(a) => manage::delete(a).await,
        SubCommand::Pull(a) => records::pull(a).await,
        SubCommand::Ack(a) => records::ack(a).await,
        SubCommand::Extend(a) => records::extend(a).await,
        SubCommand::Nack(a) => records::nack(a).await,
        SubCommand::Seek(a) => records::seek(a).await,
        SubCommand::Purge(a) => records::purge(a).await,
        SubCommand::Redrive(a) => records::redrive(a).await,
        SubCommand::Pause(a) => push::pause(a).await,
        SubCommand::Resume(a) => push::resume(a).await,
        SubCommand::Retry(a) => push::retry(a).await,
        SubCommand::RotateSecret(a) => push::rotate_secret(a).await,
        SubCommand::Deliveries(a) => push::deliveries(a).await,
    }
}

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

/// Rows of `table`, one per element of `items`: the cells of `fields`.
fn rows(items: &Value, fields: &[&str]) -> Vec<Vec<String>> {
    items
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|item| fields.iter().map(|k| cell(&item[*k])).collect())
        .collect()
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
