//! The drill environments beyond lifeboat's own ephemeral servers, against real servers:
//! `scratch` (an existing PostgreSQL that requires a password: a `lifeboat_drill_<id>`
//! database is created, checked and dropped, expired drill databases are swept, fresh ones
//! left alone), `command` (the user's provisioning script starts a real PostgreSQL, the
//! teardown script stops it; a failing script is an infrastructure failure that still tears
//! down; an orphan of a killed drill gets its teardown from the next drill), and a restore
//! target that runs out of space (exit 15, nothing left behind).

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use lifeboat::drill::env::{ConnectionInfo, Environment, EphemeralMariadb, EphemeralPostgres};
use support::*;

fn drill(ws: &Workspace, plan: &Path, tmp: &Path, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = lifeboat();
    c.args(["drill", "--json", "--plan"])
        .arg(plan)
        .args(extra)
        .env("TMPDIR", tmp)
        .env("LIFEBOAT_STATE_DIR", ws.path().join("state"));
    for (k, v) in env {
        c.env(k, v);
    }
    run(&mut c)
}

fn report(o: &Output) -> serde_json::Value {
    let v: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("drill --json: {e}\n{}", stderr(o)));
    v.into_iter().next().expect("one report")
}

fn drill_databases(c: &ConnectionInfo) -> Vec<String> {
    psql(
        c,
        "postgres",
        "SELECT datname FROM pg_database WHERE datname LIKE 'lifeboat_drill_%' ORDER BY 1",
    )
    .lines()
    .map(str::to_string)
    .collect()
}

/// A source server with a `shop` database (pgbench tables, one owned by a role that other
/// servers do not have), backed up through a plan whose `[drill]` section is `drill`.
fn backed_up_shop(ws: &Workspace, src: &ConnectionInfo, plan_name: &str, drill: &str) -> PathBuf {
    let plan = ws.plan(
        plan_name,
        &format!(
            "[[jobs]]\nname = \"shop\"\nschedule = \"0 3 * * *\"\n[jobs.source]\ntype = \"postgres\"\nhost = \"{}\"\nport = {}\nuser = \"postgres\"\ndatabase = \"shop\"\nbin_dir = \"{}\"\n\n[drill]\n{drill}\n",
            src.socket.as_deref().unwrap().display(),
            src.port,
            src.bin_dir.as_ref().unwrap().display()
        ),
    );
    let o = run(lifeboat().args(["backup", "--plan"]).arg(&plan));
    assert!(o.status.success(), "backup failed: {}", stderr(&o));
    plan
}

fn shop_server() -> EphemeralPostgres {
    let src = EphemeralPostgres::start(None).expect("source server");
    let c = src.connection().unwrap().clone();
    psql(&c, "postgres", "CREATE DATABASE shop");
    pg_tool(&c, "pgbench", &["-i", "-s", "1", "-q", "shop"]);
    psql(
        &c,
        "shop",
        "CREATE ROLE shop_owner; CREATE TABLE audit (id int PRIMARY KEY, note text); INSERT INTO audit SELECT g, 'n' || g FROM generate_series(1, 37) g; ALTER TABLE audit OWNER TO shop_owner",
    );
    src
}

#[test]
fn scratch_postgres_drill_uses_a_private_database_and_drops_it() {
    let src = shop_server();
    let sc = src.connection().unwrap().clone();
    // The "existing" server drills borrow: password authentication over TCP, no shop_owner.
    let scratch = EphemeralPostgres::start(None).expect("scratch server");
    let xc = scratch.connection().unwrap().clone();
    psql(
        &xc,
        "postgres",
        "CREATE ROLE drill LOGIN CREATEDB PASSWORD 'Scratch-Pw-7781'",
    );
    let hba = psql(&xc, "postgres", "SHOW hba_file");
    let old = std::fs::read_to_string(hba.trim()).unwrap();
    std::fs::write(
        hba.trim(),
        format!("host all drill 127.0.0.1/32 scram-sha-256\n{old}"),
    )
    .unwrap();
    psql(&xc, "postgres", "SELECT pg_reload_conf()");
    // Leftovers of killed drills: one long expired, one from a drill that may still run.
    let fresh = format!(
        "lifeboat_drill_{}_0a0a0a",
        chrono::Utc::now().format("%Y%m%dt%H%M%Sz")
    );
    psql(
        &xc,
        "postgres",
        "CREATE DATABASE lifeboat_drill_20200101t000000z_dead00 OWNER drill",
    );
    psql(
        &xc,
        "postgres",
        &format!("CREATE DATABASE {fresh} OWNER drill"),
    );

    let ws = Workspace::new();
    std::fs::write(
        ws.path().join("scratch-tests.toml"),
        "[[sql]]\nname = \"audit rows\"\nquery = \"SELECT count(*) FROM audit\"\nexpect = { min = 37, max = 37 }\n[[command]]\nname = \"libpq env reaches the drill database\"\nrun = [\"sh\", \"-c\", \"case $PGDATABASE in lifeboat_drill_*) ;; *) exit 1;; esac; test \\\"$(psql -X -w -tAc 'SELECT count(*) FROM pgbench_branches')\\\" = 1\"]\n",
    )
    .unwrap();
    let plan = backed_up_shop(
        &ws,
        &sc,
        "scratch",
        &format!(
            "environment = \"scratch\"\nserver = \"postgres://drill@127.0.0.1:{}/postgres\"\npassword_env = \"SCRATCH_PW\"\nbin_dir = \"{}\"\nrestore_tests = [\"scratch-tests.toml\"]",
            xc.port,
            xc.bin_dir.as_ref().unwrap().display()
        ),
    );

    // `plan check` asks the scratch server, without creating anything on it.
    let check = |pw: &str| {
        run(lifeboat()
            .args(["plan", "check"])
            .arg(&plan)
            .env("SCRATCH_PW", pw))
    };
    let o = check("Scratch-Pw-7781");
    assert!(
        stdout(&o).contains(&format!(
            "ok      drill environment scratch: server postgres://drill@127.0.0.1:{}/postgres answers (version ",
            xc.port
        )),
        "{}",
        stdout(&o)
    );
    let o = check("wrong-pw-1234");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("PROBLEM drill environment scratch: server postgres://drill@127.0.0.1"),
        "{}",
        stdout(&o)
    );

    // A wrong password: an infrastructure failure naming the server, the password nowhere.
    let tmp = drill_tmp();
    let o = drill(
        &ws,
        &plan,
        tmp.path(),
        &[],
        &[("SCRATCH_PW", "wrong-pw-1234")],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let r = report(&o);
    assert_eq!(r["result"], "infra_failed");
    let err = r["error"].as_str().unwrap();
    assert!(
        err.contains("scratch server postgres://drill@127.0.0.1"),
        "{err}"
    );
    assert!(err.contains("password authentication failed"), "{err}");
    let all = format!("{}{}", stdout(&o), stderr(&o));
    assert!(!all.contains("wrong-pw-1234"), "the password leaked: {all}");

    // The right one: restored into lifeboat_drill_<id> without the missing role, checked,
    // dropped; the expired leftover is swept, the fresh one kept.
    let o = drill(
        &ws,
        &plan,
        tmp.path(),
        &[],
        &[("SCRATCH_PW", "Scratch-Pw-7781")],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r = report(&o);
    assert_eq!(r["result"], "passed", "{r:#}");
    assert_eq!(r["environment"], "scratch");
    let checks = r["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 3, "{r:#}");
    assert!(checks.iter().all(|c| c["status"] == "passed"), "{r:#}");
    assert_eq!(drill_databases(&xc), vec![fresh.clone()]);
    assert!(!stdout(&o).contains("Scratch-Pw-7781"));
    // The source was never touched.
    assert_eq!(psql(&sc, "shop", "SELECT count(*) FROM audit").trim(), "37");

    // --keep leaves the drill database and says how to drop it.
    let o = drill(
        &ws,
        &plan,
        tmp.path(),
        &["--keep"],
        &[("SCRATCH_PW", "Scratch-Pw-7781")],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r = report(&o);
    let kept = r["kept"].as_str().expect("kept note");
    let dbs = drill_databases(&xc);
    assert_eq!(dbs.len(), 2, "{dbs:?}");
    let kept_db = dbs.iter().find(|d| **d != fresh).unwrap();
    assert!(
        kept.contains(&format!("DROP DATABASE IF EXISTS \"{kept_db}\"")),
        "{kept}"
    );
    assert!(kept.contains("-U drill"), "{kept}");
    assert!(env_dirs(tmp.path()).is_empty());
    drop(scratch);
    drop(src);
}

#[test]
fn scratch_mariadb_drill_sweeps_expired_databases() {
    let src = EphemeralMariadb::start(false).expect("server");
    let c = src.connection().unwrap().clone();
    mariadb(&c, None, "CREATE DATABASE shop CHARACTER SET utf8mb4");
    mariadb(
        &c,
        Some("shop"),
        "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(50));
         INSERT INTO items SELECT seq, CONCAT('item ', seq) FROM seq_1_to_321;
         CREATE DATABASE lifeboat_drill_20200101t000000z_dead00;",
    );
    // A view defined by an application account, and a drill account with rights on the
    // drill databases only (no SUPER / SET USER): the dump's definers must not stop the load.
    mariadb(
        &c,
        Some("shop"),
        "CREATE USER 'shop app'@'%'; GRANT ALL ON shop.* TO 'shop app'@'%';
         CREATE DEFINER = 'shop app'@'%' SQL SECURITY DEFINER VIEW cheap AS SELECT * FROM items WHERE id <= 10;
         CREATE USER 'drill'@'localhost' IDENTIFIED BY 'drill-pw';
         GRANT ALL ON `lifeboat\\_drill\\_%`.* TO 'drill'@'localhost';",
    );
    let ws = Workspace::new();
    std::fs::write(
        ws.path().join("view.toml"),
        "[[sql]]\nname = \"the view reads\"\nquery = \"SELECT count(*) FROM cheap\"\nexpect = { min = 10, max = 10 }\n",
    )
    .unwrap();
    let sock = c.socket.as_deref().unwrap().display().to_string();
    let plan = ws.plan(
        "myscratch",
        &format!(
            "[[jobs]]\nname = \"shop\"\nschedule = \"0 3 * * *\"\n[jobs.source]\ntype = \"mariadb\"\nsocket = \"{sock}\"\nuser = \"root\"\ndatabase = \"shop\"\nno_defaults = true\n\n[drill]\nenvironment = \"scratch\"\nserver = \"mariadb://drill@/information_schema?socket={sock}\"\npassword_env = \"DRILL_PW\"\nrestore_tests = [\"view.toml\"]\n"
        ),
    );
    let o = run(lifeboat().args(["backup", "--plan"]).arg(&plan));
    assert!(o.status.success(), "backup failed: {}", stderr(&o));
    let tmp = drill_tmp();
    let o = drill(&ws, &plan, tmp.path(), &[], &[("DRILL_PW", "drill-pw")]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r = report(&o);
    assert_eq!(r["result"], "passed", "{r:#}");
    assert_eq!(r["environment"], "scratch");
    assert_eq!(r["checks"][0]["kind"], "row_counts");
    assert!(
        r["checks"][0]["detail"]
            .as_str()
            .unwrap()
            .starts_with("1 table matches"),
        "{r:#}"
    );
    assert_eq!(r["checks"][1]["name"], "the view reads", "{r:#}");
    assert_eq!(r["checks"][1]["status"], "passed", "{r:#}");
    let left = mariadb(
        &c,
        None,
        "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE 'lifeboat\\_drill\\_%'",
    );
    assert_eq!(left.trim(), "0", "drill databases left on the server");
    assert_eq!(
        mariadb(&c, Some("shop"), "SELECT COUNT(*) FROM items").trim(),
        "321"
    );
    drop(src);
}

/// A provisioning script of the kind users write for Docker or a cloud CLI, here starting
/// a real PostgreSQL with initdb/pg_ctl (as the unprivileged server user when root).
fn pg_provision_script(bin: &Path, port: u16) -> String {
    format!(
        r#"set -e
D=$(mktemp -d /tmp/lifeboat-cmdenv-XXXXXX)
chmod 755 "$D"
run_as() {{ if [ "$(id -u)" = 0 ]; then chown -R lifeboat-test "$D"; runuser -u lifeboat-test -- "$@"; else "$@"; fi; }}
echo "provisioning drill $LIFEBOAT_DRILL_ID ($LIFEBOAT_DRILL_KIND) in $D"
echo "datadir=$D"
run_as {bin}/initdb -D "$D/data" -A trust -U postgres --no-sync >/dev/null
run_as {bin}/pg_ctl -D "$D/data" -l "$D/log" -w -o "-p {port} -k $D -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
echo "url=postgres://postgres@127.0.0.1:{port}/postgres"
"#,
        bin = bin.display()
    )
}

fn pg_teardown_script(bin: &Path, marker: &Path) -> String {
    format!(
        r#"D="$LIFEBOAT_ENV_DATADIR"
if [ -n "$D" ] && [ -d "$D/data" ]; then
  if [ "$(id -u)" = 0 ]; then runuser -u lifeboat-test -- {bin}/pg_ctl -D "$D/data" -m immediate stop >/dev/null 2>&1 || true
  else {bin}/pg_ctl -D "$D/data" -m immediate stop >/dev/null 2>&1 || true; fi
fi
[ -n "$D" ] && rm -rf "$D"
echo "$LIFEBOAT_DRILL_ID" >> {marker}
"#,
        bin = bin.display(),
        marker = marker.display()
    )
}

fn toml_str(s: &str) -> String {
    format!("'''\n{s}'''")
}

#[test]
fn command_environment_provisions_tears_down_and_sweeps() {
    let src = shop_server();
    let sc = src.connection().unwrap().clone();
    let bin = sc.bin_dir.clone().unwrap();
    let ws = Workspace::new();
    let marker = ws.path().join("teardowns.log");
    let port = lifeboat::drill::env::free_port().unwrap();
    let plan = backed_up_shop(
        &ws,
        &sc,
        "cmd",
        &format!(
            "environment = \"command\"\nprovision = {}\nteardown = {}\ntimeout = \"2m\"\nbin_dir = \"{}\"",
            toml_str(&pg_provision_script(&bin, port)),
            toml_str(&pg_teardown_script(&bin, &marker)),
            bin.display()
        ),
    );

    // 1. A real server from the user's script: drilled, then their teardown removes it.
    let tmp = drill_tmp();
    let o = drill(&ws, &plan, tmp.path(), &[], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r = report(&o);
    assert_eq!(r["result"], "passed", "{r:#}");
    assert_eq!(r["environment"], "command");
    assert_eq!(r["checks"][0]["kind"], "row_counts");
    assert_eq!(r["checks"][0]["status"], "passed", "{r:#}");
    let log = std::fs::read_to_string(&marker).expect("the teardown command ran");
    assert_eq!(log.trim(), r["id"].as_str().unwrap());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the provisioned server still listens"
    );
    assert!(env_dirs(tmp.path()).is_empty());

    // 2. A provisioning script that fails: infrastructure failure with its stderr, and the
    //    teardown still runs.
    let failing = ws.path().join("cmd-failing.toml");
    std::fs::write(
        &failing,
        std::fs::read_to_string(&plan).unwrap().replace(
            "set -e\n",
            "set -e\necho 'quota exceeded for project drills' >&2; exit 3\n",
        ),
    )
    .unwrap();
    let o = drill(&ws, &failing, tmp.path(), &[], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let r = report(&o);
    assert_eq!(r["result"], "infra_failed");
    let err = r["error"].as_str().unwrap();
    assert!(
        err.contains("provision command exited with status 3"),
        "{err}"
    );
    assert!(err.contains("quota exceeded for project drills"), "{err}");
    assert_eq!(std::fs::read_to_string(&marker).unwrap().lines().count(), 2);
    assert!(env_dirs(tmp.path()).is_empty());

    // 3. A drill killed outright leaves its command environment; the next drill runs the
    //    saved teardown command before it starts.
    let orphan = tmp.path().join("lifeboat-env-command-orphan1");
    std::fs::create_dir(&orphan).unwrap();
    let mut dead = Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    std::fs::write(orphan.join("owner.pid"), dead_pid.to_string()).unwrap();
    std::fs::write(
        orphan.join("teardown.sh"),
        format!("echo \"$LIFEBOAT_DRILL_ID\" >> {}\n", marker.display()),
    )
    .unwrap();
    std::fs::write(
        orphan.join("teardown.env"),
        "LIFEBOAT_DRILL_ID=orphaned-drill\n",
    )
    .unwrap();
    let o = drill(&ws, &plan, tmp.path(), &[], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let log = std::fs::read_to_string(&marker).unwrap();
    assert!(log.lines().any(|l| l == "orphaned-drill"), "{log}");
    assert!(!orphan.exists());
    assert!(env_dirs(tmp.path()).is_empty());

    // 4. SIGTERM while a slow provisioning command runs: it is stopped at once, the
    //    teardown runs (with what provisioning printed so far), exit 130.
    let slow = ws.path().join("cmd-slow.toml");
    std::fs::write(
        &slow,
        std::fs::read_to_string(&plan)
            .unwrap()
            .replace("set -e\n", "set -e\necho container=slow-one\nsleep 297\n"),
    )
    .unwrap();
    let before = std::fs::read_to_string(&marker).unwrap().lines().count();
    let mut child = lifeboat()
        .args(["drill", "--plan"])
        .arg(&slow)
        .env("TMPDIR", tmp.path())
        .env("LIFEBOAT_STATE_DIR", ws.path().join("state"))
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !env_dirs(tmp.path()).iter().any(|d| {
        std::fs::read_to_string(d.join("teardown.env"))
            .is_ok_and(|v| v.contains("LIFEBOAT_DRILL_KIND"))
    }) {
        assert!(
            std::time::Instant::now() < deadline,
            "provisioning never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let sent = std::time::Instant::now();
    // SAFETY: signalling the child we spawned.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(
        sent.elapsed() < std::time::Duration::from_secs(30),
        "the provisioning command was not stopped: {:?}",
        sent.elapsed()
    );
    let log = std::fs::read_to_string(&marker).unwrap();
    assert_eq!(
        log.lines().count(),
        before + 1,
        "teardown did not run: {log}"
    );
    assert!(env_dirs(tmp.path()).is_empty());
    assert!(processes_matching("sleep 297").is_empty());
    drop(src);
}

/// T29: the restore target's disk is full — a directory drill into a tiny tmpfs and a
/// PostgreSQL drill whose server runs out of room — exit 15, marked as an infrastructure
/// failure, the environment torn down.
#[test]
fn a_full_restore_target_is_exit_15_and_torn_down() {
    assert!(is_root(), "this test needs root to mount a small tmpfs");
    let ws = Workspace::new();
    let small = ws.path().join("small");
    let _tmpfs = Tmpfs::mount(&small, "size=60m,mode=1777");

    // A tree bigger than the file system.
    let data = ws.path().join("big");
    std::fs::create_dir(&data).unwrap();
    let mut rng_bytes = vec![0u8; 80 << 20];
    rand::RngCore::fill_bytes(
        &mut <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(29),
        &mut rng_bytes,
    );
    std::fs::write(data.join("blob.bin"), &rng_bytes).unwrap();
    drop(rng_bytes);
    let plan = ws.plan(
        "big",
        &format!(
            "[[jobs]]\nname = \"big\"\nschedule = \"0 3 * * *\"\n[jobs.source]\ntype = \"dir\"\npaths = [\"{}\"]\n\n[drill]\nenvironment = \"directory\"\n",
            data.display()
        ),
    );
    let o = run(lifeboat().args(["backup", "--plan"]).arg(&plan));
    assert!(o.status.success(), "backup failed: {}", stderr(&o));
    let o = drill(&ws, &plan, &small, &[], &[]);
    assert_eq!(o.status.code(), Some(15), "{}", stderr(&o));
    let r = report(&o);
    assert_eq!(r["result"], "infra_failed");
    // The error names the full file system's path (the file being preallocated or written)
    // and says it is out of space.
    let error = r["error"].as_str().unwrap();
    assert!(
        (error.contains("out of space writing") || error.contains("No space left on device"))
            && error.contains(&small.display().to_string()),
        "{r:#}"
    );
    assert_eq!(r["failure"], "no_space", "{r:#}");
    assert!(env_dirs(&small).is_empty(), "{:?}", env_dirs(&small));

    // A PostgreSQL drill: the throwaway server's data directory fills up during the load.
    let src = EphemeralPostgres::start(None).expect("source server");
    let sc = src.connection().unwrap().clone();
    psql(&sc, "postgres", "CREATE DATABASE shop");
    pg_tool(&sc, "pgbench", &["-i", "-s", "4", "-q", "shop"]);
    let plan = ws.plan(
        "pgbig",
        &format!(
            "[[jobs]]\nname = \"shop\"\nschedule = \"0 3 * * *\"\n[jobs.source]\ntype = \"postgres\"\nhost = \"{}\"\nport = {}\nuser = \"postgres\"\ndatabase = \"shop\"\nbin_dir = \"{}\"\n\n[drill]\nenvironment = \"ephemeral-postgres\"\n",
            sc.socket.as_deref().unwrap().display(),
            sc.port,
            sc.bin_dir.as_ref().unwrap().display()
        ),
    );
    let o = run(lifeboat().args(["backup", "--plan"]).arg(&plan));
    assert!(o.status.success(), "backup failed: {}", stderr(&o));
    let o = drill(&ws, &plan, &small, &[], &[]);
    let r = report(&o);
    assert_eq!(o.status.code(), Some(15), "{r:#}");
    assert_eq!(r["result"], "infra_failed");
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("No space left on device"),
        "{r:#}"
    );
    assert!(env_dirs(&small).is_empty(), "{:?}", env_dirs(&small));
    assert!(processes_matching(&small.display().to_string()).is_empty());
    drop(src);
}
