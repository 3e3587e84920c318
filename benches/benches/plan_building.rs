//! Plan building: from a point's plan to the ranged reads of a restore
//! ([`Placements::add_segment`] for each segment, then [`coalesce`]), for a 1 TiB disk
//! holding 1 GiB of data: a full segment of 1,024 extents of 1 MiB at random places,
//! then 1,000 segments each rewriting 100 random blocks of that data. Chunks are 64 KiB
//! (16 blocks) and packs 16 MiB, as ingest makes them; frames compress to half.

use criterion::{criterion_group, criterion_main, Criterion};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use roaring::RoaringBitmap;
use tidemark_format::{ChunkCodec, ChunkHash, ChunkRef, PackId, BLOCK_SIZE};
use tidemark_pitr_index::{Blocks, ChunkLocation};
use tidemark_rehydrator::placement::Placements;
use tidemark_rehydrator::{coalesce, ChunkJob, RestoreOptions};

const BLOCKS: u32 = 1 << 28;
const EXTENTS: u32 = 1024;
const EXTENT_BLOCKS: u32 = 256;
const DELTAS: u32 = 1000;
const DELTA_BLOCKS: usize = 100;
const CHUNK_BLOCKS: u32 = 16;
const PACK_BYTES: u64 = 16 << 20;

/// One segment as a restore sees it: its written set, its stream, the blocks read.
struct SegmentReads {
    written: RoaringBitmap,
    stream: Vec<ChunkRef>,
    hits: Blocks,
}

fn stream_of(seq: u32, written: &RoaringBitmap) -> Vec<ChunkRef> {
    (0..written.len().div_ceil(u64::from(CHUNK_BLOCKS)))
        .map(|i| {
            let mut name = [0u8; 12];
            name[..4].copy_from_slice(&seq.to_le_bytes());
            name[4..].copy_from_slice(&i.to_le_bytes());
            let left = written.len() - i * u64::from(CHUNK_BLOCKS);
            ChunkRef {
                hash: ChunkHash::of(&name),
                len: left.min(u64::from(CHUNK_BLOCKS)) as u32 * BLOCK_SIZE,
            }
        })
        .collect()
}

/// The segments of the history, newest first, each with the blocks the newest point
/// reads from it.
fn history() -> Vec<SegmentReads> {
    let mut rng = StdRng::seed_from_u64(42);
    let mut base = RoaringBitmap::new();
    while base.len() < u64::from(EXTENTS * EXTENT_BLOCKS) {
        let start = rng.gen_range(0..BLOCKS / EXTENT_BLOCKS) * EXTENT_BLOCKS;
        base.insert_range(start..start + EXTENT_BLOCKS);
    }
    let data: Vec<u32> = base.iter().collect();
    let mut segments = vec![(0, base)];
    for seq in 1..=DELTAS {
        let written: RoaringBitmap = (0..DELTA_BLOCKS)
            .map(|_| data[rng.gen_range(0..data.len())])
            .collect();
        segments.push((seq, written));
    }
    let mut resolved = RoaringBitmap::new();
    segments
        .into_iter()
        .rev()
        .map(|(seq, written)| {
            let hits = &written - &resolved;
            resolved |= &hits;
            SegmentReads {
                stream: stream_of(seq, &written),
                written,
                hits: Blocks::from(&hits),
            }
        })
        .collect()
}

/// Placements, chunk jobs and the coalesced ranges of the whole restore; returns the
/// number of ranged reads.
fn build(history: &[SegmentReads], opts: &RestoreOptions) -> usize {
    let mut placements = Placements::default();
    for s in history {
        assert!(placements.add_segment(&s.written, &s.stream, &s.hits));
    }
    // Frames laid out in stream order, packed 16 MiB at a time.
    let mut jobs = Vec::with_capacity(placements.by_chunk.len());
    let mut offsets = std::collections::HashMap::new();
    let mut at = 0u64;
    for s in history.iter().rev() {
        for c in &s.stream {
            offsets.entry(c.hash).or_insert_with(|| {
                let o = at;
                at += u64::from(c.len / 2);
                o
            });
        }
    }
    for (hash, places) in placements.by_chunk {
        let offset = offsets[&hash];
        jobs.push(ChunkJob {
            hash,
            loc: ChunkLocation {
                pack: PackId(u128::from(offset / PACK_BYTES)),
                offset: offset % PACK_BYTES,
                clen: CHUNK_BLOCKS * BLOCK_SIZE / 2,
                ulen: CHUNK_BLOCKS * BLOCK_SIZE,
                codec: ChunkCodec::Zstd,
            },
            placements: places,
        });
    }
    coalesce(jobs, opts.gap, opts.max_range).len()
}

fn plan_building(c: &mut Criterion) {
    let history = history();
    let opts = RestoreOptions::default();
    let blocks: u64 = history.iter().map(|s| s.hits.len()).sum();
    eprintln!(
        "plan_building: {} segments, {blocks} blocks read, {} ranged reads",
        history.len(),
        build(&history, &opts)
    );
    let mut g = c.benchmark_group("plan_building_1TiB_1GiB");
    g.sample_size(20);
    g.bench_function("placements_and_ranges", |b| {
        b.iter(|| build(&history, &opts))
    });
    g.finish();
}

criterion_group!(benches, plan_building);
criterion_main!(benches);
