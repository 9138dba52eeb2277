//! ListOffsets: earliest (-2), latest (-1; the last stable offset for `read_committed`),
//! or the first offset at or after a time.

use super::{Ctx, Session};
use crate::errors;
use ferry_auth::{Operation, ResourceType};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::ResponseError;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
/// `isolation_level` of a `read_committed` reader: latest is the last stable offset.
const READ_COMMITTED: i8 = 1;

pub async fn list_offsets(
    ctx: &Ctx,
    req: ListOffsetsRequest,
    session: &Session,
) -> ListOffsetsResponse {
    let mut topics = Vec::new();
    for t in req.topics {
        let name = t.name.0.to_string();
        let allowed = session.may(&ctx.auth, Operation::Describe, ResourceType::Topic, &name);
        let mut partitions = Vec::new();
        for p in t.partitions {
            let answer = ListOffsetsPartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_timestamp(-1);
            if !allowed {
                partitions.push(
                    answer
                        .with_error_code(ResponseError::TopicAuthorizationFailed.code())
                        .with_offset(-1),
                );
                continue;
            }
            let result = if p.partition_index < 0 {
                Err(ferry_broker::BrokerError::PartitionNotFound {
                    topic: name.clone(),
                    partition: 0,
                    count: 0,
                })
            } else {
                let pid = p.partition_index as u32;
                match p.timestamp {
                    LATEST if req.isolation_level == READ_COMMITTED => {
                        ctx.broker.last_stable(&name, pid).map(|l| (l as i64, -1))
                    }
                    LATEST => ctx.broker.bounds(&name, pid).map(|(_, l)| (l as i64, -1)),
                    EARLIEST => ctx.broker.bounds(&name, pid).map(|(e, _)| (e as i64, -1)),
                    // As Kafka: the first record at or after the time, or -1/-1 if none.
                    ts if ts >= 0 => ctx
                        .broker
                        .find_by_time(&name, pid, ts)
                        .await
                        .map(|f| f.first.map_or((-1, -1), |(o, t)| (o as i64, t))),
                    other => Err(ferry_broker::BrokerError::refused(format!(
                        "timestamp {other} is not supported"
                    ))),
                }
            };
            partitions.push(match result {
                Ok((offset, timestamp)) => answer.with_offset(offset).with_timestamp(timestamp),
                Err(e) => answer.with_error_code(errors::code(&e)).with_offset(-1),
            });
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}
