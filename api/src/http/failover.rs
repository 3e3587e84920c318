//! Failover, warm replicas (continuous failover and failback), rollback, and the
//! release a planned failover asks of the primary.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use tidemark_ingest::owner;
use utoipa::ToSchema;

use super::domains::open;
use super::extract::ApiJson;
use super::points::resolve;
use crate::service::error::{ApiError, ApiResult, ErrorBody};
use crate::service::failover::{
    self, FailbackRequest, FailoverMode, FailoverRequest, PrimarySite, Queue, Released,
};
use crate::service::jobs::Job;
use crate::service::replicas::{ReplicaDirection, ReplicaRecord, ReplicaState, ReplicaStatus};
use crate::service::runbook::Runbook;
use crate::service::Service;

#[utoipa::path(
    post, path = "/v1/domains/{domain}/failover", tag = "failover",
    params(("domain" = String, Path, description = "Domain name")),
    request_body = FailoverRequest,
    security(("bearer" = [])),
    responses(
        (status = 202, description = "The failover job; its `failover` field reports each step", body = Job),
        (status = 400, description = "Bad mode, point, primary or runbook", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "This site owns the domain already, a failover runs, or an image exists", body = ErrorBody),
    )
)]
/// Fails a domain over to this site (regular, planned, forced) or makes a test copy.
pub async fn start_failover(
    State(svc): State<Arc<Service>>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<FailoverRequest>,
) -> ApiResult<(StatusCode, Json<Job>)> {
    let rec = open(&svc, &name).await?;
    if req.mode != FailoverMode::Test {
        refuse_if_owned_here(&svc, &name).await?;
    }
    let job = failover::start(&svc, rec, req).await?;
    Ok((StatusCode::ACCEPTED, Json(job)))
}

/// A failover to the site that owns the domain is refused, unless the domain still has
/// a replica here that did not complete: a failover that took ownership and then
/// failed (the store went away while the images moved) can then be run again.
async fn refuse_if_owned_here(svc: &Service, name: &str) -> ApiResult<()> {
    let own = owner::read_owner(&svc.ingest(), name).await?;
    let unfinished = svc
        .replicas
        .find(name)
        .is_some_and(|r| r.state != ReplicaState::Completed);
    if own.is_some_and(|o| o.record.site == svc.site_id)
        && !svc.pipes.is_released(name)
        && !unfinished
    {
        return Err(ApiError::conflict(format!(
            "this site owns domain {name} already; fail over at another site"
        )));
    }
    Ok(())
}

/// Completing continuous failover: a failover of a domain with a warm replica here.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteReplica {
    /// regular (default), planned or forced.
    #[serde(default = "regular")]
    pub mode: FailoverMode,
    /// apply (default): everything committed; discard: what is applied.
    #[serde(default)]
    pub queue: Queue,
    /// `latest` (default) or an earlier point (the replica rolls back to it).
    #[serde(default)]
    pub point: Option<String>,
    /// Planned: the primary's service.
    #[serde(default)]
    pub primary: Option<PrimarySite>,
    /// Planned: have the primary follow the log back.
    #[serde(default)]
    pub failback: Option<FailbackRequest>,
    /// VMs to bring up once the images are final.
    #[serde(default)]
    pub runbook: Option<Runbook>,
}

fn regular() -> FailoverMode {
    FailoverMode::Regular
}

#[utoipa::path(
    post, path = "/v1/domains/{domain}/replica/complete", tag = "failover",
    params(("domain" = String, Path, description = "Domain name")),
    request_body = CompleteReplica,
    security(("bearer" = [])),
    responses(
        (status = 202, description = "The failover job", body = Job),
        (status = 400, body = ErrorBody),
        (status = 404, description = "No such domain or no replica here", body = ErrorBody),
        (status = 409, body = ErrorBody),
    )
)]
/// Completes continuous failover: applies (or discards) the queue, takes ownership;
/// the replica's images are then final.
pub async fn complete_replica(
    State(svc): State<Arc<Service>>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<CompleteReplica>,
) -> ApiResult<(StatusCode, Json<Job>)> {
    let rec = open(&svc, &name).await?;
    if req.mode == FailoverMode::Test {
        return Err(ApiError::invalid(
            "a test failover does not complete a replica; POST .../failover with mode test",
        ));
    }
    match svc.replicas.find(&name) {
        Some(r) if r.state != ReplicaState::Completed => {}
        _ => {
            return Err(ApiError::not_found(format!(
                "domain {name} has no running replica here"
            )))
        }
    }
    refuse_if_owned_here(&svc, &name).await?;
    let job = failover::start(
        &svc,
        rec,
        FailoverRequest {
            mode: req.mode,
            point: req.point,
            queue: req.queue,
            dir: None,
            primary: req.primary,
            failback: req.failback,
            runbook: req.runbook,
        },
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json(job)))
}

#[utoipa::path(
    post, path = "/v1/domains/{domain}/release", tag = "failover",
    params(("domain" = String, Path, description = "Domain name")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Everything pushed before is committed; writes are refused from now on", body = Released),
        (status = 404, body = ErrorBody),
        (status = 409, description = "This site does not own the domain", body = ErrorBody),
    )
)]
/// At the primary, for a planned failover: commits what was pushed and stops taking
/// writes (answered `released`) until this site takes the domain over again.
pub async fn release(
    State(svc): State<Arc<Service>>,
    Path(name): Path<String>,
) -> ApiResult<Json<Released>> {
    open(&svc, &name).await?;
    let own = owner::read_owner(&svc.ingest(), &name).await?;
    if own.is_none_or(|o| o.record.site != svc.site_id) {
        return Err(ApiError::conflict(format!(
            "this site does not own domain {name}; nothing to release"
        )));
    }
    let last_seq = svc.pipes.release(&name).await?;
    tracing::info!(domain = %name, ?last_seq, "released for a planned failover");
    Ok(Json(Released {
        domain: name,
        last_seq,
    }))
}

/// A request to start a warm replica.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartReplica {
    /// failover (default, CFO) or failback.
    #[serde(default)]
    pub direction: Option<ReplicaDirection>,
    /// Directory of the images, relative to the recovery directory; default
    /// `replicas/DOMAIN`.
    #[serde(default)]
    pub dir: Option<String>,
}

#[utoipa::path(
    post, path = "/v1/domains/{domain}/replica", tag = "failover",
    params(("domain" = String, Path, description = "Domain name")),
    request_body = StartReplica,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Seeding; then it follows the log", body = ReplicaStatus),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "This site owns the domain, a replica runs, or an image exists", body = ErrorBody),
    )
)]
/// Starts continuous failover (or failback) of a domain into warm images here.
pub async fn start_replica(
    State(svc): State<Arc<Service>>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<StartReplica>,
) -> ApiResult<(StatusCode, Json<ReplicaStatus>)> {
    let rec = open(&svc, &name).await?;
    let own = owner::read_owner(&svc.ingest(), &name).await?;
    if own.is_some_and(|o| o.record.site == svc.site_id) && !svc.pipes.is_released(&name) {
        return Err(ApiError::conflict(format!(
            "this site owns domain {name}; a replica follows a log another site writes"
        )));
    }
    let rel = req.dir.unwrap_or_else(|| format!("replicas/{name}"));
    let dir = svc.recovery.target(&rel)?;
    let status = svc.replicas.start(
        &rec,
        req.direction.unwrap_or(ReplicaDirection::Failover),
        dir,
        true,
    )?;
    Ok((StatusCode::CREATED, Json(status)))
}

#[utoipa::path(
    get, path = "/v1/domains/{domain}/replica", tag = "failover",
    params(("domain" = String, Path, description = "Domain name")),
    security(("bearer" = [])),
    responses((status = 200, body = ReplicaStatus), (status = 404, body = ErrorBody))
)]
/// The domain's replica here: the point its images hold and its lag.
pub async fn get_replica(
    State(svc): State<Arc<Service>>,
    Path(name): Path<String>,
) -> ApiResult<Json<ReplicaStatus>> {
    Ok(Json(svc.replicas.status(&name)?))
}

/// Replicas.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReplicaList {
    /// Every replica of this site, by domain.
    pub replicas: Vec<ReplicaStatus>,
}

#[utoipa::path(
    get, path = "/v1/replicas", tag = "failover",
    security(("bearer" = [])),
    responses((status = 200, body = ReplicaList))
)]
/// Lists this site's replicas.
pub async fn list_replicas(State(svc): State<Arc<Service>>) -> Json<ReplicaList> {
    Json(ReplicaList {
        replicas: svc.replicas.list(),
    })
}

#[utoipa::path(
    delete, path = "/v1/domains/{domain}/replica", tag = "failover",
    params(("domain" = String, Path, description = "Domain name")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Stopped and forgotten; a following replica's images are deleted, a completed failover's are kept", body = ReplicaRecord),
        (status = 404, body = ErrorBody),
    )
)]
/// Stops continuous failover of a domain here.
pub async fn delete_replica(
    State(svc): State<Arc<Service>>,
    Path(name): Path<String>,
) -> ApiResult<Json<ReplicaRecord>> {
    Ok(Json(svc.replicas.remove(&name).await?))
}

/// A rollback request.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    /// `last-good`, a seq, `marker:NAME` or an RFC 3339 time (or `latest`).
    pub point: String,
}

#[utoipa::path(
    post, path = "/v1/domains/{domain}/replica/rollback", tag = "failover",
    params(("domain" = String, Path, description = "Domain name")),
    request_body = Rollback,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The images hold the point; the replica is paused there", body = ReplicaStatus),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The replica completed a failover", body = ErrorBody),
        (status = 422, description = "No such point", body = ErrorBody),
    )
)]
/// Moves a replica's images to another point, rewriting only the blocks changed in
/// between, and pauses it there.
pub async fn rollback_replica(
    State(svc): State<Arc<Service>>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<Rollback>,
) -> ApiResult<Json<ReplicaStatus>> {
    open(&svc, &name).await?;
    svc.replicas.status(&name)?;
    svc.replicas.catch_up(&name).await?;
    let point = resolve(&svc, &name, &req.point)?;
    Ok(Json(svc.replicas.rollback(&name, point.seq).await?))
}

#[utoipa::path(
    post, path = "/v1/domains/{domain}/replica/resume", tag = "failover",
    params(("domain" = String, Path, description = "Domain name")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = ReplicaStatus),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody),
    )
)]
/// Lets a paused replica follow the log again.
pub async fn resume_replica(
    State(svc): State<Arc<Service>>,
    Path(name): Path<String>,
) -> ApiResult<Json<ReplicaStatus>> {
    Ok(Json(svc.replicas.resume(&name).await?))
}
