//! Metadata: this one node is the leader of every partition. A listing shows only the
//! topics the session may Describe; a topic asked for by name that it may not Describe
//! answers TOPIC_AUTHORIZATION_FAILED (whether it exists or not), one whose name breaks
//! Ferry's topic-name rule INVALID_TOPIC_EXCEPTION (auto-creation or not), and
//! auto-creation needs Create on the cluster or the topic.
//!
//! # Topic ids
//!
//! From v10 every topic answered carries its id. From v12 a request may name a topic
//! by id alone (its name null): an id no topic has answers UNKNOWN_TOPIC_ID, one the
//! session may not Describe TOPIC_AUTHORIZATION_FAILED, both with the name null so that
//! an id does not reveal a name. A topic with neither name nor id (or an id before v12,
//! where Kafka takes names only) answers INVALID_REQUEST.

use super::{topic_ids, Ctx, Session};
use crate::errors;
use ferry_auth::{Operation, ResourceType};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use uuid::Uuid;

/// The cluster id Metadata and DescribeCluster give.
pub const CLUSTER_ID: &str = "ferry";

pub async fn metadata(
    ctx: &Ctx,
    req: MetadataRequest,
    version: i16,
    session: &Session,
) -> MetadataResponse {
    let describable =
        |name: &str| session.may(&ctx.auth, Operation::Describe, ResourceType::Topic, name);
    // Before v4 every Metadata request allows creation; later ones say so.
    let allow_create =
        ctx.config.auto_create_topics && (version < 4 || req.allow_auto_topic_creation);
    let node = BrokerId(ctx.config.node_id);
    let cluster = Cluster::of(ctx);
    let all_topics = || -> Vec<String> {
        ctx.broker
            .list_topics()
            .into_iter()
            .map(|t| t.config.name)
            .filter(|n| describable(n))
            .collect()
    };
    // Topics named by an id Ferry cannot answer with a name (see the module's doc).
    let mut by_id_refused: Vec<(Uuid, i16)> = Vec::new();
    let names: Vec<String> = match req.topics {
        None => all_topics(),
        Some(t) if t.is_empty() && version == 0 => all_topics(),
        Some(t) => {
            // Each name (and id) once, however often a request repeats it.
            let mut seen = std::collections::HashSet::new();
            let mut seen_ids = std::collections::HashSet::new();
            let mut names = Vec::new();
            for t in t {
                let name = match t.name {
                    Some(n) => n.0.to_string(),
                    None if version < 12 || t.topic_id.is_nil() => {
                        if seen_ids.insert(t.topic_id) {
                            by_id_refused.push((t.topic_id, ResponseError::InvalidRequest.code()));
                        }
                        continue;
                    }
                    None => match topic_ids::name_of(ctx, t.topic_id) {
                        Some(n) if describable(&n) => n,
                        found => {
                            let code = if found.is_some() {
                                ResponseError::TopicAuthorizationFailed
                            } else {
                                ResponseError::UnknownTopicId
                            };
                            if seen_ids.insert(t.topic_id) {
                                by_id_refused.push((t.topic_id, code.code()));
                            }
                            continue;
                        }
                    },
                };
                if seen.insert(name.clone()) {
                    names.push(name);
                }
            }
            names
        }
    };
    // In shared mode another node may have made a topic this one has not read yet.
    ctx.broker.learn_topics(&names).await;
    if allow_create {
        let creatable: Vec<String> = names
            .iter()
            .filter(|n| ferry_broker::config::validate_topic_name(n).is_ok())
            .filter(|n| describable(n) && super::admin::may_create_topic(ctx, session, n))
            .cloned()
            .collect();
        auto_create(ctx, &creatable).await;
    }
    let refused = by_id_refused.into_iter().map(|(id, code)| {
        MetadataResponseTopic::default()
            // Names are not nullable before v12.
            .with_name((version < 12).then(|| TopicName(StrBytes::from_static_str(""))))
            .with_topic_id(id)
            .with_error_code(code)
    });
    let topics = names
        .into_iter()
        .map(|name| {
            let topic = MetadataResponseTopic::default()
                .with_name(Some(TopicName(StrBytes::from_string(name.clone()))));
            if !describable(&name) {
                return topic.with_error_code(ResponseError::TopicAuthorizationFailed.code());
            }
            // A name no topic can have: clients fail its records at once instead of
            // waiting for the topic to appear.
            if ferry_broker::config::validate_topic_name(&name).is_err() {
                return topic.with_error_code(ResponseError::InvalidTopicException.code());
            }
            match ctx.broker.describe_topic(&name) {
                Ok(info) => topic
                    .with_topic_id(topic_ids::to_wire(info.config.topic_id))
                    .with_topic_authorized_operations(if req.include_topic_authorized_operations {
                        super::cluster::topic_operations(ctx, session, &name)
                    } else {
                        super::cluster::NOT_REQUESTED
                    })
                    .with_partitions(
                        info.partitions
                            .iter()
                            .map(|p| {
                                let replicas = cluster.replicas(&name, p.partition);
                                MetadataResponsePartition::default()
                                    .with_partition_index(p.partition as i32)
                                    .with_leader_id(replicas[0])
                                    .with_leader_epoch(ferry_log::LEADER_EPOCH)
                                    .with_replica_nodes(replicas.clone())
                                    .with_isr_nodes(replicas)
                            })
                            .collect(),
                    ),
                Err(e) => topic.with_error_code(errors::code(&e)),
            }
        })
        .chain(refused)
        .collect();
    MetadataResponse::default()
        .with_brokers(cluster.brokers)
        .with_cluster_id(Some(StrBytes::from_static_str(CLUSTER_ID)))
        .with_cluster_authorized_operations(if req.include_cluster_authorized_operations {
            super::cluster::cluster_operations(ctx, session)
        } else {
            super::cluster::NOT_REQUESTED
        })
        .with_controller_id(node)
        .with_topics(topics)
}

/// Creates, with the defaults, each named topic that does not exist yet.
async fn auto_create(ctx: &Ctx, names: &[String]) {
    for name in names {
        if ctx.broker.topic(name).is_err() {
            match ctx
                .broker
                .create_topic(name, ferry_broker::TopicSettings::default())
                .await
            {
                Ok(_) => {
                    tracing::info!(topic = %name, "Created a topic a Kafka client asked for (auto-create is on).")
                }
                Err(e) => {
                    tracing::debug!(topic = %name, error = %e, "Could not auto-create a topic.")
                }
            }
        }
    }
}

/// The nodes a Metadata answer names: this node alone in the local mode; in shared
/// mode every live node, with partitions spread over them for load (any node takes
/// any partition's writes, so a client may go to any).
struct Cluster {
    brokers: Vec<MetadataResponseBroker>,
    ids: Vec<BrokerId>,
}

/// Replicas Metadata reports per partition in shared mode, where the object store
/// keeps the copies: as a three-way replicated Kafka cluster would show.
const SHARED_REPLICAS: usize = 3;

impl Cluster {
    fn of(ctx: &Ctx) -> Cluster {
        let this = MetadataResponseBroker::default()
            .with_node_id(BrokerId(ctx.config.node_id))
            .with_host(StrBytes::from_string(ctx.config.advertised_host.clone()))
            .with_port(ctx.config.advertised_port as i32);
        let mut brokers: Vec<MetadataResponseBroker> = ctx
            .broker
            .shared_nodes()
            .unwrap_or_default()
            .into_iter()
            .map(|n| {
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(n.node_id))
                    .with_host(StrBytes::from_string(n.kafka_host))
                    .with_port(i32::from(n.kafka_port))
            })
            .collect();
        // This node answers, so it is live whatever its last beat said.
        if !brokers.iter().any(|b| b.node_id == this.node_id) {
            brokers.push(this);
            brokers.sort_by_key(|b| b.node_id.0);
        }
        let ids = brokers.iter().map(|b| b.node_id).collect();
        Cluster { brokers, ids }
    }

    /// A partition's replicas, its leader first: spread by topic and partition.
    fn replicas(&self, topic: &str, partition: u32) -> Vec<BrokerId> {
        debug_assert!(!self.ids.is_empty(), "this node is always listed");
        let n = self.ids.len();
        let spread = topic
            .bytes()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
        let first = spread.wrapping_add(partition as usize) % n;
        (0..n.min(SHARED_REPLICAS))
            .map(|i| self.ids[(first + i) % n])
            .collect()
    }
}
