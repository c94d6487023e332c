//! Catch-up between regions (`lifeboat sync`): every region of a multi-region repository gets
//! every object any other region has. Objects are copied in commit order — config, keys,
//! packs, index, snapshots last — and each copy is verified before it is written: a pack's
//! hash must equal its name and the pack must decrypt; index files and snapshots must match
//! their names and decrypt. A region that could not get all its packs and index files gets no
//! snapshot, so a sync never creates a snapshot whose data is incomplete.

use std::collections::{BTreeMap, HashSet};

use bytes::Bytes;
use futures::stream::{self, StreamExt};
use serde::Serialize;

use super::index::IndexFile;
use super::snapshot::Snapshot;
use super::{pack, parse_pack_key, Config, ObjectKind, Repository};
use crate::ids::ObjectId;
use crate::store::DynStore;
use crate::sys::Cancel;
use crate::{Error, Result};

const COPY_CONCURRENCY: usize = 4;
/// Copied in this order; snapshots are the commit points, and set manifests (which name
/// snapshots) come after them, only to a region that took every snapshot.
const STAGES: [&str; 6] = ["config", "keys/", "data/", "index/", "snapshots/", "sets/"];

#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncRegionReport {
    pub region: String,
    pub objects_copied: u64,
    pub bytes_copied: u64,
    pub snapshots_copied: u64,
    /// True when the region now holds every object that any region holds.
    pub complete: bool,
    pub errors: Vec<String>,
}

/// Brings every region up to date with the union of all regions. Returns one report per
/// region, in the given order; failures are in the reports, not an `Err` (only cancellation
/// is).
pub async fn sync(
    repo: &Repository,
    regions: &[(String, DynStore)],
    cancel: &Cancel,
) -> Result<Vec<SyncRegionReport>> {
    let mut reports: Vec<SyncRegionReport> = regions
        .iter()
        .map(|(n, _)| SyncRegionReport {
            region: n.clone(),
            complete: true,
            ..Default::default()
        })
        .collect();
    let mut dead: HashSet<usize> = HashSet::new();
    let mut blocked: HashSet<usize> = HashSet::new();
    for stage in STAGES {
        cancel.check()?;
        // Who has what.
        let mut holders: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        let mut have: Vec<HashSet<String>> = vec![HashSet::new(); regions.len()];
        for (i, (name, store)) in regions.iter().enumerate() {
            if dead.contains(&i) {
                continue;
            }
            let listed = if stage == "config" {
                store
                    .head("config")
                    .await
                    .map(|h| h.into_iter().collect::<Vec<_>>())
            } else {
                store.list(stage).await
            };
            match listed {
                Ok(l) => {
                    for info in l {
                        holders.entry(info.key.clone()).or_default().push(i);
                        have[i].insert(info.key);
                    }
                }
                Err(e) => {
                    reports[i]
                        .errors
                        .push(format!("region {name}: cannot list {stage}: {e}"));
                    reports[i].complete = false;
                    dead.insert(i);
                }
            }
        }
        let mut jobs = Vec::new();
        for (key, from) in &holders {
            for i in 0..regions.len() {
                if dead.contains(&i) || have[i].contains(key) {
                    continue;
                }
                if stage == "snapshots/" && blocked.contains(&i) {
                    reports[i].complete = false;
                    continue;
                }
                // A set manifest names member snapshots: a region that missed any snapshot
                // could be missing a member.
                if stage == "sets/" && (blocked.contains(&i) || !reports[i].complete) {
                    reports[i].complete = false;
                    continue;
                }
                jobs.push((i, key.clone(), from.clone()));
            }
        }
        let results: Vec<(usize, String, Result<u64>)> = stream::iter(jobs)
            .map(|(i, key, from)| async move {
                let res = copy_one(repo, regions, &key, &from, i, cancel).await;
                (i, key, res)
            })
            .buffer_unordered(COPY_CONCURRENCY)
            .collect()
            .await;
        for (i, key, res) in results {
            match res {
                Ok(n) => {
                    let r = &mut reports[i];
                    r.objects_copied += 1;
                    r.bytes_copied += n;
                    if stage == "snapshots/" {
                        r.snapshots_copied += 1;
                    }
                    tracing::info!(region = %regions[i].0, key, bytes = n, "copied");
                }
                Err(e @ Error::Interrupted) => return Err(e),
                Err(e) => {
                    reports[i].errors.push(format!("{key}: {e}"));
                    reports[i].complete = false;
                    if stage != "snapshots/" {
                        blocked.insert(i);
                    }
                }
            }
        }
    }
    Ok(reports)
}

/// Copies `key` into region `to` from the first region in `from` whose copy verifies.
async fn copy_one(
    repo: &Repository,
    regions: &[(String, DynStore)],
    key: &str,
    from: &[usize],
    to: usize,
    cancel: &Cancel,
) -> Result<u64> {
    let mut problems = Vec::new();
    for &src in from {
        cancel.check()?;
        let (src_name, src_store) = &regions[src];
        let bytes = match src_store.get(key).await {
            Ok(b) => b,
            Err(e) => {
                problems.push(format!("reading it from region {src_name}: {e}"));
                continue;
            }
        };
        if let Err(e) = verify_object(repo, key, bytes.clone()).await {
            problems.push(format!(
                "the copy in region {src_name} does not verify: {e}"
            ));
            continue;
        }
        let n = bytes.len() as u64;
        regions[to].1.put(key, bytes).await?;
        return Ok(n);
    }
    Err(Error::Other(format!(
        "no region has a good copy ({}); run `lifeboat verify --read-data --region R` on each region",
        problems.join("; ")
    )))
}

/// Checks an object before it is copied: name = hash, and it decrypts with this repository's keys.
pub async fn verify_object(repo: &Repository, key: &str, bytes: Bytes) -> Result<()> {
    let id_in = |prefix: &str| -> Result<ObjectId> {
        key.strip_prefix(prefix)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Error::integrity(key, "not a repository object name"))
    };
    if key == "config" {
        let c: Config = serde_json::from_slice(&bytes)
            .map_err(|e| Error::integrity(key, format!("not a valid config: {e}")))?;
        if c.id != *repo.id() {
            return Err(Error::integrity(
                key,
                format!("belongs to repository {}, not {}", c.id, repo.id()),
            ));
        }
    } else if key.starts_with("keys/") {
        let id = id_in("keys/")?;
        if ObjectId::of(&bytes) != id {
            return Err(Error::integrity(
                key,
                "content hash does not match its name",
            ));
        }
    } else if key.starts_with("data/") {
        let id = parse_pack_key(key).ok_or_else(|| Error::integrity(key, "not a pack name"))?;
        let repo = repo.clone();
        tokio::task::spawn_blocking(move || {
            pack::verify_pack(&repo.keys, repo.id(), &id, &bytes).map(|_| ())
        })
        .await
        .map_err(|e| Error::Other(format!("verify worker failed: {e}")))??;
    } else if key.starts_with("index/") {
        repo.open_json::<IndexFile>(ObjectKind::Index, &id_in("index/")?, &bytes)?;
    } else if key.starts_with("snapshots/") {
        repo.open_json::<Snapshot>(ObjectKind::Snapshot, &id_in("snapshots/")?, &bytes)?;
    } else if key.starts_with("sets/") {
        repo.open_json::<super::set::SetManifest>(ObjectKind::Set, &id_in("sets/")?, &bytes)?;
    } else {
        return Err(Error::integrity(key, "not an object that sync copies"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::ids::BlobId;
    use crate::repo::keys::KdfParams;
    use crate::repo::snapshot::Summary;
    use crate::repo::InitOptions;
    use crate::store::LocalStore;

    fn snapshot() -> Snapshot {
        let now = chrono::Utc::now();
        Snapshot {
            time: now,
            consistency_time: now,
            host: "h".into(),
            username: "u".into(),
            tags: vec![],
            paths: vec!["/x".into()],
            tree: BlobId([7; 32]),
            parent: None,
            source: crate::repo::snapshot::SourceMeta::Dir,
            plan: None,
            job: None,
            summary: Summary::default(),
            program_version: "test".into(),
            set: None,
        }
    }

    async fn setup(n: usize) -> (tempfile::TempDir, Repository, Vec<(String, DynStore)>) {
        let dir = tempfile::tempdir().unwrap();
        let regions: Vec<(String, DynStore)> = (0..n)
            .map(|i| {
                let name = format!("r{i}");
                let s: DynStore = Arc::new(LocalStore::new(dir.path().join(&name)));
                (name, s)
            })
            .collect();
        let opts = InitOptions {
            kdf: KdfParams {
                memory_kib: 8192,
                iterations: 1,
                parallelism: 1,
            },
            ..Default::default()
        };
        let repo = Repository::init(regions[0].1.clone(), b"pw", opts)
            .await
            .unwrap();
        (dir, repo, regions)
    }

    #[tokio::test]
    async fn a_new_region_gets_everything_and_a_second_sync_copies_nothing() {
        let (_d, repo, regions) = setup(2).await;
        repo.save_index(vec![]).await.unwrap();
        repo.save_json(ObjectKind::Snapshot, &snapshot())
            .await
            .unwrap();
        let r = sync(&repo, &regions, &Cancel::new()).await.unwrap();
        assert!(r.iter().all(|x| x.complete && x.errors.is_empty()), "{r:?}");
        // config, one key, one index, one snapshot
        assert_eq!((r[1].objects_copied, r[1].snapshots_copied), (4, 1));
        assert_eq!(r[0].objects_copied, 0);
        let again = sync(&repo, &regions, &Cancel::new()).await.unwrap();
        assert!(again.iter().all(|x| x.objects_copied == 0 && x.complete));
        // The copy opens with the same password.
        let other = Repository::open(regions[1].1.clone(), b"pw").await.unwrap();
        assert_eq!(other.list_snapshots().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn damaged_objects_are_not_copied_and_block_the_snapshot() {
        let (_d, repo, regions) = setup(2).await;
        let idx = repo.save_index(vec![]).await.unwrap();
        repo.save_json(ObjectKind::Snapshot, &snapshot())
            .await
            .unwrap();
        // Flip a byte of the only index file: its hash no longer matches its name.
        let key = ObjectKind::Index.key(&idx);
        let mut raw = regions[0].1.get(&key).await.unwrap().to_vec();
        raw[10] ^= 1;
        regions[0].1.put(&key, Bytes::from(raw)).await.unwrap();
        let r = sync(&repo, &regions, &Cancel::new()).await.unwrap();
        assert!(!r[1].complete);
        assert_eq!(
            r[1].snapshots_copied, 0,
            "no snapshot without its index: {r:?}"
        );
        assert!(
            r[1].errors
                .iter()
                .any(|e| e.contains(&key) && e.contains("does not verify")),
            "{r:?}"
        );
        assert!(regions[1].1.head(&key).await.unwrap().is_none());
        assert!(regions[1].1.list("snapshots/").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_good_copy_is_taken_from_whichever_region_has_one() {
        let (_d, repo, regions) = setup(3).await;
        let (id, sealed) = repo.seal_json(ObjectKind::Index, &IndexFile::default());
        let key = ObjectKind::Index.key(&id);
        let mut bad = sealed.clone();
        bad[20] ^= 0x40;
        // r0 holds a damaged copy, r1 a good one, r2 none.
        regions[0].1.put(&key, Bytes::from(bad)).await.unwrap();
        regions[1]
            .1
            .put(&key, Bytes::from(sealed.clone()))
            .await
            .unwrap();
        let r = sync(&repo, &regions, &Cancel::new()).await.unwrap();
        assert_eq!(&regions[2].1.get(&key).await.unwrap()[..], &sealed[..]);
        assert!(r[2].errors.is_empty(), "{r:?}");
        // Not a repository object: refused.
        let e = verify_object(&repo, "reports/x", Bytes::new())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("not an object that sync copies"));
    }
}
