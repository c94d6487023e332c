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
//!
//! This file is the handle: opening (location, SQLite settings, migrations), errors, the clock
//! and the time helpers. The tables are read and written by group, one file each:
//! `runs.rs` (`backup_runs`), `snapshots.rs` (`repositories`, `snapshots`, `high_water`),
//! `drills.rs` (`drills`, `drill_phases`, `drill_checks`), `ledger.rs` (`pack_verifications`),
//! `sets.rs` (`recovery_sets`, and the plan-wide reads `status` computes SLOs from);
//! `status.rs` reads across them for `status` and `history`, and `rebuild.rs` refills snapshots,
//! high-water marks and set rows from a repository with the statements that write them.

mod drills;
mod ledger;
mod rebuild;
mod retention;
mod runs;
mod sets;
mod snapshots;
mod status;

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::{MigrateError, Migration, MigrationSource, MigrationType, Migrator};
use sqlx::{AnyConnection, AnyPool, Connection, Row};

pub use drills::{DrillCheck, DrillPhase, DrillRecord, DrillResult};
pub use ledger::{Coverage, PackRead, VerifiedBy};
pub use rebuild::RebuildReport;
pub use runs::{BackupRun, RunStatus};
pub use sets::{PlanDrill, SetRow};
pub use snapshots::{lineage_of, SnapshotRow};
pub use status::{
    HistoryEntry, HistoryFilter, JobStatus, LastStart, RunSummary, SnapshotRef, StatusFilter,
    StatusReport,
};

// Defined with the library's other error types (so `error` need not import `catalog`).
pub use crate::error::CatalogError;

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

/// The default directory of run-due's lock and state files and of verify's anomaly counts:
/// beside the default catalog.
pub fn default_state_dir() -> Result<PathBuf> {
    Ok(default_location()?
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".")))
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

const SQLITE_MIGRATIONS: Embedded = Embedded(&[
    (
        1,
        "catalog",
        include_str!("../../migrations/sqlite/0001_catalog.sql"),
    ),
    (
        2,
        "drill result damaged",
        include_str!("../../migrations/sqlite/0002_drill_result_damaged.sql"),
    ),
    (
        3,
        "recovery sets",
        include_str!("../../migrations/sqlite/0003_recovery_sets.sql"),
    ),
]);
const POSTGRES_MIGRATIONS: Embedded = Embedded(&[
    (
        1,
        "catalog",
        include_str!("../../migrations/postgres/0001_catalog.sql"),
    ),
    (
        2,
        "drill result damaged",
        include_str!("../../migrations/postgres/0002_drill_result_damaged.sql"),
    ),
    (
        3,
        "recovery sets",
        include_str!("../../migrations/postgres/0003_recovery_sets.sql"),
    ),
]);

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
pub const SCHEMA_VERSION: i64 = 3;

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
        // A SQLite file is local: "connecting" can only wait on another process's lock (a
        // writer, or the checkpoint the last connection of another process runs on close,
        // which fsyncs and takes seconds on a loaded disk). That wait is bounded by the busy
        // timeout; cutting it short at the connect timeout would drop a backup's record for
        // nothing (seen with two backups finishing at once).
        let connect_timeout = match backend {
            Backend::Sqlite => opts.connect_timeout + opts.busy_timeout,
            Backend::Postgres => opts.connect_timeout,
        };
        // One probe connection first: the pool retries failed connects until its timeout and
        // then only says "timed out"; the probe fails fast with the real reason (connection
        // refused, not a database, permission denied).
        let probe = tokio::time::timeout(connect_timeout, async {
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
                    connect_timeout.as_secs_f64()
                )))
            }
            Ok(Err(e)) => return Err(open_err(e.to_string())),
            Ok(Ok(())) => {}
        }
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 4 } else { 8 })
            .acquire_timeout(connect_timeout)
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
        // Switching a fresh file to WAL takes an exclusive lock, and SQLite answers a
        // connection that races another one doing the same with SQLITE_BUSY at once, without
        // its busy handler. Retry that (bounded by the busy timeout) like any lock wait.
        let start = std::time::Instant::now();
        let mut wait = Duration::from_millis(10);
        loop {
            match sqlx::query(&pragma).execute(&mut *conn).await {
                Ok(_) => break,
                Err(e) if is_busy(&e) && start.elapsed().as_millis() < busy_ms => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_millis(200));
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// SQLITE_BUSY or SQLITE_LOCKED (and their extended codes).
fn is_busy(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .and_then(|c| c.parse::<i32>().ok())
        .is_some_and(|c| matches!(c & 0xff, 5 | 6))
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
}
