//! An s3s-fs server (S3 over a directory; a second, independent S3 implementation) for the
//! store conformance suite: a free 127.0.0.1 port, a temp directory holding bucket `backups`,
//! the fixed test key; killed on drop. Install: `cargo install s3s-fs@0.14.1 --features
//! binary --locked` (scripts/test does).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::garage::{free_port, BUCKET, KEY_ID, SECRET};

pub struct S3sFs {
    pub port: u16,
    _dir: tempfile::TempDir,
    child: Child,
}

fn bin() -> PathBuf {
    if let Ok(p) = std::env::var("S3S_FS_BIN") {
        return p.into();
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let p = PathBuf::from(home).join(".cargo/bin/s3s-fs");
    if p.exists() {
        p
    } else {
        "s3s-fs".into()
    }
}

impl S3sFs {
    pub fn start() -> S3sFs {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(BUCKET)).unwrap();
        let port = free_port();
        let child = Command::new(bin())
            .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--access-key", KEY_ID, "--secret-key", SECRET])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("s3s-fs is installed (cargo install s3s-fs@0.14.1 --features binary --locked, or set S3S_FS_BIN)");
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "s3s-fs did not open its port"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        S3sFs {
            port,
            _dir: dir,
            child,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for S3sFs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
