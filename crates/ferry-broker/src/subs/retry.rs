//! How long a record waits before its next delivery after a failed one.

use crate::error::{BrokerError, Result};
use rand::Rng;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Again at once.
    #[default]
    Immediate,
    /// `delay_ms` every time.
    Fixed,
    /// `delay_ms`, then one `step_ms` more for each further attempt.
    Linear,
    /// `delay_ms`, doubling each attempt.
    Exponential,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Jitter {
    #[default]
    None,
    /// Anywhere in `[0, d]`.
    Full,
    /// `d/2` plus anywhere in `[0, d/2]`.
    Equal,
    /// Anywhere in `[delay_ms, 3 × the previous delay]`, capped.
    Decorrelated,
}

/// Longest delay a policy may give: one week.
pub const RETRY_DELAY_MS_MAX: u64 = 7 * 24 * 3600 * 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    #[serde(default)]
    pub strategy: Strategy,
    #[serde(default)]
    pub delay_ms: u64,
    /// Linear only; `delay_ms` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_ms: Option<u64>,
    #[serde(default = "default_max_delay")]
    pub max_delay_ms: u64,
    #[serde(default)]
    pub jitter: Jitter,
}

fn default_max_delay() -> u64 {
    3_600_000
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            strategy: Strategy::Immediate,
            delay_ms: 0,
            step_ms: None,
            max_delay_ms: default_max_delay(),
            jitter: Jitter::None,
        }
    }
}

impl RetryPolicy {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(BrokerError::InvalidConfig(format!("retry: {m}")));
        if self.max_delay_ms > RETRY_DELAY_MS_MAX {
            return bad(format!(
                "max_delay_ms {} is over the limit of {RETRY_DELAY_MS_MAX} (one week)",
                self.max_delay_ms
            ));
        }
        if self.delay_ms > self.max_delay_ms {
            return bad(format!(
                "delay_ms {} is over max_delay_ms {}",
                self.delay_ms, self.max_delay_ms
            ));
        }
        if self.strategy != Strategy::Immediate && self.delay_ms == 0 {
            return bad(format!(
                "strategy {:?} needs delay_ms > 0 (or use \"immediate\")",
                self.strategy
            ));
        }
        Ok(())
    }

    /// The delay before delivery `attempt + 1`, after `attempt` deliveries (≥ 1), with
    /// no jitter.
    pub fn base_delay(&self, attempt: u32) -> u64 {
        let n = u64::from(attempt.max(1) - 1);
        let d = match self.strategy {
            Strategy::Immediate => 0,
            Strategy::Fixed => self.delay_ms,
            Strategy::Linear => self
                .delay_ms
                .saturating_add(self.step_ms.unwrap_or(self.delay_ms).saturating_mul(n)),
            Strategy::Exponential => self.delay_ms.saturating_mul(1u64 << n.min(40)),
        };
        d.min(self.max_delay_ms)
    }

    /// The delay before the next delivery, jitter applied.
    pub fn delay(&self, attempt: u32, rng: &mut impl Rng) -> u64 {
        let d = self.base_delay(attempt);
        if d == 0 {
            return 0;
        }
        match self.jitter {
            Jitter::None => d,
            Jitter::Full => rng.gen_range(0..=d),
            Jitter::Equal => d / 2 + rng.gen_range(0..=d - d / 2),
            Jitter::Decorrelated => {
                let prev = if attempt <= 1 {
                    self.delay_ms
                } else {
                    self.base_delay(attempt - 1)
                };
                let hi = prev
                    .saturating_mul(3)
                    .clamp(self.delay_ms, self.max_delay_ms);
                rng.gen_range(self.delay_ms.min(hi)..=hi)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(strategy: Strategy, jitter: Jitter) -> RetryPolicy {
        RetryPolicy {
            strategy,
            delay_ms: 100,
            step_ms: Some(50),
            max_delay_ms: 1000,
            jitter,
        }
    }

    #[test]
    fn schedules_follow_their_strategy() {
        let base = |s| {
            (1..=6)
                .map(|a| policy(s, Jitter::None).base_delay(a))
                .collect::<Vec<_>>()
        };
        assert_eq!(base(Strategy::Immediate), [0; 6]);
        assert_eq!(base(Strategy::Fixed), [100; 6]);
        assert_eq!(base(Strategy::Linear), [100, 150, 200, 250, 300, 350]);
        assert_eq!(
            base(Strategy::Exponential),
            [100, 200, 400, 800, 1000, 1000]
        );
        assert_eq!(
            policy(Strategy::Exponential, Jitter::None).base_delay(u32::MAX),
            1000
        );
    }

    #[test]
    fn jitter_stays_in_its_bounds() {
        let mut rng = rand::thread_rng();
        for _ in 0..1000 {
            let d = policy(Strategy::Fixed, Jitter::Full).delay(3, &mut rng);
            assert!(d <= 100);
            let d = policy(Strategy::Fixed, Jitter::Equal).delay(3, &mut rng);
            assert!((50..=100).contains(&d));
            let d = policy(Strategy::Exponential, Jitter::Decorrelated).delay(3, &mut rng);
            assert!((100..=600).contains(&d), "{d}");
        }
    }
}
