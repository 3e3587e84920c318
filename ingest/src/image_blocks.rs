//! A point that sets chosen blocks of each disk to what an image file holds.
//!
//! A failover to a point P older than the log's head brings up images at P, but the
//! log's newest state is the head: the new owner's writes would land on the wrong
//! base, and a later restore or failback would mix the two. Committing, right after
//! the fence, the blocks that changed after P as the images hold them makes the log's
//! newest state equal to the images again, at the cost of what changed.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use roaring::RoaringBitmap;
use tidemark_format::{ChunkHash, DomainRecord, Marker, BLOCK_SIZE};
use tidemark_pitr_index::StateWrite;

use crate::builder::{build_segment, BuiltSegment, SegmentBuilder};
use crate::{now_ns, CommittedPoint, DomainWriter, IngestContext, IngestError, Result};

/// Blocks are read from an image in runs of at most this many bytes.
const READ_RUN: u64 = 1 << 20;

/// Blocks of one disk to copy from an image into the log.
#[derive(Clone, Debug)]
pub struct ImageBlocks {
    /// Disk index in the domain.
    pub disk: u32,
    /// The image file holding the state to commit.
    pub image: PathBuf,
    /// The blocks to commit (all-zero blocks become zeroed blocks).
    pub blocks: RoaringBitmap,
}

impl DomainWriter {
    /// Commits one point that sets `blocks` of each disk to what its image holds, with
    /// `markers`. Nothing may be staged: the point must hold these blocks only.
    pub async fn commit_image_blocks(
        &mut self,
        mut disks: Vec<ImageBlocks>,
        markers: Vec<Marker>,
    ) -> Result<CommittedPoint> {
        if self.staged_bytes() > 0 {
            return Err(IngestError::Invalid(
                "writes are staged; commit them before the image blocks".into(),
            ));
        }
        check(self.domain(), &mut disks)?;
        let now = now_ns();
        self.commit_feed(feed(disks), markers, (now, now)).await
    }
}

/// Builds (chunks, dedups, packs and stores, but does not commit) a segment whose
/// disks hold `blocks` as the images hold them: GC's rewrite of live blocks it first
/// restored into scratch images. The result references chunks the index located
/// when it was built, and chunks of `stored` (stored but not yet located: earlier
/// rewrites of the same run), which it never stores again.
pub async fn build_image_blocks(
    ctx: &IngestContext,
    domain: &DomainRecord,
    mut disks: Vec<ImageBlocks>,
    stored: HashSet<ChunkHash>,
) -> Result<BuiltSegment> {
    check(domain, &mut disks)?;
    let (built, _) = build_segment(ctx, &domain.name, stored, feed(disks)).await?;
    Ok(built)
}

/// Sorts `disks` and checks each names a disk of `domain` once, with an image of its
/// size and blocks within it.
fn check(domain: &DomainRecord, disks: &mut [ImageBlocks]) -> Result<()> {
    disks.sort_by_key(|d| d.disk);
    for (i, d) in disks.iter().enumerate() {
        let spec = domain
            .disks
            .get(d.disk as usize)
            .ok_or_else(|| IngestError::Invalid(format!("disk index {} does not exist", d.disk)))?;
        if i > 0 && disks[i - 1].disk == d.disk {
            return Err(IngestError::Invalid(format!(
                "disk {} named twice",
                spec.name
            )));
        }
        if d.blocks.max().is_some_and(|b| b >= spec.blocks()) {
            return Err(IngestError::Invalid(format!(
                "blocks past the end of disk {}",
                spec.name
            )));
        }
        let len = std::fs::metadata(&d.image)
            .map_err(|e| IngestError::Invalid(format!("{}: {e}", d.image.display())))?
            .len();
        if len != spec.size {
            return Err(IngestError::Invalid(format!(
                "{} holds {len} bytes, disk {} has {}",
                d.image.display(),
                spec.name,
                spec.size
            )));
        }
    }
    Ok(())
}

/// The builder's feed: each disk's blocks, read from its image in ascending runs.
fn feed(
    disks: Vec<ImageBlocks>,
) -> impl FnOnce(&mut SegmentBuilder) -> Result<Vec<StateWrite>> + Send + 'static {
    move |b: &mut SegmentBuilder| {
        let bs = BLOCK_SIZE as u64;
        let mut buf = vec![0u8; READ_RUN as usize];
        for d in &disks {
            b.begin_disk(d.disk)?;
            let read_err = |source| IngestError::Read {
                path: d.image.display().to_string(),
                source,
            };
            let file = File::open(&d.image).map_err(read_err)?;
            for run in runs(&d.blocks, (READ_RUN / bs) as u32) {
                let bytes = &mut buf[..(run.end - run.start) as usize * bs as usize];
                file.read_exact_at(bytes, run.start as u64 * bs)
                    .map_err(read_err)?;
                for (i, block) in bytes.chunks_exact(bs as usize).enumerate() {
                    b.put_block(run.start + i as u32, block)?;
                }
            }
        }
        Ok(Vec::new())
    }
}

/// The runs of consecutive blocks of `blocks`, each at most `max` long, ascending.
fn runs(blocks: &RoaringBitmap, max: u32) -> Vec<std::ops::Range<u32>> {
    let mut out: Vec<std::ops::Range<u32>> = Vec::new();
    for b in blocks {
        match out.last_mut() {
            Some(r) if r.end == b && r.end - r.start < max => r.end += 1,
            _ => out.push(b..b + 1),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::runs;

    #[test]
    fn runs_are_consecutive_and_bounded() {
        let blocks: roaring::RoaringBitmap = [1, 2, 3, 4, 5, 9, 10, 20].into_iter().collect();
        assert_eq!(runs(&blocks, 3), vec![1..4, 4..6, 9..11, 20..21]);
        assert!(runs(&roaring::RoaringBitmap::new(), 3).is_empty());
    }
}
