//! Drill report files: what an auditor hands `lifeboat report verify` (a file or a
//! directory from anywhere) — JSON, an ed25519 signature over its canonical form, and the
//! chain to the previous report.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lifeboat::report::chain::{self, Found};

fuzz_target!(|data: &[u8]| {
    let value = serde_json::from_slice::<serde_json::Value>(data).map_err(|e| e.to_string());
    if let Ok(v) = &value {
        let _ = chain::check_signature(v);
        let _ = chain::hash_value(v);
        let _ = chain::is_drill_report(v);
    }
    let found = |seq| Found {
        source: "fuzz.json".into(),
        name_seq: Some(seq),
        value: value.clone(),
    };
    // One report alone, and the same report twice (a chain that must not verify).
    let _ = chain::verify(&[found(1)], None);
    let _ = chain::verify(&[found(1), found(2)], None);
});
