//! Restore drills: restore a snapshot into a throwaway environment, run the restore tests,
//! and measure RTO and RPO against the documented objectives.
//!
//! - [`env`](mod@env) — throwaway environments (ephemeral PostgreSQL/MariaDB servers) drills restore into;
//! - [`restore_tests`] — the restore-test files (what to check);
//! - [`checks`] — running them against a restored database or tree;
//! - [`measure`] — phase timing, RTO/RPO, the injected clock;
//! - [`database`] — drills of PostgreSQL/MariaDB snapshots ([`database::DbDrill`]);
//! - [`set`] — a recovery-point set's file members restored beside its database;
//! - the report types here: a drill's outcome is data ([`DrillReport`]), whatever happened.

pub mod checks;
pub mod database;
pub mod env;
pub mod measure;
pub mod preflight;
pub mod restore_tests;
pub mod set;
pub mod sql;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::ExitCode;
use crate::ids::SnapshotId;
use crate::repo::snapshot::Snapshot;
use crate::repo::Repository;
use crate::sys::Cancel;
use crate::sys::Clock;
use checks::{CheckResult, CheckStatus, CheckTarget};
use measure::{Objective, Phase, PhaseTiming, Stopwatch};
use restore_tests::RestoreTests;

/// The outcome class of a drill: one type, shared with the catalog that records it.
pub use crate::catalog::DrillResult;

/// Why a drill could not finish, classified where it happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DrillFailure {
    /// The throwaway environment could not be started.
    Provision,
    /// The snapshot could not be read from the repository.
    Fetch,
    /// The snapshot could not be loaded into the environment.
    Load,
    /// The restore tests could not run (not: a test failed).
    Checks,
    /// The environment could not be removed.
    Teardown,
    /// The restore target's disk or quota ran full (exit 15).
    NoSpace,
    /// The backup itself is damaged: a blob failed its authentication or hash while being
    /// restored (exit 13).
    Damaged,
    Interrupted,
}

/// A drill's infrastructure failure: its class and the message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrillError {
    pub kind: DrillFailure,
    pub message: String,
    /// For [`DrillFailure::Damaged`]: the pack that failed its check, when known.
    pub pack: Option<crate::ids::PackId>,
}

impl std::fmt::Display for DrillError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl DrillError {
    pub fn new(kind: DrillFailure, message: impl Into<String>) -> Self {
        DrillError {
            kind,
            message: message.into(),
            pack: None,
        }
    }

    /// A damaged backup met while restoring: the verdict names the pack that failed its
    /// check (looked up in `index` when the error names a blob), so the ledger can mark it.
    pub fn damaged(context: &str, e: &crate::Error, index: &crate::repo::index::Index) -> Self {
        let pack = damaged_pack(index, e);
        let mut d = DrillError::new(DrillFailure::Damaged, format!("{context}: {e}"));
        if let Some(p) = pack {
            if !d.message.contains(&p.to_hex()) {
                d.message.push_str(&format!(" (in pack {})", p.to_hex()));
            }
        }
        d.pack = pack;
        d
    }

    /// A library error met in phase `kind`: a full disk (typed by the store or I/O layer)
    /// is [`DrillFailure::NoSpace`], cancellation is [`DrillFailure::Interrupted`].
    pub fn from_error(kind: DrillFailure, context: &str, e: &crate::Error) -> Self {
        let kind = match e {
            crate::Error::Interrupted => DrillFailure::Interrupted,
            crate::Error::Integrity { .. } => DrillFailure::Damaged,
            e if e.exit_code() == ExitCode::NoSpace => DrillFailure::NoSpace,
            _ => kind,
        };
        DrillError::new(kind, format!("{context}: {e}"))
    }

    /// A child tool's failure text (a loader, a server): classified as [`DrillFailure::NoSpace`]
    /// when the tool says its disk or quota ran full.
    pub fn from_tool(kind: DrillFailure, message: String) -> Self {
        let kind = if says_out_of_space(&message) {
            DrillFailure::NoSpace
        } else {
            kind
        };
        DrillError::new(kind, message)
    }
}

/// The pack an integrity error points at: named by the error itself (`pack <id>`), or the
/// pack that holds the blob it names (`blob <id>`).
pub fn damaged_pack(
    index: &crate::repo::index::Index,
    e: &crate::Error,
) -> Option<crate::ids::PackId> {
    let crate::Error::Integrity { object, .. } = e else {
        return None;
    };
    let (what, id) = object.split_once(' ')?;
    match what {
        "pack" => id.parse().ok(),
        "blob" => {
            let blob: crate::ids::BlobId = id.parse().ok()?;
            index.get(&blob).map(|loc| index.pack(loc.pack).0)
        }
        _ => None,
    }
}

/// Whether a tool's text says a disk or quota ran full (the restore target's file system,
/// PostgreSQL's "could not extend file", MariaDB's "table is full" / errno 28).
fn says_out_of_space(error: &str) -> bool {
    const SIGNS: [&str; 8] = [
        "No space left on device",
        "out of space",
        "os error 28",
        "ENOSPC",
        "Disk quota exceeded",
        "os error 122",
        "Disk full",
        "errno: 28",
    ];
    SIGNS.iter().any(|s| error.contains(s))
        || (error.contains("The table") && error.contains("is full"))
}

impl DrillResult {
    pub fn exit_code(self) -> ExitCode {
        match self {
            DrillResult::Passed => ExitCode::Ok,
            DrillResult::CheckFailed => ExitCode::DrillCheckFailed,
            DrillResult::ObjectiveMissed => ExitCode::ObjectiveMissed,
            DrillResult::InfraFailed => ExitCode::Error,
            DrillResult::Damaged => ExitCode::Integrity,
        }
    }
}

/// Objectives a drill is judged against.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Targets {
    pub rto: Option<Duration>,
    pub rpo: Option<Duration>,
}

/// Everything a drill found: the evidence for reports and the catalog.
#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    pub id: String,
    pub plan: Option<String>,
    pub job: Option<String>,
    pub region: Option<String>,
    pub environment: String,
    pub snapshot_id: SnapshotId,
    pub snapshot_time: DateTime<Utc>,
    pub consistency_time: DateTime<Utc>,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub phases: Vec<PhaseTiming>,
    pub checks: Vec<CheckResult>,
    pub rto: Objective,
    pub rpo: Objective,
    pub result: DrillResult,
    /// Why the drill could not finish, for `InfraFailed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The class of that failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<DrillFailure>,
    /// For a damaged backup: the pack that failed its check (marked damaged in the ledger).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub damaged_pack: Option<String>,
    /// Where the kept environment is (with `--keep`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept: Option<String>,
    /// The drill of a recovery-point set: the set and its members.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub set: Option<set::SetInfo>,
    /// The tools that loaded the snapshot (`pg_restore`, `psql`, `mariadb`), each with the
    /// first line of its `--version`; empty for a directory drill.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub restore_tools: std::collections::BTreeMap<String, String>,
    /// The version of the server the snapshot was loaded into, as it reports it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore_server_version: Option<String>,
}

impl DrillReport {
    /// The drill's exit code: its result's, except that an infrastructure failure caused by
    /// a full disk or quota on the restore target is 15 (out of space), so alerting can tell
    /// "the drill host needs room" from "the drill broke".
    pub fn exit_code(&self) -> ExitCode {
        match (&self.result, self.failure) {
            (DrillResult::InfraFailed, Some(DrillFailure::NoSpace)) => ExitCode::NoSpace,
            (r, _) => r.exit_code(),
        }
    }

    /// Judges the drill from its checks and measurements.
    pub fn judge(
        sw: &Stopwatch,
        checks: &[CheckResult],
        consistency_time: DateTime<Utc>,
        targets: Targets,
        error: Option<&DrillError>,
    ) -> (Objective, Objective, DrillResult) {
        let rpo = Objective::judge(sw.rpo(consistency_time), targets.rpo);
        let rto = match sw.rto() {
            Some(d) => Objective::judge(d, targets.rto),
            None => Objective {
                measured_secs: (sw.now() - sw.start).num_milliseconds().max(0) as f64 / 1000.0,
                target_secs: targets.rto.map(|t| t.as_secs_f64()),
                met: false,
            },
        };
        let result = if error.is_some_and(|e| e.kind == DrillFailure::Damaged) {
            DrillResult::Damaged
        } else if error.is_some() {
            DrillResult::InfraFailed
        } else if checks.iter().any(|c| c.status == CheckStatus::Failed) {
            DrillResult::CheckFailed
        } else if !rto.met || !rpo.met {
            DrillResult::ObjectiveMissed
        } else {
            DrillResult::Passed
        };
        (rto, rpo, result)
    }
}

/// What every drill needs, whatever it restores into: the snapshot, the tests, the
/// objectives, where it is recorded, and how it is timed and interrupted.
pub struct DrillContext<'a> {
    pub repo: &'a Repository,
    pub snapshot_id: SnapshotId,
    pub snapshot: &'a Snapshot,
    pub tests: &'a RestoreTests,
    pub targets: Targets,
    pub plan: Option<String>,
    pub job: Option<String>,
    pub region: Option<String>,
    pub keep: bool,
    pub clock: Arc<dyn Clock>,
    pub cancel: Cancel,
}

impl DrillContext<'_> {
    /// Judges the finished drill and builds its report.
    pub(crate) fn report(
        self,
        id: String,
        environment: &str,
        sw: &Stopwatch,
        checks: Vec<CheckResult>,
        error: Option<DrillError>,
        kept: Option<String>,
    ) -> DrillReport {
        let (rto, rpo, result) = DrillReport::judge(
            sw,
            &checks,
            self.snapshot.consistency_time,
            self.targets,
            error.as_ref(),
        );
        DrillReport {
            id,
            plan: self.plan,
            job: self.job,
            region: self.region,
            environment: environment.to_string(),
            snapshot_id: self.snapshot_id,
            snapshot_time: self.snapshot.time,
            consistency_time: self.snapshot.consistency_time,
            started: sw.start,
            finished: sw.now(),
            phases: sw.phases.clone(),
            checks,
            rto,
            rpo,
            result,
            failure: error.as_ref().map(|e| e.kind),
            damaged_pack: error.as_ref().and_then(|e| e.pack).map(|p| p.to_hex()),
            error: error.map(|e| e.message),
            kept,
            set: None,
            restore_tools: Default::default(),
            restore_server_version: None,
        }
    }
}

/// A drill of a file-tree snapshot (directories, volumes) into a throwaway directory.
pub struct DirDrill<'a> {
    pub ctx: DrillContext<'a>,
    pub progress: indicatif::ProgressBar,
}

pub fn new_drill_id() -> String {
    format!(
        "{}-{}",
        Utc::now().format("%Y%m%dT%H%M%SZ"),
        hex::encode(rand::random::<[u8; 3]>())
    )
}

impl DirDrill<'_> {
    pub async fn run(self) -> DrillReport {
        let id = new_drill_id();
        let mut sw = Stopwatch::start(self.ctx.clock.clone());
        let mut checks = Vec::new();
        let mut error = None;
        let mut kept = None;

        sw.begin(Phase::Provision);
        let dir = tempfile::Builder::new()
            .prefix("lifeboat-env-dir-")
            // Private: a copy of production data.
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir();
        match dir {
            Err(e) => {
                error = Some(DrillError::from_error(
                    DrillFailure::Provision,
                    "cannot create the throwaway directory",
                    &crate::Error::io("create", std::env::temp_dir(), e),
                ))
            }
            Ok(dir) => {
                let target = dir.path().join("restore");
                sw.begin(Phase::Fetch);
                let mut loaded = None;
                let restored = match self.ctx.repo.load_index().await {
                    Ok(index) => {
                        let index = Arc::new(index);
                        loaded = Some(index.clone());
                        crate::restore::restore(
                            self.ctx.repo,
                            index,
                            self.ctx.snapshot,
                            &target,
                            self.progress.clone(),
                            self.ctx.cancel.clone(),
                        )
                        .await
                    }
                    Err(e) => Err(e),
                };
                match restored {
                    Err(e @ crate::Error::Integrity { .. }) if loaded.is_some() => {
                        error = Some(DrillError::damaged(
                            "restore failed: the backup is damaged",
                            &e,
                            loaded.as_deref().expect("checked"),
                        ))
                    }
                    Err(e) => {
                        error = Some(DrillError::from_error(
                            DrillFailure::Fetch,
                            "restore failed",
                            &e,
                        ))
                    }
                    Ok(_) => {
                        sw.begin(Phase::Checks);
                        let t = CheckTarget {
                            sql: None,
                            dir: Some(&target),
                            snapshot: self.ctx.snapshot,
                            drill_start: sw.start,
                            rpo_target: self.ctx.targets.rpo,
                            env: vec![("LIFEBOAT_DRILL_DIR".into(), target.display().to_string())],
                            members: Vec::new(),
                            databases: Vec::new(),
                        };
                        let tests = self.ctx.tests.clone();
                        checks = checks::run_all(&tests, &t);
                        if checks.iter().all(|c| c.status == CheckStatus::Passed) {
                            sw.checks_passed();
                        }
                    }
                }
                sw.begin(Phase::Teardown);
                if self.ctx.keep && error.is_none() {
                    let p: PathBuf = dir.keep();
                    kept = Some(p.join("restore").display().to_string());
                } else {
                    drop(dir);
                }
            }
        }
        sw.end();
        self.ctx.report(id, "directory", &sw, checks, error, kept)
    }
}

/// The packs a restore of `snapshot` reads (every tree and content blob's pack): what a
/// drill that restored it has proven readable, for the verification ledger.
pub async fn snapshot_packs(
    repo: &Repository,
    index: &crate::repo::index::Index,
    snapshot: &Snapshot,
) -> crate::Result<Vec<(crate::ids::PackId, u64)>> {
    let mut packs = std::collections::BTreeSet::new();
    let mut stack = vec![snapshot.tree];
    while let Some(tree_id) = stack.pop() {
        if let Some(loc) = index.get(&tree_id) {
            packs.insert(loc.pack);
        }
        let tree = repo.load_tree(index, &tree_id).await?;
        for node in tree.nodes {
            if let Some(sub) = node.subtree {
                stack.push(sub);
            }
            for b in &node.content {
                if let Some(loc) = index.get(b) {
                    packs.insert(loc.pack);
                }
            }
        }
    }
    Ok(packs.into_iter().map(|p| index.pack(p)).collect())
}

#[cfg(test)]
mod failure_tests {
    use super::*;

    #[test]
    fn failures_are_classified_where_they_arise() {
        let full = crate::Error::Store(crate::store::StoreError::NoSpace {
            key: "/tmp/x".into(),
        });
        let e = DrillError::from_error(DrillFailure::Fetch, "restore failed", &full);
        assert_eq!(e.kind, DrillFailure::NoSpace);
        assert!(e.message.starts_with("restore failed: "), "{}", e.message);
        let e = DrillError::from_error(DrillFailure::Fetch, "x", &crate::Error::Interrupted);
        assert_eq!(e.kind, DrillFailure::Interrupted);
        let e = DrillError::from_error(DrillFailure::Fetch, "x", &crate::Error::Other("y".into()));
        assert_eq!(e.kind, DrillFailure::Fetch);
        let bad = crate::Error::integrity("blob 1234", "authentication failed");
        let e = DrillError::from_error(DrillFailure::Load, "loading failed", &bad);
        assert_eq!(e.kind, DrillFailure::Damaged);
        let pg = "pg_restore: error: could not extend file \"base/16384/16385\": No space left on device";
        assert_eq!(
            DrillError::from_tool(DrillFailure::Load, pg.into()).kind,
            DrillFailure::NoSpace
        );
        let syntax = "ERROR 1064 (42000) at line 12: You have an error in your SQL syntax";
        assert_eq!(
            DrillError::from_tool(DrillFailure::Load, syntax.into()).kind,
            DrillFailure::Load
        );
    }
}
