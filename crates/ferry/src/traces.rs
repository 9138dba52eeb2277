//! OpenTelemetry traces: the OTLP/HTTP exporter behind `--otlp-endpoint`.
//!
//! Spans are queued by a batch processor in its own thread, at most
//! `otlp_max_queue_spans` of them; a span ended while the queue is full is dropped, so a
//! slow or unreachable collector costs memory up to that bound and never holds up a
//! request. The exporter is the blocking reqwest client, used only on that thread: the
//! async one panics outside a Tokio runtime (opentelemetry-rust #2673).
//!
//! # Shutdown
//!
//! [`Traces::stop`] exports what is queued (bounded by [`SHUTDOWN_TIMEOUT_MS`]) after
//! the partitions are synced, so that the last requests' spans are not lost.

use anyhow::Context;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use std::time::Duration;

/// Spans queued for export by default: about 1 KiB each.
pub const OTLP_MAX_QUEUE_SPANS_DEFAULT: usize = 4096;
/// How long shutdown waits for queued spans to be exported.
const SHUTDOWN_TIMEOUT_MS: u64 = 5_000;
/// How long one export request may take.
const EXPORT_TIMEOUT_MS: u64 = 10_000;

/// The exporter while tracing is on.
pub struct Traces {
    provider: SdkTracerProvider,
}

/// The URL spans are posted to: `{endpoint}/v1/traces`, unless the endpoint already
/// names that path.
pub fn traces_url(endpoint: &str) -> anyhow::Result<String> {
    let e = endpoint.trim().trim_end_matches('/');
    if !(e.starts_with("http://") || e.starts_with("https://")) || e.len() <= "https://".len() {
        anyhow::bail!("otlp_endpoint must be an http:// or https:// URL (e.g. http://127.0.0.1:4318), got {endpoint:?}");
    }
    Ok(if e.ends_with("/v1/traces") {
        e.to_string()
    } else {
        format!("{e}/v1/traces")
    })
}

impl Traces {
    /// Starts exporting spans to `endpoint` (OTLP/HTTP, protobuf) and turns Ferry's
    /// spans on. The `OTEL_*` variables of the OpenTelemetry SDK apply where Ferry sets
    /// nothing (e.g. `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_BSP_SCHEDULE_DELAY`,
    /// `OTEL_TRACES_SAMPLER`, `OTEL_RESOURCE_ATTRIBUTES`).
    pub fn start(endpoint: &str, max_queue_spans: usize) -> anyhow::Result<Traces> {
        let url = traces_url(endpoint)?;
        // https endpoints: rustls with ring, as everywhere in Ferry.
        ferry_client::install_tls();
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(url.clone())
            .with_timeout(Duration::from_millis(EXPORT_TIMEOUT_MS))
            .build()
            .with_context(|| format!("cannot set up the OTLP exporter for {url}"))?;
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(max_queue_spans)
            .with_max_export_batch_size(max_queue_spans.min(512))
            .build();
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(batch)
            .build();
        let resource = Resource::builder()
            .with_service_name("ferry")
            .with_attributes([
                KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
                KeyValue::new("process.pid", i64::from(std::process::id())),
            ])
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(resource)
            .build();
        let tracer = opentelemetry::global::BoxedTracer::new(Box::new(provider.tracer("ferry")));
        if !ferry_trace::install(tracer) {
            anyhow::bail!("tracing was already set up");
        }
        tracing::info!(url = %url, max_queue_spans, "Exporting traces over OTLP.");
        Ok(Traces { provider })
    }

    /// Exports the spans still queued and stops the exporter; blocks, so it runs on a
    /// blocking thread.
    pub async fn stop(self) {
        let provider = self.provider;
        let done = tokio::task::spawn_blocking(move || {
            provider.shutdown_with_timeout(Duration::from_millis(SHUTDOWN_TIMEOUT_MS))
        })
        .await;
        match done {
            Ok(Ok(())) => tracing::info!(
                "Trace exporter stopped; queued spans were sent (failures are logged above)."
            ),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "Could not export every queued span at shutdown.")
            }
            Err(e) => tracing::warn!(error = %e, "The trace exporter's shutdown failed."),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::traces_url;

    #[test]
    fn the_endpoint_gets_the_traces_path_once() {
        for (given, url) in [
            ("http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/traces"),
            ("http://collector:4318/", "http://collector:4318/v1/traces"),
            (
                "https://otlp.example/v1/traces",
                "https://otlp.example/v1/traces",
            ),
        ] {
            assert_eq!(traces_url(given).expect(given), url);
        }
        for bad in ["", "127.0.0.1:4318", "ftp://x", "http://"] {
            assert!(traces_url(bad).is_err(), "{bad}");
        }
    }
}
