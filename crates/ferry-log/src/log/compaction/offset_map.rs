//! The cleaner's offset map: 128-bit key hashes to the latest offset of each key,
//! in a table of fixed size allocated once per pass.

use std::hash::Hasher;

/// Bytes of one offset map slot: a 128-bit hash and an offset.
pub const OFFSET_MAP_SLOT_BYTES: usize = 24;
/// The least memory an offset map is given.
pub const OFFSET_MAP_BYTES_MIN: usize = 64 * 1024;

/// A fixed-size map of key hashes to the latest offset seen, by open addressing with
/// linear probing. It never grows: it is full at 90% of its slots.
pub struct OffsetMap {
    slots: Vec<(u128, u64)>,
    used: usize,
    max: usize,
}

impl OffsetMap {
    /// A map using about `bytes` of memory.
    pub fn new(bytes: usize) -> OffsetMap {
        let n = bytes.max(OFFSET_MAP_BYTES_MIN) / OFFSET_MAP_SLOT_BYTES;
        OffsetMap {
            slots: vec![(0, 0); n],
            used: 0,
            max: n / 10 * 9,
        }
    }

    /// How many keys it holds.
    pub fn len(&self) -> usize {
        self.used
    }

    pub fn is_empty(&self) -> bool {
        self.used == 0
    }

    /// The slot of `hash`: where it is, or the empty one where it would go.
    fn slot(&self, hash: u128) -> usize {
        let n = self.slots.len();
        let mut i = (hash % n as u128) as usize;
        loop {
            let h = self.slots[i].0;
            if h == hash || h == 0 {
                return i;
            }
            i = (i + 1) % n;
        }
    }

    /// Records `offset` as the latest of `hash`; false (and nothing changed) when the
    /// key is new and the map full.
    pub fn put(&mut self, hash: u128, offset: u64) -> bool {
        debug_assert_ne!(hash, 0, "hash 0 marks an empty slot");
        let i = self.slot(hash);
        if self.slots[i].0 == 0 {
            if self.used >= self.max {
                return false;
            }
            self.used += 1;
        }
        debug_assert!(self.slots[i].0 == 0 || self.slots[i].1 <= offset);
        self.slots[i] = (hash, offset);
        true
    }

    pub fn get(&self, hash: u128) -> Option<u64> {
        let i = self.slot(hash);
        (self.slots[i].0 == hash).then_some(self.slots[i].1)
    }
}

/// The 128-bit hash of a key (two SipHash runs; never 0, which marks an empty slot).
pub fn key_hash(key: &[u8]) -> u128 {
    let half = |tag: u8| {
        #[allow(deprecated)]
        let mut h = std::hash::SipHasher::new_with_keys(0x6665_7272_7963_6c65, u64::from(tag));
        h.write(key);
        h.finish()
    };
    let hash = (u128::from(half(1)) << 64) | u128::from(half(2));
    hash.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offset_map_keeps_the_latest_offset_and_refuses_new_keys_when_full() {
        let mut m = OffsetMap::new(0);
        assert!(m.put(key_hash(b"a"), 1));
        assert!(m.put(key_hash(b"a"), 5));
        assert_eq!(m.get(key_hash(b"a")), Some(5));
        assert_eq!(m.get(key_hash(b"b")), None);
        let mut n = 0u64;
        while m.put(key_hash(&n.to_be_bytes()), n) {
            n += 1;
        }
        assert_eq!(
            m.len(),
            OFFSET_MAP_BYTES_MIN / OFFSET_MAP_SLOT_BYTES / 10 * 9
        );
        assert!(
            m.put(key_hash(b"a"), 9),
            "a known key still updates when full"
        );
    }
}
