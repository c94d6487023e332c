//! A throwaway PostgreSQL 15 server for tests: initdb into a temp directory as an unprivileged
//! user (initdb refuses root), pg_ctl on a free port with a private socket directory, stopped
//! and removed on drop. Never the system server on 5432.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const BIN: &str = "/usr/lib/postgresql/15/bin";
const USER: &str = "lifeboat-test";

pub struct PgServer {
    dir: tempfile::TempDir,
    data: PathBuf,
    pub sock: PathBuf,
    pub port: u16,
    as_user: bool,
}

fn run(mut c: Command, what: &str) {
    let out = c
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl PgServer {
    /// Starts a server; panics (failing the test) when PostgreSQL 15 is not installed —
    /// `scripts/test` installs it.
    pub fn start() -> PgServer {
        assert!(
            Path::new(BIN).join("initdb").exists(),
            "PostgreSQL 15 is not installed ({BIN}/initdb missing); run scripts/test or apt-get install postgresql-15"
        );
        let as_user = super::is_root();
        if as_user {
            let exists = Command::new("id")
                .arg("-u")
                .arg(USER)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !exists {
                let mut c = Command::new("useradd");
                c.args(["-r", "-M", USER]);
                run(c, "useradd");
            }
        }
        let dir = tempfile::Builder::new()
            .prefix("lifeboat-pg-")
            .tempdir()
            .unwrap();
        let data = dir.path().join("data");
        let sock = dir.path().join("sock");
        std::fs::create_dir(&sock).unwrap();
        if as_user {
            let mut c = Command::new("chown");
            c.arg("-R").arg(format!("{USER}:")).arg(dir.path());
            run(c, "chown");
        }
        let mut s = PgServer {
            dir,
            data,
            sock,
            port: 0,
            as_user,
        };
        let mut c = s.cmd("initdb");
        c.arg("-D")
            .arg(&s.data)
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"]);
        run(c, "initdb");
        // A port can be taken between probing and binding: try a few.
        for attempt in 0..5 {
            s.port = free_port();
            let mut c = s.cmd("pg_ctl");
            c.arg("-D")
                .arg(&s.data)
                .arg("-l")
                .arg(s.dir.path().join("server.log"))
                .args(["-w", "-t", "30", "start", "-o"])
                .arg(format!(
                    "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c synchronous_commit=off",
                    s.port,
                    s.sock.display()
                ));
            let ok = c
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|st| st.success())
                .unwrap_or(false);
            if ok {
                return s;
            }
            assert!(
                attempt < 4,
                "pg_ctl start failed 5 times; log:\n{}",
                std::fs::read_to_string(s.dir.path().join("server.log")).unwrap_or_default()
            );
        }
        unreachable!()
    }

    fn cmd(&self, prog: &str) -> Command {
        let bin = Path::new(BIN).join(prog);
        if self.as_user {
            let mut c = Command::new("runuser");
            c.args(["-u", USER, "--"]).arg(bin);
            c
        } else {
            Command::new(bin)
        }
    }

    /// Creates a fresh database and returns its URL.
    pub fn create_db(&self, name: &str) -> String {
        let mut c = Command::new(Path::new(BIN).join("psql"));
        c.arg("-h")
            .arg(&self.sock)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .args(["-v", "ON_ERROR_STOP=1", "-c"])
            .arg(format!("CREATE DATABASE \"{name}\""));
        run(c, "psql CREATE DATABASE");
        self.url(name)
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs one SQL statement through psql and returns its unaligned output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(Path::new(BIN).join("psql"))
            .arg("-h")
            .arg(&self.sock)
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", db])
            .args(["-v", "ON_ERROR_STOP=1", "-At", "-c", sql])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let mut c = self.cmd("pg_ctl");
        c.arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let _ = c.status();
    }
}
