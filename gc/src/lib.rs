//! Garbage collection within retention windows (DESIGN.md section 9).
//!
//! A run, on the domain's owner only: index the log to its end; delete what earlier
//! runs made garbage once the grace period passed and no reader holds an older epoch
//! ([`sweep`]); decide the retained points ([`policy`]); compute liveness and plan
//! deletions, merges, demotions and an image ([`plan`]); write the rewritten segments
//! ([`rewrite`]) and repacked packs ([`packs`]); then, with the domain's index held
//! alone and ingest commits held off, check nothing moved, create the epoch's manifest
//! (the commit point) and bring the index to it. Nothing is deleted before a later
//! run: a crash anywhere leaves every retained point restorable, and the next run
//! finishes the work or sweeps the orphans.

pub mod lease;
mod packs;
pub mod plan;
pub mod policy;
mod rewrite;
mod run;
mod sweep;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidemark_ingest::IngestError;
use tidemark_objstore::StoreError;
use tidemark_pitr_index::IndexError;
use tidemark_rehydrator::{RestoreError, RestoreOptions};

pub use plan::PlanRules;
pub use run::run;

/// A step of a run after which a test may stop it, as a crash would.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GcFailPoint {
    /// Rewritten segments and repacked packs are stored; no manifest.
    AfterRewrite,
    /// The manifest is stored; the index does not reflect it.
    AfterManifest,
    /// The index reflects the manifest; nothing superseded is deleted.
    AfterApply,
    /// Half of the garbage of a manifest is deleted.
    MidSweep,
}

/// Tuning of GC.
#[derive(Clone, Debug)]
pub struct GcConfig {
    /// Objects a manifest superseded are deleted no sooner than this after it, so that
    /// readers that started before it (here or at another site) finish.
    pub grace: Duration,
    /// Objects no index or manifest knows (a crashed ingest's packs, a crashed run's
    /// rewrites) are deleted once seen unreferenced for this long; longer than any
    /// commit takes.
    pub orphan_grace: Duration,
    /// A pack with at least this fraction of its bytes dead is repacked.
    pub repack_dead_fraction: f64,
    /// Rules of the plan.
    pub rules: PlanRules,
    /// Where rewrites stage live blocks (sparse files, deleted after each rewrite).
    pub scratch_dir: PathBuf,
    /// How rewrites read blocks.
    pub restore: RestoreOptions,
    /// How long the commit waits for running restores of the domain to finish before
    /// it defers the run.
    pub exclusive_wait: Duration,
    /// Test hook.
    pub fail_at: Option<GcFailPoint>,
}

impl GcConfig {
    /// Defaults, staging under `scratch_dir`.
    pub fn new(scratch_dir: PathBuf) -> GcConfig {
        GcConfig {
            grace: Duration::from_secs(3600),
            orphan_grace: Duration::from_secs(3600),
            repack_dead_fraction: 0.5,
            rules: PlanRules::default(),
            scratch_dir,
            restore: RestoreOptions::default(),
            exclusive_wait: Duration::from_secs(30),
            fail_at: None,
        }
    }
}

/// What a run did (or, dry, would do).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GcReport {
    /// The domain.
    pub domain: String,
    /// Nothing was changed: the figures say what a run would do.
    pub dry_run: bool,
    /// The epoch committed (none: nothing to commit, dry, or deferred).
    pub epoch: Option<u64>,
    /// Why the run stopped before committing, if it did (restores at work, a race).
    pub deferred: Option<String>,
    /// The newest seq the run looked at.
    pub upto: Option<u64>,
    /// Points before the run.
    pub points_before: u64,
    /// Points the policy, leases and the head keep.
    pub points_retained: u64,
    /// Segments deleted: no retained point read them.
    pub segments_deleted: u64,
    /// Segments merged into new ones.
    pub segments_merged: u64,
    /// Merged segments written.
    pub merged_written: u64,
    /// Segments left in place but no longer points.
    pub segments_demoted: u64,
    /// Image segments written.
    pub images_written: u64,
    /// Chunks no longer referenced and dropped from live packs.
    pub chunks_freed: u64,
    /// Packs repacked.
    pub packs_repacked: u64,
    /// Packs left without a live chunk.
    pub packs_dead: u64,
    /// Bytes uploaded (rewritten segments and packs).
    pub bytes_uploaded: u64,
    /// Bytes this run made garbage (deleted after the grace period). Dry: a lower
    /// bound (chunks of merged runs are counted as kept).
    pub bytes_reclaimable: u64,
    /// Objects deleted by this run: garbage of earlier epochs past its grace period.
    pub objects_deleted: u64,
    /// Bytes those objects held.
    pub bytes_reclaimed: u64,
    /// Orphans deleted (objects of crashed commits or runs).
    pub orphans_deleted: u64,
    /// Stored bytes (packs and segment objects the index knows) before the run.
    pub stored_bytes_before: u64,
    /// And after.
    pub stored_bytes_after: u64,
    /// Time of the liveness pass, seconds.
    pub liveness_seconds: f64,
    /// Duration of the run, seconds.
    pub duration_seconds: f64,
}

/// Errors of GC, by what a caller can do about them.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// The request is wrong.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// The domain does not exist.
    #[error("unknown domain {0:?}")]
    UnknownDomain(String),
    /// This site does not own the domain: only the owner collects.
    #[error("domain {domain} is owned by site {owner}; only the owner runs GC")]
    NotOwner { domain: String, owner: String },
    /// Something changed under the run (ingest referenced a chunk it freed, another
    /// run committed the epoch); nothing was committed, the next run starts afresh.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A stored object is damaged.
    #[error("corrupt object {key}: {reason}")]
    Corrupt { key: String, reason: String },
    /// The object store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The index failed.
    #[error(transparent)]
    Index(IndexError),
    /// Building a rewrite failed.
    #[error(transparent)]
    Ingest(IngestError),
    /// Reading live blocks failed.
    #[error(transparent)]
    Restore(RestoreError),
    /// Scratch files failed.
    #[error("scratch file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A test hook stopped the run.
    #[error("injected failure at {0:?}")]
    Injected(GcFailPoint),
}

impl From<IndexError> for GcError {
    fn from(e: IndexError) -> Self {
        match e {
            IndexError::UnknownDomain(d) => GcError::UnknownDomain(d),
            IndexError::Store(s) => GcError::Store(s),
            IndexError::CorruptObject { key, source } => GcError::Corrupt {
                key,
                reason: source.to_string(),
            },
            other => GcError::Index(other),
        }
    }
}

impl From<IngestError> for GcError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::UnknownDomain(d) => GcError::UnknownDomain(d),
            IngestError::Store(s) => GcError::Store(s),
            IngestError::Fenced { domain, owner, .. } => GcError::NotOwner { domain, owner },
            IngestError::Index(i) => i.into(),
            other => GcError::Ingest(other),
        }
    }
}

impl From<RestoreError> for GcError {
    fn from(e: RestoreError) -> Self {
        match e {
            RestoreError::Index(i) => i.into(),
            RestoreError::Store(s) => GcError::Store(s),
            RestoreError::Corrupt { key, reason } => GcError::Corrupt { key, reason },
            other => GcError::Restore(other),
        }
    }
}

/// Result type of this crate.
pub type Result<T, E = GcError> = std::result::Result<T, E>;
