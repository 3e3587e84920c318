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
    /// Each container's start, from the start of the serialized bitmap, where the
    /// format has them.
    offsets: Option<&'a [u8]>,
    /// Where `data` starts in the serialized bitmap.
    data_start: usize,
    size: usize,
}

fn corrupt() -> IndexError {
    IndexError::Corrupt("bitmap value".into())
}

/// The little-endian u16 at byte `i` of `b`.
pub(crate) fn u16_at(b: &[u8], i: usize) -> u16 {
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
        let offsets = if runs.is_none() || size >= NO_OFFSET_THRESHOLD {
            Some(take(data, &mut pos, size * 4)?)
        } else {
            None
        };
        Ok(View {
            data: &data[pos..],
            header,
            runs,
            offsets,
            data_start: pos,
            size,
        })
    }

    /// Calls `f(key, container)` for each container in ascending key order; stops at
    /// the first `false` (and returns false). Damaged data is `Corrupt`. The visit
    /// may start at the first container whose key is at least `first`, through the
    /// offsets of the format (a walk of half a disk's containers skips the other
    /// half's); `f` can still be given earlier keys.
    pub fn try_for_each_from(
        &self,
        first: u16,
        mut f: impl FnMut(u16, Container<'a>) -> bool,
    ) -> Result<bool> {
        let (start, mut pos) = self.seek(first)?;
        let mut last_key: Option<u16> = None;
        for i in start..self.size {
            let key = u16_at(self.header, i * 4);
            if last_key.is_some_and(|k| k >= key) {
                return Err(corrupt());
            }
            last_key = Some(key);
            let card = self.cardinality(i);
            let is_run = self.is_run(i);
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

impl View<'_> {
    /// Number of values, from the header alone.
    pub fn len(&self) -> u64 {
        (0..self.size).map(|i| self.cardinality(i) as u64).sum()
    }

    /// Number of values of container `i`.
    fn cardinality(&self, i: usize) -> usize {
        usize::from(u16_at(self.header, i * 4 + 2)) + 1
    }

    /// Whether container `i` holds runs.
    fn is_run(&self, i: usize) -> bool {
        self.runs.is_some_and(|r| r[i / 8] & (1 << (i % 8)) != 0)
    }

    /// The first container to visit for keys from `first` on, and where its data
    /// starts: the first container of the bitmap when the format has no offsets.
    fn seek(&self, first: u16) -> Result<(usize, usize)> {
        let Some(offsets) = self.offsets.filter(|_| first > 0) else {
            return Ok((0, 0));
        };
        let key = |i: usize| u16_at(self.header, i * 4);
        let (mut lo, mut hi) = (0, self.size);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if key(mid) < first {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if lo == 0 || lo == self.size {
            return Ok((lo, 0));
        }
        let offset = |i: usize| {
            u32::from_le_bytes([
                offsets[i * 4],
                offsets[i * 4 + 1],
                offsets[i * 4 + 2],
                offsets[i * 4 + 3],
            ]) as usize
        };
        // The offset is checked against the size of the container before it (known
        // from its cardinality unless it holds runs), so a damaged offset is caught
        // as the sequential visit would catch damaged data.
        let (at, before) = (offset(lo), offset(lo - 1));
        if !self.is_run(lo - 1) {
            let card = self.cardinality(lo - 1);
            let len = if card > ARRAY_MAX {
                BITMAP_BYTES
            } else {
                card * 2
            };
            if before.checked_add(len) != Some(at) {
                return Err(corrupt());
            }
        }
        let pos = at.checked_sub(self.data_start).ok_or_else(corrupt)?;
        Ok((lo, pos))
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
        values_from(bytes, 0)
    }

    fn values_from(bytes: &[u8], first: u16) -> Vec<u32> {
        let mut out = Vec::new();
        View::new(bytes)
            .expect("view")
            .try_for_each_from(first, |key, c| {
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
    fn a_visit_from_a_key_skips_the_containers_below_it() {
        let mut b = RoaringBitmap::new();
        for key in [0u32, 1, 2, 5, 9, 10, 400] {
            b.extend((0..7).map(|i| (key << 16) | (i * 911)));
        }
        b.insert_range(11 << 16..(11 << 16) + 20_000); // runs, once optimized
        b.extend((12 << 16..13 << 16).step_by(3)); // a bitmap container
        b.insert(13 << 16);
        for optimize in [false, true] {
            if optimize {
                b.optimize();
            }
            let mut bytes = Vec::new();
            b.serialize_into(&mut bytes).expect("serialize");
            for first in [0u16, 1, 3, 9, 11, 12, 13, 14, 400, 401, u16::MAX] {
                let got: Vec<u32> = values_from(&bytes, first)
                    .into_iter()
                    .filter(|v| v >> 16 >= u32::from(first))
                    .collect();
                let expect: Vec<u32> = b.iter().filter(|v| v >> 16 >= u32::from(first)).collect();
                assert_eq!(got, expect, "from {first}, optimized {optimize}");
            }
        }
    }

    #[test]
    fn a_damaged_offset_is_corrupt() {
        let b: RoaringBitmap = [1u32, 2, 70_000, 140_000].into_iter().collect();
        let mut bytes = Vec::new();
        b.serialize_into(&mut bytes).expect("serialize");
        // No-run format: cookie, size, 3 headers, then the offset of the second container.
        let second = 8 + 3 * 4 + 4;
        bytes[second] += 2;
        let r = View::new(&bytes).and_then(|v| v.try_for_each_from(1, |_, _| true));
        assert!(r.is_err());
    }

    #[test]
    fn damaged_bitmaps_are_corrupt() {
        let mut b = RoaringBitmap::new();
        b.extend([1u32, 2, 3, 100_000]);
        let mut bytes = Vec::new();
        b.serialize_into(&mut bytes).expect("serialize");
        for cut in 0..bytes.len() {
            let r = View::new(&bytes[..cut]).and_then(|v| v.try_for_each_from(0, |_, _| true));
            assert!(r.is_err(), "truncated at {cut} of {}", bytes.len());
        }
        let mut bad = bytes.clone();
        bad[0] ^= 0xff;
        assert!(View::new(&bad).is_err());
        // Values out of order in an array container.
        let n = bytes.len();
        bytes.swap(n - 6, n - 4);
        bytes.swap(n - 5, n - 3);
        let r = View::new(&bytes).and_then(|v| v.try_for_each_from(0, |_, _| true));
        assert!(r.is_err());
    }
}
