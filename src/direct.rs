//! Writes that bypass the page cache (`O_DIRECT`), for the two places that write a lot of
//! data once: the local store's pack files and restored files.
//!
//! A buffered write costs the kernel a fresh page-cache page per 4 KiB plus a copy, and on a
//! virtual machine the first touch of long-free guest memory is slower still — a 1 GiB
//! restore right after a run of backups spent 3.6 s of *system* time doing it (2026-11-24).
//! It also pushes the machine's working set (the service being backed up or restored) out of
//! the cache. A direct write goes from our buffer to the device.
//!
//! Direct I/O needs buffer address, file offset and length aligned to the logical block size;
//! [`ALIGN`] (4 KiB) satisfies every Linux file system. Where a file system refuses the flag
//! (`EINVAL`: some FUSE and network mounts, tmpfs on older kernels) everything falls back to
//! ordinary writes.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Mutex;

/// Alignment of buffer, offset and length that every Linux file system accepts.
pub const ALIGN: usize = 4096;

/// A zeroed heap buffer whose start is [`ALIGN`]-aligned and whose length is a multiple of it.
pub struct AlignedBuf {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the buffer is plain owned memory, like a Vec<u8>.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access only reads.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// At least `len` bytes (rounded up to [`ALIGN`]), zeroed.
    pub fn new(len: usize) -> Self {
        let len = len.max(1).next_multiple_of(ALIGN);
        let layout = Self::layout(len);
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        AlignedBuf { ptr, len }
    }

    fn layout(len: usize) -> Layout {
        Layout::from_size_align(len, ALIGN).expect("valid layout")
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl std::ops::Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` points to `len` initialised (zeroed, then written) bytes we own.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl std::ops::DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl AlignedBuf {
    /// Holds nothing (a stand-in while the real buffer is moved out).
    const fn empty() -> Self {
        AlignedBuf {
            ptr: ALIGN as *mut u8,
            len: 0,
        }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.len == 0 {
            return;
        }
        // SAFETY: allocated in `new` with the same layout.
        unsafe { dealloc(self.ptr, Self::layout(self.len)) }
    }
}

fn refused(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::EINVAL)
}

/// Objects at least this large are written directly by [`write_new`].
pub const MIN: usize = 1 << 20;
/// [`write_new`]'s aligned bounce buffer, one per write (a pack is 8 MiB: the buffer's own
/// page faults are noise; a per-thread one would linger on every thread of tokio's blocking
/// pool).
const BOUNCE: usize = 1 << 20;

/// Creates `path` (which must not exist) holding exactly `data`; not yet synced.
pub fn write_new(path: &Path, data: &[u8]) -> std::io::Result<File> {
    let opened = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_DIRECT)
        .open(path);
    let f = match opened {
        Ok(f) => f,
        Err(e) if refused(&e) => {
            // Some kernels create the file before refusing the flag; the name is ours.
            let _ = std::fs::remove_file(path);
            return buffered_new(path, data);
        }
        Err(e) => return Err(e),
    };
    match write_through_bounce(&f, data, &mut AlignedBuf::new(BOUNCE)) {
        Ok(()) => Ok(f),
        // Refused mid-way (a file system that accepts the flag but not these writes):
        // start over with an ordinary write.
        Err(e) if refused(&e) => {
            drop(f);
            std::fs::remove_file(path)?;
            buffered_new(path, data)
        }
        Err(e) => Err(e),
    }
}

fn buffered_new(path: &Path, data: &[u8]) -> std::io::Result<File> {
    let mut f = OpenOptions::new().write(true).create_new(true).open(path)?;
    f.write_all(data)?;
    Ok(f)
}

/// Copies `data` through the aligned buffer; the last block is zero-padded to the alignment
/// and the file then cut back to the exact length.
fn write_through_bounce(f: &File, data: &[u8], buf: &mut [u8]) -> std::io::Result<()> {
    let mut off = 0usize;
    while off < data.len() {
        let n = (data.len() - off).min(buf.len());
        buf[..n].copy_from_slice(&data[off..off + n]);
        let padded = n.next_multiple_of(ALIGN);
        buf[n..padded].fill(0);
        write_all_direct(f, &buf[..padded], off as u64)?;
        off += n;
    }
    f.set_len(data.len() as u64)
}

/// Writes aligned `buf` at aligned `offset` of a file opened with `O_DIRECT`.
fn write_all_direct(f: &File, buf: &[u8], offset: u64) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match f.write_at(&buf[done..], offset + done as u64) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            // A short direct write ends on a block boundary; anything else would make the
            // next write unaligned, so treat it as a refusal.
            Ok(w) if w % ALIGN != 0 && done + w < buf.len() => {
                return Err(std::io::Error::from_raw_os_error(libc::EINVAL))
            }
            Ok(w) => done += w,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Idle [`RangeWriter`] buffers: restore writes one range after another, and a fresh buffer
/// each time would be a fresh mapping the kernel faults in and zeroes.
static IDLE: Mutex<Vec<AlignedBuf>> = Mutex::new(Vec::new());
/// Idle buffers kept (one per pack restored at once from a local store).
const KEEP_IDLE: usize = 3;
/// A [`RangeWriter`] writes out what it holds once it holds this much. 4 MiB writes (8 MiB
/// buffers, smaller ones for short ranges) were measured on 2026-12-05 (docs/benchmarks.md):
/// no wall-time gain beyond the noise, 16 % more peak memory restoring from S3, where a
/// dozen packs are written at once, and a few MiB more locally — so 1 MiB, from pooled
/// buffers of one size.
pub const FLUSH_AT: usize = 1 << 20;
/// The largest [`RangeWriter`] buffer: any piece up to [`FLUSH_AT`] fits whatever the
/// buffer holds; a larger one is copied in by [`RangeWriter::write`].
const BUF_MAX: usize = 2 * FLUSH_AT;

/// What one [`RangeWriter`] wrote, and how.
#[derive(Debug, Default, Clone, Copy)]
pub struct RangeStats {
    /// Writes of whole aligned blocks past the page cache, and their bytes.
    pub direct: u64,
    pub direct_bytes: u64,
    /// Writes through the page cache (partial blocks at the range's ends, or everything
    /// where the file system refuses `O_DIRECT`), and their bytes.
    pub buffered: u64,
    pub buffered_bytes: u64,
}

/// Writes one contiguous byte range of an existing file, piece after piece, the way restore
/// needs it: a piece that fits is placed with [`RangeWriter::slot`] straight into an aligned
/// buffer (a blob is decompressed into it, no copy), a larger one copied in by
/// [`RangeWriter::write`]; whole 4 KiB blocks go to the disk directly, about [`FLUSH_AT`]
/// at a time, and only the partial blocks at the two ends of the range through the page
/// cache, the last one last.
pub struct RangeWriter<'a> {
    file: &'a File,
    /// The same file opened with `O_DIRECT`; `None` where the file system refuses it.
    direct: Option<&'a File>,
    buf: AlignedBuf,
    /// File offset of `buf[0]` (aligned).
    base: u64,
    /// `buf[start..end]` is data not yet written.
    start: usize,
    end: usize,
    stats: RangeStats,
}

impl<'a> RangeWriter<'a> {
    /// A range of `file` starting at `offset`; `direct` is the same file opened with
    /// [`open_direct`].
    pub fn new(file: &'a File, direct: Option<&'a File>, offset: u64) -> Self {
        let lead = (offset % ALIGN as u64) as usize;
        let buf = {
            let mut idle = IDLE.lock().expect("buffer pool");
            idle.pop()
        }
        .unwrap_or_else(|| AlignedBuf::new(BUF_MAX));
        RangeWriter {
            file,
            direct,
            buf,
            base: offset - lead as u64,
            start: lead,
            end: lead,
            stats: RangeStats::default(),
        }
    }

    /// The next `len` bytes of the range, to be filled by the caller (call
    /// [`RangeWriter::commit`] once they hold data); `None` when `len` is more than the
    /// buffer holds: use [`RangeWriter::write`].
    pub fn slot(&mut self, len: usize) -> std::io::Result<Option<&mut [u8]>> {
        if self.end + len > self.buf.len() {
            self.flush_blocks()?;
            if self.end + len > self.buf.len() {
                return Ok(None);
            }
        }
        Ok(Some(&mut self.buf[self.end..self.end + len]))
    }

    /// Appends `data` to the range (a copy, for pieces too large for [`RangeWriter::slot`]).
    pub fn write(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            let n = data.len().min(self.buf.len() - self.end);
            self.buf[self.end..self.end + n].copy_from_slice(&data[..n]);
            data = &data[n..];
            self.commit(n)?;
        }
        Ok(())
    }

    /// Marks the `len` bytes last handed out by `slot` as data.
    pub fn commit(&mut self, len: usize) -> std::io::Result<()> {
        self.end += len;
        debug_assert!(self.end <= self.buf.len());
        if self.end >= FLUSH_AT {
            self.flush_blocks()?;
        }
        Ok(())
    }

    /// Writes every whole block held; the partial last block moves to the buffer's start.
    fn flush_blocks(&mut self) -> std::io::Result<()> {
        let whole_end = self.end / ALIGN * ALIGN;
        if whole_end <= self.start {
            return Ok(());
        }
        // A partial first block (the range's start is unaligned) goes through the page cache.
        let first_whole = self.start.next_multiple_of(ALIGN);
        if first_whole > self.start {
            self.buffered(self.start, first_whole)?;
        }
        if whole_end > first_whole {
            let at = self.base + first_whole as u64;
            let wrote = match self.direct {
                Some(d) => match write_all_direct(d, &self.buf[first_whole..whole_end], at) {
                    Ok(()) => {
                        self.stats.direct += 1;
                        self.stats.direct_bytes += (whole_end - first_whole) as u64;
                        true
                    }
                    Err(e) if refused(&e) => {
                        self.direct = None;
                        false
                    }
                    Err(e) => return Err(e),
                },
                None => false,
            };
            if !wrote {
                self.buffered(first_whole, whole_end)?;
            }
        }
        let tail = self.end - whole_end;
        self.buf.copy_within(whole_end..self.end, 0);
        self.base += whole_end as u64;
        self.start = 0;
        self.end = tail;
        Ok(())
    }

    fn buffered(&mut self, from: usize, to: usize) -> std::io::Result<()> {
        self.stats.buffered += 1;
        self.stats.buffered_bytes += (to - from) as u64;
        self.file
            .write_all_at(&self.buf[from..to], self.base + from as u64)
    }

    /// Writes what is left (the partial last block last); the buffer goes back to the pool.
    pub fn finish(mut self) -> std::io::Result<RangeStats> {
        self.flush_blocks()?;
        if self.end > self.start {
            self.buffered(self.start, self.end)?;
        }
        Ok(self.stats)
    }
}

impl Drop for RangeWriter<'_> {
    fn drop(&mut self) {
        let buf = std::mem::replace(&mut self.buf, AlignedBuf::empty());
        let mut idle = IDLE.lock().expect("buffer pool");
        if idle.len() < KEEP_IDLE {
            idle.push(buf);
        }
    }
}

/// Gives a new, empty `file` its final length `len` with the blocks allocated up front
/// (`fallocate`), falling back to a plain size change where the file system cannot.
///
/// Restore writes several ranges of a large file at once. A direct write that must allocate
/// blocks holds the inode's lock exclusively while the device writes (ext4), so the writers
/// queue behind each other; into blocks already allocated (unwritten extents) the same
/// writes share the lock. It also keeps the file in few extents and, where the disk is too
/// small, fails at once instead of half-way through.
pub fn preallocate(file: &File, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    if len == 0 {
        return Ok(());
    }
    let Ok(l) = libc::off_t::try_from(len) else {
        return file.set_len(len);
    };
    // SAFETY: a valid descriptor we own; fallocate has no memory arguments.
    if unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, l) } == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL) => file.set_len(len),
        _ => Err(e),
    }
}

/// Opens an existing file for direct writes; `None` where the file system refuses `O_DIRECT`.
pub fn open_direct(path: &Path) -> std::io::Result<Option<File>> {
    match OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
    {
        Ok(f) => Ok(Some(f)),
        Err(e) if refused(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_writer_places_every_byte_whatever_the_alignment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let total = 3 * FLUSH_AT + 12_345;
        let data: Vec<u8> = (0..total).map(|i| (i * 7 + i / 4096) as u8).collect();
        // Ranges that start and end on and off block boundaries, in pieces of odd sizes
        // (one larger than the buffer), written out of order, as restore does.
        let cuts = [0, 4096, 5000, FLUSH_AT + 1, 3 * FLUSH_AT, total];
        let f = File::create(&path).unwrap();
        f.set_len(total as u64).unwrap();
        let d = open_direct(&path).unwrap();
        for w in cuts.windows(2).rev() {
            let (from, to) = (w[0], w[1]);
            let mut rw = RangeWriter::new(&f, d.as_ref(), from as u64);
            let mut at = from;
            let mut piece = 1000;
            while at < to {
                let n = piece.min(to - at);
                match rw.slot(n).unwrap() {
                    Some(slot) => {
                        slot.copy_from_slice(&data[at..at + n]);
                        rw.commit(n).unwrap();
                    }
                    None => rw.write(&data[at..at + n]).unwrap(),
                }
                at += n;
                piece = piece * 3 + 1;
            }
            rw.finish().unwrap();
        }
        drop((f, d));
        assert!(std::fs::read(&path).unwrap() == data);
    }

    #[test]
    fn preallocate_sets_the_length_and_reserves_the_blocks() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let f = File::create(&path).unwrap();
        let len = 3 * FLUSH_AT as u64 + 5;
        preallocate(&f, len).unwrap();
        let m = f.metadata().unwrap();
        assert_eq!(m.len(), len);
        // Where fallocate works (ext4, xfs, btrfs, tmpfs) the blocks are reserved up front;
        // where it is refused the file is sparse, which is the fallback's documented shape.
        if m.blocks() > 0 {
            assert!(
                m.blocks() * 512 >= len,
                "{} blocks for {len} bytes",
                m.blocks()
            );
        }
        assert!(std::fs::read(&path).unwrap().iter().all(|&b| b == 0));
        let empty = File::create(dir.path().join("e")).unwrap();
        preallocate(&empty, 0).unwrap();
        assert_eq!(empty.metadata().unwrap().len(), 0);
    }

    /// A long unaligned range in blob-sized pieces: whole blocks in direct writes of about
    /// [`FLUSH_AT`], only the partial blocks at its two ends through the page cache; a
    /// short range in at most one direct write.
    #[test]
    fn range_writer_writes_large_direct_blocks_and_only_the_ends_buffered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let (from, len) = (1000usize, 10 * (1 << 20) + 333);
        let data: Vec<u8> = (0..from + len).map(|i| (i % 253) as u8).collect();
        let f = File::create(&path).unwrap();
        preallocate(&f, data.len() as u64).unwrap();
        let d = open_direct(&path).unwrap();
        let mut rw = RangeWriter::new(&f, d.as_ref(), from as u64);
        let mut at = from;
        while at < from + len {
            // About 1 MiB, never block-aligned: like content-defined chunks.
            let n = ((1 << 20) + 4321).min(from + len - at);
            let slot = rw
                .slot(n)
                .unwrap()
                .expect("a piece under 2 MiB always fits");
            slot.copy_from_slice(&data[at..at + n]);
            rw.commit(n).unwrap();
            at += n;
        }
        let st = rw.finish().unwrap();
        // The head (bytes 1000..4096) was never written: zeros.
        let mut want = data.clone();
        want[..from].fill(0);
        assert!(std::fs::read(&path).unwrap() == want);
        assert_eq!(st.buffered, 2, "{st:?}");
        assert_eq!(
            st.buffered_bytes,
            (4096 - 1000) + ((from + len) % 4096) as u64
        );
        if d.is_some() {
            // About one direct write per FLUSH_AT, never one per piece plus its ends.
            assert!(
                st.direct as usize <= len / FLUSH_AT + 1,
                "10 MiB in about ten direct writes: {st:?}"
            );
            assert_eq!(st.direct_bytes + st.buffered_bytes, len as u64);
        }
        // A short range: at most one direct write, its two ends buffered.
        let mut rw = RangeWriter::new(&f, d.as_ref(), 5000);
        rw.write(&vec![7u8; 20_000]).unwrap();
        let st = rw.finish().unwrap();
        assert!(st.direct <= 1 && st.buffered == 2, "{st:?}");
        let back = std::fs::read(&path).unwrap();
        assert!(back[5000..25_000].iter().all(|&b| b == 7));
        assert!(back[25_000..] == want[25_000..] && back[..5000] == want[..5000]);
    }

    #[test]
    fn range_writer_without_direct_io_writes_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..2 * FLUSH_AT + 777).map(|i| (i % 251) as u8).collect();
        let f = File::create(&path).unwrap();
        f.set_len(data.len() as u64 + 10).unwrap();
        let mut rw = RangeWriter::new(&f, None, 10);
        assert!(
            rw.slot(data.len() + BUF_MAX).unwrap().is_none(),
            "larger than the buffer"
        );
        rw.write(&data).unwrap();
        rw.finish().unwrap();
        let back = std::fs::read(&path).unwrap();
        assert_eq!(&back[..10], &[0u8; 10]);
        assert!(back[10..] == data[..]);
    }
}
