//! Scrubbing: read every object of a domain and verify it completely.

use std::collections::HashSet;

use tidemark_format::pack::verify_pack;
use tidemark_format::{keys, PackId, Segment};
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

/// Reads and verifies `domain.json`, every segment and every pack of a domain.
pub async fn verify_domain(store: &DynStore, domain: &str) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    match sync::load_domain(store, domain).await {
        Ok(_) => report.objects += 1,
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
    let present: HashSet<PackId> = objects
        .iter()
        .filter_map(|o| keys::parse_pack_key(&o.key))
        .collect();
    let mut referenced = HashSet::new();
    for o in objects {
        let segment = keys::parse_segment_key(&o.key);
        let pack = keys::parse_pack_key(&o.key);
        if segment.is_none() && pack.is_none() {
            continue;
        }
        let data = store
            .get(&o.key)
            .await
            .map_err(|e| RestoreError::store(&o.key, e))?
            .data;
        report.bytes += data.len() as u64;
        let check = if let Some(seq) = segment {
            Segment::decode_at(&data, domain, seq).map(|s| referenced.extend(s.new_packs))
        } else {
            pack.map_or(Ok(()), |id| verify_pack(&data, id).map(|_| ()))
        };
        report.objects += 1;
        if let Err(e) = check {
            report.damaged.push((o.key, e.to_string()));
        }
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
