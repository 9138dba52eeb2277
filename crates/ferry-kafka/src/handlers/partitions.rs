//! Partition-level admin APIs, each answered as a single-node Kafka cluster would:
//! DeleteRecords moves a partition's log start offset; DescribeLogDirs shows the data
//! folder as the one log dir; DescribeProducers lists a partition's idempotent producers;
//! OffsetForLeaderEpoch answers for the one leader epoch; ElectLeaders finds nothing to
//! elect.

use super::{Ctx, Session};
use crate::errors;
use ferry_auth::{Operation, ResourceType};
use ferry_broker::BrokerError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{
    DeleteRecordsRequest, DeleteRecordsResponse, DescribeLogDirsRequest, DescribeLogDirsResponse,
    DescribeProducersRequest, DescribeProducersResponse, ElectLeadersRequest, ElectLeadersResponse,
    OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, ProducerId, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

/// DeleteRecords' offset meaning "up to the high watermark".
const HIGH_WATERMARK: i64 = -1;

/// The one leader epoch of every partition (Metadata reports it too).
const LEADER_EPOCH: i32 = ferry_log::LEADER_EPOCH;

/// "No epoch" in OffsetForLeaderEpoch's `current_leader_epoch`: nothing to check.
const NO_EPOCH: i32 = -1;

/// A partition index from the wire, or the error a missing partition gets.
fn partition_of(topic: &str, index: i32) -> Result<u32, BrokerError> {
    u32::try_from(index).map_err(|_| BrokerError::PartitionNotFound {
        topic: topic.to_string(),
        partition: 0,
        count: 0,
    })
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

pub async fn delete_records(
    ctx: &Ctx,
    req: DeleteRecordsRequest,
    session: &Session,
) -> DeleteRecordsResponse {
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.0.to_string();
        let allowed = session.may(&ctx.auth, Operation::Delete, ResourceType::Topic, &name);
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let answer = DeleteRecordsPartitionResult::default()
                .with_partition_index(p.partition_index)
                .with_low_watermark(-1);
            if !allowed {
                partitions
                    .push(answer.with_error_code(ResponseError::TopicAuthorizationFailed.code()));
                continue;
            }
            let result = match (partition_of(&name, p.partition_index), p.offset) {
                (Err(e), _) => Err(e),
                (Ok(pid), HIGH_WATERMARK) => ctx.broker.delete_records(&name, pid, None).await,
                (Ok(pid), o) => match u64::try_from(o) {
                    Ok(o) => ctx.broker.delete_records(&name, pid, Some(o)).await,
                    // Kafka refuses negative offsets other than -1 the same way.
                    Err(_) => ctx
                        .broker
                        .bounds(&name, pid)
                        .and_then(|(earliest, latest)| {
                            Err(BrokerError::OffsetOutOfRange {
                                partition: pid,
                                requested: 0,
                                earliest,
                                latest,
                            })
                        }),
                },
            };
            partitions.push(match result {
                Ok(low) => answer.with_low_watermark(low as i64),
                Err(e) => answer.with_error_code(errors::code(&e)),
            });
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    DeleteRecordsResponse::default().with_topics(topics)
}

pub fn describe_log_dirs(
    ctx: &Ctx,
    req: DescribeLogDirsRequest,
    version: i16,
    session: &Session,
) -> DescribeLogDirsResponse {
    if !session.may_on_cluster(&ctx.auth, Operation::Describe) {
        // Before v3 the answer has no error code: no log dirs, as Kafka answers.
        let code = if version >= 3 {
            ResponseError::ClusterAuthorizationFailed.code()
        } else {
            errors::NONE
        };
        return DescribeLogDirsResponse::default().with_error_code(code);
    }
    let dir = ctx.broker.data_dir();
    // Each topic once, with the partitions asked for (all of them when `topics` is null).
    let wanted: Option<std::collections::BTreeMap<String, std::collections::BTreeSet<i32>>> =
        req.topics.map(|ts| {
            let mut m =
                std::collections::BTreeMap::<String, std::collections::BTreeSet<i32>>::new();
            for t in ts {
                m.entry(t.topic.0.to_string())
                    .or_default()
                    .extend(t.partitions);
            }
            m
        });
    let mut topics = Vec::new();
    for info in ctx.broker.list_topics() {
        let name = info.config.name.as_str();
        let asked = match &wanted {
            None => None,
            Some(m) => match m.get(name) {
                None => continue,
                Some(set) => Some(set),
            },
        };
        let partitions: Vec<DescribeLogDirsPartition> = info
            .partitions
            .iter()
            .filter(|p| asked.is_none_or(|set| set.contains(&(p.partition as i32))))
            .map(|p| {
                DescribeLogDirsPartition::default()
                    .with_partition_index(p.partition as i32)
                    .with_partition_size(i64::try_from(p.size_bytes).unwrap_or(i64::MAX))
                    .with_offset_lag(0)
                    .with_is_future_key(false)
            })
            .collect();
        if partitions.is_empty() {
            continue;
        }
        topics.push(
            DescribeLogDirsTopic::default()
                .with_name(topic_name(name))
                .with_partitions(partitions),
        );
    }
    let (total, usable) = match ferry_broker::fsutil::disk_space(dir) {
        Ok(d) => (
            i64::try_from(d.total_bytes).unwrap_or(i64::MAX),
            i64::try_from(d.usable_bytes).unwrap_or(i64::MAX),
        ),
        Err(e) => {
            tracing::debug!(dir = %dir.display(), error = %e, "Could not measure the data folder's disk.");
            (-1, -1)
        }
    };
    let log_dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let result = DescribeLogDirsResult::default()
        .with_log_dir(StrBytes::from_string(log_dir.display().to_string()))
        .with_topics(topics)
        .with_total_bytes(total)
        .with_usable_bytes(usable);
    DescribeLogDirsResponse::default().with_results(vec![result])
}

pub async fn describe_producers(
    ctx: &Ctx,
    req: DescribeProducersRequest,
    session: &Session,
) -> DescribeProducersResponse {
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.0.to_string();
        let allowed = session.may(&ctx.auth, Operation::Read, ResourceType::Topic, &name);
        let mut partitions = Vec::with_capacity(t.partition_indexes.len());
        for index in t.partition_indexes {
            let answer = PartitionResponse::default().with_partition_index(index);
            if !allowed {
                partitions
                    .push(answer.with_error_code(ResponseError::TopicAuthorizationFailed.code()));
                continue;
            }
            let found = match partition_of(&name, index) {
                Ok(pid) => ctx.broker.describe_producers(&name, pid).await,
                Err(e) => Err(e),
            };
            partitions.push(match found {
                Ok((states, open)) => answer.with_active_producers(
                    states
                        .into_iter()
                        .map(|s| {
                            // A producer with a transaction open here: where it began, and
                            // the coordinator's epoch (always 0 on one node).
                            let txn_start = open
                                .iter()
                                .find(|(pid, _)| *pid == s.producer_id)
                                .map(|(_, first)| *first as i64);
                            ProducerState::default()
                                .with_producer_id(ProducerId(s.producer_id))
                                .with_producer_epoch(i32::from(s.epoch))
                                .with_last_sequence(s.last_sequence)
                                .with_last_timestamp(s.last_timestamp)
                                .with_coordinator_epoch(if txn_start.is_some() { 0 } else { -1 })
                                .with_current_txn_start_offset(txn_start.unwrap_or(-1))
                        })
                        .collect(),
                ),
                Err(e) => answer
                    .with_error_code(errors::code(&e))
                    .with_error_message(Some(StrBytes::from_string(e.to_string()))),
            });
        }
        topics.push(
            TopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    DescribeProducersResponse::default().with_topics(topics)
}

/// What OffsetForLeaderEpoch answers for one partition whose log holds `start..end`
/// (`end` one past the last readable offset): the error code, the epoch and its end
/// offset.
fn epoch_end(
    current_leader_epoch: i32,
    leader_epoch: i32,
    start: u64,
    end: u64,
) -> (i16, i32, i64) {
    // The client's idea of the current epoch, when it sends one, must be ours.
    if current_leader_epoch != NO_EPOCH {
        if current_leader_epoch > LEADER_EPOCH {
            return (ResponseError::UnknownLeaderEpoch.code(), -1, -1);
        }
        if current_leader_epoch < LEADER_EPOCH {
            return (ResponseError::FencedLeaderEpoch.code(), -1, -1);
        }
    }
    if leader_epoch == LEADER_EPOCH {
        (
            errors::NONE,
            LEADER_EPOCH,
            i64::try_from(end).unwrap_or(i64::MAX),
        )
    } else if leader_epoch < NO_EPOCH {
        // An epoch older than any the log has: it ended where the first known one began.
        (
            errors::NONE,
            leader_epoch,
            i64::try_from(start).unwrap_or(i64::MAX),
        )
    } else {
        // No epoch (-1) or one newer than the log has: undefined, as Kafka answers.
        (errors::NONE, -1, -1)
    }
}

pub fn offset_for_leader_epoch(
    ctx: &Ctx,
    req: OffsetForLeaderEpochRequest,
    session: &Session,
) -> OffsetForLeaderEpochResponse {
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.topic.0.to_string();
        let allowed = session.may(&ctx.auth, Operation::Describe, ResourceType::Topic, &name);
        let partitions = t
            .partitions
            .into_iter()
            .map(|p| {
                let answer = EpochEndOffset::default()
                    .with_partition(p.partition)
                    .with_leader_epoch(-1)
                    .with_end_offset(-1);
                if !allowed {
                    return answer.with_error_code(ResponseError::TopicAuthorizationFailed.code());
                }
                match partition_of(&name, p.partition).and_then(|pid| ctx.broker.bounds(&name, pid))
                {
                    Ok((earliest, latest)) => {
                        let (code, epoch, end) =
                            epoch_end(p.current_leader_epoch, p.leader_epoch, earliest, latest);
                        answer
                            .with_error_code(code)
                            .with_leader_epoch(epoch)
                            .with_end_offset(end)
                    }
                    Err(e) => answer.with_error_code(errors::code(&e)),
                }
            })
            .collect();
        topics.push(
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(partitions),
        );
    }
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}

/// ElectLeaders' election types: preferred (0) and unclean (1).
const ELECTION_TYPES: [i8; 2] = [0, 1];

pub fn elect_leaders(
    ctx: &Ctx,
    req: ElectLeadersRequest,
    version: i16,
    session: &Session,
) -> ElectLeadersResponse {
    let allowed = session.may_on_cluster(&ctx.auth, Operation::Alter);
    let top = if !allowed {
        ResponseError::ClusterAuthorizationFailed.code()
    } else if !ELECTION_TYPES.contains(&req.election_type) {
        ResponseError::InvalidRequest.code()
    } else {
        errors::NONE
    };
    // v0 has no top-level error code: each partition carries it.
    let top_level = if version >= 1 { top } else { errors::NONE };
    // Null asks for every partition; like Kafka, only partitions an election was tried
    // for are answered, and on one node there are none.
    let Some(asked) = req.topic_partitions else {
        return ElectLeadersResponse::default().with_error_code(top_level);
    };
    let results = asked
        .into_iter()
        .map(|t| {
            let name = t.topic.0.to_string();
            let partition_result = t
                .partitions
                .into_iter()
                .map(|index| {
                    let (code, message) = if top != errors::NONE {
                        (top, None)
                    } else {
                        match partition_of(&name, index).and_then(|pid| {
                            ctx.broker
                                .topic(&name)
                                .and_then(|topic| topic.partition(pid))
                        }) {
                            Ok(_) => (
                                ResponseError::ElectionNotNeeded.code(),
                                Some("this node leads every partition: nothing to elect"),
                            ),
                            Err(e) => (errors::code(&e), None),
                        }
                    };
                    PartitionResult::default()
                        .with_partition_id(index)
                        .with_error_code(code)
                        .with_error_message(message.map(StrBytes::from_static_str))
                })
                .collect();
            ReplicaElectionResult::default()
                .with_topic(t.topic)
                .with_partition_result(partition_result)
        })
        .collect();
    ElectLeadersResponse::default()
        .with_error_code(top_level)
        .with_replica_election_results(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_epoch_ends_at_the_end_of_the_log() {
        assert_eq!(epoch_end(0, 0, 5, 42), (0, 0, 42));
        assert_eq!(epoch_end(NO_EPOCH, 0, 5, 42), (0, 0, 42));
    }

    #[test]
    fn a_future_epoch_is_unknown_and_a_past_one_fenced() {
        let unknown = ResponseError::UnknownLeaderEpoch.code();
        let fenced = ResponseError::FencedLeaderEpoch.code();
        assert_eq!(epoch_end(3, 0, 5, 42), (unknown, -1, -1));
        assert_eq!(epoch_end(-5, 0, 5, 42), (fenced, -1, -1));
    }

    #[test]
    fn an_epoch_the_log_never_had_is_answered_undefined_or_before_the_first() {
        assert_eq!(epoch_end(0, 7, 5, 42), (0, -1, -1));
        assert_eq!(epoch_end(0, NO_EPOCH, 5, 42), (0, -1, -1));
        assert_eq!(epoch_end(0, -9, 5, 42), (0, -9, 5));
    }
}
