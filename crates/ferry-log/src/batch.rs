//! Kafka RecordBatch v2: the unit Ferry stores on disk and serves to readers.
//!
//! # Layout (big-endian, as Kafka defines it)
//!
//! ```text
//! offset  size  field
//!      0     8  base_offset              assigned by the log on append
//!      8     4  batch_length             bytes after this field
//!     12     4  partition_leader_epoch   Ferry writes 0
//!     16     1  magic                    always 2
//!     17     4  crc                      CRC-32C of bytes 21..end
//!     21     2  attributes               bits 0-2 compression, 3 timestamp type,
//!                                        4 transactional, 5 control
//!     23     4  last_offset_delta
//!     27     8  base_timestamp
//!     35     8  max_timestamp
//!     43     8  producer_id
//!     51     2  producer_epoch
//!     53     4  base_sequence
//!     57     4  record_count
//!     61     …  records (compressed as a whole when attributes say so)
//! ```
//!
//! Each record is: length (varint), attributes (i8), timestamp delta (varlong),
//! offset delta (varint), key length (varint, -1 for null), key, value length
//! (varint, -1 for null), value, header count (varint), then per header a key
//! length, key, value length (-1 for null) and value. Varints are zig-zag encoded.
//!
//! The CRC does not cover the base offset or the leader epoch, so the log can
//! assign offsets to a batch without recomputing it.
//!
//! # Decoding untrusted bytes
//!
//! Every length is checked against what is left of the buffer and against
//! [`DecodeLimits`]; nothing here panics on any input.

use crate::compression::{self, Compression};
use bytes::Bytes;

/// Bytes before the first record.
pub const BATCH_HEADER_BYTES: usize = 61;
/// Bytes of `base_offset` + `batch_length`, the prefix needed to find the batch's end.
pub const BATCH_PREFIX_BYTES: usize = 12;
/// Smallest legal `batch_length` (a header with no records).
pub const BATCH_LENGTH_MIN: i32 = (BATCH_HEADER_BYTES - BATCH_PREFIX_BYTES) as i32;
/// The only batch format Ferry stores.
pub const MAGIC_V2: i8 = 2;
/// Ferry's own record attribute bit: the value was sent as JSON over HTTP, so HTTP
/// readers get it back as JSON. Kafka clients ignore record attributes.
pub const RECORD_ATTR_JSON_VALUE: i8 = 0x01;

const ATTR_COMPRESSION_MASK: i16 = 0x07;
const ATTR_TIMESTAMP_LOG_APPEND: i16 = 0x08;
const ATTR_TRANSACTIONAL: i16 = 0x10;
const ATTR_CONTROL: i16 = 0x20;

const CRC_START: usize = 21;

/// Why bytes are not a valid batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("batch is truncated: need {needed} bytes, have {available}")]
    Truncated { needed: usize, available: usize },
    #[error("batch length {0} is out of range")]
    BadLength(i64),
    #[error("unsupported batch magic {0}; only RecordBatch v2 (magic 2) is accepted")]
    BadMagic(i8),
    #[error("batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("unknown compression codec {0}")]
    UnknownCompression(i16),
    #[error("record count {count} does not match last offset delta {last_offset_delta}")]
    BadRecordCount { count: i32, last_offset_delta: i32 },
    #[error("malformed record {index}: {reason}")]
    BadRecord { index: usize, reason: &'static str },
    #[error("decompression failed: {0}")]
    Decompress(String),
    #[error("decompressed batch is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
}

/// The fixed fields at the start of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

/// Reads `base_offset` and the total size of the batch (`12 + batch_length`) from the
/// first 12 bytes, checking the size against `max_batch_bytes`.
pub fn read_prefix(buf: &[u8], max_batch_bytes: usize) -> Result<(i64, usize), BatchError> {
    if buf.len() < BATCH_PREFIX_BYTES {
        return Err(BatchError::Truncated {
            needed: BATCH_PREFIX_BYTES,
            available: buf.len(),
        });
    }
    let base_offset = be_i64(buf, 0);
    let len = be_i32(buf, 8);
    if len < BATCH_LENGTH_MIN || (len as usize) + BATCH_PREFIX_BYTES > max_batch_bytes {
        return Err(BatchError::BadLength(len as i64));
    }
    Ok((base_offset, len as usize + BATCH_PREFIX_BYTES))
}

impl BatchHeader {
    /// Parses the header. `buf` must hold at least [`BATCH_HEADER_BYTES`]; the magic is
    /// checked, the CRC is not (see [`verify_crc`]).
    pub fn parse(buf: &[u8]) -> Result<Self, BatchError> {
        if buf.len() < BATCH_HEADER_BYTES {
            return Err(BatchError::Truncated {
                needed: BATCH_HEADER_BYTES,
                available: buf.len(),
            });
        }
        let h = BatchHeader {
            base_offset: be_i64(buf, 0),
            batch_length: be_i32(buf, 8),
            partition_leader_epoch: be_i32(buf, 12),
            magic: buf[16] as i8,
            crc: u32::from_be_bytes([buf[17], buf[18], buf[19], buf[20]]),
            attributes: be_i16(buf, 21),
            last_offset_delta: be_i32(buf, 23),
            base_timestamp: be_i64(buf, 27),
            max_timestamp: be_i64(buf, 35),
            producer_id: be_i64(buf, 43),
            producer_epoch: be_i16(buf, 51),
            base_sequence: be_i32(buf, 53),
            record_count: be_i32(buf, 57),
        };
        if h.magic != MAGIC_V2 {
            return Err(BatchError::BadMagic(h.magic));
        }
        if h.batch_length < BATCH_LENGTH_MIN {
            return Err(BatchError::BadLength(h.batch_length as i64));
        }
        if h.last_offset_delta < 0 || h.record_count < 0 {
            return Err(BatchError::BadRecordCount {
                count: h.record_count,
                last_offset_delta: h.last_offset_delta,
            });
        }
        Ok(h)
    }

    /// Total bytes of the batch on disk.
    pub fn total_bytes(&self) -> usize {
        self.batch_length as usize + BATCH_PREFIX_BYTES
    }

    /// Offset of the batch's last record.
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(self.last_offset_delta as i64)
    }

    pub fn compression(&self) -> Result<Compression, BatchError> {
        Compression::from_attribute(self.attributes & ATTR_COMPRESSION_MASK).ok_or(
            BatchError::UnknownCompression(self.attributes & ATTR_COMPRESSION_MASK),
        )
    }

    pub fn is_log_append_time(&self) -> bool {
        self.attributes & ATTR_TIMESTAMP_LOG_APPEND != 0
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }
}

/// Checks the batch's CRC-32C. `batch` is exactly one batch.
pub fn verify_crc(batch: &[u8]) -> Result<(), BatchError> {
    if batch.len() < BATCH_HEADER_BYTES {
        return Err(BatchError::Truncated {
            needed: BATCH_HEADER_BYTES,
            available: batch.len(),
        });
    }
    let stored = u32::from_be_bytes([batch[17], batch[18], batch[19], batch[20]]);
    let computed = crc32c::crc32c(&batch[CRC_START..]);
    if stored != computed {
        return Err(BatchError::CrcMismatch { stored, computed });
    }
    Ok(())
}

/// Parses and fully checks one batch that arrived from a producer: length, magic, CRC,
/// record count and codec. Returns its header.
pub fn validate_incoming(batch: &[u8], max_batch_bytes: usize) -> Result<BatchHeader, BatchError> {
    let (_, total) = read_prefix(batch, max_batch_bytes)?;
    if total != batch.len() {
        return Err(BatchError::BadLength(
            batch.len() as i64 - BATCH_PREFIX_BYTES as i64,
        ));
    }
    let header = BatchHeader::parse(batch)?;
    verify_crc(batch)?;
    header.compression()?;
    if header.record_count == 0 || header.record_count as i64 != header.last_offset_delta as i64 + 1
    {
        return Err(BatchError::BadRecordCount {
            count: header.record_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    Ok(header)
}

/// Writes the log-assigned base offset into a batch (not covered by the CRC).
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    batch[0..8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Sets a batch's partition leader epoch (outside the CRC, like the base offset).
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    batch[12..16].copy_from_slice(&epoch.to_be_bytes());
}

/// One header of a record. Keys are strings in Kafka; Ferry keeps the bytes as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordHeader {
    pub key: Bytes,
    pub value: Option<Bytes>,
}

/// One decoded record with its absolute offset and timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: i64,
    pub timestamp: i64,
    pub attributes: i8,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<RecordHeader>,
}

impl Record {
    /// The value of the record's first header named `name`. Header names are compared
    /// ASCII case-insensitively, everywhere in Ferry (`Traceparent` finds
    /// `traceparent`), as HTTP does; Ferry's own headers are written in lower case.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.key.eq_ignore_ascii_case(name.as_bytes()))
            .and_then(|h| h.value.as_deref())
    }
}

/// Bounds applied while decoding records from untrusted bytes.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// Largest decompressed size of one batch's records.
    pub decompressed_bytes_max: usize,
    /// Largest number of headers on one record.
    pub headers_per_record_max: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            decompressed_bytes_max: 64 * 1024 * 1024,
            headers_per_record_max: 1024,
        }
    }
}

/// A cursor over record bytes; every read is bounds-checked.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn varlong(&mut self) -> Option<i64> {
        let mut value: u64 = 0;
        for i in 0..10 {
            let b = *self.buf.get(self.pos)?;
            self.pos += 1;
            value |= ((b & 0x7f) as u64) << (7 * i);
            if b & 0x80 == 0 {
                return Some(((value >> 1) as i64) ^ -((value & 1) as i64));
            }
        }
        None
    }
    fn varint(&mut self) -> Option<i32> {
        let v = self.varlong()?;
        i32::try_from(v).ok()
    }
    fn i8(&mut self) -> Option<i8> {
        let b = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(b as i8)
    }
    fn bytes(&mut self, len: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(len)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    /// A length-prefixed byte string; -1 means null.
    fn nullable(&mut self, source: &Bytes) -> Result<Option<Bytes>, &'static str> {
        let len = self.varint().ok_or("bad length varint")?;
        if len < -1 {
            return Err("negative length");
        }
        if len == -1 {
            return Ok(None);
        }
        let start = self.pos;
        self.bytes(len as usize)
            .ok_or("length past end of record")?;
        Ok(Some(source.slice(start..start + len as usize)))
    }
}

/// Decodes every record of one batch (checking its CRC first) and decompresses as
/// needed. `batch` is exactly one batch.
pub fn decode_records(
    batch: &Bytes,
    limits: &DecodeLimits,
) -> Result<(BatchHeader, Vec<Record>), BatchError> {
    verify_crc(batch)?;
    let mut records = Vec::new();
    let header = walk_records(batch, limits, i64::MIN, |r| {
        records.push(r);
        true
    })?;
    Ok((header, records))
}

/// Like [`decode_records`], but only records at `from` and after, at most `max` of
/// them. Records before `from` are stepped over by their length without being
/// decoded (the CRC still covers the whole batch), and decoding stops at `max`: a
/// reader that wants a few records of a large batch pays for those few.
pub fn decode_records_from(
    batch: &Bytes,
    limits: &DecodeLimits,
    from: i64,
    max: usize,
) -> Result<(BatchHeader, Vec<Record>), BatchError> {
    verify_crc(batch)?;
    let mut records = Vec::new();
    if max == 0 {
        return Ok((BatchHeader::parse(batch)?, records));
    }
    let header = walk_records(batch, limits, from, |r| {
        records.push(r);
        records.len() < max
    })?;
    Ok((header, records))
}

/// What [`check_batch`] found in a batch it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    pub header: BatchHeader,
    /// The largest record timestamp (for a CreateTime batch), or the header's
    /// `max_timestamp` (LogAppendTime, where records take that one). A client's header
    /// may say otherwise; Kafka then rewrites the header, and so does Ferry
    /// ([`set_max_timestamp`]).
    pub max_timestamp: i64,
}

/// The one full check of a batch before it is stored, wherever it comes from: length,
/// magic, CRC, codec, `record_count` = `last_offset_delta` + 1 > 0, every record
/// decodable within `limits` and within its stated length, exactly `record_count`
/// records, and record `i` at offset delta `i` (so offsets are `base_offset`..=
/// `last_offset` in order, as every reader assumes). The records are not kept.
pub fn check_batch(
    batch: &Bytes,
    max_batch_bytes: usize,
    limits: &DecodeLimits,
) -> Result<Checked, BatchError> {
    let header = validate_incoming(batch, max_batch_bytes)?;
    let mut n = 0usize;
    let mut max_timestamp = i64::MIN;
    walk_records(batch, limits, i64::MIN, |r| {
        n += 1;
        max_timestamp = max_timestamp.max(r.timestamp);
        true
    })?;
    if n != header.record_count as usize {
        return Err(BatchError::BadRecordCount {
            count: header.record_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    if header.is_log_append_time() {
        max_timestamp = header.max_timestamp;
    }
    Ok(Checked {
        header,
        max_timestamp,
    })
}

/// Rewrites a batch's `max_timestamp` and its CRC, as Kafka does when a producer's
/// header disagrees with its records. `batch` is exactly one batch.
pub fn set_max_timestamp(batch: &mut [u8], max_timestamp: i64) {
    if batch.len() < BATCH_HEADER_BYTES {
        return;
    }
    batch[35..43].copy_from_slice(&max_timestamp.to_be_bytes());
    let crc = crc32c::crc32c(&batch[CRC_START..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// Marks a batch as stamped with the log's append time (Kafka's LogAppendTime): sets
/// the timestamp-type attribute bit and writes `at` as its `max_timestamp`, which every
/// record then takes, and recomputes the CRC (it covers both). `batch` is exactly one
/// batch.
pub fn set_log_append_time(batch: &mut [u8], at: i64) {
    if batch.len() < BATCH_HEADER_BYTES {
        return;
    }
    let attributes = i16::from_be_bytes([batch[21], batch[22]]) | ATTR_TIMESTAMP_LOG_APPEND;
    batch[21..23].copy_from_slice(&attributes.to_be_bytes());
    set_max_timestamp(batch, at);
}

/// The records of a batch, decompressed as needed, once the batch's length and the
/// header's record count are found plausible for them.
fn records_body(
    batch: &Bytes,
    header: &BatchHeader,
    limits: &DecodeLimits,
) -> Result<Bytes, BatchError> {
    if header.total_bytes() != batch.len() {
        return Err(BatchError::BadLength(header.batch_length as i64));
    }
    let body: Bytes = match header.compression()? {
        Compression::None => batch.slice(BATCH_HEADER_BYTES..),
        other => Bytes::from(compression::decompress(
            other,
            &batch[BATCH_HEADER_BYTES..],
            limits.decompressed_bytes_max,
        )?),
    };
    // Each record takes at least 7 bytes; a larger count cannot be honest.
    if header.record_count as usize > body.len() / 7 + 1 {
        return Err(BatchError::BadRecordCount {
            count: header.record_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    Ok(body)
}

/// A record's headers, read from `r` within the limit on their number.
fn read_headers(
    r: &mut Reader<'_>,
    body: &Bytes,
    limits: &DecodeLimits,
) -> Result<Vec<RecordHeader>, &'static str> {
    let count = r.varint().ok_or("bad header count")?;
    if count < 0 || count as usize > limits.headers_per_record_max {
        return Err("header count out of range");
    }
    let mut headers = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let key = r.nullable(body)?.ok_or("null header key")?;
        let value = r.nullable(body)?;
        headers.push(RecordHeader { key, value });
    }
    Ok(headers)
}

/// Decompresses as needed and hands each record at offset `from` or later to `visit`,
/// until `visit` answers false. Records before `from` are only stepped over.
fn walk_records(
    batch: &Bytes,
    limits: &DecodeLimits,
    from: i64,
    mut visit: impl FnMut(Record) -> bool,
) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(batch)?;
    let body = records_body(batch, &header, limits)?;
    let count = header.record_count as usize;
    let mut r = Reader { buf: &body, pos: 0 };
    for index in 0..count {
        let bad = |reason| BatchError::BadRecord { index, reason };
        let len = r.varint().ok_or(bad("bad length varint"))?;
        if len < 0 {
            return Err(bad("negative record length"));
        }
        let end = r
            .pos
            .checked_add(len as usize)
            .filter(|e| *e <= body.len())
            .ok_or(bad("record past end of batch"))?;
        let mut rr = Reader {
            buf: &body[..end],
            pos: r.pos,
        };
        let attributes = rr.i8().ok_or(bad("missing attributes"))?;
        let ts_delta = rr.varlong().ok_or(bad("bad timestamp delta"))?;
        let offset_delta = rr.varint().ok_or(bad("bad offset delta"))?;
        // Record `index` is at delta `index`: nothing else is a valid batch, and a reader
        // must never see an offset outside the batch's range.
        if offset_delta as i64 != index as i64 {
            return Err(bad(
                "offset delta is not the record's position in the batch",
            ));
        }
        let offset = header.base_offset.saturating_add(offset_delta as i64);
        if offset < from {
            r.pos = end;
            continue;
        }
        let key = rr.nullable(&body).map_err(bad)?;
        let value = rr.nullable(&body).map_err(bad)?;
        let headers = read_headers(&mut rr, &body, limits).map_err(bad)?;
        if rr.pos != end {
            return Err(bad("record length does not match its fields"));
        }
        r.pos = end;
        let timestamp = if header.is_log_append_time() {
            header.max_timestamp
        } else {
            header.base_timestamp.saturating_add(ts_delta)
        };
        let more = visit(Record {
            offset,
            timestamp,
            attributes,
            key,
            value,
            headers,
        });
        if !more {
            return Ok(header);
        }
    }
    if r.pos != body.len() {
        return Err(BatchError::BadRecord {
            index: count,
            reason: "bytes after the last record the header counts",
        });
    }
    Ok(header)
}

/// Splits concatenated whole batches (as [`crate::PartitionLog::read`] returns them)
/// into one `Bytes` per batch. Every length is checked against what is left; a bad one
/// ends the iteration with an error instead of slicing out of bounds.
pub struct Batches {
    bytes: Bytes,
    pos: usize,
}

impl Batches {
    pub fn new(bytes: Bytes) -> Self {
        Batches { bytes, pos: 0 }
    }
}

impl Iterator for Batches {
    type Item = Result<Bytes, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.bytes.len() {
            return None;
        }
        let rest = &self.bytes[self.pos..];
        let item = read_prefix(rest, usize::MAX).and_then(|(_, total)| {
            if total > rest.len() {
                return Err(BatchError::Truncated {
                    needed: total,
                    available: rest.len(),
                });
            }
            Ok(self.bytes.slice(self.pos..self.pos + total))
        });
        match &item {
            Ok(b) => self.pos += b.len(),
            Err(_) => self.pos = self.bytes.len(),
        }
        Some(item)
    }
}

fn put_varlong(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        if z < 0x80 {
            out.push(z as u8);
            return;
        }
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
}

fn put_nullable(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => put_varlong(out, -1),
        Some(b) => {
            put_varlong(out, b.len() as i64);
            out.extend_from_slice(b);
        }
    }
}

/// What one record of a batch being built holds.
pub(crate) struct RecordParts<'a> {
    pub attributes: i8,
    pub timestamp_delta: i64,
    pub offset_delta: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: &'a [RecordHeader],
}

/// Appends one record, its length first, to a batch's `body`; `scratch` is reused
/// between records.
pub(crate) fn put_record(body: &mut Vec<u8>, scratch: &mut Vec<u8>, r: &RecordParts<'_>) {
    scratch.clear();
    scratch.push(r.attributes as u8);
    put_varlong(scratch, r.timestamp_delta);
    put_varlong(scratch, r.offset_delta);
    put_nullable(scratch, r.key);
    put_nullable(scratch, r.value);
    put_varlong(scratch, r.headers.len() as i64);
    for h in r.headers {
        put_nullable(scratch, Some(&h.key));
        put_nullable(scratch, h.value.as_deref());
    }
    put_varlong(body, scratch.len() as i64);
    body.extend_from_slice(scratch);
}

/// The header fields a builder of a RecordBatch v2 chooses; the length, magic and CRC
/// follow from them and the body.
pub(crate) struct NewHeader {
    pub base_offset: i64,
    pub partition_leader_epoch: i32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

/// A whole batch of `h` and its (compressed, when the attributes say so) `body`, with
/// its CRC. Fails when the body is too large for a batch's length field.
pub(crate) fn assemble(h: &NewHeader, body: &[u8]) -> Result<Vec<u8>, BatchError> {
    let batch_length = i32::try_from(BATCH_HEADER_BYTES - BATCH_PREFIX_BYTES + body.len())
        .map_err(|_| BatchError::BadLength(body.len() as i64))?;
    let mut out = Vec::with_capacity(BATCH_HEADER_BYTES + body.len());
    out.extend_from_slice(&h.base_offset.to_be_bytes());
    out.extend_from_slice(&batch_length.to_be_bytes());
    out.extend_from_slice(&h.partition_leader_epoch.to_be_bytes());
    out.push(MAGIC_V2 as u8);
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&h.attributes.to_be_bytes());
    out.extend_from_slice(&h.last_offset_delta.to_be_bytes());
    out.extend_from_slice(&h.base_timestamp.to_be_bytes());
    out.extend_from_slice(&h.max_timestamp.to_be_bytes());
    out.extend_from_slice(&h.producer_id.to_be_bytes());
    out.extend_from_slice(&h.producer_epoch.to_be_bytes());
    out.extend_from_slice(&h.base_sequence.to_be_bytes());
    out.extend_from_slice(&h.record_count.to_be_bytes());
    debug_assert_eq!(out.len(), BATCH_HEADER_BYTES);
    out.extend_from_slice(body);
    let crc = crc32c::crc32c(&out[CRC_START..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(out)
}

/// A record to be written; the builder assigns offset deltas in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewRecord {
    pub timestamp: i64,
    pub attributes: i8,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<RecordHeader>,
}

/// Builds one RecordBatch v2 with base offset 0 and no producer id.
pub fn build_batch(records: &[NewRecord], compression: Compression) -> Result<Vec<u8>, BatchError> {
    let base_timestamp = records.iter().map(|r| r.timestamp).min().unwrap_or(0);
    let max_timestamp = records.iter().map(|r| r.timestamp).max().unwrap_or(0);
    let mut body = Vec::with_capacity(records.iter().map(encoded_len_hint).sum());
    let mut scratch = Vec::new();
    for (i, r) in records.iter().enumerate() {
        put_record(
            &mut body,
            &mut scratch,
            &RecordParts {
                attributes: r.attributes,
                timestamp_delta: r.timestamp - base_timestamp,
                offset_delta: i as i64,
                key: r.key.as_deref(),
                value: r.value.as_deref(),
                headers: &r.headers,
            },
        );
    }
    let body = match compression {
        Compression::None => body,
        other => compression::compress(other, &body)?,
    };
    let count =
        i32::try_from(records.len()).map_err(|_| BatchError::BadLength(records.len() as i64))?;
    assemble(
        &NewHeader {
            base_offset: 0,
            partition_leader_epoch: 0,
            attributes: compression.attribute(),
            last_offset_delta: (count - 1).max(0),
            base_timestamp,
            max_timestamp,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            record_count: count,
        },
        &body,
    )
}

/// Builds a transaction marker: a control batch (attributes transactional and control)
/// of `producer_id` at `producer_epoch` holding one control record whose key is
/// `version: i16 = 0, type: i16` (0 ABORT, 1 COMMIT) and whose value is
/// `version: i16 = 0, coordinator_epoch: i32`, as Kafka writes them. Base offset 0,
/// base sequence -1.
pub fn build_control_batch(
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
    timestamp: i64,
) -> Vec<u8> {
    let kind = if commit {
        crate::txn::CONTROL_COMMIT
    } else {
        crate::txn::CONTROL_ABORT
    };
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&kind.to_be_bytes());
    let mut value = Vec::with_capacity(6);
    value.extend_from_slice(&0i16.to_be_bytes());
    value.extend_from_slice(&coordinator_epoch.to_be_bytes());
    let mut body = Vec::with_capacity(32);
    put_record(
        &mut body,
        &mut Vec::with_capacity(24),
        &RecordParts {
            attributes: 0,
            timestamp_delta: 0,
            offset_delta: 0,
            key: Some(&key),
            value: Some(&value),
            headers: &[],
        },
    );
    assemble(
        &NewHeader {
            base_offset: 0,
            partition_leader_epoch: 0,
            attributes: ATTR_TRANSACTIONAL | ATTR_CONTROL,
            last_offset_delta: 0,
            base_timestamp: timestamp,
            max_timestamp: timestamp,
            producer_id,
            producer_epoch,
            base_sequence: -1,
            record_count: 1,
        },
        &body,
    )
    .expect("a marker's body is a few bytes")
}

/// The marker type of a control batch (see [`build_control_batch`]): `Some(true)` for
/// COMMIT, `Some(false)` for ABORT, `None` when it holds no marker Ferry knows.
pub fn control_batch_commits(batch: &Bytes) -> Option<bool> {
    let (_, records) = decode_records(batch, &DecodeLimits::default()).ok()?;
    let key = records.first()?.key.as_ref()?;
    match crate::txn::control_type(key)? {
        crate::txn::CONTROL_COMMIT => Some(true),
        crate::txn::CONTROL_ABORT => Some(false),
        _ => None,
    }
}

fn encoded_len_hint(r: &NewRecord) -> usize {
    24 + r.key.as_ref().map_or(0, |k| k.len())
        + r.value.as_ref().map_or(0, |v| v.len())
        + r.headers
            .iter()
            .map(|h| 10 + h.key.len() + h.value.as_ref().map_or(0, |v| v.len()))
            .sum::<usize>()
}

#[cfg(test)]
mod tests;
