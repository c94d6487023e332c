//! Orphaned multipart uploads (RELIABILITY T02): a writer killed in the middle of an S3
//! multipart upload leaves the upload open, and its parts are billed until someone aborts
//! it. `prune` aborts them under its exclusive lock ([`abort_orphans`]), sparing every upload
//! younger than twice the lock lease; `healthcheck` warns about uploads older than a day
//! ([`stale_uploads`]). The argument that no live writer's upload is aborted is in
//! `docs/format.md`, "Orphaned multipart uploads". Stores without multipart uploads (a
//! local directory) have none.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::lock::{self, Lock};
use super::Repository;
use crate::store::{PendingUpload, Store, StoreResult};
use crate::Result;

/// `healthcheck` warns about pending uploads at least this old: no pack upload takes a day.
pub const HEALTH_WARN_AGE: Duration = Duration::from_secs(24 * 3600);

/// How old an upload must be before prune aborts it: twice this process's lease (with the
/// default 15-minute lease, 30 minutes).
pub fn abort_age() -> Duration {
    lock::lease() * 2
}

/// What prune did about pending multipart uploads.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MultipartReport {
    /// Uploads pending under the repository's prefix.
    pub pending: usize,
    /// Aborted (or, in a dry run, that would be).
    pub aborted: usize,
    /// Spared: younger than [`abort_age`], or of unknown age.
    pub kept: usize,
    /// The age an upload needed to be aborted, in seconds.
    pub abort_age_secs: u64,
    /// Why the uploads could not be listed or one could not be aborted (the store refused:
    /// no permission, no support for listing uploads). Prune goes on; the next one retries.
    pub error: Option<String>,
}

/// Whether `u` was started at least `age` before `now`; unknown start times are never old.
fn older_than(u: &PendingUpload, age: Duration, now: DateTime<Utc>) -> bool {
    let Some(started) = u.initiated_secs else {
        return false;
    };
    now.timestamp().saturating_sub(started) >= age.as_secs() as i64
}

/// The pending uploads in `store` at least `age` old at `now`.
pub async fn stale_uploads(
    store: &dyn Store,
    age: Duration,
    now: DateTime<Utc>,
) -> StoreResult<Vec<PendingUpload>> {
    Ok(store
        .pending_uploads()
        .await?
        .into_iter()
        .filter(|u| older_than(u, age, now))
        .collect())
}

/// Aborts the pending uploads under `repo`'s prefix older than [`abort_age`]. `lock` must be
/// an exclusive lock on `repo`: it is confirmed before the listing and checked before each
/// abort, so a prune that lost its lease stops (exit 11). With `lock` `None` (a dry run)
/// nothing is aborted, only counted. A store error is reported in [`MultipartReport::error`],
/// not returned: orphaned uploads cost money, not safety, and must not fail the prune.
pub async fn abort_orphans(repo: &Repository, lock: Option<&Lock>) -> Result<MultipartReport> {
    let age = abort_age();
    let mut r = MultipartReport {
        abort_age_secs: age.as_secs(),
        ..MultipartReport::default()
    };
    if let Some(l) = lock {
        l.confirm().await?;
    }
    let pending = match repo.store.pending_uploads().await {
        Ok(p) => p,
        Err(e) => {
            r.error = Some(format!("could not list pending multipart uploads: {e}"));
            return Ok(r);
        }
    };
    r.pending = pending.len();
    // Upload start times are the store's: compare them with store time.
    let now = repo.now();
    for u in &pending {
        if !older_than(u, age, now) {
            r.kept += 1;
            continue;
        }
        if let Some(l) = lock {
            l.check()?;
            if let Err(e) = repo.store.abort_upload(u).await {
                r.error = Some(format!(
                    "could not abort the multipart upload of {}: {e}",
                    u.key
                ));
                return Ok(r);
            }
            tracing::info!(key = %u.key, initiated = ?u.initiated_secs, "aborted an orphaned multipart upload");
        }
        r.aborted += 1;
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_uploads_of_known_and_sufficient_age_are_old() {
        let now = DateTime::from_timestamp(1_000_000, 0).unwrap();
        let up = |secs| PendingUpload {
            key: "data/ab/x".into(),
            upload_id: "u".into(),
            initiated_secs: secs,
        };
        let age = Duration::from_secs(60);
        assert!(older_than(&up(Some(1_000_000 - 60)), age, now));
        assert!(older_than(&up(Some(0)), age, now));
        assert!(!older_than(&up(Some(1_000_000 - 59)), age, now));
        // A start time in the future (a clock behind the server's) is young, not old.
        assert!(!older_than(&up(Some(1_000_100)), age, now));
        assert!(!older_than(&up(None), age, now));
    }
}
