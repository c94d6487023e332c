//! Restore-test files: TOML naming the checks a drill runs.
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use lifeboat::drill::restore_tests::RestoreTests;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = RestoreTests::parse(Path::new("fuzz.toml"), text);
    }
});
