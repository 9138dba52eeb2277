//! A subscription's settings: limits, defaults, validation, and where it starts.

use super::push::PushConfig;
use super::retry::{self, RetryPolicy};
use crate::error::{BrokerError, Result};
use crate::filter::Filter;
use serde_json::Value;

/// Limits, named with their unit last.
pub const VISIBILITY_TIMEOUT_MS_MIN: u64 = 100;
pub const VISIBILITY_TIMEOUT_MS_MAX: u64 = 12 * 3600 * 1000;
pub const MAX_IN_FLIGHT_MAX: u32 = 100_000;
pub const PULL_RECORDS_MAX: usize = 1000;
pub const PULL_WAIT_MS_MAX: u64 = 60_000;
pub const LEASES_PER_REQUEST_MAX: usize = 1000;
pub const DELAY_MS_MAX: u64 = super::retry::RETRY_DELAY_MS_MAX;
pub const ERROR_BYTES_MAX: usize = 1024;
/// Records one pull looks at, at most, while it scans for deliverable ones.
pub const SCAN_RECORDS_MAX: usize = 20_000;
/// Records held back by per-key ordering before the head scan pauses.
pub const HELD_RECORDS_MAX: usize = 100_000;

/// The consumer name of Ferry's webhook dispatcher, the only one that pulls from push
/// subscriptions.
pub const PUSH_CONSUMER: &str = "ferry-push";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Queue,
    Push,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyOrdering {
    #[default]
    None,
    /// One record per key in flight at a time.
    Key,
}

/// A subscription's settings, as stored and as the API shows them.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SubscriptionConfig {
    pub name: String,
    pub topic: String,
    pub mode: Mode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<Value>,
    pub visibility_timeout_ms: u64,
    /// 0: unlimited, no dead-lettering.
    pub max_deliveries: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letter_topic: Option<String>,
    pub retry: RetryPolicy,
    pub max_in_flight: u32,
    pub max_in_flight_per_consumer: u32,
    pub ordering: KeyOrdering,
    pub created_at_ms: u64,
    /// Push subscriptions: the endpoint and how to call it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<PushConfig>,
    /// A paused push subscription sends nothing; records wait.
    #[serde(default)]
    pub paused: bool,
}

/// Where a new subscription starts, or where a seek goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    Earliest,
    Latest,
    /// The same offset in every partition (clamped to what is stored).
    Offset(u64),
    /// One partition only.
    PartitionOffset(u32, u64),
    Timestamp(i64),
}

impl Position {
    /// Parses `"earliest"`, `"latest"`, `{"offset": n, "partition"?: p}` or
    /// `{"timestamp": ms}`.
    pub fn parse(v: &Value) -> Result<Position> {
        let bad = || {
            BrokerError::InvalidConfig(format!(
                "position {v} is not \"earliest\", \"latest\", {{\"offset\": n}}, {{\"partition\": p, \"offset\": n}} or {{\"timestamp\": ms}}"
            ))
        };
        match v {
            Value::String(s) if s == "earliest" => Ok(Position::Earliest),
            Value::String(s) if s == "latest" => Ok(Position::Latest),
            Value::Object(m) => {
                let num = |k: &str| m.get(k).map(|v| v.as_u64().ok_or_else(bad)).transpose();
                if m.keys()
                    .any(|k| !["offset", "partition", "timestamp"].contains(&k.as_str()))
                {
                    return Err(bad());
                }
                match (num("offset")?, num("partition")?, m.get("timestamp")) {
                    (Some(o), None, None) => Ok(Position::Offset(o)),
                    (Some(o), Some(p), None) => Ok(Position::PartitionOffset(
                        u32::try_from(p).map_err(|_| bad())?,
                        o,
                    )),
                    (None, None, Some(t)) => Ok(Position::Timestamp(
                        t.as_i64().filter(|t| *t >= 0).ok_or_else(bad)?,
                    )),
                    _ => Err(bad()),
                }
            }
            _ => Err(bad()),
        }
    }
}

/// Settings sent to create (absent: defaults) or update (absent: unchanged) a
/// subscription. Unknown fields are refused.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionSettings {
    pub name: Option<String>,
    pub topic: Option<String>,
    pub mode: Option<Mode>,
    /// `null` removes the filter (on update), so a present null is kept as `Some(Null)`.
    #[serde(default, deserialize_with = "present")]
    pub filter: Option<Value>,
    pub start: Option<Value>,
    pub visibility_timeout_ms: Option<i64>,
    pub max_deliveries: Option<u32>,
    pub dead_letter_topic: Option<String>,
    pub retry: Option<RetryPolicy>,
    pub max_in_flight: Option<u32>,
    pub max_in_flight_per_consumer: Option<u32>,
    pub ordering: Option<KeyOrdering>,
    /// Replaces the whole push configuration.
    pub push: Option<PushConfig>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<Value>, D::Error> {
    <Value as serde::Deserialize>::deserialize(d).map(Some)
}

pub fn check_timeout(what: &str, ms: i64) -> Result<u64> {
    if ms < VISIBILITY_TIMEOUT_MS_MIN as i64 || ms > VISIBILITY_TIMEOUT_MS_MAX as i64 {
        return Err(BrokerError::InvalidTimeout(format!(
            "{what} must be between {VISIBILITY_TIMEOUT_MS_MIN} ms and {VISIBILITY_TIMEOUT_MS_MAX} ms (12 hours), got {ms}"
        )));
    }
    Ok(ms as u64)
}

impl SubscriptionConfig {
    /// Checks every setting; returns the parsed filter.
    pub(crate) fn validate(&self) -> Result<Filter> {
        crate::config::validate_topic_name(&self.name).map_err(|e| match e {
            BrokerError::InvalidTopicName { name, reason } => {
                BrokerError::InvalidConfig(format!("invalid subscription name '{name}': {reason}"))
            }
            other => other,
        })?;
        match (self.mode, &self.push) {
            (Mode::Push, None) => {
                return Err(BrokerError::InvalidConfig(
                    "mode \"push\" needs push settings: {\"push\": {\"url\": ...}}".into(),
                ))
            }
            (Mode::Queue, Some(_)) => {
                return Err(BrokerError::InvalidConfig(
                    "push settings are for mode \"push\"".into(),
                ))
            }
            (Mode::Push, Some(p)) => {
                p.validate()?;
                if p.concurrency > self.max_in_flight_per_consumer {
                    return Err(BrokerError::InvalidConfig(format!(
                        "push.concurrency {} is over max_in_flight_per_consumer {}; raise that too",
                        p.concurrency, self.max_in_flight_per_consumer
                    )));
                }
            }
            (Mode::Queue, None) => {}
        }
        check_timeout("visibility_timeout_ms", self.visibility_timeout_ms as i64)?;
        self.retry.validate()?;
        if self.max_in_flight == 0 || self.max_in_flight > MAX_IN_FLIGHT_MAX {
            return Err(BrokerError::InvalidConfig(format!(
                "max_in_flight must be between 1 and {MAX_IN_FLIGHT_MAX}, got {}",
                self.max_in_flight
            )));
        }
        if self.max_in_flight_per_consumer == 0
            || self.max_in_flight_per_consumer > self.max_in_flight
        {
            return Err(BrokerError::InvalidConfig(format!(
                "max_in_flight_per_consumer must be between 1 and max_in_flight ({}), got {}",
                self.max_in_flight, self.max_in_flight_per_consumer
            )));
        }
        if let Some(d) = &self.dead_letter_topic {
            crate::config::validate_topic_name(d)?;
            if *d == self.topic {
                return Err(BrokerError::InvalidConfig(
                    "dead_letter_topic must not be the subscription's own topic".into(),
                ));
            }
        }
        match &self.filter {
            None => Ok(Filter::default()),
            Some(v) => Ok(Filter::parse(v)?),
        }
    }

    /// Applies the settings that are present.
    pub(crate) fn apply(&mut self, s: &SubscriptionSettings) -> Result<()> {
        if let Some(f) = &s.filter {
            self.filter = (!f.is_null()).then(|| f.clone());
        }
        if let Some(v) = s.visibility_timeout_ms {
            self.visibility_timeout_ms = check_timeout("visibility_timeout_ms", v)?;
        }
        if let Some(v) = s.max_deliveries {
            self.max_deliveries = v;
        }
        if let Some(v) = &s.dead_letter_topic {
            self.dead_letter_topic = Some(v.clone());
        }
        if let Some(v) = s.retry {
            self.retry = v;
        }
        if let Some(v) = s.max_in_flight {
            self.max_in_flight = v;
        }
        if let Some(v) = s.max_in_flight_per_consumer {
            self.max_in_flight_per_consumer = v;
        }
        if let Some(p) = &s.push {
            self.push = Some(p.clone());
        }
        Ok(())
    }
}

impl SubscriptionConfig {
    /// A new subscription's settings: the defaults of its mode, then `s`. Checks
    /// nothing yet: see [`SubscriptionConfig::validate`].
    pub(crate) fn from_settings(s: &SubscriptionSettings, created_at_ms: u64) -> Result<Self> {
        let name = s
            .name
            .clone()
            .ok_or_else(|| BrokerError::InvalidConfig("name is required".into()))?;
        let topic = s
            .topic
            .clone()
            .ok_or_else(|| BrokerError::InvalidConfig("topic is required".into()))?;
        let mode = s.mode.unwrap_or(if s.push.is_some() {
            Mode::Push
        } else {
            Mode::Queue
        });
        // Webhooks retry longer by default: exponential from 1 s, up to an hour, jittered.
        let (default_deliveries, default_retry) = match mode {
            Mode::Queue => (5, RetryPolicy::default()),
            Mode::Push => (
                20,
                RetryPolicy {
                    strategy: retry::Strategy::Exponential,
                    delay_ms: 1000,
                    step_ms: None,
                    max_delay_ms: 3_600_000,
                    jitter: retry::Jitter::Full,
                },
            ),
        };
        let max_deliveries = s.max_deliveries.unwrap_or(default_deliveries);
        let mut config = SubscriptionConfig {
            dead_letter_topic: (max_deliveries > 0).then(|| format!("{name}-dlq")),
            name,
            topic,
            mode,
            filter: None,
            visibility_timeout_ms: 30_000,
            max_deliveries,
            retry: default_retry,
            max_in_flight: 10_000,
            max_in_flight_per_consumer: 1_000,
            ordering: s.ordering.unwrap_or_default(),
            created_at_ms,
            push: None,
            paused: false,
        };
        config.apply(s)?;
        if s.max_in_flight.is_some() && s.max_in_flight_per_consumer.is_none() {
            config.max_in_flight_per_consumer =
                config.max_in_flight_per_consumer.min(config.max_in_flight);
        }
        Ok(config)
    }
}
