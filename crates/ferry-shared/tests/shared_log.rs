//! The shared log against a real PostgreSQL (`FERRY_TEST_POSTGRES_URL`, started by
//! scripts/test.sh) and a real S3-compatible server (`s3s-fs`, one per test, started
//! here on a free port over a temporary folder). Without them the tests are skipped,
//! except under CI, where they fail.

use bytes::Bytes;
use ferry_log::batch::{build_batch, BatchHeader, Batches, NewRecord};
use ferry_log::Compression;
use ferry_shared::{AppendBatch, Outcome, SharedConfig, SharedError, SharedLog};
use std::collections::HashSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BUCKET: &str = "ferry-test";

/// A fresh database on the test server, so that every test starts from an empty
/// schema (and the schema's migrations run from the start).
async fn fresh_database(base: &str) -> String {
    let (client, conn) = tokio_postgres::connect(base, tokio_postgres::NoTls)
        .await
        .expect("connect to FERRY_TEST_POSTGRES_URL");
    tokio::spawn(conn);
    let name = format!("ferry_shared_{:016x}", rand::random::<u64>());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let mut config: tokio_postgres::Config = base.parse().unwrap();
    config.dbname(&name);
    let host = match &config.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
        other => panic!("{other:?}"),
    };
    format!(
        "host={host} port={} user={} password={} dbname={name}",
        config.get_ports()[0],
        config.get_user().unwrap(),
        String::from_utf8_lossy(config.get_password().unwrap())
    )
}

fn postgres_url() -> Option<String> {
    match std::env::var("FERRY_TEST_POSTGRES_URL") {
        Ok(u) => Some(u),
        Err(_) if std::env::var_os("CI").is_some() => {
            panic!("FERRY_TEST_POSTGRES_URL is not set: scripts/test.sh starts a PostgreSQL with scripts/postgres.sh")
        }
        Err(_) => {
            eprintln!("skipped: set FERRY_TEST_POSTGRES_URL (see scripts/postgres.sh)");
            None
        }
    }
}

/// A real S3-compatible server on a free port, removed with its folder when dropped.
struct S3Server {
    child: Child,
    port: u16,
    root: tempfile::TempDir,
}

impl S3Server {
    fn start() -> Option<S3Server> {
        let bin = std::env::var("FERRY_TEST_S3FS_BIN").unwrap_or_else(|_| "s3s-fs".into());
        if Command::new(&bin).arg("--version").output().is_err() {
            if std::env::var_os("CI").is_some() {
                panic!("{bin} is missing: scripts/test.sh installs it (cargo install s3s-fs)");
            }
            eprintln!("skipped: {bin} is not installed (cargo install s3s-fs --version 0.14.1 --features binary --locked)");
            return None;
        }
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join(BUCKET)).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut s = S3Server {
            child: spawn_s3s(&bin, root.path(), port),
            port,
            root,
        };
        s.wait_ready();
        Some(s)
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "s3s-fs did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn restart(&mut self) {
        self.stop();
        let bin = std::env::var("FERRY_TEST_S3FS_BIN").unwrap_or_else(|_| "s3s-fs".into());
        self.child = spawn_s3s(&bin, self.root.path(), self.port);
        self.wait_ready();
    }

    fn objects(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![self.root.path().join(BUCKET)];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "batches") {
                    out.push(p);
                }
            }
        }
        out.sort();
        out
    }
}

fn spawn_s3s(bin: &str, root: &Path, port: u16) -> Child {
    Command::new(bin)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", "ferry", "--secret-key", "ferry-secret"])
        .arg(root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start s3s-fs")
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn config(pg: &str, s3: &S3Server) -> SharedConfig {
    let mut c = SharedConfig::new(pg, format!("s3://{BUCKET}/node-tests"));
    c.object_store_options = vec![
        (
            "aws_endpoint".into(),
            format!("http://127.0.0.1:{}", s3.port),
        ),
        ("aws_access_key_id".into(), "ferry".into()),
        ("aws_secret_access_key".into(), "ferry-secret".into()),
        ("aws_region".into(), "us-east-1".into()),
    ];
    c
}

fn topic() -> String {
    format!("test-{:016x}", rand::random::<u64>())
}

fn batch(values: &[&str]) -> Bytes {
    let records: Vec<NewRecord> = values
        .iter()
        .map(|v| NewRecord {
            timestamp: 1_700_000_000_000,
            value: Some(Bytes::copy_from_slice(v.as_bytes())),
            ..Default::default()
        })
        .collect();
    Bytes::from(build_batch(&records, Compression::None).unwrap())
}

/// A batch of an idempotent producer: its id, epoch and first sequence number set, and
/// its CRC computed again.
fn producer_batch(values: &[&str], id: i64, epoch: i16, first_seq: i32) -> Bytes {
    let mut b = batch(values).to_vec();
    b[43..51].copy_from_slice(&id.to_be_bytes());
    b[51..53].copy_from_slice(&epoch.to_be_bytes());
    b[53..57].copy_from_slice(&first_seq.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(b)
}

fn append(topic: &str, partition: u32, b: Bytes) -> AppendBatch {
    AppendBatch {
        topic_id: topic.to_string(),
        partition,
        batch: b,
    }
}

/// Every record's (offset, value) from `offset` to the partition's end.
async fn read_all(
    log: &SharedLog,
    topic: &str,
    partition: u32,
    mut offset: u64,
) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    loop {
        let got = log.read(topic, partition, offset, 64 * 1024).await.unwrap();
        if got.batches.is_empty() {
            return out;
        }
        for b in Batches::new(got.batches) {
            let b = b.unwrap();
            let h = BatchHeader::parse(&b).unwrap();
            ferry_log::batch::verify_crc(&b).unwrap();
            let records = ferry_log::batch::decode_records(&b, &Default::default()).unwrap();
            for r in records.1 {
                assert!(r.offset >= h.base_offset);
                if r.offset as u64 >= offset {
                    out.push((
                        r.offset as u64,
                        String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
                    ));
                }
            }
        }
        offset = got.next_offset;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_of_many_partitions_share_objects_and_read_back_in_order() {
    let Some(pg) = postgres_url() else { return };
    let pg = fresh_database(&pg).await;
    let Some(s3) = S3Server::start() else { return };
    let log = SharedLog::open(config(&pg, &s3)).await.unwrap();
    let t = topic();
    log.create_partitions(&t, 3).await.unwrap();
    // Concurrent appends to three partitions: gathered into few objects.
    let mut tasks = Vec::new();
    for i in 0..30u32 {
        let log = log.clone();
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let v = format!("r{i}");
            log.append(vec![append(&t, i % 3, batch(&[&v, &v]))])
                .await
                .unwrap()
        }));
    }
    let mut offsets: Vec<Vec<u64>> = vec![Vec::new(); 3];
    for (i, task) in tasks.into_iter().enumerate() {
        match task.await.unwrap()[..] {
            [Outcome::Appended { base_offset }] => offsets[i % 3].push(base_offset),
            ref other => panic!("{other:?}"),
        }
    }
    for (p, offs) in offsets.iter_mut().enumerate() {
        offs.sort();
        assert_eq!(
            *offs,
            (0..10).map(|i| i * 2).collect::<Vec<u64>>(),
            "partition {p}"
        );
        assert_eq!(log.bounds(&t, p as u32).await.unwrap(), (0, 20));
        let read = read_all(&log, &t, p as u32, 0).await;
        assert_eq!(read.len(), 20);
        assert!(read.iter().enumerate().all(|(i, (o, _))| *o == i as u64));
        // A read from the middle of a batch starts with that batch.
        let got = log.read(&t, p as u32, 5, 1).await.unwrap();
        assert_eq!(BatchHeader::parse(&got.batches).unwrap().base_offset, 4);
        assert_eq!(
            got.next_offset, 6,
            "one batch past max_bytes: the first, whole"
        );
    }
    assert!(
        s3.objects().len() < 30,
        "{} objects for 30 appends",
        s3.objects().len()
    );
    // A second node (no cache) reads the same from the store.
    let other = SharedLog::open(config(&pg, &s3)).await.unwrap();
    assert_eq!(
        read_all(&other, &t, 1, 0).await,
        read_all(&log, &t, 1, 0).await
    );
    // Out of range and unknown partitions are errors, not empty answers.
    assert!(matches!(
        other.read(&t, 0, 21, 100).await,
        Err(SharedError::OffsetOutOfRange { .. })
    ));
    assert!(matches!(
        other.read(&t, 7, 0, 100).await,
        Err(SharedError::UnknownPartition { .. })
    ));
    assert_eq!(other.read(&t, 0, 20, 100).await.unwrap().batches.len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_appending_to_one_partition_get_dense_offsets() {
    let Some(pg) = postgres_url() else { return };
    let pg = fresh_database(&pg).await;
    let Some(s3) = S3Server::start() else { return };
    let a = SharedLog::open(config(&pg, &s3)).await.unwrap();
    let b = SharedLog::open(config(&pg, &s3)).await.unwrap();
    let t = topic();
    a.create_partitions(&t, 1).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..200u32 {
        let node = if i % 2 == 0 { a.clone() } else { b.clone() };
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let v = format!("v{i}");
            let records = (i % 3 + 1) as usize;
            let values: Vec<&str> = std::iter::repeat_n(v.as_str(), records).collect();
            (
                i,
                records,
                node.append(vec![append(&t, 0, batch(&values))])
                    .await
                    .unwrap(),
            )
        }));
    }
    let mut ranges = Vec::new();
    let mut total = 0u64;
    for task in tasks {
        let (i, n, out) = task.await.unwrap();
        let Outcome::Appended { base_offset } = out[0] else {
            panic!("{out:?}")
        };
        ranges.push((base_offset, n as u64, i));
        total += n as u64;
    }
    ranges.sort();
    let mut next = 0;
    for (base, n, _) in &ranges {
        assert_eq!(*base, next, "offsets are dense");
        next += n;
    }
    assert_eq!(a.bounds(&t, 0).await.unwrap(), (0, total));
    let read = read_all(&b, &t, 0, 0).await;
    assert_eq!(read.len() as u64, total);
    // Each append's records sit at its offsets, once.
    for (base, n, i) in ranges {
        for o in base..base + n {
            assert_eq!(read[o as usize], (o, format!("v{i}")));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_producers_are_checked_across_nodes() {
    let Some(pg) = postgres_url() else { return };
    let pg = fresh_database(&pg).await;
    let Some(s3) = S3Server::start() else { return };
    let a = SharedLog::open(config(&pg, &s3)).await.unwrap();
    let b = SharedLog::open(config(&pg, &s3)).await.unwrap();
    let t = topic();
    a.create_partitions(&t, 1).await.unwrap();
    let id = rand::random::<u32>() as i64;
    let first = producer_batch(&["a", "b"], id, 0, 0);
    assert_eq!(
        a.append(vec![append(&t, 0, first.clone())]).await.unwrap(),
        [Outcome::Appended { base_offset: 0 }]
    );
    // The retry, through the other node: answered with the stored offset, not written.
    assert_eq!(
        b.append(vec![append(&t, 0, first)]).await.unwrap(),
        [Outcome::Duplicate { base_offset: 0 }]
    );
    assert_eq!(
        b.append(vec![append(&t, 0, producer_batch(&["c"], id, 0, 2))])
            .await
            .unwrap(),
        [Outcome::Appended { base_offset: 2 }]
    );
    // A gap in sequence numbers, and an older epoch, are refused.
    assert_eq!(
        a.append(vec![append(&t, 0, producer_batch(&["x"], id, 0, 9))])
            .await
            .unwrap(),
        [Outcome::OutOfOrderSequence]
    );
    assert_eq!(
        a.append(vec![append(&t, 0, producer_batch(&["y"], id, 1, 0))])
            .await
            .unwrap(),
        [Outcome::Appended { base_offset: 3 }]
    );
    assert_eq!(
        b.append(vec![append(&t, 0, producer_batch(&["z"], id, 0, 3))])
            .await
            .unwrap(),
        [Outcome::StaleEpoch]
    );
    let values: Vec<String> = read_all(&a, &t, 0, 0)
        .await
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(values, ["a", "b", "c", "y"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_batch_refuses_the_call_and_writes_nothing() {
    let Some(pg) = postgres_url() else { return };
    let pg = fresh_database(&pg).await;
    let Some(s3) = S3Server::start() else { return };
    let log = SharedLog::open(config(&pg, &s3)).await.unwrap();
    let t = topic();
    log.create_partitions(&t, 1).await.unwrap();
    let mut bad = batch(&["a"]).to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    let truncated = batch(&["b"]).slice(0..40);
    for b in [Bytes::from(bad), truncated, Bytes::new()] {
        let err = log
            .append(vec![append(&t, 0, batch(&["ok"])), append(&t, 0, b)])
            .await
            .unwrap_err();
        assert!(matches!(err, SharedError::Invalid(_)), "{err}");
    }
    assert_eq!(log.bounds(&t, 0).await.unwrap(), (0, 0));
    assert!(s3.objects().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_waiting_on_one_node_is_woken_by_an_append_on_another() {
    let Some(pg) = postgres_url() else { return };
    let pg = fresh_database(&pg).await;
    let Some(s3) = S3Server::start() else { return };
    let a = SharedLog::open(config(&pg, &s3)).await.unwrap();
    let b = SharedLog::open(config(&pg, &s3)).await.unwrap();
    let t = topic();
    a.create_partitions(&t, 1).await.unwrap();
    let waiter = {
        let b = b.clone();
        let t = t.clone();
        tokio::spawn(async move { b.wait_for(&t, 0, 0, Duration::from_secs(30)).await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.append(vec![append(&t, 0, batch(&["x"]))]).await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next, 1);
    // Nothing new: the wait ends at its timeout with the same end.
    let started = Instant::now();
    assert_eq!(
        b.wait_for(&t, 0, 1, Duration::from_millis(300))
            .await
            .unwrap(),
        1
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unavailable_object_store_fails_appends_clearly_and_service_resumes() {
    let Some(pg) = postgres_url() else { return };
    let pg = fresh_database(&pg).await;
    let Some(mut s3) = S3Server::start() else {
        return;
    };
    let log = SharedLog::open(config(&pg, &s3)).await.unwrap();
    let t = topic();
    log.create_partitions(&t, 1).await.unwrap();
    log.append(vec![append(&t, 0, batch(&["before"]))])
        .await
        .unwrap();
    s3.stop();
    let err = log
        .append(vec![append(&t, 0, batch(&["lost"]))])
        .await
        .unwrap_err();
    assert!(matches!(err, SharedError::ObjectStore(_)), "{err}");
    assert!(err.to_string().contains("object store"), "{err}");
    assert_eq!(
        log.bounds(&t, 0).await.unwrap(),
        (0, 1),
        "nothing was committed"
    );
    s3.restart();
    assert_eq!(
        log.append(vec![append(&t, 0, batch(&["after"]))])
            .await
            .unwrap(),
        [Outcome::Appended { base_offset: 1 }]
    );
    let values: Vec<String> = read_all(&log, &t, 0, 0)
        .await
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(values, ["before", "after"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_object_is_an_error_not_data() {
    let Some(pg) = postgres_url() else { return };
    let pg = fresh_database(&pg).await;
    let Some(s3) = S3Server::start() else { return };
    let writer = SharedLog::open(config(&pg, &s3)).await.unwrap();
    let t = topic();
    writer.create_partitions(&t, 1).await.unwrap();
    writer
        .append(vec![append(&t, 0, batch(&["precious", "data"]))])
        .await
        .unwrap();
    let objects = s3.objects();
    assert_eq!(objects.len(), 1);
    let mut bytes = std::fs::read(&objects[0]).unwrap();
    let at = bytes.len() - 3;
    bytes[at] ^= 0x55;
    std::fs::write(&objects[0], &bytes).unwrap();
    // A node without the batch in its cache reads the object, and refuses it.
    let reader = SharedLog::open(config(&pg, &s3)).await.unwrap();
    let err = reader.read(&t, 0, 0, 1 << 20).await.unwrap_err();
    assert!(matches!(err, SharedError::Corrupt { .. }), "{err}");
    assert!(
        err.to_string().contains("CRC") || err.to_string().contains("crc"),
        "{err}"
    );
    // Cut short: the store answers fewer bytes than Postgres says.
    std::fs::write(&objects[0], &bytes[..bytes.len() / 2]).unwrap();
    let err = reader.read(&t, 0, 0, 1 << 20).await.unwrap_err();
    assert!(
        matches!(
            err,
            SharedError::Corrupt { .. } | SharedError::ObjectStore(_)
        ),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_no_batch_names_are_swept_and_named_ones_kept() {
    let Some(pg) = postgres_url() else { return };
    let pg = fresh_database(&pg).await;
    let Some(s3) = S3Server::start() else { return };
    let log = SharedLog::open(config(&pg, &s3)).await.unwrap();
    let t = topic();
    log.create_partitions(&t, 1).await.unwrap();
    log.append(vec![append(&t, 0, batch(&["kept"]))])
        .await
        .unwrap();
    // An append to a partition that does not exist writes its object, then commits
    // nothing: the object is named by no batch.
    assert_eq!(
        log.append(vec![append(&t, 9, batch(&["orphan"]))])
            .await
            .unwrap(),
        [Outcome::UnknownPartition]
    );
    assert_eq!(s3.objects().len(), 2);
    // Young objects are left alone (a commit may be on its way).
    assert_eq!(
        log.sweep_orphans(Duration::from_secs(3600)).await.unwrap(),
        0
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(log.sweep_orphans(Duration::from_secs(1)).await.unwrap(), 1);
    assert_eq!(s3.objects().len(), 1);
    let values: Vec<String> = read_all(&log, &t, 0, 0)
        .await
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(values, ["kept"]);
    let seen: HashSet<_> = s3.objects().into_iter().collect();
    assert_eq!(seen.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_past_its_deadline_is_refused_and_the_sweep_never_races_a_commit() {
    let Some(pg) = postgres_url() else { return };
    let pg = fresh_database(&pg).await;
    let Some(s3) = S3Server::start() else { return };
    let log = SharedLog::open(config(&pg, &s3)).await.unwrap();
    let t = topic();
    log.create_partitions(&t, 1).await.unwrap();
    let (client, conn) = tokio_postgres::connect(&pg, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    // A registration an hour old: its commit is refused, and nothing is appended.
    client
        .batch_execute(
            "INSERT INTO ferry_objects (object_key, created_at)
             VALUES ('late', now() - interval '1 hour'), ('pending', now())",
        )
        .await
        .unwrap();
    let commit = "SELECT * FROM ferry_commit_object($1, 60000, ARRAY[$2], ARRAY[0], ARRAY[0::bigint],
                  ARRAY[100], ARRAY[1], ARRAY[0::bigint], ARRAY[-1::bigint], ARRAY[-1::smallint], ARRAY[-1],
                  ARRAY[0::smallint])";
    let err = client.query(commit, &[&"late", &t]).await.unwrap_err();
    assert!(
        err.as_db_error()
            .is_some_and(|e| e.message().contains("deadline")),
        "{err:?}"
    );
    // Never registered: refused too.
    assert!(client.query(commit, &[&"unknown", &t]).await.is_err());
    assert_eq!(log.bounds(&t, 0).await.unwrap(), (0, 0));
    // Objects in the store under those names: the late one is swept (its row taken,
    // so no commit can name it any more); the pending one is kept.
    let data = s3.root.path().join(BUCKET).join("node-tests/data");
    std::fs::create_dir_all(&data).unwrap();
    for name in ["late", "pending"] {
        std::fs::write(data.join(format!("{name}.batches")), b"x").unwrap();
    }
    client
        .batch_execute(
            "UPDATE ferry_objects SET object_key = 'node-tests/data/' || object_key || '.batches'",
        )
        .await
        .unwrap();
    assert_eq!(log.sweep_orphans(Duration::ZERO).await.unwrap(), 1);
    let left: Vec<String> = s3
        .objects()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["pending.batches"]);
    let rows = client
        .query("SELECT object_key FROM ferry_objects", &[])
        .await
        .unwrap();
    assert_eq!(
        rows.len(),
        1,
        "the late registration was taken by the sweep"
    );
}

fn offset(topic: &str, partition: u32, offset: i64) -> ferry_shared::StoredOffset {
    ferry_shared::StoredOffset {
        topic: topic.into(),
        partition,
        offset,
        metadata: Some(format!("m{offset}")),
        leader_epoch: None,
    }
}

/// Ages a node's beat past the liveness window, as if it had died.
async fn age_beat(pg: &str, node: i32) {
    let (client, conn) = tokio_postgres::connect(pg, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .execute(
            "UPDATE ferry_nodes SET heartbeat_at = now() - interval '1 minute' WHERE node_id = $1",
            &[&node],
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_moves_only_from_a_dead_node_and_fences_its_writes() {
    use ferry_shared::{LeaseHolder, GROUP_LEASE};
    let Some(pg) = postgres_url() else { return };
    let pg = fresh_database(&pg).await;
    let Some(s3) = S3Server::start() else { return };
    let log = SharedLog::open(config(&pg, &s3)).await.unwrap();
    let a = log.join("a", 9092).await.unwrap();
    let b = log.join("b", 9093).await.unwrap();
    log.heartbeat(a).await.unwrap();
    log.heartbeat(b).await.unwrap();

    // The first taker holds it; a live holder keeps it.
    let LeaseHolder::Taken { epoch: first } = log
        .metadata()
        .take_lease(GROUP_LEASE, "g", a)
        .await
        .unwrap()
    else {
        panic!("a free lease is taken")
    };
    assert_eq!(
        log.metadata()
            .take_lease(GROUP_LEASE, "g", b)
            .await
            .unwrap(),
        LeaseHolder::Other { node_id: a }
    );
    assert_eq!(
        log.metadata()
            .take_lease(GROUP_LEASE, "g", a)
            .await
            .unwrap(),
        LeaseHolder::Taken { epoch: first },
        "taking a lease one holds keeps its epoch"
    );
    assert_eq!(
        log.metadata().lease_holder(GROUP_LEASE, "g").await.unwrap(),
        Some(a)
    );
    assert!(log
        .metadata()
        .commit_offsets(
            "g",
            a,
            first,
            &[offset("t", 0, 5), offset("t", 1, 7), offset("t", 0, 6)]
        )
        .await
        .unwrap());
    let stored = log.metadata().group_offsets("g").await.unwrap();
    assert_eq!(
        stored,
        vec![offset("t", 0, 6), offset("t", 1, 7)],
        "the last of a partition named twice"
    );

    // The holder dies: the lease moves, with a new epoch, and the old holder's writes
    // are refused from then on.
    age_beat(&pg, a).await;
    assert_eq!(
        log.metadata().lease_holder(GROUP_LEASE, "g").await.unwrap(),
        None
    );
    let LeaseHolder::Taken { epoch: second } = log
        .metadata()
        .take_lease(GROUP_LEASE, "g", b)
        .await
        .unwrap()
    else {
        panic!("a dead node's lease is taken")
    };
    assert!(second > first);
    assert!(!log
        .metadata()
        .commit_offsets("g", a, first, &[offset("t", 0, 99)])
        .await
        .unwrap());
    assert!(!log
        .metadata()
        .delete_offsets("g", a, first, None)
        .await
        .unwrap());
    assert_eq!(
        log.metadata().group_offsets("g").await.unwrap(),
        stored,
        "nothing of the fenced writes"
    );
    assert!(log
        .metadata()
        .commit_offsets("g", b, second, &[offset("t", 0, 8)])
        .await
        .unwrap());
    assert!(log
        .metadata()
        .delete_offsets("g", b, second, Some(&[("t".to_string(), 1)]))
        .await
        .unwrap());
    assert_eq!(
        log.metadata().group_offsets("g").await.unwrap(),
        vec![offset("t", 0, 8)]
    );
    let held = log.metadata().held_leases(b).await.unwrap();
    // Giving a lease up takes an epoch: an old one gives up nothing.
    log.metadata()
        .release_lease(GROUP_LEASE, "g", b, first)
        .await
        .unwrap();
    assert_eq!(
        log.metadata().lease_holder(GROUP_LEASE, "g").await.unwrap(),
        Some(b)
    );
    let LeaseHolder::Taken { epoch: spare } = log
        .metadata()
        .take_lease(GROUP_LEASE, "spare", b)
        .await
        .unwrap()
    else {
        panic!("a free lease is taken")
    };
    log.metadata()
        .release_lease(GROUP_LEASE, "spare", b, spare)
        .await
        .unwrap();
    assert_eq!(
        log.metadata()
            .lease_holder(GROUP_LEASE, "spare")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        held.get(&(GROUP_LEASE.to_string(), "g".to_string())),
        Some(&second)
    );
    assert!(log.metadata().held_leases(a).await.unwrap().is_empty());

    // A node that is not live takes nothing; a node that left frees its leases at once.
    assert!(log
        .metadata()
        .take_lease(GROUP_LEASE, "h", a)
        .await
        .is_err());
    assert!(matches!(
        log.metadata()
            .take_lease(GROUP_LEASE, "idle", b)
            .await
            .unwrap(),
        LeaseHolder::Taken { .. }
    ));
    log.leave(b).await.unwrap();
    // Maintenance drops the leases nobody holds of groups without offsets ("idle"),
    // and keeps those of groups with offsets ("g").
    log.maintain(0, true).await.unwrap();
    assert_eq!(
        log.metadata().lease_holder(GROUP_LEASE, "g").await.unwrap(),
        None
    );
    let (client, conn) = tokio_postgres::connect(&pg, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let names: Vec<String> = client
        .query("SELECT name FROM ferry_leases ORDER BY name", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(names, vec!["g".to_string()]);
    log.heartbeat(a).await.unwrap();
    assert!(matches!(
        log.metadata().take_lease(GROUP_LEASE, "g", a).await.unwrap(),
        LeaseHolder::Taken { epoch } if epoch > second
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metadata_database_is_reached_over_verified_tls_when_the_url_asks() {
    let Some(pg) = postgres_url() else { return };
    let Ok(ca) = std::env::var("FERRY_TEST_POSTGRES_CA") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "FERRY_TEST_POSTGRES_CA is not set: scripts/test.sh sets it"
        );
        eprintln!("skipped: set FERRY_TEST_POSTGRES_CA (scripts/postgres.sh makes it)");
        return;
    };
    let plain = fresh_database(&pg).await;
    let Some(s3) = S3Server::start() else { return };
    // The test server's certificate names 127.0.0.1; its authority is in the file.
    let tls = format!("{plain} sslmode=verify-full sslrootcert={ca}");
    let log = SharedLog::open(config(&tls, &s3)).await.unwrap();
    let t = topic();
    log.create_partitions(&t, 1).await.unwrap();
    log.append(vec![append(&t, 0, batch(&["a", "b"]))])
        .await
        .unwrap();
    assert_eq!(read_all(&log, &t, 0, 0).await.len(), 2);
    // Postgres says Ferry's connections to this database are encrypted.
    let dbname = plain.rsplit("dbname=").next().unwrap().to_string();
    let (client, conn) = tokio_postgres::connect(&plain, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FROM pg_stat_activity a
               JOIN pg_stat_ssl s USING (pid)
              WHERE a.datname = $1 AND a.application_name = 'ferry'",
            &[&dbname],
        )
        .await
        .unwrap();
    let (encrypted, all): (i64, i64) = (row.get(0), row.get(1));
    assert!(
        all > 0 && encrypted == all,
        "{encrypted} of {all} connections use TLS"
    );
    // Without the authority, the server's certificate is not trusted: a clear refusal.
    let untrusted = format!("{plain} sslmode=verify-full");
    let err = match SharedLog::open(config(&untrusted, &s3)).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a certificate of an unknown authority was trusted"),
    };
    assert!(err.contains("metadata database"), "{err}");
}

/// Distinct objects the batches of `topic` live in, by partition.
async fn objects_of(pg: &str, topic: &str) -> Vec<(i32, i64)> {
    let (client, conn) = tokio_postgres::connect(pg, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .query(
            "SELECT partition, count(DISTINCT object_key) FROM ferry_batches
              WHERE topic_id = $1 GROUP BY partition ORDER BY partition",
            &[&topic],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_objects_are_merged_per_partition_and_reads_stay_the_same() {
    let Some(pg) = postgres_url() else { return };
    let pg = fresh_database(&pg).await;
    let Some(s3) = S3Server::start() else { return };
    let mut c = config(&pg, &s3);
    c.compact_after = Duration::from_millis(1);
    c.compacted_object_bytes = 3000;
    let log = SharedLog::open(c).await.unwrap();
    let t = topic();
    log.create_partitions(&t, 2).await.unwrap();
    // Each append writes one object holding a batch of both partitions.
    for i in 0..30 {
        let (a, b) = (format!("a{i}"), format!("b{i}"));
        log.append(vec![
            append(&t, 0, batch(&[a.as_str(), a.as_str()])),
            append(&t, 1, batch(&[b.as_str()])),
        ])
        .await
        .unwrap();
    }
    log.trim(&t, 0, 4).await.unwrap();
    let before = (
        read_all(&log, &t, 0, 4).await,
        read_all(&log, &t, 1, 0).await,
    );
    assert_eq!(objects_of(&pg, &t).await, vec![(0, 28), (1, 30)]);
    tokio::time::sleep(Duration::from_millis(20)).await;

    let mut passes = 0;
    let mut total = ferry_shared::compact::Compacted::default();
    loop {
        let done = log.compact_once().await.unwrap();
        if done.objects == 0 {
            break;
        }
        total.objects += done.objects;
        total.batches += done.batches;
        passes += 1;
        assert!(passes < 20, "compaction ends");
    }
    // 28 batches of partition 0 (two trimmed) and 30 of partition 1, into objects of
    // at most 3000 bytes each, of one partition.
    assert_eq!(total.batches, 58);
    let merged = objects_of(&pg, &t).await;
    assert!(merged.iter().all(|(_, n)| *n <= 4), "{merged:?}");
    assert_eq!(
        total.objects as i64,
        merged.iter().map(|(_, n)| n).sum::<i64>()
    );
    // The old objects are removed by the sweep; reads, on this node and on a node with
    // nothing cached, give the same records.
    assert!(log.sweep_orphans(Duration::ZERO).await.unwrap() >= 30);
    let fresh = SharedLog::open(config(&pg, &s3)).await.unwrap();
    for reader in [&log, &fresh] {
        let after = (
            read_all(reader, &t, 0, 4).await,
            read_all(reader, &t, 1, 0).await,
        );
        assert_eq!(after, before);
    }
    assert_eq!(log.compact_once().await.unwrap().objects, 0, "nothing left");
    // New appends after the merge read on from where the merged ones end.
    log.append(vec![append(&t, 1, batch(&["late"]))])
        .await
        .unwrap();
    let all = read_all(&fresh, &t, 1, 0).await;
    assert_eq!(all.len(), 31);
    assert_eq!(all[30], (30, "late".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_state_is_written_only_under_its_lease_and_read_back_whole() {
    use ferry_shared::{Lease, LeaseHolder, SharedError, SUBSCRIPTION_LEASE};
    let Some(pg) = postgres_url() else { return };
    let pg = fresh_database(&pg).await;
    let Some(s3) = S3Server::start() else { return };
    let log = SharedLog::open(config(&pg, &s3)).await.unwrap();
    let meta = log.metadata();
    let a = log.join("a", 9092).await.unwrap();
    let b = log.join("b", 9093).await.unwrap();
    log.heartbeat(a).await.unwrap();
    log.heartbeat(b).await.unwrap();

    assert!(meta
        .create_subscription("s", "t", r#"{"name": "s"}"#, b"snap-0")
        .await
        .unwrap());
    assert!(
        !meta
            .create_subscription("s", "t", r#"{"name": "s"}"#, b"other")
            .await
            .unwrap(),
        "a name is created once"
    );
    assert_eq!(
        meta.unserved_subscriptions(10).await.unwrap(),
        vec!["s".to_string()]
    );
    let LeaseHolder::Taken { epoch } = log
        .metadata()
        .take_lease(SUBSCRIPTION_LEASE, "s", a)
        .await
        .unwrap()
    else {
        panic!("a free lease is taken")
    };
    assert!(meta.unserved_subscriptions(10).await.unwrap().is_empty());
    let held = Lease { node_id: a, epoch };
    meta.append_subscription_journal("s", held, 0, &[b"e0".to_vec(), b"e1".to_vec()])
        .await
        .unwrap();
    meta.append_subscription_journal("s", held, 2, &[b"e2".to_vec()])
        .await
        .unwrap();
    meta.write_subscription_delays("s", held, &[(7, 2, b"d7".to_vec()), (9, 1, b"d9".to_vec())])
        .await
        .unwrap();
    meta.write_subscription_delays("s", held, &[(7, 1, b"d7b".to_vec())])
        .await
        .unwrap();
    let state = meta.subscription_state("s").await.unwrap();
    assert_eq!(state.snapshot.as_deref(), Some(&b"snap-0"[..]));
    assert_eq!(
        state.journal,
        vec![
            (0, b"e0".to_vec()),
            (1, b"e1".to_vec()),
            (2, b"e2".to_vec())
        ]
    );
    let buckets = meta.subscription_delay_buckets("s").await.unwrap();
    assert_eq!(
        buckets.into_iter().collect::<Vec<_>>(),
        vec![(7, 3), (9, 1)]
    );
    assert_eq!(
        meta.subscription_delays("s", 7).await.unwrap(),
        vec![b"d7".to_vec(), b"d7b".to_vec()],
        "a bucket's blocks in the order written"
    );

    // A checkpoint replaces the snapshot and drops what it covers.
    meta.checkpoint_subscription("s", held, b"snap-2", 2, 7)
        .await
        .unwrap();
    let state = meta.subscription_state("s").await.unwrap();
    assert_eq!(state.snapshot.as_deref(), Some(&b"snap-2"[..]));
    assert_eq!(state.journal, vec![(2, b"e2".to_vec())]);
    assert_eq!(
        meta.subscription_delay_buckets("s")
            .await
            .unwrap()
            .into_keys()
            .collect::<Vec<_>>(),
        vec![9]
    );

    // The owner dies; another node takes the lease, and the old owner's writes are
    // refused, each of them, with nothing written.
    age_beat(&pg, a).await;
    assert_eq!(
        meta.unserved_subscriptions(10).await.unwrap(),
        vec!["s".to_string()]
    );
    let LeaseHolder::Taken { epoch: next } = log
        .metadata()
        .take_lease(SUBSCRIPTION_LEASE, "s", b)
        .await
        .unwrap()
    else {
        panic!("a dead node's lease is taken")
    };
    let fenced = |r: ferry_shared::Result<()>| matches!(r, Err(SharedError::Fenced(_)));
    assert!(fenced(
        meta.append_subscription_journal("s", held, 3, &[b"late".to_vec()])
            .await
    ));
    assert!(fenced(
        meta.checkpoint_subscription("s", held, b"late", 3, 9).await
    ));
    assert!(fenced(
        meta.write_subscription_delays("s", held, &[(11, 1, b"late".to_vec())])
            .await
    ));
    assert!(fenced(meta.remove_subscription_delays("s", held, 9).await));
    let state = meta.subscription_state("s").await.unwrap();
    assert_eq!(state.snapshot.as_deref(), Some(&b"snap-2"[..]));
    assert_eq!(state.journal, vec![(2, b"e2".to_vec())]);
    let now = Lease {
        node_id: b,
        epoch: next,
    };
    meta.append_subscription_journal("s", now, 3, &[b"e3".to_vec()])
        .await
        .unwrap();

    // Settings change; deleting takes the state and the lease with it.
    assert!(meta
        .update_subscription("s", r#"{"name": "s", "x": 1}"#)
        .await
        .unwrap());
    assert_eq!(
        meta.subscription("s").await.unwrap().as_deref(),
        Some(r#"{"x": 1, "name": "s"}"#)
    );
    assert!(meta.delete_subscription("s").await.unwrap());
    assert!(!meta.delete_subscription("s").await.unwrap());
    assert!(meta.subscription("s").await.unwrap().is_none());
    let state = meta.subscription_state("s").await.unwrap();
    assert!(state.snapshot.is_none() && state.journal.is_empty());
    assert_eq!(
        log.metadata()
            .lease_holder(SUBSCRIPTION_LEASE, "s")
            .await
            .unwrap(),
        None
    );
}

/// A transactional batch of producer `id`: [`producer_batch`] with the transactional
/// attribute set.
fn txn_batch(values: &[&str], id: i64, epoch: i16, first_seq: i32) -> Bytes {
    let mut b = producer_batch(values, id, epoch, first_seq).to_vec();
    let attributes = i16::from_be_bytes([b[21], b[22]]) | 0x10;
    b[21..23].copy_from_slice(&attributes.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_are_admitted_while_ongoing_and_move_the_stable_offset() {
    use ferry_log::batch::build_control_batch;
    use ferry_shared::{Lease, LeaseHolder, Outcome, Staged, TxnRow, TRANSACTION_LEASE};
    let Some(pg) = postgres_url() else { return };
    let pg = fresh_database(&pg).await;
    let Some(s3) = S3Server::start() else { return };
    let log = SharedLog::open(config(&pg, &s3)).await.unwrap();
    let meta = log.metadata();
    let t = topic();
    log.create_partitions(&t, 2).await.unwrap();
    let node = log.join("a", 9092).await.unwrap();
    log.heartbeat(node).await.unwrap();
    let LeaseHolder::Taken { epoch } = meta
        .take_lease(TRANSACTION_LEASE, "tx", node)
        .await
        .unwrap()
    else {
        panic!("the lease is free")
    };
    let lease = Lease {
        node_id: node,
        epoch,
    };
    let pid = log.new_producer_id().await.unwrap();
    let save = |status: &'static str, parts: Vec<(String, u32)>, producer_epoch: i16| {
        let json = format!(r#"{{"status": "{status}", "offsets": {{"g": []}}}}"#);
        async move {
            let row = TxnRow {
                producer_id: pid,
                epoch: producer_epoch,
                status,
                state_json: &json,
            };
            meta.save_transaction("tx", lease, row, &parts).await
        }
    };
    let (log_ref, t_ref) = (&log, &t);
    let one = move |b: Bytes, p: u32| async move {
        log_ref.append(vec![append(t_ref, p, b)]).await.unwrap()[0]
    };
    let marker = |commit: bool, producer_epoch: i16| {
        Bytes::from(build_control_batch(pid, producer_epoch, commit, 0, 0))
    };

    // No transaction yet: refused; a plain batch goes in at 0.
    assert_eq!(
        one(txn_batch(&["x"], pid, 0, 0), 0).await,
        Outcome::TxnRefused
    );
    assert_eq!(
        one(batch(&["plain"]), 0).await,
        Outcome::Appended { base_offset: 0 }
    );
    // Ongoing with partition 0 only: partition 1 is refused.
    save("ongoing", vec![(t.clone(), 0)], 0).await.unwrap();
    assert_eq!(
        one(txn_batch(&["a", "b"], pid, 0, 0), 0).await,
        Outcome::Appended { base_offset: 1 }
    );
    assert_eq!(
        one(txn_batch(&["c"], pid, 0, 2), 1).await,
        Outcome::TxnRefused
    );
    assert_eq!(
        one(batch(&["after"]), 0).await,
        Outcome::Appended { base_offset: 3 }
    );
    let b = log.stable_bounds(&t, 0).await.unwrap();
    assert_eq!(
        (b.latest, b.stable),
        (4, 1),
        "the open transaction holds the stable offset"
    );
    assert_eq!(meta.open_transactions(&t, 0).await.unwrap(), vec![(pid, 1)]);
    assert_eq!(
        meta.producers(&t, 0).await.unwrap(),
        vec![(pid, 0, 1)],
        "the producer, its epoch and its last sequence number"
    );
    // Offsets are staged only for an added group, at the transaction's epoch.
    let staged = [offset("in", 0, 42)];
    assert_eq!(
        meta.stage_txn_offsets(pid, 0, "g", &staged).await.unwrap(),
        Staged::Staged
    );
    assert_eq!(
        meta.stage_txn_offsets(pid, 0, "other", &staged)
            .await
            .unwrap(),
        Staged::NotInTransaction
    );
    // Decided: no batch of the transaction follows, though its markers are not written.
    save("prepare_abort", vec![], 0).await.unwrap();
    assert_eq!(
        one(txn_batch(&["late"], pid, 0, 3), 0).await,
        Outcome::TxnRefused
    );
    assert_eq!(
        meta.stage_txn_offsets(pid, 0, "g", &staged).await.unwrap(),
        Staged::NotInTransaction
    );
    // The ABORT marker closes it: the range is recorded, and the stable offset is the end.
    assert_eq!(
        one(marker(false, 0), 0).await,
        Outcome::Appended { base_offset: 4 }
    );
    assert_eq!(
        one(marker(false, 0), 0).await,
        Outcome::NothingToMark,
        "a marker again is a no-op"
    );
    let b = log.stable_bounds(&t, 0).await.unwrap();
    assert_eq!((b.latest, b.stable), (5, 5));
    let aborted = meta.aborted_transactions(&t, 0, 0, 5).await.unwrap();
    assert_eq!(aborted.len(), 1);
    assert_eq!(
        (
            aborted[0].producer_id,
            aborted[0].first_offset,
            aborted[0].last_offset
        ),
        (pid, 1, 4)
    );
    assert!(meta
        .aborted_transactions(&t, 0, 5, 9)
        .await
        .unwrap()
        .is_empty());
    // Completing an abort drops its staged offsets: nothing reached the group.
    save("complete_abort", vec![], 0).await.unwrap();
    assert!(meta.group_offsets("g").await.unwrap().is_empty());

    // A newer epoch fences the old producer's batches and offsets.
    save("ongoing", vec![(t.clone(), 1)], 1).await.unwrap();
    assert_eq!(
        one(txn_batch(&["old"], pid, 0, 4), 1).await,
        Outcome::StaleEpoch
    );
    assert_eq!(
        meta.stage_txn_offsets(pid, 0, "g", &staged).await.unwrap(),
        Staged::Fenced
    );
    assert_eq!(
        one(txn_batch(&["new"], pid, 1, 0), 1).await,
        Outcome::Appended { base_offset: 0 }
    );
    // No end decided: a stray marker (a coordinator that lost the transaction, its
    // object committed late) closes nothing.
    assert_eq!(one(marker(true, 1), 1).await, Outcome::NothingToMark);
    assert_eq!(one(marker(false, 0), 1).await, Outcome::NothingToMark);
    assert_eq!(log.stable_bounds(&t, 1).await.unwrap().stable, 0);
    assert_eq!(
        meta.stage_txn_offsets(pid, 1, "g", &staged).await.unwrap(),
        Staged::Staged
    );
    save("prepare_commit", vec![], 1).await.unwrap();
    assert_eq!(
        one(marker(true, 1), 1).await,
        Outcome::Appended { base_offset: 1 }
    );
    let b = log.stable_bounds(&t, 1).await.unwrap();
    assert_eq!((b.latest, b.stable), (2, 2));
    assert!(meta
        .aborted_transactions(&t, 1, 0, 2)
        .await
        .unwrap()
        .is_empty());
    // Completing a commit commits its staged offsets to the group.
    save("complete_commit", vec![], 1).await.unwrap();
    let committed = meta.group_offsets("g").await.unwrap();
    assert_eq!(committed.len(), 1);
    assert_eq!(
        (committed[0].topic.as_str(), committed[0].offset),
        ("in", 42)
    );

    // Another node takes the lease once this one's beat is old: this one writes nothing.
    age_beat(&pg, node).await;
    let other = log.join("b", 9093).await.unwrap();
    log.heartbeat(other).await.unwrap();
    assert!(matches!(
        meta.take_lease(TRANSACTION_LEASE, "tx", other)
            .await
            .unwrap(),
        LeaseHolder::Taken { .. }
    ));
    assert!(matches!(
        save("ongoing", vec![], 2).await,
        Err(ferry_shared::SharedError::Fenced(_))
    ));
    // The state is whole, as last written.
    let stored = meta.transaction("tx").await.unwrap().unwrap();
    assert!(stored.contains("complete_commit"), "{stored}");
}
