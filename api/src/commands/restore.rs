//! `tidemark restore`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tidemark_objstore::{DynStore, MeteredStore};
use tidemark_pitr_index::{format_time, PointSpec};
use tidemark_rehydrator::{restore_disk, RestoreOptions, RestoreProgress};

use crate::cli::RestoreArgs;
use crate::site::Site;

pub async fn run(site: &Site, a: RestoreArgs) -> anyhow::Result<()> {
    let spec: PointSpec = a
        .point
        .parse()
        .map_err(tidemark_rehydrator::RestoreError::Invalid)?;
    let rec = super::refresh(site, &a.domain).await?;
    if rec.disk_index(&a.disk).is_none() {
        return Err(tidemark_rehydrator::RestoreError::Invalid(format!(
            "domain {} has no disk {:?}",
            a.domain, a.disk
        ))
        .into());
    }
    let seq = site.index.resolve_point(&a.domain, &spec)?;
    let progress = Arc::new(RestoreProgress::default());
    let bar = super::progress_bar();
    let ticker = bar.clone().map(|bar| {
        let p = progress.clone();
        tokio::spawn(async move {
            loop {
                bar.set_length(p.total_bytes.load(Ordering::Relaxed));
                bar.set_position(p.done_bytes.load(Ordering::Relaxed));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    });
    let opts = RestoreOptions {
        concurrency: a.concurrency.max(1),
        ..RestoreOptions::default()
    };
    // Every request the restore makes, segments and pack tails included.
    let metered = MeteredStore::new(site.store.clone());
    let store: DynStore = Arc::new(metered.clone());
    let result = restore_disk(
        &store,
        &site.index,
        &a.domain,
        &a.disk,
        seq,
        &a.out,
        &opts,
        progress,
    )
    .await;
    if let Some(t) = ticker {
        t.abort();
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let r = result?;
    if a.json {
        let time = site
            .index
            .segment(&a.domain, seq)?
            .map(|m| format_time(m.time_end));
        println!(
            "{}",
            serde_json::json!({
                "domain": a.domain, "disk": a.disk, "seq": r.seq, "time": time,
                "out": a.out.display().to_string(), "disk_size": r.disk_size, "data_bytes": r.data_bytes,
                "segments": r.segments, "chunks": r.chunks, "requests": r.requests, "fetched_bytes": r.fetched_bytes,
                "store_requests": metered.counts().requests(), "store_bytes_read": metered.counts().bytes_read,
            })
        );
    }
    Ok(())
}
