//! `scratch`: an existing database server, given by URL, that drills borrow. Each drill gets
//! its own database `lifeboat_drill_<id>` (created by the restore, dropped at teardown); the
//! server itself is never changed otherwise. Databases that a killed drill left behind are
//! found by their name — it carries the drill's start time — and dropped by the next drill
//! once they are older than the expiry (`[drill] orphan_expiry`, 24 h by default: longer than
//! any drill, so a drill still running on another host is never touched).
//!
//! The same code serves the `command` environment once its provisioning command has said
//! where its server is.

use std::time::{Duration, Instant};

use chrono::{NaiveDateTime, Utc};

use super::{ConnectionInfo, EnvError, Environment, Password};
use crate::drill::sql::SqlConn;
use crate::repo::snapshot::DbKind;
use crate::source::db::DbConn;

/// Prefix of every drill database.
pub const DB_PREFIX: &str = "lifeboat_drill_";

/// Where the scratch server is (from the plan's `[drill] server` and password source).
#[derive(Debug, Clone, PartialEq)]
pub struct ScratchSpec {
    /// `postgres` or `mariadb` (the URL's scheme).
    pub kind: String,
    /// The server and its maintenance database (`postgres`, `mysql`, …); never restored into.
    pub server: DbConn,
    /// Client tools to use (for PostgreSQL, ideally the server's major or newer).
    pub bin_dir: Option<std::path::PathBuf>,
    /// Drill databases older than this are orphans of killed drills and are dropped.
    pub orphan_expiry: Duration,
}

/// The drill database name for drill `id` (`20261124T081400Z-a1b2c3` →
/// `lifeboat_drill_20261124t081400z_a1b2c3`): letters, digits and underscores only, valid
/// unquoted in both servers.
pub fn drill_database(id: &str) -> String {
    format!("{DB_PREFIX}{}", db_name_part(id))
}

/// `s` as a piece of a database name valid unquoted in both servers: lower-case letters and
/// digits, anything else as `_`.
pub fn db_name_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// When the drill that made `name` started, if `name` is a drill database.
pub fn drill_database_time(name: &str) -> Option<chrono::DateTime<Utc>> {
    let stamp = name.strip_prefix(DB_PREFIX)?.get(..16)?;
    NaiveDateTime::parse_from_str(stamp, "%Y%m%dt%H%M%Sz")
        .ok()
        .map(|t| t.and_utc())
}

/// A borrowed server holding one drill database.
pub struct ScratchServer {
    spec: ScratchSpec,
    password: Option<Password>,
    database: String,
    /// How long provisioning waits for the server to accept connections.
    ready_timeout: Duration,
    env_name: &'static str,
    conn: Option<ConnectionInfo>,
    /// PostgreSQL ≥ 13 (`DROP DATABASE … WITH (FORCE)`), asked once.
    pg_force_drop: std::cell::OnceCell<bool>,
}

impl ScratchServer {
    /// `drill_id` names the drill database; `ready_timeout` is how long to wait for the
    /// server (0 for a server that should already be up).
    pub fn new(
        spec: ScratchSpec,
        password: Option<Password>,
        drill_id: &str,
        ready_timeout: Duration,
    ) -> Self {
        ScratchServer {
            spec,
            password,
            database: drill_database(drill_id),
            ready_timeout,
            env_name: "scratch",
            conn: None,
            pg_force_drop: std::cell::OnceCell::new(),
        }
    }

    /// Names the environment in messages (`command` when a provisioning command made it).
    pub(crate) fn named(mut self, env_name: &'static str) -> Self {
        self.env_name = env_name;
        self
    }

    fn kind(&self) -> DbKind {
        if self.spec.kind == "postgres" {
            DbKind::Postgres
        } else {
            DbKind::Mariadb
        }
    }

    fn info(&self) -> ConnectionInfo {
        let s = &self.spec.server;
        let pg = self.kind() == DbKind::Postgres;
        let (host, socket) = match (&s.host, &s.socket) {
            // A PostgreSQL host that is a path is its socket directory.
            (Some(h), _) if pg && h.starts_with('/') => ("localhost".to_string(), Some(h.into())),
            (Some(h), sock) => (h.clone(), sock.clone()),
            (None, Some(sock)) => ("localhost".to_string(), Some(sock.clone())),
            (None, None) => ("localhost".to_string(), None),
        };
        ConnectionInfo {
            kind: self.spec.kind.clone(),
            host,
            port: s.port.unwrap_or(if pg { 5432 } else { 3306 }),
            socket,
            user: s
                .user
                .clone()
                .unwrap_or_else(|| if pg { "postgres" } else { "root" }.to_string()),
            bin_dir: self.spec.bin_dir.clone(),
            password: self.password.clone(),
            database: Some(self.database.clone()),
        }
    }

    /// Connects once and returns the server's version string (for `plan check`); changes
    /// nothing on the server.
    pub fn ping(&self) -> Result<String, String> {
        let q = match self.kind() {
            DbKind::Postgres => "SHOW server_version",
            DbKind::Mariadb => "SELECT VERSION()",
        };
        let rows = self.maintenance().query(q)?;
        Ok(rows
            .first()
            .and_then(|r| r.first())
            .cloned()
            .unwrap_or_default())
    }

    /// A client on the maintenance database.
    fn maintenance(&self) -> SqlConn {
        self.info().sql_conn(&self.spec.server.database)
    }

    fn step(&self, step: impl Into<String>, detail: impl Into<String>) -> EnvError {
        EnvError::Step {
            env: format!(
                "{} server {}",
                self.env_name,
                self.spec.server.describe(&self.spec.kind)
            ),
            step: step.into(),
            detail: detail.into(),
        }
    }

    fn drop_sql(&self, db: &str, pg_force: bool) -> String {
        match self.kind() {
            DbKind::Postgres if pg_force => {
                format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)")
            }
            DbKind::Postgres => format!("DROP DATABASE IF EXISTS \"{db}\""),
            DbKind::Mariadb => format!("DROP DATABASE IF EXISTS `{db}`"),
        }
    }

    /// Drops `db`, disconnecting its sessions first (PostgreSQL 13+ `WITH (FORCE)`; older
    /// servers: `pg_terminate_backend`).
    fn drop_database(&self, sql: &SqlConn, db: &str) -> Result<(), String> {
        if self.kind() == DbKind::Postgres {
            let modern = *self.pg_force_drop.get_or_init(|| {
                sql.query("SHOW server_version_num")
                    .ok()
                    .and_then(|r| r.first()?.first()?.parse::<u32>().ok())
                    .is_some_and(|v| v >= 130000)
            });
            if !modern {
                let _ = sql.query(&format!(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'"
                ));
            }
            return sql.query(&self.drop_sql(db, modern)).map(|_| ());
        }
        sql.query(&self.drop_sql(db, false)).map(|_| ())
    }

    /// Drops drill databases older than the expiry; returns their names. One that cannot be
    /// dropped (another user's, say) is a warning, not a reason to skip this drill.
    fn sweep(&self, sql: &SqlConn) -> Result<Vec<String>, String> {
        let list = match self.kind() {
            DbKind::Postgres => {
                "SELECT datname FROM pg_database WHERE datname LIKE 'lifeboat\\_drill\\_%'"
            }
            DbKind::Mariadb => {
                "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE 'lifeboat\\_drill\\_%'"
            }
        };
        let expiry =
            chrono::Duration::from_std(self.spec.orphan_expiry).unwrap_or(chrono::Duration::MAX);
        let now = Utc::now();
        let mut dropped = Vec::new();
        for row in sql.query(list)? {
            let Some(name) = row.first() else { continue };
            let Some(t) = drill_database_time(name) else {
                continue;
            };
            if now - t > expiry {
                match self.drop_database(sql, name) {
                    Ok(()) => dropped.push(name.clone()),
                    Err(e) => {
                        tracing::warn!(database = %name, error = %e, "an expired drill database could not be dropped")
                    }
                }
            }
        }
        Ok(dropped)
    }
}

impl Environment for ScratchServer {
    fn kind(&self) -> &str {
        self.env_name
    }

    fn provision(&mut self) -> Result<(), EnvError> {
        if self.conn.is_some() {
            return Ok(());
        }
        let sql = self.maintenance();
        let deadline = Instant::now() + self.ready_timeout;
        loop {
            match sql.query("SELECT 1") {
                Ok(_) => break,
                Err(e) if Instant::now() >= deadline => {
                    return Err(self.step(
                        "connect",
                        format!("{e}; check the URL, that the server runs and accepts this user, and the password source"),
                    ))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(250)),
            }
        }
        let swept = self
            .sweep(&sql)
            .map_err(|e| self.step("drop expired drill databases", e))?;
        for name in swept {
            tracing::warn!(database = %name, "dropped a drill database left behind by a killed drill");
        }
        self.conn = Some(self.info());
        Ok(())
    }

    fn connection(&self) -> Option<&ConnectionInfo> {
        self.conn.as_ref()
    }

    fn teardown(&mut self) -> Result<(), EnvError> {
        if self.conn.take().is_none() {
            return Ok(());
        }
        let sql = self.maintenance();
        self.drop_database(&sql, &self.database).map_err(|e| {
            self.step(
                format!("DROP DATABASE {}", self.database),
                format!(
                    "{e}; drop it by hand (the next drill drops it after {})",
                    humantime::format_duration(self.spec.orphan_expiry)
                ),
            )
        })
    }

    fn keep(&mut self) -> Option<String> {
        self.conn.take()?;
        Some(format!(
            "database {} kept on {}; remove it with: {}",
            self.database,
            self.spec.server.describe(&self.spec.kind),
            self.drop_sql(&self.database, false)
        ))
    }
}

impl Drop for ScratchServer {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            tracing::error!(error = %e, "tearing down the scratch database failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drill_database_names_carry_their_time() {
        let n = drill_database("20261124T081400Z-a1b2c3");
        assert_eq!(n, "lifeboat_drill_20261124t081400z_a1b2c3");
        assert_eq!(
            drill_database_time(&n).unwrap().to_rfc3339(),
            "2026-11-24T08:14:00+00:00"
        );
        assert_eq!(drill_database_time("lifeboat_drill_junk"), None);
        assert_eq!(drill_database_time("shop"), None);
    }
}
