#![no_main]
use libfuzzer_sys::fuzz_target;

// A W3C traceparent from an HTTP request header or a record header.
fuzz_target!(|data: &[u8]| {
    if let Some(tp) = ferry_trace::TraceParent::parse(data) {
        assert!(tp.trace_id != 0 && tp.span_id != 0);
        assert_eq!(
            ferry_trace::TraceParent::parse(tp.to_string().as_bytes()),
            Some(tp)
        );
    }
});
