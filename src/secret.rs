//! Where a secret comes from: a file, an environment variable, or a systemd credential
//! (`$CREDENTIALS_DIRECTORY/<name>`). Plans name the source, never the secret itself, so a
//! password never appears in a plan file, in argv, or in a log line.
//!
//! Below both `plan` (repository and scratch-server passwords) and
//! `source` (database passwords); it knows neither.

use std::path::PathBuf;

use zeroize::Zeroizing;

/// A validated secret source from a plan file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSpec {
    File(PathBuf),
    Env(String),
    Credential(String),
}

/// A secret that could not be read: names the source and what to do about it.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {problem}")]
pub struct SecretError {
    pub what: String,
    pub problem: String,
    pub fix: String,
}

impl SecretSpec {
    /// A plain description safe to print (it names the source, never the value).
    pub fn describe(&self) -> String {
        match self {
            SecretSpec::File(p) => format!("file {}", p.display()),
            SecretSpec::Env(v) => format!("environment variable {v}"),
            SecretSpec::Credential(c) => format!("systemd credential {c}"),
        }
    }

    /// Reads the secret: the first line of a file, or the whole variable.
    pub fn read(&self) -> Result<Zeroizing<String>, SecretError> {
        let err = |problem: String, fix: &str| SecretError {
            what: self.describe(),
            problem,
            fix: fix.into(),
        };
        let from_file = |p: &std::path::Path| -> Result<Zeroizing<String>, SecretError> {
            let raw = Zeroizing::new(std::fs::read_to_string(p).map_err(|e| {
                let problem = match self {
                    // The description already names the file.
                    SecretSpec::File(_) => format!("cannot be read: {e}"),
                    _ => format!("cannot read {}: {e}", p.display()),
                };
                err(
                    problem,
                    "create the file (mode 0600) holding the password on its first line, or fix the path in the plan",
                )
            })?);
            warn_if_shared(p);
            let first = raw.lines().next().unwrap_or("");
            if first.is_empty() {
                return Err(err(
                    "the first line is empty".into(),
                    "write the password on the first line of the file",
                ));
            }
            Ok(Zeroizing::new(first.to_string()))
        };
        match self {
            SecretSpec::File(p) => from_file(p),
            SecretSpec::Env(v) => match std::env::var(v) {
                Ok(s) if !s.is_empty() => Ok(Zeroizing::new(s)),
                Ok(_) => Err(err(
                    "is empty".into(),
                    "set it to the password before running lifeboat",
                )),
                Err(_) => Err(err(
                    "is not set".into(),
                    "export it in the service environment (or use password_file)",
                )),
            },
            SecretSpec::Credential(name) => {
                let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
                    err(
                        "CREDENTIALS_DIRECTORY is not set (not running under systemd with credentials)".into(),
                        "add `LoadCredential=NAME:/path` (or SetCredentialEncrypted=) to the unit, or use password_file when running by hand",
                    )
                })?;
                from_file(&PathBuf::from(dir).join(name))
            }
        }
    }
}

fn warn_if_shared(p: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(p) {
        if m.permissions().mode() & 0o077 != 0 {
            tracing::warn!(file = %p.display(), "secret file is readable by group or others; chmod 600 it");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_first_line_and_credential_dir() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("pw");
        std::fs::write(&f, "s3cret\nignored\n").unwrap();
        assert_eq!(&*SecretSpec::File(f).read().unwrap(), "s3cret");
        let missing = SecretSpec::File(d.path().join("nope")).read().unwrap_err();
        assert!(
            missing.to_string().contains("nope: cannot be read"),
            "{missing}"
        );
        let e = SecretSpec::Env("LIFEBOAT_TEST_SURELY_UNSET_VAR".into())
            .read()
            .unwrap_err();
        assert!(
            e.to_string().contains("LIFEBOAT_TEST_SURELY_UNSET_VAR"),
            "{e}"
        );
    }
}
