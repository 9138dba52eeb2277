//! One push subscription's dispatcher: the state its pull loop, senders and flusher
//! share (breaker, delivery log, pending acks and log entries, stop flags) and the
//! counters its status shows.

use crate::breaker::{Breaker, BreakerState};
use crate::dlog::{Attempt, DeliveryLog, Logged};
use ferry_broker::now_ms;
use ferry_broker::subs::push::BreakerConfig;
use ferry_log::sync::lock;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Counters of a dispatcher's attempts, shown in the subscription's status.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub delivered: AtomicU64,
    pub retried: AtomicU64,
    pub dead_lettered: AtomicU64,
    /// The last answer's status; 0 before any answer.
    pub last_status: AtomicU32,
    pub last_error: Mutex<Option<String>>,
}

impl Stats {
    /// Counts an attempt by how the delivery log names it.
    pub fn count(&self, logged: Logged) {
        let counter = match logged {
            Logged::Delivered => &self.delivered,
            Logged::Retry => &self.retried,
            Logged::DeadLetter => &self.dead_lettered,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

pub(crate) struct Dispatcher {
    pub name: String,
    pub breaker: Mutex<Breaker>,
    pub log: DeliveryLog,
    pub in_flight: AtomicU32,
    pub done: tokio::sync::Notify,
    pub stop: AtomicBool,
    /// Every sender has stopped: the flusher may end once it has flushed.
    pub finished: AtomicBool,
    pub stats: Stats,
    pub next_send: tokio::sync::Mutex<Instant>,
    /// Leases of delivered records, acked by the flusher in one batch.
    pub pending_acks: Mutex<Vec<String>>,
    /// Attempts for the delivery log, written by the flusher in one batch.
    pub pending_log: Mutex<Vec<Attempt>>,
}

impl Dispatcher {
    pub fn new(name: String, breaker: BreakerConfig, log: DeliveryLog) -> Dispatcher {
        Dispatcher {
            name,
            breaker: Mutex::new(Breaker::new(breaker, now_ms())),
            log,
            in_flight: AtomicU32::new(0),
            done: tokio::sync::Notify::new(),
            stop: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            stats: Stats::default(),
            next_send: tokio::sync::Mutex::new(Instant::now()),
            pending_acks: Mutex::new(Vec::new()),
            pending_log: Mutex::new(Vec::new()),
        }
    }

    /// Asks the dispatcher's tasks to stop.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.done.notify_waiters();
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// The dispatcher's live state for the subscription's status.
    pub fn status(&self) -> Value {
        let b = lock(&self.breaker);
        let (calls, failures) = b.window();
        json!({
            "breaker": b.state(),
            "breaker_changed_at": b.changed_at,
            "window_calls": calls,
            "window_failures": failures,
            "in_flight": self.in_flight.load(Ordering::Acquire),
            "delivered": self.stats.delivered.load(Ordering::Relaxed),
            "retried": self.stats.retried.load(Ordering::Relaxed),
            "dead_lettered": self.stats.dead_lettered.load(Ordering::Relaxed),
            "last_status": match self.stats.last_status.load(Ordering::Relaxed) { 0 => Value::Null, s => json!(s) },
            "last_error": lock(&self.stats.last_error).clone(),
        })
    }

    /// Logs a change of the breaker's state.
    pub fn breaker_changed(&self, change: Option<(BreakerState, BreakerState)>) {
        let name = &self.name;
        if let Some((from, to)) = change {
            match to {
                BreakerState::Open => {
                    tracing::warn!(subscription = %name, ?from, ?to, "Circuit breaker opened: the endpoint is failing; records wait on disk.")
                }
                _ => {
                    tracing::info!(subscription = %name, ?from, ?to, "Circuit breaker changed state.")
                }
            }
        }
    }
}
