//! The repository's keys and the one AEAD every stored byte goes through.
//!
//! A random 32-byte master key is wrapped by each password (argon2id, see `repo::keys`).
//! Independent subkeys are derived from it with `blake3::derive_key`, one per purpose
//! (SR-8): data encryption, blob ids, the chunker seed. Sealing is XChaCha20-Poly1305 with a
//! random 192-bit nonce (SR-2); the caller supplies associated data binding the object to its
//! repository, type and id (SR-3).
//!
//! XChaCha20-Poly1305 is computed as its draft (draft-irtf-cfrg-xchacha) defines it:
//! HChaCha20 turns the key and the nonce's first 16 bytes into a subkey, and IETF
//! ChaCha20-Poly1305 runs under that subkey with the nonce `0u32 || nonce[16..24]`. The AEAD
//! itself is ring's (assembly, about 1.8 times the throughput of the portable Rust one on these
//! machines); the bytes are identical to RustCrypto's `XChaCha20Poly1305`, which a test checks.
//!
//! This module knows nothing about packs, files or stores.

use chacha20::cipher::consts::U10;
use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, CHACHA20_POLY1305};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::ids::BlobId;

pub const NONCE_LEN: usize = 24;
pub const TAG_LEN: usize = 16;
/// Bytes a sealed object is longer than its plaintext.
pub const OVERHEAD: usize = NONCE_LEN + TAG_LEN;

const CTX_ENCRYPTION: &str = "lifeboat 2026-11 v1 data encryption";
const CTX_BLOB_ID: &str = "lifeboat 2026-11 v1 blob id";
const CTX_CHUNKER: &str = "lifeboat 2026-11 v1 chunker seed";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("authentication failed (wrong key, or the bytes were altered)")]
    Auth,
    #[error("sealed object is too short ({0} bytes)")]
    TooShort(usize),
}

/// The master secret. Zeroed on drop; never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    pub fn generate() -> Self {
        Self(rand::random())
    }
    pub fn from_bytes(b: [u8; 32]) -> Self {
        Self(b)
    }
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

/// Working keys derived from the master key.
pub struct Keys {
    cipher: XChaCha,
    blob_id_key: [u8; 32],
    chunker_seed: u64,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(<redacted>)")
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        self.blob_id_key.zeroize();
        self.chunker_seed.zeroize();
    }
}

impl Keys {
    pub fn derive(master: &MasterKey) -> Self {
        let enc = Zeroizing::new(blake3::derive_key(CTX_ENCRYPTION, master.expose()));
        let blob_id_key = blake3::derive_key(CTX_BLOB_ID, master.expose());
        let seed = blake3::derive_key(CTX_CHUNKER, master.expose());
        let mut seed8 = [0u8; 8];
        seed8.copy_from_slice(&seed[..8]);
        // fastcdc treats a zero seed as "no seed"; a secret seed must never be zero.
        let chunker_seed = u64::from_le_bytes(seed8) | 1;
        let cipher = XChaCha(enc);
        Keys {
            cipher,
            blob_id_key,
            chunker_seed,
        }
    }

    /// The keyed blake3 id of a blob's plaintext (SR-4: leaks nothing about the content).
    pub fn blob_id(&self, plaintext: &[u8]) -> BlobId {
        BlobId(*blake3::keyed_hash(&self.blob_id_key, plaintext).as_bytes())
    }

    /// [`Keys::blob_id`] fed piece by piece (a blob checked while it is decompressed).
    pub fn blob_id_hasher(&self) -> blake3::Hasher {
        blake3::Hasher::new_keyed(&self.blob_id_key)
    }

    pub fn chunker_seed(&self) -> u64 {
        self.chunker_seed
    }

    /// Encrypts `plaintext`, appending `nonce || ciphertext || tag` to `out`.
    pub fn seal_into(&self, aad: &[u8], plaintext: &[u8], out: &mut Vec<u8>) {
        self.cipher.seal_into(aad, plaintext, out)
    }

    /// Seals in place: `buf[start..start + NONCE_LEN]` is a gap for the nonce and
    /// `buf[start + NONCE_LEN..]` the plaintext, encrypted where it lies; the tag is appended.
    /// Saves the copy `seal_into` makes when the caller builds the plaintext in `buf` anyway.
    pub fn seal_in_place(&self, aad: &[u8], buf: &mut Vec<u8>, start: usize) {
        self.cipher.seal_in_place(aad, buf, start)
    }

    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plaintext.len() + OVERHEAD);
        self.seal_into(aad, plaintext, &mut out);
        out
    }

    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.cipher.open(aad, sealed)
    }

    /// [`Keys::open`] into a caller's buffer (replacing its contents), for reuse across blobs.
    pub fn open_into(
        &self,
        aad: &[u8],
        sealed: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        self.cipher.open_into(aad, sealed, out)
    }
}

/// Seal with a one-off key (used to wrap the master key under a password-derived key).
pub fn seal_with_key(key: &[u8; 32], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(plaintext.len() + OVERHEAD);
    XChaCha(Zeroizing::new(*key)).seal_into(aad, plaintext, &mut out);
    out
}

pub fn open_with_key(key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
    XChaCha(Zeroizing::new(*key)).open(aad, sealed)
}

/// An XChaCha20-Poly1305 key (zeroed on drop).
struct XChaCha(Zeroizing<[u8; 32]>);

impl XChaCha {
    /// The IETF ChaCha20-Poly1305 key and nonce that an XChaCha20 nonce stands for.
    fn expand(&self, nonce: &[u8]) -> (LessSafeKey, Nonce) {
        let mut sub = chacha20::hchacha::<U10>((&*self.0).into(), nonce[..16].into());
        let key = LessSafeKey::new(
            UnboundKey::new(&CHACHA20_POLY1305, &sub).expect("a 32-byte ChaCha20 key"),
        );
        sub.as_mut_slice().zeroize();
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&nonce[16..NONCE_LEN]);
        (key, Nonce::assume_unique_for_key(n))
    }

    fn seal_into(&self, aad: &[u8], plaintext: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        out.reserve(plaintext.len() + OVERHEAD);
        out.extend_from_slice(&[0u8; NONCE_LEN]);
        out.extend_from_slice(plaintext);
        self.seal_in_place(aad, out, start);
    }

    /// `buf[start..]` is a nonce-sized gap followed by the plaintext: fills in a fresh random
    /// nonce, encrypts the plaintext where it lies and appends the tag.
    fn seal_in_place(&self, aad: &[u8], buf: &mut Vec<u8>, start: usize) {
        let nonce: [u8; NONCE_LEN] = rand::random();
        buf[start..start + NONCE_LEN].copy_from_slice(&nonce);
        let (key, n) = self.expand(&nonce);
        let tag = key
            .seal_in_place_separate_tag(n, Aad::from(aad), &mut buf[start + NONCE_LEN..])
            .expect("ChaCha20-Poly1305 sealing fails only beyond 256 GiB per message");
        buf.extend_from_slice(tag.as_ref());
    }

    fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut out = Vec::new();
        self.open_into(aad, sealed, &mut out)?;
        Ok(out)
    }

    fn open_into(&self, aad: &[u8], sealed: &[u8], out: &mut Vec<u8>) -> Result<(), CryptoError> {
        if sealed.len() < OVERHEAD {
            return Err(CryptoError::TooShort(sealed.len()));
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
        let tag = Tag::from(<[u8; TAG_LEN]>::try_from(tag).expect("16 bytes"));
        out.clear();
        out.extend_from_slice(ct);
        let (key, n) = self.expand(nonce);
        key.open_in_place_separate_tag(n, Aad::from(aad), tag, out, 0..)
            .map_err(|_| CryptoError::Auth)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_tamper() {
        let keys = Keys::derive(&MasterKey::generate());
        let sealed = keys.seal(b"aad", b"hello world");
        assert_eq!(sealed.len(), 11 + OVERHEAD);
        assert_eq!(keys.open(b"aad", &sealed).unwrap(), b"hello world");
        assert_eq!(keys.open(b"other", &sealed), Err(CryptoError::Auth));
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert_eq!(keys.open(b"aad", &bad), Err(CryptoError::Auth), "byte {i}");
        }
        assert_eq!(
            keys.open(b"aad", &sealed[..10]),
            Err(CryptoError::TooShort(10))
        );
    }

    #[test]
    fn subkeys_are_independent_and_keyed() {
        let m1 = MasterKey::generate();
        let m2 = MasterKey::generate();
        let (k1, k2) = (Keys::derive(&m1), Keys::derive(&m2));
        assert_ne!(k1.blob_id(b"x"), k2.blob_id(b"x"));
        assert_ne!(k1.blob_id(b"x").0, *blake3::hash(b"x").as_bytes());
        assert_ne!(k1.chunker_seed(), 0);
        assert_eq!(k1.blob_id(b"x"), Keys::derive(&m1).blob_id(b"x"));
    }

    #[test]
    fn sealed_bytes_are_rustcryptos_xchacha20poly1305() {
        use chacha20poly1305::aead::{AeadInPlace, KeyInit};
        use chacha20poly1305::{XChaCha20Poly1305, XNonce};
        let key: [u8; 32] = rand::random();
        let reference = XChaCha20Poly1305::new((&key).into());
        for len in [0usize, 1, 63, 64, 65, 1000, 70_000] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 13 + len) as u8).collect();
            // Ours → theirs.
            let sealed = seal_with_key(&key, b"aad", &plain);
            let (nonce, rest) = sealed.split_at(NONCE_LEN);
            let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
            let mut buf = ct.to_vec();
            reference
                .decrypt_in_place_detached(XNonce::from_slice(nonce), b"aad", &mut buf, tag.into())
                .expect("RustCrypto opens what we sealed");
            assert_eq!(buf, plain);
            // Theirs → ours.
            let nonce: [u8; NONCE_LEN] = rand::random();
            let mut buf = plain.clone();
            let tag = reference
                .encrypt_in_place_detached(XNonce::from_slice(&nonce), b"aad", &mut buf)
                .unwrap();
            let theirs = [&nonce[..], &buf, &tag].concat();
            assert_eq!(open_with_key(&key, b"aad", &theirs).unwrap(), plain);
            assert_eq!(
                open_with_key(&key, b"other", &theirs),
                Err(CryptoError::Auth)
            );
        }
    }
}
