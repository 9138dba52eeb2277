//! Server settings: built-in defaults < TOML file < FERRY_* environment < flags.
//! clap already puts flags over the environment; this adds the file and the defaults.

use crate::cli::ServeArgs;
use anyhow::{bail, Context};
use ferry_broker::{DurabilityPolicy, TopicDefaults};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The TOML file: every key optional, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    data_dir: Option<PathBuf>,
    http_addr: Option<SocketAddr>,
    kafka_addr: Option<SocketAddr>,
    kafka_advertised_addr: Option<String>,
    kafka_max_request_bytes: Option<usize>,
    kafka_max_connections: Option<usize>,
    http_max_connections: Option<usize>,
    http_header_timeout_ms: Option<u64>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
    tls_client_auth: Option<String>,
    tls_listeners: Option<Vec<String>>,
    kafka_auto_create_topics: Option<bool>,
    auth: Option<bool>,
    super_users: Option<Vec<String>>,
    acl_default: Option<String>,
    allow_anonymous: Option<bool>,
    durability: Option<String>,
    flush_interval_ms: Option<u64>,
    default_partitions: Option<u32>,
    retention_ms: Option<i64>,
    retention_bytes: Option<i64>,
    segment_bytes: Option<u64>,
    segment_ms: Option<u64>,
    max_record_bytes: Option<u64>,
    max_request_bytes: Option<usize>,
    decompress_memory_bytes: Option<usize>,
    max_partitions: Option<u32>,
    retention_check_ms: Option<u64>,
    cleaner_offset_map_bytes: Option<usize>,
    metadata_url: Option<String>,
    object_store_url: Option<String>,
    shared_linger_ms: Option<u64>,
    shared_cache_bytes: Option<usize>,
    shared_compact_after_ms: Option<u64>,
    log: Option<String>,
    log_format: Option<String>,
    metrics_detail: Option<String>,
    push_allow_private: Option<bool>,
    push_allow_networks: Option<Vec<String>>,
    push_ca_file: Option<PathBuf>,
    otlp_endpoint: Option<String>,
    otlp_max_queue_spans: Option<usize>,
}

/// HTTP/1.1 carries one request at a time per connection: a service keeping 64 publishes
/// in flight holds 64 connections, so the default leaves room for many such services.
pub const HTTP_MAX_CONNECTIONS_DEFAULT: usize = 4096;

/// Largest span queue a setting may ask for (about 1 GiB of spans).
pub const OTLP_MAX_QUEUE_SPANS_MAX: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub http_addr: SocketAddr,
    pub kafka_addr: SocketAddr,
    /// Host and port told to Kafka clients; `None` means the listener's own address.
    pub kafka_advertised: Option<(String, u16)>,
    pub kafka_max_request_bytes: usize,
    pub kafka_max_connections: usize,
    pub http_max_connections: usize,
    pub http_header_timeout_ms: u64,
    /// TLS on the HTTP listener, if any.
    pub http_tls: Option<ferry_auth::tls::TlsSettings>,
    /// TLS on the Kafka listener, if any.
    pub kafka_tls: Option<ferry_auth::tls::TlsSettings>,
    pub kafka_auto_create_topics: bool,
    /// Authentication and ACLs.
    pub auth: ferry_auth::AuthSettings,
    pub defaults: TopicDefaults,
    pub max_request_bytes: usize,
    /// Memory decompression may hold at once (`ferry_log::compression`).
    pub decompress_memory_bytes: usize,
    /// Most partitions all topics together may have.
    pub max_partitions: u32,
    pub retention_check_ms: u64,
    /// Memory of the cleaner's offset map (compacted topics).
    pub cleaner_offset_map_bytes: usize,
    /// Shared mode's storage; `None`: the local mode.
    pub shared: Option<ferry_shared::SharedConfig>,
    pub log: String,
    pub log_json: bool,
    /// How finely `/metrics` labels topics and groups.
    pub metrics_detail: ferry_http::metrics::Detail,
    /// Push subscriptions may call private and special addresses.
    pub push_allow_private: bool,
    /// Networks push subscriptions may call even though they are private.
    pub push_allow_networks: Vec<ferry_push::guard::Network>,
    /// Extra authorities for push endpoints' certificates.
    pub push_ca_file: Option<PathBuf>,
    /// The OTLP/HTTP collector traces are exported to; `None`: tracing is off.
    pub otlp_endpoint: Option<String>,
    /// Spans waiting for export at most.
    pub otlp_max_queue_spans: usize,
}

fn limit(v: i64, what: &str) -> anyhow::Result<Option<u64>> {
    match v {
        -1 => Ok(None),
        n if n > 0 => Ok(Some(n as u64)),
        n => bail!("{what} must be positive or -1 (no limit), got {n}"),
    }
}

/// A setting's flag or environment value, else its value in the file.
macro_rules! pick {
    ($args:ident, $file:ident, $f:ident) => {
        $args.$f.or($file.$f)
    };
}

pub fn resolve(args: ServeArgs) -> anyhow::Result<Settings> {
    let mut file = read_file(args.config.as_deref())?;
    let defaults = topic_defaults(&args, &mut file)?;
    let (http_tls, kafka_tls) = tls(&args, &mut file)?;
    let auth = auth(&args, &mut file)?;
    let log_format = pick!(args, file, log_format).unwrap_or_else(|| "text".into());
    if log_format != "text" && log_format != "json" {
        bail!("log_format must be text or json, got {log_format:?}");
    }
    let max_request_bytes = pick!(args, file, max_request_bytes).unwrap_or(32 * 1024 * 1024);
    if max_request_bytes < 1024 {
        bail!("max_request_bytes must be at least 1024, got {max_request_bytes}");
    }
    let decompress_memory_bytes = pick!(args, file, decompress_memory_bytes)
        .unwrap_or(ferry_log::compression::DECOMPRESSION_BUDGET_DEFAULT);
    if decompress_memory_bytes < ferry_log::compression::DECOMPRESSION_BUDGET_MIN {
        bail!(
            "decompress_memory_bytes must be at least {}, got {decompress_memory_bytes}",
            ferry_log::compression::DECOMPRESSION_BUDGET_MIN
        );
    }
    let http_header_timeout_ms = pick!(args, file, http_header_timeout_ms).unwrap_or(30_000);
    if !(100..=3_600_000).contains(&http_header_timeout_ms) {
        bail!(
            "http_header_timeout_ms must be between 100 and 3600000, got {http_header_timeout_ms}"
        );
    }
    let kafka_advertised = match pick!(args, file, kafka_advertised_addr) {
        None => None,
        Some(a) => Some(host_port(&a)?),
    };
    let kafka_max_request_bytes =
        pick!(args, file, kafka_max_request_bytes).unwrap_or(100 * 1024 * 1024);
    if kafka_max_request_bytes < 1024 {
        bail!("kafka_max_request_bytes must be at least 1024, got {kafka_max_request_bytes}");
    }
    let metrics_detail = match pick!(args, file, metrics_detail) {
        None => ferry_http::metrics::Detail::default(),
        Some(d) => d.parse().map_err(|e: String| anyhow::anyhow!(e))?,
    };
    let push_allow_networks = match pick!(args, file, push_allow_networks) {
        None => Vec::new(),
        Some(list) => networks(&list)?,
    };
    let otlp_endpoint = pick!(args, file, otlp_endpoint).filter(|e| !e.trim().is_empty());
    if let Some(e) = &otlp_endpoint {
        crate::traces::traces_url(e)?;
    }
    let otlp_max_queue_spans = pick!(args, file, otlp_max_queue_spans)
        .unwrap_or(crate::traces::OTLP_MAX_QUEUE_SPANS_DEFAULT);
    if !(1..=OTLP_MAX_QUEUE_SPANS_MAX).contains(&otlp_max_queue_spans) {
        bail!("otlp_max_queue_spans must be between 1 and {OTLP_MAX_QUEUE_SPANS_MAX}, got {otlp_max_queue_spans}");
    }
    let http_addr =
        pick!(args, file, http_addr).unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
    let kafka_addr =
        pick!(args, file, kafka_addr).unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9092)));
    let allow_anonymous = pick!(args, file, allow_anonymous).unwrap_or(false);
    if !auth.required && !allow_anonymous {
        for (addr, which) in [(http_addr, "--http-addr"), (kafka_addr, "--kafka-addr")] {
            if !addr.ip().is_loopback() {
                bail!(
                    "{which} {addr} is reachable from other machines, and without authentication anyone who reaches it may read, write and delete everything. \
                     Turn authentication on with --auth (create a user first: `ferry user create admin --data-dir DIR`, then add --super-users User:admin), \
                     or pass --allow-anonymous if this network is trusted"
                );
            }
        }
    }
    let shared = match (
        pick!(args, file, metadata_url),
        pick!(args, file, object_store_url),
    ) {
        (None, None) => None,
        (Some(metadata), Some(objects)) => {
            let mut c = ferry_shared::SharedConfig::new(metadata, objects);
            if let Some(ms) = pick!(args, file, shared_linger_ms) {
                c.linger = std::time::Duration::from_millis(ms.min(10_000));
            }
            if let Some(bytes) = pick!(args, file, shared_cache_bytes) {
                c.cache_bytes = bytes;
            }
            if let Some(ms) = pick!(args, file, shared_compact_after_ms) {
                c.compact_after = std::time::Duration::from_millis(ms);
            }
            c.validate().map_err(|e| anyhow::anyhow!("shared mode: {e}"))?;
            Some(c)
        }
        _ => bail!(
            "shared mode needs both --metadata-url (Postgres) and --object-store-url (s3://bucket/prefix); give both, or neither for the local mode"
        ),
    };
    Ok(Settings {
        shared,
        kafka_addr,
        http_tls,
        kafka_tls,
        auth,
        kafka_advertised,
        kafka_max_request_bytes,
        kafka_max_connections: pick!(args, file, kafka_max_connections)
            .unwrap_or(1024)
            .max(1),
        http_max_connections: pick!(args, file, http_max_connections)
            .unwrap_or(HTTP_MAX_CONNECTIONS_DEFAULT)
            .max(1),
        http_header_timeout_ms,
        kafka_auto_create_topics: pick!(args, file, kafka_auto_create_topics).unwrap_or(false),
        data_dir: pick!(args, file, data_dir).unwrap_or_else(|| PathBuf::from("ferry-data")),
        http_addr,
        defaults,
        max_request_bytes,
        decompress_memory_bytes,
        max_partitions: pick!(args, file, max_partitions)
            .unwrap_or(ferry_broker::broker::MAX_PARTITIONS_DEFAULT)
            .max(1),
        retention_check_ms: pick!(args, file, retention_check_ms)
            .unwrap_or(30_000)
            .max(10),
        cleaner_offset_map_bytes: pick!(args, file, cleaner_offset_map_bytes)
            .unwrap_or(ferry_broker::cleaner::CLEANER_OFFSET_MAP_BYTES_DEFAULT)
            .max(ferry_log::log::compaction::OFFSET_MAP_BYTES_MIN),
        log: pick!(args, file, log).unwrap_or_else(|| "info".into()),
        log_json: log_format == "json",
        metrics_detail,
        push_allow_private: pick!(args, file, push_allow_private).unwrap_or(false),
        push_allow_networks,
        push_ca_file: pick!(args, file, push_ca_file),
        otlp_endpoint,
        otlp_max_queue_spans,
    })
}

/// Which listeners speak TLS, with which files.
#[allow(clippy::type_complexity)]
fn tls(
    args: &ServeArgs,
    file: &mut FileSettings,
) -> anyhow::Result<(
    Option<ferry_auth::tls::TlsSettings>,
    Option<ferry_auth::tls::TlsSettings>,
)> {
    use ferry_auth::tls::{ClientAuth, TlsSettings};
    let cert = args.tls_cert.clone().or(file.tls_cert.take());
    let key = args.tls_key.clone().or(file.tls_key.take());
    let client_ca = args.tls_client_ca.clone().or(file.tls_client_ca.take());
    let client_auth = args.tls_client_auth.clone().or(file.tls_client_auth.take());
    let listeners = args.tls_listeners.clone().or(file.tls_listeners.take());
    let (cert, key) = match (cert, key) {
        (Some(c), Some(k)) => (c, k),
        (None, None) => {
            if client_ca.is_some() || client_auth.is_some() || listeners.is_some() {
                bail!("tls_client_ca, tls_client_auth and tls_listeners need tls_cert and tls_key");
            }
            return Ok((None, None));
        }
        _ => bail!("tls_cert and tls_key go together: give both, or neither"),
    };
    let client_auth = match client_auth {
        Some(m) => m.parse::<ClientAuth>().map_err(|e| anyhow::anyhow!(e))?,
        None if client_ca.is_some() => ClientAuth::Required,
        None => ClientAuth::None,
    };
    if client_auth != ClientAuth::None && client_ca.is_none() {
        bail!("tls_client_auth {client_auth:?} needs tls_client_ca: the authorities client certificates are checked against");
    }
    let tls = TlsSettings {
        cert,
        key,
        client_ca,
        client_auth,
    };
    let (mut http, mut kafka) = (false, false);
    for l in listeners.unwrap_or_else(|| vec!["http".into(), "kafka".into()]) {
        match l.trim() {
            "http" => http = true,
            "kafka" => kafka = true,
            "" => {}
            other => bail!("tls_listeners names http and kafka, got {other:?}"),
        }
    }
    Ok((http.then(|| tls.clone()), kafka.then_some(tls)))
}

/// Authentication and ACL settings.
fn auth(args: &ServeArgs, file: &mut FileSettings) -> anyhow::Result<ferry_auth::AuthSettings> {
    let required = pick!(args, file, auth).unwrap_or(false);
    let super_users = args
        .super_users
        .clone()
        .or(file.super_users.take())
        .unwrap_or_default()
        .into_iter()
        .flat_map(|s| {
            s.split(',')
                .map(|p| p.trim().to_string())
                .collect::<Vec<_>>()
        })
        .filter(|s| !s.is_empty())
        .map(|s| {
            ferry_auth::Principal::parse(&s)
                .map(|p| p.kafka_name())
                .map_err(|e| anyhow::anyhow!("super_users: {e}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let no_acl_allows = match args
        .acl_default
        .clone()
        .or(file.acl_default.take())
        .as_deref()
    {
        None | Some("deny") => false,
        Some("allow") => true,
        Some(other) => bail!("acl_default must be allow or deny, got {other:?}"),
    };
    Ok(ferry_auth::AuthSettings {
        required,
        super_users,
        no_acl_allows,
    })
}

/// The TOML file of `--config`; with none, every key absent.
fn read_file(config: Option<&std::path::Path>) -> anyhow::Result<FileSettings> {
    let Some(path) = config else {
        return Ok(FileSettings::default());
    };
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read the config file {}; check the path given to --config",
            path.display()
        )
    })?;
    toml::from_str(&text)
        .with_context(|| format!("the config file {} is not valid", path.display()))
}

/// The settings of new topics, checked as a topic's would be, so that a bad default
/// fails at start. Takes the file's durability (a `String`) out of `file`.
fn topic_defaults(args: &ServeArgs, file: &mut FileSettings) -> anyhow::Result<TopicDefaults> {
    let d = TopicDefaults::default();
    let durability_name = args
        .durability
        .clone()
        .or(file.durability.take())
        .unwrap_or_else(|| "always".into());
    let durability = DurabilityPolicy::parse(&durability_name).with_context(|| {
        format!("durability must be always, interval or never, got {durability_name:?}")
    })?;
    let defaults = TopicDefaults {
        partitions: pick!(args, file, default_partitions).unwrap_or(d.partitions),
        retention_ms: match pick!(args, file, retention_ms) {
            Some(v) => limit(v, "retention_ms")?,
            None => d.retention_ms,
        },
        retention_bytes: match pick!(args, file, retention_bytes) {
            Some(v) => limit(v, "retention_bytes")?,
            None => d.retention_bytes,
        },
        segment_bytes: pick!(args, file, segment_bytes).unwrap_or(d.segment_bytes),
        segment_ms: pick!(args, file, segment_ms).or(d.segment_ms),
        max_record_bytes: pick!(args, file, max_record_bytes).unwrap_or(d.max_record_bytes),
        durability,
        flush_interval_ms: pick!(args, file, flush_interval_ms).unwrap_or(d.flush_interval_ms),
    };
    ferry_broker::TopicConfig {
        name: "defaults".into(),
        partitions: defaults.partitions,
        retention_ms: defaults.retention_ms,
        retention_bytes: defaults.retention_bytes,
        segment_bytes: defaults.segment_bytes,
        segment_ms: defaults.segment_ms,
        max_record_bytes: defaults.max_record_bytes,
        durability: defaults.durability,
        flush_interval_ms: defaults.flush_interval_ms,
        created_at_ms: 0,
        timestamp_type: Default::default(),
        topic_id: Default::default(),
        cleanup_policy: Default::default(),
        delete_retention_ms: ferry_broker::config::DELETE_RETENTION_MS_DEFAULT,
        min_compaction_lag_ms: 0,
        min_cleanable_dirty_ratio: Default::default(),
        max_compaction_lag_ms: ferry_broker::config::MAX_COMPACTION_LAG_MS_DEFAULT,
    }
    .validate()
    .context("invalid default topic setting")?;
    Ok(defaults)
}

/// `--kafka-advertised-addr` as host and port.
fn host_port(a: &str) -> anyhow::Result<(String, u16)> {
    a.rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
        .filter(|(h, _)| !h.is_empty())
        .with_context(|| format!("kafka_advertised_addr must look like HOST:PORT, got {a:?}"))
}

/// `--push-allow-networks`: CIDRs, given as a list or comma-separated.
fn networks(list: &[String]) -> anyhow::Result<Vec<ferry_push::guard::Network>> {
    list.iter()
        .flat_map(|s| s.split(','))
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.parse::<ferry_push::guard::Network>()
                .map_err(|e| anyhow::anyhow!("push_allow_networks: {e}"))
        })
        .collect()
}
