//! Restore-test definitions (`restore-tests/*.toml`, referenced from plans): what a drill
//! checks on the restored data. Parsed into a validated [`RestoreTests`]; every error names
//! the file, the line, the key and a fix. The file format is documented in
//! `docs/restore-tests.md`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {key}: {problem}; fix: {fix}")]
pub struct RestoreTestsError {
    pub file: PathBuf,
    pub line: usize,
    pub key: String,
    pub problem: String,
    pub fix: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    description: Option<String>,
    row_counts: Option<RowCountsConfig>,
    canary: Option<CanaryConfig>,
    amcheck: Option<AmcheckConfig>,
    #[serde(default)]
    sql: Vec<SqlConfig>,
    #[serde(default)]
    file: Vec<FileConfig>,
    #[serde(default)]
    command: Vec<CommandConfig>,
    #[serde(default)]
    file_refs: Vec<FileRefsConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRefsConfig {
    name: String,
    query: String,
    member: Option<String>,
    hash: Option<String>,
    job: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RowCountsConfig {
    #[serde(default = "yes")]
    enabled: bool,
    tolerance_percent: Option<f64>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CanaryConfig {
    table: String,
    column: String,
    max_lag: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AmcheckConfig {
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    heapallindexed: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlConfig {
    name: String,
    query: String,
    expect: ExpectConfig,
    job: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectConfig {
    rows_min: Option<u64>,
    rows_max: Option<u64>,
    min: Option<f64>,
    max: Option<f64>,
    equals: Option<String>,
    max_age: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    path: String,
    #[serde(default = "yes")]
    exists: bool,
    min_files: Option<u64>,
    max_files: Option<u64>,
    min_size: Option<u64>,
    blake3: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandConfig {
    name: String,
    run: Vec<String>,
    timeout_secs: Option<u64>,
}

/// A validated set of restore tests.
#[derive(Debug, Clone, PartialEq)]
pub struct RestoreTests {
    pub file: PathBuf,
    pub description: Option<String>,
    /// Compare per-table row counts with those captured at backup time (on by default).
    pub row_counts: Option<RowCountsCheck>,
    pub canary: Option<Canary>,
    pub amcheck: Option<Amcheck>,
    pub sql: Vec<SqlCheck>,
    pub files: Vec<FileCheck>,
    pub commands: Vec<CommandCheck>,
    /// Cross-member checks of a recovery-point set's drill: rows naming files.
    pub file_refs: Vec<FileRefsCheck>,
}

/// `[[file_refs]]`: a SQL query on the set's restored database whose rows name files (first
/// column, relative to a member's restored tree) that must exist there, with the hash in
/// the second column when there is one.
#[derive(Debug, Clone, PartialEq)]
pub struct FileRefsCheck {
    pub name: String,
    pub query: String,
    /// The set member (a directory or volume job) the paths are in; may be left out when
    /// the set has one such member.
    pub member: Option<String>,
    pub hash: HashAlgo,
    /// The set's database member the query runs in; may be left out when the set has one
    /// database.
    pub job: Option<String>,
}

/// The algorithm of a recorded file hash (hex).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlgo {
    Sha256,
    Blake3,
}

impl HashAlgo {
    pub fn name(self) -> &'static str {
        match self {
            HashAlgo::Sha256 => "sha256",
            HashAlgo::Blake3 => "blake3",
        }
    }

    /// The file's hash, lowercase hex.
    pub fn file_hex(self, path: &Path) -> std::io::Result<String> {
        let mut f = std::fs::File::open(path)?;
        Ok(match self {
            HashAlgo::Sha256 => {
                use std::io::Read;
                let mut h = ring::digest::Context::new(&ring::digest::SHA256);
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = f.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
                hex::encode(h.finish().as_ref())
            }
            HashAlgo::Blake3 => {
                let mut h = blake3::Hasher::new();
                std::io::copy(&mut f, &mut h)?;
                h.finalize().to_hex().to_string()
            }
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RowCountsCheck {
    /// Allowed difference; `None` means exact for exact counts and 10 % for estimates.
    pub tolerance_percent: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Canary {
    pub table: String,
    pub column: String,
    /// The newest value must be no older than the snapshot's consistency time minus this.
    pub max_lag: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Amcheck {
    pub heapallindexed: bool,
}

/// How old a timestamp may be: a fixed duration, or the plan's RPO objective.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaxAge {
    Fixed(Duration),
    Rpo,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Expect {
    pub rows_min: Option<u64>,
    pub rows_max: Option<u64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub equals: Option<String>,
    pub max_age: Option<MaxAge>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SqlCheck {
    pub name: String,
    pub query: String,
    pub expect: Expect,
    /// In a set's drill: the database member the query runs in; may be left out when the
    /// set has one database.
    pub job: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FileCheck {
    /// Relative to the restored tree's root.
    pub path: PathBuf,
    pub exists: bool,
    pub min_files: Option<u64>,
    pub max_files: Option<u64>,
    pub min_size: Option<u64>,
    pub blake3: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CommandCheck {
    pub name: String,
    pub run: Vec<String>,
    pub timeout: Duration,
}

impl RestoreTests {
    /// Only the built-in checks (row counts), for a plan that names no restore-test file.
    pub fn builtin() -> Self {
        RestoreTests {
            file: PathBuf::from("<built-in>"),
            description: None,
            row_counts: Some(RowCountsCheck {
                tolerance_percent: None,
            }),
            canary: None,
            amcheck: None,
            sql: Vec::new(),
            files: Vec::new(),
            commands: Vec::new(),
            file_refs: Vec::new(),
        }
    }

    pub fn load(path: &Path) -> Result<Self, RestoreTestsError> {
        let text = std::fs::read_to_string(path).map_err(|e| RestoreTestsError {
            file: path.into(),
            line: 0,
            key: "(file)".into(),
            problem: format!("cannot read it: {e}"),
            fix: "check the path in the plan's drill.restore_tests list".into(),
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, RestoreTestsError> {
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let find_line = |needle: &str| text.find(needle).map(line_of).unwrap_or(0);
        let err = |line: usize, key: &str, problem: String, fix: &str| RestoreTestsError {
            file: path.into(),
            line,
            key: key.into(),
            problem,
            fix: fix.into(),
        };
        let c: Config = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(s.start)).unwrap_or(0);
            let msg = e.message().to_string();
            let key = msg.split('`').nth(1).unwrap_or("(syntax)").to_string();
            err(
                line,
                &key,
                msg,
                "see docs/restore-tests.md for the keys each section accepts",
            )
        })?;
        let duration = |s: &str, key: &str| -> Result<Duration, RestoreTestsError> {
            humantime::parse_duration(s).map_err(|e| {
                err(
                    find_line(key),
                    key,
                    format!("{s:?} is not a duration ({e})"),
                    "write it like \"30m\", \"6h\" or \"2d\"",
                )
            })
        };
        let mut sql = Vec::new();
        for s in c.sql {
            let e = s.expect;
            let max_age = match e.max_age.as_deref() {
                None => None,
                Some("rpo") => Some(MaxAge::Rpo),
                Some(d) => Some(MaxAge::Fixed(duration(d, "max_age")?)),
            };
            let expect = Expect {
                rows_min: e.rows_min,
                rows_max: e.rows_max,
                min: e.min,
                max: e.max,
                equals: e.equals,
                max_age,
            };
            if expect == Expect::default() {
                return Err(err(
                    find_line(&s.name),
                    "expect",
                    format!("check {:?} expects nothing, so it could never fail", s.name),
                    "give at least one of rows_min, rows_max, min, max, equals, max_age",
                ));
            }
            if s.query.trim().is_empty() {
                return Err(err(
                    find_line(&s.name),
                    "query",
                    format!("check {:?} has an empty query", s.name),
                    "write the SQL to run",
                ));
            }
            sql.push(SqlCheck {
                name: s.name,
                query: s.query,
                expect,
                job: s.job,
            });
        }
        let mut files = Vec::new();
        for f in c.file {
            let p = PathBuf::from(&f.path);
            if p.is_absolute()
                || p.components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                return Err(err(
                    find_line(&f.path),
                    "path",
                    format!(
                        "{:?} must be relative to the restored tree and stay inside it",
                        f.path
                    ),
                    "write it like \"data/etc/passwd\"",
                ));
            }
            if let Some(h) = &f.blake3 {
                if h.len() != 64 || !h.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(err(
                        find_line(h),
                        "blake3",
                        format!("{h:?} is not a 64-character hex blake3 hash"),
                        "compute it with `b3sum FILE`",
                    ));
                }
            }
            files.push(FileCheck {
                path: p,
                exists: f.exists,
                min_files: f.min_files,
                max_files: f.max_files,
                min_size: f.min_size,
                blake3: f.blake3.map(|h| h.to_ascii_lowercase()),
            });
        }
        let mut commands = Vec::new();
        for cmd in c.command {
            if cmd.run.is_empty() {
                return Err(err(
                    find_line(&cmd.name),
                    "run",
                    format!("command check {:?} has nothing to run", cmd.name),
                    "give the program and its arguments, e.g. run = [\"./smoke-test.sh\"]",
                ));
            }
            commands.push(CommandCheck {
                name: cmd.name,
                run: cmd.run,
                timeout: Duration::from_secs(cmd.timeout_secs.unwrap_or(300)),
            });
        }
        let mut file_refs = Vec::new();
        for f in c.file_refs {
            if f.query.trim().is_empty() {
                return Err(err(
                    find_line(&f.name),
                    "query",
                    format!("file_refs check {:?} has an empty query", f.name),
                    "write a query whose first column is a file path (and second, optionally, its recorded hash)",
                ));
            }
            let hash = match f.hash.as_deref() {
                None | Some("sha256") => HashAlgo::Sha256,
                Some("blake3") => HashAlgo::Blake3,
                Some(other) => return Err(err(
                    find_line(other),
                    "hash",
                    format!("{other:?} is not a hash lifeboat computes"),
                    "use \"sha256\" or \"blake3\" (the hex digest in the query's second column)",
                )),
            };
            file_refs.push(FileRefsCheck {
                name: f.name,
                query: f.query,
                member: f.member,
                hash,
                job: f.job,
            });
        }
        let canary = match c.canary {
            None => None,
            Some(k) => Some(Canary {
                table: k.table,
                column: k.column,
                max_lag: match k.max_lag.as_deref() {
                    None => Duration::from_secs(300),
                    Some(d) => duration(d, "max_lag")?,
                },
            }),
        };
        Ok(RestoreTests {
            file: path.into(),
            description: c.description,
            row_counts: match c.row_counts {
                None => Some(RowCountsCheck {
                    tolerance_percent: None,
                }),
                Some(r) if r.enabled => Some(RowCountsCheck {
                    tolerance_percent: r.tolerance_percent,
                }),
                Some(_) => None,
            },
            canary,
            amcheck: c.amcheck.filter(|a| a.enabled).map(|a| Amcheck {
                heapallindexed: a.heapallindexed,
            }),
            sql,
            files,
            commands,
            file_refs,
        })
    }

    /// Merges several files into one set (a plan may list several).
    pub fn merge(sets: Vec<RestoreTests>) -> RestoreTests {
        let mut out = RestoreTests::builtin();
        if let Some(first) = sets.first() {
            out.file = first.file.clone();
        }
        for s in sets {
            if s.row_counts.is_none() {
                out.row_counts = None;
            }
            out.canary = s.canary.or(out.canary);
            out.amcheck = s.amcheck.or(out.amcheck);
            out.sql.extend(s.sql);
            out.files.extend(s.files);
            out.commands.extend(s.commands);
            out.file_refs.extend(s.file_refs);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind_and_reports_lines() {
        let t = RestoreTests::parse(
            Path::new("x.toml"),
            r#"
description = "d"
[row_counts]
tolerance_percent = 1.5
[canary]
table = "public.canary"
column = "written_at"
max_lag = "10m"
[amcheck]
heapallindexed = true
[[sql]]
name = "n"
query = "SELECT 1"
expect = { min = 1, max_age = "rpo" }
[[file]]
path = "data/x"
min_files = 3
[[command]]
name = "smoke"
run = ["true"]
"#,
        )
        .unwrap();
        assert_eq!(t.row_counts.unwrap().tolerance_percent, Some(1.5));
        assert_eq!(t.canary.unwrap().max_lag, Duration::from_secs(600));
        assert!(t.amcheck.unwrap().heapallindexed);
        assert_eq!(t.sql[0].expect.max_age, Some(MaxAge::Rpo));
        assert_eq!(t.files[0].min_files, Some(3));
        assert_eq!(t.commands[0].timeout, Duration::from_secs(300));

        let e = RestoreTests::parse(
            Path::new("x.toml"),
            "\n\n[[sql]]\nname = \"a\"\nquery = \"SELECT 1\"\nexpect = { bogus = 1 }\n",
        )
        .unwrap_err();
        assert_eq!(e.line, 6, "{e}");
        assert!(
            e.to_string().contains("x.toml:6") && e.to_string().contains("bogus"),
            "{e}"
        );
        let e = RestoreTests::parse(
            Path::new("x.toml"),
            "[[sql]]\nname = \"a\"\nquery = \"SELECT 1\"\nexpect = {}\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("could never fail"), "{e}");
        let e =
            RestoreTests::parse(Path::new("x.toml"), "[[file]]\npath = \"../etc\"\n").unwrap_err();
        assert_eq!(e.key, "path");
    }
}
