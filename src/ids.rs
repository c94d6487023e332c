//! Newtypes for the 32-byte ids the repository uses. Each is shown as 64 lowercase hex
//! characters; the short form (first 8) is what humans type.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            pub fn from_bytes(b: [u8; 32]) -> Self {
                Self(b)
            }
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
            /// The first 8 hex characters, as shown in listings.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..4])
            }
            pub fn random() -> Self {
                Self(rand::random())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                let mut out = [0u8; 32];
                hex::decode_to_slice(s, &mut out)
                    .map_err(|_| format!("{s:?} is not a 64-character hex id"))?;
                Ok(Self(out))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// A blob: one chunk of file data or one tree, named by the keyed blake3 hash of its plaintext.
    BlobId
);
id_type!(
    /// A stored object (pack, index, snapshot, key): blake3 of its stored bytes, so any copy
    /// can be checked against its name without the key.
    ObjectId
);
id_type!(
    /// The repository's random id, bound into every object's associated data.
    RepoId
);

pub type PackId = ObjectId;
pub type SnapshotId = ObjectId;
pub type IndexId = ObjectId;

impl ObjectId {
    /// The id of stored bytes: unkeyed blake3 over the ciphertext.
    pub fn of(bytes: &[u8]) -> Self {
        Self::from_hash(blake3::hash(bytes))
    }

    /// The name of a pack hashed incrementally (a `blake3::Hasher` fed all its bytes).
    pub fn from_hash(h: blake3::Hash) -> Self {
        Self(*h.as_bytes())
    }
}
