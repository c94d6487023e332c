//! Human and JSON output helpers.

use std::time::Duration;

use serde::Serialize;

pub fn bytes(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}

pub fn duration(secs: f64) -> String {
    if secs < 1.0 {
        format!("{:.0} ms", secs * 1000.0)
    } else if secs < 120.0 {
        format!("{secs:.2} s")
    } else {
        humantime::format_duration(Duration::from_secs(secs.round() as u64)).to_string()
    }
}

pub fn print_json<T: Serialize + ?Sized>(v: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("output serializes")
    );
}

pub fn mode_string(kind: crate::repo::tree::NodeKind, mode: u32) -> String {
    use crate::repo::tree::NodeKind;
    let t = match kind {
        NodeKind::Dir => 'd',
        NodeKind::Symlink => 'l',
        NodeKind::File => '-',
    };
    let mut s = String::from(t);
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

/// Snapshots as `--json` prints them: the manifest plus `id` and `short_id`.
pub fn snapshots_json<'a>(
    snaps: impl Iterator<
        Item = (
            &'a crate::ids::SnapshotId,
            &'a crate::repo::snapshot::Snapshot,
        ),
    >,
) -> Vec<serde_json::Value> {
    snaps
        .map(|(id, s)| {
            let mut v = serde_json::to_value(s).expect("snapshot serializes");
            v["id"] = serde_json::json!(id);
            v["short_id"] = serde_json::json!(id.short());
            v
        })
        .collect()
}
