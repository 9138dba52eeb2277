//! One delivery, in its steps: send the request ([`Dispatchers::send`]), classify what
//! came back ([`Outcome`]), tell the breaker (handing in the request's ticket), decide ([`Decision::of`]), settle the
//! record with the broker, and queue the attempt for the delivery log.

use crate::breaker::Ticket;
use crate::conn::Slot;
use crate::dispatcher::Dispatcher;
use crate::dlog::{Attempt, Logged};
use crate::outcome::{Decision, Outcome, Policy, RETRY_AFTER_MS_MAX};
use crate::request::Target;
use crate::supervisor::Dispatchers;
use crate::trace::attempt_span;
use ferry_broker::subs::push::PushConfig;
use ferry_broker::subs::Delivery;
use ferry_broker::{now_ms, BrokerError};
use ferry_log::sync::lock;
use ferry_trace::{attr, TraceParent};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

impl Dispatchers {
    /// Delivers one record and settles it by the outcome.
    pub(crate) async fn deliver(
        &self,
        d: &Dispatcher,
        target: &Target,
        x: Delivery,
        ticket: Ticket,
        slot: &mut Slot,
    ) {
        let cfg = &target.cfg;
        let Some(push) = cfg.push.as_ref() else {
            lock(&d.breaker).give_back(ticket);
            return;
        };
        let started = Instant::now();
        let time = now_ms();
        let mut span = attempt_span(
            cfg,
            &x,
            target
                .endpoint
                .as_ref()
                .ok()
                .and_then(|ep| ep.url.host_str()),
        );
        let outcome = self
            .send(target, push, &x, time, slot, span.context())
            .await;
        if let Some(status) = outcome.status() {
            d.stats
                .last_status
                .store(u32::from(status.as_u16()), Ordering::Relaxed);
        }
        let latency_ms = started.elapsed().as_millis() as u64;
        let change = lock(&d.breaker).result(ticket, !outcome.endpoint_failed(), now_ms());
        d.breaker_changed(change);
        let r = &x.record;
        let policy = Policy {
            too_old: push
                .max_age_ms
                .is_some_and(|age| now_ms().saturating_sub(r.timestamp.max(0) as u64) > age),
            attempt: x.attempt,
            max_deliveries: cfg.max_deliveries,
            max_delay_ms: cfg.retry.max_delay_ms,
        };
        let decision = Decision::of(&outcome, &policy);
        let error = outcome.error();
        if span.is_on() {
            if let Some(status) = outcome.status() {
                span.set(attr::HTTP_STATUS, i64::from(status.as_u16()));
            }
            span.set(attr::PUSH_OUTCOME, logged_name(decision.logged()));
            if let Some(e) = &error {
                span.fail(e);
            }
        }
        span.end();
        d.stats.count(decision.logged());
        d.stats.measure(
            decision.logged(),
            outcome.status().map(|s| s.as_u16()),
            started.elapsed(),
        );
        let settled = self
            .settle(d, &cfg.name, x.lease_id.clone(), &decision, &error)
            .await;
        if let Some(e) = &error {
            *lock(&d.stats.last_error) = Some(e.clone());
        }
        if let Err(e) = settled {
            // The lease ran out meanwhile: the record is delivered again.
            tracing::warn!(subscription = %cfg.name, offset = r.offset, error = %e, "Could not settle a push delivery.");
        }
        lock(&d.pending_log).push(Attempt {
            time,
            partition: x.partition,
            offset: r.offset as u64,
            attempt: x.attempt,
            outcome: decision.logged(),
            status: outcome.status().map(|s| s.as_u16()),
            latency_ms,
            error,
            response: outcome.response(),
            retry_in_ms: decision.retry_in_ms(),
        });
    }

    /// Builds the request and sends it over the sender's connection; the outcome is the
    /// classified answer, or why there was none.
    async fn send(
        &self,
        target: &Target,
        push: &PushConfig,
        x: &Delivery,
        time: u64,
        slot: &mut Slot,
        trace: Option<TraceParent>,
    ) -> Outcome {
        let ep = match &target.endpoint {
            Ok(ep) => ep,
            Err(why) => return Outcome::Unusable(why.clone()),
        };
        let call = match target.request(push, x, time, trace) {
            Ok(call) => call,
            Err(u) => return Outcome::Unsendable(u),
        };
        let timeout = Duration::from_millis(push.timeout_ms);
        match slot
            .call(&self.connector, ep, call, timeout, push.follow_redirects)
            .await
        {
            Ok(answer) => Outcome::of_answer(answer, &push.retry_statuses),
            Err(f) => Outcome::Transport(f),
        }
    }

    /// Acks (through the flusher), nacks or dead-letters the record as decided.
    async fn settle(
        &self,
        d: &Dispatcher,
        name: &str,
        lease_id: String,
        decision: &Decision,
        error: &Option<String>,
    ) -> Result<(), BrokerError> {
        match decision {
            Decision::Ack => {
                lock(&d.pending_acks).push(lease_id);
                Ok(())
            }
            Decision::Retry { delay_ms, .. } => self
                .broker
                .nack(
                    name,
                    vec![lease_id],
                    delay_ms.map(|v| v.min(RETRY_AFTER_MS_MAX) as i64),
                    error.clone(),
                )
                .await
                .map(|_| ()),
            Decision::DeadLetter { reason } => self
                .broker
                .dead_letter_now(name, vec![lease_id], reason.clone())
                .await
                .map(|_| ()),
        }
    }
}

/// The delivery log's name of an outcome, as spans carry it.
fn logged_name(l: Logged) -> &'static str {
    match l {
        Logged::Delivered => "delivered",
        Logged::Retry => "retry",
        Logged::DeadLetter => "dead_letter",
    }
}
