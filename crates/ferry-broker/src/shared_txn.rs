//! Kafka transactions in shared mode: each transactional id has one coordinating node,
//! named by a lease row in Postgres (kind [`TRANSACTION_LEASE`]), and its state lives
//! in Postgres (migration 0008).
//!
//! - The coordinator runs the same state machine as the local mode
//!   ([`crate::txn`]); a change is stored in Postgres, under the lease's epoch, before
//!   it is acted on or answered. A node that lost the lease writes nothing.
//! - Any node appends a transaction's batches. Postgres admits each one in the commit
//!   that gives it its offsets: its producer's transaction must be ongoing, at its
//!   epoch, and hold the partition. The row lock that check takes orders it against
//!   the coordinator's decision, so no batch follows its transaction's markers.
//! - Markers are appended like any batch; the commit that appends one closes the
//!   transaction in the partition, records the range of an aborted one, and moves the
//!   partition's last stable offset. `read_committed` reads stop there and are told of
//!   the aborted ranges they cover.
//! - TxnOffsetCommit, taken by the group's coordinator, stages offsets in Postgres; the
//!   coordinator of the transaction commits them to the group with its completion, in
//!   one Postgres transaction. The group's coordinator reads a group's offsets from
//!   Postgres before it answers OffsetFetch, so a committed transaction's offsets are
//!   seen at once.
//! - When a coordinator dies, the node rendezvous hashing picks takes the lease within
//!   a second (or at the producer's next request) and goes on from the stored state: a
//!   decided transaction is finished, an ongoing one goes on, or is aborted at its
//!   timeout.

use crate::error::{BrokerError, Result};
use crate::shared_groups::pick;
use crate::txn::{TopicPartition, TxnError, TxnMeta, TxnStatus};
use crate::Broker;
use bytes::Bytes;
use ferry_log::sync::lock;
use ferry_shared::{
    AppendBatch, Lease, LeaseHolder, Node, Outcome, SharedError, TRANSACTION_LEASE,
};
use std::time::Instant;

/// The longest transactional id a coordinator takes a lease for, in bytes (as the
/// Kafka handlers check).
const TXN_ID_BYTES_MAX: usize = 1024;

/// Unserved transactional ids looked at per pass, at most.
const UNSERVED_PER_PASS: i64 = 256;

/// The coordinator epoch written in markers.
const COORDINATOR_EPOCH: i32 = 0;

/// A transactional id's state as Postgres keeps it (JSON), checked.
fn parse_state(txn_id: &str, json: &str) -> Result<TxnMeta> {
    serde_json::from_str(json).map_err(|e| {
        BrokerError::Meta(format!(
            "the stored state of transactional id '{txn_id}' does not parse: {e}"
        ))
    })
}

fn unavailable(e: impl std::fmt::Display) -> BrokerError {
    tracing::debug!(error = %e, "A transaction request could not reach the metadata database.");
    BrokerError::Transaction(TxnError::CoordinatorUnavailable)
}

impl Broker {
    /// Makes sure this node may coordinate `txn_id`: always in the local mode; in
    /// shared mode while it holds the id's lease, taking it when it is free and loading
    /// the stored state. [`TxnError::NotCoordinator`] when another live node holds it.
    /// Unless `create` (InitProducerId), an id with no stored state is refused with
    /// INVALID_PRODUCER_ID_MAPPING and its lease given back, so that requests naming
    /// made-up ids leave no leases behind.
    pub(crate) async fn claim_transaction(&self, txn_id: &str, create: bool) -> Result<()> {
        let Some(sh) = &self.shared else {
            return Ok(());
        };
        if sh.leases.transaction_epoch(txn_id).is_some() {
            return Ok(());
        }
        if txn_id.is_empty() || txn_id.len() > TXN_ID_BYTES_MAX {
            return Err(BrokerError::Transaction(TxnError::InvalidTxnState));
        }
        let _one = sh.leases.claims.lock().await;
        if sh.leases.transaction_epoch(txn_id).is_some() {
            return Ok(());
        }
        let node = sh.node_id();
        if node == 0 {
            return Err(unavailable("this node has not joined the cluster yet"));
        }
        self.txns.check_room(txn_id)?;
        if lock(&sh.leases.transactions).len() >= crate::txn::TRANSACTIONAL_IDS_MAX {
            return Err(BrokerError::Transaction(TxnError::TooManyTransactionalIds));
        }
        let meta = sh.log.metadata();
        let epoch = match meta.take_lease(TRANSACTION_LEASE, txn_id, node).await {
            Ok(LeaseHolder::Taken { epoch }) => epoch,
            Ok(LeaseHolder::Other { .. }) => {
                return Err(BrokerError::Transaction(TxnError::NotCoordinator))
            }
            Err(e) => return Err(unavailable(e)),
        };
        let same_tenure = lock(&sh.leases.transactions)
            .get(txn_id)
            .is_some_and(|(held, _)| *held == epoch);
        if !same_tenure {
            // No request of an earlier tenure is between loading its state and storing
            // the next: it would store that under this tenure's epoch.
            let _ops = self.txns.ops.lock().await;
            // Read after the lease was taken: every write of the previous holder is in.
            match meta.transaction(txn_id).await.map_err(unavailable)? {
                Some(json) => {
                    let state = parse_state(txn_id, &json)?;
                    tracing::info!(transactional_id = %txn_id, status = state.status.kafka_name(), "Coordinating a transactional id.");
                    self.txns.install(txn_id, state);
                }
                None if create => self.txns.drop_local(txn_id),
                None => {
                    self.txns.drop_local(txn_id);
                    if let Err(e) = meta
                        .release_lease(TRANSACTION_LEASE, txn_id, node, epoch)
                        .await
                    {
                        tracing::debug!(transactional_id = %txn_id, error = %e, "Could not give back the lease of an unknown transactional id; it goes when this node stops.");
                    }
                    return Err(BrokerError::Transaction(TxnError::InvalidProducerIdMapping));
                }
            }
        }
        lock(&sh.leases.transactions).insert(txn_id.to_string(), (epoch, Instant::now()));
        Ok(())
    }

    /// The node that coordinates `txn_id` in shared mode: the live holder of its lease,
    /// else the live node rendezvous hashing picks. `None` in the local mode.
    pub async fn transaction_coordinator(&self, txn_id: &str) -> Option<Result<Node>> {
        self.lease_coordinator(TRANSACTION_LEASE, txn_id).await
    }

    /// The transactional ids a listing on this node names, with their states: every
    /// one in the local mode; in shared mode, read from Postgres, those this node
    /// coordinates or would take, so that a listing over every node names each once.
    pub async fn listed_transactions(&self) -> Result<Vec<(String, TxnMeta)>> {
        let Some(sh) = &self.shared else {
            return Ok(self.txns.all());
        };
        let rows = sh
            .log
            .metadata()
            .transactions(crate::txn::TRANSACTIONAL_IDS_MAX as i64)
            .await
            .map_err(unavailable)?;
        let nodes = self.shared_nodes().unwrap_or_default();
        let me = sh.node_id();
        let mut out = Vec::new();
        for (id, json, holder) in rows {
            let mine = match holder {
                Some(node) => node == me,
                None => pick(&id, &nodes).is_some_and(|n| n.node_id == me),
            };
            if mine {
                out.push((id.clone(), parse_state(&id, &json)?));
            }
        }
        Ok(out)
    }

    /// A transactional id's state: in shared mode as Postgres holds it, so that any
    /// node describes any id.
    pub async fn transaction_state(&self, txn_id: &str) -> Result<Option<TxnMeta>> {
        let Some(sh) = &self.shared else {
            return Ok(self.txns.get(txn_id));
        };
        match sh
            .log
            .metadata()
            .transaction(txn_id)
            .await
            .map_err(unavailable)?
        {
            Some(json) => Ok(Some(parse_state(txn_id, &json)?)),
            None => Ok(None),
        }
    }

    /// DescribeProducers: a partition's idempotent producers, and the transactions
    /// open in it (producer id, first offset); in shared mode as Postgres keeps them
    /// (a producer's last timestamp is not kept there: -1).
    pub async fn describe_producers(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<(Vec<ferry_log::ProducerState>, Vec<(i64, u64)>)> {
        let Some(sh) = &self.shared else {
            return Ok((
                self.producers(topic, partition)?,
                self.open_transactions(topic, partition)?,
            ));
        };
        let config = self.shared_partition(topic, partition)?;
        let topic_id = config.topic_id.to_string();
        let meta = sh.log.metadata();
        let producers = meta
            .producers(&topic_id, partition)
            .await
            .map_err(|e| BrokerError::Unavailable(e.to_string()))?
            .into_iter()
            .map(
                |(producer_id, epoch, last_sequence)| ferry_log::ProducerState {
                    producer_id,
                    epoch,
                    last_sequence,
                    last_timestamp: -1,
                },
            )
            .collect();
        let open = meta
            .open_transactions(&topic_id, partition)
            .await
            .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
        Ok((producers, open))
    }

    /// Whether `topic` has `partition`: a local partition log, or in shared mode a
    /// partition of a topic in Postgres.
    pub fn check_partition(&self, topic: &str, partition: u32) -> Result<()> {
        if self.is_shared() {
            self.shared_partition(topic, partition).map(|_| ())
        } else {
            self.topic(topic)?.partition(partition).map(|_| ())
        }
    }

    /// Stores `meta` as `txn_id`'s state, then installs it: in a file in the local mode,
    /// in Postgres under the id's lease in shared mode. Callers hold `txns.ops`.
    pub(crate) async fn save_txn(&self, txn_id: &str, meta: TxnMeta) -> Result<()> {
        let Some(sh) = &self.shared else {
            return self.txns.commit_state(txn_id, meta).await;
        };
        let lease = self.transaction_lease(txn_id)?;
        self.txns.check_room(txn_id)?;
        // The partitions the sequencer admits batches to, by topic id; those of topics
        // deleted meanwhile are left out.
        let partitions: Vec<(String, u32)> = if meta.status == TxnStatus::Ongoing {
            meta.partitions
                .iter()
                .filter_map(|tp| {
                    self.shared_partition(&tp.topic, tp.partition)
                        .ok()
                        .map(|c| (c.topic_id.to_string(), tp.partition))
                })
                .collect()
        } else {
            Vec::new()
        };
        let json = serde_json::to_string(&meta)
            .map_err(|e| BrokerError::Meta(format!("encoding a transaction's state: {e}")))?;
        let row = ferry_shared::TxnRow {
            producer_id: meta.producer_id,
            epoch: meta.epoch,
            status: meta.status.stored_name(),
            state_json: &json,
        };
        match sh
            .log
            .metadata()
            .save_transaction(txn_id, lease, row, &partitions)
            .await
        {
            Ok(()) => {
                self.txns.install(txn_id, meta);
                Ok(())
            }
            Err(SharedError::Fenced(_)) => {
                self.let_go_transaction(txn_id);
                Err(BrokerError::Transaction(TxnError::NotCoordinator))
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Forgets `txn_id` (unused for a week). Callers hold `txns.ops`.
    pub(crate) async fn forget_txn(&self, txn_id: &str) -> Result<()> {
        let Some(sh) = &self.shared else {
            return self.txns.forget(&[txn_id.to_string()]).await;
        };
        let lease = self.transaction_lease(txn_id)?;
        match sh.log.metadata().delete_transaction(txn_id, lease).await {
            Ok(()) => {
                self.let_go_transaction(txn_id);
                Ok(())
            }
            Err(SharedError::Fenced(_)) => {
                self.let_go_transaction(txn_id);
                Err(BrokerError::Transaction(TxnError::NotCoordinator))
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    fn transaction_lease(&self, txn_id: &str) -> Result<Lease> {
        let sh = self
            .shared
            .as_ref()
            .ok_or_else(|| BrokerError::Meta("not in shared mode".into()))?;
        let epoch = sh
            .leases
            .transaction_epoch(txn_id)
            .ok_or(BrokerError::Transaction(TxnError::NotCoordinator))?;
        Ok(Lease {
            node_id: sh.node_id(),
            epoch,
        })
    }

    fn let_go_transaction(&self, txn_id: &str) {
        if let Some(sh) = &self.shared {
            lock(&sh.leases.transactions).remove(txn_id);
        }
        self.txns.drop_local(txn_id);
    }

    /// A producer id for a transactional id: from Postgres in shared mode, so that no
    /// two nodes hand out the same one.
    pub(crate) async fn next_txn_producer_id(&self) -> Result<i64> {
        match &self.shared {
            Some(sh) => sh.log.new_producer_id().await.map_err(unavailable),
            None => Ok(self.txns.new_producer_id()),
        }
    }

    /// Appends `meta`'s markers to the shared log, one per partition of its
    /// transaction, in one object; answered once they are committed. A partition whose
    /// topic was deleted is skipped, and so is one the transaction is no longer open in
    /// (a marker written again after a failover).
    pub(crate) async fn write_shared_markers(&self, meta: &TxnMeta, commit: bool) -> Result<()> {
        let Some(sh) = &self.shared else {
            return Err(BrokerError::Meta("not in shared mode".into()));
        };
        let now = i64::try_from(crate::broker::now_ms()).unwrap_or(i64::MAX);
        let mut batches = Vec::with_capacity(meta.partitions.len());
        let mut ids = Vec::with_capacity(meta.partitions.len());
        for TopicPartition { topic, partition } in &meta.partitions {
            let config = match self.shared_partition(topic, *partition) {
                Ok(c) => c,
                Err(BrokerError::TopicNotFound(_) | BrokerError::PartitionNotFound { .. }) => {
                    continue
                }
                Err(e) => return Err(e),
            };
            let marker = ferry_log::batch::build_control_batch(
                meta.producer_id,
                meta.epoch,
                commit,
                COORDINATOR_EPOCH,
                now,
            );
            ids.push((config.topic_id, *partition));
            batches.push(AppendBatch {
                topic_id: config.topic_id.to_string(),
                partition: *partition,
                batch: Bytes::from(marker),
            });
        }
        if batches.is_empty() {
            return Ok(());
        }
        let outcomes = sh.log.append(batches).await.map_err(unavailable)?;
        for ((id, partition), outcome) in ids.into_iter().zip(outcomes) {
            match outcome {
                Outcome::Appended { base_offset } => {
                    self.note_local(sh, id, partition, base_offset + 1)
                }
                Outcome::NothingToMark | Outcome::UnknownPartition => {}
                other => {
                    return Err(BrokerError::Meta(format!(
                        "a marker for partition {partition} was answered {other:?}"
                    )))
                }
            }
        }
        Ok(())
    }

    /// Stages a TxnOffsetCommit's offsets in Postgres (shared mode), for the
    /// transaction's coordinator to commit with it.
    pub(crate) async fn stage_shared_txn_offsets(
        &self,
        producer_id: i64,
        epoch: i16,
        group: &str,
        offsets: &[crate::txn::PendingOffset],
    ) -> Result<()> {
        let Some(sh) = &self.shared else {
            return Err(BrokerError::Meta("not in shared mode".into()));
        };
        let rows: Vec<ferry_shared::StoredOffset> = offsets
            .iter()
            .map(|o| ferry_shared::StoredOffset {
                topic: o.topic.clone(),
                partition: o.partition,
                offset: o.offset,
                metadata: o.metadata.clone(),
                leader_epoch: o.leader_epoch,
            })
            .collect();
        match sh
            .log
            .metadata()
            .stage_txn_offsets(producer_id, epoch, group, &rows)
            .await
            .map_err(unavailable)?
        {
            ferry_shared::Staged::Staged => Ok(()),
            ferry_shared::Staged::Fenced => Err(BrokerError::Transaction(TxnError::ProducerFenced)),
            ferry_shared::Staged::NotInTransaction => {
                Err(BrokerError::Transaction(TxnError::InvalidTxnState))
            }
        }
    }

    /// Shared mode, each second: takes the transactional ids whose coordinator died
    /// and that rendezvous hashing gives this node, and finishes the decided
    /// transactions this node coordinates whose markers are not all written (their
    /// coordinator died between the decision and the markers, or a marker failed).
    /// Ongoing ones go on, and are aborted at their timeout.
    pub(crate) async fn serve_unserved_transactions(&self) {
        let Some(sh) = &self.shared else {
            return;
        };
        if sh.node_id() == 0 {
            return;
        }
        match sh
            .log
            .metadata()
            .unserved_transactions(UNSERVED_PER_PASS)
            .await
        {
            Ok(ids) => {
                let nodes = self.shared_nodes().unwrap_or_default();
                let me = sh.node_id();
                for id in ids {
                    if pick(&id, &nodes).is_some_and(|n| n.node_id == me) {
                        if let Err(e) = self.claim_transaction(&id, false).await {
                            tracing::debug!(transactional_id = %id, error = %e, "Could not take an unserved transactional id; will look again.");
                        }
                    }
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "Could not look for unserved transactional ids; will look again.")
            }
        }
        self.finish_decided_transactions().await;
    }
}
