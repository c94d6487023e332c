//! Repository locks (leases): `locks/<id>` files carrying a random instance id, host, pid,
//! purpose and expiry. Shared locks (backup, restore, verify) coexist; an exclusive lock
//! (prune, key removal, repair) excludes everything. A lock is stale — ignored, and its file
//! removed by the next locker — when it is past its expiry or when it was taken on this host
//! by a process that no longer runs (pid and start time, as restic checks);
//! `lifeboat unlock` removes stale locks on request (`--remove-all`: every lock).
//! The holder refreshes its lease in the background and learns when it was lost (T19).

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{ObjectKind, Repository};
use crate::ids::ObjectId;
use crate::{Error, Result};

/// How long a lease lives without a refresh, unless [`LEASE_ENV`] says otherwise.
pub const LEASE: Duration = Duration::from_secs(15 * 60);
/// `LIFEBOAT_LOCK_LEASE_SECS`: this process's lease length in seconds
/// ([`MIN_LEASE_SECS`]..=[`MAX_LEASE_SECS`]); the lease is refreshed every fifth of it.
///
/// An environment variable rather than a repository setting because a lease is the
/// holder's own promise: each lock file carries its expiry, so other hosts honour whatever
/// length the holder chose and no repository-wide agreement (or format change) is needed.
/// Operators lengthen it where a host can stall for longer than 15 min (VM live migration,
/// a suspended laptop) without losing its lock; tests shorten it to lose a lock in seconds
/// (T19).
pub const LEASE_ENV: &str = "LIFEBOAT_LOCK_LEASE_SECS";
pub const MIN_LEASE_SECS: u64 = 2;
pub const MAX_LEASE_SECS: u64 = 7 * 24 * 3600;

fn lease_setting() -> &'static std::result::Result<Duration, String> {
    static LEASE_SETTING: OnceLock<std::result::Result<Duration, String>> = OnceLock::new();
    LEASE_SETTING.get_or_init(|| parse_lease(std::env::var(LEASE_ENV).ok().as_deref()))
}

fn parse_lease(v: Option<&str>) -> std::result::Result<Duration, String> {
    let Some(v) = v.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(LEASE);
    };
    match v.parse::<u64>() {
        Ok(n) if (MIN_LEASE_SECS..=MAX_LEASE_SECS).contains(&n) => Ok(Duration::from_secs(n)),
        _ => Err(format!(
            "{LEASE_ENV}={v:?}: give the lock lease in whole seconds from {MIN_LEASE_SECS} to {MAX_LEASE_SECS} (unset: {} s)",
            LEASE.as_secs()
        )),
    }
}

/// The lease length setting is valid (checked at start-up like the failpoints).
pub fn check_env() -> std::result::Result<(), String> {
    lease_setting().as_ref().map(|_| ()).map_err(Clone::clone)
}

/// This process's lease length.
pub fn lease() -> Duration {
    lease_setting().clone().unwrap_or(LEASE)
}

fn refresh_every() -> Duration {
    lease() / 5
}

fn expiry_from(now: DateTime<Utc>) -> DateTime<Utc> {
    now + chrono::Duration::from_std(lease()).expect("lease is bounded")
}

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
    /// The expiry of the current lease (ms since the epoch), moved on by each refresh: a
    /// holder that was stopped past it (SIGSTOP, a frozen VM) knows its lease is gone even
    /// before the refresher wakes up.
    expires_ms: Arc<AtomicI64>,
    refresher: tokio::task::JoinHandle<()>,
    released: bool,
}

impl Repository {
    /// Takes a shared or exclusive lock, failing with exit 11 if a live conflicting lock exists.
    pub async fn lock(&self, purpose: &str, exclusive: bool) -> Result<Lock> {
        let instance = hex::encode(rand::random::<[u8; 16]>());
        let measured = self.clock.measured();
        if measured {
            // Store time is known: conflicts can be judged before writing anything.
            self.check_conflicts(exclusive, None).await?;
        }
        let mut file = LockFile {
            instance: instance.clone(),
            host: crate::sys::host::hostname(),
            pid: std::process::id(),
            purpose: purpose.into(),
            exclusive,
            created: self.now(),
            expires: expiry_from(self.now()),
        };
        let sent = Utc::now();
        let mut id = self.save_json(ObjectKind::Lock, &file).await?;
        if !measured {
            // The lock file's write tells the store's time; judge every lease in it from
            // now on (a lock of another host is never taken for stale by this host's clock).
            self.time_write(&ObjectKind::Lock.key(&id), sent, Utc::now())
                .await;
            if self.clock.offset_ms() != 0 {
                file.created = self.now();
                file.expires = expiry_from(self.now());
                let old =
                    std::mem::replace(&mut id, self.save_json(ObjectKind::Lock, &file).await?);
                let _ = self.store.delete(&ObjectKind::Lock.key(&old)).await;
            }
        }
        // Two lockers may have raced past the first check; whoever sees the other backs off.
        if let Err(e) = self.check_conflicts(exclusive, Some(&id)).await {
            let _ = self.store.delete(&ObjectKind::Lock.key(&id)).await;
            return Err(e);
        }
        let current = Arc::new(tokio::sync::Mutex::new(id));
        let lost = Arc::new(AtomicBool::new(false));
        let expires_ms = Arc::new(AtomicI64::new(file.expires.timestamp_millis()));
        let refresher = tokio::spawn(refresh_loop(
            self.clone(),
            file,
            current.clone(),
            lost.clone(),
            expires_ms.clone(),
        ));
        Ok(Lock {
            repo: self.clone(),
            current,
            lost,
            expires_ms,
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
            if Some(&id) == own {
                continue;
            }
            if let Some(why) = lock.staleness(self.now()) {
                // Stale locks are not conflicts; their files are removed so they do not pile
                // up (each one is read and decrypted on every check).
                tracing::info!(lock = %id, holder = %lock.holder(), why = why.describe(), "removing a stale lock");
                let _ = self.store.delete(&ObjectKind::Lock.key(&id)).await;
                continue;
            }
            if exclusive || lock.exclusive {
                return Err(Error::Locked {
                    location: self.location(),
                    holder: lock.holder(),
                });
            }
        }
        Ok(())
    }

    /// `lifeboat unlock`: removes every stale lock (expired, or held by a process of this
    /// host that no longer runs); with `remove_all`, live ones too.
    pub async fn remove_stale_locks(&self, remove_all: bool) -> Result<UnlockReport> {
        let mut report = UnlockReport::default();
        self.measure_clock().await?;
        let now = self.now();
        for (id, lock) in self.list_locks().await? {
            let why = match lock.staleness(now) {
                Some(why) => why,
                None if remove_all => Staleness::Live,
                None => {
                    report.kept.push(lock);
                    continue;
                }
            };
            match self.store.delete(&ObjectKind::Lock.key(&id)).await {
                Ok(()) => report.removed.push((lock, why)),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(report)
    }

    /// Measures the store's clock (once per repository handle) without taking a lock: writes
    /// a lock file that has already expired (harmless if it is left behind), asks the store
    /// when it was written, and removes it.
    pub async fn measure_clock(&self) -> Result<()> {
        if self.clock.measured() {
            return Ok(());
        }
        let now = Utc::now();
        let probe = LockFile {
            instance: hex::encode(rand::random::<[u8; 16]>()),
            host: crate::sys::host::hostname(),
            pid: std::process::id(),
            purpose: "clock check".into(),
            exclusive: false,
            created: now,
            expires: now,
        };
        let id = self.save_json(ObjectKind::Lock, &probe).await?;
        let key = ObjectKind::Lock.key(&id);
        self.time_write(&key, now, Utc::now()).await;
        let _ = self.store.delete(&key).await;
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

/// Why a lock no longer protects anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Staleness {
    /// Its lease ran out without a refresh.
    Expired,
    /// Its holder was a process on this host that no longer runs.
    DeadProcess,
    /// Not stale: removed only because `unlock --remove-all` was asked.
    Live,
}

impl Staleness {
    pub fn describe(self) -> &'static str {
        match self {
            Staleness::Expired => "its lease expired",
            Staleness::DeadProcess => "its process no longer runs on this host",
            Staleness::Live => "it was live (--remove-all)",
        }
    }
    pub fn is_live(self) -> bool {
        self == Staleness::Live
    }
}

/// What `lifeboat unlock` removed and kept.
#[derive(Debug, Clone, Default)]
pub struct UnlockReport {
    pub removed: Vec<(LockFile, Staleness)>,
    /// Live locks left in place.
    pub kept: Vec<LockFile>,
}

impl LockFile {
    /// Why this lock is stale at `now`, or `None` while it protects its holder: past its
    /// expiry, or taken on this host by a process that no longer runs (checked like restic:
    /// by pid, and by the process's start time so a reused pid does not keep it alive).
    pub fn staleness(&self, now: DateTime<Utc>) -> Option<Staleness> {
        if self.expires < now {
            return Some(Staleness::Expired);
        }
        if self.host == crate::sys::host::hostname() && !process_alive_since(self.pid, self.created)
        {
            return Some(Staleness::DeadProcess);
        }
        None
    }

    /// The holder, for messages.
    pub fn holder(&self) -> String {
        format!(
            "{} lock for {} held by pid {} on {} since {} (expires {})",
            if self.exclusive {
                "exclusive"
            } else {
                "shared"
            },
            self.purpose,
            self.pid,
            self.host,
            self.created.format("%Y-%m-%d %H:%M:%S UTC"),
            self.expires.format("%H:%M:%S UTC")
        )
    }
}

/// Whether process `pid` of this host runs and started no later than `created` (a process
/// started after the lock was taken merely reuses a dead holder's pid).
fn process_alive_since(pid: u32, created: DateTime<Utc>) -> bool {
    let Ok(pid_t) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid_t <= 0 {
        return false;
    }
    if !crate::sys::process::pid_alive(pid_t) {
        return false;
    }
    match process_start(pid) {
        // Generous slack: the start time is derived from the boot time, which moves when
        // the wall clock is stepped; a live holder must never be taken for dead.
        Some(started) => started <= created + chrono::Duration::seconds(120),
        None => true,
    }
}

/// When process `pid` started, from /proc (Linux); `None` when unknown.
fn process_start(pid: u32) -> Option<DateTime<Utc>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let ticks: i64 = rest.split(' ').nth(19)?.parse().ok()?;
    let btime: i64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz <= 0 {
        return None;
    }
    let ms = btime * 1000 + ticks * 1000 / hz as i64;
    DateTime::from_timestamp_millis(ms)
}

async fn refresh_loop(
    repo: Repository,
    mut file: LockFile,
    current: Arc<tokio::sync::Mutex<ObjectId>>,
    lost: Arc<AtomicBool>,
    expires_ms: Arc<AtomicI64>,
) {
    loop {
        tokio::time::sleep(refresh_every()).await;
        let mut cur = current.lock().await;
        // If our lease expired or the file vanished (someone broke it), the lock is lost.
        let still_there = matches!(
            repo.store.head(&ObjectKind::Lock.key(&cur)).await,
            Ok(Some(_))
        );
        if !still_there || file.expires < repo.now() {
            lost.store(true, Ordering::SeqCst);
            return;
        }
        file.expires = expiry_from(repo.now());
        match repo.save_json(ObjectKind::Lock, &file).await {
            Ok(new_id) => {
                expires_ms.store(file.expires.timestamp_millis(), Ordering::SeqCst);
                let old = std::mem::replace(&mut *cur, new_id);
                let _ = repo.store.delete(&ObjectKind::Lock.key(&old)).await;
            }
            Err(e) => tracing::warn!(error = %e, "could not refresh repository lock"),
        }
    }
}

impl Lock {
    /// Fails with exit 11 if the lease was lost: the refresher found it gone or expired, or
    /// its expiry has passed (this process was stopped or starved longer than the lease, so
    /// another host may have broken it meanwhile). Cheap; call before every step that must
    /// not happen without the lock.
    pub fn check(&self) -> Result<()> {
        if self.lost.load(Ordering::SeqCst)
            || self.expires_ms.load(Ordering::SeqCst) <= self.repo.now().timestamp_millis()
        {
            self.lost.store(true, Ordering::SeqCst);
            return Err(self.lost_error(
                "the lease expired or was removed by another process; nothing was committed",
            ));
        }
        Ok(())
    }

    /// [`Lock::check`], and the lock file is still in the store (another process may have
    /// removed it, `unlock --remove-all` or a host that took it for stale, before the
    /// refresher noticed). Call right before a commit point.
    pub async fn confirm(&self) -> Result<()> {
        self.check()?;
        let id = *self.current.lock().await;
        match self.repo.store.head(&ObjectKind::Lock.key(&id)).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                self.lost.store(true, Ordering::SeqCst);
                return Err(self.lost_error(
                    "the lock file was removed by another process; nothing was committed",
                ));
            }
            Err(e) => return Err(e.into()),
        }
        // The HEAD may have taken a while (a slow store): the lease must still hold after it.
        self.check()
    }

    /// A cheap, cloneable view of this lease for a watcher on another task: the same
    /// answer as [`Lock::check`].
    pub fn watch(&self) -> LeaseWatch {
        LeaseWatch {
            lost: self.lost.clone(),
            expires_ms: self.expires_ms.clone(),
            repo: self.repo.clone(),
        }
    }

    fn lost_error(&self, detail: &str) -> Error {
        Error::LockLost {
            location: self.repo.location(),
            detail: detail.into(),
        }
    }

    pub async fn release(mut self) {
        self.refresher.abort();
        self.released = true;
        let id = *self.current.lock().await;
        let _ = self.repo.store.delete(&ObjectKind::Lock.key(&id)).await;
    }
}

/// See [`Lock::watch`].
#[derive(Debug, Clone)]
pub struct LeaseWatch {
    lost: Arc<AtomicBool>,
    expires_ms: Arc<AtomicI64>,
    /// For its store time ([`Repository::now`]).
    repo: Repository,
}

impl LeaseWatch {
    /// True once the lease is lost (its refresher found it gone) or past its expiry.
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
            || self.expires_ms.load(Ordering::SeqCst) <= self.repo.now().timestamp_millis()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_setting_is_bounded_and_defaults_to_15_minutes() {
        assert_eq!(parse_lease(None).unwrap(), LEASE);
        assert_eq!(parse_lease(Some(" ")).unwrap(), LEASE);
        assert_eq!(parse_lease(Some("3")).unwrap(), Duration::from_secs(3));
        assert_eq!(
            parse_lease(Some("3600")).unwrap(),
            Duration::from_secs(3600)
        );
        for bad in ["0", "1", "-5", "1.5", "15m", "604801"] {
            let e = parse_lease(Some(bad)).unwrap_err();
            assert!(
                e.contains(LEASE_ENV) && e.contains("from 2 to 604800"),
                "{bad}: {e}"
            );
        }
    }
}
