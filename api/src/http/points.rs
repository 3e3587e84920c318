//! Points: list with a time filter and paging; resolve a time or a marker to a point.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use tidemark_pitr_index::{format_time, parse_time, PointSpec, SegmentMeta};
use utoipa::{IntoParams, ToSchema};

use super::domains::open;
use super::extract::ApiQuery;
use crate::service::error::{ApiError, ApiResult, ErrorBody};
use crate::service::Service;

/// Most points answered at once.
const MAX_PAGE: usize = 10_000;

/// A marker naming a point.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PointMarker {
    /// Name.
    pub name: String,
    /// The protected site vouches for this point (application-consistent, tested).
    pub known_good: bool,
}

/// A point in time: a committed segment of the log.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Point {
    /// Its seq.
    pub seq: u64,
    /// Its time (RFC 3339, UTC).
    pub time: String,
    /// Capture time of its earliest write.
    pub time_start: String,
    /// `delta`, `fence` or `image`.
    pub kind: String,
    /// Markers naming it.
    pub markers: Vec<PointMarker>,
    /// The site that wrote it.
    pub site: String,
    /// That site's ownership generation.
    pub generation: u64,
    /// Bytes of blocks written in it.
    pub logical_bytes: u64,
    /// Bytes uploaded for it.
    pub stored_bytes: u64,
}

impl From<&SegmentMeta> for Point {
    fn from(m: &SegmentMeta) -> Self {
        Point {
            seq: m.seq,
            time: format_time(m.time_end),
            time_start: format_time(m.time_start),
            kind: m.kind.clone(),
            markers: m
                .markers
                .iter()
                .map(|k| PointMarker {
                    name: k.name.clone(),
                    known_good: k.known_good,
                })
                .collect(),
            site: m.site.clone(),
            generation: m.generation,
            logical_bytes: m.logical_bytes(),
            stored_bytes: m.stored_bytes + m.object_size,
        }
    }
}

/// Filters and paging of a point listing.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PointsQuery {
    /// Only points at or after this time (RFC 3339).
    pub from: Option<String>,
    /// Only points at or before this time (RFC 3339).
    pub to: Option<String>,
    /// Only points after this seq (the `next_after` of the previous page).
    pub after: Option<u64>,
    /// Most points to answer (default 1000, at most 10000).
    pub limit: Option<usize>,
}

/// A page of points, oldest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PointPage {
    /// The points.
    pub points: Vec<Point>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<u64>,
}

fn time_param(name: &str, v: &Option<String>) -> ApiResult<Option<i64>> {
    v.as_deref()
        .map(|s| parse_time(s).map_err(|e| ApiError::invalid(format!("{name}={s:?}: {e}"))))
        .transpose()
}

#[utoipa::path(
    get, path = "/v1/domains/{domain}/points", tag = "points",
    params(("domain" = String, Path, description = "Domain name"), PointsQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, body = PointPage),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
/// Lists a domain's points, oldest first.
pub async fn list_points(
    State(svc): State<Arc<Service>>,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<PointsQuery>,
) -> ApiResult<Json<PointPage>> {
    let from = time_param("from", &q.from)?;
    let to = time_param("to", &q.to)?;
    let limit = q.limit.unwrap_or(1000);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::invalid(format!(
            "limit {limit}: must be 1 to {MAX_PAGE}"
        )));
    }
    let rec = open(&svc, &name).await?;
    let start = q.after.map_or(0, |a| a.saturating_add(1));
    let mut points = Vec::new();
    let mut next_after = None;
    for m in svc.index.points(&rec.name, start..=u64::MAX)? {
        if from.is_some_and(|f| m.time_end < f) {
            continue;
        }
        // Point times never go back as seqs go up, so nothing later can match.
        if to.is_some_and(|t| m.time_end > t) {
            break;
        }
        if points.len() == limit {
            next_after = points.last().map(|p: &Point| p.seq);
            break;
        }
        points.push(Point::from(&m));
    }
    Ok(Json(PointPage { points, next_after }))
}

/// Which point to resolve.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ResolveQuery {
    /// `latest`, `last-good`, a seq, `marker:NAME`, or an RFC 3339 time (the newest
    /// point at or before it).
    pub point: String,
}

#[utoipa::path(
    get, path = "/v1/domains/{domain}/points/resolve", tag = "points",
    params(("domain" = String, Path, description = "Domain name"), ResolveQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Point),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 422, description = "No point matches", body = ErrorBody),
    )
)]
/// Resolves a time, a marker, `latest` or `last-good` to a point.
pub async fn resolve_point(
    State(svc): State<Arc<Service>>,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<ResolveQuery>,
) -> ApiResult<Json<Point>> {
    let rec = open(&svc, &name).await?;
    let point = resolve(&svc, &rec.name, &q.point)?;
    Ok(Json(Point::from(&point)))
}

/// Resolves a point spec of a known domain to its segment.
pub(crate) fn resolve(svc: &Service, domain: &str, spec: &str) -> ApiResult<SegmentMeta> {
    let spec: PointSpec = spec.parse().map_err(ApiError::invalid)?;
    let seq = svc.index.resolve_point(domain, &spec)?;
    svc.index.segment(domain, seq)?.ok_or_else(|| {
        ApiError::from(tidemark_pitr_index::IndexError::NoSuchPoint(
            spec.to_string(),
        ))
    })
}
