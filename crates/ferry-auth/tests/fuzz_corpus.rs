//! Replays the fuzz corpora of the SASL parsers (fuzz/corpus/sasl_plain/ and
//! fuzz/corpus/sasl_scram/) on stable Rust, with the fuzz targets' checks: nothing
//! panics, what PLAIN accepts is bounded, and no SCRAM exchange built from a corpus
//! message proves a password it was not given.

use ferry_auth::plain;
use ferry_auth::scram::{self, Mechanism, ScramCredential, ServerExchange};
use std::path::Path;

fn corpus(name: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(name);
    let files: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .expect("the corpus folder exists")
        .flatten()
        .map(|e| std::fs::read(e.path()).expect("a corpus file reads"))
        .collect();
    assert!(
        files.len() >= 3,
        "only {} files in {}",
        files.len(),
        dir.display()
    );
    files
}

#[test]
fn plain_corpus_is_parsed_within_bounds() {
    for bytes in corpus("sasl_plain") {
        if let Ok(c) = plain::parse(&bytes) {
            assert!(!c.user.is_empty() && c.user.len() <= 255);
            assert!(!c.password.is_empty() && c.password.len() <= 255);
        }
    }
}

#[test]
fn scram_corpus_never_panics_and_never_verifies_without_the_password() {
    let cred = ScramCredential::from_salted_password(
        Mechanism::Sha256,
        &[7u8; 32],
        b"salt".to_vec(),
        scram::ITERATIONS_MIN,
    );
    for bytes in corpus("sasl_scram") {
        let (first, fin) = match bytes.iter().position(|b| *b == 0) {
            Some(i) => (&bytes[..i], &bytes[i + 1..]),
            None => (&bytes[..], &b""[..]),
        };
        let _ = scram::parse_client_final(fin);
        if let Ok((exchange, server_first)) =
            ServerExchange::start(Mechanism::Sha256, first, |_| Some(cred.clone()), b"decoy")
        {
            assert!(server_first.starts_with(b"r="));
            assert!(exchange.finish(fin).is_err());
        }
    }
}
