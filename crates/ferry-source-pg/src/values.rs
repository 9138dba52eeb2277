//! Column values in Postgres's text output format to JSON, as Debezium's PostgreSQL
//! connector writes them through its JSON converter with schemas disabled, with
//! `decimal.handling.mode=string` and the default `time.precision.mode=adaptive`
//! (microsecond types for microsecond columns).
//!
//! [`to_json`] takes the type's OID (from the [`Relation`](crate::pgoutput::Relation)'s
//! column) and the value's text ([`Datum::Text`](crate::pgoutput::Datum::Text)). It
//! never fails: a value it cannot read as its type, and a type it does not know,
//! becomes a JSON string of the text (invalid UTF-8 replaced by U+FFFD).
//!
//! # Mapping
//!
//! | Postgres type | JSON |
//! |---|---|
//! | `bool` | `true` / `false` |
//! | `int2`, `int4`, `int8`, `oid` | integer |
//! | `float4`, `float8` | number; `NaN`, `Infinity`, `-Infinity` as strings |
//! | `numeric`, `money`, `interval` | string as Postgres wrote it |
//! | `text`, `varchar`, `bpchar`, `name`, `char`, `uuid`, `inet`, `cidr`, `macaddr`, `xml` | string |
//! | `json`, `jsonb` | string holding the document (Debezium's `io.debezium.data.Json`) |
//! | `bytea` (hex output) | base64 string, standard alphabet, padded |
//! | `date` | days since 1970-01-01 (`io.debezium.time.Date`) |
//! | `time` | microseconds since midnight (`io.debezium.time.MicroTime`) |
//! | `timestamp` | microseconds since 1970-01-01 (`io.debezium.time.MicroTimestamp`) |
//! | `timestamptz` | ISO-8601 string in UTC with `Z` (`io.debezium.time.ZonedTimestamp`) |
//! | `timetz` | ISO-8601 time in UTC with `Z` (`io.debezium.time.ZonedTime`) |
//! | arrays of the types above | arrays (nested for several dimensions) |
//!
//! # Edges
//!
//! - `infinity` and `-infinity` dates and timestamps, BC timestamps, and timestamps
//!   whose UTC year falls outside 0001-9999 stay strings as Postgres wrote them.
//! - Dates, times and timestamps are read in the ISO `DateStyle` (Postgres's default,
//!   and what replication connections use); other styles stay strings.
//! - Fractions of a second with more than six digits (never written by Postgres) stay
//!   strings. Zoned values print the fraction without trailing zeros, and none when
//!   it is zero, as Java's ISO formatters do.
//! - Arrays with explicit bounds (`[0:1]={1,2}`) or more than six dimensions (Postgres's
//!   limit) stay strings.

use base64::Engine as _;
use serde_json::Value;

mod array;
mod datetime;
#[cfg(test)]
mod tests;

/// Type OIDs from `pg_type`, and the names `type_name` gives them.
const TYPES: &[(u32, &str)] = &[
    (BOOL, "bool"),
    (BYTEA, "bytea"),
    (18, "char"),
    (19, "name"),
    (INT8, "int8"),
    (INT2, "int2"),
    (INT4, "int4"),
    (25, "text"),
    (OID, "oid"),
    (114, "json"),
    (142, "xml"),
    (650, "cidr"),
    (FLOAT4, "float4"),
    (FLOAT8, "float8"),
    (790, "money"),
    (829, "macaddr"),
    (869, "inet"),
    (1042, "bpchar"),
    (1043, "varchar"),
    (DATE, "date"),
    (TIME, "time"),
    (TIMESTAMP, "timestamp"),
    (TIMESTAMPTZ, "timestamptz"),
    (1186, "interval"),
    (TIMETZ, "timetz"),
    (1700, "numeric"),
    (2950, "uuid"),
    (3802, "jsonb"),
    (1000, "_bool"),
    (1005, "_int2"),
    (1007, "_int4"),
    (1016, "_int8"),
    (1009, "_text"),
    (1015, "_varchar"),
    (1021, "_float4"),
    (1022, "_float8"),
    (1231, "_numeric"),
    (2951, "_uuid"),
    (3807, "_jsonb"),
];

const BOOL: u32 = 16;
const BYTEA: u32 = 17;
const INT8: u32 = 20;
const INT2: u32 = 21;
const INT4: u32 = 23;
const OID: u32 = 26;
const FLOAT4: u32 = 700;
const FLOAT8: u32 = 701;
const DATE: u32 = 1082;
const TIME: u32 = 1083;
const TIMESTAMP: u32 = 1114;
const TIMESTAMPTZ: u32 = 1184;
const TIMETZ: u32 = 1266;

/// Array type OIDs and the OIDs of their elements.
const ARRAYS: &[(u32, u32)] = &[
    (1000, BOOL),
    (1005, INT2),
    (1007, INT4),
    (1016, INT8),
    (1009, 25),
    (1015, 1043),
    (1021, FLOAT4),
    (1022, FLOAT8),
    (1231, 1700),
    (2951, 2950),
    (3807, 3802),
];

/// The `pg_type` name of a type this module knows (`"int4"`, `"_text"`), or `None`.
pub fn type_name(type_oid: u32) -> Option<&'static str> {
    TYPES
        .iter()
        .find(|(oid, _)| *oid == type_oid)
        .map(|(_, name)| *name)
}

/// A column value in Postgres's text format, of type `type_oid`, as Debezium's JSON
/// converter writes it (see the module doc). Never panics; what it cannot read as its
/// type becomes a JSON string of the text.
pub fn to_json(type_oid: u32, text: &[u8]) -> Value {
    if let Some((_, element_oid)) = ARRAYS.iter().find(|(oid, _)| *oid == type_oid) {
        return array::to_json(*element_oid, text).unwrap_or_else(|| string(text));
    }
    scalar(type_oid, text).unwrap_or_else(|| string(text))
}

/// [`to_json`] for a column whose type modifier is `type_modifier` (`-1` for none): as
/// Debezium's `adaptive` time precision, `time` and `timestamp` columns of precision 0
/// to 3 are written in milliseconds (`Time`, `Timestamp`), others in microseconds.
pub fn to_json_typed(type_oid: u32, type_modifier: i32, text: &[u8]) -> Value {
    let millis = (0..=3).contains(&type_modifier) && matches!(type_oid, TIME | TIMESTAMP);
    let value = to_json(type_oid, text);
    match (millis, value.as_i64()) {
        (true, Some(micros)) => Value::from(micros.div_euclid(1000)),
        _ => value,
    }
}

/// The text as a JSON string, invalid UTF-8 replaced.
fn string(text: &[u8]) -> Value {
    Value::String(String::from_utf8_lossy(text).into_owned())
}

/// A scalar of a type read beyond a string, or `None` to leave it a string.
fn scalar(type_oid: u32, text: &[u8]) -> Option<Value> {
    match type_oid {
        BOOL => match text {
            b"t" => Some(Value::Bool(true)),
            b"f" => Some(Value::Bool(false)),
            _ => None,
        },
        INT2 => parse::<i16>(text).map(Value::from),
        INT4 => parse::<i32>(text).map(Value::from),
        INT8 => parse::<i64>(text).map(Value::from),
        OID => parse::<u32>(text).map(Value::from),
        FLOAT4 | FLOAT8 => {
            // Rust's parser also takes "inf" and "nan"; Postgres writes "Infinity" and
            // "NaN", which (like any non-finite result) stay strings.
            let value = parse::<f64>(text)?;
            serde_json::Number::from_f64(value).map(Value::Number)
        }
        BYTEA => bytea(text),
        DATE => datetime::date(text).map(Value::from),
        TIME => datetime::time(text).map(Value::from),
        TIMESTAMP => datetime::timestamp(text).map(Value::from),
        TIMESTAMPTZ => datetime::timestamptz(text).map(Value::String),
        TIMETZ => datetime::timetz(text).map(Value::String),
        _ => None,
    }
}

fn parse<T: std::str::FromStr>(text: &[u8]) -> Option<T> {
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// `bytea` in the hex output format (`\x0aff`, Postgres's default) as base64.
fn bytea(text: &[u8]) -> Option<Value> {
    let hex = text.strip_prefix(b"\\x")?;
    if hex.len() % 2 != 0 {
        return None;
    }
    let bytes = hex
        .chunks_exact(2)
        .map(|pair| Some(hex_digit(pair.first()?)? << 4 | hex_digit(pair.get(1)?)?))
        .collect::<Option<Vec<u8>>>()?;
    Some(Value::String(
        base64::engine::general_purpose::STANDARD.encode(bytes),
    ))
}

fn hex_digit(b: &u8) -> Option<u8> {
    char::from(*b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}
