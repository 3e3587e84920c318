//! `tidemark gc`: on the local data directory, or through a service with `--server`.

use std::path::PathBuf;

use serde_json::json;

use crate::cli::GcArgs;
use crate::client::Client;
use crate::config::ServiceConfig;
use crate::site::Site;
use tidemark_gc::GcReport;

/// Runs GC on the local data directory, with the domain's policy or the default one
/// (the service's `[retention]` defaults: no configuration is read here).
pub async fn run(site: &Site, data_dir: PathBuf, a: GcArgs) -> anyhow::Result<()> {
    let rec = super::refresh(site, &a.domain).await?;
    let config = ServiceConfig {
        data_dir,
        ..ServiceConfig::default()
    };
    let policy = match tidemark_gc::lease::load_policy(&site.store, &rec.name).await? {
        Some(p) => p,
        None => config.retention.policy(),
    };
    let report = tidemark_gc::run(
        &site.ingest(),
        &rec.name,
        &policy,
        a.dry_run,
        tidemark_ingest::now_ns(),
        &config.gc_config(),
    )
    .await?;
    print(&report, a.json)
}

/// Runs GC through the service.
pub async fn remote(client: &Client, a: GcArgs) -> anyhow::Result<()> {
    let report: GcReport = client
        .post(
            &format!("/v1/domains/{}/gc", a.domain),
            &json!({"dry_run": a.dry_run}),
        )
        .await?;
    print(&report, a.json)
}

fn print(r: &GcReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(r)?);
        return Ok(());
    }
    let what = if r.dry_run {
        " (dry run: nothing changed)"
    } else {
        ""
    };
    println!("GC of domain {}{what}", r.domain);
    let epoch = r.epoch.map_or("none".to_owned(), |e| e.to_string());
    let rows = [
        (
            "points kept",
            format!("{} of {}", r.points_retained, r.points_before),
        ),
        ("segments deleted", r.segments_deleted.to_string()),
        (
            "segments merged",
            format!("{} into {}", r.segments_merged, r.merged_written),
        ),
        ("segments demoted", r.segments_demoted.to_string()),
        ("images written", r.images_written.to_string()),
        ("chunks freed", r.chunks_freed.to_string()),
        (
            "packs",
            format!("{} repacked, {} dead", r.packs_repacked, r.packs_dead),
        ),
        ("bytes uploaded", r.bytes_uploaded.to_string()),
        ("bytes reclaimable", r.bytes_reclaimable.to_string()),
        (
            "bytes reclaimed",
            format!(
                "{} ({} objects, {} orphans)",
                r.bytes_reclaimed, r.objects_deleted, r.orphans_deleted
            ),
        ),
        (
            "stored bytes",
            format!("{} -> {}", r.stored_bytes_before, r.stored_bytes_after),
        ),
        ("epoch", epoch),
        ("seconds", format!("{:.3}", r.duration_seconds)),
    ];
    for (k, v) in rows {
        println!("  {k:<18} {v}");
    }
    if let Some(why) = &r.deferred {
        println!("  {:<18} {why}", "deferred");
    }
    Ok(())
}
