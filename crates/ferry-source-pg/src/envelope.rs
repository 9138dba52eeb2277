//! Row changes to records: keys, Debezium's envelope, CloudEvents headers, and the
//! position header that makes capture exactly once.

use crate::pgoutput::{Datum, Tuple};
use crate::spec::{Format, SourceSpec};
use crate::values;
use bytes::Bytes;
use ferry_broker::ProduceRecord;
use ferry_log::batch::RecordHeader;
use serde_json::Value;

/// Header naming the source that wrote a record.
pub const SOURCE_HEADER: &str = "ferry.source";
/// Header with the record's place in the source's stream: the commit LSN of its
/// transaction, the LSN of the change it comes from, and its index among that change's
/// records (`0/16B3748:0/16B3700:1`). Postgres fixes all three, whatever the source's
/// settings; on restart, a source skips what each partition already holds up to the
/// last position there.
pub const POSITION_HEADER: &str = "ferry.source.position";
/// What Debezium writes for an unchanged TOASTed value it was not sent.
pub const UNAVAILABLE: &str = "__debezium_unavailable_value";

/// A place in a source's stream: records are written in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    /// Commit LSN of the record's transaction (0 for snapshot rows).
    pub lsn: u64,
    /// LSN of the change (or message) the record comes from.
    pub change: u64,
    /// Index of the record among that change's records (a delete and its tombstone,
    /// the relations of one truncate, the rows of a backfill chunk).
    pub sub: u32,
}

impl Position {
    pub fn header(&self) -> String {
        format!(
            "{}:{}:{}",
            lsn_text(self.lsn),
            lsn_text(self.change),
            self.sub
        )
    }

    pub fn parse(s: &str) -> Option<Position> {
        let mut parts = s.split(':');
        let p = Position {
            lsn: parse_lsn(parts.next()?)?,
            change: parse_lsn(parts.next()?)?,
            sub: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(p)
    }
}

/// An LSN as Postgres writes it: `16/B374D848`.
pub fn lsn_text(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.split_once('/')?;
    let hi = u32::from_str_radix(hi, 16).ok()?;
    let lo = u32::from_str_radix(lo, 16).ok()?;
    Some((u64::from(hi) << 32) | u64::from(lo))
}

/// What a source knows of a table: its columns in the order pgoutput sends them, which
/// of them form the record key, and the topic its changes go to.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub schema: String,
    pub name: String,
    /// Name and type OID of each column.
    pub columns: Vec<(String, u32)>,
    /// Indexes into `columns` of the key's columns; empty: no key.
    pub key: Vec<usize>,
    pub topic: String,
    /// `"schema":"…","table":"…"`, written into every envelope's `source`.
    source_names: String,
    /// Each column's name as a JSON string with its colon: `"id":`.
    column_names: Vec<String>,
    /// Each column's type modifier (precision), `-1` for none.
    modifiers: Vec<i32>,
}

impl Table {
    pub fn new(
        schema: String,
        name: String,
        columns: Vec<(String, u32)>,
        key: Vec<usize>,
        topic: String,
    ) -> Table {
        debug_assert!(key.iter().all(|&i| i < columns.len()));
        let source_names = format!(
            "\"schema\":{},\"table\":{}",
            json_string(&schema),
            json_string(&name)
        );
        let column_names = columns
            .iter()
            .map(|(c, _)| format!("{}:", json_string(c)))
            .collect();
        let modifiers = vec![-1; columns.len()];
        Table {
            schema,
            name,
            columns,
            key,
            topic,
            source_names,
            column_names,
            modifiers,
        }
    }

    /// The columns' type modifiers (precisions), in column order.
    pub fn with_modifiers(mut self, modifiers: Vec<i32>) -> Table {
        if modifiers.len() == self.columns.len() {
            self.modifiers = modifiers;
        }
        self
    }
}

fn json_string(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

/// The transaction a change belongs to.
#[derive(Debug, Clone, Copy)]
pub struct Txn {
    pub commit_lsn: u64,
    pub xid: u32,
    /// Commit time, milliseconds since the epoch.
    pub commit_ms: i64,
}

/// Microseconds since 2000-01-01 (Postgres's epoch) to milliseconds since 1970-01-01.
pub fn pg_time_to_unix_ms(us: i64) -> i64 {
    const PG_EPOCH_MS: i64 = 946_684_800_000;
    us.div_euclid(1000).saturating_add(PG_EPOCH_MS)
}

/// Writes one column's value. An unchanged TOASTed value is taken from `old` when the
/// old row carries it (REPLICA IDENTITY FULL), else written as [`UNAVAILABLE`].
fn write_datum(
    out: &mut Vec<u8>,
    (oid, modifier): (u32, i32),
    datum: Option<&Datum>,
    old: Option<&Datum>,
) {
    let value = match datum {
        Some(Datum::Unchanged) => match old {
            Some(d @ (Datum::Text(_) | Datum::Binary(_) | Datum::Null)) => d,
            _ => {
                out.extend_from_slice(b"\"");
                out.extend_from_slice(UNAVAILABLE.as_bytes());
                out.extend_from_slice(b"\"");
                return;
            }
        },
        Some(d) => d,
        None => &Datum::Null,
    };
    match value {
        Datum::Null | Datum::Unchanged => out.extend_from_slice(b"null"),
        Datum::Text(b) => {
            // Writing a Value to a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, &values::to_json_typed(oid, modifier, b));
        }
        Datum::Binary(b) => {
            use base64::Engine;
            out.push(b'"');
            out.extend_from_slice(
                base64::engine::general_purpose::STANDARD
                    .encode(b)
                    .as_bytes(),
            );
            out.push(b'"');
        }
    }
}

fn write_object(
    out: &mut Vec<u8>,
    table: &Table,
    columns: &[usize],
    tuple: &Tuple,
    old: Option<&Tuple>,
) {
    out.push(b'{');
    for (n, &i) in columns.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        out.extend_from_slice(table.column_names[i].as_bytes());
        write_datum(
            out,
            (table.columns[i].1, table.modifiers[i]),
            tuple.0.get(i),
            old.and_then(|o| o.0.get(i)),
        );
    }
    out.push(b'}');
}

/// A row as JSON object text, its columns in the table's order (see [`write_datum`]
/// for unchanged TOASTed values).
pub fn row(table: &Table, tuple: &Tuple, old: Option<&Tuple>) -> String {
    let all: Vec<usize> = (0..table.columns.len()).collect();
    let mut out = Vec::with_capacity(64 * table.columns.len());
    write_object(&mut out, table, &all, tuple, old);
    String::from_utf8(out).unwrap_or_default()
}

/// The record key: the key's columns as JSON object text, or none without a key.
pub fn key(table: &Table, tuple: &Tuple, old: Option<&Tuple>) -> Option<String> {
    if table.key.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(32);
    write_object(&mut out, table, &table.key, tuple, old);
    String::from_utf8(out).ok()
}

/// One change of a row (or a truncate of a table), ready to become a record. Rows and
/// keys are JSON text (see [`row`] and [`key`]).
pub struct Change<'a> {
    pub table: &'a Table,
    /// `c`, `u`, `d`, `r` (snapshot read) or `t`.
    pub op: &'static str,
    pub before: Option<String>,
    pub after: Option<String>,
    pub key: Option<String>,
    /// `"true"`, `"incremental"` or `"false"`, as Debezium's `source.snapshot`.
    pub snapshot: &'static str,
}

/// What every record of a source shares, made once per session.
pub struct Writer {
    name: String,
    format: Format,
    /// `{"version":…,"connector":"postgresql","name":…,` : the start of `source`.
    source_head: String,
    /// `"db":…,`
    db: String,
}

impl Writer {
    pub fn new(spec: &SourceSpec, database: &str) -> Writer {
        Writer {
            name: spec.name.clone(),
            format: spec.format,
            source_head: format!(
                "{{\"version\":\"ferry-{}\",\"connector\":\"postgresql\",\"name\":{},",
                env!("CARGO_PKG_VERSION"),
                json_string(&spec.name)
            ),
            db: format!("\"db\":{},", json_string(database)),
        }
    }

    /// The record for a change: the Debezium envelope as its value (with `ce_*` headers
    /// in the CloudEvents format), the key as JSON, the position and source headers.
    pub fn record(&self, c: Change<'_>, txn: &Txn, pos: Position, now_ms: i64) -> ProduceRecord {
        use std::fmt::Write;
        let lsn = (txn.commit_lsn != 0).then_some(txn.commit_lsn);
        let before = c.before.as_deref().unwrap_or("null");
        let after = c.after.as_deref().unwrap_or("null");
        let mut v = String::with_capacity(before.len() + after.len() + 320);
        v.push_str("{\"before\":");
        v.push_str(before);
        v.push_str(",\"after\":");
        v.push_str(after);
        v.push_str(",\"source\":");
        v.push_str(&self.source_head);
        let _ = write!(
            v,
            "\"ts_ms\":{},\"snapshot\":\"{}\",{}",
            txn.commit_ms, c.snapshot, self.db
        );
        match lsn {
            Some(l) => {
                let _ = write!(v, "\"sequence\":\"[null,\\\"{l}\\\"]\",");
            }
            None => v.push_str("\"sequence\":null,"),
        }
        v.push_str(&c.table.source_names);
        match (txn.xid != 0).then_some(txn.xid) {
            Some(x) => {
                let _ = write!(v, ",\"txId\":{x}");
            }
            None => v.push_str(",\"txId\":null"),
        }
        match lsn {
            Some(l) => {
                let _ = write!(v, ",\"lsn\":{l}");
            }
            None => v.push_str(",\"lsn\":null"),
        }
        let _ = write!(
            v,
            ",\"xmin\":null}},\"op\":\"{}\",\"ts_ms\":{now_ms},\"transaction\":null}}",
            c.op
        );
        debug_assert!(
            serde_json::from_str::<serde::de::IgnoredAny>(&v).is_ok(),
            "an envelope that is not JSON: {v}"
        );
        let mut headers = self.headers(pos);
        if self.format == Format::Cloudevents {
            let kind = match c.op {
                "c" => "created",
                "u" => "updated",
                "d" => "deleted",
                "r" => "read",
                _ => "truncated",
            };
            for (k, val) in [
                ("ce_specversion", "1.0".to_string()),
                ("ce_id", format!("{}:{}", self.name, pos.header())),
                ("ce_source", format!("/ferry/sources/{}", self.name)),
                (
                    "ce_type",
                    format!("ferry.postgres.{}.{}.{kind}", c.table.schema, c.table.name),
                ),
                ("ce_time", ferry_broker::time::rfc3339(txn.commit_ms)),
                ("ce_subject", format!("{}.{}", c.table.schema, c.table.name)),
                ("ce_datacontenttype", "application/json".to_string()),
            ] {
                headers.push(header(k, &val));
            }
        }
        ProduceRecord {
            key: c.key.map(Bytes::from),
            value: Some(Bytes::from(v)),
            headers,
            partition: None,
            timestamp: Some(txn.commit_ms),
            value_is_json: true,
        }
    }

    /// Debezium's tombstone after a delete: the key, no value.
    pub fn tombstone(&self, key: String, txn: &Txn, pos: Position) -> ProduceRecord {
        ProduceRecord {
            key: Some(Bytes::from(key)),
            value: None,
            headers: self.headers(pos),
            partition: None,
            timestamp: Some(txn.commit_ms),
            value_is_json: false,
        }
    }

    /// A record of the outbox, or of a logical decoding message.
    pub fn plain(
        &self,
        key: Option<Bytes>,
        value: Bytes,
        value_is_json: bool,
        extra: Vec<RecordHeader>,
        txn: &Txn,
        pos: Position,
    ) -> ProduceRecord {
        let mut headers = self.headers(pos);
        headers.extend(extra);
        ProduceRecord {
            key,
            value: Some(value),
            headers,
            partition: None,
            timestamp: Some(txn.commit_ms),
            value_is_json,
        }
    }

    fn headers(&self, pos: Position) -> Vec<RecordHeader> {
        vec![
            header(SOURCE_HEADER, &self.name),
            header(POSITION_HEADER, &pos.header()),
        ]
    }
}

pub fn header(k: &str, v: &str) -> RecordHeader {
    RecordHeader {
        key: Bytes::copy_from_slice(k.as_bytes()),
        value: Some(Bytes::copy_from_slice(v.as_bytes())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_and_lsns_read_back() {
        let p = Position {
            lsn: 0x16_B374_D848,
            change: 0x16_B374_D000,
            sub: 7,
        };
        assert_eq!(p.header(), "16/B374D848:16/B374D000:7");
        assert_eq!(Position::parse(&p.header()), Some(p));
        assert_eq!(Position::parse("nope"), None);
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert!(
            Position {
                lsn: 5,
                change: 9,
                sub: 9
            } < Position {
                lsn: 6,
                change: 1,
                sub: 0
            },
            "a later commit sorts after every record of an earlier one"
        );
    }

    fn table() -> Table {
        Table::new(
            "public".into(),
            "t \"quoted\"".into(),
            vec![("id".into(), 23), ("doc".into(), 25), ("n".into(), 23)],
            vec![0],
            "topic".into(),
        )
    }

    #[test]
    fn unchanged_toast_values_come_from_the_old_row_or_are_marked() {
        let table = table();
        let new = Tuple(vec![
            Datum::Text(Bytes::from("1")),
            Datum::Unchanged,
            Datum::Null,
        ]);
        let old = Tuple(vec![
            Datum::Text(Bytes::from("1")),
            Datum::Text(Bytes::from("big")),
            Datum::Null,
        ]);
        let r = row(&table, &new, Some(&old));
        assert_eq!(r, r#"{"id":1,"doc":"big","n":null}"#, "in column order");
        assert_eq!(key(&table, &new, None).as_deref(), Some(r#"{"id":1}"#));
        let r: Value = serde_json::from_str(&row(&table, &new, None)).unwrap();
        assert_eq!(r["doc"], UNAVAILABLE);
    }

    #[test]
    fn the_envelope_is_debeziums_and_valid_json() {
        let spec: SourceSpec = serde_json::from_value(serde_json::json!(
            {"name": "shop", "url": "postgres://u@h/d\"b"}
        ))
        .unwrap();
        let w = Writer::new(&spec, "d\"b");
        let table = table();
        let tuple = Tuple(vec![
            Datum::Text(Bytes::from("7")),
            Datum::Text(Bytes::from("x")),
            Datum::Text(Bytes::from("3")),
        ]);
        let change = Change {
            table: &table,
            op: "c",
            before: None,
            after: Some(row(&table, &tuple, None)),
            key: key(&table, &tuple, None),
            snapshot: "false",
        };
        let txn = Txn {
            commit_lsn: 22,
            xid: 9,
            commit_ms: 1000,
        };
        let rec = w.record(
            change,
            &txn,
            Position {
                lsn: 22,
                change: 20,
                sub: 0,
            },
            2000,
        );
        let v: Value = serde_json::from_slice(rec.value.as_ref().unwrap()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "before": null,
                "after": {"id": 7, "doc": "x", "n": 3},
                "source": {"version": concat!("ferry-", env!("CARGO_PKG_VERSION")),
                           "connector": "postgresql", "name": "shop", "ts_ms": 1000,
                           "snapshot": "false", "db": "d\"b", "sequence": "[null,\"22\"]",
                           "schema": "public", "table": "t \"quoted\"", "txId": 9,
                           "lsn": 22, "xmin": null},
                "op": "c", "ts_ms": 2000, "transaction": null
            })
        );
        assert_eq!(rec.key.as_deref(), Some(&br#"{"id":7}"#[..]));
        let snap = Txn {
            commit_lsn: 0,
            xid: 0,
            commit_ms: 1,
        };
        let change = Change {
            table: &table,
            op: "r",
            before: None,
            after: None,
            key: None,
            snapshot: "true",
        };
        let rec = w.record(change, &snap, Position::default(), 2);
        let v: Value = serde_json::from_slice(rec.value.as_ref().unwrap()).unwrap();
        assert_eq!(v["source"]["lsn"], Value::Null);
        assert_eq!(v["source"]["sequence"], Value::Null);
        assert_eq!(v["source"]["txId"], Value::Null);
    }

    #[test]
    fn postgres_time_is_moved_to_the_unix_epoch() {
        assert_eq!(pg_time_to_unix_ms(0), 946_684_800_000);
        assert_eq!(pg_time_to_unix_ms(1_500), 946_684_800_001);
    }
}
