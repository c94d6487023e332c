//! Throwaway environments: a database server (or directory) that exists only for one drill
//! or test and is always torn down — on success, on error, on panic (a drop guard), and by
//! [`sweep_orphans`] when the process that made it was killed outright.
//!
//! Each environment lives in a temporary directory named `lifeboat-env-<kind>-…` holding an
//! `owner.pid` file (the creating process) and a `server.pgid` file (the server's process
//! group), which is all an orphan sweep needs. Servers run in their own process group, so
//! teardown kills the whole group.

pub mod ephemeral_mariadb;
pub mod ephemeral_postgres;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use ephemeral_mariadb::EphemeralMariadb;
pub use ephemeral_postgres::EphemeralPostgres;

/// Prefix of every environment's temporary directory.
pub const DIR_PREFIX: &str = "lifeboat-env-";
/// The unprivileged user servers run as when lifeboat runs as root (initdb refuses root).
pub const SERVER_USER: &str = "lifeboat-test";

#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("{what} not found: {hint}")]
    ToolMissing { what: String, hint: String },
    #[error("{env}: {step} failed: {detail}")]
    Step {
        env: String,
        step: String,
        detail: String,
    },
    #[error("{env}: server did not become ready within {secs}s; its log ends with:\n{log}")]
    NotReady { env: String, secs: u64, log: String },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl From<EnvError> for crate::Error {
    fn from(e: EnvError) -> Self {
        crate::Error::Other(e.to_string())
    }
}

/// How to reach a provisioned server. No password: environments use local trust/socket
/// authentication and never leave the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// `postgres` or `mariadb`
    pub kind: String,
    /// TCP host (always 127.0.0.1).
    pub host: String,
    pub port: u16,
    /// PostgreSQL: the socket directory; MariaDB: the socket file.
    pub socket: PathBuf,
    pub user: String,
    /// Directory with the server's client tools matching its version, when known.
    pub bin_dir: Option<PathBuf>,
}

impl ConnectionInfo {
    /// A `--to` URL for `database` over the socket.
    pub fn url(&self, database: &str) -> String {
        match self.kind.as_str() {
            "postgres" => format!(
                "postgres://{}@/{database}?host={}&port={}",
                self.user,
                self.socket.display(),
                self.port
            ),
            _ => format!(
                "mariadb://{}@/{database}?socket={}",
                self.user,
                self.socket.display()
            ),
        }
    }
}

/// A throwaway environment. `teardown` is idempotent and also runs on drop.
pub trait Environment: Send {
    fn kind(&self) -> &str;
    /// Starts the server; returns when it accepts connections.
    fn provision(&mut self) -> Result<(), EnvError>;
    /// Connection details; `None` before `provision` succeeded.
    fn connection(&self) -> Option<&ConnectionInfo>;
    /// Stops the server (its whole process group) and removes its files.
    fn teardown(&mut self) -> Result<(), EnvError>;
    /// Leaves the server running and its files in place (`lifeboat drill --keep`): the
    /// environment forgets it, drop no longer tears it down, and orphan sweeps skip it.
    /// Returns its directory (which holds `server.pgid`); `None` when nothing is running.
    fn keep(&mut self) -> Option<PathBuf>;
}

/// Detaches a running environment: no owner any more (so [`sweep_orphans`] leaves it alone)
/// and a `KEPT` note saying how to remove it.
pub(crate) fn keep_dir(dir: tempfile::TempDir) -> PathBuf {
    let p = dir.keep();
    let _ = std::fs::remove_file(p.join("owner.pid"));
    let _ = std::fs::write(
        p.join("KEPT"),
        format!(
            "kept by lifeboat drill --keep; remove with: kill -TERM -- -$(cat {0}/server.pgid); rm -rf {0}\n",
            p.display()
        ),
    );
    p
}

/// A labelled temporary directory with an owner pid file.
pub(crate) fn make_dir(kind: &str) -> Result<tempfile::TempDir, EnvError> {
    let dir = tempfile::Builder::new()
        .prefix(&format!("{DIR_PREFIX}{kind}-"))
        .tempdir()
        .map_err(|e| EnvError::Io {
            op: "create",
            path: std::env::temp_dir(),
            source: e,
        })?;
    let pidfile = dir.path().join("owner.pid");
    std::fs::write(&pidfile, std::process::id().to_string()).map_err(|e| EnvError::Io {
        op: "write",
        path: pidfile,
        source: e,
    })?;
    Ok(dir)
}

/// A TCP port that was free a moment ago (the server binding it may still race another
/// process; provisioning retries on a new port when that happens).
pub fn free_port() -> Result<u16, EnvError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| EnvError::Io {
        op: "bind",
        path: "127.0.0.1:0".into(),
        source: e,
    })?;
    l.local_addr().map(|a| a.port()).map_err(|e| EnvError::Io {
        op: "bind",
        path: "127.0.0.1:0".into(),
        source: e,
    })
}

pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no failure mode.
    unsafe { libc::geteuid() == 0 }
}

/// Makes sure the unprivileged server user exists (root only); returns its uid and gid.
pub(crate) fn server_user() -> Result<(u32, u32), EnvError> {
    let lookup = || -> Option<(u32, u32)> {
        let name = std::ffi::CString::new(SERVER_USER).ok()?;
        // SAFETY: getpwnam returns a pointer into static storage or null; read at once.
        let pw = unsafe { libc::getpwnam(name.as_ptr()) };
        (!pw.is_null()).then(|| unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
    };
    if let Some(ids) = lookup() {
        return Ok(ids);
    }
    let out = std::process::Command::new("useradd")
        .args(["-r", "-M", "-s", "/usr/sbin/nologin", SERVER_USER])
        .output()
        .map_err(|e| EnvError::ToolMissing {
            what: "useradd".into(),
            hint: format!("{e}; create the user {SERVER_USER} by hand"),
        })?;
    // Another test may have created it concurrently: look again before failing.
    lookup().ok_or_else(|| EnvError::Step {
        env: "server user".into(),
        step: format!("useradd {SERVER_USER}"),
        detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

pub(crate) fn chown_recursive(p: &Path, uid: u32, gid: u32) -> Result<(), EnvError> {
    let io = |e| EnvError::Io {
        op: "chown",
        path: p.to_path_buf(),
        source: e,
    };
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).map_err(io)?;
    if p.is_dir() && !p.is_symlink() {
        for e in std::fs::read_dir(p).map_err(io)? {
            chown_recursive(&e.map_err(io)?.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// Stops a server that runs in its own process group: `signal` to the group, up to `grace`
/// for the server to exit, then SIGKILL to whatever is left of the group.
pub(crate) fn stop_group(child: Option<std::process::Child>, signal: i32, grace: Duration) {
    let Some(mut child) = child else { return };
    let pgid = child.id() as i32;
    // SAFETY: kill(2) on the group created for this server.
    unsafe {
        libc::kill(-pgid, signal);
    }
    let exited = wait_until(grace, || matches!(child.try_wait(), Ok(Some(_))));
    kill_group(pgid);
    if !exited {
        let _ = child.wait();
    }
}

/// Removes an environment's directory (idempotent: `None` when already removed or kept).
pub(crate) fn remove_env_dir(dir: Option<tempfile::TempDir>) -> Result<(), EnvError> {
    let Some(d) = dir else { return Ok(()) };
    let p = d.path().to_path_buf();
    d.close().map_err(|e| EnvError::Io {
        op: "remove",
        path: p,
        source: e,
    })
}

/// Kills a process group (ignores a group that is already gone).
pub(crate) fn kill_group(pgid: i32) {
    if pgid > 1 {
        // SAFETY: kill(2) on a group id we created.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

/// Waits until `ready()` holds or `timeout` passes.
pub(crate) fn wait_until(timeout: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if ready() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    ready()
}

pub(crate) fn log_tail(p: &Path) -> String {
    let s = std::fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Removes environments whose owning process is gone: kills their server's process group
/// and deletes the directory. Returns the directories removed.
pub fn sweep_orphans() -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(rd) = std::fs::read_dir(std::env::temp_dir()) else {
        return removed;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with(DIR_PREFIX) {
            continue;
        }
        let dir = e.path();
        let read_num = |f: &str| {
            std::fs::read_to_string(dir.join(f))
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
        };
        let Some(owner) = read_num("owner.pid") else {
            continue;
        };
        if crate::source::volume::pid_alive(owner) {
            continue;
        }
        if let Some(pgid) = read_num("server.pgid") {
            kill_group(pgid);
        }
        if std::fs::remove_dir_all(&dir).is_ok() {
            removed.push(dir);
        }
    }
    removed
}
