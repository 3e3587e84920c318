//! Fetching chunks: neighbouring frames of a pack are coalesced into one ranged GET,
//! ranges are fetched concurrently (bounded), and each range is decompressed, verified
//! and written on the rayon pool. At most `concurrency` ranges are in memory at once.
//! Reads may be paced to a rate, and what each range wrote may be recorded for a
//! resumable restore.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use tidemark_format::pack::decode_chunk_into;
use tidemark_format::{keys, ChunkHash, PackId};
use tidemark_objstore::DynStore;
use tidemark_pitr_index::{sync, ChunkLocation, Index};

use crate::pace::Pacer;
use crate::placement::Placement;
use crate::restore::{RestoreOptions, RestoreProgress};
use crate::resume::Checkpointer;
use crate::writeback::Writeback;
use crate::written::Written;
use crate::{RestoreError, Result};

/// One chunk to read and where its bytes go.
pub struct ChunkJob {
    pub hash: ChunkHash,
    pub loc: ChunkLocation,
    pub placements: Vec<Placement>,
}

/// One ranged GET of a pack and the chunks it holds.
pub struct RangeRead {
    pub pack: PackId,
    pub start: u64,
    pub end: u64,
    pub jobs: Vec<ChunkJob>,
}

/// Sorts jobs by pack and offset and merges neighbours into ranges: a gap of up to
/// `gap` bytes is read rather than paying for another request, up to `max_len`.
pub fn coalesce(mut jobs: Vec<ChunkJob>, gap: u64, max_len: u64) -> Vec<RangeRead> {
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

/// What `sync::read_pack_tail` reads first from the end of a pack; a pack whose tail
/// is longer is read twice. Only used to pace those reads.
const PACK_TAIL_GUESS: u64 = 256 << 10;

/// Verifies the index of every pack the ranges read (once per restore) and that each
/// chunk sits in its pack where the local index says.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn verify_packs(
    store: &DynStore,
    index: &Index,
    domain: &str,
    ranges: &[RangeRead],
    verified: &mut HashSet<PackId>,
    concurrency: usize,
    pacer: Option<&Pacer>,
    cancelled: &AtomicBool,
) -> Result<()> {
    let mut by_pack: HashMap<PackId, Vec<&ChunkJob>> = HashMap::new();
    for r in ranges {
        if !verified.contains(&r.pack) {
            by_pack.entry(r.pack).or_default().extend(&r.jobs);
        }
    }
    let checks = futures::stream::iter(by_pack.into_iter().map(move |(id, jobs)| async move {
        let key = keys::pack_key(domain, id);
        let info = index.pack_info(domain, id)?;
        if let Some(p) = pacer {
            let first = info.map_or(PACK_TAIL_GUESS, |i| i.size.min(PACK_TAIL_GUESS));
            let second = info.map_or(0, |i| if i.tail_len > first { i.tail_len } else { 0 });
            p.wait(first + second, cancelled).await?;
        }
        let size = info.map(|p| p.size);
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
    .buffer_unordered(concurrency.max(1))
    // Boxed as `Send` here, where its lifetimes are concrete: held unboxed across the
    // await below, it makes the future of a restore lose `Send` (the compiler cannot
    // prove it for every lifetime of the borrowed jobs), and the service spawns it.
    .boxed();
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

/// Fetches, verifies and writes every range into `file`. With `checkpoints`, what
/// each range wrote is recorded once written, and checkpoints are taken as they fall
/// due.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn execute(
    store: &DynStore,
    domain: &str,
    ranges: Vec<RangeRead>,
    file: Arc<File>,
    writeback: Arc<Writeback>,
    path: &str,
    opts: &RestoreOptions,
    progress: &RestoreProgress,
    pacer: Option<&Pacer>,
    mut checkpoints: Option<&mut Checkpointer>,
) -> Result<FetchStats> {
    let stats = FetchStats {
        requests: ranges.len() as u64,
        fetched_bytes: ranges.iter().map(|r| r.end - r.start).sum(),
        chunks: ranges.iter().map(|r| r.jobs.len() as u64).sum(),
    };
    let track = checkpoints.is_some();
    // `move` closures: they copy the references they use, so the stream's futures have
    // one concrete lifetime and a restore's future stays `Send` for the service to spawn.
    let mut written = futures::stream::iter(ranges)
        .map(move |r| {
            let file = file.clone();
            let writeback = writeback.clone();
            async move {
                if progress.cancelled.load(Ordering::Relaxed) {
                    return Err(RestoreError::Cancelled);
                }
                if let Some(p) = pacer {
                    p.wait(r.end - r.start, &progress.cancelled).await?;
                }
                let key = keys::pack_key(domain, r.pack);
                let bytes = store
                    .get_range(&key, r.start..r.end)
                    .await
                    .map_err(|e| RestoreError::store(&key, e))?;
                let path = path.to_owned();
                on_rayon(move || {
                    let mut written = 0u64;
                    let mut covered = Written::default();
                    let mut buf = Vec::new();
                    for j in r.jobs {
                        let from = (j.loc.offset - r.start) as usize;
                        let frame = &bytes[from..from + j.loc.clen as usize];
                        let data =
                            decode_chunk_into(frame, j.loc.codec, j.loc.ulen, j.hash, &mut buf)
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
                            // Only after its bytes are written.
                            if track {
                                covered.add(&p);
                            }
                        }
                    }
                    writeback.wrote(written);
                    Ok((written, covered))
                })
                .await
            }
        })
        .buffer_unordered(opts.concurrency.max(1));
    while let Some((n, covered)) = written.try_next().await? {
        progress.done_bytes.fetch_add(n, Ordering::Relaxed);
        if let Some(c) = checkpoints.as_deref_mut() {
            c.record(&covered, n);
            c.tick().await?;
        }
    }
    Ok(stats)
}
