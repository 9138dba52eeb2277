//! The senders of a dispatcher: `concurrency` tasks, each taking queued records one at a
//! time and delivering them over its own connection, paced by the rate limit and held
//! back by the breaker (see [`crate::wait`]).

use crate::conn::Slot;
use crate::dispatcher::Dispatcher;
use crate::request::Target;
use crate::supervisor::Dispatchers;
use ferry_broker::now_ms;
use ferry_broker::subs::Delivery;
use ferry_log::sync::lock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// A record waiting for a sender, with the settings it was pulled under.
pub(crate) type Queued = (Arc<Target>, Delivery);

/// Records waiting for a sender.
type Queue = async_channel::Receiver<Queued>;

/// A dispatcher's sender tasks and the number of them wanted.
pub(crate) struct Senders {
    rx: Queue,
    wanted: Arc<AtomicU32>,
    alive: Arc<AtomicU32>,
    tasks: Vec<JoinHandle<()>>,
}

impl Senders {
    pub fn new(rx: Queue) -> Senders {
        Senders {
            rx,
            wanted: Arc::new(AtomicU32::new(0)),
            alive: Arc::new(AtomicU32::new(0)),
            tasks: Vec::new(),
        }
    }

    /// Starts senders up to `concurrency`; those above it stop after their delivery.
    pub fn resize(&mut self, ds: &Arc<Dispatchers>, d: &Arc<Dispatcher>, concurrency: u32) {
        self.wanted.store(concurrency, Ordering::Release);
        while self.alive.load(Ordering::Acquire) < concurrency {
            let id = self.alive.fetch_add(1, Ordering::AcqRel);
            self.tasks.push(tokio::spawn(Arc::clone(ds).sender(
                Arc::clone(d),
                id,
                self.rx.clone(),
                Arc::clone(&self.wanted),
                Arc::clone(&self.alive),
            )));
        }
        self.tasks.retain(|t| !t.is_finished());
    }

    /// Waits for every sender to stop (once the queue is closed, they drop what is
    /// queued).
    pub async fn finish(self) {
        drop(self.rx);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

impl Dispatchers {
    /// One sender: takes queued records and delivers them one at a time. Senders above
    /// the wanted number stop, so that a lower `concurrency` takes effect.
    async fn sender(
        self: Arc<Self>,
        d: Arc<Dispatcher>,
        id: u32,
        rx: Queue,
        wanted: Arc<AtomicU32>,
        alive: Arc<AtomicU32>,
    ) {
        // This sender's connection to the endpoint, kept between deliveries.
        let mut slot = Slot::default();
        loop {
            if id >= wanted.load(Ordering::Acquire) {
                break;
            }
            let Ok((target, mut delivery)) = rx.recv().await else {
                break;
            };
            // The breaker is asked before every request: while it is open, or its
            // probes are out, the record waits here (its lease kept) instead of going.
            let Some(ticket) = self.wait_for_breaker(&d, &target, &mut delivery).await else {
                continue;
            };
            if let Some(rate) = target.cfg.push.as_ref().and_then(|p| p.rate_limit_per_s) {
                wait_for_turn(&d, rate).await;
            }
            // Not sent: the subscription is going away, or the lease ran out meanwhile
            // (it is delivered again; an ack would be refused). The ticket goes back,
            // so that a probe is not lost.
            if d.stopping() || now_ms() + 1000 >= delivery.lease_expires_ms {
                lock(&d.breaker).give_back(ticket);
                continue;
            }
            d.in_flight.fetch_add(1, Ordering::AcqRel);
            self.deliver(&d, &target, delivery, ticket, &mut slot).await;
            d.in_flight.fetch_sub(1, Ordering::AcqRel);
            d.done.notify_waiters();
        }
        alive.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Waits for this request's turn under the rate limit (requests per second, shared by
/// the dispatcher's senders).
async fn wait_for_turn(d: &Dispatcher, rate: u32) {
    let slot = {
        let mut next = d.next_send.lock().await;
        let slot = (*next).max(Instant::now());
        *next = slot + Duration::from_secs_f64(1.0 / f64::from(rate));
        slot
    };
    tokio::time::sleep_until(slot.into()).await;
}
