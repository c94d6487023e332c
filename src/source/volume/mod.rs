//! Volume sources: a file system or block device captured through a snapshot so the backup
//! sees one consistent moment, then the snapshot is removed — also on failure and Ctrl-C,
//! by a drop guard.
//!
//! - [`btrfs`]: read-only subvolume snapshot, backed up as a directory tree.
//! - [`block`]: a block device or image file as one stream (restored sparse).
//! - [`lvm`]: `lvcreate --snapshot`, the snapshot device backed up as a block stream.
//! - [`zfs`]: `zfs snapshot`, backed up as a tree from `<mountpoint>/.zfs/snapshot/<name>`.
//!
//! LVM and ZFS cannot be exercised on the project's test machines (no device-mapper
//! snapshot target, no ZFS module); their code paths are the tools' documented commands.

pub mod block;
pub mod btrfs;
pub mod lvm;
pub mod zfs;

use std::process::{Command, Stdio};

use crate::sys::process::ChildProc;
use crate::{Error, Result};

/// Prefix of every temporary snapshot lifeboat creates; the pid after it lets a later run
/// recognise (and remove) snapshots left by a run that was killed.
pub const SNAPSHOT_PREFIX: &str = "lifeboat-snap-";

/// A fresh snapshot name: `lifeboat-snap-<pid>-<random>`.
pub fn snapshot_name() -> String {
    format!(
        "{SNAPSHOT_PREFIX}{}-{}",
        std::process::id(),
        hex::encode(rand::random::<[u8; 4]>())
    )
}

/// The pid recorded in a snapshot name, when the name is one of ours.
pub fn snapshot_owner(name: &str) -> Option<i32> {
    let rest = name.trim_start_matches('.').strip_prefix(SNAPSHOT_PREFIX)?;
    rest.split('-').next()?.parse().ok()
}

/// Runs a tool to completion and returns its stdout; failures are SourceFailed (exit 14).
pub fn run_tool(source: &str, program: &str, args: &[&str]) -> Result<String> {
    let path = crate::sys::process::require_tool(source, &[program], None)?;
    let mut cmd = Command::new(path);
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped());
    let mut child = ChildProc::spawn(
        cmd,
        &format!("{program} {}", args.first().copied().unwrap_or("")),
        source,
        vec![],
    )?;
    let mut out = String::new();
    if let Some(mut so) = child.take_stdout() {
        use std::io::Read;
        so.read_to_string(&mut out).map_err(|e| {
            Error::source_failed(source, format!("reading the output of {program}: {e}"))
        })?;
    }
    child.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_names_carry_the_owner_pid() {
        let n = snapshot_name();
        assert_eq!(snapshot_owner(&n), Some(std::process::id() as i32));
        assert_eq!(
            snapshot_owner(&format!(".{n}")),
            Some(std::process::id() as i32)
        );
        assert_eq!(snapshot_owner("daily-2024"), None);
        assert!(crate::sys::process::pid_alive(std::process::id() as i32));
    }
}
