//! Per-domain locks of one process over its index.
//!
//! Two locks per domain. The *commit* lock orders everything that indexes segments or
//! decides on chunks: an ingest commit (whose builder dedups against the index), the
//! tailer, and the commit of a GC run, which must not declare a chunk dead that an
//! ingest is about to reference. The *readers* lock keeps the index of a domain still
//! under work that reads it over time (a restore reads streams and chunk locations as
//! it goes): readers share it, and applying a GC manifest, which removes what
//! superseded segments indexed, needs it alone. Appending segments needs neither.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{
    Mutex as AsyncMutex, OwnedMutexGuard, OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock,
};

use crate::Index;

#[derive(Default)]
struct DomainLocks {
    commit: Arc<AsyncMutex<()>>,
    readers: Arc<RwLock<()>>,
}

/// The per-domain locks of an index.
#[derive(Default)]
pub(crate) struct Guards {
    map: Mutex<HashMap<String, Arc<DomainLocks>>>,
}

impl Guards {
    fn of(&self, domain: &str) -> Arc<DomainLocks> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(domain.to_owned()).or_default().clone()
    }
}

/// Held while indexing segments of a domain or committing a GC run.
pub type CommitGuard = OwnedMutexGuard<()>;

/// Held by work that reads a domain's index over time (restores, image updates).
pub type ReadGuard = OwnedRwLockReadGuard<()>;

/// Held alone while a GC manifest changes a domain's index; proves it to
/// [`Index::apply_manifest`].
pub struct ExclusiveGuard {
    domain: String,
    _guard: OwnedRwLockWriteGuard<()>,
}

impl ExclusiveGuard {
    /// The domain it holds.
    pub fn domain(&self) -> &str {
        &self.domain
    }
}

impl Index {
    /// Waits for and holds `domain`'s commit lock.
    pub async fn lock_commits(&self, domain: &str) -> CommitGuard {
        self.guards.of(domain).commit.clone().lock_owned().await
    }

    /// Waits until no GC manifest is being applied to `domain`, and keeps one from
    /// being applied until the guard is dropped.
    pub async fn read_domain(&self, domain: &str) -> ReadGuard {
        self.guards.of(domain).readers.clone().read_owned().await
    }

    /// Holds `domain`'s index alone once no reader holds it, waiting at most `wait`:
    /// None if readers are still at work then. New readers wait meanwhile, so the
    /// wait is kept short by callers that must not stall restores.
    pub async fn exclusive_domain(&self, domain: &str, wait: Duration) -> Option<ExclusiveGuard> {
        let lock = self.guards.of(domain).readers.clone();
        let guard = if wait.is_zero() {
            lock.try_write_owned().ok()
        } else {
            tokio::time::timeout(wait, lock.write_owned()).await.ok()
        }?;
        Some(ExclusiveGuard {
            domain: domain.to_owned(),
            _guard: guard,
        })
    }
}
