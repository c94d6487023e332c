//! The throwaway environments the tests (and later the drill engine) rely on: they start,
//! they always tear down — explicitly, on drop during a panic, and through the orphan sweep
//! when their owner died — and nothing of theirs survives: no process in the server's
//! process group, no directory.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use lifeboat::drill::env::{sweep_orphans, Environment, EphemeralMariadb, EphemeralPostgres};

fn group_alive(pgid: i32) -> bool {
    unsafe { libc::kill(-pgid, 0) == 0 }
}

fn pgid_of(dir: &std::path::Path) -> i32 {
    std::fs::read_to_string(dir.join("server.pgid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn postgres_env_tears_down_on_drop_even_in_a_panic() {
    let (tx, rx) = std::sync::mpsc::channel::<(PathBuf, i32)>();
    let t = std::thread::spawn(move || {
        let env = EphemeralPostgres::start(None).expect("server");
        let dir = env.dir().unwrap().to_path_buf();
        assert!(dir
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("lifeboat-env-postgres-"));
        let c = env.connection().unwrap();
        let ok = std::process::Command::new(c.bin_dir.as_ref().unwrap().join("pg_isready"))
            .arg("-h")
            .arg(c.socket.as_deref().unwrap())
            .args(["-p", &c.port.to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        tx.send((dir.clone(), pgid_of(&dir))).unwrap();
        panic!("test panic while the server runs");
    });
    assert!(t.join().is_err(), "the thread should have panicked");
    let (dir, pgid) = rx.recv().unwrap();
    assert!(!dir.exists(), "{} survived the panic", dir.display());
    assert!(!group_alive(pgid), "server process group {pgid} survived");
}

#[test]
fn mariadb_env_teardown_is_idempotent_and_complete() {
    let mut env = EphemeralMariadb::start(false).expect("server");
    let dir = env.dir().unwrap().to_path_buf();
    let pgid = pgid_of(&dir);
    assert!(env
        .connection()
        .unwrap()
        .socket
        .as_deref()
        .unwrap()
        .exists());
    env.teardown().unwrap();
    env.teardown().unwrap();
    assert!(env.connection().is_none());
    assert!(!dir.exists());
    assert!(!group_alive(pgid));
}

#[test]
fn orphan_sweep_kills_the_server_group_of_a_dead_owner() {
    let dir = tempfile::Builder::new()
        .prefix("lifeboat-env-fake-")
        .tempdir()
        .unwrap()
        .keep();
    // The owner: a process that has exited (its pid is free now).
    let mut dead = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    std::fs::write(dir.join("owner.pid"), dead_pid.to_string()).unwrap();
    // The "server": a process group that would otherwise live on.
    let mut server = std::process::Command::new("sleep")
        .arg("300")
        .process_group(0)
        .spawn()
        .unwrap();
    std::fs::write(dir.join("server.pgid"), server.id().to_string()).unwrap();
    // An environment whose owner is alive (this process) must be left alone.
    let live = tempfile::Builder::new()
        .prefix("lifeboat-env-live-")
        .tempdir()
        .unwrap();
    std::fs::write(
        live.path().join("owner.pid"),
        std::process::id().to_string(),
    )
    .unwrap();

    let removed = sweep_orphans();
    assert!(removed.contains(&dir), "{removed:?}");
    assert!(!dir.exists());
    assert!(live.path().exists());
    let status = server.wait().unwrap();
    assert!(!status.success(), "the orphaned server was not killed");
}
