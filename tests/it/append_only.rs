//! RELIABILITY T16 and T18, end to end: `forget` and `prune` are dry runs unless confirmed;
//! an append-only repository's retention counts `keep-within` from the store's current time
//! and refuses count rules; forged snapshots (dated in the future, from a host new to the
//! job, a size collapse) are warned about by `verify` and `status` and exported as a metric
//! (status and the metrics from the catalog alone), a healthy repository raises none, and
//! `latest` (restore, drills) passes over snapshots dated in the future; a timeline reset (ids and the source's own WAL
//! positions going back, as after a PostgreSQL re-initialisation) is ordered by manifest
//! time in `snapshots`, retention and drills.

use crate::support;

use std::path::Path;
use std::sync::Arc;

use lifeboat::restore::compare_dirs;
use serde_json::Value;
use support::*;

const NOTE: &str = "dry run (the default): nothing was removed; add --confirm to remove";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn open(repo: &Path) -> lifeboat::repo::Repository {
    rt().block_on(async {
        let store: lifeboat::store::DynStore =
            Arc::new(lifeboat::store::local::LocalStore::new(repo));
        lifeboat::repo::Repository::open(store, PASSWORD.as_bytes())
            .await
            .unwrap()
    })
}

/// Writes a copy of snapshot `of`, changed by `f`, as an append-only writer could.
fn forge(
    repo: &lifeboat::repo::Repository,
    of: &str,
    f: impl FnOnce(&mut lifeboat::repo::snapshot::Snapshot),
) -> String {
    rt().block_on(async {
        let (_, mut s) = repo.find_snapshot(of).await.unwrap();
        f(&mut s);
        repo.save_json(lifeboat::repo::ObjectKind::Snapshot, &s)
            .await
            .unwrap()
            .to_string()
    })
}

/// Every file of the repository with its bytes.
fn contents(repo: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    list_files(repo)
        .into_iter()
        .filter(|p| repo.join(p).is_file())
        .map(|p| {
            let b = std::fs::read(repo.join(&p)).unwrap();
            (p, b)
        })
        .collect()
}

fn anomalies_of<'a>(findings: &'a Value, id: &str) -> Vec<&'a str> {
    findings
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["object"].as_str().unwrap().contains(&id[..8]))
        .filter_map(|f| f["message"].as_str())
        .filter(|m| m.starts_with("anomaly ("))
        .collect()
}

/// `forget` and `prune` print what they would do and change nothing without `--confirm`
/// (T18: WAL-G's `--confirm`); `--dry-run` is still accepted, with `--confirm` it is a usage
/// error; with `--confirm` they remove.
#[test]
fn forget_and_prune_remove_nothing_without_confirm() {
    let s = Scratch::new();
    s.init();
    let data = s.path("data");
    make_tree(&data, 11, 12, 120_000);
    for i in 0..3u8 {
        // 2 MiB that only this snapshot has: forgetting it frees its packs.
        let bytes: Vec<u8> = (0..2u32 << 20)
            .map(|j| (j.wrapping_mul(2_654_435_761) >> (8 + i)) as u8 ^ i)
            .collect();
        std::fs::write(data.join("version.bin"), bytes).unwrap();
        s.ok(&["backup", data.to_str().unwrap()]);
    }
    let before = contents(&s.repo);

    let out = s.ok(&["forget", "--keep-last", "1"]);
    assert!(out.contains(NOTE), "{out}");
    assert!(out.contains("would remove 2"), "{out}");
    let out = s.ok(&[
        "forget",
        "--keep-last",
        "1",
        "--prune",
        "--max-unused",
        "0%",
    ]);
    assert!(out.contains(NOTE) && out.contains("would delete"), "{out}");
    let j = s.json(&["forget", "--keep-last", "1"]);
    assert_eq!(j["dry_run"], true, "{j:#}");
    assert_eq!(j["note"], NOTE, "{j:#}");
    let out = s.ok(&["prune", "--max-unused", "0%"]);
    assert!(out.contains(NOTE), "{out}");
    s.ok(&["forget", "--keep-last", "1", "--dry-run"]);
    s.expect(&["forget", "--keep-last", "1", "--confirm", "--dry-run"], 2);
    s.expect(&["prune", "--confirm", "--dry-run"], 2);
    assert!(
        contents(&s.repo) == before,
        "a dry run changed the repository"
    );
    assert_eq!(support::snapshot_ids(&s).len(), 3);

    let out = s.ok(&["forget", "--keep-last", "1", "--confirm"]);
    assert!(!out.contains(NOTE) && out.contains("removed 2"), "{out}");
    assert_eq!(support::snapshot_ids(&s).len(), 1);
    let packs = list_files(&s.repo.join("data")).len();
    let j = s.json(&["prune", "--max-unused", "0%"]);
    assert_eq!(list_files(&s.repo.join("data")).len(), packs, "{j:#}");
    let j = s.json(&["prune", "--confirm", "--max-unused", "0%"]);
    assert!(j["freed_bytes"].as_u64().unwrap() > 0, "{j:#}");
    assert!(list_files(&s.repo.join("data")).len() < packs);
    let v = s.json(&["verify", "--read-data"]);
    assert_eq!(v["errors"], 0, "{v:#}");
    let out = s.path("restored");
    s.ok(&["restore", "latest", "--target", out.to_str().unwrap()]);
    assert!(compare_dirs(&data, &out.join("data")).unwrap().is_empty());
}

/// T16: forgeries dated a month ahead. Count rules no longer let them push the real
/// snapshots out (they count nowhere); an append-only repository refuses count rules and
/// counts keep-within from now, so all three real snapshots stay; `verify` and `status` name
/// each forgery as an anomaly and no real snapshot.
#[test]
fn forged_future_snapshots_push_nothing_out_and_append_only_refuses_count_rules() {
    let s = Scratch::new();
    s.init();
    let src = s.path("src");
    make_tree(&src, 16, 16, 200_000);
    let mut real = Vec::new();
    for i in 0..3 {
        std::fs::write(src.join("changing.txt"), format!("version {i}\n")).unwrap();
        real.push(
            s.json(&["backup", src.to_str().unwrap()])["snapshot_id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let repo = open(&s.repo);
    let forged: Vec<String> = (1..=4)
        .map(|k| {
            forge(&repo, &real[2], |f| {
                f.time += chrono::Duration::days(30) + chrono::Duration::minutes(k);
                f.consistency_time = f.time;
            })
        })
        .collect();

    // Restic's keep-last 3 would keep only forgeries; they count nowhere now.
    let j = s.json(&["forget", "--keep-last", "3"]);
    let rows = j["regions"][0]["groups"][0]["snapshots"]
        .as_array()
        .unwrap();
    assert_eq!(rows.len(), 7, "{j:#}");
    for row in rows {
        let id = row["id"].as_str().unwrap();
        assert_eq!(row["keep"], true, "{j:#}");
        if forged.iter().any(|f| f == id) {
            assert_eq!(
                row["reasons"],
                serde_json::json!([{"rule": "future"}]),
                "{j:#}"
            );
        }
    }

    // Append-only: count rules refused (2), keep-within required, nothing removed.
    let err = s.run(&["forget", "--append-only", "--keep-last", "3", "--confirm"]);
    assert_eq!(err.status.code(), Some(2), "{}", stderr(&err));
    assert!(
        stderr(&err).contains("append-only") && stderr(&err).contains("--allow-count-rules"),
        "{}",
        stderr(&err)
    );
    let err = s.run(&["forget", "--append-only", "--keep-tag", "x", "--confirm"]);
    assert_eq!(err.status.code(), Some(2), "{}", stderr(&err));
    assert!(
        stderr(&err).contains("needs --keep-within"),
        "{}",
        stderr(&err)
    );
    assert_eq!(support::snapshot_ids(&s).len(), 7);

    // keep-within 1d from now keeps every real snapshot (from the newest forgery it would
    // keep none of them).
    let j = s.json(&[
        "forget",
        "--append-only",
        "--keep-within",
        "1d",
        "--prune",
        "--max-unused",
        "0%",
        "--confirm",
    ]);
    assert_eq!(j["append_only"], true, "{j:#}");
    assert_eq!(j["regions"][0]["removed"], 0, "{j:#}");
    let left = support::snapshot_ids(&s);
    for id in real.iter().chain(&forged) {
        assert!(left.contains(id), "snapshot {id} was forgotten");
    }
    // With count rules explicitly allowed they are accepted (a dry run), and still count no
    // forgery.
    let j = s.json(&[
        "forget",
        "--append-only",
        "--allow-count-rules",
        "--keep-within",
        "1d",
        "--keep-last",
        "1",
    ]);
    let rows = j["regions"][0]["groups"][0]["snapshots"]
        .as_array()
        .unwrap();
    let last: Vec<&str> = rows
        .iter()
        .filter(|r| {
            r["reasons"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x["rule"] == "last")
        })
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(last, vec![real[2].as_str()], "{j:#}");

    // verify (exit 0) and status name each forgery, never a real snapshot.
    let v = s.json(&["verify"]);
    let findings = &v["report"]["findings"];
    for f in &forged {
        let a = anomalies_of(findings, f);
        assert!(
            a.iter().any(|m| m.starts_with("anomaly (future_dated)")
                && m.contains("after the store's current time")),
            "forged snapshot {f} not flagged: {v:#}"
        );
    }
    for r in &real {
        assert!(anomalies_of(findings, r).is_empty(), "{r} flagged: {v:#}");
    }
    // `restore latest` passes over the forgeries (dated a month ahead), naming each in a
    // warning, and restores the newest real snapshot; an id still restores a forgery.
    let target = s.path("latest");
    let o = s.run(&[
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["snapshot_id"], real[2].as_str(), "{j:#}\n{}", stderr(&o));
    for f in &forged {
        assert!(
            stderr(&o).contains(&format!("snapshot {} is not taken as `latest`", &f[..8])),
            "{f}: {}",
            stderr(&o)
        );
    }
    let target = s.path("by-id");
    let j = s.json(&["restore", &forged[0], "--target", target.to_str().unwrap()]);
    assert_eq!(j["snapshot_id"], forged[0].as_str(), "{j:#}");

    // status judges the catalog's rows only: the forgeries, written behind lifeboat's back,
    // are "not in the catalog" until `catalog rebuild` records them; then each is named.
    let st = s.json(&["status"]);
    for f in &forged {
        let named: Vec<&str> = st["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["object"].as_str().unwrap().contains(&f[..8]))
            .filter_map(|x| x["message"].as_str())
            .collect();
        assert!(
            named.len() == 1 && named[0].contains("not in the catalog"),
            "{f}: {st:#}"
        );
    }
    s.ok(&["catalog", "rebuild"]);
    let st = s.json(&["status"]);
    for f in &forged {
        let a = anomalies_of(&st["findings"], f);
        assert!(
            a.len() == 1 && a[0].contains("after this host's current time"),
            "{f}: {st:#}"
        );
    }
    for r in &real {
        assert!(anomalies_of(&st["findings"], r).is_empty(), "{r}: {st:#}");
    }
    let counted: usize = st["anomalies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["anomalies"].as_array().unwrap().len())
        .sum();
    assert_eq!(counted, 4, "{st:#}");
    // Recorded in the catalog, the forgeries are not taken for the newest snapshot: the RPO
    // is the real newest's age (a forgery 30 days ahead would show none and hide a miss).
    let jobs = st["jobs"].as_array().unwrap();
    assert!(!jobs.is_empty(), "{st:#}");
    for j in jobs {
        assert_eq!(
            j["newest_snapshot"]["snapshot_id"],
            real[2].as_str(),
            "{j:#}"
        );
        assert!(
            j["newest_snapshot"]["age_secs"].as_f64().unwrap() >= 0.0,
            "{j:#}"
        );
    }
    // Nor is a forgery the next backup's parent (its tree would be trusted for "unchanged"
    // files): the parent is the real newest.
    std::fs::write(src.join("changing.txt"), "version 3\n").unwrap();
    let id = s.json(&["backup", src.to_str().unwrap()])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, snap) = rt().block_on(repo.find_snapshot(&id)).unwrap();
    assert_eq!(
        snap.parent.map(|p| p.to_string()).as_deref(),
        Some(real[2].as_str())
    );
}

fn metric(text: &str, kind: &str) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with("lifeboat_snapshot_anomalies{"))
        .find(|l| l.contains(&format!("kind=\"{kind}\"")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A plan's job with a healthy history raises no anomaly in `verify`, `status` or the
/// metrics (0 per kind); a snapshot of the job from another host and one that read nothing
/// are each named in `verify` and, once in the catalog, in `status` and counted in
/// `lifeboat_snapshot_anomalies` — which read the catalog only: with a wrong password and
/// the destination gone they say the same and warn about nothing.
#[test]
fn unexpected_hosts_and_size_collapses_raise_anomalies_and_a_healthy_job_none() {
    let ws = Workspace::new();
    let data = ws.path().join("site");
    make_tree(&data, 5, 16, 250_000);
    let plan = ws.plan(
        "files",
        &format!(
            "[[jobs]]\nname = \"site\"\nschedule = \"0 * * * *\"\n[jobs.source]\ntype = \"dir\"\npaths = [\"{}\"]\n",
            data.display()
        ),
    );
    let state = ws.path().join("state");
    let lb = |args: &[&str]| {
        let mut c = lifeboat();
        c.args(args)
            .arg("--plan")
            .arg(&plan)
            .env("LIFEBOAT_STATE_DIR", &state);
        run(&mut c)
    };
    let json = |args: &[&str]| -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        let o = lb(&a);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let metrics = || {
        let mut c = lifeboat();
        c.args(["metrics", "write", "--plan"])
            .arg(&plan)
            .env("LIFEBOAT_STATE_DIR", &state);
        let o = run(&mut c);
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
    };
    for i in 0..4 {
        std::fs::write(data.join("changing.txt"), format!("v{i}")).unwrap();
        assert!(lb(&["backup"]).status.success());
    }
    // Healthy: nothing anywhere.
    let v = json(&["verify"]);
    let f = v["report"]["findings"].as_array().unwrap();
    assert!(
        !f.iter()
            .any(|x| x["message"].as_str().unwrap().starts_with("anomaly")),
        "{v:#}"
    );
    let st = json(&["status"]);
    assert_eq!(
        st["anomalies"][0]["anomalies"],
        serde_json::json!([]),
        "{st:#}"
    );
    let m = metrics();
    for kind in ["future_dated", "unexpected_host", "size_collapse"] {
        assert_eq!(metric(&m, kind), Some(0.0), "{kind}: {m}");
    }

    let newest = ws.snapshots(&plan).last().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let repo = open(&ws.path().join("repo"));
    let stranger = forge(&repo, &newest, |f| {
        f.host = "mallory".into();
        f.time += chrono::Duration::minutes(1);
    });
    let empty = forge(&repo, &newest, |f| {
        f.summary = Default::default();
        f.time += chrono::Duration::minutes(2);
    });
    let v = json(&["verify"]);
    let findings = &v["report"]["findings"];
    let a = anomalies_of(findings, &stranger);
    assert!(
        a.len() == 1 && a[0].starts_with("anomaly (unexpected_host) of job site (plan files)"),
        "{v:#}"
    );
    assert!(a[0].contains("\"mallory\""), "{a:?}");
    let a = anomalies_of(findings, &empty);
    assert!(
        a.len() == 1 && a[0].starts_with("anomaly (size_collapse)"),
        "{v:#}"
    );
    for s in ws.snapshots(&plan) {
        let id = s["id"].as_str().unwrap();
        if id != stranger && id != empty {
            assert!(anomalies_of(findings, id).is_empty(), "{id}: {v:#}");
        }
    }
    // The metrics count what that verify found at once (it leaves its counts in the state
    // directory); status judges the catalog's rows, which have the forgeries once `catalog
    // rebuild` recorded them (verify warned they are not in the catalog). Either source
    // raises the series to its count, never to the sum of both.
    let m = metrics();
    assert_eq!(metric(&m, "unexpected_host"), Some(1.0), "{m}");
    assert_eq!(metric(&m, "size_collapse"), Some(1.0), "{m}");
    let st = json(&["status"]);
    assert!(
        anomalies_of(&st["findings"], &stranger).is_empty(),
        "{st:#}"
    );
    let o = lb(&["catalog", "rebuild"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let st = json(&["status"]);
    assert_eq!(anomalies_of(&st["findings"], &stranger).len(), 1, "{st:#}");
    assert_eq!(anomalies_of(&st["findings"], &empty).len(), 1, "{st:#}");
    let m = metrics();
    assert_eq!(metric(&m, "unexpected_host"), Some(1.0), "{m}");
    assert_eq!(metric(&m, "size_collapse"), Some(1.0), "{m}");
    assert_eq!(metric(&m, "future_dated"), Some(0.0), "{m}");

    // Neither opens the repository: with a wrong password and the destination gone, status
    // and every scrape say the same from the catalog alone (verify's counts removed), and
    // warn about nothing.
    std::fs::remove_file(state.join("verify-anomalies.json")).unwrap();
    std::fs::write(ws.path().join("repo.pass"), "not the password\n").unwrap();
    std::fs::rename(ws.path().join("repo"), ws.path().join("repo.away")).unwrap();
    let o = lb(&["status", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        !stderr(&o).to_lowercase().contains("warn"),
        "{}",
        stderr(&o)
    );
    let st: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(anomalies_of(&st["findings"], &stranger).len(), 1, "{st:#}");
    assert_eq!(anomalies_of(&st["findings"], &empty).len(), 1, "{st:#}");
    let mut c = lifeboat();
    c.args(["metrics", "write", "--plan"])
        .arg(&plan)
        .env("LIFEBOAT_STATE_DIR", &state);
    let o = run(&mut c);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        !stderr(&o).to_lowercase().contains("warn"),
        "{}",
        stderr(&o)
    );
    let m = stdout(&o);
    assert_eq!(metric(&m, "unexpected_host"), Some(1.0), "{m}");
    assert_eq!(metric(&m, "size_collapse"), Some(1.0), "{m}");
}

/// T18, timeline reset: a PostgreSQL database backed up, then its server re-initialised (as
/// after `pg_upgrade` to a new cluster: the WAL position starts again near zero) and backed
/// up again, with the newer snapshot's id made to sort before the older one's. `snapshots`,
/// retention and the drill all take the newer snapshot by manifest time.
#[test]
fn a_timeline_reset_is_ordered_by_manifest_time_not_ids_or_wal_positions() {
    let ws = Workspace::new();
    let state = ws.path().join("state");
    let job = |pg: &support::pg::PgServer| {
        format!(
            "[[jobs]]\nname = \"shop\"\nschedule = \"0 3 * * *\"\n[jobs.source]\ntype = \"postgres\"\nhost = \"{}\"\nport = {}\nuser = \"postgres\"\ndatabase = \"shop\"\nbin_dir = \"/usr/lib/postgresql/15/bin\"\n\n[drill]\nenvironment = \"ephemeral-postgres\"\nrestore_tests = [\"rows.toml\"]\n",
            pg.sock.display(),
            pg.port
        )
    };
    std::fs::write(
        ws.path().join("rows.toml"),
        "[[sql]]\nname = \"the new cluster's rows\"\nquery = \"SELECT count(*) FROM t\"\nexpect = { min = 7, max = 7 }\n",
    )
    .unwrap();
    let lb = |plan: &Path, args: &[&str]| {
        let mut c = lifeboat();
        c.args(args)
            .arg("--plan")
            .arg(plan)
            .env("LIFEBOAT_STATE_DIR", &state);
        run(&mut c)
    };
    // The old cluster: lots of WAL.
    let old = support::pg::PgServer::start();
    old.create_db("shop");
    old.psql("shop", "CREATE TABLE t (i int)");
    for _ in 0..3 {
        old.psql("shop", "INSERT INTO t SELECT generate_series(1, 1000)");
        old.psql("shop", "SELECT pg_switch_wal()");
    }
    let plan = ws.plan("pg", &job(&old));
    assert!(lb(&plan, &["backup"]).status.success());
    drop(old);
    // The re-initialised cluster: 7 rows, WAL from the start.
    let new = support::pg::PgServer::start();
    new.create_db("shop");
    new.psql("shop", "CREATE TABLE t (i int)");
    new.psql("shop", "INSERT INTO t SELECT generate_series(1, 7)");
    let plan = ws.plan("pg", &job(&new));
    assert!(lb(&plan, &["backup"]).status.success());

    let repo = open(&ws.path().join("repo"));
    let snaps = rt().block_on(repo.list_snapshots()).unwrap();
    assert_eq!(snaps.len(), 2);
    let lsn = |s: &lifeboat::repo::snapshot::Snapshot| -> u64 {
        let text = serde_json::to_value(s).unwrap().to_string();
        let at = text.find("\"wal_lsn\":\"").expect("wal_lsn recorded") + 11;
        let l = &text[at..at + text[at..].find('"').unwrap()];
        let (hi, lo) = l.split_once('/').unwrap();
        (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
    };
    let (old_id, old_snap) = snaps[0].clone();
    let (mut new_id, new_snap) = snaps[1].clone();
    assert!(
        lsn(&new_snap) < lsn(&old_snap),
        "the new cluster's WAL position is behind the old one's"
    );
    // Make the newer snapshot's id sort first: the same manifest, another username, until
    // its id is smaller than the older one's; then remove the original.
    let mut n = 0;
    while new_id.to_string() > old_id.to_string() {
        n += 1;
        let id = forge(&repo, &new_id.to_string(), |s| {
            s.username = format!("{}-{n}", new_snap.username)
        });
        std::fs::remove_file(ws.path().join("repo/snapshots").join(new_id.to_string())).unwrap();
        new_id = id.parse().unwrap();
    }
    let (new_id, old_id) = (new_id.to_string(), old_id.to_string());
    assert!(new_id < old_id);

    // snapshots: by time, whatever the ids.
    let listed: Vec<String> = ws
        .snapshots(&plan)
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, vec![old_id.clone(), new_id.clone()]);
    // retention: keep-last 1 keeps the newer.
    let o = lb(&plan, &["forget", "--keep-last", "1", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = j["regions"][0]["groups"][0]["snapshots"]
        .as_array()
        .unwrap();
    assert_eq!(rows[0]["id"], new_id.as_str(), "{j:#}");
    assert_eq!(rows[0]["keep"], true, "{j:#}");
    assert_eq!(rows[1]["keep"], false, "{j:#}");
    // the drill restores the newer (7 rows), by manifest time — never a forgery of the old
    // cluster's snapshot dated a month ahead (T16: passed over, with a warning naming it).
    let ahead = forge(&repo, &old_id, |s| {
        s.time += chrono::Duration::days(30);
        s.consistency_time = s.time;
    });
    let tmp = drill_tmp();
    let mut c = lifeboat();
    c.args(["drill", "--json", "--plan"])
        .arg(&plan)
        .env("TMPDIR", tmp.path())
        .env("LIFEBOAT_STATE_DIR", &state);
    let o = run(&mut c);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains(&new_id), "{}", stdout(&o));
    assert!(!stdout(&o).contains(&old_id), "{}", stdout(&o));
    assert!(!stdout(&o).contains(&ahead), "{}", stdout(&o));
    assert!(
        stderr(&o).contains(&format!(
            "snapshot {} is not taken as `latest`",
            &ahead[..8]
        )),
        "{}",
        stderr(&o)
    );
}
