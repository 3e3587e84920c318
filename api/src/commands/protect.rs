//! `tidemark protect`.

use std::sync::Arc;

use tidemark_format::Marker;
use tidemark_ingest::agent::{protect, DiskSource};
use tidemark_objstore::MeteredStore;
use tidemark_pitr_index::format_time;

use crate::cli::ProtectArgs;
use crate::site::Site;

pub async fn run(site: &Site, a: ProtectArgs) -> anyhow::Result<()> {
    let disks: Vec<DiskSource> = a
        .disks
        .into_iter()
        .map(|(name, path)| DiskSource { name, path })
        .collect();
    let marker = a.marker.map(|name| Marker {
        name,
        known_good: a.known_good,
    });
    let metered = MeteredStore::new(site.store.clone());
    let mut ctx = site.ingest();
    ctx.store = Arc::new(metered.clone());
    let r = protect(&ctx, &a.domain, &disks, marker).await?;
    let counts = metered.counts();
    println!(
        "{}",
        serde_json::json!({
            "domain": a.domain,
            "seq": r.seq,
            "time": format_time(r.time),
            "new_bytes": r.new_bytes,
            "changed_bytes": r.changed_bytes,
            "logical_bytes": r.logical_bytes,
            "store_requests": counts.requests(),
            "store_bytes_written": counts.bytes_written,
        })
    );
    Ok(())
}
