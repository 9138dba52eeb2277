//! TEMPORARY: replaced by the decoder from branch `pgoutput`.
use bytes::Bytes;
pub struct Limits;
impl Default for Limits { fn default() -> Self { Limits } }
#[derive(Debug)] pub struct DecodeError;
impl std::fmt::Display for DecodeError { fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { write!(f, "x") } }
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Begin { final_lsn: u64, commit_time_us: i64, xid: u32 },
    Commit { flags: u8, commit_lsn: u64, end_lsn: u64, commit_time_us: i64 },
    Origin { commit_lsn: u64, name: String },
    Relation(Relation),
    Type { id: u32, namespace: String, name: String },
    Insert { relation_id: u32, new: Tuple },
    Update { relation_id: u32, old: Option<OldTuple>, new: Tuple },
    Delete { relation_id: u32, old: OldTuple },
    Truncate { relation_ids: Vec<u32>, cascade: bool, restart_identity: bool },
    Message { transactional: bool, lsn: u64, prefix: String, content: Bytes },
}
#[derive(Debug, Clone, PartialEq)]
pub struct Relation { pub id: u32, pub namespace: String, pub name: String, pub replica_identity: u8, pub columns: Vec<Column> }
#[derive(Debug, Clone, PartialEq)]
pub struct Column { pub key: bool, pub name: String, pub type_oid: u32, pub type_modifier: i32 }
#[derive(Debug, Clone, PartialEq)]
pub enum OldTuple { Key(Tuple), Full(Tuple) }
#[derive(Debug, Clone, PartialEq)]
pub struct Tuple(pub Vec<Datum>);
#[derive(Debug, Clone, PartialEq)]
pub enum Datum { Null, Unchanged, Text(Bytes), Binary(Bytes) }
pub fn decode(_data: &Bytes, _limits: &Limits) -> Result<Message, DecodeError> { Err(DecodeError) }
