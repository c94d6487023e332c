//! The invariants RELIABILITY.md asks after every fault (INV-1..3 on a [`Scratch`]
//! repository) and process helpers the fault tests share.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use lifeboat::restore::compare_dirs;
use serde_json::Value;

use super::Scratch;

/// The ids of the scratch repository's snapshots.
pub fn snapshot_ids(s: &Scratch) -> Vec<String> {
    s.json(&["snapshots"])
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap().to_string())
        .collect()
}

/// INV-1: `verify --read-data` exits 0 and reports nothing above info level (unreferenced
/// packs a killed run left are info).
pub fn inv1(s: &Scratch) -> Value {
    let v = s.json(&["verify", "--read-data"]);
    assert_eq!(v["errors"], 0, "{v:#}");
    assert_only_info(&v);
    v
}

/// The findings of a `verify --json` output.
pub fn findings(v: &Value) -> &[Value] {
    v["report"]["findings"]
        .as_array()
        .unwrap_or_else(|| panic!("no findings in the verify report: {v:#}"))
}

/// Whether a `verify --json` output has a finding of `severity` whose message contains `text`.
pub fn has_finding(v: &Value, severity: &str, text: &str) -> bool {
    findings(v).iter().any(|f| {
        f["severity"] == severity && f["message"].as_str().is_some_and(|m| m.contains(text))
    })
}

/// Every finding of a `verify --json` output is at info level (a healthy repository).
pub fn assert_only_info(v: &Value) {
    for f in findings(v) {
        assert_eq!(f["severity"], "info", "INV-1: {f}");
    }
}

/// INV-2 for one snapshot: it restores to exactly `src` (restored under its base name).
pub fn restores_exactly(s: &Scratch, id: &str, src: &Path) {
    let target = s.path(&format!("restore-{}", rand::random::<u64>()));
    s.ok(&["restore", id, "--target", target.to_str().unwrap()]);
    let diffs = compare_dirs(src, &target.join(src.file_name().unwrap())).unwrap();
    assert!(diffs.is_empty(), "INV-2: snapshot {id}: {diffs:#?}");
    std::fs::remove_dir_all(&target).unwrap();
}

/// INV-3: `catalog rebuild` of the scratch's catalog (which every backup recorded into)
/// finds every snapshot already there and nothing to add, update or drop.
pub fn inv3(s: &Scratch) {
    let v = s.json(&["catalog", "rebuild"]);
    let r = &v["report"];
    let n = snapshot_ids(s).len();
    assert_eq!(r["added"], 0, "INV-3: {v:#}");
    assert_eq!(r["updated"], 0, "INV-3: {v:#}");
    assert_eq!(r["forgotten"], 0, "INV-3: {v:#}");
    assert_eq!(r["unchanged"], n, "INV-3: {v:#}");
    for f in r["findings"].as_array().unwrap() {
        assert_ne!(f["severity"], "error", "INV-3: {f}");
    }
}

/// Waits until `child` is stopped (SIGSTOP: state `T` in /proc).
pub fn wait_stopped(child: &mut Child) {
    let t0 = Instant::now();
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap();
        let state = stat[stat.rfind(')').unwrap() + 2..].chars().next().unwrap();
        if state == 'T' {
            return;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the process ended before its stop point"
        );
        assert!(t0.elapsed() < Duration::from_secs(120), "never stopped");
        std::thread::sleep(Duration::from_millis(20));
    }
}
