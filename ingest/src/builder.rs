//! Builds one segment from per-disk block streams in ascending block order: zero
//! blocks go to the `zeroed` bitmap, the rest form the disk's data stream, which is
//! cut by FastCDC in windows. The packing stages (`packer.rs`, on threads of their
//! own) name, deduplicate, compress and pack each window while the next one fills,
//! and the uploader sends the packs while the next ones fill.

use std::collections::{HashSet, VecDeque};
use std::ops::Range;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};

use roaring::RoaringBitmap;
use tidemark_format::{ChunkHash, DiskDelta, PackId, BLOCK_SIZE};
use tidemark_pitr_index::{ChunkLocation, PackInfo, StateWrite};

use crate::chunker::Chunker;
use crate::packer::{self, Job, Reply, Stages};
use crate::uploader;
use crate::{IngestConfig, IngestContext, IngestError, Result};

/// Stream bytes buffered before cutting: large enough for parallel compression to pay
/// (about 256 chunks); a few windows are in flight at once (see `packer`). The cores
/// wait at the end of each window for its last chunks: with 4 MiB windows a full
/// protect kept them 85% busy, with 16 MiB 91% and 9 – 12% faster, for about 90 MB
/// more memory (issue 7).
const WINDOW: usize = 16 << 20;

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

/// The open disk's stream position and the disk it is.
struct OpenDisk {
    disk: u32,
    last_block: Option<u32>,
}

/// Accepts blocks of one segment, disk by disk, each disk in ascending block order.
/// Cut windows go to the packing stages; their chunk refs come back in order.
pub struct SegmentBuilder {
    chunker: Chunker,
    open: Option<OpenDisk>,
    /// Disks fed so far, ascending, the open one last; a disk's chunk list fills in as
    /// the packer answers its windows.
    disks: Vec<DiskDelta>,
    data_blocks: u64,
    zero_blocks: u64,
    jobs: SyncSender<Job>,
    replies: Receiver<Result<Reply>>,
    /// The disk of each window sent and not answered yet, oldest first.
    pending: VecDeque<u32>,
    /// Window buffers the packer gave back, to fill again.
    spare: Vec<Vec<u8>>,
}

impl SegmentBuilder {
    fn new(cfg: &IngestConfig, stages: Stages) -> Self {
        let Stages { jobs, replies } = stages;
        SegmentBuilder {
            chunker: Chunker::new(cfg.chunk_min, cfg.chunk_avg, cfg.chunk_max),
            open: None,
            disks: Vec::new(),
            data_blocks: 0,
            zero_blocks: 0,
            jobs,
            replies,
            pending: VecDeque::new(),
            spare: Vec::new(),
        }
    }

    /// Starts the stream of a disk; disks must come in ascending order.
    pub fn begin_disk(&mut self, disk: u32) -> Result<()> {
        self.end_disk()?;
        if self.disks.last().is_some_and(|d| d.disk >= disk) {
            return Err(IngestError::Invalid(format!(
                "disk {disk} fed out of order"
            )));
        }
        self.open = Some(OpenDisk {
            disk,
            last_block: None,
        });
        self.disks.push(DiskDelta {
            disk,
            written: RoaringBitmap::new(),
            zeroed: RoaringBitmap::new(),
            chunks: Vec::new(),
        });
        Ok(())
    }

    /// Adds one block; an all-zero block is recorded as zeroed and stores nothing.
    pub fn put_block(&mut self, block: u32, data: &[u8]) -> Result<()> {
        let delta = self.next_blocks(block, block)?;
        if is_zero(data) {
            delta.zeroed.insert(block);
            self.zero_blocks += 1;
            return Ok(());
        }
        delta.written.insert(block);
        self.data_blocks += 1;
        self.chunker.push(data);
        if self.chunker.buffered() >= WINDOW {
            self.cut(false)?;
        }
        Ok(())
    }

    /// Room for `len` bytes of the open disk's next blocks, to read them into without a
    /// copy: then each block of it that `room_block` shows is either given to
    /// `put_room_block`, or dropped (unchanged blocks; zero blocks go to `put_zeroes`).
    pub(crate) fn read_room(&mut self, len: usize) -> Result<&mut [u8]> {
        // Cutting hands the buffer over, so it happens before a room is read into,
        // never while one is in use: a window can exceed WINDOW by one room.
        if self.chunker.buffered() >= WINDOW {
            self.cut(false)?;
        }
        Ok(self.chunker.room(len))
    }

    /// Block `i` of the room `read_room` gave last.
    pub(crate) fn room_block(&self, i: usize) -> &[u8] {
        let bs = BLOCK_SIZE as usize;
        self.chunker
            .room_bytes()
            .get(i * bs..(i + 1) * bs)
            .unwrap_or(&[])
    }

    /// Adds `block`, not all zero, read as block `i` of the room `read_room` gave last;
    /// the blocks of a room come in ascending order.
    pub(crate) fn put_room_block(&mut self, block: u32, i: usize) -> Result<()> {
        let delta = self.next_blocks(block, block)?;
        delta.written.insert(block);
        self.data_blocks += 1;
        let bs = BLOCK_SIZE as usize;
        if !self.chunker.keep(i * bs..(i + 1) * bs) {
            return Err(IngestError::Invalid(format!(
                "block {block} is not the next of the room read"
            )));
        }
        Ok(())
    }

    /// The open disk's delta, if blocks `first..=last` may come next (they are then
    /// the last fed).
    fn next_blocks(&mut self, first: u32, last: u32) -> Result<&mut DiskDelta> {
        let (Some(open), Some(delta)) = (self.open.as_mut(), self.disks.last_mut()) else {
            return Err(IngestError::Invalid("block before begin_disk".into()));
        };
        if open.last_block.is_some_and(|l| l >= first) || last < first {
            return Err(IngestError::Invalid(format!(
                "block {first} fed out of order"
            )));
        }
        open.last_block = Some(last);
        Ok(delta)
    }

    /// Adds blocks known to be all zero (a hole of an image), recorded as zeroed.
    pub fn put_zeroes(&mut self, blocks: Range<u32>) -> Result<()> {
        if blocks.is_empty() {
            return Ok(());
        }
        let delta = self.next_blocks(blocks.start, blocks.end - 1)?;
        delta.zeroed.insert_range(blocks.clone());
        self.zero_blocks += u64::from(blocks.end - blocks.start);
        Ok(())
    }

    /// Sends the window's certain chunks (all of them if `last`) to the packer.
    fn cut(&mut self, last: bool) -> Result<()> {
        let Some(disk) = self.open.as_ref().map(|o| o.disk) else {
            return Ok(());
        };
        let cuts = self.chunker.cuts(last);
        let Some(end) = cuts.last().map(|c| c.end) else {
            return Ok(());
        };
        let spare = self.spare.pop().unwrap_or_default();
        let data = self.chunker.take(end, spare);
        self.send(Job::Window { data, cuts })?;
        self.pending.push_back(disk);
        self.collect(false)
    }

    fn send(&mut self, job: Job) -> Result<()> {
        match self.jobs.send(job) {
            Ok(()) => Ok(()),
            Err(_) => Err(self.packer_failure()),
        }
    }

    /// Files the packer's answers: all that are pending if `wait`, else those ready.
    fn collect(&mut self, wait: bool) -> Result<()> {
        while !self.pending.is_empty() {
            let reply = if wait {
                self.replies.recv().map_err(|_| stopped())?
            } else {
                match self.replies.try_recv() {
                    Ok(r) => r,
                    Err(TryRecvError::Empty) => return Ok(()),
                    Err(TryRecvError::Disconnected) => return Err(stopped()),
                }
            };
            let Reply::Packed { refs, data } = reply? else {
                return Err(IngestError::Invalid("segment packer finished early".into()));
            };
            let disk = self.pending.pop_front();
            self.disks
                .iter_mut()
                .rev()
                .find(|d| Some(d.disk) == disk)
                .ok_or_else(|| IngestError::Invalid("packed window of no disk".into()))?
                .chunks
                .extend(refs);
            self.spare.push(data);
        }
        Ok(())
    }

    /// Why the packer hung up: the error it answered last, if it answered one.
    fn packer_failure(&mut self) -> IngestError {
        while let Ok(reply) = self.replies.recv() {
            if let Err(e) = reply {
                return e;
            }
        }
        stopped()
    }

    fn end_disk(&mut self) -> Result<()> {
        if self.open.is_none() {
            return Ok(());
        }
        self.cut(true)?;
        self.open = None;
        if self
            .disks
            .last()
            .is_some_and(|d| d.written.is_empty() && d.zeroed.is_empty())
        {
            // Nothing was fed, so no window of it is pending either.
            self.disks.pop();
        }
        Ok(())
    }

    fn finish(mut self) -> Result<BuiltSegment> {
        self.end_disk()?;
        self.send(Job::Finish)?;
        self.collect(true)?;
        let packed = match self.replies.recv().map_err(|_| stopped())?? {
            Reply::Finished(p) => p,
            Reply::Packed { .. } => {
                return Err(IngestError::Invalid("segment packer answered twice".into()))
            }
        };
        Ok(BuiltSegment {
            disks: self.disks,
            new_chunks: packed.new_chunks,
            packs: packed.packs,
            data_blocks: self.data_blocks,
            zero_blocks: self.zero_blocks,
        })
    }
}

fn stopped() -> IngestError {
    IngestError::Invalid("segment packer stopped".into())
}

/// Runs `feed` on a blocking thread to fill a segment, while the packing stages name,
/// compress and pack what it cut and the uploader sends the packs as they fill.
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
    let (stages, [naming, packing]) = packer::start(
        ctx.index.clone(),
        domain.to_owned(),
        &ctx.config,
        sink,
        stored,
    );
    let cfg = ctx.config.clone();
    let building = tokio::task::spawn_blocking(move || {
        let mut b = SegmentBuilder::new(&cfg, stages);
        let state = feed(&mut b)?;
        Ok::<_, IngestError>((b.finish()?, state))
    });
    let built = building
        .await
        .map_err(|e| IngestError::Invalid(format!("segment builder panicked: {e}")));
    let mut packed = Ok(());
    for stage in [naming, packing] {
        if let Err(e) = stage.await {
            packed = Err(IngestError::Invalid(format!(
                "segment packer panicked: {e}"
            )));
        }
    }
    let uploaded = upload
        .await
        .map_err(|e| IngestError::Invalid(format!("uploader panicked: {e}")));
    // A failed upload closes the sink, which fails the packer and so the builder too;
    // report the cause.
    uploaded??;
    packed?;
    built?
}
