//! The transaction APIs: InitProducerId with a transactional id, AddPartitionsToTxn
//! (v0–3), AddOffsetsToTxn, TxnOffsetCommit, EndTxn, ListTransactions and
//! DescribeTransactions. The state machine and the markers are the broker's
//! (`ferry_broker::txn`); this file maps requests and errors.
//!
//! ACLs as in Kafka: Write on the transactional id for the producer's requests, Write on
//! each topic added, Read on the group for offsets, Describe on the transactional id to
//! list or describe it.

use super::{Ctx, Session};
use crate::errors;
use ferry_auth::{Operation, ResourceType};
use ferry_broker::txn::{PendingOffset, TopicPartition, TxnStatus};
use ferry_broker::BrokerError;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::describe_transactions_response::{
    TopicData, TransactionState as DescribedState,
};
use kafka_protocol::messages::list_transactions_response::TransactionState as ListedState;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, DescribeTransactionsRequest, DescribeTransactionsResponse,
    EndTxnRequest, EndTxnResponse, InitProducerIdRequest, InitProducerIdResponse,
    ListTransactionsRequest, ListTransactionsResponse, ProducerId, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

/// The longest transactional id taken, in bytes.
pub const TRANSACTIONAL_ID_BYTES_MAX: usize = 1024;
/// The most partitions one AddPartitionsToTxn may name.
const PARTITIONS_PER_REQUEST_MAX: usize = 10_000;
/// The most offsets one TxnOffsetCommit may carry.
const OFFSETS_PER_REQUEST_MAX: usize = 10_000;
/// The longest offset metadata taken, as for OffsetCommit.
const OFFSET_METADATA_BYTES_MAX: usize = 4096;

/// The Kafka code for a broker error of a transaction request.
fn code(e: &BrokerError) -> i16 {
    errors::code(e)
}

fn may_write_txn(ctx: &Ctx, session: &Session, txn_id: &str) -> bool {
    session.may(
        &ctx.auth,
        Operation::Write,
        ResourceType::TransactionalId,
        txn_id,
    )
}

fn valid_txn_id(txn_id: &str) -> bool {
    !txn_id.is_empty() && txn_id.len() <= TRANSACTIONAL_ID_BYTES_MAX
}

/// InitProducerId for a transactional producer.
pub async fn init_producer_id(
    ctx: &Ctx,
    req: &InitProducerIdRequest,
    txn_id: &str,
    session: &Session,
) -> InitProducerIdResponse {
    let fail = |code: i16| {
        InitProducerIdResponse::default()
            .with_error_code(code)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    if !may_write_txn(ctx, session, txn_id) {
        return fail(ResponseError::TransactionalIdAuthorizationFailed.code());
    }
    if !valid_txn_id(txn_id) {
        return fail(ResponseError::InvalidRequest.code());
    }
    let expected = (req.producer_id.0 >= 0 && req.producer_epoch >= 0)
        .then_some((req.producer_id.0, req.producer_epoch));
    match ctx
        .broker
        .init_transactional_producer(txn_id, expected, req.transaction_timeout_ms)
        .await
    {
        Ok((pid, epoch)) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch),
        Err(e) => {
            tracing::debug!(transactional_id = %txn_id, error = %e, "InitProducerId refused.");
            fail(code(&e))
        }
    }
}

pub async fn add_partitions_to_txn(
    ctx: &Ctx,
    req: AddPartitionsToTxnRequest,
    session: &Session,
) -> AddPartitionsToTxnResponse {
    let txn_id = req.v3_and_below_transactional_id.0.to_string();
    let count: usize = req
        .v3_and_below_topics
        .iter()
        .map(|t| t.partitions.len())
        .sum();
    // Every partition gets the same answer unless one alone is at fault.
    let answer = |per: &dyn Fn(&str, i32) -> i16| {
        req.v3_and_below_topics
            .iter()
            .map(|t| {
                AddPartitionsToTxnTopicResult::default()
                    .with_name(t.name.clone())
                    .with_results_by_partition(
                        t.partitions
                            .iter()
                            .map(|p| {
                                AddPartitionsToTxnPartitionResult::default()
                                    .with_partition_index(*p)
                                    .with_partition_error_code(per(&t.name.0, *p))
                            })
                            .collect(),
                    )
            })
            .collect::<Vec<_>>()
    };
    let whole = |c: i16| {
        AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(answer(&|_, _| c))
    };
    if !may_write_txn(ctx, session, &txn_id) {
        return whole(ResponseError::TransactionalIdAuthorizationFailed.code());
    }
    if !valid_txn_id(&txn_id) || count > PARTITIONS_PER_REQUEST_MAX {
        return whole(ResponseError::InvalidRequest.code());
    }
    // Partitions refused alone: no Write on the topic, or no such partition.
    let refusal = |topic: &str, p: i32| -> Option<i16> {
        if !session.may(&ctx.auth, Operation::Write, ResourceType::Topic, topic) {
            return Some(ResponseError::TopicAuthorizationFailed.code());
        }
        let exists = u32::try_from(p)
            .ok()
            .is_some_and(|p| ctx.broker.check_partition(topic, p).is_ok());
        (!exists).then_some(ResponseError::UnknownTopicOrPartition.code())
    };
    let any_refused = req.v3_and_below_topics.iter().any(|t| {
        t.partitions
            .iter()
            .any(|p| refusal(&t.name.0, *p).is_some())
    });
    if any_refused {
        let not_attempted = ResponseError::OperationNotAttempted.code();
        return AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(answer(
            &|t, p| refusal(t, p).unwrap_or(not_attempted),
        ));
    }
    let partitions: Vec<TopicPartition> = req
        .v3_and_below_topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().filter_map(|p| {
                u32::try_from(*p).ok().map(|partition| TopicPartition {
                    topic: t.name.0.to_string(),
                    partition,
                })
            })
        })
        .collect();
    let result = ctx
        .broker
        .add_partitions_to_txn(
            &txn_id,
            req.v3_and_below_producer_id.0,
            req.v3_and_below_producer_epoch,
            &partitions,
        )
        .await;
    whole(match result {
        Ok(()) => errors::NONE,
        Err(e) => code(&e),
    })
}

pub async fn add_offsets_to_txn(
    ctx: &Ctx,
    req: AddOffsetsToTxnRequest,
    session: &Session,
) -> AddOffsetsToTxnResponse {
    let txn_id = req.transactional_id.0.as_str();
    let group = req.group_id.0.as_str();
    let error = if !may_write_txn(ctx, session, txn_id) {
        ResponseError::TransactionalIdAuthorizationFailed.code()
    } else if !session.may(&ctx.auth, Operation::Read, ResourceType::Group, group) {
        ResponseError::GroupAuthorizationFailed.code()
    } else if !valid_txn_id(txn_id) || group.is_empty() {
        ResponseError::InvalidRequest.code()
    } else {
        match ctx
            .broker
            .add_offsets_to_txn(txn_id, req.producer_id.0, req.producer_epoch, group)
            .await
        {
            Ok(()) => errors::NONE,
            Err(e) => code(&e),
        }
    };
    AddOffsetsToTxnResponse::default().with_error_code(error)
}

pub async fn txn_offset_commit(
    ctx: &Ctx,
    req: kafka_protocol::messages::TxnOffsetCommitRequest,
    session: &Session,
) -> kafka_protocol::messages::TxnOffsetCommitResponse {
    let txn_id = req.transactional_id.0.to_string();
    let group = req.group_id.0.to_string();
    let count: usize = req.topics.iter().map(|t| t.partitions.len()).sum();
    let bad_offset = req.topics.iter().any(|t| {
        t.partitions.iter().any(|p| {
            p.partition_index < 0
                || p.committed_offset < 0
                || p.committed_metadata
                    .as_ref()
                    .is_some_and(|m| m.len() > OFFSET_METADATA_BYTES_MAX)
        })
    });
    let error = if !may_write_txn(ctx, session, &txn_id) {
        ResponseError::TransactionalIdAuthorizationFailed.code()
    } else if !session.may(&ctx.auth, Operation::Read, ResourceType::Group, &group) {
        ResponseError::GroupAuthorizationFailed.code()
    } else if !valid_txn_id(&txn_id) || count > OFFSETS_PER_REQUEST_MAX || bad_offset {
        ResponseError::InvalidRequest.code()
    } else if let Some(code) = super::groups::not_here(ctx, &group).await {
        // In shared mode the group's coordinator takes its offsets.
        code
    } else if let Err(e) = member_check(ctx, &req, &group).await {
        super::groups::code(&e)
    } else {
        let offsets = req
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(|p| PendingOffset {
                    topic: t.name.0.to_string(),
                    partition: p.partition_index as u32,
                    offset: p.committed_offset,
                    metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                    leader_epoch: (p.committed_leader_epoch >= 0)
                        .then_some(p.committed_leader_epoch),
                })
            })
            .collect();
        match ctx
            .broker
            .txn_offset_commit(
                &txn_id,
                req.producer_id.0,
                req.producer_epoch,
                &group,
                offsets,
            )
            .await
        {
            Ok(()) => errors::NONE,
            Err(e) => code(&e),
        }
    };
    kafka_protocol::messages::TxnOffsetCommitResponse::default().with_topics(
        req.topics
            .iter()
            .map(|t| {
                TxnOffsetCommitResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                TxnOffsetCommitResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(error)
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}

/// TxnOffsetCommit v3+ names the member and generation: checked as OffsetCommit checks
/// them (older versions carry none: the empty member id and generation -1 pass only
/// for a group without members, or are not checked when absent).
async fn member_check(
    ctx: &Ctx,
    req: &kafka_protocol::messages::TxnOffsetCommitRequest,
    group: &str,
) -> ferry_broker::groups::GroupResult<()> {
    let named = !req.member_id.is_empty() || req.generation_id >= 0;
    if !named {
        return Ok(());
    }
    ctx.broker
        .groups
        .check_member(
            group,
            &req.member_id,
            req.group_instance_id.as_deref(),
            req.generation_id,
        )
        .await
}

pub async fn end_txn(ctx: &Ctx, req: EndTxnRequest, session: &Session) -> EndTxnResponse {
    let txn_id = req.transactional_id.0.as_str();
    let error = if !may_write_txn(ctx, session, txn_id) {
        ResponseError::TransactionalIdAuthorizationFailed.code()
    } else if !valid_txn_id(txn_id) {
        ResponseError::InvalidRequest.code()
    } else {
        match ctx
            .broker
            .end_txn(txn_id, req.producer_id.0, req.producer_epoch, req.committed)
            .await
        {
            Ok(()) => errors::NONE,
            Err(e) => {
                tracing::debug!(transactional_id = %txn_id, error = %e, "EndTxn refused.");
                code(&e)
            }
        }
    };
    EndTxnResponse::default()
        .with_error_code(error)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1)
}

pub async fn list_transactions(
    ctx: &Ctx,
    req: ListTransactionsRequest,
    session: &Session,
) -> ListTransactionsResponse {
    let known = [
        TxnStatus::Empty,
        TxnStatus::Ongoing,
        TxnStatus::PrepareCommit,
        TxnStatus::PrepareAbort,
        TxnStatus::CompleteCommit,
        TxnStatus::CompleteAbort,
    ];
    let unknown: Vec<StrBytes> = req
        .state_filters
        .iter()
        .filter(|f| !known.iter().any(|k| k.kafka_name() == f.as_str()))
        .cloned()
        .collect();
    let now = ferry_broker::now_ms() as i64;
    let all = match ctx.broker.listed_transactions().await {
        Ok(all) => all,
        Err(e) => {
            return ListTransactionsResponse::default()
                .with_error_code(code(&e))
                .with_unknown_state_filters(unknown)
        }
    };
    let states = all
        .into_iter()
        .filter(|(id, m)| {
            (req.state_filters.is_empty()
                || req
                    .state_filters
                    .iter()
                    .any(|f| f.as_str() == m.status.kafka_name()))
                && (req.producer_id_filters.is_empty()
                    || req.producer_id_filters.iter().any(|p| p.0 == m.producer_id))
                && (req.duration_filter < 0
                    || (m.status == TxnStatus::Ongoing
                        && now - m.started_ms as i64 >= req.duration_filter))
                && session.may(
                    &ctx.auth,
                    Operation::Describe,
                    ResourceType::TransactionalId,
                    id,
                )
        })
        .map(|(id, m)| {
            ListedState::default()
                .with_transactional_id(TransactionalId(StrBytes::from_string(id)))
                .with_producer_id(ProducerId(m.producer_id))
                .with_transaction_state(StrBytes::from_static_str(m.status.kafka_name()))
        })
        .collect();
    ListTransactionsResponse::default()
        .with_unknown_state_filters(unknown)
        .with_transaction_states(states)
}

pub async fn describe_transactions(
    ctx: &Ctx,
    req: DescribeTransactionsRequest,
    session: &Session,
) -> DescribeTransactionsResponse {
    let mut states = Vec::with_capacity(req.transactional_ids.len());
    for id in req.transactional_ids {
        let found = ctx.broker.transaction_state(&id.0).await;
        states.push((|| {
            let base = DescribedState::default()
                .with_transactional_id(id.clone())
                .with_transaction_state(StrBytes::from_static_str(""))
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
                .with_transaction_start_time_ms(-1);
            if !session.may(
                &ctx.auth,
                Operation::Describe,
                ResourceType::TransactionalId,
                &id.0,
            ) {
                return base
                    .with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code());
            }
            let m = match found {
                Ok(Some(m)) => m,
                Ok(None) => {
                    return base.with_error_code(ResponseError::TransactionalIdNotFound.code())
                }
                Err(e) => return base.with_error_code(code(&e)),
            };
            let mut topics: Vec<TopicData> = Vec::new();
            for tp in &m.partitions {
                match topics.last_mut() {
                    Some(t) if t.topic.0.as_str() == tp.topic => {
                        t.partitions.push(tp.partition as i32)
                    }
                    _ => topics.push(
                        TopicData::default()
                            .with_topic(StrBytes::from_string(tp.topic.clone()).into())
                            .with_partitions(vec![tp.partition as i32]),
                    ),
                }
            }
            base.with_transaction_state(StrBytes::from_static_str(m.status.kafka_name()))
                .with_transaction_timeout_ms(m.timeout_ms)
                .with_transaction_start_time_ms(if m.status == TxnStatus::Ongoing {
                    m.started_ms as i64
                } else {
                    -1
                })
                .with_producer_id(ProducerId(m.producer_id))
                .with_producer_epoch(m.epoch)
                .with_topics(topics)
        })());
    }
    DescribeTransactionsResponse::default().with_transaction_states(states)
}
