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
/// caps how many of them stay around idle, `keep_bytes` their capacity together.
pub struct Pool {
    idle: Mutex<Vec<Vec<u8>>>,
    keep: usize,
    keep_bytes: usize,
}

/// Packs read from a local store (restore, verify): 2 idle at most (8 MiB packs: 16 MiB) —
/// more made a restore's peak memory higher, not the restore faster.
pub static READS: Pool = Pool::new(2, usize::MAX);
/// Packs being built by a backup: one filling, one queued, two being stored.
pub static PACKS: Pool = Pool::new(4, usize::MAX);
/// Objects read from S3 (restore, drill, verify, sync): a restore keeps up to 96 MiB of
/// packs in flight (`restore::REMOTE_BYTES_IN_FLIGHT`: twelve 8 MiB packs), each body read
/// into one of these as it arrives. With fewer kept idle, a pack arriving while another's
/// buffer had just been freed took a fresh mapping — faulted in, zeroed and charged to the
/// cgroup page by page: 8 % of a restore's CPU from Garage (2026-12-05). Idle buffers never
/// exceed what was in use at once, and at most 96 MiB of them stay.
pub static REMOTE_READS: Pool = Pool::new(12, 96 << 20);

impl Pool {
    const fn new(keep: usize, keep_bytes: usize) -> Self {
        Pool {
            idle: Mutex::new(Vec::new()),
            keep,
            keep_bytes,
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
        let held: usize = idle.iter().map(Vec::capacity).sum();
        if idle.len() < self.1.keep && held.saturating_add(b.capacity()) <= self.1.keep_bytes {
            idle.push(b);
        }
    }
}
