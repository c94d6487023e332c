//! Key slots: `keys/<id>` files, each wrapping the one master key under one password with
//! argon2id (parameters stored in the file, so they can be raised and old slots still open).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::crypto::{self, MasterKey};
use crate::ids::{ObjectId, RepoId};
use crate::{Error, Result};

const KEY_AAD: &[u8] = b"lifeboat v1 key slot";

/// argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KdfParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

/// Default argon2id memory of new key slots, in MiB.
pub const DEFAULT_KDF_MEMORY_MIB: u32 = 32;
/// Default argon2id passes of new key slots.
pub const DEFAULT_KDF_ITERATIONS: u32 = 6;

impl Default for KdfParams {
    /// t=6, m=32 MiB, p=4: the same number of block computations per guess as RFC 9106's
    /// second recommended option (t=3, m=64 MiB) with half its memory, which is what a
    /// backup's peak memory is made of when little changed; 32 MiB is also what restic's
    /// scrypt key slots use (N=2^15, r=8). Slots written with other parameters (the
    /// 64 MiB / t=3 default before 2026-11) open as before: the parameters are in the slot.
    fn default() -> Self {
        KdfParams {
            memory_kib: DEFAULT_KDF_MEMORY_MIB * 1024,
            iterations: DEFAULT_KDF_ITERATIONS,
            parallelism: 4,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    pub version: u32,
    pub created: DateTime<Utc>,
    pub host: String,
    pub username: String,
    pub kdf: String,
    pub params: KdfParams,
    pub salt: String,
    /// hex of the sealed (master key || repository id).
    pub data: String,
}

fn derive(password: &[u8], salt: &[u8], p: KdfParams) -> Result<Zeroizing<[u8; 32]>> {
    tracing::debug!(
        memory_kib = p.memory_kib,
        iterations = p.iterations,
        "argon2id key derivation"
    );
    let params = argon2::Params::new(p.memory_kib, p.iterations, p.parallelism, Some(32))
        .map_err(|e| Error::Other(format!("invalid argon2 parameters: {e}")))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(password, salt, out.as_mut())
        .map_err(|e| Error::Other(format!("argon2 failed: {e}")))?;
    Ok(out)
}

/// Wall seconds of one key derivation with `p` (a throwaway password and salt): what every
/// command that opens a repository pays before it can read anything (the benchmarks print it
/// beside the restore floors, which leave it out).
pub fn derivation_secs(p: KdfParams) -> Result<f64> {
    let t0 = std::time::Instant::now();
    derive(b"lifeboat floor", &[0u8; 32], p)?;
    Ok(t0.elapsed().as_secs_f64())
}

impl KeyFile {
    pub fn create(
        master: &MasterKey,
        repo: &RepoId,
        password: &[u8],
        params: KdfParams,
    ) -> Result<Self> {
        let salt: [u8; 32] = rand::random();
        let kek = derive(password, &salt, params)?;
        let mut plain = [0u8; 64];
        plain[..32].copy_from_slice(master.expose());
        plain[32..].copy_from_slice(repo.as_bytes());
        let sealed = crypto::seal_with_key(&kek, KEY_AAD, &plain);
        plain.zeroize();
        Ok(KeyFile {
            version: 1,
            created: Utc::now(),
            host: crate::sys::host::hostname(),
            username: crate::sys::host::username(),
            kdf: "argon2id".into(),
            params,
            salt: hex::encode(salt),
            data: hex::encode(sealed),
        })
    }

    /// Unwraps the master key. `None` means this password does not open this slot.
    pub fn open(&self, password: &[u8], repo: &RepoId) -> Result<Option<MasterKey>> {
        if self.kdf != "argon2id" || self.version != 1 {
            return Ok(None);
        }
        // Bound the work a damaged or hostile key file can make us do (T14).
        if self.params.memory_kib > 4 * 1024 * 1024
            || self.params.iterations > 64
            || self.params.parallelism > 64
        {
            return Ok(None);
        }
        let (Ok(salt), Ok(sealed)) = (hex::decode(&self.salt), hex::decode(&self.data)) else {
            return Ok(None);
        };
        let kek = derive(password, &salt, self.params)?;
        let Ok(plain) = crypto::open_with_key(&kek, KEY_AAD, &sealed) else {
            return Ok(None);
        };
        let plain = Zeroizing::new(plain);
        if plain.len() != 64 {
            return Ok(None);
        }
        if &plain[32..] != repo.as_bytes() {
            // The password is right, the repository id is not: `config` was damaged or
            // swapped, and "wrong password" would send the user looking in the wrong place.
            return Err(Error::integrity(
                "config",
                format!(
                    "its id {} is not the repository id this key slot belongs to ({}): the \
                     config file was damaged or replaced — put back the repository's own \
                     config (from another region or a copy of the repository)",
                    repo,
                    hex::encode(&plain[32..])
                ),
            ));
        }
        let mut m = [0u8; 32];
        m.copy_from_slice(&plain[..32]);
        let master = MasterKey::from_bytes(m);
        m.zeroize();
        Ok(Some(master))
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("key file serializes")
    }

    pub fn id_of(bytes: &[u8]) -> ObjectId {
        ObjectId::of(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key derivation's output is the repository format: a key slot written by one build
    /// must open with every later one. This answer was computed with argon2 0.5.3 (lanes
    /// filled one after another), before the switch to 0.6 with its lanes filled in parallel;
    /// four lanes, as new slots use.
    #[test]
    fn argon2id_known_answer_with_four_lanes() {
        let p = KdfParams {
            memory_kib: 1024,
            iterations: 3,
            parallelism: 4,
        };
        let out = derive(b"lifeboat known answer", b"sixteen byte salt...", p).unwrap();
        assert_eq!(
            hex::encode(out.as_ref()),
            "398c3ff702c9c9252dfad3ac42c1c620daf21efd8fb861badadf0f576926b332"
        );
    }
}
