//! Fetching chunks: neighbouring frames of a pack are coalesced into one ranged GET,
//! ranges are fetched concurrently (bounded), and each range is decompressed, verified
//! and written on the rayon pool. At most `concurrency` ranges are in memory at once.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use tidemark_format::pack::decode_chunk;
use tidemark_format::{keys, ChunkHash, PackId};
use tidemark_objstore::DynStore;
use tidemark_pitr_index::{sync, ChunkLocation, Index};

use crate::placement::Placement;
use crate::restore::{RestoreOptions, RestoreProgress};
use crate::{RestoreError, Result};

/// One chunk to read and where its bytes go.
pub(crate) struct ChunkJob {
    pub hash: ChunkHash,
    pub loc: ChunkLocation,
    pub placements: Vec<Placement>,
}

/// One ranged GET of a pack and the chunks it holds.
pub(crate) struct RangeRead {
    pub pack: PackId,
    pub start: u64,
    pub end: u64,
    pub jobs: Vec<ChunkJob>,
}

/// Sorts jobs by pack and offset and merges neighbours into ranges: a gap of up to
/// `gap` bytes is read rather than paying for another request, up to `max_len`.
pub(crate) fn coalesce(mut jobs: Vec<ChunkJob>, gap: u64, max_len: u64) -> Vec<RangeRead> {
    jobs.sort_by_key(|j| (j.loc.pack, j.loc.offset));
    let mut out: Vec<RangeRead> = Vec::new();
    for j in jobs {
        let (start, end) = (j.loc.offset, j.loc.offset + j.loc.clen as u64);
        if let Some(r) = out.last_mut() {
            if r.pack == j.loc.pack
                && start >= r.end
                && start - r.end <= gap
                && end - r.start <= max_len
            {
                r.end = end;
                r.jobs.push(j);
                continue;
            }
        }
        out.push(RangeRead {
            pack: j.loc.pack,
            start,
            end,
            jobs: vec![j],
        });
    }
    out
}

/// Verifies the index of every pack the ranges read (once per restore) and that each
/// chunk sits in its pack where the local index says.
pub(crate) async fn verify_packs(
    store: &DynStore,
    index: &Index,
    domain: &str,
    ranges: &[RangeRead],
    verified: &mut HashSet<PackId>,
    concurrency: usize,
) -> Result<()> {
    let mut by_pack: HashMap<PackId, Vec<&ChunkJob>> = HashMap::new();
    for r in ranges {
        if !verified.contains(&r.pack) {
            by_pack.entry(r.pack).or_default().extend(&r.jobs);
        }
    }
    let checks = futures::stream::iter(by_pack.into_iter().map(|(id, jobs)| async move {
        let key = keys::pack_key(domain, id);
        let size = index.pack_info(domain, id)?.map(|p| p.size);
        let (_, entries) = sync::read_pack_tail(store, domain, id, size)
            .await
            .map_err(|e| RestoreError::reading(&key, e))?;
        let at: HashMap<(u64, ChunkHash), _> =
            entries.iter().map(|e| ((e.offset, e.hash), e)).collect();
        for j in jobs {
            let ok = at.get(&(j.loc.offset, j.hash)).is_some_and(|e| {
                e.clen == j.loc.clen && e.ulen == j.loc.ulen && e.codec == j.loc.codec
            });
            if !ok {
                return Err(RestoreError::corrupt(
                    &key,
                    format!(
                        "does not hold chunk {} where the index says",
                        j.hash.to_hex()
                    ),
                ));
            }
        }
        Ok::<_, RestoreError>(id)
    }))
    .buffer_unordered(concurrency.max(1));
    let ids: Vec<PackId> = checks.try_collect().await?;
    verified.extend(ids);
    Ok(())
}

async fn on_rayon<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    rayon::spawn(move || {
        let _ = tx.send(f());
    });
    rx.await
        .map_err(|_| RestoreError::Invalid("a restore worker panicked".into()))?
}

/// What fetching did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct FetchStats {
    pub requests: u64,
    pub fetched_bytes: u64,
    pub chunks: u64,
}

impl FetchStats {
    pub(crate) fn add(&mut self, o: FetchStats) {
        self.requests += o.requests;
        self.fetched_bytes += o.fetched_bytes;
        self.chunks += o.chunks;
    }
}

/// Fetches, verifies and writes every range into `file`.
pub(crate) async fn execute(
    store: &DynStore,
    domain: &str,
    ranges: Vec<RangeRead>,
    file: Arc<File>,
    path: &str,
    opts: &RestoreOptions,
    progress: &RestoreProgress,
) -> Result<FetchStats> {
    let stats = FetchStats {
        requests: ranges.len() as u64,
        fetched_bytes: ranges.iter().map(|r| r.end - r.start).sum(),
        chunks: ranges.iter().map(|r| r.jobs.len() as u64).sum(),
    };
    futures::stream::iter(ranges)
        .map(|r| {
            let file = file.clone();
            async move {
                if progress.cancelled.load(Ordering::Relaxed) {
                    return Err(RestoreError::Cancelled);
                }
                let key = keys::pack_key(domain, r.pack);
                let bytes = store
                    .get_range(&key, r.start..r.end)
                    .await
                    .map_err(|e| RestoreError::store(&key, e))?;
                let path = path.to_owned();
                on_rayon(move || {
                    let mut written = 0u64;
                    for j in r.jobs {
                        let from = (j.loc.offset - r.start) as usize;
                        let frame = &bytes[from..from + j.loc.clen as usize];
                        let data = decode_chunk(frame, j.loc.codec, j.loc.ulen, j.hash)
                            .map_err(|e| RestoreError::format(&key, e))?;
                        for p in j.placements {
                            let end = p.chunk_offset as usize + p.len as usize;
                            let piece =
                                data.get(p.chunk_offset as usize..end).ok_or_else(|| {
                                    RestoreError::corrupt(
                                        &key,
                                        format!(
                                            "chunk {} is shorter than its stream says",
                                            j.hash.to_hex()
                                        ),
                                    )
                                })?;
                            file.write_all_at(piece, p.disk_offset).map_err(|source| {
                                RestoreError::Io {
                                    path: path.clone(),
                                    source,
                                }
                            })?;
                            written += p.len as u64;
                        }
                    }
                    Ok(written)
                })
                .await
            }
        })
        .buffer_unordered(opts.concurrency.max(1))
        .try_for_each(|n| {
            progress.done_bytes.fetch_add(n, Ordering::Relaxed);
            futures::future::ready(Ok(()))
        })
        .await?;
    Ok(stats)
}
