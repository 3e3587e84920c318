//! One clear line and a distinct exit code for each kind of failure.

use tidemark_gc::GcError;
use tidemark_ingest::IngestError;

use crate::client::RemoteError;
use tidemark_objstore::StoreError;
use tidemark_pitr_index::IndexError;
use tidemark_rehydrator::RestoreError;

/// What kind of failure, for scripts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Other = 1,
    Invalid = 2,
    NotFound = 3,
    Corrupt = 4,
    Conflict = 5,
    /// Another site owns the domain; this one may read but not write it.
    Fenced = 6,
}

fn index_kind(e: &IndexError) -> Kind {
    match e {
        IndexError::UnknownDomain(_) | IndexError::NoSuchPoint(_) => Kind::NotFound,
        IndexError::Corrupt(_) | IndexError::CorruptObject { .. } | IndexError::Format(_) => {
            Kind::Corrupt
        }
        IndexError::Store(s) => store_kind(s),
        // Transient, as a service's `unavailable` is.
        IndexError::Db(_) | IndexError::Busy(_) => Kind::Other,
    }
}

fn store_kind(e: &StoreError) -> Kind {
    match e {
        StoreError::NotFound { .. } => Kind::NotFound,
        StoreError::Invalid(_) | StoreError::Config(_) => Kind::Invalid,
        StoreError::AlreadyExists { .. } | StoreError::PreconditionFailed { .. } => Kind::Conflict,
        _ => Kind::Other,
    }
}

fn ingest_kind(e: &IngestError) -> Kind {
    match e {
        IngestError::Invalid(_) => Kind::Invalid,
        IngestError::UnknownDomain(_) => Kind::NotFound,
        IngestError::Conflict(_) | IngestError::SeqTaken { .. } => Kind::Conflict,
        IngestError::Fenced { .. } => Kind::Fenced,
        IngestError::Corrupt { .. } => Kind::Corrupt,
        IngestError::Store(s) => store_kind(s),
        IngestError::Index(i) => index_kind(i),
        IngestError::Read { .. } | IngestError::Injected(_) => Kind::Other,
    }
}

fn restore_kind(e: &RestoreError) -> Kind {
    match e {
        RestoreError::Invalid(_) => Kind::Invalid,
        RestoreError::Corrupt { .. } => Kind::Corrupt,
        RestoreError::Index(i) => index_kind(i),
        RestoreError::Store(s) => store_kind(s),
        RestoreError::Io { .. } | RestoreError::Cancelled => Kind::Other,
    }
}

/// Classifies an error by its innermost known cause.
pub fn kind(e: &anyhow::Error) -> Kind {
    for cause in e.chain() {
        if let Some(e) = cause.downcast_ref::<RemoteError>() {
            return match e.code.as_str() {
                "invalid_input" | "unauthorized" | "forbidden" | "payload_too_large" => {
                    Kind::Invalid
                }
                "not_found" | "invalid_point" => Kind::NotFound,
                "corrupt" => Kind::Corrupt,
                "conflict" => Kind::Conflict,
                "fenced" | "released" => Kind::Fenced,
                _ => Kind::Other,
            };
        }
        if let Some(e) = cause.downcast_ref::<IngestError>() {
            return ingest_kind(e);
        }
        if let Some(e) = cause.downcast_ref::<RestoreError>() {
            return restore_kind(e);
        }
        if let Some(e) = cause.downcast_ref::<GcError>() {
            return match e {
                GcError::Invalid(_) => Kind::Invalid,
                GcError::UnknownDomain(_) => Kind::NotFound,
                // Another site owns the domain: only it collects.
                GcError::NotOwner { .. } => Kind::Fenced,
                GcError::Conflict(_) => Kind::Conflict,
                GcError::Corrupt { .. } => Kind::Corrupt,
                GcError::Store(s) => store_kind(s),
                GcError::Index(i) => index_kind(i),
                GcError::Ingest(i) => ingest_kind(i),
                GcError::Restore(r) => restore_kind(r),
                GcError::Io { .. } | GcError::Injected(_) => Kind::Other,
            };
        }
        if let Some(e) = cause.downcast_ref::<IndexError>() {
            return index_kind(e);
        }
        if let Some(e) = cause.downcast_ref::<StoreError>() {
            return store_kind(e);
        }
    }
    Kind::Other
}

/// The process exit code for an error.
pub fn code(e: &anyhow::Error) -> i32 {
    kind(e) as i32
}

/// The error and its causes on one line (causes already in the message are skipped).
pub fn describe(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if !out.contains(&s) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&s);
        }
    }
    out.replace('\n', " ")
}
