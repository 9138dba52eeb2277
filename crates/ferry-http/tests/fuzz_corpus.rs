//! Replays the fuzz corpus of the consumer-assignment decoder
//! (fuzz/corpus/group_assignment/) on stable Rust, and random bytes beside it: nothing
//! panics, nothing beyond the limits is returned, and what is written is read back.

use ferry_http::groups::{decode_assignment, ASSIGNMENT_TOPICS_MAX};
use proptest::prelude::*;
use std::path::Path;

fn check(bytes: &[u8]) {
    if let Some(topics) = decode_assignment(bytes) {
        assert!(topics.len() <= ASSIGNMENT_TOPICS_MAX);
    }
}

#[test]
fn group_assignment_corpus_never_panics() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/group_assignment");
    let mut seen = 0;
    for e in std::fs::read_dir(&dir)
        .expect("the corpus folder exists")
        .flatten()
    {
        check(&std::fs::read(e.path()).expect("a corpus file reads"));
        seen += 1;
    }
    assert!(seen >= 8, "only {seen} corpus files in {}", dir.display());
}

/// An assignment as a Kafka client writes it.
fn encode(version: i16, topics: &[(String, Vec<u32>)]) -> Vec<u8> {
    let mut b = version.to_be_bytes().to_vec();
    b.extend((topics.len() as i32).to_be_bytes());
    for (topic, partitions) in topics {
        b.extend((topic.len() as i16).to_be_bytes());
        b.extend(topic.as_bytes());
        b.extend((partitions.len() as i32).to_be_bytes());
        for p in partitions {
            b.extend((*p as i32).to_be_bytes());
        }
    }
    b.extend((-1i32).to_be_bytes());
    b
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        check(&bytes);
    }

    #[test]
    fn written_assignments_read_back(
        version in 0i16..4,
        topics in proptest::collection::vec(
            ("[a-z.-]{1,20}", proptest::collection::vec(0u32..1000, 0..8)),
            0..6,
        ),
    ) {
        let got = decode_assignment(&encode(version, &topics)).expect("a well-formed assignment");
        let got: Vec<(String, Vec<u32>)> =
            got.into_iter().map(|t| (t.topic, t.partitions)).collect();
        prop_assert_eq!(got, topics);
    }
}
