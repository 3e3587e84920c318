//! Leases and retention policies, as kept in the bucket so that every site sees them:
//! the owner's GC keeps what another site's restore, test copy or replica reads.

use bytes::Bytes;
use tidemark_format::{keys, LeaseRecord, RetentionPolicy};
use tidemark_objstore::{DynStore, StoreError};

use crate::{GcError, Result};

/// Writes (or renews) a lease.
pub async fn put_lease(store: &DynStore, domain: &str, lease: &LeaseRecord) -> Result<()> {
    let bytes = lease
        .encode()
        .map_err(|e| GcError::Invalid(e.to_string()))?;
    store
        .put(
            &keys::lease_key(domain, &lease.site, &lease.holder),
            Bytes::from(bytes),
        )
        .await?;
    Ok(())
}

/// Removes a lease (gone already is fine).
pub async fn drop_lease(store: &DynStore, domain: &str, site: &str, holder: &str) -> Result<()> {
    match store.delete(&keys::lease_key(domain, site, holder)).await {
        Ok(()) | Err(StoreError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Every lease on the domain that has not expired at `now`. A damaged lease cannot
/// be read, so nobody can tell what it holds: GC stops rather than guess.
pub async fn read_leases(store: &DynStore, domain: &str, now: i64) -> Result<Vec<LeaseRecord>> {
    let mut out = Vec::new();
    for o in store.list_all(&keys::leases_prefix(domain), None).await? {
        let got = match store.get(&o.key).await {
            Ok(g) => g,
            Err(StoreError::NotFound { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        let lease = LeaseRecord::decode(&got.data).map_err(|source| GcError::Corrupt {
            key: o.key.clone(),
            reason: source.to_string(),
        })?;
        if lease.expires >= now {
            out.push(lease);
        }
    }
    Ok(out)
}

/// The domain's retention policy, if one was set.
pub async fn load_policy(store: &DynStore, domain: &str) -> Result<Option<RetentionPolicy>> {
    let key = keys::retention_key(domain);
    match store.get(&key).await {
        Ok(got) => RetentionPolicy::decode(&got.data)
            .map(Some)
            .map_err(|e| GcError::Corrupt {
                key,
                reason: e.to_string(),
            }),
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Sets the domain's retention policy.
pub async fn save_policy(store: &DynStore, domain: &str, policy: &RetentionPolicy) -> Result<()> {
    let bytes = policy
        .encode()
        .map_err(|e| GcError::Invalid(e.to_string()))?;
    store
        .put(&keys::retention_key(domain), Bytes::from(bytes))
        .await?;
    Ok(())
}
