//! The Object Lock extension pass ([`crate::repo::object_lock`]) as the use cases run it:
//! `forget`, `prune` and `backup` call it for every region whose destination asks for
//! Object Lock (`object_lock_mode` / `object_lock_days`); other regions are left alone.

use super::target::Target;
use super::Env;
use crate::repo::object_lock::{self, LockReport};
use crate::repo::Repository;
use crate::sys::clock::lock_now;
use crate::Result;

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
