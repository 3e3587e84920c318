//! Restoring one disk at one point into a new sparse raw image, optionally resumable
//! from a journal beside the partial image and throttled to a rate of pack reads.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use tidemark_format::{keys, DomainRecord, PackId, Segment, BLOCK_SIZE};
use tidemark_objstore::DynStore;
use tidemark_pitr_index::{sync, Blocks, DiskPlan, Index};

use crate::fetch::{self, ChunkJob, FetchStats};
use crate::pace::Pacer;
use crate::placement::Placements;
use crate::resume::{self, io_err, partial_path, Checkpointer, Identity, Journal};
use crate::writeback::Writeback;
use crate::{RestoreError, Result};

pub use crate::resume::discard_partial;

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
    /// Keep a journal beside the partial image and resume from it; on error keep both
    /// (the caller resumes or calls [`crate::discard_partial`]).
    pub resume: bool,
    /// Average rate limit of the bytes read from packs; None reads at full speed.
    pub max_bytes_per_sec: Option<u64>,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            concurrency: 8,
            max_range: 16 << 20,
            gap: 256 << 10,
            batch_placements: 1 << 20,
            resume: false,
            max_bytes_per_sec: None,
        }
    }
}

/// Live progress of a restore, shared with whoever reports it.
#[derive(Debug, Default)]
pub struct RestoreProgress {
    /// Bytes of data the restore will write.
    pub total_bytes: AtomicU64,
    /// Bytes written so far (including those a resumed restore found done).
    pub done_bytes: AtomicU64,
    /// Bytes a resumed restore found done when it started: not work of this run.
    pub resumed_bytes: AtomicU64,
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
    /// Bytes of data a resumed restore found done already and did not fetch.
    pub resumed_bytes: u64,
}

/// Restores disk `disk` of `domain` at point `seq` into a new sparse image at `out`.
/// The image is written beside `out` and renamed into place only when complete and
/// synced, so `out` never holds a partial image. With `opts.resume`, a restore of the
/// same point into the same `out` that was interrupted goes on where it stopped.
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
    // GC does not change the index under a running restore.
    let _reading = index.read_domain(domain).await;
    let (rec, disk_idx) = checked_disk(store, index, domain, disk).await?;
    let spec = &rec.disks[disk_idx as usize];
    require_point(index, domain, seq)?;
    let mut plan = index.plan(domain, disk_idx, spec.blocks(), seq)?;
    let data_blocks = plan.data_blocks();
    progress.total_bytes.store(
        data_blocks * BLOCK_SIZE as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
    let pacer = opts.max_bytes_per_sec.map(Pacer::new).transpose()?;

    let partial = partial_path(out);
    let (file, mut checkpoints, resumed_blocks) = if opts.resume {
        let journal = Journal::new(
            out,
            Identity {
                domain: domain.to_owned(),
                domain_created: rec.created,
                disk: disk.to_owned(),
                seq,
                disk_size: spec.size,
            },
        );
        let (file, done) = resume::open_partial(&journal, &partial, &plan.data())?;
        // Only what is left is fetched.
        for (_, hits) in &mut plan.reads {
            hits.remove_all(&done);
        }
        let resumed = done.len();
        progress.resumed_bytes.store(
            resumed * BLOCK_SIZE as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        progress.done_bytes.store(
            resumed * BLOCK_SIZE as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        let file = Arc::new(file);
        let checkpoints = Checkpointer::new(journal, file.clone(), &partial, done);
        (file, Some(checkpoints), resumed)
    } else {
        // A journal of an earlier resumable restore must not outlive the image it
        // describes, which this restore replaces.
        resume::remove_stale_journal(out)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&partial)
            .map_err(io_err(&partial))?;
        // A fresh file of the disk's size is all holes: zero blocks cost nothing.
        file.set_len(spec.size).map_err(io_err(&partial))?;
        (Arc::new(file), None, 0)
    };
    let result = fill(
        store,
        index,
        domain,
        &plan,
        Filler {
            file: file.clone(),
            path: &partial,
            opts,
            progress: &progress,
            pacer: pacer.as_ref(),
            checkpoints: checkpoints.as_mut(),
        },
    )
    .await;
    let stats = match result {
        Ok(s) => s,
        Err(e) => {
            match checkpoints.as_mut() {
                // Keep what was done for the next attempt; the error that stopped the
                // restore matters more than one of saving its progress.
                Some(c) => {
                    if let Err(ce) = c.flush().await {
                        tracing::warn!(error = %ce, "cannot save the progress of a restore");
                    }
                }
                None => {
                    let _ = std::fs::remove_file(&partial);
                }
            }
            return Err(e);
        }
    };
    if let Some(c) = checkpoints.as_mut() {
        // No checkpoint may save the journal after it is removed below. A failed one
        // fails the restore: the kernel reports a failed writeback to a file once, so
        // the sync below could succeed over lost pages.
        c.wait().await?;
    }
    file.sync_all().map_err(io_err(&partial))?;
    std::fs::rename(&partial, out).map_err(io_err(out))?;
    if opts.resume {
        let journal = resume::journal_path(out);
        if let Err(e) = std::fs::remove_file(&journal) {
            // The image is in place; a journal without its partial image is ignored.
            tracing::warn!(path = %journal.display(), error = %e, "cannot remove the restore journal");
        }
    }
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))?;
    }
    Ok(RestoreReport {
        seq,
        disk_size: spec.size,
        data_bytes: data_blocks * BLOCK_SIZE as u64,
        segments: plan.reads.len() as u64,
        chunks: stats.chunks,
        requests: stats.requests,
        fetched_bytes: stats.fetched_bytes,
        resumed_bytes: resumed_blocks * BLOCK_SIZE as u64,
    })
}

/// The domain's record and the index of `disk` in it, once the domain is known, the
/// bucket's `domain.json` agrees with the index, and the disk exists.
pub(crate) async fn checked_disk(
    store: &DynStore,
    index: &Index,
    domain: &str,
    disk: &str,
) -> Result<(DomainRecord, u32)> {
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
    Ok((rec, disk_idx))
}

/// Fails with `NoSuchPoint` unless `seq` is indexed: a plan walks whatever the index
/// holds at or below it, so were the point itself not indexed (an index being
/// rebuilt), it would silently be an older point.
pub(crate) fn require_point(index: &Index, domain: &str, seq: u64) -> Result<()> {
    if !index.segment(domain, seq)?.is_some_and(|m| m.is_point()) {
        return Err(tidemark_pitr_index::IndexError::NoSuchPoint(seq.to_string()).into());
    }
    Ok(())
}

/// Where and how `fill` writes.
pub(crate) struct Filler<'a> {
    pub file: Arc<File>,
    pub path: &'a Path,
    pub opts: &'a RestoreOptions,
    pub progress: &'a RestoreProgress,
    pub pacer: Option<&'a Pacer>,
    pub checkpoints: Option<&'a mut Checkpointer>,
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
    pacer: Option<&'a Pacer>,
    checkpoints: Option<&'a mut Checkpointer>,
    writeback: Arc<Writeback>,
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
            self.pacer,
            &self.progress.cancelled,
        )
        .await?;
        let stats = fetch::execute(
            self.store,
            self.domain,
            ranges,
            self.file.clone(),
            self.writeback.clone(),
            &self.path,
            self.opts,
            self.progress,
            self.pacer,
            self.checkpoints.as_deref_mut(),
        )
        .await?;
        self.total.add(stats);
        Ok(())
    }
}

/// Fetches every segment of the plan (verifying it against the index), turns its hit
/// blocks into chunk placements, and fetches and writes them in bounded batches.
pub(crate) async fn fill(
    store: &DynStore,
    index: &Index,
    domain: &str,
    plan: &DiskPlan,
    to: Filler<'_>,
) -> Result<FetchStats> {
    let opts = to.opts;
    let mut writer = BatchWriter {
        store,
        index,
        domain,
        writeback: Writeback::start(to.file.clone()),
        file: to.file,
        path: to.path.display().to_string(),
        opts,
        progress: to.progress,
        pacer: to.pacer,
        checkpoints: to.checkpoints,
        verified_packs: HashSet::new(),
        total: FetchStats::default(),
    };
    let mut batch = Placements::default();
    // Every segment the image depends on is fetched and checked against the index: the
    // ones it reads data from, and the ones whose zeroes it keeps.
    // Owned pairs: a stream over borrowed ones makes the future of a restore lose `Send`
    // (a higher-ranked lifetime the compiler cannot prove), and the service spawns it.
    let needed: Vec<(u64, Blocks)> = plan
        .reads
        .iter()
        .cloned()
        .chain(plan.zeroed_by.iter().map(|seq| (*seq, Blocks::default())))
        .collect();
    let mut segments =
        futures::stream::iter(needed.into_iter().map(move |(seq, hits)| async move {
            let key = index.segment_object_key(domain, seq)?;
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
        if !batch.add_segment(&delta.written, &delta.chunks, &hits) {
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
