//! The breaker waits: before every request a sender asks the breaker for a ticket;
//! while it is open, or its probes are out, the record waits with its lease kept long
//! enough. A ticket is taken only for a record whose lease lasts the request.

use crate::breaker::Ticket;
use crate::dispatcher::Dispatcher;
use crate::request::Target;
use crate::supervisor::Dispatchers;
use ferry_broker::now_ms;
use ferry_broker::subs::Delivery;
use ferry_log::sync::lock;
use std::time::Duration;

/// Lease time kept beyond a request's timeout when a lease is extended.
const LEASE_MARGIN_MS: u64 = 30_000;

impl Dispatchers {
    /// Waits until the breaker lets one request go, and returns its ticket (to be
    /// handed in with the result, or given back). None when the record is not to be
    /// sent: the subscription is going away, or the record's lease ran out (it is
    /// delivered again later). No ticket, and so no probe, is taken for such a record.
    pub(crate) async fn wait_for_breaker(
        &self,
        d: &Dispatcher,
        target: &Target,
        x: &mut Delivery,
    ) -> Option<Ticket> {
        let timeout = target.cfg.push.as_ref().map_or(10_000, |p| p.timeout_ms);
        loop {
            if d.stopping() {
                return None;
            }
            let now = now_ms();
            // The lease must last the request: a record that waited in the queue longer
            // than its lease is not sent (an ack would be refused), and takes no probe.
            if x.lease_expires_ms < now + timeout + 1_000 && !self.keep_lease(d, x, timeout).await {
                return None;
            }
            let now = now_ms();
            let (ticket, change) = lock(&d.breaker).take(now);
            d.breaker_changed(change);
            let until = match ticket {
                Ok(t) => return Some(t),
                Err(t) => t,
            };
            let nap = until.saturating_sub(now).clamp(10, 200);
            // Keep the lease for the wait and the request after it.
            if x.lease_expires_ms < now + nap + timeout + 5_000
                && !self
                    .keep_lease(d, x, until.saturating_sub(now) + timeout)
                    .await
            {
                return None;
            }
            let _ = tokio::time::timeout(Duration::from_millis(nap), d.done.notified()).await;
        }
    }

    /// Extends the record's lease to `ms` from now and a margin; false when the lease is
    /// gone (the record comes again later).
    async fn keep_lease(&self, d: &Dispatcher, x: &mut Delivery, ms: u64) -> bool {
        let keep = (ms + LEASE_MARGIN_MS).min(ferry_broker::subs::VISIBILITY_TIMEOUT_MS_MAX);
        match self
            .broker
            .extend(&d.name, vec![x.lease_id.clone()], keep as i64)
            .await
        {
            Ok(expires) => {
                x.lease_expires_ms = expires;
                true
            }
            Err(_) => false,
        }
    }
}
