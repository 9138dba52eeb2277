//! The coordinator's table of transactional ids, its persistence, and the check every
//! transactional batch passes before it is appended.
//!
//! # Locks
//!
//! `ops` (async) serialises every change of state: a change is computed from the
//! current state, persisted, and only then installed in `table` (a std mutex, held
//! briefly, never across I/O). A transactional batch is checked under the partition
//! log's lock, in the same step as its append, so that once EndTxn has installed a
//! prepare state no batch of that transaction can follow its markers (the markers are
//! appended under the same lock, after the state changed). Order: a log's lock, then
//! `table`.

use super::state::{TopicPartition, TxnError, TxnMeta, TxnResult, TxnStatus};
use super::store::TxnStore;
use crate::error::{BrokerError, Result};
use ferry_log::sync::lock;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub(crate) struct Table {
    pub(crate) by_id: BTreeMap<String, TxnMeta>,
    /// producer id → transactional id.
    pub(crate) by_producer: HashMap<i64, String>,
}

impl Table {
    fn set(&mut self, txn_id: &str, meta: TxnMeta) {
        if let Some(old) = self.by_id.get(txn_id) {
            if old.producer_id != meta.producer_id {
                self.by_producer.remove(&old.producer_id);
            }
        }
        self.by_producer
            .insert(meta.producer_id, txn_id.to_string());
        self.by_id.insert(txn_id.to_string(), meta);
    }
}

pub struct TxnCoordinator {
    store: Arc<TxnStore>,
    pub(crate) table: Mutex<Table>,
    pub(crate) ops: tokio::sync::Mutex<()>,
    next_producer_id: AtomicI64,
}

impl TxnCoordinator {
    pub fn open(meta_dir: &Path) -> Result<Self> {
        let store = TxnStore::new(meta_dir);
        let mut table = Table::default();
        let mut largest = -1;
        for (id, meta) in store.load()? {
            largest = largest.max(meta.producer_id);
            table.set(&id, meta);
        }
        // Producer ids are unique across restarts: seeded from the clock, and past any
        // id a transactional id holds.
        let seed = ((crate::now_ms() as i64) << 8).max(largest + 1);
        Ok(TxnCoordinator {
            store: Arc::new(store),
            table: Mutex::new(table),
            ops: tokio::sync::Mutex::new(()),
            next_producer_id: AtomicI64::new(seed),
        })
    }

    /// A producer id never handed out before.
    pub fn new_producer_id(&self) -> i64 {
        self.next_producer_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The state of a transactional id.
    pub fn get(&self, txn_id: &str) -> Option<TxnMeta> {
        lock(&self.table).by_id.get(txn_id).cloned()
    }

    /// Every transactional id and its state.
    pub fn all(&self) -> Vec<(String, TxnMeta)> {
        lock(&self.table)
            .by_id
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The ids for which `test` answers true in its first and in its second place.
    pub(crate) fn select(
        &self,
        test: impl Fn(&TxnMeta) -> (bool, bool),
    ) -> (Vec<String>, Vec<String>) {
        let (mut first, mut second) = (Vec::new(), Vec::new());
        for (id, meta) in &lock(&self.table).by_id {
            let (a, b) = test(meta);
            if a {
                first.push(id.clone());
            }
            if b {
                second.push(id.clone());
            }
        }
        (first, second)
    }

    /// Persists the table with `txn_id` set to `meta`, then installs it. Callers hold
    /// `ops`.
    pub(crate) async fn commit_state(&self, txn_id: &str, meta: TxnMeta) -> Result<()> {
        let bytes = {
            let table = lock(&self.table);
            if !table.by_id.contains_key(txn_id)
                && table.by_id.len() >= super::TRANSACTIONAL_IDS_MAX
            {
                return Err(BrokerError::Transaction(TxnError::TooManyTransactionalIds));
            }
            let mut all = table.by_id.clone();
            all.insert(txn_id.to_string(), meta.clone());
            TxnStore::encode(&all)?
        };
        let store = Arc::clone(&self.store);
        crate::broker::blocking(move || store.save(&bytes)).await?;
        lock(&self.table).set(txn_id, meta);
        Ok(())
    }

    /// Installs `meta` for `txn_id` without persisting it (shared mode: the caller
    /// stored it in Postgres). Callers hold `ops`, or claim the id.
    pub(crate) fn install(&self, txn_id: &str, meta: TxnMeta) {
        lock(&self.table).set(txn_id, meta);
    }

    /// Refuses a new transactional id when the table is full.
    pub(crate) fn check_room(&self, txn_id: &str) -> Result<()> {
        let table = lock(&self.table);
        if !table.by_id.contains_key(txn_id) && table.by_id.len() >= super::TRANSACTIONAL_IDS_MAX {
            return Err(BrokerError::Transaction(TxnError::TooManyTransactionalIds));
        }
        Ok(())
    }

    /// Drops `txn_id` from memory only (shared mode: another node coordinates it now,
    /// or it was forgotten in Postgres).
    pub(crate) fn drop_local(&self, txn_id: &str) {
        let mut table = lock(&self.table);
        if let Some(meta) = table.by_id.remove(txn_id) {
            table.by_producer.remove(&meta.producer_id);
        }
    }

    /// Forgets `ids`, durably. Callers hold `ops`.
    pub(crate) async fn forget(&self, ids: &[String]) -> Result<()> {
        let bytes = {
            let table = lock(&self.table);
            let mut all = table.by_id.clone();
            for id in ids {
                all.remove(id);
            }
            TxnStore::encode(&all)?
        };
        let store = Arc::clone(&self.store);
        crate::broker::blocking(move || store.save(&bytes)).await?;
        let mut table = lock(&self.table);
        for id in ids {
            if let Some(meta) = table.by_id.remove(id) {
                table.by_producer.remove(&meta.producer_id);
            }
        }
        Ok(())
    }

    /// Whether a transactional batch of `producer_id` at `epoch` may go to
    /// `topic`/`partition`: its transaction is ongoing and holds the partition. Called by
    /// the partition's log under its lock, in the same step as the append (see
    /// `ferry_log::PartitionLog::append_admitted`): once EndTxn has installed a prepare
    /// state, no batch of that transaction can follow its markers.
    pub(crate) fn admit(
        &self,
        producer_id: i64,
        epoch: i16,
        topic: &str,
        partition: u32,
    ) -> Result<()> {
        check_batch(&lock(&self.table), producer_id, epoch, topic, partition)
    }
}

fn check_batch(
    table: &Table,
    producer_id: i64,
    epoch: i16,
    topic: &str,
    partition: u32,
) -> Result<()> {
    let meta = table
        .by_producer
        .get(&producer_id)
        .and_then(|id| table.by_id.get(id))
        .ok_or(BrokerError::Transaction(TxnError::InvalidProducerIdMapping))?;
    if epoch < meta.epoch {
        return Err(BrokerError::InvalidProducerEpoch(format!(
            "producer {producer_id} epoch {epoch} is fenced (current {})",
            meta.epoch
        )));
    }
    if epoch != meta.epoch {
        return Err(BrokerError::Transaction(TxnError::ProducerFenced));
    }
    let key = TopicPartition {
        topic: topic.to_string(),
        partition,
    };
    if meta.status != TxnStatus::Ongoing || !meta.partitions.contains(&key) {
        return Err(BrokerError::Transaction(TxnError::InvalidTxnState));
    }
    Ok(())
}

/// A state machine's refusal as the broker's error.
pub(crate) fn txn_result<T>(r: TxnResult<T>) -> Result<T> {
    r.map_err(BrokerError::Transaction)
}
