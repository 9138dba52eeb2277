//! Settings of push subscriptions: a queue subscription whose consumer is Ferry's
//! dispatcher (crate ferry-push), calling an HTTP endpoint. This module only holds and
//! checks the settings; checks that need the network (address ranges) are the
//! dispatcher's.

use crate::error::{BrokerError, Result};
use std::collections::BTreeMap;

pub const URL_BYTES_MAX: usize = 2048;
pub const PUSH_TIMEOUT_MS_MIN: u64 = 100;
pub const PUSH_TIMEOUT_MS_MAX: u64 = 300_000;
pub const PUSH_CONCURRENCY_MAX: u32 = 1024;
pub const PUSH_HEADERS_MAX: usize = 32;
pub const HEADER_VALUE_BYTES_MAX: usize = 4096;
pub const SECRET_PREFIX: &str = "whsec_";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum PushMethod {
    #[default]
    Post,
    Put,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Payload {
    /// The record's value as the body.
    #[default]
    Raw,
    /// CloudEvents binary content mode: the value as the body, attributes as `ce-*` headers.
    CloudeventsBinary,
    /// CloudEvents structured content mode: one `application/cloudevents+json` body.
    CloudeventsStructured,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Opens when at least this share of the calls in the window failed (1–100).
    #[serde(default = "d_rate")]
    pub failure_rate_percent: u8,
    #[serde(default = "d_window")]
    pub window_ms: u64,
    /// Calls in the window before the rate counts.
    #[serde(default = "d_min_calls")]
    pub min_calls: u32,
    /// How long it stays open before probing.
    #[serde(default = "d_cooldown")]
    pub cooldown_ms: u64,
    /// Probes in half-open; all must succeed to close.
    #[serde(default = "d_probes")]
    pub probes: u32,
}

fn d_rate() -> u8 {
    50
}
fn d_window() -> u64 {
    30_000
}
fn d_min_calls() -> u32 {
    10
}
fn d_cooldown() -> u64 {
    30_000
}
fn d_probes() -> u32 {
    3
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_rate_percent: d_rate(),
            window_ms: d_window(),
            min_calls: d_min_calls(),
            cooldown_ms: d_cooldown(),
            probes: d_probes(),
        }
    }
}

fn d_timeout() -> u64 {
    10_000
}
fn d_concurrency() -> u32 {
    16
}
fn d_retry_statuses() -> Vec<u16> {
    vec![408, 429]
}
fn d_log_retention() -> u64 {
    7 * 24 * 3600 * 1000
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushConfig {
    pub url: String,
    #[serde(default)]
    pub method: PushMethod,
    /// Static headers sent with every request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default = "d_timeout")]
    pub timeout_ms: u64,
    /// Requests in flight at once.
    #[serde(default = "d_concurrency")]
    pub concurrency: u32,
    /// Requests per second, at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_per_s: Option<u32>,
    #[serde(default)]
    pub payload: Payload,
    /// A record older than this is dead-lettered instead of retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_ms: Option<u64>,
    /// 4xx statuses that are retried; other 4xx cancel at once. 5xx always retry.
    #[serde(default = "d_retry_statuses")]
    pub retry_statuses: Vec<u16>,
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// Standard Webhooks signing secret, `whsec_<base64>`. Generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// The secret before the last rotation, still signed with until it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret_expires_at_ms: Option<u64>,
    #[serde(default)]
    pub follow_redirects: bool,
    /// How long the delivery log keeps attempts.
    #[serde(default = "d_log_retention")]
    pub delivery_log_retention_ms: u64,
}

fn bad(m: impl Into<String>) -> BrokerError {
    BrokerError::InvalidConfig(format!("push: {}", m.into()))
}

/// Checks a `whsec_` secret: standard base64 of 24 to 64 bytes (decoded as the signer
/// decodes it). Returns the key's length.
pub fn secret_key_len(secret: &str) -> Option<usize> {
    use base64::Engine;
    let b64 = secret.strip_prefix(SECRET_PREFIX)?;
    if b64.len() > 128 {
        return None;
    }
    let key = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    (24..=64).contains(&key.len()).then_some(key.len())
}

/// Checks the extra headers a push subscription sends: valid HTTP names and values,
/// and none of the names Ferry sets itself.
fn check_headers(headers: &BTreeMap<String, String>) -> Result<()> {
    if headers.len() > PUSH_HEADERS_MAX {
        return Err(bad(format!("more than {PUSH_HEADERS_MAX} headers")));
    }
    for (k, v) in headers {
        let lower = k.to_ascii_lowercase();
        if k.is_empty()
            || !k
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
        {
            return Err(bad(format!("header name {k:?} is not a valid HTTP token")));
        }
        if lower.starts_with("webhook-")
            || lower.starts_with("ce-")
            || lower.starts_with("ferry-")
            || [
                "host",
                "content-length",
                "content-type",
                "transfer-encoding",
                "connection",
                "traceparent",
            ]
            .contains(&lower.as_str())
        {
            return Err(bad(format!("header {k:?} is set by Ferry")));
        }
        if v.len() > HEADER_VALUE_BYTES_MAX
            || !v.bytes().all(|c| c == b'\t' || (b' '..=b'~').contains(&c))
        {
            return Err(bad(format!("header {k:?} has a value that cannot be sent")));
        }
    }
    Ok(())
}

impl BreakerConfig {
    pub fn validate(&self) -> Result<()> {
        let b = self;
        if !(1..=100).contains(&b.failure_rate_percent)
            || b.min_calls == 0
            || b.probes == 0
            || !(100..=3_600_000).contains(&b.window_ms)
            || !(100..=86_400_000).contains(&b.cooldown_ms)
        {
            return Err(bad(
                "breaker: failure_rate_percent 1–100, min_calls and probes ≥ 1, window_ms 100 ms–1 h, cooldown_ms 100 ms–1 day",
            ));
        }
        Ok(())
    }
}

impl PushConfig {
    pub fn validate(&self) -> Result<()> {
        let url = self.url.trim();
        if url.len() > URL_BYTES_MAX {
            return Err(bad(format!("url is longer than {URL_BYTES_MAX} bytes")));
        }
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
            .ok_or_else(|| bad(format!("url {url:?} must start with http:// or https://")))?;
        if rest.is_empty() || rest.starts_with('/') {
            return Err(bad(format!("url {url:?} has no host")));
        }
        if !(PUSH_TIMEOUT_MS_MIN..=PUSH_TIMEOUT_MS_MAX).contains(&self.timeout_ms) {
            return Err(BrokerError::InvalidTimeout(format!(
                "push.timeout_ms must be between {PUSH_TIMEOUT_MS_MIN} and {PUSH_TIMEOUT_MS_MAX}, got {}",
                self.timeout_ms
            )));
        }
        if self.concurrency == 0 || self.concurrency > PUSH_CONCURRENCY_MAX {
            return Err(bad(format!(
                "concurrency must be between 1 and {PUSH_CONCURRENCY_MAX}, got {}",
                self.concurrency
            )));
        }
        if self.max_age_ms.is_some_and(|a| a < 1000) {
            return Err(bad(
                "max_age_ms must be at least 1000 (or absent for no limit)",
            ));
        }
        if self.rate_limit_per_s == Some(0) {
            return Err(bad("rate_limit_per_s must be at least 1 (or absent)"));
        }
        check_headers(&self.headers)?;
        for s in &self.retry_statuses {
            if !(400..=499).contains(s) {
                return Err(bad(format!(
                    "retry_statuses lists {s}; only 4xx statuses are chosen (5xx always retry)"
                )));
            }
        }
        self.breaker.validate()?;
        for s in [&self.secret, &self.previous_secret].into_iter().flatten() {
            if secret_key_len(s).is_none() {
                return Err(bad(
                    "secret must be whsec_ followed by the base64 of 24 to 64 bytes",
                ));
            }
        }
        if self.delivery_log_retention_ms < 60_000 {
            return Err(bad("delivery_log_retention_ms must be at least 60000"));
        }
        Ok(())
    }

    /// A copy safe to show: secrets replaced by their first characters.
    pub fn redacted(&self) -> PushConfig {
        let hint = |s: &Option<String>| {
            s.as_ref()
                .map(|s| format!("{}…", &s[..s.len().min(SECRET_PREFIX.len() + 4)]))
        };
        // Values of headers that usually carry credentials are not shown either.
        let headers = self
            .headers
            .iter()
            .map(|(k, v)| {
                let l = k.to_ascii_lowercase();
                let secret = [
                    "authorization",
                    "cookie",
                    "token",
                    "key",
                    "secret",
                    "password",
                ]
                .iter()
                .any(|w| l.contains(w));
                (k.clone(), if secret { "…".to_string() } else { v.clone() })
            })
            .collect();
        PushConfig {
            secret: hint(&self.secret),
            previous_secret: hint(&self.previous_secret),
            headers,
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_must_be_whsec_base64_of_24_to_64_bytes() {
        assert_eq!(
            secret_key_len("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            Some(24)
        );
        assert_eq!(secret_key_len("whsec_short"), None);
        assert_eq!(secret_key_len("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), None);
        assert_eq!(
            secret_key_len("whsec_!!!!9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            None
        );
    }
}
