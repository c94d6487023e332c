//! The encrypted file objects — index, snapshot, lock, prune plan — and trees (blobs holding JSON):
//! zstd under the AEAD, then JSON into the typed structures the readers use.
#![no_main]
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use lifeboat::ids::ObjectId;
use lifeboat::repo::index::IndexFile;
use lifeboat::repo::keys::KdfParams;
use lifeboat::repo::lock::LockFile;
use lifeboat::repo::object_lock::LockRecord;
use lifeboat::repo::prune::PrunePlan;
use lifeboat::repo::set::SetManifest;
use lifeboat::repo::snapshot::Snapshot;
use lifeboat::repo::tree::Tree;
use lifeboat::repo::{InitOptions, ObjectKind, Repository};
use lifeboat::store::local::LocalStore;

fn repo() -> &'static Repository {
    static REPO: OnceLock<(tempfile::TempDir, Repository)> = OnceLock::new();
    &REPO
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let opts = InitOptions {
                kdf: KdfParams {
                    memory_kib: 8,
                    iterations: 1,
                    parallelism: 1,
                },
                ..Default::default()
            };
            let store = Arc::new(LocalStore::new(dir.path().join("repo")));
            let repo = rt.block_on(Repository::init(store, b"fuzz", opts)).unwrap();
            (dir, repo)
        })
        .1
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let repo = repo();
    let kind = match selector % 6 {
        0 => ObjectKind::Index,
        1 => ObjectKind::Snapshot,
        2 => ObjectKind::Lock,
        3 => ObjectKind::Set,
        4 => ObjectKind::LockRecord,
        _ => ObjectKind::PrunePlan,
    };
    // Half the inputs are the compressed payload itself (the zstd decoder meets them); half
    // are JSON, compressed here so the JSON parsers meet them.
    let compressed = if selector & 0x80 == 0 {
        rest.to_vec()
    } else {
        zstd::bulk::compress(rest, 1).unwrap()
    };
    let sealed = repo_keys_seal(repo, kind, &compressed);
    let id = ObjectId::of(&sealed);
    match kind {
        ObjectKind::Index => drop(repo.open_json::<IndexFile>(kind, &id, &sealed)),
        ObjectKind::Snapshot => drop(repo.open_json::<Snapshot>(kind, &id, &sealed)),
        ObjectKind::Lock => drop(repo.open_json::<LockFile>(kind, &id, &sealed)),
        ObjectKind::PrunePlan => drop(repo.open_json::<PrunePlan>(kind, &id, &sealed)),
        ObjectKind::Set => drop(repo.open_json::<SetManifest>(kind, &id, &sealed)),
        ObjectKind::LockRecord => drop(repo.open_json::<LockRecord>(kind, &id, &sealed)),
    }
    // A tree is a blob holding JSON: the same bytes straight into the tree reader's type.
    let _ = serde_json::from_slice::<Tree>(rest);
});

/// Seals `compressed` exactly as `Repository::seal_json` does after compressing.
fn repo_keys_seal(repo: &Repository, kind: ObjectKind, compressed: &[u8]) -> Vec<u8> {
    repo.keys.seal(&kind.aad(repo.id()), compressed)
}
