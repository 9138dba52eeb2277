//! Kafka transactions (exactly-once): the transaction coordinator.
//!
//! A transactional id names a producer across restarts: InitProducerId gives it a
//! producer id and bumps its epoch, fencing older instances. A transaction adds
//! partitions (and consumer groups) as it goes, then ends: the coordinator first
//! decides durably (`PrepareCommit` or `PrepareAbort` in `meta/transactions.json`),
//! then writes a COMMIT or ABORT marker to every partition of the transaction and
//! makes them durable, commits the transaction's group offsets (on commit), and only
//! then answers. The partitions' logs keep the last stable offset and the aborted
//! transactions (see `ferry_log::txn`).
//!
//! # Crash
//!
//! At open ([`crate::Broker::recover_transactions`]), a transaction found in a prepare
//! state is finished (markers written again: a marker for a producer with no open
//! transaction in a partition changes nothing); a transaction found ongoing is aborted
//! with a bumped epoch. So a transaction open at a crash is never half-visible.
//!
//! # Timeouts
//!
//! An ongoing transaction older than the timeout its producer asked for is aborted by
//! the maintenance task, with a bumped epoch: the producer is fenced.

mod coordinator;
mod ops;
mod state;
mod store;

pub use coordinator::TxnCoordinator;
pub use state::{
    PendingOffset, TopicPartition, TxnError, TxnMeta, TxnStatus, TRANSACTIONAL_IDS_MAX,
    TRANSACTION_TIMEOUT_MS_MAX,
};
