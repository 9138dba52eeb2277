//! Settings of shared mode and the object store's URL.

use crate::error::{Result, SharedError};
use std::time::Duration;

/// How a node of shared mode reaches its storage and how it batches.
#[derive(Debug, Clone)]
pub struct SharedConfig {
    /// `postgres://user:password@host:port/database` (libpq's URL or key=value form).
    pub metadata_url: String,
    /// `s3://bucket/prefix`: objects are written under `prefix/`.
    pub object_store_url: String,
    /// Object store settings applied over the `AWS_*` variables, as (key, value) with
    /// object_store's S3 keys (`aws_endpoint`, `aws_access_key_id`, ...).
    pub object_store_options: Vec<(String, String)>,
    /// How long appends gather before one object is written for all of them. Zero:
    /// an object takes what is queued when an upload slot is free (appends still
    /// gather while every slot is busy, as a group commit does).
    pub linger: Duration,
    /// An object is written once the appends gathered reach this many bytes.
    pub object_bytes: usize,
    /// At most this many bytes of appends wait for their object at once; more are
    /// refused with [`SharedError::Busy`] (memory is bounded by this, not by producers).
    pub pending_bytes_max: usize,
    /// Objects written and committed at the same time.
    pub uploads_in_flight: usize,
    /// Bytes of batches kept in memory for readers.
    pub cache_bytes: usize,
    /// Postgres connections of this node.
    pub metadata_connections: usize,
    /// An object whose commit has not begun this long after its upload began is given
    /// up (the appends fail); the orphan sweep removes objects older than twice this
    /// that no batch names.
    pub commit_deadline: Duration,
    /// Batches in objects older than this are merged into objects of their partition
    /// alone (by the node that holds the compaction lease); zero turns merging off.
    pub compact_after: Duration,
    /// Largest object compaction writes.
    pub compacted_object_bytes: usize,
}

impl SharedConfig {
    pub fn new(metadata_url: impl Into<String>, object_store_url: impl Into<String>) -> Self {
        SharedConfig {
            metadata_url: metadata_url.into(),
            object_store_url: object_store_url.into(),
            object_store_options: Vec::new(),
            linger: Duration::ZERO,
            object_bytes: 4 * 1024 * 1024,
            pending_bytes_max: 64 * 1024 * 1024,
            uploads_in_flight: 4,
            cache_bytes: 64 * 1024 * 1024,
            metadata_connections: 8,
            commit_deadline: Duration::from_secs(60),
            compact_after: Duration::from_secs(60),
            compacted_object_bytes: 8 * 1024 * 1024,
        }
    }

    /// Checks every setting; the error names the one that is wrong.
    pub fn validate(&self) -> Result<()> {
        ObjectStoreUrl::parse(&self.object_store_url)?;
        if self.metadata_url.trim().is_empty() {
            return Err(SharedError::Config("the metadata URL is empty".into()));
        }
        let positive = [
            ("object bytes", self.object_bytes),
            ("pending bytes", self.pending_bytes_max),
            ("uploads in flight", self.uploads_in_flight),
            ("metadata connections", self.metadata_connections),
            ("compacted object bytes", self.compacted_object_bytes),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(SharedError::Config(format!("{name} must be at least 1")));
            }
        }
        if self.compacted_object_bytes > 1 << 30 {
            return Err(SharedError::Config(
                "compacted object bytes may be at most 1 GiB".into(),
            ));
        }
        if self.pending_bytes_max > 1 << 31 {
            return Err(SharedError::Config(
                "pending bytes may be at most 2 GiB".into(),
            ));
        }
        if self.commit_deadline < Duration::from_secs(1) {
            return Err(SharedError::Config(
                "the commit deadline must be at least 1 s".into(),
            ));
        }
        Ok(())
    }
}

/// `s3://bucket/prefix`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectStoreUrl {
    pub bucket: String,
    /// Without leading or trailing `/`; may be empty.
    pub prefix: String,
}

impl ObjectStoreUrl {
    pub fn parse(url: &str) -> Result<Self> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| {
            SharedError::Config(format!(
                "object store URL {url:?}: expected s3://bucket/prefix (the endpoint, region and credentials come from the AWS_* variables)"
            ))
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        // S3's bucket naming rules: 3-63 characters of lowercase letters, digits, dots and
        // hyphens, starting and ending with a letter or digit.
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
            && bucket.as_bytes()[0].is_ascii_alphanumeric()
            && bucket.as_bytes()[bucket.len() - 1].is_ascii_alphanumeric();
        if !bucket_ok {
            return Err(SharedError::Config(format!(
                "object store URL {url:?}: {bucket:?} is not a bucket name (3 to 63 lowercase letters, digits, '.' and '-')"
            )));
        }
        let prefix = prefix.trim_matches('/').to_string();
        if prefix.split('/').any(|p| p == "." || p == "..")
            || prefix.contains("//")
            || prefix.chars().any(|c| c.is_control())
        {
            return Err(SharedError::Config(format!(
                "object store URL {url:?}: the prefix may not hold '.', '..', empty parts or control characters"
            )));
        }
        Ok(ObjectStoreUrl {
            bucket: bucket.to_string(),
            prefix,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_store_urls() {
        let u = ObjectStoreUrl::parse("s3://ferry-data/prod/eu/").unwrap();
        assert_eq!(u.bucket, "ferry-data");
        assert_eq!(u.prefix, "prod/eu");
        assert_eq!(ObjectStoreUrl::parse("s3://abc").unwrap().prefix, "");
        for bad in [
            "http://abc/x",
            "s3://",
            "s3://AB",
            "s3://Upper/x",
            "s3://-abc/x",
            "s3://abc/../x",
            "s3://abc/a//b",
        ] {
            assert!(ObjectStoreUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn settings_are_checked() {
        let mut c = SharedConfig::new("postgres://x", "s3://bucket/p");
        c.validate().unwrap();
        c.uploads_in_flight = 0;
        assert!(c.validate().unwrap_err().to_string().contains("uploads"));
    }
}
