//! Garbage collection in the service: runs asked for over the API and scheduled ones,
//! one at a time per domain, with the domain's effective retention policy.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use tidemark_format::RetentionPolicy;
use tidemark_gc::{GcConfig, GcError, GcReport};
use tidemark_ingest::owner;
use tokio_util::sync::CancellationToken;

use super::error::{ApiError, ApiResult};
use super::Service;

/// Where a domain's effective policy comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicySource {
    /// Set for the domain (`retention.json` in the bucket).
    Domain,
    /// The service's `[retention]` configuration.
    Default,
}

/// GC runs of this process.
pub struct Gc {
    config: GcConfig,
    /// One run per domain at a time.
    running: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The last report of each domain (dry runs included).
    last: Mutex<HashMap<String, GcReport>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Gc {
    /// Runs with `config`.
    pub fn new(config: GcConfig) -> Gc {
        Gc {
            config,
            running: Mutex::new(HashMap::new()),
            last: Mutex::new(HashMap::new()),
        }
    }

    /// The last report of `domain` in this process.
    pub fn last_report(&self, domain: &str) -> Option<GcReport> {
        lock(&self.last).get(domain).cloned()
    }

    fn slot(&self, domain: &str) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.running)
            .entry(domain.to_owned())
            .or_default()
            .clone()
    }

    /// Keeps GC runs of `domain` off while held (an index rebuild forgets the index a
    /// run plans on); None if a run is under way.
    pub fn try_hold(&self, domain: &str) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        self.slot(domain).try_lock_owned().ok()
    }
}

/// The policy GC applies to `domain`, and where it comes from.
pub async fn effective_policy(
    svc: &Service,
    domain: &str,
) -> ApiResult<(RetentionPolicy, PolicySource)> {
    match tidemark_gc::lease::load_policy(&svc.store, domain).await {
        Ok(Some(p)) => Ok((p, PolicySource::Domain)),
        Ok(None) => Ok((svc.config.retention.policy(), PolicySource::Default)),
        Err(e) => Err(e.into()),
    }
}

/// Runs GC on `domain` now; a run of the domain already under way is a conflict. The
/// caller has checked the domain exists.
pub async fn run(svc: &Service, domain: &str, dry_run: bool) -> ApiResult<GcReport> {
    let Some(_running) = svc.gc.try_hold(domain) else {
        return Err(ApiError::conflict(format!(
            "a GC run (or an index rebuild) of domain {domain} is under way; run GC when it has ended"
        )));
    };
    if svc.pipes.is_released(domain) {
        return Err(ApiError::released(format!(
            "domain {domain} was released to another site; GC runs at its owner"
        )));
    }
    let (policy, _) = effective_policy(svc, domain).await?;
    let now = tidemark_ingest::now_ns();
    let result =
        tidemark_gc::run(&svc.ingest(), domain, &policy, dry_run, now, &svc.gc.config).await;
    match &result {
        Ok(report) => {
            if !dry_run {
                svc.metrics.gc_ran(domain, report);
            }
            match &report.deferred {
                Some(why) => tracing::info!(domain = %domain, dry_run, "GC deferred: {why}"),
                None => tracing::info!(
                    domain = %domain,
                    dry_run,
                    epoch = ?report.epoch,
                    segments_deleted = report.segments_deleted,
                    segments_merged = report.segments_merged,
                    bytes_reclaimed = report.bytes_reclaimed,
                    seconds = report.duration_seconds,
                    "GC run"
                ),
            }
            lock(&svc.gc.last).insert(domain.to_owned(), report.clone());
        }
        // Refusals, not failures of a run.
        Err(GcError::NotOwner { .. } | GcError::UnknownDomain(_)) => {}
        Err(e) => {
            if !dry_run {
                svc.metrics.gc_failed(domain);
            }
            tracing::warn!(domain = %domain, dry_run, "GC failed: {e}");
        }
    }
    result.map_err(ApiError::from)
}

/// Runs GC on `domain` in a task of its own, so that a client going away does not stop
/// it halfway; a stopping service does (GC leaves nothing half done that a later run
/// does not finish).
pub async fn run_detached(svc: Arc<Service>, domain: String, dry_run: bool) -> ApiResult<GcReport> {
    let stopping = svc.stopping.clone();
    let mut task = tokio::spawn(async move { run(&svc, &domain, dry_run).await });
    tokio::select! {
        r = &mut task => r.map_err(|e| ApiError::internal(format!("the GC run failed: {e}")))?,
        _ = stopping.cancelled() => {
            task.abort();
            Err(ApiError::unavailable("the service is stopping; the GC run was interrupted and a later run finishes its work"))
        }
    }
}

/// Every `interval`, runs GC on each domain this site owns and has not released, with
/// its effective policy, until `stop`. Failures are logged and counted; the next
/// domain and the next round go on.
pub async fn scheduled(svc: Arc<Service>, interval: Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.cancelled() => return,
        }
        let domains = match svc.index.domains() {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!("scheduled GC: cannot list the domains: {e}");
                continue;
            }
        };
        for domain in domains {
            if stop.is_cancelled() {
                return;
            }
            if svc.pipes.is_released(&domain) {
                continue;
            }
            match owner::read_owner(&svc.ingest(), &domain).await {
                Ok(Some(own)) if own.record.site == svc.site_id => {}
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(domain = %domain, "scheduled GC: cannot read the owner: {e}");
                    continue;
                }
            }
            tokio::select! {
                // `run` logs and counts the outcome.
                _ = run(&svc, &domain, false) => {}
                _ = stop.cancelled() => {
                    tracing::info!(domain = %domain, "scheduled GC interrupted by the stop; a later run finishes its work");
                    return;
                }
            }
        }
    }
}

impl From<GcError> for ApiError {
    fn from(e: GcError) -> Self {
        let msg = e.to_string();
        match e {
            GcError::Invalid(_) => ApiError::invalid(msg),
            GcError::UnknownDomain(_) => ApiError::not_found(msg),
            GcError::NotOwner { .. } => ApiError::fenced(msg),
            GcError::Conflict(_) => ApiError::conflict(format!("{msg}; run GC again")),
            GcError::Corrupt { .. } => ApiError::corrupt(msg),
            GcError::Store(s) => s.into(),
            GcError::Index(i) => i.into(),
            GcError::Ingest(i) => i.into(),
            GcError::Restore(r) => r.into(),
            GcError::Io { ref source, .. } if source.kind() == std::io::ErrorKind::StorageFull => {
                ApiError {
                    status: StatusCode::INSUFFICIENT_STORAGE,
                    code: "store_full",
                    message: msg,
                }
            }
            GcError::Io { .. } | GcError::Injected(_) => ApiError::internal(msg),
        }
    }
}
