//! A store wrapper that counts requests and bytes by operation, for reports and
//! metrics: "requests per GiB restored" is what a remote store bills and what bounds a
//! restore's speed on high-latency links.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::{DynStore, ETag, GetResult, ListPage, ObjectMeta, ObjectStore, PutResult, Result};

/// Requests and bytes seen so far (calls, including failed ones).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreCounts {
    /// Writes of every kind.
    pub puts: u64,
    /// Whole-object reads.
    pub gets: u64,
    /// Ranged reads.
    pub range_gets: u64,
    /// Metadata reads.
    pub heads: u64,
    /// Listing pages.
    pub lists: u64,
    /// Deletes.
    pub deletes: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Bytes read.
    pub bytes_read: u64,
}

impl StoreCounts {
    /// All requests.
    pub fn requests(&self) -> u64 {
        self.puts + self.gets + self.range_gets + self.heads + self.lists + self.deletes
    }
}

#[derive(Debug, Default)]
struct Counters {
    puts: AtomicU64,
    gets: AtomicU64,
    range_gets: AtomicU64,
    heads: AtomicU64,
    lists: AtomicU64,
    deletes: AtomicU64,
    bytes_written: AtomicU64,
    bytes_read: AtomicU64,
}

/// Wraps a store and counts what goes through it.
#[derive(Debug, Clone)]
pub struct MeteredStore {
    inner: DynStore,
    counters: Arc<Counters>,
}

impl MeteredStore {
    /// Counts the requests made to `inner` through the returned store.
    pub fn new(inner: DynStore) -> Self {
        MeteredStore {
            inner,
            counters: Arc::default(),
        }
    }

    /// The counts so far.
    pub fn counts(&self) -> StoreCounts {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StoreCounts {
            puts: get(&c.puts),
            gets: get(&c.gets),
            range_gets: get(&c.range_gets),
            heads: get(&c.heads),
            lists: get(&c.lists),
            deletes: get(&c.deletes),
            bytes_written: get(&c.bytes_written),
            bytes_read: get(&c.bytes_read),
        }
    }

    fn count_put(&self, len: usize) {
        self.counters.puts.fetch_add(1, Ordering::Relaxed);
        self.counters
            .bytes_written
            .fetch_add(len as u64, Ordering::Relaxed);
    }

    fn count_read(&self, len: usize) {
        self.counters
            .bytes_read
            .fetch_add(len as u64, Ordering::Relaxed);
    }
}

#[async_trait]
impl ObjectStore for MeteredStore {
    async fn put(&self, key: &str, data: Bytes) -> Result<PutResult> {
        self.count_put(data.len());
        self.inner.put(key, data).await
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<PutResult> {
        self.count_put(data.len());
        self.inner.put_if_absent(key, data).await
    }

    async fn put_if_match(&self, key: &str, data: Bytes, etag: &ETag) -> Result<PutResult> {
        self.count_put(data.len());
        self.inner.put_if_match(key, data, etag).await
    }

    async fn get(&self, key: &str) -> Result<GetResult> {
        self.counters.gets.fetch_add(1, Ordering::Relaxed);
        let got = self.inner.get(key).await?;
        self.count_read(got.data.len());
        Ok(got)
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        self.counters.range_gets.fetch_add(1, Ordering::Relaxed);
        let got = self.inner.get_range(key, range).await?;
        self.count_read(got.len());
        Ok(got)
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        self.counters.heads.fetch_add(1, Ordering::Relaxed);
        self.inner.head(key).await
    }

    async fn list(&self, prefix: &str, start_after: Option<&str>, max: usize) -> Result<ListPage> {
        self.counters.lists.fetch_add(1, Ordering::Relaxed);
        self.inner.list(prefix, start_after, max).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.counters.deletes.fetch_add(1, Ordering::Relaxed);
        self.inner.delete(key).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;

    #[tokio::test]
    async fn counts_requests_and_bytes() {
        let store = MeteredStore::new(Arc::new(MemoryStore::new()));
        store
            .put("a/b", Bytes::from_static(b"12345"))
            .await
            .expect("put");
        store.get_range("a/b", 1..3).await.expect("range");
        store.get("a/b").await.expect("get");
        assert!(store.get("a/missing").await.is_err());
        store.list_all("a/", None).await.expect("list");
        let c = store.counts();
        assert_eq!((c.puts, c.gets, c.range_gets, c.lists), (1, 2, 1, 1));
        assert_eq!((c.bytes_written, c.bytes_read), (5, 7));
        assert_eq!(c.requests(), 5);
    }
}
