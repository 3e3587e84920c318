//! The pack: many compressed chunks followed by an index of them.
//!
//! Layout: chunk frames back to back, then the index (`entry_count` entries of
//! `hash[32] offset u64 clen u32 ulen u32 codec u8`), then a fixed footer:
//! `index_offset u64, index_len u32, pack_id u128, entry_count u32, data_checksum[32],
//! version u16, tail_checksum[32], magic "TDMKPCK\0"`. The magic sits at the end so a
//! reader needs one ranged read of the tail. `tail_checksum` covers index and footer
//! fields, `data_checksum` the frames; each chunk is verified again by its name.

use std::cell::RefCell;

use crate::codec::{Reader, Writer};
use crate::{ChunkHash, FormatError, PackId, Result};

const MAGIC: &[u8; 8] = b"TDMKPCK\0";
const VERSION: u16 = 1;
const WHAT: &str = "pack";
const ENTRY_LEN: usize = 32 + 8 + 4 + 4 + 1;
/// Length of the fixed footer at the end of every pack.
pub const PACK_FOOTER_LEN: usize = 8 + 4 + 16 + 4 + 32 + 2 + 32 + 8;

/// How a chunk's bytes are stored in its frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkCodec {
    /// Stored as is (used when compression would not save space).
    Raw = 0,
    /// One zstd frame.
    Zstd = 1,
}

/// Where one chunk sits inside a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackEntry {
    /// Name of the uncompressed content.
    pub hash: ChunkHash,
    /// Offset of the frame in the pack.
    pub offset: u64,
    /// Length of the frame.
    pub clen: u32,
    /// Length of the content.
    pub ulen: u32,
    /// Frame encoding.
    pub codec: ChunkCodec,
}

/// The fixed footer of a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackFooter {
    /// Where the index starts (= length of the frame area).
    pub index_offset: u64,
    /// Length of the index.
    pub index_len: u32,
    /// The pack's own id (guards against misplaced objects).
    pub pack_id: PackId,
    /// Number of index entries.
    pub entry_count: u32,
    /// BLAKE3 of the frame area.
    pub data_checksum: [u8; 32],
}

impl PackFooter {
    /// Length of the pack's tail (index + footer), which one ranged read fetches.
    pub fn tail_len(&self) -> u64 {
        self.index_len as u64 + PACK_FOOTER_LEN as u64
    }

    /// Parses the last [`PACK_FOOTER_LEN`] bytes of a pack of `object_size` bytes. The
    /// result is only trusted after [`parse_tail`] verified it together with the index.
    pub fn decode(footer: &[u8], object_size: u64) -> Result<PackFooter> {
        if footer.len() != PACK_FOOTER_LEN {
            return Err(FormatError::corrupt(WHAT, "footer truncated"));
        }
        if &footer[PACK_FOOTER_LEN - 8..] != MAGIC {
            return Err(FormatError::corrupt(WHAT, "bad magic"));
        }
        let mut r = Reader::new(footer, WHAT);
        let index_offset = r.u64()?;
        let index_len = r.u32()?;
        let pack_id = PackId(r.u128()?);
        let entry_count = r.u32()?;
        let data_checksum = r.hash()?;
        let version = r.u16()?;
        if version != VERSION {
            return Err(FormatError::UnsupportedVersion {
                what: WHAT.into(),
                found: version,
                supported: VERSION,
            });
        }
        let f = PackFooter {
            index_offset,
            index_len,
            pack_id,
            entry_count,
            data_checksum,
        };
        let expected_size = index_offset
            .checked_add(f.tail_len())
            .ok_or_else(|| FormatError::corrupt(WHAT, "footer offsets overflow"))?;
        if expected_size != object_size || index_len as usize != entry_count as usize * ENTRY_LEN {
            return Err(FormatError::corrupt(
                WHAT,
                "footer does not match the object size",
            ));
        }
        Ok(f)
    }
}

/// Verifies a pack's tail (index + footer, as fetched by one ranged read from
/// `object_size - tail_len`) and returns its footer and index.
pub fn parse_tail(
    tail: &[u8],
    object_size: u64,
    expected: PackId,
) -> Result<(PackFooter, Vec<PackEntry>)> {
    if tail.len() < PACK_FOOTER_LEN {
        return Err(FormatError::corrupt(WHAT, "tail truncated"));
    }
    let footer = PackFooter::decode(&tail[tail.len() - PACK_FOOTER_LEN..], object_size)?;
    if tail.len() as u64 != footer.tail_len() {
        return Err(FormatError::corrupt(
            WHAT,
            "tail length does not match the footer",
        ));
    }
    let covered = tail.len() - 40;
    if blake3::hash(&tail[..covered]).as_bytes() != &tail[covered..covered + 32] {
        return Err(FormatError::corrupt(WHAT, "index checksum mismatch"));
    }
    if footer.pack_id != expected {
        return Err(FormatError::corrupt(
            WHAT,
            format!("object {expected} holds pack {}", footer.pack_id),
        ));
    }
    let mut r = Reader::new(&tail[..footer.index_len as usize], WHAT);
    let mut entries = Vec::with_capacity(footer.entry_count as usize);
    for _ in 0..footer.entry_count {
        let hash = ChunkHash(r.hash()?);
        let offset = r.u64()?;
        let clen = r.u32()?;
        let ulen = r.u32()?;
        let codec = match r.u8()? {
            0 => ChunkCodec::Raw,
            1 => ChunkCodec::Zstd,
            c => return Err(FormatError::corrupt(WHAT, format!("unknown codec {c}"))),
        };
        if offset + clen as u64 > footer.index_offset {
            return Err(FormatError::corrupt(
                WHAT,
                "index entry points past the frames",
            ));
        }
        entries.push(PackEntry {
            hash,
            offset,
            clen,
            ulen,
            codec,
        });
    }
    Ok((footer, entries))
}

/// Verifies a whole pack object (frames, index, footer) and returns its index.
pub fn verify_pack(data: &[u8], expected: PackId) -> Result<Vec<PackEntry>> {
    if data.len() < PACK_FOOTER_LEN {
        return Err(FormatError::corrupt(WHAT, "truncated"));
    }
    let footer = PackFooter::decode(&data[data.len() - PACK_FOOTER_LEN..], data.len() as u64)?;
    let (footer, entries) = parse_tail(
        &data[footer.index_offset as usize..],
        data.len() as u64,
        expected,
    )?;
    let frames = &data[..footer.index_offset as usize];
    if blake3::hash(frames).as_bytes() != &footer.data_checksum {
        return Err(FormatError::corrupt(WHAT, "data checksum mismatch"));
    }
    let mut buf = Vec::new();
    for e in &entries {
        let frame = &frames[e.offset as usize..(e.offset + e.clen as u64) as usize];
        decode_chunk_into(frame, e.codec, e.ulen, e.hash, &mut buf)?;
    }
    Ok(entries)
}

/// Compresses one chunk for a pack; keeps it raw when zstd would not save ≥ 2%.
pub fn encode_chunk(data: &[u8], level: i32) -> (ChunkCodec, Vec<u8>) {
    match zstd::bulk::compress(data, level) {
        Ok(c) if c.len() < data.len() - data.len() / 50 => (ChunkCodec::Zstd, c),
        _ => (ChunkCodec::Raw, data.to_vec()),
    }
}

/// Decodes one frame and checks it against its name; any mismatch is `Corrupt`.
pub fn decode_chunk(
    frame: &[u8],
    codec: ChunkCodec,
    ulen: u32,
    hash: ChunkHash,
) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    decode_chunk_into(frame, codec, ulen, hash, &mut buf)?;
    Ok(match codec {
        ChunkCodec::Raw => frame.to_vec(),
        ChunkCodec::Zstd => buf,
    })
}

thread_local! {
    /// One decompression context per thread: creating one costs as much as decoding a
    /// small chunk, and restores decode hundreds of thousands.
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

/// Decodes one frame into `buf` (reusing its allocation) and checks it against its
/// name; any mismatch is `Corrupt`. Returns the chunk: a raw frame itself, uncopied,
/// else what `buf` now holds.
pub fn decode_chunk_into<'a>(
    frame: &'a [u8],
    codec: ChunkCodec,
    ulen: u32,
    hash: ChunkHash,
    buf: &'a mut Vec<u8>,
) -> Result<&'a [u8]> {
    let corrupt =
        |e: std::io::Error| FormatError::corrupt("chunk", format!("{}: {e}", hash.to_hex()));
    let data: &[u8] = match codec {
        ChunkCodec::Raw => {
            buf.clear();
            frame
        }
        ChunkCodec::Zstd => {
            buf.clear();
            buf.reserve(ulen as usize);
            DECOMPRESSOR.with(|cell| {
                let mut cell = cell.borrow_mut();
                let d = match cell.as_mut() {
                    Some(d) => d,
                    None => cell.insert(zstd::bulk::Decompressor::new().map_err(corrupt)?),
                };
                d.decompress_to_buffer(frame, buf).map_err(corrupt)
            })?;
            buf
        }
    };
    if data.len() != ulen as usize || ChunkHash::of(data) != hash {
        return Err(FormatError::corrupt(
            "chunk",
            format!("{} does not match its name", hash.to_hex()),
        ));
    }
    Ok(data)
}

/// Builds one pack in memory.
#[derive(Debug)]
pub struct PackWriter {
    id: PackId,
    frames: Vec<u8>,
    entries: Vec<PackEntry>,
}

impl PackWriter {
    /// Starts an empty pack.
    pub fn new(id: PackId) -> Self {
        Self::with_capacity(id, 0)
    }

    /// Starts an empty pack with room for `frame_bytes` of frames and a tail that
    /// indexes frames of 4 KiB on average, so that filling and sealing it do not move
    /// the frames (a large pack would otherwise be copied once per doubling).
    pub fn with_capacity(id: PackId, frame_bytes: usize) -> Self {
        Self::in_buffer(id, Vec::new(), frame_bytes)
    }

    /// As `with_capacity`, in `buf` (cleared): the bytes of an earlier pack, whose
    /// memory is already mapped, so that filling this one takes no page faults.
    pub fn in_buffer(id: PackId, mut buf: Vec<u8>, frame_bytes: usize) -> Self {
        buf.clear();
        buf.reserve(frame_bytes + frame_bytes / 4096 * ENTRY_LEN + PACK_FOOTER_LEN);
        PackWriter {
            id,
            frames: buf,
            entries: Vec::new(),
        }
    }

    /// The pack's id.
    pub fn id(&self) -> PackId {
        self.id
    }

    /// Bytes of frames so far.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether no chunk was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends a frame and returns where it went.
    pub fn push(
        &mut self,
        hash: ChunkHash,
        ulen: u32,
        codec: ChunkCodec,
        frame: &[u8],
    ) -> PackEntry {
        let e = PackEntry {
            hash,
            offset: self.frames.len() as u64,
            clen: frame.len() as u32,
            ulen,
            codec,
        };
        self.frames.extend_from_slice(frame);
        self.entries.push(e);
        e
    }

    /// Seals the pack: returns the object bytes and its index.
    pub fn finish(self) -> (Vec<u8>, Vec<PackEntry>) {
        let data_checksum = *blake3::hash(&self.frames).as_bytes();
        let index_offset = self.frames.len() as u64;
        let mut w = Writer { buf: self.frames };
        for e in &self.entries {
            w.bytes(&e.hash.0);
            w.u64(e.offset);
            w.u32(e.clen);
            w.u32(e.ulen);
            w.u8(e.codec as u8);
        }
        let index_len = (w.buf.len() as u64 - index_offset) as u32;
        w.u64(index_offset);
        w.u32(index_len);
        w.u128(self.id.0);
        w.u32(self.entries.len() as u32);
        w.bytes(&data_checksum);
        w.u16(VERSION);
        let tail_sum = blake3::hash(&w.buf[index_offset as usize..]);
        w.bytes(tail_sum.as_bytes());
        w.bytes(MAGIC);
        (w.buf, self.entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Vec<u8>, Vec<PackEntry>, Vec<Vec<u8>>) {
        let chunks: Vec<Vec<u8>> = vec![b"hello hello hello hello hello hello".repeat(100), {
            // xorshift: incompressible, so the chunk is stored raw.
            let mut x: u64 = 0x9e3779b97f4a7c15;
            (0..5000)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 56) as u8
                })
                .collect()
        }];
        let (bytes, entries) = fill(PackWriter::new(PackId(9)), &chunks);
        (bytes, entries, chunks)
    }

    fn fill(mut w: PackWriter, chunks: &[Vec<u8>]) -> (Vec<u8>, Vec<PackEntry>) {
        for c in chunks {
            let (codec, frame) = encode_chunk(c, 3);
            w.push(ChunkHash::of(c), c.len() as u32, codec, &frame);
        }
        w.finish()
    }

    /// A pack built in the buffer of an earlier one (longer, with other bytes) is the
    /// same pack, in the same memory.
    #[test]
    fn pack_in_a_used_buffer_is_the_same_pack() {
        let (bytes, entries, chunks) = sample();
        let mut used = vec![0xa5u8; bytes.len() * 3];
        used.truncate(bytes.len() * 2);
        let at = used.as_ptr();
        let (again, again_entries) = fill(PackWriter::in_buffer(PackId(9), used, 1024), &chunks);
        assert_eq!(again, bytes);
        assert_eq!(again_entries, entries);
        assert_eq!(again.as_ptr(), at, "the buffer was big enough: not moved");
    }

    #[test]
    fn roundtrip_via_tail_and_whole() {
        let (bytes, entries, chunks) = sample();
        assert_eq!(entries[0].codec, ChunkCodec::Zstd);
        assert_eq!(entries[1].codec, ChunkCodec::Raw);
        let footer =
            PackFooter::decode(&bytes[bytes.len() - PACK_FOOTER_LEN..], bytes.len() as u64)
                .expect("footer");
        let tail = &bytes[bytes.len() - footer.tail_len() as usize..];
        let (_, idx) = parse_tail(tail, bytes.len() as u64, PackId(9)).expect("tail");
        assert_eq!(idx, entries);
        assert_eq!(verify_pack(&bytes, PackId(9)).expect("verify"), entries);
        for (e, c) in entries.iter().zip(&chunks) {
            let frame = &bytes[e.offset as usize..][..e.clen as usize];
            assert_eq!(
                &decode_chunk(frame, e.codec, e.ulen, e.hash).expect("chunk"),
                c
            );
        }
        assert!(matches!(
            verify_pack(&bytes, PackId(10)),
            Err(FormatError::Corrupt { .. })
        ));
    }

    #[test]
    fn every_flipped_byte_and_truncation_is_detected() {
        let (bytes, _, _) = sample();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            assert!(verify_pack(&b, PackId(9)).is_err(), "flip at {i}");
            assert!(
                verify_pack(&bytes[..i], PackId(9)).is_err(),
                "truncated to {i}"
            );
        }
    }
}
