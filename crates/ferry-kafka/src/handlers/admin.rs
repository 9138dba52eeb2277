//! Topic administration and producer ids.

use super::{topic_ids, Ctx, Session};
use crate::errors;
use ferry_auth::{Operation, ResourceType};
use ferry_broker::{BrokerError, CleanupPolicy, TimestampType, TopicSettings};
use kafka_protocol::messages::create_partitions_request::CreatePartitionsAssignment;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_request::CreatableReplicaAssignment;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    BrokerId, CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest,
    CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse, InitProducerIdRequest,
    InitProducerIdResponse, ProducerId, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

/// Kafka topic configs taken (with the values a single node honours) that have no
/// setting of their own to describe.
pub(super) const UNDESCRIBED_CONFIGS: &[&str] = &["unclean.leader.election.enable"];

/// The topic configs CreateTopics takes, each honoured (listed in refusals).
const ACCEPTED_CONFIGS: &str = "retention.ms, retention.bytes, segment.bytes, segment.ms, \
max.message.bytes, message.timestamp.type (CreateTime, LogAppendTime), \
cleanup.policy (delete, compact, compact,delete), delete.retention.ms, min.compaction.lag.ms, \
min.cleanable.dirty.ratio, max.compaction.lag.ms, compression.type=producer, ferry.durability, ferry.flush.interval.ms, min.insync.replicas=1 and unclean.leader.election.enable";

/// Maps Kafka topic configs onto Ferry's settings (CreateTopics, AlterConfigs and
/// IncrementalAlterConfigs share it, so they check alike). Every config taken is
/// honoured; anything Ferry would not honour is refused with a message naming it.
pub(super) fn settings_from_configs<'a>(
    configs: impl Iterator<Item = (&'a str, Option<&'a str>)>,
) -> Result<TopicSettings, String> {
    let mut s = TopicSettings::default();
    for (name, value) in configs {
        let value = value.unwrap_or_default();
        let int = |v: &str| {
            v.parse::<i64>()
                .map_err(|_| format!("{name}={v:?} is not a number"))
        };
        let uint = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{name}={v:?} is not a positive number"))
        };
        match name {
            "retention.ms" => s.retention_ms = Some(int(value)?),
            "retention.bytes" => s.retention_bytes = Some(int(value)?),
            "segment.bytes" => s.segment_bytes = Some(uint(value)?),
            "segment.ms" => s.segment_ms = Some(uint(value)?),
            "max.message.bytes" => s.max_record_bytes = Some(uint(value)?),
            "ferry.durability" => {
                s.durability = Some(ferry_broker::DurabilityPolicy::parse(value).ok_or_else(
                    || format!("{name}={value:?} is not always, interval or never"),
                )?)
            }
            "ferry.flush.interval.ms" => s.flush_interval_ms = Some(uint(value)?),
            "message.timestamp.type" => {
                s.timestamp_type = Some(TimestampType::from_kafka(value).ok_or_else(|| {
                    format!("message.timestamp.type={value:?}: use CreateTime or LogAppendTime")
                })?)
            }
            "cleanup.policy" => {
                s.cleanup_policy = Some(CleanupPolicy::parse(value).ok_or_else(|| {
                    format!("cleanup.policy={value:?}: use delete, compact or compact,delete")
                })?)
            }
            "delete.retention.ms" => s.delete_retention_ms = Some(uint(value)?),
            "min.compaction.lag.ms" => s.min_compaction_lag_ms = Some(uint(value)?),
            "max.compaction.lag.ms" => s.max_compaction_lag_ms = Some(uint(value)?),
            "min.cleanable.dirty.ratio" => {
                s.min_cleanable_dirty_ratio = Some(
                    value
                        .parse::<f64>()
                        .ok()
                        .filter(|r| (0.0..=1.0).contains(r))
                        .ok_or_else(|| format!("{name}={value:?} is not a number from 0 to 1"))?,
                )
            }
            // Batches are stored with the codec their producer chose.
            "compression.type" if value == "producer" => {}
            "compression.type" => {
                return Err(format!(
                    "compression.type={value:?} is not supported: Ferry stores each batch with its producer's codec; use \"producer\""
                ))
            }
            // One node holds the only replica: one in-sync replica is all there is, and
            // there is never a leader to elect, cleanly or not.
            "min.insync.replicas" if value == "1" => {}
            "min.insync.replicas" => {
                return Err(format!(
                    "min.insync.replicas={value:?} cannot be met: Ferry keeps one replica; use 1"
                ))
            }
            "unclean.leader.election.enable" if value == "true" || value == "false" => {}
            "unclean.leader.election.enable" => {
                return Err(format!("{name}={value:?}: use true or false"))
            }
            n => {
                return Err(format!(
                    "topic config {n:?} is not supported; Ferry takes {ACCEPTED_CONFIGS}"
                ))
            }
        }
    }
    Ok(s)
}

/// Whether the session may create topic `name` (Create on the cluster or on the topic).
pub fn may_create_topic(ctx: &Ctx, session: &Session, name: &str) -> bool {
    session.may_on_cluster(&ctx.auth, Operation::Create)
        || session.may(&ctx.auth, Operation::Create, ResourceType::Topic, name)
}

fn topic_denied(what: &str, name: &str) -> (i16, String) {
    (
        ResponseError::TopicAuthorizationFailed.code(),
        format!("not allowed to {what} topic '{name}'"),
    )
}

pub async fn create_topics(
    ctx: &Ctx,
    req: CreateTopicsRequest,
    session: &Session,
) -> CreateTopicsResponse {
    let mut topics = Vec::new();
    for t in req.topics {
        let name = t.name.0.to_string();
        let result = CreatableTopicResult::default()
            .with_name(t.name.clone())
            .with_replication_factor(1);
        // The partition count and (v7+) the id of the topic created.
        let outcome: Result<(i32, uuid::Uuid), (i16, String)> = async {
            if !may_create_topic(ctx, session, &name) {
                return Err(topic_denied("create", &name));
            }
            let assigned = if t.assignments.is_empty() {
                None
            } else {
                Some(partitions_assigned(
                    ctx.config.node_id,
                    t.num_partitions,
                    t.replication_factor,
                    &t.assignments,
                )?)
            };
            // In shared mode the object store keeps the copies: any factor is met.
            if t.replication_factor > 1 && !ctx.broker.is_shared() {
                return Err((
                    ResponseError::InvalidReplicationFactor.code(),
                    format!(
                        "replication factor {} asked, but Ferry runs as one node: use 1 or -1",
                        t.replication_factor
                    ),
                ));
            }
            let mut settings = settings_from_configs(
                t.configs
                    .iter()
                    .map(|c| (c.name.as_str(), c.value.as_deref())),
            )
            .map_err(|m| (ResponseError::InvalidConfig.code(), m))?;
            if let Some(n) = assigned {
                settings.partitions = Some(n);
            } else if t.num_partitions > 0 {
                settings.partitions = Some(t.num_partitions as u32);
            } else if t.num_partitions == 0 || t.num_partitions < -1 {
                return Err((
                    ResponseError::InvalidPartitions.code(),
                    format!("{} partitions asked", t.num_partitions),
                ));
            }
            if req.validate_only {
                ferry_broker::config::validate_topic_name(&name)
                    .map_err(|e| (errors::code(&e), e.to_string()))?;
                if ctx.broker.topic(&name).is_ok() {
                    return Err((
                        ResponseError::TopicAlreadyExists.code(),
                        format!("topic '{name}' already exists"),
                    ));
                }
                let n = settings
                    .partitions
                    .unwrap_or(ctx.broker.defaults().partitions);
                // A dry run gives no id, as in Kafka: the topic has none yet.
                return Ok((n as i32, uuid::Uuid::nil()));
            }
            let info = ctx
                .broker
                .create_topic(&name, settings)
                .await
                .map_err(|e| (errors::code(&e), e.to_string()))?;
            Ok((
                info.config.partitions as i32,
                topic_ids::to_wire(info.config.topic_id),
            ))
        }
        .await;
        topics.push(match outcome {
            Ok((n, id)) => result.with_num_partitions(n).with_topic_id(id),
            Err((code, message)) => result
                .with_error_code(code)
                .with_error_message(Some(StrBytes::from_string(message)))
                .with_num_partitions(-1),
        });
    }
    CreateTopicsResponse::default().with_topics(topics)
}

/// DeleteTopics. Up to v5 topics are named by name; from v6 by name or by id (not
/// both: INVALID_REQUEST), an id no topic has answering UNKNOWN_TOPIC_ID. A topic
/// named by id that the session may not delete answers TOPIC_AUTHORIZATION_FAILED
/// without its name.
pub async fn delete_topics(
    ctx: &Ctx,
    req: DeleteTopicsRequest,
    version: i16,
    session: &Session,
) -> DeleteTopicsResponse {
    let wanted: Vec<(Option<TopicName>, uuid::Uuid)> = if version >= 6 {
        req.topics
            .into_iter()
            .map(|t| (t.name, t.topic_id))
            .collect()
    } else {
        req.topic_names
            .into_iter()
            .map(|n| (Some(n), uuid::Uuid::nil()))
            .collect()
    };
    let mut responses = Vec::new();
    for (name, id) in wanted {
        let result = DeletableTopicResult::default().with_topic_id(id);
        // (No message before v5: DeleteTopics carries one only from v5.)
        let (shown, code) = match (name, id.is_nil()) {
            (Some(name), true) => {
                let code = delete_topic(ctx, session, &name.0).await;
                (Some(name), code)
            }
            (None, false) => match topic_ids::name_of(ctx, id) {
                Some(name) => {
                    let code = delete_topic(ctx, session, &name).await;
                    let denied = code == ResponseError::TopicAuthorizationFailed.code();
                    ((!denied).then(|| TopicName(name.into())), code)
                }
                None => (None, ResponseError::UnknownTopicId.code()),
            },
            (name, _) => (name, ResponseError::InvalidRequest.code()),
        };
        responses.push(result.with_name(shown).with_error_code(code));
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

/// Deletes one topic if the session may: the Kafka error code.
async fn delete_topic(ctx: &Ctx, session: &Session, name: &str) -> i16 {
    if !session.may(&ctx.auth, Operation::Delete, ResourceType::Topic, name) {
        return ResponseError::TopicAuthorizationFailed.code();
    }
    match ctx.broker.delete_topic(name).await {
        Ok(()) => errors::NONE,
        Err(e) => errors::code(&e),
    }
}

pub async fn create_partitions(
    ctx: &Ctx,
    req: CreatePartitionsRequest,
    session: &Session,
) -> CreatePartitionsResponse {
    let mut results = Vec::new();
    for t in req.topics {
        let result = CreatePartitionsTopicResult::default().with_name(t.name.clone());
        let outcome: Result<(), (i16, String)> = async {
            if !session.may(&ctx.auth, Operation::Alter, ResourceType::Topic, &t.name.0) {
                return Err(topic_denied("alter", &t.name.0));
            }
            let current = ctx
                .broker
                .describe_topic(&t.name.0)
                .map_err(|e| (errors::code(&e), e.to_string()))?
                .config
                .partitions;
            if t.count <= current as i32 {
                return Err((
                    ResponseError::InvalidPartitions.code(),
                    format!(
                        "topic has {current} partitions; the new count must be larger, got {}",
                        t.count
                    ),
                ));
            }
            if let Some(assignments) = &t.assignments {
                let new = (t.count - current as i32) as usize;
                check_new_partitions_assigned(ctx.config.node_id, new, assignments)?;
            }
            if req.validate_only {
                return Ok(());
            }
            let update = TopicSettings {
                partitions: Some(t.count as u32),
                ..Default::default()
            };
            ctx.broker
                .update_topic(&t.name.0, update)
                .await
                .map(|_| ())
                .map_err(|e: BrokerError| {
                    let code = match e {
                        BrokerError::InvalidConfig(_) => ResponseError::InvalidPartitions.code(),
                        ref other => errors::code(other),
                    };
                    (code, e.to_string())
                })
        }
        .await;
        results.push(match outcome {
            Ok(()) => result,
            Err((code, message)) => result
                .with_error_code(code)
                .with_error_message(Some(StrBytes::from_string(message))),
        });
    }
    CreatePartitionsResponse::default().with_results(results)
}

/// The refusal of a replica assignment.
fn invalid_assignment(message: String) -> (i16, String) {
    (ResponseError::InvalidReplicaAssignment.code(), message)
}

/// Checks one partition's replicas: exactly this node, the only broker there is.
fn check_replicas(node_id: i32, partition: i32, brokers: &[BrokerId]) -> Result<(), (i16, String)> {
    match brokers {
        [b] if b.0 == node_id => Ok(()),
        [] => Err(invalid_assignment(format!(
            "partition {partition} is assigned no replica; assign it to broker {node_id}, this node"
        ))),
        _ => {
            let listed: Vec<String> = brokers.iter().map(|b| b.0.to_string()).collect();
            Err(invalid_assignment(format!(
                "partition {partition} is assigned to brokers [{}]; Ferry runs as one node, broker {node_id}: assign each partition to [{node_id}]",
                listed.join(", ")
            )))
        }
    }
}

/// The partition count a CreateTopics replica assignment gives, once checked: as Kafka,
/// the count and the replication factor must then be -1, and partitions are numbered
/// from 0 without gaps; each is assigned to this node alone.
fn partitions_assigned(
    node_id: i32,
    num_partitions: i32,
    replication_factor: i16,
    assignments: &[CreatableReplicaAssignment],
) -> Result<u32, (i16, String)> {
    if num_partitions != -1 || replication_factor != -1 {
        return Err((
            ResponseError::InvalidRequest.code(),
            "with a replica assignment, the partition count and replication factor must be -1"
                .into(),
        ));
    }
    let mut seen = vec![false; assignments.len()];
    for a in assignments {
        let slot = usize::try_from(a.partition_index)
            .ok()
            .and_then(|i| seen.get_mut(i));
        match slot {
            Some(s) if !*s => *s = true,
            _ => {
                return Err(invalid_assignment(format!(
                "partition {} is out of order or named twice; number partitions 0 to {} once each",
                a.partition_index,
                assignments.len() - 1
            )))
            }
        }
        check_replicas(node_id, a.partition_index, &a.broker_ids)?;
    }
    debug_assert!(seen.iter().all(|s| *s));
    u32::try_from(assignments.len()).map_err(|_| {
        (
            ResponseError::InvalidPartitions.code(),
            "too many partitions".into(),
        )
    })
}

/// Checks a CreatePartitions assignment: one entry per new partition, each this node.
fn check_new_partitions_assigned(
    node_id: i32,
    new: usize,
    assignments: &[CreatePartitionsAssignment],
) -> Result<(), (i16, String)> {
    if assignments.len() != new {
        return Err(invalid_assignment(format!(
            "{new} partitions are added but {} assignments were given",
            assignments.len()
        )));
    }
    for (i, a) in assignments.iter().enumerate() {
        check_replicas(node_id, i32::try_from(i).unwrap_or(i32::MAX), &a.broker_ids)?;
    }
    Ok(())
}

/// A producer id for an idempotent producer: IdempotentWrite on the cluster, or Write on
/// some topic, as Kafka asks. A transactional producer (a transactional id) is the
/// transaction coordinator's (see `txn`): Write on its transactional id.
pub async fn init_producer_id(
    ctx: &Ctx,
    req: InitProducerIdRequest,
    session: &Session,
) -> InitProducerIdResponse {
    if let Some(txn_id) = req.transactional_id.as_ref() {
        return super::txn::init_producer_id(ctx, &req, &txn_id.0, session).await;
    }
    let may_write = session.may_on_cluster(&ctx.auth, Operation::IdempotentWrite)
        || session.principal.as_ref().is_some_and(|p| {
            ctx.auth
                .allowed_somewhere(p, &session.host, Operation::Write, ResourceType::Topic)
        });
    if !may_write {
        return InitProducerIdResponse::default()
            .with_error_code(ResponseError::ClusterAuthorizationFailed.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
    }
    match ctx.broker.new_producer_id().await {
        Ok(id) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(e) => InitProducerIdResponse::default()
            .with_error_code(crate::errors::code(&e))
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(configs: &[(&str, &str)]) -> Result<TopicSettings, String> {
        settings_from_configs(configs.iter().map(|(k, v)| (*k, Some(*v))))
    }

    fn assignment(partition: i32, brokers: &[i32]) -> CreatableReplicaAssignment {
        CreatableReplicaAssignment::default()
            .with_partition_index(partition)
            .with_broker_ids(brokers.iter().map(|b| BrokerId(*b)).collect())
    }

    #[test]
    fn an_assignment_to_this_node_alone_gives_the_partition_count() {
        let a = [
            assignment(1, &[7]),
            assignment(0, &[7]),
            assignment(2, &[7]),
        ];
        assert_eq!(partitions_assigned(7, -1, -1, &a), Ok(3));
    }

    #[test]
    fn assignments_naming_other_brokers_or_with_gaps_are_refused() {
        let invalid = ResponseError::InvalidReplicaAssignment.code();
        let (code, message) =
            partitions_assigned(0, -1, -1, &[assignment(0, &[0, 1])]).unwrap_err();
        assert_eq!(code, invalid);
        assert!(
            message.contains("[0, 1]") && message.contains("one node"),
            "{message}"
        );
        for bad in [
            vec![assignment(0, &[3])],
            vec![assignment(0, &[])],
            vec![assignment(0, &[0, 0])],
            vec![assignment(0, &[0]), assignment(2, &[0])],
            vec![assignment(0, &[0]), assignment(0, &[0])],
            vec![assignment(-1, &[0])],
        ] {
            assert_eq!(partitions_assigned(0, -1, -1, &bad).unwrap_err().0, invalid);
        }
        let code = partitions_assigned(0, 1, -1, &[assignment(0, &[0])])
            .unwrap_err()
            .0;
        assert_eq!(code, ResponseError::InvalidRequest.code());
    }

    #[test]
    fn new_partitions_must_each_be_assigned_to_this_node() {
        let one = |b: i32| CreatePartitionsAssignment::default().with_broker_ids(vec![BrokerId(b)]);
        assert_eq!(
            check_new_partitions_assigned(0, 2, &[one(0), one(0)]),
            Ok(())
        );
        let invalid = ResponseError::InvalidReplicaAssignment.code();
        assert_eq!(
            check_new_partitions_assigned(0, 2, &[one(0)])
                .unwrap_err()
                .0,
            invalid
        );
        assert_eq!(
            check_new_partitions_assigned(0, 1, &[one(4)])
                .unwrap_err()
                .0,
            invalid
        );
    }

    #[test]
    fn configs_ferry_honours_are_taken() {
        let s = settings(&[
            ("retention.ms", "3600000"),
            ("message.timestamp.type", "LogAppendTime"),
            ("compression.type", "producer"),
            ("cleanup.policy", "delete"),
            ("min.insync.replicas", "1"),
            ("unclean.leader.election.enable", "false"),
        ])
        .unwrap();
        assert_eq!(s.retention_ms, Some(3_600_000));
        assert_eq!(s.timestamp_type, Some(TimestampType::LogAppendTime));
        let s = settings(&[("message.timestamp.type", "CreateTime")]).unwrap();
        assert_eq!(s.timestamp_type, Some(TimestampType::CreateTime));
    }

    #[test]
    fn compaction_configs_are_taken() {
        for (v, want) in [
            ("delete", CleanupPolicy::Delete),
            ("compact", CleanupPolicy::Compact),
            ("compact,delete", CleanupPolicy::CompactDelete),
            ("delete,compact", CleanupPolicy::CompactDelete),
        ] {
            let s = settings(&[("cleanup.policy", v)]).unwrap();
            assert_eq!(s.cleanup_policy, Some(want), "{v}");
        }
        let s = settings(&[
            ("delete.retention.ms", "1000"),
            ("min.compaction.lag.ms", "5"),
            ("min.cleanable.dirty.ratio", "0.01"),
            ("max.compaction.lag.ms", "60000"),
        ])
        .unwrap();
        assert_eq!(s.max_compaction_lag_ms, Some(60_000));
        assert_eq!(s.delete_retention_ms, Some(1000));
        assert_eq!(s.min_compaction_lag_ms, Some(5));
        assert_eq!(s.min_cleanable_dirty_ratio, Some(0.01));
    }

    #[test]
    fn configs_ferry_would_not_honour_are_refused_with_their_name() {
        for (k, v) in [
            ("compression.type", "gzip"),
            ("compression.type", "zstd"),
            ("message.timestamp.type", "logappendtime"),
            ("min.insync.replicas", "2"),
            ("cleanup.policy", "compacted"),
            ("cleanup.policy", ""),
            ("min.cleanable.dirty.ratio", "1.5"),
            ("unclean.leader.election.enable", "maybe"),
            ("message.downconversion.enable", "true"),
            ("preallocate", "true"),
        ] {
            let e = settings(&[(k, v)]).unwrap_err();
            assert!(e.contains(k), "{e}");
        }
        let e = settings(&[("compression.type", "gzip")]).unwrap_err();
        assert!(e.contains("\"producer\""), "{e}");
    }
}
