//! `GET /metrics`: Prometheus exposition of everything Ferry measures.
//!
//! Two kinds of numbers. Those counted as things happen (request latencies, sync
//! latencies, push attempts, records in and out) live where they happen, as atomics or
//! `prometheus-client` handles, and cost an increment. Those that describe state
//! (offsets, backlogs, lag, breaker states) are read from the broker when scraped. Each
//! scrape gathers a [`Snapshot`] (asynchronously: a subscription's oldest age needs a
//! read) and encodes it with the handles into a registry made for that scrape.
//!
//! Label cardinality is bounded by what users create: topics × partitions,
//! subscriptions, consumer groups × partitions. `--metrics-detail topic` folds
//! per-partition series into per-topic ones.
//!
//! The body is OpenMetrics text when the scraper asks for it (as Prometheus does) and
//! the Prometheus text format 0.0.4 otherwise.

use crate::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use ferry_broker::groups::GroupState;
use ferry_broker::subs::{PushMetrics, SubscriptionStatus};
use ferry_broker::{Broker, TopicInfo};
use ferry_log::LogTraffic;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Instant;

/// How finely topic and group series are labelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Detail {
    /// One series per partition (label `partition`).
    #[default]
    Partition,
    /// One series per topic: partitions summed, no `partition` label.
    Topic,
}

impl std::str::FromStr for Detail {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "partition" => Ok(Detail::Partition),
            "topic" => Ok(Detail::Topic),
            _ => Err(format!(
                "metrics detail must be `partition` or `topic`, got `{s}`"
            )),
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: String,
    status_class: &'static str,
}

fn request_histogram() -> Histogram {
    // 10 µs .. 50 s (long polls wait up to 30 s).
    Histogram::new(ferry_log::metrics::buckets(-5, 1))
}

/// The HTTP listener's own metrics. Cloning shares them.
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Histogram, fn() -> Histogram>,
    /// Connections open now, and accepted since start.
    pub connections: Gauge,
    pub connections_accepted: Counter,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        HttpMetrics {
            requests: Family::new_with_constructor(request_histogram),
            connections: Gauge::default(),
            connections_accepted: Counter::default(),
        }
    }
}

/// Adds metrics to a scrape's registry: how other parts of Ferry (the Kafka listener)
/// put theirs in.
pub type Registration = Arc<dyn Fn(&mut Registry) + Send + Sync>;

/// Everything `/metrics` shows. Cloning shares it.
#[derive(Clone)]
pub struct Metrics {
    pub http: HttpMetrics,
    detail: Detail,
    others: Vec<Registration>,
    started: std::time::SystemTime,
}

impl Metrics {
    pub fn new(detail: Detail) -> Self {
        Metrics {
            http: HttpMetrics::default(),
            detail,
            others: Vec::new(),
            started: std::time::SystemTime::now(),
        }
    }

    /// Adds another part's metrics to every scrape.
    pub fn with(mut self, register: Registration) -> Self {
        self.others.push(register);
        self
    }

    /// The exposition of every metric, gathered now.
    pub async fn render(&self, broker: &Arc<Broker>, openmetrics: bool) -> String {
        let snapshot = Snapshot::gather(broker, self.detail).await;
        let mut root = Registry::default();
        root.register_collector(Box::new(Process {
            started: self.started,
        }));
        let ferry = root.sub_registry_with_prefix("ferry");
        let log = broker.log_metrics();
        ferry.register(
            "log_sync_duration_seconds",
            "Seconds of each fdatasync of a partition's segment (group commit and segment roll)",
            log.sync_seconds.clone(),
        );
        ferry.register(
            "log_append_duration_seconds",
            "Seconds of each append to a partition log (checks and the write, without the sync)",
            log.append_seconds.clone(),
        );
        ferry.register(
            "log_records_per_sync",
            "Records made durable by one group-commit fdatasync",
            log.records_per_sync.clone(),
        );
        ferry.register(
            "http_request_duration_seconds",
            "HTTP requests by method, route and status class: seconds from the request to its answer's head",
            self.http.requests.clone(),
        );
        ferry.register(
            "http_connections",
            "HTTP connections open now",
            self.http.connections.clone(),
        );
        ferry.register(
            "http_connections_accepted",
            "HTTP connections accepted",
            self.http.connections_accepted.clone(),
        );
        for register in &self.others {
            register(ferry);
        }
        ferry.register_collector(Box::new(snapshot));
        let mut out = String::new();
        // Writing into a String cannot fail, and every name and label here is ours.
        let _ = prometheus_client::encoding::text::encode(&mut out, &root);
        if openmetrics {
            out
        } else {
            to_text_format(&out)
        }
    }
}

/// Measures each request by its route (the pattern it matched, never the raw path, so
/// that names in paths add no series). A tower layer rather than a `from_fn`
/// middleware: it wraps the route's service without boxing anything per request.
#[derive(Clone)]
pub struct MeasureLayer(pub Option<Arc<Metrics>>);

impl<S> tower_layer::Layer<S> for MeasureLayer {
    type Service = Measure<S>;
    fn layer(&self, inner: S) -> Measure<S> {
        Measure {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Measure<S> {
    inner: S,
    metrics: Option<Arc<Metrics>>,
}

impl<S> tower_service::Service<Request> for Measure<S>
where
    S: tower_service::Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Measured<S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let pending = self.metrics.as_ref().map(|m| {
            let route = req
                .extensions()
                .get::<MatchedPath>()
                .map_or("unmatched", |p| p.as_str())
                .to_string();
            (
                Arc::clone(m),
                method_label(req.method()),
                route,
                Instant::now(),
            )
        });
        Measured {
            inner: self.inner.call(req),
            pending,
        }
    }
}

pin_project_lite::pin_project! {
    /// A request's answer on its way, timed until it is ready.
    pub struct Measured<F> {
        #[pin]
        inner: F,
        pending: Option<(Arc<Metrics>, &'static str, String, Instant)>,
    }
}

impl<F, E> std::future::Future for Measured<F>
where
    F: std::future::Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let answer = std::task::ready!(this.inner.poll(cx));
        if let (Some((metrics, method, route, started)), Ok(response)) =
            (this.pending.take(), &answer)
        {
            let status_class = match response.status().as_u16() / 100 {
                1 => "1xx",
                2 => "2xx",
                3 => "3xx",
                4 => "4xx",
                _ => "5xx",
            };
            metrics
                .http
                .requests
                .get_or_create(&RequestLabels {
                    method,
                    route,
                    status_class,
                })
                .observe(started.elapsed().as_secs_f64());
        }
        std::task::Poll::Ready(answer)
    }
}

/// The method as a label: the standard ones by name, any other as `OTHER` (methods are
/// client input; they must not add series).
fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// `GET /metrics`.
pub async fn handler(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(metrics) = state.metrics else {
        return crate::problem::Problem::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
            "metrics are not served by this server".to_string(),
        )
        .into_response();
    };
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let body = metrics.render(&state.broker, openmetrics).await;
    let content_type = if openmetrics {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; version=0.0.4; charset=utf-8"
    };
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// Rewrites OpenMetrics text as the Prometheus text format 0.0.4: counters are named
/// with their `_total` in `# HELP` and `# TYPE`, and `# UNIT` and `# EOF` go.
fn to_text_format(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<&str> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some(h) = help.take() {
                out.push_str(h);
                out.push('\n');
            }
            help = Some(rest);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name, kind) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "unknown" => (name.to_string(), "untyped"),
                k => (name.to_string(), k),
            };
            if let Some(h) = help.take() {
                let text = h.split_once(' ').map_or("", |(_, t)| t);
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// State read from the broker for one scrape.
#[derive(Debug)]
struct Snapshot {
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
    async fn gather(broker: &Arc<Broker>, detail: Detail) -> Snapshot {
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

type Labels = Vec<(&'static str, String)>;

/// Writes one metric family of constant values.
fn family<M: EncodeMetric>(
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
        let mut lag: std::collections::BTreeMap<Labels, i64> = Default::default();
        for g in &self.groups {
            for (topic, partition, committed, end) in &g.committed {
                let behind = (*end as i64).saturating_sub(*committed).max(0);
                let mut l = group(g);
                l.push(("topic", topic.clone()));
                if self.detail == Detail::Partition {
                    l.push(("partition", partition.to_string()));
                }
                *lag.entry(l).or_default() += behind;
            }
        }
        family(
            e,
            "group_lag",
            "Records behind: end offset minus the committed offset",
            MetricType::Gauge,
            lag.into_iter().map(|(l, v)| (l, ConstGauge::new(v))),
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

/// The process's own numbers, under the names Prometheus's client libraries use.
#[derive(Debug)]
struct Process {
    started: std::time::SystemTime,
}

/// Fields of `/proc/self/stat` after the command name: (user ticks, system ticks,
/// threads).
fn proc_stat() -> Option<(u64, u64, i64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, stime 15, threads 20.
    let utime = fields.get(11)?.parse().ok()?;
    let stime = fields.get(12)?.parse().ok()?;
    let threads = fields.get(17)?.parse().ok()?;
    Some((utime, stime, threads))
}

fn sysconf(name: libc::c_int) -> Option<u64> {
    // SAFETY: sysconf reads a system setting and has no memory effects.
    let v = unsafe { libc::sysconf(name) };
    (v > 0).then_some(v as u64)
}

impl Collector for Process {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let one = |v: f64| vec![(Labels::new(), ConstGauge::new(v))];
        if let Ok(statm) = std::fs::read_to_string("/proc/self/statm") {
            let mut f = statm.split_whitespace().map(|x| x.parse::<u64>().ok());
            let page = sysconf(libc::_SC_PAGESIZE).unwrap_or(4096);
            if let (Some(Some(virt)), Some(Some(rss))) = (f.next(), f.next()) {
                family(
                    &mut e,
                    "process_resident_memory_bytes",
                    "Resident memory size in bytes",
                    MetricType::Gauge,
                    one((rss * page) as f64),
                )?;
                family(
                    &mut e,
                    "process_virtual_memory_bytes",
                    "Virtual memory size in bytes",
                    MetricType::Gauge,
                    one((virt * page) as f64),
                )?;
            }
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            family(
                &mut e,
                "process_open_fds",
                "Open file descriptors",
                MetricType::Gauge,
                one(fds.count() as f64),
            )?;
        }
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct it is given, which lives here.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            family(
                &mut e,
                "process_max_fds",
                "Most file descriptors the process may open",
                MetricType::Gauge,
                one(limit.rlim_cur as f64),
            )?;
        }
        if let Some((utime, stime, threads)) = proc_stat() {
            let ticks = sysconf(libc::_SC_CLK_TCK).unwrap_or(100) as f64;
            family(
                &mut e,
                "process_cpu_seconds",
                "User and system CPU time spent in seconds",
                MetricType::Counter,
                vec![(
                    Labels::new(),
                    ConstCounter::new((utime + stime) as f64 / ticks),
                )],
            )?;
            family(
                &mut e,
                "process_threads",
                "Threads of the process",
                MetricType::Gauge,
                one(threads as f64),
            )?;
        }
        let start = self
            .started
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        family(
            &mut e,
            "process_start_time_seconds",
            "When Ferry started serving, in seconds since the Unix epoch",
            MetricType::Gauge,
            one(start),
        )?;
        family(
            &mut e,
            "ferry_build_info",
            "Ferry's version, as a label of a series whose value is 1",
            MetricType::Gauge,
            vec![(
                vec![("version", env!("CARGO_PKG_VERSION").to_string())],
                ConstGauge::new(1i64),
            )],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format_names_counters_with_total_and_drops_openmetrics_lines() {
        let om = "# HELP ferry_x Things.\n# TYPE ferry_x counter\nferry_x_total{a=\"1\"} 3\n\
                  # HELP ferry_y_seconds Time.\n# TYPE ferry_y_seconds gauge\n# UNIT ferry_y_seconds seconds\n\
                  ferry_y_seconds 1.5\n# EOF\n";
        let text = to_text_format(om);
        assert_eq!(
            text,
            "# HELP ferry_x_total Things.\n# TYPE ferry_x_total counter\nferry_x_total{a=\"1\"} 3\n\
             # HELP ferry_y_seconds Time.\n# TYPE ferry_y_seconds gauge\nferry_y_seconds 1.5\n"
        );
    }

    #[test]
    fn detail_parses_its_two_values_and_refuses_others() {
        assert_eq!("partition".parse::<Detail>(), Ok(Detail::Partition));
        assert_eq!("topic".parse::<Detail>(), Ok(Detail::Topic));
        assert!("group".parse::<Detail>().unwrap_err().contains("partition"));
    }
}
