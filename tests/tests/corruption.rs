//! Invariant 3: a corrupted or missing object is detected and reported; never a
//! silently wrong image.

use bytes::Bytes;
use rand::Rng;
use tidemark_format::keys;
use tidemark_format::pack::{decode_chunk, verify_pack};
use tidemark_ingest::{domain::create_domain, DomainWriter, Write};
use tidemark_rehydrator::verify::verify_domain;
use tidemark_rehydrator::RestoreError;
use tidemark_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_bytes_and_missing_objects_fail_restores_and_verify() {
    let site = TestSite::new();
    let sizes = [1 << 20, 512 << 10];
    let ctx = site.ingest(small_config());
    create_domain(&ctx, domain("bad", &sizes))
        .await
        .expect("domain");
    let mut w = DomainWriter::open(ctx.clone(), "bad")
        .await
        .expect("writer");
    let mut model = Model::new(&sizes);
    let mut history = History::new();
    let mut r = rng(7);
    for round in 0..4 {
        let batch: Vec<_> = (0..5)
            .map(|i| random_write(&mut r, &model, 64, round * 10 + i))
            .collect();
        w.stage(batch.clone()).expect("stage");
        batch.iter().for_each(|b| model.apply(b));
        let p = w.seal(vec![]).await.expect("seal");
        history.insert(p.seq, model.clone());
    }
    // A segment that only zeroes blocks: it stores no chunk but the image depends on it.
    let zero = Write {
        disk: 0,
        offset: 0,
        data: Bytes::from(vec![0u8; 8 * BS]),
        time: 100,
    };
    w.stage(vec![zero.clone()]).expect("stage");
    model.apply(&zero);
    let p = w.seal(vec![]).await.expect("seal");
    history.insert(p.seq, model.clone());

    let out = site.path("r.img");
    // Restores every point of every disk; returns how many failed as corrupt, and
    // fails the test on any other error or on any image that differs from the model.
    let restore_all = || async {
        let mut corrupt = 0;
        for (seq, snap) in &history {
            for (d, expect) in snap.disks.iter().enumerate() {
                match restore_bytes(
                    &site.store,
                    &site.index,
                    "bad",
                    &format!("disk{d}"),
                    *seq,
                    &out,
                )
                .await
                {
                    Ok(got) => assert!(got == *expect, "seq {seq} disk {d}: silently wrong image"),
                    Err(RestoreError::Corrupt { .. }) => corrupt += 1,
                    Err(e) => panic!("seq {seq} disk {d}: not reported as corruption: {e}"),
                }
            }
        }
        corrupt
    };
    assert_eq!(restore_all().await, 0);

    let objects = site.store.list_all("", None).await.expect("list");
    let owner_key = keys::owner_key("bad");
    assert!(objects.iter().any(|o| o.key == owner_key), "no owner.json");
    assert!(objects.len() > 8, "{} objects", objects.len());
    for o in &objects {
        let original = site.store.get(&o.key).await.expect("get").data;
        let len = original.len();
        let mut positions = vec![0, len / 3, len / 2, len - 1];
        positions.extend((0..4).map(|_| r.gen_range(0..len)));
        for pos in positions {
            let mut bad = original.to_vec();
            bad[pos] ^= 0x01;
            site.store
                .put(&o.key, Bytes::from(bad.clone()))
                .await
                .expect("put");
            let failed = restore_all().await;
            // Restores never read owner.json: a recovery site restores without owning
            // the domain. Only verify must notice. A flipped bit in a zstd frame can
            // leave it decoding to the very content its name promises (about one
            // flip in 200 does, in a frame's padding or unused header bits): every
            // restore is right then, and only verify, which checks the pack's
            // checksum, must notice.
            assert!(
                failed > 0 || o.key == owner_key || decodes_as_named(&original, &bad, pos, &o.key),
                "flip at {pos} of {} went unnoticed by every restore",
                o.key
            );
            verify_names(&site, &o.key, &format!("a flip at {pos}")).await;
        }
        site.store
            .put(&o.key, original.clone())
            .await
            .expect("restore object");

        site.store.delete(&o.key).await.expect("delete");
        if o.key == owner_key {
            assert_eq!(restore_all().await, 0, "restores need no owner.json");
        } else {
            assert!(restore_all().await > 0, "missing {} went unnoticed", o.key);
        }
        verify_names(&site, &o.key, "that it is missing").await;
        site.store
            .put(&o.key, original)
            .await
            .expect("restore object");
    }
    assert_eq!(restore_all().await, 0);
    assert!(verify_domain(&site.store, &site.index, "bad")
        .await
        .expect("verify")
        .damaged
        .is_empty());
}

/// Whether `bad`, the pack `original` of `key` with the byte at `pos` flipped, still
/// decodes the frame holding `pos` to the content named in the pack's index.
fn decodes_as_named(original: &[u8], bad: &[u8], pos: usize, key: &str) -> bool {
    let Some(id) = keys::parse_pack_key(key) else {
        return false;
    };
    let entries = verify_pack(original, id).expect("the original pack verifies");
    entries
        .iter()
        .find(|e| (e.offset..e.offset + u64::from(e.clen)).contains(&(pos as u64)))
        .is_some_and(|e| {
            let frame = &bad[e.offset as usize..(e.offset + u64::from(e.clen)) as usize];
            decode_chunk(frame, e.codec, e.ulen, e.hash).is_ok()
        })
}

/// `tidemark verify` (against the index) names `key` as damaged.
async fn verify_names(site: &TestSite, key: &str, what: &str) {
    let report = verify_domain(&site.store, &site.index, "bad")
        .await
        .expect("verify");
    assert!(
        report.damaged.iter().any(|(k, _)| k == key),
        "verify missed {what} of {key}"
    );
}
