//! The coordinator's requests, on the broker (they write markers to partitions).

use super::coordinator::txn_result;
use super::state::{self, EndPlan, PendingOffset, TopicPartition, TxnMeta, TxnStatus};
use crate::broker::{blocking, now_ms};
use crate::error::{BrokerError, Result};
use crate::groups::{CommittedOffset, PartitionOffset};
use crate::Broker;

/// The coordinator epoch written in markers: one node, one coordinator, always 0.
const COORDINATOR_EPOCH: i32 = 0;

impl Broker {
    /// InitProducerId with a transactional id: its producer id and new epoch. A
    /// transaction the previous instance left open is aborted (or, when its end was
    /// decided, finished) first.
    pub async fn init_transactional_producer(
        &self,
        txn_id: &str,
        expected: Option<(i64, i16)>,
        timeout_ms: i32,
    ) -> Result<(i64, i16)> {
        self.claim_transaction(txn_id, true).await?;
        let _ops = self.txns.ops.lock().await;
        let current = self.txns.get(txn_id);
        // A new producer id is needed at the first use and when the epoch runs out.
        let new_id = if current
            .as_ref()
            .is_none_or(|c| c.epoch >= state::EPOCH_RENEW_AT)
        {
            self.next_txn_producer_id().await?
        } else {
            -1
        };
        let plan = txn_result(state::init(
            current.as_ref(),
            expected,
            timeout_ms,
            now_ms(),
            || new_id,
        ))?;
        debug_assert!(plan.next.producer_id >= 0, "a producer id was not taken");
        if let Some(first) = plan.finish_first {
            self.finish(txn_id, first).await?;
        }
        let (pid, epoch) = (plan.next.producer_id, plan.next.epoch);
        self.save_txn(txn_id, plan.next).await?;
        Ok((pid, epoch))
    }

    /// AddPartitionsToTxn: each partition must exist.
    pub async fn add_partitions_to_txn(
        &self,
        txn_id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[TopicPartition],
    ) -> Result<()> {
        for p in partitions {
            self.check_partition(&p.topic, p.partition)?;
        }
        self.add_to_txn(txn_id, producer_id, epoch, partitions, None)
            .await
    }

    /// AddOffsetsToTxn: the transaction will commit offsets of `group`.
    pub async fn add_offsets_to_txn(
        &self,
        txn_id: &str,
        producer_id: i64,
        epoch: i16,
        group: &str,
    ) -> Result<()> {
        self.add_to_txn(txn_id, producer_id, epoch, &[], Some(group))
            .await
    }

    /// Adds `partitions` and `group` to the ongoing transaction, durably when that
    /// changes it.
    async fn add_to_txn(
        &self,
        txn_id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[TopicPartition],
        group: Option<&str>,
    ) -> Result<()> {
        self.claim_transaction(txn_id, false).await?;
        let _ops = self.txns.ops.lock().await;
        let current = self.current(txn_id)?;
        let next = txn_result(state::add(
            &current,
            producer_id,
            epoch,
            partitions,
            group,
            now_ms(),
        ))?;
        if next != current {
            self.save_txn(txn_id, next).await?;
        }
        Ok(())
    }

    /// TxnOffsetCommit: offsets of `group` that become committed when the transaction
    /// commits (and are dropped when it aborts).
    pub async fn txn_offset_commit(
        &self,
        txn_id: &str,
        producer_id: i64,
        epoch: i16,
        group: &str,
        offsets: Vec<PendingOffset>,
    ) -> Result<()> {
        if self.is_shared() {
            // Taken by the group's coordinator, which need not coordinate the
            // transaction: Postgres checks the transaction (see crate::shared_txn).
            return self
                .stage_shared_txn_offsets(producer_id, epoch, group, &offsets)
                .await;
        }
        let _ops = self.txns.ops.lock().await;
        let current = self.current(txn_id)?;
        let next = txn_result(state::stage_offsets(
            &current,
            producer_id,
            epoch,
            group,
            offsets,
            now_ms(),
        ))?;
        self.txns.commit_state(txn_id, next).await
    }

    /// EndTxn: commits or aborts; answers once the markers are durable in every
    /// partition of the transaction.
    pub async fn end_txn(
        &self,
        txn_id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
    ) -> Result<()> {
        self.claim_transaction(txn_id, false).await?;
        let _ops = self.txns.ops.lock().await;
        let current = self.current(txn_id)?;
        match txn_result(state::end(&current, producer_id, epoch, commit, now_ms()))? {
            EndPlan::Done => Ok(()),
            EndPlan::Prepare(prepared) => self.finish(txn_id, prepared).await,
        }
    }

    /// Aborts every ongoing transaction past its timeout, fencing its producer, and
    /// forgets transactional ids unused for a week.
    pub async fn expire_transactions(&self) {
        let now = now_ms();
        // Runs every maintenance tick: only the ids to act on are copied.
        let (due, idle) = self.txns.select(|meta| {
            (
                state::expire(meta, now).is_some(),
                state::expired_id(meta, now),
            )
        });
        if due.is_empty() && idle.is_empty() {
            return;
        }
        let _ops = self.txns.ops.lock().await;
        // Looked at again under `ops`: one may have been used meanwhile.
        let idle: Vec<String> = idle
            .into_iter()
            .filter(|id| {
                self.txns
                    .get(id)
                    .is_some_and(|m| state::expired_id(&m, now))
            })
            .collect();
        if !idle.is_empty() {
            let forgotten = if self.is_shared() {
                let mut result = Ok(());
                for id in &idle {
                    result = result.and(self.forget_txn(id).await);
                }
                result
            } else {
                self.txns.forget(&idle).await
            };
            match forgotten {
                Ok(()) => {
                    tracing::info!(
                        count = idle.len(),
                        "Forgot transactional ids unused for a week."
                    )
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Could not forget idle transactional ids; will retry.")
                }
            }
        }
        for id in due {
            // Looked at again under `ops`: it may have ended meanwhile.
            let Some(abort) = self.txns.get(&id).and_then(|m| state::expire(&m, now)) else {
                continue;
            };
            tracing::info!(transactional_id = %id, producer_id = abort.producer_id, "Aborting a transaction past its timeout; its producer is fenced.");
            if let Err(e) = self.finish(&id, abort).await {
                tracing::warn!(transactional_id = %id, error = %e, "Could not abort a transaction past its timeout; will retry.");
            }
        }
    }

    /// Finishes what a crash interrupted: transactions whose end was decided are
    /// completed, ongoing ones aborted with a bumped epoch. Run once at start, before
    /// clients are served.
    pub async fn recover_transactions(&self) -> Result<()> {
        let _ops = self.txns.ops.lock().await;
        for (id, meta) in self.txns.all() {
            let plan = match meta.status {
                TxnStatus::PrepareCommit | TxnStatus::PrepareAbort => meta,
                TxnStatus::Ongoing => TxnMeta {
                    epoch: meta.epoch.saturating_add(1),
                    status: TxnStatus::PrepareAbort,
                    updated_ms: now_ms(),
                    ..meta
                },
                _ => continue,
            };
            tracing::info!(transactional_id = %id, status = plan.status.kafka_name(), "Finishing a transaction left open by the last run.");
            self.finish(&id, plan).await?;
        }
        Ok(())
    }

    fn current(&self, txn_id: &str) -> Result<TxnMeta> {
        self.txns.get(txn_id).ok_or(BrokerError::Transaction(
            state::TxnError::InvalidProducerIdMapping,
        ))
    }

    /// Persists `prepared` (a prepare state), writes its markers durably, commits its
    /// group offsets when it commits, and persists it completed. Callers hold `ops`.
    async fn finish(&self, txn_id: &str, prepared: TxnMeta) -> Result<()> {
        debug_assert!(matches!(
            prepared.status,
            TxnStatus::PrepareCommit | TxnStatus::PrepareAbort
        ));
        if self.txns.get(txn_id).as_ref() != Some(&prepared) {
            self.save_txn(txn_id, prepared.clone()).await?;
        }
        let commit = prepared.status == TxnStatus::PrepareCommit;
        if self.is_shared() {
            // The offsets it staged are in Postgres, committed with its completion.
            self.write_shared_markers(&prepared, commit).await?;
            return self
                .save_txn(txn_id, state::complete(&prepared, now_ms()))
                .await;
        }
        self.write_markers(&prepared, commit).await?;
        if commit {
            for (group, offsets) in &prepared.offsets {
                let offsets: Vec<PartitionOffset> = offsets
                    .iter()
                    .map(|o| PartitionOffset {
                        topic: o.topic.clone(),
                        partition: o.partition,
                        committed: CommittedOffset {
                            offset: o.offset,
                            metadata: o.metadata.clone(),
                            leader_epoch: o.leader_epoch,
                        },
                    })
                    .collect();
                self.groups.commit_transactional(group, offsets).await?;
            }
        }
        self.save_txn(txn_id, state::complete(&prepared, now_ms()))
            .await
    }

    /// Shared mode: finishes the transactions this node coordinates whose end was
    /// decided but whose markers were not all written (see
    /// [`Broker::serve_unserved_transactions`]).
    pub(crate) async fn finish_decided_transactions(&self) {
        let (decided, _) = self.txns.select(|meta| (meta.status.is_prepare(), false));
        if decided.is_empty() {
            return;
        }
        let _ops = self.txns.ops.lock().await;
        for id in decided {
            // Looked at again under `ops`: it may have been finished meanwhile.
            let Some(meta) = self.txns.get(&id).filter(|m| m.status.is_prepare()) else {
                continue;
            };
            tracing::info!(transactional_id = %id, status = meta.status.kafka_name(), "Finishing a transaction whose end was decided.");
            if let Err(e) = self.finish(&id, meta).await {
                tracing::warn!(transactional_id = %id, error = %e, "Could not finish a decided transaction; will retry.");
            }
        }
    }

    /// Writes a marker of `meta`'s producer to every partition of its transaction and
    /// waits until each is on disk. A partition whose topic was deleted is skipped.
    async fn write_markers(&self, meta: &TxnMeta, commit: bool) -> Result<()> {
        let mut parts = Vec::new();
        for tp in &meta.partitions {
            match self
                .topic(&tp.topic)
                .and_then(|t| t.partition(tp.partition))
            {
                Ok(p) => parts.push(p),
                Err(BrokerError::TopicNotFound(_) | BrokerError::PartitionNotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let (pid, epoch) = (meta.producer_id, meta.epoch);
        let synced = parts.clone();
        blocking(move || {
            let now = now_ms();
            let mut ends = Vec::with_capacity(parts.len());
            for part in &parts {
                let mut marker = ferry_log::batch::build_control_batch(
                    pid,
                    epoch,
                    commit,
                    COORDINATOR_EPOCH,
                    i64::try_from(now).unwrap_or(i64::MAX),
                );
                let info = part
                    .log
                    .append(&mut marker, now)
                    .map_err(|e| BrokerError::from_log(part.id, e))?;
                ends.push(info.end_offset);
            }
            // Durable whatever the topic's policy: a decision is acknowledged only once
            // every marker would survive a crash.
            for (part, end) in parts.iter().zip(ends) {
                part.log
                    .wait_durable(end)
                    .map_err(|e| BrokerError::from_log(part.id, e))?;
            }
            Ok(())
        })
        .await?;
        for part in synced {
            part.publish_latest();
        }
        Ok(())
    }
}
