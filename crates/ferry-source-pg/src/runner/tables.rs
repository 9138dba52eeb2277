//! Tables: the snapshot of the publication's tables, primary keys, each table's own
//! settings and topic.

use super::*;

impl Capture {
    /// Reads every row of the publication's tables inside the slot's exported snapshot.
    pub(super) async fn snapshot(&mut self, snapshot: &str) -> Result<(), Error> {
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
            let table = self.catalog_table(&schema, &name).await?;
            let select = select_list(&table);
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
            let topic = table.topic.clone();
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
                    let key = envelope::key(&table, &tuple, None);
                    let change = Change {
                        table: &table,
                        op: "r",
                        before: None,
                        after: Some(after),
                        key,
                        snapshot: "true",
                    };
                    let rec = self.writer.record(change, &txn, Position::default(), now);
                    self.batch.push(topic.clone(), Position::default(), rec);
                    if self.batch.full() {
                        self.flush().await?;
                    }
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
    pub(super) fn settings_of(&self, schema: &str, name: &str) -> Option<&TableSettings> {
        self.spec.tables.iter().find_map(|t| {
            let s = t.settings()?;
            (split_table(&s.table).ok()? == (schema.to_string(), name.to_string())).then_some(s)
        })
    }

    /// The record key's columns: the table's own key setting, else the primary key.
    pub(super) async fn key_columns(
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

    /// The topic of a table's changes: its own, or the template's.
    pub(super) fn topic_for(&self, schema: &str, name: &str) -> String {
        if let Some(topic) = self.settings_of(schema, name).and_then(|s| s.topic.clone()) {
            return topic;
        }
        fill(
            &self.spec.topic_template,
            &[
                ("source", &self.spec.name),
                ("schema", schema),
                ("table", name),
            ],
        )
    }

    /// Indexes of the primary key's columns; without a primary key, the replica
    /// identity's columns that pgoutput flags (none for REPLICA IDENTITY FULL or NOTHING).
    pub(super) async fn primary_key(
        &self,
        oid: u32,
        columns: &[(String, u32)],
    ) -> Result<Vec<usize>, Error> {
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

    /// A table as the catalog describes it now, with its record key.
    pub(super) async fn catalog_table(&self, schema: &str, name: &str) -> Result<Table, Error> {
        let oid: u32 = self
            .sql
            .query_opt(
                "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname = $2",
                &[&schema, &name],
            )
            .await?
            .ok_or_else(|| anyhow::anyhow!("table '{schema}.{name}' does not exist"))?
            .get(0);
        let cols = self
            .sql
            .query(
                "SELECT attname::text, atttypid, atttypmod FROM pg_attribute \
                 WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                &[&oid],
            )
            .await?;
        let columns: Vec<(String, u32)> = cols.iter().map(|r| (r.get(0), r.get(1))).collect();
        let modifiers: Vec<i32> = cols.iter().map(|r| r.get(2)).collect();
        let key = self.key_columns(oid, schema, name, &columns).await?;
        let topic = self.topic_for(schema, name);
        Ok(
            Table::new(schema.to_string(), name.to_string(), columns, key, topic)
                .with_modifiers(modifiers),
        )
    }
}

/// Every column of a table in its text form, for a SELECT.
pub(super) fn select_list(table: &Table) -> String {
    if table.columns.is_empty() {
        return "NULL".to_string();
    }
    table
        .columns
        .iter()
        .map(|(c, _)| format!("{}::text", quote_ident(c)))
        .collect::<Vec<_>>()
        .join(", ")
}
