//! The broker's operating errors. Each front end maps these to its own codes in one
//! place (HTTP problem types, Kafka error codes).

use ferry_log::LogError;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("topic '{0}' does not exist")]
    TopicNotFound(String),
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    #[error("topic '{topic}' has no partition {partition} (it has {count})")]
    PartitionNotFound {
        topic: String,
        partition: u32,
        count: u32,
    },
    #[error("invalid topic name '{name}': {reason}")]
    InvalidTopicName { name: String, reason: &'static str },
    #[error("invalid setting: {0}")]
    InvalidConfig(String),
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    #[error("record {index} is {size} bytes, larger than the topic's max_record_bytes of {max}")]
    RecordTooLarge {
        index: usize,
        size: usize,
        max: usize,
    },
    #[error("offset {requested} is out of range for partition {partition}: earliest is {earliest}, latest is {latest}")]
    OffsetOutOfRange {
        partition: u32,
        requested: u64,
        earliest: u64,
        latest: u64,
    },
    #[error("{0}")]
    DiskFull(String),
    #[error("corrupt data{}: {reason}", offset.map(|o| format!(" at offset {o}")).unwrap_or_default())]
    Corrupt { offset: Option<u64>, reason: String },
    #[error("{0}")]
    Unavailable(String),
    #[error("storage error: {0}")]
    Storage(String),
    #[error("data folder {path} is in use by another Ferry process (lock file {lock}); stop it or choose another --data-dir")]
    DataDirLocked { path: String, lock: String },
    #[error("metadata store error: {0}")]
    Meta(String),
    #[error("{0}")]
    OutOfOrderSequence(String),
    #[error("{0}")]
    InvalidProducerEpoch(String),
    #[error("subscription '{0}' does not exist")]
    SubscriptionNotFound(String),
    #[error("subscription '{0}' already exists")]
    SubscriptionExists(String),
    #[error(transparent)]
    InvalidFilter(#[from] crate::filter::FilterError),
    #[error("{0}")]
    InvalidTimeout(String),
    #[error("{reason}: {}", ids.join(", "))]
    LeaseNotFound { ids: Vec<String>, reason: String },
    #[error("already acknowledged: {}", ids.join(", "))]
    LeaseAlreadyAcked { ids: Vec<String> },
    /// A push endpoint the address guard refuses (a private or special address).
    #[error("{0}")]
    PushEndpointForbidden(String),
}

impl BrokerError {
    pub(crate) fn from_log(partition: u32, e: LogError) -> Self {
        match e {
            LogError::OffsetOutOfRange {
                requested,
                earliest,
                latest,
            } => BrokerError::OffsetOutOfRange {
                partition,
                requested,
                earliest,
                latest,
            },
            LogError::DiskFull { .. } => BrokerError::DiskFull(e.to_string()),
            LogError::BatchTooLarge { size, max } => BrokerError::RecordTooLarge {
                index: 0,
                size,
                max,
            },
            LogError::InvalidBatch(b) => BrokerError::InvalidRecord(b.to_string()),
            LogError::Stopped(_) | LogError::Closed => BrokerError::Unavailable(e.to_string()),
            LogError::Corrupt { .. } => BrokerError::Corrupt {
                offset: None,
                reason: e.to_string(),
            },
            LogError::Io { .. } => BrokerError::Storage(e.to_string()),
            LogError::OutOfOrderSequence { .. } => BrokerError::OutOfOrderSequence(e.to_string()),
            LogError::InvalidProducerEpoch { .. } => {
                BrokerError::InvalidProducerEpoch(e.to_string())
            }
        }
    }
}

pub type Result<T, E = BrokerError> = std::result::Result<T, E>;
