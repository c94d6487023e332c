//! MariaDB / MySQL: `mariadb-dump` (or `mysqldump`) with `--single-transaction --routines
//! --triggers --events --hex-blob`, streamed from its stdout into the pipeline as one file
//! node, `database.sql`.
//!
//! Metadata comes from a `mariadb` client session that runs `START TRANSACTION WITH
//! CONSISTENT SNAPSHOT` just before the dump starts: server version, the moment of that
//! snapshot (the consistency time), the binary log position when binary logging is on, and
//! row counts. How consistent the counts are, precisely: the dump opens its *own*
//! consistent snapshot a few milliseconds after ours (the dump tool cannot join another
//! session's snapshot), so a transaction that commits in between is in the dump but not in
//! the counts. On a quiet database they agree exactly; under write load a table's count may
//! be lower than the dumped rows by what was committed in that gap. The binlog position is
//! MariaDB's `binlog_snapshot_file/position`, which belongs to our snapshot, not the dump's;
//! on MySQL it is `SHOW MASTER STATUS`, taken without a lock (approximate). Non-InnoDB tables
//! are not covered by any snapshot. The consistency time (our snapshot) precedes the dump's
//! snapshot, so RPO measured from it is never flattering.
//!
//! The password goes to the clients in a temporary `--defaults-extra-file` (mode 0600,
//! removed afterwards), never argv.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::json;
use zeroize::Zeroizing;

use super::db::{DbConn, RowCounts};
use super::session::SqlSession;
use super::{BackupContext, Source, SourceOutput, StreamError};
use crate::repo::tree::Tree;
use crate::sys::process::{require_tool, ChildProc};
use crate::{Error, Result};

/// Name of the dump file node in the snapshot's root tree.
pub const DUMP_NODE: &str = "database.sql";
const SENTINEL: &str = "__lifeboat_end_of_result__";

/// A validated `type = "mariadb"` (or `"mysql"`) job source.
#[derive(Debug, Clone, PartialEq)]
pub struct MariadbSpec {
    pub conn: DbConn,
    pub row_counts: RowCounts,
    /// Directory holding the client tools (default: PATH).
    pub bin_dir: Option<PathBuf>,
    /// Pass `--no-defaults` first: ignore /etc/mysql/my.cnf and ~/.my.cnf.
    pub no_defaults: bool,
}

/// A temporary option file holding the connection settings (and the password), 0600.
pub struct ClientOptions {
    file: tempfile::NamedTempFile,
    no_defaults: bool,
}

impl ClientOptions {
    pub fn new(conn: &DbConn, password: Option<&str>, no_defaults: bool) -> Result<Self> {
        // tempfile creates files with mode 0600.
        let mut file = tempfile::Builder::new()
            .prefix("lifeboat-mariadb-")
            .tempfile()
            .map_err(|e| Error::io("create", std::env::temp_dir(), e))?;
        let mut text = Zeroizing::new(String::from("[client]\n"));
        let quote = |v: &str| format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""));
        if let Some(h) = &conn.host {
            text.push_str(&format!("host={}\n", quote(h)));
        }
        if let Some(p) = conn.port {
            text.push_str(&format!("port={p}\n"));
        }
        if let Some(s) = &conn.socket {
            text.push_str(&format!("socket={}\n", quote(&s.to_string_lossy())));
        }
        if let Some(u) = &conn.user {
            text.push_str(&format!("user={}\n", quote(u)));
        }
        if let Some(pw) = password {
            text.push_str(&format!("password={}\n", quote(pw)));
        }
        file.write_all(text.as_bytes())
            .map_err(|e| Error::io("write", file.path(), e))?;
        Ok(ClientOptions { file, no_defaults })
    }

    /// The leading arguments every client call needs (option-file flags must come first).
    pub fn args(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.no_defaults {
            // --no-defaults would also drop the extra file; --defaults-file reads only ours.
            v.push(format!("--defaults-file={}", self.file.path().display()));
        } else {
            v.push(format!(
                "--defaults-extra-file={}",
                self.file.path().display()
            ));
        }
        v
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }
}

/// Opens a `mariadb` client session printing one raw line per result row.
pub fn client_session(
    bin_dir: Option<&Path>,
    opts: &ClientOptions,
    database: Option<&str>,
    source: &str,
    secrets: Vec<String>,
) -> Result<SqlSession> {
    let client = require_tool(source, &["mariadb", "mysql"], bin_dir)?;
    let mut cmd = Command::new(client);
    cmd.args(opts.args())
        .args(["--batch", "--skip-column-names", "--raw", "--unbuffered"]);
    if let Some(db) = database {
        cmd.arg(format!("--database={db}"));
    }
    SqlSession::start(
        cmd,
        "mariadb client",
        source,
        secrets,
        &format!("SELECT '{SENTINEL}';"),
        SENTINEL,
    )
}

/// Quotes a string as an SQL literal (for names passed into queries).
pub fn sql_literal(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// Row counts of a MariaDB backup: known before the dump, or counted in it.
enum DumpCounts {
    Known(serde_json::Value),
    /// Exact counts of these base tables, taken from the dump stream.
    InStream(Vec<String>),
}

pub struct MariadbSource {
    spec: MariadbSpec,
    name: String,
    password: Option<Zeroizing<String>>,
    /// A dump started by [`Source::freeze`] (recovery-point sets): its consistent snapshot
    /// was opened under a brief global read lock; `run` streams it.
    held: Option<StartedDump>,
}

/// A mariadb-dump child whose consistent snapshot is open, with what was read beside it.
struct StartedDump {
    child: ChildProc,
    session: SqlSession,
    meta: serde_json::Value,
    counts: DumpCounts,
    dump_tool: PathBuf,
    warning: Option<String>,
    /// The client's defaults file (the password): it must outlive the dump's start.
    _opts: ClientOptions,
}

impl MariadbSource {
    pub fn new(spec: MariadbSpec, name: &str) -> Result<Self> {
        let password = super::db::read_password(&spec.conn, name)?;
        Ok(MariadbSource {
            spec,
            name: name.into(),
            password,
            held: None,
        })
    }

    fn secrets(&self) -> Vec<String> {
        self.password.iter().map(|p| p.to_string()).collect()
    }

    fn snapshot_meta(&self, s: &mut SqlSession) -> Result<serde_json::Value> {
        let db = sql_literal(&self.spec.conn.database);
        s.query("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ; START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY;")?;
        let mut meta = s.query_json(&format!(
            "SELECT JSON_OBJECT('server_version', VERSION(), 'consistency_time', DATE_FORMAT(UTC_TIMESTAMP(6), '%Y-%m-%dT%H:%i:%s.%fZ'),
                'log_bin', IF(@@GLOBAL.log_bin, 1, 0), 'database', {db},
                'database_size', (SELECT COALESCE(SUM(DATA_LENGTH + INDEX_LENGTH), 0) FROM information_schema.TABLES WHERE TABLE_SCHEMA = {db}),
                'schema_exists', (SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {db}));"
        ))?;
        if meta["schema_exists"].as_i64() == Some(0) {
            return Err(Error::source_failed(
                self.name.clone(),
                format!(
                    "database {:?} does not exist on the server; fix `database` in the plan",
                    self.spec.conn.database
                ),
            ));
        }
        if meta["log_bin"].as_i64() == Some(1) {
            // MariaDB exposes the binlog position that belongs to this snapshot.
            let rows = s.query("SHOW STATUS LIKE 'binlog_snapshot_%';")?;
            let mut pos = serde_json::Map::new();
            for r in rows {
                if let Some((k, v)) = r.split_once('\t') {
                    pos.insert(
                        k.to_ascii_lowercase()
                            .trim_start_matches("binlog_snapshot_")
                            .to_string(),
                        json!(v),
                    );
                }
            }
            let binlog = if pos.is_empty() {
                let rows = s.query("SHOW MASTER STATUS;")?;
                let f: Vec<&str> = rows
                    .first()
                    .map(|r| r.split('\t').collect())
                    .unwrap_or_default();
                json!({"file": f.first(), "position": f.get(1), "exact": false, "note": "SHOW MASTER STATUS without a lock"})
            } else {
                json!({"file": pos.get("file"), "position": pos.get("position"), "exact": true, "note": "binlog_snapshot_* of lifeboat's metadata snapshot, opened just before the dump's own"})
            };
            meta["binlog"] = binlog;
        }
        // The accounts the database's views, routines, triggers and events run as: a drill's
        // throwaway server creates them, or those objects would fail there (error 1449).
        // (Plain rows, not JSON_ARRAYAGG: that needs MariaDB 10.5 / MySQL 5.7.22.)
        let definers = s.query(&format!(
            "SELECT DEFINER FROM information_schema.VIEWS WHERE TABLE_SCHEMA = {db}
             UNION SELECT DEFINER FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = {db}
             UNION SELECT DEFINER FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = {db}
             UNION SELECT DEFINER FROM information_schema.EVENTS WHERE EVENT_SCHEMA = {db}
             ORDER BY 1;"
        ))?;
        meta["definers"] = json!(definers);
        Ok(meta)
    }

    /// The dump tool, client options, a routines warning, and the metadata session with the
    /// metadata and row-count plan read in it.
    #[allow(clippy::type_complexity)]
    fn prepare(
        &self,
        cancel: Option<&crate::sys::Cancel>,
    ) -> Result<(
        PathBuf,
        ClientOptions,
        Option<String>,
        SqlSession,
        serde_json::Value,
        DumpCounts,
    )> {
        let bin = self.spec.bin_dir.as_deref();
        let dump_tool = require_tool(&self.name, &["mariadb-dump", "mysqldump"], bin)?;
        let opts = ClientOptions::new(
            &self.spec.conn,
            self.password.as_deref().map(|s| s.as_str()),
            self.spec.no_defaults,
        )?;
        let warning = self.routines_hidden(bin, &opts);
        let mut session = client_session(bin, &opts, None, &self.name, self.secrets())?;
        // Counting a big database takes a while: Ctrl-C must not wait for it.
        let watch = cancel.map(|c| session.watch_cancel(c));
        let meta = self.snapshot_meta(&mut session);
        let counts = meta.is_ok().then(|| self.row_counts(&mut session));
        drop(watch);
        if cancel.is_some_and(|c| c.is_cancelled()) {
            return Err(Error::Interrupted);
        }
        let meta = meta?;
        let counts = counts.expect("counted after metadata")?;
        Ok((dump_tool, opts, warning, session, meta, counts))
    }

    fn spawn_dump(&self, dump_tool: &Path, opts: &ClientOptions) -> Result<ChildProc> {
        let mut cmd = Command::new(dump_tool);
        cmd.args(opts.args())
            .args([
                "--single-transaction",
                "--routines",
                "--triggers",
                "--events",
                "--hex-blob",
                "--quick",
                "--default-character-set=utf8mb4",
            ])
            .arg("--")
            .arg(&self.spec.conn.database)
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        ChildProc::spawn(
            cmd,
            dump_tool
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("mariadb-dump"),
            &self.name,
            self.secrets(),
        )
    }

    /// mariadb-dump leaves out the stored procedures and functions its user may not see,
    /// without an error: the dump looks complete and is not. Seeing them takes read access
    /// to `mysql.proc`; a user without it gets a warning naming the grant. (Where there is no
    /// `mysql.proc`, as on MySQL 8, nothing is said.)
    fn routines_hidden(
        &self,
        bin: Option<&std::path::Path>,
        opts: &ClientOptions,
    ) -> Option<String> {
        let mut s = client_session(bin, opts, None, &self.name, self.secrets()).ok()?;
        match s.query("SELECT 1 FROM mysql.proc LIMIT 0;") {
            Ok(_) => {
                let _ = s.close("");
                None
            }
            Err(e) if e.to_string().contains("denied") => Some(format!(
                "the backup user cannot read mysql.proc, so mariadb-dump may leave out stored procedures and functions of {} without an error; GRANT SELECT ON mysql.proc TO the backup user (MariaDB 11.3+: or SHOW CREATE ROUTINE on the database)",
                self.spec.conn.database
            )),
            Err(_) => None,
        }
    }

    /// What the row counts will be: estimates read now, or (exact) the base tables whose
    /// rows are counted in the dump stream as it passes ([`DumpRowCounter`]).
    fn row_counts(&self, s: &mut SqlSession) -> Result<DumpCounts> {
        let db = sql_literal(&self.spec.conn.database);
        match self.spec.row_counts {
            RowCounts::Off => Ok(DumpCounts::Known(serde_json::Value::Null)),
            RowCounts::Estimate => s.query_json(&format!(
                "SELECT COALESCE(JSON_OBJECTAGG(TABLE_NAME, TABLE_ROWS), JSON_OBJECT()) FROM information_schema.TABLES WHERE TABLE_SCHEMA = {db} AND TABLE_TYPE = 'BASE TABLE';"
            )).map(DumpCounts::Known),
            RowCounts::Exact => Ok(DumpCounts::InStream(s.query(&format!(
                "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = {db} AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME;"
            ))?)),
        }
    }
}

impl Source for MariadbSource {
    fn kind(&self) -> &str {
        "mariadb"
    }

    fn paths(&self) -> Vec<String> {
        vec![self.spec.conn.describe("mariadb")]
    }

    /// Opens the dump's consistent snapshot under a brief global read lock: `FLUSH TABLES
    /// WITH READ LOCK` in a session of its own stops every write, mariadb-dump starts and
    /// opens its `--single-transaction` snapshot, and as soon as that transaction exists the
    /// lock is released (how `--master-data` pins a binlog position). The snapshot is of the
    /// lock's moment; `run` streams the dump later. Needs RELOAD (the lock) and PROCESS (to
    /// see the dump's transaction) for the backup user.
    fn freeze(&mut self) -> Result<super::Frozen> {
        let (dump_tool, opts, warning, session, mut meta, counts) = self.prepare(None)?;
        let bin = self.spec.bin_dir.as_deref();
        let mut lock = client_session(bin, &opts, None, &self.name, self.secrets())?;
        let denied = |e: Error| {
            Error::source_failed(
                self.name.clone(),
                format!("a set member's dump is started under a brief global read lock: {e}; GRANT RELOAD, PROCESS ON *.* TO the backup user"),
            )
        };
        lock.query("FLUSH TABLES WITH READ LOCK;").map_err(denied)?;
        let moment = lock
            .query(
                "SELECT DATE_FORMAT(UTC_TIMESTAMP(6), '%Y-%m-%dT%H:%i:%s.%fZ'), CONNECTION_ID();",
            )?
            .into_iter()
            .next()
            .unwrap_or_default();
        let (at, own_id) = moment.split_once('\t').unwrap_or((moment.as_str(), "0"));
        let own_id: u64 = own_id.trim().parse().unwrap_or(0);
        let at = chrono::DateTime::parse_from_rfc3339(at)
            .map(|t| t.with_timezone(&chrono::Utc))
            .unwrap_or_else(|_| chrono::Utc::now());
        let mut child = self.spawn_dump(&dump_tool, &opts)?;
        // The dump's connection is newer than the lock's. Its snapshot is open once InnoDB
        // lists an active transaction for it (read-only ones are not in INNODB_TRX, but are
        // in the engine status), or once it reads table data.
        let reading = format!(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID > {own_id} AND INFO LIKE 'SELECT /*!40001 SQL_NO_CACHE */%';"
        );
        let waited = std::time::Instant::now();
        let deadline = waited + std::time::Duration::from_secs(30);
        loop {
            let status = lock.query("SHOW ENGINE INNODB STATUS;").map_err(denied)?;
            let mut n = dump_trx_active(&status, own_id) as u64;
            if n == 0 {
                n = lock
                    .query(&reading)
                    .map_err(denied)?
                    .first()
                    .and_then(|l| l.trim().parse().ok())
                    .unwrap_or(0);
            }
            // A dump that already finished opened its snapshot while the lock was held
            // (a small database fits in the pipe's buffer).
            if n > 0 || child.has_exited() {
                break;
            }
            if std::time::Instant::now() > deadline {
                let seen = lock
                    .query(&format!("SELECT CONCAT_WS(' | ', ID, USER, COMMAND, STATE) FROM information_schema.PROCESSLIST WHERE ID > {own_id};"))
                    .unwrap_or_default();
                tracing::warn!(
                    ?seen,
                    "mariadb-dump's session while the set waited for its snapshot"
                );
                child.kill();
                return Err(Error::source_failed(
                    self.name.clone(),
                    "mariadb-dump did not open its consistent snapshot within 30 s of the global read lock (released); GRANT PROCESS ON *.* TO the backup user so its transaction is visible",
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        tracing::info!(job = %self.name, waited_ms = waited.elapsed().as_millis() as u64, "set member's dump snapshot open; global read lock released");
        lock.close("UNLOCK TABLES;")?;
        meta["consistency_time"] = json!(at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string());
        meta["consistency"] =
            json!("the dump's snapshot, opened under a global read lock at the set's moment");
        self.held = Some(StartedDump {
            child,
            session,
            meta,
            counts,
            dump_tool,
            warning,
            _opts: opts,
        });
        Ok(super::Frozen {
            capture: crate::repo::set::Capture::DatabaseSnapshot,
            consistency_time: Some(at),
        })
    }

    fn run(&mut self, ctx: &mut BackupContext<'_>, _parent: Option<&Tree>) -> Result<SourceOutput> {
        let started = chrono::Utc::now();
        let StartedDump {
            mut child,
            session,
            meta,
            counts,
            dump_tool,
            warning,
            _opts,
        } = match self.held.take() {
            Some(h) => h,
            None => {
                let cancel = ctx.pipe.cancel().clone();
                let (dump_tool, opts, warning, session, meta, counts) =
                    self.prepare(Some(&cancel))?;
                ctx.pipe.check()?;
                let child = self.spawn_dump(&dump_tool, &opts)?;
                StartedDump {
                    child,
                    session,
                    meta,
                    counts,
                    dump_tool,
                    warning,
                    _opts: opts,
                }
            }
        };
        if let Some(w) = warning {
            ctx.warn(w, false);
        }
        let mut meta = meta;
        tracing::info!(job = %self.name, pid = child.pid(), "dump started");
        let mut out = child.take_stdout().expect("stdout piped");
        let mut tail = TailReader {
            inner: &mut out,
            tail: Vec::new(),
            rows: matches!(counts, DumpCounts::InStream(_)).then(DumpRowCounter::default),
        };
        let cancel = ctx.pipe.cancel().clone();
        let watch = child.watch_cancel(&cancel);
        let streamed = ctx.add_stream(&mut tail);
        drop(watch);
        if cancel.is_cancelled() {
            child.kill();
            return Err(Error::Interrupted);
        }
        let (ids, len) = match streamed {
            Ok(v) => v,
            Err(StreamError::Io(e)) => {
                child.kill();
                let what = format!("reading the dump failed: {e}");
                return Err(child.failure(what));
            }
            Err(StreamError::Fatal(e)) => {
                child.kill();
                return Err(e);
            }
        };
        child.finish()?;
        session.close("ROLLBACK;")?;
        // mariadb-dump ends a complete dump with a "-- Dump completed" comment: a dump cut
        // short (even by a wrapper that exited 0) lacks it.
        let last = String::from_utf8_lossy(&tail.tail).to_string();
        if !last.contains("-- Dump completed") {
            return Err(Error::source_failed(self.name.clone(), format!("the dump ({len} bytes) does not end with \"-- Dump completed\": it was cut short; nothing was committed")));
        }
        let tree = ctx.stream_root(DUMP_NODE, ids, len, 0o600)?;
        ctx.summary.files_new += 1;
        let consistency_time = super::db::consistency_time(&meta, started);
        if let Some(m) = meta.as_object_mut() {
            m.remove("schema_exists");
            m.insert("dump".into(), json!({"file": DUMP_NODE, "tool": dump_tool.file_name().map(|n| n.to_string_lossy()), "bytes": len}));
            let name = dump_tool
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("mariadb-dump");
            m.insert(
                "dump_tools".into(),
                json!(super::db::dump_tools(&[(name, dump_tool.clone())])),
            );
            let (tables, consistency) = match &counts {
                DumpCounts::InStream(tables) => (
                    serde_json::Value::Object(
                        tail.rows.as_ref().expect("counted").counts(tables),
                    ),
                    "counted in the dump stream itself: the rows of the dump's own consistent snapshot",
                ),
                DumpCounts::Known(v) => (
                    v.clone(),
                    "information_schema estimates, read just before the dump",
                ),
            };
            m.insert(
                "row_counts".into(),
                json!({"mode": self.spec.row_counts, "consistency": consistency, "tables": tables}),
            );
        }
        Ok(SourceOutput {
            tree,
            consistency_time,
            meta,
        })
    }
}

/// Whether `SHOW ENGINE INNODB STATUS` lists an active transaction for a connection newer
/// than `after` (the set's lock session): the dump's `--single-transaction` snapshot.
fn dump_trx_active(status: &[String], after: u64) -> bool {
    let mut active = false;
    for line in status.iter().flat_map(|l| l.split("\\n")) {
        let line = line.trim();
        if line.starts_with("---TRANSACTION") {
            active = line.contains("ACTIVE");
        } else if let Some(rest) = line.strip_prefix("MySQL thread id ") {
            let id: u64 = rest
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|d| d.parse().ok())
                .unwrap_or(0);
            if active && id > after {
                return true;
            }
        }
    }
    false
}

/// Counts the rows of each table in a mariadb-dump stream as it passes: every top-level
/// tuple of `INSERT INTO `t` VALUES (…),(…);` is one row. The counts belong to the dump's
/// own consistent snapshot by construction — counting in a transaction of our own, opened
/// before mariadb-dump's, disagreed with the dump under write load. Strings are followed
/// with both escape styles mariadb-dump writes (`\'` and `''`); binary columns are hex
/// (`--hex-blob`).
#[derive(Debug, Default)]
pub(crate) struct DumpRowCounter {
    counts: std::collections::BTreeMap<String, i64>,
    state: Scan,
    /// The start of the current line while it may still be an INSERT's prefix.
    line: Vec<u8>,
    table: String,
    depth: u32,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// At the start of a line, collecting it into `line` until it is known.
    #[default]
    LineStart,
    /// In a line that is not an INSERT: skip to its end.
    Skip,
    /// In an INSERT's VALUES list, outside strings.
    Values,
    /// Inside a quoted string.
    Str,
    /// Just after a backslash inside a string.
    Escape,
    /// Just after a quote inside a string: a second quote continues it.
    Quote,
}

impl DumpRowCounter {
    const PREFIX: &'static [u8] = b"INSERT INTO `";

    pub(crate) fn feed(&mut self, buf: &[u8]) {
        let mut i = 0;
        while i < buf.len() {
            let b = buf[i];
            match self.state {
                Scan::LineStart => {
                    self.line.push(b);
                    self.classify_line();
                    // A line that ended undecided, or was just found not to be an
                    // INSERT, is over: the next byte starts a new one.
                    if b == b'\n' && matches!(self.state, Scan::LineStart | Scan::Skip) {
                        self.state = Scan::LineStart;
                        self.line.clear();
                    }
                }
                Scan::Skip => match buf[i..].iter().position(|c| *c == b'\n') {
                    Some(n) => {
                        i += n;
                        self.state = Scan::LineStart;
                        self.line.clear();
                    }
                    None => return,
                },
                Scan::Values => match b {
                    b'\'' => self.state = Scan::Str,
                    b'(' => {
                        if self.depth == 0 {
                            *self.counts.entry(self.table.clone()).or_default() += 1;
                        }
                        self.depth += 1;
                    }
                    b')' => self.depth = self.depth.saturating_sub(1),
                    // The statement's end (mariadb-dump 10.11 puts each row on a line
                    // of its own, so a newline is not one).
                    b';' if self.depth == 0 => self.state = Scan::Skip,
                    _ => {}
                },
                Scan::Str => match b {
                    b'\\' => self.state = Scan::Escape,
                    b'\'' => self.state = Scan::Quote,
                    _ => {}
                },
                Scan::Escape => self.state = Scan::Str,
                Scan::Quote => {
                    if b == b'\'' {
                        self.state = Scan::Str;
                    } else {
                        self.state = Scan::Values;
                        continue; // look at this byte again, outside the string
                    }
                }
            }
            i += 1;
        }
    }

    /// Decides what the line begun in `line` is, once enough of it is there.
    fn classify_line(&mut self) {
        let l = &self.line;
        let n = l.len().min(Self::PREFIX.len());
        if l[..n] != Self::PREFIX[..n] {
            self.state = Scan::Skip;
            self.line.clear();
            return;
        }
        if l.len() <= Self::PREFIX.len() {
            return;
        }
        // The table name: backquoted, a backquote inside doubled; then " VALUES" and a
        // space or a newline.
        let rest = &l[Self::PREFIX.len()..];
        let mut name = Vec::new();
        let mut j = 0;
        while j < rest.len() {
            if rest[j] == b'`' {
                if rest.get(j + 1) == Some(&b'`') {
                    name.push(b'`');
                    j += 2;
                    continue;
                }
                if j + 1 >= rest.len() {
                    return; // a doubled quote may follow: wait for more
                }
                let after = &rest[j + 1..];
                const VALUES: &[u8] = b" VALUES";
                let m = after.len().min(VALUES.len());
                if after[..m] != VALUES[..m]
                    || after.len() > VALUES.len() && !matches!(after[VALUES.len()], b' ' | b'\n')
                {
                    self.state = Scan::Skip;
                    self.line.clear();
                } else if after.len() > VALUES.len() {
                    self.table = String::from_utf8_lossy(&name).into_owned();
                    self.depth = 0;
                    self.state = Scan::Values;
                    // Whatever of the values list is already in `line`.
                    let values = after[VALUES.len()..].to_vec();
                    self.line.clear();
                    self.feed(&values);
                }
                return;
            }
            name.push(rest[j]);
            j += 1;
        }
    }

    /// The counts of `tables` (a table the dump has no INSERT for has 0 rows).
    pub(crate) fn counts(&self, tables: &[String]) -> serde_json::Map<String, serde_json::Value> {
        tables
            .iter()
            .map(|t| (t.clone(), json!(self.counts.get(t).copied().unwrap_or(0))))
            .collect()
    }
}

/// Keeps the last bytes of a stream (to find the dump's completion comment), and counts
/// its rows when asked.
struct TailReader<'a, R: std::io::Read> {
    inner: &'a mut R,
    tail: Vec<u8>,
    rows: Option<DumpRowCounter>,
}

impl<R: std::io::Read> std::io::Read for TailReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(r) = self.rows.as_mut() {
            r.feed(&buf[..n]);
        }
        self.tail.extend_from_slice(&buf[..n]);
        if self.tail.len() > 512 {
            let cut = self.tail.len() - 256;
            self.tail.drain(..cut);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dump_rows_are_counted_in_the_stream_whatever_the_pieces() {
        let dump = "-- MariaDB dump 10.19\n\
            /*!40101 SET NAMES utf8mb4 */;\n\
            CREATE TABLE `items` (\n  `id` int(11) NOT NULL\n);\n\
            INSERT INTO `items` VALUES (1,'a (b)'),(2,'it''s (x'),(3,'back\\\\slash \\' (y'),(4,NULL);\n\
            INSERT INTO `items` VALUES\n(5,'semi;colon\\n(\\'z\\')');\n\
            INSERT INTO `items_x` VALUES (1);\n\
            INSERT INTO `items` VALUESX (1);\n\
            INSERT INTO `we``ird` VALUES\n(1,0x28),\n(2,'VALUES ('),\n(3,'');\n\
            \n\
            INSERT INTO `items` VALUES (6);\n\
            -\n\
            INSERT INTO `items` VALUES (7);\n\
            -- INSERT INTO `items` VALUES (99);\n\
            INSERT INTO `empty_later` VALUES ();\n\
            -- Dump completed on 2026-12-04\n";
        let tables: Vec<String> = ["items", "we`ird", "nothing", "empty_later"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for piece in [1, 2, 3, 5, 13, dump.len()] {
            let mut c = DumpRowCounter::default();
            for chunk in dump.as_bytes().chunks(piece) {
                c.feed(chunk);
            }
            let got = c.counts(&tables);
            assert_eq!(got["items"], 7, "pieces of {piece}: {got:?}");
            assert_eq!(got["we`ird"], 3, "pieces of {piece}: {got:?}");
            assert_eq!(got["nothing"], 0, "pieces of {piece}: {got:?}");
            assert_eq!(got["empty_later"], 1, "pieces of {piece}: {got:?}");
        }
    }
}
