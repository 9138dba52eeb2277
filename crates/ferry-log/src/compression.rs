//! The compression codecs a Kafka batch may carry. Batches are stored with the codec
//! they arrived with; readers that need records decompress, always within a limit.
//!
//! # The decompression budget
//!
//! A few bytes of a hostile batch can claim gigabytes once inflated, and many
//! connections can send such batches at once. Every decompression therefore reserves the
//! memory its output may take from one process-wide budget
//! ([`set_decompression_budget`], `--decompress-memory-bytes`) before it inflates, and
//! gives it back when it returns:
//!
//! 1. it reserves a first guess (eight times the input, at least 1 MiB, at most the
//!    limit) and inflates within it;
//! 2. an output larger than the guess gives the guess back, reserves the whole limit,
//!    and inflates again.
//!
//! A reservation waits, first come first served, until the budget has room; nobody
//! waits while holding a reservation, so the waits always end. A limit is never more
//! than the budget. The memory decompression holds at once is thus at most the budget
//! (plus, for each caller, the output it was handed and has not yet dropped).

use crate::batch::BatchError;
use crate::sync::{lock, wait};
use std::io::{Read, Write};
use std::sync::{Condvar, Mutex};

/// The default of `--decompress-memory-bytes`: 256 MiB.
pub const DECOMPRESSION_BUDGET_DEFAULT: usize = 256 << 20;
/// The smallest budget: every limit is cut to the budget, so a smaller one would refuse
/// ordinary batches.
pub const DECOMPRESSION_BUDGET_MIN: usize = 1 << 20;

struct BudgetState {
    total: usize,
    in_use: usize,
    /// First come, first served: the next ticket to hand out and the one served next.
    next_ticket: u64,
    serving: u64,
}

struct Budget {
    state: Mutex<BudgetState>,
    changed: Condvar,
}

static BUDGET: Budget = Budget {
    state: Mutex::new(BudgetState {
        total: DECOMPRESSION_BUDGET_DEFAULT,
        in_use: 0,
        next_ticket: 0,
        serving: 0,
    }),
    changed: Condvar::new(),
};

/// Sets the memory that decompression may hold at once across the process (at least
/// [`DECOMPRESSION_BUDGET_MIN`]). Called once at start.
pub fn set_decompression_budget(bytes: usize) {
    let mut s = lock(&BUDGET.state);
    s.total = bytes.max(DECOMPRESSION_BUDGET_MIN);
    BUDGET.changed.notify_all();
}

/// The memory that decompression may hold at once.
pub fn decompression_budget() -> usize {
    lock(&BUDGET.state).total
}

/// Memory decompression holds now (for metrics and tests).
pub fn decompression_in_use() -> usize {
    lock(&BUDGET.state).in_use
}

/// Bytes reserved from the budget, given back on drop.
struct Reservation {
    bytes: usize,
}

impl Reservation {
    /// Waits its turn and until the budget has room for `bytes` (at most the budget).
    fn take(bytes: usize) -> Reservation {
        let mut s = lock(&BUDGET.state);
        let ticket = s.next_ticket;
        s.next_ticket += 1;
        while s.serving != ticket || s.in_use + bytes.min(s.total) > s.total {
            s = wait(&BUDGET.changed, s);
        }
        let bytes = bytes.min(s.total);
        s.serving += 1;
        s.in_use += bytes;
        debug_assert!(s.in_use <= s.total, "the budget is never overdrawn");
        BUDGET.changed.notify_all();
        Reservation { bytes }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut s = lock(&BUDGET.state);
        debug_assert!(s.in_use >= self.bytes);
        s.in_use -= self.bytes;
        BUDGET.changed.notify_all();
    }
}

/// A batch's codec, as bits 0-2 of its attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    pub fn from_attribute(bits: i16) -> Option<Self> {
        Some(match bits {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            _ => return None,
        })
    }

    pub fn attribute(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ]
        .into_iter()
        .find(|c| c.name() == name)
    }
}

/// The header Java's snappy stream (xerial) writes before its chunks.
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_BYTES: usize = 16;

fn read_bounded(mut r: impl Read, limit: usize) -> Result<Vec<u8>, BatchError> {
    // Room for all the output at once: growing by doubling could take twice the limit.
    // Pages are only taken as they are written.
    let mut out = Vec::with_capacity(limit.saturating_add(1));
    (&mut r)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| BatchError::Decompress(e.to_string()))?;
    if out.len() > limit {
        return Err(BatchError::TooLarge { limit });
    }
    Ok(out)
}

fn snappy_block(input: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<(), BatchError> {
    let len =
        snap::raw::decompress_len(input).map_err(|e| BatchError::Decompress(e.to_string()))?;
    if out.len().saturating_add(len) > limit {
        return Err(BatchError::TooLarge { limit });
    }
    let start = out.len();
    out.resize(start + len, 0);
    snap::raw::Decoder::new()
        .decompress(input, &mut out[start..])
        .map_err(|e| BatchError::Decompress(e.to_string()))?;
    Ok(())
}

/// Decompresses `input`, refusing output larger than `limit` bytes (or than the
/// decompression budget), within the budget (see the module).
pub fn decompress(codec: Compression, input: &[u8], limit: usize) -> Result<Vec<u8>, BatchError> {
    if codec == Compression::None {
        return inflate(codec, input, limit);
    }
    let limit = limit.min(decompression_budget());
    let guess = input.len().saturating_mul(8).max(1 << 20).min(limit);
    {
        let _held = Reservation::take(guess);
        match inflate(codec, input, guess) {
            Err(BatchError::TooLarge { .. }) if guess < limit => {}
            done => return done,
        }
    }
    let _held = Reservation::take(limit);
    inflate(codec, input, limit)
}

/// Decompresses `input` within `limit` bytes of output.
fn inflate(codec: Compression, input: &[u8], limit: usize) -> Result<Vec<u8>, BatchError> {
    match codec {
        Compression::None => {
            if input.len() > limit {
                return Err(BatchError::TooLarge { limit });
            }
            Ok(input.to_vec())
        }
        Compression::Gzip => read_bounded(flate2::read::MultiGzDecoder::new(input), limit),
        Compression::Lz4 => read_bounded(lz4_flex::frame::FrameDecoder::new(input), limit),
        Compression::Zstd => {
            let decoder = zstd::stream::read::Decoder::new(input)
                .map_err(|e| BatchError::Decompress(e.to_string()))?;
            read_bounded(decoder, limit)
        }
        Compression::Snappy => {
            let mut out = Vec::with_capacity(limit);
            if input.len() >= XERIAL_HEADER_BYTES && &input[..8] == XERIAL_MAGIC {
                let mut pos = XERIAL_HEADER_BYTES;
                while pos < input.len() {
                    let len_bytes = input.get(pos..pos + 4).ok_or_else(|| {
                        BatchError::Decompress("truncated snappy chunk length".into())
                    })?;
                    let len = u32::from_be_bytes([
                        len_bytes[0],
                        len_bytes[1],
                        len_bytes[2],
                        len_bytes[3],
                    ]) as usize;
                    pos += 4;
                    let chunk = pos
                        .checked_add(len)
                        .and_then(|end| input.get(pos..end))
                        .ok_or_else(|| BatchError::Decompress("truncated snappy chunk".into()))?;
                    snappy_block(chunk, &mut out, limit)?;
                    pos += len;
                }
            } else {
                snappy_block(input, &mut out, limit)?;
            }
            Ok(out)
        }
    }
}

/// Compresses `input` in the form Kafka clients expect for `codec`.
pub fn compress(codec: Compression, input: &[u8]) -> Result<Vec<u8>, BatchError> {
    let err = |e: std::io::Error| BatchError::Decompress(e.to_string());
    match codec {
        Compression::None => Ok(input.to_vec()),
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(input).map_err(err)?;
            enc.finish().map_err(err)
        }
        Compression::Lz4 => {
            let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::new());
            enc.write_all(input).map_err(err)?;
            enc.finish()
                .map_err(|e| BatchError::Decompress(e.to_string()))
        }
        Compression::Zstd => zstd::bulk::compress(input, 3).map_err(err),
        Compression::Snappy => snap::raw::Encoder::new()
            .compress_vec(input)
            .map_err(|e| BatchError::Decompress(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xerial_framed_snappy_from_java_clients_decodes() {
        let data = b"hello hello hello hello".repeat(10);
        let block = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        let mut framed = XERIAL_MAGIC.to_vec();
        framed.extend_from_slice(&1u32.to_be_bytes());
        framed.extend_from_slice(&1u32.to_be_bytes());
        framed.extend_from_slice(&(block.len() as u32).to_be_bytes());
        framed.extend_from_slice(&block);
        assert_eq!(
            decompress(Compression::Snappy, &framed, 1 << 20).unwrap(),
            data
        );
    }

    #[test]
    fn a_truncated_xerial_chunk_is_an_error() {
        let mut framed = XERIAL_MAGIC.to_vec();
        framed.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 1, 0, 1]);
        assert!(decompress(Compression::Snappy, &framed, 1 << 20).is_err());
    }

    #[test]
    fn an_output_larger_than_the_first_guess_is_inflated_within_the_whole_limit() {
        // 6 MiB of zeros compress to a few KiB: the first guess (1 MiB) is too small.
        let data = vec![0u8; 6 << 20];
        for codec in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let packed = compress(codec, &data).unwrap();
            assert!(packed.len() < 1 << 20, "{codec:?}");
            assert_eq!(
                decompress(codec, &packed, 8 << 20).unwrap(),
                data,
                "{codec:?}"
            );
            assert!(matches!(
                decompress(codec, &packed, 4 << 20),
                Err(BatchError::TooLarge { .. })
            ));
        }
    }

    #[test]
    fn many_decompressions_at_once_all_finish_within_the_budget() {
        let packed = std::sync::Arc::new(compress(Compression::Zstd, &vec![7u8; 3 << 20]).unwrap());
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let packed = std::sync::Arc::clone(&packed);
                std::thread::spawn(move || {
                    for _ in 0..4 {
                        let out = decompress(Compression::Zstd, &packed, 64 << 20).unwrap();
                        assert_eq!(out.len(), 3 << 20);
                        assert!(decompression_in_use() <= decompression_budget());
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }
}
