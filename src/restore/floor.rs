//! The floor of a local restore, for the benchmarks (`lifeboat bench-restore-floor`, hidden):
//! the larger of
//!
//! - the time to write the snapshot's bytes into a new, preallocated file with `O_DIRECT`
//!   (one writer, 8 MiB writes: what the disk takes, whatever restores onto it), and
//! - the CPU time of the work no restore can skip — decrypt, decompress and re-hash every
//!   blob of the snapshot — spread over every core: each core decodes its share of the blobs
//!   at once (shared caches and memory, as in a restore), the sealed blobs already in memory,
//!   and the per-thread CPU clocks are summed and divided by the cores.
//!
//! Reading the packs, walking the trees and creating files are left out: a restore that
//! reached this floor would be doing nothing else. [`snapshot_packs`] also lists the packs a
//! snapshot's files need, for the S3 read floor (`store::s3::floor`).

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

use bytes::Bytes;

use crate::direct;
use crate::ids::{BlobId, PackId};
use crate::repo::index::Index;
use crate::repo::pack::{self, PackEntry};
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::NodeKind;
use crate::repo::{pack_key, Repository};
use crate::{Error, Result};

/// Sealed blobs decoded per batch: what the measurement holds in memory at once.
const BATCH_BYTES: u64 = 64 << 20;
/// Size of one direct write of the write floor.
const WRITE_CHUNK: usize = 8 << 20;

/// What [`local_floor`] measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LocalFloor {
    /// Bytes of the snapshot's files (what a restore writes).
    pub bytes: u64,
    /// Distinct blobs decoded.
    pub blobs: u64,
    /// Packs holding them.
    pub packs: u64,
    pub cores: usize,
    /// CPU seconds of decrypt + decompress + re-hash, summed over the cores.
    pub decode_cpu_secs: f64,
    /// `decode_cpu_secs / cores`.
    pub cpu_floor_secs: f64,
    /// Wall seconds to write `bytes` with `O_DIRECT` into a preallocated file.
    pub direct_write_secs: f64,
    /// The larger of the two.
    pub floor_secs: f64,
}

/// The files' blobs of a snapshot, by pack (position in the index), each blob once, and the
/// bytes of its files.
pub async fn snapshot_blobs(
    repo: &Repository,
    index: &Index,
    snapshot: &Snapshot,
) -> Result<(HashMap<u32, Vec<PackEntry>>, u64)> {
    let mut by_pack: HashMap<u32, Vec<PackEntry>> = HashMap::new();
    let mut seen: HashSet<BlobId> = HashSet::new();
    let mut bytes = 0u64;
    let mut stack = vec![snapshot.tree];
    while let Some(tree_id) = stack.pop() {
        let tree = repo.load_tree(index, &tree_id).await?;
        for node in tree.nodes {
            match node.kind {
                NodeKind::Dir => stack.extend(node.subtree),
                NodeKind::File => {
                    bytes += node.size;
                    for id in &node.content {
                        if !seen.insert(*id) {
                            continue;
                        }
                        let loc = index.get(id).ok_or_else(|| {
                            Error::integrity(format!("blob {id}"), "missing from the index")
                        })?;
                        by_pack.entry(loc.pack).or_default().push(loc.entry);
                    }
                }
                NodeKind::Symlink => {}
            }
        }
    }
    Ok((by_pack, bytes))
}

/// Every pack the files of `snapshot` need (store keys), for the S3 read floor.
pub async fn snapshot_packs(
    repo: &Repository,
    index: &Index,
    snapshot: &Snapshot,
) -> Result<Vec<String>> {
    let (by_pack, _) = snapshot_blobs(repo, index, snapshot).await?;
    let mut keys: Vec<String> = by_pack
        .keys()
        .map(|&pos| pack_key(&index.pack(pos).0))
        .collect();
    keys.sort();
    Ok(keys)
}

/// Measures the local restore floor of `snapshot`; the write floor writes (and removes) a
/// scratch file in `scratch`, which should be on the file system restores go to.
pub async fn local_floor(
    repo: &Repository,
    index: &Index,
    snapshot: &Snapshot,
    scratch: &Path,
) -> Result<LocalFloor> {
    let (by_pack, bytes) = snapshot_blobs(repo, index, snapshot).await?;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let packs = by_pack.len() as u64;
    let mut blobs = 0u64;
    let mut cpu = 0f64;
    let mut batch: Vec<(PackId, PackEntry, Bytes)> = Vec::new();
    let mut held = 0u64;
    let mut order: Vec<_> = by_pack.into_iter().collect();
    order.sort_by_key(|(pos, _)| *pos);
    let n_packs = order.len();
    for (i, (pos, entries)) in order.into_iter().enumerate() {
        let (pack, _) = index.pack(pos);
        let whole = repo.store.get(&pack_key(&pack)).await?;
        for e in entries {
            let end = e.offset as usize + e.length as usize;
            if end > whole.len() {
                return Err(Error::integrity(
                    format!("pack {pack}"),
                    "shorter than its index says (truncated?)",
                ));
            }
            held += e.length as u64;
            batch.push((pack, e, whole.slice(e.offset as usize..end)));
        }
        if held >= BATCH_BYTES || i + 1 == n_packs {
            blobs += batch.len() as u64;
            cpu += decode_on_every_core(repo, std::mem::take(&mut batch), cores)?;
            held = 0;
        }
    }
    let write = direct_write_secs(scratch, bytes)?;
    let cpu_floor = cpu / cores as f64;
    Ok(LocalFloor {
        bytes,
        blobs,
        packs,
        cores,
        decode_cpu_secs: cpu,
        cpu_floor_secs: cpu_floor,
        direct_write_secs: write,
        floor_secs: write.max(cpu_floor),
    })
}

/// Decodes the batch on `cores` threads at once (blob i on thread i mod cores); returns the
/// CPU seconds they spent, summed.
fn decode_on_every_core(
    repo: &Repository,
    batch: Vec<(PackId, PackEntry, Bytes)>,
    cores: usize,
) -> Result<f64> {
    let results: Vec<Result<f64>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..cores)
            .map(|t| {
                let batch = &batch;
                s.spawn(move || -> Result<f64> {
                    let (mut body, mut out) = (Vec::new(), Vec::new());
                    let start = crate::sys::clock::thread_cpu_secs();
                    for (pack, entry, sealed) in batch.iter().skip(t).step_by(cores) {
                        out.resize(entry.raw_length as usize, 0);
                        pack::open_blob_to(
                            &repo.keys,
                            repo.id(),
                            entry,
                            sealed,
                            &mut body,
                            &mut out,
                        )
                        .map_err(|e| {
                            Error::integrity(
                                format!("pack {pack}"),
                                format!("blob {}: {e}", entry.id),
                            )
                        })?;
                    }
                    Ok(crate::sys::clock::thread_cpu_secs() - start)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("decode thread"))
            .collect()
    });
    results.into_iter().sum()
}

/// Wall seconds to write `bytes` (rounded up to the direct-I/O alignment) into a new
/// preallocated file in `dir` with `O_DIRECT`, 8 MiB at a time; the file is removed after.
fn direct_write_secs(dir: &Path, bytes: u64) -> Result<f64> {
    let path = dir.join(format!(
        ".lifeboat-floor-{}",
        hex::encode(rand::random::<[u8; 6]>())
    ));
    let res = (|| -> std::io::Result<f64> {
        let f = std::fs::File::create(&path)?;
        let len = bytes.next_multiple_of(direct::ALIGN as u64);
        direct::preallocate(&f, len)?;
        let d = direct::open_direct(&path)?;
        let out = d.as_ref().unwrap_or(&f);
        let mut buf = direct::AlignedBuf::new(WRITE_CHUNK);
        // Not zeros: some devices and file systems shortcut those.
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (i * 31 + i / 4096) as u8;
        }
        let t0 = Instant::now();
        let mut off = 0u64;
        while off < len {
            let n = (len - off).min(WRITE_CHUNK as u64) as usize;
            out.write_all_at(&buf[..n], off)?;
            off += n as u64;
        }
        let secs = t0.elapsed().as_secs_f64();
        Ok(secs)
    })();
    let _ = std::fs::remove_file(&path);
    res.map_err(|e| Error::io("write the floor's scratch file", &path, e))
}
