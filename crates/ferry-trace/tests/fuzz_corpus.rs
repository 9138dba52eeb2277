//! Replays the fuzz corpus of the traceparent parser (fuzz/corpus/traceparent/) on
//! stable Rust: nothing panics, and what parses prints back to the same context. Seeds
//! written here check what must parse and what must not.

use ferry_trace::TraceParent;
use std::path::Path;

fn check(bytes: &[u8]) -> bool {
    match TraceParent::parse(bytes) {
        Some(tp) => {
            assert!(tp.trace_id != 0 && tp.span_id != 0);
            assert_eq!(TraceParent::parse(tp.to_string().as_bytes()), Some(tp));
            true
        }
        None => false,
    }
}

#[test]
fn traceparent_corpus_never_panics_and_round_trips() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/traceparent");
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

#[test]
fn seeds_parse_or_not_as_w3c_says() {
    let tp = "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    assert!(check(format!("00-{tp}").as_bytes()));
    assert!(check(format!("00-{tp}").to_uppercase().as_bytes()));
    assert!(check(format!("01-{tp}-what-else").as_bytes()));
    for bad in [
        format!("ff-{tp}"),
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01".to_string(),
        "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string(),
        "00-4bf9".to_string(),
        format!("00-{}", "a".repeat(600)),
        format!("00-{tp}-extra"),
    ] {
        assert!(!check(bad.as_bytes()), "{bad} parsed");
    }
}
