//! Pack framing and header: the trailer that says where the header is, and the sealed
//! header's entry table (T12: no panic, no allocation sized by a corrupt length).
#![no_main]
use libfuzzer_sys::fuzz_target;
use lifeboat::ids::ObjectId;
use lifeboat::repo::pack;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let keys = common::keys();
    let repo = common::repo_id();
    let id = ObjectId::of(data);
    // 1. The input as a whole pack: trailer → header range → full verification.
    if data.len() >= 8 {
        let _ = pack::header_range(&id, data.len() as u64, &data[data.len() - 8..]);
    }
    let _ = pack::verify_pack(&keys, &repo, &id, data);
    // 2. The input as a header's plaintext, sealed as the writer would: the entry table parser.
    let (blobs_end, plain) = common::take_u32(data);
    let sealed = keys.seal(&pack::header_aad(&repo), plain);
    if let Ok(entries) = pack::parse_header(&keys, &repo, &id, &sealed, blobs_end as u64) {
        for e in entries {
            assert!(e.offset as u64 + e.length as u64 <= blobs_end as u64);
        }
    }
});
