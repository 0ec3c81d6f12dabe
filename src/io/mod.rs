//! The file seam: everything `storage/` does to a disk goes through this module.
//!
//! Three implementations sit behind one enum ([`IoFile`]) rather than a trait, so the storage code
//! stays free of generics and `dyn` futures:
//!
//! - **Direct I/O** (production): glommio [`DmaFile`], opened with `O_DIRECT`, reads and writes
//!   through the shard's own io_uring ring. Offsets and lengths of writes must be multiples of
//!   [`IO_ALIGNMENT`]; the storage engine guarantees that.
//! - **Buffered** (explicit fallback for file systems that refuse `O_DIRECT`, e.g. tmpfs): glommio
//!   `BufferedFile`, through the page cache. Same contract, one extra copy per write.
//! - **Simulated** ([`SimDisk`]): an in-memory disk for tests, driven by a seed. It remembers which
//!   writes were `fdatasync`ed; [`SimDisk::crash`] keeps every synced byte, then replays a random
//!   prefix of the unsynced writes and tears the last replayed one at a random byte. It can also
//!   inject `ENOSPC`/`EIO` on writes and syncs.
//!
//! Small metadata files (indexes written at roll, checkpoints, the clean-shutdown marker, the
//! producer state snapshots) and directory operations go through [`FileSystem`]. On the real
//! file system they use blocking `std::fs` calls: they happen at partition open, segment roll,
//! retention and shutdown, never per append, and each is a few small syscalls; the periodic
//! producer state snapshots run them on glommio's blocking thread pool instead
//! ([`FileSystem::write_small_file_durable_off_shard`]).
//!
//! The simulated disk treats metadata operations (create, rename, remove, truncate, preallocate)
//! as immediately durable, except renames made with [`FileSystem::rename_unsynced`]: until
//! their directory is synced, a crash keeps or undoes each of them (seeded). Data writes to
//! segment files can be lost or torn.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use glommio::io::{BufferedFile, DmaBuffer, DmaFile, OpenOptions};

/// Alignment (bytes) of every write offset and length issued to an [`IoFile`]; 4 KiB is safe for
/// `O_DIRECT` on every current device (logical block size 512 or 4096).
pub const IO_ALIGNMENT: u64 = 4096;

/// Rounds `v` down to a multiple of [`IO_ALIGNMENT`].
pub fn align_down(v: u64) -> u64 {
    v & !(IO_ALIGNMENT - 1)
}

/// Rounds `v` up to a multiple of [`IO_ALIGNMENT`].
pub fn align_up(v: u64) -> u64 {
    (v + IO_ALIGNMENT - 1) & !(IO_ALIGNMENT - 1)
}

/// Allocates an [`IO_ALIGNMENT`]-aligned buffer of `len` bytes (contents unspecified) suitable
/// for any [`IoFile::write_at`]. Must be called inside a glommio executor.
pub fn alloc_write_buffer(len: usize) -> DmaBuffer {
    glommio::allocate_dma_buffer(len)
}

/// How segment files are opened and where metadata operations go. Cheap to clone.
#[derive(Clone)]
pub enum FileSystem {
    /// The real file system. `buffered == false` opens segments with `O_DIRECT`.
    Real {
        /// Use the page cache instead of `O_DIRECT` (fallback for file systems refusing it).
        buffered: bool,
    },
    /// The in-memory simulated disk (tests), as seen by one simulated process.
    Sim(SimFs),
}

impl FileSystem {
    /// Opens (or with `create`, creates if missing) a segment file for reading and writing.
    /// A newly created file's directory entry is made durable (parent directory fsynced).
    pub async fn open_file(&self, path: &Path, create: bool) -> io::Result<IoFile> {
        match self {
            FileSystem::Real { buffered } => {
                let existed = path.exists();
                let mut opts = OpenOptions::new();
                opts.read(true).write(true).create(create);
                let file = if *buffered {
                    IoFile::Buffered(opts.buffered_open(path).await.map_err(io::Error::from)?)
                } else {
                    IoFile::Dma(opts.dma_open(path).await.map_err(io::Error::from)?)
                };
                if create && !existed {
                    if let Some(parent) = path.parent() {
                        sync_dir_off_shard(parent).await?;
                    }
                }
                Ok(file)
            }
            FileSystem::Sim(sim) => {
                sim.alive()?;
                yield_now_times(sim.disk.yields()).await;
                sim.disk.open(path, create, sim.epoch).map(IoFile::Sim)
            }
        }
    }

    /// Creates a directory and its parents (durably on the real file system).
    pub fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        match self {
            FileSystem::Real { .. } => {
                if !path.exists() {
                    std::fs::create_dir_all(path)?;
                    if let Some(parent) = path.parent() {
                        sync_dir(parent)?;
                    }
                }
                Ok(())
            }
            FileSystem::Sim(sim) => {
                sim.alive()?;
                sim.disk.inner.borrow_mut().dirs.insert(path.to_path_buf());
                Ok(())
            }
        }
    }

    /// Removes a directory and everything in it. Missing directory is not an error.
    pub fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        match self {
            FileSystem::Real { .. } => match std::fs::remove_dir_all(path) {
                Ok(()) => {
                    if let Some(parent) = path.parent() {
                        sync_dir(parent)?;
                    }
                    Ok(())
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            },
            FileSystem::Sim(sim) => {
                sim.alive()?;
                let mut inner = sim.disk.inner.borrow_mut();
                inner.files.retain(|p, _| !p.starts_with(path));
                inner.dirs.retain(|p| !p.starts_with(path));
                inner.pending_renames.retain(|r| !r.to.starts_with(path));
                Ok(())
            }
        }
    }

    /// Removes one file durably (parent directory fsynced). Missing file is not an error.
    pub fn remove_file(&self, path: &Path) -> io::Result<()> {
        match self {
            FileSystem::Real { .. } => match std::fs::remove_file(path) {
                Ok(()) => match path.parent() {
                    Some(parent) => sync_dir(parent),
                    None => Ok(()),
                },
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            },
            FileSystem::Sim(sim) => {
                sim.alive()?;
                let mut inner = sim.disk.inner.borrow_mut();
                inner.files.remove(path);
                inner.settle_renames(path.parent());
                Ok(())
            }
        }
    }

    /// Renames `from` over `to` atomically and durably (the parent directory fsynced): after
    /// `Ok`, a crash leaves `to` with `from`'s contents and no `from`; before it, the old `to`
    /// (or none). `from` must be synced by the caller if its contents must survive.
    pub fn rename_durable(&self, from: &Path, to: &Path) -> io::Result<()> {
        match self {
            FileSystem::Real { .. } => {
                std::fs::rename(from, to)?;
                match to.parent() {
                    Some(parent) => sync_dir(parent),
                    None => Ok(()),
                }
            }
            FileSystem::Sim(sim) => {
                sim.alive()?;
                let mut inner = sim.disk.inner.borrow_mut();
                let f = inner
                    .files
                    .remove(from)
                    .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
                inner.files.insert(to.to_path_buf(), f);
                inner.settle_renames(to.parent());
                Ok(())
            }
        }
    }

    /// Renames `from` over `to` atomically, without making it durable: until the parent
    /// directory is synced ([`FileSystem::sync_dir_off_shard`], or any durable operation in
    /// that directory), a crash may keep either name, independently of other such renames in
    /// the directory. For several renames whose outcome must not be torn apart, the caller
    /// has to make every mix of old and new names recoverable (the cleaner's swap does).
    pub fn rename_unsynced(&self, from: &Path, to: &Path) -> io::Result<()> {
        match self {
            FileSystem::Real { .. } => std::fs::rename(from, to),
            FileSystem::Sim(sim) => {
                sim.alive()?;
                let mut inner = sim.disk.inner.borrow_mut();
                let f = inner
                    .files
                    .remove(from)
                    .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
                let replaced = inner.files.insert(to.to_path_buf(), f.clone());
                inner.pending_renames.push(PendingRename {
                    from: from.to_path_buf(),
                    to: to.to_path_buf(),
                    file: f,
                    replaced,
                });
                Ok(())
            }
        }
    }

    /// Whether a file exists.
    pub fn exists(&self, path: &Path) -> bool {
        match self {
            FileSystem::Real { .. } => path.exists(),
            FileSystem::Sim(sim) => {
                sim.alive().is_ok() && sim.disk.inner.borrow().files.contains_key(path)
            }
        }
    }

    /// Names (not paths) of the files directly inside `dir`, sorted.
    pub fn list_files(&self, dir: &Path) -> io::Result<Vec<String>> {
        match self {
            FileSystem::Real { .. } => {
                let mut names = Vec::new();
                for entry in std::fs::read_dir(dir)? {
                    let entry = entry?;
                    if entry.file_type()?.is_file() {
                        if let Some(name) = entry.file_name().to_str() {
                            names.push(name.to_owned());
                        }
                    }
                }
                names.sort();
                Ok(names)
            }
            FileSystem::Sim(sim) => {
                sim.alive()?;
                let inner = sim.disk.inner.borrow();
                let mut names: Vec<String> = inner
                    .files
                    .keys()
                    .filter(|p| p.parent() == Some(dir))
                    .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_owned))
                    .collect();
                names.sort();
                Ok(names)
            }
        }
    }

    /// Bytes of blocks allocated to `dir` and the files directly inside it: `du`'s figure
    /// (`st_blocks` x 512, preallocated space included). The simulated disk counts each file's
    /// length rounded up to 4 KiB and 4 KiB for the directory. Blocks on the calling thread
    /// (one `statx` per entry); `dir` missing is 0.
    pub fn allocated_bytes(&self, dir: &Path) -> io::Result<u64> {
        match self {
            FileSystem::Real { .. } => {
                use std::os::unix::fs::MetadataExt;
                let top = match std::fs::metadata(dir) {
                    Ok(m) => m.blocks() * 512,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
                    Err(e) => return Err(e),
                };
                let mut total = top;
                for entry in std::fs::read_dir(dir)? {
                    match entry?.metadata() {
                        Ok(m) => total += m.blocks() * 512,
                        // Deleted between the listing and the stat (retention, a temp file).
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(total)
            }
            FileSystem::Sim(sim) => {
                sim.alive()?;
                let inner = sim.disk.inner.borrow();
                let files: u64 = inner
                    .files
                    .iter()
                    .filter(|(p, _)| p.parent() == Some(dir))
                    .map(|(_, f)| align_up(f.borrow().data.len() as u64))
                    .sum();
                Ok(files + 4096)
            }
        }
    }

    /// Reads a whole small file; `Ok(None)` if it does not exist.
    pub fn read_small_file(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        match self {
            FileSystem::Real { .. } => match std::fs::read(path) {
                Ok(v) => Ok(Some(v)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            },
            FileSystem::Sim(sim) => sim.alive().map(|()| {
                sim.disk
                    .inner
                    .borrow()
                    .files
                    .get(path)
                    .map(|f| f.borrow().data.clone())
            }),
        }
    }

    /// Replaces a small file atomically and durably: write a temporary file, fsync it, rename it
    /// over `path`, fsync the directory. After `Ok`, a crash leaves either nothing new or `data`.
    pub fn write_small_file_durable(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        match self {
            FileSystem::Real { .. } => {
                use std::io::Write;
                let mut tmp = path.as_os_str().to_owned();
                tmp.push(".tmp");
                let tmp = PathBuf::from(tmp);
                {
                    let mut f = std::fs::File::create(&tmp)?;
                    f.write_all(data)?;
                    f.sync_all()?;
                }
                std::fs::rename(&tmp, path)?;
                if let Some(parent) = path.parent() {
                    sync_dir(parent)?;
                }
                Ok(())
            }
            FileSystem::Sim(sim) => {
                sim.alive()?;
                let mut inner = sim.disk.inner.borrow_mut();
                if let Some(e) = inner.fail_writes {
                    return Err(io::Error::from(e));
                }
                let file = SimFileData {
                    data: data.to_vec(),
                    durable: data.to_vec(),
                    unsynced: Vec::new(),
                };
                inner
                    .files
                    .insert(path.to_path_buf(), Rc::new(RefCell::new(file)));
                inner.settle_renames(path.parent());
                Ok(())
            }
        }
    }
}

impl FileSystem {
    /// As [`FileSystem::write_small_file_durable`] (atomic and durable: after `Ok`, a crash
    /// leaves either the old file or `data`), but on the real file system the blocking writes
    /// and fsyncs run on glommio's blocking thread pool, so the shard keeps serving meanwhile.
    /// For files written while the broker serves (the producer state snapshots).
    pub async fn write_small_file_durable_off_shard(
        &self,
        path: &Path,
        data: Vec<u8>,
    ) -> io::Result<()> {
        match self {
            FileSystem::Real { buffered } => {
                let buffered = *buffered;
                let path = path.to_path_buf();
                glommio::executor()
                    .spawn_blocking(move || {
                        FileSystem::Real { buffered }.write_small_file_durable(&path, &data)
                    })
                    .await
            }
            FileSystem::Sim(sim) => {
                yield_now_times(sim.disk.yields()).await;
                self.write_small_file_durable(path, &data)
            }
        }
    }
}

impl FileSystem {
    /// Creates or replaces `path` with `data` and fsyncs the file, on glommio's blocking
    /// thread pool. Not atomic (no temporary file) and the name is durable only after a sync
    /// of the directory ([`FileSystem::sync_dir_off_shard`]): for files under a temporary name
    /// that recovery deletes (the cleaner's `.cleaned` copies).
    pub async fn write_file_synced_off_shard(&self, path: &Path, data: Vec<u8>) -> io::Result<()> {
        match self {
            FileSystem::Real { .. } => {
                let path = path.to_path_buf();
                glommio::executor()
                    .spawn_blocking(move || {
                        use std::io::Write;
                        let mut f = std::fs::File::create(&path)?;
                        f.write_all(&data)?;
                        f.sync_all()
                    })
                    .await
            }
            FileSystem::Sim(sim) => {
                yield_now_times(sim.disk.yields()).await;
                sim.alive()?;
                let mut inner = sim.disk.inner.borrow_mut();
                if let Some(e) = inner.fail_writes {
                    return Err(io::Error::from(e));
                }
                let file = SimFileData {
                    data: data.clone(),
                    durable: data,
                    unsynced: Vec::new(),
                };
                inner
                    .files
                    .insert(path.to_path_buf(), Rc::new(RefCell::new(file)));
                Ok(())
            }
        }
    }

    /// Makes every entry of `dir` durable (creations, renames, removals), fsyncing it on
    /// glommio's blocking thread pool so the shard keeps serving meanwhile.
    pub async fn sync_dir_off_shard(&self, dir: &Path) -> io::Result<()> {
        match self {
            FileSystem::Real { .. } => sync_dir_off_shard(dir).await,
            FileSystem::Sim(sim) => {
                yield_now_times(sim.disk.yields()).await;
                sim.alive()?;
                sim.disk.inner.borrow_mut().settle_renames(Some(dir));
                Ok(())
            }
        }
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// [`sync_dir`] on glommio's blocking thread pool (a directory fsync may take milliseconds on a
/// busy disk: the shard's other tasks run meanwhile).
async fn sync_dir_off_shard(dir: &Path) -> io::Result<()> {
    let dir = dir.to_path_buf();
    glommio::executor()
        .spawn_blocking(move || sync_dir(&dir))
        .await
}

/// An open segment file. All methods are safe to call concurrently from tasks of one executor.
pub enum IoFile {
    /// `O_DIRECT` through io_uring.
    Dma(DmaFile),
    /// Page-cache fallback.
    Buffered(BufferedFile),
    /// Simulated (tests).
    Sim(SimFile),
}

impl IoFile {
    /// Writes the whole buffer at `pos`. `pos` and `buf.len()` must be multiples of
    /// [`IO_ALIGNMENT`] (asserted: a misaligned `O_DIRECT` write would fail or corrupt).
    /// Returns the bytes written (short writes are reported as errors by the caller).
    pub async fn write_at(&self, buf: DmaBuffer, pos: u64) -> io::Result<usize> {
        assert!(pos % IO_ALIGNMENT == 0, "unaligned write position {pos}");
        assert!(
            buf.len() as u64 % IO_ALIGNMENT == 0,
            "unaligned write length {}",
            buf.len()
        );
        match self {
            IoFile::Dma(f) => f.write_at(buf, pos).await.map_err(io::Error::from),
            IoFile::Buffered(f) => f
                .write_at(buf.as_bytes().to_vec(), pos)
                .await
                .map_err(io::Error::from),
            IoFile::Sim(f) => {
                yield_now_times(f.disk.yields()).await;
                f.write_at(buf.as_bytes(), pos)
            }
        }
    }

    /// Reads up to `len` bytes at `pos` (any alignment) into a new `Bytes`: one copy out of the
    /// I/O buffer, because glommio's `ReadResult` is `!Send` and readers hand `Bytes` to other
    /// shards. Returns fewer bytes at end of file.
    pub async fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        match self {
            IoFile::Dma(f) => {
                let r = f.read_at(pos, len).await.map_err(io::Error::from)?;
                Ok(Bytes::copy_from_slice(&r))
            }
            IoFile::Buffered(f) => {
                let r = f.read_at(pos, len).await.map_err(io::Error::from)?;
                Ok(Bytes::copy_from_slice(&r))
            }
            IoFile::Sim(f) => {
                yield_now_times(f.disk.yields()).await;
                f.read_at(pos, len)
            }
        }
    }

    /// `fdatasync`: every completed write is on stable storage when this returns `Ok`.
    pub async fn fdatasync(&self) -> io::Result<()> {
        let started = std::time::Instant::now();
        let result = match self {
            IoFile::Dma(f) => f.fdatasync().await.map_err(io::Error::from),
            IoFile::Buffered(f) => f.fdatasync().await.map_err(io::Error::from),
            IoFile::Sim(f) => {
                yield_now_times(f.disk.yields()).await;
                f.fdatasync()
            }
        };
        FDATASYNC_OBSERVER.with(|o| {
            if let Some(observe) = o.borrow().as_ref() {
                observe(started.elapsed());
            }
        });
        result
    }

    /// Reserves space so the file is at least `size` bytes; the file size becomes `size` if it
    /// was smaller (the new range reads as zeros).
    pub async fn pre_allocate(&self, size: u64) -> io::Result<()> {
        match self {
            IoFile::Dma(f) => f.pre_allocate(size, false).await.map_err(io::Error::from),
            IoFile::Buffered(f) => f.pre_allocate(size, false).await.map_err(io::Error::from),
            IoFile::Sim(f) => {
                yield_now_times(f.disk.yields()).await;
                f.pre_allocate(size)
            }
        }
    }

    /// Sets the file size to `size` (drops anything after it).
    pub async fn truncate(&self, size: u64) -> io::Result<()> {
        match self {
            IoFile::Dma(f) => f.truncate(size).await.map_err(io::Error::from),
            IoFile::Buffered(f) => f.truncate(size).await.map_err(io::Error::from),
            IoFile::Sim(f) => {
                yield_now_times(f.disk.yields()).await;
                f.truncate(size)
            }
        }
    }

    /// Current file size in bytes.
    pub async fn file_size(&self) -> io::Result<u64> {
        match self {
            IoFile::Dma(f) => f.file_size().await.map_err(io::Error::from),
            IoFile::Buffered(f) => f.file_size().await.map_err(io::Error::from),
            IoFile::Sim(f) => {
                f.alive()?;
                Ok(f.data.borrow().data.len() as u64)
            }
        }
    }
}

/// Checks that `dir` accepts `O_DIRECT` by opening a probe file in it with that flag.
/// Returns the error from the kernel (EINVAL on file systems that refuse it); tmpfs is refused
/// explicitly because glommio would silently fall back to buffered I/O there.
pub fn probe_direct_io(dir: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: statfs is given a NUL-terminated path and a properly sized, zeroed out-struct.
    let cpath = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(cpath.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // f_type's integer type differs between architectures.
    #[allow(clippy::unnecessary_cast)]
    let is_tmpfs = st.f_type as i64 == libc::TMPFS_MAGIC as i64;
    if is_tmpfs {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "tmpfs does not support O_DIRECT",
        ));
    }
    // One probe file per thread: every shard probes the same data dir at the same time.
    let probe = dir.join(format!(".odirect-probe-{}", unsafe { libc::gettid() }));
    let cprobe = std::ffi::CString::new(probe.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    // SAFETY: plain open(2)/close(2) on a NUL-terminated path; the fd is closed right away.
    let fd = unsafe {
        libc::open(
            cprobe.as_ptr(),
            libc::O_CREAT | libc::O_RDWR | libc::O_DIRECT | libc::O_CLOEXEC,
            0o644,
        )
    };
    if fd < 0 {
        let err = io::Error::last_os_error();
        let _ = std::fs::remove_file(&probe);
        return Err(err);
    }
    unsafe { libc::close(fd) };
    std::fs::remove_file(&probe)
}

/// A function told a duration.
type DurationObserver = Box<dyn Fn(std::time::Duration)>;

thread_local! {
    /// This thread's (shard's) listener for fdatasync durations, if any.
    static FDATASYNC_OBSERVER: RefCell<Option<DurationObserver>> = const { RefCell::new(None) };
}

/// Installs, for the calling thread (one shard), a function told the duration of every
/// fdatasync issued on it. Thread-local on purpose: shards share nothing, so no lock.
pub fn observe_fdatasync(observe: impl Fn(std::time::Duration) + 'static) {
    FDATASYNC_OBSERVER.with(|o| *o.borrow_mut() = Some(Box::new(observe)));
}

/// Makes glommio decide correctly, on this executor thread, whether the data dir's device
/// supports io_uring polled I/O (IOPOLL).
///
/// glommio probes IOPOLL support once per device and thread with a read at offset 0 of the first
/// file opened there; on an *empty* file that read succeeds without reaching the device, glommio
/// wrongly concludes "supported", and every later DMA read on that device fails with
/// EOPNOTSUPP (seen on virtio-blk). Opening a non-empty file first gets the probe right.
///
/// On a full disk the probe file cannot be written; an existing non-empty file of the data dir
/// (same device) is opened instead, so that a full disk does not keep the broker from starting
/// and serving what it holds.
pub async fn prime_iopoll_probe(dir: &Path) -> io::Result<()> {
    // SAFETY: gettid has no preconditions. One probe file per thread (shards start together).
    let probe = dir.join(format!(".iopoll-probe-{}", unsafe { libc::gettid() }));
    // The probe's bytes are made durable before the O_DIRECT read: a read over dirty page
    // cache makes the kernel write it back first, which turns the polled probe read into a
    // blocking one reissued from an io_uring worker; keeping that path out of start-up costs
    // one 4 KiB fdatasync per shard (a suspect of the rare start-up stall after kill -9).
    let written = std::fs::File::create(&probe).and_then(|mut f| {
        std::io::Write::write_all(&mut f, &[0u8; IO_ALIGNMENT as usize])?;
        f.sync_data()
    });
    let target = match written {
        Ok(()) => probe.clone(),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)) => {
            let _ = std::fs::remove_file(&probe);
            match existing_nonempty_file(dir) {
                Some(f) => {
                    tracing::warn!(dir = %dir.display(), "data dir is full; probing I/O with an existing file");
                    f
                }
                None => return Err(e),
            }
        }
        Err(e) => return Err(e),
    };
    let res = async {
        let f = DmaFile::open(&target).await.map_err(io::Error::from)?;
        f.close().await.map_err(io::Error::from)
    }
    .await;
    let _ = std::fs::remove_file(&probe);
    res
}

/// A regular non-empty file in `dir` or one level below it, if any.
fn existing_nonempty_file(dir: &Path) -> Option<std::path::PathBuf> {
    let entries = |d: &Path| -> Vec<std::fs::DirEntry> {
        std::fs::read_dir(d)
            .map(|r| r.flatten().collect())
            .unwrap_or_default()
    };
    let is_candidate = |e: &std::fs::DirEntry| {
        e.metadata()
            .map(|m| m.is_file() && m.len() > 0)
            .unwrap_or(false)
    };
    let top = entries(dir);
    if let Some(e) = top.iter().find(|e| is_candidate(e)) {
        return Some(e.path());
    }
    top.iter()
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .find_map(|d| entries(&d.path()).into_iter().find(is_candidate))
        .map(|e| e.path())
}

// ---------------------------------------------------------------------------------------------
// Simulated disk
// ---------------------------------------------------------------------------------------------

/// An in-memory disk for deterministic crash tests. See the module docs for the fault model.
pub struct SimDisk {
    inner: RefCell<SimInner>,
}

struct SimInner {
    files: HashMap<PathBuf, Rc<RefCell<SimFileData>>>,
    dirs: BTreeSet<PathBuf>,
    rng: u64,
    fail_writes: Option<io::ErrorKind>,
    fail_syncs: Option<io::ErrorKind>,
    syncs: u64,
    /// Bumped by every crash: handles from an older epoch belong to a dead process.
    epoch: u64,
    /// Each async operation yields to the executor up to this many times (seeded) before it
    /// takes effect, so other tasks interleave with in-flight I/O.
    yields_max: u32,
    /// Renames done with [`FileSystem::rename_unsynced`] whose directory was not synced since:
    /// a crash undoes each of them or not (seeded), newest first.
    pending_renames: Vec<PendingRename>,
}

/// A rename a crash may still undo.
struct PendingRename {
    from: PathBuf,
    to: PathBuf,
    file: Rc<RefCell<SimFileData>>,
    /// The file `to` named before, back in place if the rename is undone.
    replaced: Option<Rc<RefCell<SimFileData>>>,
}

impl SimInner {
    /// A sync of `dir` (or a durable operation in it): its pending renames are kept by crashes.
    fn settle_renames(&mut self, dir: Option<&Path>) {
        self.pending_renames.retain(|r| r.to.parent() != dir);
    }
}

struct SimFileData {
    /// What reads see now.
    data: Vec<u8>,
    /// What survives a crash for sure.
    durable: Vec<u8>,
    /// Writes since the last sync, in order.
    unsynced: Vec<(u64, Vec<u8>)>,
}

/// Where a simulated write lands; helper for both the live view and crash replay.
fn apply_write(target: &mut Vec<u8>, pos: u64, bytes: &[u8]) {
    let pos = pos as usize;
    let end = pos + bytes.len();
    if target.len() < end {
        target.resize(end, 0);
    }
    target[pos..end].copy_from_slice(bytes);
}

impl SimDisk {
    /// A fresh, empty simulated disk whose crash behaviour is driven by `seed`.
    pub fn new(seed: u64) -> Rc<SimDisk> {
        Rc::new(SimDisk {
            inner: RefCell::new(SimInner {
                files: HashMap::new(),
                dirs: BTreeSet::new(),
                rng: seed ^ 0x9E37_79B9_7F4A_7C15,
                fail_writes: None,
                fail_syncs: None,
                syncs: 0,
                epoch: 0,
                yields_max: 0,
                pending_renames: Vec::new(),
            }),
        })
    }

    /// Makes every following data write (and small-file write) fail with `kind` until cleared
    /// with `None` (e.g. `StorageFull` to simulate ENOSPC).
    pub fn set_fail_writes(&self, kind: Option<io::ErrorKind>) {
        self.inner.borrow_mut().fail_writes = kind;
    }

    /// Makes every following `fdatasync` fail with `kind` until cleared with `None`.
    pub fn set_fail_syncs(&self, kind: Option<io::ErrorKind>) {
        self.inner.borrow_mut().fail_syncs = kind;
    }

    /// The file system as seen by a process started now; its handles stop working (every
    /// operation fails) after the next [`SimDisk::crash`].
    pub fn fs(self: &Rc<Self>) -> FileSystem {
        FileSystem::Sim(SimFs {
            disk: self.clone(),
            epoch: self.inner.borrow().epoch,
        })
    }

    /// Makes every async operation yield up to `n` times (seeded) before taking effect.
    pub fn set_yields_per_op(&self, n: u32) {
        self.inner.borrow_mut().yields_max = n;
    }

    fn yields(&self) -> u32 {
        let mut inner = self.inner.borrow_mut();
        if inner.yields_max == 0 {
            return 0;
        }
        let n = inner.yields_max as u64 + 1;
        (next_rand(&mut inner.rng) % n) as u32
    }

    /// Renames a crash now could still undo (see [`FileSystem::rename_unsynced`]).
    pub fn pending_renames(&self) -> usize {
        self.inner.borrow().pending_renames.len()
    }

    /// Number of successful `fdatasync` calls on data files so far.
    pub fn sync_count(&self) -> u64 {
        self.inner.borrow().syncs
    }

    /// Simulates power loss: for every file, keeps the synced contents, replays a random number
    /// of the unsynced writes in order and tears the last replayed one at a random byte.
    /// Every handle of the crashed "process" (its [`FileSystem`] from [`SimDisk::fs`] and its open
    /// files) fails from now on, so tasks still running cannot touch the post-crash disk.
    pub fn crash(&self) {
        let mut inner = self.inner.borrow_mut();
        inner.epoch += 1;
        // Renames no directory sync covered: each is kept or undone, newest first.
        let pending = std::mem::take(&mut inner.pending_renames);
        for r in pending.into_iter().rev() {
            if next_rand(&mut inner.rng) % 2 == 0 {
                continue;
            }
            inner.files.remove(&r.to);
            if let Some(old) = r.replaced {
                inner.files.insert(r.to, old);
            }
            inner.files.insert(r.from, r.file);
        }
        let mut paths: Vec<PathBuf> = inner.files.keys().cloned().collect();
        paths.sort(); // deterministic order for the rng
        for path in paths {
            let file = inner.files[&path].clone();
            let mut f = file.borrow_mut();
            let mut image = f.durable.clone();
            let n = f.unsynced.len();
            if n > 0 {
                let keep = (next_rand(&mut inner.rng) % (n as u64 + 1)) as usize;
                for (i, (pos, bytes)) in f.unsynced.iter().take(keep).enumerate() {
                    if i + 1 == keep {
                        let cut = (next_rand(&mut inner.rng) % (bytes.len() as u64 + 1)) as usize;
                        apply_write(&mut image, *pos, &bytes[..cut]);
                    } else {
                        apply_write(&mut image, *pos, bytes);
                    }
                }
            }
            f.data = image.clone();
            f.durable = image;
            f.unsynced.clear();
        }
    }

    fn open(self: &Rc<Self>, path: &Path, create: bool, epoch: u64) -> io::Result<SimFile> {
        let mut inner = self.inner.borrow_mut();
        if let Some(f) = inner.files.get(path) {
            return Ok(SimFile {
                disk: self.clone(),
                data: f.clone(),
                epoch,
            });
        }
        if !create {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        let f = Rc::new(RefCell::new(SimFileData {
            data: Vec::new(),
            durable: Vec::new(),
            unsynced: Vec::new(),
        }));
        inner.files.insert(path.to_path_buf(), f.clone());
        Ok(SimFile {
            disk: self.clone(),
            data: f,
            epoch,
        })
    }
}

fn next_rand(state: &mut u64) -> u64 {
    // splitmix64: tiny, deterministic, good enough for fault placement.
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// [`SimDisk`] as seen by one simulated process (see [`SimDisk::fs`]).
#[derive(Clone)]
pub struct SimFs {
    disk: Rc<SimDisk>,
    epoch: u64,
}

impl SimFs {
    fn alive(&self) -> io::Result<()> {
        self.disk.alive(self.epoch)
    }
}

impl SimDisk {
    /// Fails once the simulated process that opened a handle at `epoch` has crashed.
    fn alive(&self, epoch: u64) -> io::Result<()> {
        if self.inner.borrow().epoch == epoch {
            Ok(())
        } else {
            Err(io::Error::other("simulated process crashed"))
        }
    }
}

/// Yields to the executor `n` times (lets other tasks run while an operation is "in flight").
pub(crate) async fn yield_now_times(n: u32) {
    for _ in 0..n {
        let mut yielded = false;
        std::future::poll_fn(|cx| {
            if yielded {
                std::task::Poll::Ready(())
            } else {
                yielded = true;
                cx.waker().wake_by_ref();
                std::task::Poll::Pending
            }
        })
        .await;
    }
}

/// A handle on one simulated file.
pub struct SimFile {
    disk: Rc<SimDisk>,
    data: Rc<RefCell<SimFileData>>,
    epoch: u64,
}

impl SimFile {
    fn alive(&self) -> io::Result<()> {
        self.disk.alive(self.epoch)
    }

    fn write_at(&self, bytes: &[u8], pos: u64) -> io::Result<usize> {
        self.alive()?;
        if let Some(e) = self.disk.inner.borrow().fail_writes {
            return Err(io::Error::from(e));
        }
        let mut f = self.data.borrow_mut();
        apply_write(&mut f.data, pos, bytes);
        f.unsynced.push((pos, bytes.to_vec()));
        Ok(bytes.len())
    }

    fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        self.alive()?;
        let f = self.data.borrow();
        let start = (pos as usize).min(f.data.len());
        let end = (start + len).min(f.data.len());
        Ok(Bytes::copy_from_slice(&f.data[start..end]))
    }

    fn fdatasync(&self) -> io::Result<()> {
        self.alive()?;
        {
            let mut inner = self.disk.inner.borrow_mut();
            if let Some(e) = inner.fail_syncs {
                return Err(io::Error::from(e));
            }
            inner.syncs += 1;
        }
        let mut f = self.data.borrow_mut();
        f.durable = f.data.clone();
        f.unsynced.clear();
        Ok(())
    }

    fn pre_allocate(&self, size: u64) -> io::Result<()> {
        self.alive()?;
        let mut f = self.data.borrow_mut();
        let size = size as usize;
        if f.data.len() < size {
            f.data.resize(size, 0);
        }
        if f.durable.len() < size {
            f.durable.resize(size, 0);
        }
        Ok(())
    }

    fn truncate(&self, size: u64) -> io::Result<()> {
        self.alive()?;
        let mut f = self.data.borrow_mut();
        let size = size as usize;
        f.data.resize(size, 0);
        f.durable.resize(size, 0);
        Ok(())
    }
}
