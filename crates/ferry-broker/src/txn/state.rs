//! The state of one transactional id, and its transitions: pure functions, no I/O.
//!
//! ```text
//! Empty ──add──► Ongoing ──end(commit)──► PrepareCommit ──markers──► CompleteCommit
//!   ▲              │    └───end(abort)──► PrepareAbort  ──markers──► CompleteAbort
//!   └──────────────┴── (a Complete state takes the next add as a new transaction)
//! ```

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The most transactional ids the coordinator keeps.
pub const TRANSACTIONAL_IDS_MAX: usize = 10_000;
/// The longest transaction timeout a producer may ask for (Kafka's default
/// `transaction.max.timeout.ms`).
pub const TRANSACTION_TIMEOUT_MS_MAX: i32 = 900_000;
/// A transactional id with no transaction open that has not been used for this long is
/// forgotten (Kafka's default `transactional.id.expiration.ms`, 7 days).
pub const TRANSACTIONAL_ID_EXPIRATION_MS: u64 = 7 * 24 * 60 * 60 * 1000;
/// The most partitions one transaction may write to.
pub const PARTITIONS_PER_TRANSACTION_MAX: usize = 10_000;
/// The most groups one transaction may commit offsets for.
pub const GROUPS_PER_TRANSACTION_MAX: usize = 100;
/// The epoch from which InitProducerId gives a transactional id a new producer id.
pub const EPOCH_RENEW_AT: i16 = i16::MAX - 2;
/// The most offsets one transaction may commit.
pub const OFFSETS_PER_TRANSACTION_MAX: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TxnStatus {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
}

impl TxnStatus {
    /// Kafka's name of the state (ListTransactions, DescribeTransactions).
    pub fn kafka_name(self) -> &'static str {
        match self {
            TxnStatus::Empty => "Empty",
            TxnStatus::Ongoing => "Ongoing",
            TxnStatus::PrepareCommit => "PrepareCommit",
            TxnStatus::PrepareAbort => "PrepareAbort",
            TxnStatus::CompleteCommit => "CompleteCommit",
            TxnStatus::CompleteAbort => "CompleteAbort",
        }
    }

    /// The name Postgres keeps (shared mode), as the state's JSON spells it.
    pub fn stored_name(self) -> &'static str {
        match self {
            TxnStatus::Empty => "empty",
            TxnStatus::Ongoing => "ongoing",
            TxnStatus::PrepareCommit => "prepare_commit",
            TxnStatus::PrepareAbort => "prepare_abort",
            TxnStatus::CompleteCommit => "complete_commit",
            TxnStatus::CompleteAbort => "complete_abort",
        }
    }

    pub(crate) fn is_prepare(self) -> bool {
        matches!(self, TxnStatus::PrepareCommit | TxnStatus::PrepareAbort)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: u32,
}

/// An offset a transaction commits for a group when it commits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingOffset {
    pub topic: String,
    pub partition: u32,
    pub offset: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_epoch: Option<i32>,
}

/// One transactional id, as stored in `meta/transactions.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnMeta {
    pub producer_id: i64,
    pub epoch: i16,
    pub timeout_ms: i32,
    pub status: TxnStatus,
    #[serde(default)]
    pub partitions: BTreeSet<TopicPartition>,
    /// group → offsets, committed with the transaction.
    #[serde(default)]
    pub offsets: BTreeMap<String, Vec<PendingOffset>>,
    /// When the ongoing transaction began (ms since the epoch).
    #[serde(default)]
    pub started_ms: u64,
    /// When the state last changed.
    #[serde(default)]
    pub updated_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TxnError {
    #[error("the producer was fenced by a newer instance with the same transactional id")]
    ProducerFenced,
    #[error("the producer id does not belong to this transactional id")]
    InvalidProducerIdMapping,
    #[error("the request does not fit the transaction's state")]
    InvalidTxnState,
    #[error("the transaction is being completed; retry")]
    ConcurrentTransactions,
    #[error("the transaction timeout must be between 1 ms and {TRANSACTION_TIMEOUT_MS_MAX} ms")]
    InvalidTransactionTimeout,
    #[error("the coordinator keeps at most {TRANSACTIONAL_IDS_MAX} transactional ids")]
    TooManyTransactionalIds,
    #[error("the transaction holds too many partitions, groups or offsets")]
    TooLarge,
    /// Shared mode: another node coordinates the transactional id.
    #[error("another node coordinates this transactional id; ask for its coordinator again")]
    NotCoordinator,
    /// Shared mode: the metadata database could not be reached; retry.
    #[error("the transaction coordinator cannot reach the metadata database; retry")]
    CoordinatorUnavailable,
}

pub type TxnResult<T> = std::result::Result<T, TxnError>;

/// What InitProducerId does to a transactional id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitPlan {
    /// A transaction left open or half-ended by the previous instance, to finish first
    /// (markers written with this state's epoch); its status says commit or abort.
    pub finish_first: Option<TxnMeta>,
    /// The new state: the epoch bumped, nothing open.
    pub next: TxnMeta,
}

/// InitProducerId for a transactional id whose state is `current`. `expected` is the
/// producer id and epoch the client sent (v3+; `None` for -1). `new_id` gives a fresh
/// producer id when one is needed (first use, or the epoch exhausted).
pub fn init(
    current: Option<&TxnMeta>,
    expected: Option<(i64, i16)>,
    timeout_ms: i32,
    now_ms: u64,
    new_id: impl FnOnce() -> i64,
) -> TxnResult<InitPlan> {
    if timeout_ms <= 0 || timeout_ms > TRANSACTION_TIMEOUT_MS_MAX {
        return Err(TxnError::InvalidTransactionTimeout);
    }
    let fresh = |producer_id| TxnMeta {
        producer_id,
        epoch: 0,
        timeout_ms,
        status: TxnStatus::Empty,
        partitions: BTreeSet::new(),
        offsets: BTreeMap::new(),
        started_ms: 0,
        updated_ms: now_ms,
    };
    let Some(current) = current else {
        return Ok(InitPlan {
            finish_first: None,
            next: fresh(new_id()),
        });
    };
    if let Some((pid, epoch)) = expected {
        if pid != current.producer_id {
            return Err(TxnError::InvalidProducerIdMapping);
        }
        if epoch != current.epoch {
            return Err(TxnError::ProducerFenced);
        }
    }
    // The epoch fences the old instance; markers of a transaction it left open carry
    // the new epoch, so its late batches are refused.
    let (producer_id, epoch) = if current.epoch >= EPOCH_RENEW_AT {
        (new_id(), 0)
    } else {
        (current.producer_id, current.epoch + 1)
    };
    let finish_first = match current.status {
        TxnStatus::Ongoing => Some(TxnMeta {
            epoch: current.epoch.saturating_add(1),
            status: TxnStatus::PrepareAbort,
            updated_ms: now_ms,
            ..current.clone()
        }),
        TxnStatus::PrepareCommit | TxnStatus::PrepareAbort => Some(current.clone()),
        _ => None,
    };
    let mut next = fresh(producer_id);
    next.epoch = epoch;
    Ok(InitPlan { finish_first, next })
}

/// Whether a request of `producer_id` at `epoch` may act for the state `current`.
pub fn check_producer(current: &TxnMeta, producer_id: i64, epoch: i16) -> TxnResult<()> {
    if producer_id != current.producer_id {
        return Err(TxnError::InvalidProducerIdMapping);
    }
    if epoch != current.epoch {
        return Err(TxnError::ProducerFenced);
    }
    Ok(())
}

/// The state once a transaction (a new one, when none is ongoing) has `partitions` and
/// the offsets of `group` (AddPartitionsToTxn, AddOffsetsToTxn).
pub fn add(
    current: &TxnMeta,
    producer_id: i64,
    epoch: i16,
    partitions: &[TopicPartition],
    group: Option<&str>,
    now_ms: u64,
) -> TxnResult<TxnMeta> {
    check_producer(current, producer_id, epoch)?;
    if current.status.is_prepare() {
        return Err(TxnError::ConcurrentTransactions);
    }
    let mut next = current.clone();
    if next.status != TxnStatus::Ongoing {
        next.status = TxnStatus::Ongoing;
        next.partitions.clear();
        next.offsets.clear();
        next.started_ms = now_ms;
    }
    next.partitions.extend(partitions.iter().cloned());
    if let Some(g) = group {
        next.offsets.entry(g.to_string()).or_default();
    }
    if next.partitions.len() > PARTITIONS_PER_TRANSACTION_MAX
        || next.offsets.len() > GROUPS_PER_TRANSACTION_MAX
    {
        return Err(TxnError::TooLarge);
    }
    next.updated_ms = now_ms;
    Ok(next)
}

/// The state once `offsets` of `group` are staged in the ongoing transaction
/// (TxnOffsetCommit): the group must have been added (AddOffsetsToTxn).
pub fn stage_offsets(
    current: &TxnMeta,
    producer_id: i64,
    epoch: i16,
    group: &str,
    offsets: Vec<PendingOffset>,
    now_ms: u64,
) -> TxnResult<TxnMeta> {
    check_producer(current, producer_id, epoch)?;
    if current.status != TxnStatus::Ongoing || !current.offsets.contains_key(group) {
        return Err(TxnError::InvalidTxnState);
    }
    let mut next = current.clone();
    let staged = next.offsets.entry(group.to_string()).or_default();
    for o in offsets {
        staged.retain(|s| s.topic != o.topic || s.partition != o.partition);
        staged.push(o);
    }
    if next.offsets.values().map(Vec::len).sum::<usize>() > OFFSETS_PER_TRANSACTION_MAX {
        return Err(TxnError::TooLarge);
    }
    next.updated_ms = now_ms;
    Ok(next)
}

/// What EndTxn does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndPlan {
    /// Nothing to write: the answer is success at once (an empty transaction, or a
    /// retry of an end already done).
    Done,
    /// Persist this prepare state, write its markers, then complete it.
    Prepare(TxnMeta),
}

/// EndTxn: `commit` or abort the ongoing transaction.
pub fn end(
    current: &TxnMeta,
    producer_id: i64,
    epoch: i16,
    commit: bool,
    now_ms: u64,
) -> TxnResult<EndPlan> {
    check_producer(current, producer_id, epoch)?;
    let wanted = if commit {
        TxnStatus::PrepareCommit
    } else {
        TxnStatus::PrepareAbort
    };
    match current.status {
        TxnStatus::Ongoing => Ok(EndPlan::Prepare(TxnMeta {
            status: wanted,
            updated_ms: now_ms,
            ..current.clone()
        })),
        // A retry while the markers are written, or after a failure to write them.
        s if s == wanted => Ok(EndPlan::Prepare(current.clone())),
        TxnStatus::CompleteCommit if commit => Ok(EndPlan::Done),
        TxnStatus::CompleteAbort if !commit => Ok(EndPlan::Done),
        TxnStatus::Empty => Ok(EndPlan::Done),
        _ => Err(TxnError::InvalidTxnState),
    }
}

/// The state once a prepared transaction's markers are written.
pub fn complete(prepared: &TxnMeta, now_ms: u64) -> TxnMeta {
    debug_assert!(prepared.status.is_prepare());
    TxnMeta {
        status: if prepared.status == TxnStatus::PrepareCommit {
            TxnStatus::CompleteCommit
        } else {
            TxnStatus::CompleteAbort
        },
        partitions: BTreeSet::new(),
        offsets: BTreeMap::new(),
        updated_ms: now_ms,
        ..prepared.clone()
    }
}

/// Whether a transactional id is to be forgotten: no transaction open or being
/// decided, and unused for [`TRANSACTIONAL_ID_EXPIRATION_MS`].
pub fn expired_id(current: &TxnMeta, now_ms: u64) -> bool {
    matches!(
        current.status,
        TxnStatus::Empty | TxnStatus::CompleteCommit | TxnStatus::CompleteAbort
    ) && now_ms.saturating_sub(current.updated_ms) > TRANSACTIONAL_ID_EXPIRATION_MS
}

/// The abort of an ongoing transaction past its timeout, with the epoch bumped so that
/// its producer is fenced; `None` when it has not timed out.
pub fn expire(current: &TxnMeta, now_ms: u64) -> Option<TxnMeta> {
    let deadline = current
        .started_ms
        .saturating_add(u64::try_from(current.timeout_ms).unwrap_or(0));
    (current.status == TxnStatus::Ongoing && now_ms > deadline).then(|| TxnMeta {
        epoch: current.epoch.saturating_add(1),
        status: TxnStatus::PrepareAbort,
        updated_ms: now_ms,
        ..current.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(topic: &str, partition: u32) -> TopicPartition {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }

    #[test]
    fn stored_names_are_the_json_names_postgres_reads() {
        use TxnStatus::*;
        for s in [
            Empty,
            Ongoing,
            PrepareCommit,
            PrepareAbort,
            CompleteCommit,
            CompleteAbort,
        ] {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.stored_name()));
        }
    }

    #[test]
    fn init_gives_a_new_id_then_bumps_the_epoch_each_time() {
        let first = init(None, None, 60_000, 1, || 100).unwrap();
        assert_eq!(first.finish_first, None);
        assert_eq!((first.next.producer_id, first.next.epoch), (100, 0));
        let second = init(Some(&first.next), None, 60_000, 2, || unreachable!()).unwrap();
        assert_eq!((second.next.producer_id, second.next.epoch), (100, 1));
        assert_eq!(second.next.status, TxnStatus::Empty);
    }

    #[test]
    fn an_older_epoch_is_fenced_everywhere() {
        let s = init(None, None, 60_000, 1, || 5).unwrap().next;
        let newer = init(Some(&s), None, 60_000, 2, || 6).unwrap().next;
        assert_eq!(
            add(&newer, 5, 0, &[tp("t", 0)], None, 3),
            Err(TxnError::ProducerFenced)
        );
        assert_eq!(end(&newer, 5, 0, true, 3), Err(TxnError::ProducerFenced));
        assert_eq!(
            add(&newer, 9, 1, &[], None, 3),
            Err(TxnError::InvalidProducerIdMapping)
        );
        assert_eq!(
            init(Some(&newer), Some((5, 0)), 60_000, 4, || 7),
            Err(TxnError::ProducerFenced)
        );
    }

    #[test]
    fn a_transaction_goes_ongoing_prepare_complete() {
        let s = init(None, None, 60_000, 1, || 5).unwrap().next;
        let s = add(&s, 5, 0, &[tp("a", 0)], None, 10).unwrap();
        assert_eq!((s.status, s.started_ms), (TxnStatus::Ongoing, 10));
        let s = add(&s, 5, 0, &[tp("a", 1)], Some("g"), 11).unwrap();
        assert_eq!(s.partitions.len(), 2);
        let offsets = vec![PendingOffset {
            topic: "in".into(),
            partition: 0,
            offset: 42,
            metadata: None,
            leader_epoch: None,
        }];
        let s = stage_offsets(&s, 5, 0, "g", offsets, 12).unwrap();
        assert_eq!(
            stage_offsets(&s, 5, 0, "other", vec![], 12),
            Err(TxnError::InvalidTxnState)
        );
        let EndPlan::Prepare(p) = end(&s, 5, 0, true, 13).unwrap() else {
            panic!("an ongoing transaction is prepared")
        };
        assert_eq!(p.status, TxnStatus::PrepareCommit);
        assert_eq!(
            add(&p, 5, 0, &[tp("a", 0)], None, 14),
            Err(TxnError::ConcurrentTransactions)
        );
        // A retried EndTxn resumes the same decision; the other one is refused.
        assert_eq!(end(&p, 5, 0, true, 14), Ok(EndPlan::Prepare(p.clone())));
        assert_eq!(end(&p, 5, 0, false, 14), Err(TxnError::InvalidTxnState));
        let c = complete(&p, 15);
        assert_eq!(c.status, TxnStatus::CompleteCommit);
        assert!(c.partitions.is_empty() && c.offsets.is_empty());
        assert_eq!(end(&c, 5, 0, true, 16), Ok(EndPlan::Done));
        // The next add starts a new transaction.
        let n = add(&c, 5, 0, &[tp("b", 0)], None, 17).unwrap();
        assert_eq!((n.status, n.partitions.len()), (TxnStatus::Ongoing, 1));
    }

    #[test]
    fn init_over_an_ongoing_transaction_aborts_it_with_the_new_epoch() {
        let s = init(None, None, 60_000, 1, || 5).unwrap().next;
        let s = add(&s, 5, 0, &[tp("a", 0)], None, 2).unwrap();
        let plan = init(Some(&s), None, 60_000, 3, || 6).unwrap();
        let abort = plan.finish_first.unwrap();
        assert_eq!((abort.status, abort.epoch), (TxnStatus::PrepareAbort, 1));
        assert_eq!(abort.partitions.len(), 1);
        assert_eq!(plan.next.epoch, 1);
    }

    #[test]
    fn a_transaction_past_its_timeout_is_aborted_and_its_producer_fenced() {
        let s = init(None, None, 1_000, 1, || 5).unwrap().next;
        assert_eq!(expire(&s, 1_000_000), None);
        let s = add(&s, 5, 0, &[tp("a", 0)], None, 10).unwrap();
        assert_eq!(expire(&s, 1_010), None);
        let e = expire(&s, 1_011).unwrap();
        assert_eq!((e.status, e.epoch), (TxnStatus::PrepareAbort, 1));
        assert_eq!(end(&e, 5, 0, true, 1_012), Err(TxnError::ProducerFenced));
    }

    #[test]
    fn idle_transactional_ids_expire_unless_a_transaction_is_open() {
        let s = init(None, None, 1_000, 10, || 5).unwrap().next;
        let later = 10 + TRANSACTIONAL_ID_EXPIRATION_MS + 1;
        assert!(!expired_id(&s, later - 1));
        assert!(expired_id(&s, later));
        let open = add(&s, 5, 0, &[tp("a", 0)], None, 10).unwrap();
        assert!(!expired_id(&open, later + 1_000_000));
    }

    #[test]
    fn timeouts_out_of_range_are_refused_and_an_exhausted_epoch_takes_a_new_id() {
        assert_eq!(
            init(None, None, 0, 1, || 5),
            Err(TxnError::InvalidTransactionTimeout)
        );
        let mut s = init(None, None, 1_000, 1, || 5).unwrap().next;
        s.epoch = i16::MAX - 2;
        let n = init(Some(&s), None, 1_000, 2, || 77).unwrap().next;
        assert_eq!((n.producer_id, n.epoch), (77, 0));
    }
}
