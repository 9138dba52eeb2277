//! A pgoutput encoder for tests, written from the format in the module doc of
//! `pgoutput`, and sample messages of every kind.

use super::*;

/// Encodes a message as pgoutput protocol version 1 would send it.
pub(crate) fn encode(message: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    match message {
        Message::Begin {
            final_lsn,
            commit_time_us,
            xid,
        } => {
            out.push(b'B');
            out.extend(final_lsn.to_be_bytes());
            out.extend(commit_time_us.to_be_bytes());
            out.extend(xid.to_be_bytes());
        }
        Message::Commit {
            flags,
            commit_lsn,
            end_lsn,
            commit_time_us,
        } => {
            out.push(b'C');
            out.push(*flags);
            out.extend(commit_lsn.to_be_bytes());
            out.extend(end_lsn.to_be_bytes());
            out.extend(commit_time_us.to_be_bytes());
        }
        Message::Origin { commit_lsn, name } => {
            out.push(b'O');
            out.extend(commit_lsn.to_be_bytes());
            put_string(&mut out, name);
        }
        Message::Relation(relation) => {
            out.push(b'R');
            out.extend(relation.id.to_be_bytes());
            put_string(&mut out, &relation.namespace);
            put_string(&mut out, &relation.name);
            out.push(relation.replica_identity);
            out.extend(u16::try_from(relation.columns.len()).unwrap().to_be_bytes());
            for column in &relation.columns {
                out.push(u8::from(column.key));
                put_string(&mut out, &column.name);
                out.extend(column.type_oid.to_be_bytes());
                out.extend(column.type_modifier.to_be_bytes());
            }
        }
        Message::Type {
            id,
            namespace,
            name,
        } => {
            out.push(b'Y');
            out.extend(id.to_be_bytes());
            put_string(&mut out, namespace);
            put_string(&mut out, name);
        }
        Message::Insert { relation_id, new } => {
            out.push(b'I');
            out.extend(relation_id.to_be_bytes());
            out.push(b'N');
            put_tuple(&mut out, new);
        }
        Message::Update {
            relation_id,
            old,
            new,
        } => {
            out.push(b'U');
            out.extend(relation_id.to_be_bytes());
            if let Some(old) = old {
                put_old_tuple(&mut out, old);
            }
            out.push(b'N');
            put_tuple(&mut out, new);
        }
        Message::Delete { relation_id, old } => {
            out.push(b'D');
            out.extend(relation_id.to_be_bytes());
            put_old_tuple(&mut out, old);
        }
        Message::Truncate {
            relation_ids,
            cascade,
            restart_identity,
        } => {
            out.push(b'T');
            out.extend(i32::try_from(relation_ids.len()).unwrap().to_be_bytes());
            out.push(u8::from(*cascade) | u8::from(*restart_identity) << 1);
            for id in relation_ids {
                out.extend(id.to_be_bytes());
            }
        }
        Message::Message {
            transactional,
            lsn,
            prefix,
            content,
        } => {
            out.push(b'M');
            out.push(u8::from(*transactional));
            out.extend(lsn.to_be_bytes());
            put_string(&mut out, prefix);
            out.extend(i32::try_from(content.len()).unwrap().to_be_bytes());
            out.extend_from_slice(content);
        }
    }
    out
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    assert!(!s.contains('\0'), "a pgoutput string has no NUL inside");
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

fn put_old_tuple(out: &mut Vec<u8>, old: &OldTuple) {
    match old {
        OldTuple::Key(t) => {
            out.push(b'K');
            put_tuple(out, t);
        }
        OldTuple::Full(t) => {
            out.push(b'O');
            put_tuple(out, t);
        }
    }
}

fn put_tuple(out: &mut Vec<u8>, tuple: &Tuple) {
    out.extend(u16::try_from(tuple.0.len()).unwrap().to_be_bytes());
    for datum in &tuple.0 {
        match datum {
            Datum::Null => out.push(b'n'),
            Datum::Unchanged => out.push(b'u'),
            Datum::Text(b) | Datum::Binary(b) => {
                out.push(if matches!(datum, Datum::Text(_)) {
                    b't'
                } else {
                    b'b'
                });
                out.extend(i32::try_from(b.len()).unwrap().to_be_bytes());
                out.extend_from_slice(b);
            }
        }
    }
}

pub(super) fn text(s: &str) -> Datum {
    Datum::Text(Bytes::copy_from_slice(s.as_bytes()))
}

/// One message of every kind (and every variant of the optional parts), as a real
/// session against a table `public.orders (id int8 primary key, note text, total
/// numeric)` would send them.
pub(super) fn samples() -> Vec<(&'static str, Message)> {
    let row = Tuple(vec![text("42"), text("first order"), text("19.90")]);
    vec![
        (
            "begin",
            Message::Begin {
                final_lsn: 0x0000_0001_6B37_4D48,
                commit_time_us: 818_235_000_123_456,
                xid: 771,
            },
        ),
        (
            "commit",
            Message::Commit {
                flags: 0,
                commit_lsn: 0x0000_0001_6B37_4D48,
                end_lsn: 0x0000_0001_6B37_4D78,
                commit_time_us: 818_235_000_123_456,
            },
        ),
        (
            "origin",
            Message::Origin {
                commit_lsn: 0x0000_0000_0300_0128,
                name: "pg_16390".into(),
            },
        ),
        (
            "relation",
            Message::Relation(Relation {
                id: 16_385,
                namespace: "public".into(),
                name: "orders".into(),
                replica_identity: b'd',
                columns: vec![
                    Column {
                        key: true,
                        name: "id".into(),
                        type_oid: 20,
                        type_modifier: -1,
                    },
                    Column {
                        key: false,
                        name: "note".into(),
                        type_oid: 25,
                        type_modifier: -1,
                    },
                    Column {
                        key: false,
                        name: "total".into(),
                        type_oid: 1700,
                        type_modifier: 655_366,
                    },
                ],
            }),
        ),
        (
            "type",
            Message::Type {
                id: 16_400,
                namespace: "public".into(),
                name: "mood".into(),
            },
        ),
        (
            "insert",
            Message::Insert {
                relation_id: 16_385,
                new: row.clone(),
            },
        ),
        (
            "update_without_old",
            Message::Update {
                relation_id: 16_385,
                old: None,
                new: Tuple(vec![text("42"), Datum::Unchanged, Datum::Null]),
            },
        ),
        (
            "update_with_key",
            Message::Update {
                relation_id: 16_385,
                old: Some(OldTuple::Key(Tuple(vec![
                    text("41"),
                    Datum::Null,
                    Datum::Null,
                ]))),
                new: row.clone(),
            },
        ),
        (
            "update_with_full_old_row",
            Message::Update {
                relation_id: 16_385,
                old: Some(OldTuple::Full(row.clone())),
                new: Tuple(vec![
                    text("42"),
                    Datum::Binary(Bytes::from_static(&[0, 1, 2, 0xff])),
                    text(""),
                ]),
            },
        ),
        (
            "delete_key",
            Message::Delete {
                relation_id: 16_385,
                old: OldTuple::Key(Tuple(vec![text("42"), Datum::Null, Datum::Null])),
            },
        ),
        (
            "delete_full",
            Message::Delete {
                relation_id: 16_385,
                old: OldTuple::Full(row),
            },
        ),
        (
            "truncate",
            Message::Truncate {
                relation_ids: vec![16_385, 16_390],
                cascade: true,
                restart_identity: true,
            },
        ),
        (
            "message",
            Message::Message {
                transactional: true,
                lsn: 0x0000_0001_6B37_4E00,
                prefix: "ferry.outbox".into(),
                content: Bytes::from_static(b"{\"id\":1}"),
            },
        ),
    ]
}
