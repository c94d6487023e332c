//! A throwaway PostgreSQL server: `initdb` into a labelled temporary directory, `postgres`
//! on a free port (127.0.0.1) and a private socket directory, durability switched off
//! (it only ever holds a restore under test). Run as the unprivileged `lifeboat-test` user
//! through `runuser` when lifeboat runs as root, because initdb refuses root. The binaries
//! come from `/usr/lib/postgresql/<major>/bin` for the requested major version (the newest
//! installed when none is asked for), so a drill can match the production server's major.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{
    chown_recursive, free_port, is_root, kill_group, log_tail, make_dir, server_user, wait_until,
    ConnectionInfo, EnvError, Environment, SERVER_USER,
};

const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Installed major versions under /usr/lib/postgresql, newest first.
pub fn installed_majors() -> Vec<u32> {
    let mut v: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .filter(|m: &u32| {
                    Path::new(&format!("/usr/lib/postgresql/{m}/bin/initdb")).is_file()
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort_unstable_by(|a, b| b.cmp(a));
    v
}

/// The bin directory of a major version (or the newest).
pub fn bin_dir(major: Option<u32>) -> Result<PathBuf, EnvError> {
    let majors = installed_majors();
    let m = match major {
        Some(m) if majors.contains(&m) => m,
        Some(m) => {
            return Err(EnvError::ToolMissing {
                what: format!("PostgreSQL {m} server binaries"),
                hint: format!("install postgresql-{m} (installed: {:?})", majors),
            })
        }
        None => *majors.first().ok_or_else(|| EnvError::ToolMissing {
            what: "PostgreSQL server binaries (/usr/lib/postgresql/<major>/bin/initdb)".into(),
            hint: "install a postgresql-<major> package".into(),
        })?,
    };
    Ok(PathBuf::from(format!("/usr/lib/postgresql/{m}/bin")))
}

pub struct EphemeralPostgres {
    major: Option<u32>,
    /// Also listen on 127.0.0.1. Drills do not: the server trusts whoever connects, and
    /// what it holds is a copy of production; its socket directory is private (0700).
    tcp: bool,
    dir: Option<tempfile::TempDir>,
    child: Option<Child>,
    conn: Option<ConnectionInfo>,
}

impl EphemeralPostgres {
    /// A server reachable only through its private socket directory (what drills use).
    pub fn new(major: Option<u32>) -> Self {
        EphemeralPostgres {
            major,
            tcp: false,
            dir: None,
            child: None,
            conn: None,
        }
    }

    /// `new` + `provision`, also listening on 127.0.0.1: a general throwaway server (the test
    /// harness's sources and scratch servers).
    pub fn start(major: Option<u32>) -> Result<Self, EnvError> {
        let mut e = Self::new(major);
        e.tcp = true;
        e.provision()?;
        Ok(e)
    }

    /// The environment's directory (data directory, socket and log live inside).
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_ref().map(|d| d.path())
    }

    /// Runs a command as the server user when we are root.
    fn as_server_user(program: &Path) -> Command {
        if is_root() {
            let mut c = crate::sys::process::command("runuser");
            c.args(["-u", SERVER_USER, "--"]).arg(program);
            c
        } else {
            crate::sys::process::command(program)
        }
    }

    fn step(&self, what: &str, mut cmd: Command) -> Result<(), EnvError> {
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|e| EnvError::Step {
                env: "ephemeral-postgres".into(),
                step: what.into(),
                detail: e.to_string(),
            })?;
        if !out.status.success() {
            return Err(EnvError::Step {
                env: "ephemeral-postgres".into(),
                step: what.into(),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(())
    }

    fn start_server(&mut self, bin: &Path, dir: &Path) -> Result<(Child, u16), EnvError> {
        let data = dir.join("data");
        let log = dir.join("server.log");
        let mut last = None;
        for _ in 0..3 {
            let port = free_port()?;
            let logf = File::create(&log).map_err(|e| EnvError::Io {
                op: "create",
                path: log.clone(),
                source: e,
            })?;
            if is_root() {
                let (uid, gid) = server_user()?;
                let _ = std::os::unix::fs::chown(&log, Some(uid), Some(gid));
            }
            let mut cmd = Self::as_server_user(&bin.join("postgres"));
            cmd.env("TMPDIR", dir.join("tmp"));
            cmd.arg("-D")
                .arg(&data)
                .args(["-p", &port.to_string(), "-k"])
                .arg(dir)
                .args([
                    "-c",
                    if self.tcp {
                        "listen_addresses=127.0.0.1"
                    } else {
                        "listen_addresses="
                    },
                    "-c",
                    "fsync=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "synchronous_commit=off",
                ])
                .stdin(Stdio::null())
                .stdout(logf.try_clone().map_err(|e| EnvError::Io {
                    op: "dup",
                    path: log.clone(),
                    source: e,
                })?)
                .stderr(logf);
            crate::sys::process::isolate(&mut cmd);
            let mut child = cmd.spawn().map_err(|e| EnvError::Step {
                env: "ephemeral-postgres".into(),
                step: "start postgres".into(),
                detail: e.to_string(),
            })?;
            let pgfile = dir.join("server.pgid");
            let _ = std::fs::write(&pgfile, child.id().to_string());
            let isready = bin.join("pg_isready");
            let ready = wait_until(READY_TIMEOUT, || {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    return true; // exited: checked below
                }
                // As the server's own superuser: pinging as the OS user (root) leaves a
                // "role does not exist" FATAL in the log that load failures quote.
                crate::sys::process::command(&isready)
                    .arg("-q")
                    .arg("-h")
                    .arg(dir)
                    .args(["-p", &port.to_string(), "-U", "postgres", "-d", "postgres"])
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false)
            });
            if let Ok(Some(_)) = child.try_wait() {
                // Most likely another process took the port in between: try another.
                last = Some(log_tail(&log));
                continue;
            }
            if !ready {
                kill_group(child.id() as i32);
                let _ = child.wait();
                return Err(EnvError::NotReady {
                    env: "ephemeral-postgres".into(),
                    secs: READY_TIMEOUT.as_secs(),
                    log: log_tail(&log),
                });
            }
            return Ok((child, port));
        }
        Err(EnvError::Step {
            env: "ephemeral-postgres".into(),
            step: "start postgres (3 attempts)".into(),
            detail: last.unwrap_or_default(),
        })
    }
}

impl Environment for EphemeralPostgres {
    fn kind(&self) -> &str {
        "ephemeral-postgres"
    }

    fn provision(&mut self) -> Result<(), EnvError> {
        if self.conn.is_some() {
            return Ok(());
        }
        // Servers left by a killed test or drill would hold memory and ports forever.
        for d in super::sweep_orphans() {
            tracing::warn!(dir = %d.display(), "removed a throwaway environment left by a dead process");
        }
        let bin = bin_dir(self.major)?;
        let tmp = make_dir("postgres")?;
        let dir = tmp.path().to_path_buf();
        self.dir = Some(tmp);
        // Its own temporary directory: TMPDIR may be one the server user cannot write.
        let server_tmp = super::server_dirs(&dir)?;
        if is_root() {
            let (uid, gid) = server_user()?;
            chown_recursive(&dir, uid, gid)?;
        }
        // initdb once per server binary; each drill copies (reflinks) the result.
        let initdb = |data: &Path| {
            let mut initdb = Self::as_server_user(&bin.join("initdb"));
            initdb.env("TMPDIR", &server_tmp);
            initdb.arg("-D").arg(data).args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ]);
            self.step("initdb", initdb)
        };
        let template = format!("postgres-{}", super::binary_key(&bin.join("postgres")));
        super::init_from_template(&template, &dir.join("data"), &initdb)?;
        if is_root() {
            let (uid, gid) = server_user()?;
            chown_recursive(&dir.join("data"), uid, gid)?;
        }
        let (child, port) = self.start_server(&bin, &dir)?;
        self.child = Some(child);
        self.conn = Some(ConnectionInfo {
            kind: "postgres".into(),
            host: if self.tcp {
                "127.0.0.1".into()
            } else {
                dir.display().to_string()
            },
            port,
            socket: Some(dir),
            user: "postgres".into(),
            bin_dir: Some(bin),
            password: None,
            database: None,
        });
        Ok(())
    }

    fn connection(&self) -> Option<&ConnectionInfo> {
        self.conn.as_ref()
    }

    fn server_log_tail(&self) -> Option<String> {
        let d = self.dir.as_ref()?;
        Some(log_tail(&d.path().join("server.log"))).filter(|t| !t.trim().is_empty())
    }

    fn keep(&mut self) -> Option<String> {
        // Dropping the Child handle neither kills nor waits: the server keeps running in
        // its own process group.
        self.child.take()?;
        self.conn = None;
        self.dir.take().map(|d| super::keep_dir(d, None))
    }

    fn teardown(&mut self) -> Result<(), EnvError> {
        // SIGQUIT = immediate shutdown: the postmaster still removes its shared memory.
        super::stop_group(self.child.take(), libc::SIGQUIT, Duration::from_secs(10));
        self.conn = None;
        super::remove_env_dir(self.dir.take())
    }
}

impl Drop for EphemeralPostgres {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            tracing::error!(error = %e, "tearing down the ephemeral PostgreSQL failed");
        }
    }
}
