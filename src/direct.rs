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
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Alignment of buffer, offset and length that every Linux file system accepts.
pub const ALIGN: usize = 4096;

/// Where a [`RangeWriter`] splits its range between page-cache and direct writes: the
/// larger of [`ALIGN`] and the memory page size. A page-cache write dirties a whole page;
/// on a kernel with 64 KiB pages (some arm64, ppc64le), a page that a partial-block write
/// shared with a direct write still in flight could be read back stale and written over it.
/// Split at page boundaries, no page holds bytes of both kinds.
pub fn split_unit() -> usize {
    static UNIT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *UNIT.get_or_init(|| {
        // SAFETY: sysconf takes no pointers.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(page)
            .ok()
            .filter(|p| p.is_power_of_two() && *p <= FLUSH_AT / 2)
            .map_or(ALIGN, |p| p.max(ALIGN))
    })
}

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
/// The most threads a local restore decodes on at once (one per core up to this).
pub const MAX_DECODERS: usize = 8;
/// Idle buffers kept: one per pack restored at once from a local store, plus those a
/// [`WriteBehind`] holds (queued and being written). Only buffers that were in use at once
/// are ever kept, so this raises no peak.
const KEEP_IDLE: usize = MAX_DECODERS + 1 + BEHIND_DEPTH + 1;
/// A [`RangeWriter`] writes out what it holds once it holds this much. 4 MiB writes (8 MiB
/// buffers, smaller ones for short ranges) were measured on 2026-12-05 (docs/benchmarks.md):
/// no wall-time gain beyond the noise, 16 % more peak memory restoring from S3, where a
/// dozen packs are written at once, and a few MiB more locally — so 1 MiB, from pooled
/// buffers of one size.
pub const FLUSH_AT: usize = 1 << 20;
/// The largest [`RangeWriter`] buffer: any piece up to [`FLUSH_AT`] fits whatever the
/// buffer holds; a larger one is copied in by [`RangeWriter::write`].
const BUF_MAX: usize = 2 * FLUSH_AT;

fn pooled_buf() -> AlignedBuf {
    let idle = IDLE.lock().expect("buffer pool").pop();
    idle.unwrap_or_else(|| AlignedBuf::new(BUF_MAX))
}

/// Idle buffers larger than [`BUF_MAX`]: a range's buffer grows for a blob larger than the
/// room left in it (chunks of up to 8 MiB), so that the blob is decoded in place.
static IDLE_LARGE: Mutex<Vec<AlignedBuf>> = Mutex::new(Vec::new());
/// Large buffers kept idle: one per pack restored at once from a local store and two more.
const KEEP_IDLE_LARGE: usize = 4;

/// A buffer of at least `len` bytes, larger than [`BUF_MAX`] (sizes in steps of it, so that
/// an idle one serves most later blobs).
fn large_buf(len: usize) -> AlignedBuf {
    let mut idle = IDLE_LARGE.lock().expect("buffer pool");
    match idle.iter().position(|b| b.len() >= len) {
        Some(i) => idle.swap_remove(i),
        None => {
            drop(idle);
            AlignedBuf::new(len.next_multiple_of(BUF_MAX))
        }
    }
}

fn return_buf(buf: AlignedBuf) {
    if buf.len() == BUF_MAX {
        let mut idle = IDLE.lock().expect("buffer pool");
        if idle.len() < KEEP_IDLE {
            idle.push(buf);
        }
    } else if buf.len() > BUF_MAX {
        let mut idle = IDLE_LARGE.lock().expect("buffer pool");
        if idle.len() < KEEP_IDLE_LARGE {
            idle.push(buf);
        } else if let Some(smallest) = idle.iter_mut().min_by_key(|b| b.len()) {
            // Keep the larger: it serves every blob the smaller would.
            if smallest.len() < buf.len() {
                *smallest = buf;
            }
        }
    }
}

/// A file restore writes ranges of: opened once for ordinary writes and once with
/// `O_DIRECT` (where the file system accepts it), with its name for errors. Shared by the
/// threads that decode into it and the [`WriteBehind`] thread that writes it.
pub struct Target {
    file: File,
    direct: Option<File>,
    /// Set once the file system refused a direct write: the rest go through the page cache.
    refused: AtomicBool,
    path: PathBuf,
}

impl Target {
    /// Opens the existing file `path` for writing, directly where the file system allows.
    pub fn open(path: &Path) -> std::io::Result<Arc<Target>> {
        let file = OpenOptions::new().write(true).open(path)?;
        let direct = open_direct(path)?;
        Ok(Arc::new(Target {
            file,
            refused: AtomicBool::new(direct.is_none()),
            direct,
            path: path.to_path_buf(),
        }))
    }

    /// The file, for ordinary (page-cache) operations.
    pub fn file(&self) -> &File {
        &self.file
    }

    fn direct(&self) -> Option<&File> {
        if self.refused.load(Ordering::Relaxed) {
            None
        } else {
            self.direct.as_ref()
        }
    }

    /// Writes aligned `data` at aligned `at`: directly, or through the page cache where the
    /// file system refuses it. Returns whether the write was direct.
    fn write_blocks(&self, data: &[u8], at: u64) -> std::io::Result<bool> {
        if let Some(d) = self.direct() {
            match write_all_direct(d, data, at) {
                Ok(()) => return Ok(true),
                Err(e) if refused(&e) => self.refused.store(true, Ordering::Relaxed),
                Err(e) => return Err(e),
            }
        }
        self.file.write_all_at(data, at)?;
        Ok(false)
    }
}

/// Direct writes at least this large go to the [`WriteBehind`] thread; smaller ones (the
/// ranges of small files, a range's last blocks) are written by the thread that decoded
/// them, as before: one writer thread would send them to the device one at a time, and
/// their cost is the device's latency, not its bandwidth (the 1 GiB tree of 7 871 files
/// restored ~8 % slower with every write behind, 2026-12-05).
pub const BEHIND_MIN: usize = 512 << 10;

/// Queued jobs a [`WriteBehind`] holds at most (each up to a [`RangeWriter`] buffer): a
/// decoding thread that finds the queue full waits, so memory stays bounded.
pub const BEHIND_DEPTH: usize = 2;

enum Job {
    Write {
        target: Arc<Target>,
        buf: AlignedBuf,
        from: usize,
        to: usize,
        at: u64,
    },
    Punch {
        target: Arc<Target>,
        at: u64,
        len: u64,
    },
}

struct BehindState {
    /// The first failure (jobs after it are dropped).
    error: Mutex<Option<(PathBuf, std::io::Error)>>,
    busy_ns: AtomicU64,
}

/// One thread that writes the whole blocks of restored files while the threads that decode
/// them go on decoding: a decoding thread hands over its full buffer (and takes a pooled
/// one) instead of waiting for the device, so the cores decode while the disk writes. Jobs
/// run in the order they were queued, so a hole punched in a range comes after that
/// range's writes. The first failure is kept: later jobs are dropped and every later
/// [`RangeWriter`] call fails with the same error; [`WriteBehind::close`] returns it with
/// the file's name. Dropping it waits for the thread, so nothing is written after the
/// restore gave up on its staging directory.
pub struct WriteBehind {
    tx: Mutex<Option<SyncSender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    state: Arc<BehindState>,
}

impl WriteBehind {
    pub fn start() -> std::io::Result<WriteBehind> {
        let (tx, rx) = sync_channel::<Job>(BEHIND_DEPTH);
        let state = Arc::new(BehindState {
            error: Mutex::new(None),
            busy_ns: AtomicU64::new(0),
        });
        let st = state.clone();
        let thread = std::thread::Builder::new()
            .name("lifeboat-write".into())
            .spawn(move || {
                for job in rx {
                    let t0 = std::time::Instant::now();
                    let failed = st.error.lock().expect("write-behind error").is_some();
                    let res = match &job {
                        _ if failed => Ok(()),
                        Job::Write {
                            target,
                            buf,
                            from,
                            to,
                            at,
                        } => target.write_blocks(&buf[*from..*to], *at).map(|_| ()),
                        Job::Punch { target, at, len } => punch_hole(&target.file, *at, *len),
                    };
                    let (target, buf) = match job {
                        Job::Write { target, buf, .. } => (target, Some(buf)),
                        Job::Punch { target, .. } => (target, None),
                    };
                    if let Err(e) = res {
                        let mut slot = st.error.lock().expect("write-behind error");
                        slot.get_or_insert((target.path.clone(), e));
                    }
                    if let Some(buf) = buf {
                        return_buf(buf);
                    }
                    st.busy_ns
                        .fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
                }
            })?;
        Ok(WriteBehind {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            state,
        })
    }

    /// The first failure, as an error of the same kind (and OS code) for the caller.
    fn failure(&self) -> Option<std::io::Error> {
        let slot = self.state.error.lock().expect("write-behind error");
        let (path, e) = slot.as_ref()?;
        let msg = format!("writing {}: {e}", path.display());
        Some(match e.raw_os_error() {
            Some(code) => std::io::Error::from_raw_os_error(code),
            None => std::io::Error::new(e.kind(), msg),
        })
    }

    fn submit(&self, job: Job) -> std::io::Result<()> {
        if let Some(e) = self.failure() {
            return Err(e);
        }
        let tx = self.tx.lock().expect("write-behind sender").clone();
        match tx {
            Some(tx) => tx.send(job).map_err(|_| self.stopped()),
            None => Err(self.stopped()),
        }
    }

    fn stopped(&self) -> std::io::Error {
        self.failure()
            .unwrap_or_else(|| std::io::Error::other("the restore's writer thread has stopped"))
    }

    /// Deallocates `len` bytes at `at` of `target` once the writes queued before are done.
    pub fn punch_hole(&self, target: &Arc<Target>, at: u64, len: u64) -> std::io::Result<()> {
        self.submit(Job::Punch {
            target: target.clone(),
            at,
            len,
        })
    }

    /// Seconds the thread spent writing.
    pub fn busy_secs(&self) -> f64 {
        self.state.busy_ns.load(Ordering::Relaxed) as f64 / 1e9
    }

    /// Waits until every queued job ran; the first failure, with the file it concerned.
    pub fn close(&self) -> Result<(), (PathBuf, std::io::Error)> {
        self.tx.lock().expect("write-behind sender").take();
        let thread = self.thread.lock().expect("write-behind thread").take();
        if let Some(t) = thread {
            if t.join().is_err() {
                return Err((
                    PathBuf::new(),
                    std::io::Error::other("the restore's writer thread panicked"),
                ));
            }
        }
        match self.state.error.lock().expect("write-behind error").take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for WriteBehind {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// What one [`RangeWriter`] wrote, and how.
#[derive(Debug, Default, Clone, Copy)]
pub struct RangeStats {
    /// Writes of whole aligned blocks past the page cache (or handed to a [`WriteBehind`]
    /// to be written so), and their bytes.
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
/// [`RangeWriter::write`]; whole pages ([`split_unit`]: 4 KiB blocks, or the page size where
/// that is larger) go to the disk directly, about [`FLUSH_AT`] at a time — handed to a
/// [`WriteBehind`] thread where there is one and the write is at least [`BEHIND_MIN`],
/// written before the call returns where not — and only the partial pages at the two ends
/// of the range through the page cache, the last one last.
pub struct RangeWriter<'a> {
    target: &'a Arc<Target>,
    behind: Option<&'a WriteBehind>,
    buf: AlignedBuf,
    /// Direct writes are whole units of this many bytes at offsets aligned to it
    /// ([`split_unit`]).
    unit: usize,
    /// File offset of `buf[0]` (aligned to `unit`).
    base: u64,
    /// `buf[start..end]` is data not yet written.
    start: usize,
    end: usize,
    stats: RangeStats,
}

impl<'a> RangeWriter<'a> {
    /// A range of `target` starting at `offset`, its blocks written by `behind` if given.
    pub fn new(target: &'a Arc<Target>, behind: Option<&'a WriteBehind>, offset: u64) -> Self {
        Self::with_unit(target, behind, offset, split_unit())
    }

    fn with_unit(
        target: &'a Arc<Target>,
        behind: Option<&'a WriteBehind>,
        offset: u64,
        unit: usize,
    ) -> Self {
        let lead = (offset % unit as u64) as usize;
        RangeWriter {
            target,
            behind,
            buf: pooled_buf(),
            unit,
            base: offset - lead as u64,
            start: lead,
            end: lead,
            stats: RangeStats::default(),
        }
    }

    /// The next `len` bytes of the range, to be filled by the caller (call
    /// [`RangeWriter::commit`] once they hold data). When `len` is more than the room left
    /// after the whole blocks held were written, the buffer grows (a pooled larger one): a
    /// blob is decoded into the range's buffer in place, and checked before any of it is
    /// written, whatever its size.
    pub fn slot(&mut self, len: usize) -> std::io::Result<&mut [u8]> {
        if self.end + len > self.buf.len() {
            self.flush_blocks()?;
            if self.end + len > self.buf.len() {
                // What is held is less than a block (or the unaligned head): copied over.
                let mut bigger = large_buf(self.end + len);
                bigger[..self.end].copy_from_slice(&self.buf[..self.end]);
                return_buf(std::mem::replace(&mut self.buf, bigger));
            }
        }
        Ok(&mut self.buf[self.end..self.end + len])
    }

    /// Appends `data` to the range, copied in (for data already decoded elsewhere;
    /// [`RangeWriter::slot`] lets a blob be decoded in place).
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
        let whole_end = self.end / self.unit * self.unit;
        if whole_end <= self.start {
            return Ok(());
        }
        // A partial first unit (the range's start is unaligned) goes through the page cache.
        let first_whole = self.start.next_multiple_of(self.unit);
        if first_whole > self.start {
            self.buffered(self.start, first_whole)?;
        }
        let tail = self.end - whole_end;
        if whole_end > first_whole {
            let at = self.base + first_whole as u64;
            let n = (whole_end - first_whole) as u64;
            match self.behind {
                Some(behind) if n >= BEHIND_MIN as u64 && self.target.direct().is_some() => {
                    // Hand the full buffer over; go on in a fresh one holding the tail.
                    let mut next = pooled_buf();
                    next[..tail].copy_from_slice(&self.buf[whole_end..self.end]);
                    let full = std::mem::replace(&mut self.buf, next);
                    behind.submit(Job::Write {
                        target: self.target.clone(),
                        buf: full,
                        from: first_whole,
                        to: whole_end,
                        at,
                    })?;
                    self.stats.direct += 1;
                    self.stats.direct_bytes += n;
                    self.base += whole_end as u64;
                    self.start = 0;
                    self.end = tail;
                    return Ok(());
                }
                _ => {
                    if self
                        .target
                        .write_blocks(&self.buf[first_whole..whole_end], at)?
                    {
                        self.stats.direct += 1;
                        self.stats.direct_bytes += n;
                    } else {
                        self.stats.buffered += 1;
                        self.stats.buffered_bytes += n;
                    }
                }
            }
        }
        self.buf.copy_within(whole_end..self.end, 0);
        self.base += whole_end as u64;
        self.start = 0;
        self.end = tail;
        Ok(())
    }

    fn buffered(&mut self, from: usize, to: usize) -> std::io::Result<()> {
        self.stats.buffered += 1;
        self.stats.buffered_bytes += (to - from) as u64;
        self.target
            .file
            .write_all_at(&self.buf[from..to], self.base + from as u64)
    }

    /// Writes what is left (the partial last block last); the buffer goes back to the pool.
    /// With a [`WriteBehind`], the whole blocks may still be queued when this returns.
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
        return_buf(std::mem::replace(&mut self.buf, AlignedBuf::empty()));
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

/// Deallocates `len` bytes at `offset` (they read as zeros; the length stays). A file system
/// without holes keeps the zeros written: the content is the same.
pub fn punch_hole(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: fallocate on an open descriptor with in-range offsets.
    let r = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset as libc::off_t,
            len as libc::off_t,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOSYS)) {
        Ok(())
    } else {
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A target whose file system "refuses" direct I/O: everything through the page cache.
    fn buffered_target(path: &Path) -> Arc<Target> {
        Arc::new(Target {
            file: OpenOptions::new().write(true).open(path).unwrap(),
            direct: None,
            refused: AtomicBool::new(true),
            path: path.to_path_buf(),
        })
    }

    #[test]
    fn range_writer_places_every_byte_whatever_the_alignment() {
        let dir = tempfile::tempdir().unwrap();
        let total = 6 * FLUSH_AT + 12_345;
        let data: Vec<u8> = (0..total).map(|i| (i * 7 + i / 4096) as u8).collect();
        // Ranges that start and end on and off block boundaries, in pieces of odd sizes
        // (one larger than the buffer), written out of order, as restore does; each way:
        // blocks written in place or behind, directly or through the page cache, split at
        // 4 KiB blocks or at 64 KiB pages (as on a kernel with such pages).
        let cuts = [0, 4096, 5000, 70_000, FLUSH_AT + 1, 3 * FLUSH_AT, total];
        let ways = [(false, true), (true, true), (false, false), (true, false)];
        for (case, (unit, (behind, direct))) in [ALIGN, 64 << 10]
            .into_iter()
            .flat_map(|u| ways.map(|w| (u, w)))
            .enumerate()
        {
            let path = dir.path().join(format!("f{case}"));
            File::create(&path).unwrap().set_len(total as u64).unwrap();
            let t = if direct {
                Target::open(&path).unwrap()
            } else {
                buffered_target(&path)
            };
            let wb = behind.then(|| WriteBehind::start().unwrap());
            for w in cuts.windows(2).rev() {
                let (from, to) = (w[0], w[1]);
                let mut rw = RangeWriter::with_unit(&t, wb.as_ref(), from as u64, unit);
                let mut at = from;
                let mut piece = 1000;
                while at < to {
                    let n = piece.min(to - at);
                    // Every other piece through a slot (growing the buffer for pieces
                    // larger than the room left), the rest copied in by `write`.
                    if piece % 2 == 1 {
                        rw.slot(n).unwrap().copy_from_slice(&data[at..at + n]);
                        rw.commit(n).unwrap();
                    } else {
                        rw.write(&data[at..at + n]).unwrap();
                    }
                    at += n;
                    piece = piece * 3 + 1;
                }
                let stats = rw.finish().unwrap();
                // Only the partial units at the two ends went through the page cache.
                let whole = to / unit * unit;
                let head = from.next_multiple_of(unit).min(to) - from;
                let ends = if whole > from {
                    head + (to - whole)
                } else {
                    to - from
                };
                if t.direct().is_some() {
                    assert_eq!(
                        stats.buffered_bytes, ends as u64,
                        "case {case}: {from}..{to}"
                    );
                }
            }
            if let Some(wb) = wb {
                wb.close().unwrap();
            }
            drop(t);
            assert!(
                std::fs::read(&path).unwrap() == data,
                "case {case}: unit {unit}, behind {behind}, direct {direct}"
            );
        }
    }

    /// Jobs run in order: a hole punched after a range's writes were queued is punched
    /// after they land (a hole punched first would be filled again by them).
    #[test]
    fn write_behind_punches_holes_after_the_writes_queued_before() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let len = 8 * FLUSH_AT;
        let f = File::create(&path).unwrap();
        preallocate(&f, len as u64).unwrap();
        let t = Target::open(&path).unwrap();
        let wb = WriteBehind::start().unwrap();
        let mut rw = RangeWriter::new(&t, Some(&wb), 0);
        rw.write(&vec![0u8; len]).unwrap();
        rw.finish().unwrap();
        wb.punch_hole(&t, 0, len as u64).unwrap();
        wb.close().unwrap();
        let m = std::fs::metadata(&path).unwrap();
        assert_eq!(m.len(), len as u64);
        assert!(std::fs::read(&path).unwrap().iter().all(|&b| b == 0));
        // The zeros written before the punch no longer hold blocks (every Linux file system
        // a restore target sits on punches holes: ext4, xfs, btrfs, tmpfs).
        assert!(
            m.blocks() * 512 < len as u64 / 2,
            "{} blocks left of {len} bytes of zeros punched out",
            m.blocks()
        );
    }

    /// A write that fails behind the decoding thread is not lost: later writes fail with
    /// the same error, and closing names the file.
    #[test]
    fn write_behind_reports_the_first_failure_with_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![1u8; 4 * FLUSH_AT]).unwrap();
        // Opened read-only: every write fails (EBADF), the direct ones behind the caller.
        let t = Arc::new(Target {
            file: File::open(&path).unwrap(),
            direct: Some(File::open(&path).unwrap()),
            refused: AtomicBool::new(false),
            path: path.clone(),
        });
        let wb = WriteBehind::start().unwrap();
        let mut failed = None;
        for _ in 0..16 {
            let mut rw = RangeWriter::new(&t, Some(&wb), 0);
            let r = rw
                .write(&vec![2u8; 2 * FLUSH_AT])
                .and_then(|_| rw.finish().map(|_| ()));
            if let Err(e) = r {
                failed = Some(e);
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let e = failed.expect("a later write learns of the failure");
        assert_eq!(e.raw_os_error(), Some(libc::EBADF), "{e}");
        let (p, e) = wb.close().unwrap_err();
        assert_eq!(p, path);
        assert_eq!(e.raw_os_error(), Some(libc::EBADF), "{e}");
        assert!(std::fs::read(&path).unwrap().iter().all(|&b| b == 1));
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
        let t = Target::open(&path).unwrap();
        let mut rw = RangeWriter::new(&t, None, from as u64);
        let mut at = from;
        while at < from + len {
            // About 1 MiB, never block-aligned: like content-defined chunks.
            let n = ((1 << 20) + 4321).min(from + len - at);
            let slot = rw.slot(n).unwrap();
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
        if t.direct.is_some() {
            // About one direct write per FLUSH_AT, never one per piece plus its ends.
            assert!(
                st.direct as usize <= len / FLUSH_AT + 1,
                "10 MiB in about ten direct writes: {st:?}"
            );
            assert_eq!(st.direct_bytes + st.buffered_bytes, len as u64);
        }
        // A short range: at most one direct write, its two ends buffered.
        let mut rw = RangeWriter::new(&t, None, 5000);
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
        let t = buffered_target(&path);
        let mut rw = RangeWriter::new(&t, None, 10);
        // Larger than the buffer: it grows.
        let slot = rw.slot(data.len()).unwrap();
        assert_eq!(slot.len(), data.len());
        slot.copy_from_slice(&data);
        rw.commit(data.len()).unwrap();
        rw.finish().unwrap();
        let back = std::fs::read(&path).unwrap();
        assert_eq!(&back[..10], &[0u8; 10]);
        assert!(back[10..] == data[..]);
    }
}
