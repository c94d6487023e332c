//! The shipped systemd units, and the ones `lifeboat systemd install` writes for the shipped
//! plans: `systemd-analyze verify` accepts them, and `systemd-analyze security
//! --offline=true` rates both services at most 5.0 (the target). The units match
//! the plans: every local destination is writable (a missing one is skipped, not a
//! 226/NAMESPACE failure), every credential the plans name is loaded.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

const TARGET_EXPOSURE: f64 = 5.0;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn analyze() -> Command {
    assert!(
        Command::new("systemd-analyze")
            .arg("--version")
            .output()
            .is_ok(),
        "systemd-analyze is missing: apt-get install systemd (scripts/test installs it)"
    );
    Command::new("systemd-analyze")
}

/// `systemd-analyze verify` and `security --offline=true` on the units in `dir`; returns
/// the exposure of each service.
fn check_units(dir: &Path) -> Vec<(String, f64)> {
    // verify needs an instance of the template, and executables that exist.
    let drill = dir.join("lifeboat-drill@.service");
    std::fs::copy(&drill, dir.join("lifeboat-drill@shop.service")).unwrap();
    let units = [
        "lifeboat-run-due.service",
        "lifeboat-run-due.timer",
        "lifeboat-drill@shop.service",
    ];
    let o = analyze()
        .arg("verify")
        .args(units.iter().map(|u| dir.join(u)))
        .output()
        .unwrap();
    assert!(
        o.status.success() && o.stderr.is_empty(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let mut out = Vec::new();
    for u in ["lifeboat-run-due.service", "lifeboat-drill@shop.service"] {
        let o = analyze()
            .args(["security", "--offline=true", "--no-pager"])
            .arg(dir.join(u))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        let level: f64 = text
            .lines()
            .find_map(|l| l.split_once("Overall exposure level for ").map(|x| x.1))
            .and_then(|l| l.split_once(": ").map(|x| x.1))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no exposure level: {text}"));
        out.push((u.to_string(), level));
    }
    out
}

#[test]
fn the_shipped_units_verify_and_are_rated_at_most_5() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_lifeboat");
    for u in [
        "lifeboat-run-due.service",
        "lifeboat-run-due.timer",
        "lifeboat-drill@.service",
    ] {
        let text = std::fs::read_to_string(repo().join("systemd").join(u)).unwrap();
        // the shipped ExecStart names /usr/local/bin/lifeboat: verify checks it exists
        std::fs::write(
            tmp.path().join(u),
            text.replace("/usr/local/bin/lifeboat", bin),
        )
        .unwrap();
    }
    let timer = std::fs::read_to_string(repo().join("systemd/lifeboat-run-due.timer")).unwrap();
    assert!(
        timer.contains("OnCalendar=") && timer.contains("Persistent=true"),
        "Persistent= only has an effect with OnCalendar="
    );
    for (unit, level) in check_units(tmp.path()) {
        assert!(
            level <= TARGET_EXPOSURE,
            "{unit}: exposure {level} > {TARGET_EXPOSURE}"
        );
    }
    // The shipped units match the shipped plans' destinations and credential.
    let service = std::fs::read_to_string(repo().join("systemd/lifeboat-run-due.service")).unwrap();
    assert!(
        service.contains("ReadWritePaths=-/srv/lifeboat"),
        "{service}"
    );
    assert!(
        service.contains("LoadCredential=lifeboat-repo:"),
        "{service}"
    );
    // Every shipped plan, the examples in plans/examples/ included.
    let mut plans = Vec::new();
    for dir in [repo().join("plans"), repo().join("plans/examples")] {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                plans.push(p);
            }
        }
    }
    assert!(plans.len() >= 9, "{plans:?}");
    for plan in plans {
        let text = std::fs::read_to_string(&plan).unwrap();
        for l in text.lines() {
            if let Some(p) = l.trim().strip_prefix("path = \"/srv/") {
                assert!(
                    p.starts_with("lifeboat/"),
                    "a plan writes outside /srv/lifeboat: {l}"
                );
            }
            if let Some(c) = l.trim().strip_prefix("password_credential = ") {
                assert!(
                    service.contains(&format!("LoadCredential={}:", c.trim_matches('"'))),
                    "credential {c} is not loaded by the unit"
                );
            }
        }
    }
}

#[test]
fn systemd_install_writes_units_for_the_plans_that_verify_and_hold_the_target() {
    let tmp = tempfile::tempdir().unwrap();
    let units = tmp.path().join("units");
    let o = run(lifeboat()
        .args(["systemd", "install", "--no-enable", "--plan"])
        .arg(repo().join("plans"))
        .arg("--unit-dir")
        .arg(&units)
        .args(["--credential-dir", "/etc/lifeboat/creds"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let service = std::fs::read_to_string(units.join("lifeboat-run-due.service")).unwrap();
    // this binary, these plans, each local destination writable (skipped if missing), the
    // credential the plans name
    assert!(
        service.contains(&format!(
            "ExecStart={} run-due --plan {}",
            env!("CARGO_BIN_EXE_lifeboat"),
            repo().join("plans").display()
        )),
        "{service}"
    );
    for d in [
        "/srv/lifeboat/web",
        "/srv/lifeboat/shop",
        "/srv/lifeboat/vm",
    ] {
        assert!(service.contains(&format!("-{d}")), "{d}: {service}");
    }
    assert!(
        service.contains("LoadCredential=lifeboat-repo:/etc/lifeboat/creds/lifeboat-repo"),
        "{service}"
    );
    assert!(!service.contains("/srv/backup"));
    for (unit, level) in check_units(&units) {
        assert!(
            level <= TARGET_EXPOSURE,
            "{unit}: exposure {level} > {TARGET_EXPOSURE}"
        );
    }
}
