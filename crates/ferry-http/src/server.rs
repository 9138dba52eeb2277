//! The HTTP listener: accepts connections and serves the router on each, within limits
//! that keep a client's behaviour from deciding Ferry's memory.
//!
//! # Limits
//!
//! - At most `max_connections` connections are served at once; more wait in the
//!   listen backlog until one ends (as on the Kafka listener).
//! - A request head (request line and headers) must arrive whole within
//!   `header_timeout`, counted from the connection's start or from the end of the
//!   previous answer; otherwise the connection is closed. This also ends idle
//!   keep-alive connections, and connections that send a head a byte at a time.
//! - A head larger than [`HEADER_BYTES_MAX`] or with more than [`HEADERS_MAX`] headers is
//!   answered 431 and the connection closed. Bodies are bounded by the router
//!   (`max_request_bytes`).
//!
//! Memory a connection holds before its request reaches a handler is thus at most about
//! [`HEADER_BYTES_MAX`] of buffered head, for at most `header_timeout`.
//!
//! # HTTP/2
//!
//! A connection that opens with HTTP/2's preface is served as HTTP/2 over cleartext
//! (h2c with prior knowledge, RFC 9113 §3.3), so that a client can keep many requests in
//! flight on one connection; any other is served as HTTP/1.1. The preface must arrive
//! within `header_timeout` like a head. On HTTP/2, a connection carries at most
//! [`H2_STREAMS_MAX`] requests at once, a header list is bounded by
//! [`HEADER_BYTES_MAX`], and flow control bounds the body bytes buffered per
//! connection (hyper's 1 MiB window).
//!
//! # TLS
//!
//! With a [`ServerLimits::tls`] acceptor, each connection's handshake runs in the task
//! that serves it, within `header_timeout`, so a slow or silent client never holds up
//! the accept loop. The protocol is then the one agreed by ALPN (`h2` or `http/1.1`;
//! HTTP/1.1 when the client offered neither) rather than guessed from the first bytes.
//! A verified client certificate's principal goes in [`Peer::cert_principal`].
//!
//! # Shutdown
//!
//! When `shutdown` resolves, the listener stops accepting; connections finish the
//! request they are serving and close; `serve` returns when all have.

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// Largest request head (request line and headers), in bytes.
pub const HEADER_BYTES_MAX: usize = 64 * 1024;
/// Most headers one request may carry (the HTTP library's own bound, kept).
pub const HEADERS_MAX: usize = 100;

/// Requests one HTTP/2 connection may have in flight at once.
pub const H2_STREAMS_MAX: u32 = 256;

/// What an HTTP/2 connection sends first (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Which protocol a new connection speaks, from its first bytes (peeked, not taken):
/// HTTP/2 if they are the preface, HTTP/1.1 otherwise; `None` if the connection closed
/// or said too little within `timeout`.
async fn speaks_h2(stream: &TcpStream, timeout: Duration) -> Option<bool> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = [0u8; H2_PREFACE.len()];
    loop {
        let n = tokio::time::timeout_at(deadline, stream.peek(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        if buf[..n] != H2_PREFACE[..n] {
            return Some(false);
        }
        if n == H2_PREFACE.len() {
            return Some(true);
        }
        // A prefix of the preface so far (or of "POST"): peek again once more arrives.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Who is at the other end of a request's connection: put in every request's
/// extensions by [`serve`], read by authentication and ACLs.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: std::net::SocketAddr,
    /// The principal a verified client certificate names (mutual TLS), if any.
    pub cert_principal: Option<ferry_auth::Principal>,
}

/// The listener's limits (see the module).
#[derive(Debug, Clone)]
pub struct ServerLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    /// Where open and accepted connections are counted, if anywhere.
    pub connections: Option<crate::metrics::HttpMetrics>,
    /// TLS on every connection, if set.
    pub tls: Option<ferry_auth::tls::TlsAcceptor>,
    /// Put each request's [`Peer`] in its extensions, for authentication and ACLs by
    /// host. Off (authentication off, no TLS) saves an allocation per request.
    pub identify_peers: bool,
}

/// Counts a connection as open while it lives.
struct OpenConnection(Option<crate::metrics::HttpMetrics>);

impl OpenConnection {
    fn new(metrics: &Option<crate::metrics::HttpMetrics>) -> Self {
        if let Some(m) = metrics {
            m.connections_accepted.inc();
            m.connections.inc();
        }
        OpenConnection(metrics.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        if let Some(m) = &self.0 {
            m.connections.dec();
        }
    }
}

/// `router` as hyper serves it on one connection, with `peer` (if any) in every request.
fn with_peer(
    router: Router,
    peer: Option<Peer>,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<axum::response::Response, std::convert::Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        if let Some(peer) = &peer {
            req.extensions_mut().insert(peer.clone());
        }
        // A router is always ready (axum's `poll_ready` returns at once), so calling it
        // without polling readiness is what `oneshot` would do.
        let mut router = router.clone();
        tower_service::Service::call(&mut router, req.map(axum::body::Body::new))
    })
}

/// Serves `router` on `listener` until `shutdown` resolves and every connection has
/// closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(HEADER_BYTES_MAX);
    let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_STREAMS_MAX)
        .max_header_list_size(HEADER_BYTES_MAX as u32);
    let (http1, http2) = (Arc::new(http1), Arc::new(http2));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&slots).acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = &mut shutdown => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "Could not accept an HTTP connection.");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (http1, http2) = (Arc::clone(&http1), Arc::clone(&http2));
        let watcher = graceful.watcher();
        let header_timeout = limits.header_timeout;
        let open = OpenConnection::new(&limits.connections);
        let router = router.clone();
        let tls = limits.tls.clone();
        let identify_peers = limits.identify_peers;
        tokio::spawn(async move {
            let _permit = permit;
            let _open = open;
            let ended = match tls {
                None => {
                    let service = with_peer(
                        router,
                        identify_peers.then_some(Peer {
                            addr: peer,
                            cert_principal: None,
                        }),
                    );
                    match speaks_h2(&stream, header_timeout).await {
                        None => return,
                        Some(true) => {
                            let conn = http2.serve_connection(TokioIo::new(stream), service);
                            watcher.watch(conn).await
                        }
                        Some(false) => {
                            let conn = http1.serve_connection(TokioIo::new(stream), service);
                            watcher.watch(conn).await
                        }
                    }
                }
                Some(tls) => {
                    let accepted = match tls.accept(stream, peer, header_timeout).await {
                        Ok(a) => a,
                        Err(e) => {
                            tracing::debug!(peer = %peer, error = %e, "TLS handshake failed on the HTTP listener.");
                            return;
                        }
                    };
                    let service = with_peer(
                        router,
                        Some(Peer {
                            addr: peer,
                            cert_principal: accepted.principal,
                        }),
                    );
                    let io = TokioIo::new(accepted.stream);
                    if accepted.alpn.as_deref() == Some(b"h2") {
                        watcher.watch(http2.serve_connection(io, service)).await
                    } else {
                        watcher.watch(http1.serve_connection(io, service)).await
                    }
                }
            };
            if let Err(e) = ended {
                tracing::debug!(peer = %peer, error = %e, "HTTP connection ended.");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
