//! The leases this site holds on points of domains (DESIGN.md section 9): restore jobs,
//! test copies and warm replicas each hold the points they read, so that the owner's
//! GC (here or at another site) keeps them.
//!
//! The registry keeps what should be held; one task writes it to the bucket: new and
//! lowered leases at once, a replica's advancing lease at most every
//! [`ADVANCE_EVERY`], and every lease again each third of its time to live. A lease
//! that cannot be written is retried at the next tick and logged: the work it covers
//! goes on (a failed write leaves an older lease, or none, which only matters if the
//! owner's GC runs meanwhile).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tidemark_format::LeaseRecord;
use tidemark_objstore::DynStore;
use tidemark_pitr_index::Index;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// A replica's lease that moves forward is written no more often than this: moving it
/// forward only releases points, which can wait.
pub const ADVANCE_EVERY: Duration = Duration::from_secs(5);

/// How often the writer looks for leases due.
const TICK: Duration = Duration::from_secs(1);

/// (domain, holder).
type Key = (String, String);

#[derive(Clone, Debug)]
struct Held {
    seq: u64,
    onwards: bool,
    /// The seq last written and when.
    written: Option<(u64, Instant)>,
}

impl Held {
    /// Whether the bucket should be told now.
    fn due(&self, renew: Duration) -> bool {
        match self.written {
            None => true,
            // Lowered: the points below must be kept before the work reads them.
            Some((seq, _)) if self.seq < seq => true,
            Some((seq, at)) if self.seq > seq => at.elapsed() >= ADVANCE_EVERY,
            Some((_, at)) => at.elapsed() >= renew,
        }
    }
}

/// The registry of this site's leases and their writer.
pub struct Leases {
    store: DynStore,
    index: Arc<Index>,
    site: String,
    ttl: Duration,
    held: Mutex<BTreeMap<Key, Held>>,
    /// Released, to delete from the bucket.
    dropped: Mutex<BTreeSet<Key>>,
    /// Serialises the bucket's writes and deletes, so a renewal never brings back a
    /// lease released meanwhile.
    io: tokio::sync::Mutex<()>,
    wake: Notify,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Leases {
    /// An empty registry for `site`'s leases, lasting `ttl` unless renewed.
    pub fn new(store: DynStore, index: Arc<Index>, site: String, ttl: Duration) -> Arc<Leases> {
        Arc::new(Leases {
            store,
            index,
            site,
            ttl,
            held: Mutex::new(BTreeMap::new()),
            dropped: Mutex::new(BTreeSet::new()),
            io: tokio::sync::Mutex::new(()),
            wake: Notify::new(),
        })
    }

    /// Holds point `seq` of `domain` (and every later one if `onwards`) for `holder`;
    /// the writer stores it shortly. Moving a held lease keeps its last write's time.
    pub fn set(&self, domain: &str, holder: &str, seq: u64, onwards: bool) {
        let key = (domain.to_owned(), holder.to_owned());
        lock(&self.dropped).remove(&key);
        {
            let mut held = lock(&self.held);
            let entry = held.entry(key).or_insert(Held {
                seq,
                onwards,
                written: None,
            });
            entry.seq = seq;
            entry.onwards = onwards;
        }
        self.wake.notify_one();
    }

    /// Holds a point as [`Leases::set`] does and stores the lease before returning, so
    /// that work starting next is covered; a failed write is logged, not returned.
    pub async fn hold(&self, domain: &str, holder: &str, seq: u64, onwards: bool) {
        self.set(domain, holder, seq, onwards);
        let _io = self.io.lock().await;
        let key = (domain.to_owned(), holder.to_owned());
        let Some(h) = lock(&self.held).get(&key).cloned() else {
            return;
        };
        self.write(&key, &h).await;
    }

    /// Lets go of a lease; the writer deletes it shortly.
    pub fn clear(&self, domain: &str, holder: &str) {
        let key = (domain.to_owned(), holder.to_owned());
        if lock(&self.held).remove(&key).is_some() {
            lock(&self.dropped).insert(key);
            self.wake.notify_one();
        }
    }

    /// Lets go of a lease and deletes it before returning (errors are logged).
    pub async fn release(&self, domain: &str, holder: &str) {
        let key = (domain.to_owned(), holder.to_owned());
        lock(&self.held).remove(&key);
        lock(&self.dropped).remove(&key);
        let _io = self.io.lock().await;
        self.delete(&key).await;
    }

    /// The leases held, as (domain, holder, seq, onwards).
    #[cfg(test)]
    pub fn list(&self) -> Vec<(String, String, u64, bool)> {
        lock(&self.held)
            .iter()
            .map(|((d, h), l)| (d.clone(), h.clone(), l.seq, l.onwards))
            .collect()
    }

    /// Writes what is due and deletes what was released.
    pub async fn flush(&self) {
        let _io = self.io.lock().await;
        let dropped = std::mem::take(&mut *lock(&self.dropped));
        for key in dropped {
            self.delete(&key).await;
        }
        let renew = self.ttl / 3;
        let due: Vec<(Key, Held)> = lock(&self.held)
            .iter()
            .filter(|(_, h)| h.due(renew))
            .map(|(k, h)| (k.clone(), h.clone()))
            .collect();
        for (key, h) in due {
            self.write(&key, &h).await;
        }
    }

    /// Writes leases until `stop`; what is held stays in the bucket until it expires,
    /// so work resumed by the next start is still covered.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        loop {
            self.flush().await;
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = self.wake.notified() => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    /// Stores one lease (with the io lock held) and notes it written.
    async fn write(&self, key: &Key, h: &Held) {
        let (domain, holder) = key;
        let epoch = match self.index.gc_epoch(domain) {
            Ok(e) => e,
            Err(e) => {
                // Epoch 0 keeps every superseded object for the lease's life: safe.
                tracing::warn!(domain = %domain, "lease {holder}: cannot read the GC epoch: {e}");
                0
            }
        };
        let ttl = i64::try_from(self.ttl.as_nanos()).unwrap_or(i64::MAX);
        let lease = LeaseRecord {
            site: self.site.clone(),
            holder: holder.clone(),
            seq: h.seq,
            onwards: h.onwards,
            epoch,
            expires: tidemark_ingest::now_ns().saturating_add(ttl),
        };
        match tidemark_gc::lease::put_lease(&self.store, domain, &lease).await {
            Ok(()) => {
                if let Some(now) = lock(&self.held).get_mut(key) {
                    // Only if unchanged meanwhile: a moved lease is written again.
                    if now.seq == h.seq && now.onwards == h.onwards {
                        now.written = Some((h.seq, Instant::now()));
                    }
                }
            }
            Err(e) => {
                tracing::warn!(domain = %domain, "cannot write lease {holder} on point {}: {e}", h.seq)
            }
        }
    }

    async fn delete(&self, (domain, holder): &Key) {
        if let Err(e) =
            tidemark_gc::lease::drop_lease(&self.store, domain, &self.site, holder).await
        {
            tracing::warn!(domain = %domain, "cannot delete lease {holder} (it expires on its own): {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> (tempfile::TempDir, DynStore, Arc<Leases>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = tidemark_objstore::open_store(&dir.path().join("store").display().to_string())
            .expect("store");
        let index = Arc::new(Index::open(&dir.path().join("index")).expect("index"));
        let leases = Leases::new(
            store.clone(),
            index,
            "site-a".into(),
            Duration::from_secs(60),
        );
        (dir, store, leases)
    }

    async fn stored(store: &DynStore, domain: &str) -> Vec<LeaseRecord> {
        tidemark_gc::lease::read_leases(store, domain, tidemark_ingest::now_ns())
            .await
            .expect("read")
    }

    #[tokio::test]
    async fn held_lowered_advanced_and_released() {
        let (_dir, store, leases) = fixture();
        leases.hold("web", "restore-job-1", 7, false).await;
        let got = stored(&store, "web").await;
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].seq, got[0].onwards), (7, false));
        assert_eq!(got[0].site, "site-a");
        assert!(got[0].expires > tidemark_ingest::now_ns());

        leases.set("web", "replica", 10, true);
        leases.flush().await;
        assert_eq!(stored(&store, "web").await.len(), 2);
        // Lowered: written at once; advanced: only after ADVANCE_EVERY.
        leases.set("web", "replica", 4, true);
        leases.flush().await;
        let replica = |v: Vec<LeaseRecord>| v.into_iter().find(|l| l.holder == "replica");
        assert_eq!(replica(stored(&store, "web").await).map(|l| l.seq), Some(4));
        leases.set("web", "replica", 12, true);
        leases.flush().await;
        assert_eq!(replica(stored(&store, "web").await).map(|l| l.seq), Some(4));

        leases.clear("web", "replica");
        leases.flush().await;
        leases.release("web", "restore-job-1").await;
        assert!(stored(&store, "web").await.is_empty());
        assert!(leases.list().is_empty());
        // Released twice, or never held: nothing to do, no error.
        leases.release("web", "restore-job-1").await;
        leases.clear("web", "nobody");
    }
}
