//! The object stores end-to-end tests run against: a local directory, and the real S3
//! (moto) and Azure (Azurite) servers that scripts/test.sh starts on 127.0.0.1.

use std::path::Path;
use std::sync::Arc;

use tidemark_objstore::{DynStore, LocalStore, S3Config, S3Store};

/// One kind of object store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A directory (the embedded default).
    Local,
    /// An S3-compatible server, from `TIDEMARK_TEST_S3_ENDPOINT`.
    S3,
    /// An Azure Blob server, from `TIDEMARK_TEST_AZURE_CONNECTION_STRING`.
    Azure,
}

impl Backend {
    /// Every backend, local first.
    pub const ALL: [Backend; 3] = [Backend::Local, Backend::S3, Backend::Azure];

    /// A fresh, empty store: a directory under `dir`, a new bucket, a new container.
    pub async fn fresh_store(self, dir: &Path) -> DynStore {
        match self {
            Backend::Local => Arc::new(LocalStore::open(dir.join("store")).expect("local store")),
            Backend::S3 => {
                let endpoint = std::env::var("TIDEMARK_TEST_S3_ENDPOINT").expect(
                    "set TIDEMARK_TEST_S3_ENDPOINT; scripts/test.sh starts moto and sets it",
                );
                let mut cfg = S3Config::new(format!("tdmk-{:016x}", rand::random::<u64>()));
                cfg.endpoint = Some(endpoint);
                cfg.path_style = true;
                cfg.prefix = "dr".into();
                let store = S3Store::new(cfg).expect("s3 config");
                store
                    .create_bucket_if_missing()
                    .await
                    .expect("create bucket");
                Arc::new(store)
            }
            Backend::Azure => azure_store().await,
        }
    }
}

/// A new container on the Azure test server.
async fn azure_store() -> DynStore {
    use tidemark_objstore::azure::{AzureConfig, AzureStore};
    let cs = std::env::var("TIDEMARK_TEST_AZURE_CONNECTION_STRING").expect(
        "set TIDEMARK_TEST_AZURE_CONNECTION_STRING; scripts/test.sh starts Azurite and sets it",
    );
    let container = format!("tdmk-{:016x}", rand::random::<u64>());
    let mut cfg = AzureConfig::from_connection_string(&cs, container).expect("azure config");
    cfg.prefix = "dr".into();
    let store = AzureStore::new(cfg).expect("azure store");
    store
        .create_container_if_missing()
        .await
        .expect("create container");
    Arc::new(store)
}
