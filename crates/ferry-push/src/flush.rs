//! The flush loop of a dispatcher: acks delivered records and writes the delivery log
//! in batches, one durable ack (one fsync) and one log append for everything that
//! finished meanwhile.

use crate::dispatcher::Dispatcher;
use crate::supervisor::Dispatchers;
use ferry_broker::BrokerError;
use ferry_log::sync::lock;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

impl Dispatchers {
    /// Runs until every sender has stopped and what they left is flushed.
    pub(crate) async fn flush_loop(self: Arc<Self>, d: Arc<Dispatcher>) {
        loop {
            // A fixed beat rather than a wake per delivery: one ack (one fsync) and one
            // log append cover every delivery that finished within it.
            tokio::time::sleep(Duration::from_millis(3)).await;
            let acks = std::mem::take(&mut *lock(&d.pending_acks));
            let attempts = std::mem::take(&mut *lock(&d.pending_log));
            for chunk in acks.chunks(ferry_broker::subs::LEASES_PER_REQUEST_MAX) {
                if let Err(e) = self.broker.ack_live(&d.name, chunk.to_vec()).await {
                    if matches!(e, BrokerError::SubscriptionNotFound(_)) {
                        break;
                    }
                    tracing::warn!(subscription = %d.name, error = %e, "Could not ack push deliveries; they will be delivered again.");
                }
            }
            if !attempts.is_empty() {
                d.log.append_all(&attempts);
            }
            if d.finished.load(Ordering::Acquire) && lock(&d.pending_acks).is_empty() {
                return;
            }
        }
    }
}
