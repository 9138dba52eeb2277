//! HTTP produce over TLS against plaintext, on the same binary in one run: the cost of
//! TLS (rustls with ring, HTTP/1.1 on both) as a ratio.

use crate::http::{run_with, HttpResult, Target};
use crate::Ctx;
use std::time::Duration;

/// A test authority and a certificate it signed for 127.0.0.1 and localhost, written to
/// `ctx.dir`: the `ferry serve` flags that use them and the authority's PEM.
fn certificate(ctx: &Ctx) -> anyhow::Result<(Vec<String>, Vec<u8>)> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "ferry-bench CA");
    let ca_key = KeyPair::generate()?;
    let ca_pem = ca.self_signed(&ca_key)?.pem();
    let issuer = Issuer::new(ca, ca_key);
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
    let key = KeyPair::generate()?;
    let cert = leaf.signed_by(&key, &issuer)?;
    let (cert_path, key_path) = (ctx.dir.join("tls-cert.pem"), ctx.dir.join("tls-key.pem"));
    std::fs::write(&cert_path, cert.pem())?;
    std::fs::write(&key_path, key.serialize_pem())?;
    let flags = vec![
        "--tls-cert".to_string(),
        cert_path.display().to_string(),
        "--tls-key".to_string(),
        key_path.display().to_string(),
        "--tls-listeners".to_string(),
        "http".to_string(),
    ];
    Ok((flags, ca_pem.into_bytes()))
}

/// One row: the same workload in plaintext and over TLS.
pub struct TlsRow {
    pub plain: HttpResult,
    pub tls: HttpResult,
}

/// For each request size and client count: plaintext, then TLS, alternating `rounds`
/// times; the best run of each is kept.
pub async fn run(
    ctx: &Ctx,
    seconds: u64,
    clients: &[usize],
    sizes: &[usize],
    durability: &str,
    rounds: u32,
) -> anyhow::Result<Vec<TlsRow>> {
    let (flags, ca) = certificate(ctx)?;
    let plain = Target {
        durability: Some(durability.to_string()),
        produce_only: true,
        ..Target::default()
    };
    let tls = Target {
        server_args: flags,
        tls_ca_pem: Some(ca),
        ..plain.clone()
    };
    let duration = Duration::from_secs(seconds);
    let mut rows = Vec::new();
    for &per_request in sizes {
        for &c in clients {
            let (mut best_plain, mut best_tls): (Option<HttpResult>, Option<HttpResult>) =
                (None, None);
            for _ in 0..rounds.max(1) {
                for (target, best) in [(&plain, &mut best_plain), (&tls, &mut best_tls)] {
                    let r = run_with(ctx, duration, &[c], per_request, target)
                        .await?
                        .remove(0);
                    if best.as_ref().is_none_or(|b| rate(&r) > rate(b)) {
                        *best = Some(r);
                    }
                }
            }
            if let (Some(plain), Some(tls)) = (best_plain, best_tls) {
                rows.push(TlsRow { plain, tls });
            }
        }
    }
    Ok(rows)
}

fn rate(r: &HttpResult) -> f64 {
    r.produce_records as f64 / r.produce_secs
}

pub fn report(rows: &[TlsRow], durability: &str) -> String {
    let mut s = format!(
        "| HTTP/1.1 produce, durability {durability} | clients | plaintext records/s | TLS records/s | TLS / plaintext | plaintext p50 ms | TLS p50 ms | plaintext p99 ms | TLS p99 ms |\n|---|---|---|---|---|---|---|---|---|\n"
    );
    for r in rows {
        s.push_str(&format!(
            "| {} × 1 KiB per request | {} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
            r.plain.per_request,
            r.plain.clients,
            rate(&r.plain),
            rate(&r.tls),
            rate(&r.tls) / rate(&r.plain),
            r.plain.p50_ms,
            r.tls.p50_ms,
            r.plain.p99_ms,
            r.tls.p99_ms,
        ));
    }
    s
}
