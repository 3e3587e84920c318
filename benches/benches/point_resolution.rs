//! Point resolution on a long chain of one 1 TiB disk (issue 7's target: a plan in
//! at most 50 ms and 256 MiB).
//!
//! - `random`: 10,000 segments, each writing 1,000 blocks drawn uniformly from the
//!   whole disk (268,435,456 blocks of 4 KiB; 1% of them zeroed rather than written).
//!   Planned at the newest point, at the middle one, and the rollback of the newest
//!   100 segments ([`Index::plan_blocks`] of what they changed, at seq 9,900).
//! - `hot`: 10,000 segments, each writing 1,000 blocks of a hot set of 20,000 blocks
//!   (a database's log, say): planned at the newest point. Here the union summaries of
//!   runs of segments skip what is already resolved.
//!
//! Besides criterion's times, each plan is run once more under a counting allocator,
//! and its peak heap is printed (Rust allocations: the plan, the walk's bitset; not
//! RocksDB's block cache, which is bounded by its own setting).
//!
//! - `floor/random_newest`: the memory-bound floor of `random/newest` on this machine,
//!   to report the plan as a ratio against it: only the test-and-set of each block
//!   in the walk's bitset of its half of the disk (two threads, 16 MiB each, huge
//!   pages), era after era and then run after run, as the walk reads era maps and
//!   run maps, each era's or run's blocks ascending and prefetched a few ahead, with
//!   the blocks already in memory: no reading, no parsing, no plan. (The walk reads
//!   the newest, unfinished run segment by segment.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use roaring::RoaringBitmap;
use tidemark_benches::bitmaps::{one_disk_domain, segment};
use tidemark_format::SegmentKind;
use tidemark_pitr_index::{BlockMask, DiskPlan, Index};

/// 1 TiB of 4 KiB blocks.
const BLOCKS: u32 = 1 << 28;
const SEGMENTS: u64 = 10_000;
const DIRTY_PER_SEGMENT: usize = 1_000;
const HOT_SET: u32 = 20_000;
const ROLLBACK: u64 = 100;
/// log2 of the seqs of one run map (and union summary) of the index.
const RUN_BITS: u32 = 6;
/// log2 of the seqs of one era map of the index.
const ERA_BITS: u32 = 12;
const DOMAIN: &str = "bench";

/// Counts the bytes the Rust heap holds, and their peak since the last reset.
struct Counting;

static HELD: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = HELD.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        HELD.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            let now = HELD.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let now = HELD.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size
                    - layout.size();
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                HELD.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// An index of `SEGMENTS` segments whose dirty blocks are drawn from `0..range` (plus
/// `offset`), 1% of them zeroed; and the blocks each segment touched, ascending.
/// Prints the median time to index a segment, and the slowest ones: those that build
/// the maps of an era.
fn chain(dir: &std::path::Path, seed: u64, offset: u32, range: u32) -> (Index, Vec<Vec<u32>>) {
    let index = Index::open(dir).expect("open index");
    index
        .put_domain(&one_disk_domain(DOMAIN, BLOCKS))
        .expect("domain");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut touched = Vec::new();
    let mut took = Vec::new();
    for seq in 1..=SEGMENTS {
        let mut written = RoaringBitmap::new();
        let mut zeroed = RoaringBitmap::new();
        for _ in 0..DIRTY_PER_SEGMENT {
            let b = offset + rng.gen_range(0..range);
            if rng.gen_range(0..100) == 0 {
                zeroed.insert(b);
            } else {
                written.insert(b);
            }
        }
        zeroed -= &written;
        touched.push((&written | &zeroed).iter().collect());
        let started = Instant::now();
        let indexed = index
            .apply_segment(
                &segment(DOMAIN, seq, SegmentKind::Delta, written, zeroed),
                0,
                &[],
                &[],
                &[],
            )
            .expect("apply segment");
        took.push((started.elapsed(), seq));
        assert!(indexed);
    }
    took.sort_unstable();
    eprintln!(
        "{}: a segment indexed in {:?} (median); slowest {:?}; index {:.1} MiB",
        dir.display(),
        took[took.len() / 2].0,
        &took[took.len() - 3..],
        index.size_bytes() as f64 / (1 << 20) as f64,
    );
    (index, touched)
}

/// For each half of the disk, the blocks each finished era of segments touched, then
/// each run of the rest (the seqs one era map or run map covers), ascending and
/// numbered from the half's start; the newest run last.
fn halves(segments: &[Vec<u32>]) -> [Vec<Vec<u32>>; 2] {
    let half = BLOCKS / 2;
    // Eras below this seq are finished: a later segment exists.
    let mapped_eras = segments.len() as u64 >> ERA_BITS << ERA_BITS;
    let group = |seq: u64| {
        if seq < mapped_eras {
            seq >> ERA_BITS
        } else {
            (mapped_eras >> ERA_BITS) + ((seq - mapped_eras) >> RUN_BITS)
        }
    };
    [false, true].map(|upper| {
        let mut runs: Vec<Vec<u32>> = Vec::new();
        for (i, seg) in segments.iter().enumerate() {
            let seq = i as u64 + 1;
            let run = group(seq) as usize;
            runs.resize_with(run + 1, Vec::new);
            let mine = seg.iter().filter(|b| (**b >= half) == upper);
            runs[run].extend(mine.map(|b| b % half));
        }
        for run in &mut runs {
            run.sort_unstable();
            run.dedup();
        }
        runs
    })
}

/// Tests and sets every block of `runs` (one half's eras and runs, newest last) in the
/// walk's own bitset of the half, each one's ascending, as the walk reads a map (a
/// run's blocks asked for a few ahead; an era's are dense enough for the CPU's own
/// prefetcher), and returns how many were new. See `floor/random_newest`.
fn mask_floor(runs: &[Vec<u32>]) -> u64 {
    const AHEAD: usize = 16;
    let eras = (SEGMENTS >> ERA_BITS) as usize;
    let mut mask = BlockMask::with_limit(u64::from(BLOCKS / 2));
    for (g, run) in runs.iter().enumerate().rev() {
        for (i, b) in run.iter().enumerate() {
            if let Some(next) = run.get(i + AHEAD).filter(|_| g >= eras) {
                mask.prefetch(*next);
            }
            mask.insert(*b);
        }
    }
    mask.len()
}

/// `mask_floor` of both halves, on two threads.
fn both_halves(halves: &[Vec<Vec<u32>>; 2]) -> u64 {
    std::thread::scope(|s| {
        let upper = s.spawn(|| mask_floor(&halves[1]));
        mask_floor(&halves[0]) + upper.join().expect("upper half")
    })
}

/// Runs `plan` once and prints its time and peak heap.
fn measure_once(name: &str, plan: impl FnOnce() -> DiskPlan) -> DiskPlan {
    let held = HELD.load(Ordering::Relaxed);
    PEAK.store(held, Ordering::Relaxed);
    let started = Instant::now();
    let p = plan();
    let took = started.elapsed();
    let heap = PEAK.load(Ordering::Relaxed) - held;
    eprintln!(
        "{name}: {took:?} once; {} segments read from, {} runs skipped, {} runs and {} eras \
         mapped, {} data blocks, {} zeroed; peak heap {:.1} MiB",
        p.reads.len(),
        p.skipped_runs,
        p.mapped_runs,
        p.mapped_eras,
        p.data_blocks(),
        p.zeroed.len(),
        heap as f64 / (1 << 20) as f64,
    );
    p
}

fn point_resolution(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let (random, random_blocks) = chain(&dir.path().join("random"), 42, 0, BLOCKS);
    let random_halves = halves(&random_blocks);
    drop(random_blocks);
    let (hot, _) = chain(&dir.path().join("hot"), 43, 1 << 20, HOT_SET);
    eprintln!("point_resolution: indexes built in {:?}", started.elapsed());

    let newest = measure_once("random/newest", || {
        random.plan(DOMAIN, 0, BLOCKS, SEGMENTS).expect("plan")
    });
    assert_eq!(newest.reads.len() as u64, SEGMENTS);
    // The floor does the same work: every block the plan resolves, once.
    assert_eq!(
        both_halves(&random_halves),
        newest.data_blocks() + newest.zeroed.len()
    );
    measure_once("random/middle", || {
        random.plan(DOMAIN, 0, BLOCKS, SEGMENTS / 2).expect("plan")
    });
    let changed = random
        .changed_blocks(DOMAIN, 0, SEGMENTS - ROLLBACK, SEGMENTS)
        .expect("changed blocks");
    eprintln!(
        "random/rollback_100: {} blocks changed in the newest {ROLLBACK} segments",
        changed.len()
    );
    measure_once("random/rollback_100", || {
        random
            .plan_blocks(DOMAIN, 0, &changed, SEGMENTS - ROLLBACK)
            .expect("plan blocks")
    });
    let hot_plan = measure_once("hot/newest", || {
        hot.plan(DOMAIN, 0, BLOCKS, SEGMENTS).expect("plan")
    });
    assert!(hot_plan.data_blocks() + hot_plan.zeroed.len() <= u64::from(HOT_SET));

    let mut g = c.benchmark_group("point_resolution_1TiB_10k");
    g.sample_size(10);
    g.bench_function("random/newest", |b| {
        b.iter(|| random.plan(DOMAIN, 0, BLOCKS, SEGMENTS).expect("plan"))
    });
    g.bench_function("random/middle", |b| {
        b.iter(|| random.plan(DOMAIN, 0, BLOCKS, SEGMENTS / 2).expect("plan"))
    });
    g.bench_function("random/rollback_100", |b| {
        b.iter(|| {
            random
                .plan_blocks(DOMAIN, 0, &changed, SEGMENTS - ROLLBACK)
                .expect("plan blocks")
        })
    });
    g.bench_function("hot/newest", |b| {
        b.iter(|| hot.plan(DOMAIN, 0, BLOCKS, SEGMENTS).expect("plan"))
    });
    g.bench_function("floor/random_newest", |b| {
        b.iter(|| both_halves(&random_halves))
    });
    g.finish();
}

criterion_group!(benches, point_resolution);
criterion_main!(benches);
