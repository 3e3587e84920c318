//! Amazon S3 and S3-compatible backend, on `aws-sdk-s3`.
//!
//! Credentials and region come from the standard AWS chain (environment, profile, web
//! identity, instance metadata); a store location adds the bucket, a key prefix and the
//! options S3-compatible servers need (endpoint, path-style addressing, checksums only
//! when required). Conditional writes use `If-None-Match: *` and `If-Match`, which S3
//! has offered since 2024; the SDK retries throttling and 5xx answers with exponential
//! backoff and full jitter.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::head_object::HeadObjectOutput;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use bytes::Bytes;
use tokio::sync::OnceCell;

use crate::key::{validate_prefix, MAX_KEY_LEN};
use crate::location::{parse_bool, parse_size, Location};
use crate::{
    validate_key, ETag, GetResult, ListPage, ObjectMeta, ObjectStore, PutResult, Result, StoreError,
};

/// User metadata naming the request that wrote an object conditionally, so that a
/// retried request can recognise its own earlier, landed attempt.
const WRITE_ID_META: &str = "tidemark-write-id";

/// S3 never accepts a multipart part below 5 MiB (except the last).
const MIN_PART_SIZE: u64 = 5 << 20;

/// How an S3 store is reached and how it writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Config {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix inside the bucket (no leading or trailing `/`), or empty.
    pub prefix: String,
    /// Endpoint of an S3-compatible server; `None` for AWS (or `AWS_ENDPOINT_URL`).
    pub endpoint: Option<String>,
    /// Region; `None` takes it from the AWS chain, else `us-east-1`.
    pub region: Option<String>,
    /// Address buckets as `endpoint/bucket` instead of `bucket.endpoint`.
    pub path_style: bool,
    /// Send request checksums only when an operation requires them (some S3-compatible
    /// stores reject the SDK's default CRC checksums).
    pub checksums_when_required: bool,
    /// Objects at least this large are uploaded in parts.
    pub multipart_threshold: u64,
    /// Size of each part of a multipart upload (≥ 5 MiB).
    pub part_size: u64,
    /// Parts of one object uploaded at once.
    pub part_concurrency: usize,
    /// Attempts per request, the first included, before an error is returned.
    pub max_attempts: u32,
    /// Limit for one attempt of one request.
    pub attempt_timeout: Duration,
    /// Limit for establishing a connection.
    pub connect_timeout: Duration,
}

impl S3Config {
    /// Defaults for `bucket` with no prefix, for AWS.
    pub fn new(bucket: impl Into<String>) -> Self {
        S3Config {
            bucket: bucket.into(),
            prefix: String::new(),
            endpoint: None,
            region: None,
            path_style: false,
            checksums_when_required: false,
            multipart_threshold: 32 << 20,
            part_size: 16 << 20,
            part_concurrency: 4,
            max_attempts: 8,
            attempt_timeout: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(10),
        }
    }

    /// Parses `s3://bucket/prefix?option=value&...`.
    ///
    /// Options: `endpoint` (URL of an S3-compatible server; also `AWS_ENDPOINT_URL`),
    /// `region`, `path_style` (true/false; defaults to true when an endpoint is given),
    /// `checksums` (`when_required` or `when_supported`), `multipart_threshold`,
    /// `part_size` (sizes with an optional KiB/MiB/GiB suffix), `part_concurrency`,
    /// `max_attempts`, `attempt_timeout_secs`, `connect_timeout_secs`.
    pub fn from_url(url: &str) -> Result<Self> {
        let loc = Location::parse(url, "s3")?;
        validate_bucket(url, &loc.container)?;
        let mut cfg = S3Config::new(loc.container.clone());
        cfg.prefix = loc.prefix.clone();
        let mut path_style = None;
        for (name, value) in &loc.options {
            let bad = |what: &str| {
                StoreError::Config(format!(
                    "store location {url:?}: option {name}={value:?}: {what}"
                ))
            };
            match name.as_str() {
                "endpoint" => cfg.endpoint = Some(value.clone()),
                "region" => cfg.region = Some(value.clone()),
                "path_style" => {
                    path_style =
                        Some(parse_bool(value).ok_or_else(|| bad("expected true or false"))?)
                }
                "checksums" => {
                    cfg.checksums_when_required = match value.as_str() {
                        "when_required" => true,
                        "when_supported" => false,
                        _ => return Err(bad("expected when_required or when_supported")),
                    }
                }
                "multipart_threshold" => {
                    cfg.multipart_threshold =
                        parse_size(value).ok_or_else(|| bad("expected a size"))?
                }
                "part_size" => {
                    cfg.part_size = parse_size(value).ok_or_else(|| bad("expected a size"))?
                }
                "part_concurrency" => {
                    cfg.part_concurrency = value.parse().map_err(|_| bad("expected a number"))?
                }
                "max_attempts" => {
                    cfg.max_attempts = value.parse().map_err(|_| bad("expected a number"))?
                }
                "attempt_timeout_secs" => {
                    cfg.attempt_timeout =
                        Duration::from_secs(value.parse().map_err(|_| bad("expected seconds"))?)
                }
                "connect_timeout_secs" => {
                    cfg.connect_timeout =
                        Duration::from_secs(value.parse().map_err(|_| bad("expected seconds"))?)
                }
                _ => return Err(bad("unknown option for s3://")),
            }
        }
        if cfg.endpoint.is_none() {
            cfg.endpoint = std::env::var("AWS_ENDPOINT_URL_S3")
                .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
                .ok()
                .filter(|e| !e.is_empty());
        }
        if let Some(env) = std::env::var("TIDEMARK_S3_PATH_STYLE")
            .ok()
            .filter(|v| !v.is_empty())
        {
            path_style = path_style.or(Some(parse_bool(&env).ok_or_else(|| {
                StoreError::Config(format!(
                    "TIDEMARK_S3_PATH_STYLE={env:?}: expected true or false"
                ))
            })?));
        }
        // Virtual-host addressing needs DNS for every bucket, which S3-compatible
        // servers on an IP address or a single host name rarely have.
        cfg.path_style = path_style.unwrap_or(cfg.endpoint.is_some());
        if std::env::var("TIDEMARK_S3_CHECKSUMS").as_deref() == Ok("when_required") {
            cfg.checksums_when_required = true;
        }
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<()> {
        if self.part_concurrency == 0 || self.max_attempts == 0 {
            return Err(StoreError::Config(
                "S3 part concurrency and attempts must be at least 1".into(),
            ));
        }
        if self.part_size < MIN_PART_SIZE {
            return Err(StoreError::Config(format!(
                "S3 part size {} is below the 5 MiB S3 minimum",
                self.part_size
            )));
        }
        if self.multipart_threshold < self.part_size {
            return Err(StoreError::Config(format!(
                "S3 multipart threshold {} is below the part size {}",
                self.multipart_threshold, self.part_size
            )));
        }
        if !self.prefix.is_empty() {
            validate_key(&self.prefix)
                .map_err(|e| StoreError::Config(format!("S3 key prefix: {e}")))?;
        }
        Ok(())
    }
}

/// Bucket names as S3 accepts them (3–63 lowercase letters, digits, `.` and `-`).
fn validate_bucket(url: &str, bucket: &str) -> Result<()> {
    let ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && bucket.as_bytes()[0].is_ascii_alphanumeric()
        && bucket.as_bytes()[bucket.len() - 1].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(StoreError::Config(format!(
            "store location {url:?}: {bucket:?} is not a valid S3 bucket name"
        )))
    }
}

/// A bucket (and key prefix) of S3 or an S3-compatible server.
#[derive(Clone)]
pub struct S3Store {
    config: Arc<S3Config>,
    /// Built on first use: loading the AWS chain is async and may touch the network.
    client: Arc<OnceCell<Client>>,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store")
            .field("bucket", &self.config.bucket)
            .field("prefix", &self.config.prefix)
            .field("endpoint", &self.config.endpoint)
            .finish()
    }
}

impl S3Store {
    /// A store for `config`; nothing is contacted until the first operation.
    pub fn new(config: S3Config) -> Result<Self> {
        config.validate()?;
        Ok(S3Store {
            config: Arc::new(config),
            client: Arc::new(OnceCell::new()),
        })
    }

    /// Opens `s3://bucket/prefix?options` (see [`S3Config::from_url`]).
    pub fn from_url(url: &str) -> Result<Self> {
        S3Store::new(S3Config::from_url(url)?)
    }

    /// The configuration in use.
    pub fn config(&self) -> &S3Config {
        &self.config
    }

    /// Creates the bucket unless it exists (first-time setup and tests).
    pub async fn create_bucket_if_missing(&self) -> Result<()> {
        let client = self.client().await?;
        match client
            .create_bucket()
            .bucket(&self.config.bucket)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match e.code() {
                Some("BucketAlreadyOwnedByYou") | Some("BucketAlreadyExists") => Ok(()),
                _ => Err(map_err(e, &self.config.bucket)),
            },
        }
    }

    async fn client(&self) -> Result<&Client> {
        self.client
            .get_or_try_init(|| async { Ok(build_client(&self.config).await) })
            .await
    }

    /// Checks `key` by the common rules and, with the prefix, against S3's 1024-byte
    /// limit on whole object keys.
    fn check_key(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        let len = self.full_key(key).len();
        if len > MAX_KEY_LEN {
            return Err(StoreError::Invalid(format!(
                "key {key:?}: with the store prefix the object key is {len} bytes, more than \
                 S3's {MAX_KEY_LEN}"
            )));
        }
        Ok(())
    }

    fn full_key(&self, key: &str) -> String {
        if self.config.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}/{key}", self.config.prefix)
        }
    }

    fn relative_key<'a>(&self, full: &'a str) -> Option<&'a str> {
        if self.config.prefix.is_empty() {
            Some(full)
        } else {
            full.strip_prefix(self.config.prefix.as_str())?
                .strip_prefix('/')
        }
    }

    async fn put_single(
        &self,
        key: &str,
        data: Bytes,
        condition: Condition<'_>,
    ) -> Result<PutResult> {
        let client = self.client().await?;
        let mut req = client
            .put_object()
            .bucket(&self.config.bucket)
            .key(self.full_key(key))
            .content_length(data.len() as i64)
            .body(ByteStream::from(data));
        let write_id = format!("{:032x}", rand::random::<u128>());
        req = match condition {
            Condition::None => req,
            Condition::Absent => req.if_none_match("*").metadata(WRITE_ID_META, &write_id),
            Condition::Match(etag) => req.if_match(&etag.0).metadata(WRITE_ID_META, &write_id),
        };
        let err = match req.send().await {
            Ok(out) => return etag_of(out.e_tag(), key),
            Err(e) => map_put_err(e, key, condition),
        };
        match err {
            StoreError::AlreadyExists { .. } | StoreError::PreconditionFailed { .. } => {}
            other => return Err(other),
        }
        // The SDK retries a request whose answer was lost; if the first attempt landed,
        // the retry fails its condition against our own write. The write id tells.
        match self.head_write_id(key).await? {
            Some((Some(id), etag)) if id == write_id => Ok(PutResult { etag }),
            Some(_) => Err(err),
            // 409 from a create-only race, and the object is gone again (a delete raced
            // too): nothing can be said, so the caller retries.
            None if matches!(condition, Condition::Absent) => Err(StoreError::Backend(format!(
                "create-only write of {key} conflicted with a concurrent request; retry"
            ))),
            None => Err(err),
        }
    }

    /// The write id and version of `key`; `None` if it does not exist.
    async fn head_write_id(&self, key: &str) -> Result<Option<(Option<String>, ETag)>> {
        let out = match self.head_object(key).await {
            Ok(out) => out,
            Err(StoreError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let id = out.metadata().and_then(|m| m.get(WRITE_ID_META)).cloned();
        Ok(Some((id, etag_of(out.e_tag(), key)?.etag)))
    }

    async fn put_multipart(&self, key: &str, data: Bytes) -> Result<PutResult> {
        let client = self.client().await?;
        let full = self.full_key(key);
        let created = client
            .create_multipart_upload()
            .bucket(&self.config.bucket)
            .key(&full)
            .send()
            .await
            .map_err(|e| map_err(e, key))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| StoreError::Backend(format!("no upload id for {key}")))?
            .to_owned();
        let result = self
            .upload_parts(client, &full, &upload_id, key, data)
            .await;
        if result.is_err() {
            // Best effort: an abandoned upload only costs storage until a bucket
            // lifecycle rule (or GC of incomplete uploads) removes it.
            let _ = client
                .abort_multipart_upload()
                .bucket(&self.config.bucket)
                .key(&full)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result
    }

    async fn upload_parts(
        &self,
        client: &Client,
        full: &str,
        upload_id: &str,
        key: &str,
        data: Bytes,
    ) -> Result<PutResult> {
        let part_size = self.config.part_size as usize;
        let ranges: Vec<(i32, Bytes)> = (0..data.len())
            .step_by(part_size)
            .enumerate()
            .map(|(i, start)| {
                let end = (start + part_size).min(data.len());
                (i as i32 + 1, data.slice(start..end))
            })
            .collect();
        let mut parts = Vec::with_capacity(ranges.len());
        let mut pending = ranges.into_iter();
        let mut inflight = tokio::task::JoinSet::new();
        loop {
            while inflight.len() < self.config.part_concurrency {
                let Some((number, body)) = pending.next() else {
                    break;
                };
                let req = client
                    .upload_part()
                    .bucket(&self.config.bucket)
                    .key(full)
                    .upload_id(upload_id)
                    .part_number(number)
                    .content_length(body.len() as i64)
                    .body(ByteStream::from(body));
                let key = key.to_owned();
                inflight.spawn(async move {
                    let out = req.send().await.map_err(|e| map_err(e, &key))?;
                    let etag = out.e_tag().map(str::to_owned).ok_or_else(|| {
                        StoreError::Backend(format!("no etag for part {number} of {key}"))
                    })?;
                    Ok::<_, StoreError>(
                        CompletedPart::builder()
                            .part_number(number)
                            .e_tag(etag)
                            .build(),
                    )
                });
            }
            match inflight.join_next().await {
                None => break,
                Some(joined) => {
                    let part = joined
                        .map_err(|e| StoreError::Backend(format!("part upload task: {e}")))??;
                    parts.push(part);
                }
            }
        }
        parts.sort_by_key(|p| p.part_number());
        let out = client
            .complete_multipart_upload()
            .bucket(&self.config.bucket)
            .key(full)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| map_err(e, key))?;
        etag_of(out.e_tag(), key)
    }

    async fn head_object(&self, key: &str) -> Result<HeadObjectOutput> {
        let client = self.client().await?;
        client
            .head_object()
            .bucket(&self.config.bucket)
            .key(self.full_key(key))
            .send()
            .await
            .map_err(|e| map_err(e, key))
    }

    async fn head_size(&self, key: &str) -> Result<u64> {
        let size = self.head_object(key).await?.content_length().unwrap_or(0);
        u64::try_from(size).map_err(|_| StoreError::Backend(format!("negative size of {key}")))
    }
}

/// The condition of a write, also used to map its failures.
#[derive(Clone, Copy)]
enum Condition<'a> {
    None,
    Absent,
    Match(&'a ETag),
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn put(&self, key: &str, data: Bytes) -> Result<PutResult> {
        self.check_key(key)?;
        if data.len() as u64 >= self.config.multipart_threshold {
            self.put_multipart(key, data).await
        } else {
            self.put_single(key, data, Condition::None).await
        }
    }

    // Conditional writes are single requests (S3 accepts up to 5 GiB in one PUT): the
    // objects written this way are segments and records, never packs.
    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<PutResult> {
        self.check_key(key)?;
        self.put_single(key, data, Condition::Absent).await
    }

    async fn put_if_match(&self, key: &str, data: Bytes, etag: &ETag) -> Result<PutResult> {
        self.check_key(key)?;
        self.put_single(key, data, Condition::Match(etag)).await
    }

    async fn get(&self, key: &str) -> Result<GetResult> {
        self.check_key(key)?;
        let client = self.client().await?;
        let out = client
            .get_object()
            .bucket(&self.config.bucket)
            .key(self.full_key(key))
            .send()
            .await
            .map_err(|e| map_err(e, key))?;
        let etag = etag_of(out.e_tag(), key)?.etag;
        let expected = out.content_length().unwrap_or(-1);
        let data = collect(out.body, key).await?;
        if expected >= 0 && data.len() as i64 != expected {
            return Err(StoreError::Backend(format!(
                "short read of {key}: {} of {expected} bytes",
                data.len()
            )));
        }
        Ok(GetResult { data, etag })
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        self.check_key(key)?;
        if range.start > range.end {
            return Err(StoreError::Invalid(format!(
                "range {range:?} of {key} starts after its end"
            )));
        }
        if range.is_empty() {
            // HTTP cannot ask for zero bytes; the object must still exist and be long
            // enough, as on every other backend.
            let size = self.head_size(key).await?;
            if range.end > size {
                return Err(past_end(key, &range, size));
            }
            return Ok(Bytes::new());
        }
        let client = self.client().await?;
        let out = client
            .get_object()
            .bucket(&self.config.bucket)
            .key(self.full_key(key))
            .range(format!("bytes={}-{}", range.start, range.end - 1))
            .send()
            .await
            .map_err(|e| match e.code() {
                Some("InvalidRange") => StoreError::Invalid(format!(
                    "range {range:?} of {key} starts past the end of the object"
                )),
                _ => map_err(e, key),
            })?;
        let data = collect(out.body, key).await?;
        // S3 answers a range that runs past the end with the bytes that exist.
        if data.len() as u64 != range.end - range.start {
            return Err(StoreError::Invalid(format!(
                "range {range:?} of {key} reaches past the end of the object ({} bytes \
                 available from its start)",
                data.len()
            )));
        }
        Ok(data)
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        self.check_key(key)?;
        Ok(ObjectMeta {
            key: key.to_owned(),
            size: self.head_size(key).await?,
        })
    }

    async fn list(&self, prefix: &str, start_after: Option<&str>, max: usize) -> Result<ListPage> {
        validate_prefix(prefix)?;
        if max == 0 {
            return Err(StoreError::Invalid(
                "list page size must be at least 1".into(),
            ));
        }
        let client = self.client().await?;
        let mut req = client
            .list_objects_v2()
            .bucket(&self.config.bucket)
            .prefix(self.full_key(prefix))
            .max_keys(max.min(1000) as i32);
        if self.config.prefix.is_empty() && prefix.is_empty() {
            req = req.set_prefix(None);
        }
        if let Some(after) = start_after {
            req = req.start_after(self.full_key(after));
        }
        let out = req.send().await.map_err(|e| map_err(e, prefix))?;
        let mut objects = Vec::with_capacity(out.contents().len());
        for obj in out.contents() {
            let Some(full) = obj.key() else { continue };
            let Some(key) = self.relative_key(full) else {
                continue;
            };
            // Objects written by other tools under the prefix may not be valid keys;
            // listing them would hand callers keys every other call rejects.
            if validate_key(key).is_err() {
                continue;
            }
            objects.push(ObjectMeta {
                key: key.to_owned(),
                size: obj.size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
            });
        }
        let next_start_after = if out.is_truncated() == Some(true) {
            match out.contents().last().and_then(|o| o.key()) {
                Some(last) => self.relative_key(last).map(str::to_owned),
                None => None,
            }
        } else {
            None
        };
        Ok(ListPage {
            objects,
            next_start_after,
        })
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.check_key(key)?;
        let client = self.client().await?;
        client
            .delete_object()
            .bucket(&self.config.bucket)
            .key(self.full_key(key))
            .send()
            .await
            .map_err(|e| map_err(e, key))?;
        Ok(())
    }
}

async fn build_client(cfg: &S3Config) -> Client {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(cfg.max_attempts)
                .with_initial_backoff(Duration::from_millis(100))
                .with_max_backoff(Duration::from_secs(20)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(cfg.connect_timeout)
                .operation_attempt_timeout(cfg.attempt_timeout)
                .build(),
        );
    if let Some(region) = &cfg.region {
        loader = loader.region(Region::new(region.clone()));
    }
    let shared = loader.load().await;
    let mut builder = aws_sdk_s3::config::Builder::from(&shared).force_path_style(cfg.path_style);
    if shared.region().is_none() {
        builder = builder.region(Region::new("us-east-1"));
    }
    if let Some(endpoint) = &cfg.endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    if cfg.checksums_when_required {
        builder = builder
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
    }
    Client::from_conf(builder.build())
}

async fn collect(body: ByteStream, key: &str) -> Result<Bytes> {
    let agg = body
        .collect()
        .await
        .map_err(|e| StoreError::Backend(format!("reading {key}: {e}")))?;
    Ok(agg.into_bytes())
}

fn etag_of(etag: Option<&str>, key: &str) -> Result<PutResult> {
    match etag {
        Some(e) if !e.is_empty() => Ok(PutResult {
            etag: ETag(e.to_owned()),
        }),
        _ => Err(StoreError::Backend(format!("no ETag returned for {key}"))),
    }
}

fn past_end(key: &str, range: &Range<u64>, size: u64) -> StoreError {
    StoreError::Invalid(format!(
        "range {range:?} of {key} reaches past the end of the object ({size} bytes)"
    ))
}

fn map_put_err<E>(e: SdkError<E>, key: &str, condition: Condition<'_>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = status_of(&e);
    match (condition, status) {
        // S3 answers 412 to If-None-Match on an existing key; some S3-compatible
        // servers answer 409 (a concurrent conditional write in progress).
        (Condition::Absent, Some(412)) | (Condition::Absent, Some(409)) => {
            StoreError::AlreadyExists {
                key: key.to_owned(),
            }
        }
        // A missing object fails If-Match with 404 on some servers, 412 on others.
        (Condition::Match(_), Some(412)) | (Condition::Match(_), Some(404)) => {
            StoreError::PreconditionFailed {
                key: key.to_owned(),
            }
        }
        _ => map_err(e, key),
    }
}

fn status_of<E>(e: &SdkError<E>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

/// Maps an SDK failure (already retried) to what a caller can act on.
fn map_err<E>(e: SdkError<E>, key: &str) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = status_of(&e);
    let code = e.code().map(str::to_owned);
    match (status, code.as_deref()) {
        (_, Some("NoSuchKey")) | (Some(404), None) | (Some(404), Some("NotFound")) => {
            StoreError::NotFound {
                key: key.to_owned(),
            }
        }
        (_, Some("NoSuchBucket")) => {
            StoreError::Config(format!("the bucket does not exist ({key})"))
        }
        (Some(401), _)
        | (Some(403), _)
        | (_, Some("InvalidAccessKeyId"))
        | (_, Some("SignatureDoesNotMatch")) => StoreError::Config(format!(
            "access to {key} denied ({}): check the AWS credentials and the bucket policy",
            code.as_deref().unwrap_or("HTTP 403")
        )),
        _ => {
            let detail = aws_sdk_s3::error::DisplayErrorContext(&e);
            match status {
                Some(s) => StoreError::Backend(format!("S3 answered HTTP {s} for {key}: {detail}")),
                None => StoreError::Backend(format!("S3 request for {key} failed: {detail}")),
            }
        }
    }
}
