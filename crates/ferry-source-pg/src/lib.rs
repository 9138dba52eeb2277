//! Ferry's Postgres sources: rows committed in a service's database become records in
//! Ferry's topics, through logical replication (the `pgoutput` plugin).
//!
//! One role per file:
//! - [`pgoutput`]: the decoder of pgoutput's messages (bytes from the network: checked
//!   lengths, limits, a fuzz target).
//! - [`values`]: column values in Postgres's text format to JSON, as Debezium's JSON
//!   converter writes them.
//! - [`fuzzing`]: the bodies of the fuzz targets, shared with the corpus replay test.

pub mod fuzzing;
pub mod pgoutput;
pub mod values;
