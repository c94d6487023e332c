//! Recovery-point sets end to end (issue 17 item 8), against a real throwaway PostgreSQL:
//! an application's database and its uploads directory are backed up as one set while a
//! writer keeps adding files and the rows that name them, drilled together (the rows'
//! files are all there with their recorded sha256, the smoke test sees both), and a file
//! lost from the directory makes the set's drill fail with exit 16 naming the row. A set
//! whose member fails gets no set manifest (INV-5).

use crate::support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lifeboat::drill::env::{ConnectionInfo, Environment, EphemeralPostgres};
use support::*;

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, b).as_ref())
}

/// The set's plan: database `app` + directory `uploads`, one set, drilled together.
fn set_plan(ws: &Workspace, c: &ConnectionInfo, bin_dir: &Path, uploads: &Path) -> PathBuf {
    std::fs::write(
        ws.path().join("app-set.toml"),
        r#"
[[file_refs]]
name = "every upload row has its file"
query = "SELECT path, sha256 FROM uploads ORDER BY id"
member = "uploads"
hash = "sha256"

[[command]]
name = "app smoke test"
run = ["sh", "-c", "n=$(psql -X -tAc 'SELECT count(*) FROM uploads') && test \"$n\" -ge 1 && test -d \"$LIFEBOAT_SET_DIR_UPLOADS\" && test \"$(ls \"$LIFEBOAT_SET_DIR_UPLOADS\" | grep -c '^f')\" -ge \"$n\""]
"#,
    )
    .unwrap();
    ws.plan(
        "app",
        &format!(
            r#"{}
[[sets]]
name = "app"
jobs = ["app-db", "uploads"]
restore_tests = ["app-set.toml"]

[drill]
environment = "ephemeral-postgres"
"#,
            app_jobs(c, bin_dir, uploads)
        ),
    )
}

/// The application's two jobs: PostgreSQL database `app` (job `app-db`) and the directory
/// `uploads` (job `uploads`).
fn app_jobs(c: &ConnectionInfo, bin_dir: &Path, uploads: &Path) -> String {
    format!(
        r#"[[jobs]]
name = "app-db"
schedule = "0 3 * * *"
[jobs.source]
type = "postgres"
host = "{}"
port = {}
user = "postgres"
database = "app"
bin_dir = "{}"
row_counts = "exact"
globals = false

[[jobs]]
name = "uploads"
schedule = "0 3 * * *"
[jobs.source]
type = "dir"
paths = ["{}"]
"#,
        c.socket.as_deref().unwrap().display(),
        c.port,
        bin_dir.display(),
        uploads.display()
    )
}

/// An application writing uploads: each file is written whole (temp name, fsync, rename),
/// then the row naming it is committed — the order real applications use.
struct Writer {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<u64>>,
}

impl Writer {
    fn start(c: &ConnectionInfo, uploads: &Path) -> Writer {
        let mut psql = Command::new(c.bin_dir.as_ref().unwrap().join("psql"));
        psql.args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-U",
            "postgres",
            "-d",
            "app",
        ])
        .arg("-h")
        .arg(c.socket.as_deref().unwrap())
        .args(["-p", &c.port.to_string()]);
        Writer::start_with(psql, uploads)
    }

    fn start_with(mut client: Command, uploads: &Path) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let (uploads, stop2) = (uploads.to_path_buf(), stop.clone());
        let handle = std::thread::spawn(move || {
            let mut psql = client
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            let mut sql = psql.stdin.take().unwrap();
            let mut n = 0u64;
            while !stop2.load(Ordering::Relaxed) {
                n += 1;
                let body: Vec<u8> = (0..(4096 + n * 37 % 9000))
                    .map(|i| (i * 31 + n * 7) as u8)
                    .collect();
                let name = format!("f{n:06}.bin");
                let tmp = uploads.join(format!(".tmp-{name}"));
                let mut f = std::fs::File::create(&tmp).unwrap();
                f.write_all(&body).unwrap();
                f.sync_all().unwrap();
                std::fs::rename(&tmp, uploads.join(&name)).unwrap();
                writeln!(
                    sql,
                    "INSERT INTO uploads (path, sha256) VALUES ('{name}', '{}');",
                    sha256_hex(&body)
                )
                .unwrap();
                sql.flush().unwrap();
                std::thread::sleep(Duration::from_millis(5));
            }
            drop(sql);
            assert!(psql.wait().unwrap().success(), "the writer's psql failed");
            n
        });
        Writer {
            stop,
            handle: Some(handle),
        }
    }

    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap()
    }
}

fn set_source() -> (EphemeralPostgres, ConnectionInfo, PathBuf) {
    let src = EphemeralPostgres::start(None).expect("source server");
    let c = src.connection().unwrap().clone();
    psql(&c, "postgres", "CREATE DATABASE app");
    psql(
        &c,
        "app",
        "CREATE TABLE uploads (id bigserial PRIMARY KEY, path text NOT NULL, sha256 text NOT NULL, created timestamptz NOT NULL DEFAULT now())",
    );
    let bin = c.bin_dir.clone().unwrap();
    (src, c, bin)
}

fn drill_json(
    ws: &Workspace,
    plan: &Path,
    tmp: &Path,
) -> (Option<i32>, Vec<serde_json::Value>, String) {
    let o = run(lifeboat()
        .args(["drill", "--json", "--plan"])
        .arg(plan)
        .env("TMPDIR", tmp)
        .env("LIFEBOAT_STATE_DIR", ws.path().join("state")));
    let reports = serde_json::from_slice(&o.stdout).unwrap_or_default();
    (o.status.code(), reports, stderr(&o))
}

#[test]
fn set_of_postgres_and_uploads_backed_up_under_writes_is_drilled_together() {
    let (_src, c, bin) = set_source();
    let ws = Workspace::new();
    let uploads = ws.path().join("uploads");
    std::fs::create_dir(&uploads).unwrap();
    let plan = set_plan(&ws, &c, &bin, &uploads);

    // Backed up while the application writes files and commits the rows naming them.
    let writer = Writer::start(&c, &uploads);
    std::thread::sleep(Duration::from_millis(800));
    // Recorded in the workspace's catalog, which `status` reads the set's recovery point from.
    let o = run(lifeboat()
        .args(["backup", "--json", "--plan"])
        .arg(&plan)
        .env("LIFEBOAT_STATE_DIR", ws.path().join("state")));
    std::thread::sleep(Duration::from_millis(300));
    let written = writer.stop();
    assert_eq!(o.status.code(), Some(0), "backup failed: {}", stderr(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let set = &summary["sets"][0];
    assert_eq!(set["set"], "app", "{summary:#}");
    assert_eq!(set["ok"], true, "{summary:#}");
    let set_id = set["set_id"].as_str().unwrap().to_string();
    let captures = set["captures"].as_array().unwrap();
    assert!(
        captures
            .iter()
            .any(|c| c["job"] == "app-db" && c["capture"] == "database_snapshot"),
        "{summary:#}"
    );
    assert!(
        captures
            .iter()
            .any(|c| c["job"] == "uploads" && c["capture"] == "plain_read"),
        "{summary:#}"
    );
    // Both member snapshots carry the set id; one manifest in the repository.
    let snaps = ws.snapshots(&plan);
    assert_eq!(snaps.len(), 2, "{snaps:#?}");
    assert!(
        snaps.iter().all(|s| s["set"] == set_id.as_str()),
        "{snaps:#?}"
    );
    let manifests = std::fs::read_dir(ws.path().join("repo/sets"))
        .unwrap()
        .count();
    assert_eq!(manifests, 1);
    assert!(written > 20, "the writer wrote only {written} files");

    // The drill restores both into one environment; every row's file is there, with its
    // recorded hash, and the smoke test sees the database and the files.
    let tmp = drill_tmp();
    let (code, reports, err) = drill_json(&ws, &plan, tmp.path());
    assert_eq!(code, Some(0), "set drill failed: {err}\n{reports:#?}");
    assert_eq!(reports.len(), 1, "{reports:#?}");
    let r = &reports[0];
    assert_eq!(r["job"], "set:app", "{r:#}");
    assert_eq!(r["set"]["name"], "app", "{r:#}");
    assert_eq!(r["set"]["set_id"], set_id.as_str(), "{r:#}");
    assert_eq!(r["set"]["members"].as_array().unwrap().len(), 2, "{r:#}");
    let check = |kind: &str| {
        r["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} check: {r:#}"))
            .clone()
    };
    let refs = check("file_refs");
    assert_eq!(refs["status"], "passed", "{r:#}");
    let rows: u64 = refs["detail"]
        .as_str()
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        rows > 10,
        "only {rows} rows were in the set's database: {refs}"
    );
    assert_eq!(check("command")["status"], "passed", "{r:#}");
    assert_eq!(check("row_counts")["status"], "passed", "{r:#}");
    assert_eq!(
        env_dirs(tmp.path()),
        Vec::<PathBuf>::new(),
        "environment left behind"
    );

    // `history` shows the set's drill.
    let o = run(lifeboat()
        .args(["history", "--json"])
        .env("LIFEBOAT_STATE_DIR", ws.path().join("state")));
    assert!(
        stdout(&o).contains("set:app"),
        "history does not show the set's drill: {}{}",
        stdout(&o),
        stderr(&o)
    );

    // `status --plan` shows the set's newest recovery point and its RPO.
    let o = run(lifeboat()
        .args(["status", "--json", "--plan"])
        .arg(&plan)
        .env("LIFEBOAT_STATE_DIR", ws.path().join("state")));
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let s0 = &st["sets"][0];
    assert_eq!(s0["set"], "app", "{st:#}");
    assert_eq!(s0["set_id"], set_id.as_str(), "{st:#}");
    assert_eq!(s0["rpo_met"], true, "{st:#}");
    assert!(s0["rpo_secs"].as_f64().unwrap() < 600.0, "{st:#}");

    // `verify` reads the set manifest (sealed) and finds every member; a damaged manifest
    // is an integrity finding naming it.
    let check = |ws: &Workspace| {
        run(lifeboat()
            .args(["verify", "--plan"])
            .arg(&plan)
            .env("LIFEBOAT_STATE_DIR", ws.path().join("state")))
    };
    assert_eq!(check(&ws).status.code(), Some(0), "{}", stderr(&check(&ws)));
    let manifest = std::fs::read_dir(ws.path().join("repo/sets"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let good = std::fs::read(&manifest).unwrap();
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 1;
    std::fs::write(&manifest, &bad).unwrap();
    let o = check(&ws);
    assert_eq!(o.status.code(), Some(13), "{}{}", stdout(&o), stderr(&o));
    assert!(
        (stdout(&o) + &stderr(&o)).contains("sets/"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    std::fs::write(&manifest, &good).unwrap();

    // A file the database names is lost from the directory; the next recovery point's
    // drill fails its cross-check, naming the row.
    let lost = psql(&c, "app", "SELECT path FROM uploads WHERE id = 5")
        .trim()
        .to_string();
    std::fs::remove_file(uploads.join(&lost)).unwrap();
    let o = run(lifeboat()
        .args(["backup", "--plan"])
        .arg(&plan)
        .env("LIFEBOAT_STATE_DIR", ws.path().join("state")));
    assert_eq!(o.status.code(), Some(0), "backup failed: {}", stderr(&o));
    let tmp = drill_tmp();
    let (code, reports, err) = drill_json(&ws, &plan, tmp.path());
    assert_eq!(code, Some(16), "{err}\n{reports:#?}");
    let r = &reports[0];
    assert_eq!(r["result"], "check_failed", "{r:#}");
    let refs = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "file_refs")
        .unwrap();
    let detail = refs["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("1 of ")
            && detail.contains(&format!("row 5 (\"{lost}\""))
            && detail.contains("missing"),
        "{detail}"
    );
}

#[test]
fn set_manifest_is_not_written_when_a_member_fails() {
    let (_src, c, bin) = set_source();
    psql(
        &c,
        "app",
        "INSERT INTO uploads (path, sha256) VALUES ('a', 'b')",
    );
    let ws = Workspace::new();
    let uploads = ws.path().join("uploads");
    std::fs::create_dir(&uploads).unwrap();
    std::fs::write(uploads.join("a"), b"x").unwrap();
    // The database member's pg_dump fails after the set froze and the directory committed.
    let broken = ws.path().join("bin");
    std::fs::create_dir(&broken).unwrap();
    for e in std::fs::read_dir(&bin).unwrap() {
        let e = e.unwrap();
        if e.file_name() != "pg_dump" {
            std::os::unix::fs::symlink(e.path(), broken.join(e.file_name())).unwrap();
        }
    }
    let dump = broken.join("pg_dump");
    std::fs::write(
        &dump,
        "#!/bin/sh\necho 'pg_dump: error: connection lost' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&dump, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let plan = set_plan(&ws, &c, &broken, &uploads);

    let o = run(lifeboat().args(["backup", "--json", "--plan"]).arg(&plan));
    assert_eq!(o.status.code(), Some(14), "{}", stderr(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let set = &summary["sets"][0];
    assert_eq!(set["ok"], false, "{summary:#}");
    assert!(
        set["error"]
            .as_str()
            .unwrap()
            .contains("member app-db failed"),
        "{summary:#}"
    );
    // The directory member committed on its own (carrying the set id); no manifest names it.
    let snaps = ws.snapshots(&plan);
    assert_eq!(snaps.len(), 1, "{snaps:#?}");
    assert_eq!(snaps[0]["job"], "uploads");
    assert_eq!(snaps[0]["set"], set["set_id"]);
    let sets_dir = ws.path().join("repo/sets");
    let manifests = std::fs::read_dir(&sets_dir).map(|d| d.count()).unwrap_or(0);
    assert_eq!(manifests, 0, "a set manifest was written for a failed set");
    // `verify` is clean: a failed set leaves no manifest to check.
    let o = run(lifeboat()
        .args(["verify", "--plan"])
        .arg(&plan)
        .env("LIFEBOAT_STATE_DIR", ws.path().join("state")));
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    // Nothing to drill: the set has no recovery point.
    let tmp = drill_tmp();
    let (code, _, err) = drill_json(&ws, &plan, tmp.path());
    assert_ne!(code, Some(0));
    assert!(err.contains("recovery point of set app"), "{err}");
}

/// Three upload files in `dir/uploads`, each with its row in the source's `uploads` table.
fn three_uploads(dir: &Path, c: &ConnectionInfo) -> PathBuf {
    let uploads = dir.join("uploads");
    std::fs::create_dir(&uploads).unwrap();
    for i in 1..=3 {
        let body = format!("upload {i}").repeat(100);
        std::fs::write(uploads.join(format!("f{i}.bin")), &body).unwrap();
        psql(
            c,
            "app",
            &format!(
                "INSERT INTO uploads (path, sha256) VALUES ('f{i}.bin', '{}')",
                sha256_hex(body.as_bytes())
            ),
        );
    }
    uploads
}

/// The set plan of the local tests with the two Garage regions as its destinations
/// (`min_regions = 1`), written to `w/app.toml` (the repository initialised in both);
/// `app_db_hooks`: a `[jobs.hooks]` table for job app-db, or "".
fn two_region_set_plan(
    w: &Path,
    c: &ConnectionInfo,
    bin: &Path,
    uploads: &Path,
    g1: &support::garage::Garage,
    g2: &support::garage::Garage,
    app_db_hooks: &str,
) -> PathBuf {
    use support::garage::{Garage, BUCKET};
    use support::regions::{lifeboat as lb_s3, repos, run as run_s3};
    let mut init = lb_s3(w);
    repos(&mut init, &[g1.url("set"), g2.url("set")]);
    init.args(support::FAST_INIT);
    assert_eq!(run_s3(init).code, 0);
    let dest = |g: &Garage| {
        format!(
            "[[destinations]]\ntype = \"s3\"\nname = \"{r}\"\nbucket = \"{BUCKET}\"\nprefix = \"set\"\nregion = \"{r}\"\nendpoint = \"{e}\"\nrequest_timeout_secs = 3\nconnect_timeout_secs = 2\nmax_retries = 1\ndeadline_secs = 20\n",
            r = g.region,
            e = g.endpoint()
        )
    };
    // The local-destination plan of the other tests, with the two regions instead.
    let ws = Workspace::new();
    let local = std::fs::read_to_string(set_plan(&ws, c, bin, uploads)).unwrap();
    std::fs::copy(ws.path().join("app-set.toml"), w.join("app-set.toml")).unwrap();
    let body = local
        .replace(
            "password_file = \"repo.pass\"",
            "password_file = \"password\"",
        )
        .replace(
            "[[destinations]]\ntype = \"local\"\npath = \"repo\"\n",
            &format!("{}{}", dest(g1), dest(g2)),
        )
        // The app-db job's table ends where the uploads job begins.
        .replacen(
            "\n[[jobs]]\nname = \"uploads\"",
            &format!("\n{app_db_hooks}\n[[jobs]]\nname = \"uploads\""),
            1,
        );
    // `min_regions` is a top-level key: it goes before the first table.
    let body = format!("min_regions = 1\n{body}");
    let plan = w.join("app.toml");
    std::fs::write(&plan, body).unwrap();
    plan
}

/// lifeboat against the Garage regions of [`two_region_set_plan`], its state under `w`.
fn set_cli(w: &Path, args: &[&str]) -> support::regions::Run {
    let mut cmd = support::regions::lifeboat(w);
    cmd.env("LIFEBOAT_STATE_DIR", w.join("state")).args(args);
    support::regions::run(cmd)
}

/// With two regions, a region that is down while the set is backed up gets no member and
/// no set manifest (the other region commits the set, exit 3); `sync` brings it the members
/// and then the manifest, and the set drills from it.
#[test]
fn set_manifest_goes_only_to_regions_holding_every_member() {
    use support::garage::Garage;
    let (_src, c, bin) = set_source();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let uploads = three_uploads(w, &c);
    let g1 = Garage::start("r1");
    let mut g2 = Garage::start("r2");
    let plan = two_region_set_plan(w, &c, &bin, &uploads, &g1, &g2, "");
    let p = plan.to_str().unwrap();
    let lb = |args: &[&str]| set_cli(w, args);

    // r2 down during the set's backup: r1 commits the set, r2 gets nothing (exit 3).
    g2.stop();
    let r = lb(&["backup", "--json", "--plan", p]);
    assert_eq!(r.code, 3, "{r:?}");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["sets"][0]["ok"], true, "{v:#}");
    let set_id = v["sets"][0]["set_id"].as_str().unwrap().to_string();
    // `status` (from the catalog's set rows): the recovery point in r1, none in r2.
    let status_sets = || {
        let r = lb(&["status", "--json", "--plan", p]);
        let v: serde_json::Value =
            serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("status --json: {e}: {r:?}"));
        v["sets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["region"].as_str().unwrap().to_string(),
                    s["set_id"].as_str().map(str::to_string),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        status_sets(),
        [
            ("r1".to_string(), Some(set_id.clone())),
            ("r2".to_string(), None)
        ]
    );
    // Each member is recorded with the regions as they stood after its backup: in r2 a
    // failed run and no snapshot, in r1 its snapshot.
    let r = lb(&["status", "--json", "--plan", p]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let jobs = v["jobs"].as_array().unwrap();
    for region in ["r1", "r2"] {
        let of: Vec<_> = jobs.iter().filter(|j| j["region"] == region).collect();
        assert!(of.len() >= 2, "the set's members in {region}: {v:#}");
        for j in of {
            assert_eq!(j["newest_snapshot"].is_null(), region == "r2", "{j:#}");
        }
    }
    g2.restart();
    let r = lb(&["drill", "--plan", p, "--region", "r2", "--job", "app"]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("no committed recovery point of set app"),
        "{r:?}"
    );

    // sync copies the members, then the manifest (and records it for r2); the set drills
    // from r2.
    let r = lb(&["sync", "--plan", p]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        status_sets(),
        [
            ("r1".to_string(), Some(set_id.clone())),
            ("r2".to_string(), Some(set_id))
        ]
    );
    let r = lb(&[
        "drill", "--json", "--plan", p, "--region", "r2", "--job", "app",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let reports: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(reports[0]["set"]["name"], "app", "{reports:#}");
    assert_eq!(reports[0]["region"], "r2", "{reports:#}");
    let refs = reports[0]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "file_refs")
        .unwrap()
        .clone();
    assert_eq!(refs["status"], "passed", "{refs}");
    assert!(
        refs["detail"].as_str().unwrap().starts_with("3 rows"),
        "{refs}"
    );
}

/// A region that fails *between* two members of a set: the first member (the directory, read
/// first) commits to both regions, then the second member's post hook kills r2, so the
/// second commits to r1 alone. The catalog records each member with the regions as they
/// stood after it — uploads in both, app-db only in r1 — and the set manifest goes to r1
/// alone (r2 lacks a member).
#[test]
fn a_region_failing_between_two_set_members_records_each_member_where_it_is() {
    use support::garage::Garage;
    let (_src, c, bin) = set_source();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let uploads = three_uploads(w, &c);
    let g1 = Garage::start("r1");
    let g2 = Garage::start("r2");
    // The post hook runs when app-db's dump has been read, before its snapshot commits.
    let hooks = format!("[jobs.hooks]\npost = \"kill -9 -{}\"\n", g2.pid());
    let plan = two_region_set_plan(w, &c, &bin, &uploads, &g1, &g2, &hooks);
    let p = plan.to_str().unwrap();
    let lb = |args: &[&str]| set_cli(w, args);
    let r = lb(&["backup", "--json", "--plan", p]);
    assert_eq!(r.code, 3, "{r:?}");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["sets"][0]["ok"], true, "{v:#}");
    let r = lb(&["status", "--json", "--plan", p]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let newest = |job: &str, region: &str| {
        v["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["job"] == job && j["region"] == region)
            .unwrap_or_else(|| panic!("job {job} in {region}: {v:#}"))["newest_snapshot"]
            .clone()
    };
    for job in ["uploads", "app-db"] {
        assert!(!newest(job, "r1").is_null(), "{job} in r1: {v:#}");
    }
    assert!(
        !newest("uploads", "r2").is_null(),
        "uploads committed to r2: {v:#}"
    );
    assert!(
        newest("app-db", "r2").is_null(),
        "app-db never reached r2 (killed before its commit): {v:#}"
    );
    let sets: Vec<_> = v["sets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["region"].as_str().unwrap().to_string(),
                s["set_id"].is_null(),
            )
        })
        .collect();
    assert_eq!(sets, [("r1".to_string(), false), ("r2".to_string(), true)]);
}

/// The same with MariaDB: the dump's consistent snapshot is opened under a brief global
/// read lock at the set's moment, the directory read after it; drilled together into a
/// throwaway MariaDB server and the scratch directory, the cross-check passes.
#[test]
fn set_of_mariadb_and_uploads_backed_up_under_writes_is_drilled_together() {
    use lifeboat::drill::env::EphemeralMariadb;
    let src = EphemeralMariadb::start(false).expect("source server");
    let c = src.connection().unwrap().clone();
    mariadb(&c, None, "CREATE DATABASE app CHARACTER SET utf8mb4");
    mariadb(
        &c,
        Some("app"),
        "CREATE TABLE uploads (id BIGINT AUTO_INCREMENT PRIMARY KEY, path VARCHAR(200) NOT NULL, sha256 CHAR(64) NOT NULL) ENGINE=InnoDB;
         CREATE TABLE filler (id INT PRIMARY KEY, pad CHAR(100)) ENGINE=InnoDB;
         INSERT INTO filler SELECT seq, REPEAT('x', 100) FROM seq_1_to_50000;",
    );
    // (The filler makes the dump far bigger than a pipe's buffer: it is still running when
    // the set's lock is released, so its open transaction is what the set waits for.)
    let ws = Workspace::new();
    let uploads = ws.path().join("uploads");
    std::fs::create_dir(&uploads).unwrap();
    std::fs::write(
        ws.path().join("app-set.toml"),
        "[[file_refs]]\nname = \"every upload row has its file\"\nquery = \"SELECT path, sha256 FROM uploads ORDER BY id\"\nhash = \"sha256\"\n",
    )
    .unwrap();
    let plan = ws.plan(
        "app",
        &format!(
            "[[jobs]]\nname = \"app-db\"\nschedule = \"0 3 * * *\"\n[jobs.source]\ntype = \"mariadb\"\nsocket = \"{}\"\nuser = \"root\"\ndatabase = \"app\"\nno_defaults = true\nrow_counts = \"exact\"\n\n[[jobs]]\nname = \"uploads\"\nschedule = \"0 3 * * *\"\n[jobs.source]\ntype = \"dir\"\npaths = [\"{}\"]\n\n[[sets]]\nname = \"app\"\njobs = [\"app-db\", \"uploads\"]\nrestore_tests = [\"app-set.toml\"]\n\n[drill]\nenvironment = \"ephemeral-mariadb\"\n",
            c.socket.as_deref().unwrap().display(),
            uploads.display()
        ),
    );
    let mut client = Command::new("mariadb");
    client
        .arg("--no-defaults")
        .arg(format!(
            "--socket={}",
            c.socket.as_deref().unwrap().display()
        ))
        .args(["-uroot", "--database=app"]);
    let writer = Writer::start_with(client, &uploads);
    std::thread::sleep(Duration::from_millis(800));
    let o = run(lifeboat()
        .args(["backup", "--json", "--plan"])
        .arg(&plan)
        .env("LIFEBOAT_LOG", "lifeboat=info"));
    let log = stderr(&o);
    let waited = log
        .lines()
        .find(|l| l.contains("global read lock released"))
        .unwrap_or_else(|| panic!("no lock release logged: {log}"));
    eprintln!("{waited}");
    std::thread::sleep(Duration::from_millis(300));
    let written = writer.stop();
    assert_eq!(o.status.code(), Some(0), "backup failed: {}", stderr(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let set = &summary["sets"][0];
    assert_eq!(set["ok"], true, "{summary:#}");
    assert!(
        set["captures"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["job"] == "app-db" && c["capture"] == "database_snapshot"),
        "{summary:#}"
    );
    assert!(written > 20, "the writer wrote only {written} files");
    let tmp = drill_tmp();
    let (code, reports, err) = drill_json(&ws, &plan, tmp.path());
    assert_eq!(code, Some(0), "set drill failed: {err}\n{reports:#?}");
    let r = &reports[0];
    assert_eq!(r["environment"], "ephemeral-mariadb", "{r:#}");
    let refs = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "file_refs")
        .unwrap();
    assert_eq!(refs["status"], "passed", "{r:#}");
    let rows: u64 = refs["detail"]
        .as_str()
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rows > 10, "{refs}");
}

/// A set of PostgreSQL + a btrfs subvolume of uploads: the subvolume's read-only snapshot
/// is taken at the set's moment (right after the database's), read later, and deleted;
/// drilled together, every row's file is there.
#[test]
fn set_with_a_btrfs_member_snapshots_it_at_the_sets_moment() {
    assert!(is_root(), "this test needs root for loop devices and mount");
    let (_src, c, bin) = set_source();
    let ws = Workspace::new();
    let fs = crate::volumes::LoopBtrfs::new(ws.path());
    let uploads = fs.mount.join("uploads");
    crate::volumes::sh(&["btrfs", "subvolume", "create", uploads.to_str().unwrap()]);
    let plan = set_plan(&ws, &c, &bin, &uploads);
    let text = std::fs::read_to_string(&plan).unwrap().replace(
        &format!("type = \"dir\"\npaths = [\"{}\"]", uploads.display()),
        &format!("type = \"btrfs\"\nsubvolume = \"{}\"", uploads.display()),
    );
    assert!(text.contains("type = \"btrfs\""));
    std::fs::write(&plan, text).unwrap();

    let writer = Writer::start(&c, &uploads);
    std::thread::sleep(Duration::from_millis(800));
    let o = run(lifeboat().args(["backup", "--json", "--plan"]).arg(&plan));
    std::thread::sleep(Duration::from_millis(300));
    let written = writer.stop();
    assert_eq!(o.status.code(), Some(0), "backup failed: {}", stderr(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let set = &summary["sets"][0];
    assert_eq!(set["ok"], true, "{summary:#}");
    assert!(
        set["captures"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["job"] == "uploads" && c["capture"] == "filesystem_snapshot"),
        "{summary:#}"
    );
    assert!(written > 20, "the writer wrote only {written} files");
    let list = crate::volumes::sh(&["btrfs", "subvolume", "list", fs.mount.to_str().unwrap()]);
    assert!(
        !list.contains("lifeboat-snap"),
        "snapshot left behind:\n{list}"
    );

    let tmp = drill_tmp();
    let (code, reports, err) = drill_json(&ws, &plan, tmp.path());
    assert_eq!(code, Some(0), "set drill failed: {err}\n{reports:#?}");
    let refs = reports[0]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "file_refs")
        .unwrap()
        .clone();
    assert_eq!(refs["status"], "passed", "{refs}");
}

/// Two PostgreSQL databases of one application: `shop_orders` rows reference
/// `shop_customers` rows. Listed orders first: a set freezes its databases in the order it
/// lists them, so the referencing database's moment comes first and every customer its
/// orders name is already in the customers' snapshot.
fn two_db_plan(ws: &Workspace, c: &ConnectionInfo, bin_dir: &Path) -> PathBuf {
    std::fs::write(
        ws.path().join("shop-set.toml"),
        r#"
[row_counts]

[[sql]]
name = "orders were restored"
job = "orders-db"
query = "SELECT count(*) FROM orders"
expect = { min = 1 }

[[sql]]
name = "customers were restored"
job = "customers-db"
query = "SELECT count(*) FROM customers"
expect = { min = 1 }

[[command]]
name = "every order's customer exists"
run = ["sh", "-c", "ids=$(psql -X -tAc 'SELECT string_agg(id::text, $$,$$) FROM customers' -d \"$LIFEBOAT_SET_DB_CUSTOMERS_DB\") && test -n \"$ids\" && bad=$(psql -X -tAc \"SELECT id, customer_id FROM orders WHERE customer_id NOT IN ($ids) ORDER BY id\" -d \"$LIFEBOAT_SET_DB_ORDERS_DB\") && if test -n \"$bad\"; then echo \"orders naming a missing customer (id|customer_id): $bad\" >&2; exit 1; fi"]
"#,
    )
    .unwrap();
    let job = |name: &str, db: &str| {
        format!(
            r#"[[jobs]]
name = "{name}"
schedule = "0 3 * * *"
[jobs.source]
type = "postgres"
host = "{}"
port = {}
user = "postgres"
database = "{db}"
bin_dir = "{}"
row_counts = "exact"
globals = false

"#,
            c.socket.as_deref().unwrap().display(),
            c.port,
            bin_dir.display(),
        )
    };
    ws.plan(
        "shop",
        &format!(
            r#"{}{}[[sets]]
name = "shop"
jobs = ["orders-db", "customers-db"]
restore_tests = ["shop-set.toml"]

[drill]
environment = "ephemeral-postgres"
"#,
            job("orders-db", "shop_orders"),
            job("customers-db", "shop_customers"),
        ),
    )
}

/// Backs the set of `plan` up while `writer` (an application, running until `stop`) writes,
/// stops it, and checks the set committed with each of `dbs` captured from a held
/// database snapshot. Returns how many writes the writer made.
fn backup_while_writing(
    plan: &Path,
    stop: &AtomicBool,
    writer: std::thread::JoinHandle<u64>,
    dbs: &[&str],
) -> u64 {
    std::thread::sleep(Duration::from_millis(800));
    let o = run(lifeboat().args(["backup", "--json", "--plan"]).arg(plan));
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap();
    assert_eq!(o.status.code(), Some(0), "backup failed: {}", stderr(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let set = &summary["sets"][0];
    assert_eq!(set["ok"], true, "{summary:#}");
    let captures = set["captures"].as_array().unwrap();
    for job in dbs {
        assert!(
            captures
                .iter()
                .any(|c| c["job"] == *job && c["capture"] == "database_snapshot"),
            "{job}: {summary:#}"
        );
    }
    written
}

#[test]
fn set_of_two_postgres_databases_is_drilled_on_one_server_with_a_cross_database_check() {
    let src = EphemeralPostgres::start(None).expect("source server");
    let c = src.connection().unwrap().clone();
    let bin = c.bin_dir.clone().unwrap();
    psql(&c, "postgres", "CREATE DATABASE shop_customers");
    psql(&c, "postgres", "CREATE DATABASE shop_orders");
    psql(
        &c,
        "shop_customers",
        "CREATE TABLE customers (id bigserial PRIMARY KEY, name text NOT NULL)",
    );
    psql(
        &c,
        "shop_orders",
        "CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id bigint NOT NULL, amount int NOT NULL)",
    );
    let ws = Workspace::new();
    let plan = two_db_plan(&ws, &c, &bin);

    // The application: a customer committed, then an order naming it, over and over,
    // while the set is backed up.
    let stop = Arc::new(AtomicBool::new(false));
    let (c2, stop2) = (c.clone(), stop.clone());
    let writer = std::thread::spawn(move || {
        let mut n = 0u64;
        while !stop2.load(Ordering::Relaxed) {
            n += 1;
            let id = psql(
                &c2,
                "shop_customers",
                &format!("INSERT INTO customers (name) VALUES ('c{n}') RETURNING id"),
            );
            let id = id.trim().lines().next().unwrap().to_string();
            psql(
                &c2,
                "shop_orders",
                &format!("INSERT INTO orders (customer_id, amount) VALUES ({id}, {n})"),
            );
        }
        n
    });
    let written = backup_while_writing(&plan, &stop, writer, &["orders-db", "customers-db"]);
    assert!(written > 10, "the writer wrote only {written} orders");

    // Drilled together on one throwaway server: both databases there under their names,
    // each queried by job, each member's row counts checked, the cross-database smoke
    // test passes.
    let tmp = drill_tmp();
    let (code, reports, err) = drill_json(&ws, &plan, tmp.path());
    assert_eq!(code, Some(0), "set drill failed: {err}\n{reports:#?}");
    let r = &reports[0];
    assert_eq!(r["job"], "set:shop", "{r:#}");
    assert_eq!(r["environment"], "ephemeral-postgres", "{r:#}");
    assert_eq!(r["set"]["members"].as_array().unwrap().len(), 2, "{r:#}");
    let checks = r["checks"].as_array().unwrap();
    let named = |name: &str| {
        checks
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no check {name:?}: {r:#}"))
    };
    assert_eq!(named("orders were restored")["status"], "passed", "{r:#}");
    assert_eq!(
        named("customers were restored")["status"],
        "passed",
        "{r:#}"
    );
    assert_eq!(
        named("every order's customer exists")["status"],
        "passed",
        "{r:#}"
    );
    // Row counts of both databases: the drill's own and the other member's.
    let counts: Vec<_> = checks
        .iter()
        .filter(|c| c["kind"] == "row_counts")
        .collect();
    assert!(
        counts
            .iter()
            .any(|c| c["name"].as_str().unwrap().contains("(customers-db)")),
        "{r:#}"
    );
    assert!(counts.iter().all(|c| c["status"] == "passed"), "{r:#}");
    assert_eq!(
        env_dirs(tmp.path()),
        Vec::<PathBuf>::new(),
        "environment left behind"
    );

    // One member's data is wrong: an order naming a customer the other database lacks.
    // The next recovery point's drill fails its cross-database check with exit 16, naming
    // the row.
    let bad = psql(
        &c,
        "shop_orders",
        "INSERT INTO orders (customer_id, amount) VALUES (987654321, 1) RETURNING id",
    );
    let bad = bad.trim().lines().next().unwrap().to_string();
    let o = run(lifeboat().args(["backup", "--plan"]).arg(&plan));
    assert_eq!(o.status.code(), Some(0), "backup failed: {}", stderr(&o));
    let tmp = drill_tmp();
    let (code, reports, err) = drill_json(&ws, &plan, tmp.path());
    assert_eq!(code, Some(16), "{err}\n{reports:#?}");
    let r = &reports[0];
    assert_eq!(r["result"], "check_failed", "{r:#}");
    let cmd = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "every order's customer exists")
        .unwrap();
    assert_eq!(cmd["status"], "failed", "{r:#}");
    assert!(
        cmd["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("{bad}|987654321")),
        "{r:#}"
    );
    drop(src);
}

/// A set spanning both engines and a directory: an application's uploads table in
/// PostgreSQL, a legacy audit table in MariaDB whose rows name those uploads, and the
/// files. Backed up while the application writes a file, commits the PostgreSQL row naming
/// it, then the MariaDB row naming that; drilled together on a throwaway server per engine
/// with a check that reads both servers and the files; then a MariaDB row naming an upload
/// PostgreSQL does not have makes the drill fail with exit 16 naming it.
#[test]
fn set_of_postgres_mariadb_and_uploads_is_drilled_on_a_server_per_engine() {
    use lifeboat::drill::env::EphemeralMariadb;
    let (_pg, pc, bin) = set_source();
    let my = EphemeralMariadb::start(false).expect("source MariaDB server");
    let mc = my.connection().unwrap().clone();
    mariadb(&mc, None, "CREATE DATABASE legacy CHARACTER SET utf8mb4");
    mariadb(
        &mc,
        Some("legacy"),
        "CREATE TABLE audit (id BIGINT AUTO_INCREMENT PRIMARY KEY, upload_id BIGINT NOT NULL, note VARCHAR(100)) ENGINE=InnoDB",
    );
    let ws = Workspace::new();
    let uploads = ws.path().join("uploads");
    std::fs::create_dir(&uploads).unwrap();
    std::fs::write(
        ws.path().join("mixed-set.toml"),
        r#"
[row_counts]

[[sql]]
name = "audit rows were restored"
job = "legacy-db"
query = "SELECT COUNT(*) FROM audit"
expect = { min = 1 }

[[file_refs]]
name = "every upload row has its file"
job = "app-db"
query = "SELECT path, sha256 FROM uploads ORDER BY id"
member = "uploads"
hash = "sha256"

[[command]]
name = "every audit row names an upload and its file"
run = ["sh", "-c", "ids=$(mariadb --no-defaults -N -B -e 'SELECT GROUP_CONCAT(upload_id ORDER BY upload_id) FROM audit' \"$LIFEBOAT_SET_DB_LEGACY_DB\") && test -n \"$ids\" && test \"$ids\" != NULL && bad=$(psql -X -tAc \"SELECT string_agg(x::text, ',') FROM unnest(ARRAY[$ids]::bigint[]) x WHERE x NOT IN (SELECT id FROM uploads)\" -d \"$LIFEBOAT_SET_DB_APP_DB\") && if test -n \"$bad\"; then echo \"audit rows naming a missing upload: $bad\" >&2; exit 1; fi && for p in $(psql -X -tAc \"SELECT path FROM uploads WHERE id IN ($ids)\"); do test -f \"$LIFEBOAT_SET_DIR_UPLOADS/$p\" || { echo \"missing file $p\" >&2; exit 1; }; done && case \"$LIFEBOAT_SET_URL_APP_DB\" in postgres://*) ;; *) exit 1;; esac && case \"$LIFEBOAT_SET_URL_LEGACY_DB\" in mariadb://*) ;; *) exit 1;; esac"]
"#,
    )
    .unwrap();
    let plan = ws.plan(
        "mixed",
        &format!(
            r#"[[jobs]]
name = "legacy-db"
schedule = "0 3 * * *"
[jobs.source]
type = "mariadb"
socket = "{}"
user = "root"
database = "legacy"
no_defaults = true
row_counts = "exact"

{}
[[sets]]
name = "app"
# The audit rows name uploads: listed first, so MariaDB's snapshot is taken before
# PostgreSQL's and every upload an audit row names is in the set.
jobs = ["legacy-db", "app-db", "uploads"]
restore_tests = ["mixed-set.toml"]

[drill]
environment = "ephemeral-mariadb"
"#,
            mc.socket.as_deref().unwrap().display(),
            app_jobs(&pc, &bin, &uploads)
        ),
    );

    // The application: a file, then the PostgreSQL row naming it (committed), then the
    // MariaDB row naming that row (committed), over and over while the set is backed up.
    let stop = Arc::new(AtomicBool::new(false));
    let (pc2, mc2, dir2, stop2) = (pc.clone(), mc.clone(), uploads.clone(), stop.clone());
    let writer = std::thread::spawn(move || {
        let mut n = 0u64;
        while !stop2.load(Ordering::Relaxed) {
            n += 1;
            let body: Vec<u8> = (0..(2048 + n * 41 % 5000))
                .map(|i| (i * 13 + n) as u8)
                .collect();
            let name = format!("f{n:06}.bin");
            std::fs::write(dir2.join(&name), &body).unwrap();
            let id = psql(
                &pc2,
                "app",
                &format!(
                    "INSERT INTO uploads (path, sha256) VALUES ('{name}', '{}') RETURNING id",
                    sha256_hex(&body)
                ),
            );
            let id = id.trim().lines().next().unwrap().to_string();
            mariadb(
                &mc2,
                Some("legacy"),
                &format!("INSERT INTO audit (upload_id, note) VALUES ({id}, 'uploaded {name}')"),
            );
        }
        n
    });
    let written = backup_while_writing(&plan, &stop, writer, &["legacy-db", "app-db"]);
    assert!(written > 10, "the writer wrote only {written} uploads");

    // Drilled together: a MariaDB and a PostgreSQL server, the files beside them.
    let tmp = drill_tmp();
    let (code, reports, err) = drill_json(&ws, &plan, tmp.path());
    assert_eq!(code, Some(0), "set drill failed: {err}\n{reports:#?}");
    let r = &reports[0];
    assert_eq!(r["job"], "set:app", "{r:#}");
    assert_eq!(
        r["environment"], "ephemeral-mariadb+ephemeral-postgres",
        "{r:#}"
    );
    assert_eq!(r["set"]["members"].as_array().unwrap().len(), 3, "{r:#}");
    let checks = r["checks"].as_array().unwrap();
    let named = |name: &str| {
        checks
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no check {name:?}: {r:#}"))
    };
    for name in [
        "audit rows were restored",
        "every upload row has its file",
        "every audit row names an upload and its file",
    ] {
        assert_eq!(named(name)["status"], "passed", "{name}: {r:#}");
    }
    // Row counts of both engines' databases, each against its own snapshot.
    let counts: Vec<_> = checks
        .iter()
        .filter(|c| c["kind"] == "row_counts")
        .collect();
    assert!(
        counts
            .iter()
            .any(|c| c["name"].as_str().unwrap().contains("(app-db)")),
        "{r:#}"
    );
    assert!(counts.iter().all(|c| c["status"] == "passed"), "{r:#}");
    let phases: Vec<String> = r["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| format!("{} {:.2}s", p["phase"], p["secs"].as_f64().unwrap_or(0.0)))
        .collect();
    eprintln!(
        "mixed set drill: rto {} s; {}",
        r["rto"]["measured_secs"],
        phases.join(", ")
    );
    assert_eq!(
        env_dirs(tmp.path()),
        Vec::<PathBuf>::new(),
        "environment left behind"
    );

    // A MariaDB row naming an upload PostgreSQL never had: the next recovery point's
    // drill fails the cross-engine check with exit 16, naming it, and both servers go.
    mariadb(
        &mc,
        Some("legacy"),
        "INSERT INTO audit (upload_id, note) VALUES (987654321, 'dangling')",
    );
    let o = run(lifeboat().args(["backup", "--plan"]).arg(&plan));
    assert_eq!(o.status.code(), Some(0), "backup failed: {}", stderr(&o));
    let tmp = drill_tmp();
    let (code, reports, err) = drill_json(&ws, &plan, tmp.path());
    assert_eq!(code, Some(16), "{err}\n{reports:#?}");
    let r = &reports[0];
    assert_eq!(r["result"], "check_failed", "{r:#}");
    let cmd = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "every audit row names an upload and its file")
        .unwrap();
    assert_eq!(cmd["status"], "failed", "{r:#}");
    assert!(
        cmd["detail"].as_str().unwrap().contains("987654321"),
        "{r:#}"
    );
    assert_eq!(
        env_dirs(tmp.path()),
        Vec::<PathBuf>::new(),
        "environment left behind"
    );

    // A damaged member (a byte flipped in the pack of PostgreSQL's new data): the set's
    // drill is exit 13, names the member and the pack, and both servers go.
    psql(
        &pc,
        "app",
        "CREATE TABLE zfill AS SELECT g AS id, md5(random()::text) || md5(random()::text) AS v FROM generate_series(1, 200000) g",
    );
    let data = ws.path().join("repo/data");
    let before = list_files(&data);
    let o = run(lifeboat().args(["backup", "--plan"]).arg(&plan));
    assert_eq!(o.status.code(), Some(0), "backup failed: {}", stderr(&o));
    let mut new: Vec<_> = list_files(&data)
        .into_iter()
        .filter(|p| !before.contains(p))
        .map(|p| data.join(p))
        .collect();
    new.sort_by_key(|p| std::fs::metadata(p).unwrap().len());
    let pack = new.last().unwrap();
    let mut raw = std::fs::read(pack).unwrap();
    let mid = raw.len() / 2;
    raw[mid] ^= 0x40;
    std::fs::write(pack, &raw).unwrap();
    let pack = pack.file_name().unwrap().to_string_lossy().into_owned();
    let tmp = drill_tmp();
    let (code, reports, err) = drill_json(&ws, &plan, tmp.path());
    assert_eq!(code, Some(13), "{err}\n{reports:#?}");
    let r = &reports[0];
    assert_eq!(r["result"], "damaged", "{r:#}");
    assert_eq!(r["damaged_pack"], pack.as_str(), "{r:#}");
    assert!(
        r["error"].as_str().unwrap().contains("set member app-db"),
        "{r:#}"
    );
    assert_eq!(
        env_dirs(tmp.path()),
        Vec::<PathBuf>::new(),
        "environment left behind"
    );

    // SIGTERM once both servers are being started: both go (exit 130), nothing is left.
    let tmp = drill_tmp();
    let mut child = lifeboat()
        .args(["drill", "--plan"])
        .arg(&plan)
        .env("TMPDIR", tmp.path())
        .env("LIFEBOAT_STATE_DIR", ws.path().join("state"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let mut servers = Vec::new();
    while servers.len() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the drill never started both servers"
        );
        std::thread::sleep(Duration::from_millis(20));
        servers = env_dirs(tmp.path())
            .into_iter()
            .filter(|d| {
                let n = d.file_name().unwrap().to_string_lossy().into_owned();
                n.starts_with("lifeboat-env-postgres-") || n.starts_with("lifeboat-env-mariadb-")
            })
            .collect();
    }
    // SAFETY: signalling the child we spawned.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "an interrupted drill exits 130");
    assert_eq!(
        env_dirs(tmp.path()),
        Vec::<PathBuf>::new(),
        "environment left behind"
    );
    for d in &servers {
        assert_eq!(
            processes_matching(&d.display().to_string()),
            Vec::<String>::new(),
            "a server of the interrupted drill still runs"
        );
    }
    drop(my);
}
