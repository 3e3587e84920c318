//! Moving an existing image of a disk from one point to another at the cost of what
//! changed between them (DESIGN.md section 8): a warm replica following the log, and
//! rollback.
//!
//! Only the blocks that some segment between the two points wrote or zeroed can
//! differ, so only they are rewritten: resolved at the target point, their data is
//! fetched exactly as a restore fetches it and their zeroes are punched out.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use roaring::RoaringBitmap;
use tidemark_format::BLOCK_SIZE;
use tidemark_objstore::DynStore;
use tidemark_pitr_index::Index;

use crate::holes;
use crate::pace::Pacer;
use crate::restore::{checked_disk, fill, require_point, Filler};
use crate::resume::io_err;
use crate::{RestoreError, RestoreOptions, RestoreProgress, Result};

/// What an update of an image did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpdateReport {
    /// The point the image held.
    pub from_seq: u64,
    /// The point the image holds now.
    pub to_seq: u64,
    /// Blocks some segment between the two points wrote or zeroed: all it rewrote.
    pub changed_blocks: u64,
    /// Bytes of data written.
    pub data_bytes: u64,
    /// Blocks of the changed set that are zero at `to_seq`, punched out (or zeroed).
    pub zeroed_blocks: u64,
    /// Segments read from.
    pub segments: u64,
    /// Chunks fetched.
    pub chunks: u64,
    /// Ranged GETs of packs.
    pub requests: u64,
    /// Bytes fetched from packs.
    pub fetched_bytes: u64,
}

/// Moves `image`, a raw image of disk `disk` of `domain` that holds exactly the
/// disk's state at point `from_seq` (0: the empty disk before the first point), to
/// point `to_seq`, forwards or backwards, and syncs it. Only the blocks written or
/// zeroed between the two points are touched: their data is fetched and verified as
/// [`crate::restore_disk`] does, their zeroes are punched out (or written where the
/// file system cannot punch). `opts.resume` is ignored: no journal is kept.
///
/// Interruption: an update that fails or is cancelled leaves the image a mix of both
/// points within the changed blocks, and untouched outside them. Running the same
/// update again (or one from `from_seq` to a point at or beyond `to_seq` in the same
/// direction, whose changed set covers this one's) rewrites every block it may have
/// touched and leaves the image exact. Updating from `from_seq` to another point is
/// not enough: blocks only this update changed would keep its half-done state.
#[allow(clippy::too_many_arguments)]
pub async fn update_image(
    store: &DynStore,
    index: &Index,
    domain: &str,
    disk: &str,
    image: &Path,
    from_seq: u64,
    to_seq: u64,
    opts: &RestoreOptions,
    progress: Arc<RestoreProgress>,
) -> Result<UpdateReport> {
    let _reading = index.read_domain(domain).await;
    let (rec, disk_idx) = checked_disk(store, index, domain, disk).await?;
    require_point(index, domain, to_seq)?;
    // 0 is the empty disk before the first point, which no segment stands for.
    if from_seq != 0 {
        require_point(index, domain, from_seq)?;
    }
    let file = open_image(image, disk, rec.disks[disk_idx as usize].size)?;
    if from_seq == to_seq {
        return Ok(UpdateReport {
            from_seq,
            to_seq,
            ..UpdateReport::default()
        });
    }
    let (low, high) = (from_seq.min(to_seq), from_seq.max(to_seq));
    let changed = index.changed_blocks(domain, disk_idx, low, high)?;
    let mut report = set_blocks(
        store, index, domain, disk_idx, file, image, &changed, to_seq, opts, progress,
    )
    .await?;
    report.from_seq = from_seq;
    Ok(report)
}

/// Sets `blocks` of `image`, a raw image of disk `disk` of `domain`, to their state at
/// `seq`, which may be any indexed segment (a merged run too: GC reads the live blocks
/// of a run at its newest segment), and syncs it. Other blocks are not touched.
#[allow(clippy::too_many_arguments)]
pub async fn write_blocks(
    store: &DynStore,
    index: &Index,
    domain: &str,
    disk: &str,
    image: &Path,
    blocks: &RoaringBitmap,
    seq: u64,
    opts: &RestoreOptions,
    progress: Arc<RestoreProgress>,
) -> Result<UpdateReport> {
    let _reading = index.read_domain(domain).await;
    let (rec, disk_idx) = checked_disk(store, index, domain, disk).await?;
    if index.segment(domain, seq)?.is_none() {
        return Err(tidemark_pitr_index::IndexError::NoSuchPoint(seq.to_string()).into());
    }
    let file = open_image(image, disk, rec.disks[disk_idx as usize].size)?;
    set_blocks(
        store, index, domain, disk_idx, file, image, blocks, seq, opts, progress,
    )
    .await
}

/// Resolves `blocks` at `seq`, writes their data, punches their zeroes, syncs.
#[allow(clippy::too_many_arguments)]
async fn set_blocks(
    store: &DynStore,
    index: &Index,
    domain: &str,
    disk_idx: u32,
    file: File,
    image: &Path,
    blocks: &RoaringBitmap,
    seq: u64,
    opts: &RestoreOptions,
    progress: Arc<RestoreProgress>,
) -> Result<UpdateReport> {
    let plan = index.plan_blocks(domain, disk_idx, blocks, seq)?;
    let data_blocks = plan.data_blocks();
    progress
        .total_bytes
        .store(data_blocks * BLOCK_SIZE as u64, Ordering::Relaxed);
    let pacer = opts.max_bytes_per_sec.map(Pacer::new).transpose()?;
    let file = Arc::new(file);
    let stats = fill(
        store,
        index,
        domain,
        &plan,
        Filler {
            file: file.clone(),
            path: image,
            opts,
            progress: &progress,
            pacer: pacer.as_ref(),
            checkpoints: None,
        },
    )
    .await?;
    // After `fill`, which verified the segments that zeroed these blocks.
    let zero = plan.zero_blocks();
    let zeroed_blocks = zero.len();
    let path = image.to_path_buf();
    let cancel = progress.clone();
    tokio::task::spawn_blocking(move || {
        holes::zero_blocks(&file, &path, &zero, &cancel.cancelled)?;
        file.sync_all().map_err(io_err(&path))
    })
    .await
    .map_err(|_| RestoreError::Invalid("zeroing the image panicked".into()))??;
    Ok(UpdateReport {
        from_seq: seq,
        to_seq: seq,
        changed_blocks: blocks.len(),
        data_bytes: data_blocks * BLOCK_SIZE as u64,
        zeroed_blocks,
        segments: plan.reads.len() as u64,
        chunks: stats.chunks,
        requests: stats.requests,
        fetched_bytes: stats.fetched_bytes,
    })
}

/// Opens the image for update once it is a regular file of exactly the disk's size:
/// anything else cannot hold the disk at a point.
fn open_image(image: &Path, disk: &str, size: u64) -> Result<File> {
    let shown = image.display();
    let meta = match std::fs::metadata(image) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(RestoreError::Invalid(format!(
                "image {shown} does not exist"
            )))
        }
        Err(e) => return Err(io_err(image)(e)),
    };
    if !meta.is_file() {
        return Err(RestoreError::Invalid(format!(
            "image {shown} is not a regular file"
        )));
    }
    if meta.len() != size {
        return Err(RestoreError::Invalid(format!(
            "image {shown} has {} bytes, disk {disk:?} has {size}",
            meta.len()
        )));
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .map_err(io_err(image))
}
