//! Writes a deterministic synthetic VM image, or mutates one in place.
//!
//! ```text
//! synth-image --size 2GiB --seed N OUT
//! synth-image --mutate --fraction 0.02 --seed N PATH
//! ```
//!
//! Zero runs are left as holes, as in a freshly provisioned thin image, so that
//! `cp`, `protect` and `restore` all see the same sparse file.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::process::ExitCode;

use rand::seq::index::sample;
use rand::RngCore;
use tidemark_benches::{
    fill_run, parse_size, run_kind, run_rng, RunKind, TextGen, BLOCK_LEN, RUN_LEN,
};

const USAGE: &str = "usage: synth-image --size SIZE --seed N OUT\n       synth-image --mutate --fraction F --seed N PATH";

enum Mode {
    Create { size: u64 },
    Mutate { fraction: f64 },
}

struct Args {
    mode: Mode,
    seed: u64,
    path: PathBuf,
}

fn main() -> ExitCode {
    let result = parse_args(std::env::args().skip(1)).and_then(|a| match a.mode {
        Mode::Create { size } => create(&a.path, size, a.seed),
        Mode::Mutate { fraction } => mutate(&a.path, fraction, a.seed),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("synth-image: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let (mut size, mut fraction, mut seed, mut path, mut mutate) = (None, None, 0u64, None, false);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--size" => size = Some(parse_size(&value("--size")?)?),
            "--seed" => {
                seed = value("--seed")?
                    .parse()
                    .map_err(|e| format!("--seed: {e}"))?
            }
            "--fraction" => {
                let f: f64 = value("--fraction")?
                    .parse()
                    .map_err(|e| format!("--fraction: {e}"))?;
                if !(0.0..=1.0).contains(&f) {
                    return Err(format!("--fraction {f}: must be within 0..=1"));
                }
                fraction = Some(f);
            }
            "--mutate" => mutate = true,
            "-h" | "--help" => return Err(USAGE.into()),
            s if s.starts_with('-') => return Err(format!("unknown option {s}\n{USAGE}")),
            s if path.is_none() => path = Some(PathBuf::from(s)),
            s => return Err(format!("unexpected argument {s}\n{USAGE}")),
        }
    }
    let path = path.ok_or_else(|| format!("missing path\n{USAGE}"))?;
    let mode = match (mutate, size, fraction) {
        (false, Some(size), None) => {
            if size % BLOCK_LEN as u64 != 0 {
                return Err(format!("--size {size}: must be a multiple of {BLOCK_LEN}"));
            }
            Mode::Create { size }
        }
        (true, None, f) => Mode::Mutate {
            fraction: f.unwrap_or(0.02),
        },
        _ => return Err(USAGE.into()),
    };
    Ok(Args { mode, seed, path })
}

/// Generates the runs on every core: each thread takes every n-th run.
fn create(path: &PathBuf, size: u64, seed: u64) -> Result<(), String> {
    let err = |e: std::io::Error| format!("{}: {e}", path.display());
    // Truncating first makes the zero runs holes even when OUT already existed.
    let file = File::create(path).map_err(err)?;
    let runs = size.div_ceil(RUN_LEN as u64);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let text = TextGen::new();
    let counts = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (file, text) = (&file, &text);
                s.spawn(move || -> std::io::Result<[u64; 3]> {
                    let mut counts = [0u64; 3];
                    let mut buf = vec![0u8; RUN_LEN];
                    for run in (t..runs).step_by(threads as usize) {
                        let mut rng = run_rng(seed, run);
                        let kind = run_kind(&mut rng);
                        counts[kind as usize] += 1;
                        if kind == RunKind::Zero {
                            continue;
                        }
                        let offset = run * RUN_LEN as u64;
                        let buf = &mut buf[..(size - offset).min(RUN_LEN as u64) as usize];
                        fill_run(kind, &mut rng, text, buf);
                        file.write_all_at(buf, offset)?;
                    }
                    Ok(counts)
                })
            })
            .collect();
        workers.into_iter().try_fold([0u64; 3], |acc, w| {
            let c = w
                .join()
                .map_err(|_| std::io::Error::other("generator thread panicked"))??;
            Ok::<_, std::io::Error>([acc[0] + c[0], acc[1] + c[1], acc[2] + c[2]])
        })
    })
    .map_err(err)?;
    file.set_len(size).map_err(err)?;
    eprintln!(
        "synth-image: {} bytes in {runs} runs: {} zero, {} text, {} random",
        size, counts[0], counts[1], counts[2]
    );
    Ok(())
}

/// Overwrites `fraction` of the 4 KiB blocks, each chosen at most once, with random bytes.
fn mutate(path: &PathBuf, fraction: f64, seed: u64) -> Result<(), String> {
    let err = |e: std::io::Error| format!("{}: {e}", path.display());
    let file = OpenOptions::new().write(true).open(path).map_err(err)?;
    let size = file.metadata().map_err(err)?.len();
    let blocks = (size / BLOCK_LEN as u64) as usize;
    let count = ((blocks as f64 * fraction).round() as usize).min(blocks);
    // A run index no image uses, so the new bytes never repeat the image's own.
    let mut rng = run_rng(seed, u64::MAX);
    let mut picked = sample(&mut rng, blocks, count).into_vec();
    // Ascending order, as a guest's writeback would mostly issue them.
    picked.sort_unstable();
    let mut buf = [0u8; BLOCK_LEN];
    for b in &picked {
        rng.fill_bytes(&mut buf);
        file.write_all_at(&buf, (*b * BLOCK_LEN) as u64)
            .map_err(err)?;
    }
    eprintln!(
        "synth-image: overwrote {count} of {blocks} blocks ({} bytes)",
        count * BLOCK_LEN
    );
    Ok(())
}
