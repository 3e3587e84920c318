//! The blocks a whole-disk walk has resolved, as one flat bitset of the disk: testing
//! and setting a block is one word operation, where a roaring array container shifts
//! its values on every insert. A plan of scattered blocks on a large disk is bound by
//! the cache and TLB misses of these tests, so the bitset is contiguous and asks for
//! huge pages. A walk of some blocks uses a [`BlockSet`] of them instead.

/// Words of one roaring container's range (65,536 blocks).
const WORDS: usize = 1024;

/// A set of blocks below a limit fixed at creation.
pub struct BlockMask {
    words: Vec<u64>,
    len: u64,
}

impl BlockMask {
    /// An empty set of blocks below `limit` (rounded up to whole containers). The OS
    /// maps zeroed memory lazily, so only the parts a walk touches cost memory.
    pub fn with_limit(limit: u64) -> BlockMask {
        let words = limit.div_ceil(1 << 16) as usize * WORDS;
        let words = vec![0u64; words];
        advise_huge_pages(&words);
        BlockMask { words, len: 0 }
    }

    /// Number of blocks in the set.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the set holds no block.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The words of container `key`, if below the limit.
    pub fn page(&self, key: u16) -> Option<&[u64; WORDS]> {
        let start = usize::from(key) * WORDS;
        self.words.get(start..start + WORDS)?.try_into().ok()
    }

    /// The words of container `key` for changing, if below the limit.
    pub fn page_mut(&mut self, key: u16) -> Option<&mut [u64; WORDS]> {
        let start = usize::from(key) * WORDS;
        self.words.get_mut(start..start + WORDS)?.try_into().ok()
    }

    /// Records blocks added through [`BlockMask::page_mut`].
    pub fn add_len(&mut self, added: u64) {
        self.len += added;
    }

    /// Asks the CPU to bring `block`'s word into the cache: a walk names the blocks of
    /// a segment first and tests them after, so that their misses overlap instead of
    /// each waiting for the last.
    pub fn prefetch(&self, block: u32) {
        if let Some(w) = self.words.get(block as usize >> 6) {
            prefetch_read(w);
        }
    }

    /// Adds `block` (below the limit); whether it was not in the set yet.
    pub fn insert(&mut self, block: u32) -> bool {
        let new = self.insert_uncounted(block);
        self.len += u64::from(new);
        new
    }

    /// Like [`BlockMask::insert`], but leaves the count to the caller's
    /// [`BlockMask::add_len`]: a pass over millions of blocks keeps it in a register,
    /// where updating it in memory made each insert wait for the last one's store.
    pub fn insert_uncounted(&mut self, block: u32) -> bool {
        let Some(w) = self.words.get_mut(block as usize >> 6) else {
            return false;
        };
        let bit = 1u64 << (block & 63);
        let new = *w & bit == 0;
        *w |= bit;
        new
    }
}

#[cfg(target_arch = "x86_64")]
fn prefetch_read(w: &u64) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    // SAFETY: a prefetch is a hint that never faults and changes no memory; `w` is a
    // valid reference anyway.
    unsafe { _mm_prefetch::<_MM_HINT_T0>((w as *const u64).cast::<i8>()) };
}

#[cfg(not(target_arch = "x86_64"))]
fn prefetch_read(_w: &u64) {}

/// Asks the kernel to back the whole 2 MiB pages of `memory` with huge pages, before it
/// is first touched: one page fault per 2 MiB instead of 512.
#[cfg(target_os = "linux")]
pub(crate) fn advise_huge_pages<T>(memory: &[T]) {
    const HUGE: usize = 2 << 20;
    let (start, len) = (memory.as_ptr() as usize, std::mem::size_of_val(memory));
    let aligned = start.next_multiple_of(HUGE);
    let end = (start + len) / HUGE * HUGE;
    if end > aligned {
        // SAFETY: the range lies within `memory`'s allocation; MADV_HUGEPAGE changes how
        // the kernel backs it, never its contents. Failure only loses the speed-up.
        unsafe {
            libc::madvise(
                aligned as *mut libc::c_void,
                end - aligned,
                libc::MADV_HUGEPAGE,
            );
        }
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn advise_huge_pages<T>(_memory: &[T]) {}

/// A fixed set of blocks that a walk of some blocks resolves one by one: an
/// open-addressing hash set (a few thousand blocks stay in the first-level cache, where
/// a bitmap's binary searches or a bitset of the disk would miss) with a resolved flag
/// per slot, so nothing is ever deleted. A walk asks about every block of every
/// segment, nearly all of them no member: a filter of one bit per hash (16 bits a
/// member: small enough to stay in cache, wrong one time in 16) answers most first.
pub(crate) struct BlockSet {
    filter: Vec<u64>,
    filter_shift: u32,
    slots: Vec<u32>,
    resolved: Vec<u64>,
    shift: u32,
    /// Whether `u32::MAX` (the empty slot's mark) is in the set, and resolved.
    max: Option<bool>,
    left: u64,
    /// Every block of the set, ascending.
    sorted: Vec<u32>,
}

const EMPTY: u32 = u32::MAX;

impl BlockSet {
    /// The set of `blocks`, none resolved.
    pub fn new(blocks: &roaring::RoaringBitmap) -> BlockSet {
        let bits = (blocks.len().max(4) * 2)
            .next_power_of_two()
            .trailing_zeros();
        let filter_bits = (bits + 3).clamp(12, 26);
        let mut set = BlockSet {
            filter: vec![0; 1 << (filter_bits - 6)],
            filter_shift: 32 - filter_bits,
            slots: vec![EMPTY; 1 << bits],
            resolved: vec![0; (1usize << bits).div_ceil(64)],
            shift: 32 - bits,
            max: None,
            left: blocks.len(),
            sorted: blocks.iter().collect(),
        };
        for b in blocks {
            if b == EMPTY {
                set.max = Some(false);
                continue;
            }
            let f = set.filter_bit(b);
            set.filter[f / 64] |= 1 << (f % 64);
            let mut i = set.home(b);
            while set.slots[i] != EMPTY {
                i = (i + 1) & (set.slots.len() - 1);
            }
            set.slots[i] = b;
        }
        set
    }

    fn home(&self, block: u32) -> usize {
        (block.wrapping_mul(0x9E37_79B9) >> self.shift) as usize
    }

    fn filter_bit(&self, block: u32) -> usize {
        (block.wrapping_mul(0x85EB_CA6B) >> self.filter_shift) as usize
    }

    /// Every block of the set (resolved or not), ascending.
    pub fn blocks(&self) -> &[u32] {
        &self.sorted
    }

    /// Number of blocks not resolved yet.
    pub fn left(&self) -> u64 {
        self.left
    }

    /// The slot of `block`, if it is in the set.
    fn slot(&self, block: u32) -> Option<usize> {
        let f = self.filter_bit(block);
        if self.filter[f / 64] & (1 << (f % 64)) == 0 {
            return None;
        }
        let mut i = self.home(block);
        loop {
            match self.slots[i] {
                EMPTY => return None,
                b if b == block => return Some(i),
                _ => i = (i + 1) & (self.slots.len() - 1),
            }
        }
    }

    /// Whether `block` is in the set and not resolved.
    pub fn is_pending(&self, block: u32) -> bool {
        if block == EMPTY {
            return self.max == Some(false);
        }
        self.slot(block)
            .is_some_and(|i| self.resolved[i / 64] & (1 << (i % 64)) == 0)
    }

    /// Resolves `block`; whether it was pending.
    pub fn resolve(&mut self, block: u32) -> bool {
        let was = if block == EMPTY {
            let was = self.max == Some(false);
            if was {
                self.max = Some(true);
            }
            was
        } else {
            match self.slot(block) {
                Some(i) if self.resolved[i / 64] & (1 << (i % 64)) == 0 => {
                    self.resolved[i / 64] |= 1 << (i % 64);
                    true
                }
                _ => false,
            }
        };
        self.left -= u64::from(was);
        was
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_set_resolves_each_block_once() {
        let blocks: roaring::RoaringBitmap = [0, 1, 7, 1 << 20, u32::MAX - 1, u32::MAX]
            .into_iter()
            .chain((1000..1300).map(|b| b * 4099))
            .collect();
        let mut set = BlockSet::new(&blocks);
        assert_eq!(set.left(), blocks.len());
        for b in [2, 8, 1 << 21, 4099] {
            assert!(!set.is_pending(b) && !set.resolve(b), "{b} is no member");
        }
        for b in &blocks {
            assert!(set.is_pending(b));
            assert!(set.resolve(b), "{b}");
            assert!(!set.is_pending(b) && !set.resolve(b), "{b} resolved twice");
        }
        assert_eq!(set.left(), 0);
    }
}
