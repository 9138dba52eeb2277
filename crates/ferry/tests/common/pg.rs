//! A real PostgreSQL for the source tests: `FERRY_TEST_POSTGRES_URL` names a server
//! with wal_level=logical (scripts/test.sh starts one with scripts/postgres.sh). Each
//! test makes its own database, so that publications and slots never meet.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{call, http};

/// The server's URL; without one, the test is skipped with a message (and fails in CI).
pub fn base_url() -> Option<String> {
    match std::env::var("FERRY_TEST_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "FERRY_TEST_POSTGRES_URL is not set: scripts/test.sh starts a PostgreSQL with scripts/postgres.sh"
            );
            eprintln!("skipped: set FERRY_TEST_POSTGRES_URL (see scripts/postgres.sh)");
            None
        }
    }
}

pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// `base` with its database replaced by `db`.
pub fn with_db(base: &str, db: &str) -> String {
    let (head, _) = base.rsplit_once('/').expect("a URL with a database");
    format!("{head}/{db}")
}

/// A new, empty database `db` (dropped first with its slots if it exists), and a
/// client connected to it.
pub async fn fresh_db(base: &str, db: &str) -> (String, tokio_postgres::Client) {
    let admin = connect(base).await;
    drop_db(&admin, db).await;
    admin
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .unwrap();
    let url = with_db(base, db);
    let client = connect(&url).await;
    (url, client)
}

pub async fn drop_db(admin: &tokio_postgres::Client, db: &str) {
    admin
        .execute(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
             WHERE database = $1 AND active_pid IS NOT NULL",
            &[&db],
        )
        .await
        .unwrap();
    for _ in 0..40 {
        let r = admin
            .execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1",
                &[&db],
            )
            .await;
        if r.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .await
        .unwrap();
}

/// Creates a source and checks the answer.
pub async fn create_source(ferry: &str, body: Value) -> Value {
    let (s, v) = call(http().post(format!("{ferry}/v1/sources")).json(&body)).await;
    assert_eq!(s, 201, "{v}");
    v
}

pub async fn describe(ferry: &str, name: &str) -> Value {
    let (s, v) = call(http().get(format!("{ferry}/v1/sources/{name}"))).await;
    assert_eq!(s, 200, "{v}");
    v
}

/// Waits until the source's state is `state`.
pub async fn wait_state(ferry: &str, name: &str, state: &str, within: Duration) -> Value {
    let until = Instant::now() + within;
    loop {
        let v = describe(ferry, name).await;
        if v["status"]["state"] == state {
            return v;
        }
        assert!(
            Instant::now() < until,
            "source {name} never became {state}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every record of a partition once there are at least `n`, waiting up to `within`.
pub async fn wait_records(
    ferry: &str,
    topic: &str,
    partition: u32,
    n: usize,
    within: Duration,
) -> Vec<Value> {
    let until = Instant::now() + within;
    let mut out: Vec<Value> = Vec::new();
    loop {
        let (s, v) = call(http().get(format!(
            "{ferry}/v1/topics/{topic}/partitions/{partition}/records?offset={}&max_records=1000&wait_ms=200",
            out.len()
        )))
        .await;
        if s == 200 {
            out.extend(v["records"].as_array().cloned().unwrap_or_default());
        }
        if out.len() >= n {
            return out;
        }
        assert!(
            Instant::now() < until,
            "only {} of {n} records in {topic}/{partition}: {}",
            out.len(),
            json!(out.iter().rev().take(3).collect::<Vec<_>>())
        );
        if s != 200 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Waits until the source has confirmed everything Postgres has written so far, then
/// returns every record of partition 0 of `topic`.
pub async fn caught_up_records(
    ferry: &str,
    source: &str,
    db: &tokio_postgres::Client,
    topic: &str,
) -> Vec<Value> {
    let end: String = db
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    let end = ferry_source_pg::envelope::parse_lsn(&end).unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let d = describe(ferry, source).await;
        let pos = d["status"]["position"]
            .as_str()
            .and_then(ferry_source_pg::envelope::parse_lsn)
            .unwrap_or(0);
        if pos >= end {
            let total = d["status"]["records"].as_u64().unwrap() as usize;
            return wait_records(ferry, topic, 0, total, Duration::from_secs(30)).await;
        }
        assert!(Instant::now() < until, "never caught up: {d}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A table rebuilt by a consumer applying the records in order (`r`, `c`, `u` set a
/// row, `d` removes it), by the column `id`; and how many times each id was read (`r`).
pub fn rebuild(records: &[Value]) -> (BTreeMap<i64, Value>, BTreeMap<i64, u32>) {
    let mut rows = BTreeMap::new();
    let mut reads: BTreeMap<i64, u32> = BTreeMap::new();
    for r in records {
        let v = &r["value"];
        match v["op"].as_str() {
            Some(op @ ("r" | "c" | "u")) => {
                let id = v["after"]["id"].as_i64().unwrap();
                rows.insert(id, v["after"].clone());
                if op == "r" {
                    *reads.entry(id).or_default() += 1;
                }
            }
            Some("d") => {
                rows.remove(&v["before"]["id"].as_i64().unwrap());
            }
            op => panic!("op {op:?} in {r}"),
        }
    }
    (rows, reads)
}

/// A table's rows as JSON objects by `id` (its columns must map to JSON as Ferry writes
/// them, as integers and text do).
pub async fn table_rows(db: &tokio_postgres::Client, table: &str) -> BTreeMap<i64, Value> {
    db.query(&format!("SELECT to_jsonb(t)::text FROM {table} t"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let v: Value = serde_json::from_str(r.get::<_, &str>(0)).unwrap();
            (v["id"].as_i64().unwrap(), v)
        })
        .collect()
}

/// A writer committing `statements(i)` for i = 1, 2, ... on a connection of its own,
/// until stopped.
pub struct Writer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<u32>,
}

impl Writer {
    pub fn start(url: &str, statements: impl Fn(u32) -> String + Send + 'static) -> Writer {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (url, stopping) = (url.to_string(), stop.clone());
        let task = tokio::spawn(async move {
            let c = connect(&url).await;
            let mut i = 0u32;
            while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                c.batch_execute(&statements(i)).await.unwrap();
            }
            i
        });
        Writer { stop, task }
    }

    /// Stops it and says how many times it wrote.
    pub async fn stop(self) -> u32 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.await.unwrap()
    }
}
