//! DescribeConfigs: a topic's settings under Kafka's config names, and the broker's
//! defaults. Settings are changed through CreateTopics configs or Ferry's own API.

use super::{Ctx, Session};
use crate::errors;
use ferry_auth::{Operation, ResourceType};
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// Kafka's ConfigSource values.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_DEFAULT: i8 = 5;
/// Kafka's config types (DescribeConfigs v3+).
const TYPE_BOOLEAN: i8 = 1;
const TYPE_STRING: i8 = 2;
const TYPE_INT: i8 = 3;
const TYPE_LONG: i8 = 5;
const TYPE_LIST: i8 = 7;

fn limit(v: Option<u64>) -> String {
    v.map_or("-1".into(), |n| n.to_string())
}

fn entry(
    name: &str,
    value: String,
    source: i8,
    config_type: i8,
    version: i16,
) -> DescribeConfigsResourceResult {
    let e = DescribeConfigsResourceResult::default()
        .with_name(StrBytes::from_string(name.to_string()))
        .with_value(Some(StrBytes::from_string(value)))
        .with_read_only(false)
        .with_config_source(source);
    if version >= 3 {
        e.with_config_type(config_type)
    } else {
        e
    }
}

/// A topic's settings under Kafka's names (and Ferry's own, prefixed `ferry.`).
fn topic_configs(
    c: &ferry_broker::TopicConfig,
    version: i16,
) -> Vec<DescribeConfigsResourceResult> {
    [
        (
            "retention.ms",
            limit(c.retention_ms),
            SOURCE_TOPIC,
            TYPE_LONG,
        ),
        (
            "retention.bytes",
            limit(c.retention_bytes),
            SOURCE_TOPIC,
            TYPE_LONG,
        ),
        (
            "segment.bytes",
            c.segment_bytes.to_string(),
            SOURCE_TOPIC,
            TYPE_INT,
        ),
        ("segment.ms", limit(c.segment_ms), SOURCE_TOPIC, TYPE_LONG),
        (
            "max.message.bytes",
            c.max_record_bytes.to_string(),
            SOURCE_TOPIC,
            TYPE_INT,
        ),
        ("cleanup.policy", "delete".into(), SOURCE_DEFAULT, TYPE_LIST),
        (
            "message.timestamp.type",
            c.timestamp_type.kafka_name().into(),
            SOURCE_TOPIC,
            TYPE_STRING,
        ),
        (
            "compression.type",
            "producer".into(),
            SOURCE_DEFAULT,
            TYPE_STRING,
        ),
        ("min.insync.replicas", "1".into(), SOURCE_DEFAULT, TYPE_INT),
        (
            "ferry.durability",
            c.durability.as_str().into(),
            SOURCE_TOPIC,
            TYPE_STRING,
        ),
        (
            "ferry.flush.interval.ms",
            c.flush_interval_ms.to_string(),
            SOURCE_TOPIC,
            TYPE_LONG,
        ),
    ]
    .into_iter()
    .map(|(name, value, source, config_type)| entry(name, value, source, config_type, version))
    .collect()
}

/// The broker's defaults under Kafka's broker config names.
fn broker_configs(ctx: &Ctx, version: i16) -> Vec<DescribeConfigsResourceResult> {
    let d = ctx.broker.defaults();
    [
        ("broker.id", ctx.config.node_id.to_string(), TYPE_INT),
        ("num.partitions", d.partitions.to_string(), TYPE_INT),
        ("log.retention.ms", limit(d.retention_ms), TYPE_LONG),
        ("log.retention.bytes", limit(d.retention_bytes), TYPE_LONG),
        ("log.segment.bytes", d.segment_bytes.to_string(), TYPE_INT),
        (
            "message.max.bytes",
            d.max_record_bytes.to_string(),
            TYPE_INT,
        ),
        (
            "auto.create.topics.enable",
            ctx.config.auto_create_topics.to_string(),
            TYPE_BOOLEAN,
        ),
    ]
    .into_iter()
    .map(|(name, value, config_type)| entry(name, value, SOURCE_DEFAULT, config_type, version))
    .collect()
}

pub fn describe_configs(
    ctx: &Ctx,
    req: DescribeConfigsRequest,
    version: i16,
    session: &Session,
) -> DescribeConfigsResponse {
    let mut results = Vec::new();
    for r in req.resources {
        let name = r.resource_name.to_string();
        let result = DescribeConfigsResult::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name.clone());
        let configs: Result<Vec<DescribeConfigsResourceResult>, (i16, String)> = match r
            .resource_type
        {
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
                Ok(t) => Ok(topic_configs(&t.config, version)),
                Err(e) => Err((errors::code(&e), e.to_string())),
            },
            RESOURCE_BROKER => Ok(broker_configs(ctx, version)),
            other => Err((
                ResponseError::InvalidRequest.code(),
                format!("resource type {other} is not described by Ferry"),
            )),
        };
        results.push(match configs {
            Ok(mut list) => {
                if let Some(keys) = &r.configuration_keys {
                    list.retain(|e| keys.iter().any(|k| k.as_str() == e.name.as_str()));
                }
                result.with_configs(list)
            }
            Err((code, message)) => result
                .with_error_code(code)
                .with_error_message(Some(StrBytes::from_string(message))),
        });
    }
    DescribeConfigsResponse::default().with_results(results)
}
