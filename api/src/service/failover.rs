//! Failover (DESIGN.md sections 1, 6 and 8; the modes are the field's, see
//! shared/seeds): bring a domain's disks up at this site at a chosen point and, except
//! for a test, make this site the domain's owner.
//!
//! - `regular`: index what the primary committed, take ownership (the fence), bring
//!   the images to the point (a warm replica applies its queue; otherwise a restore).
//! - `planned`: first the primary is told to commit what it holds and stop taking
//!   writes (its data stays), so nothing acknowledged is left behind; optionally the
//!   primary then starts following the log back (continuous failback).
//! - `forced`: the primary is assumed gone: take ownership at once; its writes are
//!   fenced from then on.
//! - `test`: an isolated copy at the point, no change of ownership; deleting the test
//!   copy undoes it.
//!
//! When the images come up at a point older than the log's head, one more point is
//! committed after the fence setting the blocks changed since back to the images'
//! state, so the log and the images agree before the new owner writes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tidemark_format::{DomainRecord, Marker};
use tidemark_ingest::ImageBlocks;
use tidemark_pitr_index::{format_time, PointSpec};
use tidemark_rehydrator::{clone_image, restore_disk, update_image, RestoreProgress};
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use super::error::{ApiError, ApiResult};
use super::jobs::{new_id, Job, JobHandle, JobKind, JobSpec};
use super::replicas::{HeldReplica, ReplicaDirection, ReplicaDisk, ReplicaState};
use super::runbook::{self, RunContext, Runbook, RunbookStep};
use super::test_copies::TestCopyRecord;
use super::Service;
use crate::client::Client;

/// How the failover treats the protected site.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailoverMode {
    /// Index what was committed, take ownership, bring the images to the point.
    Regular,
    /// The primary commits and stops first; nothing acknowledged is lost.
    Planned,
    /// Take ownership at once; the primary's later writes are fenced.
    Forced,
    /// An isolated copy at the point; ownership does not change.
    Test,
}

impl FailoverMode {
    fn as_str(self) -> &'static str {
        match self {
            FailoverMode::Regular => "regular",
            FailoverMode::Planned => "planned",
            FailoverMode::Forced => "forced",
            FailoverMode::Test => "test",
        }
    }
}

/// What a warm replica does with the points it has not applied yet.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Queue {
    /// Apply everything committed (the newest point).
    #[default]
    Apply,
    /// Stop at what is already applied: fail over at once.
    Discard,
}

/// The protected site's service, for a planned failover.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PrimarySite {
    /// Its base URL (http://host:port).
    pub url: String,
    /// A write token of that service (never stored or logged).
    #[serde(default, skip_serializing)]
    pub token: Option<String>,
}

/// Continuous failback started at the primary after a planned failover.
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailbackRequest {
    /// Directory of the failback replica's images, relative to the primary's recovery
    /// directory; default `replicas/DOMAIN`.
    #[serde(default)]
    pub dir: Option<String>,
}

/// A failover request.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailoverRequest {
    /// regular, planned, forced or test.
    pub mode: FailoverMode,
    /// `latest` (default), `last-good`, a seq, `marker:NAME` or an RFC 3339 time.
    #[serde(default)]
    pub point: Option<String>,
    /// With a warm replica: apply (default) or discard what it has not applied. A
    /// point other than `latest` overrides it.
    #[serde(default)]
    pub queue: Queue,
    /// Without a warm replica: where the images go, relative to the recovery
    /// directory; default `failover/DOMAIN`.
    #[serde(default)]
    pub dir: Option<String>,
    /// Planned: the primary's service, told to commit and stop first.
    #[serde(default)]
    pub primary: Option<PrimarySite>,
    /// Planned: have the primary follow the log back (continuous failback).
    #[serde(default)]
    pub failback: Option<FailbackRequest>,
    /// VMs to bring up once the images are ready, in boot order.
    #[serde(default)]
    pub runbook: Option<Runbook>,
}

/// Where a step of a failover is.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailoverStepState {
    /// Under way.
    Running,
    /// Done.
    Succeeded,
    /// Stopped the failover.
    Failed,
}

/// One step of a failover.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct FailoverStep {
    /// release_primary, catch_up, take_over, images, revert, failback, runbook.
    pub name: String,
    /// Where it is.
    pub state: FailoverStepState,
    /// What it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Milliseconds it took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

/// One image a failover brought up.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct FailoverImage {
    /// Disk name.
    pub disk: String,
    /// The image file.
    pub path: String,
}

/// What a failover job did, step by step.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct FailoverReport {
    /// The mode.
    pub mode: FailoverMode,
    /// The queue choice.
    pub queue: Queue,
    /// The point asked for.
    pub point: String,
    /// The primary of a planned failover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<String>,
    /// Steps so far.
    pub steps: Vec<FailoverStep>,
    /// The ownership generation taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// The fence point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence_seq: Option<u64>,
    /// The point committed to make the log agree with older images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert_seq: Option<u64>,
    /// Whether a warm replica's images were used.
    pub from_replica: bool,
    /// The images, ready once the `images` step succeeded.
    pub images: Vec<FailoverImage>,
    /// Seconds from the request to images ready and ownership taken (the RTO).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto_seconds: Option<f64>,
    /// The test copy a test failover made (delete it to undo the test).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_copy: Option<String>,
    /// The runbook's steps.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runbook: Vec<RunbookStep>,
}

/// Checks a request and starts its job. Everything that can be checked is checked
/// here, before the job fences or releases anything.
pub async fn start(
    svc: &Arc<Service>,
    domain: DomainRecord,
    mut req: FailoverRequest,
) -> ApiResult<Job> {
    let point = req.point.clone().unwrap_or_else(|| "latest".into());
    let spec: PointSpec = point.parse().map_err(ApiError::invalid)?;
    if spec != PointSpec::Latest {
        // A mistyped marker must fail now, not after the primary was fenced.
        svc.replicas.catch_up(&domain.name).await?;
        svc.index.resolve_point(&domain.name, &spec)?;
    }
    match (req.mode, &req.primary, &req.failback) {
        (FailoverMode::Planned, None, _) => {
            return Err(ApiError::invalid(
                "a planned failover needs `primary`: the service of the protected site",
            ))
        }
        (FailoverMode::Planned, Some(p), _)
            if !p.url.starts_with("http://") && !p.url.starts_with("https://") =>
        {
            return Err(ApiError::invalid(format!(
                "primary.url {:?}: expected http://HOST:PORT",
                p.url
            )))
        }
        (FailoverMode::Planned, Some(_), _) => {}
        (_, Some(_), _) | (_, _, Some(_)) => {
            return Err(ApiError::invalid(
                "`primary` and `failback` belong to planned failovers only",
            ))
        }
        _ => {}
    }
    if let Some(rb) = &req.runbook {
        let disks: Vec<String> = domain.disks.iter().map(|d| d.name.clone()).collect();
        rb.validate(&disks, &svc.config.hooks_dir())
            .map_err(|e| ApiError::invalid(format!("runbook: {e}")))?;
    }
    let replica = svc
        .replicas
        .find(&domain.name)
        .filter(|r| r.state != ReplicaState::Completed);
    if replica.is_some() && req.dir.is_some() && req.mode != FailoverMode::Test {
        return Err(ApiError::invalid(
            "the domain has a warm replica here: its images are the failover's; drop `dir`",
        ));
    }
    let images_dir = match (&replica, req.mode) {
        (Some(r), m) if m != FailoverMode::Test => PathBuf::from(&r.dir),
        (_, FailoverMode::Test) => PathBuf::new(),
        _ => {
            let rel = req
                .dir
                .clone()
                .unwrap_or_else(|| format!("failover/{}", domain.name));
            let dir = svc.recovery.target(&rel)?;
            for d in &domain.disks {
                let path = dir.join(format!("{}.img", d.name));
                if path.exists() {
                    return Err(ApiError::conflict(format!(
                        "{} exists; choose another `dir`",
                        path.display()
                    )));
                }
            }
            dir
        }
    };
    let test_copy = (req.mode == FailoverMode::Test).then(|| new_id("tc"));
    let primary_token = req.primary.as_mut().and_then(|p| p.token.take());
    let report = FailoverReport {
        mode: req.mode,
        queue: req.queue,
        point: spec.to_string(),
        primary: req.primary.as_ref().map(|p| p.url.clone()),
        steps: Vec::new(),
        generation: None,
        fence_seq: None,
        revert_seq: None,
        from_replica: replica.is_some(),
        images: Vec::new(),
        rto_seconds: None,
        test_copy: test_copy.clone(),
        runbook: Vec::new(),
    };
    let svc = svc.clone();
    svc.jobs.clone().start_task(
        JobSpec {
            kind: JobKind::Failover,
            domain: domain.name.clone(),
            seq: 0,
            disks: Vec::new(),
            test_copy: test_copy.clone(),
            failover: Some(report),
        },
        move |h| async move {
            let run = Run {
                svc,
                h,
                domain,
                spec,
                req,
                primary_token,
                images_dir,
                test_copy,
                started: Instant::now(),
            };
            run.run().await
        },
    )
}

/// One failover under way.
struct Run {
    svc: Arc<Service>,
    h: JobHandle,
    domain: DomainRecord,
    spec: PointSpec,
    req: FailoverRequest,
    primary_token: Option<String>,
    images_dir: PathBuf,
    test_copy: Option<String>,
    started: Instant,
}

impl Run {
    fn report(&self, f: impl FnOnce(&mut FailoverReport)) {
        self.h.update(|j| {
            if let Some(r) = j.failover.as_mut() {
                f(r);
            }
        });
    }

    /// Runs `work` as the step `name`, recording its outcome and duration.
    async fn step<T>(
        &self,
        name: &str,
        work: impl std::future::Future<Output = ApiResult<(T, String)>>,
    ) -> ApiResult<T> {
        let t0 = Instant::now();
        self.report(|r| {
            r.steps.push(FailoverStep {
                name: name.to_owned(),
                state: FailoverStepState::Running,
                detail: None,
                duration_ms: None,
            })
        });
        let result = work.await;
        let ms = t0.elapsed().as_millis() as u64;
        self.report(|r| {
            if let Some(s) = r.steps.last_mut() {
                s.duration_ms = Some(ms);
                match &result {
                    Ok((_, detail)) => {
                        s.state = FailoverStepState::Succeeded;
                        s.detail = Some(detail.clone());
                    }
                    Err(e) => {
                        s.state = FailoverStepState::Failed;
                        s.detail = Some(e.message.clone());
                    }
                }
            }
        });
        result.map(|(t, _)| t).map_err(|e| ApiError {
            message: format!("{name}: {}", e.message),
            ..e
        })
    }

    fn check_cancelled(&self) -> ApiResult<()> {
        if self.h.cancelled() {
            return Err(ApiError::conflict("cancelled"));
        }
        Ok(())
    }

    async fn run(self) -> ApiResult<()> {
        let cancel = self.h.cancel_token();
        let _unlink = cancel.clone().drop_guard();
        if self.req.mode == FailoverMode::Test {
            let images = match self.test(&cancel).await {
                Ok(images) => images,
                Err(e) => {
                    self.forget_test_copy();
                    return Err(e);
                }
            };
            return self.runbook(&images, &cancel).await;
        }
        let (images, failback) = self.take_over(&cancel).await?;
        // The images are up and this site owns the domain: the VMs start even if the
        // primary could not be asked to follow back.
        self.runbook(&images, &cancel).await?;
        failback
    }

    /// Removes what a failed test failover made.
    fn forget_test_copy(&self) {
        let Some(id) = &self.test_copy else { return };
        if let Ok(dir) = self.svc.recovery.target(&format!("test-copies/{id}")) {
            let _ = std::fs::remove_dir_all(dir);
        }
        let _ = self.svc.test_copies.remove(id);
    }

    /// Regular, planned and forced failover. Returns the images and the point, and
    /// how asking the primary to follow back went (reported after the runbook).
    async fn take_over(
        &self,
        cancel: &CancellationToken,
    ) -> ApiResult<((Vec<FailoverImage>, u64), ApiResult<()>)> {
        let name = self.domain.name.clone();
        let svc = &self.svc;
        let primary = match (&self.req.primary, self.req.mode) {
            (Some(p), FailoverMode::Planned) => Some(
                Client::with_timeout(
                    &p.url,
                    self.primary_token.as_deref(),
                    Duration::from_secs(30),
                )
                .map_err(|e| ApiError::invalid(e.to_string()))?,
            ),
            _ => None,
        };
        if let Some(primary) = &primary {
            let last = self
                .step("release_primary", async {
                    let r: Released = primary
                        .post(
                            &format!("/v1/domains/{name}/release"),
                            &serde_json::json!({}),
                        )
                        .await
                        .map_err(|e| ApiError::unavailable(format!("the primary: {e}")))?;
                    let detail = format!("the primary's last point is {:?}", r.last_seq);
                    Ok((r.last_seq, detail))
                })
                .await?;
            self.step("catch_up", self.catch_up_to(last))
                .await
                .map_err(|e| ApiError {
                    message: format!(
                        "{} (the primary stays released: POST take-over there to resume it)",
                        e.message
                    ),
                    ..e
                })?;
        } else if self.req.mode == FailoverMode::Regular {
            self.step("catch_up", self.catch_up_to(None)).await?;
        }
        self.check_cancelled()?;
        // Without a warm replica the images are a replica that never follows: seeding
        // it is the restore, resumable, and a failover that fails after taking
        // ownership finds it and can run again.
        if svc
            .replicas
            .find(&name)
            .is_none_or(|r| r.state == ReplicaState::Completed)
        {
            svc.replicas.start(
                &self.domain,
                ReplicaDirection::Failover,
                self.images_dir.clone(),
                false,
            )?;
        }
        let held = svc.replicas.hold(&name).await?;
        let result = self.take_over_held(&held, primary.as_ref(), cancel).await;
        match result {
            Ok(r) => Ok(r),
            Err(e) => {
                // Replication goes on where it was going on.
                svc.replicas.release_following(held);
                Err(e)
            }
        }
    }

    async fn take_over_held(
        &self,
        held: &HeldReplica,
        primary: Option<&Client>,
        cancel: &CancellationToken,
    ) -> ApiResult<((Vec<FailoverImage>, u64), ApiResult<()>)> {
        let name = self.domain.name.clone();
        let svc = &self.svc;
        self.check_cancelled()?;
        let (generation, fence) = self
            .step("take_over", async {
                let (g, fence) = svc.pipes.take_over(&name, None).await?;
                Ok((
                    (g, fence.seq),
                    format!("generation {g}, fence at seq {}", fence.seq),
                ))
            })
            .await?;
        self.report(|r| {
            r.generation = Some(generation);
            r.fence_seq = Some(fence);
        });
        let at = match (&self.spec, self.req.queue, held.record().applied_seq) {
            (PointSpec::Latest, Queue::Discard, Some(applied)) => applied,
            _ => svc.index.resolve_point(&name, &self.spec)?,
        };
        self.h.update(|j| {
            j.seq = at;
            j.point_time = svc
                .index
                .segment(&name, at)
                .ok()
                .flatten()
                .map(|m| format_time(m.time_end))
                .unwrap_or_default();
        });
        let images = self
            .step("images", async {
                let from = held.record().applied_seq;
                svc.replicas.move_held(held, at, cancel).await?;
                let detail = match from {
                    Some(f) => format!("replica moved from seq {f} to {at}"),
                    None => format!("restored at seq {at}"),
                };
                Ok((image_list(&held.record().disks), detail))
            })
            .await?;
        if at < fence {
            let revert = self
                .step("revert", async {
                    let mut disks = Vec::new();
                    for (i, img) in images.iter().enumerate() {
                        let blocks = svc.index.changed_blocks(&name, i as u32, at, fence)?;
                        if !blocks.is_empty() {
                            disks.push(ImageBlocks {
                                disk: i as u32,
                                image: PathBuf::from(&img.path),
                                blocks,
                            });
                        }
                    }
                    if disks.is_empty() {
                        return Ok((None, format!("nothing changed after seq {at}")));
                    }
                    let marker = Marker {
                        name: "failover-revert".into(),
                        known_good: false,
                    };
                    let p = svc
                        .pipes
                        .commit_image_blocks(&name, disks, vec![marker])
                        .await?;
                    Ok((
                        Some(p.seq),
                        format!("seq {} sets the blocks changed after seq {at} back", p.seq),
                    ))
                })
                .await?;
            self.report(|r| r.revert_seq = revert);
        }
        svc.replicas.complete_held(held)?;
        let rto = self.started.elapsed().as_secs_f64();
        let listed = images.clone();
        self.report(|r| {
            r.images = listed;
            r.rto_seconds = Some(rto);
        });
        let mut failback = Ok(());
        if let (Some(primary), Some(fb)) = (primary, &self.req.failback) {
            let body = serde_json::json!({ "direction": "failback", "dir": fb.dir });
            failback = self
                .step("failback", async {
                    let r: serde_json::Value = primary
                        .post(&format!("/v1/domains/{name}/replica"), &body)
                        .await
                        .map_err(|e| ApiError::unavailable(format!("the primary: {e}")))?;
                    let dir = r
                        .get("dir")
                        .and_then(|d| d.as_str())
                        .unwrap_or("?")
                        .to_owned();
                    Ok(((), format!("the primary follows the log back into {dir}")))
                })
                .await;
        }
        Ok(((images, at), failback))
    }

    /// Indexes the log until it holds `last` (or once, for `None`).
    async fn catch_up_to(&self, last: Option<u64>) -> ApiResult<((), String)> {
        let name = &self.domain.name;
        let deadline =
            Instant::now() + Duration::from_secs(self.svc.config.failover.catch_up_timeout_secs);
        loop {
            self.svc.replicas.catch_up(name).await?;
            let have = self.svc.index.last_seq(name)?;
            match last {
                Some(l) if have.is_none_or(|h| h < l) => {
                    if Instant::now() > deadline {
                        return Err(ApiError::unavailable(format!(
                            "the primary's point {l} did not reach this site's index (it has {have:?})"
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                _ => return Ok(((), format!("indexed to seq {have:?}"))),
            }
        }
    }

    /// Restores every disk at `at` into `dir`, reporting progress as the job's.
    async fn restore_all(&self, dir: &Path, at: u64) -> ApiResult<Vec<FailoverImage>> {
        let svc = &self.svc;
        std::fs::create_dir_all(dir)
            .map_err(|e| ApiError::internal(format!("cannot create {}: {e}", dir.display())))?;
        let mut images = Vec::new();
        for d in &self.domain.disks {
            let path = dir.join(format!("{}.img", d.name));
            let progress = Arc::new(RestoreProgress::default());
            self.h.track(Some(progress.clone()));
            restore_disk(
                &svc.store,
                &svc.index,
                &self.domain.name,
                &d.name,
                at,
                &path,
                &svc.jobs.restore_options(),
                progress,
            )
            .await?;
            self.h.track(None);
            images.push(FailoverImage {
                disk: d.name.clone(),
                path: path.display().to_string(),
            });
        }
        Ok(images)
    }

    /// A test failover: an isolated copy at the point, cloned from a warm replica when
    /// there is one (then moved to the point), else restored.
    async fn test(&self, cancel: &CancellationToken) -> ApiResult<(Vec<FailoverImage>, u64)> {
        let svc = &self.svc;
        let name = self.domain.name.clone();
        self.step("catch_up", self.catch_up_to(None)).await?;
        let at = svc.index.resolve_point(&name, &self.spec)?;
        self.h.update(|j| j.seq = at);
        let id = self
            .test_copy
            .clone()
            .ok_or_else(|| ApiError::internal("a test failover without its test copy id"))?;
        let rel = format!("test-copies/{id}");
        let dir = svc.recovery.target(&rel)?;
        svc.test_copies.add(TestCopyRecord {
            id: id.clone(),
            domain: name.clone(),
            seq: at,
            dir: dir.display().to_string(),
            job_id: self.h.id(),
            created: format_time(tidemark_ingest::now_ns()),
        })?;
        let replica = svc
            .replicas
            .find(&name)
            .filter(|r| r.applied_seq.is_some() && r.state != ReplicaState::Completed);
        let images = self
            .step("images", async {
                match replica {
                    Some(r) => {
                        let (images, from, how) = self.clone_replica(&name, &dir, cancel).await?;
                        for (img, d) in images.iter().zip(&r.disks) {
                            let progress = Arc::new(RestoreProgress::default());
                            self.h.track(Some(progress.clone()));
                            update_image(
                                &svc.store,
                                &svc.index,
                                &name,
                                &d.disk,
                                Path::new(&img.path),
                                from,
                                at,
                                &svc.jobs.restore_options(),
                                progress,
                            )
                            .await?;
                            self.h.track(None);
                        }
                        Ok((
                            images,
                            format!("{how} of the replica at seq {from}, moved to seq {at}"),
                        ))
                    }
                    None => {
                        let images = self.restore_all(&dir, at).await?;
                        Ok((images, format!("restored at seq {at}")))
                    }
                }
            })
            .await?;
        let rto = self.started.elapsed().as_secs_f64();
        let listed = images.clone();
        self.report(|r| {
            r.images = listed;
            r.rto_seconds = Some(rto);
        });
        Ok((images, at))
    }

    /// Clones the replica's images into `dir` while it is held still, then lets it
    /// follow again. Returns the clones, the point they hold and how they were made.
    async fn clone_replica(
        &self,
        name: &str,
        dir: &Path,
        cancel: &CancellationToken,
    ) -> ApiResult<(Vec<FailoverImage>, u64, &'static str)> {
        let svc = &self.svc;
        std::fs::create_dir_all(dir)
            .map_err(|e| ApiError::internal(format!("cannot create {}: {e}", dir.display())))?;
        let held = svc.replicas.hold(name).await?;
        let rec = held.record();
        // A move a crash interrupted leaves mixed images: finish it before cloning.
        if let Some(pending) = rec.moving_to {
            svc.replicas.move_held(&held, pending, cancel).await?;
        }
        let rec = held.record();
        let from = rec
            .applied_seq
            .ok_or_else(|| ApiError::conflict("the replica is still seeding"))?;
        let mut images = Vec::new();
        let mut how = "reflink";
        for d in &rec.disks {
            let to = dir.join(format!("{}.img", d.disk));
            // A sparse copy of a large image takes a while: off the runtime's threads.
            let (from_path, to_path) = (PathBuf::from(&d.path), to.clone());
            let method = tokio::task::spawn_blocking(move || clone_image(&from_path, &to_path))
                .await
                .map_err(|e| ApiError::internal(format!("the image clone panicked: {e}")))??;
            if method == tidemark_rehydrator::CloneMethod::SparseCopy {
                how = "sparse copy";
            }
            images.push(FailoverImage {
                disk: d.disk.clone(),
                path: to.display().to_string(),
            });
        }
        svc.replicas.release_following(held);
        Ok((images, from, how))
    }

    async fn runbook(
        &self,
        (images, at): &(Vec<FailoverImage>, u64),
        cancel: &tokio_util::sync::CancellationToken,
    ) -> ApiResult<()> {
        let Some(rb) = &self.req.runbook else {
            return Ok(());
        };
        let svc = &self.svc;
        let ctx = RunContext {
            domain: self.domain.name.clone(),
            mode: self.req.mode.as_str().to_owned(),
            seq: *at,
            point_time: svc
                .index
                .segment(&self.domain.name, *at)?
                .map(|m| format_time(m.time_end))
                .unwrap_or_default(),
            disk_paths: images
                .iter()
                .map(|i| (i.disk.clone(), i.path.clone()))
                .collect(),
            job_id: self.h.id(),
        };
        self.step("runbook", async {
            let outcome = runbook::run(rb, &ctx, &svc.config.hooks_dir(), cancel, |steps| {
                let steps = steps.to_vec();
                self.report(|r| r.runbook = steps);
            })
            .await;
            self.report(|r| r.runbook = outcome.steps.clone());
            match outcome.failed {
                Some(f) => Err(ApiError::conflict(format!(
                    "{f} (the images are ready; later groups were not started)"
                ))),
                None => Ok(((), format!("{} VMs started", outcome.steps.len()))),
            }
        })
        .await
    }
}

fn image_list(disks: &[ReplicaDisk]) -> Vec<FailoverImage> {
    disks
        .iter()
        .map(|d| FailoverImage {
            disk: d.disk.clone(),
            path: d.path.clone(),
        })
        .collect()
}

/// The answer of `POST /v1/domains/{domain}/release`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Released {
    /// The domain.
    pub domain: String,
    /// The newest point, after everything pushed before was committed.
    pub last_seq: Option<u64>,
}
