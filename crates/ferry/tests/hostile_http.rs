//! Hostile HTTP clients against the real binary, while an ordinary client keeps
//! producing and reading: heads sent a byte at a time, connections that send nothing,
//! heads of a mebibyte, too many headers, a `Content-Length` of a terabyte, and more
//! connections than the server serves at once.
//!
//! The server closes what never completes a head within `--http-header-timeout-ms`,
//! answers 431 to an oversized head and 413 to an oversized body before reading it, its
//! memory stays within what its limits allow, and the ordinary client is served
//! throughout.

mod common;
use common::*;
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MAX_CONNECTIONS: usize = 200;
const HEADER_TIMEOUT: Duration = Duration::from_millis(1000);
/// How long after the header timeout a connection may take to be closed.
const SLACK: Duration = Duration::from_secs(3);
/// Each ordinary request is answered within this.
const ORDINARY_DEADLINE: Duration = Duration::from_secs(8);

/// Reads until the server closes the connection; returns what it sent, or `None` if it
/// was still open after `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

async fn connect(addr: &str) -> TcpStream {
    TcpStream::connect(addr).await.expect("connect")
}

/// The ordinary client: produces one record and reads it back, over and over.
async fn ordinary(url: String, stop: Arc<AtomicBool>, worst_ms: Arc<AtomicU64>) -> u64 {
    let client = http();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let (status, v) = tokio::time::timeout(
            ORDINARY_DEADLINE,
            call(
                client
                    .post(format!("{url}/v1/topics/t/records"))
                    .json(&json!({"records": [{"value": n}]})),
            ),
        )
        .await
        .unwrap_or_else(|_| panic!("ordinary produce {n} not answered in {ORDINARY_DEADLINE:?}"));
        assert_eq!(status, 200, "ordinary produce {n}: {v}");
        let offset = v["offsets"][0]["offset"].as_u64().unwrap();
        let (status, v) = tokio::time::timeout(
            ORDINARY_DEADLINE,
            call(client.get(format!(
                "{url}/v1/topics/t/partitions/0/records?offset={offset}&max_records=1"
            ))),
        )
        .await
        .unwrap_or_else(|_| panic!("ordinary read {n} not answered in {ORDINARY_DEADLINE:?}"));
        assert_eq!(status, 200, "ordinary read {n}: {v}");
        assert_eq!(v["records"][0]["value"], n, "{v}");
        worst_ms.fetch_max(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        n += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_idle_huge_and_too_many_http_connections_leave_ordinary_clients_served_within_bounded_memory(
) {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        dir.path(),
        &[
            "--http-max-connections",
            &MAX_CONNECTIONS.to_string(),
            "--http-header-timeout-ms",
            &HEADER_TIMEOUT.as_millis().to_string(),
        ],
    );
    create_topic(&s.url, json!({"name": "t", "partitions": 1})).await;
    let addr = s.url.trim_start_matches("http://").to_string();
    let idle_mib = s.rss_mib();
    let stop = Arc::new(AtomicBool::new(false));
    let worst_ms = Arc::new(AtomicU64::new(0));
    let client = tokio::spawn(ordinary(s.url.clone(), stop.clone(), worst_ms.clone()));
    let mut peak_mib = idle_mib;

    // Heads sent a byte at a time, and connections that send nothing: closed once the
    // header timeout has passed.
    let mut slow = Vec::new();
    for _ in 0..60 {
        let mut c = connect(&addr).await;
        c.write_all(b"POST /v1/topics/t/records HTTP/1.1\r\nHost: ferry\r\nX-Slow: ")
            .await
            .unwrap();
        slow.push(c);
    }
    let mut idle = Vec::new();
    for _ in 0..60 {
        idle.push(connect(&addr).await);
    }
    let opened = Instant::now();
    let drip = tokio::spawn(async move {
        let mut closed = 0;
        while !slow.is_empty() && opened.elapsed() < HEADER_TIMEOUT + SLACK {
            let mut open = Vec::new();
            for mut c in slow {
                match c.write_all(b"a").await {
                    Ok(()) => open.push(c),
                    Err(_) => closed += 1,
                }
            }
            slow = open;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // A closed connection may take one more write to notice.
        for mut c in slow {
            if c.write_all(b"a").await.is_err()
                || closed_within(&mut c, Duration::from_millis(200))
                    .await
                    .is_some()
            {
                closed += 1;
            }
        }
        closed
    });
    for (i, c) in idle.iter_mut().enumerate() {
        let left = (HEADER_TIMEOUT + SLACK).saturating_sub(opened.elapsed());
        assert!(
            closed_within(c, left).await.is_some(),
            "idle connection {i} still open {:?} after it was opened",
            opened.elapsed()
        );
    }
    assert_eq!(
        drip.await.unwrap(),
        60,
        "every slow head's connection is closed"
    );
    peak_mib = peak_mib.max(s.rss_mib());

    // Heads of a mebibyte, many at once: 431 and closed, without buffering them.
    let mut huge = Vec::new();
    for _ in 0..100 {
        huge.push(tokio::spawn({
            let addr = addr.clone();
            async move {
                let mut c = connect(&addr).await;
                let _ = c
                    .write_all(b"GET /v1/topics HTTP/1.1\r\nHost: ferry\r\nX-Huge: ")
                    .await;
                let chunk = vec![b'h'; 64 * 1024];
                for _ in 0..16 {
                    if c.write_all(&chunk).await.is_err() {
                        break;
                    }
                }
                closed_within(&mut c, Duration::from_secs(10)).await
            }
        }));
    }
    for h in huge {
        let answer = h
            .await
            .unwrap()
            .expect("an oversized head closes its connection");
        let text = String::from_utf8_lossy(&answer);
        assert!(
            answer.is_empty() || text.starts_with("HTTP/1.1 431"),
            "oversized head answered: {text}"
        );
    }
    peak_mib = peak_mib.max(s.rss_mib());

    // Too many headers.
    let mut c = connect(&addr).await;
    let mut head = String::from("GET /v1/topics HTTP/1.1\r\nHost: ferry\r\n");
    for i in 0..150 {
        head.push_str(&format!("X-H{i}: v\r\n"));
    }
    head.push_str("\r\n");
    c.write_all(head.as_bytes()).await.unwrap();
    let answer = closed_within(&mut c, Duration::from_secs(5))
        .await
        .expect("closed");
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 431"),
        "150 headers: {}",
        String::from_utf8_lossy(&answer)
    );

    // A body of a terabyte, announced: refused before it is read.
    let mut c = connect(&addr).await;
    c.write_all(
        b"POST /v1/topics/t/records HTTP/1.1\r\nHost: ferry\r\nContent-Type: application/json\r\nContent-Length: 1000000000000\r\n\r\n{\"records\":[",
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
        .await
        .expect("answered at once")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("request-too-large"), "{text}");

    // More connections than the server serves at once, all idle: a new client waits
    // until the header timeout frees their slots, then is served.
    let mut many = Vec::new();
    for _ in 0..MAX_CONNECTIONS + 50 {
        many.push(connect(&addr).await);
    }
    let started = Instant::now();
    let (status, v) = tokio::time::timeout(
        HEADER_TIMEOUT * 2 + SLACK,
        call(http().get(format!("{}/v1/topics", s.url))),
    )
    .await
    .expect("a new client is served once idle connections time out");
    assert_eq!(status, 200, "{v}");
    println!(
        "a new connection beyond the limit was served after {:?}",
        started.elapsed()
    );
    drop(many);
    peak_mib = peak_mib.max(s.rss_mib());

    stop.store(true, Ordering::Relaxed);
    let served = client.await.expect("the ordinary client");
    assert!(
        served > 10,
        "the ordinary client was served ({served} rounds)"
    );
    // Before a handler runs, a connection holds at most its head (64 KiB), buffered
    // twice while it is parsed; plus 64 MiB for everything else.
    let bound = idle_mib + (MAX_CONNECTIONS as f64) * 2.0 * 64.0 / 1024.0 + 64.0;
    println!(
        "hostile HTTP: ordinary client served {served} rounds, worst {} ms; RSS idle {idle_mib:.0} MiB, peak {peak_mib:.0} MiB, bound {bound:.0} MiB",
        worst_ms.load(Ordering::Relaxed)
    );
    assert!(peak_mib <= bound, "RSS peaked at {peak_mib:.0} MiB");
    let (status, _) = call(http().get(format!("{}/readyz", s.url))).await;
    assert_eq!(status, 200);
}
