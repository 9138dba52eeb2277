//! Times each HTTP request into its method's, route's and status class's histogram.

use super::{Metrics, RequestLabels};
use axum::extract::{MatchedPath, Request};
use axum::response::Response;
use std::sync::Arc;
use std::time::Instant;

/// Measures each request by its route (the pattern it matched, never the raw path, so
/// that names in paths add no series). A tower layer rather than a `from_fn`
/// middleware: it wraps the route's service without boxing anything per request.
#[derive(Clone)]
pub struct MeasureLayer(pub Option<Arc<Metrics>>);

impl<S> tower_layer::Layer<S> for MeasureLayer {
    type Service = Measure<S>;
    fn layer(&self, inner: S) -> Measure<S> {
        Measure {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Measure<S> {
    inner: S,
    metrics: Option<Arc<Metrics>>,
}

impl<S> tower_service::Service<Request> for Measure<S>
where
    S: tower_service::Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Measured<S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let pending = self.metrics.as_ref().map(|m| {
            let route = req
                .extensions()
                .get::<MatchedPath>()
                .map_or("unmatched", |p| p.as_str())
                .to_string();
            (
                Arc::clone(m),
                method_label(req.method()),
                route,
                Instant::now(),
            )
        });
        Measured {
            inner: self.inner.call(req),
            pending,
        }
    }
}

pin_project_lite::pin_project! {
    /// A request's answer on its way, timed until it is ready.
    pub struct Measured<F> {
        #[pin]
        inner: F,
        pending: Option<(Arc<Metrics>, &'static str, String, Instant)>,
    }
}

impl<F, E> std::future::Future for Measured<F>
where
    F: std::future::Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let answer = std::task::ready!(this.inner.poll(cx));
        if let (Some((metrics, method, route, started)), Ok(response)) =
            (this.pending.take(), &answer)
        {
            let status_class = match response.status().as_u16() / 100 {
                1 => "1xx",
                2 => "2xx",
                3 => "3xx",
                4 => "4xx",
                _ => "5xx",
            };
            metrics
                .http
                .requests
                .get_or_create(&RequestLabels {
                    method,
                    route,
                    status_class,
                })
                .observe(started.elapsed().as_secs_f64());
        }
        std::task::Poll::Ready(answer)
    }
}

/// The method as a label: the standard ones by name, any other as `OTHER` (methods are
/// client input; they must not add series).
fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}
