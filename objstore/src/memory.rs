//! An in-process store for unit tests: same semantics as the other backends, no I/O.

use std::collections::BTreeMap;
use std::ops::{Bound, Range};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use bytes::Bytes;

use crate::key::{validate_key, validate_prefix};
use crate::{ETag, GetResult, ListPage, ObjectMeta, ObjectStore, PutResult, Result, StoreError};

/// An object store held in memory; for tests only (nothing is persisted).
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Key → (content, version); the version is the etag.
    objects: BTreeMap<String, (Bytes, u64)>,
    /// Last version handed out; versions are never reused, even across deletes, so a
    /// stale etag can never match a recreated object.
    last_version: u64,
}

impl Inner {
    fn store(&mut self, key: &str, data: Bytes) -> PutResult {
        self.last_version += 1;
        let version = self.last_version;
        self.objects.insert(key.to_owned(), (data, version));
        PutResult {
            etag: etag_of(version),
        }
    }
}

fn etag_of(version: u64) -> ETag {
    ETag(version.to_string())
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every critical section leaves the map consistent, so a panic elsewhere while
        // holding the lock does not make the data unusable.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn not_found(key: &str) -> StoreError {
    StoreError::NotFound {
        key: key.to_owned(),
    }
}

#[async_trait]
impl ObjectStore for MemoryStore {
    async fn put(&self, key: &str, data: Bytes) -> Result<PutResult> {
        validate_key(key)?;
        Ok(self.lock().store(key, data))
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<PutResult> {
        validate_key(key)?;
        let mut inner = self.lock();
        if inner.objects.contains_key(key) {
            return Err(StoreError::AlreadyExists {
                key: key.to_owned(),
            });
        }
        Ok(inner.store(key, data))
    }

    async fn put_if_match(&self, key: &str, data: Bytes, etag: &ETag) -> Result<PutResult> {
        validate_key(key)?;
        let mut inner = self.lock();
        match inner.objects.get(key) {
            Some((_, version)) if etag_of(*version) == *etag => Ok(inner.store(key, data)),
            _ => Err(StoreError::PreconditionFailed {
                key: key.to_owned(),
            }),
        }
    }

    async fn get(&self, key: &str) -> Result<GetResult> {
        validate_key(key)?;
        let inner = self.lock();
        let (data, version) = inner.objects.get(key).ok_or_else(|| not_found(key))?;
        Ok(GetResult {
            data: data.clone(),
            etag: etag_of(*version),
        })
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        validate_key(key)?;
        if range.start > range.end {
            return Err(StoreError::Invalid(format!(
                "range {range:?} of {key:?}: start is after end"
            )));
        }
        let data = {
            let inner = self.lock();
            inner
                .objects
                .get(key)
                .ok_or_else(|| not_found(key))?
                .0
                .clone()
        };
        let size = data.len() as u64;
        if range.end > size {
            return Err(StoreError::Invalid(format!(
                "range {range:?} of {key:?} reaches past the end ({size} bytes)"
            )));
        }
        // Both bounds are ≤ data.len(), which is a usize, so the casts are lossless.
        Ok(data.slice(range.start as usize..range.end as usize))
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        validate_key(key)?;
        let inner = self.lock();
        let (data, _) = inner.objects.get(key).ok_or_else(|| not_found(key))?;
        Ok(ObjectMeta {
            key: key.to_owned(),
            size: data.len() as u64,
        })
    }

    async fn list(&self, prefix: &str, start_after: Option<&str>, max: usize) -> Result<ListPage> {
        validate_prefix(prefix)?;
        if max == 0 {
            return Err(StoreError::Invalid("list: max must be at least 1".into()));
        }
        let lower = match start_after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        let inner = self.lock();
        let objects: Vec<ObjectMeta> = inner
            .objects
            .range::<str, _>((lower, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(max.saturating_add(1))
            .map(|(k, (data, _))| ObjectMeta {
                key: k.clone(),
                size: data.len() as u64,
            })
            .collect();
        Ok(ListPage::from_overfetch(objects, max))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        self.lock().objects.remove(key);
        Ok(())
    }
}
