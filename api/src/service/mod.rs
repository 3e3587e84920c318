//! `tidemark serve`: the service's state, its start, and its graceful stop.

pub mod auth;
pub mod error;
pub mod failover;
pub mod gc;
pub mod jobs;
pub mod leases;
pub mod metrics;
pub mod paths;
pub mod pipe;
pub mod records;
pub mod replicas;
pub mod runbook;
pub mod tail;
pub mod test_copies;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tidemark_ingest::IngestContext;
use tidemark_objstore::{DynStore, MeteredStore};
use tidemark_pitr_index::Index;
use tidemark_rehydrator::RestoreOptions;
use tokio_util::sync::CancellationToken;

use crate::config::ServiceConfig;
use crate::site::Site;

use self::auth::Tokens;
use self::gc::Gc;
use self::jobs::Jobs;
use self::leases::Leases;
use self::metrics::Metrics;
use self::paths::RecoveryDir;
use self::pipe::{Pipes, Released};
use self::replicas::Replicas;
use self::test_copies::TestCopies;

/// Everything the handlers share.
pub struct Service {
    /// The configuration it started with.
    pub config: ServiceConfig,
    /// This site's id.
    pub site_id: String,
    /// The object store, counted.
    pub store: DynStore,
    /// The counts of `store`.
    pub metered: MeteredStore,
    /// The local index.
    pub index: Arc<Index>,
    /// Ingest pipes.
    pub pipes: Pipes,
    /// Restore jobs.
    pub jobs: Arc<Jobs>,
    /// Test copies.
    pub test_copies: TestCopies,
    /// Warm replicas (continuous failover and failback).
    pub replicas: Arc<Replicas>,
    /// The leases this site holds on points (restores, test copies, replicas).
    pub leases: Arc<Leases>,
    /// GC runs.
    pub gc: Gc,
    /// Where restores may write.
    pub recovery: RecoveryDir,
    /// Bearer tokens.
    pub tokens: Tokens,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Cancelled when the service begins to stop.
    pub stopping: CancellationToken,
    /// The write path's context, built once from the above.
    ingest: IngestContext,
}

impl Service {
    /// Opens the data directory, the store and the index, and resumes interrupted jobs.
    pub fn open(config: ServiceConfig) -> anyhow::Result<Arc<Service>> {
        let site = Site::open(
            &config.data_dir,
            config.store.as_deref(),
            config.site_id.as_deref(),
        )?;
        let metered = MeteredStore::new(site.store.clone());
        let store: DynStore = Arc::new(metered.clone());
        let metrics = Arc::new(Metrics::default());
        let ctx = IngestContext {
            store: store.clone(),
            index: site.index.clone(),
            config: config.ingest_config(),
            site: site.site_id.clone(),
        };
        let recovery = RecoveryDir::open(&config.recovery_dir()).with_context(|| {
            format!(
                "cannot create the recovery directory {}",
                config.recovery_dir().display()
            )
        })?;
        let opts = RestoreOptions {
            concurrency: config.restore.concurrency,
            max_bytes_per_sec: (config.restore.max_bytes_per_sec > 0)
                .then_some(config.restore.max_bytes_per_sec),
            ..RestoreOptions::default()
        };
        // Nothing runs yet: what is there was left by a run the last stop interrupted.
        let scratch = config.gc_scratch_dir();
        match std::fs::remove_dir_all(&scratch) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!("cannot empty {}: {e}", scratch.display());
            }
            _ => {}
        }
        let leases = Leases::new(
            store.clone(),
            site.index.clone(),
            site.site_id.clone(),
            config.lease_ttl(),
        );
        let jobs = Jobs::open(
            &config.data_dir.join("jobs"),
            store.clone(),
            site.index.clone(),
            opts.clone(),
            config.restore.max_jobs,
            config.restore.keep_ended_jobs,
            metrics.clone(),
            leases.clone(),
        )?;
        let test_copies = TestCopies::open(&config.data_dir.join("test-copies"), leases.clone())?;
        let replicas = Replicas::open(
            &config.data_dir.join("replicas"),
            ctx.clone(),
            metrics.clone(),
            opts,
            Duration::from_millis(config.failover.replica_poll_ms),
            leases.clone(),
        )?;
        let released = Released::open(&config.data_dir.join("released"))?;
        let tokens = Tokens::from_config(&config.tokens, &config.data_dir)?;
        Ok(Arc::new(Service {
            pipes: Pipes::new(
                ctx.clone(),
                metrics.clone(),
                released,
                config.ingest.max_queued_bytes,
            ),
            site_id: site.site_id,
            store,
            metered,
            index: site.index,
            jobs,
            test_copies,
            replicas,
            leases,
            gc: Gc::new(config.gc_config()),
            recovery,
            tokens,
            metrics,
            stopping: CancellationToken::new(),
            ingest: ctx,
            config,
        }))
    }

    /// The write path's context (over the counted store).
    pub fn ingest(&self) -> IngestContext {
        self.ingest.clone()
    }
}

/// Runs the service until SIGINT or SIGTERM, then stops gracefully: no new requests,
/// every push already taken is committed and answered, restore jobs stop where they
/// can resume.
pub async fn serve(config: ServiceConfig) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let svc = Service::open(config)?;
    let addr = listener.local_addr()?;
    tracing::info!(
        site = %svc.site_id,
        store = %svc.config.store.as_deref().unwrap_or("(data dir)/store"),
        recovery_dir = %svc.recovery.root().display(),
        "tidemark listening on http://{addr}"
    );
    // Scripts that start the service on port 0 read the address from here.
    println!("listening on http://{addr}");
    let tailer = tokio::spawn(tail::run(
        svc.ingest(),
        svc.metrics.clone(),
        Duration::from_millis(svc.config.tail.interval_ms),
        svc.stopping.clone(),
    ));
    let leases = tokio::spawn(svc.leases.clone().run(svc.stopping.clone()));
    let scheduled_gc = (svc.config.gc.interval_secs > 0).then(|| {
        tokio::spawn(gc::scheduled(
            svc.clone(),
            Duration::from_secs(svc.config.gc.interval_secs),
            svc.stopping.clone(),
        ))
    });
    let app = crate::http::router(svc.clone());
    let stopping = svc.stopping.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("stopping: finishing requests in flight");
        stopping.cancel();
    });
    let stop = svc.stopping.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
        .context("the HTTP server failed")?;
    svc.jobs.shut_down().await;
    svc.replicas.shut_down().await;
    svc.pipes.close().await;
    let _ = tailer.await;
    if let Some(t) = scheduled_gc {
        let _ = t.await;
    }
    let _ = leases.await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
