#![no_main]
use libfuzzer_sys::fuzz_target;

// One pgoutput message (the payload of an XLogData message from Postgres's logical
// replication); its text values and the input itself also go through values::to_json.
fuzz_target!(|data: &[u8]| ferry_source_pg::fuzzing::pgoutput_decode(data));
