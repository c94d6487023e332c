//! `trait Store`: a flat key → bytes space (get/put/list/delete/head), nothing about backups,
//! crypto or regions. Implementations: [`local::LocalStore`] (a directory), [`s3::S3Store`]
//! (an S3 bucket); decorators wrap any store: [`retry::RetryStore`] (backoff, watchdog,
//! deadline) and [`multi::MultiStore`] (fan-out to several regions).
//!
//! Every store also answers [`Store::backend`] (its kind, which picks error hints) and
//! [`Store::probe`] (can it be reached, written, read and deleted: a [`health::HealthReport`],
//! findings as data).
//!
//! Keys are `/`-separated relative paths such as `data/ab/ab12…` or `snapshots/12ef…`.
//! Every object the repository writes is immutable once written: `put` of an existing key
//! must leave either the old or the new (identical) bytes, never a mix.

pub mod health;
pub mod local;
pub mod multi;
pub mod pool;
pub mod retry;
pub mod s3;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::exit::ExitCode;

pub use health::{HealthProblem, HealthReport};
pub use local::LocalStore;

/// Metadata of a stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
}

/// The kind of storage behind a store ([`Store::backend`]); decorators report the kind of the
/// store they wrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A directory: [`LocalStore`].
    Local,
    /// An S3 bucket: [`s3::S3Store`].
    S3,
    /// A fan-out to several destinations: [`multi::MultiStore`].
    Multi,
}

/// Errors a store reports. `is_retryable` separates transient faults from permanent ones.
/// `backend` is the kind of the store named in `store`; [`StoreError::hint`] goes by it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object {key} not found in {store}")]
    NotFound { store: String, key: String },

    #[error("out of space writing {key}")]
    NoSpace { key: String },

    #[error("permission denied on {key} in {store}: {detail}")]
    PermissionDenied {
        store: String,
        backend: Backend,
        key: String,
        detail: String,
    },

    #[error("{op} {key} in {store} failed: {detail}")]
    Transient {
        store: String,
        op: &'static str,
        key: String,
        detail: String,
    },

    #[error("{op} {key} in {store} failed: {detail}")]
    Permanent {
        store: String,
        op: &'static str,
        key: String,
        detail: String,
    },

    #[error("{op} {key} in {store} was throttled: {detail}")]
    Throttled {
        store: String,
        op: &'static str,
        key: String,
        detail: String,
    },

    /// The store took the request (the connection was made, or is being made) and gave no
    /// answer in time: a connect timeout, or no response to a sent request within the S3
    /// destination's `answer_timeout_secs`. Retryable, but a few in a row mean the store
    /// answers nothing at all ([`retry::UNANSWERED_LIMIT`]).
    #[error("{op} {key} in {store} got no answer: {detail}")]
    NoAnswer {
        store: String,
        op: &'static str,
        key: String,
        detail: String,
    },

    #[error("store {store} is unreachable: {detail}")]
    Unreachable {
        store: String,
        backend: Backend,
        detail: String,
    },

    #[error("store {store} refused the request signature because of clock skew: {detail}")]
    ClockSkew { store: String, detail: String },

    /// The store refused to delete (or change) `key` because a version of it is under Object
    /// Lock retention (until `until`, when the store says) or a legal hold. Not a fault: the
    /// object stays, and a later attempt after the date succeeds.
    #[error("{key} in {store} is under Object Lock retention{}", until.map(|u| format!(" until {}", u.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))).unwrap_or_else(|| " (or a legal hold)".into()))]
    Locked {
        store: String,
        key: String,
        until: Option<chrono::DateTime<chrono::Utc>>,
    },
}

/// The Object Lock retention a destination asks for on every object it writes
/// (`object_lock_mode`, `object_lock_days`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct LockPolicy {
    pub mode: s3::LockMode,
    pub days: u32,
}

impl LockPolicy {
    pub fn period(&self) -> chrono::Duration {
        chrono::Duration::days(self.days as i64)
    }
}

impl StoreError {
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StoreError::Transient { .. }
                | StoreError::Throttled { .. }
                | StoreError::Unreachable { .. }
                | StoreError::NoAnswer { .. }
        )
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }

    pub fn exit_code(&self) -> ExitCode {
        match self {
            StoreError::NoSpace { .. } => ExitCode::NoSpace,
            _ => ExitCode::Error,
        }
    }

    pub fn hint(&self) -> Option<String> {
        match self {
            StoreError::NoSpace { .. } => Some(
                "free space on the repository's file system (or raise the quota); nothing was committed"
                    .into(),
            ),
            StoreError::PermissionDenied {
                backend: Backend::S3,
                ..
            } => Some(
                "check the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, the profile or the credentials_file of this destination) and that the key may read, write and list this bucket"
                    .into(),
            ),
            StoreError::PermissionDenied { .. } => {
                Some("check the permissions or credentials for this store".into())
            }
            StoreError::Unreachable {
                backend: Backend::S3,
                ..
            } => Some(
                "check the endpoint URL, DNS, the firewall and that the S3 server is running".into(),
            ),
            StoreError::Unreachable { .. } => {
                Some("check that the store is mounted / the endpoint is reachable".into())
            }
            StoreError::NoAnswer { .. } => Some(
                "the server takes connections but answers nothing in time: check the server, the network path (a firewall dropping packets, a load balancer without a healthy backend) and the endpoint; answer_timeout_secs and connect_timeout_secs bound each wait"
                    .into(),
            ),
            StoreError::Locked { .. } => Some(
                "Object Lock keeps it until its retention lapses; a prune after that date deletes it".into(),
            ),
            StoreError::ClockSkew { .. } => Some(
                "sync this machine's clock (chrony or systemd-timesyncd): S3 refuses signatures more than 15 minutes off"
                    .into(),
            ),
            _ => None,
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// A short human description, e.g. `local:/srv/backup` or `s3:eu-west/bucket/prefix`.
    fn describe(&self) -> String;

    /// The kind of storage this is; a decorator answers for the store it wraps.
    fn backend(&self) -> Backend;

    async fn get(&self, key: &str) -> StoreResult<Bytes>;

    /// `len` bytes starting at `offset`. Reading past the end is an error.
    async fn get_range(&self, key: &str, offset: u64, len: u64) -> StoreResult<Bytes>;

    /// Durably stores `data` under `key`. When this returns Ok the object is complete.
    async fn put(&self, key: &str, data: Bytes) -> StoreResult<()>;

    /// Every object whose key starts with `prefix` (e.g. `"snapshots/"`).
    async fn list(&self, prefix: &str) -> StoreResult<Vec<ObjectInfo>>;

    /// Deleting a missing key is not an error.
    async fn delete(&self, key: &str) -> StoreResult<()>;

    async fn head(&self, key: &str) -> StoreResult<Option<ObjectInfo>>;

    /// When the store's own clock says `key` was last written (S3: `Last-Modified`), for
    /// judging leases in store time (`repo::clock`). `None` (the default): the store has no
    /// clock of its own — a local directory shares this host's — or the object is gone.
    async fn modified(&self, key: &str) -> StoreResult<Option<chrono::DateTime<chrono::Utc>>> {
        let _ = key;
        Ok(None)
    }

    /// Checks that the store can be used (reached, written, read, deleted), telling apart what
    /// is wrong. Never fails: every finding is in the report. Not retried by the retry
    /// decorator: a diagnosis reports the first failure rather than waiting it out.
    async fn probe(&self) -> HealthReport;

    /// Removes what killed writers left behind (temp files of writes that never finished)
    /// and no live writer can still own; returns how many. Stores whose writes are atomic
    /// (S3) have nothing to sweep; decorators forward to what they wrap.
    fn sweep_leftovers(&self) -> usize {
        0
    }

    /// The Object Lock retention this store puts on what it writes; `None` (the default): its
    /// objects are not locked, and the lock operations below are never called.
    fn lock_policy(&self) -> Option<LockPolicy> {
        None
    }

    /// When the store asks for Object Lock: checks that the bucket really enforces it (a
    /// bucket without it would silently accept deletes). An error names the fix.
    async fn check_lock_support(&self) -> StoreResult<()> {
        Ok(())
    }

    /// The retain-until date of `key`'s current version (`None`: not locked).
    async fn lock_until(&self, key: &str) -> StoreResult<Option<chrono::DateTime<chrono::Utc>>> {
        let _ = key;
        Ok(None)
    }

    /// Extends the retention of `key`'s current version to `until`, in the store's lock mode.
    /// Callers never ask for an earlier date than the one in force (S3 refuses to shorten a
    /// compliance lock).
    async fn extend_lock(
        &self,
        key: &str,
        until: chrono::DateTime<chrono::Utc>,
    ) -> StoreResult<()> {
        let _ = until;
        Err(StoreError::Permanent {
            store: self.describe(),
            op: "extend_lock",
            key: key.into(),
            detail: "this store has no Object Lock".into(),
        })
    }

    /// Removes `key` for good: on a store that keeps versions (a bucket with Object Lock),
    /// every version and delete marker, not just the current one (which `delete` hides behind
    /// a delete marker, freeing nothing). A version still under retention is refused with
    /// [`StoreError::Locked`] and the key then reads as before. Default: [`Store::delete`].
    async fn purge(&self, key: &str) -> StoreResult<()> {
        self.delete(key).await
    }
    /// Multipart uploads under this store's prefix that were started and never completed or
    /// aborted (a writer killed mid-upload leaves them; S3 bills their parts until they are
    /// aborted). Stores without multipart uploads have none; decorators forward.
    async fn pending_uploads(&self) -> StoreResult<Vec<PendingUpload>> {
        Ok(Vec::new())
    }

    /// Aborts one upload [`Store::pending_uploads`] listed; one already gone is not an error.
    async fn abort_upload(&self, _upload: &PendingUpload) -> StoreResult<()> {
        Ok(())
    }

    /// Whether the bucket has an enabled lifecycle rule with `AbortIncompleteMultipartUpload`
    /// that covers this store's prefix (T02: uploads of killed writers are then aborted by
    /// the server, not only by `prune`). `None`: the store has no multipart uploads, or cannot
    /// tell. Decorators forward.
    async fn aborts_incomplete_uploads(&self) -> StoreResult<Option<bool>> {
        Ok(None)
    }
}

/// A multipart upload that was started and never completed or aborted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PendingUpload {
    /// The object key it would have created, relative to the store's prefix.
    pub key: String,
    pub upload_id: String,
    /// When it was started (seconds since the Unix epoch, the server's clock), if it says.
    pub initiated_secs: Option<i64>,
}

pub type DynStore = Arc<dyn Store>;

/// Parses a `--repo` location into a store. Plain paths (and `local:PATH`) are local
/// directories; `s3://BUCKET/PREFIX?region=R&endpoint=URL&…` is an S3 bucket (see
/// [`s3::S3Config::from_url`]) wrapped in the retry decorator.
pub fn open_location(location: &str) -> crate::Result<DynStore> {
    Ok(open_destination(location)?.store)
}

/// Like [`open_location`], keeping the destination's name and retry counters.
pub fn open_destination(location: &str) -> crate::Result<multi::Destination> {
    if location.starts_with("s3://") {
        let cfg = s3::S3Config::from_url(location).map_err(crate::Error::Usage)?;
        return multi::Destination::from_config(&multi::DestinationConfig::S3(Box::new(cfg)))
            .map_err(crate::Error::Usage);
    }
    let path = location.strip_prefix("local:").unwrap_or(location);
    if path.contains("://") {
        return Err(crate::Error::Usage(format!(
            "repository location {location:?} has an unknown scheme; use a directory path or s3://BUCKET/PREFIX?region=R"
        )));
    }
    if path.is_empty() {
        return Err(crate::Error::Usage(
            "empty repository location; pass --repo PATH or set LIFEBOAT_REPO".into(),
        ));
    }
    Ok(multi::Destination {
        name: format!("local:{path}"),
        store: Arc::new(LocalStore::new(path)),
        retry: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_follow_the_backend_not_the_store_name() {
        let denied = |backend| StoreError::PermissionDenied {
            store: "local:/srv/s3:backups".into(),
            backend,
            key: "k".into(),
            detail: "403".into(),
        };
        assert!(denied(Backend::S3)
            .hint()
            .unwrap()
            .contains("AWS_SECRET_ACCESS_KEY"));
        assert_eq!(
            denied(Backend::Local).hint().as_deref(),
            Some("check the permissions or credentials for this store")
        );
        let unreachable = |backend| StoreError::Unreachable {
            store: "s3:eu:backups".into(),
            backend,
            detail: "connection refused".into(),
        };
        assert_eq!(
            unreachable(Backend::S3).hint().as_deref(),
            Some("check the endpoint URL, DNS, the firewall and that the S3 server is running")
        );
        assert_eq!(
            unreachable(Backend::Multi).hint().as_deref(),
            Some("check that the store is mounted / the endpoint is reachable")
        );
    }
}
