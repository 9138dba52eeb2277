//! Replays the Kafka request fuzz corpus (fuzz/corpus/kafka_request/) on stable Rust,
//! under the allocator of the `ferry` binary.

use bytes::Bytes;
use std::path::Path;

// The binary's allocator module, compiled in here (only `FerryAlloc` is used).
#[allow(dead_code)]
#[path = "../src/alloc.rs"]
mod alloc;

// As in `ferry serve`: frames claiming billions of elements reserve address space only.
#[global_allocator]
static ALLOCATOR: alloc::FerryAlloc = alloc::FerryAlloc;

#[test]
fn the_kafka_request_corpus_replays_without_panics() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/kafka_request");
    let mut n = 0;
    for e in std::fs::read_dir(dir).expect("corpus folder").flatten() {
        // A file may vanish while a fuzzer is shrinking the corpus.
        let Ok(bytes) = std::fs::read(e.path()) else {
            continue;
        };
        let _ = ferry_kafka::frame::decode_request(Bytes::from(bytes));
        n += 1;
    }
    assert!(n >= 40, "replayed {n} inputs");
    println!("replayed {n} inputs");
}
