//! Scrubbing: read every object of a domain and verify it completely.
//!
//! GC leaves objects behind that no point reads any more (segment objects it
//! superseded, packs without a live chunk), deleted only after a grace period, and an
//! interrupted commit may leave packs no segment names. Those are not damage: what is
//! checked is the log the index holds (the current object of each of its segments and
//! the packs it locates chunks in), segments committed since, and GC's manifests.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use tidemark_format::pack::verify_pack;
use tidemark_format::{keys, Manifest, OwnerRecord, PackId, Segment};
use tidemark_objstore::DynStore;
use tidemark_pitr_index::{sync, Index};

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

/// Reads and verifies `domain.json`, `owner.json`, GC's manifests, the current object
/// of every segment `index` holds of the domain and of every segment committed after
/// them, and every pack those read from; and that none is missing. Checking against
/// the index also catches a lost newest segment, which the bucket alone cannot show.
/// An index that has not followed GC's newest manifest yet is read as that manifest
/// says it will be.
pub async fn verify_domain(store: &DynStore, index: &Index, domain: &str) -> Result<VerifyReport> {
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
    // Taken together so that no GC manifest is applied between the reads.
    let (metas, indexed_packs, indexed_epoch) = {
        let _reading = index.read_domain(domain).await;
        (
            index.segments(domain, 0..=u64::MAX)?,
            index.packs(domain)?,
            index.gc_epoch(domain)?,
        )
    };
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

    let mut newest: Option<Manifest> = None;
    let mut newest_listed = 0;
    for o in &objects {
        let Some(epoch) = keys::parse_manifest_key(&o.key) else {
            continue;
        };
        newest_listed = newest_listed.max(epoch);
        let data = get(store, &o.key, &mut report).await?;
        match Manifest::decode_at(&data, domain, epoch) {
            Ok(m) => {
                if newest.as_ref().is_none_or(|n| n.epoch < m.epoch) {
                    newest = Some(m);
                }
            }
            Err(e) => report.damaged.push((o.key.clone(), e.to_string())),
        }
    }
    if indexed_epoch > newest_listed {
        report.damaged.push((
            keys::manifest_key(domain, indexed_epoch),
            "missing: the index was brought to it".into(),
        ));
    }

    // seq -> epoch of its current object, and the packs that must be there.
    let mut current: BTreeMap<u64, u64> = metas.iter().map(|m| (m.seq, m.epoch)).collect();
    let mut required: BTreeSet<PackId> = indexed_packs.iter().map(|(id, _)| *id).collect();
    if let Some(m) = newest.filter(|m| m.epoch > indexed_epoch) {
        current.retain(|&seq, _| seq > m.upto);
        current.extend(m.segments.iter().map(|v| (v.seq, v.epoch)));
        required = m.live_packs.iter().copied().collect();
        for meta in metas.iter().filter(|meta| meta.seq > m.upto) {
            required.extend(meta.pack_ids()?);
        }
    }
    // Segments committed after what the index holds are checked as the log has them.
    let held_last = current.keys().next_back().copied().unwrap_or(0);
    let mut tail = BTreeSet::new();
    for o in &objects {
        if let Some((seq, 0)) = keys::parse_segment_object_key(&o.key) {
            if seq > held_last {
                tail.insert(seq);
                current.insert(seq, 0);
            }
        }
    }

    let present: HashSet<&str> = objects.iter().map(|o| o.key.as_str()).collect();
    let owner_key = keys::owner_key(domain);
    let has_segments = objects
        .iter()
        .any(|o| keys::parse_segment_object_key(&o.key).is_some());
    if !present.contains(owner_key.as_str()) && has_segments {
        report.damaged.push((
            owner_key.clone(),
            "missing: the log has segments, so someone owned the domain".into(),
        ));
    }
    if present.contains(owner_key.as_str()) {
        let data = get(store, &owner_key, &mut report).await?;
        if let Err(e) = OwnerRecord::decode(&data) {
            report.damaged.push((owner_key.clone(), e.to_string()));
        }
    }

    for (&seq, &epoch) in &current {
        let key = keys::segment_object_key(domain, seq, epoch);
        if !present.contains(key.as_str()) {
            // Segments committed since were found listed: only held ones go missing.
            report.damaged.push((
                key,
                "missing: it is current in the index (or in GC's newest manifest)".into(),
            ));
            continue;
        }
        let data = get(store, &key, &mut report).await?;
        match Segment::decode_at(&data, domain, seq) {
            // Packs the index located chunks in are required already; a segment it
            // does not hold yet names its own.
            Ok(s) if tail.contains(&seq) => required.extend(s.new_packs),
            Ok(_) => {}
            Err(e) => report.damaged.push((key, e.to_string())),
        }
    }
    if let Some(&last) = tail.last() {
        for seq in (held_last + 1..=last).filter(|s| !tail.contains(s)) {
            report.damaged.push((
                keys::segment_key(domain, seq),
                "missing: the log has a later segment".into(),
            ));
        }
    }

    for id in required {
        let key = keys::pack_key(domain, id);
        if !present.contains(key.as_str()) {
            report
                .damaged
                .push((key, "missing: the index or a segment references it".into()));
            continue;
        }
        let data = get(store, &key, &mut report).await?;
        if let Err(e) = verify_pack(&data, id) {
            report.damaged.push((key, e.to_string()));
        }
    }
    Ok(report)
}

/// Reads one listed object, counting it.
async fn get(store: &DynStore, key: &str, report: &mut VerifyReport) -> Result<bytes::Bytes> {
    let data = store
        .get(key)
        .await
        .map_err(|e| RestoreError::store(key, e))?
        .data;
    report.objects += 1;
    report.bytes += data.len() as u64;
    Ok(data)
}
