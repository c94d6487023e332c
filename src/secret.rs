//! Where a secret comes from: a file, an environment variable, a systemd credential
//! (`$CREDENTIALS_DIRECTORY/<name>`), or a command that prints it (a KMS or vault client:
//! [`run_command`]). Plans name the source, never the secret itself, so a password never
//! appears in a plan file, in argv, or in a log line.
//!
//! Below both `plan` (repository and scratch-server passwords) and
//! `source` (database passwords); it knows neither.
//!
//! It also keeps secrets out of panic messages (T31): every secret read here or through
//! [`hold`] is remembered, and [`print_panic`] (the panic hook `cli` installs) prints a
//! panic's message with those values, and the values of the environment's secret variables,
//! replaced by `<redacted>`.

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

/// A validated secret source from a plan file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSpec {
    File(PathBuf),
    Env(String),
    Credential(String),
    /// A shell command whose first line of output is the secret (`aws kms decrypt …`).
    Command(String),
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
            SecretSpec::Command(c) => format!("command `{c}`"),
        }
    }

    /// Whether a failure to read it is the environment's (a KMS that cannot be reached, a
    /// command that fails: exit 1) rather than a mistake in the plan or its files (exit 2).
    pub fn fails_at_run_time(&self) -> bool {
        matches!(self, SecretSpec::Command(_))
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
            SecretSpec::Command(c) => run_command(c, &self.describe()),
        }?;
        hold(&value);
        Ok(value)
    }
}

/// How long a secret command may take when `LIFEBOAT_SECRET_COMMAND_TIMEOUT` does not say.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Prefixes of the variables a KMS or vault client authenticates with. A secret command
/// keeps them (it needs them to reach the KMS); every other secret lifeboat holds is
/// scrubbed from its environment as from any child's (`crate::sys::process::isolate`).
pub const COMMAND_KEEPS: &[&str] = &["AWS_", "VAULT_", "AZURE_", "GOOGLE_", "CLOUDSDK_"];

/// What a secret command printed is kept only up to this size (the first line is used).
const COMMAND_OUTPUT_MAX: usize = 64 << 10;

/// Secrets already fetched by command in this process, by command: a KMS is asked once.
static FETCHED: Mutex<Option<HashMap<String, Zeroizing<String>>>> = Mutex::new(None);

/// The time a secret command may take: `LIFEBOAT_SECRET_COMMAND_TIMEOUT` (`30s`, `2m`), else
/// [`COMMAND_TIMEOUT`].
pub fn command_timeout() -> Result<Duration, String> {
    match std::env::var("LIFEBOAT_SECRET_COMMAND_TIMEOUT") {
        Err(_) => Ok(COMMAND_TIMEOUT),
        Ok(v) => match humantime::parse_duration(v.trim()) {
            Ok(d) if !d.is_zero() => Ok(d),
            _ => Err(format!(
                "LIFEBOAT_SECRET_COMMAND_TIMEOUT={v} is not a duration; give one such as 30s or 2m"
            )),
        },
    }
}

/// Runs `cmd` through `sh -c` and returns the first line of its standard output: the way a
/// secret is fetched from a KMS or vault (`aws kms decrypt …`, `systemd-creds decrypt …`,
/// `vault kv get -field=password …`). `what` names where the command came from, for errors.
///
/// The child's stderr is the user's (a KMS client's own error reaches them); its stdin is
/// empty; it runs in its own process group, dies with lifeboat, and its environment has lost
/// lifeboat's secrets except the KMS credentials of [`COMMAND_KEEPS`]. A non-zero exit, an
/// empty first line, or no end within [`command_timeout`] (the group is then killed) is an
/// error that names `what`, never what the command printed. The value is [`hold`]'s; a
/// command that succeeded is not run again by this process.
pub fn run_command(cmd: &str, what: &str) -> Result<Zeroizing<String>, SecretError> {
    if let Some(v) = FETCHED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .and_then(|m| m.get(cmd))
    {
        return Ok(v.clone());
    }
    let timeout = command_timeout().map_err(|e| SecretError {
        what: what.to_string(),
        problem: e,
        fix: "fix or unset the variable".into(),
    })?;
    let value = run_command_within(cmd, what, timeout)?;
    hold(&value);
    FETCHED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashMap::new)
        .insert(cmd.to_string(), value.clone());
    Ok(value)
}

fn run_command_within(
    cmd: &str,
    what: &str,
    timeout: Duration,
) -> Result<Zeroizing<String>, SecretError> {
    let err = |problem: String, fix: &str| SecretError {
        what: what.to_string(),
        problem,
        fix: fix.into(),
    };
    let mut c = std::process::Command::new("sh");
    c.arg("-c").arg(cmd);
    // Set on the command itself, so the scrubbing below keeps them (and only them).
    for (k, v) in std::env::vars_os() {
        let name = k.to_string_lossy().to_ascii_uppercase();
        if COMMAND_KEEPS.iter().any(|p| name.starts_with(p)) {
            c.env(k, v);
        }
    }
    crate::sys::process::isolate(&mut c);
    c.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit());
    let mut child = c.spawn().map_err(|e| {
        err(
            format!("cannot start sh: {e}"),
            "install a POSIX shell as sh on PATH",
        )
    })?;
    let mut out = child.stdout.take().expect("stdout piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Zeroizing::new(Vec::new());
        let mut chunk = Zeroizing::new([0u8; 4096]);
        loop {
            match out.read(&mut chunk[..]) {
                Ok(0) => break,
                Ok(n) if buf.len() < COMMAND_OUTPUT_MAX => buf.extend_from_slice(&chunk[..n]),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = tx.send(buf);
    });
    let deadline = Instant::now() + timeout;
    let kill = |child: &mut std::process::Child| {
        // SAFETY: kill(2) on the process group created for this child (not yet reaped).
        unsafe {
            libc::kill(-(child.id() as i32), libc::SIGKILL);
        }
        let _ = child.kill();
        let _ = child.wait();
    };
    let too_slow = || {
        err(
            format!(
                "did not finish within {} and was killed",
                humantime::format_duration(timeout)
            ),
            "check that the command runs on its own (and that its KMS answers); LIFEBOAT_SECRET_COMMAND_TIMEOUT gives it longer",
        )
    };
    // Its output ends when it (and whatever it started) closes stdout…
    let output = match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(b) => b,
        Err(_) => {
            kill(&mut child);
            return Err(too_slow());
        }
    };
    // …and it must exit, successfully, in the same time.
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() >= deadline => {
                kill(&mut child);
                return Err(too_slow());
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                kill(&mut child);
                return Err(err(format!("cannot wait for it: {e}"), "try again"));
            }
        }
    };
    if !status.success() {
        use std::os::unix::process::ExitStatusExt;
        let how = match (status.code(), status.signal()) {
            (Some(c), _) => format!("exited with status {c}"),
            (None, Some(s)) => format!("was killed by signal {s}"),
            _ => "failed".into(),
        };
        return Err(err(
            format!("{how} (its own messages, if any, are above)"),
            "run the command by hand as the same user, with the same environment, and fix what it says",
        ));
    }
    let text = std::str::from_utf8(&output).map_err(|_| {
        err(
            "printed something that is not UTF-8 text".into(),
            "make the command print the password as text (e.g. pipe binary output through base64 -d only once)",
        )
    })?;
    let first = text.lines().next().unwrap_or("");
    if first.is_empty() {
        return Err(err(
            "printed nothing on its first line".into(),
            "make the command print the password on the first line of its standard output",
        ));
    }
    Ok(Zeroizing::new(first.to_string()))
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
    fn command_first_line_and_its_failures() {
        let t = Duration::from_secs(5);
        let ok = run_command_within("printf 'kms-pw-1\\nsecond\\n'", "c", t).unwrap();
        assert_eq!(&*ok, "kms-pw-1");
        let e = run_command_within("echo leaked-out; exit 3", "command `x`", t).unwrap_err();
        let s = format!("{e}; {}", e.fix);
        assert!(s.contains("command `x`: exited with status 3"), "{s}");
        assert!(!s.contains("leaked-out"), "{s}");
        let e = run_command_within("echo; echo second", "c", t).unwrap_err();
        assert!(e.to_string().contains("printed nothing"), "{e}");
        let start = Instant::now();
        let e = run_command_within(
            "sleep 30 & echo partial; sleep 30",
            "c",
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(e.to_string().contains("did not finish within"), "{e}");
        assert!(!e.to_string().contains("partial"), "{e}");
        assert!(start.elapsed() < Duration::from_secs(5));
        // What a command printed is held: a panic's message never shows it.
        let v = run_command("echo kms-Held-Value-93", "c").unwrap();
        assert_eq!(redact(&format!("got {}", &*v)), "got <redacted>");
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
