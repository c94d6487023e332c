//! The library's error type and the stable process exit codes it maps to.
//!
//! Exit codes follow restic's convention where they overlap (`doc/075_scripting.rst`) and are
//! documented in `--help` and the README. Messages are lowercase, name the object that failed,
//! and carry a hint where one helps.

use std::fmt;
use std::path::PathBuf;

use crate::store::StoreError;

pub use crate::exit::ExitCode;

/// Errors the library reports. Each names the object it concerns; `hint()` says what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no repository at {location}")]
    RepoNotFound { location: String },

    #[error("a repository already exists at {location}")]
    RepoExists { location: String },

    #[error("repository at {location} has format version {version}, this lifeboat supports version {supported}")]
    UnsupportedVersion {
        location: String,
        version: u32,
        supported: u32,
    },

    #[error("wrong password or damaged key file for repository {location}")]
    WrongPassword { location: String },

    #[error("no password given for repository {location}")]
    NoPassword { location: String },

    #[error("repository {location} is locked: {holder}")]
    Locked { location: String, holder: String },

    #[error("lock on repository {location} was lost: {detail}")]
    LockLost { location: String, detail: String },

    #[error("integrity violation in {object}: {detail}")]
    Integrity { object: String, detail: String },

    /// New data found damaged by its verification before upload (T27): nothing was stored,
    /// so nothing in the repository is damaged and the hint differs from `Integrity`'s.
    #[error("integrity violation in {object}, found before upload (nothing was stored): {detail}")]
    DamagedBeforeUpload { object: String, detail: String },

    #[error(transparent)]
    Store(#[from] StoreError),

    #[error(transparent)]
    Catalog(#[from] CatalogError),

    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("source {source_name} failed: {detail}")]
    SourceFailed {
        source_name: String,
        detail: String,
        /// What the failure was, as far as the tool said (the hint follows from it).
        cause: SourceCause,
    },

    #[error("restore into {target} failed: {detail}")]
    RestoreFailed { target: String, detail: String },

    #[error("snapshot {query} not found")]
    SnapshotNotFound { query: String },

    #[error("snapshot prefix {query} is ambiguous: matches {count} snapshots")]
    AmbiguousSnapshot { query: String, count: usize },

    #[error(transparent)]
    Plan(#[from] PlanError),

    #[error("invalid argument: {0}")]
    Usage(String),

    /// A plan, destination, secret or catalog setting that cannot be used as configured (the
    /// message names the object and the fix). Exit 2, like a bad flag.
    #[error("{0}")]
    Config(String),

    #[error("interrupted")]
    Interrupted,

    /// A destructive operation refused for safety (e.g. `forget` removing every snapshot of
    /// a group without `--force`, T18). Exit 1; nothing was changed.
    #[error("{0}")]
    Refused(String),

    #[error("{0}")]
    Other(String),
}

/// One problem in a plan file: where it is, what is wrong, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanIssue {
    pub file: PathBuf,
    pub line: usize,
    pub key: String,
    pub problem: String,
    pub fix: String,
}

impl std::fmt::Display for PlanIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}; fix: {}",
            self.file.display(),
            self.line,
            self.key,
            self.problem,
            self.fix
        )
    }
}

/// Every problem found in one plan file.
#[derive(Debug, thiserror::Error)]
pub struct PlanError {
    pub file: PathBuf,
    pub issues: Vec<PlanIssue>,
}

impl std::fmt::Display for PlanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "plan {} has {} problem(s):",
            self.file.display(),
            self.issues.len()
        )?;
        for i in &self.issues {
            write!(f, "\n  {i}")?;
        }
        Ok(())
    }
}

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

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A local file operation failed. A full disk stays an `Io` error naming the path (exit
    /// 15), so the hint speaks of that path's file system — a restore target, a drill's
    /// directory — not of the repository's.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// A source (dump tool, snapshot tool, hook) failed; its text is classified here, once,
    /// where the failure arises.
    pub fn source_failed(source_name: impl Into<String>, detail: impl Into<String>) -> Self {
        let detail = detail.into();
        Error::SourceFailed {
            source_name: source_name.into(),
            cause: SourceCause::classify(&detail),
            detail,
        }
    }

    pub fn integrity(object: impl fmt::Display, detail: impl fmt::Display) -> Self {
        Error::Integrity {
            object: object.to_string(),
            detail: detail.to_string(),
        }
    }

    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::RepoNotFound { .. } => ExitCode::RepoNotFound,
            Error::WrongPassword { .. } => ExitCode::WrongPassword,
            Error::Locked { .. } | Error::LockLost { .. } => ExitCode::Locked,
            Error::Integrity { .. } | Error::DamagedBeforeUpload { .. } => ExitCode::Integrity,
            Error::Store(e) => e.exit_code(),
            Error::Io { source, .. }
                if matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) =>
            {
                ExitCode::NoSpace
            }
            Error::SourceFailed { .. } => ExitCode::SourceFailed,
            Error::Usage(_) | Error::Config(_) => ExitCode::Usage,
            Error::Interrupted => ExitCode::Interrupted,
            _ => ExitCode::Error,
        }
    }

    /// What the user can do about it, when there is something useful to say.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            Error::RepoNotFound { .. } => {
                "check --repo / LIFEBOAT_REPO, or create one with `lifeboat init`".into()
            }
            Error::RepoExists { .. } => "choose another path, or use the existing repository".into(),
            Error::UnsupportedVersion { .. } => "upgrade lifeboat to a version that reads this format".into(),
            Error::WrongPassword { .. } => {
                "check LIFEBOAT_PASSWORD / LIFEBOAT_PASSWORD_FILE / --password-file; `lifeboat key list` shows the key slots".into()
            }
            Error::NoPassword { .. } => {
                "set LIFEBOAT_PASSWORD_FILE (or LIFEBOAT_PASSWORD_COMMAND, LIFEBOAT_PASSWORD), pass --password-file or --password-command, or run on a terminal to be prompted".into()
            }
            Error::Locked { .. } => {
                "wait for the other run to finish; a lock older than its expiry is ignored automatically".into()
            }
            Error::DamagedBeforeUpload { .. } => {
                "the repository is unchanged: run the backup again; if this recurs, test this machine's memory and CPU (e.g. memtester, stress-ng)".into()
            }
            // A damaged config: its message says what to put back.
            Error::Integrity { object, .. } if object.ends_with("config") => return None,
            Error::Integrity { .. } => {
                "run `lifeboat verify --read-data` to list every damaged object; restore from another region if one has a good copy".into()
            }
            Error::Io { path, source, .. }
                if matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) =>
            {
                format!(
                    "free space on the file system that holds {} (or raise its quota), then run again",
                    path.display()
                )
            }
            Error::SourceFailed { cause, .. } => return cause.hint().map(str::to_string),
            Error::Store(e) => return e.hint(),
            Error::Catalog(e) => e.hint(),
            Error::SnapshotNotFound { .. } => "`lifeboat snapshots` lists the snapshots".into(),
            Error::AmbiguousSnapshot { .. } => "give more characters of the snapshot id".into(),
            _ => return None,
        })
    }
}

/// Why a source failed, for the causes users meet most: the backup role lacks a right, the
/// credentials are wrong, or the server cannot be reached. Dump tools report these only as
/// text, so the text is read once, where the failure is made into an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceCause {
    /// PostgreSQL row-level security hides rows from the backup role.
    RowSecurity,
    /// PostgreSQL large objects the backup role may not read.
    LargeObjects,
    /// A table or schema the backup role may not read.
    Permission,
    /// mariadb-dump lacks one of the privileges it needs.
    MariadbPrivileges,
    /// Wrong role, user or password.
    Auth,
    /// The database does not exist.
    NoDatabase,
    /// The server cannot be reached.
    Connect,
    Other,
}

impl SourceCause {
    /// Reads a tool's failure text.
    pub fn classify(detail: &str) -> SourceCause {
        let causes: &[(&[&str], SourceCause)] = &[
            (&["row-level security"], SourceCause::RowSecurity),
            (
                &["permission denied for large object"],
                SourceCause::LargeObjects,
            ),
            (&["permission denied for"], SourceCause::Permission),
            (
                &["command denied to user", "Access denied for user"],
                SourceCause::MariadbPrivileges,
            ),
            (
                &[
                    "password authentication failed",
                    "no password supplied",
                    "FATAL:  role ",
                ],
                SourceCause::Auth,
            ),
            (&["FATAL:  database "], SourceCause::NoDatabase),
            (
                &[
                    "Connection refused",
                    "could not connect",
                    "Can't connect",
                    "failed: No such file or directory",
                ],
                SourceCause::Connect,
            ),
        ];
        causes
            .iter()
            .find(|(needles, _)| needles.iter().any(|n| detail.contains(n)))
            .map(|(_, c)| *c)
            .unwrap_or(SourceCause::Other)
    }

    /// What to do about it.
    pub fn hint(self) -> Option<&'static str> {
        Some(match self {
            SourceCause::RowSecurity => "the backup role must bypass row-level security to dump every row: ALTER ROLE <backup role> BYPASSRLS (or back up as a superuser)",
            SourceCause::LargeObjects => "pg_read_all_data does not cover large objects: back up as a superuser, or have their owners GRANT SELECT ON LARGE OBJECT … to the backup role",
            SourceCause::Permission => "the backup role cannot read everything: GRANT pg_read_all_data TO <backup role> (PostgreSQL 14+), or back up as a superuser",
            SourceCause::MariadbPrivileges => "mariadb-dump --single-transaction --routines --triggers --events needs SELECT, SHOW VIEW, TRIGGER and EVENT on the database, and SELECT on mysql.proc; check the job's user and password",
            SourceCause::Auth => "check the job's user and password (password_file / password_env) and the server's pg_hba.conf",
            SourceCause::NoDatabase => "check the job's database name",
            SourceCause::Connect => "check the job's host, port or socket, and that the server is running and accepts connections from this host",
            SourceCause::Other => return None,
        })
    }
}

impl From<crate::crypto::CryptoError> for Error {
    fn from(e: crate::crypto::CryptoError) -> Self {
        Error::integrity("encrypted object", e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hint_for(detail: &str) -> Option<String> {
        Error::source_failed("db", detail).hint()
    }

    #[test]
    fn dump_failures_get_the_hint_that_fits() {
        let rls = "pg_dump: error: query failed: ERROR:  query would be affected by row-level security policy for table \"orders\"";
        assert!(hint_for(rls).unwrap().contains("BYPASSRLS"));
        let lo = "pg_dump: error: could not open large object 4242: ERROR:  permission denied for large object 4242";
        assert!(hint_for(lo).unwrap().contains("large objects"));
        let table = "pg_dump: error: query failed: ERROR:  permission denied for table orders";
        assert!(hint_for(table).unwrap().contains("pg_read_all_data"));
        let view = "mariadb-dump: Couldn't execute 'show create table `big`': SHOW VIEW command denied to user 'lim'@'localhost' for table `shopm`.`big` (1142)";
        assert!(hint_for(view).unwrap().contains("SHOW VIEW"));
        let role = "psql: error: connection to server at \"127.0.0.1\", port 5432 failed: FATAL:  role \"nobody\" does not exist";
        assert!(hint_for(role).unwrap().contains("user and password"));
        let refused = "psql: error: connection to server at \"127.0.0.1\", port 5499 failed: Connection refused";
        assert!(hint_for(refused).unwrap().contains("host, port or socket"));
        assert_eq!(hint_for("pg_dump: error: out of memory"), None);
    }
}
