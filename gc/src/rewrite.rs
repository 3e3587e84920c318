//! Writing a merged run or an image as a new segment object: the live blocks are read
//! at the segment's seq into sparse scratch images (as a restore reads them, verified),
//! then built exactly as ingest builds a segment: FastCDC over each disk's stream in
//! block order, so unchanged data falls into chunks the domain has and is not stored
//! again, and only what changed is uploaded.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use roaring::RoaringBitmap;
use tidemark_format::{
    keys, ChunkHash, DiskDelta, DomainRecord, Marker, Segment, SegmentKind, WriterId,
};
use tidemark_ingest::{build_image_blocks, ImageBlocks, IngestContext};
use tidemark_objstore::StoreError;
use tidemark_rehydrator::{write_blocks, RestoreProgress};

use crate::{GcConfig, GcError, Result};

/// A segment to write: where, what, and the blocks of each disk to carry.
pub(crate) struct Rewrite {
    pub seq: u64,
    pub kind: SegmentKind,
    pub time_start: i64,
    pub time_end: i64,
    pub markers: Vec<Marker>,
    /// Per disk index: the blocks whose state at `seq` the segment holds.
    pub blocks: Vec<(u32, RoaringBitmap)>,
}

/// A rewrite as stored.
pub(crate) struct Written {
    pub segment: Segment,
    pub uploaded: u64,
}

/// Removes the scratch directory however the rewrite ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> GcError + '_ {
    move |source| GcError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Builds and stores rewrite `r` as GC epoch `epoch`'s object of its seq. `stored`
/// holds the chunks earlier rewrites of the run stored; this one's are added, so that
/// no chunk is stored twice (every chunk lives in exactly one live pack).
pub(crate) async fn write(
    ctx: &IngestContext,
    rec: &DomainRecord,
    cfg: &GcConfig,
    writer: &WriterId,
    epoch: u64,
    r: Rewrite,
    stored: &mut HashSet<ChunkHash>,
) -> Result<Written> {
    let dir = cfg
        .scratch_dir
        .join(format!("{}-{epoch:x}-{:x}", rec.name, r.seq));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let scratch = Scratch(dir);
    let mut images = Vec::new();
    for (disk, blocks) in &r.blocks {
        if blocks.is_empty() {
            continue;
        }
        let spec = rec
            .disks
            .get(*disk as usize)
            .ok_or_else(|| GcError::Invalid(format!("disk index {disk} does not exist")))?;
        let path = scratch.0.join(format!("{disk}.img"));
        let file = std::fs::File::create(&path).map_err(io(&path))?;
        file.set_len(spec.size).map_err(io(&path))?;
        drop(file);
        write_blocks(
            &ctx.store,
            &ctx.index,
            &rec.name,
            &spec.name,
            &path,
            blocks,
            r.seq,
            &cfg.restore,
            Arc::new(RestoreProgress::default()),
        )
        .await?;
        images.push(ImageBlocks {
            disk: *disk,
            image: path,
            blocks: blocks.clone(),
        });
    }
    let built = build_image_blocks(ctx, rec, images, stored.clone()).await?;
    stored.extend(built.new_chunks.iter().map(|(h, _)| *h));
    let mut disks = built.disks;
    if r.kind == SegmentKind::Image {
        disks = whole_disks(rec, disks);
    }
    let segment = Segment {
        domain: rec.name.clone(),
        seq: r.seq,
        kind: r.kind,
        writer: writer.clone(),
        time_start: r.time_start,
        time_end: r.time_end,
        markers: r.markers,
        new_packs: built.packs.iter().map(|(id, _)| *id).collect(),
        disks,
    };
    let bytes = Bytes::from(
        segment
            .encode()
            .map_err(|e| GcError::Invalid(e.to_string()))?,
    );
    let object_size = bytes.len() as u64;
    let key = keys::segment_object_key(&rec.name, r.seq, epoch);
    match ctx.store.put_if_absent(&key, bytes).await {
        Ok(_) => {}
        Err(StoreError::AlreadyExists { .. }) => {
            return Err(GcError::Conflict(format!(
                "{key} exists: another GC run is writing epoch {epoch}"
            )))
        }
        Err(e) => return Err(e.into()),
    }
    let uploaded = object_size + built.packs.iter().map(|(_, p)| p.size).sum::<u64>();
    Ok(Written { segment, uploaded })
}

/// An image covers every block of every disk: what it does not write it zeroes, so
/// that point resolution stops there.
fn whole_disks(rec: &DomainRecord, built: Vec<DiskDelta>) -> Vec<DiskDelta> {
    let mut by_disk: Vec<Option<DiskDelta>> = vec![None; rec.disks.len()];
    for d in built {
        let i = d.disk as usize;
        if i < by_disk.len() {
            by_disk[i] = Some(d);
        }
    }
    by_disk
        .into_iter()
        .enumerate()
        .map(|(i, d)| {
            let mut d = d.unwrap_or_else(|| DiskDelta {
                disk: i as u32,
                ..DiskDelta::default()
            });
            let mut all = RoaringBitmap::new();
            all.insert_range(0..rec.disks[i].blocks());
            d.zeroed = all - &d.written;
            d
        })
        .collect()
}
