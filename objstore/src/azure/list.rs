//! Listing in key order with `start_after`, on top of List Blobs' opaque markers.

use std::sync::atomic::Ordering;

use azure_storage_blob::models::BlobContainerClientListBlobsOptions;
use futures::TryStreamExt;

use super::errors::{self, is};
use super::AzureStore;
use crate::key::{validate_key, validate_prefix};
use crate::{ListPage, ObjectMeta, Result, StoreError};

/// Largest page List Blobs returns.
const MAX_LIST_PAGE: usize = 5000;

impl AzureStore {
    /// One page of [`crate::ObjectStore::list`].
    pub(super) async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        max: usize,
    ) -> Result<ListPage> {
        validate_prefix(prefix)?;
        if max == 0 {
            return Err(StoreError::Invalid(
                "list page size must be at least 1".into(),
            ));
        }
        let inner = &self.inner;
        let full_prefix = format!("{}{prefix}", inner.root);
        let after = start_after.map(|a| format!("{}{a}", inner.root));
        // One more than asked tells whether another page follows.
        let want = max.saturating_add(1);
        let mut page_size = want.min(MAX_LIST_PAGE);
        let mut objects: Vec<ObjectMeta> = Vec::new();
        let mut marker: Option<String> = None;
        // Without `startFrom` (or on a service that ignores it, like Azurite) the listing
        // starts at the prefix and every key up to `start_after` is fetched and skipped:
        // a full pass over a prefix in pages costs O(n²/page) names transferred instead
        // of O(n). With it the service starts at `start_after` (inclusive), and the skip
        // below only drops that one key.
        let start_from = after.clone().filter(|a| a.as_str() > full_prefix.as_str());
        'pages: loop {
            let options = BlobContainerClientListBlobsOptions {
                prefix: Some(full_prefix.clone()).filter(|p| !p.is_empty()),
                marker: marker.clone(),
                maxresults: i32::try_from(page_size).ok(),
                // Only on the first request: the marker of later ones holds the position.
                start_from: start_from
                    .clone()
                    .filter(|_| marker.is_none() && inner.start_from.load(Ordering::Relaxed)),
                ..Default::default()
            };
            let sent_start_from = options.start_from.is_some();
            let pager = inner
                .container_client
                .list_blobs(Some(options))
                .map_err(|e| self.map_err("list", prefix, &e))?;
            let page = match pager.into_pages().try_next().await {
                Ok(Some(page)) => page,
                Ok(None) => break,
                Err(e) if sent_start_from && is(&e, 400, None) => {
                    tracing::warn!(
                        error = %errors::describe(&e),
                        "Azure rejected startFrom in List Blobs; listing without it from now on"
                    );
                    inner.start_from.store(false, Ordering::Relaxed);
                    continue;
                }
                Err(e) => return Err(self.map_err("list", prefix, &e)),
            };
            let page = page
                .into_model()
                .map_err(|e| self.map_err("list", prefix, &e))?;
            let mut skipped = false;
            for item in page.blob_items {
                let Some(name) = item.name else { continue };
                if after.as_deref().is_some_and(|a| name.as_str() <= a) {
                    skipped = true;
                    continue;
                }
                let Some(key) = name.strip_prefix(inner.root.as_str()) else {
                    continue;
                };
                // Blobs written by other tools under names that are not valid keys cannot
                // be addressed through this store, so they are not listed either.
                if validate_key(key).is_err() {
                    continue;
                }
                let size = item
                    .properties
                    .and_then(|p| p.content_length)
                    .unwrap_or_default();
                objects.push(ObjectMeta {
                    key: key.to_owned(),
                    size,
                });
                if objects.len() >= want {
                    break 'pages;
                }
            }
            match page.next_marker.filter(|m| !m.is_empty()) {
                Some(next) => marker = Some(next),
                None => break,
            }
            if skipped {
                page_size = MAX_LIST_PAGE;
            }
        }
        Ok(ListPage::from_overfetch(objects, max))
    }
}
