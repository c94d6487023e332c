//! Plan files: TOML from operators, validated into a plan or a list of issues with lines.
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = lifeboat::plan::parse(Path::new("fuzz.toml"), text);
    }
});
