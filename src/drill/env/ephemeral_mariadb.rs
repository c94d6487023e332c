//! A throwaway MariaDB server: `mariadb-install-db` into a labelled temporary directory and
//! `mariadbd --no-defaults` on a free port (127.0.0.1) and a private socket, so nothing from
//! /etc/mysql leaks in. Run as the unprivileged `lifeboat-test` user when lifeboat is root.
//! `root` logs in over the socket without a password. Binary logging is off unless asked
//! for (a drill that checks binlog positions turns it on).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use super::{
    chown_recursive, free_port, is_root, kill_group, log_tail, make_dir, server_user, wait_until,
    ConnectionInfo, EnvError, Environment, SERVER_USER,
};
use crate::sys::process::find_tool;

const READY_TIMEOUT: Duration = Duration::from_secs(60);

pub struct EphemeralMariadb {
    log_bin: bool,
    /// Also listen on 127.0.0.1. Drills do not: root has no password there, and what the
    /// server holds is a copy of production; its socket directory is private (0700).
    tcp: bool,
    dir: Option<tempfile::TempDir>,
    child: Option<Child>,
    conn: Option<ConnectionInfo>,
}

fn tool(names: &[&str]) -> Result<PathBuf, EnvError> {
    names
        .iter()
        .find_map(|n| find_tool(n, None).or_else(|| find_tool(n, Some(Path::new("/usr/sbin")))))
        .ok_or_else(|| EnvError::ToolMissing {
            what: names.join(" / "),
            hint: "apt-get install mariadb-server (no service needs to run)".into(),
        })
}

impl EphemeralMariadb {
    /// A server reachable only through its private socket (what drills use).
    pub fn new(log_bin: bool) -> Self {
        EphemeralMariadb {
            log_bin,
            tcp: false,
            dir: None,
            child: None,
            conn: None,
        }
    }

    /// `new` + `provision`, also listening on 127.0.0.1: a general throwaway server (the test
    /// harness's sources).
    pub fn start(log_bin: bool) -> Result<Self, EnvError> {
        let mut e = Self::new(log_bin);
        e.tcp = true;
        e.provision()?;
        Ok(e)
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_ref().map(|d| d.path())
    }

    fn ping(admin: &Path, sock: &Path) -> bool {
        crate::sys::process::command(admin)
            .arg("--no-defaults")
            .arg(format!("--socket={}", sock.display()))
            .args(["-uroot", "ping"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }
}

impl Environment for EphemeralMariadb {
    fn kind(&self) -> &str {
        "ephemeral-mariadb"
    }

    fn provision(&mut self) -> Result<(), EnvError> {
        if self.conn.is_some() {
            return Ok(());
        }
        // Servers left by a killed test or drill would hold memory and ports forever.
        for d in super::sweep_orphans() {
            tracing::warn!(dir = %d.display(), "removed a throwaway environment left by a dead process");
        }
        let install = tool(&["mariadb-install-db", "mysql_install_db"])?;
        let server = tool(&["mariadbd", "mysqld"])?;
        let admin = tool(&["mariadb-admin", "mysqladmin"])?;
        let tmp = make_dir("mariadb")?;
        let dir = tmp.path().to_path_buf();
        self.dir = Some(tmp);
        let data = dir.join("data");
        let sock = dir.join("mysqld.sock");
        let log = dir.join("error.log");
        let user_arg = is_root().then(|| format!("--user={SERVER_USER}"));
        // Its own temporary directory: TMPDIR may be one the server user cannot write.
        let server_tmp = super::server_dirs(&dir)?;
        if is_root() {
            let (uid, gid) = server_user()?;
            chown_recursive(&dir, uid, gid)?;
        }
        // mariadb-install-db once per server binary; each drill copies (reflinks) the result.
        let install_db = |data: &Path| {
            let mut cmd = crate::sys::process::command(&install);
            cmd.arg("--no-defaults")
                .arg(format!("--datadir={}", data.display()))
                .args(user_arg.iter())
                .env("TMPDIR", &server_tmp)
                .args([
                    "--auth-root-authentication-method=normal",
                    "--skip-test-db",
                    "--skip-name-resolve",
                ])
                .stdin(Stdio::null());
            let out = cmd.output().map_err(|e| EnvError::Step {
                env: "ephemeral-mariadb".into(),
                step: "mariadb-install-db".into(),
                detail: e.to_string(),
            })?;
            if !out.status.success() {
                return Err(EnvError::Step {
                    env: "ephemeral-mariadb".into(),
                    step: "mariadb-install-db".into(),
                    detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                });
            }
            Ok(())
        };
        let template = format!("mariadb-{}", super::binary_key(&server));
        super::init_from_template(&template, &data, &install_db)?;
        if is_root() {
            let (uid, gid) = server_user()?;
            chown_recursive(&data, uid, gid)?;
        }
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port()?;
            let mut cmd = crate::sys::process::command(&server);
            cmd.arg("--no-defaults")
                .arg(format!("--datadir={}", data.display()))
                .arg(format!("--socket={}", sock.display()))
                .arg(format!("--port={port}"))
                .arg(if self.tcp {
                    "--bind-address=127.0.0.1"
                } else {
                    "--skip-networking"
                })
                .args(user_arg.iter())
                .arg(format!("--pid-file={}", dir.join("mariadbd.pid").display()))
                .arg(format!("--log-error={}", log.display()))
                .arg(format!("--tmpdir={}", server_tmp.display()))
                .args([
                    "--skip-name-resolve",
                    "--innodb-buffer-pool-size=64M",
                    "--innodb-flush-log-at-trx-commit=0",
                ]);
            if self.log_bin {
                cmd.arg(format!("--log-bin={}", dir.join("binlog").display()))
                    .arg("--server-id=1");
            } else {
                cmd.arg("--skip-log-bin");
            }
            cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(
                File::create(dir.join("stderr.log")).map_err(|e| EnvError::Io {
                    op: "create",
                    path: dir.join("stderr.log"),
                    source: e,
                })?,
            );
            crate::sys::process::isolate(&mut cmd);
            let mut child = cmd.spawn().map_err(|e| EnvError::Step {
                env: "ephemeral-mariadb".into(),
                step: "start mariadbd".into(),
                detail: e.to_string(),
            })?;
            let _ = std::fs::write(dir.join("server.pgid"), child.id().to_string());
            let ready = wait_until(READY_TIMEOUT, || {
                matches!(child.try_wait(), Ok(Some(_))) || Self::ping(&admin, &sock)
            });
            if let Ok(Some(_)) = child.try_wait() {
                last = log_tail(&log);
                continue;
            }
            if !ready {
                kill_group(child.id() as i32);
                let _ = child.wait();
                return Err(EnvError::NotReady {
                    env: "ephemeral-mariadb".into(),
                    secs: READY_TIMEOUT.as_secs(),
                    log: log_tail(&log),
                });
            }
            self.child = Some(child);
            self.conn = Some(ConnectionInfo {
                kind: "mariadb".into(),
                // The client reads "localhost" as "use the socket".
                host: if self.tcp { "127.0.0.1" } else { "localhost" }.into(),
                port,
                socket: Some(sock),
                user: "root".into(),
                bin_dir: None,
                password: None,
                database: None,
            });
            return Ok(());
        }
        Err(EnvError::Step {
            env: "ephemeral-mariadb".into(),
            step: "start mariadbd (3 attempts)".into(),
            detail: last,
        })
    }

    fn connection(&self) -> Option<&ConnectionInfo> {
        self.conn.as_ref()
    }

    fn server_log_tail(&self) -> Option<String> {
        let d = self.dir.as_ref()?;
        Some(log_tail(&d.path().join("error.log"))).filter(|t| !t.trim().is_empty())
    }

    fn keep(&mut self) -> Option<String> {
        // Dropping the Child handle neither kills nor waits: the server keeps running in
        // its own process group.
        self.child.take()?;
        self.conn = None;
        self.dir.take().map(|d| super::keep_dir(d, None))
    }

    fn teardown(&mut self) -> Result<(), EnvError> {
        // SIGTERM: a clean shutdown; what is left after the grace period is killed.
        super::stop_group(self.child.take(), libc::SIGTERM, Duration::from_secs(15));
        self.conn = None;
        super::remove_env_dir(self.dir.take())
    }
}

impl Drop for EphemeralMariadb {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            tracing::error!(error = %e, "tearing down the ephemeral MariaDB failed");
        }
    }
}
