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
//!
//! One role per file: `snapshot` reads the broker's state at scrape time, `process`
//! reads the process's own numbers. HTTP requests are timed by `crate::observe`.

mod process;
mod snapshot;
pub mod sources;

use process::Process;
use snapshot::Snapshot;

use crate::AppState;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use ferry_broker::Broker;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::Arc;

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
            requests: Family::new_with_constructor(ferry_log::metrics::request_histogram),
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

    /// Counts one answered HTTP request of `route` (the pattern it matched).
    pub fn record_request(
        &self,
        method: &axum::http::Method,
        route: String,
        status: StatusCode,
        took: std::time::Duration,
    ) {
        let status_class = match status.as_u16() / 100 {
            1 => "1xx",
            2 => "2xx",
            3 => "3xx",
            4 => "4xx",
            _ => "5xx",
        };
        self.http
            .requests
            .get_or_create(&RequestLabels {
                method: method_label(method),
                route,
                status_class,
            })
            .observe(took.as_secs_f64());
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
            "Seconds of each append to a partition log (checks and the write, and the sync of a segment rolled on the way; not the group commit's sync)",
            log.append_seconds.clone(),
        );
        ferry.register(
            "log_records_per_sync",
            "Records made durable by one group-commit fdatasync",
            log.records_per_sync.clone(),
        );
        let cleaner = broker.cleaner_counters();
        for (name, help, c) in [
            (
                "cleaner_passes",
                "Compaction passes that rewrote segments of compacted topics",
                &cleaner.passes,
            ),
            (
                "cleaner_failures",
                "Compaction passes that failed (the partition stays as it was)",
                &cleaner.failures,
            ),
            (
                "cleaner_bytes_read",
                "Bytes of the segments compaction rewrote, before",
                &cleaner.bytes_read,
            ),
            (
                "cleaner_bytes_written",
                "Bytes of the segments compaction rewrote, after",
                &cleaner.bytes_written,
            ),
            (
                "cleaner_records_removed",
                "Records compaction removed: older versions of keys and expired tombstones",
                &cleaner.records_removed,
            ),
        ] {
            ferry.register(name, help, c.clone());
        }
        ferry.register(
            "cleaner_seconds",
            "Seconds spent in compaction passes",
            cleaner.seconds.clone(),
        );
        if let Some(shared) = broker.shared_log() {
            let m = shared.metrics();
            for (name, help, c) in [
                (
                    "shared_objects_written",
                    "Objects of batches written to the object store (shared mode)",
                    &m.objects_written,
                ),
                (
                    "shared_object_bytes_written",
                    "Bytes of objects written to the object store (shared mode)",
                    &m.object_bytes_written,
                ),
                (
                    "shared_object_batches_written",
                    "Batches in the objects written (shared mode)",
                    &m.object_batches_written,
                ),
                (
                    "shared_object_write_failures",
                    "Objects whose upload or commit failed; their appends failed (shared mode)",
                    &m.object_write_failures,
                ),
                (
                    "shared_orphans_removed",
                    "Objects no batch named, removed by the sweep (shared mode)",
                    &m.orphans_removed,
                ),
                (
                    "shared_compacted_objects",
                    "Objects written by merging small objects into objects of one partition (shared mode)",
                    &m.compacted_objects,
                ),
                (
                    "shared_compacted_batches",
                    "Batches moved into merged objects (shared mode)",
                    &m.compacted_batches,
                ),
                (
                    "shared_compacted_bytes",
                    "Bytes of the merged objects written (shared mode)",
                    &m.compacted_bytes,
                ),
            ] {
                ferry.register(name, help, c.clone());
            }
            ferry.register(
                "shared_put_duration_seconds",
                "Seconds of each object's PUT to the object store (shared mode)",
                m.put_seconds.clone(),
            );
            ferry.register(
                "shared_commit_duration_seconds",
                "Seconds of each object's sequencing transaction in Postgres (shared mode)",
                m.commit_seconds.clone(),
            );
        }
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
