//! Streaming FastCDC over one disk's data stream.
//!
//! Bytes are buffered and cut in windows; the last chunk of a window is held back
//! until more data (or the end) arrives, because only then is its cut point final.
//! The cuts are therefore exactly those of chunking the whole stream at once.

pub(crate) struct Chunker {
    min: usize,
    avg: usize,
    max: usize,
    buf: Vec<u8>,
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
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The buffered bytes.
    pub fn data(&self) -> &[u8] {
        &self.buf
    }

    /// Cuts the buffer. Unless `last`, the final (not yet certain) chunk is held back.
    pub fn cuts(&self, last: bool) -> Vec<Cut> {
        let mut cuts: Vec<Cut> =
            fastcdc::v2020::FastCDC::new(&self.buf, self.min, self.avg, self.max)
                .map(|c| c.offset..c.offset + c.length)
                .collect();
        if !last {
            cuts.pop();
        }
        cuts
    }

    /// Drops the first `n` bytes, once their chunks are handled.
    pub fn consume(&mut self, n: usize) {
        self.buf.drain(..n);
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
            c.consume(cuts.last().map_or(0, |r| r.end));
        }
        got.extend(c.cuts(true).iter().map(|r| r.len()));
        assert_eq!(got, whole);
    }
}
