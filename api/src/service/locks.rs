//! One lock per domain over indexing: the pipe's commits and the tailer's catch-up
//! both index segments, and a segment indexed by the tailer first would lose the state
//! the writer commits with it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// The per-domain indexing locks of this process.
#[derive(Clone, Default)]
pub struct DomainLocks {
    locks: Arc<Mutex<HashMap<String, Arc<AsyncMutex<()>>>>>,
}

impl DomainLocks {
    /// Waits for and holds `domain`'s lock.
    pub async fn lock(&self, domain: &str) -> OwnedMutexGuard<()> {
        let lock = {
            let mut map = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(domain.to_owned()).or_default().clone()
        };
        lock.lock_owned().await
    }
}
