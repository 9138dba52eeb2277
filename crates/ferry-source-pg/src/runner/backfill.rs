//! Backfills: a table's rows read again while the source streams, without ever
//! overwriting a newer change with an older read.
//!
//! Each chunk (up to `CHUNK_ROWS` rows by primary key) is read, then a watermark (a
//! logical decoding message Ferry writes into the WAL itself) marks the point of the
//! stream after which every change the read could have missed has arrived. Rows the
//! stream changes from the moment the chunk is started until its watermark are dropped
//! from the chunk: the stream's change carries the whole row and is at least as new.
//! (Counting from the start, not from a first watermark before the read, also covers a
//! transaction whose commit is in the WAL but not yet visible to the read's snapshot.)
//! At the watermark the rest are written as `op` `r`, at that point of the stream. Progress (the last key written) is
//! kept in the data folder once the chunk's records are durable; after a crash the
//! backfill goes on from there, repeating at most the chunk that was being written.

use super::*;
use crate::{BackfillState, Stored};
use std::collections::HashSet;
use tokio::sync::oneshot;

/// Rows per chunk.
const CHUNK_ROWS: usize = 1024;
/// Prefix of the watermark messages.
pub(super) const WATERMARK_PREFIX: &str = "ferry.backfill";

/// A chunk between its watermarks.
pub(super) struct Chunk {
    backfill: u64,
    /// Distinguishes this chunk's watermarks from any others in the WAL.
    nonce: u64,
    table: Table,
    /// Indexes into the table's columns of the primary key (the chunks' order).
    pk: Vec<usize>,
    /// Keys (as JSON text) the stream changed since the chunk started.
    changed: HashSet<String>,
    truncated: bool,
    /// The rows read, once the reading task is done.
    rows: Option<Vec<Tuple>>,
}

/// What the reading task sends back.
pub(super) type ChunkRead = Result<Vec<Tuple>, String>;

impl Capture {
    /// Starts the next chunk of the oldest unfinished backfill, if none is in flight.
    pub(super) async fn next_chunk(&mut self) -> Result<(), Error> {
        if self.chunk.is_some() {
            return Ok(());
        }
        let Some(stored) = self.sources.stored(&self.spec.name) else {
            return Ok(());
        };
        let Some(b) = stored
            .backfills
            .iter()
            .find(|b| matches!(b.state, BackfillState::Queued | BackfillState::Running))
            .cloned()
        else {
            return Ok(());
        };
        if b.state == BackfillState::Queued {
            self.update_backfill(b.id, |x| x.state = BackfillState::Running);
        }
        let (schema, name) = split_table(&b.table).map_err(|e| anyhow::anyhow!(e))?;
        let table = match self.catalog_table(&schema, &name).await {
            Ok(t) => t,
            Err(e) => {
                self.fail_backfill(b.id, format!("{e:#}"));
                return Ok(());
            }
        };
        let Some(pk) = self.primary_key_of(&schema, &name, &table).await? else {
            self.fail_backfill(
                b.id,
                format!("table '{}' has no primary key to read it by", b.table),
            );
            return Ok(());
        };
        let nonce: u64 = rand_nonce();
        let select = tables::select_list(&table);
        let mut conditions = Vec::new();
        if let Some(last) = &b.last_key {
            let cols: Vec<String> = pk
                .iter()
                .map(|(c, _)| format!("ferry_t.{}", quote_ident(c)))
                .collect();
            let vals: Vec<String> = pk
                .iter()
                .enumerate()
                .map(|(i, (_, ty))| format!("(${}::text)::{ty}", i + 1))
                .collect();
            if last.len() == pk.len() {
                conditions.push(format!("({}) > ({})", cols.join(", "), vals.join(", ")));
            }
        }
        // The table's own row filter too: a backfill writes only rows the source
        // captures.
        let own = self
            .settings_of(&schema, &name)
            .and_then(|s| s.row_filter.clone());
        for w in own.iter().chain(b.row_filter.iter()) {
            conditions.push(format!("({w})"));
        }
        // Qualified: a bare name in ORDER BY would mean the output column, the text.
        let order: Vec<String> = pk
            .iter()
            .map(|(c, _)| format!("ferry_t.{}", quote_ident(c)))
            .collect();
        let query = format!(
            "SELECT {select} FROM {}.{} AS ferry_t{} ORDER BY {} LIMIT {CHUNK_ROWS}",
            quote_ident(&schema),
            quote_ident(&name),
            if conditions.is_empty() {
                String::new()
            } else {
                format!(" WHERE {}", conditions.join(" AND "))
            },
            order.join(", "),
        );
        let params: Vec<String> = b
            .last_key
            .clone()
            .filter(|l| l.len() == pk.len())
            .unwrap_or_default();
        let columns = table.columns.len();
        let url = self.spec.url.clone();
        let mark = format!("{}/{}/{nonce}", self.spec.name, b.id);
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            let read = read_chunk(&url, &mark, &query, &params, columns).await;
            let _ = tx.send(read.map_err(|e| format!("{e:#}")));
        });
        self.chunk_rx = Some(rx);
        self.chunk = Some(Chunk {
            backfill: b.id,
            nonce,
            pk: pk
                .iter()
                .filter_map(|(c, _)| table.columns.iter().position(|(t, _)| t == c))
                .collect(),
            table,
            changed: HashSet::new(),
            truncated: false,
            rows: None,
        });
        Ok(())
    }

    /// The reading task finished: keep its rows for the watermark, or fail.
    pub(super) fn chunk_read(&mut self, read: Result<ChunkRead, oneshot::error::RecvError>) {
        self.chunk_rx = None;
        let Some(chunk) = self.chunk.as_mut() else {
            return;
        };
        match read {
            Ok(Ok(rows)) => chunk.rows = Some(rows),
            Ok(Err(e)) => {
                let id = chunk.backfill;
                self.chunk = None;
                self.fail_backfill(id, e);
            }
            Err(_) => self.chunk = None,
        }
    }

    /// A watermark message of this source: the chunk's rows that the stream did not
    /// change meanwhile are written.
    pub(super) async fn watermark(
        &mut self,
        content: &[u8],
        client: &ReplicationClient,
    ) -> Result<(), Error> {
        let text = String::from_utf8_lossy(content);
        let mut parts = text.split('/');
        let (Some(source), Some(id), Some(nonce)) = (parts.next(), parts.next(), parts.next())
        else {
            return Ok(());
        };
        let ours = self.chunk.as_ref().is_some_and(|c| {
            source == self.spec.name && id.parse() == Ok(c.backfill) && nonce.parse() == Ok(c.nonce)
        });
        if !ours {
            return Ok(());
        }
        if self.chunk.as_ref().is_some_and(|c| c.rows.is_none()) {
            // The reading task wrote the watermark after its SELECT, so its rows are
            // on their way: wait for them.
            let Some(rx) = self.chunk_rx.take() else {
                self.chunk = None;
                return Ok(());
            };
            let read = rx.await;
            self.chunk_read(read);
        }
        let Some(mut chunk) = self.chunk.take() else {
            return Ok(());
        };
        let Some(rows) = chunk.rows.take() else {
            return Ok(());
        };
        self.write_chunk(chunk, rows, client).await
    }

    async fn write_chunk(
        &mut self,
        chunk: Chunk,
        rows: Vec<Tuple>,
        client: &ReplicationClient,
    ) -> Result<(), Error> {
        let count = rows.len();
        let topic = chunk.table.topic.clone();
        let now = ferry_broker::broker::now_ms() as i64;
        let mut written = 0u64;
        let mut last_key = None;
        for tuple in &rows {
            let after = envelope::row(&chunk.table, tuple, None);
            let key = envelope::key(&chunk.table, tuple, None);
            last_key = Some(
                chunk
                    .pk
                    .iter()
                    .map(|&i| match tuple.0.get(i) {
                        Some(Datum::Text(b)) => String::from_utf8_lossy(b).into_owned(),
                        _ => String::new(),
                    })
                    .collect::<Vec<_>>(),
            );
            let changed = key.as_ref().is_some_and(|k| chunk.changed.contains(k));
            if chunk.truncated || changed {
                continue;
            }
            let (txn, pos) = self.next_pos();
            let change = Change {
                table: &chunk.table,
                op: "r",
                before: None,
                after: Some(after),
                key,
                snapshot: "incremental",
            };
            let rec = self.writer.record(change, &txn, pos, now);
            self.batch.push(topic.clone(), pos, rec);
            written += 1;
        }
        // Progress is kept only once the chunk's records are durable.
        self.flush_and_confirm(client).await?;
        let done = count < CHUNK_ROWS;
        self.update_backfill(chunk.backfill, |b| {
            b.rows += written;
            if let Some(k) = last_key {
                b.last_key = Some(k);
            }
            if done {
                b.state = BackfillState::Done;
                b.finished_ms = Some(ferry_broker::broker::now_ms() as i64);
            }
        });
        self.next_chunk().await
    }

    /// Notes a change the stream wrote, for the chunk in flight.
    pub(super) fn note_change(&mut self, table: &Table, key: Option<&str>) {
        if let Some(c) = self.chunk.as_mut() {
            if c.table.schema == table.schema && c.table.name == table.name {
                if let Some(k) = key {
                    c.changed.insert(k.to_string());
                }
            }
        }
    }

    /// Notes a truncate: the chunk in flight read rows that are gone.
    pub(super) fn note_truncate(&mut self, table: &Table) {
        if let Some(c) = self.chunk.as_mut() {
            if c.table.schema == table.schema && c.table.name == table.name {
                c.truncated = true;
            }
        }
    }

    fn update_backfill(&self, id: u64, f: impl FnOnce(&mut crate::Backfill)) {
        let cancelled = std::cell::Cell::new(false);
        self.sources
            .update_stored(&self.spec.name, |s: &mut Stored| {
                if let Some(b) = s.backfills.iter_mut().find(|b| b.id == id) {
                    if b.state == BackfillState::Cancelled {
                        cancelled.set(true);
                    } else {
                        f(b);
                    }
                }
            });
        let _ = cancelled.get();
    }

    fn fail_backfill(&self, id: u64, error: String) {
        tracing::warn!(source = %self.spec.name, backfill = id, %error, "backfill failed");
        self.update_backfill(id, |b| {
            b.state = BackfillState::Failed;
            b.error = Some(error);
            b.finished_ms = Some(ferry_broker::broker::now_ms() as i64);
        });
    }

    /// The primary key's columns with their SQL types, in key order.
    async fn primary_key_of(
        &self,
        schema: &str,
        name: &str,
        table: &Table,
    ) -> Result<Option<Vec<(String, String)>>, Error> {
        let rows = self
            .sql
            .query(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) \
                 FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
                 WHERE n.nspname = $1 AND c.relname = $2 AND i.indisprimary \
                 ORDER BY array_position(i.indkey::int2[], a.attnum)",
                &[&schema, &name],
            )
            .await?;
        let pk: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        debug_assert!(pk
            .iter()
            .all(|(c, _)| table.columns.iter().any(|(t, _)| t == c)));
        Ok((!pk.is_empty()).then_some(pk))
    }
}

/// Reads the chunk, then writes its watermark, on a connection of its own.
async fn read_chunk(
    url: &str,
    mark: &str,
    query: &str,
    params: &[String],
    columns: usize,
) -> Result<Vec<Tuple>, Error> {
    let sql = sql_connect(url).await?;
    let emit = "SELECT pg_logical_emit_message(true, $1, $2)";
    let args: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
        .iter()
        .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect();
    // The user's condition runs with the source's role: read only.
    sql.batch_execute("BEGIN READ ONLY").await?;
    let rows = sql.query(query, &args).await?;
    sql.batch_execute("COMMIT").await?;
    let tuples = rows
        .iter()
        .map(|r| {
            Tuple(
                (0..columns)
                    .map(|i| match r.get::<_, Option<&str>>(i) {
                        Some(s) => Datum::Text(Bytes::copy_from_slice(s.as_bytes())),
                        None => Datum::Null,
                    })
                    .collect(),
            )
        })
        .collect();
    sql.execute(emit, &[&WATERMARK_PREFIX, &mark]).await?;
    Ok(tuples)
}

fn rand_nonce() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}
