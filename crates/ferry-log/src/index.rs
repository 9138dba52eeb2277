//! Sparse indexes beside each segment.
//!
//! # Layout
//!
//! ```text
//! <base>.index      entries of 8 bytes:  relative offset u32 BE | file position u32 BE
//! <base>.timeindex  entries of 12 bytes: max timestamp so far i64 BE | relative offset u32 BE
//! ```
//!
//! Both are sorted by their first field. The active segment keeps its entries in
//! memory (bounded by segment size / index interval); a sealed segment's index is
//! written once, atomically (temporary file, fsync, rename), and searched on disk, so
//! memory does not grow with the size of the log. An index that is missing or whose
//! size is not a whole number of entries is rebuilt by scanning its segment.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// A fixed-size index entry.
pub trait Entry: Copy {
    const BYTES: usize;
    type Key: Ord + Copy;
    fn key(&self) -> Self::Key;
    fn encode(&self, out: &mut Vec<u8>);
    fn decode(b: &[u8]) -> Self;
}

/// Maps a relative offset to the file position of the batch that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    pub rel_offset: u32,
    pub position: u32,
}

impl Entry for OffsetEntry {
    const BYTES: usize = 8;
    type Key = u32;
    fn key(&self) -> u32 {
        self.rel_offset
    }
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.rel_offset.to_be_bytes());
        out.extend_from_slice(&self.position.to_be_bytes());
    }
    fn decode(b: &[u8]) -> Self {
        OffsetEntry {
            rel_offset: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            position: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        }
    }
}

/// Records that every record up to `rel_offset`'s batch has a timestamp ≤ `timestamp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp: i64,
    pub rel_offset: u32,
}

impl Entry for TimeEntry {
    const BYTES: usize = 12;
    type Key = i64;
    fn key(&self) -> i64 {
        self.timestamp
    }
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.rel_offset.to_be_bytes());
    }
    fn decode(b: &[u8]) -> Self {
        let mut t = [0u8; 8];
        t.copy_from_slice(&b[..8]);
        TimeEntry {
            timestamp: i64::from_be_bytes(t),
            rel_offset: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        }
    }
}

/// An index held in memory (active segment) or searched in its file (sealed segment).
#[derive(Debug)]
pub enum Index<E: Entry> {
    Memory(Vec<E>),
    Disk { file: File, len: usize },
}

impl<E: Entry> Index<E> {
    pub fn new() -> Self {
        Index::Memory(Vec::new())
    }

    /// Opens a sealed index file, or `None` if it is missing or not whole entries.
    pub fn open(path: &Path) -> io::Result<Option<Self>> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let bytes = file.metadata()?.len() as usize;
        if !bytes.is_multiple_of(E::BYTES) {
            return Ok(None);
        }
        Ok(Some(Index::Disk {
            file,
            len: bytes / E::BYTES,
        }))
    }

    pub fn len(&self) -> usize {
        match self {
            Index::Memory(v) => v.len(),
            Index::Disk { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, i: usize) -> io::Result<E> {
        match self {
            Index::Memory(v) => Ok(v[i]),
            Index::Disk { file, .. } => {
                let mut b = vec![0u8; E::BYTES];
                file.read_exact_at(&mut b, (i * E::BYTES) as u64)?;
                Ok(E::decode(&b))
            }
        }
    }

    pub fn last(&self) -> io::Result<Option<E>> {
        if self.is_empty() {
            Ok(None)
        } else {
            self.get(self.len() - 1).map(Some)
        }
    }

    /// Appends an entry to an in-memory index. Sealed indexes are never appended to.
    /// Keys strictly increase: [`floor`](Self::floor) searches by halves.
    pub fn push(&mut self, e: E) {
        if let Index::Memory(v) = self {
            debug_assert!(
                v.last().is_none_or(|last| last.key() < e.key()),
                "index keys must strictly increase"
            );
            v.push(e);
        }
    }

    /// The last entry of an in-memory index (a sealed one is not read).
    pub fn last_in_memory(&self) -> Option<E> {
        match self {
            Index::Memory(v) => v.last().copied(),
            Index::Disk { .. } => None,
        }
    }

    /// The last entry whose key is ≤ `key` (or < `key` when `strict`).
    pub fn floor(&self, key: E::Key, strict: bool) -> io::Result<Option<E>> {
        let (mut lo, mut hi) = (0usize, self.len());
        // Invariant: entries before `lo` qualify, entries at or after `hi` do not.
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let k = self.get(mid)?.key();
            let ok = if strict { k < key } else { k <= key };
            if ok {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if lo == 0 {
            Ok(None)
        } else {
            self.get(lo - 1).map(Some)
        }
    }

    /// Writes an in-memory index to `path` atomically and switches to searching it there.
    pub fn seal(&mut self, path: &Path) -> io::Result<()> {
        let Index::Memory(v) = self else {
            return Ok(());
        };
        let mut buf = Vec::with_capacity(v.len() * E::BYTES);
        for e in v.iter() {
            e.encode(&mut buf);
        }
        crate::fault::replace_file(&path.with_extension("tmp-index"), path, &buf)?;
        let len = v.len();
        *self = Index::Disk {
            file: File::open(path)?,
            len,
        };
        Ok(())
    }
}

impl<E: Entry> Default for Index<E> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn floor_agrees_with_a_linear_search_in_memory_and_on_disk(
            mut keys in proptest::collection::vec(0u32..10_000, 0..200),
            probe in 0u32..10_100,
        ) {
            keys.sort();
            keys.dedup();
            let mut idx = Index::<OffsetEntry>::new();
            for (i, k) in keys.iter().enumerate() {
                idx.push(OffsetEntry { rel_offset: *k, position: i as u32 });
            }
            let expect = keys.iter().enumerate().rfind(|(_, k)| **k <= probe)
                .map(|(i, k)| OffsetEntry { rel_offset: *k, position: i as u32 });
            prop_assert_eq!(idx.floor(probe, false).unwrap(), expect);
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("x.index");
            idx.seal(&path).unwrap();
            prop_assert_eq!(idx.floor(probe, false).unwrap(), expect);
            let reopened = Index::<OffsetEntry>::open(&path).unwrap().unwrap();
            prop_assert_eq!(reopened.floor(probe, false).unwrap(), expect);
        }
    }

    #[test]
    fn an_index_of_partial_entries_is_treated_as_missing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("y.index");
        std::fs::write(&path, [0u8; 13]).unwrap();
        assert!(Index::<OffsetEntry>::open(&path).unwrap().is_none());
    }
}
