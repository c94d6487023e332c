//! Runs restore tests against a restored database or directory. Every check produces a
//! [`CheckResult`] — data, never an early error: a check that cannot even run is a failed
//! check with the reason in its detail.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::restore_tests::{Expect, MaxAge, RestoreTests};
use super::sql::{SqlConn, SqlSession, Value};
use crate::repo::snapshot::{DbKind, Snapshot};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Passed,
    Failed,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub name: String,
    pub kind: String,
    pub status: CheckStatus,
    pub detail: String,
    pub secs: f64,
}

/// What the checks run against.
pub struct CheckTarget<'a> {
    pub sql: Option<&'a SqlConn>,
    /// The restored tree (directory and volume drills).
    pub dir: Option<&'a Path>,
    pub snapshot: &'a Snapshot,
    pub drill_start: DateTime<Utc>,
    pub rpo_target: Option<Duration>,
    /// Extra environment for command checks (connection details, restore directory).
    pub env: Vec<(String, String)>,
    /// A recovery-point set's drill: each file-tree member's job and where its tree was
    /// restored (what `[[file_refs]]` paths are relative to). Empty for other drills.
    pub members: Vec<(String, std::path::PathBuf)>,
    /// A recovery-point set's drill: every database member (job, its restored database,
    /// and — for each member but the one in `sql` — its snapshot, whose row counts are
    /// checked too). `[[sql]]` and `[[file_refs]]` checks name theirs with `job = "…"`.
    /// Empty for other drills.
    pub databases: Vec<MemberDb>,
}

/// A database member of a set's drill, restored on the drill's server.
#[derive(Debug, Clone)]
pub struct MemberDb {
    pub job: String,
    pub conn: SqlConn,
    /// `None` for the member whose snapshot is the drill's own.
    pub snapshot: Option<Snapshot>,
}

/// The database a `[[sql]]` or `[[file_refs]]` check with `job` runs in: the named set
/// member's, else the drill's only database.
fn pick_db<'x, 'a>(
    job: Option<&str>,
    db: Option<&'x mut Db<'a>>,
    members: &'x mut [(String, Db<'a>)],
) -> Result<Option<&'x mut Db<'a>>, String> {
    match job {
        None if members.len() > 1 => Err(format!(
            "the set has several databases ({}); name the one to query with job = \"…\"",
            members
                .iter()
                .map(|(j, _)| j.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        None => Ok(db),
        Some(j) if members.is_empty() => Err(format!(
            "job = {j:?} names a database member of a recovery-point set, but this drill is not a set's; leave job out"
        )),
        Some(j) => {
            let names = members
                .iter()
                .map(|(j, _)| j.clone())
                .collect::<Vec<_>>()
                .join(", ");
            match members.iter_mut().find(|(m, _)| m == j) {
                Some((_, d)) => Ok(Some(d)),
                None => Err(format!(
                    "job = {j:?} is not a database member of this set (its databases: {names}); use one of those names"
                )),
            }
        }
    }
}

fn result(
    name: impl Into<String>,
    kind: &str,
    ok: bool,
    detail: impl Into<String>,
    t: Instant,
) -> CheckResult {
    CheckResult {
        name: name.into(),
        kind: kind.into(),
        status: if ok {
            CheckStatus::Passed
        } else {
            CheckStatus::Failed
        },
        detail: detail.into(),
        secs: t.elapsed().as_secs_f64(),
    }
}

/// The restored database, reached through one driver session opened on first use (a
/// drill of a directory never opens one). A session that cannot be opened fails every
/// check that needs it, with the reason.
struct Db<'a> {
    conn: &'a SqlConn,
    session: Option<Result<SqlSession, String>>,
}

impl<'a> Db<'a> {
    fn new(conn: &'a SqlConn) -> Self {
        Db {
            conn,
            session: None,
        }
    }

    fn query(&mut self, sql: &str) -> Result<Vec<Vec<Value>>, String> {
        let conn = self.conn;
        match self.session.get_or_insert_with(|| conn.session()) {
            Ok(s) => s.query(sql),
            Err(e) => Err(e.clone()),
        }
    }

    fn close(self) {
        if let Some(Ok(s)) = self.session {
            s.close();
        }
    }
}

/// Runs every check in `tests` and returns one result per check. SQL runs through a
/// driver session: call this where blocking is allowed (a `spawn_blocking` thread).
pub fn run_all(tests: &RestoreTests, t: &CheckTarget<'_>) -> Vec<CheckResult> {
    let mut out = Vec::new();
    let mut db = t.sql.map(Db::new);
    let mut member_dbs: Vec<(String, Db<'_>)> = t
        .databases
        .iter()
        .map(|m| (m.job.clone(), Db::new(&m.conn)))
        .collect();
    if let (Some(rc), Some(db)) = (&tests.row_counts, db.as_mut()) {
        out.extend(row_counts(db, t.snapshot, rc.tolerance_percent));
    }
    // A set's other databases: each compared with its own snapshot's counts.
    if let Some(rc) = &tests.row_counts {
        for (m, (_, mdb)) in t.databases.iter().zip(member_dbs.iter_mut()) {
            if let Some(snap) = &m.snapshot {
                out.extend(
                    row_counts(mdb, snap, rc.tolerance_percent)
                        .into_iter()
                        .map(|mut r| {
                            r.name = format!("{} ({})", r.name, m.job);
                            r
                        }),
                );
            }
        }
    }
    if let (Some(c), Some(db)) = (&tests.canary, db.as_mut()) {
        let start = Instant::now();
        let q = format!(
            "SELECT max({}) FROM {}",
            c.column,
            db.conn.quote_table(&c.table)
        );
        let res = db
            .query(&q)
            .and_then(|rows| first_value(&rows))
            .and_then(|v| parse_time(&v));
        let min =
            t.snapshot.consistency_time - chrono::Duration::from_std(c.max_lag).unwrap_or_default();
        out.push(match res {
            Ok(ts) if ts >= min => result(format!("canary {}", c.table), "canary", true, format!("newest {} is {ts}, at most {} before the snapshot", c.column, humantime::format_duration(c.max_lag)), start),
            Ok(ts) => result(format!("canary {}", c.table), "canary", false, format!("newest {} is {ts}, older than the snapshot's consistency time {} minus {}: the restored data is older than the snapshot claims", c.column, t.snapshot.consistency_time, humantime::format_duration(c.max_lag)), start),
            Err(e) => result(format!("canary {}", c.table), "canary", false, e, start),
        });
    }
    if let (Some(a), Some(sql)) = (&tests.amcheck, t.sql) {
        if sql.kind == DbKind::Postgres {
            let what = db
                .as_mut()
                .map(amcheck_scope)
                .unwrap_or_else(|| "tables and btree indexes".into());
            out.push(amcheck(sql, a.heapallindexed, &what));
        }
    }
    for s in &tests.sql {
        let start = Instant::now();
        let picked = match pick_db(s.job.as_deref(), db.as_mut(), &mut member_dbs) {
            Ok(d) => d,
            Err(e) => {
                out.push(result(&s.name, "sql", false, e, start));
                continue;
            }
        };
        let Some(db) = picked else {
            out.push(result(
                &s.name,
                "sql",
                false,
                "this drill restored no database to query",
                start,
            ));
            continue;
        };
        out.push(match db.query(&s.query) {
            Ok(rows) => {
                let (ok, detail) = judge(&s.expect, &rows, t);
                result(&s.name, "sql", ok, detail, start)
            }
            Err(e) => result(&s.name, "sql", false, format!("query failed: {e}"), start),
        });
    }
    for f in &tests.files {
        out.push(file_check(f, t.dir));
    }
    for f in &tests.file_refs {
        let start = Instant::now();
        out.push(
            match pick_db(f.job.as_deref(), db.as_mut(), &mut member_dbs) {
                Ok(d) => file_refs_check(f, d, t),
                Err(e) => result(&f.name, "file_refs", false, e, start),
            },
        );
    }
    for c in &tests.commands {
        out.push(command_check(c, t));
    }
    if let Some(db) = db {
        db.close();
    }
    for (_, d) in member_dbs {
        d.close();
    }
    out
}

fn row_counts(db: &mut Db<'_>, snap: &Snapshot, tolerance: Option<f64>) -> Vec<CheckResult> {
    let start = Instant::now();
    let rc = snap
        .source
        .database()
        .and_then(|(_, m)| m.row_counts.as_ref());
    let Some(tables) = rc.and_then(|rc| rc.tables.as_ref()) else {
        return vec![result(
            "row counts",
            "row_counts",
            true,
            "no row counts were captured at backup time (row_counts = off); nothing to compare",
            start,
        )];
    };
    let estimate = rc.and_then(|rc| rc.mode.as_deref()) == Some("estimate");
    let tol = tolerance.unwrap_or(if estimate { 10.0 } else { 0.0 });
    // PostgreSQL keys are the tables' qualified names (`schema.table`, quoted where needed),
    // matched against the restored database's own tables. MariaDB keys are table names alone.
    let restored = match db.conn.kind {
        DbKind::Postgres => match pg_tables(db) {
            Ok(t) => Some(t),
            Err(e) => {
                return vec![result(
                    "row counts",
                    "row_counts",
                    false,
                    format!("listing the restored tables failed: {e}"),
                    start,
                )]
            }
        },
        DbKind::Mariadb => None,
    };
    let mut bad = Vec::new();
    let mut compared = 0;
    for (table, expected) in tables {
        let Some(expected) = expected.as_i64() else {
            continue;
        };
        let quoted = match &restored {
            Some(names) => match names.get(table) {
                Some(q) => q.clone(),
                None => {
                    bad.push(format!("{table}: not in the restored database"));
                    continue;
                }
            },
            None => format!("`{}`", table.replace('`', "``")),
        };
        let q = format!("SELECT count(*) FROM {quoted}");
        match db.query(&q).and_then(|r| first_value(&r)) {
            Ok(v) => {
                let got = v.number().map(|n| n as i64).unwrap_or(-1);
                let allowed = (expected as f64 * tol / 100.0).ceil() as i64;
                if (got - expected).abs() > allowed {
                    bad.push(format!("{table}: {got} rows, {expected} at backup"));
                }
                compared += 1;
            }
            Err(e) => bad.push(format!("{table}: {e}")),
        }
    }
    let detail = if bad.is_empty() {
        format!(
            "{compared} {} the counts captured at backup time{}",
            if compared == 1 {
                "table matches"
            } else {
                "tables match"
            },
            if tol > 0.0 {
                format!(" (within {tol}%)")
            } else {
                String::new()
            }
        )
    } else {
        format!(
            "{} of {} tables differ: {}",
            bad.len(),
            tables.len(),
            bad.join("; ")
        )
    };
    vec![result(
        "row counts",
        "row_counts",
        bad.is_empty(),
        detail,
        start,
    )]
}

/// The restored database's tables, keyed like the row counts taken at backup time, each with
/// its quoted name. Keys are `format('%I.%I')`, unambiguous and quoted only where needed;
/// snapshots taken before that keyed by the plain `schema.table`, which is kept as a second
/// key (the same for ordinary names; a dotted name could collide there, never in the first).
fn pg_tables(db: &mut Db<'_>) -> Result<std::collections::HashMap<String, String>, String> {
    let rows = db.query(
        "SELECT format('%I.%I', n.nspname, c.relname), format('%s.%s', n.nspname, c.relname)
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
            AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'",
    )?;
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|v| v.text().unwrap_or_default()).collect())
        .collect();
    let mut names = std::collections::HashMap::new();
    for r in &rows {
        if let [quoted, plain] = r.as_slice() {
            names.entry(plain.clone()).or_insert_with(|| quoted.clone());
        }
    }
    for r in &rows {
        if let [quoted, _] = r.as_slice() {
            names.insert(quoted.clone(), quoted.clone());
        }
    }
    Ok(names)
}

/// What pg_amcheck is about to check, for its report: "12 tables and 30 btree indexes".
fn amcheck_scope(db: &mut Db<'_>) -> String {
    let q = "SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                      WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')),
                    (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_am a ON a.oid = c.relam
                      WHERE c.relkind = 'i' AND a.amname = 'btree' AND n.nspname NOT IN ('pg_catalog', 'information_schema'))";
    match db.query(q) {
        Ok(rows) => match rows.first().map(|r| r.as_slice()) {
            Some([t, i]) => format!(
                "{} tables (with their TOAST tables) and {} btree indexes",
                t.text().unwrap_or_default(),
                i.text().unwrap_or_default()
            ),
            _ => "tables and btree indexes".into(),
        },
        Err(_) => "tables and btree indexes".into(),
    }
}

/// `pg_amcheck` over every table and btree index of the restored database (`what` names
/// them for the report). No relation pattern and no `--no-dependent-indexes`: with that
/// option and no pattern, pg_amcheck checks the tables only and never looks at an index.
pub fn amcheck(sql: &SqlConn, heapallindexed: bool, what: &str) -> CheckResult {
    let start = Instant::now();
    let mut c = crate::sys::process::command(sql.tool("pg_amcheck"));
    c.arg("-h")
        .arg(&sql.host)
        .arg("-p")
        .arg(sql.port.to_string())
        .arg("-U")
        .arg(&sql.user)
        .arg("-d")
        .arg(&sql.database);
    c.arg("--no-password").arg("--install-missing");
    sql.with_password(&mut c);
    if heapallindexed {
        c.arg("--heapallindexed");
    }
    match c.stdin(Stdio::null()).output() {
        Ok(o) if o.status.success() => result(
            "pg_amcheck",
            "amcheck",
            true,
            format!("no corruption found in {what}"),
            start,
        ),
        Ok(o) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            // The first lines name the relation and its first problem.
            let mut detail = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .take(6)
                .collect::<Vec<_>>()
                .join(" | ");
            if text.contains("permission denied to create extension") {
                detail.push_str(" | the drill role may not create the amcheck extension: run CREATE EXTENSION amcheck in template1 of the scratch server as a superuser, or remove [amcheck] from the restore tests");
            }
            result("pg_amcheck", "amcheck", false, detail, start)
        }
        Err(e) => result(
            "pg_amcheck",
            "amcheck",
            false,
            format!("cannot run pg_amcheck: {e}"),
            start,
        ),
    }
}

fn first_value(rows: &[Vec<Value>]) -> Result<Value, String> {
    rows.first()
        .and_then(|r| r.first())
        .cloned()
        .ok_or_else(|| "the query returned no rows".into())
}

fn parse_time(v: &Value) -> Result<DateTime<Utc>, String> {
    let Some(text) = v.text() else {
        return Err("the value is NULL (an empty table?), not a timestamp".into());
    };
    let v = text.trim();
    for f in [
        "%Y-%m-%d %H:%M:%S%.f%#z",
        "%Y-%m-%d %H:%M:%S%#z",
        "%Y-%m-%dT%H:%M:%S%.f%#z",
    ] {
        if let Ok(t) = DateTime::parse_from_str(v, f) {
            return Ok(t.with_timezone(&Utc));
        }
    }
    for f in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(v, f) {
            return Ok(t.and_utc());
        }
    }
    Err(format!("{v:?} is not a timestamp (NULL or empty table?)"))
}

fn judge(e: &Expect, rows: &[Vec<Value>], t: &CheckTarget<'_>) -> (bool, String) {
    let n = rows.len() as u64;
    let mut problems = Vec::new();
    let mut seen = Vec::new();
    if let Some(m) = e.rows_min {
        if n < m {
            problems.push(format!("{n} rows, expected at least {m}"));
        }
    }
    if let Some(m) = e.rows_max {
        if n > m {
            problems.push(format!("{n} rows, expected at most {m}"));
        }
    }
    let needs_value =
        e.min.is_some() || e.max.is_some() || e.equals.is_some() || e.max_age.is_some();
    if needs_value {
        match first_value(rows) {
            Err(err) => problems.push(err),
            Ok(v) => {
                seen.push(format!("value {v}"));
                if e.min.is_some() || e.max.is_some() {
                    match v.number() {
                        Some(x) => {
                            if e.min.is_some_and(|m| x < m) {
                                problems.push(format!(
                                    "{x} is below the minimum {}",
                                    e.min.unwrap_or_default()
                                ));
                            }
                            if e.max.is_some_and(|m| x > m) {
                                problems.push(format!(
                                    "{x} is above the maximum {}",
                                    e.max.unwrap_or_default()
                                ));
                            }
                        }
                        None if v == Value::Null => problems.push("NULL is not a number".into()),
                        None => problems.push(format!("{v} is not a number")),
                    }
                }
                if let Some(want) = &e.equals {
                    if v.text().as_ref() != Some(want) {
                        problems.push(format!("expected {want:?}"));
                    }
                }
                if let Some(age) = e.max_age {
                    let limit = match age {
                        MaxAge::Fixed(d) => Some(d),
                        MaxAge::Rpo => t.rpo_target,
                    };
                    match (parse_time(&v), limit) {
                        (Err(err), _) => problems.push(err),
                        (Ok(_), None) => problems.push(
                            "max_age = \"rpo\" but the plan documents no rpo objective".into(),
                        ),
                        (Ok(ts), Some(limit)) => {
                            let age = (t.drill_start - ts).to_std().unwrap_or_default();
                            if age > limit {
                                problems.push(format!(
                                    "newest value is {} old, more than {}",
                                    humantime::format_duration(Duration::from_secs(age.as_secs())),
                                    humantime::format_duration(limit)
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
    seen.insert(0, format!("{n} rows"));
    if problems.is_empty() {
        (true, seen.join(", "))
    } else {
        (
            false,
            format!("{}: {}", seen.join(", "), problems.join("; ")),
        )
    }
}

fn file_check(f: &super::restore_tests::FileCheck, dir: Option<&Path>) -> CheckResult {
    let start = Instant::now();
    let name = format!("file {}", f.path.display());
    let Some(dir) = dir else {
        return result(
            name,
            "file",
            false,
            "this drill restored no directory tree",
            start,
        );
    };
    let p = dir.join(&f.path);
    let meta = std::fs::symlink_metadata(&p);
    if !f.exists {
        return result(
            name,
            "file",
            meta.is_err(),
            if meta.is_err() {
                "absent, as expected"
            } else {
                "present, but expected absent"
            },
            start,
        );
    }
    let meta = match meta {
        Ok(m) => m,
        Err(e) => {
            return result(
                name,
                "file",
                false,
                format!("missing from the restore: {e}"),
                start,
            )
        }
    };
    let mut problems = Vec::new();
    let mut facts = Vec::new();
    if meta.is_dir() && (f.min_files.is_some() || f.max_files.is_some()) {
        let count = crate::restore::count_files(&p);
        facts.push(format!("{count} files"));
        if f.min_files.is_some_and(|m| count < m) {
            problems.push(format!(
                "fewer than {} files",
                f.min_files.unwrap_or_default()
            ));
        }
        if f.max_files.is_some_and(|m| count > m) {
            problems.push(format!(
                "more than {} files",
                f.max_files.unwrap_or_default()
            ));
        }
    }
    if let Some(m) = f.min_size {
        facts.push(format!("{} bytes", meta.len()));
        if meta.len() < m {
            problems.push(format!("smaller than {m} bytes"));
        }
    }
    if let Some(want) = &f.blake3 {
        match std::fs::File::open(&p).and_then(|mut file| {
            let mut h = blake3::Hasher::new();
            std::io::copy(&mut file, &mut h)?;
            Ok(h.finalize().to_hex().to_string())
        }) {
            Ok(got) if got == *want => facts.push("blake3 matches".into()),
            Ok(got) => problems.push(format!("blake3 {got}, expected {want}")),
            Err(e) => problems.push(format!("cannot hash: {e}")),
        }
    }
    if facts.is_empty() {
        facts.push("exists".into());
    }
    let ok = problems.is_empty();
    result(
        name,
        "file",
        ok,
        if ok {
            facts.join(", ")
        } else {
            format!("{}: {}", facts.join(", "), problems.join("; "))
        },
        start,
    )
}

/// Most failing rows a `[[file_refs]]` result names (the count says how many more).
const FILE_REFS_SHOWN: usize = 5;

/// `[[file_refs]]`: every row of the query names a file (first column) that must exist in a
/// member's restored tree, with the recorded hash (second column, when present and not
/// NULL). Each failing row is named by its values.
fn file_refs_check(
    f: &super::restore_tests::FileRefsCheck,
    db: Option<&mut Db<'_>>,
    t: &CheckTarget<'_>,
) -> CheckResult {
    let start = Instant::now();
    let fail = |detail: String| result(&f.name, "file_refs", false, detail, start);
    let Some(db) = db else {
        return fail("this drill restored no database to query: file_refs checks run in the drill of a recovery-point set".into());
    };
    let root = match (&f.member, t.members.as_slice()) {
        (_, []) => {
            return fail("this drill restored no set member's files: file_refs checks run in the drill of a recovery-point set (`lifeboat drill --plan … --set NAME`)".into())
        }
        (None, [(_, root)]) => root,
        (None, many) => {
            return fail(format!(
                "the set has several file members ({}); name one with member = \"…\"",
                many.iter().map(|(j, _)| j.as_str()).collect::<Vec<_>>().join(", ")
            ))
        }
        (Some(m), members) => match members.iter().find(|(j, _)| j == m) {
            Some((_, root)) => root,
            None => {
                return fail(format!(
                    "member {m:?} is not a file member of this set (its file members: {})",
                    members.iter().map(|(j, _)| j.as_str()).collect::<Vec<_>>().join(", ")
                ))
            }
        },
    };
    let rows = match db.query(&f.query) {
        Ok(r) => r,
        Err(e) => return fail(format!("query failed: {e}")),
    };
    let algo = f.hash;
    let mut bad = Vec::new();
    let mut hashed = 0usize;
    for (n, row) in rows.iter().enumerate() {
        let named = format!(
            "row {} ({})",
            n + 1,
            row.iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let Some(rel) = row.first().and_then(Value::text) else {
            bad.push(format!("{named}: no file path in the first column"));
            continue;
        };
        let rel_path = Path::new(rel.trim_start_matches("./"));
        if rel_path.is_absolute()
            || rel_path
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            bad.push(format!(
                "{named}: the path must be relative to the member's tree and stay inside it"
            ));
            continue;
        }
        let p = root.join(rel_path);
        match std::fs::metadata(&p) {
            Err(_) => {
                bad.push(format!("{named}: file missing from the restored set"));
                continue;
            }
            Ok(m) if !m.is_file() => {
                bad.push(format!("{named}: not a regular file in the restored set"));
                continue;
            }
            Ok(_) => {}
        }
        if let Some(want) = row.get(1).and_then(Value::text) {
            hashed += 1;
            match algo.file_hex(&p) {
                Ok(got) if got.eq_ignore_ascii_case(want.trim()) => {}
                Ok(got) => bad.push(format!(
                    "{named}: {} of the restored file is {got}, not the recorded one",
                    algo.name()
                )),
                Err(e) => bad.push(format!("{named}: cannot read the restored file: {e}")),
            }
        }
    }
    if bad.is_empty() {
        return result(
            &f.name,
            "file_refs",
            true,
            format!(
                "{} rows: every file present, {hashed} with the recorded {}",
                rows.len(),
                algo.name()
            ),
            start,
        );
    }
    let more = bad.len().saturating_sub(FILE_REFS_SHOWN);
    fail(format!(
        "{} of {} rows name files that are missing or differ: {}{}",
        bad.len(),
        rows.len(),
        bad[..bad.len().min(FILE_REFS_SHOWN)].join("; "),
        if more > 0 {
            format!("; and {more} more")
        } else {
            String::new()
        }
    ))
}

fn command_check(c: &super::restore_tests::CommandCheck, t: &CheckTarget<'_>) -> CheckResult {
    let start = Instant::now();
    // Output goes to a file, not a pipe: a chatty command must not block on a full pipe.
    let log = match tempfile::tempfile() {
        Ok(f) => f,
        Err(e) => {
            return result(
                &c.name,
                "command",
                false,
                format!("cannot create a log file: {e}"),
                start,
            )
        }
    };
    let mut cmd = crate::sys::process::command(&c.run[0]);
    cmd.args(&c.run[1..]).stdin(Stdio::null());
    match (log.try_clone(), log.try_clone()) {
        (Ok(a), Ok(b)) => {
            cmd.stdout(a).stderr(b);
        }
        _ => {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
        }
    }
    if let Some(d) = t.dir {
        cmd.current_dir(d);
    }
    for (k, v) in &t.env {
        cmd.env(k, v);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return result(
                &c.name,
                "command",
                false,
                format!("cannot start {:?}: {e}", c.run[0]),
                start,
            )
        }
    };
    let tail = |mut f: &std::fs::File| -> String {
        use std::io::{Read, Seek};
        let mut s = String::new();
        let _ = f
            .seek(std::io::SeekFrom::Start(0))
            .and_then(|_| f.read_to_string(&mut s));
        s.lines()
            .rev()
            .take(3)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join(" | ")
    };
    let deadline = Instant::now() + c.timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let t = tail(&log);
                return result(
                    &c.name,
                    "command",
                    status.success(),
                    format!(
                        "{status}{}",
                        if t.is_empty() {
                            String::new()
                        } else {
                            format!(": {t}")
                        }
                    ),
                    start,
                );
            }
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return result(
                    &c.name,
                    "command",
                    false,
                    format!("timed out after {}", humantime::format_duration(c.timeout)),
                    start,
                );
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => {
                return result(
                    &c.name,
                    "command",
                    false,
                    format!("wait failed: {e}"),
                    start,
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(database: &str) -> SqlConn {
        SqlConn {
            kind: DbKind::Postgres,
            host: "/nonexistent".into(),
            port: 5432,
            socket: None,
            user: "postgres".into(),
            database: database.into(),
            bin_dir: None,
            password: None,
        }
    }

    #[test]
    fn a_check_picks_the_set_database_its_job_names() {
        let (own, orders, customers) = (conn("own"), conn("shop_orders"), conn("shop_customers"));
        let mut members = vec![
            ("orders-db".to_string(), Db::new(&orders)),
            ("customers-db".to_string(), Db::new(&customers)),
        ];
        let mut d = Db::new(&own);
        let got = pick_db(Some("customers-db"), Some(&mut d), &mut members).unwrap();
        assert_eq!(got.unwrap().conn.database, "shop_customers");
        let e = pick_db(None, Some(&mut d), &mut members).err().unwrap();
        assert!(
            e.contains("orders-db, customers-db") && e.contains("job = "),
            "{e}"
        );
        let e = pick_db(Some("nope"), Some(&mut d), &mut members)
            .err()
            .unwrap();
        assert!(e.contains("\"nope\" is not a database member"), "{e}");
        // One database: no job needed; outside a set, a job is refused.
        let mut one = vec![("orders-db".to_string(), Db::new(&orders))];
        let got = pick_db(None, Some(&mut d), &mut one).unwrap();
        assert_eq!(got.unwrap().conn.database, "own");
        let e = pick_db(Some("orders-db"), Some(&mut d), &mut [])
            .err()
            .unwrap();
        assert!(e.contains("not a set's"), "{e}");
    }
}
