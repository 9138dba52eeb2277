//! One function per Kafka API, each turning a decoded request into its answer.

mod admin;
mod alter_configs;
mod cluster;
mod configs;
mod consumer_groups;
mod describe_topics;
mod fetch;
mod groups;
mod metadata;
mod offset_delete;
mod offsets;
mod partitions;
mod produce;
pub mod sasl;
mod security;
mod topic_ids;
mod txn;

use crate::config::KafkaConfig;
use crate::frame::{self, Request};
use ferry_broker::Broker;
use kafka_protocol::messages::{
    HeartbeatResponse, LeaveGroupResponse, RequestKind, ResponseKind, SyncGroupResponse,
};
use std::sync::Arc;

pub struct Ctx {
    pub broker: Arc<Broker>,
    pub config: KafkaConfig,
    /// Requests, errors and connections, for `/metrics`.
    pub metrics: crate::KafkaMetrics,
    /// Users and ACLs; with authentication off, everyone may do everything.
    pub auth: Arc<ferry_auth::Auth>,
}

/// One connection's state: who is at the other end, and how far its SASL exchange went.
#[derive(Debug)]
pub struct Session {
    /// The client's address, `ip:port`.
    pub peer: String,
    /// The client's IP address, as ACLs name hosts.
    pub host: String,
    /// Who the client is: `None` until it authenticates, when authentication is
    /// required; `User:ANONYMOUS` when it is not.
    pub principal: Option<ferry_auth::Principal>,
    /// Where the connection's SASL exchange stands.
    pub sasl: sasl::SaslState,
}

impl Session {
    pub fn new(peer: std::net::SocketAddr, auth: &ferry_auth::Auth) -> Self {
        Session {
            peer: peer.to_string(),
            host: peer.ip().to_string(),
            principal: (!auth.required()).then(ferry_auth::Principal::anonymous),
            sasl: sasl::SaslState::default(),
        }
    }

    /// Whether the session's principal may do `op` on a resource; a session that has
    /// not authenticated may do nothing.
    pub fn may(
        &self,
        auth: &ferry_auth::Auth,
        op: ferry_auth::Operation,
        rtype: ferry_auth::ResourceType,
        name: &str,
    ) -> bool {
        self.principal
            .as_ref()
            .is_some_and(|p| auth.authorize(p, &self.host, op, rtype, name))
    }

    /// Whether the session's principal may do `op` on the cluster.
    pub fn may_on_cluster(&self, auth: &ferry_auth::Auth, op: ferry_auth::Operation) -> bool {
        self.may(
            auth,
            op,
            ferry_auth::ResourceType::Cluster,
            ferry_auth::acl::CLUSTER_NAME,
        )
    }
}

impl Ctx {
    pub fn new(broker: Arc<Broker>, config: KafkaConfig) -> Self {
        Ctx {
            broker,
            config,
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
    /// Send this answer, if any, then close the connection (a failed authentication, or
    /// a request before authentication).
    Close(Option<ResponseKind>),
}

/// Answers `req`.
pub async fn handle(ctx: &Ctx, req: Request, session: &mut Session) -> Reply {
    match req.body {
        RequestKind::ApiVersions(_) => {}
        RequestKind::SaslHandshake(r) => return sasl::handshake(r, req.version, session),
        RequestKind::SaslAuthenticate(r) => return sasl::authenticate(ctx, r, session).await,
        _ if session.principal.is_none() => {
            tracing::debug!(peer = %session.peer, api = ?req.api_key, "Closing a Kafka connection: a request before authentication.");
            return Reply::Close(None);
        }
        RequestKind::Produce(r) => return produce::produce(ctx, r, req.version, session).await,
        _ => {}
    }
    Reply::Now(answer(ctx, req, session).await)
}

async fn answer(ctx: &Ctx, req: Request, session: &mut Session) -> Option<ResponseKind> {
    let session: &Session = session;
    let peer = session.peer.as_str();
    let version = req.version;
    let client_id = req.client_id.clone().unwrap_or_default();
    Some(match req.body {
        RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(frame::api_versions(0)),
        RequestKind::Metadata(r) => {
            ResponseKind::Metadata(metadata::metadata(ctx, r, version, session).await)
        }
        RequestKind::Fetch(r) => ResponseKind::Fetch(fetch::fetch(ctx, r, version, session).await),
        RequestKind::ListOffsets(r) => {
            ResponseKind::ListOffsets(offsets::list_offsets(ctx, r, session).await)
        }
        RequestKind::CreateTopics(r) => {
            ResponseKind::CreateTopics(admin::create_topics(ctx, r, session).await)
        }
        RequestKind::DeleteTopics(r) => {
            ResponseKind::DeleteTopics(admin::delete_topics(ctx, r, version, session).await)
        }
        RequestKind::CreatePartitions(r) => {
            ResponseKind::CreatePartitions(admin::create_partitions(ctx, r, session).await)
        }
        RequestKind::InitProducerId(r) => {
            ResponseKind::InitProducerId(admin::init_producer_id(ctx, r, session).await)
        }
        RequestKind::DescribeConfigs(r) => {
            ResponseKind::DescribeConfigs(configs::describe_configs(ctx, r, version, session))
        }
        RequestKind::AlterConfigs(r) => {
            ResponseKind::AlterConfigs(alter_configs::alter_configs(ctx, r, session).await)
        }
        RequestKind::IncrementalAlterConfigs(r) => ResponseKind::IncrementalAlterConfigs(
            alter_configs::incremental_alter_configs(ctx, r, session).await,
        ),
        RequestKind::OffsetDelete(r) => {
            ResponseKind::OffsetDelete(offset_delete::offset_delete(ctx, r, session).await)
        }
        RequestKind::FindCoordinator(r) => {
            ResponseKind::FindCoordinator(groups::find_coordinator(ctx, r, version, session).await)
        }
        RequestKind::JoinGroup(r) => {
            let denied = groups::group_refused(ctx, session, &r.group_id).await;
            ResponseKind::JoinGroup(match denied {
                Some(code) => groups::join_denied(code, version),
                None => groups::join_group(ctx, r, version, &client_id, peer).await,
            })
        }
        RequestKind::SyncGroup(r) => ResponseKind::SyncGroup(
            match groups::group_refused(ctx, session, &r.group_id).await {
                Some(code) => SyncGroupResponse::default().with_error_code(code),
                None => groups::sync_group(ctx, r, version).await,
            },
        ),
        RequestKind::Heartbeat(r) => ResponseKind::Heartbeat(
            match groups::group_refused(ctx, session, &r.group_id).await {
                Some(code) => HeartbeatResponse::default().with_error_code(code),
                None => groups::heartbeat(ctx, r).await,
            },
        ),
        RequestKind::LeaveGroup(r) => ResponseKind::LeaveGroup(
            match groups::group_refused(ctx, session, &r.group_id).await {
                Some(code) => LeaveGroupResponse::default().with_error_code(code),
                None => groups::leave_group(ctx, r, version).await,
            },
        ),
        RequestKind::OffsetCommit(r) => {
            ResponseKind::OffsetCommit(groups::offset_commit(ctx, r, session).await)
        }
        RequestKind::OffsetFetch(r) => {
            ResponseKind::OffsetFetch(groups::offset_fetch(ctx, r, version, session).await)
        }
        RequestKind::ListGroups(_) => {
            ResponseKind::ListGroups(groups::list_groups(ctx, version, session).await)
        }
        RequestKind::DescribeGroups(r) => {
            ResponseKind::DescribeGroups(groups::describe_groups(ctx, r, version, session).await)
        }
        RequestKind::DeleteGroups(r) => {
            ResponseKind::DeleteGroups(groups::delete_groups(ctx, r, session).await)
        }
        RequestKind::CreateAcls(r) => {
            ResponseKind::CreateAcls(security::create_acls(ctx, r, session).await)
        }
        RequestKind::DescribeAcls(r) => {
            ResponseKind::DescribeAcls(security::describe_acls(ctx, r, session))
        }
        RequestKind::DeleteAcls(r) => {
            ResponseKind::DeleteAcls(security::delete_acls(ctx, r, session).await)
        }
        RequestKind::DescribeUserScramCredentials(r) => ResponseKind::DescribeUserScramCredentials(
            security::describe_user_scram_credentials(ctx, r, session),
        ),
        RequestKind::AlterUserScramCredentials(r) => ResponseKind::AlterUserScramCredentials(
            security::alter_user_scram_credentials(ctx, r, session).await,
        ),
        RequestKind::DeleteRecords(r) => {
            ResponseKind::DeleteRecords(partitions::delete_records(ctx, r, session).await)
        }
        RequestKind::DescribeLogDirs(r) => {
            ResponseKind::DescribeLogDirs(partitions::describe_log_dirs(ctx, r, version, session))
        }
        RequestKind::DescribeProducers(r) => {
            ResponseKind::DescribeProducers(partitions::describe_producers(ctx, r, session).await)
        }
        RequestKind::OffsetForLeaderEpoch(r) => {
            ResponseKind::OffsetForLeaderEpoch(partitions::offset_for_leader_epoch(ctx, r, session))
        }
        RequestKind::ElectLeaders(r) => {
            ResponseKind::ElectLeaders(partitions::elect_leaders(ctx, r, version, session))
        }
        RequestKind::ConsumerGroupHeartbeat(r) => ResponseKind::ConsumerGroupHeartbeat(
            consumer_groups::heartbeat(ctx, r, peer, &client_id, session).await,
        ),
        RequestKind::ConsumerGroupDescribe(r) => {
            ResponseKind::ConsumerGroupDescribe(consumer_groups::describe(ctx, r, session).await)
        }
        RequestKind::DescribeTopicPartitions(r) => ResponseKind::DescribeTopicPartitions(
            describe_topics::describe_topic_partitions(ctx, r, session),
        ),
        RequestKind::AddPartitionsToTxn(r) => {
            ResponseKind::AddPartitionsToTxn(txn::add_partitions_to_txn(ctx, r, session).await)
        }
        RequestKind::AddOffsetsToTxn(r) => {
            ResponseKind::AddOffsetsToTxn(txn::add_offsets_to_txn(ctx, r, session).await)
        }
        RequestKind::TxnOffsetCommit(r) => {
            ResponseKind::TxnOffsetCommit(txn::txn_offset_commit(ctx, r, session).await)
        }
        RequestKind::EndTxn(r) => ResponseKind::EndTxn(txn::end_txn(ctx, r, session).await),
        RequestKind::ListTransactions(r) => {
            ResponseKind::ListTransactions(txn::list_transactions(ctx, r, session).await)
        }
        RequestKind::DescribeTransactions(r) => {
            ResponseKind::DescribeTransactions(txn::describe_transactions(ctx, r, session).await)
        }
        RequestKind::DescribeCluster(r) => {
            ResponseKind::DescribeCluster(cluster::describe_cluster(ctx, r, session))
        }
        // `frame::decode_request` lets through only the APIs listed in `versions`.
        other => {
            tracing::error!(request = ?std::mem::discriminant(&other), "A request passed the version check without a handler.");
            return None;
        }
    })
}
