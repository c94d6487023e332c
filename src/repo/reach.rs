//! What the snapshots reach: every blob (tree and data) below a set of root trees. Prune
//! (what may go) and the Object Lock pass (what must stay locked) both ask it, through
//! [`reach_snapshots`] (every snapshot of the repository) or [`collect_used`] (given roots).

use std::collections::HashSet;

use futures::stream::{self, StreamExt, TryStreamExt};

use super::index::{Index, IndexFile};
use super::snapshot::Snapshot;
use super::tree::NodeKind;
use super::{ObjectKind, Repository};
use crate::ids::{BlobId, IndexId, SnapshotId};
use crate::sys::Cancel;
use crate::{Error, Result};

/// Trees (and snapshots) read at once.
const CONCURRENCY: usize = 16;

/// Loads snapshots by id; one deleted meanwhile (a concurrent `forget`) is skipped.
pub async fn load_snapshots(
    repo: &Repository,
    ids: Vec<SnapshotId>,
) -> Result<Vec<(SnapshotId, Snapshot)>> {
    let loaded: Vec<Option<(SnapshotId, Snapshot)>> = stream::iter(ids)
        .map(|id| async move {
            match repo.load_json::<Snapshot>(ObjectKind::Snapshot, &id).await {
                Ok(s) => Ok(Some((id, s))),
                Err(Error::Store(e)) if e.is_not_found() => Ok(None),
                Err(e) => Err(e),
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    Ok(loaded.into_iter().flatten().collect())
}

/// Every snapshot of a repository and what it reaches.
pub struct Reach {
    /// The snapshots walked.
    pub snapshots: Vec<SnapshotId>,
    /// The index files, read after the snapshots were listed: a snapshot is committed only
    /// after the index files it needs, so these cover every snapshot walked.
    pub files: Vec<(IndexId, IndexFile)>,
    /// Their union.
    pub index: Index,
    /// Every blob the snapshots reference, tree blobs included.
    pub used: HashSet<BlobId>,
}

/// Lists the snapshots and loads each one; one deleted meanwhile (a concurrent `forget`) is
/// skipped. The listing a walk starts from: [`reach_listed`] loads the index files after it.
pub async fn list_snapshots(repo: &Repository) -> Result<Vec<(SnapshotId, Snapshot)>> {
    let ids = repo.list_ids(ObjectKind::Snapshot).await?;
    load_snapshots(repo, ids).await
}

/// Lists the snapshots, then loads the index files (in this order, see [`Reach::files`]),
/// then walks every snapshot's trees. A snapshot deleted meanwhile is skipped; a tree no
/// index file lists is an error.
pub async fn reach_snapshots(repo: &Repository, cancel: &Cancel) -> Result<Reach> {
    let snaps = list_snapshots(repo).await?;
    reach(repo, snaps, cancel, false).await
}

/// Like [`reach_snapshots`], from snapshots the caller listed (and loaded) itself, with
/// [`list_snapshots`], before this call — the index files are loaded here, after the
/// listing, so they cover every snapshot in it. A tree that no index file lists is not
/// read but counted in [`Reach::used`], so `used` minus the index is every blob the
/// snapshots need that no index file holds, trees included (prune refuses on any).
pub async fn reach_listed(
    repo: &Repository,
    snaps: Vec<(SnapshotId, Snapshot)>,
    cancel: &Cancel,
) -> Result<Reach> {
    reach(repo, snaps, cancel, true).await
}

async fn reach(
    repo: &Repository,
    snaps: Vec<(SnapshotId, Snapshot)>,
    cancel: &Cancel,
    skip_unindexed: bool,
) -> Result<Reach> {
    let files = repo.load_index_files().await?;
    let mut index = Index::default();
    for (id, f) in &files {
        index.add_file(*id, f);
    }
    let mut used = HashSet::new();
    walk(
        repo,
        &index,
        snaps.iter().map(|(_, s)| s.tree),
        &mut used,
        &mut HashSet::new(),
        cancel,
        skip_unindexed,
    )
    .await?;
    Ok(Reach {
        snapshots: snaps.into_iter().map(|(id, _)| id).collect(),
        files,
        index,
        used,
    })
}

/// Adds every blob the trees below `roots` reference (tree blobs included) to `used`, reading
/// each tree once (`visited`), a level at a time with several reads in flight. Each tree is
/// taken apart as soon as it arrives and dropped: only the ids of the next level are held,
/// never a whole level of parsed trees (which was most of prune's peak memory).
pub async fn collect_used(
    repo: &Repository,
    index: &Index,
    roots: impl IntoIterator<Item = BlobId>,
    used: &mut HashSet<BlobId>,
    visited: &mut HashSet<BlobId>,
    cancel: &Cancel,
) -> Result<()> {
    walk(repo, index, roots, used, visited, cancel, false).await
}

/// [`collect_used`]; with `skip_unindexed`, a tree `index` does not list is added to `used`
/// but not read (instead of failing the walk).
async fn walk(
    repo: &Repository,
    index: &Index,
    roots: impl IntoIterator<Item = BlobId>,
    used: &mut HashSet<BlobId>,
    visited: &mut HashSet<BlobId>,
    cancel: &Cancel,
    skip_unindexed: bool,
) -> Result<()> {
    let mut level: Vec<BlobId> = roots.into_iter().filter(|t| visited.insert(*t)).collect();
    while !level.is_empty() {
        cancel.check()?;
        used.extend(level.iter().copied());
        if skip_unindexed {
            level.retain(|t| index.contains(t));
        }
        let mut trees = stream::iter(std::mem::take(&mut level))
            .map(|t| async move { repo.load_tree(index, &t).await })
            .buffer_unordered(CONCURRENCY);
        let mut next = Vec::new();
        while let Some(t) = trees.next().await {
            for n in t?.nodes {
                match n.kind {
                    NodeKind::Dir => {
                        if let Some(s) = n.subtree {
                            if visited.insert(s) {
                                next.push(s);
                            }
                        }
                    }
                    NodeKind::File => used.extend(n.content),
                    NodeKind::Symlink => {}
                }
            }
        }
        level = next;
    }
    Ok(())
}
