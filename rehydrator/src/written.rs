//! Which blocks of the image a restore has written whole, for its journal.
//!
//! Chunks are cut by content, so a placement may start or end inside a block; such a
//! block is written by two (or more) placements, often of different ranges. Each part
//! is counted, and the block is whole once its parts add up to a block: the placements
//! of one restore never overlap, as each block of the plan is read from one segment
//! and each byte of it from one chunk. Without this, every chunk would touch a block
//! that is never recorded, and a resumed restore would fetch every chunk again.

use std::collections::HashMap;

use roaring::RoaringBitmap;
use tidemark_format::BLOCK_SIZE;

use crate::placement::Placement;

/// What the writes of one range covered.
#[derive(Debug, Default)]
pub(crate) struct Written {
    /// Blocks written whole by one placement.
    pub full: RoaringBitmap,
    /// `(block, bytes)` written of blocks covered only in part.
    pub parts: Vec<(u32, u32)>,
}

impl Written {
    /// Adds placement `p`, once its bytes are written.
    pub fn add(&mut self, p: &Placement) {
        let bs = BLOCK_SIZE as u64;
        let (start, end) = (p.disk_offset, p.disk_offset + p.len as u64);
        let (first_full, end_full) = (start.div_ceil(bs), end / bs);
        // Block numbers of a disk fit in u32 (MAX_DISK_BYTES); anything else is
        // never recorded, so it is only rewritten.
        let block = |b: u64| u32::try_from(b).ok();
        if first_full < end_full {
            if let (Some(a), Some(b)) = (block(first_full), block(end_full)) {
                self.full.insert_range(a..b);
            }
        }
        if start % bs != 0 {
            let head_end = end.min((start / bs + 1) * bs);
            if let Some(b) = block(start / bs) {
                self.parts.push((b, (head_end - start) as u32));
            }
        }
        // The tail, unless the head already counted it (a placement inside one block).
        if end % bs != 0 && (start % bs == 0 || start / bs != end / bs) {
            if let Some(b) = block(end / bs) {
                self.parts.push((b, (end % bs) as u32));
            }
        }
    }
}

/// Blocks written whole so far, and the parts of the others.
#[derive(Debug, Default)]
pub(crate) struct Coverage {
    /// Blocks written whole (including those a journal recorded).
    pub done: RoaringBitmap,
    /// Bytes written so far of blocks not yet whole.
    parts: HashMap<u32, u32>,
}

impl Coverage {
    /// Coverage of an image whose blocks `done` are written whole.
    pub fn new(done: RoaringBitmap) -> Self {
        Coverage {
            done,
            parts: HashMap::new(),
        }
    }

    /// Adds the writes of one range.
    pub fn add(&mut self, w: &Written) {
        self.done |= &w.full;
        for &(block, bytes) in &w.parts {
            let sum = self.parts.entry(block).or_insert(0);
            *sum += bytes;
            if *sum >= BLOCK_SIZE {
                self.parts.remove(&block);
                self.done.insert(block);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BS: u32 = BLOCK_SIZE;

    fn at(len: u32, disk_offset: u64) -> Placement {
        Placement {
            chunk_offset: 0,
            len,
            disk_offset,
        }
    }

    fn written(ps: &[Placement]) -> Written {
        let mut w = Written::default();
        ps.iter().for_each(|p| w.add(p));
        w
    }

    #[test]
    fn whole_blocks_and_parts() {
        // Blocks 2..5 exactly.
        let w = written(&[at(3 * BS, 2 * BS as u64)]);
        assert_eq!(w.full.iter().collect::<Vec<_>>(), vec![2, 3, 4]);
        assert!(w.parts.is_empty());
        // From inside block 10 to inside block 13: 11 and 12 whole, parts of 10 and 13.
        let w = written(&[at(3 * BS, 10 * BS as u64 + 100)]);
        assert_eq!(w.full.iter().collect::<Vec<_>>(), vec![11, 12]);
        assert_eq!(w.parts, vec![(10, BS - 100), (13, 100)]);
        // Within one block: one part.
        let w = written(&[at(100, 20 * BS as u64 + 5)]);
        assert!(w.full.is_empty());
        assert_eq!(w.parts, vec![(20, 100)]);
    }

    #[test]
    fn a_block_split_between_ranges_is_done_once_both_parts_are() {
        let mut c = Coverage::default();
        // A chunk ends 1000 bytes into block 7, in one range ...
        c.add(&written(&[at(2 * BS + 1000, 5 * BS as u64)]));
        assert_eq!(c.done.iter().collect::<Vec<_>>(), vec![5, 6]);
        // ... the next chunk writes the rest of block 7 in another, in three pieces.
        c.add(&written(&[at(500, 7 * BS as u64 + 1000)]));
        assert!(!c.done.contains(7));
        c.add(&written(&[
            at(BS - 1600, 7 * BS as u64 + 1500),
            at(100, 7 * BS as u64 + BS as u64 - 100),
        ]));
        assert_eq!(c.done.iter().collect::<Vec<_>>(), vec![5, 6, 7]);
        assert!(c.parts.is_empty());
    }
}
