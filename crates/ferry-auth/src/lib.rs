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
pub use store::{Auth, AuthError, AuthSettings, StateBackend};

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

/// Checks a user name: 1 to 255 of the letters, digits and `.`, `_`, `-`, `@`, `+`
/// (names that need no escaping in SCRAM, ACLs, URLs or logs), and not `ANONYMOUS`.
pub fn check_user_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 255 {
        return Err(format!(
            "a user name has 1 to 255 characters, got {}",
            name.chars().count()
        ));
    }
    if name == "ANONYMOUS" {
        return Err(
            "\"ANONYMOUS\" is the principal of clients without credentials and cannot name a user"
                .into(),
        );
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._-@+".contains(*c)))
    {
        return Err(format!(
            "a user name may not contain {c:?}; use letters, digits and '.', '_', '-', '@', '+'"
        ));
    }
    Ok(())
}

/// Longest principal name an ACL may carry, in characters.
pub const PRINCIPAL_CHARS_MAX: usize = 1024;

/// Checks the name of a principal an ACL names: users, and also the common names of
/// client certificates, which may hold any printable character.
pub fn check_principal_name(name: &str) -> Result<(), String> {
    let n = name.chars().count();
    if n == 0 || n > PRINCIPAL_CHARS_MAX {
        return Err(format!(
            "a principal's name has 1 to {PRINCIPAL_CHARS_MAX} characters, got {n}"
        ));
    }
    if name.chars().any(char::is_control) {
        return Err("a principal's name may not contain control characters".into());
    }
    Ok(())
}
