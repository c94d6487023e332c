//! The repository's report-signing key: an ed25519 key pair whose secret half is stored
//! wrapped by the repository's master key (`signing/<public key hex>`), so every password holder can
//! sign drill reports and an auditor verifies them with the public key alone
//! (`lifeboat report pubkey`). Created at `init`; a repository made before reports existed
//! gets one on first use ([`load_or_create`]).
//!
//! The file is plain JSON: `public_key` (hex) and `sealed` (hex of the XChaCha20-Poly1305
//! sealed 32-byte seed, associated data binding the repository id and the public key, so a
//! file moved between repositories or given another public key does not open).

use bytes::Bytes;
use chrono::{DateTime, Utc};
use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::Repository;
use crate::store::{DynStore, StoreError};
use crate::{Error, Result};

/// Where the wrapped key lives in a repository: `signing/<public key, 64 hex>` (named like
/// every other object; should two hosts create one at once, the first in key order is used).
pub const PREFIX: &str = "signing/";

fn key_name(public: &[u8; 32]) -> String {
    format!("{PREFIX}{}", hex::encode(public))
}

/// The stored key file of `store`, if any: (its name, bytes).
async fn find(store: &DynStore) -> std::result::Result<Option<(String, Bytes)>, StoreError> {
    let mut names: Vec<String> = store
        .list(PREFIX)
        .await?
        .into_iter()
        .map(|i| i.key)
        .filter(|k| k.len() == PREFIX.len() + 64)
        .collect();
    names.sort();
    match names.into_iter().next() {
        None => Ok(None),
        Some(n) => match store.get(&n).await {
            Ok(b) => Ok(Some((n, b))),
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        },
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SigningKeyFile {
    version: u32,
    algorithm: String,
    created: DateTime<Utc>,
    /// hex of the 32-byte ed25519 public key.
    public_key: String,
    /// hex of the sealed 32-byte secret seed.
    sealed: String,
}

fn aad(repo: &Repository, public: &[u8; 32]) -> Vec<u8> {
    let mut a = b"lifeboat v1 report signing key\0".to_vec();
    a.extend_from_slice(repo.id().as_bytes());
    a.extend_from_slice(public);
    a
}

/// A new random key pair, wrapped for `repo`: the file's bytes and the key.
fn create(repo: &Repository) -> (String, Vec<u8>, SigningKey) {
    let seed = Zeroizing::new(rand::random::<[u8; 32]>());
    let key = SigningKey::from_bytes(&seed);
    let public = key.verifying_key().to_bytes();
    let file = SigningKeyFile {
        version: 1,
        algorithm: "ed25519".into(),
        created: Utc::now(),
        public_key: hex::encode(public),
        sealed: hex::encode(repo.keys.seal(&aad(repo, &public), seed.as_ref())),
    };
    (
        key_name(&public),
        serde_json::to_vec_pretty(&file).expect("signing key serializes"),
        key,
    )
}

/// Opens a stored key file with `repo`'s keys.
fn open(repo: &Repository, store: &DynStore, name: &str, raw: &[u8]) -> Result<SigningKey> {
    let what = || format!("{}/{name}", store.describe());
    let f: SigningKeyFile = serde_json::from_slice(raw)
        .map_err(|e| Error::integrity(what(), format!("not a signing key file: {e}")))?;
    let public: [u8; 32] = hex::decode(&f.public_key)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| Error::integrity(what(), "public_key is not 32 bytes of hex"))?;
    let sealed =
        hex::decode(&f.sealed).map_err(|_| Error::integrity(what(), "sealed is not hex"))?;
    let seed = Zeroizing::new(
        repo.keys
            .open(&aad(repo, &public), &sealed)
            .map_err(|e| Error::integrity(what(), format!("does not open with this repository's key ({e}); restore it from another region or a backup of the repository")))?,
    );
    let seed: [u8; 32] = seed
        .as_slice()
        .try_into()
        .map_err(|_| Error::integrity(what(), "the sealed seed is not 32 bytes"))?;
    let key = SigningKey::from_bytes(&seed);
    if key.verifying_key().to_bytes() != public || key_name(&public) != name {
        return Err(Error::integrity(
            what(),
            "the public key does not belong to the sealed secret key",
        ));
    }
    Ok(key)
}

/// Writes a new signing key into `repo`'s store (at `init`; through the multi-region fan-out
/// that reaches every region).
pub async fn create_in(repo: &Repository) -> Result<VerifyingKey> {
    let (name, bytes, key) = create(repo);
    repo.store.put(&name, Bytes::from(bytes)).await?;
    Ok(key.verifying_key())
}

/// The signing key of the repository `repos` (the same repository in one or more regions,
/// each opened with its store): the first region that has one gives it and the regions that
/// lack it get a copy; when none has one (a repository from before reports), a new key is
/// created and written to every region that answers. Regions that cannot be read or
/// written are skipped (the report still goes to the others).
pub async fn load_or_create(repos: &[Repository]) -> Result<SigningKey> {
    let mut found: Option<(SigningKey, String, Bytes)> = None;
    let mut missing = Vec::new();
    let mut last_err = None;
    for r in repos {
        match find(&r.store).await {
            Ok(Some((name, raw))) => {
                if found.is_none() {
                    let key = open(r, &r.store, &name, &raw)?;
                    found = Some((key, name, raw));
                }
            }
            Ok(None) => missing.push(r),
            Err(e) => last_err = Some(e),
        }
    }
    let (key, name, raw) = match found {
        Some(f) => f,
        None => {
            let Some(first) = missing.first() else {
                return Err(last_err
                    .map(Error::from)
                    .unwrap_or_else(|| Error::Other("no region to keep the signing key".into())));
            };
            let (name, bytes, key) = create(first);
            (key, name, Bytes::from(bytes))
        }
    };
    for r in missing {
        if let Err(e) = r.store.put(&name, raw.clone()).await {
            tracing::warn!(region = %r.location(), error = %e, "could not store the report signing key");
        }
    }
    Ok(key)
}

/// The public key, without creating one: `None` when the repository has none yet.
pub async fn public_key(repo: &Repository) -> Result<Option<VerifyingKey>> {
    match find(&repo.store).await? {
        Some((name, raw)) => Ok(Some(open(repo, &repo.store, &name, &raw)?.verifying_key())),
        None => Ok(None),
    }
}
