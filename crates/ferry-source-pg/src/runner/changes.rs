//! Decoded changes to records: row changes, truncates, outbox rows and logical
//! decoding messages.

use super::*;

impl Capture {
    /// Turns one decoded change into records.
    pub(super) async fn change(&mut self, message: Message) -> Result<(), Error> {
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
                let topic = self.topic_for(&r.namespace, &r.name);
                let modifiers = r.columns.iter().map(|c| c.type_modifier).collect();
                self.tables.insert(
                    r.id,
                    Arc::new(
                        Table::new(r.namespace, r.name, columns, key, topic)
                            .with_modifiers(modifiers),
                    ),
                );
            }
            Message::Insert { relation_id, new } => {
                let table = self.table(relation_id)?;
                if self.is_outbox(&table) {
                    self.outbox_event(&table, &new);
                } else if self.spec.wants("c") {
                    let after = envelope::row(&table, &new, None);
                    let key = envelope::key(&table, &new, None);
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
                let key = envelope::key(&table, &new, old_full);
                let old_key = match &old {
                    Some(OldTuple::Full(t) | OldTuple::Key(t)) => envelope::key(&table, t, None),
                    None => None,
                };
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
                let (OldTuple::Full(t) | OldTuple::Key(t)) = &old;
                let before = envelope::row(&table, t, None);
                let key = envelope::key(&table, t, None);
                self.emit(&table, "d", Some(before), None, key.clone());
                if let (true, Some(key)) = (self.spec.tombstones, key) {
                    self.tombstone(&table, key);
                }
            }
            Message::Truncate { relation_ids, .. } => {
                for id in relation_ids {
                    let table = self.table(id)?;
                    self.note_truncate(&table);
                    if self.spec.wants("t") && !self.is_outbox(&table) {
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

    pub(super) fn table(&self, relation_id: u32) -> Result<Arc<Table>, Error> {
        self.tables.get(&relation_id).cloned().ok_or_else(|| {
            anyhow::anyhow!("a change of relation {relation_id} came before its Relation message")
        })
    }

    pub(super) fn is_outbox(&self, t: &Table) -> bool {
        self.outbox
            .as_ref()
            .is_some_and(|(s, n)| *s == t.schema && *n == t.name)
    }

    pub(super) fn emit(
        &mut self,
        table: &Table,
        op: &'static str,
        before: Option<String>,
        after: Option<String>,
        key: Option<String>,
    ) {
        self.note_change(table, key.as_deref());
        let (txn, pos) = self.next_pos();
        let topic = table.topic.clone();
        let change = Change {
            table,
            op,
            before,
            after,
            key,
            snapshot: "false",
        };
        let now = ferry_broker::broker::now_ms() as i64;
        let rec = self.writer.record(change, &txn, pos, now);
        self.batch.push(topic, pos, rec);
    }

    pub(super) fn tombstone(&mut self, table: &Table, key: String) {
        let (txn, pos) = self.next_pos();
        let topic = table.topic.clone();
        let rec = self.writer.tombstone(key, &txn, pos);
        self.batch.push(topic, pos, rec);
    }

    /// An insert into the outbox table: `aggregatetype` picks the topic, `aggregateid`
    /// is the key, `payload` the value, every other column a header.
    pub(super) fn outbox_event(&mut self, table: &Table, new: &Tuple) {
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
            self.skip(1, "an outbox row without aggregatetype");
            return;
        };
        let template = self
            .spec
            .outbox
            .as_ref()
            .map_or("outbox.event.{aggregatetype}", |o| {
                o.topic_template.as_str()
            });
        let topic = fill(
            template,
            &[("source", &self.spec.name), ("aggregatetype", &kind)],
        );
        let (txn, pos) = self.next_pos();
        let rec = self.writer.plain(
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
    pub(super) fn message(&mut self, prefix: &str, content: Bytes) {
        let topic = fill(
            &self.spec.messages_topic_template,
            &[("source", &self.spec.name), ("prefix", prefix)],
        );
        let (txn, pos) = self.next_pos();
        let is_json = serde_json::from_slice::<serde::de::IgnoredAny>(&content).is_ok();
        let rec = self.writer.plain(
            None,
            content,
            is_json,
            vec![envelope::header("ferry.pg.prefix", prefix)],
            &txn,
            pos,
        );
        self.batch.push(topic, pos, rec);
    }

    pub(super) fn skip(&self, count: u64, why: &str) {
        tracing::warn!(source = %self.spec.name, "skipped {why}");
        set(&self.status, |s| {
            s.skipped += count;
            s.last_error = Some(format!("skipped {why}"));
        });
    }
}

/// `\x`-hex bytea text to bytes.
pub(super) fn decode_bytea(text: &[u8]) -> Option<Bytes> {
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
