//! Reused pack-sized buffers. Restore and verify read one 8 MiB pack after another, and a
//! backup builds one after another; a fresh buffer each time is a fresh mapping (glibc serves
//! blocks that large with mmap, see `cli::tune_malloc`) that the kernel must fault in and
//! zero — measured as a fifth of a dump restore. Buffers come back here when the last `Bytes`
//! referring to them is dropped.

use std::sync::Mutex;

use bytes::Bytes;

/// Smaller buffers use the allocator as usual.
pub const MIN: usize = 1 << 20;

/// A pool of idle buffers. Only as many buffers as were in use at once ever exist; `keep`
/// caps how many of them stay around idle.
pub struct Pool {
    idle: Mutex<Vec<Vec<u8>>>,
    keep: usize,
}

/// Packs read from a local store (restore, verify): 2 idle at most (8 MiB packs: 16 MiB) —
/// more made a restore's peak memory higher, not the restore faster.
pub static READS: Pool = Pool::new(2);
/// Packs being built by a backup: one filling, one queued, two being stored.
pub static PACKS: Pool = Pool::new(4);

impl Pool {
    const fn new(keep: usize) -> Self {
        Pool {
            idle: Mutex::new(Vec::new()),
            keep,
        }
    }

    /// An empty buffer with room for `len` bytes (a pooled one when `len` is pack-sized).
    pub fn take(&self, len: usize) -> Vec<u8> {
        if len < MIN {
            return Vec::with_capacity(len);
        }
        let mut idle = self.idle.lock().expect("buffer pool");
        match idle.iter().position(|b| b.capacity() >= len) {
            Some(i) => idle.swap_remove(i),
            // Packs differ in size by a few KiB: an idle buffer a little too small is grown
            // (mremap, no copy: it is empty) rather than left idle beside a new one.
            None => match idle.pop() {
                Some(mut b) => {
                    drop(idle);
                    b.reserve_exact(len);
                    b
                }
                None => Vec::with_capacity(len),
            },
        }
    }

    /// Wraps a buffer: pack-sized ones return to this pool when the last `Bytes` is dropped.
    pub fn into_bytes(&'static self, buf: Vec<u8>) -> Bytes {
        if buf.capacity() >= MIN {
            Bytes::from_owner(Pooled(buf, self))
        } else {
            Bytes::from(buf)
        }
    }
}

/// Owns a pooled buffer inside a `Bytes`; gives it back on drop.
struct Pooled(Vec<u8>, &'static Pool);

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let mut b = std::mem::take(&mut self.0);
        b.clear();
        let mut idle = self.1.idle.lock().expect("buffer pool");
        if idle.len() < self.1.keep {
            idle.push(b);
        }
    }
}
