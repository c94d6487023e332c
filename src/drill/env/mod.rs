//! Throwaway environments: a database server (or directory) that exists only for one drill
//! or test and is always torn down — on success, on error, on panic (a drop guard), and by
//! [`sweep_orphans`] when the process that made it was killed outright.
//!
//! Each environment lives in a temporary directory named `lifeboat-env-<kind>-…` holding an
//! `owner.pid` file (the creating process) and a `server.pgid` file (the server's process
//! group), which is all an orphan sweep needs. Servers run in their own process group, so
//! teardown kills the whole group.

pub mod command;
pub mod ephemeral_mariadb;
pub mod ephemeral_postgres;
pub mod scratch;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use command::{CommandEnv, CommandSpec};
pub use ephemeral_mariadb::EphemeralMariadb;
pub use ephemeral_postgres::EphemeralPostgres;
pub use scratch::{ScratchServer, ScratchSpec};

use super::sql::SqlConn;
use crate::repo::snapshot::DbKind;
use crate::source::db::DbConn;

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

use super::sql::Password;

/// How to reach a provisioned server. Ephemeral servers use local trust/socket
/// authentication and no password; scratch and command environments may carry one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// `postgres` or `mariadb`
    pub kind: String,
    /// TCP host (127.0.0.1 for the servers lifeboat starts itself).
    pub host: String,
    pub port: u16,
    /// PostgreSQL: the socket directory; MariaDB: the socket file. `None`: TCP only.
    pub socket: Option<PathBuf>,
    pub user: String,
    /// Directory with the server's client tools matching its version, when known.
    pub bin_dir: Option<PathBuf>,
    pub password: Option<Password>,
    /// The database a drill must restore into, when the environment dictates it (scratch
    /// and command environments: `lifeboat_drill_<id>`, dropped at teardown).
    pub database: Option<String>,
}

impl ConnectionInfo {
    pub fn db_kind(&self) -> DbKind {
        if self.kind == "postgres" {
            DbKind::Postgres
        } else {
            DbKind::Mariadb
        }
    }

    /// PostgreSQL's `host`: the socket directory when there is one, else the TCP host.
    fn pg_host(&self) -> String {
        match &self.socket {
            Some(s) => s.display().to_string(),
            None => self.host.clone(),
        }
    }

    /// A `--to` URL for `database` (over the socket when there is one).
    pub fn url(&self, database: &str) -> String {
        match (self.kind.as_str(), &self.socket) {
            ("postgres", Some(s)) => format!(
                "postgres://{}@/{database}?host={}&port={}",
                self.user,
                s.display(),
                self.port
            ),
            ("postgres", None) => {
                format!(
                    "postgres://{}@{}:{}/{database}",
                    self.user, self.host, self.port
                )
            }
            (_, Some(s)) => format!("mariadb://{}@/{database}?socket={}", self.user, s.display()),
            (_, None) => {
                format!(
                    "mariadb://{}@{}:{}/{database}",
                    self.user, self.host, self.port
                )
            }
        }
    }

    /// The restore target for `database` on this server (the password travels separately).
    pub fn db_conn(&self, database: &str) -> DbConn {
        let pg = self.db_kind() == DbKind::Postgres;
        DbConn {
            host: if pg || self.socket.is_none() {
                Some(self.pg_host())
            } else {
                None
            },
            port: Some(self.port),
            socket: if pg { None } else { self.socket.clone() },
            user: Some(self.user.clone()),
            database: database.to_string(),
            password: None,
        }
    }

    /// A SQL client for `database` on this server.
    pub fn sql_conn(&self, database: &str) -> SqlConn {
        let kind = self.db_kind();
        SqlConn {
            kind,
            host: match kind {
                DbKind::Postgres => self.pg_host(),
                DbKind::Mariadb => self.host.clone(),
            },
            port: self.port,
            socket: match kind {
                DbKind::Postgres => None,
                DbKind::Mariadb => self.socket.clone(),
            },
            user: self.user.clone(),
            database: database.to_string(),
            bin_dir: self.bin_dir.clone(),
            password: self.password.clone(),
        }
    }

    /// The client environment command checks get (libpq's `PG*`, the MariaDB client's
    /// `MYSQL_*`), so `psql`/`mariadb` with no arguments reach the restored database.
    pub fn client_env(&self, database: &str) -> Vec<(String, String)> {
        let mut env = vec![("LIFEBOAT_DRILL_DATABASE".to_string(), database.to_string())];
        match self.db_kind() {
            DbKind::Postgres => {
                env.extend([
                    ("PGHOST".to_string(), self.pg_host()),
                    ("PGPORT".to_string(), self.port.to_string()),
                    ("PGUSER".to_string(), self.user.clone()),
                    ("PGDATABASE".to_string(), database.to_string()),
                ]);
                if let Some(p) = &self.password {
                    env.push(("PGPASSWORD".into(), p.as_str().to_string()));
                }
            }
            DbKind::Mariadb => {
                if let Some(s) = &self.socket {
                    env.push(("MYSQL_UNIX_PORT".into(), s.display().to_string()));
                } else {
                    env.push(("MYSQL_HOST".into(), self.host.clone()));
                }
                env.push(("MYSQL_TCP_PORT".into(), self.port.to_string()));
                env.push(("USER".into(), self.user.clone()));
                if let Some(p) = &self.password {
                    env.push(("MYSQL_PWD".into(), p.as_str().to_string()));
                }
            }
        }
        env
    }

    /// The command line that reaches `database` (no password in it).
    pub fn connect_hint(&self, database: &str) -> String {
        match self.db_kind() {
            DbKind::Postgres => format!(
                "{} -h {} -p {} -U {} -d {database}",
                self.bin_dir
                    .as_ref()
                    .map(|b| b.join("psql").display().to_string())
                    .unwrap_or_else(|| "psql".into()),
                self.pg_host(),
                self.port,
                self.user
            ),
            DbKind::Mariadb => match &self.socket {
                Some(s) => format!(
                    "mariadb --no-defaults --socket={} -u{} {database}",
                    s.display(),
                    self.user
                ),
                None => format!(
                    "mariadb --no-defaults -h {} -P {} -u{} -p {database}",
                    self.host, self.port, self.user
                ),
            },
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
    /// Returns how to remove it by hand; `None` when nothing is running.
    fn keep(&mut self) -> Option<String>;
    /// The last lines of the server's own log, when lifeboat runs the server: why a load
    /// failed is often only there (a server that ran out of disk just drops the connection).
    fn server_log_tail(&self) -> Option<String> {
        None
    }
}

/// Detaches a running environment: no owner any more (so [`sweep_orphans`] leaves it alone)
/// and a `KEPT` note saying how to remove it (`removal`, else stopping its server group and
/// deleting the directory). Returns the note.
pub(crate) fn keep_dir(dir: tempfile::TempDir, removal: Option<String>) -> String {
    let p = dir.keep();
    let _ = std::fs::remove_file(p.join("owner.pid"));
    let removal = removal.unwrap_or_else(|| {
        format!(
            "kill -TERM -- -$(cat {0}/server.pgid); rm -rf {0}",
            p.display()
        )
    });
    let note = format!("kept in {}; remove it with: {removal}", p.display());
    let _ = std::fs::write(
        p.join("KEPT"),
        format!("kept by lifeboat drill --keep; {note}\n"),
    );
    note
}

/// A labelled temporary directory with an owner pid file.
pub(crate) fn make_dir(kind: &str) -> Result<tempfile::TempDir, EnvError> {
    let dir = tempfile::Builder::new()
        .prefix(&format!("{DIR_PREFIX}{kind}-"))
        // Private: what lands here is a copy of production data (and, for servers, a
        // socket that trusts whoever reaches it).
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
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

/// The server of an environment runs as [`SERVER_USER`] when lifeboat runs as root: it must
/// be able to enter every directory above its environment directory (TMPDIR's mode and
/// owner decide). Checked up front, so the drill says what is needed instead of the server
/// failing with "permission denied" in its log. Also makes the environment's own temporary
/// directory (`<env>/tmp`), which the server uses instead of TMPDIR.
pub(crate) fn server_dirs(dir: &Path) -> Result<PathBuf, EnvError> {
    use std::os::unix::fs::MetadataExt;
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).map_err(|e| EnvError::Io {
        op: "create",
        path: tmp.clone(),
        source: e,
    })?;
    if !is_root() {
        return Ok(tmp);
    }
    let (uid, gid) = server_user()?;
    for a in dir.ancestors().skip(1) {
        let Ok(m) = std::fs::metadata(a) else {
            continue;
        };
        let mode = m.mode();
        let enter = if m.uid() == uid {
            mode & 0o100 != 0
        } else if m.gid() == gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !enter {
            return Err(EnvError::Step {
                env: "throwaway server".into(),
                step: "check the temporary directory".into(),
                detail: format!(
                    "{} (mode {:o}, owner uid {}) cannot be entered by the server user {SERVER_USER}, which runs the throwaway server inside it; point TMPDIR at a directory others may enter (mode 0711, 0755 or 1777, e.g. /var/tmp), or run the drill with PrivateTmp=yes",
                    a.display(),
                    mode & 0o7777,
                    m.uid()
                ),
            });
        }
    }
    Ok(tmp)
}

/// Where initialised data directories are kept, one per engine and server binary
/// (`$TMPDIR/lifeboat-templates/<engine>-<version key>/data`): the same file system as the
/// environments, so a copy can be a reflink. Never swept as an orphan (another prefix).
pub(crate) const TEMPLATE_DIR: &str = "lifeboat-templates";

/// A key that changes whenever the server binary does (an upgrade): its size and mtime.
pub(crate) fn binary_key(binary: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(binary) {
        Ok(m) => format!("{:x}-{:x}", m.size(), m.mtime()),
        Err(_) => "unknown".into(),
    }
}

/// Fills `data` (which must not exist) with an initialised data directory: a copy of the
/// template for `name` (`engine-version`), made first by `init` when there is none yet.
/// `init` gets the directory to initialise, inside a staging directory owned by the server
/// user; a template is published only when `init` succeeded (rename, so concurrent drills
/// never see half of one). Any problem with the template falls back to `init` into `data`
/// directly. Returns whether a template was used.
pub(crate) fn init_from_template(
    name: &str,
    data: &Path,
    init: &dyn Fn(&Path) -> Result<(), EnvError>,
) -> Result<bool, EnvError> {
    match copy_template(name, data, init) {
        Ok(()) => Ok(true),
        Err(e) => {
            tracing::warn!(template = name, error = %e, "no data directory template; initialising from scratch");
            let _ = std::fs::remove_dir_all(data);
            init(data).map(|()| false)
        }
    }
}

fn copy_template(
    name: &str,
    data: &Path,
    init: &dyn Fn(&Path) -> Result<(), EnvError>,
) -> Result<(), EnvError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |e| EnvError::Io {
            op,
            path: path.clone(),
            source: e,
        }
    };
    let root = std::env::temp_dir().join(TEMPLATE_DIR);
    std::fs::create_dir_all(&root).map_err(io("create", &root))?;
    // Others may pass through (the server user initialises inside), not list.
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o711))
        .map_err(io("chmod", &root))?;
    let template = root.join(name);
    if !template.join("ready").exists() {
        let staging = tempfile::Builder::new()
            .prefix(".staging-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir_in(&root)
            .map_err(io("create", &root))?;
        if is_root() {
            let (uid, gid) = server_user()?;
            chown_recursive(staging.path(), uid, gid)?;
        }
        init(&staging.path().join("data"))?;
        std::fs::write(staging.path().join("ready"), b"").map_err(io("write", staging.path()))?;
        let staged = staging.keep();
        if std::fs::rename(&staged, &template).is_err() {
            // Another drill published one first: use that.
            let _ = std::fs::remove_dir_all(&staged);
        }
    }
    let out = crate::sys::process::command("cp")
        .args(["-a", "--reflink=auto"])
        .arg(template.join("data"))
        .arg(data)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(io("run cp", data))?;
    if !out.status.success() {
        return Err(EnvError::Step {
            env: name.into(),
            step: "copy the data directory template".into(),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
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
    let out = crate::sys::process::command("useradd")
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
        if crate::sys::process::pid_alive(owner) {
            continue;
        }
        if let Some(pgid) = read_num("server.pgid") {
            kill_group(pgid);
        }
        if dir.join(command::TEARDOWN_FILE).exists() {
            // A command environment: its own teardown command removes what it provisioned.
            if let Err(e) = command::run_saved_teardown(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "the teardown command of an orphaned command environment failed; it is retried by the next sweep");
                continue;
            }
        }
        if std::fs::remove_dir_all(&dir).is_ok() {
            removed.push(dir);
        }
    }
    removed
}
