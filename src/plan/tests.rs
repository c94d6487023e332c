//! Plan parsing and validation, end to end: a good plan, and the issues bad ones report.

use std::time::Duration;

use super::*;
use crate::source::db::RowCounts;

const GOOD: &str = r#"
name = "shop"
[repository]
password_file = "repo.pass"
[objectives]
rpo = "6h"
rto = "30m"
[[destinations]]
type = "local"
path = "/srv/lifeboat/shop"
[[jobs]]
name = "orders"
schedule = "15 */6 * * *"
[jobs.source]
type = "postgres"
database = "orders"
row_counts = "estimate"
[jobs.hooks]
pre = "true"
timeout = "1m"
[retention]
keep_daily = 7
"#;

#[test]
fn parses_a_good_plan() {
    let p = parse(Path::new("/etc/lifeboat/shop.toml"), GOOD).unwrap();
    assert_eq!(p.name, "shop");
    assert_eq!(
        p.password,
        SecretSpec::File("/etc/lifeboat/repo.pass".into())
    );
    assert_eq!(p.objectives.rpo, Some(Duration::from_secs(6 * 3600)));
    assert_eq!(p.objectives.rto, Some(Duration::from_secs(1800)));
    let j = p.job("orders").unwrap();
    assert_eq!(j.hooks.timeout, Duration::from_secs(60));
    match &j.source {
        SourceSpec::Postgres(s) => {
            assert_eq!(s.row_counts, RowCounts::Estimate);
            assert!(s.globals);
        }
        other => panic!("wrong source {other:?}"),
    }
}

fn issues(text: &str) -> Vec<PlanIssue> {
    parse(Path::new("plans/x.toml"), text).unwrap_err().issues
}

#[test]
fn errors_name_file_line_key_and_fix() {
    let bad = GOOD.replace(
        "schedule = \"15 */6 * * *\"",
        "schedule = \"every tuesday\"",
    );
    let i = issues(&bad);
    assert_eq!(i.len(), 1, "{i:?}");
    assert_eq!(i[0].key, "jobs[0].schedule");
    assert_eq!(i[0].line, 13);
    assert!(i[0].fix.contains("5 fields"));
    assert!(
        i[0].to_string()
            .starts_with("plans/x.toml:13: jobs[0].schedule:"),
        "{}",
        i[0]
    );

    let bad = GOOD.replace("rto = \"30m\"", "rto = \"half an hour\"");
    let i = issues(&bad);
    assert_eq!((i[0].key.as_str(), i[0].line), ("objectives.rto", 7));

    let bad = GOOD.replace("row_counts = \"estimate\"", "row_count = \"estimate\"");
    let i = issues(&bad);
    assert_eq!(i.len(), 1, "{i:?}");
    assert_eq!((i[0].key.as_str(), i[0].line), ("row_count", 17));

    let bad = GOOD.replace(
        "password_file = \"repo.pass\"",
        "password_file = \"a\"\npassword_env = \"B\"",
    );
    let i = issues(&bad);
    assert_eq!(i[0].key, "repository.password_env");
    assert!(i[0].fix.contains("exactly one"));

    let cmd = GOOD.replace(
        "password_file = \"repo.pass\"",
        "password_command = \"aws kms decrypt --ciphertext-blob fileb://x\"",
    );
    let p = parse(Path::new("x.toml"), &cmd).unwrap();
    assert_eq!(
        p.password,
        SecretSpec::Command("aws kms decrypt --ciphertext-blob fileb://x".into())
    );
    let both = GOOD.replace(
        "password_file = \"repo.pass\"",
        "password_file = \"a\"\npassword_command = \"kms\"",
    );
    assert_eq!(issues(&both)[0].key, "repository.password_command");
    let empty = GOOD.replace("password_file = \"repo.pass\"", "password_command = \" \"");
    let i = issues(&empty);
    assert_eq!(i[0].key, "repository.password_command");
    assert!(i[0].problem.contains("empty"), "{i:?}");

    let bad = GOOD.replace("row_counts = \"estimate\"", "jobs = 4");
    let i = issues(&bad);
    assert_eq!((i[0].key.as_str(), i[0].line), ("jobs[0].source.jobs", 17));
    assert!(i[0].fix.contains("format = \"directory\""), "{i:?}");
    assert!(parse(
        Path::new("x.toml"),
        &GOOD.replace(
            "row_counts = \"estimate\"",
            "jobs = 4\nformat = \"directory\""
        )
    )
    .is_ok());

    let bad = GOOD.replace("type = \"local\"", "type = \"ftp\"");
    let i = issues(&bad);
    assert!(i[0].problem.contains("unknown variant"), "{i:?}");
    assert_eq!(i[0].line, 9);
}

#[test]
fn five_field_cron_uses_classic_weekdays() {
    use chrono::{Datelike, TimeZone, Timelike, Utc};
    let after = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(); // a Thursday
    let next = |e: &str| parse_cron(e).unwrap().after(&after).next().unwrap();
    assert_eq!(next("0 4 * * 0").weekday(), chrono::Weekday::Sun);
    assert_eq!(next("0 4 * * 7").weekday(), chrono::Weekday::Sun);
    assert_eq!(next("0 4 * * 1-5").weekday(), chrono::Weekday::Thu);
    assert_eq!(next("0 4 * * 6").weekday(), chrono::Weekday::Sat);
    assert_eq!(next("0 4 * * 1").weekday(), chrono::Weekday::Mon);
    assert_eq!(
        next("30 2 * * *"),
        Utc.with_ymd_and_hms(2026, 1, 1, 2, 30, 0).unwrap()
    );
    assert_eq!(next("0 0 */6 * * *").hour(), 6);
    assert!(parse_cron("61 * * * *").is_err());
}

#[test]
fn schedules_slower_than_the_rpo_are_found() {
    let p = parse(Path::new("x.toml"), GOOD).unwrap();
    assert!(p.rpo_misses().is_empty(), "every 6h meets rpo 6h");
    let p = parse(
        Path::new("x.toml"),
        &GOOD.replace("15 */6 * * *", "0 3 * * *"),
    )
    .unwrap();
    assert_eq!(
        p.rpo_misses(),
        vec![("orders".to_string(), Duration::from_secs(86400))]
    );
}

#[test]
fn all_problems_reported_together() {
    let bad = GOOD
        .replace("rpo = \"6h\"", "rpo = \"0s\"")
        .replace("keep_daily = 7", "")
        .replace("schedule = \"15 */6 * * *\"", "schedule = \"99 * * * *\"");
    let keys: Vec<_> = issues(&bad).into_iter().map(|i| i.key).collect();
    assert_eq!(
        keys,
        vec!["objectives.rpo", "jobs[0].schedule", "retention"]
    );
}

#[test]
fn drill_environments_validate_their_own_keys() {
    let p = parse(
        Path::new("plans/x.toml"),
        &format!(
            "{GOOD}\n[drill]\nenvironment = \"scratch\"\nserver = \"postgres://drill@staging:5433/postgres\"\npassword_env = \"PW\"\norphan_expiry = \"12h\"\n"
        ),
    )
    .unwrap();
    let d = p.drill.unwrap();
    assert_eq!(d.environment, EnvironmentKind::Scratch);
    let s = d.scratch.unwrap();
    assert_eq!(s.server.kind, "postgres");
    assert_eq!(s.server.server.host.as_deref(), Some("staging"));
    assert_eq!(s.server.server.port, Some(5433));
    assert_eq!(s.server.orphan_expiry, Duration::from_secs(12 * 3600));
    assert_eq!(s.password, Some(SecretSpec::Env("PW".into())));

    let p = parse(
        Path::new("plans/x.toml"),
        &format!("{GOOD}\n[drill]\nenvironment = \"command\"\nprovision = \"./up.sh\"\nteardown = \"./down.sh\"\ntimeout = \"5m\"\n"),
    )
    .unwrap();
    let c = p.drill.unwrap().command.unwrap();
    assert_eq!(
        (c.provision.as_str(), c.teardown.as_str()),
        ("./up.sh", "./down.sh")
    );
    assert_eq!(c.timeout, Duration::from_secs(300));

    // Missing, misplaced and malformed keys each name the key and the fix.
    let keys = |drill: &str| -> Vec<String> {
        issues(&format!("{GOOD}\n[drill]\n{drill}"))
            .into_iter()
            .map(|i| i.key)
            .collect()
    };
    assert_eq!(keys("environment = \"scratch\"\n"), vec!["drill.server"]);
    assert_eq!(
        keys("environment = \"scratch\"\nserver = \"postgres://u:pw@h/db\"\n"),
        vec!["drill.server"]
    );
    assert_eq!(
        keys("environment = \"command\"\nprovision = \"x\"\n"),
        vec!["drill.teardown"]
    );
    assert_eq!(
        keys("environment = \"ephemeral-postgres\"\nserver = \"postgres://h/db\"\nprovision = \"x\"\n"),
        vec!["drill.server", "drill.provision"]
    );
    assert_eq!(
        keys("environment = \"docker\"\n"),
        vec!["drill.environment"]
    );
    let p = parse(
        Path::new("x.toml"),
        &format!("{GOOD}\n[drill]\nenvironment = \"temp-dir\"\n"),
    )
    .unwrap();
    assert_eq!(p.drill.unwrap().environment, EnvironmentKind::Directory);
}

#[test]
fn sets_are_validated_with_lines_and_fixes() {
    let head = "[repository]\npassword_env = \"X\"\n[[destinations]]\ntype = \"local\"\npath = \"/tmp/r\"\n";
    let pg = "[[jobs]]\nname = \"db\"\nschedule = \"0 3 * * *\"\n[jobs.source]\ntype = \"postgres\"\ndatabase = \"app\"\n";
    let dir = "[[jobs]]\nname = \"files\"\nschedule = \"0 3 * * *\"\n[jobs.source]\ntype = \"dir\"\npaths = [\"/srv\"]\n";
    let ok = format!("{head}{pg}{dir}[[sets]]\nname = \"app\"\njobs = [\"db\", \"files\"]\n");
    let p = parse(Path::new("/tmp/p.toml"), &ok).unwrap();
    assert_eq!(p.sets[0].jobs, ["db", "files"]);
    assert_eq!(p.set_of("files").unwrap().name, "app");
    assert!(p.set_of("other").is_none());
    // Two PostgreSQL databases (and a directory) in one set: drilled on one throwaway server.
    let two = format!(
        "{head}{pg}{}{dir}[[sets]]\nname = \"app\"\njobs = [\"db\", \"db2\", \"files\"]\n",
        pg.replace("\"db\"", "\"db2\"")
    );
    let p = parse(Path::new("/tmp/p.toml"), &two).unwrap();
    assert_eq!(p.sets[0].jobs, ["db", "db2", "files"]);
    // PostgreSQL + MariaDB (+ a directory) in one set: a throwaway server per engine.
    let mixed = format!(
        "{head}{pg}{}{dir}[[sets]]\nname = \"app\"\njobs = [\"db\", \"db2\", \"files\"]\n",
        pg.replace("\"db\"", "\"db2\"")
            .replace("postgres", "mariadb")
    );
    let p = parse(Path::new("/tmp/p.toml"), &mixed).unwrap();
    assert_eq!(p.sets[0].jobs, ["db", "db2", "files"]);

    let cases = [
        // an unknown member
        (format!("{head}{pg}{dir}[[sets]]\nname = \"app\"\njobs = [\"db\", \"nope\"]\n"), "does not define"),
        // one member only
        (format!("{head}{pg}{dir}[[sets]]\nname = \"app\"\njobs = [\"db\"]\n"), "at least two"),
        // different schedules
        (format!("{head}{pg}{}[[sets]]\nname = \"app\"\njobs = [\"db\", \"files\"]\n", dir.replace("0 3 * * *", "0 4 * * *")), "different schedules"),
        // a job in two sets
        (format!("{head}{pg}{dir}{}[[sets]]\nname = \"a\"\njobs = [\"db\", \"files\"]\n[[sets]]\nname = \"b\"\njobs = [\"files\", \"f2\"]\n", dir.replace("\"files\"", "\"f2\"")), "is in set"),
        // a set named like a job
        (format!("{head}{pg}{dir}[[sets]]\nname = \"db\"\njobs = [\"db\", \"files\"]\n"), "also a job's name"),
        // a missing restore-test file
        (format!("{head}{pg}{dir}[[sets]]\nname = \"app\"\njobs = [\"db\", \"files\"]\nrestore_tests = [\"nope.toml\"]\n"), "does not exist"),
        // PostgreSQL + MariaDB drilled through provisioning commands (one server)
        (format!("{head}{pg}{}[[sets]]\nname = \"app\"\njobs = [\"db\", \"db2\"]\n[drill]\nenvironment = \"command\"\nprovision = \"true\"\nteardown = \"true\"\n", pg.replace("\"db\"", "\"db2\"").replace("postgres", "mariadb")), "not a scratch server or provisioning commands"),
        // two databases drilled on a borrowed server
        (format!("{head}{pg}{}[[sets]]\nname = \"app\"\njobs = [\"db\", \"db2\"]\n[drill]\nenvironment = \"scratch\"\nserver = \"postgres://drill@staging:5433/postgres\"\n", pg.replace("\"db\"", "\"db2\"")), "not a scratch server"),
    ];
    for (text, want) in cases {
        let e = parse(Path::new("/tmp/p.toml"), &text).unwrap_err();
        assert!(
            e.issues
                .iter()
                .any(|i| i.problem.contains(want) && i.key.starts_with("sets") && i.line > 0),
            "{want}: {e}"
        );
    }
}

#[test]
fn append_only_retention_needs_keep_within_and_refuses_unallowed_count_rules() {
    let ok = GOOD.replace(
        "keep_daily = 7",
        "keep_within = \"30d\"\nappend_only = true",
    );
    let p = parse(Path::new("plans/x.toml"), &ok).unwrap();
    let r = p.retention.as_ref().unwrap();
    assert!(r.append_only && !r.allow_count_rules);
    // count rules: refused, naming them and the way out
    let i = issues(&GOOD.replace(
        "keep_daily = 7",
        "keep_daily = 7\nkeep_within = \"30d\"\nappend_only = true",
    ));
    assert_eq!(i.len(), 1, "{i:?}");
    assert_eq!(i[0].key, "retention.append_only");
    assert!(i[0].problem.contains("keep_daily"), "{i:?}");
    assert!(i[0].fix.contains("allow_count_rules"), "{i:?}");
    let allowed = GOOD.replace(
        "keep_daily = 7",
        "keep_daily = 7\nkeep_within = \"30d\"\nappend_only = true\nallow_count_rules = true",
    );
    assert!(parse(Path::new("plans/x.toml"), &allowed).is_ok());
    // no keep_within
    let i = issues(&GOOD.replace("keep_daily = 7", "keep_tags = [\"x\"]\nappend_only = true"));
    assert_eq!(i.len(), 1, "{i:?}");
    assert!(i[0].problem.contains("needs keep_within"), "{i:?}");
    // allow_count_rules alone
    let i = issues(&GOOD.replace("keep_daily = 7", "keep_daily = 7\nallow_count_rules = true"));
    assert_eq!(i[0].key, "retention.allow_count_rules");
}
