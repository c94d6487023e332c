//! Child processes: dump and load tools (`pg_dump`, `mariadb-dump`, `pg_restore`, …), hooks,
//! volume tools and drill servers; tool lookup on PATH or a `bin_dir`; process liveness.
//!
//! Every child gets its own process group and `PR_SET_PDEATHSIG(SIGKILL)`, so a dump never
//! outlives lifeboat; its stderr is collected (the last few KiB, secrets redacted) for the
//! error message; dropping a [`ChildProc`] that was not waited for kills its group. A failed
//! or killed child always becomes [`Error::SourceFailed`] (exit 14).

use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::Cancel;
use crate::{Error, Result};

/// How much of a child's stderr is kept for the error message.
const STDERR_TAIL: usize = 4096;

/// Replaces every known secret in `text` with `<redacted>`.
pub fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| s.len() >= 3) {
        out = out.replace(s.as_str(), "<redacted>");
    }
    out
}

/// Inherited variables no child ever gets, whatever their value: lifeboat's own secrets
/// and where they are (SR-9). Variables the caller sets on the command itself (`PGPASSWORD`
/// for the `pg_dump` it starts) are the child's and are kept.
const SECRET_VARS: &[&str] = &[
    "LIFEBOAT_PASSWORD",
    "LIFEBOAT_PASSWORD_FILE",
    "LIFEBOAT_PASSWORD_COMMAND",
    "LIFEBOAT_CATALOG",
    "LIFEBOAT_TARGET_PASSWORD",
    "LIFEBOAT_TARGET_PASSWORD_FILE",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "PGPASSWORD",
    "MYSQL_PWD",
];

/// Parts of a variable name that mark it as a secret (`SHOP_DB_PASSWORD`, `API_TOKEN`, …).
const SECRET_MARKERS: &[&str] = &[
    "PASSWORD", "PASSWD", "SECRET", "TOKEN", "_PWD", "APIKEY", "API_KEY",
];

/// Whether an inherited variable carries a secret: by name (the list above, or a marker in
/// it), or by value (a URL with a password: `postgres://user:pw@host/db`).
pub fn is_secret_var(name: &std::ffi::OsStr, value: &std::ffi::OsStr) -> bool {
    let upper = name.to_string_lossy().to_ascii_uppercase();
    if SECRET_VARS.contains(&upper.as_str()) || SECRET_MARKERS.iter().any(|m| upper.contains(m)) {
        return true;
    }
    let v = value.to_string_lossy();
    v.split_whitespace().any(|word| {
        let Some((_, rest)) = word.split_once("://") else {
            return false;
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        authority
            .rsplit_once('@')
            .is_some_and(|(userinfo, _)| userinfo.contains(':'))
    })
}

/// The inherited variables to remove from a child's environment: every secret of
/// [`is_secret_var`] that the caller did not set on the command itself.
pub fn secret_vars_to_remove(
    inherited: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
    cmd: &Command,
) -> Vec<std::ffi::OsString> {
    let explicit: std::collections::HashSet<&std::ffi::OsStr> =
        cmd.get_envs().map(|(k, _)| k).collect();
    inherited
        .into_iter()
        .filter(|(k, v)| !explicit.contains(k.as_os_str()) && is_secret_var(k, v))
        .map(|(k, _)| k)
        .collect()
}

/// Removes from `cmd`'s environment every inherited secret it was not given on purpose
/// (SR-9, SR-10): a hook that logs `env`, or a dump tool's crash report, must not carry the
/// repository password, S3 keys or a catalog URL with its password.
pub fn scrub_env(cmd: &mut Command) {
    for k in secret_vars_to_remove(std::env::vars_os(), cmd) {
        cmd.env_remove(k);
    }
}

/// A `Command` for `program` whose environment has lost lifeboat's secrets ([`scrub_env`]);
/// what the caller sets afterwards (a `PGPASSWORD` it means to pass) is kept. Every child
/// lifeboat starts is made here or goes through [`isolate`].
pub fn command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new(program);
    scrub_env(&mut c);
    c
}

/// Puts the child in its own process group, ties its life to ours, and removes inherited
/// secrets from its environment ([`scrub_env`]).
pub fn isolate(cmd: &mut Command) {
    scrub_env(cmd);
    cmd.process_group(0);
    // SAFETY: prctl is async-signal-safe; called between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// Finds `tool` in `bin_dir` (when given) or on PATH.
pub fn find_tool(tool: &str, bin_dir: Option<&std::path::Path>) -> Option<std::path::PathBuf> {
    if let Some(d) = bin_dir {
        let p = d.join(tool);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// What `tool --version` says about itself, its first line (`pg_dump (PostgreSQL) 15.14`,
/// `mariadb-dump from 11.8.3-MariaDB, client 10.19`): recorded as evidence of which tool
/// wrote or loaded a dump. `None` when the tool cannot be run or says nothing.
pub fn tool_version(tool: &std::path::Path) -> Option<String> {
    let out = command(tool)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    // Some clients print their full path first (`/usr/bin/mariadb from 11.8…`): the name
    // is enough, and a path says nothing the report needs.
    let line = match line.split_once(' ') {
        Some((first, rest)) if first.contains('/') => {
            let name = first.rsplit('/').next().unwrap_or(first);
            format!("{name} {rest}")
        }
        _ => line.to_string(),
    };
    Some(line)
}

/// The first of `tools` that exists, or a SourceFailed error naming them all.
pub fn require_tool(
    source: &str,
    tools: &[&str],
    bin_dir: Option<&std::path::Path>,
) -> Result<std::path::PathBuf> {
    tools.iter().find_map(|t| find_tool(t, bin_dir)).ok_or_else(|| Error::source_failed(source, format!(
            "{} not found {}; install the client tools (e.g. `apt-get install postgresql-client` or `mariadb-client`) or set bin_dir in the plan",
            tools.join(" / "),
            match bin_dir {
                Some(d) => format!("in {}", d.display()),
                None => "on PATH".into(),
            }
        )))
}

/// Process groups of the children [`ChildProc`] started and has not yet waited for. The
/// owner kills its group when it is done or cancelled, but a process that exits while an
/// owner is still blocked (the runtime's shutdown gives up on blocking tasks after a few
/// seconds) would leave the group behind: the direct child dies with lifeboat
/// (`PR_SET_PDEATHSIG`), its own children (the other side of a dump wrapper's pipe, say) do
/// not. [`kill_unwaited`] kills them as lifeboat exits.
static UNWAITED: Mutex<Vec<i32>> = Mutex::new(Vec::new());

fn unwaited() -> std::sync::MutexGuard<'static, Vec<i32>> {
    UNWAITED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Kills the process group of every child still running unwaited (see [`UNWAITED`]); called
/// as lifeboat exits.
pub fn kill_unwaited() {
    kill_groups(std::mem::take(&mut *unwaited()));
}

fn kill_groups(groups: Vec<i32>) {
    for group in groups {
        // SAFETY: kill(2) on a group whose leader is our unreaped child.
        unsafe {
            libc::kill(-group, libc::SIGKILL);
        }
    }
}

/// A running child with stderr captured in the background.
pub struct ChildProc {
    pub name: String,
    source: String,
    child: Option<Child>,
    stderr: Arc<Mutex<Vec<u8>>>,
    keep: usize,
    stderr_thread: Option<JoinHandle<()>>,
    secrets: Vec<String>,
}

impl ChildProc {
    /// Spawns `cmd` with stdout and stdin as configured by the caller and stderr captured.
    /// `source` names the job or source for error messages; `secrets` are redacted.
    pub fn spawn(
        cmd: Command,
        name: &str,
        source: &str,
        secrets: Vec<String>,
    ) -> Result<ChildProc> {
        Self::spawn_keeping(cmd, name, source, secrets, STDERR_TAIL)
    }

    /// Like [`ChildProc::spawn`], keeping the last `keep` bytes of stderr (for callers that
    /// sift through all of a tool's error lines).
    pub fn spawn_keeping(
        mut cmd: Command,
        name: &str,
        source: &str,
        secrets: Vec<String>,
        keep: usize,
    ) -> Result<ChildProc> {
        isolate(&mut cmd);
        cmd.stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::source_failed(source, format!("cannot start {name}: {e}")))?;
        unwaited().push(child.id() as i32);
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut pipe = child.stderr.take().expect("stderr piped");
        let buf = stderr.clone();
        let stderr_thread = std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            loop {
                let n = match pipe.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                let mut b = buf.lock().expect("stderr buffer");
                b.extend_from_slice(&chunk[..n]);
                if b.len() > 2 * keep {
                    let cut = b.len() - keep;
                    b.drain(..cut);
                }
            }
        });
        Ok(ChildProc {
            name: name.into(),
            source: source.into(),
            child: Some(child),
            stderr,
            keep,
            stderr_thread: Some(stderr_thread),
            secrets,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Kills the child's process group as soon as `cancel` fires (Ctrl-C), even while the
    /// caller is blocked reading from it. Drop the watch before waiting for the child.
    pub fn watch_cancel(&self, cancel: &Cancel) -> CancelWatch {
        let pid = self.pid() as i32;
        let done = Arc::new(AtomicBool::new(false));
        let (d, cancel) = (done.clone(), cancel.clone());
        let thread = std::thread::spawn(move || {
            while !d.load(Ordering::SeqCst) {
                if cancel.is_cancelled() {
                    // SAFETY: kill(2) on the group created for this child, still unreaped
                    // (the watch is dropped before the child is waited for).
                    unsafe {
                        libc::kill(-pid, libc::SIGKILL);
                    }
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        CancelWatch {
            done,
            thread: Some(thread),
        }
    }

    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.as_mut().and_then(|c| c.stdout.take())
    }

    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.child.as_mut().and_then(|c| c.stdin.take())
    }

    /// The last lines of stderr (at most the kept bytes), with secrets redacted.
    pub fn stderr_tail(&self) -> String {
        let b = self.stderr.lock().expect("stderr buffer");
        let start = b.len().saturating_sub(self.keep);
        let text = String::from_utf8_lossy(&b[start..]).trim().to_string();
        redact(&text, &self.secrets)
    }

    /// Kills the whole process group (idempotent).
    pub fn kill(&mut self) {
        if let Some(c) = self.child.as_mut() {
            // SAFETY: plain kill(2) on the group we created for this child.
            unsafe {
                libc::kill(-(c.id() as i32), libc::SIGKILL);
            }
            let _ = c.kill();
        }
    }

    /// Waits for the child and turns anything but exit 0 into SourceFailed.
    pub fn finish(mut self) -> Result<()> {
        let status = self.wait_status()?;
        self.check(status)
    }

    /// Like [`ChildProc::finish`], also returning all the stderr that was kept (read to the
    /// end: the child has exited and its stderr reader has finished).
    pub fn finish_with_stderr(mut self) -> (Result<()>, String) {
        let status = self.wait_status();
        let tail = self.stderr_tail();
        (status.and_then(|s| self.check(s)), tail)
    }

    /// Waits at most `timeout`; kills the group when it expires.
    pub fn finish_within(self, timeout: Duration) -> Result<()> {
        self.finish_within_or_cancel(timeout, None)
    }

    /// Like [`ChildProc::finish_within`], also killing the group (and returning
    /// `Interrupted`) as soon as `cancel` fires.
    /// Whether the child has exited (its status is kept for [`ChildProc::finish`]).
    pub fn has_exited(&mut self) -> bool {
        self.child.as_mut().is_none_or(|c| {
            let exited = matches!(c.try_wait(), Ok(Some(_)));
            if exited {
                // Reaped: its pid may be reused from now on.
                forget_unwaited(c.id());
            }
            exited
        })
    }

    pub fn finish_within_or_cancel(
        mut self,
        timeout: Duration,
        cancel: Option<&Cancel>,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let c = self.child.as_mut().expect("child present until waited");
            match c.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if cancel.is_some_and(|c| c.is_cancelled()) => {
                    self.kill();
                    let _ = self.wait_status();
                    return Err(Error::Interrupted);
                }
                Ok(None) if Instant::now() >= deadline => {
                    self.kill();
                    let _ = self.wait_status();
                    return Err(self.failure(format!(
                        "{} did not finish within {} and was killed",
                        self.name,
                        humantime::format_duration(timeout)
                    )));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => return Err(self.failure(format!("cannot wait for {}: {e}", self.name))),
            }
        }
        let status = self.wait_status()?;
        self.check(status)
    }

    fn wait_status(&mut self) -> Result<ExitStatus> {
        let c = self.child.as_mut().expect("child present until waited");
        let status = c.wait().map_err(|e| {
            Error::source_failed(
                self.source.clone(),
                format!("cannot wait for {}: {e}", self.name),
            )
        })?;
        forget_unwaited(c.id());
        self.child = None;
        if let Some(t) = self.stderr_thread.take() {
            let _ = t.join();
        }
        Ok(status)
    }

    fn check(&self, status: ExitStatus) -> Result<()> {
        if status.success() {
            return Ok(());
        }
        let how = match (status.code(), status.signal()) {
            (Some(c), _) => format!("exited with status {c}"),
            (None, Some(s)) => format!("was killed by signal {s}"),
            _ => "failed".into(),
        };
        Err(self.failure(format!("{} {how}", self.name)))
    }

    /// A SourceFailed error carrying `what` and the redacted stderr tail.
    pub fn failure(&self, what: String) -> Error {
        let tail = self.stderr_tail();
        Error::source_failed(
            self.source.clone(),
            if tail.is_empty() {
                what
            } else {
                format!("{what}; its stderr ends with:\n{tail}")
            },
        )
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.kill();
            if let Some(c) = self.child.as_mut() {
                let _ = c.wait();
                forget_unwaited(c.id());
            }
        }
    }
}

fn forget_unwaited(pid: u32) {
    unwaited().retain(|&g| g != pid as i32);
}

/// Stops watching for cancellation when dropped (see [`ChildProc::watch_cancel`]).
pub struct CancelWatch {
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for CancelWatch {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Whether a process with this pid is alive.
pub fn pid_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence and permission.
    unsafe {
        libc::kill(pid, 0) == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_child_reports_status_and_redacted_stderr() {
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "echo 'connect failed for password hunter22' >&2; exit 3",
        ]);
        let p = ChildProc::spawn(cmd, "fake-dump", "job x", vec!["hunter22".into()]).unwrap();
        let e = p.finish().unwrap_err();
        let s = e.to_string();
        assert!(matches!(e, Error::SourceFailed { .. }));
        assert!(s.contains("exited with status 3"), "{s}");
        assert!(s.contains("<redacted>") && !s.contains("hunter22"), "{s}");
    }

    #[test]
    fn inherited_secrets_are_removed_and_explicit_ones_kept() {
        let inherited: Vec<(std::ffi::OsString, std::ffi::OsString)> = [
            ("LIFEBOAT_PASSWORD", "repo-pw"),
            ("AWS_SECRET_ACCESS_KEY", "aws-secret"),
            ("AWS_ACCESS_KEY_ID", "GK123"),
            ("SHOP_DB_PASSWORD", "db-pw"),
            ("GITHUB_TOKEN", "ghp_x"),
            ("DATABASE_URL", "postgres://app:s3cret@db:5432/app"),
            ("PGPASSWORD", "catalog-pw"),
            ("PATH", "/usr/bin:/bin"),
            ("HOME", "/root"),
            ("MY_URL", "https://example.com/x@y"),
            ("PGHOST", "db"),
        ]
        .iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
        let mut cmd = Command::new("pg_dump");
        cmd.env("PGPASSWORD", "the-dumps-own");
        let mut removed: Vec<String> = secret_vars_to_remove(inherited, &cmd)
            .into_iter()
            .map(|k| k.into_string().unwrap())
            .collect();
        removed.sort();
        assert_eq!(
            removed,
            [
                "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY",
                "DATABASE_URL",
                "GITHUB_TOKEN",
                "LIFEBOAT_PASSWORD",
                "SHOP_DB_PASSWORD"
            ]
        );
    }

    #[test]
    fn timeout_kills_the_group() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 30 & sleep 30"]);
        let p = ChildProc::spawn(cmd, "slow", "hook", vec![]).unwrap();
        let t = Instant::now();
        let e = p.finish_within(Duration::from_millis(300)).unwrap_err();
        assert!(e.to_string().contains("did not finish within"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn children_still_unwaited_at_exit_are_killed_with_their_group() {
        // A child whose own child (the grandchild) would outlive it: its group is killed
        // (as `kill_unwaited` kills every group still registered); a child that was waited
        // for is forgotten.
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("grandchild");
        let mut cmd = command("sh");
        cmd.arg("-c")
            .arg(format!("sleep 30 & echo $! > {}; wait", pidfile.display()))
            .stdout(Stdio::null());
        let running = ChildProc::spawn(cmd, "sh", "test", vec![]).unwrap();
        let mut done = command("true");
        done.stdout(Stdio::null());
        let done = ChildProc::spawn(done, "true", "test", vec![]).unwrap();
        let done_pid = done.pid() as i32;
        done.finish().unwrap();
        assert!(!unwaited().contains(&done_pid));
        let t0 = Instant::now();
        let grandchild = loop {
            if let Some(p) = std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
            {
                break p;
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "no grandchild");
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(pid_alive(grandchild));
        let group = running.pid() as i32;
        assert!(unwaited().contains(&group));
        // (`kill_unwaited` itself would kill the other tests' children too: this group only.)
        unwaited().retain(|&g| g != group);
        kill_groups(vec![group]);
        // The grandchild is not ours to reap: it goes once init has reaped it.
        let t0 = Instant::now();
        while pid_alive(grandchild) {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "the grandchild survived"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(running);
    }
}
