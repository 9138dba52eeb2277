//! One source's task: connect, make the publication and the slot, read the snapshot,
//! then stream changes into topics, moving the slot only past what is on disk.
//!
//! Exactly once into the log: every record carries its position (commit LSN, index in
//! the transaction). The slot's confirmed position moves to a commit's end only after
//! that commit's records are durable, so after a crash Postgres sends again at most what
//! came after it; on every (re)start the source reads the last position each of its
//! partitions holds and skips records at or before it.

use crate::envelope::{self, Change, Position, Table, Txn, Writer};
use crate::pgoutput::{self, Datum, Message, OldTuple, Tuple};
use crate::spec::{fill, quote_ident, split_table, PgUrl, SourceSpec, TableEntry, TableSettings};
use crate::{SourceState, Sources, Status};
use bytes::Bytes;
use ferry_broker::partitioner::partition_for_key;
use ferry_broker::{Broker, BrokerError, ProduceRecord};
use pgwire_replication::{Lsn, ReplicationClient, ReplicationConfig, ReplicationEvent};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Records gathered before they are written, at most.
const BATCH_RECORDS: usize = 4096;
/// Bytes of values gathered before they are written, at most (bounds memory with
/// large transactions: their records are written before their commit arrives).
const BATCH_BYTES: usize = 8 << 20;
/// How long a record waits for others to share its write.
const LINGER: Duration = Duration::from_millis(2);
/// Rows read per snapshot fetch.
const SNAPSHOT_CHUNK: usize = 500;
/// How far back from a partition's end a restart looks for the source's last record.
const RECOVERY_SCAN_RECORDS: u64 = 10_000;
/// Connection attempts back off up to this.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a streaming source reads its slot's state (and checks Postgres answers).
const PROBE_EVERY: Duration = Duration::from_secs(5);
/// How long one such read may take before it counts as unanswered.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the stream waits on its SQL connection (a table's key, a backfill's
/// catalog reads) before the session ends and connects again.
const SQL_TIMEOUT: Duration = Duration::from_secs(15);
/// Unanswered reads in a row after which the session ends and connects again.
const PROBES_MISSED_MAX: u32 = 3;
/// Replication events buffered between the connection and the source's task.
const REPLICATION_EVENTS_MAX: usize = 2048;
/// Largest replication message accepted: a row bigger than this stops the source
/// with an error saying so, rather than growing memory without bound.
const MESSAGE_BYTES_MAX: usize = 64 << 20;

type Error = anyhow::Error;

/// Runs a source until `stop` turns true, reconnecting with backoff after failures.
pub(crate) async fn run(
    sources: Arc<Sources>,
    spec: SourceSpec,
    status: Arc<Mutex<Status>>,
    wake: Arc<tokio::sync::Notify>,
    write_lock: Arc<tokio::sync::Mutex<()>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(500);
    loop {
        set(&status, |s| s.state = SourceState::Starting);
        let started = Instant::now();
        let outcome = tokio::select! {
            r = session(&sources, &spec, &status, &wake, &write_lock) => r,
            _ = stop.wait_for(|s| *s) => return,
        };
        let e = match outcome {
            Ok(()) => anyhow::anyhow!("the replication stream ended"),
            Err(e) => e,
        };
        let text = format!("{e:#}");
        tracing::warn!(source = %spec.name, error = %text, "source failed; it will retry");
        set(&status, |s| {
            s.state = SourceState::Retrying;
            s.last_error = Some(text);
            s.last_error_ms = Some(ferry_broker::broker::now_ms() as i64);
        });
        if started.elapsed() > Duration::from_secs(60) {
            backoff = Duration::from_millis(500);
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

fn set(status: &Mutex<Status>, f: impl FnOnce(&mut Status)) {
    f(&mut ferry_log::sync::lock(status));
}

/// An ordinary SQL connection, its driver running in its own task.
pub(crate) async fn sql_connect(url: &str) -> Result<tokio_postgres::Client, Error> {
    let (client, conn) = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio_postgres::connect(url, tokio_postgres::NoTls),
    )
    .await
    .map_err(|_| anyhow::anyhow!("no answer from Postgres within {CONNECT_TIMEOUT:?}"))??;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "source SQL connection ended");
        }
    });
    Ok(client)
}

/// Drops a source's slot (ending the session holding it first) and its publication,
/// each if asked (Ferry drops only what it made).
pub(crate) async fn drop_slot(
    spec: &SourceSpec,
    drop_slot: bool,
    drop_publication: bool,
) -> Result<(), Error> {
    let sql = sql_connect(&spec.url).await?;
    let slot = spec.slot();
    for attempt in 0..20 {
        if !drop_slot {
            break;
        }
        sql.execute(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
             WHERE slot_name = $1 AND active_pid IS NOT NULL",
            &[&slot],
        )
        .await?;
        let r = sql
            .execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                 WHERE slot_name = $1",
                &[&slot],
            )
            .await;
        match r {
            Ok(_) => break,
            Err(e) if attempt < 19 => {
                tracing::debug!(error = %e, "slot still active; trying again");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    if drop_publication {
        sql.batch_execute(&format!(
            "DROP PUBLICATION IF EXISTS {}",
            quote_ident(&spec.publication())
        ))
        .await?;
    }
    Ok(())
}

/// One connected stretch of a source's life.
async fn session(
    sources: &Arc<Sources>,
    spec: &SourceSpec,
    status: &Arc<Mutex<Status>>,
    wake: &Arc<tokio::sync::Notify>,
    write_lock: &Arc<tokio::sync::Mutex<()>>,
) -> Result<(), Error> {
    let url = PgUrl::parse(&spec.url).map_err(|e| anyhow::anyhow!(e))?;
    let sql = sql_connect(&spec.url).await?;
    let created = ensure_publication(&sql, spec).await?;
    if created {
        sources.update_stored(&spec.name, |s| s.created_publication = true);
    }
    let slot = spec.slot();
    let existing = sql
        .query_opt(
            "SELECT plugin, database FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await?;
    if let Some(row) = &existing {
        let plugin: Option<String> = row.get(0);
        let db: Option<String> = row.get(1);
        if plugin.as_deref() != Some("pgoutput") || db.as_deref() != Some(url.database.as_str()) {
            anyhow::bail!(
                "slot '{slot}' exists but is not a pgoutput slot of database '{}'; \
                 name another slot",
                url.database
            );
        }
    }
    let config = ReplicationConfig::new(
        url.host.clone(),
        url.user.clone(),
        url.password.clone(),
        url.database.clone(),
        slot.clone(),
        spec.publication(),
    )
    .with_port(url.port)
    .with_status_interval(Duration::from_secs(1))
    .with_wakeup_interval(Duration::from_secs(5))
    .with_buffer_size(REPLICATION_EVENTS_MAX)
    .with_max_message_size(MESSAGE_BYTES_MAX)
    .with_application_name(format!("ferry-{}", spec.name));

    let stored = sources.stored(&spec.name).unwrap_or_default();
    let mut state = Capture::new(sources.clone(), spec, &url, status.clone(), sql);
    state.wake = wake.clone();
    state.write_lock = write_lock.clone();
    state.topics = stored.topics.clone();
    state.recover().await?;

    let snapshot = spec.snapshot == crate::spec::SnapshotMode::Initial && !stored.snapshot_done;
    let mut client = if snapshot {
        if existing.is_some() {
            if !stored.created_slot {
                anyhow::bail!(
                    "slot '{slot}' exists already, so no snapshot can be read consistent with \
                     it: name a new slot, or create the source with snapshot never"
                );
            }
            // A snapshot cut short: its exported snapshot died with its session, so the
            // slot it was consistent with cannot be used. Start both again.
            tracing::info!(source = %spec.name, "snapshot was cut short; starting it again");
            drop_slot(spec, true, false).await?;
        }
        let mut client = ReplicationClient::connect_gated(config).await?;
        let rows = client
            .simple_query(&format!(
                "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput EXPORT_SNAPSHOT",
                quote_ident(&slot)
            ))
            .await?;
        let text = |i: usize| -> Result<String, Error> {
            rows.first()
                .and_then(|r| r.get(i))
                .and_then(|c| c.as_ref())
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .ok_or_else(|| anyhow::anyhow!("CREATE_REPLICATION_SLOT answered no column {i}"))
        };
        sources.update_stored(&spec.name, |s| s.created_slot = true);
        // A new slot starts a new history: positions of an older one mean nothing.
        state.written.clear();
        let name = text(2)?;
        if !name.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') || name.len() > 64 {
            anyhow::bail!("CREATE_REPLICATION_SLOT answered an odd snapshot name");
        }
        set(status, |s| s.state = SourceState::Snapshotting);
        state.snapshot(&name).await?;
        sources.update_stored(&spec.name, |s| s.snapshot_done = true);
        client.start().await?;
        client
    } else {
        if existing.is_none() {
            if stored.created_slot {
                let text = format!(
                    "slot '{slot}' that this source made is gone (dropped by hand, or the \
                     database was restored or replaced); it is made again, and changes \
                     committed while there was none are not captured"
                );
                tracing::warn!(source = %spec.name, "{text}");
                set(status, |s| {
                    s.last_error = Some(text);
                    s.last_error_ms = Some(ferry_broker::broker::now_ms() as i64);
                });
            }
            // A new slot starts a new history: positions of an older one mean nothing.
            state.written.clear();
            state
                .sql
                .execute(
                    "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
                    &[&slot],
                )
                .await?;
            sources.update_stored(&spec.name, |s| {
                s.created_slot = true;
                s.snapshot_done = true;
            });
        }
        ReplicationClient::connect(config).await?
    };
    client.wait_started().await?;
    let recreated = existing.is_none() && stored.created_slot;
    set(status, |s| {
        s.state = SourceState::Streaming;
        if !recreated {
            s.last_error = None;
        }
    });
    let result = state.stream(&mut client).await;
    client.stop();
    result
}

/// Makes the publication when it is missing; true if it was made.
async fn ensure_publication(
    sql: &tokio_postgres::Client,
    spec: &SourceSpec,
) -> Result<bool, Error> {
    let name = spec.publication();
    let exists = sql
        .query_opt("SELECT 1 FROM pg_publication WHERE pubname = $1", &[&name])
        .await?
        .is_some();
    if exists {
        return Ok(false);
    }
    let mut tables: Vec<TableEntry> = spec.tables.clone();
    if let Some(o) = &spec.outbox {
        let named = tables
            .iter()
            .any(|t| split_table(t.name()) == split_table(&o.table));
        if !tables.is_empty() && !named {
            tables.push(TableEntry::Name(o.table.clone()));
        }
    }
    let what = if tables.is_empty() {
        "FOR ALL TABLES".to_string()
    } else {
        let list: Result<Vec<String>, Error> = tables
            .iter()
            .map(|t| {
                let (s, n) = split_table(t.name()).map_err(|e| anyhow::anyhow!(e))?;
                let filter = t
                    .settings()
                    .and_then(|s| s.row_filter.as_ref())
                    .map(|w| format!(" WHERE ({w})"))
                    .unwrap_or_default();
                Ok(format!("{}.{}{filter}", quote_ident(&s), quote_ident(&n)))
            })
            .collect();
        format!("FOR TABLE {}", list?.join(", "))
    };
    sql.batch_execute(&format!("CREATE PUBLICATION {} {what}", quote_ident(&name)))
        .await
        .map_err(|e| anyhow::anyhow!("creating publication '{name}': {e}"))?;
    Ok(true)
}

mod backfill;
mod changes;
mod stream;
mod tables;

/// Records waiting to be written, by topic, in order.
#[derive(Default)]
struct Batch {
    by_topic: BTreeMap<String, Vec<(Position, ProduceRecord)>>,
    records: usize,
    bytes: usize,
    since: Option<Instant>,
}

impl Batch {
    fn push(&mut self, topic: String, pos: Position, r: ProduceRecord) {
        self.bytes +=
            r.value.as_ref().map_or(0, |v| v.len()) + r.key.as_ref().map_or(0, |k| k.len());
        self.records += 1;
        self.since.get_or_insert_with(Instant::now);
        self.by_topic.entry(topic).or_default().push((pos, r));
    }

    fn full(&self) -> bool {
        self.records >= BATCH_RECORDS || self.bytes >= BATCH_BYTES
    }
}

/// A batch being written: what to confirm to Postgres once it is durable.
struct InFlight {
    /// Records written, once durable.
    handle: tokio::task::JoinHandle<Result<u64, Error>>,
    /// The commit end the batch completes, if it ends on a commit boundary.
    confirm: Option<u64>,
    /// That commit's time, for the capture lag.
    commit: Option<i64>,
}

/// The capture state of one session.
struct Capture {
    sources: Arc<Sources>,
    broker: Arc<Broker>,
    spec: SourceSpec,
    status: Arc<Mutex<Status>>,
    sql: tokio_postgres::Client,
    /// Tables by relation OID, as the latest Relation message described them.
    tables: HashMap<u32, Arc<Table>>,
    /// What every record of the source shares.
    writer: Writer,
    /// Topics this source has written to (kept in the data folder).
    topics: std::collections::BTreeSet<String>,
    /// The last position each partition holds, found on start: records at or before it
    /// were written before a restart.
    written: HashMap<(String, u32), Position>,
    batch: Batch,
    txn: Option<Txn>,
    /// LSN of the change being turned into records, and the next record's index
    /// among its records.
    change_lsn: u64,
    sub: u32,
    /// End of the last commit seen: confirmed to Postgres once its records are durable.
    commit_end: Option<u64>,
    last_commit_ms: i64,
    /// The last commit's capture lag is not in the status yet.
    commit_unreported: bool,
    outbox: Option<(String, String)>,
    /// The batch being written, while the next one is gathered.
    in_flight: Option<InFlight>,
    /// Held by a write until it is durable (shared by the source's sessions).
    write_lock: Arc<tokio::sync::Mutex<()>>,
    /// When the stream started (for the lag before the first captured commit).
    streaming_since_ms: i64,
    /// Slot reads in a row that Postgres did not answer in time.
    probes_missed: u32,
    /// Wakes the stream loop when a backfill is asked for.
    wake: Arc<tokio::sync::Notify>,
    /// The backfill chunk between its watermarks, and its reading task's answer.
    chunk: Option<backfill::Chunk>,
    chunk_rx: Option<tokio::sync::oneshot::Receiver<backfill::ChunkRead>>,
}

impl Capture {
    fn new(
        sources: Arc<Sources>,
        spec: &SourceSpec,
        url: &PgUrl,
        status: Arc<Mutex<Status>>,
        sql: tokio_postgres::Client,
    ) -> Capture {
        Capture {
            broker: sources.broker(),
            sources,
            spec: spec.clone(),
            status,
            sql,
            tables: HashMap::new(),
            writer: Writer::new(spec, &url.database),
            topics: Default::default(),
            written: HashMap::new(),
            batch: Batch::default(),
            txn: None,
            change_lsn: 0,
            sub: 0,
            commit_end: None,
            last_commit_ms: 0,
            commit_unreported: false,
            in_flight: None,
            write_lock: Arc::default(),
            streaming_since_ms: 0,
            probes_missed: 0,
            wake: Arc::default(),
            chunk: None,
            chunk_rx: None,
            outbox: spec
                .outbox
                .as_ref()
                .and_then(|o| split_table(&o.table).ok()),
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}
