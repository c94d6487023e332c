//! Before a job's first backup: what its source needs, checked without backing anything up —
//! paths exist, tools are on PATH (or in the plan's `bin_dir`), secrets are readable,
//! databases answer (and pg_dump is new enough for the server), volumes are what the plan
//! says. Each problem is a [`Check`] that says how to fix it, never an error.

use std::path::Path;

use super::SourceSpec;
use crate::secret::SecretSpec;
use crate::sys::process::find_tool;

/// One preflight check of a source: passed or not, and what was checked (with the fix when
/// it failed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub ok: bool,
    pub what: String,
}

impl Check {
    fn new(ok: bool, what: String) -> Check {
        Check { ok, what }
    }
}

/// Each tool (given as alternatives) found on PATH or in `bin`.
fn tools_check(tools: &[&[&str]], bin: Option<&Path>) -> Vec<Check> {
    tools
        .iter()
        .map(|alts| match alts.iter().find_map(|t| find_tool(t, bin)) {
            Some(p) => Check::new(true, format!("{} found at {}", alts[0], p.display())),
            None => Check::new(
                false,
                format!(
                    "{} not found {}; install the tool or set bin_dir in the plan",
                    alts.join(" / "),
                    bin.map(|b| format!("in {}", b.display()))
                        .unwrap_or_else(|| "on PATH".into())
                ),
            ),
        })
        .collect()
}

fn secret_check(s: &Option<SecretSpec>) -> Option<Check> {
    s.as_ref().map(|s| match s.read() {
        Ok(_) => Check::new(
            true,
            format!("database password readable from {}", s.describe()),
        ),
        Err(e) => Check::new(false, format!("database password: {e}; {}", e.fix)),
    })
}

/// The major version of the pg_dump that a job would run.
fn pg_dump_major(bin: Option<&Path>) -> Option<u64> {
    let mut cmd = crate::sys::process::command(find_tool("pg_dump", bin)?);
    let out = cmd.arg("--version").output().ok()?;
    // "pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)"
    let text = String::from_utf8_lossy(&out.stdout);
    let ver = text.split(") ").nth(1)?;
    ver.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Everything a job's source needs before its first backup (blocking: runs the clients).
pub fn check_job(job: &str, source: &SourceSpec) -> Vec<Check> {
    let mut out = Vec::new();
    match source {
        SourceSpec::Dir { paths } => {
            for p in paths {
                out.push(match std::fs::symlink_metadata(p) {
                    Ok(_) => Check::new(true, format!("{} exists", p.display())),
                    Err(e) => Check::new(
                        false,
                        format!("{}: {e}; fix the path in the plan", p.display()),
                    ),
                });
            }
        }
        SourceSpec::Postgres(s) => {
            out.extend(tools_check(
                &[&["pg_dump"], &["pg_dumpall"], &["psql"], &["pg_restore"]],
                s.bin_dir.as_deref(),
            ));
            out.extend(secret_check(&s.conn.password));
            let pw = s.conn.password.as_ref().and_then(|p| p.read().ok());
            let env = super::postgres::libpq_env(&s.conn, pw.as_deref().map(|x| x.as_str()), None);
            let secrets = pw.iter().map(|p| p.to_string()).collect();
            let r = super::postgres::psql_session(s.bin_dir.as_deref(), &env, job, secrets)
                .and_then(|mut ses| {
                    let v = ses.query_json(
                        "SELECT json_build_object('v', current_setting('server_version'), 'num', current_setting('server_version_num')::int);",
                    )?;
                    ses.close("")?;
                    Ok(v)
                });
            if let Ok(v) = &r {
                let server = v["num"].as_u64().unwrap_or(0) / 10000;
                if let Some(dump) = pg_dump_major(s.bin_dir.as_deref()) {
                    if dump < server {
                        out.push(Check::new(
                            false,
                            format!(
                                "pg_dump {dump} cannot dump a PostgreSQL {server} server; install postgresql-client-{server} and set bin_dir = \"/usr/lib/postgresql/{server}/bin\""
                            ),
                        ));
                    }
                }
            }
            out.push(match r {
                Ok(v) => Check::new(
                    true,
                    format!(
                        "database {} reachable (PostgreSQL {})",
                        s.conn.describe("postgres"),
                        v["v"].as_str().unwrap_or("?")
                    ),
                ),
                Err(e) => Check::new(
                    false,
                    format!(
                        "database {} not reachable: {e}",
                        s.conn.describe("postgres")
                    ),
                ),
            });
        }
        SourceSpec::Mariadb(s) => {
            out.extend(tools_check(
                &[&["mariadb-dump", "mysqldump"], &["mariadb", "mysql"]],
                s.bin_dir.as_deref(),
            ));
            out.extend(secret_check(&s.conn.password));
            let pw = s.conn.password.as_ref().and_then(|p| p.read().ok());
            let secrets: Vec<String> = pw.iter().map(|p| p.to_string()).collect();
            let r = super::mysql::ClientOptions::new(&s.conn, pw.as_deref().map(|x| x.as_str()), s.no_defaults).and_then(|o| {
                let mut ses = super::mysql::client_session(s.bin_dir.as_deref(), &o, None, job, secrets)?;
                let v = ses.query_json(&format!(
                    "SELECT JSON_OBJECT('v', VERSION(), 'db', (SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {}));",
                    super::mysql::sql_literal(&s.conn.database)
                ))?;
                ses.close("")?;
                Ok(v)
            });
            out.push(match r {
                Ok(v) if v["db"].as_i64() == Some(1) => Check::new(true, format!("database {} reachable ({})", s.conn.describe("mariadb"), v["v"].as_str().unwrap_or("?"))),
                Ok(_) => Check::new(false, format!("server reachable but database {:?} does not exist; fix `database` in the plan", s.conn.database)),
                Err(e) => Check::new(false, format!("database {} not reachable: {e}", s.conn.describe("mariadb"))),
            });
        }
        SourceSpec::Btrfs(s) => {
            out.extend(tools_check(&[&["btrfs"]], None));
            let sub = s.subvolume.to_string_lossy();
            out.push(match super::volume::run_tool(job, "btrfs", &["subvolume", "show", &sub]) {
                Ok(_) => Check::new(true, format!("{sub} is a btrfs subvolume")),
                Err(e) => Check::new(false, format!("{sub} is not a btrfs subvolume ({e}); fix `subvolume` in the plan or create it with `btrfs subvolume create`")),
            });
        }
        SourceSpec::Block(s) => out.push(match std::fs::File::open(&s.path) {
            Ok(_) => Check::new(true, format!("{} is readable", s.path.display())),
            Err(e) => Check::new(
                false,
                format!(
                    "{}: {e}; fix `path` or run lifeboat with read access to it",
                    s.path.display()
                ),
            ),
        }),
        SourceSpec::Lvm(_) => out.extend(tools_check(&[&["lvcreate"], &["lvremove"]], None)),
        SourceSpec::Zfs(_) => out.extend(tools_check(&[&["zfs"]], None)),
    }
    out
}
