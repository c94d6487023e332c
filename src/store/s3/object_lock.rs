//! Object Lock on an S3 destination that asks for it (`object_lock_mode`, `object_lock_days`):
//! the bucket check (`GetObjectLockConfiguration`), reading and extending an object's
//! retention (`HeadObject`, `PutObjectRetention`), and the purge that really frees an object
//! in a versioned bucket.
//!
//! Why a purge: a bucket with Object Lock is always versioned, so `DeleteObject` by key only
//! stacks a delete marker on top; the locked bytes stay (and are billed) for ever. A purge
//! lists the key's versions (`ListObjectVersions`) and deletes each by `VersionId`. S3 refuses
//! a version whose retention has not lapsed with a plain `AccessDenied`, which a missing
//! `s3:DeleteObjectVersion` permission also gives; the version's own retention (a HEAD of that
//! version) tells the two apart, so only a real lock becomes [`StoreError::Locked`]. When a
//! version is locked, the key's delete markers go too, so the key reads as before (a prune
//! indexes such a pack again).
//!
//! Every date is judged on [`crate::sys::clock::lock_now`]. This file must not know what the
//! objects are (packs, indexes): that is the repository's business.

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::DateTime as AwsDateTime;
use aws_sdk_s3::types::{
    ObjectLockEnabled, ObjectLockLegalHoldStatus, ObjectLockRetention, ObjectLockRetentionMode,
};
use chrono::{DateTime, Utc};

use super::{LockMode, S3Store};
use crate::store::{LockPolicy, StoreError, StoreResult};

fn to_chrono(t: &AwsDateTime) -> DateTime<Utc> {
    DateTime::from_timestamp(t.secs(), t.subsec_nanos()).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn to_aws(t: DateTime<Utc>) -> AwsDateTime {
    AwsDateTime::from_secs(t.timestamp())
}

impl S3Store {
    pub(super) fn policy(&self) -> Option<LockPolicy> {
        let cfg = self.config();
        cfg.object_lock_mode
            .zip(cfg.object_lock_days)
            .map(|(mode, days)| LockPolicy { mode, days })
    }

    /// The bucket enforces Object Lock, or an error that says how to get a bucket that does.
    pub(super) async fn check_bucket_lock(&self) -> StoreResult<()> {
        let Some(policy) = self.policy() else {
            return Ok(());
        };
        let client = self.client().await?;
        let bucket = &self.config().bucket;
        let fix = format!(
            "the destination asks for object_lock_mode = \"{}\" but bucket {bucket} does not have Object Lock enabled, so nothing would be protected: create the bucket with Object Lock (aws s3api create-bucket --bucket {bucket} --object-lock-enabled-for-bucket; it cannot be switched on for Garage or s3s-fs, which do not implement it), or remove object_lock_mode/object_lock_days from the destination",
            match policy.mode {
                LockMode::Governance => "governance",
                LockMode::Compliance => "compliance",
            }
        );
        match client
            .get_object_lock_configuration()
            .bucket(bucket)
            .send()
            .await
        {
            Ok(out) => {
                let enabled = out
                    .object_lock_configuration()
                    .and_then(|c| c.object_lock_enabled())
                    .is_some_and(|e| *e == ObjectLockEnabled::Enabled);
                if enabled {
                    Ok(())
                } else {
                    Err(self.not_locked("object lock is not enabled", fix))
                }
            }
            Err(e) => {
                let code = e.code().unwrap_or("").to_string();
                let status = e.raw_response().map(|r| r.status().as_u16());
                if code == "ObjectLockConfigurationNotFoundError"
                    || code == "NotImplemented"
                    || status == Some(501)
                    || (status == Some(404) && code != "NoSuchBucket")
                {
                    return Err(self.not_locked(
                        &format!(
                            "GetObjectLockConfiguration answered {code} (HTTP {})",
                            status.unwrap_or(0)
                        ),
                        fix,
                    ));
                }
                Err(self.map_err("get_object_lock_configuration", "", e))
            }
        }
    }

    fn not_locked(&self, what: &str, fix: String) -> StoreError {
        StoreError::Permanent {
            store: self.describe_store(),
            op: "check_object_lock",
            key: String::new(),
            detail: format!("{what}: {fix}"),
        }
    }

    fn describe_store(&self) -> String {
        crate::store::Store::describe(self)
    }

    /// The retain-until date of `key` (its current version, or `version`), and whether a
    /// legal hold is on.
    async fn retention_of(
        &self,
        key: &str,
        version: Option<&str>,
    ) -> StoreResult<Option<(Option<DateTime<Utc>>, bool)>> {
        let client = self.client().await?;
        match client
            .head_object()
            .bucket(&self.config().bucket)
            .key(self.full_key(key))
            .set_version_id(version.map(str::to_string))
            .send()
            .await
        {
            Ok(h) => Ok(Some((
                h.object_lock_retain_until_date().map(to_chrono),
                h.object_lock_legal_hold_status() == Some(&ObjectLockLegalHoldStatus::On),
            ))),
            Err(e) => match self.map_err("head", key, e) {
                StoreError::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    pub(super) async fn lock_until_of(&self, key: &str) -> StoreResult<Option<DateTime<Utc>>> {
        Ok(self.retention_of(key, None).await?.and_then(|(u, _)| u))
    }

    /// `PutObjectRetention` on the current version of `key`.
    pub(super) async fn extend(&self, key: &str, until: DateTime<Utc>) -> StoreResult<()> {
        let Some(policy) = self.policy() else {
            return Err(StoreError::Permanent {
                store: self.describe_store(),
                op: "extend_lock",
                key: key.into(),
                detail: "the destination has no object_lock_mode".into(),
            });
        };
        let mode = match policy.mode {
            LockMode::Governance => ObjectLockRetentionMode::Governance,
            LockMode::Compliance => ObjectLockRetentionMode::Compliance,
        };
        let client = self.client().await?;
        client
            .put_object_retention()
            .bucket(&self.config().bucket)
            .key(self.full_key(key))
            .retention(
                ObjectLockRetention::builder()
                    .mode(mode)
                    .retain_until_date(to_aws(until))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.map_err("extend_lock", key, e))?;
        Ok(())
    }

    /// Deletes every version and delete marker of `key` (see the module doc).
    pub(super) async fn purge_versions(&self, key: &str) -> StoreResult<()> {
        let client = self.client().await?;
        let bucket = &self.config().bucket;
        let full = self.full_key(key);
        let (mut versions, mut markers) = (Vec::new(), Vec::new());
        let (mut key_marker, mut version_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            let page = client
                .list_object_versions()
                .bucket(bucket)
                .prefix(&full)
                .set_key_marker(key_marker.take())
                .set_version_id_marker(version_marker.take())
                .send()
                .await
                .map_err(|e| self.map_err("list_versions", key, e))?;
            for v in page.versions() {
                if v.key() == Some(full.as_str()) {
                    versions.push(v.version_id().unwrap_or("null").to_string());
                }
            }
            for m in page.delete_markers() {
                if m.key() == Some(full.as_str()) {
                    markers.push(m.version_id().unwrap_or("null").to_string());
                }
            }
            if page.is_truncated() == Some(true) {
                key_marker = page.next_key_marker().map(str::to_string);
                version_marker = page.next_version_id_marker().map(str::to_string);
                if key_marker.is_none() {
                    break;
                }
            } else {
                break;
            }
        }
        let mut locked: Option<StoreError> = None;
        for v in &versions {
            match self.delete_version(key, v).await {
                Ok(()) => {}
                Err(StoreError::PermissionDenied { .. }) | Err(StoreError::Permanent { .. })
                    if locked.is_some() =>
                {
                    // Another version of a key already known to be locked.
                }
                Err(e @ (StoreError::PermissionDenied { .. } | StoreError::Permanent { .. })) => {
                    match self.retention_of(key, Some(v)).await? {
                        Some((until, hold))
                            if hold || until.is_some_and(|u| u > crate::sys::clock::lock_now()) =>
                        {
                            locked = Some(StoreError::Locked {
                                store: self.describe_store(),
                                key: key.into(),
                                until,
                            });
                        }
                        _ => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            }
        }
        // Delete markers are never locked. With a locked version left they go too, so the
        // key reads again; without one they are all that is left of the key.
        for m in &markers {
            self.delete_version(key, m).await?;
        }
        match locked {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn delete_version(&self, key: &str, version: &str) -> StoreResult<()> {
        let client = self.client().await?;
        match client
            .delete_object()
            .bucket(&self.config().bucket)
            .key(self.full_key(key))
            .version_id(version)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match self.map_err("delete_version", key, e) {
                StoreError::NotFound { .. } => Ok(()),
                other => Err(other),
            },
        }
    }
}
