//! Run maps (issue 7): for a finished run of a disk's segments (the seqs one union
//! summary covers), every block some segment of the run wrote or zeroed, ascending,
//! with the newest segment of the run that did.
//!
//! A whole-disk walk of scattered writes costs one cache miss per block in its bitset
//! of resolved blocks, in random order, segment after segment. From a run's map it
//! resolves the run in one ascending pass over the bitset instead, reads one value
//! instead of 64, and parses no roaring containers.
//!
//! Exact, unlike summaries: indexing a segment into a run (late, or by a GC
//! manifest) and forgetting one delete the run's map in the same batch, and a walk
//! visits the run's bitmaps one by one where there is no map. Only runs of at most
//! [`MAX_BLOCKS`] blocks get one: a dense run is walked a container at a time anyway.

use roaring::RoaringBitmap;
use rocksdb::WriteBatch;
use tidemark_format::segment::bitmap_from;

use crate::summary::{self, RUN_BITS};
use crate::view::View;
use crate::{keys, values, Index, IndexError, Result};

/// Runs that touch more blocks than this get no map (5 bytes a block: 1.25 MiB).
pub(crate) const MAX_BLOCKS: u64 = if cfg!(test) { 6_000 } else { 1 << 18 };

const VERSION: u8 = 1;
/// Marks an index whose finished runs have maps (older indexes had none). Sorts after
/// every domain's keys.
const VERSION_KEY: &[u8] = b"\xffrun-maps-v1";
/// The owner byte's flag of a block its segment zeroed; the low bits are the member.
const ZEROED: u8 = 0x80;

fn corrupt() -> IndexError {
    IndexError::Corrupt("run map value".into())
}

/// A stored run map: `VERSION`, the member count `n`, `n` seqs (u64, ascending), the
/// block count `len`, `len` blocks (u32, ascending), `len` owner bytes.
pub(crate) struct RunMap<'a> {
    seqs: &'a [u8],
    blocks: &'a [u8],
    owners: &'a [u8],
}

impl<'a> RunMap<'a> {
    /// Checks the layout of `v`; the order of blocks and the owners are checked as a
    /// walk reads them.
    pub fn parse(v: &'a [u8]) -> Result<RunMap<'a>> {
        let (&version, rest) = v.split_first().ok_or_else(corrupt)?;
        let (&n, rest) = rest.split_first().ok_or_else(corrupt)?;
        if version != VERSION || n == 0 || u32::from(n) > 1 << RUN_BITS {
            return Err(corrupt());
        }
        let (seqs, rest) = rest
            .split_at_checked(usize::from(n) * 8)
            .ok_or_else(corrupt)?;
        let (len, rest) = rest.split_at_checked(4).ok_or_else(corrupt)?;
        let len = u32::from_le_bytes(len.try_into().map_err(|_| corrupt())?) as usize;
        let (blocks, owners) = rest.split_at_checked(len * 4).ok_or_else(corrupt)?;
        if owners.len() != len {
            return Err(corrupt());
        }
        Ok(RunMap {
            seqs,
            blocks,
            owners,
        })
    }

    /// Number of member segments.
    pub fn members(&self) -> usize {
        self.seqs.len() / 8
    }

    /// The seq of member `m` (0: the oldest).
    pub fn seq(&self, m: usize) -> u64 {
        let b = &self.seqs[m * 8..m * 8 + 8];
        u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
    }

    /// The newest member's seq.
    pub fn newest(&self) -> u64 {
        self.seq(self.members() - 1)
    }

    /// The members' seqs, oldest first.
    pub fn seqs(&self) -> Vec<u64> {
        (0..self.members()).map(|m| self.seq(m)).collect()
    }
}

impl OwnedBlocks for RunMap<'_> {
    fn len(&self) -> usize {
        self.owners.len()
    }

    fn block(&self, i: usize) -> u32 {
        let b = &self.blocks[i * 4..i * 4 + 4];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    fn owner(&self, i: usize) -> (usize, bool) {
        let o = self.owners[i];
        (usize::from(o & !ZEROED), o & ZEROED != 0)
    }
}

/// Blocks, ascending, each with the member that last touched it: what a walk reads
/// from a run's map or from a slice of an era's (`eramap.rs`).
pub(crate) trait OwnedBlocks {
    /// Number of blocks.
    fn len(&self) -> usize;

    /// Block `i`.
    fn block(&self, i: usize) -> u32;

    /// The member (an index into the map's seqs, not checked here) that last touched
    /// block `i`, and whether it zeroed it.
    fn owner(&self, i: usize) -> (usize, bool);

    /// The index of the first block at or above `block`.
    fn lower_bound(&self, block: u64) -> usize {
        self.lower_bound_in(0..self.len(), block)
    }

    /// The index of the first block of `range` at or above `block` (`range.end` if
    /// none is).
    fn lower_bound_in(&self, range: std::ops::Range<usize>, block: u64) -> usize {
        let (mut lo, mut hi) = (range.start, range.end);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if u64::from(self.block(mid)) < block {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }
}

/// The stored form of a map of `members` (ascending seqs) and `entries` (ascending
/// blocks, each with its owner byte).
fn encode(members: &[u64], entries: &[(u32, u8)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(6 + members.len() * 8 + entries.len() * 5);
    out.push(VERSION);
    out.push(members.len() as u8);
    for s in members {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for (b, _) in entries {
        out.extend_from_slice(&b.to_le_bytes());
    }
    out.extend(entries.iter().map(|(_, o)| *o));
    out
}

impl Index {
    /// Puts into `batch` the map of `disk`'s run starting at `run` from its bitmaps as
    /// stored, if the run touches at most [`MAX_BLOCKS`] blocks, and returns it.
    pub(crate) fn map_run(
        &self,
        batch: &mut WriteBatch,
        domain: &str,
        disk: u32,
        run: u64,
    ) -> Result<Option<Vec<u8>>> {
        let prefix = keys::disk_prefix(domain, disk);
        let mut it = self.db.raw_iterator_cf(self.cf("bitmaps"));
        it.seek(keys::disk_seq(domain, disk, run));
        let mut members: Vec<(u64, RoaringBitmap, RoaringBitmap)> = Vec::new();
        let mut touched = 0;
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let Some(seq) = k.strip_prefix(prefix.as_slice()).and_then(keys::be_u64) else {
                break;
            };
            if summary::run_start(seq) != run {
                break;
            }
            // Counted from the headers first: a dense run is not decoded at all.
            let (w, z) = values::split_bitmaps(v)?;
            touched += View::new(w)?.len() + View::new(z)?.len();
            if touched > MAX_BLOCKS {
                return Ok(None);
            }
            members.push((seq, bitmap_from(w)?, bitmap_from(z)?));
            it.next();
        }
        it.status()?;
        if members.is_empty() {
            return Ok(None);
        }
        // Newest member first and, within one, written before zeroed (a walk takes
        // written blocks first); the stable sort keeps that order among equal blocks,
        // so the first of each block is its owner.
        let mut entries: Vec<(u32, u8)> = Vec::with_capacity(touched as usize);
        for (m, (_, written, zeroed)) in members.iter().enumerate().rev() {
            entries.extend(written.iter().map(|b| (b, m as u8)));
            entries.extend(zeroed.iter().map(|b| (b, m as u8 | ZEROED)));
        }
        entries.sort_by_key(|(b, _)| *b);
        entries.dedup_by_key(|(b, _)| *b);
        let seqs: Vec<u64> = members.iter().map(|(s, _, _)| *s).collect();
        let map = encode(&seqs, &entries);
        batch.put_cf(self.cf("runs"), summary::key(domain, disk, run), &map);
        Ok(Some(map))
    }

    /// Whether `disk` has a segment after the run starting at `run`: then no segment
    /// is indexed into the run any more (ingest goes in seq order).
    pub(crate) fn run_is_finished(&self, domain: &str, disk: u32, run: u64) -> Result<bool> {
        let Some(next) = run.checked_add(1 << RUN_BITS) else {
            return Ok(false);
        };
        let prefix = keys::disk_prefix(domain, disk);
        let mut it = self.db.raw_iterator_cf(self.cf("bitmaps"));
        it.seek(keys::disk_seq(domain, disk, next));
        let later = it.key().is_some_and(|k| k.starts_with(&prefix));
        it.status()?;
        Ok(later)
    }

    /// Maps every finished run of an index made before run maps existed, once.
    pub(crate) fn ensure_run_maps(&self) -> Result<()> {
        if self
            .db
            .get_pinned_cf(self.cf("runs"), VERSION_KEY)?
            .is_some()
        {
            return Ok(());
        }
        let runs = self.disk_runs()?;
        let mut batch = WriteBatch::default();
        for pair in runs.windows(2) {
            let ((domain, disk, run), (next_domain, next_disk, _)) = (&pair[0], &pair[1]);
            // A disk's last run may still grow.
            if (domain, disk) == (next_domain, next_disk) {
                self.map_run(&mut batch, domain, *disk, *run)?;
                if batch.len() >= 256 {
                    self.db.write(std::mem::take(&mut batch))?;
                }
            }
        }
        batch.put_cf(self.cf("runs"), VERSION_KEY, []);
        self.db.write(batch)?;
        Ok(())
    }

    /// `(domain, disk, run)` of every run of every disk that some segment touches,
    /// ascending.
    pub(crate) fn disk_runs(&self) -> Result<Vec<(String, u32, u64)>> {
        let mut runs: Vec<(String, u32, u64)> = Vec::new();
        let mut it = self.db.raw_iterator_cf(self.cf("bitmaps"));
        it.seek_to_first();
        while let Some(k) = it.key() {
            let bad = || IndexError::Corrupt("bitmap key".into());
            let (head, seq) = k.split_at(k.len().saturating_sub(8));
            let run = summary::run_start(keys::be_u64(seq).ok_or_else(bad)?);
            let (domain, disk) = head.split_at(head.len().saturating_sub(4));
            let domain = domain.strip_suffix(&[0]).ok_or_else(bad)?;
            let domain = std::str::from_utf8(domain).map_err(|_| bad())?;
            let disk = u32::from_be_bytes(disk.try_into().map_err(|_| bad())?);
            if runs.last() != Some(&(domain.to_owned(), disk, run)) {
                runs.push((domain.to_owned(), disk, run));
            }
            it.next();
        }
        it.status()?;
        Ok(runs)
    }

    /// Deletes in `batch` the maps of `disk`'s run and era holding `seq`, whose members
    /// change.
    pub(crate) fn forget_run_map(&self, batch: &mut WriteBatch, domain: &str, disk: u32, seq: u64) {
        batch.delete_cf(self.cf("runs"), summary::key(domain, disk, seq));
        self.forget_era_map(batch, domain, disk, seq);
    }

    /// The stored map of `disk`'s run holding `seq`, if it has one.
    pub(crate) fn run_map(
        &self,
        domain: &str,
        disk: u32,
        seq: u64,
    ) -> Result<Option<rocksdb::DBPinnableSlice<'_>>> {
        self.run_value("runs", domain, disk, seq)
    }
}
