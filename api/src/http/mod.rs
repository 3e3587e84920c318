//! The HTTP API under `/v1`, its OpenAPI document, and the health and metrics routes.

mod domains;
mod extract;
mod failover;
mod gc;
mod health;
mod jobs;
mod points;
mod restores;
mod test_copies;
mod writes;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::service::error::{ApiError, ErrorBody};
use crate::service::Service;

pub use writes::{encode_writes, WireData};

/// The OpenAPI document, derived from the handlers and their types.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "tidemark",
        description = "Disaster-recovery storage: protect disks into a bucket, restore any point in time."
    ),
    paths(
        domains::create_domain,
        domains::list_domains,
        domains::get_domain,
        domains::take_over,
        domains::verify,
        domains::rebuild_index,
        writes::push_writes,
        writes::flush,
        writes::add_marker,
        points::list_points,
        points::resolve_point,
        restores::start_restore,
        test_copies::create_test_copy,
        test_copies::list_test_copies,
        test_copies::get_test_copy,
        test_copies::delete_test_copy,
        jobs::list_jobs,
        jobs::get_job,
        jobs::cancel_job,
        jobs::job_events,
        failover::start_failover,
        failover::release,
        failover::start_replica,
        failover::get_replica,
        failover::list_replicas,
        failover::delete_replica,
        failover::rollback_replica,
        failover::resume_replica,
        failover::complete_replica,
        gc::get_retention,
        gc::put_retention,
        gc::delete_retention,
        gc::run_gc,
        gc::last_gc,
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerAuth),
    tags(
        (name = "domains", description = "Protection domains: disks replicated together"),
        (name = "writes", description = "The replication stream"),
        (name = "points", description = "Points in time"),
        (name = "recovery", description = "Restores, test copies and their jobs"),
        (name = "failover", description = "Failover, warm replicas (continuous failover and failback), rollback"),
        (name = "gc", description = "Retention policies and garbage collection"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        // Every operation may answer these; listing them once here keeps the
        // handlers' annotations to what is particular to each.
        let common = [
            ("401", "No token, or an unknown one"),
            ("403", "A read token on a call that changes something"),
            ("503", "Stopping, or the object store does not answer"),
        ];
        for item in openapi.paths.paths.values_mut() {
            let ops = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in ops.into_iter().flatten() {
                for (status, what) in common {
                    op.responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| {
                            ResponseBuilder::new()
                                .description(what)
                                .content(
                                    "application/json",
                                    ContentBuilder::new()
                                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                                        .build(),
                                )
                                .build()
                                .into()
                        });
                }
            }
        }
    }
}

/// The service's routes.
pub fn router(svc: Arc<Service>) -> Router {
    let v1 = Router::new()
        .route(
            "/domains",
            post(domains::create_domain).get(domains::list_domains),
        )
        .route("/domains/{domain}", get(domains::get_domain))
        .route("/domains/{domain}/take-over", post(domains::take_over))
        .route("/domains/{domain}/verify", post(domains::verify))
        .route(
            "/domains/{domain}/index/rebuild",
            post(domains::rebuild_index),
        )
        .route("/domains/{domain}/writes", post(writes::push_writes))
        .route("/domains/{domain}/flush", post(writes::flush))
        .route("/domains/{domain}/markers", post(writes::add_marker))
        .route("/domains/{domain}/points", get(points::list_points))
        .route(
            "/domains/{domain}/points/resolve",
            get(points::resolve_point),
        )
        .route("/restores", post(restores::start_restore))
        .route(
            "/test-copies",
            post(test_copies::create_test_copy).get(test_copies::list_test_copies),
        )
        .route(
            "/test-copies/{id}",
            get(test_copies::get_test_copy).delete(test_copies::delete_test_copy),
        )
        .route("/domains/{domain}/failover", post(failover::start_failover))
        .route("/domains/{domain}/release", post(failover::release))
        .route(
            "/domains/{domain}/replica",
            post(failover::start_replica)
                .get(failover::get_replica)
                .delete(failover::delete_replica),
        )
        .route(
            "/domains/{domain}/replica/rollback",
            post(failover::rollback_replica),
        )
        .route(
            "/domains/{domain}/replica/resume",
            post(failover::resume_replica),
        )
        .route(
            "/domains/{domain}/replica/complete",
            post(failover::complete_replica),
        )
        .route(
            "/domains/{domain}/retention",
            get(gc::get_retention)
                .put(gc::put_retention)
                .delete(gc::delete_retention),
        )
        .route("/domains/{domain}/gc", post(gc::run_gc).get(gc::last_gc))
        .route("/replicas", get(failover::list_replicas))
        .route("/jobs", get(jobs::list_jobs))
        .route("/jobs/{id}", get(jobs::get_job))
        .route("/jobs/{id}/cancel", post(jobs::cancel_job))
        .route("/jobs/{id}/events", get(jobs::job_events))
        .route_layer(middleware::from_fn_with_state(svc.clone(), authenticate))
        .route("/openapi.json", get(openapi));
    Router::new()
        .nest("/v1", v1)
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(svc)
}

async fn authenticate(State(svc): State<Arc<Service>>, req: Request, next: Next) -> Response {
    match svc.tokens.check(&req) {
        Ok(()) => next.run(req).await,
        Err(e) => {
            tracing::info!(method = %req.method(), path = %req.uri().path(), status = e.status.as_u16(), "refused");
            drain(req.into_body(), svc.config.max_push_body()).await;
            e.into_response()
        }
    }
}

/// Reads and drops the body a refused client is still sending, up to `limit` bytes and
/// 10 seconds: answering before it is read closes the connection under the client,
/// which then sees a broken pipe instead of the 401 or 403 that tells it what is wrong.
/// Frames are dropped as they come, so refused requests hold no memory.
async fn drain(body: axum::body::Body, limit: u64) {
    use futures::StreamExt;
    let mut stream = body.into_data_stream();
    let mut seen = 0u64;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Some(Ok(frame)) = stream.next().await {
            seen += frame.len() as u64;
            if seen > limit {
                break;
            }
        }
    })
    .await;
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::method_not_allowed(format!(
        "{} is not allowed on {}",
        req.method(),
        req.uri().path()
    ))
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!("no route {} {}", req.method(), req.uri().path()))
}
