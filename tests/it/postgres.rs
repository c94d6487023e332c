//! PostgreSQL end to end against real throwaway servers: a realistic database (pgbench
//! tables plus many types, sequences, a view, a function, a role and large objects) is
//! backed up through a plan, restored into a fresh server, and `pg_dump` of both sides must
//! be identical. Also: row counts and WAL position in the snapshot metadata, `plan check`,
//! refusal of a non-empty target, `--force`, and parallel restore.

use crate::support;

use lifeboat::drill::env::{Environment, EphemeralPostgres};
use support::*;

const SCHEMA: &str = r#"
CREATE ROLE shop_reader LOGIN;
CREATE SCHEMA shop;
CREATE TYPE shop.mood AS ENUM ('sad', 'ok', 'happy');
CREATE SEQUENCE shop.invoice_no START 1000 INCREMENT 7;
CREATE TABLE shop.things (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    price numeric(12,2),
    tags text[],
    attrs jsonb,
    born date,
    seen timestamptz,
    span interval,
    ip inet,
    uid uuid,
    raw bytea,
    mood shop.mood,
    ok boolean,
    ratio double precision,
    box point
);
INSERT INTO shop.things (name, price, tags, attrs, born, seen, span, ip, uid, raw, mood, ok, ratio, box)
SELECT 'thing ' || g || ' ✓ ünïcödé', g * 1.25, ARRAY['a' || g, 'b'], jsonb_build_object('g', g, 'half', g / 2.0),
       date '2020-01-01' + g, timestamptz '2024-05-06 07:08:09+00' + g * interval '1 minute', g * interval '1 second',
       ('10.0.' || (g % 250) || '.1')::inet, md5(g::text)::uuid, decode(md5(g::text), 'hex'),
       (ARRAY['sad','ok','happy']::shop.mood[])[1 + g % 3], g % 2 = 0, g / 7.0, point(g, -g)
FROM generate_series(1, 5000) g;
SELECT nextval('shop.invoice_no') FROM generate_series(1, 5);
CREATE VIEW shop.expensive AS SELECT id, name FROM shop.things WHERE price > 3000;
CREATE FUNCTION shop.total(m shop.mood) RETURNS numeric LANGUAGE sql STABLE AS $$ SELECT sum(price) FROM shop.things WHERE mood = m $$;
GRANT USAGE ON SCHEMA shop TO shop_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA shop TO shop_reader;
SELECT lo_from_bytea(0, convert_to(repeat('large object ' || g, 1000), 'UTF8')) FROM generate_series(1, 3) g;
COMMENT ON TABLE shop.things IS 'things we sell';
"#;

/// `pg_dump` in plain format, without the per-run `\restrict` key lines (PostgreSQL
/// 15.14+ prints a random key there), which is the only normalisation needed between two
/// servers of the same version.
fn normalized_dump(c: &lifeboat::drill::env::ConnectionInfo, db: &str) -> String {
    let o = pg_tool(c, "pg_dump", &["--no-sync", "-d", db]);
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn pg_job(name: &str, c: &lifeboat::drill::env::ConnectionInfo, db: &str, extra: &str) -> String {
    format!(
        "[[jobs]]\nname = \"{name}\"\nschedule = \"0 3 * * *\"\n[jobs.source]\ntype = \"postgres\"\nhost = \"{}\"\nport = {}\nuser = \"postgres\"\ndatabase = \"{db}\"\nbin_dir = \"{}\"\n{extra}\n",
        c.socket.as_deref().unwrap().display(),
        c.port,
        c.bin_dir.as_ref().unwrap().display()
    )
}

#[test]
fn postgres_backup_restores_identically() {
    let src = EphemeralPostgres::start(None).expect("source server");
    let sc = src.connection().unwrap().clone();
    psql(&sc, "postgres", "CREATE DATABASE shop");
    pg_tool(&sc, "pgbench", &["-i", "-s", "1", "-q", "shop"]);
    psql(&sc, "shop", SCHEMA);

    let ws = Workspace::new();
    let plan = ws.plan("pg", &pg_job("shop", &sc, "shop", "row_counts = \"exact\""));

    // plan check: valid, tools found, database and repository reachable.
    let o = run(lifeboat().args(["plan", "check"]).arg(&plan));
    assert!(o.status.success(), "plan check failed");
    assert!(stdout(&o).contains("plan is ready"));

    let o = run(lifeboat().args(["backup", "--plan"]).arg(&plan));
    assert!(o.status.success(), "backup failed");
    let snaps = ws.snapshots(&plan);
    assert_eq!(snaps.len(), 1);
    let meta = &snaps[0]["source_meta"];
    assert_eq!(snaps[0]["source_kind"], "postgres");
    assert_eq!(
        meta["row_counts"]["tables"]["public.pgbench_accounts"],
        100000
    );
    assert_eq!(meta["row_counts"]["tables"]["shop.things"], 5000);
    assert!(
        meta["wal_lsn"].as_str().is_some_and(|l| l.contains('/')),
        "{meta}"
    );
    assert!(meta["server_version"]
        .as_str()
        .unwrap()
        .starts_with(&psql(&sc, "shop", "SHOW server_version")[..2]));
    assert!(meta["database_size"].as_u64().unwrap() > 1_000_000);
    assert!(meta["globals"]["bytes"].as_u64().unwrap() > 0);
    // The source left no session behind (the snapshot transaction was closed).
    assert_eq!(
        psql(
            &sc,
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'lifeboat'"
        ),
        "0"
    );

    // Restore into a fresh server, roles first.
    let dst = EphemeralPostgres::start(None).expect("target server");
    let dc = dst.connection().unwrap().clone();
    let url = dc.url("shop");
    let o = run(lifeboat().args(["restore", "--plan"]).arg(&plan).args([
        "--job",
        "shop",
        "latest",
        "--globals",
        "--to",
        &url,
    ]));
    assert!(o.status.success(), "restore failed");
    assert_eq!(
        psql(
            &dc,
            "postgres",
            "SELECT count(*) FROM pg_roles WHERE rolname = 'shop_reader'"
        ),
        "1"
    );
    assert_eq!(
        psql(&dc, "shop", "SELECT count(*) FROM pg_largeobject_metadata"),
        "3"
    );
    assert_eq!(
        psql(&dc, "shop", "SELECT last_value FROM shop.invoice_no"),
        psql(&sc, "shop", "SELECT last_value FROM shop.invoice_no")
    );
    let (a, b) = (normalized_dump(&sc, "shop"), normalized_dump(&dc, "shop"));
    assert!(
        a.len() > 10_000_000,
        "dump is suspiciously small: {}",
        a.len()
    );
    assert!(a == b, "pg_dump of the source and of the restore differ");

    // A non-empty target is refused (exit 2), and accepted with --force.
    let o = run(lifeboat()
        .args(["restore", "--plan"])
        .arg(&plan)
        .args(["--job", "shop", "latest", "--to", &url]));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("is not empty"), "{}", stderr(&o));
    psql(&dc, "shop", "DELETE FROM shop.things WHERE id < 100");
    let o = run(lifeboat()
        .args(["restore", "--plan"])
        .arg(&plan)
        .args(["--job", "shop", "latest", "--force", "--to", &url]));
    assert!(o.status.success(), "forced restore failed");
    assert_eq!(
        psql(&dc, "shop", "SELECT count(*) FROM shop.things"),
        "5000"
    );

    // Parallel restore (archive staged in a temp file) into a new database.
    let o = run(lifeboat().args(["restore", "--plan"]).arg(&plan).args([
        "--job",
        "shop",
        "latest",
        "--jobs",
        "2",
        "--to",
        &dc.url("shop2"),
    ]));
    assert!(o.status.success(), "parallel restore failed");
    assert_eq!(
        psql(&dc, "shop2", "SELECT count(*) FROM pgbench_accounts"),
        "100000"
    );

    // The directory format: parallel pg_dump staged in a temp dir, parallel pg_restore.
    let dplan = ws.plan(
        "pgdir",
        &pg_job(
            "shopdir",
            &sc,
            "shop",
            "format = \"directory\"\njobs = 2\nglobals = false",
        ),
    );
    let o = run(lifeboat().args(["backup", "--plan"]).arg(&dplan));
    assert!(o.status.success(), "directory-format backup failed");
    let snaps = ws.snapshots(&dplan);
    assert_eq!(snaps[0]["source_meta"]["dump"]["format"], "directory");
    assert_eq!(
        snaps[0]["source_meta"]["row_counts"]["tables"]["shop.things"],
        5000
    );
    let spools = || {
        std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("lifeboat-pg"))
            .count()
    };
    let o = run(lifeboat().args(["restore", "--plan"]).arg(&dplan).args([
        "--job",
        "shopdir",
        "latest",
        "--jobs",
        "2",
        "--to",
        &dc.url("shop3"),
    ]));
    assert!(o.status.success(), "directory-format restore failed");
    assert!(
        normalized_dump(&dc, "shop3") == a,
        "directory-format round trip differs"
    );
    assert_eq!(spools(), 0, "a spool directory was left in the temp dir");

    // A second backup of unchanged data reuses chunks: the dump is uncompressed, so the
    // repository deduplicates it (a compressed dump would be all new bytes every time). Only
    // the archive header changes (it carries the dump time), so only the chunk holding it is
    // new — but over pgbench's low-entropy rows that chunk can grow to the 8 MiB chunk
    // maximum, so of this ~11 MiB dump at least ~3 MiB must be reused.
    let o = run(lifeboat().args(["backup", "--json", "--plan"]).arg(&plan));
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let added = v["jobs"][0]["summary"]["bytes_added"].as_u64().unwrap();
    let processed = v["jobs"][0]["summary"]["bytes_processed"].as_u64().unwrap();
    assert!(
        processed - added >= 2 << 20,
        "second backup added {added} of {processed} bytes"
    );

    // What pg_dump leaves out on purpose it says only as a warning: a non-superuser backup
    // role dumps no subscriptions. The run succeeds and carries the warning (text and JSON).
    psql(
        &sc,
        "postgres",
        "CREATE ROLE reader LOGIN IN ROLE pg_read_all_data",
    );
    // (pg_read_all_data does not cover large objects: their owner grants them)
    psql(
        &sc,
        "shop",
        "DO $$ DECLARE o oid; BEGIN FOR o IN SELECT oid FROM pg_largeobject_metadata LOOP EXECUTE format('GRANT SELECT ON LARGE OBJECT %s TO reader', o); END LOOP; END $$",
    );
    psql(
        &sc,
        "shop",
        "CREATE PUBLICATION things_pub FOR TABLE shop.things",
    );
    psql(
        &sc,
        "shop",
        "CREATE SUBSCRIPTION things_sub CONNECTION 'dbname=nowhere' PUBLICATION things_pub WITH (connect = false)",
    );
    let reader = ws.plan(
        "reader",
        &pg_job("shop", &sc, "shop", "globals = false")
            .replace("user = \"postgres\"", "user = \"reader\""),
    );
    let o = run(lifeboat().args(["backup", "--json", "--plan"]).arg(&reader));
    assert!(
        o.status.success(),
        "backup as reader failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let warnings = v["jobs"][0]["warnings"].to_string();
    assert!(warnings.contains("subscriptions not dumped"), "{v:#}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("subscriptions not dumped"),
        "warned on stderr too"
    );
}

#[test]
fn plan_check_reports_unreachable_database_and_bad_file() {
    let ws = Workspace::new();
    // Valid file, but nothing listens on that socket directory.
    let dead = ws.path().join("nosock");
    std::fs::create_dir(&dead).unwrap();
    let plan = ws.plan(
        "dead",
        &format!("[[jobs]]\nname = \"db\"\nschedule = \"0 3 * * *\"\n[jobs.source]\ntype = \"postgres\"\nhost = \"{}\"\nport = 1\ndatabase = \"x\"\n", dead.display()),
    );
    let o = run(lifeboat().args(["plan", "check"]).arg(&plan));
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("not reachable"), "{}", stdout(&o));
    assert!(stdout(&o).contains("ok      repository"), "{}", stdout(&o));

    let bad = ws.plan("bad", "[[jobs]]\nname = \"db\"\nschedule = \"at noon\"\n[jobs.source]\ntype = \"dir\"\npaths = [\"/etc\"]\n");
    let o = run(lifeboat().args(["plan", "check"]).arg(&bad));
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(
        out.contains(&format!("{}:13: jobs[0].schedule", bad.display())),
        "{out}"
    );
    assert!(out.contains("fix: use 5 fields"), "{out}");
}
