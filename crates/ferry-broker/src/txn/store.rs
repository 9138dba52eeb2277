//! `meta/transactions.json`: every transactional id's state, replaced atomically
//! (temporary file, fsync, rename, fsync of the folder; see [`crate::fsutil`]) before
//! any change is acted on or answered.
//!
//! ```text
//! {"version": 1, "transactions": {"<transactional id>": {
//!    "producer_id": 17, "epoch": 3, "timeout_ms": 60000,
//!    "status": "ongoing" | "prepare_commit" | "prepare_abort" | "complete_commit" | ...,
//!    "partitions": [{"topic": "t", "partition": 0}],
//!    "offsets": {"<group>": [{"topic": "in", "partition": 0, "offset": 42}]},
//!    "started_ms": 1700000000000, "updated_ms": 1700000000000}}}
//! ```

use super::state::TxnMeta;
use crate::error::{BrokerError, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const FILE_NAME: &str = "transactions.json";
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct TxnFile {
    version: u32,
    transactions: BTreeMap<String, TxnMeta>,
}

pub struct TxnStore {
    path: PathBuf,
}

impl TxnStore {
    pub fn new(meta_dir: &Path) -> Self {
        TxnStore {
            path: meta_dir.join(FILE_NAME),
        }
    }

    pub fn load(&self) -> Result<BTreeMap<String, TxnMeta>> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => {
                return Err(BrokerError::io(
                    format!("reading {}", self.path.display()),
                    e,
                ))
            }
        };
        let file: TxnFile = serde_json::from_slice(&bytes)
            .map_err(|e| BrokerError::Meta(format!("{}: {e}", self.path.display())))?;
        if file.version != VERSION {
            return Err(BrokerError::Meta(format!(
                "{}: version {} is not one this Ferry reads ({VERSION})",
                self.path.display(),
                file.version
            )));
        }
        Ok(file.transactions)
    }

    /// The file's bytes for `transactions`.
    pub fn encode(transactions: &BTreeMap<String, TxnMeta>) -> Result<Vec<u8>> {
        #[derive(Serialize)]
        struct Out<'a> {
            version: u32,
            transactions: &'a BTreeMap<String, TxnMeta>,
        }
        serde_json::to_vec(&Out {
            version: VERSION,
            transactions,
        })
        .map_err(|e| BrokerError::Storage(format!("encoding transactions: {e}")))
    }

    /// Replaces the file with `bytes` durably (blocking I/O).
    pub fn save(&self, bytes: &[u8]) -> Result<()> {
        crate::fsutil::replace_file(&self.path, bytes).map_err(BrokerError::Storage)
    }
}
