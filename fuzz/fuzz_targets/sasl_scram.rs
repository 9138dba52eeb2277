#![no_main]
use libfuzzer_sys::fuzz_target;
use ferry_auth::scram::{self, Mechanism, ScramCredential, ServerExchange};

// SCRAM messages from a Kafka client: the first message (split at the first NUL: what
// comes after is the client's final message), run through a whole server exchange.
fuzz_target!(|data: &[u8]| {
    let (first, fin) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let _ = scram::parse_client_final(fin);
    let cred = ScramCredential::from_salted_password(
        Mechanism::Sha256,
        &[7u8; 32],
        b"salt".to_vec(),
        scram::ITERATIONS_MIN,
    );
    match ServerExchange::start(Mechanism::Sha256, first, |_| Some(cred.clone()), b"decoy") {
        Ok((exchange, server_first)) => {
            let parsed = scram::parse_client_first(first).expect("started, so it parsed");
            assert!(!parsed.user.is_empty());
            assert!(server_first.starts_with(b"r="));
            // A proof made without the password never verifies.
            assert!(exchange.finish(fin).is_err());
        }
        Err(_) => {}
    }
});
