//! The Object Lock extension pass ([`crate::repo::object_lock`]) as the use cases run it:
//! `forget`, `prune` and `backup` call it for every region whose destination asks for
//! Object Lock (`object_lock_mode` / `object_lock_days`); other regions are left alone.
//! `forget` and `prune` first ask whether their credentials may delete there at all
//! ([`check_may_delete`]): the backup role of such a bucket is meant not to
//! (`docs/regions.md`, "IAM policies").

use super::target::Target;
use super::Env;
use crate::repo::object_lock::{self, LockReport};
use crate::repo::Repository;
use crate::store::StoreError;
use crate::sys::clock::lock_now;
use crate::{Error, Result};

/// The key [`check_may_delete`] deletes: lifeboat never writes it.
pub const PROBE: &str = "delete-permission-probe";

/// On a region with Object Lock, before `command` (forget, prune) changes anything: the
/// credentials may delete objects (`s3:DeleteObject`) and object versions
/// (`s3:ListBucketVersions`, `s3:DeleteObjectVersion`), or an [`Error::Refused`] naming the
/// permission, the region and the fix, with nothing changed. It deletes [`PROBE`], which does
/// not exist (on the versioned bucket that adds a delete marker), then purges it (which
/// removes that marker). A role denied the first step leaves nothing; one denied the second
/// leaves one empty delete marker, which the next allowed probe removes. Without the probe,
/// `forget` with backup credentials is refused at its first snapshot delete (after taking
/// its lock and updating the catalog), and `prune` at its first delete (after writing its plan
/// and new index files).
pub async fn check_may_delete(repo: &Repository, command: &str) -> Result<()> {
    if repo.store.lock_policy().is_none() {
        return Ok(());
    }
    let ok = |r: crate::store::StoreResult<()>| match r {
        Err(e) if e.is_not_found() => Ok(()),
        r => r,
    };
    let (step, res) = match ok(repo.store.delete(PROBE).await) {
        Ok(()) => (2, ok(repo.store.purge(PROBE).await)),
        Err(e) => (1, Err(e)),
    };
    match res {
        Ok(()) => Ok(()),
        Err(StoreError::PermissionDenied { store, detail, .. }) => {
            let permission = match step {
                1 => "s3:DeleteObject",
                _ if detail.starts_with("list_versions") => "s3:ListBucketVersions",
                _ => "s3:DeleteObjectVersion",
            };
            Err(Error::Refused(format!(
                "{command} on {store}: these credentials may not delete ({permission} refused: {detail}); nothing was changed. {command} needs s3:DeleteObject, s3:ListBucketVersions and s3:DeleteObjectVersion on the repository's prefix, which the backup role of an Object Lock bucket should not have: run {command} with the maintenance role's credentials (docs/regions.md, \"IAM policies\")"
            )))
        }
        Err(e) => Err(e.into()),
    }
}

/// The pass on one region's repository; `None` when its store has no Object Lock.
pub async fn extend(env: &Env, repo: &Repository) -> Result<Option<LockReport>> {
    if repo.store.lock_policy().is_none() {
        return Ok(None);
    }
    repo.with_lock("object lock extension", false, async |_| {
        object_lock::extend(repo, lock_now(), &env.cancel).await
    })
    .await
}

/// After a backup committed: the pass in every region with Object Lock (`repo` is the
/// repository the backup wrote, possibly through the multi-region fan-out). A failure is a
/// warning, never the backup's failure: the snapshot is committed, and the next backup,
/// forget or prune runs the pass again.
pub async fn after_backup(env: &Env, target: &Target, repo: &Repository) {
    for r in &target.regions {
        if r.dest.store.lock_policy().is_none() {
            continue;
        }
        let res = async {
            let region_repo = repo.with_store(r.dest.store.clone()).await?;
            extend(env, &region_repo).await
        }
        .await;
        match res {
            Ok(Some(l)) => tracing::info!(
                region = %r.name,
                objects = l.objects,
                extended = l.extended,
                read = l.read,
                "object lock retention checked"
            ),
            Ok(None) => {}
            Err(e) => env.warn(format!(
                "region {}: the Object Lock retention of the data the snapshots need was not extended ({e}); the next backup, forget or prune tries again",
                r.name
            )),
        }
    }
}
