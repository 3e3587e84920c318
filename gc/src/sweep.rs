//! Deleting what earlier runs made garbage, and orphans.
//!
//! The garbage of manifest `e` goes once `e` is older than the grace period and no
//! unexpired lease reads at an epoch before `e` (a site whose index is older may still
//! read those objects). Manifests older than the newest go with their garbage; the
//! newest stays, it is the snapshot a rebuild starts from. Orphans are objects no
//! index or manifest knows: packs of a crashed ingest, rewrites of a crashed run. Each
//! is deleted once it was seen unreferenced for the orphan grace period, which is
//! longer than any commit takes; the first sighting is kept in the index's state.

use std::collections::{BTreeMap, HashSet};

use tidemark_format::{keys, LeaseRecord, Manifest};
use tidemark_objstore::{DynStore, StoreError};
use tidemark_pitr_index::{sync, Index};

use crate::{GcConfig, GcError, GcFailPoint, GcReport, Result};

const SWEPT_KEY: &[u8] = b"gc/swept";
const SUSPECTS_KEY: &[u8] = b"gc/suspects";

/// Deletes `key`, returning the bytes it held (0 if it was gone already).
async fn delete(store: &DynStore, key: &str) -> Result<u64> {
    let size = match store.head(key).await {
        Ok(m) => m.size,
        Err(StoreError::NotFound { .. }) => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    match store.delete(key).await {
        Ok(()) | Err(StoreError::NotFound { .. }) => Ok(size),
        Err(e) => Err(e.into()),
    }
}

fn read_u64(index: &Index, domain: &str, key: &[u8]) -> Result<u64> {
    Ok(index
        .get_state(domain, key)?
        .and_then(|v| v.try_into().ok().map(u64::from_le_bytes))
        .unwrap_or(0))
}

/// Deletes the garbage of every manifest that may go, oldest first, stopping at the
/// first that may not.
pub(crate) async fn sweep_garbage(
    store: &DynStore,
    index: &Index,
    domain: &str,
    cfg: &GcConfig,
    leases: &[LeaseRecord],
    now: i64,
    report: &mut GcReport,
) -> Result<()> {
    let epochs = sync::manifest_epochs(store, domain).await?;
    let Some(&newest) = epochs.last() else {
        return Ok(());
    };
    let swept = read_u64(index, domain, SWEPT_KEY)?;
    let grace = i64::try_from(cfg.grace.as_nanos()).unwrap_or(i64::MAX);
    for &e in &epochs {
        if e > swept {
            let m = sync::read_manifest(store, domain, e).await?;
            let old_enough = now.saturating_sub(m.time) >= grace;
            let unread = leases.iter().all(|l| l.epoch >= e);
            if !(old_enough && unread) {
                break;
            }
            delete_garbage(store, domain, &m, cfg, report).await?;
            index.put_state(domain, &[(SWEPT_KEY.to_vec(), e.to_le_bytes().to_vec())])?;
        }
        if e < newest {
            delete(store, &keys::manifest_key(domain, e)).await?;
        }
    }
    Ok(())
}

async fn delete_garbage(
    store: &DynStore,
    domain: &str,
    m: &Manifest,
    cfg: &GcConfig,
    report: &mut GcReport,
) -> Result<()> {
    let keys: Vec<String> = m
        .garbage_segments
        .iter()
        .map(|v| keys::segment_object_key(domain, v.seq, v.epoch))
        .chain(m.garbage_packs.iter().map(|p| keys::pack_key(domain, *p)))
        .collect();
    let half = keys.len() / 2;
    for (i, key) in keys.iter().enumerate() {
        if i == half && cfg.fail_at == Some(GcFailPoint::MidSweep) && half > 0 {
            return Err(GcError::Injected(GcFailPoint::MidSweep));
        }
        let bytes = delete(store, key).await?;
        if bytes > 0 {
            report.objects_deleted += 1;
            report.bytes_reclaimed += bytes;
        }
    }
    Ok(())
}

/// Deletes rewrites of epochs no manifest committed (a crashed run's), so the next
/// run can write its epoch. Returns how many.
pub(crate) async fn drop_uncommitted(
    store: &DynStore,
    domain: &str,
    from_epoch: u64,
) -> Result<u64> {
    let mut n = 0;
    for o in store.list_all(&keys::log_prefix(domain), None).await? {
        if keys::parse_segment_object_key(&o.key).is_some_and(|(_, e)| e >= from_epoch)
            && delete(store, &o.key).await? > 0
        {
            n += 1;
        }
    }
    Ok(n)
}

/// Deletes orphans seen unreferenced for the orphan grace period; records the others.
pub(crate) async fn sweep_orphans(
    store: &DynStore,
    index: &Index,
    domain: &str,
    cfg: &GcConfig,
    now: i64,
    report: &mut GcReport,
) -> Result<()> {
    // Garbage of manifests still in the bucket is the sweep's above, not an orphan.
    let mut pending = HashSet::new();
    for e in sync::manifest_epochs(store, domain).await? {
        let m = sync::read_manifest(store, domain, e).await?;
        pending.extend(
            m.garbage_segments
                .iter()
                .map(|v| keys::segment_object_key(domain, v.seq, v.epoch)),
        );
        pending.extend(m.garbage_packs.iter().map(|p| keys::pack_key(domain, *p)));
    }
    let known: HashSet<_> = index.packs(domain)?.into_iter().map(|(id, _)| id).collect();
    let mut orphans = Vec::new();
    for o in store.list_all(&keys::packs_prefix(domain), None).await? {
        if let Some(id) = keys::parse_pack_key(&o.key) {
            if !known.contains(&id) && !pending.contains(&o.key) {
                orphans.push(o.key);
            }
        }
    }
    for o in store.list_all(&keys::log_prefix(domain), None).await? {
        let Some((seq, epoch)) = keys::parse_segment_object_key(&o.key) else {
            continue;
        };
        // Ingest's objects are superseded only through manifests.
        if epoch == 0 || pending.contains(&o.key) {
            continue;
        }
        if index.segment(domain, seq)?.is_none_or(|m| m.epoch != epoch) {
            orphans.push(o.key);
        }
    }
    let seen: BTreeMap<String, i64> = index
        .get_state(domain, SUSPECTS_KEY)?
        .and_then(|v| serde_json::from_slice(&v).ok())
        .unwrap_or_default();
    let grace = i64::try_from(cfg.orphan_grace.as_nanos()).unwrap_or(i64::MAX);
    let mut still = BTreeMap::new();
    for key in orphans {
        let first = seen.get(&key).copied().unwrap_or(now);
        if now.saturating_sub(first) >= grace {
            let bytes = delete(store, &key).await?;
            if bytes > 0 {
                report.orphans_deleted += 1;
                report.bytes_reclaimed += bytes;
            }
        } else {
            still.insert(key, first);
        }
    }
    let encoded = serde_json::to_vec(&still).map_err(|e| GcError::Invalid(e.to_string()))?;
    index.put_state(domain, &[(SUSPECTS_KEY.to_vec(), encoded)])?;
    Ok(())
}
