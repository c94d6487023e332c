//! T08: one region down for a whole backup. A plan writes three destinations — a local
//! repository and two S3 regions (one Garage each) — and region b is blackholed the way real
//! outages look: its endpoint takes TCP connections and never answers (the fault proxy's
//! blackhole), not a stopped server that refuses them. The backup finishes in bounded time
//! (the store's answer timeout), exits 3 naming b, commits in local and a and writes nothing
//! b could take for a snapshot; `status` and the metrics show b degraded with its RPO growing
//! while a's was reset, and the alert rules fire for b alone (promtool, fed the series lifeboat
//! itself exported). With b reachable again the next backup back-fills it before committing
//! there, and every region passes INV-1..3.

use crate::monitoring::{promtool, samples, value};
use crate::support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::fault_proxy::{FaultProxy, Faults};
use support::garage::{url_for, Garage, BUCKET};
use support::regions::{lifeboat, make_s3_tree, repos, run, Run};

/// Region b's answer timeout in this test (`answer_timeout_secs`).
const ANSWER_SECS: u64 = 2;

fn lb(work: &Path, args: &[&str]) -> Run {
    let mut c = lifeboat(work);
    c.env("LIFEBOAT_STATE_DIR", work.join("state"));
    c.args(args);
    let t0 = Instant::now();
    let r = run(c);
    eprintln!("lifeboat {args:?}: exit {} in {:?}", r.code, t0.elapsed());
    r
}

fn json(r: &Run) -> Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {r:?}"))
}

/// An S3 destination named `name` at `endpoint`, with the test's short timeouts and `extra`.
fn s3_dest(name: &str, region: &str, endpoint: &str, extra: &str) -> String {
    format!(
        "[[destinations]]\ntype = \"s3\"\nname = \"{name}\"\nbucket = \"{BUCKET}\"\nprefix = \"t08\"\nregion = \"{region}\"\nendpoint = \"{endpoint}\"\nconnect_timeout_secs = 2\nmax_retries = 4\ndeadline_secs = 600\n{extra}"
    )
}

/// The metrics `lifeboat metrics write --plan` prints now.
fn metrics(w: &Path, plan: &str) -> String {
    let r = lb(w, &["metrics", "write", "--plan", plan]);
    assert_eq!(r.code, 0, "{r:?}");
    r.stdout
}

fn region_value(text: &str, name: &str, region: &str) -> f64 {
    let l = format!("region=\"{region}\"");
    value(text, name, &[&l]).unwrap_or_else(|| panic!("no {name} for region {region} in:\n{text}"))
}

/// The snapshot ids region `region` holds, read from its repository directly.
fn held_by(w: &Path, plan: &str, region: &str) -> Vec<String> {
    let r = lb(w, &["snapshots", "--plan", plan, "--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    json(&r)
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["regions"].as_array().unwrap().iter().any(|x| x == region))
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn t08_a_blackholed_region_fails_in_bounded_time_shows_degraded_and_is_backfilled() {
    let ga = Garage::start("t08a");
    let gb = Garage::start("t08b");
    let proxy = FaultProxy::start(gb.s3_port, Faults::none(), 8);
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let src = make_s3_tree(w, 2, 8);
    let plan = w.join("t08.toml");
    // b: the watchdog at 60 s, so without the answer timeout the blackholed backup would
    // wait 5 × 60 s for its first request to b alone.
    std::fs::write(
        &plan,
        format!(
            "name = \"t08\"\nmin_regions = 1\n[repository]\npassword_file = \"password\"\n[objectives]\nrpo = \"1day\"\n[[destinations]]\ntype = \"local\"\nname = \"local\"\npath = \"{}\"\n{}{}\n[[jobs]]\nname = \"files\"\nschedule = \"0 2 * * *\"\n[jobs.source]\ntype = \"dir\"\npaths = [\"{}\"]\n",
            w.join("local-repo").display(),
            s3_dest("a", &ga.region, &ga.endpoint(), "request_timeout_secs = 3\n"),
            s3_dest(
                "b",
                &gb.region,
                &proxy.endpoint(),
                &format!("request_timeout_secs = 60\nanswer_timeout_secs = {ANSWER_SECS}\n")
            ),
            src.display()
        ),
    )
    .unwrap();
    let p = plan.to_str().unwrap();
    let mut init: Vec<&str> = support::FAST_INIT.to_vec();
    init.extend(["--plan", p]);
    let r = lb(w, &init);
    assert_eq!(r.code, 0, "{r:?}");

    // 1. every region up
    let r = lb(w, &["backup", "--plan", p, "--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let first = held_by(w, p, "b");
    assert_eq!(first.len(), 1);
    let v1 = w.join("v1");
    copy_tree(&src, &v1);
    std::thread::sleep(Duration::from_secs(2));
    let before = metrics(w, p);

    // 2. region b blackholed for the whole backup
    proxy.blackhole(true);
    std::fs::write(
        src.join("a/while-b-was-down.txt"),
        "written while b was down\n",
    )
    .unwrap();
    let t0 = Instant::now();
    let r = lb(w, &["backup", "--plan", p, "--json"]);
    let took = t0.elapsed();
    let held = proxy
        .counts
        .blackholed
        .load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "backup with b blackholed: exit {} in {took:?}, {held} connections held",
        r.code
    );
    assert_eq!(r.code, 3, "{r:?}");
    assert!(
        held >= 1,
        "the proxy held no connection: the test tests nothing"
    );
    // The first request to b is given up after 3 unanswered attempts of ANSWER_SECS each (plus
    // backoff); 5 × 60 s of watchdog before the answer timeout existed.
    assert!(
        took < Duration::from_secs(45),
        "a region that answers nothing must cost about 3 × answer_timeout_secs, not the watchdog: {took:?}"
    );
    let v = json(&r);
    let status = |v: &Value, region: &str| {
        v["regions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["region"] == region)
            .unwrap_or_else(|| panic!("no region {region}: {v:#}"))
            .clone()
    };
    assert_eq!(status(&v, "local")["status"], "complete", "{v:#}");
    assert_eq!(status(&v, "a")["status"], "complete", "{v:#}");
    let b = status(&v, "b");
    assert_eq!(b["status"], "failed", "{v:#}");
    assert!(
        b["error"].as_str().unwrap().contains("no answer"),
        "b's error says it answered nothing: {b:#}"
    );
    assert!(r.stderr.contains("b"), "{r:?}");
    assert!(
        !r.all().contains(support::garage::SECRET),
        "secret leaked: {r:?}"
    );

    // No manifest in b: b holds the first snapshot only (read once b answers again, below);
    // local and a hold both.
    proxy.blackhole(false);
    assert_eq!(held_by(w, p, "b"), first, "b got a snapshot while down");
    assert_eq!(held_by(w, p, "a").len(), 2);
    assert_eq!(held_by(w, p, "local").len(), 2);
    proxy.blackhole(true);

    // b is degraded: status (text and JSON) says so, with its RPO growing and a's reset.
    let r = lb(w, &["status", "--plan", p, "--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let st = json(&r);
    let degraded = st["degraded"].as_array().unwrap();
    assert_eq!(degraded.len(), 1, "{st:#}");
    assert_eq!(degraded[0]["region"], "b", "{st:#}");
    assert_eq!(degraded[0]["job"], "files", "{st:#}");
    assert!(
        degraded[0]["behind_secs"].as_f64().unwrap() >= 2.0,
        "{st:#}"
    );
    assert!(
        degraded[0]["last_run_error"]
            .as_str()
            .is_some_and(|e| e.contains("no answer")),
        "{st:#}"
    );
    let r = lb(w, &["status", "--plan", p]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("degraded regions") && r.stdout.contains("t08/files in b:"),
        "{r:?}"
    );
    let after = metrics(w, p);
    std::thread::sleep(Duration::from_secs(1));
    let later = metrics(w, p);
    let rpo = |t: &str, region: &str| region_value(t, "lifeboat_rpo_seconds", region);
    eprintln!(
        "RPO before/after/later: a {:.1}/{:.1}/{:.1} s, b {:.1}/{:.1}/{:.1} s",
        rpo(&before, "a"),
        rpo(&after, "a"),
        rpo(&later, "a"),
        rpo(&before, "b"),
        rpo(&after, "b"),
        rpo(&later, "b")
    );
    assert!(rpo(&after, "a") < rpo(&before, "a"), "a's RPO was reset");
    assert!(rpo(&after, "local") < rpo(&before, "local"));
    assert!(rpo(&after, "b") > rpo(&before, "b"), "b's RPO kept growing");
    assert!(rpo(&later, "b") > rpo(&after, "b"));
    assert!(rpo(&after, "b") >= rpo(&after, "a") + 2.0);
    for (region, degraded, success) in [("local", 0.0, 1.0), ("a", 0.0, 1.0), ("b", 1.0, 0.0)] {
        assert_eq!(
            region_value(&after, "lifeboat_region_degraded", region),
            degraded,
            "{region}"
        );
        assert_eq!(
            region_value(&after, "lifeboat_backup_last_success", region),
            success,
            "{region}"
        );
    }
    alerts_fire_for_b_alone(w, &after);

    // 3. b answers again: the next backup back-fills it (verified copies, then the snapshot)
    proxy.blackhole(false);
    let r = lb(w, &["backup", "--plan", p, "--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let v = json(&r);
    for region in ["local", "a", "b"] {
        assert_eq!(status(&v, region)["status"], "complete", "{v:#}");
    }
    let r = lb(w, &["status", "--plan", p, "--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(json(&r)["degraded"], Value::Array(vec![]), "{r:?}");
    let all = held_by(w, p, "local");
    assert_eq!(all.len(), 3);
    assert_eq!(held_by(w, p, "b"), all, "b holds every snapshot again");

    // INV-1 and INV-2: every region verifies with every byte read; b's back-filled snapshot
    // restores bit-exact from b, and so does its first.
    for region in ["local", "a", "b"] {
        let r = lb(
            w,
            &[
                "verify",
                "--plan",
                p,
                "--region",
                region,
                "--read-data",
                "--json",
            ],
        );
        assert_eq!(r.code, 0, "{region}: {r:?}");
        assert_eq!(json(&r)["errors"], 0, "{region}: {r:?}");
    }
    for (id, expected) in [(&all[1], src.as_path()), (&first[0], v1.as_path())] {
        let target = w.join(format!("restore-{id}"));
        let r = lb(
            w,
            &[
                "restore",
                id,
                "--plan",
                p,
                "--job",
                "files",
                "--region",
                "b",
                "--target",
                target.to_str().unwrap(),
            ],
        );
        assert_eq!(r.code, 0, "{r:?}");
        let diffs = lifeboat::restore::compare_dirs(expected, &target.join("src")).unwrap();
        assert!(diffs.is_empty(), "INV-2: {id} from b: {diffs:#?}");
    }
    // INV-3: the catalog is what `catalog rebuild` builds from each region.
    let r = lb(w, &["catalog", "rebuild", "--plan", p, "--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    for region in json(&r)["regions"].as_array().unwrap() {
        let rep = &region["report"];
        assert_eq!(
            (
                &rep["added"],
                &rep["updated"],
                &rep["forgotten"],
                &rep["unchanged"]
            ),
            (
                &Value::from(0),
                &Value::from(0),
                &Value::from(0),
                &Value::from(3)
            ),
            "INV-3: {region:#}"
        );
    }
    // Read directly, not through the proxy: b's repository is complete.
    let mut c = lifeboat(w);
    repos(&mut c, &[url_for(&gb.endpoint(), &gb.region, "t08")]);
    c.args(["verify", "--read-data"]);
    let r = run(c);
    assert_eq!(r.code, 0, "{r:?}");
}

/// promtool, fed the series of `metrics` (what lifeboat exported after the failed run) as
/// constant for half an hour: `LifeboatRegionDegraded` and `LifeboatBackupFailing` fire for
/// region b and for no other region.
fn alerts_fire_for_b_alone(w: &Path, metrics: &str) {
    let wanted = ["lifeboat_region_degraded", "lifeboat_backup_last_success"];
    let mut series = String::new();
    for (name, labels, v) in samples(metrics) {
        if wanted.contains(&name.as_str()) {
            series.push_str(&format!(
                "      - series: '{name}{{{labels}}}'\n        values: '{v}x30'\n"
            ));
        }
    }
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("monitoring/lifeboat.rules.yml");
    let test = format!(
        r#"rule_files:
  - {rules}
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
{series}    alert_rule_test:
      - eval_time: 20m
        alertname: LifeboatRegionDegraded
        exp_alerts:
          - exp_labels: {{severity: warning, plan: t08, lifeboat_job: files, region: b}}
            exp_annotations:
              summary: "t08/files: region b is behind the other regions"
              description: "Its newest snapshot is older than another region's: the backups do not reach it (down, or lagging), so its RPO keeps growing. `lifeboat status --plan t08` says how far behind and why; the next backup or `lifeboat sync` catches it up."
      - eval_time: 20m
        alertname: LifeboatBackupFailing
        exp_alerts:
          - exp_labels: {{severity: critical, plan: t08, lifeboat_job: files, region: b}}
            exp_annotations:
              summary: "t08/files: the last backup to b failed"
              description: "See the run-due journal (`journalctl -u lifeboat-run-due`) and `lifeboat history`."
"#,
        rules = rules.display()
    );
    let file = w.join("t08.rules.test.yml");
    std::fs::write(&file, &test).unwrap();
    let o = promtool()
        .args(["test", "rules"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "promtool: {}{}\n{test}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn copy_tree(from: &Path, to: &Path) {
    let o = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
}
