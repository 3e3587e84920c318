//! GC never changes what a retained point restores to (DESIGN.md invariant 5): random
//! histories and random policies; every retained point restored before GC, after GC,
//! after a second GC and from an index rebuilt from the bucket, compared with the
//! reference model; points outside retention gone; nothing stored that the retained
//! points do not need beyond what the repack threshold allows.

mod common;

use std::collections::BTreeSet;

use common::{Change, Fixture, DISKS, DISK_BLOCKS, HOUR};
use proptest::prelude::*;
use tidemark_format::RetentionPolicy;
use tidemark_gc::policy::{retained_points, PointInfo};

#[derive(Clone, Debug)]
struct Case {
    /// Per point: its changes, minutes after the previous one, whether it has a marker.
    history: Vec<(Vec<Change>, i64, bool)>,
    policy: RetentionPolicy,
    pin_every: usize,
    force_image: bool,
    repack: f64,
    now_after_minutes: i64,
}

fn change() -> impl Strategy<Value = Change> {
    (0..DISKS, 0..DISK_BLOCKS, 1usize..12, 0u8..6).prop_map(|(disk, first, blocks, pattern)| {
        Change {
            disk,
            first,
            blocks,
            pattern,
        }
    })
}

fn case() -> impl Strategy<Value = Case> {
    let point = (
        prop::collection::vec(change(), 1..5),
        prop_oneof![1i64..10, 30i64..400, 1000i64..3000],
        any::<bool>(),
    );
    (
        prop::collection::vec(point, 3..22),
        (0u64..4, 0u32..4, 0u32..3, 0u32..2, 0u32..2),
        1usize..5,
        any::<bool>(),
        0.2f64..0.9,
        0i64..120,
    )
        .prop_map(
            |(
                history,
                (window_h, hourly, daily, weekly, monthly),
                pin_every,
                force_image,
                repack,
                now_after_minutes,
            )| {
                Case {
                    history,
                    policy: RetentionPolicy {
                        pitr_window_secs: window_h * 3600,
                        hourly,
                        daily,
                        weekly,
                        monthly,
                        pinned: vec![],
                    },
                    pin_every,
                    force_image,
                    repack,
                    now_after_minutes,
                }
            },
        )
}

async fn run_case(c: Case) {
    let mut f = Fixture::new().await;
    let mut policy = c.policy.clone();
    for (i, (changes, minutes, marker)) in c.history.iter().enumerate() {
        let name = format!("m{i}");
        f.point(
            changes,
            minutes * 60_000_000_000,
            marker.then_some(name.as_str()),
        )
        .await;
        if *marker && i % c.pin_every == 0 {
            policy.pinned.push(name);
        }
    }
    let now = f.time + c.now_after_minutes * 60_000_000_000;
    let before = f.points(&f.index);
    let infos: Vec<PointInfo> = f
        .index
        .points("dom", 0..=u64::MAX)
        .expect("points")
        .into_iter()
        .map(|m| PointInfo {
            seq: m.seq,
            time: m.time_end,
            markers: m.markers.into_iter().map(|k| k.name).collect(),
        })
        .collect();
    let expected: BTreeSet<u64> = retained_points(&infos, &policy, &[], now);
    for seq in &expected {
        f.check_point(&f.index, *seq, "before GC").await;
    }

    // Another site's index that follows the log (a recovery site's tailer).
    let follower = common::rebuilt(&f.store, &f.path("follower")).await;
    let mut cfg = f.gc_config();
    cfg.rules.force_image = c.force_image;
    cfg.repack_dead_fraction = c.repack;
    let dry = tidemark_gc::run(&f.ctx, "dom", &policy, true, now, &cfg)
        .await
        .expect("dry run");
    assert_eq!(f.points(&f.index), before, "a dry run changes nothing");
    let report = tidemark_gc::run(&f.ctx, "dom", &policy, false, now, &cfg)
        .await
        .expect("gc");
    assert_eq!(dry.segments_deleted, report.segments_deleted);
    assert_eq!(report.points_retained, expected.len() as u64);
    assert!(report.deferred.is_none(), "{report:?}");
    let after: BTreeSet<u64> = f.points(&f.index).into_iter().collect();
    assert_eq!(after, expected, "exactly the retained points are left");
    for seq in &expected {
        f.check_point(&f.index, *seq, "after GC").await;
    }
    f.check_no_garbage().await;
    check_pack_waste(&f, c.repack);
    let rec = f.index.require_domain("dom").expect("domain");
    tidemark_pitr_index::sync::catch_up(&f.store, &follower, &rec)
        .await
        .expect("the follower catches up");
    assert_eq!(
        f.points(&follower).into_iter().collect::<BTreeSet<_>>(),
        expected,
        "the follower's index follows GC"
    );
    for seq in &expected {
        f.check_point(&follower, *seq, "at the follower").await;
    }

    let again = tidemark_gc::run(&f.ctx, "dom", &policy, false, now, &cfg)
        .await
        .expect("second gc");
    assert_eq!(again.segments_deleted, 0, "nothing dead is left: {again:?}");
    assert_eq!(
        again.epoch, None,
        "a run with nothing to do commits nothing: {again:?}"
    );
    assert_eq!(
        f.points(&f.index).into_iter().collect::<BTreeSet<_>>(),
        expected
    );
    for seq in &expected {
        f.check_point(&f.index, *seq, "after a second GC").await;
    }
    f.check_no_garbage().await;

    let rebuilt = common::rebuilt(&f.store, &f.path("rebuilt")).await;
    assert_eq!(
        f.points(&rebuilt).into_iter().collect::<BTreeSet<_>>(),
        expected,
        "a rebuilt index has the same points"
    );
    for seq in &expected {
        f.check_point(&rebuilt, *seq, "from a rebuilt index").await;
    }

    // Protection goes on after GC: a new point on top of the collected log.
    let seq = f
        .point(
            &[Change {
                disk: 0,
                first: 3,
                blocks: 9,
                pattern: 5,
            }],
            HOUR,
            None,
        )
        .await;
    f.check_point(&f.index, seq, "a point after GC").await;
}

/// After GC every live pack wastes less than the repack threshold of its frames.
fn check_pack_waste(f: &Fixture, threshold: f64) {
    let mut live = std::collections::HashMap::new();
    for (hash, loc) in f.index.chunks_located("dom").expect("chunks") {
        if f.index.chunk_refs("dom", &hash).expect("refs") > 0 {
            *live.entry(loc.pack).or_insert(0u64) += u64::from(loc.clen);
        }
    }
    for (id, info) in f.index.packs("dom").expect("packs") {
        let frames = (info.size - info.tail_len) as f64;
        let used = live.get(&id).copied().unwrap_or(0) as f64;
        assert!(used > 0.0, "pack {id} holds no live chunk");
        assert!(
            1.0 - used / frames < threshold,
            "pack {id}: {} of {} frame bytes live, threshold {threshold}",
            used,
            frames
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn gc_keeps_every_retained_point_exact(c in case()) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(run_case(c));
    }
}
