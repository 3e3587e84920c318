//! One GC run of one domain (see the crate's documentation for the order of steps).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Instant;

use bytes::Bytes;
use roaring::RoaringBitmap;
use tidemark_format::{
    keys, DomainRecord, Manifest, Marker, PackId, RetentionPolicy, SegmentKind, SegmentVersion,
    WriterId,
};
use tidemark_ingest::{owner, IngestContext};
use tidemark_objstore::StoreError;
use tidemark_pitr_index::{sync, Index, IndexError, SegmentMeta};

use crate::packs::{plan_packs, repack, PackPlan, RefDelta};
use crate::plan::{disk_liveness, plan, segment_facts, Plan, SegmentLiveness};
use crate::policy::{retained_points, PointInfo};
use crate::rewrite::{self, Rewrite, Written};
use crate::sweep::{drop_uncommitted, sweep_garbage, sweep_orphans};
use crate::{lease, GcConfig, GcError, GcFailPoint, GcReport, Result};

/// Runs GC on `domain` under `policy` at time `now` (unix ns); with `dry_run`, only
/// reports what a run would do. Only the domain's owner may run it.
pub async fn run(
    ctx: &IngestContext,
    domain: &str,
    policy: &RetentionPolicy,
    dry_run: bool,
    now: i64,
    cfg: &GcConfig,
) -> Result<GcReport> {
    let started = Instant::now();
    let mut report = GcReport {
        domain: domain.to_owned(),
        dry_run,
        ..GcReport::default()
    };
    let rec = tidemark_ingest::domain::open_domain(ctx, domain).await?;
    let writer = owner_writer(ctx, domain).await?;
    let index = ctx.index.as_ref();
    report.stored_bytes_before = stored_bytes(index, domain)?;
    {
        let _commits = index.lock_commits(domain).await;
        match sync::catch_up(&ctx.store, index, &rec).await {
            Err(IndexError::Busy(_)) => {
                report.deferred = Some("restores of the domain keep a GC manifest waiting".into());
                return finish(report, index, started);
            }
            other => other?,
        };
    }
    let leases = lease::read_leases(&ctx.store, domain, now).await?;
    if !dry_run {
        sweep_garbage(&ctx.store, index, domain, cfg, &leases, now, &mut report).await?;
        sweep_orphans(&ctx.store, index, domain, cfg, now, &mut report).await?;
    }

    let segments = index.segments(domain, 0..=u64::MAX)?;
    let Some(upto) = segments.last().map(|m| m.seq) else {
        return finish(report, index, started);
    };
    report.upto = Some(upto);
    let points: Vec<PointInfo> = segments
        .iter()
        .filter(|m| m.is_point())
        .map(|m| PointInfo {
            seq: m.seq,
            time: m.time_end,
            markers: m.markers.iter().map(|k| k.name.clone()).collect(),
        })
        .collect();
    let retained = retained_points(&points, policy, &leases, now);
    report.points_before = points.len() as u64;
    report.points_retained = retained.len() as u64;

    let timer = Instant::now();
    let mut liveness = Vec::with_capacity(rec.disks.len());
    for disk in 0..rec.disks.len() as u32 {
        liveness.push(disk_liveness(
            &index.disk_touched(domain, disk, upto)?,
            &retained,
        ));
    }
    let seqs: Vec<u64> = segments.iter().map(|m| m.seq).collect();
    let the_plan = plan(&segment_facts(&seqs, &retained, &liveness), &cfg.rules);
    report.liveness_seconds = timer.elapsed().as_secs_f64();
    let demoted: Vec<u64> = the_plan
        .demoted
        .iter()
        .copied()
        .filter(|q| segments.iter().any(|m| m.seq == *q && m.is_point()))
        .collect();
    report.segments_deleted = the_plan.deleted.len() as u64;
    report.segments_merged = the_plan.merges.iter().map(|m| m.members.len() as u64).sum();
    report.segments_demoted = demoted.len() as u64;
    let metas: BTreeMap<u64, &SegmentMeta> = segments.iter().map(|m| (m.seq, m)).collect();
    let superseded = the_plan.superseded();

    if dry_run {
        let mut delta = RefDelta::new();
        for seq in &the_plan.deleted {
            count_streams(index, domain, &rec, *seq, -1, &mut delta)?;
        }
        let packs = plan_packs(index, domain, &delta, cfg.repack_dead_fraction)?;
        count_packs(&mut report, &packs);
        report.bytes_reclaimable = reclaimable(&packs, &superseded, &metas);
        report.images_written = the_plan.image.is_some() as u64;
        report.merged_written = the_plan.merges.len() as u64;
        return finish(report, index, started);
    }

    let epoch = index.gc_epoch(domain)?.max(
        sync::newest_manifest(&ctx.store, domain)
            .await?
            .unwrap_or(0),
    ) + 1;
    drop_uncommitted(&ctx.store, domain, epoch).await?;

    // Rewrites: merged runs, then the image.
    let mut written: Vec<Written> = Vec::new();
    let mut stored = HashSet::new();
    for m in &the_plan.merges {
        let r = Rewrite {
            seq: m.at,
            kind: SegmentKind::Merged,
            time_start: earliest(&metas, &m.members),
            time_end: metas.get(&m.at).map_or(0, |s| s.time_end),
            markers: Vec::new(),
            blocks: live_of(&liveness, &m.members),
        };
        written.push(rewrite::write(ctx, &rec, cfg, &writer, epoch, r, &mut stored).await?);
    }
    if let Some(image) = &the_plan.image {
        let point = metas
            .get(&image.at)
            .ok_or_else(|| GcError::Conflict(format!("point {} vanished", image.at)))?;
        let r = Rewrite {
            seq: image.at,
            kind: SegmentKind::Image,
            time_start: earliest(&metas, &image.members),
            time_end: point.time_end,
            markers: point
                .markers
                .iter()
                .map(|m| Marker {
                    name: m.name.clone(),
                    known_good: m.known_good,
                })
                .collect(),
            blocks: live_of(&liveness, &image.members),
        };
        written.push(rewrite::write(ctx, &rec, cfg, &writer, epoch, r, &mut stored).await?);
    }
    report.merged_written = the_plan.merges.len() as u64;
    report.images_written = the_plan.image.is_some() as u64;
    report.bytes_uploaded = written.iter().map(|w| w.uploaded).sum();

    // References the run leaves, and the packs' fate.
    let mut delta = RefDelta::new();
    for seq in &superseded {
        count_streams(index, domain, &rec, *seq, -1, &mut delta)?;
    }
    for w in &written {
        for c in w.segment.disks.iter().flat_map(|d| &d.chunks) {
            *delta.entry(c.hash).or_default() += 1;
        }
    }
    let packs = plan_packs(index, domain, &delta, cfg.repack_dead_fraction)?;
    let (repacked, repack_bytes) = repack(&ctx.store, domain, &packs.repack).await?;
    report.bytes_uploaded += repack_bytes;
    count_packs(&mut report, &packs);
    if cfg.fail_at == Some(GcFailPoint::AfterRewrite) {
        return Err(GcError::Injected(GcFailPoint::AfterRewrite));
    }
    // Segments merged or demoted by earlier runs are planned as demoted again: only
    // new work makes an epoch.
    let nothing = the_plan.deleted.is_empty()
        && the_plan.merges.is_empty()
        && the_plan.image.is_none()
        && demoted.is_empty()
        && packs.dead.is_empty()
        && packs.repack.is_empty();
    if nothing {
        return finish(report, index, started);
    }

    // Commit: the index alone (no restore reads it), ingest commits held off.
    let Some(guard) = index.exclusive_domain(domain, cfg.exclusive_wait).await else {
        report.deferred =
            Some("restores of the domain are at work; the run's writes are swept later".into());
        return finish(report, index, started);
    };
    let commits = index.lock_commits(domain).await;
    let base_epoch = epoch - 1;
    check_unmoved(
        index,
        domain,
        base_epoch,
        upto,
        &metas,
        &superseded,
        &written,
        &packs,
        &delta,
    )?;
    owner::verify(ctx, domain, &writer).await?;

    let new_packs: BTreeSet<PackId> = written
        .iter()
        .flat_map(|w| w.segment.new_packs.iter().copied())
        .chain(repacked.iter().copied())
        .collect();
    let garbage_packs: BTreeSet<PackId> = packs
        .dead
        .iter()
        .copied()
        .chain(packs.repack.iter().map(|(id, _)| *id))
        .collect();
    let manifest = build_manifest(
        index,
        &rec,
        &writer,
        epoch,
        upto,
        now,
        &the_plan,
        &demoted,
        &written,
        &new_packs,
        &garbage_packs,
    )?;
    let bytes = manifest
        .encode()
        .map_err(|e| GcError::Invalid(e.to_string()))?;
    match ctx
        .store
        .put_if_absent(&keys::manifest_key(domain, epoch), Bytes::from(bytes))
        .await
    {
        Ok(_) => {}
        Err(StoreError::AlreadyExists { .. }) => {
            return Err(GcError::Conflict(format!(
                "another run committed epoch {epoch} of domain {domain}"
            )))
        }
        Err(e) => return Err(e.into()),
    }
    report.epoch = Some(epoch);
    report.bytes_reclaimable = reclaimable(&packs, &superseded, &metas);
    if cfg.fail_at == Some(GcFailPoint::AfterManifest) {
        return Err(GcError::Injected(GcFailPoint::AfterManifest));
    }
    sync::apply_manifest(&ctx.store, index, &rec, epoch, &guard).await?;
    drop(commits);
    drop(guard);
    if cfg.fail_at == Some(GcFailPoint::AfterApply) {
        return Err(GcError::Injected(GcFailPoint::AfterApply));
    }
    // With no grace period (tests, an operator emptying a bucket) the run reclaims
    // its own garbage at once.
    sweep_garbage(&ctx.store, index, domain, cfg, &leases, now, &mut report).await?;
    finish(report, index, started)
}

/// Finishes a report with the stored bytes the run leaves and its duration.
fn finish(mut report: GcReport, index: &Index, started: Instant) -> Result<GcReport> {
    report.stored_bytes_after = stored_bytes(index, &report.domain)?;
    report.duration_seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// This site's writer identity, if it owns the domain.
async fn owner_writer(ctx: &IngestContext, domain: &str) -> Result<WriterId> {
    match owner::read_owner(ctx, domain).await? {
        Some(own) if own.record.site == ctx.site => Ok(own.writer()),
        Some(own) => Err(GcError::NotOwner {
            domain: domain.to_owned(),
            owner: own.record.site,
        }),
        None => Err(GcError::NotOwner {
            domain: domain.to_owned(),
            owner: "nobody".into(),
        }),
    }
}

/// Stored bytes of a domain as the index knows them: packs and segment objects.
pub(crate) fn stored_bytes(index: &Index, domain: &str) -> Result<u64> {
    let packs: u64 = index.packs(domain)?.iter().map(|(_, p)| p.size).sum();
    let segments: u64 = index
        .segments(domain, 0..=u64::MAX)?
        .iter()
        .map(|m| m.object_size)
        .sum();
    Ok(packs + segments)
}

/// Adds `sign` for every chunk reference of segment `seq`'s streams.
fn count_streams(
    index: &Index,
    domain: &str,
    rec: &DomainRecord,
    seq: u64,
    sign: i64,
    delta: &mut RefDelta,
) -> Result<()> {
    for disk in 0..rec.disks.len() as u32 {
        for c in index.stream(domain, disk, seq)? {
            *delta.entry(c.hash).or_default() += sign;
        }
    }
    Ok(())
}

/// Reports the packs' fate.
fn count_packs(report: &mut GcReport, packs: &PackPlan) {
    report.packs_dead = packs.dead.len() as u64;
    report.packs_repacked = packs.repack.len() as u64;
    report.chunks_freed = packs.freed.len() as u64;
}

/// Bytes a run makes garbage: dead and repacked packs, superseded segment objects.
fn reclaimable(
    packs: &PackPlan,
    superseded: &BTreeSet<u64>,
    metas: &BTreeMap<u64, &SegmentMeta>,
) -> u64 {
    packs.garbage_bytes
        + superseded
            .iter()
            .filter_map(|s| metas.get(s))
            .map(|m| m.object_size)
            .sum::<u64>()
}

/// The earliest capture time of `members`: where a rewrite of them starts.
fn earliest(metas: &BTreeMap<u64, &SegmentMeta>, members: &[u64]) -> i64 {
    members
        .iter()
        .filter_map(|s| metas.get(s))
        .map(|s| s.time_start)
        .min()
        .unwrap_or(0)
}

/// Per disk: the live blocks of `members`.
fn live_of(liveness: &[Vec<SegmentLiveness>], members: &[u64]) -> Vec<(u32, RoaringBitmap)> {
    let members: HashSet<u64> = members.iter().copied().collect();
    liveness
        .iter()
        .enumerate()
        .map(|(disk, segs)| {
            let mut blocks = RoaringBitmap::new();
            for l in segs.iter().filter(|l| members.contains(&l.seq)) {
                blocks |= &l.live;
            }
            (disk as u32, blocks)
        })
        .collect()
}

/// Checks, with ingest held off, that nothing the run decided on moved since: no
/// other manifest, no pack it drops named by a segment committed since, the
/// superseded segments unchanged, no chunk the run stored anew
/// stored by ingest meanwhile (it would be in two live packs), no chunk the run frees
/// referenced by a commit meanwhile.
#[allow(clippy::too_many_arguments)]
fn check_unmoved(
    index: &Index,
    domain: &str,
    base_epoch: u64,
    upto: u64,
    metas: &BTreeMap<u64, &SegmentMeta>,
    superseded: &BTreeSet<u64>,
    written: &[Written],
    packs: &PackPlan,
    delta: &RefDelta,
) -> Result<()> {
    if index.gc_epoch(domain)? != base_epoch {
        return Err(GcError::Conflict(
            "the index moved to another GC epoch".into(),
        ));
    }
    // Segments committed since the run looked name only packs of their own, never one
    // the run found dead; were it so, deleting it would lose their data.
    for meta in index.segments(domain, upto.saturating_add(1)..=u64::MAX)? {
        let dropped =
            |p: &PackId| packs.dead.contains(p) || packs.repack.iter().any(|(id, _)| id == p);
        if let Some(p) = meta.pack_ids()?.into_iter().find(dropped) {
            return Err(GcError::Conflict(format!(
                "pack {p} of segment {} committed during the run",
                meta.seq
            )));
        }
    }
    for seq in superseded {
        let now = index.segment(domain, *seq)?;
        if now.as_ref().map(|m| m.epoch) != metas.get(seq).map(|m| m.epoch) {
            return Err(GcError::Conflict(format!("segment {seq} changed")));
        }
    }
    let written_packs: HashSet<PackId> = written
        .iter()
        .flat_map(|w| w.segment.new_packs.iter().copied())
        .collect();
    for w in written {
        for c in w.segment.disks.iter().flat_map(|d| &d.chunks) {
            if let Some(loc) = index.chunk_location(domain, &c.hash)? {
                if written_packs.contains(&loc.pack) {
                    continue;
                }
                // Located when the rewrite deduplicated against it: fine unless the
                // run is about to drop the pack holding it.
                let dropped = packs.dead.contains(&loc.pack)
                    || packs.repack.iter().any(|(id, _)| *id == loc.pack);
                let kept = packs
                    .repack
                    .iter()
                    .any(|(_, live)| live.iter().any(|(h, _)| *h == c.hash));
                if dropped && !kept {
                    return Err(GcError::Conflict(format!(
                        "chunk {} moved under the run",
                        c.hash.to_hex()
                    )));
                }
            }
        }
    }
    for hash in &packs.freed {
        let refs = index.chunk_refs(domain, hash)? + delta.get(hash).copied().unwrap_or(0);
        if refs != 0 {
            return Err(GcError::Conflict(format!(
                "chunk {} was referenced by a commit during the run",
                hash.to_hex()
            )));
        }
    }
    Ok(())
}

/// The manifest of the run: the log up to `upto` after it, the live packs, the garbage.
#[allow(clippy::too_many_arguments)]
fn build_manifest(
    index: &Index,
    rec: &DomainRecord,
    writer: &WriterId,
    epoch: u64,
    upto: u64,
    now: i64,
    the_plan: &Plan,
    demoted: &[u64],
    written: &[Written],
    new_packs: &BTreeSet<PackId>,
    garbage_packs: &BTreeSet<PackId>,
) -> Result<Manifest> {
    let domain = rec.name.as_str();
    let superseded = the_plan.superseded();
    let current = index.segments(domain, 0..=upto)?;
    let mut versions: BTreeMap<u64, u64> = BTreeMap::new();
    let mut garbage_segments = Vec::new();
    let mut still_demoted: BTreeSet<u64> = demoted.iter().copied().collect();
    for m in &current {
        if superseded.contains(&m.seq) {
            garbage_segments.push(SegmentVersion {
                seq: m.seq,
                epoch: m.epoch,
            });
        } else {
            versions.insert(m.seq, m.epoch);
            if m.demoted {
                still_demoted.insert(m.seq);
            }
        }
    }
    for w in written {
        versions.insert(w.segment.seq, epoch);
        still_demoted.remove(&w.segment.seq);
    }
    let mut live: BTreeSet<PackId> = index.packs(domain)?.into_iter().map(|(id, _)| id).collect();
    live.retain(|p| !garbage_packs.contains(p));
    live.extend(new_packs.iter().copied());
    garbage_segments.sort();
    Ok(Manifest {
        domain: domain.to_owned(),
        epoch,
        writer: writer.clone(),
        time: now,
        upto,
        segments: versions
            .into_iter()
            .map(|(seq, epoch)| SegmentVersion { seq, epoch })
            .collect(),
        demoted: still_demoted.into_iter().collect(),
        live_packs: live.into_iter().collect(),
        new_packs: new_packs.iter().copied().collect(),
        garbage_segments,
        garbage_packs: garbage_packs.iter().copied().collect(),
    })
}
