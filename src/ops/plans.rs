//! Plan files as the use cases find them: one file, or every `*.toml` in a directory.

use std::path::{Path, PathBuf};

use crate::plan::{self, Plan};
use crate::{Error, Result};

/// Loads one plan file or every `*.toml` in a directory (sorted, so runs are repeatable).
pub fn load_plans(path: &Path) -> Result<Vec<(PathBuf, Plan)>> {
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| Error::io("read", path, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        v.sort();
        v
    } else {
        vec![path.to_path_buf()]
    };
    if files.is_empty() {
        return Err(Error::Usage(format!(
            "no plan files (*.toml) in {}; put plans there or pass --plan FILE",
            path.display()
        )));
    }
    files
        .into_iter()
        .map(|f| plan::load(&f).map(|p| (f, p)).map_err(Error::from))
        .collect()
}
