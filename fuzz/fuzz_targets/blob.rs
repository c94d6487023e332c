//! One blob's body behind the AEAD: compression tag, zstd frame and declared raw length
//! (decompression bombs, SR-17), then the keyed-hash check.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lifeboat::ids::BlobId;
use lifeboat::repo::pack::{self, BlobKind, PackEntry};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let keys = common::keys();
    let repo = common::repo_id();
    let (raw_length, body) = common::take_u32(data);
    let kind = if raw_length & 1 == 0 {
        BlobKind::Data
    } else {
        BlobKind::Tree
    };
    let id = BlobId([raw_length as u8; 32]);
    let sealed = keys.seal(&pack::blob_aad(&repo, kind, &id), body);
    let entry = PackEntry {
        kind,
        id,
        offset: 0,
        length: sealed.len() as u32,
        raw_length,
    };
    if let Ok(plain) = pack::open_blob(&keys, &repo, &entry, &sealed) {
        // Only a blob whose keyed hash matches its id may come out.
        assert_eq!(keys.blob_id(&plain), id);
    }
    if (raw_length as usize) <= 1 << 20 {
        let mut scratch = Vec::new();
        let mut out = vec![0u8; raw_length as usize];
        let _ = pack::open_blob_to(&keys, &repo, &entry, &sealed, &mut scratch, &mut out);
    }
});
