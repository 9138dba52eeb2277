//! `sub pull`, `ack`, `extend`, `nack`, `seek`, `purge` and `redrive`: the records of a
//! subscription.

use super::{cell, position};
use crate::cli::{AckFlags, ExtendFlags, NackFlags, Named, PullFlags, RedriveFlags, SeekFlags};
use crate::commands::text_of;
use crate::output;
use anyhow::{bail, Context};
use serde_json::{json, Map, Value};

pub(super) async fn pull(a: Named<PullFlags>) -> anyhow::Result<()> {
    let f = a.flags;
    let mut body = Map::new();
    body.insert("max_records".into(), Value::from(f.max_records));
    if let Some(w) = f.wait_ms {
        body.insert("wait_ms".into(), Value::from(w));
    }
    if let Some(c) = f.consumer {
        body.insert("consumer".into(), Value::from(c));
    }
    if let Some(v) = f.visibility_timeout_ms {
        body.insert("visibility_timeout_ms".into(), Value::from(v));
    }
    let api = a.client.client()?;
    let records = api.pull(&a.name, &Value::Object(body)).await?;
    print_pulled(&records, a.client.json)?;
    if f.ack {
        let ids = lease_ids(&records);
        let acked = if ids.is_empty() {
            Value::from(0)
        } else {
            api.ack(&a.name, &ids)
                .await
                .context("the records were printed but not acknowledged")?["acked"]
                .clone()
        };
        if !a.client.json {
            output::line(&format!("acked {}", cell(&acked)))?;
        }
    }
    Ok(())
}

/// Pulled records: one JSON object a line with `--json`, else a table.
fn print_pulled(records: &[Value], json_out: bool) -> anyhow::Result<()> {
    if json_out {
        for r in records {
            output::line(&r.to_string())?;
        }
        return Ok(());
    }
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
    Ok(())
}

fn lease_ids(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .filter_map(|r| r["lease_id"].as_str().map(str::to_string))
        .collect()
}

pub(super) async fn ack(a: Named<AckFlags>) -> anyhow::Result<()> {
    let v = a.client.client()?.ack(&a.name, &a.flags.lease_ids).await?;
    output::answer_line(a.client.json, &v, || format!("acked {}", cell(&v["acked"])))
}

pub(super) async fn extend(a: Named<ExtendFlags>) -> anyhow::Result<()> {
    let v = a
        .client
        .client()?
        .extend(&a.name, &a.flags.lease_ids, a.flags.visibility_timeout_ms)
        .await?;
    output::answer_line(a.client.json, &v, || {
        let at = v["lease_expires_at"].as_u64().unwrap_or(0);
        format!(
            "extended {} lease(s) to {}",
            a.flags.lease_ids.len(),
            output::rfc3339_ms(at)
        )
    })
}

pub(super) async fn nack(a: Named<NackFlags>) -> anyhow::Result<()> {
    let v = a
        .client
        .client()?
        .nack(
            &a.name,
            &a.flags.lease_ids,
            a.flags.delay_ms,
            a.flags.error.as_deref(),
        )
        .await?;
    output::answer_line(a.client.json, &v, || {
        format!("nacked {}", cell(&v["nacked"]))
    })
}

pub(super) async fn seek(a: Named<SeekFlags>) -> anyhow::Result<()> {
    let body = match (position("--to", &a.flags.to)?, a.flags.partition) {
        (Value::Object(mut m), Some(p)) if m.contains_key("offset") => {
            m.insert("partition".into(), Value::from(p));
            Value::Object(m)
        }
        (_, Some(_)) => bail!("--partition works only with --to offset:N"),
        (s @ Value::String(_), None) => json!({ "to": s }),
        (other, None) => other,
    };
    let s = a.client.client()?.seek(&a.name, &body).await?;
    output::answer_line(a.client.json, &s, || {
        format!(
            "Moved subscription {} to {}; backlog {}.",
            a.name,
            a.flags.to,
            cell(&s["backlog"])
        )
    })
}

pub(super) async fn purge(a: Named) -> anyhow::Result<()> {
    let s = a.client.client()?.purge(&a.name).await?;
    output::answer_line(a.client.json, &s, || {
        format!(
            "Purged subscription {}; backlog {}.",
            a.name,
            cell(&s["backlog"])
        )
    })
}

pub(super) async fn redrive(a: Named<RedriveFlags>) -> anyhow::Result<()> {
    let v = a
        .client
        .client()?
        .redrive(&a.name, a.flags.max_records)
        .await?;
    output::answer_line(a.client.json, &v, || {
        format!("redriven {}", cell(&v["redriven"]))
    })
}
