//! The object store: objects of batches are written whole, read by byte ranges, and
//! listed and deleted by the orphan sweep.
//!
//! # Keys
//!
//! `<prefix>/data/<unix-ms, 13 digits>-<random 128 bits in hex>.batches`: unique without
//! coordination, and ordered by time in listings. An object holds the batches of one
//! write, back to back, as their producers sent them; Postgres says which partition and
//! offsets each one is (`ferry_batches`).

use crate::config::ObjectStoreUrl;
use crate::error::{Result, SharedError};
use bytes::Bytes;
use futures_util::StreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Clone)]
pub(crate) struct Objects {
    store: Arc<dyn ObjectStore>,
    prefix: String,
}

/// An object found by a listing.
#[derive(Debug, Clone)]
pub(crate) struct Listed {
    pub key: String,
    pub last_modified: SystemTime,
}

impl Objects {
    /// An S3-compatible store: the bucket and prefix from the URL; endpoint, region,
    /// credentials and path style from the `AWS_*` variables. An `http://` endpoint is
    /// allowed without `AWS_ALLOW_HTTP` (a local test server is the usual case).
    pub fn s3(url: &ObjectStoreUrl, options: &[(String, String)]) -> Result<Objects> {
        // HTTPS to the store with rustls's ring provider (another one installed first,
        // as the binary's, is kept).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(&url.bucket);
        let mut endpoint = std::env::var("AWS_ENDPOINT_URL_S3")
            .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
            .or_else(|_| std::env::var("AWS_ENDPOINT"))
            .unwrap_or_default();
        for (key, value) in options {
            let parsed: AmazonS3ConfigKey = key.parse().map_err(|_| {
                SharedError::Config(format!("object store option {key:?} is not an S3 setting"))
            })?;
            if matches!(parsed, AmazonS3ConfigKey::Endpoint) {
                endpoint = value.clone();
            }
            builder = builder.with_config(parsed, value);
        }
        if endpoint.starts_with("http://") {
            builder = builder.with_allow_http(true);
        }
        // A few quick retries: a produce waits for this, and a store that is down must
        // turn into a clear error within seconds, not minutes.
        builder = builder.with_retry(RetryConfig {
            max_retries: 3,
            retry_timeout: Duration::from_secs(10),
            ..Default::default()
        });
        let store = builder
            .build()
            .map_err(|e| SharedError::Config(format!("object store: {e}")))?;
        Ok(Objects {
            store: Arc::new(store),
            prefix: url.prefix.clone(),
        })
    }

    fn data_prefix(&self) -> String {
        if self.prefix.is_empty() {
            "data".to_string()
        } else {
            format!("{}/data", self.prefix)
        }
    }

    /// A new object's key.
    pub fn new_key(&self) -> String {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let id: u128 = rand::random();
        format!("{}/{ms:013}-{id:032x}.batches", self.data_prefix())
    }

    /// A key that sorts after every key made before `at` and before every key made
    /// from `at` on (keys start with their creation time in milliseconds).
    pub fn key_before(&self, at: SystemTime) -> String {
        let ms = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        format!("{}/{ms:013}", self.data_prefix())
    }

    pub async fn put(&self, key: &str, body: Bytes) -> Result<()> {
        self.store
            .put(&Path::from(key), PutPayload::from_bytes(body))
            .await?;
        Ok(())
    }

    /// The bytes of each range, checked to be exactly as long as asked.
    pub async fn get_ranges(&self, key: &str, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let got = match self.store.get_ranges(&Path::from(key), ranges).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(SharedError::ObjectGone(key.to_string()))
            }
            Err(e) => return Err(e.into()),
        };
        if got.len() != ranges.len() {
            return Err(SharedError::Corrupt {
                key: key.to_string(),
                position: ranges.first().map_or(0, |r| r.start),
                reason: format!("asked {} ranges, got {}", ranges.len(), got.len()),
            });
        }
        for (r, b) in ranges.iter().zip(&got) {
            if b.len() as u64 != r.end - r.start {
                return Err(SharedError::Corrupt {
                    key: key.to_string(),
                    position: r.start,
                    reason: format!(
                        "asked {} bytes, got {} (the object is shorter than Postgres says)",
                        r.end - r.start,
                        b.len()
                    ),
                });
            }
        }
        Ok(got)
    }

    /// Every data object, oldest first by key.
    pub async fn list_data(&self) -> Result<Vec<Listed>> {
        let prefix = Path::from(self.data_prefix());
        let mut stream = self.store.list(Some(&prefix));
        let mut out = Vec::new();
        while let Some(meta) = stream.next().await {
            let meta = meta?;
            out.push(Listed {
                key: meta.location.to_string(),
                last_modified: meta.last_modified.into(),
            });
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    pub async fn delete(&self, key: &str) -> Result<()> {
        match self.store.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
