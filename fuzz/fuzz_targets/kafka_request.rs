#![no_main]
//! Kafka request frames from the network: decoding must never panic or abort, whatever
//! the bytes. The binary's allocator is installed here too, as in `ferry serve`.
use libfuzzer_sys::fuzz_target;

// The `ferry` binary's allocator module, compiled in here (only `FerryAlloc` is used).
#[allow(dead_code)]
#[path = "../../crates/ferry/src/alloc.rs"]
mod alloc;

#[global_allocator]
static ALLOCATOR: alloc::FerryAlloc = alloc::FerryAlloc;

fuzz_target!(|data: &[u8]| {
    let _ = ferry_kafka::frame::decode_request(bytes::Bytes::copy_from_slice(data));
});
