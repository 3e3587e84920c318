//! Uploads sealed packs while the next one is being filled. The channel holds one
//! pack and at most `concurrency` are in flight, so memory stays bounded.
//!
//! The buffer of a stored pack is given back to fill the next one in: a fresh 64 MiB
//! buffer costs a page fault and the zeroing of a page for every 4 KiB written to it,
//! 0.3 – 0.5 s of a full protect's system time on the benchmark's image.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tidemark_format::{keys, PackId};
use tidemark_objstore::{DynStore, StoreError};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::{IngestError, Result};

/// Buffers of stored packs kept for reuse; more than this are freed.
const SPARE_BUFFERS: usize = 2;

type Spares = Arc<Mutex<Vec<Vec<u8>>>>;

/// The filling side: called from the (blocking) segment builder.
pub(crate) struct PackSink {
    tx: mpsc::Sender<(PackId, Vec<u8>)>,
    spares: Spares,
}

impl PackSink {
    /// The buffer of a stored pack to fill the next one in, or a new (empty) one.
    pub fn spare(&self) -> Vec<u8> {
        self.spares
            .lock()
            .ok()
            .and_then(|mut spares| spares.pop())
            .unwrap_or_default()
    }

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
    let spares = Spares::default();
    let returned = spares.clone();
    let task = tokio::spawn(async move {
        let mut inflight = JoinSet::new();
        while let Some((id, bytes)) = rx.recv().await {
            while inflight.len() >= concurrency.max(1) {
                join_one(&mut inflight).await?;
            }
            let store = store.clone();
            let key = keys::pack_key(&domain, id);
            let spares = returned.clone();
            inflight.spawn(async move {
                let bytes = Bytes::from(bytes);
                store.put(&key, bytes.clone()).await?;
                give_back(bytes, &spares);
                Ok(())
            });
        }
        while !inflight.is_empty() {
            join_one(&mut inflight).await?;
        }
        Ok(())
    });
    (PackSink { tx, spares }, task)
}

/// Keeps the buffer of a stored pack as a spare, if the store let go of it and fewer
/// than `SPARE_BUFFERS` are kept.
fn give_back(stored: Bytes, spares: &Spares) {
    if let (Ok(mut buf), Ok(mut spares)) = (stored.try_into_mut(), spares.lock()) {
        if spares.len() < SPARE_BUFFERS {
            // Emptied first, so that taking the Vec out moves no bytes.
            buf.clear();
            spares.push(buf.into());
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A stored pack's buffer comes back emptied, with its memory, once the store let
    /// go of it; one the store still holds is left alone; no more than
    /// `SPARE_BUFFERS` are kept.
    #[test]
    fn buffers_come_back_only_when_the_store_let_go() {
        let spares = Spares::default();
        let mut pack = Vec::with_capacity(1 << 20);
        pack.extend_from_slice(&[7u8; 4096]);
        let at = pack.as_ptr();
        give_back(Bytes::from(pack), &spares);
        let back = spares.lock().expect("lock").pop().expect("given back");
        assert_eq!(
            (back.as_ptr(), back.len(), back.capacity()),
            (at, 0, 1 << 20)
        );

        let held = Bytes::from(vec![9u8; 4096]);
        give_back(held.clone(), &spares);
        assert!(spares.lock().expect("lock").is_empty());
        assert_eq!(held, vec![9u8; 4096]);

        for _ in 0..SPARE_BUFFERS + 2 {
            give_back(Bytes::from(vec![1u8; 100]), &spares);
        }
        assert_eq!(spares.lock().expect("lock").len(), SPARE_BUFFERS);
    }
}
