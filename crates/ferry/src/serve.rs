//! `ferry serve`: open the data folder, serve HTTP, shut down cleanly on SIGTERM/SIGINT.

use crate::settings::Settings;
use anyhow::Context;
use ferry_broker::{Broker, BrokerConfig};
use std::time::Instant;
use tracing_subscriber::EnvFilter;

fn init_logs(settings: &Settings) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&settings.log)
        .with_context(|| format!("invalid log filter {:?}; try info, debug or ferry_log=debug", settings.log))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if settings.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "Cannot listen for SIGTERM; only Ctrl-C stops Ferry cleanly.");
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
    tracing::info!("Shutting down: finishing requests, then syncing partitions.");
}

pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let started = Instant::now();
    init_logs(&settings)?;
    let broker = Broker::open(BrokerConfig {
        data_dir: settings.data_dir.clone(),
        defaults: settings.defaults.clone(),
        retention_check_ms: settings.retention_check_ms,
    })
    .with_context(|| format!("cannot open the data folder {}", settings.data_dir.display()))?;
    let maintenance = broker.spawn_maintenance();
    let listener = tokio::net::TcpListener::bind(settings.http_addr).await.with_context(|| {
        format!("cannot listen on {} for HTTP; is another server using it? Choose another with --http-addr", settings.http_addr)
    })?;
    let state = ferry_http::AppState { broker: broker.clone(), max_request_bytes: settings.max_request_bytes };
    tracing::info!(
        http_addr = %listener.local_addr().map_or_else(|_| settings.http_addr.to_string(), |a| a.to_string()),
        data_dir = %settings.data_dir.display(),
        topics = broker.list_topics().len(),
        startup_ms = started.elapsed().as_secs_f64() * 1000.0,
        "Ferry is ready."
    );
    axum::serve(listener, ferry_http::router(state)).with_graceful_shutdown(shutdown_signal()).await.context("HTTP server failed")?;
    maintenance.abort();
    let b = broker.clone();
    tokio::task::spawn_blocking(move || b.shutdown()).await.context("shutdown task failed")?;
    tracing::info!("Ferry stopped; every partition is synced.");
    Ok(())
}
