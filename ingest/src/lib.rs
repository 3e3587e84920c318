//! The write path of tidemark (DESIGN.md section 5): writes are batched into segments,
//! each disk's stream of written blocks is cut by FastCDC, chunks are named by BLAKE3,
//! deduplicated against the domain, compressed in parallel into packs, and committed
//! by the protocol packs → create-only segment → index → acknowledge.
//!
//! Also here: the capture agent that protects image files or block devices
//! ([`agent::protect`]).

pub mod agent;
mod builder;
mod chunker;
mod commit;
mod compress;
pub mod domain;
mod extents;
mod image_blocks;
pub mod owner;
mod packer;
mod packs;
mod scan;
mod uploader;
pub mod writer;

use std::sync::Arc;
use std::time::Duration;

use tidemark_format::FormatError;
use tidemark_objstore::{DynStore, StoreError};
use tidemark_pitr_index::{Index, IndexError};

pub use builder::BuiltSegment;
pub use commit::{CommittedPoint, FailPoint};
pub use image_blocks::{build_image_blocks, ImageBlocks};
pub use writer::{DomainWriter, Write};

/// Tuning of the write path; the defaults are DESIGN.md's.
#[derive(Clone, Debug)]
pub struct IngestConfig {
    /// Seal the open segment when its oldest write is this old (the RPO knob).
    pub seal_age: Duration,
    /// Seal the open segment when it holds this many bytes.
    pub seal_bytes: u64,
    /// FastCDC minimum chunk size.
    pub chunk_min: u32,
    /// FastCDC average chunk size.
    pub chunk_avg: u32,
    /// FastCDC maximum chunk size.
    pub chunk_max: u32,
    /// zstd level for new chunks (the service's `ingest.zstd_level`). The default, 2,
    /// is the fastest on text-like 64 KiB chunks (267 MB/s per core against 214 MB/s
    /// for 3, and 250 MB/s for 1) for frames 3.5% larger than level 3's; zstd
    /// compression is most of a full protect's CPU time. Level 3 stores about 1% less
    /// of a VM image at about 15% more protect time.
    pub zstd_level: i32,
    /// A pack is sealed once its frames reach this size (at most 64 MiB).
    pub pack_bytes: usize,
    /// Packs uploaded at once.
    pub upload_concurrency: usize,
    /// Test hook: stop the commit protocol at a step, as a crash would.
    pub fail_at: Option<FailPoint>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            seal_age: Duration::from_secs(2),
            seal_bytes: 64 << 20,
            chunk_min: 16 << 10,
            chunk_avg: 64 << 10,
            chunk_max: 256 << 10,
            zstd_level: 2,
            pack_bytes: 64 << 20,
            upload_concurrency: 4,
            fail_at: None,
        }
    }
}

/// What the write path works with: the store, the index, tuning, and who we are.
#[derive(Clone, Debug)]
pub struct IngestContext {
    /// The bucket.
    pub store: DynStore,
    /// The local index.
    pub index: Arc<Index>,
    /// Tuning.
    pub config: IngestConfig,
    /// This site's id: who claims ownership of the domains written to.
    pub site: String,
}

/// Errors of the write path, by what a caller can do about them.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// A write or request breaks a rule (misaligned, out of range, bad name); nothing
    /// was changed.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// The domain does not exist.
    #[error("unknown domain {0:?}")]
    UnknownDomain(String),
    /// The request contradicts what is stored (e.g. a disk of another size).
    #[error("conflict: {0}")]
    Conflict(String),
    /// Another writer of the same ownership committed this seq first.
    #[error("seq {seq} of domain {domain} was committed by another writer")]
    SeqTaken { domain: String, seq: u64 },
    /// Another site owns the domain (it took over, or never handed it to this site):
    /// this writer must stop; it may still read the domain.
    #[error(
        "domain {domain} is owned by site {owner} (generation {generation}); this writer is fenced"
    )]
    Fenced {
        domain: String,
        owner: String,
        generation: u64,
    },
    /// A stored object is damaged.
    #[error("corrupt object {key}: {source}")]
    Corrupt {
        key: String,
        #[source]
        source: FormatError,
    },
    /// The object store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The index failed.
    #[error(transparent)]
    Index(IndexError),
    /// Reading a protected disk failed.
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A test hook stopped the commit protocol.
    #[error("injected failure at {0:?}")]
    Injected(FailPoint),
}

impl From<IndexError> for IngestError {
    fn from(e: IndexError) -> Self {
        match e {
            IndexError::UnknownDomain(d) => IngestError::UnknownDomain(d),
            IndexError::CorruptObject { key, source } => IngestError::Corrupt { key, source },
            IndexError::Store(s) => IngestError::Store(s),
            other => IngestError::Index(other),
        }
    }
}

impl From<FormatError> for IngestError {
    fn from(e: FormatError) -> Self {
        match e {
            FormatError::Invalid(m) => IngestError::Invalid(m),
            other => IngestError::Corrupt {
                key: String::new(),
                source: other,
            },
        }
    }
}

/// Result type of this crate.
pub type Result<T, E = IngestError> = std::result::Result<T, E>;

/// Current time in unix nanoseconds.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}
