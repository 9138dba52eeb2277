//! A pull, in its steps: settle (expired leases, due delays), redeliver what is ready
//! again, scan the heads of the partitions for new records, lease what was taken. All
//! under the subscription's lock, with one journal append at the end.

use super::config::SubscriptionConfig;
use super::headers;
use super::lease::{LeaseId, RecordAt};
use super::state::{key_hash, Event, PState};
use super::subscription::{read_one, settle, Changes, Subscription};
use super::{HELD_RECORDS_MAX, SCAN_RECORDS_MAX};
use crate::error::{BrokerError, Result};
use crate::filter::Filter;
use crate::partition::{Partition, ReadRecords};
use crate::topic::Topic;
use ferry_log::batch::DecodeLimits;
use ferry_log::sync::lock;
use ferry_log::Record;
use std::sync::Arc;
use std::time::Duration;

/// Bytes one head scan reads from a partition at a time, at most.
const SCAN_READ_BYTES_MAX: usize = 1024 * 1024;
/// Records one head scan asks a partition for, at least.
const SCAN_READ_RECORDS_MIN: usize = 64;

/// What a pull asks for.
#[derive(Debug, Clone)]
pub struct PullRequest {
    pub consumer: Arc<str>,
    pub max_records: usize,
    pub wait: Duration,
    pub visibility_timeout_ms: Option<u64>,
}

/// A record handed to a consumer.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub lease_id: String,
    pub attempt: u32,
    pub partition: u32,
    pub lease_expires_ms: u64,
    pub record: Record,
}

/// Records taken by one pull, before they are leased.
#[derive(Default)]
struct Taken {
    records: Vec<(RecordAt, Record)>,
    /// Ready records that could not be read now: ready again after the pull.
    held_back: Vec<RecordAt>,
    /// The first read error; the pull stops there.
    error: Option<BrokerError>,
}

/// Where a subscription's records come from: the topic's partitions on this node's
/// disk, or in shared mode the shared log. Called under the subscription's lock, off
/// the async threads (blocking I/O).
pub trait Source {
    /// How many partitions the topic has.
    fn partitions(&self) -> usize;
    /// Partition `p`'s first readable offset and next offset.
    fn bounds(&self, p: u32) -> (u64, u64);
    /// Records from `from`, as [`Partition::read_records`] reads them.
    fn read(
        &self,
        p: u32,
        from: u64,
        max_records: usize,
        max_bytes: usize,
        limits: &DecodeLimits,
    ) -> Result<ReadRecords>;
    /// Counts records handed to consumers from partition `p`.
    fn delivered(&self, _p: u32, _records: u64, _bytes: u64) {}
}

/// The topic's partitions on this node's disk.
impl Source for Vec<Arc<Partition>> {
    fn partitions(&self) -> usize {
        self.len()
    }

    fn bounds(&self, p: u32) -> (u64, u64) {
        self.get(p as usize).map_or((0, 0), |part| {
            (part.log.stats().earliest, part.log.latest())
        })
    }

    fn read(
        &self,
        p: u32,
        from: u64,
        max_records: usize,
        max_bytes: usize,
        limits: &DecodeLimits,
    ) -> Result<ReadRecords> {
        let part = self.get(p as usize).ok_or_else(|| {
            BrokerError::Meta(format!(
                "partition {p} is not among {} partitions",
                self.len()
            ))
        })?;
        part.read_records(from, max_records, max_bytes, limits)
    }

    fn delivered(&self, p: u32, records: u64, bytes: u64) {
        if let Some(part) = self.get(p as usize) {
            part.log.counters.count_out(records, bytes);
        }
    }
}

/// What one pull may take and how it reads.
struct Scan<'a> {
    cfg: &'a SubscriptionConfig,
    filter: &'a Filter,
    source: &'a dyn Source,
    limits: &'a DecodeLimits,
    cap: usize,
    now: u64,
}

impl Subscription {
    /// One pull at `now` from the topic's local partitions, without waiting (blocking
    /// I/O).
    pub fn pull_once(&self, topic: &Topic, req: &PullRequest, now: u64) -> Result<Vec<Delivery>> {
        self.pull_from(&topic.partitions(), req, now)
    }

    /// One pull at `now` from `source`, without waiting (blocking I/O).
    pub fn pull_from(
        &self,
        source: &dyn Source,
        req: &PullRequest,
        now: u64,
    ) -> Result<Vec<Delivery>> {
        let cfg = self.config();
        let filter = self.filter();
        let mut guard = lock(&self.inner);
        guard.check_running(&cfg.name)?;
        let inner = &mut *guard;
        let mut changes = Changes::new(&mut inner.state);
        settle(&cfg, &mut changes, &mut inner.rng, now);
        let room_sub = cfg.max_in_flight.saturating_sub(changes.state.leased()) as usize;
        let room_consumer =
            cfg.max_in_flight_per_consumer
                .saturating_sub(changes.state.leased_by(&req.consumer)) as usize;
        let scan = Scan {
            cfg: &cfg,
            filter: &filter,
            source,
            limits: &self.limits,
            cap: req.max_records.min(room_sub).min(room_consumer),
            now,
        };
        let mut taken = Taken::default();
        redeliver_ready(&scan, &mut changes, &mut taken);
        self.scan_heads(&scan, &mut changes, &mut taken, inner.next_scan_partition);
        inner.next_scan_partition = inner.next_scan_partition.wrapping_add(1);
        let visibility = req
            .visibility_timeout_ms
            .unwrap_or(cfg.visibility_timeout_ms);
        let deliveries = self.lease_taken(
            &mut changes,
            &mut inner.next_token,
            taken.records,
            &req.consumer,
            now + visibility,
        );
        for at in taken.held_back {
            changes.state.set_ready_again(at.partition, at.offset);
        }
        let (events, delays) = changes.take();
        // Journal order must be the order the state saw: append under the lock.
        self.persist(&mut guard, &events, &delays)?;
        drop(guard);
        for d in &deliveries {
            let bytes = ferry_log::metrics::record_payload_bytes(&d.record);
            source.delivered(d.partition, 1, bytes);
        }
        match (deliveries.is_empty(), taken.error) {
            (true, Some(e)) => Err(e),
            _ => Ok(deliveries),
        }
    }

    /// Scans each partition's head for new records, partitions in turn from `first`.
    /// Records skipped on the way (filtered out, delayed, held back) do not fill the
    /// pull: scanning goes on, within a budget that bounds how long the lock is held.
    fn scan_heads(&self, scan: &Scan<'_>, c: &mut Changes<'_>, taken: &mut Taken, first: usize) {
        let n = scan.source.partitions();
        let mut scanned = 0usize;
        loop {
            let before = scanned;
            for i in 0..n {
                if taken.records.len() >= scan.cap || taken.error.is_some() {
                    break;
                }
                let p = ((first + i) % n) as u32;
                scanned += self.scan_partition(scan, c, taken, p);
            }
            if taken.records.len() >= scan.cap
                || taken.error.is_some()
                || scanned == before
                || scanned >= SCAN_RECORDS_MAX
            {
                break;
            }
        }
    }

    /// Reads new records at partition `p`'s head: skips what the subscription does not
    /// want, delays what is scheduled, holds back what waits for its key, takes the
    /// rest. Returns how many records it looked at.
    fn scan_partition(
        &self,
        scan: &Scan<'_>,
        c: &mut Changes<'_>,
        taken: &mut Taken,
        p: u32,
    ) -> usize {
        let (earliest, latest) = scan.source.bounds(p);
        let mut cursor = head_cursor(c, earliest, p);
        if cursor >= latest {
            return 0;
        }
        if c.state.ordering
            && c.state.part(p).map_or(0, |part| part.pending.len()) >= HELD_RECORDS_MAX
        {
            return 0;
        }
        let want = (scan.cap - taken.records.len()).max(SCAN_READ_RECORDS_MIN);
        let read = match scan
            .source
            .read(p, cursor, want, SCAN_READ_BYTES_MAX, scan.limits)
        {
            Ok(r) => r,
            Err(e) => {
                taken.error = Some(e);
                return 0;
            }
        };
        let looked_at = read.records.len();
        let mut full = false;
        for r in read.records {
            let o = r.offset as u64;
            if o > cursor {
                c.push(Event::Skip {
                    partition: p,
                    lo: cursor,
                    hi: o,
                });
            }
            if !self.wants(scan.filter, &scan.cfg.name, &r) {
                c.push(Event::Skip {
                    partition: p,
                    lo: o,
                    hi: o + 1,
                });
            } else if !place(scan, c, taken, p, r) {
                // The pull is full: this record stays at the head.
                full = true;
                break;
            }
            cursor = o + 1;
        }
        if !full && read.next_offset > cursor {
            c.push(Event::Skip {
                partition: p,
                lo: cursor,
                hi: read.next_offset,
            });
        }
        looked_at
    }

    /// Leases the records taken, until `expires`, to `consumer`.
    fn lease_taken(
        &self,
        c: &mut Changes<'_>,
        next_token: &mut u64,
        records: Vec<(RecordAt, Record)>,
        consumer: &Arc<str>,
        expires: u64,
    ) -> Vec<Delivery> {
        let mut deliveries = Vec::with_capacity(records.len());
        for (at, record) in records {
            let (p, o) = (at.partition, at.offset);
            let Some(pending) = c.state.pending(p, o) else {
                continue;
            };
            let (attempt, key) = (pending.attempt + 1, pending.key);
            *next_token = next_token.wrapping_add(1);
            let token = (u64::from(self.epoch) << 32)
                | u64::from((*next_token as u32).wrapping_mul(0x9E37_79B1));
            c.push(Event::Deliver {
                partition: p,
                offset: o,
                attempt,
                key,
            });
            c.state.lease(
                p,
                o,
                PState::Leased {
                    expires,
                    token,
                    consumer: Arc::clone(consumer),
                },
            );
            deliveries.push(Delivery {
                lease_id: LeaseId { at, attempt, token }.to_string(),
                attempt,
                partition: p,
                lease_expires_ms: expires,
                record,
            });
        }
        deliveries
    }
}

/// Where the head scan of partition `p` starts: its head, moved up past records gone
/// from the log. A partition added to the topic starts at its beginning.
fn head_cursor(c: &mut Changes<'_>, earliest: u64, p: u32) -> u64 {
    if c.state.part(p).is_none() {
        c.push(Event::Seek {
            partition: p,
            to: earliest,
        });
    }
    let head = c.state.part(p).map_or(0, |part| part.head);
    if head < earliest {
        c.push(Event::Skip {
            partition: p,
            lo: head,
            hi: earliest,
        });
    }
    head.max(earliest)
}

/// Places one wanted record found at a head: delayed when it is scheduled later, held
/// back while its key has a record in flight, else taken. Returns false, placing
/// nothing, when the pull is already full.
fn place(scan: &Scan<'_>, c: &mut Changes<'_>, taken: &mut Taken, p: u32, r: Record) -> bool {
    let o = r.offset as u64;
    let key = key_hash(r.key.as_deref());
    match headers::deliver_at(&r).filter(|&due| due > scan.now) {
        Some(due) => c.delay(p, o, 0, due, key),
        None if c.state.key_busy(p, key) => c.push(Event::Ready {
            partition: p,
            offset: o,
            attempt: 0,
            key,
        }),
        None if taken.records.len() >= scan.cap => return false,
        None => {
            c.state.set(p, o, 0, key, PState::Ready);
            c.state.remove_from_ready(p, o);
            taken.records.push((
                RecordAt {
                    partition: p,
                    offset: o,
                },
                r,
            ));
        }
    }
    true
}

/// Takes records that are ready again (given back, expired, due), lowest offsets first.
fn redeliver_ready(scan: &Scan<'_>, c: &mut Changes<'_>, taken: &mut Taken) {
    while taken.records.len() < scan.cap {
        let Some((p, o)) = c.state.pop_ready() else {
            break;
        };
        let at = RecordAt {
            partition: p,
            offset: o,
        };
        if p as usize >= scan.source.partitions() {
            taken.held_back.push(at);
            continue;
        }
        match read_one(scan.source, p, o, scan.limits) {
            Err(e) => {
                taken.held_back.push(at);
                taken.error = Some(e);
                break;
            }
            Ok(Some(r)) => taken.records.push((at, r)),
            Ok(None) => {
                // Gone from the topic (retention): nothing left to deliver.
                c.state.remove(p, o);
                c.push(Event::Skip {
                    partition: p,
                    lo: o,
                    hi: o + 1,
                });
            }
        }
    }
}
