//! A drill of a database snapshot: a throwaway server ([`EphemeralPostgres`] matching the
//! dumped major version, or [`EphemeralMariadb`]) is provisioned, the snapshot is streamed
//! into it with the same loader `lifeboat restore` uses, the restore tests run against it,
//! and it is torn down — on success, on failure, on Ctrl-C (the loader observes the
//! [`Cancel`] token and teardown follows), and by the drop guard if anything panics.
//!
//! Phases: provision (sweep + start the server), fetch (the repository index), load (the
//! dump streamed from the repository — fetch, decrypt and decompress overlap with the
//! loader, so they are one phase), checks, teardown. Whatever goes wrong before the checks
//! is an infrastructure failure with the error in the report, never a panic.

use std::sync::Arc;

use chrono::Utc;

use super::checks::{self, CheckStatus, CheckTarget};
use super::env::{
    CommandEnv, CommandSpec, ConnectionInfo, Environment, EphemeralMariadb, EphemeralPostgres,
    ScratchServer, ScratchSpec,
};
use super::measure::{Phase, Stopwatch};
use super::sql::Password;
use super::{new_drill_id, DrillContext, DrillError, DrillFailure, DrillReport};
use crate::repo::snapshot::DbKind;
use crate::restore::database::{restore_mariadb, restore_postgres, DbRestoreOptions};

/// A drill of a PostgreSQL or MariaDB snapshot into a throwaway server.
pub struct DbDrill<'a> {
    pub ctx: DrillContext<'a>,
    pub kind: DbKind,
    /// The database to restore into on a server of its own: the original name (restore
    /// tests may name it), else `lifeboat_drill_<id>`. Scratch and command environments
    /// always use `lifeboat_drill_<id>`.
    pub database: Option<String>,
    pub environment: DbEnvironment,
    /// A recovery-point set's drill: its file members, restored beside the database.
    pub set: Option<super::set::SetDrill>,
}

/// Where a database drill restores into.
#[derive(Debug, Clone)]
pub enum DbEnvironment {
    /// A server lifeboat starts itself: `postgres_version` is the plan's `[drill]
    /// postgres_version` (by default the dumped server's major).
    Ephemeral { postgres_version: Option<u32> },
    /// An existing server, borrowed for a `lifeboat_drill_<id>` database.
    Scratch {
        spec: ScratchSpec,
        password: Option<Password>,
    },
    /// The user's provisioning and teardown commands.
    Command(CommandSpec),
}

/// The PostgreSQL major a drill runs: the one asked for, else the dumped server's major if it
/// is installed, else the oldest installed newer one (pg_restore loads older dumps). A dump
/// from a newer server than any installed cannot be loaded faithfully: that is an error.
pub fn choose_pg_major(
    asked: Option<u32>,
    dumped_version: Option<&str>,
    installed: &[u32],
) -> Result<u32, String> {
    if let Some(m) = asked {
        return if installed.contains(&m) {
            Ok(m)
        } else {
            Err(format!(
                "[drill] postgres_version = {m}, but PostgreSQL {m} is not installed (installed: {installed:?}); install postgresql-{m} or change postgres_version"
            ))
        };
    }
    let dumped: Option<u32> = dumped_version.and_then(|v| {
        v.split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|m| m.parse().ok())
    });
    match dumped {
        None => installed.iter().max().copied().ok_or_else(|| {
            "no PostgreSQL server is installed (/usr/lib/postgresql/<major>/bin/initdb); install a postgresql-<major> package".to_string()
        }),
        Some(d) => {
            if installed.contains(&d) {
                return Ok(d);
            }
            installed.iter().filter(|m| **m > d).min().copied().ok_or_else(|| {
                format!(
                    "the snapshot was dumped from PostgreSQL {d}, but only {installed:?} is installed; install postgresql-{d} (or set [drill] postgres_version to an installed newer major)"
                )
            })
        }
    }
}

impl DbDrill<'_> {
    fn env_name(&self) -> &'static str {
        match (&self.environment, self.kind) {
            (DbEnvironment::Ephemeral { .. }, DbKind::Postgres) => "ephemeral-postgres",
            (DbEnvironment::Ephemeral { .. }, DbKind::Mariadb) => "ephemeral-mariadb",
            (DbEnvironment::Scratch { .. }, _) => "scratch",
            (DbEnvironment::Command(_), _) => "command",
        }
    }

    fn kind_name(&self) -> &'static str {
        self.kind.as_str()
    }

    /// What the backup recorded about the dumped database.
    fn meta(&self) -> Option<&crate::repo::snapshot::DatabaseMeta> {
        self.ctx.snapshot.source.database().map(|(_, m)| m)
    }

    /// Builds and provisions the environment off the async threads (provisioning blocks for
    /// seconds). A failed environment is torn down before the error is returned.
    async fn provision(&self, drill_id: &str) -> Result<Box<dyn Environment>, DrillError> {
        let failed = |m: String| DrillError::from_tool(DrillFailure::Provision, m);
        let mut env: Box<dyn Environment> = match (&self.environment, self.kind) {
            (DbEnvironment::Ephemeral { postgres_version }, DbKind::Postgres) => {
                let installed = super::env::ephemeral_postgres::installed_majors();
                let major = choose_pg_major(
                    *postgres_version,
                    self.meta().and_then(|m| m.server_version.as_deref()),
                    &installed,
                )
                .map_err(failed)?;
                Box::new(EphemeralPostgres::new(Some(major)))
            }
            // A drill never needs binary logging: it checks data, not replication.
            (DbEnvironment::Ephemeral { .. }, DbKind::Mariadb) => {
                Box::new(EphemeralMariadb::new(false))
            }
            (DbEnvironment::Scratch { spec, password }, _) => {
                if spec.kind != self.kind_name() {
                    return Err(failed(format!(
                        "the scratch server is a {} server, but job {} is a {} job; give [drill] server a {}:// URL",
                        spec.kind,
                        self.ctx.job.as_deref().unwrap_or("?"),
                        self.kind_name(),
                        self.kind_name()
                    )));
                }
                Box::new(ScratchServer::new(
                    spec.clone(),
                    password.clone(),
                    drill_id,
                    std::time::Duration::ZERO,
                ))
            }
            (DbEnvironment::Command(spec), _) => Box::new(
                CommandEnv::new(spec.clone(), self.kind_name(), drill_id)
                    .with_cancel(self.ctx.cancel.clone()),
            ),
        };
        let res = tokio::task::spawn_blocking(move || {
            let r = env.provision();
            if r.is_err() {
                // Whatever half-started (directory, server) goes now, not at some later drop.
                let _ = env.teardown();
            }
            r.map(|_| env)
        })
        .await;
        match res {
            Ok(Ok(env)) => Ok(env),
            Ok(Err(e)) => Err(failed(format!(
                "provisioning the {} failed: {e}",
                self.env_name()
            ))),
            Err(e) => Err(failed(format!(
                "provisioning the {} crashed: {e} (its drop guard tore it down)",
                self.env_name()
            ))),
        }
    }

    /// Fetch + load: the snapshot streamed into `database` on the provisioned server, and a
    /// set's other databases beside it. Returns every set database member's (job, database).
    async fn load(
        &self,
        sw: &mut Stopwatch,
        conn: &ConnectionInfo,
        database: &str,
    ) -> Result<Vec<(String, String)>, DrillError> {
        sw.begin(Phase::Fetch);
        let index = Arc::new(self.ctx.repo.load_index().await.map_err(|e| {
            DrillError::from_error(
                DrillFailure::Fetch,
                "reading the repository index failed",
                &e,
            )
        })?);
        sw.begin(Phase::Load);
        self.load_one(
            &index,
            conn,
            database,
            self.ctx.snapshot_id,
            self.ctx.snapshot,
            None,
        )
        .await?;
        self.load_set_databases(&index, conn, database).await
    }

    /// Streams one snapshot into `database` on the provisioned server (`member`: the set
    /// member it belongs to, when it is not the drill's own snapshot).
    async fn load_one(
        &self,
        index: &Arc<crate::repo::index::Index>,
        conn: &ConnectionInfo,
        database: &str,
        snapshot_id: crate::ids::SnapshotId,
        snapshot: &crate::repo::snapshot::Snapshot,
        member: Option<&str>,
    ) -> Result<(), DrillError> {
        let target = conn.db_conn(database);
        let password = conn.password.as_ref().map(|p| p.0.clone());
        let opts = self.restore_options(conn, snapshot.source.database().map(|(_, m)| m));
        let r = match self.kind {
            DbKind::Postgres => {
                restore_postgres(
                    self.ctx.repo,
                    index,
                    snapshot,
                    &target,
                    password.clone(),
                    &opts,
                    &self.ctx.cancel,
                )
                .await
            }
            DbKind::Mariadb => {
                restore_mariadb(
                    self.ctx.repo,
                    index,
                    snapshot,
                    &target,
                    password.clone(),
                    &opts,
                    &self.ctx.cancel,
                )
                .await
            }
        };
        let what = match member {
            Some(j) => format!("snapshot {} (set member {j})", snapshot_id.short()),
            None => format!("snapshot {}", snapshot_id.short()),
        };
        r.map(|_| ()).map_err(|e| match e {
            crate::Error::Interrupted => DrillError::new(
                DrillFailure::Interrupted,
                "interrupted while loading the snapshot",
            ),
            e @ crate::Error::Integrity { .. } => DrillError::damaged(
                &format!(
                    "loading {what} into {} failed: the backup is damaged",
                    target.describe(&conn.kind)
                ),
                &e,
                index,
            ),
            e if e.exit_code() == crate::error::ExitCode::NoSpace => DrillError::from_error(
                DrillFailure::NoSpace,
                &format!("loading {what} into {} failed", target.describe(&conn.kind)),
                &e,
            ),
            e => DrillError::from_tool(
                DrillFailure::Load,
                format!(
                    "loading {what} into {} failed: {e}",
                    target.describe(&conn.kind)
                ),
            ),
        })
    }

    /// A set's other database members, each loaded into a database of its own on the same
    /// server (part of the load phase). Returns every database member's (job, database),
    /// the drill's own first; nothing for a drill that is not a set's.
    async fn load_set_databases(
        &self,
        index: &Arc<crate::repo::index::Index>,
        conn: &ConnectionInfo,
        database: &str,
    ) -> Result<Vec<(String, String)>, DrillError> {
        let Some(set) = &self.set else {
            return Ok(Vec::new());
        };
        let mut jobs = vec![(set.db_job.clone(), Some(database.to_string()))];
        jobs.extend(set.databases.iter().map(|m| {
            (
                m.job.clone(),
                m.snapshot
                    .source
                    .database()
                    .and_then(|(_, meta)| meta.database.clone()),
            )
        }));
        let names = super::set::member_db_names(&jobs);
        for (m, (_, name)) in set.databases.iter().zip(names.iter().skip(1)) {
            if self.ctx.cancel.is_cancelled() {
                return Err(DrillError::new(
                    DrillFailure::Interrupted,
                    "interrupted while loading the set's databases",
                ));
            }
            self.load_one(index, conn, name, m.snapshot_id, &m.snapshot, Some(&m.job))
                .await?;
        }
        Ok(names)
    }

    /// How the snapshot is loaded. A borrowed server (scratch, command) need not have the
    /// dumped roles and must not get them: ownership and privileges are left out. A server of
    /// lifeboat's own gets the roles first — from the snapshot's `globals.sql`, else the role
    /// names recorded at backup time — so ownership and grants load as dumped and a dump that
    /// needs them is proven; only tablespaces are left out (their directories are the source
    /// host's). A snapshot with neither (older lifeboat, `globals = false`) loads without
    /// ownership and privileges. MariaDB likewise: the recorded definers are created, and a
    /// snapshot without them loads with its definers rewritten to the loading user.
    fn restore_options(
        &self,
        conn: &ConnectionInfo,
        meta: Option<&crate::repo::snapshot::DatabaseMeta>,
    ) -> DbRestoreOptions {
        let own_server = matches!(self.environment, DbEnvironment::Ephemeral { .. });
        let globals =
            own_server && self.kind == DbKind::Postgres && meta.is_some_and(|m| m.has_globals());
        let accounts = meta.and_then(|m| m.accounts(self.kind));
        let create_roles: Vec<String> = match (own_server && !globals, accounts) {
            (true, Some(roles)) => roles.to_vec(),
            _ => Vec::new(),
        };
        let roles_known = globals || accounts.is_some();
        DbRestoreOptions {
            force: false,
            globals,
            jobs: 1,
            bin_dir: conn.bin_dir.clone(),
            no_defaults: true,
            no_owner: !(own_server && roles_known),
            no_tablespaces: own_server,
            create_roles,
        }
    }

    pub async fn run(self) -> DrillReport {
        let id = new_drill_id();
        let mut sw = Stopwatch::start(self.ctx.clock.clone());
        let mut checks = Vec::new();
        let mut error: Option<DrillError> = None;
        let mut kept = None;
        let mut versions = Default::default();
        let database = self
            .database
            .clone()
            .or_else(|| self.meta().and_then(|m| m.database.clone()))
            .unwrap_or_else(|| super::env::scratch::drill_database(&id));

        // A set's file members are restored here, beside the server (removed on drop).
        let mut set_dir: Option<tempfile::TempDir> = None;
        sw.begin(Phase::Provision);
        match self.provision(&id).await {
            Err(e) => error = Some(e),
            Ok(mut env) => {
                let conn = env.connection().cloned();
                let versions_of = conn.clone();
                let database = conn
                    .as_ref()
                    .and_then(|c| c.database.clone())
                    .unwrap_or(database);
                match conn {
                    None => {
                        error = Some(DrillError::new(
                            DrillFailure::Provision,
                            format!(
                                "the {} reported no connection after provisioning",
                                self.env_name()
                            ),
                        ))
                    }
                    Some(_) if self.ctx.cancel.is_cancelled() => {
                        error = Some(DrillError::new(
                            DrillFailure::Interrupted,
                            "interrupted after provisioning",
                        ))
                    }
                    Some(conn) => match self.load(&mut sw, &conn, &database).await {
                        Err(e) => {
                            // The server's own log may be what says the disk ran full.
                            // A damaged backup is the whole story: the server's reaction
                            // to a dump cut short adds nothing.
                            let log = match e.kind {
                                DrillFailure::Damaged => None,
                                // Only its error lines: a log may quote rows.
                                _ => env
                                    .server_log_tail()
                                    .map(|l| crate::restore::database::scrub_load_error(&l)),
                            };
                            error = Some(match log {
                                Some(log) if e.kind == DrillFailure::Load => DrillError::from_tool(
                                    e.kind,
                                    format!("{e}\nthe server's log ends with:\n{log}"),
                                ),
                                Some(log) => DrillError::new(
                                    e.kind,
                                    format!("{e}\nthe server's log ends with:\n{log}"),
                                ),
                                None => e,
                            })
                        }
                        Ok(set_dbs) => {
                            let trees = self.restore_set_trees(&mut set_dir).await;
                            let members = match trees {
                                Ok(m) => m,
                                Err(e) => {
                                    error = Some(e);
                                    Vec::new()
                                }
                            };
                            if error.is_none() {
                                sw.begin(Phase::Checks);
                                match self
                                    .check(
                                        &conn,
                                        &database,
                                        sw.start,
                                        &members,
                                        &set_dbs,
                                        set_dir.as_ref().map(|d| d.path().to_path_buf()),
                                    )
                                    .await
                                {
                                    Ok(c) => {
                                        checks = c;
                                        if checks.iter().all(|c| c.status == CheckStatus::Passed) {
                                            sw.checks_passed();
                                        }
                                    }
                                    Err(e) => error = Some(e),
                                }
                            }
                            if self.ctx.keep && error.is_none() && !self.ctx.cancel.is_cancelled() {
                                if let Some(note) = env.keep() {
                                    let files = set_dir
                                        .take()
                                        .map(|d| {
                                            format!(
                                                "; the set's files are in {}",
                                                d.keep().display()
                                            )
                                        })
                                        .unwrap_or_default();
                                    kept = Some(format!(
                                        "{} left running; connect with: {}; {note}{files}",
                                        self.env_name(),
                                        conn.connect_hint(&database),
                                    ));
                                }
                            }
                        }
                    },
                }
                sw.begin(Phase::Teardown);
                // Asked while the server still runs, after the checks: not part of the RTO.
                if let Some(c) = versions_of {
                    let db = database.clone();
                    if let Ok(v) =
                        tokio::task::spawn_blocking(move || restore_versions(&c, &db)).await
                    {
                        versions = v;
                    }
                }
                if let Err(e) = teardown(env).await {
                    error.get_or_insert(e);
                }
            }
        }
        if self.ctx.cancel.is_cancelled() && error.is_none() {
            error = Some(DrillError::new(DrillFailure::Interrupted, "interrupted"));
        }
        drop(set_dir);
        sw.end();
        let environment = self.env_name();
        let set = self.set.as_ref().map(|s| s.info.clone());
        let mut report = self.ctx.report(id, environment, &sw, checks, error, kept);
        report.set = set;
        (report.restore_tools, report.restore_server_version) = versions;
        report
    }

    /// A set's drill: its file members restored into a private directory beside the server
    /// (part of the load phase). Nothing for other drills.
    async fn restore_set_trees(
        &self,
        dir: &mut Option<tempfile::TempDir>,
    ) -> Result<Vec<(String, std::path::PathBuf)>, DrillError> {
        let Some(set) = &self.set else {
            return Ok(Vec::new());
        };
        let d = tempfile::Builder::new()
            .prefix("lifeboat-env-set-")
            // Private: a copy of production data.
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .map_err(|e| {
                DrillError::from_error(
                    DrillFailure::Provision,
                    "cannot create the set's scratch directory",
                    &crate::Error::io("create", std::env::temp_dir(), e),
                )
            })?;
        let index = Arc::new(self.ctx.repo.load_index().await.map_err(|e| {
            DrillError::from_error(
                DrillFailure::Fetch,
                "reading the repository index failed",
                &e,
            )
        })?);
        let root = d.path().to_path_buf();
        *dir = Some(d);
        super::set::restore_trees(self.ctx.repo, index, set, &root, &self.ctx.cancel).await
    }

    /// Runs the restore tests against the loaded database (off the async threads: the
    /// checks drive the command-line clients).
    async fn check(
        &self,
        conn: &ConnectionInfo,
        database: &str,
        drill_start: chrono::DateTime<Utc>,
        members: &[(String, std::path::PathBuf)],
        set_dbs: &[(String, String)],
        set_dir: Option<std::path::PathBuf>,
    ) -> Result<Vec<checks::CheckResult>, DrillError> {
        let sql = conn.sql_conn(database);
        let mut env = conn.client_env(database);
        // A set's databases are all on this one server: each member's database by job.
        for (job, db) in set_dbs {
            env.push((super::set::member_db_var(job), db.clone()));
        }
        let databases: Vec<checks::MemberDb> = set_dbs
            .iter()
            .map(|(job, db)| checks::MemberDb {
                job: job.clone(),
                conn: conn.sql_conn(db),
                snapshot: self.set.as_ref().and_then(|s| {
                    s.databases
                        .iter()
                        .find(|m| &m.job == job)
                        .map(|m| m.snapshot.clone())
                }),
            })
            .collect();
        // A set's smoke test gets both: the database above and every member's files.
        if let Some(d) = &set_dir {
            env.push(("LIFEBOAT_DRILL_DIR".into(), d.display().to_string()));
        }
        for (job, root) in members {
            env.push((super::set::member_dir_var(job), root.display().to_string()));
        }
        let members = members.to_vec();
        let tests = self.ctx.tests.clone();
        let snapshot = self.ctx.snapshot.clone();
        let rpo_target = self.ctx.targets.rpo;
        tokio::task::spawn_blocking(move || {
            let t = CheckTarget {
                sql: Some(&sql),
                dir: set_dir.as_deref(),
                snapshot: &snapshot,
                drill_start,
                rpo_target,
                env,
                members,
                databases,
            };
            checks::run_all(&tests, &t)
        })
        .await
        .map_err(|e| {
            DrillError::new(
                DrillFailure::Checks,
                format!("the restore tests crashed: {e}"),
            )
        })
    }
}

/// The tools that load a snapshot into `conn`'s server (found as the loader finds them),
/// each with its `--version` line, and the server's own version (asked in `database`, else
/// in the server's default database: a failed load may have left none).
fn restore_versions(
    conn: &ConnectionInfo,
    database: &str,
) -> (std::collections::BTreeMap<String, String>, Option<String>) {
    use crate::sys::process::{find_tool, tool_version};
    let bin = conn.bin_dir.as_deref();
    let (tools, query, fallback): (&[&[&str]], _, _) = match conn.db_kind() {
        DbKind::Postgres => (
            &[&["pg_restore"], &["psql"]],
            "SHOW server_version",
            "postgres",
        ),
        DbKind::Mariadb => (&[&["mariadb", "mysql"]], "SELECT VERSION()", "mysql"),
    };
    let mut found = std::collections::BTreeMap::new();
    for names in tools {
        if let Some((name, path)) = names
            .iter()
            .find_map(|n| find_tool(n, bin).map(|p| (n.to_string(), p)))
        {
            if let Some(v) = tool_version(&path) {
                found.insert(name, v);
            }
        }
    }
    let server = [database, fallback].into_iter().find_map(|db| {
        conn.sql_conn(db)
            .query(query)
            .ok()
            .and_then(|rows| rows.into_iter().next())
            .and_then(|row| row.into_iter().next())
            .filter(|v| !v.is_empty())
    });
    (found, server)
}

/// Stops the server and removes its files, off the async threads.
async fn teardown(mut env: Box<dyn Environment>) -> Result<(), DrillError> {
    let name = env.kind().to_string();
    let res = tokio::task::spawn_blocking(move || env.teardown()).await;
    let err = |e: String| {
        DrillError::new(DrillFailure::Teardown, format!("tearing down the {name} failed: {e}; remove what is left with `lifeboat drill` (it sweeps orphans) or by hand"))
    };
    match res {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(err(e.to_string())),
        Err(e) => Err(err(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pg_major_follows_the_dump_then_the_plan() {
        assert_eq!(
            choose_pg_major(None, Some("15.4 (Debian)"), &[16, 15]),
            Ok(15)
        );
        assert_eq!(choose_pg_major(Some(16), Some("15.4"), &[16, 15]), Ok(16));
        assert_eq!(choose_pg_major(None, Some("14.1"), &[17, 16, 15]), Ok(15));
        assert_eq!(choose_pg_major(None, None, &[15, 16]), Ok(16));
        let e = choose_pg_major(None, Some("17.0"), &[15]).unwrap_err();
        assert!(e.contains("postgresql-17"), "{e}");
        let e = choose_pg_major(Some(13), None, &[15]).unwrap_err();
        assert!(e.contains("postgres_version = 13"), "{e}");
        assert!(choose_pg_major(None, None, &[]).is_err());
    }
}
