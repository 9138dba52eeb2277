//! SASL authentication: SaslHandshake picks a mechanism, then SaslAuthenticate carries
//! its messages (PLAIN: one; SCRAM-SHA-256/512: two round trips, the server's final
//! message carrying its signature `v=`). After a SaslHandshake v0 the client sends its
//! SASL messages as raw length-prefixed frames, without Kafka headers, and gets raw
//! frames back ([`raw_token`]; the listener's read loop routes them here).
//!
//! # Failures
//!
//! A failed authentication is logged (user, mechanism, peer; never a password or a
//! proof), answered only after the per-host delay of `Auth::limiter`, with
//! SASL_AUTHENTICATION_FAILED (or a closed connection on the raw path), and the
//! connection is closed. Unknown users and wrong passwords get the same answer, after
//! the same work (see `ferry_auth::scram`). A request out of order (a second handshake,
//! SaslAuthenticate before a handshake or after success) gets ILLEGAL_SASL_STATE and the
//! connection closes; re-authentication is not offered (`session_lifetime_ms` is 0).
//!
//! # Without `--auth`
//!
//! Clients that insist on SASL still authenticate: the exchange is the same, and the
//! connection's principal becomes the user (ACLs are not enforced, so it changes only
//! what logs show).

use super::{Ctx, Reply, Session};
use bytes::{BufMut, Bytes, BytesMut};
use ferry_auth::scram::{Mechanism, ServerExchange};
use ferry_auth::{plain, Principal};
use kafka_protocol::messages::{
    ResponseKind, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use std::sync::Arc;

/// The mechanisms Ferry offers, as SaslHandshake lists them.
pub const MECHANISMS: [&str; 3] = ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    Plain,
    Scram(Mechanism),
}

impl SaslMechanism {
    pub fn from_name(name: &str) -> Option<Self> {
        if name == "PLAIN" {
            return Some(SaslMechanism::Plain);
        }
        Mechanism::from_name(name).map(SaslMechanism::Scram)
    }

    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::Scram(m) => m.name(),
        }
    }
}

/// Where a connection's SASL exchange stands.
#[derive(Debug, Default)]
pub enum SaslState {
    /// No handshake yet.
    #[default]
    Start,
    /// A mechanism was chosen; its first message is awaited. `raw`: SaslHandshake v0,
    /// so messages come as raw frames.
    Chosen { mechanism: SaslMechanism, raw: bool },
    /// SCRAM's server-first message was sent; the client's final message is awaited.
    ScramFirstSent {
        exchange: Box<ServerExchange>,
        mechanism: Mechanism,
        raw: bool,
    },
    /// Authenticated; nothing more is accepted.
    Done,
    /// Failed or refused; the connection is closing.
    Failed,
}

impl SaslState {
    /// Whether the next frame is a raw SASL message rather than a Kafka request.
    pub fn raw_tokens(&self) -> bool {
        matches!(
            self,
            SaslState::Chosen { raw: true, .. } | SaslState::ScramFirstSent { raw: true, .. }
        )
    }
}

/// What one client message led to.
enum Step {
    /// The exchange goes on: send this and wait for the client's next message.
    Continue(Vec<u8>),
    /// Authenticated: send this (SCRAM's server-final; empty for PLAIN).
    Done(Vec<u8>),
    /// Failed: the message for the client.
    Failed(String),
    /// A message where the exchange expects none.
    Illegal,
}

fn mechanism_list() -> Vec<StrBytes> {
    MECHANISMS
        .iter()
        .map(|m| StrBytes::from_static_str(m))
        .collect()
}

pub fn handshake(req: SaslHandshakeRequest, version: i16, session: &mut Session) -> Reply {
    let answer = SaslHandshakeResponse::default().with_mechanisms(mechanism_list());
    if !matches!(session.sasl, SaslState::Start) {
        tracing::debug!(peer = %session.peer, "Closing a Kafka connection: SaslHandshake after the exchange began.");
        session.sasl = SaslState::Failed;
        return Reply::Close(Some(ResponseKind::SaslHandshake(
            answer.with_error_code(ResponseError::IllegalSaslState.code()),
        )));
    }
    match SaslMechanism::from_name(&req.mechanism) {
        Some(mechanism) => {
            session.sasl = SaslState::Chosen {
                mechanism,
                raw: version == 0,
            };
            Reply::Now(Some(ResponseKind::SaslHandshake(answer)))
        }
        None => {
            tracing::info!(peer = %session.peer, mechanism = ?req.mechanism.as_str(), "A Kafka client asked for a SASL mechanism Ferry does not offer.");
            session.sasl = SaslState::Failed;
            Reply::Close(Some(ResponseKind::SaslHandshake(
                answer.with_error_code(ResponseError::UnsupportedSaslMechanism.code()),
            )))
        }
    }
}

pub async fn authenticate(ctx: &Ctx, req: SaslAuthenticateRequest, session: &mut Session) -> Reply {
    let answer = SaslAuthenticateResponse::default().with_session_lifetime_ms(0);
    match step(ctx, req.auth_bytes, session).await {
        Step::Continue(bytes) => Reply::Now(Some(ResponseKind::SaslAuthenticate(
            answer.with_auth_bytes(Bytes::from(bytes)),
        ))),
        Step::Done(bytes) => Reply::Now(Some(ResponseKind::SaslAuthenticate(
            answer.with_auth_bytes(Bytes::from(bytes)),
        ))),
        Step::Failed(message) => Reply::Close(Some(ResponseKind::SaslAuthenticate(
            answer
                .with_error_code(ResponseError::SaslAuthenticationFailed.code())
                .with_error_message(Some(StrBytes::from_string(message))),
        ))),
        Step::Illegal => {
            tracing::debug!(peer = %session.peer, "Closing a Kafka connection: SaslAuthenticate out of order.");
            Reply::Close(Some(ResponseKind::SaslAuthenticate(
                answer
                    .with_error_code(ResponseError::IllegalSaslState.code())
                    .with_error_message(Some(StrBytes::from_static_str(
                        "SaslAuthenticate must follow a SaslHandshake, once per connection",
                    ))),
            )))
        }
    }
}

/// A raw SASL message (after SaslHandshake v0): the raw frame to answer with, or `None`
/// to close the connection.
pub async fn raw_token(ctx: &Ctx, token: Bytes, session: &mut Session) -> Option<Bytes> {
    match step(ctx, token, session).await {
        Step::Continue(bytes) | Step::Done(bytes) => {
            let len = u32::try_from(bytes.len()).ok()?;
            let mut out = BytesMut::with_capacity(4 + bytes.len());
            out.put_u32(len);
            out.put_slice(&bytes);
            Some(out.freeze())
        }
        Step::Failed(_) | Step::Illegal => None,
    }
}

/// Takes one client message further.
async fn step(ctx: &Ctx, token: Bytes, session: &mut Session) -> Step {
    match std::mem::replace(&mut session.sasl, SaslState::Failed) {
        SaslState::Chosen {
            mechanism: SaslMechanism::Plain,
            ..
        } => plain_step(ctx, &token, session).await,
        SaslState::Chosen {
            mechanism: SaslMechanism::Scram(m),
            raw,
        } => {
            let decoy = ctx.auth.decoy_key();
            match ServerExchange::start(m, &token, |u| ctx.auth.scram_credential(u, m), &decoy) {
                Ok((exchange, server_first)) => {
                    session.sasl = SaslState::ScramFirstSent {
                        exchange: Box::new(exchange),
                        mechanism: m,
                        raw,
                    };
                    Step::Continue(server_first)
                }
                Err(e) => failed(ctx, session, None, m.name(), &e.to_string()).await,
            }
        }
        SaslState::ScramFirstSent {
            exchange,
            mechanism,
            ..
        } => {
            let m = mechanism.name();
            let user = exchange.user().to_string();
            match exchange.finish(&token) {
                Ok((user, server_final)) => {
                    succeeded(ctx, session, Principal::user(user), m);
                    Step::Done(server_final)
                }
                Err(e) => failed(ctx, session, Some(&user), m, &e.to_string()).await,
            }
        }
        SaslState::Start | SaslState::Done | SaslState::Failed => Step::Illegal,
    }
}

async fn plain_step(ctx: &Ctx, token: &[u8], session: &mut Session) -> Step {
    let (user, password) = match plain::parse(token) {
        Ok(c) => (c.user.to_string(), c.password.to_string()),
        Err(e) => return failed(ctx, session, None, "PLAIN", &e).await,
    };
    // A PBKDF2 of the credential's iterations: off the connection's worker thread.
    let auth = Arc::clone(&ctx.auth);
    let name = user.clone();
    let verified = tokio::task::spawn_blocking(move || auth.verify_password(&name, &password))
        .await
        .ok()
        .flatten();
    match verified {
        Some(principal) => {
            succeeded(ctx, session, principal, "PLAIN");
            Step::Done(Vec::new())
        }
        None => failed(ctx, session, Some(&user), "PLAIN", "invalid credentials").await,
    }
}

fn succeeded(ctx: &Ctx, session: &mut Session, principal: Principal, mechanism: &str) {
    ctx.auth.limiter.succeeded(&session.host);
    tracing::debug!(peer = %session.peer, principal = %principal, mechanism, "A Kafka client authenticated.");
    session.principal = Some(principal);
    session.sasl = SaslState::Done;
}

/// Logs a failed authentication, waits the host's delay, and says what to tell the
/// client. The state stays `Failed`: the connection closes.
async fn failed(
    ctx: &Ctx,
    session: &mut Session,
    user: Option<&str>,
    mechanism: &str,
    reason: &str,
) -> Step {
    tracing::warn!(peer = %session.peer, user = ?user.unwrap_or(""), mechanism, reason, "A Kafka client failed to authenticate.");
    session.sasl = SaslState::Failed;
    tokio::time::sleep(ctx.auth.limiter.failed(&session.host)).await;
    Step::Failed(format!(
        "Authentication failed with SASL mechanism {mechanism}: invalid credentials or malformed message"
    ))
}
