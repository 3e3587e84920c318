//! Warm replicas: continuous failover (CFO) and continuous failback (DESIGN.md section
//! 8). A replica is one raw image per disk under the recovery directory that follows
//! its domain's log: rehydrated once at the newest point, then moved forward by the
//! blocks of each new segment only, so that completing a failover costs what arrived
//! since the last look, not the size of the disks.
//!
//! Its record (DATA_DIR/replicas/DOMAIN.json) says which point the images hold
//! (`applied_seq`). Before the images change, the record names the point they move to
//! (`moving_to`). A crash in between leaves images that differ from the applied point
//! only in blocks changed between the two points, and moving from the applied point to
//! `moving_to` rewrites every one of those (`tidemark_rehydrator::update_image`), so a
//! restarted service finishes that move first and goes on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidemark_format::DomainRecord;
use tidemark_ingest::IngestContext;
use tidemark_pitr_index::{format_time, sync};
use tidemark_rehydrator::{restore_disk, update_image, RestoreOptions, RestoreProgress};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use super::error::{ApiError, ApiResult, ErrorDetail};
use super::leases::Leases;
use super::metrics::Metrics;
use super::records::Records;

/// Which way a replica follows the log.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaDirection {
    /// Continuous failover: a recovery site follows the protected site.
    Failover,
    /// Continuous failback: the original site follows the site it failed over to.
    Failback,
}

/// Where a replica is in its life.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaState {
    /// Rehydrating the images at the newest point for the first time.
    Seeding,
    /// Applying new segments as they arrive.
    Following,
    /// Held at a point (after a rollback) until resumed.
    Paused,
    /// A failover completed on it: the images are final and no longer follow the log.
    Completed,
}

/// One image of a replica.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ReplicaDisk {
    /// Disk name in the domain.
    pub disk: String,
    /// The image file.
    pub path: String,
    /// Whether seeding has written it completely.
    pub ready: bool,
}

/// A replica as stored.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ReplicaRecord {
    /// The domain followed.
    pub domain: String,
    /// CFO or continuous failback.
    pub direction: ReplicaDirection,
    /// Where it is.
    pub state: ReplicaState,
    /// The directory of its images.
    pub dir: String,
    /// Its images.
    pub disks: Vec<ReplicaDisk>,
    /// The point every image holds (none while seeding).
    pub applied_seq: Option<u64>,
    /// The point the images are being moved to (or seeded at).
    pub moving_to: Option<u64>,
    /// When it was started (RFC 3339).
    pub created: String,
    /// When a failover completed on it (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed: Option<String>,
    /// The last error met while following; it retries with backoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<ErrorDetail>,
}

/// A replica and how far behind the log it is.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ReplicaStatus {
    /// The replica.
    #[serde(flatten)]
    pub record: ReplicaRecord,
    /// Time of the applied point (RFC 3339).
    pub applied_time: Option<String>,
    /// The newest point this site has indexed.
    pub newest_seq: Option<u64>,
    /// Age of the oldest indexed point not yet applied; 0 when caught up.
    pub lag_seconds: f64,
    /// Indexed points not yet applied.
    pub lag_segments: u64,
    /// Bytes of blocks written after the applied point (by those points, and by the
    /// segments GC merged or demoted in between).
    pub lag_bytes: u64,
    /// Seeding progress: bytes written of bytes needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed_progress: Option<(u64, u64)>,
}

/// A replica being tracked: its record and its follower.
struct Handle {
    record: Mutex<ReplicaRecord>,
    /// Serialises halting, resuming, rollback and failover of this replica.
    ops: Arc<tokio::sync::Mutex<()>>,
    follower: Mutex<Option<(CancellationToken, JoinHandle<()>)>>,
    /// Progress of the image work under way.
    live: Mutex<Option<Arc<RestoreProgress>>>,
}

/// Runs `work` (a restore or an update reporting to `progress`) and asks it to stop
/// when `stop` is cancelled; it then ends at its next range with `Cancelled`, leaving
/// what a later run goes on from.
async fn until_stopped<T>(
    stop: &CancellationToken,
    progress: &RestoreProgress,
    work: impl std::future::Future<Output = T>,
) -> T {
    let mut work = std::pin::pin!(work);
    let mut asked = false;
    loop {
        tokio::select! {
            r = &mut work => return r,
            _ = stop.cancelled(), if !asked => {
                progress.cancelled.store(true, Ordering::SeqCst);
                asked = true;
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Handle {
    fn new(record: ReplicaRecord) -> Arc<Handle> {
        Arc::new(Handle {
            record: Mutex::new(record),
            ops: Arc::new(tokio::sync::Mutex::new(())),
            follower: Mutex::new(None),
            live: Mutex::new(None),
        })
    }

    fn snapshot(&self) -> ReplicaRecord {
        lock(&self.record).clone()
    }
}

/// Exclusive use of a halted replica's images, for a failover or a rollback. Dropping
/// it lets the replica be resumed or halted again.
pub struct HeldReplica {
    handle: Arc<Handle>,
    /// Whether it was following (or seeding) when it was halted.
    was_following: bool,
    _ops: tokio::sync::OwnedMutexGuard<()>,
}

impl HeldReplica {
    /// The replica's record.
    pub fn record(&self) -> ReplicaRecord {
        self.handle.snapshot()
    }
}

/// The warm replicas of this site.
pub struct Replicas {
    records: Records,
    ctx: IngestContext,
    metrics: Arc<Metrics>,
    opts: RestoreOptions,
    poll: Duration,
    table: Mutex<BTreeMap<String, Arc<Handle>>>,
    shutdown: CancellationToken,
    leases: Arc<Leases>,
}

/// The holder of a replica's lease (one replica per domain and site).
const LEASE_HOLDER: &str = "replica";

impl Replicas {
    /// Loads the replicas of DATA_DIR/replicas and starts following the live ones.
    pub fn open(
        dir: &Path,
        ctx: IngestContext,
        metrics: Arc<Metrics>,
        opts: RestoreOptions,
        poll: Duration,
        leases: Arc<Leases>,
    ) -> anyhow::Result<Arc<Replicas>> {
        let this = Arc::new(Replicas {
            records: Records::open(dir)?,
            ctx,
            metrics,
            opts: RestoreOptions {
                resume: true,
                ..opts
            },
            poll,
            table: Mutex::new(BTreeMap::new()),
            shutdown: CancellationToken::new(),
            leases,
        });
        for rec in this.records.load::<ReplicaRecord>()? {
            this.hold_points(&rec);
            let live = matches!(rec.state, ReplicaState::Seeding | ReplicaState::Following);
            let domain = rec.domain.clone();
            let handle = Handle::new(rec);
            lock(&this.table).insert(domain.clone(), handle.clone());
            if live {
                tracing::info!(domain = %domain, "resuming replica");
                this.spawn_follower(&handle);
            }
        }
        Ok(this)
    }

    fn handle(&self, domain: &str) -> ApiResult<Arc<Handle>> {
        lock(&self.table)
            .get(domain)
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("domain {domain} has no replica here")))
    }

    fn save(&self, h: &Handle, f: impl FnOnce(&mut ReplicaRecord)) -> ApiResult<ReplicaRecord> {
        let rec = {
            let mut rec = lock(&h.record);
            f(&mut rec);
            rec.clone()
        };
        self.records
            .save(&rec.domain, &rec)
            .map_err(|e| ApiError::internal(format!("cannot record the replica: {e}")))?;
        self.hold_points(&rec);
        Ok(rec)
    }

    /// Keeps the lease of a replica on the points it reads: from the lower of the
    /// applied point and the one its images move to, onwards (it follows the log);
    /// none once completed, its images then read nothing more.
    fn hold_points(&self, rec: &ReplicaRecord) {
        let from = [rec.applied_seq, rec.moving_to].into_iter().flatten().min();
        match from {
            Some(seq) if rec.state != ReplicaState::Completed => {
                self.leases.set(&rec.domain, LEASE_HOLDER, seq, true)
            }
            _ => self.leases.clear(&rec.domain, LEASE_HOLDER),
        }
    }

    /// Starts a replica of `domain` with images in `dir`; without `follow` it only
    /// exists for a failover to seed (the images of a failover without a warm replica).
    /// A completed replica of the domain is replaced (its images stay where they are
    /// unless `dir` is the same).
    pub fn start(
        self: &Arc<Self>,
        domain: &DomainRecord,
        direction: ReplicaDirection,
        dir: PathBuf,
        follow: bool,
    ) -> ApiResult<ReplicaStatus> {
        let name = domain.name.clone();
        let record = ReplicaRecord {
            domain: name.clone(),
            direction,
            state: ReplicaState::Seeding,
            dir: dir.display().to_string(),
            disks: domain
                .disks
                .iter()
                .map(|d| ReplicaDisk {
                    disk: d.name.clone(),
                    path: dir.join(format!("{}.img", d.name)).display().to_string(),
                    ready: false,
                })
                .collect(),
            applied_seq: None,
            moving_to: None,
            created: format_time(tidemark_ingest::now_ns()),
            completed: None,
            last_error: None,
        };
        let handle = {
            let mut table = lock(&self.table);
            if let Some(old) = table.get(&name) {
                let old = old.snapshot();
                if old.state != ReplicaState::Completed {
                    return Err(ApiError::conflict(format!(
                        "domain {name} already has a replica here ({:?}); stop it first",
                        old.state
                    )));
                }
            }
            let replaced = table.get(&name).map(|h| h.snapshot());
            for d in &record.disks {
                let owned_by_replaced = replaced
                    .as_ref()
                    .is_some_and(|r| r.disks.iter().any(|o| o.path == d.path));
                if Path::new(&d.path).exists() && !owned_by_replaced {
                    return Err(ApiError::conflict(format!(
                        "{} exists; choose another directory",
                        d.path
                    )));
                }
            }
            std::fs::create_dir_all(&dir)
                .map_err(|e| ApiError::internal(format!("cannot create {}: {e}", dir.display())))?;
            self.records
                .save(&name, &record)
                .map_err(|e| ApiError::internal(format!("cannot record the replica: {e}")))?;
            let handle = Handle::new(record);
            table.insert(name.clone(), handle.clone());
            handle
        };
        if follow {
            self.spawn_follower(&handle);
        }
        self.status(&name)
    }

    /// The replica of `domain`, with its lag.
    pub fn status(&self, domain: &str) -> ApiResult<ReplicaStatus> {
        let h = self.handle(domain)?;
        self.describe(&h)
    }

    /// Every replica of this site.
    pub fn list(&self) -> Vec<ReplicaStatus> {
        let handles: Vec<_> = lock(&self.table).values().cloned().collect();
        handles
            .iter()
            .filter_map(|h| self.describe(h).ok())
            .collect()
    }

    /// The replica of `domain`, if any (for the domain's mode).
    pub fn find(&self, domain: &str) -> Option<ReplicaRecord> {
        lock(&self.table).get(domain).map(|h| h.snapshot())
    }

    fn describe(&self, h: &Handle) -> ApiResult<ReplicaStatus> {
        let record = h.snapshot();
        let index = &self.ctx.index;
        let newest = index.last_seq(&record.domain)?;
        let applied_time = match record.applied_seq {
            Some(s) => index
                .segment(&record.domain, s)?
                .map(|m| format_time(m.time_end)),
            None => None,
        };
        let (mut lag_seconds, mut lag_segments, mut lag_bytes) = (0.0, 0, 0);
        let following = matches!(
            record.state,
            ReplicaState::Following | ReplicaState::Seeding
        );
        if let (true, Some(newest)) = (following, newest) {
            let from = record.applied_seq.map_or(1, |a| a + 1);
            if newest >= from {
                // What GC merged or demoted is no point, but its blocks are still to
                // apply.
                let behind = index.segments(&record.domain, from..=newest)?;
                lag_segments = behind.iter().filter(|m| m.is_point()).count() as u64;
                lag_bytes = behind.iter().map(|m| m.logical_bytes()).sum();
                if let Some(first) = behind.iter().find(|m| m.is_point()) {
                    lag_seconds = (tidemark_ingest::now_ns() - first.time_end).max(0) as f64 / 1e9;
                }
            }
        }
        let seed_progress = (record.state == ReplicaState::Seeding)
            .then(|| lock(&h.live).clone())
            .flatten()
            .map(|p| {
                (
                    p.done_bytes.load(Ordering::Relaxed),
                    p.total_bytes.load(Ordering::Relaxed),
                )
            });
        Ok(ReplicaStatus {
            record,
            applied_time,
            newest_seq: newest,
            lag_seconds,
            lag_segments,
            lag_bytes,
            seed_progress,
        })
    }

    fn spawn_follower(self: &Arc<Self>, h: &Arc<Handle>) {
        let stop = self.shutdown.child_token();
        let this = self.clone();
        let handle = h.clone();
        let token = stop.clone();
        let task = tokio::spawn(async move { this.follow(&handle, token).await });
        *lock(&h.follower) = Some((stop, task));
    }

    /// Stops the follower of `h` (cancelling a seeding restore, which resumes later;
    /// an apply in flight finishes) and waits for it.
    async fn halt(&self, h: &Handle) {
        let follower = lock(&h.follower).take();
        if let Some((stop, task)) = follower {
            stop.cancel();
            if h.snapshot().state == ReplicaState::Seeding {
                if let Some(p) = lock(&h.live).as_ref() {
                    p.cancelled.store(true, Ordering::SeqCst);
                }
            }
            let _ = task.await;
        }
    }

    async fn follow(&self, h: &Handle, stop: CancellationToken) {
        let mut wait = self.poll;
        loop {
            if stop.is_cancelled() {
                return;
            }
            match self.step(h, &stop).await {
                Ok(true) => {
                    wait = self.poll;
                    continue;
                }
                Ok(false) => wait = self.poll,
                Err(e) => {
                    if stop.is_cancelled() {
                        return;
                    }
                    let domain = h.snapshot().domain;
                    tracing::warn!(domain = %domain, "replica: {}", e.message);
                    let detail = ErrorDetail {
                        code: e.code.to_owned(),
                        message: e.message,
                    };
                    let _ = self.save(h, |r| r.last_error = Some(detail));
                    wait = (wait * 2).min(Duration::from_secs(30));
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    /// One look at the log: seed, or apply what arrived. True if the images moved.
    async fn step(&self, h: &Handle, stop: &CancellationToken) -> ApiResult<bool> {
        let rec = h.snapshot();
        let domain = self.catch_up(&rec.domain).await?;
        let moved = match rec.state {
            ReplicaState::Seeding => self.seed(h, &domain, stop).await?,
            ReplicaState::Following => match self.ctx.index.last_seq(&rec.domain)? {
                Some(newest) if Some(newest) != rec.applied_seq => {
                    // Only a stopping service interrupts an apply: halting a replica
                    // lets the apply in flight finish, so a failover sees whole points.
                    self.bring_to(h, newest, &self.shutdown).await?;
                    true
                }
                _ => false,
            },
            ReplicaState::Paused | ReplicaState::Completed => false,
        };
        if moved && h.snapshot().last_error.is_some() {
            self.save(h, |r| r.last_error = None)?;
        }
        Ok(moved)
    }

    /// Indexes what the domain's owner committed since the last look.
    pub async fn catch_up(&self, domain: &str) -> ApiResult<DomainRecord> {
        let rec = tidemark_ingest::domain::open_domain(&self.ctx, domain).await?;
        let _lock = self.ctx.index.lock_commits(domain).await;
        sync::catch_up(&self.ctx.store, &self.ctx.index, &rec).await?;
        Ok(rec)
    }

    /// Rehydrates every image at the newest point; resumable. False if the domain has
    /// no point yet.
    async fn seed(
        &self,
        h: &Handle,
        domain: &DomainRecord,
        stop: &CancellationToken,
    ) -> ApiResult<bool> {
        let rec = h.snapshot();
        let seq = match rec.moving_to {
            Some(s) => s,
            None => match self.ctx.index.last_seq(&domain.name)? {
                Some(s) => {
                    self.save(h, |r| r.moving_to = Some(s))?;
                    s
                }
                None => return Ok(false),
            },
        };
        for (i, d) in rec.disks.iter().enumerate() {
            if d.ready {
                continue;
            }
            // Installed before `stop` is looked at, so a halt in between reaches it.
            let progress = Arc::new(RestoreProgress::default());
            *lock(&h.live) = Some(progress.clone());
            let report = until_stopped(
                stop,
                &progress,
                restore_disk(
                    &self.ctx.store,
                    &self.ctx.index,
                    &domain.name,
                    &d.disk,
                    seq,
                    Path::new(&d.path),
                    &self.opts,
                    progress.clone(),
                ),
            )
            .await?;
            self.metrics
                .restored(report.data_bytes.saturating_sub(report.resumed_bytes));
            self.save(h, |r| r.disks[i].ready = true)?;
        }
        *lock(&h.live) = None;
        self.save(h, |r| {
            r.applied_seq = Some(seq);
            r.moving_to = None;
            r.state = ReplicaState::Following;
        })?;
        tracing::info!(domain = %domain.name, seq, "replica seeded");
        Ok(true)
    }

    /// Moves every image to point `to`: first finishes a move a crash interrupted,
    /// then moves from the applied point. The record names the target before the
    /// images change and the new point once every image is synced.
    async fn bring_to(&self, h: &Handle, to: u64, stop: &CancellationToken) -> ApiResult<()> {
        let rec = h.snapshot();
        let Some(mut applied) = rec.applied_seq else {
            return Err(ApiError::conflict(format!(
                "the replica of {} is still seeding",
                rec.domain
            )));
        };
        let mut targets = Vec::new();
        if let Some(pending) = rec.moving_to {
            targets.push(pending);
        }
        targets.push(to);
        for target in targets {
            if target == applied {
                continue;
            }
            self.save(h, |r| r.moving_to = Some(target))?;
            for d in &rec.disks {
                let progress = Arc::new(RestoreProgress::default());
                *lock(&h.live) = Some(progress.clone());
                let report = until_stopped(
                    stop,
                    &progress,
                    update_image(
                        &self.ctx.store,
                        &self.ctx.index,
                        &rec.domain,
                        &d.disk,
                        Path::new(&d.path),
                        applied,
                        target,
                        &self.opts,
                        progress.clone(),
                    ),
                )
                .await?;
                self.metrics.restored(report.data_bytes);
            }
            *lock(&h.live) = None;
            self.save(h, |r| {
                r.applied_seq = Some(target);
                r.moving_to = None;
            })?;
            applied = target;
        }
        Ok(())
    }

    /// Halts the replica of `domain` and holds it for a failover or a rollback.
    pub async fn hold(&self, domain: &str) -> ApiResult<HeldReplica> {
        let handle = self.handle(domain)?;
        let ops = handle.ops.clone().lock_owned().await;
        let was_following = lock(&handle.follower).is_some();
        self.halt(&handle).await;
        Ok(HeldReplica {
            handle,
            was_following,
            _ops: ops,
        })
    }

    /// Makes a held replica's images hold point `to` (seeding them at `to` if they were
    /// never complete); `stop` (a cancelled job, a stopping service) interrupts it where
    /// it can go on later.
    pub async fn move_held(
        &self,
        held: &HeldReplica,
        to: u64,
        stop: &CancellationToken,
    ) -> ApiResult<()> {
        let h = &held.handle;
        if h.snapshot().state == ReplicaState::Seeding {
            let domain = self.catch_up(&h.snapshot().domain).await?;
            if h.snapshot().moving_to.is_none() {
                self.save(h, |r| r.moving_to = Some(to))?;
            }
            self.seed(h, &domain, stop).await?;
        }
        self.bring_to(h, to, stop).await
    }

    /// Lets a held replica follow again if it was following when held, and lets go
    /// of it; done under its operation lock, so a rollback waiting for the replica
    /// sees it following and pauses it.
    pub fn release_following(self: &Arc<Self>, held: HeldReplica) {
        let state = held.handle.snapshot().state;
        if held.was_following
            && matches!(state, ReplicaState::Following | ReplicaState::Seeding)
            && lock(&held.handle.follower).is_none()
        {
            self.spawn_follower(&held.handle);
        }
    }

    /// Marks a held replica completed: its images are final.
    pub fn complete_held(&self, held: &HeldReplica) -> ApiResult<ReplicaRecord> {
        self.save(&held.handle, |r| {
            r.state = ReplicaState::Completed;
            r.completed = Some(format_time(tidemark_ingest::now_ns()));
        })
    }

    /// Resumes following after a rollback (or a failed failover).
    pub async fn resume(self: &Arc<Self>, domain: &str) -> ApiResult<ReplicaStatus> {
        let h = self.handle(domain)?;
        let _ops = h.ops.lock().await;
        let rec = h.snapshot();
        match rec.state {
            ReplicaState::Completed => {
                return Err(ApiError::conflict(format!(
                    "the replica of {domain} completed a failover; start a new one"
                )))
            }
            ReplicaState::Paused => {
                self.save(&h, |r| r.state = ReplicaState::Following)?;
            }
            ReplicaState::Seeding | ReplicaState::Following => {}
        }
        if lock(&h.follower).is_none() {
            self.spawn_follower(&h);
        }
        self.describe(&h)
    }

    /// Moves the replica to an earlier (or later) point and holds it there, paused.
    pub async fn rollback(&self, domain: &str, to: u64) -> ApiResult<ReplicaStatus> {
        let held = self.hold(domain).await?;
        let state = held.record().state;
        if state == ReplicaState::Completed {
            return Err(ApiError::conflict(format!(
                "the replica of {domain} completed a failover; its images are final"
            )));
        }
        if state == ReplicaState::Following {
            // Paused before the images move: a restart in the middle must not let the
            // follower finish the move and roll on past the point.
            self.save(&held.handle, |r| r.state = ReplicaState::Paused)?;
        }
        self.move_held(&held, to, &self.shutdown).await?;
        self.save(&held.handle, |r| r.state = ReplicaState::Paused)?;
        self.describe(&held.handle)
    }

    /// Stops and forgets the replica of `domain`. The images of a replica that still
    /// follows are removed (the bucket has them); a completed failover's images are
    /// production disks and stay.
    pub async fn remove(&self, domain: &str) -> ApiResult<ReplicaRecord> {
        let held = self.hold(domain).await?;
        let rec = held.record();
        if rec.state != ReplicaState::Completed {
            for d in &rec.disks {
                tidemark_rehydrator::discard_partial(Path::new(&d.path));
                match std::fs::remove_file(&d.path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(ApiError::internal(format!("cannot remove {}: {e}", d.path)))
                    }
                    _ => {}
                }
            }
            // Only if empty: the directory may hold files that are not ours.
            let _ = std::fs::remove_dir(&rec.dir);
        }
        lock(&self.table).remove(domain);
        self.leases.clear(domain, LEASE_HOLDER);
        self.records
            .remove(domain)
            .map_err(|e| ApiError::internal(format!("cannot forget the replica: {e}")))?;
        Ok(rec)
    }

    /// Stops every follower; applies in flight stop where the next start finishes them.
    pub async fn shut_down(&self) {
        self.shutdown.cancel();
        let handles: Vec<_> = lock(&self.table).values().cloned().collect();
        for h in &handles {
            if let Some(p) = lock(&h.live).as_ref() {
                p.cancelled.store(true, Ordering::SeqCst);
            }
        }
        for h in handles {
            self.halt(&h).await;
        }
    }
}
