//! The supervisor: [`Dispatchers`] keeps one dispatcher running per push subscription
//! (started for new ones, stopped for deleted ones), trims their delivery logs, checks
//! endpoints for the HTTP API and answers its status and delivery-log questions.

use crate::conn::Connector;
use crate::dispatcher::Dispatcher;
use crate::dlog::DeliveryLog;
use crate::guard::Guard;
use ferry_broker::Broker;
use ferry_log::sync::lock;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// Every push subscription's dispatcher.
pub struct Dispatchers {
    pub(crate) broker: Arc<Broker>,
    pub(crate) guard: Arc<Guard>,
    pub(crate) connector: Connector,
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
    /// subscriptions. HTTPS endpoints are trusted when the system's authorities or
    /// `extra_roots` vouch for them.
    pub fn start(
        broker: Arc<Broker>,
        guard: Guard,
        extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
    ) -> anyhow::Result<Arc<Dispatchers>> {
        let guard = Arc::new(guard);
        let d = Arc::new(Dispatchers {
            connector: Connector::with_extra_roots(Arc::clone(&guard), extra_roots),
            broker,
            guard,
            running: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&d);
        d.broker
            .set_push_runtime(Arc::new(crate::runtime::Runtime(Weak::clone(&weak))));
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
                d.stop();
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
            let d = Arc::new(Dispatcher::new(c.name.clone(), push.breaker, log));
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
        Some(d.status())
    }

    /// What `/metrics` shows of each running dispatcher, by subscription name.
    pub fn metrics(&self) -> Vec<ferry_broker::subs::PushMetrics> {
        let running: Vec<_> = lock(&self.running).values().cloned().collect();
        let mut out: Vec<_> = running.iter().map(|d| d.metrics()).collect();
        out.sort_by(|a, b| a.subscription.cmp(&b.subscription));
        out
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
}
