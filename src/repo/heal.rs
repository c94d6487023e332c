//! Healing what was lost (RELIABILITY T13, INV-4/5): a pack deleted behind the repository's
//! back (a disk error, a sync bug, a person) must not stay invisible to dedup.
//!
//! - [`Repository::load_index_reconciled`] (every backup): the index files are compared with
//!   the packs the store lists. Packs no index lists are adopted (a killed run left them);
//!   packs an index lists but the store does not are *lost*: each index file naming one is
//!   rewritten without it (new file first, then the old one is deleted), so dedup no longer
//!   trusts them and the backup re-uploads every blob the source still has.
//! - [`Repository::check_packs_present`] (every backup, just before the commit point): the
//!   packs holding the blobs the new snapshot reuses, and those the run stored, are checked
//!   again (one listing of `data/`, or a HEAD each when that is cheaper; a HEAD decides for
//!   every pack a listing does not show); if one vanished or changed size while the backup
//!   ran, nothing is committed.
//! - [`Repository::rebuild_index`] and [`Repository::lost_data`] (`lifeboat repair`): the
//!   index rebuilt from the pack headers, and every snapshot walked for the blobs it needs
//!   that no pack holds; [`Repository::trees_without_lost`] and [`Repository::replace_snapshot`] write a snapshot again without
//!   the files and directories that cannot be restored.

use std::collections::{BTreeMap, HashMap, HashSet};

use futures::stream::{self, StreamExt};

use super::index::{Index, IndexFile, IndexPack};
use super::snapshot::Snapshot;
use super::tree::{Node, NodeKind, Tree};
use super::{pack_key, parse_pack_key, ObjectKind, Repository};
use crate::ids::{BlobId, IndexId, PackId, SnapshotId};
use crate::{Error, Result};

/// Packs per index file written by [`Repository::rebuild_index`].
const PACKS_PER_INDEX_FILE: usize = 2000;
/// Pack headers read at once while rebuilding the index.
const HEADER_CONCURRENCY: usize = 8;
/// Packs HEAD-checked at once before a commit.
const HEAD_CONCURRENCY: usize = 8;
/// Keys one LIST request answers (S3's largest page), for choosing between one listing of
/// `data/` and a HEAD per pack in the commit check.
pub const LIST_PAGE: usize = 1000;

/// Whether the commit check lists `data/` rather than HEAD each of `needed` packs: when the
/// listing takes fewer requests (one per [`LIST_PAGE`] of the `packs_in_store`).
pub fn check_by_listing(needed: usize, packs_in_store: usize) -> bool {
    needed > packs_in_store / LIST_PAGE + 1
}

/// What comparing the index with the stored packs found and did.
#[derive(Debug, Clone, Default)]
pub struct PackReconcile {
    /// Packs no index listed, now indexed (left by an interrupted run).
    pub adopted: usize,
    /// Packs an index listed that the store no longer has; dropped from the index, so their
    /// blobs are uploaded again by whoever still has them.
    pub lost: Vec<PackId>,
    /// Index files rewritten without the lost packs (old id, new id if anything remained).
    pub rewritten: Vec<(IndexId, Option<IndexId>)>,
}

/// The result of [`Repository::rebuild_index`].
#[derive(Debug, Clone, Default)]
pub struct IndexRebuild {
    /// Packs read and indexed.
    pub packs: usize,
    /// Blobs indexed.
    pub blobs: usize,
    /// Index files written.
    pub written: Vec<IndexId>,
    /// Old index files removed.
    pub removed: usize,
    /// Packs whose header could not be read (damaged or truncated), with why; not indexed.
    pub unreadable: Vec<(PackId, String)>,
    /// Packs the old index listed that the store does not hold.
    pub lost: Vec<PackId>,
}

/// A pack whose bytes no longer match its name, and what `repair --read-data` did about it
/// (T11).
#[derive(Debug, Clone)]
pub struct PackSalvage {
    pub pack: PackId,
    /// The pack holding the blobs that still verified (none when no blob did).
    pub salvaged_into: Option<PackId>,
    /// Blobs that still verified and were stored again.
    pub kept: usize,
    /// Blobs that failed their check, with why: now lost unless another pack holds them.
    pub lost: Vec<(BlobId, String)>,
    /// Why the damaged pack was left in place (its header is unreadable), if it was.
    pub left_because: Option<String>,
}

/// What one snapshot needs that no pack holds.
#[derive(Debug, Clone)]
pub struct SnapshotDamage {
    pub id: SnapshotId,
    pub snapshot: Snapshot,
    /// Paths (from the snapshot's root) that cannot be restored, directories ending in `/`.
    pub lost_paths: Vec<String>,
    /// Whether the root tree itself is lost (nothing of the snapshot restores).
    pub root_lost: bool,
}

impl Repository {
    /// Every index file, with its id. A file listed but gone when read was replaced by a
    /// healing backup or a repair meanwhile (they write the replacement first), so the
    /// listing is read again once before that counts as an error.
    pub async fn load_index_files(&self) -> Result<Vec<(IndexId, IndexFile)>> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let ids = self.list_ids(ObjectKind::Index).await?;
            let got: Vec<Result<(IndexId, IndexFile)>> = stream::iter(ids)
                .map(|id| async move {
                    self.load_json::<IndexFile>(ObjectKind::Index, &id)
                        .await
                        .map(|f| (id, f))
                })
                .buffer_unordered(super::LOAD_CONCURRENCY)
                .collect()
                .await;
            let mut files = Vec::with_capacity(got.len());
            let mut vanished = None;
            for r in got {
                match r {
                    Ok(f) => files.push(f),
                    Err(Error::Store(e)) if e.is_not_found() && attempt == 1 => {
                        vanished = Some(e);
                    }
                    Err(e) => return Err(e),
                }
            }
            if vanished.is_none() {
                files.sort_by_key(|(id, _)| *id);
                return Ok(files);
            }
        }
    }

    /// Loads the index and reconciles it with the packs the store lists: adopts packs no index
    /// lists, and drops packs that are gone (rewriting the index files that named them) so
    /// the blobs they held are stored again by the backup that follows (T13).
    pub async fn load_index_reconciled(&self) -> Result<(Index, PackReconcile)> {
        let mut files = self.load_index_files().await?;
        let listed: HashMap<PackId, u64> = self.list_packs().await?.into_iter().collect();
        let mut rec = PackReconcile::default();
        // Packs not listed, or listed with another size than the index records (cut short or
        // damaged in the store: its blobs cannot be read back, so they are stored again).
        let mut lost: HashMap<PackId, u64> = HashMap::new();
        for (_, f) in &files {
            for p in &f.packs {
                if listed.get(&p.id) != Some(&p.size) {
                    lost.insert(p.id, p.size);
                }
            }
        }
        // A listing can be incomplete (T10: a paginated LIST cut short): only a pack that a
        // HEAD confirms gone, or of the wrong size, counts as lost.
        let unlisted: Vec<(PackId, u64)> = lost.iter().map(|(p, s)| (*p, *s)).collect();
        for (id, size) in unlisted {
            match self.store.head(&pack_key(&id)).await? {
                Some(i) if i.size == size => {
                    tracing::warn!(pack = %id, "the store's listing left out a pack that exists; not treating it as lost");
                    lost.remove(&id);
                }
                Some(i) => {
                    tracing::warn!(pack = %id, size = i.size, expected = size, "pack has the wrong size; storing its blobs again")
                }
                None => {}
            }
        }
        let lost: HashSet<PackId> = lost.into_keys().collect();
        if !lost.is_empty() {
            rec.lost = lost.iter().copied().collect();
            rec.lost.sort();
            let mut kept_files = Vec::with_capacity(files.len());
            for (id, f) in files {
                if !f.packs.iter().any(|p| lost.contains(&p.id)) {
                    kept_files.push((id, f));
                    continue;
                }
                let remaining: Vec<IndexPack> = f
                    .packs
                    .into_iter()
                    .filter(|p| !lost.contains(&p.id))
                    .collect();
                // The replacement first, then the old file: a reader never misses a pack
                // that exists.
                let new_id = if remaining.is_empty() {
                    None
                } else {
                    let file = IndexFile { packs: remaining };
                    let new_id = self.save_json(ObjectKind::Index, &file).await?;
                    kept_files.push((new_id, file));
                    Some(new_id)
                };
                self.store.delete(&ObjectKind::Index.key(&id)).await?;
                rec.rewritten.push((id, new_id));
            }
            files = kept_files;
            tracing::info!(
                packs = rec.lost.len(),
                "packs listed in the index are missing from the repository; dropped them from the index so their data is stored again"
            );
        }
        let mut index = Index::default();
        for (id, f) in &files {
            index.add_file(*id, f);
        }
        rec.adopted = self.adopt_listed(&mut index, &listed).await?;
        Ok((index, rec))
    }

    /// Before a commit: every pack holding one of `reused` (blobs of the snapshot that were
    /// already stored before this run), and every pack in `stored` (this run's own, with
    /// their sizes), is still in the store with the size the index records (T05; the content
    /// was checked when it was stored — Content-MD5 and the ETag on S3 — so the size is what
    /// can have changed since). A pack that vanished or changed size fails the backup with
    /// exit 13 and nothing is committed (INV-5).
    ///
    /// What it costs: when the packs to check are more than the requests a listing of
    /// `data/` takes (one per [`LIST_PAGE`] packs), `data/` is listed once and only the packs
    /// the listing does not show at their indexed size are HEADed — an unchanged backup of a
    /// repository of thousands of packs makes a few LIST requests instead of thousands of
    /// HEADs. Otherwise each pack is HEADed (8 at once). Either way every pack is checked: a
    /// listing cut short (T10) only sends the packs it left out to a HEAD, and a HEAD decides.
    pub async fn check_packs_present(
        &self,
        index: &Index,
        reused: &HashSet<BlobId>,
        stored: &[(PackId, u64)],
    ) -> Result<()> {
        // Pack → (size the index records, blobs of this snapshot stored in it before the run).
        let mut needed: BTreeMap<PackId, (u64, usize)> = BTreeMap::new();
        for b in reused {
            if let Some(loc) = index.get(b) {
                let (p, size) = index.pack(loc.pack);
                needed.entry(p).or_insert((size, 0)).1 += 1;
            }
        }
        for (p, size) in stored {
            needed.entry(*p).or_insert((*size, 0));
        }
        let packs_in_store = index.packs().len() + stored.len();
        let to_head: Vec<(PackId, u64, usize)> = if check_by_listing(needed.len(), packs_in_store) {
            let listed: HashMap<PackId, u64> = self.list_packs().await?.into_iter().collect();
            needed
                .into_iter()
                .filter(|(p, (size, _))| listed.get(p) != Some(size))
                .map(|(p, (size, n))| (p, size, n))
                .collect()
        } else {
            needed
                .into_iter()
                .map(|(p, (size, n))| (p, size, n))
                .collect()
        };
        let heads: Vec<(PackId, u64, usize, crate::store::StoreResult<_>)> = stream::iter(to_head)
            .map(|(p, size, n)| async move { (p, size, n, self.store.head(&pack_key(&p)).await) })
            .buffer_unordered(HEAD_CONCURRENCY)
            .collect()
            .await;
        let mut missing: Vec<(PackId, usize)> = Vec::new();
        let mut changed: Vec<(PackId, u64, u64)> = Vec::new();
        for (p, size, n, head) in heads {
            match head? {
                None => missing.push((p, n)),
                Some(i) if i.size != size => changed.push((p, i.size, size)),
                Some(_) => {}
            }
        }
        missing.sort();
        changed.sort();
        let whose = |n: usize| {
            if n > 0 {
                format!("{n} blob(s) stored in it before this run")
            } else {
                "it: this run stored it".to_string()
            }
        };
        if let Some((p, n)) = missing.first() {
            return Err(Error::integrity(
                format!("pack {p} in {}", self.store.describe()),
                format!(
                    "vanished while the backup ran ({} missing pack(s); the new snapshot needs \
                     {}); nothing was committed — run the backup again: it stores again what \
                     the source still has",
                    missing.len(),
                    whose(*n)
                ),
            ));
        }
        if let Some((p, got, want)) = changed.first() {
            return Err(Error::integrity(
                format!("pack {p} in {}", self.store.describe()),
                format!(
                    "has {got} bytes in the store but {want} were written ({} pack(s) changed \
                     size: damaged in the store or in transit); nothing was committed — run \
                     the backup again: it stores again what the source still has",
                    changed.len()
                ),
            ));
        }
        Ok(())
    }

    /// Reads every pack in full and salvages those whose bytes no longer match their name (a
    /// flipped bit, T11): the blobs that still decrypt, decompress and hash to their id are
    /// stored again in a new pack, then the damaged pack is deleted, so the index rebuilt
    /// afterwards no longer offers the damaged blobs and [`Repository::lost_data`] names the
    /// snapshots and files that needed them. A pack whose header cannot be read is left as it
    /// is (nothing in it can be told apart). Run under an exclusive lock, before
    /// [`Repository::rebuild_index`].
    pub async fn salvage_damaged_packs(
        &self,
        progress: &indicatif::ProgressBar,
    ) -> Result<Vec<PackSalvage>> {
        let listed: Vec<PackId> = self
            .store
            .list("data/")
            .await?
            .into_iter()
            .filter_map(|i| parse_pack_key(&i.key))
            .collect();
        progress.set_length(listed.len() as u64);
        let mut out = Vec::new();
        for id in listed {
            let bytes = self.store.get(&pack_key(&id)).await?;
            progress.inc(1);
            let (keys, repo_id) = (self.keys.clone(), *self.id());
            let check = tokio::task::spawn_blocking(move || {
                let c = super::pack::check_pack(&keys, &repo_id, &id, &bytes);
                (c, bytes)
            });
            let (check, bytes) = check.await.expect("check thread");
            if check.hash_ok && check.header_error.is_none() && check.bad_blobs.is_empty() {
                continue;
            }
            let Some(entries) = check.entries else {
                let why = check.header_error.unwrap_or_default();
                tracing::warn!(pack = %id, error = %why, "damaged pack left in place: its header is unreadable");
                out.push(PackSalvage {
                    pack: id,
                    salvaged_into: None,
                    kept: 0,
                    lost: Vec::new(),
                    left_because: Some(why),
                });
                continue;
            };
            let bad: HashSet<BlobId> = check.bad_blobs.iter().map(|(b, _)| *b).collect();
            let mut builder = super::pack::PackBuilder::with_capacity(bytes.len());
            let mut kept = 0;
            let mut lost = check.bad_blobs;
            for e in entries.iter().filter(|e| !bad.contains(&e.id)) {
                let sealed = &bytes[e.offset as usize..(e.offset + e.length) as usize];
                // Verified just now by `check_pack`; the CRC guards the copy into the new pack.
                if builder.push_verified(
                    e.kind,
                    e.id,
                    e.raw_length,
                    sealed,
                    crc32fast::hash(sealed),
                ) {
                    kept += 1;
                } else {
                    lost.push((e.id, "changed in memory while it was copied".into()));
                }
            }
            let salvaged_into = if builder.is_empty() {
                None
            } else {
                let finished = builder.finish(&self.keys, self.id());
                Some(self.store_pack(finished).await?.id)
            };
            // The blobs that verified are safely stored elsewhere now; the damaged copy goes.
            self.store.delete(&pack_key(&id)).await?;
            tracing::warn!(pack = %id, kept, lost = lost.len(), "damaged pack salvaged");
            out.push(PackSalvage {
                pack: id,
                salvaged_into,
                kept,
                lost,
                left_because: None,
            });
        }
        Ok(out)
    }

    /// Rebuilds the index from the packs themselves: every pack's header is read, new index
    /// files are written for all readable packs, then every old index file is removed. Run
    /// under an exclusive lock.
    pub async fn rebuild_index(&self, progress: &indicatif::ProgressBar) -> Result<IndexRebuild> {
        let old = self.load_index_files().await;
        let listed: Vec<(PackId, u64)> = self.list_packs().await?;
        let listed_ids: HashSet<PackId> = listed.iter().map(|(p, _)| *p).collect();
        let mut out = IndexRebuild::default();
        let old_ids: Vec<IndexId> = match &old {
            Ok(files) => {
                let mut lost: BTreeMap<PackId, ()> = BTreeMap::new();
                for (_, f) in files {
                    for p in &f.packs {
                        if !listed_ids.contains(&p.id) {
                            lost.insert(p.id, ());
                        }
                    }
                }
                for id in lost.keys() {
                    if self.store.head(&pack_key(id)).await?.is_some() {
                        return Err(Error::integrity(
                            format!("{} listing", self.store.describe()),
                            format!(
                                "pack {id} exists but the listing of data/ left it out; \
                                 refusing to rebuild the index from an incomplete listing \
                                 (nothing was changed) — run repair again later"
                            ),
                        ));
                    }
                }
                out.lost = lost.into_keys().collect();
                files.iter().map(|(id, _)| *id).collect()
            }
            // A damaged index file is exactly what a rebuild replaces.
            Err(_) => self.list_ids(ObjectKind::Index).await?,
        };
        progress.set_length(listed.len() as u64);
        let headers: Vec<(PackId, u64, Result<Vec<super::pack::PackEntry>>)> = stream::iter(listed)
            .map(|(id, size)| async move {
                let r = self.read_pack_header(&id, size).await;
                (id, size, r)
            })
            .buffer_unordered(HEADER_CONCURRENCY)
            .inspect(|_| progress.inc(1))
            .collect()
            .await;
        let mut packs = Vec::new();
        for (id, size, r) in headers {
            match r {
                Ok(entries) => {
                    out.blobs += entries.len();
                    packs.push(IndexPack::new(id, size, &entries));
                }
                Err(e @ Error::Interrupted) => return Err(e),
                Err(e) => out.unreadable.push((id, e.to_string())),
            }
        }
        packs.sort_by_key(|p| p.id);
        out.packs = packs.len();
        for chunk in packs.chunks(PACKS_PER_INDEX_FILE) {
            let id = self
                .save_json(
                    ObjectKind::Index,
                    &IndexFile {
                        packs: chunk.to_vec(),
                    },
                )
                .await?;
            out.written.push(id);
        }
        crate::failpoint::crash("repair-after-new-index");
        for id in old_ids {
            if out.written.contains(&id) {
                continue;
            }
            self.store.delete(&ObjectKind::Index.key(&id)).await?;
            out.removed += 1;
        }
        progress.finish_and_clear();
        Ok(out)
    }

    /// Every snapshot that needs a blob `index` does not have, with the paths that cannot be
    /// restored.
    pub async fn lost_data(&self, index: &Index) -> Result<Vec<SnapshotDamage>> {
        let mut out = Vec::new();
        for (id, snap) in self.list_snapshots().await? {
            let mut lost_paths = Vec::new();
            let root_lost = self.readable_tree(index, &snap.tree).await?.is_none();
            if root_lost {
                lost_paths.push("/".to_string());
            } else {
                let mut stack = vec![(String::from("/"), snap.tree)];
                while let Some((path, tree_id)) = stack.pop() {
                    let Some(tree) = self.readable_tree(index, &tree_id).await? else {
                        lost_paths.push(path);
                        continue;
                    };
                    for node in &tree.nodes {
                        let p = format!("{path}{}", node.name);
                        match node.kind {
                            NodeKind::Dir => match node.subtree {
                                Some(s) => stack.push((format!("{p}/"), s)),
                                None => lost_paths.push(format!("{p}/")),
                            },
                            NodeKind::File => {
                                if node.content.iter().any(|b| !index.contains(b)) {
                                    lost_paths.push(p);
                                }
                            }
                            NodeKind::Symlink => {}
                        }
                    }
                }
            }
            if !lost_paths.is_empty() {
                lost_paths.sort();
                out.push(SnapshotDamage {
                    id,
                    snapshot: snap,
                    lost_paths,
                    root_lost,
                });
            }
        }
        Ok(out)
    }

    /// The trees of `damage`'s snapshot without the files and directories whose data is lost,
    /// children first (the root last), with the new root's id; `None` when its root tree is
    /// lost (nothing to keep). The caller stores the trees (through the pipeline, which dedups
    /// those that did not change) and then calls [`Repository::replace_snapshot`].
    pub async fn trees_without_lost(
        &self,
        index: &Index,
        damage: &SnapshotDamage,
    ) -> Result<Option<(Vec<Tree>, BlobId)>> {
        if damage.root_lost {
            return Ok(None);
        }
        let mut trees: Vec<Tree> = Vec::new();
        let root = Box::pin(self.prune_tree(index, &damage.snapshot.tree, &mut trees)).await?;
        Ok(Some((trees, root)))
    }

    /// Commits `damage`'s snapshot again on the tree `root` (stored, with its index, before
    /// this: commit order), tagged `repaired`, then removes the original.
    pub async fn replace_snapshot(
        &self,
        damage: &SnapshotDamage,
        root: BlobId,
    ) -> Result<(SnapshotId, Snapshot)> {
        let mut snap = damage.snapshot.clone();
        snap.tree = root;
        if !snap.tags.iter().any(|t| t == "repaired") {
            snap.tags.push("repaired".into());
        }
        // A repair killed between writing the replacement and removing the original left
        // the replacement behind: finish that job rather than commit a second copy.
        let want = serde_json::to_value(&snap).expect("snapshots serialize");
        let existing = self
            .list_snapshots()
            .await?
            .into_iter()
            .find(|(id, s)| {
                *id != damage.id && serde_json::to_value(s).expect("snapshots serialize") == want
            })
            .map(|(id, _)| id);
        let new_id = match existing {
            Some(id) => id,
            None => self.save_json(ObjectKind::Snapshot, &snap).await?,
        };
        crate::failpoint::crash("repair-mid-rewrite");
        self.store
            .delete(&ObjectKind::Snapshot.key(&damage.id))
            .await?;
        Ok((new_id, snap))
    }

    /// The tree `id` without nodes whose data is lost, children first into `out` (the root
    /// last); returns its new id.
    async fn prune_tree(&self, index: &Index, id: &BlobId, out: &mut Vec<Tree>) -> Result<BlobId> {
        let tree = self.readable_tree(index, id).await?.unwrap_or_default();
        let mut nodes: Vec<Node> = Vec::with_capacity(tree.nodes.len());
        for mut node in tree.nodes {
            match node.kind {
                NodeKind::Dir => match node.subtree {
                    Some(s) if self.readable_tree(index, &s).await?.is_some() => {
                        let new = Box::pin(self.prune_tree(index, &s, out)).await?;
                        node.subtree = Some(new);
                        nodes.push(node);
                    }
                    _ => {}
                },
                NodeKind::File => {
                    if node.content.iter().all(|b| index.contains(b)) {
                        nodes.push(node);
                    }
                }
                NodeKind::Symlink => nodes.push(node),
            }
        }
        let tree = Tree { nodes };
        let bytes = serde_json::to_vec(&tree).expect("trees serialize");
        let new_id = self.keys.blob_id(&bytes);
        out.push(tree);
        Ok(new_id)
    }

    /// The tree `id`, or `None` when it is not indexed or cannot be read (lost or damaged).
    async fn readable_tree(&self, index: &Index, id: &BlobId) -> Result<Option<Tree>> {
        if !index.contains(id) {
            return Ok(None);
        }
        match self.load_tree(index, id).await {
            Ok(t) => Ok(Some(t)),
            Err(e @ Error::Interrupted) => Err(e),
            Err(e) => {
                tracing::warn!(tree = %id, error = %e, "tree unreadable");
                Ok(None)
            }
        }
    }

    /// Adopts the packs of `listed` that `index` does not list (shared by backup and repair).
    pub(super) async fn adopt_listed(
        &self,
        index: &mut Index,
        listed: &HashMap<PackId, u64>,
    ) -> Result<usize> {
        let mut adopted = Vec::new();
        let mut ids: Vec<(&PackId, &u64)> = listed.iter().collect();
        ids.sort();
        for (id, size) in ids {
            if index.has_pack(id) {
                continue;
            }
            match self.read_pack_header(id, *size).await {
                Ok(entries) => adopted.push(IndexPack::new(*id, *size, &entries)),
                Err(e) => {
                    tracing::warn!(pack = %id, error = %e, "unindexed pack is unreadable; ignoring it")
                }
            }
        }
        let n = adopted.len();
        if n > 0 {
            for p in &adopted {
                index.add_pack(p);
            }
            let id = self.save_index(adopted).await?;
            index.files.push(id);
            tracing::info!(packs = n, "adopted packs left by an interrupted run");
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The commit check lists `data/` only when that takes fewer requests than the HEADs.
    #[test]
    fn the_commit_check_lists_only_when_that_is_cheaper() {
        // A handful of packs in a small repository: a HEAD each (as many as one listing).
        assert!(!check_by_listing(1, 10));
        // Every pack of a 5000-pack repository: 6 LIST requests, not 5000 HEADs.
        assert!(check_by_listing(5000, 5000));
        // Three packs in a million: three HEADs, not a thousand LIST pages.
        assert!(!check_by_listing(3, 1_000_000));
        assert!(check_by_listing(1002, 1_000_000));
        assert!(!check_by_listing(1001, 1_000_000));
    }
}
