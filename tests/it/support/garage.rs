//! One single-node Garage S3 server per "region" for integration tests: free 127.0.0.1 ports,
//! a config per INFRA.md in a temp dir, the fixed test key imported and a bucket created.
//! The server is killed when the handle drops; `stop`/`start` and `pause`/`resume`
//! (SIGSTOP/SIGCONT) simulate region outages.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const KEY_ID: &str = "GK0123456789abcdef01234567";
pub const SECRET: &str = "4b1f0a7e9c2d3b5a6f8e0d1c2b3a4f5e6d7c8b9a0f1e2d3c4b5a69788796a5b4";
pub const BUCKET: &str = "backups";

pub fn garage_bin() -> PathBuf {
    if let Ok(p) = std::env::var("GARAGE_BIN") {
        return p.into();
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let cargo_bin = Path::new(&home).join(".cargo/bin/garage");
    if cargo_bin.exists() {
        return cargo_bin;
    }
    "garage".into()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Garage {
    pub region: String,
    pub s3_port: u16,
    dir: tempfile::TempDir,
    config: PathBuf,
    child: Option<Child>,
    /// A `faketime` offset the server runs at (`"+3m"`): a server whose clock is off.
    clock: Option<String>,
}

impl Garage {
    /// Starts a fresh server for `region` with the test key and bucket `backups`.
    pub fn start(region: &str) -> Garage {
        Self::start_with_clock(region, None)
    }

    /// [`Garage::start`], the server's clock moved by `offset` (`faketime`'s relative
    /// syntax, e.g. `"+3m"`): what it dates objects with and judges signatures by.
    pub fn start_with_clock(region: &str, offset: Option<&str>) -> Garage {
        let dir = tempfile::tempdir().unwrap();
        let (s3, rpc, admin) = (free_port(), free_port(), free_port());
        let secret: String = (0..32)
            .map(|_| format!("{:02x}", rand::random::<u8>()))
            .collect();
        let config = dir.path().join("garage.toml");
        std::fs::write(
            &config,
            format!(
                r#"metadata_dir = "{d}/meta"
data_dir = "{d}/data"
db_engine = "sqlite"
metadata_fsync = false
data_fsync = false
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{secret}"
[s3_api]
s3_region = "{region}"
api_bind_addr = "127.0.0.1:{s3}"
root_domain = ".s3.garage.localhost"
[admin]
api_bind_addr = "127.0.0.1:{admin}"
admin_token = "test-admin-token"
"#,
                d = dir.path().display()
            ),
        )
        .unwrap();
        let mut g = Garage {
            region: region.into(),
            s3_port: s3,
            dir,
            config,
            child: None,
            clock: offset.map(str::to_string),
        };
        g.spawn();
        let node = g.cli(&["node", "id", "-q"]);
        let node = node.trim().split('@').next().unwrap().to_string();
        g.cli(&["layout", "assign", "-z", "dc1", "-c", "1G", &node]);
        g.cli(&["layout", "apply", "--version", "1"]);
        g.cli(&["key", "import", "--yes", "-n", "test", KEY_ID, SECRET]);
        g.cli(&["bucket", "create", BUCKET]);
        g.cli(&[
            "bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", "test",
        ]);
        g.wait_s3();
        // As a well-run bucket has: uploads of killed writers are aborted by the server (T02;
        // `healthcheck` warns without such a rule).
        g.set_abort_rule(Some(("", 7)));
        g
    }

    /// Sets the bucket's lifecycle configuration to one enabled rule aborting incomplete
    /// multipart uploads under `prefix` after `days`, or (`None`) removes the configuration.
    pub fn set_abort_rule(&self, rule: Option<(&str, i32)>) {
        use aws_sdk_s3::types::{
            AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, ExpirationStatus,
            LifecycleRule, LifecycleRuleFilter,
        };
        let (endpoint, region) = (self.endpoint(), self.region.clone());
        let rule = rule.map(|(p, d)| (p.to_string(), d));
        // A thread of its own: callers may already be inside a runtime.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                let conf = aws_sdk_s3::config::Builder::new()
                    .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
                    .region(aws_sdk_s3::config::Region::new(region))
                    .endpoint_url(endpoint)
                    .force_path_style(true)
                    .credentials_provider(aws_sdk_s3::config::Credentials::new(
                        KEY_ID, SECRET, None, None, "test",
                    ))
                    .build();
                let client = aws_sdk_s3::Client::from_conf(conf);
                match rule {
                    Some((prefix, days)) => {
                        let rule = LifecycleRule::builder()
                            .id("abort-incomplete-uploads")
                            .status(ExpirationStatus::Enabled)
                            .filter(LifecycleRuleFilter::builder().prefix(prefix).build())
                            .abort_incomplete_multipart_upload(
                                AbortIncompleteMultipartUpload::builder()
                                    .days_after_initiation(days)
                                    .build(),
                            )
                            .build()
                            .unwrap();
                        client
                            .put_bucket_lifecycle_configuration()
                            .bucket(BUCKET)
                            .lifecycle_configuration(
                                BucketLifecycleConfiguration::builder()
                                    .rules(rule)
                                    .build()
                                    .unwrap(),
                            )
                            .send()
                            .await
                            .map(|_| ())
                            .map_err(|e| aws_sdk_s3::error::DisplayErrorContext(e).to_string())
                    }
                    None => client
                        .delete_bucket_lifecycle()
                        .bucket(BUCKET)
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(|e| aws_sdk_s3::error::DisplayErrorContext(e).to_string()),
                }
            })
            .expect("setting the bucket's lifecycle configuration");
        })
        .join()
        .unwrap();
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("server.log")).unwrap();
        let mut cmd = match &self.clock {
            None => Command::new(garage_bin()),
            Some(offset) => {
                let mut c = Command::new("faketime");
                c.args(["-m", "-f", offset]).arg(garage_bin());
                c
            }
        };
        // Its own process group: `faketime` runs the server as its child, so signals go to
        // the group (`signal`), or a killed `faketime` would leave the server running.
        use std::os::unix::process::CommandExt;
        let child = cmd
            .process_group(0)
            .arg("-c")
            .arg(&self.config)
            .arg("server")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("garage (and faketime, for a moved clock) is installed (cargo install garage, or set GARAGE_BIN; apt-get install faketime)");
        self.child = Some(child);
        let t0 = Instant::now();
        loop {
            let ok = Command::new(garage_bin())
                .arg("-c")
                .arg(&self.config)
                .arg("status")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "garage for {} did not start: {}",
                self.region,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the S3 port accepts connections.
    fn wait_s3(&self) {
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.s3_port)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "garage S3 API for {} did not open",
                self.region
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(garage_bin())
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "garage {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Files in the server's data directory (data blocks of stored objects).
    pub fn stored_blocks(&self) -> usize {
        fn walk(p: &Path) -> usize {
            std::fs::read_dir(p)
                .map(|rd| {
                    rd.flatten()
                        .map(|e| {
                            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                                walk(&e.path())
                            } else {
                                1
                            }
                        })
                        .sum()
                })
                .unwrap_or(0)
        }
        walk(&self.dir.path().join("data"))
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// `s3://backups/PREFIX?…` for this region, named after it, with short test timeouts.
    pub fn url(&self, prefix: &str) -> String {
        url_for(&self.endpoint(), &self.region, prefix)
    }

    /// Stops the server (SIGTERM, then SIGKILL); the data stays for `restart`.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(&c, libc::SIGCONT);
            signal(&c, libc::SIGTERM);
            let t0 = Instant::now();
            while c.try_wait().unwrap().is_none() {
                if t0.elapsed() > Duration::from_secs(5) {
                    signal(&c, libc::SIGKILL);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            // The group's other members (the server under `faketime`) go with it.
            signal(&c, libc::SIGKILL);
        }
    }

    /// Starts the stopped server again on the same ports and data.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart after stop");
        self.spawn();
        self.wait_s3();
    }

    /// The server's process id, which is also its process group's (a hook can stop it).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server is running").id()
    }

    pub fn pause(&self) {
        signal(self.child.as_ref().unwrap(), libc::SIGSTOP);
    }

    pub fn resume(&self) {
        signal(self.child.as_ref().unwrap(), libc::SIGCONT);
    }
}

/// Sends `sig` to the server's process group (the server, and `faketime` in front of it).
fn signal(c: &Child, sig: i32) {
    // SAFETY: kill(2) on a process group we created; no memory is involved.
    unsafe { libc::kill(-(c.id() as i32), sig) };
}

impl Drop for Garage {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(&c, libc::SIGCONT);
            signal(&c, libc::SIGKILL);
            let _ = c.wait();
        }
    }
}

/// An `s3://` location for any endpoint (a Garage or a proxy in front of one).
pub fn url_for(endpoint: &str, region: &str, prefix: &str) -> String {
    format!(
        "s3://{BUCKET}/{prefix}?endpoint={endpoint}&region={region}&name={region}&request_timeout_secs=3&max_retries=4&connect_timeout_secs=2&deadline_secs=60"
    )
}

/// Writes an AWS-format credentials file with the test key (or another secret).
pub fn credentials_file(dir: &Path, secret: &str) -> PathBuf {
    let p = dir.join(format!("credentials-{}", rand::random::<u32>()));
    std::fs::write(
        &p,
        format!("[default]\naws_access_key_id = {KEY_ID}\naws_secret_access_key = {secret}\n"),
    )
    .unwrap();
    p
}
