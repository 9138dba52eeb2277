//! Settings of the Kafka listener.

use std::net::SocketAddr;

#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// Where the listener is bound.
    pub addr: SocketAddr,
    /// Host and port clients are told to connect to (Metadata, FindCoordinator).
    pub advertised_host: String,
    pub advertised_port: u16,
    /// This node's broker id.
    pub node_id: i32,
    /// Largest request frame; larger ones close the connection before any allocation.
    pub max_frame_bytes: usize,
    /// Connections served at once; more wait to be accepted.
    pub max_connections: usize,
    /// Largest Fetch answer, whatever the client asks for.
    pub fetch_bytes_max: usize,
    /// Create a topic (with the server's defaults) when a client's Metadata request
    /// names one that does not exist and allows creation. Off by default.
    pub auto_create_topics: bool,
}

/// The longest a Fetch may wait for `min_bytes`.
pub const FETCH_WAIT_MS_MAX: i32 = 30_000;
