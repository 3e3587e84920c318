//! Streaming FastCDC over one disk's data stream.
//!
//! Bytes are buffered and cut in windows; the last chunk of a window is held back
//! until more data (or the end) arrives, because only then is its cut point final.
//! The cuts are therefore exactly those of chunking the whole stream at once.
//! A window's buffer is handed over whole once cut (see `take`), and a spare one
//! takes its place. Blocks can be read straight into the buffer (see `room`), so that
//! the stream's bytes are not copied on the way to the packer.

pub(crate) struct Chunker {
    min: usize,
    avg: usize,
    max: usize,
    /// The stream's bytes not cut yet are `buf[..len]`. What follows is room that new
    /// bytes can be read into (see `room`); it stays initialised, so that buffers,
    /// which are reused, are zeroed once only.
    buf: Vec<u8>,
    len: usize,
    /// The room handed out last: where it starts, and where the part not yet looked
    /// at (by `keep`) starts.
    room: Option<(usize, usize)>,
}

/// A cut piece of the stream, as a range of the chunker's buffer.
pub(crate) type Cut = std::ops::Range<usize>;

impl Chunker {
    pub fn new(min: u32, avg: u32, max: u32) -> Self {
        Chunker {
            min: min as usize,
            avg: avg as usize,
            max: max as usize,
            buf: Vec::new(),
            len: 0,
            room: None,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        self.room(data.len()).copy_from_slice(data);
        self.room = None;
        self.len += data.len();
    }

    /// `n` bytes of room after the stream, to read into; `keep` then appends parts of
    /// it to the stream, where they are, or moved down over the parts dropped.
    pub fn room(&mut self, n: usize) -> &mut [u8] {
        let end = self.len + n;
        if self.buf.len() < end {
            self.buf.resize(end, 0);
        }
        self.room = Some((self.len, self.len));
        &mut self.buf[self.len..end]
    }

    /// The room handed out last (its start is what `keep` did not move yet).
    pub fn room_bytes(&self) -> &[u8] {
        let start = self.room.map_or(self.len, |(start, _)| start);
        &self.buf[start..]
    }

    /// Appends `range` of the room handed out last to the stream. Ranges must come in
    /// ascending order, without overlap; `false` (and nothing done) otherwise.
    pub fn keep(&mut self, range: std::ops::Range<usize>) -> bool {
        let Some((start, next)) = self.room.as_mut() else {
            return false;
        };
        let from = *start + range.start;
        let to = *start + range.end;
        if from < *next || to < from || to > self.buf.len() {
            return false;
        }
        *next = to;
        if from != self.len {
            self.buf.copy_within(from..to, self.len);
        }
        self.len += to - from;
        true
    }

    pub fn buffered(&self) -> usize {
        self.len
    }

    /// Cuts the buffer. Unless `last`, the final (not yet certain) chunk is held back.
    pub fn cuts(&self, last: bool) -> Vec<Cut> {
        let mut cuts: Vec<Cut> =
            fastcdc::v2020::FastCDC::new(&self.buf[..self.len], self.min, self.avg, self.max)
                .map(|c| c.offset..c.offset + c.length)
                .collect();
        if !last {
            cuts.pop();
        }
        cuts
    }

    /// Hands over the buffer, whose first `n` bytes were cut, and goes on with `spare`
    /// holding the rest: the cut bytes move to the packer without a copy. (The
    /// buffer's bytes past the cuts are whatever they were: the cuts say what counts.)
    pub fn take(&mut self, n: usize, mut spare: Vec<u8>) -> Vec<u8> {
        let rest = self.len - n.min(self.len);
        if spare.len() < rest {
            spare.resize(rest, 0);
        }
        spare[..rest].copy_from_slice(&self.buf[self.len - rest..self.len]);
        self.len = rest;
        self.room = None;
        std::mem::replace(&mut self.buf, spare)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windowed_cuts_equal_whole_stream_cuts() {
        let mut x: u64 = 7;
        let data: Vec<u8> = (0..3_000_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 56) as u8
            })
            .collect();
        let whole: Vec<usize> = fastcdc::v2020::FastCDC::new(&data, 16384, 65536, 262144)
            .map(|c| c.length)
            .collect();
        let mut c = Chunker::new(16384, 65536, 262144);
        let mut got = Vec::new();
        for piece in data.chunks(300_001) {
            c.push(piece);
            let cuts = c.cuts(false);
            got.extend(cuts.iter().map(|r| r.len()));
            let window = c.take(cuts.last().map_or(0, |r| r.end), Vec::new());
            assert_eq!(
                window.len() - c.buffered(),
                cuts.last().map_or(0, |r| r.end)
            );
        }
        got.extend(c.cuts(true).iter().map(|r| r.len()));
        assert_eq!(got, whole);
    }

    /// Blocks kept from a room (moved down over the dropped ones) make the same stream
    /// as pushing them.
    #[test]
    fn kept_room_blocks_equal_pushed_blocks() {
        let data: Vec<u8> = (0..64 * 100u32).map(|i| (i * 7 % 251) as u8).collect();
        let keep = |i: usize| i % 3 != 1 && !i.is_multiple_of(7);
        let mut pushed = Chunker::new(64, 256, 1024);
        for (_, block) in data.chunks(64).enumerate().filter(|(i, _)| keep(*i)) {
            pushed.push(block);
        }
        let mut kept = Chunker::new(64, 256, 1024);
        for (g, group) in data.chunks(64 * 30).enumerate() {
            kept.room(group.len()).copy_from_slice(group);
            for j in 0..group.len() / 64 {
                assert_eq!(&kept.room_bytes()[j * 64..][..64], &group[j * 64..][..64]);
                if keep(g * 30 + j) {
                    assert!(kept.keep(j * 64..(j + 1) * 64));
                }
            }
            assert!(!kept.keep(0..64), "ranges must ascend");
        }
        let len = pushed.buffered();
        assert_eq!(kept.buffered(), len);
        assert_eq!(kept.cuts(true), pushed.cuts(true));
        let (a, b) = (kept.take(len, Vec::new()), pushed.take(len, Vec::new()));
        assert_eq!(a[..len], b[..len]);
    }
}
