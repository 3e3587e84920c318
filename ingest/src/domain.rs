//! Creating and opening domains. `domain.json` is written create-only, so two sites
//! creating the same domain agree on one definition.

use bytes::Bytes;
use tidemark_format::{keys, DomainRecord};
use tidemark_objstore::StoreError;

use tidemark_pitr_index::sync;

use crate::{IngestContext, IngestError, Result};

/// Creates a domain, or returns the existing one if it has the same disks.
pub async fn create_domain(ctx: &IngestContext, rec: DomainRecord) -> Result<DomainRecord> {
    let bytes = rec.encode()?;
    let existing = match ctx
        .store
        .put_if_absent(&keys::domain_key(&rec.name), Bytes::from(bytes))
        .await
    {
        Ok(_) => rec,
        Err(StoreError::AlreadyExists { .. }) => {
            let existing = sync::load_domain(&ctx.store, &rec.name).await?;
            if existing.disks != rec.disks {
                return Err(IngestError::Conflict(format!(
                    "domain {} exists with other disks: {}",
                    rec.name,
                    describe(&existing)
                )));
            }
            existing
        }
        Err(e) => return Err(e.into()),
    };
    ctx.index.put_domain(&existing)?;
    Ok(existing)
}

/// Opens a domain: from the index, else from the bucket (then it is recorded locally).
pub async fn open_domain(ctx: &IngestContext, name: &str) -> Result<DomainRecord> {
    tidemark_format::names::validate_name("domain", name)?;
    if let Some(rec) = ctx.index.domain(name)? {
        return Ok(rec);
    }
    let rec = sync::load_domain(&ctx.store, name).await?;
    ctx.index.put_domain(&rec)?;
    Ok(rec)
}

/// `name=size, ...` of a domain's disks, for messages.
pub fn describe(rec: &DomainRecord) -> String {
    rec.disks
        .iter()
        .map(|d| format!("{}={} bytes", d.name, d.size))
        .collect::<Vec<_>>()
        .join(", ")
}
