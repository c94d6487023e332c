//! Directory trees: regular files, directories, symlinks, hard links, permissions,
//! ownership and mtimes. Special files (devices, fifos, sockets) are skipped with a warning.
//! An unreadable file or directory is a warning and makes the run partial (exit 3), never an
//! abort. With a parent snapshot, a file whose size, mtime, ctime and inode are unchanged is
//! not read again: its content list is reused.

use std::fs::{File, Metadata};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use chrono::Utc;

use super::{BackupContext, Source, SourceOutput, StreamError};
use crate::ids::BlobId;
use crate::repo::tree::{Node, NodeKind, Tree};
use crate::{Error, Result};

pub struct DirSource {
    paths: Vec<PathBuf>,
    /// The top-level entry name of each path (its file name unless set by `named`).
    names: Vec<String>,
}

impl DirSource {
    /// Checks the paths exist and have distinct names (each becomes a top-level entry).
    pub fn new(paths: Vec<PathBuf>) -> Result<Self> {
        if paths.is_empty() {
            return Err(Error::Usage(
                "nothing to back up: give at least one SOURCE path".into(),
            ));
        }
        let mut names = std::collections::HashSet::new();
        let mut abs = Vec::new();
        for p in paths {
            let p = std::path::absolute(&p).map_err(|e| Error::io("resolve", &p, e))?;
            std::fs::symlink_metadata(&p).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => {
                    Error::Usage(format!("source {} does not exist", p.display()))
                }
                _ => Error::io("stat", &p, e),
            })?;
            let name = top_name(&p);
            if !names.insert(name.clone()) {
                return Err(Error::Usage(format!(
                    "two sources share the name {name:?}; back them up in separate runs or give their parent directory"
                )));
            }
            abs.push(p);
        }
        let names = abs.iter().map(|p| top_name(p)).collect();
        Ok(DirSource { paths: abs, names })
    }

    /// One directory stored under another top-level name: a volume snapshot mounted at a
    /// temporary path is recorded under the volume's own name, so successive snapshots
    /// form one lineage and unchanged files are not read again.
    pub fn named(path: PathBuf, name: String) -> Result<Self> {
        let mut s = Self::new(vec![path])?;
        s.names = vec![name];
        Ok(s)
    }
}

fn top_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "root".into())
}

fn time_ns(secs: i64, nsecs: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsecs)
}

fn node_from(name: String, kind: NodeKind, m: &Metadata) -> Node {
    Node {
        name,
        kind,
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        mtime_ns: time_ns(m.mtime(), m.mtime_nsec()),
        ctime_ns: time_ns(m.ctime(), m.ctime_nsec()),
        inode: m.ino(),
        device: m.dev(),
        links: m.nlink(),
        size: if kind == NodeKind::File { m.len() } else { 0 },
        content: Vec::new(),
        subtree: None,
        target: None,
        name_raw: None,
        target_raw: None,
    }
}

impl Source for DirSource {
    fn kind(&self) -> &str {
        "dir"
    }

    fn paths(&self) -> Vec<String> {
        self.paths.iter().map(|p| p.display().to_string()).collect()
    }

    fn run(&mut self, ctx: &mut BackupContext<'_>, parent: Option<&Tree>) -> Result<SourceOutput> {
        let consistency_time = Utc::now();
        if !ctx.progress.is_hidden() {
            spawn_size_scan(self.paths.clone(), ctx.progress.clone());
        }
        let mut nodes = Vec::new();
        for (p, name) in self.paths.iter().zip(self.names.clone()) {
            let parent_node = parent.and_then(|t| t.find(&name));
            if let Some(n) = walk_entry(ctx, p, name, parent_node)? {
                nodes.push(n);
            }
        }
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        let tree = ctx.add_tree(&Tree { nodes })?;
        Ok(SourceOutput {
            tree,
            consistency_time,
            meta: serde_json::Value::Null,
        })
    }
}

/// Backs up one filesystem entry; `None` when it was skipped.
pub(crate) fn walk_entry(
    ctx: &mut BackupContext<'_>,
    path: &Path,
    name: String,
    parent: Option<&Node>,
) -> Result<Option<Node>> {
    ctx.pipe.check()?;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) => {
            ctx.warn(
                format!("cannot stat {}: {e}; skipped", path.display()),
                true,
            );
            return Ok(None);
        }
    };
    let ft = meta.file_type();
    if ft.is_dir() {
        let mut node = node_from(name, NodeKind::Dir, &meta);
        let parent_tree = match parent {
            Some(Node {
                kind: NodeKind::Dir,
                subtree: Some(id),
                ..
            }) if ctx.index.contains(id) => ctx.load_tree(id).ok(),
            _ => None,
        };
        match walk_dir(ctx, path, parent_tree.as_ref())? {
            Some(id) => node.subtree = Some(id),
            None => return Ok(None),
        }
        ctx.summary.dirs += 1;
        Ok(Some(node))
    } else if ft.is_file() {
        file_node(ctx, path, name, &meta, parent)
    } else if ft.is_symlink() {
        let mut node = node_from(name, NodeKind::Symlink, &meta);
        match std::fs::read_link(path) {
            Ok(t) => {
                node.set_target(t.as_os_str());
                Ok(Some(node))
            }
            Err(e) => {
                ctx.warn(
                    format!("cannot read symlink {}: {e}; skipped", path.display()),
                    true,
                );
                Ok(None)
            }
        }
    } else {
        let what = if ft.is_fifo() {
            "fifo"
        } else if ft.is_socket() {
            "socket"
        } else if ft.is_block_device() {
            "block device"
        } else if ft.is_char_device() {
            "character device"
        } else {
            "special file"
        };
        ctx.warn(format!("skipping {what} {}", path.display()), false);
        Ok(None)
    }
}

fn walk_dir(
    ctx: &mut BackupContext<'_>,
    path: &Path,
    parent: Option<&Tree>,
) -> Result<Option<BlobId>> {
    let rd = match std::fs::read_dir(path) {
        Ok(rd) => rd,
        Err(e) => {
            ctx.warn(
                format!("cannot read directory {}: {e}; skipped", path.display()),
                true,
            );
            return Ok(None);
        }
    };
    let mut names = Vec::new();
    for entry in rd {
        match entry {
            Ok(e) => names.push(e.file_name()),
            Err(e) => ctx.warn(format!("error listing {}: {e}", path.display()), true),
        }
    }
    names.sort();
    let mut nodes = Vec::with_capacity(names.len());
    for n in names {
        // Names are stored as bytes: one that is not UTF-8 is kept exactly (tree.rs).
        let name = n.to_string_lossy().into_owned();
        let pn = parent.and_then(|t| t.find_bytes(n.as_encoded_bytes()));
        if let Some(mut node) = walk_entry(ctx, &path.join(&n), name, pn)? {
            node.set_name(&n);
            nodes.push(node);
        }
    }
    Ok(Some(ctx.add_tree(&Tree { nodes })?))
}

fn file_node(
    ctx: &mut BackupContext<'_>,
    path: &Path,
    name: String,
    meta: &Metadata,
    parent: Option<&Node>,
) -> Result<Option<Node>> {
    let mut node = node_from(name, NodeKind::File, meta);
    if let Some(p) = parent {
        let unchanged = p.kind == NodeKind::File
            && p.size == node.size
            && p.mtime_ns == node.mtime_ns
            && p.ctime_ns == node.ctime_ns
            && p.inode == node.inode
            && p.content.iter().all(|id| ctx.pipe.has(id));
        if unchanged {
            node.content = p.content.clone();
            ctx.summary.files_unmodified += 1;
            ctx.summary.bytes_processed += node.size;
            ctx.progress.inc(node.size);
            return Ok(Some(node));
        }
    }
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) => {
            ctx.warn(
                format!("cannot read {}: {e}; skipped", path.display()),
                true,
            );
            return Ok(None);
        }
    };
    match ctx.add_stream(&mut f) {
        Ok((ids, n)) => {
            node.content = ids;
            node.size = n;
        }
        Err(StreamError::Io(e)) => {
            ctx.warn(
                format!("error reading {}: {e}; skipped", path.display()),
                true,
            );
            return Ok(None);
        }
        Err(StreamError::Fatal(e)) => return Err(e),
    }
    if parent.is_some() {
        ctx.summary.files_changed += 1;
    } else {
        ctx.summary.files_new += 1;
    }
    Ok(Some(node))
}

/// Sums file sizes in the background so the progress bar has a total.
fn spawn_size_scan(paths: Vec<PathBuf>, bar: indicatif::ProgressBar) {
    std::thread::spawn(move || {
        let mut total = 0u64;
        let mut stack = paths;
        while let Some(p) = stack.pop() {
            let Ok(m) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if m.is_dir() {
                if let Ok(rd) = std::fs::read_dir(&p) {
                    stack.extend(rd.flatten().map(|e| e.path()));
                }
            } else if m.is_file() {
                total += m.len();
                bar.set_length(total);
            }
        }
    });
}
