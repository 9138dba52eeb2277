//! Ferry's partition log.
//!
//! A partition is a folder of segments, each a file of Kafka RecordBatch v2 batches
//! named by its first offset, with a sparse offset index and a time index beside it.
//! This crate knows nothing of async runtimes or protocols: it appends, syncs, reads,
//! recovers and deletes. `docs/format.md` gives the on-disk format byte by byte.

pub mod batch;
pub mod compression;
pub mod error;
pub mod fault;
#[doc(hidden)]
pub mod fuzzing;
pub mod index;
pub mod log;
pub mod metrics;
pub mod producers;
pub mod segment;
pub mod start;
pub mod sync;
pub mod txn;

pub use batch::{BatchError, BatchHeader, DecodeLimits, NewRecord, Record, RecordHeader};
pub use compression::Compression;
pub use error::{LogError, Result};
pub use log::compaction::{CompactConfig, Compacted};
pub use log::{
    AppendInfo, Durability, LogConfig, LogStats, PartitionLog, ReadResult, LEADER_EPOCH,
};
pub use metrics::{LogCounters, LogMetrics, LogTraffic};
pub use producers::ProducerState;
pub use segment::{Cut, FirstBatch};
pub use txn::AbortedTxn;
