//! `tidemark owner`: who may append to a domain's log, and taking it over.

use tidemark_ingest::{owner, DomainWriter};
use tidemark_pitr_index::format_time;

use crate::cli::OwnerArgs;
use crate::site::Site;

pub async fn run(site: &Site, a: OwnerArgs) -> anyhow::Result<()> {
    let ctx = site.ingest();
    if a.take_over {
        let (w, fence) = DomainWriter::take_over(ctx, &a.domain, a.expected_generation).await?;
        println!(
            "{}",
            serde_json::json!({
                "domain": a.domain,
                "site": w.writer().site,
                "generation": w.writer().generation,
                "fence_seq": fence.seq,
                "this_site": site.site_id,
            })
        );
        return Ok(());
    }
    tidemark_ingest::domain::open_domain(&ctx, &a.domain).await?;
    let current = owner::read_owner(&ctx, &a.domain).await?;
    let json = match current {
        Some(own) => serde_json::json!({
            "domain": a.domain,
            "site": own.record.site,
            "generation": own.record.generation,
            "since": format_time(own.record.since),
            "this_site": site.site_id,
        }),
        None => serde_json::json!({
            "domain": a.domain,
            "site": null,
            "generation": 0,
            "this_site": site.site_id,
        }),
    };
    println!("{json}");
    Ok(())
}
