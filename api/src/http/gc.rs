//! Retention policies per domain, and GC runs with their reports.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tidemark_format::RetentionPolicy;
use tidemark_gc::GcReport;
use tidemark_objstore::StoreError;
use utoipa::ToSchema;

use super::domains::open;
use super::extract::read_body;
use crate::service::error::{ApiError, ApiResult, ErrorBody};
use crate::service::gc::{self, effective_policy, PolicySource};
use crate::service::Service;

/// Where the policy shown comes from.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RetentionSource {
    /// Set for this domain.
    Domain,
    /// The service's `[retention]` configuration (the domain has none of its own).
    Default,
}

/// The points GC keeps of a domain: every point of the PITR window, the newest point
/// of each of the last `hourly` hours (`daily` days, `weekly` ISO weeks, `monthly`
/// months; UTC) that hold one, points carrying a pinned marker, points leased by
/// restores, test copies and replicas, and the newest point.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct Retention {
    /// Set for the domain, or the service's default.
    pub source: RetentionSource,
    /// The PITR window, as `90s`, `30m`, `24h` or `7d` (the largest exact unit).
    #[schema(pattern = r"^[0-9]+[smhd]$")]
    pub pitr_window: String,
    /// The PITR window in seconds.
    pub pitr_window_secs: u64,
    /// Hours whose newest point is kept.
    pub hourly: u32,
    /// Days whose newest point is kept.
    pub daily: u32,
    /// ISO weeks whose newest point is kept.
    pub weekly: u32,
    /// Months whose newest point is kept.
    pub monthly: u32,
    /// Points carrying one of these markers are kept until unpinned.
    pub pinned: Vec<String>,
}

impl Retention {
    /// The view of `p`.
    pub fn new(p: RetentionPolicy, source: PolicySource) -> Retention {
        Retention {
            source: match source {
                PolicySource::Domain => RetentionSource::Domain,
                PolicySource::Default => RetentionSource::Default,
            },
            pitr_window: format_duration(p.pitr_window_secs),
            pitr_window_secs: p.pitr_window_secs,
            hourly: p.hourly,
            daily: p.daily,
            weekly: p.weekly,
            monthly: p.monthly,
            pinned: p.pinned,
        }
    }
}

/// A domain's new retention policy; what is left out takes the service's default
/// (`[retention]`; no pins). Pin or unpin a marker by sending the whole list again.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionUpdate {
    /// Every point of this recent window is kept: `90s`, `30m`, `24h`, `7d`.
    #[serde(default)]
    #[schema(pattern = r"^[0-9]+[smhd]$")]
    pub pitr_window: Option<String>,
    /// Hours whose newest point is kept.
    #[serde(default)]
    pub hourly: Option<u32>,
    /// Days whose newest point is kept.
    #[serde(default)]
    pub daily: Option<u32>,
    /// ISO weeks whose newest point is kept.
    #[serde(default)]
    pub weekly: Option<u32>,
    /// Months whose newest point is kept.
    #[serde(default)]
    pub monthly: Option<u32>,
    /// Markers (letters, digits, `.`, `_`, `-`) whose points are kept until unpinned.
    #[serde(default)]
    pub pinned: Option<Vec<String>>,
}

/// Largest body of these calls.
const JSON_LIMIT: usize = 64 << 10;

/// A JSON object body. serde would also take an array for a struct (its fields in
/// order), which no client means.
fn object_body<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    let malformed = |e: serde_json::Error| ApiError::invalid(format!("malformed JSON body: {e}"));
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(malformed)?;
    if !value.is_object() {
        return Err(ApiError::invalid("malformed JSON body: expected an object"));
    }
    serde_json::from_value(value).map_err(malformed)
}

/// Seconds of `90s`, `30m`, `24h` or `7d`.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let bad =
        || format!("duration {s:?}: expected a number and a unit s, m, h or d (90s, 30m, 24h, 7d)");
    let unit = match s.chars().last() {
        Some('s') => 1,
        Some('m') => 60,
        Some('h') => 3600,
        Some('d') => 86_400,
        _ => return Err(bad()),
    };
    let digits = &s[..s.len() - 1];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| format!("duration {s:?} is too long"))
}

/// `secs` in the largest unit that divides it.
pub fn format_duration(secs: u64) -> String {
    for (unit, suffix) in [(86_400, 'd'), (3600, 'h'), (60, 'm')] {
        if secs > 0 && secs.is_multiple_of(unit) {
            return format!("{}{suffix}", secs / unit);
        }
    }
    format!("{secs}s")
}

impl RetentionUpdate {
    /// The policy it sets, over `default`.
    fn into_policy(self, default: RetentionPolicy) -> ApiResult<RetentionPolicy> {
        let policy = RetentionPolicy {
            pitr_window_secs: match &self.pitr_window {
                Some(w) => parse_duration(w).map_err(ApiError::invalid)?,
                None => default.pitr_window_secs,
            },
            hourly: self.hourly.unwrap_or(default.hourly),
            daily: self.daily.unwrap_or(default.daily),
            weekly: self.weekly.unwrap_or(default.weekly),
            monthly: self.monthly.unwrap_or(default.monthly),
            pinned: self.pinned.unwrap_or_default(),
        };
        policy
            .validate()
            .map_err(|e| ApiError::invalid(format!("pinned: {e}")))?;
        Ok(policy)
    }
}

#[utoipa::path(
    get, path = "/v1/domains/{domain}/retention", tag = "gc",
    params(("domain" = String, Path, description = "Domain name")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The policy GC applies to the domain", body = Retention),
        (status = 400, description = "Bad name", body = ErrorBody),
        (status = 404, description = "No such domain", body = ErrorBody),
    )
)]
/// The domain's retention policy, or the service's default (`source: default`).
pub async fn get_retention(
    State(svc): State<Arc<Service>>,
    Path(name): Path<String>,
) -> ApiResult<Json<Retention>> {
    open(&svc, &name).await?;
    let (p, source) = effective_policy(&svc, &name).await?;
    Ok(Json(Retention::new(p, source)))
}

#[utoipa::path(
    put, path = "/v1/domains/{domain}/retention", tag = "gc",
    params(("domain" = String, Path, description = "Domain name")),
    request_body = RetentionUpdate,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Set; the next GC run applies it", body = Retention),
        (status = 400, description = "Malformed body, bad duration or marker name", body = ErrorBody),
        (status = 404, description = "No such domain", body = ErrorBody),
    )
)]
/// Sets the domain's retention policy (for every site: it is kept in the bucket).
pub async fn put_retention(
    State(svc): State<Arc<Service>>,
    Path(name): Path<String>,
    body: Body,
) -> ApiResult<Json<Retention>> {
    let req: RetentionUpdate = object_body(&read_body(body, JSON_LIMIT).await?)?;
    open(&svc, &name).await?;
    let policy = req.into_policy(svc.config.retention.policy())?;
    tidemark_gc::lease::save_policy(&svc.store, &name, &policy).await?;
    tracing::info!(domain = %name, ?policy, "retention policy set");
    Ok(Json(Retention::new(policy, PolicySource::Domain)))
}

#[utoipa::path(
    delete, path = "/v1/domains/{domain}/retention", tag = "gc",
    params(("domain" = String, Path, description = "Domain name")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The domain follows the service's default again", body = Retention),
        (status = 400, description = "Bad name", body = ErrorBody),
        (status = 404, description = "No such domain", body = ErrorBody),
    )
)]
/// Removes the domain's policy: the service's default applies again.
pub async fn delete_retention(
    State(svc): State<Arc<Service>>,
    Path(name): Path<String>,
) -> ApiResult<Json<Retention>> {
    open(&svc, &name).await?;
    match svc
        .store
        .delete(&tidemark_format::keys::retention_key(&name))
        .await
    {
        Ok(()) | Err(StoreError::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Json(Retention::new(
        svc.config.retention.policy(),
        PolicySource::Default,
    )))
}

/// A GC run to make.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GcRequest {
    /// Only report what a run would do; change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

#[utoipa::path(
    post, path = "/v1/domains/{domain}/gc", tag = "gc",
    params(("domain" = String, Path, description = "Domain name")),
    request_body(content = Option<GcRequest>, description = "Optional; an empty body runs for real"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The run's report (see `deferred`)", body = GcReport),
        (status = 400, body = ErrorBody),
        (status = 404, description = "No such domain", body = ErrorBody),
        (status = 409, description = "A run of the domain is under way (`conflict`), another site owns it (`fenced`), or this site released it (`released`)", body = ErrorBody),
        (status = 500, description = "A stored object is damaged (`corrupt`)", body = ErrorBody),
    )
)]
/// Runs GC on a domain now, with its retention policy, and answers its report. Only
/// the domain's owner collects.
pub async fn run_gc(
    State(svc): State<Arc<Service>>,
    Path(name): Path<String>,
    body: Body,
) -> ApiResult<Json<GcReport>> {
    let bytes = read_body(body, JSON_LIMIT).await?;
    // An empty body is a run with the defaults, as `curl -X POST` sends it.
    let req: GcRequest = if bytes.iter().all(u8::is_ascii_whitespace) {
        GcRequest::default()
    } else {
        object_body(&bytes)?
    };
    let rec = open(&svc, &name).await?;
    let report = gc::run_detached(svc, rec.name, req.dry_run).await?;
    Ok(Json(report))
}

#[utoipa::path(
    get, path = "/v1/domains/{domain}/gc", tag = "gc",
    params(("domain" = String, Path, description = "Domain name")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The last report of this service process", body = GcReport),
        (status = 400, body = ErrorBody),
        (status = 404, description = "No such domain, or no run since the service started", body = ErrorBody),
    )
)]
/// The report of the last GC run of a domain in this service process (dry or not).
pub async fn last_gc(
    State(svc): State<Arc<Service>>,
    Path(name): Path<String>,
) -> ApiResult<Json<GcReport>> {
    open(&svc, &name).await?;
    svc.gc.last_report(&name).map(Json).ok_or_else(|| {
        ApiError::not_found(format!(
            "no GC run of domain {name} since the service started"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("30m"), Ok(1800));
        assert_eq!(parse_duration("24h"), Ok(86_400));
        assert_eq!(parse_duration("7d"), Ok(604_800));
        assert_eq!(parse_duration("0s"), Ok(0));
        for bad in [
            "",
            "s",
            "10",
            "1.5h",
            "-1h",
            "+1h",
            "1 h",
            "1w",
            "99999999999999999999d",
            "213503982334602d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(format_duration(0), "0s");
        assert_eq!(format_duration(90), "90s");
        assert_eq!(format_duration(1800), "30m");
        assert_eq!(format_duration(86_400), "1d");
        assert_eq!(format_duration(90_000), "25h");
        for s in [0, 59, 61, 3599, 3600, 86_399, 604_800] {
            assert_eq!(parse_duration(&format_duration(s)), Ok(s));
        }
    }

    #[test]
    fn updates_take_the_default_for_what_they_leave_out() {
        let default = RetentionPolicy::default();
        let p = RetentionUpdate {
            hourly: Some(3),
            pinned: Some(vec!["golden".into()]),
            ..Default::default()
        }
        .into_policy(default.clone())
        .expect("valid");
        assert_eq!(p.hourly, 3);
        assert_eq!(p.daily, default.daily);
        assert_eq!(p.pitr_window_secs, default.pitr_window_secs);
        assert_eq!(p.pinned, ["golden"]);
        let bad = RetentionUpdate {
            pinned: Some(vec!["a/b".into()]),
            ..Default::default()
        };
        assert_eq!(
            bad.into_policy(default.clone()).map_err(|e| e.code),
            Err("invalid_input")
        );
        let bad = RetentionUpdate {
            pitr_window: Some("1y".into()),
            ..Default::default()
        };
        assert!(bad.into_policy(default).is_err());
        let json = r#"{"pitr_window": "24h", "hourly": 48, "daily": 14, "weekly": 8, "monthly": 12, "pinned": ["golden"]}"#;
        assert!(serde_json::from_str::<RetentionUpdate>(json).is_ok());
        assert!(serde_json::from_str::<RetentionUpdate>(r#"{"window": "1h"}"#).is_err());
    }
}
