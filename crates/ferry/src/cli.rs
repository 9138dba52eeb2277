//! Every command and flag of the `ferry` binary, defined once: clap derives the help.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "ferry",
    version,
    about = "Ferry: one binary for event streams, work queues and webhooks"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run a Ferry server. With no flags: data in ./ferry-data, HTTP on 127.0.0.1:8080.
    ///
    /// Settings come from, lowest to highest: built-in defaults, the TOML file given by
    /// --config, FERRY_* environment variables, then flags. The TOML keys are the flag
    /// names with '_' for '-' (e.g. http_addr = "0.0.0.0:8080").
    // Boxed (as Sub): their many flags would make every command as large.
    Serve(Box<ServeArgs>),
    /// Create, list, describe, update and delete topics.
    #[command(subcommand)]
    Topic(TopicCommand),
    /// Publish records: from --value, or one record per line of standard input.
    Produce(ProduceArgs),
    /// Read records from a topic and print them.
    Consume(ConsumeArgs),
    /// Subscriptions: create and manage them, pull records, ack, nack, seek; push
    /// subscriptions: pause, resume, retry, rotate their secret, show their deliveries.
    #[command(subcommand)]
    Sub(Box<SubCommand>),
    /// Users who authenticate with a password (HTTP Basic, Kafka SASL PLAIN and SCRAM).
    #[command(subcommand)]
    User(UserCommand),
    /// API tokens: each acts as a user; its text is shown once, when made.
    #[command(subcommand)]
    Token(TokenCommand),
    /// ACLs: what principals may do on topics, groups, subscriptions and the cluster.
    #[command(subcommand)]
    Acl(AclCommand),
    /// Postgres sources: rows committed in a database become records in topics
    /// (change data capture and the transactional outbox).
    #[command(subcommand)]
    Source(Box<SourceCommand>),
}

// Where `ferry user|token|acl` make their changes: a running server (the client flags),
// or a data folder no server is using (--data-dir), as for the first user.
#[derive(Args, Clone)]
pub struct AdminArgs {
    /// Change this data folder directly instead of asking a server (only while no
    /// server uses it; makes the first user before authentication is on)
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub client: ClientArgs,
}

// A new password: from a flag, or from the first line of standard input.
#[derive(Args, Clone)]
pub struct PasswordArgs {
    /// The password (visible to other users of this machine in the process list;
    /// prefer --password-stdin)
    #[arg(long, conflicts_with = "password_stdin")]
    pub password: Option<String>,
    /// Read the password from the first line of standard input
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a user with SCRAM-SHA-256 and SCRAM-SHA-512 credentials from a password.
    Create {
        name: String,
        #[command(flatten)]
        password: PasswordArgs,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List users and their credentials' mechanisms (never secrets).
    List(AdminArgs),
    /// Show one user.
    Describe {
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Replace a user's password.
    Passwd {
        name: String,
        #[command(flatten)]
        password: PasswordArgs,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Delete a user and its tokens (its ACLs stay until deleted with `ferry acl delete`).
    Delete {
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Make a token acting as a user; its text is printed once and cannot be shown again.
    Create {
        /// The user the token acts as
        #[arg(long)]
        user: String,
        /// What the token is for
        #[arg(long, default_value = "")]
        description: String,
        /// The token stops working after this many milliseconds [default: never]
        #[arg(long, value_name = "MS")]
        expires_in_ms: Option<u64>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List tokens (ids, users, descriptions; never their text).
    List(AdminArgs),
    /// Revoke a token.
    Delete {
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

// The resource an ACL names: exactly one of these.
#[derive(Args, Clone, Default)]
#[group(required = false, multiple = false)]
pub struct AclResource {
    /// A topic (or topics starting with it, with --prefixed; * for every topic)
    #[arg(long, value_name = "NAME")]
    pub topic: Option<String>,
    /// A consumer group
    #[arg(long, value_name = "NAME")]
    pub group: Option<String>,
    /// A subscription
    #[arg(long, value_name = "NAME")]
    pub subscription: Option<String>,
    /// A transactional id
    #[arg(long, value_name = "ID")]
    pub transactional_id: Option<String>,
    /// The cluster (user, token and ACL administration, metrics, idempotent producers)
    #[arg(long)]
    pub cluster: bool,
}

#[derive(Subcommand)]
pub enum AclCommand {
    /// Allow (or with --deny, deny) a principal operations on a resource.
    Create {
        /// Who: User:<name>, or User:* for everyone
        #[arg(long, value_name = "PRINCIPAL")]
        principal: String,
        /// Operation: read, write, create, delete, alter, describe, describe_configs,
        /// alter_configs, idempotent_write or all; repeatable
        #[arg(long = "operation", value_name = "OP", required = true)]
        operations: Vec<String>,
        /// From this client IP address only [default: *, any]
        #[arg(long, default_value = "*")]
        host: String,
        /// Deny instead of allow (a deny beats every allow)
        #[arg(long)]
        deny: bool,
        /// The name is a prefix: the ACL covers every resource whose name starts with it
        #[arg(long)]
        prefixed: bool,
        #[command(flatten)]
        resource: AclResource,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List ACLs, all or those matching the flags given.
    List {
        #[command(flatten)]
        filter: AclFilterArgs,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Delete the ACLs matching the flags given (--all for every ACL).
    Delete {
        #[command(flatten)]
        filter: AclFilterArgs,
        /// Delete every ACL
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

// Flags selecting ACLs; each one given narrows the selection.
#[derive(Args, Clone, Default)]
pub struct AclFilterArgs {
    /// Only ACLs of this principal
    #[arg(long, value_name = "PRINCIPAL")]
    pub principal: Option<String>,
    /// Only ACLs of this operation
    #[arg(long, value_name = "OP")]
    pub operation: Option<String>,
    /// Only ACLs with this host
    #[arg(long)]
    pub host: Option<String>,
    /// Only prefixed ACLs
    #[arg(long)]
    pub prefixed: bool,
    #[command(flatten)]
    pub resource: AclResource,
}

#[derive(Args, Clone, Default)]
pub struct ServeArgs {
    /// TOML file with settings (keys as the flags below, with '_' for '-').
    #[arg(long, env = "FERRY_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Folder for all data [default: ./ferry-data]
    #[arg(long, env = "FERRY_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address (IP:PORT) of the HTTP API; port 0 picks a free port [default: 127.0.0.1:8080]
    #[arg(long, env = "FERRY_HTTP_ADDR", value_name = "IP:PORT")]
    pub http_addr: Option<SocketAddr>,
    /// Address (IP:PORT) of the Kafka protocol listener; port 0 picks a free port [default: 127.0.0.1:9092]
    #[arg(long, env = "FERRY_KAFKA_ADDR", value_name = "IP:PORT")]
    pub kafka_addr: Option<std::net::SocketAddr>,
    /// Address Kafka clients are told to connect to, if not --kafka-addr (behind NAT or a proxy)
    #[arg(long, env = "FERRY_KAFKA_ADVERTISED_ADDR", value_name = "HOST:PORT")]
    pub kafka_advertised_addr: Option<String>,
    /// Largest Kafka request; larger ones close the connection before they are read [default: 104857600]
    #[arg(long, env = "FERRY_KAFKA_MAX_REQUEST_BYTES", value_name = "BYTES")]
    pub kafka_max_request_bytes: Option<usize>,
    /// HTTP connections served at once; more wait to be accepted [default: 4096]
    #[arg(long, env = "FERRY_HTTP_MAX_CONNECTIONS", value_name = "N")]
    pub http_max_connections: Option<usize>,
    /// An HTTP request head must arrive whole within this, counted from the connection's
    /// start or its previous answer; else the connection is closed [default: 30000]
    #[arg(long, env = "FERRY_HTTP_HEADER_TIMEOUT_MS", value_name = "MS")]
    pub http_header_timeout_ms: Option<u64>,
    /// PEM certificate chain for TLS on the listeners named by --tls-listeners; reread
    /// when the file changes or on SIGHUP [default: no TLS]
    #[arg(
        long,
        env = "FERRY_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert
    #[arg(
        long,
        env = "FERRY_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// PEM certificates of the authorities that sign client certificates (mutual TLS); a
    /// client certificate's subject common name becomes the principal User:<CN>
    #[arg(long, env = "FERRY_TLS_CLIENT_CA", value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,
    /// Client certificates: none, requested (checked when sent) or required
    /// [default: required with --tls-client-ca, else none]
    #[arg(long, env = "FERRY_TLS_CLIENT_AUTH", value_name = "MODE")]
    pub tls_client_auth: Option<String>,
    /// Listeners that speak TLS when --tls-cert is given: http, kafka or both
    /// [default: http,kafka]
    #[arg(
        long,
        env = "FERRY_TLS_LISTENERS",
        value_name = "LISTENER,...",
        value_delimiter = ','
    )]
    pub tls_listeners: Option<Vec<String>>,
    /// Kafka connections served at once; more wait to be accepted [default: 1024]
    #[arg(long, env = "FERRY_KAFKA_MAX_CONNECTIONS", value_name = "N")]
    pub kafka_max_connections: Option<usize>,
    /// Create a topic with the defaults below when a Kafka client asks for one that does not exist
    #[arg(long, env = "FERRY_KAFKA_AUTO_CREATE_TOPICS", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub kafka_auto_create_topics: Option<bool>,
    /// Require every client to authenticate (HTTP tokens or Basic, Kafka SASL, client
    /// certificates) and apply ACLs; see docs/security.md [default: off]
    #[arg(long, env = "FERRY_AUTH", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub auth: Option<bool>,
    /// Principals allowed everything whatever the ACLs say, comma-separated
    /// (e.g. User:admin)
    #[arg(
        long,
        env = "FERRY_SUPER_USERS",
        value_name = "PRINCIPAL,...",
        value_delimiter = ','
    )]
    pub super_users: Option<Vec<String>>,
    /// With --auth, what a request on a resource no ACL names gets: deny or allow
    /// [default: deny]
    #[arg(long, env = "FERRY_ACL_DEFAULT", value_name = "allow|deny")]
    pub acl_default: Option<String>,
    /// Serve on a non-loopback address without --auth: anyone who reaches the ports may
    /// read, write and delete everything [default: refuse to start]
    #[arg(long, env = "FERRY_ALLOW_ANONYMOUS", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub allow_anonymous: Option<bool>,
    /// Let push subscriptions call loopback, private, link-local and other special
    /// addresses (off: such endpoints are refused, against server-side request forgery)
    #[arg(long, env = "FERRY_PUSH_ALLOW_PRIVATE", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub push_allow_private: Option<bool>,
    /// PEM certificates of authorities push subscriptions' HTTPS endpoints may be signed
    /// by, besides the system's (for endpoints with a private CA)
    #[arg(long, env = "FERRY_PUSH_CA_FILE", value_name = "FILE")]
    pub push_ca_file: Option<PathBuf>,
    /// Networks push subscriptions may call although they are private, comma-separated
    /// (e.g. 10.1.0.0/16,fd00::/8)
    #[arg(
        long,
        env = "FERRY_PUSH_ALLOW_NETWORKS",
        value_name = "CIDR,...",
        value_delimiter = ','
    )]
    pub push_allow_networks: Option<Vec<String>>,
    /// Default durability of new topics: always (fsync before acknowledging, group
    /// commit), interval (sync every --flush-interval-ms) or never [default: always]
    #[arg(long, env = "FERRY_DURABILITY", value_name = "POLICY")]
    pub durability: Option<String>,
    /// Sync period of topics with durability "interval" [default: 1000]
    #[arg(long, env = "FERRY_FLUSH_INTERVAL_MS", value_name = "MS")]
    pub flush_interval_ms: Option<u64>,
    /// Partitions of a new topic when the request names none [default: 1]
    #[arg(long, env = "FERRY_DEFAULT_PARTITIONS", value_name = "N")]
    pub default_partitions: Option<u32>,
    /// Default retention by age; -1 keeps data forever [default: 604800000 (7 days)]
    #[arg(
        long,
        env = "FERRY_RETENTION_MS",
        value_name = "MS",
        allow_negative_numbers = true
    )]
    pub retention_ms: Option<i64>,
    /// Default retention by partition size; -1 for no limit [default: -1]
    #[arg(
        long,
        env = "FERRY_RETENTION_BYTES",
        value_name = "BYTES",
        allow_negative_numbers = true
    )]
    pub retention_bytes: Option<i64>,
    /// Default segment size; a segment rolls before it would exceed this [default: 134217728]
    #[arg(long, env = "FERRY_SEGMENT_BYTES", value_name = "BYTES")]
    pub segment_bytes: Option<u64>,
    /// Default segment age at which it rolls [default: 604800000 (7 days)]
    #[arg(long, env = "FERRY_SEGMENT_MS", value_name = "MS")]
    pub segment_ms: Option<u64>,
    /// Default largest record batch a topic accepts [default: 1048576]
    #[arg(long, env = "FERRY_MAX_RECORD_BYTES", value_name = "BYTES")]
    pub max_record_bytes: Option<u64>,
    /// Largest HTTP request body; larger ones are refused before they are read [default: 33554432]
    #[arg(long, env = "FERRY_MAX_REQUEST_BYTES", value_name = "BYTES")]
    pub max_request_bytes: Option<usize>,
    /// Memory that decompressing Kafka batches may hold at once, across every connection
    /// and reader; at least 1048576 [default: 268435456]
    #[arg(long, env = "FERRY_DECOMPRESS_MEMORY_BYTES", value_name = "BYTES")]
    pub decompress_memory_bytes: Option<usize>,
    /// Most partitions all topics together may have (each holds an open file); creating
    /// more is refused [default: 20000]
    #[arg(long, env = "FERRY_MAX_PARTITIONS", value_name = "N")]
    pub max_partitions: Option<u32>,
    /// How often retention deletes old segments [default: 30000]
    #[arg(long, env = "FERRY_RETENTION_CHECK_MS", value_name = "MS")]
    pub retention_check_ms: Option<u64>,
    /// Memory of the offset map that compacts compacted topics, in bytes; at least
    /// 65536 [default: 16777216]
    #[arg(long, env = "FERRY_CLEANER_OFFSET_MAP_BYTES", value_name = "BYTES")]
    pub cleaner_offset_map_bytes: Option<usize>,
    /// Shared mode: the Postgres database that holds every topic, offset and batch
    /// location, e.g. postgres://ferry:secret@db:5432/ferry (with --object-store-url)
    /// [default: off, the local mode]
    #[arg(long, env = "FERRY_METADATA_URL", value_name = "URL")]
    pub metadata_url: Option<String>,
    /// Shared mode: where records live, s3://bucket/prefix; endpoint, region and
    /// credentials from the AWS_* variables (with --metadata-url) [default: off]
    #[arg(long, env = "FERRY_OBJECT_STORE_URL", value_name = "URL")]
    pub object_store_url: Option<String>,
    /// Shared mode: how long appends gather before one object is written for all of
    /// them; 0 takes what is queued whenever an upload can start [default: 0]
    #[arg(long, env = "FERRY_SHARED_LINGER_MS", value_name = "MS")]
    pub shared_linger_ms: Option<u64>,
    /// Shared mode: memory for batches read or written lately, so readers near the end
    /// need no GET [default: 67108864]
    #[arg(long, env = "FERRY_SHARED_CACHE_BYTES", value_name = "BYTES")]
    pub shared_cache_bytes: Option<usize>,
    /// Shared mode: batches in objects older than this are merged into larger objects
    /// of their partition alone (by one node at a time); 0 turns merging off
    /// [default: 60000]
    #[arg(long, env = "FERRY_SHARED_COMPACT_AFTER_MS", value_name = "MS")]
    pub shared_compact_after_ms: Option<u64>,
    /// Log filter, as for tracing's EnvFilter (e.g. info, ferry=debug) [default: info]
    #[arg(long, env = "FERRY_LOG", value_name = "FILTER")]
    pub log: Option<String>,
    /// Log format: text or json [default: text]
    #[arg(long, env = "FERRY_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// How finely /metrics labels topics and consumer groups: partition (a series per
    /// partition) or topic (partitions summed, for many partitions) [default: partition]
    #[arg(long, env = "FERRY_METRICS_DETAIL", value_name = "DETAIL")]
    pub metrics_detail: Option<String>,
    /// Export traces over OTLP/HTTP (protobuf) to this collector, e.g.
    /// http://127.0.0.1:4318 (spans go to URL/v1/traces) [default: off]
    #[arg(long, env = "FERRY_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// Spans waiting for export at most; more are dropped, so a slow collector never
    /// holds up requests [default: 4096]
    #[arg(long, env = "FERRY_OTLP_MAX_QUEUE_SPANS", value_name = "N")]
    pub otlp_max_queue_spans: Option<usize>,
}

#[derive(Args, Clone)]
pub struct ClientArgs {
    /// Address of the Ferry server
    #[arg(
        long,
        env = "FERRY_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// PEM file of authorities to trust besides the system's, for an https --url whose
    /// certificate a private authority signed
    #[arg(long, env = "FERRY_CA_FILE", global = true)]
    pub ca_file: Option<std::path::PathBuf>,
    /// Print JSON for scripts instead of tables
    #[arg(long, global = true)]
    pub json: bool,
    /// API token to authenticate with (made by `ferry token create`)
    #[arg(long, env = "FERRY_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// User to authenticate as, with --auth-password (HTTP Basic)
    #[arg(long, env = "FERRY_USER", global = true, value_name = "USER")]
    pub auth_user: Option<String>,
    /// Password of --auth-user
    #[arg(
        long,
        env = "FERRY_PASSWORD",
        global = true,
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    pub auth_password: Option<String>,
}

impl ClientArgs {
    /// A client for `--url` with the credentials and the CA file given.
    pub fn client(&self) -> anyhow::Result<ferry_client::Client> {
        use ferry_client::Credentials;
        let credentials = match (&self.token, &self.auth_user, &self.auth_password) {
            (Some(_), Some(_), _) => {
                anyhow::bail!("give either --token or --auth-user with --auth-password, not both")
            }
            (Some(t), None, _) => Credentials::Token(t.clone()),
            (None, Some(u), Some(p)) => Credentials::Basic {
                user: u.clone(),
                password: p.clone(),
            },
            (None, Some(_), None) => anyhow::bail!(
                "--auth-user needs --auth-password (or FERRY_PASSWORD in the environment)"
            ),
            (None, None, _) => Credentials::None,
        };
        Ok(ferry_client::Client::builder(&self.url)
            .ca_file(self.ca_file.as_deref())
            .build()?
            .with_credentials(credentials))
    }
}

#[derive(Args, Clone, Default)]
pub struct TopicSettings {
    /// Retention by age in ms; -1 keeps data forever
    #[arg(long, allow_negative_numbers = true)]
    pub retention_ms: Option<i64>,
    /// Retention by partition size in bytes; -1 for no limit
    #[arg(long, allow_negative_numbers = true)]
    pub retention_bytes: Option<i64>,
    /// Segment size in bytes
    #[arg(long)]
    pub segment_bytes: Option<u64>,
    /// Segment age in ms at which it rolls
    #[arg(long)]
    pub segment_ms: Option<u64>,
    /// Largest record batch in bytes
    #[arg(long)]
    pub max_record_bytes: Option<u64>,
    /// always, interval or never
    #[arg(long)]
    pub durability: Option<String>,
    /// Sync period for durability "interval"
    #[arg(long)]
    pub flush_interval_ms: Option<u64>,
    /// delete, compact or compact,delete
    #[arg(long)]
    pub cleanup_policy: Option<String>,
    /// How long tombstones of a compacted topic are kept, in ms
    #[arg(long)]
    pub delete_retention_ms: Option<u64>,
    /// Records younger than this (ms) are never compacted away
    #[arg(long)]
    pub min_compaction_lag_ms: Option<u64>,
    /// Share of a partition's bytes not yet compacted at which compaction starts (0 to 1)
    #[arg(long)]
    pub min_cleanable_dirty_ratio: Option<f64>,
    /// A partition is compacted once a record not yet compacted is older than this (ms)
    #[arg(long)]
    pub max_compaction_lag_ms: Option<u64>,
}

// A command on one topic or subscription: its name, the command's own flags `T`, then
// the client flags; `Named` alone has no flags of its own. (No doc comments on these
// structs: on a struct flattened into a subcommand they would replace its about text.)
#[derive(Args, Clone)]
pub struct Named<T: Args = NoFlags> {
    pub name: String,
    #[command(flatten)]
    pub flags: T,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args, Clone)]
pub struct NoFlags {}

#[derive(Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        /// Number of partitions [default: the server's]
        #[arg(long, short)]
        partitions: Option<u32>,
        #[command(flatten)]
        settings: TopicSettings,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List topics.
    List(ClientArgs),
    /// Show a topic's settings and each partition's offsets and size.
    Describe(Named),
    /// Change a topic's settings or add partitions.
    Update {
        name: String,
        /// New partition count (can only grow)
        #[arg(long, short)]
        partitions: Option<u32>,
        #[command(flatten)]
        settings: TopicSettings,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a topic and all its data.
    Delete(Named),
    /// Delete a partition's records below an offset (its start moves there, as Kafka's
    /// DeleteRecords does).
    DeleteRecords {
        name: String,
        /// The partition
        #[arg(long, short)]
        partition: u32,
        /// Delete the records below this offset; `latest` deletes every record readable now
        #[arg(long, value_name = "OFFSET|latest")]
        before: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Args)]
pub struct ProduceArgs {
    pub topic: String,
    /// The value of a single record; without it, each line of standard input is a record
    #[arg(long)]
    pub value: Option<String>,
    /// Key of every record
    #[arg(long, short)]
    pub key: Option<String>,
    /// Split each input line at the first SEP into key and value (like kcat -K)
    #[arg(long, value_name = "SEP")]
    pub key_separator: Option<String>,
    /// Header NAME=VALUE, repeatable
    #[arg(long = "header", short = 'H', value_name = "NAME=VALUE")]
    pub headers: Vec<String>,
    /// Write to this partition instead of choosing by key
    #[arg(long, short)]
    pub partition: Option<u32>,
    /// How to read values: text (bytes as given) or json (each value is JSON, read back as JSON)
    #[arg(long, default_value = "text")]
    pub format: String,
    /// Records per request when reading standard input
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args)]
pub struct ConsumeArgs {
    pub topic: String,
    /// Read only this partition [default: all]
    #[arg(long, short)]
    pub partition: Option<u32>,
    /// Where to start: beginning, end, an offset, or a time (milliseconds since 1970,
    /// or RFC 3339 such as 2026-11-23T10:00:00Z)
    #[arg(long, default_value = "beginning")]
    pub from: String,
    /// Keep waiting for new records instead of stopping at the end
    #[arg(long, short)]
    pub follow: bool,
    /// Stop after this many records
    #[arg(long, short = 'n')]
    pub max: Option<u64>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args, Clone, Default)]
pub struct SubSettings {
    /// Only records matching this filter, e.g. '{"subject":"orders.*.created"}' (JSON)
    #[arg(long, value_name = "JSON")]
    pub filter: Option<String>,
    /// How long a pulled record stays leased before it is delivered again
    #[arg(long, value_name = "MS")]
    pub visibility_timeout_ms: Option<u64>,
    /// Deliveries before a record is dead-lettered; 0 for no limit
    #[arg(long, value_name = "N")]
    pub max_deliveries: Option<u32>,
    /// Topic for records out of deliveries [default: NAME-dlq]
    #[arg(long, value_name = "TOPIC")]
    pub dead_letter_topic: Option<String>,
    /// Delay before redelivery after a nack or expiry, e.g.
    /// '{"strategy":"exponential","delay_ms":1000}' (JSON)
    #[arg(long, value_name = "JSON")]
    pub retry: Option<String>,
    /// Records leased at once, over all consumers
    #[arg(long, value_name = "N")]
    pub max_in_flight: Option<u32>,
    /// Records leased at once by one consumer
    #[arg(long, value_name = "N")]
    pub max_in_flight_per_consumer: Option<u32>,
}

/// Settings of push subscriptions: Ferry calls an HTTP endpoint with each record.
#[derive(Args, Clone, Default)]
pub struct PushSettings {
    /// Push each record to this HTTP(S) endpoint (makes a push subscription)
    #[arg(long, value_name = "URL")]
    pub push_url: Option<String>,
    /// HTTP method of push requests: POST or PUT [default: POST]
    #[arg(long, value_name = "METHOD")]
    pub push_method: Option<String>,
    /// Header sent with every push request, 'Name: value'; repeatable. On update,
    /// 'Name:' with no value removes that header
    #[arg(long = "push-header", value_name = "NAME: VALUE")]
    pub push_headers: Vec<String>,
    /// Time a push request may take before it counts as failed [default: 10000]
    #[arg(long, value_name = "MS")]
    pub push_timeout_ms: Option<u64>,
    /// Push requests in flight at once [default: 16]
    #[arg(long, value_name = "N")]
    pub push_concurrency: Option<u32>,
    /// Push requests per second, at most; 0 for no limit [default: no limit]
    #[arg(long, value_name = "N")]
    pub push_rate_limit: Option<u32>,
    /// Request body: raw (the record's value), cloudevents-binary or
    /// cloudevents-structured [default: raw]
    #[arg(long, value_name = "FORMAT")]
    pub push_payload: Option<String>,
    /// A record older than this is dead-lettered instead of retried; 0 for no limit
    /// [default: no limit]
    #[arg(long, value_name = "MS")]
    pub push_max_age_ms: Option<u64>,
    /// Signing secret, whsec_ and the base64 of 24 to 64 bytes [default: generated,
    /// printed once]
    #[arg(long, value_name = "whsec_...")]
    pub push_secret: Option<String>,
    /// Follow HTTP redirects of the endpoint (true or false) [default: false]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub push_follow_redirects: Option<bool>,
    /// Circuit breaker, e.g. '{"failure_rate_percent":50,"cooldown_ms":30000}' (JSON;
    /// fields failure_rate_percent, window_ms, min_calls, cooldown_ms, probes)
    #[arg(long, value_name = "JSON")]
    pub push_breaker: Option<String>,
}

// The settings of a subscription that `sub create` and `sub update` both take.
#[derive(Args, Clone)]
pub struct SubFlags {
    #[command(flatten)]
    pub settings: SubSettings,
    #[command(flatten)]
    pub push: PushSettings,
}

#[derive(Args, Clone)]
pub struct CreateFlags {
    /// Topic to deliver records from
    #[arg(long, short)]
    pub topic: String,
    /// Where to start: earliest, latest, offset:N (in every partition), or time:T
    /// (milliseconds since 1970, or RFC 3339 such as 2026-11-23T10:00:00Z) [default: latest]
    #[arg(long, value_name = "WHERE")]
    pub start: Option<String>,
    /// none, or key: one record per key in flight at a time [default: none]
    #[arg(long)]
    pub ordering: Option<String>,
    #[command(flatten)]
    pub sub: SubFlags,
}

#[derive(Args, Clone)]
pub struct PullFlags {
    /// Most records to lease
    #[arg(long, short = 'n', default_value_t = 10)]
    pub max_records: usize,
    /// Wait up to this long for records when none is ready [default: 0, answer at once]
    #[arg(long, value_name = "MS")]
    pub wait_ms: Option<u64>,
    /// Consumer name, for the per-consumer in-flight limit [default: anonymous]
    #[arg(long)]
    pub consumer: Option<String>,
    /// Lease length for these records [default: the subscription's]
    #[arg(long, value_name = "MS")]
    pub visibility_timeout_ms: Option<u64>,
    /// Acknowledge every pulled record after printing it
    #[arg(long)]
    pub ack: bool,
}

#[derive(Args, Clone)]
pub struct AckFlags {
    #[arg(required = true)]
    pub lease_ids: Vec<String>,
}

#[derive(Args, Clone)]
pub struct ExtendFlags {
    #[arg(required = true)]
    pub lease_ids: Vec<String>,
    /// New lease length from now, 100 ms to 12 h
    #[arg(long, value_name = "MS")]
    pub visibility_timeout_ms: u64,
}

#[derive(Args, Clone)]
pub struct NackFlags {
    #[arg(required = true)]
    pub lease_ids: Vec<String>,
    /// Redeliver after this long [default: the retry policy's delay]
    #[arg(long, value_name = "MS")]
    pub delay_ms: Option<u64>,
    /// Why processing failed; kept with the record and its dead letter
    #[arg(long, value_name = "TEXT")]
    pub error: Option<String>,
}

#[derive(Args, Clone)]
pub struct SeekFlags {
    /// earliest, latest, offset:N, or time:T (milliseconds since 1970, or RFC 3339)
    #[arg(long, value_name = "WHERE")]
    pub to: String,
    /// With offset:N, move only this partition [default: every partition]
    #[arg(long, short)]
    pub partition: Option<u32>,
}

#[derive(Args, Clone)]
pub struct RedriveFlags {
    /// Most records to send back [default: all]
    #[arg(long, short = 'n')]
    pub max_records: Option<usize>,
}

#[derive(Args, Clone)]
pub struct RetryFlags {
    /// Partition of the record
    #[arg(long, short)]
    pub partition: u32,
    /// Offset of the record
    #[arg(long, short)]
    pub offset: u64,
}

#[derive(Args, Clone)]
pub struct RotateSecretFlags {
    /// The new secret, whsec_ and the base64 of 24 to 64 bytes [default: generated,
    /// printed once]
    #[arg(long, value_name = "whsec_...")]
    pub secret: Option<String>,
    /// How long the old secret still signs, at most one week [default: 86400000 (one day)]
    #[arg(long, value_name = "MS")]
    pub previous_valid_ms: Option<u64>,
}

#[derive(Args, Clone)]
pub struct DeliveriesFlags {
    /// Only attempts of the record at this partition (with --offset)
    #[arg(long, short, requires = "offset")]
    pub partition: Option<u32>,
    /// Only attempts of the record at this offset (with --partition)
    #[arg(long, short, requires = "partition")]
    pub offset: Option<u64>,
    /// Most attempts to show, 1 to 1000 [default: 100]
    #[arg(long, short = 'n')]
    pub limit: Option<usize>,
}

// The `ferry sub` commands. Each takes a subscription's name, its own flags and the
// client flags, which its function in `subs` receives whole.
#[derive(Subcommand)]
pub enum SubCommand {
    /// Create a subscription to a topic: a queue to pull from, or with --push-url, a
    /// push subscription that calls an HTTP endpoint.
    Create(Named<CreateFlags>),
    /// List subscriptions with their backlog.
    List(ClientArgs),
    /// Show a subscription's settings, counters and each partition's progress.
    Describe(Named),
    /// Change a subscription's settings; --push-* flags change only what they name.
    Update(Named<SubFlags>),
    /// Delete a subscription (its topic and dead-letter topic stay).
    Delete(Named),
    /// Lease records and print them with their lease ids.
    Pull(Named<PullFlags>),
    /// Acknowledge leased records: they are done and never delivered again.
    Ack(Named<AckFlags>),
    /// Keep leased records longer: their leases end this long from now.
    Extend(Named<ExtendFlags>),
    /// Give leased records back for redelivery.
    Nack(Named<NackFlags>),
    /// Move a subscription to another position: replay, or skip ahead.
    Seek(Named<SeekFlags>),
    /// Drop every record not yet acknowledged (seek to latest).
    Purge(Named),
    /// Send the subscription's dead-lettered records back to it.
    Redrive(Named<RedriveFlags>),
    /// Stop a push subscription from sending; records wait until it is resumed.
    Pause(Named),
    /// Let a paused push subscription send again.
    Resume(Named),
    /// Deliver one record of the topic to this subscription again.
    Retry(Named<RetryFlags>),
    /// Give a push subscription a new signing secret; the old one keeps signing for a
    /// while, so that the endpoint can switch over.
    RotateSecret(Named<RotateSecretFlags>),
    /// Show a push subscription's delivery attempts, newest first.
    Deliveries(Named<DeliveriesFlags>),
}

#[derive(Subcommand)]
pub enum SourceCommand {
    /// Start capturing a Postgres database's changes into topics. The database needs
    /// wal_level=logical; the user needs the REPLICATION attribute (or superuser).
    Create(Box<Named<SourceCreateFlags>>),
    /// List sources with their state and progress.
    List(ClientArgs),
    /// Show a source's settings and status (position, lag, records, last error).
    Describe(Named),
    /// Change a source's settings; it restarts with them and resumes where it was.
    Update(Named<SourceUpdateFlags>),
    /// Stop a source and drop its replication slot (and its publication if Ferry made
    /// it). Its topics stay.
    Delete(Named),
    /// Stop capturing; the slot keeps the changes (and WAL) until it is resumed.
    Pause(Named),
    /// Capture again from where the source paused.
    Resume(Named),
    /// Read a table's rows again (op r) while the source streams, e.g. for a new
    /// consumer; rows changed meanwhile are left to the stream.
    Backfill(Named<BackfillFlags>),
    /// Cancel a backfill that has not finished (the rows written stay).
    CancelBackfill(Named<CancelBackfillFlags>),
}

#[derive(Args, Clone)]
pub struct BackfillFlags {
    /// The table, as schema.table
    #[arg(long, value_name = "SCHEMA.TABLE")]
    pub table: String,
    /// Only rows for which this SQL condition holds
    #[arg(long = "where", value_name = "CONDITION")]
    pub row_filter: Option<String>,
}

#[derive(Args, Clone)]
pub struct CancelBackfillFlags {
    /// The backfill's id (from `ferry source describe`)
    #[arg(long)]
    pub id: u64,
}

#[derive(Args, Clone)]
pub struct SourceCreateFlags {
    /// postgres://user:password@host:port/database (or FERRY_SOURCE_URL, which keeps
    /// the password out of the process list)
    #[arg(long = "pg-url", env = "FERRY_SOURCE_URL", hide_env_values = true)]
    pub pg_url: String,
    /// A table to capture, as schema.table (repeat it); none: every table
    #[arg(long = "table", value_name = "SCHEMA.TABLE")]
    pub tables: Vec<String>,
    /// A row filter for a table named with --table: only rows for which the SQL
    /// condition holds (repeat it; PostgreSQL 15 and later)
    #[arg(long = "table-where", value_name = "SCHEMA.TABLE=CONDITION")]
    pub table_where: Vec<String>,
    /// A topic of its own for a table named with --table (repeat it)
    #[arg(long = "table-topic", value_name = "SCHEMA.TABLE=TOPIC")]
    pub table_topic: Vec<String>,
    /// Key columns of their own for a table named with --table (repeat it)
    #[arg(long = "table-key", value_name = "SCHEMA.TABLE=COLUMN[,COLUMN...]")]
    pub table_key: Vec<String>,
    /// Publication to read (made when missing); default ferry_<name>
    #[arg(long)]
    pub publication: Option<String>,
    /// Replication slot (made when missing); default ferry_<name>
    #[arg(long)]
    pub slot: Option<String>,
    /// Partitions of the topics the source makes
    #[arg(long)]
    pub topic_partitions: Option<u32>,
    /// initial (read existing rows first) or never
    #[arg(long)]
    pub snapshot: Option<String>,
    /// The outbox table (schema.table, Debezium's columns: aggregatetype, aggregateid,
    /// payload, id, ...)
    #[arg(long, value_name = "SCHEMA.TABLE")]
    pub outbox_table: Option<String>,
    /// Topic of outbox events; {aggregatetype} is replaced
    #[arg(long, requires = "outbox_table")]
    pub outbox_topic_template: Option<String>,
    #[command(flatten)]
    pub update: SourceUpdateFlags,
}

#[derive(Args, Clone, Default)]
pub struct SourceUpdateFlags {
    /// Topic of a table's changes; {source}, {schema} and {table} are replaced
    #[arg(long)]
    pub topic_template: Option<String>,
    /// debezium (the envelope as the value) or cloudevents (the same, with ce_* headers)
    #[arg(long)]
    pub format: Option<String>,
    /// Changes to write, of c, u, d, t (repeat it); default: all
    #[arg(long = "operation", value_name = "OP")]
    pub operations: Vec<String>,
    /// Write a tombstone (key, no value) after each delete: true or false
    #[arg(long)]
    pub tombstones: Option<bool>,
    /// Topic of pg_logical_emit_message messages; {source} and {prefix} are replaced
    #[arg(long)]
    pub messages_topic_template: Option<String>,
    /// WAL the slot may hold back before the source warns, in bytes
    #[arg(long)]
    pub max_slot_wal_bytes: Option<u64>,
}
