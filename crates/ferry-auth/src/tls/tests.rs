use super::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// An authority that issues certificates for tests.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Ferry test CA");
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Ca {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// A certificate and its PKCS#8 key, for `cn` (none if empty) and the SANs.
    fn issue(&self, cn: &str, sans: &[&str]) -> (String, String) {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        if !cn.is_empty() {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn settings(cert: PathBuf, key: PathBuf) -> TlsSettings {
    TlsSettings {
        cert,
        key,
        client_ca: None,
        client_auth: ClientAuth::None,
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

#[test]
fn keys_in_pkcs8_sec1_and_pkcs1_are_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = Ca::new().issue("localhost", &["localhost"]);
    let s = settings(
        write(dir.path(), "c.pem", &cert),
        write(dir.path(), "k.pem", &key),
    );
    TlsAcceptor::new("HTTP", &s, ALPN_HTTP).unwrap();
    for (cert, key) in [
        ("ec-sec1.crt", "ec-sec1.key"),
        ("rsa-pkcs1.crt", "rsa-pkcs1.key"),
    ] {
        let s = settings(fixture(cert), fixture(key));
        TlsAcceptor::new("HTTP", &s, &[]).unwrap_or_else(|e| panic!("{key}: {e}"));
    }
}

#[test]
fn bad_files_are_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let (cert, key) = ca.issue("localhost", &["localhost"]);
    let (_, other_key) = ca.issue("other", &["localhost"]);
    let cert = write(dir.path(), "cert.pem", &cert);
    let key = write(dir.path(), "key.pem", &key);
    let other_key = write(dir.path(), "other.pem", &other_key);
    let empty = write(dir.path(), "empty.pem", "not a pem file\n");
    let missing = dir.path().join("missing.pem");

    let e = TlsAcceptor::new("HTTP", &settings(missing.clone(), key.clone()), &[]).unwrap_err();
    assert!(
        e.contains("missing.pem") && e.contains("certificate"),
        "{e}"
    );
    let e = TlsAcceptor::new("HTTP", &settings(empty.clone(), key.clone()), &[]).unwrap_err();
    assert!(
        e.contains("empty.pem") && e.contains("no certificate"),
        "{e}"
    );
    let e = TlsAcceptor::new("HTTP", &settings(cert.clone(), empty), &[]).unwrap_err();
    assert!(
        e.contains("empty.pem") && e.contains("no private key"),
        "{e}"
    );
    let e = TlsAcceptor::new("HTTP", &settings(cert.clone(), other_key), &[]).unwrap_err();
    assert!(
        e.contains("other.pem") && e.contains("does not match") && e.contains("cert.pem"),
        "{e}"
    );
    let mut s = settings(cert, key);
    s.client_ca = Some(missing);
    s.client_auth = ClientAuth::Required;
    let e = TlsAcceptor::new("HTTP", &s, &[]).unwrap_err();
    assert!(e.contains("missing.pem"), "{e}");
}

#[test]
fn a_client_certificate_names_its_common_name() {
    let ca = Ca::new();
    let der = |pem: &str| CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    let (alice, _) = ca.issue("alice", &[]);
    assert_eq!(
        certificate_principal(&der(&alice)).unwrap(),
        Principal::user("alice")
    );
    let (nameless, _) = ca.issue("", &["client.example"]);
    let e = certificate_principal(&der(&nameless)).unwrap_err();
    assert!(e.contains("common name"), "{e}");
    let (reserved, _) = ca.issue("ANONYMOUS", &[]);
    assert!(certificate_principal(&der(&reserved)).is_err());
    let (spaced, _) = ca.issue("Alice Smith", &[]);
    assert_eq!(
        certificate_principal(&der(&spaced)).unwrap(),
        Principal::user("Alice Smith")
    );
    let (control, _) = ca.issue("bell\u{7}", &[]);
    assert!(certificate_principal(&der(&control)).is_err());
}

#[test]
fn a_reload_with_bad_files_keeps_the_configuration_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let (cert, key) = ca.issue("localhost", &["localhost"]);
    let s = settings(
        write(dir.path(), "cert.pem", &cert),
        write(dir.path(), "key.pem", &key),
    );
    let acceptor = TlsAcceptor::new("Kafka", &s, &[]).unwrap();
    let before = acceptor.current();
    let (cert2, _) = ca.issue("localhost", &["localhost"]);
    std::fs::write(&s.cert, cert2).unwrap();
    let e = acceptor.reload().unwrap_err();
    assert!(e.contains("does not match"), "{e}");
    assert!(Arc::ptr_eq(&before, &acceptor.current()));
    let (cert3, key3) = ca.issue("localhost", &["localhost"]);
    std::fs::write(&s.cert, cert3).unwrap();
    std::fs::write(&s.key, key3).unwrap();
    acceptor.reload().unwrap();
    assert!(!Arc::ptr_eq(&before, &acceptor.current()));
}

/// A handshake over an in-memory pipe: the client trusts `ca`, sends `client` if given.
async fn handshake(
    acceptor: &TlsAcceptor,
    ca: &str,
    client: Option<(&str, &str)>,
) -> std::io::Result<Accepted<tokio::io::DuplexStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
        .unwrap();
    // ring's own order, AES-256-GCM first, as most clients list it.
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
    };
    let (a, b) = tokio::io::duplex(64 * 1024);
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let client = tokio::spawn(async move {
        let s = connector.connect(name, a).await;
        // Keep the client end open until the server side has finished.
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(s);
    });
    let peer = "127.0.0.1:1".parse().unwrap();
    let accepted = acceptor.accept(b, peer, Duration::from_secs(5)).await;
    client.abort();
    accepted
}

#[tokio::test]
async fn aes_128_gcm_is_chosen_over_a_client_s_preference_for_aes_256() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let (cert, key) = ca.issue("localhost", &["localhost"]);
    let s = settings(
        write(dir.path(), "cert.pem", &cert),
        write(dir.path(), "key.pem", &key),
    );
    let acceptor = TlsAcceptor::new("HTTP", &s, &[]).unwrap();
    let ok = handshake(&acceptor, &ca.pem, None).await.unwrap();
    let suite = ok.stream.get_ref().1.negotiated_cipher_suite().unwrap();
    assert_eq!(suite.suite(), rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
}

#[tokio::test]
async fn mutual_tls_gives_the_principal_or_refuses_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let (server_ca, client_ca, stranger_ca) = (Ca::new(), Ca::new(), Ca::new());
    let (cert, key) = server_ca.issue("localhost", &["localhost"]);
    let mut s = settings(
        write(dir.path(), "cert.pem", &cert),
        write(dir.path(), "key.pem", &key),
    );
    s.client_ca = Some(write(dir.path(), "ca.pem", &client_ca.pem));
    s.client_auth = ClientAuth::Required;
    let required = TlsAcceptor::new("Kafka", &s, &[]).unwrap();
    s.client_auth = ClientAuth::Requested;
    let requested = TlsAcceptor::new("Kafka", &s, &[]).unwrap();

    let (alice, alice_key) = client_ca.issue("alice", &[]);
    let (nameless, nameless_key) = client_ca.issue("", &["client.example"]);
    let (mallory, mallory_key) = stranger_ca.issue("mallory", &[]);
    let ca = &server_ca.pem;

    let ok = handshake(&required, ca, Some((&alice, &alice_key)))
        .await
        .unwrap();
    assert_eq!(ok.principal, Some(Principal::user("alice")));
    assert!(handshake(&required, ca, None).await.is_err());
    assert!(handshake(&required, ca, Some((&mallory, &mallory_key)))
        .await
        .is_err());
    let ok = handshake(&required, ca, Some((&nameless, &nameless_key)))
        .await
        .unwrap();
    assert_eq!(ok.principal, None);

    let ok = handshake(&requested, ca, None).await.unwrap();
    assert_eq!(ok.principal, None);
    let ok = handshake(&requested, ca, Some((&alice, &alice_key)))
        .await
        .unwrap();
    assert_eq!(ok.principal, Some(Principal::user("alice")));
    assert!(handshake(&requested, ca, Some((&mallory, &mallory_key)))
        .await
        .is_err());
}

#[tokio::test]
async fn a_handshake_that_never_comes_times_out() {
    let (cert, key) = (fixture("ec-sec1.crt"), fixture("ec-sec1.key"));
    let acceptor = TlsAcceptor::new("HTTP", &settings(cert, key), ALPN_HTTP).unwrap();
    let (_silent, b) = tokio::io::duplex(1024);
    let started = std::time::Instant::now();
    let e = acceptor
        .accept(
            b,
            "127.0.0.1:1".parse().unwrap(),
            Duration::from_millis(200),
        )
        .await
        .err()
        .unwrap();
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
    assert!(started.elapsed() < Duration::from_secs(2));
}
