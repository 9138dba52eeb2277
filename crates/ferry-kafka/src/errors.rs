//! Kafka error codes for Ferry's errors, in one place.

use ferry_broker::BrokerError;
use kafka_protocol::ResponseError;

pub fn code(e: &BrokerError) -> i16 {
    use BrokerError::*;
    let r = match e {
        TopicNotFound(_) | PartitionNotFound { .. } => ResponseError::UnknownTopicOrPartition,
        TopicExists(_) => ResponseError::TopicAlreadyExists,
        InvalidTopicName { .. } => ResponseError::InvalidTopicException,
        InvalidConfig(_) => ResponseError::InvalidConfig,
        InvalidRecord(m) if m.contains("CRC") => ResponseError::CorruptMessage,
        InvalidRecord(_) => ResponseError::InvalidRecord,
        RecordTooLarge { .. } => ResponseError::MessageTooLarge,
        OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        DiskFull(_) | Unavailable(_) | Storage(_) | Corrupt { .. } | DataDirLocked { .. } => {
            ResponseError::KafkaStorageError
        }
        Meta(_) => ResponseError::UnknownServerError,
        OutOfOrderSequence(_) => ResponseError::OutOfOrderSequenceNumber,
        InvalidProducerEpoch(_) => ResponseError::InvalidProducerEpoch,
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

pub const NONE: i16 = 0;
