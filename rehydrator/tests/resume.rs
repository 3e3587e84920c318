//! Resumable and throttled restores: an interrupted restore goes on where it stopped
//! and ends byte-identical, a journal that is not this restore's is never trusted, and
//! a rate limit slows the pack reads down.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tidemark_format::BLOCK_SIZE;
use tidemark_objstore::DynStore;
use tidemark_pitr_index::Index;
use tidemark_rehydrator::{
    discard_partial, restore_disk, RestoreError, RestoreOptions, RestoreProgress, RestoreReport,
};

mod common;

use common::Fixture;

const BS: usize = BLOCK_SIZE as usize;
const DISK: usize = 4 << 20;

impl Fixture {
    /// One disk of random data at two points.
    async fn with_two_points() -> Self {
        let mut f = Fixture::new(DISK).await;
        let mut r = StdRng::seed_from_u64(11);
        // Point 1: all of the disk but its last 64 blocks, in several writes.
        for part in 0..8 {
            let len = if part == 7 {
                DISK / 8 - 64 * BS
            } else {
                DISK / 8
            };
            let data: Vec<u8> = (0..len).map(|_| r.gen()).collect();
            f.write(part * DISK / 8, data);
        }
        f.commit().await;
        // Point 2: overwrites here and there, and a zeroed range.
        for _ in 0..6 {
            let blocks = r.gen_range(1..40);
            let start = r.gen_range(0..DISK / BS - blocks);
            let data: Vec<u8> = (0..blocks * BS).map(|_| r.gen()).collect();
            f.write(start * BS, data);
        }
        f.write(100 * BS, vec![0u8; 50 * BS]);
        f.commit().await;
        f
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    async fn restore(
        &self,
        seq: u64,
        out: &Path,
        opts: &RestoreOptions,
        progress: Arc<RestoreProgress>,
    ) -> Result<RestoreReport, RestoreError> {
        restore_disk(
            &self.store,
            &self.index,
            "dom",
            "disk0",
            seq,
            out,
            opts,
            progress,
        )
        .await
    }

    /// Restores `seq` with `opts` and checks the image is exact.
    async fn restore_exact(&self, i: usize, out: &Path, opts: &RestoreOptions) -> RestoreReport {
        let (seq, expect) = &self.points[i];
        let progress = Arc::new(RestoreProgress::default());
        let report = self
            .restore(*seq, out, opts, progress.clone())
            .await
            .expect("restore");
        let got = std::fs::read(out).expect("read image");
        assert!(got == *expect, "seq {seq}: the image differs");
        assert_eq!(
            progress.done_bytes.load(Ordering::Relaxed),
            progress.total_bytes.load(Ordering::Relaxed),
            "progress ends at its total"
        );
        assert!(!partial(out).exists(), "partial image left behind");
        assert!(!journal(out).exists(), "journal left behind");
        report
    }

    /// Starts a slow restore of point `i` and cancels it once a third is done.
    async fn interrupt(&self, i: usize, out: &Path, resume: bool) -> RestoreError {
        let progress = Arc::new(RestoreProgress::default());
        let watcher = tokio::spawn({
            let p = progress.clone();
            async move {
                loop {
                    let total = p.total_bytes.load(Ordering::Relaxed);
                    if total > 0 && p.done_bytes.load(Ordering::Relaxed) >= total / 3 {
                        p.cancelled.store(true, Ordering::Relaxed);
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        });
        let opts = RestoreOptions {
            resume,
            // About two seconds for the whole disk: far longer than the watcher needs.
            max_bytes_per_sec: Some(2 << 20),
            ..slow_opts()
        };
        let result = self
            .restore(self.points[i].0, out, &opts, progress.clone())
            .await;
        watcher.abort();
        let err = result.expect_err("the restore was cancelled");
        let done = progress.done_bytes.load(Ordering::Relaxed);
        let total = progress.total_bytes.load(Ordering::Relaxed);
        assert!(
            done > 0 && done < total,
            "cancelled mid-way: {done} of {total}"
        );
        err
    }
}

/// One range at a time, small ranges: many requests, each a point to stop at.
fn slow_opts() -> RestoreOptions {
    RestoreOptions {
        concurrency: 1,
        max_range: 64 << 10,
        ..RestoreOptions::default()
    }
}

fn sibling(out: &Path, suffix: &str) -> PathBuf {
    let mut name = out.file_name().expect("file name").to_os_string();
    name.push(suffix);
    out.with_file_name(name)
}

fn partial(out: &Path) -> PathBuf {
    sibling(out, ".tidemark-partial")
}

fn journal(out: &Path) -> PathBuf {
    sibling(out, ".tidemark-resume")
}

fn resumable() -> RestoreOptions {
    RestoreOptions {
        resume: true,
        ..slow_opts()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_restore_resumes_and_ends_exact() {
    let f = Fixture::with_two_points().await;
    let full = f.restore_exact(1, &f.path("full.img"), &resumable()).await;
    assert_eq!(full.resumed_bytes, 0, "a fresh restore resumes nothing");

    let out = f.path("r.img");
    let err = f.interrupt(1, &out, true).await;
    assert!(matches!(err, RestoreError::Cancelled), "{err}");
    assert!(
        partial(&out).exists(),
        "a resumable restore keeps its partial image"
    );
    assert!(
        journal(&out).exists(),
        "a resumable restore keeps its journal"
    );
    assert!(!out.exists());

    let report = f.restore_exact(1, &out, &resumable()).await;
    assert!(report.resumed_bytes > 0, "nothing was resumed");
    assert!(report.resumed_bytes < report.data_bytes);
    assert_eq!(report.data_bytes, full.data_bytes);
    assert!(
        report.fetched_bytes < full.fetched_bytes,
        "resumed restore fetched {} of {} bytes",
        report.fetched_bytes,
        full.fetched_bytes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_of_a_resumed_restore_starts_at_what_was_done() {
    let f = Fixture::with_two_points().await;
    let out = f.path("r.img");
    f.interrupt(0, &out, true).await;
    // Cancelled before it starts: the progress shows what the journal holds.
    let progress = Arc::new(RestoreProgress::default());
    progress.cancelled.store(true, Ordering::Relaxed);
    let err = f
        .restore(f.points[0].0, &out, &resumable(), progress.clone())
        .await
        .expect_err("cancelled");
    assert!(matches!(err, RestoreError::Cancelled), "{err}");
    let done = progress.done_bytes.load(Ordering::Relaxed);
    assert!(done > 0, "no progress after resuming");
    assert!(done < progress.total_bytes.load(Ordering::Relaxed));
    let report = f.restore_exact(0, &out, &resumable()).await;
    assert_eq!(report.resumed_bytes, done);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_of_another_point_is_ignored() {
    let f = Fixture::with_two_points().await;
    let out = f.path("r.img");
    // The partial image holds point 1, whose blocks point 2 zeroed or overwrote.
    f.interrupt(0, &out, true).await;
    let report = f.restore_exact(1, &out, &resumable()).await;
    assert_eq!(report.resumed_bytes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_journal_is_ignored() {
    let f = Fixture::with_two_points().await;
    let out = f.path("r.img");
    type Damage = fn(&mut Vec<u8>);
    let damages: [(&str, Damage); 3] = [
        ("flipped", |j| {
            let mid = j.len() / 2;
            j[mid] ^= 0x01;
        }),
        ("torn", |j| j.truncate(j.len() - 7)),
        ("empty", |j| j.clear()),
    ];
    for (what, damage) in damages {
        f.interrupt(1, &out, true).await;
        let mut bytes = std::fs::read(journal(&out)).expect("journal");
        damage(&mut bytes);
        std::fs::write(journal(&out), bytes).expect("write journal");
        let report = f.restore_exact(1, &out, &resumable()).await;
        assert_eq!(report.resumed_bytes, 0, "a {what} journal was trusted");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_image_without_its_journal_starts_over() {
    let f = Fixture::with_two_points().await;
    let out = f.path("r.img");
    f.interrupt(1, &out, true).await;
    std::fs::remove_file(journal(&out)).expect("remove journal");
    let report = f.restore_exact(1, &out, &resumable()).await;
    assert_eq!(report.resumed_bytes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discard_partial_removes_image_and_journal() {
    let f = Fixture::with_two_points().await;
    let out = f.path("r.img");
    f.interrupt(1, &out, true).await;
    discard_partial(&out);
    assert!(!partial(&out).exists());
    assert!(!journal(&out).exists());
    // Nothing left to discard is fine too.
    discard_partial(&out);
    let report = f.restore_exact(1, &out, &resumable()).await;
    assert_eq!(report.resumed_bytes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_that_does_not_resume_removes_its_partial_image() {
    let f = Fixture::with_two_points().await;
    let out = f.path("r.img");
    // A journal of an earlier resumable restore into the same place.
    f.interrupt(1, &out, true).await;
    let err = f.interrupt(1, &out, false).await;
    assert!(matches!(err, RestoreError::Cancelled), "{err}");
    assert!(!partial(&out).exists(), "partial image left behind");
    assert!(
        !journal(&out).exists(),
        "the old journal outlived its image"
    );
    assert!(!out.exists());
    let report = f.restore_exact(1, &out, &slow_opts()).await;
    assert_eq!(report.resumed_bytes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_slows_the_restore_down() {
    let f = Fixture::with_two_points().await;
    let opts = RestoreOptions {
        concurrency: 4,
        max_range: 64 << 10,
        ..RestoreOptions::default()
    };
    let full = f.restore_exact(1, &f.path("full.img"), &opts).await;
    // Twice the bytes per second: half a second of reads at least, but the first range.
    let limited = RestoreOptions {
        max_bytes_per_sec: Some(full.fetched_bytes * 2),
        ..opts
    };
    let started = Instant::now();
    let report = f.restore_exact(1, &f.path("slow.img"), &limited).await;
    let took = started.elapsed();
    assert_eq!(report.fetched_bytes, full.fetched_bytes);
    assert!(took >= Duration::from_millis(400), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_rate_limit_is_refused() {
    let f = Fixture::with_two_points().await;
    let opts = RestoreOptions {
        max_bytes_per_sec: Some(0),
        ..RestoreOptions::default()
    };
    let err = f
        .restore(
            f.points[0].0,
            &f.path("r.img"),
            &opts,
            Arc::new(RestoreProgress::default()),
        )
        .await
        .expect_err("refused");
    assert!(matches!(err, RestoreError::Invalid(_)), "{err}");
}

/// The service spawns restores on tokio: their future must stay `Send` (checked at
/// compile time; never run).
#[allow(dead_code)]
fn restore_future_is_send(store: &DynStore, index: &Index, out: &Path, opts: &RestoreOptions) {
    fn send<T: Send>(_: &T) {}
    let progress = Arc::new(RestoreProgress::default());
    let fut = restore_disk(store, index, "dom", "disk0", 1, out, opts, progress);
    send(&fut);
}
