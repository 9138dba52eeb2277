//! `sub create`, `list`, `describe`, `update` and `delete`.

use super::flags::{merge_push, push_given, settings_json};
use super::show::{print_secret_shown_once, print_subscription};
use super::{cell, position, rows};
use crate::cli::{ClientArgs, CreateFlags, Named, SubFlags};
use crate::output;
use anyhow::bail;
use ferry_client::Client;
use serde_json::{json, Map, Value};

pub(super) async fn create(a: Named<CreateFlags>) -> anyhow::Result<()> {
    let f = a.flags;
    let mut body = settings_json(&f.sub.settings)?;
    body.insert("name".into(), Value::from(a.name));
    body.insert("topic".into(), Value::from(f.topic));
    if push_given(&f.sub.push) {
        if f.sub.push.push_url.is_none() {
            bail!(
                "--push-url is required for a push subscription: the other --push-* flags need it"
            );
        }
        let mut p = Map::new();
        merge_push(&mut p, &f.sub.push)?;
        body.insert("push".into(), Value::Object(p));
    }
    if let Some(s) = &f.start {
        body.insert("start".into(), position("--start", s)?);
    }
    if let Some(o) = f.ordering {
        if !["none", "key"].contains(&o.as_str()) {
            bail!("--ordering must be none or key, got {o:?}");
        }
        body.insert("ordering".into(), Value::from(o));
    }
    let s = a
        .client
        .client()?
        .create_subscription(&Value::Object(body))
        .await?;
    output::answer(a.client.json, &s, || {
        if s["push"].is_object() {
            output::line(&format!(
                "Created push subscription {} on topic {}: {} {}.",
                cell(&s["name"]),
                cell(&s["topic"]),
                cell(&s["push"]["method"]),
                cell(&s["push"]["url"])
            ))?;
            print_secret_shown_once(&s)
        } else {
            Ok(output::line(&format!(
                "Created subscription {} on topic {}.",
                cell(&s["name"]),
                cell(&s["topic"])
            ))?)
        }
    })
}

pub(super) async fn list(client: ClientArgs) -> anyhow::Result<()> {
    let v = client.client()?.list_subscriptions().await?;
    output::answer(client.json, &v, || {
        Ok(output::table(
            &[
                "SUBSCRIPTION",
                "TOPIC",
                "BACKLOG",
                "IN_FLIGHT",
                "DELAYED",
                "DEAD_LETTERED",
            ],
            &rows(
                &v["subscriptions"],
                &[
                    "name",
                    "topic",
                    "backlog",
                    "in_flight",
                    "delayed",
                    "dead_lettered",
                ],
            ),
        )?)
    })
}

pub(super) async fn describe(a: Named) -> anyhow::Result<()> {
    let s = a.client.client()?.describe_subscription(&a.name).await?;
    output::answer(a.client.json, &s, || print_subscription(&s))
}

pub(super) async fn update(a: Named<SubFlags>) -> anyhow::Result<()> {
    let api = a.client.client()?;
    let mut body = settings_json(&a.flags.settings)?;
    if push_given(&a.flags.push) {
        let mut p = current_push(&api, &a.name).await?;
        merge_push(&mut p, &a.flags.push)?;
        body.insert("push".into(), Value::Object(p));
    }
    if body.is_empty() {
        bail!("nothing to change: give a setting such as --visibility-timeout-ms, --max-deliveries or --push-timeout-ms");
    }
    let s = api
        .update_subscription(&a.name, &Value::Object(body))
        .await?;
    output::answer(a.client.json, &s, || {
        print_subscription(&s)?;
        print_secret_shown_once(&s)
    })
}

/// The push settings of subscription `name` as `update` sends them back: the server
/// replaces the whole push object, so an update starts from the current one.
async fn current_push(api: &Client, name: &str) -> anyhow::Result<Map<String, Value>> {
    let current = api.describe_subscription(name).await?;
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
    Ok(p)
}

pub(super) async fn delete(a: Named) -> anyhow::Result<()> {
    a.client.client()?.delete_subscription(&a.name).await?;
    output::answer_line(a.client.json, &json!({ "deleted": a.name }), || {
        format!("Deleted subscription {}.", a.name)
    })
}
