//! Prune: free the packs no snapshot needs, in two phases that never race a backup
//! (the scheme and its argument are in `docs/format.md`, "Prune").
//!
//! - [`mark`] (phase 1, under a *shared* lock, so backups go on meanwhile): reads every
//!   snapshot's trees, finds the packs with no used blob (condemned) and the partly used ones
//!   whose unused bytes exceed `max_unused` (repacked: their used blobs are copied, sealed
//!   bytes as they are, into new packs that are read back and verified blob by blob, then
//!   indexed; the old packs are condemned too). Nothing is deleted. The condemned packs go
//!   into a [`PrunePlan`] stored encrypted under `prune/<id>`, with the snapshots and index
//!   files phase 1 accounted for.
//! - [`sweep`] (phase 2, under an *exclusive* lock, so no backup runs meanwhile): for every
//!   plan at least `grace` old, walks the snapshots committed since the plan (a backup that
//!   ran between the phases may have deduplicated against a condemned pack) and rescues every
//!   condemned pack that holds a blob one of them needs and no surviving pack has; a pack a
//!   newer index lists is rescued too. Then: replacement index files without the doomed packs
//!   are written, the old index files deleted, the packs deleted, the plan deleted — in that
//!   order, so a kill at any point leaves every snapshot restorable.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt, TryStreamExt};
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

use super::index::{Index, IndexBlob, IndexFile, IndexPack};
use super::lock::Lock;
use super::pack::{self, BlobKind, PackBuilder, PackEntry};
use super::reach::{collect_used, list_snapshots, load_snapshots, reach_listed, Reach};
use super::{pack_key, ObjectKind, Repository};
use crate::ids::{BlobId, IndexId, ObjectId, PackId, SnapshotId};
use crate::store::StoreError;
use crate::sys::Cancel;
use crate::{Error, Result};

/// How many objects are read or deleted at once.
const CONCURRENCY: usize = 16;
/// Phase 2 checks its lease between batches of this many pack deletions.
pub const DELETE_BATCH: usize = 2 * CONCURRENCY;
/// restic's default: repack until at most 5 % of the repository is unused.
pub const DEFAULT_MAX_UNUSED: f64 = 0.05;
/// By default a fully used pack is small when it is under this fraction of the pack size
/// (1/25, restic's default too): the tree pack and the last, partial data pack most backups
/// leave behind.
const SMALL_DIVISOR: u64 = 25;
/// ... and small packs are merged once there are this many of one kind (restic: 10), so a
/// daily backup's leftovers are merged about every ten days, not copied again every day.
const SMALL_MIN_COUNT: usize = 10;

/// A prune's plan (`prune/<id>`): what phase 1 condemned and what it had seen.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrunePlan {
    pub created: DateTime<Utc>,
    pub host: String,
    /// The packs to delete, with their sizes.
    pub packs: Vec<CondemnedPack>,
    /// The snapshots whose blobs phase 1 counted as used.
    pub snapshots: Vec<SnapshotId>,
    /// The index files phase 1 read (and the one it wrote for repacked blobs).
    pub index_files: Vec<IndexId>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CondemnedPack {
    pub id: PackId,
    pub size: u64,
    /// Repacked (its used blobs were copied) rather than wholly unused.
    #[serde(default)]
    pub repacked: bool,
}

/// What phase 1 found and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MarkReport {
    pub snapshots: usize,
    pub packs: usize,
    pub bytes: u64,
    /// Packs no snapshot needs at all.
    pub unused_packs: usize,
    pub unused_bytes: u64,
    /// Partly used packs whose used blobs were copied into new packs.
    pub repacked_packs: usize,
    pub repacked_bytes: u64,
    pub repacked_blobs: usize,
    /// New packs written by the repack (each read back and verified).
    pub new_packs: usize,
    pub new_bytes: u64,
    /// Unused bytes left in partly used packs (under `max_unused`).
    pub unused_bytes_kept: u64,
    /// Small, fully used packs merged into fewer packs (counted in `repacked_*` too).
    pub small_packs: usize,
    pub small_bytes: u64,
    /// Blobs a snapshot needs that no index lists (damage `verify` reports; never deleted).
    pub missing_blobs: usize,
    /// Unused or partly used packs left alone because Object Lock keeps them (the lock record
    /// says so): a prune after `locked_lapse`, the first of their dates, frees them.
    pub locked_packs: usize,
    pub locked_bytes: u64,
    pub locked_lapse: Option<DateTime<Utc>>,
    /// The stored plan, when something was condemned (`None` on a dry run).
    pub plan: Option<ObjectId>,
    /// Condemned packs (planned, or on a dry run what would be).
    pub condemned_packs: usize,
    pub condemned_bytes: u64,
}

/// What phase 2 did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SweepReport {
    /// Plans carried out (and removed).
    pub plans: usize,
    /// Plans younger than the grace period, left for a later prune.
    pub plans_waiting: usize,
    pub deleted_packs: usize,
    pub freed_bytes: u64,
    /// Condemned packs kept because a snapshot newer than the plan needs them, or a newer
    /// index lists them.
    pub rescued_packs: usize,
    pub index_files_rewritten: usize,
    /// Snapshots committed after the plan, walked for the rescue check.
    pub new_snapshots: usize,
    /// Packs the store refused to delete (Object Lock retention not lapsed): kept and
    /// indexed again, retried by a later prune.
    pub locked_packs: usize,
    pub locked_bytes: u64,
    /// The first date one of them lapses, when the store said.
    pub locked_lapse: Option<DateTime<Utc>>,
}

/// Phase 1 options.
#[derive(Debug, Clone, Copy)]
pub struct MarkOptions {
    /// Repack partly used packs until at most this fraction (0–1) of the repository is unused.
    pub max_unused: f64,
    /// Merge every pack under 4/5 of the pack size whenever that makes fewer packs (restic's
    /// `--repack-small`); without it only packs under 1/25 of it, once there are
    /// [`SMALL_MIN_COUNT`] of a kind.
    pub repack_small: bool,
    pub dry_run: bool,
}

fn entry_of(b: &IndexBlob) -> PackEntry {
    PackEntry {
        kind: b.kind,
        id: b.id,
        offset: b.offset,
        length: b.length,
        raw_length: b.raw_length,
    }
}

/// One pack as the index files describe it, with the blobs of it that prune keeps.
struct PackUse<'a> {
    pack: &'a IndexPack,
    keep: Vec<&'a IndexBlob>,
}

impl PackUse<'_> {
    fn kept_bytes(&self) -> u64 {
        self.keep.iter().map(|b| b.length as u64).sum()
    }
    fn blob_bytes(&self) -> u64 {
        self.pack.blobs.iter().map(|b| b.length as u64).sum()
    }
    fn unused_bytes(&self) -> u64 {
        self.blob_bytes() - self.kept_bytes()
    }
}

/// Decides, for each pack, which of its blobs are kept. A used blob that several packs hold
/// (a repack killed before its old packs went) is kept in the most used of them, so a
/// half-finished repack converges instead of repacking again.
fn claim<'a>(packs: &[&'a IndexPack], used: &HashSet<BlobId>) -> Vec<PackUse<'a>> {
    let ratio = |p: &IndexPack| {
        let total: u64 = p.blobs.iter().map(|b| b.length as u64).sum();
        let u: u64 = p
            .blobs
            .iter()
            .filter(|b| used.contains(&b.id))
            .map(|b| b.length as u64)
            .sum();
        if total == 0 {
            0.0
        } else {
            u as f64 / total as f64
        }
    };
    let mut order: Vec<(f64, &IndexPack)> = packs.iter().map(|p| (ratio(p), *p)).collect();
    order.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.id.cmp(&b.1.id)));
    let mut claimed: HashSet<BlobId> = HashSet::new();
    order
        .into_iter()
        .map(|(_, p)| PackUse {
            pack: p,
            keep: p
                .blobs
                .iter()
                .filter(|b| used.contains(&b.id) && claimed.insert(b.id))
                .collect(),
        })
        .collect()
}

/// Which partly used packs to repack, given each one's (unused, total) blob bytes and the
/// bytes of used blobs in the whole repository: restic's rule, so that `--max-unused` means
/// the same in both tools. After the prune at most `max_unused` of the repository may be
/// unused, i.e. unused ≤ max_unused / (1 − max_unused) × used blob bytes (100 %: no limit);
/// the packs with the highest share of unused bytes go first (the most space freed per byte
/// copied). Returns the chosen indices and the unused bytes left.
fn choose_repack(packs: &[(u64, u64)], used: u64, max_unused: f64) -> (Vec<usize>, u64) {
    let p = max_unused.clamp(0.0, 1.0);
    let allowed = if p >= 1.0 {
        u64::MAX
    } else {
        (p / (1.0 - p) * used as f64) as u64
    };
    let mut order: Vec<usize> = (0..packs.len()).collect();
    order.sort_by(|&a, &b| {
        let ((ua, ta), (ub, tb)) = (packs[a], packs[b]);
        // ub/tb vs ua/ta without division, highest share first.
        (ub as u128 * ta as u128)
            .cmp(&(ua as u128 * tb as u128))
            .then(ub.cmp(&ua))
            .then(a.cmp(&b))
    });
    let mut left: u64 = packs.iter().map(|p| p.0).sum();
    let mut chosen = Vec::new();
    for i in order {
        if left <= allowed {
            break;
        }
        left -= packs[i].0;
        chosen.push(i);
    }
    (chosen, left)
}

/// What a pack holds, for the merging of small packs: trees and file data go into packs of
/// their own (a pack of both comes from an older backup or repack, and is split).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Holds {
    Trees,
    Data,
    Both,
}

/// Which small packs to merge, given each fully used, unlocked pack's size and its blob bytes
/// of each kind `(size, tree bytes, data bytes)`. A pack is small under
/// 1/[`SMALL_DIVISOR`] of `pack_size` (`force`: under 4/5 of it); the small packs of one kind
/// are merged when there are at least [`SMALL_MIN_COUNT`] of them (`force`: two) and only
/// when their blobs fit into fewer packs than they fill now, so that merging converges
/// instead of copying the same nearly full packs at every prune. Returns the chosen indices.
fn choose_small(packs: &[(u64, u64, u64)], pack_size: u64, force: bool) -> Vec<usize> {
    let (limit, min_count) = if force {
        (pack_size / 5 * 4, 2)
    } else {
        (pack_size / SMALL_DIVISOR, SMALL_MIN_COUNT)
    };
    let mut groups: std::collections::BTreeMap<Holds, Vec<usize>> = Default::default();
    for (i, &(size, trees, data)) in packs.iter().enumerate() {
        if size < limit {
            let holds = match (trees > 0, data > 0) {
                (true, false) => Holds::Trees,
                (false, true) => Holds::Data,
                _ => Holds::Both,
            };
            groups.entry(holds).or_default().push(i);
        }
    }
    let packs_for = |bytes: u64| bytes.div_ceil(pack_size.max(1));
    let mut chosen = Vec::new();
    for (_, members) in groups {
        let trees: u64 = members.iter().map(|&i| packs[i].1).sum();
        let data: u64 = members.iter().map(|&i| packs[i].2).sum();
        if members.len() >= min_count && packs_for(trees) + packs_for(data) < members.len() as u64 {
            chosen.extend(members);
        }
    }
    chosen.sort_unstable();
    chosen
}

/// Phase 1. The caller holds a shared lock.
pub async fn mark(
    repo: &Repository,
    opts: MarkOptions,
    progress: ProgressBar,
    cancel: &Cancel,
) -> Result<MarkReport> {
    let listed = list_snapshots(repo).await?;
    mark_listed(repo, listed, opts, progress, cancel).await
}

/// Phase 1 over the snapshots the caller listed and loaded ([`list_snapshots`]) just before
/// (`ops::prune` checks that listing against the catalog first: one listing, one load of
/// each snapshot). The caller holds a shared lock.
///
/// Refuses (exit 13, nothing written) when the snapshots need blobs that no index file in
/// the listing of `index/` holds, unless `dry_run` (which reports them in
/// [`MarkReport::missing_blobs`]): a listing of `index/` cut short by the store (T10) hides
/// the index files of some packs, and a plan made on that partial view would repack and
/// condemn by it; lost packs (T13) look the same, and are for `repair`, not for a prune.
pub async fn mark_listed(
    repo: &Repository,
    listed: Vec<(SnapshotId, super::snapshot::Snapshot)>,
    opts: MarkOptions,
    progress: ProgressBar,
    cancel: &Cancel,
) -> Result<MarkReport> {
    let mut r = MarkReport::default();
    let Reach {
        snapshots: snapshot_ids,
        files,
        index,
        used,
    } = reach_listed(repo, listed, cancel).await?;
    r.snapshots = snapshot_ids.len();
    let mut missing: Vec<BlobId> = used
        .iter()
        .filter(|b| !index.contains(b))
        .copied()
        .collect();
    r.missing_blobs = missing.len();
    if !missing.is_empty() && !opts.dry_run {
        missing.sort();
        return Err(Error::integrity(
            format!("{} index/", repo.store.describe()),
            format!(
                "prune refused, nothing was deleted: the snapshots need {} blob(s) that no \
                 index file in the listing of index/ holds (e.g. blob {}; {} index file(s) \
                 listed). Either the store cut the listing short (an incomplete listing must \
                 not decide what is unused: run prune again later) or packs were lost: \
                 `lifeboat verify` tells which; after a loss, `lifeboat repair` rebuilds the \
                 index and names the damaged snapshots (`--rewrite-snapshots` writes them \
                 again without the lost files), then prune runs",
                missing.len(),
                missing[0],
                files.len()
            ),
        ));
    }
    // The walk is done: its index goes before the repack.
    drop(index);

    let mut seen = HashSet::new();
    let packs: Vec<&IndexPack> = files
        .iter()
        .flat_map(|(_, f)| f.packs.iter())
        .filter(|p| seen.insert(p.id))
        .collect();
    r.packs = packs.len();
    r.bytes = packs.iter().map(|p| p.size).sum();
    let uses = claim(&packs, &used);
    drop(used);
    // Packs Object Lock still keeps cannot be freed: neither condemned nor repacked.
    let locked = if repo.store.lock_policy().is_some() {
        let (record, _) = super::object_lock::load_record(repo).await?;
        super::object_lock::locked_after(&record, crate::sys::clock::lock_now())
    } else {
        HashMap::new()
    };

    let mut condemned: Vec<CondemnedPack> = Vec::new();
    let mut partly: Vec<&PackUse> = Vec::new();
    let mut whole: Vec<&PackUse> = Vec::new();
    for u in &uses {
        if let Some(t) = locked.get(&u.pack.id) {
            if u.keep.len() < u.pack.blobs.len() {
                r.locked_packs += 1;
                r.locked_bytes += u.pack.size;
                r.locked_lapse = Some(r.locked_lapse.map_or(*t, |l| l.min(*t)));
                r.unused_bytes_kept += u.unused_bytes();
                continue;
            }
            if !u.keep.is_empty() {
                // Wholly used: it stays as it is, small or not (its copy could not replace it).
                continue;
            }
        }
        if u.keep.is_empty() {
            r.unused_packs += 1;
            r.unused_bytes += u.pack.size;
            condemned.push(CondemnedPack {
                id: u.pack.id,
                size: u.pack.size,
                repacked: false,
            });
        } else if u.keep.len() < u.pack.blobs.len() {
            partly.push(u);
        } else {
            whole.push(u);
        }
    }
    let used: u64 = uses.iter().map(|u| u.kept_bytes()).sum();
    let shape: Vec<(u64, u64)> = partly
        .iter()
        .map(|u| (u.unused_bytes(), u.blob_bytes()))
        .collect();
    let (chosen, unused_left) = choose_repack(&shape, used, opts.max_unused);
    let mut repack: Vec<&PackUse> = chosen.into_iter().map(|i| partly[i]).collect();
    r.unused_bytes_kept += unused_left;
    let shape: Vec<(u64, u64, u64)> = whole
        .iter()
        .map(|u| {
            let bytes = |k: BlobKind| -> u64 {
                u.keep
                    .iter()
                    .filter(|b| b.kind == k)
                    .map(|b| b.length as u64)
                    .sum()
            };
            (u.pack.size, bytes(BlobKind::Tree), bytes(BlobKind::Data))
        })
        .collect();
    for i in choose_small(&shape, repo.config.pack_size as u64, opts.repack_small) {
        r.small_packs += 1;
        r.small_bytes += whole[i].pack.size;
        repack.push(whole[i]);
    }

    let mut new_packs: Vec<IndexPack> = Vec::new();
    if !opts.dry_run && !repack.is_empty() {
        progress.set_length(repack.iter().map(|u| u.pack.size).sum());
        new_packs = repack_packs(repo, &repack, &mut r, &progress, cancel).await?;
        crate::failpoint::crash("prune-after-repack");
    }
    progress.finish_and_clear();
    for u in &repack {
        // On a dry run, or when the pack could be copied (repack_packs skipped none).
        condemned.push(CondemnedPack {
            id: u.pack.id,
            size: u.pack.size,
            repacked: true,
        });
    }
    r.repacked_packs = repack.len();
    r.repacked_bytes = repack.iter().map(|u| u.pack.size).sum();
    r.condemned_packs = condemned.len();
    r.condemned_bytes = condemned.iter().map(|c| c.size).sum();
    if opts.dry_run || condemned.is_empty() {
        return Ok(r);
    }
    let mut index_files: Vec<IndexId> = files.iter().map(|(id, _)| *id).collect();
    if !new_packs.is_empty() {
        // The copies are indexed before anything is condemned: from here on a reader finds
        // every kept blob in a pack that stays.
        index_files.push(repo.save_index(new_packs).await?);
        crate::failpoint::crash("prune-after-repack-index");
    }
    let plan = PrunePlan {
        created: repo.now(),
        host: crate::sys::host::hostname(),
        packs: condemned,
        snapshots: snapshot_ids,
        index_files,
    };
    r.plan = Some(repo.save_json(ObjectKind::PrunePlan, &plan).await?);
    Ok(r)
}

/// One ranged read of a repack covers neighbouring blobs up to this many bytes (a larger blob
/// is read alone): below [`crate::store::pool::MIN`], so the reads are not pooled pack buffers.
const READ_RUN: u64 = 512 << 10;
/// Unused bytes between two kept blobs of an old pack that one read spans rather than split
/// in two.
const READ_GAP: u64 = 64 << 10;

/// Groups `entries` (in offset order) into ranged reads: `(start, len, entries)`. Neighbours
/// share a read while it stays within [`READ_RUN`] bytes and the gap between them within
/// `max_gap`.
fn read_runs(entries: &[PackEntry], max_gap: u64) -> Vec<(u64, u64, &[PackEntry])> {
    let mut runs = Vec::new();
    let mut first = 0;
    for i in 1..=entries.len() {
        let (s, prev) = (&entries[first], &entries[i - 1]);
        let split = match entries.get(i) {
            None => true,
            Some(e) => {
                let end = e.offset as u64 + e.length as u64;
                let gap = (e.offset as u64).saturating_sub(prev.offset as u64 + prev.length as u64);
                gap > max_gap || end - s.offset as u64 > READ_RUN
            }
        };
        if split {
            let start = s.offset as u64;
            let end = prev.offset as u64 + prev.length as u64;
            runs.push((start, end - start, &entries[first..i]));
            first = i;
        }
    }
    runs
}

/// Opens and re-hashes `blobs` (each at its offset minus `base` in `bytes`), with `scratch`
/// as the decompression buffers. On the calling task, not a blocking thread: a run is at
/// most [`READ_RUN`] bytes (a millisecond or two of work), and every blocking thread that
/// checks blobs keeps a zstd decoder of its own — spread over the blocking pool, which
/// grows as reads and checks alternate, those decoders made the repack's memory grow pack
/// after pack (measured 2026-12-05, below).
fn check_run(
    repo: &Repository,
    pack: &PackId,
    bytes: &[u8],
    base: u64,
    blobs: &[PackEntry],
    scratch: &mut (Vec<u8>, Vec<u8>),
) -> Result<()> {
    let (body, piece) = scratch;
    for e in blobs {
        let at = (e.offset as u64 - base) as usize;
        let sealed = &bytes[at..at + e.length as usize];
        pack::check_blob(&repo.keys, repo.id(), e, sealed, body, piece).map_err(
            |err| match err {
                Error::Integrity { detail, .. } => {
                    Error::integrity(format!("pack {pack}"), format!("blob {}: {detail}", e.id))
                }
                other => other,
            },
        )?;
    }
    Ok(())
}

/// Reads `len` bytes at `start` of a pack; a shorter answer is damage, not a short read.
async fn read_range(
    repo: &Repository,
    pack: &PackId,
    start: u64,
    len: u64,
) -> Result<bytes::Bytes> {
    let bytes = repo.store.get_range(&pack_key(pack), start, len).await?;
    if bytes.len() as u64 != len {
        return Err(Error::integrity(
            format!("pack {pack}"),
            format!(
                "range {start}+{len} read back {} bytes (truncated?)",
                bytes.len()
            ),
        ));
    }
    Ok(bytes)
}

/// Copies the kept blobs of `repack` into new packs, a blob at a time, so that neither a whole
/// old pack nor a new pack read back is ever in memory: only the byte ranges of the kept
/// blobs are read from an old pack (a few neighbours per ranged read), each blob opened and
/// re-hashed before it is copied (sealed bytes as they are: a blob's seal binds the
/// repository, its type and id, not its pack). A new pack is stored as soon as the next blob
/// would overflow it, checked before it is stored and then read back from the store, range by
/// range, and verified blob by blob ([`store_verified`]).
async fn repack_packs(
    repo: &Repository,
    repack: &[&PackUse<'_>],
    r: &mut MarkReport,
    progress: &ProgressBar,
    cancel: &Cancel,
) -> Result<Vec<IndexPack>> {
    let pack_size = repo.config.pack_size as usize;
    let new_builder = || PackBuilder::with_capacity(pack_size + (pack_size >> 3));
    // Trees and file data into packs of their own, as a backup writes them (a pack of both,
    // from an older backup, is split): a walk of the snapshots reads the tree packs alone.
    let (mut data, mut trees) = (new_builder(), PackBuilder::default());
    let mut scratch = (Vec::new(), Vec::new());
    let mut out = Vec::new();
    for u in repack {
        let id = u.pack.id;
        let mut keep: Vec<PackEntry> = u.keep.iter().map(|b| entry_of(b)).collect();
        keep.sort_by_key(|e| e.offset);
        for (start, len, blobs) in read_runs(&keep, READ_GAP) {
            cancel.check()?;
            let bytes = read_range(repo, &id, start, len).await?;
            check_run(repo, &id, &bytes, start, blobs, &mut scratch).map_err(|e| match e {
                Error::Integrity { object, detail } => Error::Integrity {
                    object,
                    detail: format!("{detail}; prune stopped before condemning anything"),
                },
                other => other,
            })?;
            for e in blobs {
                // The new pack is stored before it would overflow, and the next one reuses
                // its buffer: one pack buffer of each kind at a time.
                let builder = match e.kind {
                    BlobKind::Tree => &mut trees,
                    BlobKind::Data => &mut data,
                };
                if !builder.is_empty() && builder.len() + e.length as usize > pack_size {
                    let full = std::mem::take(builder);
                    out.push(store_verified(repo, full, r, &mut scratch).await?);
                    *builder = new_builder();
                }
                let at = (e.offset as u64 - start) as usize;
                let sealed = &bytes[at..at + e.length as usize];
                let crc = crc32fast::hash(sealed);
                if !builder.push_verified(e.kind, e.id, e.raw_length, sealed, crc) {
                    return Err(Error::integrity(
                        format!("pack {id}"),
                        format!("blob {} changed in memory while it was copied", e.id),
                    ));
                }
                r.repacked_blobs += 1;
            }
        }
        progress.inc(u.pack.size);
    }
    for builder in [data, trees] {
        if !builder.is_empty() {
            out.push(store_verified(repo, builder, r, &mut scratch).await?);
        }
    }
    Ok(out)
}

/// Stores a new pack, then reads it back from the store a range at a time and verifies it:
/// every byte hashes to its name, the header lists exactly the blobs written, every blob opens
/// and re-hashes to its id.
async fn store_verified(
    repo: &Repository,
    builder: PackBuilder,
    r: &mut MarkReport,
    scratch: &mut (Vec<u8>, Vec<u8>),
) -> Result<IndexPack> {
    let finished = builder.finish(&repo.keys, repo.id());
    let stored = repo.store_pack(finished).await?;
    let id = stored.id;
    let bad = |detail: String| Error::integrity(format!("pack {id}"), detail);
    match repo.store.head(&pack_key(&id)).await? {
        Some(info) if info.size == stored.size => {}
        Some(info) => {
            return Err(bad(format!(
                "the repacked pack reads back as {} bytes, {} were stored",
                info.size, stored.size
            )))
        }
        None => {
            return Err(bad(
                "the repacked pack is not in the store after it was stored".into(),
            ))
        }
    }
    let want: Vec<PackEntry> = stored.blobs.iter().map(entry_of).collect();
    let mut name = blake3::Hasher::new();
    let mut blobs_end = 0u64;
    for (start, len, blobs) in read_runs(&want, 0) {
        if start != blobs_end {
            return Err(bad(format!("the index leaves a hole at byte {blobs_end}")));
        }
        let bytes = read_range(repo, &id, start, len).await?;
        name.update(&bytes);
        check_run(repo, &id, &bytes, start, blobs, scratch)?;
        blobs_end = start + len;
    }
    let tail = read_range(repo, &id, blobs_end, stored.size - blobs_end).await?;
    name.update(&tail);
    if PackId::from_hash(name.finalize()) != id {
        return Err(bad(
            "the repacked pack read back does not hash to its name".into()
        ));
    }
    let trailer = &tail[tail.len().saturating_sub(pack::TRAILER_LEN)..];
    let (off, len) = pack::header_range(&id, stored.size, trailer)?;
    if off != blobs_end {
        return Err(bad(
            "the repacked pack read back has its header elsewhere than after its blobs".into(),
        ));
    }
    let entries = pack::parse_header(&repo.keys, repo.id(), &id, &tail[..len as usize], off)?;
    if entries != want {
        return Err(bad(
            "the repacked pack read back does not hold the blobs written into it".into(),
        ));
    }
    r.new_packs += 1;
    r.new_bytes += stored.size;
    Ok(stored)
}

/// Every stored prune plan; one that vanished (a concurrent sweep) is skipped.
pub async fn list_plans(repo: &Repository) -> Result<Vec<(ObjectId, PrunePlan)>> {
    let ids = repo.list_ids(ObjectKind::PrunePlan).await?;
    let mut out = Vec::new();
    for id in ids {
        match repo
            .load_json::<PrunePlan>(ObjectKind::PrunePlan, &id)
            .await
        {
            Ok(p) => out.push((id, p)),
            Err(Error::Store(e)) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    out.sort_by_key(|(_, p)| p.created);
    Ok(out)
}

/// Phase 2. The caller holds an exclusive lock: no backup is running, and every backup that
/// ran since the plans were made has either committed its snapshot or never will.
///
/// `lock` is that lock: the lease is confirmed before the first change and checked between
/// steps and between batches of [`DELETE_BATCH`] pack deletions, so a prune that lost its
/// lease (stopped or starved past it; another host may have broken it and started a backup
/// that reuses a condemned pack) stops with exit 11 and keeps its plan for the next prune.
pub async fn sweep(
    repo: &Repository,
    grace: Duration,
    now: DateTime<Utc>,
    cancel: &Cancel,
    lock: &Lock,
) -> Result<SweepReport> {
    let mut r = SweepReport::default();
    let grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
    let (due, waiting): (Vec<_>, Vec<_>) = list_plans(repo)
        .await?
        .into_iter()
        .partition(|(_, p)| now.signed_duration_since(p.created) >= grace);
    r.plans_waiting = waiting.len();
    if due.is_empty() {
        return Ok(r);
    }
    let mut condemned: HashMap<PackId, u64> = HashMap::new();
    for (_, p) in &due {
        for c in &p.packs {
            condemned.insert(c.id, c.size);
        }
    }
    // A snapshot every due plan accounted for needs nothing condemned; any other one may.
    let mut accounted: Option<HashSet<SnapshotId>> = None;
    for (_, p) in &due {
        let s: HashSet<SnapshotId> = p.snapshots.iter().copied().collect();
        accounted = Some(match accounted {
            None => s,
            Some(a) => a.intersection(&s).copied().collect(),
        });
    }
    let accounted = accounted.unwrap_or_default();
    let known_files: HashSet<IndexId> = due
        .iter()
        .flat_map(|(_, p)| p.index_files.iter().copied())
        .collect();

    let snap_ids = repo.list_ids(ObjectKind::Snapshot).await?;
    let files = repo.load_index_files().await?;
    // A listing of index/ cut short (T10) could hide an index file that lists a doomed pack:
    // it would not be rewritten, and would name the pack after it is deleted. An index file
    // phase 1 read that the listing lacks is HEADed: gone is normal (a killed sweep deleted
    // it, a healing backup replaced it); still there means the listing is incomplete.
    let listed_files: HashSet<IndexId> = files.iter().map(|(id, _)| *id).collect();
    let mut unlisted: Vec<&IndexId> = known_files
        .iter()
        .filter(|id| !listed_files.contains(id))
        .collect();
    unlisted.sort();
    for id in unlisted {
        if repo.store.head(&ObjectKind::Index.key(id)).await?.is_some() {
            return Err(Error::integrity(
                format!("{} index/", repo.store.describe()),
                format!(
                    "prune refused, nothing was deleted: index file {id} exists but the \
                     listing of index/ left it out (an incomplete listing from the store must \
                     not decide what is deleted); the prune plan is kept — run prune again \
                     later"
                ),
            ));
        }
    }
    let new_ids: Vec<SnapshotId> = snap_ids
        .into_iter()
        .filter(|id| !accounted.contains(id))
        .collect();
    let new_snaps = load_snapshots(repo, new_ids).await?;
    r.new_snapshots = new_snaps.len();

    let mut rescued: HashSet<PackId> = HashSet::new();
    // A newer index file (a backup adopted a pack a killed sweep had already unindexed)
    // lists the pack again: leave it to a later prune.
    for (id, f) in &files {
        if known_files.contains(id) {
            continue;
        }
        for p in &f.packs {
            if condemned.contains_key(&p.id) {
                rescued.insert(p.id);
            }
        }
    }
    if !new_snaps.is_empty() {
        // Surviving packs first: the index answers with a blob's first location, so a blob
        // that a surviving pack holds is never attributed to a condemned one. (Built only
        // here: with no snapshot to walk, its blob map is not needed.)
        let mut index = Index::default();
        for (id, f) in &files {
            let keep = IndexFile {
                packs: f
                    .packs
                    .iter()
                    .filter(|p| !condemned.contains_key(&p.id))
                    .cloned()
                    .collect(),
            };
            index.add_file(*id, &keep);
        }
        for (_, f) in &files {
            for p in f.packs.iter().filter(|p| condemned.contains_key(&p.id)) {
                index.add_pack(p);
            }
        }
        let mut used = HashSet::new();
        let mut visited = HashSet::new();
        collect_used(
            repo,
            &index,
            new_snaps.iter().map(|(_, s)| s.tree),
            &mut used,
            &mut visited,
            cancel,
        )
        .await?;
        for b in &used {
            if let Some(loc) = index.get(b) {
                let pack = index.pack(loc.pack).0;
                if condemned.contains_key(&pack) {
                    rescued.insert(pack);
                }
            }
        }
    }
    r.rescued_packs = rescued.len();
    let doomed: HashSet<PackId> = condemned
        .keys()
        .filter(|p| !rescued.contains(p))
        .copied()
        .collect();
    cancel.check()?;
    crate::failpoint::stop("prune-before-delete");
    // The rescue check saw every snapshot committed before this point; a lease lost during
    // it (or since) may have let a backup commit one it did not see.
    lock.confirm().await.map_err(stopped)?;

    // 1. Replacement index files without the doomed packs, 2. the old files go: until both
    // are done the index lists a pack twice at worst, never a deleted one.
    let stale: Vec<&(IndexId, IndexFile)> = files
        .iter()
        .filter(|(_, f)| f.packs.iter().any(|p| doomed.contains(&p.id)))
        .collect();
    for (_, f) in &stale {
        let packs: Vec<IndexPack> = f
            .packs
            .iter()
            .filter(|p| !doomed.contains(&p.id))
            .cloned()
            .collect();
        if !packs.is_empty() {
            repo.save_index(packs).await?;
        }
    }
    crate::failpoint::crash("prune-after-new-index");
    lock.check().map_err(stopped)?;
    stream::iter(stale.iter().map(|(id, _)| ObjectKind::Index.key(id)))
        .map(|key| async move { delete_if_there(repo, &key).await })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    r.index_files_rewritten = stale.len();
    // 3. The packs: nothing lists them any more. A store that refuses the delete (Object
    // Lock: the pack's retention has not lapsed) keeps the pack; it is indexed again so it
    // stays accounted for, and a later prune retries once the lock lapses.
    let sizes: Vec<(PackId, u64)> = doomed.iter().map(|p| (*p, condemned[p])).collect();
    let mut results: Vec<(PackId, u64, Result<()>)> = Vec::new();
    for batch in sizes.chunks(DELETE_BATCH) {
        if let Err(e) = lock.check().map_err(stopped) {
            // What this run deleted is gone from the index already; the plan stays.
            tracing::warn!(
                deleted = results.len(),
                left = sizes.len() - results.len(),
                "prune lost its lease between pack deletions"
            );
            return Err(e);
        }
        results.extend(
            stream::iter(batch.iter())
                .map(|(p, size)| async move {
                    let res = purge(repo, &pack_key(p)).await;
                    crate::failpoint::crash("prune-mid-delete");
                    (*p, *size, res)
                })
                .buffer_unordered(CONCURRENCY)
                .collect::<Vec<_>>()
                .await,
        );
        crate::failpoint::stop("prune-between-delete-batches");
    }
    let mut locked: Vec<PackId> = Vec::new();
    let mut dates: Vec<(String, DateTime<Utc>)> = Vec::new();
    for (p, size, res) in results {
        match res {
            Ok(()) => {
                r.deleted_packs += 1;
                r.freed_bytes += size;
            }
            Err(Error::Store(StoreError::Locked { until, .. })) => {
                tracing::info!(pack = %p, until = ?until, "pack still under Object Lock retention; kept, a later prune deletes it");
                locked.push(p);
                r.locked_packs += 1;
                r.locked_bytes += size;
                if let Some(t) = until {
                    r.locked_lapse = Some(r.locked_lapse.map_or(t, |l| l.min(t)));
                    dates.push((pack_key(&p), t));
                }
            }
            Err(e) => return Err(e),
        }
    }
    if !locked.is_empty() {
        let mut seen = HashSet::new();
        let again: Vec<IndexPack> = files
            .iter()
            .flat_map(|(_, f)| f.packs.iter())
            .filter(|p| locked.contains(&p.id) && seen.insert(p.id))
            .cloned()
            .collect();
        repo.save_index(again).await?;
        // The next mark skips them until their date instead of condemning them again.
        super::object_lock::remember(repo, &dates).await?;
    }
    // 4. The plans: done.
    lock.check().map_err(stopped)?;
    for (id, _) in &due {
        delete_if_there(repo, &ObjectKind::PrunePlan.key(id)).await?;
    }
    r.plans = due.len();
    Ok(r)
}

/// Removes a pack for good (every version, on a bucket with Object Lock); a missing one is
/// fine.
async fn purge(repo: &Repository, key: &str) -> Result<()> {
    match repo.store.purge(key).await {
        Ok(()) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// A lost lease, said as prune's: it stopped where it was and kept its plan.
fn stopped(e: Error) -> Error {
    match e {
        Error::LockLost { location, .. } => Error::LockLost {
            location,
            detail: "the lease expired or was removed by another process; prune stopped before deleting more, its plan is kept and the next prune finishes it".into(),
        },
        e => e,
    }
}

async fn delete_if_there(repo: &Repository, key: &str) -> Result<()> {
    match repo.store.delete(key).await {
        Ok(()) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::{choose_repack, choose_small, read_runs, READ_RUN};
    use crate::ids::BlobId;
    use crate::repo::pack::{BlobKind, PackEntry};

    fn blob(offset: u32, length: u32) -> PackEntry {
        PackEntry {
            kind: BlobKind::Data,
            id: BlobId([offset as u8; 32]),
            offset,
            length,
            raw_length: length,
        }
    }

    #[test]
    fn repack_reads_neighbours_together_within_the_run_and_gap_limits() {
        let k = 1024u32;
        let e = [
            blob(0, 100 * k),
            blob(100 * k, 100 * k), // adjacent: same read
            blob(250 * k, 10 * k),  // 50 KiB gap: same read (within 64 KiB)
            blob(400 * k, 10 * k),  // 140 KiB gap: a new read
            blob(410 * k, 600 * k), // would make the read 610 KiB > 512 KiB: alone
            blob(1010 * k, k),
        ];
        let runs: Vec<(u64, u64, usize)> = read_runs(&e, 64 << 10)
            .into_iter()
            .map(|(s, l, b)| (s, l, b.len()))
            .collect();
        let k = k as u64;
        assert_eq!(
            runs,
            vec![
                (0, 260 * k, 3),
                (400 * k, 10 * k, 1),
                (410 * k, 600 * k, 1),
                (1010 * k, k, 1)
            ]
        );
        // Every read is at most READ_RUN unless one blob alone is larger.
        assert!(runs.iter().all(|(_, l, n)| *l <= READ_RUN || *n == 1));
        // Gap 0 (the read-back of a new pack): contiguous blobs only.
        assert_eq!(read_runs(&e[..2], 0).len(), 1);
        assert_eq!(read_runs(&e[1..3], 0).len(), 2);
        assert!(read_runs(&[], 0).is_empty());
    }

    #[test]
    fn max_unused_is_measured_against_used_blob_bytes_highest_share_first() {
        // 1000 used bytes at 5 %: at most 52 unused bytes may stay (5/95 of the used bytes).
        // Two partly used packs: 30 unused of 60 (50 %) and 40 unused of 400 (10 %). 70 > 52:
        // the pack with the higher share goes first, and then 40 left is within the limit.
        let (chosen, left) = choose_repack(&[(40, 400), (30, 60)], 1000, 0.05);
        assert_eq!(chosen, vec![1]);
        assert_eq!(left, 40);
        // 500 used bytes allow 26 unused: after the first pack 40 are still too many.
        let (chosen, left) = choose_repack(&[(40, 400), (30, 60)], 500, 0.05);
        assert_eq!((chosen.len(), left), (2, 0));
        // 0 %: every partly used pack; 100 %: none.
        assert_eq!(choose_repack(&[(1, 10), (2, 10)], 10, 0.0).0.len(), 2);
        assert!(choose_repack(&[(9, 10), (2, 10)], 10, 1.0).0.is_empty());
    }

    #[test]
    fn small_packs_are_merged_by_kind_only_when_they_make_fewer_packs() {
        const MIB: u64 = 1 << 20;
        let ps = 8 * MIB;
        let tree = |size| (size, size, 0);
        let data = |size| (size, 0, size);
        // Nine tiny tree packs: too few for the default; with --repack-small they merge.
        let nine: Vec<_> = (0..9).map(|_| tree(4 << 10)).collect();
        assert!(choose_small(&nine, ps, false).is_empty());
        assert_eq!(choose_small(&nine, ps, true), (0..9).collect::<Vec<_>>());
        // Ten of them merge by default; ten data packs of 1 MiB are not small by default
        // (over 1/25 of the pack size) but are under --repack-small (10 MiB in 2 packs < 10).
        let mut mixed: Vec<_> = (0..10).map(|_| tree(4 << 10)).collect();
        mixed.extend((0..10).map(|_| data(MIB)));
        assert_eq!(choose_small(&mixed, ps, false), (0..10).collect::<Vec<_>>());
        assert_eq!(choose_small(&mixed, ps, true), (0..20).collect::<Vec<_>>());
        // One small pack of each kind: merging cannot make fewer packs.
        assert!(choose_small(&[tree(4 << 10), data(4 << 10)], ps, true).is_empty());
        // Nearly full packs (a repack's output) stay: 3 × 6 MiB needs 3 packs again, so it
        // converges instead of copying the same packs at every prune; two of them and a small
        // one fit into two.
        let nearly: Vec<_> = (0..3).map(|_| data(6 * MIB)).collect();
        assert!(choose_small(&nearly, ps, true).is_empty());
        let fits = [data(6 * MIB), data(MIB), data(MIB)];
        assert_eq!(choose_small(&fits, ps, true), vec![0, 1, 2]);
        // Full packs are never small; a pack of both kinds is split: 10 such packs of
        // 100 KiB trees + 100 KiB data (200 KiB < 1/25 of 8 MiB) become one of each.
        assert!(choose_small(&[data(ps), data(ps)], ps, true).is_empty());
        let both: Vec<_> = (0..10).map(|_| (200 << 10, 100 << 10, 100 << 10)).collect();
        assert_eq!(choose_small(&both, ps, false).len(), 10);
    }
}
