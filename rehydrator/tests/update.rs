//! Updating an existing image from one point to another: forwards (a warm replica
//! following the log) and backwards (rollback), at the cost of what changed, exact
//! after an interruption once run again, and refusing what is not the disk's image.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tidemark_format::BLOCK_SIZE;
use tidemark_objstore::DynStore;
use tidemark_pitr_index::{Index, IndexError};
use tidemark_rehydrator::{
    clone_image, restore_disk, update_image, RestoreError, RestoreOptions, RestoreProgress,
    RestoreReport, UpdateReport,
};

mod common;

use common::Fixture;

const BS: usize = BLOCK_SIZE as usize;
const BLOCKS: usize = 2048;
const DISK: usize = BLOCKS * BS;

/// What one write of a point does to a run of blocks.
#[derive(Clone, Copy)]
enum Change {
    /// Random data over `blocks` blocks from `first`.
    Data { first: usize, blocks: usize },
    /// All-zero data, which the write path records as zeroed blocks.
    Zero { first: usize, blocks: usize },
    /// `n` writes of random data of 1 to 40 blocks at random places.
    Scattered { n: usize },
}

use Change::{Data, Scattered, Zero};

/// The history of the fixture's disk: each entry is one point.
fn history() -> Vec<Vec<Change>> {
    vec![
        // 1: all but the last 64 blocks, which stay never written.
        (0..8)
            .map(|i| Data {
                first: i * 248,
                blocks: 248,
            })
            .collect(),
        // 2: overwrites here and there, and a zeroed range.
        vec![
            Scattered { n: 6 },
            Zero {
                first: 100,
                blocks: 50,
            },
        ],
        // 3: data inside the zeroed range and where nothing was ever written, zeroes
        // where nothing was ever written and over data.
        vec![
            Data {
                first: 120,
                blocks: 10,
            },
            Data {
                first: 1990,
                blocks: 10,
            },
            Zero {
                first: 2040,
                blocks: 4,
            },
            Zero {
                first: 500,
                blocks: 20,
            },
            Scattered { n: 4 },
        ],
        // 4: zeroes at the start, data over the edge of the zeroed range.
        vec![
            Zero {
                first: 0,
                blocks: 8,
            },
            Data {
                first: 110,
                blocks: 15,
            },
            Scattered { n: 3 },
        ],
        // 5: a small change (27 blocks, 1.3% of the disk).
        vec![
            Data {
                first: 300,
                blocks: 10,
            },
            Zero {
                first: 700,
                blocks: 5,
            },
            Data {
                first: 1500,
                blocks: 12,
            },
        ],
        // 6: a point that changes nothing.
        vec![],
    ]
}

impl Fixture {
    /// One disk at the points of [`history`].
    async fn with_history() -> Self {
        let mut f = Fixture::new(DISK).await;
        let mut r = StdRng::seed_from_u64(23);
        for changes in history() {
            for change in changes {
                let runs = match change {
                    Data { first, blocks } => vec![(first, blocks, false)],
                    Zero { first, blocks } => vec![(first, blocks, true)],
                    Scattered { n } => (0..n)
                        .map(|_| {
                            let blocks = r.gen_range(1..40);
                            (r.gen_range(0..BLOCKS - blocks), blocks, false)
                        })
                        .collect(),
                };
                for (first, blocks, zero) in runs {
                    let data: Vec<u8> = if zero {
                        vec![0; blocks * BS]
                    } else {
                        (0..blocks * BS).map(|_| r.gen()).collect()
                    };
                    f.write(first * BS, data);
                }
            }
            f.commit().await;
        }
        f
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn seq(&self, i: usize) -> u64 {
        self.points[i].0
    }

    /// Restores point `i` into `out` and checks it against the reference.
    async fn restore(&self, i: usize, out: &Path) -> RestoreReport {
        let progress = Arc::new(RestoreProgress::default());
        let report = restore_disk(
            &self.store,
            &self.index,
            "dom",
            "disk0",
            self.seq(i),
            out,
            &RestoreOptions::default(),
            progress,
        )
        .await
        .expect("restore");
        assert_image(out, &self.points[i].1, &format!("restore of point {i}"));
        report
    }

    async fn update(
        &self,
        image: &Path,
        from: u64,
        to: u64,
        opts: &RestoreOptions,
        progress: Arc<RestoreProgress>,
    ) -> Result<UpdateReport, RestoreError> {
        update_image(
            &self.store,
            &self.index,
            "dom",
            "disk0",
            image,
            from,
            to,
            opts,
            progress,
        )
        .await
    }

    /// Updates `image` from point `from` to point `to` and checks it is exact.
    async fn update_exact(&self, image: &Path, from: usize, to: usize) -> UpdateReport {
        let progress = Arc::new(RestoreProgress::default());
        let report = self
            .update(
                image,
                self.seq(from),
                self.seq(to),
                &RestoreOptions::default(),
                progress.clone(),
            )
            .await
            .expect("update");
        assert_image(image, &self.points[to].1, &format!("update {from} → {to}"));
        assert_eq!(
            progress.done_bytes.load(Ordering::Relaxed),
            progress.total_bytes.load(Ordering::Relaxed),
            "progress ends at its total"
        );
        assert_eq!(
            progress.total_bytes.load(Ordering::Relaxed),
            report.data_bytes
        );
        report
    }

    /// Starts a slow update and cancels it once some of it is done.
    async fn interrupt(&self, image: &Path, from: usize, to: usize) -> RestoreError {
        let progress = Arc::new(RestoreProgress::default());
        let watcher = tokio::spawn({
            let p = progress.clone();
            async move {
                while p.done_bytes.load(Ordering::Relaxed) == 0 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                p.cancelled.store(true, Ordering::Relaxed);
            }
        });
        let opts = RestoreOptions {
            concurrency: 1,
            max_range: 32 << 10,
            gap: 0,
            max_bytes_per_sec: Some(512 << 10),
            ..RestoreOptions::default()
        };
        let result = self
            .update(image, self.seq(from), self.seq(to), &opts, progress.clone())
            .await;
        watcher.abort();
        let done = progress.done_bytes.load(Ordering::Relaxed);
        let total = progress.total_bytes.load(Ordering::Relaxed);
        assert!(
            done > 0 && done < total,
            "cancelled mid-way: {done} of {total}"
        );
        let err = result.expect_err("the update was cancelled");
        let got = std::fs::read(image).expect("read image");
        assert!(got != self.points[to].1, "the cancelled update finished");
        err
    }
}

fn assert_image(path: &Path, expect: &[u8], what: &str) {
    let got = std::fs::read(path).expect("read image");
    assert_eq!(got.len(), expect.len(), "{what}: size");
    if let Some(b) = (0..BLOCKS).find(|b| got[b * BS..(b + 1) * BS] != expect[b * BS..(b + 1) * BS])
    {
        panic!("{what}: block {b} differs");
    }
}

fn block_is_zero(image: &[u8], block: usize) -> bool {
    image[block * BS..(block + 1) * BS].iter().all(|&b| b == 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_updates_reach_every_later_point() {
    let f = Fixture::with_history().await;
    let n = f.points.len();
    for from in 0..n {
        let base = f.path(&format!("base{from}.img"));
        f.restore(from, &base).await;
        for to in from + 1..n {
            let out = f.path(&format!("fwd{from}-{to}.img"));
            clone_image(&base, &out).expect("clone");
            let report = f.update_exact(&out, from, to).await;
            assert_eq!((report.from_seq, report.to_seq), (f.seq(from), f.seq(to)));
            // The same bytes as a restore of the target.
            let restored = f.path(&format!("restored{to}.img"));
            if !restored.exists() {
                f.restore(to, &restored).await;
            }
            let restored = std::fs::read(&restored).expect("restored");
            assert!(std::fs::read(&out).expect("updated") == restored);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_follows_the_log_from_the_empty_disk() {
    let f = Fixture::with_history().await;
    let out = f.path("replica.img");
    std::fs::File::create(&out)
        .and_then(|file| file.set_len(DISK as u64))
        .expect("empty image");
    let progress = Arc::new(RestoreProgress::default());
    let first = f
        .update(&out, 0, f.seq(0), &RestoreOptions::default(), progress)
        .await
        .expect("update from the empty disk");
    assert_image(&out, &f.points[0].1, "update 0 → point 0");
    assert_eq!(first.changed_blocks, BLOCKS as u64 - 64);
    for i in 1..f.points.len() {
        let report = f.update_exact(&out, i - 1, i).await;
        if i == f.points.len() - 1 {
            assert_eq!(report.changed_blocks, 0, "the last point changes nothing");
            assert_eq!(report.fetched_bytes, 0);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollbacks_reach_every_earlier_point() {
    let f = Fixture::with_history().await;
    let n = f.points.len();
    for from in (1..n).rev() {
        let base = f.path(&format!("base{from}.img"));
        f.restore(from, &base).await;
        for to in 0..from {
            let out = f.path(&format!("back{from}-{to}.img"));
            clone_image(&base, &out).expect("clone");
            f.update_exact(&out, from, to).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_costs_what_changed_not_the_disk() {
    let f = Fixture::with_history().await;
    // Point 4 (index 4) changed 27 blocks over point 3.
    let full = f.restore(3, &f.path("full.img")).await;
    let out = f.path("r.img");
    f.restore(4, &out).await;
    let report = f.update_exact(&out, 4, 3).await;
    assert!(
        report.changed_blocks * 20 < BLOCKS as u64,
        "{} blocks changed",
        report.changed_blocks
    );
    assert!(
        report.fetched_bytes * 4 < full.fetched_bytes,
        "the rollback fetched {} bytes, a restore {}",
        report.fetched_bytes,
        full.fetched_bytes
    );
    assert!(report.requests < full.requests);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_zero_at_the_target_are_zero_afterwards() {
    let f = Fixture::with_history().await;
    // 0 → 1 zeroes blocks 100..150, 2 → 1 blocks never written before point 2
    // (1990..2000), 2 → 3 blocks 0..8.
    for (from, to) in [(0, 1), (2, 1), (2, 3)] {
        let (source, target) = (&f.points[from].1, &f.points[to].1);
        let emptied: Vec<usize> = (0..BLOCKS)
            .filter(|&b| !block_is_zero(source, b) && block_is_zero(target, b))
            .collect();
        assert!(emptied.len() >= 8, "{from} → {to} empties too little");
        let out = f.path(&format!("z{from}-{to}.img"));
        f.restore(from, &out).await;
        let report = f.update_exact(&out, from, to).await;
        assert!(report.zeroed_blocks >= emptied.len() as u64, "{report:?}");
        let image = std::fs::read(&out).expect("read");
        assert!(emptied.iter().all(|&b| block_is_zero(&image, b)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_update_is_repaired_by_running_it_again() {
    let f = Fixture::with_history().await;
    // Forwards: interrupted, then the same update again.
    let out = f.path("fwd.img");
    f.restore(0, &out).await;
    let err = f.interrupt(&out, 0, 3).await;
    assert!(matches!(err, RestoreError::Cancelled), "{err}");
    f.update_exact(&out, 0, 3).await;
    // Backwards: interrupted, then an update further back, whose changed set holds
    // every block the interrupted one touched.
    let out = f.path("back.img");
    f.restore(5, &out).await;
    let err = f.interrupt(&out, 5, 2).await;
    assert!(matches!(err, RestoreError::Cancelled), "{err}");
    f.update_exact(&out, 5, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_leaves_the_image_alone() {
    let f = Fixture::with_history().await;
    let out = f.path("img");
    f.restore(1, &out).await;
    let (from, to) = (f.seq(1), f.seq(3));
    let run = |image: PathBuf, domain: &'static str, disk: &'static str, from, to| {
        let (store, index) = (f.store.clone(), f.index.clone());
        async move {
            update_image(
                &store,
                &index,
                domain,
                disk,
                &image,
                from,
                to,
                &RestoreOptions::default(),
                Arc::new(RestoreProgress::default()),
            )
            .await
        }
    };
    let missing = f.path("missing.img");
    let short = f.path("short.img");
    std::fs::write(&short, vec![7u8; DISK - BS]).expect("short image");
    type Expected = fn(&RestoreError) -> bool;
    let refused: [(
        &str,
        &PathBuf,
        &'static str,
        &'static str,
        u64,
        u64,
        Expected,
    ); 6] = [
        (
            "missing image",
            &missing,
            "dom",
            "disk0",
            from,
            to,
            |e| matches!(e, RestoreError::Invalid(m) if m.contains("does not exist")),
        ),
        (
            "image of the wrong size",
            &short,
            "dom",
            "disk0",
            from,
            to,
            |e| matches!(e, RestoreError::Invalid(m) if m.contains("bytes")),
        ),
        ("unknown target", &out, "dom", "disk0", from, 99, |e| {
            matches!(e, RestoreError::Index(IndexError::NoSuchPoint(_)))
        }),
        ("unknown source", &out, "dom", "disk0", 99, to, |e| {
            matches!(e, RestoreError::Index(IndexError::NoSuchPoint(_)))
        }),
        ("unknown disk", &out, "dom", "disk9", from, to, |e| {
            matches!(e, RestoreError::Invalid(_))
        }),
        ("unknown domain", &out, "nope", "disk0", from, to, |e| {
            matches!(e, RestoreError::Index(IndexError::UnknownDomain(_)))
        }),
    ];
    for (what, image, domain, disk, from, to, expected) in refused {
        let err = run(image.clone(), domain, disk, from, to)
            .await
            .expect_err(what);
        assert!(expected(&err), "{what}: {err}");
    }
    assert!(!missing.exists());
    assert!(std::fs::read(&short).expect("short") == vec![7u8; DISK - BS]);
    assert_image(&out, &f.points[1].1, "after refused updates");

    // From a point to itself: nothing to do.
    let report = run(out.clone(), "dom", "disk0", from, from)
        .await
        .expect("no-op");
    assert_eq!(
        report,
        UpdateReport {
            from_seq: from,
            to_seq: from,
            ..UpdateReport::default()
        }
    );
    assert_image(&out, &f.points[1].1, "after a no-op");
}

/// The service spawns updates on tokio: their future must stay `Send` (checked at
/// compile time; never run).
#[allow(dead_code)]
fn update_future_is_send(store: &DynStore, index: &Index, image: &Path, opts: &RestoreOptions) {
    fn send<T: Send>(_: &T) {}
    let progress = Arc::new(RestoreProgress::default());
    let fut = update_image(store, index, "dom", "disk0", image, 1, 2, opts, progress);
    send(&fut);
}
