//! Shared harness for the integration tests: run the built `lifeboat` binary against a
//! scratch repository (cheap KDF parameters), write plan files, and talk to the throwaway
//! servers from `lifeboat::drill::env` with their own client tools; `garage` and `s3s` (real
//! S3 servers), `fault_proxy` and `regions` (multi-region CLI helpers) for the S3 tests.

pub mod counting;
pub mod fault_proxy;
pub mod inv;
pub use inv::{inv1, inv3, restores_exactly, snapshot_ids, wait_stopped};
pub mod garage;
pub mod moto;
pub mod regions;
pub mod s3s;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use lifeboat::drill::env::ConnectionInfo;

use rand::{Rng, SeedableRng};

pub mod pg;

pub const BIN: &str = env!("CARGO_BIN_EXE_lifeboat");

/// A scratch directory with a repository path and a password file.
pub struct Scratch {
    pub dir: tempfile::TempDir,
    pub repo: PathBuf,
    pub pw: PathBuf,
}

impl Scratch {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("lifeboat-test-")
            .tempdir()
            .unwrap();
        let repo = dir.path().join("repo");
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "correct horse battery staple\n").unwrap();
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
        Scratch { dir, repo, pw }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// A `lifeboat` command with repo and password set through the environment.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(BIN);
        c.env("LIFEBOAT_REPO", &self.repo)
            .env("LIFEBOAT_PASSWORD_FILE", &self.pw)
            // Each scratch gets its own default catalog, never the user's.
            .env("LIFEBOAT_STATE_DIR", self.dir.path().join("state"))
            .env_remove("LIFEBOAT_CATALOG")
            .env_remove("LIFEBOAT_PASSWORD")
            .env_remove("LIFEBOAT_LOG");
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    /// Runs and asserts the exit code, returning stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        self.expect(args, 0)
    }

    pub fn expect(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "lifeboat {args:?}\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs with extra environment variables.
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = self.cmd();
        c.args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    }

    /// Runs with extra environment variables, asserts the exit code, returns stdout.
    pub fn expect_env(&self, args: &[&str], env: &[(&str, &str)], code: i32) -> String {
        let out = self.run_env(args, env);
        assert_eq!(
            out.status.code(),
            Some(code),
            "lifeboat {args:?} {env:?}\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn init(&self) {
        self.ok(&FAST_INIT);
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.ok(&a)).unwrap()
    }
}

/// Every file under `dir`, relative, sorted.
pub fn list_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// The largest pack of a local repository: one holding file data (a backup puts trees into
/// packs of their own, and damage to those is found by any walk, not only by reading data).
pub fn largest_pack(repo: &Path) -> PathBuf {
    let data = repo.join("data");
    list_files(&data)
        .into_iter()
        .map(|p| data.join(p))
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .expect("a pack in the repository")
}

pub fn dir_bytes(dir: &Path) -> u64 {
    list_files(dir)
        .iter()
        .map(|p| std::fs::symlink_metadata(dir.join(p)).unwrap().len())
        .sum()
}

/// A tree with every kind of entry the directory source handles.
pub fn make_tree(root: &Path, seed: u64, files: usize, max_len: usize) {
    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
    std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
    std::fs::create_dir_all(root.join("empty-dir")).unwrap();
    for i in 0..files {
        let dir = match i % 3 {
            0 => root.to_path_buf(),
            1 => root.join("sub"),
            _ => root.join("sub/deeper"),
        };
        let len = r.gen_range(0..max_len);
        let mut data = vec![0u8; len];
        if i % 2 == 0 {
            r.fill(&mut data[..]);
        } else {
            for (j, b) in data.iter_mut().enumerate() {
                *b = b"lorem ipsum dolor sit amet "[j % 27];
            }
        }
        std::fs::write(dir.join(format!("file-{i}.dat")), &data).unwrap();
    }
    std::fs::write(root.join("empty-file"), b"").unwrap();
    std::fs::write(root.join("exec.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(root.join("exec.sh"), std::fs::Permissions::from_mode(0o750)).unwrap();
    std::fs::write(root.join("private"), b"secret-ish").unwrap();
    std::fs::set_permissions(root.join("private"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink("sub/deeper", root.join("link-to-dir")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", root.join("dangling")).unwrap();
    std::fs::hard_link(root.join("exec.sh"), root.join("sub/hardlink.sh")).unwrap();
    std::fs::write(root.join("ünïcødé name ✓"), b"utf8").unwrap();
}

pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

pub const PASSWORD: &str = "correct horse battery staple";

/// The built binary with a clean environment (no inherited LIFEBOAT_* settings).
/// `init` with a cheap key derivation (tests make many repositories).
pub const FAST_INIT: [&str; 5] = ["init", "--kdf-memory", "8", "--kdf-iterations", "1"];

pub fn lifeboat() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lifeboat"));
    for (k, _) in std::env::vars() {
        if k.starts_with("LIFEBOAT_") {
            c.env_remove(k);
        }
    }
    c.stdin(Stdio::null());
    c
}

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run lifeboat");
    eprintln!(
        "$ {:?}\n-> {:?}\nstdout:\n{}\nstderr:\n{}",
        cmd,
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A work directory with a repository (`repo/`) and its password file (`repo.pass`, 0600).
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("lifeboat-it-")
            .tempdir()
            .unwrap();
        let pw = dir.path().join("repo.pass");
        std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
        let o = run(lifeboat()
            .args(FAST_INIT)
            .arg("--repo")
            .arg(dir.path().join("repo"))
            .arg("--password-file")
            .arg(&pw));
        assert!(o.status.success(), "init failed");
        Workspace { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `plans/<name>.toml` with the standard header (repository password and local
    /// destination) followed by `jobs`.
    pub fn plan(&self, name: &str, jobs: &str) -> PathBuf {
        let p = self.path().join(format!("{name}.toml"));
        let body = format!(
            "name = \"{name}\"\n[repository]\npassword_file = \"repo.pass\"\n[objectives]\nrpo = \"1day\"\nrto = \"30m\"\n[[destinations]]\ntype = \"local\"\npath = \"repo\"\n\n{jobs}"
        );
        std::fs::write(&p, body).unwrap();
        p
    }

    /// `lifeboat snapshots --plan P --json`, parsed.
    pub fn snapshots(&self, plan: &Path) -> Vec<serde_json::Value> {
        let o = run(lifeboat().args(["snapshots", "--json", "--plan"]).arg(plan));
        assert!(o.status.success());
        serde_json::from_slice::<Vec<serde_json::Value>>(&o.stdout).unwrap()
    }
}

/// `psql` against a throwaway server, as the `postgres` superuser; returns stdout (unaligned,
/// tuples only). Panics with psql's stderr on failure.
pub fn psql(c: &ConnectionInfo, db: &str, sql: &str) -> String {
    let bin = c.bin_dir.clone().unwrap();
    let o = Command::new(bin.join("psql"))
        .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
        .arg(c.socket.as_deref().unwrap())
        .args([
            "-p",
            &c.port.to_string(),
            "-U",
            &c.user,
            "-d",
            db,
            "-c",
            sql,
        ])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Runs a PostgreSQL client tool (`pgbench`, `pg_dump`, …) against a throwaway server.
pub fn pg_tool(c: &ConnectionInfo, tool: &str, args: &[&str]) -> Output {
    let bin = c.bin_dir.clone().unwrap();
    let o = Command::new(bin.join(tool))
        .env("PGHOST", c.socket.as_deref().unwrap())
        .env("PGPORT", c.port.to_string())
        .env("PGUSER", &c.user)
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{tool} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// `mariadb` against a throwaway server as root over its socket, SQL on stdin (so
/// `DELIMITER` works); returns stdout.
pub fn mariadb(c: &ConnectionInfo, db: Option<&str>, sql: &str) -> String {
    let mut cmd = Command::new("mariadb");
    cmd.arg("--no-defaults")
        .arg(format!(
            "--socket={}",
            c.socket.as_deref().unwrap().display()
        ))
        .args([
            "-uroot",
            "--batch",
            "--skip-column-names",
            "--default-character-set=utf8mb4",
        ]);
    if let Some(d) = db {
        cmd.arg(format!("--database={d}"));
    }
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(sql.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "mariadb {sql}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Processes whose command line contains `needle` (excluding this test process).
pub fn processes_matching(needle: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.chars().all(|c| c.is_ascii_digit()) || name == me {
            continue;
        }
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                out.push(format!("{name}: {cmd}"));
            }
        }
    }
    out
}

/// A private TMPDIR for one drill. Servers run as an unprivileged user when the tests run
/// as root and write their own temporary files there, so it is mode 1777 like /tmp.
pub fn drill_tmp() -> tempfile::TempDir {
    let t = tempfile::Builder::new()
        .prefix("lifeboat-drilltmp-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    t
}

/// The throwaway environments (`lifeboat-env-*`) in a drill's TMPDIR.
pub fn env_dirs(tmp: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(tmp)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("lifeboat-env-"))
        .map(|e| e.path())
        .collect()
}

/// A small tmpfs mounted for one test (root only), unmounted on drop: a disk that fills up.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn mount(dir: &Path, options: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs on {}", dir.display());
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// `len` random bytes (from `seed`) written to `path`.
pub fn write_random(path: &Path, seed: u64, len: usize) {
    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
    let mut data = vec![0u8; len];
    r.fill(&mut data[..]);
    std::fs::write(path, data).unwrap();
}

/// The two trees hold the same files with the same bytes.
pub fn assert_same_tree(a: &Path, b: &Path) {
    let fa = list_files(a);
    assert_eq!(fa, list_files(b), "file lists differ");
    for f in fa {
        let (x, y) = (a.join(&f), b.join(&f));
        if std::fs::symlink_metadata(&x).unwrap().is_file() {
            assert!(
                std::fs::read(&x).unwrap() == std::fs::read(&y).unwrap(),
                "{} differs",
                f.display()
            );
        }
    }
}
