//! Kafka error codes for Ferry's errors, in one place, told apart by variant.

use ferry_broker::BrokerError;
use kafka_protocol::ResponseError;

pub fn code(e: &BrokerError) -> i16 {
    use BrokerError::*;
    let r = match e {
        TopicNotFound(_) | PartitionNotFound { .. } => ResponseError::UnknownTopicOrPartition,
        TopicExists(_) => ResponseError::TopicAlreadyExists,
        PartitionLimit { .. } => ResponseError::PolicyViolation,
        InvalidTopicName { .. } => ResponseError::InvalidTopicException,
        InvalidConfig(_) => ResponseError::InvalidConfig,
        InvalidRecord(r) if r.is_crc_mismatch() => ResponseError::CorruptMessage,
        InvalidRecord(_) => ResponseError::InvalidRecord,
        RecordTooLarge { .. } => ResponseError::MessageTooLarge,
        OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        DiskFull(_)
        | Unavailable(_)
        | Storage(_)
        | Io { .. }
        | Corrupt { .. }
        | DataDirLocked { .. } => ResponseError::KafkaStorageError,
        Meta(_) => ResponseError::UnknownServerError,
        OutOfOrderSequence(_) => ResponseError::OutOfOrderSequenceNumber,
        InvalidProducerEpoch(_) => ResponseError::InvalidProducerEpoch,
        OpenFileLimit { .. } => ResponseError::PolicyViolation,
        Transaction(t) => txn_code(*t),
        NotInSharedMode(_) => ResponseError::InvalidRequest,
        KeyRequired { .. } => ResponseError::InvalidRecord,
        // Subscriptions are not reachable over Kafka; these cannot occur there.
        SubscriptionNotFound(_)
        | SubscriptionExists(_)
        | InvalidFilter(_)
        | InvalidTimeout(_)
        | LeaseNotFound { .. }
        | LeaseAlreadyAcked { .. }
        | PushEndpointForbidden(_) => ResponseError::UnknownServerError,
    };
    r.code()
}

fn txn_code(e: ferry_broker::txn::TxnError) -> ResponseError {
    use ferry_broker::txn::TxnError::*;
    match e {
        ProducerFenced => ResponseError::ProducerFenced,
        InvalidProducerIdMapping => ResponseError::InvalidProducerIdMapping,
        InvalidTxnState => ResponseError::InvalidTxnState,
        ConcurrentTransactions => ResponseError::ConcurrentTransactions,
        InvalidTransactionTimeout => ResponseError::InvalidTransactionTimeout,
        TooManyTransactionalIds | TooLarge => ResponseError::PolicyViolation,
        NotCoordinator => ResponseError::NotCoordinator,
        CoordinatorUnavailable => ResponseError::CoordinatorNotAvailable,
    }
}

pub const NONE: i16 = 0;

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_broker::filter::FilterError;
    use ferry_broker::RecordError;
    use ferry_log::BatchError;

    /// Every broker error, one of each kind, with the Kafka code it must answer (a
    /// table: one entry per variant, hence its length).
    fn table() -> Vec<(BrokerError, ResponseError)> {
        use BrokerError::*;
        let io = || std::io::Error::other("disk on fire");
        vec![
            (
                TopicNotFound("t".into()),
                ResponseError::UnknownTopicOrPartition,
            ),
            (
                PartitionNotFound {
                    topic: "t".into(),
                    partition: 3,
                    count: 1,
                },
                ResponseError::UnknownTopicOrPartition,
            ),
            (TopicExists("t".into()), ResponseError::TopicAlreadyExists),
            (
                PartitionLimit {
                    limit: 10,
                    wanted: 11,
                },
                ResponseError::PolicyViolation,
            ),
            (
                InvalidTopicName {
                    name: "..".into(),
                    reason: "bad",
                },
                ResponseError::InvalidTopicException,
            ),
            (InvalidConfig("x".into()), ResponseError::InvalidConfig),
            (
                BatchError::CrcMismatch {
                    stored: 1,
                    computed: 2,
                }
                .into(),
                ResponseError::CorruptMessage,
            ),
            (BatchError::BadMagic(1).into(), ResponseError::InvalidRecord),
            (
                BatchError::BadRecord {
                    index: 0,
                    reason: "CRC in a reason is not a CRC failure",
                }
                .into(),
                ResponseError::InvalidRecord,
            ),
            (
                BatchError::Decompress("broken".into()).into(),
                ResponseError::InvalidRecord,
            ),
            (
                InvalidRecord(RecordError::Refused("CRC".into())),
                ResponseError::InvalidRecord,
            ),
            (
                RecordTooLarge {
                    index: 0,
                    size: 2,
                    max: 1,
                },
                ResponseError::MessageTooLarge,
            ),
            (
                OffsetOutOfRange {
                    partition: 0,
                    requested: 9,
                    earliest: 0,
                    latest: 1,
                },
                ResponseError::OffsetOutOfRange,
            ),
            (DiskFull("full".into()), ResponseError::KafkaStorageError),
            (
                Unavailable("stopped".into()),
                ResponseError::KafkaStorageError,
            ),
            (Storage("task".into()), ResponseError::KafkaStorageError),
            (
                BrokerError::io("writing", io()),
                ResponseError::KafkaStorageError,
            ),
            (
                Corrupt {
                    offset: Some(1),
                    reason: "bad".into(),
                },
                ResponseError::KafkaStorageError,
            ),
            (
                DataDirLocked {
                    path: "d".into(),
                    lock: "l".into(),
                },
                ResponseError::KafkaStorageError,
            ),
            (Meta("m".into()), ResponseError::UnknownServerError),
            (
                OpenFileLimit {
                    asked: 2,
                    open: 9,
                    limit: 10,
                },
                ResponseError::PolicyViolation,
            ),
            (
                OutOfOrderSequence("s".into()),
                ResponseError::OutOfOrderSequenceNumber,
            ),
            (
                InvalidProducerEpoch("e".into()),
                ResponseError::InvalidProducerEpoch,
            ),
            (
                SubscriptionNotFound("s".into()),
                ResponseError::UnknownServerError,
            ),
            (
                SubscriptionExists("s".into()),
                ResponseError::UnknownServerError,
            ),
            (
                InvalidFilter(FilterError {
                    path: "p".into(),
                    message: "m".into(),
                }),
                ResponseError::UnknownServerError,
            ),
            (
                InvalidTimeout("t".into()),
                ResponseError::UnknownServerError,
            ),
            (
                LeaseNotFound {
                    ids: vec!["a".into()],
                    reason: "r".into(),
                },
                ResponseError::UnknownServerError,
            ),
            (
                LeaseAlreadyAcked {
                    ids: vec!["a".into()],
                },
                ResponseError::UnknownServerError,
            ),
            (
                Transaction(ferry_broker::txn::TxnError::ProducerFenced),
                ResponseError::ProducerFenced,
            ),
            (
                Transaction(ferry_broker::txn::TxnError::InvalidTxnState),
                ResponseError::InvalidTxnState,
            ),
            (
                Transaction(ferry_broker::txn::TxnError::NotCoordinator),
                ResponseError::NotCoordinator,
            ),
            (
                Transaction(ferry_broker::txn::TxnError::CoordinatorUnavailable),
                ResponseError::CoordinatorNotAvailable,
            ),
        ]
    }

    #[test]
    fn every_broker_error_has_its_kafka_code() {
        for (e, want) in table() {
            assert_eq!(code(&e), want.code(), "{e:?}");
        }
    }
}
