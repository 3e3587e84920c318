//! The conformance suite every backend must pass.
//!
//! Each check takes a store and a key prefix that no other run uses (so suites can share
//! a bucket), writes only below that prefix, and panics with a message naming the
//! violated rule. [`run_all`] runs every check; backends' test files call it.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;

use bytes::Bytes;

use crate::{DynStore, ETag, ObjectMeta, ObjectStore, StoreError};

/// Runs every check below `prefix` (empty, or a valid key without trailing `/`).
pub async fn run_all(store: DynStore, prefix: &str) {
    let s: &dyn ObjectStore = store.as_ref();
    check_roundtrip(s, &sub(prefix, "roundtrip")).await;
    check_overwrite(s, &sub(prefix, "overwrite")).await;
    check_get_range(s, &sub(prefix, "range")).await;
    check_head(s, &sub(prefix, "head")).await;
    check_not_found(s, &sub(prefix, "notfound")).await;
    check_put_if_absent(s, &sub(prefix, "absent")).await;
    check_put_if_match(s, &sub(prefix, "match")).await;
    check_list(s, &sub(prefix, "list")).await;
    check_delete(s, &sub(prefix, "delete")).await;
    check_invalid_keys(s, &sub(prefix, "invalid")).await;
    check_large_object(s, &sub(prefix, "large")).await;
    check_concurrent_put_if_absent(&store, &sub(prefix, "race-absent")).await;
    check_concurrent_put_if_match(&store, &sub(prefix, "race-match")).await;
}

/// `prefix/rest`, or `rest` for an empty prefix.
fn sub(prefix: &str, rest: &str) -> String {
    if prefix.is_empty() {
        rest.to_owned()
    } else {
        format!("{prefix}/{rest}")
    }
}

/// Unwraps a result the check requires to be `Ok`.
fn ok<T, E: Debug>(r: Result<T, E>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("conformance: {what}: unexpected error {e:?}"),
    }
}

/// Panics unless `r` failed with an error matching `expected`.
fn expect_err<T: Debug>(
    r: crate::Result<T>,
    expected: &str,
    matches: impl Fn(&StoreError) -> bool,
    what: &str,
) {
    match r {
        Err(ref e) if matches(e) => {}
        other => panic!("conformance: {what}: expected {expected}, got {other:?}"),
    }
}

fn is_not_found(e: &StoreError) -> bool {
    matches!(e, StoreError::NotFound { .. })
}

fn is_invalid(e: &StoreError) -> bool {
    matches!(e, StoreError::Invalid(_))
}

fn is_precondition(e: &StoreError) -> bool {
    matches!(e, StoreError::PreconditionFailed { .. })
}

fn is_exists(e: &StoreError) -> bool {
    matches!(e, StoreError::AlreadyExists { .. })
}

/// Deterministic pseudo-random bytes (xorshift), so failures are reproducible.
fn pattern(len: usize, seed: u64) -> Bytes {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

async fn get_data(s: &dyn ObjectStore, key: &str) -> Bytes {
    ok(s.get(key).await, &format!("get {key}")).data
}

/// Put/get roundtrip; the etag returned by put is the one get reports, and it changes
/// with the content; empty and all-byte-values objects survive intact.
pub async fn check_roundtrip(s: &dyn ObjectStore, prefix: &str) {
    let key = sub(prefix, "a/b/obj");
    let first = Bytes::from_static(b"hello, tidemark");
    let put1 = ok(s.put(&key, first.clone()).await, "put");
    let got = ok(s.get(&key).await, "get after put");
    assert_eq!(
        got.data, first,
        "conformance: get returned other bytes than put"
    );
    assert_eq!(
        got.etag, put1.etag,
        "conformance: get's etag differs from the one put returned"
    );

    let second = Bytes::from((0u8..=255).collect::<Vec<u8>>());
    let put2 = ok(s.put(&key, second.clone()).await, "second put");
    assert_ne!(
        put1.etag, put2.etag,
        "conformance: etag did not change when the content changed"
    );
    let got = ok(s.get(&key).await, "get after second put");
    assert_eq!(got.data, second, "conformance: binary content altered");
    assert_eq!(got.etag, put2.etag, "conformance: get's etag is stale");

    let empty = sub(prefix, "empty");
    ok(s.put(&empty, Bytes::new()).await, "put empty object");
    assert!(
        get_data(s, &empty).await.is_empty(),
        "conformance: empty object read back non-empty"
    );
    let meta = ok(s.head(&empty).await, "head empty object");
    assert_eq!(meta.size, 0, "conformance: empty object has non-zero size");
    ok(s.delete(&key).await, "cleanup");
    ok(s.delete(&empty).await, "cleanup");
}

/// Overwriting with shorter content leaves no trace of the longer one.
pub async fn check_overwrite(s: &dyn ObjectStore, prefix: &str) {
    let key = sub(prefix, "obj");
    ok(s.put(&key, pattern(1000, 1)).await, "put long");
    ok(s.put(&key, pattern(10, 2)).await, "put short over long");
    assert_eq!(
        get_data(s, &key).await,
        pattern(10, 2),
        "conformance: overwrite did not fully replace the content"
    );
    let meta = ok(s.head(&key).await, "head after overwrite");
    assert_eq!(meta.size, 10, "conformance: size after overwrite");
    ok(s.delete(&key).await, "cleanup");
}

/// Ranged reads at the start, middle, end, whole, empty; past the end is `Invalid`.
pub async fn check_get_range(s: &dyn ObjectStore, prefix: &str) {
    let key = sub(prefix, "obj");
    let data = pattern(1000, 3);
    ok(s.put(&key, data.clone()).await, "put");
    for range in [
        0..10,
        500..600,
        990..1000,
        0..1000,
        999..1000,
        0..0,
        1000..1000,
    ] {
        let got = ok(
            s.get_range(&key, range.clone()).await,
            &format!("get_range {range:?}"),
        );
        assert_eq!(
            got,
            data.slice(range.start as usize..range.end as usize),
            "conformance: get_range {range:?} returned wrong bytes"
        );
    }
    for range in [990..1001, 1000..1001, 2000..2100, 0..u64::MAX] {
        expect_err(
            s.get_range(&key, range.clone()).await,
            "Invalid",
            is_invalid,
            &format!("get_range {range:?} past the end of 1000 bytes"),
        );
    }
    #[allow(clippy::reversed_empty_ranges)]
    let backwards = 20..10;
    expect_err(
        s.get_range(&key, backwards).await,
        "Invalid",
        is_invalid,
        "get_range with start > end",
    );
    ok(s.delete(&key).await, "cleanup");
}

/// `head` reports the key and the exact size.
pub async fn check_head(s: &dyn ObjectStore, prefix: &str) {
    let key = sub(prefix, "obj");
    ok(s.put(&key, pattern(4321, 4)).await, "put");
    let meta = ok(s.head(&key).await, "head");
    assert_eq!(
        meta,
        ObjectMeta {
            key: key.clone(),
            size: 4321
        },
        "conformance: head metadata"
    );
    ok(s.delete(&key).await, "cleanup");
}

/// Reads of a missing key are `NotFound`, also under an existing "directory" and where
/// the key's parent is itself an object.
pub async fn check_not_found(s: &dyn ObjectStore, prefix: &str) {
    let existing = sub(prefix, "dir/obj");
    ok(s.put(&existing, Bytes::from_static(b"x")).await, "put");
    for key in [
        sub(prefix, "missing"),
        sub(prefix, "dir/missing"),
        sub(prefix, "dir"),
        sub(prefix, "dir/obj/below"),
        sub(prefix, "nowhere/at/all"),
    ] {
        expect_err(
            s.get(&key).await.map(|r| r.data),
            "NotFound",
            is_not_found,
            &format!("get {key}"),
        );
        expect_err(
            s.head(&key).await,
            "NotFound",
            is_not_found,
            &format!("head {key}"),
        );
        expect_err(
            s.get_range(&key, 0..1).await,
            "NotFound",
            is_not_found,
            &format!("get_range {key}"),
        );
    }
    ok(s.delete(&existing).await, "cleanup");
}

/// Create-only writes: the first succeeds, the second is `AlreadyExists` and changes
/// nothing; after a delete the key can be created again.
pub async fn check_put_if_absent(s: &dyn ObjectStore, prefix: &str) {
    let key = sub(prefix, "log/0000000000000001.seg");
    let first = ok(
        s.put_if_absent(&key, Bytes::from_static(b"first")).await,
        "put_if_absent on a new key",
    );
    expect_err(
        s.put_if_absent(&key, Bytes::from_static(b"second")).await,
        "AlreadyExists",
        is_exists,
        "put_if_absent on an existing key",
    );
    let got = ok(s.get(&key).await, "get");
    assert_eq!(
        got.data,
        Bytes::from_static(b"first"),
        "conformance: a failed put_if_absent changed the content"
    );
    assert_eq!(
        got.etag, first.etag,
        "conformance: etag after put_if_absent"
    );
    ok(s.delete(&key).await, "delete");
    ok(
        s.put_if_absent(&key, Bytes::from_static(b"again")).await,
        "put_if_absent after delete",
    );
    assert_eq!(get_data(s, &key).await, Bytes::from_static(b"again"));
    ok(s.delete(&key).await, "cleanup");
}

/// Conditional replace: the current etag wins and yields a new etag; stale, made-up and
/// missing-object cases are `PreconditionFailed` and change nothing.
pub async fn check_put_if_match(s: &dyn ObjectStore, prefix: &str) {
    let key = sub(prefix, "owner.json");
    let v1 = ok(s.put(&key, Bytes::from_static(b"gen 1")).await, "put").etag;
    let v2 = ok(
        s.put_if_match(&key, Bytes::from_static(b"gen 2"), &v1)
            .await,
        "put_if_match with the current etag",
    )
    .etag;
    assert_ne!(v1, v2, "conformance: put_if_match returned the old etag");
    let got = ok(s.get(&key).await, "get");
    assert_eq!(got.data, Bytes::from_static(b"gen 2"));
    assert_eq!(got.etag, v2, "conformance: get's etag after put_if_match");

    for (etag, what) in [
        (v1.clone(), "stale etag"),
        (ETag("not-an-etag".into()), "made-up etag"),
    ] {
        expect_err(
            s.put_if_match(&key, Bytes::from_static(b"gen X"), &etag)
                .await,
            "PreconditionFailed",
            is_precondition,
            &format!("put_if_match with a {what}"),
        );
        let got = ok(s.get(&key).await, "get");
        assert_eq!(
            got.data,
            Bytes::from_static(b"gen 2"),
            "conformance: a failed put_if_match ({what}) changed the content"
        );
        assert_eq!(got.etag, v2);
    }

    let missing = sub(prefix, "missing.json");
    expect_err(
        s.put_if_match(&missing, Bytes::from_static(b"x"), &v2)
            .await,
        "PreconditionFailed",
        is_precondition,
        "put_if_match on a missing key",
    );
    expect_err(
        s.head(&missing).await,
        "NotFound",
        is_not_found,
        "a failed put_if_match must not create the object",
    );

    // A deleted-then-recreated object must not match an etag of its earlier life
    // unless the content is identical (content-hash etags may legitimately match).
    ok(s.delete(&key).await, "delete");
    expect_err(
        s.put_if_match(&key, Bytes::from_static(b"gen 3"), &v2)
            .await,
        "PreconditionFailed",
        is_precondition,
        "put_if_match on a deleted key",
    );
    let v3 = ok(s.put(&key, Bytes::from_static(b"gen 3")).await, "put").etag;
    expect_err(
        s.put_if_match(&key, Bytes::from_static(b"gen 4"), &v2)
            .await,
        "PreconditionFailed",
        is_precondition,
        "put_if_match with the etag of different, earlier content",
    );
    ok(
        s.put_if_match(&key, Bytes::from_static(b"gen 4"), &v3)
            .await,
        "put_if_match after recreate",
    );
    ok(s.delete(&key).await, "cleanup");
}

fn keys(objects: &[ObjectMeta]) -> Vec<String> {
    objects.iter().map(|o| o.key.clone()).collect()
}

/// Listing: byte order across nested paths, sizes, pagination, `start_after`, prefixes
/// that end inside a name, and unknown prefixes.
pub async fn check_list(s: &dyn ObjectStore, prefix: &str) {
    let base = sub(prefix, "");
    // Chosen so byte order differs from a naive per-directory order: '-' and '.' sort
    // before '/', '0' after it.
    let rel = [
        "a",
        "b-c",
        "b.c",
        "b/1",
        "b/2",
        "b/3/x",
        "b0",
        "log-x",
        "log/0001.seg",
        "log/0002.seg",
        "log/0100.seg",
        "z/y/x/w",
    ];
    let mut expected: Vec<String> = rel.iter().map(|r| format!("{base}{r}")).collect();
    expected.sort();
    for (i, key) in expected.iter().enumerate() {
        ok(
            s.put(key, pattern(i + 1, i as u64)).await,
            &format!("put {key}"),
        );
    }
    let sizes: BTreeMap<String, u64> = expected
        .iter()
        .enumerate()
        .map(|(i, k)| (k.clone(), i as u64 + 1))
        .collect();

    let all = ok(s.list(&base, None, 1000).await, "list everything");
    assert_eq!(keys(&all.objects), expected, "conformance: full listing");
    assert_eq!(
        all.next_start_after, None,
        "conformance: a complete listing must not offer a next page"
    );
    for o in &all.objects {
        assert_eq!(
            Some(&o.size),
            sizes.get(&o.key),
            "conformance: size of {}",
            o.key
        );
    }
    let listed = ok(s.list_all(&base, None).await, "list_all");
    assert_eq!(keys(&listed), expected, "conformance: list_all");

    // Pagination with a small page size.
    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    for round in 0.. {
        assert!(
            round <= expected.len(),
            "conformance: pagination does not end"
        );
        let page = ok(s.list(&base, after.as_deref(), 2).await, "list page of 2");
        assert!(page.objects.len() <= 2, "conformance: page larger than max");
        paged.extend(keys(&page.objects));
        match page.next_start_after {
            Some(next) => {
                assert_eq!(
                    Some(&next),
                    paged.last(),
                    "conformance: next_start_after must be the page's last key"
                );
                after = Some(next);
            }
            None => break,
        }
    }
    assert_eq!(paged, expected, "conformance: pages joined");

    // start_after: an existing key, a non-key position inside a "directory", the end.
    let cases: [(String, Option<String>, Vec<&str>); 6] = [
        (
            base.clone(),
            Some(format!("{base}b/2")),
            vec![
                "b/3/x",
                "b0",
                "log-x",
                "log/0001.seg",
                "log/0002.seg",
                "log/0100.seg",
                "z/y/x/w",
            ],
        ),
        (
            base.clone(),
            Some(format!("{base}b/")),
            vec![
                "b/1",
                "b/2",
                "b/3/x",
                "b0",
                "log-x",
                "log/0001.seg",
                "log/0002.seg",
                "log/0100.seg",
                "z/y/x/w",
            ],
        ),
        (base.clone(), Some(format!("{base}z/y/x/w")), vec![]),
        (
            base.clone(),
            Some(format!("{base}log/0001")),
            vec!["log/0001.seg", "log/0002.seg", "log/0100.seg", "z/y/x/w"],
        ),
        // A start_after before the prefix does not widen the listing.
        (
            format!("{base}log/"),
            Some(format!("{base}a")),
            vec!["log/0001.seg", "log/0002.seg", "log/0100.seg"],
        ),
        (
            format!("{base}b/"),
            Some(format!("{base}b/1")),
            vec!["b/2", "b/3/x"],
        ),
    ];
    for (p, after, want) in cases {
        let want: Vec<String> = want.iter().map(|r| format!("{base}{r}")).collect();
        let got = ok(
            s.list_all(&p, after.as_deref()).await,
            &format!("list {p:?} after {after:?}"),
        );
        assert_eq!(
            keys(&got),
            want,
            "conformance: list {p:?} start_after {after:?}"
        );
    }

    // Prefixes that stop inside a name, at a directory, and nowhere.
    let prefixes: [(&str, Vec<&str>); 8] = [
        ("log/00", vec!["log/0001.seg", "log/0002.seg"]),
        ("log/", vec!["log/0001.seg", "log/0002.seg", "log/0100.seg"]),
        (
            "lo",
            vec!["log-x", "log/0001.seg", "log/0002.seg", "log/0100.seg"],
        ),
        ("b", vec!["b-c", "b.c", "b/1", "b/2", "b/3/x", "b0"]),
        ("b/3", vec!["b/3/x"]),
        ("z/y/", vec!["z/y/x/w"]),
        ("nothing-here", vec![]),
        ("a/", vec![]),
    ];
    for (p, want) in prefixes {
        let p = format!("{base}{p}");
        let want: Vec<String> = want.iter().map(|r| format!("{base}{r}")).collect();
        let page = ok(s.list(&p, None, 1000).await, &format!("list {p:?}"));
        assert_eq!(keys(&page.objects), want, "conformance: list prefix {p:?}");
        assert_eq!(
            page.next_start_after, None,
            "conformance: list prefix {p:?}"
        );
    }
    let none = ok(
        s.list(&sub(prefix, "unknown/"), None, 5).await,
        "list unknown",
    );
    assert!(
        none.objects.is_empty() && none.next_start_after.is_none(),
        "conformance: unknown prefix must list nothing"
    );

    for key in &expected {
        ok(s.delete(key).await, "cleanup");
    }
    let after_delete = ok(s.list_all(&base, None).await, "list after cleanup");
    assert!(
        after_delete.is_empty(),
        "conformance: deleted objects still listed: {:?}",
        keys(&after_delete)
    );
}

/// Deleting makes the object unreadable and unlisted; deleting a missing key is fine;
/// siblings survive; a deleted nested key can be written again.
pub async fn check_delete(s: &dyn ObjectStore, prefix: &str) {
    let key = sub(prefix, "x/y/obj");
    let sibling = sub(prefix, "x/other");
    ok(s.put(&key, Bytes::from_static(b"1")).await, "put");
    ok(
        s.put(&sibling, Bytes::from_static(b"2")).await,
        "put sibling",
    );
    ok(s.delete(&key).await, "delete");
    expect_err(
        s.get(&key).await.map(|r| r.data),
        "NotFound",
        is_not_found,
        "get after delete",
    );
    expect_err(
        s.head(&key).await,
        "NotFound",
        is_not_found,
        "head after delete",
    );
    ok(s.delete(&key).await, "delete again (idempotent)");
    ok(
        s.delete(&sub(prefix, "never/existed")).await,
        "delete of a never-existing key",
    );
    let listed = ok(
        s.list_all(&sub(prefix, ""), None).await,
        "list after delete",
    );
    assert_eq!(
        keys(&listed),
        vec![sibling.clone()],
        "conformance: listing after delete"
    );
    assert_eq!(get_data(s, &sibling).await, Bytes::from_static(b"2"));
    ok(
        s.put(&key, Bytes::from_static(b"3")).await,
        "put after delete",
    );
    assert_eq!(get_data(s, &key).await, Bytes::from_static(b"3"));
    ok(s.delete(&key).await, "cleanup");
    ok(s.delete(&sibling).await, "cleanup");
}

/// Keys that could escape the root, collide with internals or are malformed are
/// `Invalid` for every operation, and nothing is written.
pub async fn check_invalid_keys(s: &dyn ObjectStore, prefix: &str) {
    let long = format!("{}/{}", sub(prefix, "long"), "k".repeat(1100));
    let bad = [
        String::new(),
        "../x".to_owned(),
        "/abs".to_owned(),
        "a//b".to_owned(),
        ".tmp/x".to_owned(),
        ".locks/x".to_owned(),
        sub(prefix, "../escape"),
        sub(prefix, "a/./b"),
        sub(prefix, ".hidden"),
        sub(prefix, "trailing/"),
        sub(prefix, "back\\slash"),
        sub(prefix, "nul\0byte"),
        sub(prefix, "new\nline"),
        long,
    ];
    let data = Bytes::from_static(b"must not be written");
    let etag = ETag("x".into());
    for key in &bad {
        let what = |op: &str| format!("{op} with invalid key {key:?}");
        expect_err(
            s.put(key, data.clone()).await,
            "Invalid",
            is_invalid,
            &what("put"),
        );
        expect_err(
            s.put_if_absent(key, data.clone()).await,
            "Invalid",
            is_invalid,
            &what("put_if_absent"),
        );
        expect_err(
            s.put_if_match(key, data.clone(), &etag).await,
            "Invalid",
            is_invalid,
            &what("put_if_match"),
        );
        expect_err(
            s.get(key).await.map(|r| r.data),
            "Invalid",
            is_invalid,
            &what("get"),
        );
        expect_err(
            s.get_range(key, 0..1).await,
            "Invalid",
            is_invalid,
            &what("get_range"),
        );
        expect_err(s.head(key).await, "Invalid", is_invalid, &what("head"));
        expect_err(s.delete(key).await, "Invalid", is_invalid, &what("delete"));
    }
    for p in ["/abs", "../", "a//b/", ".tmp/", "x\\"] {
        expect_err(
            s.list(p, None, 10).await.map(|page| page.objects),
            "Invalid",
            is_invalid,
            &format!("list with invalid prefix {p:?}"),
        );
    }
    let listed = ok(s.list_all(&sub(prefix, ""), None).await, "list");
    assert!(
        listed.is_empty(),
        "conformance: rejected writes left objects: {:?}",
        keys(&listed)
    );
}

/// A 9 MiB object survives a roundtrip, and ranged reads inside it (across 4 MiB
/// boundaries, where multipart backends split) return the right bytes.
pub async fn check_large_object(s: &dyn ObjectStore, prefix: &str) {
    const MIB: u64 = 1 << 20;
    let key = sub(prefix, "big.pack");
    let data = pattern(9 * MIB as usize + 123, 9);
    let put = ok(s.put(&key, data.clone()).await, "put 9 MiB");
    let got = ok(s.get(&key).await, "get 9 MiB");
    assert!(got.data == data, "conformance: 9 MiB object altered");
    assert_eq!(got.etag, put.etag, "conformance: etag of large object");
    let size = data.len() as u64;
    assert_eq!(ok(s.head(&key).await, "head").size, size);
    for range in [
        0..1,
        4 * MIB - 1..4 * MIB + 1,
        5 * MIB..6 * MIB + 17,
        8 * MIB - 3..9 * MIB + 3,
        size - 100..size,
        0..size,
    ] {
        let got = ok(
            s.get_range(&key, range.clone()).await,
            &format!("get_range {range:?} of 9 MiB"),
        );
        assert!(
            got == data.slice(range.start as usize..range.end as usize),
            "conformance: get_range {range:?} of the large object returned wrong bytes"
        );
    }
    expect_err(
        s.get_range(&key, size - 1..size + 1).await,
        "Invalid",
        is_invalid,
        "get_range past the end of the large object",
    );
    ok(s.delete(&key).await, "cleanup");
}

/// 12 tasks race `put_if_absent` on the same 20 keys with distinct contents: exactly one
/// winner per key, everyone else `AlreadyExists`, and the stored content is the winner's.
pub async fn check_concurrent_put_if_absent(store: &DynStore, prefix: &str) {
    const TASKS: usize = 12;
    const KEYS: usize = 20;
    let content = |task: usize, k: usize| Bytes::from(format!("task {task} wrote key {k}"));
    let key = |k: usize| sub(prefix, &format!("log/{k:016x}.seg"));
    let mut handles = Vec::new();
    for task in 0..TASKS {
        let store = Arc::clone(store);
        let keys: Vec<String> = (0..KEYS).map(key).collect();
        handles.push(tokio::spawn(async move {
            let mut won = Vec::new();
            // Each task walks the keys from a different start so that every key is
            // contended at a different moment.
            for i in 0..KEYS {
                let k = (i + task) % KEYS;
                match store.put_if_absent(&keys[k], content(task, k)).await {
                    Ok(_) => won.push(k),
                    Err(StoreError::AlreadyExists { .. }) => {}
                    Err(e) => panic!("conformance: racing put_if_absent failed: {e:?}"),
                }
            }
            (task, won)
        }));
    }
    let mut winners: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for h in handles {
        let (task, won) = ok(h.await, "racing task");
        for k in won {
            winners.entry(k).or_default().push(task);
        }
    }
    for k in 0..KEYS {
        let tasks = winners.get(&k).cloned().unwrap_or_default();
        assert_eq!(
            tasks.len(),
            1,
            "conformance: key {k} had {} put_if_absent winners: {tasks:?}",
            tasks.len()
        );
        assert_eq!(
            get_data(store.as_ref(), &key(k)).await,
            content(tasks[0], k),
            "conformance: key {k} does not hold its winner's content"
        );
    }
    for k in 0..KEYS {
        ok(store.delete(&key(k)).await, "cleanup");
    }
}

/// 12 tasks each increment a counter object 10 times by read-modify-write with
/// `put_if_match`, retrying on `PreconditionFailed`: the result must be 120.
pub async fn check_concurrent_put_if_match(store: &DynStore, prefix: &str) {
    const TASKS: u64 = 12;
    const INCREMENTS: u64 = 10;
    let key = sub(prefix, "counter");
    ok(
        store.put(&key, Bytes::from_static(b"0")).await,
        "put counter",
    );
    let mut handles = Vec::new();
    for _ in 0..TASKS {
        let store = Arc::clone(store);
        let key = key.clone();
        handles.push(tokio::spawn(async move {
            for _ in 0..INCREMENTS {
                increment(store.as_ref(), &key).await;
            }
        }));
    }
    for h in handles {
        ok(h.await, "incrementing task");
    }
    let value = read_counter(store.as_ref(), &key).await.0;
    assert_eq!(
        value,
        TASKS * INCREMENTS,
        "conformance: lost updates with put_if_match"
    );
    ok(store.delete(&key).await, "cleanup");
}

async fn read_counter(s: &dyn ObjectStore, key: &str) -> (u64, ETag) {
    let got = ok(s.get(key).await, "get counter");
    let text = std::str::from_utf8(&got.data).unwrap_or_default();
    match text.parse() {
        Ok(n) => (n, got.etag),
        Err(_) => panic!("conformance: counter holds {:?}", got.data),
    }
}

/// Adds one to the decimal counter at `key`, retrying until its `put_if_match` wins.
/// Public so that cross-process tests of a backend can drive the same protocol.
pub async fn increment(s: &dyn ObjectStore, key: &str) {
    loop {
        let (n, etag) = read_counter(s, key).await;
        match s
            .put_if_match(key, Bytes::from((n + 1).to_string()), &etag)
            .await
        {
            Ok(_) => return,
            Err(StoreError::PreconditionFailed { .. }) => tokio::task::yield_now().await,
            Err(e) => panic!("conformance: put_if_match on the counter failed: {e:?}"),
        }
    }
}
