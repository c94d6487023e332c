//! The `drills`, `drill_phases` and `drill_checks` tables: one row per drill ([`DrillRecord`]:
//! result, measured RTO/RPO against their targets), its timed phases and the restore tests it
//! ran, written together in one transaction. `status` and `history` read drills through
//! [`Catalog::drill_row`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{from_ms, ms, Catalog, Result, RunId};
use crate::ids::{RepoId, SnapshotId};

impl Catalog {
    /// Records a drill with its phases and checks, atomically.
    pub async fn record_drill(&self, d: &DrillRecord) -> Result<()> {
        let err = |e| self.query_err("recording a drill", e);
        let mut tx = self.pool.begin().await.map_err(err)?;
        sqlx::query(
            "INSERT INTO drills (drill_id, repo_id, plan, job, region, snapshot_id, started_ms,
                 finished_ms, result, rto_secs, rpo_secs, rto_target_secs, rpo_target_secs, detail,
                 measured_rto_secs)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        )
        .bind(&d.drill_id.0)
        .bind(d.repo_id.to_hex())
        .bind(&d.plan)
        .bind(&d.job)
        .bind(&d.region)
        .bind(d.snapshot_id.to_hex())
        .bind(ms(d.started))
        .bind(ms(d.finished))
        .bind(d.result.as_str())
        .bind(d.rto_secs)
        .bind(d.rpo_secs)
        .bind(d.rto_target_secs)
        .bind(d.rpo_target_secs)
        .bind(d.detail.clone())
        .bind(d.measured_rto_secs)
        // Not a cached prepared statement: sqlx's Any driver sends a missing f64 to
        // PostgreSQL as a float4 NULL, so a statement first prepared with one (an RTO not
        // measured) would then refuse every measured RTO ("incorrect binary data format").
        .persistent(false)
        .execute(&mut *tx)
        .await
        .map_err(err)?;
        for (seq, p) in d.phases.iter().enumerate() {
            sqlx::query(
                "INSERT INTO drill_phases (drill_id, seq, phase, started_ms, secs)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&d.drill_id.0)
            .bind(seq as i64)
            .bind(&p.phase)
            .bind(ms(p.started))
            .bind(p.secs)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        }
        for (seq, c) in d.checks.iter().enumerate() {
            sqlx::query(
                "INSERT INTO drill_checks (drill_id, seq, name, passed, detail)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&d.drill_id.0)
            .bind(seq as i64)
            .bind(&c.name)
            .bind(c.passed as i64)
            .bind(&c.detail)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        }
        tx.commit().await.map_err(err)?;
        Ok(())
    }

    /// One drill with its phases and checks, as recorded.
    pub async fn drill(&self, id: &RunId) -> Result<Option<DrillRecord>> {
        let err = |e| self.query_err("reading a drill", e);
        let Some(r) = sqlx::query(
            "SELECT drill_id, repo_id, plan, job, region, snapshot_id, started_ms, finished_ms,
                    result, rto_secs, rpo_secs, rto_target_secs, rpo_target_secs, detail,
                    measured_rto_secs
             FROM drills WHERE drill_id = $1",
        )
        .bind(&id.0)
        .fetch_optional(&self.pool)
        .await
        .map_err(err)?
        else {
            return Ok(None);
        };
        let mut d = self.drill_row(&r)?;
        let phases = sqlx::query(
            "SELECT phase, started_ms, secs FROM drill_phases WHERE drill_id = $1 ORDER BY seq",
        )
        .bind(&id.0)
        .fetch_all(&self.pool)
        .await
        .map_err(err)?;
        for p in phases {
            let get = |e: sqlx::Error| self.malformed(format!("drill {}", id.0), e);
            d.phases.push(DrillPhase {
                phase: p.try_get("phase").map_err(get)?,
                started: from_ms(p.try_get("started_ms").map_err(get)?),
                secs: p.try_get("secs").map_err(get)?,
            });
        }
        let checks = sqlx::query(
            "SELECT name, passed, detail FROM drill_checks WHERE drill_id = $1 ORDER BY seq",
        )
        .bind(&id.0)
        .fetch_all(&self.pool)
        .await
        .map_err(err)?;
        for c in checks {
            let get = |e: sqlx::Error| self.malformed(format!("drill {}", id.0), e);
            d.checks.push(DrillCheck {
                name: c.try_get("name").map_err(get)?,
                passed: c.try_get::<i64, _>("passed").map_err(get)? != 0,
                detail: c.try_get("detail").map_err(get)?,
            });
        }
        Ok(Some(d))
    }

    pub(crate) fn drill_row(&self, r: &AnyRow) -> Result<DrillRecord> {
        let get = |e: sqlx::Error| self.malformed("drill", e);
        let id: String = r.try_get("drill_id").map_err(get)?;
        let what = || format!("drill {id}");
        let repo: String = r.try_get("repo_id").map_err(get)?;
        let snap: String = r.try_get("snapshot_id").map_err(get)?;
        let result: String = r.try_get("result").map_err(get)?;
        Ok(DrillRecord {
            drill_id: RunId(id.clone()),
            repo_id: repo
                .parse()
                .map_err(|e: String| self.malformed(what(), e))?,
            plan: r.try_get("plan").map_err(get)?,
            job: r.try_get("job").map_err(get)?,
            region: r.try_get("region").map_err(get)?,
            snapshot_id: snap
                .parse()
                .map_err(|e: String| self.malformed(what(), e))?,
            started: from_ms(r.try_get("started_ms").map_err(get)?),
            finished: from_ms(r.try_get("finished_ms").map_err(get)?),
            result: DrillResult::parse(&result)
                .ok_or_else(|| self.malformed(what(), format!("unknown result {result:?}")))?,
            rto_secs: r.try_get("rto_secs").map_err(get)?,
            measured_rto_secs: r.try_get("measured_rto_secs").map_err(get)?,
            rpo_secs: r.try_get("rpo_secs").map_err(get)?,
            rto_target_secs: r.try_get("rto_target_secs").map_err(get)?,
            rpo_target_secs: r.try_get("rpo_target_secs").map_err(get)?,
            detail: r.try_get("detail").map_err(get)?,
            phases: Vec::new(),
            checks: Vec::new(),
        })
    }
}

/// How a drill ended. Each maps to its own exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DrillResult {
    Passed,
    /// The restore ran but a restore test failed (exit 16).
    CheckFailed,
    /// Checks passed but RTO or RPO missed its target (exit 17).
    ObjectiveMissed,
    /// The throwaway environment failed, not the backup (disk full, provisioning).
    InfraFailed,
    /// The backup itself is damaged: a pack failed its integrity check while the drill
    /// restored it (exit 13).
    Damaged,
}

impl DrillResult {
    pub fn as_str(self) -> &'static str {
        match self {
            DrillResult::Passed => "passed",
            DrillResult::CheckFailed => "check_failed",
            DrillResult::ObjectiveMissed => "objective_missed",
            DrillResult::InfraFailed => "infra_failed",
            DrillResult::Damaged => "damaged",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "passed" => DrillResult::Passed,
            "check_failed" => DrillResult::CheckFailed,
            "objective_missed" => DrillResult::ObjectiveMissed,
            "infra_failed" => DrillResult::InfraFailed,
            "damaged" => DrillResult::Damaged,
            _ => return None,
        })
    }
}

/// One timed phase of a drill (provision, fetch, restore, load, checks, teardown…).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DrillPhase {
    pub phase: String,
    pub started: DateTime<Utc>,
    pub secs: f64,
}

/// One restore test run by a drill.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DrillCheck {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

/// A drill as the drill module reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DrillRecord {
    pub drill_id: RunId,
    pub repo_id: RepoId,
    pub plan: String,
    pub job: String,
    pub region: String,
    pub snapshot_id: SnapshotId,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub result: DrillResult,
    /// Measured RTO: drill start until the restored service passed its checks.
    pub rto_secs: Option<f64>,
    /// The measured RTO whether or not the restore tests passed (what the RTO trend is
    /// computed from); `None` when the drill failed before it measured one.
    pub measured_rto_secs: Option<f64>,
    /// The restored snapshot's age at drill time (now − consistency time).
    pub rpo_secs: Option<f64>,
    pub rto_target_secs: Option<f64>,
    pub rpo_target_secs: Option<f64>,
    pub detail: Option<String>,
    pub phases: Vec<DrillPhase>,
    pub checks: Vec<DrillCheck>,
}
