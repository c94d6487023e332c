//! Restore: snapshot → files. Blobs are fetched pack by pack (a whole pack when most of it
//! is needed, ranges otherwise), several packs at once, and every blob is decrypted,
//! decompressed and re-hashed before a byte of it is written (corrupt data never reaches the
//! target). Everything is written into a staging directory inside the target and moved into
//! place only when the whole snapshot restored; on any failure the staging directory is
//! removed, so the target never holds a half-restored tree.
//!
//! [`single`] streams one file of a snapshot (a dump, a block image) to a writer or into a
//! sparse file; [`database`] loads dump snapshots into a PostgreSQL or MariaDB server.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use indicatif::ProgressBar;

use crate::direct;
use crate::ids::{BlobId, PackId};
use crate::repo::index::Index;
use crate::repo::pack::{self, PackEntry};
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::{Node, NodeKind};
use crate::repo::Repository;
use crate::store::Backend;
use crate::sys::Cancel;
use crate::{Error, Result};

pub mod database;
mod fetch;
pub mod floor;
pub mod single;

pub use single::{restore_sparse, restore_stream};

const STAGING_PREFIX: &str = ".lifeboat-restore-";
/// How a restore from a local store spreads its work. Where most of the bytes are in large
/// files (a dump, an image): one pack per core decoding (two at least, eight at most) and
/// one writer thread putting their whole blocks on the disk behind them
/// (`direct::WriteBehind`), so no core waits for the device. Where most are in small files:
/// one pack more than cores, each task writing its own files — their creation and
/// metadata wait in the file system, not on a core or the device's bandwidth. Measured on 2
/// cores (docs/benchmarks.md, 2026-12-05): the 1 GiB dump 0.84 s this way against 1.00 s
/// with three packs and no writer thread, the same peak memory (three packs with the
/// writer: 14 MiB more); the 1 GiB tree was no faster with the writer thread and held
/// 5 MiB more.
fn local_layout(files: &[FileEntry]) -> (usize, bool) {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, direct::MAX_DECODERS);
    let (mut large, mut small) = (0u64, 0u64);
    for f in files {
        if f.node.content.len() > 1 {
            large += f.node.size;
        } else {
            small += f.node.size;
        }
    }
    if small > large {
        (cores + 1, false)
    } else {
        (cores, true)
    }
}

/// Bytes fetched from a remote store (S3) that a restore holds at once, being downloaded,
/// decoded or written: its memory bound.
pub const REMOTE_BYTES_IN_FLIGHT: u64 = 96 << 20;
/// Pack tasks that may wait for room in that budget.
const REMOTE_TASKS: usize = 64;

/// How many whole packs of `pack_size` bytes a restore from a remote store fetches at once
/// (the S3 read floor of `scripts/bench-s3` uses the same number).
pub fn remote_packs_in_flight(pack_size: u64) -> usize {
    (REMOTE_BYTES_IN_FLIGHT / pack_size.max(1 << 20)).max(1) as usize
}

/// Bytes one pack's fetch brings in: the whole pack, or its coalesced ranges.
fn fetch_bytes(entries: &[PackEntry], pack_size: u64) -> u64 {
    match fetch::plan_ranges(entries, pack_size) {
        None => pack_size,
        Some(r) => r.iter().map(|(_, l)| l).sum(),
    }
}
/// Trees fetched at once while walking a snapshot.
const TREE_CONCURRENCY: usize = 16;

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RestoreReport {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub bytes: u64,
    pub duration_secs: f64,
    /// Blobs or packs read from another region after failing in the chosen one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fallback_reads: Vec<String>,
}

struct FileEntry {
    path: PathBuf,
    node: Node,
}

/// Where each blob goes: (file index, offset).
type Dests = Vec<(usize, u64)>;

/// Where a restore's time goes, summed over the tasks and threads doing it (so a sum can
/// exceed the wall time), logged at debug level (`RUST_LOG=lifeboat=debug`) when the restore
/// ends: the benchmarks' way to tell waiting on reads from decoding from file creation.
#[derive(Debug, Default)]
struct Phases {
    /// Pack tasks waiting for their reads (whole packs or ranges, hedges included).
    fetch_ns: AtomicU64,
    /// Decrypt + decompress + re-hash of blobs.
    decode_ns: AtomicU64,
    /// Writing: file creation, writes, holes and metadata of one-blob files.
    write_ns: AtomicU64,
    /// Blocking writer threads waiting for a free core after their pack arrived.
    queue_ns: AtomicU64,
    /// Contiguous ranges of multi-blob files written, the direct writes of their whole
    /// blocks, and the page-cache writes (partial blocks at range ends) with their bytes.
    ranges: AtomicU64,
    direct_writes: AtomicU64,
    buffered_writes: AtomicU64,
    buffered_bytes: AtomicU64,
}

impl Phases {
    fn add(counter: &AtomicU64, since: Instant) -> Instant {
        let now = Instant::now();
        counter.fetch_add((now - since).as_nanos() as u64, Ordering::Relaxed);
        now
    }

    fn secs(counter: &AtomicU64) -> f64 {
        counter.load(Ordering::Relaxed) as f64 / 1e9
    }
}

/// Restores `snapshot` into `target`, which must be missing or empty.
pub async fn restore(
    repo: &Repository,
    index: Arc<Index>,
    snapshot: &Snapshot,
    target: &Path,
    progress: ProgressBar,
    cancel: Cancel,
) -> Result<RestoreReport> {
    let clock = Instant::now();
    let created_target = prepare_target(target)?;
    let staging = target.join(format!(
        "{STAGING_PREFIX}{}",
        hex::encode(rand::random::<[u8; 6]>())
    ));
    std::fs::create_dir(&staging).map_err(|e| Error::io("create", &staging, e))?;
    let result = restore_into(repo, index, snapshot, &staging, target, progress, cancel).await;
    match result {
        Ok(mut report) => {
            let _ = std::fs::remove_dir(&staging);
            report.duration_secs = clock.elapsed().as_secs_f64();
            report.fallback_reads = repo.fallback_reads();
            Ok(report)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            if created_target {
                let _ = std::fs::remove_dir(target);
            }
            Err(e)
        }
    }
}

/// Returns whether the target was created here.
fn prepare_target(target: &Path) -> Result<bool> {
    match std::fs::read_dir(target) {
        Ok(mut rd) => {
            if rd.next().is_some() {
                return Err(Error::Usage(format!(
                    "restore target {} is not empty; choose a new or empty directory",
                    target.display()
                )));
            }
            Ok(false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(target).map_err(|e| Error::io("create", target, e))?;
            Ok(true)
        }
        Err(e) => Err(Error::io("open", target, e)),
    }
}

fn check_name(node: &Node) -> Result<()> {
    let name = node.name_bytes();
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return Err(Error::integrity(
            "tree",
            format!("invalid entry name {:?}", node.name),
        ));
    }
    Ok(())
}

async fn restore_into(
    repo: &Repository,
    index: Arc<Index>,
    snapshot: &Snapshot,
    staging: &Path,
    target: &Path,
    progress: ProgressBar,
    cancel: Cancel,
) -> Result<RestoreReport> {
    let mut report = RestoreReport::default();
    let hedge = Arc::new(fetch::Hedge::default());
    let phases = Arc::new(Phases::default());
    let t_walk = Instant::now();
    // 1. Walk the trees: directories, files, links.
    let mut dirs: Vec<(PathBuf, Node)> = Vec::new();
    let mut files: Vec<FileEntry> = Vec::new();
    let mut symlinks: Vec<(PathBuf, Node)> = Vec::new();
    let mut hardlinks: Vec<(PathBuf, usize)> = Vec::new();
    let mut first_link: HashMap<(u64, u64), usize> = HashMap::new();
    // Level by level, the trees of one level fetched concurrently: on a remote store each
    // tree is a round trip, and one at a time makes restore latency-bound. From a remote
    // store, every tree of a pack is fetched the first time one of them is needed (ranged
    // reads of that pack's trees, see `TreePrefetch`): the levels below mostly find their
    // trees in memory, so the walk costs a round trip per pack of trees, not per level.
    let remote = repo.store.backend() != Backend::Local;
    let mut prefetch = remote.then(|| TreePrefetch::new(&index));
    let mut stack = vec![(PathBuf::new(), snapshot.tree)];
    while !stack.is_empty() {
        cancel.check()?;
        if let Some(pf) = prefetch.as_mut() {
            pf.fetch(repo, &hedge, &index, stack.iter().map(|(_, id)| id))
                .await?;
        }
        let cached: Vec<Option<Bytes>> = stack
            .iter()
            .map(|(_, id)| prefetch.as_mut().and_then(|pf| pf.take(id)))
            .collect();
        let level: Vec<(PathBuf, BlobId, crate::repo::tree::Tree)> =
            stream::iter(std::mem::take(&mut stack).into_iter().zip(cached))
                .map(|((rel, tree_id), sealed)| {
                    let (index, hedge) = (&index, &hedge);
                    async move {
                        let prefetched = sealed.and_then(|b| open_tree(repo, index, &tree_id, &b));
                        let tree = match prefetched {
                            Some(t) => t,
                            None => load_tree(repo, hedge, index, &tree_id).await?,
                        };
                        Ok::<_, Error>((rel, tree_id, tree))
                    }
                })
                .buffered(TREE_CONCURRENCY)
                .try_collect()
                .await?;
        for (rel, tree_id, tree) in level {
            for node in tree.nodes {
                check_name(&node)?;
                let path = rel.join(node.os_name());
                match node.kind {
                    NodeKind::Dir => {
                        let sub = node.subtree.ok_or_else(|| {
                            Error::integrity(format!("tree {tree_id}"), "directory without subtree")
                        })?;
                        stack.push((path.clone(), sub));
                        dirs.push((path, node));
                    }
                    NodeKind::File => {
                        if node.links > 1 && node.inode != 0 {
                            if let Some(&first) = first_link.get(&(node.device, node.inode)) {
                                hardlinks.push((path, first));
                                continue;
                            }
                            first_link.insert((node.device, node.inode), files.len());
                        }
                        files.push(FileEntry { path, node });
                    }
                    NodeKind::Symlink => symlinks.push((path, node)),
                }
            }
        }
    }

    let tree_gets = prefetch.map_or(0, |pf| pf.packs_read);
    let t_create = Instant::now();
    // 2. Create directories and empty files of the right length.
    for (rel, _) in &dirs {
        let p = staging.join(rel);
        std::fs::create_dir_all(&p).map_err(|e| Error::io("create", &p, e))?;
    }
    // A file of exactly one blob (most small files) is created, written and given its
    // metadata in one go by the worker that holds the blob: one path lookup and a handful of
    // syscalls on the open descriptor. Empty and multi-blob files are created here at their
    // final length and written positionally.
    let mut plan: HashMap<u32, HashMap<BlobId, (PackEntry, Dests)>> = HashMap::new();
    let mut total = 0u64;
    // Long runs of zeros (sparse files: VM images, database files) are chunked at the
    // maximum chunk size, so they are blobs of that size whose id is the keyed hash of
    // zeros: those are left as holes, neither fetched nor written, and such a file is not
    // preallocated — restored, it takes no more room than its data needs.
    let zero_len = repo.config.chunker.max_size;
    // Hashed on the first blob of that length: most restores have none.
    let mut zero_id: Option<BlobId> = None;
    let mut holes = 0u64;
    for (i, f) in files.iter().enumerate() {
        let p = staging.join(&f.path);
        let file = if f.node.content.len() == 1 {
            None
        } else {
            Some(std::fs::File::create(&p).map_err(|e| Error::io("create", &p, e))?)
        };
        let mut offset = 0u64;
        let mut sparse = false;
        for id in &f.node.content {
            let loc = index.get(id).ok_or_else(|| {
                Error::integrity(
                    format!("blob {id}"),
                    format!("needed by {} but missing from the index", f.path.display()),
                )
            })?;
            let zeros = file.is_some()
                && loc.entry.raw_length == zero_len
                && *id
                    == *zero_id
                        .get_or_insert_with(|| repo.keys.blob_id(&vec![0u8; zero_len as usize]));
            if zeros {
                offset += zero_len as u64;
                holes += zero_len as u64;
                sparse = true;
                continue;
            }
            plan.entry(loc.pack)
                .or_default()
                .entry(*id)
                .or_insert_with(|| (loc.entry, Vec::new()))
                .1
                .push((i, offset));
            offset += loc.entry.raw_length as u64;
        }
        match file {
            Some(file) if sparse => file.set_len(offset),
            Some(file) => direct::preallocate(&file, offset),
            None => Ok(()),
        }
        .map_err(|e| Error::io("allocate", &p, e))?;
        total += offset;
    }
    progress.set_length(total);
    progress.inc(holes);
    let t_data = Instant::now();

    // 3. Fetch, verify and write, several packs at once. The first failure stops the others,
    // but every pack task — and the blocking writer inside it — is awaited before the error
    // is returned: the caller removes the staging directory next, and a writer still running
    // then would leave a half-restored tree behind it (and the retry a "not empty" target).
    let files = Arc::new(files);
    let staging_arc: Arc<Path> = Arc::from(staging);
    let stop = Cancel::new();
    let first_error: std::sync::Mutex<Option<Error>> = std::sync::Mutex::new(None);
    // A local store: a few packs at once (the disk and the cores are the limit). A remote
    // one: as many packs as fit in a budget of bytes in flight — fetched, or fetched and
    // being decoded and written — so the downloads of some overlap the decoding of others
    // and memory stays bounded whatever the pack size. Requests themselves are capped by the
    // store's adaptive limit (`store::retry`: halved on throttling), as for writes.
    let budget = Arc::new(tokio::sync::Semaphore::new(if remote {
        (REMOTE_BYTES_IN_FLIGHT >> 20) as usize
    } else {
        tokio::sync::Semaphore::MAX_PERMITS
    }));
    // From a remote store, a dozen packs decode and write at once while others download,
    // and the network is the limit: a writer thread bought no time there (512 MiB dump from
    // Garage, 0.80 s either way) and cost ~10 MiB of peak memory.
    let (tasks, write_behind) = if remote {
        (REMOTE_TASKS, false)
    } else {
        local_layout(&files)
    };
    let behind = if write_behind {
        Some(Arc::new(direct::WriteBehind::start().map_err(|e| {
            Error::Other(format!("cannot start the restore's writer thread: {e}"))
        })?))
    } else {
        None
    };
    let written: u64 = stream::iter(plan)
        .map(|(pos, blobs)| {
            let (repo, index, files, staging, progress, cancel, stop, budget, hedge, phases) = (
                repo.clone(),
                index.clone(),
                files.clone(),
                staging_arc.clone(),
                progress.clone(),
                cancel.clone(),
                stop.clone(),
                budget.clone(),
                hedge.clone(),
                phases.clone(),
            );
            let behind = behind.clone();
            let first_error = &first_error;
            async move {
                if stop.is_cancelled() {
                    return 0;
                }
                let halt = Halt {
                    cancel: cancel.clone(),
                    stop: stop.clone(),
                };
                let res = match cancel.check() {
                    Ok(()) => {
                        let (pack, size) = index.pack(pos);
                        let entries: Vec<PackEntry> = blobs.values().map(|(e, _)| *e).collect();
                        let mib = fetch_bytes(&entries, size).div_ceil(1 << 20).max(1);
                        let _held = budget
                            .acquire_many(mib.min(REMOTE_BYTES_IN_FLIGHT >> 20) as u32)
                            .await
                            .expect("the budget is never closed");
                        restore_pack(
                            &repo, &hedge, pack, size, blobs, files, staging, progress, halt,
                            &phases, &behind,
                        )
                        .await
                    }
                    Err(e) => Err(e),
                };
                match res {
                    Ok(n) => n,
                    Err(e) => {
                        // Errors of packs stopped because another failed are not the cause.
                        if !stop.is_cancelled() {
                            first_error.lock().expect("error slot").get_or_insert(e);
                        }
                        stop.cancel();
                        0
                    }
                }
            }
        })
        .buffer_unordered(tasks)
        .fold(0u64, |acc, n| async move { acc + n })
        .await;
    // Every block queued is on the disk (or the first write that failed is known) before
    // the metadata is set or the staging directory is moved — or removed.
    let writes = {
        let behind = behind.clone();
        tokio::task::spawn_blocking(move || behind.map_or(Ok(()), |b| b.close()))
            .await
            .map_err(|e| Error::Other(format!("restore writer failed: {e}")))?
    };
    let write_busy_s = behind.as_ref().map_or(0.0, |b| b.busy_secs());
    if let Some(e) = first_error.into_inner().expect("error slot") {
        return Err(e);
    }
    writes.map_err(|(path, e)| Error::io("write", path, e))?;
    report.bytes = written + holes;
    cancel.check()?;
    let t_meta = Instant::now();

    // 4. Metadata: files, links, symlinks, then directories deepest first.
    let root = is_root();
    for f in files.iter() {
        if f.node.content.len() != 1 {
            set_meta(&staging.join(&f.path), &f.node, root)?;
        }
        report.files += 1;
    }
    for (rel, first) in &hardlinks {
        let (src, dst) = (staging.join(&files[*first].path), staging.join(rel));
        std::fs::hard_link(&src, &dst).map_err(|e| Error::io("link", &dst, e))?;
        report.hardlinks += 1;
    }
    for (rel, node) in &symlinks {
        let p = staging.join(rel);
        let t = node.os_target().unwrap_or_default();
        std::os::unix::fs::symlink(t, &p).map_err(|e| Error::io("symlink", &p, e))?;
        if root {
            let _ = std::os::unix::fs::lchown(&p, Some(node.uid), Some(node.gid));
        }
        let mt = filetime::FileTime::from_unix_time(
            node.mtime_ns.div_euclid(1_000_000_000),
            node.mtime_ns.rem_euclid(1_000_000_000) as u32,
        );
        let _ = filetime::set_symlink_file_times(&p, mt, mt);
        report.symlinks += 1;
    }
    dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    for (rel, node) in &dirs {
        set_meta(&staging.join(rel), node, root)?;
        report.dirs += 1;
    }

    let t_move = Instant::now();
    // 5. Move into place.
    for entry in std::fs::read_dir(staging).map_err(|e| Error::io("read", staging, e))? {
        let entry = entry.map_err(|e| Error::io("read", staging, e))?;
        let dst = target.join(entry.file_name());
        std::fs::rename(entry.path(), &dst).map_err(|e| Error::io("move", &dst, e))?;
    }
    progress.finish_and_clear();
    tracing::debug!(
        walk_s = (t_create - t_walk).as_secs_f64(),
        create_s = (t_data - t_create).as_secs_f64(),
        data_s = (t_meta - t_data).as_secs_f64(),
        meta_s = (t_move - t_meta).as_secs_f64(),
        move_s = t_move.elapsed().as_secs_f64(),
        fetch_wait_s = Phases::secs(&phases.fetch_ns),
        writer_queue_s = Phases::secs(&phases.queue_ns),
        decode_s = Phases::secs(&phases.decode_ns),
        write_s = Phases::secs(&phases.write_ns),
        write_behind_s = write_busy_s,
        files = files.len(),
        ranges = phases.ranges.load(Ordering::Relaxed),
        direct_writes = phases.direct_writes.load(Ordering::Relaxed),
        buffered_writes = phases.buffered_writes.load(Ordering::Relaxed),
        buffered_bytes = phases.buffered_bytes.load(Ordering::Relaxed),
        tree_packs_prefetched = tree_gets,
        "restore phases (walls of each stage; fetch, queue, decode and write summed over tasks and threads; write_behind: the writer thread's busy time)"
    );
    Ok(report)
}

/// The trees of the packs a remote restore's walk has touched, sealed, until the walk takes
/// them: when a level needs a tree whose pack has not been read yet, every tree blob the
/// index places in that pack is fetched at once (ranged reads, [`fetch::TREES`], hedged like
/// the packs). A backup puts trees into packs of their own (`crate::pipeline`), so the
/// first level reads the snapshot's tree pack whole and the levels below find their trees
/// here: one round trip for the walk of the 7 871-file benchmark tree (0.015 s from Garage,
/// against 0.25 s when its trees lay between file data in all 32 packs — backups written
/// before trees had packs of their own are still read that way, by ranges per level).
/// Memory: the trees of those packs (other snapshots' among them), held only for the walk,
/// and the index's tree entries grouped by pack.
struct TreePrefetch {
    /// Tree blobs of each pack (by pack position), from the index.
    by_pack: HashMap<u32, Vec<PackEntry>>,
    /// Packs whose trees were fetched (or tried).
    done: std::collections::HashSet<u32>,
    sealed: HashMap<BlobId, Bytes>,
    packs_read: u64,
}

impl TreePrefetch {
    fn new(index: &Index) -> Self {
        let mut by_pack: HashMap<u32, Vec<PackEntry>> = HashMap::new();
        for id in index.blob_ids() {
            let loc = index.get(id).expect("listed by the index");
            if loc.entry.kind == pack::BlobKind::Tree {
                by_pack.entry(loc.pack).or_default().push(loc.entry);
            }
        }
        TreePrefetch {
            by_pack,
            done: Default::default(),
            sealed: HashMap::new(),
            packs_read: 0,
        }
    }

    /// Fetches the trees of every pack holding one of `ids` not read yet. A pack that fails
    /// to read is left out: its trees are then read one by one by [`load_tree`], which
    /// tries the other regions and names the error.
    async fn fetch(
        &mut self,
        repo: &Repository,
        hedge: &Arc<fetch::Hedge>,
        index: &Index,
        ids: impl Iterator<Item = &BlobId>,
    ) -> Result<()> {
        let mut packs = Vec::new();
        for id in ids {
            if self.sealed.contains_key(id) {
                continue;
            }
            if let Some(loc) = index.get(id) {
                if self.done.insert(loc.pack) {
                    packs.push(loc.pack);
                }
            }
        }
        let by_pack = &self.by_pack;
        let got: Vec<_> = stream::iter(packs)
            .map(|pos| async move {
                let (pack, size) = index.pack(pos);
                let entries = by_pack.get(&pos).map(Vec::as_slice).unwrap_or_default();
                let r = fetch::fetch_hedged(fetch::TREES, repo, hedge, pack, size, entries).await;
                (pack, entries, r)
            })
            .buffer_unordered(TREE_CONCURRENCY)
            .collect()
            .await;
        for (pack, entries, r) in got {
            match r {
                Ok((parts, source)) => {
                    self.packs_read += 1;
                    if let Some(name) = source {
                        repo.note_fallback(format!(
                            "trees of pack {pack}: read from region {name} because {} had not answered within the hedge delay (hedged read)",
                            repo.store.describe()
                        ));
                    }
                    for (e, b) in entries.iter().zip(parts) {
                        self.sealed.insert(e.id, b);
                    }
                }
                Err(e @ Error::Interrupted) => return Err(e),
                Err(e) => {
                    tracing::debug!(%pack, error = %e, "prefetching the trees of a pack failed; reading them one by one")
                }
            }
        }
        Ok(())
    }

    /// The sealed tree `id`, if prefetched (handed out once: a tree met again is read again).
    fn take(&mut self, id: &BlobId) -> Option<Bytes> {
        self.sealed.remove(id)
    }
}

/// A prefetched tree, authenticated, decompressed, re-hashed and parsed; `None` when any of
/// that fails (the caller reads it again the usual way, which names the error).
fn open_tree(
    repo: &Repository,
    index: &Index,
    id: &BlobId,
    sealed: &[u8],
) -> Option<crate::repo::tree::Tree> {
    let loc = index.get(id)?;
    let raw = pack::open_blob(&repo.keys, repo.id(), &loc.entry, sealed).ok()?;
    serde_json::from_slice(&raw).ok()
}

/// A tree of the snapshot, read hedged like the packs (`fetch::fetch_hedged`) when there
/// is a fallback region; when that fails, read again the usual way (the chosen region, then
/// each fallback).
async fn load_tree(
    repo: &Repository,
    hedge: &Arc<fetch::Hedge>,
    index: &Index,
    id: &BlobId,
) -> Result<crate::repo::tree::Tree> {
    let Some(loc) = index.get(id).filter(|_| !repo.fallbacks().is_empty()) else {
        return repo.load_tree(index, id).await;
    };
    let (pack, size) = index.pack(loc.pack);
    match fetch::fetch_hedged(fetch::DATA, repo, hedge, pack, size, &[loc.entry]).await {
        Ok((sealed, source)) => {
            if let Ok(raw) = pack::open_blob(&repo.keys, repo.id(), &loc.entry, &sealed[0]) {
                if let Some(name) = source {
                    repo.note_fallback(format!(
                        "tree {id}: read from region {name} because {} had not answered within the hedge delay (hedged read)",
                        repo.store.describe()
                    ));
                }
                return serde_json::from_slice(&raw).map_err(|e| {
                    Error::integrity(format!("tree {id}"), format!("malformed: {e}"))
                });
            }
        }
        Err(e @ Error::Interrupted) => return Err(e),
        Err(_) => {}
    }
    repo.load_tree(index, id).await
}

/// Why a pack's writer stops early: the run was cancelled, or another pack failed.
#[derive(Clone)]
struct Halt {
    cancel: Cancel,
    stop: Cancel,
}

impl Halt {
    fn check(&self) -> Result<()> {
        // Interrupted, so no fallback region is tried for a pack stopped this way.
        if self.stop.is_cancelled() {
            return Err(Error::Interrupted);
        }
        self.cancel.check()
    }
}

/// Restores the blobs of one pack. The read is hedged with another region when the chosen
/// one is slow (`fetch::fetch_hedged`, `--allow-fallback`); when the pack fails to read or
/// verify and the repository has fallback regions, it is read again from each in turn
/// (writes are positional, so blobs written from the bad copy are simply overwritten).
#[allow(clippy::too_many_arguments)]
async fn restore_pack(
    repo: &Repository,
    hedge: &Arc<fetch::Hedge>,
    pack: PackId,
    size: u64,
    blobs: HashMap<BlobId, (PackEntry, Dests)>,
    files: Arc<Vec<FileEntry>>,
    staging: Arc<Path>,
    progress: ProgressBar,
    halt: Halt,
    phases: &Arc<Phases>,
    behind: &Option<Arc<direct::WriteBehind>>,
) -> Result<u64> {
    let blobs: Vec<(PackEntry, Dests)> = blobs.into_values().collect();
    let entries: Vec<PackEntry> = blobs.iter().map(|(e, _)| *e).collect();
    let first = async {
        let t0 = Instant::now();
        let (sealed, source) =
            fetch::fetch_hedged(fetch::DATA, repo, hedge, pack, size, &entries).await?;
        Phases::add(&phases.fetch_ns, t0);
        let n = write_pack(
            repo,
            pack,
            zip_parts(&blobs, sealed),
            files.clone(),
            staging.clone(),
            progress.clone(),
            halt.clone(),
            phases.clone(),
            behind.clone(),
        )
        .await?;
        if let Some(name) = source {
            repo.note_fallback(format!(
                "pack {pack}: read from region {name} because {} had not answered within the hedge delay (hedged read)",
                repo.store.describe()
            ));
        }
        Ok::<u64, Error>(n)
    }
    .await;
    let first = match first {
        Ok(n) => return Ok(n),
        Err(e @ Error::Interrupted) => return Err(e),
        Err(e) => e,
    };
    for (name, store) in repo.fallbacks() {
        let res = async {
            let sealed = fetch::fetch_from(store, pack, size, &entries).await?;
            write_pack(
                repo,
                pack,
                zip_parts(&blobs, sealed),
                files.clone(),
                staging.clone(),
                progress.clone(),
                halt.clone(),
                phases.clone(),
                behind.clone(),
            )
            .await
        }
        .await;
        match res {
            Ok(n) => {
                repo.note_fallback(format!(
                    "pack {pack}: read from region {name} because {}: {first}",
                    repo.store.describe()
                ));
                return Ok(n);
            }
            Err(e @ Error::Interrupted) => return Err(e),
            Err(e) => tracing::warn!(region = %name, %pack, error = %e, "fallback read failed too"),
        }
    }
    Err(first)
}

/// Each blob with where it goes and its sealed bytes.
fn zip_parts(blobs: &[(PackEntry, Dests)], sealed: Vec<Bytes>) -> Vec<(PackEntry, Dests, Bytes)> {
    blobs
        .iter()
        .zip(sealed)
        .map(|((e, d), b)| (*e, d.clone(), b))
        .collect()
}

/// Decrypts, decompresses and re-hashes each blob, then writes it wherever it goes (on a
/// blocking thread); returns the bytes written.
#[allow(clippy::too_many_arguments)]
async fn write_pack(
    repo: &Repository,
    pack: PackId,
    parts: Vec<(PackEntry, Dests, Bytes)>,
    files: Arc<Vec<FileEntry>>,
    staging: Arc<Path>,
    progress: ProgressBar,
    halt: Halt,
    phases: Arc<Phases>,
    behind: Option<Arc<direct::WriteBehind>>,
) -> Result<u64> {
    let mut written = 0u64;
    let repo = repo.clone();
    let queued = Instant::now();
    let n = tokio::task::spawn_blocking(move || -> Result<u64> {
        let mut clock = Phases::add(&phases.queue_ns, queued);
        let root = is_root();
        // Every place a blob goes, in file order: consecutive blobs of one file are written
        // as one range, whole blocks of it past the page cache (`crate::direct`).
        let mut places: Vec<(usize, u64, usize)> = Vec::new();
        for (pi, (_, dests, _)) in parts.iter().enumerate() {
            places.extend(dests.iter().map(|&(fi, off)| (fi, off, pi)));
        }
        places.sort_unstable();
        // Multi-blob files stay open while this pack's blobs are written into them (and
        // while the writer thread still holds blocks of them).
        let mut open: HashMap<usize, Arc<direct::Target>> = HashMap::new();
        let (mut body, mut plain) = (Vec::new(), Vec::new());
        let mut holes: Vec<(u64, u64)> = Vec::new();
        let mut i = 0;
        while i < places.len() {
            halt.check()?;
            let (fi, start, pi) = places[i];
            let fe = &files[fi];
            let p = || staging.join(&fe.path);
            if fe.node.content.len() == 1 {
                let (entry, _, sealed) = &parts[pi];
                let data = open_in_pack(&repo, pack, entry, sealed, &mut body, &mut plain)?;
                clock = Phases::add(&phases.decode_ns, clock);
                write_whole_file(&p(), &fe.node, data, root)?;
                clock = Phases::add(&phases.write_ns, clock);
                written += data.len() as u64;
                progress.inc(data.len() as u64);
                i += 1;
                continue;
            }
            let target = match open.entry(fi) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    let path = p();
                    v.insert(direct::Target::open(&path).map_err(|e| Error::io("open", &path, e))?)
                }
            };
            let wr = |e| Error::io("write", p(), e);
            let mut range = direct::RangeWriter::new(target, behind.as_deref(), start);
            let mut end = start;
            while i < places.len() && places[i].0 == fi && places[i].1 == end {
                let (entry, _, sealed) = &parts[places[i].2];
                let len = entry.raw_length as usize;
                let slot = range.slot(len).map_err(wr)?;
                clock = Phases::add(&phases.write_ns, clock);
                pack::open_blob_to(&repo.keys, repo.id(), entry, sealed, &mut body, slot)
                    .map_err(|e| in_pack(pack, entry, e))?;
                zero_runs(slot, end, &mut holes);
                clock = Phases::add(&phases.decode_ns, clock);
                range.commit(len).map_err(wr)?;
                clock = Phases::add(&phases.write_ns, clock);
                progress.inc(len as u64);
                end += len as u64;
                i += 1;
            }
            let st = range.finish().map_err(wr)?;
            phases.ranges.fetch_add(1, Ordering::Relaxed);
            phases.direct_writes.fetch_add(st.direct, Ordering::Relaxed);
            phases
                .buffered_writes
                .fetch_add(st.buffered, Ordering::Relaxed);
            phases
                .buffered_bytes
                .fetch_add(st.buffered_bytes, Ordering::Relaxed);
            // Zero runs inside blobs become holes (a sparse file's blocks of zeros that did
            // not fill a whole chunk): written, then given back to the file system.
            // (Behind the writes queued for them, where a writer thread writes them.)
            for (off, len) in holes.drain(..) {
                match behind.as_ref() {
                    Some(b) => b.punch_hole(target, off, len),
                    None => direct::punch_hole(target.file(), off, len),
                }
                .map_err(|e| Error::io("punch a hole in", p(), e))?;
            }
            clock = Phases::add(&phases.write_ns, clock);
            written += end - start;
        }
        Ok(written)
    })
    .await
    .map_err(|e| Error::Other(format!("restore worker failed: {e}")))??;
    Ok(n)
}

/// A blob's integrity error, named by the pack it was read from.
fn in_pack(pack: PackId, entry: &PackEntry, e: Error) -> Error {
    match e {
        Error::Integrity { detail, .. } => Error::integrity(
            format!("pack {pack}"),
            format!("blob {}: {detail}", entry.id),
        ),
        other => other,
    }
}

/// [`pack::open_blob_reusing`] with errors named by the pack.
fn open_in_pack<'a>(
    repo: &Repository,
    pack: PackId,
    entry: &PackEntry,
    sealed: &[u8],
    body: &'a mut Vec<u8>,
    plain: &'a mut Vec<u8>,
) -> Result<&'a [u8]> {
    pack::open_blob_reusing(&repo.keys, repo.id(), entry, sealed, body, plain)
        .map_err(|e| in_pack(pack, entry, e))
}

/// File-system page: holes are whole, aligned pages.
const PAGE: u64 = 4096;
/// Shorter zero runs stay written: punching every stray zero page of a database file would
/// only fragment it.
const MIN_HOLE: u64 = 32 * 1024;

/// Appends to `out` the runs of whole zero pages (at least [`MIN_HOLE`] long, aligned to
/// file offsets) of `data`, which lies at file offset `offset`.
fn zero_runs(data: &[u8], offset: u64, out: &mut Vec<(u64, u64)>) {
    if (data.len() as u64) < MIN_HOLE {
        return;
    }
    let end = offset + data.len() as u64;
    let mut page = offset.div_ceil(PAGE) * PAGE;
    let mut run: Option<u64> = None;
    let zero = |at: u64| {
        let i = (at - offset) as usize;
        data[i..i + PAGE as usize].iter().all(|&b| b == 0)
    };
    let mut close = |run: &mut Option<u64>, at: u64| {
        if let Some(start) = run.take() {
            if at - start >= MIN_HOLE {
                out.push((start, at - start));
            }
        }
    };
    while page + PAGE <= end {
        if zero(page) {
            run.get_or_insert(page);
        } else {
            close(&mut run, page);
        }
        page += PAGE;
    }
    close(&mut run, page);
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    (unsafe { libc::geteuid() }) == 0
}

fn node_mtime(node: &Node) -> filetime::FileTime {
    filetime::FileTime::from_unix_time(
        node.mtime_ns.div_euclid(1_000_000_000),
        node.mtime_ns.rem_euclid(1_000_000_000) as u32,
    )
}

/// Creates a one-blob file with its content (long zero runs punched out as holes), then
/// owner, mode and mtime, all through the one descriptor. Truncates, so a pack re-read from a fallback region simply rewrites it.
fn write_whole_file(p: &Path, node: &Node, data: &[u8], root: bool) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let mut f = std::fs::File::create(p).map_err(|e| Error::io("create", p, e))?;
    f.write_all(data).map_err(|e| Error::io("write", p, e))?;
    let mut holes = Vec::new();
    zero_runs(data, 0, &mut holes);
    for (off, len) in holes {
        direct::punch_hole(&f, off, len).map_err(|e| Error::io("punch a hole in", p, e))?;
    }
    if root {
        std::os::unix::fs::fchown(&f, Some(node.uid), Some(node.gid))
            .map_err(|e| Error::io("chown", p, e))?;
    }
    f.set_permissions(std::fs::Permissions::from_mode(node.mode))
        .map_err(|e| Error::io("chmod", p, e))?;
    filetime::set_file_handle_times(&f, None, Some(node_mtime(node)))
        .map_err(|e| Error::io("set mtime", p, e))?;
    Ok(())
}

fn set_meta(p: &Path, node: &Node, root: bool) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if root {
        std::os::unix::fs::lchown(p, Some(node.uid), Some(node.gid))
            .map_err(|e| Error::io("chown", p, e))?;
    }
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(node.mode))
        .map_err(|e| Error::io("chmod", p, e))?;
    let mt = filetime::FileTime::from_unix_time(
        node.mtime_ns.div_euclid(1_000_000_000),
        node.mtime_ns.rem_euclid(1_000_000_000) as u32,
    );
    filetime::set_file_mtime(p, mt).map_err(|e| Error::io("set mtime", p, e))?;
    Ok(())
}

/// Compares two trees: contents, types, permissions, symlink targets and file mtimes.
/// Returns one line per difference (empty when identical).
pub fn compare_dirs(a: &Path, b: &Path) -> Result<Vec<String>> {
    use std::os::unix::fs::MetadataExt;
    let mut diffs = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let (pa, pb) = (a.join(&rel), b.join(&rel));
        let list = |p: &Path| -> Result<Vec<std::ffi::OsString>> {
            let mut v: Vec<_> = std::fs::read_dir(p)
                .map_err(|e| Error::io("read", p, e))?
                .filter_map(|e| e.ok().map(|e| e.file_name()))
                .collect();
            v.sort();
            Ok(v)
        };
        let (la, lb) = (list(&pa)?, list(&pb)?);
        for n in la.iter().filter(|n| !lb.contains(n)) {
            diffs.push(format!(
                "{}: missing from the restore",
                rel.join(n).display()
            ));
        }
        for n in lb.iter().filter(|n| !la.contains(n)) {
            diffs.push(format!("{}: not in the source", rel.join(n).display()));
        }
        for n in la.iter().filter(|n| lb.contains(n)) {
            let r = rel.join(n);
            let (x, y) = (a.join(&r), b.join(&r));
            let (mx, my) = (
                std::fs::symlink_metadata(&x).map_err(|e| Error::io("stat", &x, e))?,
                std::fs::symlink_metadata(&y).map_err(|e| Error::io("stat", &y, e))?,
            );
            if mx.file_type() != my.file_type() {
                diffs.push(format!("{}: type differs", r.display()));
                continue;
            }
            if mx.mode() & 0o7777 != my.mode() & 0o7777 && !mx.file_type().is_symlink() {
                diffs.push(format!(
                    "{}: mode {:o} vs {:o}",
                    r.display(),
                    mx.mode() & 0o7777,
                    my.mode() & 0o7777
                ));
            }
            if mx.file_type().is_dir() {
                stack.push(r);
            } else if mx.file_type().is_symlink() {
                if std::fs::read_link(&x).ok() != std::fs::read_link(&y).ok() {
                    diffs.push(format!("{}: symlink target differs", r.display()));
                }
            } else if mx.is_file() {
                if mx.len() != my.len() || !same_content(&x, &y)? {
                    diffs.push(format!("{}: content differs", r.display()));
                }
                if (mx.mtime(), mx.mtime_nsec()) != (my.mtime(), my.mtime_nsec()) {
                    diffs.push(format!("{}: mtime differs", r.display()));
                }
            }
        }
    }
    Ok(diffs)
}

fn same_content(x: &Path, y: &Path) -> Result<bool> {
    use std::io::Read;
    let open = |p: &Path| std::fs::File::open(p).map_err(|e| Error::io("open", p, e));
    let (mut fx, mut fy) = (open(x)?, open(y)?);
    let (mut bx, mut by) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let nx = read_full(&mut fx, &mut bx).map_err(|e| Error::io("read", x, e))?;
        let ny = read_full(&mut fy, &mut by).map_err(|e| Error::io("read", y, e))?;
        if nx != ny || bx[..nx] != by[..ny] {
            return Ok(false);
        }
        if nx == 0 {
            return Ok(true);
        }
    }
    fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            match f.read(&mut buf[n..])? {
                0 => break,
                k => n += k,
            }
        }
        Ok(n)
    }
}

/// Number of non-directory entries below `dir` (files, symlinks), recursively.
pub fn count_files(dir: &Path) -> u64 {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(_) => n += 1,
                Err(_) => {}
            }
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_runs_are_whole_aligned_pages_of_at_least_min_hole() {
        let mut data = vec![1u8; 256 * 1024];
        // Zeros from 10_000 to 150_000 in the blob, which starts at file offset 100.
        data[10_000..150_000].fill(0);
        // A short run: too small to punch.
        data[200_000..210_000].fill(0);
        let mut out = Vec::new();
        zero_runs(&data, 100, &mut out);
        // The first whole zero page at or after file offset 10_100 is 12_288; the run ends
        // at the last whole page before file offset 150_100.
        assert_eq!(out, vec![(12_288, 147_456 - 12_288)]);
        let mut none = Vec::new();
        zero_runs(&[0u8; 16 * 1024], 0, &mut none);
        assert!(none.is_empty());
        let mut all = Vec::new();
        zero_runs(&vec![0u8; 64 * 1024], 0, &mut all);
        assert_eq!(all, vec![(0, 64 * 1024)]);
    }
}
