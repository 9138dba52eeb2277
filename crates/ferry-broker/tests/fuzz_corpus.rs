//! Replays the subscription journal fuzz corpus (fuzz/corpus/subscription_journal/) on
//! stable Rust, plus seeds built here, through the body the fuzz target runs.

use ferry_broker::subs::codec::{encode_delay, encode_events, fuzz, DelayEntry};
use ferry_broker::subs::state::Event;
use std::path::Path;

#[test]
fn subscription_journal_corpus_and_seeds_never_panic() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/subscription_journal");
    let mut inputs = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            inputs.push(std::fs::read(e.path()).unwrap());
        }
    }
    let mut seed = Vec::new();
    encode_events(
        &[
            Event::Deliver {
                partition: 0,
                offset: 5,
                attempt: 1,
                key: 9,
            },
            Event::Ack {
                partition: 0,
                offset: 5,
            },
            Event::Skip {
                partition: 1,
                lo: 0,
                hi: 10,
            },
            Event::Delay {
                partition: 0,
                offset: 6,
                attempt: 2,
                due: 1_800_000_000_000,
                key: 0,
            },
            Event::Seek {
                partition: 0,
                to: 3,
            },
            Event::BucketsLoaded { upto: 30_000_000 },
            Event::Redriven {
                partition: 0,
                upto: 1,
            },
            Event::Truncate {
                partition: 0,
                end: 4,
            },
        ],
        &mut seed,
    );
    inputs.push(seed.clone());
    let mut delays = Vec::new();
    encode_delay(
        &DelayEntry {
            due: 1,
            offset: 2,
            partition: 3,
            attempt: 4,
            gen: 5,
        },
        &mut delays,
    );
    inputs.push(delays);
    for cut in 0..seed.len() {
        inputs.push(seed[..cut].to_vec());
    }
    for input in &inputs {
        fuzz(input);
    }
    println!("replayed {} inputs", inputs.len());
}
