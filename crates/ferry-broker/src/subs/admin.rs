//! The broker's subscription administration for front ends: create, update, pause,
//! delete, list and describe. Changes of settings are serialised by the broker's admin
//! lock and stored in `meta/subscriptions.json` before they take effect.

use super::config::{Mode, Position, SubscriptionConfig, SubscriptionSettings};
use super::status::SubscriptionStatus;
use super::subscription::Subscription;
use crate::broker::blocking;
use crate::error::{BrokerError, Result};
use crate::topic::Topic;
use crate::{now_ms, Broker};
use std::path::PathBuf;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::sync::Arc;
use std::time::Duration;

/// A new subscription's settings, checked, and where it starts.
pub(crate) fn new_config(
    s: &SubscriptionSettings,
    now: u64,
) -> Result<(SubscriptionConfig, Position)> {
    let config = SubscriptionConfig::from_settings(s, now)?;
    config.validate()?;
    let start = match &s.start {
        None => Position::Latest,
        Some(v) => Position::parse(v)?,
    };
    if let Position::PartitionOffset(..) = start {
        return Err(BrokerError::InvalidConfig(
            "start names one partition; a new subscription starts every partition: use {\"offset\": n}, then seek a single partition".into(),
        ));
    }
    Ok((config, start))
}

impl Broker {
    /// A subscription this node serves. In shared mode only while it holds the
    /// subscription's lease (front ends find the owner with
    /// [`Broker::subscription_owner`] first).
    pub(crate) fn subscription(&self, name: &str) -> Result<Arc<Subscription>> {
        let sub = self.subs.get(name)?;
        if let Some(sh) = &self.shared {
            if sh.leases.subscription_epoch(name).is_none() {
                return Err(BrokerError::Unavailable(format!(
                    "this node does not serve subscription '{name}' now: send the request again"
                )));
            }
        }
        Ok(sub)
    }

    /// The offset `pos` means in each partition of `topic` it names.
    pub(crate) async fn positions(&self, topic: &Topic, pos: Position) -> Result<Vec<(u32, u64)>> {
        let name = topic.config().name;
        let ends = self.partition_ends(&name);
        let mut out = Vec::new();
        for (id, &(earliest, latest)) in (0u32..).zip(ends.iter()) {
            let o = match pos {
                Position::Earliest => earliest,
                Position::Latest => latest,
                Position::Offset(o) => o.clamp(earliest, latest),
                Position::PartitionOffset(p, o) if p == id => o.clamp(earliest, latest),
                Position::PartitionOffset(..) => continue,
                Position::Timestamp(ts) => self.find_by_time(&name, id, ts).await?.offset(),
            };
            out.push((id, o));
        }
        if let Position::PartitionOffset(p, _) = pos {
            if out.is_empty() {
                return Err(BrokerError::PartitionNotFound {
                    topic: name,
                    partition: p,
                    count: ends.len() as u32,
                });
            }
        }
        Ok(out)
    }

    /// Creates the dead-letter topic a config names, when it is missing. Call under the
    /// admin lock.
    pub(crate) async fn ensure_dead_letter_topic(&self, config: &SubscriptionConfig) -> Result<()> {
        if config.max_deliveries == 0 {
            return Ok(());
        }
        let Some(dlq) = &config.dead_letter_topic else {
            return Ok(());
        };
        if self.topic(dlq).is_ok() {
            return Ok(());
        }
        self.create_topic_locked(
            dlq,
            crate::TopicSettings {
                partitions: Some(1),
                ..Default::default()
            },
        )
        .await?;
        Ok(())
    }

    /// Creates a subscription; its dead-letter topic is created when missing. A push
    /// endpoint is checked first; a signing secret generated here is in the status's
    /// `new_secret`, to be shown once.
    pub async fn create_subscription(
        &self,
        mut s: SubscriptionSettings,
    ) -> Result<SubscriptionStatus> {
        if self.is_shared() {
            return self.create_shared_subscription(s).await;
        }
        let secret = self.prepare_push(&mut s.push, None).await?;
        let now = now_ms();
        let (config, start) = new_config(&s, now)?;
        let name = config.name.clone();
        let _admin = self.admin.lock().await;
        if self.subs.get(&name).is_ok() {
            return Err(BrokerError::SubscriptionExists(name));
        }
        let topic = self.topic(&config.topic)?;
        self.ensure_dead_letter_topic(&config).await?;
        let starts = self.positions(&topic, start).await?;
        let dir = self.subs.dir.join(&name);
        let topic_name = config.topic.clone();
        let sub = blocking(move || Subscription::create(&dir, config, &starts, now)).await?;
        {
            let mut map = self.subs.lock_map();
            map.insert(name.clone(), Arc::new(sub));
            if let Err(e) = self.subs.save(&map) {
                map.remove(&name);
                return Err(e);
            }
        }
        tracing::info!(subscription = %name, topic = %topic_name, "Created subscription.");
        let mut status = self.describe_subscription(&name).await?;
        status.new_secret = secret;
        Ok(status)
    }

    /// Changes the settings that are present in `s`; name, topic, mode, start and
    /// ordering are fixed at creation. A new push endpoint is checked first; a push
    /// secret not given is kept (or generated, and shown once in `new_secret`).
    pub async fn update_subscription(
        &self,
        name: &str,
        mut s: SubscriptionSettings,
    ) -> Result<SubscriptionStatus> {
        let current = self.subscription_config(name)?;
        let secret = self
            .prepare_push(&mut s.push, current.push.as_ref())
            .await?;
        if s.name.is_some() || s.topic.is_some() || s.mode.is_some() || s.start.is_some() {
            return Err(BrokerError::InvalidConfig(
                "name, topic, mode and start cannot change; create a new subscription, or seek"
                    .into(),
            ));
        }
        let mut status = self
            .change_config(name, |config| {
                if s.ordering.is_some_and(|o| o != config.ordering) {
                    return Err(BrokerError::InvalidConfig(
                        "ordering cannot change after creation".into(),
                    ));
                }
                config.apply(&s)
            })
            .await?;
        status.new_secret = secret;
        Ok(status)
    }

    /// Pauses or resumes a subscription (push subscriptions send nothing while paused).
    pub async fn set_paused(&self, name: &str, paused: bool) -> Result<SubscriptionStatus> {
        self.change_config(name, |c| {
            if c.mode != Mode::Push {
                return Err(BrokerError::InvalidConfig(format!(
                    "subscription '{}' is a queue: consumers pause by not pulling; pause and resume are for push subscriptions",
                    c.name
                )));
            }
            c.paused = paused;
            Ok(())
        })
        .await
    }

    /// The one way a stored setting changes: under the admin lock, `change` edits a copy,
    /// the copy is validated, its dead-letter topic made when missing, and it is stored
    /// before it takes effect.
    pub(crate) async fn change_config(
        &self,
        name: &str,
        change: impl FnOnce(&mut SubscriptionConfig) -> Result<()>,
    ) -> Result<SubscriptionStatus> {
        let _admin = self.admin.lock().await;
        let sub = self.subscription(name)?;
        let mut config = sub.config();
        change(&mut config)?;
        let filter = config.validate()?;
        self.ensure_dead_letter_topic(&config).await?;
        if self.is_shared() {
            self.store_shared_config(&config).await?;
            sub.set_config(config, filter);
        } else {
            let map = self.subs.lock_map();
            let (old_config, old_filter) = sub.set_config(config, filter);
            if let Err(e) = self.subs.save(&map) {
                sub.set_config(old_config, old_filter);
                return Err(e);
            }
        }
        sub.changed.notify_waiters();
        self.describe_subscription(name).await
    }

    pub async fn delete_subscription(&self, name: &str) -> Result<()> {
        let _admin = self.admin.lock().await;
        self.delete_subscription_locked(name).await
    }

    pub(crate) async fn delete_subscription_locked(&self, name: &str) -> Result<()> {
        if self.is_shared() {
            return self.delete_shared_subscription(name).await;
        }
        let sub = {
            let mut map = self.subs.lock_map();
            let sub = map
                .remove(name)
                .ok_or_else(|| BrokerError::SubscriptionNotFound(name.to_string()))?;
            if let Err(e) = self.subs.save(&map) {
                map.insert(name.to_string(), sub);
                return Err(e);
            }
            sub
        };
        sub.deleted.store(true, AtomicOrdering::Release);
        sub.changed.notify_waiters();
        let dir = sub.dir.clone();
        blocking(move || {
            sub.close();
            std::fs::remove_dir_all(&dir)
                .map_err(|e| BrokerError::io(format!("removing {}", dir.display()), e))
        })
        .await?;
        tracing::info!(subscription = %name, "Deleted subscription.");
        Ok(())
    }

    /// Subscriptions of other topics that dead-letter into `topic`.
    pub(crate) fn dead_letter_users(&self, topic: &str) -> Vec<String> {
        self.subs
            .all()
            .iter()
            .map(|s| s.config())
            .filter(|c| c.topic != topic && c.dead_letter_topic.as_deref() == Some(topic))
            .map(|c| c.name)
            .collect()
    }

    /// Names of the subscriptions on a topic.
    pub(crate) fn subscriptions_of(&self, topic: &str) -> Vec<String> {
        self.subs
            .all()
            .iter()
            .map(|s| s.config())
            .filter(|c| c.topic == topic)
            .map(|c| c.name)
            .collect()
    }

    /// The subscriptions this node serves (every one, in the local mode).
    pub async fn list_subscriptions(&self) -> Vec<SubscriptionStatus> {
        let mut names: Vec<String> = self.subs.all().iter().map(|s| s.config().name).collect();
        names.sort();
        let mut out = Vec::new();
        for n in names {
            if let Ok(s) = self.describe_subscription(&n).await {
                out.push(s);
            }
        }
        out
    }

    pub async fn describe_subscription(&self, name: &str) -> Result<SubscriptionStatus> {
        let sub = self.subscription(name)?;
        let topic_name = sub.config().topic;
        let ends = self.partition_ends(&topic_name);
        // Off the async threads: a pull holds the subscription's lock while it reads.
        let s = Arc::clone(&sub);
        let (mut status, floors) = blocking(move || Ok(s.status(&ends))).await?;
        let now = now_ms() as i64;
        let mut min_ts: Option<i64> = None;
        for f in floors {
            let read =
                self.read_uncounted(&topic_name, f.partition, f.ack_floor, 1, 1, Duration::ZERO);
            if let Ok(r) = read.await {
                if let Some(rec) = r.records.first() {
                    min_ts = Some(min_ts.map_or(rec.timestamp, |m: i64| m.min(rec.timestamp)));
                }
            }
        }
        status.oldest_unacked_age_ms = min_ts.map(|t| now.saturating_sub(t).max(0) as u64);
        status.config.push = status.config.push.as_ref().map(|p| p.redacted());
        Ok(status)
    }

    pub fn subscription_config(&self, name: &str) -> Result<SubscriptionConfig> {
        Ok(self.subscription(name)?.config())
    }

    /// Settings of every push subscription.
    pub fn push_subscriptions(&self) -> Vec<SubscriptionConfig> {
        self.subs
            .all()
            .iter()
            .map(|s| s.config())
            .filter(|c| c.mode == Mode::Push)
            .collect()
    }

    /// The folder of a subscription's own files.
    pub fn subscription_dir(&self, name: &str) -> Result<PathBuf> {
        Ok(self.subscription(name)?.dir.clone())
    }
}
