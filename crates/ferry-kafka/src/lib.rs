//! Ferry's Kafka wire protocol listener: existing Kafka producers, consumers and admin
//! clients work against Ferry's topics. A record produced here is the same record the
//! HTTP API reads, and the other way round: both front ends share the broker and its
//! RecordBatch v2 log, so Fetch serves stored batches without re-encoding them.
//!
//! The message schemas come from the `kafka-protocol` crate; this crate maps them onto
//! the broker. `frame` is free of I/O; `server` owns the sockets. A process that serves
//! Kafka clients needs an allocator that survives frames claiming billions of elements:
//! the `ferry` binary installs one (its `alloc` module).

pub mod config;
pub mod errors;
pub mod frame;
pub mod handlers;
pub mod metrics;
pub mod server;
pub mod versions;

pub use config::KafkaConfig;
pub use metrics::KafkaMetrics;
pub use server::serve;
