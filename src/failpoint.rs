//! Fault injection for the reliability tests (RELIABILITY.md T27: memory or CPU corruption
//! between sealing and upload). `LIFEBOAT_FAILPOINT=NAME:N[,NAME:N…]` makes the N-th event
//! of each named kind in this process flip one bit of the bytes it handles:
//!
//! | name | where | what lifeboat does about it |
//! |---|---|---|
//! | `flip-sealed-blob` | a blob just sealed, before its verification | seals it again |
//! | `flip-blob-in-transit` | a verified blob on its way into its pack | seals it again |
//! | `flip-pack` | a finished pack, before its check and upload | stores nothing, exit 13 |
//!
//! Unset (always, outside tests) it costs one relaxed check per event.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The environment variable read (once per process).
pub const ENV: &str = "LIFEBOAT_FAILPOINT";
/// Every failpoint there is.
pub const NAMES: &[&str] = &["flip-sealed-blob", "flip-blob-in-transit", "flip-pack"];

struct Point {
    name: String,
    at: u64,
    seen: AtomicU64,
}

fn points() -> &'static Result<Vec<Point>, String> {
    static POINTS: OnceLock<Result<Vec<Point>, String>> = OnceLock::new();
    POINTS.get_or_init(|| parse(&std::env::var(ENV).unwrap_or_default()))
}

fn parse(spec: &str) -> Result<Vec<Point>, String> {
    let mut out = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, at) = item.split_once(':').unwrap_or((item, "1"));
        if !NAMES.contains(&name) {
            return Err(format!(
                "{ENV}: unknown failpoint {name:?} (known: {}); unset {ENV} outside tests",
                NAMES.join(", ")
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

/// Flips one bit of `bytes` if this is the chosen event of failpoint `name`; true if it did.
pub fn flip(name: &str, bytes: &mut [u8]) -> bool {
    let Ok(points) = points() else { return false };
    if points.is_empty() || bytes.is_empty() {
        return false;
    }
    let mut hit = false;
    for p in points.iter().filter(|p| p.name == name) {
        hit |= p.seen.fetch_add(1, Ordering::Relaxed) + 1 == p.at;
    }
    if hit {
        let i = bytes.len() / 2;
        bytes[i] ^= 0x10;
        tracing::warn!(failpoint = name, "failpoint: flipped one bit");
    }
    hit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_typos_are_errors() {
        let p = parse("flip-pack:2, flip-sealed-blob").unwrap();
        assert_eq!((p[0].name.as_str(), p[0].at), ("flip-pack", 2));
        assert_eq!((p[1].name.as_str(), p[1].at), ("flip-sealed-blob", 1));
        assert!(parse("").unwrap().is_empty());
        let e = parse("flip-pak:1").err().unwrap();
        assert!(
            e.contains("unknown failpoint") && e.contains("flip-pack"),
            "{e}"
        );
        assert!(parse("flip-pack:0").is_err());
        assert!(parse("flip-pack:x").is_err());
    }
}
