//! Domains: create, list, describe, take over, verify.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use tidemark_format::{DiskSpec, DomainRecord, BLOCK_SIZE};
use tidemark_ingest::{domain, owner, IngestError};
use tidemark_pitr_index::{format_time, sync};
use utoipa::ToSchema;

use super::extract::ApiJson;
use super::gc::Retention;
use super::points::Point;
use crate::service::error::{ApiError, ApiResult, ErrorBody};
use crate::service::gc::effective_policy;
use crate::service::replicas::{ReplicaDirection, ReplicaRecord, ReplicaState, ReplicaStatus};
use crate::service::Service;

/// A disk of a new domain.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDisk {
    /// Disk name (letters, digits, `.`, `_`, `-`).
    #[schema(pattern = r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$")]
    pub name: String,
    /// Size in bytes, a positive multiple of the block size.
    #[schema(minimum = 4096, multiple_of = 4096)]
    pub size: u64,
}

/// A request to create a domain.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDomain {
    /// Domain name (letters, digits, `.`, `_`, `-`).
    #[schema(pattern = r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$")]
    pub name: String,
    /// Its disks, in order; writes name a disk by its index here.
    pub disks: Vec<NewDisk>,
    /// Block size; only 4096 is supported.
    #[serde(default = "default_block_size")]
    pub block_size: u32,
}

fn default_block_size() -> u32 {
    BLOCK_SIZE
}

/// A disk of a domain.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DiskInfo {
    /// Index used by writes.
    pub index: u32,
    /// Name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
}

/// Who may append to a domain's log.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OwnerInfo {
    /// The owning site.
    pub site: String,
    /// Its ownership generation (bumped by each takeover).
    pub generation: u64,
    /// Since when (RFC 3339).
    pub since: String,
}

/// A domain and its figures.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Domain {
    /// Name.
    pub name: String,
    /// Block size.
    pub block_size: u32,
    /// Disks.
    pub disks: Vec<DiskInfo>,
    /// When it was created (RFC 3339).
    pub created: String,
    /// The owner, if any site has written to it.
    pub owner: Option<OwnerInfo>,
    /// Whether this service's site is the owner.
    pub owned_here: bool,
    /// The newest point.
    pub newest_point: Option<Point>,
    /// Points in the index.
    pub points: u64,
    /// Bytes stored in the bucket (packs and segments).
    pub stored_bytes: u64,
    /// Bytes of blocks the log holds (written blocks of every indexed segment: the
    /// points, and what GC merged or demoted of the points it did not keep).
    pub logical_bytes: u64,
    /// Sum of the disks' sizes.
    pub capacity_bytes: u64,
    /// The points GC keeps: the domain's policy, or the service's default.
    pub retention: Retention,
    /// What this site does with the domain.
    pub mode: DomainMode,
    /// Age in seconds of the newest point this site has indexed: the RPO if the
    /// protected site failed now.
    pub rpo_seconds: Option<f64>,
    /// This site's replica of the domain, with its lag.
    pub replica: Option<ReplicaStatus>,
}

/// What a site does with a domain.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DomainMode {
    /// This site owns the domain and takes its writes.
    Protected,
    /// This site follows the domain with a warm replica (continuous failover).
    Cfo,
    /// This site owns the domain after failing it over here.
    FailedOver,
    /// This site follows the domain back to itself (continuous failback).
    FailingBack,
    /// This site released the domain for a planned failover; it refuses writes.
    Released,
    /// Another site owns the domain; this site indexes its log.
    Standby,
}

fn mode(owned_here: bool, released: bool, replica: Option<&ReplicaRecord>) -> DomainMode {
    let following = replica.filter(|r| r.state != ReplicaState::Completed);
    match (following, released, owned_here) {
        (Some(r), _, _) if r.direction == ReplicaDirection::Failback => DomainMode::FailingBack,
        (Some(_), _, _) => DomainMode::Cfo,
        (None, true, _) => DomainMode::Released,
        (None, false, true) => match replica {
            Some(r) if r.direction == ReplicaDirection::Failover => DomainMode::FailedOver,
            _ => DomainMode::Protected,
        },
        (None, false, false) => DomainMode::Standby,
    }
}

/// Domains.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DomainList {
    /// Every domain this site knows, by name.
    pub domains: Vec<Domain>,
}

/// Describes a domain, reading its owner and policy from the bucket.
async fn describe(svc: &Service, rec: &DomainRecord) -> ApiResult<Domain> {
    let own = owner::read_owner(&svc.ingest(), &rec.name).await?;
    let (policy, source) = effective_policy(svc, &rec.name).await?;
    describe_with(svc, rec, own, Retention::new(policy, source))
}

fn describe_with(
    svc: &Service,
    rec: &DomainRecord,
    own: Option<owner::Ownership>,
    retention: Retention,
) -> ApiResult<Domain> {
    // Segments GC merged or demoted hold data and take space but are no points: they
    // count in the bytes, not among the points.
    let segments = svc.index.segments(&rec.name, 0..=u64::MAX)?;
    let points: Vec<_> = segments.iter().filter(|s| s.is_point()).collect();
    // What the bucket holds now: GC repacks and deletes packs, so the packs each
    // segment uploaded once no longer add up to it.
    let packs = svc.index.packs(&rec.name)?;
    let stored_bytes = packs.iter().map(|(_, p)| p.size).sum::<u64>()
        + segments.iter().map(|s| s.object_size).sum::<u64>();
    let owner = own.map(|o| OwnerInfo {
        site: o.record.site,
        generation: o.record.generation,
        since: format_time(o.record.since),
    });
    let owned_here = owner.as_ref().is_some_and(|o| o.site == svc.site_id);
    let replica = svc.replicas.find(&rec.name);
    let mode = mode(
        owned_here,
        svc.pipes.is_released(&rec.name),
        replica.as_ref(),
    );
    let rpo_seconds = points
        .last()
        .map(|s| (tidemark_ingest::now_ns() - s.time_end).max(0) as f64 / 1e9);
    Ok(Domain {
        name: rec.name.clone(),
        block_size: rec.block_size,
        disks: rec
            .disks
            .iter()
            .enumerate()
            .map(|(i, d)| DiskInfo {
                index: i as u32,
                name: d.name.clone(),
                size: d.size,
            })
            .collect(),
        created: format_time(rec.created),
        owned_here,
        owner,
        newest_point: points.last().map(|p| Point::from(*p)),
        points: points.len() as u64,
        stored_bytes,
        logical_bytes: segments.iter().map(|s| s.logical_bytes()).sum(),
        capacity_bytes: rec.disks.iter().map(|d| d.size).sum(),
        retention,
        mode,
        rpo_seconds,
        replica: replica.and_then(|_| svc.replicas.status(&rec.name).ok()),
    })
}

/// Opens a domain known to the index or the bucket.
pub(crate) async fn open(svc: &Service, name: &str) -> ApiResult<DomainRecord> {
    Ok(domain::open_domain(&svc.ingest(), name).await?)
}

#[utoipa::path(
    post, path = "/v1/domains", tag = "domains",
    request_body = CreateDomain,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created; this site owns it", body = Domain),
        (status = 200, description = "It already exists with the same disks", body = Domain),
        (status = 400, description = "Bad name, size or block size", body = ErrorBody),
        (status = 409, description = "It exists with other disks", body = ErrorBody),
    )
)]
/// Creates a domain (idempotent for the same disks) and claims it for this site.
pub async fn create_domain(
    State(svc): State<Arc<Service>>,
    ApiJson(req): ApiJson<CreateDomain>,
) -> ApiResult<(StatusCode, Json<Domain>)> {
    if req.block_size != BLOCK_SIZE {
        return Err(ApiError::invalid(format!(
            "block_size {}: only {BLOCK_SIZE} is supported",
            req.block_size
        )));
    }
    let rec = DomainRecord {
        name: req.name,
        block_size: BLOCK_SIZE,
        disks: req
            .disks
            .into_iter()
            .map(|d| DiskSpec {
                name: d.name,
                size: d.size,
            })
            .collect(),
        created: tidemark_ingest::now_ns(),
    };
    rec.validate()
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    let ctx = svc.ingest();
    let existed = match domain::open_domain(&ctx, &rec.name).await {
        Ok(_) => true,
        Err(IngestError::UnknownDomain(_)) => false,
        Err(e) => return Err(e.into()),
    };
    let rec = domain::create_domain(&ctx, rec).await?;
    if !existed {
        // Claim it now, so the creator is the owner before any write arrives.
        svc.pipes.seal(&rec.name, Vec::new()).await?;
    }
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(describe(&svc, &rec).await?)))
}

#[utoipa::path(
    get, path = "/v1/domains", tag = "domains",
    security(("bearer" = [])),
    responses((status = 200, body = DomainList))
)]
/// Lists the domains this site knows (its own and those the tailer found).
pub async fn list_domains(State(svc): State<Arc<Service>>) -> ApiResult<Json<DomainList>> {
    let mut domains = Vec::new();
    for name in svc.index.domains()? {
        let Some(rec) = svc.index.domain(&name)? else {
            continue;
        };
        domains.push(describe(&svc, &rec).await?);
    }
    Ok(Json(DomainList { domains }))
}

#[utoipa::path(
    get, path = "/v1/domains/{domain}", tag = "domains",
    params(("domain" = String, Path, description = "Domain name")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Domain),
        (status = 400, description = "Bad name", body = ErrorBody),
        (status = 404, description = "No such domain", body = ErrorBody),
    )
)]
/// Describes a domain: owner, newest point, retention, stored and logical bytes.
pub async fn get_domain(
    State(svc): State<Arc<Service>>,
    Path(name): Path<String>,
) -> ApiResult<Json<Domain>> {
    let rec = open(&svc, &name).await?;
    Ok(Json(describe(&svc, &rec).await?))
}

/// A takeover request.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TakeOver {
    /// Take over only if the current generation is this one.
    #[serde(default)]
    pub expected_generation: Option<u64>,
}

/// The result of a takeover.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TakenOver {
    /// The domain.
    pub domain: String,
    /// The new owner: this site.
    pub site: String,
    /// The new generation.
    pub generation: u64,
    /// The fence point, after which the old owner's writes fail.
    pub fence_seq: u64,
}

#[utoipa::path(
    post, path = "/v1/domains/{domain}/take-over", tag = "domains",
    params(("domain" = String, Path, description = "Domain name")),
    request_body = TakeOver,
    security(("bearer" = [])),
    responses(
        (status = 200, body = TakenOver),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Another takeover won, or the generation moved", body = ErrorBody),
    )
)]
/// Makes this site the domain's owner (failover, failback) and fences the old one.
pub async fn take_over(
    State(svc): State<Arc<Service>>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<TakeOver>,
) -> ApiResult<Json<TakenOver>> {
    open(&svc, &name).await?;
    let (generation, fence) = svc.pipes.take_over(&name, req.expected_generation).await?;
    Ok(Json(TakenOver {
        domain: name,
        site: svc.site_id.clone(),
        generation,
        fence_seq: fence.seq,
    }))
}

/// What verify found.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VerifyReport {
    /// The domain.
    pub domain: String,
    /// Objects read.
    pub objects: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Damaged or missing objects.
    pub damaged: Vec<Damage>,
}

/// One damaged object.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Damage {
    /// Its key.
    pub key: String,
    /// What is wrong.
    pub error: String,
}

#[utoipa::path(
    post, path = "/v1/domains/{domain}/verify", tag = "domains",
    params(("domain" = String, Path, description = "Domain name")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every object was read; see `damaged`", body = VerifyReport),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
/// Reads every object of a domain and verifies it.
pub async fn verify(
    State(svc): State<Arc<Service>>,
    Path(name): Path<String>,
) -> ApiResult<Json<VerifyReport>> {
    let rec = open(&svc, &name).await?;
    {
        let _lock = svc.index.lock_commits(&name).await;
        sync::catch_up(&svc.store, &svc.index, &rec).await?;
    }
    let r = tidemark_rehydrator::verify::verify_domain(&svc.store, &svc.index, &name).await?;
    Ok(Json(VerifyReport {
        domain: name,
        objects: r.objects,
        bytes: r.bytes,
        damaged: r
            .damaged
            .into_iter()
            .map(|(key, error)| Damage { key, error })
            .collect(),
    }))
}

/// What a rebuild of the index found.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Rebuilt {
    /// The domain.
    pub domain: String,
    /// Segments indexed.
    pub segments: u64,
    /// The newest seq.
    pub last_seq: Option<u64>,
}

#[utoipa::path(
    post, path = "/v1/domains/{domain}/index/rebuild", tag = "domains",
    params(("domain" = String, Path, description = "Domain name")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Rebuilt),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Restore jobs or a GC run of the domain are running", body = ErrorBody),
    )
)]
/// Forgets the domain's local index and re-derives it from the bucket (pushes wait).
pub async fn rebuild_index(
    State(svc): State<Arc<Service>>,
    Path(name): Path<String>,
) -> ApiResult<Json<Rebuilt>> {
    open(&svc, &name).await?;
    // A restore reading the index while it is forgotten and re-derived would fail.
    if svc.jobs.busy_with(&name) {
        return Err(ApiError::conflict(format!(
            "restore jobs of domain {name} are running; rebuild when they have ended"
        )));
    }
    let Some(_gc) = svc.gc.try_hold(&name) else {
        return Err(ApiError::conflict(format!(
            "a GC run of domain {name} is under way; rebuild when it has ended"
        )));
    };
    let _lock = svc.index.lock_commits(&name).await;
    let r = sync::rebuild(&svc.store, &svc.index, &name).await?;
    Ok(Json(Rebuilt {
        domain: name,
        segments: r.segments,
        last_seq: r.last_seq,
    }))
}
