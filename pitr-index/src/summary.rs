//! Union summaries of runs of segments (DESIGN.md section 7): for each disk and each
//! run of `RUN_LEN` consecutive seqs, every block that some segment of the run wrote
//! or zeroed. A walk whose pending blocks miss a run's summary skips the whole run.
//!
//! A summary may hold more than its run touches now (GC deletes and merges segments,
//! and the merge operator only ever adds), never less: skipping stays correct, it only
//! happens less often until `tidemark index rebuild` makes the summaries exact.

use roaring::RoaringBitmap;
use rocksdb::{MergeOperands, WriteBatch};

use crate::{eramap, keys, Index, Result};

/// log2 of the number of seqs a summary covers.
pub(crate) const RUN_BITS: u32 = 6;

/// The key in `summaries` of whatever run holds `seq`.
pub(crate) fn key(domain: &str, disk: u32, seq: u64) -> Vec<u8> {
    keys::disk_seq(domain, disk, run_start(seq))
}

/// The first seq of `seq`'s run.
pub(crate) fn run_start(seq: u64) -> u64 {
    seq >> RUN_BITS << RUN_BITS
}

/// Marks an index whose summaries cover every indexed segment (older indexes had none).
const VERSION_KEY: &[u8] = b"\xffsummaries-v1";

#[cfg(test)]
thread_local! {
    /// Calls of [`union`] on this thread (a read merges on the reader's thread).
    pub(crate) static UNIONS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The merge operator of `summaries`: the union of the stored summary and the operands.
pub(crate) fn union(_key: &[u8], existing: Option<&[u8]>, ops: &MergeOperands) -> Option<Vec<u8>> {
    #[cfg(test)]
    UNIONS.with(|n| n.set(n.get() + 1));
    let mut all = existing
        .and_then(|b| RoaringBitmap::deserialize_from(b).ok())
        .unwrap_or_default();
    for op in ops {
        // An operand that does not parse would make the summary smaller than its run,
        // which could skip a segment a plan needs: fail the merge (and the read).
        all |= RoaringBitmap::deserialize_from(op).ok()?;
    }
    let mut out = Vec::with_capacity(all.serialized_size());
    all.serialize_into(&mut out).ok()?;
    Some(out)
}

impl Index {
    /// Adds the blocks a segment of `disk` touched to its run's summary.
    pub(crate) fn summarize(
        &self,
        batch: &mut WriteBatch,
        domain: &str,
        disk: u32,
        seq: u64,
        touched: &RoaringBitmap,
    ) {
        let mut bytes = Vec::with_capacity(touched.serialized_size());
        // Writing into a Vec cannot fail.
        let _ = touched.serialize_into(&mut bytes);
        batch.merge_cf(self.cf("summaries"), key(domain, disk, seq), bytes);
    }

    /// Held while writing merge operands to `summaries` or folding them.
    pub(crate) fn lock_summaries(&self) -> std::sync::MutexGuard<'_, ()> {
        self.summary_writes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// When segment `seq` is the first of its run to touch `disk`, puts the summary of
    /// the disk's previous run back as one value into `batch`, and that run's map
    /// (`runmap.rs`), and its era's map if that era is finished too (`eramap.rs`); called with [`Index::lock_summaries`] held until `batch` is
    /// written. Until RocksDB compacts them, a summary is one merge operand per
    /// segment, and each read of it merged up to 64 bitmaps again: a quarter of a
    /// plan's time on a history of scattered writes (issue 7). Segments arrive in seq
    /// order, so that run is finished.
    pub(crate) fn fold_finished_run(
        &self,
        batch: &mut WriteBatch,
        domain: &str,
        disk: u32,
        seq: u64,
    ) -> Result<()> {
        let Some(before) = seq.checked_sub(1) else {
            return Ok(());
        };
        let prefix = keys::disk_prefix(domain, disk);
        let mut it = self.db.raw_iterator_cf(self.cf("bitmaps"));
        it.seek_for_prev(keys::disk_seq(domain, disk, before));
        let Some(prev) = it
            .key()
            .and_then(|k| k.strip_prefix(prefix.as_slice()))
            .and_then(keys::be_u64)
        else {
            return it.status().map_err(Into::into);
        };
        if run_start(prev) == run_start(seq) {
            return Ok(());
        }
        let run = key(domain, disk, prev);
        if let Some(folded) = self.db.get_pinned_cf(self.cf("summaries"), &run)? {
            batch.put_cf(self.cf("summaries"), &run, &*folded);
        }
        let map = self.map_run(batch, domain, disk, run_start(prev))?;
        if !eramap::same_era(prev, seq) {
            let fresh = Some((run_start(prev), map.as_deref()));
            self.map_era(batch, domain, disk, eramap::era_start(prev), fresh)?;
        }
        Ok(())
    }

    /// The summary of the run holding `seq`, as stored (None if no segment of the run
    /// touched the disk).
    pub(crate) fn summary(
        &self,
        domain: &str,
        disk: u32,
        seq: u64,
    ) -> Result<Option<rocksdb::DBPinnableSlice<'_>>> {
        self.run_value("summaries", domain, disk, seq)
    }

    /// The value in `family` (keyed by run) of `disk`'s run holding `seq`, if any.
    pub(crate) fn run_value(
        &self,
        family: &str,
        domain: &str,
        disk: u32,
        seq: u64,
    ) -> Result<Option<rocksdb::DBPinnableSlice<'_>>> {
        Ok(self
            .db
            .get_pinned_cf(self.cf(family), key(domain, disk, seq))?)
    }

    /// Builds the summaries of an index made before they existed, once.
    pub(crate) fn ensure_summaries(&self) -> Result<()> {
        let cf = self.cf("summaries");
        if self.db.get_pinned_cf(cf, VERSION_KEY)?.is_some() {
            return Ok(());
        }
        let mut it = self.db.raw_iterator_cf(self.cf("bitmaps"));
        it.seek_to_first();
        let mut batch = WriteBatch::default();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let (head, seq) = k.split_at(k.len().saturating_sub(8));
            let seq =
                keys::be_u64(seq).ok_or_else(|| crate::IndexError::Corrupt("bitmap key".into()))?;
            let (written, zeroed) = crate::values::decode_bitmaps(v)?;
            let mut run = head.to_vec();
            run.extend_from_slice(&run_start(seq).to_be_bytes());
            let mut bytes = Vec::new();
            let _ = (written | zeroed).serialize_into(&mut bytes);
            batch.merge_cf(cf, run, bytes);
            if batch.len() >= 4096 {
                self.db.write(std::mem::take(&mut batch))?;
            }
            it.next();
        }
        it.status()?;
        batch.put_cf(cf, VERSION_KEY, []);
        self.db.write(batch)?;
        Ok(())
    }
}

/// When a walk consults summaries: at the first segment it meets of each run, unless
/// recent summaries kept failing to skip (after the first failure, each one doubles the
/// runs passed over before the next try, up to `MAX_WAIT`), so a history where no run
/// can be skipped pays for a few summaries only. The first failure is free: a walk's
/// first run rarely skips, since nothing is resolved yet.
pub(crate) struct Skipper {
    last_run: Option<u64>,
    wait: u64,
    next_wait: u64,
}

const MAX_WAIT: u64 = 64;

impl Skipper {
    pub fn new() -> Skipper {
        Skipper {
            last_run: None,
            wait: 0,
            next_wait: 0,
        }
    }

    /// Whether to read the summary of `seq`'s run now.
    pub fn should_try(&mut self, seq: u64) -> bool {
        let run = run_start(seq);
        if self.last_run == Some(run) {
            return false;
        }
        self.last_run = Some(run);
        if self.wait > 0 {
            self.wait -= 1;
            return false;
        }
        true
    }

    /// Records whether the summary let the walk skip its run.
    pub fn skipped(&mut self, skipped: bool) {
        if skipped {
            self.next_wait = 0;
        } else {
            self.wait = self.next_wait;
            self.next_wait = (self.next_wait * 2).clamp(1, MAX_WAIT);
        }
    }
}
