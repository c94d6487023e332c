//! The `backup_runs` table: one row per backup run and destination (region), with how it
//! ended ([`RunStatus`]), its exit code, snapshot and byte counts. Runs leave no trace in the
//! repository (a failed one writes nothing), so `catalog rebuild` cannot re-create them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{ms, Catalog, Result, RunId};
use crate::ids::{RepoId, SnapshotId};

impl Catalog {
    /// Records one backup run to one destination (region). Re-recording the same run id
    /// replaces the row (a run that finishes after a crash-restart).
    pub async fn record_backup_run(&self, run: &BackupRun) -> Result<()> {
        sqlx::query(
            "INSERT INTO backup_runs (run_id, repo_id, plan, job, region, host, started_ms,
                 finished_ms, status, exit_code, snapshot_id, bytes_processed, bytes_added,
                 bytes_stored, error)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
             ON CONFLICT (run_id) DO UPDATE SET finished_ms = excluded.finished_ms,
                 status = excluded.status, exit_code = excluded.exit_code,
                 snapshot_id = excluded.snapshot_id, bytes_processed = excluded.bytes_processed,
                 bytes_added = excluded.bytes_added, bytes_stored = excluded.bytes_stored,
                 error = excluded.error",
        )
        .bind(&run.run_id.0)
        .bind(run.repo_id.to_hex())
        .bind(&run.plan)
        .bind(&run.job)
        .bind(&run.region)
        .bind(&run.host)
        .bind(ms(run.started))
        .bind(ms(run.finished))
        .bind(run.status.as_str())
        .bind(run.exit_code as i64)
        .bind(run.snapshot_id.map(|s| s.to_hex()))
        .bind(run.bytes_processed as i64)
        .bind(run.bytes_added as i64)
        .bind(run.bytes_stored as i64)
        .bind(run.error.clone())
        .execute(&self.pool)
        .await
        .map_err(|e| self.query_err("recording a backup run", e))?;
        Ok(())
    }
}

/// How a backup run ended, per destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Ok,
    /// Committed, but some files could not be read or some regions failed.
    Partial,
    Failed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Ok => "ok",
            RunStatus::Partial => "partial",
            RunStatus::Failed => "failed",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ok" => RunStatus::Ok,
            "partial" => RunStatus::Partial,
            "failed" => RunStatus::Failed,
            _ => return None,
        })
    }
}

/// One backup run to one destination.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackupRun {
    pub run_id: RunId,
    pub repo_id: RepoId,
    /// Plan and job names; empty for a plain `lifeboat backup`.
    pub plan: String,
    pub job: String,
    pub region: String,
    pub host: String,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub status: RunStatus,
    pub exit_code: u8,
    pub snapshot_id: Option<SnapshotId>,
    pub bytes_processed: u64,
    pub bytes_added: u64,
    pub bytes_stored: u64,
    pub error: Option<String>,
}
