//! The listener: accepts connections and serves each one's requests in order.
//!
//! # Memory
//!
//! A connection holds at most one request frame (`max_frame_bytes`) and one answer
//! (`fetch_bytes_max` plus one batch per partition for Fetch) at a time, because
//! requests on a connection are answered one after another, as Kafka clients expect.
//! `max_connections` bounds how many are served at once.
//!
//! # Shutdown
//!
//! The accept loop stops when the shutdown signal fires; open connections are dropped
//! with the runtime.

use crate::config::KafkaConfig;
use crate::frame::{self, FrameError};
use crate::handlers::{self, Ctx};
use bytes::BytesMut;
use ferry_broker::Broker;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Serves Kafka clients on `listener` until `shutdown` turns true.
pub async fn serve(listener: TcpListener, broker: Arc<Broker>, config: KafkaConfig, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(config.max_connections.max(1)));
    let ctx = Arc::new(Ctx::new(broker, config));
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
                tokio::spawn(async move {
                    let _permit = permit;
                    if let Err(e) = connection(stream, &ctx).await {
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

/// A connection with no request for this long is closed (Kafka's connections.max.idle.ms).
pub const IDLE_MS_MAX: u64 = 600_000;
/// Once a request has begun, the rest of it must arrive within this; answers likewise
/// must be taken by the client within this.
pub const TRANSFER_MS_MAX: u64 = 30_000;

async fn connection(stream: TcpStream, ctx: &Ctx) -> anyhow::Result<()> {
    use std::time::Duration;
    use tokio::time::timeout;
    let _ = stream.set_nodelay(true);
    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::with_capacity(64 * 1024, r);
    loop {
        let len = match timeout(Duration::from_millis(IDLE_MS_MAX), r.read_i32()).await {
            Ok(Ok(n)) => n,
            Ok(Err(_)) => return Ok(()),
            Err(_) => {
                tracing::debug!(peer = %peer, "Closing an idle Kafka connection.");
                return Ok(());
            }
        };
        if len < frame::FRAME_PREFIX_BYTES as i32 || len as usize > ctx.config.max_frame_bytes {
            tracing::warn!(peer = %peer, frame_bytes = len, limit = ctx.config.max_frame_bytes, "Closing a Kafka connection: frame size out of range.");
            return Ok(());
        }
        let mut buf = BytesMut::zeroed(len as usize);
        timeout(Duration::from_millis(TRANSFER_MS_MAX), r.read_exact(&mut buf)).await??;
        let request = match frame::decode_request(buf.freeze()) {
            Ok(req) => req,
            Err(FrameError::UnsupportedApiVersions { correlation_id }) => {
                timeout(Duration::from_millis(TRANSFER_MS_MAX), w.write_all(&frame::unsupported_api_versions(correlation_id)?)).await??;
                continue;
            }
            Err(e) => {
                tracing::warn!(peer = %peer, error = %e, "Closing a Kafka connection: the request cannot be answered.");
                return Ok(());
            }
        };
        let (key, version, correlation_id) = (request.api_key, request.version, request.correlation_id);
        if let Some(answer) = handlers::handle(ctx, request, &peer).await {
            let bytes = frame::encode_response(key, version, correlation_id, &answer)?;
            timeout(Duration::from_millis(TRANSFER_MS_MAX), w.write_all(&bytes)).await??;
        }
    }
}
