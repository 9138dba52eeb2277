//! A circuit breaker per endpoint. Closed: calls go out and their results are counted
//! over a sliding window; when enough calls failed it opens. Open: nothing is sent for
//! the cool-down, records wait on disk. Half-open: a few probes go out; if they all
//! succeed it closes, one failure opens it again.
//!
//! A sender takes a [`Ticket`] before each request ([`Breaker::take`]) and hands it in
//! with the request's result ([`Breaker::result`]), or gives it back when the request
//! is not sent after all ([`Breaker::give_back`]): every probe taken ends in a result or
//! goes back, so a half-open breaker always closes or opens again.

use ferry_broker::subs::push::BreakerConfig;
use std::collections::VecDeque;

/// Calls a window keeps, at most.
pub const WINDOW_CALLS_MAX: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    state: BreakerState,
    /// (time ms, succeeded) of calls in the window, oldest first.
    calls: VecDeque<(u64, bool)>,
    failures: usize,
    opened_at: u64,
    /// Half-open: probes sent and probes that succeeded.
    probes_sent: u32,
    probes_ok: u32,
    /// Counts the changes of state: tickets name the period they were taken in.
    generation: u64,
    pub changed_at: u64,
}

/// Leave to send one request, from [`Breaker::take`]. It ends in [`Breaker::result`], or
/// goes back with [`Breaker::give_back`] when the request is not sent.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a ticket ends in a result or is given back"]
pub struct Ticket {
    /// The period (of the breaker's state) it was taken in.
    generation: u64,
    /// Taken half-open: one of the period's probes.
    probe: bool,
}

/// What the breaker says about sending now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Send up to this many.
    Send(u32),
    /// Send nothing until this time (ms).
    WaitUntil(u64),
}

impl Breaker {
    pub fn new(config: BreakerConfig, now: u64) -> Self {
        Breaker {
            config,
            state: BreakerState::Closed,
            calls: VecDeque::new(),
            failures: 0,
            opened_at: 0,
            probes_sent: 0,
            probes_ok: 0,
            generation: 0,
            changed_at: now,
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    pub fn set_config(&mut self, config: BreakerConfig) {
        self.config = config;
    }

    fn set(&mut self, state: BreakerState, now: u64) -> Option<(BreakerState, BreakerState)> {
        let old = self.state;
        self.state = state;
        self.changed_at = now;
        self.generation += 1;
        self.probes_sent = 0;
        self.probes_ok = 0;
        if state == BreakerState::Open {
            self.opened_at = now;
        }
        if state == BreakerState::Closed {
            self.calls.clear();
            self.failures = 0;
        }
        (old != state).then_some((old, state))
    }

    /// How many calls may start now, of `wanted`. In half-open, starting counts as
    /// sending a probe. Returns a state change (open → half-open) if one happened.
    pub fn permit(
        &mut self,
        wanted: u32,
        now: u64,
    ) -> (Permit, Option<(BreakerState, BreakerState)>) {
        let mut change = None;
        if self.state == BreakerState::Open {
            let until = self.opened_at + self.config.cooldown_ms;
            if now < until {
                return (Permit::WaitUntil(until), None);
            }
            change = self.set(BreakerState::HalfOpen, now);
        }
        match self.state {
            BreakerState::Closed => (Permit::Send(wanted), change),
            BreakerState::HalfOpen => {
                let left = self.config.probes.saturating_sub(self.probes_sent);
                let n = left.min(wanted);
                self.probes_sent += n;
                if n == 0 {
                    // Probes are out: wait for their answers.
                    (Permit::WaitUntil(now + 50), change)
                } else {
                    (Permit::Send(n), change)
                }
            }
            BreakerState::Open => (Permit::WaitUntil(now + 50), change),
        }
    }

    /// How many records to fetch ahead of the senders, with `queued` already waiting.
    /// Closed: `room`. Open: none until the cool-down ends. Then (half-open) only
    /// enough for the probes, and only once the queue is empty: senders take their
    /// permits one by one with [`Breaker::permit`], so records fetched before the
    /// breaker opened wait instead of being sent. Ends the cool-down (open → half-open)
    /// when it is over.
    pub fn fetch(
        &mut self,
        room: u32,
        queued: u32,
        now: u64,
    ) -> (Permit, Option<(BreakerState, BreakerState)>) {
        if self.state == BreakerState::Closed {
            return (Permit::Send(room), None);
        }
        // Only moves open → half-open once the cool-down is over; counts no probe.
        let (p, change) = self.permit(0, now);
        if let Permit::WaitUntil(t) = p {
            if self.state == BreakerState::Open {
                return (Permit::WaitUntil(t), change);
            }
        }
        if queued > 0 {
            return (Permit::WaitUntil(now + 50), change);
        }
        (Permit::Send(self.config.probes.min(room).max(1)), change)
    }

    /// Leave to send one request now, or the time to ask again. Half-open, the ticket is
    /// one of the probes. Returns a state change (open → half-open) if one happened.
    pub fn take(
        &mut self,
        now: u64,
    ) -> (Result<Ticket, u64>, Option<(BreakerState, BreakerState)>) {
        let (permit, change) = self.permit(1, now);
        let ticket = match permit {
            Permit::Send(_) => Ok(Ticket {
                generation: self.generation,
                probe: self.state == BreakerState::HalfOpen,
            }),
            Permit::WaitUntil(t) => Err(t),
        };
        (ticket, change)
    }

    /// Takes back a ticket whose request was not sent (its record's lease ran out, the
    /// subscription is going away): a probe of the current half-open period can be
    /// taken again.
    pub fn give_back(&mut self, ticket: Ticket) {
        if self.is_current_probe(&ticket) {
            self.probes_sent -= 1;
        }
    }

    /// Counts the result of the request sent with `ticket`; returns a state change if
    /// one happened. Half-open, only the period's probes decide: the result of a
    /// request sent before (the breaker opened meanwhile) changes nothing.
    pub fn result(
        &mut self,
        ticket: Ticket,
        ok: bool,
        now: u64,
    ) -> Option<(BreakerState, BreakerState)> {
        if self.state == BreakerState::HalfOpen && !self.is_current_probe(&ticket) {
            return None;
        }
        self.record(ok, now)
    }

    fn is_current_probe(&self, ticket: &Ticket) -> bool {
        ticket.probe
            && ticket.generation == self.generation
            && self.state == BreakerState::HalfOpen
            && self.probes_sent > 0
    }

    /// Counts a call's result; returns a state change if one happened.
    pub fn record(&mut self, ok: bool, now: u64) -> Option<(BreakerState, BreakerState)> {
        match self.state {
            BreakerState::HalfOpen => {
                if !ok {
                    return self.set(BreakerState::Open, now);
                }
                self.probes_ok += 1;
                if self.probes_ok >= self.config.probes {
                    return self.set(BreakerState::Closed, now);
                }
                None
            }
            // Results of calls started before it opened change nothing.
            BreakerState::Open => None,
            BreakerState::Closed => {
                self.calls.push_back((now, ok));
                if !ok {
                    self.failures += 1;
                }
                // The window counts at most the latest calls: memory stays bounded at any
                // request rate.
                if self.calls.len() > WINDOW_CALLS_MAX {
                    if let Some((_, was_ok)) = self.calls.pop_front() {
                        if !was_ok {
                            self.failures -= 1;
                        }
                    }
                }
                let horizon = now.saturating_sub(self.config.window_ms);
                while let Some(&(t, was_ok)) = self.calls.front() {
                    if t >= horizon {
                        break;
                    }
                    self.calls.pop_front();
                    if !was_ok {
                        self.failures -= 1;
                    }
                }
                let n = self.calls.len();
                if n >= self.config.min_calls as usize
                    && self.failures * 100 >= n * usize::from(self.config.failure_rate_percent)
                {
                    return self.set(BreakerState::Open, now);
                }
                None
            }
        }
    }

    /// Calls and failures in the window (closed state).
    pub fn window(&self) -> (usize, usize) {
        (self.calls.len(), self.failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BreakerConfig {
        BreakerConfig {
            failure_rate_percent: 50,
            window_ms: 1000,
            min_calls: 4,
            cooldown_ms: 500,
            probes: 2,
        }
    }

    #[test]
    fn opens_on_failure_rate_then_probes_then_closes() {
        let mut b = Breaker::new(config(), 0);
        assert_eq!(b.record(false, 10), None);
        assert_eq!(b.record(false, 20), None);
        assert_eq!(b.record(true, 30), None, "too few calls to judge");
        assert_eq!(
            b.record(false, 40),
            Some((BreakerState::Closed, BreakerState::Open))
        );
        assert_eq!(b.permit(8, 100).0, Permit::WaitUntil(540));
        let (p, change) = b.permit(8, 540);
        assert_eq!(p, Permit::Send(2), "two probes");
        assert_eq!(change, Some((BreakerState::Open, BreakerState::HalfOpen)));
        assert_eq!(b.permit(8, 541).0, Permit::WaitUntil(591));
        assert_eq!(b.record(true, 560), None);
        assert_eq!(
            b.record(true, 570),
            Some((BreakerState::HalfOpen, BreakerState::Closed))
        );
        assert_eq!(b.permit(8, 600).0, Permit::Send(8));
    }

    #[test]
    fn a_failed_probe_opens_again_and_old_failures_leave_the_window() {
        let mut b = Breaker::new(config(), 0);
        for t in 0..3 {
            b.record(false, t);
        }
        // The window slides: three old failures drop out.
        for t in 0..4 {
            assert_eq!(b.record(true, 2000 + t), None);
        }
        assert_eq!(b.window(), (4, 0));
        for t in 0..4 {
            b.record(false, 3000 + t);
        }
        assert_eq!(b.state(), BreakerState::Open);
        let _ = b.permit(1, 4000);
        assert_eq!(
            b.record(false, 4001),
            Some((BreakerState::HalfOpen, BreakerState::Open))
        );
        assert_eq!(b.permit(1, 4002).0, Permit::WaitUntil(4501));
    }

    /// The sequence of issue 19: one sender, three probes, the endpoint failing and then
    /// healthy. The first probe's record is sent and succeeds; the next two records have
    /// outlived their lease while queued, so their senders give their tickets back; the
    /// records pulled again then take those probes, and the breaker closes.
    #[test]
    fn probes_given_back_go_out_again_and_the_breaker_closes() {
        let mut b = Breaker::new(
            BreakerConfig {
                probes: 3,
                ..config()
            },
            0,
        );
        for t in 0..4 {
            b.record(false, t);
        }
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.take(100).0, Err(503), "open: wait for the cool-down");
        let (first, change) = b.take(503);
        assert_eq!(change, Some((BreakerState::Open, BreakerState::HalfOpen)));
        let first = first.unwrap();
        assert_eq!(b.result(first, true, 510), None);
        let expired = [b.take(511).0.unwrap(), b.take(512).0.unwrap()];
        assert_eq!(b.take(513).0, Err(563), "three probes out");
        for t in expired {
            b.give_back(t);
        }
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let again = [b.take(600).0.unwrap(), b.take(601).0.unwrap()];
        assert_eq!(b.take(602).0, Err(652));
        let [a, c] = again;
        assert_eq!(b.result(a, true, 610), None);
        assert_eq!(
            b.result(c, true, 620),
            Some((BreakerState::HalfOpen, BreakerState::Closed))
        );
        assert!(b.take(630).0.is_ok());
    }

    #[test]
    fn tickets_of_another_period_neither_count_nor_come_back() {
        let mut b = Breaker::new(config(), 0);
        // Taken while closed; the breaker opens and goes half-open meanwhile.
        let old = b.take(0).0.unwrap();
        let stale = b.take(1).0.unwrap();
        for t in 0..4 {
            b.record(false, t);
        }
        let probe = b.take(600).0.unwrap();
        assert_eq!(b.state(), BreakerState::HalfOpen);
        // An older request's failure does not reopen it, nor its success close it.
        assert_eq!(b.result(old, false, 601), None);
        b.give_back(stale);
        let second = b.take(602).0.unwrap();
        assert_eq!(
            b.take(603).0,
            Err(653),
            "the stale ticket gave back no probe"
        );
        assert_eq!(b.result(probe, true, 604), None);
        assert_eq!(
            b.result(second, true, 605),
            Some((BreakerState::HalfOpen, BreakerState::Closed))
        );
        // A probe of an earlier half-open period, given back late, takes nothing away.
        for t in 0..4 {
            b.record(false, 1000 + t);
        }
        let late = b.take(1503).0.unwrap();
        let failing = b.take(1504).0.unwrap();
        assert_eq!(
            b.result(failing, false, 1505),
            Some((BreakerState::HalfOpen, BreakerState::Open))
        );
        let _ = b.take(2005).0.unwrap();
        b.give_back(late);
        let _ = b.take(2006).0.unwrap();
        assert_eq!(b.take(2007).0, Err(2057), "still two probes in this period");
    }

    #[test]
    fn fetching_stops_while_open_and_gets_only_probes_once_the_queue_is_empty() {
        let mut b = Breaker::new(config(), 0);
        assert_eq!(b.fetch(100, 50, 0).0, Permit::Send(100));
        for t in 0..4 {
            b.record(false, t);
        }
        assert_eq!(b.state(), BreakerState::Open);
        // Open: nothing fetched, whatever the queue holds.
        assert_eq!(b.fetch(100, 0, 100).0, Permit::WaitUntil(503));
        // The cool-down is over: half-open, but queued records go first (as probes).
        let (p, change) = b.fetch(100, 3, 503);
        assert_eq!(p, Permit::WaitUntil(553));
        assert_eq!(change, Some((BreakerState::Open, BreakerState::HalfOpen)));
        assert_eq!(b.fetch(100, 0, 560).0, Permit::Send(2));
        // Fetching counted no probe: senders still get both.
        assert_eq!(b.permit(1, 561).0, Permit::Send(1));
        assert_eq!(b.permit(1, 562).0, Permit::Send(1));
        assert_eq!(b.permit(1, 563).0, Permit::WaitUntil(613));
    }
}
