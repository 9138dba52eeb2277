//! `ferry source`: Postgres sources through a running server's API.

use crate::cli::{SourceCommand, SourceUpdateFlags};
use crate::output;
use crate::security::q;
use ferry_client::Client;
use reqwest::Method;
use serde_json::{json, Map, Value};

fn put(body: &mut Map<String, Value>, key: &str, v: Option<impl Into<Value>>) {
    if let Some(v) = v {
        body.insert(key.into(), v.into());
    }
}

fn update_body(f: SourceUpdateFlags, body: &mut Map<String, Value>) {
    put(body, "topic_template", f.topic_template);
    put(body, "format", f.format);
    if !f.operations.is_empty() {
        body.insert("operations".into(), json!(f.operations));
    }
    put(body, "tombstones", f.tombstones);
    put(body, "messages_topic_template", f.messages_topic_template);
    put(body, "max_slot_wal_bytes", f.max_slot_wal_bytes);
}

/// `--table` names, with the settings `--table-where`, `--table-topic` and `--table-key`
/// give some of them: a name alone, or an object.
fn tables(f: &crate::cli::SourceCreateFlags) -> anyhow::Result<Value> {
    let mut settings: Vec<(String, Map<String, Value>)> =
        f.tables.iter().map(|t| (t.clone(), Map::new())).collect();
    let flags = [
        ("--table-where", "where", &f.table_where),
        ("--table-topic", "topic", &f.table_topic),
        ("--table-key", "key", &f.table_key),
    ];
    for (flag, field, values) in flags {
        for v in values {
            let Some((table, setting)) = v.split_once('=') else {
                anyhow::bail!("{flag} takes SCHEMA.TABLE=VALUE, not '{v}'");
            };
            let Some((_, m)) = settings.iter_mut().find(|(t, _)| t == table) else {
                anyhow::bail!("{flag} names table '{table}': name it with --table {table} too");
            };
            let value = if field == "key" {
                json!(setting.split(',').map(str::trim).collect::<Vec<_>>())
            } else {
                json!(setting)
            };
            m.insert(field.into(), value);
        }
    }
    Ok(Value::Array(
        settings
            .into_iter()
            .map(|(t, mut m)| {
                if m.is_empty() {
                    json!(t)
                } else {
                    m.insert("table".into(), json!(t));
                    Value::Object(m)
                }
            })
            .collect(),
    ))
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn row(s: &Value) -> Vec<String> {
    let st = &s["status"];
    vec![
        text(&s["name"]),
        text(&st["state"]),
        text(&st["position"]),
        text(&st["lag_bytes"]),
        text(&st["records"]),
        text(&st["last_error"]),
    ]
}

fn show(s: &Value) -> anyhow::Result<()> {
    let st = &s["status"];
    let mut pairs: Vec<(String, String)> = [
        "name",
        "url",
        "publication",
        "slot",
        "snapshot",
        "snapshot_done",
        "format",
        "topic_template",
        "paused",
    ]
    .iter()
    .map(|k| (k.to_string(), text(&s[*k])))
    .collect();
    let tables = s["tables"].as_array().map_or(0, |t| t.len());
    pairs.push((
        "tables".into(),
        if tables == 0 {
            "all".into()
        } else {
            s["tables"]
                .as_array()
                .into_iter()
                .flatten()
                .map(text)
                .collect::<Vec<_>>()
                .join(", ")
        },
    ));
    pairs.push((
        "topics".into(),
        s["topics"]
            .as_array()
            .into_iter()
            .flatten()
            .map(text)
            .collect::<Vec<_>>()
            .join(", "),
    ));
    for k in [
        "state",
        "position",
        "lag_bytes",
        "capture_lag_ms",
        "slot_wal_bytes",
        "slot_wal_warning",
        "records",
        "transactions",
        "skipped",
        "snapshot_rows",
        "last_error",
    ] {
        pairs.push((k.to_string(), text(&st[k])));
    }
    for b in s["backfills"].as_array().into_iter().flatten() {
        pairs.push((
            format!("backfill {}", b["id"]),
            format!(
                "{} {} ({} rows){}",
                text(&b["table"]),
                text(&b["state"]),
                b["rows"],
                b["error"]
                    .as_str()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ),
        ));
    }
    Ok(output::pairs(&pairs)?)
}

pub async fn source(cmd: SourceCommand) -> anyhow::Result<()> {
    match cmd {
        SourceCommand::Create(a) => {
            let a = *a;
            let f = a.flags;
            let mut body = Map::new();
            body.insert("name".into(), json!(a.name));
            body.insert("url".into(), json!(f.pg_url));
            if !f.tables.is_empty() {
                body.insert("tables".into(), tables(&f)?);
            }
            put(&mut body, "publication", f.publication);
            put(&mut body, "slot", f.slot);
            put(&mut body, "topic_partitions", f.topic_partitions);
            put(&mut body, "snapshot", f.snapshot);
            if let Some(table) = f.outbox_table {
                let mut o = Map::new();
                o.insert("table".into(), json!(table));
                put(&mut o, "topic_template", f.outbox_topic_template);
                body.insert("outbox".into(), Value::Object(o));
            }
            update_body(f.update, &mut body);
            let c: Client = a.client.client()?;
            let v = c
                .call(Method::POST, "/v1/sources", Some(&Value::Object(body)))
                .await?;
            output::answer_line(a.client.json, &v, || {
                format!(
                    "Created source {} (slot {}, publication {}).",
                    a.name,
                    text(&v["slot"]),
                    text(&v["publication"])
                )
            })
        }
        SourceCommand::List(client) => {
            let v = client
                .client()?
                .call(Method::GET, "/v1/sources", None)
                .await?;
            output::answer(client.json, &v, || {
                let rows: Vec<Vec<String>> = v["sources"]
                    .as_array()
                    .map(|ss| ss.iter().map(row).collect())
                    .unwrap_or_default();
                Ok(output::table(
                    &[
                        "NAME",
                        "STATE",
                        "POSITION",
                        "LAG BYTES",
                        "RECORDS",
                        "LAST ERROR",
                    ],
                    &rows,
                )?)
            })
        }
        SourceCommand::Describe(a) => {
            let v = a
                .client
                .client()?
                .call(Method::GET, &format!("/v1/sources/{}", q(&a.name)), None)
                .await?;
            output::answer(a.client.json, &v, || show(&v))
        }
        SourceCommand::Update(a) => {
            let mut body = Map::new();
            update_body(a.flags, &mut body);
            if body.is_empty() {
                anyhow::bail!(
                    "nothing to change: give at least one flag (see ferry source update --help)"
                );
            }
            let v = a
                .client
                .client()?
                .call(
                    Method::PATCH,
                    &format!("/v1/sources/{}", q(&a.name)),
                    Some(&Value::Object(body)),
                )
                .await?;
            output::answer_line(a.client.json, &v, || format!("Updated source {}.", a.name))
        }
        SourceCommand::Delete(a) => {
            let v = a
                .client
                .client()?
                .call(Method::DELETE, &format!("/v1/sources/{}", q(&a.name)), None)
                .await?;
            if let Some(w) = v["warning"].as_str() {
                eprintln!("warning: {w}");
            }
            output::answer_line(a.client.json, &v, || format!("Deleted source {}.", a.name))
        }
        SourceCommand::Backfill(a) => {
            let mut body = Map::new();
            body.insert("table".into(), json!(a.flags.table));
            put(&mut body, "where", a.flags.row_filter.clone());
            let v = a
                .client
                .client()?
                .call(
                    Method::POST,
                    &format!("/v1/sources/{}/backfills", q(&a.name)),
                    Some(&Value::Object(body)),
                )
                .await?;
            output::answer_line(a.client.json, &v, || {
                format!(
                    "Backfill {} of {} asked for; see its progress with ferry source describe {}.",
                    v["id"], a.flags.table, a.name
                )
            })
        }
        SourceCommand::CancelBackfill(a) => {
            let v = a
                .client
                .client()?
                .call(
                    Method::DELETE,
                    &format!("/v1/sources/{}/backfills/{}", q(&a.name), a.flags.id),
                    None,
                )
                .await?;
            output::answer_line(a.client.json, &v, || {
                format!("Backfill {} is {}.", a.flags.id, text(&v["state"]))
            })
        }
        SourceCommand::Pause(a) => pause_or_resume(a, "pause", "Paused").await,
        SourceCommand::Resume(a) => pause_or_resume(a, "resume", "Resumed").await,
    }
}

async fn pause_or_resume(a: crate::cli::Named, verb: &str, done: &str) -> anyhow::Result<()> {
    let v = a
        .client
        .client()?
        .call(
            Method::POST,
            &format!("/v1/sources/{}/{verb}", q(&a.name)),
            None,
        )
        .await?;
    output::answer_line(a.client.json, &v, || format!("{done} source {}.", a.name))
}
