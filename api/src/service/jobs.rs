//! Restore jobs: queued, run a few at a time, reported live, cancelled on request, and
//! resumed after a restart.
//!
//! Each job is a JSON file in DATA_DIR/jobs, rewritten atomically at every change of
//! state. A job found queued or running at start was interrupted (shutdown or crash)
//! and is run again; its restores resume from their journals
//! (`RestoreOptions::resume`), so only what was not yet durable is fetched again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tidemark_objstore::DynStore;
use tidemark_pitr_index::{format_time, Index};
use tidemark_rehydrator::{restore, restore_disk, RestoreError, RestoreOptions, RestoreProgress};
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorDetail};
use super::failover::FailoverReport;
use super::leases::Leases;
use super::metrics::Metrics;
use super::records::Records;

/// What a job does.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Restore disks into files under the recovery directory.
    Restore,
    /// Materialise the images of a test copy.
    TestCopy,
    /// A failover (or the completion of continuous failover): see `failover`.
    Failover,
}

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for a free worker.
    Queued,
    /// Working.
    Running,
    /// Done; every image is complete.
    Succeeded,
    /// Stopped by an error; see `error`.
    Failed,
    /// Stopped on request; partial images were removed.
    Cancelled,
}

impl JobState {
    /// Whether the job will not change any more.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }

    /// The name used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }
}

/// One disk of a job.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct JobDisk {
    /// Disk name in the domain.
    pub disk: String,
    /// The image file on the service's machine.
    pub path: String,
    /// Bytes of data the image needs (the rest are holes).
    pub bytes_total: u64,
    /// Whether the image is complete.
    pub done: bool,
}

/// A job, as stored and as reported.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Job {
    /// Job id.
    pub id: String,
    /// What it does.
    pub kind: JobKind,
    /// Where it is.
    pub state: JobState,
    /// The domain restored.
    pub domain: String,
    /// The point restored.
    pub seq: u64,
    /// The point's time (RFC 3339).
    pub point_time: String,
    /// The test copy this job materialises, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_copy: Option<String>,
    /// The images.
    pub disks: Vec<JobDisk>,
    /// Bytes of data to write in all.
    pub bytes_total: u64,
    /// Bytes written so far (including what a resumed run did not need to fetch again).
    pub bytes_done: u64,
    /// Bytes a resumed run found already done.
    pub resumed_bytes: u64,
    /// Bytes per second since this run started.
    pub rate_bytes_per_sec: f64,
    /// Seconds left at the current rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<f64>,
    /// Runs started (more than one after a restart).
    pub runs: u32,
    /// When it was created (RFC 3339).
    pub created: String,
    /// When it ended (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
    /// The steps of a failover job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<FailoverReport>,
}

/// A job being tracked: its record and, while it runs, its live progress.
struct Entry {
    job: Mutex<Job>,
    /// Progress of the disk being restored now.
    live: Mutex<Option<(Arc<RestoreProgress>, Instant, u64)>>,
    cancel: AtomicBool,
    changed: watch::Sender<()>,
}

impl Entry {
    fn new(job: Job) -> Self {
        Entry {
            job: Mutex::new(job),
            live: Mutex::new(None),
            cancel: AtomicBool::new(false),
            changed: watch::channel(()).0,
        }
    }

    fn snapshot(&self) -> Job {
        let mut job = lock(&self.job).clone();
        if let Some((p, started, at_start)) = lock(&self.live).as_ref() {
            let done_disks: u64 = job
                .disks
                .iter()
                .filter(|d| d.done)
                .map(|d| d.bytes_total)
                .sum();
            job.bytes_done = done_disks + p.done_bytes.load(Ordering::Relaxed);
            job.resumed_bytes += p.resumed_bytes.load(Ordering::Relaxed);
            let secs = started.elapsed().as_secs_f64();
            // What this run fetched and wrote, not what a resume found done.
            let moved = job
                .bytes_done
                .saturating_sub(*at_start)
                .saturating_sub(p.resumed_bytes.load(Ordering::Relaxed));
            if secs > 0.0 && moved > 0 {
                job.rate_bytes_per_sec = moved as f64 / secs;
                job.eta_seconds = Some(
                    job.bytes_total.saturating_sub(job.bytes_done) as f64 / job.rate_bytes_per_sec,
                );
            }
        }
        job
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a new job restores.
pub struct JobSpec {
    /// Restore or test copy.
    pub kind: JobKind,
    /// Domain.
    pub domain: String,
    /// Point.
    pub seq: u64,
    /// (disk name, image path, data bytes).
    pub disks: Vec<(String, PathBuf, u64)>,
    /// The test copy, for test-copy jobs.
    pub test_copy: Option<String>,
    /// The failover's report, for failover jobs.
    pub failover: Option<FailoverReport>,
}

/// The job manager.
pub struct Jobs {
    records: Records,
    store: DynStore,
    index: Arc<Index>,
    opts: RestoreOptions,
    metrics: Arc<Metrics>,
    leases: Arc<Leases>,
    workers: Arc<Semaphore>,
    keep_ended: usize,
    jobs: Mutex<BTreeMap<String, Arc<Entry>>>,
    shutdown: CancellationToken,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Jobs {
    /// Opens the job directory and resumes every job that was interrupted.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        dir: &Path,
        store: DynStore,
        index: Arc<Index>,
        opts: RestoreOptions,
        max_jobs: usize,
        keep_ended: usize,
        metrics: Arc<Metrics>,
        leases: Arc<Leases>,
    ) -> anyhow::Result<Arc<Jobs>> {
        let jobs = Arc::new(Jobs {
            records: Records::open(dir)?,
            store,
            index,
            opts: RestoreOptions {
                resume: true,
                ..opts
            },
            metrics,
            leases,
            workers: Arc::new(Semaphore::new(max_jobs)),
            keep_ended,
            jobs: Mutex::new(BTreeMap::new()),
            shutdown: CancellationToken::new(),
            tasks: Mutex::new(Vec::new()),
        });
        let mut interrupted = Vec::new();
        for mut job in jobs.records.load::<Job>()? {
            if !job.state.is_final() && job.kind == JobKind::Failover {
                // Its steps changed ownership and images outside any journal: running
                // them again blindly could take the domain over twice. The operator
                // looks at the domain and decides.
                job.state = JobState::Failed;
                job.finished = Some(format_time(tidemark_ingest::now_ns()));
                job.error = Some(ErrorDetail {
                    code: "interrupted".into(),
                    message: "the service stopped during the failover; check the domain's owner and replica, then fail over again".into(),
                });
                if let Err(e) = jobs.persist(&job) {
                    tracing::warn!(job = %job.id, "cannot record the job: {e}");
                }
            } else if !job.state.is_final() {
                interrupted.push(job.id.clone());
            }
            jobs.insert(job);
        }
        jobs.prune();
        for id in interrupted {
            tracing::info!(job = %id, "resuming interrupted job");
            jobs.spawn(&id);
        }
        Ok(jobs)
    }

    fn insert(&self, job: Job) {
        lock(&self.jobs).insert(job.id.clone(), Arc::new(Entry::new(job)));
    }

    /// Whether a job that has not ended restores `domain`.
    pub fn busy_with(&self, domain: &str) -> bool {
        lock(&self.jobs).values().any(|e| {
            let j = lock(&e.job);
            !j.state.is_final() && j.domain == domain
        })
    }

    /// The tuning restores run with.
    pub fn restore_options(&self) -> RestoreOptions {
        self.opts.clone()
    }

    fn entry(&self, id: &str) -> Result<Arc<Entry>, ApiError> {
        lock(&self.jobs)
            .get(id)
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("no job {id:?}")))
    }

    fn new_job(&self, spec: JobSpec) -> Job {
        let point_time = self
            .index
            .segment(&spec.domain, spec.seq)
            .ok()
            .flatten()
            .map(|m| format_time(m.time_end))
            .unwrap_or_default();
        let disks: Vec<JobDisk> = spec
            .disks
            .into_iter()
            .map(|(disk, path, bytes_total)| JobDisk {
                disk,
                path: path.display().to_string(),
                bytes_total,
                done: false,
            })
            .collect();
        Job {
            id: new_id("job"),
            kind: spec.kind,
            state: JobState::Queued,
            domain: spec.domain,
            seq: spec.seq,
            point_time,
            test_copy: spec.test_copy,
            bytes_total: disks.iter().map(|d| d.bytes_total).sum(),
            disks,
            bytes_done: 0,
            resumed_bytes: 0,
            rate_bytes_per_sec: 0.0,
            eta_seconds: None,
            runs: 0,
            created: format_time(tidemark_ingest::now_ns()),
            finished: None,
            error: None,
            failover: spec.failover,
        }
    }

    /// Records a new job and tracks it.
    fn register(&self, job: Job) -> Result<Arc<Entry>, ApiError> {
        // Two live jobs writing one image would publish each other's half-written
        // file; the check and the insert are one step under the table's lock.
        let mut jobs = lock(&self.jobs);
        for other in jobs.values() {
            let other = lock(&other.job);
            if other.state.is_final() {
                continue;
            }
            if job.kind == JobKind::Failover
                && other.kind == JobKind::Failover
                && other.domain == job.domain
            {
                return Err(ApiError::conflict(format!(
                    "failover {} of domain {} is running",
                    other.id, job.domain
                )));
            }
            if let Some(d) = other
                .disks
                .iter()
                .find(|d| job.disks.iter().any(|n| n.path == d.path))
            {
                return Err(ApiError::conflict(format!(
                    "job {} is writing {}",
                    other.id, d.path
                )));
            }
        }
        self.persist(&job)
            .map_err(|e| ApiError::internal(format!("cannot record the job: {e}")))?;
        let entry = Arc::new(Entry::new(job.clone()));
        jobs.insert(job.id, entry.clone());
        Ok(entry)
    }

    /// Queues a new restore job.
    pub fn start(self: &Arc<Self>, spec: JobSpec) -> Result<Job, ApiError> {
        let job = self.new_job(spec);
        self.register(job.clone())?;
        self.spawn(&job.id);
        Ok(job)
    }

    /// Starts a job whose work is `work` (a failover). It runs at once, not queued
    /// behind restores: a failover must not wait for a worker.
    pub fn start_task<F, Fut>(self: &Arc<Self>, spec: JobSpec, work: F) -> Result<Job, ApiError>
    where
        F: FnOnce(JobHandle) -> Fut,
        Fut: std::future::Future<Output = Result<(), ApiError>> + Send + 'static,
    {
        let job = self.new_job(spec);
        let entry = self.register(job.clone())?;
        let work = work(JobHandle {
            jobs: self.clone(),
            entry: entry.clone(),
        });
        let this = self.clone();
        let task = tokio::spawn(async move {
            this.update(&entry, |j| {
                j.state = JobState::Running;
                j.runs += 1;
            });
            let result = work.await;
            *lock(&entry.live) = None;
            match result {
                Ok(()) => this.finish(&entry, JobState::Succeeded, None),
                Err(e) if entry.cancel.load(Ordering::SeqCst) => {
                    this.finish(&entry, JobState::Cancelled, Some(e))
                }
                Err(e) => this.finish(&entry, JobState::Failed, Some(e)),
            }
        });
        let mut tasks = lock(&self.tasks);
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
        Ok(job)
    }

    /// The job, with live progress.
    pub fn get(&self, id: &str) -> Result<Job, ApiError> {
        Ok(self.entry(id)?.snapshot())
    }

    /// Every job, oldest first.
    pub fn list(&self) -> Vec<Job> {
        let entries: Vec<_> = lock(&self.jobs).values().cloned().collect();
        let mut jobs: Vec<Job> = entries.iter().map(|e| e.snapshot()).collect();
        jobs.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
        jobs
    }

    /// A receiver that sees every change of the job's state.
    pub fn watch(&self, id: &str) -> Result<watch::Receiver<()>, ApiError> {
        Ok(self.entry(id)?.changed.subscribe())
    }

    /// Asks a job to stop; its partial images are removed. A finished job is a conflict.
    pub fn cancel(&self, id: &str) -> Result<Job, ApiError> {
        let e = self.entry(id)?;
        let state = lock(&e.job).state;
        if state.is_final() {
            return Err(ApiError::conflict(format!(
                "job {id} has already ended ({})",
                state.as_str()
            )));
        }
        e.cancel.store(true, Ordering::SeqCst);
        if let Some((p, _, _)) = lock(&e.live).as_ref() {
            p.cancelled.store(true, Ordering::SeqCst);
        }
        e.changed.send_replace(());
        Ok(e.snapshot())
    }

    /// Waits until the job has ended.
    pub async fn wait(&self, id: &str) -> Result<Job, ApiError> {
        let mut rx = self.watch(id)?;
        loop {
            let job = self.get(id)?;
            if job.state.is_final() {
                return Ok(job);
            }
            if rx.changed().await.is_err() {
                return self.get(id);
            }
        }
    }

    /// Forgets an ended job and its record.
    pub fn remove(&self, id: &str) -> Result<(), ApiError> {
        let e = self.entry(id)?;
        if !lock(&e.job).state.is_final() {
            return Err(ApiError::conflict(format!("job {id} has not ended")));
        }
        lock(&self.jobs).remove(id);
        let _ = self.records.remove(id);
        Ok(())
    }

    /// Forgets the oldest ended jobs beyond the `keep_ended` newest, records included.
    /// The jobs of test copies stay while their copies do (deleting a copy removes its job).
    fn prune(&self) {
        let jobs: Vec<(String, String, bool)> = lock(&self.jobs)
            .values()
            .map(|e| {
                let j = lock(&e.job);
                let prunable = j.state.is_final() && j.test_copy.is_none();
                (j.id.clone(), j.created.clone(), prunable)
            })
            .collect();
        for id in oldest_beyond(jobs, self.keep_ended) {
            lock(&self.jobs).remove(&id);
            let _ = self.records.remove(&id);
        }
    }

    /// Counts of jobs by state, for metrics.
    pub fn counts(&self) -> Vec<(&'static str, u64)> {
        let mut counts: BTreeMap<&'static str, u64> = [
            JobState::Queued,
            JobState::Running,
            JobState::Succeeded,
            JobState::Failed,
            JobState::Cancelled,
        ]
        .iter()
        .map(|s| (s.as_str(), 0))
        .collect();
        for e in lock(&self.jobs).values() {
            *counts.entry(lock(&e.job).state.as_str()).or_default() += 1;
        }
        counts.into_iter().collect()
    }

    /// Stops every running restore at its next range, leaving its partial image and
    /// journal, and waits for the runners: the jobs stay queued or running on disk and
    /// resume at the next start.
    pub async fn shut_down(&self) {
        self.shutdown.cancel();
        for e in lock(&self.jobs).values() {
            if let Some((p, _, _)) = lock(&e.live).as_ref() {
                p.cancelled.store(true, Ordering::SeqCst);
            }
        }
        let tasks = std::mem::take(&mut *lock(&self.tasks));
        for t in tasks {
            let _ = t.await;
        }
    }

    fn spawn(self: &Arc<Self>, id: &str) {
        let this = self.clone();
        let id = id.to_owned();
        let handle = tokio::spawn(async move {
            if let Ok(entry) = this.entry(&id) {
                this.run(&entry).await;
            }
        });
        let mut tasks = lock(&self.tasks);
        tasks.retain(|t| !t.is_finished());
        tasks.push(handle);
    }

    fn update(&self, e: &Entry, f: impl FnOnce(&mut Job)) {
        let job = {
            let mut job = lock(&e.job);
            f(&mut job);
            job.clone()
        };
        if let Err(err) = self.persist(&job) {
            tracing::warn!(job = %job.id, "cannot record the job: {err}");
        }
        e.changed.send_replace(());
    }

    async fn run(&self, e: &Entry) {
        // Held from the queue on: GC must not take the point while the job waits.
        let (domain, seq, id) = {
            let j = lock(&e.job);
            (j.domain.clone(), j.seq, j.id.clone())
        };
        self.leases
            .hold(&domain, &lease_holder(&id), seq, false)
            .await;
        // A queued job waits for a worker, but ends at once when cancelled.
        let mut changes = e.changed.subscribe();
        let acquire = self.workers.clone().acquire_owned();
        tokio::pin!(acquire);
        let _permit = loop {
            if e.cancel.load(Ordering::SeqCst) {
                self.end(e, Err(RestoreError::Cancelled)).await;
                return;
            }
            tokio::select! {
                p = &mut acquire => match p {
                    Ok(p) => break p,
                    Err(_) => return,
                },
                _ = self.shutdown.cancelled() => return,
                _ = changes.changed() => {}
            }
        };
        if e.cancel.load(Ordering::SeqCst) {
            self.end(e, Err(RestoreError::Cancelled)).await;
            return;
        }
        self.update(e, |j| {
            j.state = JobState::Running;
            j.runs += 1;
        });
        let disks = lock(&e.job).disks.clone();
        for (i, d) in disks.iter().enumerate() {
            if d.done {
                continue;
            }
            let progress = Arc::new(RestoreProgress::default());
            let at_start = e.snapshot().bytes_done;
            *lock(&e.live) = Some((progress.clone(), Instant::now(), at_start));
            if e.cancel.load(Ordering::SeqCst) || self.shutdown.is_cancelled() {
                progress.cancelled.store(true, Ordering::SeqCst);
            }
            let (domain, seq) = {
                let j = lock(&e.job);
                (j.domain.clone(), j.seq)
            };
            let result = restore_disk(
                &self.store,
                &self.index,
                &domain,
                &d.disk,
                seq,
                Path::new(&d.path),
                &self.opts,
                progress.clone(),
            )
            .await;
            let written = progress.done_bytes.load(Ordering::Relaxed);
            match result {
                Ok(report) => {
                    self.metrics
                        .restored(written.saturating_sub(report.resumed_bytes));
                    *lock(&e.live) = None;
                    self.update(e, |j| {
                        j.disks[i].done = true;
                        j.resumed_bytes += report.resumed_bytes;
                        j.bytes_done = j
                            .disks
                            .iter()
                            .filter(|d| d.done)
                            .map(|d| d.bytes_total)
                            .sum();
                    });
                }
                Err(RestoreError::Cancelled) if !e.cancel.load(Ordering::SeqCst) => {
                    // Shutdown: leave the job and its partial images to resume.
                    *lock(&e.live) = None;
                    return;
                }
                Err(err) => {
                    *lock(&e.live) = None;
                    self.end(e, Err(err)).await;
                    return;
                }
            }
        }
        self.end(e, Ok(())).await;
    }

    /// Ends a restore job. Its lease goes first, so that an ended job holds nothing.
    async fn end(&self, e: &Entry, result: Result<(), RestoreError>) {
        if result.is_err() {
            for d in lock(&e.job).disks.iter().filter(|d| !d.done) {
                restore::discard_partial(Path::new(&d.path));
            }
        }
        let (domain, id) = {
            let j = lock(&e.job);
            (j.domain.clone(), j.id.clone())
        };
        self.leases.release(&domain, &lease_holder(&id)).await;
        match result {
            Ok(()) => self.finish(e, JobState::Succeeded, None),
            Err(RestoreError::Cancelled) => self.finish(e, JobState::Cancelled, None),
            Err(err) => self.finish(e, JobState::Failed, Some(err.into())),
        }
    }

    fn finish(&self, e: &Entry, state: JobState, error: Option<ApiError>) {
        self.update(e, |j| {
            j.state = state;
            j.finished = Some(format_time(tidemark_ingest::now_ns()));
            j.rate_bytes_per_sec = 0.0;
            j.eta_seconds = None;
            if state == JobState::Succeeded {
                j.bytes_done = j.bytes_total;
            }
            j.error = error.map(|api| ErrorDetail {
                code: api.code.to_owned(),
                message: api.message,
            });
        });
        self.prune();
    }

    fn persist(&self, job: &Job) -> std::io::Result<()> {
        self.records.save(&job.id, job)
    }
}

/// What the work of a task job (a failover) reports through.
pub struct JobHandle {
    jobs: Arc<Jobs>,
    entry: Arc<Entry>,
}

impl JobHandle {
    /// The job's id.
    pub fn id(&self) -> String {
        lock(&self.entry.job).id.clone()
    }

    /// Changes the job's record (saved and streamed to watchers).
    pub fn update(&self, f: impl FnOnce(&mut Job)) {
        self.jobs.update(&self.entry, f);
    }

    /// Whether cancelling was asked for.
    pub fn cancelled(&self) -> bool {
        self.entry.cancel.load(Ordering::SeqCst)
    }

    /// A token cancelled when the job is cancelled or the service stops.
    pub fn cancel_token(&self) -> CancellationToken {
        let token = self.jobs.shutdown.child_token();
        let entry = self.entry.clone();
        let linked = token.clone();
        let mut changes = entry.changed.subscribe();
        tokio::spawn(async move {
            loop {
                if entry.cancel.load(Ordering::SeqCst) {
                    linked.cancel();
                    return;
                }
                tokio::select! {
                    r = changes.changed() => if r.is_err() { return },
                    _ = linked.cancelled() => return,
                }
            }
        });
        token
    }

    /// Reports the progress of image work under way as the job's bytes.
    pub fn track(&self, progress: Option<Arc<RestoreProgress>>) {
        let at_start = self.entry.snapshot().bytes_done;
        *lock(&self.entry.live) = progress.map(|p| (p, Instant::now(), at_start));
        self.entry.changed.send_replace(());
    }
}

/// The holder of a restore job's lease.
fn lease_holder(job_id: &str) -> String {
    format!("restore-{job_id}")
}

/// Of `(id, created, prunable)`, the prunable ones beyond the `keep` newest prunable.
fn oldest_beyond(mut jobs: Vec<(String, String, bool)>, keep: usize) -> Vec<String> {
    jobs.retain(|j| j.2);
    // RFC 3339 times of one format sort as text; the id breaks ties.
    jobs.sort_by(|a, b| b.1.cmp(&a.1).then(b.0.cmp(&a.0)));
    jobs.into_iter().skip(keep).map(|j| j.0).collect()
}

/// A fresh id: a prefix and 64 random bits.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_oldest_prunable_jobs_beyond_the_limit_go() {
        let job = |id: &str, t: &str, prunable| (id.to_owned(), t.to_owned(), prunable);
        let jobs = vec![
            job("a", "2026-11-22T10:00:00Z", true),
            job("b", "2026-11-22T11:00:00Z", false),
            job("c", "2026-11-22T12:00:00Z", true),
            job("d", "2026-11-22T13:00:00Z", true),
            job("e", "2026-11-22T09:00:00Z", false),
        ];
        assert_eq!(oldest_beyond(jobs.clone(), 1), ["c", "a"]);
        assert_eq!(oldest_beyond(jobs.clone(), 3), Vec::<String>::new());
        assert_eq!(oldest_beyond(jobs, 0), ["d", "c", "a"]);
    }
}
