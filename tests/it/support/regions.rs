//! Helpers for the multi-region tests: run the `lifeboat` binary with the test S3 key and
//! several `--repo` locations, and make test data that fills packs.

use super::garage;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const PASSWORD: &str = "correct horse battery staple";

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// A `lifeboat` command with the test password and the test S3 key in its environment.
pub fn lifeboat(work: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lifeboat"));
    let pw = work.join("password");
    if !pw.exists() {
        // 0600, as a password file should be (lifeboat warns about any other mode).
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&pw)
            .and_then(|mut f| f.write_all(PASSWORD.as_bytes()))
            .unwrap();
    }
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", work)
        .env("LIFEBOAT_PASSWORD_FILE", &pw)
        .env("AWS_ACCESS_KEY_ID", garage::KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", garage::SECRET)
        .env("AWS_EC2_METADATA_DISABLED", "true");
    c
}

pub fn run(mut c: Command) -> Run {
    let out = c.output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `--repo URL` for each location.
pub fn repos(c: &mut Command, urls: &[String]) {
    for u in urls {
        c.arg("--repo").arg(u);
    }
}

/// A tree of files: some incompressible (so packs fill up), some text, a symlink, nested dirs.
pub fn make_s3_tree(root: &Path, random_mib: usize, seed: u64) -> PathBuf {
    use rand::{RngCore, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let src = root.join("src");
    std::fs::create_dir_all(src.join("a/b")).unwrap();
    for i in 0..random_mib {
        let mut buf = vec![0u8; 1 << 20];
        rng.fill_bytes(&mut buf);
        std::fs::write(src.join(format!("a/blob{i}.bin")), &buf).unwrap();
    }
    for i in 0..20 {
        std::fs::write(
            src.join(format!("a/b/text{i}.txt")),
            format!("line {i}\n").repeat(500 + i * 37),
        )
        .unwrap();
    }
    std::os::unix::fs::symlink("a/b/text1.txt", src.join("link")).unwrap();
    src
}
