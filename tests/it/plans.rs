//! Every example in `plans/` parses and validates (as the docs promise), and together they
//! cover every source kind; a plan's repository password can come from a systemd credential.

use crate::support;

use std::collections::BTreeSet;

#[test]
fn every_example_plan_is_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("plans");
    let mut kinds = BTreeSet::new();
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().and_then(|x| x.to_str()) != Some("toml") {
            continue;
        }
        let plan = lifeboat::plan::load(&p).unwrap_or_else(|e| panic!("{e}"));
        assert!(!plan.jobs.is_empty(), "{} has no jobs", p.display());
        assert!(
            plan.objectives.rpo.is_some() && plan.objectives.rto.is_some(),
            "{} documents no objectives",
            p.display()
        );
        assert!(
            plan.rpo_misses().is_empty(),
            "{}: a schedule cannot meet the rpo: {:?}",
            p.display(),
            plan.rpo_misses()
        );
        for j in &plan.jobs {
            kinds.insert(j.source.kind());
        }
        n += 1;
    }
    assert!(n >= 7, "only {n} example plans");
    // plans/examples/: the recovery-point set example (a database plus an uploads
    // directory), with its restore tests.
    let mut sets = 0;
    for e in std::fs::read_dir(dir.join("examples")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().and_then(|x| x.to_str()) != Some("toml") {
            continue;
        }
        let plan = lifeboat::plan::load(&p).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            plan.objectives.rpo.is_some() && plan.objectives.rto.is_some(),
            "{} documents no objectives",
            p.display()
        );
        assert!(plan.rpo_misses().is_empty(), "{}", p.display());
        for s in &plan.sets {
            let kinds: BTreeSet<_> = s
                .jobs
                .iter()
                .map(|j| plan.job(j).unwrap().source.kind())
                .collect();
            assert!(
                kinds.contains("postgres") && kinds.contains("dir"),
                "{kinds:?}"
            );
            for t in &s.restore_tests {
                let tests = lifeboat::drill::restore_tests::RestoreTests::load(t)
                    .unwrap_or_else(|e| panic!("{e}"));
                assert!(
                    !tests.file_refs.is_empty(),
                    "{} has no file_refs",
                    t.display()
                );
            }
            sets += 1;
        }
    }
    assert!(
        sets >= 1,
        "no example plan in plans/examples has a [[sets]] table"
    );
    let want: BTreeSet<_> = ["block", "btrfs", "dir", "lvm", "mariadb", "postgres", "zfs"]
        .into_iter()
        .collect();
    assert_eq!(kinds, want);
}

/// The repository password from a systemd credential (`$CREDENTIALS_DIRECTORY/<name>`), and
/// a clear refusal when the credential is not there.
#[test]
fn repository_password_from_a_systemd_credential() {
    use support::*;
    let ws = Workspace::new();
    let data = ws.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("a.txt"), "hello\n").unwrap();
    let creds = ws.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("lifeboat-repo"), format!("{PASSWORD}\n")).unwrap();
    let plan = ws.path().join("cred.toml");
    std::fs::write(
        &plan,
        format!(
            "[repository]\npassword_credential = \"lifeboat-repo\"\n[[destinations]]\ntype = \"local\"\npath = \"repo\"\n[[jobs]]\nname = \"files\"\nschedule = \"0 2 * * *\"\n[jobs.source]\ntype = \"dir\"\npaths = [\"{}\"]\n",
            data.display()
        ),
    )
    .unwrap();
    let o = run(lifeboat()
        .args(["backup", "--plan"])
        .arg(&plan)
        .env("CREDENTIALS_DIRECTORY", &creds));
    assert!(o.status.success(), "backup with a credential failed");
    let o = run(lifeboat()
        .args(["snapshots", "--plan"])
        .arg(&plan)
        .env("CREDENTIALS_DIRECTORY", &creds));
    assert!(
        stdout(&o).contains("1 snapshots of plan cred"),
        "{}",
        stdout(&o)
    );

    let o = run(lifeboat()
        .args(["backup", "--plan"])
        .arg(&plan)
        .env_remove("CREDENTIALS_DIRECTORY"));
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("systemd credential lifeboat-repo") && err.contains("LoadCredential="),
        "{err}"
    );
}

/// A plan's jobs all run even when one fails; the failure decides the exit code. `plan check
/// --json --offline` validates without touching anything.
#[test]
fn one_failing_job_does_not_stop_the_others() {
    use support::*;
    let ws = Workspace::new();
    let data = ws.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("a.txt"), "hello\n").unwrap();
    let job = |name: &str, hook: &str| {
        format!(
            "[[jobs]]\nname = \"{name}\"\nschedule = \"0 2 * * *\"\n[jobs.source]\ntype = \"dir\"\npaths = [\"{}\"]\n[jobs.hooks]\npre = \"{hook}\"\ntimeout = \"10s\"\n\n",
            data.display()
        )
    };
    let plan = ws.plan("two", &(job("first", "exit 7") + &job("second", "true")));
    let o = run(lifeboat().args(["backup", "--plan"]).arg(&plan));
    assert_eq!(o.status.code(), Some(14));
    assert!(
        stderr(&o).contains("job first") && stderr(&o).contains("exited with status 7"),
        "{}",
        stderr(&o)
    );
    let snaps = ws.snapshots(&plan);
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["job"], "second");

    let o = run(lifeboat()
        .args(["plan", "check", "--json", "--offline"])
        .arg(&plan));
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (v["valid"].as_bool(), v["problems"].as_u64()),
        (Some(true), Some(0))
    );
    let bad = ws.plan("bad", &job("x", "true").replace("0 2 * * *", "0 2 * *"));
    let o = run(lifeboat()
        .args(["plan", "check", "--json", "--offline"])
        .arg(&bad));
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["issues"][0]["key"], "jobs[0].schedule");
    assert_eq!(v["issues"][0]["line"], 13);
}

/// `init --plan` creates the repository at every destination of the plan with the plan's
/// password; `backup --plan` then commits to both; a second `init` refuses (exit 1, nothing
/// overwritten).
#[test]
fn init_from_a_plan_creates_every_destination() {
    use support::*;
    let ws = Workspace::new();
    let data = ws.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("a.txt"), "hello\n").unwrap();
    let plan = ws.path().join("two.toml");
    std::fs::write(
        &plan,
        format!(
            "min_regions = 2\n[repository]\npassword_file = \"repo.pass\"\n[[destinations]]\ntype = \"local\"\npath = \"site-a\"\n[[destinations]]\ntype = \"local\"\nname = \"b\"\npath = \"site-b\"\n[[jobs]]\nname = \"files\"\nschedule = \"0 2 * * *\"\n[jobs.source]\ntype = \"dir\"\npaths = [\"{}\"]\n",
            data.display()
        ),
    )
    .unwrap();
    let o = run(lifeboat().args(FAST_INIT).arg("--plan").arg(&plan));
    assert!(o.status.success(), "{}", stderr(&o));
    for site in ["site-a", "site-b"] {
        assert!(ws.path().join(site).join("config").is_file(), "{site}");
    }
    let o = run(lifeboat().args(["init", "--plan"]).arg(&plan));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
    let o = run(lifeboat()
        .args(["backup", "--plan"])
        .arg(&plan)
        .env("LIFEBOAT_STATE_DIR", ws.path().join("state")));
    assert!(o.status.success(), "{}", stderr(&o));
    for site in ["site-a", "site-b"] {
        let snaps = std::fs::read_dir(ws.path().join(site).join("snapshots"))
            .unwrap()
            .count();
        assert_eq!(snaps, 1, "{site}");
    }
}
