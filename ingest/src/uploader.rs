//! Uploads sealed packs while the next one is being filled. The channel holds one
//! pack and at most `concurrency` are in flight, so memory stays bounded.

use bytes::Bytes;
use tidemark_format::{keys, PackId};
use tidemark_objstore::{DynStore, StoreError};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::{IngestError, Result};

/// The filling side: called from the (blocking) segment builder.
pub(crate) struct PackSink {
    tx: mpsc::Sender<(PackId, Vec<u8>)>,
}

impl PackSink {
    pub fn submit(&self, id: PackId, bytes: Vec<u8>) -> Result<()> {
        self.tx
            .blocking_send((id, bytes))
            .map_err(|_| IngestError::Store(StoreError::Backend("pack upload stopped".into())))
    }
}

/// Starts the uploader for one segment's packs. Its task ends when the sink is dropped
/// and every upload finished, or at the first failed upload.
pub(crate) fn start(
    store: DynStore,
    domain: String,
    concurrency: usize,
) -> (PackSink, tokio::task::JoinHandle<Result<()>>) {
    let (tx, mut rx) = mpsc::channel::<(PackId, Vec<u8>)>(1);
    let task = tokio::spawn(async move {
        let mut inflight = JoinSet::new();
        while let Some((id, bytes)) = rx.recv().await {
            while inflight.len() >= concurrency.max(1) {
                join_one(&mut inflight).await?;
            }
            let store = store.clone();
            let key = keys::pack_key(&domain, id);
            inflight.spawn(async move { store.put(&key, Bytes::from(bytes)).await.map(|_| ()) });
        }
        while !inflight.is_empty() {
            join_one(&mut inflight).await?;
        }
        Ok(())
    });
    (PackSink { tx }, task)
}

async fn join_one(set: &mut JoinSet<Result<(), StoreError>>) -> Result<()> {
    match set.join_next().await {
        Some(Ok(r)) => Ok(r?),
        Some(Err(e)) => Err(IngestError::Store(StoreError::Backend(format!(
            "upload task: {e}"
        )))),
        None => Ok(()),
    }
}
