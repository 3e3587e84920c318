//! Point resolution of one disk (DESIGN.md section 7): which segment holds the newest
//! state of each block at a point, and which blocks changed between two points.

use roaring::RoaringBitmap;
use rocksdb::{Direction, IteratorMode};

use crate::{keys, values, Index, IndexError, Result};

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
    pub reads: Vec<(u64, RoaringBitmap)>,
    /// Blocks whose newest state is an explicit zero.
    pub zeroed: RoaringBitmap,
    /// Segments that zeroed some of `zeroed` (a restore verifies them too).
    pub zeroed_by: Vec<u64>,
    /// The blocks the plan resolves: None for the whole disk (`0..blocks`), or the set
    /// given to [`Index::plan_blocks`].
    pub within: Option<RoaringBitmap>,
}

impl DiskPlan {
    /// Blocks that hold data at this point.
    pub fn data_blocks(&self) -> u64 {
        self.reads.iter().map(|(_, b)| b.len()).sum()
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
        for (_, b) in &self.reads {
            z -= b;
        }
        z
    }
}

/// The blocks a walk of the bitmaps has yet to resolve.
enum Pending {
    /// Every block of a disk of `blocks` blocks but `resolved`. Kept as what is
    /// resolved, which grows by what segments touched, so a step costs what the
    /// segment wrote, not the size of the disk.
    Disk {
        blocks: u32,
        resolved: RoaringBitmap,
    },
    /// Exactly these blocks.
    Only(RoaringBitmap),
}

impl Pending {
    /// The blocks of `set` that are pending.
    fn among(&self, set: &RoaringBitmap) -> RoaringBitmap {
        match self {
            Pending::Disk { resolved, .. } => set - resolved,
            Pending::Only(left) => set & left,
        }
    }

    /// Marks `hit` (pending blocks) resolved.
    fn resolve(&mut self, hit: &RoaringBitmap) {
        match self {
            Pending::Disk { resolved, .. } => *resolved |= hit,
            Pending::Only(left) => *left -= hit,
        }
    }

    /// Whether no block is left to resolve.
    fn is_empty(&self) -> bool {
        match self {
            Pending::Disk { blocks, resolved } => resolved.len() >= u64::from(*blocks),
            Pending::Only(left) => left.is_empty(),
        }
    }
}

impl Index {
    /// Plans the restore of one disk at point `at` (DESIGN.md section 7): walks the
    /// disk's bitmaps from `at` downwards until every block is resolved.
    pub fn plan(&self, domain: &str, disk: u32, blocks: u32, at: u64) -> Result<DiskPlan> {
        let pending = Pending::Disk {
            blocks,
            resolved: RoaringBitmap::new(),
        };
        let plan = DiskPlan {
            disk,
            seq: at,
            blocks,
            ..DiskPlan::default()
        };
        self.walk(domain, plan, pending)
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
        self.walk(domain, plan, Pending::Only(blocks.clone()))
    }

    /// Walks the disk's bitmaps from `plan.seq` downwards and adds to `plan` where each
    /// pending block's newest state is, until none is pending or the log's start is
    /// reached (what is still pending then was never written: zero).
    fn walk(&self, domain: &str, mut plan: DiskPlan, mut pending: Pending) -> Result<DiskPlan> {
        if pending.is_empty() {
            return Ok(plan);
        }
        for item in self.bitmaps_from(domain, plan.disk, plan.seq, Direction::Reverse) {
            let (seq, written, zeroed) = item?;
            let hit = pending.among(&written);
            let zero_hit = pending.among(&zeroed);
            pending.resolve(&hit);
            pending.resolve(&zero_hit);
            if !zero_hit.is_empty() {
                plan.zeroed |= zero_hit;
                plan.zeroed_by.push(seq);
            }
            if !hit.is_empty() {
                plan.reads.push((seq, hit));
            }
            if pending.is_empty() {
                break;
            }
        }
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
