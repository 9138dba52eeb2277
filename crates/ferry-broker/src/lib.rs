//! Ferry's broker: topics, partitions, partitioning, the metadata store and retention.
//! Front ends (HTTP, Kafka) depend on this crate; it depends only on the log.

pub mod broker;
pub mod cleaner;
pub mod config;
pub mod error;
pub mod filter;
pub mod fsutil;
pub mod groups;
pub mod meta;
pub mod partition;
pub mod partitioner;
pub mod produce;
pub mod shared;
pub mod shared_groups;
pub mod shared_subs;
pub mod shared_txn;
pub mod subs;
pub mod time;
pub mod topic;
pub mod topic_id;
pub mod txn;
mod writer;

pub use broker::{
    now_ms, Broker, BrokerConfig, PartitionInfo, StableBounds, TimeLookup, TopicInfo, TopicSettings,
};
pub use config::{
    CleanupPolicy, DirtyRatio, DurabilityPolicy, TimestampType, TopicConfig, TopicDefaults,
};
pub use error::{BrokerError, RecordError, Result};
pub use partition::ReadRecords;
pub use produce::{Appended, ProduceRecord, Produced};
pub use topic_id::TopicId;
