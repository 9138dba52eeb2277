//! Shared mode's floors and ceilings, measured with the same clients the shared log
//! uses (for `ferry-bench shared`): the object store's own PUT latency and Postgres's
//! rate of sequencing transactions.

use crate::config::{ObjectStoreUrl, SharedConfig};
use crate::error::Result;
use crate::meta::{CommitItem, Meta, StoredTopic};
use crate::objects::Objects;
use bytes::Bytes;
use std::time::{Duration, Instant};

/// The time of each of `count` PUTs of `bytes`-byte objects, one after another; the
/// objects are deleted afterwards.
pub async fn put_latency(
    config: &SharedConfig,
    bytes: usize,
    count: usize,
) -> Result<Vec<Duration>> {
    let url = ObjectStoreUrl::parse(&config.object_store_url)?;
    let objects = Objects::s3(&url, &config.object_store_options)?;
    let body = Bytes::from(vec![0x42u8; bytes]);
    let mut times = Vec::with_capacity(count);
    let mut keys = Vec::with_capacity(count);
    for _ in 0..count {
        let key = objects.new_key();
        let started = Instant::now();
        objects.put(&key, body.clone()).await?;
        times.push(started.elapsed());
        keys.push(key);
    }
    for key in keys {
        objects.delete(&key).await?;
    }
    Ok(times)
}

/// Objects sequenced per second by `connections` concurrent committers, each object
/// one batch of the committer's own partition: its registration and its commit, the
/// two round trips one object costs Postgres. The probe's rows are removed
/// afterwards.
pub async fn sequencer_rate(
    config: &SharedConfig,
    connections: usize,
    duration: Duration,
) -> Result<f64> {
    let meta = Meta::connect(&config.metadata_url, connections, connections).await?;
    let name = format!("probe-{:016x}", rand::random::<u64>());
    let topic = StoredTopic {
        name: name.clone(),
        topic_id: name.clone(),
        config_json: "{}".into(),
    };
    meta.create_topic(&topic, connections as u32).await?;
    let started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|p| {
            let meta = meta.clone();
            let topic_id = name.clone();
            tokio::spawn(async move {
                let item = CommitItem {
                    topic_id,
                    partition: p as i32,
                    position: 0,
                    length: 100,
                    records: 1,
                    max_timestamp: 0,
                    producer_id: -1,
                    producer_epoch: -1,
                    first_sequence: -1,
                    kind: 0,
                };
                let mut n = 0u64;
                while started.elapsed() < duration {
                    let key = format!("probe/{:032x}", rand::random::<u128>());
                    meta.register_object(&key).await?;
                    meta.commit_object(&key, Duration::from_secs(60), std::slice::from_ref(&item))
                        .await?;
                    n += 1;
                }
                Ok::<u64, crate::SharedError>(n)
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t
            .await
            .map_err(|e| crate::SharedError::Metadata(format!("a probe task failed: {e}")))??;
    }
    let secs = started.elapsed().as_secs_f64();
    meta.delete_topic(&name).await?;
    Ok(total as f64 / secs)
}
