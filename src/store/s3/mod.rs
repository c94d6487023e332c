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
//!   (or a server `Date` more than 15 minutes off) → `ClockSkew`, a bucket in another region →
//!   `Permanent` ("wrong region").
//! - [`healthcheck`] (the store's `probe`) tells apart an unknown bucket, bad credentials, an
//!   unreachable endpoint, a wrong region and clock skew, each with a hint (the plan preflight
//!   and `lifeboat healthcheck` call it). It reads SDK errors with the same classifier as the
//!   store operations (`classify.rs`), so the two agree.
//!
//! The SDK's own retries are switched off: retries, the stalled-request watchdog and the
//! deadline are the [`super::retry::RetryStore`] decorator's job, so they are counted in one
//! place. Credentials come from the standard AWS chain (environment, profile, web identity,
//! instance metadata) or from a credentials file named in the config; no secret is ever part of
//! a `Debug` or `Display` output of this module.
//!
//! Layout: this file is the [`S3Store`] type and its [`Store`] operations; `config.rs` the
//! destination's config and URL form; `client.rs` builds the SDK client; `classify.rs` reads an
//! SDK error; `multipart.rs` uploads large objects in parts; `health.rs` is the healthcheck.
//! This file must not know how an SDK error is read (it asks `classify.rs`) nor how the client
//! is built.

mod classify;
mod client;
mod config;
pub mod floor;
mod health;
mod multipart;
mod object_lock;

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ObjectLockMode, ServerSideEncryption, StorageClass};
use aws_sdk_s3::Client;
use base64::Engine as _;
use bytes::Bytes;
use md5::{Digest, Md5};
use tokio::sync::OnceCell;

use super::{Backend, ObjectInfo, Store, StoreError, StoreResult};
use classify::{classify, S3Error};
use client::OffsetClock;

pub use crate::store::health::{HealthProblem, HealthReport};
pub use config::{LockMode, S3Config};
pub use health::healthcheck;
pub use multipart::PendingUpload;

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
    /// Reads a GET's body into one buffer as its pieces arrive (a pooled one when it is
    /// pack-sized, [`super::pool::REMOTE_READS`]): no second, contiguous copy after the whole
    /// body was gathered in pieces, and each piece is copied while it is still in cache.
    /// `expected`: the length announced (room is made for it, up to 256 MiB).
    async fn read_body(
        &self,
        mut body: ByteStream,
        expected: Option<u64>,
        op: &'static str,
        key: &str,
    ) -> StoreResult<Bytes> {
        const ROOM_MAX: u64 = 256 << 20;
        let pool = &super::pool::REMOTE_READS;
        let mut buf = pool.take(expected.unwrap_or(0).min(ROOM_MAX) as usize);
        loop {
            match body.try_next().await {
                Ok(Some(piece)) => buf.extend_from_slice(&piece),
                Ok(None) => return Ok(pool.into_bytes(buf)),
                Err(e) => {
                    return Err(StoreError::Transient {
                        store: self.describe(),
                        op,
                        key: key.into(),
                        detail: format!("reading the body failed: {}", DisplayErrorContext(&e)),
                    })
                }
            }
        }
    }

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
        self.client
            .get_or_try_init(|| async {
                client::build(&self.cfg, self.clock_offset_secs)
                    .await
                    .map_err(|detail| StoreError::PermissionDenied {
                        store: self.describe(),
                        backend: Backend::S3,
                        key: String::new(),
                        detail,
                    })
            })
            .await
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    /// Maps an SDK error to a [`StoreError`] naming this store, the operation and the key.
    fn map_err<E>(&self, op: &'static str, key: &str, err: S3Error<E>) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        classify(&err, &self.cfg.region, self.now()).store_error(
            &err,
            self.describe(),
            op,
            key,
            &self.cfg.bucket,
        )
    }

    /// The per-request config of an upload of `len` bytes ([`client::upload_config`]).
    fn upload_config(&self, len: u64) -> aws_sdk_s3::config::Builder {
        client::upload_config(&self.cfg, len)
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
                    let secs = (crate::sys::clock::lock_now()
                        + chrono::Duration::days(days as i64))
                    .timestamp();
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
        let sent_md5 = Md5::digest(&data);
        let sent_len = data.len() as u64;
        let out = client
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
            .customize()
            .config_override(self.upload_config(sent_len))
            .send()
            .await
            .map_err(|e| self.map_err("put", key, e))?;
        // A server that ignores Content-MD5 (or a proxy that damaged the body after it was
        // checked) still answers with the checksum of what it stored (T06): a mismatch is a
        // transient failure, so the retry decorator uploads the object again.
        // The ETag of a single PUT is the hex MD5 of the stored bytes, unless SSE-KMS or SSE-C
        // (the destination's or the bucket's default) encrypted them: then it says nothing here.
        let etag_is_md5 = out
            .server_side_encryption()
            .is_none_or(|s| *s == ServerSideEncryption::Aes256)
            && out.sse_customer_algorithm().is_none();
        if let (true, Some(etag)) = (etag_is_md5, out.e_tag()) {
            let etag = etag.trim_matches('"');
            if etag.len() == 32
                && etag.bytes().all(|b| b.is_ascii_hexdigit())
                && !etag.eq_ignore_ascii_case(&hex::encode(sent_md5))
            {
                return Err(StoreError::Transient {
                    store: self.describe(),
                    op: "put",
                    key: key.into(),
                    detail: format!(
                        "the server stored different bytes than were sent (its ETag {etag} is not the MD5 {} of the upload); uploading again",
                        hex::encode(sent_md5)
                    ),
                });
            }
        }
        Ok(())
    }

    async fn head_raw(&self, key: &str) -> StoreResult<Option<ObjectInfo>> {
        Ok(self.head_object(key).await?.map(|h| ObjectInfo {
            key: key.to_string(),
            size: h.content_length().unwrap_or(0).max(0) as u64,
        }))
    }

    /// `Last-Modified` of `key` (the server's clock), `None` when the object is gone.
    async fn last_modified(&self, key: &str) -> StoreResult<Option<chrono::DateTime<chrono::Utc>>> {
        Ok(self.head_object(key).await?.and_then(|h| {
            h.last_modified()
                .and_then(|t| chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
        }))
    }

    /// One HEAD of `key`: its answer, `None` when the object is gone.
    async fn head_object(
        &self,
        key: &str,
    ) -> StoreResult<Option<aws_sdk_s3::operation::head_object::HeadObjectOutput>> {
        let client = self.client().await?;
        match client
            .head_object()
            .bucket(&self.cfg.bucket)
            .key(self.full_key(key))
            .send()
            .await
        {
            Ok(h) => Ok(Some(h)),
            Err(e) => match self.map_err("head", key, e) {
                StoreError::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
    }
}

struct PutOptions {
    storage_class: Option<StorageClass>,
    sse: Option<ServerSideEncryption>,
    kms_key: Option<String>,
    lock: Option<(ObjectLockMode, aws_sdk_s3::primitives::DateTime)>,
}

fn md5_b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Md5::digest(data))
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

    fn backend(&self) -> Backend {
        Backend::S3
    }

    /// The [`healthcheck`]: bucket, credentials, endpoint, region and clock told apart.
    async fn probe(&self) -> HealthReport {
        healthcheck(self).await
    }

    async fn pending_uploads(&self) -> StoreResult<Vec<PendingUpload>> {
        self.pending_multipart_uploads().await
    }

    async fn abort_upload(&self, upload: &PendingUpload) -> StoreResult<()> {
        self.abort_multipart_upload(upload).await
    }

    async fn aborts_incomplete_uploads(&self) -> StoreResult<Option<bool>> {
        self.lifecycle_aborts_uploads().await.map(Some)
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
        let bytes = self
            .read_body(out.body, expected.map(|n| n as u64), "get", key)
            .await?;
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
        let bytes = self
            .read_body(out.body, Some(len), "get_range", key)
            .await?;
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

    async fn modified(&self, key: &str) -> StoreResult<Option<chrono::DateTime<chrono::Utc>>> {
        self.last_modified(key).await
    }

    // Object Lock: `object_lock.rs`.
    fn lock_policy(&self) -> Option<super::LockPolicy> {
        self.policy()
    }

    async fn check_lock_support(&self) -> StoreResult<()> {
        self.check_bucket_lock().await
    }

    async fn lock_until(&self, key: &str) -> StoreResult<Option<chrono::DateTime<chrono::Utc>>> {
        self.lock_until_of(key).await
    }

    async fn extend_lock(
        &self,
        key: &str,
        until: chrono::DateTime<chrono::Utc>,
    ) -> StoreResult<()> {
        self.extend(key, until).await
    }

    async fn purge(&self, key: &str) -> StoreResult<()> {
        if self.policy().is_some() {
            self.purge_versions(key).await
        } else {
            self.delete(key).await
        }
    }
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
