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
const SNAPSHOT_CHUNK: usize = 2000;
/// How far back from a partition's end a restart looks for the source's last record.
const RECOVERY_SCAN_RECORDS: u64 = 10_000;
/// Connection attempts back off up to this.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

type Error = anyhow::Error;

/// Runs a source until `stop` turns true, reconnecting with backoff after failures.
pub(crate) async fn run(
    sources: Arc<Sources>,
    spec: SourceSpec,
    status: Arc<Mutex<Status>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(500);
    loop {
        set(&status, |s| s.state = SourceState::Starting);
        let started = Instant::now();
        let outcome = tokio::select! {
            r = session(&sources, &spec, &status) => r,
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
    let mut s = status.lock().unwrap_or_else(|p| p.into_inner());
    f(&mut s);
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

/// Drops a source's slot (ending the session holding it first) and, if Ferry made it,
/// its publication.
pub(crate) async fn drop_slot(spec: &SourceSpec, drop_publication: bool) -> Result<(), Error> {
    let sql = sql_connect(&spec.url).await?;
    let slot = spec.slot();
    for attempt in 0..20 {
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
    .with_buffer_size(4096)
    .with_application_name(format!("ferry-{}", spec.name));

    let stored = sources.stored(&spec.name).unwrap_or_default();
    let mut state = Capture::new(sources.clone(), spec, &url, status.clone(), sql);
    state.topics = stored.topics.clone();
    state.recover().await?;

    let snapshot = spec.snapshot == crate::spec::SnapshotMode::Initial && !stored.snapshot_done;
    let mut client = if snapshot {
        if existing.is_some() {
            // A snapshot cut short: its exported snapshot died with its session, so the
            // slot it was consistent with cannot be used. Start both again.
            tracing::info!(source = %spec.name, "snapshot was cut short; starting it again");
            drop_slot(spec, false).await?;
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
            state
                .sql
                .execute(
                    "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
                    &[&slot],
                )
                .await?;
            sources.update_stored(&spec.name, |s| s.snapshot_done = true);
        }
        ReplicationClient::connect(config).await?
    };
    client.wait_started().await?;
    set(status, |s| {
        s.state = SourceState::Streaming;
        s.last_error = None;
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

/// The capture state of one session.
struct Capture {
    sources: Arc<Sources>,
    broker: Arc<Broker>,
    spec: SourceSpec,
    database: String,
    status: Arc<Mutex<Status>>,
    sql: tokio_postgres::Client,
    /// Tables by relation OID, as the latest Relation message described them.
    tables: HashMap<u32, Table>,
    /// Topics this source has written to (kept in the data folder).
    topics: std::collections::BTreeSet<String>,
    /// The last position each partition holds, found on start: records at or before it
    /// were written before a restart.
    written: HashMap<(String, u32), Position>,
    batch: Batch,
    txn: Option<Txn>,
    seq: u32,
    /// End of the last commit seen: confirmed to Postgres once its records are durable.
    commit_end: Option<u64>,
    last_commit_ms: i64,
    /// The last commit's capture lag is not in the status yet.
    commit_unreported: bool,
    outbox: Option<(String, String)>,
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
            database: url.database.clone(),
            status,
            sql,
            tables: HashMap::new(),
            topics: Default::default(),
            written: HashMap::new(),
            batch: Batch::default(),
            txn: None,
            seq: 0,
            commit_end: None,
            last_commit_ms: 0,
            commit_unreported: false,
            outbox: spec
                .outbox
                .as_ref()
                .and_then(|o| split_table(&o.table).ok()),
        }
    }

    /// Finds the last position of this source in each partition of its topics.
    async fn recover(&mut self) -> Result<(), Error> {
        for topic in self.topics.clone() {
            let Ok(t) = self.broker.topic(&topic) else {
                continue;
            };
            for p in 0..t.partitions().len() as u32 {
                let (earliest, latest) = self.broker.bounds(&topic, p)?;
                let mut end = latest;
                let floor = latest.saturating_sub(RECOVERY_SCAN_RECORDS).max(earliest);
                'scan: while end > floor {
                    let from = end.saturating_sub(500).max(floor);
                    let read = self
                        .broker
                        .read(
                            &topic,
                            p,
                            from,
                            (end - from) as usize,
                            16 << 20,
                            Duration::ZERO,
                        )
                        .await?;
                    for r in read.records.iter().rev() {
                        if r.offset as u64 >= end {
                            continue;
                        }
                        let ours = r.header(envelope::SOURCE_HEADER).map(|v| v.as_ref())
                            == Some(self.spec.name.as_bytes());
                        if let (true, Some(pos)) = (
                            ours,
                            r.header(envelope::POSITION_HEADER)
                                .and_then(|v| std::str::from_utf8(v).ok())
                                .and_then(Position::parse),
                        ) {
                            self.written.insert((topic.clone(), p), pos);
                            break 'scan;
                        }
                    }
                    if read.records.is_empty() {
                        break;
                    }
                    end = from;
                }
            }
        }
        Ok(())
    }

    /// Reads every row of the publication's tables inside the slot's exported snapshot.
    async fn snapshot(&mut self, snapshot: &str) -> Result<(), Error> {
        self.sql
            .batch_execute(&format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{snapshot}'"
            ))
            .await?;
        let tables = self
            .sql
            .query(
                "SELECT schemaname::text, tablename::text FROM pg_publication_tables \
                 WHERE pubname = $1 ORDER BY 1, 2",
                &[&self.spec.publication()],
            )
            .await?;
        let now = ferry_broker::broker::now_ms() as i64;
        let txn = Txn {
            commit_lsn: 0,
            xid: 0,
            commit_ms: now,
        };
        let total = tables.len();
        set(&self.status, |s| s.snapshot_tables = total as u32);
        for row in tables {
            let (schema, name): (String, String) = (row.get(0), row.get(1));
            if self.outbox.as_ref() == Some(&(schema.clone(), name.clone())) {
                continue;
            }
            let oid: u32 = self
                .sql
                .query_one(
                    "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE n.nspname = $1 AND c.relname = $2",
                    &[&schema, &name],
                )
                .await?
                .get(0);
            let cols = self
                .sql
                .query(
                    "SELECT attname::text, atttypid FROM pg_attribute \
                     WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                    &[&oid],
                )
                .await?;
            let columns: Vec<(String, u32)> = cols.iter().map(|r| (r.get(0), r.get(1))).collect();
            let key = self.key_columns(oid, &schema, &name, &columns).await?;
            let table = Table {
                schema: schema.clone(),
                name: name.clone(),
                columns,
                key,
            };
            let select = if table.columns.is_empty() {
                "NULL".to_string()
            } else {
                table
                    .columns
                    .iter()
                    .map(|(c, _)| format!("{}::text", quote_ident(c)))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            self.sql
                .batch_execute(&format!(
                    "DECLARE ferry_snapshot NO SCROLL CURSOR FOR SELECT {select} FROM {}.{}{}",
                    quote_ident(&schema),
                    quote_ident(&name),
                    self.settings_of(&schema, &name)
                        .and_then(|s| s.row_filter.as_ref())
                        .map(|w| format!(" WHERE ({w})"))
                        .unwrap_or_default()
                ))
                .await?;
            let topic = self.topic_for(&table);
            loop {
                let rows = self
                    .sql
                    .query(&format!("FETCH {SNAPSHOT_CHUNK} FROM ferry_snapshot"), &[])
                    .await?;
                let n = rows.len();
                for r in &rows {
                    let tuple = Tuple(
                        (0..table.columns.len())
                            .map(|i| match r.get::<_, Option<&str>>(i) {
                                Some(s) => Datum::Text(Bytes::copy_from_slice(s.as_bytes())),
                                None => Datum::Null,
                            })
                            .collect(),
                    );
                    let after = envelope::row(&table, &tuple, None);
                    let key = envelope::key_of(&table, &after);
                    let change = Change {
                        table: &table,
                        op: "r",
                        before: None,
                        after: Some(after),
                        key,
                        snapshot: "true",
                    };
                    let rec = self.writer().record(change, &txn, Position::default(), now);
                    self.batch.push(topic.clone(), Position::default(), rec);
                }
                set(&self.status, |s| s.snapshot_rows += n as u64);
                if self.batch.full() || n < SNAPSHOT_CHUNK {
                    self.flush().await?;
                }
                if n < SNAPSHOT_CHUNK {
                    break;
                }
            }
            self.sql.batch_execute("CLOSE ferry_snapshot").await?;
            set(&self.status, |s| s.snapshot_tables_done += 1);
        }
        self.sql.batch_execute("COMMIT").await?;
        self.flush().await
    }

    /// A table's own settings, if the source names it with some.
    fn settings_of(&self, schema: &str, name: &str) -> Option<&TableSettings> {
        self.spec.tables.iter().find_map(|t| {
            let s = t.settings()?;
            (split_table(&s.table).ok()? == (schema.to_string(), name.to_string())).then_some(s)
        })
    }

    /// The record key's columns: the table's own key setting, else the primary key.
    async fn key_columns(
        &self,
        oid: u32,
        schema: &str,
        name: &str,
        columns: &[(String, u32)],
    ) -> Result<Vec<usize>, Error> {
        if let Some(key) = self.settings_of(schema, name).and_then(|s| s.key.as_ref()) {
            return Ok(key
                .iter()
                .filter_map(|k| columns.iter().position(|(c, _)| c == k))
                .collect());
        }
        self.primary_key(oid, columns).await
    }

    fn writer(&self) -> Writer<'_> {
        Writer {
            spec: &self.spec,
            database: &self.database,
        }
    }

    fn topic_for(&self, table: &Table) -> String {
        if let Some(topic) = self
            .settings_of(&table.schema, &table.name)
            .and_then(|s| s.topic.clone())
        {
            return topic;
        }
        fill(
            &self.spec.topic_template,
            &[
                ("source", &self.spec.name),
                ("schema", &table.schema),
                ("table", &table.name),
            ],
        )
    }

    /// Indexes of the primary key's columns; without a primary key, the replica
    /// identity's columns that pgoutput flags (none for REPLICA IDENTITY FULL or NOTHING).
    async fn primary_key(&self, oid: u32, columns: &[(String, u32)]) -> Result<Vec<usize>, Error> {
        let rows = self
            .sql
            .query(
                "SELECT a.attname::text FROM pg_index i \
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
                 WHERE i.indrelid = $1 AND i.indisprimary \
                 ORDER BY array_position(i.indkey::int2[], a.attnum)",
                &[&oid],
            )
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let name: String = r.get(0);
                columns.iter().position(|(c, _)| *c == name)
            })
            .collect())
    }

    /// Streams changes until the connection fails.
    async fn stream(&mut self, client: &mut ReplicationClient) -> Result<(), Error> {
        let limits = pgoutput::Limits::default();
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            let deadline = self.batch.since.map(|s| s + LINGER);
            let event = tokio::select! {
                biased;
                ev = client.recv() => ev?,
                _ = sleep_until(deadline) => {
                    self.flush_and_confirm(client).await?;
                    continue;
                }
                _ = tick.tick() => {
                    self.refresh_slot_status().await;
                    continue;
                }
            };
            let Some(event) = event else {
                return Ok(());
            };
            match event {
                ReplicationEvent::Begin {
                    final_lsn,
                    xid,
                    commit_time_micros,
                } => {
                    self.txn = Some(Txn {
                        commit_lsn: u64::from(final_lsn),
                        xid,
                        commit_ms: envelope::pg_time_to_unix_ms(commit_time_micros),
                    });
                    self.seq = 0;
                }
                ReplicationEvent::XLogData { data, .. } => {
                    let message = pgoutput::decode(&data, &limits)
                        .map_err(|e| anyhow::anyhow!("pgoutput message: {e}"))?;
                    self.change(message).await?;
                }
                ReplicationEvent::Message {
                    transactional: true,
                    prefix,
                    content,
                    ..
                } => self.message(&prefix, content),
                ReplicationEvent::Message { .. } => {}
                ReplicationEvent::Commit {
                    end_lsn,
                    commit_time_micros,
                    ..
                } => {
                    self.txn = None;
                    self.commit_end = Some(u64::from(end_lsn));
                    self.last_commit_ms = envelope::pg_time_to_unix_ms(commit_time_micros);
                    self.commit_unreported = true;
                    set(&self.status, |s| s.transactions += 1);
                    if self.batch.records == 0 {
                        // Nothing of this transaction was captured: confirm at once.
                        self.flush_and_confirm(client).await?;
                    }
                }
                ReplicationEvent::KeepAlive { wal_end, .. } => {
                    if self.txn.is_none() && self.batch.records == 0 {
                        // Everything sent before this is durable: let the slot move
                        // on an idle database too.
                        let end = u64::from(wal_end);
                        if self.commit_end.is_none_or(|c| end > c) {
                            self.commit_end = Some(end);
                        }
                        self.flush_and_confirm(client).await?;
                    }
                }
                ReplicationEvent::StoppedAt { .. } => return Ok(()),
            }
            if self.batch.full() {
                self.flush_and_confirm(client).await?;
            }
        }
    }

    async fn flush_and_confirm(&mut self, client: &ReplicationClient) -> Result<(), Error> {
        self.flush().await?;
        if self.txn.is_none() {
            if let Some(end) = self.commit_end {
                client.update_applied_lsn(Lsn::from(end));
                // The capture lag of the last commit, once, when its records are durable.
                let commit = std::mem::take(&mut self.commit_unreported)
                    .then_some(self.last_commit_ms)
                    .filter(|c| *c > 0);
                let lag = commit.map(|c| (ferry_broker::broker::now_ms() as i64 - c).max(0) as u64);
                set(&self.status, |s| {
                    s.position = Some(envelope::lsn_text(end));
                    if commit.is_some() {
                        s.last_commit_ms = commit;
                        s.capture_lag_ms = lag;
                    }
                });
            }
        }
        Ok(())
    }

    async fn refresh_slot_status(&mut self) {
        let r = self
            .sql
            .query_opt(
                "SELECT (pg_current_wal_lsn() - restart_lsn)::int8, \
                 (pg_current_wal_lsn() - confirmed_flush_lsn)::int8 \
                 FROM pg_replication_slots WHERE slot_name = $1",
                &[&self.spec.slot()],
            )
            .await;
        if let Ok(Some(row)) = r {
            let held: Option<i64> = row.get(0);
            let lag: Option<i64> = row.get(1);
            let max = self.spec.max_slot_wal_bytes;
            let name = self.spec.name.clone();
            set(&self.status, |s| {
                s.slot_wal_bytes = held.map(|h| h.max(0) as u64);
                s.lag_bytes = lag.map(|l| l.max(0) as u64);
                let over = s.slot_wal_bytes.is_some_and(|h| h > max);
                if over && !s.slot_wal_warning {
                    tracing::warn!(source = %name, held = ?s.slot_wal_bytes, limit = max,
                        "the source's slot holds more WAL than max_slot_wal_bytes");
                }
                s.slot_wal_warning = over;
            });
        }
    }

    fn next_pos(&mut self) -> (Txn, Position) {
        let txn = self.txn.unwrap_or(Txn {
            commit_lsn: 0,
            xid: 0,
            commit_ms: ferry_broker::broker::now_ms() as i64,
        });
        let pos = Position {
            lsn: txn.commit_lsn,
            seq: self.seq,
        };
        self.seq = self.seq.wrapping_add(1);
        (txn, pos)
    }

    /// Turns one decoded change into records.
    async fn change(&mut self, message: Message) -> Result<(), Error> {
        match message {
            Message::Relation(r) => {
                let columns: Vec<(String, u32)> = r
                    .columns
                    .iter()
                    .map(|c| (c.name.clone(), c.type_oid))
                    .collect();
                let own_key = self
                    .settings_of(&r.namespace, &r.name)
                    .is_some_and(|s| s.key.is_some());
                let mut key = self
                    .key_columns(r.id, &r.namespace, &r.name, &columns)
                    .await?;
                if key.is_empty() && !own_key && r.replica_identity != b'f' {
                    key = r
                        .columns
                        .iter()
                        .enumerate()
                        .filter(|(_, c)| c.key)
                        .map(|(i, _)| i)
                        .collect();
                }
                self.tables.insert(
                    r.id,
                    Table {
                        schema: r.namespace,
                        name: r.name,
                        columns,
                        key,
                    },
                );
            }
            Message::Insert { relation_id, new } => {
                let table = self.table(relation_id)?;
                if self.is_outbox(&table) {
                    self.outbox_event(&table, &new);
                } else if self.spec.wants("c") {
                    let after = envelope::row(&table, &new, None);
                    let key = envelope::key_of(&table, &after);
                    self.emit(&table, "c", None, Some(after), key);
                }
            }
            Message::Update {
                relation_id,
                old,
                new,
            } => {
                let table = self.table(relation_id)?;
                if self.is_outbox(&table) || !self.spec.wants("u") {
                    return Ok(());
                }
                let old_full = match &old {
                    Some(OldTuple::Full(t)) => Some(t),
                    _ => None,
                };
                let after = envelope::row(&table, &new, old_full);
                let before = match &old {
                    Some(OldTuple::Full(t)) => Some(envelope::row(&table, t, None)),
                    // Under the default identity only the key columns have values; the
                    // others are null, as in Debezium's `before`.
                    Some(OldTuple::Key(t)) => Some(envelope::row(&table, t, None)),
                    None => None,
                };
                let key = envelope::key_of(&table, &after);
                let old_key = before.as_ref().and_then(|b| envelope::key_of(&table, b));
                match old_key {
                    Some(old_key) if Some(&old_key) != key.as_ref() => {
                        // The key changed: as Debezium, a delete of the old key (and
                        // its tombstone), then a create of the new one.
                        self.emit(&table, "d", before, None, Some(old_key.clone()));
                        if self.spec.tombstones {
                            self.tombstone(&table, old_key);
                        }
                        self.emit(&table, "c", None, Some(after), key);
                    }
                    _ => self.emit(&table, "u", before, Some(after), key),
                }
            }
            Message::Delete { relation_id, old } => {
                let table = self.table(relation_id)?;
                if self.is_outbox(&table) || !self.spec.wants("d") {
                    return Ok(());
                }
                let before = match &old {
                    OldTuple::Full(t) => envelope::row(&table, t, None),
                    OldTuple::Key(t) => envelope::row(&table, t, None),
                };
                let key = envelope::key_of(&table, &before);
                self.emit(&table, "d", Some(before), None, key.clone());
                if let (true, Some(key)) = (self.spec.tombstones, key) {
                    self.tombstone(&table, key);
                }
            }
            Message::Truncate { relation_ids, .. } => {
                if !self.spec.wants("t") {
                    return Ok(());
                }
                for id in relation_ids {
                    let table = self.table(id)?;
                    if !self.is_outbox(&table) {
                        self.emit(&table, "t", None, None, None);
                    }
                }
            }
            // Boundaries and messages come as their own events; types and origins
            // change nothing Ferry writes.
            Message::Begin { .. }
            | Message::Commit { .. }
            | Message::Message { .. }
            | Message::Type { .. }
            | Message::Origin { .. } => {}
        }
        Ok(())
    }

    fn table(&self, relation_id: u32) -> Result<Table, Error> {
        self.tables.get(&relation_id).cloned().ok_or_else(|| {
            anyhow::anyhow!("a change of relation {relation_id} came before its Relation message")
        })
    }

    fn is_outbox(&self, t: &Table) -> bool {
        self.outbox
            .as_ref()
            .is_some_and(|(s, n)| *s == t.schema && *n == t.name)
    }

    fn emit(
        &mut self,
        table: &Table,
        op: &'static str,
        before: Option<serde_json::Map<String, serde_json::Value>>,
        after: Option<serde_json::Map<String, serde_json::Value>>,
        key: Option<serde_json::Value>,
    ) {
        let (txn, pos) = self.next_pos();
        let topic = self.topic_for(table);
        let change = Change {
            table,
            op,
            before,
            after,
            key,
            snapshot: "false",
        };
        let now = ferry_broker::broker::now_ms() as i64;
        let rec = self.writer().record(change, &txn, pos, now);
        self.batch.push(topic, pos, rec);
    }

    fn tombstone(&mut self, table: &Table, key: serde_json::Value) {
        let (txn, pos) = self.next_pos();
        let topic = self.topic_for(table);
        let rec = self.writer().tombstone(key, &txn, pos);
        self.batch.push(topic, pos, rec);
    }

    /// An insert into the outbox table: `aggregatetype` picks the topic, `aggregateid`
    /// is the key, `payload` the value, every other column a header.
    fn outbox_event(&mut self, table: &Table, new: &Tuple) {
        let mut aggregate_type = None;
        let mut key = None;
        let mut payload = None;
        let mut payload_json = false;
        let mut headers = Vec::new();
        for (i, (col, oid)) in table.columns.iter().enumerate() {
            let text = match new.0.get(i) {
                Some(Datum::Text(b)) | Some(Datum::Binary(b)) => b.clone(),
                _ => continue,
            };
            match col.as_str() {
                "aggregatetype" => {
                    aggregate_type = Some(String::from_utf8_lossy(&text).into_owned())
                }
                "aggregateid" => key = Some(text),
                "payload" => {
                    payload_json = *oid == 114 || *oid == 3802;
                    payload = Some(if *oid == 17 {
                        decode_bytea(&text).unwrap_or(text)
                    } else {
                        text
                    });
                }
                _ => headers.push(envelope::header(col, &String::from_utf8_lossy(&text))),
            }
        }
        let Some(kind) = aggregate_type else {
            self.skip("an outbox row without aggregatetype");
            return;
        };
        let topic = fill(
            &self
                .spec
                .outbox
                .as_ref()
                .map_or("outbox.event.{aggregatetype}", |o| {
                    o.topic_template.as_str()
                })
                .to_string(),
            &[("source", &self.spec.name), ("aggregatetype", &kind)],
        );
        let (txn, pos) = self.next_pos();
        let rec = self.writer().plain(
            key,
            payload.unwrap_or_default(),
            payload_json,
            headers,
            &txn,
            pos,
        );
        self.batch.push(topic, pos, rec);
    }

    /// A transactional logical decoding message: the outbox without a table.
    fn message(&mut self, prefix: &str, content: Bytes) {
        let topic = fill(
            &self.spec.messages_topic_template,
            &[("source", &self.spec.name), ("prefix", prefix)],
        );
        let (txn, pos) = self.next_pos();
        let is_json = serde_json::from_slice::<serde::de::IgnoredAny>(&content).is_ok();
        let rec = self.writer().plain(
            None,
            content,
            is_json,
            vec![envelope::header("ferry.pg.prefix", prefix)],
            &txn,
            pos,
        );
        self.batch.push(topic, pos, rec);
    }

    fn skip(&self, why: &str) {
        tracing::warn!(source = %self.spec.name, "skipped {why}");
        set(&self.status, |s| {
            s.skipped += 1;
            s.last_error = Some(format!("skipped {why}"));
        });
    }

    /// Writes what the batch holds, topic by topic, leaving out what a partition holds
    /// already, and waits until it is durable.
    async fn flush(&mut self) -> Result<(), Error> {
        let batch = std::mem::take(&mut self.batch);
        if batch.records == 0 {
            return Ok(());
        }
        let mut written = 0u64;
        let mut writes = Vec::new();
        for (topic, records) in batch.by_topic {
            let count = match self.ensure_topic(&topic).await {
                Ok(n) => n,
                Err(BrokerError::InvalidTopicName { name, reason }) => {
                    self.skip(&format!(
                        "{} records for topic '{name}', whose name is invalid: {reason}",
                        records.len()
                    ));
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let mut out = Vec::with_capacity(records.len());
            for (pos, mut r) in records {
                let p = r.key.as_ref().map_or(0, |k| partition_for_key(k, count));
                if pos.lsn != 0 {
                    if let Some(last) = self.written.get(&(topic.clone(), p)) {
                        if pos <= *last {
                            continue;
                        }
                    }
                }
                r.partition = Some(p);
                out.push(r);
            }
            if out.is_empty() {
                continue;
            }
            written += out.len() as u64;
            let broker = self.broker.clone();
            writes.push(async move {
                let r = broker.produce(&topic, out).await;
                (topic, r)
            });
        }
        for (topic, r) in futures_util::future::join_all(writes).await {
            r.map_err(|e| anyhow::anyhow!("writing to topic '{topic}': {e}"))?;
        }
        set(&self.status, |s| s.records += written);
        Ok(())
    }

    /// The topic's partition count, making the topic when it is missing.
    async fn ensure_topic(&mut self, topic: &str) -> Result<u32, BrokerError> {
        let t = match self.broker.topic(topic) {
            Ok(t) => t,
            Err(BrokerError::TopicNotFound(_)) => {
                let settings = ferry_broker::broker::TopicSettings {
                    partitions: self.spec.topic_partitions,
                    ..Default::default()
                };
                match self.broker.create_topic(topic, settings).await {
                    Ok(_) | Err(BrokerError::TopicExists(_)) => {}
                    Err(e) => return Err(e),
                }
                self.broker.topic(topic)?
            }
            Err(e) => return Err(e),
        };
        if !self.topics.contains(topic) {
            self.topics.insert(topic.to_string());
            let name = self.spec.name.clone();
            let topic = topic.to_string();
            self.sources.update_stored(&name, move |s| {
                s.topics.insert(topic);
            });
        }
        Ok(t.partitions().len() as u32)
    }
}

/// `\x`-hex bytea text to bytes.
fn decode_bytea(text: &[u8]) -> Option<Bytes> {
    let hex = text.strip_prefix(b"\\x")?;
    if hex.len() % 2 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(hex.len() / 2);
    for pair in hex.chunks_exact(2) {
        let s = std::str::from_utf8(pair).ok()?;
        out.push(u8::from_str_radix(s, 16).ok()?);
    }
    Some(Bytes::from(out))
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}
