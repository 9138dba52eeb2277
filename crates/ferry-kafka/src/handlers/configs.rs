//! DescribeConfigs: a topic's settings under Kafka's config names, with where each value
//! comes from, and the broker's defaults. Settings are changed through CreateTopics,
//! AlterConfigs and IncrementalAlterConfigs (`alter_configs`) or Ferry's own API.
//!
//! # Sources
//!
//! Ferry stores every setting of a topic, the defaults included, when the topic is
//! created. A setting is shown as the topic's own (DYNAMIC_TOPIC_CONFIG) when its value
//! differs from the server's default for new topics, and as DEFAULT_CONFIG when it is
//! the same: a value set explicitly to the default reads as the default. The broker's
//! defaults are STATIC_BROKER_CONFIG when the operator changed them (flags, environment,
//! TOML) and DEFAULT_CONFIG otherwise; they cannot be changed over Kafka (read only).

use super::{Ctx, Session};
use crate::errors;
use ferry_auth::{Operation, ResourceType};
use ferry_broker::{TopicConfig, TopicDefaults};
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

/// Kafka's resource types for configs.
pub(super) const RESOURCE_TOPIC: i8 = 2;
pub(super) const RESOURCE_BROKER: i8 = 4;
pub(super) const RESOURCE_BROKER_LOGGER: i8 = 8;
/// Kafka's ConfigSource values.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;
/// Kafka's config types (DescribeConfigs v3+).
const TYPE_BOOLEAN: i8 = 1;
const TYPE_STRING: i8 = 2;
const TYPE_INT: i8 = 3;
const TYPE_LONG: i8 = 5;
const TYPE_DOUBLE: i8 = 6;
const TYPE_LIST: i8 = 7;

fn limit(v: Option<u64>) -> String {
    v.map_or("-1".into(), |n| n.to_string())
}

/// One topic setting under its Kafka name, and the broker setting that gives new
/// topics their default.
pub(super) struct TopicKey {
    pub name: &'static str,
    pub broker_name: &'static str,
    config_type: i8,
    /// A list setting (IncrementalAlterConfigs may APPEND to it and SUBTRACT from it).
    pub list: bool,
    doc: &'static str,
    value: fn(&TopicConfig) -> String,
    pub default: fn(&TopicDefaults) -> String,
}

/// Every topic setting Ferry has. Each name is one that `admin::settings_from_configs`
/// takes (a test checks), so what DescribeConfigs shows can be written back.
pub(super) const TOPIC_KEYS: &[TopicKey] = &[
    TopicKey {
        name: "retention.ms",
        broker_name: "log.retention.ms",
        config_type: TYPE_LONG,
        list: false,
        doc: "Sealed segments whose newest record is older than this many milliseconds are deleted; -1 keeps records forever.",
        value: |c| limit(c.retention_ms),
        default: |d| limit(d.retention_ms),
    },
    TopicKey {
        name: "retention.bytes",
        broker_name: "log.retention.bytes",
        config_type: TYPE_LONG,
        list: false,
        doc: "The oldest sealed segments of a partition are deleted while it is larger than this many bytes; -1 for no limit.",
        value: |c| limit(c.retention_bytes),
        default: |d| limit(d.retention_bytes),
    },
    TopicKey {
        name: "segment.bytes",
        broker_name: "log.segment.bytes",
        config_type: TYPE_INT,
        list: false,
        doc: "A partition starts a new segment file before one would grow past this many bytes.",
        value: |c| c.segment_bytes.to_string(),
        default: |d| d.segment_bytes.to_string(),
    },
    TopicKey {
        name: "segment.ms",
        broker_name: "log.roll.ms",
        config_type: TYPE_LONG,
        list: false,
        doc: "A partition starts a new segment file once its active one is this many milliseconds old, so that retention can delete it.",
        value: |c| limit(c.segment_ms),
        default: |d| limit(d.segment_ms),
    },
    TopicKey {
        name: "max.message.bytes",
        broker_name: "message.max.bytes",
        config_type: TYPE_INT,
        list: false,
        doc: "The largest record batch a producer may send to the topic, in bytes; a larger one is refused with MESSAGE_TOO_LARGE.",
        value: |c| c.max_record_bytes.to_string(),
        default: |d| d.max_record_bytes.to_string(),
    },
    TopicKey {
        name: "cleanup.policy",
        broker_name: "log.cleanup.policy",
        config_type: TYPE_LIST,
        list: true,
        doc: "What happens to old records: delete (retention deletes old segments), compact (only the latest record of each key is kept), or compact,delete (both).",
        value: |c| c.cleanup_policy.as_str().into(),
        default: |_| ferry_broker::CleanupPolicy::default().as_str().into(),
    },
    TopicKey {
        name: "delete.retention.ms",
        broker_name: "log.cleaner.delete.retention.ms",
        config_type: TYPE_LONG,
        list: false,
        doc: "How long a tombstone (a record with a null value) of a compacted topic is kept after compaction first passes it, in milliseconds.",
        value: |c| c.delete_retention_ms.to_string(),
        default: |_| ferry_broker::config::DELETE_RETENTION_MS_DEFAULT.to_string(),
    },
    TopicKey {
        name: "min.compaction.lag.ms",
        broker_name: "log.cleaner.min.compaction.lag.ms",
        config_type: TYPE_LONG,
        list: false,
        doc: "Records younger than this many milliseconds are never compacted away.",
        value: |c| c.min_compaction_lag_ms.to_string(),
        default: |_| ferry_broker::config::MIN_COMPACTION_LAG_MS_DEFAULT.to_string(),
    },
    TopicKey {
        name: "max.compaction.lag.ms",
        broker_name: "log.cleaner.max.compaction.lag.ms",
        config_type: TYPE_LONG,
        list: false,
        doc: "A partition is compacted, whatever its dirty share, once a record not yet compacted is older than this many milliseconds.",
        value: |c| c.max_compaction_lag_ms.to_string(),
        default: |_| ferry_broker::config::MAX_COMPACTION_LAG_MS_DEFAULT.to_string(),
    },
    TopicKey {
        name: "min.cleanable.dirty.ratio",
        broker_name: "log.cleaner.min.cleanable.ratio",
        config_type: TYPE_DOUBLE,
        list: false,
        doc: "Compaction of a partition starts once this share of its bytes lies after what was last compacted.",
        value: |c| c.min_cleanable_dirty_ratio.0.to_string(),
        default: |_| ferry_broker::config::DIRTY_RATIO_DEFAULT.to_string(),
    },
    TopicKey {
        name: "message.timestamp.type",
        broker_name: "log.message.timestamp.type",
        config_type: TYPE_STRING,
        list: false,
        doc: "Which time a record carries: the producer's (CreateTime) or the time Ferry appended it (LogAppendTime).",
        value: |c| c.timestamp_type.kafka_name().into(),
        default: |_| ferry_broker::TimestampType::default().kafka_name().into(),
    },
    TopicKey {
        name: "compression.type",
        broker_name: "compression.type",
        config_type: TYPE_STRING,
        list: false,
        doc: "Ferry stores each batch with the codec its producer chose (producer); recompression is not supported.",
        value: |_| "producer".into(),
        default: |_| "producer".into(),
    },
    TopicKey {
        name: "min.insync.replicas",
        broker_name: "min.insync.replicas",
        config_type: TYPE_INT,
        list: false,
        doc: "Ferry keeps one replica, so one in-sync replica is all there is.",
        value: |_| "1".into(),
        default: |_| "1".into(),
    },
    TopicKey {
        name: "ferry.durability",
        broker_name: "ferry.durability",
        config_type: TYPE_STRING,
        list: false,
        doc: "When Ferry acknowledges a write: always (after fsync, with group commit), interval (at once, synced every ferry.flush.interval.ms) or never (at once, left to the operating system).",
        value: |c| c.durability.as_str().into(),
        default: |d| d.durability.as_str().into(),
    },
    TopicKey {
        name: "ferry.flush.interval.ms",
        broker_name: "ferry.flush.interval.ms",
        config_type: TYPE_LONG,
        list: false,
        doc: "How often a topic with durability interval is synced to disk, in milliseconds.",
        value: |c| c.flush_interval_ms.to_string(),
        default: |d| d.flush_interval_ms.to_string(),
    },
];

pub(super) fn topic_key(name: &str) -> Option<&'static TopicKey> {
    TOPIC_KEYS.iter().find(|k| k.name == name)
}

/// The topic's settings that differ from the server's defaults, as Kafka strings: what
/// an AlterConfigs request would have to name to leave the topic as it is.
pub(super) fn dynamic_topic_configs(
    defaults: &TopicDefaults,
    c: &TopicConfig,
) -> Vec<(&'static str, String)> {
    TOPIC_KEYS
        .iter()
        .filter_map(|k| {
            let value = (k.value)(c);
            (value != (k.default)(defaults)).then_some((k.name, value))
        })
        .collect()
}

/// What a DescribeConfigs request asks for besides values.
#[derive(Clone, Copy)]
struct Detail {
    version: i16,
    synonyms: bool,
    documentation: bool,
}

fn synonym(name: &str, value: String, source: i8) -> DescribeConfigsSynonym {
    DescribeConfigsSynonym::default()
        .with_name(StrBytes::from_string(name.to_string()))
        .with_value(Some(StrBytes::from_string(value)))
        .with_source(source)
}

/// One described setting.
struct Entry {
    name: &'static str,
    value: String,
    source: i8,
    read_only: bool,
    config_type: i8,
    doc: &'static str,
    /// In Kafka's order: the source in effect first.
    synonyms: Vec<DescribeConfigsSynonym>,
}

impl Entry {
    fn encode(self, detail: Detail) -> DescribeConfigsResourceResult {
        let mut e = DescribeConfigsResourceResult::default()
            .with_name(StrBytes::from_string(self.name.to_string()))
            .with_value(Some(StrBytes::from_string(self.value)))
            .with_read_only(self.read_only)
            .with_is_sensitive(false)
            .with_config_source(self.source)
            // Null unless asked for (the codec's default is an empty string).
            .with_documentation(None);
        if detail.synonyms {
            e = e.with_synonyms(self.synonyms);
        }
        if detail.version >= 3 {
            e = e.with_config_type(self.config_type);
            if detail.documentation {
                e = e.with_documentation(Some(StrBytes::from_static_str(self.doc)));
            }
        }
        e
    }
}

/// Where the server's default for a setting comes from: the operator, or Ferry.
fn broker_source(value: &str, built_in: &str) -> i8 {
    if value == built_in {
        SOURCE_DEFAULT
    } else {
        SOURCE_STATIC_BROKER
    }
}

/// A topic's settings under Kafka's names (and Ferry's own, prefixed `ferry.`).
fn topic_configs(defaults: &TopicDefaults, c: &TopicConfig) -> Vec<Entry> {
    let built_in = TopicDefaults::default();
    TOPIC_KEYS
        .iter()
        .map(|k| {
            let value = (k.value)(c);
            let default = (k.default)(defaults);
            let default_source = broker_source(&default, &(k.default)(&built_in));
            let mut synonyms = Vec::new();
            let source = if value != default {
                synonyms.push(synonym(k.name, value.clone(), SOURCE_TOPIC));
                SOURCE_TOPIC
            } else {
                SOURCE_DEFAULT
            };
            synonyms.push(synonym(k.broker_name, default, default_source));
            Entry {
                name: k.name,
                value,
                source,
                read_only: false,
                config_type: k.config_type,
                doc: k.doc,
                synonyms,
            }
        })
        .collect()
}

/// The broker's defaults under Kafka's broker config names: read only (they are set
/// when Ferry starts).
fn broker_configs(ctx: &Ctx) -> Vec<Entry> {
    let d = ctx.broker.defaults();
    let built_in = TopicDefaults::default();
    let fixed = |name, value: String, config_type, doc| Entry {
        name,
        synonyms: vec![synonym(name, value.clone(), SOURCE_DEFAULT)],
        value,
        source: SOURCE_DEFAULT,
        read_only: true,
        config_type,
        doc,
    };
    let mut out = vec![
        fixed(
            "broker.id",
            ctx.config.node_id.to_string(),
            TYPE_INT,
            "This node's id; Ferry runs as one node.",
        ),
        {
            let value = d.partitions.to_string();
            let source = broker_source(&value, &built_in.partitions.to_string());
            Entry {
                name: "num.partitions",
                synonyms: vec![synonym("num.partitions", value.clone(), source)],
                value,
                source,
                read_only: true,
                config_type: TYPE_INT,
                doc: "Partitions of a topic created without a count.",
            }
        },
        fixed(
            "auto.create.topics.enable",
            ctx.config.auto_create_topics.to_string(),
            TYPE_BOOLEAN,
            "Whether Metadata requests create the topics they name (--kafka-auto-create-topics).",
        ),
    ];
    out.extend(TOPIC_KEYS.iter().map(|k| {
        let value = (k.default)(d);
        let source = broker_source(&value, &(k.default)(&built_in));
        Entry {
            name: k.broker_name,
            synonyms: vec![synonym(k.broker_name, value.clone(), source)],
            value,
            source,
            read_only: true,
            config_type: k.config_type,
            doc: k.doc,
        }
    }));
    out
}

pub fn describe_configs(
    ctx: &Ctx,
    req: DescribeConfigsRequest,
    version: i16,
    session: &Session,
) -> DescribeConfigsResponse {
    let detail = Detail {
        version,
        synonyms: req.include_synonyms,
        documentation: req.include_documentation,
    };
    let mut results = Vec::new();
    for r in req.resources {
        let name = r.resource_name.to_string();
        let result = DescribeConfigsResult::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name.clone());
        let configs: Result<Vec<Entry>, (i16, String)> = match r.resource_type {
            RESOURCE_TOPIC
                if !session.may(
                    &ctx.auth,
                    Operation::DescribeConfigs,
                    ResourceType::Topic,
                    &name,
                ) =>
            {
                Err((
                    ResponseError::TopicAuthorizationFailed.code(),
                    format!("not allowed to describe the configs of topic '{name}'"),
                ))
            }
            RESOURCE_BROKER if !session.may_on_cluster(&ctx.auth, Operation::DescribeConfigs) => {
                Err((
                    ResponseError::ClusterAuthorizationFailed.code(),
                    "not allowed to describe the broker's configs".to_string(),
                ))
            }
            RESOURCE_TOPIC => match ctx.broker.describe_topic(&name) {
                Ok(t) => Ok(topic_configs(ctx.broker.defaults(), &t.config)),
                Err(e) => Err((errors::code(&e), e.to_string())),
            },
            RESOURCE_BROKER => Ok(broker_configs(ctx)),
            other => Err((
                ResponseError::InvalidRequest.code(),
                format!("resource type {other} is not described by Ferry"),
            )),
        };
        results.push(match configs {
            Ok(mut list) => {
                if let Some(keys) = &r.configuration_keys {
                    list.retain(|e| keys.iter().any(|k| k.as_str() == e.name));
                }
                result.with_configs(list.into_iter().map(|e| e.encode(detail)).collect())
            }
            Err((code, message)) => result
                .with_error_code(code)
                .with_error_message(Some(StrBytes::from_string(message))),
        });
    }
    DescribeConfigsResponse::default().with_results(results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_broker::{Broker, BrokerConfig, DurabilityPolicy, TopicSettings};

    /// A topic created by a real broker with `defaults` and `settings` (so that this
    /// test follows the stored settings as they grow).
    async fn topic(defaults: &TopicDefaults, settings: TopicSettings) -> TopicConfig {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::open(BrokerConfig {
            data_dir: dir.path().to_path_buf(),
            defaults: defaults.clone(),
            retention_check_ms: 60_000,
            max_partitions: 10,
            max_open_segments: None,
            cleaner_offset_map_bytes: 1 << 20,
        })
        .unwrap();
        broker.create_topic("t", settings).await.unwrap().config
    }

    #[tokio::test]
    async fn settings_at_the_defaults_are_default_and_changed_ones_are_the_topics_own() {
        let d = TopicDefaults::default();
        let c = topic(&d, TopicSettings::default()).await;
        assert!(dynamic_topic_configs(&d, &c).is_empty());
        assert!(topic_configs(&d, &c)
            .iter()
            .all(|e| e.source == SOURCE_DEFAULT && e.synonyms.len() == 1));
        let changed = TopicSettings {
            retention_bytes: Some(5000),
            durability: Some(DurabilityPolicy::Never),
            ..Default::default()
        };
        let c = topic(&d, changed).await;
        assert_eq!(
            dynamic_topic_configs(&d, &c),
            [
                ("retention.bytes", "5000".to_string()),
                ("ferry.durability", "never".to_string())
            ]
        );
        let entries = topic_configs(&d, &c);
        let e = entries
            .iter()
            .find(|e| e.name == "retention.bytes")
            .unwrap();
        assert_eq!(e.source, SOURCE_TOPIC);
        let synonyms: Vec<(&str, i8)> = e
            .synonyms
            .iter()
            .map(|s| (s.name.as_str(), s.source))
            .collect();
        assert_eq!(
            synonyms,
            [
                ("retention.bytes", SOURCE_TOPIC),
                ("log.retention.bytes", SOURCE_DEFAULT)
            ]
        );
    }

    #[tokio::test]
    async fn a_default_the_operator_changed_is_a_static_broker_config() {
        let d = TopicDefaults {
            max_record_bytes: 4096,
            ..TopicDefaults::default()
        };
        let entries = topic_configs(&d, &topic(&d, TopicSettings::default()).await);
        let e = entries
            .iter()
            .find(|e| e.name == "max.message.bytes")
            .unwrap();
        assert_eq!((e.source, e.value.as_str()), (SOURCE_DEFAULT, "4096"));
        assert_eq!(e.synonyms[0].source, SOURCE_STATIC_BROKER);
        assert_eq!(e.synonyms[0].name.as_str(), "message.max.bytes");
    }

    #[tokio::test]
    async fn every_described_topic_setting_can_be_written_back() {
        let d = TopicDefaults::default();
        let c = topic(&d, TopicSettings::default()).await;
        for k in TOPIC_KEYS {
            let value = (k.value)(&c);
            let parsed = super::super::admin::settings_from_configs(
                [(k.name, Some(value.as_str()))].into_iter(),
            );
            assert!(parsed.is_ok(), "{}={value}: {parsed:?}", k.name);
        }
    }

    #[tokio::test]
    async fn types_and_documentation_come_only_from_v3() {
        let d = TopicDefaults::default();
        let c = topic(&d, TopicSettings::default()).await;
        let v2 = topic_configs(&d, &c).remove(0).encode(Detail {
            version: 2,
            synonyms: false,
            documentation: true,
        });
        assert!(v2.documentation.is_none() && v2.synonyms.is_empty());
        assert_eq!(v2.config_type, 0);
        let v4 = topic_configs(&d, &c).remove(0).encode(Detail {
            version: 4,
            synonyms: true,
            documentation: true,
        });
        assert_eq!(v4.config_type, TYPE_LONG);
        assert!(v4.documentation.is_some() && v4.synonyms.len() == 1);
    }
}
