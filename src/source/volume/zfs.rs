//! ZFS datasets: `zfs snapshot DATASET@lifeboat-snap-…`, a directory-tree backup of
//! `<mountpoint>/.zfs/snapshot/<name>` stored under the dataset's last name component, then
//! `zfs destroy`. A drop guard destroys the snapshot on every exit path. Not testable on the
//! project's machines (no ZFS module); the commands are OpenZFS's documented ones.

use chrono::Utc;
use serde_json::json;

use super::{run_tool, snapshot_name};
use crate::repo::tree::Tree;
use crate::source::dir::DirSource;
use crate::source::{BackupContext, Source, SourceOutput};
use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZfsSpec {
    /// e.g. `tank/home`
    pub dataset: String,
}

pub struct ZfsSource {
    spec: ZfsSpec,
    name: String,
}

impl ZfsSource {
    pub fn new(spec: ZfsSpec, job: &str) -> Self {
        ZfsSource {
            spec,
            name: job.into(),
        }
    }
}

struct ZfsGuard {
    snapshot: String,
    source: String,
    done: bool,
}

impl ZfsGuard {
    fn destroy(&mut self) -> Result<()> {
        self.done = true;
        run_tool(&self.source, "zfs", &["destroy", &self.snapshot]).map(|_| ())
    }
}

impl Drop for ZfsGuard {
    fn drop(&mut self) {
        if !self.done {
            if let Err(e) = self.destroy() {
                tracing::error!(snapshot = %self.snapshot, error = %e, "cannot destroy the temporary ZFS snapshot; run zfs destroy by hand");
            }
        }
    }
}

impl Source for ZfsSource {
    fn kind(&self) -> &str {
        "zfs"
    }

    fn paths(&self) -> Vec<String> {
        vec![self.spec.dataset.clone()]
    }

    fn run(&mut self, ctx: &mut BackupContext<'_>, parent: Option<&Tree>) -> Result<SourceOutput> {
        let mountpoint = run_tool(
            &self.name,
            "zfs",
            &["get", "-H", "-o", "value", "mountpoint", &self.spec.dataset],
        )?
        .trim()
        .to_string();
        if !mountpoint.starts_with('/') {
            return Err(Error::source_failed(self.name.clone(), format!("dataset {} is not mounted (mountpoint {mountpoint:?}); mount it or back up a mounted dataset", self.spec.dataset)));
        }
        let snap = snapshot_name();
        let full = format!("{}@{snap}", self.spec.dataset);
        let consistency_time = Utc::now();
        run_tool(&self.name, "zfs", &["snapshot", &full])?;
        let mut guard = ZfsGuard {
            snapshot: full.clone(),
            source: self.name.clone(),
            done: false,
        };
        let path = std::path::Path::new(&mountpoint)
            .join(".zfs/snapshot")
            .join(&snap);
        let top = self
            .spec
            .dataset
            .rsplit('/')
            .next()
            .unwrap_or(&self.spec.dataset)
            .to_string();
        let out = DirSource::named(path, top)?.run(ctx, parent)?;
        if let Err(e) = guard.destroy() {
            ctx.warn(
                format!(
                    "backup is complete but the ZFS snapshot {full} could not be destroyed: {e}"
                ),
                false,
            );
        }
        Ok(SourceOutput {
            tree: out.tree,
            consistency_time,
            meta: json!({"dataset": self.spec.dataset, "snapshot": full}),
        })
    }
}
