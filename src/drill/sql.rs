//! How a drill talks SQL to a restored server: the connection ([`SqlConn`]) and its
//! password ([`Password`]), shared by the environments that provide them and the restore
//! tests that use them.
//!
//! Restore tests query through a driver session ([`SqlSession`], sqlx's PostgreSQL and
//! MySQL drivers), never by parsing a command-line client's output: every value arrives as
//! one cell with its column's type ([`Value`]) — NULL is NULL, a value holding a tab or a
//! newline is still one value, and MariaDB sessions talk utf8mb4 whatever the locale of the
//! process (a systemd unit without `LANG` made the `mariadb` client talk latin1). The
//! command-line clients remain for loading dumps and for the scratch server's housekeeping.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use sqlx::{Column, Connection, Executor, Row, TypeInfo, ValueRef};

use crate::repo::snapshot::DbKind;

/// A database password handed over by an environment (never printed: `Debug` hides it).
#[derive(Clone, PartialEq, Eq)]
pub struct Password(pub zeroize::Zeroizing<String>);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

impl Password {
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

/// A SQL client for the restored server, driven through the server's own command-line
/// client (`psql` / `mariadb`), so checks see exactly what an operator would.
#[derive(Debug, Clone)]
pub struct SqlConn {
    pub kind: DbKind,
    /// PostgreSQL: socket directory or host; MariaDB: host (ignored when `socket` is set).
    pub host: String,
    pub port: u16,
    /// MariaDB socket file.
    pub socket: Option<PathBuf>,
    pub user: String,
    pub database: String,
    /// Where the client binaries live (matching the server version), if not on PATH.
    pub bin_dir: Option<PathBuf>,
    /// Passed in the client's environment (`PGPASSWORD` / `MYSQL_PWD`), never in argv.
    pub password: Option<Password>,
}

impl SqlConn {
    pub(crate) fn tool(&self, name: &str) -> PathBuf {
        match &self.bin_dir {
            Some(d) if d.join(name).exists() => d.join(name),
            _ => PathBuf::from(name),
        }
    }

    /// Runs one statement; returns rows of tab-separated columns.
    pub fn query(&self, sql: &str) -> Result<Vec<Vec<String>>, String> {
        let mut cmd = match self.kind {
            DbKind::Postgres => {
                let mut c = crate::sys::process::command(self.tool("psql"));
                c.args([
                    "-X",
                    "-w",
                    "-q",
                    "-A",
                    "-t",
                    "-F",
                    "\t",
                    "-v",
                    "ON_ERROR_STOP=1",
                ])
                .arg("-h")
                .arg(&self.host)
                .arg("-p")
                .arg(self.port.to_string())
                .arg("-U")
                .arg(&self.user)
                .arg("-d")
                .arg(&self.database)
                .arg("-c")
                .arg(sql);
                c
            }
            DbKind::Mariadb => {
                let mut c = crate::sys::process::command(self.tool("mariadb"));
                c.args(["--no-defaults", "-N", "-B"]);
                match &self.socket {
                    Some(s) => c.arg(format!("--socket={}", s.display())),
                    None => c
                        .arg(format!("--host={}", self.host))
                        .arg(format!("--port={}", self.port)),
                };
                c.arg(format!("--user={}", self.user))
                    .arg(&self.database)
                    .arg("-e")
                    .arg(sql);
                c
            }
        };
        self.with_password(&mut cmd);
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run the SQL client: {e}"))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(err
                .trim()
                .lines()
                .last()
                .unwrap_or("query failed")
                .to_string());
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| l.split('\t').map(str::to_string).collect())
            .collect())
    }

    /// Opens a driver session for restore tests. Works on a thread that may block (a
    /// `spawn_blocking` thread of the caller's runtime, or no runtime at all); never call it
    /// from an async task.
    pub fn session(&self) -> Result<SqlSession, String> {
        let rt = match tokio::runtime::Handle::try_current() {
            Ok(h) => Rt::Shared(h),
            Err(_) => Rt::Own(
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("cannot start a runtime for the SQL session: {e}"))?,
            ),
        };
        let conn = rt.block_on(async {
            tokio::time::timeout(CONNECT_TIMEOUT, self.connect())
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {}s", CONNECT_TIMEOUT.as_secs())))
        });
        let conn = conn.map_err(|e| format!("cannot connect to {}: {e}", self.describe()))?;
        Ok(SqlSession { rt, conn })
    }

    /// Who and where, for messages (no password).
    pub fn describe(&self) -> String {
        let at = match (&self.kind, &self.socket) {
            (DbKind::Mariadb, Some(s)) => s.display().to_string(),
            _ => format!("{}:{}", self.host, self.port),
        };
        format!(
            "{} database {} as {} at {at}",
            self.kind.as_str(),
            self.database,
            self.user
        )
    }

    async fn connect(&self) -> Result<Conn, String> {
        let pw = self.password.as_ref().map(|p| p.as_str());
        match self.kind {
            DbKind::Postgres => {
                let mut o = sqlx::postgres::PgConnectOptions::new_without_pgpass()
                    .host(&self.host)
                    .port(self.port)
                    .username(&self.user)
                    .database(&self.database)
                    .application_name("lifeboat drill")
                    // Timestamps come back in UTC, whatever the server's default.
                    .options([("TimeZone", "UTC")]);
                if let Some(p) = pw {
                    o = o.password(p);
                }
                sqlx::PgConnection::connect_with(&o)
                    .await
                    .map(Conn::Pg)
                    .map_err(driver_error)
            }
            DbKind::Mariadb => {
                let mut o = sqlx::mysql::MySqlConnectOptions::new()
                    .port(self.port)
                    .username(&self.user)
                    .database(&self.database)
                    // utf8mb4 whatever the locale; the server's own SQL mode, not the
                    // driver's additions (PIPES_AS_CONCAT would change what `||` means in
                    // a restore test).
                    .charset("utf8mb4")
                    .pipes_as_concat(false)
                    .no_engine_substitution(false)
                    .timezone(Some("+00:00".to_string()));
                o = match &self.socket {
                    Some(s) => o.socket(s),
                    None => o.host(&self.host),
                };
                if let Some(p) = pw {
                    o = o.password(p);
                }
                sqlx::MySqlConnection::connect_with(&o)
                    .await
                    .map(Conn::My)
                    .map_err(driver_error)
            }
        }
    }

    /// Hands the password to a client through its environment (never argv).
    pub(crate) fn with_password(&self, cmd: &mut Command) {
        if let Some(p) = &self.password {
            cmd.env(
                match self.kind {
                    DbKind::Postgres => "PGPASSWORD",
                    DbKind::Mariadb => "MYSQL_PWD",
                },
                p.as_str(),
            );
        }
    }

    pub(crate) fn quote_table(&self, name: &str) -> String {
        match self.kind {
            DbKind::Postgres => name
                .splitn(2, '.')
                .map(|p| format!("\"{}\"", p.replace('"', "\"\"")))
                .collect::<Vec<_>>()
                .join("."),
            DbKind::Mariadb => name
                .splitn(2, '.')
                .map(|p| format!("`{}`", p.replace('`', "``")))
                .collect::<Vec<_>>()
                .join("."),
        }
    }
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// One value of a result row, typed by its column.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    /// Integer, floating-point and decimal columns: the number, and its text as the server
    /// wrote it (a `DECIMAL(12,2)` stays `"12.50"` for `equals`).
    Number(f64, String),
    /// Date and time columns, as the server wrote them (in UTC for time zone-aware ones).
    Time(String),
    /// Everything else: text, JSON, UUIDs, binary (lossily decoded), …
    Text(String),
}

impl Value {
    /// The value as text, as a SQL client would print it; `None` for NULL.
    pub fn text(&self) -> Option<String> {
        match self {
            Value::Null => None,
            Value::Number(_, t) | Value::Time(t) | Value::Text(t) => Some(t.clone()),
        }
    }

    pub fn number(&self) -> Option<f64> {
        match self {
            Value::Number(n, _) => Some(*n),
            Value::Text(t) => t.trim().parse().ok(),
            _ => None,
        }
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.text() {
            None => f.write_str("NULL"),
            Some(t) => write!(f, "{t:?}"),
        }
    }
}

enum Rt {
    Shared(tokio::runtime::Handle),
    Own(tokio::runtime::Runtime),
}

impl Rt {
    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        match self {
            Rt::Shared(h) => h.block_on(f),
            Rt::Own(r) => r.block_on(f),
        }
    }
}

enum Conn {
    Pg(sqlx::PgConnection),
    My(sqlx::MySqlConnection),
}

/// A driver session with a restored database, for restore tests ([`SqlConn::session`]).
pub struct SqlSession {
    rt: Rt,
    conn: Conn,
}

impl SqlSession {
    /// Runs one statement (the simple-query / text protocol, so any SQL the server takes
    /// runs, without preparing it) and returns its rows of typed values.
    pub fn query(&mut self, sql: &str) -> Result<Vec<Vec<Value>>, String> {
        let SqlSession { rt, conn } = self;
        rt.block_on(async {
            match conn {
                Conn::Pg(c) => {
                    let rows = c
                        .fetch_all(sqlx::raw_sql(sql))
                        .await
                        .map_err(driver_error)?;
                    Ok(rows.iter().map(pg_row).collect())
                }
                Conn::My(c) => {
                    let rows = c
                        .fetch_all(sqlx::raw_sql(sql))
                        .await
                        .map_err(driver_error)?;
                    Ok(rows.iter().map(my_row).collect())
                }
            }
        })
    }

    /// Closes the session politely (dropping it also works).
    pub fn close(self) {
        let SqlSession { rt, conn } = self;
        rt.block_on(async {
            let _ = match conn {
                Conn::Pg(c) => c.close().await,
                Conn::My(c) => c.close().await,
            };
        });
    }
}

/// The server's own message, without the driver's wrapping.
fn driver_error(e: sqlx::Error) -> String {
    match &e {
        sqlx::Error::Database(d) => match d.code() {
            Some(code) => format!("{} (SQLSTATE {code})", d.message()),
            None => d.message().to_string(),
        },
        _ => e.to_string(),
    }
}

/// How a column's type name reads as a [`Value`] kind.
fn classify(type_name: &str, text: String) -> Value {
    let t = type_name.to_ascii_uppercase();
    // MariaDB's BOOLEAN is TINYINT(1) and reads 0/1; PostgreSQL's bool reads t/f and stays
    // text, as psql prints it.
    let numeric = [
        "INT", "SERIAL", "FLOAT", "DOUBLE", "REAL", "NUMERIC", "DECIMAL", "OID", "YEAR", "BOOLEAN",
    ];
    if numeric.iter().any(|n| t.contains(n)) && !t.contains("INTERVAL") && !t.contains("POINT") {
        return match text.trim().parse::<f64>() {
            Ok(n) => Value::Number(n, text),
            Err(_) => Value::Text(text),
        };
    }
    if t.contains("TIMESTAMP") || t.contains("DATE") || t == "TIME" || t == "TIMETZ" {
        return Value::Time(text);
    }
    Value::Text(text)
}

fn pg_row(row: &sqlx::postgres::PgRow) -> Vec<Value> {
    (0..row.columns().len())
        .map(|i| {
            let null = row.try_get_raw(i).map(|v| v.is_null()).unwrap_or(true);
            if null {
                return Value::Null;
            }
            // The simple-query protocol returns every value as text.
            match row.try_get_unchecked::<String, _>(i) {
                Ok(s) => classify(row.columns()[i].type_info().name(), s),
                Err(_) => Value::Null,
            }
        })
        .collect()
}

fn my_row(row: &sqlx::mysql::MySqlRow) -> Vec<Value> {
    (0..row.columns().len())
        .map(|i| {
            let null = row.try_get_raw(i).map(|v| v.is_null()).unwrap_or(true);
            if null {
                return Value::Null;
            }
            match row.try_get_unchecked::<Vec<u8>, _>(i) {
                Ok(b) => classify(
                    row.columns()[i].type_info().name(),
                    String::from_utf8_lossy(&b).into_owned(),
                ),
                Err(_) => Value::Null,
            }
        })
        .collect()
}
