//! `tidemark points`.

use tidemark_pitr_index::format_time;

use crate::cli::PointsArgs;
use crate::site::Site;

pub async fn run(site: &Site, a: PointsArgs) -> anyhow::Result<()> {
    let rec = super::refresh(site, &a.domain).await?;
    let points = site.index.points(&rec.name, 0..=u64::MAX)?;
    if a.json {
        let list: Vec<_> = points
            .iter()
            .map(|p| {
                serde_json::json!({
                    "seq": p.seq,
                    "time": format_time(p.time_end),
                    "kind": p.kind,
                    "markers": p.markers.iter().map(|m| m.name.clone()).collect::<Vec<_>>(),
                    "known_good": p.markers.iter().any(|m| m.known_good),
                    "logical_bytes": p.logical_bytes(),
                    "stored_bytes": p.stored_bytes,
                    "site": p.site,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(list));
    } else {
        println!(
            "{:>8}  {:<32}  {:>14}  markers",
            "seq", "time", "stored bytes"
        );
        for p in &points {
            let markers: Vec<_> = p
                .markers
                .iter()
                .map(|m| {
                    if m.known_good {
                        format!("{} (good)", m.name)
                    } else {
                        m.name.clone()
                    }
                })
                .collect();
            println!(
                "{:>8}  {:<32}  {:>14}  {}",
                p.seq,
                format_time(p.time_end),
                p.stored_bytes,
                markers.join(", ")
            );
        }
    }
    Ok(())
}
