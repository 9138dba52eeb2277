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
//! # Shutdown
//!
//! When `shutdown` resolves, the listener stops accepting; connections finish the
//! request they are serving and close; `serve` returns when all have.

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Largest request head (request line and headers), in bytes.
pub const HEADER_BYTES_MAX: usize = 64 * 1024;
/// Most headers one request may carry (the HTTP library's own bound, kept).
pub const HEADERS_MAX: usize = 100;

/// The listener's limits (see the module).
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
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
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(HEADER_BYTES_MAX);
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
        let service = TowerToHyperService::new(router.clone());
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = conn.await {
                tracing::debug!(peer = %peer, error = %e, "HTTP connection ended.");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
