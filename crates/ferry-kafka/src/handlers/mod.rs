//! One function per Kafka API, each turning a decoded request into its answer.

mod admin;
mod configs;
mod fetch;
mod groups;
mod metadata;
mod offsets;
mod produce;

use crate::config::KafkaConfig;
use crate::frame::{self, Request};
use ferry_broker::Broker;
use kafka_protocol::messages::{RequestKind, ResponseKind};
use std::sync::atomic::AtomicI64;
use std::sync::Arc;

pub struct Ctx {
    pub broker: Arc<Broker>,
    pub config: KafkaConfig,
    /// Producer ids handed out by InitProducerId; seeded from the clock so that ids
    /// stay unique across restarts.
    pub next_producer_id: AtomicI64,
    /// Requests, errors and connections, for `/metrics`.
    pub metrics: crate::KafkaMetrics,
    /// Users and ACLs; with authentication off, everyone may do everything.
    pub auth: Arc<ferry_auth::Auth>,
}

/// One connection's state: who is at the other end.
#[derive(Debug)]
pub struct Session {
    /// The client's address, `ip:port`.
    pub peer: String,
    /// The client's IP address, as ACLs name hosts.
    pub host: String,
    /// Who the client is: `None` until it authenticates, when authentication is
    /// required; `User:ANONYMOUS` when it is not.
    pub principal: Option<ferry_auth::Principal>,
}

impl Session {
    pub fn new(peer: std::net::SocketAddr, auth: &ferry_auth::Auth) -> Self {
        Session {
            peer: peer.to_string(),
            host: peer.ip().to_string(),
            principal: (!auth.required()).then(ferry_auth::Principal::anonymous),
        }
    }
}

impl Ctx {
    pub fn new(broker: Arc<Broker>, config: KafkaConfig) -> Self {
        let seed = (ferry_broker::now_ms() as i64) << 8;
        Ctx {
            broker,
            config,
            next_producer_id: AtomicI64::new(seed),
            metrics: crate::KafkaMetrics::default(),
            auth: ferry_auth::Auth::in_memory(Default::default()),
        }
    }
}

/// An answer that completes later.
pub type Pending =
    std::pin::Pin<Box<dyn std::future::Future<Output = Option<ResponseKind>> + Send + 'static>>;

/// How a request is answered. `None` means the protocol wants no answer (Produce, acks=0).
// One Reply lives per request and is moved once; boxing the common case would cost an
// allocation per request for nothing.
#[allow(clippy::large_enum_variant)]
pub enum Reply {
    Now(Option<ResponseKind>),
    /// A produce whose records are appended but not yet durable: the answer completes
    /// after the sync, while the connection goes on with its next requests. Answers
    /// still leave in request order.
    Later(Pending),
}

/// Answers `req`.
pub async fn handle(ctx: &Ctx, req: Request, session: &mut Session) -> Reply {
    if let RequestKind::Produce(r) = req.body {
        return produce::produce(ctx, r).await;
    }
    Reply::Now(answer(ctx, req, session).await)
}

async fn answer(ctx: &Ctx, req: Request, session: &mut Session) -> Option<ResponseKind> {
    let peer = session.peer.as_str();
    let version = req.version;
    let client_id = req.client_id.clone().unwrap_or_default();
    Some(match req.body {
        RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(frame::api_versions(0)),
        RequestKind::Metadata(r) => {
            ResponseKind::Metadata(metadata::metadata(ctx, r, version).await)
        }
        RequestKind::Fetch(r) => ResponseKind::Fetch(fetch::fetch(ctx, r).await),
        RequestKind::ListOffsets(r) => {
            ResponseKind::ListOffsets(offsets::list_offsets(ctx, r).await)
        }
        RequestKind::CreateTopics(r) => {
            ResponseKind::CreateTopics(admin::create_topics(ctx, r).await)
        }
        RequestKind::DeleteTopics(r) => {
            ResponseKind::DeleteTopics(admin::delete_topics(ctx, r).await)
        }
        RequestKind::CreatePartitions(r) => {
            ResponseKind::CreatePartitions(admin::create_partitions(ctx, r).await)
        }
        RequestKind::InitProducerId(r) => {
            ResponseKind::InitProducerId(admin::init_producer_id(ctx, r))
        }
        RequestKind::DescribeConfigs(r) => {
            ResponseKind::DescribeConfigs(configs::describe_configs(ctx, r, version))
        }
        RequestKind::FindCoordinator(r) => {
            ResponseKind::FindCoordinator(groups::find_coordinator(ctx, r, version))
        }
        RequestKind::JoinGroup(r) => {
            ResponseKind::JoinGroup(groups::join_group(ctx, r, version, &client_id, peer).await)
        }
        RequestKind::SyncGroup(r) => {
            ResponseKind::SyncGroup(groups::sync_group(ctx, r, version).await)
        }
        RequestKind::Heartbeat(r) => ResponseKind::Heartbeat(groups::heartbeat(ctx, r).await),
        RequestKind::LeaveGroup(r) => {
            ResponseKind::LeaveGroup(groups::leave_group(ctx, r, version).await)
        }
        RequestKind::OffsetCommit(r) => {
            ResponseKind::OffsetCommit(groups::offset_commit(ctx, r).await)
        }
        RequestKind::OffsetFetch(r) => {
            ResponseKind::OffsetFetch(groups::offset_fetch(ctx, r, version))
        }
        RequestKind::ListGroups(_) => {
            ResponseKind::ListGroups(groups::list_groups(ctx, version).await)
        }
        RequestKind::DescribeGroups(r) => {
            ResponseKind::DescribeGroups(groups::describe_groups(ctx, r).await)
        }
        RequestKind::DeleteGroups(r) => {
            ResponseKind::DeleteGroups(groups::delete_groups(ctx, r).await)
        }
        // `frame::decode_request` lets through only the APIs listed in `versions`.
        other => {
            tracing::error!(request = ?std::mem::discriminant(&other), "A request passed the version check without a handler.");
            return None;
        }
    })
}
