//! The cost of authenticating a Kafka connection: connections per second that open,
//! authenticate with SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) and close, against
//! connections that open, ask for API versions and close, on one `ferry serve --auth`
//! in one run; and the server's CPU time per connection, read from /proc.
//!
//! The client here speaks the protocol itself (kafka-protocol and Ferry's own SCRAM
//! client): librdkafka's SCRAM needs OpenSSL, which Ferry keeps out of its tree.

use crate::server::Server;
use crate::Ctx;
use bytes::{Bytes, BytesMut};
use ferry_auth::scram::{ClientExchange, Mechanism};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, RequestHeader, ResponseHeader, SaslAuthenticateRequest,
    SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const USER: &str = "bench";
const PASSWORD: &str = "bench-password";

#[derive(Clone, Copy, Debug)]
enum How {
    ApiVersions,
    Plain,
    Scram(Mechanism),
}

impl How {
    fn name(self) -> &'static str {
        match self {
            How::ApiVersions => "no authentication (ApiVersions)",
            How::Plain => "SASL PLAIN",
            How::Scram(m) => m.name(),
        }
    }
}

fn frame<T: Encodable>(key: ApiKey, version: i16, id: i32, body: &T) -> anyhow::Result<Vec<u8>> {
    let mut out = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(id)
        .with_client_id(Some(StrBytes::from_static_str("ferry-bench")))
        .encode(&mut out, key.request_header_version(version))?;
    body.encode(&mut out, version)?;
    let mut framed = (out.len() as i32).to_be_bytes().to_vec();
    framed.extend_from_slice(&out);
    Ok(framed)
}

async fn round_trip<T: Encodable, R: Decodable>(
    conn: &mut TcpStream,
    key: ApiKey,
    version: i16,
    body: &T,
) -> anyhow::Result<R> {
    conn.write_all(&frame(key, version, 1, body)?).await?;
    let len = conn.read_i32().await?;
    anyhow::ensure!((4..=1 << 20).contains(&len), "answer of {len} bytes");
    let mut buf = vec![0u8; len as usize];
    conn.read_exact(&mut buf).await?;
    let mut bytes = Bytes::from(buf);
    ResponseHeader::decode(&mut bytes, key.response_header_version(version))?;
    R::decode(&mut bytes, version)
}

async fn authenticate(conn: &mut TcpStream, m: &str, token: Vec<u8>) -> anyhow::Result<Vec<u8>> {
    let r: SaslAuthenticateResponse = round_trip(
        conn,
        ApiKey::SaslAuthenticate,
        2,
        &SaslAuthenticateRequest::default().with_auth_bytes(token.into()),
    )
    .await?;
    anyhow::ensure!(
        r.error_code == 0,
        "{m}: error {} {:?}",
        r.error_code,
        r.error_message
    );
    Ok(r.auth_bytes.to_vec())
}

/// One connection: open, do `how`, close.
async fn once(addr: &str, how: How) -> anyhow::Result<()> {
    let mut conn = TcpStream::connect(addr).await?;
    conn.set_nodelay(true)?;
    let mechanism = match how {
        How::ApiVersions => {
            let _: kafka_protocol::messages::ApiVersionsResponse = round_trip(
                &mut conn,
                ApiKey::ApiVersions,
                3,
                &ApiVersionsRequest::default(),
            )
            .await?;
            return Ok(());
        }
        How::Plain => "PLAIN",
        How::Scram(m) => m.name(),
    };
    let h: SaslHandshakeResponse = round_trip(
        &mut conn,
        ApiKey::SaslHandshake,
        1,
        &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism)),
    )
    .await?;
    anyhow::ensure!(h.error_code == 0, "handshake: error {}", h.error_code);
    match how {
        How::Plain => {
            authenticate(
                &mut conn,
                mechanism,
                format!("\0{USER}\0{PASSWORD}").into_bytes(),
            )
            .await?;
        }
        How::Scram(m) => {
            let (client, first) = ClientExchange::start(m, USER, PASSWORD);
            let server_first = authenticate(&mut conn, mechanism, first).await?;
            let (fin, expected) = client
                .answer(&server_first)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let server_final = authenticate(&mut conn, mechanism, fin).await?;
            anyhow::ensure!(server_final == expected, "the server's signature is wrong");
        }
        How::ApiVersions => unreachable!("answered above"),
    }
    Ok(())
}

/// CPU seconds (user + system) `pid` has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis; utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf reads a constant of the system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz.max(1.0)
}

pub struct Row {
    pub how: &'static str,
    pub per_second: f64,
    pub server_cpu_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

async fn measure(s: &Server, how: How, clients: usize, seconds: Duration) -> anyhow::Result<Row> {
    let pid = s.child.id();
    let cpu0 = cpu_seconds(pid);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let addr = s.kafka_addr.clone();
        tasks.push(tokio::spawn(async move {
            let mut h = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
            while started.elapsed() < seconds {
                let t = Instant::now();
                once(&addr, how).await?;
                let _ = h.record(t.elapsed().as_micros() as u64);
            }
            anyhow::Ok(h)
        }));
    }
    let mut all = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
    for t in tasks {
        all.add(t.await??)?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu0;
    let n = all.len().max(1) as f64;
    Ok(Row {
        how: how.name(),
        per_second: n / elapsed,
        server_cpu_ms: cpu * 1000.0 / n,
        p50_ms: all.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: all.value_at_quantile(0.99) as f64 / 1000.0,
    })
}

/// Every way of connecting, in turn, on one server.
pub async fn run(ctx: &Ctx, seconds: Duration, clients: usize) -> anyhow::Result<Vec<Row>> {
    let data = ctx.dir.join("auth");
    let made = std::process::Command::new(&ctx.ferry_bin)
        .args(["user", "create", USER, "--password", PASSWORD, "--data-dir"])
        .arg(&data)
        .output()?;
    anyhow::ensure!(
        made.status.success(),
        "ferry user create: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let s = Server::start_with(ctx, &data, &["--auth", "--super-users", "User:bench"]).await?;
    let mut rows = Vec::new();
    for how in [
        How::ApiVersions,
        How::Plain,
        How::Scram(Mechanism::Sha256),
        How::Scram(Mechanism::Sha512),
    ] {
        rows.push(measure(&s, how, clients, seconds).await?);
    }
    Ok(rows)
}

pub fn report(rows: &[Row], clients: usize) -> String {
    let mut out = format!(
        "### Kafka connections with authentication ({clients} clients, each opening, authenticating and closing in a loop)\n\n\
         | connection | per second | server CPU per connection, ms | p50 ms | p99 ms |\n|---|---:|---:|---:|---:|\n"
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {:.0} | {:.3} | {:.2} | {:.2} |\n",
            r.how, r.per_second, r.server_cpu_ms, r.p50_ms, r.p99_ms
        ));
    }
    out
}
