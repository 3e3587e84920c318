//! Chunks and packs after a run's segment changes: reference counts, which packs hold
//! no live chunk (dead), which are mostly dead (repacked: their live frames are copied,
//! still compressed and verified, into new packs), and the check at commit that ingest
//! did not reference a chunk meanwhile.

use std::collections::HashMap;

use bytes::Bytes;
use tidemark_format::pack::verify_pack;
use tidemark_format::{keys, ChunkHash, PackId, PackWriter};
use tidemark_objstore::DynStore;
use tidemark_pitr_index::{ChunkLocation, Index};

use crate::{GcError, Result};

/// Largest pack a repack writes (ingest's limit).
const PACK_BYTES: usize = 64 << 20;

/// The fate of the domain's packs after the run.
#[derive(Debug, Default)]
pub(crate) struct PackPlan {
    /// Packs left without a live chunk.
    pub dead: Vec<PackId>,
    /// Packs to repack, with their live chunks.
    pub repack: Vec<(PackId, Vec<(ChunkHash, ChunkLocation)>)>,
    /// Chunks that are dead and located in a dead or repacked pack: they are gone
    /// once the run commits, unless ingest references them first.
    pub freed: Vec<ChunkHash>,
    /// Bytes of the dead and repacked packs.
    pub garbage_bytes: u64,
}

/// Change in references of each chunk: minus the streams of superseded segments,
/// plus those of new ones.
pub(crate) type RefDelta = HashMap<ChunkHash, i64>;

/// Decides the packs' fate from the reference counts the run leaves.
pub(crate) fn plan_packs(
    index: &Index,
    domain: &str,
    delta: &RefDelta,
    dead_fraction: f64,
) -> Result<PackPlan> {
    // Packs first: a commit meanwhile adds a pack and its chunks' locations in one
    // batch, so every pack listed here has its chunks in the scan below. The other
    // order would see a new pack without its chunks and call it dead.
    let known = index.packs(domain)?;
    let mut by_pack: HashMap<PackId, Vec<(ChunkHash, ChunkLocation, bool)>> = HashMap::new();
    for (hash, loc) in index.chunks_located(domain)? {
        let refs = index.chunk_refs(domain, &hash)? + delta.get(&hash).copied().unwrap_or(0);
        by_pack
            .entry(loc.pack)
            .or_default()
            .push((hash, loc, refs > 0));
    }
    let mut plan = PackPlan::default();
    for (id, info) in known {
        let chunks = by_pack.remove(&id).unwrap_or_default();
        let live: u64 = chunks
            .iter()
            .filter(|(_, _, live)| *live)
            .map(|(_, l, _)| u64::from(l.clen))
            .sum();
        let dead = live == 0;
        // Of the frames only: a pack's index and footer are not waste to reclaim, and
        // counting them would repack small packs again and again.
        let frames = info.size.saturating_sub(info.tail_len).max(1);
        let repack = !dead && (1.0 - live as f64 / frames as f64) >= dead_fraction;
        if !(dead || repack) {
            continue;
        }
        plan.garbage_bytes += info.size;
        plan.freed.extend(
            chunks
                .iter()
                .filter(|(_, _, live)| !live)
                .map(|(h, _, _)| *h),
        );
        if dead {
            plan.dead.push(id);
        } else {
            let keep = chunks
                .into_iter()
                .filter(|(_, _, live)| *live)
                .map(|(h, l, _)| (h, l))
                .collect();
            plan.repack.push((id, keep));
        }
    }
    Ok(plan)
}

/// Copies the live chunks of the packs to repack into new packs and stores them.
/// Returns the new packs and the bytes uploaded.
pub(crate) async fn repack(
    store: &DynStore,
    domain: &str,
    repack: &[(PackId, Vec<(ChunkHash, ChunkLocation)>)],
) -> Result<(Vec<PackId>, u64)> {
    let mut new = Vec::new();
    let mut uploaded = 0;
    let mut out: Option<PackWriter> = None;
    for (id, chunks) in repack {
        let key = keys::pack_key(domain, *id);
        let data = store.get(&key).await?.data;
        let corrupt = |reason: String| GcError::Corrupt {
            key: key.clone(),
            reason,
        };
        let entries = verify_pack(&data, *id).map_err(|e| corrupt(e.to_string()))?;
        // `verify_pack` decoded every frame against its name, so a chunk that sits
        // where the index says, as the index says, is good to copy on.
        let at: HashMap<(u64, ChunkHash), _> =
            entries.iter().map(|e| ((e.offset, e.hash), e)).collect();
        for (hash, loc) in chunks {
            let held = at
                .get(&(loc.offset, *hash))
                .is_some_and(|e| e.clen == loc.clen && e.ulen == loc.ulen && e.codec == loc.codec);
            if !held {
                return Err(corrupt(format!(
                    "does not hold chunk {} where the index says",
                    hash.to_hex()
                )));
            }
            let frame = data
                .get(loc.offset as usize..loc.offset as usize + loc.clen as usize)
                .ok_or_else(|| corrupt("a frame past its end".into()))?;
            if out
                .as_ref()
                .is_some_and(|p| !p.is_empty() && p.len() + frame.len() > PACK_BYTES)
            {
                if let Some(p) = out.take() {
                    uploaded += store_pack(store, domain, p, &mut new).await?;
                }
            }
            out.get_or_insert_with(|| {
                PackWriter::with_capacity(PackId(rand::random()), PACK_BYTES)
            })
            .push(*hash, loc.ulen, loc.codec, frame);
        }
    }
    if let Some(p) = out.take() {
        uploaded += store_pack(store, domain, p, &mut new).await?;
    }
    Ok((new, uploaded))
}

async fn store_pack(
    store: &DynStore,
    domain: &str,
    pack: PackWriter,
    new: &mut Vec<PackId>,
) -> Result<u64> {
    let id = pack.id();
    let (bytes, _) = pack.finish();
    let size = bytes.len() as u64;
    store
        .put(&keys::pack_key(domain, id), Bytes::from(bytes))
        .await?;
    new.push(id);
    Ok(size)
}
