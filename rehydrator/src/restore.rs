//! Restoring one disk at one point into a new sparse raw image.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use tidemark_format::{keys, PackId, Segment, BLOCK_SIZE};
use tidemark_objstore::DynStore;
use tidemark_pitr_index::{sync, DiskPlan, Index};

use crate::fetch::{self, ChunkJob, FetchStats};
use crate::placement::Placements;
use crate::{RestoreError, Result};

/// Tuning of a restore.
#[derive(Clone, Debug)]
pub struct RestoreOptions {
    /// Ranged reads in flight (each up to `max_range` bytes in memory).
    pub concurrency: usize,
    /// Largest coalesced read.
    pub max_range: u64,
    /// Largest gap between two needed frames that is read through rather than split.
    pub gap: u64,
    /// Placements gathered before they are fetched; bounds memory on huge disks.
    pub batch_placements: usize,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            concurrency: 8,
            max_range: 16 << 20,
            gap: 256 << 10,
            batch_placements: 1 << 20,
        }
    }
}

/// Live progress of a restore, shared with whoever reports it.
#[derive(Debug, Default)]
pub struct RestoreProgress {
    /// Bytes of data the restore will write.
    pub total_bytes: AtomicU64,
    /// Bytes written so far.
    pub done_bytes: AtomicU64,
    /// Set to stop the restore at the next range.
    pub cancelled: AtomicBool,
}

/// What a restore did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// The point restored.
    pub seq: u64,
    /// Size of the image.
    pub disk_size: u64,
    /// Bytes of data written (the rest are holes).
    pub data_bytes: u64,
    /// Segments read from.
    pub segments: u64,
    /// Chunks fetched.
    pub chunks: u64,
    /// Ranged GETs of packs.
    pub requests: u64,
    /// Bytes fetched from packs.
    pub fetched_bytes: u64,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RestoreError + '_ {
    move |source| RestoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Restores disk `disk` of `domain` at point `seq` into a new sparse image at `out`.
/// The image is written beside `out` and renamed into place only when complete and
/// synced, so `out` never holds a partial image.
#[allow(clippy::too_many_arguments)]
pub async fn restore_disk(
    store: &DynStore,
    index: &Index,
    domain: &str,
    disk: &str,
    seq: u64,
    out: &Path,
    opts: &RestoreOptions,
    progress: Arc<RestoreProgress>,
) -> Result<RestoreReport> {
    let rec = index.require_domain(domain)?;
    let stored = sync::load_domain(store, domain)
        .await
        .map_err(|e| match e {
            // The index knows the domain, so the bucket lost its definition.
            tidemark_pitr_index::IndexError::UnknownDomain(_) => {
                RestoreError::corrupt(keys::domain_key(domain), "object is missing")
            }
            other => RestoreError::reading(&keys::domain_key(domain), other),
        })?;
    if stored != rec {
        return Err(RestoreError::corrupt(
            keys::domain_key(domain),
            "disagrees with the local index (run `tidemark index rebuild`)",
        ));
    }
    let disk_idx = rec
        .disk_index(disk)
        .ok_or_else(|| RestoreError::Invalid(format!("domain {domain} has no disk {disk:?}")))?;
    let spec = &rec.disks[disk_idx as usize];
    let plan = index.plan(domain, disk_idx, spec.blocks(), seq)?;
    progress.total_bytes.store(
        plan.data_blocks() * BLOCK_SIZE as u64,
        std::sync::atomic::Ordering::Relaxed,
    );

    let partial = partial_path(out);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&partial)
        .map_err(io_err(&partial))?;
    // A fresh file of the disk's size is all holes: zero blocks cost nothing.
    file.set_len(spec.size).map_err(io_err(&partial))?;
    let file = Arc::new(file);
    let result = fill(
        store,
        index,
        domain,
        &plan,
        file.clone(),
        &partial,
        opts,
        &progress,
    )
    .await;
    let stats = match result {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    file.sync_all().map_err(io_err(&partial))?;
    std::fs::rename(&partial, out).map_err(io_err(out))?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))?;
    }
    Ok(RestoreReport {
        seq,
        disk_size: spec.size,
        data_bytes: plan.data_blocks() * BLOCK_SIZE as u64,
        segments: plan.reads.len() as u64,
        chunks: stats.chunks,
        requests: stats.requests,
        fetched_bytes: stats.fetched_bytes,
    })
}

fn partial_path(out: &Path) -> PathBuf {
    let mut name = out
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".tidemark-partial");
    out.with_file_name(name)
}

/// Turns batches of placements into verified chunk reads written to the image, and
/// keeps what all batches share: the packs already verified and the totals.
struct BatchWriter<'a> {
    store: &'a DynStore,
    index: &'a Index,
    domain: &'a str,
    file: Arc<File>,
    path: String,
    opts: &'a RestoreOptions,
    progress: &'a RestoreProgress,
    verified_packs: HashSet<PackId>,
    total: FetchStats,
}

impl BatchWriter<'_> {
    async fn write(&mut self, batch: Placements) -> Result<()> {
        let mut jobs = Vec::with_capacity(batch.by_chunk.len());
        for (hash, placements) in batch.by_chunk {
            let loc = self
                .index
                .chunk_location(self.domain, &hash)?
                .ok_or_else(|| {
                    RestoreError::corrupt(
                        keys::packs_prefix(self.domain),
                        format!("no pack holds chunk {}", hash.to_hex()),
                    )
                })?;
            jobs.push(ChunkJob {
                hash,
                loc,
                placements,
            });
        }
        let ranges = fetch::coalesce(jobs, self.opts.gap, self.opts.max_range);
        fetch::verify_packs(
            self.store,
            self.index,
            self.domain,
            &ranges,
            &mut self.verified_packs,
            self.opts.concurrency,
        )
        .await?;
        let stats = fetch::execute(
            self.store,
            self.domain,
            ranges,
            self.file.clone(),
            &self.path,
            self.opts,
            self.progress,
        )
        .await?;
        self.total.add(stats);
        Ok(())
    }
}

/// Fetches every segment of the plan (verifying it against the index), turns its hit
/// blocks into chunk placements, and fetches and writes them in bounded batches.
#[allow(clippy::too_many_arguments)]
async fn fill(
    store: &DynStore,
    index: &Index,
    domain: &str,
    plan: &DiskPlan,
    file: Arc<File>,
    path: &Path,
    opts: &RestoreOptions,
    progress: &RestoreProgress,
) -> Result<FetchStats> {
    let mut writer = BatchWriter {
        store,
        index,
        domain,
        file,
        path: path.display().to_string(),
        opts,
        progress,
        verified_packs: HashSet::new(),
        total: FetchStats::default(),
    };
    let mut batch = Placements::default();
    // Every segment the image depends on is fetched and checked against the index: the
    // ones it reads data from, and the ones whose zeroes it keeps.
    let empty = roaring::RoaringBitmap::new();
    let needed = plan
        .reads
        .iter()
        .map(|(seq, hits)| (*seq, hits))
        .chain(plan.zeroed_by.iter().map(|seq| (*seq, &empty)));
    let mut segments = futures::stream::iter(needed.map(|(seq, hits)| async move {
        let key = keys::segment_key(domain, seq);
        let got = store
            .get(&key)
            .await
            .map_err(|e| RestoreError::store(&key, e))?;
        let seg = Segment::decode_at(&got.data, domain, seq)
            .map_err(|e| RestoreError::format(&key, e))?;
        Ok::<_, RestoreError>((key, seq, seg, hits))
    }))
    .buffered(opts.concurrency.max(1));
    while let Some((key, seq, seg, hits)) = segments.try_next().await? {
        let delta = seg.disks.iter().find(|d| d.disk == plan.disk);
        let (written, zeroed) = index.disk_bitmaps(domain, plan.disk, seq)?;
        let stream = index.stream(domain, plan.disk, seq)?;
        let agrees =
            delta.is_some_and(|d| d.written == written && d.zeroed == zeroed && d.chunks == stream);
        let Some(delta) = delta.filter(|_| agrees) else {
            return Err(RestoreError::corrupt(
                &key,
                "disagrees with the local index",
            ));
        };
        if hits.is_empty() {
            continue;
        }
        if !batch.add_segment(&delta.written, &delta.chunks, hits) {
            return Err(RestoreError::corrupt(
                &key,
                "its chunks are shorter than its bitmap",
            ));
        }
        if batch.count >= opts.batch_placements {
            writer.write(std::mem::take(&mut batch)).await?;
        }
    }
    writer.write(batch).await?;
    Ok(writer.total)
}
