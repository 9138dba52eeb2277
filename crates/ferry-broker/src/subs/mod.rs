//! Subscriptions: named, durable consumers of a topic that hand records out one lease
//! at a time, with acks, nacks, redelivery with backoff, dead letters, delays and
//! per-key ordering. A subscription is a view over the topic's log, never a copy.
//!
//! One role per file:
//! - [`config`]: limits, settings, their defaults and validation, start positions.
//! - [`state`]: the state machine of one subscription (pending records, acked ranges,
//!   delays), changed only by [`state::Event`]s.
//! - [`codec`], [`store`]: the journal, snapshots and delay files on disk.
//! - [`subscription`]: one open subscription: the state behind its lock, the journal
//!   written in the state's order, acks, nacks, extends, seeks and the periodic tick.
//! - [`pull`]: a pull in its steps: redeliver what is due, scan the heads, lease.
//! - [`lease`]: lease ids and their checks.
//! - [`status`]: the numbers `describe` shows.
//! - [`headers`]: the record headers Ferry reads and writes, and their rewriting.
//! - [`registry`]: every subscription of the broker and `meta/subscriptions.json`.
//! - [`admin`], [`consume`]: the broker's API for front ends (create, update, delete,
//!   describe; pull, ack, nack, extend, seek).
//! - [`dead_letter`]: writing records out of deliveries to the dead-letter topic,
//!   redrive and retry of single records.
//! - [`retry`], [`push`]: the retry policy and push (webhook) settings.
//! - [`push_api`]: push rules every front end shares (endpoint check, secrets) and the
//!   [`push_api::PushRuntime`] the webhook dispatcher registers.
//!
//! Time is an input: the methods that depend on it take `now` (ms since 1970), so
//! tests drive it (`tests/subscription_model.rs`).

pub mod admin;
pub mod codec;
pub mod config;
pub mod consume;
pub mod dead_letter;
pub mod headers;
pub mod lease;
pub mod pull;
pub mod push;
pub mod push_api;
pub mod registry;
pub mod retry;
pub mod state;
pub mod status;
pub mod store;
pub mod subscription;

pub use config::{
    check_timeout, KeyOrdering, Mode, Position, SubscriptionConfig, SubscriptionSettings,
    DELAY_MS_MAX, ERROR_BYTES_MAX, HELD_RECORDS_MAX, LEASES_PER_REQUEST_MAX, MAX_IN_FLIGHT_MAX,
    PULL_RECORDS_MAX, PULL_WAIT_MS_MAX, PUSH_CONSUMER, SCAN_RECORDS_MAX, VISIBILITY_TIMEOUT_MS_MAX,
    VISIBILITY_TIMEOUT_MS_MIN,
};
pub use headers::{
    HEADER_ATTEMPTS, HEADER_DELIVERY_HISTORY, HEADER_DELIVER_AT, HEADER_LAST_ERROR,
    HEADER_ORIGIN_OFFSET, HEADER_ORIGIN_PARTITION, HEADER_ORIGIN_SUBSCRIPTION, HEADER_ORIGIN_TOPIC,
    HEADER_REDRIVE_TO,
};
pub use pull::{Delivery, PullRequest};
pub use push_api::{generate_secret, PushMetrics, PushRuntime};
pub use registry::Subscriptions;
pub use status::{PartitionStatus, SubscriptionStatus};
pub use subscription::{Completion, Subscription};
