//! One push subscription's dispatcher: the state its pull loop, senders and flusher
//! share (breaker, delivery log, pending acks and log entries, stop flags) and the
//! counters its status shows.

use crate::breaker::{Breaker, BreakerState};
use crate::dlog::{Attempt, DeliveryLog, Logged};
use ferry_broker::now_ms;
use ferry_broker::subs::push::BreakerConfig;
use ferry_broker::subs::PushMetrics;
use ferry_log::sync::lock;
use prometheus_client::metrics::histogram::Histogram;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Counters of a dispatcher's attempts, shown in the subscription's status.
#[derive(Debug)]
pub(crate) struct Stats {
    pub delivered: AtomicU64,
    pub retried: AtomicU64,
    pub dead_lettered: AtomicU64,
    /// The last answer's status; 0 before any answer.
    pub last_status: AtomicU32,
    pub last_error: Mutex<Option<String>>,
    /// Attempts by outcome (as [`OUTCOMES`]) and status class (as [`CLASSES`]).
    attempts: [[AtomicU64; CLASSES.len()]; OUTCOMES.len()],
    /// Seconds from sending a request to its outcome.
    pub latency: Histogram,
    /// Changes of the breaker's state, by the state changed to (as [`BREAKER_STATES`]).
    breaker_changes: [AtomicU64; BREAKER_STATES.len()],
}

/// Outcome labels of attempts, in the order of [`Logged`]'s variants.
const OUTCOMES: [&str; 3] = ["delivered", "retry", "dead_letter"];
/// Status class labels: no answer, then 1xx to 5xx.
const CLASSES: [&str; 6] = ["none", "1xx", "2xx", "3xx", "4xx", "5xx"];
const BREAKER_STATES: [BreakerState; 3] = [
    BreakerState::Closed,
    BreakerState::Open,
    BreakerState::HalfOpen,
];

fn breaker_label(s: BreakerState) -> &'static str {
    match s {
        BreakerState::Closed => "closed",
        BreakerState::Open => "open",
        BreakerState::HalfOpen => "half_open",
    }
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            delivered: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            last_status: AtomicU32::new(0),
            last_error: Mutex::new(None),
            attempts: Default::default(),
            // 1 ms .. 50 s.
            latency: Histogram::new(ferry_log::metrics::buckets(-3, 1)),
            breaker_changes: Default::default(),
        }
    }
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

    /// Counts an attempt for `/metrics`: its outcome, its answer's status (if one came)
    /// and how long it took.
    pub fn measure(&self, logged: Logged, status: Option<u16>, took: std::time::Duration) {
        let outcome = match logged {
            Logged::Delivered => 0,
            Logged::Retry => 1,
            Logged::DeadLetter => 2,
        };
        let class = match status {
            Some(s @ 100..=599) => usize::from(s / 100),
            _ => 0,
        };
        self.attempts[outcome][class].fetch_add(1, Ordering::Relaxed);
        self.latency.observe(took.as_secs_f64());
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

    /// What `/metrics` shows of this dispatcher.
    pub fn metrics(&self) -> PushMetrics {
        let breaker = breaker_label(lock(&self.breaker).state());
        let s = &self.stats;
        let mut attempts = Vec::new();
        for (o, row) in s.attempts.iter().enumerate() {
            for (c, n) in row.iter().enumerate() {
                let n = n.load(Ordering::Relaxed);
                if n > 0 {
                    attempts.push((OUTCOMES[o], CLASSES[c], n));
                }
            }
        }
        PushMetrics {
            subscription: self.name.clone(),
            breaker,
            breaker_changes: BREAKER_STATES
                .iter()
                .zip(&s.breaker_changes)
                .map(|(st, n)| (breaker_label(*st), n.load(Ordering::Relaxed)))
                .collect(),
            in_flight: self.in_flight.load(Ordering::Acquire),
            attempts,
            latency_seconds: s.latency.clone(),
        }
    }

    /// Logs a change of the breaker's state.
    pub fn breaker_changed(&self, change: Option<(BreakerState, BreakerState)>) {
        let name = &self.name;
        if let Some((_, to)) = change {
            if let Some(i) = BREAKER_STATES.iter().position(|s| *s == to) {
                self.stats.breaker_changes[i].fetch_add(1, Ordering::Relaxed);
            }
        }
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
