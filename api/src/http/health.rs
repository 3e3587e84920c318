//! Liveness, readiness and metrics, for load balancers and Prometheus (no token).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;

use crate::service::error::ApiError;
use crate::service::metrics::{ReplicaGauges, Snapshot};
use crate::service::Service;

/// The process answers.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// The service can do its work: not stopping, and the store answers.
pub async fn readyz(State(svc): State<Arc<Service>>) -> Result<&'static str, ApiError> {
    if svc.stopping.is_cancelled() {
        return Err(ApiError::unavailable("stopping"));
    }
    svc.store
        .list("domains/", None, 1)
        .await
        .map_err(|e| ApiError::unavailable(format!("the object store does not answer: {e}")))?;
    Ok("ready\n")
}

/// Prometheus text format.
pub async fn metrics(State(svc): State<Arc<Service>>) -> Result<impl IntoResponse, ApiError> {
    let now = tidemark_ingest::now_ns();
    let mut domains = Vec::new();
    for name in svc.index.domains()? {
        if let Some(last) = svc.index.last_segment(&name)? {
            let age = (now - last.time_end).max(0) as f64 / 1e9;
            domains.push((name, age, last.seq));
        }
    }
    let snap = Snapshot {
        jobs: svc.jobs.counts(),
        index_bytes: svc.index.size_bytes(),
        domains,
        replicas: svc
            .replicas
            .list()
            .into_iter()
            .map(|r| ReplicaGauges {
                domain: r.record.domain,
                lag_seconds: r.lag_seconds,
                lag_segments: r.lag_segments,
                lag_bytes: r.lag_bytes,
                applied_seq: r.record.applied_seq,
            })
            .collect(),
        store: svc.metered.counts(),
    };
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        svc.metrics.render(&snap),
    ))
}
