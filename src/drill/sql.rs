//! How a drill talks SQL to a restored server: the connection ([`SqlConn`]) and its
//! password ([`Password`]), shared by the environments that provide them and the restore
//! tests that use them.

use std::path::PathBuf;
use std::process::{Command, Stdio};

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
                let mut c = Command::new(self.tool("psql"));
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
                let mut c = Command::new(self.tool("mariadb"));
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
