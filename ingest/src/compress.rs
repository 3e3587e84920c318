//! Chunk compression with one zstd context per thread.
//!
//! `tidemark_format::pack::encode_chunk` builds a fresh zstd context for every chunk:
//! at level 3 that is most of a megabyte of tables, mapped, zeroed and unmapped again
//! for each 64 KiB chunk, which cost about a tenth of a full protect's CPU time. The
//! frames here are byte for byte the same (see the tests); only the context is kept,
//! one per rayon worker, and an incompressible chunk is not copied.

use std::cell::RefCell;

use tidemark_format::pack::ChunkCodec;

thread_local! {
    /// This thread's context and the level it is set to.
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { RefCell::new(None) };
}

/// Compresses one chunk for a pack: the zstd frame, or `None` if zstd would not save
/// at least 2% (the chunk is then stored raw), the rule of `encode_chunk`.
pub(crate) fn compress_chunk(data: &[u8], level: i32) -> Option<Vec<u8>> {
    // A frame must be shorter than this to be kept. Giving zstd no more room than
    // that makes it stop with "destination too small" instead of writing a frame we
    // would throw away; any other failure also keeps the chunk raw.
    let limit = data.len() - data.len() / 50;
    let mut frame = Vec::with_capacity(limit.checked_sub(1)?);
    COMPRESSOR.with_borrow_mut(|slot| {
        let zstd = match slot {
            Some((l, c)) if *l == level => c,
            _ => {
                let c = zstd::bulk::Compressor::new(level).ok()?;
                &mut slot.insert((level, c)).1
            }
        };
        zstd.compress_to_buffer(data, &mut frame).ok()
    })?;
    Some(frame)
}

/// The codec of a chunk `compress_chunk` returned `frame` for.
pub(crate) fn codec_of(frame: &Option<Vec<u8>>) -> ChunkCodec {
    match frame {
        Some(_) => ChunkCodec::Zstd,
        None => ChunkCodec::Raw,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidemark_format::pack::encode_chunk;

    fn xorshift(len: usize, mut x: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 56) as u8
            })
            .collect()
    }

    /// Words from a tiny vocabulary: compresses well, like the text of the benchmark.
    fn text(len: usize, seed: u64) -> Vec<u8> {
        let words: [&[u8]; 6] = [b"tide ", b"mark ", b"block ", b"chunk ", b"pack ", b"\n"];
        let mut out = Vec::with_capacity(len + 8);
        for r in xorshift(len, seed) {
            if out.len() >= len {
                break;
            }
            out.extend_from_slice(words[r as usize % words.len()]);
        }
        out.truncate(len);
        out
    }

    /// The same frames (and the same raw decisions) as `encode_chunk`, at several
    /// levels in a row on one thread, so that a reused context changes nothing.
    #[test]
    fn frames_equal_encode_chunk() {
        let mut half = text(40_000, 3);
        half.extend(xorshift(40_000, 4));
        let mut barely = xorshift(65_536, 5);
        barely[..1_400].fill(0);
        let inputs = [
            text(65_536, 1),
            xorshift(65_536, 2),
            half,
            barely,
            vec![7u8; 262_144],
            text(16_384, 6),
            vec![1u8; 1],
            Vec::new(),
        ];
        for level in [3, 1, 3, 19, -1] {
            for data in &inputs {
                let frame = compress_chunk(data, level);
                let (codec, expected) = encode_chunk(data, level);
                assert_eq!(
                    codec_of(&frame),
                    codec,
                    "level {level}, {} bytes",
                    data.len()
                );
                assert_eq!(frame.as_deref().unwrap_or(data), &expected[..]);
            }
        }
    }
}
