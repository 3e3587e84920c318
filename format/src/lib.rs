//! What tidemark stores, byte for byte: segments, packs, and the domain and owner
//! records; encode, decode and verify. No I/O, so every decoder can be fuzzed.
//!
//! Every object carries a magic, a format version and a BLAKE3 checksum. Decoding a
//! truncated or altered object returns [`FormatError::Corrupt`], never a panic and
//! never wrong data.

mod codec;
pub mod keys;
pub mod manifest;
pub mod names;
pub mod pack;
pub mod record;
pub mod segment;

pub use manifest::{Manifest, SegmentVersion};
pub use pack::{ChunkCodec, PackEntry, PackFooter, PackWriter, PACK_FOOTER_LEN};
pub use record::{DiskSpec, DomainRecord, LeaseRecord, OwnerRecord, RetentionPolicy};
pub use segment::{ChunkRef, DiskDelta, Marker, Segment, SegmentKind, WriterId};

/// Size of a disk block in bytes; writes are multiples of it and bitmaps count blocks.
pub const BLOCK_SIZE: u32 = 4096;

/// Largest disk tidemark protects: block numbers must fit the 32-bit roaring bitmaps.
pub const MAX_DISK_BYTES: u64 = (u32::MAX as u64) * BLOCK_SIZE as u64;

/// BLAKE3 name of a chunk's uncompressed content.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkHash(pub [u8; 32]);

impl ChunkHash {
    /// Names `data`.
    pub fn of(data: &[u8]) -> Self {
        ChunkHash(*blake3::hash(data).as_bytes())
    }
    /// Lower-case hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl std::fmt::Debug for ChunkHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", &self.to_hex()[..16])
    }
}

/// Identity of a pack object (random, 128 bits).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct PackId(pub u128);

impl std::fmt::Display for PackId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// Errors of decoding and validating stored objects.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The object is damaged: bad magic, checksum, truncation or inconsistent content.
    #[error("corrupt {what}: {reason}")]
    Corrupt { what: String, reason: String },
    /// The object was written by a newer tidemark.
    #[error("{what} has format version {found}; this build reads version {supported}")]
    UnsupportedVersion {
        what: String,
        found: u16,
        supported: u16,
    },
    /// A value to be encoded breaks a rule (a name, a size, an inconsistent segment).
    #[error("invalid {0}")]
    Invalid(String),
}

impl FormatError {
    pub(crate) fn corrupt(what: impl Into<String>, reason: impl Into<String>) -> Self {
        FormatError::Corrupt {
            what: what.into(),
            reason: reason.into(),
        }
    }
}

/// Result type of this crate.
pub type Result<T, E = FormatError> = std::result::Result<T, E>;
