//! Loading database snapshots into a server: PostgreSQL (`pg_restore --exit-on-error`,
//! roles and tablespaces from `globals.sql` first when asked) and MariaDB (the `mariadb`
//! client with the dump streamed on stdin). A target database that already holds objects is
//! refused unless `force` is set; a missing one is created.
//!
//! A load that fails leaves the target as it found it, so the retry is not refused: a
//! database the restore created is dropped again; into a database that existed, PostgreSQL
//! loads in one transaction (`pg_restore --single-transaction`, rolled back on failure —
//! which is why such a load is never parallel), and MariaDB, whose DDL is not
//! transactional, has every object the failed load made dropped again (the database was
//! empty before, or emptied by `force`).
//!
//! With `jobs > 1`, `pg_restore -j` needs a seekable file, so the archive is first written
//! to a private temporary file (0600) and removed afterwards; with `jobs = 1` it streams
//! straight from the repository into pg_restore's stdin and never touches the disk.
//! A directory-format dump is restored into a private temporary directory first and loaded
//! from there with `pg_restore -j`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;

use indicatif::ProgressBar;
use zeroize::Zeroizing;

use crate::repo::index::Index;
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::NodeKind;
use crate::repo::Repository;
use crate::restore::single::restore_stream;
use crate::source::db::DbConn;
use crate::source::mysql::{client_session, sql_literal, ClientOptions};
use crate::source::postgres::{
    libpq_env, psql_session, DIR_NODE as PG_DIR, DUMP_NODE as PG_DUMP, GLOBALS_NODE,
};
use crate::sys::process::{require_tool, ChildProc};
use crate::sys::Cancel;
use crate::{Error, Result};

#[derive(Debug, Clone, Default)]
pub struct DbRestoreOptions {
    /// Restore into a database that already holds objects (PostgreSQL: `--clean --if-exists`;
    /// MariaDB: the database is dropped and recreated).
    pub force: bool,
    /// PostgreSQL: load roles and tablespaces (`globals.sql`) before the database.
    pub globals: bool,
    /// PostgreSQL: `pg_restore -j` workers.
    pub jobs: usize,
    pub bin_dir: Option<PathBuf>,
    /// MariaDB: ignore the client option files of this host.
    pub no_defaults: bool,
    /// Leave out who owns what, for a server that does not have the dumped accounts and
    /// must not get them (scratch drill servers). PostgreSQL: `--no-owner --no-privileges`.
    /// MariaDB: views, routines, triggers and events are defined as the loading user
    /// (`DEFINER=CURRENT_USER`): naming another account needs SUPER or SET USER.
    pub no_owner: bool,
    /// PostgreSQL: leave out tablespaces (`pg_restore --no-tablespaces`, and the tablespace
    /// statements of `globals.sql`): everything goes to the default tablespace. For a
    /// throwaway server, which has none of the source's tablespace directories.
    pub no_tablespaces: bool,
    /// Accounts to create before loading, unless they exist, for a throwaway server, so what
    /// the dump says belongs to or runs as them loads and works as dumped. PostgreSQL: role
    /// names (created `NOLOGIN`), the source server's roles recorded at backup time, used
    /// when the snapshot has no `globals.sql`. MariaDB: `user@host` definers of the dumped
    /// views, routines, triggers and events (created `ACCOUNT LOCK`, granted all on the
    /// restored database).
    pub create_roles: Vec<String>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DbRestoreReport {
    pub target: String,
    pub created_database: bool,
    pub globals_restored: bool,
    pub bytes: u64,
    /// Lines of "already exists" errors ignored while loading globals.
    pub globals_skipped: Vec<String>,
    /// Roles created before loading (`create_roles` the server lacked).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub roles_created: Vec<String>,
}

fn restore_err(target: &str, e: Error) -> Error {
    match e {
        Error::SourceFailed { detail, .. } => Error::RestoreFailed {
            target: target.into(),
            detail: scrub_load_error(&detail),
        },
        other => other,
    }
}

/// A loader's or server's error text without the data it may echo: reports, `history`
/// (possibly a shared fleet catalog) and logs keep the error lines, never rows. Only lines
/// that are messages of the tools are kept (an echoed INSERT or a continuation line is
/// left out and counted); in those, the pieces that quote data are cut: MariaDB's
/// `near '…'`, PostgreSQL's `Command was:`, `STATEMENT:`, key values in `Key (…)=(…)`,
/// the value of a COPY line in `CONTEXT`, and the input of "invalid input syntax" and
/// similar errors.
pub fn scrub_load_error(text: &str) -> String {
    const MAX_LINES: usize = 12;
    const MAX_LINE: usize = 300;
    let mut kept = Vec::new();
    let mut left_out = 0usize;
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        if !is_message_line(t) {
            left_out += 1;
            continue;
        }
        let mut l = scrub_line(t);
        if l.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !l.is_char_boundary(cut) {
                cut -= 1;
            }
            l.truncate(cut);
            l.push('…');
        }
        kept.push(l);
    }
    if kept.len() > MAX_LINES {
        let dropped = kept.len() - MAX_LINES;
        let tail = kept.split_off(kept.len() - 4);
        kept.truncate(MAX_LINES - 4);
        kept.push(format!("({dropped} more error lines)"));
        kept.extend(tail);
    }
    if left_out > 0 {
        kept.push(format!(
            "({left_out} other output lines left out: they may quote data)"
        ));
    }
    kept.join("\n")
}

fn is_message_line(t: &str) -> bool {
    const STARTS: [&str; 16] = [
        "ERROR",
        "FATAL",
        "PANIC",
        "WARNING",
        "HINT",
        "DETAIL",
        "CONTEXT",
        "LOCATION",
        "pg_restore:",
        "psql:",
        "pg_dump:",
        "mariadb:",
        "mysql:",
        "mariadb-dump:",
        "could not",
        "the server's log",
    ];
    if STARTS.iter().any(|p| t.starts_with(p)) {
        return true;
    }
    // "pg_restore exited with status 1; its stderr ends with:", "mariadb client exited …"
    if t.contains("exited with status")
        || t.contains("was killed by signal")
        || t.contains("ends with:")
    {
        return true;
    }
    // A server log line: "2026-12-04 21:00:00.000 UTC [123] ERROR:  …"
    const LEVELS: [&str; 7] = [
        " ERROR: ",
        " FATAL: ",
        " PANIC: ",
        " LOG: ",
        " WARNING: ",
        " HINT: ",
        " DETAIL: ",
    ];
    t.as_bytes().first().is_some_and(u8::is_ascii_digit) && LEVELS.iter().any(|l| t.contains(l))
        || t.contains(" [ERROR] ")
        || t.contains(" [Warning] ")
        || t.contains(" [Note] ")
}

fn scrub_line(t: &str) -> String {
    let mut l = t.to_string();
    for cut in ["Command was:", "STATEMENT:"] {
        if let Some(i) = l.find(cut) {
            l.truncate(i + cut.len());
            l.push_str(" …");
        }
    }
    // MariaDB: "… near 'INSERT INTO … VALUES (…)' at line 1"
    if let Some(i) = l.find(" near '") {
        let rest = &l[i + 7..];
        let end = rest.rfind("' at line").map(|j| rest[j..].to_string());
        l = format!("{} near '…{}", &l[..i], end.unwrap_or_else(|| "'".into()));
    }
    // PostgreSQL: "Key (email)=(someone@example.com) already exists."
    if let Some(i) = l.find(")=(") {
        if let Some(j) = l[i + 3..].find(')') {
            l = format!("{}(…){}", &l[..i + 2], &l[i + 3 + j + 1..]);
        }
    }
    // PostgreSQL: "CONTEXT:  COPY t, line 5, column note: \"…\"" and
    // "COPY t, line 5: \"1\tdata…\""
    if l.contains("COPY ") {
        if let Some(i) = l.find(", line ") {
            let after = &l[i + 7..];
            let digits = after.chars().take_while(char::is_ascii_digit).count();
            let mut keep = i + 7 + digits;
            if let Some(rest) = l[keep..].strip_prefix(", column ") {
                let name = rest.find(':').unwrap_or(rest.len());
                keep += ", column ".len() + name;
            }
            if keep < l.len() {
                l.truncate(keep);
                l.push_str(": …");
            }
        }
    }
    // "invalid input syntax for type integer: \"abc\"", "value too long for type …"
    for marker in [
        "invalid input syntax",
        "invalid input value",
        "out of range",
        "Incorrect",
    ] {
        if l.contains(marker) {
            if let Some(i) = l.find(": \"") {
                l.truncate(i);
                l.push_str(": \"…\"");
            }
            if let Some(i) = l.find(" value: '") {
                let rest = &l[i + 9..];
                let end = rest
                    .find('\'')
                    .map(|j| rest[j..].to_string())
                    .unwrap_or_default();
                l = format!("{} value: '…{}", &l[..i], end);
            }
        }
    }
    l
}

fn ident_pg(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Restores a PostgreSQL snapshot into the database named by `conn`. A load that fails
/// leaves no half-loaded database behind: one the restore created is dropped again, and
/// one that existed was loaded in a single transaction, which the failure rolled back (it
/// is as it was: empty, or — with `force` — its previous contents).
pub async fn restore_postgres(
    repo: &Repository,
    index: &Arc<Index>,
    snapshot: &Snapshot,
    conn: &DbConn,
    password: Option<Zeroizing<String>>,
    opts: &DbRestoreOptions,
    cancel: &Cancel,
) -> Result<DbRestoreReport> {
    let mut state = LoadState::NotStarted;
    let res = restore_postgres_into(
        repo,
        index,
        snapshot,
        conn,
        password.clone(),
        opts,
        cancel,
        &mut state,
    )
    .await;
    let Err(e) = res else { return res };
    let target = conn.describe("postgres");
    let kept = match state {
        LoadState::NotStarted => return Err(e),
        LoadState::IntoCreated => None,
        LoadState::IntoEmpty => Some("the database existed (empty) before this restore; the load ran in one transaction, which was rolled back: the database is empty again, so a retry needs no --force"),
        LoadState::IntoReplaced => Some("the load (--force) ran in one transaction, which was rolled back: the database holds what it held before this restore, nothing of the dump"),
    };
    if let Some(note) = kept {
        return Err(noted(e, &target, note.into(), Ok(())));
    }
    let pw = password.as_deref().map(|s| s.as_str());
    let secrets: Vec<String> = pw.iter().map(|s| s.to_string()).collect();
    let maint_env = libpq_env(conn, pw, Some("postgres"));
    let dropped = psql_session(
        opts.bin_dir.as_deref(),
        &maint_env,
        &format!("restore target {target}"),
        secrets,
    )
    .and_then(|mut s| {
        s.query(&format!(
            "DROP DATABASE IF EXISTS {};",
            ident_pg(&conn.database)
        ))?;
        s.close("")
    });
    Err(undone(e, &target, dropped))
}

/// How far a restore got, for undoing a failed one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LoadState {
    /// Nothing was written (the target was refused, or could not be reached).
    NotStarted,
    /// Loading into a database that existed before and was empty.
    IntoEmpty,
    /// Loading into a database that existed before and held objects (`force`).
    IntoReplaced,
    /// Loading into a database this restore created.
    IntoCreated,
}

/// The error of a failed load, with what the target holds now (`note`) — in the detail of
/// a loader's failure, else (an integrity error, an interruption) logged beside it.
/// `cleaned` is how undoing the load went: when it failed, the note says so instead.
fn noted(e: Error, target: &str, note: String, cleaned: Result<()>) -> Error {
    let note = match &cleaned {
        Ok(()) => note,
        Err(c) => format!("{note} — but undoing the failed load failed too ({c}); the database may hold part of the dump: empty it (or drop and recreate it) before retrying"),
    };
    match e {
        Error::RestoreFailed { target: t, detail } => Error::RestoreFailed {
            target: t,
            detail: format!("{detail}\n{note}"),
        },
        other => {
            match cleaned {
                Ok(()) => tracing::warn!(target, "{note}"),
                Err(_) => tracing::error!(target, "{note}"),
            }
            other
        }
    }
}

/// The load failed into a database this restore created, which was then dropped (or not).
fn undone(e: Error, target: &str, dropped: Result<()>) -> Error {
    noted(
        e,
        target,
        "the database this restore created was dropped again, so a retry starts clean".into(),
        dropped,
    )
}

#[allow(clippy::too_many_arguments)]
async fn restore_postgres_into(
    repo: &Repository,
    index: &Arc<Index>,
    snapshot: &Snapshot,
    conn: &DbConn,
    password: Option<Zeroizing<String>>,
    opts: &DbRestoreOptions,
    cancel: &Cancel,
    state: &mut LoadState,
) -> Result<DbRestoreReport> {
    let target = conn.describe("postgres");
    let tag = format!("restore target {target}");
    let pw = password.as_deref().map(|s| s.as_str());
    let secrets: Vec<String> = pw.iter().map(|s| s.to_string()).collect();
    let bin = opts.bin_dir.as_deref();
    let mut report = DbRestoreReport {
        target: target.clone(),
        ..Default::default()
    };

    // 1. The database exists (create it) and is empty (or --force).
    let maint_env = libpq_env(conn, pw, Some("postgres"));
    let mut s = psql_session(bin, &maint_env, &tag, secrets.clone())
        .map_err(|e| restore_err(&target, e))?;
    let exists = s
        .query_json(&format!(
            "SELECT to_json(EXISTS (SELECT 1 FROM pg_database WHERE datname = {}));",
            sql_literal_pg(&conn.database)
        ))
        .map_err(|e| restore_err(&target, e))?;
    if exists != serde_json::Value::Bool(true) {
        s.query(&format!("CREATE DATABASE {};", ident_pg(&conn.database)))
            .map_err(|e| restore_err(&target, e))?;
        report.created_database = true;
        *state = LoadState::IntoCreated;
    }
    s.close("").map_err(|e| restore_err(&target, e))?;
    let env = libpq_env(conn, pw, None);
    if !report.created_database {
        let mut s =
            psql_session(bin, &env, &tag, secrets.clone()).map_err(|e| restore_err(&target, e))?;
        let n = s
            .query_json(
                "SELECT to_json((SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%')
                  + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname NOT IN ('pg_catalog', 'information_schema'))
                  + (SELECT count(*) FROM pg_largeobject_metadata));",
            )
            .map_err(|e| restore_err(&target, e))?;
        s.close("").map_err(|e| restore_err(&target, e))?;
        let n = n.as_i64().unwrap_or(0);
        if n > 0 && !opts.force {
            return Err(Error::Usage(format!(
                "target database {target} is not empty ({n} tables, functions or large objects); restore into a new or empty database, or pass --force to replace the objects the dump contains"
            )));
        }
        *state = if n > 0 {
            LoadState::IntoReplaced
        } else {
            LoadState::IntoEmpty
        };
    }

    // 2. Globals (roles, tablespaces): existing ones are expected and skipped.
    if !opts.create_roles.is_empty() {
        let mut s = psql_session(bin, &maint_env, &tag, secrets.clone())
            .map_err(|e| restore_err(&target, e))?;
        let existing = s
            .query_json("SELECT coalesce(json_agg(rolname), '[]') FROM pg_roles;")
            .map_err(|e| restore_err(&target, e))?;
        let existing: Vec<&str> = existing
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        for role in opts
            .create_roles
            .iter()
            .filter(|r| !existing.contains(&r.as_str()))
        {
            s.query(&format!("CREATE ROLE {} NOLOGIN;", ident_pg(role)))
                .map_err(|e| restore_err(&target, e))?;
            report.roles_created.push(role.clone());
        }
        s.close("").map_err(|e| restore_err(&target, e))?;
    }
    if opts.globals {
        let psql = require_tool(&tag, &["psql"], bin)?;
        let mut cmd = Command::new(psql);
        cmd.args(["-X", "-q", "--no-password", "-d", "postgres"])
            .envs(maint_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::null());
        // Keep all of stderr (up to 4 MiB): every error line is sorted below.
        let mut child =
            ChildProc::spawn_keeping(cmd, "psql (globals)", &tag, secrets.clone(), 4 << 20)?;
        let mut stdin = child.take_stdin().expect("stdin piped");
        let streamed = if opts.no_tablespaces {
            // Small (roles and tablespaces): read whole, tablespace statements left out.
            let mut sql = Vec::new();
            match restore_stream(repo, index, snapshot, GLOBALS_NODE, &mut sql, cancel).await {
                Ok(n) => std::io::Write::write_all(&mut stdin, &without_tablespaces(&sql))
                    .map(|()| n)
                    .map_err(|e| Error::io("write", "psql (globals)", e)),
                Err(e) => Err(e),
            }
        } else {
            restore_stream(repo, index, snapshot, GLOBALS_NODE, &mut stdin, cancel).await
        };
        drop(stdin);
        interrupted(&mut child, cancel)?;
        let (status, tail) = child.finish_with_stderr();
        loaded(status.map_err(|e| restore_err(&target, e)), streamed)?;
        let (skipped, fatal): (Vec<_>, Vec<_>) = tail
            .lines()
            .filter(|l| l.contains("ERROR:"))
            .map(str::to_string)
            .partition(|l| l.contains("already exists"));
        if !fatal.is_empty() {
            return Err(Error::RestoreFailed {
                target,
                detail: format!("loading globals.sql failed:\n{}", fatal.join("\n")),
            });
        }
        report.globals_skipped = skipped;
        report.globals_restored = true;
    }

    // 3. The database itself.
    let pg_restore = require_tool(&tag, &["pg_restore"], bin)?;
    let mut args: Vec<String> = vec![
        "--exit-on-error".into(),
        "--no-password".into(),
        format!("--dbname={}", conn.database),
    ];
    if opts.force {
        args.extend(["--clean".into(), "--if-exists".into()]);
    }
    // Into a database that existed, the load is one transaction, so a failure leaves the
    // database as it was (a created one is simply dropped again). pg_restore cannot run one
    // transaction with several workers: such a load is not parallel.
    let single = *state != LoadState::IntoCreated;
    if single {
        args.push("--single-transaction".into());
    }
    if opts.no_owner {
        args.extend(["--no-owner".into(), "--no-privileges".into()]);
    }
    if opts.no_tablespaces {
        args.push("--no-tablespaces".into());
    }
    let jobs = if single { 1 } else { opts.jobs.max(1) };
    if single && opts.jobs > 1 {
        tracing::info!(
            target = %target,
            "loading with one pg_restore worker, in one transaction: the database existed before this restore, and a failed load must leave it as it was (a database the restore creates loads with --jobs)"
        );
    }
    let root = repo.load_tree(index, &snapshot.tree).await?;
    if root.find(PG_DIR).is_some_and(|n| n.kind == NodeKind::Dir) {
        // A directory-format dump: restore its files into a private spool, then load them.
        let spool = tempfile::Builder::new()
            .prefix("lifeboat-pgrestore-")
            // Private: a copy of production data.
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .map_err(|e| Error::io("create", std::env::temp_dir(), e))?;
        let files = spool.path().join("snapshot");
        let r = crate::restore::restore(
            repo,
            index.clone(),
            snapshot,
            &files,
            ProgressBar::hidden(),
            cancel.clone(),
        )
        .await?;
        report.bytes = r.bytes;
        let mut cmd = Command::new(&pg_restore);
        cmd.args(&args)
            .arg(format!("--jobs={jobs}"))
            .arg(files.join(PG_DIR))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let child = ChildProc::spawn(cmd, "pg_restore", &tag, secrets)?;
        let watch = child.watch_cancel(cancel);
        let res = tokio::task::spawn_blocking(move || child.finish())
            .await
            .map_err(|e| Error::Other(format!("pg_restore waiter failed: {e}")))?;
        drop(watch);
        cancel.check()?;
        res.map_err(|e| restore_err(&target, e))?;
    } else if jobs > 1 {
        let mut tmp = tempfile::Builder::new()
            .prefix("lifeboat-pgrestore-")
            // Private: a copy of production data.
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .tempfile()
            .map_err(|e| Error::io("create", std::env::temp_dir(), e))?;
        report.bytes =
            restore_stream(repo, index, snapshot, PG_DUMP, tmp.as_file_mut(), cancel).await?;
        let mut cmd = Command::new(&pg_restore);
        cmd.args(&args)
            .arg(format!("--jobs={jobs}"))
            .arg(tmp.path())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let child = ChildProc::spawn(cmd, "pg_restore", &tag, secrets)?;
        tokio::task::spawn_blocking(move || child.finish())
            .await
            .map_err(|e| Error::Other(format!("pg_restore waiter failed: {e}")))?
            .map_err(|e| restore_err(&target, e))?;
    } else {
        let mut cmd = Command::new(&pg_restore);
        cmd.args(&args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::null());
        let mut child = ChildProc::spawn(cmd, "pg_restore", &tag, secrets)?;
        let mut stdin = child.take_stdin().expect("stdin piped");
        let streamed = restore_stream(repo, index, snapshot, PG_DUMP, &mut stdin, cancel).await;
        damaged(&mut child, &streamed);
        drop(stdin);
        interrupted(&mut child, cancel)?;
        report.bytes = loaded(
            child.finish().map_err(|e| restore_err(&target, e)),
            streamed,
        )?;
    }
    Ok(report)
}

/// `globals.sql` without its tablespace statements (`pg_dumpall` writes each on one line:
/// `CREATE TABLESPACE`, `ALTER TABLESPACE`, and grants and comments on tablespaces).
fn without_tablespaces(sql: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(sql.len());
    for line in sql.split_inclusive(|b| *b == b'\n') {
        let text = String::from_utf8_lossy(line);
        let t = text.trim_start().to_ascii_uppercase();
        let tablespace = t.starts_with("CREATE TABLESPACE ")
            || t.starts_with("ALTER TABLESPACE ")
            || t.starts_with("COMMENT ON TABLESPACE ")
            || ((t.starts_with("GRANT ") || t.starts_with("REVOKE "))
                && t.contains(" ON TABLESPACE "));
        if !tablespace {
            out.extend_from_slice(line);
        }
    }
    out
}

fn sql_literal_pg(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Restores a MariaDB snapshot into the database named by `conn`. A load that fails
/// leaves no half-loaded database behind: one the restore created is dropped again; in one
/// that existed (empty, or emptied by `force`) every object is dropped again — DDL is not
/// transactional — so it is left empty and a retry needs no `--force`.
pub async fn restore_mariadb(
    repo: &Repository,
    index: &Index,
    snapshot: &Snapshot,
    conn: &DbConn,
    password: Option<Zeroizing<String>>,
    opts: &DbRestoreOptions,
    cancel: &Cancel,
) -> Result<DbRestoreReport> {
    let mut state = LoadState::NotStarted;
    let res = restore_mariadb_into(
        repo,
        index,
        snapshot,
        conn,
        password.clone(),
        opts,
        cancel,
        &mut state,
    )
    .await;
    let Err(e) = res else { return res };
    if state == LoadState::NotStarted {
        return Err(e);
    }
    let target = conn.describe("mariadb");
    let secrets: Vec<String> = password.iter().map(|s| s.to_string()).collect();
    let ident = format!("`{}`", conn.database.replace('`', "``"));
    let undo = ClientOptions::new(
        conn,
        password.as_deref().map(|s| s.as_str()),
        opts.no_defaults,
    )
    .and_then(|o| {
        let mut s = client_session(
            opts.bin_dir.as_deref(),
            &o,
            None,
            &format!("restore target {target}"),
            secrets,
        )?;
        if state == LoadState::IntoCreated {
            s.query(&format!("DROP DATABASE IF EXISTS {ident};"))?;
        } else {
            clear_mariadb(&mut s, &conn.database)?;
        }
        s.close("")
    });
    Err(match state {
        LoadState::IntoEmpty => noted(e, &target, "the database existed (empty) before this restore; every object the failed load made was dropped again: it is empty again, so a retry needs no --force".into(), undo),
        LoadState::IntoReplaced => noted(e, &target, "--force dropped the database's previous contents before loading, and every object the failed load made was dropped again: the database is empty now (restore a healthy snapshot into it)".into(), undo),
        _ => undone(e, &target, undo),
    })
}

/// Drops every object of MariaDB database `db` — events, routines, views, tables (their
/// triggers with them) and sequences — leaving it empty. Foreign keys are not checked while
/// the tables go, so their order does not matter.
fn clear_mariadb(s: &mut crate::source::session::SqlSession, db: &str) -> Result<()> {
    let lit = sql_literal(db);
    let objects = s.query_json(&format!(
        "SELECT COALESCE(JSON_ARRAYAGG(JSON_ARRAY(k, n) ORDER BY o), JSON_ARRAY()) FROM (
            SELECT 0 o, 'EVENT' k, EVENT_NAME n FROM information_schema.EVENTS WHERE EVENT_SCHEMA = {lit}
            UNION ALL SELECT 1, ROUTINE_TYPE, ROUTINE_NAME FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = {lit}
            UNION ALL SELECT 2, 'VIEW', TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = {lit} AND TABLE_TYPE = 'VIEW'
            UNION ALL SELECT 3, IF(TABLE_TYPE = 'SEQUENCE', 'SEQUENCE', 'TABLE'), TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = {lit} AND TABLE_TYPE <> 'VIEW'
        ) x;"
    ))?;
    let q = |n: &str| format!("`{}`", n.replace('`', "``"));
    let mut sql = String::from("SET FOREIGN_KEY_CHECKS = 0;\n");
    for o in objects.as_array().into_iter().flatten() {
        let (Some(kind), Some(name)) = (o[0].as_str(), o[1].as_str()) else {
            continue;
        };
        sql.push_str(&format!("DROP {kind} IF EXISTS {}.{};\n", q(db), q(name)));
    }
    sql.push_str("SET FOREIGN_KEY_CHECKS = 1;");
    s.query(&sql).map(|_| ())
}

#[allow(clippy::too_many_arguments)]
async fn restore_mariadb_into(
    repo: &Repository,
    index: &Index,
    snapshot: &Snapshot,
    conn: &DbConn,
    password: Option<Zeroizing<String>>,
    opts: &DbRestoreOptions,
    cancel: &Cancel,
    state: &mut LoadState,
) -> Result<DbRestoreReport> {
    let target = conn.describe("mariadb");
    let tag = format!("restore target {target}");
    let secrets: Vec<String> = password.iter().map(|s| s.to_string()).collect();
    let bin = opts.bin_dir.as_deref();
    let client_opts = ClientOptions::new(
        conn,
        password.as_deref().map(|s| s.as_str()),
        opts.no_defaults,
    )?;
    let mut report = DbRestoreReport {
        target: target.clone(),
        ..Default::default()
    };
    let db = sql_literal(&conn.database);
    let ident = format!("`{}`", conn.database.replace('`', "``"));
    let mut s = client_session(bin, &client_opts, None, &tag, secrets.clone())
        .map_err(|e| restore_err(&target, e))?;
    let found = s
        .query_json(&format!(
            "SELECT JSON_OBJECT('exists', (SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {db}),
                'objects', (SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = {db})
                         + (SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = {db})
                         + (SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = {db}));"
        ))
        .map_err(|e| restore_err(&target, e))?;
    let exists = found["exists"].as_i64().unwrap_or(0) > 0;
    let objects = found["objects"].as_i64().unwrap_or(0);
    if objects > 0 && !opts.force {
        s.close("").ok();
        return Err(Error::Usage(format!(
            "target database {target} is not empty ({objects} tables, views, routines or events); restore into a new or empty database, or pass --force to drop and recreate it"
        )));
    }
    if exists && objects > 0 {
        s.query(&format!("DROP DATABASE {ident};"))
            .map_err(|e| restore_err(&target, e))?;
    }
    if !exists || objects > 0 {
        s.query(&format!("CREATE DATABASE {ident} CHARACTER SET utf8mb4;"))
            .map_err(|e| restore_err(&target, e))?;
        report.created_database = !exists;
    }
    *state = match (exists, objects > 0) {
        (false, _) => LoadState::IntoCreated,
        (true, false) => LoadState::IntoEmpty,
        (true, true) => LoadState::IntoReplaced,
    };
    for account in &opts.create_roles {
        // `user@host`: a host name holds no '@', a user name may.
        let Some((user, host)) = account.rsplit_once('@') else {
            continue;
        };
        let who = format!("{}@{}", sql_literal(user), sql_literal(host));
        let known = s
            .query(&format!(
                "SELECT COUNT(*) FROM mysql.user WHERE User = {} AND Host = {};",
                sql_literal(user),
                sql_literal(host)
            ))
            .map_err(|e| restore_err(&target, e))?;
        if known.first().map(String::as_str) != Some("0") {
            continue;
        }
        s.query(&format!(
            "CREATE USER {who} ACCOUNT LOCK; GRANT ALL PRIVILEGES ON {ident}.* TO {who};"
        ))
        .map_err(|e| restore_err(&target, e))?;
        report.roles_created.push(account.clone());
    }
    s.close("").map_err(|e| restore_err(&target, e))?;

    let client = require_tool(&tag, &["mariadb", "mysql"], bin)?;
    let mut cmd = Command::new(client);
    cmd.args(client_opts.args())
        .arg(format!("--database={}", conn.database))
        .arg("--default-character-set=utf8mb4")
        .stdin(Stdio::piped())
        .stdout(Stdio::null());
    let mut child = ChildProc::spawn(cmd, "mariadb client", &tag, secrets)?;
    let mut stdin = child.take_stdin().expect("stdin piped");
    let node = crate::source::mysql::DUMP_NODE;
    let streamed = if opts.no_owner {
        let mut filter = DefinerFilter::new(&mut stdin);
        match restore_stream(repo, index, snapshot, node, &mut filter, cancel).await {
            Ok(n) => filter
                .finish()
                .map(|()| n)
                .map_err(|e| Error::io("write", "mariadb client", e)),
            Err(e) => Err(e),
        }
    } else {
        restore_stream(repo, index, snapshot, node, &mut stdin, cancel).await
    };
    damaged(&mut child, &streamed);
    drop(stdin);
    interrupted(&mut child, cancel)?;
    report.bytes = loaded(
        child.finish().map_err(|e| restore_err(&target, e)),
        streamed,
    )?;
    Ok(report)
}

/// The loader's result and the stream's, in the order that tells the truth. A damaged
/// backup (the stream's integrity error) is the cause even when the loader, fed a dump cut
/// short, failed too ("unexpected end of file", a syntax error); otherwise the loader's own
/// failure explains a broken pipe better than the pipe does.
fn loaded(finished: Result<()>, streamed: Result<u64>) -> Result<u64> {
    match (finished, streamed) {
        (_, Err(e @ Error::Integrity { .. })) => Err(e),
        (Err(e), _) => Err(e),
        (Ok(()), s) => s,
    }
}

/// Rewrites the `DEFINER=`user`@`host`` clauses of a mariadb-dump stream to
/// `DEFINER=CURRENT_USER`, as it streams. They appear only in DDL lines — views
/// (`/*!50013 DEFINER=… */`), triggers and events (`/*!50003 CREATE*/ /*!50017 DEFINER=…*/`)
/// and routines (`CREATE DEFINER=… PROCEDURE`) — so only lines starting with `/*!` or
/// `CREATE DEFINER=` are looked at (and buffered); every other line, data included, passes
/// through untouched and unbuffered.
struct DefinerFilter<W: std::io::Write> {
    out: W,
    /// The start of the current line while it is undecided, or all of a DDL line.
    line: Vec<u8>,
    /// The current line is neither: the rest of it passes through.
    passing: bool,
}

impl<W: std::io::Write> DefinerFilter<W> {
    const DDL: [&'static [u8]; 2] = [b"/*!", b"CREATE DEFINER="];

    fn new(out: W) -> Self {
        DefinerFilter {
            out,
            line: Vec::new(),
            passing: false,
        }
    }

    /// Could the line begun in `line` be a DDL line? (Undecided lines count as yes.)
    fn maybe_ddl(line: &[u8]) -> bool {
        Self::DDL.iter().any(|p| {
            let n = p.len().min(line.len());
            line[..n] == p[..n]
        })
    }

    fn flush_line(&mut self) -> std::io::Result<()> {
        let line = std::mem::take(&mut self.line);
        if Self::DDL.iter().any(|p| line.starts_with(p)) {
            self.out.write_all(&rewrite_definers(&line))
        } else {
            self.out.write_all(&line)
        }
    }

    /// Writes out a last line without a newline.
    fn finish(mut self) -> std::io::Result<()> {
        self.flush_line()?;
        self.out.flush()
    }
}

impl<W: std::io::Write> std::io::Write for DefinerFilter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            let end = rest.iter().position(|b| *b == b'\n');
            let (piece, eol) = match end {
                Some(i) => (&rest[..=i], true),
                None => (rest, false),
            };
            if self.passing {
                self.out.write_all(piece)?;
            } else {
                self.line.extend_from_slice(piece);
                if eol {
                    self.flush_line()?;
                } else if !Self::maybe_ddl(&self.line) {
                    self.out.write_all(&std::mem::take(&mut self.line))?;
                    self.passing = true;
                }
            }
            if eol {
                self.passing = false;
            }
            rest = &rest[piece.len()..];
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// `DEFINER=`a`@`b`` → `DEFINER=CURRENT_USER` everywhere in `line` (backquotes inside the
/// names are doubled, as mariadb-dump writes them).
fn rewrite_definers(line: &[u8]) -> Vec<u8> {
    const KEY: &[u8] = b"DEFINER=`";
    // The end of a backquoted name starting at `i` (just past its closing quote).
    fn quoted(line: &[u8], mut i: usize) -> Option<usize> {
        if line.get(i) != Some(&b'`') {
            return None;
        }
        i += 1;
        loop {
            match line.get(i)? {
                b'`' if line.get(i + 1) == Some(&b'`') => i += 2,
                b'`' => return Some(i + 1),
                _ => i += 1,
            }
        }
    }
    let mut out = Vec::with_capacity(line.len());
    let mut i = 0;
    while i < line.len() {
        if line[i..].starts_with(KEY) {
            let user_end = quoted(line, i + KEY.len() - 1);
            let host_end = user_end
                .filter(|&u| line.get(u) == Some(&b'@'))
                .and_then(|u| quoted(line, u + 1));
            if let Some(end) = host_end {
                out.extend_from_slice(b"DEFINER=CURRENT_USER");
                i = end;
                continue;
            }
        }
        out.push(line[i]);
        i += 1;
    }
    out
}

/// A stream that met a damaged blob ends the loader at once: closing its input could let it
/// run what it has (the `mariadb` client executes a dump cut at a statement boundary, and
/// exits 0), and a killed loader commits nothing of its own.
fn damaged<T>(child: &mut ChildProc, streamed: &Result<T>) {
    if matches!(streamed, Err(Error::Integrity { .. })) {
        child.kill();
    }
}

/// On Ctrl-C the loader is killed rather than left to load a truncated stream.
fn interrupted(child: &mut ChildProc, cancel: &Cancel) -> Result<()> {
    if cancel.is_cancelled() {
        child.kill();
        return Err(Error::Interrupted);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definers_become_the_loading_user_and_nothing_else_changes() {
        let dump = "-- MariaDB dump\n\
            INSERT INTO `notes` VALUES (1,'DEFINER=`x`@`y` is data, not DDL');\n\
            /*!50013 DEFINER=`shop app`@`%` SQL SECURITY DEFINER */\n\
            /*!50003 CREATE*/ /*!50017 DEFINER=`we``ird`@`localhost`*/ /*!50003 TRIGGER t BEFORE INSERT ON o FOR EACH ROW SET NEW.a = 1 */;;\n\
            CREATE DEFINER=`root`@`localhost` PROCEDURE `p`()\n\
            SELECT 'CREATE DEFINER=`a`@`b`' ;;\n\
            /*!50106 CREATE*/ /*!50117 DEFINER=`appm`@`%`*/ /*!50106 EVENT `ev` ON SCHEDULE EVERY 1 DAY DO SELECT 1 */ ;;\n\
            /*!40101 SET NAMES utf8mb4 */;\n\
            -- Dump completed";
        let expected = dump
            .replace(
                "/*!50013 DEFINER=`shop app`@`%`",
                "/*!50013 DEFINER=CURRENT_USER",
            )
            .replace("DEFINER=`we``ird`@`localhost`", "DEFINER=CURRENT_USER")
            .replace(
                "CREATE DEFINER=`root`@`localhost` PROCEDURE",
                "CREATE DEFINER=CURRENT_USER PROCEDURE",
            )
            .replace(
                "/*!50117 DEFINER=`appm`@`%`*/",
                "/*!50117 DEFINER=CURRENT_USER*/",
            );
        // Whatever the pieces the stream arrives in.
        for piece in [1, 2, 3, 7, 64, dump.len()] {
            let mut out = Vec::new();
            let mut f = DefinerFilter::new(&mut out);
            for chunk in dump.as_bytes().chunks(piece) {
                std::io::Write::write_all(&mut f, chunk).unwrap();
            }
            f.finish().unwrap();
            assert_eq!(
                String::from_utf8(out).unwrap(),
                expected,
                "pieces of {piece}"
            );
        }
    }

    #[test]
    fn load_errors_keep_the_error_and_never_the_data() {
        let mariadb = "mariadb client exited with status 1; its stderr ends with:\n\
            ERROR 1064 (42000) at line 57: You have an error in your SQL syntax; check the manual that corresponds to your MariaDB server version for the right syntax to use near 'INSERT INTO `customers` VALUES (1,'Jane Roe','jane@example.com')' at line 1\n\
            (2,'John Doe','john@example.com','4111 1111 1111 1111'),\n\
            (3,'Max Mustermann','max@example.com','5500 0000 0000 0004');";
        let out = scrub_load_error(mariadb);
        assert!(out.contains("ERROR 1064 (42000) at line 57"), "{out}");
        assert!(out.contains("near '…' at line 1"), "{out}");
        assert!(out.contains("2 other output lines left out"), "{out}");
        for secret in ["Jane", "John", "4111", "example.com", "Mustermann"] {
            assert!(!out.contains(secret), "{secret} leaked: {out}");
        }
        let pg = "pg_restore exited with status 1; its stderr ends with:\n\
            pg_restore: error: could not execute query: ERROR:  duplicate key value violates unique constraint \"c_pkey\"\n\
            DETAIL:  Key (email)=(jane@example.com) already exists.\n\
            Command was: INSERT INTO public.c VALUES (1, 'jane@example.com');\n\
            pg_restore: error: COPY failed for table \"c\": ERROR:  invalid input syntax for type integer: \"Jane Roe\"\n\
            CONTEXT:  COPY c, line 5, column id: \"Jane Roe\"\n\
            2026-12-04 21:00:00.000 UTC [12] STATEMENT:  COPY public.c (id, email) FROM stdin;";
        let out = scrub_load_error(pg);
        assert!(
            out.contains("duplicate key value violates unique constraint \"c_pkey\""),
            "{out}"
        );
        assert!(out.contains("Key (email)=(…) already exists"), "{out}");
        assert!(
            out.contains("CONTEXT:  COPY c, line 5, column id: …"),
            "{out}"
        );
        assert!(
            out.contains("invalid input syntax for type integer: \"…\""),
            "{out}"
        );
        for secret in ["Jane", "jane@example.com", "VALUES (1"] {
            assert!(!out.contains(secret), "{secret} leaked: {out}");
        }
    }

    #[test]
    fn tablespace_statements_are_left_out_of_globals() {
        let globals = "--\n-- Roles\n--\n\nCREATE ROLE shop_app;\nALTER ROLE shop_app WITH NOSUPERUSER LOGIN;\n\n\
            --\n-- Tablespaces\n--\n\nCREATE TABLESPACE fast OWNER shop_app LOCATION '/srv/fast';\n\
            ALTER TABLESPACE fast SET (random_page_cost='1.1');\nGRANT ALL ON TABLESPACE fast TO shop_app;\n\
            COMMENT ON TABLESPACE fast IS 'nvme';\nGRANT shop_app TO postgres;\n";
        let out = String::from_utf8(without_tablespaces(globals.as_bytes())).unwrap();
        assert!(out.contains("CREATE ROLE shop_app;\n"), "{out}");
        assert!(
            out.contains("ALTER ROLE shop_app WITH NOSUPERUSER LOGIN;\n"),
            "{out}"
        );
        assert!(
            out.contains("GRANT shop_app TO postgres;\n"),
            "role grants stay: {out}"
        );
        assert!(
            !out.lines()
                .any(|l| !l.starts_with("--") && l.to_ascii_uppercase().contains("TABLESPACE")),
            "{out}"
        );
        // Nothing else changes, byte for byte.
        let kept: String = globals
            .lines()
            .filter(|l| !l.to_ascii_uppercase().contains("TABLESPACE FAST"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(out, kept);
    }
}
