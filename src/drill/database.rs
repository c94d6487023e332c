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
use super::set::SetDb;
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
    /// The environment the drill's own database is loaded into.
    fn env_name(&self) -> &'static str {
        self.env_name_of(self.kind)
    }

    fn env_name_of(&self, kind: DbKind) -> &'static str {
        match (&self.environment, kind) {
            (DbEnvironment::Ephemeral { .. }, DbKind::Postgres) => "ephemeral-postgres",
            (DbEnvironment::Ephemeral { .. }, DbKind::Mariadb) => "ephemeral-mariadb",
            (DbEnvironment::Scratch { .. }, _) => "scratch",
            (DbEnvironment::Command(_), _) => "command",
        }
    }

    /// The report's environment: both servers' for a set of PostgreSQL and MariaDB.
    fn report_env_name(&self) -> &'static str {
        match (self.kind, self.other_kind()) {
            (DbKind::Postgres, Some(_)) => "ephemeral-postgres+ephemeral-mariadb",
            (DbKind::Mariadb, Some(_)) => "ephemeral-mariadb+ephemeral-postgres",
            _ => self.env_name(),
        }
    }

    /// The engine of a set's database members that is not the drill's own (a set of
    /// PostgreSQL and MariaDB databases): they get a throwaway server of their own, started
    /// beside the drill's.
    fn other_kind(&self) -> Option<DbKind> {
        self.set
            .as_ref()?
            .databases
            .iter()
            .map(|m| m.kind)
            .find(|k| *k != self.kind)
    }

    /// What the backup recorded about the dumped database.
    fn meta(&self) -> Option<&crate::repo::snapshot::DatabaseMeta> {
        self.ctx.snapshot.source.database().map(|(_, m)| m)
    }

    /// Builds and provisions the environment for `kind`'s databases off the async threads
    /// (provisioning blocks for seconds). A failed environment is torn down before the
    /// error is returned.
    async fn provision(
        &self,
        kind: DbKind,
        drill_id: &str,
    ) -> Result<Box<dyn Environment>, DrillError> {
        let failed = |m: String| DrillError::from_tool(DrillFailure::Provision, m);
        let env_name = self.env_name_of(kind);
        let mut env: Box<dyn Environment> = match (&self.environment, kind) {
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
                if spec.kind != kind.as_str() {
                    return Err(failed(format!(
                        "the scratch server is a {} server, but job {} is a {} job; give [drill] server a {}:// URL",
                        spec.kind,
                        self.ctx.job.as_deref().unwrap_or("?"),
                        kind.as_str(),
                        kind.as_str()
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
                CommandEnv::new(spec.clone(), kind.as_str(), drill_id)
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
            Ok(Err(e)) => Err(failed(format!("provisioning the {env_name} failed: {e}"))),
            Err(e) => Err(failed(format!(
                "provisioning the {env_name} crashed: {e} (its drop guard tore it down)"
            ))),
        }
    }

    /// Fetch + load: the snapshot streamed into `database` on the provisioned server, and a
    /// set's other databases beside it — on the same server, or on `other` (the second
    /// server, of the other engine) — all loads at once. Returns every set database
    /// member's (job, database, engine), the drill's own first.
    async fn load(
        &self,
        sw: &mut Stopwatch,
        conn: &ConnectionInfo,
        other: Option<&ConnectionInfo>,
        database: &str,
    ) -> Result<Vec<SetDb>, DrillError> {
        sw.begin(Phase::Fetch);
        let index = Arc::new(self.ctx.repo.load_index().await.map_err(|e| {
            DrillError::from_error(
                DrillFailure::Fetch,
                "reading the repository index failed",
                &e,
            )
        })?);
        sw.begin(Phase::Load);
        let dbs = self.set_databases(database);
        let mut loads = vec![self.load_one(
            &index,
            self.kind,
            conn,
            database,
            self.ctx.snapshot_id,
            self.ctx.snapshot,
            None,
        )];
        let members = self.set.iter().flat_map(|s| s.databases.iter());
        for (m, d) in members.zip(dbs.iter().skip(1)) {
            let server = match (d.kind == self.kind, other) {
                (true, _) => conn,
                (false, Some(o)) => o,
                (false, None) => {
                    return Err(DrillError::new(
                        DrillFailure::Provision,
                        format!(
                            "no {} server was started for set member {}",
                            d.kind.as_str(),
                            d.job
                        ),
                    ))
                }
            };
            loads.push(self.load_one(
                &index,
                d.kind,
                server,
                &d.database,
                m.snapshot_id,
                &m.snapshot,
                Some(&m.job),
            ));
        }
        // Every load runs to its end (a loader is never abandoned mid-stream); the first
        // damaged member is the verdict, else the first failure.
        let results = futures::future::join_all(loads).await;
        let mut errors: Vec<DrillError> = results.into_iter().filter_map(Result::err).collect();
        if let Some(i) = errors.iter().position(|e| e.kind == DrillFailure::Damaged) {
            return Err(errors.swap_remove(i));
        }
        match errors.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(dbs),
        }
    }

    /// Streams one snapshot of engine `kind` into `database` on the server `conn` reaches
    /// (`member`: the set member it belongs to, when it is not the drill's own snapshot).
    #[allow(clippy::too_many_arguments)]
    async fn load_one(
        &self,
        index: &Arc<crate::repo::index::Index>,
        kind: DbKind,
        conn: &ConnectionInfo,
        database: &str,
        snapshot_id: crate::ids::SnapshotId,
        snapshot: &crate::repo::snapshot::Snapshot,
        member: Option<&str>,
    ) -> Result<(), DrillError> {
        let target = conn.db_conn(database);
        let password = conn.password.as_ref().map(|p| p.0.clone());
        let opts = self.restore_options(kind, conn, snapshot.source.database().map(|(_, m)| m));
        let r = match kind {
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

    /// Where each database member of a set is loaded: (job, database, engine), the drill's
    /// own (`database`) first; names are chosen per server (two servers may both hold an
    /// `app`). Nothing for a drill that is not a set's.
    fn set_databases(&self, database: &str) -> Vec<SetDb> {
        let Some(set) = &self.set else {
            return Vec::new();
        };
        let mut all: Vec<(String, Option<String>, DbKind)> =
            vec![(set.db_job.clone(), Some(database.to_string()), self.kind)];
        all.extend(set.databases.iter().map(|m| {
            (
                m.job.clone(),
                m.snapshot
                    .source
                    .database()
                    .and_then(|(_, meta)| meta.database.clone()),
                m.kind,
            )
        }));
        let mut out: Vec<Option<SetDb>> = vec![None; all.len()];
        for kind in [DbKind::Postgres, DbKind::Mariadb] {
            let (pos, jobs): (Vec<usize>, Vec<(String, Option<String>)>) = all
                .iter()
                .enumerate()
                .filter(|(_, (_, _, k))| *k == kind)
                .map(|(i, (j, o, _))| (i, (j.clone(), o.clone())))
                .unzip();
            for (i, (job, name)) in pos.into_iter().zip(super::set::member_db_names(&jobs)) {
                out[i] = Some(SetDb {
                    job,
                    database: name,
                    kind,
                });
            }
        }
        out.into_iter().flatten().collect()
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
        kind: DbKind,
        conn: &ConnectionInfo,
        meta: Option<&crate::repo::snapshot::DatabaseMeta>,
    ) -> DbRestoreOptions {
        let own_server = matches!(self.environment, DbEnvironment::Ephemeral { .. });
        let globals =
            own_server && kind == DbKind::Postgres && meta.is_some_and(|m| m.has_globals());
        let accounts = meta.and_then(|m| m.accounts(kind));
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
        match self.provision_all(&id).await {
            Err(e) => error = Some(e),
            Ok((mut env, mut other)) => {
                let conn = env.connection().cloned();
                let other_conn = other.as_ref().and_then(|o| o.connection().cloned());
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
                    Some(_) if other.is_some() && other_conn.is_none() => {
                        error = Some(DrillError::new(
                            DrillFailure::Provision,
                            "the set's second server reported no connection after provisioning",
                        ))
                    }
                    Some(_) if self.ctx.cancel.is_cancelled() => {
                        error = Some(DrillError::new(
                            DrillFailure::Interrupted,
                            "interrupted after provisioning",
                        ))
                    }
                    Some(conn) => {
                        // The databases load while the set's file members are restored.
                        let (loaded, trees) = tokio::join!(
                            self.load(&mut sw, &conn, other_conn.as_ref(), &database),
                            self.restore_set_trees(&mut set_dir)
                        );
                        match (loaded, trees) {
                            (Err(e), _) => {
                                // The servers' own logs may be what says the disk ran full.
                                // A damaged backup is the whole story: a server's reaction
                                // to a dump cut short adds nothing.
                                let logs = match e.kind {
                                    DrillFailure::Damaged => String::new(),
                                    _ => server_logs(&*env, other.as_deref()),
                                };
                                error = Some(match e.kind {
                                    _ if logs.is_empty() => e,
                                    DrillFailure::Load => {
                                        DrillError::from_tool(e.kind, format!("{e}{logs}"))
                                    }
                                    _ => DrillError::new(e.kind, format!("{e}{logs}")),
                                })
                            }
                            (Ok(_), Err(e)) => error = Some(e),
                            (Ok(set_dbs), Ok(members)) => {
                                sw.begin(Phase::Checks);
                                match self
                                    .check(
                                        &conn,
                                        other_conn.as_ref(),
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
                                if self.ctx.keep
                                    && error.is_none()
                                    && !self.ctx.cancel.is_cancelled()
                                {
                                    if let Some(note) = env.keep() {
                                        let second = match (other.as_mut(), &other_conn) {
                                            (Some(o), Some(oc)) => o
                                                .keep()
                                                .map(|n| {
                                                    format!(
                                                        "; the {} left running too; connect with: {}; {n}",
                                                        o.kind(),
                                                        oc.connect_hint(
                                                            set_dbs
                                                                .iter()
                                                                .find(|d| d.kind != self.kind)
                                                                .map_or("", |d| &d.database)
                                                        )
                                                    )
                                                })
                                                .unwrap_or_default(),
                                            _ => String::new(),
                                        };
                                        let files = set_dir
                                            .take()
                                            .map(|d| {
                                                let rm = format!("rm -rf {}", d.path().display());
                                                format!(
                                                    "; the set's files are {}",
                                                    super::env::keep_dir(d, Some(rm))
                                                )
                                            })
                                            .unwrap_or_default();
                                        kept = Some(format!(
                                            "{} left running; connect with: {}; {note}{second}{files}",
                                            self.env_name(),
                                            conn.connect_hint(&database),
                                        ));
                                    }
                                }
                            }
                        }
                    }
                }
                sw.begin(Phase::Teardown);
                // Asked while the servers still run, after the checks: not part of the RTO.
                if let Some(c) = versions_of {
                    let db = database.clone();
                    let oc = other_conn.clone();
                    if let Ok(v) = tokio::task::spawn_blocking(move || {
                        let (mut tools, server) = restore_versions(&c, &db);
                        if let Some(oc) = oc {
                            tools.extend(restore_versions(&oc, "").0);
                        }
                        (tools, server)
                    })
                    .await
                    {
                        versions = v;
                    }
                }
                // Both servers go, whatever happened (the drop guards, should this task
                // be dropped instead).
                if let Some(o) = other {
                    if let Err(e) = teardown(o).await {
                        error.get_or_insert(e);
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
        let environment = self.report_env_name();
        let set = self.set.as_ref().map(|s| s.info.clone());
        let mut report = self.ctx.report(id, environment, &sw, checks, error, kept);
        report.set = set;
        (report.restore_tools, report.restore_server_version) = versions;
        report
    }

    /// The drill's server and, for a set of PostgreSQL and MariaDB databases, a second one
    /// of the other engine, started at the same time. Both or neither: when one fails, the
    /// other is torn down before the error is returned.
    async fn provision_all(
        &self,
        drill_id: &str,
    ) -> Result<(Box<dyn Environment>, Option<Box<dyn Environment>>), DrillError> {
        let (main, other) = tokio::join!(self.provision(self.kind, drill_id), async {
            match self.other_kind() {
                Some(k) => Some(self.provision(k, drill_id).await),
                None => None,
            }
        });
        match (main, other) {
            (Ok(env), None) => Ok((env, None)),
            (Ok(env), Some(Ok(o))) => Ok((env, Some(o))),
            (Ok(env), Some(Err(e))) => {
                let _ = teardown(env).await;
                Err(e)
            }
            (Err(e), other) => {
                if let Some(Ok(o)) = other {
                    let _ = teardown(o).await;
                }
                Err(e)
            }
        }
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
        if set.trees.is_empty() {
            return Ok(Vec::new());
        }
        // An environment directory of its own: private, and swept as an orphan should
        // this process be killed.
        let d = super::env::make_dir("set").map_err(|e| {
            DrillError::new(
                DrillFailure::Provision,
                format!("cannot create the set's scratch directory: {e}"),
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

    /// Runs the restore tests against the loaded databases (off the async threads: the
    /// checks drive the command-line clients).
    #[allow(clippy::too_many_arguments)]
    async fn check(
        &self,
        conn: &ConnectionInfo,
        other: Option<&ConnectionInfo>,
        database: &str,
        drill_start: chrono::DateTime<Utc>,
        members: &[(String, std::path::PathBuf)],
        set_dbs: &[SetDb],
        set_dir: Option<std::path::PathBuf>,
    ) -> Result<Vec<checks::CheckResult>, DrillError> {
        let sql = conn.sql_conn(database);
        let mut env = conn.client_env(database);
        // The second server's client variables (libpq's `PG*` or the MariaDB client's
        // `MYSQL_*`: the two engines' never collide), at its first database.
        if let (Some(o), Some(first)) = (other, set_dbs.iter().find(|d| d.kind != self.kind)) {
            env.extend(
                o.client_env(&first.database)
                    .into_iter()
                    .filter(|(k, _)| k != "LIFEBOAT_DRILL_DATABASE"),
            );
        }
        let server = |kind: DbKind| if kind == self.kind { Some(conn) } else { other };
        // Each database member by job: its name, and a URL reaching it on its server.
        for d in set_dbs {
            env.push((super::set::member_db_var(&d.job), d.database.clone()));
            if let Some(c) = server(d.kind) {
                env.push((super::set::member_url_var(&d.job), c.url(&d.database)));
            }
        }
        let databases: Vec<checks::MemberDb> = set_dbs
            .iter()
            .filter_map(|d| {
                Some(checks::MemberDb {
                    job: d.job.clone(),
                    conn: server(d.kind)?.sql_conn(&d.database),
                    snapshot: self.set.as_ref().and_then(|s| {
                        s.databases
                            .iter()
                            .find(|m| m.job == d.job)
                            .map(|m| m.snapshot.clone())
                    }),
                })
            })
            .collect();
        // A set's smoke test gets both: the databases above and every member's files.
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

/// The ends of the servers' own logs, error lines only (a log may quote rows), as a
/// suffix for a load error: `the server's log ends with:` — or, with a set's second
/// server, each log under its environment's name. Empty when no server kept a log.
fn server_logs(env: &dyn Environment, other: Option<&dyn Environment>) -> String {
    let mut out = String::new();
    for e in std::iter::once(env).chain(other) {
        if let Some(l) = e.server_log_tail() {
            let who = match other {
                Some(_) => format!("the {} server's", e.kind()),
                None => "the server's".to_string(),
            };
            out.push_str(&format!(
                "\n{who} log ends with:\n{}",
                crate::restore::database::scrub_load_error(&l)
            ));
        }
    }
    out
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
