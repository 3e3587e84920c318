//! The segment: one entry of a domain's replication log (DESIGN.md section 2 and 5).
//!
//! Layout: `magic "TDMKSEG\0"`, `version u16`, the fields below, then the BLAKE3 of
//! everything before it. Block `b` of a disk is found without a per-block map: its bytes
//! start at `(written.rank(b) - 1) * BLOCK_SIZE` in the disk's chunk stream.

use roaring::RoaringBitmap;

use crate::codec::{check_header, verify_trailer, Reader, Writer};
use crate::names::validate_name;
use crate::{ChunkHash, FormatError, PackId, Result, BLOCK_SIZE};

const MAGIC: &[u8; 8] = b"TDMKSEG\0";
const VERSION: u16 = 1;
const WHAT: &str = "segment";

/// What a segment holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentKind {
    /// Writes of an interval: only the blocks it names changed.
    Delta = 0,
    /// A new owner's first entry: no writes; claims the seq for the new generation.
    Fence = 1,
    /// The full state of every disk (made by GC); point resolution stops here.
    Image = 2,
    /// The live blocks of a run of segments GC did not retain, merged (last writer
    /// wins) at the seq of the run's newest one. Not a point: only later points read it.
    Merged = 3,
}

impl SegmentKind {
    fn from_u8(v: u8) -> Result<Self> {
        match v {
            0 => Ok(SegmentKind::Delta),
            1 => Ok(SegmentKind::Fence),
            2 => Ok(SegmentKind::Image),
            3 => Ok(SegmentKind::Merged),
            _ => Err(FormatError::corrupt(WHAT, format!("unknown kind {v}"))),
        }
    }

    /// Lower-case name for APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            SegmentKind::Delta => "delta",
            SegmentKind::Fence => "fence",
            SegmentKind::Image => "image",
            SegmentKind::Merged => "merged",
        }
    }
}

/// The site and ownership generation that wrote a segment.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct WriterId {
    /// Site id of the writer.
    pub site: String,
    /// Ownership generation the writer held.
    pub generation: u64,
}

/// A named point written by the protected site.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Marker {
    /// The marker's name.
    pub name: String,
    /// Whether the protected site vouches for this point (application-consistent, tested).
    pub known_good: bool,
}

/// A chunk of a disk's data stream, in stream order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkRef {
    /// BLAKE3 of the uncompressed bytes.
    pub hash: ChunkHash,
    /// Uncompressed length.
    pub len: u32,
}

/// What one segment changed on one disk.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct DiskDelta {
    /// Index of the disk in the domain record.
    pub disk: u32,
    /// Blocks whose new content is in `chunks`, in ascending block order.
    pub written: RoaringBitmap,
    /// Blocks that became all zero; they store no data.
    pub zeroed: RoaringBitmap,
    /// The data stream of the written blocks, cut into chunks.
    pub chunks: Vec<ChunkRef>,
}

impl DiskDelta {
    /// Bytes in the stream: one block per written block.
    pub fn stream_len(&self) -> u64 {
        self.written.len() * BLOCK_SIZE as u64
    }
}

/// One log entry: the state of the domain after it is a point.
#[derive(Clone, Debug, PartialEq)]
pub struct Segment {
    /// Domain it belongs to (guards against misplaced objects).
    pub domain: String,
    /// Position in the log.
    pub seq: u64,
    /// What it holds.
    pub kind: SegmentKind,
    /// Who wrote it.
    pub writer: WriterId,
    /// Capture time of the earliest write (unix nanoseconds).
    pub time_start: i64,
    /// Capture time of the point: the latest write or the seal time (unix nanoseconds).
    pub time_end: i64,
    /// Markers that name this point.
    pub markers: Vec<Marker>,
    /// Packs uploaded for this segment; the chunks it adds live there.
    pub new_packs: Vec<PackId>,
    /// Per-disk changes, in ascending disk order, each disk at most once.
    pub disks: Vec<DiskDelta>,
}

impl Segment {
    /// Checks the rules every segment obeys; `encode` and `decode` both call it.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| FormatError::Invalid(format!("segment {}: {m}", self.seq));
        validate_name("domain", &self.domain)?;
        if self.time_end < self.time_start {
            return Err(bad("time range ends before it starts".into()));
        }
        for m in &self.markers {
            validate_name("marker", &m.name)?;
        }
        if self.kind == SegmentKind::Merged && !self.markers.is_empty() {
            return Err(bad(
                "a merged run is not a point and carries no markers".into()
            ));
        }
        let mut last_disk = None;
        for d in &self.disks {
            if last_disk.is_some_and(|l| l >= d.disk) {
                return Err(bad("disks not in strictly ascending order".into()));
            }
            last_disk = Some(d.disk);
            if !d.written.is_disjoint(&d.zeroed) {
                return Err(bad(format!(
                    "disk {}: block both written and zeroed",
                    d.disk
                )));
            }
            let chunk_bytes: u64 = d.chunks.iter().map(|c| c.len as u64).sum();
            if chunk_bytes != d.stream_len() {
                return Err(bad(format!(
                    "disk {}: chunks hold {chunk_bytes} bytes but {} blocks are written",
                    d.disk,
                    d.written.len()
                )));
            }
            if d.chunks.iter().any(|c| c.len == 0) {
                return Err(bad(format!("disk {}: empty chunk", d.disk)));
            }
            if self.kind == SegmentKind::Fence && !(d.written.is_empty() && d.zeroed.is_empty()) {
                return Err(bad("a fence segment carries writes".into()));
            }
        }
        Ok(())
    }

    /// Encodes the object.
    pub fn encode(&self) -> Result<Vec<u8>> {
        self.validate()?;
        let mut w = Writer::new();
        w.bytes(MAGIC);
        w.u16(VERSION);
        w.str(&self.domain);
        w.u64(self.seq);
        w.u8(self.kind as u8);
        w.str(&self.writer.site);
        w.u64(self.writer.generation);
        w.i64(self.time_start);
        w.i64(self.time_end);
        w.u32(self.markers.len() as u32);
        for m in &self.markers {
            w.str(&m.name);
            w.u8(m.known_good as u8);
        }
        w.u32(self.new_packs.len() as u32);
        for p in &self.new_packs {
            w.u128(p.0);
        }
        w.u32(self.disks.len() as u32);
        for d in &self.disks {
            w.u32(d.disk);
            w.blob(&bitmap_bytes(&d.written));
            w.blob(&bitmap_bytes(&d.zeroed));
            w.u32(d.chunks.len() as u32);
            for c in &d.chunks {
                w.bytes(&c.hash.0);
                w.u32(c.len);
            }
        }
        let sum = blake3::hash(&w.buf);
        w.bytes(sum.as_bytes());
        Ok(w.buf)
    }

    /// Decodes and verifies an object; any damage is `Corrupt`.
    pub fn decode(data: &[u8]) -> Result<Segment> {
        let body = verify_trailer(data, WHAT)?;
        let mut r = Reader::new(body, WHAT);
        check_header(&mut r, MAGIC, VERSION, WHAT)?;
        let domain = r.str()?;
        let seq = r.u64()?;
        let kind = SegmentKind::from_u8(r.u8()?)?;
        let site = r.str()?;
        let generation = r.u64()?;
        let time_start = r.i64()?;
        let time_end = r.i64()?;
        let n = r.count(5)?;
        let mut markers = Vec::with_capacity(n);
        for _ in 0..n {
            let name = r.str()?;
            let known_good = r.u8()? != 0;
            markers.push(Marker { name, known_good });
        }
        let n = r.count(16)?;
        let mut new_packs = Vec::with_capacity(n);
        for _ in 0..n {
            new_packs.push(PackId(r.u128()?));
        }
        let n = r.count(16)?;
        let mut disks = Vec::with_capacity(n);
        for _ in 0..n {
            let disk = r.u32()?;
            let written = bitmap_from(r.blob()?)?;
            let zeroed = bitmap_from(r.blob()?)?;
            let nc = r.count(36)?;
            let mut chunks = Vec::with_capacity(nc);
            for _ in 0..nc {
                let hash = ChunkHash(r.hash()?);
                let len = r.u32()?;
                chunks.push(ChunkRef { hash, len });
            }
            disks.push(DiskDelta {
                disk,
                written,
                zeroed,
                chunks,
            });
        }
        r.finish()?;
        let seg = Segment {
            domain,
            seq,
            kind,
            writer: WriterId { site, generation },
            time_start,
            time_end,
            markers,
            new_packs,
            disks,
        };
        // A checksummed object that breaks the rules was written wrongly: still corrupt.
        seg.validate()
            .map_err(|e| FormatError::corrupt(WHAT, e.to_string()))?;
        Ok(seg)
    }

    /// Decodes the object stored as `domain`'s segment `seq`; an object that decodes but
    /// belongs elsewhere (another domain or seq) is `Corrupt` too.
    pub fn decode_at(data: &[u8], domain: &str, seq: u64) -> Result<Segment> {
        let seg = Segment::decode(data)?;
        if seg.domain != domain || seg.seq != seq {
            return Err(FormatError::corrupt(
                WHAT,
                format!(
                    "stored as {domain}/{seq} but holds {}/{}",
                    seg.domain, seg.seq
                ),
            ));
        }
        Ok(seg)
    }
}

/// Serialized form of a bitmap (the portable roaring format).
pub fn bitmap_bytes(b: &RoaringBitmap) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.serialized_size());
    // Writing into a Vec cannot fail.
    let _ = b.serialize_into(&mut out);
    out
}

/// Parses a serialized bitmap; malformed input is `Corrupt`.
pub fn bitmap_from(data: &[u8]) -> Result<RoaringBitmap> {
    RoaringBitmap::deserialize_from(data).map_err(|e| FormatError::corrupt("bitmap", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Segment {
        let mut written = RoaringBitmap::new();
        written.insert_range(10..14);
        let mut zeroed = RoaringBitmap::new();
        zeroed.insert(3);
        Segment {
            domain: "web".into(),
            seq: 7,
            kind: SegmentKind::Delta,
            writer: WriterId {
                site: "site-a".into(),
                generation: 2,
            },
            time_start: 1_000,
            time_end: 2_000,
            markers: vec![Marker {
                name: "app-ok".into(),
                known_good: true,
            }],
            new_packs: vec![PackId(42)],
            disks: vec![DiskDelta {
                disk: 0,
                written,
                zeroed,
                chunks: vec![
                    ChunkRef {
                        hash: ChunkHash::of(b"a"),
                        len: 8192,
                    },
                    ChunkRef {
                        hash: ChunkHash::of(b"b"),
                        len: 8192,
                    },
                ],
            }],
        }
    }

    #[test]
    fn roundtrip() {
        let s = sample();
        let bytes = s.encode().expect("encode");
        assert_eq!(Segment::decode(&bytes).expect("decode"), s);
    }

    #[test]
    fn every_flipped_byte_and_every_truncation_is_corrupt() {
        let bytes = sample().encode().expect("encode");
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(
                matches!(Segment::decode(&b), Err(FormatError::Corrupt { .. })),
                "flip at {i}"
            );
            assert!(Segment::decode(&bytes[..i]).is_err(), "truncated to {i}");
        }
    }

    #[test]
    fn misplaced_segments_are_corrupt() {
        let bytes = sample().encode().expect("encode");
        assert!(Segment::decode_at(&bytes, "web", 7).is_ok());
        for (domain, seq) in [("web", 8), ("db", 7)] {
            assert!(matches!(
                Segment::decode_at(&bytes, domain, seq),
                Err(FormatError::Corrupt { .. })
            ));
        }
    }

    #[test]
    fn inconsistent_segments_are_refused() {
        let mut s = sample();
        s.disks[0].chunks.pop();
        assert!(matches!(s.encode(), Err(FormatError::Invalid(_))));
        let mut s = sample();
        s.disks[0].zeroed.insert(10);
        assert!(s.encode().is_err());
    }
}
