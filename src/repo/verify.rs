//! Verification. Results are data: a list of findings, each with a severity, the object it
//! concerns and what is wrong — never an early `Err` for a damaged object.
//!
//! - structure (always): every index file opens, every indexed pack exists with the indexed
//!   size, every snapshot opens, every tree it reaches opens, every blob it needs is indexed;
//! - data (`--read-data`, `--read-data-subset N%`): each selected pack is read whole, its hash
//!   checked against its name, its header decrypted and compared with the index, and every
//!   blob decrypted, decompressed and re-hashed. Damaged packs are traced to the snapshots and
//!   files that need them. Packs are chosen all, by random percentage, or given by the caller
//!   (the catalog's least-recently-verified selection); each read pack's verdict is returned
//!   in [`VerifyReport::read_results`] for the verification ledger.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use futures::stream::{self, StreamExt};
use indicatif::ProgressBar;
use rand::seq::SliceRandom;
use serde::Serialize;

use super::index::{Index, IndexFile};
use super::pack;
use super::snapshot::Snapshot;
use super::tree::NodeKind;
use super::{pack_key, ObjectKind, Repository};
use crate::ids::{BlobId, PackId};
use crate::sys::Cancel;
use crate::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub severity: Severity,
    pub object: String,
    pub message: String,
}

/// One pack read by `--read-data`: id, bytes read, what the check found, what the index expects.
type PackResult = (
    PackId,
    u64,
    std::result::Result<pack::PackCheck, String>,
    Vec<pack::PackEntry>,
);

#[derive(Debug, Clone, PartialEq)]
pub enum ReadData {
    None,
    All,
    /// A random percentage of packs (0 < p ≤ 100).
    Subset(f64),
    /// Exactly these packs (chosen by the caller, e.g. least recently verified first); ids
    /// the index does not list are ignored.
    Packs(Vec<PackId>),
}

/// One pack that was read whole: its size and whether every check on it passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PackReadResult {
    pub pack: PackId,
    pub size: u64,
    pub ok: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub snapshots: usize,
    pub index_files: usize,
    pub packs: usize,
    pub packs_read: usize,
    pub bytes_read: u64,
    pub trees: usize,
    pub findings: Vec<Finding>,
    /// Every pack read, with its verdict (for the verification ledger).
    #[serde(skip)]
    pub read_results: Vec<PackReadResult>,
    /// Every snapshot manifest that loaded, as listed (for the anomaly scan, which then
    /// needs no second listing).
    #[serde(skip)]
    pub manifests: Vec<(crate::ids::SnapshotId, Snapshot)>,
}

impl VerifyReport {
    pub fn errors(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .count()
    }
    fn push(&mut self, severity: Severity, object: impl Into<String>, message: impl Into<String>) {
        self.findings.push(Finding {
            severity,
            object: object.into(),
            message: message.into(),
        });
    }
}

pub async fn verify(
    repo: &Repository,
    read: ReadData,
    progress: ProgressBar,
    cancel: Cancel,
) -> Result<VerifyReport> {
    let mut r = VerifyReport::default();
    let swept = repo.sweep_leftovers().await;
    if swept > 0 {
        r.push(
            Severity::Info,
            repo.location(),
            format!("removed {swept} temp file(s) left by interrupted writes"),
        );
    }

    // Snapshots first, then indexes (INV-2): a snapshot is committed only after every index
    // it needs, so each snapshot listed now is covered by the indexes loaded next. Listed
    // the other way round, a backup committing in between would look like a snapshot
    // pointing at blobs no index has — a false integrity alarm on a healthy repository.
    let snapshot_ids = repo.list_ids(ObjectKind::Snapshot).await?;

    // Index files, one by one so a damaged one is a finding, not an abort. One listed but
    // gone when read was replaced meanwhile (a backup healing a lost pack writes the new file
    // first): the listing is read again, once.
    let mut index = Index::default();
    let mut findings = Vec::new();
    for attempt in 0..2 {
        index = Index::default();
        findings.clear();
        let mut replaced = false;
        for id in repo.list_ids(ObjectKind::Index).await? {
            match repo.load_json::<IndexFile>(ObjectKind::Index, &id).await {
                Ok(f) => index.add_file(id, &f),
                Err(crate::Error::Store(e)) if e.is_not_found() && attempt == 0 => replaced = true,
                Err(e) => findings.push((format!("index/{id}"), e.to_string())),
            }
        }
        if !replaced {
            break;
        }
    }
    for (object, message) in findings {
        r.push(Severity::Error, object, message);
    }
    r.index_files = index.files.len();

    // Set manifests: each is sealed (checked as it loads) and names member snapshots; a
    // member that is gone (forgotten) leaves that recovery point incomplete.
    let present: HashSet<crate::ids::SnapshotId> = snapshot_ids.iter().copied().collect();
    for id in repo.list_ids(ObjectKind::Set).await? {
        match repo
            .load_json::<super::set::SetManifest>(ObjectKind::Set, &id)
            .await
        {
            Err(e) => r.push(Severity::Error, format!("sets/{id}"), e.to_string()),
            Ok(m) => {
                for x in m.members.iter().filter(|x| !present.contains(&x.snapshot)) {
                    r.push(
                        Severity::Warning,
                        format!("sets/{id}"),
                        format!(
                            "set {} of plan {}: member {} (snapshot {}) is gone, so this recovery point is incomplete and no drill will use it",
                            m.name,
                            m.plan,
                            x.job,
                            x.snapshot.short()
                        ),
                    );
                }
            }
        }
    }

    // Packs present vs. indexed.
    let listed: HashMap<PackId, u64> = repo.list_packs().await?.into_iter().collect();
    let mut bad_packs: HashSet<PackId> = HashSet::new();
    let mut bad_blobs: HashSet<BlobId> = HashSet::new();
    let store = repo.store.describe();
    let mut left_out = 0usize;
    for (id, size) in index.packs() {
        if listed.get(id) == Some(size) {
            continue;
        }
        // A listing can be cut short (T10: a lost last page, a cleared IsTruncated): a HEAD
        // says whether the pack is really gone or changed before anything is reported lost.
        let head = match repo.store.head(&pack_key(id)).await {
            Ok(h) => h,
            Err(e) => {
                r.push(
                    Severity::Error,
                    format!("pack {id}"),
                    format!("left out of the listing of {store}, and HEAD failed: {e}"),
                );
                bad_packs.insert(*id);
                continue;
            }
        };
        match head {
            None => {
                r.push(
                    Severity::Error,
                    format!("pack {id}"),
                    format!("missing from {store}"),
                );
                bad_packs.insert(*id);
            }
            Some(i) if i.size != *size => {
                r.push(
                    Severity::Error,
                    format!("pack {id}"),
                    format!(
                        "size {} in {store} but the index says {size} (truncated?)",
                        i.size
                    ),
                );
                bad_packs.insert(*id);
            }
            Some(_) => left_out += 1,
        }
    }
    if left_out > 0 {
        r.push(
            Severity::Warning,
            store.clone(),
            format!(
                "the listing of data/ left out {left_out} pack(s) that exist with the indexed size (an incomplete listing from the store, not lost data); nothing was changed"
            ),
        );
    }
    for id in listed.keys().filter(|id| !index.has_pack(id)) {
        r.push(
            Severity::Info,
            format!("pack {id}"),
            "not referenced by any index (left by an interrupted run; the next backup adopts it)",
        );
    }
    r.packs = index.packs().len();

    // Data.
    let mut candidates: Vec<(u32, PackId, u64)> = index
        .packs()
        .iter()
        .enumerate()
        .filter(|(_, (id, _))| !bad_packs.contains(id))
        .map(|(i, (id, s))| (i as u32, *id, *s))
        .collect();
    let selected = match read {
        ReadData::None => Vec::new(),
        ReadData::All => candidates,
        ReadData::Subset(p) => {
            candidates.shuffle(&mut rand::thread_rng());
            let n = ((candidates.len() as f64 * p / 100.0).ceil() as usize).min(candidates.len());
            candidates.truncate(n);
            candidates
        }
        ReadData::Packs(wanted) => {
            let wanted: HashSet<PackId> = wanted.into_iter().collect();
            candidates.retain(|(_, id, _)| wanted.contains(id));
            candidates
        }
    };
    if !selected.is_empty() {
        progress.set_length(selected.iter().map(|s| s.2).sum());
        let by_pack = index.entries_by_pack();
        let index_pos: HashMap<PackId, usize> = selected
            .iter()
            .map(|(pos, id, _)| (*id, *pos as usize))
            .collect();
        let results: Vec<PackResult> = stream::iter(selected)
            .map(|(pos, id, _size)| {
                let repo = repo.clone();
                let expected = by_pack[pos as usize].clone();
                let progress = progress.clone();
                let cancel = cancel.clone();
                async move {
                    if cancel.is_cancelled() {
                        return (id, 0, Err("interrupted".to_string()), expected);
                    }
                    let bytes = match repo.store.get(&pack_key(&id)).await {
                        Ok(b) => b,
                        Err(e) => return (id, 0, Err(e.to_string()), expected),
                    };
                    let n = bytes.len() as u64;
                    let check = tokio::task::spawn_blocking(move || {
                        pack::check_pack(&repo.keys, repo.id(), &id, &bytes)
                    })
                    .await
                    .map_err(|e| format!("verify worker failed: {e}"));
                    progress.inc(n);
                    (id, n, check, expected)
                }
            })
            // Three packs at once on two cores: one is being read while two are checked
            // (2 → 3: 0.95 → 0.89 s for a 1 GiB dump, 8 MiB more memory).
            .buffer_unordered(3)
            .collect()
            .await;
        for (id, n, res, expected) in results {
            r.packs_read += 1;
            r.bytes_read += n;
            let object = format!("pack {id}");
            let errors_before = r.errors();
            let size = index.packs()[index_pos[&id]].1;
            match res {
                Err(msg) => {
                    r.push(Severity::Error, object, msg);
                    bad_packs.insert(id);
                }
                Ok(c) => {
                    if !c.hash_ok {
                        r.push(
                            Severity::Error,
                            object.clone(),
                            "content hash does not match its name (the stored bytes changed)",
                        );
                    }
                    match &c.entries {
                        None => {
                            r.push(
                                Severity::Error,
                                object.clone(),
                                format!(
                                    "header unreadable: {}",
                                    c.header_error.as_deref().unwrap_or("unknown")
                                ),
                            );
                            bad_packs.insert(id);
                        }
                        Some(entries) => {
                            for e in &expected {
                                if !entries.contains(e) {
                                    r.push(
                                        Severity::Error,
                                        object.clone(),
                                        format!(
                                            "blob {} is in the index but not in the pack header",
                                            e.id
                                        ),
                                    );
                                    bad_blobs.insert(e.id);
                                }
                            }
                        }
                    }
                    for (blob, detail) in c.bad_blobs {
                        r.push(
                            Severity::Error,
                            object.clone(),
                            format!("blob {blob}: {detail}"),
                        );
                        bad_blobs.insert(blob);
                    }
                }
            }
            r.read_results.push(PackReadResult {
                pack: id,
                size,
                ok: r.errors() == errors_before,
            });
        }
        progress.finish_and_clear();
    }
    crate::sys::Cancel::check(&cancel)?;

    // Snapshots and their trees; trace damaged packs to the files that need them.
    let mut visited: HashSet<BlobId> = HashSet::new();
    let pack_of = |b: &BlobId| index.get(b).map(|l| index.pack(l.pack).0);
    // A blob is lost when its own bytes failed, or its whole pack is gone or unreadable.
    let damaged = |b: &BlobId| -> Option<PackId> {
        let p = pack_of(b)?;
        (bad_blobs.contains(b) || bad_packs.contains(&p)).then_some(p)
    };
    let any_damage = !bad_packs.is_empty() || !bad_blobs.is_empty();
    for id in snapshot_ids {
        let snap: Snapshot = match repo.load_json(ObjectKind::Snapshot, &id).await {
            Ok(s) => s,
            Err(e) => {
                r.push(Severity::Error, format!("snapshot {id}"), e.to_string());
                continue;
            }
        };
        r.snapshots += 1;
        r.manifests.push((id, snap.clone()));
        let mut stack = vec![(PathBuf::from("/"), snap.tree)];
        while let Some((path, tree_id)) = stack.pop() {
            if !visited.insert(tree_id) && !any_damage {
                continue;
            }
            if let Some(p) = damaged(&tree_id) {
                r.push(
                    Severity::Error,
                    format!("snapshot {}", id.short()),
                    format!("directory {} is in damaged pack {p}", path.display()),
                );
                continue;
            }
            let tree = match repo.load_tree(&index, &tree_id).await {
                Ok(t) => t,
                Err(e) => {
                    r.push(
                        Severity::Error,
                        format!("snapshot {}", id.short()),
                        format!("directory {}: {e}", path.display()),
                    );
                    continue;
                }
            };
            r.trees += 1;
            for node in tree.nodes {
                let p = path.join(&node.name);
                match node.kind {
                    NodeKind::Dir => match node.subtree {
                        Some(s) => stack.push((p, s)),
                        None => r.push(
                            Severity::Error,
                            format!("tree {tree_id}"),
                            format!("{} has no subtree", p.display()),
                        ),
                    },
                    NodeKind::File => {
                        for b in &node.content {
                            if pack_of(b).is_none() {
                                r.push(
                                    Severity::Error,
                                    format!("snapshot {}", id.short()),
                                    format!(
                                        "file {} needs blob {b}, which no index lists",
                                        p.display()
                                    ),
                                );
                                break;
                            }
                            if let Some(pk) = damaged(b) {
                                r.push(
                                    Severity::Error,
                                    format!("snapshot {}", id.short()),
                                    format!(
                                        "file {} needs damaged blob {b} in pack {pk}",
                                        p.display()
                                    ),
                                );
                                break;
                            }
                        }
                    }
                    NodeKind::Symlink => {}
                }
            }
        }
    }
    Ok(r)
}
