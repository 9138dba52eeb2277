//! Trace context: the `traceparent` header of a request (W3C Trace Context).

use crate::cloudevents::header_text;
use rand::Rng;
use std::fmt::Write as _;

thread_local! {
    /// Span ids need to be unique, not secret: a fast generator seeded once per thread.
    static SPAN_RNG: std::cell::RefCell<rand::rngs::SmallRng> =
        std::cell::RefCell::new(rand::SeedableRng::from_entropy());
}

/// The record's `traceparent` header when it has a valid one, else a new trace.
pub(crate) fn traceparent(r: &ferry_log::Record, id: &str) -> String {
    if let Some(tp) = header_text(r, "traceparent") {
        let parts: Vec<&str> = tp.split('-').collect();
        if parts.len() == 4
            && parts[0].len() == 2
            && parts[1].len() == 32
            && parts[2].len() == 16
            && parts[3].len() == 2
            && tp.bytes().all(|c| c == b'-' || c.is_ascii_hexdigit())
        {
            return tp.to_ascii_lowercase();
        }
    }
    // One trace per record, the same on every attempt; a new span per attempt.
    let mut trace: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    for b in id.as_bytes() {
        trace ^= u128::from(*b);
        trace = trace.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
    }
    let span: u64 = SPAN_RNG.with(|r| r.borrow_mut().gen::<u64>()).max(1);
    let mut tp = String::with_capacity(55);
    let _ = write!(tp, "00-{:032x}-{span:016x}-01", trace.max(1));
    tp
}
