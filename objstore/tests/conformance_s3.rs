//! The S3 backend passes the conformance suite against a real S3-compatible server
//! (moto, started by scripts/test.sh), with single and multipart uploads.

use std::sync::Arc;

use tidemark_objstore::{conformance, open_store, S3Config, S3Store, StoreError};

/// The endpoint of the S3 server the suite runs against.
fn endpoint() -> String {
    std::env::var("TIDEMARK_TEST_S3_ENDPOINT")
        .expect("set TIDEMARK_TEST_S3_ENDPOINT; scripts/test.sh starts moto and sets it")
}

/// A bucket no other test uses, created on the server.
async fn fresh_store(prefix: &str, tweak: impl FnOnce(&mut S3Config)) -> S3Store {
    let bucket = format!("tdmk-{:016x}", rand::random::<u64>());
    let mut cfg = S3Config::new(bucket);
    cfg.endpoint = Some(endpoint());
    cfg.path_style = true;
    cfg.prefix = prefix.to_owned();
    tweak(&mut cfg);
    let store = S3Store::new(cfg).expect("config");
    store
        .create_bucket_if_missing()
        .await
        .expect("create bucket");
    store
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_store_conforms_with_multipart_uploads() {
    // 5 MiB parts from 5 MiB up: the suite's 9 MiB object is a two-part upload.
    let store = fresh_store("tenant/a", |c| {
        c.multipart_threshold = 5 << 20;
        c.part_size = 5 << 20;
    })
    .await;
    conformance::run_all(Arc::new(store), "suite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_store_conforms_at_bucket_root_through_a_url() {
    let store = fresh_store("", |c| c.checksums_when_required = true).await;
    let url = format!(
        "s3://{}?endpoint={}&checksums=when_required",
        store.config().bucket,
        endpoint()
    );
    conformance::run_all(open_store(&url).expect("open by URL"), "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_bucket_is_a_config_error() {
    let mut cfg = S3Config::new(format!("tdmk-missing-{:08x}", rand::random::<u32>()));
    cfg.endpoint = Some(endpoint());
    cfg.path_style = true;
    cfg.max_attempts = 2;
    let store = S3Store::new(cfg).expect("config");
    let err = tidemark_objstore::ObjectStore::get(&store, "domains/x/domain.json")
        .await
        .expect_err("bucket is missing");
    assert!(
        matches!(err, StoreError::Config(ref m) if m.contains("bucket does not exist")),
        "{err:?}"
    );
}
