//! The SQL sessions that hold a database snapshot open while a dump runs: an interactive
//! client (`psql` or `mariadb`) kept connected across several queries. The child process
//! itself is a [`ChildProc`] (crate::sys::process).

use std::io::{BufRead, BufReader, Write};
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use crate::sys::process::{CancelWatch, ChildProc};
use crate::sys::Cancel;
use crate::{Error, Result};

/// An interactive SQL client (`psql` or `mariadb`) that stays connected so a transaction
/// (and the database snapshot it holds) stays open across several queries. Each query
/// must print one line; a sentinel line marks the end of its output.
pub struct SqlSession {
    proc: ChildProc,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// The client command that prints the sentinel (`\echo X` or `SELECT 'X';`).
    sentinel_cmd: String,
    sentinel: String,
}

impl SqlSession {
    pub fn start(
        mut cmd: Command,
        name: &str,
        source: &str,
        secrets: Vec<String>,
        sentinel_cmd: &str,
        sentinel: &str,
    ) -> Result<Self> {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut proc = ChildProc::spawn(cmd, name, source, secrets)?;
        let stdin = proc.take_stdin().expect("stdin piped");
        let stdout = BufReader::new(proc.take_stdout().expect("stdout piped"));
        Ok(SqlSession {
            proc,
            stdin,
            stdout,
            sentinel_cmd: sentinel_cmd.into(),
            sentinel: sentinel.into(),
        })
    }

    /// See [`ChildProc::watch_cancel`].
    pub fn watch_cancel(&self, cancel: &Cancel) -> CancelWatch {
        self.proc.watch_cancel(cancel)
    }

    /// Runs `sql` and returns the lines it printed.
    pub fn query(&mut self, sql: &str) -> Result<Vec<String>> {
        let sent =
            writeln!(self.stdin, "{sql}\n{}", self.sentinel_cmd).and_then(|_| self.stdin.flush());
        if let Err(e) = sent {
            return Err(self.died(format!("lost the {} session: {e}", self.proc.name)));
        }
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            match self.stdout.read_line(&mut line) {
                Ok(0) => {
                    return Err(self.died(format!(
                        "{} session ended while running a query",
                        self.proc.name
                    )))
                }
                Ok(_) => {
                    let l = line.trim_end_matches(['\n', '\r']);
                    if l == self.sentinel {
                        return Ok(lines);
                    }
                    lines.push(l.to_string());
                }
                Err(e) => return Err(self.died(format!("reading from {}: {e}", self.proc.name))),
            }
        }
    }

    /// Runs a query that returns exactly one JSON line.
    pub fn query_json(&mut self, sql: &str) -> Result<serde_json::Value> {
        let lines = self.query(sql)?;
        let line = lines
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
            .ok_or_else(|| {
                self.proc.failure(format!(
                    "{} returned no row for a metadata query",
                    self.proc.name
                ))
            })?;
        serde_json::from_str(line).map_err(|e| {
            self.proc
                .failure(format!("{} returned malformed JSON ({e})", self.proc.name))
        })
    }

    fn died(&mut self, what: String) -> Error {
        // Give stderr a moment to arrive: the client usually prints its error as it exits.
        std::thread::sleep(Duration::from_millis(100));
        self.proc.failure(what)
    }

    /// Sends `last` (e.g. `COMMIT;`), closes stdin and waits for the client to exit.
    pub fn close(self, last: &str) -> Result<()> {
        let SqlSession {
            proc, mut stdin, ..
        } = self;
        let _ = writeln!(stdin, "{last}");
        drop(stdin);
        proc.finish_within(Duration::from_secs(30))
    }
}
