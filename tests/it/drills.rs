//! `lifeboat drill` end to end against real throwaway servers: a PostgreSQL database backed
//! up through a plan is drilled (checks pass, RTO/RPO reported, recorded in the catalog,
//! nothing left behind), a failing expectation exits 16, a missed RTO exits 17, SIGTERM in
//! the middle tears the server down and exits 130, and a server orphaned by `kill -9` is
//! swept by the next drill. Also a MariaDB drill and a directory drill with file checks.
//!
//! Each drill runs with its own TMPDIR, so "left behind" is exact: no `lifeboat-env-*`
//! directory in it and no process whose command line names it.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use lifeboat::drill::env::{Environment, EphemeralMariadb, EphemeralPostgres};
use support::*;

fn drill_cmd(ws: &Workspace, plan: &Path, tmp: &Path) -> Command {
    let mut c = lifeboat();
    c.args(["drill", "--plan"])
        .arg(plan)
        .env("TMPDIR", tmp)
        .env("LIFEBOAT_STATE_DIR", ws.path().join("state"));
    c
}

fn drill(ws: &Workspace, plan: &Path, tmp: &Path, json: bool) -> Output {
    let mut c = drill_cmd(ws, plan, tmp);
    if json {
        c.arg("--json");
    }
    run(&mut c)
}

/// Nothing of a drill may survive it: no environment directory, no server process.
fn assert_nothing_left(tmp: &Path) {
    assert_eq!(
        env_dirs(tmp),
        Vec::<PathBuf>::new(),
        "environment left behind"
    );
    let procs = processes_matching(&tmp.display().to_string());
    assert!(procs.is_empty(), "processes left behind: {procs:#?}");
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn reports(o: &Output) -> Vec<serde_json::Value> {
    serde_json::from_slice(&o.stdout).expect("drill --json prints the reports")
}

fn pg_job(c: &lifeboat::drill::env::ConnectionInfo) -> String {
    format!(
        "[[jobs]]\nname = \"shop\"\nschedule = \"0 3 * * *\"\n[jobs.source]\ntype = \"postgres\"\nhost = \"{}\"\nport = {}\nuser = \"postgres\"\ndatabase = \"shop\"\nbin_dir = \"{}\"\nrow_counts = \"exact\"\n",
        c.socket.as_deref().unwrap().display(),
        c.port,
        c.bin_dir.as_ref().unwrap().display()
    )
}

#[test]
fn postgres_drills_pass_fail_miss_and_clean_up() {
    let src = EphemeralPostgres::start(None).expect("source server");
    let sc = src.connection().unwrap().clone();
    psql(&sc, "postgres", "CREATE DATABASE shop");
    pg_tool(&sc, "pgbench", &["-i", "-s", "1", "-q", "shop"]);

    let ws = Workspace::new();
    let port_file = ws.path().join("drill.port");
    std::fs::write(
        ws.path().join("pass.toml"),
        format!(
            r#"
[[sql]]
name = "accounts loaded"
query = "SELECT count(*) FROM pgbench_accounts"
expect = {{ min = 100000, max = 100000 }}
[[command]]
name = "client reaches the restored server"
run = ["sh", "-c", "echo $PGPORT > {} && test \"$PGDATABASE\" = shop && test \"$(psql -X -tAc 'SELECT count(*) FROM pgbench_branches')\" = 1 && ! psql -X -h 127.0.0.1 -tAc 'SELECT 1' 2>/dev/null && test \"$(stat -c %a \"$PGHOST\")\" = 700"]
"#,
            port_file.display()
        ),
    )
    .unwrap();
    std::fs::write(
        ws.path().join("fail.toml"),
        "[[sql]]\nname = \"impossible\"\nquery = \"SELECT count(*) FROM pgbench_accounts\"\nexpect = { min = 999999999 }\n",
    )
    .unwrap();
    let plan = ws.plan(
        "pg",
        &format!(
            "{}\n[drill]\nenvironment = \"ephemeral-postgres\"\nrestore_tests = [\"pass.toml\"]\n",
            pg_job(&sc)
        ),
    );
    let o = run(lifeboat().args(["backup", "--plan"]).arg(&plan));
    assert!(o.status.success(), "backup failed");

    // 1. A passing drill.
    let tmp = drill_tmp();
    let o = drill(&ws, &plan, tmp.path(), true);
    assert_eq!(o.status.code(), Some(0), "drill should pass");
    let r = &reports(&o)[0];
    assert_eq!(r["result"], "passed", "{r:#}");
    assert_eq!(r["environment"], "ephemeral-postgres");
    let checks = r["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 3, "{r:#}");
    assert!(checks.iter().all(|c| c["status"] == "passed"), "{r:#}");
    let rc = checks.iter().find(|c| c["kind"] == "row_counts").unwrap();
    assert!(
        rc["detail"].as_str().unwrap().starts_with("4 tables match"),
        "{rc}"
    );
    let phases: Vec<&str> = r["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
    assert_eq!(
        phases,
        ["provision", "fetch", "load", "checks", "teardown"],
        "{r:#}"
    );
    let rto = r["rto"]["measured_secs"].as_f64().unwrap();
    assert!(rto > 0.0 && rto < 1800.0, "{r:#}");
    assert_eq!(r["rto"]["target_secs"], 1800.0);
    assert_eq!(r["rto"]["met"], true);
    assert!(r["rpo"]["measured_secs"].as_f64().unwrap() >= 0.0);
    assert_eq!(r["rpo"]["target_secs"], 86400.0);
    assert!(r.get("error").is_none(), "{r:#}");
    // The environment is gone: directory (with the socket in it) and processes. (It never
    // listened on TCP, and its socket directory was private: the command check above found
    // 127.0.0.1 closed and the directory 0700 while it ran.)
    assert_nothing_left(tmp.path());
    let port: u16 = std::fs::read_to_string(&port_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(port > 0);
    // Recorded in the catalog.
    let h = run(lifeboat()
        .args(["history", "--json"])
        .env("LIFEBOAT_STATE_DIR", ws.path().join("state")));
    assert!(h.status.success());
    let hist: Vec<serde_json::Value> = serde_json::from_slice(&h.stdout).unwrap();
    let d = hist
        .iter()
        .find(|e| e["kind"] == "drill")
        .expect("the drill is in the catalog");
    assert_eq!(d["id"], r["id"]);
    assert_eq!(d["outcome"], "passed");
    assert_eq!(d["job"], "shop");
    assert!((d["rto_secs"].as_f64().unwrap() - rto).abs() < 0.01);

    // 2. A failing expectation: exit 16, and still nothing left behind.
    // Same plan name (the snapshots belong to plan "pg"), other restore tests.
    let failing = ws.path().join("pg-failing.toml");
    std::fs::write(
        &failing,
        std::fs::read_to_string(&plan)
            .unwrap()
            .replace("pass.toml", "fail.toml"),
    )
    .unwrap();
    let tmp = drill_tmp();
    let o = drill(&ws, &failing, tmp.path(), true);
    assert_eq!(o.status.code(), Some(16), "a failed check must exit 16");
    let r = &reports(&o)[0];
    assert_eq!(r["result"], "check_failed");
    let bad = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "impossible")
        .unwrap();
    assert_eq!(bad["status"], "failed");
    assert!(
        bad["detail"]
            .as_str()
            .unwrap()
            .contains("below the minimum"),
        "{bad}"
    );
    assert_nothing_left(tmp.path());

    // 3. A missed RTO: exit 17 (checks pass, the objective does not).
    let strict = ws.path().join("pgstrict.toml");
    std::fs::write(
        &strict,
        std::fs::read_to_string(&plan)
            .unwrap()
            .replace("rto = \"30m\"", "rto = \"1ms\""),
    )
    .unwrap();
    let tmp = drill_tmp();
    let o = drill(&ws, &strict, tmp.path(), false);
    assert_eq!(o.status.code(), Some(17), "a missed RTO must exit 17");
    let out = stdout(&o);
    assert!(out.contains("MISSED"), "{out}");
    assert!(out.contains("OBJECTIVE MISSED"), "{out}");
    assert_nothing_left(tmp.path());

    // 4. SIGTERM while the drill provisions or loads: the server goes, exit 130.
    let tmp = drill_tmp();
    let mut child = drill_cmd(&ws, &plan, tmp.path()).spawn().unwrap();
    wait_for("the drill environment", Duration::from_secs(60), || {
        !env_dirs(tmp.path()).is_empty()
    });
    // SAFETY: signalling the child we spawned.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "an interrupted drill exits 130");
    assert_nothing_left(tmp.path());

    // 5. kill -9 leaves an orphan server; the next drill sweeps it.
    let tmp = drill_tmp();
    let mut child = drill_cmd(&ws, &plan, tmp.path()).spawn().unwrap();
    let mut orphan = PathBuf::new();
    wait_for("the drill's server", Duration::from_secs(60), || {
        env_dirs(tmp.path()).into_iter().any(|d| {
            let up = d.join("server.pgid").exists()
                && !processes_matching(&d.display().to_string()).is_empty();
            if up {
                orphan = d;
            }
            up
        })
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !processes_matching(&orphan.display().to_string()).is_empty(),
        "kill -9 of the drill should have orphaned its server"
    );
    let o = drill(&ws, &plan, tmp.path(), false);
    assert_eq!(o.status.code(), Some(0), "the next drill passes");
    assert!(
        stderr(&o).contains(&format!(
            "removed a throwaway environment left by a dead process: {}",
            orphan.display()
        )),
        "the orphan was not swept"
    );
    assert_nothing_left(tmp.path());
    drop(src);
}

#[test]
fn mariadb_drill_passes_row_counts() {
    let src = EphemeralMariadb::start(false).expect("source server");
    let sc = src.connection().unwrap().clone();
    mariadb(&sc, None, "CREATE DATABASE shop CHARACTER SET utf8mb4");
    mariadb(
        &sc,
        Some("shop"),
        "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(50));
         INSERT INTO items SELECT seq, CONCAT('item ', seq) FROM seq_1_to_750;
         CREATE TABLE notes (id INT PRIMARY KEY);
         INSERT INTO notes SELECT seq FROM seq_1_to_20;",
    );
    // Objects that run as an account only the source server has: a drill's own server must
    // create it, or reading the view fails there with error 1449.
    mariadb(
        &sc,
        Some("shop"),
        "CREATE USER 'shop app'@'%'; GRANT ALL ON shop.* TO 'shop app'@'%';
         CREATE DEFINER = 'shop app'@'%' SQL SECURITY DEFINER VIEW big_items AS SELECT * FROM items WHERE id > 700;
         CREATE DEFINER = 'shop app'@'%' TRIGGER notes_positive BEFORE INSERT ON notes FOR EACH ROW SET NEW.id = ABS(NEW.id);
         CREATE TABLE `odd.name` (id INT); INSERT INTO `odd.name` VALUES (1), (2), (3);",
    );
    let ws = Workspace::new();
    std::fs::write(
        ws.path().join("view.toml"),
        "[[sql]]\nname = \"the definer's view reads\"\nquery = \"SELECT count(*) FROM big_items\"\nexpect = { min = 50, max = 50 }\n",
    )
    .unwrap();
    let plan = ws.plan(
        "my",
        &format!(
            "[[jobs]]\nname = \"shop\"\nschedule = \"*/30 * * * *\"\n[jobs.source]\ntype = \"mariadb\"\nsocket = \"{}\"\nuser = \"root\"\ndatabase = \"shop\"\nno_defaults = true\nrow_counts = \"exact\"\n\n[drill]\nenvironment = \"ephemeral-mariadb\"\nrestore_tests = [\"view.toml\"]\n",
            sc.socket.as_deref().unwrap().display()
        ),
    );
    let o = run(lifeboat().args(["backup", "--plan"]).arg(&plan));
    assert!(o.status.success(), "backup failed");
    let tmp = drill_tmp();
    let o = drill(&ws, &plan, tmp.path(), true);
    assert_eq!(o.status.code(), Some(0), "mariadb drill should pass");
    let r = &reports(&o)[0];
    assert_eq!(r["result"], "passed", "{r:#}");
    assert_eq!(r["environment"], "ephemeral-mariadb");
    let rc = &r["checks"][0];
    assert_eq!(rc["kind"], "row_counts");
    assert_eq!(rc["status"], "passed");
    assert!(
        rc["detail"].as_str().unwrap().starts_with("3 tables match"),
        "{rc}"
    );
    let view = &r["checks"][1];
    assert_eq!(view["name"], "the definer's view reads", "{r:#}");
    assert_eq!(view["status"], "passed", "{r:#}");
    assert_nothing_left(tmp.path());
    drop(src);
}

/// A database as production has it: objects owned by an application role, grants to a
/// read-only role, a table in a tablespace of its own. A drill restores it into a server of
/// lifeboat's own with ownership and grants as dumped — roles from the snapshot's
/// `globals.sql`, or, without one (`globals = false`), from the role names recorded at backup
/// time — and the tablespace's table in the default tablespace.
#[test]
fn postgres_drill_restores_app_roles_ownership_grants_and_tablespaces() {
    use std::os::unix::fs::MetadataExt;
    let src = EphemeralPostgres::start(None).expect("source server");
    let sc = src.connection().unwrap().clone();
    let server_dir = sc.socket.clone().unwrap();
    let ts = server_dir.join("fast-disk");
    std::fs::create_dir(&ts).unwrap();
    let owner = std::fs::metadata(&server_dir).unwrap();
    std::os::unix::fs::chown(&ts, Some(owner.uid()), Some(owner.gid())).unwrap();
    psql(&sc, "postgres", "CREATE ROLE shop_app LOGIN");
    psql(&sc, "postgres", "CREATE ROLE \"shop reader\"");
    psql(&sc, "postgres", "CREATE DATABASE shop OWNER shop_app");
    psql(
        &sc,
        "postgres",
        &format!(
            "CREATE TABLESPACE fast OWNER shop_app LOCATION '{}'",
            ts.display()
        ),
    );
    psql(
        &sc,
        "shop",
        "CREATE SCHEMA sales AUTHORIZATION shop_app;
         SET ROLE shop_app;
         CREATE TABLE sales.orders (id bigserial PRIMARY KEY, amount numeric(12,2));
         INSERT INTO sales.orders (amount) SELECT i * 1.5 FROM generate_series(1, 3000) i;
         CREATE TABLE sales.archive (id int) TABLESPACE fast;
         INSERT INTO sales.archive SELECT generate_series(1, 400);
         GRANT USAGE ON SCHEMA sales TO \"shop reader\";
         GRANT SELECT ON sales.orders TO \"shop reader\";
         RESET ROLE;
         CREATE SCHEMA \"Sales Dept\";
         CREATE TABLE \"Sales Dept\".\"Order Items\" AS SELECT generate_series(1, 77) AS id;
         CREATE SCHEMA \"a.b\"; CREATE TABLE \"a.b\".c AS SELECT generate_series(1, 3) AS x;
         CREATE SCHEMA a; CREATE TABLE a.\"b.c\" AS SELECT 1 AS x;",
    );
    let ws = Workspace::new();
    std::fs::write(
        ws.path().join("owners.toml"),
        r#"
[[sql]]
name = "orders owned by the application role"
query = "SELECT tableowner FROM pg_tables WHERE schemaname = 'sales' AND tablename = 'orders'"
expect = { equals = "shop_app" }
[[sql]]
name = "the reader may read orders"
query = "SELECT has_table_privilege('shop reader', 'sales.orders', 'SELECT')::int"
expect = { min = 1, max = 1 }
[[sql]]
name = "the archive is there, in the default tablespace"
query = "SELECT count(*) FROM sales.archive"
expect = { min = 400, max = 400 }
"#,
    )
    .unwrap();
    let job = |name: &str, globals: bool| {
        format!(
            "[[jobs]]\nname = \"{name}\"\nschedule = \"0 3 * * *\"\n[jobs.source]\ntype = \"postgres\"\nhost = \"{}\"\nport = {}\nuser = \"postgres\"\ndatabase = \"shop\"\nbin_dir = \"{}\"\nglobals = {globals}\n",
            server_dir.display(),
            sc.port,
            sc.bin_dir.as_ref().unwrap().display()
        )
    };
    let plan = ws.plan(
        "owned",
        &format!(
            "{}{}\n[drill]\nenvironment = \"ephemeral-postgres\"\nrestore_tests = [\"owners.toml\"]\n",
            job("with-globals", true),
            job("without-globals", false)
        ),
    );
    let o = run(lifeboat().args(["backup", "--plan"]).arg(&plan));
    assert!(o.status.success(), "backup failed");
    for job in ["with-globals", "without-globals"] {
        let tmp = drill_tmp();
        let mut c = drill_cmd(&ws, &plan, tmp.path());
        let o = run(c.args(["--job", job, "--json"]));
        let r = &reports(&o)[0];
        assert_eq!(o.status.code(), Some(0), "{job}: {r:#}");
        assert_eq!(r["result"], "passed", "{job}: {r:#}");
        let checks = r["checks"].as_array().unwrap();
        assert_eq!(checks.len(), 4, "{job}: {r:#}");
        assert!(
            checks.iter().all(|c| c["status"] == "passed"),
            "{job}: {r:#}"
        );
        // names with spaces, capitals and dots (a."b.c" and "a.b".c are two tables) counted
        assert!(
            checks[0]["detail"]
                .as_str()
                .unwrap()
                .starts_with("5 tables match"),
            "{job}: {r:#}"
        );
        assert_nothing_left(tmp.path());
    }
    drop(src);
}

#[test]
fn directory_drill_with_file_checks() {
    let ws = Workspace::new();
    let data = ws.path().join("site");
    std::fs::create_dir_all(data.join("conf")).unwrap();
    std::fs::write(data.join("conf/app.ini"), "port = 8080\n").unwrap();
    let hash = blake3::hash(b"port = 8080\n").to_hex().to_string();
    std::fs::write(
        ws.path().join("site-tests.toml"),
        format!(
            "[[file]]\npath = \"site/conf/app.ini\"\nmin_size = 5\nblake3 = \"{hash}\"\n[[file]]\npath = \"site/missing\"\nexists = false\n"
        ),
    )
    .unwrap();
    let plan = ws.plan(
        "files",
        &format!(
            "[[jobs]]\nname = \"site\"\nschedule = \"0 * * * *\"\n[jobs.source]\ntype = \"dir\"\npaths = [\"{}\"]\n\n[drill]\nenvironment = \"temp-dir\"\nrestore_tests = [\"site-tests.toml\"]\n",
            data.display()
        ),
    );
    let o = run(lifeboat().args(["backup", "--plan"]).arg(&plan));
    assert!(o.status.success(), "backup failed");
    let tmp = drill_tmp();
    let o = drill(&ws, &plan, tmp.path(), true);
    assert_eq!(o.status.code(), Some(0), "directory drill should pass");
    let r = &reports(&o)[0];
    assert_eq!(r["result"], "passed", "{r:#}");
    assert_eq!(r["environment"], "directory");
    let files: Vec<_> = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] == "file")
        .collect();
    assert_eq!(files.len(), 2, "{r:#}");
    assert!(files.iter().all(|c| c["status"] == "passed"), "{r:#}");
    assert!(files[0]["detail"]
        .as_str()
        .unwrap()
        .contains("blake3 matches"));

    // The drill read and verified every pack of the snapshot: the ledger shows the region
    // fully covered without any `verify` run.
    let o = run(lifeboat()
        .args(["status", "--json"])
        .env("LIFEBOAT_STATE_DIR", ws.path().join("state")));
    assert!(o.status.success());
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let cov = st["coverage"].as_array().unwrap();
    assert!(!cov.is_empty(), "{st:#}");
    assert!(
        cov.iter()
            .all(|c| c["verified_packs"].as_u64().unwrap() > 0
                && c["percent"].as_f64().unwrap() >= 99.9),
        "{st:#}"
    );

    // Changing the expectation turns the same drill into a check failure (exit 16).
    std::fs::write(
        ws.path().join("site-tests.toml"),
        "[[file]]\npath = \"site/conf/app.ini\"\nmin_size = 5000\n",
    )
    .unwrap();
    let o = drill(&ws, &plan, tmp.path(), false);
    assert_eq!(o.status.code(), Some(16));
    assert!(stdout(&o).contains("smaller than 5000 bytes"));
    assert_nothing_left(tmp.path());
}

/// A damaged backup is called damaged: with a byte flipped in the dump's pack, the drill and
/// `restore --to` fail with exit 13 and the integrity error — not with the loader's reaction
/// to a dump cut short, reported as an infrastructure failure that proves nothing.
#[test]
fn damaged_postgres_backup_is_exit_13_for_drill_and_restore() {
    let src = EphemeralPostgres::start(None).expect("source server");
    let sc = src.connection().unwrap().clone();
    psql(&sc, "postgres", "CREATE DATABASE shop");
    pg_tool(&sc, "pgbench", &["-i", "-s", "1", "-q", "shop"]);
    let ws = Workspace::new();
    let plan = ws.plan(
        "pgd",
        &format!(
            "{}\n[drill]\nenvironment = \"ephemeral-postgres\"\n",
            pg_job(&sc)
        ),
    );
    let o = run(lifeboat().args(["backup", "--plan"]).arg(&plan));
    assert!(o.status.success(), "backup failed: {}", stderr(&o));
    // A byte in the middle of the largest pack: inside a blob of the dump.
    let data = ws.path().join("repo/data");
    let mut packs: Vec<_> = list_files(&data).iter().map(|p| data.join(p)).collect();
    packs.sort_by_key(|p| std::fs::metadata(p).unwrap().len());
    let pack = packs.last().unwrap();
    let mut raw = std::fs::read(pack).unwrap();
    let mid = raw.len() / 2;
    raw[mid] ^= 0x40;
    std::fs::write(pack, &raw).unwrap();

    let tmp = drill_tmp();
    let o = drill(&ws, &plan, tmp.path(), true);
    assert_eq!(o.status.code(), Some(13), "{}", stderr(&o));
    let r = &reports(&o)[0];
    assert_eq!(r["failure"], "damaged", "{r:#}");
    assert_eq!(r["result"], "damaged", "{r:#}");
    assert_eq!(
        r["damaged_pack"].as_str(),
        pack.file_name().and_then(|n| n.to_str()),
        "{r:#}"
    );
    assert!(
        r["error"].as_str().unwrap().contains("integrity violation"),
        "{r:#}"
    );
    assert_nothing_left(tmp.path());

    let o = run(lifeboat()
        .args(["restore", "--plan"])
        .arg(&plan)
        .args(["--job", "shop", "latest", "--to"])
        .arg(format!(
            "postgres://postgres@127.0.0.1:{}/shop_copy",
            sc.port
        )));
    assert_eq!(o.status.code(), Some(13), "{}", stderr(&o));
    assert!(stderr(&o).contains("integrity violation"), "{}", stderr(&o));
    // The database the restore created is gone again: a retry is not refused as "not empty".
    assert_eq!(
        psql(
            &sc,
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'shop_copy'"
        ),
        "0",
        "the failed restore left a half-loaded database"
    );
}
