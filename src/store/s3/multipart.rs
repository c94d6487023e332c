//! Multipart upload of large objects: parts go up in parallel (`multipart_concurrency`), each
//! with its Content-MD5 and a few retries of its own ([`part_retry`]); a failed or cancelled
//! upload is aborted ([`AbortGuard`], also when the retry watchdog drops the request). Also the
//! listing and aborting of uploads that a killed process left behind ([`PendingUpload`]), and
//! whether the bucket's lifecycle rules abort them on their own.
//!
//! This file must not know how SDK errors are classified (it asks the store's `map_err`), how the
//! client is built, or anything of the healthcheck.

use std::time::Duration;

use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, ExpirationStatus, LifecycleRule};
use aws_sdk_s3::Client;
use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};

use super::{md5_b64, S3Store};
use crate::store::{Store, StoreError, StoreResult};

impl S3Store {
    pub(super) async fn put_multipart(
        &self,
        client: &Client,
        key: &str,
        data: Bytes,
    ) -> StoreResult<()> {
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
                                .customize()
                                .config_override(self.upload_config(chunk.len() as u64))
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
        match client
            .abort_multipart_upload()
            .bucket(&self.cfg.bucket)
            .key(self.full_key(&upload.key))
            .upload_id(&upload.upload_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // Aborted or completed meanwhile (another prune, the writer's own abort).
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(()),
            Err(e) => Err(self.map_err("abort multipart upload", &upload.key, e)),
        }
    }

    /// Whether the bucket's lifecycle configuration has an enabled rule with
    /// `AbortIncompleteMultipartUpload` whose filter covers this store's prefix (a rule for
    /// another prefix, or one with a tag or size filter, does not reach every upload of ours).
    /// A bucket without a lifecycle configuration has none.
    pub async fn lifecycle_aborts_uploads(&self) -> StoreResult<bool> {
        let client = self.client().await?;
        let cfg = match client
            .get_bucket_lifecycle_configuration()
            .bucket(&self.cfg.bucket)
            .send()
            .await
        {
            Ok(c) => c,
            Err(e) if e.code() == Some("NoSuchLifecycleConfiguration") => return Ok(false),
            Err(e) => return Err(self.map_err("get bucket lifecycle", "", e)),
        };
        Ok(cfg
            .rules()
            .iter()
            .any(|r| rule_aborts_uploads_under(r, &self.prefix)))
    }
}

/// An enabled rule that aborts incomplete uploads of every key under `prefix`.
fn rule_aborts_uploads_under(rule: &LifecycleRule, prefix: &str) -> bool {
    if *rule.status() != ExpirationStatus::Enabled
        || rule
            .abort_incomplete_multipart_upload()
            .and_then(|a| a.days_after_initiation())
            .is_none()
    {
        return false;
    }
    #[allow(deprecated)]
    let legacy = rule.prefix();
    let rule_prefix = match rule.filter() {
        None => legacy.unwrap_or(""),
        Some(f) => {
            if f.tag().is_some()
                || f.and().is_some()
                || f.object_size_greater_than().is_some()
                || f.object_size_less_than().is_some()
            {
                return false;
            }
            f.prefix().unwrap_or("")
        }
    };
    prefix.starts_with(rule_prefix)
}

pub use crate::store::PendingUpload;

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
/// transient errors with full-jitter backoff (not a step that got no answer); the whole upload
/// is retried by the retry decorator only when this gives up.
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
                // No answer at all is the retry decorator's to count (three in a row and the
                // store is given up): retried here too, a silent server would cost six times
                // more per attempt.
                if !e.is_retryable()
                    || matches!(e, StoreError::NoAnswer { .. })
                    || attempt >= ATTEMPTS
                {
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

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_s3::types::{AbortIncompleteMultipartUpload, LifecycleRuleFilter, Tag};

    fn rule(
        status: ExpirationStatus,
        days: Option<i32>,
        filter: Option<LifecycleRuleFilter>,
    ) -> LifecycleRule {
        let mut b = LifecycleRule::builder().status(status);
        if let Some(d) = days {
            b = b.abort_incomplete_multipart_upload(
                AbortIncompleteMultipartUpload::builder()
                    .days_after_initiation(d)
                    .build(),
            );
        }
        if let Some(f) = filter {
            b = b.filter(f);
        }
        b.build().unwrap()
    }

    #[test]
    fn only_enabled_abort_rules_covering_the_prefix_count() {
        let on = ExpirationStatus::Enabled;
        let prefix = |p: &str| Some(LifecycleRuleFilter::builder().prefix(p).build());
        assert!(rule_aborts_uploads_under(
            &rule(on.clone(), Some(7), None),
            "repo/"
        ));
        assert!(rule_aborts_uploads_under(
            &rule(on.clone(), Some(7), prefix("")),
            "repo/"
        ));
        assert!(rule_aborts_uploads_under(
            &rule(on.clone(), Some(1), prefix("re")),
            "repo/"
        ));
        assert!(rule_aborts_uploads_under(
            &rule(on.clone(), Some(1), prefix("repo/")),
            "repo/"
        ));
        // Another prefix, a narrower one, disabled, no abort action, a tag filter: no.
        assert!(!rule_aborts_uploads_under(
            &rule(on.clone(), Some(7), prefix("logs/")),
            "repo/"
        ));
        assert!(!rule_aborts_uploads_under(
            &rule(on.clone(), Some(7), prefix("repo/data/")),
            "repo/"
        ));
        assert!(!rule_aborts_uploads_under(
            &rule(ExpirationStatus::Disabled, Some(7), None),
            "repo/"
        ));
        assert!(!rule_aborts_uploads_under(
            &rule(on.clone(), None, None),
            "repo/"
        ));
        let tagged = LifecycleRuleFilter::builder()
            .tag(Tag::builder().key("k").value("v").build().unwrap())
            .build();
        assert!(!rule_aborts_uploads_under(
            &rule(on, Some(7), Some(tagged)),
            "repo/"
        ));
    }
}
