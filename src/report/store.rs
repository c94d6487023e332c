//! Where drill reports are kept: in every destination (`reports/<id>`, the report file's
//! bytes zstd-compressed and sealed like every repository object, the associated data
//! binding the repository id, stored under the blake3 hash of the sealed bytes) and in the
//! local state directory (`<state>/reports/<plan>/<seq>-<report id>.json`, plain signed
//! JSON an auditor can verify without the password).

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::chain::{seq_of_name, Found};
use super::sealed::Kind;
use crate::ids::ObjectId;
use crate::repo::Repository;
use crate::{Error, Result};

/// The folder of report objects in a repository.
pub const PREFIX: &str = "reports/";

/// Drill reports as sealed objects.
pub const KIND: Kind = Kind {
    prefix: PREFIX,
    label: b"lifeboat v1 report\0",
    max: 64 << 20,
};

/// Seals a report file's bytes for `repo`: its object id and stored bytes.
pub fn seal(repo: &Repository, file: &[u8]) -> (ObjectId, Vec<u8>) {
    KIND.seal(repo, file)
}

/// Stores a report file in `repo`'s store.
pub async fn put(repo: &Repository, file: &[u8]) -> Result<ObjectId> {
    KIND.put(repo, file).await
}

/// Opens a stored report object: the report file's bytes.
pub fn open(repo: &Repository, id: &ObjectId, raw: &[u8]) -> Result<Vec<u8>> {
    KIND.open(repo, id, raw)
}

/// Every report object in `repo`'s store, opened and parsed; an object that does not open
/// or parse is kept as a [`Found`] with its problem (verification names it).
pub async fn load_all(repo: &Repository) -> Result<Vec<Found>> {
    load_all_with(repo, &indicatif::ProgressBar::hidden()).await
}

/// [`load_all`], counting the objects on `bar` (its length grows by the objects listed).
pub async fn load_all_with(repo: &Repository, bar: &indicatif::ProgressBar) -> Result<Vec<Found>> {
    Ok(KIND
        .fetch_all(repo, bar)
        .await?
        .into_iter()
        .map(|f| Found {
            source: format!("{} {}", repo.location(), f.key),
            name_seq: None,
            value: match f.raw {
                Err(e) => Err(e.to_string()),
                Ok(raw) => open(repo, &f.id, &raw)
                    .map_err(|e| e.to_string())
                    .and_then(|b| serde_json::from_slice::<Value>(&b).map_err(|e| e.to_string())),
            },
        })
        .collect())
}

/// Orders repository reports as their chains run: plan, then sequence number, then id.
pub fn sort_by_chain(found: &mut [Found]) {
    let key = |f: &Found| {
        let v = f.value.as_ref().ok();
        (
            v.and_then(|v| v.get("plan"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            v.and_then(|v| v.pointer("/chain/seq"))
                .and_then(Value::as_u64)
                .unwrap_or(0),
            v.and_then(|v| v.get("report_id"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        )
    };
    found.sort_by_key(key);
}

/// The local report directory: `reports/` beside the default catalog file (the state
/// directory: `$LIFEBOAT_STATE_DIR`, `$XDG_STATE_HOME/lifeboat`, `~/.local/state/lifeboat`).
pub fn local_dir() -> Result<PathBuf> {
    let cat = crate::catalog::default_location()?;
    Ok(cat
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
        .join("reports"))
}

/// A plan name as a directory name.
pub fn plan_dir(plan: &str) -> String {
    plan.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Writes a report file atomically (temp file, fsync, rename).
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io("create", dir, e))?;
    std::io::Write::write_all(&mut tmp, bytes).map_err(|e| Error::io("write", path, e))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::io("sync", path, e))?;
    tmp.persist(path)
        .map_err(|e| Error::io("rename", path, e.error))?;
    Ok(())
}

/// Every drill report file under `path` (a file, or a directory searched recursively), in
/// file-name order within each directory. Files that are not drill reports (period reports)
/// are left out.
pub fn load_path(path: &Path) -> Result<Vec<Found>> {
    let mut files = Vec::new();
    if path.is_dir() {
        let mut stack = vec![path.to_path_buf()];
        while let Some(d) = stack.pop() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(&d)
                .map_err(|e| Error::io("read", &d, e))?
                .flatten()
                .map(|e| e.path())
                .collect();
            entries.sort();
            for p in entries {
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|e| e == "json") {
                    files.push(p);
                }
            }
        }
    } else if path.exists() {
        files.push(path.to_path_buf());
    } else {
        return Err(Error::Usage(format!(
            "{} does not exist; give a report file, a report directory or --plan",
            path.display()
        )));
    }
    let mut out = Vec::new();
    for p in files {
        let value = std::fs::read(&p).map_err(|e| e.to_string()).and_then(|b| {
            serde_json::from_slice::<Value>(&b).map_err(|e| format!("not valid JSON: {e}"))
        });
        if let Ok(v) = &value {
            if !super::chain::is_drill_report(v) {
                continue;
            }
        }
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        out.push(Found {
            source: p.display().to_string(),
            name_seq: seq_of_name(name),
            value,
        });
    }
    Ok(out)
}
