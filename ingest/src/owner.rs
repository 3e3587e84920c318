//! Ownership of a domain's log (DESIGN.md section 6).
//!
//! `owner.json` names the one site allowed to append, with a generation bumped at every
//! change of owner; it changes only through if-match writes (or its create-only first
//! write), so two sites racing to take a domain cannot both win. Writers stamp their
//! generation on every segment. Seqs are claimed create-only, and every commit re-reads
//! `owner.json` just before claiming its seq, so a writer that lost ownership learns it
//! at its next commit (by that check, or because the fence took its seq) and stops with
//! [`IngestError::Fenced`].

use bytes::Bytes;
use tidemark_format::{keys, OwnerRecord, WriterId};
use tidemark_objstore::{ETag, StoreError};

use crate::{now_ns, IngestContext, IngestError, Result};

/// `owner.json` as read, with the version a change must be conditioned on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ownership {
    /// The record.
    pub record: OwnerRecord,
    /// Its version in the bucket.
    pub etag: ETag,
}

impl Ownership {
    /// The writer identity this ownership grants.
    pub fn writer(&self) -> WriterId {
        WriterId {
            site: self.record.site.clone(),
            generation: self.record.generation,
        }
    }
}

/// Reads `owner.json` of `domain`; `None` when nobody has written to the domain yet.
pub async fn read_owner(ctx: &IngestContext, domain: &str) -> Result<Option<Ownership>> {
    let key = keys::owner_key(domain);
    match ctx.store.get(&key).await {
        Ok(got) => {
            let record = OwnerRecord::decode(&got.data)
                .map_err(|source| IngestError::Corrupt { key, source })?;
            Ok(Some(Ownership {
                record,
                etag: got.etag,
            }))
        }
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The ownership this site writes under: the current one if it is this site's, the
/// first one if the domain has none. Another site's ownership is `Fenced`: this site
/// may read the domain but must take it over (failover) before it writes.
pub(crate) async fn claim(ctx: &IngestContext, domain: &str) -> Result<Ownership> {
    loop {
        match read_owner(ctx, domain).await? {
            Some(own) if own.record.site == ctx.site => return Ok(own),
            Some(own) => return Err(fenced(domain, &own.record)),
            None => match create_first(ctx, domain).await? {
                Some(own) => return Ok(own),
                // Someone created it between our read and our write: read theirs.
                None => continue,
            },
        }
    }
}

/// Makes this site the owner with the next generation, conditioned on `expected` (the
/// generation the caller decided to take over from; `None` takes over from whatever is
/// current). Losing a race to another site's takeover is `Fenced`.
pub(crate) async fn take(
    ctx: &IngestContext,
    domain: &str,
    expected: Option<u64>,
) -> Result<Ownership> {
    let Some(current) = read_owner(ctx, domain).await? else {
        if expected.is_some_and(|g| g != 0) {
            return Err(IngestError::Conflict(format!(
                "domain {domain} has no owner, not generation {}",
                expected.unwrap_or(0)
            )));
        }
        return match create_first(ctx, domain).await? {
            Some(own) => Ok(own),
            None => Err(match read_owner(ctx, domain).await? {
                Some(own) => fenced(domain, &own.record),
                None => IngestError::Conflict(format!("owner.json of {domain} vanished")),
            }),
        };
    };
    if let Some(g) = expected {
        if current.record.generation != g {
            return Err(fenced(domain, &current.record));
        }
    }
    let record = OwnerRecord {
        site: ctx.site.clone(),
        generation: current.record.generation + 1,
        since: now_ns(),
    };
    let key = keys::owner_key(domain);
    match ctx
        .store
        .put_if_match(&key, Bytes::from(record.encode()?), &current.etag)
        .await
    {
        Ok(put) => Ok(Ownership {
            record,
            etag: put.etag,
        }),
        Err(StoreError::PreconditionFailed { .. }) => match read_owner(ctx, domain).await? {
            // Our own write, whose answer was lost before a retry.
            Some(own) if own.record == record => Ok(own),
            Some(own) => Err(fenced(domain, &own.record)),
            None => Err(IngestError::Conflict(format!(
                "owner.json of {domain} vanished"
            ))),
        },
        Err(e) => Err(e.into()),
    }
}

/// Writes generation 1 for this site; `None` if another writer created `owner.json`
/// first.
async fn create_first(ctx: &IngestContext, domain: &str) -> Result<Option<Ownership>> {
    let record = OwnerRecord {
        site: ctx.site.clone(),
        generation: 1,
        since: now_ns(),
    };
    match ctx
        .store
        .put_if_absent(&keys::owner_key(domain), Bytes::from(record.encode()?))
        .await
    {
        Ok(put) => Ok(Some(Ownership {
            record,
            etag: put.etag,
        })),
        Err(StoreError::AlreadyExists { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `Ok` if `mine` is still the domain's owner, else `Fenced` (or `Conflict` if
/// `owner.json` is gone). Checked before every commit, so that a writer that keeps
/// committing cannot starve a takeover: once `owner.json` changed, at most the commits
/// already past this check can still win a seq before the fence.
pub async fn verify(ctx: &IngestContext, domain: &str, mine: &WriterId) -> Result<()> {
    match read_owner(ctx, domain).await? {
        Some(own) if &own.writer() == mine => Ok(()),
        Some(own) => Err(fenced(domain, &own.record)),
        None => Err(IngestError::Conflict(format!(
            "owner.json of domain {domain} is missing"
        ))),
    }
}

/// After a seq this writer wanted was taken: `Fenced` if ownership moved on, else the
/// plain conflict (another writer of the same generation, or a half-done commit of our
/// own that the next attempt indexes and skips).
pub(crate) async fn check_still_owner(
    ctx: &IngestContext,
    domain: &str,
    mine: &WriterId,
    taken: IngestError,
) -> IngestError {
    match read_owner(ctx, domain).await {
        Ok(Some(own))
            if own.record.site == mine.site && own.record.generation == mine.generation =>
        {
            taken
        }
        Ok(Some(own)) => fenced(domain, &own.record),
        Ok(None) => IngestError::Conflict(format!(
            "owner.json of {domain} is missing while seq was taken: {taken}"
        )),
        Err(e) => e,
    }
}

fn fenced(domain: &str, owner: &OwnerRecord) -> IngestError {
    IngestError::Fenced {
        domain: domain.to_owned(),
        owner: owner.site.clone(),
        generation: owner.generation,
    }
}
