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
