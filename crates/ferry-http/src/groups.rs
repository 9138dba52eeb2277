//! Consumer groups over HTTP, read only: `/v1/groups` and `/v1/groups/{group}`. The
//! groups are those of the Kafka protocol (the broker's group coordinator); this module
//! shows their members, what each member was assigned and the lag of every committed
//! partition (the partition's end offset minus the committed offset).
//!
//! # Assignments
//!
//! Members' assignments are bytes the group's leader chose. For groups of the Kafka
//! consumer protocol (`protocol_type` `consumer`) they are a `ConsumerProtocolAssignment`,
//! which [`decode_assignment`] reads; for any other protocol, or bytes that do not
//! parse, a member's `assignment` is `null`.

use crate::problem::Problem;
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use ferry_broker::groups::{FetchedOffset, GroupDescription};
use ferry_broker::Broker;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Topics one decoded assignment may name, and partitions per topic: more than any
/// group can hold, fewer than hostile bytes could claim.
pub const ASSIGNMENT_TOPICS_MAX: usize = 10_000;
pub const ASSIGNMENT_PARTITIONS_MAX: usize = 100_000;

/// A topic and the partitions of it a member was assigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicAssignment {
    pub topic: String,
    pub partitions: Vec<u32>,
}

/// Reads bytes in the Kafka protocol's big-endian encoding, refusing to run past the end.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Some(head)
    }

    fn i16(&mut self) -> Option<i16> {
        self.take(2)
            .and_then(|b| b.try_into().ok())
            .map(i16::from_be_bytes)
    }

    fn i32(&mut self) -> Option<i32> {
        self.take(4)
            .and_then(|b| b.try_into().ok())
            .map(i32::from_be_bytes)
    }

    /// An array length: 0 to `max` (a null array, -1, is read as empty).
    fn count(&mut self, max: usize) -> Option<usize> {
        match self.i32()? {
            -1 => Some(0),
            n => usize::try_from(n).ok().filter(|n| *n <= max),
        }
    }

    fn string(&mut self) -> Option<String> {
        let len = usize::try_from(self.i16()?).ok()?;
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }
}

/// The topics and partitions of a `ConsumerProtocolAssignment` (any version: the
/// assigned partitions come first in all of them; the user data after them is not
/// read). `None` when the bytes are not one.
///
/// ```text
/// version: int16
/// assigned_partitions: int32 count, then per topic:
///     topic: int16 length, UTF-8 bytes
///     partitions: int32 count, then int32 each
/// user_data: int32 length (-1: null), bytes      (not read)
/// ```
pub fn decode_assignment(bytes: &[u8]) -> Option<Vec<TopicAssignment>> {
    let mut r = Reader { bytes };
    if r.i16()? < 0 {
        return None;
    }
    let topics = r.count(ASSIGNMENT_TOPICS_MAX)?;
    let mut out = Vec::with_capacity(topics.min(64));
    for _ in 0..topics {
        let topic = r.string()?;
        let n = r.count(ASSIGNMENT_PARTITIONS_MAX)?;
        let mut partitions = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            partitions.push(u32::try_from(r.i32()?).ok()?);
        }
        out.push(TopicAssignment { topic, partitions });
    }
    Some(out)
}

/// Each partition's end offset (`latest`), by topic, read once per answer.
#[derive(Default)]
struct EndOffsets(HashMap<String, HashMap<u32, u64>>);

impl EndOffsets {
    /// The end offset of a partition; `None` for a topic or partition that is gone.
    fn of(&mut self, broker: &Broker, topic: &str, partition: u32) -> Option<u64> {
        if !self.0.contains_key(topic) {
            let ends = broker
                .describe_topic(topic)
                .map(|t| {
                    t.partitions
                        .iter()
                        .map(|p| (p.partition, p.latest))
                        .collect()
                })
                .unwrap_or_default();
            self.0.insert(topic.to_string(), ends);
        }
        self.0.get(topic)?.get(&partition).copied()
    }
}

/// One partition's place: what is committed, where the partition ends, and the lag.
fn offset_json(topic: &str, partition: u32, committed: Option<i64>, end: Option<u64>) -> Value {
    let lag = match (end, committed) {
        (Some(end), Some(c)) => ferry_broker::groups::lag(end, c),
        _ => None,
    };
    json!({
        "topic": topic,
        "partition": partition,
        "committed": committed,
        "end_offset": end,
        "lag": lag,
    })
}

/// The sum of the known lags of `offsets` (as [`offset_json`] makes them).
fn total_lag(offsets: &[Value]) -> u64 {
    offsets.iter().filter_map(|o| o["lag"].as_u64()).sum()
}

/// A member's assignment as JSON, or `null` (see the module's `# Assignments`).
fn assignment_json(description: &GroupDescription, bytes: &[u8]) -> Value {
    if description.protocol_type != "consumer" {
        return Value::Null;
    }
    match decode_assignment(bytes) {
        Some(topics) => topics
            .into_iter()
            .map(|t| json!({"topic": t.topic, "partitions": t.partitions}))
            .collect(),
        None => Value::Null,
    }
}

/// Every committed partition of the group, and every assigned one (with `committed`
/// null when nothing is committed), by topic and partition.
fn offsets_json(
    broker: &Broker,
    description: &GroupDescription,
    committed: &[FetchedOffset],
) -> Vec<Value> {
    let mut places: BTreeMap<(String, u32), Option<i64>> = committed
        .iter()
        .map(|f| {
            (
                (f.topic.clone(), f.partition),
                f.committed.as_ref().map(|c| c.offset),
            )
        })
        .collect();
    if description.protocol_type == "consumer" {
        for member in &description.members {
            for t in decode_assignment(&member.assignment).unwrap_or_default() {
                for p in t.partitions {
                    places.entry((t.topic.clone(), p)).or_insert(None);
                }
            }
        }
    }
    let mut ends = EndOffsets::default();
    places
        .into_iter()
        .map(|((topic, partition), c)| {
            let end = ends.of(broker, &topic, partition);
            offset_json(&topic, partition, c, end)
        })
        .collect()
}

fn group_json(broker: &Broker, description: &GroupDescription) -> Value {
    let committed = broker.groups.fetch_offsets(&description.group, None);
    let offsets = offsets_json(broker, description, &committed);
    let members: Vec<Value> = description
        .members
        .iter()
        .map(|m| {
            json!({
                "member_id": m.member_id,
                "group_instance_id": m.group_instance_id,
                "client_id": m.client_id,
                "client_host": m.client_host,
                "assignment": assignment_json(description, &m.assignment),
            })
        })
        .collect();
    let topics: BTreeSet<&str> = offsets.iter().filter_map(|o| o["topic"].as_str()).collect();
    json!({
        "group": description.group,
        "state": description.state.name(),
        "protocol_type": description.protocol_type,
        "protocol": description.protocol_name,
        "generation": description.generation,
        "leader": description.leader,
        "members": members,
        "topics": topics,
        "lag": total_lag(&offsets),
        "offsets": offsets,
    })
}

/// Every group: in memory (with members now or since the server started) or with
/// committed offsets.
/// A group's line in the list, from its description.
fn summary(full: &Value) -> Value {
    json!({
        "group": full["group"],
        "state": full["state"],
        "protocol_type": full["protocol_type"],
        "generation": full["generation"],
        "members": full["members"].as_array().map_or(0, |m| m.len()),
        "topics": full["topics"],
        "lag": full["lag"],
    })
}

/// Every group in shared mode, each described by its coordinator (a group nobody
/// coordinates is taken by the node rendezvous hashing picks).
async fn list_shared(
    state: &AppState,
    c: &crate::auth::Caller,
    headers: &axum::http::HeaderMap,
) -> Result<Vec<Value>, Problem> {
    use ferry_broker::shared_subs::Owner;
    let mut groups = Vec::new();
    for name in state.broker.shared_group_names().await? {
        if !c.may(
            state,
            ferry_auth::Operation::Describe,
            ferry_auth::ResourceType::Group,
            &name,
        ) {
            continue;
        }
        let full = match state.broker.group_owner(&name).await {
            Ok(Owner::Here) => state
                .broker
                .groups
                .find(&name)
                .await
                .map(|description| group_json(&state.broker, &description)),
            Ok(Owner::Node { http_addr, .. }) => {
                crate::forward::describe_at(state, &http_addr, "groups", &name, headers).await
            }
            Err(_) => None,
        };
        // One deleted meanwhile, or whose coordinator did not answer, is left out.
        if let Some(full) = full {
            groups.push(summary(&full));
        }
    }
    Ok(groups)
}

pub async fn list(
    State(state): State<AppState>,
    c: Option<axum::Extension<crate::auth::Caller>>,
    headers: axum::http::HeaderMap,
) -> Result<Json<Value>, Problem> {
    let c = crate::auth::caller(c);
    if state.broker.is_shared() {
        return Ok(Json(
            json!({ "groups": list_shared(&state, &c, &headers).await? }),
        ));
    }
    let broker = &state.broker;
    let mut groups = Vec::new();
    for listing in broker.groups.list().await {
        if !c.may(
            &state,
            ferry_auth::Operation::Describe,
            ferry_auth::ResourceType::Group,
            &listing.group,
        ) {
            continue;
        }
        // A group deleted between the two calls is left out.
        let Some(description) = broker.groups.find(&listing.group).await else {
            continue;
        };
        groups.push(summary(&group_json(broker, &description)));
    }
    Ok(Json(json!({ "groups": groups })))
}

pub async fn describe(
    State(state): State<AppState>,
    Path(group): Path<String>,
) -> Result<Json<Value>, Problem> {
    let Some(description) = state.broker.groups.find(&group).await else {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "group-not-found",
            "Consumer group not found",
            format!("consumer group '{group}' has no members and no committed offsets"),
        ));
    };
    Ok(Json(group_json(&state.broker, &description)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment(version: i16, topics: &[(&str, &[i32])], user_data: &[u8]) -> Vec<u8> {
        let mut b = version.to_be_bytes().to_vec();
        b.extend((topics.len() as i32).to_be_bytes());
        for (topic, partitions) in topics {
            b.extend((topic.len() as i16).to_be_bytes());
            b.extend(topic.as_bytes());
            b.extend((partitions.len() as i32).to_be_bytes());
            for p in *partitions {
                b.extend(p.to_be_bytes());
            }
        }
        b.extend((user_data.len() as i32).to_be_bytes());
        b.extend(user_data);
        b
    }

    #[test]
    fn a_consumer_assignment_is_read_whatever_its_version() {
        for version in 0..=3 {
            let bytes = assignment(version, &[("orders", &[0, 2]), ("audit", &[])], b"x");
            assert_eq!(
                decode_assignment(&bytes),
                Some(vec![
                    TopicAssignment {
                        topic: "orders".into(),
                        partitions: vec![0, 2]
                    },
                    TopicAssignment {
                        topic: "audit".into(),
                        partitions: vec![]
                    },
                ])
            );
        }
    }

    #[test]
    fn bytes_that_are_not_an_assignment_give_none() {
        let good = assignment(0, &[("orders", &[0, 1])], b"");
        for cut in 0..good.len() - 4 {
            assert_eq!(decode_assignment(&good[..cut]), None, "cut at {cut}");
        }
        let negative = assignment(0, &[("orders", &[-1])], b"");
        assert_eq!(decode_assignment(&negative), None);
        let mut huge = 0i16.to_be_bytes().to_vec();
        huge.extend(i32::MAX.to_be_bytes());
        assert_eq!(decode_assignment(&huge), None);
        assert_eq!(decode_assignment(&(-1i16).to_be_bytes()), None);
    }

    #[test]
    fn an_empty_assignment_has_no_topics() {
        assert_eq!(decode_assignment(&assignment(1, &[], b"")), Some(vec![]));
    }
}
