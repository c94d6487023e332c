//! The verification ledger: per repository, region and pack, when it was last read whole and
//! verified, whether it was good, and by whom (`verify` or a drill). Budgeted verification
//! reads the least recently verified packs first, so repeated runs cover every pack of every
//! region within a cycle while each run stays inside its egress budget.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;

use super::{age_secs, from_ms, ms, Catalog, Result};
use crate::ids::{PackId, RepoId};

/// Who read the pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifiedBy {
    Verify,
    Drill,
}

impl VerifiedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            VerifiedBy::Verify => "verify",
            VerifiedBy::Drill => "drill",
        }
    }
}

/// One pack that was read: its size and whether every check on it passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PackRead {
    pub pack: PackId,
    pub size: u64,
    pub ok: bool,
}

/// How much of a region's data was proven readable within the cycle.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Coverage {
    pub repo_id: RepoId,
    pub region: String,
    pub cycle_secs: f64,
    pub packs: u64,
    pub bytes: u64,
    /// Packs read and found good within the cycle.
    pub verified_packs: u64,
    pub verified_bytes: u64,
    /// verified_bytes / bytes, in percent (100 for an empty repository).
    pub percent: f64,
    /// Packs never read since the catalog first saw them.
    pub never_verified: u64,
    /// Packs whose last read found damage.
    pub damaged: u64,
    /// The least recently verified pack that is not covered by the cycle, and how long it has
    /// gone unverified (since its last good read, or since it was first seen).
    pub oldest_unverified_pack: Option<PackId>,
    pub oldest_unverified_age_secs: Option<f64>,
}

/// Rows per multi-row statement: well under SQLite's and PostgreSQL's parameter limits.
const BATCH_ROWS: usize = 500;

/// `n` comma-separated row templates; `row` gets the `per_row` bind-parameter numbers of its own
/// values, which start at `first` and run on across rows.
fn rows_sql(n: usize, first: usize, per_row: usize, row: impl Fn(&[usize]) -> String) -> String {
    (0..n)
        .map(|i| {
            let nums: Vec<usize> = (0..per_row).map(|k| first + i * per_row + k).collect();
            row(&nums)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

struct LedgerRow {
    pack: PackId,
    size: u64,
    first_seen: i64,
    verified: Option<i64>,
    ok: Option<bool>,
}

impl Catalog {
    async fn ledger_rows(&self, repo: &RepoId, region: &str) -> Result<Vec<LedgerRow>> {
        let rows = sqlx::query(
            "SELECT pack_id, size, first_seen_ms, verified_ms, ok FROM pack_verifications
             WHERE repo_id = $1 AND region = $2
             ORDER BY COALESCE(verified_ms, -1), first_seen_ms, pack_id",
        )
        .bind(repo.to_hex())
        .bind(region)
        .fetch_all(self.pool())
        .await
        .map_err(|e| self.query_err("reading the verification ledger", e))?;
        rows.iter()
            .map(|r| {
                let get = |e: sqlx::Error| self.malformed("pack verification", e);
                let hex: String = r.try_get("pack_id").map_err(get)?;
                Ok(LedgerRow {
                    pack: hex
                        .parse()
                        .map_err(|e: String| self.malformed(format!("pack {hex}"), e))?,
                    size: r.try_get::<i64, _>("size").map_err(get)? as u64,
                    first_seen: r.try_get("first_seen_ms").map_err(get)?,
                    verified: r.try_get("verified_ms").map_err(get)?,
                    ok: r
                        .try_get::<Option<i64>, _>("ok")
                        .map_err(get)?
                        .map(|v| v != 0),
                })
            })
            .collect()
    }

    /// Makes the ledger's pack list for (repository, region) equal `all_packs`: new packs are
    /// added as never verified, packs gone from the repository (pruned) are dropped.
    /// Returns (added, removed).
    pub async fn sync_packs(
        &self,
        repo: &RepoId,
        region: &str,
        all_packs: &[(PackId, u64)],
    ) -> Result<(u64, u64)> {
        let err = |e| self.query_err("updating the verification ledger", e);
        let known: HashSet<PackId> = self
            .ledger_rows(repo, region)
            .await?
            .into_iter()
            .map(|r| r.pack)
            .collect();
        let present: HashSet<PackId> = all_packs.iter().map(|p| p.0).collect();
        let mut seen = HashSet::new();
        let new: Vec<(PackId, u64)> = all_packs
            .iter()
            .filter(|p| !known.contains(&p.0) && seen.insert(p.0))
            .copied()
            .collect();
        let gone: Vec<PackId> = known.difference(&present).copied().collect();
        let now = ms(self.now());
        let mut tx = self.pool().begin().await.map_err(err)?;
        // Many rows per statement: a repository has tens of thousands of packs, and a fleet
        // catalog is a network round trip away.
        for chunk in new.chunks(BATCH_ROWS) {
            let sql = format!(
                "INSERT INTO pack_verifications (repo_id, region, pack_id, size, first_seen_ms)
                 VALUES {} ON CONFLICT (repo_id, region, pack_id) DO NOTHING",
                rows_sql(chunk.len(), 4, 2, |p| format!(
                    "($1, $2, ${}, ${}, $3)",
                    p[0], p[1]
                ))
            );
            let mut q = sqlx::query(&sql).bind(repo.to_hex()).bind(region).bind(now);
            for (id, size) in chunk {
                q = q.bind(id.to_hex()).bind(*size as i64);
            }
            q.execute(&mut *tx).await.map_err(err)?;
        }
        for chunk in gone.chunks(BATCH_ROWS) {
            let sql = format!(
                "DELETE FROM pack_verifications WHERE repo_id = $1 AND region = $2
                 AND pack_id IN ({})",
                rows_sql(chunk.len(), 3, 1, |p| format!("${}", p[0]))
            );
            let mut q = sqlx::query(&sql).bind(repo.to_hex()).bind(region);
            for id in chunk {
                q = q.bind(id.to_hex());
            }
            q.execute(&mut *tx).await.map_err(err)?;
        }
        tx.commit().await.map_err(err)?;
        Ok((new.len() as u64, gone.len() as u64))
    }

    /// Records that packs were read whole and checked, now. A pack listed twice counts once,
    /// with its last verdict.
    pub async fn record_pack_verifications(
        &self,
        repo: &RepoId,
        region: &str,
        reads: &[PackRead],
        by: VerifiedBy,
    ) -> Result<()> {
        let err = |e| self.query_err("recording pack verifications", e);
        let now = ms(self.now());
        let mut last: Vec<PackRead> = Vec::with_capacity(reads.len());
        let mut pos: std::collections::HashMap<PackId, usize> = Default::default();
        for r in reads {
            match pos.get(&r.pack) {
                Some(&i) => last[i] = *r,
                None => {
                    pos.insert(r.pack, last.len());
                    last.push(*r);
                }
            }
        }
        let mut tx = self.pool().begin().await.map_err(err)?;
        for chunk in last.chunks(BATCH_ROWS) {
            let sql = format!(
                "INSERT INTO pack_verifications (repo_id, region, pack_id, size, first_seen_ms,
                     verified_ms, ok, verified_by)
                 VALUES {}
                 ON CONFLICT (repo_id, region, pack_id) DO UPDATE SET size = excluded.size,
                     verified_ms = excluded.verified_ms, ok = excluded.ok,
                     verified_by = excluded.verified_by",
                rows_sql(chunk.len(), 5, 3, |p| format!(
                    "($1, $2, ${}, ${}, $3, $3, ${}, $4)",
                    p[0], p[1], p[2]
                ))
            );
            let mut q = sqlx::query(&sql)
                .bind(repo.to_hex())
                .bind(region)
                .bind(now)
                .bind(by.as_str());
            for r in chunk {
                q = q
                    .bind(r.pack.to_hex())
                    .bind(r.size as i64)
                    .bind(r.ok as i64);
            }
            q.execute(&mut *tx).await.map_err(err)?;
        }
        tx.commit().await.map_err(err)?;
        Ok(())
    }

    /// Marks packs found damaged (a drill's restore met one that failed its integrity
    /// check), now: their last read was bad, so coverage counts them as damaged until a
    /// later read finds them good. A pack the ledger does not list yet is added (size 0
    /// until the next `sync_packs` or read records it).
    pub async fn mark_packs_damaged(
        &self,
        repo: &RepoId,
        region: &str,
        packs: &[PackId],
        by: VerifiedBy,
    ) -> Result<()> {
        let err = |e| self.query_err("marking damaged packs in the verification ledger", e);
        let now = ms(self.now());
        for pack in packs {
            sqlx::query(
                "INSERT INTO pack_verifications (repo_id, region, pack_id, size, first_seen_ms,
                     verified_ms, ok, verified_by)
                 VALUES ($1, $2, $3, 0, $4, $4, 0, $5)
                 ON CONFLICT (repo_id, region, pack_id) DO UPDATE SET
                     verified_ms = excluded.verified_ms, ok = 0, verified_by = excluded.verified_by",
            )
            .bind(repo.to_hex())
            .bind(region)
            .bind(pack.to_hex())
            .bind(now)
            .bind(by.as_str())
            .execute(self.pool())
            .await
            .map_err(err)?;
        }
        Ok(())
    }

    /// The packs to read next within `budget_bytes`: never-verified packs first, then the
    /// least recently verified. A pack that does not fit is skipped for smaller ones, but the
    /// oldest pack always gets the whole budget first, so nothing starves. Packs larger than
    /// the budget are never selected (they are returned in the second list).
    pub async fn least_recently_verified(
        &self,
        repo: &RepoId,
        region: &str,
        budget_bytes: u64,
        all_packs: &[(PackId, u64)],
    ) -> Result<(Vec<(PackId, u64)>, Vec<(PackId, u64)>)> {
        self.sync_packs(repo, region, all_packs).await?;
        let mut left = budget_bytes;
        let mut chosen = Vec::new();
        let mut too_big = Vec::new();
        for r in self.ledger_rows(repo, region).await? {
            if r.size > budget_bytes {
                too_big.push((r.pack, r.size));
            } else if r.size <= left {
                left -= r.size;
                chosen.push((r.pack, r.size));
            }
        }
        Ok((chosen, too_big))
    }

    /// Coverage of one region within `cycle` before now.
    pub async fn coverage(
        &self,
        repo: &RepoId,
        region: &str,
        cycle: std::time::Duration,
    ) -> Result<Coverage> {
        let now: DateTime<Utc> = self.now();
        let since = ms(now) - cycle.as_millis() as i64;
        let rows = self.ledger_rows(repo, region).await?;
        let mut c = Coverage {
            repo_id: *repo,
            region: region.into(),
            cycle_secs: cycle.as_secs_f64(),
            packs: rows.len() as u64,
            bytes: rows.iter().map(|r| r.size).sum(),
            verified_packs: 0,
            verified_bytes: 0,
            percent: 100.0,
            never_verified: 0,
            damaged: 0,
            oldest_unverified_pack: None,
            oldest_unverified_age_secs: None,
        };
        let mut oldest: Option<(i64, PackId)> = None;
        for r in &rows {
            match (r.verified, r.ok) {
                (None, _) => c.never_verified += 1,
                (Some(_), Some(false)) => c.damaged += 1,
                _ => {}
            }
            let covered = r.ok == Some(true) && r.verified.is_some_and(|v| v >= since);
            if covered {
                c.verified_packs += 1;
                c.verified_bytes += r.size;
            } else {
                let from = match (r.verified, r.ok) {
                    (Some(v), Some(true)) => v,
                    _ => r.first_seen,
                };
                if oldest.is_none_or(|(t, _)| from < t) {
                    oldest = Some((from, r.pack));
                }
            }
        }
        if c.bytes > 0 {
            c.percent = c.verified_bytes as f64 * 100.0 / c.bytes as f64;
        } else if c.packs > 0 {
            c.percent = c.verified_packs as f64 * 100.0 / c.packs as f64;
        }
        if let Some((t, p)) = oldest {
            c.oldest_unverified_pack = Some(p);
            c.oldest_unverified_age_secs = Some(age_secs(now, from_ms(t)));
        }
        Ok(c)
    }

    /// Regions that have a verification ledger for a repository.
    pub async fn ledger_regions(&self, repo: &RepoId) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT DISTINCT region FROM pack_verifications WHERE repo_id = $1 ORDER BY region",
        )
        .bind(repo.to_hex())
        .fetch_all(self.pool())
        .await
        .map_err(|e| self.query_err("listing ledger regions", e))?;
        rows.iter()
            .map(|r| {
                r.try_get(0)
                    .map_err(|e| self.malformed("pack verification", e))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::rows_sql;

    #[test]
    fn bind_parameters_run_on_across_rows() {
        assert_eq!(
            rows_sql(3, 4, 2, |p| format!("($1, ${}, ${})", p[0], p[1])),
            "($1, $4, $5), ($1, $6, $7), ($1, $8, $9)"
        );
        assert_eq!(rows_sql(2, 3, 1, |p| format!("${}", p[0])), "$3, $4");
    }
}
