//! A plan with two S3 destinations (two real Garage servers as two regions): `backup --plan`
//! writes both in one pass, a region down gives exit 3 while the other commits, `sync --plan`
//! catches it up, `verify --plan --region` proves each, `plan check` reports each bucket.

use crate::support;

use std::path::Path;

use serde_json::Value;
use support::garage::{Garage, BUCKET};
use support::regions::{lifeboat, repos, run, Run};

fn lb(work: &Path, args: &[&str]) -> Run {
    let mut c = lifeboat(work);
    c.env("LIFEBOAT_STATE_DIR", work.join("state"));
    c.args(args);
    run(c)
}

fn dest(g: &Garage) -> String {
    format!(
        "[[destinations]]\ntype = \"s3\"\nname = \"{r}\"\nbucket = \"{BUCKET}\"\nprefix = \"plan\"\nregion = \"{r}\"\nendpoint = \"{e}\"\nrequest_timeout_secs = 3\nconnect_timeout_secs = 2\nmax_retries = 2\ndeadline_secs = 30\n",
        r = g.region,
        e = g.endpoint()
    )
}

#[test]
fn plan_with_two_s3_regions_backs_up_syncs_and_verifies_each() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let g1 = Garage::start("r1");
    let mut g2 = Garage::start("r2");
    let data = w.join("data");
    std::fs::create_dir_all(&data).unwrap();
    for i in 0..20 {
        std::fs::write(
            data.join(format!("f{i}")),
            format!("file {i} ").repeat(5000),
        )
        .unwrap();
    }
    // the repository exists in both regions (same id, same keys)
    let mut c = lifeboat(w);
    repos(&mut c, &[g1.url("plan"), g2.url("plan")]);
    c.args(support::FAST_INIT);
    let r = run(c);
    assert_eq!(r.code, 0, "{r:?}");

    let plan = w.join("two.toml");
    std::fs::write(
        &plan,
        format!(
            "name = \"two\"\nmin_regions = 1\n[repository]\npassword_file = \"password\"\n[objectives]\nrpo = \"1day\"\n{}{}\n[[jobs]]\nname = \"files\"\nschedule = \"0 2 * * *\"\n[jobs.source]\ntype = \"dir\"\npaths = [\"{}\"]\n",
            dest(&g1),
            dest(&g2),
            data.display()
        ),
    )
    .unwrap();
    let p = plan.to_str().unwrap();

    let r = lb(w, &["plan", "check", p]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("r1") && r.stdout.contains("r2"), "{r:?}");

    let r = lb(w, &["backup", "--plan", p, "--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    let regions = v["regions"].as_array().unwrap();
    assert_eq!(regions.len(), 2);
    assert!(regions.iter().all(|r| r["status"] == "complete"), "{v}");

    // region r2 down: r1 commits, exit 3, and the output names r2
    g2.stop();
    std::fs::write(data.join("new"), "changed while r2 was down").unwrap();
    let r = lb(w, &["backup", "--plan", p]);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.all().contains("r2"), "{r:?}");
    assert!(
        !r.all().contains(support::garage::SECRET),
        "secret leaked: {r:?}"
    );
    // the catalog has one run per region: both runs of the first backup ok, and for the
    // second r1 ok while r2 failed, naming the region
    let r = lb(w, &["history", "--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let hist: Value = serde_json::from_str(&r.stdout).unwrap();
    let runs: Vec<&Value> = hist
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "backup")
        .collect();
    let count = |region: &str, outcome: &str| {
        runs.iter()
            .filter(|e| e["region"] == region && e["outcome"] == outcome)
            .count()
    };
    assert_eq!((count("r1", "ok"), count("r2", "ok")), (2, 1), "{hist:#}");
    assert_eq!(count("r2", "failed"), 1, "{hist:#}");

    // back up: sync catches r2 up, and each region verifies on its own
    g2.restart();
    let r = lb(w, &["sync", "--plan", p]);
    assert_eq!(r.code, 0, "{r:?}");
    for region in ["r1", "r2"] {
        let r = lb(
            w,
            &["verify", "--plan", p, "--region", region, "--read-data"],
        );
        assert_eq!(r.code, 0, "{region}: {r:?}");
    }
    // the catalog knows r2 holds the newest snapshot now too
    let r = lb(w, &["status", "--plan", p, "--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let st: Value = serde_json::from_str(&r.stdout).unwrap();
    let newest = |region: &str| {
        st["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["region"] == region)
            .map(|j| j["newest_snapshot"]["snapshot_id"].clone())
            .unwrap_or(Value::Null)
    };
    assert!(!newest("r1").is_null(), "{st:#}");
    assert_eq!(newest("r1"), newest("r2"), "{st:#}");
    let r = lb(w, &["snapshots", "--plan", p, "--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let snaps: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(snaps.as_array().unwrap().len(), 2, "{snaps}");
    // after the sync, both snapshots exist in both regions
    for s in snaps.as_array().unwrap() {
        assert_eq!(s["regions"].as_array().map(|r| r.len()), Some(2), "{s}");
        assert!(
            s["missing_from"].as_array().is_none_or(|m| m.is_empty()),
            "{s}"
        );
    }

    // The catalog is lost: `catalog rebuild --plan` recreates every region's snapshot rows
    // from that region's repository, under the region names the backups recorded.
    let fresh = w.join("rebuilt.db");
    let rebuild = |args: &[&str]| {
        let mut c = lifeboat(w);
        c.env("LIFEBOAT_STATE_DIR", w.join("state"));
        c.env("LIFEBOAT_CATALOG", &fresh);
        c.args(args);
        run(c)
    };
    let r = rebuild(&["catalog", "rebuild", "--plan", p, "--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    let regions = v["regions"].as_array().unwrap();
    assert_eq!(
        regions
            .iter()
            .map(|r| r["region"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["r1", "r2"],
        "{v:#}"
    );
    assert!(regions.iter().all(|r| r["report"]["added"] == 2), "{v:#}");
    let r = rebuild(&["status", "--plan", p, "--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let rebuilt: Value = serde_json::from_str(&r.stdout).unwrap();
    for region in ["r1", "r2"] {
        let newest_rebuilt = rebuilt["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["region"] == region)
            .map(|j| j["newest_snapshot"]["snapshot_id"].clone())
            .unwrap_or(Value::Null);
        assert_eq!(newest_rebuilt, newest(region), "{region}: {rebuilt:#}");
    }
    // one region down: the other is still rebuilt, the run says which failed, exit 3
    g2.stop();
    let r = rebuild(&["catalog", "rebuild", "--plan", p]);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stdout.contains("region r1"), "{r:?}");
    assert!(r.stderr.contains("region r2"), "{r:?}");
    // only one region asked for, and an unknown one named with the plan's regions
    let r = rebuild(&[
        "catalog", "rebuild", "--plan", p, "--region", "r1", "--json",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["regions"].as_array().unwrap().len(), 1, "{v:#}");
    assert_eq!(v["regions"][0]["report"]["unchanged"], 2, "{v:#}");
    let r = rebuild(&["catalog", "rebuild", "--plan", p, "--region", "r9"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("r1, r2"), "{r:?}");
}
