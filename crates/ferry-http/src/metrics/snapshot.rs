//! The broker's state, read when `/metrics` is scraped: topics and partitions,
//! subscriptions, consumer groups and push subscriptions, encoded as constant series.

use super::Detail;
use ferry_broker::groups::GroupState;
use ferry_broker::subs::{PushMetrics, SubscriptionStatus};
use ferry_broker::{Broker, TopicInfo};
use ferry_log::LogTraffic;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use std::sync::Arc;

/// State read from the broker for one scrape.
#[derive(Debug)]
pub(super) struct Snapshot {
    detail: Detail,
    topics: Vec<(TopicInfo, Vec<LogTraffic>)>,
    subscriptions: Vec<SubscriptionStatus>,
    groups: Vec<GroupNumbers>,
    push: Vec<PushMetrics>,
}

#[derive(Debug)]
struct GroupNumbers {
    group: String,
    state: GroupState,
    members: usize,
    generation: i32,
    /// (topic, partition, committed offset, end offset).
    committed: Vec<(String, u32, i64, u64)>,
}

impl Snapshot {
    pub(super) async fn gather(broker: &Arc<Broker>, detail: Detail) -> Snapshot {
        let topics = broker
            .list_topics()
            .into_iter()
            .map(|info| {
                let traffic = broker
                    .topic(&info.config.name)
                    .map(|t| {
                        t.partitions()
                            .iter()
                            .map(|p| p.log.counters.snapshot())
                            .collect()
                    })
                    .unwrap_or_default();
                (info, traffic)
            })
            .collect();
        let subscriptions = broker.list_subscriptions().await;
        let mut groups = Vec::new();
        for listing in broker.groups.list().await {
            let d = broker.groups.describe(&listing.group).await;
            let committed = broker
                .groups
                .fetch_offsets(&listing.group, None)
                .into_iter()
                .filter_map(|f| {
                    let c = f.committed?;
                    let end = broker.bounds(&f.topic, f.partition).ok()?.1;
                    Some((f.topic, f.partition, c.offset, end))
                })
                .collect();
            groups.push(GroupNumbers {
                group: listing.group,
                state: listing.state,
                members: d.members.len(),
                generation: d.generation,
                committed,
            });
        }
        Snapshot {
            detail,
            topics,
            subscriptions,
            groups,
            push: broker.push_metrics(),
        }
    }
}

pub(super) type Labels = Vec<(&'static str, String)>;

/// Writes one metric family of constant values.
pub(super) fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    series: impl IntoIterator<Item = (Labels, M)>,
) -> Result<(), std::fmt::Error> {
    let mut series = series.into_iter().peekable();
    if series.peek().is_none() {
        return Ok(());
    }
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in series {
        if labels.is_empty() {
            // A series without labels is the family's only one.
            return value.encode(metric);
        }
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauges<'a, T: 'a>(
    items: impl IntoIterator<Item = &'a T>,
    f: impl Fn(&T) -> (Labels, i64),
) -> Vec<(Labels, ConstGauge<i64>)> {
    items
        .into_iter()
        .map(|t| {
            let (l, v) = f(t);
            (l, ConstGauge::new(v))
        })
        .collect()
}

fn counters<'a, T: 'a>(
    items: impl IntoIterator<Item = &'a T>,
    f: impl Fn(&T) -> (Labels, u64),
) -> Vec<(Labels, ConstCounter<u64>)> {
    items
        .into_iter()
        .map(|t| {
            let (l, v) = f(t);
            (l, ConstCounter::new(v))
        })
        .collect()
}

/// One partition's numbers (or one topic's, partitions summed).
#[derive(Debug, Default, Clone)]
struct PartNumbers {
    labels: Labels,
    traffic: LogTraffic,
    start: u64,
    end: u64,
    size_bytes: u64,
    segments: u64,
}

impl Snapshot {
    fn partitions(&self) -> Vec<PartNumbers> {
        let mut out = Vec::new();
        for (info, traffic) in &self.topics {
            let topic = info.config.name.clone();
            let parts = info.partitions.iter().map(|p| PartNumbers {
                labels: vec![
                    ("topic", topic.clone()),
                    ("partition", p.partition.to_string()),
                ],
                traffic: traffic
                    .get(p.partition as usize)
                    .copied()
                    .unwrap_or_default(),
                start: p.earliest,
                end: p.latest,
                size_bytes: p.size_bytes,
                segments: p.segments as u64,
            });
            match self.detail {
                Detail::Partition => out.extend(parts),
                Detail::Topic => {
                    let mut sum = PartNumbers {
                        labels: vec![("topic", topic.clone())],
                        ..PartNumbers::default()
                    };
                    for p in parts {
                        sum.traffic += p.traffic;
                        sum.start += p.start;
                        sum.end += p.end;
                        sum.size_bytes += p.size_bytes;
                        sum.segments += p.segments;
                    }
                    out.push(sum);
                }
            }
        }
        out
    }

    fn encode_topics(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let parts = self.partitions();
        let topic_counter = |name: &str, help: &str, f: fn(&PartNumbers) -> u64| {
            (name.to_string(), help.to_string(), f)
        };
        for (name, help, f) in [
            topic_counter("topic_records_in", "Records appended", |p| {
                p.traffic.records_in
            }),
            topic_counter("topic_bytes_in", "Bytes of batches appended", |p| {
                p.traffic.bytes_in
            }),
            topic_counter(
                "topic_records_out",
                "Records handed to consumers (Kafka fetches count whole batches)",
                |p| p.traffic.records_out,
            ),
            topic_counter(
                "topic_bytes_out",
                "Bytes handed to consumers (batches over Kafka; keys and values otherwise)",
                |p| p.traffic.bytes_out,
            ),
        ] {
            family(
                e,
                &name,
                &help,
                MetricType::Counter,
                counters(&parts, |p| (p.labels.clone(), f(p))),
            )?;
        }
        for (name, help, f) in [
            (
                "topic_start_offset",
                "First offset still stored (summed over partitions under topic detail)",
                (|p: &PartNumbers| p.start) as fn(&PartNumbers) -> u64,
            ),
            (
                "topic_end_offset",
                "One past the last readable offset (summed over partitions under topic detail)",
                |p| p.end,
            ),
            ("topic_size_bytes", "Bytes of segments on disk", |p| {
                p.size_bytes
            }),
            ("topic_segments", "Segment files", |p| p.segments),
        ] {
            family(
                e,
                name,
                help,
                MetricType::Gauge,
                gauges(&parts, |p| (p.labels.clone(), f(p) as i64)),
            )?;
        }
        family(
            e,
            "topic_partitions",
            "Partitions of the topic",
            MetricType::Gauge,
            gauges(self.topics.iter().map(|(i, _)| i), |i| {
                (
                    vec![("topic", i.config.name.clone())],
                    i64::from(i.config.partitions),
                )
            }),
        )
    }

    fn encode_subscriptions(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let subs = &self.subscriptions;
        let labels = |s: &SubscriptionStatus| {
            vec![
                ("subscription", s.config.name.clone()),
                ("topic", s.config.topic.clone()),
            ]
        };
        type Get = fn(&SubscriptionStatus) -> i64;
        let gauge_list: [(&str, &str, Get); 7] = [
            (
                "subscription_backlog",
                "Records not yet done: never delivered, in flight, waiting or delayed",
                |s| s.backlog as i64,
            ),
            (
                "subscription_in_flight",
                "Records leased to consumers now",
                |s| i64::from(s.in_flight),
            ),
            (
                "subscription_waiting",
                "Records given back and waiting for redelivery",
                |s| s.waiting as i64,
            ),
            (
                "subscription_delayed",
                "Records waiting for a delay to end",
                |s| s.delayed as i64,
            ),
            (
                "subscription_dead_letter_pending",
                "Records given up on, waiting to be written to the dead-letter topic",
                |s| s.dead_letter_pending as i64,
            ),
            (
                "subscription_paused",
                "1 when the subscription is paused",
                |s| i64::from(s.config.paused),
            ),
            (
                "subscription_push",
                "1 for a push subscription, 0 for a queue subscription",
                |s| i64::from(s.config.push.is_some()),
            ),
        ];
        for (name, help, f) in gauge_list {
            family(
                e,
                name,
                help,
                MetricType::Gauge,
                gauges(subs, |s| (labels(s), f(s))),
            )?;
        }
        let ages: Vec<(Labels, ConstGauge<f64>)> = subs
            .iter()
            .map(|s| {
                let age = s.oldest_unacked_age_ms.unwrap_or(0) as f64 / 1000.0;
                (labels(s), ConstGauge::new(age))
            })
            .collect();
        family(
            e,
            "subscription_oldest_unacked_age_seconds",
            "Age of the oldest record not yet done (0 when none)",
            MetricType::Gauge,
            ages,
        )?;
        type Count = fn(&SubscriptionStatus) -> u64;
        let counter_list: [(&str, &str, Count); 5] = [
            (
                "subscription_delivered",
                "Deliveries (leases given), redeliveries included",
                |s| s.delivered,
            ),
            (
                "subscription_redelivered",
                "Deliveries after the first",
                |s| s.redelivered,
            ),
            ("subscription_acked", "Records acknowledged", |s| s.acked),
            (
                "subscription_nacked",
                "Leases given back by consumers since the subscription was opened",
                |s| s.nacked,
            ),
            (
                "subscription_dead_lettered",
                "Records written to the dead-letter topic",
                |s| s.dead_lettered,
            ),
        ];
        for (name, help, f) in counter_list {
            family(
                e,
                name,
                help,
                MetricType::Counter,
                counters(subs, |s| (labels(s), f(s))),
            )?;
        }
        Ok(())
    }

    fn encode_groups(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let group = |g: &GroupNumbers| vec![("group", g.group.clone())];
        family(
            e,
            "group_members",
            "Members of the consumer group",
            MetricType::Gauge,
            gauges(&self.groups, |g| (group(g), g.members as i64)),
        )?;
        let states = [
            GroupState::Empty,
            GroupState::PreparingRebalance,
            GroupState::CompletingRebalance,
            GroupState::Stable,
        ];
        let state_series: Vec<(Labels, ConstGauge<i64>)> = self
            .groups
            .iter()
            .flat_map(|g| {
                states.iter().map(move |s| {
                    let mut l = group(g);
                    l.push(("state", s.name().to_string()));
                    (l, ConstGauge::new(i64::from(g.state == *s)))
                })
            })
            .collect();
        family(
            e,
            "group_state",
            "1 for the group's state, 0 for the others",
            MetricType::Gauge,
            state_series,
        )?;
        family(
            e,
            "group_rebalances",
            "Rebalances completed (the group's generation) since the group was loaded",
            MetricType::Counter,
            counters(&self.groups, |g| (group(g), g.generation.max(0) as u64)),
        )?;
        // Per partition, or summed per (group, topic): a map keeps the sums in order.
        let mut lag: std::collections::BTreeMap<Labels, u64> = Default::default();
        for g in &self.groups {
            for (topic, partition, committed, end) in &g.committed {
                // A negative commit means no offset: that partition has no lag to show.
                let Some(behind) = ferry_broker::groups::lag(*end, *committed) else {
                    continue;
                };
                let mut l = group(g);
                l.push(("topic", topic.clone()));
                if self.detail == Detail::Partition {
                    l.push(("partition", partition.to_string()));
                }
                let sum = lag.entry(l).or_default();
                *sum = sum.saturating_add(behind);
            }
        }
        family(
            e,
            "group_lag",
            "Records behind: end offset minus the committed offset",
            MetricType::Gauge,
            lag.into_iter()
                .map(|(l, v)| (l, ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX)))),
        )
    }

    fn encode_push(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let sub = |p: &PushMetrics| vec![("subscription", p.subscription.clone())];
        let attempts: Vec<(Labels, ConstCounter<u64>)> = self
            .push
            .iter()
            .flat_map(|p| {
                p.attempts.iter().map(move |(outcome, class, n)| {
                    let mut l = sub(p);
                    l.push(("outcome", outcome.to_string()));
                    l.push(("status_class", class.to_string()));
                    (l, ConstCounter::new(*n))
                })
            })
            .collect();
        family(
            e,
            "push_attempts",
            "Push attempts by outcome (delivered, retry, dead_letter) and answer status class (none when no answer came)",
            MetricType::Counter,
            attempts,
        )?;
        if !self.push.is_empty() {
            let mut m = e.encode_descriptor(
                "push_attempt_duration_seconds",
                "Seconds from sending a push request to its outcome",
                None,
                MetricType::Histogram,
            )?;
            for p in &self.push {
                let labels = sub(p);
                p.latency_seconds.encode(m.encode_family(&labels)?)?;
            }
        }
        let states: Vec<(Labels, ConstGauge<i64>)> = self
            .push
            .iter()
            .flat_map(|p| {
                ["closed", "open", "half_open"].into_iter().map(move |s| {
                    let mut l = sub(p);
                    l.push(("state", s.to_string()));
                    (l, ConstGauge::new(i64::from(p.breaker == s)))
                })
            })
            .collect();
        family(
            e,
            "push_breaker_state",
            "1 for the circuit breaker's state, 0 for the others",
            MetricType::Gauge,
            states,
        )?;
        let changes: Vec<(Labels, ConstCounter<u64>)> = self
            .push
            .iter()
            .flat_map(|p| {
                p.breaker_changes.iter().map(move |(to, n)| {
                    let mut l = sub(p);
                    l.push(("to", to.to_string()));
                    (l, ConstCounter::new(*n))
                })
            })
            .collect();
        family(
            e,
            "push_breaker_transitions",
            "Changes of the circuit breaker's state, by the state changed to",
            MetricType::Counter,
            changes,
        )?;
        family(
            e,
            "push_in_flight",
            "Push requests on their way now",
            MetricType::Gauge,
            gauges(&self.push, |p| (sub(p), i64::from(p.in_flight))),
        )
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.encode_topics(&mut e)?;
        self.encode_subscriptions(&mut e)?;
        self.encode_groups(&mut e)?;
        self.encode_push(&mut e)
    }
}
