//! Ownership and fencing (DESIGN.md section 6) on every backend: the owner keeps
//! appending while two other sites race to take the domain over, round after round.
//! Exactly one takeover wins each round, the losing site and the old owner both get
//! `Fenced`, the log never holds a segment of an older generation after a fence, and
//! every acknowledged point restores exactly.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use tidemark_format::{keys, Segment, SegmentKind};
use tidemark_ingest::{domain::create_domain, owner, DomainWriter, IngestError, Write};
use tidemark_pitr_index::{sync, Index};
use tidemark_tests::*;

const DISK: u64 = 256 << 10;
const SITES: [&str; 3] = ["site-a", "site-b", "site-c"];

/// What the owner of one round acknowledged, and how it ended.
struct Appended {
    points: Vec<(u64, Write)>,
    end: IngestError,
}

/// Appends one random block per point until the writer fails.
async fn append_until_fenced(mut w: DomainWriter, seed: u64) -> Appended {
    let mut rng = rng(seed);
    let mut points = Vec::new();
    loop {
        assert!(points.len() < 10_000, "the owner was never fenced");
        let block = rng.gen_range(0..DISK / BS as u64);
        let mut data = vec![0u8; BS];
        rng.fill(&mut data[..]);
        let write = Write {
            disk: 0,
            offset: block * BS as u64,
            data: Bytes::from(data),
            time: tidemark_ingest::now_ns(),
        };
        if let Err(e) = w.stage(vec![write.clone()]) {
            panic!("stage: {e}");
        }
        match w.flush().await {
            Ok(Some(p)) => points.push((p.seq, write)),
            Ok(None) => panic!("a staged write produced no point"),
            Err(end) => return Appended { points, end },
        }
    }
}

async fn race(backend: Backend, rounds: usize) {
    let first = TestSite::on(backend).await;
    let sites: Vec<TestSite> = SITES.iter().map(|s| first.peer(s)).collect();
    let name = "fenced";
    let ctx = |i: usize| sites[i].ingest(small_config());
    create_domain(&ctx(0), domain(name, &[DISK]))
        .await
        .expect("create domain");
    let mut owner_site = 0;
    let mut writer = DomainWriter::open(ctx(0), name).await.expect("first owner");
    assert_eq!(writer.writer().generation, 1);
    let mut acked: BTreeMap<u64, Write> = BTreeMap::new();
    let mut fences = BTreeMap::new();
    for round in 0..rounds {
        let generation = writer.writer().generation;
        let appender = tokio::spawn(append_until_fenced(writer, round as u64));
        // Let the owner commit a few points (sometimes none) before the takeover.
        tokio::time::sleep(Duration::from_millis(rand::thread_rng().gen_range(0..15))).await;
        let challengers: Vec<usize> = (0..3).filter(|i| *i != owner_site).collect();
        let takeovers: Vec<_> = challengers
            .iter()
            .map(|&i| {
                let c = ctx(i);
                tokio::spawn(
                    async move { DomainWriter::take_over(c, name, Some(generation)).await },
                )
            })
            .collect();
        let mut winner = None;
        for (&i, t) in challengers.iter().zip(takeovers) {
            match t.await.expect("takeover task") {
                Ok((w, fence)) => {
                    assert!(winner.is_none(), "round {round}: two takeovers won");
                    assert_eq!(w.writer().generation, generation + 1);
                    fences.insert(fence.seq, generation + 1);
                    winner = Some((i, w));
                }
                Err(IngestError::Fenced { generation: g, .. }) => {
                    assert_eq!(g, generation + 1, "round {round}: losing takeover");
                }
                Err(e) => panic!("round {round}: takeover by {}: {e}", SITES[i]),
            }
        }
        let (next, w) = winner.unwrap_or_else(|| panic!("round {round}: no takeover won"));
        let old = appender.await.expect("appender task");
        match old.end {
            IngestError::Fenced {
                ref owner,
                generation: g,
                ..
            } => {
                assert_eq!(owner, SITES[next], "round {round}: fenced by whom");
                assert_eq!(g, generation + 1);
            }
            ref e => panic!("round {round}: the old owner ended with {e}, not Fenced"),
        }
        for (seq, write) in old.points {
            assert!(
                acked.insert(seq, write).is_none(),
                "seq {seq} acknowledged twice"
            );
        }
        owner_site = next;
        writer = w;
    }
    // A site that is not the owner cannot write, even after the owner moved on.
    let loser = (owner_site + 1) % 3;
    match DomainWriter::open(ctx(loser), name).await {
        Err(IngestError::Fenced { owner, .. }) => assert_eq!(owner, SITES[owner_site]),
        other => panic!("a non-owner opened a writer: {:?}", other.map(|_| ())),
    }
    let last_owner = owner::read_owner(&ctx(0), name)
        .await
        .expect("read owner.json")
        .expect("owner.json exists");
    assert_eq!(last_owner.record.site, SITES[owner_site]);
    assert_eq!(last_owner.record.generation, rounds as u64 + 1);
    check_log(&first, name, &acked, &fences).await;
    check_points(&first, name, &acked).await;
}

/// The log is contiguous, every acknowledged point is in it, and generations never go
/// back: after the fence of generation g, every segment is of generation ≥ g.
async fn check_log(
    site: &TestSite,
    name: &str,
    acked: &BTreeMap<u64, Write>,
    fences: &BTreeMap<u64, u64>,
) {
    let listed = site
        .store
        .list_all(&keys::log_prefix(name), None)
        .await
        .expect("list log");
    let mut generation = 0;
    for (i, meta) in listed.iter().enumerate() {
        let seq = keys::parse_segment_key(&meta.key).expect("segment key");
        assert_eq!(seq, i as u64 + 1, "the log has a gap before {}", meta.key);
        let data = site.store.get(&meta.key).await.expect("get segment").data;
        let seg = Segment::decode_at(&data, name, seq).expect("decode segment");
        assert!(
            seg.writer.generation >= generation,
            "seq {seq} was written by generation {} after a fence of generation {generation}",
            seg.writer.generation
        );
        if seg.kind == SegmentKind::Fence {
            assert_eq!(
                fences.get(&seq),
                Some(&seg.writer.generation),
                "unexpected fence {seq}"
            );
            generation = seg.writer.generation;
        } else {
            assert!(acked.contains_key(&seq), "seq {seq} was never acknowledged");
        }
    }
    for seq in acked.keys().chain(fences.keys()) {
        assert!(
            *seq as usize <= listed.len(),
            "acknowledged seq {seq} is not in the log"
        );
    }
}

/// A fresh index rebuilt from the bucket restores every acknowledged point exactly.
async fn check_points(site: &TestSite, name: &str, acked: &BTreeMap<u64, Write>) {
    let index = Arc::new(Index::open(&site.path("check-index")).expect("index"));
    let rec = sync::load_domain(&site.store, name).await.expect("domain");
    index.put_domain(&rec).expect("put domain");
    sync::catch_up(&site.store, &index, &rec)
        .await
        .expect("catch up");
    let mut model = Model::new(&[DISK]);
    let out = site.path("point.img");
    let every = (acked.len() / 25).max(1);
    for (i, (seq, write)) in acked.iter().enumerate() {
        model.apply(write);
        if i % every == 0 || i + 1 == acked.len() {
            let got = restore_bytes(&site.store, &index, name, "disk0", *seq, &out)
                .await
                .unwrap_or_else(|e| panic!("restore seq {seq}: {e}"));
            assert!(got == model.disks[0], "seq {seq} differs from the model");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn takeovers_fence_the_old_owner_on_a_local_store() {
    race(Backend::Local, 300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn takeovers_fence_the_old_owner_on_s3() {
    race(Backend::S3, 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn takeovers_fence_the_old_owner_on_azure() {
    race(Backend::Azure, 200).await;
}
