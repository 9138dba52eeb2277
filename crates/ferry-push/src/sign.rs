//! Standard Webhooks signatures: `webhook-id`, `webhook-timestamp` (seconds) and
//! `webhook-signature`, a space-separated list of `v1,<base64 HMAC-SHA256>` over
//! `<id>.<timestamp>.<body>`, one per valid secret (two during a rotation). Secrets are
//! `whsec_` followed by the base64 of the key (made by
//! `ferry_broker::subs::generate_secret`).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ferry_broker::subs::push::SECRET_PREFIX;
use hmac::{Hmac, Mac};
use sha2::Sha256;

fn key_of(secret: &str) -> Option<Vec<u8>> {
    B64.decode(secret.strip_prefix(SECRET_PREFIX)?).ok()
}

/// A secret's key, ready to sign many messages.
#[derive(Clone)]
pub struct Signer(Hmac<Sha256>);

impl Signer {
    /// None for a secret that is not `whsec_` base64.
    pub fn new(secret: &str) -> Option<Signer> {
        Hmac::<Sha256>::new_from_slice(&key_of(secret)?)
            .ok()
            .map(Signer)
    }

    /// `v1,<signature>` of one message.
    pub fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        let mut mac = self.0.clone();
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
    }
}

/// One `v1,<signature>` for `secret`, or None for a secret that is not `whsec_` base64.
pub fn sign(secret: &str, id: &str, timestamp: u64, body: &[u8]) -> Option<String> {
    Some(Signer::new(secret)?.sign(id, timestamp, body))
}

/// The `webhook-signature` header value: one signature per signer, space-separated.
pub fn signature_header<'a>(
    signers: impl IntoIterator<Item = &'a Signer>,
    id: &str,
    timestamp: u64,
    body: &[u8],
) -> String {
    let mut out = String::new();
    for s in signers {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&s.sign(id, timestamp, body));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_like_the_standard_webhooks_reference() {
        // The example of the Standard Webhooks specification.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            sign(secret, id, 1614265330, body).unwrap(),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn rotation_signs_with_both_secrets() {
        let a = ferry_broker::subs::generate_secret();
        let b = ferry_broker::subs::generate_secret();
        assert_ne!(a, b);
        let signers = [Signer::new(&a).unwrap(), Signer::new(&b).unwrap()];
        let h = signature_header(&signers, "id", 1, b"x");
        let parts: Vec<_> = h.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], sign(&a, "id", 1, b"x").unwrap());
        assert!(sign("nope", "id", 1, b"x").is_none());
    }
}
