//! The log start offset of a partition: the first offset readers may see, moved forward
//! on request (Kafka's DeleteRecords) past records that whole segments still hold.
//!
//! # File
//!
//! `log-start` in the partition folder, 16 bytes, all integers big-endian:
//!
//! ```text
//! 0   magic    4 bytes  "FLSO"
//! 4   offset   u64      the log start offset
//! 12  crc      u32      CRC-32C of bytes 0..12
//! ```
//!
//! # Crash
//!
//! The file is written whole to `log-start.tmp`, synced, renamed over `log-start`, and
//! the folder synced, before the caller is answered: after a crash either the old value
//! or the new one is on disk, never a mix. A `log-start.tmp` found when the partition
//! opens is left from an interrupted write and removed. A file that is not 16 bytes or
//! fails its CRC (damage; renames never leave half a file) is ignored with a warning:
//! the partition then starts at its first segment, so records reappear rather than
//! disappear. No file means no start beyond the first segment (partitions written
//! before this file existed).

use crate::error::{LogError, Result};
use crate::fault;
use std::path::Path;

pub const FILE_NAME: &str = "log-start";
pub const TMP_FILE_NAME: &str = "log-start.tmp";
const MAGIC: &[u8; 4] = b"FLSO";
pub const FILE_BYTES: usize = 16;

/// The file's bytes for `offset`.
pub fn encode(offset: u64) -> [u8; FILE_BYTES] {
    let mut buf = [0u8; FILE_BYTES];
    buf[..4].copy_from_slice(MAGIC);
    buf[4..12].copy_from_slice(&offset.to_be_bytes());
    let crc = crc32c::crc32c(&buf[..12]);
    buf[12..].copy_from_slice(&crc.to_be_bytes());
    buf
}

/// The offset in a file's bytes, or why they are not a start-offset file.
pub fn decode(buf: &[u8]) -> std::result::Result<u64, String> {
    if buf.len() != FILE_BYTES {
        return Err(format!("{} bytes, not {FILE_BYTES}", buf.len()));
    }
    if &buf[..4] != MAGIC {
        return Err("wrong magic".into());
    }
    let stored = u32::from_be_bytes([buf[12], buf[13], buf[14], buf[15]]);
    if crc32c::crc32c(&buf[..12]) != stored {
        return Err("CRC mismatch".into());
    }
    let mut offset = [0u8; 8];
    offset.copy_from_slice(&buf[4..12]);
    Ok(u64::from_be_bytes(offset))
}

/// Reads the start offset kept in `dir` (0 without a usable file), removing a
/// temporary file left by an interrupted write.
pub fn load(dir: &Path) -> Result<u64> {
    let tmp = dir.join(TMP_FILE_NAME);
    if let Err(e) = std::fs::remove_file(&tmp) {
        if e.kind() != std::io::ErrorKind::NotFound {
            return Err(LogError::io(format!("removing {}", tmp.display()), e));
        }
    }
    let path = dir.join(FILE_NAME);
    let buf = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(LogError::io(format!("reading {}", path.display()), e)),
    };
    match decode(&buf) {
        Ok(offset) => Ok(offset),
        Err(why) => {
            tracing::warn!(file = %path.display(), reason = %why, "Ignoring a damaged log start offset; the partition starts at its first segment.");
            Ok(0)
        }
    }
}

/// Keeps `offset` as the start offset of `dir`, durably (see the module's "Crash").
pub fn store(dir: &Path, offset: u64) -> Result<()> {
    let tmp = dir.join(TMP_FILE_NAME);
    let path = dir.join(FILE_NAME);
    fault::replace_file(&tmp, &path, &encode(offset))
        .map_err(|e| LogError::io(format!("replacing {}", path.display()), e))?;
    fault::sync_dir(dir)
        .map_err(|e| LogError::io(format!("syncing directory {}", dir.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offset_reads_back_as_written() {
        for o in [0, 1, 12_345, u64::MAX] {
            assert_eq!(decode(&encode(o)), Ok(o));
        }
    }

    #[test]
    fn a_damaged_or_short_file_is_refused() {
        let mut b = encode(42);
        b[7] ^= 1;
        assert!(decode(&b).unwrap_err().contains("CRC"));
        assert!(decode(&encode(42)[..15]).is_err());
        let mut b = encode(42);
        b[0] = b'X';
        assert!(decode(&b).is_err());
    }

    #[test]
    fn stored_offsets_survive_and_leftovers_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), 0);
        store(dir.path(), 77).unwrap();
        std::fs::write(dir.path().join(TMP_FILE_NAME), b"half").unwrap();
        assert_eq!(load(dir.path()).unwrap(), 77);
        assert!(!dir.path().join(TMP_FILE_NAME).exists());
        std::fs::write(dir.path().join(FILE_NAME), b"garbage").unwrap();
        assert_eq!(load(dir.path()).unwrap(), 0);
    }
}
