//! TEMPORARY: replaced by the mapping from branch `pgoutput`.
pub fn to_json(type_oid: u32, text: &[u8]) -> serde_json::Value {
    let s = String::from_utf8_lossy(text).into_owned();
    match type_oid { 20 | 21 | 23 => s.parse::<i64>().map(Into::into).unwrap_or(s.into()), _ => s.into() }
}
