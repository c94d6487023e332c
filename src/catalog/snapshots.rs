//! The `repositories`, `snapshots` and `high_water` tables: which repositories the catalog has
//! seen, the snapshots present per region ([`SnapshotRow`], [`lineage_of`]), and per lineage the
//! newest snapshot ever seen, which only moves forward except by a deliberate `forget`.
//!
//! The statements that write snapshot rows and high-water marks (`upsert_snapshot`,
//! `delete_snapshot`, `raise_high_water`) serve both recording and forgetting here and
//! `catalog rebuild` (`rebuild.rs`, which also reads the marks back to detect a rollback).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{from_ms, ms, redact, Catalog, Result};
use crate::ids::{RepoId, SnapshotId};
use crate::repo::snapshot::Snapshot;

impl Catalog {
    /// Records (or refreshes the location of) a repository, with its creation time when
    /// known (from its config: SLO schedule slots before it are not counted).
    pub async fn record_repository(
        &self,
        repo: &RepoId,
        location: &str,
        created: Option<DateTime<Utc>>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO repositories (repo_id, location, first_seen_ms, created_ms)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (repo_id) DO UPDATE SET location = excluded.location,
                 created_ms = COALESCE(excluded.created_ms, repositories.created_ms)",
        )
        .bind(repo.to_hex())
        .bind(redact(location))
        .bind(ms(self.now()))
        .bind(created.map(ms))
        .execute(&self.pool)
        .await
        .map_err(|e| self.query_err("recording a repository", e))?;
        Ok(())
    }

    /// Records a snapshot as present in `region`, and moves the lineage's high-water mark
    /// forward if it is the newest seen.
    pub async fn record_snapshot(
        &self,
        repo: &RepoId,
        region: &str,
        id: &SnapshotId,
        snap: &Snapshot,
    ) -> Result<()> {
        let row = SnapshotRow::from_snapshot(*repo, region, *id, snap);
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| self.query_err("recording a snapshot", e))?;
        upsert_snapshot(&mut tx, &row)
            .await
            .map_err(|e| self.query_err("recording a snapshot", e))?;
        raise_high_water(&mut tx, &row, ms(self.now()))
            .await
            .map_err(|e| self.query_err("recording a high-water mark", e))?;
        tx.commit()
            .await
            .map_err(|e| self.query_err("recording a snapshot", e))?;
        Ok(())
    }

    /// Removes snapshot rows after a deliberate deletion by lifeboat (forget/prune). Where a
    /// forgotten snapshot was its lineage's high-water mark, the mark moves back to the newest
    /// snapshot the catalog still has (or goes), so a deliberate deletion is not reported as a
    /// rollback. Deletions behind lifeboat's back never come through here.
    pub async fn forget_snapshots(
        &self,
        repo: &RepoId,
        region: &str,
        ids: &[SnapshotId],
    ) -> Result<u64> {
        let err = |e| self.query_err("forgetting a snapshot", e);
        let mut tx = self.pool.begin().await.map_err(err)?;
        let mut n = 0;
        for id in ids {
            n += delete_snapshot(&mut tx, repo, region, id)
                .await
                .map_err(err)?;
            let marks = sqlx::query(
                "SELECT lineage FROM high_water
                 WHERE repo_id = $1 AND region = $2 AND snapshot_id = $3",
            )
            .bind(repo.to_hex())
            .bind(region)
            .bind(id.to_hex())
            .fetch_all(&mut *tx)
            .await
            .map_err(err)?;
            for m in marks {
                let lineage: String = m
                    .try_get("lineage")
                    .map_err(|e| self.malformed("high-water mark", e))?;
                let newest = sqlx::query(
                    "SELECT snapshot_id, time_ms FROM snapshots
                     WHERE repo_id = $1 AND region = $2 AND lineage = $3
                     ORDER BY time_ms DESC, snapshot_id DESC LIMIT 1",
                )
                .bind(repo.to_hex())
                .bind(region)
                .bind(&lineage)
                .fetch_optional(&mut *tx)
                .await
                .map_err(err)?;
                let q = match newest {
                    Some(r) => {
                        let get = |e: sqlx::Error| self.malformed("snapshot", e);
                        sqlx::query(
                            "UPDATE high_water SET snapshot_id = $4, time_ms = $5, seen_ms = $6
                             WHERE repo_id = $1 AND region = $2 AND lineage = $3",
                        )
                        .bind(repo.to_hex())
                        .bind(region)
                        .bind(lineage.clone())
                        .bind(r.try_get::<String, _>("snapshot_id").map_err(get)?)
                        .bind(r.try_get::<i64, _>("time_ms").map_err(get)?)
                        .bind(ms(self.now()))
                    }
                    None => sqlx::query(
                        "DELETE FROM high_water WHERE repo_id = $1 AND region = $2 AND lineage = $3",
                    )
                    .bind(repo.to_hex())
                    .bind(region)
                    .bind(lineage.clone()),
                };
                q.execute(&mut *tx).await.map_err(err)?;
            }
        }
        tx.commit().await.map_err(err)?;
        Ok(n)
    }

    /// Snapshot rows of a repository (all regions, or one), oldest first.
    pub async fn snapshots(&self, repo: &RepoId, region: Option<&str>) -> Result<Vec<SnapshotRow>> {
        let rows = sqlx::query(
            "SELECT repo_id, region, snapshot_id, plan, job, lineage, host, paths, tags, time_ms,
                    consistency_ms, source_kind, bytes_processed, bytes_added, bytes_stored
             FROM snapshots WHERE repo_id = $1 AND ($2 = '' OR region = $2)
             ORDER BY time_ms, snapshot_id, region",
        )
        .bind(repo.to_hex())
        .bind(region.unwrap_or(""))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.query_err("listing snapshots", e))?;
        rows.iter().map(|r| self.snapshot_row(r)).collect()
    }

    fn snapshot_row(&self, r: &AnyRow) -> Result<SnapshotRow> {
        let get = |e: sqlx::Error| self.malformed("snapshot", e);
        let hex: String = r.try_get("snapshot_id").map_err(get)?;
        let repo_hex: String = r.try_get("repo_id").map_err(get)?;
        let paths: String = r.try_get("paths").map_err(get)?;
        let tags: String = r.try_get("tags").map_err(get)?;
        Ok(SnapshotRow {
            repo_id: repo_hex
                .parse()
                .map_err(|e: String| self.malformed("snapshot", e))?,
            region: r.try_get("region").map_err(get)?,
            snapshot_id: hex
                .parse()
                .map_err(|e: String| self.malformed(format!("snapshot {hex}"), e))?,
            plan: r.try_get("plan").map_err(get)?,
            job: r.try_get("job").map_err(get)?,
            lineage: r.try_get("lineage").map_err(get)?,
            host: r.try_get("host").map_err(get)?,
            paths: serde_json::from_str(&paths)
                .map_err(|e| self.malformed(format!("snapshot {hex}"), e))?,
            tags: serde_json::from_str(&tags)
                .map_err(|e| self.malformed(format!("snapshot {hex}"), e))?,
            time: from_ms(r.try_get("time_ms").map_err(get)?),
            consistency_time: from_ms(r.try_get("consistency_ms").map_err(get)?),
            source_kind: r.try_get("source_kind").map_err(get)?,
            bytes_processed: r.try_get::<i64, _>("bytes_processed").map_err(get)? as u64,
            bytes_added: r.try_get::<i64, _>("bytes_added").map_err(get)? as u64,
            bytes_stored: r.try_get::<i64, _>("bytes_stored").map_err(get)? as u64,
        })
    }
}

pub(super) async fn upsert_snapshot(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    row: &SnapshotRow,
) -> std::result::Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO snapshots (repo_id, region, snapshot_id, plan, job, lineage, host, paths,
             tags, time_ms, consistency_ms, source_kind, bytes_processed, bytes_added, bytes_stored)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
         ON CONFLICT (repo_id, region, snapshot_id) DO UPDATE SET plan = excluded.plan,
             job = excluded.job, lineage = excluded.lineage, host = excluded.host,
             paths = excluded.paths, tags = excluded.tags, time_ms = excluded.time_ms,
             consistency_ms = excluded.consistency_ms, source_kind = excluded.source_kind,
             bytes_processed = excluded.bytes_processed, bytes_added = excluded.bytes_added,
             bytes_stored = excluded.bytes_stored",
    )
    .bind(row.repo_id.to_hex())
    .bind(&row.region)
    .bind(row.snapshot_id.to_hex())
    .bind(&row.plan)
    .bind(&row.job)
    .bind(&row.lineage)
    .bind(&row.host)
    .bind(serde_json::to_string(&row.paths).expect("strings serialize"))
    .bind(serde_json::to_string(&row.tags).expect("strings serialize"))
    .bind(ms(row.time))
    .bind(ms(row.consistency_time))
    .bind(&row.source_kind)
    .bind(row.bytes_processed as i64)
    .bind(row.bytes_added as i64)
    .bind(row.bytes_stored as i64)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Removes one snapshot row (forget, or rebuild asked to forget rows the repository lacks);
/// returns how many rows went (0 or 1). High-water marks are the caller's business.
pub(super) async fn delete_snapshot(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    repo: &RepoId,
    region: &str,
    id: &SnapshotId,
) -> std::result::Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM snapshots WHERE repo_id = $1 AND region = $2 AND snapshot_id = $3",
    )
    .bind(repo.to_hex())
    .bind(region)
    .bind(id.to_hex())
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}

/// Moves the lineage's high-water mark to `row` if it is newer (never backwards).
pub(super) async fn raise_high_water(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    row: &SnapshotRow,
    now_ms: i64,
) -> std::result::Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO high_water (repo_id, region, lineage, snapshot_id, time_ms, seen_ms)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (repo_id, region, lineage) DO UPDATE SET snapshot_id = excluded.snapshot_id,
             time_ms = excluded.time_ms, seen_ms = excluded.seen_ms
         WHERE excluded.time_ms > high_water.time_ms
            OR (excluded.time_ms = high_water.time_ms
                AND excluded.snapshot_id > high_water.snapshot_id)",
    )
    .bind(row.repo_id.to_hex())
    .bind(&row.region)
    .bind(&row.lineage)
    .bind(row.snapshot_id.to_hex())
    .bind(ms(row.time))
    .bind(now_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A snapshot as the catalog keeps it (per region).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SnapshotRow {
    pub repo_id: RepoId,
    pub region: String,
    pub snapshot_id: SnapshotId,
    pub plan: String,
    pub job: String,
    /// Which series of snapshots this one continues (see [`lineage_of`]).
    pub lineage: String,
    pub host: String,
    pub paths: Vec<String>,
    pub tags: Vec<String>,
    pub time: DateTime<Utc>,
    pub consistency_time: DateTime<Utc>,
    pub source_kind: String,
    pub bytes_processed: u64,
    pub bytes_added: u64,
    pub bytes_stored: u64,
}

impl SnapshotRow {
    pub fn from_snapshot(repo: RepoId, region: &str, id: SnapshotId, s: &Snapshot) -> Self {
        // Millisecond precision, as stored, so rows compare equal after a round trip.
        SnapshotRow {
            repo_id: repo,
            region: region.into(),
            snapshot_id: id,
            plan: s.plan.clone().unwrap_or_default(),
            job: s.job.clone().unwrap_or_default(),
            lineage: lineage_of(s),
            host: s.host.clone(),
            paths: s.paths.clone(),
            tags: s.tags.clone(),
            time: from_ms(ms(s.time)),
            consistency_time: from_ms(ms(s.consistency_time)),
            source_kind: s.source.kind().to_string(),
            bytes_processed: s.summary.bytes_processed,
            bytes_added: s.summary.bytes_added,
            bytes_stored: s.summary.bytes_stored,
        }
    }
}

/// The series a snapshot belongs to, for high-water marks: `plan/job` when it came from a
/// plan, else host, source kind and the sorted source paths (as `Snapshot::same_lineage`).
pub fn lineage_of(s: &Snapshot) -> String {
    match (&s.plan, &s.job) {
        (Some(p), Some(j)) => format!("job:{p}/{j}"),
        _ => {
            let mut paths = s.paths.clone();
            paths.sort();
            format!(
                "host:{}|{}|{}{}",
                s.host,
                s.source.kind(),
                paths.join("\u{1f}"),
                s.job
                    .as_ref()
                    .map(|j| format!("|job:{j}"))
                    .unwrap_or_default()
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lineage_prefers_plan_and_job() {
        let mut s: Snapshot = serde_json::from_value(serde_json::json!({
            "time": "2026-01-01T00:00:00Z", "consistency_time": "2026-01-01T00:00:00Z",
            "host": "h", "username": "u", "paths": ["/b", "/a"], "tree": "00".repeat(32),
            "source_kind": "dir", "summary": {"files_new": 0, "files_changed": 0,
            "files_unmodified": 0, "dirs": 0, "bytes_processed": 0, "blobs_added": 0,
            "bytes_added": 0, "bytes_stored": 0, "packs_added": 0, "warnings": 0,
            "duration_secs": 0.0}, "program_version": "0"
        }))
        .unwrap();
        let by_paths = lineage_of(&s);
        s.paths.reverse();
        assert_eq!(lineage_of(&s), by_paths, "path order does not matter");
        s.plan = Some("prod".into());
        s.job = Some("db".into());
        assert_eq!(lineage_of(&s), "job:prod/db");
    }
}
