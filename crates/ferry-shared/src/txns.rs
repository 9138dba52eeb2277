//! Kafka transactions' state in Postgres (migration 0008).
//!
//! A transactional id's state is written by the node holding the lease
//! ([`TRANSACTION_LEASE`], id), as JSON this crate keeps without reading (the broker
//! owns its shape), beside the producer id, epoch and status that the sequencer checks
//! each transactional batch against. The partitions a transaction added are rows the
//! sequencer admits its batches to; markers take them away, and the aborted ranges they
//! leave are what `read_committed` readers skip.

use crate::error::{Result, SharedError};
use crate::leases::StoredOffset;
use crate::meta::Meta;
use crate::subs::Lease;
use ferry_log::AbortedTxn;

/// The kind of lease the coordinator of a transactional id holds.
pub const TRANSACTION_LEASE: &str = "transaction";

/// The most aborted transactions one read is told of.
const ABORTED_PER_READ_MAX: i64 = 10_000;

/// What [`Meta::stage_txn_offsets`] made of a TxnOffsetCommit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Staged {
    Staged,
    /// The producer's epoch is older than its transactional id's.
    Fenced,
    /// No ongoing transaction of this producer and epoch holds the group.
    NotInTransaction,
}

/// One transactional id's state as the coordinator writes it.
#[derive(Debug, Clone, Copy)]
pub struct TxnRow<'a> {
    pub producer_id: i64,
    pub epoch: i16,
    /// The state's status (`ongoing`, `prepare_commit`, `complete_abort`, ...).
    pub status: &'a str,
    /// The whole state, JSON.
    pub state_json: &'a str,
}

fn fenced(txn_id: &str) -> SharedError {
    SharedError::Fenced(format!(
        "transactional id '{txn_id}' is now coordinated by another node"
    ))
}

impl Meta {
    /// Stores `row` for `txn_id` under `lease`; `partitions` (topic id, partition) are
    /// the ones an ongoing transaction added. [`SharedError::Fenced`] when the lease
    /// moved: nothing was written.
    pub async fn save_transaction(
        &self,
        txn_id: &str,
        lease: Lease,
        row: TxnRow<'_>,
        partitions: &[(String, u32)],
    ) -> Result<()> {
        let topics: Vec<&str> = partitions.iter().map(|(t, _)| t.as_str()).collect();
        let mut parts = Vec::with_capacity(partitions.len());
        for (_, p) in partitions {
            parts.push(
                i32::try_from(*p)
                    .map_err(|_| SharedError::Invalid(format!("partition {p} is out of range")))?,
            );
        }
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT ferry_save_transaction($1, $2, $3, $4, $5, $6, $7, $8, $9)")
            .await?;
        let saved: bool = client
            .query_one(
                &stmt,
                &[
                    &txn_id,
                    &lease.node_id,
                    &lease.epoch,
                    &row.producer_id,
                    &row.epoch,
                    &row.status,
                    &row.state_json,
                    &topics,
                    &parts,
                ],
            )
            .await?
            .get(0);
        if saved {
            Ok(())
        } else {
            Err(fenced(txn_id))
        }
    }

    /// A transactional id's state (JSON), if it has one.
    pub async fn transaction(&self, txn_id: &str) -> Result<Option<String>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT state::text FROM ferry_transactions WHERE txn_id = $1",
                &[&txn_id],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Every transactional id with its state (JSON) and the live node holding its
    /// lease, if one does, by id (at most `limit`).
    pub async fn transactions(&self, limit: i64) -> Result<Vec<(String, String, Option<i32>)>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT t.txn_id, t.state::text,
                        (SELECT l.node_id FROM ferry_leases l JOIN ferry_nodes n USING (node_id)
                          WHERE l.kind = $1 AND l.name = t.txn_id
                            AND n.heartbeat_at > now() - make_interval(secs => $2))
                   FROM ferry_transactions t ORDER BY t.txn_id LIMIT $3",
                &[
                    &TRANSACTION_LEASE,
                    &f64::from(crate::meta::NODE_TIMEOUT_SECS),
                    &limit,
                ],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    /// Forgets `txn_id` under `lease`, with its lease.
    pub async fn delete_transaction(&self, txn_id: &str, lease: Lease) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let held: bool = tx
            .query_one(
                "SELECT ferry_holds_lease($1, $2, $3, $4)",
                &[&TRANSACTION_LEASE, &txn_id, &lease.node_id, &lease.epoch],
            )
            .await?
            .get(0);
        if !held {
            return Err(fenced(txn_id));
        }
        let producer: Option<i64> = tx
            .query_opt(
                "DELETE FROM ferry_transactions WHERE txn_id = $1 RETURNING producer_id",
                &[&txn_id],
            )
            .await?
            .map(|r| r.get(0));
        if let Some(pid) = producer {
            tx.execute(
                "DELETE FROM ferry_txn_partitions WHERE producer_id = $1",
                &[&pid],
            )
            .await?;
            tx.execute(
                "DELETE FROM ferry_txn_offsets WHERE producer_id = $1",
                &[&pid],
            )
            .await?;
        }
        tx.execute(
            "DELETE FROM ferry_leases WHERE kind = $1 AND name = $2",
            &[&TRANSACTION_LEASE, &txn_id],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Stages `offsets` of `group` for the ongoing transaction of `producer_id` at
    /// `epoch` (TxnOffsetCommit): committed with it, dropped if it aborts.
    pub async fn stage_txn_offsets(
        &self,
        producer_id: i64,
        epoch: i16,
        group: &str,
        offsets: &[StoredOffset],
    ) -> Result<Staged> {
        let topics: Vec<&str> = offsets.iter().map(|o| o.topic.as_str()).collect();
        let mut partitions = Vec::with_capacity(offsets.len());
        for o in offsets {
            partitions.push(i32::try_from(o.partition).map_err(|_| {
                SharedError::Invalid(format!("partition {} is out of range", o.partition))
            })?);
        }
        let values: Vec<i64> = offsets.iter().map(|o| o.offset).collect();
        let metadata: Vec<Option<&str>> = offsets.iter().map(|o| o.metadata.as_deref()).collect();
        let epochs: Vec<Option<i32>> = offsets.iter().map(|o| o.leader_epoch).collect();
        let client = self.client().await?;
        let answer: i16 = client
            .query_one(
                "SELECT ferry_stage_txn_offsets($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    &producer_id,
                    &epoch,
                    &group,
                    &topics,
                    &partitions,
                    &values,
                    &metadata,
                    &epochs,
                ],
            )
            .await?
            .get(0);
        match answer {
            0 => Ok(Staged::Staged),
            3 => Ok(Staged::Fenced),
            5 => Ok(Staged::NotInTransaction),
            other => Err(SharedError::Metadata(format!(
                "staging offsets answered unknown outcome {other}"
            ))),
        }
    }

    /// The aborted transactions of a partition whose records may lie in
    /// `from..to`, by first offset.
    pub async fn aborted_transactions(
        &self,
        topic_id: &str,
        partition: u32,
        from: u64,
        to: u64,
    ) -> Result<Vec<AbortedTxn>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT producer_id, first_offset, last_offset FROM ferry_txn_aborted
                  WHERE topic_id = $1 AND partition = $2 AND last_offset >= $3
                    AND first_offset < $4
                  ORDER BY first_offset LIMIT $5",
            )
            .await?;
        let (partition, from, to) = (
            partition as i32,
            i64::try_from(from).unwrap_or(i64::MAX),
            i64::try_from(to).unwrap_or(i64::MAX),
        );
        let rows = client
            .query(
                &stmt,
                &[&topic_id, &partition, &from, &to, &ABORTED_PER_READ_MAX],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let (pid, first, last): (i64, i64, i64) = (r.get(0), r.get(1), r.get(2));
                match (u64::try_from(first), u64::try_from(last)) {
                    (Ok(first_offset), Ok(last_offset)) if first_offset <= last_offset => {
                        Ok(AbortedTxn {
                            producer_id: pid,
                            first_offset,
                            last_offset,
                        })
                    }
                    _ => Err(SharedError::Metadata(format!(
                        "an aborted transaction spans {first}..{last}"
                    ))),
                }
            })
            .collect()
    }

    /// The transactions open in a partition: producer id and first offset.
    pub async fn open_transactions(
        &self,
        topic_id: &str,
        partition: u32,
    ) -> Result<Vec<(i64, u64)>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT producer_id, first_offset FROM ferry_txn_partitions
                  WHERE topic_id = $1 AND partition = $2 AND first_offset IS NOT NULL
                  ORDER BY first_offset",
                &[&topic_id, &(partition as i32)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get::<_, i64>(1).max(0) as u64))
            .collect())
    }

    /// Transactional ids with a transaction not yet complete whose lease no live node
    /// holds (at most `limit`): their coordinator died, and someone must end them.
    pub async fn unserved_transactions(&self, limit: i64) -> Result<Vec<String>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT t.txn_id FROM ferry_transactions t
                  WHERE t.status IN ('ongoing', 'prepare_commit', 'prepare_abort')
                    AND NOT EXISTS (
                        SELECT 1 FROM ferry_leases l JOIN ferry_nodes n USING (node_id)
                         WHERE l.kind = $1 AND l.name = t.txn_id
                           AND n.heartbeat_at > now() - make_interval(secs => $2))
                  ORDER BY t.txn_id LIMIT $3",
                &[
                    &TRANSACTION_LEASE,
                    &f64::from(crate::meta::NODE_TIMEOUT_SECS),
                    &limit,
                ],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Forgets aborted ranges that end before their partition's first readable offset.
    pub async fn forget_trimmed_aborts(&self) -> Result<u64> {
        let client = self.client().await?;
        Ok(client
            .execute(
                "DELETE FROM ferry_txn_aborted a USING ferry_partitions p
                  WHERE a.topic_id = p.topic_id AND a.partition = p.partition
                    AND a.last_offset < p.log_start",
                &[],
            )
            .await?)
    }

    /// The idempotent producers of a partition: producer id, epoch, and the sequence
    /// number of the last record of its last batch.
    pub async fn producers(&self, topic_id: &str, partition: u32) -> Result<Vec<(i64, i16, i32)>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT producer_id, epoch, last_seqs[array_length(last_seqs, 1)]
                   FROM ferry_producers WHERE topic_id = $1 AND partition = $2
                  ORDER BY producer_id LIMIT 10000",
                &[&topic_id, &(partition as i32)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get::<_, Option<i32>>(2).unwrap_or(-1)))
            .collect())
    }
}
