//! Exactly once from Postgres into the log, through failures: while a writer commits a
//! stream of row changes, Ferry is killed with kill -9 and restarted, its replication
//! connection is cut, and Postgres itself is restarted; and a network that goes silent
//! (a proxy that stops passing bytes without closing anything). Every committed change must be
//! in the topic once, in commit order. Its own test binary: restarting Postgres would
//! disturb the other source tests. `FERRY_SOURCE_CRASH_CHANGES` sets the stream's size
//! (20,000 by default; the long run uses 1,000,000).

mod common;
use common::pg::{self, create_source, fresh_db, wait_state};
use common::*;

use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Rows per transaction of the writer.
const ROWS_PER_TXN: u64 = 10;

fn restart_postgres(base: &str) {
    let port = base
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
        .expect("a port in the URL");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/postgres.sh");
    let status = std::process::Command::new(script)
        .arg("restart")
        .env("FERRY_PG_PORT", port)
        .status()
        .expect("run scripts/postgres.sh restart");
    assert!(status.success(), "restarting Postgres failed");
}

/// Commits `total` inserts in transactions of ROWS_PER_TXN, riding out a Postgres
/// restart (a transaction that failed is retried: its rows were not committed).
async fn writer(url: String, total: u64, committed: Arc<AtomicU64>) {
    let mut client = pg::connect(&url).await;
    let mut next = 1u64;
    while next <= total {
        let last = (next + ROWS_PER_TXN - 1).min(total);
        let sql = format!(
            "INSERT INTO events (seq, v) SELECT g, 'v' || g FROM generate_series({next}, {last}) g"
        );
        match client.batch_execute(&sql).await {
            Ok(()) => {
                committed.store(last, Ordering::SeqCst);
                next = last + 1;
            }
            Err(_) => {
                // The server went away: reconnect, and check whether the failed
                // transaction committed after all before writing it again.
                loop {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if let Ok((c, conn)) =
                        tokio_postgres::connect(&url, tokio_postgres::NoTls).await
                    {
                        tokio::spawn(conn);
                        client = c;
                        break;
                    }
                }
                let max: Option<i64> = client
                    .query_one("SELECT max(seq) FROM events", &[])
                    .await
                    .unwrap()
                    .get(0);
                let done = max.unwrap_or(0) as u64;
                committed.store(done, Ordering::SeqCst);
                next = done + 1;
            }
        }
    }
}

/// The tests here restart Postgres or cut connections: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_changes_arrive_exactly_once_through_kill_9_cuts_and_postgres_restarts() {
    let Some(base) = pg::base_url() else { return };
    let _one = ONE_AT_A_TIME.lock().await;
    let total: u64 = std::env::var("FERRY_SOURCE_CRASH_CHANGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let (url, db) = fresh_db(&base, "src_crash").await;
    db.batch_execute("CREATE TABLE events (seq bigint PRIMARY KEY, v text)")
        .await
        .unwrap();
    drop(db);
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);
    create_source(
        &server.url,
        json!({"name": "crash", "url": url, "snapshot": "never", "topic_partitions": 1,
               "tables": ["public.events"]}),
    )
    .await;
    wait_state(&server.url, "crash", "streaming", Duration::from_secs(30)).await;

    let committed = Arc::new(AtomicU64::new(0));
    let writing = tokio::spawn(writer(url.clone(), total, committed.clone()));
    let wait_committed = |n: u64| {
        let committed = committed.clone();
        async move {
            while committed.load(Ordering::SeqCst) < n {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };

    // kill -9 of Ferry twice, mid-stream, restarting it on the same folder.
    for k in [1, 2] {
        wait_committed(total * k / 6).await;
        server.kill9();
        tokio::time::sleep(Duration::from_millis(300)).await;
        server = Server::start(dir.path(), &[]);
    }
    // The network to Postgres cut: its end of the replication connection ends.
    wait_committed(total / 2).await;
    let admin = pg::connect(&url).await;
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        // The restarted Ferry may not have reconnected yet: cut once it has.
        let cut = admin
            .execute(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
                 WHERE slot_name = 'ferry_crash' AND active_pid IS NOT NULL",
                &[],
            )
            .await
            .unwrap();
        if cut == 1 {
            break;
        }
        assert!(Instant::now() < until, "no replication connection to cut");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(admin);
    // Postgres restarted mid-stream.
    wait_committed(total * 2 / 3).await;
    restart_postgres(&base);
    // Ferry killed once more near the end.
    wait_committed(total * 5 / 6).await;
    server.kill9();
    server = Server::start(dir.path(), &[]);
    writing.await.unwrap();

    // Every change once, in commit order.
    let until = Instant::now() + Duration::from_secs(120);
    let mut next_offset = 0u64;
    let mut expected = 1u64;
    while expected <= total {
        assert!(
            Instant::now() < until,
            "only {} of {total} changes arrived",
            expected - 1
        );
        let (s, v) = call(http().get(format!(
            "{}/v1/topics/crash.public.events/partitions/0/records?offset={next_offset}&max_records=1000&wait_ms=500",
            server.url
        )))
        .await;
        if s != 200 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        for r in v["records"].as_array().unwrap() {
            let seq = r["value"]["after"]["seq"].as_u64().unwrap();
            assert_eq!(
                seq, expected,
                "offset {}: change {seq} where {expected} was due (a gap or a double)",
                r["offset"]
            );
            assert_eq!(r["value"]["op"], "c");
            expected += 1;
        }
        next_offset = v["next_offset"].as_u64().unwrap();
    }
    // Nothing after the last one either.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (_, v) = call(http().get(format!(
        "{}/v1/topics/crash.public.events/partitions/0/records?offset={next_offset}",
        server.url
    )))
    .await;
    assert_eq!(v["records"].as_array().unwrap().len(), 0, "{v}");
    assert_eq!(next_offset, total);
    let d = pg::describe(&server.url, "crash").await;
    assert_eq!(d["status"]["state"], "streaming", "{d}");
}

/// A TCP proxy whose connections can be made silent: bytes are read and dropped, no
/// connection is closed (as when a network path dies without a reset).
struct Proxy {
    addr: std::net::SocketAddr,
    /// Connections numbered below this are silent.
    silent_below: Arc<AtomicU64>,
    next: Arc<AtomicU64>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let silent_below = Arc::new(AtomicU64::new(0));
        let next = Arc::new(AtomicU64::new(0));
        let (silent, counter) = (silent_below.clone(), next.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let id = counter.fetch_add(1, Ordering::SeqCst);
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, id, silent.clone()));
                tokio::spawn(pump(sr, cw, id, silent.clone()));
            }
        });
        Proxy {
            addr,
            silent_below,
            next,
        }
    }

    /// Every connection open now goes silent; new ones pass bytes.
    fn silence(&self) {
        self.silent_below
            .store(self.next.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    id: u64,
    silent_below: Arc<AtomicU64>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) if id < silent_below.load(Ordering::SeqCst) => {
                // Silent: the other side learns nothing, not even that this one closed.
                let _keep = to;
                std::future::pending::<()>().await;
                return;
            }
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if id < silent_below.load(Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_that_goes_silent_is_noticed_and_capture_goes_on_exactly_once() {
    let Some(base) = pg::base_url() else { return };
    let _one = ONE_AT_A_TIME.lock().await;
    let (url, db) = fresh_db(&base, "src_silent").await;
    db.batch_execute("CREATE TABLE events (seq bigint PRIMARY KEY, v text)")
        .await
        .unwrap();
    let upstream = url
        .split('@')
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap()
        .to_string();
    let proxy = Proxy::start(upstream.clone()).await;
    let through_proxy = url.replace(&upstream, &proxy.addr.to_string());
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    create_source(
        &server.url,
        json!({"name": "silent", "url": through_proxy, "snapshot": "never",
               "topic_partitions": 1}),
    )
    .await;
    wait_state(&server.url, "silent", "streaming", Duration::from_secs(30)).await;
    let insert = |from: u64, to: u64| {
        let db = &db;
        async move {
            db.batch_execute(&format!(
                "INSERT INTO events SELECT g, 'v' FROM generate_series({from}, {to}) g"
            ))
            .await
            .unwrap();
        }
    };
    insert(1, 100).await;
    pg::wait_records(
        &server.url,
        "silent.public.events",
        0,
        100,
        Duration::from_secs(30),
    )
    .await;

    proxy.silence();
    for k in 0..10 {
        insert(101 + k * 100, 200 + k * 100).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Noticed within three unanswered probes, reconnected once Postgres lets the slot
    // go (wal_sender_timeout), then everything after the last durable commit again.
    let recs = pg::wait_records(
        &server.url,
        "silent.public.events",
        0,
        1100,
        Duration::from_secs(90),
    )
    .await;
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r["value"]["after"]["seq"], i as u64 + 1, "offset {i}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, v) = call(http().get(format!(
        "{}/v1/topics/silent.public.events/partitions/0/records?offset=1100",
        server.url
    )))
    .await;
    assert_eq!(
        v["records"].as_array().unwrap().len(),
        0,
        "nothing twice: {v}"
    );
    assert!(
        server.logs().iter().any(|l| l.contains("has not answered")),
        "the silence was noticed by the probes"
    );
}
