//! Bringing a domain's index to a GC manifest (see `tidemark_format::manifest`): the
//! same change on the owner that ran GC, on every site that follows the log, and in a
//! rebuild, so that every index of a domain agrees with the bucket.

use std::collections::{BTreeSet, HashMap, HashSet};

use rocksdb::{Direction, IteratorMode, WriteBatch};
use tidemark_format::{ChunkHash, Manifest, PackEntry, PackId, Segment};

use crate::{
    eramap, keys, summary, values, ChunkLocation, ExclusiveGuard, Index, IndexError, PackInfo,
    Result, SegmentMeta,
};

/// Key in a domain's `state` of the GC epoch its index reflects.
const EPOCH_KEY: &[u8] = b"gc/epoch";

/// A segment object to index for a manifest, read and verified by the caller.
pub struct ManifestSegment {
    /// The decoded object.
    pub segment: Segment,
    /// The GC epoch that wrote it (0: ingest).
    pub epoch: u64,
    /// Its size in bytes.
    pub object_size: u64,
}

/// A pack the index does not know yet, with its verified index.
pub struct ManifestPack {
    /// Its id.
    pub id: PackId,
    /// Size and tail.
    pub info: PackInfo,
    /// Its chunks.
    pub entries: Vec<PackEntry>,
}

/// What [`Index::manifest_needs`] found missing for a manifest.
#[derive(Debug, Default)]
pub struct ManifestNeeds {
    /// Segment objects `(seq, epoch)` to read.
    pub segments: Vec<(u64, u64)>,
    /// Packs whose tails to read.
    pub packs: Vec<PackId>,
}

impl Index {
    /// The GC epoch of a domain's index (0: no GC manifest applied).
    pub fn gc_epoch(&self, domain: &str) -> Result<u64> {
        Ok(self
            .get_state(domain, EPOCH_KEY)?
            .map(|v| values::decode_i64(&v) as u64)
            .unwrap_or(0))
    }

    /// What the index lacks to be brought to `m`: segment objects it does not hold in
    /// the manifest's version, and live packs it does not know.
    pub fn manifest_needs(&self, m: &Manifest) -> Result<ManifestNeeds> {
        let current: HashMap<u64, u64> = self
            .segments(&m.domain, 0..=m.upto)?
            .into_iter()
            .map(|s| (s.seq, s.epoch))
            .collect();
        let known: HashSet<PackId> = self
            .packs(&m.domain)?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        Ok(ManifestNeeds {
            segments: m
                .segments
                .iter()
                .filter(|v| current.get(&v.seq) != Some(&v.epoch))
                .map(|v| (v.seq, v.epoch))
                .collect(),
            packs: m
                .live_packs
                .iter()
                .filter(|p| !known.contains(p))
                .copied()
                .collect(),
        })
    }

    /// Brings the domain's index to manifest `m` in one batch: segments it superseded
    /// are forgotten (their chunk references released), `segments` (what
    /// [`Index::manifest_needs`] asked for) are indexed, `packs` are located, packs no
    /// longer live are forgotten with the chunks located in them, and the epoch is
    /// recorded. Segments after `m.upto` are untouched. Returns false if the index is
    /// at `m`'s epoch or later already. Refused (nothing changed) if the result would
    /// reference a chunk no live pack holds.
    pub fn apply_manifest(
        &self,
        m: &Manifest,
        segments: &[ManifestSegment],
        packs: &[ManifestPack],
        guard: &ExclusiveGuard,
    ) -> Result<bool> {
        let d = m.domain.as_str();
        if guard.domain() != d {
            return Err(IndexError::Corrupt(format!(
                "manifest of {d} applied under the lock of {}",
                guard.domain()
            )));
        }
        if self.gc_epoch(d)? >= m.epoch {
            return Ok(false);
        }
        let refused = |why: String| {
            IndexError::Corrupt(format!("gc manifest {} of domain {d}: {why}", m.epoch))
        };
        let target: HashMap<u64, u64> = m.segments.iter().map(|v| (v.seq, v.epoch)).collect();
        let mut batch = WriteBatch::default();
        let mut refs: HashMap<ChunkHash, i64> = HashMap::new();

        let demoted: HashSet<u64> = m.demoted.iter().copied().collect();
        // (disk, first seq of a run) of every run whose members change.
        let mut changed_runs: HashSet<(u32, u64)> = HashSet::new();
        for meta in self.segments(d, 0..=m.upto)? {
            if target.get(&meta.seq) != Some(&meta.epoch) {
                let run = summary::run_start(meta.seq);
                changed_runs.extend(meta.disks.iter().map(|k| (k.disk, run)));
                self.forget_segment(&mut batch, d, &meta, &mut refs)?;
            } else if demoted.contains(&meta.seq) && meta.is_point() {
                self.forget_point(&mut batch, d, &meta);
                let mut meta = meta;
                meta.demote();
                batch.put_cf(self.cf("segments"), keys::seq(d, meta.seq), meta.encode());
            }
        }
        for s in segments {
            if target.get(&s.segment.seq) != Some(&s.epoch) || s.segment.domain != d {
                return Err(refused(format!(
                    "segment {} of epoch {} is not in it",
                    s.segment.seq, s.epoch
                )));
            }
            let stored: u64 = s
                .segment
                .new_packs
                .iter()
                .filter_map(|id| packs.iter().find(|p| p.id == *id))
                .map(|p| p.info.size)
                .sum();
            let mut meta = SegmentMeta::from_segment(&s.segment, s.epoch, s.object_size, stored);
            if demoted.contains(&meta.seq) {
                meta.demote();
            }
            self.put_segment(&mut batch, &s.segment, &meta);
            let run = summary::run_start(s.segment.seq);
            changed_runs.extend(s.segment.disks.iter().map(|k| (k.disk, run)));
            for c in s.segment.disks.iter().flat_map(|disk| &disk.chunks) {
                *refs.entry(c.hash).or_default() += 1;
            }
        }

        // Live after this: the manifest's packs and those of segments after it.
        let mut live: HashSet<PackId> = m.live_packs.iter().copied().collect();
        let after = m
            .upto
            .checked_add(1)
            .map(|from| self.segments(d, from..=u64::MAX));
        for meta in after.transpose()?.unwrap_or_default() {
            live.extend(meta.pack_ids()?);
        }
        let known: Vec<PackId> = self.packs(d)?.into_iter().map(|(id, _)| id).collect();
        let dropped: HashSet<PackId> = known
            .iter()
            .filter(|p| !live.contains(p))
            .copied()
            .collect();

        let mut located: HashMap<ChunkHash, PackId> = HashMap::new();
        for p in packs {
            if !live.contains(&p.id) {
                return Err(refused(format!("pack {} is not live in it", p.id)));
            }
            batch.put_cf(self.cf("packs"), keys::pack(d, p.id.0), p.info.encode());
            for e in &p.entries {
                let current = self.chunk_location(d, &e.hash)?;
                let stale = current.is_none_or(|l| !live.contains(&l.pack));
                if stale && !located.contains_key(&e.hash) {
                    let loc = ChunkLocation {
                        pack: p.id,
                        offset: e.offset,
                        clen: e.clen,
                        ulen: e.ulen,
                        codec: e.codec,
                    };
                    batch.put_cf(self.cf("chunks"), keys::chunk(d, &e.hash), loc.encode());
                    located.insert(e.hash, p.id);
                }
            }
        }

        if !dropped.is_empty() {
            for id in &dropped {
                batch.delete_cf(self.cf("packs"), keys::pack(d, id.0));
            }
            for (hash, loc) in self.chunks_located(d)? {
                if !dropped.contains(&loc.pack) || located.contains_key(&hash) {
                    continue;
                }
                let after = self.chunk_refs(d, &hash)? + refs.remove(&hash).unwrap_or(0);
                if after != 0 {
                    return Err(refused(format!(
                        "it drops pack {} which holds chunk {}, still referenced {after} times",
                        loc.pack,
                        hash.to_hex()
                    )));
                }
                batch.delete_cf(self.cf("chunks"), keys::chunk(d, &hash));
                batch.delete_cf(self.cf("refs"), keys::chunk(d, &hash));
            }
        }
        // Every chunk the new segments read must be located in a live pack.
        for s in segments {
            for c in s.segment.disks.iter().flat_map(|disk| &disk.chunks) {
                let ok = located.contains_key(&c.hash)
                    || self
                        .chunk_location(d, &c.hash)?
                        .is_some_and(|l| live.contains(&l.pack));
                if !ok {
                    return Err(refused(format!(
                        "segment {} reads chunk {} that no live pack holds",
                        s.segment.seq,
                        c.hash.to_hex()
                    )));
                }
            }
        }
        for (hash, delta) in refs {
            if delta != 0 {
                batch.merge_cf(self.cf("refs"), keys::chunk(d, &hash), delta.to_le_bytes());
            }
        }
        batch.put_cf(
            self.cf("state"),
            keys::state(d, EPOCH_KEY),
            (m.epoch as i64).to_le_bytes(),
        );
        let _summaries = self.lock_summaries();
        self.db.write(batch)?;
        // The runs whose members changed lost their maps in the batch, and so did
        // their eras; those that are finished get new ones after it, the eras from
        // the runs' new maps (a crash in between only leaves them without: plans then
        // walk their bitmaps).
        let mut maps = WriteBatch::default();
        let mut changed_eras = BTreeSet::new();
        for (disk, run) in changed_runs {
            if self.run_is_finished(d, disk, run)? {
                self.map_run(&mut maps, d, disk, run)?;
            }
            changed_eras.insert((disk, eramap::era_start(run)));
        }
        self.db.write(maps)?;
        for (disk, era) in changed_eras {
            if self.era_is_finished(d, disk, era)? {
                let mut maps = WriteBatch::default();
                self.map_era(&mut maps, d, disk, era, None)?;
                self.db.write(maps)?;
            }
        }
        Ok(true)
    }

    /// Deletes what indexing `meta`'s segment put, and counts its chunk references off.
    fn forget_segment(
        &self,
        batch: &mut WriteBatch,
        d: &str,
        meta: &SegmentMeta,
        refs: &mut HashMap<ChunkHash, i64>,
    ) -> Result<()> {
        batch.delete_cf(self.cf("segments"), keys::seq(d, meta.seq));
        self.forget_point(batch, d, meta);
        for disk in &meta.disks {
            let k = keys::disk_seq(d, disk.disk, meta.seq);
            for c in self.stream(d, disk.disk, meta.seq)? {
                *refs.entry(c.hash).or_default() -= 1;
            }
            batch.delete_cf(self.cf("bitmaps"), &k);
            batch.delete_cf(self.cf("streams"), &k);
            self.forget_run_map(batch, d, disk.disk, meta.seq);
        }
        Ok(())
    }

    /// Deletes what makes `meta`'s segment a point: its time and markers.
    fn forget_point(&self, batch: &mut WriteBatch, d: &str, meta: &SegmentMeta) {
        batch.delete_cf(self.cf("times"), keys::time(d, meta.time_end, meta.seq));
        batch.delete_cf(self.cf("good"), keys::seq(d, meta.seq));
        for m in &meta.markers {
            batch.delete_cf(self.cf("markers"), keys::marker(d, &m.name, meta.seq));
        }
    }

    /// Every chunk location of a domain.
    pub fn chunks_located(&self, domain: &str) -> Result<Vec<(ChunkHash, ChunkLocation)>> {
        let head = keys::domain_head(domain);
        let mut out = Vec::new();
        for item in self.db.iterator_cf(
            self.cf("chunks"),
            IteratorMode::From(&head, Direction::Forward),
        ) {
            let (k, v) = item?;
            let Some(hash) = k.strip_prefix(head.as_slice()) else {
                break;
            };
            let hash: [u8; 32] = hash
                .try_into()
                .map_err(|_| IndexError::Corrupt("chunk key".into()))?;
            out.push((ChunkHash(hash), ChunkLocation::decode(&v)?));
        }
        Ok(out)
    }
}
