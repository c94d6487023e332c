//! Several destinations ("regions") behind one [`Store`]: the backup reads its source once and
//! every write fans out to all live regions concurrently.
//!
//! - A region whose write (or listing) fails after its own retries is marked *failed* and
//!   skipped from then on; the others go on. Writes succeed while at least `min_regions`
//!   regions are alive; below that they fail with an error naming every failed region.
//! - Before the commit point (the snapshot) the backup calls [`MultiStore::prepare_commit`]
//!   with the objects the snapshot depends on; a live region missing any of them (a region that
//!   lagged behind in an earlier run) is marked *lagging* and gets no snapshot, so no region
//!   ever holds a snapshot without all its packs and index.
//! - Reads go to the first live region that has the object (regions in configured order).
//! - [`Store::probe`] probes every region and reports the first one with a problem.
//! - [`Destinations`] is the small destinations file (`[[destinations]] type = "s3" | "local"`)
//!   that the CLI reads until plans carry the same list.
//!
//! This module knows key prefixes only as opaque strings handed to it; it knows nothing about
//! packs, encryption or snapshots. Catch-up copying lives in `repo::sync` (run by
//! `lifeboat sync`, and before every multi-region backup).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::join_all;
use serde::{Deserialize, Serialize};

use super::retry::{RetryCounts, RetryStats, RetryStore};
use super::s3::{S3Config, S3Store};
use super::{
    Backend, DynStore, HealthReport, LocalStore, ObjectInfo, Store, StoreError, StoreResult,
};

/// One destination as the CLI and the plan build it: a name, the (decorated) store, and the
/// retry counters of its decorator.
#[derive(Debug, Clone)]
pub struct Destination {
    pub name: String,
    pub store: DynStore,
    pub retry: Option<Arc<RetryStats>>,
}

impl Destination {
    /// Builds a destination from its config: S3 stores are wrapped in the retry decorator.
    /// The region name a destination goes by (`name`, else the S3 label or `local:<path>`).
    pub fn name_of(cfg: &DestinationConfig) -> String {
        match cfg {
            DestinationConfig::S3(c) => c.label().to_string(),
            DestinationConfig::Local(l) => l
                .name
                .clone()
                .unwrap_or_else(|| format!("local:{}", l.path.display())),
        }
    }

    pub fn from_config(cfg: &DestinationConfig) -> Result<Destination, String> {
        match cfg {
            DestinationConfig::S3(c) => {
                let retry_cfg = c.retry_config();
                let s3 = Arc::new(S3Store::new((**c).clone())?);
                let retry = RetryStore::new(s3, retry_cfg);
                let stats = retry.stats();
                Ok(Destination {
                    name: Self::name_of(cfg),
                    store: Arc::new(retry),
                    retry: Some(stats),
                })
            }
            DestinationConfig::Local(l) => {
                if l.path.as_os_str().is_empty() {
                    return Err("local destination has an empty path".into());
                }
                Ok(Destination {
                    name: Self::name_of(cfg),
                    store: Arc::new(LocalStore::new(&l.path)),
                    retry: None,
                })
            }
        }
    }
}

/// A `[[destinations]]` entry: `type = "s3"` (keys of [`S3Config`]) or `type = "local"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DestinationConfig {
    S3(Box<S3Config>),
    Local(LocalConfig),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalConfig {
    #[serde(default)]
    pub name: Option<String>,
    pub path: PathBuf,
}

/// The destinations file (TOML):
/// ```toml
/// min_regions = 1            # how many destinations must commit (default 1)
/// [[destinations]]
/// type = "s3"
/// name = "eu"
/// bucket = "backups"
/// region = "eu-west-1"
/// [[destinations]]
/// type = "local"
/// name = "nas"
/// path = "/srv/backup"
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Destinations {
    #[serde(default)]
    pub min_regions: Option<usize>,
    pub destinations: Vec<DestinationConfig>,
}

impl Destinations {
    pub fn parse(text: &str, file: &str) -> Result<Destinations, String> {
        // The error's message and line only: toml's full Display quotes the offending line,
        // which could hold a secret someone pasted into the file.
        let d: Destinations = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
            match line {
                Some(l) => format!("destinations file {file}, line {l}: {}", e.message().trim()),
                None => format!("destinations file {file}: {}", e.message().trim()),
            }
        })?;
        if d.destinations.is_empty() {
            return Err(format!(
                "destinations file {file}: no [[destinations]] entries"
            ));
        }
        Ok(d)
    }
}

/// Where a region stands after a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RegionStatus {
    /// Every write went through (and, for a backup, the snapshot was committed).
    Complete,
    /// A write or listing failed after retries; nothing more was written there.
    Failed,
    /// Reachable, but missing objects from earlier runs: no snapshot written (`lifeboat sync`).
    Lagging,
}

/// The per-region line of a run's output and `--json` summary.
#[derive(Debug, Clone, Serialize)]
pub struct RegionResult {
    pub region: String,
    pub location: String,
    pub status: RegionStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    pub objects_written: u64,
    pub bytes_written: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<RetryCounts>,
}

#[derive(Debug, Default)]
struct RegionState {
    failed: Option<(String, Option<String>)>,
    lagging: Option<String>,
    objects: u64,
    bytes: u64,
}

#[derive(Debug)]
struct Region {
    dest: Destination,
    state: Mutex<RegionState>,
}

impl Region {
    fn live(&self) -> bool {
        let s = self.state.lock().expect("region state");
        s.failed.is_none() && s.lagging.is_none()
    }
}

/// The fan-out store. See the module documentation.
#[derive(Debug)]
pub struct MultiStore {
    regions: Vec<Region>,
    min_regions: usize,
}

impl MultiStore {
    pub fn new(dests: Vec<Destination>, min_regions: usize) -> Result<MultiStore, String> {
        if dests.is_empty() {
            return Err("no destinations".into());
        }
        if min_regions == 0 || min_regions > dests.len() {
            return Err(format!(
                "min_regions = {min_regions} but there are {} destinations: it must be between 1 and {}",
                dests.len(),
                dests.len()
            ));
        }
        let mut names: Vec<&str> = dests.iter().map(|d| d.name.as_str()).collect();
        names.sort();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!(
                "two destinations are named {:?}: give each a distinct name",
                w[0]
            ));
        }
        Ok(MultiStore {
            regions: dests
                .into_iter()
                .map(|dest| Region {
                    dest,
                    state: Mutex::default(),
                })
                .collect(),
            min_regions,
        })
    }

    pub fn min_regions(&self) -> usize {
        self.min_regions
    }

    pub fn destinations(&self) -> Vec<Destination> {
        self.regions.iter().map(|r| r.dest.clone()).collect()
    }

    /// The regions still in use, as (name, store) pairs.
    pub fn live_regions(&self) -> Vec<(String, DynStore)> {
        self.live()
            .into_iter()
            .map(|r| (r.dest.name.clone(), r.dest.store.clone()))
            .collect()
    }

    fn live(&self) -> Vec<&Region> {
        self.regions.iter().filter(|r| r.live()).collect()
    }

    fn mark_failed(&self, r: &Region, err: &StoreError) {
        let mut s = r.state.lock().expect("region state");
        if s.failed.is_none() {
            tracing::warn!(region = %r.dest.name, error = %err, "region failed; continuing with the others");
            s.failed = Some((err.to_string(), err.hint()));
        }
    }

    fn enough_alive(&self, op: &'static str, key: &str) -> StoreResult<()> {
        let alive = self.live().len();
        if alive >= self.min_regions {
            return Ok(());
        }
        let failures: Vec<String> = self
            .regions
            .iter()
            .filter_map(|r| {
                let s = r.state.lock().expect("region state");
                s.failed
                    .as_ref()
                    .map(|(e, _)| format!("region {}: {e}", r.dest.name))
                    .or_else(|| {
                        s.lagging
                            .as_ref()
                            .map(|l| format!("region {}: {l}", r.dest.name))
                    })
            })
            .collect();
        Err(StoreError::Permanent {
            store: self.describe(),
            op,
            key: key.to_string(),
            detail: format!(
                "only {alive} of {} regions are usable, min_regions is {} ({}); fix the failed regions, then re-run (and `lifeboat sync`)",
                self.regions.len(),
                self.min_regions,
                failures.join("; ")
            ),
        })
    }

    /// Checks that every live region holds every `(key, size)` in `required` (size `None`:
    /// presence only), listing each region once per prefix in `prefixes`. A region missing
    /// anything is marked lagging; one whose listing fails is marked failed. Errors when fewer
    /// than `min_regions` remain.
    pub async fn prepare_commit(
        &self,
        prefixes: &[&str],
        required: &[(String, Option<u64>)],
    ) -> StoreResult<()> {
        let checks = self.live().into_iter().map(|r| async move {
            let mut have = std::collections::HashMap::new();
            for p in prefixes {
                match r.dest.store.list(p).await {
                    Ok(l) => have.extend(l.into_iter().map(|i| (i.key, i.size))),
                    Err(e) => return (r, Err(e)),
                }
            }
            let missing: Vec<String> = required
                .iter()
                .filter(|(k, size)| match (have.get(k), size) {
                    (None, _) => true,
                    (Some(h), Some(s)) => h != s,
                    _ => false,
                })
                .map(|(k, s)| match (have.get(k), s) {
                    (Some(h), Some(s)) => format!("{k} ({h} bytes, expected {s})"),
                    _ => k.clone(),
                })
                .collect();
            (r, Ok(missing))
        });
        for (r, res) in join_all(checks).await {
            match res {
                Err(e) => self.mark_failed(r, &e),
                Ok(missing) if !missing.is_empty() => {
                    let msg = format!(
                        "missing or damaged {} objects the snapshot needs (e.g. {}); no snapshot written there: run `lifeboat sync`",
                        missing.len(),
                        missing[0]
                    );
                    tracing::warn!(region = %r.dest.name, missing = missing.len(), "region lags behind; not committing there");
                    r.state.lock().expect("region state").lagging = Some(msg);
                }
                Ok(_) => {}
            }
        }
        self.enough_alive("commit", "snapshot")
    }

    /// The per-region outcome so far.
    pub fn results(&self) -> Vec<RegionResult> {
        self.regions
            .iter()
            .map(|r| {
                let s = r.state.lock().expect("region state");
                let (status, error, hint) = match (&s.failed, &s.lagging) {
                    (Some((e, h)), _) => (RegionStatus::Failed, Some(e.clone()), h.clone()),
                    (None, Some(l)) => (
                        RegionStatus::Lagging,
                        Some(l.clone()),
                        Some(
                            "run `lifeboat sync` to copy what it lacks from a complete region"
                                .into(),
                        ),
                    ),
                    (None, None) => (RegionStatus::Complete, None, None),
                };
                RegionResult {
                    region: r.dest.name.clone(),
                    location: r.dest.store.describe(),
                    status,
                    error,
                    hint,
                    objects_written: s.objects,
                    bytes_written: s.bytes,
                    retries: r.dest.retry.as_ref().map(|x| x.counts()),
                }
            })
            .collect()
    }

    /// Probes every configured region at once, failed and lagging ones too (a probe is a
    /// diagnosis, not part of this run); one report per region in configured order, named after
    /// the region.
    pub async fn probe_regions(&self) -> Vec<HealthReport> {
        join_all(self.regions.iter().map(|r| async move {
            HealthReport {
                name: r.dest.name.clone(),
                ..r.dest.store.probe().await
            }
        }))
        .await
    }

    /// Reads from live regions in order until one answers; `NotFound` only if none has it.
    async fn read_first<T, F, Fut>(&self, op: &'static str, key: &str, f: F) -> StoreResult<T>
    where
        F: Fn(DynStore) -> Fut,
        Fut: std::future::Future<Output = StoreResult<T>>,
    {
        let mut first_err: Option<StoreError> = None;
        for r in self.live() {
            match f(r.dest.store.clone()).await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    if !e.is_not_found() {
                        tracing::warn!(region = %r.dest.name, op, key, error = %e, "read failed; trying the next region");
                    }
                    // Prefer reporting a real failure over "not found".
                    if first_err
                        .as_ref()
                        .is_none_or(|f| f.is_not_found() && !e.is_not_found())
                    {
                        first_err = Some(e);
                    }
                }
            }
        }
        Err(first_err.unwrap_or_else(|| StoreError::Unreachable {
            store: self.describe(),
            backend: Backend::Multi,
            detail: format!("{op} {key}: no region is usable"),
        }))
    }
}

#[async_trait]
impl Store for MultiStore {
    fn describe(&self) -> String {
        let names: Vec<&str> = self.regions.iter().map(|r| r.dest.name.as_str()).collect();
        format!("regions[{}]", names.join(","))
    }

    fn backend(&self) -> Backend {
        Backend::Multi
    }

    /// The first live region's time of the write: locks of a multi-region repository are
    /// judged in that region's time.
    async fn modified(&self, key: &str) -> StoreResult<Option<chrono::DateTime<chrono::Utc>>> {
        for r in self.live() {
            if let Ok(Some(t)) = r.dest.store.modified(key).await {
                return Ok(Some(t));
            }
        }
        Ok(None)
    }

    fn sweep_leftovers(&self) -> usize {
        self.regions
            .iter()
            .map(|r| r.dest.store.sweep_leftovers())
            .sum()
    }

    /// Every region's bucket must enforce the Object Lock its destination asks for.
    async fn check_lock_support(&self) -> StoreResult<()> {
        for r in &self.regions {
            r.dest.store.check_lock_support().await?;
        }
        Ok(())
    }

    async fn get(&self, key: &str) -> StoreResult<Bytes> {
        self.read_first("get", key, |s| async move { s.get(key).await })
            .await
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> StoreResult<Bytes> {
        self.read_first("get_range", key, |s| async move {
            s.get_range(key, offset, len).await
        })
        .await
    }

    async fn put(&self, key: &str, data: Bytes) -> StoreResult<()> {
        let live = self.live();
        if live.is_empty() {
            return self.enough_alive("put", key);
        }
        let results = join_all(live.iter().map(|r| {
            let data = data.clone();
            async move { r.dest.store.put(key, data).await }
        }))
        .await;
        for (r, res) in live.iter().zip(results) {
            match res {
                Ok(()) => {
                    let mut s = r.state.lock().expect("region state");
                    s.objects += 1;
                    s.bytes += data.len() as u64;
                }
                Err(e) => self.mark_failed(r, &e),
            }
        }
        self.enough_alive("put", key)
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<ObjectInfo>> {
        let live = self.live();
        let results = join_all(live.iter().map(|r| r.dest.store.list(prefix))).await;
        let mut all: std::collections::BTreeMap<String, u64> = Default::default();
        for (r, res) in live.iter().zip(results) {
            match res {
                Ok(l) => {
                    for i in l {
                        all.entry(i.key).or_insert(i.size);
                    }
                }
                Err(e) => self.mark_failed(r, &e),
            }
        }
        self.enough_alive("list", prefix)?;
        Ok(all
            .into_iter()
            .map(|(key, size)| ObjectInfo { key, size })
            .collect())
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        // Deletes (lock releases) never mark a region failed: a stale lock expires by itself.
        let live = self.live();
        let results = join_all(live.iter().map(|r| r.dest.store.delete(key))).await;
        let mut first = None;
        for (r, res) in live.iter().zip(results) {
            if let Err(e) = res {
                tracing::warn!(region = %r.dest.name, key, error = %e, "delete failed");
                first.get_or_insert(e);
            }
        }
        match first {
            Some(e) if live.len() == 1 => Err(e),
            _ => Ok(()),
        }
    }

    async fn head(&self, key: &str) -> StoreResult<Option<ObjectInfo>> {
        let mut first_err = None;
        for r in self.live() {
            match r.dest.store.head(key).await {
                Ok(Some(i)) => return Ok(Some(i)),
                Ok(None) => {}
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) if self.live().len() <= 1 => Err(e),
            _ => Ok(None),
        }
    }

    /// Every region is probed ([`MultiStore::probe_regions`]); the report is the first region's
    /// (in configured order) that found a problem, named after that region. When all work, an
    /// ok report named after the fan-out (`regions[a,b]`), with no bucket or region.
    async fn probe(&self) -> HealthReport {
        let reports = self.probe_regions().await;
        reports
            .into_iter()
            .find(|r| !r.ok())
            .unwrap_or_else(|| HealthReport {
                name: self.describe(),
                bucket: String::new(),
                region: String::new(),
                endpoint: None,
                problem: None,
                detail: String::new(),
                hint: None,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(dir: &std::path::Path, name: &str) -> Destination {
        Destination {
            name: name.into(),
            store: Arc::new(LocalStore::new(dir.join(name))),
            retry: None,
        }
    }

    #[tokio::test]
    async fn writes_fan_out_and_a_failed_region_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let a = local(dir.path(), "a");
        // Region b's root is a file: every write there fails.
        std::fs::write(dir.path().join("b"), b"not a directory").unwrap();
        let b = local(dir.path(), "b");
        let m = MultiStore::new(vec![a, b], 1).unwrap();
        m.put("data/x", Bytes::from_static(b"hello")).await.unwrap();
        m.put("data/y", Bytes::from_static(b"world")).await.unwrap();
        assert_eq!(&m.get("data/x").await.unwrap()[..], b"hello");
        let res = m.results();
        assert_eq!(res[0].status, RegionStatus::Complete);
        assert_eq!(res[0].objects_written, 2);
        assert_eq!(res[1].status, RegionStatus::Failed);
        assert!(res[1].error.as_deref().unwrap().contains("data/x"));
        assert_eq!(res[1].objects_written, 0);
    }

    #[tokio::test]
    async fn probe_names_the_first_region_with_a_problem() {
        let dir = tempfile::tempdir().unwrap();
        let m = MultiStore::new(vec![local(dir.path(), "a"), local(dir.path(), "b")], 1).unwrap();
        let r = m.probe().await;
        assert!(r.ok(), "{r:?}");
        assert_eq!(r.name, "regions[a,b]");
        // Region c's root is a file: its probe fails, also after c was marked failed.
        std::fs::write(dir.path().join("c"), b"not a directory").unwrap();
        let m = MultiStore::new(vec![local(dir.path(), "a"), local(dir.path(), "c")], 1).unwrap();
        m.put("k", Bytes::from_static(b"v")).await.unwrap();
        assert_eq!(m.results()[1].status, RegionStatus::Failed);
        let r = m.probe().await;
        assert_eq!(
            (r.name.as_str(), r.problem),
            ("c", Some(crate::store::HealthProblem::ProbeFailed)),
            "{r:?}"
        );
        let names: Vec<String> = m
            .probe_regions()
            .await
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(names, ["a", "c"]);
    }

    #[tokio::test]
    async fn too_few_regions_is_an_error_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b"), b"x").unwrap();
        let m = MultiStore::new(vec![local(dir.path(), "a"), local(dir.path(), "b")], 2).unwrap();
        let e = m
            .put("k", Bytes::from_static(b"v"))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("only 1 of 2 regions") && e.contains("region b"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn lagging_region_is_excluded_from_the_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (local(dir.path(), "a"), local(dir.path(), "b"));
        a.store
            .put("data/old", Bytes::from_static(b"12345"))
            .await
            .unwrap();
        let m = MultiStore::new(vec![a.clone(), b.clone()], 1).unwrap();
        m.put("data/new", Bytes::from_static(b"abc")).await.unwrap();
        let req = vec![
            ("data/old".to_string(), Some(5)),
            ("data/new".to_string(), Some(3)),
        ];
        m.prepare_commit(&["data/"], &req).await.unwrap();
        m.put("snapshots/s", Bytes::from_static(b"s"))
            .await
            .unwrap();
        assert!(a.store.head("snapshots/s").await.unwrap().is_some());
        assert!(b.store.head("snapshots/s").await.unwrap().is_none());
        let res = m.results();
        assert_eq!(res[1].status, RegionStatus::Lagging);
        assert!(res[1].error.as_deref().unwrap().contains("data/old"));
        // A region with a wrong-sized object is lagging too.
        let m = MultiStore::new(vec![a.clone(), b.clone()], 2).unwrap();
        b.store
            .put("data/old", Bytes::from_static(b"123"))
            .await
            .unwrap();
        assert!(m.prepare_commit(&["data/"], &req).await.is_err());
    }

    #[test]
    fn destinations_file_parses_and_rejects_unknown_keys() {
        let d = Destinations::parse(
            "min_regions = 2\n[[destinations]]\ntype = \"s3\"\nname = \"eu\"\nbucket = \"b\"\nregion = \"r\"\n[[destinations]]\ntype = \"local\"\npath = \"/srv\"\n",
            "d.toml",
        )
        .unwrap();
        assert_eq!(d.min_regions, Some(2));
        assert!(matches!(&d.destinations[0], DestinationConfig::S3(c) if c.label() == "eu"));
        let e = Destinations::parse(
            "[[destinations]]\ntype = \"s3\"\nbucket = \"b\"\nregion = \"r\"\nsecret = \"x\"\n",
            "d.toml",
        )
        .unwrap_err();
        assert!(
            e.contains("secret") && e.contains("d.toml") && e.contains("line "),
            "{e}"
        );
        assert!(!e.contains("\"x\""), "the value must not be echoed: {e}");
        assert!(MultiStore::new(vec![], 1).is_err());
    }
}
