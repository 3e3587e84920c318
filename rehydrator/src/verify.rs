//! Scrubbing: read every object of a domain and verify it completely.

use std::collections::HashSet;

use tidemark_format::pack::verify_pack;
use tidemark_format::{keys, OwnerRecord, PackId, Segment};
use tidemark_objstore::DynStore;
use tidemark_pitr_index::sync;

use crate::{RestoreError, Result};

/// What a scrub checked and what it found damaged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Objects read.
    pub objects: u64,
    /// Bytes read.
    pub bytes: u64,
    /// `(key, reason)` of every damaged object.
    pub damaged: Vec<(String, String)>,
}

/// Reads and verifies `domain.json`, `owner.json`, every segment and every pack of a
/// domain, and that the log has no gap. `indexed_last_seq` (the newest seq a local
/// index knows) also catches a lost newest segment, which the bucket alone cannot show.
pub async fn verify_domain(
    store: &DynStore,
    domain: &str,
    indexed_last_seq: Option<u64>,
) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let mut unknown = None;
    match sync::load_domain(store, domain).await {
        Ok(_) => report.objects += 1,
        // Other objects of the domain without its domain.json are damage, not an
        // unknown domain: decided after the listing.
        Err(e @ tidemark_pitr_index::IndexError::UnknownDomain(_)) => unknown = Some(e),
        Err(tidemark_pitr_index::IndexError::CorruptObject { key, source }) => {
            report.damaged.push((key, source.to_string()))
        }
        Err(tidemark_pitr_index::IndexError::Store(e)) => {
            return Err(RestoreError::store(&keys::domain_key(domain), e))
        }
        Err(e) => return Err(e.into()),
    }
    let objects = store
        .list_all(&keys::domain_prefix(domain), None)
        .await
        .map_err(RestoreError::Store)?;
    if let Some(e) = unknown {
        if objects.is_empty() {
            return Err(e.into());
        }
        report.damaged.push((
            keys::domain_key(domain),
            "missing: the domain has other objects".into(),
        ));
    }
    let present: HashSet<PackId> = objects
        .iter()
        .filter_map(|o| keys::parse_pack_key(&o.key))
        .collect();
    let owner_key = keys::owner_key(domain);
    let has_owner = objects.iter().any(|o| o.key == owner_key);
    if !has_owner
        && objects
            .iter()
            .any(|o| keys::parse_segment_key(&o.key).is_some())
    {
        report.damaged.push((
            owner_key.clone(),
            "missing: the log has segments, so someone owned the domain".into(),
        ));
    }
    let seqs: Vec<u64> = objects
        .iter()
        .filter_map(|o| keys::parse_segment_key(&o.key))
        .collect();
    let mut referenced = HashSet::new();
    for o in objects {
        let segment = keys::parse_segment_key(&o.key);
        let pack = keys::parse_pack_key(&o.key);
        let owner = o.key == owner_key;
        if segment.is_none() && pack.is_none() && !owner {
            continue;
        }
        let data = store
            .get(&o.key)
            .await
            .map_err(|e| RestoreError::store(&o.key, e))?
            .data;
        report.bytes += data.len() as u64;
        let check = if owner {
            OwnerRecord::decode(&data).map(|_| ())
        } else if let Some(seq) = segment {
            Segment::decode_at(&data, domain, seq).map(|s| referenced.extend(s.new_packs))
        } else {
            pack.map_or(Ok(()), |id| verify_pack(&data, id).map(|_| ()))
        };
        report.objects += 1;
        if let Err(e) = check {
            report.damaged.push((o.key, e.to_string()));
        }
    }
    let last = (seqs.iter().copied().max().unwrap_or(0)).max(indexed_last_seq.unwrap_or(0));
    let have: HashSet<u64> = seqs.into_iter().collect();
    for seq in (1..=last).filter(|s| !have.contains(s)) {
        report.damaged.push((
            keys::segment_key(domain, seq),
            "missing: the log has a later segment (or the index knows it)".into(),
        ));
    }
    let mut missing: Vec<_> = referenced.difference(&present).collect();
    missing.sort();
    for id in missing {
        report.damaged.push((
            keys::pack_key(domain, *id),
            "missing: a segment references it".into(),
        ));
    }
    Ok(report)
}
