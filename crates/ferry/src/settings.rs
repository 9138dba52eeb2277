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
    kafka_auto_create_topics: Option<bool>,
    durability: Option<String>,
    flush_interval_ms: Option<u64>,
    default_partitions: Option<u32>,
    retention_ms: Option<i64>,
    retention_bytes: Option<i64>,
    segment_bytes: Option<u64>,
    segment_ms: Option<u64>,
    max_record_bytes: Option<u64>,
    max_request_bytes: Option<usize>,
    retention_check_ms: Option<u64>,
    log: Option<String>,
    log_format: Option<String>,
    push_allow_private: Option<bool>,
    push_allow_networks: Option<Vec<String>>,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub http_addr: SocketAddr,
    pub kafka_addr: SocketAddr,
    /// Host and port told to Kafka clients; `None` means the listener's own address.
    pub kafka_advertised: Option<(String, u16)>,
    pub kafka_max_request_bytes: usize,
    pub kafka_max_connections: usize,
    pub kafka_auto_create_topics: bool,
    pub defaults: TopicDefaults,
    pub max_request_bytes: usize,
    pub retention_check_ms: u64,
    pub log: String,
    pub log_json: bool,
    /// Push subscriptions may call private and special addresses.
    pub push_allow_private: bool,
    /// Networks push subscriptions may call even though they are private.
    pub push_allow_networks: Vec<ferry_push::guard::Network>,
}

fn limit(v: i64, what: &str) -> anyhow::Result<Option<u64>> {
    match v {
        -1 => Ok(None),
        n if n > 0 => Ok(Some(n as u64)),
        n => bail!("{what} must be positive or -1 (no limit), got {n}"),
    }
}

pub fn resolve(args: ServeArgs) -> anyhow::Result<Settings> {
    let file: FileSettings = match &args.config {
        None => FileSettings::default(),
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| {
                format!(
                    "cannot read the config file {}; check the path given to --config",
                    path.display()
                )
            })?;
            toml::from_str(&text)
                .with_context(|| format!("the config file {} is not valid", path.display()))?
        }
    };
    let d = TopicDefaults::default();
    let durability_name = args
        .durability
        .or(file.durability)
        .unwrap_or_else(|| "always".into());
    let durability = DurabilityPolicy::parse(&durability_name).with_context(|| {
        format!("durability must be always, interval or never, got {durability_name:?}")
    })?;
    let defaults = TopicDefaults {
        partitions: args
            .default_partitions
            .or(file.default_partitions)
            .unwrap_or(d.partitions),
        retention_ms: match args.retention_ms.or(file.retention_ms) {
            Some(v) => limit(v, "retention_ms")?,
            None => d.retention_ms,
        },
        retention_bytes: match args.retention_bytes.or(file.retention_bytes) {
            Some(v) => limit(v, "retention_bytes")?,
            None => d.retention_bytes,
        },
        segment_bytes: args
            .segment_bytes
            .or(file.segment_bytes)
            .unwrap_or(d.segment_bytes),
        segment_ms: args.segment_ms.or(file.segment_ms).or(d.segment_ms),
        max_record_bytes: args
            .max_record_bytes
            .or(file.max_record_bytes)
            .unwrap_or(d.max_record_bytes),
        durability,
        flush_interval_ms: args
            .flush_interval_ms
            .or(file.flush_interval_ms)
            .unwrap_or(d.flush_interval_ms),
    };
    // Check the defaults as a topic would be checked, so a bad default fails at start.
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
    }
    .validate()
    .context("invalid default topic setting")?;
    let log_format = args
        .log_format
        .or(file.log_format)
        .unwrap_or_else(|| "text".into());
    if log_format != "text" && log_format != "json" {
        bail!("log_format must be text or json, got {log_format:?}");
    }
    let max_request_bytes = args
        .max_request_bytes
        .or(file.max_request_bytes)
        .unwrap_or(32 * 1024 * 1024);
    if max_request_bytes < 1024 {
        bail!("max_request_bytes must be at least 1024, got {max_request_bytes}");
    }
    let kafka_advertised = match args.kafka_advertised_addr.or(file.kafka_advertised_addr) {
        None => None,
        Some(a) => {
            let (host, port) = a
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
                .filter(|(h, _)| !h.is_empty())
                .with_context(|| {
                    format!("kafka_advertised_addr must look like HOST:PORT, got {a:?}")
                })?;
            Some((host, port))
        }
    };
    let kafka_max_request_bytes = args
        .kafka_max_request_bytes
        .or(file.kafka_max_request_bytes)
        .unwrap_or(100 * 1024 * 1024);
    if kafka_max_request_bytes < 1024 {
        bail!("kafka_max_request_bytes must be at least 1024, got {kafka_max_request_bytes}");
    }
    let push_allow_networks = match args.push_allow_networks.or(file.push_allow_networks) {
        None => Vec::new(),
        Some(list) => list
            .iter()
            .flat_map(|s| s.split(','))
            .filter(|s| !s.trim().is_empty())
            .map(|s| {
                s.parse::<ferry_push::guard::Network>()
                    .map_err(|e| anyhow::anyhow!("push_allow_networks: {e}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?,
    };
    Ok(Settings {
        kafka_addr: args
            .kafka_addr
            .or(file.kafka_addr)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9092))),
        kafka_advertised,
        kafka_max_request_bytes,
        kafka_max_connections: args
            .kafka_max_connections
            .or(file.kafka_max_connections)
            .unwrap_or(1024)
            .max(1),
        kafka_auto_create_topics: args
            .kafka_auto_create_topics
            .or(file.kafka_auto_create_topics)
            .unwrap_or(false),
        data_dir: args
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("ferry-data")),
        http_addr: args
            .http_addr
            .or(file.http_addr)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
        defaults,
        max_request_bytes,
        retention_check_ms: args
            .retention_check_ms
            .or(file.retention_check_ms)
            .unwrap_or(30_000)
            .max(10),
        log: args.log.or(file.log).unwrap_or_else(|| "info".into()),
        log_json: log_format == "json",
        push_allow_private: args
            .push_allow_private
            .or(file.push_allow_private)
            .unwrap_or(false),
        push_allow_networks,
    })
}
