//! From a plan to chunk reads: which bytes of which chunk go where on the disk.
//!
//! Block `b` of segment `s` sits at stream offset `(written_s.rank(b) - 1) * BLOCK_SIZE`;
//! consecutive hit blocks are consecutive in the stream, so they form runs that are
//! split only at chunk boundaries.

use std::collections::HashMap;

use roaring::RoaringBitmap;
use tidemark_format::{ChunkHash, ChunkRef, BLOCK_SIZE};
use tidemark_pitr_index::Blocks;

/// Bytes of a chunk that go to one place on the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    pub chunk_offset: u32,
    pub len: u32,
    pub disk_offset: u64,
}

/// Chunks to read and where their bytes go; a chunk needed in many places is read once.
#[derive(Default, Debug)]
pub struct Placements {
    pub by_chunk: HashMap<ChunkHash, Vec<Placement>>,
    pub count: usize,
}

impl Placements {
    /// Adds the `hits` blocks of one segment whose written set is `written` and whose
    /// stream is `stream`. Returns false if the stream is shorter than the bitmap says.
    pub fn add_segment(
        &mut self,
        written: &RoaringBitmap,
        stream: &[ChunkRef],
        hits: &Blocks,
    ) -> bool {
        let bs = BLOCK_SIZE as u64;
        let mut ends = Vec::with_capacity(stream.len());
        let mut total = 0u64;
        for c in stream {
            total += c.len as u64;
            ends.push(total);
        }
        for (first, count) in Runs::new(hits.iter()) {
            let rank = written.rank(first);
            if rank == 0 {
                return false;
            }
            let mut stream_off = (rank - 1) * bs;
            let mut disk_off = first as u64 * bs;
            let mut left = count as u64 * bs;
            let mut ci = ends.partition_point(|&e| e <= stream_off);
            while left > 0 {
                let Some(&end) = ends.get(ci) else {
                    return false;
                };
                let start = end - stream[ci].len as u64;
                let take = left.min(end - stream_off);
                self.by_chunk
                    .entry(stream[ci].hash)
                    .or_default()
                    .push(Placement {
                        chunk_offset: (stream_off - start) as u32,
                        len: take as u32,
                        disk_offset: disk_off,
                    });
                self.count += 1;
                stream_off += take;
                disk_off += take;
                left -= take;
                ci += 1;
            }
        }
        true
    }
}

/// Maximal runs `(first, count)` of consecutive values of an ascending iterator.
pub struct Runs<I: Iterator<Item = u32>> {
    it: std::iter::Peekable<I>,
}

impl<I: Iterator<Item = u32>> Runs<I> {
    /// The runs of `it`.
    pub fn new(it: I) -> Self {
        Runs { it: it.peekable() }
    }
}

impl<I: Iterator<Item = u32>> Iterator for Runs<I> {
    type Item = (u32, u32);

    fn next(&mut self) -> Option<(u32, u32)> {
        let first = self.it.next()?;
        let mut count = 1u32;
        while self.it.peek() == Some(&(first + count)) {
            self.it.next();
            count += 1;
        }
        Some((first, count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_split_at_chunk_boundaries() {
        let bs = BLOCK_SIZE;
        // Written blocks 10..16 (6 blocks) in chunks of 2 and 4 blocks.
        let written: RoaringBitmap = (10..16).collect();
        let stream = vec![
            ChunkRef {
                hash: ChunkHash::of(b"a"),
                len: 2 * bs,
            },
            ChunkRef {
                hash: ChunkHash::of(b"b"),
                len: 4 * bs,
            },
        ];
        let hits = Blocks::from(&[11, 12, 13, 15].into_iter().collect::<RoaringBitmap>());
        let mut p = Placements::default();
        assert!(p.add_segment(&written, &stream, &hits));
        let a = &p.by_chunk[&ChunkHash::of(b"a")];
        assert_eq!(
            a,
            &vec![Placement {
                chunk_offset: bs,
                len: bs,
                disk_offset: 11 * bs as u64
            }]
        );
        let b = &p.by_chunk[&ChunkHash::of(b"b")];
        assert_eq!(
            b,
            &vec![
                Placement {
                    chunk_offset: 0,
                    len: 2 * bs,
                    disk_offset: 12 * bs as u64
                },
                Placement {
                    chunk_offset: 3 * bs,
                    len: bs,
                    disk_offset: 15 * bs as u64
                }
            ]
        );
        // A stream shorter than the bitmap is detected.
        assert!(!Placements::default().add_segment(&written, &stream[..1], &hits));
    }
}
