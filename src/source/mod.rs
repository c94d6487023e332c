//! Sources: what gets backed up. A [`Source`] walks or streams its data into the pipeline
//! through a [`BackupContext`] and returns the root tree plus its consistency time and
//! metadata. Sources only produce data: the commit protocol around them (lock, index,
//! parent, pipeline, commit) is `ops::backup`'s.
//!
//! Kinds: [`dir`] trees, [`postgres`] and [`mysql`] dumps, [`volume`] snapshots (btrfs,
//! block, LVM, ZFS); [`hooks`] wraps any of them in a job's pre/post commands;
//! [`session`] holds a database snapshot open while a dump runs; [`spec`] holds
//! [`SourceSpec`], what a job backs up, and builds the source from it. Plans are validated into these specs; this module knows nothing about
//! plan files.

pub mod db;
pub mod dir;
pub mod hooks;
pub mod mysql;
pub mod postgres;
pub mod preflight;
pub mod session;
pub mod spec;
pub mod volume;

pub use spec::SourceSpec;

use std::io::Read;

use chrono::{DateTime, Utc};
use indicatif::ProgressBar;

use crate::ids::BlobId;
use crate::pipeline::{Chunker, Pipeline};
use crate::repo::index::Index;
use crate::repo::pack::BlobKind;
use crate::repo::snapshot::Summary;
use crate::repo::tree::{Node, NodeKind, Tree};
use crate::repo::Repository;
use crate::{Error, Result};

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
            name_raw: None,
            target_raw: None,
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

/// How a set member's data was fixed in time by [`Source::freeze`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frozen {
    pub capture: crate::repo::set::Capture,
    /// The moment the frozen state is of (`None` for a plain read: it happens at `run`).
    pub consistency_time: Option<DateTime<Utc>>,
}

pub trait Source: Send {
    /// `dir`, `postgres`, `mariadb`, `btrfs`, `block`, …
    fn kind(&self) -> &str;
    /// For recovery-point sets: fixes the data at this moment (a database snapshot opened
    /// and held, a file-system snapshot taken) so that a later [`Source::run`] reads exactly
    /// that state. Sources that cannot are read live when they run (a plain read).
    fn freeze(&mut self) -> Result<Frozen> {
        Ok(Frozen {
            capture: crate::repo::set::Capture::PlainRead,
            consistency_time: None,
        })
    }
    /// What the snapshot lists as its paths (directories, or a dump's database name).
    fn paths(&self) -> Vec<String>;
    /// Feeds everything into the pipeline. `parent` is the previous snapshot's root tree.
    fn run(&mut self, ctx: &mut BackupContext<'_>, parent: Option<&Tree>) -> Result<SourceOutput>;
}
