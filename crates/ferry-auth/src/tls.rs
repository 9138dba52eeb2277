//! TLS for the HTTP and Kafka listeners (rustls with ring).
//!
//! A [`TlsAcceptor`] is made from a listener's [`TlsSettings`]: PEM files for the
//! certificate chain, its private key and, for mutual TLS, the authorities that sign
//! client certificates. It is cheap to clone; every clone serves the same, current
//! configuration.
//!
//! # Handshakes
//!
//! [`TlsAcceptor::accept`] runs one handshake within a time limit. Listeners call it in
//! the task that serves the connection, never in their accept loop, so a client that
//! opens a connection and says nothing holds only its own connection.
//!
//! # Client certificates
//!
//! A verified client certificate names its principal by its subject's common name:
//! `CN=alice` is `User:alice`. A certificate without a common name, with more than one,
//! or with one that is not a valid user name gives no principal (logged); the client
//! then authenticates otherwise, or is anonymous.
//!
//! # Reloading
//!
//! [`TlsAcceptor::spawn_reloader`] reads the files again when their modification time
//! or size changes (checked every [`RELOAD_POLL_MS`]) and on SIGHUP. A new configuration
//! serves new connections; connections already open keep theirs. Files that cannot be
//! loaded (a half-written certificate, a key that does not match) are logged and the
//! configuration in force keeps serving.

use crate::Principal;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncRead, AsyncWrite};

pub use tokio_rustls::server::TlsStream;

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

/// How often the reloader looks at the files' modification times, in ms.
pub const RELOAD_POLL_MS: u64 = 2_000;

/// Largest PEM file read, in bytes (a chain of a few certificates is a few KiB).
pub const PEM_FILE_BYTES_MAX: u64 = 1024 * 1024;

/// ALPN protocol names an HTTP listener offers, preferred first.
pub const ALPN_HTTP: &[&[u8]] = &[b"h2", b"http/1.1"];

/// Reads every PEM certificate in `path`: at least one, or an error naming the file.
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read_pem(path, "certificate")?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not a valid PEM file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{} holds no certificate (no \"-----BEGIN CERTIFICATE-----\" block)",
            path.display()
        ));
    }
    Ok(certs)
}

/// Reads the private key in `path` (PKCS#8, PKCS#1 or SEC1 PEM).
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read_pem(path, "private key")?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => format!(
            "{} holds no private key (a \"-----BEGIN PRIVATE KEY-----\", \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\" block)",
            path.display()
        ),
        e => format!("{} is not a valid PEM private key: {e}", path.display()),
    })
}

fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("cannot read the TLS {what} file {}: {e}", path.display()))?;
    if meta.len() > PEM_FILE_BYTES_MAX {
        return Err(format!(
            "the TLS {what} file {} has {} bytes; at most {PEM_FILE_BYTES_MAX} are read",
            path.display(),
            meta.len()
        ));
    }
    std::fs::read(path)
        .map_err(|e| format!("cannot read the TLS {what} file {}: {e}", path.display()))
}

/// The principal a client certificate names: `User:<CN>` of its subject.
pub fn certificate_principal(cert: &CertificateDer<'_>) -> Result<Principal, String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| format!("the certificate cannot be read: {e}"))?;
    let subject = parsed.subject();
    let mut names = subject.iter_common_name();
    let (Some(cn), None) = (names.next(), names.next()) else {
        return Err(format!(
            "the certificate's subject {subject} must have exactly one common name (CN)"
        ));
    };
    let cn = cn
        .as_str()
        .map_err(|_| format!("the common name of {subject} is not text"))?;
    // A principal, not a stored user: any printable name, so that `CN=Alice Smith`
    // works; `ANONYMOUS` and `*` would be mistaken for clients without credentials or
    // for everyone.
    if cn == "ANONYMOUS" || cn == "*" {
        return Err(format!("the common name of {subject} is reserved"));
    }
    crate::check_principal_name(cn)
        .map_err(|e| format!("the common name of {subject} cannot name a principal: {e}"))?;
    Ok(Principal::user(cn))
}

/// A finished handshake.
pub struct Accepted<IO> {
    pub stream: TlsStream<IO>,
    /// The principal a verified client certificate names, if one was sent and names one.
    pub principal: Option<Principal>,
    /// The application protocol agreed by ALPN (`h2`, `http/1.1`), if any.
    pub alpn: Option<Vec<u8>>,
}

/// Accepts TLS connections with the listener's current configuration (see the module).
#[derive(Clone)]
pub struct TlsAcceptor {
    inner: Arc<Inner>,
}

struct Inner {
    /// The listener's name in log lines (`HTTP`, `Kafka`).
    listener: &'static str,
    settings: TlsSettings,
    alpn: Vec<Vec<u8>>,
    config: RwLock<Arc<ServerConfig>>,
}

impl std::fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsAcceptor")
            .field("listener", &self.inner.listener)
            .field("settings", &self.inner.settings)
            .finish()
    }
}

impl TlsAcceptor {
    /// Loads the files of `settings` for the listener named `listener`, offering the
    /// ALPN protocols `alpn` (none for Kafka). The error names the file at fault.
    pub fn new(
        listener: &'static str,
        settings: &TlsSettings,
        alpn: &[&[u8]],
    ) -> Result<TlsAcceptor, String> {
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        let config = server_config(settings, &alpn)?;
        Ok(TlsAcceptor {
            inner: Arc::new(Inner {
                listener,
                settings: settings.clone(),
                alpn,
                config: RwLock::new(Arc::new(config)),
            }),
        })
    }

    pub fn settings(&self) -> &TlsSettings {
        &self.inner.settings
    }

    fn current(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.inner.config.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Runs the server side of a handshake on `io` within `timeout`. `peer` names the
    /// client in log lines.
    pub async fn accept<IO>(
        &self,
        io: IO,
        peer: std::net::SocketAddr,
        timeout: Duration,
    ) -> std::io::Result<Accepted<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.current());
        let stream = tokio::time::timeout(timeout, acceptor.accept(io))
            .await
            .map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "the TLS handshake did not finish within {} ms",
                        timeout.as_millis()
                    ),
                )
            })??;
        let (_, conn) = stream.get_ref();
        let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
        let principal = match conn.peer_certificates().and_then(|c| c.first()) {
            None => None,
            Some(cert) => match certificate_principal(cert) {
                Ok(p) => Some(p),
                Err(why) => {
                    tracing::warn!(listener = self.inner.listener, peer = %peer, reason = %why, "A client certificate names no principal; the client is treated as having sent none.");
                    None
                }
            },
        };
        Ok(Accepted {
            stream,
            principal,
            alpn,
        })
    }

    /// Loads the files again; on success new handshakes use them.
    pub fn reload(&self) -> Result<(), String> {
        let config = server_config(&self.inner.settings, &self.inner.alpn)?;
        *self.inner.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
        Ok(())
    }

    /// Starts a task that reloads the files when they change or on SIGHUP (see the
    /// module), logging each reload and each failure.
    pub fn spawn_reloader(&self) -> tokio::task::JoinHandle<()> {
        self.spawn_reloader_every(Duration::from_millis(RELOAD_POLL_MS))
    }

    /// As [`TlsAcceptor::spawn_reloader`], looking at the files every `poll`.
    pub fn spawn_reloader_every(&self, poll: Duration) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let mut hangup = match signal(SignalKind::hangup()) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(listener = this.inner.listener, error = %e, "Cannot listen for SIGHUP; TLS files are reloaded only when they change.");
                    None
                }
            };
            let mut seen = stamps(&this.inner.settings);
            let mut tick = tokio::time::interval(poll);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let why = tokio::select! {
                    _ = tick.tick() => "the files changed",
                    Some(()) = async {
                        match hangup.as_mut() {
                            Some(h) => h.recv().await,
                            None => std::future::pending().await,
                        }
                    } => "SIGHUP",
                };
                let now = stamps(&this.inner.settings);
                if why != "SIGHUP" && now == seen {
                    continue;
                }
                // Remembered whether or not the files load: a bad file is reported
                // once, and tried again when it changes again.
                seen = now;
                let reloading = this.clone();
                let result = tokio::task::spawn_blocking(move || reloading.reload())
                    .await
                    .unwrap_or_else(|e| Err(format!("the reload task failed: {e}")));
                match result {
                    Ok(()) => {
                        let described = describe_leaf(&this.inner.settings.cert);
                        tracing::info!(listener = this.inner.listener, reason = why, cert = %this.inner.settings.cert.display(), certificate = %described, "Reloaded the TLS certificate; new connections use it.");
                    }
                    Err(e) => {
                        tracing::error!(listener = this.inner.listener, reason = why, error = %e, "Could not reload the TLS files; the certificate loaded before keeps serving.");
                    }
                }
            }
        })
    }

    /// The leaf certificate's subject, serial number and end of validity, for logs.
    pub fn describe(&self) -> String {
        describe_leaf(&self.inner.settings.cert)
    }
}

/// A file's modification time and size, `None` while it cannot be read.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn stamps(s: &TlsSettings) -> [Stamp; 3] {
    [
        stamp(&s.cert),
        stamp(&s.key),
        s.client_ca.as_deref().and_then(stamp),
    ]
}

fn describe_leaf(path: &Path) -> String {
    let leaf = load_certificates(path)
        .ok()
        .and_then(|c| c.into_iter().next());
    let Some(leaf) = leaf else {
        return "unreadable".into();
    };
    match x509_parser::parse_x509_certificate(leaf.as_ref()) {
        Ok((_, c)) => format!(
            "subject \"{}\", serial {}, valid until {}",
            c.subject(),
            c.raw_serial_as_string(),
            c.validity().not_after
        ),
        Err(e) => format!("unreadable ({e})"),
    }
}

/// ring's suites with AES-128-GCM first in each TLS version: as strong as TLS needs
/// (128-bit security), and cheaper per byte than AES-256-GCM on both ends of a
/// connection. The server's order wins ([`server_config`]), since most clients list
/// AES-256 first.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::CipherSuite as C;
    let mut p = rustls::crypto::ring::default_provider();
    let rank = |s: &rustls::SupportedCipherSuite| match s.suite() {
        C::TLS13_AES_128_GCM_SHA256 => 0,
        C::TLS13_AES_256_GCM_SHA384 => 1,
        C::TLS13_CHACHA20_POLY1305_SHA256 => 2,
        C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 | C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 3,
        C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 | C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => 4,
        _ => 5,
    };
    // Stable: suites of one rank keep ring's order.
    p.cipher_suites.sort_by_key(rank);
    Arc::new(p)
}

/// A rustls server configuration from the settings' files.
fn server_config(settings: &TlsSettings, alpn: &[Vec<u8>]) -> Result<ServerConfig, String> {
    let certs = load_certificates(&settings.cert)?;
    let key = load_private_key(&settings.key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS is not available: {e}"))?;
    let builder = match (&settings.client_ca, settings.client_auth) {
        (_, ClientAuth::None) | (None, _) => builder.with_no_client_auth(),
        (Some(ca), mode) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in load_certificates(ca)? {
                roots.add(cert).map_err(|e| {
                    format!(
                        "{} holds a certificate that cannot be a client authority: {e}",
                        ca.display()
                    )
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            let verifier = if mode == ClientAuth::Requested {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| {
                format!(
                    "the client authorities in {} cannot be used: {e}",
                    ca.display()
                )
            })?)
        }
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => format!(
            "the private key in {} does not match the certificate in {}",
            settings.key.display(),
            settings.cert.display()
        ),
        e => format!(
            "the certificate in {} and the key in {} cannot be used: {e}",
            settings.cert.display(),
            settings.key.display()
        ),
    })?;
    config.alpn_protocols = alpn.to_vec();
    config.ignore_client_order = true;
    Ok(config)
}

#[cfg(test)]
mod tests;
