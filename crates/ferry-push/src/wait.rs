//! The breaker waits: before every request a sender asks the breaker; while it is open,
//! or its probes are out, the record waits with its lease kept long enough.

use crate::breaker::Permit;
use crate::dispatcher::Dispatcher;
use crate::request::Target;
use crate::supervisor::Dispatchers;
use ferry_broker::now_ms;
use ferry_broker::subs::Delivery;
use ferry_log::sync::lock;
use std::time::Duration;

impl Dispatchers {
    /// Waits until the breaker lets one request go. False when the subscription is
    /// going away meanwhile (the record is not sent; its lease runs out).
    pub(crate) async fn wait_for_breaker(
        &self,
        d: &Dispatcher,
        target: &Target,
        x: &mut Delivery,
    ) -> bool {
        loop {
            let now = now_ms();
            let (permit, change) = lock(&d.breaker).permit(1, now);
            d.breaker_changed(change);
            let until = match permit {
                Permit::Send(_) => return true,
                Permit::WaitUntil(t) => t,
            };
            if d.stopping() {
                return false;
            }
            let nap = until.saturating_sub(now).clamp(10, 200);
            let timeout = target.cfg.push.as_ref().map_or(10_000, |p| p.timeout_ms);
            // Keep the lease for the wait and the request after it.
            if x.lease_expires_ms < now + nap + timeout + 5_000 {
                let keep = (until.saturating_sub(now) + timeout + 30_000)
                    .min(ferry_broker::subs::VISIBILITY_TIMEOUT_MS_MAX);
                match self
                    .broker
                    .extend(&d.name, vec![x.lease_id.clone()], keep as i64)
                    .await
                {
                    Ok(expires) => x.lease_expires_ms = expires,
                    // The lease is gone: the record comes again later.
                    Err(_) => return false,
                }
            }
            let _ = tokio::time::timeout(Duration::from_millis(nap), d.done.notified()).await;
        }
    }
}
