//! The settings flags of `sub create` and `sub update` as the API's JSON.

use super::json_flag;
use crate::cli::{PushSettings, SubSettings};
use anyhow::bail;
use serde_json::{Map, Value};

pub(super) fn settings_json(s: &SubSettings) -> anyhow::Result<Map<String, Value>> {
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

pub(super) fn push_given(f: &PushSettings) -> bool {
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
pub(super) fn merge_push(push: &mut Map<String, Value>, f: &PushSettings) -> anyhow::Result<()> {
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
        merge_headers(push, &f.push_headers)?;
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
        merge_breaker(push, b)?;
    }
    Ok(())
}

/// Sets each `--push-header` (names compared ASCII case-insensitively); a name with no
/// value removes that header.
fn merge_headers(push: &mut Map<String, Value>, given: &[String]) -> anyhow::Result<()> {
    let mut headers = match push.remove("headers") {
        Some(Value::Object(h)) => h,
        _ => Map::new(),
    };
    for h in given {
        let (name, value) = header_flag(h)?;
        headers.retain(|k, _| !k.eq_ignore_ascii_case(&name));
        if !value.is_empty() {
            headers.insert(name, Value::from(value));
        }
    }
    push.insert("headers".into(), Value::Object(headers));
    Ok(())
}

/// Sets the breaker fields `--push-breaker` names, keeping the others.
fn merge_breaker(push: &mut Map<String, Value>, b: &str) -> anyhow::Result<()> {
    let given = json_flag("--push-breaker", b)?;
    let Value::Object(given) = given else {
        bail!("--push-breaker must be a JSON object, e.g. '{{\"cooldown_ms\":60000}}'; got {b:?}");
    };
    let mut breaker = match push.remove("breaker") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    breaker.extend(given);
    push.insert("breaker".into(), Value::Object(breaker));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::merge_push;
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
    }

    #[test]
    fn bad_push_flags_are_refused() {
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
}
