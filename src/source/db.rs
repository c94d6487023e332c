//! What the database sources share: connection settings (host, port, socket, user, database,
//! where the password comes from), the row-count mode, and the `--to` URL of a restore.
//! Passwords are never put in a URL or argv: they come from a [`SecretSpec`].

use std::path::PathBuf;

use crate::secret::SecretSpec;
use crate::{Error, Result};

/// How per-table row counts are recorded in the snapshot metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RowCounts {
    /// `count(*)` of every table, inside the dump's snapshot (PostgreSQL) or a snapshot
    /// opened just before the dump (MariaDB). Reads every table once more.
    #[default]
    Exact,
    /// The planner's statistics (`pg_class.reltuples`, `information_schema.TABLES.TABLE_ROWS`).
    Estimate,
    Off,
}

/// Where a database server is and how to log in.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DbConn {
    /// Host name, IP, or (PostgreSQL) a socket directory.
    pub host: Option<String>,
    pub port: Option<u16>,
    /// MariaDB socket file.
    pub socket: Option<PathBuf>,
    pub user: Option<String>,
    pub database: String,
    pub password: Option<SecretSpec>,
}

impl DbConn {
    /// A description safe for logs and snapshot paths (no password).
    pub fn describe(&self, scheme: &str) -> String {
        let user = self
            .user
            .as_deref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        let host = match (&self.host, &self.socket) {
            (Some(h), _) if h.starts_with('/') => format!("[{h}]"),
            (Some(h), _) => h.clone(),
            (None, Some(s)) => format!("[{}]", s.display()),
            (None, None) => "localhost".into(),
        };
        let port = self.port.map(|p| format!(":{p}")).unwrap_or_default();
        format!("{scheme}://{user}{host}{port}/{}", self.database)
    }

    /// Parses a restore target such as `postgres://user@host:5432/db`,
    /// `postgres://postgres@/db?host=/run/postgresql` or `mariadb://root@/db?socket=/run/mysqld/mysqld.sock`.
    /// A password in the URL is refused (it would be visible in `ps`).
    pub fn parse_url(url: &str) -> Result<(String, DbConn)> {
        let bad = |why: &str| {
            Error::Usage(format!(
                "restore target {url:?}: {why}; expected e.g. postgres://user@host:5432/dbname or mariadb://user@host:3306/dbname"
            ))
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let scheme = match scheme {
            "postgres" | "postgresql" => "postgres",
            "mariadb" | "mysql" => "mariadb",
            _ => return Err(bad("unknown scheme (use postgres:// or mariadb://)")),
        };
        let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, database) = main.split_once('/').ok_or_else(|| bad("no /dbname"))?;
        if database.is_empty() || database.contains('/') {
            return Err(bad("the database name is missing"));
        }
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        if userinfo.is_some_and(|u| u.contains(':')) {
            return Err(Error::Usage(
                "the restore target URL contains a password: a password in argv is visible to every user in `ps` (the URL is not repeated here); use --to-password-file or LIFEBOAT_TARGET_PASSWORD"
            .into()));
        }
        let mut conn = DbConn {
            database: database.to_string(),
            user: userinfo.filter(|u| !u.is_empty()).map(str::to_string),
            ..Default::default()
        };
        if !hostport.is_empty() {
            let (h, p) = match hostport.rsplit_once(':') {
                Some((h, p)) if !h.ends_with(']') || p.chars().all(|c| c.is_ascii_digit()) => {
                    (h, Some(p))
                }
                _ => (hostport, None),
            };
            conn.host = Some(h.trim_start_matches('[').trim_end_matches(']').to_string())
                .filter(|h| !h.is_empty());
            if let Some(p) = p {
                conn.port = Some(p.parse().map_err(|_| bad("the port is not a number"))?);
            }
        }
        for kv in query.split('&').filter(|s| !s.is_empty()) {
            match kv.split_once('=') {
                Some(("host", v)) => conn.host = Some(v.to_string()),
                Some(("port", v)) => conn.port = Some(v.parse().map_err(|_| bad("the port is not a number"))?),
                Some(("socket", v)) => conn.socket = Some(PathBuf::from(v)),
                Some(("password", _)) => {
                    return Err(Error::Usage("the restore target URL contains a password: refused (the URL is not repeated here); use --to-password-file or LIFEBOAT_TARGET_PASSWORD".into()))
                }
                _ => return Err(bad(&format!("unknown parameter {kv:?} (known: host, port, socket)"))),
            }
        }
        Ok((scheme.to_string(), conn))
    }
}

/// Reads a database source's password from the plan's secret source (if it names one), so a
/// missing secret fails the job before anything starts.
pub fn read_password(conn: &DbConn, job: &str) -> Result<Option<zeroize::Zeroizing<String>>> {
    conn.password
        .as_ref()
        .map(|s| {
            s.read().map_err(|e| {
                Error::source_failed(job, format!("database password: {e}; {}", e.fix))
            })
        })
        .transpose()
}

/// The `consistency_time` a metadata query returned (RFC 3339), or `fallback` — a moment
/// taken before the session opened, so a fallback never flatters the RPO.
pub fn consistency_time(
    meta: &serde_json::Value,
    fallback: chrono::DateTime<chrono::Utc>,
) -> chrono::DateTime<chrono::Utc> {
    meta["consistency_time"]
        .as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or(fallback)
}

/// The `dump_tools` a database snapshot records: each tool that wrote the dump with the
/// first line of its `--version` (a tool that does not say is left out).
pub(crate) fn dump_tools(
    tools: &[(&str, std::path::PathBuf)],
) -> std::collections::BTreeMap<String, String> {
    tools
        .iter()
        .filter_map(|(name, path)| {
            crate::sys::process::tool_version(path).map(|v| (name.to_string(), v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consistency_time_falls_back_to_the_earlier_moment() {
        let early = chrono::DateTime::parse_from_rfc3339("2020-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let v = serde_json::json!({"consistency_time": "2026-11-24T07:30:31.563021Z"});
        assert_eq!(
            consistency_time(&v, early).to_rfc3339(),
            "2026-11-24T07:30:31.563021+00:00"
        );
        assert_eq!(
            consistency_time(&serde_json::json!({"consistency_time": "garbage"}), early),
            early
        );
    }

    #[test]
    fn parses_restore_urls() {
        let (s, c) = DbConn::parse_url("postgres://app@db1:5433/orders").unwrap();
        assert_eq!(s, "postgres");
        assert_eq!(
            (
                c.host.as_deref(),
                c.port,
                c.user.as_deref(),
                c.database.as_str()
            ),
            (Some("db1"), Some(5433), Some("app"), "orders")
        );
        let (_, c) =
            DbConn::parse_url("postgresql://postgres@/x?host=/tmp/sock&port=7000").unwrap();
        assert_eq!((c.host.as_deref(), c.port), (Some("/tmp/sock"), Some(7000)));
        let (s, c) = DbConn::parse_url("mariadb://root@/shop?socket=/run/m.sock").unwrap();
        assert_eq!(
            (s.as_str(), c.socket),
            ("mariadb", Some(PathBuf::from("/run/m.sock")))
        );
        let e = DbConn::parse_url("postgres://u:secret@h/db")
            .unwrap_err()
            .to_string();
        assert!(e.contains("password") && !e.contains("secret"), "{e}");
        assert!(DbConn::parse_url("ftp://h/db").is_err());
        assert!(DbConn::parse_url("postgres://h/").is_err());
    }
}
