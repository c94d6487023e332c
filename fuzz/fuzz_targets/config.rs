//! `config`, the one plaintext object: read before anything else, so it must refuse what it
//! cannot use (T32) — and say so — rather than panic.
#![no_main]
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use lifeboat::repo::read_config;
use lifeboat::store::local::LocalStore;
use lifeboat::store::DynStore;

fn store() -> &'static (tempfile::TempDir, DynStore, tokio::runtime::Runtime) {
    static S: OnceLock<(tempfile::TempDir, DynStore, tokio::runtime::Runtime)> = OnceLock::new();
    S.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("repo")).unwrap();
        let store: DynStore = Arc::new(LocalStore::new(dir.path().join("repo")));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        (dir, store, rt)
    })
}

fuzz_target!(|data: &[u8]| {
    let (dir, store, rt) = store();
    std::fs::write(dir.path().join("repo").join("config"), data).unwrap();
    let _ = rt.block_on(read_config(store));
});
