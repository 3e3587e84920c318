//! Builds one segment from per-disk block streams in ascending block order: zero
//! blocks go to the `zeroed` bitmap, the rest form the disk's data stream, which is
//! cut by FastCDC; chunks are named, deduplicated against the domain and this
//! segment, compressed in parallel (rayon) and appended to packs that the uploader
//! sends while the next ones fill.

use std::collections::HashSet;
use std::sync::Arc;

use rayon::prelude::*;
use roaring::RoaringBitmap;
use tidemark_format::pack::encode_chunk;
use tidemark_format::{ChunkHash, ChunkRef, DiskDelta, PackId, PackWriter, PACK_FOOTER_LEN};
use tidemark_pitr_index::{ChunkLocation, Index, PackInfo, StateWrite};

use crate::chunker::{Chunker, Cut};
use crate::uploader::{self, PackSink};
use crate::{IngestConfig, IngestContext, IngestError, Result};

/// Stream bytes buffered before cutting: large enough for parallel compression to pay.
const WINDOW: usize = 8 << 20;

/// A segment's content as building produced it: its packs are stored, nothing is
/// committed.
#[derive(Debug, Default)]
pub struct BuiltSegment {
    /// Per-disk changes, ascending by disk.
    pub disks: Vec<DiskDelta>,
    /// Chunks it stored, and where.
    pub new_chunks: Vec<(ChunkHash, ChunkLocation)>,
    /// Packs it stored.
    pub packs: Vec<(PackId, PackInfo)>,
    /// Blocks with data.
    pub data_blocks: u64,
    /// Blocks zeroed.
    pub zero_blocks: u64,
}

/// Whether a block is all zero (written so that it vectorizes).
pub(crate) fn is_zero(block: &[u8]) -> bool {
    block
        .chunks(64)
        .all(|c| c.iter().fold(0u8, |a, &b| a | b) == 0)
}

struct Packer {
    index: Arc<Index>,
    domain: String,
    level: i32,
    pack_bytes: usize,
    sink: PackSink,
    pack: Option<PackWriter>,
    /// Chunks this segment already references: looked up once, stored once.
    seen: HashSet<ChunkHash>,
    built: BuiltSegment,
}

impl Packer {
    /// Names, deduplicates and packs the cut chunks; returns their refs in order.
    fn add(&mut self, buf: &[u8], cuts: &[Cut]) -> Result<Vec<ChunkRef>> {
        let hashes: Vec<ChunkHash> = cuts
            .par_iter()
            .map(|r| ChunkHash::of(&buf[r.clone()]))
            .collect();
        let mut fresh = Vec::new();
        for (i, h) in hashes.iter().enumerate() {
            if self.seen.insert(*h) && self.index.chunk_location(&self.domain, h)?.is_none() {
                fresh.push(i);
            }
        }
        let level = self.level;
        let frames: Vec<_> = fresh
            .par_iter()
            .map(|&i| encode_chunk(&buf[cuts[i].clone()], level))
            .collect();
        for (&i, (codec, frame)) in fresh.iter().zip(frames) {
            let pack_full = self
                .pack
                .as_ref()
                .is_some_and(|p| !p.is_empty() && p.len() + frame.len() > self.pack_bytes);
            if pack_full {
                self.flush()?;
            }
            let pack = self
                .pack
                .get_or_insert_with(|| PackWriter::new(PackId(rand::random())));
            let e = pack.push(hashes[i], cuts[i].len() as u32, codec, &frame);
            self.built.new_chunks.push((
                hashes[i],
                ChunkLocation {
                    pack: pack.id(),
                    offset: e.offset,
                    clen: e.clen,
                    ulen: e.ulen,
                    codec: e.codec,
                },
            ));
        }
        Ok(cuts
            .iter()
            .zip(hashes)
            .map(|(r, hash)| ChunkRef {
                hash,
                len: r.len() as u32,
            })
            .collect())
    }

    fn flush(&mut self) -> Result<()> {
        if let Some(pack) = self.pack.take() {
            let id = pack.id();
            let frames_len = pack.len();
            let (bytes, entries) = pack.finish();
            let info = PackInfo {
                size: bytes.len() as u64,
                tail_len: (bytes.len() - frames_len) as u64,
                chunks: entries.len() as u32,
            };
            debug_assert!(info.tail_len >= PACK_FOOTER_LEN as u64);
            self.built.packs.push((id, info));
            self.sink.submit(id, bytes)?;
        }
        Ok(())
    }
}

struct OpenDisk {
    disk: u32,
    written: RoaringBitmap,
    zeroed: RoaringBitmap,
    chunks: Vec<ChunkRef>,
    last_block: Option<u32>,
}

/// Accepts blocks of one segment, disk by disk, each disk in ascending block order.
pub struct SegmentBuilder {
    packer: Packer,
    chunker: Chunker,
    open: Option<OpenDisk>,
}

impl SegmentBuilder {
    fn new(
        index: Arc<Index>,
        domain: String,
        cfg: &IngestConfig,
        sink: PackSink,
        stored: HashSet<ChunkHash>,
    ) -> Self {
        SegmentBuilder {
            packer: Packer {
                index,
                domain,
                level: cfg.zstd_level,
                pack_bytes: cfg.pack_bytes.min(64 << 20),
                sink,
                pack: None,
                seen: stored,
                built: BuiltSegment::default(),
            },
            chunker: Chunker::new(cfg.chunk_min, cfg.chunk_avg, cfg.chunk_max),
            open: None,
        }
    }

    /// Starts the stream of a disk; disks must come in ascending order.
    pub fn begin_disk(&mut self, disk: u32) -> Result<()> {
        self.end_disk()?;
        if self
            .packer
            .built
            .disks
            .last()
            .is_some_and(|d| d.disk >= disk)
        {
            return Err(IngestError::Invalid(format!(
                "disk {disk} fed out of order"
            )));
        }
        self.open = Some(OpenDisk {
            disk,
            written: RoaringBitmap::new(),
            zeroed: RoaringBitmap::new(),
            chunks: Vec::new(),
            last_block: None,
        });
        Ok(())
    }

    /// Adds one block; an all-zero block is recorded as zeroed and stores nothing.
    pub fn put_block(&mut self, block: u32, data: &[u8]) -> Result<()> {
        let open = self
            .open
            .as_mut()
            .ok_or_else(|| IngestError::Invalid("block before begin_disk".into()))?;
        if open.last_block.is_some_and(|l| l >= block) {
            return Err(IngestError::Invalid(format!(
                "block {block} fed out of order"
            )));
        }
        open.last_block = Some(block);
        if is_zero(data) {
            open.zeroed.insert(block);
            self.packer.built.zero_blocks += 1;
            return Ok(());
        }
        open.written.insert(block);
        self.packer.built.data_blocks += 1;
        self.chunker.push(data);
        if self.chunker.buffered() >= WINDOW {
            self.cut(false)?;
        }
        Ok(())
    }

    fn cut(&mut self, last: bool) -> Result<()> {
        let cuts = self.chunker.cuts(last);
        let refs = self.packer.add(self.chunker.data(), &cuts)?;
        self.chunker.consume(cuts.last().map_or(0, |c| c.end));
        if let Some(open) = self.open.as_mut() {
            open.chunks.extend(refs);
        }
        Ok(())
    }

    fn end_disk(&mut self) -> Result<()> {
        if self.open.is_none() {
            return Ok(());
        }
        self.cut(true)?;
        if let Some(o) = self.open.take() {
            if !(o.written.is_empty() && o.zeroed.is_empty()) {
                self.packer.built.disks.push(DiskDelta {
                    disk: o.disk,
                    written: o.written,
                    zeroed: o.zeroed,
                    chunks: o.chunks,
                });
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Result<BuiltSegment> {
        self.end_disk()?;
        self.packer.flush()?;
        Ok(self.packer.built)
    }
}

/// Runs `feed` on a blocking thread to fill a segment, uploading packs as they fill.
/// Returns what was built and the state writes `feed` produced; every pack is stored
/// when this returns.
/// `stored` names chunks already stored that the index does not locate yet (GC's
/// earlier rewrites of the same run): they are referenced, never stored again.
pub(crate) async fn build_segment<F>(
    ctx: &IngestContext,
    domain: &str,
    stored: HashSet<ChunkHash>,
    feed: F,
) -> Result<(BuiltSegment, Vec<StateWrite>)>
where
    F: FnOnce(&mut SegmentBuilder) -> Result<Vec<StateWrite>> + Send + 'static,
{
    let (sink, upload) = uploader::start(
        ctx.store.clone(),
        domain.to_owned(),
        ctx.config.upload_concurrency,
    );
    let index = ctx.index.clone();
    let cfg = ctx.config.clone();
    let domain = domain.to_owned();
    let building = tokio::task::spawn_blocking(move || {
        let mut b = SegmentBuilder::new(index, domain, &cfg, sink, stored);
        let state = feed(&mut b)?;
        Ok::<_, IngestError>((b.finish()?, state))
    });
    let built = building
        .await
        .map_err(|e| IngestError::Invalid(format!("segment builder panicked: {e}")));
    let uploaded = upload
        .await
        .map_err(|e| IngestError::Invalid(format!("uploader panicked: {e}")));
    // A failed upload closes the sink, which fails the builder too; report the cause.
    uploaded??;
    built?
}
