//! The Azure Blob Storage store passes the conformance suite against Azurite.
//!
//! Needs `TIDEMARK_TEST_AZURE_CONNECTION_STRING` (scripts/test.sh starts Azurite and sets
//! it). Every test works in a container of its own.
#![cfg(feature = "azure")]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tidemark_objstore::azure::{AzureConfig, AzureCredential, AzureStore};
use tidemark_objstore::{conformance, ETag, ObjectStore, StoreError};

fn connection_string() -> String {
    match std::env::var("TIDEMARK_TEST_AZURE_CONNECTION_STRING") {
        Ok(cs) if !cs.trim().is_empty() => cs,
        _ => panic!(
            "set TIDEMARK_TEST_AZURE_CONNECTION_STRING; scripts/test.sh starts Azurite and sets it"
        ),
    }
}

/// A container name no other test (or earlier run against the same Azurite) uses.
fn unique_container(tag: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "tm-{tag}-{}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos % 1_000_000_000_000
    )
}

fn config(tag: &str) -> AzureConfig {
    AzureConfig::from_connection_string(&connection_string(), unique_container(tag))
        .expect("parse TIDEMARK_TEST_AZURE_CONNECTION_STRING")
}

async fn open(config: AzureConfig) -> AzureStore {
    let store = AzureStore::new(config).expect("open store");
    store
        .create_container_if_missing()
        .await
        .expect("create container");
    store
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn azure_store_conforms_below_a_prefix_with_staged_blocks() {
    let mut config = config("prefix");
    config.prefix = "tenant/backups".into();
    // The 9 MiB object of the suite goes through three 3 MiB staged blocks, and its
    // reads through 3 MiB ranged requests that do not line up with 4 MiB.
    config.block_threshold = 4 << 20;
    config.block_size = 3 << 20;
    let store = open(config).await;
    // Creating an existing container is fine.
    store
        .create_container_if_missing()
        .await
        .expect("create again");
    conformance::run_all(Arc::new(store), "suite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn azure_store_conforms_at_container_root() {
    conformance::run_all(Arc::new(open(config("root")).await), "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn staged_uploads_honour_conditions() {
    let mut config = config("staged");
    config.block_threshold = 64 << 10;
    config.block_size = 50 << 10;
    let store = open(config).await;
    let big = |seed: u8| {
        Bytes::from(
            (0..200_000u32)
                .map(|i| (i as u8) ^ seed)
                .collect::<Vec<u8>>(),
        )
    };

    let first = store
        .put_if_absent("big", big(1))
        .await
        .expect("create-only write of a staged object");
    match store.put_if_absent("big", big(2)).await {
        Err(StoreError::AlreadyExists { .. }) => {}
        other => panic!("second create-only write: {other:?}"),
    }
    let got = store.get("big").await.expect("get");
    assert!(got.data == big(1), "content after a refused write");
    assert_eq!(got.etag, first.etag, "etag of a staged object");

    let second = store
        .put_if_match("big", big(3), &first.etag)
        .await
        .expect("conditional replace of a staged object");
    assert_ne!(second.etag, first.etag);
    for etag in [first.etag.clone(), ETag("\"0x8D000000000000\"".into())] {
        match store.put_if_match("big", big(4), &etag).await {
            Err(StoreError::PreconditionFailed { .. }) => {}
            other => panic!("stale conditional replace: {other:?}"),
        }
    }
    match store.put_if_match("absent", big(5), &second.etag).await {
        Err(StoreError::PreconditionFailed { .. }) => {}
        other => panic!("conditional replace of a missing object: {other:?}"),
    }
    let got = store.get("big").await.expect("get");
    assert!(got.data == big(3));
    assert_eq!(got.etag, second.etag);
    store.delete("big").await.expect("cleanup");
}

fn expect_config<T: std::fmt::Debug>(r: Result<T, StoreError>, what: &str) -> String {
    match r {
        Err(StoreError::Config(msg)) => msg,
        other => panic!("{what}: expected StoreError::Config, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_account_key_is_a_config_error() {
    let good = config("badkey");
    let container = good.container.clone();
    // The container exists, so only the key can be wrong.
    open(good.clone()).await;
    let mut bad = good;
    bad.credential = AzureCredential::AccountKey(
        "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmcta2V5LXdyb25nLWtleQ==".into(),
    );
    let store = AzureStore::new(bad).expect("a wrong key is only noticed by the service");
    let msg = expect_config(store.put("k", Bytes::from_static(b"x")).await, "put");
    assert!(
        msg.contains("refused access") && msg.contains(&container),
        "{msg}"
    );
    assert!(!msg.contains("d3Jvbmc"), "the message shows the key: {msg}");
    expect_config(store.get("k").await.map(|r| r.data), "get");
    expect_config(store.head("k").await, "head");
    expect_config(store.list("", None, 10).await.map(|p| p.objects), "list");
    expect_config(
        store.create_container_if_missing().await,
        "create container",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn missing_container_is_a_clear_error() {
    let config = config("missing");
    let container = config.container.clone();
    let store = AzureStore::new(config).expect("open without creating the container");
    let msg = expect_config(store.put("k", Bytes::from_static(b"x")).await, "put");
    assert!(
        msg.contains(&container) && msg.contains("does not exist"),
        "{msg}"
    );
    for (what, r) in [
        ("get", store.get("k").await.map(|_| ())),
        ("head", store.head("k").await.map(|_| ())),
        ("delete", store.delete("k").await),
        ("list", store.list("", None, 10).await.map(|_| ())),
        (
            "put_if_absent",
            store.put_if_absent("k", Bytes::new()).await.map(|_| ()),
        ),
    ] {
        let msg = expect_config(r, what);
        assert!(msg.contains("does not exist"), "{what}: {msg}");
    }
}
