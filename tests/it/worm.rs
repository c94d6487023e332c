//! WORM (T26) and secrets in panics (T31).
//!
//! - Object Lock with two roles, on moto enforcing IAM: the backup role (the policy
//!   `docs/regions.md` recommends) backs up and keeps locks extended but cannot delete
//!   anything — lifeboat's `forget` and `prune` refuse at once, naming the permission and the
//!   fix, with nothing changed, and a client holding those keys deletes no version, even of
//!   objects whose lock has lapsed — while the maintenance role prunes.
//! - Governance mode: lifeboat never sends `x-amz-bypass-governance-retention`, so prune
//!   keeps governance-locked packs as it keeps compliance-locked ones, and the extension
//!   pass keeps what the kept snapshot needs locked in governance mode.
//! - A panic (failpoint `panic-opening-key`, whose message quotes every secret the process
//!   holds) prints none of them: not on stderr, not in the `--json` `exit_error` record; the
//!   exit code is 101.

use crate::support;

use chrono::{DateTime, Duration as Days, SubsecRound, Utc};
use support::moto::Moto;
use support::regions::{lifeboat, Run};
use support::{assert_same_tree, write_random, FAST_INIT};

type Keys = (String, String);

/// `lifeboat --repo URL ARGS` at `t` (moto's clock and lifeboat's lock clock), signed with
/// `keys`.
fn at(
    moto: &Moto,
    w: &std::path::Path,
    t: DateTime<Utc>,
    keys: &Keys,
    url: &str,
    args: &[&str],
) -> Run {
    moto.set_clock(t);
    let mut c = lifeboat(w);
    c.env("LIFEBOAT_LOCK_CLOCK", t.to_rfc3339())
        .env("LIFEBOAT_STATE_DIR", w.join("state"))
        .env("AWS_ACCESS_KEY_ID", &keys.0)
        .env("AWS_SECRET_ACCESS_KEY", &keys.1)
        .arg("--repo")
        .arg(url)
        .args(args);
    support::regions::run(c)
}

fn json(r: &Run) -> serde_json::Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {r:?}"))
}

/// Every version and delete marker under `prefix`: (key, version id, is a marker), sorted.
fn history(moto: &Moto, bucket: &str, prefix: &str) -> Vec<(String, String, bool)> {
    let out = moto.boto(&format!(
        "p = s3.get_paginator('list_object_versions')\nout = []\nfor page in p.paginate(Bucket='{bucket}', Prefix='{prefix}'):\n    for v in page.get('Versions', []):\n        out.append([v['Key'], v['VersionId'], False])\n    for v in page.get('DeleteMarkers', []):\n        out.append([v['Key'], v['VersionId'], True])\nprint(json.dumps(sorted(out)))"
    ));
    serde_json::from_str(&out).unwrap()
}

/// Ransomware holding `keys`: deletes every version and delete marker under `prefix` (listed
/// by the administrator: the backup role may not list versions). Returns (deleted, refused).
fn delete_every_version_as(
    moto: &Moto,
    keys: &Keys,
    bucket: &str,
    prefix: &str,
) -> (Vec<String>, Vec<String>) {
    let out = moto.boto(&format!(
        r#"a = boto3.client('s3', endpoint_url=kw['endpoint_url'], region_name='us-east-1', aws_access_key_id='{}', aws_secret_access_key='{}')
todo = []
for page in s3.get_paginator('list_object_versions').paginate(Bucket='{bucket}', Prefix='{prefix}'):
    for v in page.get('Versions', []) + page.get('DeleteMarkers', []):
        todo.append((v['Key'], v['VersionId']))
deleted, refused = [], []
for k, v in todo:
    try:
        a.delete_object(Bucket='{bucket}', Key=k, VersionId=v)
        deleted.append(k)
    except a.exceptions.ClientError as e:
        assert e.response['Error']['Code'] == 'AccessDenied', e
        refused.append(k)
print(json.dumps([deleted, refused]))"#,
        keys.0, keys.1
    ));
    serde_json::from_str(&out).unwrap()
}

/// The IAM policies of `docs/regions.md` ("IAM policies") for a repository at
/// `bucket/prefix`: (backup role, maintenance role).
fn policies(bucket: &str, prefix: &str) -> (serde_json::Value, serde_json::Value) {
    let b = format!("arn:aws:s3:::{bucket}");
    let objects = format!("arn:aws:s3:::{bucket}/{prefix}/*");
    let read_write = serde_json::json!([
        {"Sid": "Bucket", "Effect": "Allow",
         "Action": ["s3:ListBucket", "s3:GetBucketLocation", "s3:GetBucketObjectLockConfiguration",
                    "s3:GetLifecycleConfiguration", "s3:ListBucketMultipartUploads"],
         "Resource": b},
        {"Sid": "Objects", "Effect": "Allow",
         "Action": ["s3:GetObject", "s3:PutObject", "s3:GetObjectRetention", "s3:PutObjectRetention", "s3:GetObjectLegalHold",
                    "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
         "Resource": objects}
    ]);
    let mut backup = read_write.as_array().unwrap().clone();
    backup.push(serde_json::json!(
        {"Sid": "MarkersOnLocksRecordsProbes", "Effect": "Allow", "Action": "s3:DeleteObject",
         "Resource": [format!("arn:aws:s3:::{bucket}/{prefix}/locks/*"),
                      format!("arn:aws:s3:::{bucket}/{prefix}/retention/*"),
                      format!("arn:aws:s3:::{bucket}/{prefix}/lifeboat-healthcheck/*")]}
    ));
    backup.push(serde_json::json!(
        {"Sid": "NeverDeleteVersions", "Effect": "Deny",
         "Action": ["s3:DeleteObjectVersion", "s3:BypassGovernanceRetention",
                    "s3:PutBucketObjectLockConfiguration", "s3:PutBucketVersioning",
                    "s3:PutLifecycleConfiguration", "s3:DeleteBucket"],
         "Resource": [b.clone(), format!("arn:aws:s3:::{bucket}/*")]}
    ));
    let mut maintenance = read_write.as_array().unwrap().clone();
    maintenance.push(serde_json::json!(
        {"Sid": "Versions", "Effect": "Allow", "Action": "s3:ListBucketVersions", "Resource": b}
    ));
    maintenance.push(serde_json::json!(
        {"Sid": "Delete", "Effect": "Allow", "Action": ["s3:DeleteObject", "s3:DeleteObjectVersion", "s3:GetObjectVersion"],
         "Resource": objects}
    ));
    maintenance.push(serde_json::json!(
        {"Sid": "NeverBypass", "Effect": "Deny",
         "Action": ["s3:BypassGovernanceRetention", "s3:PutBucketObjectLockConfiguration",
                    "s3:PutBucketVersioning", "s3:DeleteBucket"],
         "Resource": [b.clone(), format!("arn:aws:s3:::{bucket}/*")]}
    ));
    // moto checks HeadBucket as an action of its own (AWS authorizes it with s3:ListBucket):
    // the one line that is not in docs/regions.md.
    for p in [&mut backup, &mut maintenance] {
        p.push(serde_json::json!(
            {"Sid": "MotoHeadBucket", "Effect": "Allow", "Action": "s3:HeadBucket", "Resource": b}
        ));
    }
    let doc =
        |s: Vec<serde_json::Value>| serde_json::json!({"Version": "2012-10-17", "Statement": s});
    (doc(backup), doc(maintenance))
}

/// T26, "backup credentials cannot delete": moto enforcing IAM, a compliance-locked bucket,
/// the two roles of `docs/regions.md`.
#[test]
fn backup_credentials_cannot_delete_and_the_maintenance_role_prunes() {
    let moto = Moto::start();
    moto.create_bucket("locked", true);
    moto.enforce_iam();
    let (backup_policy, maintenance_policy) = policies("locked", "repo");
    let backup = moto.iam_user("backup", &backup_policy);
    let maint = moto.iam_user("maintenance", &maintenance_policy);
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let url = moto.url(
        "locked",
        "repo",
        "&object_lock_mode=compliance&object_lock_days=2",
    );
    let t0 = Utc::now().trunc_subsecs(0);
    let t1 = t0 + Days::hours(1);

    // The default keys are refused now: the server checks who signs.
    let r = at(
        &moto,
        w,
        t0,
        &("test".into(), "test".into()),
        &url,
        &FAST_INIT,
    );
    assert_ne!(r.code, 0, "{r:?}");

    let r = at(&moto, w, t0, &maint, &url, &FAST_INIT);
    assert_eq!(r.code, 0, "{r:?}");
    let r = at(&moto, w, t0, &backup, &url, &["healthcheck"]);
    assert_eq!(r.code, 0, "{r:?}");

    // Three backups with the backup role (a; a and b; a and c an hour later): each commits,
    // and its retention pass (PutObjectRetention, the record under retention/) works.
    let data = w.join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_random(&data.join("a"), 1, 10 << 20);
    let r = at(
        &moto,
        w,
        t0,
        &backup,
        &url,
        &["backup", data.to_str().unwrap()],
    );
    assert_eq!(r.code, 0, "{r:?}");
    write_random(&data.join("b"), 2, 9 << 20);
    let r = at(
        &moto,
        w,
        t0,
        &backup,
        &url,
        &["backup", data.to_str().unwrap()],
    );
    assert_eq!(r.code, 0, "{r:?}");
    std::fs::remove_file(data.join("b")).unwrap();
    write_random(&data.join("c"), 3, 1 << 20);
    let r = at(
        &moto,
        w,
        t1,
        &backup,
        &url,
        &["backup", "--json", data.to_str().unwrap()],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!r.stderr.contains("was not extended"), "{r:?}");

    // forget and prune with the backup role: refused before anything is written or deleted.
    let before = history(&moto, "locked", "repo/");
    for args in [
        &[
            "forget",
            "--confirm",
            "--keep-last",
            "1",
            "--prune",
            "--grace",
            "0",
        ][..],
        &["forget", "--confirm", "--keep-last", "1", "--json"][..],
        &["prune", "--confirm", "--grace", "0", "--max-unused", "0%"][..],
    ] {
        let r = at(&moto, w, t1, &backup, &url, args);
        eprintln!("{args:?} with the backup role: {r:?}");
        assert_eq!(r.code, 1, "{args:?}: {r:?}");
        let e = r.stderr.as_str();
        assert!(
            e.contains("these credentials may not delete")
                && e.contains("s3:DeleteObject refused")
                && e.contains("nothing was changed")
                && e.contains("maintenance role")
                && e.contains("docs/regions.md"),
            "{args:?}: {r:?}"
        );
        if args.contains(&"--json") {
            let rec = r
                .stderr
                .lines()
                .find(|l| l.contains("exit_error"))
                .expect("an exit_error record");
            let rec: serde_json::Value = serde_json::from_str(rec).unwrap();
            assert_eq!(rec["code"], 1, "{rec}");
        }
    }
    assert_eq!(
        history(&moto, "locked", "repo/"),
        before,
        "nothing was changed"
    );
    let r = at(&moto, w, t1, &backup, &url, &["snapshots", "--json"]);
    assert_eq!(json(&r).as_array().unwrap().len(), 3, "{r:?}");
    let r = at(&moto, w, t1, &backup, &url, &["verify", "--read-data"]);
    assert_eq!(r.code, 0, "{r:?}");

    // The backup keys overwrite a pack: `verify` finds it (exit 13), and the original is
    // still there as the older, locked version, from which an administrator puts it back
    // (with its lock).
    let (pack, original) = moto.versions("locked", "repo/data/").remove(0);
    moto.acting_as(&backup, |m| {
        m.boto(&format!(
            "import hashlib, base64\nb = b'overwritten'\ns3.put_object(Bucket='locked', Key='{pack}', Body=b, ContentMD5=base64.b64encode(hashlib.md5(b).digest()).decode())"
        ))
    });
    let r = at(&moto, w, t1, &backup, &url, &["verify", "--read-data"]);
    assert_eq!(r.code, 13, "{r:?}");
    moto.boto(&format!(
        "import hashlib, base64\no = s3.get_object(Bucket='locked', Key='{pack}', VersionId='{original}')\nb = o['Body'].read()\ns3.put_object(Bucket='locked', Key='{pack}', Body=b, ContentMD5=base64.b64encode(hashlib.md5(b).digest()).decode(), ObjectLockMode=o['ObjectLockMode'], ObjectLockRetainUntilDate=o['ObjectLockRetainUntilDate'])"
    ));
    let r = at(&moto, w, t1, &backup, &url, &["verify", "--read-data"]);
    assert_eq!(r.code, 0, "{r:?}");

    // The maintenance role: forget and prune work; b's pack is still locked, kept.
    let r = at(
        &moto,
        w,
        t1,
        &maint,
        &url,
        &[
            "forget",
            "--confirm",
            "--keep-last",
            "1",
            "--prune",
            "--grace",
            "0",
            "--json",
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let j = json(&r);
    assert_eq!(j["regions"][0]["removed"], 2, "{j:#}");
    // Its probe left no delete marker behind.
    let probe = ::lifeboat::ops::object_lock::PROBE;
    assert!(
        !history(&moto, "locked", "repo/")
            .iter()
            .any(|(k, _, _)| k.ends_with(probe)),
        "the probe's delete marker is gone"
    );

    // 50 hours in, every original lock date has passed: the backup role still deletes
    // nothing — no version, not even the lapsed ones (the old lock and prune files), nor
    // hides a key behind a delete marker outside locks/ and retention/.
    let t3 = t0 + Days::hours(50);
    moto.set_clock(t3);
    let (deleted, refused) = delete_every_version_as(&moto, &backup, "locked", "repo/");
    assert!(deleted.is_empty(), "the backup role deleted {deleted:?}");
    assert!(!refused.is_empty());
    let hidden = moto.acting_as(&backup, |m| {
        m.boto("r = []\nfor k in ['repo/config', 'repo/snapshots/x', 'repo/data/00/x', 'repo/index/x']:\n    try:\n        s3.delete_object(Bucket='locked', Key=k)\n        r.append(k)\n    except s3.exceptions.ClientError as e:\n        assert e.response['Error']['Code'] == 'AccessDenied', e\nprint(json.dumps(r))")
    });
    assert_eq!(hidden.trim(), "[]", "the backup role hid keys");

    // The maintenance role's prune frees b's pack (its lock lapsed); the kept snapshot
    // verifies and restores.
    let r = at(
        &moto,
        w,
        t3,
        &maint,
        &url,
        &["prune", "--confirm", "--grace", "0", "--json"],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let j = json(&r);
    assert!(
        j["regions"][0]["sweep"]["deleted_packs"].as_u64().unwrap() >= 1,
        "{j:#}"
    );
    let r = at(&moto, w, t3, &backup, &url, &["verify", "--read-data"]);
    assert_eq!(r.code, 0, "{r:?}");
    let out = w.join("restored");
    let r = at(
        &moto,
        w,
        t3,
        &backup,
        &url,
        &["restore", "latest", "--target", out.to_str().unwrap()],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_same_tree(&data, &out.join("data"));
}

/// T26, governance mode: lifeboat writes and extends governance retention and never asks to
/// bypass it, so a governance-locked pack no snapshot needs is kept by prune (moto honours
/// the bypass header without any permission check: a prune that sent it would delete the
/// pack), and so is everything the kept snapshot needs after its original dates.
#[test]
fn governance_locked_packs_are_kept_and_extended_never_bypassed() {
    let moto = Moto::start();
    moto.create_bucket("gov", true);
    let keys: Keys = ("test".into(), "test".into());
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let url = moto.url(
        "gov",
        "repo",
        "&object_lock_mode=governance&object_lock_days=2",
    );
    let t0 = Utc::now().trunc_subsecs(0);
    let t1 = t0 + Days::hours(1);
    let r = at(&moto, w, t0, &keys, &url, &FAST_INIT);
    assert_eq!(r.code, 0, "{r:?}");

    // As in retention.rs's compliance test: S0 (a), S1 (a, b) at t0, S2 (a, c) at t1, so
    // b's pack is needed by S1 only.
    let data = w.join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_random(&data.join("a"), 1, 10 << 20);
    let r = at(
        &moto,
        w,
        t0,
        &keys,
        &url,
        &["backup", data.to_str().unwrap()],
    );
    assert_eq!(r.code, 0, "{r:?}");
    write_random(&data.join("b"), 2, 9 << 20);
    let r = at(
        &moto,
        w,
        t0,
        &keys,
        &url,
        &["backup", data.to_str().unwrap()],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let s1_packs: Vec<String> = moto
        .versions("gov", "repo/data/")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    std::fs::remove_file(data.join("b")).unwrap();
    write_random(&data.join("c"), 3, 1 << 20);
    let r = at(
        &moto,
        w,
        t1,
        &keys,
        &url,
        &["backup", data.to_str().unwrap()],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let kept = w.join("kept");
    std::fs::create_dir_all(&kept).unwrap();
    for f in ["a", "c"] {
        std::fs::copy(data.join(f), kept.join(f)).unwrap();
    }
    // Every object is written in governance mode.
    let modes = moto.boto(&format!(
        "print(json.dumps(sorted(set(s3.head_object(Bucket='gov', Key=k).get('ObjectLockMode', '') for k in {s1_packs:?}))))"
    ));
    assert_eq!(modes.trim(), r#"["GOVERNANCE"]"#);

    // forget S0 and S1 and prune, with the lock record gone so that prune asks the store to
    // delete b's pack: refused (no bypass asked), kept, reported, nothing deleted.
    let r = at(
        &moto,
        w,
        t1,
        &keys,
        &url,
        &["forget", "--confirm", "--keep-last", "1"],
    );
    assert_eq!(r.code, 0, "{r:?}");
    moto.boto("p = s3.get_paginator('list_objects_v2')\nfor page in p.paginate(Bucket='gov', Prefix='repo/retention/'):\n    for o in page.get('Contents', []):\n        s3.delete_object(Bucket='gov', Key=o['Key'])");
    let packs_before = moto.versions("gov", "repo/data/");
    let r = at(
        &moto,
        w,
        t1,
        &keys,
        &url,
        &[
            "prune",
            "--confirm",
            "--grace",
            "0",
            "--max-unused",
            "100%",
            "--json",
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let j = json(&r);
    assert!(
        j["regions"][0]["sweep"]["locked_packs"].as_u64().unwrap() >= 1,
        "{j:#}"
    );
    assert_eq!(j["regions"][0]["sweep"]["deleted_packs"], 0, "{j:#}");
    assert_eq!(
        moto.versions("gov", "repo/data/"),
        packs_before,
        "nothing deleted"
    );
    let r = at(&moto, w, t1, &keys, &url, &["verify", "--read-data"]);
    assert_eq!(r.code, 0, "{r:?}");

    // 30 hours in: the pass extends what S2 needs, in governance mode.
    let t2 = t0 + Days::hours(30);
    let r = at(
        &moto,
        w,
        t2,
        &keys,
        &url,
        &["forget", "--confirm", "--keep-last", "1", "--json"],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let j = json(&r);
    assert!(
        j["regions"][0]["object_lock"]["extended"].as_u64().unwrap() > 0,
        "{j:#}"
    );
    let after: Vec<(String, String)> = serde_json::from_str(&moto.boto(&format!(
        "print(json.dumps([[h.get('ObjectLockMode', ''), h['ObjectLockRetainUntilDate'].strftime('%Y-%m-%dT%H:%M:%SZ')] for h in (s3.head_object(Bucket='gov', Key=k) for k in {s1_packs:?})]))"
    )))
    .unwrap();
    let extended_past = (t0 + Days::days(2))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    assert!(
        after.iter().all(|(m, _)| m == "GOVERNANCE")
            && after.iter().any(|(_, u)| *u > extended_past),
        "{after:?}"
    );

    // 50 hours in: a client without the bypass header deletes only what nothing needs;
    // every pack S2 needs is refused, and S2 restores byte-identical.
    let t3 = t0 + Days::hours(50);
    moto.set_clock(t3);
    let (deleted, refused) = moto.delete_every_version("gov", "repo/");
    assert!(
        !deleted.is_empty(),
        "the server's clock passed the original dates"
    );
    assert!(
        s1_packs.iter().any(|k| refused.contains(k)),
        "S2 still needs some of S1's first packs: {refused:?}"
    );
    let out = w.join("restored");
    let r = at(
        &moto,
        w,
        t3,
        &keys,
        &url,
        &["restore", "latest", "--target", out.to_str().unwrap()],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_same_tree(&kept, &out.join("data"));
}

/// T31: a panic while lifeboat holds secrets (the repository password from a plan's
/// password_file or from --password-file, S3 keys, database passwords and a catalog URL
/// from the environment, one with a quote and a backslash, which `Debug` escapes) prints none
/// of them. The failpoint's message quotes every held secret, as written and through
/// `Debug`, in the key derivation thread; the main thread then panics with that panic's
/// message quoted again (`expect` on the `JoinError`).
#[test]
fn a_panic_prints_no_secret() {
    let ws = support::Workspace::new();
    let data = ws.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("a.txt"), "hello\n").unwrap();
    let plan = ws.plan(
        "p",
        &format!(
            "[[jobs]]\nname = \"files\"\nschedule = \"0 2 * * *\"\n[jobs.source]\ntype = \"dir\"\npaths = [\"{}\"]\n",
            data.display()
        ),
    );
    let secrets = [
        ("AWS_SECRET_ACCESS_KEY", "Aws-Secret-Key-2"),
        ("AWS_SESSION_TOKEN", "Aws-Session-Token-3"),
        ("PGPASSWORD", "Pg-Pw-5"),
        ("SHOP_DB_PASSWORD", r#"Shop"Db\Pw-4"#),
        (
            "LIFEBOAT_CATALOG",
            "postgres://cat:Cat-Url-Pw-6@127.0.0.1:1/catalog",
        ),
    ];
    let repo = ws.path().join("repo");
    let pass = ws.path().join("repo.pass");
    let runs: [(&str, Vec<&std::ffi::OsStr>); 2] = [
        (
            "backup --plan",
            vec![
                "backup".as_ref(),
                "--json".as_ref(),
                "--plan".as_ref(),
                plan.as_os_str(),
            ],
        ),
        (
            "snapshots --password-file",
            vec![
                "snapshots".as_ref(),
                "--json".as_ref(),
                "--repo".as_ref(),
                repo.as_os_str(),
                "--password-file".as_ref(),
                pass.as_os_str(),
            ],
        ),
    ];
    for (what, args) in runs {
        let mut cmd = support::lifeboat();
        cmd.args(&args)
            .env("LIFEBOAT_FAILPOINT", "panic-opening-key:1");
        for (k, v) in secrets {
            cmd.env(k, v);
        }
        let o = support::run(&mut cmd);
        let err = support::stderr(&o);
        let all = format!("{}{err}", support::stdout(&o));
        assert_eq!(o.status.code(), Some(101), "{what}: {err}");
        // The failpoint fired, in the kdf thread and again in the main thread.
        assert!(
            err.matches("failpoint panic-opening-key").count() >= 2 && err.contains("<redacted>"),
            "{what}: {err}"
        );
        for (k, v) in secrets.iter().copied().chain([
            ("repository password", support::PASSWORD),
            ("a URL's password", "Cat-Url-Pw-6"),
        ]) {
            assert!(!all.contains(v), "{what}: {k} in the output:\n{all}");
            let escaped = v.escape_debug().to_string();
            assert!(
                !all.contains(&escaped),
                "{what}: {k} (escaped) in the output:\n{all}"
            );
        }
        let rec = err
            .lines()
            .find(|l| l.contains("\"exit_error\""))
            .unwrap_or_else(|| panic!("{what}: no exit_error record: {err}"));
        let rec: serde_json::Value = serde_json::from_str(rec).unwrap();
        assert_eq!(rec["code"], 101, "{rec}");
        let msg = rec["message"].as_str().unwrap();
        assert!(
            msg.contains("internal error") && msg.contains("failpoint panic-opening-key"),
            "{rec}"
        );
    }
}
