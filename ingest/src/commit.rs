//! The commit protocol (DESIGN.md section 5): packs are stored (by the builder), then
//! the segment is created with a create-only write — its existence is the commit
//! point — then the index is updated in one batch; only then is anything acknowledged.

use bytes::Bytes;
use tidemark_format::{keys, Marker, Segment, SegmentKind, WriterId};
use tidemark_objstore::StoreError;
use tidemark_pitr_index::StateWrite;

use crate::builder::BuiltSegment;
use crate::{IngestContext, IngestError, Result};

/// A step of the commit protocol after which a test may stop it, as a crash would.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailPoint {
    /// Packs are stored; the segment is not.
    AfterPacks,
    /// The segment is stored; the index does not know it.
    AfterSegment,
}

/// A committed point, as acknowledged to writers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedPoint {
    /// Its seq.
    pub seq: u64,
    /// Its time, unix nanoseconds.
    pub time: i64,
    /// Bytes uploaded for it (packs and segment object).
    pub new_bytes: u64,
    /// Blocks with data in it.
    pub data_blocks: u64,
    /// Blocks zeroed in it.
    pub zero_blocks: u64,
}

/// What the segment says besides its data.
pub(crate) struct SegmentHeader {
    pub seq: u64,
    pub writer: WriterId,
    pub kind: SegmentKind,
    pub time_start: i64,
    pub time_end: i64,
    pub markers: Vec<Marker>,
}

pub(crate) async fn commit(
    ctx: &IngestContext,
    domain: &str,
    head: SegmentHeader,
    built: BuiltSegment,
    state: &[StateWrite],
) -> Result<CommittedPoint> {
    if ctx.config.fail_at == Some(crate::FailPoint::AfterPacks) {
        return Err(IngestError::Injected(crate::FailPoint::AfterPacks));
    }
    crate::owner::verify(ctx, domain, &head.writer).await?;
    let seg = Segment {
        domain: domain.to_owned(),
        seq: head.seq,
        kind: head.kind,
        writer: head.writer,
        time_start: head.time_start,
        time_end: head.time_end,
        markers: head.markers,
        new_packs: built.packs.iter().map(|(id, _)| *id).collect(),
        disks: built.disks,
    };
    let bytes = Bytes::from(seg.encode()?);
    let object_size = bytes.len() as u64;
    let key = keys::segment_key(domain, seg.seq);
    match ctx.store.put_if_absent(&key, bytes.clone()).await {
        Ok(_) => {}
        Err(StoreError::AlreadyExists { .. }) => {
            // A retried request whose first attempt did land finds its own segment;
            // the bytes (writer, times, packs) cannot match anyone else's.
            let ours = ctx.store.get(&key).await?.data == bytes;
            if !ours {
                return Err(IngestError::SeqTaken {
                    domain: domain.to_owned(),
                    seq: seg.seq,
                });
            }
        }
        Err(e) => return Err(e.into()),
    }
    if ctx.config.fail_at == Some(crate::FailPoint::AfterSegment) {
        return Err(IngestError::Injected(crate::FailPoint::AfterSegment));
    }
    ctx.index
        .apply_segment(&seg, object_size, &built.packs, &built.new_chunks, state)?;
    Ok(CommittedPoint {
        seq: seg.seq,
        time: seg.time_end,
        new_bytes: object_size + built.packs.iter().map(|(_, p)| p.size).sum::<u64>(),
        data_blocks: built.data_blocks,
        zero_blocks: built.zero_blocks,
    })
}
