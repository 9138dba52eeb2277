//! `sub pull`, `ack`, `extend`, `nack`, `seek`, `purge` and `redrive`: the records of a
//! subscription.

use super::{cell, position};
use crate::cli::{AckArgs, ExtendArgs, NackArgs, NameArgs, PullArgs, RedriveArgs, SeekArgs};
use crate::commands::text_of;
use crate::output;
use anyhow::{bail, Context};
use ferry_client::Client;
use serde_json::{json, Map, Value};

pub(super) async fn pull(a: PullArgs) -> anyhow::Result<()> {
    let mut body = Map::new();
    body.insert("max_records".into(), Value::from(a.max_records));
    if let Some(w) = a.wait_ms {
        body.insert("wait_ms".into(), Value::from(w));
    }
    if let Some(c) = a.consumer {
        body.insert("consumer".into(), Value::from(c));
    }
    if let Some(v) = a.visibility_timeout_ms {
        body.insert("visibility_timeout_ms".into(), Value::from(v));
    }
    let api = Client::new(&a.client.url);
    let records = api.pull(&a.name, &Value::Object(body)).await?;
    print_pulled(&records, a.client.json)?;
    if a.ack {
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

pub(super) async fn ack(a: AckArgs) -> anyhow::Result<()> {
    let v = Client::new(&a.client.url)
        .ack(&a.leases.name, &a.leases.lease_ids)
        .await?;
    output::answer_line(a.client.json, &v, || format!("acked {}", cell(&v["acked"])))
}

pub(super) async fn extend(a: ExtendArgs) -> anyhow::Result<()> {
    let v = Client::new(&a.client.url)
        .extend(&a.leases.name, &a.leases.lease_ids, a.visibility_timeout_ms)
        .await?;
    output::answer_line(a.client.json, &v, || {
        let at = v["lease_expires_at"].as_u64().unwrap_or(0);
        format!(
            "extended {} lease(s) to {}",
            a.leases.lease_ids.len(),
            output::rfc3339_ms(at)
        )
    })
}

pub(super) async fn nack(a: NackArgs) -> anyhow::Result<()> {
    let v = Client::new(&a.client.url)
        .nack(
            &a.leases.name,
            &a.leases.lease_ids,
            a.delay_ms,
            a.error.as_deref(),
        )
        .await?;
    output::answer_line(a.client.json, &v, || {
        format!("nacked {}", cell(&v["nacked"]))
    })
}

pub(super) async fn seek(a: SeekArgs) -> anyhow::Result<()> {
    let body = match (position("--to", &a.to)?, a.partition) {
        (Value::Object(mut m), Some(p)) if m.contains_key("offset") => {
            m.insert("partition".into(), Value::from(p));
            Value::Object(m)
        }
        (_, Some(_)) => bail!("--partition works only with --to offset:N"),
        (s @ Value::String(_), None) => json!({ "to": s }),
        (other, None) => other,
    };
    let s = Client::new(&a.client.url).seek(&a.name, &body).await?;
    output::answer_line(a.client.json, &s, || {
        format!(
            "Moved subscription {} to {}; backlog {}.",
            a.name,
            a.to,
            cell(&s["backlog"])
        )
    })
}

pub(super) async fn purge(a: NameArgs) -> anyhow::Result<()> {
    let s = Client::new(&a.client.url).purge(&a.name).await?;
    output::answer_line(a.client.json, &s, || {
        format!(
            "Purged subscription {}; backlog {}.",
            a.name,
            cell(&s["backlog"])
        )
    })
}

pub(super) async fn redrive(a: RedriveArgs) -> anyhow::Result<()> {
    let v = Client::new(&a.client.url)
        .redrive(&a.name, a.max_records)
        .await?;
    output::answer_line(a.client.json, &v, || {
        format!("redriven {}", cell(&v["redriven"]))
    })
}
