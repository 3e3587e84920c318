//! GC micro-benchmarks on a long chain of one large disk:
//!
//! - `gc_liveness`: the liveness pass ([`tidemark_gc::plan::disk_liveness`]) over
//!   10,000 segments of a 100 GiB disk (26,214,400 blocks of 4 KiB), every 10th segment
//!   and the last retained. The same pass fed from a real index ([`Index::disk_touched`]
//!   + liveness), as a GC run does it, is timed three times and printed (not criterion).
//! - `gc_point_resolution`: [`Index::plan`] of the whole disk at the newest point of the
//!   10,000-segment chain, against an index where everything up to seq 8,200 is one image
//!   segment followed by the same 1,800 recent segments (an hour of 2 s points); and the
//!   plan at the image's point there. The chain's plan at seq 8,200 is timed once only
//!   (printed). Both shortcuts keep the whole run under two minutes.
//!
//! The history (deterministic, seed 42): each segment writes 1,000 blocks drawn
//! uniformly from the whole disk (1% of them zeroed rather than written) and 1,000
//! blocks drawn from a hot set of 1% of the disk (262,144 blocks chosen at random once),
//! so a hot block is rewritten about 38 times over the chain. Segments are indexed with
//! [`Index::apply_segment`] (bitmaps only: no store, no chunk data).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use roaring::RoaringBitmap;
use tidemark_benches::bitmaps::{one_disk_domain, segment};
use tidemark_format::{Segment, SegmentKind};
use tidemark_gc::plan::disk_liveness;
use tidemark_pitr_index::{Blocks, DiskPlan, Index};

/// 100 GiB of 4 KiB blocks.
const BLOCKS: u32 = 26_214_400;
const SEGMENTS: u64 = 10_000;
const COLD_PER_SEGMENT: usize = 1_000;
const HOT_PER_SEGMENT: usize = 1_000;
/// 1% of the disk.
const HOT_SET: usize = (BLOCKS / 100) as usize;
/// Segments after the image in the imaged index: an hour of 2 s points.
const RECENT: u64 = 1_800;
/// The image's point, and the older point planned in both indexes.
const IMAGE_AT: u64 = SEGMENTS - RECENT;
const DOMAIN: &str = "bench";

/// `(seq, written, zeroed)` of every segment, ascending.
type History = Vec<(u64, RoaringBitmap, RoaringBitmap)>;

fn history() -> History {
    let mut rng = StdRng::seed_from_u64(42);
    let hot: Vec<u32> = (0..HOT_SET).map(|_| rng.gen_range(0..BLOCKS)).collect();
    (1..=SEGMENTS)
        .map(|seq| {
            let mut written = RoaringBitmap::new();
            let mut zeroed = RoaringBitmap::new();
            for _ in 0..COLD_PER_SEGMENT {
                let b = rng.gen_range(0..BLOCKS);
                if rng.gen_range(0..100) == 0 {
                    zeroed.insert(b);
                } else {
                    written.insert(b);
                }
            }
            for _ in 0..HOT_PER_SEGMENT {
                written.insert(hot[rng.gen_range(0..HOT_SET)]);
            }
            // Last writer wins within a segment: a block is written or zeroed, not both.
            zeroed -= &written;
            (seq, written, zeroed)
        })
        .collect()
}

fn retained() -> BTreeSet<u64> {
    (1..=SEGMENTS)
        .filter(|s| s % 10 == 0 || *s == SEGMENTS)
        .collect()
}

fn apply(index: &Index, seg: &Segment) {
    let new = index
        .apply_segment(seg, 0, &[], &[], &[])
        .expect("apply segment");
    assert!(new, "segment {} indexed twice", seg.seq);
}

/// The whole chain, and the chain with everything up to `IMAGE_AT` replaced by one image
/// segment (written: the blocks whose newest state there is data; zeroed: all others).
struct Indexes {
    _dir: tempfile::TempDir,
    chain: Index,
    imaged: Index,
}

fn indexes(history: &History) -> Indexes {
    let dir = tempfile::tempdir().expect("tempdir");
    let chain = Index::open(&dir.path().join("chain")).expect("open chain index");
    let imaged = Index::open(&dir.path().join("imaged")).expect("open imaged index");
    chain
        .put_domain(&one_disk_domain(DOMAIN, BLOCKS))
        .expect("domain");
    imaged
        .put_domain(&one_disk_domain(DOMAIN, BLOCKS))
        .expect("domain");
    let mut data = RoaringBitmap::new();
    for (seq, written, zeroed) in history {
        apply(
            &chain,
            &segment(
                DOMAIN,
                *seq,
                SegmentKind::Delta,
                written.clone(),
                zeroed.clone(),
            ),
        );
        if *seq <= IMAGE_AT {
            data -= zeroed;
            data |= written;
            if *seq == IMAGE_AT {
                let mut all = RoaringBitmap::new();
                all.insert_range(0..BLOCKS);
                let zero = all - &data;
                apply(
                    &imaged,
                    &segment(DOMAIN, *seq, SegmentKind::Image, data.clone(), zero),
                );
            }
        } else {
            apply(
                &imaged,
                &segment(
                    DOMAIN,
                    *seq,
                    SegmentKind::Delta,
                    written.clone(),
                    zeroed.clone(),
                ),
            );
        }
    }
    Indexes {
        _dir: dir,
        chain,
        imaged,
    }
}

fn liveness(c: &mut Criterion) {
    let history = history();
    let touched: Vec<(u64, RoaringBitmap)> =
        history.iter().map(|(seq, w, z)| (*seq, w | z)).collect();
    let retained = retained();
    let total: u64 = touched.iter().map(|(_, t)| t.len()).sum();
    let live = disk_liveness(&touched, &retained);
    let live_blocks: u64 = live.iter().map(|l| l.live.len()).sum();
    eprintln!(
        "gc_liveness: {SEGMENTS} segments, {BLOCKS} blocks, {} retained, {total} blocks touched, \
         {live_blocks} live, {} dead",
        retained.len(),
        total - live_blocks
    );

    let mut g = c.benchmark_group("gc_liveness");
    g.bench_function("disk_liveness_10k_segments_100GiB", |b| {
        b.iter(|| disk_liveness(black_box(&touched), black_box(&retained)))
    });

    g.finish();

    let started = Instant::now();
    let idx = indexes(&history);
    eprintln!(
        "gc: both indexes built in {:?} (not measured by criterion)",
        started.elapsed()
    );
    // What a GC run pays: the bitmaps read from the index, then liveness. Timed three
    // times rather than by criterion, to keep the whole run under two minutes.
    let mut times = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let t = idx
            .chain
            .disk_touched(DOMAIN, 0, SEGMENTS)
            .expect("disk_touched");
        let read = started.elapsed();
        let l = disk_liveness(&t, black_box(&retained));
        times.push((read, started.elapsed()));
        assert_eq!(t, touched, "the index returns what was indexed");
        assert_eq!(l.len(), touched.len());
    }
    eprintln!(
        "gc_liveness/from_index (disk_touched + disk_liveness), 3 runs: {}",
        times
            .iter()
            .map(|(read, all)| format!("{all:?} (of which disk_touched {read:?})"))
            .collect::<Vec<_>>()
            .join(", ")
    );

    point_resolution(c, &idx);
}

fn point_resolution(c: &mut Criterion, idx: &Indexes) {
    // Same images either way: the same zero set, and the same segments read for every
    // block newer than the image. Each plan is also timed once here: the chain's plan at
    // the image's point is not a criterion bench, to keep the run under two minutes.
    for at in [SEGMENTS, IMAGE_AT] {
        let started = Instant::now();
        let a = idx.chain.plan(DOMAIN, 0, BLOCKS, at).expect("plan chain");
        let chain_time = started.elapsed();
        let started = Instant::now();
        let b = idx.imaged.plan(DOMAIN, 0, BLOCKS, at).expect("plan imaged");
        let imaged_time = started.elapsed();
        assert_eq!(a.zero_blocks(), b.zero_blocks(), "zero blocks at {at}");
        assert_eq!(a.data_blocks(), b.data_blocks(), "data blocks at {at}");
        let recent = |p: &DiskPlan| -> Vec<(u64, Blocks)> {
            p.reads
                .iter()
                .filter(|(s, _)| *s > IMAGE_AT)
                .cloned()
                .collect()
        };
        assert_eq!(recent(&a), recent(&b), "recent reads at {at}");
        eprintln!(
            "gc_point_resolution at {at}: {} data blocks; chain: {} segments read, \
             {chain_time:?} once; image + {RECENT}: {} segments read, {imaged_time:?} once",
            a.data_blocks(),
            a.reads.len(),
            b.reads.len(),
        );
    }

    let mut g = c.benchmark_group("gc_point_resolution");
    g.bench_function("chain_10k/newest", |b| {
        b.iter(|| idx.chain.plan(DOMAIN, 0, BLOCKS, SEGMENTS).expect("plan"))
    });
    g.bench_function("image_plus_1800/newest", |b| {
        b.iter(|| idx.imaged.plan(DOMAIN, 0, BLOCKS, SEGMENTS).expect("plan"))
    });
    g.bench_function("image_plus_1800/image_point", |b| {
        b.iter(|| idx.imaged.plan(DOMAIN, 0, BLOCKS, IMAGE_AT).expect("plan"))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = liveness
}
criterion_main!(benches);
