//! LVM logical volumes: `lvcreate --snapshot` of the volume, the snapshot device streamed as
//! a block image, then `lvremove`. A drop guard removes the snapshot on every exit path.
//! Not testable on the project's machines (no device-mapper snapshot target); the commands
//! are LVM's documented ones.

use chrono::Utc;
use serde_json::json;

use super::block::stream_device;
use super::{run_tool, snapshot_name};
use crate::repo::tree::Tree;
use crate::source::{BackupContext, Source, SourceOutput};
use crate::Result;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LvmSpec {
    pub volume_group: String,
    pub logical_volume: String,
    /// Copy-on-write space for the snapshot: `--size` (e.g. `2G`) or, with a `%`,
    /// `--extents` (e.g. `20%ORIGIN`).
    pub snapshot_size: String,
}

pub struct LvmSource {
    spec: LvmSpec,
    name: String,
}

impl LvmSource {
    pub fn new(spec: LvmSpec, job: &str) -> Self {
        LvmSource {
            spec,
            name: job.into(),
        }
    }
}

struct LvGuard {
    lv: String,
    source: String,
    done: bool,
}

impl LvGuard {
    fn remove(&mut self) -> Result<()> {
        self.done = true;
        run_tool(&self.source, "lvremove", &["--yes", &self.lv]).map(|_| ())
    }
}

impl Drop for LvGuard {
    fn drop(&mut self) {
        if !self.done {
            if let Err(e) = self.remove() {
                tracing::error!(lv = %self.lv, error = %e, "cannot remove the temporary LVM snapshot; run lvremove by hand");
            }
        }
    }
}

impl Source for LvmSource {
    fn kind(&self) -> &str {
        "lvm"
    }

    fn paths(&self) -> Vec<String> {
        vec![format!(
            "{}/{}",
            self.spec.volume_group, self.spec.logical_volume
        )]
    }

    fn run(&mut self, ctx: &mut BackupContext<'_>, _parent: Option<&Tree>) -> Result<SourceOutput> {
        let snap = snapshot_name();
        let origin = format!("{}/{}", self.spec.volume_group, self.spec.logical_volume);
        let size_flag = if self.spec.snapshot_size.contains('%') {
            "--extents"
        } else {
            "--size"
        };
        let consistency_time = Utc::now();
        run_tool(
            &self.name,
            "lvcreate",
            &[
                "--snapshot",
                "--name",
                &snap,
                size_flag,
                &self.spec.snapshot_size,
                &origin,
            ],
        )?;
        let mut guard = LvGuard {
            lv: format!("{}/{snap}", self.spec.volume_group),
            source: self.name.clone(),
            done: false,
        };
        let device = std::path::PathBuf::from(format!("/dev/{}/{snap}", self.spec.volume_group));
        let (tree, len, _) = stream_device(ctx, &device, &self.spec.logical_volume, &self.name)?;
        if let Err(e) = guard.remove() {
            ctx.warn(
                format!("backup is complete but the LVM snapshot {snap} could not be removed: {e}"),
                false,
            );
        }
        Ok(SourceOutput {
            tree,
            consistency_time,
            meta: json!({"origin": origin, "snapshot": snap, "file": self.spec.logical_volume, "bytes": len, "restore": "sparse image"}),
        })
    }
}
