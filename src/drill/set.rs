//! The drill of a recovery-point set: the set's database member is drilled by
//! [`super::database::DbDrill`] as usual, and with it every file-tree member (directory,
//! btrfs) is restored into one private scratch directory beside the throwaway server, so
//! the restore tests can span members: `[[file_refs]]` (rows naming files) and
//! `[[command]]` smoke tests get the database's connection details and every member's
//! directory in their environment.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{DrillError, DrillFailure};
use crate::ids::SnapshotId;
use crate::repo::index::Index;
use crate::repo::set::Capture;
use crate::repo::snapshot::Snapshot;
use crate::repo::Repository;
use crate::sys::Cancel;

/// What a drill report says about the set it drilled.
#[derive(Debug, Clone, Serialize)]
pub struct SetInfo {
    pub name: String,
    pub set_id: String,
    /// The set manifest's id.
    pub manifest: String,
    /// The set's one consistency time (the drill's RPO is measured from it).
    pub consistency_time: DateTime<Utc>,
    pub members: Vec<SetMemberInfo>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SetMemberInfo {
    pub job: String,
    pub kind: String,
    pub snapshot_id: SnapshotId,
    pub capture: Capture,
}

/// The file-tree members a set's database drill restores beside the database.
#[derive(Debug, Clone)]
pub struct SetDrill {
    pub info: SetInfo,
    /// (job, snapshot id, snapshot) of every member that is not the database.
    pub trees: Vec<(String, SnapshotId, Snapshot)>,
}

/// The environment variable naming member `job`'s restored tree:
/// `LIFEBOAT_SET_DIR_<JOB>` (upper case, anything but letters and digits as `_`).
pub fn member_dir_var(job: &str) -> String {
    let name: String = job
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("LIFEBOAT_SET_DIR_{name}")
}

/// Restores every tree member into `root/<job>` and returns each member's tree root: the
/// single top-level directory of a one-path snapshot (what the member's job backed up,
/// e.g. `root/uploads/uploads`), else `root/<job>`.
pub async fn restore_trees(
    repo: &Repository,
    index: Arc<Index>,
    set: &SetDrill,
    root: &Path,
    cancel: &Cancel,
) -> Result<Vec<(String, PathBuf)>, DrillError> {
    let mut out = Vec::new();
    for (job, id, snap) in &set.trees {
        let target = root.join(job);
        let res = crate::restore::restore(
            repo,
            index.clone(),
            snap,
            &target,
            indicatif::ProgressBar::hidden(),
            cancel.clone(),
        )
        .await;
        match res {
            Ok(_) => {}
            Err(e @ crate::Error::Integrity { .. }) => {
                return Err(DrillError::damaged(
                    &format!(
                        "restoring member {job} (snapshot {}) failed: the backup is damaged",
                        id.short()
                    ),
                    &e,
                    &index,
                ))
            }
            Err(e) => {
                return Err(DrillError::from_error(
                    DrillFailure::Fetch,
                    &format!("restoring member {job} (snapshot {})", id.short()),
                    &e,
                ))
            }
        }
        let top = match snap.paths.len() {
            1 => single_dir(&target),
            _ => None,
        };
        out.push((job.clone(), top.unwrap_or(target)));
    }
    Ok(out)
}

/// The one directory inside `dir`, if that is all it holds.
fn single_dir(dir: &Path) -> Option<PathBuf> {
    let mut it = std::fs::read_dir(dir).ok()?.flatten();
    let first = it.next()?;
    if it.next().is_some() || !first.file_type().ok()?.is_dir() {
        return None;
    }
    Some(first.path())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_dirs_have_shell_friendly_names() {
        assert_eq!(member_dir_var("uploads"), "LIFEBOAT_SET_DIR_UPLOADS");
        assert_eq!(
            member_dir_var("app-files.v2"),
            "LIFEBOAT_SET_DIR_APP_FILES_V2"
        );
    }
}
