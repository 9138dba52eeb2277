//! The decoder of the messages that PostgreSQL's `pgoutput` plugin sends over logical
//! replication, protocol version 1 (PostgreSQL's "Logical Replication Message Formats").
//!
//! The input is the payload of one `XLogData` message: bytes from the network, not
//! trusted. [`decode`] reads exactly one message from it and nothing else.
//!
//! # Layout
//!
//! Every message starts with a one-byte tag. Integers are big-endian; `String` is a
//! NUL-terminated string; `Int64` LSNs and timestamps (microseconds since 2000-01-01) are
//! returned as sent.
//!
//! ```text
//! 'B' Begin     final_lsn:Int64 commit_time:Int64 xid:Int32
//! 'C' Commit    flags:Int8 commit_lsn:Int64 end_lsn:Int64 commit_time:Int64
//! 'O' Origin    commit_lsn:Int64 name:String
//! 'R' Relation  id:Int32 namespace:String name:String replica_identity:Int8
//!               ncolumns:Int16 { flags:Int8 name:String type_oid:Int32 typmod:Int32 }*
//! 'Y' Type      id:Int32 namespace:String name:String
//! 'I' Insert    relation_id:Int32 'N' TupleData
//! 'U' Update    relation_id:Int32 [('K' | 'O') TupleData] 'N' TupleData
//! 'D' Delete    relation_id:Int32 ('K' | 'O') TupleData
//! 'T' Truncate  nrelations:Int32 options:Int8 relation_id:Int32 * nrelations
//! 'M' Message   flags:Int8 lsn:Int64 prefix:String length:Int32 content:Byte[length]
//!
//! TupleData     ncolumns:Int16 { 'n' | 'u' | ('t' | 'b') length:Int32 Byte[length] }*
//! ```
//!
//! # Hostile input
//!
//! Every length and count is checked against the bytes that remain and against
//! [`Limits`] before anything is allocated for it, so a message that announces 65,535
//! columns in three bytes fails at once. Nothing on the input path indexes or unwraps;
//! the fuzz target `fuzz/fuzz_targets/pgoutput_decode.rs` holds the decoder to that.
//! Bytes after a complete message are an error ([`DecodeError::TrailingBytes`]), as
//! they mean the sender and this decoder disagree about the format.
//!
//! # Zero copy
//!
//! Column values ([`Datum::Text`], [`Datum::Binary`]) and [`Message::Message`]'s
//! content are [`Bytes::slice`]s of the input: they share its buffer.

use bytes::Bytes;

#[cfg(test)]
mod test_encoder;
#[cfg(test)]
mod tests;

/// Bounds on what one message may announce, checked before anything is allocated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Most columns in a relation or a tuple. Postgres itself allows 1,664
    /// (`MaxTupleAttributeNumber`), the default.
    pub columns_max: usize,
    /// Longest name or string (namespace, relation, column, type, origin, message
    /// prefix), in bytes without the NUL. Default 1,024; Postgres's identifiers are at
    /// most 63 bytes.
    pub name_bytes_max: usize,
    /// Most relations in one Truncate message. Default 65,536.
    pub truncate_relations_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            columns_max: 1664,
            name_bytes_max: 1024,
            truncate_relations_max: 65_536,
        }
    }
}

/// Why a payload is not one well-formed pgoutput message. Every variant says where:
/// `at` is the offset in the payload of the field that failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum DecodeError {
    /// The payload ends inside a field.
    #[error("truncated at byte {at}: {field} needs {needed} bytes, {remaining} remain")]
    Truncated {
        at: usize,
        field: &'static str,
        needed: usize,
        remaining: usize,
    },
    /// The first byte is not a message tag of protocol version 1.
    #[error("unknown message tag {tag:#04x} at byte 0")]
    UnknownTag { tag: u8 },
    /// A byte that introduces a tuple is not one of those allowed here
    /// (`expected`, e.g. "'K', 'O' or 'N'").
    #[error("bad tuple tag {tag:#04x} at byte {at}: expected {expected}")]
    BadTupleTag {
        at: usize,
        tag: u8,
        expected: &'static str,
    },
    /// A column value's kind is not 'n', 'u', 't' or 'b'.
    #[error("bad column value kind {kind:#04x} at byte {at}: expected 'n', 'u', 't' or 'b'")]
    BadDatumKind { at: usize, kind: u8 },
    /// A relation's replica identity is not 'd', 'n', 'f' or 'i'.
    #[error("bad replica identity {value:#04x} at byte {at}: expected 'd', 'n', 'f' or 'i'")]
    BadReplicaIdentity { at: usize, value: u8 },
    /// A count is over its limit in [`Limits`].
    #[error("{what} count {count} at byte {at} is over the limit of {max}")]
    CountOverLimit {
        at: usize,
        what: &'static str,
        count: usize,
        max: usize,
    },
    /// A length or count sent as a signed integer is negative.
    #[error("negative {what} {value} at byte {at}")]
    Negative {
        at: usize,
        what: &'static str,
        value: i64,
    },
    /// A string has no NUL within `max` bytes.
    #[error("{what} at byte {at} is longer than the limit of {max} bytes")]
    NameTooLong {
        at: usize,
        what: &'static str,
        max: usize,
    },
    /// A string is not UTF-8.
    #[error("{what} at byte {at} is not UTF-8")]
    NameNotUtf8 { at: usize, what: &'static str },
    /// A string that must not be empty is.
    #[error("{what} at byte {at} is empty")]
    EmptyName { at: usize, what: &'static str },
    /// Bytes remain after a complete message.
    #[error("{count} trailing bytes at byte {at} after a complete message")]
    TrailingBytes { at: usize, count: usize },
}

/// One pgoutput message (protocol version 1).
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// 'B': a transaction starts.
    Begin {
        /// The LSN of the transaction's commit record.
        final_lsn: u64,
        /// Commit time in microseconds since 2000-01-01 00:00:00 UTC, as sent.
        commit_time_us: i64,
        /// The transaction's id.
        xid: u32,
    },
    /// 'C': the transaction started by the last Begin commits.
    Commit {
        /// Unused by Postgres so far (0); kept as sent.
        flags: u8,
        /// The LSN of the commit record.
        commit_lsn: u64,
        /// The LSN just past the commit record.
        end_lsn: u64,
        /// Commit time in microseconds since 2000-01-01 00:00:00 UTC, as sent.
        commit_time_us: i64,
    },
    /// 'O': the transaction came from another node (replication origin).
    Origin {
        /// The LSN of the commit on the origin server.
        commit_lsn: u64,
        /// The origin's name.
        name: String,
    },
    /// 'R': a relation's description, sent before its first row change in a session
    /// and again after its definition changes.
    Relation(Relation),
    /// 'Y': a data type's name, sent before the first row that uses a non-built-in type.
    Type {
        /// The type's OID.
        id: u32,
        /// Its schema; empty for `pg_catalog`.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// 'I': a row was inserted.
    Insert {
        /// The OID of the relation, described by an earlier [`Message::Relation`].
        relation_id: u32,
        /// The new row.
        new: Tuple,
    },
    /// 'U': a row was updated.
    Update {
        /// The OID of the relation.
        relation_id: u32,
        /// The old key (if it changed) or the whole old row (replica identity full);
        /// `None` when neither is sent.
        old: Option<OldTuple>,
        /// The new row.
        new: Tuple,
    },
    /// 'D': a row was deleted.
    Delete {
        /// The OID of the relation.
        relation_id: u32,
        /// The deleted row's key, or the whole row (replica identity full).
        old: OldTuple,
    },
    /// 'T': relations were truncated.
    Truncate {
        /// The OIDs of the relations.
        relation_ids: Vec<u32>,
        /// `TRUNCATE ... CASCADE` (option bit 1).
        cascade: bool,
        /// `TRUNCATE ... RESTART IDENTITY` (option bit 2).
        restart_identity: bool,
    },
    /// 'M': a message written with `pg_logical_emit_message`.
    Message {
        /// Written inside the transaction (flag bit 1) rather than at once.
        transactional: bool,
        /// The LSN of the message.
        lsn: u64,
        /// The message's prefix.
        prefix: String,
        /// The message's content, a slice of the input.
        content: Bytes,
    },
}

/// A relation's description ('R').
#[derive(Debug, Clone, PartialEq)]
pub struct Relation {
    /// The relation's OID.
    pub id: u32,
    /// Its schema; empty for `pg_catalog`.
    pub namespace: String,
    /// Its name, never empty.
    pub name: String,
    /// `REPLICA IDENTITY`: b'd' (default: the primary key), b'n' (nothing), b'f' (full
    /// row) or b'i' (an index).
    pub replica_identity: u8,
    /// Its columns, in order.
    pub columns: Vec<Column>,
}

/// One column of a [`Relation`].
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// Part of the replica identity key (flags bit 1).
    pub key: bool,
    /// The column's name.
    pub name: String,
    /// The OID of its type.
    pub type_oid: u32,
    /// Its type modifier (`atttypmod`, e.g. a varchar's length + 4); -1 for none.
    pub type_modifier: i32,
}

/// The old row sent with an Update or a Delete.
#[derive(Debug, Clone, PartialEq)]
pub enum OldTuple {
    /// 'K': the columns of the replica identity key only; the others are null.
    Key(Tuple),
    /// 'O': the whole old row (replica identity full).
    Full(Tuple),
}

/// A row: one [`Datum`] per column of its relation, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Tuple(pub Vec<Datum>);

/// One column value of a [`Tuple`].
#[derive(Debug, Clone, PartialEq)]
pub enum Datum {
    /// 'n': SQL NULL.
    Null,
    /// 'u': an unchanged TOASTed value, not sent.
    Unchanged,
    /// 't': the value in Postgres's text format (a slice of the input).
    Text(Bytes),
    /// 'b': the value in the type's binary format (a slice of the input).
    Binary(Bytes),
}

/// The smallest encoding of one column in a Relation message: flags, an empty name's
/// NUL, type OID, type modifier.
const COLUMN_BYTES_MIN: usize = 1 + 1 + 4 + 4;

/// Decodes one pgoutput message, the whole of `data`.
///
/// Column values and message content in the result are slices of `data`.
pub fn decode(data: &Bytes, limits: &Limits) -> Result<Message, DecodeError> {
    let mut r = Reader {
        data,
        pos: 0,
        limits,
    };
    let tag = r.u8("message tag")?;
    let message = match tag {
        b'B' => Message::Begin {
            final_lsn: r.u64("final LSN")?,
            commit_time_us: r.i64("commit time")?,
            xid: r.u32("xid")?,
        },
        b'C' => Message::Commit {
            flags: r.u8("commit flags")?,
            commit_lsn: r.u64("commit LSN")?,
            end_lsn: r.u64("end LSN")?,
            commit_time_us: r.i64("commit time")?,
        },
        b'O' => Message::Origin {
            commit_lsn: r.u64("origin commit LSN")?,
            name: r.string("origin name")?,
        },
        b'R' => Message::Relation(r.relation()?),
        b'Y' => Message::Type {
            id: r.u32("type OID")?,
            namespace: r.string("type namespace")?,
            name: r.string("type name")?,
        },
        b'I' => {
            let relation_id = r.u32("relation OID")?;
            r.expect_new_tuple_tag()?;
            Message::Insert {
                relation_id,
                new: r.tuple()?,
            }
        }
        b'U' => {
            let relation_id = r.u32("relation OID")?;
            let at = r.pos;
            let old = match r.u8("tuple tag")? {
                b'K' => Some(OldTuple::Key(r.tuple()?)),
                b'O' => Some(OldTuple::Full(r.tuple()?)),
                b'N' => None,
                tag => {
                    return Err(DecodeError::BadTupleTag {
                        at,
                        tag,
                        expected: "'K', 'O' or 'N'",
                    })
                }
            };
            if old.is_some() {
                r.expect_new_tuple_tag()?;
            }
            Message::Update {
                relation_id,
                old,
                new: r.tuple()?,
            }
        }
        b'D' => {
            let relation_id = r.u32("relation OID")?;
            let at = r.pos;
            let old = match r.u8("tuple tag")? {
                b'K' => OldTuple::Key(r.tuple()?),
                b'O' => OldTuple::Full(r.tuple()?),
                tag => {
                    return Err(DecodeError::BadTupleTag {
                        at,
                        tag,
                        expected: "'K' or 'O'",
                    })
                }
            };
            Message::Delete { relation_id, old }
        }
        b'T' => r.truncate()?,
        b'M' => {
            let flags = r.u8("message flags")?;
            let lsn = r.u64("message LSN")?;
            let prefix = r.string("message prefix")?;
            let len = r.length("message content length")?;
            Message::Message {
                transactional: flags & 1 != 0,
                lsn,
                prefix,
                content: r.bytes(len, "message content")?,
            }
        }
        tag => return Err(DecodeError::UnknownTag { tag }),
    };
    let remaining = r.remaining();
    if remaining != 0 {
        return Err(DecodeError::TrailingBytes {
            at: r.pos,
            count: remaining,
        });
    }
    debug_assert_eq!(r.pos, data.len(), "a decoded message spans its payload");
    Ok(message)
}

/// A cursor over the payload; every read checks what remains.
struct Reader<'a> {
    data: &'a Bytes,
    pos: usize,
    limits: &'a Limits,
}

impl Reader<'_> {
    fn remaining(&self) -> usize {
        debug_assert!(
            self.pos <= self.data.len(),
            "the cursor stays in the payload"
        );
        self.data.len().saturating_sub(self.pos)
    }

    /// The next `n` bytes as a slice of the input, or `Truncated`.
    fn take(&mut self, n: usize, field: &'static str) -> Result<&[u8], DecodeError> {
        let remaining = self.remaining();
        let start = self.pos;
        let slice = start
            .checked_add(n)
            .and_then(|end| self.data.get(start..end))
            .ok_or(DecodeError::Truncated {
                at: start,
                field,
                needed: n,
                remaining,
            })?;
        self.pos = start + n;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(u8::from_be_bytes(self.array(field)?))
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    fn i32(&mut self, field: &'static str) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array(field)?))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    fn i64(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array(field)?))
    }

    /// An Int32 length that must not be negative.
    fn length(&mut self, what: &'static str) -> Result<usize, DecodeError> {
        let at = self.pos;
        let value = self.i32(what)?;
        usize::try_from(value).map_err(|_| DecodeError::Negative {
            at,
            what,
            value: value.into(),
        })
    }

    /// `n` bytes as a zero-copy slice of the input.
    fn bytes(&mut self, n: usize, field: &'static str) -> Result<Bytes, DecodeError> {
        let start = self.pos;
        self.take(n, field)?;
        Ok(self.data.slice(start..start + n))
    }

    /// A NUL-terminated UTF-8 string of at most `name_bytes_max` bytes.
    fn string(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let at = self.pos;
        let max = self.limits.name_bytes_max;
        let rest = self.data.get(at..).unwrap_or_default();
        // Look no further than the limit allows: a NUL past it is an error anyway.
        let window = &rest[..rest.len().min(max.saturating_add(1))];
        let Some(len) = window.iter().position(|b| *b == 0) else {
            return Err(if rest.len() <= max {
                DecodeError::Truncated {
                    at,
                    field: what,
                    needed: rest.len() + 1,
                    remaining: rest.len(),
                }
            } else {
                DecodeError::NameTooLong { at, what, max }
            });
        };
        debug_assert!(len <= max);
        let text = std::str::from_utf8(&window[..len])
            .map_err(|_| DecodeError::NameNotUtf8 { at, what })?
            .to_owned();
        self.pos = at + len + 1;
        Ok(text)
    }

    /// A count, checked against `max` and against the bytes left (each item needs at
    /// least `item_bytes_min`), so that its vector may be allocated.
    fn check_count(
        &self,
        at: usize,
        what: &'static str,
        count: usize,
        max: usize,
        item_bytes_min: usize,
    ) -> Result<(), DecodeError> {
        if count > max {
            return Err(DecodeError::CountOverLimit {
                at,
                what,
                count,
                max,
            });
        }
        let needed = count.saturating_mul(item_bytes_min);
        let remaining = self.remaining();
        if needed > remaining {
            return Err(DecodeError::Truncated {
                at: self.pos,
                field: what,
                needed,
                remaining,
            });
        }
        Ok(())
    }

    fn expect_new_tuple_tag(&mut self) -> Result<(), DecodeError> {
        let at = self.pos;
        match self.u8("tuple tag")? {
            b'N' => Ok(()),
            tag => Err(DecodeError::BadTupleTag {
                at,
                tag,
                expected: "'N'",
            }),
        }
    }

    fn relation(&mut self) -> Result<Relation, DecodeError> {
        let id = self.u32("relation OID")?;
        let namespace = self.string("relation namespace")?;
        let name_at = self.pos;
        let name = self.string("relation name")?;
        if name.is_empty() {
            return Err(DecodeError::EmptyName {
                at: name_at,
                what: "relation name",
            });
        }
        let identity_at = self.pos;
        let replica_identity = self.u8("replica identity")?;
        if !matches!(replica_identity, b'd' | b'n' | b'f' | b'i') {
            return Err(DecodeError::BadReplicaIdentity {
                at: identity_at,
                value: replica_identity,
            });
        }
        let count_at = self.pos;
        let count = usize::from(self.u16("column count")?);
        self.check_count(
            count_at,
            "column",
            count,
            self.limits.columns_max,
            COLUMN_BYTES_MIN,
        )?;
        let mut columns = Vec::with_capacity(count);
        for _ in 0..count {
            let flags = self.u8("column flags")?;
            columns.push(Column {
                key: flags & 1 != 0,
                name: self.string("column name")?,
                type_oid: self.u32("column type OID")?,
                type_modifier: self.i32("column type modifier")?,
            });
        }
        debug_assert_eq!(columns.len(), count);
        Ok(Relation {
            id,
            namespace,
            name,
            replica_identity,
            columns,
        })
    }

    fn tuple(&mut self) -> Result<Tuple, DecodeError> {
        let count_at = self.pos;
        let count = usize::from(self.u16("tuple column count")?);
        // Each value is at least its one-byte kind.
        self.check_count(count_at, "tuple column", count, self.limits.columns_max, 1)?;
        let mut datums = Vec::with_capacity(count);
        for _ in 0..count {
            let at = self.pos;
            let datum = match self.u8("column value kind")? {
                b'n' => Datum::Null,
                b'u' => Datum::Unchanged,
                b't' => {
                    let len = self.length("text value length")?;
                    Datum::Text(self.bytes(len, "text value")?)
                }
                b'b' => {
                    let len = self.length("binary value length")?;
                    Datum::Binary(self.bytes(len, "binary value")?)
                }
                kind => return Err(DecodeError::BadDatumKind { at, kind }),
            };
            datums.push(datum);
        }
        debug_assert_eq!(datums.len(), count);
        Ok(Tuple(datums))
    }

    fn truncate(&mut self) -> Result<Message, DecodeError> {
        let count_at = self.pos;
        let count = self.length("truncated relation count")?;
        let options = self.u8("truncate options")?;
        self.check_count(
            count_at,
            "truncated relation",
            count,
            self.limits.truncate_relations_max,
            4,
        )?;
        let mut relation_ids = Vec::with_capacity(count);
        for _ in 0..count {
            relation_ids.push(self.u32("truncated relation OID")?);
        }
        Ok(Message::Truncate {
            relation_ids,
            cascade: options & 1 != 0,
            restart_identity: options & 2 != 0,
        })
    }
}
