//! Produce: batches go to the log as they arrived (CRC checked, codec kept); the answer
//! waits for the topic's durability policy unless acks=0, which gets no answer at all.

use super::Ctx;
use crate::errors;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::ResponseError;

pub async fn produce(ctx: &Ctx, req: ProduceRequest) -> Option<ProduceResponse> {
    // acks=0 gets no answer, but the append still completes its durability policy:
    // under "always" records become readable only once synced.
    let answer = req.acks != 0;
    let bad_acks = !matches!(req.acks, -1..=1);
    let transactional = req.transactional_id.is_some();
    // Partitions are appended concurrently so that their syncs overlap.
    let mut pending = Vec::new();
    for topic in req.topic_data {
        let name = topic.name.0.to_string();
        let mut parts = Vec::new();
        for p in topic.partition_data {
            let (broker, name, index) = (ctx.broker.clone(), name.clone(), p.index);
            let records = p.records.unwrap_or_default();
            parts.push((
                index,
                tokio::spawn(async move {
                    if bad_acks {
                        return Err(ResponseError::InvalidRequiredAcks.code());
                    }
                    if transactional {
                        return Err(ResponseError::TransactionalIdAuthorizationFailed.code());
                    }
                    if index < 0 {
                        return Err(ResponseError::UnknownTopicOrPartition.code());
                    }
                    broker.append_batches(&name, index as u32, records, true).await.map_err(|e| errors::code(&e))
                }),
            ));
        }
        pending.push((topic.name, parts));
    }
    let mut responses = Vec::new();
    for (name, parts) in pending {
        let mut partition_responses = Vec::new();
        for (index, task) in parts {
            let result = task.await.unwrap_or(Err(ResponseError::UnknownServerError.code()));
            let (error_code, base_offset) = match result {
                Ok(base) => (errors::NONE, base as i64),
                Err(code) => (code, -1),
            };
            let log_start = ctx.broker.bounds(&name.0, index.max(0) as u32).map_or(-1, |(e, _)| e as i64);
            partition_responses.push(
                PartitionProduceResponse::default()
                    .with_index(index)
                    .with_error_code(error_code)
                    .with_base_offset(base_offset)
                    .with_log_append_time_ms(-1)
                    .with_log_start_offset(log_start),
            );
        }
        responses.push(TopicProduceResponse::default().with_name(name).with_partition_responses(partition_responses));
    }
    if !answer {
        return None;
    }
    Some(ProduceResponse::default().with_responses(responses))
}
