//! TLS on the HTTP and Kafka listeners, mutual TLS, certificate reloads, push endpoints
//! signed by a private authority and the CLI's `--ca-file`, all through the real binary.

mod common;
use common::*;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An authority that issues certificates for the tests.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

/// A certificate and its key, as PEM.
struct Issued {
    cert: String,
    key: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Ca {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// A certificate for `cn` valid for 127.0.0.1 and localhost.
    fn issue(&self, cn: &str) -> Issued {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Issued {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// Files of a server certificate: `cert.pem`, `key.pem` and the authority's `ca.pem`.
struct Files {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

fn write_files(dir: &Path, ca: &Ca, issued: &Issued) -> Files {
    let f = Files {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
        ca: dir.join("ca.pem"),
    };
    std::fs::write(&f.cert, &issued.cert).unwrap();
    std::fs::write(&f.key, &issued.key).unwrap();
    std::fs::write(&f.ca, &ca.pem).unwrap();
    f
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `https://` for the server's `http://` address.
fn https(server: &Server) -> String {
    server.url.replacen("http://", "https://", 1)
}

/// A reqwest client trusting `ca_pem`, with `identity` (cert and key PEM) if given.
fn client(ca_pem: &str, identity: Option<&Issued>) -> reqwest::ClientBuilder {
    ferry_client::install_tls();
    let mut b = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .tls_certs_only(vec![
            reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()
        ]);
    if let Some(id) = identity {
        let pem = format!("{}{}", id.cert, id.key);
        b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    b
}

fn tls_config(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

/// A TLS connection to `addr` (host:port) trusting `ca_pem`.
async fn tls_connect(
    addr: &str,
    ca_pem: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(tls_config(ca_pem));
    let name = ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await
}

/// The leaf certificate `addr` serves, as DER.
async fn served_leaf(addr: &str, ca_pem: &str) -> Vec<u8> {
    let tls = tls_connect(addr, ca_pem).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

fn host_port(server: &Server) -> String {
    server.url.trim_start_matches("http://").to_string()
}

async fn wait_until(what: &str, timeout: Duration, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// ApiVersions v0 with `correlation_id`, framed.
fn api_versions_request(correlation_id: i32) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&18i16.to_be_bytes()); // ApiVersions
    body.extend_from_slice(&0i16.to_be_bytes()); // version 0
    body.extend_from_slice(&correlation_id.to_be_bytes());
    body.extend_from_slice(&(-1i16).to_be_bytes()); // no client id
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    frame
}

/// Sends ApiVersions and checks the answer: its correlation id and no error.
async fn api_versions<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(s: &mut S) {
    s.write_all(&api_versions_request(7)).await.unwrap();
    let len = s.read_i32().await.unwrap();
    assert!((10..1_000_000).contains(&len), "answer of {len} bytes");
    let mut buf = vec![0; len as usize];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(i32::from_be_bytes(buf[..4].try_into().unwrap()), 7);
    assert_eq!(
        i16::from_be_bytes(buf[4..6].try_into().unwrap()),
        0,
        "error code"
    );
}

/// Whether the server closes `s` within `within` (reads until end of stream).
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// `ferry serve` with its data in `data` and TLS on with `files`, plus `extra` flags.
fn tls_server(data: &Path, files: &Files, extra: &[&str]) -> Server {
    let mut args = vec![
        "--tls-cert",
        path(&files.cert),
        "--tls-key",
        path(&files.key),
    ];
    args.extend_from_slice(extra);
    Server::start(data, &args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_speaks_http1_and_h2_by_alpn() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Ferry test CA");
    let files = write_files(dir.path(), &ca, &ca.issue("localhost"));
    let data = dir.path().join("data");
    let server = tls_server(&data, &files, &[]);
    // The ready line reaches the kept log just after the server is reported ready.
    let mut ready = String::new();
    wait_until("the ready line", Duration::from_secs(5), async || {
        ready = server
            .logs()
            .into_iter()
            .find(|l| l.contains("Ferry is ready."))
            .unwrap_or_default();
        !ready.is_empty()
    })
    .await;
    assert!(ready.contains(r#""http_tls":true"#), "{ready}");
    assert!(ready.contains(r#""kafka_tls":true"#), "{ready}");
    let url = https(&server);

    let h1 = client(&ca.pem, None).http1_only().build().unwrap();
    let r = h1
        .post(format!("{url}/v1/topics"))
        .json(&json!({"name": "t", "partitions": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.version(), reqwest::Version::HTTP_11);

    let h2 = client(&ca.pem, None).build().unwrap();
    for _ in 0..3 {
        let r = h2
            .post(format!("{url}/v1/topics/t/records"))
            .json(&json!({"records": [{"value": "over TLS"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.version(), reqwest::Version::HTTP_2, "h2 agreed by ALPN");
    }
    let r = h1
        .get(format!("{url}/v1/topics/t/partitions/0/records?offset=0"))
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["records"].as_array().unwrap().len(), 3, "{v}");

    // A client that does not trust the authority is refused.
    ferry_client::install_tls();
    let stranger = reqwest::Client::new();
    assert!(stranger
        .get(format!("{url}/v1/topics"))
        .send()
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_on_tls_ports_is_refused_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Ferry test CA");
    let files = write_files(dir.path(), &ca, &ca.issue("localhost"));
    let server = tls_server(&dir.path().join("data"), &files, &[]);
    let url = https(&server);

    // Plain HTTP on the TLS port: no answer in HTTP, and the connection ends.
    let mut plain = TcpStream::connect(host_port(&server)).await.unwrap();
    plain
        .write_all(b"GET /v1/topics HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut got)).await;
    assert!(
        !got.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    // Garbage, then a closed connection.
    let mut junk = TcpStream::connect(host_port(&server)).await.unwrap();
    junk.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 0, 1, 2, 3])
        .await
        .unwrap();
    drop(junk);
    // A plaintext Kafka request on the Kafka TLS port.
    let mut plain = TcpStream::connect(&server.kafka).await.unwrap();
    plain.write_all(&api_versions_request(1)).await.unwrap();
    assert!(closed_within(&mut plain, Duration::from_secs(5)).await);

    let r = client(&ca.pem, None)
        .build()
        .unwrap()
        .get(format!("{url}/v1/topics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut tls = tls_connect(&server.kafka, &ca.pem).await.unwrap();
    api_versions(&mut tls).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_that_never_finishes_is_closed_and_blocks_no_one() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Ferry test CA");
    let files = write_files(dir.path(), &ca, &ca.issue("localhost"));
    let server = tls_server(
        &dir.path().join("data"),
        &files,
        &[
            "--http-header-timeout-ms",
            "1000",
            "--http-max-connections",
            "4",
        ],
    );
    let url = https(&server);
    // Silent connections, and one that sends the start of a ClientHello and stops:
    // as many as the listener serves at once, less one.
    let mut silent = Vec::new();
    for _ in 0..2 {
        silent.push(TcpStream::connect(host_port(&server)).await.unwrap());
    }
    let mut partial = TcpStream::connect(host_port(&server)).await.unwrap();
    partial.write_all(&[0x16, 0x03, 0x01, 0x02]).await.unwrap();
    let started = Instant::now();
    let c = client(&ca.pem, None).http1_only().build().unwrap();
    let r = c.get(format!("{url}/v1/topics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "served while handshakes wait: {:?}",
        started.elapsed()
    );
    for s in silent.iter_mut().chain([&mut partial]) {
        assert!(
            closed_within(s, Duration::from_secs(5)).await,
            "a stalled handshake is closed after the header timeout"
        );
    }
    assert!(started.elapsed() >= Duration::from_millis(900));
    // Kafka: a silent connection does not hold up a TLS client.
    let _quiet = TcpStream::connect(&server.kafka).await.unwrap();
    let mut tls = tls_connect(&server.kafka, &ca.pem).await.unwrap();
    api_versions(&mut tls).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_clients_without_a_certificate_from_the_client_authority() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Ferry test CA");
    let client_ca = Ca::new("Ferry client CA");
    let stranger_ca = Ca::new("Someone else");
    let files = write_files(dir.path(), &ca, &ca.issue("localhost"));
    let client_ca_file = dir.path().join("client-ca.pem");
    std::fs::write(&client_ca_file, &client_ca.pem).unwrap();
    let server = tls_server(
        &dir.path().join("data"),
        &files,
        &[
            "--tls-client-ca",
            path(&client_ca_file),
            "--tls-client-auth",
            "required",
        ],
    );
    let url = https(&server);
    let topics = format!("{url}/v1/topics");

    let none = client(&ca.pem, None).build().unwrap();
    assert!(none.get(&topics).send().await.is_err());
    let stranger = stranger_ca.issue("mallory");
    let wrong = client(&ca.pem, Some(&stranger)).build().unwrap();
    assert!(wrong.get(&topics).send().await.is_err());
    let alice = client_ca.issue("alice");
    for h1 in [true, false] {
        let b = client(&ca.pem, Some(&alice));
        let c = if h1 { b.http1_only() } else { b }.build().unwrap();
        let r = c.get(&topics).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_reloaded_without_a_restart_and_bad_ones_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Ferry test CA");
    let first = ca.issue("localhost");
    let files = write_files(dir.path(), &ca, &first);
    let server = tls_server(&dir.path().join("data"), &files, &[]);
    let http = host_port(&server);
    assert_eq!(served_leaf(&http, &ca.pem).await, der(&first.cert));
    assert_eq!(served_leaf(&server.kafka, &ca.pem).await, der(&first.cert));

    // A new certificate: the key first, then the certificate, as a deploy tool might.
    let second = ca.issue("localhost");
    std::fs::write(&files.key, &second.key).unwrap();
    std::fs::write(&files.cert, &second.cert).unwrap();
    wait_until("the new certificate", Duration::from_secs(15), async || {
        served_leaf(&http, &ca.pem).await == der(&second.cert)
            && served_leaf(&server.kafka, &ca.pem).await == der(&second.cert)
    })
    .await;

    // A bad replacement is logged and the certificate in force keeps serving.
    std::fs::write(&files.cert, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    wait_until("the failed reload", Duration::from_secs(15), async || {
        server
            .logs()
            .iter()
            .any(|l| l.contains("Could not reload the TLS files"))
    })
    .await;
    assert_eq!(served_leaf(&http, &ca.pem).await, der(&second.cert));
    assert_eq!(served_leaf(&server.kafka, &ca.pem).await, der(&second.cert));

    // SIGHUP reloads at once (and does not stop Ferry).
    std::fs::write(&files.cert, &second.cert).unwrap();
    let pid = server.child.id().to_string();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(hup.success());
    wait_until("the SIGHUP reload", Duration::from_secs(10), async || {
        server
            .logs()
            .iter()
            .any(|l| l.contains("Reloaded the TLS certificate") && l.contains("SIGHUP"))
    })
    .await;
    let r = client(&ca.pem, None)
        .build()
        .unwrap()
        .get(format!("{}/v1/topics", https(&server)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_on_kafka_only_leaves_http_in_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Ferry test CA");
    let files = write_files(dir.path(), &ca, &ca.issue("localhost"));
    let server = tls_server(
        &dir.path().join("data"),
        &files,
        &["--tls-listeners", "kafka"],
    );
    let (status, _) = call(http().get(format!("{}/v1/topics", server.url))).await;
    assert_eq!(status, 200);
    let mut tls = tls_connect(&server.kafka, &ca.pem).await.unwrap();
    api_versions(&mut tls).await;
    api_versions(&mut tls).await;
}

#[test]
fn bad_tls_files_stop_ferry_at_start_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Ferry test CA");
    let files = write_files(dir.path(), &ca, &ca.issue("localhost"));
    let other = ca.issue("localhost");
    let wrong_key = dir.path().join("wrong-key.pem");
    std::fs::write(&wrong_key, &other.key).unwrap();
    let missing = dir.path().join("missing.pem");
    for (cert, key, expect) in [
        (&missing, &files.key, "missing.pem"),
        (&files.cert, &wrong_key, "does not match"),
        (&files.key, &files.key, "holds no certificate"),
    ] {
        let out = ferry_testkit::serve_command(BIN, &dir.path().join("data"))
            .args(["--tls-cert", path(cert), "--tls-key", path(key)])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{expect}: {err}");
        assert!(err.contains("HTTP listener"), "{err}");
    }
}

#[test]
fn the_cli_trusts_its_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Ferry test CA");
    let files = write_files(dir.path(), &ca, &ca.issue("localhost"));
    let server = tls_server(&dir.path().join("data"), &files, &[]);
    let url = https(&server);
    let run = |extra: &[&str], env_ca: Option<&Path>| {
        let mut cmd = std::process::Command::new(BIN);
        cmd.args(["topic", "create", "cli", "--url", &url])
            .args(extra)
            .env_remove("FERRY_CA_FILE");
        if let Some(p) = env_ca {
            cmd.env("FERRY_CA_FILE", p);
        }
        cmd.output().unwrap()
    };
    let out = run(&[], None);
    assert!(!out.status.success(), "an unknown authority is refused");
    let out = run(&["--ca-file", path(&files.ca)], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new(BIN)
        .args(["topic", "list", "--json", "--url", &url])
        .env("FERRY_CA_FILE", &files.ca)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"cli\""));
    let out = run(&["--ca-file", path(&dir.path().join("nope.pem"))], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.pem"));
}

/// An HTTPS endpoint with a certificate from `ca` that answers every request 200 and
/// counts the requests it answers.
async fn https_endpoint(ca: &Ca) -> (u16, Arc<AtomicUsize>) {
    let issued = ca.issue("localhost");
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from_pem_slice(issued.cert.as_bytes()).unwrap()],
        rustls::pki_types::PrivateKeyDer::from_pem_slice(issued.key.as_bytes()).unwrap(),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let answered = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&answered);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, count) = (acceptor.clone(), Arc::clone(&count));
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match tls.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    while buf.len() < head_end + len {
                        match tls.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..head_end + len);
                    count.fetch_add(1, Ordering::SeqCst);
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if tls.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, answered)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_endpoints_signed_by_the_push_ca_file_are_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let private_ca = Ca::new("Private webhook CA");
    let (port, answered) = https_endpoint(&private_ca).await;
    let ca_file = dir.path().join("push-ca.pem");
    std::fs::write(&ca_file, &private_ca.pem).unwrap();
    let hook = format!("https://127.0.0.1:{port}/hook");

    let trusting = Server::start(
        &dir.path().join("a"),
        &["--push-allow-private", "--push-ca-file", path(&ca_file)],
    );
    let plain = Server::start(&dir.path().join("b"), &["--push-allow-private"]);
    for server in [&trusting, &plain] {
        let url = &server.url;
        create_topic(url, json!({"name": "orders", "partitions": 1})).await;
        create_subscription(
            url,
            json!({"name": "hook", "topic": "orders", "start": "earliest",
                   "push": {"url": hook}}),
        )
        .await;
        let (status, v) = produce(url, "orders", json!([{"value": {"n": 1}}])).await;
        assert_eq!(status, 200, "{v}");
    }

    wait_until("the delivery", Duration::from_secs(15), async || {
        let (_, v) = call(http().get(format!(
            "{}/v1/subscriptions/hook/deliveries?partition=0&offset=0",
            trusting.url
        )))
        .await;
        v["deliveries"]
            .as_array()
            .is_some_and(|d| d.iter().any(|a| a["outcome"] == "delivered"))
    })
    .await;
    assert_eq!(answered.load(Ordering::SeqCst), 1);

    // Without the CA file the endpoint's certificate is not trusted: the attempt is
    // logged with the TLS error, and nothing reaches the endpoint.
    let mut last = serde_json::Value::Null;
    wait_until("the failed attempt", Duration::from_secs(15), async || {
        let (_, v) = call(http().get(format!(
            "{}/v1/subscriptions/hook/deliveries?partition=0&offset=0",
            plain.url
        )))
        .await;
        last = v.clone();
        v["deliveries"].as_array().is_some_and(|d| !d.is_empty())
    })
    .await;
    let attempt = &last["deliveries"][0];
    assert_eq!(attempt["outcome"], "retry", "{last}");
    let error = attempt["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("TLS") && error.to_lowercase().contains("certificate"),
        "{last}"
    );
    assert_eq!(answered.load(Ordering::SeqCst), 1);
}
