//! Topic settings: what users set at creation, what the metadata store keeps.

use crate::error::{BrokerError, Result};
use crate::topic_id::TopicId;
use ferry_log::{Durability, LogConfig};
use serde::{Deserialize, Serialize};

/// How a topic acknowledges writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityPolicy {
    /// Acknowledge after fdatasync (group commit).
    Always,
    /// Acknowledge at once; sync every `flush_interval_ms`.
    Interval,
    /// Acknowledge at once; leave write-back to the operating system.
    Never,
}

impl DurabilityPolicy {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "always" => Some(Self::Always),
            "interval" => Some(Self::Interval),
            "never" => Some(Self::Never),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::Interval => "interval",
            Self::Never => "never",
        }
    }
}

/// Which time a topic's records carry (Kafka's `message.timestamp.type`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestampType {
    /// The producer's timestamp (or the broker's time when a producer gives none).
    #[default]
    CreateTime,
    /// The broker's time when the record is appended, whatever the producer said.
    LogAppendTime,
}

impl TimestampType {
    /// From Kafka's config value (`CreateTime`, `LogAppendTime`).
    pub fn from_kafka(s: &str) -> Option<Self> {
        match s {
            "CreateTime" => Some(Self::CreateTime),
            "LogAppendTime" => Some(Self::LogAppendTime),
            _ => None,
        }
    }
    /// Kafka's config value.
    pub fn kafka_name(self) -> &'static str {
        match self {
            Self::CreateTime => "CreateTime",
            Self::LogAppendTime => "LogAppendTime",
        }
    }
    /// Ferry's own name (HTTP API, `topics.json`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CreateTime => "create_time",
            Self::LogAppendTime => "log_append_time",
        }
    }
}

/// What happens to a topic's old records (Kafka's `cleanup.policy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CleanupPolicy {
    /// Whole old segments are deleted by retention.
    #[default]
    #[serde(rename = "delete")]
    Delete,
    /// Sealed segments are compacted: only the latest record of each key is kept.
    #[serde(rename = "compact")]
    Compact,
    /// Both: segments are compacted, and retention still deletes old segments.
    #[serde(rename = "compact,delete")]
    CompactDelete,
}

impl CleanupPolicy {
    /// From Ferry's or Kafka's value: `delete`, `compact`, `compact,delete` (in either
    /// order, as Kafka takes a list).
    pub fn parse(s: &str) -> Option<Self> {
        let mut compact = false;
        let mut delete = false;
        for part in s.split(',').map(str::trim) {
            match part {
                "compact" => compact = true,
                "delete" => delete = true,
                _ => return None,
            }
        }
        match (compact, delete) {
            (true, true) => Some(Self::CompactDelete),
            (true, false) => Some(Self::Compact),
            (false, true) => Some(Self::Delete),
            (false, false) => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delete => "delete",
            Self::Compact => "compact",
            Self::CompactDelete => "compact,delete",
        }
    }
    /// Sealed segments are compacted.
    pub fn compacts(self) -> bool {
        self != Self::Delete
    }
    /// Retention deletes old segments.
    pub fn deletes(self) -> bool {
        self != Self::Compact
    }
}

/// Kafka's `min.cleanable.dirty.ratio`: a share of a partition's bytes, 0 to 1. Never
/// NaN (checked on input), so equality is total.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DirtyRatio(pub f64);

impl Eq for DirtyRatio {}

impl Default for DirtyRatio {
    fn default() -> Self {
        DirtyRatio(DIRTY_RATIO_DEFAULT)
    }
}

/// Defaults of the compaction settings (Kafka's).
pub const DELETE_RETENTION_MS_DEFAULT: u64 = 86_400_000;
pub const MIN_COMPACTION_LAG_MS_DEFAULT: u64 = 0;
pub const DIRTY_RATIO_DEFAULT: f64 = 0.5;
/// No limit: Kafka's default of `max.compaction.lag.ms` (Long.MAX_VALUE).
pub const MAX_COMPACTION_LAG_MS_DEFAULT: u64 = i64::MAX as u64;

fn max_compaction_lag_ms_default() -> u64 {
    MAX_COMPACTION_LAG_MS_DEFAULT
}

fn delete_retention_ms_default() -> u64 {
    DELETE_RETENTION_MS_DEFAULT
}

/// Server-wide defaults for new topics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicDefaults {
    pub partitions: u32,
    pub retention_ms: Option<u64>,
    pub retention_bytes: Option<u64>,
    pub segment_bytes: u64,
    pub segment_ms: Option<u64>,
    pub max_record_bytes: u64,
    pub durability: DurabilityPolicy,
    pub flush_interval_ms: u64,
}

impl Default for TopicDefaults {
    fn default() -> Self {
        TopicDefaults {
            partitions: 1,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
            segment_bytes: 128 * 1024 * 1024,
            segment_ms: Some(7 * 24 * 3600 * 1000),
            max_record_bytes: 1024 * 1024,
            durability: DurabilityPolicy::Always,
            flush_interval_ms: 1000,
        }
    }
}

/// The stored settings of one topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfig {
    pub name: String,
    pub partitions: u32,
    /// Delete whole segments whose newest record is older than this; `None` keeps forever.
    pub retention_ms: Option<u64>,
    /// Delete the oldest segments while the partition is larger than this.
    pub retention_bytes: Option<u64>,
    pub segment_bytes: u64,
    pub segment_ms: Option<u64>,
    /// Largest record batch accepted (Kafka's `max.message.bytes`); one record must fit.
    pub max_record_bytes: u64,
    pub durability: DurabilityPolicy,
    pub flush_interval_ms: u64,
    pub created_at_ms: u64,
    /// Absent in files written before the setting existed: CreateTime.
    #[serde(default)]
    pub timestamp_type: TimestampType,
    /// Given at creation, never changed. Absent (`TopicId::NONE`) in files written
    /// before ids existed; [`crate::Broker::open`] then gives the topic one and stores it.
    #[serde(default)]
    pub topic_id: TopicId,
    /// Absent in files written before the setting existed: delete.
    #[serde(default)]
    pub cleanup_policy: CleanupPolicy,
    /// How long a tombstone (a record with no value) of a compacted topic stays after
    /// the segment holding it was first compacted.
    #[serde(default = "delete_retention_ms_default")]
    pub delete_retention_ms: u64,
    /// Records younger than this are never compacted away.
    #[serde(default)]
    pub min_compaction_lag_ms: u64,
    /// Compaction starts once this share of a partition's bytes lies after the last
    /// compacted offset.
    #[serde(default)]
    pub min_cleanable_dirty_ratio: DirtyRatio,
    /// A partition is compacted, whatever its dirty share, once a record not yet
    /// compacted is older than this.
    #[serde(default = "max_compaction_lag_ms_default")]
    pub max_compaction_lag_ms: u64,
}

/// Limits on settings, named with their unit last.
pub const PARTITIONS_MAX: u32 = 10_000;
pub const SEGMENT_BYTES_MIN: u64 = 4096;
/// Small enough for tests of the limit, large enough for a batch header and a record.
pub const MAX_RECORD_BYTES_MIN: u64 = 1024;
pub const MAX_RECORD_BYTES_MAX: u64 = 64 * 1024 * 1024;
pub const TOPIC_NAME_BYTES_MAX: usize = 249;

pub fn validate_topic_name(name: &str) -> Result<()> {
    let bad = |reason| {
        Err(BrokerError::InvalidTopicName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > TOPIC_NAME_BYTES_MAX {
        return bad("it is longer than 249 characters");
    }
    if name.starts_with('.') {
        return bad("names starting with '.' are reserved for Ferry's own folders");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return bad("use only letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

impl TopicConfig {
    pub fn validate(&self) -> Result<()> {
        validate_topic_name(&self.name)?;
        let bad = |m: String| Err(BrokerError::InvalidConfig(m));
        if self.partitions == 0 || self.partitions > PARTITIONS_MAX {
            return bad(format!(
                "partitions must be between 1 and {PARTITIONS_MAX}, got {}",
                self.partitions
            ));
        }
        if self.segment_bytes < SEGMENT_BYTES_MIN
            || self.segment_bytes > ferry_log::log::SEGMENT_BYTES_MAX
        {
            return bad(format!(
                "segment_bytes must be between {SEGMENT_BYTES_MIN} and {}, got {}",
                ferry_log::log::SEGMENT_BYTES_MAX,
                self.segment_bytes
            ));
        }
        if self.max_record_bytes < MAX_RECORD_BYTES_MIN
            || self.max_record_bytes > MAX_RECORD_BYTES_MAX
        {
            return bad(format!(
                "max_record_bytes must be between {MAX_RECORD_BYTES_MIN} and {MAX_RECORD_BYTES_MAX}, got {}",
                self.max_record_bytes
            ));
        }
        if self.segment_ms == Some(0) {
            return bad("segment_ms must be positive".into());
        }
        if self.retention_ms == Some(0) || self.retention_bytes == Some(0) {
            return bad(
                "retention_ms and retention_bytes must be positive, or -1 for no limit".into(),
            );
        }
        let ratio = self.min_cleanable_dirty_ratio.0;
        if !(0.0..=1.0).contains(&ratio) {
            return bad(format!(
                "min_cleanable_dirty_ratio must be between 0 and 1, got {ratio}"
            ));
        }
        if self.max_compaction_lag_ms == 0
            || self.max_compaction_lag_ms > MAX_COMPACTION_LAG_MS_DEFAULT
            || self.max_compaction_lag_ms < self.min_compaction_lag_ms
        {
            return bad(format!(
                "max_compaction_lag_ms must be between min_compaction_lag_ms ({}) and {MAX_COMPACTION_LAG_MS_DEFAULT}, and at least 1, got {}",
                self.min_compaction_lag_ms, self.max_compaction_lag_ms
            ));
        }
        if self.flush_interval_ms == 0 {
            return bad("flush_interval_ms must be positive".into());
        }
        Ok(())
    }

    pub fn log_config(&self) -> LogConfig {
        LogConfig {
            segment_bytes: self.segment_bytes,
            segment_ms: self.segment_ms,
            index_interval_bytes: 4096,
            max_batch_bytes: self.max_record_bytes as usize,
            durability: match self.durability {
                DurabilityPolicy::Always => Durability::Always,
                DurabilityPolicy::Interval => Durability::Interval {
                    ms: self.flush_interval_ms,
                },
                DurabilityPolicy::Never => Durability::Never,
            },
            log_append_time: self.timestamp_type == TimestampType::LogAppendTime,
        }
    }
}
