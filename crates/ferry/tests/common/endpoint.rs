//! A webhook endpoint for push tests: answers with scripted replies (a status,
//! `Retry-After`, a hang, a dropped connection), records every request, and can go
//! down and come back on the same port.
#![allow(dead_code)]

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub enum Reply {
    Status(u16),
    /// 429 with `Retry-After: <seconds>`.
    RetryAfter(u64),
    /// Answer 200 only after this long.
    Hang(Duration),
    /// Drop the connection without an answer.
    Reset,
    /// 302 to another place.
    Redirect,
    /// A redirect with this status to this location.
    RedirectTo(u16, String),
}

#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub method: String,
    /// The request's path: scripted replies answer `/hook`, every other path gets 200.
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// What it was answered (a status, 0 for a dropped connection).
    pub answered: u16,
}

#[derive(Default)]
pub struct Script {
    /// Replies for the next requests, in order; then `default`.
    pub next: VecDeque<Reply>,
    /// Replies by the record's `ferry-offset` header and attempt: `(offset, attempt)`.
    pub by_attempt: Vec<((u64, u32), Reply)>,
    pub default: Option<Reply>,
    /// Each request also takes this long.
    pub delay: Duration,
    /// Down: open connections are dropped too, not only new ones refused.
    pub down: bool,
}

pub struct Endpoint {
    pub addr: SocketAddr,
    pub script: Arc<Mutex<Script>>,
    pub received: Arc<Mutex<Vec<Received>>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

type Shared = (Arc<Mutex<Script>>, Arc<Mutex<Vec<Received>>>);

async fn handle(
    State((script, received)): State<Shared>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let offset: Option<u64> = headers
        .get("ferry-offset")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let attempt: Option<u32> = headers
        .get("ferry-attempt")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let (reply, delay) = {
        let mut s = script.lock().unwrap();
        if s.down {
            drop(s);
            panic!("endpoint is down: drops the connection");
        }
        let scripted = match (offset, attempt) {
            _ if path != "/hook" => Some(Reply::Status(200)),
            (Some(o), Some(a)) => s
                .by_attempt
                .iter()
                .find(|(k, _)| *k == (o, a))
                .map(|(_, r)| r.clone()),
            _ => None,
        };
        let r = scripted
            .or_else(|| s.next.pop_front())
            .or_else(|| s.default.clone())
            .unwrap_or(Reply::Status(200));
        (r, s.delay)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut rec = Received {
        at: Instant::now(),
        method: method.to_string(),
        path,
        headers,
        body,
        answered: 0,
    };
    let response = match reply {
        Reply::Status(s) => StatusCode::from_u16(s).unwrap().into_response(),
        Reply::RetryAfter(secs) => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", secs.to_string())],
            "slow down",
        )
            .into_response(),
        Reply::Hang(d) => {
            tokio::time::sleep(d).await;
            StatusCode::OK.into_response()
        }
        Reply::Redirect => (
            StatusCode::FOUND,
            [("location", "http://127.0.0.1:1/elsewhere")],
        )
            .into_response(),
        Reply::RedirectTo(status, location) => (
            StatusCode::from_u16(status).unwrap(),
            [("location", location)],
        )
            .into_response(),
        Reply::Reset => {
            received.lock().unwrap().push(rec);
            // Ends the connection's task: the client sees it closed without an answer.
            panic!("endpoint drops this connection on purpose");
        }
    };
    rec.answered = response.status().as_u16();
    received.lock().unwrap().push(rec);
    response
}

/// Keeps the endpoint's deliberate panics (dropped connections) out of the output.
fn quiet_deliberate_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = info
                .payload()
                .downcast_ref::<&str>()
                .copied()
                .unwrap_or_default();
            if !msg.starts_with("endpoint ") {
                default(info);
            }
        }));
    });
}

impl Endpoint {
    pub async fn start() -> Endpoint {
        quiet_deliberate_panics();
        let mut e = Endpoint {
            addr: "127.0.0.1:0".parse().unwrap(),
            script: Arc::new(Mutex::new(Script::default())),
            received: Arc::new(Mutex::new(Vec::new())),
            task: None,
        };
        e.up().await;
        e
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Starts listening (again, on the same port).
    pub async fn up(&mut self) {
        self.script.lock().unwrap().down = false;
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        self.addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .route("/hook", axum::routing::any(handle))
            .fallback(handle)
            .with_state((Arc::clone(&self.script), Arc::clone(&self.received)));
        self.task = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        }));
    }

    /// Stops listening: connections are refused.
    pub async fn down(&mut self) {
        self.script.lock().unwrap().down = true;
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn count_ok(&self) -> usize {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| (200..300).contains(&r.answered))
            .count()
    }

    /// Waits until `pred` holds for what was received.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&[Received]) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(&self.received.lock().unwrap()) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}
