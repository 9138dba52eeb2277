//! The write path: appends from every partition gather for up to the linger time or
//! the object size, go to the object store as one object, then get their offsets from
//! Postgres in one transaction (`ferry_commit_object`). An append is answered only
//! after both. While the configured number of objects are in flight, appends keep
//! gathering, so objects grow with the load instead of queueing.
//!
//! # Failure
//!
//! - The upload fails: every append of the object fails with the store's error; nothing
//!   names the object, and the orphan sweep removes whatever was written.
//! - The commit fails: the appends fail with the database's error. If the failure came
//!   after Postgres committed (a connection lost during COMMIT), the records are stored
//!   although the producer was told otherwise; an idempotent producer's retry is then
//!   answered as a duplicate, as with Kafka.
//! - The commit comes later than the commit deadline after the object was registered
//!   (by Postgres's clock): the commit refuses it and the appends fail. The sweep
//!   removes such an object only after taking its registration, under the same lock,
//!   so it never removes an object a commit names (see `ferry_objects`).

use crate::cache::Cache;
use crate::error::{Result, SharedError};
use crate::meta::{CommitItem, Meta};
use crate::objects::Objects;
use crate::Outcome;
use bytes::{Bytes, BytesMut};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

/// One batch to append, checked by the caller's [`crate::SharedLog::append`].
pub(crate) struct Incoming {
    pub item: CommitItem,
    pub batch: Bytes,
}

/// One call's batches, answered together.
pub(crate) struct Pending {
    pub batches: Vec<Incoming>,
    pub done: oneshot::Sender<Result<Vec<Outcome>>>,
    /// The call's share of the pending-bytes bound, released when it is answered.
    pub permit: OwnedSemaphorePermit,
}

impl Pending {
    fn bytes(&self) -> usize {
        self.batches.iter().map(|b| b.batch.len()).sum()
    }
}

pub(crate) struct WriterShared {
    pub meta: Meta,
    pub objects: Objects,
    pub cache: Arc<Cache>,
    pub linger: Duration,
    pub object_bytes: usize,
    pub uploads_in_flight: usize,
    pub commit_deadline: Duration,
    pub metrics: Arc<crate::Metrics>,
}

/// Gathers pending appends into objects until the channel closes.
pub(crate) async fn gather(shared: Arc<WriterShared>, mut rx: mpsc::Receiver<Pending>) {
    let uploads = Arc::new(Semaphore::new(shared.uploads_in_flight));
    while let Some(first) = rx.recv().await {
        let mut bytes = first.bytes();
        let mut group = vec![first];
        let linger_end = tokio::time::Instant::now() + shared.linger;
        let mut open = true;
        // Gather for the linger time or until the object is full.
        while bytes < shared.object_bytes && open {
            match tokio::time::timeout_at(linger_end, rx.recv()).await {
                Ok(Some(p)) => {
                    bytes += p.bytes();
                    group.push(p);
                }
                Ok(None) => open = false,
                Err(_) => break,
            }
        }
        // Every upload slot busy: keep gathering until one frees or the object is full.
        let permit = loop {
            if bytes >= shared.object_bytes || !open {
                break uploads.clone().acquire_owned().await;
            }
            tokio::select! {
                permit = uploads.clone().acquire_owned() => break permit,
                p = rx.recv() => match p {
                    Some(p) => {
                        bytes += p.bytes();
                        group.push(p);
                    }
                    None => open = false,
                },
            }
        };
        let Ok(permit) = permit else { break };
        let shared = shared.clone();
        tokio::spawn(async move {
            write_object(&shared, group).await;
            drop(permit);
        });
    }
}

async fn write_object(shared: &WriterShared, group: Vec<Pending>) {
    let started = Instant::now();
    let key = shared.objects.new_key();
    let total: usize = group.iter().map(Pending::bytes).sum();
    let mut body = BytesMut::with_capacity(total);
    let mut items = Vec::new();
    for pending in &group {
        for b in &pending.batches {
            let mut item = b.item.clone();
            item.position = body.len() as i64;
            debug_assert_eq!(item.length as usize, b.batch.len());
            body.extend_from_slice(&b.batch);
            items.push(item);
        }
    }
    let body = body.freeze();
    let result = upload_and_commit(shared, &key, body.clone(), &items, started).await;
    match &result {
        Ok(_) => {
            shared.metrics.objects_written.inc();
            shared
                .metrics
                .object_bytes_written
                .inc_by(body.len() as u64);
            shared
                .metrics
                .object_batches_written
                .inc_by(items.len() as u64);
        }
        Err(e) => {
            shared.metrics.object_write_failures.inc();
            tracing::warn!(object = %key, error = %e, "Writing an object of batches failed; its appends fail.");
        }
    }
    let mut outcomes = match result {
        Ok(o) => o.into_iter(),
        Err(e) => {
            let message = e.to_string();
            for pending in group {
                let err = match &e {
                    SharedError::ObjectStore(_) => SharedError::ObjectStore(message.clone()),
                    _ => SharedError::Metadata(message.clone()),
                };
                let _ = pending.done.send(Err(err));
            }
            return;
        }
    };
    // The committed batches go to the cache: readers on this node that follow the
    // partition's end read them without a GET.
    let mut at = 0usize;
    for pending in group {
        let n = pending.batches.len();
        let answer: Vec<Outcome> = outcomes.by_ref().take(n).collect();
        for (b, o) in pending.batches.iter().zip(&answer) {
            if let Outcome::Appended { .. } = o {
                shared
                    .cache
                    .insert(&key, items[at].position as u64, b.batch.clone());
            }
            at += 1;
        }
        let _ = pending.done.send(Ok(answer));
        drop(pending.permit);
    }
}

async fn upload_and_commit(
    shared: &WriterShared,
    key: &str,
    body: Bytes,
    items: &[CommitItem],
    started: Instant,
) -> Result<Vec<Outcome>> {
    // Registered first, so that the sweep knows a commit may come for it.
    shared.meta.register_object(key).await?;
    let put_started = Instant::now();
    shared.objects.put(key, body).await?;
    shared
        .metrics
        .put_seconds
        .observe(put_started.elapsed().as_secs_f64());
    if started.elapsed() > shared.commit_deadline {
        return Err(SharedError::ObjectStore(format!(
            "the upload took {:.1} s, longer than the commit deadline ({} s)",
            started.elapsed().as_secs_f64(),
            shared.commit_deadline.as_secs()
        )));
    }
    let commit_started = Instant::now();
    let committed = shared
        .meta
        .commit_object(key, shared.commit_deadline, items)
        .await?;
    shared
        .metrics
        .commit_seconds
        .observe(commit_started.elapsed().as_secs_f64());
    committed
        .into_iter()
        .map(|c| Outcome::from_sequencer(c.outcome, c.base_offset))
        .collect()
}
