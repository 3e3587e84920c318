//! Azure Blob Storage backend, on the official `azure_storage_blob` crate.
//!
//! Objects are block blobs named `prefix/key` in one container. Small objects are one
//! Put Blob; large ones are staged blocks committed with Put Block List, and conditional
//! writes put their condition on that commit, so an object appears whole or not at all.
//! Authorisation is an account SAS signed with the account key (the crate has no
//! shared-key policy), a given SAS token, or an Entra ID identity; see [`AzureCredential`].

mod auth;
mod config;
mod errors;
mod list;
mod sas;
mod write;

use std::fmt;
use std::num::NonZero;
use std::ops::Range;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use azure_core::http::headers::Headers;
use azure_core::http::policies::auth::BearerTokenAuthorizationPolicy;
use azure_core::http::{
    new_http_client, ClientOptions, ExponentialRetryOptions, HttpClientOptions, RetryOptions,
    Transport, Url,
};
use azure_storage_blob::models::{
    BlobClientDownloadOptions, BlobClientDownloadResult, BlobClientGetPropertiesResultHeaders,
    BlobDownloadProperties,
};
use azure_storage_blob::{
    BlobClient, BlobClientOptions, BlobContainerClient, BlobContainerClientOptions,
};
use bytes::Bytes;

pub use config::{
    AzureConfig, AzureCredential, AzureRetry, AZURITE_ACCOUNT, AZURITE_BLOB_ENDPOINT, AZURITE_KEY,
    ENV_ACCOUNT, ENV_CONNECTION_STRING, ENV_ENDPOINT, ENV_KEY, ENV_SAS_TOKEN,
};

use self::auth::{normalise_sas, DefaultIdentity, SasPolicy, SasSource};
use self::errors::{is, Target};
use self::sas::{AccountSasSigner, RenewingSas};
use self::write::Cond;
use crate::key::{validate_key, MAX_KEY_LEN};
use crate::{ETag, GetResult, ListPage, ObjectMeta, ObjectStore, PutResult, Result, StoreError};

/// Scope of Entra ID tokens for Azure Storage.
const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";
/// How often a read restarts when the object is replaced while being downloaded in
/// several ranges, and how often a staged upload restarts when a concurrent commit
/// discarded its uncommitted blocks.
const RESTARTS: usize = 3;

/// An object store in an Azure Blob Storage container (optionally below a prefix).
#[derive(Clone)]
pub struct AzureStore {
    inner: Arc<Inner>,
}

struct Inner {
    account: String,
    container: String,
    /// `""` or the configured prefix with a trailing `/`.
    root: String,
    container_url: Url,
    container_client: BlobContainerClient,
    /// Options of every blob client: one shared transport (connection pool), the retry
    /// policy and the authorisation policy.
    blob_options: BlobClientOptions,
    block_threshold: u64,
    block_size: u64,
    concurrency: NonZero<usize>,
    /// Cleared when the service rejects `startFrom`, so later listings do without it.
    start_from: AtomicBool,
}

impl fmt::Debug for AzureStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The container URL carries no secret: SAS tokens are added per request.
        f.debug_struct("AzureStore")
            .field("container_url", &self.inner.container_url.as_str())
            .field("prefix", &self.inner.root)
            .finish_non_exhaustive()
    }
}

impl AzureStore {
    /// Opens a store with an explicit configuration (no environment is read).
    pub fn new(config: AzureConfig) -> Result<Self> {
        let prefix = config.validate()?;
        let endpoint = config.endpoint_or_default()?;
        let shown = crate::location::redact(&endpoint);
        let bad_endpoint =
            |why: &str| StoreError::Config(format!("Azure blob endpoint {shown:?}: {why}"));
        let endpoint_url = Url::parse(&endpoint).map_err(|e| bad_endpoint(&e.to_string()))?;
        let https = match endpoint_url.scheme() {
            "https" => true,
            "http" => false,
            _ => return Err(bad_endpoint("must be an http:// or https:// URL")),
        };
        if endpoint_url.cannot_be_a_base() || endpoint_url.query().is_some() {
            return Err(bad_endpoint(
                "must be a plain base URL (put a SAS token in the credential, not the URL)",
            ));
        }

        let mut client_options = ClientOptions {
            // One HTTP client for every blob client, so all requests share a connection
            // pool. No automatic decompression: ranged downloads must see stored bytes.
            transport: Some(Transport::new(new_http_client(Some(HttpClientOptions {
                automatic_decompression: false,
            })))),
            retry: RetryOptions::exponential(ExponentialRetryOptions {
                initial_delay: to_time(config.retry.initial_delay),
                max_retries: config.retry.max_retries,
                max_total_elapsed: to_time(config.retry.max_elapsed),
                max_delay: to_time(config.retry.max_delay),
            }),
            ..Default::default()
        };
        match &config.credential {
            AzureCredential::AccountKey(key) => {
                let signer = AccountSasSigner::new(&config.account, key, !https)
                    .map_err(|why| StoreError::Config(format!("Azure account key: {why}")))?;
                client_options
                    .per_call_policies
                    .push(Arc::new(SasPolicy::new(SasSource::Signed(
                        RenewingSas::new(signer),
                    ))));
            }
            AzureCredential::SasToken(token) => {
                let token = normalise_sas(token);
                if token.is_empty() {
                    return Err(StoreError::Config("Azure SAS token is empty".into()));
                }
                client_options
                    .per_call_policies
                    .push(Arc::new(SasPolicy::new(SasSource::Fixed(token))));
            }
            entra => {
                if !https {
                    return Err(bad_endpoint(
                        "Entra ID credentials are only sent over https; use an account key or \
                         a SAS token for an http endpoint",
                    ));
                }
                let credential = entra_credential(entra)?;
                // One policy instance shared by all clients, so they share its token cache.
                client_options.per_try_policies.push(Arc::new(
                    BearerTokenAuthorizationPolicy::new(credential, [STORAGE_SCOPE]),
                ));
            }
        }

        let mut container_url = endpoint_url;
        container_url
            .path_segments_mut()
            .map_err(|()| bad_endpoint("cannot hold a path"))?
            .pop_if_empty()
            .push(&config.container);
        let container_client = BlobContainerClient::new(
            container_url.clone(),
            None,
            Some(BlobContainerClientOptions {
                client_options: client_options.clone(),
                ..Default::default()
            }),
        )
        .map_err(|e| bad_endpoint(&errors::describe(&e)))?;
        let concurrency = NonZero::new(config.concurrency)
            .ok_or_else(|| StoreError::Config("Azure concurrency must be at least 1".into()))?;
        let root = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        Ok(Self {
            inner: Arc::new(Inner {
                account: config.account.clone(),
                container: config.container.clone(),
                root,
                container_url,
                container_client,
                blob_options: BlobClientOptions {
                    client_options,
                    ..Default::default()
                },
                block_threshold: config.block_threshold,
                block_size: config.block_size,
                concurrency,
                start_from: AtomicBool::new(config.list_start_from),
            }),
        })
    }

    /// Opens `az://container[/prefix][?endpoint=URL]` with credentials from the
    /// environment (see [`AzureConfig::from_env`]); `endpoint` overrides
    /// `TIDEMARK_AZURE_ENDPOINT` and the connection string's endpoint.
    pub fn from_url(url: &str) -> Result<Self> {
        let location = crate::location::Location::parse(url, "az")?;
        let mut endpoint = None;
        for (name, value) in location.options {
            match name.as_str() {
                "endpoint" if !value.is_empty() => endpoint = Some(value),
                _ => {
                    return Err(StoreError::Config(format!(
                        "store location {:?}: unknown option {name:?} for az:// \
                         (only endpoint=URL is accepted)",
                        crate::location::redact(url)
                    )))
                }
            }
        }
        let config = config::from_lookup(location.container, location.prefix, endpoint, &|name| {
            std::env::var(name).ok().filter(|v| !v.trim().is_empty())
        })?;
        Self::new(config)
    }

    /// Creates the container unless it exists (for first-time setup and tests).
    pub async fn create_container_if_missing(&self) -> Result<()> {
        match self.inner.container_client.create(None).await {
            Ok(_) => Ok(()),
            Err(e) if is(&e, 409, Some("ContainerAlreadyExists")) => Ok(()),
            Err(e) => Err(self.map_err("create container", "", &e)),
        }
    }

    fn map_err(&self, op: &str, key: &str, e: &azure_core::Error) -> StoreError {
        errors::map(
            &Target {
                op,
                key,
                container: &self.inner.container,
                account: &self.inner.account,
            },
            e,
        )
    }

    /// The client of `key`'s blob, after validating the key.
    fn blob(&self, key: &str) -> Result<BlobClient> {
        validate_key(key)?;
        let name_len = self.inner.root.len() + key.len();
        if name_len > MAX_KEY_LEN {
            return Err(StoreError::Invalid(format!(
                "key {key:?}: with the store prefix the blob name is {name_len} bytes, more \
                 than Azure's {MAX_KEY_LEN}"
            )));
        }
        let mut url = self.inner.container_url.clone();
        {
            let mut segments = url.path_segments_mut().map_err(|()| {
                StoreError::Config("Azure container URL cannot hold a path".into())
            })?;
            // One segment per component, so the name's '/' stay literal in the URL.
            segments.extend(self.inner.root.split_terminator('/'));
            segments.extend(key.split('/'));
        }
        BlobClient::new(url, None, Some(self.inner.blob_options.clone())).map_err(|e| {
            StoreError::Config(format!(
                "Azure blob client for {key:?}: {}",
                errors::describe(&e)
            ))
        })
    }

    /// Downloads `range` (or everything), restarting when the blob is replaced between
    /// the ranged requests of a large download (the SDK pins later ranges to the first
    /// response's ETag, so a replacement shows up as 412).
    async fn download(
        &self,
        blob: &BlobClient,
        key: &str,
        op: &str,
        range: Option<Range<u64>>,
    ) -> Result<(BlobDownloadProperties, Bytes)> {
        let partition = usize::try_from(self.inner.block_size)
            .ok()
            .and_then(NonZero::new)
            .ok_or_else(|| StoreError::Config("Azure block size does not fit memory".into()))?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let options = BlobClientDownloadOptions {
                range: range.clone().map(Into::into),
                parallel: Some(self.inner.concurrency),
                partition_size: Some(partition),
                ..Default::default()
            };
            let BlobClientDownloadResult {
                body,
                properties,
                headers,
            } = match blob.download(Some(options)).await {
                Ok(r) => r,
                Err(e) => return Err(self.map_err(op, key, &e)),
            };
            if let Some(range) = &range {
                // Azure truncates a range that reaches past the end instead of failing;
                // the size in Content-Range tells, before the rest is fetched.
                let size = object_size(&headers, &properties)
                    .ok_or_else(|| missing_header(op, key, "Content-Range or Content-Length"))?;
                if range.end > size {
                    return Err(past_end(key, range, size));
                }
            }
            match body.collect().await {
                Ok(data) => return Ok((properties, data)),
                Err(e) if is(&e, 412, None) && attempt < RESTARTS => {
                    tracing::debug!(key, "object replaced during a ranged download; restarting");
                }
                Err(e) => return Err(self.map_err(op, key, &e)),
            }
        }
    }

    async fn size(&self, blob: &BlobClient, key: &str, op: &str) -> Result<u64> {
        let props = blob
            .get_properties(None)
            .await
            .map_err(|e| self.map_err(op, key, &e))?;
        props
            .content_length()
            .map_err(|e| self.map_err(op, key, &e))?
            .ok_or_else(|| missing_header(op, key, "Content-Length"))
    }
}

/// Total size of the blob according to a download's first response.
fn object_size(headers: &Headers, properties: &BlobDownloadProperties) -> Option<u64> {
    match headers.get_optional_str(&"content-range".into()) {
        // "bytes 0-9/1000"
        Some(range) => range.rsplit_once('/')?.1.trim().parse().ok(),
        // A 200 answer (the SDK retries an empty blob without a range) is the whole blob.
        None => properties.content_length,
    }
}

fn past_end(key: &str, range: &Range<u64>, size: u64) -> StoreError {
    StoreError::Invalid(format!(
        "range {range:?} of {key:?} reaches past the end ({size} bytes)"
    ))
}

fn missing_header(op: &str, key: &str, header: &str) -> StoreError {
    StoreError::Backend(format!(
        "Azure {op} of {key:?}: the response has no {header} header"
    ))
}

fn to_time(d: std::time::Duration) -> azure_core::time::Duration {
    azure_core::time::Duration::milliseconds(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn entra_credential(credential: &AzureCredential) -> Result<Arc<dyn TokenCredential>> {
    let failed = |what: &str, e: azure_core::Error| {
        StoreError::Config(format!("Azure {what} credential: {}", errors::describe(&e)))
    };
    Ok(match credential {
        AzureCredential::TokenCredential(c) => Arc::clone(c),
        AzureCredential::ManagedIdentity { client_id } => {
            auth::managed_identity(client_id.clone()).map_err(|e| failed("managed identity", e))?
        }
        AzureCredential::DeveloperTools => azure_identity::DeveloperToolsCredential::new(None)
            .map_err(|e| failed("developer tools", e))?,
        _ => DefaultIdentity::new().map_err(|e| failed("default identity", e))?,
    })
}

#[async_trait]
impl ObjectStore for AzureStore {
    async fn put(&self, key: &str, data: Bytes) -> Result<PutResult> {
        self.write(key, data, Cond::Always).await
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<PutResult> {
        self.write(key, data, Cond::Absent).await
    }

    async fn put_if_match(&self, key: &str, data: Bytes, etag: &ETag) -> Result<PutResult> {
        self.write(key, data, Cond::Match(etag)).await
    }

    async fn get(&self, key: &str) -> Result<GetResult> {
        let blob = self.blob(key)?;
        let (properties, data) = self.download(&blob, key, "get", None).await?;
        let etag = properties
            .etag
            .map(|e| ETag(e.to_string()))
            .ok_or_else(|| missing_header("get", key, "ETag"))?;
        Ok(GetResult { data, etag })
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        if range.start > range.end {
            return Err(StoreError::Invalid(format!(
                "range {range:?} of {key:?}: start is after end"
            )));
        }
        let blob = self.blob(key)?;
        if range.is_empty() {
            // The service cannot express an empty range; the size alone decides.
            let size = self.size(&blob, key, "get_range").await?;
            return if range.start > size {
                Err(past_end(key, &range, size))
            } else {
                Ok(Bytes::new())
            };
        }
        let want = range.end - range.start;
        let (_, data) = self
            .download(&blob, key, "get_range", Some(range.clone()))
            .await?;
        if data.len() as u64 != want {
            return Err(StoreError::Backend(format!(
                "Azure get_range {range:?} of {key:?} returned {} bytes",
                data.len()
            )));
        }
        Ok(data)
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        let blob = self.blob(key)?;
        let size = self.size(&blob, key, "head").await?;
        Ok(ObjectMeta {
            key: key.to_owned(),
            size,
        })
    }

    async fn list(&self, prefix: &str, start_after: Option<&str>, max: usize) -> Result<ListPage> {
        self.list_page(prefix, start_after, max).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let blob = self.blob(key)?;
        match blob.delete(None).await {
            Ok(_) => Ok(()),
            Err(e) if is(&e, 404, Some("BlobNotFound")) => Ok(()),
            Err(e) => Err(self.map_err("delete", key, &e)),
        }
    }
}
