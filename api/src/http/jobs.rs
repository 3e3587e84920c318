//! Jobs: status, list, cancel, and live progress as Server-Sent Events.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use futures::Stream;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::service::error::{ApiResult, ErrorBody};
use crate::service::jobs::Job;
use crate::service::Service;

/// Least time between two progress events of a running job.
const EVENT_INTERVAL: Duration = Duration::from_millis(250);

/// One Server-Sent Event of a job's stream.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobEvent {
    /// `progress` while the job runs, `end` once, when it has ended.
    pub event: String,
    /// The job, as JSON (as `GET /v1/jobs/{id}` answers it).
    pub data: String,
}

/// Jobs.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobList {
    /// Oldest first.
    pub jobs: Vec<Job>,
}

#[utoipa::path(
    get, path = "/v1/jobs", tag = "recovery",
    security(("bearer" = [])),
    responses((status = 200, body = JobList))
)]
/// Lists every job.
pub async fn list_jobs(State(svc): State<Arc<Service>>) -> Json<JobList> {
    Json(JobList {
        jobs: svc.jobs.list(),
    })
}

#[utoipa::path(
    get, path = "/v1/jobs/{id}", tag = "recovery",
    params(("id" = String, Path, description = "Job id")),
    security(("bearer" = [])),
    responses((status = 200, body = Job), (status = 404, body = ErrorBody))
)]
/// A job's state and progress: bytes done and total, rate, ETA, error.
pub async fn get_job(
    State(svc): State<Arc<Service>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Job>> {
    Ok(Json(svc.jobs.get(&id)?))
}

#[utoipa::path(
    post, path = "/v1/jobs/{id}/cancel", tag = "recovery",
    params(("id" = String, Path, description = "Job id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Cancelling; the job ends `cancelled` and its partial images are removed", body = Job),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The job has already ended", body = ErrorBody),
    )
)]
/// Cancels a job.
pub async fn cancel_job(
    State(svc): State<Arc<Service>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Job>> {
    Ok(Json(svc.jobs.cancel(&id)?))
}

#[utoipa::path(
    get, path = "/v1/jobs/{id}/events", tag = "recovery",
    params(("id" = String, Path, description = "Job id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Server-Sent Events: `progress` events carrying the job as JSON, then one `end` event when it ends", content_type = "text/event-stream", body = JobEvent),
        (status = 404, body = ErrorBody),
    )
)]
/// Streams a job's progress until it ends.
pub async fn job_events(
    State(svc): State<Arc<Service>>,
    Path(id): Path<String>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let rx = svc.jobs.watch(&id)?;
    let stopping = svc.stopping.clone();
    struct St {
        svc: Arc<Service>,
        id: String,
        rx: tokio::sync::watch::Receiver<()>,
        ended: bool,
    }
    let st = St {
        svc,
        id,
        rx,
        ended: false,
    };
    let stream = futures::stream::unfold(st, move |mut st| {
        let stopping = stopping.clone();
        async move {
            if st.ended || stopping.is_cancelled() {
                return None;
            }
            let job = st.svc.jobs.get(&st.id).ok()?;
            let name = if job.state.is_final() {
                st.ended = true;
                "end"
            } else {
                "progress"
            };
            let event = Event::default()
                .event(name)
                .json_data(&job)
                .unwrap_or_else(|_| Event::default().event(name));
            if !st.ended {
                // The next event comes on a change of state or after the interval,
                // whichever is first, so progress flows without flooding.
                tokio::select! {
                    _ = st.rx.changed() => {}
                    _ = tokio::time::sleep(EVENT_INTERVAL) => {}
                    _ = stopping.cancelled() => {}
                }
            }
            Some((Ok(event), st))
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
