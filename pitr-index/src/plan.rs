//! Point resolution of one disk (DESIGN.md section 7): which segment holds the newest
//! state of each block at a point, and which blocks changed between two points.

use std::ops::Range;
use std::sync::Arc;

use roaring::RoaringBitmap;
use rocksdb::{Direction, IteratorMode};

use crate::eramap::{self, Slice};
use crate::mask::{self, BlockMask, BlockSet};
use crate::runmap::{OwnedBlocks, RunMap};
use crate::summary::{self, Skipper};
use crate::view::{self, Container, View};
use crate::{keys, values, Index, IndexError, Result};

/// A sorted set of block numbers: what a plan reads from one segment. Flat lists,
/// where a bitmap of a few thousand scattered blocks would allocate once per block.
/// Two of them: the blocks of the low part of the disk, and those of the high part,
/// each resolved by a walk of its own. Joining them into one list copied every block
/// of a plan again (10% of a plan of 10 million scattered blocks, issue 7).
#[derive(Clone, Debug, Default)]
pub struct Blocks {
    /// Ascending.
    low: Part,
    /// Ascending, each above every block of `low`.
    high: Part,
}

/// A range of a list of blocks that several segments' [`Blocks`] may share: a walk
/// writes the blocks of many segments into one buffer, since 10,000 lists of their own
/// cost a page fault per 4 KiB of a 40 MB plan, and an allocation each.
#[derive(Clone, Debug, Default)]
struct Part {
    list: Arc<Vec<u32>>,
    range: Range<usize>,
}

impl Part {
    fn whole(list: Vec<u32>) -> Part {
        Part {
            range: 0..list.len(),
            list: Arc::new(list),
        }
    }

    fn blocks(&self) -> &[u32] {
        &self.list[self.range.clone()]
    }

    fn len(&self) -> usize {
        self.range.len()
    }
}

impl Blocks {
    /// The blocks of one ascending list.
    fn sorted(blocks: Vec<u32>) -> Blocks {
        Blocks {
            low: Part::whole(blocks),
            high: Part::default(),
        }
    }

    /// The blocks of `range` of `list`, ascending.
    fn shared(list: &Arc<Vec<u32>>, range: Range<usize>) -> Blocks {
        Blocks {
            low: Part {
                list: Arc::clone(list),
                range,
            },
            high: Part::default(),
        }
    }

    /// Adds `above`, whose blocks are all above this set's.
    fn append(&mut self, above: Blocks) {
        for part in [above.low, above.high] {
            if self.high.len() == 0 {
                self.high = part;
            } else if part.len() > 0 {
                self.high = Part::whole([self.high.blocks(), part.blocks()].concat());
            }
        }
    }

    /// Number of blocks.
    pub fn len(&self) -> u64 {
        (self.low.len() + self.high.len()) as u64
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.low.len() == 0 && self.high.len() == 0
    }

    /// The blocks, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.low.blocks().iter().chain(self.high.blocks()).copied()
    }

    /// Whether `block` is one of them.
    pub fn contains(&self, block: u32) -> bool {
        let part = match self.high.blocks().first() {
            Some(first) if block >= *first => &self.high,
            _ => &self.low,
        };
        part.blocks().binary_search(&block).is_ok()
    }

    /// Drops the blocks of `done`.
    pub fn remove_all(&mut self, done: &RoaringBitmap) {
        for part in [&mut self.low, &mut self.high] {
            if part.blocks().iter().any(|b| done.contains(*b)) {
                let kept = part.blocks().iter().filter(|b| !done.contains(**b));
                *part = Part::whole(kept.copied().collect());
            }
        }
    }

    /// The same set as a bitmap.
    pub fn to_bitmap(&self) -> RoaringBitmap {
        // Ascending by construction, so this cannot fail.
        RoaringBitmap::from_sorted_iter(self.iter()).unwrap_or_default()
    }
}

impl PartialEq for Blocks {
    fn eq(&self, other: &Blocks) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Blocks {}

impl From<&RoaringBitmap> for Blocks {
    fn from(b: &RoaringBitmap) -> Blocks {
        Blocks::sorted(b.iter().collect())
    }
}

/// Where to read a disk's blocks from to rebuild it at one point.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DiskPlan {
    /// Disk index.
    pub disk: u32,
    /// The point.
    pub seq: u64,
    /// Number of blocks of the disk (0 in a plan of some blocks only, see `within`).
    pub blocks: u32,
    /// For each segment that holds some of the newest data: the blocks to read from it.
    /// The sets are disjoint; newest segment first.
    pub reads: Vec<(u64, Blocks)>,
    /// Blocks whose newest state is an explicit zero.
    pub zeroed: RoaringBitmap,
    /// Segments that zeroed some of `zeroed` (a restore verifies them too).
    pub zeroed_by: Vec<u64>,
    /// The blocks the plan resolves: None for the whole disk (`0..blocks`), or the set
    /// given to [`Index::plan_blocks`].
    pub within: Option<RoaringBitmap>,
    /// Runs of segments the walk skipped whole because their summary held no block
    /// it still had to resolve.
    pub skipped_runs: u64,
    /// Runs of segments the walk resolved from their run maps.
    pub mapped_runs: u64,
    /// Eras of runs the walk resolved from their era maps.
    pub mapped_eras: u64,
}

impl DiskPlan {
    /// Blocks that hold data at this point.
    pub fn data_blocks(&self) -> u64 {
        self.reads.iter().map(|(_, b)| b.len()).sum()
    }

    /// Every block that holds data at this point.
    pub fn data(&self) -> RoaringBitmap {
        let mut all: Vec<u32> = self.reads.iter().flat_map(|(_, b)| b.iter()).collect();
        all.sort_unstable();
        RoaringBitmap::from_sorted_iter(all).unwrap_or_default()
    }

    /// Every block the plan resolves that is zero at this point (explicitly zeroed or
    /// never written): of the whole disk, or of `within` for a plan of some blocks.
    pub fn zero_blocks(&self) -> RoaringBitmap {
        let mut z = match &self.within {
            Some(w) => w.clone(),
            None => {
                let mut all = RoaringBitmap::new();
                all.insert_range(0..self.blocks);
                all
            }
        };
        z -= self.data();
        z
    }
}

/// The blocks a walk of the bitmaps has yet to resolve.
enum Pending {
    /// Every block of a disk of `blocks` blocks but those in `resolved`, which grows by
    /// what segments touched, so a step costs what the segment wrote, not the size of
    /// the disk. `want` is how many blocks of the walk's containers are on the disk.
    Disk {
        blocks: u32,
        resolved: BlockMask,
        want: u64,
    },
    /// Exactly these blocks.
    Only(BlockSet),
}

impl Pending {
    /// Every block of a disk of `blocks` blocks in containers `keys`.
    fn disk(blocks: u32, keys: &Range<u32>) -> Pending {
        let first = u64::from(keys.start) << 16;
        let end = (u64::from(keys.end) << 16).min(u64::from(blocks));
        Pending::Disk {
            blocks,
            resolved: BlockMask::with_limit(u64::from(blocks)),
            want: end.saturating_sub(first),
        }
    }

    /// Whether no block is left to resolve.
    fn is_empty(&self) -> bool {
        match self {
            Pending::Disk { resolved, want, .. } => resolved.len() >= *want,
            Pending::Only(left) => left.left() == 0,
        }
    }

    /// How many of the values of container `key` lie on the disk: all, some, or none.
    fn limit(blocks: u32, key: u16) -> u32 {
        blocks.saturating_sub(u32::from(key) << 16).min(1 << 16)
    }

    /// Resolves the pending blocks of one container of a segment's bitmap, adding them
    /// to `hits` (ascending): blocks of the walk's set, one by one.
    fn take_some(left: &mut BlockSet, key: u16, c: Container<'_>, hits: &mut impl Hits) {
        let high = u32::from(key) << 16;
        let mut one = |v: u16| {
            if left.resolve(high | u32::from(v)) {
                hits.push(high | u32::from(v));
            }
        };
        match c {
            Container::Array(values) => view::array_values(values).for_each(&mut one),
            Container::Runs(runs) => view::run_values(runs).for_each(&mut one),
            Container::Bitmap(words) => for_each_bit(words, 1 << 16, one),
        }
    }

    /// Resolves the pending blocks of one container of a segment's bitmap against the
    /// disk's mask, adding them to `hits` (ascending). Bitmap containers go a word at
    /// a time.
    fn take_container(
        blocks: u32,
        resolved: &mut BlockMask,
        key: u16,
        c: Container<'_>,
        hits: &mut impl Hits,
    ) {
        let high = u32::from(key) << 16;
        let limit = Pending::limit(blocks, key);
        let Some(page) = resolved.page_mut(key) else {
            return;
        };
        let before = hits.count();
        let mut one = |v: u16| {
            let (w, bit) = (usize::from(v >> 6), 1u64 << (v & 63));
            if page[w] & bit == 0 && u32::from(v) < limit {
                page[w] |= bit;
                hits.push(high | u32::from(v));
            }
        };
        match c {
            Container::Array(values) => view::array_values(values).for_each(&mut one),
            Container::Runs(runs) => view::run_values(runs).for_each(&mut one),
            Container::Bitmap(words) if limit == 1 << 16 => {
                let mut new = [0u64; 1024];
                for ((n, p), word) in new
                    .iter_mut()
                    .zip(page.iter_mut())
                    .zip(view::bitmap_words(words))
                {
                    *n = word & !*p;
                    *p |= *n;
                }
                hits.push_words(key, &new);
            }
            Container::Bitmap(words) => for_each_bit(words, limit, one),
        }
        resolved.add_len(hits.count() - before);
    }

    /// Resolves the blocks `named` (ascending, their words already asked for by
    /// [`BlockMask::prefetch`]) against the disk's mask, into `hits`; empties `named`.
    fn take_named(resolved: &mut BlockMask, named: &mut Vec<u32>, hits: &mut impl Hits) {
        for &b in named.iter() {
            if resolved.insert(b) {
                hits.push(b);
            }
        }
        named.clear();
    }

    /// Resolves the pending blocks of containers `keys` of a serialized bitmap into
    /// `hits` (ascending). `named` is scratch space.
    ///
    /// A whole-disk walk of scattered blocks is bound by the cache misses of its mask,
    /// one per block (94% of a plan's time, issue 7). So the values of array
    /// containers are only named and prefetched at first, and tested once the
    /// segment's bitmap is read, by when their misses have overlapped. Dense
    /// containers are taken as they come (their words are contiguous), after what was
    /// named before them, to keep `hits` ascending.
    fn take_all(
        &mut self,
        bitmap: &View<'_>,
        keys: &Range<u32>,
        hits: &mut impl Hits,
        named: &mut Vec<u32>,
    ) -> Result<()> {
        // Containers below `keys` are skipped, and the visit stops at the first above.
        let first = first_key(keys);
        let below = |key: u16| u32::from(key) < keys.start;
        let past = |key: u16| u32::from(key) >= keys.end;
        match self {
            Pending::Only(left) => {
                bitmap.try_for_each_from(first, |key, c| {
                    if !below(key) && !past(key) {
                        Pending::take_some(left, key, c, hits);
                    }
                    !past(key)
                })?;
            }
            Pending::Disk {
                blocks, resolved, ..
            } => {
                let blocks = *blocks;
                named.clear();
                bitmap.try_for_each_from(first, |key, c| {
                    if below(key) || past(key) {
                        return !past(key);
                    }
                    match c {
                        Container::Array(values) => {
                            let (high, limit) = (u32::from(key) << 16, Pending::limit(blocks, key));
                            for v in view::array_values(values).filter(|v| u32::from(*v) < limit) {
                                let b = high | u32::from(v);
                                resolved.prefetch(b);
                                named.push(b);
                            }
                        }
                        dense => {
                            Pending::take_named(resolved, named, hits);
                            Pending::take_container(blocks, resolved, key, dense, hits);
                        }
                    }
                    true
                })?;
                Pending::take_named(resolved, named, hits);
            }
        }
        Ok(())
    }

    /// Resolves the pending blocks of containers `keys` from a run's map or the slices
    /// of an era's (`parts`, ascending, whose owners index `seqs`), adding the reads and
    /// zeroes of the members to `plan`, newest member first. The blocks are ascending,
    /// so the mask is visited in order, and each block's word is asked for a few
    /// blocks ahead.
    fn take_mapped(
        &mut self,
        seqs: &[u64],
        parts: &[impl OwnedBlocks],
        keys: &Range<u32>,
        plan: &mut DiskPlan,
        zero_hits: &mut ZeroHits,
    ) -> Result<()> {
        const AHEAD: usize = 16;
        let corrupt = || IndexError::Corrupt("run or era map value".into());
        let mut hi = u64::from(keys.end) << 16;
        if let Pending::Disk { blocks, .. } = self {
            hi = hi.min(u64::from(*blocks));
        }
        let lo = u64::from(keys.start) << 16;
        let ranges: Vec<Range<usize>> = parts
            .iter()
            .map(|p| {
                let end = p.lower_bound(hi);
                p.lower_bound(lo).min(end)..end
            })
            .collect();
        // A whole-disk walk resolves most of what a map holds: its lists are sized by
        // that first, as growing 64 lists block by block reallocated and copied them
        // (10% of a plan of scattered blocks). A walk of some blocks resolves few.
        let mut touched = vec![0usize; seqs.len()];
        if let Pending::Disk { .. } = self {
            for (p, r) in parts.iter().zip(&ranges) {
                for i in r.clone() {
                    *touched.get_mut(p.owner(i).0).ok_or_else(corrupt)? += 1;
                }
            }
        }
        let mut reads: Vec<Vec<u32>> = touched.iter().map(|n| Vec::with_capacity(*n)).collect();
        let mut zeroed = vec![false; seqs.len()];
        let entries: usize = ranges.iter().map(Range::len).sum();
        match self {
            // A walk of fewer blocks than the map holds, by far (a rollback's, say):
            // each of its pending blocks is looked up in the map, instead of testing
            // every block of the map against the walk's set.
            Pending::Only(left) if (left.left() as usize).saturating_mul(SEARCH) < entries => {
                for (p, r) in parts.iter().zip(ranges) {
                    if r.is_empty() {
                        continue;
                    }
                    let (first, last) = (p.block(r.start), p.block(r.end - 1));
                    let from = left.blocks().partition_point(|b| *b < first);
                    let mut at = r.start;
                    for i in from..left.blocks().len() {
                        let b = left.blocks()[i];
                        if b > last {
                            break;
                        }
                        if !left.is_pending(b) {
                            continue;
                        }
                        at = p.lower_bound_in(at..r.end, u64::from(b));
                        if at == r.end || p.block(at) != b {
                            continue;
                        }
                        // What a scan checks of the whole map, checked around each hit.
                        let below = at > r.start && p.block(at - 1) >= b;
                        let above = at + 1 < r.end && p.block(at + 1) <= b;
                        if below || above {
                            return Err(corrupt());
                        }
                        left.resolve(b);
                        record(&mut reads, &mut zeroed, zero_hits, p.owner(at), b)?;
                    }
                }
            }
            _ => {
                let mut last = None;
                for (p, r) in parts.iter().zip(ranges) {
                    for i in r.clone() {
                        let b = p.block(i);
                        if last.is_some_and(|l| l >= b) {
                            return Err(corrupt());
                        }
                        last = Some(b);
                        let new = match self {
                            Pending::Disk { resolved, .. } => {
                                if i + AHEAD < r.end {
                                    resolved.prefetch(p.block(i + AHEAD));
                                }
                                resolved.insert(b)
                            }
                            Pending::Only(left) => left.resolve(b),
                        };
                        if new {
                            record(&mut reads, &mut zeroed, zero_hits, p.owner(i), b)?;
                        }
                    }
                }
            }
        }
        zero_hits.take_added();
        for (m, mut blocks) in reads.into_iter().enumerate().rev() {
            if zeroed[m] {
                plan.zeroed_by.push(seqs[m]);
            }
            if !blocks.is_empty() {
                if blocks.capacity() > 2 * blocks.len() {
                    // What newer runs resolved already: not kept for the plan's life.
                    blocks.shrink_to_fit();
                }
                plan.reads.push((seqs[m], Blocks::sorted(blocks)));
            }
        }
        Ok(())
    }

    /// Resolves the pending blocks of containers `keys` from the slices of an era's map
    /// (ascending, whose owners index `seqs`), adding the reads and zeroes of the
    /// members to `plan`, newest member first. In a whole-disk walk the blocks in disk
    /// order only test and set the mask, in order (an era holds several blocks per
    /// cache line of the mask, so the CPU's own prefetcher keeps up); a member's reads
    /// are then its lists in the slices, less the few blocks that newer segments hold,
    /// all of them in one buffer.
    fn take_era(
        &mut self,
        seqs: &[u64],
        slices: &[Slice<'_>],
        keys: &Range<u32>,
        plan: &mut DiskPlan,
        zero_hits: &mut ZeroHits,
    ) -> Result<()> {
        let Pending::Disk {
            blocks, resolved, ..
        } = self
        else {
            return self.take_mapped(seqs, slices, keys, plan, zero_hits);
        };
        let corrupt = || IndexError::Corrupt("era map value".into());
        let lo = u64::from(keys.start) << 16;
        let hi = (u64::from(keys.end) << 16).min(u64::from(*blocks));
        // Per member, the blocks it wrote that newer segments hold: ascending.
        let mut newer: Vec<Vec<u32>> = vec![Vec::new(); seqs.len()];
        let mut zeroed = vec![false; seqs.len()];
        let (mut last, mut written, mut added) = (None, 0, 0);
        for p in slices {
            let end = p.lower_bound(hi);
            let start = p.lower_bound(lo).min(end);
            for (b, (m, zero)) in p.entries(start..end) {
                if last.is_some_and(|l| l >= b) {
                    return Err(corrupt());
                }
                last = Some(b);
                let new = resolved.insert_uncounted(b);
                added += u64::from(new);
                if m >= seqs.len() {
                    return Err(corrupt());
                }
                if zero {
                    if new {
                        zeroed[m] = true;
                        zero_hits.push(b);
                    }
                } else {
                    written += 1;
                    if !new {
                        newer[m].push(b);
                    }
                }
            }
        }
        resolved.add_len(added);
        zero_hits.take_added();
        // Slices that lie in `keys` whole hand out their members' lists whole.
        let whole: Vec<bool> = slices
            .iter()
            .map(|p| {
                p.len() == 0
                    || (u64::from(p.block(0)) >= lo && u64::from(p.block(p.len() - 1)) < hi)
            })
            .collect();
        let held: usize = newer.iter().map(Vec::len).sum();
        let mut all = Vec::with_capacity(written - held.min(written));
        mask::advise_huge_pages(all.spare_capacity_mut());
        let mut members = Vec::new();
        let (mut listed, mut parts) = (0, Vec::with_capacity(slices.len()));
        for m in (0..seqs.len()).rev() {
            if zeroed[m] {
                plan.zeroed_by.push(seqs[m]);
            }
            parts.clear();
            for (p, whole) in slices.iter().zip(&whole) {
                let all = p.written_by(m);
                parts.push(if *whole {
                    all
                } else {
                    &all[bound(all, lo) * 4..bound(all, hi) * 4]
                });
            }
            listed += parts.iter().map(|p| p.len() / 4).sum::<usize>();
            // Each block checked to be above the last, and dropped if newer segments
            // hold it, in one pass.
            let (start, mut last) = (all.len(), None);
            let mut newer = newer[m].iter().peekable();
            for part in &parts {
                for b in part.chunks_exact(4) {
                    let b = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    if last.is_some_and(|l| l >= b) {
                        return Err(corrupt());
                    }
                    last = Some(b);
                    if newer.next_if_eq(&&b).is_none() {
                        all.push(b);
                    }
                }
            }
            if newer.peek().is_some() {
                return Err(corrupt());
            }
            if all.len() > start {
                members.push((seqs[m], start..all.len()));
            }
        }
        let all = Arc::new(all);
        for (seq, range) in members {
            plan.reads.push((seq, Blocks::shared(&all, range)));
        }
        // The members' lists hold exactly the blocks they wrote last.
        if listed != written {
            return Err(corrupt());
        }
        Ok(())
    }

    /// Whether some block of containers `keys` of a serialized bitmap is pending.
    fn touched_by(&self, bitmap: &View<'_>, keys: &Range<u32>) -> Result<bool> {
        let all_done = bitmap.try_for_each_from(first_key(keys), |key, c| {
            if !keys.contains(&u32::from(key)) {
                return true;
            }
            let high = u32::from(key) << 16;
            let pending = |v: u16| match self {
                Pending::Disk {
                    blocks, resolved, ..
                } => {
                    u32::from(v) < Pending::limit(*blocks, key)
                        && resolved
                            .page(key)
                            .is_some_and(|p| p[usize::from(v >> 6)] & (1u64 << (v & 63)) == 0)
                }
                Pending::Only(left) => left.is_pending(high | u32::from(v)),
            };
            let any = match c {
                Container::Array(values) => view::array_values(values).any(pending),
                Container::Runs(runs) => view::run_values(runs).any(pending),
                Container::Bitmap(words) => {
                    view::bitmap_words(words).enumerate().any(|(i, mut w)| {
                        while w != 0 {
                            if pending((i as u32 * 64 + w.trailing_zeros()) as u16) {
                                return true;
                            }
                            w &= w - 1;
                        }
                        false
                    })
                }
            };
            !any
        })?;
        Ok(!all_done)
    }
}

/// Where a walk puts the blocks it resolves from one bitmap, in ascending order.
trait Hits {
    /// Number of blocks put so far.
    fn count(&self) -> u64;
    /// Puts one block.
    fn push(&mut self, block: u32);
    /// Puts the blocks of container `key` whose bits are set in `words`.
    fn push_words(&mut self, key: u16, words: &[u64; 1024]);
}

impl Hits for Vec<u32> {
    fn count(&self) -> u64 {
        self.len() as u64
    }

    fn push(&mut self, block: u32) {
        Vec::push(self, block);
    }

    fn push_words(&mut self, key: u16, words: &[u64; 1024]) {
        let high = u32::from(key) << 16;
        for (i, mut w) in words.iter().copied().enumerate() {
            while w != 0 {
                Vec::push(self, high | (i as u32 * 64 + w.trailing_zeros()));
                w &= w - 1;
            }
        }
    }
}

/// The zeroed blocks a walk resolves. An image zeroes millions of blocks, whole
/// containers of them, which are or-ed into a bitmap as containers. Scattered blocks
/// are gathered in a list and added once at the end: a bitmap per segment, or-ed in
/// after, allocated once per container of each (9% of a plan of scattered blocks),
/// and inserting them one by one still searched the containers for each (4.5%).
#[derive(Default)]
struct ZeroHits {
    dense: RoaringBitmap,
    scattered: Vec<u32>,
    /// Blocks put since the last [`ZeroHits::take_added`].
    added: u64,
}

/// Scattered zeroed blocks gathered before they are added to the bitmap, to bound
/// the list on histories that zero many.
const SCATTERED_ZEROES: usize = 1 << 20;

impl ZeroHits {
    /// Number of blocks put since the last call.
    fn take_added(&mut self) -> u64 {
        std::mem::take(&mut self.added)
    }

    /// Adds the gathered blocks to the bitmap.
    fn fold(&mut self) {
        self.scattered.sort_unstable();
        let sorted = RoaringBitmap::from_sorted_iter(self.scattered.drain(..));
        self.dense |= sorted.unwrap_or_default();
    }

    /// Every zeroed block.
    fn into_bitmap(mut self) -> RoaringBitmap {
        self.fold();
        self.dense
    }
}

impl Hits for ZeroHits {
    fn count(&self) -> u64 {
        self.added
    }

    fn push(&mut self, block: u32) {
        self.scattered.push(block);
        self.added += 1;
        if self.scattered.len() >= SCATTERED_ZEROES {
            self.fold();
        }
    }

    fn push_words(&mut self, key: u16, words: &[u64; 1024]) {
        let mut bytes = [0u8; 8192];
        for (b, w) in bytes.chunks_exact_mut(8).zip(words) {
            b.copy_from_slice(&w.to_le_bytes());
        }
        let new = RoaringBitmap::from_lsb0_bytes(u32::from(key) << 16, &bytes);
        self.added += new.len();
        self.dense |= new;
    }
}

/// Hands block `b`, resolved from a map, to its owner `m`: to its reads, or to the
/// zeroed blocks. Inlined: as a closure called for each of millions of blocks, the
/// call was a tenth of a walk.
#[inline(always)]
fn record(
    reads: &mut [Vec<u32>],
    zeroed: &mut [bool],
    zero_hits: &mut ZeroHits,
    (m, zero): (usize, bool),
    b: u32,
) -> Result<()> {
    let corrupt = || IndexError::Corrupt("run or era map value".into());
    if zero {
        *zeroed.get_mut(m).ok_or_else(corrupt)? = true;
        zero_hits.push(b);
    } else {
        reads.get_mut(m).ok_or_else(corrupt)?.push(b);
    }
    Ok(())
}

/// The number of blocks of `list` (u32 little-endian, ascending) below `block`.
fn bound(list: &[u8], block: u64) -> usize {
    let (mut lo, mut hi) = (0, list.len() / 4);
    while lo < hi {
        let mid = (lo + hi) / 2;
        let b = &list[mid * 4..mid * 4 + 4];
        if u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])) < block {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// The first container key of `keys`, where a visit of a bitmap may start.
fn first_key(keys: &Range<u32>) -> u16 {
    u16::try_from(keys.start).unwrap_or(u16::MAX)
}

/// Calls `f` for each value below `limit` of a bitmap container, ascending.
fn for_each_bit(words: &[u8], limit: u32, mut f: impl FnMut(u16)) {
    for (i, mut word) in view::bitmap_words(words).enumerate() {
        while word != 0 {
            let v = i as u32 * 64 + word.trailing_zeros();
            if v >= limit {
                return;
            }
            f(v as u16);
            word &= word - 1;
        }
    }
}

/// A walk of some blocks looks its pending blocks up in a run's or era's map, one by
/// one, when the map holds this many times as many blocks; else it tests each block of
/// the map against its set (a lookup costs about as many steps as the log2 of the
/// map's size).
const SEARCH: usize = 32;

/// Number of roaring containers of a u32 block range.
const CONTAINERS: u32 = 1 << 16;
/// Whole-disk plans of disks of at least this many blocks (4 GiB) walk two halves of
/// the disk on two threads. (Unit tests split small disks too, so that the property
/// tests cover the joined plans.)
const SPLIT_BLOCKS: u32 = if cfg!(test) { 1 << 16 } else { 1 << 20 };
/// Plans of at least this many blocks walk two halves of them on two threads.
const SPLIT_SOME: u64 = if cfg!(test) { 8 } else { 256 };

/// The plan of two walks over disjoint containers, those of `low` below those of
/// `high`.
fn join(mut low: DiskPlan, high: DiskPlan) -> DiskPlan {
    let mut reads = Vec::with_capacity(low.reads.len() + high.reads.len());
    let mut a = std::mem::take(&mut low.reads).into_iter().peekable();
    let mut b = high.reads.into_iter().peekable();
    // Both are newest first; a segment in both reads the low part's blocks first.
    loop {
        let next = match (a.peek(), b.peek()) {
            (Some((sa, _)), Some((sb, _))) if sa == sb => {
                let ((seq, mut x), (_, y)) =
                    (a.next().unwrap_or_default(), b.next().unwrap_or_default());
                x.append(y);
                (seq, x)
            }
            (Some((sa, _)), Some((sb, _))) if sa > sb => a.next().unwrap_or_default(),
            (Some(_), Some(_)) | (None, Some(_)) => b.next().unwrap_or_default(),
            (Some(_), None) => a.next().unwrap_or_default(),
            (None, None) => break,
        };
        reads.push(next);
    }
    low.reads = reads;
    low.zeroed |= high.zeroed;
    low.zeroed_by.extend(high.zeroed_by);
    low.zeroed_by.sort_unstable_by(|x, y| y.cmp(x));
    low.zeroed_by.dedup();
    low.skipped_runs += high.skipped_runs;
    low.mapped_runs += high.mapped_runs;
    low.mapped_eras += high.mapped_eras;
    low
}

impl Index {
    /// Plans the restore of one disk at point `at` (DESIGN.md section 7): walks the
    /// disk's bitmaps from `at` downwards until every block is resolved.
    pub fn plan(&self, domain: &str, disk: u32, blocks: u32, at: u64) -> Result<DiskPlan> {
        let plan = DiskPlan {
            disk,
            seq: at,
            blocks,
            ..DiskPlan::default()
        };
        let containers = blocks.div_ceil(1 << 16);
        let parts = if blocks >= SPLIT_BLOCKS {
            let mid = containers / 2;
            vec![0..mid, mid..CONTAINERS]
        } else {
            std::iter::once(0..CONTAINERS).collect()
        };
        self.walk_parts(domain, plan, parts, |keys| Pending::disk(blocks, keys))
    }

    /// Like [`Index::plan`], but resolves only `blocks` at point `at`: the plan's
    /// `within` is `blocks`, its `blocks` is 0 (the disk's size is not needed), and
    /// its [`DiskPlan::zero_blocks`] are the blocks of `blocks` that are zero at `at`.
    pub fn plan_blocks(
        &self,
        domain: &str,
        disk: u32,
        blocks: &RoaringBitmap,
        at: u64,
    ) -> Result<DiskPlan> {
        let plan = DiskPlan {
            disk,
            seq: at,
            within: Some(blocks.clone()),
            ..DiskPlan::default()
        };
        // Split at the container of the middle block, if that leaves blocks on both sides.
        let mid = blocks
            .select((blocks.len() / 2) as u32)
            .map_or(0, |b| b >> 16)
            .max(blocks.min().map_or(0, |b| (b >> 16) + 1));
        let parts = if blocks.len() >= SPLIT_SOME && blocks.max().is_some_and(|b| b >> 16 >= mid) {
            vec![0..mid, mid..CONTAINERS]
        } else {
            std::iter::once(0..CONTAINERS).collect()
        };
        self.walk_parts(domain, plan, parts, |keys| {
            let mut part = blocks.clone();
            part.remove_range(..keys.start << 16);
            if keys.end < CONTAINERS {
                part.remove_range(keys.end << 16..);
            }
            Pending::Only(BlockSet::new(&part))
        })
    }

    /// Walks the disk's bitmaps from `plan.seq` downwards and adds to `plan` where each
    /// pending block's newest state is, until none is pending or the log's start is
    /// reached (what is still pending then was never written: zero). Runs of segments
    /// whose summary holds no pending block are skipped whole.
    /// Walks each part of the disk's containers on a thread of its own (the parts are
    /// independent: a block's newest state depends on its own history only) and joins
    /// their plans.
    fn walk_parts(
        &self,
        domain: &str,
        plan: DiskPlan,
        parts: Vec<Range<u32>>,
        pending: impl Fn(&Range<u32>) -> Pending + Sync,
    ) -> Result<DiskPlan> {
        if parts.len() == 1 {
            return self.walk(domain, plan, pending(&parts[0]), &parts[0]);
        }
        let plans: Vec<Result<DiskPlan>> = std::thread::scope(|scope| {
            let walks: Vec<_> = parts
                .iter()
                .map(|keys| {
                    let (plan, pending) = (plan.clone(), &pending);
                    scope.spawn(move || self.walk(domain, plan, pending(keys), keys))
                })
                .collect();
            walks
                .into_iter()
                .map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        let mut plans = plans.into_iter();
        let first = plans.next().unwrap_or_else(|| Ok(plan.clone()))?;
        plans.try_fold(first, |joined, part| Ok(join(joined, part?)))
    }

    fn walk(
        &self,
        domain: &str,
        mut plan: DiskPlan,
        mut pending: Pending,
        keys: &Range<u32>,
    ) -> Result<DiskPlan> {
        if pending.is_empty() {
            return Ok(plan);
        }
        let prefix = keys::disk_prefix(domain, plan.disk);
        let mut it = self.db.raw_iterator_cf(self.cf("bitmaps"));
        it.seek_for_prev(keys::disk_seq(domain, plan.disk, plan.seq));
        let mut skipper = Skipper::new();
        // The run and the era whose maps were last looked for.
        let (mut mapped, mut mapped_era) = (None, None);
        let (mut hits, mut named) = (Vec::new(), Vec::new());
        let mut zero_hits = ZeroHits::default();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let Some(seq) = k.strip_prefix(prefix.as_slice()) else {
                break;
            };
            let seq = keys::be_u64(seq).ok_or_else(|| IndexError::Corrupt("bitmap key".into()))?;
            let era = eramap::era_start(seq);
            if mapped_era != Some(era) {
                // The first segment met of an era: as for runs below, the era's map
                // serves if that is its newest member.
                mapped_era = Some(era);
                if let Some(map) = self.era_map(domain, plan.disk, seq, keys)? {
                    let slices = map.slices()?;
                    pending.take_era(&map.seqs, &slices, keys, &mut plan, &mut zero_hits)?;
                    plan.mapped_eras += 1;
                    if pending.is_empty() {
                        break;
                    }
                    match era.checked_sub(1) {
                        Some(before) => {
                            it.seek_for_prev(keys::disk_seq(domain, plan.disk, before));
                            continue;
                        }
                        None => break,
                    }
                }
            }
            if skipper.should_try(seq) {
                let skip = match self.summary(domain, plan.disk, seq)? {
                    Some(s) => !pending.touched_by(&View::new(&s)?, keys)?,
                    None => false,
                };
                skipper.skipped(skip);
                if skip {
                    plan.skipped_runs += 1;
                    match summary::run_start(seq).checked_sub(1) {
                        Some(before) => {
                            it.seek_for_prev(keys::disk_seq(domain, plan.disk, before));
                            continue;
                        }
                        None => break,
                    }
                }
            }
            let run = summary::run_start(seq);
            if mapped != Some(run) {
                // The first segment met of a run: its newest at or below the point. The
                // run's map serves if that is the map's newest member too.
                mapped = Some(run);
                if let Some(value) = self.run_map(domain, plan.disk, seq)? {
                    let map = RunMap::parse(&value)?;
                    if map.newest() == seq {
                        let parts = [map];
                        pending.take_mapped(
                            &parts[0].seqs(),
                            &parts,
                            keys,
                            &mut plan,
                            &mut zero_hits,
                        )?;
                        plan.mapped_runs += 1;
                        if pending.is_empty() {
                            break;
                        }
                        match run.checked_sub(1) {
                            Some(before) => {
                                it.seek_for_prev(keys::disk_seq(domain, plan.disk, before));
                                continue;
                            }
                            None => break,
                        }
                    }
                }
            }
            let (written, zeroed) = values::split_bitmaps(v)?;
            hits.clear();
            pending.take_all(&View::new(written)?, keys, &mut hits, &mut named)?;
            pending.take_all(&View::new(zeroed)?, keys, &mut zero_hits, &mut named)?;
            if zero_hits.take_added() > 0 {
                plan.zeroed_by.push(seq);
            }
            if !hits.is_empty() {
                plan.reads.push((seq, Blocks::sorted(hits.clone())));
            }
            if pending.is_empty() {
                break;
            }
            it.prev();
        }
        it.status()?;
        plan.zeroed |= zero_hits.into_bitmap();
        Ok(plan)
    }

    /// The blocks of `disk` that some segment with seq in `(after, upto]` wrote or
    /// zeroed: every block whose state may differ between the two points.
    pub fn changed_blocks(
        &self,
        domain: &str,
        disk: u32,
        after: u64,
        upto: u64,
    ) -> Result<RoaringBitmap> {
        let mut changed = RoaringBitmap::new();
        if after >= upto {
            return Ok(changed);
        }
        for item in self.bitmaps_from(domain, disk, after + 1, Direction::Forward) {
            let (seq, written, zeroed) = item?;
            if seq > upto {
                break;
            }
            changed |= written;
            changed |= zeroed;
        }
        Ok(changed)
    }

    /// Every segment up to `upto` that touches `disk`, ascending, with the blocks it
    /// wrote or zeroed: the input of GC's liveness pass.
    pub fn disk_touched(
        &self,
        domain: &str,
        disk: u32,
        upto: u64,
    ) -> Result<Vec<(u64, RoaringBitmap)>> {
        let mut out = Vec::new();
        for item in self.bitmaps_from(domain, disk, 0, Direction::Forward) {
            let (seq, written, zeroed) = item?;
            if seq > upto {
                break;
            }
            out.push((seq, written | zeroed));
        }
        Ok(out)
    }

    /// `(seq, written, zeroed)` of the disk's segments from `seq` on in `direction`
    /// (from the newest at or below `seq` when reverse); only the disk's key range.
    fn bitmaps_from(
        &self,
        domain: &str,
        disk: u32,
        seq: u64,
        direction: Direction,
    ) -> impl Iterator<Item = Result<(u64, RoaringBitmap, RoaringBitmap)>> + '_ {
        let prefix = keys::disk_prefix(domain, disk);
        let start = keys::disk_seq(domain, disk, seq);
        self.db
            .iterator_cf(self.cf("bitmaps"), IteratorMode::From(&start, direction))
            .map_while(move |item| {
                let (k, v) = match item {
                    Ok(kv) => kv,
                    Err(e) => return Some(Err(e.into())),
                };
                let seq = k.strip_prefix(prefix.as_slice())?;
                let entry = keys::be_u64(seq)
                    .ok_or_else(|| IndexError::Corrupt("bitmap key".into()))
                    .and_then(|seq| {
                        let (written, zeroed) = values::decode_bitmaps(&v)?;
                        Ok((seq, written, zeroed))
                    });
                Some(entry)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_of_two_parts_are_one_ascending_set() {
        let mut low = Blocks::sorted(vec![1, 5, 9]);
        low.append(Blocks::sorted(vec![70_000, 70_002]));
        low.append(Blocks::sorted(vec![140_000]));
        let all = [1, 5, 9, 70_000, 70_002, 140_000];
        assert_eq!(low.iter().collect::<Vec<_>>(), all);
        assert_eq!(low.len(), 6);
        assert_eq!(
            low,
            Blocks::sorted(all.to_vec()),
            "equal to the same blocks in one part"
        );
        for b in all {
            assert!(low.contains(b), "{b}");
        }
        for b in [0, 6, 69_999, 70_001, 140_001] {
            assert!(!low.contains(b), "{b}");
        }
        let mut only_high = Blocks::default();
        only_high.append(Blocks::sorted(vec![3, 4]));
        assert!(only_high.contains(3) && !only_high.contains(2));
        low.remove_all(&[5, 70_000].into_iter().collect());
        assert_eq!(
            low.to_bitmap(),
            [1, 9, 70_002, 140_000].into_iter().collect()
        );
    }
}
