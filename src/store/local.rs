//! A store in a local directory. Writes are atomic and durable: temp file in the target
//! directory, `fsync`, rename, `fsync` of the directory (RELIABILITY invariant 3). Temp files
//! are named `.tmp-<pid>-<random>` and ignored by `list`; [`Store::sweep_leftovers`] (every
//! backup, verify and repair) removes those whose writer no longer runs on this host, and
//! any older than a day. Files are created 0600 and directories 0700, whatever the umask.

use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;

use super::health::{probe_key, HealthProblem, HealthReport};
use super::pool::READS;
use super::{Backend, ObjectInfo, Store, StoreError, StoreResult};
use crate::direct;

const TEMP_PREFIX: &str = ".tmp-";
/// A temp file whose writer (by the pid in its name) no longer runs on this host is swept
/// once it is this old (the margin covers a repository shared with another host whose
/// writer happens to have a pid that is free here).
const DEAD_WRITER_AGE: Duration = Duration::from_secs(120);

/// This host's tag in temp file names: a temp file with this tag and the pid of a process
/// that no longer runs was written here by a killed writer, so it is swept at once.
fn host_tag() -> &'static str {
    static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TAG.get_or_init(|| {
        blake3::hash(crate::sys::host::hostname().as_bytes()).to_hex()[..8].to_string()
    })
}
/// Any temp file this old is swept, whoever wrote it: no single write takes a day.
const ANY_WRITER_AGE: Duration = Duration::from_secs(24 * 3600);

/// Reads a whole file into a (pooled, when large) buffer.
fn read_file(path: &Path) -> std::io::Result<Bytes> {
    let mut f = std::fs::File::open(path)?;
    let mut buf = READS.take(f.metadata()?.len() as usize);
    f.read_to_end(&mut buf)?;
    Ok(READS.into_bytes(buf))
}

#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> StoreResult<PathBuf> {
        if key.is_empty()
            || key.starts_with('/')
            || key
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(StoreError::Permanent {
                store: self.describe(),
                op: "resolve",
                key: key.into(),
                detail: "invalid key".into(),
            });
        }
        Ok(self.root.join(key))
    }

    fn map_err(&self, op: &'static str, key: &str, e: std::io::Error) -> StoreError {
        if e.raw_os_error() == Some(libc::ENOTDIR) && self.root.is_file() {
            return StoreError::Permanent {
                store: self.describe(),
                op,
                key: key.into(),
                detail: format!(
                    "the repository path {} is a file, not a directory: give the directory of \
                     a repository (or a new path for `lifeboat init`)",
                    self.root.display()
                ),
            };
        }
        match e.kind() {
            ErrorKind::NotFound => StoreError::NotFound {
                store: self.describe(),
                key: key.into(),
            },
            ErrorKind::PermissionDenied => StoreError::PermissionDenied {
                store: self.describe(),
                backend: Backend::Local,
                key: key.into(),
                detail: e.to_string(),
            },
            _ if e.raw_os_error() == Some(libc::ENOSPC)
                || e.raw_os_error() == Some(libc::EDQUOT) =>
            {
                StoreError::NoSpace {
                    key: format!("{} ({})", key, self.describe()),
                }
            }
            ErrorKind::Interrupted | ErrorKind::TimedOut | ErrorKind::WouldBlock => {
                StoreError::Transient {
                    store: self.describe(),
                    op,
                    key: key.into(),
                    detail: e.to_string(),
                }
            }
            _ => StoreError::Permanent {
                store: self.describe(),
                op,
                key: key.into(),
                detail: e.to_string(),
            },
        }
    }

    fn put_sync(&self, key: &str, data: &[u8]) -> StoreResult<()> {
        let path = self.path(key)?;
        let dir = path.parent().expect("keys always have a parent");
        let err = |e| self.map_err("put", key, e);
        // Directories 0700 and files 0600 (as restic): key slots and packs are for this
        // user only — a key slot anyone can copy can be attacked offline.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(err)?;
        let tmp = dir.join(format!(
            "{TEMP_PREFIX}{}-{}-{}",
            std::process::id(),
            host_tag(),
            hex::encode(rand::random::<[u8; 8]>())
        ));
        let result = (|| {
            // Pack-sized objects are written past the page cache (`crate::direct`): they are
            // fsynced before they count anyway, and a backup should not push the backed-up
            // service's working set out of the cache.
            let f = if data.len() >= direct::MIN {
                let f = direct::write_new(&tmp, data)?;
                f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
                f
            } else {
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&tmp)?;
                f.write_all(data)?;
                f
            };
            f.sync_all()?;
            drop(f);
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(dir)?.sync_all()
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(err(e));
        }
        Ok(())
    }

    fn list_sync(&self, prefix: &str) -> StoreResult<Vec<ObjectInfo>> {
        // Start from the deepest directory the prefix names, then filter by the full prefix.
        let dir_part = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        let start = if dir_part.is_empty() {
            self.root.clone()
        } else {
            self.root.join(dir_part)
        };
        let mut out = Vec::new();
        let mut stack = vec![start];
        while let Some(dir) = stack.pop() {
            let rd = match std::fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(self.map_err("list", prefix, e)),
            };
            for entry in rd {
                let entry = entry.map_err(|e| self.map_err("list", prefix, e))?;
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.starts_with(TEMP_PREFIX) {
                    continue;
                }
                let ft = entry
                    .file_type()
                    .map_err(|e| self.map_err("list", prefix, e))?;
                let path = entry.path();
                if ft.is_dir() {
                    stack.push(path);
                } else if ft.is_file() {
                    let rel = path
                        .strip_prefix(&self.root)
                        .expect("listed below root")
                        .to_string_lossy()
                        .into_owned();
                    if rel.starts_with(prefix) {
                        let size = entry
                            .metadata()
                            .map_err(|e| self.map_err("list", &rel, e))?
                            .len();
                        out.push(ObjectInfo { key: rel, size });
                    }
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Removes temp files left by killed writers: those whose writer process is gone and
    /// that are older than [`DEAD_WRITER_AGE`], and any older than [`ANY_WRITER_AGE`].
    pub fn sweep_dead_writers(&self) -> usize {
        self.sweep_where(|name, age| {
            if age >= ANY_WRITER_AGE {
                return true;
            }
            // `.tmp-<pid>-<host tag>-<random>` (older versions: `.tmp-<pid>-<random>`).
            let mut parts = name.strip_prefix(TEMP_PREFIX).unwrap_or("").split('-');
            let pid = parts.next().and_then(|p| p.parse::<i32>().ok());
            let (second, third) = (parts.next(), parts.next());
            let this_host = third.is_some() && second == Some(host_tag());
            match pid {
                Some(pid) if pid > 0 && pid as u32 != std::process::id() => {
                    (this_host || age >= DEAD_WRITER_AGE) && !crate::sys::process::pid_alive(pid)
                }
                _ => false,
            }
        })
    }

    /// Removes temp files left by killed writers that are older than `age`.
    pub fn sweep_temp(&self, age: Duration) -> usize {
        self.sweep_where(|_, a| a >= age)
    }

    /// Removes the temp files for which `doomed(name, age)` holds.
    fn sweep_where(&self, doomed: impl Fn(&str, Duration) -> bool) -> usize {
        let mut removed = 0;
        let mut stack = vec![self.root.clone()];
        let now = SystemTime::now();
        while let Some(dir) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in rd.flatten() {
                let Ok(ft) = entry.file_type() else { continue };
                if ft.is_dir() {
                    stack.push(entry.path());
                } else if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                    let name = entry.file_name();
                    let old = entry
                        .metadata()
                        .and_then(|m| m.modified())
                        .map(|t| {
                            doomed(
                                &name.to_string_lossy(),
                                now.duration_since(t).unwrap_or_default(),
                            )
                        })
                        .unwrap_or(false);
                    if old && std::fs::remove_file(entry.path()).is_ok() {
                        removed += 1;
                    }
                }
            }
        }
        removed
    }
}

#[async_trait]
impl Store for LocalStore {
    fn describe(&self) -> String {
        format!("local:{}", self.root.display())
    }

    fn sweep_leftovers(&self) -> usize {
        self.sweep_dead_writers()
    }

    fn backend(&self) -> Backend {
        Backend::Local
    }

    async fn get(&self, key: &str) -> StoreResult<Bytes> {
        let path = self.path(key)?;
        let this = self.clone();
        let key = key.to_string();
        blocking(move || read_file(&path).map_err(|e| this.map_err("get", &key, e))).await
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> StoreResult<Bytes> {
        let path = self.path(key)?;
        let this = self.clone();
        let key = key.to_string();
        blocking(move || {
            let read = || -> std::io::Result<Bytes> {
                let mut f = std::fs::File::open(&path)?;
                f.seek(SeekFrom::Start(offset))?;
                let mut buf = READS.take(len as usize);
                (&mut f).take(len).read_to_end(&mut buf)?;
                if (buf.len() as u64) < len {
                    return Err(ErrorKind::UnexpectedEof.into());
                }
                Ok(READS.into_bytes(buf))
            };
            read().map_err(|e| match e.kind() {
                ErrorKind::UnexpectedEof => StoreError::Permanent {
                    store: this.describe(),
                    op: "get_range",
                    key: key.clone(),
                    detail: format!("range {offset}+{len} is past the end of the object"),
                },
                _ => this.map_err("get_range", &key, e),
            })
        })
        .await
    }

    async fn put(&self, key: &str, data: Bytes) -> StoreResult<()> {
        let this = self.clone();
        let key = key.to_string();
        blocking(move || this.put_sync(&key, &data)).await
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<ObjectInfo>> {
        let this = self.clone();
        let prefix = prefix.to_string();
        blocking(move || this.list_sync(&prefix)).await
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        let path = self.path(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.map_err("delete", key, e)),
        }
    }

    async fn head(&self, key: &str) -> StoreResult<Option<ObjectInfo>> {
        let path = self.path(key)?;
        match tokio::fs::metadata(&path).await {
            Ok(m) if m.is_file() => Ok(Some(ObjectInfo {
                key: key.into(),
                size: m.len(),
            })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.map_err("head", key, e)),
        }
    }

    /// A put, get and delete of a fresh `lifeboat-healthcheck/…` key. The report is named after
    /// the directory (`local:<path>`); bucket and region are empty.
    async fn probe(&self) -> HealthReport {
        let key = probe_key();
        let res = async {
            self.put(&key, Bytes::from_static(b"probe")).await?;
            self.get(&key).await?;
            self.delete(&key).await
        }
        .await;
        HealthReport {
            name: self.describe(),
            bucket: String::new(),
            region: String::new(),
            endpoint: None,
            problem: res.as_ref().err().map(|_| HealthProblem::ProbeFailed),
            detail: res
                .as_ref()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default(),
            hint: res.err().and_then(|e| e.hint()),
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> StoreResult<T> + Send + 'static,
) -> StoreResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .expect("store worker thread panicked")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn files_are_0600_and_directories_0700_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repo");
        let s = LocalStore::new(&root);
        s.put("keys/abc", Bytes::from_static(b"slot"))
            .await
            .unwrap();
        s.put("data/ab/big", Bytes::from(vec![7u8; 3 << 20]))
            .await
            .unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&root.join("keys")), 0o700);
        assert_eq!(mode(&root.join("data/ab")), 0o700);
        assert_eq!(mode(&root.join("keys/abc")), 0o600);
        assert_eq!(mode(&root.join("data/ab/big")), 0o600);
    }

    #[test]
    fn temp_files_of_dead_writers_are_swept_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data/ab");
        std::fs::create_dir_all(&data).unwrap();
        // A pid that is surely free: a child that has exited and been reaped.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let old =
            filetime::FileTime::from_system_time(SystemTime::now() - Duration::from_secs(600));
        let make = |name: &str, aged: bool| {
            let p = data.join(name);
            std::fs::write(&p, b"partial").unwrap();
            if aged {
                filetime::set_file_mtime(&p, old).unwrap();
            }
            p
        };
        let dead_old = make(&format!("{TEMP_PREFIX}{dead}-00aa"), true);
        let dead_new = make(&format!("{TEMP_PREFIX}{dead}-00bb"), false);
        let live_old = make(&format!("{TEMP_PREFIX}{}-00cc", std::process::id()), true);
        let dead_here = make(&format!("{TEMP_PREFIX}{dead}-{}-00dd", host_tag()), false);
        let live_here = make(
            &format!("{TEMP_PREFIX}{}-{}-00ee", std::process::id(), host_tag()),
            false,
        );
        let s = LocalStore::new(dir.path());
        assert_eq!(s.sweep_leftovers(), 2);
        assert!(!dead_old.exists());
        assert!(
            !dead_here.exists(),
            "a killed writer of this host is known dead at once"
        );
        assert!(live_here.exists());
        assert!(
            dead_new.exists(),
            "a fresh temp file may belong to a writer elsewhere"
        );
        assert!(
            live_old.exists(),
            "a live writer's temp file is never swept"
        );
    }

    #[tokio::test]
    async fn put_get_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::new(dir.path());
        s.put("data/ab/abc", Bytes::from_static(b"hello"))
            .await
            .unwrap();
        s.put("snapshots/x", Bytes::from_static(b"s"))
            .await
            .unwrap();
        assert_eq!(&s.get("data/ab/abc").await.unwrap()[..], b"hello");
        assert_eq!(&s.get_range("data/ab/abc", 1, 3).await.unwrap()[..], b"ell");
        assert!(s.get_range("data/ab/abc", 3, 3).await.is_err());
        let l = s.list("data/").await.unwrap();
        assert_eq!(
            l,
            vec![ObjectInfo {
                key: "data/ab/abc".into(),
                size: 5
            }]
        );
        assert_eq!(s.list("").await.unwrap().len(), 2);
        assert!(s.get("nope").await.unwrap_err().is_not_found());
        assert_eq!(s.head("snapshots/x").await.unwrap().unwrap().size, 1);
        s.delete("snapshots/x").await.unwrap();
        s.delete("snapshots/x").await.unwrap();
        assert!(s.head("snapshots/x").await.unwrap().is_none());
        assert!(s.put("../escape", Bytes::new()).await.is_err());
    }

    #[tokio::test]
    async fn probe_writes_reads_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::new(dir.path().join("repo"));
        let r = s.probe().await;
        assert!(r.ok(), "{r:?}");
        assert_eq!(r.name, s.describe());
        assert!(s.list("").await.unwrap().is_empty(), "the probe cleans up");
        // A root that is a file: nothing can be written there.
        std::fs::write(dir.path().join("file"), b"x").unwrap();
        let r = LocalStore::new(dir.path().join("file")).probe().await;
        assert_eq!(r.problem, Some(HealthProblem::ProbeFailed), "{r:?}");
        assert!(r.detail.contains("lifeboat-healthcheck/"), "{r:?}");
    }

    #[test]
    fn temp_files_are_invisible_and_swept() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        std::fs::write(dir.path().join("data/.tmp-1-x"), b"partial").unwrap();
        let s = LocalStore::new(dir.path());
        assert!(s.list_sync("data/").unwrap().is_empty());
        assert_eq!(s.sweep_temp(Duration::from_secs(3600)), 0);
        assert_eq!(s.sweep_temp(Duration::ZERO), 1);
    }

    #[tokio::test]
    async fn large_objects_of_any_length_round_trip_through_direct_writes() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::new(dir.path());
        // Around the direct-write threshold, the bounce buffer's size and the 4 KiB alignment.
        for (i, len) in [
            direct::MIN - 1,
            direct::MIN,
            direct::MIN + 1,
            2 * direct::MIN + 4095,
            3 * direct::MIN + 4097,
        ]
        .into_iter()
        .enumerate()
        {
            let data: Vec<u8> = (0..len).map(|j| (j * 31 + i) as u8).collect();
            let key = format!("data/{i:02}/obj");
            s.put(&key, Bytes::from(data.clone())).await.unwrap();
            assert_eq!(s.get(&key).await.unwrap(), data, "length {len}");
            assert_eq!(s.head(&key).await.unwrap().unwrap().size, len as u64);
        }
        // Nothing but the objects themselves: no temp file left behind.
        for e in std::fs::read_dir(dir.path().join("data/00")).unwrap() {
            assert_eq!(e.unwrap().file_name(), "obj");
        }
    }
}
