//! Topic ids: a random UUID given to each topic when it is created, so that a topic
//! deleted and created again under the same name is a different topic to whoever kept
//! its id (Kafka clients address topics by id in Metadata v10+, Fetch v13+ and
//! Produce v13+, and notice a re-created topic by its new id).
//!
//! # Layout
//!
//! Sixteen bytes, a version 4 (random) UUID as RFC 9562 lays it out: byte 6's high
//! nibble is 4, byte 8's two high bits are `10`. Stored in `meta/topics.json` as the
//! usual 36-character hyphenated lowercase text.
//!
//! # Reserved values
//!
//! Kafka reserves the all-zero id ("no id") and the id ending in 1 (its metadata
//! topic), and never gives out an id whose URL-safe base64 form starts with `-`
//! (command-line tools would read it as a flag). [`TopicId::random`] never returns
//! any of them.

use rand::RngCore;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// A topic's id; [`TopicId::NONE`] only in metadata written before ids existed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TopicId([u8; 16]);

impl TopicId {
    /// "No id": what Kafka sends where a topic is named instead.
    pub const NONE: TopicId = TopicId([0; 16]);

    /// A new random id, never a reserved one.
    pub fn random() -> TopicId {
        let mut rng = rand::thread_rng();
        loop {
            let mut b = [0u8; 16];
            rng.fill_bytes(&mut b);
            b[6] = (b[6] & 0x0f) | 0x40;
            b[8] = (b[8] & 0x3f) | 0x80;
            let id = TopicId(b);
            if !id.is_reserved() {
                debug_assert_eq!(id.0[6] >> 4, 4, "not a version 4 UUID");
                return id;
            }
        }
    }

    pub const fn from_bytes(b: [u8; 16]) -> TopicId {
        TopicId(b)
    }

    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    pub fn is_none(&self) -> bool {
        *self == TopicId::NONE
    }

    /// Zero, Kafka's metadata topic id (…0001), or one whose base64 form starts with
    /// `-` (first six bits 62).
    pub fn is_reserved(&self) -> bool {
        let mut one = [0u8; 16];
        one[15] = 1;
        self.is_none() || self.0 == one || self.0[0] >> 2 == 62
    }
}

impl fmt::Display for TopicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for TopicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Text that is not a hyphenated UUID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadTopicId;

impl fmt::Display for BadTopicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a UUID of the form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx")
    }
}

impl FromStr for TopicId {
    type Err = BadTopicId;

    fn from_str(s: &str) -> Result<TopicId, BadTopicId> {
        let s = s.as_bytes();
        if s.len() != 36 {
            return Err(BadTopicId);
        }
        let mut out = [0u8; 16];
        let mut n = 0;
        let mut i = 0;
        while i < s.len() {
            if matches!(i, 8 | 13 | 18 | 23) {
                if s[i] != b'-' {
                    return Err(BadTopicId);
                }
                i += 1;
                continue;
            }
            let hi = hex(s[i]).ok_or(BadTopicId)?;
            let lo = hex(*s.get(i + 1).ok_or(BadTopicId)?).ok_or(BadTopicId)?;
            *out.get_mut(n).ok_or(BadTopicId)? = hi << 4 | lo;
            n += 1;
            i += 2;
        }
        if n != 16 {
            return Err(BadTopicId);
        }
        Ok(TopicId(out))
    }
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl Serialize for TopicId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TopicId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<TopicId, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_are_version_4_and_never_reserved() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let id = TopicId::random();
            assert!(!id.is_reserved());
            assert_eq!(id.as_bytes()[6] >> 4, 4);
            assert_eq!(id.as_bytes()[8] >> 6, 0b10);
            assert!(seen.insert(id), "{id} twice");
        }
    }

    #[test]
    fn ids_read_back_as_they_were_written() {
        let id = TopicId::random();
        let text = id.to_string();
        assert_eq!(text.len(), 36);
        assert_eq!(text.parse::<TopicId>(), Ok(id));
        assert_eq!(text.to_uppercase().parse::<TopicId>(), Ok(id));
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<TopicId>(&json).unwrap(), id);
    }

    #[test]
    fn text_that_is_not_a_uuid_is_refused() {
        for bad in [
            "",
            "0",
            "00000000000000000000000000000000",
            "0000000-00000-0000-0000-000000000000",
            "g0000000-0000-0000-0000-000000000000",
            "00000000-0000-0000-0000-0000000000000",
            "00000000+0000-0000-0000-000000000000",
            "é0000000-0000-0000-0000-00000000000",
        ] {
            assert_eq!(bad.parse::<TopicId>(), Err(BadTopicId), "{bad:?}");
        }
    }

    #[test]
    fn reserved_ids_are_known() {
        assert!(TopicId::NONE.is_reserved());
        let mut one = [0u8; 16];
        one[15] = 1;
        assert!(TopicId::from_bytes(one).is_reserved());
        let mut dash = [0u8; 16];
        dash[0] = 0xf8; // 111110.. : base64 '-'
        assert!(TopicId::from_bytes(dash).is_reserved());
    }
}
