//! A zero-copy view of a serialized roaring bitmap (the portable format of
//! <https://github.com/RoaringBitmap/RoaringFormatSpec>): point resolution visits the
//! containers of thousands of bitmaps straight from RocksDB's buffers, where
//! deserializing each would allocate once per container.

use crate::{IndexError, Result};

const SERIAL_COOKIE_NO_RUNCONTAINER: u32 = 12346;
const SERIAL_COOKIE: u16 = 12347;
const NO_OFFSET_THRESHOLD: usize = 4;
const ARRAY_MAX: usize = 4096;
const BITMAP_BYTES: usize = 8192;

/// One container: the values whose high 16 bits are its key.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Container<'a> {
    /// Ascending little-endian u16 values.
    Array(&'a [u8]),
    /// 1024 little-endian u64 words, bit `v` set for value `v`.
    Bitmap(&'a [u8]),
    /// Little-endian `(start, length - 1)` u16 pairs.
    Runs(&'a [u8]),
}

/// The containers of a serialized bitmap, validated while they are visited.
pub(crate) struct View<'a> {
    data: &'a [u8],
    /// `(key, cardinality - 1)` pairs.
    header: &'a [u8],
    runs: Option<&'a [u8]>,
    size: usize,
}

fn corrupt() -> IndexError {
    IndexError::Corrupt("bitmap value".into())
}

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}

fn take<'a>(data: &'a [u8], pos: &mut usize, len: usize) -> Result<&'a [u8]> {
    let end = pos.checked_add(len).ok_or_else(corrupt)?;
    let s = data.get(*pos..end).ok_or_else(corrupt)?;
    *pos = end;
    Ok(s)
}

impl<'a> View<'a> {
    /// Parses the header of `data`; containers are checked as they are visited.
    pub fn new(data: &'a [u8]) -> Result<View<'a>> {
        let mut pos = 0;
        let cookie =
            u32::from_le_bytes(take(data, &mut pos, 4)?.try_into().map_err(|_| corrupt())?);
        let (size, runs) = if cookie == SERIAL_COOKIE_NO_RUNCONTAINER {
            let n = u32::from_le_bytes(take(data, &mut pos, 4)?.try_into().map_err(|_| corrupt())?);
            (n as usize, None)
        } else if cookie as u16 == SERIAL_COOKIE {
            let n = (cookie >> 16) as usize + 1;
            (n, Some(take(data, &mut pos, n.div_ceil(8))?))
        } else {
            return Err(corrupt());
        };
        if size > 1 << 16 {
            return Err(corrupt());
        }
        let header = take(data, &mut pos, size * 4)?;
        if runs.is_none() || size >= NO_OFFSET_THRESHOLD {
            // Offsets are redundant for a sequential reader.
            take(data, &mut pos, size * 4)?;
        }
        Ok(View {
            data: &data[pos..],
            header,
            runs,
            size,
        })
    }

    /// Calls `f(key, container)` for each container in ascending key order; stops at
    /// the first `false` (and returns false). Damaged data is `Corrupt`.
    pub fn try_for_each(&self, mut f: impl FnMut(u16, Container<'a>) -> bool) -> Result<bool> {
        let mut pos = 0;
        let mut last_key: Option<u16> = None;
        for i in 0..self.size {
            let key = u16_at(self.header, i * 4);
            if last_key.is_some_and(|k| k >= key) {
                return Err(corrupt());
            }
            last_key = Some(key);
            let card = usize::from(u16_at(self.header, i * 4 + 2)) + 1;
            let is_run = self.runs.is_some_and(|r| r[i / 8] & (1 << (i % 8)) != 0);
            let c = if is_run {
                let n = usize::from(u16_at(take(self.data, &mut pos, 2)?, 0));
                let runs = take(self.data, &mut pos, n * 4)?;
                let mut next = 0u32;
                for r in runs.chunks_exact(4) {
                    let (start, len) = (u32::from(u16_at(r, 0)), u32::from(u16_at(r, 2)));
                    if start < next || start + len > u32::from(u16::MAX) {
                        return Err(corrupt());
                    }
                    next = start + len + 1;
                }
                Container::Runs(runs)
            } else if card > ARRAY_MAX {
                Container::Bitmap(take(self.data, &mut pos, BITMAP_BYTES)?)
            } else {
                let values = take(self.data, &mut pos, card * 2)?;
                let ascending = values
                    .chunks_exact(2)
                    .map(|v| u16::from_le_bytes([v[0], v[1]]))
                    .try_fold(None::<u16>, |prev, v| match prev {
                        Some(p) if p >= v => Err(()),
                        _ => Ok(Some(v)),
                    })
                    .is_ok();
                if !ascending {
                    return Err(corrupt());
                }
                Container::Array(values)
            };
            if !f(key, c) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// The value of each `(start, length - 1)` pair of a run container, ascending.
pub(crate) fn run_values(runs: &[u8]) -> impl Iterator<Item = u16> + '_ {
    runs.chunks_exact(4).flat_map(|r| {
        let start = u16_at(r, 0);
        let last = start.saturating_add(u16_at(r, 2));
        start..=last
    })
}

/// The values of an array container, ascending.
pub(crate) fn array_values(values: &[u8]) -> impl Iterator<Item = u16> + '_ {
    values
        .chunks_exact(2)
        .map(|v| u16::from_le_bytes([v[0], v[1]]))
}

/// The 1024 words of a bitmap container.
pub(crate) fn bitmap_words(words: &[u8]) -> impl Iterator<Item = u64> + '_ {
    words
        .chunks_exact(8)
        .map(|w| u64::from_le_bytes(w.try_into().unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use roaring::RoaringBitmap;

    use super::*;

    fn values_of(bytes: &[u8]) -> Vec<u32> {
        let mut out = Vec::new();
        View::new(bytes)
            .expect("view")
            .try_for_each(|key, c| {
                let high = u32::from(key) << 16;
                match c {
                    Container::Array(v) => out.extend(array_values(v).map(|v| high | u32::from(v))),
                    Container::Runs(r) => out.extend(run_values(r).map(|v| high | u32::from(v))),
                    Container::Bitmap(w) => {
                        for (i, mut word) in bitmap_words(w).enumerate() {
                            while word != 0 {
                                out.push(high | (i as u32 * 64 + word.trailing_zeros()));
                                word &= word - 1;
                            }
                        }
                    }
                }
                true
            })
            .expect("visit");
        out
    }

    #[test]
    fn every_container_kind_reads_back() {
        let mut b = RoaringBitmap::new();
        b.extend([1u32, 5, 70_000, 1 << 30]);
        b.insert_range(200_000..210_000); // a bitmap container, or runs once optimized
        b.extend((300_000..320_000).step_by(3)); // a bitmap container
        b.insert(u32::MAX);
        let expect: Vec<u32> = b.iter().collect();
        let mut plain = Vec::new();
        b.serialize_into(&mut plain).expect("serialize");
        assert_eq!(values_of(&plain), expect);
        b.optimize();
        let mut runs = Vec::new();
        b.serialize_into(&mut runs).expect("serialize");
        assert_eq!(values_of(&runs), expect);
    }

    #[test]
    fn damaged_bitmaps_are_corrupt() {
        let mut b = RoaringBitmap::new();
        b.extend([1u32, 2, 3, 100_000]);
        let mut bytes = Vec::new();
        b.serialize_into(&mut bytes).expect("serialize");
        for cut in 0..bytes.len() {
            let r = View::new(&bytes[..cut]).and_then(|v| v.try_for_each(|_, _| true));
            assert!(r.is_err(), "truncated at {cut} of {}", bytes.len());
        }
        let mut bad = bytes.clone();
        bad[0] ^= 0xff;
        assert!(View::new(&bad).is_err());
        // Values out of order in an array container.
        let n = bytes.len();
        bytes.swap(n - 6, n - 4);
        bytes.swap(n - 5, n - 3);
        let r = View::new(&bytes).and_then(|v| v.try_for_each(|_, _| true));
        assert!(r.is_err());
    }
}
