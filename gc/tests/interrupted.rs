//! GC stopped at each step as a crash would stop it, GC beside ingest, and GC beside a
//! running restore: every retained point stays exact, and the next run finishes.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Change, Fixture, HOUR};
use tidemark_format::{LeaseRecord, RetentionPolicy};
use tidemark_gc::{GcError, GcFailPoint};
use tidemark_rehydrator::{restore_disk, RestoreOptions, RestoreProgress};

/// Keeps the head, pins and leases only, so that most of a history is collected.
fn head_only() -> RetentionPolicy {
    RetentionPolicy {
        pitr_window_secs: 0,
        hourly: 2,
        daily: 0,
        weekly: 0,
        monthly: 0,
        pinned: vec!["keep".into()],
    }
}

/// Twelve points an hour apart: overlapping writes on both disks, some zeroes, a pin.
async fn history(f: &mut Fixture) {
    for i in 0..12usize {
        let changes = [
            Change {
                disk: i % 2,
                first: (i * 37) % 200,
                blocks: 20,
                pattern: (i % 5) as u8 + 1,
            },
            Change {
                disk: 0,
                first: 10,
                blocks: 4,
                pattern: if i % 3 == 0 { 0 } else { 2 },
            },
            Change {
                disk: 1,
                first: (i * 11) % 250,
                blocks: 3,
                pattern: (i % 4) as u8,
            },
        ];
        f.point(&changes, HOUR, (i == 4).then_some("keep")).await;
    }
}

async fn check_listed(f: &Fixture, what: &str) {
    for seq in f.points(&f.index) {
        f.check_point(&f.index, seq, what).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_stopped_at_any_step_leaves_every_point_and_the_next_run_finishes() {
    for fail in [
        GcFailPoint::AfterRewrite,
        GcFailPoint::AfterManifest,
        GcFailPoint::AfterApply,
        GcFailPoint::MidSweep,
    ] {
        let mut f = Fixture::new().await;
        history(&mut f).await;
        let now = f.time;
        let mut cfg = f.gc_config();
        cfg.rules.force_image = true;
        cfg.fail_at = Some(fail);
        let err = tidemark_gc::run(&f.ctx, "dom", &head_only(), false, now, &cfg)
            .await
            .expect_err("injected");
        assert!(
            matches!(err, GcError::Injected(p) if p == fail),
            "{fail:?}: {err}"
        );
        // What the index lists restores exactly, and so does a rebuild from the bucket.
        check_listed(&f, &format!("after a crash at {fail:?}")).await;
        let rebuilt = common::rebuilt(&f.store, &f.path("rebuilt")).await;
        for seq in f.points(&rebuilt) {
            f.check_point(&rebuilt, seq, &format!("rebuilt after {fail:?}"))
                .await;
        }
        drop(rebuilt);

        cfg.fail_at = None;
        let report = tidemark_gc::run(&f.ctx, "dom", &head_only(), false, now, &cfg)
            .await
            .unwrap_or_else(|e| panic!("the run after {fail:?}: {e}"));
        assert!(report.deferred.is_none());
        let points = f.points(&f.index);
        let head = *f.model.keys().last().expect("head");
        assert!(points.contains(&head) && points.contains(&5), "{points:?}");
        assert!(points.len() <= 4, "collected: {points:?}");
        check_listed(&f, &format!("after the run that followed {fail:?}")).await;
        f.check_no_garbage().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_beside_ingest_loses_nothing() {
    let mut f = Fixture::new().await;
    history(&mut f).await;
    let mut cfg = f.gc_config();
    // Packs of commits in flight look like orphans for a moment: never delete them.
    cfg.orphan_grace = Duration::from_secs(3600);
    let mut runs = 0;
    let mut committed = Vec::new();
    for round in 0..6usize {
        let ctx = f.ctx.clone();
        let cfg = cfg.clone();
        let now = f.time;
        let gc = tokio::spawn(async move {
            tidemark_gc::run(&ctx, "dom", &head_only(), false, now, &cfg).await
        });
        let mut i = 0;
        while !gc.is_finished() || i < 3 {
            let c = Change {
                disk: i % 2,
                first: (round * 31 + i * 7) % 240,
                blocks: 5,
                pattern: ((round + i) % 5) as u8 + 1,
            };
            committed.push(f.point(&[c], 1_000_000_000, None).await);
            i += 1;
        }
        match gc.await.expect("gc task") {
            Ok(_) => runs += 1,
            // Ingest referenced a chunk the run meant to free: the run stands down.
            Err(GcError::Conflict(_)) => {}
            Err(e) => panic!("gc beside ingest: {e}"),
        }
    }
    assert!(runs > 0, "no run committed");
    let points = f.points(&f.index);
    let head = *committed.last().expect("head");
    assert!(points.contains(&head));
    check_listed(&f, "after GC beside ingest").await;
    // A final quiet run, then the bucket holds what the index needs and no more
    // (orphans of in-flight commits aside: none are in flight now).
    cfg.orphan_grace = Duration::ZERO;
    tidemark_gc::run(&f.ctx, "dom", &head_only(), false, f.time, &cfg)
        .await
        .expect("final run");
    check_listed(&f, "after a final run").await;
    f.check_no_garbage().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_beside_a_restore_waits_for_it_and_a_lease_keeps_its_point() {
    let mut f = Fixture::new().await;
    history(&mut f).await;
    let old = *f.model.keys().nth(2).expect("an old point");
    let now = f.time;

    // A slow restore of a point the policy does not keep, then GC: the run's commit
    // waits until the restore is done, which is exact.
    let slow = RestoreOptions {
        max_bytes_per_sec: Some(64 << 10),
        ..RestoreOptions::default()
    };
    let out = f.path("slow.img");
    let restore = {
        let store = f.store.clone();
        let index = f.index.clone();
        let out = out.clone();
        tokio::spawn(async move {
            restore_disk(
                &store,
                &index,
                "dom",
                "disk0",
                old,
                &out,
                &slow,
                Arc::new(RestoreProgress::default()),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut cfg = f.gc_config();
    cfg.exclusive_wait = Duration::ZERO;
    let deferred = tidemark_gc::run(&f.ctx, "dom", &head_only(), false, now, &cfg)
        .await
        .expect("gc");
    assert!(!restore.is_finished(), "the restore should still run");
    assert!(deferred.deferred.is_some(), "{deferred:?}");
    assert!(f.points(&f.index).contains(&old));
    cfg.exclusive_wait = Duration::from_secs(60);
    let report = tidemark_gc::run(&f.ctx, "dom", &head_only(), false, now, &cfg)
        .await
        .expect("gc");
    assert!(restore.is_finished());
    restore.await.expect("task").expect("restore");
    assert_eq!(std::fs::read(&out).expect("image"), f.model[&old][0]);
    assert!(report.epoch.is_some(), "{report:?}");
    assert!(!f.points(&f.index).contains(&old));

    // A lease (a restore or test copy at another site) keeps a point.
    let mut f = Fixture::new().await;
    history(&mut f).await;
    let old = *f.model.keys().nth(2).expect("an old point");
    let lease = LeaseRecord {
        site: "site-b".into(),
        holder: "restore-7".into(),
        seq: old,
        onwards: false,
        epoch: 0,
        expires: f.time + HOUR,
    };
    tidemark_gc::lease::put_lease(&f.store, "dom", &lease)
        .await
        .expect("lease");
    let cfg = f.gc_config();
    let report = tidemark_gc::run(&f.ctx, "dom", &head_only(), false, f.time, &cfg)
        .await
        .expect("gc");
    assert!(report.epoch.is_some());
    assert!(
        f.points(&f.index).contains(&old),
        "the leased point is kept"
    );
    f.check_point(&f.index, old, "a leased point").await;
    // The lease reads at epoch 0: what the run superseded stays until it is gone.
    assert_eq!(report.objects_deleted, 0, "{report:?}");
    tidemark_gc::lease::drop_lease(&f.store, "dom", "site-b", "restore-7")
        .await
        .expect("drop");
    let report = tidemark_gc::run(&f.ctx, "dom", &head_only(), false, f.time, &cfg)
        .await
        .expect("gc");
    assert!(report.objects_deleted > 0, "{report:?}");
    assert!(!f.points(&f.index).contains(&old));
    check_listed(&f, "after the lease ended").await;
    f.check_no_garbage().await;
}
