//! `tidemark protect`.

use tidemark_format::Marker;
use tidemark_ingest::agent::{protect, DiskSource};
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
    let r = protect(&site.ingest(), &a.domain, &disks, marker).await?;
    println!(
        "{}",
        serde_json::json!({
            "domain": a.domain,
            "seq": r.seq,
            "time": format_time(r.time),
            "new_bytes": r.new_bytes,
            "changed_bytes": r.changed_bytes,
            "logical_bytes": r.logical_bytes,
        })
    );
    Ok(())
}
