//! Rehydration (DESIGN.md section 8): a restore plan becomes ranged reads of packs,
//! fetched concurrently (tokio, bounded), decompressed and verified on all cores
//! (rayon), and written in place with positional writes. Zero blocks stay holes.
//!
//! Nothing unverified reaches an image: every chunk is checked against its BLAKE3
//! name, every pack's index is verified before its chunks are trusted, and every
//! segment the plan reads from is fetched and checked against the index.
//!
//! A restore may be resumable (a journal beside the partial image records the blocks
//! that are durable, so an interrupted restore fetches only the rest) and throttled
//! (pack reads paced to a rate).
//!
//! An existing image is moved from one point to another at the cost of what changed
//! ([`update_image`]: warm replicas, rollback), and copied cheaply ([`clone_image`]).

mod fetch;
mod holes;
pub mod image;
mod pace;
pub mod placement;
pub mod restore;
mod resume;
pub mod update;
pub mod verify;
mod writeback;
mod written;

use tidemark_format::FormatError;
use tidemark_objstore::StoreError;
use tidemark_pitr_index::IndexError;

pub use fetch::{coalesce, ChunkJob, RangeRead};
pub use image::{clone_image, CloneMethod};
pub use restore::{restore_disk, RestoreOptions, RestoreProgress, RestoreReport};
pub use resume::discard_partial;
pub use update::{update_image, write_blocks, UpdateReport};

/// Errors of rehydration, by what a caller can do about them.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The request is wrong (unknown disk, bad target).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// A stored object is damaged, missing, or disagrees with the index.
    #[error("corrupt object {key}: {reason}")]
    Corrupt { key: String, reason: String },
    /// The index failed (unknown domain or point included).
    #[error(transparent)]
    Index(#[from] IndexError),
    /// The object store failed.
    #[error(transparent)]
    Store(StoreError),
    /// Writing the target failed.
    #[error("writing {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The restore was cancelled.
    #[error("cancelled")]
    Cancelled,
}

impl RestoreError {
    pub(crate) fn corrupt(key: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        RestoreError::Corrupt {
            key: key.into(),
            reason: reason.to_string(),
        }
    }

    /// Wraps a store error; a missing object is corruption of the bucket.
    pub(crate) fn store(key: &str, e: StoreError) -> Self {
        match e {
            StoreError::NotFound { .. } => RestoreError::corrupt(key, "object is missing"),
            other => RestoreError::Store(other),
        }
    }

    pub(crate) fn format(key: &str, e: FormatError) -> Self {
        RestoreError::corrupt(key, e)
    }

    /// Wraps an error of reading `key` through the index's bucket reader: damage and
    /// absence of the object are corruption of the bucket.
    pub(crate) fn reading(key: &str, e: IndexError) -> Self {
        match e {
            IndexError::Store(s) => RestoreError::store(key, s),
            IndexError::CorruptObject { key, source } => RestoreError::corrupt(key, source),
            other => RestoreError::Index(other),
        }
    }
}

/// Result type of this crate.
pub type Result<T, E = RestoreError> = std::result::Result<T, E>;
