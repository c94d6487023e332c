//! Packs: many encrypted blobs followed by an encrypted header and an 8-byte trailer.
//!
//! ```text
//! blob 0 sealed | blob 1 sealed | … | header sealed | header_len: u32 LE | b"LBP1"
//! ```
//! A sealed blob is `nonce(24) || ciphertext || tag(16)`; its plaintext is a one-byte
//! compression tag (0 raw, 1 zstd) followed by the payload, and its associated data binds
//! the repository id, the blob type and the blob id. The header lists
//! `(type, id, offset, length, raw_length)` per blob. A pack's name is blake3 of all its bytes.
//!
//! Parsing never trusts a length field: every length is bounded by the bytes actually present
//! before anything is allocated (SR-17).

use serde::{Deserialize, Serialize};

use crate::crypto::{Keys, NONCE_LEN, OVERHEAD};
use crate::ids::{BlobId, PackId, RepoId};
use crate::{Error, Result};

pub const TRAILER_LEN: usize = 8;
const MAGIC: &[u8; 4] = b"LBP1";
const HEADER_MAGIC: &[u8; 4] = b"LBH1";
const ENTRY_LEN: usize = 1 + 32 + 4 + 4 + 4;
/// Upper bound on a decompressed blob (the chunker's max is far below this).
pub const MAX_BLOB_LEN: u32 = 64 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobKind {
    Data,
    Tree,
}

impl BlobKind {
    fn tag(self) -> u8 {
        match self {
            BlobKind::Data => b'D',
            BlobKind::Tree => b'T',
        }
    }
    fn from_tag(t: u8) -> Option<Self> {
        match t {
            b'D' => Some(BlobKind::Data),
            b'T' => Some(BlobKind::Tree),
            _ => None,
        }
    }
}

/// One blob's place in a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackEntry {
    pub kind: BlobKind,
    pub id: BlobId,
    pub offset: u32,
    pub length: u32,
    pub raw_length: u32,
}

pub fn blob_aad(repo: &RepoId, kind: BlobKind, id: &BlobId) -> [u8; 8 + 32 + 1 + 32] {
    let mut aad = [0u8; 73];
    aad[..8].copy_from_slice(b"lbblob1\0");
    aad[8..40].copy_from_slice(repo.as_bytes());
    aad[40] = kind.tag();
    aad[41..].copy_from_slice(id.as_bytes());
    aad
}

pub fn header_aad(repo: &RepoId) -> [u8; 40] {
    let mut aad = [0u8; 40];
    aad[..8].copy_from_slice(b"lbhead1\0");
    aad[8..].copy_from_slice(repo.as_bytes());
    aad
}

thread_local! {
    /// One zstd context per thread, reused for every blob: no per-blob workspace allocation.
    static ZSTD: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { std::cell::RefCell::new(None) };
    static UNZSTD: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { std::cell::RefCell::new(None) };
    static UNZSTD_EACH: std::cell::RefCell<Option<zstd::stream::raw::Decoder<'static>>> = const { std::cell::RefCell::new(None) };
}

/// A compressor for `level`. At the fast levels (1, 2) the strategy is pinned to `fast`:
/// zstd would otherwise switch inputs of 16–256 KiB (most small files) to `dfast`, a third
/// slower for a compression ratio within a fraction of a percent on such files.
fn compressor(level: i32) -> Option<zstd::bulk::Compressor<'static>> {
    use zstd::stream::raw::CParameter;
    let mut c = zstd::bulk::Compressor::new(level).ok()?;
    if level <= 2 {
        c.set_parameter(CParameter::Strategy(zstd::zstd_safe::Strategy::ZSTD_fast))
            .ok()?;
    }
    Some(c)
}

/// Compresses (when that helps) and seals one blob, appending it to `out`.
/// Returns the sealed length. The body is compressed straight into `out` and encrypted where
/// it lies: no intermediate copy of the blob.
pub fn seal_blob(
    keys: &Keys,
    repo: &RepoId,
    kind: BlobKind,
    id: &BlobId,
    plain: &[u8],
    level: i32,
    out: &mut Vec<u8>,
) -> usize {
    let start = out.len();
    let bound = zstd::zstd_safe::compress_bound(plain.len()).max(plain.len());
    out.reserve(OVERHEAD + 1 + bound);
    out.extend_from_slice(&[0u8; NONCE_LEN]);
    out.push(1u8);
    let body = out.len();
    let compressed = level > 0
        && ZSTD.with(|z| {
            let mut z = z.borrow_mut();
            if z.as_ref().map(|(l, _)| *l) != Some(level) {
                *z = compressor(level).map(|c| (level, c));
            }
            let Some((_, c)) = z.as_mut() else {
                return false;
            };
            let mut cursor = std::io::Cursor::new(&mut *out);
            cursor.set_position(body as u64);
            matches!(c.compress_to_buffer(plain, &mut cursor), Ok(n) if n < plain.len())
        });
    if !compressed {
        out.truncate(body);
        out[body - 1] = 0u8;
        out.extend_from_slice(plain);
    }
    keys.seal_in_place(&blob_aad(repo, kind, id), out, start);
    out.len() - start
}

/// Checks a blob just sealed by [`seal_blob`] the way a restore will read it
/// ([`check_blob`]).
#[allow(clippy::too_many_arguments)]
pub fn check_sealed(
    keys: &Keys,
    repo: &RepoId,
    kind: BlobKind,
    id: &BlobId,
    raw_length: u32,
    sealed: &[u8],
    body: &mut Vec<u8>,
    piece: &mut Vec<u8>,
) -> Result<()> {
    let entry = PackEntry {
        kind,
        id: *id,
        offset: 0,
        length: sealed.len() as u32,
        raw_length,
    };
    check_blob(keys, repo, &entry, sealed, body, piece)
}

/// Decrypts, decompresses and re-hashes a sealed blob without keeping its plaintext: it is
/// decompressed and hashed a piece at a time, so checking needs no plaintext-sized buffer
/// and the hash reads each piece while it is still in the cache. `body` and `piece` are
/// scratch buffers, reused from blob to blob.
pub fn check_blob(
    keys: &Keys,
    repo: &RepoId,
    entry: &PackEntry,
    sealed: &[u8],
    body: &mut Vec<u8>,
    piece: &mut Vec<u8>,
) -> Result<()> {
    let mut h = keys.blob_id_hasher();
    let n = if decrypt(keys, repo, entry, sealed, body)? {
        unzstd_each(&body[1..], entry.raw_length as usize, piece, |p| {
            h.update(p);
        })
        .map_err(|e| decompression_failed(entry, e))?
    } else {
        h.update(&body[1..]);
        body.len() - 1
    };
    check_opened(entry, n, BlobId::from_bytes(*h.finalize().as_bytes()))
}

/// Piece size of [`unzstd_each`] (zstd's largest block).
const PIECE: usize = 128 << 10;

/// zstd-decompresses `src` a piece at a time through `scratch`, handing each piece to `sink`;
/// more than `limit` bytes, or a frame that ends early, is an error. Returns the length.
fn unzstd_each(
    src: &[u8],
    limit: usize,
    scratch: &mut Vec<u8>,
    mut sink: impl FnMut(&[u8]),
) -> std::io::Result<usize> {
    use zstd::stream::raw::{Decoder, InBuffer, Operation, OutBuffer};
    scratch.resize(PIECE, 0);
    UNZSTD_EACH.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(Decoder::new()?);
        }
        let d = d.as_mut().expect("set above");
        d.reinit()?;
        let mut input = InBuffer::around(src);
        let mut total = 0usize;
        loop {
            let mut out = OutBuffer::around(&mut scratch[..]);
            let left = d.run(&mut input, &mut out)?;
            let n = out.pos();
            total += n;
            if total > limit {
                return Err(std::io::Error::other("longer than its declared length"));
            }
            sink(&scratch[..n]);
            if left == 0 {
                if input.pos() != src.len() {
                    return Err(std::io::Error::other("data after the end of the frame"));
                }
                return Ok(total);
            }
            if n == 0 && input.pos() == src.len() {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    })
}

/// Opens a sealed blob, decompresses it and checks its keyed hash against `entry.id`.
pub fn open_blob(keys: &Keys, repo: &RepoId, entry: &PackEntry, sealed: &[u8]) -> Result<Vec<u8>> {
    let (mut body, mut plain) = (Vec::new(), Vec::new());
    match open_blob_into(keys, repo, entry, sealed, &mut body, &mut plain)? {
        Plain::Body => Ok(body.split_off(1)),
        Plain::Decompressed => Ok(plain),
    }
}

/// [`open_blob`] into reused buffers: the plaintext is in one of them.
pub fn open_blob_reusing<'a>(
    keys: &Keys,
    repo: &RepoId,
    entry: &PackEntry,
    sealed: &[u8],
    body: &'a mut Vec<u8>,
    plain: &'a mut Vec<u8>,
) -> Result<&'a [u8]> {
    Ok(
        match open_blob_into(keys, repo, entry, sealed, body, plain)? {
            Plain::Body => &body[1..],
            Plain::Decompressed => &plain[..],
        },
    )
}

/// Where [`open_blob_into`] left the plaintext.
enum Plain {
    /// Stored raw: `body[1..]`.
    Body,
    /// `plain`.
    Decompressed,
}

fn open_blob_into(
    keys: &Keys,
    repo: &RepoId,
    entry: &PackEntry,
    sealed: &[u8],
    body: &mut Vec<u8>,
    plain: &mut Vec<u8>,
) -> Result<Plain> {
    let where_ = if decrypt(keys, repo, entry, sealed, body)? {
        plain.clear();
        plain.reserve(entry.raw_length as usize);
        unzstd(&body[1..], &mut *plain).map_err(|e| decompression_failed(entry, e))?;
        Plain::Decompressed
    } else {
        Plain::Body
    };
    let out = match where_ {
        Plain::Body => &body[1..],
        Plain::Decompressed => &plain[..],
    };
    check_opened(entry, out.len(), keys.blob_id(out)).map(|()| where_)
}

/// Decrypts, decompresses and checks a blob into `out`, which must be exactly
/// `entry.raw_length` long; `body` is scratch space.
pub fn open_blob_to(
    keys: &Keys,
    repo: &RepoId,
    entry: &PackEntry,
    sealed: &[u8],
    body: &mut Vec<u8>,
    out: &mut [u8],
) -> Result<()> {
    debug_assert_eq!(out.len(), entry.raw_length as usize);
    let n = if decrypt(keys, repo, entry, sealed, body)? {
        unzstd(&body[1..], out).map_err(|e| decompression_failed(entry, e))?
    } else {
        let raw = &body[1..];
        if raw.len() == out.len() {
            out.copy_from_slice(raw);
        }
        raw.len()
    };
    check_opened(entry, n, keys.blob_id(out))
}

/// Decrypts a sealed blob into `body`; true when the body is compressed (after the tag byte).
fn decrypt(
    keys: &Keys,
    repo: &RepoId,
    entry: &PackEntry,
    sealed: &[u8],
    body: &mut Vec<u8>,
) -> Result<bool> {
    let what = || format!("blob {}", entry.id);
    keys.open_into(&blob_aad(repo, entry.kind, &entry.id), sealed, body)
        .map_err(|e| Error::integrity(what(), e))?;
    match body.first() {
        Some(0) => Ok(false),
        Some(1) if entry.raw_length > MAX_BLOB_LEN => {
            Err(Error::integrity(what(), "declared length is implausible"))
        }
        Some(1) => Ok(true),
        _ => Err(Error::integrity(what(), "unknown compression tag")),
    }
}

/// zstd-decompresses `src` into `dst` with this thread's reused decompressor.
fn unzstd<C: zstd::zstd_safe::WriteBuf + ?Sized>(
    src: &[u8],
    dst: &mut C,
) -> std::io::Result<usize> {
    UNZSTD.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new()?);
        }
        d.as_mut()
            .expect("set above")
            .decompress_to_buffer(src, dst)
    })
}

fn decompression_failed(entry: &PackEntry, e: std::io::Error) -> Error {
    Error::integrity(
        format!("blob {}", entry.id),
        format!("decompression failed: {e}"),
    )
}

/// The last step of opening a blob, whichever way it was decompressed: `len` bytes came out
/// and they hash to `id`; both must be what the index says.
fn check_opened(entry: &PackEntry, len: usize, id: BlobId) -> Result<()> {
    let what = || format!("blob {}", entry.id);
    if len != entry.raw_length as usize {
        return Err(Error::integrity(
            what(),
            format!("length {len} but index says {}", entry.raw_length),
        ));
    }
    if id != entry.id {
        return Err(Error::integrity(what(), "content does not match its id"));
    }
    Ok(())
}

/// Accumulates sealed blobs into one pack.
#[derive(Default)]
pub struct PackBuilder {
    buf: Vec<u8>,
    entries: Vec<PackEntry>,
    /// The pack's name, hashed blob by blob as each lands in `buf` (not at the end): a byte
    /// that changes in memory while the pack fills no longer matches the name, and the check
    /// before the pack is stored ([`check_finished`]) catches it.
    name: blake3::Hasher,
    /// Parity and checksums of the pack's bytes as they were verified, to mend them if they
    /// change before the store ([`mend`]).
    guard: StripeGuard,
}

pub struct FinishedPack {
    pub id: PackId,
    pub bytes: Vec<u8>,
    pub entries: Vec<PackEntry>,
    /// Parity and checksums of `bytes` taken as they were verified ([`mend`]).
    pub guard: StripeGuard,
}

/// Stripe size of a pack's [`StripeGuard`].
pub const STRIPE: usize = 64 << 10;

/// RAID-5-style redundancy for a pack while it sits in memory between its blobs'
/// verification and its store (T27): the pack's bytes are cut into [`STRIPE`]-byte stripes,
/// each with its CRC-32, and one parity stripe holds the XOR of them all. A change to the
/// bytes afterwards (faulty memory or CPU) shows as a stripe whose CRC no longer matches;
/// if it is the only one, its original bytes are the parity XOR every other stripe. Costs
/// 64 KiB and 4 bytes per stripe per pack, and one XOR pass over the bytes, instead of a
/// second copy of the pack.
#[derive(Clone)]
pub struct StripeGuard {
    parity: Vec<u8>,
    crcs: Vec<u32>,
    current: crc32fast::Hasher,
    len: usize,
}

impl Default for StripeGuard {
    fn default() -> Self {
        Self {
            parity: vec![0; STRIPE],
            crcs: Vec::new(),
            current: crc32fast::Hasher::new(),
            len: 0,
        }
    }
}

impl StripeGuard {
    /// Takes in the next bytes of the pack, in order.
    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let at = self.len % STRIPE;
            let n = bytes.len().min(STRIPE - at);
            for (p, b) in self.parity[at..at + n].iter_mut().zip(&bytes[..n]) {
                *p ^= *b;
            }
            self.current.update(&bytes[..n]);
            self.len += n;
            bytes = &bytes[n..];
            if self.len.is_multiple_of(STRIPE) {
                let done = std::mem::replace(&mut self.current, crc32fast::Hasher::new());
                self.crcs.push(done.finalize());
            }
        }
    }

    /// Ends the pack (a last, shorter stripe gets its CRC too).
    fn close(&mut self) {
        if !self.len.is_multiple_of(STRIPE) {
            let done = std::mem::replace(&mut self.current, crc32fast::Hasher::new());
            self.crcs.push(done.finalize());
        }
    }
}

/// Mends a finished pack whose bytes changed in memory after they were verified (what
/// [`check_finished`] found): finds the stripe whose CRC-32 no longer matches and rebuilds it
/// from the parity and the other stripes. Returns the stripe's index, or why the pack cannot
/// be mended (its length changed, no stripe or more than one stripe differs). The caller
/// checks the mended pack again with [`check_finished`] before storing it.
pub fn mend(pack: &mut FinishedPack) -> std::result::Result<usize, String> {
    let g = &pack.guard;
    let bytes = &mut pack.bytes;
    if g.len != bytes.len() || g.crcs.len() != bytes.len().div_ceil(STRIPE) {
        return Err("its length changed".into());
    }
    let damaged: Vec<usize> = bytes
        .chunks(STRIPE)
        .zip(&g.crcs)
        .enumerate()
        .filter(|(_, (s, crc))| crc32fast::hash(s) != **crc)
        .map(|(i, _)| i)
        .collect();
    let d = match damaged[..] {
        [d] => d,
        [] => return Err("every stripe still matches its checksum".into()),
        _ => return Err(format!("{} of its stripes are damaged", damaged.len())),
    };
    let mut rebuilt = g.parity.clone();
    for (i, s) in bytes.chunks(STRIPE).enumerate().filter(|(i, _)| *i != d) {
        debug_assert!(i != d);
        for (r, b) in rebuilt.iter_mut().zip(s) {
            *r ^= *b;
        }
    }
    let start = d * STRIPE;
    let end = (start + STRIPE).min(bytes.len());
    let rebuilt = &rebuilt[..end - start];
    if crc32fast::hash(rebuilt) != g.crcs[d] {
        return Err(format!(
            "stripe {d} rebuilt from parity does not match its checksum"
        ));
    }
    bytes[start..end].copy_from_slice(rebuilt);
    Ok(d)
}

impl PackBuilder {
    /// A builder whose buffer (pooled when pack-sized) has room for `n` bytes.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            buf: crate::store::pool::PACKS.take(n),
            entries: Vec::new(),
            name: blake3::Hasher::new(),
            guard: StripeGuard::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends a sealed blob whose bytes were verified (decrypted, decompressed, re-hashed)
    /// and then checksummed to `crc` (CRC-32): the copy in the pack is checked against it, so
    /// a bit flipped since the verification does not go unnoticed.
    /// False (and nothing appended) when the copy differs: seal the blob again.
    pub fn push_verified(
        &mut self,
        kind: BlobKind,
        id: BlobId,
        raw_length: u32,
        sealed: &[u8],
        crc: u32,
    ) -> bool {
        let at = self.buf.len();
        self.buf.extend_from_slice(sealed);
        if crc32fast::hash(&self.buf[at..]) != crc {
            self.buf.truncate(at);
            return false;
        }
        self.commit(kind, id, raw_length, at);
        true
    }

    /// Records the blob that now occupies `buf[at..]`.
    fn commit(&mut self, kind: BlobKind, id: BlobId, raw_length: u32, at: usize) {
        self.name.update(&self.buf[at..]);
        self.guard.feed(&self.buf[at..]);
        self.entries.push(PackEntry {
            kind,
            id,
            offset: at as u32,
            length: (self.buf.len() - at) as u32,
            raw_length,
        });
    }

    pub fn finish(mut self, keys: &Keys, repo: &RepoId) -> FinishedPack {
        let mut header = Vec::with_capacity(8 + self.entries.len() * ENTRY_LEN);
        header.extend_from_slice(HEADER_MAGIC);
        header.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for e in &self.entries {
            header.push(e.kind.tag());
            header.extend_from_slice(e.id.as_bytes());
            header.extend_from_slice(&e.offset.to_le_bytes());
            header.extend_from_slice(&e.length.to_le_bytes());
            header.extend_from_slice(&e.raw_length.to_le_bytes());
        }
        let before = self.buf.len();
        keys.seal_into(&header_aad(repo), &header, &mut self.buf);
        let sealed_len = (self.buf.len() - before) as u32;
        self.buf.extend_from_slice(&sealed_len.to_le_bytes());
        self.buf.extend_from_slice(MAGIC);
        self.name.update(&self.buf[before..]);
        self.guard.feed(&self.buf[before..]);
        self.guard.close();
        FinishedPack {
            id: PackId::from_hash(self.name.finalize()),
            bytes: self.buf,
            entries: self.entries,
            guard: self.guard,
        }
    }
}

/// Where the sealed header sits, given the trailer (the last 8 bytes) and the pack size.
pub fn header_range(pack: &PackId, pack_size: u64, trailer: &[u8]) -> Result<(u64, u64)> {
    let what = || format!("pack {pack}");
    if pack_size < TRAILER_LEN as u64 || trailer.len() != TRAILER_LEN {
        return Err(Error::integrity(
            what(),
            "too short to be a pack (truncated?)",
        ));
    }
    if &trailer[4..] != MAGIC {
        return Err(Error::integrity(
            what(),
            "trailer magic missing (truncated or not a pack)",
        ));
    }
    let len = u32::from_le_bytes(trailer[..4].try_into().expect("4 bytes")) as u64;
    if len < OVERHEAD as u64 + 8 || len > pack_size - TRAILER_LEN as u64 {
        return Err(Error::integrity(
            what(),
            format!("header length {len} is impossible for a pack of {pack_size} bytes"),
        ));
    }
    Ok((pack_size - TRAILER_LEN as u64 - len, len))
}

/// Decrypts and parses a sealed header. `blobs_end` is where the header starts: every entry
/// must lie inside `[0, blobs_end)`.
pub fn parse_header(
    keys: &Keys,
    repo: &RepoId,
    pack: &PackId,
    sealed: &[u8],
    blobs_end: u64,
) -> Result<Vec<PackEntry>> {
    let what = || format!("pack {pack} header");
    let plain = keys
        .open(&header_aad(repo), sealed)
        .map_err(|e| Error::integrity(what(), e))?;
    if plain.len() < 8 || &plain[..4] != HEADER_MAGIC {
        return Err(Error::integrity(what(), "bad header magic"));
    }
    let count = u32::from_le_bytes(plain[4..8].try_into().expect("4 bytes")) as usize;
    if plain.len() != 8 + count * ENTRY_LEN {
        return Err(Error::integrity(
            what(),
            "header length does not match its entry count",
        ));
    }
    let mut entries = Vec::with_capacity(count);
    for raw in plain[8..].chunks_exact(ENTRY_LEN) {
        let kind = BlobKind::from_tag(raw[0])
            .ok_or_else(|| Error::integrity(what(), "unknown blob type"))?;
        let id = BlobId(raw[1..33].try_into().expect("32 bytes"));
        let u = |i: usize| u32::from_le_bytes(raw[i..i + 4].try_into().expect("4 bytes"));
        let e = PackEntry {
            kind,
            id,
            offset: u(33),
            length: u(37),
            raw_length: u(41),
        };
        if e.offset as u64 + e.length as u64 > blobs_end || (e.length as usize) < OVERHEAD + 1 {
            return Err(Error::integrity(
                what(),
                format!("entry for blob {} points outside the pack", e.id),
            ));
        }
        entries.push(e);
    }
    Ok(entries)
}

/// Full verification of a pack's bytes: name = hash, header authentic, every blob decrypts,
/// decompresses and hashes to its id. Returns the entries.
pub fn verify_pack(
    keys: &Keys,
    repo: &RepoId,
    id: &PackId,
    bytes: &[u8],
) -> Result<Vec<PackEntry>> {
    if PackId::of(bytes) != *id {
        return Err(Error::integrity(
            format!("pack {id}"),
            "content hash does not match its name",
        ));
    }
    verify_pack_contents(keys, repo, id, bytes)
}

/// The check of a pack built from verified blobs ([`PackBuilder::push_verified`]) before it
/// is stored: its bytes still hash to the name computed blob by blob as they arrived, and
/// its header decrypts to exactly the blobs that were put in. With the blobs' own
/// verification this covers every byte from sealing to the store, without decompressing
/// the pack a second time.
pub fn check_finished(keys: &Keys, repo: &RepoId, pack: &FinishedPack) -> Result<()> {
    let what = || format!("pack {}", pack.id);
    if PackId::of(&pack.bytes) != pack.id {
        return Err(Error::integrity(
            what(),
            "its bytes changed in memory after its blobs were verified",
        ));
    }
    let bytes = &pack.bytes;
    let trailer = &bytes[bytes.len().saturating_sub(TRAILER_LEN)..];
    let (off, len) = header_range(&pack.id, bytes.len() as u64, trailer)?;
    let entries = parse_header(
        keys,
        repo,
        &pack.id,
        &bytes[off as usize..(off + len) as usize],
        off,
    )?;
    if entries != pack.entries {
        return Err(Error::integrity(
            what(),
            "its header does not list the blobs that were packed",
        ));
    }
    Ok(())
}

/// [`verify_pack`] after the name check: header authentic, every blob decrypts,
/// decompresses and hashes to its id.
fn verify_pack_contents(
    keys: &Keys,
    repo: &RepoId,
    id: &PackId,
    bytes: &[u8],
) -> Result<Vec<PackEntry>> {
    let size = bytes.len() as u64;
    let trailer = &bytes[bytes.len().saturating_sub(TRAILER_LEN)..];
    let (off, len) = header_range(id, size, trailer)?;
    let entries = parse_header(
        keys,
        repo,
        id,
        &bytes[off as usize..(off + len) as usize],
        off,
    )?;
    // One pair of buffers for all the pack's blobs: checking allocates (and the kernel faults
    // in) nothing per blob.
    let (mut body, mut piece) = (Vec::new(), Vec::new());
    for e in &entries {
        let sealed = &bytes[e.offset as usize..(e.offset + e.length) as usize];
        check_blob(keys, repo, e, sealed, &mut body, &mut piece).map_err(|err| match err {
            Error::Integrity { detail, .. } => {
                Error::integrity(format!("pack {id}"), format!("blob {}: {detail}", e.id))
            }
            other => other,
        })?;
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;

    fn build(keys: &Keys, repo: &RepoId, blobs: &[&[u8]]) -> FinishedPack {
        let mut b = PackBuilder::default();
        for data in blobs {
            let id = keys.blob_id(data);
            let mut sealed = Vec::new();
            seal_blob(keys, repo, BlobKind::Data, &id, data, 3, &mut sealed);
            let crc = crc32fast::hash(&sealed);
            assert!(b.push_verified(BlobKind::Data, id, data.len() as u32, &sealed, crc));
        }
        b.finish(keys, repo)
    }

    #[test]
    fn pack_round_trip_and_every_bit_flip_is_caught() {
        let keys = Keys::derive(&MasterKey::generate());
        let repo = RepoId::random();
        let big = vec![7u8; 10_000];
        let pack = build(&keys, &repo, &[b"alpha", &big, b""]);
        let entries = verify_pack(&keys, &repo, &pack.id, &pack.bytes).unwrap();
        assert_eq!(entries, pack.entries);
        // zeros compress: the sealed blob is much smaller than the raw one
        assert!(entries[1].length < 1000);
        for i in (0..pack.bytes.len()).step_by(7) {
            let mut bad = pack.bytes.clone();
            bad[i] ^= 0x10;
            assert!(
                verify_pack(&keys, &repo, &pack.id, &bad).is_err(),
                "flip at {i}"
            );
            // even when the name is recomputed, the AEAD catches it
            let id = PackId::of(&bad);
            assert!(
                verify_pack(&keys, &repo, &id, &bad).is_err(),
                "flip at {i} with new name"
            );
        }
    }

    /// T27: a pack whose bytes change in memory after their verification is mended from its
    /// stripe parity, wherever the flip lands (blob, header or trailer, first or last
    /// stripe); two damaged stripes cannot be mended and are refused.
    #[test]
    fn a_pack_damaged_in_memory_is_mended_from_its_parity() {
        let keys = Keys::derive(&MasterKey::generate());
        let repo = RepoId::random();
        // Incompressible (xorshift), so the pack spans several stripes.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let big: Vec<u8> = (0..300_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let pack = build(&keys, &repo, &[b"alpha", &big, &big[..70_000], b"omega"]);
        assert!(pack.bytes.len() > 4 * STRIPE && !pack.bytes.len().is_multiple_of(STRIPE));
        let copy = |p: &FinishedPack| FinishedPack {
            id: p.id,
            bytes: p.bytes.clone(),
            entries: p.entries.clone(),
            guard: p.guard.clone(),
        };
        let len = pack.bytes.len();
        for i in [
            0,
            1,
            STRIPE - 1,
            STRIPE,
            2 * STRIPE + 77,
            len / 2,
            len - 9,
            len - 1,
        ] {
            let mut bad = copy(&pack);
            bad.bytes[i] ^= 0x10;
            assert!(check_finished(&keys, &repo, &bad).is_err(), "flip at {i}");
            assert_eq!(mend(&mut bad), Ok(i / STRIPE), "flip at {i}");
            assert_eq!(bad.bytes, pack.bytes, "flip at {i}");
            check_finished(&keys, &repo, &bad).unwrap();
        }
        // Every byte of one stripe overwritten: still mended.
        let mut bad = copy(&pack);
        bad.bytes[STRIPE..2 * STRIPE].fill(0xAA);
        assert_eq!(mend(&mut bad), Ok(1));
        assert_eq!(bad.bytes, pack.bytes);
        // Two stripes damaged: refused, bytes left as they were.
        let mut bad = copy(&pack);
        bad.bytes[10] ^= 1;
        bad.bytes[3 * STRIPE + 10] ^= 1;
        let damaged = bad.bytes.clone();
        let why = mend(&mut bad).unwrap_err();
        assert!(why.contains("2 of its stripes"), "{why}");
        assert_eq!(bad.bytes, damaged);
        // A changed length cannot be mended.
        let mut bad = copy(&pack);
        bad.bytes.pop();
        assert!(mend(&mut bad).unwrap_err().contains("length"));
        // An intact pack has nothing to mend.
        assert!(mend(&mut copy(&pack)).is_err());
    }

    #[test]
    fn packs_named_blob_by_blob_match_their_bytes_and_catch_later_flips() {
        let keys = Keys::derive(&MasterKey::generate());
        let repo = RepoId::random();
        let mut b = PackBuilder::default();
        let (mut body, mut plain) = (Vec::new(), Vec::new());
        for data in [&b"alpha"[..], &[9u8; 5000][..], b""] {
            let id = keys.blob_id(data);
            let mut sealed = Vec::new();
            seal_blob(&keys, &repo, BlobKind::Data, &id, data, 3, &mut sealed);
            let n = data.len() as u32;
            check_sealed(
                &keys,
                &repo,
                BlobKind::Data,
                &id,
                n,
                &sealed,
                &mut body,
                &mut plain,
            )
            .unwrap();
            let crc = crc32fast::hash(&sealed);
            // A copy that differs from what was checksummed is refused and leaves no trace.
            let before = b.len();
            assert!(!b.push_verified(BlobKind::Data, id, n, &sealed, crc ^ 1));
            assert_eq!(b.len(), before);
            assert!(b.push_verified(BlobKind::Data, id, n, &sealed, crc));
            // A sealed blob with a flipped bit fails its own check.
            let mut bad = sealed.clone();
            bad[sealed.len() / 2] ^= 1;
            assert!(check_sealed(
                &keys,
                &repo,
                BlobKind::Data,
                &id,
                n,
                &bad,
                &mut body,
                &mut plain
            )
            .is_err());
        }
        let pack = b.finish(&keys, &repo);
        assert_eq!(pack.id, PackId::of(&pack.bytes), "incremental name");
        check_finished(&keys, &repo, &pack).unwrap();
        assert_eq!(
            verify_pack(&keys, &repo, &pack.id, &pack.bytes).unwrap(),
            pack.entries
        );
        for i in (0..pack.bytes.len()).step_by(11) {
            let mut bad = FinishedPack {
                id: pack.id,
                bytes: pack.bytes.clone(),
                entries: pack.entries.clone(),
                guard: pack.guard.clone(),
            };
            bad.bytes[i] ^= 0x40;
            assert!(check_finished(&keys, &repo, &bad).is_err(), "flip at {i}");
        }
        // A header that does not list what was packed is caught too.
        let mut short = FinishedPack {
            id: pack.id,
            bytes: pack.bytes.clone(),
            entries: pack.entries.clone(),
            guard: pack.guard.clone(),
        };
        short.entries.pop();
        assert!(check_finished(&keys, &repo, &short).is_err());
    }

    #[test]
    fn truncated_or_foreign_packs_fail_cleanly() {
        let keys = Keys::derive(&MasterKey::generate());
        let repo = RepoId::random();
        let pack = build(&keys, &repo, &[b"x"]);
        for cut in [0usize, 1, 7, 8, 20, pack.bytes.len() - 1] {
            let bytes = &pack.bytes[..cut];
            let id = PackId::of(bytes);
            assert!(matches!(
                verify_pack(&keys, &repo, &id, bytes),
                Err(Error::Integrity { .. })
            ));
        }
        // same keys, other repository id: the AAD binding refuses it
        let other = RepoId::random();
        assert!(verify_pack(&keys, &other, &pack.id, &pack.bytes).is_err());
        // a header claiming a huge length is refused before allocating
        let mut bad = pack.bytes.clone();
        let n = bad.len();
        bad[n - 8..n - 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let id = PackId::of(&bad);
        assert!(verify_pack(&keys, &repo, &id, &bad).is_err());
    }
}

/// What a full read of one pack found, blob by blob (for `verify`, which must name the
/// damaged blobs and keep going rather than stop at the first problem).
#[derive(Debug, Default)]
pub struct PackCheck {
    pub hash_ok: bool,
    /// `None` when the header itself is unreadable: every blob of the pack is then lost.
    pub entries: Option<Vec<PackEntry>>,
    pub header_error: Option<String>,
    pub bad_blobs: Vec<(BlobId, String)>,
}

pub fn check_pack(keys: &Keys, repo: &RepoId, id: &PackId, bytes: &[u8]) -> PackCheck {
    let mut c = PackCheck {
        hash_ok: PackId::of(bytes) == *id,
        ..Default::default()
    };
    let trailer = &bytes[bytes.len().saturating_sub(TRAILER_LEN)..];
    let entries = header_range(id, bytes.len() as u64, trailer).and_then(|(off, len)| {
        parse_header(
            keys,
            repo,
            id,
            &bytes[off as usize..(off + len) as usize],
            off,
        )
    });
    match entries {
        Ok(entries) => {
            let (mut body, mut piece) = (Vec::new(), Vec::new());
            for e in &entries {
                let sealed = &bytes[e.offset as usize..(e.offset + e.length) as usize];
                if let Err(err) = check_blob(keys, repo, e, sealed, &mut body, &mut piece) {
                    let detail = match err {
                        Error::Integrity { detail, .. } => detail,
                        other => other.to_string(),
                    };
                    c.bad_blobs.push((e.id, detail));
                }
            }
            c.entries = Some(entries);
        }
        Err(e) => {
            c.header_error = Some(match e {
                Error::Integrity { detail, .. } => detail,
                other => other.to_string(),
            })
        }
    }
    c
}
