//! PostgreSQL: `pg_dump` (custom format) streamed from its stdout straight into the pipeline,
//! plus `pg_dumpall --globals-only` beside it, with metadata taken in the dump's own MVCC
//! snapshot.
//!
//! A `psql` session opens `BEGIN ISOLATION LEVEL REPEATABLE READ` and exports its snapshot
//! (`pg_export_snapshot()`); server version, WAL position, database size and row counts are
//! read in that transaction, and `pg_dump --snapshot=<id>` dumps exactly the same state. The
//! session stays open until pg_dump has finished (an exported snapshot dies with its
//! transaction). The consistency time is the transaction's start (`now()`), a moment just
//! before the snapshot: RPO measured from it is never flattering.
//!
//! The snapshot's root tree holds `database.dump` (custom format, uncompressed so that dedup
//! and zstd work across runs) and `globals.sql` (roles and tablespaces; not transactional, so
//! taken right after the dump). The custom archive streams through `pg_restore
//! --file=/dev/null` on its way in, so an archive cut short fails the run. With `format =
//! "directory"` (parallel `--jobs`), the dump is staged in a private temporary directory and
//! stored as the tree `database.dir` instead: faster for big databases, at the cost of the
//! dump's size in temporary disk space. Connection settings go to the children through libpq's
//! environment (`PGHOST`, `PGPASSWORD`, …), never argv.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::json;
use zeroize::Zeroizing;

use super::db::{DbConn, RowCounts};
use super::session::SqlSession;
use super::{BackupContext, Source, SourceOutput, StreamError};
use crate::repo::tree::{Node, Tree};
use crate::sys::process::{require_tool, ChildProc};
use crate::{Error, Result};

/// Name of the dump file node in the snapshot's root tree.
pub const DUMP_NODE: &str = "database.dump";
/// Name of the dump directory node (`format = "directory"`).
pub const DIR_NODE: &str = "database.dir";
/// Name of the globals file node.
pub const GLOBALS_NODE: &str = "globals.sql";

const SENTINEL: &str = "__lifeboat_end_of_result__";

/// A validated `type = "postgres"` job source.
#[derive(Debug, Clone, PartialEq)]
pub struct PostgresSpec {
    pub conn: DbConn,
    pub row_counts: RowCounts,
    /// Also store `pg_dumpall --globals-only` (it reads `pg_authid`: needs a superuser).
    pub globals: bool,
    /// pg_dump `--compress` level; 0 (the default) leaves compression to the repository,
    /// which keeps unchanged table data deduplicated between runs.
    pub compress: u8,
    /// Directory holding pg_dump/pg_dumpall/psql (default: PATH).
    pub bin_dir: Option<PathBuf>,
    pub format: DumpFormat,
    /// pg_dump `--jobs` (directory format only).
    pub jobs: u32,
    /// Where a directory-format dump is staged (default: the system temp directory).
    pub spool_dir: Option<PathBuf>,
}

/// pg_dump's output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DumpFormat {
    /// One archive streamed from pg_dump's stdout into the pipeline: no temporary file.
    #[default]
    Custom,
    /// A directory of files written by parallel pg_dump workers (`--jobs`) into a private
    /// temporary directory, which is backed up as a tree and then removed. Faster for big
    /// databases on many cores; costs the dump's size in temporary disk space.
    Directory,
}

/// libpq environment for a connection; the password goes in `PGPASSWORD`, never argv.
pub fn libpq_env(
    conn: &DbConn,
    password: Option<&str>,
    database: Option<&str>,
) -> Vec<(String, String)> {
    let mut env = vec![
        (
            "PGDATABASE".into(),
            database.unwrap_or(&conn.database).to_string(),
        ),
        ("PGAPPNAME".into(), "lifeboat".into()),
        ("PGCONNECT_TIMEOUT".into(), "15".into()),
    ];
    if let Some(h) = &conn.host {
        env.push(("PGHOST".into(), h.clone()));
    }
    if let Some(p) = conn.port {
        env.push(("PGPORT".into(), p.to_string()));
    }
    if let Some(u) = &conn.user {
        env.push(("PGUSER".into(), u.clone()));
    }
    if let Some(pw) = password {
        env.push(("PGPASSWORD".into(), pw.to_string()));
    }
    env
}

/// Opens a `psql` session with machine-readable output (one JSON line per query).
pub fn psql_session(
    bin_dir: Option<&std::path::Path>,
    env: &[(String, String)],
    source: &str,
    secrets: Vec<String>,
) -> Result<SqlSession> {
    let psql = require_tool(source, &["psql"], bin_dir)?;
    let mut cmd = Command::new(psql);
    cmd.args([
        "-X",
        "-q",
        "-A",
        "-t",
        "--no-password",
        "-v",
        "ON_ERROR_STOP=1",
    ])
    .envs(env.iter().map(|(k, v)| (k, v)));
    SqlSession::start(
        cmd,
        "psql",
        source,
        secrets,
        &format!("\\echo {SENTINEL}"),
        SENTINEL,
    )
}

pub struct PostgresSource {
    spec: PostgresSpec,
    name: String,
    password: Option<Zeroizing<String>>,
    /// A snapshot exported and held open by [`Source::freeze`] (recovery-point sets).
    held: Option<Held>,
}

/// An exported snapshot held open in its session, with the metadata read in it.
struct Held {
    session: SqlSession,
    snapshot: String,
    meta: serde_json::Value,
}

impl PostgresSource {
    /// `name` is the job name used in messages. Reads the password now, so a missing
    /// secret fails before anything starts.
    pub fn new(spec: PostgresSpec, name: &str) -> Result<Self> {
        let password = super::db::read_password(&spec.conn, name)?;
        Ok(PostgresSource {
            spec,
            name: name.into(),
            password,
            held: None,
        })
    }

    fn env(&self) -> Vec<(String, String)> {
        libpq_env(
            &self.spec.conn,
            self.password.as_deref().map(|s| s.as_str()),
            None,
        )
    }

    fn secrets(&self) -> Vec<String> {
        self.password.iter().map(|p| p.to_string()).collect()
    }

    fn tool(&self, name: &str) -> Result<PathBuf> {
        require_tool(&self.name, &[name], self.spec.bin_dir.as_deref())
    }

    /// Custom format: pg_dump's stdout streamed into the pipeline, checked as it passes.
    fn dump_custom(
        &self,
        ctx: &mut BackupContext<'_>,
        pg_dump: &std::path::Path,
        env: &[(String, String)],
        snapshot: &str,
        session: SqlSession,
    ) -> Result<(Node, serde_json::Value)> {
        let mut cmd = Command::new(pg_dump);
        cmd.arg("--format=custom")
            .arg(format!("--compress={}", self.spec.compress))
            .arg(format!("--snapshot={snapshot}"))
            .arg("--no-password")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        let child = ChildProc::spawn(cmd, "pg_dump", &self.name, self.secrets())?;
        tracing::info!(job = %self.name, pid = child.pid(), "pg_dump started");
        // pg_restore reads the whole archive as it streams by: an archive cut short (even one
        // whose writer exited 0) fails here, and nothing is committed.
        let mut vcmd = Command::new(self.tool("pg_restore")?);
        vcmd.args(["--file=/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null());
        let verifier = ChildProc::spawn(vcmd, "pg_restore (archive check)", &self.name, vec![])?;
        let (dump_ids, dump_len, head) = self.stream_child(ctx, child, Some(verifier))?;
        // pg_dump is done with the snapshot: end the transaction, then check the session.
        session.close("ROLLBACK;")?;
        if !head.starts_with(b"PGDMP") {
            return Err(Error::source_failed(self.name.clone(), format!("pg_dump exited 0 but its output ({dump_len} bytes) is not a custom-format archive (no PGDMP header); nothing was committed")));
        }

        let node = ctx.file_node(DUMP_NODE, dump_ids, dump_len, 0o600);
        let meta = json!({"file": DUMP_NODE, "format": "custom", "bytes": dump_len, "compress": self.spec.compress});
        Ok((node, meta))
    }

    /// Directory format: parallel pg_dump into a private temporary directory, checked with
    /// pg_restore, backed up as a tree, removed (also on failure: the TempDir guard).
    fn dump_directory(
        &self,
        ctx: &mut BackupContext<'_>,
        pg_dump: &std::path::Path,
        env: &[(String, String)],
        snapshot: &str,
        session: SqlSession,
    ) -> Result<(Node, serde_json::Value)> {
        let base = self
            .spec
            .spool_dir
            .clone()
            .unwrap_or_else(std::env::temp_dir);
        let spool = tempfile::Builder::new()
            .prefix("lifeboat-pgdump-")
            // Private: a copy of production data.
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir_in(&base)
            .map_err(|e| Error::io("create a spool directory in", &base, e))?;
        let out = spool.path().join(DIR_NODE);
        let mut cmd = Command::new(pg_dump);
        cmd.arg("--format=directory")
            .arg(format!("--jobs={}", self.spec.jobs.max(1)))
            .arg(format!("--compress={}", self.spec.compress))
            .arg(format!("--snapshot={snapshot}"))
            .arg("--no-password")
            .arg(format!("--file={}", out.display()))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let child = ChildProc::spawn(cmd, "pg_dump", &self.name, self.secrets())?;
        tracing::info!(job = %self.name, pid = child.pid(), jobs = self.spec.jobs, "pg_dump (directory format) started");
        let cancel = ctx.pipe.cancel().clone();
        let watch = child.watch_cancel(&cancel);
        let dumped = child.finish();
        drop(watch);
        ctx.pipe.check()?;
        dumped?;
        session.close("ROLLBACK;")?;
        // pg_restore reads every file of the archive: a damaged or incomplete dump fails here.
        let mut vcmd = Command::new(self.tool("pg_restore")?);
        vcmd.arg("--file=/dev/null")
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        ChildProc::spawn(vcmd, "pg_restore (archive check)", &self.name, vec![])?
            .finish()
            .map_err(|e| {
                Error::source_failed(
                    self.name.clone(),
                    format!("the dump is incomplete or damaged: {e}"),
                )
            })?;
        let before = ctx.summary.bytes_processed;
        let node = super::dir::walk_entry(ctx, &out, DIR_NODE.into(), None)?;
        let bytes = ctx.summary.bytes_processed - before;
        match node {
            Some(n) if !ctx.partial => Ok((
                n,
                json!({"dir": DIR_NODE, "format": "directory", "jobs": self.spec.jobs, "bytes": bytes, "compress": self.spec.compress}),
            )),
            _ => Err(Error::source_failed(self.name.clone(), format!("files of the directory-format dump in {} could not be read (see the warnings above)", spool.path().display()))),
        }
    }

    /// Metadata and row counts, read inside the exported snapshot.
    fn snapshot_meta(&self, s: &mut SqlSession) -> Result<(String, serde_json::Value)> {
        s.query("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;")?;
        let v = s.query_json(
            "SELECT json_build_object(
                'snapshot', pg_export_snapshot(),
                'consistency_time', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),
                'server_version', current_setting('server_version'),
                'server_version_num', current_setting('server_version_num')::int,
                'in_recovery', pg_is_in_recovery(),
                'wal_lsn', CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END,
                'replay_lsn', CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()::text END,
                'database', current_database(),
                'database_size', pg_database_size(current_database()),
                'encoding', pg_encoding_to_char((SELECT encoding FROM pg_database WHERE datname = current_database())),
                'roles', (SELECT coalesce(json_agg(rolname ORDER BY rolname), '[]') FROM pg_roles WHERE rolname !~ '^pg_'));",
        )?;
        let snap = v["snapshot"].as_str().unwrap_or_default().to_string();
        if snap.is_empty() {
            return Err(Error::source_failed(
                self.name.clone(),
                "pg_export_snapshot() returned nothing",
            ));
        }
        Ok((snap, v))
    }

    fn row_counts(&self, s: &mut SqlSession) -> Result<serde_json::Value> {
        const TABLES: &str = "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                  AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'";
        let sql = match self.spec.row_counts {
            RowCounts::Off => return Ok(serde_json::Value::Null),
            // query_to_xml runs each count(*) inside this transaction, i.e. in the dump's snapshot.
            RowCounts::Exact => format!(
                "SELECT coalesce(json_object_agg(format('%I.%I', n.nspname, c.relname),
                    (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM ONLY %I.%I', n.nspname, c.relname), false, true, '')))[1]::text::bigint), '{{}}') {TABLES};"
            ),
            RowCounts::Estimate => format!(
                "SELECT coalesce(json_object_agg(format('%I.%I', n.nspname, c.relname),
                    CASE WHEN c.reltuples < 0 THEN NULL ELSE c.reltuples::bigint END), '{{}}') {TABLES};"
            ),
        };
        s.query_json(&sql)
    }

    /// Streams one child's stdout into the pipeline (and into `verifier`'s stdin when given);
    /// returns the content and its first bytes. The child is waited for and its exit status
    /// checked before this returns Ok.
    fn stream_child(
        &self,
        ctx: &mut BackupContext<'_>,
        mut child: ChildProc,
        mut verifier: Option<ChildProc>,
    ) -> Result<(Vec<crate::ids::BlobId>, u64, Vec<u8>)> {
        let mut out = child.take_stdout().expect("stdout piped");
        let tee = verifier.as_mut().and_then(|v| v.take_stdin());
        let mut head = HeadReader {
            inner: &mut out,
            head: Vec::new(),
            tee,
        };
        let cancel = ctx.pipe.cancel().clone();
        let watch = child.watch_cancel(&cancel);
        let streamed = ctx.add_stream(&mut head);
        drop(watch);
        let (first, tee) = (head.head, head.tee.take());
        drop(tee); // EOF for the verifier
        if cancel.is_cancelled() {
            child.kill();
            return Err(Error::Interrupted);
        }
        match streamed {
            Ok((ids, n)) => {
                // What the tool left out on purpose it says only as a warning on stderr
                // (pg_dump: "subscriptions not dumped because current user is not a
                // superuser"): those reach the run's warnings instead of vanishing.
                let (status, stderr) = child.finish_with_stderr();
                status?;
                for line in stderr.lines().filter(|l| l.contains("warning: ")) {
                    ctx.warn(line.trim().replacen("warning: ", "", 1), false);
                }
                if let Some(v) = verifier {
                    v.finish().map_err(|e| Error::source_failed(self.name.clone(), format!("the dump is incomplete or damaged (pg_restore could not read it to the end): {e}")))?;
                }
                Ok((ids, n, first))
            }
            Err(StreamError::Io(e)) => {
                child.kill();
                let what = format!("reading the output of {} failed: {e}", child.name);
                Err(child.failure(what))
            }
            Err(StreamError::Fatal(e)) => {
                child.kill();
                Err(e)
            }
        }
    }
}

/// Keeps the first bytes of a stream (to check the archive's magic number) and copies
/// everything into a verifier's stdin. A verifier that stops reading is dropped here; its
/// exit status reports why.
struct HeadReader<'a, R: Read> {
    inner: &'a mut R,
    head: Vec<u8>,
    tee: Option<std::process::ChildStdin>,
}

impl<R: Read> Read for HeadReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.head.len() < 16 {
            let take = (16 - self.head.len()).min(n);
            self.head.extend_from_slice(&buf[..take]);
        }
        if let Some(t) = self.tee.as_mut() {
            if std::io::Write::write_all(t, &buf[..n]).is_err() {
                self.tee = None;
            }
        }
        Ok(n)
    }
}

impl Source for PostgresSource {
    fn kind(&self) -> &str {
        "postgres"
    }

    /// Exports a snapshot now and holds its transaction open until `run` dumps it, so the
    /// dump (and the row counts) are of this moment however long the set's other members
    /// take to start.
    fn freeze(&mut self) -> Result<super::Frozen> {
        self.tool("pg_dump")?;
        let mut session = psql_session(
            self.spec.bin_dir.as_deref(),
            &self.env(),
            &self.name,
            self.secrets(),
        )?;
        let (snapshot, meta) = self.snapshot_meta(&mut session)?;
        let at = super::db::consistency_time(&meta, chrono::Utc::now());
        self.held = Some(Held {
            session,
            snapshot,
            meta,
        });
        Ok(super::Frozen {
            capture: crate::repo::set::Capture::DatabaseSnapshot,
            consistency_time: Some(at),
        })
    }

    fn paths(&self) -> Vec<String> {
        vec![self.spec.conn.describe("postgres")]
    }

    fn run(&mut self, ctx: &mut BackupContext<'_>, _parent: Option<&Tree>) -> Result<SourceOutput> {
        let started = chrono::Utc::now();
        let pg_dump = self.tool("pg_dump")?;
        let pg_dumpall = if self.spec.globals {
            Some(self.tool("pg_dumpall")?)
        } else {
            None
        };
        let mut tools = vec![("pg_dump", pg_dump.clone())];
        if let Some(t) = &pg_dumpall {
            tools.push(("pg_dumpall", t.clone()));
        }
        let env = self.env();
        // A set member's snapshot was exported at the set's moment (`freeze`); otherwise
        // it is exported now.
        let (mut session, meta) = match self.held.take() {
            Some(h) => (h.session, Ok((h.snapshot, h.meta))),
            None => {
                let mut session = psql_session(
                    self.spec.bin_dir.as_deref(),
                    &env,
                    &self.name,
                    self.secrets(),
                )?;
                let meta = self.snapshot_meta(&mut session);
                (session, meta)
            }
        };
        // Counting a big database takes a while: Ctrl-C must not wait for it.
        let watch = session.watch_cancel(ctx.pipe.cancel());
        let counts = meta.is_ok().then(|| self.row_counts(&mut session));
        drop(watch);
        ctx.pipe.check()?;
        let (snapshot, mut meta) = meta?;
        let counts = counts.expect("counted after metadata")?;

        let (dump_node, dump_meta) = match self.spec.format {
            DumpFormat::Custom => self.dump_custom(ctx, &pg_dump, &env, &snapshot, session)?,
            DumpFormat::Directory => {
                self.dump_directory(ctx, &pg_dump, &env, &snapshot, session)?
            }
        };
        let mut nodes = vec![dump_node];
        let mut globals_len = None;
        if let Some(tool) = pg_dumpall {
            let mut cmd = Command::new(tool);
            // pg_dumpall takes -l for its database; PGDATABASE is ignored by it.
            cmd.args([
                "--globals-only",
                "--no-password",
                "-l",
                &self.spec.conn.database,
            ])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
            let child = ChildProc::spawn(cmd, "pg_dumpall", &self.name, self.secrets())?;
            let (ids, len, _) = self.stream_child(ctx, child, None)?;
            nodes.push(ctx.file_node(GLOBALS_NODE, ids, len, 0o600));
            globals_len = Some(len);
        }
        nodes.sort_by(|a: &Node, b: &Node| a.name.cmp(&b.name));
        let tree = ctx.add_tree(&Tree { nodes })?;

        let consistency_time = super::db::consistency_time(&meta, started);
        if let Some(m) = meta.as_object_mut() {
            m.remove("snapshot");
            m.insert("dump".into(), dump_meta);
            m.insert(
                "globals".into(),
                json!(globals_len.map(|b| json!({"file": GLOBALS_NODE, "bytes": b}))),
            );
            m.insert("row_counts".into(), json!({"mode": self.spec.row_counts, "consistency": "same MVCC snapshot as the dump", "tables": counts}));
            m.insert("dump_tools".into(), json!(super::db::dump_tools(&tools)));
        }
        // Stream nodes are files too (a directory-format dump's files were counted as walked).
        ctx.summary.files_new +=
            (self.spec.format == DumpFormat::Custom) as u64 + globals_len.is_some() as u64;
        Ok(SourceOutput {
            tree,
            consistency_time,
            meta,
        })
    }
}
