//! What `forget` asks the catalog: the snapshots whose drill proved them restorable (checks
//! passed, whether or not the objectives were met — the same notion as `status`' drilled
//! snapshot), so retention never makes the verified RPO worse.

use sqlx::Row;

use super::{Catalog, Result};
use crate::ids::{RepoId, SnapshotId};

impl Catalog {
    /// (plan, job, snapshot) of every drill in `region` whose checks passed.
    pub async fn drill_proven_snapshots(
        &self,
        repo: &RepoId,
        region: &str,
    ) -> Result<Vec<(String, String, SnapshotId)>> {
        let rows = sqlx::query(
            "SELECT DISTINCT plan, job, snapshot_id FROM drills
             WHERE repo_id = $1 AND region = $2 AND result IN ('passed', 'objective_missed')",
        )
        .bind(repo.to_hex())
        .bind(region)
        .fetch_all(self.pool())
        .await
        .map_err(|e| self.query_err("reading drilled snapshots", e))?;
        rows.iter()
            .map(|r| {
                let get = |e: sqlx::Error| self.malformed("drill", e);
                let snap: String = r.try_get("snapshot_id").map_err(get)?;
                Ok((
                    r.try_get("plan").map_err(get)?,
                    r.try_get("job").map_err(get)?,
                    snap.parse()
                        .map_err(|e: String| self.malformed(format!("drill of {snap}"), e))?,
                ))
            })
            .collect()
    }
}
