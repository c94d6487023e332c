//! Rebuilding the catalog from a repository (INV-3), and the high-water check that notices a
//! repository serving an older state than it once did, or a snapshot that vanished (SR-14, T15).
//!
//! What a repository holds — snapshot manifests, recovery-point set manifests (the
//! `recovery_sets` rows `status` reads a set's RPO from), and the signed drill reports under
//! `reports/` (restored by `ops::report::restore_drill_history`, counted in
//! `drills_restored`) — can be rebuilt. Backup runs (including failed ones, which leave no
//! manifest) and the verification ledger cannot; rebuild leaves those rows alone.
//! Divergence (the catalog knows a snapshot the repository no longer has) is reported, never
//! silently fixed: rows are only dropped when the caller asks (`--forget-missing`).

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use sqlx::Row;

use super::sets::{delete_set, upsert_set};
use super::snapshots::{delete_snapshot, raise_high_water, upsert_snapshot};
use super::{from_ms, ms, Catalog, Result, SetRow, SnapshotRow};
use crate::ids::{ObjectId, RepoId, SnapshotId};
use crate::repo::set::SetManifest;
use crate::repo::snapshot::Snapshot;
use crate::repo::verify::{Finding, Severity};
use crate::repo::Repository;

/// What `catalog rebuild` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RebuildReport {
    pub region: String,
    pub snapshots_in_repository: usize,
    pub added: usize,
    pub updated: usize,
    pub unchanged: usize,
    /// Catalog rows of snapshots the repository no longer has that were dropped on request.
    pub forgotten: usize,
    /// Recovery-point set manifests in the repository.
    pub sets_in_repository: usize,
    /// Set rows the catalog lacked, added.
    pub sets_added: usize,
    /// Set rows of manifests the repository does not have, dropped on request.
    pub sets_forgotten: usize,
    /// Drills added to the catalog from the reports stored in the repository.
    pub drills_restored: usize,
    /// Divergence and rollback findings, from before the rebuild changed anything.
    pub findings: Vec<Finding>,
}

impl RebuildReport {
    pub fn errors(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .count()
    }
}

struct HighWater {
    lineage: String,
    snapshot_id: String,
    time_ms: i64,
    seen_ms: i64,
}

impl Catalog {
    /// Re-creates the snapshot rows and the recovery-point set rows of `region` from the
    /// repository's manifests.
    pub async fn rebuild(
        &self,
        repo: &Repository,
        region: &str,
        forget_missing: bool,
    ) -> crate::Result<RebuildReport> {
        let listing = repo.list_snapshots().await?;
        let sets = repo.list_sets().await?;
        self.record_repository(repo.id(), &repo.location(), Some(repo.config.created))
            .await?;
        let mut report = self
            .rebuild_from(repo.id(), region, &listing, forget_missing)
            .await?;
        self.rebuild_sets(repo.id(), region, &sets, forget_missing, &mut report)
            .await?;
        Ok(report)
    }

    /// Adds the set rows of `region` the catalog lacks (their commit time unknown), and
    /// with `forget_missing` drops those of manifests the region does not have.
    pub async fn rebuild_sets(
        &self,
        repo: &RepoId,
        region: &str,
        sets: &[(ObjectId, SetManifest)],
        forget_missing: bool,
        report: &mut RebuildReport,
    ) -> Result<()> {
        report.sets_in_repository = sets.len();
        let existing: HashSet<ObjectId> = self
            .sets(repo, region)
            .await?
            .into_iter()
            .map(|r| r.manifest_id)
            .collect();
        let err = |e| self.query_err("rebuilding recovery-point sets", e);
        let mut tx = self.pool().begin().await.map_err(err)?;
        for (id, m) in sets {
            if !existing.contains(id) {
                upsert_set(&mut tx, &SetRow::from_manifest(*repo, region, *id, m, None))
                    .await
                    .map_err(err)?;
                report.sets_added += 1;
            }
        }
        if forget_missing {
            let present: HashSet<ObjectId> = sets.iter().map(|(id, _)| *id).collect();
            for id in existing.iter().filter(|id| !present.contains(id)) {
                report.sets_forgotten +=
                    delete_set(&mut tx, repo, region, id).await.map_err(err)? as usize;
            }
        }
        tx.commit().await.map_err(err)
    }

    /// [`Catalog::rebuild`] from an already loaded listing.
    pub async fn rebuild_from(
        &self,
        repo: &RepoId,
        region: &str,
        listing: &[(SnapshotId, Snapshot)],
        forget_missing: bool,
    ) -> Result<RebuildReport> {
        let mut report = RebuildReport {
            region: region.into(),
            snapshots_in_repository: listing.len(),
            ..Default::default()
        };
        for (finding, missing_row) in self.high_water_findings(repo, region, listing).await? {
            // "Not in the catalog" is exactly what rebuild fixes; a row the caller asked to
            // forget is resolved (counted in `forgotten`). Rollback findings always stay.
            if finding.severity == Severity::Error && !(forget_missing && missing_row) {
                report.findings.push(finding);
            }
        }
        let existing: HashMap<SnapshotId, SnapshotRow> = self
            .snapshots(repo, Some(region))
            .await?
            .into_iter()
            .map(|r| (r.snapshot_id, r))
            .collect();
        let err = |e| self.query_err("rebuilding snapshots", e);
        let now = ms(self.now());
        let mut tx = self.pool().begin().await.map_err(err)?;
        for (id, snap) in listing {
            let row = SnapshotRow::from_snapshot(*repo, region, *id, snap);
            match existing.get(id) {
                Some(old) if *old == row => report.unchanged += 1,
                Some(_) => report.updated += 1,
                None => report.added += 1,
            }
            if existing.get(id) != Some(&row) {
                upsert_snapshot(&mut tx, &row).await.map_err(err)?;
            }
            raise_high_water(&mut tx, &row, now).await.map_err(err)?;
        }
        if forget_missing {
            let present: HashSet<SnapshotId> = listing.iter().map(|(id, _)| *id).collect();
            for id in existing.keys().filter(|id| !present.contains(id)) {
                delete_snapshot(&mut tx, repo, region, id)
                    .await
                    .map_err(err)?;
                report.forgotten += 1;
            }
        }
        tx.commit().await.map_err(err)?;
        Ok(report)
    }

    async fn high_water(&self, repo: &RepoId, region: &str) -> Result<Vec<HighWater>> {
        let rows = sqlx::query(
            "SELECT lineage, snapshot_id, time_ms, seen_ms FROM high_water
             WHERE repo_id = $1 AND region = $2 ORDER BY lineage",
        )
        .bind(repo.to_hex())
        .bind(region)
        .fetch_all(self.pool())
        .await
        .map_err(|e| self.query_err("reading high-water marks", e))?;
        rows.iter()
            .map(|r| {
                let get = |e: sqlx::Error| self.malformed("high-water mark", e);
                Ok(HighWater {
                    lineage: r.try_get("lineage").map_err(get)?,
                    snapshot_id: r.try_get("snapshot_id").map_err(get)?,
                    time_ms: r.try_get("time_ms").map_err(get)?,
                    seen_ms: r.try_get("seen_ms").map_err(get)?,
                })
            })
            .collect()
    }

    /// Compares what a region serves now with what the catalog has seen:
    /// - error: the newest snapshot ever seen of a lineage is gone and the region's newest is
    ///   older (rolled back or replayed), or gone with nothing newer (deleted);
    /// - error: a snapshot the catalog lists is missing from the region (deleted behind our
    ///   back; a deliberate `forget` removes the row first);
    /// - warning: the region has snapshots the catalog does not know (`catalog rebuild`).
    pub async fn check_high_water(
        &self,
        repo: &RepoId,
        region: &str,
        listing: &[(SnapshotId, Snapshot)],
    ) -> Result<Vec<Finding>> {
        Ok(self
            .high_water_findings(repo, region, listing)
            .await?
            .into_iter()
            .map(|(f, _)| f)
            .collect())
    }

    /// The findings, each marked whether it is "a catalog row has no snapshot".
    async fn high_water_findings(
        &self,
        repo: &RepoId,
        region: &str,
        listing: &[(SnapshotId, Snapshot)],
    ) -> Result<Vec<(Finding, bool)>> {
        let mut findings = Vec::new();
        let present: HashSet<String> = listing.iter().map(|(id, _)| id.to_hex()).collect();
        let mut newest: HashMap<String, (i64, SnapshotId)> = HashMap::new();
        for (id, s) in listing {
            let row = SnapshotRow::from_snapshot(*repo, region, *id, s);
            let e = newest.entry(row.lineage).or_insert((ms(row.time), *id));
            if (ms(row.time), *id) > *e {
                *e = (ms(row.time), *id);
            }
        }
        let mut reported: HashSet<String> = HashSet::new();
        for hw in self.high_water(repo, region).await? {
            if present.contains(&hw.snapshot_id) {
                continue;
            }
            let short = &hw.snapshot_id[..8.min(hw.snapshot_id.len())];
            let seen = from_ms(hw.time_ms).format("%Y-%m-%d %H:%M:%S");
            let message = match newest.get(&hw.lineage) {
                Some((t, id)) if *t <= hw.time_ms => format!(
                    "region {region} serves an older state than seen before: the newest snapshot of {} is {} from {}, but {short} from {seen} was seen (on {}); the repository was rolled back or an old copy replayed",
                    describe_lineage(&hw.lineage),
                    id.short(),
                    from_ms(*t).format("%Y-%m-%d %H:%M:%S"),
                    from_ms(hw.seen_ms).format("%Y-%m-%d %H:%M:%S"),
                ),
                _ => format!(
                    "the newest snapshot of {} seen in region {region}, {short} from {seen}, has vanished",
                    describe_lineage(&hw.lineage)
                ),
            };
            reported.insert(hw.snapshot_id.clone());
            findings.push((
                Finding {
                    severity: Severity::Error,
                    object: format!("snapshot {short}"),
                    message,
                },
                false,
            ));
        }
        let known = self.snapshots(repo, Some(region)).await?;
        let known_ids: HashSet<String> = known.iter().map(|r| r.snapshot_id.to_hex()).collect();
        for row in &known {
            let hex = row.snapshot_id.to_hex();
            if !present.contains(&hex) && !reported.contains(&hex) {
                findings.push((
                    Finding {
                        severity: Severity::Error,
                        object: format!("snapshot {}", row.snapshot_id.short()),
                        message: format!(
                            "snapshot from {} is in the catalog but missing from region {region}: deleted behind lifeboat's back, or the repository was rolled back",
                            row.time.format("%Y-%m-%d %H:%M:%S")
                        ),
                    },
                    true,
                ));
            }
        }
        for (id, _) in listing {
            if !known_ids.contains(&id.to_hex()) {
                findings.push((
                    Finding {
                        severity: Severity::Warning,
                        object: format!("snapshot {}", id.short()),
                        message: format!(
                            "in region {region} but not in the catalog; `lifeboat catalog rebuild` adds it"
                        ),
                    },
                    false,
                ));
            }
        }
        Ok(findings)
    }
}

fn describe_lineage(l: &str) -> String {
    if let Some(j) = l.strip_prefix("job:") {
        format!("job {j}")
    } else {
        let rest = l.strip_prefix("host:").unwrap_or(l);
        let parts: Vec<&str> = rest.split('|').collect();
        match parts.as_slice() {
            [host, kind, paths, ..] => format!(
                "{kind} backup of {} on {host}",
                paths.replace('\u{1f}', " ")
            ),
            _ => l.to_string(),
        }
    }
}
