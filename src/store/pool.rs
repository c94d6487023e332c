//! Reused pack-sized buffers. Restore and verify read one 8 MiB pack after another, and a
//! backup builds one after another; a fresh buffer each time is a fresh mapping (glibc serves
//! blocks that large with mmap, see `cli::tune_malloc`) that the kernel must fault in and
//! zero — measured as a fifth of a dump restore. Buffers come back here when the last `Bytes`
//! referring to them is dropped.

use std::sync::Mutex;

use bytes::Bytes;

/// Smaller buffers use the allocator as usual.
pub const MIN: usize = 1 << 20;
/// At most this many idle buffers are kept (8 MiB packs: 32 MiB). Only as many as were in
/// use at once ever exist: 2–3 for a restore, 4 for a backup (one filling, one queued, two
/// being stored).
const KEEP: usize = 4;
static IDLE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// An empty buffer with room for `len` bytes (a pooled one when `len` is pack-sized).
pub fn take(len: usize) -> Vec<u8> {
    if len < MIN {
        return Vec::with_capacity(len);
    }
    let mut idle = IDLE.lock().expect("buffer pool");
    match idle.iter().position(|b| b.capacity() >= len) {
        Some(i) => idle.swap_remove(i),
        None => Vec::with_capacity(len),
    }
}

/// Owns a pooled buffer inside a `Bytes`; gives it back on drop.
struct Pooled(Vec<u8>);

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let mut b = std::mem::take(&mut self.0);
        b.clear();
        let mut idle = IDLE.lock().expect("buffer pool");
        if idle.len() < KEEP {
            idle.push(b);
        }
    }
}

/// Wraps a buffer: pack-sized ones return to the pool when the last `Bytes` is dropped.
pub fn into_bytes(buf: Vec<u8>) -> Bytes {
    if buf.capacity() >= MIN {
        Bytes::from_owner(Pooled(buf))
    } else {
        Bytes::from(buf)
    }
}
