//! `command`: the user's own provisioning and teardown commands (Docker, Terraform, a cloud
//! CLI) start and remove the server; lifeboat drills into it like a scratch server.
//!
//! The provisioning command (`sh -c`, in its own process group, with a timeout) gets
//! `LIFEBOAT_DRILL_ID`, `LIFEBOAT_DRILL_KIND` (`postgres` or `mariadb`) and
//! `LIFEBOAT_ENV_DIR` (a private directory it may keep state in) and prints `KEY=VALUE`
//! lines on stdout: `url=postgres://user@host:port/maintenance_db` (required; no password in
//! it), `password=…` (optional) and anything else it wants back at teardown. Other output
//! lines are ignored. The teardown command gets each printed key (but the password) as
//! `LIFEBOAT_ENV_<KEY>`, plus the variables above, and runs whatever happened: after the
//! drill, after a failed or timed-out provisioning, and — when lifeboat itself was killed —
//! from the next drill's orphan sweep (the command and its variables are saved in the
//! environment's directory before provisioning starts).

use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::scratch::{ScratchServer, ScratchSpec};
use super::{ConnectionInfo, EnvError, Environment, Password};
use crate::source::db::DbConn;
use crate::sys::process::ChildProc;
use crate::sys::Cancel;

/// File holding the teardown command in the environment's directory.
pub const TEARDOWN_FILE: &str = "teardown.sh";
/// File holding the teardown command's variables (`KEY=VALUE` lines, no password).
const VARS_FILE: &str = "teardown.env";
/// How long an orphan sweep lets a saved teardown command run.
const SWEEP_TEARDOWN_TIMEOUT: Duration = Duration::from_secs(600);

/// The plan's `[drill] provision`, `teardown` and `timeout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSpec {
    pub provision: String,
    pub teardown: String,
    /// Limit for each command; provisioning also waits this long for the server.
    pub timeout: Duration,
    pub bin_dir: Option<std::path::PathBuf>,
    /// Drill databases older than this are dropped (when the server outlives a drill).
    pub orphan_expiry: Duration,
}

pub struct CommandEnv {
    spec: CommandSpec,
    /// `postgres` or `mariadb`: what the drill needs.
    kind: String,
    drill_id: String,
    dir: Option<tempfile::TempDir>,
    vars: Vec<(String, String)>,
    inner: Option<ScratchServer>,
    /// Stops a slow provisioning command on Ctrl-C (teardown always runs to completion).
    cancel: Option<Cancel>,
}

/// Splits the provisioning command's output into its `KEY=VALUE` lines.
pub fn parse_output(out: &str) -> Vec<(String, String)> {
    out.lines()
        .filter_map(|l| {
            let (k, v) = l.trim().split_once('=')?;
            let ok = !k.is_empty()
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !k.starts_with(|c: char| c.is_ascii_digit());
            ok.then(|| (k.to_ascii_lowercase(), v.trim().to_string()))
        })
        .collect()
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> EnvError {
    let path = path.to_path_buf();
    move |source| EnvError::Io { op, path, source }
}

fn write_vars(dir: &Path, vars: &[(String, String)]) -> Result<(), EnvError> {
    let p = dir.join(VARS_FILE);
    let text: String = vars
        .iter()
        .map(|(k, v)| format!("{k}={}\n", v.replace('\n', " ")))
        .collect();
    std::fs::write(&p, text).map_err(io_err("write", &p))
}

/// Runs `sh -c script` in `dir` with `vars`, within `timeout`. Returns whether it succeeded
/// (else the failure with the tail of its stderr) and its stdout (up to 1 MiB) either way:
/// a script that failed half-way may still have said what to tear down.
fn run_script(
    what: &str,
    script: &str,
    dir: &Path,
    vars: &[(String, String)],
    timeout: Duration,
    cancel: Option<&Cancel>,
) -> (Result<(), String>, String) {
    let mut cmd = crate::sys::process::command("sh");
    cmd.arg("-c")
        .arg(script)
        .current_dir(dir)
        .envs(vars.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let mut child = match ChildProc::spawn(cmd, what, "drill environment", vec![]) {
        Ok(c) => c,
        Err(e) => return (Err(e.to_string()), String::new()),
    };
    let mut stdout = child.take_stdout().expect("stdout piped");
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = (&mut stdout).take(1 << 20).read_to_end(&mut buf);
        // Drain the rest so the command never blocks on a full pipe.
        let _ = std::io::copy(&mut stdout, &mut std::io::sink());
        String::from_utf8_lossy(&buf).into_owned()
    });
    let res = child.finish_within_or_cancel(timeout, cancel);
    // A command that backgrounded a process holding stdout would keep the reader waiting:
    // its output so far is what counts once the command itself has finished.
    let out = wait_thread(reader, Duration::from_secs(5)).unwrap_or_default();
    let res = res.map_err(|e| match e {
        crate::Error::SourceFailed { detail, .. } => detail,
        crate::Error::Interrupted => format!("{what} interrupted (Ctrl-C or SIGTERM)"),
        e => e.to_string(),
    });
    (res, out)
}

fn wait_thread<T>(h: std::thread::JoinHandle<T>, limit: Duration) -> Option<T> {
    let deadline = Instant::now() + limit;
    while !h.is_finished() {
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    h.join().ok()
}

/// Runs the teardown command saved in an orphaned environment's directory (orphan sweep).
pub(crate) fn run_saved_teardown(dir: &Path) -> Result<(), String> {
    let script = std::fs::read_to_string(dir.join(TEARDOWN_FILE)).map_err(|e| e.to_string())?;
    let vars = std::fs::read_to_string(dir.join(VARS_FILE)).unwrap_or_default();
    let vars: Vec<(String, String)> = vars
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    run_script(
        "teardown command",
        &script,
        dir,
        &vars,
        SWEEP_TEARDOWN_TIMEOUT,
        None,
    )
    .0
}

impl CommandEnv {
    pub fn new(spec: CommandSpec, kind: &str, drill_id: &str) -> Self {
        CommandEnv {
            spec,
            kind: kind.to_string(),
            drill_id: drill_id.to_string(),
            dir: None,
            vars: Vec::new(),
            inner: None,
            cancel: None,
        }
    }

    /// Interrupts provisioning when `cancel` fires.
    pub fn with_cancel(mut self, cancel: Cancel) -> Self {
        self.cancel = Some(cancel);
        self
    }

    fn step(&self, step: &str, detail: impl Into<String>) -> EnvError {
        EnvError::Step {
            env: "command environment".into(),
            step: step.into(),
            detail: detail.into(),
        }
    }

    fn provision_inner(&mut self) -> Result<(), EnvError> {
        let started = Instant::now();
        let tmp = super::make_dir("command")?;
        let dir = tmp.path().to_path_buf();
        self.dir = Some(tmp);
        self.vars = vec![
            ("LIFEBOAT_DRILL_ID".into(), self.drill_id.clone()),
            ("LIFEBOAT_DRILL_KIND".into(), self.kind.clone()),
            ("LIFEBOAT_ENV_DIR".into(), dir.display().to_string()),
        ];
        // Saved first: if lifeboat dies from here on, the next sweep runs the teardown.
        let p = dir.join(TEARDOWN_FILE);
        std::fs::write(&p, &self.spec.teardown).map_err(io_err("write", &p))?;
        write_vars(&dir, &self.vars)?;

        let (res, out) = run_script(
            "provision command",
            &self.spec.provision,
            &dir,
            &self.vars,
            self.spec.timeout,
            self.cancel.as_ref(),
        );
        let printed = parse_output(&out);
        let mut url = None;
        let mut password = None;
        for (k, v) in printed {
            match k.as_str() {
                "password" => password = Some(Password(zeroize::Zeroizing::new(v))),
                _ => {
                    if k == "url" {
                        url = Some(v.clone());
                    }
                    self.vars
                        .push((format!("LIFEBOAT_ENV_{}", k.to_ascii_uppercase()), v));
                }
            }
        }
        write_vars(&dir, &self.vars)?;
        res.map_err(|e| self.step("provision command", e))?;
        let url = url.ok_or_else(|| {
            self.step(
                "provision command",
                "it printed no url=… line; print e.g. url=postgres://postgres@127.0.0.1:5432/postgres on stdout (and password=… if the server needs one)",
            )
        })?;
        let (scheme, server): (String, DbConn) = DbConn::parse_url(&url)
            .map_err(|e| self.step("provision command output", e.to_string()))?;
        if scheme != self.kind {
            return Err(self.step(
                "provision command output",
                format!(
                    "it printed a {scheme} URL, but the job is a {} job; start a {} server for LIFEBOAT_DRILL_KIND={}",
                    self.kind, self.kind, self.kind
                ),
            ));
        }
        let spec = ScratchSpec {
            kind: scheme,
            server,
            bin_dir: self.spec.bin_dir.clone(),
            orphan_expiry: self.spec.orphan_expiry,
        };
        let left = self.spec.timeout.saturating_sub(started.elapsed());
        let mut inner = ScratchServer::new(spec, password, &self.drill_id, left).named("command");
        inner.provision()?;
        self.inner = Some(inner);
        Ok(())
    }
}

impl Environment for CommandEnv {
    fn kind(&self) -> &str {
        "command"
    }

    fn provision(&mut self) -> Result<(), EnvError> {
        if self.inner.is_some() {
            return Ok(());
        }
        for d in super::sweep_orphans() {
            tracing::warn!(dir = %d.display(), "removed a throwaway environment left by a dead process");
        }
        self.provision_inner()
    }

    fn connection(&self) -> Option<&ConnectionInfo> {
        self.inner.as_ref().and_then(|i| i.connection())
    }

    fn teardown(&mut self) -> Result<(), EnvError> {
        let mut first_err = None;
        if let Some(mut inner) = self.inner.take() {
            // The server is about to go; a failed DROP only matters if it outlives teardown.
            if let Err(e) = inner.teardown() {
                first_err = Some(e);
            }
        }
        let Some(dir) = self.dir.take() else {
            return first_err.map_or(Ok(()), Err);
        };
        match run_script(
            "teardown command",
            &self.spec.teardown,
            dir.path(),
            &self.vars,
            self.spec.timeout,
            None,
        )
        .0
        {
            Ok(_) => {
                super::remove_env_dir(Some(dir))?;
                first_err.map_or(Ok(()), Err)
            }
            Err(e) => {
                // Left in place: once this process is gone, the next sweep retries it.
                let p = dir.keep();
                Err(self.step(
                    "teardown command",
                    format!(
                        "{e}; what it provisioned may still exist: the next drill retries the teardown (saved in {}), or remove it by hand",
                        p.display()
                    ),
                ))
            }
        }
    }

    fn keep(&mut self) -> Option<String> {
        let inner = self.inner.as_mut()?;
        let db_note = inner.keep();
        self.inner = None;
        let dir = self.dir.take()?;
        let p = dir.path().display().to_string();
        let removal =
            format!("(cd {p} && env $(cat {VARS_FILE}) sh {TEARDOWN_FILE}) && rm -rf {p}");
        let note = super::keep_dir(dir, Some(removal));
        Some(match db_note {
            Some(n) => format!("{n}; server {note}"),
            None => note,
        })
    }
}

impl Drop for CommandEnv {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            tracing::error!(error = %e, "tearing down the command environment failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_lines_become_variables() {
        let v = parse_output(
            "Starting container...\nurl=postgres://postgres@127.0.0.1:5433/postgres\n  ID=abc123 \npassword=s3cret=x\n1bad=no\n= nothing\n",
        );
        assert_eq!(
            v,
            vec![
                (
                    "url".to_string(),
                    "postgres://postgres@127.0.0.1:5433/postgres".to_string()
                ),
                ("id".to_string(), "abc123".to_string()),
                ("password".to_string(), "s3cret=x".to_string()),
            ]
        );
    }
}
