//! `ferry serve`: open the data folder, serve HTTP, shut down cleanly on SIGTERM/SIGINT.

use crate::settings::Settings;
use anyhow::Context;
use ferry_broker::{Broker, BrokerConfig};
use std::time::Instant;
use tracing_subscriber::EnvFilter;

fn init_logs(settings: &Settings) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&settings.log).with_context(|| {
        format!(
            "invalid log filter {:?}; try info, debug or ferry_log=debug",
            settings.log
        )
    })?;
    // A closed log pipe must never fail requests: tracing-subscriber would otherwise
    // report its failed write with `eprintln!`, which panics on a closed stderr.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    if settings.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
    Ok(())
}

/// Raises this process's limit of open files to its hard limit (each segment of each
/// partition keeps its file open) and returns the limit in force.
fn raise_open_file_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    (lim.rlim_cur != libc::RLIM_INFINITY).then_some(lim.rlim_cur)
}

/// Segment files the broker may hold open under a limit of `open_files`: what is left
/// once connections (Kafka's and HTTP's at most) and other files (push connections,
/// journals, indexes being written) are set aside, and never more than half the limit
/// set aside.
fn max_open_segments(open_files: u64, max_connections: usize) -> u64 {
    let reserve = (1024 + max_connections as u64).min(open_files / 2);
    open_files - reserve
}

/// How long requests in flight (long polls among them) get to finish after a signal.
const SHUTDOWN_GRACE_MS: u64 = 5_000;

async fn shutdown_signal(stopping: tokio::sync::watch::Sender<bool>) {
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
    let _ = stopping.send(true);
}

pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let started = Instant::now();
    init_logs(&settings)?;
    let traces = match &settings.otlp_endpoint {
        Some(endpoint) => Some(crate::traces::Traces::start(
            endpoint,
            settings.otlp_max_queue_spans,
        )?),
        None => None,
    };
    ferry_log::compression::set_decompression_budget(settings.decompress_memory_bytes);
    let open_files = raise_open_file_limit();
    let max_open_segments = open_files.map(|n| {
        max_open_segments(
            n,
            settings.kafka_max_connections + settings.http_max_connections,
        )
    });
    let broker_config = BrokerConfig {
        data_dir: settings.data_dir.clone(),
        defaults: settings.defaults.clone(),
        retention_check_ms: settings.retention_check_ms,
        max_partitions: settings.max_partitions,
        max_open_segments,
        cleaner_offset_map_bytes: settings.cleaner_offset_map_bytes,
    };
    let broker = match &settings.shared {
        None => Broker::open(broker_config).with_context(|| {
            format!(
                "cannot open the data folder {}",
                settings.data_dir.display()
            )
        })?,
        Some(shared) => {
            let log = ferry_shared::SharedLog::open(shared.clone())
                .await
                .map_err(|e| anyhow::anyhow!("shared mode: cannot open the shared log: {e}"))?;
            tracing::info!(object_store = %shared.object_store_url, "Shared mode: records in object storage, state in Postgres.");
            Broker::open_shared(broker_config, log)
                .await
                .map_err(|e| anyhow::anyhow!("shared mode: {e}"))?
        }
    };
    // A transaction a crash left open is aborted, or completed when its end was
    // decided, before any client is served.
    broker
        .recover_transactions()
        .await
        .context("cannot finish the transactions left open by the last run")?;
    let auth = match broker.shared_log() {
        // Every node shares them, in Postgres.
        Some(log) => {
            let auth =
                crate::shared_auth::open(&settings.data_dir, settings.auth.clone(), log.clone())
                    .await?;
            crate::shared_auth::spawn_refresh(&auth);
            auth
        }
        None => ferry_auth::Auth::open(&settings.data_dir, settings.auth.clone())
            .map_err(|e| anyhow::anyhow!("cannot open the users, tokens and ACLs: {e}"))?,
    };
    let http_tls = acceptor(
        "HTTP",
        settings.http_tls.as_ref(),
        ferry_auth::tls::ALPN_HTTP,
    )?;
    if let (true, Some(tls)) = (broker.is_shared(), &settings.http_tls) {
        // Requests passed on to the node serving a subscription or group go over TLS.
        ferry_http::forward::use_tls_between_nodes(peer_tls(tls)?);
    }
    let kafka_tls = acceptor("Kafka", settings.kafka_tls.as_ref(), &[])?;
    let push_roots = match &settings.push_ca_file {
        Some(path) => ferry_auth::tls::load_certificates(path)
            .map_err(|e| anyhow::anyhow!("push_ca_file: {e}"))?,
        None => Vec::new(),
    };
    let maintenance = broker.spawn_maintenance();
    let listener = tokio::net::TcpListener::bind(settings.http_addr).await.with_context(|| {
        format!("cannot listen on {} for HTTP; is another server using it? Choose another with --http-addr", settings.http_addr)
    })?;
    let kafka_listener = tokio::net::TcpListener::bind(settings.kafka_addr).await.with_context(|| {
        format!("cannot listen on {} for Kafka clients; is a Kafka broker running? Choose another with --kafka-addr", settings.kafka_addr)
    })?;
    let kafka_local = kafka_listener
        .local_addr()
        .context("reading the Kafka listener's address")?;
    let (stopping, mut stopped) = tokio::sync::watch::channel(false);
    let kafka_metrics = ferry_kafka::KafkaMetrics::default();
    let sources = ferry_source_pg::Sources::open(broker.clone())
        .map_err(|e| anyhow::anyhow!("cannot load the Postgres sources: {e}"))?;
    let metrics = ferry_http::metrics::Metrics::new(settings.metrics_detail)
        .with({
            let kafka_metrics = kafka_metrics.clone();
            std::sync::Arc::new(move |registry| kafka_metrics.register(registry))
        })
        .with(ferry_http::metrics::sources::registration(sources.clone()));
    let mut kafka_cfg = kafka_config(&settings, kafka_local);
    if broker.is_shared() {
        // Kafka clients learn every live node; this one's id comes from Postgres.
        kafka_cfg.node_id = broker
            .join_shared(&kafka_cfg.advertised_host, kafka_cfg.advertised_port)
            .await
            .map_err(|e| anyhow::anyhow!("shared mode: cannot join the nodes: {e}"))?;
    }
    if broker.is_shared() {
        // Other nodes pass requests for the subscriptions this node serves on to it.
        let http_port = listener
            .local_addr()
            .context("reading the HTTP listener's address")?
            .port();
        let addr = format!("{}:{http_port}", kafka_cfg.advertised_host);
        broker
            .publish_http_addr(&addr)
            .await
            .map_err(|e| anyhow::anyhow!("shared mode: cannot publish the HTTP address: {e}"))?;
    }
    let kafka = tokio::spawn(ferry_kafka::serve(
        kafka_listener,
        broker.clone(),
        kafka_cfg,
        kafka_metrics,
        auth.clone(),
        kafka_tls.clone(),
        stopped.clone(),
    ));
    // Registers itself with the broker; kept until the server stops.
    let _push = ferry_push::Dispatchers::start(
        broker.clone(),
        ferry_push::guard::Guard {
            allow_private: settings.push_allow_private,
            allow_networks: settings.push_allow_networks.clone(),
        },
        push_roots,
    )
    .context("starting the push dispatcher")?;
    let state = ferry_http::AppState {
        broker: broker.clone(),
        max_request_bytes: settings.max_request_bytes,
        metrics: Some(std::sync::Arc::new(metrics.clone())),
        auth,
        sources: sources.clone(),
    };
    tracing::info!(
        http_addr = %listener.local_addr().map_or_else(|_| settings.http_addr.to_string(), |a| a.to_string()),
        http_tls = http_tls.is_some(),
        kafka_addr = %kafka_local,
        kafka_tls = kafka_tls.is_some(),
        data_dir = %settings.data_dir.display(),
        topics = broker.list_topics().len(),
        open_files_limit = open_files,
        max_open_segments,
        startup_ms = started.elapsed().as_secs_f64() * 1000.0,
        "Ferry is ready."
    );
    let server = ferry_http::server::serve(
        listener,
        ferry_http::router(state),
        ferry_http::server::ServerLimits {
            max_connections: settings.http_max_connections,
            header_timeout: std::time::Duration::from_millis(settings.http_header_timeout_ms),
            connections: Some(metrics.http.clone()),
            tls: http_tls.clone(),
            identify_peers: settings.auth.required,
        },
        shutdown_signal(stopping),
    );
    // Keep certificates fresh while serving (stopped with the runtime).
    let reloaders: Vec<_> = [&http_tls, &kafka_tls]
        .into_iter()
        .flatten()
        .map(|t| t.spawn_reloader())
        .collect();
    let grace = async move {
        let _ = stopped.wait_for(|s| *s).await;
        tokio::time::sleep(std::time::Duration::from_millis(SHUTDOWN_GRACE_MS)).await;
    };
    tokio::select! {
        () = server => {}
        _ = grace => tracing::warn!(grace_ms = SHUTDOWN_GRACE_MS, "Requests still open after the grace period are dropped."),
    }
    sources.shutdown().await;
    maintenance.abort();
    kafka.abort();
    // In shared mode, others take this node's groups at once instead of waiting for
    // its beat to age.
    broker.leave_shared().await;
    reloaders.iter().for_each(|r| r.abort());
    let synced = sync_at_shutdown(broker).await;
    if let Some(traces) = traces {
        traces.stop().await;
    }
    synced
}

/// A listener's TLS acceptor, when it has TLS settings: the files are loaded now, so
/// that bad ones stop Ferry from starting; the certificate in use is logged.
fn acceptor(
    listener: &'static str,
    settings: Option<&ferry_auth::tls::TlsSettings>,
    alpn: &[&[u8]],
) -> anyhow::Result<Option<ferry_auth::tls::TlsAcceptor>> {
    let Some(settings) = settings else {
        return Ok(None);
    };
    let acceptor = ferry_auth::tls::TlsAcceptor::new(listener, settings, alpn)
        .map_err(|e| anyhow::anyhow!("cannot set up TLS for the {listener} listener: {e}"))?;
    tracing::info!(
        listener,
        cert = %settings.cert.display(),
        certificate = %acceptor.describe(),
        client_auth = ?settings.client_auth,
        "TLS is on for this listener."
    );
    Ok(Some(acceptor))
}

/// The Kafka listener's settings; it listens on `local`.
fn kafka_config(settings: &Settings, local: std::net::SocketAddr) -> ferry_kafka::KafkaConfig {
    let (advertised_host, advertised_port) = settings
        .kafka_advertised
        .clone()
        .unwrap_or_else(|| (local.ip().to_string(), local.port()));
    ferry_kafka::KafkaConfig {
        addr: local,
        advertised_host,
        advertised_port,
        node_id: 0,
        max_frame_bytes: settings.kafka_max_request_bytes,
        max_connections: settings.kafka_max_connections,
        fetch_bytes_max: 64 * 1024 * 1024,
        auto_create_topics: settings.kafka_auto_create_topics,
    }
}

/// Syncs every partition once serving has stopped.
async fn sync_at_shutdown(broker: std::sync::Arc<Broker>) -> anyhow::Result<()> {
    let synced = tokio::task::spawn_blocking(move || broker.shutdown())
        .await
        .context("shutdown task failed")?;
    if !synced {
        anyhow::bail!("some partitions could not be synced at shutdown (see the log above); they are recovered from disk at the next start");
    }
    tracing::info!("Ferry stopped; every partition is synced.");
    Ok(())
}

/// How a node of shared mode that serves HTTP over TLS checks the nodes it passes
/// requests on to: their certificates must chain to the system's authorities, to a
/// certificate of this node's own `--tls-cert` file (a cluster's shared certificate,
/// or the authority a chain file ends with), or to `--tls-client-ca`. No client
/// certificate is presented: a request passed on carries its caller's credentials.
fn peer_tls(tls: &ferry_auth::tls::TlsSettings) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = ferry_auth::tls::load_certificates(&tls.cert)
        .map_err(|e| anyhow::anyhow!("tls_cert: {e}"))?;
    if let Some(ca) = &tls.client_ca {
        roots.extend(
            ferry_auth::tls::load_certificates(ca)
                .map_err(|e| anyhow::anyhow!("tls_client_ca: {e}"))?,
        );
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(roots, provider.clone())
            .map_err(|e| anyhow::anyhow!("the trust store for other nodes: {e}"))?;
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow::anyhow!("TLS between nodes: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(verifier))
        .with_no_client_auth())
}
