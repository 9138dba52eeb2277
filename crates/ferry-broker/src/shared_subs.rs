//! Queue subscriptions in shared mode: each is served by one node at a time, the holder
//! of its lease row in Postgres, and its whole state lives in Postgres.
//!
//! - The settings are a row every node reads ([`ferry_shared::Meta::subscriptions`]).
//! - The state (snapshot, journal of events, delayed records) is written by the owner
//!   through [`PgStore`], the Postgres implementation of [`SubscriptionStore`], under
//!   the lease's epoch: once another node took the lease, the old owner's writes are
//!   refused and its copy stops.
//! - The owner is the live holder of the lease, else the live node rendezvous hashing
//!   picks (as for consumer groups); that node takes the lease at the subscription's
//!   first request and loads the state. Any node answers any request: the HTTP front
//!   end passes requests for a subscription owned elsewhere on to its owner
//!   ([`Broker::subscription_owner`]).
//! - Records are read from the shared log: a pull reads under the subscription's lock,
//!   as in the local mode, through [`SharedSource`].
//! - A node whose beats fail, or that finds at a beat that a lease moved, lets its
//!   subscriptions go (see [`crate::shared_groups`]); leases not yet answered for come
//!   back as records ready again, delivered again by the next owner: at least once.

use crate::broker::blocking;
use crate::error::{BrokerError, Result};
use crate::partition::ReadRecords;
use crate::shared::from_shared;
use crate::shared_groups::pick;
use crate::subs::codec::{self, DelayEntry};
use crate::subs::config::{SubscriptionConfig, SubscriptionSettings};
use crate::subs::pull::Source;
use crate::subs::state::{bucket_of, Event};
use crate::subs::store::{Snapshot, SubscriptionStore};
use crate::subs::subscription::{first_snapshot, Subscription};
use crate::subs::SubscriptionStatus;
use crate::{now_ms, Broker};
use ferry_log::batch::DecodeLimits;
use ferry_log::sync::lock;
use ferry_shared::{Lease, LeaseHolder, SharedLog, SUBSCRIPTION_LEASE};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::runtime::Handle;

/// Journal events per block (one row), at most.
const EVENTS_PER_BLOCK: usize = 16 * 1024;

/// Subscriptions nobody serves that one look considers, at most.
const UNSERVED_PER_LOOK: i64 = 256;

/// Where a subscription is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// By this node (always, in the local mode).
    Here,
    /// By another live node, whose HTTP API answers at `http_addr` (`host:port`).
    Node { node_id: i32, http_addr: String },
}

/// A subscription's state in Postgres, written under its lease.
pub(crate) struct PgStore {
    log: SharedLog,
    rt: Handle,
    name: String,
    lease: Lease,
    /// The sequence number of the next journal block.
    next: AtomicU64,
    /// Delay buckets in Postgres → records in each.
    buckets: Mutex<BTreeMap<u64, u64>>,
}

impl PgStore {
    /// Runs one call to Postgres from the blocking pool, where subscriptions' store
    /// calls run.
    fn run<T>(
        &self,
        call: impl std::future::Future<Output = ferry_shared::Result<T>>,
    ) -> Result<T> {
        self.rt.block_on(call).map_err(|e| from_shared(0, e))
    }

    fn corrupt(&self, what: String) -> BrokerError {
        BrokerError::Corrupt {
            offset: None,
            reason: format!(
                "subscription '{}' in the metadata database: {what}",
                self.name
            ),
        }
    }
}

impl SubscriptionStore for PgStore {
    fn load(&self) -> Result<(Option<Snapshot>, Vec<Event>)> {
        let meta = self.log.metadata();
        let stored = self.run(meta.subscription_state(&self.name))?;
        let snapshot = match stored.snapshot {
            None => None,
            Some(bytes) => {
                let s = serde_json::from_slice::<Snapshot>(&bytes)
                    .map_err(|e| e.to_string())
                    .and_then(|s| s.check().map(|()| s))
                    .map_err(|e| self.corrupt(format!("the snapshot is not valid: {e}")))?;
                Some(s)
            }
        };
        let from = snapshot.as_ref().map_or(0, |s| s.journal_offset);
        let mut next = from;
        let mut events = Vec::new();
        for (seq, block) in stored.journal {
            if seq < from {
                continue;
            }
            let decoded = codec::decode_events(&block)
                .map_err(|e| self.corrupt(format!("journal block {seq}: {e}")))?;
            events.extend(decoded);
            next = seq + 1;
        }
        self.next.store(next, Ordering::Release);
        let buckets = self.run(meta.subscription_delay_buckets(&self.name))?;
        *lock(&self.buckets) = buckets;
        Ok((snapshot, events))
    }

    fn append(&self, events: &[Event]) -> Result<u64> {
        let first = self.next.load(Ordering::Acquire);
        let blocks: Vec<Vec<u8>> = events
            .chunks(EVENTS_PER_BLOCK)
            .map(|chunk| {
                let mut block = Vec::with_capacity(chunk.len() * codec::EVENT_BYTES);
                codec::encode_events(chunk, &mut block);
                block
            })
            .collect();
        if blocks.is_empty() {
            return Ok(first);
        }
        let meta = self.log.metadata();
        self.run(meta.append_subscription_journal(&self.name, self.lease, first, &blocks))?;
        let end = first + blocks.len() as u64;
        self.next.store(end, Ordering::Release);
        Ok(end)
    }

    /// Appends are durable once Postgres answered them.
    fn wait_durable(&self, _position: u64) -> Result<()> {
        Ok(())
    }

    fn position(&self) -> u64 {
        self.next.load(Ordering::Acquire)
    }

    fn checkpoint(&self, snapshot: &Snapshot) -> Result<()> {
        let bytes = serde_json::to_vec(snapshot)
            .map_err(|e| BrokerError::Storage(format!("encoding a snapshot: {e}")))?;
        let meta = self.log.metadata();
        self.run(meta.checkpoint_subscription(
            &self.name,
            self.lease,
            &bytes,
            snapshot.journal_offset,
            snapshot.loaded_upto,
        ))?;
        lock(&self.buckets).retain(|b, _| *b > snapshot.loaded_upto);
        Ok(())
    }

    fn write_delays(&self, entries: &[DelayEntry]) -> Result<()> {
        let mut by_bucket: BTreeMap<u64, (u32, Vec<u8>)> = BTreeMap::new();
        for e in entries {
            let (n, bytes) = by_bucket.entry(bucket_of(e.due)).or_default();
            *n += 1;
            codec::encode_delay(e, bytes);
        }
        let rows: Vec<(u64, u32, Vec<u8>)> =
            by_bucket.into_iter().map(|(b, (n, d))| (b, n, d)).collect();
        if rows.is_empty() {
            return Ok(());
        }
        let meta = self.log.metadata();
        self.run(meta.write_subscription_delays(&self.name, self.lease, &rows))?;
        let mut known = lock(&self.buckets);
        for (b, n, _) in rows {
            *known.entry(b).or_default() += u64::from(n);
        }
        Ok(())
    }

    fn read_delays(&self, bucket: u64) -> Result<Vec<DelayEntry>> {
        let meta = self.log.metadata();
        let blocks = self.run(meta.subscription_delays(&self.name, bucket))?;
        let mut out = Vec::new();
        for block in blocks {
            let (entries, bad) = codec::decode_delays(&block);
            if bad > 0 {
                return Err(
                    self.corrupt(format!("{bad} damaged delayed records in bucket {bucket}"))
                );
            }
            out.extend(entries);
        }
        Ok(out)
    }

    fn delay_buckets(&self) -> Vec<u64> {
        lock(&self.buckets).keys().copied().collect()
    }

    fn delayed_on_disk(&self, bucket: u64) -> u64 {
        lock(&self.buckets)
            .range(bucket.saturating_add(1)..)
            .map(|(_, n)| n)
            .sum()
    }

    fn remove_delays_upto(&self, bucket: u64) -> Result<()> {
        let meta = self.log.metadata();
        self.run(meta.remove_subscription_delays(&self.name, self.lease, bucket))?;
        lock(&self.buckets).retain(|b, _| *b > bucket);
        Ok(())
    }
}

/// A topic's records in the shared log, for a pull: read from the blocking pool by
/// waiting on the runtime (the pull holds the subscription's lock meanwhile, as a
/// local pull does while it reads the disk).
pub(crate) struct SharedSource<'a> {
    broker: &'a Broker,
    topic: String,
    /// Each partition's (first readable offset, next offset) when the pull began.
    ends: Vec<(u64, u64)>,
    rt: Handle,
}

impl Source for SharedSource<'_> {
    fn partitions(&self) -> usize {
        self.ends.len()
    }

    fn bounds(&self, p: u32) -> (u64, u64) {
        self.ends.get(p as usize).copied().unwrap_or((0, 0))
    }

    fn read(
        &self,
        p: u32,
        from: u64,
        max_records: usize,
        max_bytes: usize,
        _limits: &DecodeLimits,
    ) -> Result<ReadRecords> {
        self.rt.block_on(self.broker.shared_read(
            &self.topic,
            p,
            from,
            max_records,
            max_bytes,
            Duration::ZERO,
        ))
    }
}

fn unavailable(e: ferry_shared::SharedError) -> BrokerError {
    from_shared(0, e)
}

/// A subscription's settings as Postgres keeps them (JSON).
fn parse_config(name: &str, json: &str) -> Result<SubscriptionConfig> {
    serde_json::from_str(json).map_err(|e| {
        BrokerError::Meta(format!(
            "subscription '{name}' has settings this Ferry cannot read: {e}"
        ))
    })
}

impl Broker {
    /// Each partition's (first readable offset, next offset) of `topic`: as the local
    /// log has them, or in shared mode as this node last saw them.
    pub(crate) fn partition_ends(&self, topic: &str) -> Vec<(u64, u64)> {
        let Ok(t) = self.topic(topic) else {
            return Vec::new();
        };
        if self.shared.is_none() {
            let parts = t.partitions();
            return (0..parts.len() as u32).map(|p| parts.bounds(p)).collect();
        }
        (0..t.config().partitions)
            .map(|p| self.bounds(topic, p).unwrap_or((0, 0)))
            .collect()
    }

    /// One pull from the shared log (shared mode), on this thread: the caller is on the
    /// runtime, so the thread leaves it for the pull's blocking reads.
    pub(crate) fn shared_pull(
        &self,
        sub: &Subscription,
        req: &crate::subs::PullRequest,
    ) -> Result<Vec<crate::subs::Delivery>> {
        let topic = sub.config().topic;
        let source = SharedSource {
            broker: self,
            ends: self.partition_ends(&topic),
            topic,
            rt: Handle::current(),
        };
        tokio::task::block_in_place(|| sub.pull_from(&source, req, now_ms()))
    }

    /// Where subscription `name` is served: here in the local mode; in shared mode by
    /// the live holder of its lease, else by the live node rendezvous hashing picks. If
    /// that is this node, it takes the lease and loads the subscription first.
    pub async fn subscription_owner(&self, name: &str) -> Result<Owner> {
        let Some(sh) = &self.shared else {
            return Ok(Owner::Here);
        };
        if self.owned_here(name) {
            return Ok(Owner::Here);
        }
        let meta = sh.log.metadata();
        let nodes = self.shared_nodes().unwrap_or_default();
        let holder = meta
            .lease_holder(SUBSCRIPTION_LEASE, name)
            .await
            .map_err(unavailable)?;
        // A request for one served elsewhere goes on with one query; whether the
        // subscription exists is the business of the node that serves it.
        match holder.or_else(|| pick(name, &nodes).map(|n| n.node_id)) {
            None => Err(BrokerError::Unavailable("no live node is known yet".into())),
            Some(id) if id != sh.node_id() => self.node_owner(id).await,
            Some(_) => match meta.subscription(name).await.map_err(unavailable)? {
                Some(config) => self.claim_subscription(name, &config).await,
                None => Err(BrokerError::SubscriptionNotFound(name.to_string())),
            },
        }
    }

    /// Takes the subscriptions no live node serves that rendezvous hashing picks this
    /// node for (shared mode).
    pub(crate) async fn claim_unserved_subscriptions(&self) {
        let Some(sh) = &self.shared else {
            return;
        };
        let me = sh.node_id();
        if me == 0 {
            return;
        }
        let names = match sh
            .log
            .metadata()
            .unserved_subscriptions(UNSERVED_PER_LOOK)
            .await
        {
            Ok(names) => names,
            Err(e) => {
                tracing::debug!(error = %e, "Could not look for subscriptions nobody serves.");
                return;
            }
        };
        // Copies here whose write failed are loaded again (push subscriptions get no
        // request that would do it).
        let failed: Vec<String> = self
            .subs
            .all()
            .iter()
            .filter(|s| s.has_failed())
            .map(|s| s.config().name)
            .collect();
        let nodes = self.shared_nodes().unwrap_or_default();
        for name in failed.into_iter().chain(
            names
                .into_iter()
                .filter(|name| pick(name, &nodes).is_some_and(|n| n.node_id == me)),
        ) {
            if let Err(e) = self.subscription_owner(&name).await {
                tracing::warn!(subscription = %name, error = %e, "Could not take a subscription nobody serves.");
            }
        }
    }

    /// Where consumer group `group` is described over HTTP: here in the local mode; in
    /// shared mode by its coordinator (which this node becomes, taking the group's
    /// lease, when it is the one named).
    pub async fn group_owner(&self, group: &str) -> Result<Owner> {
        let Some(sh) = &self.shared else {
            return Ok(Owner::Here);
        };
        let Some(node) = self.group_coordinator(group).await else {
            return Ok(Owner::Here);
        };
        let node = node?;
        if node.node_id != sh.node_id() {
            return self.node_owner(node.node_id).await;
        }
        match self.claim_group(group).await {
            Ok(()) => Ok(Owner::Here),
            Err(crate::groups::GroupError::InvalidGroupId) => Err(BrokerError::InvalidConfig(
                format!("'{group}' is not a valid consumer group id"),
            )),
            Err(e) => Err(BrokerError::Unavailable(format!(
                "consumer group '{group}' cannot be served here now ({e:?}): try again shortly"
            ))),
        }
    }

    /// Every consumer group with committed offsets or a coordinator (shared mode; in the
    /// local mode, none: the front end lists the groups in memory).
    pub async fn shared_group_names(&self) -> Result<Vec<String>> {
        let Some(sh) = &self.shared else {
            return Ok(Vec::new());
        };
        sh.log.metadata().group_names().await.map_err(unavailable)
    }

    /// Whether this node serves `name` now, under a lease it may trust. A copy whose
    /// write failed (Postgres was unreachable, say) is let go here, so that it is
    /// loaded again from what Postgres holds.
    fn owned_here(&self, name: &str) -> bool {
        let Some(sh) = &self.shared else {
            return false;
        };
        if sh.leases.subscription_epoch(name).is_none() {
            return false;
        }
        match self.subs.get(name) {
            Ok(sub) if sub.has_failed() => {
                sh.leases.forget_subscription(name);
                self.let_go_subscription(name);
                false
            }
            Ok(_) => true,
            Err(_) => false,
        }
    }

    /// Where node `node_id` is reached: from the live nodes as the last beat read them,
    /// or from Postgres for a node that joined since.
    async fn node_owner(&self, node_id: i32) -> Result<Owner> {
        let known = self
            .shared_nodes()
            .unwrap_or_default()
            .into_iter()
            .find(|n| n.node_id == node_id)
            .and_then(|n| n.http_addr);
        let addr = match (known, &self.shared) {
            (Some(addr), _) => Some(addr),
            (None, Some(sh)) => sh
                .log
                .metadata()
                .http_addr(node_id)
                .await
                .map_err(unavailable)?,
            (None, None) => None,
        };
        match addr {
            Some(http_addr) => Ok(Owner::Node { node_id, http_addr }),
            None => Err(BrokerError::Unavailable(format!(
                "node {node_id} serves this but has not published its HTTP address: try again shortly"
            ))),
        }
    }

    /// Takes `name`'s lease for this node and loads the subscription from Postgres.
    async fn claim_subscription(&self, name: &str, config_json: &str) -> Result<Owner> {
        let Some(sh) = &self.shared else {
            return Ok(Owner::Here);
        };
        let _one = sh.leases.claims.lock().await;
        if self.owned_here(name) {
            return Ok(Owner::Here);
        }
        let me = sh.node_id();
        if me == 0 {
            return Err(BrokerError::Unavailable(
                "this node has not joined the cluster yet".into(),
            ));
        }
        let epoch = match sh
            .log
            .metadata()
            .take_lease(SUBSCRIPTION_LEASE, name, me)
            .await
            .map_err(unavailable)?
        {
            LeaseHolder::Taken { epoch } => epoch,
            LeaseHolder::Other { node_id } => return self.node_owner(node_id).await,
        };
        let config = parse_config(name, config_json)?;
        let store = PgStore {
            log: sh.log.clone(),
            rt: Handle::current(),
            name: name.to_string(),
            lease: Lease { node_id: me, epoch },
            next: AtomicU64::new(0),
            buckets: Mutex::new(BTreeMap::new()),
        };
        // A folder of this node's own for what is not shared: a push subscription's
        // log of attempts.
        let dir = self.subs.dir.join(name);
        let sub = blocking(move || {
            if dir.exists() {
                std::fs::remove_dir_all(&dir)
                    .map_err(|e| BrokerError::io(format!("clearing {}", dir.display()), e))?;
            }
            std::fs::create_dir_all(&dir)
                .map_err(|e| BrokerError::io(format!("creating {}", dir.display()), e))?;
            Subscription::open_in(Box::new(store), &dir, config, now_ms())
        })
        .await?;
        let old = self.subs.lock_map().insert(name.to_string(), Arc::new(sub));
        if let Some(old) = old {
            stop_serving(&old);
        }
        sh.leases.hold_subscription(name, epoch);
        tracing::info!(subscription = name, epoch, "Serving a subscription.");
        Ok(Owner::Here)
    }

    /// Stops serving `name` here (its lease moved, or it was deleted).
    pub(crate) fn let_go_subscription(&self, name: &str) {
        let removed = self.subs.lock_map().remove(name);
        if let Some(sub) = removed {
            stop_serving(&sub);
            tracing::info!(subscription = name, "No longer serving a subscription.");
        }
    }

    /// Creates a queue subscription in shared mode: its settings and first snapshot in
    /// Postgres, then this node takes its lease.
    pub(crate) async fn create_shared_subscription(
        &self,
        mut s: SubscriptionSettings,
    ) -> Result<SubscriptionStatus> {
        let Some(sh) = &self.shared else {
            return Err(BrokerError::Meta("not in shared mode".into()));
        };
        let secret = self.prepare_push(&mut s.push, None).await?;
        let now = now_ms();
        let (config, start) = crate::subs::admin::new_config(&s, now)?;
        let name = config.name.clone();
        // The topic, or its dead-letter topic, may have been made on another node a
        // moment ago.
        let mut named = vec![config.topic.clone()];
        named.extend(config.dead_letter_topic.clone());
        self.learn_topics(&named).await;
        {
            let _admin = self.admin.lock().await;
            let topic = self.topic(&config.topic)?;
            self.ensure_dead_letter_topic(&config).await?;
            let starts = self.positions(&topic, start).await?;
            let snapshot = serde_json::to_vec(&first_snapshot(&config, &starts, now))
                .map_err(|e| BrokerError::Storage(format!("encoding a snapshot: {e}")))?;
            let json = serde_json::to_string(&config)
                .map_err(|e| BrokerError::Storage(format!("encoding settings: {e}")))?;
            let created = sh
                .log
                .metadata()
                .create_subscription(&name, &config.topic, &json, &snapshot)
                .await
                .map_err(unavailable)?;
            if !created {
                return Err(BrokerError::SubscriptionExists(name));
            }
            tracing::info!(subscription = %name, topic = %config.topic, "Created subscription.");
            match self.claim_subscription(&name, &json).await? {
                Owner::Here => {}
                Owner::Node { node_id, .. } => {
                    return Err(BrokerError::Unavailable(format!(
                        "subscription '{name}' was created and node {node_id} took it at once: describe it there"
                    )))
                }
            }
        }
        let mut status = self.describe_subscription(&name).await?;
        status.new_secret = secret;
        Ok(status)
    }

    /// Publishes where this node's HTTP API answers (`host:port`), so that other nodes
    /// can pass requests on to it (shared mode; nothing in the local mode).
    pub async fn publish_http_addr(&self, addr: &str) -> Result<()> {
        let Some(sh) = &self.shared else {
            return Ok(());
        };
        sh.log
            .metadata()
            .set_http_addr(sh.node_id(), addr)
            .await
            .map_err(unavailable)
    }

    /// Names of every subscription (shared mode: as Postgres has them; local mode: this
    /// node's).
    pub async fn subscription_names(&self) -> Result<Vec<String>> {
        let Some(sh) = &self.shared else {
            let mut names: Vec<String> = self.subs.all().iter().map(|s| s.config().name).collect();
            names.sort();
            return Ok(names);
        };
        let all = sh.log.metadata().subscriptions().await;
        Ok(all.map_err(unavailable)?.into_keys().collect())
    }

    /// Every subscription's settings, as Postgres has them (shared mode).
    pub(crate) async fn shared_subscription_configs(&self) -> Result<Vec<SubscriptionConfig>> {
        let Some(sh) = &self.shared else {
            return Ok(Vec::new());
        };
        let all = sh
            .log
            .metadata()
            .subscriptions()
            .await
            .map_err(unavailable)?;
        all.iter()
            .map(|(name, json)| parse_config(name, json))
            .collect()
    }

    /// Stores changed settings of a subscription this node serves (shared mode).
    pub(crate) async fn store_shared_config(&self, config: &SubscriptionConfig) -> Result<()> {
        let Some(sh) = &self.shared else {
            return Ok(());
        };
        let json = serde_json::to_string(config)
            .map_err(|e| BrokerError::Storage(format!("encoding settings: {e}")))?;
        let updated = sh
            .log
            .metadata()
            .update_subscription(&config.name, &json)
            .await
            .map_err(unavailable)?;
        if updated {
            Ok(())
        } else {
            Err(BrokerError::SubscriptionNotFound(config.name.clone()))
        }
    }

    /// Deletes a subscription in shared mode, with its state and lease.
    pub(crate) async fn delete_shared_subscription(&self, name: &str) -> Result<()> {
        let Some(sh) = &self.shared else {
            return Ok(());
        };
        let deleted = sh
            .log
            .metadata()
            .delete_subscription(name)
            .await
            .map_err(unavailable)?;
        sh.leases.forget_subscription(name);
        self.let_go_subscription(name);
        if !deleted {
            return Err(BrokerError::SubscriptionNotFound(name.to_string()));
        }
        tracing::info!(subscription = %name, "Deleted subscription.");
        Ok(())
    }
}

/// Ends a subscription object this node no longer serves: waiting pulls return, and
/// nothing more is written through it.
fn stop_serving(sub: &Subscription) {
    sub.deleted
        .store(true, std::sync::atomic::Ordering::Release);
    sub.changed.notify_waiters();
}
