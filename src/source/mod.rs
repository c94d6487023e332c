//! Sources: what gets backed up. A [`Source`] walks or streams its data into the pipeline
//! through a [`BackupContext`] and returns the root tree plus its consistency time and
//! metadata; [`backup`] wraps any source in the commit protocol:
//! lock → index (adopting packs an interrupted run left) → parent → pipeline → index →
//! lock check → snapshot (the commit point).
//!
//! Kinds: [`dir`] trees, [`postgres`] and [`mysql`] dumps, [`volume`] snapshots (btrfs,
//! block, LVM, ZFS); [`hooks`] wraps any of them in a job's pre/post commands; [`process`]
//! runs the child tools; [`spec`] holds [`SourceSpec`], what a job backs up, and builds the
//! source from it. Plans are validated into these specs; this module knows nothing about
//! plan files.

pub mod db;
pub mod dir;
pub mod hooks;
pub mod mysql;
pub mod postgres;
pub mod process;
pub mod spec;
pub mod volume;

pub use spec::SourceSpec;

use std::io::Read;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use indicatif::ProgressBar;

use crate::ids::{BlobId, SnapshotId};
use crate::pipeline::{Cancel, Chunker, Pipeline};
use crate::repo::index::Index;
use crate::repo::pack::BlobKind;
use crate::repo::snapshot::{Snapshot, Summary};
use crate::repo::tree::{Node, NodeKind, Tree};
use crate::repo::{ObjectKind, Repository};
use crate::{Error, Result};

pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into a buffer we own.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "unknown".into()
    }
}

pub fn username() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| format!("uid{}", unsafe { libc::getuid() }))
}

/// What a source hands back when it has fed all its data into the pipeline.
pub struct SourceOutput {
    pub tree: BlobId,
    pub consistency_time: DateTime<Utc>,
    pub meta: serde_json::Value,
}

/// Everything a source needs while it runs (on a blocking thread).
pub struct BackupContext<'a> {
    pub repo: &'a Repository,
    pub index: &'a Index,
    pub pipe: &'a mut Pipeline,
    pub chunker: Chunker,
    pub rt: tokio::runtime::Handle,
    pub progress: ProgressBar,
    pub summary: Summary,
    pub warnings: Vec<String>,
    /// Set when part of the source could not be read (exit 3).
    pub partial: bool,
}

impl BackupContext<'_> {
    pub fn warn(&mut self, msg: String, partial: bool) {
        tracing::info!(warning = %msg, "source warning");
        self.progress.suspend(|| eprintln!("warning: {msg}"));
        self.warnings.push(msg);
        self.summary.warnings += 1;
        self.partial |= partial;
    }

    pub fn load_tree(&self, id: &BlobId) -> Result<Tree> {
        self.rt.block_on(self.repo.load_tree(self.index, id))
    }

    pub fn add_tree(&mut self, tree: &Tree) -> Result<BlobId> {
        let json = serde_json::to_vec(tree).expect("trees serialize");
        self.pipe.add(BlobKind::Tree, json)
    }

    /// Chunks a byte stream into the pipeline; returns its content blob ids and length.
    pub fn add_stream<R: Read + ?Sized>(
        &mut self,
        r: &mut R,
    ) -> std::result::Result<(Vec<BlobId>, u64), StreamError> {
        let mut ids = Vec::new();
        let (pipe, progress) = (&mut *self.pipe, &self.progress);
        let n = self
            .chunker
            .chunk(r, |chunk| -> std::result::Result<(), StreamError> {
                ids.push(
                    pipe.add_slice(BlobKind::Data, chunk)
                        .map_err(StreamError::Fatal)?,
                );
                progress.inc(chunk.len() as u64);
                Ok(())
            })?;
        self.summary.bytes_processed += n;
        Ok((ids, n))
    }

    /// A root tree holding one stream as a single file node (dumps, block devices).
    pub fn stream_root(
        &mut self,
        name: &str,
        content: Vec<BlobId>,
        size: u64,
        mode: u32,
    ) -> Result<BlobId> {
        let node = self.file_node(name, content, size, mode);
        self.add_tree(&Tree { nodes: vec![node] })
    }

    /// A file node for a stream, owned by this process's user and stamped now.
    pub fn file_node(&self, name: &str, content: Vec<BlobId>, size: u64, mode: u32) -> Node {
        let now = Utc::now().timestamp_nanos_opt().unwrap_or(0);
        Node {
            name: name.into(),
            kind: NodeKind::File,
            mode,
            uid: unsafe { libc::getuid() },
            gid: unsafe { libc::getgid() },
            mtime_ns: now,
            ctime_ns: now,
            inode: 0,
            device: 0,
            links: 1,
            size,
            content,
            subtree: None,
            target: None,
        }
    }
}

/// Errors while streaming: an I/O error on the input (a warning for one file, a failure for
/// a dump) or a fatal pipeline error.
#[derive(Debug)]
pub enum StreamError {
    Io(std::io::Error),
    Fatal(Error),
}

impl From<std::io::Error> for StreamError {
    fn from(e: std::io::Error) -> Self {
        StreamError::Io(e)
    }
}

pub trait Source: Send {
    /// `dir`, `postgres`, `mariadb`, `btrfs`, `block`, …
    fn kind(&self) -> &str;
    /// What the snapshot lists as its paths (directories, or a dump's database name).
    fn paths(&self) -> Vec<String>;
    /// Feeds everything into the pipeline. `parent` is the previous snapshot's root tree.
    fn run(&mut self, ctx: &mut BackupContext<'_>, parent: Option<&Tree>) -> Result<SourceOutput>;
}

#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    pub tags: Vec<String>,
    pub host: Option<String>,
    pub plan: Option<String>,
    pub job: Option<String>,
    /// Skip change detection and re-read everything.
    pub force: bool,
}

#[derive(Debug, Clone)]
pub struct BackupReport {
    pub snapshot_id: SnapshotId,
    pub snapshot: Snapshot,
    pub warnings: Vec<String>,
    pub partial: bool,
    pub packs_adopted: usize,
    /// Blobs found damaged by the verification before upload and sealed again (T27).
    pub blobs_resealed: u64,
}

/// Runs one backup of `source` into `repo` and commits a snapshot.
pub async fn backup(
    repo: &Repository,
    mut source: Box<dyn Source>,
    opts: &BackupOptions,
    progress: ProgressBar,
    cancel: Cancel,
) -> Result<BackupReport> {
    let lock = repo.lock("backup", false).await?;
    let result = backup_locked(repo, &mut source, opts, progress, cancel, &lock).await;
    lock.release().await;
    result
}

async fn backup_locked(
    repo: &Repository,
    source: &mut Box<dyn Source>,
    opts: &BackupOptions,
    progress: ProgressBar,
    cancel: Cancel,
    lock: &crate::repo::lock::Lock,
) -> Result<BackupReport> {
    let started = Utc::now();
    let clock = Instant::now();
    let mut index = repo.load_index().await?;
    let packs_adopted = repo.adopt_unindexed_packs(&mut index).await?;
    let host = opts.host.clone().unwrap_or_else(hostname);

    let probe = Snapshot {
        time: started,
        consistency_time: started,
        host: host.clone(),
        username: username(),
        tags: opts.tags.clone(),
        paths: source.paths(),
        tree: BlobId([0; 32]),
        parent: None,
        source_kind: source.kind().to_string(),
        source_meta: serde_json::Value::Null,
        plan: opts.plan.clone(),
        job: opts.job.clone(),
        summary: Summary::default(),
        program_version: env!("CARGO_PKG_VERSION").into(),
    };
    let parent = if opts.force {
        None
    } else {
        repo.list_snapshots()
            .await?
            .into_iter()
            .rev()
            .find(|(_, s)| s.same_lineage(&probe))
    };
    let parent_tree = match &parent {
        Some((_, s)) if index.contains(&s.tree) => match repo.load_tree(&index, &s.tree).await {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(error = %e, "parent snapshot unreadable; reading everything");
                None
            }
        },
        _ => None,
    };

    let repo2 = repo.clone();
    let index = Arc::new(index);
    let rt = tokio::runtime::Handle::current();
    let src = std::mem::replace(source, Box::new(NoSource));
    let (src, outcome) = tokio::task::spawn_blocking(move || {
        let mut src = src;
        let mut pipe = Pipeline::start(&repo2, &index, rt.clone(), cancel);
        let chunker = Chunker::new(repo2.config.chunker, repo2.keys.chunker_seed());
        let mut ctx = BackupContext {
            repo: &repo2,
            index: &index,
            pipe: &mut pipe,
            chunker,
            rt,
            progress,
            summary: Summary::default(),
            warnings: Vec::new(),
            partial: false,
        };
        let out = src.run(&mut ctx, parent_tree.as_ref());
        let (summary, warnings, partial) = (ctx.summary, ctx.warnings, ctx.partial);
        ctx.progress.finish_and_clear();
        let res = out.and_then(|o| {
            pipe.finish()
                .map(|stats| (o, stats, summary, warnings, partial))
        });
        (src, res)
    })
    .await
    .map_err(|e| Error::Other(format!("backup thread failed: {e}")))?;
    *source = src;
    let (out, stats, mut summary, warnings, partial) = outcome?;

    lock.check()?;
    summary.blobs_added = stats.blobs_added;
    summary.bytes_added = stats.bytes_added;
    summary.bytes_stored = stats.bytes_stored;
    summary.packs_added = stats.packs_added;
    summary.duration_secs = clock.elapsed().as_secs_f64();
    let snapshot = Snapshot {
        consistency_time: out.consistency_time,
        tree: out.tree,
        parent: parent.map(|(id, _)| id),
        source_meta: out.meta,
        summary,
        ..probe
    };
    if let Some(multi) = repo.store.as_multi() {
        // Multi-region commit: only regions holding every index file and every indexed pack
        // (at its indexed size) get the snapshot; the others are reported as lagging.
        let full = repo.load_index().await?;
        let mut required: Vec<(String, Option<u64>)> = full
            .packs()
            .iter()
            .map(|(id, size)| (crate::repo::pack_key(id), Some(*size)))
            .collect();
        required.extend(
            full.files
                .iter()
                .map(|id| (ObjectKind::Index.key(id), None)),
        );
        multi
            .prepare_commit(&["data/", "index/"], &required)
            .await?;
        lock.check()?;
    }
    let snapshot_id = repo.save_json(ObjectKind::Snapshot, &snapshot).await?;
    tracing::info!(snapshot = %snapshot_id, "snapshot committed");
    Ok(BackupReport {
        snapshot_id,
        snapshot,
        warnings,
        partial,
        packs_adopted,
        blobs_resealed: stats.blobs_resealed,
    })
}

/// Placeholder value left in the caller's slot while the real source runs on its thread.
struct NoSource;
impl Source for NoSource {
    fn kind(&self) -> &str {
        "none"
    }
    fn paths(&self) -> Vec<String> {
        Vec::new()
    }
    fn run(&mut self, _: &mut BackupContext<'_>, _: Option<&Tree>) -> Result<SourceOutput> {
        Err(Error::Other("source already consumed".into()))
    }
}
