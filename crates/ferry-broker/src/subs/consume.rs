//! The broker's consuming API for front ends: pull (with long polling), ack, nack,
//! extend, seek. Each reads the clock once and hands `now` to the subscription.

use super::config::{check_timeout, Mode, Position, DELAY_MS_MAX, ERROR_BYTES_MAX};
use super::config::{PULL_RECORDS_MAX, PULL_WAIT_MS_MAX, PUSH_CONSUMER};
use super::lease::UnknownLeases;
use super::pull::{Delivery, PullRequest};
use super::status::SubscriptionStatus;
use super::subscription::{Completion, GiveBack};
use crate::broker::blocking;
use crate::error::{BrokerError, Result};
use crate::{now_ms, Broker};
use std::sync::atomic::Ordering as AtomicOrdering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An error text as kept with a record: its first `ERROR_BYTES_MAX` bytes.
pub(crate) fn error_text(mut e: String) -> Arc<str> {
    if e.len() > ERROR_BYTES_MAX {
        let mut cut = ERROR_BYTES_MAX;
        while !e.is_char_boundary(cut) {
            cut -= 1;
        }
        e.truncate(cut);
    }
    Arc::from(e)
}

impl Broker {
    /// Leases up to `max_records` records; with a wait, long-polls until one is there.
    pub async fn pull(&self, name: &str, req: PullRequest) -> Result<Vec<Delivery>> {
        if req.max_records == 0 || req.max_records > PULL_RECORDS_MAX {
            return Err(BrokerError::InvalidConfig(format!(
                "max_records must be between 1 and {PULL_RECORDS_MAX}, got {}",
                req.max_records
            )));
        }
        if req.wait > Duration::from_millis(PULL_WAIT_MS_MAX) {
            return Err(BrokerError::InvalidTimeout(format!(
                "wait_ms must be at most {PULL_WAIT_MS_MAX}, got {}",
                req.wait.as_millis()
            )));
        }
        if let Some(v) = req.visibility_timeout_ms {
            check_timeout("visibility_timeout_ms", v as i64)?;
        }
        let sub = self.subscription(name)?;
        if sub.config().mode == Mode::Push && &*req.consumer != PUSH_CONSUMER {
            return Err(BrokerError::InvalidConfig(format!(
                "subscription '{name}' is a push subscription: Ferry delivers its records to its endpoint; create a queue subscription to pull"
            )));
        }
        let deadline = Instant::now() + req.wait;
        let req = Arc::new(req);
        loop {
            let changed = sub.changed.notified();
            let readable = self.any_readable().notified();
            tokio::pin!(changed, readable);
            changed.as_mut().enable();
            readable.as_mut().enable();
            let out = if self.is_shared() {
                self.shared_pull(&sub, &req)?
            } else {
                let topic = self.topic(&sub.config().topic)?;
                let (s, r) = (Arc::clone(&sub), Arc::clone(&req));
                blocking(move || s.pull_once(&topic, &r, now_ms())).await?
            };
            let now = Instant::now();
            if !out.is_empty() || now >= deadline || sub.deleted.load(AtomicOrdering::Acquire) {
                return Ok(out);
            }
            // Leases end and delays fall due without any signal: look again soon.
            let nap = (deadline - now).min(Duration::from_millis(100));
            tokio::select! {
                _ = changed => {}
                _ = readable => {}
                _ = tokio::time::sleep(nap) => {}
            }
        }
    }

    /// Acknowledges leases, all or nothing; returns once the acks are durable, or with
    /// [`Completion::Buffered`] once they are written (a crash before the next sync
    /// delivers those records again).
    pub async fn ack(&self, name: &str, ids: Vec<String>, completion: Completion) -> Result<usize> {
        let sub = self.subscription(name)?;
        blocking(move || sub.ack(&ids, UnknownLeases::Refuse, completion, now_ms())).await
    }

    /// Acknowledges the leases that are still live among `ids` and skips the others
    /// (expired meanwhile: those records come again). Returns how many were acked.
    pub async fn ack_live(&self, name: &str, ids: Vec<String>) -> Result<usize> {
        let sub = self.subscription(name)?;
        blocking(move || sub.ack(&ids, UnknownLeases::Skip, Completion::Durable, now_ms())).await
    }

    pub async fn nack(
        &self,
        name: &str,
        ids: Vec<String>,
        delay_ms: Option<i64>,
        error: Option<String>,
    ) -> Result<usize> {
        let delay = match delay_ms {
            None => None,
            Some(d) if d < 0 || d as u64 > DELAY_MS_MAX => {
                return Err(BrokerError::InvalidTimeout(format!(
                    "delay_ms must be between 0 and {DELAY_MS_MAX} (one week), got {d}"
                )))
            }
            Some(d) => Some(d as u64),
        };
        let error = error.map(error_text);
        let sub = self.subscription(name)?;
        let action = GiveBack::Retry { delay_ms: delay };
        blocking(move || sub.nack(&ids, action, error, now_ms())).await
    }

    /// Ends leases and sends the records to the dead-letter topic at once, without
    /// more deliveries (a push endpoint refused them).
    pub async fn dead_letter_now(
        &self,
        name: &str,
        ids: Vec<String>,
        error: String,
    ) -> Result<usize> {
        let sub = self.subscription(name)?;
        let error = error_text(error);
        blocking(move || sub.nack(&ids, GiveBack::DeadLetter, Some(error), now_ms())).await
    }

    pub async fn extend(&self, name: &str, ids: Vec<String>, timeout_ms: i64) -> Result<u64> {
        let t = check_timeout("visibility_timeout_ms", timeout_ms)?;
        let sub = self.subscription(name)?;
        blocking(move || sub.extend(&ids, t, now_ms())).await
    }

    pub async fn seek(&self, name: &str, to: Position) -> Result<SubscriptionStatus> {
        let sub = self.subscription(name)?;
        let topic = self.topic(&sub.config().topic)?;
        let targets = self.positions(&topic, to).await?;
        let s = Arc::clone(&sub);
        blocking(move || s.seek(&targets)).await?;
        self.describe_subscription(name).await
    }
}
