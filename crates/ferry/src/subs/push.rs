//! `sub pause`, `resume`, `retry`, `rotate-secret` and `deliveries`: push subscriptions.

use super::show::print_secret_shown_once;
use super::{cell, time_cell};
use crate::cli::{DeliveriesFlags, Named, RetryFlags, RotateSecretFlags};
use crate::output;
use serde_json::Value;

pub(super) async fn pause(a: Named) -> anyhow::Result<()> {
    let s = a.client.client()?.pause_subscription(&a.name).await?;
    output::answer_line(a.client.json, &s, || {
        format!(
            "Paused subscription {}: records wait until it is resumed.",
            a.name
        )
    })
}

pub(super) async fn resume(a: Named) -> anyhow::Result<()> {
    let s = a.client.client()?.resume_subscription(&a.name).await?;
    output::answer_line(a.client.json, &s, || {
        format!("Resumed subscription {}.", a.name)
    })
}

pub(super) async fn retry(a: Named<RetryFlags>) -> anyhow::Result<()> {
    let v = a
        .client
        .client()?
        .retry_record(&a.name, a.flags.partition, a.flags.offset)
        .await?;
    output::answer_line(a.client.json, &v, || {
        format!(
            "Queued partition {} offset {} for subscription {} again (as a copy at partition {} offset {}).",
            a.flags.partition,
            a.flags.offset,
            a.name,
            cell(&v["copy"]["partition"]),
            cell(&v["copy"]["offset"])
        )
    })
}

pub(super) async fn rotate_secret(a: Named<RotateSecretFlags>) -> anyhow::Result<()> {
    let s = a
        .client
        .client()?
        .rotate_secret(
            &a.name,
            a.flags.secret.as_deref(),
            a.flags.previous_valid_ms,
        )
        .await?;
    output::answer(a.client.json, &s, || {
        let until = &s["push"]["previous_secret_expires_at_ms"];
        let name = &a.name;
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
        print_secret_shown_once(&s)
    })
}

pub(super) async fn deliveries(a: Named<DeliveriesFlags>) -> anyhow::Result<()> {
    let record = a.flags.partition.zip(a.flags.offset);
    let v = a
        .client
        .client()?
        .deliveries(&a.name, record, a.flags.limit)
        .await?;
    output::answer(a.client.json, &v, || print_deliveries(&v))
}

fn print_deliveries(v: &Value) -> anyhow::Result<()> {
    let rows: Vec<Vec<String>> = v["deliveries"]
        .as_array()
        .map(Vec::as_slice)
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
    Ok(())
}
