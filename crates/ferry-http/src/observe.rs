//! The outermost layer every request passes through: a panic in a handler is answered
//! with a 500 problem instead of a dropped connection, every 5xx answer is logged with
//! its method, path and cause, and the request is timed for `/metrics`.
//!
//! A tower layer rather than `from_fn` middlewares: those box the rest of the stack and
//! its future on every request; this one wraps the route's service and its future
//! without allocating, and holds the request's method and URI as cheap clones.

use crate::metrics::Metrics;
use crate::problem::{self, Problem};
use axum::extract::{MatchedPath, Request};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// See the module. `None` measures nothing (panics are still caught, 5xx still logged).
#[derive(Clone)]
pub struct ObserveLayer(pub Option<Arc<Metrics>>);

impl<S> tower_layer::Layer<S> for ObserveLayer {
    type Service = Observe<S>;
    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    metrics: Option<Arc<Metrics>>,
}

impl<S> tower_service::Service<Request> for Observe<S>
where
    S: tower_service::Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Observed<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let method = req.method().clone();
        let uri = req.uri().clone();
        // The route's pattern, never the raw path: names in paths add no series.
        let measured = self.metrics.as_ref().map(|m| {
            let route = req
                .extensions()
                .get::<MatchedPath>()
                .map_or("unmatched", |p| p.as_str())
                .to_string();
            (Arc::clone(m), route, Instant::now())
        });
        Observed {
            inner: self.inner.call(req),
            method,
            uri,
            measured,
        }
    }
}

pin_project_lite::pin_project! {
    /// A request's answer on its way.
    pub struct Observed<F> {
        #[pin]
        inner: F,
        method: Method,
        uri: Uri,
        measured: Option<(Arc<Metrics>, String, Instant)>,
    }
}

impl<F, E> Future for Observed<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let inner = this.inner;
        let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || inner.poll(cx)));
        let response = match polled {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(Err(e))) => return Poll::Ready(Err(e)),
            Ok(Poll::Ready(Ok(response))) => response,
            Err(panic) => panic_answer(panic.as_ref()),
        };
        let status = response.status();
        if status.is_server_error() {
            let cause = response
                .extensions()
                .get::<problem::ServerErrorCause>()
                .map_or("no cause recorded (not a problem answer)", |c| c.0.as_str());
            tracing::error!(
                method = %this.method,
                path = %this.uri.path(),
                status = status.as_u16(),
                cause,
                "HTTP request failed with a server error."
            );
        }
        if let Some((metrics, route, started)) = this.measured.take() {
            metrics.record_request(this.method, route, status, started.elapsed());
        }
        Poll::Ready(Ok(response))
    }
}

/// A 500 problem whose cause is the panic's message, so that it is logged like any other
/// 5xx instead of the connection closing with no answer and no cause in the log.
fn panic_answer(panic: &(dyn std::any::Any + Send)) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into());
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal-error",
        "Internal error",
        format!("the request met a bug in Ferry (a panic: {message})"),
    )
    .into_response()
}
