//! Shared mode: a request for a subscription that another node serves, or for a
//! consumer group another node coordinates, is passed on to that node, so that clients
//! and load balancers may send any request to any node.
//!
//! The request goes on as it came (method, path, query, headers, body), marked with
//! [`FORWARDED`] so that it is passed on once at most; the answer comes back as the
//! owner gave it, streamed (long polls and event streams included). The owner checks
//! the caller's credentials itself.

use crate::problem::Problem;
use crate::AppState;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use ferry_broker::shared_subs::Owner;
use std::sync::OnceLock;
use std::time::Duration;

/// Marks a request one node passed on to another, with the passing node's id; such a
/// request is answered where it arrives, never passed on again.
pub const FORWARDED: &str = "ferry-forwarded-by";

/// Headers of one connection, not of the request (RFC 9110, section 7.6.1).
fn hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::HOST
        || name == header::CONTENT_LENGTH
        || name == header::TRANSFER_ENCODING
        || name == header::TE
        || name == header::TRAILER
        || name == header::UPGRADE
        || name == header::PROXY_AUTHORIZATION
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

/// The TLS settings nodes pass requests on to each other with, when they serve HTTP
/// over TLS (set once, at start, before any request; unset: plain HTTP).
static PEER_TLS: OnceLock<rustls::ClientConfig> = OnceLock::new();

/// Passes requests on to other nodes over HTTPS, verifying them with `config`: for a
/// node that serves HTTP over TLS, as every node of a cluster then does. Call it before
/// serving; later calls change nothing.
pub fn use_tls_between_nodes(mut config: rustls::ClientConfig) {
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let _ = PEER_TLS.set(config);
}

/// `https` when nodes speak TLS to each other, else `http`.
fn scheme() -> &'static str {
    if PEER_TLS.get().is_some() {
        "https"
    } else {
        "http"
    }
}

fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(30));
        if let Some(tls) = PEER_TLS.get() {
            builder = builder.tls_backend_preconfigured(tls.clone());
        }
        builder.build().unwrap_or_else(|e| {
            tracing::error!(error = %e, "Cannot build the client that passes requests on to other nodes; they will fail.");
            reqwest::Client::default()
        })
    })
}

/// What a request is about, when one node serves it in shared mode.
#[derive(Debug, PartialEq, Eq)]
enum Served {
    Subscription(String),
    Group(String),
}

/// The subscription (`/v1/subscriptions/{name}` and below) or consumer group
/// (`/v1/groups/{group}`) a path names, decoded.
fn served_in(path: &str) -> Option<Served> {
    let (rest, group) = match path.strip_prefix("/v1/subscriptions/") {
        Some(rest) => (rest, false),
        None => (path.strip_prefix("/v1/groups/")?, true),
    };
    let raw = rest.split('/').next().filter(|n| !n.is_empty())?;
    let name = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .ok()?
        .into_owned();
    Some(if group {
        Served::Group(name)
    } else {
        Served::Subscription(name)
    })
}

/// Where a request must be answered: here (the request comes back), or elsewhere
/// (the answer of the node that serves the subscription it names, or why none could).
/// A request another node passed on is answered here or refused, never passed on
/// again: the nodes disagreed on the owner for a moment (one died, or a lease moved),
/// and the client's next try finds it.
pub(crate) async fn pass_on(state: &AppState, req: Request) -> Result<Response, Request> {
    if !state.broker.is_shared() {
        return Err(req);
    }
    let Some(served) = served_in(req.uri().path()) else {
        return Err(req);
    };
    let forwarded = req.headers().contains_key(FORWARDED);
    let (owner, name) = match served {
        Served::Subscription(name) => (state.broker.subscription_owner(&name).await, name),
        Served::Group(name) => (state.broker.group_owner(&name).await, name),
    };
    match owner {
        Ok(Owner::Here) => Err(req),
        // The route's handler gives the usual answer.
        Err(ferry_broker::error::BrokerError::SubscriptionNotFound(_)) => Err(req),
        Err(e) => Ok(Problem::from(e).into_response()),
        Ok(Owner::Node { node_id, .. }) if forwarded => Ok(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Partition unavailable",
            format!("'{name}' is served by node {node_id}, which is changing: try again shortly"),
        )
        .into_response()),
        Ok(Owner::Node { node_id, http_addr }) => {
            let by = state.broker.shared_node_id().unwrap_or(0);
            Ok(send(req, &http_addr, node_id, by, state.max_request_bytes).await)
        }
    }
}

/// Sends `req` to node `node_id` at `addr` (on behalf of node `by`) and answers with
/// what it answered.
pub(crate) async fn send(
    req: Request,
    addr: &str,
    node_id: i32,
    by: i32,
    max_body: usize,
) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, max_body).await else {
        return Problem::too_large(max_body).into_response();
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut out = client().request(parts.method, format!("{}://{addr}{path}", scheme()));
    for (name, value) in &parts.headers {
        if !hop_by_hop(name) {
            out = out.header(name, value);
        }
    }
    let answer = out.header(FORWARDED, by).body(body).send().await;
    match answer {
        Ok(answer) => {
            let status = answer.status();
            let mut headers = HeaderMap::new();
            for (name, value) in answer.headers() {
                if !hop_by_hop(name) {
                    headers.append(name.clone(), value.clone());
                }
            }
            let mut response = Response::new(Body::from_stream(answer.bytes_stream()));
            *response.status_mut() = status;
            *response.headers_mut() = headers;
            response
        }
        Err(e) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Partition unavailable",
            format!("node {node_id}, which serves this, did not answer at {addr}: {e}; try again shortly"),
        )
        .into_response(),
    }
}

/// Fetches a description from the node that serves it, as JSON: `collection` is
/// `subscriptions` or `groups`.
pub(crate) async fn describe_at(
    state: &AppState,
    addr: &str,
    collection: &str,
    name: &str,
    headers: &HeaderMap,
) -> Option<serde_json::Value> {
    let by = state.broker.shared_node_id().unwrap_or(0);
    let encoded =
        percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC).to_string();
    let mut out = client().get(format!("{}://{addr}/v1/{collection}/{encoded}", scheme()));
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        out = out.header(header::AUTHORIZATION, auth);
    }
    let answer = out
        .header(FORWARDED, by)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    if !answer.status().is_success() {
        return None;
    }
    answer.json().await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subscription_or_group_a_path_names_is_found_and_decoded() {
        assert_eq!(
            served_in("/v1/subscriptions/work/pull"),
            Some(Served::Subscription("work".into()))
        );
        assert_eq!(
            served_in("/v1/subscriptions/a%20b"),
            Some(Served::Subscription("a b".into()))
        );
        assert_eq!(
            served_in("/v1/groups/g.1"),
            Some(Served::Group("g.1".into()))
        );
        assert_eq!(served_in("/v1/subscriptions"), None);
        assert_eq!(served_in("/v1/subscriptions/"), None);
        assert_eq!(served_in("/v1/groups"), None);
        assert_eq!(served_in("/v1/topics/t"), None);
        assert_eq!(served_in("/v1/groups/%FF"), None, "not UTF-8");
    }
}
