//! Slows down failed authentications, per client address: each failure within
//! [`WINDOW`] of the previous one doubles the delay before the failure is answered,
//! from [`DELAY_MIN`] up to [`DELAY_MAX`]. A guesser gets a few tries a second at most;
//! a client that mistyped once waits a tenth of a second.
//!
//! At most [`HOSTS_MAX`] addresses are tracked; when full, the table starts afresh
//! (so a flood of addresses costs memory no more than that).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const DELAY_MIN: Duration = Duration::from_millis(100);
pub const DELAY_MAX: Duration = Duration::from_secs(5);
pub const WINDOW: Duration = Duration::from_secs(60);
pub const HOSTS_MAX: usize = 10_000;

#[derive(Default)]
pub struct Limiter {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl Limiter {
    /// Records a failure from `host` and returns how long to wait before answering it.
    pub fn failed(&self, host: &str) -> Duration {
        let now = Instant::now();
        let mut table = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if table.len() >= HOSTS_MAX && !table.contains_key(host) {
            table.clear();
        }
        let entry = table.entry(host.to_string()).or_insert((0, now));
        if now.duration_since(entry.1) > WINDOW {
            entry.0 = 0;
        }
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
        let doublings = entry.0.saturating_sub(1).min(16);
        DELAY_MIN.saturating_mul(1 << doublings).min(DELAY_MAX)
    }

    /// Forgets `host`'s failures after it authenticated.
    pub fn succeeded(&self, host: &str) {
        let mut table = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        table.remove(host);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_bound_and_reset_on_success() {
        let l = Limiter::default();
        assert_eq!(l.failed("a"), DELAY_MIN);
        assert_eq!(l.failed("a"), DELAY_MIN * 2);
        assert_eq!(l.failed("b"), DELAY_MIN);
        for _ in 0..20 {
            l.failed("a");
        }
        assert_eq!(l.failed("a"), DELAY_MAX);
        l.succeeded("a");
        assert_eq!(l.failed("a"), DELAY_MIN);
    }
}
