//! Each partition's writer: group commit across requests.
//!
//! Produce requests queue their records on the partition, and Kafka produce requests
//! queue their wait for durability. One blocking task per busy partition takes
//! everything queued, merges the records of many requests into as few batches as the
//! partition's batch size allows, appends them, syncs once under durability `always`,
//! wakes readers, and answers every request. While it syncs the next requests queue up,
//! so the records per sync grow with the number of concurrent producers, and a request
//! waiting for its sync holds no thread.
//!
//! # Traces
//!
//! A request may come with its span's context (when tracing is on). One round's append
//! and fsync serve many requests, so each is one span: the child of the first traced
//! request it serves, linking to the others (at most [`ferry_trace::SPAN_LINKS_MAX`]).
//! With tracing off, requests carry `None` and no span is made.
//!
//! The task exists only while there is work: the request that finds the queue idle
//! starts it, and it ends when it finds the queue empty. A panic in it (a bug) fails
//! the requests it held and those queued, and the next request starts a new task.

use crate::broker::now_ms;
use crate::error::{BrokerError, Result};
use crate::partition::Partition;
use crate::produce::{record_size_bound, Produced};
use ferry_log::batch::{build_batch, NewRecord, BATCH_HEADER_BYTES};
use ferry_log::sync::lock;
use ferry_log::{Compression, Durability};
use ferry_trace::{attr, KeyValue, Span, SpanKind, Start, TraceParent};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// Records of one request for one partition, in the request's order, each with its
/// index in the request.
pub(crate) type Placed = Vec<(usize, Produced)>;

pub(crate) enum Job {
    Records {
        records: Vec<(usize, NewRecord)>,
        /// The request's span, when tracing is on.
        trace: Option<TraceParent>,
        done: oneshot::Sender<Result<Placed>>,
    },
    /// Offsets below `end` must meet the durability policy.
    Durable {
        end: u64,
        trace: Option<TraceParent>,
        done: oneshot::Sender<Result<()>>,
    },
}

#[derive(Default)]
pub(crate) struct Writer {
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    jobs: Vec<Job>,
    /// A writer task is running (it will see any job queued before it ends).
    running: bool,
}

fn writer_gone() -> BrokerError {
    BrokerError::Storage("the partition's writer stopped before answering".into())
}

impl Partition {
    /// Queues one request's records for this partition (at once, before the answer is
    /// awaited, so that a request's partitions are written side by side); the answer
    /// says where each landed once the durability policy is met.
    pub(crate) fn append_records(
        self: &Arc<Self>,
        records: Vec<(usize, NewRecord)>,
        trace: Option<TraceParent>,
    ) -> impl std::future::Future<Output = Result<Placed>> {
        let (done, answer) = oneshot::channel();
        self.submit(Job::Records {
            records,
            trace,
            done,
        });
        async move { answer.await.map_err(|_| writer_gone())? }
    }

    /// Waits until offsets below `end` meet the durability policy, and wakes readers.
    pub(crate) async fn durable(
        self: &Arc<Self>,
        end: u64,
        trace: Option<TraceParent>,
    ) -> Result<()> {
        let always = self.log.config().durability == Durability::Always;
        if !always || self.log.synced() >= end {
            self.publish_latest();
            return Ok(());
        }
        let (done, answer) = oneshot::channel();
        self.submit(Job::Durable { end, trace, done });
        answer.await.map_err(|_| writer_gone())?
    }

    fn submit(self: &Arc<Self>, job: Job) {
        let start = {
            let mut q = lock(&self.writer.queue);
            q.jobs.push(job);
            !std::mem::replace(&mut q.running, true)
        };
        if start {
            let me = Arc::clone(self);
            tokio::task::spawn_blocking(move || me.write_until_idle());
        }
    }

    fn write_until_idle(&self) {
        let _running = Running(self);
        loop {
            let jobs = {
                let mut q = lock(&self.writer.queue);
                if q.jobs.is_empty() {
                    q.running = false;
                    return;
                }
                std::mem::take(&mut q.jobs)
            };
            self.write_round(jobs);
        }
    }

    /// Appends every queued request's records, then syncs once for all of them.
    fn write_round(&self, jobs: Vec<Job>) {
        let max = self.log.config().max_batch_bytes;
        let mut answers: Vec<(oneshot::Sender<Result<Placed>>, Result<Placed>)> = Vec::new();
        let mut waits = Vec::new();
        let mut group = Group::default();
        let mut appended_to = None;
        // Every traced request of the round: the fsync span's parent and links.
        let mut traces = Vec::new();
        for job in jobs {
            match job {
                Job::Durable { end, trace, done } => {
                    traces.extend(trace);
                    waits.push((end, done));
                }
                Job::Records {
                    records,
                    trace,
                    done,
                } => {
                    traces.extend(trace);
                    let size = records
                        .iter()
                        .map(|(_, r)| record_size_bound(r) - BATCH_HEADER_BYTES)
                        .sum::<usize>();
                    if !group.is_empty() && group.size + size > max {
                        self.append_group(
                            std::mem::take(&mut group),
                            &mut answers,
                            &mut appended_to,
                        );
                    }
                    group.add(records, size, trace, done);
                }
            }
        }
        if !group.is_empty() {
            self.append_group(group, &mut answers, &mut appended_to);
        }
        let end = waits.iter().map(|(end, _)| *end).chain(appended_to).max();
        // A failed sync stops the log (the error says why, and is the same for everyone).
        let always = self.log.config().durability == Durability::Always;
        let synced = match end {
            Some(end) if always => {
                let mut span = self.round_span("fsync", &traces);
                let synced = self
                    .log
                    .wait_durable(end)
                    .map_err(|e| BrokerError::from_log(self.id, e).to_string());
                if let Err(why) = &synced {
                    span.fail(why);
                }
                synced
            }
            _ => Ok(()),
        };
        self.publish_latest();
        let failed = |why: &String| BrokerError::Unavailable(why.clone());
        for (done, placed) in answers {
            let answer = match (&synced, placed) {
                (_, Err(e)) => Err(e),
                (Err(why), Ok(_)) => Err(failed(why)),
                (Ok(()), Ok(p)) => Ok(p),
            };
            let _ = done.send(answer);
        }
        for (end, done) in waits {
            let answer = match &synced {
                Ok(()) => Ok(()),
                Err(why) => Err(failed(why)),
            };
            debug_assert!(answer.is_err() || !always || self.log.synced() >= end);
            let _ = done.send(answer);
        }
    }

    /// Appends one group as one batch. If that fails and the group holds several
    /// requests, each is tried alone, so that each gets its own outcome and error.
    fn append_group(
        &self,
        group: Group,
        answers: &mut Vec<(oneshot::Sender<Result<Placed>>, Result<Placed>)>,
        appended_to: &mut Option<u64>,
    ) {
        let Group {
            records,
            requests,
            traces,
            ..
        } = group;
        let mut span = self.round_span("append", &traces);
        if span.is_on() {
            span.set(attr::MESSAGE_COUNT, records.len() as i64);
        }
        match self.append_batch(&records, appended_to) {
            Ok(placed) => {
                if let (Some(first), Some(last)) = (placed.first(), placed.last()) {
                    if span.is_on() {
                        span.set(attr::BASE_OFFSET, first.1.offset as i64);
                        span.set(attr::END_OFFSET, last.1.offset as i64 + 1);
                    }
                }
                let mut placed = placed.into_iter();
                for (count, done) in requests {
                    answers.push((done, Ok(placed.by_ref().take(count).collect())));
                }
            }
            Err(e) if requests.len() == 1 => {
                span.fail(&e);
                if let Some((_, done)) = requests.into_iter().next() {
                    answers.push((done, Err(e)));
                }
            }
            Err(e) => {
                span.fail(&e);
                tracing::warn!(partition = self.id, requests = requests.len(), error = %e, "A grouped append failed; each request is tried alone.");
                let mut rest = records.into_iter();
                for (count, done) in requests {
                    let own: Vec<_> = rest.by_ref().take(count).collect();
                    answers.push((done, self.append_batch(&own, appended_to)));
                }
            }
        }
    }

    /// The span of one step of a round (an append or a sync) serving the requests
    /// whose spans are `traces`: the first one's child, linking to the others. Off when
    /// none is traced.
    fn round_span(&self, name: &'static str, traces: &[TraceParent]) -> Span {
        let Some((first, others)) = traces.split_first() else {
            return Span::OFF;
        };
        Span::start(Start {
            parent: Some(*first),
            links: others,
            attributes: vec![
                KeyValue::new(attr::MESSAGING_SYSTEM, attr::SYSTEM_FERRY),
                KeyValue::new(attr::PARTITION, self.id.to_string()),
                KeyValue::new(attr::REQUESTS, traces.len() as i64),
            ],
            ..Start::new(name, SpanKind::Internal)
        })
    }

    /// Appends `records` as one batch (or several if they do not fit in one: a single
    /// request larger than a batch).
    fn append_batch(
        &self,
        records: &[(usize, NewRecord)],
        appended_to: &mut Option<u64>,
    ) -> Result<Placed> {
        let max = self.log.config().max_batch_bytes;
        let mut placed = Vec::with_capacity(records.len());
        for chunk in split(records, max) {
            let recs: Vec<NewRecord> = chunk.iter().map(|(_, r)| r.clone()).collect();
            let mut bytes = build_batch(&recs, Compression::None).map_err(BrokerError::from)?;
            let info = self
                .log
                .append(&mut bytes, now_ms())
                .map_err(|e| BrokerError::from_log(self.id, e))?;
            debug_assert_eq!(info.end_offset - info.base_offset, chunk.len() as u64);
            *appended_to = Some(appended_to.map_or(info.end_offset, |e| e.max(info.end_offset)));
            for (k, (index, _)) in chunk.iter().enumerate() {
                placed.push((
                    *index,
                    Produced {
                        partition: self.id,
                        offset: info.base_offset + k as u64,
                    },
                ));
            }
        }
        Ok(placed)
    }
}

/// Requests whose records go into one batch.
#[derive(Default)]
struct Group {
    records: Vec<(usize, NewRecord)>,
    /// Per request: how many of `records` are its, and where its answer goes.
    requests: Vec<(usize, oneshot::Sender<Result<Placed>>)>,
    /// Bytes of the records, without the batch header.
    size: usize,
    /// The spans of the requests that are traced.
    traces: Vec<TraceParent>,
}

impl Group {
    fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }

    fn add(
        &mut self,
        records: Vec<(usize, NewRecord)>,
        size: usize,
        trace: Option<TraceParent>,
        done: oneshot::Sender<Result<Placed>>,
    ) {
        self.traces.extend(trace);
        self.requests.push((records.len(), done));
        self.records.extend(records);
        self.size += size;
    }
}

/// Splits records into runs that each fit in a batch of `max` bytes (a run holds at
/// least one record: every record was checked against the limit when it was routed).
fn split(records: &[(usize, NewRecord)], max: usize) -> Vec<&[(usize, NewRecord)]> {
    let mut out = Vec::new();
    let (mut start, mut size) = (0, BATCH_HEADER_BYTES);
    for (i, (_, r)) in records.iter().enumerate() {
        let s = record_size_bound(r) - BATCH_HEADER_BYTES;
        if i > start && size + s > max {
            out.push(&records[start..i]);
            (start, size) = (i, BATCH_HEADER_BYTES);
        }
        size += s;
    }
    if start < records.len() {
        out.push(&records[start..]);
    }
    out
}

/// Marks the writer stopped if its task unwinds, failing what it held and what is
/// queued, so that the next request starts a new one.
struct Running<'a>(&'a Partition);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut q = lock(&self.0.writer.queue);
            q.running = false;
            q.jobs.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn rec(len: usize) -> NewRecord {
        NewRecord {
            value: Some(Bytes::from(vec![b'x'; len])),
            ..NewRecord::default()
        }
    }

    #[test]
    fn split_keeps_every_record_in_order_and_each_run_under_the_limit() {
        let records: Vec<_> = (0..50).map(|i| (i, rec(100 + i * 7))).collect();
        let max = 1000;
        let runs = split(&records, max);
        let flat: Vec<usize> = runs
            .iter()
            .flat_map(|r| r.iter().map(|(i, _)| *i))
            .collect();
        assert_eq!(flat, (0..50).collect::<Vec<_>>());
        for run in &runs {
            let size = BATCH_HEADER_BYTES
                + run
                    .iter()
                    .map(|(_, r)| record_size_bound(r) - BATCH_HEADER_BYTES)
                    .sum::<usize>();
            assert!(run.len() == 1 || size <= max, "run of {size} bytes");
        }
        assert!(split(&[], max).is_empty());
    }
}
