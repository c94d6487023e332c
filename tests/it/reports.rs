//! DR report files (issue 15): every drill writes a signed, chained `dr-report.json` into the
//! state directory and every destination; `report verify` names the first broken link of an
//! edited, removed, swapped or re-signed report; the period report (JSON and Markdown
//! snapshot-tested with times and ids redacted) survives the loss of the server (state
//! directory and catalog wiped, `catalog rebuild` from one region); the HTML renders in
//! headless Chromium with its charts; `report incident` drafts a post-mortem.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::support::*;

use serde_json::Value;

/// A plan `web` with one directory job and two local destinations (`local` = repo1,
/// `local:repo2` = repo2), its own state directory, initialised and backed up once.
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new(extra_tests: &str) -> Site {
        let dir = tempfile::Builder::new()
            .prefix("lifeboat-reports-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("site/conf")).unwrap();
        std::fs::write(d.join("site/conf/app.ini"), "port = 8080\n").unwrap();
        std::fs::write(d.join("site/index.html"), "<h1>hello</h1>\n").unwrap();
        std::fs::write(d.join("repo.pass"), "correct horse battery staple\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d.join("repo.pass"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        let hash = blake3::hash(b"port = 8080\n").to_hex().to_string();
        std::fs::write(
            d.join("tests.toml"),
            format!("[[file]]\npath = \"site/conf/app.ini\"\nblake3 = \"{hash}\"\n{extra_tests}"),
        )
        .unwrap();
        std::fs::write(
            d.join("web.toml"),
            format!(
                "name = \"web\"\ndescription = \"the shop's web site\"\n[repository]\npassword_file = \"repo.pass\"\n[objectives]\nrpo = \"1day\"\nrto = \"30m\"\n[[destinations]]\ntype = \"local\"\npath = \"repo1\"\n[[destinations]]\ntype = \"local\"\npath = \"repo2\"\n\n[[jobs]]\nname = \"site\"\nschedule = \"0 0 1 1 *\"\n[jobs.source]\ntype = \"dir\"\npaths = [\"{}\"]\n\n[drill]\nenvironment = \"temp-dir\"\nrestore_tests = [\"tests.toml\"]\n",
                d.join("site").display()
            ),
        )
        .unwrap();
        let s = Site { dir };
        s.ok(&[
            "init",
            "--plan",
            "web.toml",
            "--kdf-memory",
            "8",
            "--kdf-iterations",
            "1",
        ]);
        s.ok(&["backup", "--plan", "web.toml"]);
        s
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn state(&self) -> PathBuf {
        self.path().join("state")
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut c = lifeboat();
        c.current_dir(self.path())
            .env("LIFEBOAT_STATE_DIR", self.state())
            .env_remove("LIFEBOAT_REPO")
            .env_remove("LIFEBOAT_CATALOG")
            .env_remove("LIFEBOAT_TRIGGER")
            .env_remove("INVOCATION_ID")
            .args(args);
        run(&mut c)
    }

    fn expect(&self, args: &[&str], code: i32) -> Output {
        let o = self.run(args);
        assert_eq!(
            o.status.code(),
            Some(code),
            "lifeboat {args:?}\nstdout:\n{}\nstderr:\n{}",
            stdout(&o),
            stderr(&o)
        );
        o
    }

    fn ok(&self, args: &[&str]) -> String {
        stdout(&self.expect(args, 0))
    }

    /// The local report files of plan `web`, in chain order.
    fn local_reports(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.state().join("reports/web"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    }

    fn objects(&self, repo: &str) -> Vec<PathBuf> {
        std::fs::read_dir(self.path().join(repo).join("reports"))
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default()
    }
}

fn json_of(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

#[test]
fn every_drill_writes_a_signed_chained_report_locally_and_in_every_region() {
    let s = Site::new("");
    s.ok(&["drill", "--plan", "web.toml"]);
    s.ok(&["drill", "--plan", "web.toml", "--region", "local:repo2"]);
    let files = s.local_reports();
    assert_eq!(files.len(), 2, "{files:?}");
    let (a, b) = (json_of(&files[0]), json_of(&files[1]));
    assert_eq!(a["schema"], "lifeboat.dr-report/1");
    assert_eq!(
        (a["chain"]["seq"].as_u64(), b["chain"]["seq"].as_u64()),
        (Some(1), Some(2))
    );
    assert!(a["chain"]["prev"].is_null());
    assert_eq!(
        b["chain"]["prev"].as_str().unwrap(),
        lifeboat::report::chain::hash_value(&a)
    );
    assert_eq!(
        (a["region"].as_str(), b["region"].as_str()),
        (Some("local"), Some("local:repo2"))
    );
    assert_eq!(a["trigger"], "operator");
    assert_eq!(a["verdict"], "passed");
    assert_eq!(a["snapshot"]["size_bytes"], 27);
    assert_eq!(a["snapshot"]["source_kind"], "dir");
    assert!(a["snapshot"]["content_hash"].as_str().unwrap().len() == 64);
    let phases: Vec<&str> = a["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
    assert_eq!(phases, ["provision", "fetch", "checks", "teardown"]);
    assert_eq!(a["checks"][0]["status"], "passed");
    assert_eq!(a["rto"]["target_secs"], 1800.0);
    assert_eq!(a["rpo"]["target_secs"], 86400.0);
    // Both reports are stored (sealed) in both regions, not readable without the key.
    for repo in ["repo1", "repo2"] {
        let objs = s.objects(repo);
        assert_eq!(objs.len(), 2, "{repo}: {objs:?}");
        let raw = std::fs::read(&objs[0]).unwrap();
        assert!(!String::from_utf8_lossy(&raw).contains("report_id"));
    }
    // The key an auditor gets, and the verification with it: files, then every region.
    let key = s
        .ok(&["report", "pubkey", "--plan", "web.toml"])
        .trim()
        .to_string();
    assert_eq!(a["signature"]["public_key"].as_str(), Some(key.as_str()));
    let out = s.ok(&["report", "verify", "--pubkey", &key]);
    assert!(out.contains("plan web: 2 reports, chain intact"), "{out}");
    let out = s.ok(&["report", "verify", "--plan", "web.toml"]);
    assert!(
        out.contains("web @ local: 2 reports, chain intact"),
        "{out}"
    );
    assert!(
        out.contains("web @ local:repo2: 2 reports, chain intact"),
        "{out}"
    );
    let out = s.ok(&[
        "report",
        "verify",
        "--repo",
        "repo1",
        "--password-file",
        "repo.pass",
    ]);
    assert!(
        out.contains("web @ local:repo1: 2 reports, chain intact"),
        "{out}"
    );
    // A region that was down when a drill ran gets the report it lacks from the next drill.
    std::fs::rename(s.path().join("repo2"), s.path().join("repo2.away")).unwrap();
    let o = s.expect(&["drill", "--plan", "web.toml"], 0);
    assert!(stderr(&o).contains("region local:repo2"), "{}", stderr(&o));
    std::fs::rename(s.path().join("repo2.away"), s.path().join("repo2")).unwrap();
    assert_eq!(s.objects("repo2").len(), 2);
    s.ok(&["drill", "--plan", "web.toml"]);
    assert_eq!(s.objects("repo1").len(), 4);
    assert_eq!(s.objects("repo2").len(), 4);
    let out = s.ok(&["report", "verify", "--plan", "web.toml"]);
    assert!(
        out.contains("web @ local:repo2: 4 reports, chain intact"),
        "{out}"
    );
    // The third drill continued the chain from the repository.
    let files = s.local_reports();
    assert_eq!(files.len(), 4);
    let c = json_of(&files[2]);
    assert_eq!(c["chain"]["seq"], 3);
    assert_eq!(
        c["chain"]["prev"].as_str().unwrap(),
        lifeboat::report::chain::hash_value(&b)
    );
}

/// A report directory of four drills, copied out for tampering.
fn four_reports() -> (Site, PathBuf, String) {
    let s = Site::new("");
    for _ in 0..4 {
        s.ok(&["drill", "--plan", "web.toml"]);
    }
    let key = s
        .ok(&["report", "pubkey", "--plan", "web.toml"])
        .trim()
        .to_string();
    let copy = s.path().join("audit");
    std::fs::create_dir_all(&copy).unwrap();
    for f in s.local_reports() {
        std::fs::copy(&f, copy.join(f.file_name().unwrap())).unwrap();
    }
    let out = s.ok(&["report", "verify", copy.to_str().unwrap(), "--pubkey", &key]);
    assert!(out.contains("4 reports, chain intact"), "{out}");
    (s, copy, key)
}

fn sorted(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

fn verify_fails(s: &Site, dir: &Path, key: &str) -> Value {
    let o = s.expect(
        &[
            "report",
            "verify",
            dir.to_str().unwrap(),
            "--pubkey",
            key,
            "--json",
        ],
        13,
    );
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let broken: Vec<&Value> = v["chains"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| !c["first_broken"].is_null())
        .collect();
    assert_eq!(broken.len(), 1, "{v:#}");
    broken[0]["first_broken"].clone()
}

#[test]
fn verify_names_a_report_edited_by_one_byte() {
    let (s, dir, key) = four_reports();
    let f = &sorted(&dir)[2];
    let text = std::fs::read_to_string(f).unwrap();
    // One byte: the restored size 27 becomes 28.
    let edited = text.replacen("\"size_bytes\": 27", "\"size_bytes\": 28", 1);
    assert_ne!(text, edited);
    assert_eq!(text.len(), edited.len());
    std::fs::write(f, edited).unwrap();
    let b = verify_fails(&s, &dir, &key);
    assert_eq!(b["kind"], "edited", "{b:#}");
    assert_eq!(b["seq"], 3);
    assert_eq!(b["source"].as_str(), Some(f.to_str().unwrap()));
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .contains("edited after it was signed"),
        "{b:#}"
    );
}

#[test]
fn verify_names_a_report_removed_from_the_middle() {
    let (s, dir, key) = four_reports();
    std::fs::remove_file(&sorted(&dir)[1]).unwrap();
    let b = verify_fails(&s, &dir, &key);
    assert_eq!(b["kind"], "removed", "{b:#}");
    assert_eq!(b["seq"], 3);
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .contains("report seq 2 between them is missing"),
        "{b:#}"
    );
}

#[test]
fn verify_names_two_reports_swapped() {
    let (s, dir, key) = four_reports();
    let f = sorted(&dir);
    let (two, three) = (std::fs::read(&f[1]).unwrap(), std::fs::read(&f[2]).unwrap());
    std::fs::write(&f[1], three).unwrap();
    std::fs::write(&f[2], two).unwrap();
    let b = verify_fails(&s, &dir, &key);
    assert_eq!(b["kind"], "reordered", "{b:#}");
    assert_eq!(b["source"].as_str(), Some(f[1].to_str().unwrap()));
    assert!(b["message"].as_str().unwrap().contains("swapped"), "{b:#}");
}

#[test]
fn verify_names_a_report_re_signed_with_another_key() {
    let (s, dir, key) = four_reports();
    let f = &sorted(&dir)[3];
    let mut ev: lifeboat::report::schema::DrillEvidence =
        serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap();
    ev.verdict = "passed".into();
    ev.rto.measured_secs = 1.0;
    let other = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    lifeboat::report::chain::sign(&mut ev, &other);
    std::fs::write(f, lifeboat::report::chain::to_file_bytes(&ev)).unwrap();
    let b = verify_fails(&s, &dir, &key);
    assert_eq!(b["kind"], "other_key", "{b:#}");
    assert_eq!(b["seq"], 4);
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .contains("signed by another key"),
        "{b:#}"
    );
    // Without --pubkey the chain's first report's key is trusted: still caught.
    let o = s.expect(&["report", "verify", dir.to_str().unwrap()], 13);
    assert!(
        stderr(&o).contains("signed by another key"),
        "{}",
        stderr(&o)
    );
    // And a sealed copy in a region that was tampered with is named too.
    let obj = &s.objects("repo2")[0];
    let mut raw = std::fs::read(obj).unwrap();
    let n = raw.len() / 2;
    raw[n] ^= 1;
    std::fs::write(obj, raw).unwrap();
    let o = s.expect(&["report", "verify", "--plan", "web.toml"], 13);
    assert!(
        stderr(&o).contains(obj.file_name().unwrap().to_str().unwrap()),
        "{}",
        stderr(&o)
    );
}

/// Times, ids, hashes, keys and measured durations replaced, so the structure and the
/// values that do not change between runs are compared.
fn redact(v: &mut Value) {
    const KEYS: [&str; 24] = [
        "generated",
        "since",
        "until",
        "started",
        "time",
        "date",
        "last",
        "newest_snapshot",
        "last_drill",
        "report_id",
        "snapshot_id",
        "snapshot_content_hash",
        "report_hash",
        "signed_by",
        "public_key",
        "head",
        "source",
        "rto_secs",
        "rpo_secs",
        "worst_secs",
        "median_secs",
        "rpo_now_secs",
        "worst_rpo_secs",
        "age_secs",
    ];
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if k == "read_verified" {
                    // Pack sizes: tree blobs hold times, so their compressed size varies.
                    for b in ["bytes", "bytes_verified"] {
                        x[b] = Value::String("<redacted>".into());
                    }
                    redact(x);
                } else if KEYS.contains(&k.as_str()) && !x.is_null() {
                    *x = Value::String("<redacted>".into());
                } else if k == "phases" && x.is_object() {
                    for y in x.as_object_mut().unwrap().values_mut() {
                        *y = Value::String("<redacted>".into());
                    }
                } else {
                    redact(x);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(redact),
        // Report ids (`20261204T215923Z-199173`) wherever they are listed.
        Value::String(s)
            if s.len() > 17
                && s.as_bytes()[8] == b'T'
                && s[..8].bytes().all(|b| b.is_ascii_digit()) =>
        {
            *v = Value::String("<redacted>".into())
        }
        _ => {}
    }
}

/// Markdown with dates, times, durations, hex ids and report ids replaced.
fn redact_md(s: &str) -> String {
    let mut out = String::new();
    for line in s.lines() {
        let mut l = String::new();
        let words: Vec<&str> = line.split(' ').collect();
        let mut skip_unit = false;
        for (i, word) in words.iter().enumerate() {
            if skip_unit {
                skip_unit = false;
                continue;
            }
            // A pack size in the read-verified cell: "1.2 KiB", "(312 B" (pack sizes vary
            // a little between runs).
            let n = word.trim_start_matches('(');
            if line.contains(" packs, ")
                && !n.is_empty()
                && n.chars().all(|c| c.is_ascii_digit() || c == '.')
                && words.get(i + 1).is_some_and(|u| {
                    ["B", "KiB", "MiB", "GiB", "TiB"]
                        .contains(&u.trim_end_matches(|c: char| c.is_ascii_punctuation()))
                })
            {
                if !l.is_empty() {
                    l.push(' ');
                }
                let unit = words[i + 1];
                let tail = &unit[unit
                    .find(|c: char| c.is_ascii_punctuation())
                    .unwrap_or(unit.len())..];
                l.push_str(&word.replace(n, "<n>"));
                l.push_str(" <unit>");
                l.push_str(tail);
                skip_unit = true;
                continue;
            }
            // A measured duration: "15 ms", "1.2 s".
            let number = !word.is_empty() && word.chars().all(|c| c.is_ascii_digit() || c == '.');
            if number
                && words
                    .get(i + 1)
                    .is_some_and(|u| ["ns", "µs", "ms", "s", "m", "min", "h"].contains(u))
            {
                if !l.is_empty() {
                    l.push(' ');
                }
                l.push_str("<t>");
                skip_unit = true;
                continue;
            }
            let w = word.trim_matches(|c| c == '`' || c == '|' || c == '*');
            let hexish = w.len() >= 12
                && w.chars()
                    .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '-' || c == 'T' || c == 'Z')
                && w.chars().any(|c| c.is_ascii_digit());
            let timeish = w.len() >= 5
                && w.chars().filter(|c| c.is_ascii_digit()).count() >= 2
                && w.chars().all(|c| c.is_ascii_digit() || ":-.".contains(c));
            let dur = w.len() <= 9
                && w.chars().next().is_some_and(|c| c.is_ascii_digit())
                && ["ms", "s", "m", "h", "min", "µs"]
                    .iter()
                    .any(|u| w.ends_with(u))
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == 'µ');
            let reportish = w.len() >= 20 && w.contains('T') && w.contains('Z') && w.contains('-');
            if !l.is_empty() {
                l.push(' ');
            }
            if w.is_empty() {
                l.push_str(word);
            } else if hexish || reportish || w.starts_with("blake3:") {
                l.push_str(&word.replace(w, "<id>"));
            } else if timeish || dur {
                l.push_str(&word.replace(w, "<t>"));
            } else {
                l.push_str(word);
            }
        }
        out.push_str(&l);
        out.push('\n');
    }
    out
}

fn snapshot_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/snapshots")
        .join(name)
}

/// Compares with the stored snapshot; `UPDATE_SNAPSHOTS=1` writes it instead.
fn assert_snapshot(name: &str, actual: &str) {
    let f = snapshot_file(name);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() || !f.exists() {
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(&f, actual).unwrap();
        if std::env::var_os("UPDATE_SNAPSHOTS").is_none() {
            panic!("snapshot {name} did not exist and was written; check it and run again");
        }
        return;
    }
    let expected = std::fs::read_to_string(&f).unwrap();
    if expected != actual {
        let new = f.with_extension("new");
        std::fs::write(&new, actual).unwrap();
        panic!(
            "snapshot {name} differs; the new output is in {}",
            new.display()
        );
    }
}

fn period_report(s: &Site, out: &str, code: i32) -> (Value, String) {
    s.expect(
        &[
            "report", "--plan", "web.toml", "--since", "30d", "--out", out,
        ],
        code,
    );
    let dir = s.path().join(out);
    (
        json_of(&dir.join("dr-report.json")),
        std::fs::read_to_string(dir.join("dr-report.md")).unwrap(),
    )
}

#[test]
fn period_report_snapshots_and_the_same_report_after_the_server_is_lost() {
    let s = Site::new("");
    s.ok(&["drill", "--plan", "web.toml"]);
    s.ok(&["drill", "--plan", "web.toml", "--region", "local:repo2"]);
    s.ok(&["drill", "--plan", "web.toml"]);
    // Region local is read-verified in full; local:repo2 never: the period report shows
    // each region's share from the records verify stored in the region itself.
    s.ok(&[
        "verify",
        "--plan",
        "web.toml",
        "--region",
        "local",
        "--read-data",
    ]);
    assert_eq!(
        std::fs::read_dir(s.path().join("repo1/verified"))
            .unwrap()
            .count(),
        1
    );
    assert!(!s.path().join("repo2/verified").exists());
    let (mut json, md) = period_report(&s, "before", 0);
    assert_eq!(json["schema"], "lifeboat.period-report/1");
    assert_eq!(json["fleet"]["drills"], 3);
    assert_eq!(json["fleet"]["regions_drilled"], 2);
    assert_eq!(json["plans"][0]["evidence"].as_array().unwrap().len(), 3);
    let regions = json["plans"][0]["regions"].as_array().unwrap().clone();
    let region = |name: &str| {
        regions
            .iter()
            .find(|r| r["region"] == name)
            .unwrap()
            .clone()
    };
    let (r1, r2) = (region("local"), region("local:repo2"));
    assert_eq!(r1["read_verified"]["verifications"], 1, "{r1:#}");
    assert_eq!(r1["read_verified"]["share"], 1.0, "{r1:#}");
    assert!(r1["read_verified"]["packs_verified"].as_u64().unwrap() > 0);
    assert_eq!(
        r1["read_verified"]["bytes_verified"],
        r1["read_verified"]["bytes"]
    );
    assert_eq!(r2["read_verified"]["verifications"], 0, "{r2:#}");
    assert_eq!(r2["read_verified"]["share"], 0.0, "{r2:#}");
    assert!(md.contains("| 100.0 % ("), "{md}");
    let history_before = s.ok(&["history", "--json"]);
    redact(&mut json);
    let json_text = serde_json::to_string_pretty(&json).unwrap();
    let md_red = redact_md(&md);
    assert_snapshot("period-report.json", &json_text);
    assert_snapshot("period-report.md", &md_red);

    // The server is lost: its state directory (local reports) and catalog are gone.
    std::fs::remove_dir_all(s.state()).unwrap();
    let h = s.ok(&["history", "--json"]);
    assert!(!h.contains("\"kind\": \"drill\""), "{h}");
    let out = s.ok(&[
        "catalog",
        "rebuild",
        "--plan",
        "web.toml",
        "--region",
        "local:repo2",
        "--json",
    ]);
    assert!(out.contains("\"drills_restored\": 3"), "{out}");
    let history_after = s.ok(&["history", "--json"]);
    // The drill history is back as it was (each drill's row, from its signed report).
    let drills = |h: &str| -> Vec<Value> {
        let v: Value = serde_json::from_str(h).unwrap();
        let mut d: Vec<Value> = v
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "drill")
            .cloned()
            .collect();
        d.sort_by_key(|e| e["id"].as_str().unwrap().to_string());
        d
    };
    assert_eq!(drills(&history_before).len(), 3);
    assert_eq!(drills(&history_after), drills(&history_before));
    let (mut json2, md2) = period_report(&s, "after", 0);
    redact(&mut json2);
    assert_eq!(serde_json::to_string_pretty(&json2).unwrap(), json_text);
    assert_eq!(redact_md(&md2), md_red);
}

#[test]
fn incident_drafts_a_post_mortem_of_a_failed_drill() {
    // A restore test that expects a file the backup does not have: the drill fails (16).
    let s = Site::new("[[file]]\npath = \"site/missing.txt\"\n");
    let o = s.expect(&["drill", "--plan", "web.toml"], 16);
    let _ = o;
    let f = &s.local_reports()[0];
    let ev = json_of(f);
    assert_eq!(ev["verdict"], "check_failed");
    let id = ev["report_id"].as_str().unwrap();
    let md = s.ok(&["report", "incident", id]);
    for want in [
        "# Post-mortem (draft): drill",
        "## Summary",
        "ended **check_failed**: restore tests failed",
        "## Impact",
        "could not be shown to restore from region local",
        "## Timeline (UTC)",
        "phase fetch",
        "## Checks",
        "**failed**",
        "## Root cause",
        "## Lessons",
        "## Action items",
    ] {
        assert!(md.contains(want), "missing {want:?} in:\n{md}");
    }
    // A failed backup run leaves no report: its catalog row is the evidence.
    let gone = std::fs::read_to_string(s.path().join("web.toml"))
        .unwrap()
        .replace("/site\"", "/gone\"");
    std::fs::write(s.path().join("gone.toml"), gone).unwrap();
    s.expect(&["backup", "--plan", "gone.toml"], 2);
    let h: Value = serde_json::from_str(&s.ok(&["history", "--json"])).unwrap();
    let failed = h
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "backup" && e["outcome"] == "failed")
        .unwrap();
    let run = &failed["id"].as_str().unwrap()[..10];
    let md = s.ok(&["report", "incident", run, "--plan", "gone.toml"]);
    for want in [
        "# Post-mortem (draft): backup run",
        "ended **failed**: ",
        "does not exist",
        "No snapshot was committed",
        "RPO objective (1day)",
        "## Root cause",
    ] {
        assert!(md.contains(want), "missing {want:?} in:\n{md}");
    }
    let o = s.expect(&["report", "incident", "nope"], 2);
    assert!(stderr(&o).contains("lifeboat history"), "{}", stderr(&o));
    // The period report lists the miss with its cause.
    let (json, _) = period_report(&s, "out", 17);
    let miss = &json["plans"][0]["misses"][0];
    assert_eq!(miss["kind"], "drill");
    assert!(
        miss["cause"]
            .as_str()
            .unwrap()
            .contains("restore tests failed"),
        "{miss}"
    );
}

/// 90 days of synthetic history: a drill a day from each of two regions, RTO growing 12 s a
/// day from 700 s (target 30 min: crossed around day 92) with noise, a slow outlier every
/// ninth day and one failed drill; a snapshot a day per region, growing.
fn synthetic(
    plan: lifeboat::plan::Plan,
    now: chrono::DateTime<chrono::Utc>,
) -> lifeboat::report::period::PlanInput {
    use lifeboat::report::period::{PlanInput, RegionSnapshots};
    use lifeboat::report::schema::*;
    let start = now - chrono::Duration::days(90);
    let key = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
    let mut drills = Vec::new();
    let mut regions = Vec::new();
    let mut prev: Option<String> = None;
    let mut seq = 0;
    for (ri, region) in ["local", "local:repo2"].into_iter().enumerate() {
        let mut snaps = Vec::new();
        for d in 0..90i64 {
            let t = start + chrono::Duration::days(d) + chrono::Duration::minutes(20 + ri as i64);
            let size = (2u64 << 30) + (d as u64) * (40 << 20);
            // Two more snapshots a day (every 8 hours), except for two days in May when
            // region local:repo2's backups failed, and one backup that failed everywhere.
            for h in [8, 16] {
                let extra = t + chrono::Duration::hours(h);
                if (ri == 1 && (44..=45).contains(&d)) || (h == 8 && d == 60) {
                    continue;
                }
                snaps.push((
                    format!("{:060x}{h:04}", d * 2 + ri as i64),
                    lifeboat::repo::snapshot::Snapshot {
                        time: extra,
                        consistency_time: extra,
                        host: "db1".into(),
                        username: "backup".into(),
                        tags: vec![],
                        paths: vec!["/srv".into()],
                        tree: lifeboat::ids::BlobId([1; 32]),
                        parent: None,
                        source: lifeboat::repo::snapshot::SourceMeta::Dir,
                        plan: Some("web".into()),
                        job: Some("site".into()),
                        summary: lifeboat::repo::snapshot::Summary {
                            bytes_processed: size,
                            ..Default::default()
                        },
                        program_version: "0.1.0".into(),
                        set: None,
                    },
                ));
            }
            if !(ri == 1 && (44..=45).contains(&d)) {
                snaps.push((
                    format!("{:064x}", d * 2 + ri as i64),
                    lifeboat::repo::snapshot::Snapshot {
                        time: t,
                        consistency_time: t,
                        host: "db1".into(),
                        username: "backup".into(),
                        tags: vec![],
                        paths: vec!["/srv".into()],
                        tree: lifeboat::ids::BlobId([1; 32]),
                        parent: None,
                        source: lifeboat::repo::snapshot::SourceMeta::Dir,
                        plan: Some("web".into()),
                        job: Some("site".into()),
                        summary: lifeboat::repo::snapshot::Summary {
                            bytes_processed: size,
                            ..Default::default()
                        },
                        program_version: "0.1.0".into(),
                        set: None,
                    },
                ));
            }
            let noise = ((d * 7919 + ri as i64 * 31) % 61) as f64 - 30.0;
            let mut rto = 700.0 + 12.0 * d as f64 + noise + ri as f64 * 40.0;
            if d % 9 == 4 {
                rto *= 2.5;
            }
            let started = t + chrono::Duration::hours(15);
            let failed = ri == 1 && d == 40;
            seq += 1;
            let minor = if d < 45 { "15.19" } else { "15.20" };
            let mut ev = DrillEvidence {
                schema: SCHEMA.into(),
                report_id: format!("{}-{ri}", started.format("%Y%m%dT%H%M%SZ")),
                plan: "web".into(),
                job: "site".into(),
                region: region.into(),
                repository_id: "00".repeat(32),
                host: "drill1".into(),
                trigger: "timer".into(),
                environment: "directory".into(),
                snapshot: SnapshotEvidence {
                    id: format!("{:064x}", d * 2 + ri as i64),
                    time: t,
                    consistency_time: t,
                    content_hash: "11".repeat(32),
                    size_bytes: size,
                    source_kind: "postgres".into(),
                    // A minor upgrade of the source on day 45.
                    server_version: Some(format!("{minor} (Debian {minor}-0+deb12u1)")),
                    dump_tools: [(
                        "pg_dump".to_string(),
                        format!("pg_dump (PostgreSQL) {minor} (Debian {minor}-0+deb12u1)"),
                    )]
                    .into(),
                },
                tool_versions: Default::default(),
                restore_tools: [(
                    "pg_restore".to_string(),
                    "pg_restore (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)".to_string(),
                )]
                .into(),
                restore_server_version: Some("15.20 (Debian 15.20-0+deb12u1)".into()),
                started,
                finished: started + chrono::Duration::seconds(rto as i64 + 5),
                phases: vec![
                    PhaseEvidence {
                        phase: "provision".into(),
                        started,
                        secs: 5.0,
                    },
                    PhaseEvidence {
                        phase: "fetch".into(),
                        started,
                        secs: rto * 0.7,
                    },
                    PhaseEvidence {
                        phase: "checks".into(),
                        started,
                        secs: rto * 0.3 - 5.0,
                    },
                ],
                checks: vec![CheckEvidence {
                    name: "file site/conf/app.ini".into(),
                    kind: "file".into(),
                    status: if failed {
                        "failed".into()
                    } else {
                        "passed".into()
                    },
                    detail: if failed {
                        "blake3 mismatch".into()
                    } else {
                        "ok".into()
                    },
                    secs: 0.1,
                }],
                rto: ObjectiveEvidence {
                    measured_secs: rto,
                    target_secs: Some(1800.0),
                    met: rto <= 1800.0,
                },
                rpo: ObjectiveEvidence {
                    measured_secs: 3.0 * 3600.0,
                    target_secs: Some(86400.0),
                    met: true,
                },
                verdict: if failed {
                    "check_failed".into()
                } else if rto > 1800.0 {
                    "objective_missed".into()
                } else {
                    "passed".into()
                },
                failure: None,
                error: None,
                chain: ChainLink {
                    seq,
                    prev: prev.clone(),
                },
                signature: None,
            };
            lifeboat::report::chain::sign(&mut ev, &key);
            prev = Some(lifeboat::report::chain::hash(&ev));
            drills.push(ev);
        }
        // 40 packs of 64 MiB; weekly `verify --read-data-subset` runs read 5 of them
        // (region local: every week; local:repo2: only the first six weeks).
        let pack = |n: u64| lifeboat::ids::PackId::from_bytes([n as u8 + 1; 32]);
        let packs: std::collections::HashMap<_, u64> =
            (0..40).map(|n| (pack(n), 64 << 20)).collect();
        let read_verifications = (0..13u64)
            .filter(|w| ri == 0 || *w < 6)
            .map(|w| {
                let t = start + chrono::Duration::days(w as i64 * 7 + 3);
                lifeboat::report::verified::ReadVerification {
                    schema: lifeboat::report::verified::SCHEMA.into(),
                    repository_id: "00".repeat(32),
                    region: region.into(),
                    host: "drill1".into(),
                    mode: "subset 12.5%".into(),
                    started: t,
                    finished: t + chrono::Duration::minutes(4),
                    packs_total: 40,
                    packs: (0..5)
                        .map(|i| lifeboat::report::verified::PackRead {
                            pack: pack((w * 5 + i) % 40).to_hex(),
                            bytes: 64 << 20,
                            ok: true,
                        })
                        .collect(),
                    signature: None,
                }
            })
            .collect();
        regions.push(RegionSnapshots {
            region: region.into(),
            snapshots: snaps,
            read_verifications,
            packs,
        });
    }
    drills.sort_by_key(|d| d.started);
    PlanInput {
        plan,
        drills,
        regions,
        chains: vec![],
        unreadable_regions: vec![],
        public_key: Some(hex::encode(key.verifying_key().to_bytes())),
        repository_created: Some(start),
    }
}

fn chromium(args: &[&str]) -> Output {
    let mut c = std::process::Command::new("chromium");
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--enable-logging=stderr",
        "--v=0",
    ])
    .args(args);
    c.output()
        .expect("chromium is installed (scripts/test installs it)")
}

/// Dark pixels in a binary PGM (`pdftoppm -gray`).
fn dark_pixels(pgm: &[u8]) -> usize {
    // P5\n<w> <h>\n255\n<bytes>
    let mut fields = 0;
    let mut i = 0;
    while fields < 4 {
        while pgm[i].is_ascii_whitespace() {
            i += 1;
        }
        while !pgm[i].is_ascii_whitespace() {
            i += 1;
        }
        fields += 1;
    }
    pgm[i + 1..].iter().filter(|&&b| b < 160).count()
}

#[test]
fn html_report_renders_in_chromium_with_its_charts_and_prints_to_pdf() {
    let s = Site::new("");
    // Backups every 8 hours, a drill a day.
    let file = s.path().join("web.toml");
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("schedule = \"0 0 1 1 *\"", "schedule = \"0 */8 * * *\"")
        .replace("[drill]\n", "[drill]\nschedule = \"0 15 * * *\"\n")
        .replace(
            "rto = \"30m\"\n",
            "rto = \"30m\"\nbackups_on_time = \"99%\"\ndrill_every = \"7d\"\n",
        );
    std::fs::write(&file, text).unwrap();
    let plan = lifeboat::plan::load(&file).unwrap();
    let now: chrono::DateTime<chrono::Utc> = "2026-06-30T12:00:00Z".parse().unwrap();
    let input = synthetic(plan, now);
    let report = lifeboat::report::period::build(&[input], now - chrono::Duration::days(90), now);
    // The trend sees the growth and flags the projected breach.
    let t = report.plans[0].trends[0].rto_over_time.clone().unwrap();
    assert!((t.secs_per_day - 12.0).abs() < 1.5, "{t:?}");
    assert!(t.warn, "{t:?}");
    // Against restored size: 12 s per 40 MiB is 307 s/GiB, of which fetch is 70 %.
    let tr = &report.plans[0].trends[0];
    let per_gib = tr.rto_over_size.as_ref().unwrap().secs_per_gib;
    assert!((per_gib - 307.2).abs() < 20.0, "{per_gib}");
    let fetch = tr.phase_secs_per_gib["fetch"];
    assert!((fetch - 0.7 * 307.2).abs() < 15.0, "{fetch}");
    assert!(
        (tr.phase_secs_per_day["fetch"] - 0.7 * 12.0).abs() < 1.0,
        "{tr:?}"
    );
    // SLOs over the last 30 days: one backup slot of ~90 missed (99 % not met, the budget
    // overspent), every region drilled every week.
    let slos = &report.plans[0].slos;
    assert_eq!(slos.len(), 2, "{slos:#?}");
    let b = &slos[0];
    assert_eq!(b.slo, "backups_on_time");
    assert!((85..=95).contains(&b.total), "{b:?}");
    assert_eq!(b.good, b.total - 1, "{b:?}");
    assert!(!b.met);
    let burn = (1.0 - b.good as f64 / b.total as f64) / 0.01;
    assert!(
        (b.burn_rate.unwrap() - burn).abs() < 1e-9 && burn > 1.0,
        "{b:?}"
    );
    assert!((b.budget_left.unwrap() - (1.0 - burn)).abs() < 1e-9);
    let d = &slos[1];
    assert_eq!(
        (d.slo.as_str(), d.total, d.good, d.met),
        ("drill_every", 8, 8, true),
        "{d:?}"
    );
    // Read-data coverage: region local read 5 of its 40 packs every week (all 40 in the
    // period), local:repo2 only in the first six weeks (30 of 40).
    let cov: Vec<(u64, Option<f64>)> = report.plans[0]
        .regions
        .iter()
        .map(|r| (r.read_verified.packs_verified, r.read_verified.share))
        .collect();
    assert_eq!(cov, [(40, Some(1.0)), (30, Some(0.75))]);
    let out = s.path().join("html");
    lifeboat::ops::report::write_period(&report, &out).unwrap();
    let html_file = out.join("dr-report.html");
    let html = std::fs::read_to_string(&html_file).unwrap();
    assert!(!html.contains("<script"), "the report needs no script");
    assert!(
        !html.contains("src=\"http") && !html.contains("href=\"http"),
        "self-contained"
    );
    assert!(html.contains("@media print"));
    assert!(html.contains("100.0 % (40 of 40 packs, 2.50 GiB of 2.50 GiB), 13 runs"));
    assert!(html.contains("75.0 % (30 of 40 packs, "));
    // The versions, once per stretch: the source's minor upgrade on day 45 is a new row.
    for minor in ["15.19", "15.20"] {
        assert!(
            html.contains(&format!("dumped by pg_dump (PostgreSQL) {minor} (Debian")),
            "{minor}"
        );
    }
    assert_eq!(html.matches("loaded by pg_restore").count(), 2);
    for chart in ["chart-rto", "chart-rpo", "chart-sizes"] {
        let at = html
            .find(&format!("id=\"{chart}\""))
            .unwrap_or_else(|| panic!("{chart} missing"));
        let fig = &html[at..at + html[at..].find("</figure>").unwrap()];
        assert!(fig.contains("<svg"), "{chart}: no svg");
        assert!(fig.matches("<polyline").count() >= 1, "{chart}: no line");
        assert!(fig.matches("<circle").count() >= 20, "{chart}: no points");
    }

    let url = format!("file://{}", html_file.display());
    let png = out.join("dr-report.png");
    let o = chromium(&[
        &format!("--screenshot={}", png.display()),
        "--window-size=1200,2600",
        "--hide-scrollbars",
        &url,
    ]);
    assert!(o.status.success(), "chromium screenshot: {}", stderr(&o));
    let shot = std::fs::read(&png).expect("chromium wrote the screenshot");
    assert_eq!(&shot[1..4], b"PNG");
    assert!(
        shot.len() > 50_000,
        "screenshot of {} bytes looks empty",
        shot.len()
    );
    for err in ["Uncaught", "CONSOLE", "Refused to load"] {
        assert!(!stderr(&o).contains(err), "page error: {}", stderr(&o));
    }
    if let Some(dest) = std::env::var_os("LIFEBOAT_DOCS_PNG") {
        std::fs::copy(&png, dest).unwrap();
    }

    let pdf = out.join("dr-report.pdf");
    let o = chromium(&[
        &format!("--print-to-pdf={}", pdf.display()),
        "--no-pdf-header-footer",
        &url,
    ]);
    assert!(o.status.success(), "chromium print: {}", stderr(&o));
    let pages = run(std::process::Command::new("pdftoppm")
        .args(["-r", "30", "-gray"])
        .arg(&pdf)
        .arg(out.join("page")));
    assert!(pages.status.success(), "pdftoppm: {}", stderr(&pages));
    let mut pgms: Vec<PathBuf> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pgm"))
        .collect();
    pgms.sort();
    assert!(pgms.len() >= 2, "{} pages", pgms.len());
    for p in &pgms {
        let dark = dark_pixels(&std::fs::read(p).unwrap());
        assert!(dark > 200, "{} is blank ({dark} dark pixels)", p.display());
    }
    let text = run(std::process::Command::new("pdftotext").arg(&pdf).arg("-"));
    let text = stdout(&text);
    for want in [
        "Disaster-recovery report",
        "RTO (minutes)",
        "RPO (hours)",
        "size (MiB)",
        "A.8.13",
        "target",
        "of 40 packs",
        "Versions in the evidence",
        "15.19 (Debian",
    ] {
        assert!(
            text.contains(want),
            "the printed PDF lacks {want:?}:\n{text}"
        );
    }
}

/// `lifeboat demo` ends by writing the drill's signed report and the period report, and
/// says where they are.
#[test]
fn demo_ends_with_its_report() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let mut c = lifeboat();
    c.args(["demo", "--size", "2", "--json", "--dir"])
        .arg(&dir)
        .env("LIFEBOAT_STATE_DIR", tmp.path().join("state"));
    let o = run(&mut c);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let out = PathBuf::from(v["report"]["dir"].as_str().unwrap());
    assert_eq!(out, dir.join("report"));
    for f in ["dr-report.json", "dr-report.md", "dr-report.html"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let period = json_of(&out.join("dr-report.json"));
    assert_eq!(period["plans"][0]["plan"], "demo");
    assert_eq!(period["plans"][0]["compliance"]["drills_passed"], 1);
    assert_eq!(period["plans"][0]["regions"][0]["snapshots"], 2);
    let drill = PathBuf::from(v["report"]["drill_reports"][0].as_str().unwrap());
    assert_eq!(json_of(&drill)["verdict"], "passed");
    assert_eq!(
        std::fs::read_dir(dir.join("repo/reports")).unwrap().count(),
        1
    );
    let mut c = lifeboat();
    c.args(["report", "verify"]).arg(dir.join("reports"));
    let o = run(&mut c);
    assert!(o.status.success(), "{}", stderr(&o));
    // Human output says where the report is.
    let mut c = lifeboat();
    c.args(["demo", "--size", "2", "--dir"])
        .arg(&dir)
        .env("LIFEBOAT_STATE_DIR", tmp.path().join("state"));
    let o = run(&mut c);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains(&out.join("dr-report.html").display().to_string()));
}

/// The drill reports of plan `plan` in a workspace's state directory, in chain order.
fn state_reports(ws: &Workspace, plan: &str) -> Vec<Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(ws.path().join("state/reports").join(plan))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.iter().map(|f| json_of(f)).collect()
}

/// Issue 15 item 1: a database snapshot records the version of the tool that dumped it, a
/// drill the versions of the tools that loaded it and of the server it loaded into; the
/// drill report carries them all, and the period report's evidence shows them.
#[test]
fn database_drill_reports_carry_dump_restore_and_server_versions() {
    use lifeboat::drill::env::{Environment, EphemeralMariadb, EphemeralPostgres};
    let pg = EphemeralPostgres::start(None).expect("source postgres");
    let pc = pg.connection().unwrap().clone();
    psql(&pc, "postgres", "CREATE DATABASE shop");
    psql(
        &pc,
        "shop",
        "CREATE TABLE items (id int PRIMARY KEY); INSERT INTO items SELECT generate_series(1, 50)",
    );
    let my = EphemeralMariadb::start(false).expect("source mariadb");
    let mc = my.connection().unwrap().clone();
    mariadb(&mc, None, "CREATE DATABASE shop CHARACTER SET utf8mb4");
    mariadb(
        &mc,
        Some("shop"),
        "CREATE TABLE items (id INT PRIMARY KEY); INSERT INTO items SELECT seq FROM seq_1_to_50;",
    );
    let version_of = |tool: &Path| {
        let o = std::process::Command::new(tool)
            .arg("--version")
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .next()
            .unwrap()
            .trim()
            .to_string()
    };
    let pg_bin = pc.bin_dir.clone().unwrap();
    let ws = Workspace::new();
    let pg_plan = ws.plan(
        "pg",
        &format!(
            "[[jobs]]\nname = \"shop\"\nschedule = \"0 3 * * *\"\n[jobs.source]\ntype = \"postgres\"\nhost = \"{}\"\nport = {}\nuser = \"postgres\"\ndatabase = \"shop\"\nbin_dir = \"{}\"\n\n[drill]\nenvironment = \"ephemeral-postgres\"\n",
            pc.socket.as_deref().unwrap().display(),
            pc.port,
            pg_bin.display()
        ),
    );
    let my_plan = ws.plan(
        "my",
        &format!(
            "[[jobs]]\nname = \"shop\"\nschedule = \"0 3 * * *\"\n[jobs.source]\ntype = \"mariadb\"\nsocket = \"{}\"\nuser = \"root\"\ndatabase = \"shop\"\nno_defaults = true\n\n[drill]\nenvironment = \"ephemeral-mariadb\"\n",
            mc.socket.as_deref().unwrap().display()
        ),
    );
    let tmp = drill_tmp();
    for plan in [&pg_plan, &my_plan] {
        let o = run(lifeboat().args(["backup", "--plan"]).arg(plan));
        assert!(o.status.success(), "backup failed");
        let o = run(lifeboat()
            .args(["drill", "--plan"])
            .arg(plan)
            .env("TMPDIR", tmp.path())
            .env("LIFEBOAT_STATE_DIR", ws.path().join("state")));
        assert_eq!(o.status.code(), Some(0), "drill failed");
    }

    // PostgreSQL: pg_dump (and pg_dumpall: globals) at backup time, pg_restore and psql in
    // the drill, the drill server's own version.
    let snaps = ws.snapshots(&pg_plan);
    let meta = &snaps[0]["source_meta"];
    let pg_dump = version_of(&pg_bin.join("pg_dump"));
    assert!(pg_dump.starts_with("pg_dump (PostgreSQL) "), "{pg_dump}");
    assert_eq!(meta["dump_tools"]["pg_dump"], pg_dump.as_str(), "{meta:#}");
    let r = &state_reports(&ws, "pg")[0];
    assert_eq!(
        r["snapshot"]["dump_tools"]["pg_dump"],
        pg_dump.as_str(),
        "{r:#}"
    );
    assert_eq!(
        r["restore_tools"]["pg_restore"],
        version_of(&pg_bin.join("pg_restore")).as_str(),
        "{r:#}"
    );
    assert_eq!(
        r["restore_tools"]["psql"],
        version_of(&pg_bin.join("psql")).as_str(),
        "{r:#}"
    );
    let server = psql(&pc, "postgres", "SHOW server_version");
    assert_eq!(r["restore_server_version"], server.trim(), "{r:#}");
    assert!(lifeboat::report::chain::check_signature(r).is_ok());

    // MariaDB: mariadb-dump at backup time, the mariadb client in the drill, the server.
    let snaps = ws.snapshots(&my_plan);
    let dump = version_of(Path::new("mariadb-dump"));
    assert_eq!(
        snaps[0]["source_meta"]["dump_tools"]["mariadb-dump"],
        dump.as_str(),
        "{:#}",
        snaps[0]
    );
    let r = &state_reports(&ws, "my")[0];
    assert_eq!(
        r["snapshot"]["dump_tools"]["mariadb-dump"],
        dump.as_str(),
        "{r:#}"
    );
    assert_eq!(
        r["restore_tools"]["mariadb"],
        version_of(Path::new("mariadb")).as_str(),
        "{r:#}"
    );
    let server = mariadb(&mc, None, "SELECT VERSION()");
    assert_eq!(r["restore_server_version"], server.trim(), "{r:#}");

    // The period report's evidence shows them (JSON, Markdown, HTML).
    let out = ws.path().join("period");
    let o = run(lifeboat()
        .args(["report", "--plan"])
        .arg(&pg_plan)
        .arg("--out")
        .arg(&out)
        .env("LIFEBOAT_STATE_DIR", ws.path().join("state")));
    assert!(
        o.status.code().is_some_and(|c| c == 0 || c == 17),
        "report failed"
    );
    let json = json_of(&out.join("dr-report.json"));
    let ev = &json["plans"][0]["evidence"][0];
    assert_eq!(ev["dump_tools"]["pg_dump"], pg_dump.as_str(), "{ev:#}");
    assert_eq!(ev["restore_server_version"], server_pg(&pc).as_str());
    let md = std::fs::read_to_string(out.join("dr-report.md")).unwrap();
    assert!(md.contains(&format!("dumped by {pg_dump}")), "{md}");
    assert!(md.contains("loaded by pg_restore (PostgreSQL) "), "{md}");
    let html = std::fs::read_to_string(out.join("dr-report.html")).unwrap();
    assert!(
        html.contains(&format!("dumped by {pg_dump}")),
        "the HTML evidence lacks the versions"
    );
    drop(pg);
    drop(my);
}

fn server_pg(c: &lifeboat::drill::env::ConnectionInfo) -> String {
    psql(c, "postgres", "SHOW server_version")
        .trim()
        .to_string()
}

/// Issue 15 (noticed): a drill finds the chain's head without reading every stored report
/// again: what it read of each object is kept in the state directory, and only objects it
/// has not seen are read. Shown by a cache entry the next drill trusts instead of the object.
#[test]
fn a_drill_reads_only_report_objects_it_has_not_seen() {
    let s = Site::new("");
    s.ok(&["drill", "--plan", "web.toml"]);
    s.ok(&["drill", "--plan", "web.toml"]);
    let cache_file = s.state().join("reports/.report-objects.json");
    let mut cache = json_of(&cache_file);
    let regions = cache["regions"].as_object().unwrap();
    assert_eq!(regions.len(), 2, "{cache:#}");
    for objs in regions.values() {
        assert_eq!(objs.as_object().unwrap().len(), 2, "{cache:#}");
    }
    // Rewrite what the cache says of region local's newest object: the next drill takes it
    // as the head (it does not read the object again) — and the local copies, which it
    // reads only for the newest file, are moved away so they do not say otherwise.
    let files = s.local_reports();
    let newest = json_of(files.last().unwrap());
    let forged = "blake3:".to_string() + &"ab".repeat(32);
    for objs in cache["regions"].as_object_mut().unwrap().values_mut() {
        for m in objs.as_object_mut().unwrap().values_mut() {
            if m["report_id"] == newest["report_id"] {
                m["seq"] = 41.into();
                m["hash"] = forged.clone().into();
            }
        }
    }
    std::fs::write(&cache_file, serde_json::to_vec(&cache).unwrap()).unwrap();
    std::fs::rename(s.state().join("reports/web"), s.path().join("web-local")).unwrap();
    s.ok(&["drill", "--plan", "web.toml"]);
    let third = json_of(&s.local_reports()[0]);
    assert_eq!(third["chain"]["seq"], 42, "{third:#}");
    assert_eq!(third["chain"]["prev"], forged.as_str());
    // `report verify` reads the regions, not the cache: the gap is seen.
    let o = s.expect(&["report", "verify", "--plan", "web.toml"], 13);
    let said = format!("{}{}", stdout(&o), stderr(&o));
    assert!(
        said.contains("seq 3 to 41 between them are missing (removed)"),
        "{said}"
    );
    // Without the cache a drill reads every object again and finds the true head.
    std::fs::remove_file(&cache_file).unwrap();
    std::fs::remove_dir_all(s.state().join("reports/web")).unwrap();
    s.ok(&["drill", "--plan", "web.toml"]);
    let fourth = json_of(&s.local_reports()[0]);
    assert_eq!(fourth["chain"]["seq"], 43, "{fourth:#}");
    assert_eq!(
        fourth["chain"]["prev"].as_str().unwrap(),
        lifeboat::report::chain::hash_value(&third)
    );
    assert!(cache_file.exists());
}
