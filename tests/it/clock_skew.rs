//! T23, clock skew: leases, prune's grace period and upload ages are judged in the store's
//! time, not each host's (src/repo/clock.rs), and prune refuses to run when this host's clock
//! is more than 5 minutes from the store's. The store is a real Garage whose clock is moved
//! with `faketime`, and "another host" is a lifeboat process run under `faketime` too.

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::support;
use support::garage::{self, Garage};
use support::regions::{lifeboat, make_s3_tree, run, Run};
use support::wait_stopped;

/// lifeboat with the test environment, its clock moved by `offset` (`faketime` syntax) when
/// given: a host whose clock is not this one's.
fn lb(w: &Path, url: &str, offset: Option<&str>, args: &[&str]) -> Command {
    let base = lifeboat(w);
    let mut c = match offset {
        None => Command::new(base.get_program()),
        Some(o) => {
            let mut c = Command::new("faketime");
            c.args(["-m", "-f", o]).arg(base.get_program());
            c
        }
    };
    c.env_clear();
    for (k, v) in base.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    c.arg("--repo").arg(url).args(args);
    c
}

fn ok(w: &Path, url: &str, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.push("--json");
    let r = run(lb(w, url, None, &a));
    assert_eq!(r.code, 0, "{args:?}: {r:?}");
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {r:?}"))
}

/// Every key of the repository, but the locks (a refused prune took and released its lock).
fn keys(g: &Garage, w: &Path) -> Vec<String> {
    use lifeboat::store::Store;
    let mut cfg = lifeboat::store::s3::S3Config::from_url(&g.url("repo")).unwrap();
    cfg.credentials_file = Some(garage::credentials_file(w, garage::SECRET));
    let store = lifeboat::store::s3::S3Store::new(cfg).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut keys: Vec<String> = rt
        .block_on(store.list(""))
        .unwrap()
        .into_iter()
        .map(|i| i.key)
        .filter(|k| !k.starts_with("locks/"))
        .collect();
    keys.sort();
    keys
}

/// The store's clock is 3 minutes ahead of this host's (inside SigV4's window; Garage only
/// refuses signatures a day off). A prune of this host (its lease 60 s) stops in phase 2
/// holding its exclusive lock; another host whose clock agrees with the store runs `unlock`:
/// the lock must be live to it. Judged by this host's clock the lock would have expired
/// 2 minutes before it was taken, and the other host would break a live prune's lock.
/// Then a host 13 minutes behind the store may not prune at all (exit 1, naming the clock),
/// and nothing it could have deleted is gone.
#[test]
fn leases_are_judged_in_store_time_and_prune_refuses_a_skewed_clock() {
    let g = Garage::start_with_clock("skew", Some("+3m"));
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let url = g.url("repo");
    let r = run(lb(w, &url, None, &support::FAST_INIT));
    assert_eq!(r.code, 0, "{r:?}");
    let src = make_s3_tree(w, 6, 23);
    // A file only the first snapshot holds: forgetting that snapshot condemns its packs.
    let gone: Vec<u8> = (0..(6 << 20)).map(|_| rand::random::<u8>()).collect();
    std::fs::write(src.join("gone.bin"), gone).unwrap();
    let first = ok(w, &url, &["backup", src.to_str().unwrap()]);
    std::fs::remove_file(src.join("gone.bin")).unwrap();
    std::fs::write(src.join("a/new.bin"), vec![7u8; 3 << 20]).unwrap();
    let second = ok(w, &url, &["backup", src.to_str().unwrap()]);
    let keep = second["snapshot_id"].as_str().unwrap().to_string();
    let v = ok(w, &url, &["forget", "--confirm", "--keep-last", "1"]);
    assert!(
        v.to_string()
            .contains(first["snapshot_id"].as_str().unwrap()),
        "{v:#}"
    );

    // A host 13 minutes behind the store: prune refuses, deletes and writes nothing.
    let before = keys(&g, w);
    let r: Run = run(lb(
        w,
        &url,
        Some("-10m"),
        &["prune", "--confirm", "--grace", "0s"],
    ));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("prune refused")
            && r.stderr.contains("clock")
            && r.stderr.contains("behind")
            && r.stderr.contains("timedatectl"),
        "{r:?}"
    );
    assert_eq!(
        keys(&g, w),
        before,
        "the refused prune changed the repository"
    );

    // This host (3 minutes behind the store, inside the 5 allowed) prunes; stopped in
    // phase 2 with its exclusive lock, a 60 s lease.
    let mut c = lb(
        w,
        &url,
        None,
        &[
            "prune",
            "--confirm",
            "--grace",
            "0s",
            "--max-unused",
            "0%",
            "--json",
        ],
    );
    c.env(lifeboat::repo::lock::LEASE_ENV, "60")
        .env("LIFEBOAT_FAILPOINT", "prune-before-delete:1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut pruner = c.spawn().unwrap();
    wait_stopped(&mut pruner);
    // Another host, its clock right by the store's, asks to remove stale locks.
    let r = run(lb(w, &url, Some("+3m"), &["unlock", "--json"]));
    assert_eq!(r.code, 0, "{r:?}");
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    let region = &v["regions"][0];
    assert_eq!(
        region["removed"].as_array().unwrap().len(),
        0,
        "a live prune's lock was taken for stale: {v:#}"
    );
    let kept = region["kept"].as_array().unwrap();
    assert!(
        kept.len() == 1
            && kept[0]
                .as_str()
                .unwrap()
                .contains("exclusive lock for prune"),
        "{v:#}"
    );
    // The prune goes on with its lock and finishes.
    unsafe { libc::kill(pruner.id() as i32, libc::SIGCONT) };
    let o = pruner.wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        v["regions"][0]["sweep"]["deleted_packs"].as_u64().unwrap() > 0,
        "{v:#}"
    );
    // INV-1, INV-2.
    let v = ok(w, &url, &["verify", "--read-data"]);
    assert_eq!(v["errors"], 0, "{v:#}");
    let target = w.join("restored");
    ok(
        w,
        &url,
        &["restore", &keep, "--target", target.to_str().unwrap()],
    );
    let diffs =
        lifeboat::restore::compare_dirs(&src, &target.join(src.file_name().unwrap())).unwrap();
    assert!(diffs.is_empty(), "{diffs:#?}");
}
