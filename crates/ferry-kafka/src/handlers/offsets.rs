//! ListOffsets: earliest (-2), latest (-1), or the first offset at or after a time.

use super::Ctx;
use crate::errors;
use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;

pub async fn list_offsets(ctx: &Ctx, req: ListOffsetsRequest) -> ListOffsetsResponse {
    let mut topics = Vec::new();
    for t in req.topics {
        let name = t.name.0.to_string();
        let mut partitions = Vec::new();
        for p in t.partitions {
            let answer = ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index).with_timestamp(-1);
            let result = if p.partition_index < 0 {
                Err(ferry_broker::BrokerError::PartitionNotFound { topic: name.clone(), partition: 0, count: 0 })
            } else {
                let pid = p.partition_index as u32;
                match p.timestamp {
                    LATEST | MAX_TIMESTAMP => ctx.broker.bounds(&name, pid).map(|(_, l)| l),
                    EARLIEST => ctx.broker.bounds(&name, pid).map(|(e, _)| e),
                    ts => ctx.broker.offset_for_timestamp(&name, pid, ts).await,
                }
            };
            partitions.push(match result {
                Ok(offset) => answer.with_offset(offset as i64),
                Err(e) => answer.with_error_code(errors::code(&e)).with_offset(-1),
            });
        }
        topics.push(ListOffsetsTopicResponse::default().with_name(t.name).with_partitions(partitions));
    }
    ListOffsetsResponse::default().with_topics(topics)
}
