//! Trace context for Ferry: W3C `traceparent` values ([`TraceParent`]) and the spans
//! Ferry exports when tracing is on ([`Span`]).
//!
//! The libraries use only the OpenTelemetry API; the binary installs the exporter
//! (`ferry serve --otlp-endpoint`) with [`install`]. docs/operations.md lists every span,
//! its attributes and its parent and links.
//!
//! # Cost when off
//!
//! Until [`install`] is called, [`enabled`] is one atomic load and every [`Span`] is an
//! empty `Option`: no span, no allocation, no clock read. Code that would do more than
//! that for tracing (looking up a header, adding one) checks [`enabled`] first.
//!
//! # Hostile input
//!
//! A `traceparent` comes from clients (an HTTP request header, a record header). It is
//! read only when it is at most [`TRACEPARENT_BYTES_MAX`] long, and every byte is checked
//! before it is used; anything else reads as no trace context, never as an error.

use opentelemetry::global::{BoxedSpan, BoxedTracer};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, Status, TraceContextExt as _, TraceFlags, TraceId, TraceState,
    Tracer as _,
};
use opentelemetry::Context;
use std::fmt;
use std::sync::OnceLock;
use std::time::SystemTime;

pub use opentelemetry::trace::SpanKind;
pub use opentelemetry::{KeyValue, StringValue, Value};

/// Longest `traceparent` value read; longer ones are ignored unread. Version 00 is 55
/// bytes; later versions may append fields after a `-`.
pub const TRACEPARENT_BYTES_MAX: usize = 512;

/// Most links one span gets (the other requests of a merged append, the records of a
/// pull); further ones are counted in the span's `ferry.links_dropped` attribute.
pub const SPAN_LINKS_MAX: usize = 32;

/// The length of a version 00 `traceparent`: `00-` trace id `-` span id `-` flags.
const TRACEPARENT_V0_BYTES: usize = 55;

/// A W3C trace context: the trace, the span that is the parent of what follows, and the
/// flags (bit 0: sampled). Both ids are non-zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    pub trace_id: u128,
    pub span_id: u64,
    pub flags: u8,
}

/// The value of one ASCII hex digit (either case).
fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// `digits` (at most 32 hex digits) as a number.
fn hex(digits: &[u8]) -> Option<u128> {
    debug_assert!(digits.len() <= 32);
    digits
        .iter()
        .try_fold(0u128, |n, &c| Some(n << 4 | u128::from(hex_digit(c)?)))
}

impl TraceParent {
    /// A trace context with these ids; `None` if either is zero (invalid in W3C).
    pub fn new(trace_id: u128, span_id: u64, flags: u8) -> Option<TraceParent> {
        (trace_id != 0 && span_id != 0).then_some(TraceParent {
            trace_id,
            span_id,
            flags,
        })
    }

    /// Parses a `traceparent` value as W3C Trace Context level 1 reads it: version 00 is
    /// exactly 55 bytes; a later version (not ff) is at least that and may carry more
    /// after a `-`; ids are hex and not all zero. Upper-case hex is accepted (and written
    /// back in lower case). Anything else, including values longer than
    /// [`TRACEPARENT_BYTES_MAX`], is `None`.
    pub fn parse(value: &[u8]) -> Option<TraceParent> {
        if !(TRACEPARENT_V0_BYTES..=TRACEPARENT_BYTES_MAX).contains(&value.len()) {
            return None;
        }
        if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
            return None;
        }
        let version = hex(&value[0..2])?;
        if version == 0xff {
            return None;
        }
        if version == 0 && value.len() != TRACEPARENT_V0_BYTES {
            return None;
        }
        if value.len() > TRACEPARENT_V0_BYTES && value[TRACEPARENT_V0_BYTES] != b'-' {
            return None;
        }
        let trace_id = hex(&value[3..35])?;
        let span_id = u64::try_from(hex(&value[36..52])?).ok()?;
        let flags = u8::try_from(hex(&value[53..55])?).ok()?;
        TraceParent::new(trace_id, span_id, flags)
    }

    /// Parses a header value given as text (see [`TraceParent::parse`]).
    pub fn parse_str(value: &str) -> Option<TraceParent> {
        TraceParent::parse(value.trim().as_bytes())
    }

    /// The trace is sampled (flags bit 0).
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    fn span_context(&self) -> SpanContext {
        SpanContext::new(
            TraceId::from(self.trace_id),
            SpanId::from(self.span_id),
            TraceFlags::new(self.flags),
            true,
            TraceState::NONE,
        )
    }

    fn of(sc: &SpanContext) -> Option<TraceParent> {
        if !sc.is_valid() {
            return None;
        }
        TraceParent::new(
            u128::from_be_bytes(sc.trace_id().to_bytes()),
            u64::from_be_bytes(sc.span_id().to_bytes()),
            sc.trace_flags().to_u8(),
        )
    }
}

/// The version 00 value, in lower case: `00-{trace id}-{span id}-{flags}`.
impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
    }
}

static TRACER: OnceLock<BoxedTracer> = OnceLock::new();

/// Turns tracing on for the rest of the process, with spans going to `tracer`. Only the
/// first call counts; it answers whether this one did.
pub fn install(tracer: BoxedTracer) -> bool {
    TRACER.set(tracer).is_ok()
}

/// Tracing is on: one atomic load.
#[inline]
pub fn enabled() -> bool {
    TRACER.get().is_some()
}

/// A span being recorded, or nothing when tracing is off. It ends when dropped (or at
/// [`Span::end`]), and is then queued for export; a full queue drops it.
#[must_use = "a span ends when dropped"]
pub struct Span(Option<BoxedSpan>);

/// What a span starts with; see [`Span::start`].
pub struct Start<'a> {
    pub name: &'static str,
    pub kind: SpanKind,
    /// The span's parent: a remote context (a `traceparent`) or another of Ferry's spans.
    pub parent: Option<TraceParent>,
    /// Other contexts this span is related to, at most [`SPAN_LINKS_MAX`] of them kept.
    pub links: &'a [TraceParent],
    pub attributes: Vec<KeyValue>,
    /// When the span started, if earlier than now.
    pub started: Option<SystemTime>,
}

impl Start<'_> {
    /// A span named `name` of this kind, with no parent, link or attribute.
    pub fn new(name: &'static str, kind: SpanKind) -> Start<'static> {
        Start {
            name,
            kind,
            parent: None,
            links: &[],
            attributes: Vec::new(),
            started: None,
        }
    }
}

impl Span {
    /// No span: what every span is when tracing is off.
    pub const OFF: Span = Span(None);

    /// Starts a span when tracing is on. Callers build `start` only after checking
    /// [`enabled`] when building it costs anything (attributes allocate).
    pub fn start(start: Start<'_>) -> Span {
        let Some(tracer) = TRACER.get() else {
            return Span::OFF;
        };
        let parent = match start.parent {
            Some(p) => Context::new().with_remote_span_context(p.span_context()),
            None => Context::new(),
        };
        let mut attributes = start.attributes;
        let wanted = start
            .links
            .iter()
            .filter(|l| Some(**l) != start.parent)
            .count();
        let links: Vec<opentelemetry::trace::Link> = start
            .links
            .iter()
            .filter(|l| Some(**l) != start.parent)
            .take(SPAN_LINKS_MAX)
            .map(|l| opentelemetry::trace::Link::with_context(l.span_context()))
            .collect();
        if wanted > links.len() {
            attributes.push(KeyValue::new(
                "ferry.links_dropped",
                (wanted - links.len()) as i64,
            ));
        }
        let mut builder = tracer
            .span_builder(start.name)
            .with_kind(start.kind)
            .with_attributes(attributes)
            .with_links(links);
        if let Some(t) = start.started {
            builder = builder.with_start_time(t);
        }
        let span = tracer.build_with_context(builder, &parent);
        // A provider shut down answers spans with an invalid context: treat as off.
        if span.span_context().is_valid() {
            Span(Some(span))
        } else {
            Span::OFF
        }
    }

    /// A span when tracing is on; see [`Span::start`].
    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// This span's own context, to be the parent of what follows (sent on as a
    /// `traceparent`): `None` when tracing is off.
    pub fn context(&self) -> Option<TraceParent> {
        self.0
            .as_ref()
            .and_then(|s| TraceParent::of(s.span_context()))
    }

    /// Sets an attribute (nothing when off).
    pub fn set(&mut self, key: &'static str, value: impl Into<Value>) {
        if let Some(s) = &mut self.0 {
            s.set_attribute(KeyValue::new(key, value));
        }
    }

    /// Links the span to `contexts` (the records it handled), at most
    /// [`SPAN_LINKS_MAX`] of them; the rest are counted in `ferry.links_dropped`.
    pub fn link_all(&mut self, contexts: impl IntoIterator<Item = TraceParent>) {
        let Some(s) = &mut self.0 else { return };
        let mut dropped = 0i64;
        for (i, c) in contexts.into_iter().enumerate() {
            if i < SPAN_LINKS_MAX {
                s.add_link(c.span_context(), Vec::new());
            } else {
                dropped += 1;
            }
        }
        if dropped > 0 {
            s.set_attribute(KeyValue::new("ferry.links_dropped", dropped));
        }
    }

    /// Marks the span failed, with why.
    pub fn fail(&mut self, why: impl fmt::Display) {
        if let Some(s) = &mut self.0 {
            s.set_status(Status::error(why.to_string()));
        }
    }

    /// Ends the span now (dropping it does the same).
    pub fn end(self) {}
}

/// Attribute names, from OpenTelemetry's semantic conventions where one fits, else
/// `ferry.*`. Listed with the spans in docs/operations.md.
pub mod attr {
    pub const MESSAGING_SYSTEM: &str = "messaging.system";
    pub const OPERATION_TYPE: &str = "messaging.operation.type";
    pub const OPERATION_NAME: &str = "messaging.operation.name";
    pub const DESTINATION: &str = "messaging.destination.name";
    pub const PARTITION: &str = "messaging.destination.partition.id";
    pub const MESSAGE_COUNT: &str = "messaging.batch.message_count";
    pub const SUBSCRIPTION: &str = "messaging.consumer.group.name";
    pub const OFFSET: &str = "messaging.kafka.offset";
    pub const PARTITIONS: &str = "ferry.partitions";
    pub const TOPICS: &str = "ferry.topics";
    pub const REQUESTS: &str = "ferry.requests";
    pub const BASE_OFFSET: &str = "ferry.base_offset";
    pub const END_OFFSET: &str = "ferry.end_offset";
    pub const PROTOCOL: &str = "ferry.protocol";
    pub const LEASES: &str = "ferry.leases";
    pub const SERVER_ADDRESS: &str = "server.address";
    pub const HTTP_STATUS: &str = "http.response.status_code";
    pub const PUSH_OUTCOME: &str = "ferry.push.outcome";
    pub const PUSH_ATTEMPT: &str = "ferry.push.attempt";
    pub const ERROR_TYPE: &str = "error.type";
    /// The value of [`MESSAGING_SYSTEM`].
    pub const SYSTEM_FERRY: &str = "ferry";
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_parses_and_prints_back_the_same() {
        let tp = TraceParent::parse(GOOD.as_bytes()).expect("valid");
        assert_eq!(tp.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(tp.span_id, 0x00f067aa0ba902b7);
        assert!(tp.sampled());
        assert_eq!(tp.to_string(), GOOD);
        let upper = GOOD.to_ascii_uppercase();
        assert_eq!(TraceParent::parse(upper.as_bytes()), Some(tp));
    }

    #[test]
    fn hostile_and_invalid_traceparents_are_ignored() {
        let zeros_trace = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
        let zeros_span = "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01";
        let version_ff = "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let v0_longer = format!("{GOOD}-extra");
        let plus_sign = "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let not_hex = "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01";
        let bad_dash = "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01";
        let huge = format!("01-{}", "a".repeat(10_000_000));
        let multibyte = "00-4bf92f3577b34da6a3ce929d0e0e47é-00f067aa0ba902b7-01";
        for bad in [
            "",
            "00",
            zeros_trace,
            zeros_span,
            version_ff,
            &v0_longer,
            plus_sign,
            not_hex,
            bad_dash,
            &huge,
            multibyte,
            &GOOD[..54],
        ] {
            assert_eq!(TraceParent::parse(bad.as_bytes()), None, "{bad:.80}");
        }
    }

    #[test]
    fn a_later_version_may_carry_more_fields_after_a_dash() {
        let v1 = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-next";
        let tp = TraceParent::parse(v1.as_bytes()).expect("valid");
        assert_eq!(tp.to_string(), GOOD);
        let glued = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x";
        assert_eq!(TraceParent::parse(glued.as_bytes()), None);
    }

    #[test]
    fn spans_are_off_until_a_tracer_is_installed() {
        assert!(!enabled());
        let mut span = Span::start(Start::new("produce", SpanKind::Server));
        assert!(!span.is_on());
        span.set(attr::DESTINATION, "orders");
        assert_eq!(span.context(), None);
    }

    proptest! {
        #[test]
        fn any_bytes_parse_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
            if let Some(tp) = TraceParent::parse(&bytes) {
                prop_assert!(tp.trace_id != 0 && tp.span_id != 0);
                prop_assert_eq!(TraceParent::parse(tp.to_string().as_bytes()), Some(tp));
            }
        }

        #[test]
        fn printed_contexts_parse_back(trace in 1u128.., span in 1u64.., flags in any::<u8>()) {
            let tp = TraceParent::new(trace, span, flags).expect("non-zero");
            prop_assert_eq!(TraceParent::parse(tp.to_string().as_bytes()), Some(tp));
        }
    }
}
