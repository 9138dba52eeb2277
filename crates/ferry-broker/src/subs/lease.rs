//! Lease ids and their checks.
//!
//! A lease id names the record, its attempt, and a token only this lease has:
//! `<partition>-<offset>-<attempt>-<token hex>`. The token's high 32 bits are the
//! subscription's epoch (different in every run of the process), so a lease id of an
//! earlier run never matches a lease of this one.

use super::state::{PState, State};
use super::LEASES_PER_REQUEST_MAX;
use crate::error::{BrokerError, Result};
use std::collections::HashSet;

/// A record of a partition: what a lease, an ack or a dead letter is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordAt {
    pub partition: u32,
    pub offset: u64,
}

/// A parsed lease id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseId {
    pub at: RecordAt,
    pub attempt: u32,
    pub token: u64,
}

impl LeaseId {
    pub fn parse(id: &str) -> Option<LeaseId> {
        let mut it = id.split('-');
        let partition = it.next()?.parse().ok()?;
        let offset = it.next()?.parse().ok()?;
        let attempt = it.next()?.parse().ok()?;
        let token = u64::from_str_radix(it.next()?, 16).ok()?;
        if it.next().is_some() {
            return None;
        }
        Some(LeaseId {
            at: RecordAt { partition, offset },
            attempt,
            token,
        })
    }
}

impl std::fmt::Display for LeaseId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}-{}-{}-{:x}",
            self.at.partition, self.at.offset, self.attempt, self.token
        )
    }
}

/// What to do with lease ids that name no live lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownLeases {
    /// Fail the whole request; nothing changes.
    Refuse,
    /// Skip them and apply the rest (the push dispatcher's acks: a lease that expired
    /// meanwhile brings its record again).
    Skip,
}

/// Checks lease ids against the state: each must name a live lease. Returns the
/// records of the live ones, each once.
pub(crate) fn check(
    state: &State,
    ids: &[String],
    unknown: UnknownLeases,
) -> Result<Vec<RecordAt>> {
    if ids.is_empty() || ids.len() > LEASES_PER_REQUEST_MAX {
        return Err(BrokerError::InvalidConfig(format!(
            "lease_ids must hold between 1 and {LEASES_PER_REQUEST_MAX} ids, got {}",
            ids.len()
        )));
    }
    let mut live = Vec::with_capacity(ids.len());
    let mut live_seen = HashSet::with_capacity(ids.len());
    let (mut missing, mut acked) = (Vec::new(), Vec::new());
    let mut seen = HashSet::new();
    for id in ids {
        if !seen.insert(id.as_str()) {
            continue;
        }
        let Some(lease) = LeaseId::parse(id) else {
            missing.push(id.clone());
            continue;
        };
        let RecordAt { partition, offset } = lease.at;
        match state.pending(partition, offset) {
            Some(pending)
                if pending.attempt == lease.attempt
                    && matches!(&pending.state, PState::Leased { token, .. } if *token == lease.token) =>
            {
                // One lease may be spelled several ways ("0-5-…", "0-05-…"): once.
                if live_seen.insert(lease.at) {
                    live.push(lease.at)
                }
            }
            _ if state.is_done(partition, offset) => acked.push(id.clone()),
            _ => missing.push(id.clone()),
        }
    }
    if unknown == UnknownLeases::Skip {
        return Ok(live);
    }
    if !missing.is_empty() {
        return Err(BrokerError::LeaseNotFound {
            ids: missing,
            reason: "no such lease: it expired (the record may be delivered again), was given back, or never existed".into(),
        });
    }
    if !acked.is_empty() {
        return Err(BrokerError::LeaseAlreadyAcked { ids: acked });
    }
    Ok(live)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_id_reads_back_as_written() {
        let l = LeaseId {
            at: RecordAt {
                partition: 3,
                offset: 12_345,
            },
            attempt: 2,
            token: 0xdead_beef_0000_0001,
        };
        assert_eq!(l.to_string(), "3-12345-2-deadbeef00000001");
        assert_eq!(LeaseId::parse(&l.to_string()), Some(l));
    }

    /// Regression: one lease spelled two ways ("0-5-…" and "0-05-…") was counted, and
    /// acked or given back, twice.
    #[test]
    fn a_lease_named_twice_in_different_spellings_counts_once() {
        let mut state = State::new(false);
        let lease = PState::Leased {
            expires: 10,
            token: 0xab,
            consumer: std::sync::Arc::from("c"),
        };
        state.set(0, 5, 1, super::super::state::NO_KEY, lease);
        let ids = ["0-5-1-ab".to_string(), "0-05-1-AB".to_string()];
        for unknown in [UnknownLeases::Refuse, UnknownLeases::Skip] {
            let live = check(&state, &ids, unknown).unwrap();
            assert_eq!(
                live,
                vec![RecordAt {
                    partition: 0,
                    offset: 5
                }]
            );
        }
    }

    #[test]
    fn malformed_lease_ids_are_refused() {
        for id in ["", "1-2-3", "1-2-3-x", "1-2-3-4-5", "-1-2-3-4", "a-2-3-4"] {
            assert_eq!(LeaseId::parse(id), None, "{id}");
        }
    }
}
