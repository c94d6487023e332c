//! Where a secret comes from: a file, an environment variable, or a systemd credential
//! (`$CREDENTIALS_DIRECTORY/<name>`). Plans name the source, never the secret itself, so a
//! password never appears in a plan file, in argv, or in a log line.
//!
//! Below both `plan` (repository and scratch-server passwords) and
//! `source` (database passwords); it knows neither.
//!
//! It also keeps secrets out of panic messages (T31): every secret read here or through
//! [`hold`] is remembered, and [`print_panic`] (the panic hook `cli` installs) prints a
//! panic's message with those values, and the values of the environment's secret variables,
//! replaced by `<redacted>`.

use std::path::PathBuf;
use std::sync::Mutex;

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
        let value = match self {
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
        }?;
        hold(&value);
        Ok(value)
    }
}

/// The secret values this process read (see [`hold`]).
static HELD: Mutex<Vec<Zeroizing<String>>> = Mutex::new(Vec::new());

/// Remembers a secret value this process holds (a password read from a file, the
/// environment or a prompt), so that [`redact`] hides it. Values shorter than 3 bytes are
/// not worth hiding (and would hide random text).
pub fn hold(value: &str) {
    if value.len() < 3 {
        return;
    }
    let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    if !held.iter().any(|s| s.as_str() == value) {
        held.push(Zeroizing::new(value.to_string()));
    }
}

/// Every secret value this process holds: those [`hold`] was given, the values of the
/// environment's secret variables (`crate::sys::process::is_secret_var`: the repository
/// password, S3 keys, `PGPASSWORD`, a catalog URL, …) and the password of every URL in them,
/// as written and percent-decoded. Longest first.
pub fn held() -> Vec<Zeroizing<String>> {
    let mut out: Vec<Zeroizing<String>> = HELD
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .cloned()
        .collect();
    for (k, v) in std::env::vars_os() {
        if !crate::sys::process::is_secret_var(&k, &v) {
            continue;
        }
        let v = Zeroizing::new(v.to_string_lossy().into_owned());
        for word in v.split_whitespace() {
            let Some((_, rest)) = word.split_once("://") else {
                continue;
            };
            let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
            if let Some((userinfo, _)) = authority.rsplit_once('@') {
                if let Some((_, pw)) = userinfo.split_once(':') {
                    out.push(Zeroizing::new(pw.to_string()));
                    out.push(percent_decoded(pw));
                }
            }
        }
        out.push(v);
    }
    out.retain(|s| s.len() >= 3);
    out.sort_by(|a, b| {
        b.len()
            .cmp(&a.len())
            .then_with(|| a.as_str().cmp(b.as_str()))
    });
    out.dedup_by(|a, b| a.as_str() == b.as_str());
    out
}

/// `%XX` escapes decoded (a URL's password as the server gets it).
fn percent_decoded(s: &str) -> Zeroizing<String> {
    let b = s.as_bytes();
    let mut out = Zeroizing::new(Vec::with_capacity(b.len()));
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).and_then(|&c| hex(c)),
            b.get(i + 2).and_then(|&c| hex(c)),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    Zeroizing::new(String::from_utf8_lossy(&out).into_owned())
}

/// `text` with every held secret ([`held`]) replaced by `<redacted>`: as written, and as
/// `{:?}` escapes it once, twice or three times (a panic message often quotes a value
/// through `Debug`, and a panic that reports another panic quotes that message again).
pub fn redact(text: &str) -> String {
    let mut out = text.to_string();
    for s in held() {
        let mut form = s;
        for _ in 0..4 {
            out = out.replace(form.as_str(), "<redacted>");
            let escaped = Zeroizing::new(form.escape_debug().to_string());
            if *escaped == *form {
                break;
            }
            form = escaped;
        }
    }
    out
}

/// A panic's message (its payload when that is a string).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("Box<dyn Any>")
}

/// The panic hook's report, as std's default hook words it (thread, place, message, and a
/// backtrace when `RUST_BACKTRACE` asks for one) but with the message [`redact`]ed.
pub fn print_panic(info: &std::panic::PanicHookInfo<'_>) {
    use std::io::Write;
    let thread = std::thread::current();
    let name = thread.name().unwrap_or("<unnamed>");
    let place = info
        .location()
        .map(|l| format!(" at {}:{}:{}", l.file(), l.line(), l.column()))
        .unwrap_or_default();
    let msg = redact(panic_message(info.payload()));
    let bt = std::backtrace::Backtrace::capture();
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "\nthread '{name}' panicked{place}:\n{msg}");
    match bt.status() {
        std::backtrace::BacktraceStatus::Captured => {
            let _ = writeln!(err, "stack backtrace:\n{bt}");
        }
        _ => {
            let _ = writeln!(
                err,
                "note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace"
            );
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

    #[test]
    fn what_is_read_is_redacted_as_written_and_escaped() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("pw");
        std::fs::write(&f, "db\"pass\\word-7Q\n").unwrap();
        let pw = SecretSpec::File(f).read().unwrap();
        let plain = format!("connect failed with {}", &*pw);
        let debug = format!("connect failed: {:?}", Some(pw.as_str()));
        for text in [plain, debug] {
            let r = redact(&text);
            assert!(r.contains("<redacted>") && !r.contains("pass"), "{r}");
        }
        hold("x");
        assert_eq!(redact("x marks"), "x marks", "too short to hide");
    }
}
