//! Invariant 2 for the commit protocol: a crash after the packs or after the segment
//! loses nothing acknowledged, and the next writer recovers.

use tidemark_ingest::{domain::create_domain, DomainWriter, FailPoint, IngestError};
use tidemark_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_commits_lose_nothing_acknowledged() {
    let site = TestSite::new();
    let sizes = [1 << 20, 256 << 10];
    let ctx = site.ingest(small_config());
    create_domain(&ctx, domain("crash", &sizes))
        .await
        .expect("domain");
    let mut model = Model::new(&sizes);
    let mut history = History::new();
    let mut rng = rng(99);
    let mut batch = |model: &Model| {
        (0..6)
            .map(|i| random_write(&mut rng, model, 64, i))
            .collect::<Vec<_>>()
    };

    // Point 1, acknowledged.
    let mut w = DomainWriter::open(ctx.clone(), "crash")
        .await
        .expect("open");
    let a = batch(&model);
    w.stage(a.clone()).expect("stage");
    let p1 = w.seal(vec![]).await.expect("seal");
    a.iter().for_each(|x| model.apply(x));
    history.insert(p1.seq, model.clone());

    // Crash after the packs: nothing committed; the writes were never acknowledged.
    let mut failing = ctx.clone();
    failing.config.fail_at = Some(FailPoint::AfterPacks);
    let mut w = DomainWriter::open(failing.clone(), "crash")
        .await
        .expect("open");
    let b = batch(&model);
    w.stage(b.clone()).expect("stage");
    assert!(matches!(
        w.seal(vec![]).await,
        Err(IngestError::Injected(FailPoint::AfterPacks))
    ));
    drop(w);
    let mut w = DomainWriter::open(ctx.clone(), "crash")
        .await
        .expect("reopen");
    assert_eq!(
        w.next_seq(),
        p1.seq + 1,
        "an uncommitted segment took no seq"
    );
    // The writer retries what was not acknowledged.
    w.stage(b.clone()).expect("stage");
    let p2 = w.seal(vec![]).await.expect("seal");
    b.iter().for_each(|x| model.apply(x));
    history.insert(p2.seq, model.clone());

    // Crash after the segment, before the index: the point exists in the bucket and the
    // next writer indexes it before claiming a seq.
    let mut failing = ctx.clone();
    failing.config.fail_at = Some(FailPoint::AfterSegment);
    let mut w = DomainWriter::open(failing, "crash").await.expect("open");
    let c = batch(&model);
    w.stage(c.clone()).expect("stage");
    assert!(matches!(
        w.seal(vec![]).await,
        Err(IngestError::Injected(FailPoint::AfterSegment))
    ));
    assert_eq!(site.index.last_seq("crash").expect("last"), Some(p2.seq));
    drop(w);
    let mut w = DomainWriter::open(ctx.clone(), "crash")
        .await
        .expect("reopen");
    assert_eq!(
        site.index.last_seq("crash").expect("last"),
        Some(p2.seq + 1)
    );
    c.iter().for_each(|x| model.apply(x));
    history.insert(p2.seq + 1, model.clone());
    let d = batch(&model);
    w.stage(d.clone()).expect("stage");
    let p4 = w.seal(vec![]).await.expect("seal");
    assert_eq!(p4.seq, p2.seq + 2);
    d.iter().for_each(|x| model.apply(x));
    history.insert(p4.seq, model.clone());

    // A commit that failed after its segment was created is still a point: whoever
    // indexes the log next picks it up.
    let mut failing = ctx.clone();
    failing.config.fail_at = Some(FailPoint::AfterSegment);
    let mut w = DomainWriter::open(failing, "crash").await.expect("open");
    let e = batch(&model);
    w.stage(e.clone()).expect("stage");
    assert!(w.seal(vec![]).await.is_err());
    e.iter().for_each(|x| model.apply(x));
    history.insert(p4.seq + 1, model.clone());

    let rec = site.index.require_domain("crash").expect("domain");
    let caught_up = tidemark_pitr_index::sync::catch_up(&site.store, &site.index, &rec)
        .await
        .expect("catch up");
    assert_eq!(caught_up, vec![p4.seq + 1]);
    let out = site.path("r.img");
    for (seq, snap) in &history {
        for (i, expect) in snap.disks.iter().enumerate() {
            let got = restore_bytes(
                &site.store,
                &site.index,
                "crash",
                &format!("disk{i}"),
                *seq,
                &out,
            )
            .await
            .expect("restore");
            assert!(got == *expect, "seq {seq} disk {i}");
        }
    }
}
