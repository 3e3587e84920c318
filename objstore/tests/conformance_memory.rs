//! The in-memory store passes the conformance suite.

use std::sync::Arc;

use tidemark_objstore::{conformance, MemoryStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_conforms() {
    conformance::run_all(Arc::new(MemoryStore::new()), "suite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_conforms_at_root() {
    conformance::run_all(Arc::new(MemoryStore::new()), "").await;
}
