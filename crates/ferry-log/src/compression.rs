//! The compression codecs a Kafka batch may carry. Batches are stored with the codec
//! they arrived with; readers that need records decompress, always within a limit.

use crate::batch::BatchError;
use std::io::{Read, Write};

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
    let mut out = Vec::new();
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

/// Decompresses `input`, refusing output larger than `limit` bytes.
pub fn decompress(codec: Compression, input: &[u8], limit: usize) -> Result<Vec<u8>, BatchError> {
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
            let mut out = Vec::new();
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
}
