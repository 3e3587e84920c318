//! The write path: single Put Blob for small objects, staged blocks committed with
//! Put Block List for large ones, conditions on the request that makes the object appear.

use std::collections::HashMap;
use std::num::NonZero;
use std::sync::Arc;

use azure_core::http::{Etag, NoFormat, RequestContent};
use azure_storage_blob::models::{
    BlobClientGetPropertiesResultHeaders, BlockBlobClientCommitBlockListOptions,
    BlockBlobClientCommitBlockListResultHeaders, BlockBlobClientUploadOptions, BlockLookupList,
};
use azure_storage_blob::BlobClient;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use super::errors::is;
use super::{missing_header, AzureStore, RESTARTS};
use crate::{ETag, PutResult, Result, StoreError};

/// Metadata entry naming the write call that produced a blob; see [`AzureStore::write`].
const WRITER_META: &str = "tidemarkwriter";
/// Most blocks one blob may consist of.
const MAX_BLOCKS: u64 = 50_000;

/// The condition of a write.
#[derive(Clone, Copy)]
pub(super) enum Cond<'a> {
    /// Unconditional.
    Always,
    /// Only if no object exists.
    Absent,
    /// Only if the object's current ETag is this one.
    Match(&'a ETag),
}

impl Cond<'_> {
    fn op(self) -> &'static str {
        match self {
            Cond::Always => "put",
            Cond::Absent => "put_if_absent",
            Cond::Match(_) => "put_if_match",
        }
    }

    fn if_match(self) -> Option<Etag> {
        match self {
            Cond::Match(etag) => Some(Etag::from(etag.0.as_str())),
            _ => None,
        }
    }

    fn if_none_match(self) -> Option<Etag> {
        match self {
            Cond::Absent => Some(Etag::from("*")),
            _ => None,
        }
    }

    /// Whether `e` says the condition did not hold: Azure answers a create-only write on
    /// an existing blob with 409 BlobAlreadyExists (sometimes 412), and an If-Match write
    /// with 412 ConditionNotMet, or 404 BlobNotFound when there is no blob.
    fn failed(self, e: &azure_core::Error) -> bool {
        match self {
            Cond::Always => false,
            Cond::Absent => is(e, 409, Some("BlobAlreadyExists")) || is(e, 412, None),
            Cond::Match(_) => is(e, 412, None) || is(e, 404, Some("BlobNotFound")),
        }
    }

    fn error(self, key: &str) -> StoreError {
        let key = key.to_owned();
        match self {
            Cond::Absent => StoreError::AlreadyExists { key },
            _ => StoreError::PreconditionFailed { key },
        }
    }
}

impl AzureStore {
    /// Writes `data` under `cond`.
    ///
    /// Every write tags the blob with a random writer ID. Retries make conditional
    /// writes ambiguous: if the first attempt succeeded but its answer was lost, the
    /// retry meets its own blob and fails the condition. So when a condition fails, the
    /// blob's writer ID tells whether the winner was this very call.
    pub(super) async fn write(&self, key: &str, data: Bytes, cond: Cond<'_>) -> Result<PutResult> {
        let blob = self.blob(key)?;
        let op = cond.op();
        let large = data.len() as u64 > self.inner.block_threshold;
        if large && !matches!(cond, Cond::Always) {
            // Staged blocks carry no condition, only the commit does: check first so a
            // write that cannot succeed does not upload megabytes in vain.
            let current = self.current(&blob, key, op).await?.map(|(etag, _)| etag);
            let hopeless = match cond {
                Cond::Always | Cond::Absent => current.is_some(),
                Cond::Match(expected) => current.as_deref() != Some(expected.0.as_str()),
            };
            if hopeless {
                return Err(cond.error(key));
            }
        }
        let writer = format!("{:032x}", rand::random::<u128>());
        let result = if large {
            self.upload_blocks(&blob, data, cond, &writer).await
        } else {
            upload_single(&blob, data, cond, &writer).await
        };
        match result {
            Ok(Some(etag)) => Ok(PutResult {
                etag: ETag(etag.to_string()),
            }),
            Ok(None) => Err(StoreError::Backend(format!(
                "Azure {op} of {key:?} succeeded without returning an ETag"
            ))),
            Err(e) if cond.failed(&e) => match self.current(&blob, key, op).await? {
                Some((etag, Some(w))) if w == writer => Ok(PutResult { etag: ETag(etag) }),
                _ => Err(cond.error(key)),
            },
            Err(e) => Err(self.map_err(op, key, &e)),
        }
    }

    /// Stages `data` as blocks, a few in parallel, and commits them under `cond`.
    async fn upload_blocks(
        &self,
        blob: &BlobClient,
        data: Bytes,
        cond: Cond<'_>,
        writer: &str,
    ) -> azure_core::Result<Option<Etag>> {
        let len = data.len() as u64;
        let block_size = self.inner.block_size.max(len.div_ceil(MAX_BLOCKS));
        let block_blob = Arc::new(blob.block_blob_client());
        let mut attempt = 0;
        loop {
            attempt += 1;
            // A fresh upload ID per attempt: block IDs of one blob must all have the same
            // length, and must not collide with blocks another writer staged.
            let upload = format!("{:016x}", rand::random::<u64>());
            let blocks: Vec<(Vec<u8>, Bytes)> = (0..len.div_ceil(block_size))
                .map(|i| {
                    let start = i * block_size;
                    let end = (start + block_size).min(len);
                    let id = format!("{upload}-{i:06}").into_bytes();
                    (id, data.slice(start as usize..end as usize))
                })
                .collect();
            let ids: Vec<Vec<u8>> = blocks.iter().map(|(id, _)| id.clone()).collect();
            // Owned futures (an Arc'd client, owned ids and chunks): borrowed ones would
            // make the trait's boxed future fail the higher-ranked `Send` check.
            futures::stream::iter(blocks.into_iter().map(|(id, chunk)| {
                let block_blob = Arc::clone(&block_blob);
                async move {
                    let len = chunk.len() as u64;
                    let content: RequestContent<Bytes, NoFormat> = chunk.into();
                    block_blob
                        .stage_block(&id, len, content, None)
                        .await
                        .map(drop)
                }
            }))
            .buffer_unordered(self.inner.concurrency.get())
            .try_collect::<()>()
            .await?;

            let list = BlockLookupList {
                latest: Some(ids),
                ..Default::default()
            };
            let options = BlockBlobClientCommitBlockListOptions {
                if_match: cond.if_match(),
                if_none_match: cond.if_none_match(),
                metadata: Some(writer_metadata(writer)),
                ..Default::default()
            };
            match block_blob
                .commit_block_list(list.try_into()?, Some(options))
                .await
            {
                Ok(response) => return response.etag(),
                // Any commit to this blob discards all its uncommitted blocks, so a
                // concurrent writer can make ours vanish before we commit them.
                Err(e) if is(&e, 400, Some("InvalidBlockList")) && attempt < RESTARTS => {
                    tracing::debug!(blob = %blob.url().path(), "staged blocks were discarded by a concurrent commit; restaging");
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The current ETag and writer ID of a blob, or `None` if it does not exist.
    async fn current(
        &self,
        blob: &BlobClient,
        key: &str,
        op: &str,
    ) -> Result<Option<(String, Option<String>)>> {
        match blob.get_properties(None).await {
            Ok(props) => {
                let etag = props
                    .etag()
                    .map_err(|e| self.map_err(op, key, &e))?
                    .map(|e| e.to_string())
                    .ok_or_else(|| missing_header(op, key, "ETag"))?;
                let writer = props
                    .metadata()
                    .map_err(|e| self.map_err(op, key, &e))?
                    .remove(WRITER_META);
                Ok(Some((etag, writer)))
            }
            Err(e) if is(&e, 404, Some("BlobNotFound")) => Ok(None),
            // HEAD responses have no body, so some 404s come without an error code.
            Err(e) if is(&e, 404, None) && !is(&e, 404, Some("ContainerNotFound")) => Ok(None),
            Err(e) => Err(self.map_err(op, key, &e)),
        }
    }
}

/// Uploads `data` with a single Put Blob under `cond`.
async fn upload_single(
    blob: &BlobClient,
    data: Bytes,
    cond: Cond<'_>,
    writer: &str,
) -> azure_core::Result<Option<Etag>> {
    let len = data.len() as u64;
    let options = BlockBlobClientUploadOptions {
        // A partition at least as large as the content makes the SDK send one request.
        partition_size: NonZero::new(len.max(1)),
        parallel: NonZero::new(1),
        if_match: cond.if_match(),
        if_none_match: cond.if_none_match(),
        metadata: Some(writer_metadata(writer)),
        ..Default::default()
    };
    let content: RequestContent<Bytes, NoFormat> = data.into();
    let result = blob
        .block_blob_client()
        .upload(content, Some(options))
        .await?;
    Ok(result.etag)
}

fn writer_metadata(writer: &str) -> HashMap<String, String> {
    HashMap::from([(WRITER_META.to_owned(), writer.to_owned())])
}
