//! Row changes to records: keys, Debezium's envelope, CloudEvents headers, and the
//! position header that makes capture exactly once.

use crate::pgoutput::{Datum, Tuple};
use crate::spec::{Format, SourceSpec};
use crate::values;
use bytes::Bytes;
use ferry_broker::ProduceRecord;
use ferry_log::batch::RecordHeader;
use serde_json::{json, Map, Value};

/// Header naming the source that wrote a record.
pub const SOURCE_HEADER: &str = "ferry.source";
/// Header with the record's place in the source's stream: the commit LSN of its
/// transaction and its index in it (`0/16B3748:3`). On restart, a source skips what
/// each partition already holds up to the last position there.
pub const POSITION_HEADER: &str = "ferry.source.position";
/// What Debezium writes for an unchanged TOASTed value it was not sent.
pub const UNAVAILABLE: &str = "__debezium_unavailable_value";

/// A place in a source's stream: records are written in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    /// Commit LSN of the record's transaction (0 for snapshot rows).
    pub lsn: u64,
    /// Index of the record among its transaction's records.
    pub seq: u32,
}

impl Position {
    pub fn header(&self) -> String {
        format!("{}:{}", lsn_text(self.lsn), self.seq)
    }

    pub fn parse(s: &str) -> Option<Position> {
        let (lsn, seq) = s.rsplit_once(':')?;
        Some(Position {
            lsn: parse_lsn(lsn)?,
            seq: seq.parse().ok()?,
        })
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

/// What a source knows of a table: its columns in the order pgoutput sends them, and
/// which of them form the primary key (the record key).
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub schema: String,
    pub name: String,
    /// Name and type OID of each column.
    pub columns: Vec<(String, u32)>,
    /// Indexes into `columns` of the primary key's columns; empty: no key.
    pub key: Vec<usize>,
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

/// A row as a JSON object. An unchanged TOASTed value is taken from `old` when the old
/// row carries it (REPLICA IDENTITY FULL), else written as [`UNAVAILABLE`].
pub fn row(table: &Table, tuple: &Tuple, old: Option<&Tuple>) -> Map<String, Value> {
    let mut out = Map::with_capacity(table.columns.len());
    for (i, (name, oid)) in table.columns.iter().enumerate() {
        let datum = tuple.0.get(i);
        let value = match datum {
            Some(Datum::Unchanged) => match old.and_then(|o| o.0.get(i)) {
                Some(d @ (Datum::Text(_) | Datum::Binary(_) | Datum::Null)) => datum_json(*oid, d),
                _ => Value::String(UNAVAILABLE.into()),
            },
            Some(d) => datum_json(*oid, d),
            None => Value::Null,
        };
        out.insert(name.clone(), value);
    }
    out
}

fn datum_json(oid: u32, d: &Datum) -> Value {
    match d {
        Datum::Null => Value::Null,
        Datum::Text(b) => values::to_json(oid, b),
        Datum::Binary(b) => {
            use base64::Engine;
            Value::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        Datum::Unchanged => Value::String(UNAVAILABLE.into()),
    }
}

/// The record key: the primary key's columns as a JSON object, or none without a key.
pub fn key_of(table: &Table, row: &Map<String, Value>) -> Option<Value> {
    if table.key.is_empty() {
        return None;
    }
    let mut key = Map::new();
    for &i in &table.key {
        let name = &table.columns[i].0;
        key.insert(name.clone(), row.get(name).cloned().unwrap_or(Value::Null));
    }
    Some(Value::Object(key))
}

/// One change of a row (or a truncate of a table), ready to become a record.
pub struct Change<'a> {
    pub table: &'a Table,
    /// `c`, `u`, `d`, `r` (snapshot read) or `t`.
    pub op: &'static str,
    pub before: Option<Map<String, Value>>,
    pub after: Option<Map<String, Value>>,
    pub key: Option<Value>,
    /// `"true"`, `"last"` or `"false"`, as Debezium's `source.snapshot`.
    pub snapshot: &'static str,
}

/// Context every record of a source shares.
pub struct Writer<'a> {
    pub spec: &'a SourceSpec,
    pub database: &'a str,
}

impl Writer<'_> {
    /// The record for a change: the Debezium envelope as its value (with `ce_*` headers
    /// in the CloudEvents format), the key as JSON, the position and source headers.
    pub fn record(&self, c: Change<'_>, txn: &Txn, pos: Position, now_ms: i64) -> ProduceRecord {
        let lsn = (txn.commit_lsn != 0).then_some(txn.commit_lsn);
        let source = json!({
            "version": concat!("ferry-", env!("CARGO_PKG_VERSION")),
            "connector": "postgresql",
            "name": self.spec.name,
            "ts_ms": txn.commit_ms,
            "snapshot": c.snapshot,
            "db": self.database,
            "sequence": lsn.map(|l| format!("[null,\"{l}\"]")),
            "schema": c.table.schema,
            "table": c.table.name,
            "txId": (txn.xid != 0).then_some(txn.xid),
            "lsn": lsn,
            "xmin": null,
        });
        let value = json!({
            "before": c.before,
            "after": c.after,
            "source": source,
            "op": c.op,
            "ts_ms": now_ms,
            "transaction": null,
        });
        let mut headers = self.headers(pos);
        if self.spec.format == Format::Cloudevents {
            let kind = match c.op {
                "c" => "created",
                "u" => "updated",
                "d" => "deleted",
                "r" => "read",
                _ => "truncated",
            };
            for (k, v) in [
                ("ce_specversion", "1.0".to_string()),
                ("ce_id", format!("{}:{}", self.spec.name, pos.header())),
                ("ce_source", format!("/ferry/sources/{}", self.spec.name)),
                (
                    "ce_type",
                    format!("ferry.postgres.{}.{}.{kind}", c.table.schema, c.table.name),
                ),
                ("ce_time", ferry_broker::time::rfc3339(txn.commit_ms)),
                ("ce_subject", format!("{}.{}", c.table.schema, c.table.name)),
                ("ce_datacontenttype", "application/json".to_string()),
            ] {
                headers.push(header(k, &v));
            }
        }
        ProduceRecord {
            key: c.key.map(|k| Bytes::from(k.to_string())),
            value: Some(Bytes::from(value.to_string())),
            headers,
            partition: None,
            timestamp: Some(txn.commit_ms),
            value_is_json: true,
        }
    }

    /// Debezium's tombstone after a delete: the key, no value.
    pub fn tombstone(&self, key: Value, txn: &Txn, pos: Position) -> ProduceRecord {
        ProduceRecord {
            key: Some(Bytes::from(key.to_string())),
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
            header(SOURCE_HEADER, &self.spec.name),
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
            seq: 7,
        };
        assert_eq!(p.header(), "16/B374D848:7");
        assert_eq!(Position::parse(&p.header()), Some(p));
        assert_eq!(Position::parse("nope"), None);
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert!(
            Position { lsn: 5, seq: 9 } < Position { lsn: 6, seq: 0 },
            "a later commit sorts after every record of an earlier one"
        );
    }

    #[test]
    fn unchanged_toast_values_come_from_the_old_row_or_are_marked() {
        let table = Table {
            schema: "public".into(),
            name: "t".into(),
            columns: vec![("id".into(), 23), ("doc".into(), 25)],
            key: vec![0],
        };
        let new = Tuple(vec![Datum::Text(Bytes::from("1")), Datum::Unchanged]);
        let old = Tuple(vec![
            Datum::Text(Bytes::from("1")),
            Datum::Text(Bytes::from("big")),
        ]);
        let r = row(&table, &new, Some(&old));
        assert_eq!(Value::Object(r.clone()), json!({"id": 1, "doc": "big"}));
        assert_eq!(key_of(&table, &r), Some(json!({"id": 1})));
        let r = row(&table, &new, None);
        assert_eq!(r["doc"], json!(UNAVAILABLE));
    }

    #[test]
    fn postgres_time_is_moved_to_the_unix_epoch() {
        assert_eq!(pg_time_to_unix_ms(0), 946_684_800_000);
        assert_eq!(pg_time_to_unix_ms(1_500), 946_684_800_001);
    }
}
