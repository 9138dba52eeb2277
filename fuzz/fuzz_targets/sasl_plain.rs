#![no_main]
use libfuzzer_sys::fuzz_target;

// A SASL PLAIN message from a Kafka client's SaslAuthenticate.
fuzz_target!(|data: &[u8]| {
    if let Ok(c) = ferry_auth::plain::parse(data) {
        assert!(!c.user.is_empty() && !c.password.is_empty());
        assert!(c.user.len() <= 255 && c.password.len() <= 255);
        assert!(!c.user.contains('\0') && !c.password.contains('\0'));
    }
});
