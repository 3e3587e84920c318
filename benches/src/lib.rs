//! Synthetic disk content shared by `synth-image` and the criterion benchmarks.
//!
//! An image is a sequence of 1 MiB runs; each run is zero, text-like or random,
//! chosen by a PRNG seeded from `(seed, run index)`. Seeding per run keeps the
//! output deterministic whatever the number of generator threads.

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

/// Length of one run of the same kind of content.
pub const RUN_LEN: usize = 1 << 20;

/// Disk block size (the unit `--mutate` overwrites).
pub const BLOCK_LEN: usize = 4096;

/// What a run holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunKind {
    /// All zero (a hole in the image file).
    Zero,
    /// Words from a small vocabulary: compresses about 3x with zstd level 3.
    Text,
    /// Incompressible bytes.
    Random,
}

/// The PRNG of run `run` of the image made with `seed`.
pub fn run_rng(seed: u64, run: u64) -> StdRng {
    StdRng::seed_from_u64(splitmix64(seed ^ splitmix64(run)))
}

/// Draws a run's kind: 40% zero, 35% text, 25% random.
pub fn run_kind(rng: &mut StdRng) -> RunKind {
    match rng.gen_range(0..100u32) {
        0..40 => RunKind::Zero,
        40..75 => RunKind::Text,
        _ => RunKind::Random,
    }
}

/// Fills `buf` with the content of a run of `kind` (the whole slice).
pub fn fill_run(kind: RunKind, rng: &mut StdRng, text: &TextGen, buf: &mut [u8]) {
    match kind {
        RunKind::Zero => buf.fill(0),
        RunKind::Text => text.fill(rng, buf),
        RunKind::Random => rng.fill_bytes(buf),
    }
}

/// `len` bytes of image content made with `seed`, zero runs included, in memory.
pub fn synth_content(seed: u64, len: usize) -> Vec<u8> {
    let text = TextGen::new();
    let mut out = vec![0u8; len];
    for (i, run) in out.chunks_mut(RUN_LEN).enumerate() {
        let mut rng = run_rng(seed, i as u64);
        let kind = run_kind(&mut rng);
        fill_run(kind, &mut rng, &text, run);
    }
    out
}

/// `len` bytes of one kind of content (for per-kind benchmarks).
pub fn content_of_kind(kind: RunKind, seed: u64, len: usize) -> Vec<u8> {
    let text = TextGen::new();
    let mut out = vec![0u8; len];
    let mut rng = run_rng(seed, 0);
    fill_run(kind, &mut rng, &text, &mut out);
    out
}

/// Text-like content: words of a fixed vocabulary separated by spaces, commas and
/// line breaks.
#[derive(Debug, Clone)]
pub struct TextGen {
    vocab: Vec<Word>,
}

/// A word padded to a fixed width, so that it is copied with one unaligned store
/// instead of a `memmove` call per word.
#[derive(Debug, Clone, Copy)]
struct Word {
    bytes: [u8; WORD_MAX],
    len: usize,
}

const WORD_MAX: usize = 16;

/// Vocabulary size. 256 words give zstd level 3 about 3x on 64 KiB chunks: a
/// larger vocabulary compresses worse, a smaller one approaches logs of one line.
const VOCAB: usize = 256;

const SYLLABLES: &[&str] = &[
    "ka", "to", "ri", "me", "su", "na", "lo", "ve", "di", "po", "an", "er", "is", "ul", "or", "en",
    "tra", "ble", "con", "ment", "ing", "ate", "pro", "ex", "de", "re", "com", "ion", "ter", "al",
    "ly", "ous",
];

impl Default for TextGen {
    fn default() -> Self {
        Self::new()
    }
}

impl TextGen {
    /// Builds the vocabulary; it is the same for every seed, like a language.
    pub fn new() -> Self {
        let mut rng = StdRng::seed_from_u64(0x7e47);
        let vocab = (0..VOCAB)
            .map(|_| {
                let mut w = Word {
                    bytes: [0; WORD_MAX],
                    len: 0,
                };
                for _ in 0..rng.gen_range(1..=3) {
                    let syllable = SYLLABLES[rng.gen_range(0..SYLLABLES.len())].as_bytes();
                    w.bytes[w.len..w.len + syllable.len()].copy_from_slice(syllable);
                    w.len += syllable.len();
                }
                w
            })
            .collect();
        TextGen { vocab }
    }

    /// Fills all of `buf` with text.
    pub fn fill(&self, rng: &mut StdRng, buf: &mut [u8]) {
        let mut pos = 0;
        let mut line = 0;
        'outer: loop {
            // One PRNG draw serves four words: the generator must make ~1 GB/s.
            let bits = rng.next_u64();
            for i in 0..4 {
                let r = (bits >> (16 * i)) as u16;
                let word = &self.vocab[(r & 0xff) as usize];
                let newline = line > 70 && r & 0x300 == 0;
                let sep: &[u8] = if newline {
                    b"\n"
                } else if r & 0xf000 == 0 {
                    b", "
                } else {
                    b" "
                };
                if pos + 2 * WORD_MAX <= buf.len() {
                    // Fixed-width stores; the padding lands where the next word goes.
                    buf[pos..pos + WORD_MAX].copy_from_slice(&word.bytes);
                    pos += word.len;
                    buf[pos] = sep[0];
                    buf[pos + 1] = sep.get(1).copied().unwrap_or(0);
                    pos += sep.len();
                } else {
                    for part in [&word.bytes[..word.len], sep] {
                        let n = part.len().min(buf.len() - pos);
                        buf[pos..pos + n].copy_from_slice(&part[..n]);
                        pos += n;
                    }
                    if pos == buf.len() {
                        break 'outer;
                    }
                }
                line = if newline {
                    0
                } else {
                    line + word.len + sep.len()
                };
            }
        }
    }
}

/// Parses a size such as `2GiB`, `64MiB`, `512KiB`, `1G` or `4096` (bytes).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: u64 = num.parse().map_err(|_| format!("{s:?}: not a size"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => return Err(format!("{s:?}: unknown unit {unit:?}")),
    };
    num.checked_mul(mult)
        .ok_or_else(|| format!("{s:?}: too large"))
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("x").is_err());
        assert!(parse_size("3 parsecs").is_err());
    }

    #[test]
    fn content_is_deterministic_and_mixed() {
        let a = synth_content(7, 64 * RUN_LEN);
        assert_eq!(a, synth_content(7, 64 * RUN_LEN));
        assert_ne!(a, synth_content(8, 64 * RUN_LEN));
        let zero_runs = a
            .chunks(RUN_LEN)
            .filter(|r| r.iter().all(|&b| b == 0))
            .count();
        assert!((10..40).contains(&zero_runs), "{zero_runs} zero runs of 64");
    }

    #[test]
    fn text_fills_exactly() {
        let t = TextGen::new();
        let mut rng = run_rng(1, 1);
        let mut buf = vec![0u8; 10_007];
        t.fill(&mut rng, &mut buf);
        assert!(buf
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b" ,\n".contains(&b)));
    }
}

/// Segment and domain builders for benchmarks of the index, which need bitmaps only.
pub mod bitmaps {
    use roaring::RoaringBitmap;
    use tidemark_format::{
        DiskDelta, DiskSpec, DomainRecord, Segment, SegmentKind, WriterId, BLOCK_SIZE,
    };

    /// A domain of one disk, `disk0`, of `blocks` blocks.
    pub fn one_disk_domain(name: &str, blocks: u32) -> DomainRecord {
        DomainRecord {
            name: name.into(),
            block_size: BLOCK_SIZE,
            disks: vec![DiskSpec {
                name: "disk0".into(),
                size: u64::from(blocks) * u64::from(BLOCK_SIZE),
            }],
            created: 1,
        }
    }

    /// A segment of disk 0 with these bitmaps and no chunk stream (point resolution
    /// and liveness read bitmaps only), taken 2 s after the one before.
    pub fn segment(
        domain: &str,
        seq: u64,
        kind: SegmentKind,
        written: RoaringBitmap,
        zeroed: RoaringBitmap,
    ) -> Segment {
        let t = seq as i64 * 2_000_000_000;
        Segment {
            domain: domain.into(),
            seq,
            kind,
            writer: WriterId::default(),
            time_start: t,
            time_end: t,
            markers: vec![],
            new_packs: vec![],
            disks: vec![DiskDelta {
                disk: 0,
                written,
                zeroed,
                chunks: vec![],
            }],
        }
    }
}
