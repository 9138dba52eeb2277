//! TLS for the HTTP and Kafka listeners (rustls with ring).

use std::path::PathBuf;

/// Whether a listener asks clients for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// No client certificate is asked for.
    None,
    /// A certificate is asked for and checked if sent; clients without one go on to
    /// authenticate otherwise (SASL, tokens).
    Requested,
    /// Every client must present a certificate signed by the client CA.
    Required,
}

impl std::str::FromStr for ClientAuth {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(ClientAuth::None),
            "requested" => Ok(ClientAuth::Requested),
            "required" => Ok(ClientAuth::Required),
            _ => Err(format!(
                "tls_client_auth must be none, requested or required, got {s:?}"
            )),
        }
    }
}

/// A listener's TLS settings, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM certificates of the authorities that sign client certificates.
    pub client_ca: Option<PathBuf>,
    pub client_auth: ClientAuth,
}
