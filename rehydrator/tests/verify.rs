//! `tidemark verify` after GC: the current object of each segment and the live packs
//! are checked, whether or not the index has followed GC's manifest yet; objects GC
//! superseded and orphans are not damage.

use std::sync::Arc;

use bytes::Bytes;
use tidemark_format::{keys, Manifest, PackId, SegmentVersion, WriterId};
use tidemark_pitr_index::sync;
use tidemark_rehydrator::verify::verify_domain;
use tidemark_rehydrator::{restore_disk, RestoreOptions, RestoreProgress};

mod common;

use common::Fixture;

const BS: usize = tidemark_format::BLOCK_SIZE as usize;

async fn damaged(f: &Fixture) -> Vec<String> {
    verify_domain(&f.store, &f.index, "dom")
        .await
        .expect("verify")
        .damaged
        .into_iter()
        .map(|(k, _)| k)
        .collect()
}

#[tokio::test]
async fn objects_gc_superseded_are_not_damage_and_current_ones_are_checked() {
    let mut f = Fixture::new(64 * BS).await;
    for i in 0..3u8 {
        f.write(i as usize * 4 * BS, vec![i + 1; 4 * BS]);
        f.commit().await;
    }
    assert!(damaged(&f).await.is_empty());

    // What a GC run leaves: seq 2 rewritten as a new object, a manifest naming it
    // current, and the object it superseded still there until the grace period ends.
    let old = keys::segment_key("dom", 2);
    let rewritten = keys::segment_object_key("dom", 2, 1);
    let data = f.store.get(&old).await.expect("seq 2").data;
    f.store.put(&rewritten, data).await.expect("put");
    let live: Vec<PackId> = f
        .index
        .packs("dom")
        .expect("packs")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let version = |seq, epoch| SegmentVersion { seq, epoch };
    let m = Manifest {
        domain: "dom".into(),
        epoch: 1,
        writer: WriterId {
            site: "test-site".into(),
            generation: 1,
        },
        time: 10,
        upto: 3,
        segments: vec![version(1, 0), version(2, 1), version(3, 0)],
        demoted: Vec::new(),
        live_packs: live,
        new_packs: Vec::new(),
        garbage_segments: vec![version(2, 0)],
        garbage_packs: Vec::new(),
    };
    let manifest = keys::manifest_key("dom", 1);
    f.store
        .put(&manifest, Bytes::from(m.encode().expect("manifest")))
        .await
        .expect("put");
    // Garbage and orphans are not read: damage to them is nobody's concern.
    f.store
        .put(&old, Bytes::from_static(b"superseded"))
        .await
        .expect("put");
    f.store
        .put(
            &keys::pack_key("dom", PackId(0x5eed)),
            Bytes::from_static(b"orphan"),
        )
        .await
        .expect("put");

    // The index has not applied the manifest yet: verify reads the log as it says.
    assert_eq!(f.index.gc_epoch("dom").expect("epoch"), 0);
    assert!(damaged(&f).await.is_empty());
    f.store.delete(&old).await.expect("delete");
    assert!(damaged(&f).await.is_empty());

    let rec = f.index.require_domain("dom").expect("domain");
    sync::catch_up(&f.store, &f.index, &rec)
        .await
        .expect("catch up");
    assert_eq!(f.index.gc_epoch("dom").expect("epoch"), 1);
    assert_eq!(
        f.index.segment_object_key("dom", 2).expect("key"),
        rewritten
    );
    assert!(damaged(&f).await.is_empty());
    // And restores read the rewritten object.
    let out = f.dir.path().join("r.img");
    for (seq, image) in &f.points {
        restore_disk(
            &f.store,
            &f.index,
            "dom",
            "disk0",
            *seq,
            &out,
            &RestoreOptions::default(),
            Arc::new(RestoreProgress::default()),
        )
        .await
        .expect("restore");
        assert!(std::fs::read(&out).expect("image") == *image, "seq {seq}");
        std::fs::remove_file(&out).expect("remove");
    }

    let original = f.store.get(&rewritten).await.expect("get").data;
    let mut flipped = original.to_vec();
    flipped[original.len() / 2] ^= 1;
    f.store
        .put(&rewritten, Bytes::from(flipped))
        .await
        .expect("put");
    assert_eq!(damaged(&f).await, vec![rewritten.clone()]);
    f.store.delete(&rewritten).await.expect("delete");
    assert_eq!(damaged(&f).await, vec![rewritten.clone()]);
    f.store.put(&rewritten, original).await.expect("put");

    f.store.delete(&manifest).await.expect("delete");
    assert_eq!(damaged(&f).await, vec![manifest]);
}
