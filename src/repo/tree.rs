//! Trees: one JSON blob per directory listing its entries, sorted by the bytes of their
//! names. File nodes list the data blobs of their content in order; directory nodes point at
//! their subtree blob.
//!
//! Names and symlink targets are bytes on Unix. One that is valid UTF-8 is stored as it is
//! in `name` / `target`; one that is not (old Samba shares, disks from other systems) is
//! stored exactly in `name_raw` / `target_raw` (hex of the bytes), with a readable
//! rendering (U+FFFD for the invalid bytes) in `name` / `target` for listings. Restore uses
//! the bytes, so both come back exactly (docs/format.md, "Tree blob").

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use serde::{Deserialize, Serialize};

use crate::ids::BlobId;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
}

/// One directory entry with the metadata needed to restore it faithfully.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: NodeKind,
    /// Permission bits (including setuid/setgid/sticky).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Status-change time, nanoseconds since the epoch (change detection only).
    pub ctime_ns: i64,
    pub inode: u64,
    pub device: u64,
    /// Hard-link count at backup time; >1 lets restore recreate the links.
    pub links: u64,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<BlobId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtree: Option<BlobId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The name's exact bytes when they are not UTF-8 (`name` is then only for display).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_raw: Option<RawBytes>,
    /// The symlink target's exact bytes when they are not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_raw: Option<RawBytes>,
}

/// Bytes that are not UTF-8, stored as lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawBytes(pub Vec<u8>);

impl Serialize for RawBytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for RawBytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(&s)
            .map(RawBytes)
            .map_err(|e| serde::de::Error::custom(format!("raw name is not hex: {e}")))
    }
}

/// A readable string for `b` and, when `b` is not UTF-8, the exact bytes.
fn split_bytes(b: &[u8]) -> (String, Option<RawBytes>) {
    match std::str::from_utf8(b) {
        Ok(s) => (s.to_string(), None),
        Err(_) => (
            String::from_utf8_lossy(b).into_owned(),
            Some(RawBytes(b.to_vec())),
        ),
    }
}

impl Node {
    /// The name's exact bytes.
    pub fn name_bytes(&self) -> &[u8] {
        match &self.name_raw {
            Some(r) => &r.0,
            None => self.name.as_bytes(),
        }
    }

    /// The name as the file system spells it.
    pub fn os_name(&self) -> &OsStr {
        OsStr::from_bytes(self.name_bytes())
    }

    /// Sets the name from the file system's bytes (stored exactly, UTF-8 or not).
    pub fn set_name(&mut self, name: &OsStr) {
        (self.name, self.name_raw) = split_bytes(name.as_bytes());
    }

    /// The symlink target as the file system spells it.
    pub fn os_target(&self) -> Option<&OsStr> {
        match (&self.target_raw, &self.target) {
            (Some(r), _) => Some(OsStr::from_bytes(&r.0)),
            (None, Some(t)) => Some(OsStr::new(t.as_str())),
            (None, None) => None,
        }
    }

    /// Sets the symlink target from the file system's bytes (stored exactly).
    pub fn set_target(&mut self, target: &OsStr) {
        let (t, raw) = split_bytes(target.as_bytes());
        self.target = Some(t);
        self.target_raw = raw;
    }
}

impl Tree {
    pub fn find(&self, name: &str) -> Option<&Node> {
        self.find_bytes(name.as_bytes())
    }

    /// The node whose name is exactly these bytes (nodes are sorted by them).
    pub fn find_bytes(&self, name: &[u8]) -> Option<&Node> {
        self.nodes
            .binary_search_by(|n| n.name_bytes().cmp(name))
            .ok()
            .map(|i| &self.nodes[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &[u8]) -> Node {
        let mut n = Node {
            name: String::new(),
            kind: NodeKind::Symlink,
            mode: 0o777,
            uid: 0,
            gid: 0,
            mtime_ns: 0,
            ctime_ns: 0,
            inode: 0,
            device: 0,
            links: 1,
            size: 0,
            content: Vec::new(),
            subtree: None,
            target: None,
            name_raw: None,
            target_raw: None,
        };
        n.set_name(OsStr::from_bytes(name));
        n
    }

    #[test]
    fn names_and_targets_that_are_not_utf8_round_trip_exactly() {
        let mut n = node(b"caf\xe9");
        n.set_target(OsStr::from_bytes(b"../\xff\xfe/x"));
        let json = serde_json::to_string(&n).unwrap();
        assert!(json.contains("\"name_raw\":\"636166e9\""), "{json}");
        let back: Node = serde_json::from_str(&json).unwrap();
        assert_eq!(back.os_name().as_bytes(), b"caf\xe9");
        assert_eq!(back.os_target().unwrap().as_bytes(), b"../\xff\xfe/x");
        assert_eq!(back.name, "caf\u{fffd}");

        // UTF-8 names stay as they always were: no raw field.
        let plain = node("ünï".as_bytes());
        let json = serde_json::to_string(&plain).unwrap();
        assert!(!json.contains("name_raw"), "{json}");
    }

    #[test]
    fn find_tells_apart_names_with_the_same_rendering() {
        let mut nodes = vec![node(b"a\xfe"), node(b"a\xff"), node(b"b")];
        nodes.sort_by(|x, y| x.name_bytes().cmp(y.name_bytes()));
        let t = Tree { nodes };
        assert_eq!(t.find_bytes(b"a\xff").unwrap().name_bytes(), b"a\xff");
        assert_eq!(t.find_bytes(b"a\xfe").unwrap().name_bytes(), b"a\xfe");
        assert!(t.find("b").is_some());
    }
}
