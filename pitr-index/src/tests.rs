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

proptest! {
    /// The plan equals a naive replay of the history: for each block, the newest
    /// segment at or before the point that touched it decides.
    #[test]
    fn plan_matches_naive_replay(
        history in prop::collection::vec(
            (prop::collection::vec(0u32..64, 0..12), prop::collection::vec(0u32..64, 0..6)),
            1..25,
        ),
        at_frac in 0.0f64..1.0,
    ) {
        let (_dir, idx) = open();
        for (i, (w, z)) in history.iter().enumerate() {
            let s = segment(i as u64 + 1, i as i64, w, z, &[]);
            idx.apply_segment(&s, 1, &[], &[], &[]).expect("apply");
        }
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
