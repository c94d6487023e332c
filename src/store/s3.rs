//! A store in an S3 bucket (AWS or self-hosted: Garage, MinIO, Ceph), through aws-sdk-s3.
//!
//! - [`S3Config`] is the serde shape of a plan's `[[destinations]] type = "s3"` entry (and of the
//!   `s3://bucket/prefix?key=value…` location form, see [`S3Config::from_url`]).
//! - [`S3Store`] implements [`Store`]: every PUT carries a Content-MD5 (so buckets with Object
//!   Lock accept it and a body damaged in flight is refused with `BadDigest`), large objects go
//!   up as a multipart upload with parallel parts (aborted on failure, also when the request is
//!   cancelled by the retry watchdog), and the size is confirmed with a HEAD after every upload.
//! - SDK errors map to [`StoreError`]: 404 → `NotFound`, 403 / bad key / bad signature →
//!   `PermissionDenied` (permanent: no retry storm), 503 / SlowDown / 429 → `Throttled`, other
//!   5xx / timeouts / connection errors → `Transient` / `Unreachable`, `RequestTimeTooSkewed`
//!   (or a server `Date` more than 15 minutes off) → `ClockSkew`.
//! - [`healthcheck`] tells apart an unknown bucket, bad credentials, an unreachable endpoint, a
//!   wrong region and clock skew, each with a hint (the plan preflight calls it).
//!
//! The SDK's own retries are switched off: retries, the stalled-request watchdog and the
//! deadline are the [`super::retry::RetryStore`] decorator's job, so they are counted in one
//! place. Credentials come from the standard AWS chain (environment, profile, web identity,
//! instance metadata) or from a credentials file named in the config; no secret is ever part of
//! a `Debug` or `Display` output of this module.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_s3::config::retry::RetryConfig as SdkRetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, ObjectLockMode, ServerSideEncryption, StorageClass,
};
use aws_sdk_s3::Client;
use base64::Engine as _;
use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use super::retry::RetryConfig;
use super::{ObjectInfo, Store, StoreError, StoreResult};

/// SigV4 refuses requests whose clock is further than this from the server's.
const SKEW_LIMIT: Duration = Duration::from_secs(15 * 60);

fn default_true() -> bool {
    true
}
fn default_multipart_threshold() -> u64 {
    32
}
fn default_part_size() -> u64 {
    8
}
fn default_multipart_concurrency() -> usize {
    4
}
fn default_connect_timeout() -> u64 {
    10
}
fn default_request_timeout() -> u64 {
    300
}
fn default_max_retries() -> u32 {
    10
}
fn default_max_concurrency() -> usize {
    32
}
fn default_deadline() -> u64 {
    6 * 3600
}

/// One S3 destination. Keys (all optional unless marked):
///
/// | key | meaning |
/// | --- | --- |
/// | `name` | label of this destination in output, `--region` and reports (default: `region`) |
/// | `bucket` | **required** bucket name |
/// | `prefix` | key prefix inside the bucket (default: none) |
/// | `region` | **required** S3 region (for self-hosted S3: the server's configured region) |
/// | `endpoint` | endpoint URL for self-hosted S3, e.g. `http://127.0.0.1:3900` |
/// | `path_style` | path-style addressing (`http://host/bucket/key`); default true when `endpoint` is set |
/// | `profile` | profile name in the AWS config/credentials files |
/// | `credentials_file` | AWS-format credentials file to use instead of the standard chain |
/// | `storage_class` | e.g. `STANDARD_IA`, `GLACIER_IR` |
/// | `sse` | server-side encryption: `AES256` or `aws:kms` |
/// | `sse_kms_key_id` | KMS key for `sse = "aws:kms"` |
/// | `object_lock_mode` | `governance` or `compliance` (needs a bucket with Object Lock) |
/// | `object_lock_days` | retention in days for `object_lock_mode` |
/// | `multipart_threshold_mib` | objects at least this large use multipart upload (default 32) |
/// | `part_size_mib` | multipart part size (default 8, minimum 5) |
/// | `multipart_concurrency` | parts uploaded in parallel (default 4) |
/// | `connect_timeout_secs` | TCP/TLS connect timeout (default 10) |
/// | `request_timeout_secs` | stalled-request watchdog per attempt (default 300) |
/// | `max_retries` | retries of a transient failure (default 10) |
/// | `deadline_secs` | overall deadline of one operation including retries (default 21600) |
/// | `max_concurrency` | most requests in flight; 503 SlowDown halves the live limit (default 32) |
///
/// The secret key is never part of this config: it comes from the AWS credential chain
/// (`AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`, profile, web identity, instance metadata) or
/// the `credentials_file`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    #[serde(default)]
    pub name: Option<String>,
    pub bucket: String,
    #[serde(default)]
    pub prefix: String,
    pub region: String,
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub path_style: Option<bool>,
    #[serde(default)]
    pub profile: Option<String>,
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    #[serde(default)]
    pub storage_class: Option<String>,
    #[serde(default)]
    pub sse: Option<String>,
    #[serde(default)]
    pub sse_kms_key_id: Option<String>,
    #[serde(default)]
    pub object_lock_mode: Option<LockMode>,
    #[serde(default)]
    pub object_lock_days: Option<u32>,
    #[serde(default = "default_multipart_threshold")]
    pub multipart_threshold_mib: u64,
    #[serde(default = "default_part_size")]
    pub part_size_mib: u64,
    #[serde(default = "default_multipart_concurrency")]
    pub multipart_concurrency: usize,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: u64,
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    #[serde(default = "default_deadline")]
    pub deadline_secs: u64,
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
    /// Verify the size of every uploaded object with a HEAD (default true).
    #[serde(default = "default_true")]
    pub verify_uploads: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LockMode {
    Governance,
    Compliance,
}

impl S3Config {
    /// A config with every optional key at its default.
    pub fn new(bucket: impl Into<String>, region: impl Into<String>) -> Self {
        S3Config {
            name: None,
            bucket: bucket.into(),
            prefix: String::new(),
            region: region.into(),
            endpoint: None,
            path_style: None,
            profile: None,
            credentials_file: None,
            storage_class: None,
            sse: None,
            sse_kms_key_id: None,
            object_lock_mode: None,
            object_lock_days: None,
            multipart_threshold_mib: default_multipart_threshold(),
            part_size_mib: default_part_size(),
            multipart_concurrency: default_multipart_concurrency(),
            connect_timeout_secs: default_connect_timeout(),
            request_timeout_secs: default_request_timeout(),
            max_retries: default_max_retries(),
            deadline_secs: default_deadline(),
            max_concurrency: default_max_concurrency(),
            verify_uploads: true,
        }
    }

    /// The destination's label: `name`, else the region.
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.region)
    }

    /// Parses `s3://BUCKET[/PREFIX][?key=value&…]`; the query keys are the config keys above
    /// (values percent-decoded), e.g.
    /// `s3://backups/host1?endpoint=http://127.0.0.1:3900&region=garage&name=eu`.
    pub fn from_url(url: &str) -> Result<S3Config, String> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| format!("{url:?} does not start with s3://"))?;
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, q),
            None => (rest, ""),
        };
        // Errors show only `s3://bucket/prefix`: the query could hold an endpoint with
        // `user:password@`, which is refused below and must not be echoed.
        let url = format!("s3://{path}");
        let url = url.as_str();
        let (bucket, prefix) = match path.split_once('/') {
            Some((b, p)) => (b, p.trim_matches('/')),
            None => (path, ""),
        };
        if bucket.is_empty() {
            return Err(format!(
                "{url:?} names no bucket: expected s3://BUCKET/PREFIX"
            ));
        }
        let mut table = toml::Table::new();
        table.insert("bucket".into(), bucket.into());
        table.insert("prefix".into(), prefix.into());
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, "true"));
            let v = percent_decode(v).map_err(|e| format!("{url:?}: value of {k}: {e}"))?;
            let value: toml::Value = match k {
                "path_style" | "verify_uploads" => v
                    .parse::<bool>()
                    .map_err(|_| format!("{url:?}: {k} must be true or false"))?
                    .into(),
                "object_lock_days"
                | "multipart_threshold_mib"
                | "part_size_mib"
                | "multipart_concurrency"
                | "connect_timeout_secs"
                | "request_timeout_secs"
                | "max_retries"
                | "max_concurrency"
                | "deadline_secs" => v
                    .parse::<i64>()
                    .map_err(|_| format!("{url:?}: {k} must be a whole number"))?
                    .into(),
                _ => v.into(),
            };
            table.insert(k.into(), value);
        }
        if !table.contains_key("region") {
            return Err(format!(
                "{url:?} names no region: add ?region=NAME (for self-hosted S3, the server's s3_region)"
            ));
        }
        let cfg: S3Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| format!("{url:?}: {}", e.message()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values that serde cannot: ranges and combinations.
    pub fn validate(&self) -> Result<(), String> {
        let who = format!("S3 destination {:?} (bucket {})", self.label(), self.bucket);
        if self.bucket.is_empty() || self.bucket.contains('/') {
            return Err(format!("{who}: bucket must be a bucket name without '/'"));
        }
        if self.region.is_empty() {
            return Err(format!("{who}: region is empty"));
        }
        if let Some(e) = &self.endpoint {
            let authority = e
                .split_once("://")
                .map(|(_, r)| r.split('/').next().unwrap_or(""))
                .unwrap_or("");
            if authority.contains('@') {
                return Err(format!(
                    "{who}: the endpoint must not contain user:password@ — credentials come from the AWS credential chain or credentials_file"
                ));
            }
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(format!(
                    "{who}: endpoint {e:?} must start with http:// or https://"
                ));
            }
        }
        if self.part_size_mib < 5 || self.part_size_mib > 5 * 1024 {
            return Err(format!(
                "{who}: part_size_mib must be between 5 and 5120 (S3's part size limits)"
            ));
        }
        if self.multipart_threshold_mib < self.part_size_mib {
            return Err(format!(
                "{who}: multipart_threshold_mib must be at least part_size_mib"
            ));
        }
        if self.multipart_concurrency == 0 || self.max_concurrency == 0 {
            return Err(format!(
                "{who}: multipart_concurrency and max_concurrency must be at least 1"
            ));
        }
        if self.request_timeout_secs == 0
            || self.deadline_secs == 0
            || self.connect_timeout_secs == 0
        {
            return Err(format!("{who}: timeouts must be at least 1 second"));
        }
        match (self.object_lock_mode, self.object_lock_days) {
            (Some(_), None) | (Some(_), Some(0)) => {
                return Err(format!(
                    "{who}: object_lock_mode needs object_lock_days of at least 1"
                ))
            }
            (None, Some(_)) => {
                return Err(format!("{who}: object_lock_days needs object_lock_mode"))
            }
            _ => {}
        }
        if let Some(s) = &self.sse {
            if s != "AES256" && s != "aws:kms" {
                return Err(format!(
                    "{who}: sse must be \"AES256\" or \"aws:kms\", not {s:?}"
                ));
            }
        }
        if self.sse_kms_key_id.is_some() && self.sse.as_deref() != Some("aws:kms") {
            return Err(format!("{who}: sse_kms_key_id needs sse = \"aws:kms\""));
        }
        if let Some(f) = &self.credentials_file {
            if f.as_os_str().is_empty() {
                return Err(format!("{who}: credentials_file is empty"));
            }
        }
        Ok(())
    }

    /// The retry/watchdog/deadline settings for the [`super::retry::RetryStore`] around this store.
    pub fn retry_config(&self) -> RetryConfig {
        RetryConfig {
            max_retries: self.max_retries,
            request_timeout: Duration::from_secs(self.request_timeout_secs),
            deadline: Duration::from_secs(self.deadline_secs),
            max_concurrency: self.max_concurrency,
            ..RetryConfig::default()
        }
    }

    fn key_prefix(&self) -> String {
        let p = self.prefix.trim_matches('/');
        if p.is_empty() {
            String::new()
        } else {
            format!("{p}/")
        }
    }

    /// The endpoint as shown in output (`validate` refuses endpoints with user info).
    fn endpoint_display(&self) -> Option<String> {
        self.endpoint.clone()
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or("truncated %-escape")?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad %-escape %{hex}"))?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "not UTF-8 after %-decoding".to_string())
}

/// A time source shifted by a fixed offset: lets tests exercise clock skew without touching
/// the machine's clock.
#[derive(Debug)]
struct OffsetClock(i64);

impl aws_smithy_async::time::TimeSource for OffsetClock {
    fn now(&self) -> SystemTime {
        let now = SystemTime::now();
        if self.0 >= 0 {
            now + Duration::from_secs(self.0 as u64)
        } else {
            now - Duration::from_secs(self.0.unsigned_abs())
        }
    }
}

/// An S3 bucket (and prefix) as a [`Store`]. The SDK client is built on first use, so opening
/// a location stays synchronous and cheap.
pub struct S3Store {
    cfg: Arc<S3Config>,
    prefix: String,
    client: OnceCell<Client>,
    clock_offset_secs: i64,
}

impl fmt::Debug for S3Store {
    // Hand-written so that nothing of the SDK client (which holds the credentials provider)
    // can ever reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store")
            .field("name", &self.cfg.label())
            .field("bucket", &self.cfg.bucket)
            .field("prefix", &self.prefix)
            .field("region", &self.cfg.region)
            .field("endpoint", &self.cfg.endpoint_display())
            .field("credentials", &"<redacted>")
            .finish()
    }
}

impl S3Store {
    pub fn new(cfg: S3Config) -> Result<S3Store, String> {
        cfg.validate()?;
        Ok(S3Store {
            prefix: cfg.key_prefix(),
            cfg: Arc::new(cfg),
            client: OnceCell::new(),
            clock_offset_secs: 0,
        })
    }

    /// Signs requests as if the local clock were `secs` off (tests of clock-skew handling).
    pub fn with_clock_offset(mut self, secs: i64) -> Self {
        self.clock_offset_secs = secs;
        self
    }

    pub fn config(&self) -> &S3Config {
        &self.cfg
    }

    /// The clock requests are signed with.
    fn now(&self) -> SystemTime {
        aws_smithy_async::time::TimeSource::now(&OffsetClock(self.clock_offset_secs))
    }

    pub fn name(&self) -> &str {
        self.cfg.label()
    }

    async fn client(&self) -> StoreResult<&Client> {
        self.client.get_or_try_init(|| self.build_client()).await
    }

    async fn build_client(&self) -> StoreResult<Client> {
        let cfg = &self.cfg;
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(Region::new(cfg.region.clone()));
        if let Some(p) = &cfg.profile {
            loader = loader.profile_name(p);
        }
        if let Some(file) = &cfg.credentials_file {
            if let Err(e) = std::fs::metadata(file) {
                return Err(StoreError::PermissionDenied {
                    store: self.describe(),
                    key: String::new(),
                    detail: format!("cannot read credentials file {}: {e}", file.display()),
                });
            }
            let files = aws_runtime::env_config::file::EnvConfigFiles::builder()
                .with_file(
                    aws_runtime::env_config::file::EnvConfigFileKind::Credentials,
                    file,
                )
                .build();
            let mut provider =
                aws_config::profile::ProfileFileCredentialsProvider::builder().profile_files(files);
            if let Some(p) = &cfg.profile {
                provider = provider.profile_name(p);
            }
            loader = loader.credentials_provider(provider.build());
        }
        let sdk = loader.load().await;
        let mut b = aws_sdk_s3::config::Builder::from(&sdk)
            .retry_config(SdkRetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(cfg.connect_timeout_secs))
                    .build(),
            )
            // Garage and other self-hosted servers reject the SDK's default CRC32 trailers on
            // multipart completion; every PUT carries an explicit Content-MD5 instead.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .force_path_style(cfg.path_style.unwrap_or(cfg.endpoint.is_some()));
        if let Some(e) = &cfg.endpoint {
            b = b.endpoint_url(e);
        }
        if self.clock_offset_secs != 0 {
            b = b.time_source(OffsetClock(self.clock_offset_secs));
        }
        Ok(Client::from_conf(b.build()))
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    /// Maps an SDK error to a [`StoreError`] naming this store, the operation and the key.
    fn map_err<E>(
        &self,
        op: &'static str,
        key: &str,
        err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let store = self.describe();
        let key = key.to_string();
        let detail = brief(&err);
        let status = err.raw_response().map(|r| r.status().as_u16());
        let code = err.code().map(str::to_string);
        let server_date = err
            .raw_response()
            .and_then(|r| r.headers().get("date"))
            .and_then(httpdate_parse);
        match &err {
            SdkError::TimeoutError(_) => {
                return StoreError::Transient {
                    store,
                    op,
                    key,
                    detail: format!("timed out: {detail}"),
                }
            }
            SdkError::DispatchFailure(d) => {
                if d.is_timeout() || d.is_io() {
                    return StoreError::Unreachable {
                        store,
                        detail: format!("{op} {key}: {detail}"),
                    };
                }
                if detail.to_ascii_lowercase().contains("credential") {
                    // The credential chain found nothing usable: no retry can fix that.
                    let first = detail.lines().next().unwrap_or("").to_string();
                    return StoreError::PermissionDenied {
                        store,
                        key,
                        detail: format!("{op}: no usable credentials ({first})"),
                    };
                }
                if d.is_user() {
                    return StoreError::Permanent {
                        store,
                        op,
                        key,
                        detail,
                    };
                }
                return StoreError::Transient {
                    store,
                    op,
                    key,
                    detail,
                };
            }
            SdkError::ResponseError(_) => {
                // A response cut short or garbled in transit.
                return StoreError::Transient {
                    store,
                    op,
                    key,
                    detail,
                };
            }
            SdkError::ConstructionFailure(_)
                if detail.to_ascii_lowercase().contains("credential") =>
            {
                return StoreError::PermissionDenied {
                    store,
                    key,
                    detail: format!("{op}: no usable credentials ({detail})"),
                };
            }
            SdkError::ConstructionFailure(_) => {
                return StoreError::Permanent {
                    store,
                    op,
                    key,
                    detail,
                };
            }
            _ => {}
        }
        if let Some(skew) = server_date.map(|d| skew_of(d, self.now())) {
            if skew >= SKEW_LIMIT || code.as_deref() == Some("RequestTimeTooSkewed") {
                return StoreError::ClockSkew {
                    store,
                    detail: format!(
                        "local clock differs from the server's by {}",
                        humantime::format_duration(Duration::from_secs(skew.as_secs()))
                    ),
                };
            }
        }
        let code_s = code.as_deref().unwrap_or("");
        match (status, code_s) {
            (_, "RequestTimeTooSkewed") => StoreError::ClockSkew { store, detail },
            (_, "NoSuchBucket") => StoreError::Permanent {
                store,
                op,
                key,
                detail: format!(
                    "bucket {} does not exist (create it, or fix `bucket`)",
                    self.cfg.bucket
                ),
            },
            (Some(404), _) | (_, "NoSuchKey") | (_, "NotFound") => {
                StoreError::NotFound { store, key }
            }
            (
                _,
                "InvalidAccessKeyId"
                | "SignatureDoesNotMatch"
                | "AccessDenied"
                | "ExpiredToken"
                | "InvalidToken"
                | "TokenRefreshRequired"
                | "AllAccessDisabled",
            )
            | (Some(401 | 403), _) => StoreError::PermissionDenied {
                store,
                key,
                detail: format!(
                    "{op}: {}",
                    if code_s.is_empty() {
                        "access denied".to_string()
                    } else {
                        format!("{code_s}: {}", err.message().unwrap_or(""))
                    }
                ),
            },
            (_, "AuthorizationHeaderMalformed" | "PermanentRedirect") | (Some(301), _) => {
                StoreError::Permanent {
                    store,
                    op,
                    key,
                    detail: format!("wrong region for bucket {}: {detail}", self.cfg.bucket),
                }
            }
            (_, "SlowDown" | "ServiceUnavailable" | "TooManyRequests") | (Some(429 | 503), _) => {
                StoreError::Throttled {
                    store,
                    op,
                    key,
                    detail,
                }
            }
            (
                _,
                "InternalError" | "RequestTimeout" | "BadDigest" | "IncompleteBody"
                | "OperationAborted",
            )
            | (Some(408), _) => StoreError::Transient {
                store,
                op,
                key,
                detail,
            },
            (Some(s), _) if s >= 500 => StoreError::Transient {
                store,
                op,
                key,
                detail,
            },
            _ => StoreError::Permanent {
                store,
                op,
                key,
                detail,
            },
        }
    }

    fn put_options(&self) -> PutOptions {
        let cfg = &self.cfg;
        PutOptions {
            storage_class: cfg.storage_class.as_deref().map(StorageClass::from),
            sse: cfg.sse.as_deref().map(ServerSideEncryption::from),
            kms_key: cfg.sse_kms_key_id.clone(),
            lock: cfg
                .object_lock_mode
                .zip(cfg.object_lock_days)
                .map(|(m, days)| {
                    let until = SystemTime::now() + Duration::from_secs(days as u64 * 86400);
                    let secs = until
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_secs() as i64;
                    let mode = match m {
                        LockMode::Governance => ObjectLockMode::Governance,
                        LockMode::Compliance => ObjectLockMode::Compliance,
                    };
                    (mode, aws_sdk_s3::primitives::DateTime::from_secs(secs))
                }),
        }
    }

    async fn put_single(&self, client: &Client, key: &str, data: Bytes) -> StoreResult<()> {
        let o = self.put_options();
        client
            .put_object()
            .bucket(&self.cfg.bucket)
            .key(self.full_key(key))
            .content_length(data.len() as i64)
            .content_md5(md5_b64(&data))
            .set_storage_class(o.storage_class)
            .set_server_side_encryption(o.sse)
            .set_ssekms_key_id(o.kms_key)
            .set_object_lock_mode(o.lock.as_ref().map(|l| l.0.clone()))
            .set_object_lock_retain_until_date(o.lock.map(|l| l.1))
            .body(ByteStream::from(data))
            .send()
            .await
            .map_err(|e| self.map_err("put", key, e))?;
        Ok(())
    }

    async fn put_multipart(&self, client: &Client, key: &str, data: Bytes) -> StoreResult<()> {
        let o = self.put_options();
        let full = self.full_key(key);
        let created = client
            .create_multipart_upload()
            .bucket(&self.cfg.bucket)
            .key(&full)
            .set_storage_class(o.storage_class)
            .set_server_side_encryption(o.sse)
            .set_ssekms_key_id(o.kms_key)
            .set_object_lock_mode(o.lock.as_ref().map(|l| l.0.clone()))
            .set_object_lock_retain_until_date(o.lock.map(|l| l.1))
            .send()
            .await
            .map_err(|e| self.map_err("create multipart upload", key, e))?;
        let upload_id =
            created
                .upload_id()
                .map(str::to_string)
                .ok_or_else(|| StoreError::Transient {
                    store: self.describe(),
                    op: "create multipart upload",
                    key: key.into(),
                    detail: "the server returned no upload id".into(),
                })?;
        // Aborts the upload unless disarmed — also when this future is dropped by the watchdog.
        let mut guard = AbortGuard {
            client: client.clone(),
            bucket: self.cfg.bucket.clone(),
            key: full.clone(),
            upload_id: Some(upload_id.clone()),
        };
        let part = (self.cfg.part_size_mib * 1024 * 1024) as usize;
        let ranges: Vec<(i32, Bytes)> = (0..data.len().div_ceil(part))
            .map(|i| {
                (
                    (i + 1) as i32,
                    data.slice(i * part..((i + 1) * part).min(data.len())),
                )
            })
            .collect();
        let uploaded: StoreResult<Vec<CompletedPart>> = stream::iter(ranges)
            .map(|(n, chunk)| {
                let (client, full, upload_id) = (client.clone(), full.clone(), upload_id.clone());
                async move {
                    let md5 = md5_b64(&chunk);
                    // A transient failure retries the part, not the whole upload (a large
                    // object would otherwise almost never get through a flaky link).
                    let out = part_retry(
                        || {
                            client
                                .upload_part()
                                .bucket(&self.cfg.bucket)
                                .key(&full)
                                .upload_id(&upload_id)
                                .part_number(n)
                                .content_length(chunk.len() as i64)
                                .content_md5(md5.clone())
                                .body(ByteStream::from(chunk.clone()))
                                .send()
                        },
                        |e| self.map_err("upload part", key, e),
                    )
                    .await?;
                    let etag =
                        out.e_tag()
                            .map(str::to_string)
                            .ok_or_else(|| StoreError::Transient {
                                store: self.describe(),
                                op: "upload part",
                                key: key.into(),
                                detail: format!("part {n}: the server returned no ETag"),
                            })?;
                    Ok(CompletedPart::builder().part_number(n).e_tag(etag).build())
                }
            })
            .buffered(self.cfg.multipart_concurrency)
            .try_collect()
            .await;
        let parts = uploaded?;
        let completed = CompletedMultipartUpload::builder()
            .set_parts(Some(parts))
            .build();
        part_retry(
            || {
                client
                    .complete_multipart_upload()
                    .bucket(&self.cfg.bucket)
                    .key(&full)
                    .upload_id(&upload_id)
                    .multipart_upload(completed.clone())
                    .send()
            },
            |e| self.map_err("complete multipart upload", key, e),
        )
        .await?;
        guard.upload_id = None;
        Ok(())
    }

    /// Multipart uploads under this store's prefix that were started and never completed or
    /// aborted (a process killed mid-upload leaves them; they are billed until aborted).
    /// Keys are relative to the prefix.
    pub async fn pending_multipart_uploads(&self) -> StoreResult<Vec<PendingUpload>> {
        let client = self.client().await?;
        let mut out = Vec::new();
        let (mut key_marker, mut id_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            let page = client
                .list_multipart_uploads()
                .bucket(&self.cfg.bucket)
                .prefix(&self.prefix)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .send()
                .await
                .map_err(|e| self.map_err("list multipart uploads", "", e))?;
            for u in page.uploads() {
                let (Some(k), Some(id)) = (u.key(), u.upload_id()) else {
                    continue;
                };
                out.push(PendingUpload {
                    key: k.strip_prefix(&self.prefix).unwrap_or(k).to_string(),
                    upload_id: id.to_string(),
                    initiated_secs: u.initiated().map(|t| t.secs()),
                });
            }
            if page.is_truncated() == Some(true) && page.next_key_marker().is_some() {
                key_marker = page.next_key_marker().map(str::to_string);
                id_marker = page.next_upload_id_marker().map(str::to_string);
            } else {
                break;
            }
        }
        Ok(out)
    }

    /// Aborts one pending multipart upload (see [`S3Store::pending_multipart_uploads`]).
    pub async fn abort_multipart_upload(&self, upload: &PendingUpload) -> StoreResult<()> {
        let client = self.client().await?;
        client
            .abort_multipart_upload()
            .bucket(&self.cfg.bucket)
            .key(self.full_key(&upload.key))
            .upload_id(&upload.upload_id)
            .send()
            .await
            .map_err(|e| self.map_err("abort multipart upload", &upload.key, e))?;
        Ok(())
    }

    async fn head_raw(&self, key: &str) -> StoreResult<Option<ObjectInfo>> {
        let client = self.client().await?;
        match client
            .head_object()
            .bucket(&self.cfg.bucket)
            .key(self.full_key(key))
            .send()
            .await
        {
            Ok(h) => Ok(Some(ObjectInfo {
                key: key.to_string(),
                size: h.content_length().unwrap_or(0).max(0) as u64,
            })),
            Err(e) => match self.map_err("head", key, e) {
                StoreError::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
    }
}

/// A multipart upload that was started and never completed or aborted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingUpload {
    pub key: String,
    pub upload_id: String,
    /// When it was started (seconds since the Unix epoch), if the server says.
    pub initiated_secs: Option<i64>,
}

struct PutOptions {
    storage_class: Option<StorageClass>,
    sse: Option<ServerSideEncryption>,
    kms_key: Option<String>,
    lock: Option<(ObjectLockMode, aws_sdk_s3::primitives::DateTime)>,
}

/// Aborts a multipart upload when dropped while still armed, so a failed or cancelled upload
/// leaves no billed parts behind (a `kill -9` still can: the bucket's lifecycle rule covers that).
struct AbortGuard {
    client: Client,
    bucket: String,
    key: String,
    upload_id: Option<String>,
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        let Some(id) = self.upload_id.take() else {
            return;
        };
        let (client, bucket, key) = (self.client.clone(), self.bucket.clone(), self.key.clone());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                // A few attempts: the abort can hit the same transient trouble the upload did.
                for attempt in 0..5u32 {
                    match client.abort_multipart_upload().bucket(&bucket).key(&key).upload_id(&id).send().await {
                        Ok(_) => {
                            tracing::debug!(bucket, key, "aborted failed multipart upload");
                            return;
                        }
                        Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => return,
                        Err(e) if attempt == 4 => {
                            tracing::warn!(bucket, key, error = %DisplayErrorContext(&e), "could not abort a failed multipart upload; a lifecycle rule (AbortIncompleteMultipartUpload) cleans it up");
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(200 << attempt)).await,
                    }
                }
            });
        }
    }
}

/// Retries one step of a multipart upload (a part, or the completion) a few times on
/// transient errors with full-jitter backoff; the whole upload is retried by the retry
/// decorator only when this gives up.
async fn part_retry<T, E, F, Fut>(mut send: F, map: impl Fn(E) -> StoreError) -> StoreResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    const ATTEMPTS: u32 = 6;
    let mut attempt = 0;
    loop {
        match send().await {
            Ok(v) => return Ok(v),
            Err(e) => {
                let e = map(e);
                attempt += 1;
                if !e.is_retryable() || attempt >= ATTEMPTS {
                    return Err(e);
                }
                let cap = 100u64 << attempt.min(6);
                let ms = rand::Rng::gen_range(&mut rand::thread_rng(), 0..=cap);
                tracing::debug!(error = %e, attempt, "retrying multipart step");
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
        }
    }
}

/// A short description of an SDK error: the S3 code, message and HTTP status when the server
/// answered, else the error chain (connection refused, timeout, …).
fn brief<E>(err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match (err.code(), err.raw_response()) {
        (Some(code), Some(r)) => format!(
            "{code}: {} (HTTP {})",
            err.message().unwrap_or("no message"),
            r.status().as_u16()
        ),
        (None, Some(r)) if matches!(err, SdkError::ServiceError(_)) => {
            format!("HTTP {} without an error code", r.status().as_u16())
        }
        _ => DisplayErrorContext(err).to_string(),
    }
}

fn md5_b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Md5::digest(data))
}

fn httpdate_parse(s: &str) -> Option<SystemTime> {
    chrono::DateTime::parse_from_rfc2822(s)
        .ok()
        .map(|d| SystemTime::UNIX_EPOCH + Duration::from_secs(d.timestamp().max(0) as u64))
}

fn skew_of(server: SystemTime, now: SystemTime) -> Duration {
    match now.duration_since(server) {
        Ok(d) => d,
        Err(e) => e.duration(),
    }
}

#[async_trait]
impl Store for S3Store {
    fn describe(&self) -> String {
        let mut s = format!("s3:{}:{}", self.cfg.label(), self.cfg.bucket);
        if !self.prefix.is_empty() {
            s.push('/');
            s.push_str(self.prefix.trim_end_matches('/'));
        }
        s
    }

    async fn get(&self, key: &str) -> StoreResult<Bytes> {
        let client = self.client().await?;
        let out = client
            .get_object()
            .bucket(&self.cfg.bucket)
            .key(self.full_key(key))
            .send()
            .await
            .map_err(|e| self.map_err("get", key, e))?;
        let expected = out.content_length();
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| StoreError::Transient {
                store: self.describe(),
                op: "get",
                key: key.into(),
                detail: format!("reading the body failed: {}", DisplayErrorContext(&e)),
            })?;
        let bytes = body.into_bytes();
        if let Some(n) = expected {
            if n as u64 != bytes.len() as u64 {
                return Err(StoreError::Transient {
                    store: self.describe(),
                    op: "get",
                    key: key.into(),
                    detail: format!("response cut short: got {} of {n} bytes", bytes.len()),
                });
            }
        }
        Ok(bytes)
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> StoreResult<Bytes> {
        if len == 0 {
            return match self.head_raw(key).await? {
                Some(i) if offset <= i.size => Ok(Bytes::new()),
                Some(_) => Err(StoreError::Permanent {
                    store: self.describe(),
                    op: "get_range",
                    key: key.into(),
                    detail: format!("range {offset}+0 is past the end of the object"),
                }),
                None => Err(StoreError::NotFound {
                    store: self.describe(),
                    key: key.into(),
                }),
            };
        }
        let client = self.client().await?;
        let out = client
            .get_object()
            .bucket(&self.cfg.bucket)
            .key(self.full_key(key))
            .range(format!("bytes={}-{}", offset, offset + len - 1))
            .send()
            .await
            .map_err(|e| match self.map_err("get_range", key, e) {
                StoreError::Permanent {
                    store,
                    op,
                    key,
                    detail,
                } if detail.contains("InvalidRange") => StoreError::Permanent {
                    store,
                    op,
                    key,
                    detail: format!("range {offset}+{len} is past the end of the object"),
                },
                other => other,
            })?;
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| StoreError::Transient {
                store: self.describe(),
                op: "get_range",
                key: key.into(),
                detail: format!("reading the body failed: {}", DisplayErrorContext(&e)),
            })?
            .into_bytes();
        if bytes.len() as u64 != len {
            // Either the object is shorter than the range (a permanent fact) or the response was
            // cut short (transient): HEAD tells which.
            let size = self.head_raw(key).await?.map(|i| i.size);
            return Err(match size {
                Some(s) if s < offset + len => StoreError::Permanent {
                    store: self.describe(),
                    op: "get_range",
                    key: key.into(),
                    detail: format!(
                        "range {offset}+{len} is past the end of the object ({s} bytes)"
                    ),
                },
                _ => StoreError::Transient {
                    store: self.describe(),
                    op: "get_range",
                    key: key.into(),
                    detail: format!("response cut short: got {} of {len} bytes", bytes.len()),
                },
            });
        }
        Ok(bytes)
    }

    async fn put(&self, key: &str, data: Bytes) -> StoreResult<()> {
        let client = self.client().await?;
        let size = data.len() as u64;
        if size >= self.cfg.multipart_threshold_mib * 1024 * 1024 {
            self.put_multipart(client, key, data).await?;
        } else {
            self.put_single(client, key, data).await?;
        }
        if self.cfg.verify_uploads {
            match self.head_raw(key).await? {
                Some(i) if i.size == size => {}
                got => {
                    return Err(StoreError::Transient {
                        store: self.describe(),
                        op: "put",
                        key: key.into(),
                        detail: match got {
                            Some(i) => {
                                format!("stored object has {} bytes, {size} were sent", i.size)
                            }
                            None => "the object is missing right after a successful upload".into(),
                        },
                    })
                }
            }
        }
        Ok(())
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<ObjectInfo>> {
        let client = self.client().await?;
        let full_prefix = self.full_key(prefix);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = client
                .list_objects_v2()
                .bucket(&self.cfg.bucket)
                .prefix(&full_prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| self.map_err("list", prefix, e))?;
            for o in page.contents() {
                let Some(k) = o.key() else { continue };
                let Some(rel) = k.strip_prefix(&self.prefix) else {
                    continue;
                };
                out.push(ObjectInfo {
                    key: rel.to_string(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                });
            }
            match (page.is_truncated(), page.next_continuation_token()) {
                (Some(true), Some(t)) => token = Some(t.to_string()),
                (Some(true), None) => {
                    return Err(StoreError::Transient {
                        store: self.describe(),
                        op: "list",
                        key: prefix.into(),
                        detail: "listing is truncated but has no continuation token".into(),
                    })
                }
                _ => break,
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out.dedup_by(|a, b| a.key == b.key);
        Ok(out)
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        let client = self.client().await?;
        match client
            .delete_object()
            .bucket(&self.cfg.bucket)
            .key(self.full_key(key))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match self.map_err("delete", key, e) {
                StoreError::NotFound { .. } => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn head(&self, key: &str) -> StoreResult<Option<ObjectInfo>> {
        self.head_raw(key).await
    }
}

// ----- healthcheck --------------------------------------------------------------------------

/// What a healthcheck found wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthProblem {
    UnknownBucket,
    BadCredentials,
    Unreachable,
    WrongRegion,
    ClockSkew,
    ProbeFailed,
}

/// The outcome of [`healthcheck`]: `problem` is `None` when the destination works.
#[derive(Debug, Clone, Serialize)]
pub struct HealthReport {
    pub name: String,
    pub bucket: String,
    pub region: String,
    pub endpoint: Option<String>,
    pub problem: Option<HealthProblem>,
    pub detail: String,
    pub hint: Option<String>,
}

impl HealthReport {
    pub fn ok(&self) -> bool {
        self.problem.is_none()
    }
}

/// Checks that a destination is usable: `HeadBucket`, then a small put/get/delete probe under
/// the prefix. Never fails; every finding is in the report.
pub async fn healthcheck(store: &S3Store) -> HealthReport {
    let cfg = store.config();
    let mut r = HealthReport {
        name: cfg.label().to_string(),
        bucket: cfg.bucket.clone(),
        region: cfg.region.clone(),
        endpoint: cfg.endpoint_display(),
        problem: None,
        detail: String::new(),
        hint: None,
    };
    let client = match store.client().await {
        Ok(c) => c,
        Err(e) => {
            r.problem = Some(HealthProblem::BadCredentials);
            r.detail = e.to_string();
            r.hint = Some("fix credentials_file / profile in the destination".into());
            return r;
        }
    };
    if let Err(e) = client.head_bucket().bucket(&cfg.bucket).send().await {
        // A HEAD response has no body, so no error code: ask again with a GET (a one-key
        // listing) whose error carries the code that tells the cases apart.
        if matches!(e, SdkError::ServiceError(_)) {
            if let Err(e2) = client
                .list_objects_v2()
                .bucket(&cfg.bucket)
                .max_keys(1)
                .send()
                .await
            {
                classify_health(store, &mut r, e2);
                return r;
            }
        }
        classify_health(store, &mut r, e);
        return r;
    }
    let key = format!(
        "lifeboat-healthcheck/{}",
        hex::encode(rand::random::<[u8; 8]>())
    );
    let body = Bytes::from(format!(
        "lifeboat healthcheck {}",
        chrono::Utc::now().to_rfc3339()
    ));
    let probe = async {
        store.put(&key, body.clone()).await?;
        let back = store.get(&key).await?;
        store.delete(&key).await?;
        if back != body {
            return Err(StoreError::Permanent {
                store: store.describe(),
                op: "get",
                key: key.clone(),
                detail: "read back different bytes than were written".into(),
            });
        }
        Ok(())
    };
    if let Err(e) = probe.await {
        r.problem = Some(match &e {
            StoreError::PermissionDenied { .. } => HealthProblem::BadCredentials,
            StoreError::ClockSkew { .. } => HealthProblem::ClockSkew,
            StoreError::Unreachable { .. } => HealthProblem::Unreachable,
            _ => HealthProblem::ProbeFailed,
        });
        r.detail = e.to_string();
        r.hint = Some(match r.problem {
            Some(HealthProblem::BadCredentials) => "the credentials can see the bucket but not write, read and delete objects under the prefix: grant s3:PutObject, s3:GetObject, s3:DeleteObject and s3:ListBucket".into(),
            _ => e.hint().unwrap_or_else(|| "check the server's logs".into()),
        });
    }
    r
}

fn classify_health<E>(
    store: &S3Store,
    r: &mut HealthReport,
    err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let cfg = store.config();
    let status = err.raw_response().map(|x| x.status().as_u16());
    let code = err.code().unwrap_or("").to_string();
    let bucket_region = err
        .raw_response()
        .and_then(|x| x.headers().get("x-amz-bucket-region"))
        .map(str::to_string);
    let server_date = err
        .raw_response()
        .and_then(|x| x.headers().get("date"))
        .and_then(httpdate_parse);
    let detail = DisplayErrorContext(&err).to_string();
    let skew = server_date.map(|d| skew_of(d, store.now()));
    let (problem, hint) = if matches!(
        err,
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_)
    ) {
        (
            HealthProblem::Unreachable,
            format!(
                "nothing answers at {}: check the endpoint URL, DNS, the firewall and that the S3 server is running",
                cfg.endpoint_display().unwrap_or_else(|| format!("the AWS endpoint for region {}", cfg.region))
            ),
        )
    } else if code == "RequestTimeTooSkewed" || skew.is_some_and(|s| s >= SKEW_LIMIT) {
        (
            HealthProblem::ClockSkew,
            format!(
                "this machine's clock is {} off the server's; S3 refuses signatures more than 15 minutes off: sync the clock (chrony/systemd-timesyncd)",
                skew.map(|s| humantime::format_duration(Duration::from_secs(s.as_secs())).to_string()).unwrap_or_else(|| "too far".into())
            ),
        )
    } else if bucket_region.as_deref().is_some_and(|b| b != cfg.region)
        || code == "AuthorizationHeaderMalformed"
        || code == "PermanentRedirect"
        || status == Some(301)
        || code == "InvalidRegion"
        || (status == Some(400)
            && err
                .message()
                .is_some_and(|m| m.to_ascii_lowercase().contains("region")))
    {
        (
            HealthProblem::WrongRegion,
            match bucket_region {
                Some(b) => format!("bucket {} is in region {b}, not {}: set region = \"{b}\"", cfg.bucket, cfg.region),
                None => format!("the server refused region {:?}: set region to the server's region (for Garage: s3_region in garage.toml)", cfg.region),
            },
        )
    } else if status == Some(404) || code == "NoSuchBucket" {
        (
            HealthProblem::UnknownBucket,
            format!(
                "bucket {} does not exist at this endpoint: create it, or fix `bucket`",
                cfg.bucket
            ),
        )
    } else if matches!(status, Some(401 | 403))
        || code == "InvalidAccessKeyId"
        || code == "SignatureDoesNotMatch"
    {
        (
            HealthProblem::BadCredentials,
            "the credentials were refused: check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, the profile or credentials_file, and that the key may access this bucket".into(),
        )
    } else {
        (
            HealthProblem::ProbeFailed,
            "see the detail; check the server's logs".into(),
        )
    };
    r.problem = Some(problem);
    r.detail = format!(
        "HeadBucket {}: {}",
        cfg.bucket,
        if code.is_empty() {
            detail
        } else {
            format!("{code} (HTTP {})", status.unwrap_or(0))
        }
    );
    r.hint = Some(hint);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_form_parses_every_key() {
        let c = S3Config::from_url(
            "s3://backups/host1/db?endpoint=http%3A%2F%2F127.0.0.1:3900&region=garage&name=eu&part_size_mib=5&multipart_threshold_mib=5&request_timeout_secs=7&object_lock_mode=compliance&object_lock_days=30",
        )
        .unwrap();
        assert_eq!(c.bucket, "backups");
        assert_eq!(c.prefix, "host1/db");
        assert_eq!(c.endpoint.as_deref(), Some("http://127.0.0.1:3900"));
        assert_eq!(c.label(), "eu");
        assert_eq!(c.part_size_mib, 5);
        assert_eq!(c.request_timeout_secs, 7);
        assert_eq!(c.object_lock_mode, Some(LockMode::Compliance));
        assert_eq!(c.key_prefix(), "host1/db/");
        let s = S3Store::new(c).unwrap();
        assert_eq!(s.describe(), "s3:eu:backups/host1/db");
    }

    #[test]
    fn url_form_rejects_mistakes() {
        assert!(S3Config::from_url("s3:///x?region=r")
            .unwrap_err()
            .contains("no bucket"));
        assert!(S3Config::from_url("s3://b")
            .unwrap_err()
            .contains("no region"));
        assert!(S3Config::from_url("s3://b?region=r&colour=blue")
            .unwrap_err()
            .contains("colour"));
        assert!(S3Config::from_url("s3://b?region=r&part_size_mib=1")
            .unwrap_err()
            .contains("part_size_mib"));
        assert!(
            S3Config::from_url("s3://b?region=r&object_lock_mode=compliance")
                .unwrap_err()
                .contains("object_lock_days")
        );
        assert!(S3Config::from_url("s3://b?region=r&endpoint=ftp://x")
            .unwrap_err()
            .contains("http"));
    }

    #[test]
    fn toml_destination_denies_unknown_keys() {
        let ok: S3Config = toml::from_str("bucket = \"b\"\nregion = \"r\"\ntimeout_secs = 1\n")
            .map(|_: S3Config| ())
            .map_or_else(
                |e| {
                    assert!(e.to_string().contains("timeout_secs"));
                    S3Config::new("b", "r")
                },
                |_| panic!("unknown key accepted"),
            );
        assert_eq!(ok.multipart_concurrency, 4);
        let c: S3Config = toml::from_str(
            "bucket = \"b\"\nregion = \"r\"\nprefix = \"p\"\nstorage_class = \"STANDARD_IA\"\n",
        )
        .unwrap();
        assert_eq!(c.storage_class.as_deref(), Some("STANDARD_IA"));
    }

    #[test]
    fn endpoint_credentials_are_refused_without_echoing_them() {
        let mut c = S3Config::new("b", "r");
        c.endpoint = Some("https://user:hunter2@s3.example.com".into());
        let e = S3Store::new(c).unwrap_err();
        assert!(
            e.contains("user:password@") && !e.contains("hunter2"),
            "{e}"
        );
        let e = S3Config::from_url("s3://b/p?region=r&endpoint=https://u:hunter2@h&bogus=1")
            .unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
        let mut c = S3Config::new("b", "r");
        c.endpoint = Some("https://s3.example.com/path@x".into());
        let s = S3Store::new(c).unwrap();
        assert!(format!("{s:?}").contains("<redacted>"));
    }

    #[test]
    fn md5_is_base64_of_digest() {
        assert_eq!(md5_b64(b""), "1B2M2Y8AsgTpgAmY7PhCfg==");
    }
}
