//! The listener: accepts connections and serves each one's requests in order.
//!
//! # Memory
//!
//! A connection reads one request at a time and holds at most
//! `IN_FLIGHT_PER_CONNECTION_MAX` answers waiting to be sent (produce answers waiting for
//! their sync are small; a Fetch answer is at most `fetch_bytes_max` plus one batch per
//! partition). Answers leave in request order, as Kafka clients expect.
//! `max_connections` bounds how many connections are served at once.
//!
//! # TLS
//!
//! With a TLS acceptor, each connection's handshake runs in the task that serves it,
//! within [`TLS_HANDSHAKE_MS_MAX`], never in the accept loop. A verified client
//! certificate's principal becomes the session's principal; SASL may still follow.
//!
//! # Shutdown
//!
//! The accept loop stops when the shutdown signal fires; open connections are dropped
//! with the runtime.

use crate::config::KafkaConfig;
use crate::frame::{self, FrameError};
use crate::handlers::{self, Ctx, Reply, Session};
use bytes::{Bytes, BytesMut};
use ferry_broker::Broker;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// Largest frame read from a client that has not authenticated (authentication on): SASL
/// messages and ApiVersions are far smaller, so a stranger cannot make a connection hold
/// `--kafka-max-request-bytes` of buffer.
pub const UNAUTHENTICATED_FRAME_BYTES_MAX: usize = 512 * 1024;

/// A TLS handshake must finish within this, in ms, or the connection is closed.
pub const TLS_HANDSHAKE_MS_MAX: u64 = 10_000;

/// Serves Kafka clients on `listener` (over TLS when `tls` is given) until `shutdown`
/// turns true.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    config: KafkaConfig,
    metrics: crate::KafkaMetrics,
    auth: Arc<ferry_auth::Auth>,
    tls: Option<ferry_auth::tls::TlsAcceptor>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(config.max_connections.max(1)));
    let mut ctx = Ctx::new(broker, config);
    ctx.metrics = metrics;
    ctx.auth = auth;
    let ctx = Arc::new(ctx);
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&slots).acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let ctx = Arc::clone(&ctx);
                ctx.metrics.connections_accepted.inc();
                // Made before the task, so that a task dropped before it runs (at
                // shutdown) still counts the connection as closed.
                let open = OpenConnection::new(ctx.metrics.connections.clone());
                let tls = tls.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    let _open = open;
                    let _ = stream.set_nodelay(true);
                    let mut session = Session::new(peer, &ctx.auth);
                    let ended = match tls {
                        None => {
                            // Owned halves of a TCP stream need no lock between them.
                            let (r, w) = stream.into_split();
                            connection(r, w, session, &ctx).await
                        }
                        Some(tls) => {
                            let timeout = std::time::Duration::from_millis(TLS_HANDSHAKE_MS_MAX);
                            match tls.accept(stream, peer, timeout).await {
                                Ok(accepted) => {
                                    if let Some(p) = accepted.principal {
                                        session.principal = Some(p);
                                    }
                                    // A TLS stream's reads and writes share its
                                    // session state: its halves take turns.
                                    let (r, w) = tokio::io::split(accepted.stream);
                                    connection(r, w, session, &ctx).await
                                }
                                Err(e) => {
                                    tracing::debug!(peer = %peer, error = %e, "TLS handshake failed on the Kafka listener.");
                                    return;
                                }
                            }
                        }
                    };
                    if let Err(e) = ended {
                        tracing::debug!(peer = %peer, error = %e, "Kafka connection ended.");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "Could not accept a Kafka connection.");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Counts a connection as open while it lives.
struct OpenConnection(prometheus_client::metrics::gauge::Gauge);

impl OpenConnection {
    fn new(gauge: prometheus_client::metrics::gauge::Gauge) -> Self {
        gauge.inc();
        OpenConnection(gauge)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A connection with no request for this long is closed (Kafka's connections.max.idle.ms).
pub const IDLE_MS_MAX: u64 = 600_000;
/// Once a request has begun, the rest of it must arrive within this; answers likewise
/// must be taken by the client within this.
pub const TRANSFER_MS_MAX: u64 = 30_000;

/// Requests of one connection whose answers may be pending at once (Kafka clients send
/// up to 5 by default).
pub const IN_FLIGHT_PER_CONNECTION_MAX: usize = 8;

/// An answer on its way to the writer, in request order.
enum Outgoing {
    Ready(Bytes),
    Pending(tokio::task::JoinHandle<anyhow::Result<Option<Bytes>>>),
}

/// Serves one connection's requests, over TCP or TLS, from its read and write halves.
async fn connection<R, W>(r: R, w: W, mut session: Session, ctx: &Ctx) -> anyhow::Result<()>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let peer = session.peer.clone();
    let mut r = BufReader::with_capacity(64 * 1024, r);
    let (tx, rx) = tokio::sync::mpsc::channel::<Outgoing>(IN_FLIGHT_PER_CONNECTION_MAX);
    let writer = tokio::spawn(write_answers(w, rx));
    let read = async {
        loop {
            let raw = session.sasl.raw_tokens();
            // A client that has yet to authenticate may send SASL messages and
            // ApiVersions only: small frames (as Kafka's sasl.server.max.receive.size).
            let limit = if session.principal.is_some() {
                ctx.config.max_frame_bytes
            } else {
                ctx.config
                    .max_frame_bytes
                    .min(UNAUTHENTICATED_FRAME_BYTES_MAX)
            };
            let Some(buf) = read_frame(&mut r, limit, &peer, raw).await? else {
                break;
            };
            if raw {
                // After SaslHandshake v0: a SASL message without a Kafka header.
                match handlers::sasl::raw_token(ctx, buf, &mut session).await {
                    Some(answer) => {
                        if tx.send(Outgoing::Ready(answer)).await.is_err() {
                            return Ok(());
                        }
                        continue;
                    }
                    None => return Ok(()),
                }
            }
            let request = match frame::decode_request(buf) {
                Ok(req) => req,
                Err(FrameError::UnsupportedApiVersions { correlation_id }) => {
                    let answer = frame::unsupported_api_versions(correlation_id)?;
                    if tx.send(Outgoing::Ready(answer)).await.is_err() {
                        return Ok(());
                    }
                    continue;
                }
                Err(e) => {
                    tracing::warn!(peer = %peer, error = %e, "Closing a Kafka connection: the request cannot be answered.");
                    return Ok(());
                }
            };
            let (out, close) = answer(ctx, request, &mut session).await?;
            if let Some(out) = out {
                if tx.send(out).await.is_err() {
                    return Ok(());
                }
            }
            if close {
                return Ok(());
            }
        }
        Ok(())
    };
    let read_result: anyhow::Result<()> = read.await;
    // Let the writer finish what was asked before the connection ended.
    drop(tx);
    let write_result = writer
        .await
        .unwrap_or_else(|e| Err(anyhow::anyhow!("writer failed: {e}")));
    read_result.and(write_result)
}

/// Sends answers in request order, waiting for each pending one in turn.
async fn write_answers<W: tokio::io::AsyncWrite + Unpin>(
    mut w: W,
    mut rx: tokio::sync::mpsc::Receiver<Outgoing>,
) -> anyhow::Result<()> {
    use std::time::Duration;
    while let Some(out) = rx.recv().await {
        let bytes = match out {
            Outgoing::Ready(b) => Some(b),
            Outgoing::Pending(h) => h.await??,
        };
        if let Some(b) = bytes {
            tokio::time::timeout(Duration::from_millis(TRANSFER_MS_MAX), w.write_all(&b)).await??;
        }
    }
    Ok(())
}

/// Reads one request frame: its size, checked against the limit, then its bytes.
/// `None` when the connection should close (ended, idle, or a size out of range).
/// `raw`: a raw SASL message, which may be shorter than a request header.
async fn read_frame<R: tokio::io::AsyncRead + Unpin>(
    r: &mut BufReader<R>,
    limit: usize,
    peer: &str,
    raw: bool,
) -> anyhow::Result<Option<bytes::Bytes>> {
    use std::time::Duration;
    use tokio::time::timeout;
    let len = match timeout(Duration::from_millis(IDLE_MS_MAX), r.read_i32()).await {
        Ok(Ok(n)) => n,
        Ok(Err(_)) => return Ok(None),
        Err(_) => {
            tracing::debug!(peer = %peer, "Closing an idle Kafka connection.");
            return Ok(None);
        }
    };
    let min = if raw {
        0
    } else {
        frame::FRAME_PREFIX_BYTES as i32
    };
    if len < min || len as usize > limit {
        tracing::warn!(peer = %peer, frame_bytes = len, limit, "Closing a Kafka connection: frame size out of range.");
        return Ok(None);
    }
    let mut buf = BytesMut::zeroed(len as usize);
    timeout(
        Duration::from_millis(TRANSFER_MS_MAX),
        r.read_exact(&mut buf),
    )
    .await??;
    Ok(Some(buf.freeze()))
}

/// Handles one request; its answer, now or later, or `None` when it has none (acks=0);
/// and whether the connection closes after it.
async fn answer(
    ctx: &Ctx,
    request: frame::Request,
    session: &mut Session,
) -> anyhow::Result<(Option<Outgoing>, bool)> {
    let (key, version, correlation_id) = (request.api_key, request.version, request.correlation_id);
    let started = std::time::Instant::now();
    let reply = handlers::handle(ctx, request, session).await;
    let close = matches!(reply, Reply::Close(_));
    let out = match reply {
        Reply::Now(None) | Reply::Close(None) => {
            ctx.metrics
                .answered(key, started.elapsed().as_secs_f64(), None);
            None
        }
        Reply::Now(Some(answer)) | Reply::Close(Some(answer)) => {
            ctx.metrics
                .answered(key, started.elapsed().as_secs_f64(), Some(&answer));
            Some(Outgoing::Ready(frame::encode_response(
                key,
                version,
                correlation_id,
                &answer,
            )?))
        }
        Reply::Later(pending) => {
            let metrics = ctx.metrics.clone();
            Some(Outgoing::Pending(tokio::spawn(async move {
                let answer = pending.await;
                metrics.answered(key, started.elapsed().as_secs_f64(), answer.as_ref());
                match answer {
                    Some(answer) => {
                        frame::encode_response(key, version, correlation_id, &answer).map(Some)
                    }
                    None => Ok(None),
                }
            })))
        }
    };
    Ok((out, close))
}
