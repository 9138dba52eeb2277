//! Ferry's webhook dispatcher: the consumer of push subscriptions. For each push
//! subscription a task leases records (as a queue consumer named `ferry-push`), calls
//! the endpoint with each, and acks, retries or dead-letters by the answer. A circuit
//! breaker per endpoint stops calls while it is sick; records wait on disk meanwhile.
//!
//! - [`breaker`]: the circuit breaker.
//! - [`sign`]: Standard Webhooks signatures.
//! - [`guard`]: refusing private and special addresses (server-side request forgery).
//! - [`dlog`]: the delivery log of attempts.

pub mod breaker;
pub mod conn;
pub mod dlog;
pub mod guard;
pub mod sign;

use breaker::{Breaker, BreakerState, Permit};
use bytes::Bytes;
use conn::{Call, Connector, Endpoint, Slot};
use dlog::{Attempt, DeliveryLog};
use ferry_broker::subs::push::{Payload, PushConfig, PushMethod};
use ferry_broker::subs::{Delivery, PullRequest, SubscriptionConfig};
use ferry_broker::{now_ms, Broker, BrokerError};
use ferry_log::batch::RECORD_ATTR_JSON_VALUE;
use guard::Guard;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use rand::Rng;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The consumer name the dispatcher pulls as.
pub const CONSUMER: &str = ferry_broker::subs::PUSH_CONSUMER;
/// Records pulled ahead of their requests, at most.
const PREFETCH_MAX: usize = 1000;
/// Bytes of a response body kept in the delivery log.
pub const RESPONSE_EXCERPT_BYTES: usize = 1024;
/// Longest wait a `Retry-After` may ask for before the retry policy's cap applies.
pub const RETRY_AFTER_MS_MAX: u64 = 24 * 3600 * 1000;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Debug, Default)]
struct Stats {
    delivered: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    last_status: AtomicU32,
    last_error: Mutex<Option<String>>,
}

struct Dispatcher {
    name: String,
    breaker: Mutex<Breaker>,
    log: DeliveryLog,
    in_flight: AtomicU32,
    done: tokio::sync::Notify,
    stop: AtomicBool,
    /// Every sender has stopped: the flusher may end once it has flushed.
    finished: AtomicBool,
    stats: Stats,
    next_send: tokio::sync::Mutex<Instant>,
    /// Leases of delivered records, acked by the flusher in one batch.
    pending_acks: Mutex<Vec<String>>,
    /// Attempts for the delivery log, written by the flusher in one batch.
    pending_log: Mutex<Vec<Attempt>>,
}

/// Every push subscription's dispatcher.
pub struct Dispatchers {
    broker: Arc<Broker>,
    guard: Arc<Guard>,
    connector: Connector,
    running: Mutex<HashMap<String, Arc<Dispatcher>>>,
}

/// Why an endpoint cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Forbidden(String),
}

impl Dispatchers {
    /// Starts the dispatchers and a task that keeps them in step with the broker's push
    /// subscriptions.
    pub fn start(broker: Arc<Broker>, guard: Guard) -> anyhow::Result<Arc<Dispatchers>> {
        let guard = Arc::new(guard);
        let d = Arc::new(Dispatchers {
            connector: Connector::new(Arc::clone(&guard)),
            broker,
            guard,
            running: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&d);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            let mut last_trim = Instant::now();
            loop {
                tick.tick().await;
                let Some(d) = weak.upgrade() else { return };
                d.sync();
                if last_trim.elapsed() > Duration::from_secs(60) {
                    last_trim = Instant::now();
                    d.trim_logs();
                }
            }
        });
        Ok(d)
    }

    /// Checks an endpoint URL: it parses, and its host is not refused (literal addresses
    /// and every address its name resolves to now).
    pub async fn check_endpoint(&self, url: &str) -> Result<(), EndpointError> {
        let u = url::Url::parse(url.trim())
            .map_err(|e| EndpointError::Invalid(format!("push.url {url:?} is not a URL: {e}")))?;
        if !matches!(u.scheme(), "http" | "https") {
            return Err(EndpointError::Invalid(format!(
                "push.url {url:?} must be http or https"
            )));
        }
        let host = u
            .host()
            .ok_or_else(|| EndpointError::Invalid(format!("push.url {url:?} has no host")))?;
        let ips: Vec<std::net::IpAddr> = match host {
            url::Host::Ipv4(a) => vec![a.into()],
            url::Host::Ipv6(a) => vec![a.into()],
            url::Host::Domain(name) => {
                match tokio::net::lookup_host((name, u.port_or_known_default().unwrap_or(80))).await
                {
                    Ok(addrs) => addrs.map(|a| a.ip()).collect(),
                    // A name that does not resolve yet is the endpoint's business;
                    // it is checked again at every connection.
                    Err(_) => Vec::new(),
                }
            }
        };
        for ip in ips {
            if let Some(why) = self.guard.refuses(ip) {
                return Err(EndpointError::Forbidden(format!("push.url {url:?}: {why}")));
            }
        }
        Ok(())
    }

    /// Starts dispatchers for new push subscriptions and stops those of deleted ones.
    fn sync(self: &Arc<Self>) {
        let configs = self.broker.push_subscriptions();
        let mut running = lock(&self.running);
        running.retain(|name, d| {
            let keep = configs.iter().any(|c| &c.name == name);
            if !keep {
                d.stop.store(true, Ordering::Release);
                d.done.notify_waiters();
            }
            keep
        });
        for c in configs {
            if running.contains_key(&c.name) {
                continue;
            }
            let Some(push) = &c.push else { continue };
            let dir = match self.broker.subscription_dir(&c.name) {
                Ok(d) => d,
                Err(_) => continue,
            };
            let log = match DeliveryLog::open(&dir) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(subscription = %c.name, error = %e, "Could not open the delivery log.");
                    continue;
                }
            };
            let d = Arc::new(Dispatcher {
                name: c.name.clone(),
                breaker: Mutex::new(Breaker::new(push.breaker, now_ms())),
                log,
                in_flight: AtomicU32::new(0),
                done: tokio::sync::Notify::new(),
                stop: AtomicBool::new(false),
                finished: AtomicBool::new(false),
                stats: Stats::default(),
                next_send: tokio::sync::Mutex::new(Instant::now()),
                pending_acks: Mutex::new(Vec::new()),
                pending_log: Mutex::new(Vec::new()),
            });
            running.insert(c.name.clone(), Arc::clone(&d));
            let this = Arc::clone(self);
            tokio::spawn(async move { this.run(d).await });
            tracing::info!(subscription = %c.name, url = %push.url, "Started push delivery.");
        }
    }

    fn trim_logs(&self) {
        let running: Vec<Arc<Dispatcher>> = lock(&self.running).values().cloned().collect();
        for d in running {
            if let Ok(c) = self.broker.subscription_config(&d.name) {
                if let Some(p) = c.push {
                    d.log.trim(p.delivery_log_retention_ms);
                }
            }
        }
    }

    /// The dispatcher's live state for a subscription's status.
    pub fn status(&self, name: &str) -> Option<Value> {
        let d = lock(&self.running).get(name).cloned()?;
        let b = lock(&d.breaker);
        let (calls, failures) = b.window();
        Some(json!({
            "breaker": b.state(),
            "breaker_changed_at": b.changed_at,
            "window_calls": calls,
            "window_failures": failures,
            "in_flight": d.in_flight.load(Ordering::Acquire),
            "delivered": d.stats.delivered.load(Ordering::Relaxed),
            "retried": d.stats.retried.load(Ordering::Relaxed),
            "dead_lettered": d.stats.dead_lettered.load(Ordering::Relaxed),
            "last_status": match d.stats.last_status.load(Ordering::Relaxed) { 0 => Value::Null, s => json!(s) },
            "last_error": lock(&d.stats.last_error).clone(),
        }))
    }

    /// Attempts from the delivery log, newest first.
    pub fn deliveries(
        &self,
        name: &str,
        record: Option<(u32, u64)>,
        limit: usize,
    ) -> Option<Vec<Value>> {
        let d = lock(&self.running).get(name).cloned()?;
        Some(d.log.list(record, limit))
    }

    async fn run(self: Arc<Self>, d: Arc<Dispatcher>) {
        let flusher = tokio::spawn(Arc::clone(&self).flush_loop(Arc::clone(&d)));
        // Pulled records wait here for a sender; `concurrency` sender tasks take them
        // one at a time, so at most that many requests are in flight.
        // Each sender waits on the queue by itself (no lock around it): a record
        // goes to whichever sender is free, without a hand-over from one to the next.
        let (tx, rx) = async_channel::bounded::<(Arc<Target>, Delivery)>(PREFETCH_MAX);
        let wanted = Arc::new(AtomicU32::new(0));
        let alive = Arc::new(AtomicU32::new(0));
        let mut senders = Vec::new();
        // The queue's size and refill step under the settings last read, and when.
        let mut last: Option<(u32, u32, Instant)> = None;
        loop {
            if d.stop.load(Ordering::Acquire) {
                break;
            }
            // Wait for room in the queue. Settings are read again only once there is
            // room or every 100 ms, not after every delivery.
            if let Some((depth, step, read_at)) = last {
                let done = d.done.notified();
                tokio::pin!(done);
                done.as_mut().enable();
                let queued = tx.len() as u32;
                if queued + step > depth && read_at.elapsed() < Duration::from_millis(100) {
                    let _ = tokio::time::timeout(Duration::from_millis(20), done).await;
                    continue;
                }
            }
            let Ok(cfg) = self.broker.subscription_config(&d.name) else {
                break;
            };
            let Some(push) = cfg.push.clone() else { break };
            lock(&d.breaker).set_config(push.breaker);
            wanted.store(push.concurrency, Ordering::Release);
            while alive.load(Ordering::Acquire) < push.concurrency {
                let id = alive.fetch_add(1, Ordering::AcqRel);
                senders.push(tokio::spawn(Arc::clone(&self).sender(
                    Arc::clone(&d),
                    id,
                    rx.clone(),
                    Arc::clone(&wanted),
                    Arc::clone(&alive),
                )));
            }
            senders.retain(|t| !t.is_finished());
            if cfg.paused {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            // Pull ahead of the requests in flight, so that one pull (one journal append)
            // serves many deliveries, but keep the queue short: about eight rounds of
            // requests (a second's worth when rate-limited), so that leases stay short
            // and a pause, an open breaker or new settings apply soon. The queue is
            // topped up whenever a quarter of it has gone, so that it never runs dry
            // while a pull is under way.
            let mut depth = (push.concurrency * 8).clamp(64, PREFETCH_MAX as u32);
            if let Some(rate) = push.rate_limit_per_s {
                depth = depth.min(rate.max(1));
            }
            let step = (depth / 4).max(1);
            last = Some((depth, step, Instant::now()));
            let queued = tx.len() as u32;
            if queued + step > depth {
                continue;
            }
            let room = depth - queued;
            let now = now_ms();
            let (permit, change) = lock(&d.breaker).fetch(room, queued, now);
            log_change(&d.name, change);
            let n = match permit {
                Permit::Send(n) => n,
                Permit::WaitUntil(t) => {
                    let nap = t.saturating_sub(now).clamp(10, 200);
                    let _ =
                        tokio::time::timeout(Duration::from_millis(nap), d.done.notified()).await;
                    continue;
                }
            };
            let req = PullRequest {
                consumer: Arc::from(CONSUMER),
                max_records: n as usize,
                wait: Duration::from_millis(500),
                // Covers the wait in the queue and the request itself.
                visibility_timeout_ms: Some(
                    ((u64::from(depth / push.concurrency) + 1) * push.timeout_ms
                        + push
                            .rate_limit_per_s
                            .map_or(0, |r| u64::from(depth) * 1000 / u64::from(r.max(1)))
                        + 10_000)
                        .min(ferry_broker::subs::VISIBILITY_TIMEOUT_MS_MAX),
                ),
            };
            match self.broker.pull(&d.name, req).await {
                Ok(got) => {
                    if got.is_empty() {
                        continue;
                    }
                    // Settings as they are now (a secret may have rotated meanwhile).
                    let target = match self.broker.subscription_config(&d.name) {
                        Ok(c) if c.push.is_some() => Arc::new(self.target(c)),
                        _ => break,
                    };
                    for x in got {
                        if tx.send((Arc::clone(&target), x)).await.is_err() {
                            break;
                        }
                    }
                }
                Err(BrokerError::SubscriptionNotFound(_)) => break,
                Err(e) => {
                    tracing::warn!(subscription = %d.name, error = %e, "Push pull failed.");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        // Senders drop what is queued and stop when the queue is closed.
        d.stop.store(true, Ordering::Release);
        drop(tx);
        drop(rx);
        for t in senders {
            let _ = t.await;
        }
        d.finished.store(true, Ordering::Release);
        let _ = flusher.await;
        d.log.close();
        tracing::info!(subscription = %d.name, "Stopped push delivery.");
    }

    /// One sender: takes queued records and delivers them one at a time. Senders above
    /// the wanted number stop, so that a lower `concurrency` takes effect.
    async fn sender(
        self: Arc<Self>,
        d: Arc<Dispatcher>,
        id: u32,
        rx: Queue,
        wanted: Arc<AtomicU32>,
        alive: Arc<AtomicU32>,
    ) {
        // This sender's connection to the endpoint, kept between deliveries.
        let mut slot = Slot::default();
        loop {
            if id >= wanted.load(Ordering::Acquire) {
                break;
            }
            let Ok((target, mut delivery)) = rx.recv().await else {
                break;
            };
            // The breaker is asked before every request: while it is open, or its
            // probes are out, the record waits here (its lease kept) instead of going.
            if !self.wait_for_breaker(&d, &target, &mut delivery).await {
                continue;
            }
            // Not sent: the subscription is going away, or the lease ran out while the
            // record waited (it is delivered again; an ack would be refused).
            if d.stop.load(Ordering::Acquire) || now_ms() + 1000 >= delivery.lease_expires_ms {
                continue;
            }
            if let Some(rate) = target.cfg.push.as_ref().and_then(|p| p.rate_limit_per_s) {
                let slot = {
                    let mut next = d.next_send.lock().await;
                    let slot = (*next).max(Instant::now());
                    *next = slot + Duration::from_secs_f64(1.0 / f64::from(rate));
                    slot
                };
                tokio::time::sleep_until(slot.into()).await;
            }
            d.in_flight.fetch_add(1, Ordering::AcqRel);
            self.deliver(&d, &target, delivery, &mut slot).await;
            d.in_flight.fetch_sub(1, Ordering::AcqRel);
            d.done.notify_waiters();
        }
        alive.fetch_sub(1, Ordering::AcqRel);
    }

    /// Waits until the breaker lets one request go. False when the subscription is
    /// going away meanwhile (the record is not sent; its lease runs out).
    async fn wait_for_breaker(&self, d: &Dispatcher, target: &Target, x: &mut Delivery) -> bool {
        loop {
            let now = now_ms();
            let (permit, change) = lock(&d.breaker).permit(1, now);
            log_change(&d.name, change);
            let until = match permit {
                Permit::Send(_) => return true,
                Permit::WaitUntil(t) => t,
            };
            if d.stop.load(Ordering::Acquire) {
                return false;
            }
            let nap = until.saturating_sub(now).clamp(10, 200);
            let timeout = target.cfg.push.as_ref().map_or(10_000, |p| p.timeout_ms);
            // Keep the lease for the wait and the request after it.
            if x.lease_expires_ms < now + nap + timeout + 5_000 {
                let keep = (until.saturating_sub(now) + timeout + 30_000)
                    .min(ferry_broker::subs::VISIBILITY_TIMEOUT_MS_MAX);
                match self
                    .broker
                    .extend(&d.name, vec![x.lease_id.clone()], keep as i64)
                    .await
                {
                    Ok(expires) => x.lease_expires_ms = expires,
                    // The lease is gone: the record comes again later.
                    Err(_) => return false,
                }
            }
            let _ = tokio::time::timeout(Duration::from_millis(nap), d.done.notified()).await;
        }
    }

    /// Acks delivered records and writes the delivery log in batches: one durable ack
    /// (one fsync) and one log append for everything that finished meanwhile.
    async fn flush_loop(self: Arc<Self>, d: Arc<Dispatcher>) {
        loop {
            // A fixed beat rather than a wake per delivery: one ack (one fsync) and one
            // log append cover every delivery that finished within it.
            tokio::time::sleep(Duration::from_millis(3)).await;
            let acks = std::mem::take(&mut *lock(&d.pending_acks));
            let attempts = std::mem::take(&mut *lock(&d.pending_log));
            for chunk in acks.chunks(ferry_broker::subs::LEASES_PER_REQUEST_MAX) {
                if let Err(e) = self.broker.ack_live(&d.name, chunk.to_vec()).await {
                    if matches!(e, BrokerError::SubscriptionNotFound(_)) {
                        break;
                    }
                    tracing::warn!(subscription = %d.name, error = %e, "Could not ack push deliveries; they will be delivered again.");
                }
            }
            if !attempts.is_empty() {
                d.log.append_all(&attempts);
            }
            if d.finished.load(Ordering::Acquire) && lock(&d.pending_acks).is_empty() {
                return;
            }
        }
    }

    /// Settings of a batch of deliveries, with the endpoint's URL parsed, the secrets'
    /// keys and the headers every request carries made once.
    fn target(&self, cfg: SubscriptionConfig) -> Target {
        let mut t = Target {
            endpoint: Err("not a push subscription".to_string()),
            headers: Vec::new(),
            custom: Vec::new(),
            signers: Vec::new(),
            previous: None,
            cfg,
        };
        let Some(p) = &t.cfg.push else { return t };
        t.endpoint = url::Url::parse(p.url.trim())
            .map_err(|e| format!("push.url does not parse: {e}"))
            .and_then(Endpoint::new)
            .and_then(|ep| {
                // Names are checked when connecting; literal addresses here.
                match ep.literal_ip().and_then(|ip| self.guard.refuses(ip)) {
                    Some(why) => Err(why),
                    None => Ok(ep),
                }
            });
        if let Ok(ep) = &t.endpoint {
            t.headers
                .push((http::header::HOST, ep.host_header().clone()));
        }
        // Checked when the subscription was made; one that does not convert is left out.
        for (k, v) in &p.headers {
            if let (Ok(k), Ok(v)) = (
                HeaderName::try_from(k.as_str()),
                HeaderValue::try_from(v.as_str()),
            ) {
                t.custom.push((k, v));
            }
        }
        // The subscription's own `user-agent` replaces Ferry's.
        let agent = match t
            .custom
            .iter()
            .position(|(k, _)| k == http::header::USER_AGENT)
        {
            Some(i) => t.custom.remove(i).1,
            None => HeaderValue::from_static(concat!("Ferry/", env!("CARGO_PKG_VERSION"))),
        };
        t.headers.push((http::header::USER_AGENT, agent));
        for (name, value) in [
            ("ferry-subscription", &t.cfg.name),
            ("ferry-topic", &t.cfg.topic),
        ] {
            if let Ok(v) = HeaderValue::try_from(value.as_str()) {
                t.headers.push((HeaderName::from_static(name), v));
            }
        }
        t.signers = p
            .secret
            .iter()
            .filter_map(|s| sign::Signer::new(s))
            .collect();
        if let (Some(prev), Some(until)) = (&p.previous_secret, p.previous_secret_expires_at_ms) {
            t.previous = sign::Signer::new(prev).map(|s| (s, until));
        }
        t
    }

    /// The request for one delivery: the target's headers and the record's own.
    fn request(&self, target: &Target, x: &Delivery, time: u64) -> Result<Call, String> {
        let cfg = &target.cfg;
        let push = cfg.push.as_ref().ok_or("not a push subscription")?;
        let r = &x.record;
        let id = format!("{}-{}-{}", cfg.name, x.partition, r.offset);
        let (body, content_type) = payload(cfg, push, x, &id);
        let ts = time / 1000;
        // Room for every header up front: growing the map costs more than the headers.
        let mut h = HeaderMap::with_capacity(32);
        for (k, v) in &target.headers {
            h.append(k.clone(), v.clone());
        }
        let value = |what: &str, v: String| {
            HeaderValue::try_from(v)
                .map_err(|_| format!("{UNSENDABLE}its {what} is not a header value"))
        };
        let previous = target.previous.as_ref().filter(|(_, until)| time < *until);
        let signature = sign::signature_header(
            target.signers.iter().chain(previous.map(|(s, _)| s)),
            &id,
            ts,
            &body,
        );
        h.append(
            http::header::CONTENT_TYPE,
            value("content type", content_type)?,
        );
        h.append(H_WEBHOOK_SIGNATURE, value("signature", signature)?);
        h.append(H_TRACEPARENT, value("traceparent", traceparent(r, &id))?);
        h.append(H_WEBHOOK_ID, value("id", id.clone())?);
        h.append(H_WEBHOOK_TIMESTAMP, HeaderValue::from(ts));
        h.append(H_FERRY_PARTITION, HeaderValue::from(x.partition));
        h.append(H_FERRY_OFFSET, HeaderValue::from(r.offset));
        h.append(H_FERRY_ATTEMPT, HeaderValue::from(x.attempt));
        if let Some(key) = r.key.as_deref().and_then(|k| std::str::from_utf8(k).ok()) {
            if key.bytes().all(|c| (b' '..=b'~').contains(&c)) {
                h.append(H_FERRY_KEY, value("key", key.to_string())?);
            }
        }
        if push.payload == Payload::CloudeventsBinary {
            for (k, v) in cloudevent_attributes(cfg, x, &id) {
                if let Some(s) = v.as_str() {
                    let name = HeaderName::try_from(format!("ce-{k}"))
                        .map_err(|_| format!("{UNSENDABLE}ce-{k} is not a header name"))?;
                    h.append(name, value(k, s.to_string())?);
                }
            }
        }
        for (k, v) in &target.custom {
            h.append(k.clone(), v.clone());
        }
        Ok(Call {
            method: match push.method {
                PushMethod::Post => http::Method::POST,
                PushMethod::Put => http::Method::PUT,
            },
            headers: h,
            body,
        })
    }

    async fn deliver(&self, d: &Dispatcher, target: &Target, x: Delivery, slot: &mut Slot) {
        let cfg = &target.cfg;
        let Some(push) = cfg.push.as_ref() else {
            return;
        };
        let started = Instant::now();
        let time = now_ms();
        let r = &x.record;
        let result = match &target.endpoint {
            Err(why) => Err(Refused(why.clone())),
            Ok(ep) => match self.request(target, &x, time) {
                Err(why) => Err(Refused(why)),
                Ok(call) => slot
                    .call(
                        &self.connector,
                        ep,
                        call,
                        Duration::from_millis(push.timeout_ms),
                        push.follow_redirects,
                    )
                    .await
                    .map_err(|f| Refused(f.to_string())),
            },
        };
        let mut attempt = Attempt {
            time,
            partition: x.partition,
            offset: r.offset as u64,
            attempt: x.attempt,
            outcome: String::new(),
            status: None,
            latency_ms: 0,
            error: None,
            response: None,
            retry_in_ms: None,
        };
        enum Next {
            Ack,
            Retry(Option<u64>),
            Cancel,
        }
        let next = match result {
            Ok(answer) => {
                let status = answer.status;
                attempt.status = Some(status.as_u16());
                d.stats
                    .last_status
                    .store(u32::from(status.as_u16()), Ordering::Relaxed);
                let retry_after = answer
                    .headers
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after);
                attempt.response = excerpt(&answer.body);
                if status.is_success() {
                    Next::Ack
                } else if status.is_server_error() || push.retry_statuses.contains(&status.as_u16())
                {
                    attempt.error = Some(format!("HTTP {status}"));
                    Next::Retry(retry_after.map(|ms| ms.min(cfg.retry.max_delay_ms)))
                } else {
                    attempt.error = Some(if status.is_redirection() {
                        format!("HTTP {status}: redirects are not followed (push.follow_redirects)")
                    } else {
                        format!("HTTP {status}: refused by the endpoint")
                    });
                    Next::Cancel
                }
            }
            // A request that cannot be built (a record Ferry cannot send as HTTP) is the
            // record's fault, not the endpoint's: dead-letter it.
            Err(Refused(why)) if why.starts_with(UNSENDABLE) => {
                attempt.error = Some(why);
                Next::Cancel
            }
            Err(Refused(why)) => {
                attempt.error = Some(why);
                Next::Retry(None)
            }
        };
        attempt.latency_ms = started.elapsed().as_millis() as u64;
        let ok_for_breaker = !matches!(next, Next::Retry(_));
        let change = lock(&d.breaker).record(ok_for_breaker, now_ms());
        log_change(&d.name, change);
        let lease_id = x.lease_id;
        let too_old = push
            .max_age_ms
            .is_some_and(|age| now_ms().saturating_sub(r.timestamp.max(0) as u64) > age);
        let outcome = match next {
            Next::Ack => {
                d.stats.delivered.fetch_add(1, Ordering::Relaxed);
                attempt.outcome = "delivered".into();
                lock(&d.pending_acks).push(lease_id);
                Ok(())
            }
            Next::Retry(_) if too_old => {
                d.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                attempt.outcome = "dead_letter".into();
                let why = format!(
                    "{}; older than push.max_age_ms",
                    attempt.error.clone().unwrap_or_default()
                );
                self.broker
                    .dead_letter_now(&cfg.name, vec![lease_id], why)
                    .await
                    .map(|_| ())
            }
            Next::Retry(delay) => {
                attempt.outcome = if cfg.max_deliveries > 0 && x.attempt >= cfg.max_deliveries {
                    d.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                    "dead_letter".into()
                } else {
                    d.stats.retried.fetch_add(1, Ordering::Relaxed);
                    "retry".into()
                };
                attempt.retry_in_ms = delay;
                self.broker
                    .nack(
                        &cfg.name,
                        vec![lease_id],
                        delay.map(|v| v.min(RETRY_AFTER_MS_MAX) as i64),
                        attempt.error.clone(),
                    )
                    .await
                    .map(|_| ())
            }
            Next::Cancel => {
                d.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                attempt.outcome = "dead_letter".into();
                self.broker
                    .dead_letter_now(
                        &cfg.name,
                        vec![lease_id],
                        attempt.error.clone().unwrap_or_default(),
                    )
                    .await
                    .map(|_| ())
            }
        };
        if let Some(e) = &attempt.error {
            *lock(&d.stats.last_error) = Some(e.clone());
        }
        if let Err(e) = outcome {
            // The lease ran out meanwhile: the record is delivered again.
            tracing::warn!(subscription = %cfg.name, offset = r.offset, error = %e, "Could not settle a push delivery.");
        }
        lock(&d.pending_log).push(attempt);
    }
}

fn log_change(name: &str, change: Option<(BreakerState, BreakerState)>) {
    if let Some((from, to)) = change {
        match to {
            BreakerState::Open => {
                tracing::warn!(subscription = %name, ?from, ?to, "Circuit breaker opened: the endpoint is failing; records wait on disk.")
            }
            _ => tracing::info!(subscription = %name, ?from, ?to, "Circuit breaker changed state."),
        }
    }
}

/// The settings a batch of deliveries is sent with.
struct Target {
    cfg: SubscriptionConfig,
    /// The endpoint, parsed and allowed; or why no request may be sent (a URL that does
    /// not parse, a refused literal address).
    endpoint: Result<Endpoint, String>,
    /// `host`, `user-agent` (Ferry's or the subscription's), `ferry-subscription`,
    /// `ferry-topic`.
    headers: Vec<(HeaderName, HeaderValue)>,
    /// The subscription's own headers, added after Ferry's.
    custom: Vec<(HeaderName, HeaderValue)>,
    /// The current secrets' keys.
    signers: Vec<sign::Signer>,
    /// The previous secret's key while it is still valid (until the time given).
    previous: Option<(sign::Signer, u64)>,
}

const H_WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
const H_WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
const H_WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");
const H_TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const H_FERRY_PARTITION: HeaderName = HeaderName::from_static("ferry-partition");
const H_FERRY_OFFSET: HeaderName = HeaderName::from_static("ferry-offset");
const H_FERRY_ATTEMPT: HeaderName = HeaderName::from_static("ferry-attempt");
const H_FERRY_KEY: HeaderName = HeaderName::from_static("ferry-key");

/// Records waiting for a sender, with the settings they were pulled under.
type Queue = async_channel::Receiver<(Arc<Target>, Delivery)>;

/// Marks an error of a request that could not be built.
const UNSENDABLE: &str = "cannot be sent as HTTP: ";

/// Why a request got no answer.
struct Refused(String);

/// The first bytes of a response body, for the delivery log.
fn excerpt(body: &[u8]) -> Option<String> {
    let b = &body[..body.len().min(RESPONSE_EXCERPT_BYTES)];
    (!b.is_empty()).then(|| String::from_utf8_lossy(b).into_owned())
}

/// `Retry-After` as milliseconds: delay-seconds or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<u64> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(secs.saturating_mul(1000));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    let ms = at
        .duration_since(std::time::SystemTime::now())
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Some(ms)
}

fn header_value<'a>(r: &'a ferry_log::Record, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|h| h.key.eq_ignore_ascii_case(name.as_bytes()))
        .and_then(|h| h.value.as_deref())
        .and_then(|v| std::str::from_utf8(v).ok())
}

thread_local! {
    /// Span ids need to be unique, not secret: a fast generator seeded once per thread.
    static SPAN_RNG: std::cell::RefCell<rand::rngs::SmallRng> =
        std::cell::RefCell::new(rand::SeedableRng::from_entropy());
}

/// The record's `traceparent` header when it has a valid one, else a new trace.
fn traceparent(r: &ferry_log::Record, id: &str) -> String {
    if let Some(tp) = header_value(r, "traceparent") {
        let parts: Vec<&str> = tp.split('-').collect();
        if parts.len() == 4
            && parts[0].len() == 2
            && parts[1].len() == 32
            && parts[2].len() == 16
            && parts[3].len() == 2
            && tp.bytes().all(|c| c == b'-' || c.is_ascii_hexdigit())
        {
            return tp.to_ascii_lowercase();
        }
    }
    // One trace per record, the same on every attempt; a new span per attempt.
    let mut trace: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    for b in id.as_bytes() {
        trace ^= u128::from(*b);
        trace = trace.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
    }
    let span: u64 = SPAN_RNG.with(|r| r.borrow_mut().gen::<u64>()).max(1);
    let mut tp = String::with_capacity(55);
    let _ = write!(tp, "00-{:032x}-{span:016x}-01", trace.max(1));
    tp
}

fn content_type(r: &ferry_log::Record) -> String {
    match header_value(r, "content-type") {
        Some(ct) if !ct.is_empty() && ct.bytes().all(|c| (b' '..=b'~').contains(&c)) => ct.into(),
        _ if r.attributes & RECORD_ATTR_JSON_VALUE != 0 => "application/json".into(),
        _ => "application/octet-stream".into(),
    }
}

fn cloudevent_attributes(
    cfg: &SubscriptionConfig,
    x: &Delivery,
    id: &str,
) -> Vec<(&'static str, Value)> {
    let r = &x.record;
    let mut a = vec![
        ("specversion", json!("1.0")),
        ("id", json!(id)),
        ("source", json!(format!("/ferry/topics/{}", cfg.topic))),
        (
            "type",
            json!(header_value(r, "ce-type")
                .filter(|t| !t.is_empty() && t.bytes().all(|c| (b' '..=b'~').contains(&c)))
                .unwrap_or("ferry.record")),
        ),
        ("time", json!(ferry_broker::time::rfc3339(r.timestamp))),
    ];
    if let Some(k) = r.key.as_deref().and_then(|k| std::str::from_utf8(k).ok()) {
        if k.bytes().all(|c| (b' '..=b'~').contains(&c)) {
            a.push(("subject", json!(k)));
        }
    }
    a
}

/// The request body and its content type.
fn payload(cfg: &SubscriptionConfig, push: &PushConfig, x: &Delivery, id: &str) -> (Bytes, String) {
    let r = &x.record;
    let value = r.value.clone().unwrap_or_default();
    match push.payload {
        Payload::Raw | Payload::CloudeventsBinary => (value, content_type(r)),
        Payload::CloudeventsStructured => {
            let mut ev = serde_json::Map::new();
            for (k, v) in cloudevent_attributes(cfg, x, id) {
                ev.insert(k.into(), v);
            }
            let ct = content_type(r);
            let is_json =
                r.attributes & RECORD_ATTR_JSON_VALUE != 0 || ct.starts_with("application/json");
            match serde_json::from_slice::<Value>(&value) {
                Ok(v) if is_json => {
                    ev.insert("datacontenttype".into(), json!(ct));
                    ev.insert("data".into(), v);
                }
                _ => {
                    use base64::Engine;
                    ev.insert("datacontenttype".into(), json!(ct));
                    ev.insert(
                        "data_base64".into(),
                        json!(base64::engine::general_purpose::STANDARD.encode(&value)),
                    );
                }
            }
            (
                Bytes::from(serde_json::to_vec(&Value::Object(ev)).unwrap_or_default()),
                "application/cloudevents+json".into(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        assert_eq!(parse_retry_after("3"), Some(3000));
        assert_eq!(parse_retry_after(" 0 "), Some(0));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(0));
        assert_eq!(parse_retry_after("soon"), None);
    }
}
