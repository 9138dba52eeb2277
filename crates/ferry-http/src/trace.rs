//! Traces of HTTP requests: the request's `traceparent` header and the server spans of
//! produce, pull and ack (docs/operations.md lists them). With tracing off, the header
//! is not even looked at.

use crate::problem::Problem;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use ferry_trace::{attr, KeyValue, Span, SpanKind, Start, TraceParent};

/// The request's `traceparent` header, when tracing is on and the header is valid.
pub struct RequestTrace(pub Option<TraceParent>);

impl<S: Send + Sync> FromRequestParts<S> for RequestTrace {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        if !ferry_trace::enabled() {
            return Ok(RequestTrace(None));
        }
        Ok(RequestTrace(
            parts
                .headers
                .get("traceparent")
                .and_then(|v| TraceParent::parse(v.as_bytes())),
        ))
    }
}

impl RequestTrace {
    /// The server span of a request named `name` (`produce`, `lease`, `ack`): the child
    /// of the request's `traceparent` when it has one. `operation` is the messaging
    /// operation type (`send`, `receive`, `settle`); `destination_key` names what
    /// `destination` is (the topic, or the subscription).
    pub fn server_span(
        &self,
        name: &'static str,
        operation: &'static str,
        destination_key: &'static str,
        destination: &str,
    ) -> Span {
        if !ferry_trace::enabled() {
            return Span::OFF;
        }
        Span::start(Start {
            parent: self.0,
            attributes: vec![
                KeyValue::new(attr::MESSAGING_SYSTEM, attr::SYSTEM_FERRY),
                KeyValue::new(attr::OPERATION_TYPE, operation),
                KeyValue::new(attr::OPERATION_NAME, name),
                KeyValue::new(destination_key, destination.to_string()),
                KeyValue::new(attr::PROTOCOL, "http"),
            ],
            ..Start::new(name, SpanKind::Server)
        })
    }
}

/// Records a request's outcome on its span: the status, and the problem's type when it
/// failed.
pub fn finish<T>(span: &mut Span, result: &Result<T, Problem>) {
    if !span.is_on() {
        return;
    }
    match result {
        Ok(_) => span.set(attr::HTTP_STATUS, 200),
        Err(p) => {
            span.set(attr::HTTP_STATUS, i64::from(p.status.as_u16()));
            span.set(attr::ERROR_TYPE, p.slug);
            span.fail(&p.detail);
        }
    }
}
