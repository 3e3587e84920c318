//! Restores: a domain's disks at a point into image files under the recovery directory.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use tidemark_format::{DomainRecord, BLOCK_SIZE};
use utoipa::ToSchema;

use super::domains::open;
use super::extract::ApiJson;
use super::points::resolve;
use crate::service::error::{ApiError, ApiResult, ErrorBody};
use crate::service::jobs::{Job, JobKind, JobSpec};
use crate::service::Service;

/// One disk to restore and where.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreTarget {
    /// Disk name.
    pub disk: String,
    /// Image file, relative to the recovery directory.
    pub path: String,
}

/// A restore request.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    /// Domain.
    pub domain: String,
    /// `latest` (default), `last-good`, a seq, `marker:NAME` or an RFC 3339 time.
    #[serde(default)]
    pub point: Option<String>,
    /// Disks and their image files; default: every disk, to `DOMAIN-SEQ/DISK.img`.
    #[serde(default)]
    pub targets: Option<Vec<RestoreTarget>>,
    /// Replace existing image files.
    #[serde(default)]
    pub overwrite: bool,
}

/// (disk, path, data bytes) for each disk of a job, after every check.
pub(crate) fn plan_disks(
    svc: &Service,
    rec: &DomainRecord,
    seq: u64,
    targets: Vec<(String, PathBuf)>,
    overwrite: bool,
) -> ApiResult<Vec<(String, PathBuf, u64)>> {
    if targets.is_empty() {
        return Err(ApiError::invalid("no disk to restore"));
    }
    let mut out: Vec<(String, PathBuf, u64)> = Vec::new();
    for (disk, path) in targets {
        let idx = rec.disk_index(&disk).ok_or_else(|| {
            ApiError::invalid(format!("domain {} has no disk {disk:?}", rec.name))
        })?;
        if out.iter().any(|(d, p, _)| *d == disk || *p == path) {
            return Err(ApiError::invalid(format!(
                "disk {disk:?} or its path is named twice"
            )));
        }
        if !overwrite && path.exists() {
            return Err(ApiError::conflict(format!(
                "{} exists (set overwrite to replace it)",
                path.display()
            )));
        }
        let spec = &rec.disks[idx as usize];
        let plan = svc.index.plan(&rec.name, idx, spec.blocks(), seq)?;
        out.push((disk, path, plan.data_blocks() * BLOCK_SIZE as u64));
    }
    Ok(out)
}

#[utoipa::path(
    post, path = "/v1/restores", tag = "recovery",
    request_body = RestoreRequest,
    security(("bearer" = [])),
    responses(
        (status = 202, description = "The restore job, queued", body = Job),
        (status = 400, description = "Bad disk, point or path (outside the recovery directory)", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "An image file exists", body = ErrorBody),
        (status = 422, description = "No such point", body = ErrorBody),
    )
)]
/// Starts restoring disks of a domain at a point; answers with the job.
pub async fn start_restore(
    State(svc): State<Arc<Service>>,
    ApiJson(req): ApiJson<RestoreRequest>,
) -> ApiResult<(StatusCode, Json<Job>)> {
    let rec = open(&svc, &req.domain).await?;
    let point = resolve(&svc, &rec.name, req.point.as_deref().unwrap_or("latest"))?;
    let targets = match req.targets {
        Some(t) => t
            .into_iter()
            .map(|t| Ok((t.disk, svc.recovery.target(&t.path)?)))
            .collect::<ApiResult<Vec<_>>>()?,
        None => rec
            .disks
            .iter()
            .map(|d| {
                let rel = format!("{}-{}/{}.img", rec.name, point.seq, d.name);
                Ok((d.name.clone(), svc.recovery.target(&rel)?))
            })
            .collect::<ApiResult<Vec<_>>>()?,
    };
    let disks = plan_disks(&svc, &rec, point.seq, targets, req.overwrite)?;
    let job = svc.jobs.start(JobSpec {
        kind: JobKind::Restore,
        domain: rec.name.clone(),
        seq: point.seq,
        disks,
        test_copy: None,
        failover: None,
    })?;
    Ok((StatusCode::ACCEPTED, Json(job)))
}
