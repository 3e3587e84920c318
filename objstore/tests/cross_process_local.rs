//! Create-only and if-match writes of the local store are atomic across processes, not
//! just across threads: this test re-executes its own binary as several child writers.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tidemark_objstore::{conformance, LocalStore, ObjectStore, StoreError};

const CHILD_ROOT: &str = "TIDEMARK_OBJSTORE_CHILD_ROOT";
const CHILD_ID: &str = "TIDEMARK_OBJSTORE_CHILD_ID";
/// File where a child records the keys it won, one number per line (stdout is shared
/// with the test harness's own output).
const CHILD_OUT: &str = "TIDEMARK_OBJSTORE_CHILD_OUT";
const CHILDREN: usize = 5;
const KEYS: usize = 32;
const INCREMENTS: u64 = 8;
const COUNTER: &str = "owner/counter";

fn key(k: usize) -> String {
    format!("log/{k:016x}.seg")
}

fn content(child: usize, k: usize) -> Bytes {
    Bytes::from(format!("child {child} wrote key {k}"))
}

/// The child side: a no-op in a normal test run, a racing writer when the parent
/// re-executes this binary with the environment set.
#[test]
fn child_writer() {
    let (Ok(root), Ok(id), Ok(out)) = (
        std::env::var(CHILD_ROOT),
        std::env::var(CHILD_ID),
        std::env::var(CHILD_OUT),
    ) else {
        return;
    };
    let id: usize = id.parse().expect("child id");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let won = rt.block_on(async {
        let store = LocalStore::open(&root).expect("open");
        // Start together so the races actually overlap.
        let go = Path::new(&root).join("go");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !go.exists() {
            assert!(Instant::now() < deadline, "parent never said go");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let mut won = String::new();
        // Same order in every child: each key is contended by all of them at once.
        for k in 0..KEYS {
            match store.put_if_absent(&key(k), content(id, k)).await {
                Ok(_) => won.push_str(&format!("{k}\n")),
                Err(StoreError::AlreadyExists { .. }) => {}
                Err(e) => panic!("child {id}: put_if_absent: {e:?}"),
            }
        }
        for _ in 0..INCREMENTS {
            conformance::increment(&store, COUNTER).await;
        }
        won
    });
    std::fs::write(out, won).expect("write results");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_store_is_atomic_across_processes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    let store = LocalStore::open(&root).expect("open");
    store
        .put(COUNTER, Bytes::from_static(b"0"))
        .await
        .expect("init counter");

    let exe = std::env::current_exe().expect("current_exe");
    let children: Vec<_> = (0..CHILDREN)
        .map(|id| {
            Command::new(&exe)
                .args(["child_writer", "--exact", "--nocapture", "--test-threads=1"])
                .env(CHILD_ROOT, &root)
                .env(CHILD_ID, id.to_string())
                .env(CHILD_OUT, dir.path().join(format!("won-{id}")))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn child")
        })
        .collect();
    std::fs::write(root.join("go"), b"").expect("go");

    let mut winners: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (id, child) in children.into_iter().enumerate() {
        let out = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .expect("join")
            .expect("child output");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "child {id} failed: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        // Guard against the child silently running no test (e.g. a renamed test).
        assert!(
            stdout.contains("1 passed"),
            "child {id} did not run child_writer:\n{stdout}"
        );
        let won =
            std::fs::read_to_string(dir.path().join(format!("won-{id}"))).expect("child results");
        for k in won.lines() {
            winners
                .entry(k.parse().expect("key number"))
                .or_default()
                .push(id);
        }
    }

    for k in 0..KEYS {
        let ids = winners.get(&k).cloned().unwrap_or_default();
        assert_eq!(ids.len(), 1, "key {k}: winners {ids:?}");
        let got = store.get(&key(k)).await.expect("get");
        assert_eq!(
            got.data,
            content(ids[0], k),
            "key {k} holds a loser's content"
        );
    }
    let counter = store.get(COUNTER).await.expect("get counter");
    assert_eq!(
        std::str::from_utf8(&counter.data).expect("utf8"),
        (CHILDREN as u64 * INCREMENTS).to_string(),
        "lost increments across processes"
    );
    let temps = std::fs::read_dir(root.join(".tmp")).expect(".tmp").count();
    assert_eq!(temps, 0, "temp files left behind");
}
