//! Ferry's Postgres sources: rows committed in a service's database become records in
//! Ferry's topics, through logical replication (the `pgoutput` plugin).
//!
//! One role per file:
//! - [`spec`]: what a user asks of a source, and its checks.
//! - [`Sources`] (here): the sources of a server, kept in `<data>/sources.json`, each run
//!   by its own task; create, change, pause, resume, delete, status.
//! - `runner`: one source's task: publication, slot, snapshot, streaming, exactly-once
//!   writes into the log, reconnecting with backoff.
//! - [`envelope`]: row changes to records (Debezium's envelope, CloudEvents headers,
//!   positions).
//! - [`pgoutput`]: the decoder of pgoutput's messages (bytes from the network: checked
//!   lengths, limits, a fuzz target).
//! - [`values`]: column values in Postgres's text format to JSON, as Debezium's JSON
//!   converter writes them.
//! - [`fuzzing`]: the bodies of the fuzz targets, shared with the corpus replay test.

pub mod envelope;
pub mod fuzzing;
pub mod pgoutput;
mod runner;
pub mod spec;
pub mod values;

use ferry_broker::Broker;
use serde::{Deserialize, Serialize};
use spec::{SourceSpec, SourceUpdate, SOURCES_MAX};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// File of the sources in the data folder (mode 0600: URLs hold passwords).
pub const FILE: &str = "sources.json";

/// Why a request about sources failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("source '{0}' does not exist")]
    NotFound(String),
    #[error("source '{name}' has no backfill {id}")]
    BackfillNotFound { name: String, id: u64 },
    #[error("source '{0}' already exists")]
    Exists(String),
    #[error("{0}")]
    Invalid(String),
    #[error("cannot reach the database: {0}")]
    Unreachable(String),
    #[error("this server runs its limit of {SOURCES_MAX} sources; delete one first")]
    Limit,
    #[error("storage error: {0}")]
    Storage(String),
}

/// A source as kept in the data folder: what was asked and what the source did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stored {
    pub spec: Option<SourceSpec>,
    #[serde(default)]
    pub paused: bool,
    /// The initial snapshot is written (or none was asked): a restart streams on.
    #[serde(default)]
    pub snapshot_done: bool,
    /// Ferry made the publication, so deleting the source drops it.
    #[serde(default)]
    pub created_publication: bool,
    /// Ferry made the slot, so deleting the source drops it.
    #[serde(default)]
    pub created_slot: bool,
    /// Topics the source has written to: a restart looks there for its last positions.
    #[serde(default)]
    pub topics: BTreeSet<String>,
    /// Backfills asked for, oldest first (the last finished ones are kept for describe).
    #[serde(default)]
    pub backfills: Vec<Backfill>,
}

/// Finished backfills kept for `describe`.
const BACKFILLS_KEPT: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackfillState {
    Queued,
    Running,
    Done,
    Failed,
    Cancelled,
}

/// A backfill: one table's rows read again (as `op` `r`) while the source streams,
/// in chunks by primary key; a row changed while its chunk is read is left to the
/// stream, so no change is overwritten by an older read.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Backfill {
    pub id: u64,
    /// `schema.table`.
    pub table: String,
    #[serde(default, rename = "where")]
    pub row_filter: Option<String>,
    pub state: BackfillState,
    /// Rows written so far.
    pub rows: u64,
    /// The primary key of the last row written (text forms), where the next chunk starts.
    #[serde(default)]
    pub last_key: Option<Vec<String>>,
    #[serde(default)]
    pub error: Option<String>,
    pub created_ms: i64,
    #[serde(default)]
    pub finished_ms: Option<i64>,
}

/// What `POST /v1/sources/{name}/backfills` asks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackfillRequest {
    pub table: String,
    #[serde(default, rename = "where")]
    pub row_filter: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceState {
    #[default]
    Starting,
    Snapshotting,
    Streaming,
    Retrying,
    Paused,
}

/// What a source is doing, for `describe`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    pub state: SourceState,
    pub last_error: Option<String>,
    pub last_error_ms: Option<i64>,
    /// The slot's confirmed position: everything before it is durable in Ferry.
    pub position: Option<String>,
    /// WAL written in Postgres after the confirmed position.
    pub lag_bytes: Option<u64>,
    /// How far behind in time: while the slot has WAL left to read, the time since the
    /// newest commit captured (or, before the first, since the stream started); 0 when
    /// caught up; none before the slot's state was first read.
    pub lag_ms: Option<u64>,
    /// Time from the last captured commit in Postgres to its records being durable here.
    pub capture_lag_ms: Option<u64>,
    pub last_commit_ms: Option<i64>,
    /// WAL the slot holds back (from its restart position).
    pub slot_wal_bytes: Option<u64>,
    /// `slot_wal_bytes` is over the source's `max_slot_wal_bytes`.
    pub slot_wal_warning: bool,
    pub records: u64,
    pub transactions: u64,
    /// Changes left out (an outbox row without a topic, a topic name that is invalid).
    pub skipped: u64,
    pub snapshot_rows: u64,
    pub snapshot_tables: u32,
    pub snapshot_tables_done: u32,
}

/// A source as described: its settings (the URL without its password) and status.
#[derive(Debug, Clone, Serialize)]
pub struct SourceInfo {
    #[serde(flatten)]
    pub spec: SourceSpec,
    pub publication: String,
    pub slot: String,
    pub paused: bool,
    pub snapshot_done: bool,
    pub topics: Vec<String>,
    pub backfills: Vec<Backfill>,
    pub status: Status,
}

struct Entry {
    stored: Stored,
    status: Arc<Mutex<Status>>,
    running: Option<Running>,
    /// Wakes the source's task when a backfill is asked for.
    wake: Arc<tokio::sync::Notify>,
    /// Held by a write until it is durable, for the source's whole life: a task that
    /// starts after another stopped reads positions only once the old write ended.
    write_lock: Arc<tokio::sync::Mutex<()>>,
}

struct Running {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// The sources of one server.
pub struct Sources {
    broker: Arc<Broker>,
    path: PathBuf,
    entries: Mutex<BTreeMap<String, Entry>>,
    /// One change of the set at a time (create, delete, pause, ...).
    admin: tokio::sync::Mutex<()>,
}

use ferry_log::sync::lock;

impl Sources {
    /// Loads the sources of the data folder and starts those not paused.
    pub fn open(broker: Arc<Broker>) -> Result<Arc<Sources>, SourceError> {
        let path = broker.data_dir().join(FILE);
        let stored: BTreeMap<String, Stored> = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                SourceError::Storage(format!("{} is not readable: {e}", path.display()))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(SourceError::Storage(format!("{}: {e}", path.display()))),
        };
        let sources = Arc::new(Sources {
            broker,
            path,
            entries: Mutex::new(BTreeMap::new()),
            admin: tokio::sync::Mutex::new(()),
        });
        for (name, stored) in stored {
            if stored.spec.is_none() {
                continue;
            }
            let paused = stored.paused;
            lock(&sources.entries).insert(
                name.clone(),
                Entry {
                    stored,
                    status: Arc::default(),
                    running: None,
                    wake: Arc::default(),
                    write_lock: Arc::default(),
                },
            );
            if paused {
                sources.set_paused_status(&name);
            } else {
                sources.start(&name);
            }
        }
        Ok(sources)
    }

    pub(crate) fn broker(&self) -> Arc<Broker> {
        self.broker.clone()
    }

    pub(crate) fn stored(&self, name: &str) -> Option<Stored> {
        lock(&self.entries).get(name).map(|e| e.stored.clone())
    }

    /// Changes what is kept of a source and writes the file.
    pub(crate) fn update_stored(&self, name: &str, f: impl FnOnce(&mut Stored)) {
        let mut entries = lock(&self.entries);
        if let Some(e) = entries.get_mut(name) {
            f(&mut e.stored);
        }
        if let Err(e) = self.save(&entries) {
            tracing::error!(error = %e, "could not write {}", self.path.display());
        }
    }

    fn save(&self, entries: &BTreeMap<String, Entry>) -> Result<(), SourceError> {
        let all: BTreeMap<&String, &Stored> = entries.iter().map(|(k, e)| (k, &e.stored)).collect();
        let bytes =
            serde_json::to_vec_pretty(&all).map_err(|e| SourceError::Storage(e.to_string()))?;
        ferry_broker::fsutil::replace_private_file(&self.path, &bytes).map_err(SourceError::Storage)
    }

    fn start(self: &Arc<Self>, name: &str) {
        let mut entries = lock(&self.entries);
        let Some(e) = entries.get_mut(name) else {
            return;
        };
        let Some(spec) = e.stored.spec.clone() else {
            return;
        };
        let (stop, rx) = watch::channel(false);
        *lock(&e.status) = Status::default();
        let task = tokio::spawn(runner::run(
            self.clone(),
            spec,
            e.status.clone(),
            e.wake.clone(),
            e.write_lock.clone(),
            rx,
        ));
        e.running = Some(Running { stop, task });
    }

    /// Stops a source's task and waits for it to end.
    async fn stop(&self, name: &str) {
        let running = lock(&self.entries)
            .get_mut(name)
            .and_then(|e| e.running.take());
        if let Some(r) = running {
            let _ = r.stop.send(true);
            let abort = r.task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(10), r.task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }

    fn set_paused_status(&self, name: &str) {
        if let Some(e) = lock(&self.entries).get(name) {
            lock(&e.status).state = SourceState::Paused;
        }
    }

    fn info(e: &Entry) -> Option<SourceInfo> {
        let mut spec = e.stored.spec.clone()?;
        if let Ok(url) = spec::PgUrl::parse(&spec.url) {
            spec.url = url.redacted();
        }
        Some(SourceInfo {
            publication: spec.publication(),
            slot: spec.slot(),
            spec,
            paused: e.stored.paused,
            snapshot_done: e.stored.snapshot_done,
            topics: e.stored.topics.iter().cloned().collect(),
            backfills: e.stored.backfills.clone(),
            status: lock(&e.status).clone(),
        })
    }

    pub fn list(&self) -> Vec<SourceInfo> {
        lock(&self.entries)
            .values()
            .filter_map(Self::info)
            .collect()
    }

    pub fn get(&self, name: &str) -> Result<SourceInfo, SourceError> {
        lock(&self.entries)
            .get(name)
            .and_then(Self::info)
            .ok_or_else(|| SourceError::NotFound(name.into()))
    }

    /// Checks a source, makes sure its database answers, keeps it and starts it.
    pub async fn create(self: &Arc<Self>, spec: SourceSpec) -> Result<SourceInfo, SourceError> {
        let _admin = self.admin.lock().await;
        spec.check().map_err(SourceError::Invalid)?;
        {
            let entries = lock(&self.entries);
            if entries.contains_key(&spec.name) {
                return Err(SourceError::Exists(spec.name));
            }
            if entries.len() >= SOURCES_MAX {
                return Err(SourceError::Limit);
            }
            if let Some((other, _)) = entries.iter().find(|(_, e)| {
                e.stored
                    .spec
                    .as_ref()
                    .is_some_and(|s| s.slot() == spec.slot() && same_database(&s.url, &spec.url))
            }) {
                return Err(SourceError::Invalid(format!(
                    "slot '{}' is already used by source '{other}'",
                    spec.slot()
                )));
            }
        }
        check_database(&spec).await?;
        let name = spec.name.clone();
        {
            let mut entries = lock(&self.entries);
            entries.insert(
                name.clone(),
                Entry {
                    stored: Stored {
                        spec: Some(spec),
                        ..Stored::default()
                    },
                    status: Arc::default(),
                    running: None,
                    wake: Arc::default(),
                    write_lock: Arc::default(),
                },
            );
            if let Err(e) = self.save(&entries) {
                entries.remove(&name);
                return Err(e);
            }
        }
        self.start(&name);
        self.get(&name)
    }

    /// Changes a source's settings and restarts it with them.
    pub async fn update(
        self: &Arc<Self>,
        name: &str,
        update: SourceUpdate,
    ) -> Result<SourceInfo, SourceError> {
        let _admin = self.admin.lock().await;
        let old = self
            .stored(name)
            .and_then(|s| s.spec)
            .ok_or_else(|| SourceError::NotFound(name.into()))?;
        let new = old.updated(update);
        new.check().map_err(SourceError::Invalid)?;
        if new.url != old.url {
            check_database(&new).await?;
        }
        self.stop(name).await;
        let paused = {
            let mut entries = lock(&self.entries);
            let e = entries
                .get_mut(name)
                .ok_or_else(|| SourceError::NotFound(name.into()))?;
            e.stored.spec = Some(new);
            let paused = e.stored.paused;
            self.save(&entries)?;
            paused
        };
        if paused {
            self.set_paused_status(name);
        } else {
            self.start(name);
        }
        self.get(name)
    }

    pub async fn pause(self: &Arc<Self>, name: &str) -> Result<SourceInfo, SourceError> {
        let _admin = self.admin.lock().await;
        self.get(name)?;
        self.stop(name).await;
        self.update_stored(name, |s| s.paused = true);
        self.set_paused_status(name);
        self.get(name)
    }

    pub async fn resume(self: &Arc<Self>, name: &str) -> Result<SourceInfo, SourceError> {
        let _admin = self.admin.lock().await;
        let info = self.get(name)?;
        if info.paused {
            self.update_stored(name, |s| s.paused = false);
            self.start(name);
        }
        self.get(name)
    }

    /// Stops a source, drops its slot and its publication (those Ferry made), and
    /// forgets it. Its topics stay. When the database cannot be reached the source is
    /// forgotten anyway and the error says the slot is left behind.
    pub async fn delete(self: &Arc<Self>, name: &str) -> Result<Option<String>, SourceError> {
        let _admin = self.admin.lock().await;
        let stored = self
            .stored(name)
            .ok_or_else(|| SourceError::NotFound(name.into()))?;
        self.stop(name).await;
        let mut warning = None;
        if let Some(spec) = &stored.spec {
            if let Err(e) =
                runner::drop_slot(spec, stored.created_slot, stored.created_publication).await
            {
                let text = format!(
                    "slot '{}' could not be dropped ({e:#}): drop it in Postgres with \
                     SELECT pg_drop_replication_slot('{}'), or it keeps WAL forever",
                    spec.slot(),
                    spec.slot()
                );
                tracing::warn!(source = %name, "{text}");
                warning = Some(text);
            }
        }
        let mut entries = lock(&self.entries);
        entries.remove(name);
        self.save(&entries)?;
        Ok(warning)
    }

    /// Asks for a backfill of one of the source's tables; it starts once those asked
    /// before it are finished.
    pub async fn backfill(
        self: &Arc<Self>,
        name: &str,
        req: BackfillRequest,
    ) -> Result<Backfill, SourceError> {
        let _admin = self.admin.lock().await;
        let spec = self
            .stored(name)
            .and_then(|s| s.spec)
            .ok_or_else(|| SourceError::NotFound(name.into()))?;
        let (schema, table) = spec::split_table(&req.table).map_err(SourceError::Invalid)?;
        if let Some(w) = &req.row_filter {
            spec::check_row_filter(&req.table, w).map_err(SourceError::Invalid)?;
        }
        let named = spec.tables.is_empty()
            || spec
                .tables
                .iter()
                .any(|t| spec::split_table(t.name()).ok() == Some((schema.clone(), table.clone())));
        if !named {
            return Err(SourceError::Invalid(format!(
                "source '{name}' does not capture table '{schema}.{table}'"
            )));
        }
        if spec
            .outbox
            .as_ref()
            .and_then(|o| spec::split_table(&o.table).ok())
            == Some((schema.clone(), table.clone()))
        {
            return Err(SourceError::Invalid(format!(
                "'{schema}.{table}' is the outbox table: its rows are events, not a table to backfill"
            )));
        }
        check_backfill_table(&spec, &schema, &table).await?;
        let mut entries = lock(&self.entries);
        let e = entries
            .get_mut(name)
            .ok_or_else(|| SourceError::NotFound(name.into()))?;
        let active = e
            .stored
            .backfills
            .iter()
            .filter(|b| matches!(b.state, BackfillState::Queued | BackfillState::Running))
            .count();
        if active >= BACKFILLS_KEPT {
            return Err(SourceError::Invalid(format!(
                "source '{name}' has {active} backfills waiting; let them finish or cancel some"
            )));
        }
        let id = e.stored.backfills.iter().map(|b| b.id).max().unwrap_or(0) + 1;
        let b = Backfill {
            id,
            table: format!("{schema}.{table}"),
            row_filter: req.row_filter,
            state: BackfillState::Queued,
            rows: 0,
            last_key: None,
            error: None,
            created_ms: ferry_broker::broker::now_ms() as i64,
            finished_ms: None,
        };
        e.stored.backfills.push(b.clone());
        prune_backfills(&mut e.stored.backfills);
        let wake = e.wake.clone();
        self.save(&entries)?;
        wake.notify_one();
        Ok(b)
    }

    /// Cancels a backfill that has not finished (the rows written stay).
    pub async fn cancel_backfill(&self, name: &str, id: u64) -> Result<Backfill, SourceError> {
        let _admin = self.admin.lock().await;
        let mut entries = lock(&self.entries);
        let e = entries
            .get_mut(name)
            .ok_or_else(|| SourceError::NotFound(name.into()))?;
        let b = e
            .stored
            .backfills
            .iter_mut()
            .find(|b| b.id == id)
            .ok_or_else(|| SourceError::BackfillNotFound {
                name: name.into(),
                id,
            })?;
        if matches!(b.state, BackfillState::Queued | BackfillState::Running) {
            b.state = BackfillState::Cancelled;
            b.finished_ms = Some(ferry_broker::broker::now_ms() as i64);
        }
        let b = b.clone();
        self.save(&entries)?;
        Ok(b)
    }

    /// Stops every source (at shutdown).
    pub async fn shutdown(&self) {
        let _admin = self.admin.lock().await;
        let names: Vec<String> = lock(&self.entries).keys().cloned().collect();
        for n in names {
            self.stop(&n).await;
        }
    }
}

/// A backfill reads its table by primary key: the table must exist and have one.
async fn check_backfill_table(
    spec: &SourceSpec,
    schema: &str,
    table: &str,
) -> Result<(), SourceError> {
    let sql = runner::sql_connect(&spec.url)
        .await
        .map_err(|e| SourceError::Unreachable(format!("{e:#}")))?;
    let row = sql
        .query_opt(
            "SELECT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2",
            &[&schema, &table],
        )
        .await
        .map_err(|e| SourceError::Unreachable(e.to_string()))?;
    match row.map(|r| r.get::<_, bool>(0)) {
        None => Err(SourceError::Invalid(format!(
            "table '{schema}.{table}' does not exist"
        ))),
        Some(false) => Err(SourceError::Invalid(format!(
            "table '{schema}.{table}' has no primary key; a backfill reads a table in primary key order"
        ))),
        Some(true) => Ok(()),
    }
}

/// Keeps every unfinished backfill and the last finished ones.
fn prune_backfills(all: &mut Vec<Backfill>) {
    let finished = all
        .iter()
        .filter(|b| !matches!(b.state, BackfillState::Queued | BackfillState::Running))
        .count();
    let mut drop = finished.saturating_sub(BACKFILLS_KEPT);
    all.retain(|b| {
        let done = !matches!(b.state, BackfillState::Queued | BackfillState::Running);
        if done && drop > 0 {
            drop -= 1;
            false
        } else {
            true
        }
    });
}

fn same_database(a: &str, b: &str) -> bool {
    match (spec::PgUrl::parse(a), spec::PgUrl::parse(b)) {
        (Ok(a), Ok(b)) => a.host == b.host && a.port == b.port && a.database == b.database,
        _ => false,
    }
}

/// Connects once to say at creation time what is wrong (a bad password, no logical
/// replication) rather than in a retry loop afterwards.
async fn check_database(spec: &SourceSpec) -> Result<(), SourceError> {
    let sql = runner::sql_connect(&spec.url)
        .await
        .map_err(|e| SourceError::Unreachable(format!("{e:#}")))?;
    let level: String = sql
        .query_one("SHOW wal_level", &[])
        .await
        .map_err(|e| SourceError::Unreachable(e.to_string()))?
        .get(0);
    if level != "logical" {
        return Err(SourceError::Unreachable(format!(
            "the database has wal_level={level}; set wal_level=logical in postgresql.conf and restart it"
        )));
    }
    let filters = spec
        .tables
        .iter()
        .any(|t| t.settings().is_some_and(|s| s.row_filter.is_some()));
    if filters {
        let version: i32 = sql
            .query_one("SELECT current_setting('server_version_num')::int", &[])
            .await
            .map_err(|e| SourceError::Unreachable(e.to_string()))?
            .get(0);
        if version < 150000 {
            return Err(SourceError::Invalid(
                "row filters (where) need PostgreSQL 15 or later".into(),
            ));
        }
    }
    for t in &spec.tables {
        let (s, n) = spec::split_table(t.name()).map_err(SourceError::Invalid)?;
        let found = sql
            .query_opt(
                "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname = $2",
                &[&s, &n],
            )
            .await
            .map_err(|e| SourceError::Unreachable(e.to_string()))?;
        if found.is_none() {
            return Err(SourceError::Invalid(format!(
                "table '{s}.{n}' does not exist"
            )));
        }
        if let Some(key) = t.settings().and_then(|s| s.key.as_ref()) {
            for col in key {
                let found = sql
                    .query_opt(
                        "SELECT 1 FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
                         JOIN pg_namespace n ON n.oid = c.relnamespace \
                         WHERE n.nspname = $1 AND c.relname = $2 AND a.attname = $3 \
                         AND a.attnum > 0 AND NOT a.attisdropped",
                        &[&s, &n, col],
                    )
                    .await
                    .map_err(|e| SourceError::Unreachable(e.to_string()))?;
                if found.is_none() {
                    return Err(SourceError::Invalid(format!(
                        "the key of table '{s}.{n}' names column '{col}', which it does not have"
                    )));
                }
            }
        }
    }
    Ok(())
}
