//! Replays the Kafka request fuzz corpus (fuzz/corpus/kafka_request/) on stable Rust.

use bytes::Bytes;
use std::path::Path;

#[test]
fn the_kafka_request_corpus_replays_without_panics() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/kafka_request");
    let mut n = 0;
    for e in std::fs::read_dir(dir).expect("corpus folder").flatten() {
        let _ = ferry_kafka::frame::decode_request(Bytes::from(std::fs::read(e.path()).unwrap()));
        n += 1;
    }
    assert!(n >= 40, "replayed {n} inputs");
    println!("replayed {n} inputs");
}
