//! The open segment of a domain and its writer: writes are validated and staged (last
//! writer wins per block), sealed on age, size, marker or flush, and committed.
//! A write counts as acknowledged only once the seal that holds it returned a point.

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::Bytes;
use tidemark_format::{DomainRecord, Marker, SegmentKind, WriterId, BLOCK_SIZE};
use tidemark_pitr_index::StateWrite;

use crate::builder::{build_segment, SegmentBuilder};
use crate::commit::{commit, SegmentHeader};
use tidemark_pitr_index::sync;

use crate::owner::{self, Ownership};
use crate::{domain, now_ns, CommittedPoint, IngestContext, IngestError, Result};

/// Seqs a takeover may lose to the previous owner before it gives up; each loss is a
/// whole segment the old owner built meanwhile, so this is never reached in practice.
const MAX_FENCE_RACES: u32 = 1000;

/// One write from the protected site.
#[derive(Clone, Debug)]
pub struct Write {
    /// Disk index in the domain.
    pub disk: u32,
    /// Byte offset, a multiple of the block size.
    pub offset: u64,
    /// The bytes, a non-zero multiple of the block size.
    pub data: Bytes,
    /// Capture time, unix nanoseconds.
    pub time: i64,
}

/// Writes to one domain's log, as its owner. One writer per domain per process.
pub struct DomainWriter {
    ctx: IngestContext,
    domain: DomainRecord,
    /// Site and generation stamped on every segment; fixed for the writer's life.
    writer: WriterId,
    next_seq: u64,
    last_time: i64,
    needs_recovery: bool,
    staged: BTreeMap<(u32, u32), Bytes>,
    staged_since: Option<Instant>,
    times: Option<(i64, i64)>,
}

impl std::fmt::Debug for DomainWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DomainWriter")
            .field("domain", &self.domain.name)
            .field("writer", &self.writer)
            .field("next_seq", &self.next_seq)
            .field("staged_blocks", &self.staged.len())
            .finish()
    }
}

impl DomainWriter {
    /// Opens the writer of an existing domain under this site's ownership (claiming
    /// the domain if nobody owns it yet; `Fenced` if another site does), first indexing
    /// whatever the bucket holds beyond the index (a crash after a segment was created
    /// but before it was indexed).
    pub async fn open(ctx: IngestContext, name: &str) -> Result<Self> {
        let rec = domain::open_domain(&ctx, name).await?;
        let own = owner::claim(&ctx, name).await?;
        let mut w = DomainWriter::new(ctx, rec, &own);
        w.recover().await?;
        Ok(w)
    }

    /// Takes the domain over for this site (failover, failback): bumps the generation
    /// in `owner.json`, indexes the whole log, and commits a fence segment, after which
    /// the previous owner's commits fail with `Fenced`. `expected_generation` makes the
    /// takeover conditional on the ownership the caller saw; a concurrent takeover by
    /// another site is `Fenced`. Returns the writer and the fence point.
    pub async fn take_over(
        ctx: IngestContext,
        name: &str,
        expected_generation: Option<u64>,
    ) -> Result<(Self, CommittedPoint)> {
        let rec = domain::open_domain(&ctx, name).await?;
        let own = owner::take(&ctx, name, expected_generation).await?;
        let mut w = DomainWriter::new(ctx, rec, &own);
        // The old owner may still win seqs until it meets the fence; each lost race
        // means one more of its (acknowledged) points to index before the fence.
        let mut lost = 0;
        loop {
            let fence = w
                .commit_segment(SegmentKind::Fence, |_| Ok(Vec::new()), Vec::new(), None)
                .await;
            match fence {
                Ok(p) => return Ok((w, p)),
                Err(IngestError::SeqTaken { .. }) if lost < MAX_FENCE_RACES => lost += 1,
                Err(e) => return Err(e),
            }
        }
    }

    fn new(ctx: IngestContext, domain: DomainRecord, own: &Ownership) -> Self {
        DomainWriter {
            ctx,
            domain,
            writer: own.writer(),
            next_seq: 1,
            last_time: i64::MIN,
            needs_recovery: true,
            staged: BTreeMap::new(),
            staged_since: None,
            times: None,
        }
    }

    /// Indexes the log to its end and checks this writer still owns the domain. The
    /// order matters: a takeover's fence indexed here is always preceded by its
    /// `owner.json` change, so a writer that missed the fence still sees the new owner
    /// and never writes past the fence.
    async fn recover(&mut self) -> Result<()> {
        sync::catch_up(&self.ctx.store, &self.ctx.index, &self.domain).await?;
        owner::verify(&self.ctx, &self.domain.name, &self.writer).await?;
        let last = self.ctx.index.last_segment(&self.domain.name)?;
        self.next_seq = last.as_ref().map_or(1, |m| m.seq + 1);
        self.last_time = last.map_or(i64::MIN, |m| m.time_end);
        self.needs_recovery = false;
        Ok(())
    }

    /// Indexes the log to its end and checks this writer still owns the domain, now
    /// rather than at the next commit: after a failed commit, this tells whether its
    /// segment landed anyway (it is then indexed, under this writer's id).
    pub async fn resync(&mut self) -> Result<()> {
        self.recover().await
    }

    /// The domain written to.
    pub fn domain(&self) -> &DomainRecord {
        &self.domain
    }

    /// The site and generation this writer stamps on its segments.
    pub fn writer(&self) -> &WriterId {
        &self.writer
    }

    /// The seq the next seal will claim.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Checks a write against the domain without staging it.
    pub fn validate(&self, w: &Write) -> Result<()> {
        let bs = BLOCK_SIZE as u64;
        let disk =
            self.domain.disks.get(w.disk as usize).ok_or_else(|| {
                IngestError::Invalid(format!("disk index {} does not exist", w.disk))
            })?;
        let len = w.data.len() as u64;
        if len == 0 || !len.is_multiple_of(bs) || !w.offset.is_multiple_of(bs) {
            return Err(IngestError::Invalid(format!(
                "write at offset {} of {len} bytes on disk {}: offset and length must be non-zero multiples of {bs}",
                w.offset, disk.name
            )));
        }
        if len > self.ctx.config.seal_bytes {
            return Err(IngestError::Invalid(format!(
                "write of {len} bytes is larger than a segment ({} bytes)",
                self.ctx.config.seal_bytes
            )));
        }
        if w.offset.checked_add(len).is_none_or(|end| end > disk.size) {
            return Err(IngestError::Invalid(format!(
                "write at offset {} of {len} bytes ends past the end of disk {} ({} bytes)",
                w.offset, disk.name, disk.size
            )));
        }
        if w.time < 0 {
            return Err(IngestError::Invalid("capture time before 1970".into()));
        }
        Ok(())
    }

    /// Validates every write first, then stages them all: a bad write in a batch
    /// changes nothing.
    pub fn stage(&mut self, writes: Vec<Write>) -> Result<()> {
        for w in &writes {
            self.validate(w)?;
        }
        let bs = BLOCK_SIZE as usize;
        for w in writes {
            let first = (w.offset / BLOCK_SIZE as u64) as u32;
            for (i, start) in (0..w.data.len()).step_by(bs).enumerate() {
                self.staged
                    .insert((w.disk, first + i as u32), w.data.slice(start..start + bs));
            }
            self.times = Some(match self.times {
                Some((a, b)) => (a.min(w.time), b.max(w.time)),
                None => (w.time, w.time),
            });
            self.staged_since.get_or_insert_with(Instant::now);
        }
        Ok(())
    }

    /// Drops everything staged: its writers were told the commit failed, and a later
    /// commit must not carry their writes as if nothing had happened.
    pub fn discard_staged(&mut self) {
        self.staged.clear();
        self.staged_since = None;
        self.times = None;
    }

    /// Bytes staged and not yet committed.
    pub fn staged_bytes(&self) -> u64 {
        self.staged.len() as u64 * BLOCK_SIZE as u64
    }

    /// Whether the open segment should be sealed now (age or size).
    pub fn seal_due(&self, now: Instant) -> bool {
        self.staged_bytes() >= self.ctx.config.seal_bytes
            || self
                .staged_since
                .is_some_and(|t| now.duration_since(t) >= self.ctx.config.seal_age)
    }

    /// Seals what is staged (if anything) into a point.
    pub async fn flush(&mut self) -> Result<Option<CommittedPoint>> {
        if self.staged.is_empty() {
            return Ok(None);
        }
        self.seal(Vec::new()).await.map(Some)
    }

    /// Seals what is staged (possibly nothing) into a point carrying `markers`.
    pub async fn seal(&mut self, markers: Vec<Marker>) -> Result<CommittedPoint> {
        let staged = self.staged.clone();
        let (t0, t1) = self.times.unwrap_or_else(|| {
            let now = now_ns();
            (now, now)
        });
        let feed = move |b: &mut SegmentBuilder| {
            let mut disk = None;
            for ((d, block), data) in &staged {
                if disk != Some(*d) {
                    b.begin_disk(*d)?;
                    disk = Some(*d);
                }
                b.put_block(*block, data)?;
            }
            Ok(Vec::new())
        };
        let p = self
            .commit_segment(SegmentKind::Delta, feed, markers, Some((t0, t1)))
            .await?;
        self.staged.clear();
        self.staged_since = None;
        self.times = None;
        Ok(p)
    }

    /// Builds and commits one delta segment from `feed` (which may also return state to
    /// commit with it). On failure nothing staged is dropped, and the next commit first
    /// re-reads the log, so a seq another writer or a half-done commit took is skipped.
    pub(crate) async fn commit_feed<F>(
        &mut self,
        feed: F,
        markers: Vec<Marker>,
        times: (i64, i64),
    ) -> Result<CommittedPoint>
    where
        F: FnOnce(&mut SegmentBuilder) -> Result<Vec<StateWrite>> + Send + 'static,
    {
        self.commit_segment(SegmentKind::Delta, feed, markers, Some(times))
            .await
    }

    /// Commits one segment of `kind`; `times` of `None` means now. A seq that turns out
    /// taken is checked against `owner.json`: `Fenced` if another site took over.
    async fn commit_segment<F>(
        &mut self,
        kind: SegmentKind,
        feed: F,
        markers: Vec<Marker>,
        times: Option<(i64, i64)>,
    ) -> Result<CommittedPoint>
    where
        F: FnOnce(&mut SegmentBuilder) -> Result<Vec<StateWrite>> + Send + 'static,
    {
        if self.needs_recovery {
            self.recover().await?;
        }
        for m in &markers {
            tidemark_format::names::validate_name("marker", &m.name)?;
        }
        let times = times.unwrap_or_else(|| {
            let now = now_ns();
            (now, now)
        });
        // Points are ordered in time as in seq, whatever the writers' clocks say.
        let time_end = times.1.max(self.last_time);
        let time_start = times.0.min(time_end);
        let result = async {
            let (built, state) =
                build_segment(&self.ctx, &self.domain.name, Default::default(), feed).await?;
            let head = SegmentHeader {
                seq: self.next_seq,
                writer: self.writer.clone(),
                kind,
                time_start,
                time_end,
                markers,
            };
            commit(&self.ctx, &self.domain.name, head, built, &state).await
        }
        .await;
        match result {
            Ok(p) => {
                self.next_seq = p.seq + 1;
                self.last_time = p.time;
                Ok(p)
            }
            Err(e @ IngestError::SeqTaken { .. }) => {
                self.needs_recovery = true;
                Err(owner::check_still_owner(&self.ctx, &self.domain.name, &self.writer, e).await)
            }
            Err(e) => {
                self.needs_recovery = true;
                Err(e)
            }
        }
    }
}
