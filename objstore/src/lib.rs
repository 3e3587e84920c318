//! The object-store port: one async trait that every backend implements, plus the
//! backends (local directory, in-memory) and the conformance suite they all pass.
//!
//! Keys are `/`-separated relative paths such as `domains/d1/log/0000000000000001.seg`.
//! A store is rooted at a location (a directory, or a bucket/container and a key
//! prefix); keys are relative to that root.

use std::fmt::Debug;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

#[cfg(feature = "azure")]
pub mod azure;
pub mod conformance;
mod key;
mod local;
pub mod location;
mod memory;
pub mod metered;
#[cfg(feature = "s3")]
pub mod s3;
mod url;

pub use key::validate_key;
pub use local::LocalStore;
pub use memory::MemoryStore;
pub use metered::{MeteredStore, StoreCounts};
#[cfg(feature = "s3")]
pub use s3::{S3Config, S3Store};
pub use url::open_store;

/// An opaque version tag of an object's current content, as returned by writes and reads.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ETag(pub String);

/// What a successful write returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutResult {
    /// Version of the object as written; pass it to [`ObjectStore::put_if_match`].
    pub etag: ETag,
}

/// Metadata of one stored object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Key relative to the store's root.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
}

/// A whole object with its version.
#[derive(Clone, Debug)]
pub struct GetResult {
    /// The object's content.
    pub data: Bytes,
    /// The version of exactly this content.
    pub etag: ETag,
}

/// One page of a listing.
#[derive(Clone, Debug, Default)]
pub struct ListPage {
    /// Objects in ascending key order.
    pub objects: Vec<ObjectMeta>,
    /// Pass as `start_after` to get the next page; `None` when the listing is complete.
    pub next_start_after: Option<String>,
}

impl ListPage {
    /// A page from up to `max + 1` objects in key order, listed one beyond the page so
    /// that the extra one tells whether another page follows.
    pub fn from_overfetch(mut objects: Vec<ObjectMeta>, max: usize) -> Self {
        let next_start_after = if objects.len() > max {
            objects.truncate(max);
            objects.last().map(|o| o.key.clone())
        } else {
            None
        };
        ListPage {
            objects,
            next_start_after,
        }
    }
}

/// Errors a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The key does not exist.
    #[error("object not found: {key}")]
    NotFound { key: String },
    /// A create-only write found the key already present.
    #[error("object already exists: {key}")]
    AlreadyExists { key: String },
    /// A conditional write found a different version (or no object).
    #[error("precondition failed (object changed): {key}")]
    PreconditionFailed { key: String },
    /// The key or range is not acceptable.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The store location could not be opened or is misconfigured.
    #[error("store configuration: {0}")]
    Config(String),
    /// A local I/O failure.
    #[error("I/O error on {key}: {source}")]
    Io {
        key: String,
        #[source]
        source: std::io::Error,
    },
    /// The remote service failed (after retries).
    #[error("store backend error: {0}")]
    Backend(String),
}

/// Result type of the object-store port.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The object-store port. All operations are atomic per object: a reader sees either the
/// old or the new content of an object, never a mix, and never a partial write.
#[async_trait]
pub trait ObjectStore: Send + Sync + Debug + 'static {
    /// Writes `data` at `key`, replacing any existing object. Durable when it returns.
    async fn put(&self, key: &str, data: Bytes) -> Result<PutResult>;

    /// Writes `data` at `key` only if no object exists there; otherwise `AlreadyExists`.
    /// Exactly one of any number of concurrent callers for one key succeeds.
    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<PutResult>;

    /// Replaces the object at `key` only if its current version is `etag`; otherwise
    /// `PreconditionFailed` (also when the object does not exist).
    async fn put_if_match(&self, key: &str, data: Bytes, etag: &ETag) -> Result<PutResult>;

    /// Reads a whole object and its version.
    async fn get(&self, key: &str) -> Result<GetResult>;

    /// Reads bytes `range` of an object. A range reaching past the end is `Invalid`.
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes>;

    /// Metadata of an object.
    async fn head(&self, key: &str) -> Result<ObjectMeta>;

    /// Lists objects whose key starts with `prefix` and sorts after `start_after`, in
    /// ascending key order, at most `max` per page (`max` ≥ 1).
    async fn list(&self, prefix: &str, start_after: Option<&str>, max: usize) -> Result<ListPage>;

    /// Deletes an object. Deleting a missing object succeeds (idempotent).
    async fn delete(&self, key: &str) -> Result<()>;

    /// Lists every object under `prefix` that sorts after `start_after`, following pages.
    async fn list_all(&self, prefix: &str, start_after: Option<&str>) -> Result<Vec<ObjectMeta>> {
        let mut out = Vec::new();
        let mut after = start_after.map(str::to_owned);
        loop {
            let page = self.list(prefix, after.as_deref(), 1000).await?;
            out.extend(page.objects);
            match page.next_start_after {
                Some(next) => after = Some(next),
                None => return Ok(out),
            }
        }
    }
}

/// A shared handle to any store.
pub type DynStore = Arc<dyn ObjectStore>;
