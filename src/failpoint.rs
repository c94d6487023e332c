//! Fault injection for the reliability tests (RELIABILITY.md T03, T24, T27).
//! `LIFEBOAT_FAILPOINT=NAME:N[,NAME:N…]` makes the N-th event of each named kind in this
//! process misbehave. Two kinds of point:
//!
//! *Bit flips* (T27: memory or CPU corruption between sealing and upload) flip one bit of
//! the bytes they handle:
//!
//! | name | where | what lifeboat does about it |
//! |---|---|---|
//! | `flip-sealed-blob` | a blob just sealed, before its verification | seals it again |
//! | `flip-blob-in-transit` | a verified blob on its way into its pack | seals it again |
//! | `flip-pack` | a finished pack, before its check and upload | rebuilds it from its parity |
//!
//! *Crashes* (T03, T24: `kill -9` at a chosen step of a protocol) end the process with
//! SIGKILL on the spot — no destructor runs, no lock is released, no temp file is removed,
//! exactly as a crash or an OOM kill would leave things:
//!
//! | name | where |
//! |---|---|
//! | `after-index-before-snapshot` | backup: every pack and index file stored, the snapshot (the commit point) not yet |
//! | `prune-after-repack` | prune phase 1: repacked packs stored, not yet indexed |
//! | `prune-after-repack-index` | prune phase 1: the repacked packs indexed, the plan not yet stored |
//! | `prune-after-new-index` | prune phase 2: replacement index files written, the old ones not yet deleted |
//! | `prune-mid-delete` | prune phase 2: after the N-th condemned pack was deleted |
//! | `repair-after-new-index` | repair: the rebuilt index written, the old index files not yet deleted |
//! | `repair-mid-rewrite` | repair `--rewrite-snapshots`: a snapshot written again, its original not yet removed |
//!
//! *Stops* (T19 at a chosen step: a VM frozen, a process starved past its lease) stop the
//! process with SIGSTOP on the spot; the test waits, breaks the lease, and sends SIGCONT:
//!
//! | name | where |
//! |---|---|
//! | `prune-before-delete` | prune phase 2: the rescue check done, nothing changed yet |
//! | `prune-between-delete-batches` | prune phase 2: after the N-th batch of pack deletions |
//!
//! *Panics* (T31: a bug's panic message must not carry a secret) panic on the spot with a
//! message that quotes every secret the process holds (`crate::secret::held`), as written
//! and through `Debug`; the panic hook must print it redacted:
//!
//! | name | where |
//! |---|---|
//! | `panic-opening-key` | opening the repository: in the key derivation thread, after the password was read (the main thread's `expect` panics again with that panic's message) |
//!
//! Unset (always, outside tests) it costs one relaxed check per event.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The environment variable read (once per process).
pub const ENV: &str = "LIFEBOAT_FAILPOINT";
/// The bit-flip points.
pub const FLIPS: &[&str] = &["flip-sealed-blob", "flip-blob-in-transit", "flip-pack"];
/// The crash points.
pub const CRASHES: &[&str] = &[
    "after-index-before-snapshot",
    "prune-after-repack",
    "prune-after-repack-index",
    "prune-after-new-index",
    "prune-mid-delete",
    "repair-after-new-index",
    "repair-mid-rewrite",
];

/// The stop points.
pub const STOPS: &[&str] = &["prune-before-delete", "prune-between-delete-batches"];

/// The panic points.
pub const PANICS: &[&str] = &["panic-opening-key"];

struct Point {
    name: String,
    at: u64,
    seen: AtomicU64,
}

fn points() -> &'static Result<Vec<Point>, String> {
    static POINTS: OnceLock<Result<Vec<Point>, String>> = OnceLock::new();
    POINTS.get_or_init(|| parse(&std::env::var(ENV).unwrap_or_default()))
}

fn known(name: &str) -> bool {
    FLIPS.contains(&name)
        || CRASHES.contains(&name)
        || STOPS.contains(&name)
        || PANICS.contains(&name)
}

fn parse(spec: &str) -> Result<Vec<Point>, String> {
    let mut out = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, at) = item.split_once(':').unwrap_or((item, "1"));
        if !known(name) {
            return Err(format!(
                "{ENV}: unknown failpoint {name:?} (known: {}, {}, {}, {}); unset {ENV} outside tests",
                FLIPS.join(", "),
                CRASHES.join(", "),
                STOPS.join(", "),
                PANICS.join(", ")
            ));
        }
        let at: u64 = at
            .parse()
            .ok()
            .filter(|&n| n >= 1)
            .ok_or_else(|| format!("{ENV}: {item:?} needs a count from 1, e.g. {name}:1"))?;
        out.push(Point {
            name: name.to_string(),
            at,
            seen: AtomicU64::new(0),
        });
    }
    Ok(out)
}

/// The environment's failpoints are valid (checked once at start-up, so a typo in a test is
/// an error rather than a test that silently injects nothing).
pub fn check_env() -> Result<(), String> {
    points().as_ref().map(|_| ()).map_err(Clone::clone)
}

/// Counts one event of failpoint `name`; true if it is the chosen one.
fn hit(name: &str) -> bool {
    let Ok(points) = points() else { return false };
    if points.is_empty() {
        return false;
    }
    let mut hit = false;
    for p in points.iter().filter(|p| p.name == name) {
        hit |= p.seen.fetch_add(1, Ordering::Relaxed) + 1 == p.at;
    }
    hit
}

/// Flips one bit of `bytes` if this is the chosen event of failpoint `name`; true if it did.
pub fn flip(name: &str, bytes: &mut [u8]) -> bool {
    if bytes.is_empty() || !hit(name) {
        return false;
    }
    let i = bytes.len() / 2;
    bytes[i] ^= 0x10;
    tracing::warn!(failpoint = name, "failpoint: flipped one bit");
    true
}

/// Kills this process with SIGKILL if this is the chosen event of crash point `name`.
pub fn crash(name: &str) {
    debug_assert!(CRASHES.contains(&name), "{name} is not a crash point");
    if hit(name) {
        // On stderr directly: a tracing subscriber may buffer, and nothing runs after this.
        eprintln!("failpoint {name}: killing this process (SIGKILL)");
        // SAFETY: raise has no preconditions; SIGKILL cannot be caught, so it does not return.
        unsafe {
            libc::raise(libc::SIGKILL);
        }
        unreachable!("SIGKILL returned");
    }
}

/// Stops this process with SIGSTOP if this is the chosen event of stop point `name`; it
/// goes on where it was when it receives SIGCONT.
pub fn stop(name: &str) {
    debug_assert!(STOPS.contains(&name), "{name} is not a stop point");
    if hit(name) {
        eprintln!("failpoint {name}: stopping this process (SIGSTOP)");
        // SAFETY: raise has no preconditions; SIGSTOP stops every thread of the process.
        unsafe {
            libc::raise(libc::SIGSTOP);
        }
    }
}

/// Panics if this is the chosen event of panic point `name`, quoting every secret the
/// process holds in the message.
pub fn panic(name: &str) {
    debug_assert!(PANICS.contains(&name), "{name} is not a panic point");
    if hit(name) {
        let held = crate::secret::held();
        let plain: Vec<&str> = held.iter().map(|s| s.as_str()).collect();
        panic!(
            "failpoint {name}: a panic with the {} secrets held in its message: {} / {plain:?}",
            held.len(),
            plain.join(" ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_typos_are_errors() {
        let p = parse("flip-pack:2, flip-sealed-blob, prune-mid-delete:3").unwrap();
        assert_eq!((p[0].name.as_str(), p[0].at), ("flip-pack", 2));
        assert_eq!((p[1].name.as_str(), p[1].at), ("flip-sealed-blob", 1));
        assert_eq!((p[2].name.as_str(), p[2].at), ("prune-mid-delete", 3));
        assert!(parse("").unwrap().is_empty());
        let e = parse("flip-pak:1").err().unwrap();
        assert!(
            e.contains("unknown failpoint")
                && e.contains("flip-pack")
                && e.contains("prune-mid-delete"),
            "{e}"
        );
        assert!(parse("flip-pack:0").is_err());
        assert!(parse("flip-pack:x").is_err());
    }
}
