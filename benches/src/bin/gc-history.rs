//! End-to-end GC figure: a simulated day of one disk, then GC.
//!
//! ```text
//! gc-history [--dir DIR] [--keep] [--disk-size 1GiB] [--hours 24] [--interval-secs 2]
//!            [--points-per-commit 1] [--hot-fraction 0.01] [--hot-per-point 8]
//!            [--cold-per-point 2] [--zero-permille 50] [--base-fraction 0.25]
//!            [--pitr-window-secs 3600] [--hourly 24] [--daily 7] [--seed 42]
//! ```
//!
//! History (in process, through the real write path into a local store): the first
//! point also writes `--base-fraction` of the disk in 1 MiB extents at random places
//! (the VM's installed content); then every `--interval-secs` of simulated time, for
//! `--hours`, `--hot-per-point` 4 KiB writes to random blocks of a hot set
//! (`--hot-fraction` of the disk's blocks, chosen at random once) and `--cold-per-point`
//! 4 KiB writes to random blocks of the whole disk, `--zero-permille` of these all
//! zero. Capture times are simulated (`Write::time`), from 2026-01-01T00:00:00Z; each
//! interval is one commit, hence one point (`--points-per-commit` N > 1 puts N
//! intervals' writes into one commit stamped with the last one's time). Every written
//! block has unique content (70% text-like, 30% random), so a block's content is named
//! by its version.
//!
//! Then, with GC's `now` at the last point's time and grace periods of zero, three GC
//! runs under the policy (`--pitr-window-secs`, `--hourly`, `--daily`): (1) with the
//! default rules, (2) with `force_image` (the oldest retained point becomes an image
//! segment), (3) with the default rules again, which should find nothing to do.
//! Reported: stored bytes before and after each run against the minimum the retained
//! points need; the points left against the policy; every retained point's plan against
//! the reference model; restores of the oldest and the newest retained point before GC,
//! after run 1 and after run 3, and of every other retained point outside the PITR
//! window plus three inside it after run 3, each compared block by block with the
//! reference model. Any difference makes the program fail (exit 1) after printing the
//! figures.
//!
//! The minimum: the distinct contents (versions) of the data blocks that the retained
//! points' images hold, deduplicated across points, times 4 KiB, times a compression
//! ratio. Two ratios are reported: (a) the history's own, pack bytes stored before GC ÷
//! bytes of data blocks written (chunks of one commit's ~40 KiB stream); (b) zstd 3 on
//! 64 KiB chunks (FastCDC's average, what rewrites produce) of each kind of content,
//! measured here on 64 chunks of each kind and applied per kind. Both count data only:
//! no segment objects, pack indexes, manifests or index.

use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::seq::index::sample;
use rand::{Rng, RngCore, SeedableRng};
use roaring::RoaringBitmap;
use tidemark_benches::{parse_size, run_rng, TextGen, BLOCK_LEN};
use tidemark_format::pack::encode_chunk;
use tidemark_format::{DiskSpec, DomainRecord, RetentionPolicy, BLOCK_SIZE};
use tidemark_gc::policy::{retained_points, PointInfo};
use tidemark_gc::{GcConfig, GcReport};
use tidemark_ingest::domain::create_domain;
use tidemark_ingest::{DomainWriter, IngestConfig, IngestContext, Write};
use tidemark_objstore::{DynStore, LocalStore};
use tidemark_pitr_index::Index;
use tidemark_rehydrator::{restore_disk, RestoreOptions, RestoreProgress};

const USAGE: &str = "usage: gc-history [--dir DIR] [--keep] [--disk-size SIZE] [--hours H] \
[--interval-secs S] [--points-per-commit N] [--hot-fraction F] [--hot-per-point N] \
[--cold-per-point N] [--zero-permille N] [--base-fraction F] [--pitr-window-secs S] \
[--hourly N] [--daily N] [--seed N]";

const DOMAIN: &str = "gcbench";
const DISK: &str = "disk0";
/// 2026-01-01T00:00:00Z.
const T0_NS: i64 = 1_767_225_600 * 1_000_000_000;
const EXTENT_BLOCKS: u32 = 256;
const BS: u64 = BLOCK_SIZE as u64;

type R<T> = Result<T, String>;

struct Args {
    dir: Option<PathBuf>,
    keep: bool,
    disk_size: u64,
    hours: u64,
    interval_secs: u64,
    points_per_commit: u64,
    hot_fraction: f64,
    hot_per_point: usize,
    cold_per_point: usize,
    zero_permille: u32,
    base_fraction: f64,
    pitr_window_secs: u64,
    hourly: u32,
    daily: u32,
    seed: u64,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> R<Args> {
    let mut a = Args {
        dir: None,
        keep: false,
        disk_size: 1 << 30,
        hours: 24,
        interval_secs: 2,
        points_per_commit: 1,
        hot_fraction: 0.01,
        hot_per_point: 8,
        cold_per_point: 2,
        zero_permille: 50,
        base_fraction: 0.25,
        pitr_window_secs: 3600,
        hourly: 24,
        daily: 7,
        seed: 42,
    };
    fn num<T: std::str::FromStr>(name: &str, v: String) -> R<T> {
        v.parse()
            .map_err(|_| format!("{name}: {v:?} is not a valid number\n{USAGE}"))
    }
    while let Some(arg) = it.next() {
        if arg == "--keep" {
            a.keep = true;
            continue;
        }
        let v = it
            .next()
            .ok_or_else(|| format!("{arg} needs a value\n{USAGE}"))?;
        match arg.as_str() {
            "--dir" => a.dir = Some(PathBuf::from(v)),
            "--disk-size" => a.disk_size = parse_size(&v)?,
            "--hours" => a.hours = num(&arg, v)?,
            "--interval-secs" => a.interval_secs = num(&arg, v)?,
            "--points-per-commit" => a.points_per_commit = num(&arg, v)?,
            "--hot-fraction" => a.hot_fraction = num(&arg, v)?,
            "--hot-per-point" => a.hot_per_point = num(&arg, v)?,
            "--cold-per-point" => a.cold_per_point = num(&arg, v)?,
            "--zero-permille" => a.zero_permille = num(&arg, v)?,
            "--base-fraction" => a.base_fraction = num(&arg, v)?,
            "--pitr-window-secs" => a.pitr_window_secs = num(&arg, v)?,
            "--hourly" => a.hourly = num(&arg, v)?,
            "--daily" => a.daily = num(&arg, v)?,
            "--seed" => a.seed = num(&arg, v)?,
            _ => return Err(format!("unknown argument {arg:?}\n{USAGE}")),
        }
    }
    let blocks = a.disk_size / BS;
    if a.disk_size == 0
        || !a.disk_size.is_multiple_of(u64::from(EXTENT_BLOCKS) * BS)
        || blocks > u64::from(u32::MAX)
    {
        return Err(format!(
            "--disk-size must be a non-zero multiple of 1 MiB below 16 TiB\n{USAGE}"
        ));
    }
    if a.interval_secs == 0 || a.points_per_commit == 0 || a.hours == 0 {
        return Err(format!(
            "--hours, --interval-secs and --points-per-commit must be positive\n{USAGE}"
        ));
    }
    if !(0.0..=1.0).contains(&a.hot_fraction) || !(0.0..=1.0).contains(&a.base_fraction) {
        return Err(format!("fractions lie in [0, 1]\n{USAGE}"));
    }
    if a.zero_permille > 1000 {
        return Err(format!("--zero-permille is at most 1000\n{USAGE}"));
    }
    Ok(a)
}

/// The PRNG of block version `ver`, and whether its content is text-like (70%) rather
/// than random (30%).
fn version_rng(seed: u64, ver: u32) -> (StdRng, bool) {
    let mut rng = run_rng(seed ^ 0x6c_6f67, u64::from(ver));
    let text = rng.gen_range(0..10u32) < 7;
    (rng, text)
}

/// The content of block version `ver` (1, 2, …; 0 is the zero block).
fn block_content(seed: u64, ver: u32, text: &TextGen, buf: &mut [u8]) {
    if ver == 0 {
        buf.fill(0);
        return;
    }
    let (mut rng, is_text) = version_rng(seed, ver);
    if is_text {
        text.fill(&mut rng, buf);
    } else {
        rng.fill_bytes(buf);
    }
}

/// The reference model: each point's writes as (block, version), in order.
struct Model {
    blocks: u32,
    /// Writes of all points, concatenated.
    log: Vec<(u32, u32)>,
    /// Per point (in commit order): its seq, time and the end of its writes in `log`.
    points: Vec<(u64, i64, usize)>,
    /// Versions handed out so far (the next is `versions + 1`).
    versions: u32,
    /// Data blocks written (non-zero versions), for the compression ratio.
    data_blocks_written: u64,
}

impl Model {
    /// The version of every block at the point with index `p` in `points`.
    fn state_at(&self, p: usize) -> Vec<u32> {
        let mut state = vec![0u32; self.blocks as usize];
        for &(b, v) in &self.log[..self.points[p].2] {
            state[b as usize] = v;
        }
        state
    }

    fn point_index(&self, seq: u64) -> R<usize> {
        self.points
            .binary_search_by_key(&seq, |p| p.0)
            .map_err(|_| format!("seq {seq} is no point of the history"))
    }
}

/// Sum of file sizes and number of files under `dir` by kind of object, leaving out the
/// local backend's own `.tmp/` and `.locks/` (no objects).
#[derive(Default, Clone, Copy)]
struct StoreUsage {
    packs: (u64, u64),
    segments: (u64, u64),
    other: (u64, u64),
}

impl StoreUsage {
    fn bytes(&self) -> u64 {
        self.packs.0 + self.segments.0 + self.other.0
    }
    fn objects(&self) -> u64 {
        self.packs.1 + self.segments.1 + self.other.1
    }
}

fn store_usage(dir: &Path) -> R<StoreUsage> {
    fn walk(dir: &Path, u: &mut StoreUsage) -> R<()> {
        let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for e in entries {
            let e = e.map_err(|e| format!("{}: {e}", dir.display()))?;
            let meta = e
                .metadata()
                .map_err(|err| format!("{}: {err}", e.path().display()))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if meta.is_dir() {
                if !name.starts_with('.') {
                    walk(&e.path(), u)?;
                }
                continue;
            }
            let slot = if name.ends_with(".pack") {
                &mut u.packs
            } else if name.ends_with(".seg") {
                &mut u.segments
            } else {
                &mut u.other
            };
            slot.0 += meta.len();
            slot.1 += 1;
        }
        Ok(())
    }
    let mut u = StoreUsage::default();
    walk(dir, &mut u)?;
    Ok(u)
}

/// Stored bytes as the index knows them (what GC's report counts): packs and segments.
fn index_usage(index: &Index) -> R<(u64, u64, usize, usize)> {
    let packs = index.packs(DOMAIN).map_err(|e| e.to_string())?;
    let segs = index
        .segments(DOMAIN, 0..=u64::MAX)
        .map_err(|e| e.to_string())?;
    let p: u64 = packs.iter().map(|(_, i)| i.size).sum();
    let s: u64 = segs.iter().map(|m| m.object_size).sum();
    Ok((p, s, packs.len(), segs.len()))
}

struct Bench {
    args: Args,
    dir: PathBuf,
    store: DynStore,
    index: Arc<Index>,
    ctx: IngestContext,
    blocks: u32,
    text: TextGen,
    failures: Vec<String>,
}

/// One restore, checked against the model.
struct Restored {
    seq: u64,
    when: &'static str,
    secs: f64,
    segments: u64,
    fetched: u64,
    identical: bool,
}

/// What the store holds at one stage.
struct Stage {
    name: &'static str,
    files: StoreUsage,
    index_packs: u64,
    index_segments: u64,
    packs: usize,
    segments: usize,
}

impl Bench {
    fn fail(&mut self, what: String) {
        eprintln!("[gc-history] FAILURE: {what}");
        self.failures.push(what);
    }

    async fn history(&mut self) -> R<(Model, Duration, u64)> {
        let a = &self.args;
        let mut rng = StdRng::seed_from_u64(a.seed);
        let hot_len = ((f64::from(self.blocks) * a.hot_fraction) as usize).max(1);
        let hot: Vec<u32> = sample(&mut rng, self.blocks as usize, hot_len)
            .into_iter()
            .map(|b| b as u32)
            .collect();
        let extents = self.blocks / EXTENT_BLOCKS;
        let base_extents = (f64::from(extents) * a.base_fraction).round() as usize;
        let mut base: Vec<u32> = sample(&mut rng, extents as usize, base_extents)
            .into_iter()
            .map(|e| e as u32)
            .collect();
        base.sort_unstable();

        let mut writer = DomainWriter::open(self.ctx.clone(), DOMAIN)
            .await
            .map_err(|e| format!("open writer: {e}"))?;
        let intervals = a.hours * 3600 / a.interval_secs;
        let mut model = Model {
            blocks: self.blocks,
            log: Vec::new(),
            points: Vec::new(),
            versions: 0,
            data_blocks_written: 0,
        };
        let mut uploaded = 0u64;
        let started = Instant::now();
        let mut buf = vec![0u8; BLOCK_LEN];
        for i in 0..intervals {
            let time = T0_NS + (i * a.interval_secs * 1_000_000_000) as i64;
            let mut writes = Vec::new();
            if i == 0 {
                for &e in &base {
                    let mut data = vec![0u8; EXTENT_BLOCKS as usize * BLOCK_LEN];
                    for (k, chunk) in data.chunks_mut(BLOCK_LEN).enumerate() {
                        model.versions += 1;
                        model.data_blocks_written += 1;
                        block_content(a.seed, model.versions, &self.text, chunk);
                        model
                            .log
                            .push((e * EXTENT_BLOCKS + k as u32, model.versions));
                    }
                    writes.push(Write {
                        disk: 0,
                        offset: u64::from(e * EXTENT_BLOCKS) * BS,
                        data: Bytes::from(data),
                        time,
                    });
                }
            }
            for k in 0..a.hot_per_point + a.cold_per_point {
                let (block, ver) = if k < a.hot_per_point {
                    model.versions += 1;
                    (hot[rng.gen_range(0..hot.len())], model.versions)
                } else {
                    let block = rng.gen_range(0..self.blocks);
                    if rng.gen_range(0..1000) < a.zero_permille {
                        (block, 0)
                    } else {
                        model.versions += 1;
                        (block, model.versions)
                    }
                };
                if ver != 0 {
                    model.data_blocks_written += 1;
                }
                block_content(a.seed, ver, &self.text, &mut buf);
                model.log.push((block, ver));
                writes.push(Write {
                    disk: 0,
                    offset: u64::from(block) * BS,
                    data: Bytes::copy_from_slice(&buf),
                    time,
                });
            }
            writer
                .stage(writes)
                .map_err(|e| format!("stage interval {i}: {e}"))?;
            if (i + 1).is_multiple_of(a.points_per_commit) || i + 1 == intervals {
                let p = writer
                    .seal(vec![])
                    .await
                    .map_err(|e| format!("commit interval {i}: {e}"))?;
                if p.time != time {
                    return Err(format!(
                        "point {} got time {} instead of the simulated {time}",
                        p.seq, p.time
                    ));
                }
                uploaded += p.new_bytes;
                model.points.push((p.seq, p.time, model.log.len()));
                let n = model.points.len();
                if n.is_multiple_of(2000) {
                    eprintln!(
                        "[gc-history] {n} points committed, {:.0} s",
                        started.elapsed().as_secs_f64()
                    );
                }
            }
        }
        Ok((model, started.elapsed(), uploaded))
    }

    /// Restores the point `seq` and compares it block by block with the model.
    async fn restore_and_check(
        &mut self,
        model: &Model,
        seq: u64,
        when: &'static str,
    ) -> R<Restored> {
        let out = self.dir.join("restore.img");
        let started = Instant::now();
        let report = restore_disk(
            &self.store,
            &self.index,
            DOMAIN,
            DISK,
            seq,
            &out,
            &RestoreOptions::default(),
            Arc::new(RestoreProgress::default()),
        )
        .await
        .map_err(|e| format!("restore of {seq} ({when}): {e}"))?;
        let secs = started.elapsed().as_secs_f64();
        let state = model.state_at(model.point_index(seq)?);
        let file = File::open(&out).map_err(|e| format!("{}: {e}", out.display()))?;
        let mut got = vec![0u8; 256 * BLOCK_LEN];
        let mut want = vec![0u8; BLOCK_LEN];
        let mut bad = Vec::new();
        let mut bad_count = 0u64;
        for (i, run) in state.chunks(256).enumerate() {
            let got = &mut got[..run.len() * BLOCK_LEN];
            file.read_exact_at(got, (i * 256 * BLOCK_LEN) as u64)
                .map_err(|e| format!("{}: {e}", out.display()))?;
            for (k, &ver) in run.iter().enumerate() {
                block_content(self.args.seed, ver, &self.text, &mut want);
                if got[k * BLOCK_LEN..(k + 1) * BLOCK_LEN] != want[..] {
                    bad_count += 1;
                    if bad.len() < 5 {
                        bad.push(format!("block {} (version {ver})", i * 256 + k));
                    }
                }
            }
        }
        let size = file
            .metadata()
            .map_err(|e| format!("{}: {e}", out.display()))?
            .len();
        drop(file);
        std::fs::remove_file(&out).map_err(|e| format!("{}: {e}", out.display()))?;
        if size != self.args.disk_size {
            self.fail(format!(
                "restore of {seq} ({when}) is {size} bytes, not {}",
                self.args.disk_size
            ));
        }
        if bad_count > 0 {
            self.fail(format!(
                "restore of {seq} ({when}) differs from the model in {bad_count} blocks, e.g. {}",
                bad.join(", ")
            ));
        }
        eprintln!(
            "[gc-history] restore of {seq} ({when}): {secs:.3} s, {} segments, {} bytes fetched, {}",
            report.segments,
            report.fetched_bytes,
            if bad_count == 0 { "identical" } else { "DIFFERS" }
        );
        Ok(Restored {
            seq,
            when,
            secs,
            segments: report.segments,
            fetched: report.fetched_bytes,
            identical: bad_count == 0 && size == self.args.disk_size,
        })
    }

    async fn gc(&mut self, policy: &RetentionPolicy, now: i64, force_image: bool) -> R<GcReport> {
        let mut cfg = GcConfig::new(self.dir.join("scratch"));
        cfg.grace = Duration::ZERO;
        cfg.orphan_grace = Duration::ZERO;
        cfg.rules.force_image = force_image;
        std::fs::create_dir_all(&cfg.scratch_dir)
            .map_err(|e| format!("{}: {e}", cfg.scratch_dir.display()))?;
        let report = tidemark_gc::run(&self.ctx, DOMAIN, policy, false, now, &cfg)
            .await
            .map_err(|e| format!("GC: {e}"))?;
        eprintln!(
            "[gc-history] GC report (force_image {force_image}): {}",
            serde_json::to_string(&report).map_err(|e| e.to_string())?
        );
        if let Some(why) = &report.deferred {
            self.fail(format!("GC run deferred: {why}"));
        }
        Ok(report)
    }

    fn stage(&self, name: &'static str) -> R<Stage> {
        let files = store_usage(&self.dir.join("store"))?;
        let (index_packs, index_segments, packs, segments) = index_usage(&self.index)?;
        Ok(Stage {
            name,
            files,
            index_packs,
            index_segments,
            packs,
            segments,
        })
    }

    /// Checks that the points left are the retained ones and that the plan of each
    /// retained point reads exactly the blocks the model holds data in. Returns the
    /// number of plans that differ and the time taken.
    fn check_points(&mut self, model: &Model, retained: &BTreeSet<u64>) -> R<(u64, f64)> {
        let points_after: BTreeSet<u64> = self
            .index
            .points(DOMAIN, 0..=u64::MAX)
            .map_err(|e| e.to_string())?
            .iter()
            .map(|m| m.seq)
            .collect();
        if points_after != *retained {
            let lost: Vec<_> = retained.difference(&points_after).take(5).collect();
            let extra: Vec<_> = points_after.difference(retained).take(5).collect();
            self.fail(format!(
                "points after GC ({}) are not the retained points ({}): missing e.g. {lost:?}, extra e.g. {extra:?}",
                points_after.len(),
                retained.len()
            ));
        }
        let started = Instant::now();
        let mut plan_bad = 0;
        for &seq in retained {
            let state = model.state_at(model.point_index(seq)?);
            let want: RoaringBitmap = state
                .iter()
                .enumerate()
                .filter(|(_, v)| **v != 0)
                .map(|(i, _)| i as u32)
                .collect();
            let plan = self
                .index
                .plan(DOMAIN, 0, self.blocks, seq)
                .map_err(|e| format!("plan of {seq}: {e}"))?;
            let got = plan.data();
            if got != want {
                plan_bad += 1;
                if plan_bad <= 5 {
                    self.fail(format!(
                        "plan of retained point {seq} after GC: {} data blocks, the model has {} ({} missing, {} extra)",
                        got.len(),
                        want.len(),
                        (&want - &got).len(),
                        (&got - &want).len()
                    ));
                }
            }
        }
        Ok((plan_bad, started.elapsed().as_secs_f64()))
    }
}

/// zstd 3 ratio (frame bytes ÷ raw bytes, as packs store chunks) of 64 KiB chunks of
/// text-like and of random block contents: 64 chunks of 16 versions each per kind.
fn chunk_ratios(seed: u64, text: &TextGen) -> (f64, f64) {
    let mut raw = [0u64; 2];
    let mut framed = [0u64; 2];
    let mut chunk: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    let mut block = vec![0u8; BLOCK_LEN];
    let mut ver = 0u32;
    while raw[0] < 64 * 65536 || raw[1] < 64 * 65536 {
        ver += 1;
        let k = usize::from(!version_rng(seed, ver).1);
        if raw[k] >= 64 * 65536 {
            continue;
        }
        block_content(seed, ver, text, &mut block);
        chunk[k].extend_from_slice(&block);
        if chunk[k].len() == 65536 {
            let (_, frame) = encode_chunk(&chunk[k], 3);
            raw[k] += 65536;
            framed[k] += frame.len() as u64;
            chunk[k].clear();
        }
    }
    (
        framed[0] as f64 / raw[0] as f64,
        framed[1] as f64 / raw[1] as f64,
    )
}

fn mib(bytes: u64) -> String {
    format!("{bytes} ({:.1} MiB)", bytes as f64 / f64::from(1u32 << 20))
}

async fn run(args: Args) -> R<bool> {
    let (tmp, dir) = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
            (None, d.clone())
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("tidemark-gc-history.")
                .tempdir()
                .map_err(|e| format!("temp dir: {e}"))?;
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    };
    eprintln!("[gc-history] work dir {}", dir.display());
    let store: DynStore =
        Arc::new(LocalStore::open(dir.join("store")).map_err(|e| format!("local store: {e}"))?);
    let index = Arc::new(Index::open(&dir.join("index")).map_err(|e| format!("index: {e}"))?);
    let ctx = IngestContext {
        store: store.clone(),
        index: index.clone(),
        config: IngestConfig::default(),
        site: "bench-site".into(),
    };
    let rec = DomainRecord {
        name: DOMAIN.into(),
        block_size: BLOCK_SIZE,
        disks: vec![DiskSpec {
            name: DISK.into(),
            size: args.disk_size,
        }],
        created: 1,
    };
    create_domain(&ctx, rec)
        .await
        .map_err(|e| format!("create domain: {e}"))?;
    let blocks = (args.disk_size / BS) as u32;
    let mut b = Bench {
        args,
        dir: dir.clone(),
        store,
        index,
        ctx,
        blocks,
        text: TextGen::new(),
        failures: Vec::new(),
    };
    let a = &b.args;
    let desc = format!(
        "disk {} bytes ({blocks} blocks); {} h of {} s intervals, {} interval(s) per commit; \
         per interval {} hot writes (hot set {} of the blocks) + {} cold writes ({}‰ zero), 4 KiB each; \
         first point also writes {} of the disk in 1 MiB extents; seed {}; policy: PITR window {} s, \
         hourly {}, daily {}",
        a.disk_size,
        a.hours,
        a.interval_secs,
        a.points_per_commit,
        a.hot_per_point,
        a.hot_fraction,
        a.cold_per_point,
        a.zero_permille,
        a.base_fraction,
        a.seed,
        a.pitr_window_secs,
        a.hourly,
        a.daily
    );
    let policy = RetentionPolicy {
        pitr_window_secs: a.pitr_window_secs,
        hourly: a.hourly,
        daily: a.daily,
        weekly: 0,
        monthly: 0,
        pinned: vec![],
    };
    let mut rows: Vec<(String, String)> = vec![("workload".into(), desc)];

    // ---- the history ----
    let (model, ingest_time, uploaded) = b.history().await?;
    let now = model
        .points
        .last()
        .map(|p| p.1)
        .ok_or("no point committed")?;
    rows.push((
        "points committed / ingest wall time".into(),
        format!(
            "{} / {:.1} s ({:.2} ms per commit)",
            model.points.len(),
            ingest_time.as_secs_f64(),
            ingest_time.as_secs_f64() * 1000.0 / model.points.len() as f64
        ),
    ));
    rows.push((
        "data blocks written (each a new content) / zero writes".into(),
        format!(
            "{} / {}",
            model.data_blocks_written,
            model.log.len() as u64 - model.data_blocks_written
        ),
    ));
    rows.push((
        "bytes uploaded by ingest (`new_bytes`)".into(),
        mib(uploaded),
    ));

    // ---- what the policy keeps, and the minimum ----
    let points: Vec<PointInfo> = b
        .index
        .points(DOMAIN, 0..=u64::MAX)
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|m| PointInfo {
            seq: m.seq,
            time: m.time_end,
            markers: vec![],
        })
        .collect();
    let retained = retained_points(&points, &policy, &[], now);
    let window_start = now - (b.args.pitr_window_secs as i64) * 1_000_000_000;
    let in_window = |s: u64| {
        model
            .point_index(s)
            .is_ok_and(|i| model.points[i].1 >= window_start)
    };
    let window: Vec<u64> = retained.iter().copied().filter(|s| in_window(*s)).collect();
    let mut seen = vec![false; model.versions as usize + 1];
    let mut distinct = [0u64; 2];
    {
        let mut state = vec![0u32; blocks as usize];
        let mut from = 0;
        for (seq, _, end) in &model.points {
            for &(blk, v) in &model.log[from..*end] {
                state[blk as usize] = v;
            }
            from = *end;
            if retained.contains(seq) {
                for &v in state.iter().filter(|v| **v != 0) {
                    if !seen[v as usize] {
                        seen[v as usize] = true;
                        distinct[usize::from(!version_rng(b.args.seed, v).1)] += 1;
                    }
                }
            }
        }
    }
    let before = b.stage("before GC")?;
    let written_bytes = model.data_blocks_written * BS;
    let ratio = before.index_packs as f64 / written_bytes as f64;
    let (r_text, r_random) = chunk_ratios(b.args.seed, &b.text);
    let all_distinct = distinct[0] + distinct[1];
    let min_a = (all_distinct as f64 * BS as f64 * ratio).round() as u64;
    let min_b =
        ((distinct[0] as f64 * r_text + distinct[1] as f64 * r_random) * BS as f64).round() as u64;
    rows.push((
        "points before GC / retained by the policy (in the PITR window)".into(),
        format!("{} / {} ({})", points.len(), retained.len(), window.len()),
    ));
    rows.push((
        "distinct block contents the retained points hold (text-like + random)".into(),
        format!(
            "{all_distinct} ({} + {}) = {} logical",
            distinct[0],
            distinct[1],
            mib(all_distinct * BS)
        ),
    ));
    rows.push((
        "ratio (a): pack bytes ÷ data bytes written, before GC".into(),
        format!("{} ÷ {written_bytes} = {ratio:.4}", before.index_packs),
    ));
    rows.push((
        "ratio (b): zstd 3 on 64 KiB chunks, text-like / random".into(),
        format!("{r_text:.4} / {r_random:.4}"),
    ));
    rows.push((
        "minimum (a): distinct × 4 KiB × ratio (a)".into(),
        mib(min_a),
    ));
    rows.push((
        "minimum (b): distinct × 4 KiB × ratio (b) per kind".into(),
        mib(min_b),
    ));

    // ---- restores before GC, then GC ----
    let oldest = *retained.first().ok_or("nothing retained")?;
    let newest = *retained.last().ok_or("nothing retained")?;
    let mut restores = vec![
        b.restore_and_check(&model, oldest, "before GC").await?,
        b.restore_and_check(&model, newest, "before GC").await?,
    ];
    let mut stages = vec![before];
    let mut reports = Vec::new();
    reports.push(("1: default rules", b.gc(&policy, now, false).await?));
    stages.push(b.stage("after run 1")?);
    restores.push(b.restore_and_check(&model, oldest, "after run 1").await?);
    restores.push(b.restore_and_check(&model, newest, "after run 1").await?);
    reports.push(("2: force_image", b.gc(&policy, now, true).await?));
    stages.push(b.stage("after run 2")?);
    reports.push(("3: default rules again", b.gc(&policy, now, false).await?));
    stages.push(b.stage("after run 3")?);

    // ---- checks after GC ----
    let (plan_bad, plan_secs) = b.check_points(&model, &retained)?;
    restores.push(b.restore_and_check(&model, oldest, "after run 3").await?);
    restores.push(b.restore_and_check(&model, newest, "after run 3").await?);
    let mut others: Vec<u64> = retained
        .iter()
        .copied()
        .filter(|s| *s != oldest && *s != newest && !in_window(*s))
        .collect();
    if !window.is_empty() {
        for k in [0, window.len() / 2, window.len().saturating_sub(2)] {
            if window[k] != newest && !others.contains(&window[k]) {
                others.push(window[k]);
            }
        }
    }
    let mut other_secs = 0.0;
    let mut other_ok = 0;
    for seq in &others {
        let r = b.restore_and_check(&model, *seq, "after run 3").await?;
        other_secs += r.secs;
        other_ok += u64::from(r.identical);
    }
    rows.push((
        "points left after GC = retained; plans of all retained points vs the model".into(),
        format!(
            "{}; {} plans, {plan_bad} differ ({plan_secs:.1} s)",
            if b.failures.iter().any(|f| f.starts_with("points after GC")) {
                "NO"
            } else {
                "yes"
            },
            retained.len()
        ),
    ));
    rows.push((
        "other retained points restored after run 3 (every hourly one outside the window, 3 inside)"
            .into(),
        format!(
            "{} restores, {other_ok} identical to the model, {other_secs:.3} s in total",
            others.len()
        ),
    ));

    // ---- figures ----
    println!("| figure | value |");
    println!("|---|---|");
    for (k, v) in &rows {
        println!("| {k} | {v} |");
    }
    println!();
    println!(
        "| stage | objects | stored bytes (files) | packs | segments | other | index-known bytes | ÷ before | ÷ minimum (a) | ÷ minimum (b) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let base = stages[0].files.bytes() as f64;
    for s in &stages {
        let bytes = s.files.bytes();
        println!(
            "| {} | {} | {} | {} in {} | {} in {} | {} in {} | {} ({} packs, {} segments) | {:.3} | {:.3} | {:.3} |",
            s.name,
            s.files.objects(),
            bytes,
            s.files.packs.0,
            s.files.packs.1,
            s.files.segments.0,
            s.files.segments.1,
            s.files.other.0,
            s.files.other.1,
            s.index_packs + s.index_segments,
            s.packs,
            s.segments,
            bytes as f64 / base,
            bytes as f64 / min_a as f64,
            bytes as f64 / min_b as f64
        );
    }
    println!();
    println!(
        "| GC run | s | liveness s | epoch | points retained / before | deleted | merged → written | demoted | images | chunks freed | packs repacked / dead | bytes uploaded | objects deleted | bytes reclaimed | report stored before → after |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for (name, r) in &reports {
        println!(
            "| {name} | {:.1} | {:.3} | {} | {} / {} | {} | {} → {} | {} | {} | {} | {} / {} | {} | {} | {} | {} → {} |",
            r.duration_seconds,
            r.liveness_seconds,
            r.epoch.map_or("none".to_string(), |e| e.to_string()),
            r.points_retained,
            r.points_before,
            r.segments_deleted,
            r.segments_merged,
            r.merged_written,
            r.segments_demoted,
            r.images_written,
            r.chunks_freed,
            r.packs_repacked,
            r.packs_dead,
            r.bytes_uploaded,
            r.objects_deleted,
            r.bytes_reclaimed,
            r.stored_bytes_before,
            r.stored_bytes_after
        );
    }
    println!();
    println!("| restore | when | s | segments read | bytes fetched | identical to the model |");
    println!("|---|---|---:|---:|---:|---|");
    for r in &restores {
        let which = if r.seq == oldest {
            format!("oldest retained (seq {})", r.seq)
        } else {
            format!("newest (seq {})", r.seq)
        };
        println!(
            "| {which} | {} | {:.3} | {} | {} | {} |",
            r.when,
            r.secs,
            r.segments,
            r.fetched,
            if r.identical { "yes" } else { "NO" }
        );
    }
    println!();
    if b.failures.is_empty() {
        println!(
            "All checks passed: every restore identical to the model; the points left are the retained ones; every retained point's plan reads exactly the model's data blocks."
        );
    } else {
        println!("FAILED CHECKS ({}):", b.failures.len());
        for f in &b.failures {
            println!("- {f}");
        }
    }
    if b.args.keep || b.args.dir.is_some() {
        eprintln!("[gc-history] kept {}", dir.display());
        if let Some(t) = tmp {
            let _ = t.keep();
        }
    }
    Ok(b.failures.is_empty())
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("gc-history: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gc-history: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("gc-history: {e}");
            ExitCode::FAILURE
        }
    }
}
