//! The pull loop of a dispatcher: keeps the queue of records waiting for a sender topped
//! up, leasing records as the consumer [`CONSUMER`] while the breaker allows, and
//! keeps the number of senders at the subscription's `concurrency`. When the
//! subscription goes away it stops the senders, then the flusher.

use crate::breaker::Permit;
use crate::dispatcher::Dispatcher;
use crate::request::Target;
use crate::sender::{Queued, Senders};
use crate::supervisor::Dispatchers;
use ferry_broker::subs::push::PushConfig;
use ferry_broker::subs::PullRequest;
use ferry_broker::{now_ms, BrokerError};
use ferry_log::sync::lock;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The consumer name the dispatcher pulls as.
pub const CONSUMER: &str = ferry_broker::subs::PUSH_CONSUMER;
/// Records pulled ahead of their requests, at most.
const PREFETCH_MAX: usize = 1000;

/// The queue's size and refill step under the settings last read, and when they were
/// read.
#[derive(Clone, Copy)]
struct Sizing {
    depth: u32,
    step: u32,
    read_at: Instant,
}

impl Sizing {
    /// Pull ahead of the requests in flight, so that one pull (one journal append)
    /// serves many deliveries, but keep the queue short: about eight rounds of requests
    /// (a second's worth when rate-limited), so that leases stay short and a pause, an
    /// open breaker or new settings apply soon. The queue is topped up whenever a
    /// quarter of it has gone, so that it never runs dry while a pull is under way.
    fn of(push: &PushConfig) -> Sizing {
        let mut depth = (push.concurrency * 8).clamp(64, PREFETCH_MAX as u32);
        if let Some(rate) = push.rate_limit_per_s {
            depth = depth.min(rate.max(1));
        }
        Sizing {
            depth,
            step: (depth / 4).max(1),
            read_at: Instant::now(),
        }
    }

    /// No room for another step of records.
    fn full(&self, queued: u32) -> bool {
        queued + self.step > self.depth
    }
}

/// Whether the pull loop goes on.
enum Flow {
    Continue,
    Stop,
}

impl Dispatchers {
    /// A dispatcher's life: its flusher, its senders and the pull loop feeding them.
    pub(crate) async fn run(self: Arc<Self>, d: Arc<Dispatcher>) {
        let flusher = tokio::spawn(Arc::clone(&self).flush_loop(Arc::clone(&d)));
        // Pulled records wait here for a sender; `concurrency` sender tasks take them
        // one at a time, so at most that many requests are in flight.
        // Each sender waits on the queue by itself (no lock around it): a record
        // goes to whichever sender is free, without a hand-over from one to the next.
        let (tx, rx) = async_channel::bounded::<Queued>(PREFETCH_MAX);
        let mut senders = Senders::new(rx);
        let mut last: Option<Sizing> = None;
        while !d.stopping() {
            // Wait for room in the queue. Settings are read again only once there is
            // room or every 100 ms, not after every delivery.
            if let Some(s) = last {
                let done = d.done.notified();
                tokio::pin!(done);
                done.as_mut().enable();
                if s.full(tx.len() as u32) && s.read_at.elapsed() < Duration::from_millis(100) {
                    let _ = tokio::time::timeout(Duration::from_millis(20), done).await;
                    continue;
                }
            }
            let Ok(cfg) = self.broker.subscription_config(&d.name) else {
                break;
            };
            let Some(push) = cfg.push.clone() else { break };
            lock(&d.breaker).set_config(push.breaker);
            senders.resize(&self, &d, push.concurrency);
            if cfg.paused {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            let sizing = Sizing::of(&push);
            last = Some(sizing);
            if let Flow::Stop = self.top_up(&d, &tx, &push, sizing).await {
                break;
            }
        }
        // Senders drop what is queued and stop when the queue is closed.
        d.stop.store(true, Ordering::Release);
        drop(tx);
        senders.finish().await;
        d.finished.store(true, Ordering::Release);
        let _ = flusher.await;
        d.log.close();
        tracing::info!(subscription = %d.name, "Stopped push delivery.");
    }

    /// Pulls as many records as there is room for and the breaker allows, and queues
    /// them with the settings as they are now.
    async fn top_up(
        &self,
        d: &Dispatcher,
        tx: &async_channel::Sender<Queued>,
        push: &PushConfig,
        sizing: Sizing,
    ) -> Flow {
        let queued = tx.len() as u32;
        if sizing.full(queued) {
            return Flow::Continue;
        }
        let room = sizing.depth - queued;
        let now = now_ms();
        let (permit, change) = lock(&d.breaker).fetch(room, queued, now);
        d.breaker_changed(change);
        let n = match permit {
            Permit::Send(n) => n,
            Permit::WaitUntil(t) => {
                let nap = t.saturating_sub(now).clamp(10, 200);
                let _ = tokio::time::timeout(Duration::from_millis(nap), d.done.notified()).await;
                return Flow::Continue;
            }
        };
        let req = PullRequest {
            consumer: Arc::from(CONSUMER),
            max_records: n as usize,
            wait: Duration::from_millis(500),
            visibility_timeout_ms: Some(visibility_timeout_ms(push, sizing.depth)),
        };
        match self.broker.pull(&d.name, req).await {
            Ok(got) => {
                if got.is_empty() {
                    return Flow::Continue;
                }
                // Settings as they are now (a secret may have rotated meanwhile).
                let target = match self.broker.subscription_config(&d.name) {
                    Ok(c) if c.push.is_some() => Arc::new(Target::new(c, &self.guard)),
                    _ => return Flow::Stop,
                };
                for x in got {
                    if tx.send((Arc::clone(&target), x)).await.is_err() {
                        break;
                    }
                }
            }
            Err(BrokerError::SubscriptionNotFound(_)) => return Flow::Stop,
            Err(e) => {
                tracing::warn!(subscription = %d.name, error = %e, "Push pull failed.");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        Flow::Continue
    }
}

/// A lease long enough for the wait in the queue and the request itself.
fn visibility_timeout_ms(push: &PushConfig, depth: u32) -> u64 {
    ((u64::from(depth / push.concurrency) + 1) * push.timeout_ms
        + push
            .rate_limit_per_s
            .map_or(0, |r| u64::from(depth) * 1000 / u64::from(r.max(1)))
        + 10_000)
        .min(ferry_broker::subs::VISIBILITY_TIMEOUT_MS_MAX)
}
