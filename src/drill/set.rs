//! The drill of a recovery-point set: the set's first database member is drilled by
//! [`super::database::DbDrill`] as usual, its other database members of the same engine
//! are loaded into the same server beside it, those of the other engine (a set of
//! PostgreSQL and MariaDB databases) into a second throwaway server started beside the
//! first, and every file-tree member (directory, btrfs) is restored into one private
//! scratch directory beside them, so the restore tests can span members: `[[file_refs]]`
//! (rows naming files) and `[[command]]` smoke tests get every server's connection details
//! and every member's database and directory in their environment.

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
    /// (job, snapshot id, snapshot) of every member that is not a database.
    pub trees: Vec<(String, SnapshotId, Snapshot)>,
    /// The job of the database member the drill itself loads (its snapshot is the drill's).
    pub db_job: String,
    /// The set's other database members, loaded into the drill's server (same engine) or
    /// the second server of the other engine.
    pub databases: Vec<SetDatabase>,
}

/// A set's database member beyond the first, loaded beside it.
#[derive(Debug, Clone)]
pub struct SetDatabase {
    pub job: String,
    /// Its engine, which decides the server it is loaded into.
    pub kind: crate::repo::snapshot::DbKind,
    pub snapshot_id: SnapshotId,
    pub snapshot: Snapshot,
}

/// Where a set's database member was loaded on the drill's servers.
#[derive(Debug, Clone)]
pub struct SetDb {
    pub job: String,
    pub database: String,
    /// The engine: which of the drill's servers holds it.
    pub kind: crate::repo::snapshot::DbKind,
}

/// The name each database member of a set is restored under on one server: its original
/// name (as the job dumps it) where that is free, else `lifeboat_set_<job>` (two members
/// dumping databases of the same name, or a name already taken). `jobs` is (job, original
/// name) of the members loaded into that server, the drill's own database first.
pub fn member_db_names(jobs: &[(String, Option<String>)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (job, orig) in jobs {
        let fallback = || {
            format!(
                "lifeboat_set_{}",
                crate::drill::env::scratch::db_name_part(job)
            )
        };
        let name = match orig {
            Some(o) if !out.iter().any(|(_, n)| n == o) => o.clone(),
            _ => fallback(),
        };
        out.push((job.clone(), name));
    }
    out
}

/// The environment variable naming database member `job`'s restored database:
/// `LIFEBOAT_SET_DB_<JOB>`. Every database of a set's drill is on the one server the
/// usual variables (`PGHOST`, `PGPORT`, `PGUSER`, …) reach.
pub fn member_db_var(job: &str) -> String {
    format!("LIFEBOAT_SET_DB_{}", var_suffix(job))
}

/// The environment variable holding a URL of database member `job`'s restored database
/// (`postgres://…` or `mariadb://…`, no password): `LIFEBOAT_SET_URL_<JOB>`. With a
/// PostgreSQL and a MariaDB member, each URL reaches its own engine's server.
pub fn member_url_var(job: &str) -> String {
    format!("LIFEBOAT_SET_URL_{}", var_suffix(job))
}

/// The environment variable naming member `job`'s restored tree:
/// `LIFEBOAT_SET_DIR_<JOB>` (upper case, anything but letters and digits as `_`).
pub fn member_dir_var(job: &str) -> String {
    format!("LIFEBOAT_SET_DIR_{}", var_suffix(job))
}

fn var_suffix(job: &str) -> String {
    job.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
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
        assert_eq!(member_db_var("orders-db"), "LIFEBOAT_SET_DB_ORDERS_DB");
        assert_eq!(member_url_var("legacy.db"), "LIFEBOAT_SET_URL_LEGACY_DB");
    }

    #[test]
    fn member_databases_keep_their_names_unless_taken() {
        let n = member_db_names(&[
            ("customers".into(), Some("app".into())),
            ("orders".into(), Some("shop".into())),
            ("orders-2".into(), Some("app".into())),
            ("x".into(), None),
        ]);
        assert_eq!(
            n,
            vec![
                ("customers".to_string(), "app".to_string()),
                ("orders".to_string(), "shop".to_string()),
                ("orders-2".to_string(), "lifeboat_set_orders_2".to_string()),
                ("x".to_string(), "lifeboat_set_x".to_string()),
            ]
        );
    }
}
