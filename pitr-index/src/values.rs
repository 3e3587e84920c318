//! Value encodings of the index. Small fixed binary layouts for the hot families,
//! JSON for segment metadata (read rarely, easy to inspect).

use roaring::RoaringBitmap;
use serde::{Deserialize, Serialize};
use tidemark_format::segment::{bitmap_bytes, bitmap_from};
use tidemark_format::{ChunkCodec, ChunkHash, ChunkRef, PackId, Segment};

use crate::{IndexError, Result};

fn corrupt(what: &str) -> IndexError {
    IndexError::Corrupt(format!("{what} value"))
}

pub(crate) fn decode_i64(v: &[u8]) -> i64 {
    v.try_into().map(i64::from_le_bytes).unwrap_or(0)
}

pub(crate) fn encode_bitmaps(written: &RoaringBitmap, zeroed: &RoaringBitmap) -> Vec<u8> {
    let w = bitmap_bytes(written);
    let mut out = Vec::with_capacity(4 + w.len() + zeroed.serialized_size());
    out.extend_from_slice(&(w.len() as u32).to_le_bytes());
    out.extend_from_slice(&w);
    out.extend_from_slice(&bitmap_bytes(zeroed));
    out
}

pub(crate) fn decode_bitmaps(v: &[u8]) -> Result<(RoaringBitmap, RoaringBitmap)> {
    let (w, z) = split_bitmaps(v)?;
    Ok((bitmap_from(w)?, bitmap_from(z)?))
}

/// The serialized `written` and `zeroed` bitmaps of a value of `bitmaps`.
pub(crate) fn split_bitmaps(v: &[u8]) -> Result<(&[u8], &[u8])> {
    let n = v
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| corrupt("bitmap"))? as usize;
    let w = v.get(4..4 + n).ok_or_else(|| corrupt("bitmap"))?;
    Ok((w, &v[4 + n..]))
}

pub(crate) fn encode_stream(chunks: &[ChunkRef]) -> Vec<u8> {
    let mut out = Vec::with_capacity(chunks.len() * 36);
    for c in chunks {
        out.extend_from_slice(&c.hash.0);
        out.extend_from_slice(&c.len.to_le_bytes());
    }
    out
}

pub(crate) fn decode_stream(v: &[u8]) -> Result<Vec<ChunkRef>> {
    if !v.len().is_multiple_of(36) {
        return Err(corrupt("stream"));
    }
    Ok(v.chunks_exact(36)
        .map(|e| {
            let mut hash = [0u8; 32];
            hash.copy_from_slice(&e[..32]);
            let mut len = [0u8; 4];
            len.copy_from_slice(&e[32..]);
            ChunkRef {
                hash: ChunkHash(hash),
                len: u32::from_le_bytes(len),
            }
        })
        .collect())
}

/// Where a chunk's frame is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkLocation {
    /// The pack holding it.
    pub pack: PackId,
    /// Offset of the frame in the pack.
    pub offset: u64,
    /// Frame length.
    pub clen: u32,
    /// Content length.
    pub ulen: u32,
    /// Frame encoding.
    pub codec: ChunkCodec,
}

impl ChunkLocation {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(33);
        out.extend_from_slice(&self.pack.0.to_le_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.clen.to_le_bytes());
        out.extend_from_slice(&self.ulen.to_le_bytes());
        out.push(self.codec as u8);
        out
    }

    pub(crate) fn decode(v: &[u8]) -> Result<Self> {
        if v.len() != 33 {
            return Err(corrupt("chunk location"));
        }
        let u32_at = |i: usize| u32::from_le_bytes([v[i], v[i + 1], v[i + 2], v[i + 3]]);
        let mut p = [0u8; 16];
        p.copy_from_slice(&v[..16]);
        let mut o = [0u8; 8];
        o.copy_from_slice(&v[16..24]);
        let codec = match v[32] {
            0 => ChunkCodec::Raw,
            1 => ChunkCodec::Zstd,
            _ => return Err(corrupt("chunk codec")),
        };
        Ok(ChunkLocation {
            pack: PackId(u128::from_le_bytes(p)),
            offset: u64::from_le_bytes(o),
            clen: u32_at(24),
            ulen: u32_at(28),
            codec,
        })
    }
}

/// What the index knows of a pack object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackInfo {
    /// Object size.
    pub size: u64,
    /// Length of its tail (index + footer), fetched to verify it before reading chunks.
    pub tail_len: u64,
    /// Number of chunks in it.
    pub chunks: u32,
}

impl PackInfo {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(20);
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.tail_len.to_le_bytes());
        out.extend_from_slice(&self.chunks.to_le_bytes());
        out
    }

    pub(crate) fn decode(v: &[u8]) -> Result<Self> {
        if v.len() != 20 {
            return Err(corrupt("pack"));
        }
        let mut a = [0u8; 8];
        a.copy_from_slice(&v[..8]);
        let mut b = [0u8; 8];
        b.copy_from_slice(&v[8..16]);
        let mut c = [0u8; 4];
        c.copy_from_slice(&v[16..20]);
        Ok(PackInfo {
            size: u64::from_le_bytes(a),
            tail_len: u64::from_le_bytes(b),
            chunks: u32::from_le_bytes(c),
        })
    }
}

/// A marker as the index keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkerMeta {
    /// Name.
    pub name: String,
    /// Vouched for by the protected site.
    pub known_good: bool,
}

/// Per-disk figures of a segment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskStat {
    /// Disk index.
    pub disk: u32,
    /// Blocks with data.
    pub written_blocks: u64,
    /// Blocks zeroed.
    pub zeroed_blocks: u64,
}

/// What the index keeps of a segment: enough to list points without the bucket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentMeta {
    /// Seq.
    pub seq: u64,
    /// `delta`, `fence` or `image`.
    pub kind: String,
    /// Earliest capture time, unix ns.
    pub time_start: i64,
    /// The point's time, unix ns.
    pub time_end: i64,
    /// Writer site.
    pub site: String,
    /// Writer's ownership generation.
    pub generation: u64,
    /// Markers naming this point.
    pub markers: Vec<MarkerMeta>,
    /// Per-disk figures.
    pub disks: Vec<DiskStat>,
    /// Size of the segment object.
    pub object_size: u64,
    /// Bytes of packs uploaded for it.
    pub stored_bytes: u64,
    /// Packs uploaded for it.
    pub new_packs: Vec<String>,
    /// The GC epoch that wrote its object (0: ingest's object).
    #[serde(default)]
    pub epoch: u64,
    /// GC did not retain it but left its object in place: no longer a point.
    #[serde(default)]
    pub demoted: bool,
}

impl SegmentMeta {
    pub(crate) fn from_segment(
        seg: &Segment,
        epoch: u64,
        object_size: u64,
        stored_bytes: u64,
    ) -> Self {
        SegmentMeta {
            seq: seg.seq,
            kind: seg.kind.as_str().to_owned(),
            time_start: seg.time_start,
            time_end: seg.time_end,
            site: seg.writer.site.clone(),
            generation: seg.writer.generation,
            markers: seg
                .markers
                .iter()
                .map(|m| MarkerMeta {
                    name: m.name.clone(),
                    known_good: m.known_good,
                })
                .collect(),
            disks: seg
                .disks
                .iter()
                .map(|d| DiskStat {
                    disk: d.disk,
                    written_blocks: d.written.len(),
                    zeroed_blocks: d.zeroed.len(),
                })
                .collect(),
            object_size,
            stored_bytes,
            new_packs: seg.new_packs.iter().map(PackId::to_string).collect(),
            epoch,
            demoted: false,
        }
    }

    /// Whether it is a recoverable point (merged runs and demoted segments are not).
    pub fn is_point(&self) -> bool {
        self.kind != "merged" && !self.demoted
    }

    /// Makes it no point: GC did not retain it but left its blocks in place.
    pub(crate) fn demote(&mut self) {
        self.demoted = true;
        self.markers.clear();
    }

    /// The packs uploaded for it.
    pub fn pack_ids(&self) -> Result<Vec<PackId>> {
        self.new_packs
            .iter()
            .map(|h| {
                u128::from_str_radix(h, 16)
                    .map(PackId)
                    .map_err(|_| corrupt("segment pack id"))
            })
            .collect()
    }

    /// Bytes written by the protected site in this segment (data plus zeroed blocks).
    pub fn logical_bytes(&self) -> u64 {
        self.disks
            .iter()
            .map(|d| (d.written_blocks + d.zeroed_blocks) * tidemark_format::BLOCK_SIZE as u64)
            .sum()
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        // Serializing plain data to a Vec cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub(crate) fn decode(v: &[u8]) -> Result<Self> {
        serde_json::from_slice(v).map_err(|_| corrupt("segment"))
    }
}
