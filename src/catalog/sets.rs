//! The `recovery_sets` table ([`SetRow`]: one committed set manifest in one region), and the
//! plan-wide reads `status` and every metrics scrape compute a plan's SLOs and RTO trend
//! from ([`PlanDrill`], [`Catalog::plan_snapshot_times`], [`Catalog::plan_repository_created`])
//! — so that neither opens a repository (derives a key, lists a region).
//!
//! Set rows are written when a manifest commits (`ops::set`), when a sync copies manifests
//! to a region (`ops::record::record_synced`), and by `catalog rebuild` (`rebuild.rs`, with
//! [`upsert_set`]). A set manifest is never deleted from a repository, so neither are its rows
//! (except by `catalog rebuild --forget-missing`, for a region that no longer has it).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{from_ms, ms, Catalog, Result};
use crate::ids::{ObjectId, RepoId};
use crate::repo::set::SetManifest;

/// A committed recovery-point set manifest as the catalog keeps it (per region).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SetRow {
    pub repo_id: RepoId,
    pub region: String,
    /// The manifest's object id (`sets/<id>`).
    pub manifest_id: ObjectId,
    pub plan: String,
    /// The set's name in the plan.
    pub set_name: String,
    /// The id every member snapshot carries.
    pub set_id: String,
    /// When the set's run started (the manifest's `time`).
    pub started: DateTime<Utc>,
    /// The set's one consistency time: its RPO is measured from here.
    pub consistency_time: DateTime<Utc>,
    /// When lifeboat saw the manifest committed in this region (a backup, or a sync that
    /// copied it); `None` for a row rebuilt from the repository, which does not record it.
    pub committed: Option<DateTime<Utc>>,
}

impl SetRow {
    /// The row of manifest `id` in `region`, times at the millisecond precision stored.
    pub fn from_manifest(
        repo: RepoId,
        region: &str,
        id: ObjectId,
        m: &SetManifest,
        committed: Option<DateTime<Utc>>,
    ) -> SetRow {
        SetRow {
            repo_id: repo,
            region: region.into(),
            manifest_id: id,
            plan: m.plan.clone(),
            set_name: m.name.clone(),
            set_id: m.set_id.clone(),
            started: from_ms(ms(m.time)),
            consistency_time: from_ms(ms(m.consistency_time)),
            committed: committed.map(|t| from_ms(ms(t))),
        }
    }
}

/// A drill of a plan, as much of it as the SLOs and the RTO trend need.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanDrill {
    pub drill_id: String,
    pub job: String,
    pub region: String,
    pub started: DateTime<Utc>,
    pub passed: bool,
    /// The measured RTO, whether or not the restore tests passed; `None` when the drill
    /// failed before it measured one.
    pub measured_rto_secs: Option<f64>,
}

const SET_COLUMNS: &str = "repo_id, region, manifest_id, plan, set_name, set_id, started_ms, \
                           consistency_ms, committed_ms";

impl Catalog {
    /// Records that `row.region` holds a committed set manifest. Recording it again keeps
    /// the first commit time known.
    pub async fn record_set(&self, row: &SetRow) -> Result<()> {
        let err = |e| self.query_err("recording a recovery-point set", e);
        let mut tx = self.pool().begin().await.map_err(err)?;
        upsert_set(&mut tx, row).await.map_err(err)?;
        tx.commit().await.map_err(err)
    }

    /// The newest committed recovery point (by consistency time, then manifest id) of set
    /// `set` of `plan` in `region`, in any repository.
    pub async fn newest_set(&self, plan: &str, set: &str, region: &str) -> Result<Option<SetRow>> {
        let row = sqlx::query(&format!(
            "SELECT {SET_COLUMNS} FROM recovery_sets
             WHERE plan = $1 AND set_name = $2 AND region = $3
             ORDER BY consistency_ms DESC, manifest_id DESC LIMIT 1"
        ))
        .bind(plan)
        .bind(set)
        .bind(region)
        .fetch_optional(self.pool())
        .await
        .map_err(|e| self.query_err("reading recovery-point sets", e))?;
        row.map(|r| self.set_row(&r)).transpose()
    }

    /// Every set row of a repository in `region`, oldest first.
    pub async fn sets(&self, repo: &RepoId, region: &str) -> Result<Vec<SetRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {SET_COLUMNS} FROM recovery_sets WHERE repo_id = $1 AND region = $2
             ORDER BY consistency_ms, manifest_id"
        ))
        .bind(repo.to_hex())
        .bind(region)
        .fetch_all(self.pool())
        .await
        .map_err(|e| self.query_err("reading recovery-point sets", e))?;
        rows.iter().map(|r| self.set_row(r)).collect()
    }

    fn set_row(&self, r: &AnyRow) -> Result<SetRow> {
        let get = |e: sqlx::Error| self.malformed("recovery-point set", e);
        let manifest: String = r.try_get("manifest_id").map_err(get)?;
        let what = || format!("recovery-point set manifest {manifest}");
        let repo: String = r.try_get("repo_id").map_err(get)?;
        Ok(SetRow {
            repo_id: repo
                .parse()
                .map_err(|e: String| self.malformed(what(), e))?,
            region: r.try_get("region").map_err(get)?,
            manifest_id: manifest
                .parse()
                .map_err(|e: String| self.malformed(what(), e))?,
            plan: r.try_get("plan").map_err(get)?,
            set_name: r.try_get("set_name").map_err(get)?,
            set_id: r.try_get("set_id").map_err(get)?,
            started: from_ms(r.try_get("started_ms").map_err(get)?),
            consistency_time: from_ms(r.try_get("consistency_ms").map_err(get)?),
            committed: r
                .try_get::<Option<i64>, _>("committed_ms")
                .map_err(get)?
                .map(from_ms),
        })
    }

    /// Every drill of `plan` (all regions and repositories), oldest first.
    pub async fn plan_drills(&self, plan: &str) -> Result<Vec<PlanDrill>> {
        let rows = sqlx::query(
            "SELECT drill_id, job, region, started_ms, result, rto_secs, measured_rto_secs
             FROM drills WHERE plan = $1 ORDER BY started_ms, drill_id",
        )
        .bind(plan)
        .fetch_all(self.pool())
        .await
        .map_err(|e| self.query_err("reading a plan's drills", e))?;
        rows.iter()
            .map(|r| {
                let get = |e: sqlx::Error| self.malformed("drill", e);
                let result: String = r.try_get("result").map_err(get)?;
                let rto: Option<f64> = r.try_get("rto_secs").map_err(get)?;
                let measured: Option<f64> = r.try_get("measured_rto_secs").map_err(get)?;
                Ok(PlanDrill {
                    drill_id: r.try_get("drill_id").map_err(get)?,
                    job: r.try_get("job").map_err(get)?,
                    region: r.try_get("region").map_err(get)?,
                    started: from_ms(r.try_get("started_ms").map_err(get)?),
                    passed: result == "passed",
                    // Drills recorded before schema 3 carry only the RTO of a passing restore.
                    measured_rto_secs: measured.or(rto),
                })
            })
            .collect()
    }

    /// The (job, time) of every snapshot of `plan` taken at or after `since`, in any region
    /// (each pair once): what "a scheduled backup made a snapshot" is judged from.
    pub async fn plan_snapshot_times(
        &self,
        plan: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<(String, DateTime<Utc>)>> {
        let rows = sqlx::query(
            "SELECT DISTINCT job, time_ms FROM snapshots WHERE plan = $1 AND time_ms >= $2
             ORDER BY job, time_ms",
        )
        .bind(plan)
        .bind(ms(since))
        .fetch_all(self.pool())
        .await
        .map_err(|e| self.query_err("reading a plan's snapshots", e))?;
        rows.iter()
            .map(|r| {
                let get = |e: sqlx::Error| self.malformed("snapshot", e);
                Ok((
                    r.try_get("job").map_err(get)?,
                    from_ms(r.try_get("time_ms").map_err(get)?),
                ))
            })
            .collect()
    }

    /// When the repositories `plan`'s backups, snapshots and drills were recorded in were
    /// created (the earliest, when there were several); `None` when none is recorded with
    /// its creation time.
    pub async fn plan_repository_created(&self, plan: &str) -> Result<Option<DateTime<Utc>>> {
        let row = sqlx::query(
            "SELECT MIN(created_ms) AS created_ms FROM repositories WHERE repo_id IN (
                 SELECT repo_id FROM backup_runs WHERE plan = $1
                 UNION SELECT repo_id FROM snapshots WHERE plan = $1
                 UNION SELECT repo_id FROM drills WHERE plan = $1)",
        )
        .bind(plan)
        .fetch_one(self.pool())
        .await
        .map_err(|e| self.query_err("reading a plan's repository", e))?;
        Ok(row
            .try_get::<Option<i64>, _>("created_ms")
            .map_err(|e| self.malformed("repository", e))?
            .map(from_ms))
    }
}

/// Inserts a set row, or refreshes it keeping the commit time first recorded.
pub(super) async fn upsert_set(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    row: &SetRow,
) -> std::result::Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "INSERT INTO recovery_sets ({SET_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (repo_id, region, manifest_id) DO UPDATE SET plan = excluded.plan,
             set_name = excluded.set_name, set_id = excluded.set_id,
             started_ms = excluded.started_ms, consistency_ms = excluded.consistency_ms,
             committed_ms = COALESCE(recovery_sets.committed_ms, excluded.committed_ms)"
    ))
    .bind(row.repo_id.to_hex())
    .bind(&row.region)
    .bind(row.manifest_id.to_hex())
    .bind(&row.plan)
    .bind(&row.set_name)
    .bind(&row.set_id)
    .bind(ms(row.started))
    .bind(ms(row.consistency_time))
    .bind(row.committed.map(ms))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Removes a set row (`catalog rebuild --forget-missing`); how many rows went (0 or 1).
pub(super) async fn delete_set(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    repo: &RepoId,
    region: &str,
    id: &ObjectId,
) -> std::result::Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM recovery_sets WHERE repo_id = $1 AND region = $2 AND manifest_id = $3",
    )
    .bind(repo.to_hex())
    .bind(region)
    .bind(id.to_hex())
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}
