//! Test copies: isolated writable images of a point for a test failover, and their undo.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use tidemark_pitr_index::format_time;
use utoipa::ToSchema;

use super::domains::open;
use super::extract::ApiJson;
use super::points::resolve;
use super::restores::plan_disks;
use crate::service::error::{ApiError, ApiResult, ErrorBody};
use crate::service::jobs::{new_id, Job, JobKind, JobSpec};
use crate::service::test_copies::TestCopyRecord;
use crate::service::Service;

/// A test copy request.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestCopyRequest {
    /// Domain.
    pub domain: String,
    /// `latest` (default), `last-good`, a seq, `marker:NAME` or an RFC 3339 time.
    #[serde(default)]
    pub point: Option<String>,
    /// Disks to copy; default: all.
    #[serde(default)]
    pub disks: Option<Vec<String>>,
}

/// A test copy and how far its images are.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TestCopy {
    /// The copy.
    #[serde(flatten)]
    pub record: TestCopyRecord,
    /// The job that makes its images; `succeeded` means they are ready to boot. Absent
    /// only if the copy is half deleted (delete it again).
    pub job: Option<Job>,
}

/// Test copies.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TestCopyList {
    /// Oldest first.
    pub test_copies: Vec<TestCopy>,
}

fn with_job(svc: &Service, record: TestCopyRecord) -> TestCopy {
    let job = svc.jobs.get(&record.job_id).ok();
    TestCopy { record, job }
}

#[utoipa::path(
    post, path = "/v1/test-copies", tag = "recovery",
    request_body = TestCopyRequest,
    security(("bearer" = [])),
    responses(
        (status = 202, description = "The test copy; its job makes the images", body = TestCopy),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody),
    )
)]
/// Creates an isolated, writable copy of a point's disks; protection goes on undisturbed.
pub async fn create_test_copy(
    State(svc): State<Arc<Service>>,
    ApiJson(req): ApiJson<TestCopyRequest>,
) -> ApiResult<(StatusCode, Json<TestCopy>)> {
    let rec = open(&svc, &req.domain).await?;
    let point = resolve(&svc, &rec.name, req.point.as_deref().unwrap_or("latest"))?;
    let names = req
        .disks
        .unwrap_or_else(|| rec.disks.iter().map(|d| d.name.clone()).collect());
    let id = new_id("tc");
    let dir = format!("test-copies/{id}");
    let targets = names
        .into_iter()
        .map(|d| {
            tidemark_format::names::validate_name("disk", &d)
                .map_err(|e| ApiError::invalid(e.to_string()))?;
            let path = svc.recovery.target(&format!("{dir}/{d}.img"))?;
            Ok((d, path))
        })
        .collect::<ApiResult<Vec<_>>>();
    let disks = targets.and_then(|t| plan_disks(&svc, &rec, point.seq, t, false));
    let disks = match disks {
        Ok(d) => d,
        Err(e) => {
            let _ = std::fs::remove_dir_all(svc.recovery.root().join(&dir));
            return Err(e);
        }
    };
    let job = svc.jobs.start(JobSpec {
        kind: JobKind::TestCopy,
        domain: rec.name.clone(),
        seq: point.seq,
        disks,
        test_copy: Some(id.clone()),
        failover: None,
    })?;
    let record = TestCopyRecord {
        id,
        domain: rec.name,
        seq: point.seq,
        dir: svc.recovery.root().join(&dir).display().to_string(),
        job_id: job.id.clone(),
        created: format_time(tidemark_ingest::now_ns()),
    };
    svc.test_copies.add(record.clone())?;
    Ok((
        StatusCode::ACCEPTED,
        Json(TestCopy {
            record,
            job: Some(job),
        }),
    ))
}

#[utoipa::path(
    get, path = "/v1/test-copies", tag = "recovery",
    security(("bearer" = [])),
    responses((status = 200, body = TestCopyList))
)]
/// Lists the test copies.
pub async fn list_test_copies(State(svc): State<Arc<Service>>) -> ApiResult<Json<TestCopyList>> {
    let test_copies = svc
        .test_copies
        .list()
        .into_iter()
        .map(|r| with_job(&svc, r))
        .collect();
    Ok(Json(TestCopyList { test_copies }))
}

#[utoipa::path(
    get, path = "/v1/test-copies/{id}", tag = "recovery",
    params(("id" = String, Path, description = "Test copy id")),
    security(("bearer" = [])),
    responses((status = 200, body = TestCopy), (status = 404, body = ErrorBody))
)]
/// Describes a test copy.
pub async fn get_test_copy(
    State(svc): State<Arc<Service>>,
    Path(id): Path<String>,
) -> ApiResult<Json<TestCopy>> {
    let r = svc.test_copies.get(&id)?;
    Ok(Json(with_job(&svc, r)))
}

#[utoipa::path(
    delete, path = "/v1/test-copies/{id}", tag = "recovery",
    params(("id" = String, Path, description = "Test copy id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Undone: its job is stopped and its images are gone"),
        (status = 404, body = ErrorBody),
    )
)]
/// Undoes a test copy: stops its job if it runs and deletes its images.
pub async fn delete_test_copy(
    State(svc): State<Arc<Service>>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let r = svc.test_copies.get(&id)?;
    if let Ok(job) = svc.jobs.get(&r.job_id) {
        if !job.state.is_final() {
            let _ = svc.jobs.cancel(&r.job_id);
        }
        svc.jobs.wait(&r.job_id).await?;
        svc.jobs.remove(&r.job_id)?;
    }
    let dir = std::path::PathBuf::from(&r.dir);
    // Only ever below the recovery directory, whatever the record says.
    if svc.recovery.contains(&dir) {
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(ApiError::internal(format!(
                    "cannot delete {}: {e}",
                    dir.display()
                )))
            }
            _ => {}
        }
    }
    svc.test_copies.remove(&id)?;
    Ok(StatusCode::NO_CONTENT)
}
