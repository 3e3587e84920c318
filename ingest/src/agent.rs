//! The capture agent: protects image files or block devices as points of a domain.
//!
//! Each run reads every disk once and sends only the blocks whose content changed
//! since the last run. It keeps a 128-bit hash per block of what it sent, in the index,
//! committed in the same batch as the segment, so a failed run never makes the next one
//! skip a block. The hashes are trusted only if the domain's newest point is the one
//! this agent wrote; otherwise every block is sent (dedup keeps the upload small).
//! Holes of sparse images are not read (see `scan`).

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::PathBuf;

use tidemark_format::{DiskSpec, DomainRecord, Marker, BLOCK_SIZE};
use tidemark_pitr_index::StateWrite;

use crate::builder::SegmentBuilder;
use crate::scan::Scan;
use crate::{domain, now_ns, DomainWriter, IngestContext, IngestError, Result};

const AGENT_SEQ_KEY: &[u8] = b"agent-seq";

/// A disk to protect: its name in the domain and where to read it.
#[derive(Clone, Debug)]
pub struct DiskSource {
    /// Disk name.
    pub name: String,
    /// Image file or block device.
    pub path: PathBuf,
}

/// What one protect run did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtectReport {
    /// Seq of the new point.
    pub seq: u64,
    /// Its time, unix nanoseconds.
    pub time: i64,
    /// Bytes uploaded (packs and segment).
    pub new_bytes: u64,
    /// Bytes of blocks that changed since the last run.
    pub changed_bytes: u64,
    /// Bytes of the disks read.
    pub logical_bytes: u64,
}

fn open_disk(src: &DiskSource) -> Result<(File, u64)> {
    let read_err = |source| IngestError::Read {
        path: src.path.display().to_string(),
        source,
    };
    let mut f = File::open(&src.path).map_err(read_err)?;
    // Seeking to the end gives the size of block devices too.
    let size = f.seek(SeekFrom::End(0)).map_err(read_err)?;
    f.seek(SeekFrom::Start(0)).map_err(read_err)?;
    if size == 0 || !size.is_multiple_of(BLOCK_SIZE as u64) {
        return Err(IngestError::Invalid(format!(
            "{}: size {size} is not a positive multiple of {BLOCK_SIZE}",
            src.path.display()
        )));
    }
    Ok((f, size))
}

/// Opens the domain, creating it from the disks on first use; an existing domain must
/// have each named disk with the same size.
async fn domain_for(
    ctx: &IngestContext,
    name: &str,
    disks: &[(DiskSource, u64)],
) -> Result<DomainRecord> {
    match domain::open_domain(ctx, name).await {
        Ok(rec) => {
            for (src, size) in disks {
                let spec = rec
                    .disks
                    .iter()
                    .find(|d| d.name == src.name)
                    .ok_or_else(|| {
                        IngestError::Conflict(format!(
                            "domain {name} has no disk {:?} (it has {})",
                            src.name,
                            domain::describe(&rec)
                        ))
                    })?;
                if spec.size != *size {
                    return Err(IngestError::Conflict(format!(
                        "disk {} of domain {name} is {} bytes but {} has {size} bytes",
                        src.name,
                        spec.size,
                        src.path.display()
                    )));
                }
            }
            Ok(rec)
        }
        Err(IngestError::UnknownDomain(_)) => {
            let rec = DomainRecord {
                name: name.to_owned(),
                block_size: BLOCK_SIZE,
                disks: disks
                    .iter()
                    .map(|(s, size)| DiskSpec {
                        name: s.name.clone(),
                        size: *size,
                    })
                    .collect(),
                created: now_ns(),
            };
            domain::create_domain(ctx, rec).await
        }
        Err(e) => Err(e),
    }
}

/// Replicates the current content of `disks` as one new point of `domain` (all disks in
/// one segment, so they are crash-consistent with each other).
pub async fn protect(
    ctx: &IngestContext,
    domain: &str,
    disks: &[DiskSource],
    marker: Option<Marker>,
) -> Result<ProtectReport> {
    if disks.is_empty() {
        return Err(IngestError::Invalid("no disk to protect".into()));
    }
    let mut opened = Vec::new();
    for src in disks {
        if opened
            .iter()
            .any(|(s, _, _): &(DiskSource, File, u64)| s.name == src.name)
        {
            return Err(IngestError::Invalid(format!(
                "disk {} given twice",
                src.name
            )));
        }
        let (f, size) = open_disk(src)?;
        opened.push((src.clone(), f, size));
    }
    let sizes: Vec<_> = opened
        .iter()
        .map(|(s, _, size)| (s.clone(), *size))
        .collect();
    let rec = domain_for(ctx, domain, &sizes).await?;
    let mut writer = DomainWriter::open(ctx.clone(), domain).await?;
    let seq = writer.next_seq();
    let last = seq.checked_sub(1).filter(|s| *s > 0);
    let agent_seq = ctx
        .index
        .get_state(domain, AGENT_SEQ_KEY)?
        .and_then(|v| v.try_into().ok().map(u64::from_be_bytes));
    // With no point yet, every block is known to be zero.
    let trust = last.is_none() || agent_seq == last;
    let mut inputs: Vec<(u32, DiskSource, File, u64)> = opened
        .into_iter()
        .map(|(s, f, size)| {
            let idx = rec.disk_index(&s.name).unwrap_or(u32::MAX);
            (idx, s, f, size)
        })
        .collect();
    inputs.sort_by_key(|(i, _, _, _)| *i);
    let logical_bytes = sizes.iter().map(|(_, s)| s).sum();
    let index = ctx.index.clone();
    let domain_name = domain.to_owned();
    let feed = move |b: &mut SegmentBuilder| {
        let mut state: Vec<StateWrite> = Vec::new();
        for (disk, src, file, size) in inputs {
            b.begin_disk(disk)?;
            let path = src.path.display().to_string();
            Scan::new(&index, &domain_name, disk, trust, &mut state).read(b, &file, size, &path)?;
        }
        state.push((AGENT_SEQ_KEY.to_vec(), seq.to_be_bytes().to_vec()));
        Ok(state)
    };
    let time = now_ns();
    let p = writer
        .commit_feed(feed, marker.into_iter().collect(), (time, time))
        .await?;
    Ok(ProtectReport {
        seq: p.seq,
        time: p.time,
        new_bytes: p.new_bytes,
        changed_bytes: (p.data_blocks + p.zero_blocks) * BLOCK_SIZE as u64,
        logical_bytes,
    })
}
