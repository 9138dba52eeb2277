//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677), the server's side, on `ring`.
//!
//! A user's credential keeps what the server needs and no more: the salt, the
//! iteration count, `StoredKey` and `ServerKey`. Neither lets anyone log in; a leaked
//! `auth.json` still costs an attacker a PBKDF2 search per guess.
//!
//! The exchange is two round trips: the client's first message (user and nonce) gets the
//! salt and iterations; the client's final message carries its proof, which the server
//! checks against `StoredKey` in constant time, answering its own signature so the
//! client knows the server had the credential. Every message is read from the network:
//! lengths are bounded and nothing in them is trusted before it is checked.
//!
//! An unknown user is answered like a known one, with a salt derived from the name and a
//! server secret, and fails at the proof: the answers do not tell who exists.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ring::{digest, hmac, pbkdf2, rand::SecureRandom};
use serde::{Deserialize, Serialize};
use std::num::NonZeroU32;

/// Longest SCRAM message read from a client.
pub const MESSAGE_BYTES_MAX: usize = 4096;
/// Iterations for credentials made from a password by Ferry.
pub const ITERATIONS_DEFAULT: u32 = 8192;
/// Bounds on iterations, as Kafka sets them for AlterUserScramCredentials.
pub const ITERATIONS_MIN: u32 = 4096;
pub const ITERATIONS_MAX: u32 = 16384;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Mechanism {
    #[serde(rename = "SCRAM-SHA-256")]
    Sha256,
    #[serde(rename = "SCRAM-SHA-512")]
    Sha512,
}

impl Mechanism {
    pub const ALL: [Mechanism; 2] = [Mechanism::Sha256, Mechanism::Sha512];

    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Sha256 => "SCRAM-SHA-256",
            Mechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Mechanism::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Kafka's code in the SCRAM credential APIs.
    pub fn kafka_code(self) -> i8 {
        match self {
            Mechanism::Sha256 => 1,
            Mechanism::Sha512 => 2,
        }
    }

    pub fn from_kafka_code(code: i8) -> Option<Self> {
        Mechanism::ALL.into_iter().find(|m| m.kafka_code() == code)
    }

    fn hmac(self) -> hmac::Algorithm {
        match self {
            Mechanism::Sha256 => hmac::HMAC_SHA256,
            Mechanism::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            Mechanism::Sha256 => &digest::SHA256,
            Mechanism::Sha512 => &digest::SHA512,
        }
    }

    fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            Mechanism::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            Mechanism::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }

    /// Bytes of the hash's output.
    pub fn output_len(self) -> usize {
        self.digest().output_len()
    }
}

/// What the server keeps of one user's password for one mechanism.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramCredential {
    #[serde(with = "b64")]
    pub salt: Vec<u8>,
    pub iterations: u32,
    #[serde(with = "b64")]
    pub stored_key: Vec<u8>,
    #[serde(with = "b64")]
    pub server_key: Vec<u8>,
}

impl std::fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramCredential")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

mod b64 {
    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        B64.decode(s).map_err(serde::de::Error::custom)
    }
}

fn hmac_sign(m: Mechanism, key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(m.hmac(), key), data)
        .as_ref()
        .to_vec()
}

/// `Hi(password, salt, i)`: PBKDF2 with the mechanism's HMAC.
pub fn salted_password(m: Mechanism, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
    let mut out = vec![0u8; m.output_len()];
    let i = NonZeroU32::new(iterations.max(1)).unwrap_or(NonZeroU32::MIN);
    pbkdf2::derive(m.pbkdf2(), i, salt, password, &mut out);
    out
}

impl ScramCredential {
    /// The credential for `password` with a fresh random salt.
    pub fn from_password(m: Mechanism, password: &str, iterations: u32) -> Self {
        let mut salt = vec![0u8; 32];
        fill_random(&mut salt);
        let salted = salted_password(m, password.as_bytes(), &salt, iterations);
        Self::from_salted_password(m, &salted, salt, iterations)
    }

    /// The credential from `Hi(password, salt, i)`, as Kafka's AlterUserScramCredentials
    /// sends it.
    pub fn from_salted_password(
        m: Mechanism,
        salted: &[u8],
        salt: Vec<u8>,
        iterations: u32,
    ) -> Self {
        let client_key = hmac_sign(m, salted, b"Client Key");
        let stored_key = digest::digest(m.digest(), &client_key).as_ref().to_vec();
        let server_key = hmac_sign(m, salted, b"Server Key");
        ScramCredential {
            salt,
            iterations,
            stored_key,
            server_key,
        }
    }

    /// Whether `password` is the one this credential was made from (PBKDF2 once, then a
    /// constant-time comparison). Used for PLAIN and HTTP Basic.
    pub fn verify_password(&self, m: Mechanism, password: &str) -> bool {
        let salted = salted_password(m, password.as_bytes(), &self.salt, self.iterations);
        let client_key = hmac_sign(m, &salted, b"Client Key");
        let stored = digest::digest(m.digest(), &client_key);
        crate::store::same_secret(stored.as_ref(), &self.stored_key)
    }

    /// Whether the credential is whole for `m` (keys of the hash's length, iterations in
    /// range): checked when read from the disk or from a client.
    pub fn check(&self, m: Mechanism) -> Result<(), String> {
        if self.stored_key.len() != m.output_len() || self.server_key.len() != m.output_len() {
            return Err(format!("a {} key has {} bytes", m.name(), m.output_len()));
        }
        if !(ITERATIONS_MIN..=ITERATIONS_MAX).contains(&self.iterations) {
            return Err(format!(
                "iterations must be between {ITERATIONS_MIN} and {ITERATIONS_MAX}, got {}",
                self.iterations
            ));
        }
        if self.salt.is_empty() || self.salt.len() > 1024 {
            return Err("a salt has 1 to 1024 bytes".into());
        }
        Ok(())
    }
}

/// Fills `buf` from the system's secure random source.
pub fn fill_random(buf: &mut [u8]) {
    // The system generator fails only if the OS has no entropy source at all; then no
    // secret Ferry makes can be trusted, so it stops rather than go on.
    if ring::rand::SystemRandom::new().fill(buf).is_err() {
        panic!("the system's random number generator failed");
    }
}

/// Why an exchange failed: sent to the client as SCRAM's `e=` value where there is one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(String),
    #[error("channel binding is not supported")]
    ChannelBinding,
    #[error("SCRAM extensions (delegation tokens) are not supported")]
    Extensions,
    #[error("invalid credentials")]
    InvalidProof,
}

impl ScramError {
    /// The RFC 5802 `server-error-value`.
    pub fn error_value(&self) -> &'static str {
        match self {
            ScramError::Malformed(_) => "invalid-encoding",
            ScramError::ChannelBinding => "channel-bindings-dont-match",
            ScramError::Extensions => "extensions-not-supported",
            ScramError::InvalidProof => "invalid-proof",
        }
    }
}

fn malformed(what: impl Into<String>) -> ScramError {
    ScramError::Malformed(what.into())
}

/// Decodes a `saslname` (`=2C` for `,`, `=3D` for `=`).
fn saslname(s: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(['=', ',']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.starts_with("=2C") {
            out.push(',');
        } else if tail.starts_with("=3D") {
            out.push('=');
        } else {
            return Err(malformed("a user name has a bad '=' escape or a ','"));
        }
        rest = &tail[3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A client's first message, read.
#[derive(Debug, PartialEq, Eq)]
pub struct ClientFirst {
    pub user: String,
    pub nonce: String,
    /// `client-first-message-bare`, part of what both proofs sign.
    pub bare: String,
    /// The GS2 header, which the client's final message must repeat (base64).
    pub gs2_header: String,
}

fn text(message: &[u8]) -> Result<&str, ScramError> {
    if message.len() > MESSAGE_BYTES_MAX {
        return Err(malformed(format!(
            "a message has at most {MESSAGE_BYTES_MAX} bytes"
        )));
    }
    std::str::from_utf8(message).map_err(|_| malformed("not UTF-8"))
}

fn printable_nonce(n: &str) -> bool {
    !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// Reads `gs2-header client-first-message-bare`.
pub fn parse_client_first(message: &[u8]) -> Result<ClientFirst, ScramError> {
    let s = text(message)?;
    let (flag, rest) = s
        .split_once(',')
        .ok_or_else(|| malformed("no GS2 header"))?;
    match flag {
        "n" | "y" => {}
        f if f.starts_with("p=") => return Err(ScramError::ChannelBinding),
        _ => return Err(malformed("the GS2 flag must be n, y or p=")),
    }
    let (authzid, bare) = rest
        .split_once(',')
        .ok_or_else(|| malformed("no authorization field"))?;
    let gs2_header = &s[..flag.len() + 1 + authzid.len() + 1];
    let mut fields = bare.split(',');
    let user = match fields.next() {
        Some(f) if f.starts_with("m=") => return Err(ScramError::Extensions),
        Some(f) => f
            .strip_prefix("n=")
            .ok_or_else(|| malformed("the first field must be n=<user>"))?,
        None => return Err(malformed("no user")),
    };
    let user = saslname(user)?;
    if user.is_empty() {
        return Err(malformed("an empty user name"));
    }
    if !authzid.is_empty() {
        let a = authzid
            .strip_prefix("a=")
            .ok_or_else(|| malformed("the authorization field must be empty or a=<user>"))?;
        if saslname(a)? != user {
            return Err(malformed(
                "the authorization id must be the user's own name",
            ));
        }
    }
    let nonce = fields
        .next()
        .and_then(|f| f.strip_prefix("r="))
        .ok_or_else(|| malformed("the second field must be r=<nonce>"))?;
    if !printable_nonce(nonce) {
        return Err(malformed("a nonce is printable ASCII without ','"));
    }
    if fields.next().is_some() {
        // Kafka's delegation tokens ride here as `tokenauth=true`.
        return Err(ScramError::Extensions);
    }
    Ok(ClientFirst {
        user,
        nonce: nonce.to_string(),
        bare: bare.to_string(),
        gs2_header: gs2_header.to_string(),
    })
}

/// A client's final message, read.
#[derive(Debug, PartialEq, Eq)]
pub struct ClientFinal {
    /// The `c=` value, decoded.
    pub channel_binding: Vec<u8>,
    pub nonce: String,
    pub proof: Vec<u8>,
    /// The message without its proof, part of what both proofs sign.
    pub without_proof: String,
}

/// Reads `c=...,r=...[,extensions],p=...`.
pub fn parse_client_final(message: &[u8]) -> Result<ClientFinal, ScramError> {
    let s = text(message)?;
    let (without_proof, proof) = s
        .rsplit_once(",p=")
        .ok_or_else(|| malformed("no proof (p=)"))?;
    let mut fields = without_proof.split(',');
    let cb = fields
        .next()
        .and_then(|f| f.strip_prefix("c="))
        .ok_or_else(|| malformed("the first field must be c=<channel binding>"))?;
    let nonce = fields
        .next()
        .and_then(|f| f.strip_prefix("r="))
        .ok_or_else(|| malformed("the second field must be r=<nonce>"))?;
    if fields.next().is_some() {
        return Err(ScramError::Extensions);
    }
    let channel_binding = B64
        .decode(cb)
        .map_err(|_| malformed("the channel binding is not base64"))?;
    let proof = B64
        .decode(proof)
        .map_err(|_| malformed("the proof is not base64"))?;
    Ok(ClientFinal {
        channel_binding,
        nonce: nonce.to_string(),
        proof,
        without_proof: without_proof.to_string(),
    })
}

/// The server's half of one exchange, between the client's first and final messages.
pub struct ServerExchange {
    mechanism: Mechanism,
    user: String,
    /// `None` for an unknown user: the exchange goes on and fails at the proof.
    credential: Option<ScramCredential>,
    nonce: String,
    /// The client's part of `nonce`: librdkafka before 2.6.1 repeats it in front of
    /// the whole nonce in its final message (see [`ServerExchange::finish`]).
    client_nonce: String,
    gs2_header: String,
    /// `client-first-message-bare "," server-first-message`.
    signed_so_far: String,
}

impl std::fmt::Debug for ServerExchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerExchange")
            .field("mechanism", &self.mechanism)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl ServerExchange {
    /// Answers a client's first message. `credential` looks the user up; `decoy_key`
    /// derives the salt shown for unknown users (a secret of the server, stable across
    /// attempts so that two tries for one name see one salt).
    pub fn start(
        mechanism: Mechanism,
        client_first: &[u8],
        credential: impl FnOnce(&str) -> Option<ScramCredential>,
        decoy_key: &[u8],
    ) -> Result<(ServerExchange, Vec<u8>), ScramError> {
        let first = parse_client_first(client_first)?;
        let credential = credential(&first.user).filter(|c| c.check(mechanism).is_ok());
        let (salt, iterations) = match &credential {
            Some(c) => (c.salt.clone(), c.iterations),
            None => {
                let mut salt = hmac_sign(Mechanism::Sha256, decoy_key, first.user.as_bytes());
                salt.truncate(32);
                (salt, ITERATIONS_DEFAULT)
            }
        };
        let mut server_nonce = [0u8; 24];
        fill_random(&mut server_nonce);
        let nonce = format!("{}{}", first.nonce, B64.encode(server_nonce));
        let client_nonce = first.nonce;
        let server_first = format!("r={nonce},s={},i={iterations}", B64.encode(&salt));
        let exchange = ServerExchange {
            mechanism,
            user: first.user,
            credential,
            nonce,
            client_nonce,
            gs2_header: first.gs2_header,
            signed_so_far: format!("{},{server_first}", first.bare),
        };
        Ok((exchange, server_first.into_bytes()))
    }

    /// The user the client claims to be (not yet proven).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Checks the client's final message; on success, the user (now proven) and the
    /// server's final message.
    ///
    /// The nonce must be the one agreed, or, as librdkafka before 2.6.1 sends it (its
    /// issue 4895; Debian's and Ubuntu's kcat), the client's nonce followed by the one
    /// agreed. Both contain the server's fresh nonce, which the proof signs, so a replayed
    /// proof fails either way; Kafka brokers before 4.0 accepted the same.
    pub fn finish(self, client_final: &[u8]) -> Result<(String, Vec<u8>), ScramError> {
        let fin = parse_client_final(client_final)?;
        if fin.channel_binding != self.gs2_header.as_bytes() {
            return Err(ScramError::ChannelBinding);
        }
        let repeated = fin
            .nonce
            .strip_prefix(self.client_nonce.as_str())
            .is_some_and(|rest| rest == self.nonce);
        if fin.nonce != self.nonce && !repeated {
            return Err(malformed("the nonce is not the one this exchange agreed"));
        }
        let m = self.mechanism;
        let Some(cred) = self.credential else {
            return Err(ScramError::InvalidProof);
        };
        if fin.proof.len() != m.output_len() {
            return Err(ScramError::InvalidProof);
        }
        let auth_message = format!("{},{}", self.signed_so_far, fin.without_proof);
        let client_signature = hmac_sign(m, &cred.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = fin
            .proof
            .iter()
            .zip(&client_signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let stored = digest::digest(m.digest(), &client_key);
        if !crate::store::same_secret(stored.as_ref(), &cred.stored_key) {
            return Err(ScramError::InvalidProof);
        }
        let server_signature = hmac_sign(m, &cred.server_key, auth_message.as_bytes());
        let server_final = format!("v={}", B64.encode(server_signature));
        Ok((self.user, server_final.into_bytes()))
    }
}

/// The client's side, for tests and benchmarks: Ferry's users bring their own clients.
pub struct ClientExchange {
    mechanism: Mechanism,
    password: String,
    nonce: String,
    bare: String,
}

impl ClientExchange {
    /// The client's first message for `user`.
    pub fn start(mechanism: Mechanism, user: &str, password: &str) -> (Self, Vec<u8>) {
        let mut n = [0u8; 18];
        fill_random(&mut n);
        let nonce = B64.encode(n);
        let name = user.replace('=', "=3D").replace(',', "=2C");
        let bare = format!("n={name},r={nonce}");
        let first = format!("n,,{bare}");
        (
            ClientExchange {
                mechanism,
                password: password.to_string(),
                nonce,
                bare,
            },
            first.into_bytes(),
        )
    }

    /// The client's final message, answering the server's first; also the server
    /// signature it expects in the server's final message.
    pub fn answer(&self, server_first: &[u8]) -> Result<(Vec<u8>, Vec<u8>), ScramError> {
        let s = text(server_first)?;
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for field in s.split(',') {
            match field.split_at_checked(2) {
                Some(("r=", v)) => nonce = Some(v),
                Some(("s=", v)) => salt = B64.decode(v).ok(),
                Some(("i=", v)) => iterations = v.parse::<u32>().ok(),
                _ => {}
            }
        }
        let (Some(nonce), Some(salt), Some(iterations)) = (nonce, salt, iterations) else {
            return Err(malformed("the server's first message lacks r, s or i"));
        };
        if !nonce.starts_with(&self.nonce) {
            return Err(malformed("the server changed the client's nonce"));
        }
        let m = self.mechanism;
        let salted = salted_password(m, self.password.as_bytes(), &salt, iterations);
        let client_key = hmac_sign(m, &salted, b"Client Key");
        let stored_key = digest::digest(m.digest(), &client_key);
        let without_proof = format!("c={},r={nonce}", B64.encode("n,,"));
        let auth_message = format!("{},{s},{without_proof}", self.bare);
        let signature = hmac_sign(m, stored_key.as_ref(), auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = hmac_sign(m, &salted, b"Server Key");
        let server_signature = hmac_sign(m, &server_key, auth_message.as_bytes());
        Ok((
            format!("{without_proof},p={}", B64.encode(proof)).into_bytes(),
            format!("v={}", B64.encode(server_signature)).into_bytes(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange(
        m: Mechanism,
        stored: &ScramCredential,
        user: &str,
        password: &str,
    ) -> Result<String, ScramError> {
        let (client, first) = ClientExchange::start(m, user, password);
        let (server, server_first) =
            ServerExchange::start(m, &first, |_| Some(stored.clone()), b"decoy")?;
        let (fin, expected) = client.answer(&server_first)?;
        let (who, server_final) = server.finish(&fin)?;
        assert_eq!(
            server_final, expected,
            "the server proves it knew the credential"
        );
        Ok(who)
    }

    #[test]
    fn both_mechanisms_accept_the_password_and_refuse_another() {
        for m in Mechanism::ALL {
            let cred = ScramCredential::from_password(m, "correct horse", ITERATIONS_MIN);
            cred.check(m).unwrap();
            assert_eq!(
                exchange(m, &cred, "alice", "correct horse").unwrap(),
                "alice"
            );
            assert_eq!(
                exchange(m, &cred, "alice", "wrong").unwrap_err(),
                ScramError::InvalidProof
            );
            assert!(cred.verify_password(m, "correct horse"));
            assert!(!cred.verify_password(m, "correct horsf"));
        }
    }

    /// RFC 7677's example exchange for SCRAM-SHA-256.
    #[test]
    fn the_rfc_7677_example_verifies() {
        let m = Mechanism::Sha256;
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let salted = salted_password(m, b"pencil", &salt, 4096);
        let cred = ScramCredential::from_salted_password(m, &salted, salt, 4096);
        let first = parse_client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap();
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let exchange = ServerExchange {
            mechanism: m,
            user: first.user,
            credential: Some(cred),
            nonce: "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into(),
            client_nonce: "rOprNGfwEbeRWgbNEkqO".into(),
            gs2_header: first.gs2_header,
            signed_so_far: format!("{},{server_first}", first.bare),
        };
        let (user, server_final) = exchange
            .finish(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap();
        assert_eq!(user, "user");
        assert_eq!(
            server_final,
            b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".to_vec()
        );
    }

    /// What librdkafka before 2.6.1 sends: its own nonce again in front of the agreed one,
    /// with a proof over that message.
    fn old_librdkafka_final(
        m: Mechanism,
        password: &str,
        bare: &str,
        server_first: &[u8],
        client_nonce: &str,
    ) -> String {
        let sf = std::str::from_utf8(server_first).unwrap();
        let mut fields = sf.split(',');
        let nonce = &fields.next().unwrap()[2..];
        let salt = B64.decode(&fields.next().unwrap()[2..]).unwrap();
        let iterations: u32 = fields.next().unwrap()[2..].parse().unwrap();
        let salted = salted_password(m, password.as_bytes(), &salt, iterations);
        let client_key = hmac_sign(m, &salted, b"Client Key");
        let stored_key = digest::digest(m.digest(), &client_key);
        let without_proof = format!("c=biws,r={client_nonce}{nonce}");
        let auth_message = format!("{bare},{sf},{without_proof}");
        let signature = hmac_sign(m, stored_key.as_ref(), auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        format!("{without_proof},p={}", B64.encode(proof))
    }

    #[test]
    fn the_nonce_repeated_by_old_librdkafka_is_accepted_and_nothing_else() {
        let m = Mechanism::Sha256;
        let cred = ScramCredential::from_password(m, "pw", ITERATIONS_MIN);
        let start = |client_nonce: &str| {
            let first = format!("n,,n=alice,r={client_nonce}");
            ServerExchange::start(m, first.as_bytes(), |_| Some(cred.clone()), b"k").unwrap()
        };
        let (server, server_first) = start("abc");
        let fin = old_librdkafka_final(m, "pw", "n=alice,r=abc", &server_first, "abc");
        assert_eq!(server.finish(fin.as_bytes()).unwrap().0, "alice");
        // Any other prefix is refused.
        let (server, server_first) = start("abc");
        let fin = old_librdkafka_final(m, "pw", "n=alice,r=abc", &server_first, "xyz");
        assert!(matches!(
            server.finish(fin.as_bytes()),
            Err(ScramError::Malformed(_))
        ));
    }

    #[test]
    fn unknown_users_fail_at_the_proof_with_a_stable_salt() {
        let m = Mechanism::Sha512;
        let (_, first) = ClientExchange::start(m, "nobody", "pw");
        let (a, sf1) = ServerExchange::start(m, &first, |_| None, b"k").unwrap();
        let (_, sf2) = ServerExchange::start(m, &first, |_| None, b"k").unwrap();
        let salt = |sf: &[u8]| {
            String::from_utf8_lossy(sf)
                .split(',')
                .nth(1)
                .unwrap()
                .to_string()
        };
        assert_eq!(salt(&sf1), salt(&sf2));
        let client = ClientExchange::start(m, "nobody", "pw").0;
        let fin = format!(
            "c=biws,r={},p={}",
            &String::from_utf8_lossy(&sf1)[2..]
                .split(',')
                .next()
                .unwrap(),
            B64.encode([0u8; 64])
        );
        let _ = client;
        assert_eq!(
            a.finish(fin.as_bytes()).unwrap_err(),
            ScramError::InvalidProof
        );
    }

    #[test]
    fn malformed_messages_are_refused_with_a_reason() {
        for bad in [
            &b""[..],
            b"n",
            b"x,,n=a,r=b",
            b"p=tls-unique,,n=a,r=b",
            b"n,,r=b",
            b"n,,n=a",
            b"n,,n=a=2,r=b",
            b"n,,n=,r=b",
            b"n,a=b,n=a,r=b",
            b"n,,n=a,r=b,tokenauth=true",
            b"n,,m=ext,n=a,r=b",
            b"n,,n=a,r=b c",
        ] {
            assert!(
                parse_client_first(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let ok = parse_client_first(b"n,a=a=2Cb,n=a=2Cb,r=xyz").unwrap();
        assert_eq!(ok.user, "a,b");
        assert_eq!(ok.gs2_header, "n,a=a=2Cb,");
        for bad in [
            &b"c=biws,r=x"[..],
            b"r=x,c=biws,p=AA==",
            b"c=!,r=x,p=AA==",
            b"c=biws,r=x,p=!",
        ] {
            assert!(
                parse_client_final(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
