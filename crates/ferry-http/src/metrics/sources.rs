//! Postgres sources in `/metrics`: progress, lag and the WAL their slots hold, read
//! from each source's status when scraped.

use super::snapshot::{family, Labels};
use super::Registration;
use ferry_source_pg::{SourceState, Sources};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use std::sync::Arc;

struct SourcesCollector(Arc<Sources>);

impl std::fmt::Debug for SourcesCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SourcesCollector")
    }
}

/// Registers the sources' metrics (`ferry_source_*`) for every scrape.
pub fn registration(sources: Arc<Sources>) -> Registration {
    Arc::new(move |registry| {
        registry.register_collector(Box::new(SourcesCollector(sources.clone())));
    })
}

impl Collector for SourcesCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let all = self.0.list();
        let label = |name: &str| -> Labels { vec![("source", name.to_string())] };
        let gauge = |f: &dyn Fn(&ferry_source_pg::SourceInfo) -> Option<f64>| {
            all.iter()
                .filter_map(|s| f(s).map(|v| (label(&s.spec.name), ConstGauge::new(v))))
                .collect::<Vec<_>>()
        };
        let counter = |f: &dyn Fn(&ferry_source_pg::SourceInfo) -> u64| {
            all.iter()
                .map(|s| (label(&s.spec.name), ConstCounter::new(f(s))))
                .collect::<Vec<_>>()
        };
        family(
            &mut e,
            "source_streaming",
            "1 while the source streams changes, 0 while it starts, reads its snapshot, retries or is paused",
            MetricType::Gauge,
            gauge(&|s| Some(f64::from(u8::from(s.status.state == SourceState::Streaming)))),
        )?;
        family(
            &mut e,
            "source_records",
            "Records the source wrote since the server started",
            MetricType::Counter,
            counter(&|s| s.status.records),
        )?;
        family(
            &mut e,
            "source_transactions",
            "Postgres transactions the source received since the server started",
            MetricType::Counter,
            counter(&|s| s.status.transactions),
        )?;
        family(
            &mut e,
            "source_skipped",
            "Changes the source left out (an outbox row without a topic, an invalid topic name)",
            MetricType::Counter,
            counter(&|s| s.status.skipped),
        )?;
        family(
            &mut e,
            "source_lag_bytes",
            "WAL written in Postgres after the source's confirmed position",
            MetricType::Gauge,
            gauge(&|s| s.status.lag_bytes.map(|v| v as f64)),
        )?;
        family(
            &mut e,
            "source_lag_seconds",
            "While the slot has WAL left to read, seconds since the newest commit the source captured (or, before the first, since its stream started); 0 when caught up",
            MetricType::Gauge,
            gauge(&|s| s.status.lag_ms.map(|v| v as f64 / 1000.0)),
        )?;
        family(
            &mut e,
            "source_capture_lag_seconds",
            "Seconds from the last captured commit in Postgres to its records being durable in Ferry",
            MetricType::Gauge,
            gauge(&|s| s.status.capture_lag_ms.map(|v| v as f64 / 1000.0)),
        )?;
        family(
            &mut e,
            "source_slot_wal_bytes",
            "WAL the source's replication slot holds back in Postgres",
            MetricType::Gauge,
            gauge(&|s| s.status.slot_wal_bytes.map(|v| v as f64)),
        )?;
        family(
            &mut e,
            "source_slot_wal_warning",
            "1 when the slot holds more WAL than the source's max_slot_wal_bytes",
            MetricType::Gauge,
            gauge(&|s| Some(f64::from(u8::from(s.status.slot_wal_warning)))),
        )
    }
}
