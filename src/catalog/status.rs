//! `status` and `history` over the catalog: per job and region the age of the newest snapshot,
//! the age of the newest snapshot a drill proved restorable (the honest RPO), the last drill
//! with its RTO against target, the last run; per region the verification coverage.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{age_secs, from_ms, Catalog, Coverage, DrillResult, Result, RunId, RunStatus};
use crate::ids::{RepoId, SnapshotId};
use crate::repo::retention::FUTURE_TOLERANCE;

/// Which part of the catalog to show. Empty strings / `None` mean "all".
#[derive(Debug, Clone)]
pub struct StatusFilter {
    pub repo: Option<RepoId>,
    pub region: Option<String>,
    pub plan: Option<String>,
    pub job: Option<String>,
    /// Coverage counts packs verified within this window before now.
    pub cycle: std::time::Duration,
}

impl Default for StatusFilter {
    fn default() -> Self {
        StatusFilter {
            repo: None,
            region: None,
            plan: None,
            job: None,
            cycle: std::time::Duration::from_secs(30 * 24 * 3600),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SnapshotRef {
    pub snapshot_id: SnapshotId,
    pub time: DateTime<Utc>,
    pub consistency_time: DateTime<Utc>,
    /// now − consistency time.
    pub age_secs: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DrillSummary {
    pub drill_id: RunId,
    pub snapshot_id: SnapshotId,
    pub finished: DateTime<Utc>,
    pub result: DrillResult,
    pub rto_secs: Option<f64>,
    pub rto_target_secs: Option<f64>,
    /// None when there is no measurement or no target.
    pub rto_met: Option<bool>,
    pub rpo_secs: Option<f64>,
    pub rpo_target_secs: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSummary {
    pub run_id: RunId,
    pub finished: DateTime<Utc>,
    pub status: RunStatus,
    pub exit_code: i64,
    pub error: Option<String>,
}

/// One (repository, plan, job, region).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobStatus {
    pub repo_id: RepoId,
    pub plan: String,
    pub job: String,
    pub region: String,
    pub newest_snapshot: Option<SnapshotRef>,
    /// The newest snapshot a drill restored and checked: its age is the honest RPO.
    pub newest_verified_snapshot: Option<SnapshotRef>,
    pub honest_rpo_secs: Option<f64>,
    /// The RPO target (from the last drill, until plans supply it) and whether the honest RPO
    /// meets it now.
    pub rpo_target_secs: Option<f64>,
    pub rpo_met: Option<bool>,
    pub last_drill: Option<DrillSummary>,
    pub last_run: Option<RunSummary>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusReport {
    pub now: DateTime<Utc>,
    pub jobs: Vec<JobStatus>,
    pub coverage: Vec<Coverage>,
}

/// The last start of a backup or drill of one (job, region) ([`Catalog::last_starts`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LastStart {
    /// `backup` or `drill`.
    pub kind: &'static str,
    pub job: String,
    pub region: String,
    pub started: DateTime<Utc>,
}

/// Which runs to list.
#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    pub repo: Option<RepoId>,
    pub region: Option<String>,
    pub plan: Option<String>,
    pub job: Option<String>,
    /// Newest first; 0 = no limit.
    pub limit: usize,
}

/// One backup run or drill.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryEntry {
    /// `backup` or `drill`.
    pub kind: &'static str,
    pub id: RunId,
    pub repo_id: RepoId,
    pub plan: String,
    pub job: String,
    pub region: String,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    /// ok / partial / failed for backups; passed / check_failed / … for drills.
    pub outcome: String,
    pub snapshot_id: Option<SnapshotId>,
    pub exit_code: Option<i64>,
    pub bytes_added: Option<u64>,
    pub rto_secs: Option<f64>,
    pub rpo_secs: Option<f64>,
    pub error: Option<String>,
}

const FILTER: &str = "($1 = '' OR repo_id = $1) AND ($2 = '' OR region = $2)
     AND ($3 = '' OR plan = $3) AND ($4 = '' OR job = $4)";

type GroupKey = (String, String, String, String);

impl Catalog {
    /// Status per job and region, plus coverage per region.
    pub async fn status(&self, f: &StatusFilter) -> Result<StatusReport> {
        let now = self.now();
        let repo = f.repo.map(|r| r.to_hex()).unwrap_or_default();
        let region = f.region.clone().unwrap_or_default();
        let plan = f.plan.clone().unwrap_or_default();
        let job = f.job.clone().unwrap_or_default();
        let mut groups: BTreeSet<GroupKey> = BTreeSet::new();
        for table in ["snapshots", "backup_runs", "drills"] {
            let sql =
                format!("SELECT DISTINCT repo_id, plan, job, region FROM {table} WHERE {FILTER}");
            let rows = sqlx::query(&sql)
                .bind(&repo)
                .bind(&region)
                .bind(&plan)
                .bind(&job)
                .fetch_all(self.pool())
                .await
                .map_err(|e| self.query_err("listing jobs", e))?;
            for r in rows {
                let get = |e: sqlx::Error| self.malformed(table, e);
                groups.insert((
                    r.try_get("repo_id").map_err(get)?,
                    r.try_get("plan").map_err(get)?,
                    r.try_get("job").map_err(get)?,
                    r.try_get("region").map_err(get)?,
                ));
            }
        }
        let mut jobs = Vec::new();
        for key in &groups {
            jobs.push(self.job_status(key, now).await?);
        }
        let mut coverage = Vec::new();
        let repos: BTreeSet<RepoId> = jobs.iter().map(|j| j.repo_id).chain(f.repo).collect();
        for r in repos {
            for reg in self.ledger_regions(&r).await? {
                if region.is_empty() || reg == region {
                    coverage.push(self.coverage(&r, &reg, f.cycle).await?);
                }
            }
        }
        Ok(StatusReport {
            now,
            jobs,
            coverage,
        })
    }

    async fn job_status(&self, key: &GroupKey, now: DateTime<Utc>) -> Result<JobStatus> {
        let (repo, plan, job, region) = key;
        let err = |e| self.query_err("reading job status", e);
        let bind4 =
            |q: sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments<'static>>| {
                q.bind(repo.clone())
                    .bind(region.clone())
                    .bind(plan.clone())
                    .bind(job.clone())
            };
        // A snapshot dated ahead of now (beyond the clock tolerance) is no honest backup (T16:
        // a forgery, or a host with a wrong clock; the anomaly check names it): taken for the
        // newest, it would show an RPO of zero and hide a missed objective.
        let not_after =
            super::ms(now + chrono::TimeDelta::from_std(FUTURE_TOLERANCE).expect("minutes"));
        let newest = bind4(sqlx::query(
            "SELECT snapshot_id, time_ms, consistency_ms FROM snapshots
             WHERE repo_id = $1 AND region = $2 AND plan = $3 AND job = $4
               AND time_ms <= $5 AND consistency_ms <= $5
             ORDER BY consistency_ms DESC, snapshot_id DESC LIMIT 1",
        ))
        .bind(not_after)
        .fetch_optional(self.pool())
        .await
        .map_err(err)?;
        // A drill whose checks passed proved its snapshot restorable, even if it was too slow.
        let verified = bind4(sqlx::query(
            "SELECT s.snapshot_id, s.time_ms, s.consistency_ms FROM snapshots s
             WHERE s.repo_id = $1 AND s.region = $2 AND s.plan = $3 AND s.job = $4
               AND s.time_ms <= $5 AND s.consistency_ms <= $5
               AND EXISTS (SELECT 1 FROM drills d WHERE d.repo_id = s.repo_id
                   AND d.region = s.region AND d.snapshot_id = s.snapshot_id
                   AND d.result IN ('passed', 'objective_missed'))
             ORDER BY s.consistency_ms DESC, s.snapshot_id DESC LIMIT 1",
        ))
        .bind(not_after)
        .fetch_optional(self.pool())
        .await
        .map_err(err)?;
        let drill = bind4(sqlx::query(
            "SELECT drill_id, repo_id, plan, job, region, snapshot_id, started_ms, finished_ms,
                    result, rto_secs, rpo_secs, rto_target_secs, rpo_target_secs, detail,
                    measured_rto_secs
             FROM drills WHERE repo_id = $1 AND region = $2 AND plan = $3 AND job = $4
             ORDER BY started_ms DESC, drill_id DESC LIMIT 1",
        ))
        .fetch_optional(self.pool())
        .await
        .map_err(err)?;
        let run = bind4(sqlx::query(
            "SELECT run_id, finished_ms, status, exit_code, error FROM backup_runs
             WHERE repo_id = $1 AND region = $2 AND plan = $3 AND job = $4
             ORDER BY started_ms DESC, run_id DESC LIMIT 1",
        ))
        .fetch_optional(self.pool())
        .await
        .map_err(err)?;

        let newest_snapshot = newest.map(|r| self.snapshot_ref(&r, now)).transpose()?;
        let newest_verified_snapshot = verified.map(|r| self.snapshot_ref(&r, now)).transpose()?;
        let last_drill = match drill {
            Some(r) => {
                let d = self.drill_row(&r)?;
                let rto_met = match (d.rto_secs, d.rto_target_secs) {
                    (Some(m), Some(t)) => Some(m <= t),
                    _ => None,
                };
                Some(DrillSummary {
                    drill_id: d.drill_id,
                    snapshot_id: d.snapshot_id,
                    finished: d.finished,
                    result: d.result,
                    rto_secs: d.rto_secs,
                    rto_target_secs: d.rto_target_secs,
                    rto_met,
                    rpo_secs: d.rpo_secs,
                    rpo_target_secs: d.rpo_target_secs,
                })
            }
            None => None,
        };
        let last_run = match run {
            Some(r) => {
                let get = |e: sqlx::Error| self.malformed("backup run", e);
                let status: String = r.try_get("status").map_err(get)?;
                Some(RunSummary {
                    run_id: RunId(r.try_get("run_id").map_err(get)?),
                    finished: from_ms(r.try_get("finished_ms").map_err(get)?),
                    status: RunStatus::parse(&status).ok_or_else(|| {
                        self.malformed("backup run", format!("unknown status {status:?}"))
                    })?,
                    exit_code: r.try_get("exit_code").map_err(get)?,
                    error: r.try_get("error").map_err(get)?,
                })
            }
            None => None,
        };
        let rpo_target_secs = last_drill.as_ref().and_then(|d| d.rpo_target_secs);
        let rpo_met = match (&newest_verified_snapshot, rpo_target_secs) {
            (Some(s), Some(t)) => Some(s.age_secs <= t),
            (None, Some(_)) => Some(false),
            _ => None,
        };
        Ok(JobStatus {
            repo_id: repo
                .parse()
                .map_err(|e: String| self.malformed("job status", e))?,
            plan: plan.clone(),
            job: job.clone(),
            region: region.clone(),
            honest_rpo_secs: newest_verified_snapshot.as_ref().map(|s| s.age_secs),
            rpo_target_secs,
            rpo_met,
            newest_snapshot,
            newest_verified_snapshot,
            last_drill,
            last_run,
        })
    }

    /// When each (job, region) of `plan` last started a backup (`kind` "backup") or a drill
    /// ("drill"): what `run-due` needs to tell what is due.
    pub async fn last_starts(&self, plan: &str) -> Result<Vec<LastStart>> {
        let mut out = Vec::new();
        for (kind, table) in [("backup", "backup_runs"), ("drill", "drills")] {
            let rows = sqlx::query(&format!(
                "SELECT job, region, MAX(started_ms) AS t FROM {table} WHERE plan = $1
                 GROUP BY job, region"
            ))
            .bind(plan)
            .fetch_all(self.pool())
            .await
            .map_err(|e| self.query_err("reading last runs", e))?;
            for r in rows {
                let get = |e: sqlx::Error| self.malformed(table, e);
                out.push(LastStart {
                    kind,
                    job: r.try_get("job").map_err(get)?,
                    region: r.try_get("region").map_err(get)?,
                    started: from_ms(r.try_get::<i64, _>("t").map_err(get)?),
                });
            }
        }
        Ok(out)
    }

    /// The latest backup run of each (plan, job, region) of `plan` (all plans when empty):
    /// what the metrics report as the last backup's duration, bytes and outcome.
    pub async fn last_backup_runs(&self, plan: &str) -> Result<Vec<super::BackupRun>> {
        let rows = sqlx::query(
            "SELECT r.run_id, r.repo_id, r.plan, r.job, r.region, r.host, r.started_ms,
                    r.finished_ms, r.status, r.exit_code, r.snapshot_id, r.bytes_processed,
                    r.bytes_added, r.bytes_stored, r.error
             FROM backup_runs r
             WHERE ($1 = '' OR r.plan = $1) AND r.started_ms = (SELECT MAX(x.started_ms)
                 FROM backup_runs x WHERE x.plan = r.plan AND x.job = r.job
                 AND x.region = r.region)
             ORDER BY r.plan, r.job, r.region, r.run_id",
        )
        .bind(plan)
        .fetch_all(self.pool())
        .await
        .map_err(|e| self.query_err("reading the last backup runs", e))?;
        let mut out: Vec<super::BackupRun> = Vec::new();
        for r in rows {
            let get = |e: sqlx::Error| self.malformed("backup run", e);
            let id: String = r.try_get("run_id").map_err(get)?;
            let repo: String = r.try_get("repo_id").map_err(get)?;
            let status: String = r.try_get("status").map_err(get)?;
            let snap: Option<String> = r.try_get("snapshot_id").map_err(get)?;
            let run = super::BackupRun {
                repo_id: repo
                    .parse()
                    .map_err(|e: String| self.malformed(format!("backup run {id}"), e))?,
                plan: r.try_get("plan").map_err(get)?,
                job: r.try_get("job").map_err(get)?,
                region: r.try_get("region").map_err(get)?,
                host: r.try_get("host").map_err(get)?,
                started: from_ms(r.try_get("started_ms").map_err(get)?),
                finished: from_ms(r.try_get("finished_ms").map_err(get)?),
                status: RunStatus::parse(&status).ok_or_else(|| {
                    self.malformed("backup run", format!("unknown status {status:?}"))
                })?,
                exit_code: r.try_get::<i64, _>("exit_code").map_err(get)? as u8,
                snapshot_id: snap
                    .map(|s| s.parse())
                    .transpose()
                    .map_err(|e: String| self.malformed(format!("backup run {id}"), e))?,
                bytes_processed: r.try_get::<i64, _>("bytes_processed").map_err(get)? as u64,
                bytes_added: r.try_get::<i64, _>("bytes_added").map_err(get)? as u64,
                bytes_stored: r.try_get::<i64, _>("bytes_stored").map_err(get)? as u64,
                error: r.try_get("error").map_err(get)?,
                run_id: RunId(id),
            };
            // Two runs started in the same millisecond: keep one.
            let same = |l: &super::BackupRun| {
                (&l.plan, &l.job, &l.region) == (&run.plan, &run.job, &run.region)
            };
            if out.last().is_none_or(|l| !same(l)) {
                out.push(run);
            }
        }
        Ok(out)
    }

    /// When `lifeboat verify` last read packs of `plan`'s repository in `region` (`None`:
    /// never).
    pub async fn last_verified(&self, plan: &str, region: &str) -> Result<Option<DateTime<Utc>>> {
        let row = sqlx::query(
            "SELECT MAX(verified_ms) AS t FROM pack_verifications
             WHERE region = $2 AND verified_by = 'verify'
               AND repo_id IN (SELECT repo_id FROM snapshots WHERE plan = $1)",
        )
        .bind(plan)
        .bind(region)
        .fetch_one(self.pool())
        .await
        .map_err(|e| self.query_err("reading the last verification", e))?;
        let t: Option<i64> = row
            .try_get("t")
            .map_err(|e| self.malformed("pack_verifications", e))?;
        Ok(t.map(from_ms))
    }

    fn snapshot_ref(&self, r: &AnyRow, now: DateTime<Utc>) -> Result<SnapshotRef> {
        let get = |e: sqlx::Error| self.malformed("snapshot", e);
        let hex: String = r.try_get("snapshot_id").map_err(get)?;
        let consistency_time = from_ms(r.try_get("consistency_ms").map_err(get)?);
        Ok(SnapshotRef {
            snapshot_id: hex
                .parse()
                .map_err(|e: String| self.malformed(format!("snapshot {hex}"), e))?,
            time: from_ms(r.try_get("time_ms").map_err(get)?),
            consistency_time,
            age_secs: age_secs(now, consistency_time),
        })
    }

    /// Backup runs and drills, newest first.
    pub async fn history(&self, f: &HistoryFilter) -> Result<Vec<HistoryEntry>> {
        let err = |e| self.query_err("reading history", e);
        let repo = f.repo.map(|r| r.to_hex()).unwrap_or_default();
        let region = f.region.clone().unwrap_or_default();
        let plan = f.plan.clone().unwrap_or_default();
        let job = f.job.clone().unwrap_or_default();
        let limit = if f.limit == 0 {
            i64::MAX
        } else {
            f.limit as i64
        };
        let runs = sqlx::query(&format!(
            "SELECT run_id, repo_id, plan, job, region, started_ms, finished_ms, status, exit_code,
                    snapshot_id, bytes_added, error
             FROM backup_runs WHERE {FILTER} ORDER BY started_ms DESC, run_id DESC LIMIT $5"
        ))
        .bind(&repo)
        .bind(&region)
        .bind(&plan)
        .bind(&job)
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .map_err(err)?;
        let drills = sqlx::query(&format!(
            "SELECT drill_id, repo_id, plan, job, region, snapshot_id, started_ms, finished_ms,
                    result, rto_secs, rpo_secs, rto_target_secs, rpo_target_secs, detail,
                    measured_rto_secs
             FROM drills WHERE {FILTER} ORDER BY started_ms DESC, drill_id DESC LIMIT $5"
        ))
        .bind(&repo)
        .bind(&region)
        .bind(&plan)
        .bind(&job)
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .map_err(err)?;
        let mut out = Vec::with_capacity(runs.len() + drills.len());
        for r in &runs {
            let get = |e: sqlx::Error| self.malformed("backup run", e);
            let id: String = r.try_get("run_id").map_err(get)?;
            let repo: String = r.try_get("repo_id").map_err(get)?;
            let snap: Option<String> = r.try_get("snapshot_id").map_err(get)?;
            out.push(HistoryEntry {
                kind: "backup",
                repo_id: repo
                    .parse()
                    .map_err(|e: String| self.malformed(format!("backup run {id}"), e))?,
                plan: r.try_get("plan").map_err(get)?,
                job: r.try_get("job").map_err(get)?,
                region: r.try_get("region").map_err(get)?,
                started: from_ms(r.try_get("started_ms").map_err(get)?),
                finished: from_ms(r.try_get("finished_ms").map_err(get)?),
                outcome: r.try_get("status").map_err(get)?,
                snapshot_id: snap
                    .map(|s| s.parse())
                    .transpose()
                    .map_err(|e: String| self.malformed(format!("backup run {id}"), e))?,
                exit_code: Some(r.try_get("exit_code").map_err(get)?),
                bytes_added: Some(r.try_get::<i64, _>("bytes_added").map_err(get)? as u64),
                rto_secs: None,
                rpo_secs: None,
                error: r.try_get("error").map_err(get)?,
                id: RunId(id),
            });
        }
        for r in &drills {
            let d = self.drill_row(r)?;
            out.push(HistoryEntry {
                kind: "drill",
                id: d.drill_id,
                repo_id: d.repo_id,
                plan: d.plan,
                job: d.job,
                region: d.region,
                started: d.started,
                finished: d.finished,
                outcome: d.result.as_str().into(),
                snapshot_id: Some(d.snapshot_id),
                exit_code: None,
                bytes_added: None,
                rto_secs: d.rto_secs,
                rpo_secs: d.rpo_secs,
                error: d.detail,
            });
        }
        out.sort_by(|a, b| b.started.cmp(&a.started).then(b.id.0.cmp(&a.id.0)));
        if f.limit > 0 {
            out.truncate(f.limit);
        }
        Ok(out)
    }
}
