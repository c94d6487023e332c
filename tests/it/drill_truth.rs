//! Drills that tell the truth (issue 17): restore tests read typed values through a driver
//! session (NULL is a row, a tab or a newline stays inside its value, 4-byte characters
//! work whatever the locale), `[amcheck]` really checks btree indexes, and a damaged or
//! half-loaded backup is reported as what it is.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Output;

use lifeboat::drill::env::{Environment, EphemeralMariadb, EphemeralPostgres};
use support::*;

fn drill(ws: &Workspace, plan: &Path, tmp: &Path) -> Output {
    run(lifeboat()
        .args(["drill", "--json", "--plan"])
        .arg(plan)
        .env("TMPDIR", tmp)
        // A systemd unit has no LANG: the `mariadb` client then talks latin1.
        .env_remove("LANG")
        .env_remove("LC_ALL")
        .env_remove("LC_CTYPE")
        .env("LIFEBOAT_STATE_DIR", ws.path().join("state")))
}

fn report(o: &Output) -> serde_json::Value {
    let v: Vec<serde_json::Value> =
        serde_json::from_slice(&o.stdout).expect("drill --json prints the reports");
    v.into_iter().next().expect("one report")
}

fn check<'a>(r: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name:?} in {r:#}"))
}

fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("restore-tests")
        .join(name)
}

/// Restore tests whose answers the command-line clients got wrong: a one-row NULL result
/// (counted as "0 rows"), a value with a tab and a newline (split into columns and rows),
/// and 4-byte characters in a MariaDB query (ERROR 1267 in the client's latin1).
const TYPED_CHECKS: &str = r#"
[[sql]]
name = "one NULL row is one row"
query = "SELECT NULL"
expect = { rows_min = 1, rows_max = 1 }

[[sql]]
name = "a tab and a newline stay in their value"
query = "SELECT CONCAT('a', CHAR(9), 'b', CHAR(10), 'c'), 2"
expect = { rows_max = 1, equals = "a\tb\nc" }
"#;

#[test]
fn mariadb_restore_tests_see_typed_values_and_the_shipped_shop_tests_pass() {
    let src = EphemeralMariadb::start(false).expect("source server");
    let sc = src.connection().unwrap().clone();
    mariadb(&sc, None, "CREATE DATABASE shop CHARACTER SET utf8mb4");
    mariadb(&sc, Some("shop"), crate::mariadb::SCHEMA);
    let ws = Workspace::new();
    std::fs::write(
        ws.path().join("typed.toml"),
        format!(
            "{TYPED_CHECKS}
[[sql]]
name = \"4-byte characters in the query and the value\"
query = \"SELECT name FROM customers WHERE name LIKE '%🚀%' ORDER BY id LIMIT 1\"
expect = {{ equals = \"Kunde 0 — Ærø 🚀 日本語\" }}

[[sql]]
name = \"a NULL is not a number\"
query = \"SELECT NULL\"
expect = {{ min = 0 }}
"
        ),
    )
    .unwrap();
    let plan = ws.plan(
        "my",
        &format!(
            "[[jobs]]\nname = \"shop\"\nschedule = \"*/30 * * * *\"\n[jobs.source]\ntype = \"mariadb\"\nsocket = \"{}\"\nuser = \"root\"\ndatabase = \"shop\"\nno_defaults = true\nrow_counts = \"exact\"\n\n[drill]\nenvironment = \"ephemeral-mariadb\"\nrestore_tests = [\"{}\", \"typed.toml\"]\n",
            sc.socket.as_deref().unwrap().display(),
            shipped("mariadb-shop.toml").display()
        ),
    );
    let o = run(lifeboat().args(["backup", "--plan"]).arg(&plan));
    assert!(o.status.success(), "backup failed: {}", stderr(&o));
    let tmp = drill_tmp();
    let o = drill(&ws, &plan, tmp.path());
    let r = report(&o);
    for name in [
        "customers exist",
        "the order-total routine is restored",
        "utf8mb4 text survives",
        "one NULL row is one row",
        "a tab and a newline stay in their value",
        "4-byte characters in the query and the value",
    ] {
        assert_eq!(check(&r, name)["status"], "passed", "{name}: {r:#}");
    }
    let null = check(&r, "a NULL is not a number");
    assert_eq!(null["status"], "failed", "{r:#}");
    assert!(
        null["detail"]
            .as_str()
            .unwrap()
            .contains("NULL is not a number"),
        "{null}"
    );
    // Only that deliberate failure: exit 16.
    assert_eq!(o.status.code(), Some(16), "{r:#}");
    drop(src);
}

#[test]
fn postgres_restore_tests_see_typed_values() {
    let src = EphemeralPostgres::start(None).expect("source server");
    let sc = src.connection().unwrap().clone();
    psql(&sc, "postgres", "CREATE DATABASE shop");
    psql(
        &sc,
        "shop",
        "CREATE TABLE notes (id int PRIMARY KEY, body text, at timestamptz);
         INSERT INTO notes VALUES (1, E'line one\\nline\\ttwo 🚀', '2024-01-02 03:04:05+02'), (2, NULL, NULL);",
    );
    let ws = Workspace::new();
    std::fs::write(
        ws.path().join("typed.toml"),
        r#"
[[sql]]
name = "one NULL row is one row"
query = "SELECT NULL"
expect = { rows_min = 1, rows_max = 1 }

[[sql]]
name = "a tab and a newline stay in their value"
query = "SELECT body, id FROM notes WHERE id = 1"
expect = { rows_max = 1, equals = "line one\nline\ttwo 🚀" }

[[sql]]
name = "a timestamp in UTC"
query = "SELECT at FROM notes WHERE id = 1"
expect = { equals = "2024-01-02 01:04:05+00" }

[[sql]]
name = "a decimal keeps its text"
query = "SELECT 12.50::numeric(12,2)"
expect = { equals = "12.50", min = 12.5, max = 12.5 }
"#,
    )
    .unwrap();
    let job = format!(
        "[[jobs]]\nname = \"shop\"\nschedule = \"0 3 * * *\"\n[jobs.source]\ntype = \"postgres\"\nhost = \"{}\"\nport = {}\nuser = \"postgres\"\ndatabase = \"shop\"\nbin_dir = \"{}\"\nrow_counts = \"exact\"\n",
        sc.socket.as_deref().unwrap().display(),
        sc.port,
        sc.bin_dir.as_ref().unwrap().display()
    );
    let plan = ws.plan(
        "pg",
        &format!("{job}\n[drill]\nenvironment = \"ephemeral-postgres\"\nrestore_tests = [\"typed.toml\"]\n"),
    );
    let o = run(lifeboat().args(["backup", "--plan"]).arg(&plan));
    assert!(o.status.success(), "backup failed: {}", stderr(&o));
    // `ls` takes the plan, like `snapshots` and `restore` (the repository and its password
    // come from the plan; `latest` is the job's).
    let o = run(lifeboat()
        .args(["ls", "--plan"])
        .arg(&plan)
        .args(["--job", "shop", "latest"]));
    assert!(o.status.success(), "ls --plan: {}", stderr(&o));
    assert!(stdout(&o).contains("database.dump"), "{}", stdout(&o));
    let tmp = drill_tmp();
    let o = drill(&ws, &plan, tmp.path());
    let r = report(&o);
    assert_eq!(o.status.code(), Some(0), "{r:#}");
    assert_eq!(r["result"], "passed", "{r:#}");
    // The second drill in the same TMPDIR copies the initialised data directory the first
    // one left as a template instead of running initdb.
    assert!(
        template_ready(tmp.path(), "postgres-"),
        "no template was made"
    );
    let o = drill(&ws, &plan, tmp.path());
    let r2 = report(&o);
    assert_eq!(r2["result"], "passed", "{r2:#}");
    eprintln!(
        "provision: {:.2}s with initdb, {:.2}s from the template",
        phase_secs(&r, "provision"),
        phase_secs(&r2, "provision")
    );
    drop(src);
}

/// Whether `tmp` holds a finished data-directory template whose name starts with `prefix`.
fn template_ready(tmp: &Path, prefix: &str) -> bool {
    std::fs::read_dir(tmp.join("lifeboat-templates"))
        .map(|rd| {
            rd.flatten().any(|e| {
                e.file_name().to_string_lossy().starts_with(prefix)
                    && e.path().join("ready").exists()
            })
        })
        .unwrap_or(false)
}

fn phase_secs(r: &serde_json::Value, phase: &str) -> f64 {
    r["phases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["phase"] == phase)
        .filter_map(|p| p["secs"].as_f64())
        .sum()
}

/// `[amcheck]` checks btree indexes: an index page corrupted on disk fails the check (it
/// passed when pg_amcheck ran with `--no-dependent-indexes` and no pattern: tables only).
#[test]
fn amcheck_finds_a_corrupted_btree_index() {
    let srv = EphemeralPostgres::start(None).expect("throwaway cluster");
    let c = srv.connection().unwrap().clone();
    psql(&c, "postgres", "CREATE DATABASE shop");
    // A fresh index is written straight to its file, not through shared buffers: a change
    // to the file is what the next reader of the page sees.
    psql(
        &c,
        "shop",
        "CREATE TABLE items (id int, name text);
         INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 20000) g;
         CREATE INDEX items_id ON items (id);
         CHECKPOINT;",
    );
    let sql = c.sql_conn("shop");
    let rel = psql(&c, "shop", "SELECT pg_relation_filepath('items_id')");
    let data = srv.dir().unwrap().join("data");
    let file = data.join(rel);
    let mut raw = std::fs::read(&file).unwrap();
    assert!(raw.len() >= 3 * 8192, "the index has leaf pages");
    // Leaf page 1 (the first after the metapage): swap the keys of its first two data
    // items (item 1 is the high key), so the page's keys are out of order. The line
    // pointers start after the 24-byte page header; a tuple's key follows its 8-byte header.
    let page = 8192;
    let lp = |n: usize| {
        let at = page + 24 + 4 * (n - 1);
        let v = u32::from_le_bytes(raw[at..at + 4].try_into().unwrap());
        page + (v & 0x7fff) as usize
    };
    let (a, b) = (lp(2) + 8, lp(3) + 8);
    let key_a: [u8; 4] = raw[a..a + 4].try_into().unwrap();
    let key_b: [u8; 4] = raw[b..b + 4].try_into().unwrap();
    assert_ne!(key_a, key_b);
    raw[a..a + 4].copy_from_slice(&key_b);
    raw[b..b + 4].copy_from_slice(&key_a);
    std::fs::write(&file, &raw).unwrap();
    // No restart needed: the page was never read into shared buffers.
    let bad = lifeboat::drill::checks::amcheck(&sql, false, "everything");
    assert_eq!(
        bad.status,
        lifeboat::drill::checks::CheckStatus::Failed,
        "a corrupted btree index passed pg_amcheck: {bad:?}"
    );
    assert!(bad.detail.contains("items_id"), "{bad:?}");
    assert!(
        bad.detail.contains("item order invariant violated"),
        "{bad:?}"
    );
}

/// The largest pack of a workspace's repository gets one byte flipped in its middle (inside
/// a blob of the dump); returns its id.
fn damage_largest_pack(ws: &Workspace) -> String {
    damage_largest_pack_but(ws, &[])
}

/// The same among the packs not in `older` (what `list_files` listed before).
fn damage_largest_pack_but(ws: &Workspace, older: &[PathBuf]) -> String {
    let data = ws.path().join("repo/data");
    let mut packs: Vec<_> = list_files(&data)
        .into_iter()
        .filter(|p| !older.contains(p))
        .map(|p| data.join(p))
        .collect();
    packs.sort_by_key(|p| std::fs::metadata(p).unwrap().len());
    let pack = packs.last().expect("a pack to damage");
    let mut raw = std::fs::read(pack).unwrap();
    let mid = raw.len() / 2;
    raw[mid] ^= 0x40;
    std::fs::write(pack, &raw).unwrap();
    pack.file_name().unwrap().to_string_lossy().into_owned()
}

/// Every value under a key named `key`, anywhere in `v`.
fn values_of<'a>(v: &'a serde_json::Value, key: &str, out: &mut Vec<&'a serde_json::Value>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                if k == key {
                    out.push(x);
                }
                values_of(x, key, out);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| values_of(x, key, out)),
        _ => {}
    }
}

/// A damaged MariaDB backup: the drill says damaged (exit 13) and names the pack, the
/// catalog records the drill as `damaged` and the ledger the pack as damaged, and a
/// `restore --to` that meets the damage leaves no half-loaded database behind.
#[test]
fn damaged_mariadb_backup_is_named_recorded_and_leaves_nothing_half_loaded() {
    let src = EphemeralMariadb::start(false).expect("source server");
    let sc = src.connection().unwrap().clone();
    mariadb(&sc, None, "CREATE DATABASE shop CHARACTER SET utf8mb4");
    mariadb(&sc, Some("shop"), crate::mariadb::SCHEMA);
    let ws = Workspace::new();
    let plan = ws.plan(
        "myd",
        &format!(
            "[[jobs]]\nname = \"shop\"\nschedule = \"*/30 * * * *\"\n[jobs.source]\ntype = \"mariadb\"\nsocket = \"{}\"\nuser = \"root\"\ndatabase = \"shop\"\nno_defaults = true\n\n[drill]\nenvironment = \"ephemeral-mariadb\"\n",
            sc.socket.as_deref().unwrap().display()
        ),
    );
    let o = run(lifeboat().args(["backup", "--plan"]).arg(&plan));
    assert!(o.status.success(), "backup failed: {}", stderr(&o));
    let pack = damage_largest_pack(&ws);

    let tmp = drill_tmp();
    let o = drill(&ws, &plan, tmp.path());
    let r = report(&o);
    assert_eq!(o.status.code(), Some(13), "{r:#}");
    assert_eq!(r["result"], "damaged", "{r:#}");
    assert_eq!(r["failure"], "damaged", "{r:#}");
    assert_eq!(r["damaged_pack"], pack.as_str(), "{r:#}");
    let err = r["error"].as_str().unwrap();
    assert!(
        err.contains("integrity violation") && err.contains(&pack),
        "{err}"
    );
    assert!(
        !err.contains("ERROR 1064"),
        "the loader's reaction is not the verdict: {err}"
    );

    let state = [("LIFEBOAT_STATE_DIR", ws.path().join("state"))];
    let o = run(lifeboat().args(["history", "--json"]).envs(state.clone()));
    let h: serde_json::Value = serde_json::from_slice(&o.stdout).expect("history --json");
    let drills: Vec<_> = h
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "drill")
        .collect();
    assert_eq!(drills.len(), 1, "{h:#}");
    assert_eq!(drills[0]["outcome"], "damaged", "{h:#}");
    let o = run(lifeboat().args(["status", "--json"]).envs(state));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).expect("status --json");
    let mut damaged = Vec::new();
    values_of(&s, "damaged", &mut damaged);
    assert!(
        damaged.iter().any(|d| d.as_u64() == Some(1)),
        "the ledger marks the pack damaged: {s:#}"
    );
    assert_nothing_left(tmp.path());

    let o = run(lifeboat()
        .args(["restore", "--plan"])
        .arg(&plan)
        .args(["--job", "shop", "latest", "--to"])
        .arg(format!(
            "mariadb://root@/shop_copy?socket={}",
            sc.socket.as_deref().unwrap().display()
        )));
    assert_eq!(o.status.code(), Some(13), "{}", stderr(&o));
    assert!(stderr(&o).contains("integrity violation"), "{}", stderr(&o));
    assert_eq!(
        mariadb(
            &sc,
            None,
            "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'shop_copy'"
        ),
        "0",
        "the failed restore left a half-loaded database"
    );
    drop(src);
}

fn assert_nothing_left(tmp: &Path) {
    assert_eq!(
        env_dirs(tmp),
        Vec::<PathBuf>::new(),
        "environment left behind"
    );
}

/// MariaDB row counts belong to the dump's own snapshot: a backup taken while a writer
/// commits row after row drills clean (the counts were taken in a transaction opened before
/// mariadb-dump's, and differed from the dump by the commits in between).
#[test]
fn mariadb_row_counts_match_the_dump_under_write_load() {
    let src = EphemeralMariadb::start(false).expect("source server");
    let sc = src.connection().unwrap().clone();
    mariadb(&sc, None, "CREATE DATABASE shop CHARACTER SET utf8mb4");
    mariadb(
        &sc,
        Some("shop"),
        "CREATE TABLE orders (id INT AUTO_INCREMENT PRIMARY KEY, v INT, note VARCHAR(200)) ENGINE=InnoDB;
         CREATE TABLE items (id INT AUTO_INCREMENT PRIMARY KEY, order_id INT, v INT) ENGINE=InnoDB;
         INSERT INTO orders (v, note) SELECT seq, REPEAT('x', 150) FROM seq_1_to_100000;
         DELIMITER //
         CREATE PROCEDURE writer()
         BEGIN
           DECLARE i INT DEFAULT 0;
           WHILE i < 10000000 DO
             START TRANSACTION;
             INSERT INTO orders (v, note) VALUES (i, 'live');
             INSERT INTO items (order_id, v) VALUES (LAST_INSERT_ID(), i), (LAST_INSERT_ID(), i + 1);
             COMMIT;
             SET i = i + 1;
           END WHILE;
         END//
         DELIMITER ;",
    );
    // The writer: one client committing order + items transactions as fast as it can.
    let mut writer = std::process::Command::new("mariadb")
        .arg("--no-defaults")
        .arg(format!(
            "--socket={}",
            sc.socket.as_deref().unwrap().display()
        ))
        .args(["-uroot", "shop", "-e", "CALL writer()"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let committed = || {
        mariadb(&sc, Some("shop"), "SELECT COUNT(*) FROM items")
            .parse::<u64>()
            .unwrap()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while committed() < 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "the writer never got going"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let ws = Workspace::new();
    let plan = ws.plan(
        "myw",
        &format!(
            "[[jobs]]\nname = \"shop\"\nschedule = \"*/30 * * * *\"\n[jobs.source]\ntype = \"mariadb\"\nsocket = \"{}\"\nuser = \"root\"\ndatabase = \"shop\"\nno_defaults = true\nrow_counts = \"exact\"\n\n[drill]\nenvironment = \"ephemeral-mariadb\"\n",
            sc.socket.as_deref().unwrap().display()
        ),
    );
    let before = committed();
    let o = run(lifeboat().args(["backup", "--plan"]).arg(&plan));
    let after = committed();
    let _ = writer.kill();
    let _ = writer.wait();
    assert!(o.status.success(), "backup failed: {}", stderr(&o));
    assert!(
        after > before,
        "the writer committed nothing during the backup ({before} rows of items before and after)"
    );
    let tmp = drill_tmp();
    let o = drill(&ws, &plan, tmp.path());
    let r = report(&o);
    let rc = check(&r, "row counts");
    assert_eq!(rc["status"], "passed", "{r:#}");
    assert_eq!(o.status.code(), Some(0), "{r:#}");
    drop(src);
}

/// A drill's servers never write to TMPDIR: a root-owned 0755 TMPDIR (what the drill
/// unit's hint produced) works for MariaDB, and a 0700 one the server user cannot even
/// enter is refused up front with what is needed.
#[test]
fn drills_survive_a_tmpdir_the_server_user_cannot_write() {
    use std::os::unix::fs::PermissionsExt;
    if !is_root() {
        eprintln!("skipped: the servers run as another user only when the drill runs as root");
        return;
    }
    let src = EphemeralMariadb::start(false).expect("source server");
    let sc = src.connection().unwrap().clone();
    mariadb(&sc, None, "CREATE DATABASE shop CHARACTER SET utf8mb4");
    mariadb(
        &sc,
        Some("shop"),
        "CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t SELECT seq FROM seq_1_to_100;",
    );
    let ws = Workspace::new();
    let plan = ws.plan(
        "myt",
        &format!(
            "[[jobs]]\nname = \"shop\"\nschedule = \"*/30 * * * *\"\n[jobs.source]\ntype = \"mariadb\"\nsocket = \"{}\"\nuser = \"root\"\ndatabase = \"shop\"\nno_defaults = true\n\n[drill]\nenvironment = \"ephemeral-mariadb\"\n",
            sc.socket.as_deref().unwrap().display()
        ),
    );
    let o = run(lifeboat().args(["backup", "--plan"]).arg(&plan));
    assert!(o.status.success(), "backup failed: {}", stderr(&o));
    let tmp = tempfile::Builder::new()
        .prefix("lifeboat-roottmp-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = drill(&ws, &plan, tmp.path());
    let r = report(&o);
    assert_eq!(o.status.code(), Some(0), "{r:#}");
    assert_nothing_left(tmp.path());
    // Again, from the data-directory template the first drill left.
    assert!(
        template_ready(tmp.path(), "mariadb-"),
        "no template was made"
    );
    let o = drill(&ws, &plan, tmp.path());
    let r2 = report(&o);
    assert_eq!(o.status.code(), Some(0), "{r2:#}");
    eprintln!(
        "provision: {:.2}s with mariadb-install-db, {:.2}s from the template",
        phase_secs(&r, "provision"),
        phase_secs(&r2, "provision")
    );
    assert_nothing_left(tmp.path());

    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let o = drill(&ws, &plan, tmp.path());
    let r = report(&o);
    assert_eq!(o.status.code(), Some(1), "{r:#}");
    assert_eq!(r["failure"], "provision", "{r:#}");
    let err = r["error"].as_str().unwrap();
    assert!(
        err.contains(&tmp.path().display().to_string())
            && err.contains("cannot be entered by the server user")
            && err.contains("TMPDIR"),
        "{err}"
    );
    assert_nothing_left(tmp.path());
    drop(src);
}

/// Two backups of a database: a healthy one, then one with a big table more whose new pack
/// gets a byte flipped. Returns (healthy snapshot id, damaged pack).
fn healthy_then_damaged(ws: &Workspace, plan: &Path, grow: impl FnOnce()) -> (String, String) {
    let o = run(lifeboat().args(["backup", "--plan"]).arg(plan));
    assert!(o.status.success(), "backup failed: {}", stderr(&o));
    let healthy = ws.snapshots(plan)[0]["id"].as_str().unwrap().to_string();
    let before = list_files(&ws.path().join("repo/data"));
    grow();
    let o = run(lifeboat().args(["backup", "--plan"]).arg(plan));
    assert!(o.status.success(), "backup failed: {}", stderr(&o));
    // The largest pack only the second backup wrote: inside the big table's data, which
    // the loader reaches after it created the other tables.
    (healthy, damage_largest_pack_but(ws, &before))
}

/// A restore that met the damage: exit 13 and the integrity error (not the loader's).
fn assert_damaged(o: &Output, pack: &str) {
    assert_eq!(o.status.code(), Some(13), "{}", stderr(o));
    assert!(
        stderr(o).contains("integrity violation"),
        "{pack}: {}",
        stderr(o)
    );
}

fn restore_to(plan: &Path, snapshot: &str, url: &str) -> Output {
    run(lifeboat()
        .args(["restore", "--plan"])
        .arg(plan)
        .args(["--job", "shop", snapshot, "--to", url]))
}

/// The damaged snapshot again, with `--force`, into the database the retry filled.
fn force_damaged(plan: &Path, url: &str, pack: &str) -> String {
    let o = run(lifeboat()
        .args(["restore", "--plan"])
        .arg(plan)
        .args(["--job", "shop", "latest", "--force", "--to", url]));
    assert_damaged(&o, pack);
    stderr(&o)
}

/// A failed `restore --to` into a database that existed (empty) leaves it as it was: the
/// PostgreSQL load ran in one transaction, rolled back; the retry needs no `--force`.
#[test]
fn failed_postgres_restore_into_an_empty_database_leaves_it_empty() {
    let src = EphemeralPostgres::start(None).expect("source server");
    let sc = src.connection().unwrap().clone();
    psql(&sc, "postgres", "CREATE DATABASE shop");
    pg_tool(&sc, "pgbench", &["-i", "-s", "1", "-q", "shop"]);
    let ws = Workspace::new();
    let plan = ws.plan(
        "pge",
        &format!(
            "[[jobs]]\nname = \"shop\"\nschedule = \"0 3 * * *\"\n[jobs.source]\ntype = \"postgres\"\nhost = \"{}\"\nport = {}\nuser = \"postgres\"\ndatabase = \"shop\"\nbin_dir = \"{}\"\n",
            sc.socket.as_deref().unwrap().display(),
            sc.port,
            sc.bin_dir.as_ref().unwrap().display()
        ),
    );
    let (healthy, pack) = healthy_then_damaged(&ws, &plan, || {
        psql(
            &sc,
            "shop",
            "CREATE TABLE zbig AS SELECT g AS id, md5(random()::text) || md5(random()::text) AS v FROM generate_series(1, 300000) g",
        );
    });
    psql(&sc, "postgres", "CREATE DATABASE shop_copy");
    let url = format!("postgres://postgres@127.0.0.1:{}/shop_copy", sc.port);
    let objects = "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'";

    let o = restore_to(&plan, "latest", &url);
    assert_damaged(&o, &pack);
    assert!(stderr(&o).contains("empty again"), "{}", stderr(&o));
    assert_eq!(
        psql(
            &sc,
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'shop_copy'"
        ),
        "1",
        "the database existed before the restore and must still exist"
    );
    assert_eq!(
        psql(&sc, "shop_copy", objects),
        "0",
        "the failed restore left part of the dump in the database"
    );

    let o = restore_to(&plan, &healthy, &url);
    assert!(o.status.success(), "retry without --force: {}", stderr(&o));
    assert_eq!(
        psql(&sc, "shop_copy", "SELECT count(*) FROM pgbench_accounts"),
        "100000"
    );

    // With --force into the full database: the transaction rolled back keeps what was
    // there, and the error says so.
    let err = force_damaged(&plan, &url, &pack);
    assert!(err.contains("holds what it held before"), "{err}");
    assert_eq!(
        psql(&sc, "shop_copy", "SELECT count(*) FROM pgbench_accounts"),
        "100000"
    );
}

/// The same for MariaDB, whose DDL is not transactional: every object the failed load made
/// is dropped again, the database stays (empty), and the retry needs no `--force`.
#[test]
fn failed_mariadb_restore_into_an_empty_database_leaves_it_empty() {
    let src = EphemeralMariadb::start(false).expect("source server");
    let sc = src.connection().unwrap().clone();
    mariadb(&sc, None, "CREATE DATABASE shop CHARACTER SET utf8mb4");
    mariadb(&sc, Some("shop"), crate::mariadb::SCHEMA);
    mariadb(
        &sc,
        Some("shop"),
        "CREATE VIEW big_orders AS SELECT * FROM orders WHERE amount > 100",
    );
    let ws = Workspace::new();
    let sock = sc.socket.as_deref().unwrap().display().to_string();
    let plan = ws.plan(
        "mye",
        &format!(
            "[[jobs]]\nname = \"shop\"\nschedule = \"*/30 * * * *\"\n[jobs.source]\ntype = \"mariadb\"\nsocket = \"{sock}\"\nuser = \"root\"\ndatabase = \"shop\"\nno_defaults = true\n"
        ),
    );
    let (healthy, pack) = healthy_then_damaged(&ws, &plan, || {
        mariadb(
            &sc,
            Some("shop"),
            "CREATE TABLE zbig (id INT PRIMARY KEY, v VARCHAR(64)) ENGINE=InnoDB; INSERT INTO zbig SELECT seq, CONCAT(MD5(RAND()), MD5(RAND())) FROM seq_1_to_300000",
        );
    });
    mariadb(&sc, None, "CREATE DATABASE shop_copy CHARACTER SET utf8mb4");
    let url = format!("mariadb://root@/shop_copy?socket={sock}");
    let objects = "SELECT (SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'shop_copy') + (SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = 'shop_copy') + (SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = 'shop_copy') + (SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = 'shop_copy')";

    let o = restore_to(&plan, "latest", &url);
    assert_damaged(&o, &pack);
    assert!(stderr(&o).contains("empty again"), "{}", stderr(&o));
    assert_eq!(
        mariadb(
            &sc,
            None,
            "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'shop_copy'"
        ),
        "1",
        "the database existed before the restore and must still exist"
    );
    assert_eq!(
        mariadb(&sc, None, objects),
        "0",
        "the failed restore left part of the dump in the database"
    );

    let o = restore_to(&plan, &healthy, &url);
    assert!(o.status.success(), "retry without --force: {}", stderr(&o));
    assert_eq!(
        mariadb(&sc, Some("shop_copy"), "SELECT COUNT(*) FROM customers"),
        "2000"
    );
    assert_eq!(
        mariadb(
            &sc,
            None,
            "SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = 'shop_copy'"
        ),
        "2"
    );

    // With --force into the full database: its contents were dropped before the load, the
    // failed load's objects after it; the database is left empty, and the error says so.
    let err = force_damaged(&plan, &url, &pack);
    assert!(err.contains("the database is empty now"), "{err}");
    assert_eq!(mariadb(&sc, None, objects), "0");
}
