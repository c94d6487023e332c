//! What the targets share: one set of keys and a repository id, fixed so that a crash found
//! by one run reproduces in the next. The fuzzer controls the *plaintext* behind the AEAD (it
//! cannot forge a tag, so bytes that fail authentication only exercise the first check):
//! each target seals its input with these keys and hands the sealed bytes to the real parser,
//! which is what a holder of the key — or a bug on the writing side — could present.
#![allow(dead_code)]

use lifeboat::crypto::{Keys, MasterKey};
use lifeboat::ids::RepoId;

pub fn keys() -> Keys {
    Keys::derive(&MasterKey::from_bytes([7u8; 32]))
}

pub fn repo_id() -> RepoId {
    RepoId([9u8; 32])
}

/// A little-endian u32 from the front of `data`, and the rest.
pub fn take_u32(data: &[u8]) -> (u32, &[u8]) {
    if data.len() < 4 {
        return (0, data);
    }
    (
        u32::from_le_bytes(data[..4].try_into().unwrap()),
        &data[4..],
    )
}
