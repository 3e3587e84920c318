use proptest::prelude::*;
use roaring::RoaringBitmap;
use tidemark_format::{
    ChunkCodec, ChunkHash, ChunkRef, DiskDelta, DiskSpec, DomainRecord, Marker, PackId, Segment,
    SegmentKind, WriterId, BLOCK_SIZE,
};

use super::*;

fn domain() -> DomainRecord {
    DomainRecord {
        name: "d".into(),
        block_size: BLOCK_SIZE,
        disks: vec![DiskSpec {
            name: "a".into(),
            size: 64 * BLOCK_SIZE as u64,
        }],
        created: 0,
    }
}

fn segment(
    seq: u64,
    time: i64,
    written: &[u32],
    zeroed: &[u32],
    markers: &[(&str, bool)],
) -> Segment {
    let written: RoaringBitmap = written.iter().copied().collect();
    let zeroed: RoaringBitmap = zeroed.iter().copied().collect::<RoaringBitmap>() - &written;
    let chunks = if written.is_empty() {
        vec![]
    } else {
        vec![ChunkRef {
            hash: ChunkHash::of(&seq.to_le_bytes()),
            len: written.len() as u32 * BLOCK_SIZE,
        }]
    };
    Segment {
        domain: "d".into(),
        seq,
        kind: SegmentKind::Delta,
        writer: WriterId::default(),
        time_start: time,
        time_end: time,
        markers: markers
            .iter()
            .map(|(n, g)| Marker {
                name: n.to_string(),
                known_good: *g,
            })
            .collect(),
        new_packs: vec![],
        disks: vec![DiskDelta {
            disk: 0,
            written,
            zeroed,
            chunks,
        }],
    }
}

fn open() -> (tempfile::TempDir, Index) {
    let dir = tempfile::tempdir().expect("tempdir");
    let idx = Index::open(dir.path()).expect("open");
    idx.put_domain(&domain()).expect("domain");
    (dir, idx)
}

#[test]
fn apply_is_idempotent_and_counts_refs() {
    let (_dir, idx) = open();
    let s = segment(1, 10, &[1, 2], &[], &[]);
    let loc = ChunkLocation {
        pack: PackId(5),
        offset: 0,
        clen: 10,
        ulen: 8192,
        codec: ChunkCodec::Zstd,
    };
    let hash = s.disks[0].chunks[0].hash;
    assert!(idx
        .apply_segment(&s, 100, &[], &[(hash, loc)], &[])
        .expect("apply"));
    assert!(!idx
        .apply_segment(&s, 100, &[], &[(hash, loc)], &[])
        .expect("replay"));
    assert_eq!(idx.chunk_refs("d", &hash).expect("refs"), 1);
    assert_eq!(idx.chunk_location("d", &hash).expect("loc"), Some(loc));
    assert_eq!(idx.last_seq("d").expect("last"), Some(1));
    idx.forget_domain("d").expect("forget");
    assert_eq!(idx.last_seq("d").expect("last"), None);
    assert!(idx.domain("d").expect("domain").is_none());
}

#[test]
fn points_resolve_by_seq_time_marker_and_last_good() {
    let (_dir, idx) = open();
    idx.apply_segment(
        &segment(1, 100, &[1], &[], &[("nightly", false)]),
        1,
        &[],
        &[],
        &[],
    )
    .expect("1");
    idx.apply_segment(
        &segment(2, 200, &[2], &[], &[("app", true)]),
        1,
        &[],
        &[],
        &[],
    )
    .expect("2");
    idx.apply_segment(
        &segment(3, 300, &[3], &[], &[("nightly", false)]),
        1,
        &[],
        &[],
        &[],
    )
    .expect("3");
    let r = |s: PointSpec| idx.resolve_point("d", &s);
    assert_eq!(r(PointSpec::Latest).expect("latest"), 3);
    assert_eq!(r(PointSpec::Seq(2)).expect("seq"), 2);
    assert!(matches!(
        r(PointSpec::Seq(9)),
        Err(IndexError::NoSuchPoint(_))
    ));
    assert_eq!(r(PointSpec::Time(250)).expect("time"), 2);
    assert_eq!(r(PointSpec::Time(300)).expect("time"), 3);
    assert!(r(PointSpec::Time(99)).is_err());
    assert_eq!(r(PointSpec::Marker("nightly".into())).expect("marker"), 3);
    assert_eq!(r(PointSpec::Marker("app".into())).expect("marker"), 2);
    assert!(r(PointSpec::Marker("ap".into())).is_err());
    assert_eq!(r(PointSpec::LastGood).expect("good"), 2);
    assert!(matches!(
        idx.resolve_point("nope", &PointSpec::Latest),
        Err(IndexError::UnknownDomain(_))
    ));
}

#[test]
fn point_spec_parsing() {
    assert_eq!("latest".parse::<PointSpec>(), Ok(PointSpec::Latest));
    assert_eq!("42".parse::<PointSpec>(), Ok(PointSpec::Seq(42)));
    assert_eq!(
        "marker:x".parse::<PointSpec>(),
        Ok(PointSpec::Marker("x".into()))
    );
    assert_eq!(
        "1970-01-01T00:00:01Z".parse::<PointSpec>(),
        Ok(PointSpec::Time(1_000_000_000))
    );
    assert!("yesterday".parse::<PointSpec>().is_err());
}

/// Histories of 1 to 24 segments of disk 0: `(written, zeroed)` blocks of each.
fn histories() -> impl Strategy<Value = Vec<(Vec<u32>, Vec<u32>)>> {
    prop::collection::vec(
        (
            prop::collection::vec(0u32..64, 0..12),
            prop::collection::vec(0u32..64, 0..6),
        ),
        1..25,
    )
}

/// Indexes `history` as segments 1, 2, … of disk 0: `(written, zeroed)` per segment.
fn apply_history(idx: &Index, history: &[(Vec<u32>, Vec<u32>)]) {
    for (i, (w, z)) in history.iter().enumerate() {
        let s = segment(i as u64 + 1, i as i64, w, z, &[]);
        idx.apply_segment(&s, 1, &[], &[], &[]).expect("apply");
    }
}

proptest! {
    /// The plan equals a naive replay of the history: for each block, the newest
    /// segment at or before the point that touched it decides.
    #[test]
    fn plan_matches_naive_replay(
        history in histories(),
        at_frac in 0.0f64..1.0,
    ) {
        let (_dir, idx) = open();
        apply_history(&idx, &history);
        let at = 1 + ((history.len() - 1) as f64 * at_frac) as u64;
        let plan = idx.plan("d", 0, 64, at).expect("plan");
        for block in 0..64u32 {
            let mut expect = None; // None = zero
            for (i, (w, z)) in history.iter().enumerate().take(at as usize) {
                if w.contains(&block) {
                    expect = Some(i as u64 + 1);
                } else if z.contains(&block) {
                    expect = None;
                }
            }
            let got = plan.reads.iter().find(|(_, b)| b.contains(block)).map(|(s, _)| *s);
            prop_assert_eq!(got, expect, "block {}", block);
            prop_assert_eq!(plan.zero_blocks().contains(block), expect.is_none());
        }
    }
}

#[test]
fn changed_blocks_cover_only_the_half_open_range() {
    let (_dir, idx) = open();
    apply_history(
        &idx,
        &[
            (vec![1, 2], vec![]),
            (vec![3], vec![4]),
            (vec![], vec![5]),
            (vec![6], vec![]),
        ],
    );
    let changed = |after, upto| -> Vec<u32> {
        idx.changed_blocks("d", 0, after, upto)
            .expect("changed")
            .iter()
            .collect()
    };
    assert_eq!(changed(0, 4), vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(changed(1, 3), vec![3, 4, 5]);
    assert_eq!(changed(2, 3), vec![5]);
    assert_eq!(changed(3, u64::MAX), vec![6]);
    assert!(changed(2, 2).is_empty());
    assert!(changed(3, 1).is_empty());
    // Another disk and another domain have no bitmaps here.
    assert!(idx.changed_blocks("d", 1, 0, 4).expect("disk").is_empty());
    assert!(idx.changed_blocks("e", 0, 0, 4).expect("domain").is_empty());
}

#[test]
fn a_plan_of_no_blocks_reads_nothing() {
    let (_dir, idx) = open();
    apply_history(&idx, &[(vec![1, 2], vec![3])]);
    let plan = idx
        .plan_blocks("d", 0, &RoaringBitmap::new(), 1)
        .expect("plan");
    assert!(plan.reads.is_empty() && plan.zeroed.is_empty() && plan.zeroed_by.is_empty());
    assert!(plan.zero_blocks().is_empty());
}

#[test]
fn a_plan_of_some_blocks_stops_once_they_are_resolved() {
    let (_dir, idx) = open();
    apply_history(
        &idx,
        &[
            (vec![1, 2, 3], vec![]),
            (vec![2], vec![3]),
            (vec![9], vec![]),
        ],
    );
    // Block 9 is resolved at seq 3, block 2 at seq 2: seq 1 is never needed.
    let blocks: RoaringBitmap = [2, 9].into_iter().collect();
    let plan = idx.plan_blocks("d", 0, &blocks, 3).expect("plan");
    let reads: Vec<(u64, Vec<u32>)> = plan
        .reads
        .iter()
        .map(|(s, b)| (*s, b.iter().collect()))
        .collect();
    assert_eq!(reads, vec![(3, vec![9]), (2, vec![2])]);
    assert_eq!(plan.within, Some(blocks));
    // Block 3 is an explicit zero, block 40 never written: both zero, nothing read.
    let blocks: RoaringBitmap = [3, 40].into_iter().collect();
    let plan = idx.plan_blocks("d", 0, &blocks, 3).expect("plan");
    assert!(plan.reads.is_empty());
    assert_eq!(plan.zeroed.iter().collect::<Vec<_>>(), vec![3]);
    assert_eq!(plan.zeroed_by, vec![2]);
    assert_eq!(plan.zero_blocks(), blocks);
}

proptest! {
    /// A plan of some blocks is the full plan restricted to them, and the changed
    /// blocks of a range are the union of what its segments touched.
    #[test]
    fn plan_blocks_and_changed_blocks_match_the_full_plan(
        history in histories(),
        some in prop::collection::vec(0u32..64, 0..20),
        at_frac in 0.0f64..1.0,
        after_frac in 0.0f64..1.0,
    ) {
        let (_dir, idx) = open();
        apply_history(&idx, &history);
        let n = history.len() as u64;
        let at = 1 + ((n - 1) as f64 * at_frac) as u64;
        let blocks: RoaringBitmap = some.into_iter().collect();
        let full = idx.plan("d", 0, 64, at).expect("plan");
        let part = idx.plan_blocks("d", 0, &blocks, at).expect("plan blocks");
        for (seq, hits) in &part.reads {
            let all = full.reads.iter().find(|(s, _)| s == seq).map(|(_, b)| b.clone());
            prop_assert_eq!(all.unwrap_or_default().to_bitmap() & &blocks, hits.to_bitmap());
        }
        prop_assert_eq!(part.data_blocks(), full.reads.iter().map(|(_, b)| (b.to_bitmap() & &blocks).len()).sum::<u64>());
        prop_assert_eq!(part.zeroed.clone(), &full.zeroed & &blocks);
        prop_assert_eq!(part.zero_blocks(), full.zero_blocks() & &blocks);

        let after = (n as f64 * after_frac) as u64;
        let mut expect = RoaringBitmap::new();
        for (w, z) in history.iter().take(at as usize).skip(after as usize) {
            expect.extend(w.iter().copied());
            expect.extend(z.iter().copied());
        }
        prop_assert_eq!(idx.changed_blocks("d", 0, after, at).expect("changed"), expect);
    }
}

/// A long history over a disk of several roaring containers: each segment writes a few
/// blocks of a small hot set, now and then a scattered handful, a long range (bitmap
/// and run containers) or a zeroed range. Long enough for union summaries to skip runs.
fn long_histories() -> impl Strategy<Value = Vec<(RoaringBitmap, RoaringBitmap)>> {
    let segment = (
        prop::collection::vec(0u32..32, 0..6),
        prop::collection::vec(0u32..LONG_BLOCKS, 0..3),
        prop::option::weighted(0.05, (0u32..LONG_BLOCKS - 9000, 1u32..9000)),
        prop::option::weighted(0.05, (0u32..LONG_BLOCKS - 500, 1u32..500)),
    )
        .prop_map(|(hot, scattered, range, zero_range)| {
            let mut written: RoaringBitmap = hot.into_iter().map(|b| 70_000 + b).collect();
            written.extend(scattered);
            if let Some((start, len)) = range {
                written.insert_range(start..start + len);
            }
            let mut zeroed = RoaringBitmap::new();
            if let Some((start, len)) = zero_range {
                zeroed.insert_range(start..start + len);
            }
            if written.len() % 7 == 3 {
                // Run containers, as an optimized bitmap stores them.
                written.optimize();
            }
            zeroed -= &written;
            (written, zeroed)
        });
    prop::collection::vec(segment, 60..400)
}

const LONG_BLOCKS: u32 = 200_000;

fn apply_long_history(idx: &Index, history: &[(RoaringBitmap, RoaringBitmap)]) {
    put_long_domain(idx);
    (0..history.len()).for_each(|i| apply_long_segment(idx, history, i));
}

/// The domain of a long history's disk of `LONG_BLOCKS` blocks.
fn put_long_domain(idx: &Index) {
    let mut rec = domain();
    rec.disks[0].size = u64::from(LONG_BLOCKS) * BLOCK_SIZE as u64;
    idx.put_domain(&rec).expect("domain");
}

/// Indexes segment `i` of `history` (seq `i + 1`).
fn apply_long_segment(idx: &Index, history: &[(RoaringBitmap, RoaringBitmap)], i: usize) {
    let mut s = segment(i as u64 + 1, i as i64, &[], &[], &[]);
    s.disks[0].written = history[i].0.clone();
    s.disks[0].zeroed = history[i].1.clone();
    idx.apply_segment(&s, 1, &[], &[], &[]).expect("apply");
}

/// For each block touched up to `at`: the seq whose data it holds there, or None if zero.
fn replay(
    history: &[(RoaringBitmap, RoaringBitmap)],
    at: u64,
) -> std::collections::HashMap<u32, Option<u64>> {
    let mut state = std::collections::HashMap::new();
    for (i, (w, z)) in history.iter().enumerate().take(at as usize) {
        for b in w {
            state.insert(b, Some(i as u64 + 1));
        }
        for b in z {
            state.insert(b, None);
        }
    }
    state
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// On long histories (where whole runs of segments are skipped by their summaries),
    /// full plans and plans of some blocks equal a naive replay.
    #[test]
    fn long_plans_match_naive_replay(
        history in long_histories(),
        at_frac in 0.0f64..1.0,
        some in prop::collection::vec(0u32..LONG_BLOCKS, 0..30),
        rollback in 1u64..200,
    ) {
        let (_dir, idx) = open();
        apply_long_history(&idx, &history);
        let n = history.len() as u64;
        let at = 1 + ((n - 1) as f64 * at_frac) as u64;
        let state = replay(&history, at);
        let check = |plan: &DiskPlan, blocks: &mut dyn Iterator<Item = u32>| -> Result<(), TestCaseError> {
            let mut reads = std::collections::HashMap::new();
            for (seq, hits) in &plan.reads {
                for b in hits.iter() {
                    prop_assert!(reads.insert(b, *seq).is_none(), "block {} read twice", b);
                }
                let blocks: Vec<u32> = hits.iter().collect();
                prop_assert!(blocks.windows(2).all(|w| w[0] < w[1]), "seq {} not ascending", seq);
                prop_assert!(!blocks.is_empty(), "seq {} reads nothing", seq);
            }
            prop_assert!(plan.reads.windows(2).all(|w| w[0].0 > w[1].0), "reads not newest first");
            prop_assert!(plan.zeroed_by.windows(2).all(|w| w[0] > w[1]), "zeroed_by not newest first");
            let zero = plan.zero_blocks();
            for b in blocks {
                let expect = state.get(&b).copied().flatten();
                prop_assert_eq!(reads.get(&b).copied(), expect, "block {}", b);
                prop_assert_eq!(zero.contains(b), expect.is_none(), "zero block {}", b);
            }
            Ok(())
        };
        let full = idx.plan("d", 0, LONG_BLOCKS, at).expect("plan");
        let mut touched: Vec<u32> = state.keys().copied().collect();
        touched.extend([0, 69_999, LONG_BLOCKS - 1]);
        check(&full, &mut touched.into_iter())?;
        // The segments whose zeroes the full plan keeps: exactly those that zeroed a
        // block last.
        let mut last_zeroed = std::collections::HashMap::new();
        for (i, (w, z)) in history.iter().enumerate().take(at as usize) {
            w.iter().for_each(|b| { last_zeroed.remove(&b); });
            z.iter().for_each(|b| { last_zeroed.insert(b, i as u64 + 1); });
        }
        let mut zeroed_by: Vec<u64> = last_zeroed.into_values().collect();
        zeroed_by.sort_unstable_by(|x, y| y.cmp(x));
        zeroed_by.dedup();
        prop_assert_eq!(&full.zeroed_by, &zeroed_by);
        prop_assert_eq!(full.data_blocks(), state.values().filter(|s| s.is_some()).count() as u64);

        // A rollback: the blocks changed in (at - rollback, at], resolved at the older point.
        let older = at.saturating_sub(rollback);
        let mut blocks = idx.changed_blocks("d", 0, older, at).expect("changed");
        blocks.extend(some);
        let state_older = replay(&history, older);
        let part = idx.plan_blocks("d", 0, &blocks, older).expect("plan blocks");
        let mut reads = std::collections::HashMap::new();
        for (seq, hits) in &part.reads {
            for b in hits.iter() {
                prop_assert!(blocks.contains(b));
                reads.insert(b, *seq);
            }
        }
        for b in &blocks {
            prop_assert_eq!(reads.get(&b).copied(), state_older.get(&b).copied().flatten(), "block {}", b);
        }
    }
}

/// Deletes every key of column family `name`, as in an index made before it existed.
fn clear_family(idx: &Index, name: &str) {
    let cf = idx.cf(name);
    let mut it = idx.db.raw_iterator_cf(cf);
    it.seek_to_first();
    let mut batch = WriteBatch::default();
    while let Some(k) = it.key() {
        batch.delete_cf(cf, k);
        it.next();
    }
    drop(it);
    idx.db.write(batch).expect("clear column family");
}

#[test]
fn summaries_are_built_for_an_index_that_had_none() {
    let dir = tempfile::tempdir().expect("tempdir");
    let history: Vec<(RoaringBitmap, RoaringBitmap)> = (0..200u32)
        .map(|i| {
            (
                [i % 5, 1000 + i].into_iter().collect(),
                RoaringBitmap::new(),
            )
        })
        .collect();
    {
        let idx = Index::open(dir.path()).expect("open");
        apply_long_history(&idx, &history);
        // As an index of a version without summaries: none, and no version mark.
        clear_family(&idx, "summaries");
    }
    let idx = Index::open(dir.path()).expect("reopen");
    let plan = idx.plan("d", 0, LONG_BLOCKS, 200).expect("plan");
    for b in 0..5u32 {
        let newest = (0..200u32).rev().find(|i| i % 5 == b).expect("written") as u64 + 1;
        let got = plan
            .reads
            .iter()
            .find(|(_, h)| h.contains(b))
            .map(|(s, _)| *s);
        assert_eq!(got, Some(newest), "block {b}");
    }
    assert_eq!(plan.data_blocks(), 205);
    assert!(idx.summary("d", 0, 1).expect("summary").is_some());
}

#[test]
fn the_summary_of_a_finished_run_is_folded_into_one_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    let idx = Index::open(dir.path()).expect("open");
    // Seqs 1 ..= 130: runs 0 – 63 and 64 – 127 are finished, 128 – 130 is not.
    let history: Vec<(RoaringBitmap, RoaringBitmap)> = (0..130u32)
        .map(|i| ([i, 5000 + i].into_iter().collect(), RoaringBitmap::new()))
        .collect();
    apply_long_history(&idx, &history);
    let summary_of = |seq: u64| {
        summary::UNIONS.with(|n| n.set(0));
        let s = idx.summary("d", 0, seq).expect("summary").expect("some");
        let s = RoaringBitmap::deserialize_from(&*s).expect("bitmap");
        (s, summary::UNIONS.with(|n| n.get()))
    };
    let touched = |seqs: std::ops::RangeInclusive<u32>| -> RoaringBitmap {
        seqs.flat_map(|s| [s - 1, 5000 + s - 1]).collect()
    };
    // Without the fold, every read merged the run's operands again.
    assert_eq!(summary_of(1), (touched(1..=63), 0));
    assert_eq!(summary_of(64), (touched(64..=127), 0));
    let (last, merges) = summary_of(128);
    assert_eq!(last, touched(128..=130));
    assert!(merges > 0, "the newest run is still merged on read");
}

#[test]
fn summaries_skip_runs_that_hold_nothing_pending() {
    let (_dir, idx) = open();
    // Segments 1..=300 rewrite blocks 0..8; segment 301 writes them all once more.
    let mut history: Vec<(RoaringBitmap, RoaringBitmap)> = (0..300u32)
        .map(|i| ([i % 8].into_iter().collect(), RoaringBitmap::new()))
        .collect();
    history.push(((0..8).collect(), RoaringBitmap::new()));
    apply_long_history(&idx, &history);
    // Era maps would resolve the finished eras before their summaries are read.
    clear_family(&idx, "eras");
    // Whole disk: after segment 301 every later-met segment is resolved already, so
    // the runs below 301's own are skipped (the walk reads one segment of its run first).
    let plan = idx.plan("d", 0, LONG_BLOCKS, 301).expect("plan");
    assert_eq!(plan.reads.len(), 1);
    assert_eq!(plan.data_blocks(), 8);
    assert!(plan.skipped_runs >= 4, "skipped {} runs", plan.skipped_runs);
    // Some blocks: at seq 296, block 3 was last written by segment 292 (i = 291).
    let plan = idx
        .plan_blocks("d", 0, &[3].into_iter().collect(), 296)
        .expect("plan blocks");
    assert_eq!(
        plan.reads,
        vec![(
            292,
            Blocks::from(&[3].into_iter().collect::<RoaringBitmap>())
        )]
    );
    // Never written: every run is skipped by its summary, none read segment by segment.
    let plan = idx
        .plan_blocks("d", 0, &[100_000].into_iter().collect(), 301)
        .expect("plan blocks");
    assert!(plan.reads.is_empty());
    assert_eq!(plan.skipped_runs, 5);
}

/// Plans the whole disk at `at`, checks the plan against a replay of `history`, and
/// returns how many runs and eras it resolved from their maps.
fn mapped_plan_replays(
    idx: &Index,
    history: &[(RoaringBitmap, RoaringBitmap)],
    at: u64,
) -> (u64, u64) {
    let plan = idx.plan("d", 0, LONG_BLOCKS, at).expect("plan");
    assert_plan_replays(&plan, history, at);
    (plan.mapped_runs, plan.mapped_eras)
}

/// Checks every block of `plan` (a whole-disk plan of `LONG_BLOCKS`) against a replay.
fn assert_plan_replays(plan: &DiskPlan, history: &[(RoaringBitmap, RoaringBitmap)], at: u64) {
    let state = replay(history, at);
    let mut reads = std::collections::HashMap::new();
    for (seq, hits) in &plan.reads {
        for b in hits.iter() {
            assert!(reads.insert(b, *seq).is_none(), "block {b} read twice");
        }
    }
    assert!(
        plan.reads.windows(2).all(|w| w[0].0 > w[1].0),
        "reads not newest first"
    );
    let zero = plan.zero_blocks();
    for b in state.keys().copied().chain([0, LONG_BLOCKS - 1]) {
        let expect = state.get(&b).copied().flatten();
        assert_eq!(reads.get(&b).copied(), expect, "block {b} at {at}");
        assert_eq!(zero.contains(b), expect.is_none(), "zero block {b} at {at}");
    }
}

/// A history of scattered writes and zeroes over `n` segments.
fn scattered_history(n: u32) -> Vec<(RoaringBitmap, RoaringBitmap)> {
    (0..n)
        .map(|i| {
            let written = [i % 7, 1000 + i * 3, 150_000 + i].into_iter().collect();
            let zeroed = if i % 5 == 0 {
                [i % 7 + 1, 60_000 + i].into_iter().collect()
            } else {
                RoaringBitmap::new()
            };
            (written, zeroed)
        })
        .collect()
}

#[test]
fn finished_runs_are_resolved_from_their_maps() {
    let (_dir, idx) = open();
    let history = scattered_history(200);
    apply_long_history(&idx, &history);
    // Runs 0 – 63, 64 – 127 and 128 – 191 are finished and mapped; 192 – 255 is not.
    // So is the era 0 – 127 (unit tests' eras are two runs); 128 – 255 is not.
    let plan = idx.plan("d", 0, LONG_BLOCKS, 200).expect("plan");
    assert_plan_replays(&plan, &history, 200);
    // Each half of the disk walks the map of the run 128 – 191 and the era's.
    assert_eq!((plan.mapped_runs, plan.mapped_eras), (2, 2));
    // Inside a finished run, the run's own map would hold later segments: walked one
    // by one, and the run below from its map.
    let plan = idx.plan("d", 0, LONG_BLOCKS, 100).expect("plan");
    assert_plan_replays(&plan, &history, 100);
    assert_eq!((plan.mapped_runs, plan.mapped_eras), (2, 0));
    // Plans of some blocks use them too.
    let some: RoaringBitmap = [0, 3, 1030, 60_005, 150_010, 7].into_iter().collect();
    let part = idx.plan_blocks("d", 0, &some, 150).expect("plan blocks");
    let state = replay(&history, 150);
    for b in &some {
        let got = part
            .reads
            .iter()
            .find(|(_, h)| h.contains(b))
            .map(|(s, _)| *s);
        assert_eq!(got, state.get(&b).copied().flatten(), "block {b}");
    }
    assert!(part.mapped_eras > 0);
    let part = idx.plan_blocks("d", 0, &some, 120).expect("plan blocks");
    let state = replay(&history, 120);
    for b in &some {
        let got = part
            .reads
            .iter()
            .find(|(_, h)| h.contains(b))
            .map(|(s, _)| *s);
        assert_eq!(got, state.get(&b).copied().flatten(), "block {b}");
    }
    assert!(part.mapped_runs > 0);
}

#[test]
fn finished_eras_are_resolved_from_their_maps() {
    let (_dir, idx) = open();
    let history = scattered_history(300);
    apply_long_history(&idx, &history);
    let whole = 0..1 << 16;
    // Eras 0 – 127 and 128 – 255 are finished and mapped; 256 – 383 is not.
    assert!(idx.era_map("d", 0, 300, &whole).expect("map").is_none());
    let era = idx
        .era_map("d", 0, 255, &whole)
        .expect("map")
        .expect("some");
    assert_eq!(era.seqs, (128..=255).collect::<Vec<u64>>());
    for (at, runs, eras) in [(300, 0, 4), (255, 0, 4), (254, 2, 2), (127, 0, 2)] {
        assert_eq!(
            mapped_plan_replays(&idx, &history, at),
            (runs, eras),
            "at {at}"
        );
    }
}

#[test]
fn plans_of_few_blocks_look_them_up_in_the_maps() {
    let (_dir, idx) = open();
    let history = scattered_history(300);
    apply_long_history(&idx, &history);
    // Written, zeroed, written and zeroed again, and never touched blocks.
    let some: RoaringBitmap = [0, 1, 3, 5, 7, 1030, 1031, 60_005, 60_006, 150_010, 150_200]
        .into_iter()
        .chain([199_999, 70_000, 100_001])
        .collect();
    for at in [64, 127, 128, 200, 255, 300] {
        let part = idx.plan_blocks("d", 0, &some, at).expect("plan blocks");
        assert!(
            part.mapped_runs + part.mapped_eras > 0 || at < 128,
            "at {at}"
        );
        let state = replay(&history, at);
        let zero = part.zero_blocks();
        for b in &some {
            let got: Vec<u64> = part
                .reads
                .iter()
                .filter(|(_, h)| h.contains(b))
                .map(|(s, _)| *s)
                .collect();
            let expect = state.get(&b).copied().flatten();
            assert_eq!(
                got,
                expect.into_iter().collect::<Vec<_>>(),
                "block {b} at {at}"
            );
            assert_eq!(zero.contains(b), expect.is_none(), "zero block {b} at {at}");
        }
    }
}

#[test]
fn a_segment_indexed_late_into_an_era_drops_its_map() {
    let (_dir, idx) = open();
    let history = scattered_history(300);
    put_long_domain(&idx);
    let apply = |i: usize| apply_long_segment(&idx, &history, i);
    // Seq 70 arrives after the era 0 – 127 was finished and mapped.
    (0..300).filter(|i| *i != 69).for_each(apply);
    let whole = 0..1 << 16;
    let era = idx
        .era_map("d", 0, 127, &whole)
        .expect("map")
        .expect("some");
    assert_eq!(era.seqs.len(), 126, "seqs 1 – 127 but 70");
    apply(69);
    assert!(idx.era_map("d", 0, 127, &whole).expect("map").is_none());
    assert_eq!(
        mapped_plan_replays(&idx, &history, 300),
        (2, 2),
        "the era 128 – 255 and the run 0 – 63 have maps now"
    );
}

#[test]
fn an_era_with_a_run_too_dense_for_a_map_gets_none() {
    let (_dir, idx) = open();
    let mut history = scattered_history(200);
    // Run 64 – 127 touches more blocks than a run map holds.
    history[80].0.insert_range(10_000..17_000);
    apply_long_history(&idx, &history);
    assert!(idx.run_map("d", 0, 81).expect("map").is_none());
    assert!(idx
        .era_map("d", 0, 127, &(0..1 << 16))
        .expect("map")
        .is_none());
    assert_eq!(
        mapped_plan_replays(&idx, &history, 200),
        (4, 0),
        "runs 0 and 128"
    );
}

#[test]
fn a_damaged_era_map_is_corrupt() {
    let (_dir, idx) = open();
    let history = scattered_history(130);
    apply_long_history(&idx, &history);
    let head_key = crate::keys::disk_seq("d", 0, 0);
    let head = idx
        .db
        .get_cf(idx.cf("eras"), &head_key)
        .expect("get")
        .expect("head");
    // The first slice: swap its first two blocks, no longer ascending.
    let mut slice_key = head_key.clone();
    slice_key.extend_from_slice(&0u16.to_be_bytes());
    let mut v = idx
        .db
        .get_cf(idx.cf("eras"), &slice_key)
        .expect("get")
        .expect("slice");
    let first: [u8; 4] = v[4..8].try_into().expect("4 bytes");
    v.copy_within(8..12, 4);
    v[8..12].copy_from_slice(&first);
    idx.db.put_cf(idx.cf("eras"), &slice_key, &v).expect("put");
    let plan = || idx.plan("d", 0, LONG_BLOCKS, 130);
    assert!(matches!(plan(), Err(IndexError::Corrupt(_))));
    idx.db
        .put_cf(idx.cf("eras"), &slice_key, &v[..v.len() - 1])
        .expect("put");
    assert!(matches!(plan(), Err(IndexError::Corrupt(_))));
    // A head that names a slice the index does not hold.
    idx.db
        .delete_cf(idx.cf("eras"), &slice_key)
        .expect("delete");
    assert!(matches!(plan(), Err(IndexError::Corrupt(_))));
    idx.db
        .put_cf(idx.cf("eras"), &head_key, &head[..head.len() - 1])
        .expect("put");
    assert!(matches!(plan(), Err(IndexError::Corrupt(_))));
}

#[test]
fn a_segment_indexed_late_into_a_run_drops_its_map() {
    let (_dir, idx) = open();
    let history = scattered_history(130);
    put_long_domain(&idx);
    let apply = |i: usize| apply_long_segment(&idx, &history, i);
    // Seq 10 arrives after the run 0 – 63 was finished and mapped.
    (0..130).filter(|i| *i != 9).for_each(apply);
    assert!(idx.run_map("d", 0, 10).expect("map").is_some());
    apply(9);
    assert!(idx.run_map("d", 0, 10).expect("map").is_none());
    let plan = idx.plan("d", 0, LONG_BLOCKS, 130).expect("plan");
    assert_plan_replays(&plan, &history, 130);
    assert_eq!(plan.mapped_runs, 2, "only the run 64 – 127 has a map now");
}

#[test]
fn a_damaged_run_map_is_corrupt() {
    let (_dir, idx) = open();
    let history = scattered_history(70);
    apply_long_history(&idx, &history);
    let key = crate::summary::key("d", 0, 1);
    let mut v = idx.run_map("d", 0, 1).expect("map").expect("some").to_vec();
    // Swap the first two blocks: no longer ascending.
    let blocks = 2 + 8 * usize::from(v[1]) + 4;
    let (a, b) = (blocks, blocks + 4);
    let first: [u8; 4] = v[a..a + 4].try_into().expect("4 bytes");
    v.copy_within(b..b + 4, a);
    v[b..b + 4].copy_from_slice(&first);
    idx.db.put_cf(idx.cf("runs"), &key, &v).expect("put");
    assert!(matches!(
        idx.plan("d", 0, LONG_BLOCKS, 70),
        Err(IndexError::Corrupt(_))
    ));
    v.truncate(v.len() - 1);
    idx.db.put_cf(idx.cf("runs"), &key, &v).expect("put");
    assert!(matches!(
        idx.plan("d", 0, LONG_BLOCKS, 70),
        Err(IndexError::Corrupt(_))
    ));
}

#[tokio::test]
async fn a_gc_manifest_maps_the_runs_it_changes_again() {
    let (_dir, idx) = open();
    let mut history = scattered_history(130);
    apply_long_history(&idx, &history);
    // GC merges segment 10 into 11 (the merged segment holds both, 11 winning), as an
    // object of epoch 1, and keeps every other segment.
    let (w10, z10) = history[9].clone();
    let (w11, z11) = history[10].clone();
    let written = (w10 - &z11) | &w11;
    let zeroed = (z10 - &w11) | &z11;
    let mut merged = segment(11, 10, &[], &[], &[]);
    merged.disks[0].written = written.clone();
    merged.disks[0].zeroed = zeroed.clone();
    let versions = (1..=130u64)
        .filter(|s| *s != 10)
        .map(|seq| tidemark_format::manifest::SegmentVersion {
            seq,
            epoch: u64::from(seq == 11),
        })
        .collect();
    let m = tidemark_format::Manifest {
        domain: "d".into(),
        epoch: 1,
        writer: WriterId::default(),
        time: 0,
        upto: 130,
        segments: versions,
        demoted: vec![],
        live_packs: vec![],
        new_packs: vec![],
        garbage_segments: vec![],
        garbage_packs: vec![],
    };
    let guard = idx
        .exclusive_domain("d", std::time::Duration::ZERO)
        .await
        .expect("lock");
    let segments = [ManifestSegment {
        segment: merged,
        epoch: 1,
        object_size: 1,
    }];
    assert!(idx
        .apply_manifest(&m, &segments, &[], &guard)
        .expect("manifest"));
    // The replay of the merged history: 10 holds nothing, 11 holds both.
    history[9] = (RoaringBitmap::new(), RoaringBitmap::new());
    history[10] = (written, zeroed);
    let plan = idx.plan("d", 0, LONG_BLOCKS, 130).expect("plan");
    assert_plan_replays(&plan, &history, 130);
    assert_eq!(plan.mapped_eras, 2, "the finished era is mapped again");
    let map = idx.run_map("d", 0, 11).expect("map").expect("mapped again");
    let map = crate::runmap::RunMap::parse(&map).expect("map");
    assert_eq!(map.members(), 62, "seqs 1 – 63 but 10");
    let era = idx
        .era_map("d", 0, 127, &(0..1 << 16))
        .expect("map")
        .expect("some");
    assert_eq!(era.seqs.len(), 126, "seqs 1 – 127 but 10");
    // Inside the era, its runs' maps serve: the run 64 – 127 was mapped again too.
    let plan = idx.plan("d", 0, LONG_BLOCKS, 126).expect("plan");
    assert_plan_replays(&plan, &history, 126);
    assert_eq!((plan.mapped_runs, plan.mapped_eras), (2, 0));
}

#[test]
fn run_maps_are_built_for_an_index_that_had_none() {
    let dir = tempfile::tempdir().expect("tempdir");
    let history = scattered_history(200);
    {
        let idx = Index::open(dir.path()).expect("open");
        apply_long_history(&idx, &history);
        // As an index of a version without run or era maps: none, and no version marks.
        clear_family(&idx, "runs");
        clear_family(&idx, "eras");
        let plan = idx.plan("d", 0, LONG_BLOCKS, 200).expect("plan");
        assert_eq!((plan.mapped_runs, plan.mapped_eras), (0, 0));
    }
    let idx = Index::open(dir.path()).expect("reopen");
    let plan = idx.plan("d", 0, LONG_BLOCKS, 200).expect("plan");
    assert_plan_replays(&plan, &history, 200);
    assert_eq!(
        (plan.mapped_runs, plan.mapped_eras),
        (2, 2),
        "the run 128 and the era 0 on each half"
    );
    let plan = idx.plan("d", 0, LONG_BLOCKS, 100).expect("plan");
    assert_plan_replays(&plan, &history, 100);
    assert_eq!(plan.mapped_runs, 2, "the run 0 on each half");
    assert!(
        idx.run_map("d", 0, 192).expect("map").is_none(),
        "the last run may grow"
    );
}
