//! Repository locks (leases): `locks/<id>` files carrying a random instance id, host, pid,
//! purpose and expiry. Shared locks (backup, restore, verify) coexist; an exclusive lock
//! (prune, key removal) excludes everything. A lock past its expiry is stale and ignored.
//! The holder refreshes its lease in the background and learns when it was lost (T19).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{ObjectKind, Repository};
use crate::ids::ObjectId;
use crate::{Error, Result};

/// How long a lease lives without a refresh.
pub const LEASE: Duration = Duration::from_secs(15 * 60);
const REFRESH_EVERY: Duration = Duration::from_secs(3 * 60);

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockFile {
    pub instance: String,
    pub host: String,
    pub pid: u32,
    pub purpose: String,
    pub exclusive: bool,
    pub created: DateTime<Utc>,
    pub expires: DateTime<Utc>,
}

/// A held lock (an RAII guard). [`Lock::release`] removes the file and waits for it;
/// dropping a lock that was not released (an early return, a panic, a cancelled task)
/// stops the refresher and removes the file in the background, so a forgotten release
/// costs at most a stale file that expires with its lease. [`Repository::with_lock`] runs
/// work under a lock and always releases it.
pub struct Lock {
    repo: Repository,
    current: Arc<tokio::sync::Mutex<ObjectId>>,
    lost: Arc<AtomicBool>,
    refresher: tokio::task::JoinHandle<()>,
    released: bool,
}

impl Repository {
    /// Takes a shared or exclusive lock, failing with exit 11 if a live conflicting lock exists.
    pub async fn lock(&self, purpose: &str, exclusive: bool) -> Result<Lock> {
        let instance = hex::encode(rand::random::<[u8; 16]>());
        self.check_conflicts(exclusive, None).await?;
        let file = LockFile {
            instance: instance.clone(),
            host: crate::sys::host::hostname(),
            pid: std::process::id(),
            purpose: purpose.into(),
            exclusive,
            created: Utc::now(),
            expires: Utc::now() + chrono::Duration::from_std(LEASE).expect("small duration"),
        };
        let id = self.save_json(ObjectKind::Lock, &file).await?;
        // Two lockers may have raced past the first check; whoever sees the other backs off.
        if let Err(e) = self.check_conflicts(exclusive, Some(&id)).await {
            let _ = self.store.delete(&ObjectKind::Lock.key(&id)).await;
            return Err(e);
        }
        let current = Arc::new(tokio::sync::Mutex::new(id));
        let lost = Arc::new(AtomicBool::new(false));
        let refresher = tokio::spawn(refresh_loop(
            self.clone(),
            file,
            current.clone(),
            lost.clone(),
        ));
        Ok(Lock {
            repo: self.clone(),
            current,
            lost,
            refresher,
            released: false,
        })
    }

    /// Runs `work` under a shared or exclusive lock and releases the lock afterwards,
    /// whatever `work` returned.
    pub async fn with_lock<T>(
        &self,
        purpose: &str,
        exclusive: bool,
        work: impl AsyncFnOnce(&Lock) -> Result<T>,
    ) -> Result<T> {
        let lock = self.lock(purpose, exclusive).await?;
        let result = work(&lock).await;
        lock.release().await;
        result
    }

    async fn check_conflicts(&self, exclusive: bool, own: Option<&ObjectId>) -> Result<()> {
        for (id, lock) in self.list_locks().await? {
            if Some(&id) == own || lock.expires < Utc::now() {
                continue;
            }
            if exclusive || lock.exclusive {
                return Err(Error::Locked {
                    location: self.location(),
                    holder: format!(
                        "{} lock for {} held by pid {} on {} since {} (expires {})",
                        if lock.exclusive {
                            "exclusive"
                        } else {
                            "shared"
                        },
                        lock.purpose,
                        lock.pid,
                        lock.host,
                        lock.created.format("%Y-%m-%d %H:%M:%S UTC"),
                        lock.expires.format("%H:%M:%S UTC")
                    ),
                });
            }
        }
        Ok(())
    }

    pub async fn list_locks(&self) -> Result<Vec<(ObjectId, LockFile)>> {
        let mut out = Vec::new();
        for info in self.store.list("locks/").await? {
            let Some(id) = info.key.strip_prefix("locks/").and_then(|s| s.parse().ok()) else {
                continue;
            };
            // A lock deleted between list and get was released: not a conflict.
            match self.load_json::<LockFile>(ObjectKind::Lock, &id).await {
                Ok(l) => out.push((id, l)),
                Err(Error::Store(e)) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}

async fn refresh_loop(
    repo: Repository,
    mut file: LockFile,
    current: Arc<tokio::sync::Mutex<ObjectId>>,
    lost: Arc<AtomicBool>,
) {
    loop {
        tokio::time::sleep(REFRESH_EVERY).await;
        let mut cur = current.lock().await;
        // If our lease expired or the file vanished (someone broke it), the lock is lost.
        let still_there = matches!(
            repo.store.head(&ObjectKind::Lock.key(&cur)).await,
            Ok(Some(_))
        );
        if !still_there || file.expires < Utc::now() {
            lost.store(true, Ordering::SeqCst);
            return;
        }
        file.expires = Utc::now() + chrono::Duration::from_std(LEASE).expect("small duration");
        match repo.save_json(ObjectKind::Lock, &file).await {
            Ok(new_id) => {
                let old = std::mem::replace(&mut *cur, new_id);
                let _ = repo.store.delete(&ObjectKind::Lock.key(&old)).await;
            }
            Err(e) => tracing::warn!(error = %e, "could not refresh repository lock"),
        }
    }
}

impl Lock {
    /// Fails with exit 11 if the lease was lost; call before committing.
    pub fn check(&self) -> Result<()> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(Error::LockLost {
                location: self.repo.location(),
                detail:
                    "the lease expired or was removed by another process; nothing was committed"
                        .into(),
            });
        }
        Ok(())
    }

    pub async fn release(mut self) {
        self.refresher.abort();
        self.released = true;
        let id = *self.current.lock().await;
        let _ = self.repo.store.delete(&ObjectKind::Lock.key(&id)).await;
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        self.refresher.abort();
        if self.released {
            return;
        }
        // Not released (an early return or a panic): remove the file in the background.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (repo, current) = (self.repo.clone(), self.current.clone());
            rt.spawn(async move {
                let id = *current.lock().await;
                let _ = repo.store.delete(&ObjectKind::Lock.key(&id)).await;
            });
        }
    }
}
