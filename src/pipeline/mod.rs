//! The write pipeline: blob → keyed id → dedup → zstd → XChaCha20-Poly1305 → verify → pack →
//! check → store → index checkpoint.
//!
//! ```text
//! caller thread ──(bounded)──> N seal workers ──(bounded)──> packer ──(bounded)──> uploader
//!   hash + dedup                 compress + encrypt,           assemble 8 MiB       check, put,
//!                                verify (decrypt,              packs (trees in      index every
//!                                decompress, re-hash)          their own), name     8 packs
//!                                                              them blob by blob
//! ```
//! Verification before upload (T27) happens where the plaintext is still at hand: a blob that
//! fails it — or that changes between its verification and its pack — is sealed again, and
//! the backup goes on ([`PipelineStats::blobs_resealed`] counts them). Each blob is hashed
//! into its pack's name as it lands there, and the finished pack is re-hashed against that
//! name just before the store, so every byte is covered from sealing to upload without
//! decompressing anything twice. A finished pack that changed by then is mended from the
//! stripe parity taken as its blobs landed ([`pack::mend`]) and checked again
//! ([`PipelineStats::packs_rebuilt`] counts them).
//! Every queue is bounded, so memory stays flat whatever the input size. Blobs between the
//! caller and the packer are bounded by their bytes (`IN_FLIGHT_BYTES`), not their number:
//! a few large chunks of a dump or thousands of small files' blobs, so the workers always
//! have work queued while the caller opens the next file. The caller (a
//! source) hands in plaintext blobs and gets their ids back at once, so it can build trees
//! while sealing and uploading happen on other cores. The first failure anywhere stops the
//! whole pipeline; nothing is indexed unless its pack was stored.

pub mod chunker;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use futures::stream::{FuturesUnordered, StreamExt};

use crate::crypto::Keys;
use crate::ids::{BlobId, RepoId};
use crate::repo::index::{Index, IndexPack};
use crate::repo::pack::{self, BlobKind, FinishedPack, PackBuilder};
use crate::repo::Repository;
use crate::sys::Cancel;
use crate::{Error, Result};

pub use chunker::Chunker;

/// Packs written between index checkpoints: a killed run loses at most this many packs'
/// worth of index (and the next run adopts even those from their headers).
const CHECKPOINT_PACKS: usize = 8;
/// Packs being verified and uploaded at once (the upload floor of `scripts/bench-s3` uses
/// the same number).
pub const UPLOAD_CONCURRENCY: usize = 2;
/// Plaintext bytes of blobs handed in but not yet in a pack. One blob larger than this still
/// passes, alone.
const IN_FLIGHT_BYTES: usize = 8 << 20;
/// Backstop on the number of such blobs (empty files' blobs weigh nothing).
const IN_FLIGHT_BLOBS: usize = 1024;
/// First capacity of a tree pack's buffer: most backups' trees take far less than a pack
/// (the buffer grows when they do not).
const TREE_PACK_START: usize = 256 << 10;

/// Figures of one pipeline run.
#[derive(Debug, Clone, Default)]
pub struct PipelineStats {
    pub blobs_added: u64,
    pub bytes_added: u64,
    pub bytes_stored: u64,
    pub packs_added: u64,
    /// Blobs sealed again because their verification before upload found them damaged.
    pub blobs_resealed: u64,
    /// Finished packs whose bytes changed in memory before their upload and were rebuilt
    /// from their parity (T27).
    pub packs_rebuilt: u64,
    /// The packs this run stored, with their sizes (checked again before the commit).
    pub stored_packs: Vec<(crate::ids::PackId, u64)>,
}

struct Job {
    kind: BlobKind,
    id: BlobId,
    data: Vec<u8>,
}

struct Sealed {
    kind: BlobKind,
    id: BlobId,
    /// Sealed and verified.
    bytes: Vec<u8>,
    /// CRC-32 of `bytes` right after their verification (any flipped bit changes it).
    crc: u32,
    /// The plaintext, kept until the blob is in its pack: a blob damaged on its way there is
    /// sealed again from it (T27). Counted in `IN_FLIGHT_BYTES` until then.
    plain: Vec<u8>,
}

/// Times one blob is sealed before a failing verification becomes the backup's error.
const SEAL_ATTEMPTS: u32 = 3;

/// Seals a blob and verifies the result the way a restore will read it (decrypt, decompress,
/// re-hash), sealing again if that fails — a bit flipped by faulty memory or CPU is caught
/// before anything is stored, and the backup goes on (RELIABILITY.md T27). Returns the sealed
/// bytes and their CRC-32, taken right after the verification.
#[allow(clippy::too_many_arguments)]
fn seal_verified(
    keys: &Keys,
    repo: &RepoId,
    kind: BlobKind,
    id: &BlobId,
    plain: &[u8],
    level: i32,
    scratch: &mut (Vec<u8>, Vec<u8>),
    resealed: &AtomicU64,
) -> Result<(Vec<u8>, u32)> {
    let mut last = None;
    for _ in 0..SEAL_ATTEMPTS {
        let mut bytes = Vec::new();
        pack::seal_blob(keys, repo, kind, id, plain, level, &mut bytes);
        crate::failpoint::flip("flip-sealed-blob", &mut bytes);
        let (body, out) = (&mut scratch.0, &mut scratch.1);
        match pack::check_sealed(keys, repo, kind, id, plain.len() as u32, &bytes, body, out) {
            Ok(()) => {
                let crc = crc32fast::hash(&bytes);
                return Ok((bytes, crc));
            }
            Err(e) => {
                resealed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(blob = %id, error = %e,
                    "a blob failed its verification right after sealing (memory or CPU fault?); sealing it again");
                last = Some(e);
            }
        }
    }
    Err(Error::DamagedBeforeUpload {
        object: format!("blob {id}"),
        detail: format!(
            "failed verification after sealing {SEAL_ATTEMPTS} times ({})",
            last.map(|e| e.to_string()).unwrap_or_default()
        ),
    })
}

#[derive(Default)]
struct Shared {
    failed: AtomicBool,
    error: Mutex<Option<Error>>,
    bytes_stored: AtomicU64,
    packs: AtomicU64,
    /// Blobs sealed again because a verification found them damaged (T27).
    resealed: AtomicU64,
    /// Packs rebuilt from their parity before upload (T27).
    rebuilt: AtomicU64,
    /// Every pack stored so far.
    stored: Mutex<Vec<(crate::ids::PackId, u64)>>,
    /// Plaintext bytes between `add` and the packer (see `IN_FLIGHT_BYTES`).
    in_flight: Mutex<usize>,
    packed: Condvar,
}

impl Shared {
    /// Waits until `n` more bytes fit in flight (or nothing is in flight); false when the
    /// pipeline failed meanwhile.
    fn reserve(&self, n: usize, cancel: &Cancel) -> bool {
        let mut used = self.in_flight.lock().expect("in-flight bytes");
        while *used > 0 && *used + n > IN_FLIGHT_BYTES {
            if self.failed.load(Ordering::SeqCst) || cancel.is_cancelled() {
                return false;
            }
            used = self
                .packed
                .wait_timeout(used, std::time::Duration::from_millis(50))
                .expect("in-flight bytes")
                .0;
        }
        *used += n;
        true
    }

    fn release(&self, n: usize) {
        let mut used = self.in_flight.lock().expect("in-flight bytes");
        *used = used.saturating_sub(n);
        self.packed.notify_all();
    }

    fn fail(&self, e: Error) {
        let mut slot = self.error.lock().expect("error slot");
        if slot.is_none() {
            *slot = Some(e);
        }
        self.failed.store(true, Ordering::SeqCst);
    }
    fn take_error(&self) -> Option<Error> {
        self.error.lock().expect("error slot").take()
    }
}

/// A running pipeline. Feed it with [`Pipeline::add`], end with [`Pipeline::finish`].
/// Must be driven from a thread outside the tokio runtime (e.g. `spawn_blocking`).
pub struct Pipeline {
    keys: Arc<Keys>,
    /// Blobs the index held when the run started.
    stored: HashSet<BlobId>,
    /// Blobs added during this run.
    known: HashSet<BlobId>,
    /// Blobs of `stored` this run used: their packs must still exist at the commit (INV-5).
    reused: std::cell::RefCell<HashSet<BlobId>>,
    work_tx: Option<crossbeam_channel::Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
    uploader: Option<tokio::task::JoinHandle<()>>,
    shared: Arc<Shared>,
    rt: tokio::runtime::Handle,
    cancel: Cancel,
    stats: PipelineStats,
}

impl Pipeline {
    pub fn start(
        repo: &Repository,
        index: &Index,
        rt: tokio::runtime::Handle,
        cancel: Cancel,
    ) -> Self {
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        let (work_tx, work_rx) = crossbeam_channel::bounded::<Job>(IN_FLIGHT_BLOBS);
        let (sealed_tx, sealed_rx) = crossbeam_channel::bounded::<Sealed>(IN_FLIGHT_BLOBS);
        let (pack_tx, pack_rx) = tokio::sync::mpsc::channel::<FinishedPack>(1);
        let shared = Arc::new(Shared::default());
        let repo_id = *repo.id();
        let level = repo.config.compression_level;
        let mut threads = Vec::new();

        for i in 0..workers {
            let (rx, tx, keys) = (work_rx.clone(), sealed_tx.clone(), repo.keys.clone());
            let shared = shared.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("lifeboat-seal-{i}"))
                    .spawn(move || {
                        let mut scratch = (Vec::new(), Vec::new());
                        for job in rx {
                            let sealed = seal_verified(
                                &keys,
                                &repo_id,
                                job.kind,
                                &job.id,
                                &job.data,
                                level,
                                &mut scratch,
                                &shared.resealed,
                            );
                            let (bytes, crc) = match sealed {
                                Ok(s) => s,
                                Err(e) => return shared.fail(e),
                            };
                            let sealed = Sealed {
                                kind: job.kind,
                                id: job.id,
                                bytes,
                                crc,
                                plain: job.data,
                            };
                            if tx.send(sealed).is_err() {
                                return;
                            }
                        }
                    })
                    .expect("spawn seal worker"),
            );
        }
        drop(sealed_tx);

        let pack_size = repo.config.pack_size as usize;
        let keys = repo.keys.clone();
        let packer_shared = shared.clone();
        threads.push(
            std::thread::Builder::new()
                .name("lifeboat-packer".into())
                .spawn(move || {
                    let mut data = PackBuilder::with_capacity(pack_size + (1 << 20));
                    // Trees go into packs of their own (as restic's do): a walk of the
                    // snapshot — restore, drill, verify — then reads a few tree packs whole
                    // instead of ranges scattered between file data in every pack.
                    let mut trees = PackBuilder::with_capacity(TREE_PACK_START);
                    let mut scratch = (Vec::new(), Vec::new());
                    for s in sealed_rx {
                        let Sealed { kind, id, mut bytes, mut crc, plain } = s;
                        let raw_len = plain.len() as u32;
                        let mut attempts = 0;
                        crate::failpoint::flip("flip-blob-in-transit", &mut bytes);
                        let (builder, capacity) = match kind {
                            BlobKind::Tree => (&mut trees, TREE_PACK_START),
                            _ => (&mut data, pack_size + (1 << 20)),
                        };
                        // The copy in the pack must be the bytes that were verified; if not,
                        // they were damaged on the way here: seal the plaintext again.
                        while !builder.push_verified(kind, id, raw_len, &bytes, crc) {
                            attempts += 1;
                            packer_shared.resealed.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(blob = %id,
                                "a verified blob changed on its way into its pack (memory fault?); sealing it again");
                            let again = if attempts < SEAL_ATTEMPTS {
                                seal_verified(&keys, &repo_id, kind, &id, &plain, level,
                                    &mut scratch, &packer_shared.resealed)
                            } else {
                                Err(Error::DamagedBeforeUpload {
                                    object: format!("blob {id}"),
                                    detail: "kept changing on its way into its pack".into(),
                                })
                            };
                            match again {
                                Ok((b, c)) => (bytes, crc) = (b, c),
                                Err(e) => return packer_shared.fail(e),
                            }
                        }
                        drop(plain);
                        packer_shared.release(raw_len as usize);
                        if builder.len() >= pack_size {
                            let full =
                                std::mem::replace(builder, PackBuilder::with_capacity(capacity));
                            if pack_tx.blocking_send(full.finish(&keys, &repo_id)).is_err() {
                                return;
                            }
                        }
                    }
                    for builder in [data, trees] {
                        if !builder.is_empty()
                            && pack_tx.blocking_send(builder.finish(&keys, &repo_id)).is_err()
                        {
                            return;
                        }
                    }
                })
                .expect("spawn packer"),
        );

        let uploader = rt.spawn(upload_loop(repo.clone(), pack_rx, shared.clone()));

        Pipeline {
            keys: repo.keys.clone(),
            stored: index.blob_ids().copied().collect(),
            known: HashSet::new(),
            reused: Default::default(),
            work_tx: Some(work_tx),
            threads,
            uploader: Some(uploader),
            shared,
            rt,
            cancel,
            stats: PipelineStats::default(),
        }
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn cancel(&self) -> &Cancel {
        &self.cancel
    }

    /// Fails fast if another stage failed or the run was cancelled.
    pub fn check(&self) -> Result<()> {
        self.cancel.check()?;
        if self.shared.failed.load(Ordering::SeqCst) {
            return Err(self
                .shared
                .take_error()
                .unwrap_or(Error::Other("pipeline failed".into())));
        }
        Ok(())
    }

    /// Whether a blob is already stored (or queued) — used to reuse unchanged files.
    pub fn has(&self, id: &BlobId) -> bool {
        self.known.contains(id) || self.reuse(id)
    }

    /// Whether `id` was stored before this run; if so, remembers that this run uses it.
    fn reuse(&self, id: &BlobId) -> bool {
        let hit = self.stored.contains(id);
        if hit {
            self.reused.borrow_mut().insert(*id);
        }
        hit
    }

    /// The blobs stored before this run that it used (so far): the snapshot depends on their
    /// packs, which [`crate::repo::Repository::check_packs_present`] checks before the commit.
    pub fn take_reused(&mut self) -> HashSet<BlobId> {
        std::mem::take(self.reused.get_mut())
    }

    /// Stores a blob unless an identical one exists; returns its id either way.
    pub fn add(&mut self, kind: BlobKind, data: Vec<u8>) -> Result<BlobId> {
        let id = self.keys.blob_id(&data);
        self.add_with_id(kind, id, data)?;
        Ok(id)
    }

    /// Like `add` for a slice; copies only when the blob is new.
    pub fn add_slice(&mut self, kind: BlobKind, data: &[u8]) -> Result<BlobId> {
        let id = self.keys.blob_id(data);
        if !self.has(&id) {
            self.add_with_id(kind, id, data.to_vec())?;
        }
        Ok(id)
    }

    fn add_with_id(&mut self, kind: BlobKind, id: BlobId, data: Vec<u8>) -> Result<()> {
        self.check()?;
        if self.reuse(&id) || !self.known.insert(id) {
            return Ok(());
        }
        self.stats.blobs_added += 1;
        self.stats.bytes_added += data.len() as u64;
        let tx = self.work_tx.as_ref().expect("pipeline is running");
        if !self.shared.reserve(data.len(), &self.cancel) {
            return Err(self
                .check()
                .err()
                .unwrap_or(Error::Other("pipeline stopped".into())));
        }
        if tx.send(Job { kind, id, data }).is_err() {
            return Err(self
                .check()
                .err()
                .unwrap_or(Error::Other("pipeline stopped".into())));
        }
        Ok(())
    }

    pub fn stats(&self) -> PipelineStats {
        PipelineStats {
            bytes_stored: self.shared.bytes_stored.load(Ordering::Relaxed),
            packs_added: self.shared.packs.load(Ordering::Relaxed),
            blobs_resealed: self.shared.resealed.load(Ordering::Relaxed),
            packs_rebuilt: self.shared.rebuilt.load(Ordering::Relaxed),
            stored_packs: self.shared.stored.lock().expect("stored packs").clone(),
            ..self.stats.clone()
        }
    }

    /// Drains every stage; when this returns Ok, every blob added is in a stored pack and in
    /// a stored index file.
    pub fn finish(mut self) -> Result<PipelineStats> {
        self.shutdown();
        if let Some(e) = self.shared.take_error() {
            return Err(e);
        }
        self.cancel.check()?;
        Ok(self.stats())
    }

    fn shutdown(&mut self) {
        self.work_tx.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let Some(u) = self.uploader.take() {
            if let Err(e) = self.rt.block_on(u) {
                self.shared
                    .fail(Error::Other(format!("uploader task failed: {e}")));
            }
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        // An abandoned pipeline (error path) still drains, so no thread outlives it.
        self.shared.failed.store(true, Ordering::SeqCst);
        self.shutdown();
    }
}

async fn upload_loop(
    repo: Repository,
    mut rx: tokio::sync::mpsc::Receiver<FinishedPack>,
    shared: Arc<Shared>,
) {
    let mut inflight = FuturesUnordered::new();
    let mut pending: Vec<IndexPack> = Vec::new();
    let mut open = true;
    loop {
        tokio::select! {
            p = rx.recv(), if open && inflight.len() < UPLOAD_CONCURRENCY => match p {
                Some(p) => inflight.push(repo.store_pack_mending(p)),
                None => open = false,
            },
            Some(done) = inflight.next(), if !inflight.is_empty() => match done {
                Ok((ip, mended)) => {
                    if mended {
                        shared.rebuilt.fetch_add(1, Ordering::Relaxed);
                    }
                    shared.bytes_stored.fetch_add(ip.size, Ordering::Relaxed);
                    shared.packs.fetch_add(1, Ordering::Relaxed);
                    shared.stored.lock().expect("stored packs").push((ip.id, ip.size));
                    pending.push(ip);
                    if pending.len() >= CHECKPOINT_PACKS {
                        if let Err(e) = repo.save_index(std::mem::take(&mut pending)).await {
                            shared.fail(e);
                            return;
                        }
                    }
                }
                Err(e) => {
                    shared.fail(e);
                    // Dropping rx makes the packer stop; in-flight uploads are abandoned.
                    return;
                }
            },
            else => break,
        }
        if shared.failed.load(Ordering::SeqCst) {
            return;
        }
    }
    if !pending.is_empty() {
        if let Err(e) = repo.save_index(pending).await {
            shared.fail(e);
        }
    }
}

/// Seconds one core spends on the backup path over some data, as measured by
/// [`single_core_pass`].
#[derive(Debug, Clone, Copy)]
pub struct CorePass {
    /// Chunking, keyed hashing, compression and sealing.
    pub seal_secs: f64,
    /// The verification every sealed blob gets before upload (decrypt, decompress, re-hash).
    pub verify_secs: f64,
    /// CPU seconds the whole pass used on its thread (both parts): unlike the wall times
    /// above, not stretched when other processes share the cores.
    pub cpu_secs: f64,
}

/// Runs chunk → keyed hash → zstd → seal, then the verification before upload, over `data`
/// on the calling thread only: the single-core ceiling the benchmark compares backups with.
/// Reading the source, packing and storing are left out, so a real backup on N cores cannot
/// beat `data.len() / N` at the sum of both rates.
pub fn single_core_pass(
    data: &[u8],
    keys: &Keys,
    repo: &RepoId,
    params: crate::repo::ChunkerParams,
    level: i32,
) -> CorePass {
    let start = std::time::Instant::now();
    let cpu_start = crate::sys::clock::thread_cpu_secs();
    let mut verify = std::time::Duration::ZERO;
    let mut chunker = Chunker::new(params, keys.chunker_seed());
    let mut out = Vec::with_capacity(params.max_size as usize * 2);
    let (mut body, mut piece) = (Vec::new(), Vec::new());
    chunker
        .chunk::<_, std::io::Error>(&mut &data[..], |c| {
            let id = keys.blob_id(c);
            out.clear();
            pack::seal_blob(keys, repo, BlobKind::Data, &id, c, level, &mut out);
            let checked = std::time::Instant::now();
            pack::check_sealed(
                keys,
                repo,
                BlobKind::Data,
                &id,
                c.len() as u32,
                &out,
                &mut body,
                &mut piece,
            )
            .expect("a blob sealed in memory verifies");
            verify += checked.elapsed();
            Ok(())
        })
        .expect("in-memory chunking cannot fail");
    let verify_secs = verify.as_secs_f64();
    CorePass {
        seal_secs: start.elapsed().as_secs_f64() - verify_secs,
        verify_secs,
        cpu_secs: crate::sys::clock::thread_cpu_secs() - cpu_start,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_core_pass_reports_its_own_threads_cpu_time() {
        let keys = Keys::derive(&crate::crypto::MasterKey::generate());
        let repo = RepoId::random();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let data: Vec<u8> = (0..6 << 20)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Half text-like, half noise: both zstd paths.
                if i % 2 == 0 {
                    b'a' + (x % 4) as u8
                } else {
                    x as u8
                }
            })
            .collect();
        // Another thread burning CPU meanwhile must not count: the clock is this thread's.
        let stop = Arc::new(AtomicBool::new(false));
        let burner = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n = n.wrapping_mul(31).wrapping_add(1);
                }
                n
            })
        };
        let pass = single_core_pass(
            &data,
            &keys,
            &repo,
            crate::repo::ChunkerParams::default(),
            2,
        );
        stop.store(true, Ordering::Relaxed);
        burner.join().unwrap();
        let wall = pass.seal_secs + pass.verify_secs;
        assert!(pass.cpu_secs > 0.0, "{pass:?}");
        // One thread cannot use more CPU than the wall time it ran (plus clock granularity).
        assert!(pass.cpu_secs <= wall + 0.005, "{pass:?}");
    }
}
