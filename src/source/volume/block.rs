//! Block devices and image files, read as one stream into a single file node. Runs of zeros
//! cost almost nothing in the repository (they chunk to the same blob, which dedup stores
//! once and zstd shrinks); restore writes such an image back sparse (see
//! `restore::single`). The device must be quiet or itself a snapshot (see
//! [`super::lvm`]): lifeboat reads it from start to end, not atomically.

use std::fs::File;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use chrono::Utc;
use serde_json::json;

use crate::repo::tree::Tree;
use crate::source::{BackupContext, Source, SourceOutput, StreamError};
use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockSpec {
    /// A block device (`/dev/sdb1`) or an image file.
    pub path: PathBuf,
}

pub struct BlockSource {
    spec: BlockSpec,
    name: String,
}

impl BlockSource {
    pub fn new(spec: BlockSpec, job: &str) -> Self {
        BlockSource {
            spec,
            name: job.into(),
        }
    }
}

/// Streams a device or file into the pipeline as the snapshot's only node.
pub fn stream_device(
    ctx: &mut BackupContext<'_>,
    path: &Path,
    node_name: &str,
    source: &str,
) -> Result<(crate::ids::BlobId, u64, bool)> {
    let fail = |what: String| Error::source_failed(source, what);
    let meta = std::fs::metadata(path)
        .map_err(|e| fail(format!("cannot stat {}: {e}", path.display())))?;
    let is_device = meta.file_type().is_block_device();
    if !is_device && !meta.is_file() {
        return Err(fail(format!(
            "{} is neither a block device nor a regular file",
            path.display()
        )));
    }
    let mut f =
        File::open(path).map_err(|e| fail(format!("cannot open {}: {e}", path.display())))?;
    if !is_device {
        ctx.progress.set_length(meta.len());
    }
    let (ids, len) = match ctx.add_stream(&mut f) {
        Ok(v) => v,
        Err(StreamError::Io(e)) => {
            return Err(fail(format!("reading {} failed: {e}", path.display())))
        }
        Err(StreamError::Fatal(e)) => return Err(e),
    };
    let tree = ctx.stream_root(node_name, ids, len, 0o600)?;
    ctx.summary.files_new += 1;
    Ok((tree, len, is_device))
}

impl Source for BlockSource {
    fn kind(&self) -> &str {
        "block"
    }

    fn paths(&self) -> Vec<String> {
        vec![self.spec.path.display().to_string()]
    }

    fn run(&mut self, ctx: &mut BackupContext<'_>, _parent: Option<&Tree>) -> Result<SourceOutput> {
        let consistency_time = Utc::now();
        let node = self
            .spec
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "device".into());
        let (tree, len, is_device) = stream_device(ctx, &self.spec.path, &node, &self.name)?;
        Ok(SourceOutput {
            tree,
            consistency_time,
            meta: json!({"path": self.spec.path, "file": node, "bytes": len, "block_device": is_device, "restore": "sparse image"}),
        })
    }
}
