//! The broker's push-specific rules, so that every front end gets them alike: a push
//! endpoint is checked before it is stored, a signing secret is generated when none is
//! given (and shown once), kept on updates, and rotated with a grace period for the old
//! one.
//!
//! The dispatcher that makes the calls (the `ferry-push` crate) depends on the broker,
//! not the other way round: it registers itself as the [`PushRuntime`] when it starts,
//! and the broker asks it to check endpoints and to describe its live state.

use super::push::{PushConfig, SECRET_PREFIX};
use super::status::SubscriptionStatus;
use crate::error::{BrokerError, Result};
use crate::{now_ms, Broker};
use base64::Engine;
use serde_json::Value;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// Longest time the previous secret stays valid after a rotation: one week.
pub const PREVIOUS_SECRET_MS_MAX: u64 = 7 * 24 * 3600 * 1000;
/// How long the previous secret stays valid after a rotation unless told otherwise.
pub const PREVIOUS_SECRET_MS_DEFAULT: u64 = 24 * 3600 * 1000;
/// Random bytes in a generated secret.
const SECRET_BYTES: usize = 32;

/// What the broker needs from the running webhook dispatcher.
pub trait PushRuntime: Send + Sync {
    /// Checks an endpoint URL: `InvalidConfig` when it is not one Ferry can call,
    /// `PushEndpointForbidden` when the address guard refuses where it points.
    fn check_endpoint<'a>(
        &'a self,
        url: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>;
    /// The dispatcher's live state of a push subscription (breaker, in flight, ...).
    fn live_status(&self, name: &str) -> Option<Value>;
    /// Recorded attempts of a push subscription, newest first; of one record when
    /// `record` names it.
    fn deliveries(
        &self,
        name: &str,
        record: Option<(u32, u64)>,
        limit: usize,
    ) -> Option<Vec<Value>>;
    /// What the dispatcher measured of each running push subscription.
    fn metrics(&self) -> Vec<PushMetrics> {
        Vec::new()
    }
}

/// What the dispatcher measured of one push subscription since it started, for
/// `/metrics`.
#[derive(Debug, Clone)]
pub struct PushMetrics {
    pub subscription: String,
    /// `closed`, `open` or `half_open`.
    pub breaker: &'static str,
    /// Changes of the breaker's state, by the state changed to.
    pub breaker_changes: Vec<(&'static str, u64)>,
    /// Requests on their way now.
    pub in_flight: u32,
    /// Attempts by outcome (`delivered`, `retry`, `dead_letter`) and answer status class
    /// (`2xx` .. `5xx`, or `none` when no answer came), with their count.
    pub attempts: Vec<(&'static str, &'static str, u64)>,
    /// Seconds from sending a request to its outcome.
    pub latency_seconds: prometheus_client::metrics::histogram::Histogram,
}

/// A new Standard Webhooks signing secret: `whsec_` and the base64 of 32 random bytes.
pub fn generate_secret() -> String {
    let key: [u8; SECRET_BYTES] = rand::random();
    format!(
        "{SECRET_PREFIX}{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

impl Broker {
    /// Registers the webhook dispatcher. Called once, when it starts.
    pub fn set_push_runtime(&self, runtime: Arc<dyn PushRuntime>) {
        if self.subs.push_runtime.set(runtime).is_err() {
            tracing::warn!("A second push dispatcher was registered; the first one stays.");
        }
    }

    /// What the dispatcher measured of each running push subscription.
    pub fn push_metrics(&self) -> Vec<PushMetrics> {
        self.subs
            .push_runtime
            .get()
            .map(|r| r.metrics())
            .unwrap_or_default()
    }

    /// The dispatcher's live state of a push subscription, when it runs.
    pub fn push_live_status(&self, name: &str) -> Option<Value> {
        self.subs.push_runtime.get()?.live_status(name)
    }

    /// Recorded push attempts of a subscription, newest first.
    pub fn push_deliveries(
        &self,
        name: &str,
        record: Option<(u32, u64)>,
        limit: usize,
    ) -> Result<Vec<Value>> {
        let config = self.subscription_config(name)?;
        if config.push.is_none() {
            return Err(BrokerError::InvalidConfig(format!(
                "subscription '{name}' is not a push subscription: it has no deliveries"
            )));
        }
        Ok(self
            .subs
            .push_runtime
            .get()
            .and_then(|r| r.deliveries(name, record, limit))
            .unwrap_or_default())
    }

    /// Checks the push endpoint of new settings and fills in their secret: the one
    /// given, else the current one (`keep_from`), else a new one, which is returned to
    /// be shown once.
    pub(crate) async fn prepare_push(
        &self,
        push: &mut Option<PushConfig>,
        keep_from: Option<&PushConfig>,
    ) -> Result<Option<String>> {
        let Some(p) = push.as_mut() else {
            return Ok(None);
        };
        if let Some(runtime) = self.subs.push_runtime.get() {
            runtime.check_endpoint(&p.url).await?;
        }
        if p.secret.is_some() {
            return Ok(None);
        }
        if let Some(old) = keep_from {
            p.secret = old.secret.clone();
            p.previous_secret = old.previous_secret.clone();
            p.previous_secret_expires_at_ms = old.previous_secret_expires_at_ms;
            return Ok(None);
        }
        let secret = generate_secret();
        p.secret = Some(secret.clone());
        Ok(Some(secret))
    }

    /// Makes `secret` (or a new one) the signing secret; the old one keeps signing for
    /// `previous_valid_ms` (default one day, at most a week), so that endpoints can
    /// switch over. A generated secret is in the status's `new_secret`.
    pub async fn rotate_push_secret(
        &self,
        name: &str,
        secret: Option<String>,
        previous_valid_ms: Option<u64>,
    ) -> Result<SubscriptionStatus> {
        let keep = previous_valid_ms.unwrap_or(PREVIOUS_SECRET_MS_DEFAULT);
        if keep > PREVIOUS_SECRET_MS_MAX {
            return Err(BrokerError::InvalidTimeout(format!(
                "previous_valid_ms must be at most {PREVIOUS_SECRET_MS_MAX} (one week)"
            )));
        }
        let generated = secret.is_none().then(generate_secret);
        let new = secret.or_else(|| generated.clone());
        let mut status = self
            .change_config(name, move |c| {
                let p = c.push.as_mut().ok_or_else(|| {
                    BrokerError::InvalidConfig("only push subscriptions have a secret".into())
                })?;
                p.previous_secret = p.secret.take();
                p.previous_secret_expires_at_ms = Some(now_ms() + keep);
                p.secret = new;
                Ok(())
            })
            .await?;
        status.new_secret = generated;
        Ok(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_are_valid_and_differ() {
        let (a, b) = (generate_secret(), generate_secret());
        assert_ne!(a, b);
        assert_eq!(super::super::push::secret_key_len(&a), Some(SECRET_BYTES));
    }
}
