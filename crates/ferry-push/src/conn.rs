//! The dispatcher's HTTP client. Each sender owns one HTTP/1.1 connection (hyper's
//! connection API) and drives it inside its own task: a delivery's request, answer and
//! body never cross to another task, and nothing is looked up in a shared pool. A
//! connection is made on first use (the address guard checks every resolved address),
//! kept while the endpoint keeps it alive, and dropped after a timeout, an error or a
//! body too long to read to its end.

use crate::guard::Guard;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Body as _;
use hyper::client::conn::http1::{Connection, SendRequest};
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};

/// The longest a connection may take to open (within the request's timeout).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Redirects followed in a row, at most.
pub const REDIRECTS_MAX: usize = 5;
/// Bytes of a response body read, at most; a longer body closes the connection.
pub const BODY_READ_MAX: usize = 64 * 1024;

/// A stream a connection runs on: TCP, or TLS over TCP.
trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

type Io = TokioIo<Box<dyn Stream>>;

/// Where requests go: an `http` or `https` URL's origin and its request target.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub url: url::Url,
    tls: bool,
    host: url::Host<String>,
    port: u16,
    /// The `host` header: the host, and the port when it is not the scheme's default.
    host_header: HeaderValue,
    /// Path and query, the request line's target.
    target: Uri,
}

impl Endpoint {
    pub fn new(url: url::Url) -> Result<Endpoint, String> {
        let tls = match url.scheme() {
            "http" => false,
            "https" => true,
            s => return Err(format!("the scheme {s:?} is not http or https")),
        };
        let host = url.host().ok_or("the URL has no host")?.to_owned();
        let port = url.port_or_known_default().ok_or("the URL has no port")?;
        let host_str = url.host_str().unwrap_or_default();
        let host_header = match url.port() {
            Some(p) => HeaderValue::try_from(format!("{host_str}:{p}")),
            None => HeaderValue::try_from(host_str),
        }
        .map_err(|e| format!("the host cannot be sent: {e}"))?;
        let mut target = url.path().to_string();
        if let Some(q) = url.query() {
            target.push('?');
            target.push_str(q);
        }
        let target = Uri::try_from(target).map_err(|e| format!("the path cannot be sent: {e}"))?;
        Ok(Endpoint {
            tls,
            host,
            port,
            host_header,
            target,
            url,
        })
    }

    /// The `host` header value requests to this endpoint carry.
    pub fn host_header(&self) -> &HeaderValue {
        &self.host_header
    }

    fn same_origin(&self, other: &Endpoint) -> bool {
        self.tls == other.tls && self.host == other.host && self.port == other.port
    }

    /// The literal address of the URL's host, if it is one.
    pub fn literal_ip(&self) -> Option<IpAddr> {
        match &self.host {
            url::Host::Ipv4(a) => Some((*a).into()),
            url::Host::Ipv6(a) => Some((*a).into()),
            url::Host::Domain(_) => None,
        }
    }
}

/// What opens connections: the address guard and the TLS settings.
pub struct Connector {
    guard: Arc<Guard>,
    tls: Option<tokio_rustls::TlsConnector>,
    /// Why `https` cannot be used, when the TLS settings could not be made.
    tls_error: Option<String>,
}

impl Connector {
    /// A connector that verifies servers' certificates with the system's trust store.
    pub fn new(guard: Arc<Guard>) -> Connector {
        Self::with_extra_roots(guard, Vec::new())
    }

    /// A connector that verifies servers' certificates with the system's trust store
    /// and the authorities `extra_roots` (`--push-ca-file`).
    pub fn with_extra_roots(
        guard: Arc<Guard>,
        extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
    ) -> Connector {
        let cfg = client_builder().and_then(|b| {
            let verifier = rustls_platform_verifier::Verifier::new_with_extra_roots(
                extra_roots,
                Arc::new(rustls::crypto::ring::default_provider()),
            )?;
            Ok(b.dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier)))
        });
        match cfg {
            Ok(b) => Self::with_tls(guard, b.with_no_client_auth()),
            Err(e) => Connector {
                guard,
                tls: None,
                tls_error: Some(format!("TLS is not available: {e}")),
            },
        }
    }

    /// A connector with the TLS settings given (tests trust their own authority).
    pub fn with_tls(guard: Arc<Guard>, mut cfg: rustls::ClientConfig) -> Connector {
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Connector {
            guard,
            tls: Some(tokio_rustls::TlsConnector::from(Arc::new(cfg))),
            tls_error: None,
        }
    }

    /// Addresses of the endpoint that the guard allows.
    async fn addresses(&self, ep: &Endpoint) -> Result<Vec<SocketAddr>, Failure> {
        let addrs: Vec<SocketAddr> = match &ep.host {
            url::Host::Ipv4(a) => vec![SocketAddr::new((*a).into(), ep.port)],
            url::Host::Ipv6(a) => vec![SocketAddr::new((*a).into(), ep.port)],
            url::Host::Domain(name) => tokio::net::lookup_host((name.as_str(), ep.port))
                .await
                .map_err(|e| Failure::Connect(format!("{name} does not resolve: {e}")))?
                .collect(),
        };
        let mut why = None;
        let allowed: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|a| match self.guard.refuses(a.ip()) {
                None => true,
                Some(w) => {
                    why.get_or_insert(w);
                    false
                }
            })
            .collect();
        if allowed.is_empty() {
            return Err(Failure::Connect(
                why.unwrap_or_else(|| format!("{} has no address", ep.host)),
            ));
        }
        Ok(allowed)
    }

    async fn connect(&self, ep: &Endpoint) -> Result<Conn, Failure> {
        let mut last = None;
        let mut tcp = None;
        for a in self.addresses(ep).await? {
            match tokio::net::TcpStream::connect(a).await {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = Some(format!("{a}: {e}")),
            }
        }
        let tcp = tcp.ok_or_else(|| Failure::Connect(last.unwrap_or_default()))?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Stream> = if ep.tls {
            let tls = self
                .tls
                .as_ref()
                .ok_or_else(|| Failure::Connect(self.tls_error.clone().unwrap_or_default()))?;
            let name = match &ep.host {
                url::Host::Domain(d) => rustls::pki_types::ServerName::try_from(d.clone()),
                url::Host::Ipv4(a) => Ok(rustls::pki_types::ServerName::IpAddress(
                    IpAddr::from(*a).into(),
                )),
                url::Host::Ipv6(a) => Ok(rustls::pki_types::ServerName::IpAddress(
                    IpAddr::from(*a).into(),
                )),
            }
            .map_err(|e| Failure::Connect(format!("not a TLS server name: {e}")))?;
            Box::new(
                tls.connect(name, tcp)
                    .await
                    .map_err(|e| Failure::Connect(format!("TLS handshake failed: {e}")))?,
            )
        } else {
            Box::new(tcp)
        };
        let (send, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Failure::Connect(describe(&e)))?;
        Ok(Conn {
            ep: ep.clone(),
            send,
            drive: Box::pin(conn),
            ended: false,
        })
    }
}

/// The start of a TLS client configuration, with Ferry's crypto provider (ring) named
/// here rather than installed for the whole process.
fn client_builder(
) -> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>, rustls::Error> {
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
}

/// One open connection: the handle requests are sent on and the connection itself,
/// which is polled only while a request of this connection is under way.
struct Conn {
    ep: Endpoint,
    send: SendRequest<Full<Bytes>>,
    drive: Pin<Box<Connection<Io, Full<Bytes>>>>,
    /// The connection has ended (it is not polled again, nor used for another request).
    ended: bool,
}

/// Why a request got no answer.
#[derive(Debug)]
pub enum Failure {
    Timeout,
    Connect(String),
    Request(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Timeout => f.write_str("timed out: no complete answer within push.timeout_ms"),
            Failure::Connect(why) => write!(f, "could not connect: {why}"),
            Failure::Request(why) => write!(f, "request failed: {why}"),
        }
    }
}

/// An answer: its status and headers, and the first bytes of its body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A request to send: everything but the endpoint.
pub struct Call {
    pub method: Method,
    pub headers: HeaderMap,
    pub body: Bytes,
}

fn describe(e: &hyper::Error) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    msg
}

/// Runs `fut` while driving the connection. Err when the connection ended first and
/// `fut` is not done even then.
///
/// An endpoint may close the connection right after a complete answer (HTTP/1.0,
/// `Connection: close`, a body delimited by the close), and the connection can read
/// that answer and reach its end in one poll: what it handed over (the answer, the
/// rest of the body) is still there, so `fut` is polled once more before the end of the
/// connection counts. A connection that ended is not polled again.
async fn driving<T>(
    drive: &mut Pin<Box<Connection<Io, Full<Bytes>>>>,
    ended: &mut bool,
    fut: impl Future<Output = T>,
) -> Result<T, Option<hyper::Error>> {
    let mut fut = std::pin::pin!(fut);
    let mut why = None;
    if !*ended {
        why = tokio::select! {
            biased;
            r = &mut fut => return Ok(r),
            r = drive.as_mut() => r.err(),
        };
        *ended = true;
    }
    match std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await {
        Poll::Ready(r) => Ok(r),
        Poll::Pending => Err(why),
    }
}

/// A sender's connection slot: empty until the first request, and again after a failure.
#[derive(Default)]
pub struct Slot {
    conn: Option<Conn>,
}

impl Slot {
    /// Sends `call` to `ep` and reads the answer (its body up to [`BODY_READ_MAX`]
    /// bytes), all within `timeout`. With `follow_redirects`, follows up to
    /// [`REDIRECTS_MAX`] redirects.
    pub async fn call(
        &mut self,
        connector: &Connector,
        ep: &Endpoint,
        call: Call,
        timeout: Duration,
        follow_redirects: bool,
    ) -> Result<Answer, Failure> {
        let deadline = Instant::now() + timeout;
        let answer = tokio::time::timeout_at(
            deadline.into(),
            self.call_once(connector, ep, &call, deadline),
        )
        .await;
        let answer = match answer {
            Ok(a) => a?,
            Err(_) => {
                // A request cut short leaves the connection in an unknown state.
                self.conn = None;
                return Err(Failure::Timeout);
            }
        };
        if !follow_redirects {
            return Ok(answer);
        }
        self.follow(connector, ep, call, answer, deadline).await
    }

    async fn follow(
        &mut self,
        connector: &Connector,
        ep: &Endpoint,
        mut call: Call,
        mut answer: Answer,
        deadline: Instant,
    ) -> Result<Answer, Failure> {
        let mut at = ep.clone();
        let mut hops = 0;
        while is_followed(answer.status) {
            if hops == REDIRECTS_MAX {
                return Err(Failure::Request(format!(
                    "more than {REDIRECTS_MAX} redirects"
                )));
            }
            hops += 1;
            let location = answer
                .headers
                .get(http::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| {
                    Failure::Request(format!("HTTP {} without a usable location", answer.status))
                })?;
            let next = at
                .url
                .join(location)
                .map_err(|e| Failure::Request(format!("redirect to {location:?}: {e}")))
                .and_then(|u| Endpoint::new(u).map_err(Failure::Request))?;
            if let Some(why) = next.literal_ip().and_then(|ip| connector.guard.refuses(ip)) {
                return Err(Failure::Connect(why));
            }
            redirect(&mut call, answer.status, &at, &next);
            at = next;
            // Each hop gets a connection of its own; the slot keeps the endpoint's.
            let mut hop = Slot::default();
            answer = match tokio::time::timeout_at(
                deadline.into(),
                hop.call_once(connector, &at, &call, deadline),
            )
            .await
            {
                Ok(a) => a?,
                Err(_) => return Err(Failure::Timeout),
            };
        }
        Ok(answer)
    }

    async fn call_once(
        &mut self,
        connector: &Connector,
        ep: &Endpoint,
        call: &Call,
        deadline: Instant,
    ) -> Result<Answer, Failure> {
        if self
            .conn
            .as_ref()
            .is_some_and(|c| !c.ep.same_origin(ep) || c.ended || c.send.is_closed())
        {
            self.conn = None;
        }
        if let Some(conn) = self.conn.as_mut() {
            match exchange(conn, request(ep, call)).await {
                Ok(answer) => return Ok(self.keep_if(answer)),
                Err(e) => {
                    self.conn = None;
                    // A kept connection the endpoint closed while it was idle: the
                    // request is sent once more on a new one.
                    if !e.retry_on_new {
                        return Err(Failure::Request(e.why));
                    }
                }
            }
        }
        let open = tokio::time::timeout_at(
            deadline.min(Instant::now() + CONNECT_TIMEOUT).into(),
            connector.connect(ep),
        )
        .await
        .map_err(|_| Failure::Connect("timed out".into()))??;
        let conn = self.conn.insert(open);
        match exchange(conn, request(ep, call)).await {
            Ok(answer) => Ok(self.keep_if(answer)),
            Err(e) => {
                self.conn = None;
                Err(Failure::Request(e.why))
            }
        }
    }

    /// Drops the connection unless the answer left it ready for the next request.
    fn keep_if(&mut self, (answer, reusable): (Answer, bool)) -> Answer {
        if !reusable {
            self.conn = None;
        }
        answer
    }
}

/// The HTTP request of `call` to `ep`.
/// Rewrites a request for the next hop of a redirect (`status`, from `at` to `next`):
/// `303`, and `301`/`302` after a POST, become a GET without a body; credentials stay
/// with their origin.
fn redirect(call: &mut Call, status: StatusCode, at: &Endpoint, next: &Endpoint) {
    let to_get = status == StatusCode::SEE_OTHER
        || (call.method == Method::POST
            && matches!(status, StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND));
    if to_get {
        call.method = Method::GET;
        call.body = Bytes::new();
        for h in [http::header::CONTENT_TYPE, http::header::CONTENT_ENCODING] {
            call.headers.remove(h);
        }
    }
    if !next.same_origin(at) {
        for h in [
            http::header::AUTHORIZATION,
            http::header::COOKIE,
            http::header::PROXY_AUTHORIZATION,
        ] {
            call.headers.remove(h);
        }
    }
    call.headers
        .insert(http::header::HOST, next.host_header.clone());
}

fn request(ep: &Endpoint, call: &Call) -> Request<Full<Bytes>> {
    let mut req = Request::new(Full::new(call.body.clone()));
    *req.method_mut() = call.method.clone();
    *req.uri_mut() = ep.target.clone();
    *req.headers_mut() = call.headers.clone();
    req
}

/// 3xx answers that lead somewhere (not 300 Multiple Choices, not 304 Not Modified).
fn is_followed(s: StatusCode) -> bool {
    matches!(s.as_u16(), 301 | 302 | 303 | 307 | 308)
}

struct ExchangeError {
    why: String,
    /// The request was not sent (or not answered at all) on a kept connection.
    retry_on_new: bool,
}

/// One request and its answer on `conn`. Also says whether the connection can be
/// used again.
async fn exchange(
    conn: &mut Conn,
    req: Request<Full<Bytes>>,
) -> Result<(Answer, bool), ExchangeError> {
    let closed = |e: Option<hyper::Error>| ExchangeError {
        retry_on_new: true,
        why: e.map_or_else(
            || "the endpoint closed the connection".to_string(),
            |e| describe(&e),
        ),
    };
    match driving(&mut conn.drive, &mut conn.ended, conn.send.ready()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(closed(Some(e))),
        Err(e) => return Err(closed(e)),
    }
    let pending = conn.send.send_request(req);
    let resp = match driving(&mut conn.drive, &mut conn.ended, pending).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            return Err(ExchangeError {
                retry_on_new: e.is_canceled() || e.is_incomplete_message(),
                why: describe(&e),
            })
        }
        Err(e) => return Err(closed(e)),
    };
    let (parts, mut body) = resp.into_parts();
    let mut buf: Vec<u8> = Vec::new();
    let read = async {
        while buf.len() < BODY_READ_MAX {
            match body.frame().await {
                None => return true,
                Some(Ok(f)) => {
                    if let Ok(d) = f.into_data() {
                        let take = d.len().min(BODY_READ_MAX - buf.len());
                        buf.extend_from_slice(&d[..take]);
                    }
                }
                Some(Err(_)) => return false,
            }
        }
        // Read to the limit: an empty end of stream may still be pending.
        body.is_end_stream()
    };
    let complete = driving(&mut conn.drive, &mut conn.ended, read)
        .await
        .unwrap_or(false);
    // An answer is that answer whether the connection stays open after it or not; only
    // a connection that is still open and read to the end of the answer is used again.
    let reusable = complete && !conn.ended;
    Ok((
        Answer {
            status: parts.status,
            headers: parts.headers,
            body: Bytes::from(buf),
        },
        reusable,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn endpoints_carry_their_origin_and_target() {
        let e = Endpoint::new("http://example.com/a/b?x=1".parse().unwrap()).unwrap();
        assert_eq!(e.host_header, "example.com");
        assert_eq!(e.target, "/a/b?x=1");
        assert_eq!(e.port, 80);
        let e = Endpoint::new("https://[::1]:8443".parse().unwrap()).unwrap();
        assert_eq!(e.host_header, "[::1]:8443");
        assert_eq!(e.target, "/");
        assert!(e.tls);
        assert_eq!(e.literal_ip(), Some("::1".parse().unwrap()));
        assert!(Endpoint::new("ftp://example.com/".parse().unwrap()).is_err());
        let a = Endpoint::new("http://h:1/x".parse().unwrap()).unwrap();
        let b = Endpoint::new("http://h:1/y".parse().unwrap()).unwrap();
        let c = Endpoint::new("https://h:1/x".parse().unwrap()).unwrap();
        assert!(a.same_origin(&b));
        assert!(!a.same_origin(&c));
    }

    /// A TLS server for `localhost` that answers every request 200 with `hello`; counts
    /// the connections it accepts.
    async fn tls_server() -> (
        u16,
        rustls::pki_types::CertificateDer<'static>,
        Arc<AtomicUsize>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let cert = ck.cert.der().clone();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        // One request: its head, then a body of content-length bytes.
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
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
                        if tls.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (port, cert, accepted)
    }

    fn post(ep: &Endpoint) -> Call {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::HOST, ep.host_header().clone());
        Call {
            method: Method::POST,
            headers,
            body: Bytes::from_static(b"{}"),
        }
    }

    #[tokio::test]
    async fn https_endpoints_are_verified_and_their_connection_kept() {
        let (port, cert, accepted) = tls_server().await;
        let guard = Arc::new(Guard {
            allow_private: true,
            allow_networks: vec![],
        });
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let trusting = Connector::with_tls(
            Arc::clone(&guard),
            client_builder()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        );
        let ep = Endpoint::new(format!("https://localhost:{port}/hook").parse().unwrap()).unwrap();
        let mut slot = Slot::default();
        for _ in 0..3 {
            let a = slot
                .call(&trusting, &ep, post(&ep), Duration::from_secs(5), false)
                .await
                .unwrap();
            assert_eq!(a.status, StatusCode::OK);
            assert_eq!(&a.body[..], b"hello");
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "one connection for every request"
        );
        // A certificate no one vouches for is refused.
        let strict = Connector::new(Arc::clone(&guard));
        let err = Slot::default()
            .call(&strict, &ep, post(&ep), Duration::from_secs(5), false)
            .await
            .unwrap_err();
        assert!(matches!(err, Failure::Connect(_)), "{err}");
        // Without the operator's consent, loopback is not called at all.
        let guarded = Connector::new(Arc::new(Guard::default()));
        let err = Slot::default()
            .call(&guarded, &ep, post(&ep), Duration::from_secs(5), false)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("loopback"), "{err}");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn only_redirects_with_a_location_are_followed() {
        for s in [301, 302, 303, 307, 308] {
            assert!(is_followed(StatusCode::from_u16(s).unwrap()));
        }
        for s in [200, 300, 304, 404] {
            assert!(!is_followed(StatusCode::from_u16(s).unwrap()));
        }
    }
}
