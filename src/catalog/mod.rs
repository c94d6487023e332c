//! The catalog: what lifeboat remembers between runs — backup runs per destination, snapshots,
//! drills with their phases, checks and measured RTO/RPO, the pack verification ledger and the
//! high-water marks that detect a rolled-back repository.
//!
//! One [`Catalog`] type over sqlx's `Any` driver: a SQLite file by default (WAL,
//! `synchronous=FULL`, busy timeout — RELIABILITY invariant 7), or a PostgreSQL URL for a fleet
//! sharing one. Migrations are embedded in the binary (`migrations/sqlite`, `migrations/postgres`:
//! the same schema in each dialect) and run on open. Times are stored as unix milliseconds,
//! durations as seconds; every "now" comes from an injected [`Clock`] so ages are exact in tests.
//!
//! The catalog is never on a backup's critical path: the repository is the truth, and
//! [`Catalog::rebuild`] re-creates snapshot rows (and high-water marks) from it. Runs, drills and
//! the verification ledger exist only here (see `docs/catalog.md`).
//!
//! It knows repositories only through [`crate::repo::Repository::list_snapshots`] and the ids of
//! packs; it knows nothing about stores, crypto or how a drill is run.

mod ledger;
mod rebuild;
mod status;

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{MigrateError, Migration, MigrationSource, MigrationType, Migrator};
use sqlx::{AnyConnection, AnyPool, Connection, Row};

use crate::ids::{RepoId, SnapshotId};
use crate::repo::snapshot::Snapshot;

pub use ledger::{Coverage, PackRead, VerifiedBy};
pub use rebuild::RebuildReport;
pub use status::{HistoryEntry, HistoryFilter, JobStatus, StatusFilter, StatusReport};

/// Errors of the catalog layer. The location is always shown with its password removed.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog {location} cannot be opened: {detail}")]
    Open { location: String, detail: String },

    #[error("catalog {location}: applying its schema migrations failed: {detail}")]
    Migrate { location: String, detail: String },

    #[error("catalog {location}: {op} failed: {detail}")]
    Query {
        location: String,
        op: &'static str,
        detail: String,
    },

    #[error("catalog {location}: row for {object} is malformed: {detail}")]
    Malformed {
        location: String,
        object: String,
        detail: String,
    },

    #[error("invalid catalog location {given:?}: {detail}")]
    BadLocation { given: String, detail: String },
}

impl CatalogError {
    /// What the user can do about it.
    pub fn hint(&self) -> String {
        match self {
            CatalogError::Open { .. } => "check --catalog / LIFEBOAT_CATALOG (a file path, sqlite:///path or postgres://…) and that its directory is writable or its server reachable; a damaged SQLite file can be moved away. Backups still commit without the catalog, and `lifeboat catalog rebuild` fills it in later".into(),
            CatalogError::Migrate { .. } => "the catalog was written by another lifeboat version or is damaged; move the file away and run `lifeboat catalog rebuild`".into(),
            CatalogError::Query { .. } | CatalogError::Malformed { .. } => "if the catalog is damaged, move it away and run `lifeboat catalog rebuild` (runs and drills are not in the repository and are lost)".into(),
            CatalogError::BadLocation { .. } => "give a file path, sqlite:///absolute/path or postgres://user@host/db".into(),
        }
    }
}

pub type Result<T, E = CatalogError> = std::result::Result<T, E>;

use crate::sys::clock::{Clock, SystemClock};

/// Which database the catalog lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// How to open a catalog.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// How long to wait for a connection (an unreachable server fails after this).
    pub connect_timeout: Duration,
    /// How long SQLite waits for another writer before giving up.
    pub busy_timeout: Duration,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            connect_timeout: Duration::from_secs(10),
            busy_timeout: Duration::from_secs(10),
        }
    }
}

/// An open catalog. Cheap to clone.
#[derive(Clone)]
pub struct Catalog {
    pool: AnyPool,
    backend: Backend,
    location: String,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("location", &self.location)
            .field("backend", &self.backend)
            .finish()
    }
}

/// The default catalog file: `$LIFEBOAT_STATE_DIR/catalog.db`, else
/// `$XDG_STATE_HOME/lifeboat/catalog.db`, else `~/.local/state/lifeboat/catalog.db`.
pub fn default_location() -> Result<PathBuf> {
    let nonempty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(d) = nonempty("LIFEBOAT_STATE_DIR") {
        return Ok(PathBuf::from(d).join("catalog.db"));
    }
    if let Some(d) = nonempty("XDG_STATE_HOME") {
        return Ok(PathBuf::from(d).join("lifeboat").join("catalog.db"));
    }
    if let Some(h) = nonempty("HOME") {
        return Ok(PathBuf::from(h).join(".local/state/lifeboat/catalog.db"));
    }
    Err(CatalogError::BadLocation {
        given: String::new(),
        detail: "no default location: none of LIFEBOAT_STATE_DIR, XDG_STATE_HOME or HOME is set"
            .into(),
    })
}

/// A location with any password replaced by `<redacted>`, for messages and logs (SR-9).
pub fn redact(location: &str) -> String {
    let Some((scheme, rest)) = location.split_once("://") else {
        return location.to_string();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return location.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:<redacted>@{host}{tail}"),
        None => location.to_string(),
    }
}

/// True when a `postgres://` location carries a password (which must not be on a command line).
pub fn has_password(location: &str) -> bool {
    redact(location) != location
}

enum Target {
    Sqlite { path: PathBuf, url: String },
    Postgres { url: String },
}

fn parse_location(given: &str) -> Result<Target> {
    let bad = |detail: &str| CatalogError::BadLocation {
        given: redact(given),
        detail: detail.into(),
    };
    if given.starts_with("postgres://") || given.starts_with("postgresql://") {
        return Ok(Target::Postgres { url: given.into() });
    }
    let path = if let Some(rest) = given.strip_prefix("sqlite://") {
        rest.split('?').next().unwrap_or(rest)
    } else if let Some(rest) = given.strip_prefix("sqlite:") {
        rest.split('?').next().unwrap_or(rest)
    } else if given.contains("://") {
        return Err(bad(
            "unknown scheme: the catalog is a SQLite file or a postgres:// URL",
        ));
    } else {
        given
    };
    if path.is_empty() {
        return Err(bad("empty path"));
    }
    if path == ":memory:" {
        return Err(bad(
            "an in-memory catalog forgets everything at exit; give a file",
        ));
    }
    let path = PathBuf::from(path);
    // Percent-encode what the URL parser would otherwise take as query or fragment.
    let mut enc = String::new();
    for c in path.to_string_lossy().chars() {
        match c {
            '%' => enc.push_str("%25"),
            '?' => enc.push_str("%3F"),
            '#' => enc.push_str("%23"),
            c => enc.push(c),
        }
    }
    let url = format!("sqlite://{enc}?mode=rwc");
    Ok(Target::Sqlite { path, url })
}

/// The schema, compiled into the binary: one list per dialect, same versions and meaning.
#[derive(Debug)]
struct Embedded(&'static [(i64, &'static str, &'static str)]);

const SQLITE_MIGRATIONS: Embedded = Embedded(&[(
    1,
    "catalog",
    include_str!("../../migrations/sqlite/0001_catalog.sql"),
)]);
const POSTGRES_MIGRATIONS: Embedded = Embedded(&[(
    1,
    "catalog",
    include_str!("../../migrations/postgres/0001_catalog.sql"),
)]);

impl MigrationSource<'static> for &'static Embedded {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, sqlx::error::BoxDynError>> {
        Box::pin(async move {
            Ok(self
                .0
                .iter()
                .map(|(v, d, sql)| {
                    Migration::new(
                        *v,
                        Cow::Borrowed(*d),
                        MigrationType::Simple,
                        Cow::Borrowed(*sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// The newest schema version this binary knows.
pub const SCHEMA_VERSION: i64 = 1;

impl Catalog {
    /// Opens (creating if needed) the catalog at `location` and applies pending migrations.
    pub async fn open(location: &str) -> Result<Catalog> {
        Self::open_with(location, &OpenOptions::default()).await
    }

    pub async fn open_with(location: &str, opts: &OpenOptions) -> Result<Catalog> {
        sqlx::any::install_default_drivers();
        let target = parse_location(location)?;
        let shown = redact(location);
        let open_err = |detail: String| CatalogError::Open {
            location: shown.clone(),
            detail,
        };
        let (url, backend) = match &target {
            Target::Sqlite { path, url } => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    create_private_dir(dir).map_err(|e| {
                        open_err(format!("cannot create directory {}: {e}", dir.display()))
                    })?;
                }
                // Created here, 0600, before SQLite makes it (and its -wal/-shm, which copy
                // the file's mode) with the umask's: the catalog names hosts, paths, plans.
                create_private_file(path)
                    .map_err(|e| open_err(format!("cannot create {}: {e}", path.display())))?;
                (url.clone(), Backend::Sqlite)
            }
            Target::Postgres { url } => (url.clone(), Backend::Postgres),
        };
        let busy_ms = opts.busy_timeout.as_millis();
        // One probe connection first: the pool retries failed connects until its timeout and
        // then only says "timed out"; the probe fails fast with the real reason (connection
        // refused, not a database, permission denied).
        let probe = tokio::time::timeout(opts.connect_timeout, async {
            let mut conn = AnyConnection::connect(&url).await?;
            if backend == Backend::Sqlite {
                sqlite_pragmas(&mut conn, busy_ms).await?;
            }
            conn.close().await
        })
        .await;
        match probe {
            Err(_) => {
                return Err(open_err(format!(
                    "no connection within {} s",
                    opts.connect_timeout.as_secs_f64()
                )))
            }
            Ok(Err(e)) => return Err(open_err(e.to_string())),
            Ok(Ok(())) => {}
        }
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 4 } else { 8 })
            .acquire_timeout(opts.connect_timeout)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if conn.backend_name().eq_ignore_ascii_case("sqlite") {
                        sqlite_pragmas(conn, busy_ms).await?;
                    }
                    Ok(())
                })
            })
            .connect_lazy(&url)
            .map_err(|e| open_err(e.to_string()))?;
        let catalog = Catalog {
            pool,
            backend,
            location: shown.clone(),
            clock: Arc::new(SystemClock),
        };
        let source = match backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        let migrate_err = |detail: String| CatalogError::Migrate {
            location: shown.clone(),
            detail,
        };
        let migrator = Migrator::new(source)
            .await
            .map_err(|e| migrate_err(e.to_string()))?;
        // PostgreSQL serialises concurrent migrators with an advisory lock; SQLite has none, so
        // two processes creating a fresh file at once can both try to apply version 1. The
        // loser's retry then finds it applied. A real failure fails every attempt.
        let mut attempt = 0;
        loop {
            match migrator.run(&catalog.pool).await {
                Ok(()) => break,
                Err(e @ (MigrateError::Execute(_) | MigrateError::ExecuteMigration(..)))
                    if attempt < 3 && backend == Backend::Sqlite =>
                {
                    tracing::debug!(error = %e, attempt, "catalog migration failed; retrying");
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
                }
                Err(e) => return Err(migrate_err(e.to_string())),
            }
        }
        Ok(catalog)
    }

    /// Replaces the clock (tests; replaying history).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The location, password removed.
    pub fn describe(&self) -> &str {
        &self.location
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The versions of the applied migrations, oldest first.
    pub async fn schema_versions(&self) -> Result<Vec<i64>> {
        let rows = sqlx::query("SELECT version FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.query_err("reading the schema version", e))?;
        rows.iter()
            .map(|r| {
                r.try_get::<i64, _>(0)
                    .map_err(|e| self.query_err("reading the schema version", e))
            })
            .collect()
    }

    /// Closes the pool, waiting for connections to finish (SQLite checkpoints its WAL).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub(crate) fn query_err(&self, op: &'static str, e: sqlx::Error) -> CatalogError {
        CatalogError::Query {
            location: self.location.clone(),
            op,
            detail: e.to_string(),
        }
    }

    pub(crate) fn malformed(
        &self,
        object: impl Into<String>,
        detail: impl ToString,
    ) -> CatalogError {
        CatalogError::Malformed {
            location: self.location.clone(),
            object: object.into(),
            detail: detail.to_string(),
        }
    }

    // ----- repositories, runs, snapshots ----------------------------------------------------

    /// Records (or refreshes the location of) a repository.
    pub async fn record_repository(&self, repo: &RepoId, location: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO repositories (repo_id, location, first_seen_ms) VALUES ($1, $2, $3)
             ON CONFLICT (repo_id) DO UPDATE SET location = excluded.location",
        )
        .bind(repo.to_hex())
        .bind(redact(location))
        .bind(ms(self.now()))
        .execute(&self.pool)
        .await
        .map_err(|e| self.query_err("recording a repository", e))?;
        Ok(())
    }

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
            n += sqlx::query(
                "DELETE FROM snapshots WHERE repo_id = $1 AND region = $2 AND snapshot_id = $3",
            )
            .bind(repo.to_hex())
            .bind(region)
            .bind(id.to_hex())
            .execute(&mut *tx)
            .await
            .map_err(err)?
            .rows_affected();
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

    // ----- drills -------------------------------------------------------------------------

    /// Records a drill with its phases and checks, atomically.
    pub async fn record_drill(&self, d: &DrillRecord) -> Result<()> {
        let err = |e| self.query_err("recording a drill", e);
        let mut tx = self.pool.begin().await.map_err(err)?;
        sqlx::query(
            "INSERT INTO drills (drill_id, repo_id, plan, job, region, snapshot_id, started_ms,
                 finished_ms, result, rto_secs, rpo_secs, rto_target_secs, rpo_target_secs, detail)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
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
                    result, rto_secs, rpo_secs, rto_target_secs, rpo_target_secs, detail
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
            rpo_secs: r.try_get("rpo_secs").map_err(get)?,
            rto_target_secs: r.try_get("rto_target_secs").map_err(get)?,
            rpo_target_secs: r.try_get("rpo_target_secs").map_err(get)?,
            detail: r.try_get("detail").map_err(get)?,
            phases: Vec::new(),
            checks: Vec::new(),
        })
    }
}

/// Invariant 7: WAL with synchronous=FULL survives a power cut; WAL with NORMAL may roll back
/// committed transactions. Set on every connection (they are per-connection settings).
async fn sqlite_pragmas(conn: &mut AnyConnection, busy_ms: u128) -> Result<(), sqlx::Error> {
    for pragma in [
        format!("PRAGMA busy_timeout = {busy_ms}"),
        "PRAGMA journal_mode = WAL".to_string(),
        "PRAGMA synchronous = FULL".to_string(),
        "PRAGMA foreign_keys = ON".to_string(),
    ] {
        sqlx::query(&pragma).execute(&mut *conn).await?;
    }
    Ok(())
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Creates the file 0600 if it is missing (an empty file is a valid new SQLite database), and
/// takes group and other access away from an existing one.
fn create_private_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let m = std::fs::metadata(path)?;
            if m.permissions().mode() & 0o077 != 0 {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

async fn upsert_snapshot(
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

/// Moves the lineage's high-water mark to `row` if it is newer (never backwards).
async fn raise_high_water(
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

/// Unix milliseconds.
pub fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub fn from_ms(v: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(v)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Seconds from `then` to `now` (negative when `then` is in the future: clock skew).
pub fn age_secs(now: DateTime<Utc>, then: DateTime<Utc>) -> f64 {
    (ms(now) - ms(then)) as f64 / 1000.0
}

/// Id of a backup run or a drill: 16 random bytes as hex.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(pub String);

impl RunId {
    pub fn random() -> Self {
        RunId(hex::encode(rand::random::<[u8; 16]>()))
    }
}

impl std::fmt::Display for RunId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
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
            source_kind: s.source_kind.clone(),
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
                s.source_kind,
                paths.join("\u{1f}"),
                s.job
                    .as_ref()
                    .map(|j| format!("|job:{j}"))
                    .unwrap_or_default()
            )
        }
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
}

impl DrillResult {
    pub fn as_str(self) -> &'static str {
        match self {
            DrillResult::Passed => "passed",
            DrillResult::CheckFailed => "check_failed",
            DrillResult::ObjectiveMissed => "objective_missed",
            DrillResult::InfraFailed => "infra_failed",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "passed" => DrillResult::Passed,
            "check_failed" => DrillResult::CheckFailed,
            "objective_missed" => DrillResult::ObjectiveMissed,
            "infra_failed" => DrillResult::InfraFailed,
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
    /// The restored snapshot's age at drill time (now − consistency time).
    pub rpo_secs: Option<f64>,
    pub rto_target_secs: Option<f64>,
    pub rpo_target_secs: Option<f64>,
    pub detail: Option<String>,
    pub phases: Vec<DrillPhase>,
    pub checks: Vec<DrillCheck>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_passwords_only() {
        assert_eq!(
            redact("postgres://lb:s3cret@db.example:5432/cat?sslmode=require"),
            "postgres://lb:<redacted>@db.example:5432/cat?sslmode=require"
        );
        assert_eq!(redact("postgres://lb@db/cat"), "postgres://lb@db/cat");
        assert_eq!(redact("/var/lib/x.db"), "/var/lib/x.db");
        assert!(has_password("postgresql://a:b@h/d"));
        assert!(!has_password("postgresql://a@h/d"));
    }

    #[test]
    fn locations_parse_to_sqlite_or_postgres() {
        match parse_location("/tmp/a b/c?#.db").unwrap() {
            Target::Sqlite { path, url } => {
                assert_eq!(path, PathBuf::from("/tmp/a b/c?#.db"));
                assert_eq!(url, "sqlite:///tmp/a b/c%3F%23.db?mode=rwc");
            }
            Target::Postgres { .. } => panic!("not postgres"),
        }
        match parse_location("sqlite:///var/x.db").unwrap() {
            Target::Sqlite { path, .. } => assert_eq!(path, PathBuf::from("/var/x.db")),
            Target::Postgres { .. } => panic!("not postgres"),
        }
        assert!(matches!(
            parse_location("postgres://u@h/d").unwrap(),
            Target::Postgres { .. }
        ));
        assert!(parse_location("mysql://h/d").is_err());
        assert!(parse_location("sqlite::memory:").is_err());
    }

    #[tokio::test]
    async fn sqlite_catalog_is_wal_with_synchronous_full() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/catalog.db");
        let cat = Catalog::open(&path.display().to_string()).await.unwrap();
        assert_eq!(cat.backend(), Backend::Sqlite);
        // Every pooled connection gets the settings, not just the first.
        for _ in 0..3 {
            let mut conn = cat.pool().acquire().await.unwrap();
            let mode: String = sqlx::query("PRAGMA journal_mode")
                .fetch_one(&mut *conn)
                .await
                .unwrap()
                .get(0);
            assert_eq!(mode, "wal");
            let sync: i64 = sqlx::query("PRAGMA synchronous")
                .fetch_one(&mut *conn)
                .await
                .unwrap()
                .get(0);
            assert_eq!(sync, 2, "synchronous=FULL");
            let busy: i64 = sqlx::query("PRAGMA busy_timeout")
                .fetch_one(&mut *conn)
                .await
                .unwrap()
                .get(0);
            assert_eq!(busy, 10_000);
        }
        cat.close().await;
        use std::os::unix::fs::PermissionsExt;
        let dir_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
    }

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
