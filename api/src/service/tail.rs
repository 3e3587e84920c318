//! The tailer: follows the log of every domain in the store (DESIGN.md section 7), so
//! that a recovery site's index has the points the protected site commits, within one
//! interval of their commit.

use std::sync::Arc;
use std::time::Duration;

use tidemark_format::keys;
use tidemark_ingest::{IngestContext, IngestError};
use tidemark_objstore::StoreError;
use tidemark_pitr_index::{sync, IndexError};
use tokio_util::sync::CancellationToken;

use super::metrics::Metrics;

/// Names of the domains in the store: one listing request per domain, skipping over
/// each domain's objects by starting the next listing after its prefix.
pub async fn list_domains(ctx: &IngestContext) -> Result<Vec<String>, StoreError> {
    let mut names = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = ctx.store.list("domains/", after.as_deref(), 1).await?;
        let Some(first) = page.objects.first() else {
            return Ok(names);
        };
        let Some(name) = first
            .key
            .strip_prefix("domains/")
            .and_then(|rest| rest.split('/').next())
        else {
            return Ok(names);
        };
        // Names are of `A-Za-z0-9._-`, all below DEL: nothing of this domain sorts
        // after `domains/NAME/\x7f`, and no other domain sorts between.
        after = Some(format!("{}\x7f", keys::domain_prefix(name)));
        if tidemark_format::names::validate_name("domain", name).is_ok() {
            names.push(name.to_owned());
        }
    }
}

/// Indexes what other writers committed to every domain of the store, once. A domain
/// that fails (a damaged object, say) is reported and skipped: the others go on.
pub async fn tail_once(ctx: &IngestContext, metrics: &Metrics) -> Result<u64, StoreError> {
    let mut indexed = 0;
    for name in list_domains(ctx).await? {
        match tail_domain(ctx, &name).await {
            Ok(n) => indexed += n,
            // Restores of the domain keep a new GC manifest from being applied; they
            // end, and a later round catches up. Nothing is wrong meanwhile.
            Err(IngestError::Index(IndexError::Busy(_))) => {
                tracing::debug!(domain = %name, "tailing skipped: restores hold the index");
            }
            Err(e) => {
                metrics.tail_failed();
                tracing::warn!(domain = %name, "tailing failed: {e}");
            }
        }
    }
    Ok(indexed)
}

async fn tail_domain(ctx: &IngestContext, name: &str) -> Result<u64, IngestError> {
    let rec = match tidemark_ingest::domain::open_domain(ctx, name).await {
        Ok(rec) => rec,
        // A domain being created has packs before its domain.json: skip it this time.
        Err(IngestError::UnknownDomain(_)) => return Ok(0),
        Err(e) => return Err(e),
    };
    let _lock = ctx.index.lock_commits(name).await;
    Ok(sync::catch_up(&ctx.store, &ctx.index, &rec).await?.len() as u64)
}

/// Runs the tailer until `stop`.
pub async fn run(
    ctx: IngestContext,
    metrics: Arc<Metrics>,
    interval: Duration,
    stop: CancellationToken,
) {
    loop {
        match tail_once(&ctx, &metrics).await {
            Ok(n) if n > 0 => {
                tracing::debug!(segments = n, "indexed segments of other writers");
                metrics.tailed(n);
            }
            Ok(_) => {}
            Err(e) => {
                metrics.tail_failed();
                tracing::warn!("listing the store's domains failed: {e}");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.cancelled() => return,
        }
    }
}
