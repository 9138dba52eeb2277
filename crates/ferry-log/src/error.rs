//! Operating errors of the log. Broken invariants are assertions, not errors: see
//! `PartitionLog::check_invariants`, run under `debug_assert!` after every change.
//! A failed file operation keeps its `io::Error` as the error's source.

use crate::batch::BatchError;
use std::io;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("the disk is full ({context}); stored data stays readable and writes resume once space is freed")]
    DiskFull {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("invalid batch: {0}")]
    InvalidBatch(#[from] BatchError),
    #[error("batch of {size} bytes is larger than the limit of {max} bytes")]
    BatchTooLarge { size: usize, max: usize },
    #[error("offset {requested} is out of range: the partition holds offsets {earliest} to {latest} (latest is the next offset to be written)")]
    OffsetOutOfRange {
        requested: u64,
        earliest: u64,
        latest: u64,
    },
    #[error("corrupt batch in segment {segment} at byte {position}: {reason}")]
    Corrupt {
        segment: String,
        position: u64,
        reason: String,
    },
    #[error(
        "partition stopped after a failed disk write or sync ({0}); restart Ferry to recover it from disk"
    )]
    Stopped(String),
    #[error("the log is closed")]
    Closed,
    #[error("producer {producer_id} sent sequence {got}, expected {expected}")]
    OutOfOrderSequence {
        producer_id: i64,
        expected: i32,
        got: i32,
    },
    #[error("producer {producer_id} uses epoch {epoch}, older than its current epoch {current}")]
    InvalidProducerEpoch {
        producer_id: i64,
        epoch: i16,
        current: i16,
    },
}

impl LogError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        let context = context.into();
        // ENOSPC (28) and EDQUOT (122): no room for the write either way.
        if source.kind() == io::ErrorKind::StorageFull
            || matches!(source.raw_os_error(), Some(28) | Some(122))
        {
            LogError::DiskFull { context, source }
        } else {
            LogError::Io { context, source }
        }
    }
}

pub type Result<T, E = LogError> = std::result::Result<T, E>;
