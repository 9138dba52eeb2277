//! Binary forms of journal events and delay-file entries. Both are fixed-size records;
//! decoders check every length and tag and never panic (fuzzed by `fuzz/` target
//! `subscription_journal`).
//!
//! ```text
//! event        33 bytes, little-endian:
//!              tag u8 | partition u32 | a u64 | attempt u32 | b u64 | key u64
//!              tag 1 Deliver(a=offset) 2 Ack(a=offset) 3 Skip(a=lo, b=hi)
//!                  4 Ready(a=offset) 5 Delay(a=offset, b=due) 6 DeadLetter(a=offset)
//!                  7 Seek(a=offset) 8 BucketsLoaded(a=upto) 9 Redriven(a=offset)
//!                  10 GaveUp(a=offset)
//!                  11 Truncate(a=end)
//! delay entry  32 bytes, little-endian:
//!              due u64 | offset u64 | partition u32 | attempt u32 | gen u32 | crc32c u32
//!              (the CRC covers the 28 bytes before it)
//! ```

use super::state::Event;

pub const EVENT_BYTES: usize = 33;
pub const DELAY_ENTRY_BYTES: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("event data is {0} bytes, not a multiple of {EVENT_BYTES}")]
    Length(usize),
    #[error("unknown event tag {0}")]
    Tag(u8),
    #[error("event Skip has hi {hi} below lo {lo}")]
    Range { lo: u64, hi: u64 },
    #[error("event names partition {0}, over the limit of {PARTITIONS_MAX}")]
    Partition(u32),
    #[error("event names offset {0}, over the largest Kafka offset")]
    Offset(u64),
    #[error("event with tag {0} has bytes set in fields it does not use")]
    Unused(u8),
}

use crate::config::PARTITIONS_MAX;
/// Largest offset an event may name (Kafka offsets are i64).
const OFFSET_MAX: u64 = i64::MAX as u64;

pub fn encode_events(events: &[Event], out: &mut Vec<u8>) {
    for e in events {
        let (tag, p, a, attempt, b, key) = match *e {
            Event::Deliver {
                partition: p,
                offset: o,
                attempt,
                key,
            } => (1u8, p, o, attempt, 0, key),
            Event::Ack {
                partition: p,
                offset: o,
            } => (2, p, o, 0, 0, 0),
            Event::Skip {
                partition: p,
                lo,
                hi,
            } => (3, p, lo, 0, hi, 0),
            Event::Ready {
                partition: p,
                offset: o,
                attempt,
                key,
            } => (4, p, o, attempt, 0, key),
            Event::Delay {
                partition: p,
                offset: o,
                attempt,
                due,
                key,
            } => (5, p, o, attempt, due, key),
            Event::DeadLetter {
                partition: p,
                offset: o,
            } => (6, p, o, 0, 0, 0),
            Event::GaveUp {
                partition: p,
                offset: o,
            } => (10, p, o, 0, 0, 0),
            Event::Seek {
                partition: p,
                to: offset,
            } => (7, p, offset, 0, 0, 0),
            Event::BucketsLoaded { upto } => (8, 0, upto, 0, 0, 0),
            Event::Redriven {
                partition: p,
                upto: offset,
            } => (9, p, offset, 0, 0, 0),
            Event::Truncate { partition: p, end } => (11, p, end, 0, 0, 0),
        };
        out.push(tag);
        out.extend_from_slice(&p.to_le_bytes());
        out.extend_from_slice(&a.to_le_bytes());
        out.extend_from_slice(&attempt.to_le_bytes());
        out.extend_from_slice(&b.to_le_bytes());
        out.extend_from_slice(&key.to_le_bytes());
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// Decodes journal events, checking every field before it is trusted.
///
/// Longer than most functions on purpose: one arm per event tag, beside the checks
/// that tag needs, mirroring [`encode_events`].
pub fn decode_events(bytes: &[u8]) -> Result<Vec<Event>, CodecError> {
    if !bytes.len().is_multiple_of(EVENT_BYTES) {
        return Err(CodecError::Length(bytes.len()));
    }
    let mut out = Vec::with_capacity(bytes.len() / EVENT_BYTES);
    for c in bytes.chunks_exact(EVENT_BYTES) {
        let (p, a, attempt, b, key) = (
            u32_at(c, 1),
            u64_at(c, 5),
            u32_at(c, 13),
            u64_at(c, 17),
            u64_at(c, 25),
        );
        if p >= PARTITIONS_MAX {
            return Err(CodecError::Partition(p));
        }
        if a > OFFSET_MAX || (c[0] == 3 && b > OFFSET_MAX) {
            return Err(CodecError::Offset(a.max(b)));
        }
        let e = match c[0] {
            1 => Event::Deliver {
                partition: p,
                offset: a,
                attempt,
                key,
            },
            2 => Event::Ack {
                partition: p,
                offset: a,
            },
            3 if b < a => return Err(CodecError::Range { lo: a, hi: b }),
            3 => Event::Skip {
                partition: p,
                lo: a,
                hi: b,
            },
            4 => Event::Ready {
                partition: p,
                offset: a,
                attempt,
                key,
            },
            5 => Event::Delay {
                partition: p,
                offset: a,
                attempt,
                due: b,
                key,
            },
            6 => Event::DeadLetter {
                partition: p,
                offset: a,
            },
            7 => Event::Seek {
                partition: p,
                to: a,
            },
            8 => Event::BucketsLoaded { upto: a },
            9 => Event::Redriven {
                partition: p,
                upto: a,
            },
            10 => Event::GaveUp {
                partition: p,
                offset: a,
            },
            11 => Event::Truncate {
                partition: p,
                end: a,
            },
            t => return Err(CodecError::Tag(t)),
        };
        let mut again = Vec::with_capacity(EVENT_BYTES);
        encode_events(&[e], &mut again);
        if again != c {
            return Err(CodecError::Unused(c[0]));
        }
        out.push(e);
    }
    Ok(out)
}

/// A delayed record waiting in a delay file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DelayEntry {
    pub due: u64,
    pub offset: u64,
    pub partition: u32,
    pub attempt: u32,
    pub gen: u32,
}

pub fn encode_delay(e: &DelayEntry, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&e.due.to_le_bytes());
    out.extend_from_slice(&e.offset.to_le_bytes());
    out.extend_from_slice(&e.partition.to_le_bytes());
    out.extend_from_slice(&e.attempt.to_le_bytes());
    out.extend_from_slice(&e.gen.to_le_bytes());
    let crc = crc32c::crc32c(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// Decodes a delay file: the good entries, and how many were damaged (bad CRC) or torn
/// (a partial entry at the end).
pub fn decode_delays(bytes: &[u8]) -> (Vec<DelayEntry>, usize) {
    let mut good = Vec::with_capacity(bytes.len() / DELAY_ENTRY_BYTES);
    let mut bad = usize::from(!bytes.len().is_multiple_of(DELAY_ENTRY_BYTES));
    for c in bytes.chunks_exact(DELAY_ENTRY_BYTES) {
        if crc32c::crc32c(&c[..28]) != u32_at(c, 28) {
            bad += 1;
            continue;
        }
        good.push(DelayEntry {
            due: u64_at(c, 0),
            offset: u64_at(c, 8),
            partition: u32_at(c, 16),
            attempt: u32_at(c, 20),
            gen: u32_at(c, 24),
        });
    }
    (good, bad)
}

/// The body of the `subscription_journal` fuzz target: decoding never panics, what
/// decodes encodes back to the same bytes, and decoded events apply to a state.
pub fn fuzz(data: &[u8]) {
    if let Ok(events) = decode_events(data) {
        let mut again = Vec::new();
        encode_events(&events, &mut again);
        assert_eq!(again, data);
        let mut state = super::state::State::new(data.first().is_some_and(|b| b & 1 == 1));
        for e in &events {
            state.apply(e);
        }
        let _ = state.save();
    }
    let (entries, _) = decode_delays(data);
    for e in &entries {
        let mut one = Vec::new();
        encode_delay(e, &mut one);
        assert_eq!(decode_delays(&one), (vec![*e], 0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn event() -> impl Strategy<Value = Event> {
        let p = || 0..PARTITIONS_MAX;
        let o = || 0..=OFFSET_MAX;
        let n = any::<u64>;
        prop_oneof![
            (p(), o(), any::<u32>(), n()).prop_map(|(p, o, attempt, key)| Event::Deliver {
                partition: p,
                offset: o,
                attempt,
                key
            }),
            (p(), o()).prop_map(|(p, o)| Event::Ack {
                partition: p,
                offset: o
            }),
            (p(), o(), o()).prop_map(|(p, a, b)| Event::Skip {
                partition: p,
                lo: a.min(b),
                hi: a.max(b)
            }),
            (p(), o(), any::<u32>(), n()).prop_map(|(p, o, attempt, key)| Event::Ready {
                partition: p,
                offset: o,
                attempt,
                key
            }),
            (p(), o(), any::<u32>(), n(), n()).prop_map(|(p, o, attempt, due, key)| {
                Event::Delay {
                    partition: p,
                    offset: o,
                    attempt,
                    due,
                    key,
                }
            }),
            (p(), o()).prop_map(|(p, o)| Event::DeadLetter {
                partition: p,
                offset: o
            }),
            (p(), o()).prop_map(|(p, o)| Event::GaveUp {
                partition: p,
                offset: o
            }),
            (p(), o()).prop_map(|(p, offset)| Event::Seek {
                partition: p,
                to: offset
            }),
            o().prop_map(|upto| Event::BucketsLoaded { upto }),
            (p(), o()).prop_map(|(p, offset)| Event::Redriven {
                partition: p,
                upto: offset
            }),
            (p(), o()).prop_map(|(p, end)| Event::Truncate { partition: p, end }),
        ]
    }

    proptest! {
        #[test]
        fn events_round_trip(events in proptest::collection::vec(event(), 0..20)) {
            let mut buf = Vec::new();
            encode_events(&events, &mut buf);
            prop_assert_eq!(decode_events(&buf).unwrap(), events);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            fuzz(&bytes);
        }

        #[test]
        fn delay_entries_round_trip(due in any::<u64>(), offset in any::<u64>(), partition in any::<u32>(), attempt in any::<u32>(), gen in any::<u32>()) {
            let e = DelayEntry { due, offset, partition, attempt, gen };
            let mut buf = Vec::new();
            encode_delay(&e, &mut buf);
            encode_delay(&e, &mut buf);
            buf.truncate(50);
            prop_assert_eq!(decode_delays(&buf), (vec![e], 1));
            buf[3] ^= 1;
            prop_assert_eq!(decode_delays(&buf), (vec![], 2));
        }
    }
}
