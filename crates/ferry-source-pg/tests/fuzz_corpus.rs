//! Replays the fuzz corpus of the pgoutput decoder (fuzz/corpus/pgoutput_decode/) on
//! stable Rust, through the fuzz target's own body: nothing panics, what decodes
//! respects the limits and holds slices of its input, and every value read as JSON has
//! its type's shape. The seed files are written by the unit test
//! `write_the_fuzz_seed_corpus_when_asked` (with `FERRY_WRITE_FUZZ_CORPUS=1`).

use bytes::Bytes;
use ferry_source_pg::fuzzing;
use ferry_source_pg::pgoutput::{self, Limits, Message};
use std::path::Path;

fn corpus(name: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(name);
    let files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .expect("the corpus folder exists")
        .flatten()
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(e.path()).expect("a corpus file reads"))
        })
        .collect();
    assert!(
        files.len() >= 12,
        "only {} files in {}",
        files.len(),
        dir.display()
    );
    files
}

#[test]
fn pgoutput_corpus_decodes_within_limits() {
    for (_, bytes) in corpus("pgoutput_decode") {
        fuzzing::pgoutput_decode(&bytes);
    }
}

#[test]
fn every_message_kind_has_a_valid_seed() {
    let mut kinds = std::collections::BTreeSet::new();
    for (_, bytes) in corpus("pgoutput_decode") {
        if let Ok(message) = pgoutput::decode(&Bytes::from(bytes), &Limits::default()) {
            kinds.insert(match message {
                Message::Begin { .. } => "begin",
                Message::Commit { .. } => "commit",
                Message::Origin { .. } => "origin",
                Message::Relation(_) => "relation",
                Message::Type { .. } => "type",
                Message::Insert { .. } => "insert",
                Message::Update { .. } => "update",
                Message::Delete { .. } => "delete",
                Message::Truncate { .. } => "truncate",
                Message::Message { .. } => "message",
            });
        }
    }
    assert_eq!(kinds.len(), 10, "{kinds:?}");
}
