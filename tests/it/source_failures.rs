//! A dump that fails must fail the backup with exit 14, carry the tail of the tool's stderr
//! (passwords redacted), commit no snapshot, and leave no process or session behind:
//! a bad database name, a dump killed mid-stream, a dump cut short by a wrapper that still
//! exits 0, a failing pre-hook, and a secret that must not leak into the message.

use crate::support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use lifeboat::drill::env::{ConnectionInfo, Environment};
use support::*;

fn wrapper_dir(
    ws: &Workspace,
    name: &str,
    real_bin: &Path,
    pg_dump_script: &str,
) -> std::path::PathBuf {
    let d = ws.path().join(name);
    std::fs::create_dir(&d).unwrap();
    for tool in ["psql", "pg_dumpall", "pg_restore"] {
        std::os::unix::fs::symlink(real_bin.join(tool), d.join(tool)).unwrap();
    }
    let p = d.join("pg_dump");
    std::fs::write(
        &p,
        format!(
            "#!/bin/bash\nREAL={}\n{pg_dump_script}\n",
            real_bin.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

fn job(c: &ConnectionInfo, db: &str, bin: &Path, extra: &str) -> String {
    format!(
        "[[jobs]]\nname = \"db\"\nschedule = \"0 3 * * *\"\n[jobs.source]\ntype = \"postgres\"\nhost = \"{}\"\nport = {}\nuser = \"postgres\"\ndatabase = \"{db}\"\nbin_dir = \"{}\"\n{extra}\n",
        c.socket.as_deref().unwrap().display(),
        c.port,
        bin.display()
    )
}

fn assert_failed_cleanly(
    ws: &Workspace,
    plan: &Path,
    c: &ConnectionInfo,
    marker: &str,
    expect: &str,
) {
    let o = run(lifeboat().args(["backup", "--plan"]).arg(plan));
    assert_eq!(
        o.status.code(),
        Some(14),
        "expected exit 14 (source failed)"
    );
    let err = stderr(&o);
    assert!(err.contains(expect), "stderr lacks {expect:?}: {err}");
    assert!(
        ws.snapshots(plan).is_empty(),
        "a snapshot was committed for a failed run"
    );
    assert!(
        processes_matching(marker).is_empty(),
        "processes left behind: {:?}",
        processes_matching(marker)
    );
    assert_eq!(
        psql(
            c,
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'lifeboat'"
        ),
        "0"
    );
}

#[test]
fn failing_dumps_exit_14_and_commit_nothing() {
    let env = lifeboat::drill::env::EphemeralPostgres::start(None).expect("server");
    let c = env.connection().unwrap().clone();
    psql(&c, "postgres", "CREATE DATABASE shop");
    pg_tool(&c, "pgbench", &["-i", "-s", "1", "-q", "shop"]);
    let real = c.bin_dir.clone().unwrap();
    let ws = Workspace::new();

    // 1. The database does not exist: the server says so, and we pass it on.
    let plan = ws.plan("nodb", &job(&c, "no_such_db", &real, ""));
    assert_failed_cleanly(
        &ws,
        &plan,
        &c,
        "no_such_db",
        "database \"no_such_db\" does not exist",
    );

    // 2. pg_dump is killed (SIGKILL) after it wrote part of the archive.
    let bin = wrapper_dir(
        &ws,
        "killed-bin",
        &real,
        "\"$REAL/pg_dump\" \"$@\" | head -c 300000\nkill -9 $$",
    );
    let plan = ws.plan("killed", &job(&c, "shop", &bin, ""));
    assert_failed_cleanly(
        &ws,
        &plan,
        &c,
        "killed-bin",
        "pg_dump was killed by signal 9",
    );

    // 3. The archive is cut short but the dump command exits 0 (a shell pipe without
    //    pipefail): the streaming archive check notices.
    let bin = wrapper_dir(
        &ws,
        "short-bin",
        &real,
        "\"$REAL/pg_dump\" \"$@\" | head -c 3000000\nexit 0",
    );
    let plan = ws.plan("short", &job(&c, "shop", &bin, ""));
    assert_failed_cleanly(&ws, &plan, &c, "short-bin", "incomplete or damaged");

    // 4. A pre hook that fails stops the job before the dump starts.
    let plan = ws.plan(
        "hook",
        &job(
            &c,
            "shop",
            &real,
            "[jobs.hooks]\npre = \"echo quiesce failed >&2; exit 3\"\ntimeout = \"10s\"",
        ),
    );
    assert_failed_cleanly(&ws, &plan, &c, "quiesce", "quiesce failed");

    // 5. The database password never shows up in an error, even when the tool echoes it.
    let pw = ws.path().join("db.pass");
    std::fs::write(&pw, "Sup3r-Secret-Db-Pw\n").unwrap();
    let bin = wrapper_dir(
        &ws,
        "echo-bin",
        &real,
        "echo \"connection to server failed: password $PGPASSWORD rejected\" >&2\nexit 1",
    );
    let plan = ws.plan(
        "leak",
        &job(
            &c,
            "shop",
            &bin,
            &format!("password_file = \"{}\"", pw.display()),
        ),
    );
    let o = run(lifeboat().args(["backup", "--plan"]).arg(&plan));
    assert_eq!(o.status.code(), Some(14));
    let err = stderr(&o);
    assert!(err.contains("password <redacted> rejected"), "{err}");
    assert!(
        !err.contains("Sup3r-Secret-Db-Pw"),
        "the password leaked: {err}"
    );
    assert!(ws.snapshots(&plan).is_empty());

    // 6. Ctrl-C while the dump is stalled mid-stream: exit 130 at once (the dump's process
    //    group is killed rather than waited for), nothing committed, nothing left running.
    let bin = wrapper_dir(
        &ws,
        "stall-bin",
        &real,
        "\"$REAL/pg_dump\" \"$@\" | { head -c 200000; sleep 120; cat; }",
    );
    let plan = ws.plan("stall", &job(&c, "shop", &bin, ""));
    let child = lifeboat()
        .args(["backup", "--plan"])
        .arg(&plan)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while processes_matching("sleep 120").is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the stalled dump never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let sent = std::time::Instant::now();
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(130),
        "expected exit 130 (interrupted)"
    );
    assert!(
        sent.elapsed() < std::time::Duration::from_secs(10),
        "Ctrl-C took {:?}",
        sent.elapsed()
    );
    assert!(ws.snapshots(&plan).is_empty());
    // The group was sent SIGKILL before lifeboat exited; on a loaded machine its members
    // may take a moment to be scheduled and die, so allow them a few seconds to go.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !(processes_matching("stall-bin").is_empty()
        && processes_matching("sleep 120").is_empty())
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // (What is left is named with its state, parent and process group, to tell a process
    // the group kill missed from one still dying.)
    let stat = |line: &String| {
        let pid = line.split(':').next().unwrap_or_default();
        std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default()
    };
    assert!(
        processes_matching("stall-bin").is_empty() && processes_matching("sleep 120").is_empty(),
        "left behind: {:?} {:?}",
        processes_matching("stall-bin")
            .iter()
            .map(stat)
            .collect::<Vec<_>>(),
        processes_matching("sleep 120")
            .iter()
            .map(stat)
            .collect::<Vec<_>>()
    );
    assert_eq!(
        psql(
            &c,
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'lifeboat'"
        ),
        "0"
    );

    // After all that, a good run still works and commits exactly one snapshot.
    let plan = ws.plan("good", &job(&c, "shop", &real, "row_counts = \"estimate\""));
    let o = run(lifeboat().args(["backup", "--plan"]).arg(&plan));
    assert!(o.status.success());
    assert_eq!(ws.snapshots(&plan).len(), 1);
}

fn mariadb_wrappers(ws: &Workspace, name: &str, script: &str) -> std::path::PathBuf {
    let d = ws.path().join(name);
    std::fs::create_dir(&d).unwrap();
    std::os::unix::fs::symlink("/usr/bin/mariadb", d.join("mariadb")).unwrap();
    let p = d.join("mariadb-dump");
    std::fs::write(&p, format!("#!/bin/bash\n{script}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

#[test]
fn mariadb_dump_killed_or_cut_short_exits_14() {
    let env = lifeboat::drill::env::EphemeralMariadb::start(false).expect("server");
    let c = env.connection().unwrap().clone();
    mariadb(&c, None, "CREATE DATABASE shop; USE shop; CREATE TABLE t (id INT PRIMARY KEY, v TEXT); INSERT INTO t SELECT seq, REPEAT('x', 500) FROM seq_1_to_20000;");
    let ws = Workspace::new();
    let job = |bin: &Path| {
        format!(
            "[[jobs]]\nname = \"db\"\nschedule = \"0 3 * * *\"\n[jobs.source]\ntype = \"mariadb\"\nsocket = \"{}\"\nuser = \"root\"\ndatabase = \"shop\"\nno_defaults = true\nbin_dir = \"{}\"\n",
            c.socket.as_deref().unwrap().display(),
            bin.display()
        )
    };
    for (name, script, expect) in [
        (
            "my-killed",
            "/usr/bin/mariadb-dump \"$@\" | head -c 100000\nkill -9 $$",
            "killed by signal 9",
        ),
        (
            "my-short",
            "/usr/bin/mariadb-dump \"$@\" | head -c 100000\nexit 0",
            "cut short",
        ),
        (
            "my-fail",
            "echo 'mariadb-dump: Got error: 2002' >&2\nexit 2",
            "exited with status 2",
        ),
    ] {
        let bin = mariadb_wrappers(&ws, name, script);
        let plan = ws.plan(name, &job(&bin));
        let o = run(lifeboat().args(["backup", "--plan"]).arg(&plan));
        assert_eq!(o.status.code(), Some(14), "{name}: expected exit 14");
        assert!(
            stderr(&o).contains(expect),
            "{name}: stderr lacks {expect:?}"
        );
        assert!(
            ws.snapshots(&plan).is_empty(),
            "{name}: a snapshot was committed"
        );
        assert!(
            processes_matching(name).is_empty(),
            "{name}: processes left behind"
        );
    }
    // The same plan with the real tool works.
    let plan = ws.plan("my-real", &job(Path::new("/usr/bin")));
    assert!(run(lifeboat().args(["backup", "--plan"]).arg(&plan))
        .status
        .success());
    assert_eq!(
        ws.snapshots(&plan)[0]["source_meta"]["row_counts"]["tables"]["t"],
        20000
    );
}

#[test]
fn mariadb_bad_database_exits_14() {
    let env = lifeboat::drill::env::EphemeralMariadb::start(false).expect("server");
    let c = env.connection().unwrap().clone();
    let ws = Workspace::new();
    let plan = ws.plan(
        "my",
        &format!(
            "[[jobs]]\nname = \"db\"\nschedule = \"0 3 * * *\"\n[jobs.source]\ntype = \"mariadb\"\nsocket = \"{}\"\nuser = \"root\"\ndatabase = \"nope\"\nno_defaults = true\n",
            c.socket.as_deref().unwrap().display()
        ),
    );
    let o = run(lifeboat().args(["backup", "--plan"]).arg(&plan));
    assert_eq!(o.status.code(), Some(14));
    assert!(
        stderr(&o).contains("database \"nope\" does not exist"),
        "{}",
        stderr(&o)
    );
    assert!(ws.snapshots(&plan).is_empty());
    assert!(processes_matching("mariadb-dump").is_empty());
}
