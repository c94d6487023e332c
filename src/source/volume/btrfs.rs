//! btrfs subvolumes: `btrfs subvolume snapshot -r` into a hidden directory beside the
//! subvolume, a directory-tree backup of that snapshot (stored under the subvolume's own
//! name, so successive runs share a lineage and unchanged files are not re-read), then
//! `btrfs subvolume delete`. A drop guard deletes the snapshot on every exit path (errors,
//! Ctrl-C); snapshots left by a run that was killed outright are recognised by the dead pid
//! in their name and deleted at the start of the next run.
//!
//! The snapshot is crash-consistent: it holds what a power cut at that moment would have
//! left. Applications that replace files without `fsync` before `rename` can leave empty
//! files in it (as they would after a crash); databases and careful writers are consistent.

use std::path::{Path, PathBuf};

use chrono::Utc;
use serde_json::json;

use super::{run_tool, snapshot_name, snapshot_owner};
use crate::repo::tree::Tree;
use crate::source::dir::DirSource;
use crate::source::{BackupContext, Source, SourceOutput};
use crate::sys::process::pid_alive;
use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BtrfsSpec {
    pub subvolume: PathBuf,
    /// Where the temporary snapshot goes (same file system); default: the subvolume's parent.
    pub snapshot_dir: Option<PathBuf>,
}

pub struct BtrfsSource {
    spec: BtrfsSpec,
    name: String,
    /// A read-only snapshot taken by [`Source::freeze`] (recovery-point sets), with its time.
    held: Option<(SnapshotGuard, PathBuf, chrono::DateTime<Utc>)>,
}

impl BtrfsSource {
    pub fn new(spec: BtrfsSpec, job: &str) -> Self {
        BtrfsSource {
            spec,
            name: job.into(),
            held: None,
        }
    }

    fn snapshot_dir(&self) -> PathBuf {
        self.spec.snapshot_dir.clone().unwrap_or_else(|| {
            self.spec
                .subvolume
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("/"))
        })
    }

    /// Deletes snapshots whose creating process is gone.
    fn sweep_orphans(&self, dir: &Path) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = snapshot_owner(&name) {
                if name.starts_with('.') && !pid_alive(pid) {
                    let p = e.path();
                    match run_tool(
                        &self.name,
                        "btrfs",
                        &["subvolume", "delete", &p.to_string_lossy()],
                    ) {
                        Ok(_) => {
                            tracing::warn!(snapshot = %p.display(), "deleted a snapshot left by a killed run")
                        }
                        Err(err) => {
                            tracing::warn!(snapshot = %p.display(), error = %err, "cannot delete a leftover snapshot")
                        }
                    }
                }
            }
        }
    }
}

/// Deletes the read-only snapshot when dropped, whatever happened.
pub struct SnapshotGuard {
    path: PathBuf,
    source: String,
    done: bool,
}

impl SnapshotGuard {
    pub fn delete(&mut self) -> Result<()> {
        self.done = true;
        run_tool(
            &self.source,
            "btrfs",
            &["subvolume", "delete", &self.path.to_string_lossy()],
        )
        .map(|_| ())
    }
}

impl Drop for SnapshotGuard {
    fn drop(&mut self) {
        if !self.done {
            if let Err(e) = self.delete() {
                tracing::error!(snapshot = %self.path.display(), error = %e, "cannot delete the temporary btrfs snapshot; delete it by hand");
            }
        }
    }
}

impl Source for BtrfsSource {
    fn kind(&self) -> &str {
        "btrfs"
    }

    fn paths(&self) -> Vec<String> {
        vec![self.spec.subvolume.display().to_string()]
    }

    /// Takes the read-only snapshot now; `run` reads it.
    fn freeze(&mut self) -> Result<crate::source::Frozen> {
        let held = self.take_snapshot()?;
        let at = held.2;
        self.held = Some(held);
        Ok(crate::source::Frozen {
            capture: crate::repo::set::Capture::FilesystemSnapshot,
            consistency_time: Some(at),
        })
    }

    fn run(&mut self, ctx: &mut BackupContext<'_>, parent: Option<&Tree>) -> Result<SourceOutput> {
        let top = self.top()?;
        let (mut guard, snap, consistency_time) = match self.held.take() {
            Some(h) => h,
            None => self.take_snapshot()?,
        };
        let mut inner = DirSource::named(snap.clone(), top)?;
        let out = inner.run(ctx, parent)?;
        if let Err(e) = guard.delete() {
            ctx.warn(
                format!(
                    "backup is complete but the temporary snapshot {} could not be deleted: {e}",
                    snap.display()
                ),
                false,
            );
        }
        Ok(SourceOutput {
            tree: out.tree,
            consistency_time,
            meta: json!({"subvolume": self.spec.subvolume, "snapshot": snap, "read_only_snapshot": true}),
        })
    }
}

impl BtrfsSource {
    fn top(&self) -> Result<String> {
        self.spec
            .subvolume
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| {
                Error::source_failed(
                    self.name.clone(),
                    format!(
                        "subvolume path {} has no name; give the subvolume's own path",
                        self.spec.subvolume.display()
                    ),
                )
            })
    }

    /// `btrfs subvolume snapshot -r` into the snapshot directory, guarded.
    fn take_snapshot(&mut self) -> Result<(SnapshotGuard, PathBuf, chrono::DateTime<Utc>)> {
        let dir = self.snapshot_dir();
        self.sweep_orphans(&dir);
        self.top()?;
        let snap = dir.join(format!(".{}", snapshot_name()));
        let consistency_time = Utc::now();
        run_tool(
            &self.name,
            "btrfs",
            &[
                "subvolume",
                "snapshot",
                "-r",
                &self.spec.subvolume.to_string_lossy(),
                &snap.to_string_lossy(),
            ],
        )?;
        let guard = SnapshotGuard {
            path: snap.clone(),
            source: self.name.clone(),
            done: false,
        };
        Ok((guard, snap, consistency_time))
    }
}
