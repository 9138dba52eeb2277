//! Ferry's webhook dispatcher: the consumer of push subscriptions. For each push
//! subscription a task leases records (as a queue consumer named `ferry-push`), calls
//! the endpoint with each, and acks, retries or dead-letters by the answer. A circuit
//! breaker per endpoint stops calls while it is sick; records wait on disk meanwhile.
//!
//! One role per file:
//! - `runtime`: the dispatcher as the broker's `PushRuntime` (endpoint checks and live
//!   state asked for by the broker).
//! - [`supervisor`]: [`Dispatchers`], one dispatcher per push subscription (started and
//!   stopped with the subscriptions), endpoint checks, status and delivery-log queries.
//! - `dispatcher`: one subscription's dispatcher, the state its tasks share and its
//!   counters.
//! - `pull`: the pull loop, topping up the queue of records waiting for a sender.
//! - `sender`: the sender tasks (one request at a time each), paced by the rate limit.
//! - `wait`: the breaker waits before each request, keeping the record's lease.
//! - `flush`: the flush loop, batching acks and delivery-log writes.
//! - `deliver`: one delivery in its steps (send, classify, decide, settle, log).
//! - [`outcome`]: typed outcomes of an attempt and the decision they lead to (ack,
//!   retry, dead-letter), with the delivery log's text for them.
//! - `request`: request building (the endpoint, headers, signatures).
//! - `cloudevents`: request bodies (raw or CloudEvents) and CloudEvents attributes.
//! - `trace`: the `traceparent` header.
//! - [`conn`]: the HTTP client (one connection per sender, TLS, redirects).
//! - [`breaker`]: the circuit breaker.
//! - [`sign`]: Standard Webhooks signatures.
//! - [`guard`]: refusing private and special addresses (server-side request forgery).
//! - [`dlog`]: the delivery log of attempts.

pub mod breaker;
mod cloudevents;
pub mod conn;
mod deliver;
mod dispatcher;
pub mod dlog;
mod flush;
pub mod guard;
pub mod outcome;
mod pull;
mod request;
mod runtime;
mod sender;
pub mod sign;
pub mod supervisor;
mod trace;
mod wait;

pub use outcome::{parse_retry_after, RESPONSE_EXCERPT_BYTES, RETRY_AFTER_MS_MAX};
pub use pull::CONSUMER;
pub use supervisor::{Dispatchers, EndpointError};
