//! `lifeboat run-due`: never-run jobs run at once, then wait for their next slot; overlapping
//! invocations are refused by the lock.

use crate::support;

use std::process::Command;

use support::*;

/// A plan with one directory job scheduled yearly on 1 January: after its first run it is not
/// due again during a test.
fn yearly_dir_plan(ws: &Workspace, name: &str) -> std::path::PathBuf {
    let data = ws.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.txt"), b"hello").unwrap();
    ws.plan(
        name,
        &format!("[[jobs]]\nname = \"files\"\nschedule = \"0 0 1 1 *\"\n[jobs.source]\ntype = \"dir\"\npaths = [\"{}\"]\n", data.display()),
    )
}

#[test]
fn run_due_runs_never_run_jobs_once_and_respects_the_lock() {
    let ws = Workspace::new();
    let state = ws.path().join("state");
    let plan = yearly_dir_plan(&ws, "sched");
    let cmd = || {
        let mut c = lifeboat();
        c.env("LIFEBOAT_STATE_DIR", &state);
        c
    };

    let o = run(cmd()
        .args(["run-due", "--json", "--dry-run", "--plan"])
        .arg(&plan));
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["due"][0]["task"], "sched/files/backup");
    assert_eq!(v["due"][0]["ran"], false);
    assert!(ws.snapshots(&plan).is_empty(), "a dry run runs nothing");

    let o = run(cmd().args(["run-due", "--json", "--plan"]).arg(&plan));
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["due"][0]["ran"], true);
    assert_eq!(v["due"][0]["exit_code"], 0);
    let snaps = ws.snapshots(&plan);
    assert_eq!(snaps.len(), 1);
    assert!(snaps[0]["tags"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t == "scheduled"));

    // ran, and recorded in the catalog: nothing is due now
    let o = run(cmd().args(["run-due", "--json", "--plan"]).arg(&plan));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["due"].as_array().unwrap().is_empty(), "{v}");
    assert_eq!(ws.snapshots(&plan).len(), 1);

    // status --plan FILE judges against the plan's documented RPO (1 day); nothing was
    // drilled yet, so the honest RPO is unknown and the objective is not met
    let o = run(cmd().args(["status", "--json", "--plan"]).arg(&plan));
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let job = v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job"] == "files")
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(job["plan"], "sched");
    assert_eq!(job["rpo_target_secs"], 86400.0);
    assert_eq!(job["rpo_met"], false);
    assert!(job["newest_snapshot"].is_object(), "{job}");

    // an overlapping run is refused with exit 11 while another holds the lock
    let lock = state.join("run-due.lock");
    let mut holder = Command::new("flock")
        .arg("-x")
        .arg(&lock)
        .args(["sleep", "30"])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let o = run(cmd().args(["run-due", "--plan"]).arg(&plan));
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(o.status.code(), Some(11), "{}", stderr(&o));
    assert!(stderr(&o).contains("run-due"), "{}", stderr(&o));
}

/// A catalog run-due cannot open is no reason to guess that every job never ran: it runs
/// nothing, says why and exits non-zero, so the timer's next tick does not re-run everything.
#[test]
fn run_due_refuses_to_guess_when_the_catalog_cannot_be_opened() {
    let ws = Workspace::new();
    let state = ws.path().join("state");
    let plan = yearly_dir_plan(&ws, "nocat");
    // Nothing listens on port 1: the catalog cannot be opened.
    for dry in [false, true] {
        let mut c = lifeboat();
        c.env("LIFEBOAT_STATE_DIR", &state)
            .env(
                "LIFEBOAT_CATALOG",
                "postgres://lifeboat@127.0.0.1:1/catalog",
            )
            .args(["run-due", "--plan"])
            .arg(&plan);
        if dry {
            c.arg("--dry-run");
        }
        let o = run(&mut c);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("cannot tell what is due")
                && stderr(&o).contains("nothing was run"),
            "{}",
            stderr(&o)
        );
        assert!(!stdout(&o).contains("due: backup"), "{}", stdout(&o));
    }
    assert!(
        ws.snapshots(&plan).is_empty(),
        "nothing may run without the catalog"
    );
}

/// A plan with three local destinations (`r1` is region `local`, then `eu` and `ap`), a
/// directory job, a daily drill and a daily budgeted verification; `extra` is appended.
/// The repositories are created at every destination.
fn three_region_plan(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.txt"), b"hello").unwrap();
    let pw = dir.join("repo.pass");
    std::fs::write(&pw, "correct horse battery staple\n").unwrap();
    std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let plan = dir.join("month.toml");
    std::fs::write(
        &plan,
        format!(
            "name = \"month\"\n[repository]\npassword_file = \"repo.pass\"\n[objectives]\nrpo = \"8d\"\nrto = \"30m\"\n\
             [[destinations]]\ntype = \"local\"\npath = \"r1\"\n\
             [[destinations]]\ntype = \"local\"\nname = \"eu\"\npath = \"r2\"\n\
             [[destinations]]\ntype = \"local\"\nname = \"ap\"\npath = \"r3\"\n\
             [[jobs]]\nname = \"files\"\nschedule = \"0 3 * * 1\"\n[jobs.source]\ntype = \"dir\"\npaths = [\"{}\"]\n\
             [drill]\nenvironment = \"directory\"\nschedule = \"0 5 * * *\"\n\
             [verify]\nschedule = \"0 4 * * *\"\nbudget = \"1KiB\"\ncycle = \"7d\"\n{extra}",
            data.display()
        ),
    )
    .unwrap();
    let o = run(lifeboat().args(FAST_INIT).arg("--plan").arg(&plan));
    assert!(o.status.success(), "{}", stderr(&o));
    plan
}

/// A simulated month, one run-due tick per day on a manual clock: the drills rotate so that
/// each of the three destinations is drilled within the plan's drill interval (one day of
/// drill schedule times three regions), never-drilled regions first; and the verify budget
/// (about one pack per region and run) reads every pack of every region within its cycle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulated_month_drills_every_region_within_its_interval_and_covers_every_pack() {
    use lifeboat::ops::run_due::{run_due, RunDueRequest, TaskKind};
    use lifeboat::ops::{Collect, Env};
    use lifeboat::sys::{Cancel, ManualClock};
    use std::sync::Arc;

    let tmp = tempfile::tempdir().unwrap();
    let plan = three_region_plan(tmp.path(), "");
    let (mut env, _events) = Env::quiet(Cancel::new());
    env.catalog = Ok(tmp.path().join("catalog.db").display().to_string());
    let clock = ManualClock::new(chrono::Utc::now());
    let req = RunDueRequest {
        plan: plan.clone(),
        dry_run: false,
        min_regions: None,
        lock_dir: Some(tmp.path().join("state")),
        task_observer: Arc::new(Collect::default()),
        clock: Arc::new(clock.clone()),
    };
    let mut drilled: std::collections::BTreeMap<String, Vec<u32>> = Default::default();
    let mut verified_regions = std::collections::BTreeSet::new();
    let mut backups = 0;
    for day in 0..30u32 {
        // A new file every day: each weekly backup adds a pack the budget has to reach.
        std::fs::write(
            tmp.path().join(format!("data/day{day}.bin")),
            (0..600u32)
                .map(|i| (i * 7 + day * 13) as u8)
                .collect::<Vec<_>>(),
        )
        .unwrap();
        let r = run_due(&env, req.clone()).await.unwrap();
        for t in &r.due {
            assert_eq!(
                t.exit_code,
                Some(lifeboat::error::ExitCode::Ok),
                "day {day}: {} failed: {:?}",
                t.task.key,
                t.error
            );
            match &t.task.kind {
                TaskKind::Drill { region } => drilled.entry(region.clone()).or_default().push(day),
                TaskKind::Verify { region } => {
                    verified_regions.insert(region.clone());
                }
                TaskKind::Backup { .. } => backups += 1,
                TaskKind::Retention { .. } => panic!("the plan has no [retention]"),
            }
        }
        let drills = r
            .due
            .iter()
            .filter(|t| matches!(t.task.kind, TaskKind::Drill { .. }))
            .count();
        assert!(drills <= 1, "day {day}: one drill per plan and tick");
        clock.advance(chrono::Duration::days(1));
    }
    assert_eq!(
        drilled.keys().cloned().collect::<Vec<_>>(),
        ["ap", "eu", "local"],
        "{drilled:?}"
    );
    // the first three days drill each region once, in plan order (never drilled first)
    assert_eq!(drilled["local"][0], 0);
    assert_eq!(drilled["eu"][0], 1);
    assert_eq!(drilled["ap"][0], 2);
    for (region, days) in &drilled {
        for w in days.windows(2) {
            assert!(
                w[1] - w[0] <= 3,
                "{region} went {} days undrilled: {days:?}",
                w[1] - w[0]
            );
        }
        assert!(29 - days.last().unwrap() < 3, "{region}: {days:?}");
    }
    assert_eq!(verified_regions.len(), 3, "{verified_regions:?}");
    // the weekly backup ran once at first and then on each Monday: not on every tick
    assert!((5..=6).contains(&backups), "{backups} backups in a month");

    // Every pack of every region was read within the cycle, and status --check holds.
    let o = run(lifeboat()
        .env("LIFEBOAT_CATALOG", tmp.path().join("catalog.db"))
        .args(["status", "--json", "--check", "--plan"])
        .arg(&plan));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let cov = v["coverage"].as_array().unwrap();
    assert_eq!(cov.len(), 3, "{v}");
    for c in cov {
        assert_eq!(c["percent"], 100.0, "{c}");
        assert_eq!(c["never_verified"], 0, "{c}");
        assert!(c["packs"].as_u64().unwrap() >= 5, "{c}");
    }
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

/// With the catalog unreachable, a plan that opts into `[schedule] local_fallback` is
/// scheduled from run-due's state file (what ran is not run again), while a plan that does
/// not is refused: nothing of it runs, and the run exits 1 saying why.
#[test]
fn without_the_catalog_only_plans_with_a_local_fallback_are_scheduled() {
    let ws = Workspace::new();
    let state = ws.path().join("state");
    let plans = ws.path().join("plans");
    std::fs::create_dir_all(&plans).unwrap();
    let a = yearly_dir_plan(&ws, "fallback");
    let text = std::fs::read_to_string(&a).unwrap();
    std::fs::write(
        plans.join("fallback.toml"),
        format!(
            "{}\n[schedule]\nlocal_fallback = true\n",
            text.replace("\"repo", "\"../repo")
        ),
    )
    .unwrap();
    let cmd = |catalog: Option<&str>| {
        let mut c = lifeboat();
        c.env("LIFEBOAT_STATE_DIR", &state);
        if let Some(u) = catalog {
            c.env("LIFEBOAT_CATALOG", u);
        }
        c.args(["run-due", "--json", "--plan"]).arg(&plans);
        c
    };
    // with the catalog: runs, and run-due's state file records it
    let o = run(&mut cmd(None));
    assert!(o.status.success(), "{}", stderr(&o));
    let st: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("run-due-state.json")).unwrap()).unwrap();
    assert_eq!(st["tasks"]["fallback/files/backup"]["exit_code"], 0, "{st}");

    let down = "postgres://lifeboat@127.0.0.1:1/catalog";
    // without it: the opted-in plan is scheduled from the state file: nothing is due
    let o = run(&mut cmd(Some(down)));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("local_fallback"), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["due"].as_array().unwrap().is_empty(), "{v}");

    // a second plan without the opt-in is refused, and the run says so
    let b = yearly_dir_plan(&ws, "strict");
    let text = std::fs::read_to_string(&b).unwrap();
    std::fs::write(
        plans.join("strict.toml"),
        text.replace("\"repo", "\"../repo"),
    )
    .unwrap();
    let o = run(&mut cmd(Some(down)));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["refused"][0]["plan"], "strict", "{v}");
    assert!(
        stderr(&o).contains("cannot tell what is due"),
        "{}",
        stderr(&o)
    );
    assert_eq!(ws.snapshots(&a).len(), 1, "nothing ran again");
}

/// `[schedule] task_timeout`: a task that runs longer is stopped, counted as failed (exit 1,
/// recorded in the state file) and says which limit stopped it; no snapshot is committed.
#[test]
fn a_task_longer_than_its_timeout_is_stopped_and_counted_as_failed() {
    let ws = Workspace::new();
    let state = ws.path().join("state");
    let data = ws.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.txt"), b"hello").unwrap();
    let plan = ws.plan(
        "slow",
        &format!(
            "[[jobs]]\nname = \"files\"\nschedule = \"0 0 1 1 *\"\n[jobs.source]\ntype = \"dir\"\npaths = [\"{}\"]\n[jobs.hooks]\npre = \"sleep 4\"\n\n[schedule]\ntask_timeout = \"1s\"\n",
            data.display()
        ),
    );
    let o = run(lifeboat()
        .env("LIFEBOAT_STATE_DIR", &state)
        .args(["run-due", "--json", "--plan"])
        .arg(&plan));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("ran longer than [schedule] task_timeout (1s)"),
        "{}",
        stderr(&o)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["due"][0]["exit_code"], 1, "{v}");
    let st: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("run-due-state.json")).unwrap()).unwrap();
    assert_eq!(st["tasks"]["slow/files/backup"]["failures"], 1, "{st}");
    assert!(ws.snapshots(&plan).is_empty());
}

/// A damaged state file costs a warning, not the backups: the catalog still says what ran,
/// and the file is written afresh.
#[test]
fn a_damaged_state_file_does_not_stop_run_due() {
    let ws = Workspace::new();
    let state = ws.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("run-due-state.json"), b"{ not json").unwrap();
    let plan = yearly_dir_plan(&ws, "damaged");
    let o = run(lifeboat()
        .env("LIFEBOAT_STATE_DIR", &state)
        .args(["run-due", "--plan"])
        .arg(&plan));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("state file"), "{}", stderr(&o));
    assert_eq!(ws.snapshots(&plan).len(), 1);
    let st: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("run-due-state.json")).unwrap()).unwrap();
    assert_eq!(st["tasks"]["damaged/files/backup"]["runs"], 1, "{st}");
}
