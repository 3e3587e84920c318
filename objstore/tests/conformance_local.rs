//! The local-directory store passes the conformance suite.

use std::sync::Arc;

use tidemark_objstore::{conformance, open_store, LocalStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_store_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LocalStore::open(dir.path().join("store")).expect("open");
    conformance::run_all(Arc::new(store), "suite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_store_conforms_at_root() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("file://{}", dir.path().display());
    conformance::run_all(open_store(&url).expect("open"), "").await;
    // Every check cleans up after itself, and deletes prune empty directories.
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .expect("read root")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, [".locks", ".tmp"], "leftovers in the store root");
    let tmp = std::fs::read_dir(dir.path().join(".tmp"))
        .expect("read .tmp")
        .count();
    assert_eq!(tmp, 0, "temp files left behind");
    let locks = std::fs::read_dir(dir.path().join(".locks"))
        .expect("read .locks")
        .count();
    assert_eq!(locks, 0, "lock files of deleted keys left behind");
}
