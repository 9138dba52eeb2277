//! TLS to the metadata database. The URL says whether to use it, as libpq's do:
//!
//! - `sslmode=require`, `verify-ca` or `verify-full`: TLS, and the server's certificate
//!   must chain to a trusted authority and name the host connected to (all three
//!   verify: stricter than libpq's `require`, which checks nothing);
//! - `sslrootcert=<file>`: the authorities to trust, in PEM (for a managed database's
//!   own authority); without it, the system's;
//! - `sslmode=disable` or `prefer`, or no `sslmode`: no TLS.
//!
//! tokio-postgres reads `sslmode` with `disable`, `prefer` and `require` only and knows
//! no `sslrootcert`, so Ferry takes both out of the URL before handing it on.

use crate::error::{Result, SharedError};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::sync::Arc;
use tokio_postgres::config::SslMode;

/// How to connect: the connector for TLS, or none.
#[derive(Clone)]
pub(crate) enum Tls {
    Off,
    On(tokio_postgres_rustls::MakeRustlsConnect),
}

/// Most bytes of a `sslrootcert` file read.
const ROOT_FILE_BYTES_MAX: u64 = 4 << 20;

fn config_error(message: String) -> SharedError {
    SharedError::Config(format!("metadata URL: {message}"))
}

/// Takes `sslmode` and `sslrootcert` out of a URL (`postgres://…?a=b&…`) or a
/// key=value string (`host=… sslmode=…`): the rest, and the two values.
fn split(url: &str) -> (String, Option<String>, Option<String>) {
    let (mut mode, mut root) = (None, None);
    let mut take = |key: &str, value: &str| match key {
        "sslmode" => {
            mode = Some(value.to_string());
            true
        }
        "sslrootcert" => {
            root = Some(value.to_string());
            true
        }
        _ => false,
    };
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match url.split_once('?') {
            None => url.to_string(),
            Some((base, query)) => {
                let kept: Vec<&str> = query
                    .split('&')
                    .filter(|pair| {
                        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                        !take(k, &percent_decode(v))
                    })
                    .collect();
                if kept.is_empty() {
                    base.to_string()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
        }
    } else {
        url.split_whitespace()
            .filter(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                !take(k.trim(), v.trim())
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    (rest, mode, root)
}

/// `%2F` and the like in a URL's value; malformed escapes stay as they are.
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn roots(file: Option<&str>) -> Result<rustls::RootCertStore> {
    let mut store = rustls::RootCertStore::empty();
    match file {
        Some(path) => {
            let meta = std::fs::metadata(path)
                .map_err(|e| config_error(format!("sslrootcert {path}: {e}")))?;
            if meta.len() > ROOT_FILE_BYTES_MAX {
                return Err(config_error(format!(
                    "sslrootcert {path} has {} bytes, more than a file of authorities holds",
                    meta.len()
                )));
            }
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| config_error(format!("sslrootcert {path}: {e}")))?
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| config_error(format!("sslrootcert {path}: {e}")))?;
            let (added, _) = store.add_parsable_certificates(certs);
            if added == 0 {
                return Err(config_error(format!(
                    "sslrootcert {path} holds no certificate Ferry can use (PEM expected)"
                )));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(config_error(
                    "sslmode asks for TLS, but the system has no certificate authorities: install ca-certificates or name a file with sslrootcert".into(),
                ));
            }
        }
    }
    Ok(store)
}

/// The tokio-postgres settings of a metadata URL, and how to connect.
pub(crate) fn connection(url: &str) -> Result<(tokio_postgres::Config, Tls)> {
    let (rest, mode, root) = split(url);
    let mut config = rest.parse::<tokio_postgres::Config>().map_err(|e| {
        config_error(format!(
            "{e} (expected postgres://user:password@host:port/database)"
        ))
    })?;
    let tls = match mode.as_deref() {
        None | Some("disable") | Some("prefer") | Some("allow") => {
            config.ssl_mode(SslMode::Disable);
            Tls::Off
        }
        Some("require") | Some("verify-ca") | Some("verify-full") => {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let client = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| config_error(format!("TLS: {e}")))?
                .with_root_certificates(roots(root.as_deref())?)
                .with_no_client_auth();
            config.ssl_mode(SslMode::Require);
            Tls::On(tokio_postgres_rustls::MakeRustlsConnect::new(client))
        }
        Some(other) => {
            return Err(config_error(format!(
                "sslmode {other} is not one of disable, prefer, require, verify-ca, verify-full"
            )))
        }
    };
    if root.is_some() && matches!(tls, Tls::Off) {
        return Err(config_error(
            "sslrootcert is given but sslmode does not ask for TLS: add sslmode=verify-full".into(),
        ));
    }
    Ok((config, tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_settings_are_taken_out_of_both_forms() {
        let (rest, mode, root) = split(
            "postgres://u:p@h:5/db?sslmode=verify-full&application_name=x&sslrootcert=%2Fetc%2Fca.pem",
        );
        assert_eq!(rest, "postgres://u:p@h:5/db?application_name=x");
        assert_eq!(mode.as_deref(), Some("verify-full"));
        assert_eq!(root.as_deref(), Some("/etc/ca.pem"));
        let (rest, mode, root) = split("host=h port=5 sslmode=require user=u");
        assert_eq!(rest, "host=h port=5 user=u");
        assert_eq!(mode.as_deref(), Some("require"));
        assert_eq!(root, None);
        assert_eq!(split("postgres://h/db").0, "postgres://h/db");
        assert_eq!(
            split("postgres://h/db?sslmode=disable").0,
            "postgres://h/db"
        );
    }

    #[test]
    fn bad_tls_settings_are_refused_with_what_to_do() {
        let err = |url: &str| match connection(url) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{url} was accepted"),
        };
        assert!(err("postgres://h/db?sslmode=sometimes").contains("verify-full"));
        assert!(err("postgres://h/db?sslrootcert=/x").contains("add sslmode=verify-full"));
        assert!(
            err("postgres://h/db?sslmode=require&sslrootcert=/nonexistent/ca.pem")
                .contains("/nonexistent/ca.pem")
        );
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate").unwrap();
        assert!(err(&format!(
            "postgres://h/db?sslmode=require&sslrootcert={}",
            empty.display()
        ))
        .contains("no certificate"));
        assert!(matches!(connection("postgres://h/db").unwrap().1, Tls::Off));
    }
}
