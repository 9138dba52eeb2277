//! What can go wrong in shared mode, in words an operator can act on.

/// An error of the shared log. Each says which component failed, so that a produce
/// refused while the object store is down reads differently from one refused while
/// Postgres is.
#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    /// The object store refused or did not answer (its own retries included).
    #[error("the object store failed: {0}")]
    ObjectStore(String),
    /// An object Postgres named is not in the store: compaction moved its batches and
    /// the sweep removed it between a read's look-up and its fetch (the read looks up
    /// again).
    #[error("object {0} is no longer in the object store")]
    ObjectGone(String),
    /// Postgres refused or did not answer.
    #[error("the metadata database failed: {0}")]
    Metadata(String),
    /// An object's bytes are not what Postgres says they are (a corrupt or replaced
    /// object): nothing of it is returned.
    #[error("object {key} at {position}: {reason}")]
    Corrupt {
        key: String,
        position: u64,
        reason: String,
    },
    /// The caller asked for something that cannot be: a bad batch, an unknown partition.
    #[error("{0}")]
    Invalid(String),
    /// The partition does not exist in the shared log.
    #[error("partition {partition} of topic {topic_id} does not exist")]
    UnknownPartition { topic_id: String, partition: u32 },
    /// A read outside the partition's readable offsets.
    #[error("offset {offset} is outside {earliest}..={latest}")]
    OffsetOutOfRange {
        offset: u64,
        earliest: u64,
        latest: u64,
    },
    /// More bytes are waiting to be written than the configured bound allows.
    #[error("{waiting} bytes are waiting to be written, at most {max}: try again shortly")]
    Busy { waiting: usize, max: usize },
    /// A setting or URL that cannot be used.
    #[error("{0}")]
    Config(String),
    /// A write under a lease that another node has taken since: nothing was written.
    #[error("{0}")]
    Fenced(String),
    /// The shared log was closed.
    #[error("the shared log is closed")]
    Closed,
}

pub type Result<T> = std::result::Result<T, SharedError>;

impl From<tokio_postgres::Error> for SharedError {
    fn from(e: tokio_postgres::Error) -> Self {
        // The server's message says what was wrong; the Display of a client error
        // alone ("db error") does not.
        match e.as_db_error() {
            Some(db) => SharedError::Metadata(format!("{}: {}", db.code().code(), db.message())),
            None => SharedError::Metadata(e.to_string()),
        }
    }
}

impl From<deadpool_postgres::PoolError> for SharedError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => SharedError::Metadata(other.to_string()),
        }
    }
}

impl From<object_store::Error> for SharedError {
    fn from(e: object_store::Error) -> Self {
        SharedError::ObjectStore(e.to_string())
    }
}
