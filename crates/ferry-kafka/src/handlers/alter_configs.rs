//! AlterConfigs and IncrementalAlterConfigs: a topic's settings changed under Kafka's
//! names, checked as CreateTopics checks them (`admin::settings_from_configs`) and
//! applied by the broker as the HTTP API's changes are.
//!
//! Both come down to one step: the complete set of the topic's own settings, which
//! [`ferry_broker::Broker::replace_topic_settings`] applies (what it leaves out returns
//! to the server's default). AlterConfigs sends that set; IncrementalAlterConfigs
//! edits the topic's current one (`configs::dynamic_topic_configs`) with SET, DELETE
//! (back to the default), APPEND and SUBTRACT (list settings only).
//!
//! # Authorization
//!
//! As in Kafka: AlterConfigs on the topic, or on the cluster for the broker.
//!
//! # The broker
//!
//! Ferry's server settings are fixed when it starts (flags, environment, TOML), so a
//! change to the broker resource is refused with INVALID_CONFIG; an AlterConfigs with no
//! entries and an IncrementalAlterConfigs DELETE of a broker setting ask for no dynamic
//! values, which is what Ferry has, and succeed.

use super::configs::{self, RESOURCE_BROKER, RESOURCE_BROKER_LOGGER, RESOURCE_TOPIC};
use super::{admin, Ctx, Session};
use crate::errors;
use ferry_auth::{Operation, ResourceType};
use ferry_broker::TopicDefaults;
use kafka_protocol::messages::{
    alter_configs_response, incremental_alter_configs_response, AlterConfigsRequest,
    AlterConfigsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use std::collections::{BTreeMap, HashMap};

/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

/// An error code and the message that explains it.
type Refusal = (i16, String);

fn invalid_config(message: String) -> Refusal {
    (ResponseError::InvalidConfig.code(), message)
}

fn invalid_request(message: String) -> Refusal {
    (ResponseError::InvalidRequest.code(), message)
}

/// One IncrementalAlterConfigs operation.
#[derive(Debug)]
struct Op {
    name: String,
    op: i8,
    value: Option<String>,
}

/// What a request asks of one resource.
#[derive(Debug)]
enum Change {
    /// AlterConfigs: these settings, and every other back to its default.
    Replace(Vec<(String, Option<String>)>),
    /// IncrementalAlterConfigs: these operations on the current settings.
    Edit(Vec<Op>),
}

impl Change {
    fn names(&self) -> Vec<&str> {
        match self {
            Change::Replace(entries) => entries.iter().map(|(n, _)| n.as_str()).collect(),
            Change::Edit(ops) => ops.iter().map(|o| o.name.as_str()).collect(),
        }
    }
}

/// Resources named more than once in a request: Kafka refuses each of them.
fn repeated<'a>(resources: impl Iterator<Item = (i8, &'a str)>) -> HashMap<(i8, String), usize> {
    let mut seen: HashMap<(i8, String), usize> = HashMap::new();
    for (rtype, name) in resources {
        *seen.entry((rtype, name.to_string())).or_default() += 1;
    }
    seen.retain(|_, n| *n > 1);
    seen
}

pub async fn alter_configs(
    ctx: &Ctx,
    req: AlterConfigsRequest,
    session: &Session,
) -> AlterConfigsResponse {
    let twice = repeated(
        req.resources
            .iter()
            .map(|r| (r.resource_type, r.resource_name.as_str())),
    );
    let mut responses = Vec::new();
    for r in req.resources {
        let change = Change::Replace(
            r.configs
                .iter()
                .map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string())))
                .collect(),
        );
        let (code, message) = answer(
            ctx,
            session,
            &twice,
            (r.resource_type, r.resource_name.as_str()),
            change,
            req.validate_only,
        )
        .await;
        responses.push(
            alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name)
                .with_error_code(code)
                .with_error_message(message),
        );
    }
    AlterConfigsResponse::default().with_responses(responses)
}

pub async fn incremental_alter_configs(
    ctx: &Ctx,
    req: IncrementalAlterConfigsRequest,
    session: &Session,
) -> IncrementalAlterConfigsResponse {
    let twice = repeated(
        req.resources
            .iter()
            .map(|r| (r.resource_type, r.resource_name.as_str())),
    );
    let mut responses = Vec::new();
    for r in req.resources {
        let change = Change::Edit(
            r.configs
                .iter()
                .map(|c| Op {
                    name: c.name.to_string(),
                    op: c.config_operation,
                    value: c.value.as_ref().map(|v| v.to_string()),
                })
                .collect(),
        );
        let (code, message) = answer(
            ctx,
            session,
            &twice,
            (r.resource_type, r.resource_name.as_str()),
            change,
            req.validate_only,
        )
        .await;
        responses.push(
            incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name)
                .with_error_code(code)
                .with_error_message(message),
        );
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

/// The error code and message for one resource of a request: refused when the
/// request names it more than once, else changed by [`alter`].
async fn answer(
    ctx: &Ctx,
    session: &Session,
    twice: &HashMap<(i8, String), usize>,
    (rtype, name): (i8, &str),
    change: Change,
    validate_only: bool,
) -> (i16, Option<StrBytes>) {
    let outcome = if twice.contains_key(&(rtype, name.to_string())) {
        Err(invalid_request(format!(
            "resource '{name}' is named more than once"
        )))
    } else {
        alter(ctx, session, rtype, name, change, validate_only).await
    };
    match outcome {
        Ok(()) => (errors::NONE, None),
        Err((code, message)) => (code, Some(StrBytes::from_string(message))),
    }
}

/// Checks the session may change the resource, then changes it.
async fn alter(
    ctx: &Ctx,
    session: &Session,
    rtype: i8,
    name: &str,
    change: Change,
    validate_only: bool,
) -> Result<(), Refusal> {
    let mut seen = std::collections::HashSet::new();
    if let Some(n) = change.names().into_iter().find(|n| !seen.insert(*n)) {
        return Err(invalid_request(format!(
            "config '{n}' is named more than once"
        )));
    }
    match rtype {
        RESOURCE_TOPIC => {
            if !session.may(
                &ctx.auth,
                Operation::AlterConfigs,
                ResourceType::Topic,
                name,
            ) {
                return Err((
                    ResponseError::TopicAuthorizationFailed.code(),
                    format!("not allowed to alter the configs of topic '{name}'"),
                ));
            }
            alter_topic(ctx, name, change, validate_only).await
        }
        RESOURCE_BROKER => {
            if !session.may_on_cluster(&ctx.auth, Operation::AlterConfigs) {
                return Err((
                    ResponseError::ClusterAuthorizationFailed.code(),
                    "not allowed to alter the broker's configs".into(),
                ));
            }
            alter_broker(ctx, name, &change)
        }
        RESOURCE_BROKER_LOGGER => Err(invalid_request(
            "Ferry's log levels are set when it starts (--log), not over Kafka".into(),
        )),
        other => Err(invalid_request(format!(
            "resource type {other} has no configs Ferry can change"
        ))),
    }
}

/// The topic's settings after `change`: the complete set of its own settings, as Kafka
/// strings by name.
fn new_topic_configs(
    defaults: &TopicDefaults,
    current: Vec<(&'static str, String)>,
    change: Change,
) -> Result<BTreeMap<String, String>, Refusal> {
    let mut configs: BTreeMap<String, String> = BTreeMap::new();
    match change {
        Change::Replace(entries) => {
            for (name, value) in entries {
                let value =
                    value.ok_or_else(|| invalid_config(format!("'{name}' has no value")))?;
                configs.insert(name, value);
            }
        }
        Change::Edit(ops) => {
            configs.extend(current.into_iter().map(|(n, v)| (n.to_string(), v)));
            for Op { name, op, value } in ops {
                let key = configs::topic_key(&name);
                let known = key.is_some() || admin::UNDESCRIBED_CONFIGS.contains(&name.as_str());
                if !known {
                    // Checked by the shared parser, with its message naming what Ferry takes.
                    admin::settings_from_configs(std::iter::once((name.as_str(), None)))
                        .map_err(invalid_config)?;
                }
                match op {
                    OP_DELETE => {
                        configs.remove(&name);
                    }
                    OP_SET => {
                        let value = value
                            .ok_or_else(|| invalid_config(format!("SET of '{name}' has no value")))?;
                        configs.insert(name, value);
                    }
                    OP_APPEND | OP_SUBTRACT => {
                        let Some(key) = key.filter(|k| k.list) else {
                            return Err(invalid_config(format!(
                                "'{name}' is not a list: APPEND and SUBTRACT apply to list settings only"
                            )));
                        };
                        let value = value.ok_or_else(|| {
                            invalid_config(format!("APPEND or SUBTRACT of '{name}' has no value"))
                        })?;
                        let base = configs.get(&name).cloned().unwrap_or_else(|| {
                            // The value in effect, from the defaults (as Kafka does).
                            (key.default)(defaults)
                        });
                        let mut items: Vec<String> = split_list(&base);
                        for item in split_list(&value) {
                            if op == OP_APPEND && !items.contains(&item) {
                                items.push(item);
                            } else if op == OP_SUBTRACT {
                                items.retain(|i| *i != item);
                            }
                        }
                        configs.insert(name, items.join(","));
                    }
                    other => {
                        return Err(invalid_request(format!(
                            "config operation {other} is not SET (0), DELETE (1), APPEND (2) or SUBTRACT (3)"
                        )))
                    }
                }
            }
        }
    }
    Ok(configs)
}

fn split_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

async fn alter_topic(
    ctx: &Ctx,
    name: &str,
    change: Change,
    validate_only: bool,
) -> Result<(), Refusal> {
    let current = ctx
        .broker
        .describe_topic(name)
        .map_err(|e| (errors::code(&e), e.to_string()))?
        .config;
    let dynamic = configs::dynamic_topic_configs(ctx.broker.defaults(), &current);
    let configs = new_topic_configs(ctx.broker.defaults(), dynamic, change)?;
    let settings =
        admin::settings_from_configs(configs.iter().map(|(n, v)| (n.as_str(), Some(v.as_str()))))
            .map_err(invalid_config)?;
    let after = ctx
        .broker
        .replace_topic_settings(name, settings, validate_only)
        .await
        .map_err(|e| (errors::code(&e), e.to_string()))?;
    if !validate_only {
        tracing::info!(topic = %name, settings = ?configs, "A Kafka client changed a topic's settings.");
    }
    debug_assert_eq!(after.partitions, current.partitions);
    Ok(())
}

fn alter_broker(ctx: &Ctx, name: &str, change: &Change) -> Result<(), Refusal> {
    let id = ctx.config.node_id.to_string();
    if !name.is_empty() && name != id {
        return Err(invalid_request(format!(
            "Ferry is broker {id}: name it, or leave the name empty for the cluster's defaults"
        )));
    }
    let refuse = |n: &str| {
        Err(invalid_config(format!(
            "broker setting '{n}' is fixed when Ferry starts (flags, environment or TOML) and cannot be changed over Kafka"
        )))
    };
    match change {
        Change::Replace(entries) => match entries.first() {
            Some((n, _)) => refuse(n),
            None => Ok(()),
        },
        Change::Edit(ops) => {
            for o in ops {
                let known = configs::TOPIC_KEYS.iter().any(|k| k.broker_name == o.name);
                if o.op != OP_DELETE || !known {
                    return refuse(&o.name);
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edit(ops: &[(&str, i8, Option<&str>)]) -> Change {
        Change::Edit(
            ops.iter()
                .map(|(n, op, v)| Op {
                    name: n.to_string(),
                    op: *op,
                    value: v.map(String::from),
                })
                .collect(),
        )
    }

    fn current() -> Vec<(&'static str, String)> {
        vec![
            ("retention.ms", "1000".into()),
            ("max.message.bytes", "2048".into()),
        ]
    }

    fn code(r: Result<BTreeMap<String, String>, Refusal>) -> i16 {
        r.err().map_or(errors::NONE, |(c, _)| c)
    }

    #[test]
    fn set_and_delete_edit_the_topics_own_settings() {
        let out = new_topic_configs(
            &TopicDefaults::default(),
            current(),
            edit(&[
                ("retention.ms", OP_DELETE, None),
                ("retention.bytes", OP_SET, Some("5000")),
                ("segment.ms", OP_DELETE, None),
            ]),
        )
        .unwrap();
        let want: BTreeMap<String, String> = [
            ("max.message.bytes".to_string(), "2048".to_string()),
            ("retention.bytes".to_string(), "5000".to_string()),
        ]
        .into();
        assert_eq!(out, want);
    }

    #[test]
    fn append_and_subtract_work_on_lists_only() {
        let out = new_topic_configs(
            &TopicDefaults::default(),
            current(),
            edit(&[("cleanup.policy", OP_APPEND, Some("delete"))]),
        )
        .unwrap();
        assert_eq!(out["cleanup.policy"], "delete", "no duplicates");
        let out = new_topic_configs(
            &TopicDefaults::default(),
            current(),
            edit(&[("cleanup.policy", OP_APPEND, Some("compact"))]),
        )
        .unwrap();
        assert_eq!(out["cleanup.policy"], "delete,compact");
        let out = new_topic_configs(
            &TopicDefaults::default(),
            current(),
            edit(&[("cleanup.policy", OP_SUBTRACT, Some("delete"))]),
        )
        .unwrap();
        assert_eq!(out["cleanup.policy"], "");
        for op in [OP_APPEND, OP_SUBTRACT] {
            let r = new_topic_configs(
                &TopicDefaults::default(),
                current(),
                edit(&[("retention.ms", op, Some("5"))]),
            );
            assert_eq!(code(r), ResponseError::InvalidConfig.code());
        }
    }

    #[test]
    fn bad_operations_and_values_are_refused_with_kafka_codes() {
        let cases: [(Change, ResponseError); 5] = [
            (
                edit(&[("retention.ms", 9, Some("5"))]),
                ResponseError::InvalidRequest,
            ),
            (
                edit(&[("retention.ms", -1, Some("5"))]),
                ResponseError::InvalidRequest,
            ),
            (
                edit(&[("retention.ms", OP_SET, None)]),
                ResponseError::InvalidConfig,
            ),
            (
                edit(&[("no.such.setting", OP_DELETE, None)]),
                ResponseError::InvalidConfig,
            ),
            (
                Change::Replace(vec![("retention.ms".into(), None)]),
                ResponseError::InvalidConfig,
            ),
        ];
        for (change, want) in cases {
            let shown = format!("{change:?}");
            assert_eq!(
                code(new_topic_configs(
                    &TopicDefaults::default(),
                    current(),
                    change
                )),
                want.code(),
                "{shown}"
            );
        }
    }

    #[test]
    fn replace_takes_exactly_what_it_is_given() {
        let out = new_topic_configs(
            &TopicDefaults::default(),
            current(),
            Change::Replace(vec![("segment.bytes".into(), Some("8192".into()))]),
        )
        .unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out["segment.bytes"], "8192");
    }

    #[test]
    fn only_what_one_node_does_anyway_passes_for_settings_without_effect() {
        let parse = |n: &str, v: &str| admin::settings_from_configs(std::iter::once((n, Some(v))));
        assert!(parse("min.insync.replicas", "1").is_ok());
        assert!(parse("min.insync.replicas", "2").is_err());
        assert!(parse("unclean.leader.election.enable", "false").is_ok());
        assert!(parse("unclean.leader.election.enable", "maybe").is_err());
        assert!(parse("message.timestamp.type", "Never").is_err());
    }
}
