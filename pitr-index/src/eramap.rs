//! Era maps (issue 7): for a finished era of a disk's history (the 64 runs, 4,096
//! seqs, of [`ERA_BITS`]), every block some segment of the era wrote or zeroed,
//! ascending, with the newest segment of the era that did. Merged from the era's run
//! maps (`runmap.rs`) when the era is finished.
//!
//! From run maps, a whole-disk walk of a long history of scattered writes made one
//! ascending pass over its bitset of resolved blocks per run: 156 passes for 10,000
//! segments on a 1 TiB disk, each touching about one block per cache line, so each
//! block still cost a miss. An era's map puts 64 times as many blocks into one pass,
//! several per cache line, read nearly in sequence, and there are 64 times fewer
//! values to read.
//!
//! Stored as a head (the era's member seqs and the numbers of its slices) and one
//! value per slice of [`SLICE_BITS`] blocks, so that the walk of half a disk reads only
//! its half. A walk reads the head and the slices in one snapshot. Whatever changes
//! an era's members deletes its head in the same batch (the slices are then read by
//! no walk); building a map deletes what an older one of the era left. Only eras
//! whose every run has a map, and that touch at most [`MAX_BLOCKS`] blocks, get one.

use std::borrow::Cow;
use std::ops::Range;

use rocksdb::{DBPinnableSlice, ReadOptions, WriteBatch};

use crate::runmap::{OwnedBlocks, RunMap};
use crate::summary::RUN_BITS;
use crate::view::u16_at;
use crate::{keys, Index, IndexError, Result};

/// log2 of the seqs of an era. (Unit tests use eras of two runs, so that their
/// histories of a few hundred segments have some.)
pub(crate) const ERA_BITS: u32 = if cfg!(test) {
    RUN_BITS + 1
} else {
    RUN_BITS + 6
};
/// Eras that touch more blocks than this get no map (6 bytes a block: 48 MiB).
const MAX_BLOCKS: u64 = if cfg!(test) { 12_000 } else { 1 << 23 };
/// log2 of the blocks of one slice (64 GiB of 4 KiB blocks).
const SLICE_BITS: u32 = if cfg!(test) { 16 } else { 24 };

const VERSION: u8 = 1;
/// Marks an index whose finished eras have maps (older indexes had none). Sorts after
/// every domain's keys.
const VERSION_KEY: &[u8] = b"\xffera-maps-v1";
/// The owner's flag of a block its segment zeroed; the low bits are the member.
const ZEROED: u16 = 0x8000;

fn corrupt() -> IndexError {
    IndexError::Corrupt("era map value".into())
}

/// The first seq of `seq`'s era.
pub(crate) fn era_start(seq: u64) -> u64 {
    seq >> ERA_BITS << ERA_BITS
}

/// Whether `seq` and `other` lie in one era.
pub(crate) fn same_era(seq: u64, other: u64) -> bool {
    era_start(seq) == era_start(other)
}

fn head_key(domain: &str, disk: u32, era: u64) -> Vec<u8> {
    keys::disk_seq(domain, disk, era)
}

fn slice_key(domain: &str, disk: u32, era: u64, slice: u16) -> Vec<u8> {
    let mut k = head_key(domain, disk, era);
    k.extend_from_slice(&slice.to_be_bytes());
    k
}

/// A stored head: `VERSION`, the member count `n` (u16), `n` seqs (u64, ascending),
/// the slice count `s` (u16), `s` slice numbers (u16, ascending).
struct Head {
    seqs: Vec<u64>,
    slices: Vec<u16>,
}

impl Head {
    fn parse(v: &[u8]) -> Result<Head> {
        let (&version, rest) = v.split_first().ok_or_else(corrupt)?;
        if version != VERSION || rest.len() < 2 {
            return Err(corrupt());
        }
        let n = usize::from(u16_at(rest, 0));
        let (seqs, rest) = rest[2..].split_at_checked(n * 8).ok_or_else(corrupt)?;
        let seqs: Vec<u64> = seqs
            .chunks_exact(8)
            .map(|s| u64::from_le_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]))
            .collect();
        if rest.len() < 2 {
            return Err(corrupt());
        }
        let s = usize::from(u16_at(rest, 0));
        if rest.len() != 2 + 2 * s {
            return Err(corrupt());
        }
        let slices: Vec<u16> = (0..s).map(|i| u16_at(rest, 2 + 2 * i)).collect();
        if n == 0 || !seqs.is_sorted() || !slices.is_sorted() {
            return Err(corrupt());
        }
        Ok(Head { seqs, slices })
    }

    fn encode(seqs: &[u64], slices: &[u16]) -> Vec<u8> {
        let mut out = Vec::with_capacity(5 + seqs.len() * 8 + slices.len() * 2);
        out.push(VERSION);
        out.extend_from_slice(&(seqs.len() as u16).to_le_bytes());
        for s in seqs {
            out.extend_from_slice(&s.to_le_bytes());
        }
        out.extend_from_slice(&(slices.len() as u16).to_le_bytes());
        for s in slices {
            out.extend_from_slice(&s.to_le_bytes());
        }
        out
    }
}

/// A stored slice: the block count `len` (u32), `len` blocks (u32, ascending), `len`
/// owners (u16: the member, and [`ZEROED`]); then, for each member of the era, the
/// number of blocks of the slice it wrote last (u32), and those blocks of each member
/// in turn, newest member first (u32, ascending within a member), the order in which
/// a walk reads them.
///
/// The second part is the same blocks transposed to the order a plan hands them out
/// in, segment by segment, done once when the map is built: transposing them in the
/// walk, appending each block to one of 4,096 lists, took most of a walk's time.
pub(crate) struct Slice<'a> {
    blocks: &'a [u8],
    owners: &'a [u8],
    /// Member `m`'s blocks are `starts[m + 1]..starts[m]` of `by_member` (in blocks):
    /// the newest member's come first.
    starts: Vec<usize>,
    by_member: &'a [u8],
}

impl<'a> Slice<'a> {
    /// Checks the layout of `v` for an era of `members` members; the order of blocks
    /// and the owners are checked as a walk reads them.
    fn parse(v: &'a [u8], members: usize) -> Result<Slice<'a>> {
        let (len, rest) = v.split_at_checked(4).ok_or_else(corrupt)?;
        let len = u32::from_le_bytes(len.try_into().map_err(|_| corrupt())?) as usize;
        let (blocks, rest) = rest.split_at_checked(len * 4).ok_or_else(corrupt)?;
        let (owners, rest) = rest.split_at_checked(len * 2).ok_or_else(corrupt)?;
        let (counts, by_member) = rest.split_at_checked(members * 4).ok_or_else(corrupt)?;
        // Newest member first: member `m`'s blocks end where those of `m + 1` start.
        let mut starts = vec![0; members + 1];
        let mut at = 0usize;
        for (m, c) in counts.chunks_exact(4).enumerate().rev() {
            starts[m + 1] = at;
            at += u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize;
            starts[m] = at;
        }
        if at > len || by_member.len() != at * 4 {
            return Err(corrupt());
        }
        Ok(Slice {
            blocks,
            owners,
            starts,
            by_member,
        })
    }

    /// The slice of `entries` (ascending, owners below `members`).
    fn encode(entries: &[(u32, u16)], members: usize) -> Vec<u8> {
        let mut counts = vec![0u32; members];
        for (_, o) in entries.iter().filter(|(_, o)| o & ZEROED == 0) {
            counts[usize::from(*o)] += 1;
        }
        let mut out = Vec::with_capacity(4 + entries.len() * 10 + members * 4);
        out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        for (b, _) in entries {
            out.extend_from_slice(&b.to_le_bytes());
        }
        for (_, o) in entries {
            out.extend_from_slice(&o.to_le_bytes());
        }
        for c in &counts {
            out.extend_from_slice(&c.to_le_bytes());
        }
        let mut next = vec![0; members];
        let mut at = out.len();
        for (m, c) in counts.iter().enumerate().rev() {
            next[m] = at;
            at += *c as usize * 4;
        }
        out.resize(at, 0);
        for (b, o) in entries.iter().filter(|(_, o)| o & ZEROED == 0) {
            let n = &mut next[usize::from(*o)];
            out[*n..*n + 4].copy_from_slice(&b.to_le_bytes());
            *n += 4;
        }
        out
    }

    /// Blocks `range` with their owners (as [`OwnedBlocks::owner`]), in one pass.
    pub fn entries(&self, range: Range<usize>) -> impl Iterator<Item = (u32, (usize, bool))> + '_ {
        let blocks = self
            .blocks
            .get(range.start * 4..range.end * 4)
            .unwrap_or_default();
        let owners = self
            .owners
            .get(range.start * 2..range.end * 2)
            .unwrap_or_default();
        blocks
            .chunks_exact(4)
            .zip(owners.chunks_exact(2))
            .map(|(b, o)| {
                let o = u16::from_le_bytes([o[0], o[1]]);
                let b = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                (b, (usize::from(o & !ZEROED), o & ZEROED != 0))
            })
    }

    /// The blocks of the slice member `m` wrote last, ascending, as stored.
    pub fn written_by(&self, m: usize) -> &'a [u8] {
        &self.by_member[self.starts[m + 1] * 4..self.starts[m] * 4]
    }
}

impl OwnedBlocks for Slice<'_> {
    fn len(&self) -> usize {
        self.blocks.len() / 4
    }

    fn block(&self, i: usize) -> u32 {
        let b = &self.blocks[i * 4..i * 4 + 4];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    fn owner(&self, i: usize) -> (usize, bool) {
        let o = u16_at(self.owners, i * 2);
        (usize::from(o & !ZEROED), o & ZEROED != 0)
    }
}

/// An era's map as a walk of some containers reads it: the era's members and the
/// slices that hold blocks of those containers.
pub(crate) struct EraMap<'db> {
    /// The members' seqs, oldest first.
    pub seqs: Vec<u64>,
    values: Vec<DBPinnableSlice<'db>>,
}

impl EraMap<'_> {
    /// The slices read, ascending.
    pub fn slices(&self) -> Result<Vec<Slice<'_>>> {
        let members = self.seqs.len();
        self.values
            .iter()
            .map(|v| Slice::parse(v, members))
            .collect()
    }
}

/// Merges lists of `(block, owner)`, each ascending, newest first: the owner of a
/// block several hold is the newest list's. Merged in pairs, so each entry moves
/// log2(lists) times.
fn merge_newest_first(mut lists: Vec<Vec<(u32, u16)>>) -> Vec<(u32, u16)> {
    while lists.len() > 1 {
        let mut merged = Vec::with_capacity(lists.len().div_ceil(2));
        let mut it = lists.into_iter();
        while let Some(newer) = it.next() {
            merged.push(match it.next() {
                Some(older) => merge_two(&newer, &older),
                None => newer,
            });
        }
        lists = merged;
    }
    lists.pop().unwrap_or_default()
}

fn merge_two(newer: &[(u32, u16)], older: &[(u32, u16)]) -> Vec<(u32, u16)> {
    let mut out = Vec::with_capacity(newer.len() + older.len());
    let (mut i, mut j) = (0, 0);
    while let (Some(a), Some(b)) = (newer.get(i), older.get(j)) {
        if a.0 <= b.0 {
            out.push(*a);
            i += 1;
            j += usize::from(a.0 == b.0);
        } else {
            out.push(*b);
            j += 1;
        }
    }
    out.extend_from_slice(&newer[i..]);
    out.extend_from_slice(&older[j..]);
    out
}

impl Index {
    /// The map of `disk`'s era holding `seq`, if the era has one whose newest member is
    /// `seq`: the slices that hold blocks of containers `keys` only.
    pub(crate) fn era_map(
        &self,
        domain: &str,
        disk: u32,
        seq: u64,
        keys: &Range<u32>,
    ) -> Result<Option<EraMap<'_>>> {
        let (cf, era) = (self.cf("eras"), era_start(seq));
        let snapshot = self.db.snapshot();
        let mut read = ReadOptions::default();
        read.set_snapshot(&snapshot);
        let Some(head) = self
            .db
            .get_pinned_cf_opt(cf, head_key(domain, disk, era), &read)?
        else {
            return Ok(None);
        };
        let head = Head::parse(&head)?;
        if head.seqs.last() != Some(&seq) {
            return Ok(None);
        }
        let (lo, hi) = (u64::from(keys.start) << 16, u64::from(keys.end) << 16);
        let mut values = Vec::new();
        for &s in &head.slices {
            let start = u64::from(s) << SLICE_BITS;
            if start + (1 << SLICE_BITS) <= lo || start >= hi {
                continue;
            }
            let key = slice_key(domain, disk, era, s);
            let value = self.db.get_pinned_cf_opt(cf, key, &read)?;
            values.push(value.ok_or_else(corrupt)?);
        }
        Ok(Some(EraMap {
            seqs: head.seqs,
            values,
        }))
    }

    /// Puts into `batch` the map of `disk`'s era starting at `era`, merged from the
    /// maps of its runs, if each of its runs that touches the disk has one and the era
    /// touches at most [`MAX_BLOCKS`] blocks. `fresh` is a run whose map `batch` puts
    /// (None if it has none), read from there instead of the index.
    pub(crate) fn map_era(
        &self,
        batch: &mut WriteBatch,
        domain: &str,
        disk: u32,
        era: u64,
        fresh: Option<(u64, Option<&[u8]>)>,
    ) -> Result<()> {
        let cf = self.cf("eras");
        if let Some(next) = era.checked_add(1 << ERA_BITS) {
            // Slices an older map of the era left.
            batch.delete_range_cf(
                cf,
                head_key(domain, disk, era),
                head_key(domain, disk, next),
            );
        }
        // The runs' maps, oldest first.
        let mut maps: Vec<Cow<'_, [u8]>> = Vec::new();
        for r in 0..1u64 << (ERA_BITS - RUN_BITS) {
            let Some(run) = era.checked_add(r << RUN_BITS) else {
                break;
            };
            let map = match fresh {
                Some((f, map)) if f == run => map.map(Cow::Borrowed),
                _ => self
                    .run_map(domain, disk, run)?
                    .map(|v| Cow::Owned(v.to_vec())),
            };
            match map {
                Some(map) => maps.push(map),
                None if self.run_has_segments(domain, disk, run)? => return Ok(()),
                None => {}
            }
        }
        let (mut seqs, mut total) = (Vec::new(), 0);
        let mut lists = Vec::with_capacity(maps.len());
        for map in &maps {
            // A damaged run map leaves the era without one: the walk reads the run's
            // map, and reports it.
            let Ok(map) = RunMap::parse(map) else {
                return Ok(());
            };
            total += map.len() as u64;
            if total > MAX_BLOCKS {
                return Ok(());
            }
            let base = seqs.len() as u16;
            let mut list = Vec::with_capacity(map.len());
            for i in 0..map.len() {
                let (member, zeroed) = map.owner(i);
                let block = map.block(i);
                if member >= map.members() || list.last().is_some_and(|(b, _)| *b >= block) {
                    return Ok(());
                }
                let zeroed = if zeroed { ZEROED } else { 0 };
                list.push((block, (base + member as u16) | zeroed));
            }
            seqs.extend(map.seqs());
            lists.push(list);
        }
        if seqs.is_empty() {
            return Ok(());
        }
        lists.reverse();
        let entries = merge_newest_first(lists);
        let mut slices = Vec::new();
        let mut rest = entries.as_slice();
        while let Some((first, _)) = rest.first() {
            let slice = first >> SLICE_BITS;
            let (this, after) =
                rest.split_at(rest.partition_point(|(b, _)| b >> SLICE_BITS == slice));
            let slice = slice as u16;
            let value = Slice::encode(this, seqs.len());
            batch.put_cf(cf, slice_key(domain, disk, era, slice), value);
            slices.push(slice);
            rest = after;
        }
        batch.put_cf(
            cf,
            head_key(domain, disk, era),
            Head::encode(&seqs, &slices),
        );
        Ok(())
    }

    /// Deletes in `batch` the head of the map of `disk`'s era holding `seq`, whose
    /// members change: no walk reads its slices any more.
    pub(crate) fn forget_era_map(&self, batch: &mut WriteBatch, domain: &str, disk: u32, seq: u64) {
        batch.delete_cf(self.cf("eras"), head_key(domain, disk, era_start(seq)));
    }

    /// Whether some segment of the run starting at `run` touches `disk`.
    fn run_has_segments(&self, domain: &str, disk: u32, run: u64) -> Result<bool> {
        let prefix = keys::disk_prefix(domain, disk);
        let mut it = self.db.raw_iterator_cf(self.cf("bitmaps"));
        it.seek(keys::disk_seq(domain, disk, run));
        let touched = it
            .key()
            .and_then(|k| k.strip_prefix(prefix.as_slice()))
            .and_then(keys::be_u64)
            .is_some_and(|seq| seq >> RUN_BITS == run >> RUN_BITS);
        it.status()?;
        Ok(touched)
    }

    /// Whether `disk` has a segment after the era holding `seq`: then the era is
    /// finished.
    pub(crate) fn era_is_finished(&self, domain: &str, disk: u32, seq: u64) -> Result<bool> {
        let last_run = era_start(seq) + (1 << ERA_BITS) - (1 << RUN_BITS);
        self.run_is_finished(domain, disk, last_run)
    }

    /// Maps every finished era of an index made before era maps existed, once (after
    /// its runs are mapped).
    pub(crate) fn ensure_era_maps(&self) -> Result<()> {
        let cf = self.cf("eras");
        if self.db.get_pinned_cf(cf, VERSION_KEY)?.is_some() {
            return Ok(());
        }
        let mut eras: Vec<(String, u32, u64)> = self
            .disk_runs()?
            .into_iter()
            .map(|(domain, disk, run)| (domain, disk, era_start(run)))
            .collect();
        eras.dedup();
        for pair in eras.windows(2) {
            let ((domain, disk, era), (next_domain, next_disk, _)) = (&pair[0], &pair[1]);
            // A disk's last era may still grow.
            if (domain, disk) == (next_domain, next_disk) {
                let mut batch = WriteBatch::default();
                self.map_era(&mut batch, domain, *disk, *era, None)?;
                self.db.write(batch)?;
            }
        }
        self.db.put_cf(cf, VERSION_KEY, [])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_list_owns_a_block_several_hold() {
        let newest = vec![(1, 30), (5, 31), (9, 32)];
        let middle = vec![(0, 20), (5, 21), (7, 22)];
        let oldest = vec![(1, 10), (7, 11), (9, 12), (11, 13)];
        assert_eq!(
            merge_newest_first(vec![newest, middle, oldest]),
            [(0, 20), (1, 30), (5, 31), (7, 22), (9, 32), (11, 13)]
        );
        assert!(merge_newest_first(vec![]).is_empty());
    }

    #[test]
    fn heads_and_slices_round_trip_and_reject_damage() {
        let head = Head::encode(&[3, 7, 9], &[0, 2]);
        let parsed = Head::parse(&head).expect("head");
        assert_eq!((parsed.seqs, parsed.slices), (vec![3, 7, 9], vec![0, 2]));
        assert!(Head::parse(&head[..head.len() - 1]).is_err());
        assert!(Head::parse(&Head::encode(&[7, 3], &[0])).is_err());
        assert!(Head::parse(&Head::encode(&[], &[])).is_err());
        let slice = Slice::encode(&[(4, 1), (6, 0), (8, 2 | ZEROED), (9, 1)], 3);
        let parsed = Slice::parse(&slice, 3).expect("slice");
        assert_eq!(parsed.len(), 4);
        assert_eq!((parsed.block(2), parsed.owner(2)), (8, (2, true)));
        assert_eq!(parsed.owner(0), (1, false));
        let written = |m| -> Vec<u32> {
            let bytes = parsed.written_by(m);
            bytes
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes(b.try_into().expect("4")))
                .collect()
        };
        assert_eq!(
            (written(0), written(1), written(2)),
            (vec![6], vec![4, 9], vec![])
        );
        assert!(Slice::parse(&slice[..slice.len() - 1], 3).is_err());
        assert!(Slice::parse(&slice, 2).is_err());
    }
}
