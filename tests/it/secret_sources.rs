//! Secrets fetched by a command (a KMS or vault client, T31): `--password-command` /
//! `LIFEBOAT_PASSWORD_COMMAND` for the repository password, `password_command` in plans for
//! the repository and a database password. A script stands in for `aws kms decrypt`: it
//! refuses to run without its own credential (`AWS_SECRET_ACCESS_KEY`) and "decrypts" a
//! file with `base64 -d`.

use crate::secrets::{postgres_with_password, watch_cmdlines};
use crate::support;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use base64::Engine;
use support::*;

/// The fake KMS's own credential, which lifeboat must pass on to it (and to nobody else).
const KMS_CRED: &str = "kms-Cred-31337";
/// A secret of lifeboat's environment that is none of the KMS's business.
const DECOY: &str = "decoy-Db-Secret-55";

/// Writes `dir/kms` (the stand-in KMS client: `kms decrypt FILE`, which also records its
/// environment in `dir/kms.env`) and returns its path.
fn fake_kms(dir: &Path) -> PathBuf {
    let kms = dir.join("kms");
    std::fs::write(
        &kms,
        format!(
            "#!/bin/sh\n\
             env > '{env}'\n\
             [ \"$AWS_SECRET_ACCESS_KEY\" = '{KMS_CRED}' ] || {{ echo 'kms: AccessDeniedException: no credentials' >&2; exit 4; }}\n\
             [ \"$1\" = decrypt ] || {{ echo \"kms: unknown operation $1\" >&2; exit 2; }}\n\
             base64 -d \"$2\"\n",
            env = dir.join("kms.env").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&kms, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    kms
}

/// `dir/NAME.enc`: `secret` "encrypted" for the fake KMS.
fn encrypted(dir: &Path, name: &str, secret: &str) -> PathBuf {
    let p = dir.join(format!("{name}.enc"));
    let text = base64::engine::general_purpose::STANDARD.encode(format!("{secret}\n"));
    std::fs::write(&p, text).unwrap();
    p
}

/// What the fake KMS saw in its environment on its last run.
fn kms_env(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("kms.env")).unwrap_or_default()
}

/// A `bin_dir` whose `pg_dump` adds its environment to `dir/pg_dump.env` before running
/// the real one (every other tool is the real one).
fn recording_bin_dir(real: &Path, dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for e in std::fs::read_dir(real).unwrap().flatten() {
        if e.file_name() != "pg_dump" {
            std::os::unix::fs::symlink(e.path(), bin.join(e.file_name())).unwrap();
        }
    }
    let w = bin.join("pg_dump");
    std::fs::write(
        &w,
        format!(
            "#!/bin/sh\nenv >> '{}'\nexec '{}' \"$@\"\n",
            dir.join("pg_dump.env").display(),
            real.join("pg_dump").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&w, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    bin
}

#[test]
fn plan_secrets_from_a_kms_command_back_up_and_restore() {
    const PW: &str = "pg-Kms-Secret-4711";
    let (_env, c) = postgres_with_password(PW);
    let ws = Workspace::new();
    let dir = ws.path();
    let kms = fake_kms(dir);
    let repo_enc = encrypted(dir, "repo", PASSWORD);
    let db_enc = encrypted(dir, "db", PW);
    let bin = recording_bin_dir(c.bin_dir.as_ref().unwrap(), dir);
    let job = |db_cmd: &str| {
        format!(
            "[[jobs]]\nname = \"db\"\nschedule = \"0 3 * * *\"\n[jobs.source]\ntype = \"postgres\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"backup\"\ndatabase = \"shop\"\nglobals = false\nbin_dir = \"{}\"\npassword_command = \"{db_cmd}\"\n",
            c.port,
            bin.display()
        )
    };
    let with_repo_cmd = |plan: PathBuf, repo_cmd: &str| {
        let t = std::fs::read_to_string(&plan).unwrap().replace(
            "password_file = \"repo.pass\"",
            &format!("password_command = \"{repo_cmd}\""),
        );
        std::fs::write(&plan, t).unwrap();
        plan
    };
    let decrypt = |f: &Path| format!("{} decrypt {}", kms.display(), f.display());
    let plan = with_repo_cmd(ws.plan("kms", &job(&decrypt(&db_enc))), &decrypt(&repo_enc));
    let lb = || {
        let mut l = lifeboat();
        l.env("AWS_SECRET_ACCESS_KEY", KMS_CRED)
            .env("OTHER_DB_PASSWORD", DECOY)
            .env("LIFEBOAT_STATE_DIR", dir.join("state"));
        l
    };

    let (stop_db, db_watch) = watch_cmdlines(PW);
    let (stop_repo, repo_watch) = watch_cmdlines(PASSWORD);
    let o = run(lb().args(["backup", "--json", "--plan"]).arg(&plan));
    stop_db.store(true, Ordering::Relaxed);
    stop_repo.store(true, Ordering::Relaxed);
    let (scans, mut seen) = db_watch.join().unwrap();
    seen.extend(repo_watch.join().unwrap().1);
    assert!(
        o.status.success(),
        "backup with secrets from the KMS failed"
    );
    assert!(scans > 5, "the watcher hardly ran");
    assert!(seen.is_empty(), "a secret in a command line: {seen:?}");
    for s in [PW, PASSWORD, KMS_CRED, DECOY] {
        assert!(
            !stdout(&o).contains(s) && !stderr(&o).contains(s),
            "{s} in the output"
        );
    }
    // The KMS got its own credential and none of lifeboat's other secrets.
    let seen_by_kms = kms_env(dir);
    assert!(seen_by_kms.contains(&format!("AWS_SECRET_ACCESS_KEY={KMS_CRED}")));
    assert!(!seen_by_kms.contains(DECOY), "{seen_by_kms}");
    // pg_dump got the password it needs, and neither the KMS's credential nor the rest.
    let dump_env = std::fs::read_to_string(dir.join("pg_dump.env")).unwrap();
    assert!(dump_env.contains(&format!("PGPASSWORD={PW}")));
    for s in [PASSWORD, KMS_CRED, DECOY] {
        assert!(!dump_env.contains(s), "{s} in pg_dump's environment");
    }
    let snapshots = |plan: &Path| -> Vec<serde_json::Value> {
        let o = run(lb().args(["snapshots", "--json", "--plan"]).arg(plan));
        assert!(o.status.success());
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let snaps = snapshots(&plan);
    assert_eq!(snaps.len(), 1);
    assert_eq!(
        snaps[0]["source_meta"]["row_counts"]["tables"]["public.pgbench_accounts"],
        100000
    );

    // Restore, with the repository password from the KMS, into a new database.
    let url = c.url("shop_restored");
    let o = run(lb()
        .args(["restore", "--plan"])
        .arg(&plan)
        .args(["--job", "db", "latest", "--to", &url]));
    assert!(
        o.status.success(),
        "restore with the password from the KMS failed"
    );
    assert_eq!(
        psql(&c, "shop_restored", "SELECT count(*) FROM pgbench_accounts"),
        "100000"
    );

    // Failures: nothing is written, the error names the command and never its output.
    let repo_files = list_files(&dir.join("repo"));
    let snapshots_before = snapshots(&plan).len();
    let bad = dir.join("bad.enc");
    std::fs::write(&bad, "not base64 at all: !!!").unwrap();
    // The KMS refuses (no credential): the repository password cannot be had, exit 1.
    let o = run(lifeboat()
        .env("LIFEBOAT_STATE_DIR", dir.join("state"))
        .args(["backup", "--plan"])
        .arg(&plan));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("kms: AccessDeniedException"),
        "the KMS's stderr: {e}"
    );
    assert!(
        e.contains(&format!("command `{}`", decrypt(&repo_enc))) && e.contains("status 4"),
        "{e}"
    );
    // A database password the KMS cannot decrypt: the job fails (exit 14), no snapshot.
    let bad_db = with_repo_cmd(ws.plan("baddb", &job(&decrypt(&bad))), &decrypt(&repo_enc));
    let o = run(lb().args(["backup", "--plan"]).arg(&bad_db));
    assert_eq!(o.status.code(), Some(14), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("database password") && stderr(&o).contains("bad.enc"),
        "{}",
        stderr(&o)
    );
    assert_eq!(snapshots(&plan).len(), snapshots_before);
    let mut now = list_files(&dir.join("repo"));
    now.retain(|p| !p.starts_with("locks"));
    let mut before = repo_files;
    before.retain(|p| !p.starts_with("locks"));
    assert_eq!(
        now, before,
        "a failed password command changed the repository"
    );
}

/// A scratch repository made with the password from the fake KMS.
struct KmsScratch {
    s: Scratch,
    cmd: String,
}

impl KmsScratch {
    fn new() -> KmsScratch {
        let s = Scratch::new();
        let kms = fake_kms(s.dir.path());
        let enc = encrypted(s.dir.path(), "repo", PASSWORD);
        let cmd = format!("{} decrypt {}", kms.display(), enc.display());
        KmsScratch { s, cmd }
    }

    /// `lifeboat ARGS` with the repository password from `cmd` (LIFEBOAT_PASSWORD_COMMAND).
    fn run(&self, cmd: &str, args: &[&str]) -> std::process::Output {
        run(self
            .s
            .cmd()
            .env_remove("LIFEBOAT_PASSWORD_FILE")
            .env("LIFEBOAT_PASSWORD_COMMAND", cmd)
            .env("AWS_SECRET_ACCESS_KEY", KMS_CRED)
            .env("OTHER_DB_PASSWORD", DECOY)
            .args(args))
    }
}

#[test]
fn password_command_opens_the_repository_and_fails_clearly() {
    let k = KmsScratch::new();
    let src = k.s.path("src");
    make_tree(&src, 31, 20, 4000);
    let o = k.run(&k.cmd, &FAST_INIT);
    assert!(o.status.success(), "init with LIFEBOAT_PASSWORD_COMMAND");
    let o = k.run(&k.cmd, &["backup", "--json", src.to_str().unwrap()]);
    assert!(o.status.success(), "backup with LIFEBOAT_PASSWORD_COMMAND");
    assert!(!stdout(&o).contains(PASSWORD) && !stderr(&o).contains(PASSWORD));
    assert!(!kms_env(k.s.dir.path()).contains(DECOY));
    // The same password as the file's: the repository opens with either.
    k.s.ok(&["snapshots"]);
    // --password-command on the command line, restore compares equal.
    let out = k.s.path("out");
    let o = run(k
        .s
        .cmd()
        .env_remove("LIFEBOAT_PASSWORD_FILE")
        .env("AWS_SECRET_ACCESS_KEY", KMS_CRED)
        .args([
            "--password-command",
            &k.cmd,
            "restore",
            "latest",
            "--target",
        ])
        .arg(&out));
    assert!(o.status.success(), "restore with --password-command");
    assert_same_tree(&src, &out.join("src"));

    // Each failure: exit 1, the source named, the output never shown, nothing written.
    let before = list_files(&k.s.repo);
    let cases = [
        ("echo printed-but-failed; exit 3", "exited with status 3"),
        ("printf '\\n'", "printed nothing"),
        ("echo partial-output; sleep 30", "did not finish within 1s"),
    ];
    for (cmd, says) in cases {
        let t = std::time::Instant::now();
        let o = run(k
            .s
            .cmd()
            .env_remove("LIFEBOAT_PASSWORD_FILE")
            .env("LIFEBOAT_PASSWORD_COMMAND", cmd)
            .env("LIFEBOAT_SECRET_COMMAND_TIMEOUT", "1s")
            .args(["backup", "--json", src.to_str().unwrap()]));
        assert_eq!(o.status.code(), Some(1), "{cmd}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(
            e.contains("password command (LIFEBOAT_PASSWORD_COMMAND)") && e.contains(says),
            "{cmd}: {e}"
        );
        assert!(
            !e.contains("printed-but-failed") && !e.contains("partial-output"),
            "{e}"
        );
        assert!(stdout(&o).is_empty(), "{}", stdout(&o));
        assert!(t.elapsed() < std::time::Duration::from_secs(10), "{cmd}");
        assert_eq!(
            list_files(&k.s.repo),
            before,
            "{cmd} changed the repository"
        );
    }
    assert_eq!(k.s.json(&["snapshots"]).as_array().unwrap().len(), 1);

    // A password file and a password command: refused (exit 2), both sources named.
    let o = run(k.s.cmd().args(["--password-command", &k.cmd, "snapshots"]));
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("LIFEBOAT_PASSWORD_FILE") && e.contains("--password-command"),
        "{e}"
    );
}
