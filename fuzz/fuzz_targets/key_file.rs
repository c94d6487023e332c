//! Key slots: a key file is read before any password is known, so its JSON and its KDF
//! parameters are hostile input (T14: bounded work, a damaged file means "no match").
#![no_main]
use libfuzzer_sys::fuzz_target;
use lifeboat::repo::keys::KeyFile;

#[path = "common.rs"]
mod common;

/// The real bound lives in `KeyFile::open`; inputs inside it but above this cap are skipped
/// so one iteration stays in milliseconds (argon2 at its allowed maximum takes seconds).
const CAP_KIB: u32 = 256;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = serde_json::from_slice::<KeyFile>(data) else {
        return;
    };
    let p = file.params;
    let over_real_bound = p.memory_kib > 4 * 1024 * 1024 || p.iterations > 64 || p.parallelism > 64;
    let cheap = p.memory_kib <= CAP_KIB && p.iterations <= 2 && p.parallelism <= 4;
    if over_real_bound || cheap {
        let _ = file.open(b"fuzz", &common::repo_id());
    }
    let _ = file.to_bytes();
});
