//! The dispatcher as the broker's [`PushRuntime`]: the broker asks it to check push
//! endpoints and to describe its live state, without depending on this crate. It holds
//! the dispatchers weakly, so that the broker and the dispatchers do not keep each
//! other alive.

use crate::supervisor::{Dispatchers, EndpointError};
use ferry_broker::subs::PushRuntime;
use ferry_broker::{BrokerError, Result};
use serde_json::Value;
use std::future::Future;
use std::pin::Pin;
use std::sync::Weak;

pub(crate) struct Runtime(pub(crate) Weak<Dispatchers>);

impl PushRuntime for Runtime {
    fn check_endpoint<'a>(
        &'a self,
        url: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>> {
        Box::pin(async move {
            let Some(d) = self.0.upgrade() else {
                return Ok(());
            };
            d.check_endpoint(url).await.map_err(|e| match e {
                EndpointError::Invalid(m) => BrokerError::InvalidConfig(m),
                EndpointError::Forbidden(m) => BrokerError::PushEndpointForbidden(m),
            })
        })
    }

    fn live_status(&self, name: &str) -> Option<Value> {
        self.0.upgrade()?.status(name)
    }

    fn metrics(&self) -> Vec<ferry_broker::subs::PushMetrics> {
        self.0.upgrade().map(|d| d.metrics()).unwrap_or_default()
    }

    fn deliveries(
        &self,
        name: &str,
        record: Option<(u32, u64)>,
        limit: usize,
    ) -> Option<Vec<Value>> {
        self.0.upgrade()?.deliveries(name, record, limit)
    }
}
