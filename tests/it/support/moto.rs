//! A throwaway moto server (`moto[server]` from PyPI) for the Object Lock tests: a free
//! 127.0.0.1 port, killed on drop. moto is a *mock*, used only because neither real S3
//! server here (Garage, s3s-fs) implements Object Lock, while moto refuses to delete a locked
//! object version as S3 does. By default it checks no credentials; after
//! [`Moto::enforce_iam`] it checks every request's SigV4 signature against the IAM users
//! created through it and their policies (moto's `INITIAL_NO_AUTH_ACTION_COUNT`, set to 0 at
//! run time through `/moto-api/reset-auth`). Its S3 action names are coarser than AWS's: a
//! `DELETE` is `s3:DeleteObject`, with `versionId` `s3:DeleteObjectVersion`, a multi-object
//! delete `s3:DeleteObject`; but `PutObjectRetention` is checked as `s3:PutObject`, a HEAD as
//! `s3:GetObject` and `GetObjectLockConfiguration` as `s3:ListBucket`.
//!
//! Its clock can be moved by hand: the server runs under a small launcher that makes moto's
//! S3 "now" (what it judges retention against) read an instant from a file, so a test moves
//! the server's clock and lifeboat's lock clock (`LIFEBOAT_LOCK_CLOCK`) together instead of
//! waiting for a lock date. The launcher patches `moto.s3.models.utcnow`, the one function
//! moto's `FakeKey.is_locked` asks.
//!
//! Setup and attacks are done with boto3 (moto's own dependency), an S3 client independent
//! of lifeboat's. `scripts/test` installs moto when it is missing.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::garage::free_port;

const LAUNCHER: &str = r#"
import datetime, os, sys
import moto.s3.models as models
from moto.server import main

clock = os.environ["MOTO_CLOCK_FILE"]
real = models.utcnow

def utcnow():
    try:
        with open(clock) as f:
            s = f.read().strip()
    except FileNotFoundError:
        s = ""
    if not s:
        return real()
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ")

models.utcnow = utcnow

# With IAM enforced, moto recomputes each request's SigV4 signature from the query string as
# its web server hands it over, decoded (`prefix=repo/keys/`), while the canonical request
# has every query key and value percent-encoded (`prefix=repo%2Fkeys%2F`), as AWS and the Rust
# SDK build it; boto3 happens to send them encoded. Encode them again before moto signs.
from urllib.parse import quote, unquote
import moto.iam.access_control as access_control
iam_request_init = access_control.IAMRequestBase.__init__

def encoded_query_init(self, account_id, method, path, *args, **kwargs):
    base, _, query = path.partition("?")
    if query:
        enc = lambda s: quote(unquote(s), safe="-_.~")
        pairs = (p.partition("=") for p in query.split("&"))
        path = base + "?" + "&".join(enc(k) + "=" + enc(v) for k, _, v in pairs)
    iam_request_init(self, account_id, method, path, *args, **kwargs)

access_control.IAMRequestBase.__init__ = encoded_query_init
main(sys.argv[1:])
"#;

pub struct Moto {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Child,
    /// The keys the boto3 helpers sign with: moto's default `test` until
    /// [`Moto::enforce_iam`] creates an administrator.
    admin: std::cell::RefCell<(String, String)>,
}

impl Moto {
    pub fn start() -> Moto {
        let dir = tempfile::tempdir().unwrap();
        let launcher = dir.path().join("moto_clock.py");
        std::fs::write(&launcher, LAUNCHER).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("moto.log")).unwrap();
        let child = Command::new("python3")
            .arg(&launcher)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("MOTO_CLOCK_FILE", dir.path().join("clock"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("python3 with moto[server] (pip install 'moto[server]'; scripts/test does)");
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "moto did not open its port; log:\n{}",
                std::fs::read_to_string(dir.path().join("moto.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto {
            port,
            dir,
            child,
            admin: std::cell::RefCell::new(("test".into(), "test".into())),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Sets the server's clock (what it judges retention against).
    pub fn set_clock(&self, t: DateTime<Utc>) {
        std::fs::write(
            self.dir.path().join("clock"),
            t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        )
        .unwrap();
    }

    /// Runs a boto3 script with `s3` (a client for this server) and `json` in scope; returns
    /// what it prints.
    pub fn boto(&self, script: &str) -> String {
        let prelude = format!(
            "import boto3, json, sys\nkw = dict(endpoint_url='{}', region_name='us-east-1', aws_access_key_id='{}', aws_secret_access_key='{}')\ns3 = boto3.client('s3', **kw)\niam = boto3.client('iam', **kw)\n",
            self.endpoint(),
            self.admin.borrow().0,
            self.admin.borrow().1
        );
        let path: PathBuf = self
            .dir
            .path()
            .join(format!("s{}.py", rand::random::<u32>()));
        std::fs::write(&path, format!("{prelude}{script}")).unwrap();
        let out = Command::new("python3").arg(&path).output().unwrap();
        assert!(
            out.status.success(),
            "boto3 script failed:\n{script}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Creates IAM user `name` with `policy` (an IAM policy document) as its inline policy;
    /// returns its access key id and secret key.
    pub fn iam_user(&self, name: &str, policy: &serde_json::Value) -> (String, String) {
        let out = self.boto(&format!(
            "iam.create_user(UserName='{name}')\niam.put_user_policy(UserName='{name}', PolicyName='{name}', PolicyDocument=json.dumps(json.loads(r'''{policy}''')))\nk = iam.create_access_key(UserName='{name}')['AccessKey']\nprint(json.dumps([k['AccessKeyId'], k['SecretAccessKey']]))"
        ));
        serde_json::from_str(&out).unwrap()
    }

    /// From now on every request must be signed by an IAM user created here and allowed by
    /// its policies. The boto3 helpers act as `admin`, a user allowed everything.
    pub fn enforce_iam(&self) {
        let admin = self.iam_user(
            "admin",
            &serde_json::json!({"Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}),
        );
        let out = self.boto(&format!(
            "import requests\nprint(requests.post('{}/moto-api/reset-auth', data=b'0').text)",
            self.endpoint()
        ));
        assert!(out.contains("\"ok\""), "moto reset-auth: {out}");
        // moto's default keys are refused now.
        let refused = self.boto("try:\n    s3.list_buckets()\n    print('accepted')\nexcept Exception as e:\n    print('refused')");
        assert_eq!(refused.trim(), "refused", "moto does not enforce IAM");
        *self.admin.borrow_mut() = admin;
    }

    /// Runs `f` with the boto3 helpers signing with `keys` (an access key id and secret).
    pub fn acting_as<T>(&self, keys: &(String, String), f: impl FnOnce(&Moto) -> T) -> T {
        let before = self.admin.replace(keys.clone());
        let out = f(self);
        *self.admin.borrow_mut() = before;
        out
    }

    /// Creates `bucket`, with Object Lock (and so versioning) when `locked`.
    pub fn create_bucket(&self, bucket: &str, locked: bool) {
        self.boto(&format!(
            "s3.create_bucket(Bucket='{bucket}', ObjectLockEnabledForBucket={})",
            if locked { "True" } else { "False" }
        ));
    }

    /// An `s3://` location in `bucket` under `prefix` with `extra` query keys.
    pub fn url(&self, bucket: &str, prefix: &str, extra: &str) -> String {
        format!(
            "s3://{bucket}/{prefix}?endpoint={}&region=us-east-1&name=moto&request_timeout_secs=10&max_retries=2&deadline_secs=60{extra}",
            self.endpoint()
        )
    }

    /// Every object version (not delete markers) under `prefix`: (key, version id).
    pub fn versions(&self, bucket: &str, prefix: &str) -> Vec<(String, String)> {
        let out = self.boto(&format!(
            "p = s3.get_paginator('list_object_versions')\nout = []\nfor page in p.paginate(Bucket='{bucket}', Prefix='{prefix}'):\n    for v in page.get('Versions', []):\n        out.append([v['Key'], v['VersionId']])\nprint(json.dumps(out))"
        ));
        serde_json::from_str(&out).unwrap()
    }

    /// What ransomware holding the credentials would do: delete every version of every
    /// object under `prefix`. Returns (deleted, refused) version keys.
    pub fn delete_every_version(&self, bucket: &str, prefix: &str) -> (Vec<String>, Vec<String>) {
        let out = self.boto(&format!(
            r#"p = s3.get_paginator('list_object_versions')
todo = []
for page in p.paginate(Bucket='{bucket}', Prefix='{prefix}'):
    for v in page.get('Versions', []) + page.get('DeleteMarkers', []):
        todo.append((v['Key'], v['VersionId']))
deleted, refused = [], []
for k, v in todo:
    try:
        s3.delete_object(Bucket='{bucket}', Key=k, VersionId=v)
        deleted.append(k)
    except s3.exceptions.ClientError as e:
        refused.append(k)
print(json.dumps([deleted, refused]))"#
        ));
        serde_json::from_str(&out).unwrap()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
