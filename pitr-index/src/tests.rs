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
            prop_assert_eq!(all.unwrap_or_default() & &blocks, hits.clone());
        }
        prop_assert_eq!(part.data_blocks(), full.reads.iter().map(|(_, b)| (b & &blocks).len()).sum::<u64>());
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
