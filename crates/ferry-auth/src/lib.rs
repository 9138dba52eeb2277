//! Ferry's security: who a client is (principals, authenticated by SCRAM, PLAIN, API
//! tokens or client certificates) and what it may do (ACLs with Kafka's semantics).
//!
//! - [`store::Auth`] keeps users, tokens and ACLs in the data folder (`auth.json`) and
//!   answers both questions.
//! - [`scram`] and [`plain`] read the SASL messages clients send; both parse bytes from
//!   the network and are fuzzed (`fuzz/fuzz_targets/sasl_*.rs`).
//! - [`acl`] holds the ACL model and its evaluation.
//! - [`tls`] loads certificates and keeps them fresh.
//!
//! docs/security.md describes the model and what each setting protects against.

pub mod acl;
pub mod limiter;
pub mod plain;
pub mod scram;
pub mod store;
pub mod tls;

pub use acl::{Acl, AclFilter, Operation, PatternType, Permission, ResourceType};
pub use store::{Auth, AuthError, AuthSettings};

/// Who made a request: `User:<name>`, as Kafka writes principals.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal {
    pub name: String,
}

impl Principal {
    pub fn user(name: impl Into<String>) -> Self {
        Principal { name: name.into() }
    }

    /// The principal of clients when authentication is off.
    pub fn anonymous() -> Self {
        Principal::user("ANONYMOUS")
    }

    /// `User:<name>` as ACLs and Kafka name it.
    pub fn kafka_name(&self) -> String {
        format!("User:{}", self.name)
    }

    /// Reads `User:<name>` (the only principal type Ferry has).
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            Some(("User", name)) if !name.is_empty() => Ok(Principal::user(name)),
            _ => Err(format!(
                "a principal is written User:<name> (e.g. User:alice), got {s:?}"
            )),
        }
    }
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "User:{}", self.name)
    }
}

/// Checks a user name: 1 to 255 characters, none of them a control character, `,` or
/// `=` (SCRAM escapes those, and they would make ACL principals ambiguous), and not `*`.
pub fn check_user_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 255 {
        return Err(format!(
            "a user name has 1 to 255 bytes, got {} bytes",
            name.len()
        ));
    }
    if name == "*" || name == "ANONYMOUS" {
        return Err(format!("{name:?} is reserved and cannot name a user"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| c.is_control() || *c == ',' || *c == '=' || *c == ':')
    {
        return Err(format!(
            "a user name may not contain {c:?}; use letters, digits, '.', '_', '-', '@'"
        ));
    }
    Ok(())
}
