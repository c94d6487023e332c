//! Database passwords from the plan really authenticate (password-checked logins, not trust),
//! and never appear on any process's command line while lifeboat runs (INV-4, SR-9) nor in
//! its output when the login fails.

use crate::support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use lifeboat::drill::env::{ConnectionInfo, Environment, EphemeralMariadb, EphemeralPostgres};
use support::*;

/// Watches every process's command line for `secret` until stopped; returns what it saw.
pub(crate) fn watch_cmdlines(
    secret: &'static str,
) -> (
    Arc<AtomicBool>,
    std::thread::JoinHandle<(usize, Vec<String>)>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let h = std::thread::spawn(move || {
        let mut scans = 0;
        let mut seen = Vec::new();
        while !s.load(Ordering::Relaxed) {
            seen.extend(processes_matching(secret));
            scans += 1;
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        (scans, seen)
    });
    (stop, h)
}

/// A throwaway PostgreSQL with database `shop` (pgbench, scale 1: 100 000 accounts) and a
/// role `backup` that logs in over TCP with password `pw` only (everything else: trust).
pub(crate) fn postgres_with_password(pw: &str) -> (EphemeralPostgres, ConnectionInfo) {
    let env = EphemeralPostgres::start(None).expect("server");
    let c = env.connection().unwrap().clone();
    psql(&c, "postgres", "CREATE DATABASE shop");
    pg_tool(&c, "pgbench", &["-i", "-s", "1", "-q", "shop"]);
    psql(
        &c,
        "postgres",
        &format!("CREATE ROLE backup LOGIN PASSWORD '{pw}'; GRANT pg_read_all_data TO backup"),
    );
    // Password logins over TCP for `backup`; everything else keeps trust.
    let hba = env.dir().unwrap().join("data/pg_hba.conf");
    let old = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!("host all backup 127.0.0.1/32 scram-sha-256\n{old}"),
    )
    .unwrap();
    psql(&c, "postgres", "SELECT pg_reload_conf()");
    (env, c)
}

#[test]
fn postgres_password_authenticates_and_stays_off_the_command_line() {
    const PW: &str = "pg-Very-Secret-77";
    let (_env, c) = postgres_with_password(PW);

    let ws = Workspace::new();
    let pwfile = ws.path().join("db.pass");
    std::fs::write(&pwfile, format!("{PW}\n")).unwrap();
    let job = |file: &str| {
        format!(
            "[[jobs]]\nname = \"db\"\nschedule = \"0 3 * * *\"\n[jobs.source]\ntype = \"postgres\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"backup\"\ndatabase = \"shop\"\nglobals = false\nbin_dir = \"{}\"\npassword_file = \"{file}\"\n",
            c.port,
            c.bin_dir.as_ref().unwrap().display()
        )
    };
    let plan = ws.plan("pw", &job(pwfile.to_str().unwrap()));
    let (stop, watcher) = watch_cmdlines(PW);
    let o = run(lifeboat().args(["backup", "--plan"]).arg(&plan));
    stop.store(true, Ordering::Relaxed);
    let (scans, seen) = watcher.join().unwrap();
    assert!(o.status.success(), "backup with a password failed");
    assert!(scans > 5, "the watcher hardly ran");
    assert!(
        seen.is_empty(),
        "password visible in a command line: {seen:?}"
    );
    assert!(!stdout(&o).contains(PW) && !stderr(&o).contains(PW));
    assert_eq!(
        ws.snapshots(&plan)[0]["source_meta"]["row_counts"]["tables"]["public.pgbench_accounts"],
        100000
    );

    // A wrong password: exit 14, the server's refusal, no password in the output.
    let wrong = ws.path().join("wrong.pass");
    std::fs::write(&wrong, "not-the-password\n").unwrap();
    let plan = ws.plan("wrong", &job(wrong.to_str().unwrap()));
    let o = run(lifeboat().args(["backup", "--plan"]).arg(&plan));
    assert_eq!(o.status.code(), Some(14));
    assert!(
        stderr(&o).contains("password authentication failed"),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("not-the-password"));
}

#[test]
fn mariadb_password_authenticates_and_stays_off_the_command_line() {
    const PW: &str = "my-Very-Secret-42";
    let env = EphemeralMariadb::start(false).expect("server");
    let c = env.connection().unwrap().clone();
    mariadb(
        &c,
        None,
        &format!(
            "CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY, v TEXT); INSERT INTO shop.t VALUES (1, 'a'), (2, 'b');
             CREATE USER backup@localhost IDENTIFIED BY '{PW}'; GRANT ALL PRIVILEGES ON *.* TO backup@localhost;"
        ),
    );
    let ws = Workspace::new();
    let job = "[[jobs]]\nname = \"db\"\nschedule = \"0 3 * * *\"\n[jobs.source]\ntype = \"mariadb\"\nsocket = \"SOCK\"\nuser = \"backup\"\ndatabase = \"shop\"\nno_defaults = true\npassword_env = \"SHOP_DB_PW\"\n"
        .replace("SOCK", c.socket.as_deref().unwrap().to_str().unwrap());
    let plan = ws.plan("pw", &job);
    let (stop, watcher) = watch_cmdlines(PW);
    let o = run(lifeboat()
        .args(["backup", "--plan"])
        .arg(&plan)
        .env("SHOP_DB_PW", PW));
    stop.store(true, Ordering::Relaxed);
    let (_, seen) = watcher.join().unwrap();
    assert!(o.status.success(), "backup with a password failed");
    assert!(
        seen.is_empty(),
        "password visible in a command line: {seen:?}"
    );
    assert_eq!(
        ws.snapshots(&plan)[0]["source_meta"]["row_counts"]["tables"]["t"],
        2
    );
    // The temporary option file holding the password is gone.
    let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("lifeboat-mariadb-")
        })
        .filter(|e| std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains(PW)))
        .collect();
    assert!(
        left.is_empty(),
        "option files with the password left behind: {left:?}"
    );

    let o = run(lifeboat()
        .args(["backup", "--plan"])
        .arg(&plan)
        .env("SHOP_DB_PW", "wrong-one"));
    assert_eq!(o.status.code(), Some(14));
    assert!(stderr(&o).contains("Access denied"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("wrong-one"));
}
