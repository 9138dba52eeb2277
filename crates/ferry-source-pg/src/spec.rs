//! What a user asks of a source: where to capture from, what, and how records look.
//! Checked when a source is created or changed; kept in the data folder.

use serde::{Deserialize, Serialize};

/// Most sources one server runs: each holds a replication connection and a slot.
pub const SOURCES_MAX: usize = 64;
/// Longest source name: it becomes part of slot, publication and topic names.
pub const NAME_BYTES_MAX: usize = 48;
/// Default for [`SourceSpec::max_slot_wal_bytes`]: 1 GiB.
pub const MAX_SLOT_WAL_BYTES_DEFAULT: u64 = 1 << 30;

/// How a change is written into a record's value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Debezium's change event envelope (`before`, `after`, `source`, `op`, `ts_ms`), as
    /// its JSON converter writes it with schemas disabled.
    #[default]
    Debezium,
    /// The same envelope, with CloudEvents attributes as `ce_*` headers (binary mode).
    Cloudevents,
}

/// Whether a new source first reads the rows its tables already hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotMode {
    /// Read every existing row once (`op` `r`), consistent with the slot, then stream.
    #[default]
    Initial,
    /// Stream changes from the moment the slot is made.
    Never,
}

/// A table of the transactional outbox pattern, with Debezium's column conventions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outbox {
    /// `schema.table` of the outbox table.
    pub table: String,
    /// Topic of an event: `{aggregatetype}` is replaced by that column's value.
    #[serde(default = "default_outbox_topic")]
    pub topic_template: String,
}

fn default_outbox_topic() -> String {
    "outbox.event.{aggregatetype}".into()
}

/// A Postgres source as created and described.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    pub name: String,
    /// `postgres://user:password@host:port/database`. Never shown with its password.
    pub url: String,
    /// Tables to capture: `schema.table` names, or objects with a row filter, a topic
    /// or a key of their own; empty: every table of the database.
    #[serde(default)]
    pub tables: Vec<TableEntry>,
    /// Publication to read; made by Ferry when missing. Default `ferry_<name>`.
    #[serde(default)]
    pub publication: Option<String>,
    /// Logical replication slot; made by Ferry when missing. Default `ferry_<name>`.
    #[serde(default)]
    pub slot: Option<String>,
    /// Topic of a table's changes: `{source}`, `{schema}` and `{table}` are replaced.
    #[serde(default = "default_topic_template")]
    pub topic_template: String,
    /// Partitions of the topics the source creates; the server's default when absent.
    #[serde(default)]
    pub topic_partitions: Option<u32>,
    #[serde(default)]
    pub snapshot: SnapshotMode,
    #[serde(default)]
    pub format: Format,
    /// Changes to write, of `c`, `u`, `d`, `t` (insert, update, delete, truncate);
    /// empty: all of them.
    #[serde(default)]
    pub operations: Vec<String>,
    /// After a delete, a record with the key and no value (as Debezium writes), so that
    /// compaction can forget the row.
    #[serde(default = "yes")]
    pub tombstones: bool,
    #[serde(default)]
    pub outbox: Option<Outbox>,
    /// Topic for messages written with `pg_logical_emit_message(true, prefix, content)`
    /// inside a transaction: `{source}` and `{prefix}` are replaced.
    #[serde(default = "default_messages_topic")]
    pub messages_topic_template: String,
    /// WAL the slot may hold back before the source's status and metrics warn.
    #[serde(default = "default_max_slot_wal")]
    pub max_slot_wal_bytes: u64,
}

fn yes() -> bool {
    true
}
fn default_topic_template() -> String {
    "{source}.{schema}.{table}".into()
}
fn default_messages_topic() -> String {
    "{source}.messages".into()
}
fn default_max_slot_wal() -> u64 {
    MAX_SLOT_WAL_BYTES_DEFAULT
}

/// What `PATCH` may change (the database and the slot stay).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceUpdate {
    pub url: Option<String>,
    pub topic_template: Option<String>,
    pub format: Option<Format>,
    pub operations: Option<Vec<String>>,
    pub tombstones: Option<bool>,
    pub messages_topic_template: Option<String>,
    pub max_slot_wal_bytes: Option<u64>,
}

/// A table to capture: its name alone, or with settings of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TableEntry {
    Name(String),
    Settings(TableSettings),
}

/// A table with settings of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSettings {
    /// `schema.table`.
    pub table: String,
    /// A row filter: only rows for which this SQL condition holds are captured (a
    /// publication row filter, PostgreSQL 15 and later; also applied to snapshots).
    #[serde(default, rename = "where", skip_serializing_if = "Option::is_none")]
    pub row_filter: Option<String>,
    /// The table's topic, instead of the topic template's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Columns of the record key, instead of the primary key's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Vec<String>>,
}

impl TableEntry {
    pub fn name(&self) -> &str {
        match self {
            TableEntry::Name(n) => n,
            TableEntry::Settings(s) => &s.table,
        }
    }

    pub fn settings(&self) -> Option<&TableSettings> {
        match self {
            TableEntry::Name(_) => None,
            TableEntry::Settings(s) => Some(s),
        }
    }
}

/// Longest row filter.
pub const ROW_FILTER_BYTES_MAX: usize = 4096;

/// A row filter goes into `CREATE PUBLICATION ... WHERE (...)` and the snapshot's
/// query: one expression, not more statements.
pub(crate) fn check_row_filter(table: &str, w: &str) -> Result<(), String> {
    if w.trim().is_empty() || w.len() > ROW_FILTER_BYTES_MAX {
        return Err(format!(
            "the where of table '{table}' must be 1 to {ROW_FILTER_BYTES_MAX} bytes"
        ));
    }
    if w.contains(';') || w.contains("--") || w.contains("/*") || w.contains('\0') {
        return Err(format!(
            "the where of table '{table}' must be one SQL condition, without ';' or comments"
        ));
    }
    if w.contains('\\') || w.contains('$') {
        return Err(format!(
            "the where of table '{table}' must not hold '\\' or '$' (escape strings and \
             dollar quotes are not accepted)"
        ));
    }
    // Parentheses count outside quoted strings and identifiers only, so that a quoted
    // one cannot close the parentheses the condition is put in.
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    for c in w.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '(') => depth += 1,
            (None, ')') => {
                depth -= 1;
                if depth < 0 {
                    break;
                }
            }
            _ => {}
        }
    }
    if quote.is_some() {
        return Err(format!(
            "the where of table '{table}' has a quote that is not closed"
        ));
    }
    if depth != 0 {
        return Err(format!(
            "the where of table '{table}' has unbalanced parentheses"
        ));
    }
    Ok(())
}

/// A connection URL split into what the two Postgres clients need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgUrl {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub database: String,
}

impl PgUrl {
    pub fn parse(url: &str) -> Result<PgUrl, String> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err("url must start with postgres:// or postgresql://".into());
        }
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| format!("url is not a Postgres connection URL: {e}"))?;
        let host = match config.get_hosts() {
            [tokio_postgres::config::Host::Tcp(h)] => h.clone(),
            [] => "localhost".to_string(),
            _ => return Err("url must name one TCP host".into()),
        };
        let port = match config.get_ports() {
            [] => 5432,
            [p] => *p,
            _ => return Err("url must name one port".into()),
        };
        let user = config
            .get_user()
            .ok_or("url must name a user (postgres://user:password@host/database)")?
            .to_string();
        let password = config
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default();
        let database = config.get_dbname().unwrap_or(&user).to_string();
        Ok(PgUrl {
            host,
            port,
            user,
            password,
            database,
        })
    }

    /// The URL with its password replaced by `***`, for descriptions and logs.
    pub fn redacted(&self) -> String {
        format!(
            "postgres://{}:***@{}:{}/{}",
            self.user, self.host, self.port, self.database
        )
    }
}

/// A Postgres identifier Ferry puts in SQL it writes: letters, digits and `_`, not
/// starting with a digit, at most 63 bytes (Postgres's own limit).
pub fn check_identifier(what: &str, s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !s.as_bytes()[0].is_ascii_digit();
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} '{s}' must be 1 to 63 of a-z, 0-9 and _, not starting with a digit"
        ))
    }
}

/// `schema.table` split in two; a name without a schema is in `public`.
pub fn split_table(s: &str) -> Result<(String, String), String> {
    let (schema, table) = s.split_once('.').unwrap_or(("public", s));
    for part in [schema, table] {
        let ok = !part.is_empty()
            && part.len() <= 63
            && !part.contains(['"', '\0'])
            && !part.chars().any(char::is_control);
        if !ok {
            return Err(format!(
                "table '{s}' must be schema.table, each 1 to 63 characters without quotes"
            ));
        }
    }
    Ok((schema.to_string(), table.to_string()))
}

/// A Postgres identifier quoted for SQL, any `"` in it doubled.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn check_template(what: &str, t: &str, allowed: &[&str]) -> Result<(), String> {
    if t.is_empty() || t.len() > 200 {
        return Err(format!("{what} must be 1 to 200 characters"));
    }
    let mut rest = t;
    while let Some(i) = rest.find('{') {
        let Some(j) = rest[i..].find('}') else {
            return Err(format!("{what} '{t}' has a '{{' without its '}}'"));
        };
        let name = &rest[i + 1..i + j];
        if !allowed.contains(&name) {
            return Err(format!(
                "{what} '{t}' names {{{name}}}; it may use {}",
                allowed
                    .iter()
                    .map(|a| format!("{{{a}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        rest = &rest[i + j + 1..];
    }
    Ok(())
}

/// Fills `{name}` placeholders of a checked template.
pub fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = template.to_string();
    for (name, value) in values {
        out = out.replace(&format!("{{{name}}}"), value);
    }
    out
}

impl SourceSpec {
    pub fn publication(&self) -> String {
        self.publication
            .clone()
            .unwrap_or_else(|| format!("ferry_{}", self.name.replace('-', "_")))
    }

    pub fn slot(&self) -> String {
        self.slot
            .clone()
            .unwrap_or_else(|| format!("ferry_{}", self.name.replace('-', "_")))
    }

    /// Whether changes of kind `op` (`c`, `u`, `d`, `t`) are written.
    pub fn wants(&self, op: &str) -> bool {
        self.operations.is_empty() || self.operations.iter().any(|o| o == op)
    }

    /// Checks everything that can be checked without the database.
    pub fn check(&self) -> Result<PgUrl, String> {
        let n = &self.name;
        if n.is_empty()
            || n.len() > NAME_BYTES_MAX
            || !n
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
            || !n.as_bytes()[0].is_ascii_lowercase()
        {
            return Err(format!(
                "source name '{n}' must be 1 to {NAME_BYTES_MAX} of a-z, 0-9, _ and -, starting with a letter"
            ));
        }
        let url = PgUrl::parse(&self.url)?;
        check_identifier("publication", &self.publication())?;
        check_identifier("slot", &self.slot())?;
        if self.tables.len() > 1000 {
            return Err("at most 1000 tables".into());
        }
        let mut seen = std::collections::HashSet::new();
        for t in &self.tables {
            let (schema, name) = split_table(t.name())?;
            if !seen.insert((schema, name)) {
                return Err(format!("table '{}' is named twice", t.name()));
            }
            if let Some(s) = t.settings() {
                if let Some(w) = &s.row_filter {
                    check_row_filter(&s.table, w)?;
                }
                if let Some(topic) = &s.topic {
                    if topic.is_empty() || topic.len() > 249 {
                        return Err(format!(
                            "the topic of table '{}' must be 1 to 249 characters",
                            s.table
                        ));
                    }
                }
                if let Some(key) = &s.key {
                    if key.is_empty()
                        || key.len() > 32
                        || key.iter().any(|k| k.is_empty() || k.len() > 63)
                    {
                        return Err(format!(
                            "the key of table '{}' must name 1 to 32 columns",
                            s.table
                        ));
                    }
                }
            }
        }
        check_template(
            "topic_template",
            &self.topic_template,
            &["source", "schema", "table"],
        )?;
        check_template(
            "messages_topic_template",
            &self.messages_topic_template,
            &["source", "prefix"],
        )?;
        if let Some(o) = &self.outbox {
            split_table(&o.table)?;
            check_template(
                "outbox.topic_template",
                &o.topic_template,
                &["source", "aggregatetype"],
            )?;
        }
        if let Some(p) = self.topic_partitions {
            if p == 0 || p > 10_000 {
                return Err("topic_partitions must be 1 to 10000".into());
            }
        }
        for op in &self.operations {
            if !["c", "u", "d", "t"].contains(&op.as_str()) {
                return Err(format!(
                    "operation '{op}' is not one of c, u, d, t (insert, update, delete, truncate)"
                ));
            }
        }
        Ok(url)
    }

    /// The spec with a changed part applied (checked by the caller).
    pub fn updated(&self, u: SourceUpdate) -> SourceSpec {
        let mut s = self.clone();
        if let Some(v) = u.url {
            s.url = v;
        }
        if let Some(v) = u.topic_template {
            s.topic_template = v;
        }
        if let Some(v) = u.format {
            s.format = v;
        }
        if let Some(v) = u.operations {
            s.operations = v;
        }
        if let Some(v) = u.tombstones {
            s.tombstones = v;
        }
        if let Some(v) = u.messages_topic_template {
            s.messages_topic_template = v;
        }
        if let Some(v) = u.max_slot_wal_bytes {
            s.max_slot_wal_bytes = v;
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, url: &str) -> SourceSpec {
        serde_json::from_value(serde_json::json!({"name": name, "url": url})).unwrap()
    }

    #[test]
    fn defaults_and_names() {
        let s = spec("shop-db", "postgres://u:p@db:6543/shop");
        assert_eq!(s.publication(), "ferry_shop_db");
        assert_eq!(s.slot(), "ferry_shop_db");
        assert_eq!(s.topic_template, "{source}.{schema}.{table}");
        assert!(s.tombstones);
        let url = s.check().unwrap();
        assert_eq!(
            url,
            PgUrl {
                host: "db".into(),
                port: 6543,
                user: "u".into(),
                password: "p".into(),
                database: "shop".into()
            }
        );
        assert_eq!(url.redacted(), "postgres://u:***@db:6543/shop");
        assert_eq!(
            fill(
                &s.topic_template,
                &[("source", "a"), ("schema", "b"), ("table", "c")]
            ),
            "a.b.c"
        );
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        for (name, url, want) in [
            ("Shop", "postgres://u@h/d", "source name"),
            ("shop", "mysql://u@h/d", "postgres://"),
            ("shop", "postgres://h/d", "user"),
        ] {
            let e = spec(name, url).check().unwrap_err();
            assert!(e.contains(want), "{e}");
        }
        let mut s = spec("shop", "postgres://u@h/d");
        s.topic_template = "{source}.{nope}".into();
        assert!(s.check().unwrap_err().contains("{nope}"));
        s.topic_template = "x".into();
        s.operations = vec!["x".into()];
        assert!(s.check().unwrap_err().contains("operation"));
        s.operations = vec![];
        s.tables = vec![TableEntry::Name("public.\"x".into())];
        assert!(s.check().unwrap_err().contains("table"));
        s.tables = serde_json::from_value(serde_json::json!([
            {"table": "t", "where": "a > 1); DROP TABLE t; --"}
        ]))
        .unwrap();
        assert!(s.check().unwrap_err().contains("one SQL condition"));
        for bad in [
            "a = '(' ), \"public\".\"secret\" WHERE ( b = ')'",
            "a = 'open",
            "a = E'\\'' ) OR (true",
            "a = $$)$$",
        ] {
            s.tables =
                serde_json::from_value(serde_json::json!([{"table": "t", "where": bad}])).unwrap();
            assert!(s.check().is_err(), "{bad} was accepted");
        }
        s.tables = serde_json::from_value(serde_json::json!([
            {"table": "t", "where": "name = 'a (b' AND \"odd)col\" > 1"}
        ]))
        .unwrap();
        assert!(s.check().is_ok(), "quoted parentheses are not counted");
        s.tables = serde_json::from_value(serde_json::json!(["t", {"table": "public.t"}])).unwrap();
        assert!(s.check().unwrap_err().contains("twice"));
        s.tables = serde_json::from_value(serde_json::json!([
            {"table": "t", "where": "status = 'paid'", "topic": "paid", "key": ["customer"]}
        ]))
        .unwrap();
        assert!(s.check().is_ok());
        s.tables = vec![];
        s.slot = Some("Bad Slot".into());
        assert!(s.check().unwrap_err().contains("slot"));
    }

    #[test]
    fn tables_default_to_public() {
        assert_eq!(
            split_table("orders").unwrap(),
            ("public".into(), "orders".into())
        );
        assert_eq!(split_table("a.b").unwrap(), ("a".into(), "b".into()));
    }
}
