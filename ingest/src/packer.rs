//! What becomes of the windows the segment builder cuts, in two stages on their own
//! threads, each fed through a short queue:
//!
//! 1. naming: every chunk is named (BLAKE3) and looked up in the index, the new ones
//!    are compressed, all on every core (rayon);
//! 2. packing (`packs.rs`): the frames are appended to packs, which are sealed and
//!    handed to the uploader.
//!
//! So reading a disk and cutting its stream (the builder), compressing, and sealing
//! packs all run at once, on different windows: they used to take turns, and whatever
//! was not compression left a core idle.

use std::collections::HashSet;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::Arc;

use rayon::prelude::*;
use tidemark_format::{ChunkHash, ChunkRef, PackId};
use tidemark_pitr_index::{ChunkLocation, Index, PackInfo};
use tokio::task::JoinHandle;

use crate::chunker::Cut;
use crate::compress::compress_chunk;
use crate::packs::PackFiller;
use crate::uploader::PackSink;
use crate::{IngestConfig, Result};

/// Windows queued before each stage besides the one it works on. The builder is the
/// fastest stage, so one window ahead keeps the others busy; more would only hold
/// more memory.
const QUEUE: usize = 1;

/// What the builder sends.
pub(crate) enum Job {
    /// Cut bytes of one disk's stream: `cuts` are ranges of `data`, in stream order.
    Window { data: Vec<u8>, cuts: Vec<Cut> },
    /// No more windows: seal the last pack and report.
    Finish,
}

/// What the builder gets back, in the order of its jobs; the first error ends them.
pub(crate) enum Reply {
    /// A window's chunk refs in stream order, and its buffer to reuse.
    Packed { refs: Vec<ChunkRef>, data: Vec<u8> },
    /// The answer to `Finish`: every pack is sealed and handed to the uploader.
    Finished(Packed),
}

/// What the packing stored.
#[derive(Debug, Default)]
pub(crate) struct Packed {
    /// Chunks it stored, and where.
    pub new_chunks: Vec<(ChunkHash, ChunkLocation)>,
    /// Packs it stored.
    pub packs: Vec<(PackId, PackInfo)>,
}

/// A window on its way from naming to packing.
pub(crate) enum Named {
    Window {
        data: Vec<u8>,
        refs: Vec<ChunkRef>,
        /// The chunks to store, in stream order.
        fresh: Vec<Fresh>,
    },
    Finish,
}

/// A chunk to store: where it is in its window, and its zstd frame (`None`: raw).
pub(crate) struct Fresh {
    pub hash: ChunkHash,
    pub cut: Cut,
    pub frame: Option<Vec<u8>>,
}

/// The channels of the builder's end.
pub(crate) struct Stages {
    pub jobs: SyncSender<Job>,
    pub replies: Receiver<Result<Reply>>,
}

/// Starts both stages for one segment of `domain`; `stored` names chunks stored
/// already that the index does not locate yet. The tasks end when the builder
/// hangs up or after `Finish`.
pub(crate) fn start(
    index: Arc<Index>,
    domain: String,
    cfg: &IngestConfig,
    sink: PackSink,
    stored: HashSet<ChunkHash>,
) -> (Stages, [JoinHandle<()>; 2]) {
    let (jobs, jobs_rx) = mpsc::sync_channel(QUEUE);
    let (named, named_rx) = mpsc::sync_channel(QUEUE);
    // Unbounded, so that no stage ever waits on the builder: the answers are bounded
    // by the windows in flight anyway.
    let (replies_tx, replies) = mpsc::channel();
    let namer = Namer {
        index,
        domain,
        level: cfg.zstd_level,
        seen: stored,
    };
    let filler = PackFiller::new(cfg.pack_bytes, sink);
    let errors = replies_tx.clone();
    let naming = tokio::task::spawn_blocking(move || namer.run(jobs_rx, named, errors));
    let packing = tokio::task::spawn_blocking(move || filler.run(named_rx, replies_tx));
    (Stages { jobs, replies }, [naming, packing])
}

struct Namer {
    index: Arc<Index>,
    domain: String,
    level: i32,
    /// Chunks this segment already references: looked up once, stored once.
    seen: HashSet<ChunkHash>,
}

impl Namer {
    /// Names windows until `Finish`, or until a neighbour hangs up (the builder failed,
    /// or the packing did and told it why). Its own error goes straight to the builder.
    fn run(mut self, jobs: Receiver<Job>, named: SyncSender<Named>, errors: Sender<Result<Reply>>) {
        for job in jobs {
            let next = match job {
                Job::Window { data, cuts } => match self.name(&data, &cuts) {
                    Ok((refs, fresh)) => Named::Window { data, refs, fresh },
                    Err(e) => {
                        let _ = errors.send(Err(e));
                        return;
                    }
                },
                Job::Finish => Named::Finish,
            };
            if named.send(next).is_err() {
                return;
            }
        }
    }

    /// Names the cut chunks and compresses those not stored yet; returns the refs of
    /// all, in order, and the chunks to store.
    fn name(&mut self, buf: &[u8], cuts: &[Cut]) -> Result<(Vec<ChunkRef>, Vec<Fresh>)> {
        // One pass per chunk, so that it is compressed while still in this core's
        // cache from hashing. Index lookups are independent reads, so they run here
        // too. A chunk found twice in one window is compressed twice, and stored once.
        let (index, domain, seen, level) = (&self.index, &self.domain, &self.seen, self.level);
        let named: Vec<(ChunkHash, Option<Option<Vec<u8>>>)> = cuts
            .par_iter()
            .map(|r| {
                let data = &buf[r.clone()];
                let hash = ChunkHash::of(data);
                let known = seen.contains(&hash) || index.chunk_location(domain, &hash)?.is_some();
                Ok((hash, (!known).then(|| compress_chunk(data, level))))
            })
            .collect::<Result<_>>()?;
        let mut refs = Vec::with_capacity(cuts.len());
        let mut fresh = Vec::new();
        for ((hash, frame), cut) in named.into_iter().zip(cuts) {
            refs.push(ChunkRef {
                hash,
                len: cut.len() as u32,
            });
            // Inserted either way: a chunk the index locates is not looked up again.
            if let (true, Some(frame)) = (self.seen.insert(hash), frame) {
                fresh.push(Fresh {
                    hash,
                    cut: cut.clone(),
                    frame,
                });
            }
        }
        Ok((refs, fresh))
    }
}
