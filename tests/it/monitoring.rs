//! The loop around run-due, watched: `status --check` exits 17 on each kind of missed
//! objective and 0 when all hold (judged on an injected clock); the metrics textfile and
//! `metrics serve` parse with Prometheus's own exposition parser (`promtool check
//! metrics`) and carry the figures the catalog holds; the alert rules in `monitoring/` pass
//! `promtool check rules` and their unit tests; the dashboard names only metrics lifeboat
//! exports.

use std::collections::BTreeSet;
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use lifeboat::error::ExitCode;
use lifeboat::ops::run_due::{run_due, RunDueRequest};
use lifeboat::ops::status::{status, StatusRequest};
use lifeboat::ops::{Collect, Env};
use lifeboat::sys::{Cancel, Clock, ManualClock, SystemClock};

use crate::support::*;

const PROMTOOL: &str = "promtool";

pub(crate) fn promtool() -> Command {
    assert!(
        Command::new(PROMTOOL).arg("--version").output().is_ok(),
        "promtool is missing: apt-get install prometheus (scripts/test installs it)"
    );
    Command::new(PROMTOOL)
}

/// `promtool check metrics` on `text`: Prometheus's exposition parser and linter.
fn promtool_check_metrics(text: &str) {
    let mut c = promtool()
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The samples of an exposition: (name, labels, value).
pub(crate) fn samples(text: &str) -> Vec<(String, String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((n, l)) => (n.to_string(), l.trim_end_matches('}').to_string()),
                None => (series.to_string(), String::new()),
            };
            (name, labels, value.parse().unwrap())
        })
        .collect()
}

pub(crate) fn value(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    samples(text)
        .into_iter()
        .find(|(n, l, _)| n == name && labels.iter().all(|x| l.contains(x)))
        .map(|(_, _, v)| v)
}

/// A plan in `dir/NAME.toml` with two local destinations (`local`, `eu`), a yearly
/// directory job and drill, a yearly budgeted verification; `objectives` and `extra` set
/// the targets. The repositories are created.
fn plan(dir: &Path, name: &str, objectives: &str, extra: &str) -> PathBuf {
    let data = dir.join(format!("{name}-data"));
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.txt"), b"hello").unwrap();
    let pw = dir.join("repo.pass");
    std::fs::write(&pw, "correct horse battery staple\n").unwrap();
    std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(
        &p,
        format!(
            "name = \"{name}\"\n[repository]\npassword_file = \"repo.pass\"\n[objectives]\n{objectives}\n\
             [[destinations]]\ntype = \"local\"\npath = \"{name}-r1\"\n\
             [[destinations]]\ntype = \"local\"\nname = \"eu\"\npath = \"{name}-r2\"\n\
             [[jobs]]\nname = \"files\"\nschedule = \"0 0 1 1 *\"\n[jobs.source]\ntype = \"dir\"\npaths = [\"{}\"]\n\
             [drill]\nenvironment = \"directory\"\nschedule = \"0 0 1 1 *\"\n{extra}\n\
             [verify]\nschedule = \"0 0 1 1 *\"\nbudget = \"1MiB\"\ncycle = \"2d\"\n",
            data.display()
        ),
    )
    .unwrap();
    let o = run(lifeboat().args(FAST_INIT).arg("--plan").arg(&p));
    assert!(o.status.success(), "{}", stderr(&o));
    p
}

struct Site {
    tmp: tempfile::TempDir,
    env: Env,
}

impl Site {
    fn new() -> Site {
        let tmp = tempfile::tempdir().unwrap();
        let (mut env, _) = Env::quiet(Cancel::new());
        env.catalog = Ok(tmp.path().join("catalog.db").display().to_string());
        Site { tmp, env }
    }

    fn catalog(&self) -> PathBuf {
        self.tmp.path().join("catalog.db")
    }

    /// run-due on the wall clock until nothing is due (never-run tasks, one drill per tick).
    async fn run_until_idle(&self, plan: &Path) -> Vec<(String, Option<ExitCode>)> {
        let mut all = Vec::new();
        for _ in 0..5 {
            let r = run_due(
                &self.env,
                RunDueRequest {
                    plan: plan.to_path_buf(),
                    dry_run: false,
                    min_regions: None,
                    lock_dir: Some(self.tmp.path().join("state")),
                    task_observer: Arc::new(Collect::default()),
                    clock: Arc::new(SystemClock),
                },
            )
            .await
            .unwrap();
            if r.due.is_empty() {
                return all;
            }
            all.extend(r.due.into_iter().map(|t| (t.task.key, t.exit_code)));
        }
        panic!("run-due never went idle: {all:?}");
    }

    async fn check(&self, plan: &Path, clock: Arc<dyn Clock>) -> (BTreeSet<String>, ExitCode) {
        let r = status(
            &self.env,
            None,
            StatusRequest {
                region: None,
                plan: Some(plan.display().to_string()),
                job: None,
                cycle: std::time::Duration::from_secs(30 * 86_400),
                clock,
            },
        )
        .await
        .unwrap();
        let kinds = r.misses.iter().map(|m| m.objective.to_string()).collect();
        (kinds, r.check_exit_code())
    }

    fn cli_check(&self, plan: &Path) -> std::process::Output {
        run(lifeboat()
            .env("LIFEBOAT_CATALOG", self.catalog())
            .args(["status", "--check", "--plan"])
            .arg(plan))
    }
}

fn later(hours: i64) -> Arc<dyn Clock> {
    Arc::new(ManualClock::new(
        chrono::Utc::now() + chrono::Duration::hours(hours),
    ))
}

fn set(kinds: &[&str]) -> BTreeSet<String> {
    kinds.iter().map(|k| k.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_check_exits_17_on_each_kind_of_miss_and_0_when_all_hold() {
    let site = Site::new();
    let dir = site.tmp.path();
    // RPO 1h, each region drilled daily, every pack read within 2 days.
    let good = plan(dir, "good", "rpo = \"1h\"\nrto = \"30m\"", "");
    std::fs::write(
        &good,
        std::fs::read_to_string(&good).unwrap() + "[schedule]\ndrill_interval = \"1d\"\n",
    )
    .unwrap();
    let ran = site.run_until_idle(&good).await;
    assert!(ran.iter().all(|(_, c)| *c == Some(ExitCode::Ok)), "{ran:?}");
    let keys: BTreeSet<_> = ran.iter().map(|(k, _)| k.as_str()).collect();
    assert!(
        keys.contains("good/drill/local") && keys.contains("good/drill/eu"),
        "{keys:?}"
    );

    // now: every objective holds
    let (kinds, code) = site.check(&good, Arc::new(SystemClock)).await;
    assert!(kinds.is_empty(), "{kinds:?}");
    assert_eq!(code, ExitCode::Ok);
    let o = site.cli_check(&good);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    // 2 hours on: the newest and the newest drilled snapshot are older than the RPO
    let (kinds, code) = site.check(&good, later(2)).await;
    assert_eq!(kinds, set(&["rpo", "verified_rpo"]));
    assert_eq!(code, ExitCode::ObjectiveMissed);
    // 25 hours on: no region was drilled within its day
    let (kinds, code) = site.check(&good, later(25)).await;
    assert_eq!(kinds, set(&["rpo", "verified_rpo", "drill_interval"]));
    assert_eq!(code, ExitCode::ObjectiveMissed);
    // 49 hours on: packs have gone unread for longer than the 2-day cycle
    let (kinds, code) = site.check(&good, later(49)).await;
    assert_eq!(
        kinds,
        set(&["rpo", "verified_rpo", "drill_interval", "coverage"])
    );
    assert_eq!(code, ExitCode::ObjectiveMissed);

    // A drill slower than its RTO (a 1 ns target): the RTO is missed, now.
    let slow = plan(dir, "slow", "rpo = \"1h\"\nrto = \"1ns\"", "");
    let ran = site.run_until_idle(&slow).await;
    assert!(
        ran.iter()
            .any(|(k, c)| k == "slow/drill/local" && *c == Some(ExitCode::ObjectiveMissed)),
        "{ran:?}"
    );
    let (kinds, code) = site.check(&slow, Arc::new(SystemClock)).await;
    assert_eq!(kinds, set(&["rto"]));
    assert_eq!(code, ExitCode::ObjectiveMissed);
    let o = site.cli_check(&slow);
    assert_eq!(o.status.code(), Some(17), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("missed: rto slow/files in local"),
        "{}",
        stderr(&o)
    );
    let o = run(lifeboat()
        .env("LIFEBOAT_CATALOG", site.catalog())
        .args(["status", "--plan"])
        .arg(&slow));
    assert_eq!(
        o.status.code(),
        Some(0),
        "without --check, status only reports"
    );

    // A drill whose restore test fails: the last drill failed, and nothing is proven.
    std::fs::write(
        dir.join("bad-tests.toml"),
        "[[file]]\npath = \"no/such/file\"\n",
    )
    .unwrap();
    let bad = plan(
        dir,
        "bad",
        "rpo = \"1h\"\nrto = \"30m\"",
        "restore_tests = [\"bad-tests.toml\"]",
    );
    let ran = site.run_until_idle(&bad).await;
    assert!(
        ran.iter()
            .any(|(k, c)| k == "bad/drill/local" && *c == Some(ExitCode::DrillCheckFailed)),
        "{ran:?}"
    );
    let (kinds, code) = site.check(&bad, Arc::new(SystemClock)).await;
    assert_eq!(kinds, set(&["drill_failed", "verified_rpo"]));
    assert_eq!(code, ExitCode::ObjectiveMissed);
}

/// A spawned `lifeboat metrics serve`, stopped on drop.
struct Served(std::process::Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http_get(addr: &str, path: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    (head.to_string(), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_textfile_and_http_parse_as_prometheus_exposition_with_the_catalogs_figures() {
    let site = Site::new();
    let dir = site.tmp.path();
    let p = plan(dir, "web", "rpo = \"1h\"\nrto = \"30m\"", "");
    let ran = site.run_until_idle(&p).await;
    assert!(ran.iter().all(|(_, c)| *c == Some(ExitCode::Ok)), "{ran:?}");

    // run-due --textfile: written after the run, replaced atomically, parsed by promtool
    let textfile = dir.join("textfile/lifeboat.prom");
    let state = dir.join("state");
    let o = run(lifeboat()
        .env("LIFEBOAT_CATALOG", site.catalog())
        .env("LIFEBOAT_STATE_DIR", &state)
        .args(["run-due", "--plan"])
        .arg(&p)
        .arg("--textfile")
        .arg(&textfile));
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&textfile).unwrap();
    promtool_check_metrics(&text);
    assert_eq!(
        std::fs::read_dir(textfile.parent().unwrap())
            .unwrap()
            .count(),
        1,
        "no temp file left beside the textfile"
    );
    for region in ["local", "eu"] {
        let r = format!("region=\"{region}\"");
        let l = ["plan=\"web\"", "lifeboat_job=\"files\"", r.as_str()];
        assert_eq!(value(&text, "lifeboat_backup_last_success", &l), Some(1.0));
        assert_eq!(
            value(&text, "lifeboat_rpo_target_seconds", &l),
            Some(3600.0)
        );
        assert_eq!(value(&text, "lifeboat_drill_last_success", &l), Some(1.0));
        assert_eq!(
            value(&text, "lifeboat_rto_target_seconds", &l),
            Some(1800.0)
        );
        let rpo = value(&text, "lifeboat_rpo_seconds", &l).unwrap();
        assert!((0.0..600.0).contains(&rpo), "{rpo}");
        assert!(value(&text, "lifeboat_verified_rpo_seconds", &l).is_some());
        assert!(value(&text, "lifeboat_backup_last_read_bytes", &l).unwrap() >= 5.0);
        assert!(value(
            &text,
            "lifeboat_drill_last_phase_seconds",
            &[&r, "phase=\"fetch\""]
        )
        .is_some());
        assert_eq!(
            value(&text, "lifeboat_verify_coverage_ratio", &[&r]),
            Some(1.0)
        );
        assert!(value(&text, "lifeboat_region_last_drill_timestamp_seconds", &[&r]).is_some());
    }
    assert_eq!(value(&text, "lifeboat_catalog_up", &[]), Some(1.0));
    assert_eq!(
        value(&text, "lifeboat_objectives_missed", &["objective=\"rpo\""]),
        Some(0.0)
    );
    assert!(value(&text, "lifeboat_run_due_last_tick_timestamp_seconds", &[]).is_some());
    assert!(
        value(
            &text,
            "lifeboat_run_due_task_runs_total",
            &["task=\"web/drill/eu\""]
        )
        .unwrap()
            >= 1.0
    );

    // metrics serve: scraped over HTTP, the same figures
    let mut child = lifeboat()
        .env("LIFEBOAT_CATALOG", site.catalog())
        .env("LIFEBOAT_STATE_DIR", &state)
        .args(["metrics", "serve", "--listen", "127.0.0.1:0", "--plan"])
        .arg(&p)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let _served = Served(child);
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("serving metrics at http://")
        .and_then(|a| a.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("{line}"))
        .to_string();
    let (head, body) = http_get(&addr, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    promtool_check_metrics(&body);
    let l = ["plan=\"web\"", "lifeboat_job=\"files\"", "region=\"eu\""];
    assert_eq!(value(&body, "lifeboat_drill_last_success", &l), Some(1.0));
    assert_eq!(
        value(&body, "lifeboat_rpo_target_seconds", &l),
        Some(3600.0)
    );
    let (head, _) = http_get(&addr, "/");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");

    // The dashboard names only metrics lifeboat exports.
    let exported: BTreeSet<String> = samples(&text).into_iter().map(|(n, _, _)| n).collect();
    let dash = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("monitoring/lifeboat-dashboard.json"),
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&dash).unwrap();
    assert_eq!(v["templating"]["list"][0]["type"], "datasource");
    let used = metric_names(&dash);
    assert!(used.len() >= 15, "{used:?}");
    let unknown: Vec<_> = used.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard uses metrics lifeboat does not export: {unknown:?}"
    );
    let rules = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("monitoring/lifeboat.rules.yml"),
    )
    .unwrap();
    let unknown: Vec<_> = metric_names(&rules)
        .difference(&exported)
        .cloned()
        .collect();
    assert!(
        unknown.is_empty(),
        "the alert rules use unknown metrics: {unknown:?}"
    );
}

fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("lifeboat_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        // Prometheus metric names, not prose such as "lifeboat_run_due" in a title
        if name.ends_with("_seconds")
            || name.ends_with("_bytes")
            || name.ends_with("_total")
            || name.ends_with("_ratio")
            || name.ends_with("_success")
            || name.ends_with("_code")
            || name.ends_with("_up")
            || name.ends_with("_missed")
            || name.ends_with("_packs")
        {
            out.insert(name.to_string());
        }
        rest = &tail[end..];
    }
    out
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("monitoring");
    let o = promtool()
        .args(["check", "rules", "lifeboat.rules.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let o = promtool()
        .args(["test", "rules", "lifeboat.rules.test.yml"])
        .current_dir(dir.join("tests"))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    // every alert in the rules file has a firing case in the tests
    let rules = std::fs::read_to_string(dir.join("lifeboat.rules.yml")).unwrap();
    let tests = std::fs::read_to_string(dir.join("tests/lifeboat.rules.test.yml")).unwrap();
    for l in rules.lines() {
        if let Some(name) = l.trim().strip_prefix("- alert: ") {
            assert!(
                tests.contains(&format!(
                    "alertname: {name}\n        exp_alerts:\n          -"
                )),
                "alert {name} has no test that fires it"
            );
        }
    }
}

/// `status --plan` on a plan with SLOs shows each SLO's measured share, error budget left
/// and burn rate, and the RTO trend per job and region; the metrics carry the same figures.
/// Judged 60 hours after the first backup on an injected clock: every hourly backup slot
/// since was missed, no region passed a drill in either of the last two days.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_metrics_show_slo_share_error_budget_burn_rate_and_rto_trend() {
    let site = Site::new();
    let dir = site.tmp.path();
    let p = plan(
        dir,
        "slo",
        "rto = \"30m\"\nbackups_on_time = \"99%\"\ndrill_every = \"1d\"\nslo_window = \"30d\"",
        "",
    );
    std::fs::write(
        &p,
        std::fs::read_to_string(&p).unwrap().replacen(
            "schedule = \"0 0 1 1 *\"",
            "schedule = \"0 * * * *\"",
            1,
        ),
    )
    .unwrap();
    let ran = site.run_until_idle(&p).await;
    assert!(ran.iter().all(|(_, c)| *c == Some(ExitCode::Ok)), "{ran:?}");
    // Two more drills from local: three points make a trend.
    for _ in 0..2 {
        let o = run(lifeboat()
            .env("LIFEBOAT_CATALOG", site.catalog())
            .args(["drill", "--plan"])
            .arg(&p));
        assert!(o.status.success(), "{}", stderr(&o));
    }

    let clock = later(60);
    let r = status(
        &site.env,
        None,
        StatusRequest {
            region: None,
            plan: Some(p.display().to_string()),
            job: None,
            cycle: std::time::Duration::from_secs(30 * 86_400),
            clock: clock.clone(),
        },
    )
    .await
    .unwrap();
    assert_eq!(r.slos.len(), 1, "{:#?}", r.slos);
    let s = &r.slos[0];
    assert_eq!(s.plan, "slo");
    let names: Vec<&str> = s.slos.iter().map(|x| x.slo.as_str()).collect();
    assert_eq!(names, ["backups_on_time", "drill_every"]);
    let b = &s.slos[0];
    assert!((58..=61).contains(&b.total) && b.good <= 1, "{b:?}");
    let bad = 1.0 - b.good as f64 / b.total as f64;
    assert!(
        (b.measured_share.unwrap() - (1.0 - bad)).abs() < 1e-9,
        "{b:?}"
    );
    assert!((b.burn_rate.unwrap() - bad / 0.01).abs() < 1e-6, "{b:?}");
    assert!((b.budget_left.unwrap() - (1.0 - bad / 0.01)).abs() < 1e-6);
    assert!(!b.met);
    let d = &s.slos[1];
    assert_eq!((d.total, d.good, d.met), (4, 0, false), "{d:?}");
    let t = s
        .rto_trends
        .iter()
        .find(|t| t.job == "files" && t.region == "local")
        .unwrap_or_else(|| panic!("no trend for files in local: {:#?}", s.rto_trends));
    assert_eq!(
        (t.trend.points, t.trend.target_secs),
        (3, Some(1800.0)),
        "{t:?}"
    );

    // The metrics: the same figures.
    let text = lifeboat::ops::metrics::render(
        &site.env,
        &lifeboat::ops::metrics::MetricsRequest {
            plan: Some(p.clone()),
            state_dir: dir.join("state"),
            clock,
        },
    )
    .await
    .unwrap();
    promtool_check_metrics(&lifeboat::ops::metrics::prometheus_text(&text));
    let l = ["plan=\"slo\"", "slo=\"backups_on_time\""];
    let close = |name: &str, want: f64| {
        let got = value(&text, name, &l).unwrap_or_else(|| panic!("{name} missing:\n{text}"));
        assert!((got - want).abs() < 1e-6, "{name}: {got} != {want}");
    };
    close("lifeboat_slo_share_ratio", b.measured_share.unwrap());
    close("lifeboat_slo_target_ratio", 0.99);
    close(
        "lifeboat_slo_error_budget_remaining_ratio",
        b.budget_left.unwrap(),
    );
    close("lifeboat_slo_burn_rate", b.burn_rate.unwrap());
    let tl = ["plan=\"slo\"", "lifeboat_job=\"files\"", "region=\"local\""];
    let per_day = value(&text, "lifeboat_rto_trend_seconds_per_day", &tl).unwrap();
    assert!((per_day - t.trend.secs_per_day).abs() < 1e-6);
    assert_eq!(
        value(
            &text,
            "lifeboat_rto_breach_projected_timestamp_seconds",
            &tl
        ),
        t.trend.breach.map(|b| b.timestamp_millis() as f64 / 1000.0)
    );

    // The CLI: human and --json.
    let o = run(lifeboat()
        .env("LIFEBOAT_CATALOG", site.catalog())
        .args(["status", "--plan"])
        .arg(&p));
    let out = stdout(&o);
    assert!(
        out.contains("backups_on_time")
            && out.contains("burn rate")
            && out.contains("rto trend slo/files in local"),
        "{out}"
    );
    println!("{out}");
    let o = run(lifeboat()
        .env("LIFEBOAT_CATALOG", site.catalog())
        .args(["--json", "status", "--plan"])
        .arg(&p));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["slos"][0]["plan"], "slo", "{v}");
    assert_eq!(v["slos"][0]["slos"][0]["slo"], "backups_on_time", "{v}");
    assert!(
        v["slos"][0]["rto_trends"][0]["secs_per_day"].is_number(),
        "{v}"
    );
}

/// `status --plan` and every metrics scrape of a plan with a recovery-point set and SLOs
/// read the catalog only. After the backups and drills both repositories are moved away:
/// status and the metrics still report the set's newest recovery point in each region, its
/// RPO, the SLO figures and the RTO trend — the same as with the repositories in place, and
/// the same as the period report computes from the repositories. (Opening a region, as
/// status once did for sets and SLOs, would find nothing there.) `catalog rebuild --plan`
/// into a fresh catalog recreates the set rows and the figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_metrics_of_a_set_and_slos_read_the_catalog_and_open_no_repository() {
    let site = Site::new();
    let dir = site.tmp.path();
    let p = plan(
        dir,
        "app",
        "rpo = \"1h\"\nrto = \"30m\"\nbackups_on_time = \"99%\"\ndrill_every = \"1d\"\nslo_window = \"30d\"",
        "",
    );
    // Hourly jobs: `files` on its own, and a set of two directories.
    let mut members = String::new();
    for m in ["u1", "u2"] {
        let d = dir.join(m);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("f.txt"), m).unwrap();
        members.push_str(&format!(
            "[[jobs]]\nname = \"{m}\"\nschedule = \"0 * * * *\"\n[jobs.source]\ntype = \"dir\"\npaths = [\"{}\"]\n",
            d.display()
        ));
    }
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replacen("schedule = \"0 0 1 1 *\"", "schedule = \"0 * * * *\"", 1)
        .replacen(
            "[drill]\n",
            &format!("{members}[[sets]]\nname = \"app\"\njobs = [\"u1\", \"u2\"]\n[drill]\n"),
            1,
        );
    std::fs::write(&p, text).unwrap();
    let cli = |args: &[&str]| {
        let o = run(lifeboat()
            .env("LIFEBOAT_CATALOG", site.catalog())
            .args(args)
            .arg("--plan")
            .arg(&p));
        assert!(o.status.success(), "{args:?}: {}{}", stdout(&o), stderr(&o));
    };
    cli(&["backup"]);
    // Three drills from local make a trend; one from eu.
    for _ in 0..3 {
        cli(&["drill", "--job", "files"]);
    }
    cli(&["drill", "--job", "files", "--region", "eu"]);

    // Judged 30 hours on: hourly slots missed, a day without a drill, the set's RPO missed.
    let clock = later(30);
    let now = clock.now();
    let status_of = |env: Env| {
        let clock = clock.clone();
        let p = p.clone();
        async move {
            status(
                &env,
                None,
                StatusRequest {
                    region: None,
                    plan: Some(p.display().to_string()),
                    job: None,
                    cycle: std::time::Duration::from_secs(30 * 86_400),
                    clock,
                },
            )
            .await
            .unwrap()
        }
    };
    let metrics_of = |env: Env| {
        let req = lifeboat::ops::metrics::MetricsRequest {
            plan: Some(p.clone()),
            state_dir: dir.join("state"),
            clock: clock.clone(),
        };
        async move {
            let text = lifeboat::ops::metrics::render(&env, &req).await.unwrap();
            let mut s: Vec<_> = samples(&text)
                .into_iter()
                .filter(|(n, _, _)| {
                    n.starts_with("lifeboat_slo_")
                        || n.starts_with("lifeboat_rto_")
                        || n == "lifeboat_objectives_missed"
                })
                .collect();
            s.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
            s
        }
    };
    let env_of = |catalog: &Path| {
        let (mut env, _) = Env::quiet(Cancel::new());
        env.catalog = Ok(catalog.display().to_string());
        env
    };
    fn json<T: serde::Serialize>(v: &T) -> serde_json::Value {
        serde_json::to_value(v).unwrap()
    }
    let before = status_of(env_of(&site.catalog())).await;
    let metrics_before = metrics_of(env_of(&site.catalog())).await;

    // What the period report computes from the repositories: the same figures.
    let plan_obj = lifeboat::ops::plans::load_plans(&p).unwrap().remove(0).1;
    let target = lifeboat::ops::target::Target::from_plan(Arc::new(plan_obj), None).unwrap();
    let mut input = lifeboat::ops::report::plan_evidence(&site.env, &target)
        .await
        .unwrap();
    // The catalog keeps times in milliseconds; these drills ran a fraction of a second
    // apart, where that moves a fitted slope, so the reports' times are taken alike.
    for d in &mut input.drills {
        d.started = lifeboat::catalog::from_ms(lifeboat::catalog::ms(d.started));
    }
    let period = lifeboat::report::period::build(&[input], now - chrono::Duration::days(30), now);
    let from_repo = &period.plans[0];
    assert_eq!(before.slos.len(), 1, "{:#?}", before.slos);
    let figures = |s: &[lifeboat::report::period::SloStatus]| {
        s.iter()
            .map(|x| (x.slo.clone(), x.good, x.total, x.measured_share, x.met))
            .collect::<Vec<_>>()
    };
    assert_eq!(figures(&before.slos[0].slos), figures(&from_repo.slos));
    let b = &before.slos[0].slos;
    assert!(b[0].total >= 29 && b[0].good <= 1, "{b:#?}");
    assert_eq!((b[1].total, b[1].good), (2, 0), "{b:#?}");
    let trends_from_repo: Vec<_> = from_repo
        .trends
        .iter()
        .filter_map(|t| t.rto_over_time.as_ref().map(|r| (&t.job, &t.region, r)))
        .collect();
    assert_eq!(before.slos[0].rto_trends.len(), trends_from_repo.len());
    assert!(!trends_from_repo.is_empty(), "{:#?}", from_repo.trends);
    for (t, (job, region, r)) in before.slos[0].rto_trends.iter().zip(&trends_from_repo) {
        assert_eq!((&t.job, &t.region), (*job, *region));
        assert_eq!(
            (t.trend.points, t.trend.target_secs),
            (r.points, r.target_secs)
        );
        assert!(
            (t.trend.secs_per_day - r.secs_per_day).abs() <= 1e-9 * r.secs_per_day.abs().max(1.0),
            "{t:?} {r:?}"
        );
    }
    // The set: its newest recovery point in both regions, the one the repositories hold.
    assert_eq!(before.sets.len(), 2, "{:#?}", before.sets);
    let set_ids: Vec<_> = before.sets.iter().map(|s| s.set_id.clone()).collect();
    assert!(
        set_ids.iter().all(|s| s.is_some() && *s == set_ids[0]),
        "{set_ids:?}"
    );
    let manifest = std::fs::read_dir(dir.join("app-r1/sets"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name()
        .to_string_lossy()
        .to_string();
    for s in &before.sets {
        assert_eq!(s.manifest.as_deref(), Some(manifest.as_str()), "{s:?}");
        assert!((s.rpo_secs.unwrap() - 30.0 * 3600.0).abs() < 600.0, "{s:?}");
        assert_eq!(s.rpo_met, Some(false));
    }
    let set_misses = |r: &lifeboat::ops::status::StatusReport| {
        r.misses
            .iter()
            .filter(|m| m.objective == "set_rpo")
            .map(|m| (m.region.clone(), m.detail.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(set_misses(&before).len(), 2, "{:#?}", before.misses);

    // No repository: both regions moved away. Status and the metrics do not notice.
    for r in ["app-r1", "app-r2"] {
        std::fs::rename(dir.join(r), dir.join(format!("{r}.away"))).unwrap();
    }
    let after = status_of(env_of(&site.catalog())).await;
    assert_eq!(json(&after.sets), json(&before.sets));
    assert_eq!(json(&after.slos), json(&before.slos));
    assert_eq!(set_misses(&after), set_misses(&before));
    assert!(
        set_misses(&after)
            .iter()
            .all(|(_, d)| d.contains("newest recovery point is") && !d.contains("unreadable")),
        "{:#?}",
        after.misses
    );
    assert_eq!(metrics_of(env_of(&site.catalog())).await, metrics_before);
    // The CLI, likewise.
    let o = run(lifeboat()
        .env("LIFEBOAT_CATALOG", site.catalog())
        .args(["--json", "status", "--plan"])
        .arg(&p));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["sets"][1]["region"], "eu", "{v}");
    assert_eq!(v["sets"][1]["manifest"], manifest.as_str(), "{v}");

    // A fresh catalog rebuilt from the repositories gives the same sets and SLOs.
    for r in ["app-r1", "app-r2"] {
        std::fs::rename(dir.join(format!("{r}.away")), dir.join(r)).unwrap();
    }
    let fresh = dir.join("fresh.db");
    let o = run(lifeboat()
        .env("LIFEBOAT_CATALOG", &fresh)
        .args(["catalog", "rebuild", "--plan"])
        .arg(&p));
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("1 recovery-point sets, 1 added"),
        "{}",
        stdout(&o)
    );
    let rebuilt = status_of(env_of(&fresh)).await;
    assert_eq!(json(&rebuilt.sets), json(&before.sets));
    assert_eq!(json(&rebuilt.slos), json(&before.slos));
}
