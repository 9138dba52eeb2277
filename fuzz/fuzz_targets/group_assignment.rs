#![no_main]
use libfuzzer_sys::fuzz_target;

// A consumer's assignment as a Kafka client sent it in SyncGroup, read for GET /v1/groups.
fuzz_target!(|data: &[u8]| {
    if let Some(topics) = ferry_http::groups::decode_assignment(data) {
        assert!(topics.len() <= ferry_http::groups::ASSIGNMENT_TOPICS_MAX);
    }
});
