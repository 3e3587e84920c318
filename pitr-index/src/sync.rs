//! Indexing what is in the bucket but not (yet) in the local index: segments a crash
//! left unindexed, segments another site committed (the tailer), and a full rebuild.
//! Every object read here is verified; damage is reported with the object's key.

use std::collections::HashMap;
use std::time::Duration;

use tidemark_format::pack::parse_tail;
use tidemark_format::{keys, DomainRecord, Manifest, PackFooter, PackId, Segment, PACK_FOOTER_LEN};
use tidemark_objstore::{DynStore, StoreError};

use crate::{
    ChunkLocation, ExclusiveGuard, Index, IndexError, ManifestPack, ManifestSegment, PackInfo,
    Result,
};

/// A pack tail is usually well under this, so one ranged read fetches it.
const TAIL_GUESS: u64 = 256 << 10;

fn corrupt(key: &str) -> impl FnOnce(tidemark_format::FormatError) -> IndexError + '_ {
    move |source| IndexError::CorruptObject {
        key: key.to_owned(),
        source,
    }
}

/// Reads and verifies `domain.json` from the bucket.
pub async fn load_domain(store: &DynStore, domain: &str) -> Result<DomainRecord> {
    let key = keys::domain_key(domain);
    let got = match store.get(&key).await {
        Ok(g) => g,
        Err(StoreError::NotFound { .. }) => {
            return Err(IndexError::UnknownDomain(domain.to_owned()))
        }
        Err(e) => return Err(e.into()),
    };
    let rec = DomainRecord::decode(&got.data).map_err(corrupt(&key))?;
    if rec.name != domain {
        return Err(IndexError::CorruptObject {
            key,
            source: tidemark_format::FormatError::Corrupt {
                what: "domain record".into(),
                reason: format!("names domain {:?}", rec.name),
            },
        });
    }
    Ok(rec)
}

/// Reads and verifies a pack's index with as few requests as possible.
pub async fn read_pack_tail(
    store: &DynStore,
    domain: &str,
    id: PackId,
    size: Option<u64>,
) -> Result<(PackInfo, Vec<tidemark_format::PackEntry>)> {
    let key = keys::pack_key(domain, id);
    let size = match size {
        Some(s) => s,
        None => store.head(&key).await?.size,
    };
    if size < PACK_FOOTER_LEN as u64 {
        return Err(corrupt(&key)(tidemark_format::FormatError::Corrupt {
            what: "pack".into(),
            reason: "shorter than its footer".into(),
        }));
    }
    let mut start = size.saturating_sub(TAIL_GUESS);
    let mut tail = store.get_range(&key, start..size).await?;
    let footer =
        PackFooter::decode(&tail[tail.len() - PACK_FOOTER_LEN..], size).map_err(corrupt(&key))?;
    if footer.tail_len() > tail.len() as u64 {
        start = size - footer.tail_len();
        tail = store.get_range(&key, start..size).await?;
    }
    let from = tail.len() - footer.tail_len() as usize;
    let (footer, entries) = parse_tail(&tail[from..], size, id).map_err(corrupt(&key))?;
    let info = PackInfo {
        size,
        tail_len: footer.tail_len(),
        chunks: footer.entry_count,
    };
    Ok((info, entries))
}

fn misplaced(key: &str, reason: String) -> IndexError {
    IndexError::CorruptObject {
        key: key.to_owned(),
        source: tidemark_format::FormatError::Corrupt {
            what: "segment".into(),
            reason,
        },
    }
}

/// Decodes the object stored at `key` as segment `seq` and checks it fits the domain.
fn read_segment(domain: &DomainRecord, key: &str, data: &[u8], seq: u64) -> Result<Segment> {
    let seg = Segment::decode_at(data, &domain.name, seq).map_err(corrupt(key))?;
    for d in &seg.disks {
        let spec = domain
            .disks
            .get(d.disk as usize)
            .ok_or_else(|| misplaced(key, format!("names disk {} the domain lacks", d.disk)))?;
        if d.written
            .max()
            .max(d.zeroed.max())
            .is_some_and(|b| b >= spec.blocks())
        {
            return Err(misplaced(
                key,
                format!("writes past the end of disk {}", spec.name),
            ));
        }
    }
    Ok(seg)
}

/// Reads, verifies and indexes one committed segment. Returns false if it was indexed
/// already.
pub async fn index_segment(
    store: &DynStore,
    index: &Index,
    domain: &DomainRecord,
    seq: u64,
) -> Result<bool> {
    if index.segment(&domain.name, seq)?.is_some() {
        return Ok(false);
    }
    let key = keys::segment_key(&domain.name, seq);
    let got = store.get(&key).await?;
    let seg = read_segment(domain, &key, &got.data, seq)?;
    let mut packs = Vec::new();
    let mut located: HashMap<_, ChunkLocation> = HashMap::new();
    for id in &seg.new_packs {
        let (info, entries) = read_pack_tail(store, &domain.name, *id, None).await?;
        for e in entries {
            located.insert(
                e.hash,
                ChunkLocation {
                    pack: *id,
                    offset: e.offset,
                    clen: e.clen,
                    ulen: e.ulen,
                    codec: e.codec,
                },
            );
        }
        packs.push((*id, info));
    }
    // Every chunk the segment references must be somewhere, or a restore would fail
    // later; better to refuse now, naming what is missing.
    for d in &seg.disks {
        for c in &d.chunks {
            if !located.contains_key(&c.hash)
                && index.chunk_location(&domain.name, &c.hash)?.is_none()
            {
                return Err(misplaced(
                    &key,
                    format!("references chunk {} that no pack holds", c.hash.to_hex()),
                ));
            }
        }
    }
    let new_chunks: Vec<_> = located.into_iter().collect();
    index.apply_segment(&seg, got.data.len() as u64, &packs, &new_chunks, &[])
}

/// How long a rebuild waits for running restores of the domain.
const MANIFEST_WAIT: Duration = Duration::from_secs(5);

/// Indexes every segment in the bucket after the newest indexed one, oldest first,
/// after bringing the index to the newest GC manifest if there is a newer one (whose
/// rewrites replace segments a listing of the log would miss). Returns the seqs
/// indexed. A manifest is applied only while no restore of the domain reads the
/// index (callers hold the commit lock, so this never waits); until then, segments
/// after the manifest's `upto` are still indexed if the index reaches `upto`, and the
/// call is `Busy` if it does not: indexing the log below `upto` without the manifest
/// could leave holes where GC merged segments.
pub async fn catch_up(store: &DynStore, index: &Index, domain: &DomainRecord) -> Result<Vec<u64>> {
    if let Some(epoch) = newest_manifest(store, &domain.name).await? {
        if epoch > index.gc_epoch(&domain.name)? {
            match index.exclusive_domain(&domain.name, Duration::ZERO).await {
                Some(guard) => {
                    apply_manifest(store, index, domain, epoch, &guard).await?;
                }
                None => {
                    let upto = read_manifest(store, &domain.name, epoch).await?.upto;
                    if index.last_seq(&domain.name)?.is_none_or(|last| last < upto) {
                        return Err(IndexError::Busy(domain.name.clone()));
                    }
                }
            }
        }
    }
    let after = index
        .last_seq(&domain.name)?
        .map(|s| keys::segment_key(&domain.name, s));
    let objects = store
        .list_all(&keys::log_prefix(&domain.name), after.as_deref())
        .await?;
    let mut done = Vec::new();
    for o in objects {
        if let Some(seq) = keys::parse_segment_key(&o.key) {
            if index_segment(store, index, domain, seq).await? {
                done.push(seq);
            }
        }
    }
    Ok(done)
}

/// The epochs of the domain's GC manifests in the bucket, oldest first.
pub async fn manifest_epochs(store: &DynStore, domain: &str) -> Result<Vec<u64>> {
    let mut epochs: Vec<u64> = store
        .list_all(&keys::gc_prefix(domain), None)
        .await?
        .iter()
        .filter_map(|o| keys::parse_manifest_key(&o.key))
        .collect();
    epochs.sort_unstable();
    Ok(epochs)
}

/// The epoch of the domain's newest GC manifest, if GC ever ran on it.
pub async fn newest_manifest(store: &DynStore, domain: &str) -> Result<Option<u64>> {
    Ok(manifest_epochs(store, domain).await?.last().copied())
}

/// Reads and verifies manifest `epoch` of a domain.
pub async fn read_manifest(store: &DynStore, domain: &str, epoch: u64) -> Result<Manifest> {
    let key = keys::manifest_key(domain, epoch);
    let got = store.get(&key).await?;
    Manifest::decode_at(&got.data, domain, epoch).map_err(corrupt(&key))
}

/// Brings the domain's index to GC manifest `epoch`: reads the segment objects and
/// pack tails the index lacks, then applies it in one batch. Returns false if the
/// index was there already.
pub async fn apply_manifest(
    store: &DynStore,
    index: &Index,
    domain: &DomainRecord,
    epoch: u64,
    guard: &ExclusiveGuard,
) -> Result<bool> {
    if index.gc_epoch(&domain.name)? >= epoch {
        return Ok(false);
    }
    let m = read_manifest(store, &domain.name, epoch).await?;
    let needs = index.manifest_needs(&m)?;
    let mut segments = Vec::with_capacity(needs.segments.len());
    for (seq, version) in needs.segments {
        let key = keys::segment_object_key(&domain.name, seq, version);
        let got = store.get(&key).await?;
        segments.push(ManifestSegment {
            segment: read_segment(domain, &key, &got.data, seq)?,
            epoch: version,
            object_size: got.data.len() as u64,
        });
    }
    let mut packs = Vec::with_capacity(needs.packs.len());
    for id in needs.packs {
        let (info, entries) = read_pack_tail(store, &domain.name, id, None).await?;
        packs.push(ManifestPack { id, info, entries });
    }
    index.apply_manifest(&m, &segments, &packs, guard)
}

/// What a rebuild found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RebuildReport {
    /// Segments indexed.
    pub segments: u64,
    /// Newest seq.
    pub last_seq: Option<u64>,
}

/// Forgets everything the index holds for `domain` and re-derives it from the bucket.
pub async fn rebuild(store: &DynStore, index: &Index, domain: &str) -> Result<RebuildReport> {
    let rec = load_domain(store, domain).await?;
    let guard = index
        .exclusive_domain(domain, MANIFEST_WAIT)
        .await
        .ok_or_else(|| IndexError::Busy(domain.to_owned()))?;
    index.forget_domain(domain)?;
    index.put_domain(&rec)?;
    if let Some(epoch) = newest_manifest(store, domain).await? {
        apply_manifest(store, index, &rec, epoch, &guard).await?;
    }
    drop(guard);
    catch_up(store, index, &rec).await?;
    Ok(RebuildReport {
        segments: index.segments(domain, 0..=u64::MAX)?.len() as u64,
        last_seq: index.last_seq(domain)?,
    })
}
