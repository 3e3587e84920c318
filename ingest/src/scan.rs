//! The agent's reading of one disk: which blocks changed since the last run.
//!
//! Every block's content is hashed (xxh3, 128 bits) and compared with the hash of what
//! was last sent, kept in the index in groups of `GROUP` blocks. Holes of sparse
//! images are not read (see `extents`): their blocks are zero, and a run of them
//! is compared, and fed, at once.

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;

use tidemark_format::BLOCK_SIZE;
use tidemark_pitr_index::{Index, StateWrite};
use xxhash_rust::xxh3::xxh3_128;

use crate::builder::{is_zero, SegmentBuilder};
use crate::{extents, IngestError, Result};

/// Blocks per stored group of hashes (64 KiB of hashes per value).
const GROUP: u32 = 4096;
/// Bytes read from a disk at a time (into the stream buffer, which a read can make
/// exceed its window by this much).
const READ_BYTES: usize = 1 << 20;
/// How far past a read the data of the disk is asked for (`extents::ReadAhead`).
const READ_AHEAD: u64 = 8 << 20;
const HASH_LEN: usize = 16;

fn group_key(disk: u32, group: u32) -> Vec<u8> {
    let mut k = b"agent-hashes\0".to_vec();
    k.extend_from_slice(&disk.to_be_bytes());
    k.extend_from_slice(&group.to_be_bytes());
    k
}

/// Which blocks of one disk changed: the hashes of its blocks as last sent, loaded
/// and updated a group at a time.
pub(crate) struct Scan<'a> {
    index: &'a Index,
    domain: &'a str,
    disk: u32,
    /// Whether the stored hashes describe the newest point; if not, every block is
    /// sent and every group's hashes are rewritten.
    trust: bool,
    zero_hash: [u8; HASH_LEN],
    group: Option<Group>,
    /// Where changed groups go, to be committed with the segment.
    state: &'a mut Vec<StateWrite>,
}

struct Group {
    n: u32,
    /// `None` while every hash is that of a zero block (so that the holes of a large
    /// sparse disk cost no 64 KiB of hashes per group, read or stored).
    hashes: Option<Vec<u8>>,
    changed: bool,
}

impl<'a> Scan<'a> {
    pub fn new(
        index: &'a Index,
        domain: &'a str,
        disk: u32,
        trust: bool,
        state: &'a mut Vec<StateWrite>,
    ) -> Self {
        Scan {
            index,
            domain,
            disk,
            trust,
            zero_hash: xxh3_128(&[0u8; BLOCK_SIZE as usize]).to_le_bytes(),
            group: None,
            state,
        }
    }

    /// Reads the disk (`file`, `size` bytes) and feeds `b` the blocks that changed.
    /// `path` names the disk in errors.
    pub fn read(
        mut self,
        b: &mut SegmentBuilder,
        file: &File,
        size: u64,
        path: &str,
    ) -> Result<()> {
        let bs = BLOCK_SIZE as u64;
        let read_err = |source| IngestError::Read {
            path: path.to_owned(),
            source,
        };
        extents::advise_random(file);
        let mut ahead = extents::ReadAhead::default();
        let mut pos = 0;
        while pos < size {
            let extent = extents::next_data(file, pos, size, bs).unwrap_or(size..size);
            self.hole(b, (pos / bs) as u32..(extent.start / bs) as u32)?;
            let mut at = extent.start;
            while at < extent.end {
                ahead.ask(file, at + READ_AHEAD, size, bs);
                // Read straight into the builder's stream buffer: changed blocks stay
                // there, the others are dropped.
                let want = (extent.end - at).min(READ_BYTES as u64) as usize;
                let n = read_full_at(file, b.read_room(want)?, at).map_err(read_err)?;
                let first = (at / bs) as u32;
                for i in 0..n / bs as usize {
                    let block = first + i as u32;
                    let data = b.room_block(i);
                    if is_zero(data) {
                        self.hole(b, block..block + 1)?;
                    } else if self.changed(block, xxh3_128(data).to_le_bytes())? {
                        b.put_room_block(block, i)?;
                    }
                }
                if n < want {
                    // The file ended early (it shrank while being read): stop there.
                    return self.finish();
                }
                at += n as u64;
            }
            pos = extent.end;
        }
        self.finish()
    }

    /// Whether non-zero `block`, whose content hashes to `h`, is to be sent.
    fn changed(&mut self, block: u32, h: [u8; HASH_LEN]) -> Result<bool> {
        let (trust, zero_hash) = (self.trust, self.zero_hash);
        let group = self.group(block / GROUP)?;
        let hashes = group
            .hashes
            .get_or_insert_with(|| zero_hash.repeat(GROUP as usize));
        let slot = &mut hashes[(block % GROUP) as usize * HASH_LEN..][..HASH_LEN];
        if trust && *slot == h {
            return Ok(false);
        }
        slot.copy_from_slice(&h);
        group.changed = true;
        Ok(true)
    }

    /// Feeds `b` the blocks of `blocks`, all zero, that were not zero before.
    fn hole(&mut self, b: &mut SegmentBuilder, blocks: Range<u32>) -> Result<()> {
        let mut at = blocks.start;
        while at < blocks.end {
            let n = at / GROUP;
            let end = blocks.end.min(n.saturating_add(1).saturating_mul(GROUP));
            let (trust, zero_hash) = (self.trust, self.zero_hash);
            let group = self.group(n)?;
            let slots = (at % GROUP) as usize..(at % GROUP) as usize + (end - at) as usize;
            if !trust {
                // Unknown prior content: zero blocks must still be recorded as zeroed.
                if let Some(hashes) = group.hashes.as_mut() {
                    fill(hashes, slots, &zero_hash);
                }
                group.changed = true;
                b.put_zeroes(at..end)?;
            } else if let Some(hashes) = group.hashes.as_mut() {
                // Feed each run of blocks that were not zero; a group never stored
                // (`None`) was zero throughout.
                let mut run: Option<Range<u32>> = None;
                for (i, slot) in hashes[slots.start * HASH_LEN..slots.end * HASH_LEN]
                    .chunks_exact_mut(HASH_LEN)
                    .enumerate()
                {
                    if *slot == zero_hash {
                        continue;
                    }
                    slot.copy_from_slice(&zero_hash);
                    group.changed = true;
                    let block = at + i as u32;
                    match run.as_mut() {
                        Some(r) if r.end == block => r.end += 1,
                        _ => {
                            if let Some(r) = run.replace(block..block + 1) {
                                b.put_zeroes(r)?;
                            }
                        }
                    }
                }
                if let Some(r) = run {
                    b.put_zeroes(r)?;
                }
            }
            at = end;
        }
        Ok(())
    }

    /// Group `n`, loaded (after storing the previous one if it changed).
    fn group(&mut self, n: u32) -> Result<&mut Group> {
        if self.group.as_ref().is_none_or(|g| g.n != n) {
            self.store_group();
            let hashes = match self
                .index
                .get_state(self.domain, &group_key(self.disk, n))?
            {
                Some(h) if self.trust && h.len() == GROUP as usize * HASH_LEN => Some(h),
                // Never stored, stored empty (all zero), or not trusted.
                _ => None,
            };
            self.group = Some(Group {
                n,
                hashes,
                changed: false,
            });
        }
        self.group
            .as_mut()
            .ok_or_else(|| IngestError::Invalid("no hash group loaded".into()))
    }

    /// Queues the current group's hashes for the commit if they changed.
    fn store_group(&mut self) {
        if let Some(Group {
            n,
            hashes,
            changed: true,
        }) = self.group.take()
        {
            // A group of zero blocks only is stored empty: a value of any other length
            // than a group's hashes reads as zeros (see `group`).
            self.state
                .push((group_key(self.disk, n), hashes.unwrap_or_default()));
        }
    }

    fn finish(mut self) -> Result<()> {
        self.store_group();
        Ok(())
    }
}

/// Sets the hashes of `slots` to `hash`.
fn fill(hashes: &mut [u8], slots: Range<usize>, hash: &[u8; HASH_LEN]) {
    for slot in hashes[slots.start * HASH_LEN..slots.end * HASH_LEN].chunks_exact_mut(HASH_LEN) {
        slot.copy_from_slice(hash);
    }
}

/// Reads `buf.len()` bytes at `offset`, or fewer at the end of the file.
fn read_full_at(f: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], offset + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
