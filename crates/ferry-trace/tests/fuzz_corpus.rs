//! Replays the fuzz corpus of the traceparent parser (fuzz/corpus/traceparent/) on
//! stable Rust: nothing panics, and what parses prints back to the same context.

use ferry_trace::TraceParent;
use std::path::Path;

#[test]
fn traceparent_corpus_never_panics_and_round_trips() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/traceparent");
    let mut parsed = Vec::new();
    for e in std::fs::read_dir(&dir)
        .expect("the corpus folder exists")
        .flatten()
    {
        let bytes = std::fs::read(e.path()).expect("a corpus file reads");
        if let Some(tp) = TraceParent::parse(&bytes) {
            assert!(tp.trace_id != 0 && tp.span_id != 0);
            assert_eq!(TraceParent::parse(tp.to_string().as_bytes()), Some(tp));
            parsed.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    // Of the seeds, these parse and the others (version ff, a zero id, a sign, too
    // short, too long) must not.
    parsed.sort();
    for seed in ["future-version-with-more", "upper-case", "valid"] {
        assert!(
            parsed.iter().any(|p| p == seed),
            "{seed} did not parse: {parsed:?}"
        );
    }
    for seed in ["version-ff", "zero-trace", "plus-sign", "short", "long"] {
        assert!(!parsed.iter().any(|p| p == seed), "{seed} parsed");
    }
}
