//! A store in a local directory. Writes are atomic and durable: temp file in the target
//! directory, `fsync`, rename, `fsync` of the directory (RELIABILITY invariant 3). Temp files
//! are named `.tmp-*` and ignored by `list`; ones older than a day are swept by `sweep_temp`.

use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;

use super::health::{probe_key, HealthProblem, HealthReport};
use super::pool::READS;
use super::{Backend, ObjectInfo, Store, StoreError, StoreResult};
use crate::direct;

const TEMP_PREFIX: &str = ".tmp-";

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
        std::fs::create_dir_all(dir).map_err(err)?;
        let tmp = dir.join(format!(
            "{TEMP_PREFIX}{}-{}",
            std::process::id(),
            hex::encode(rand::random::<[u8; 8]>())
        ));
        let result = (|| {
            // Pack-sized objects are written past the page cache (`crate::direct`): they are
            // fsynced before they count anyway, and a backup should not push the backed-up
            // service's working set out of the cache.
            let f = if data.len() >= direct::MIN {
                direct::write_new(&tmp, data)?
            } else {
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
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

    /// Removes temp files left by killed writers that are older than `age`.
    pub fn sweep_temp(&self, age: Duration) -> usize {
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
                    let old = entry
                        .metadata()
                        .and_then(|m| m.modified())
                        .map(|t| now.duration_since(t).unwrap_or_default() >= age)
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
