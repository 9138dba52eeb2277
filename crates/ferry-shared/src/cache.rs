//! A bounded cache of batches as stored in objects, by object key and position, so
//! that readers following a partition's end (on the node that wrote it) and readers
//! reading the same range again need no GET.
//!
//! Eviction is first-in first-out: the batches readers want most are the newest, and
//! FIFO costs no bookkeeping on hits.

use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

pub(crate) struct Cache {
    max_bytes: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    map: HashMap<(Arc<str>, u64), Bytes>,
    order: VecDeque<(Arc<str>, u64)>,
    bytes: usize,
}

impl Cache {
    pub fn new(max_bytes: usize) -> Self {
        Cache {
            max_bytes,
            inner: Mutex::new(Inner::default()),
        }
    }

    pub fn get(&self, key: &str, position: u64) -> Option<Bytes> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.map.get(&(Arc::from(key), position)).cloned()
    }

    pub fn insert(&self, key: &str, position: u64, batch: Bytes) {
        if batch.len() > self.max_bytes / 4 {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let k: (Arc<str>, u64) = (Arc::from(key), position);
        if inner.map.contains_key(&k) {
            return;
        }
        inner.bytes += batch.len();
        inner.map.insert(k.clone(), batch);
        inner.order.push_back(k);
        while inner.bytes > self.max_bytes {
            let Some(old) = inner.order.pop_front() else {
                break;
            };
            if let Some(b) = inner.map.remove(&old) {
                inner.bytes -= b.len();
            }
        }
        debug_assert!(inner.bytes <= self.max_bytes);
        debug_assert_eq!(inner.map.len(), inner.order.len());
    }

    pub fn bytes(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_stays_within_its_bytes_and_drops_the_oldest() {
        let c = Cache::new(1000);
        for i in 0..20u64 {
            c.insert("o", i * 100, Bytes::from(vec![i as u8; 100]));
            assert!(c.bytes() <= 1000);
        }
        assert!(c.get("o", 0).is_none());
        assert_eq!(c.get("o", 1900).unwrap()[0], 19);
        // Larger than a quarter of the cache: not kept.
        c.insert("big", 0, Bytes::from(vec![0; 300]));
        assert!(c.get("big", 0).is_none());
    }
}
