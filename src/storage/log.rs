//! One partition's log: segments, batch cache, append, flush, read, recovery, retention.
//!
//! Only the owning shard touches a [`Partition`]. `state` is never borrowed across an `.await`;
//! every file-mutating operation (flush, finish, retention, delete, shutdown) holds `io_lock`,
//! so they never interleave with each other. Appends and reads do not take it.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use glommio::sync::Semaphore;

use super::batch::{parse_header, patched_header, validate_batch, BATCH_HEADER_BYTES};
use super::index::{OffsetIndex, TimeIndex};
use super::segment::{scan_segment, segment_path, BatchScanner, LogSegment, ScanItem};
use super::wait::WaitList;
use super::{LogAppendInfo, LogConfig, StorageError, StorageOptions, TimestampType};
use crate::io::{align_down, align_up, alloc_write_buffer, FileSystem, IoFile, IO_ALIGNMENT};

/// Name of the clean-shutdown marker inside a partition directory.
pub(crate) const CLEAN_SHUTDOWN_FILE: &str = ".clean_shutdown";
/// Name of the recovery-point checkpoint inside a partition directory (Kafka's format).
pub(crate) const RECOVERY_POINT_FILE: &str = "recovery-point-offset-checkpoint";

/// A batch held in memory: the broker's patched header and the producer's records, untouched.
pub(crate) struct CachedBatch {
    pub header: Bytes,
    pub body: Bytes,
    pub last_offset: i64,
}

impl CachedBatch {
    pub(crate) fn len(&self) -> usize {
        self.header.len() + self.body.len()
    }
}

/// Mutable state of one partition log.
pub(crate) struct LogState {
    pub topic: String,
    pub partition: i32,
    pub dir: PathBuf,
    pub config: LogConfig,
    /// By base offset; the last one is the active segment. Never empty.
    pub segments: BTreeMap<i64, LogSegment>,
    pub log_start_offset: i64,
    /// High watermark: next offset to assign.
    pub next_offset: i64,
    /// Every offset below this is written to its file.
    pub written_offset: i64,
    /// Every offset below this is fdatasynced.
    pub durable_offset: i64,
    /// The highest offset a `wait_durable` caller needs fdatasynced (-1: none). With
    /// `flush.messages=1` only such a waiter (an acks=all produce, an offset commit) or
    /// `flush.ms` makes the flusher sync; acks=0/1 data alone is written at once and synced
    /// within `flush.ms`.
    pub sync_wanted: i64,
    /// A contiguous suffix of the log, by base offset. Holds at least `[written_offset, next)`.
    pub cache: BTreeMap<i64, CachedBatch>,
    pub messages_since_sync: u64,
    pub oldest_unsynced_ms: Option<i64>,
    /// Last flush failure (kind, message); bumped epoch wakes waiters with an error.
    pub flush_error: Option<(io::ErrorKind, String)>,
    pub flush_error_epoch: u64,
    pub deleted: bool,
}

/// One partition: state plus its wait lists and I/O lock.
pub(crate) struct Partition {
    pub state: RefCell<LogState>,
    pub io_lock: Semaphore,
    /// Woken when the high watermark moves (fetch long-poll).
    pub appended: WaitList,
    /// Woken when written/durable offsets move or a flush fails.
    pub durable: WaitList,
}

fn lock_err(e: impl std::fmt::Display) -> StorageError {
    StorageError::Io(io::Error::other(format!("partition lock: {e}")))
}

impl LogState {
    fn active(&self) -> &LogSegment {
        // Invariant: a log always has an active segment.
        self.segments
            .values()
            .next_back()
            .expect("log without segments")
    }

    fn active_mut(&mut self) -> &mut LogSegment {
        self.segments
            .values_mut()
            .next_back()
            .expect("log without segments")
    }

    /// Whether `wait_durable` waits for fdatasync (else only for the write).
    pub(crate) fn sync_on_ack(&self) -> bool {
        self.config.flush_messages <= 1
    }

    /// Whether the flush policy wants an fdatasync now.
    pub(crate) fn sync_due(&self, now: i64) -> bool {
        if self.durable_offset >= self.written_offset
            && !self.segments.values().any(|s| s.dirty_since_sync)
        {
            return false;
        }
        self.sync_wanted >= self.durable_offset
            || (!self.sync_on_ack() && self.messages_since_sync >= self.config.flush_messages)
            || self
                .oldest_unsynced_ms
                .is_some_and(|t| now.saturating_sub(t) as u64 >= self.config.flush_ms)
    }

    /// When the time policy will want a sync, if data is waiting for one.
    pub(crate) fn sync_deadline(&self) -> Option<i64> {
        if self.durable_offset >= self.written_offset || self.config.flush_ms == u64::MAX {
            return None;
        }
        self.oldest_unsynced_ms
            .map(|t| t.saturating_add(self.config.flush_ms.min(i64::MAX as u64) as i64))
    }

    /// Bytes of record batches written to this log's segment (`.log`) files: the sum of the
    /// segments' written lengths, which is each file's length minus the space reserved ahead
    /// of the data (preallocation, trimmed when a segment is finished). Batches still waiting
    /// for the group commit and the `.index`/`.timeindex` files are not counted. Segments
    /// deleted by retention leave the sum when they are removed from `segments`. O(segments),
    /// no I/O.
    pub(crate) fn disk_usage_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.written_size).sum()
    }

    /// Whether the flusher has writing (or segment finishing) to do.
    pub(crate) fn needs_write(&self) -> bool {
        self.written_offset < self.next_offset
            || self.segments.values().any(|s| s.rolled && !s.finished)
    }
}

impl Partition {
    /// Validates and appends one batch in memory. Returns the append info and the bytes the
    /// batch now occupies in the cache.
    pub(crate) fn append(
        &self,
        batch: Bytes,
        now: i64,
    ) -> Result<(LogAppendInfo, usize), StorageError> {
        let mut st = self.state.borrow_mut();
        if st.deleted {
            return Err(StorageError::UnknownPartition);
        }
        let h = validate_batch(&batch, st.config.max_message_bytes)?;
        let size = batch.len() as u64;
        let count = h.last_offset_delta as i64 + 1;
        let next = st.next_offset;
        let cfg = st.config.clone();
        let active = st.active();
        let needs_roll = active.size > 0
            && (active.size + size > cfg.segment_bytes
                || now.saturating_sub(active.created_ms) as u64 >= cfg.segment_ms
                || next + count - active.base_offset > i32::MAX as i64
                || active.size + size > i32::MAX as u64);
        if needs_roll {
            st.active_mut().rolled = true;
            st.segments.insert(next, LogSegment::new(next, now));
            tracing::debug!(topic = %st.topic, partition = st.partition, base_offset = next, "rolled segment");
        }
        let base = next;
        let last = base + h.last_offset_delta as i64;
        let append_time = (cfg.timestamp_type == TimestampType::LogAppendTime).then_some(now);
        let header = patched_header(&batch, base, append_time);
        let body = batch.slice(BATCH_HEADER_BYTES..);
        let max_timestamp = append_time.unwrap_or(h.max_timestamp);
        let seg = st.active_mut();
        let pos = seg.size;
        seg.record_batch(
            base,
            last,
            max_timestamp,
            pos,
            size,
            cfg.index_interval_bytes,
        );
        st.next_offset = last + 1;
        st.messages_since_sync += count as u64;
        st.oldest_unsynced_ms.get_or_insert(now);
        let cached = CachedBatch {
            header,
            body,
            last_offset: last,
        };
        let len = cached.len();
        st.cache.insert(base, cached);
        Ok((
            LogAppendInfo {
                first_offset: base,
                last_offset: last,
                max_timestamp,
                log_append_time: append_time.unwrap_or(-1),
                log_start_offset: st.log_start_offset,
                record_count: count as u32,
            },
            len,
        ))
    }

    /// Records a failed flush so waiters see it; in-memory data stays pending for a retry.
    fn record_flush_error(&self, e: &StorageError) {
        let mut st = self.state.borrow_mut();
        let (kind, msg) = match e {
            StorageError::Io(io) => (io.kind(), io.to_string()),
            other => (io::ErrorKind::Other, other.to_string()),
        };
        tracing::warn!(topic = %st.topic, partition = st.partition, error = %msg, "flush failed; data stays pending");
        st.flush_error = Some((kind, msg));
        st.flush_error_epoch += 1;
        drop(st);
        self.durable.wake_all();
    }

    /// One flush of this partition: write everything unwritten, finish rolled segments, then
    /// fdatasync if the policy (or `force_sync`) says so. Wakes durability waiters.
    pub(crate) async fn flush(
        &self,
        fs: &FileSystem,
        opts: &StorageOptions,
        force_sync: bool,
    ) -> Result<(), StorageError> {
        let _permit = self.io_lock.acquire_permit(1).await.map_err(lock_err)?;
        let res = self.flush_locked(fs, opts, force_sync).await;
        match &res {
            Err(e) => self.record_flush_error(e),
            Ok(()) => self.durable.wake_all(),
        }
        res
    }

    async fn flush_locked(
        &self,
        fs: &FileSystem,
        opts: &StorageOptions,
        force_sync: bool,
    ) -> Result<(), StorageError> {
        enum Job {
            Write(i64),
            Finish(i64),
        }
        loop {
            let job = {
                let st = self.state.borrow();
                if st.deleted {
                    return Ok(());
                }
                st.segments.values().find_map(|s| {
                    if s.written_next_offset < s.next_offset {
                        Some(Job::Write(s.base_offset))
                    } else if s.rolled && !s.finished {
                        Some(Job::Finish(s.base_offset))
                    } else {
                        None
                    }
                })
            };
            match job {
                None => break,
                Some(Job::Write(base)) => self.write_segment(fs, opts, base).await?,
                Some(Job::Finish(base)) => self.finish_segment(fs, base).await?,
            }
        }
        let (files, target) = {
            let st = self.state.borrow();
            if !(force_sync || st.sync_due(super::now_ms())) {
                return Ok(());
            }
            let files: Vec<(i64, Rc<IoFile>)> = st
                .segments
                .values()
                .filter(|s| s.dirty_since_sync)
                .filter_map(|s| s.file.clone().map(|f| (s.base_offset, f)))
                .collect();
            (files, st.written_offset)
        };
        for (_, f) in &files {
            f.fdatasync().await?;
        }
        let mut st = self.state.borrow_mut();
        for (base, _) in &files {
            if let Some(s) = st.segments.get_mut(base) {
                s.dirty_since_sync = false;
            }
        }
        st.durable_offset = st.durable_offset.max(target);
        st.messages_since_sync = (st.next_offset - target).max(0) as u64;
        st.oldest_unsynced_ms = (st.next_offset > target).then(super::now_ms);
        st.flush_error = None;
        Ok(())
    }

    /// Writes (part of) the unwritten tail of one segment with a single aligned write.
    async fn write_segment(
        &self,
        fs: &FileSystem,
        opts: &StorageOptions,
        base: i64,
    ) -> Result<(), StorageError> {
        let (file, path, chunk) = {
            let st = self.state.borrow();
            let seg = &st.segments[&base];
            let chunk = opts
                .preallocate_bytes
                .min(align_up(st.config.segment_bytes))
                .max(IO_ALIGNMENT);
            (seg.file.clone(), segment_path(&st.dir, base, "log"), chunk)
        };
        let file = match file {
            Some(f) => f,
            None => {
                let f = Rc::new(fs.open_file(&path, true).await?);
                let mut st = self.state.borrow_mut();
                match st.segments.get_mut(&base) {
                    Some(seg) => seg.file = Some(f.clone()),
                    None => return Ok(()),
                }
                f
            }
        };
        // Build the write: the partial last page, then whole batches, zero padding to a page,
        // cut into page-aligned chunks that are written concurrently.
        let chunk_bytes = (align_down(opts.write_bytes_max as u64).max(IO_ALIGNMENT)) as usize;
        let job_bytes = chunk_bytes * opts.writes_in_flight_max.max(1);
        let (chunks, write_pos, new_size, new_next, new_tail, allocated) = {
            let st = self.state.borrow();
            let seg = &st.segments[&base];
            let start = align_down(seg.written_size);
            let mut total = seg.tail.len();
            let mut new_next = seg.written_next_offset;
            let mut first = true;
            for (&off, b) in st.cache.range(seg.written_next_offset..seg.next_offset) {
                if first {
                    assert_eq!(
                        off, seg.written_next_offset,
                        "unwritten batch missing from cache"
                    );
                } else if total + b.len() > job_bytes {
                    break;
                }
                first = false;
                total += b.len();
                new_next = b.last_offset + 1;
            }
            assert!(!first, "unwritten range without cached batches");
            let mut chunks = Chunks::new(total, chunk_bytes);
            chunks.put(&seg.tail);
            for (_, b) in st.cache.range(seg.written_next_offset..new_next) {
                chunks.put(&b.header);
                chunks.put(&b.body);
            }
            assert_eq!(
                chunks.filled, total,
                "write buffer must hold exactly the batches"
            );
            chunks.zero_rest();
            let new_size = start + total as u64;
            let tail_start = (align_down(new_size) - start) as usize;
            let new_tail = chunks.copy_out(tail_start, total);
            (chunks, start, new_size, new_next, new_tail, seg.allocated)
        };
        let end = write_pos + chunks.len as u64;
        if end > allocated {
            let target = align_up(end.max(allocated + chunk));
            // A full disk may still hold this write but not a whole chunk: then write without
            // reserving (the file grows by the write) and let the write report ENOSPC if any.
            let reserved = match file.pre_allocate(target).await {
                Ok(()) => target,
                Err(e) if e.kind() == io::ErrorKind::StorageFull => {
                    tracing::warn!(error = %e, "cannot preallocate segment space; writing without");
                    allocated
                }
                Err(e) => return Err(e.into()),
            };
            if let Some(seg) = self.state.borrow_mut().segments.get_mut(&base) {
                seg.allocated = reserved.max(end);
            }
        }
        let mut tasks = Vec::with_capacity(chunks.bufs.len());
        let mut pos = write_pos;
        for buf in chunks.bufs {
            let file = file.clone();
            let at = pos;
            pos += buf.len() as u64;
            tasks.push(glommio::spawn_local(async move {
                let len = buf.len();
                let n = file.write_at(buf, at).await?;
                if n != len {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        format!("short write at {at}: {n} of {len} bytes"),
                    ));
                }
                Ok(())
            }));
        }
        // Await all before returning, even on error: no write may outlive this flush.
        let mut first_err = None;
        for t in tasks {
            if let Err(e) = t.await {
                first_err.get_or_insert(e);
            }
        }
        if let Some(e) = first_err {
            return Err(StorageError::Io(e));
        }
        let mut st = self.state.borrow_mut();
        if let Some(seg) = st.segments.get_mut(&base) {
            seg.written_size = new_size;
            seg.written_next_offset = new_next;
            seg.tail = new_tail;
            seg.dirty_since_sync = true;
        }
        assert!(new_next > st.written_offset, "written offset must advance");
        st.written_offset = new_next;
        Ok(())
    }

    /// Finishes a rolled, fully written segment: sync, trim the preallocated tail, persist its
    /// indexes, then move the recovery point past it.
    async fn finish_segment(&self, fs: &FileSystem, base: i64) -> Result<(), StorageError> {
        let (file, size, allocated, index, timeindex, dir, rp, topic, partition) = {
            let mut st = self.state.borrow_mut();
            let (dir, topic, partition) = (st.dir.clone(), st.topic.clone(), st.partition);
            let seg = match st.segments.get_mut(&base) {
                Some(s) => s,
                None => return Ok(()),
            };
            seg.seal_time_index();
            (
                seg.file.clone(),
                seg.size,
                seg.allocated,
                seg.offset_index.to_bytes(),
                seg.time_index.to_bytes(),
                dir,
                seg.next_offset,
                topic,
                partition,
            )
        };
        if let Some(f) = &file {
            f.fdatasync().await?;
            if allocated > size {
                f.truncate(size).await?;
                f.fdatasync().await?;
            }
        }
        fs.write_small_file_durable(&segment_path(&dir, base, "index"), &index)?;
        fs.write_small_file_durable(&segment_path(&dir, base, "timeindex"), &timeindex)?;
        write_recovery_point(fs, &dir, &topic, partition, rp)?;
        let mut st = self.state.borrow_mut();
        if let Some(seg) = st.segments.get_mut(&base) {
            seg.finished = true;
            seg.dirty_since_sync = false;
            seg.allocated = size;
        }
        st.durable_offset = st.durable_offset.max(rp);
        Ok(())
    }

    /// Clean close (caller already flushed with sync): trim and sync the active segment, write
    /// its indexes, the recovery point (= log end) and the clean-shutdown marker.
    pub(crate) async fn close_clean(&self, fs: &FileSystem) -> Result<(), StorageError> {
        let _permit = self.io_lock.acquire_permit(1).await.map_err(lock_err)?;
        let (file, size, allocated, index, timeindex, dir, base, rp, topic, partition) = {
            let mut st = self.state.borrow_mut();
            if st.deleted {
                return Ok(());
            }
            let next = st.next_offset;
            let dir = st.dir.clone();
            let topic = st.topic.clone();
            let partition = st.partition;
            let seg = st.active_mut();
            seg.seal_time_index();
            (
                seg.file.clone(),
                seg.size,
                seg.allocated,
                seg.offset_index.to_bytes(),
                seg.time_index.to_bytes(),
                dir,
                seg.base_offset,
                next,
                topic,
                partition,
            )
        };
        if let Some(f) = &file {
            if allocated > size {
                f.truncate(size).await?;
            }
            f.fdatasync().await?;
            fs.write_small_file_durable(&segment_path(&dir, base, "index"), &index)?;
            fs.write_small_file_durable(&segment_path(&dir, base, "timeindex"), &timeindex)?;
        }
        write_recovery_point(fs, &dir, &topic, partition, rp)?;
        fs.write_small_file_durable(&dir.join(CLEAN_SHUTDOWN_FILE), b"")?;
        let mut st = self.state.borrow_mut();
        st.active_mut().allocated = size;
        Ok(())
    }

    /// Deletes whole non-active, finished segments past `retention.ms` / `retention.bytes` and
    /// advances the log start offset. Returns the cache bytes released.
    pub(crate) async fn apply_retention(
        &self,
        fs: &FileSystem,
        now: i64,
    ) -> Result<usize, StorageError> {
        let _permit = self.io_lock.acquire_permit(1).await.map_err(lock_err)?;
        let (victims, dir, released) = {
            let mut st = self.state.borrow_mut();
            if st.deleted {
                return Ok(0);
            }
            let cfg = st.config.clone();
            let mut total: i64 = st.segments.values().map(|s| s.size as i64).sum();
            let active_base = st.active().base_offset;
            let mut victims = Vec::new();
            for seg in st.segments.values() {
                if seg.base_offset == active_base || !seg.finished {
                    break;
                }
                let by_time = cfg.retention_ms >= 0
                    && now.saturating_sub(seg.retention_timestamp()) > cfg.retention_ms;
                let by_size =
                    cfg.retention_bytes >= 0 && total - seg.size as i64 >= cfg.retention_bytes;
                if !(by_time || by_size) {
                    break;
                }
                total -= seg.size as i64;
                victims.push(seg.base_offset);
            }
            if victims.is_empty() {
                return Ok(0);
            }
            let mut files = Vec::new();
            for b in &victims {
                if let Some(seg) = st.segments.remove(b) {
                    files.push((seg.base_offset, seg.next_offset));
                }
            }
            // Invariant: the active segment is never deleted, so a first segment exists.
            st.log_start_offset = st
                .active()
                .base_offset
                .min(*st.segments.keys().next().unwrap_or(&i64::MAX));
            let start = st.log_start_offset;
            let mut released = 0;
            let keep = st.cache.split_off(&start);
            for b in st.cache.values() {
                released += b.len();
            }
            st.cache = keep;
            tracing::info!(topic = %st.topic, partition = st.partition, deleted = ?files, log_start_offset = start, "retention deleted segments");
            (victims, st.dir.clone(), released)
        };
        for b in victims {
            for ext in ["log", "index", "timeindex"] {
                fs.remove_file(&segment_path(&dir, b, ext))?;
            }
        }
        Ok(released)
    }
}

/// Aligned write buffers for one flush job, filled in order.
struct Chunks {
    bufs: Vec<glommio::io::DmaBuffer>,
    chunk: usize,
    /// Bytes of data put so far.
    filled: usize,
    /// Total buffer bytes (page aligned).
    len: usize,
}

impl Chunks {
    fn new(total: usize, chunk: usize) -> Self {
        let len = align_up(total as u64) as usize;
        let bufs = (0..len.div_ceil(chunk))
            .map(|i| alloc_write_buffer(chunk.min(len - i * chunk)))
            .collect();
        Chunks {
            bufs,
            chunk,
            filled: 0,
            len,
        }
    }

    fn put(&mut self, mut src: &[u8]) {
        while !src.is_empty() {
            let (i, off) = (self.filled / self.chunk, self.filled % self.chunk);
            let out = self.bufs[i].as_bytes_mut();
            let n = src.len().min(out.len() - off);
            out[off..off + n].copy_from_slice(&src[..n]);
            src = &src[n..];
            self.filled += n;
        }
    }

    fn zero_rest(&mut self) {
        let (i, off) = (self.filled / self.chunk, self.filled % self.chunk);
        if i < self.bufs.len() {
            self.bufs[i].as_bytes_mut()[off..].fill(0);
        }
    }

    /// Copy of data bytes `[from, to)`; they lie in one chunk when `from` is page aligned.
    fn copy_out(&self, from: usize, to: usize) -> Vec<u8> {
        if from == to {
            return Vec::new();
        }
        let (i, off) = (from / self.chunk, from % self.chunk);
        self.bufs[i].as_bytes()[off..off + (to - from)].to_vec()
    }
}

/// Writes the recovery point in Kafka's checkpoint format (version 0, one entry).
fn write_recovery_point(
    fs: &FileSystem,
    dir: &Path,
    topic: &str,
    partition: i32,
    offset: i64,
) -> io::Result<()> {
    let text = format!("0\n1\n{topic} {partition} {offset}\n");
    fs.write_small_file_durable(&dir.join(RECOVERY_POINT_FILE), text.as_bytes())
}

fn read_recovery_point(fs: &FileSystem, dir: &Path) -> io::Result<Option<i64>> {
    let Some(bytes) = fs.read_small_file(&dir.join(RECOVERY_POINT_FILE))? else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&bytes);
    let mut lines = text.lines();
    if lines.next() != Some("0") || lines.next() != Some("1") {
        return Ok(None);
    }
    Ok(lines
        .next()
        .and_then(|l| l.split_whitespace().last())
        .and_then(|o| o.parse::<i64>().ok()))
}

/// Opens or creates the log in `dir`, recovering it as described in the module docs.
pub(crate) async fn recover(
    fs: &FileSystem,
    dir: PathBuf,
    topic: &str,
    partition: i32,
    config: LogConfig,
    now: i64,
) -> Result<Partition, StorageError> {
    fs.create_dir_all(&dir)?;
    tracing::debug!(topic, partition, "recovering partition log");
    let marker = dir.join(CLEAN_SHUTDOWN_FILE);
    let clean = fs.exists(&marker);
    let rp = read_recovery_point(fs, &dir)?;
    let mut bases: Vec<i64> = fs
        .list_files(&dir)?
        .iter()
        .filter_map(|n| n.strip_suffix(".log"))
        .filter(|s| s.len() == 20)
        .filter_map(|s| s.parse::<i64>().ok())
        .collect();
    bases.sort_unstable();
    // Segments with base >= this are re-scanned with CRC checks (None: clean, trust them).
    let scan_from_base = if clean {
        None
    } else {
        Some(match rp {
            Some(rp) => bases
                .iter()
                .rev()
                .find(|&&b| b <= rp)
                .copied()
                .unwrap_or(i64::MIN),
            None => i64::MIN,
        })
    };
    let interval = config.index_interval_bytes;
    let mut segments = BTreeMap::new();
    let mut cut_after: Option<usize> = None;
    for (i, &base) in bases.iter().enumerate() {
        let path = segment_path(&dir, base, "log");
        let file = Rc::new(fs.open_file(&path, false).await?);
        let file_len = file.file_size().await?;
        let is_last = i + 1 == bases.len();
        let mut seg = LogSegment::new(base, now);
        let full_scan = scan_from_base.is_some_and(|b| base >= b);
        let mut loaded = false;
        if !full_scan {
            let idx = fs
                .read_small_file(&segment_path(&dir, base, "index"))?
                .and_then(|b| OffsetIndex::from_bytes(&b, file_len));
            let tidx = fs
                .read_small_file(&segment_path(&dir, base, "timeindex"))?
                .and_then(|b| TimeIndex::from_bytes(&b));
            if let (Some(idx), Some(tidx)) = (idx, tidx) {
                seg.offset_index = idx;
                seg.time_index = tidx;
                loaded = true;
            }
        }
        let next_base = bases.get(i + 1).copied();
        let scan_start = if !loaded {
            seg.offset_index = OffsetIndex::new();
            seg.time_index = TimeIndex::new();
            Some((0u64, base))
        } else if is_last {
            let (rel, pos) = seg.offset_index.last().unwrap_or((0, 0));
            Some((pos as u64, base + rel as i64))
        } else {
            None
        };
        let mut torn = None;
        match scan_start {
            None => {
                seg.size = file_len;
                seg.next_offset = next_base.unwrap_or(base);
                if let Some(ts) = seg.time_index.last_timestamp() {
                    seg.max_timestamp = ts;
                }
            }
            Some((pos, off)) => {
                if let Some(ts) = seg.time_index.last_timestamp() {
                    seg.max_timestamp = ts;
                }
                torn = scan_segment(&mut seg, &file, pos, off, file_len, interval).await?;
                if loaded && pos != 0 {
                    if let Some((position, reason)) = &torn {
                        // A trusted index whose last entry leads to a bad batch may be the
                        // damaged part: rebuild it from the segment start before cutting data.
                        tracing::warn!(
                            topic, partition, segment = base, position, %reason,
                            "scan from the last offset index entry failed; rebuilding the index from the segment start"
                        );
                        seg.offset_index = OffsetIndex::new();
                        seg.time_index = TimeIndex::new();
                        seg.max_timestamp = -1;
                        seg.offset_of_max_timestamp = base;
                        torn = scan_segment(&mut seg, &file, 0, base, file_len, interval).await?;
                    }
                }
                if torn.is_none() && !is_last && Some(seg.next_offset) != next_base {
                    torn = Some((
                        seg.size,
                        format!(
                            "segment ends at offset {} but the next one starts at {:?}",
                            seg.next_offset, next_base
                        ),
                    ));
                }
                if let Some((position, reason)) = &torn {
                    tracing::warn!(
                        topic, partition, segment = base, position, dropped_bytes = file_len - position,
                        %reason, "truncating log at the first torn or corrupt batch"
                    );
                }
                if file_len > seg.size {
                    // Drop the torn bytes or the preallocated zeros: nothing stale may remain
                    // behind the log end, where a later crash could resurrect it.
                    file.truncate(seg.size).await?;
                    file.fdatasync().await?;
                }
                seg.offset_index.truncate_to_position(seg.size as u32);
                seg.time_index
                    .truncate_to_offset((seg.next_offset - base).clamp(0, u32::MAX as i64) as u32);
            }
        }
        seg.file = Some(file);
        seg.allocated = seg.size;
        seg.written_size = seg.size;
        seg.written_next_offset = seg.next_offset;
        seg.rolled = true;
        seg.finished = true;
        segments.insert(base, seg);
        if torn.is_some() {
            cut_after = Some(i);
            break;
        }
    }
    if let Some(i) = cut_after {
        for &b in &bases[i + 1..] {
            tracing::warn!(
                topic,
                partition,
                segment = b,
                "deleting segment after truncation point"
            );
            for ext in ["log", "index", "timeindex"] {
                fs.remove_file(&segment_path(&dir, b, ext))?;
            }
        }
    }
    if segments.is_empty() {
        let start = rp.unwrap_or(0).max(0);
        segments.insert(start, LogSegment::new(start, now));
    }
    let (log_start, next_offset) = {
        let first = *segments.keys().next().unwrap_or(&0);
        let active = segments.values_mut().next_back().expect("just inserted");
        active.rolled = false;
        active.finished = false;
        if let Some(f) = &active.file {
            let page = align_down(active.size);
            let want = (active.size - page) as usize;
            let tail = f.read_at(page, want).await?;
            if tail.len() != want {
                return Err(StorageError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "could not read the last page of the active segment",
                )));
            }
            active.tail = tail.to_vec();
        }
        (first, active.next_offset)
    };
    if clean {
        fs.remove_file(&marker)?;
    }
    tracing::info!(
        topic,
        partition,
        clean,
        log_start,
        next_offset,
        segments = segments.len(),
        "opened partition log"
    );
    Ok(Partition {
        state: RefCell::new(LogState {
            topic: topic.to_owned(),
            partition,
            dir,
            config,
            segments,
            log_start_offset: log_start,
            next_offset,
            written_offset: next_offset,
            durable_offset: next_offset,
            sync_wanted: -1,
            cache: BTreeMap::new(),
            messages_since_sync: 0,
            oldest_unsynced_ms: None,
            flush_error: None,
            flush_error_epoch: 0,
            deleted: false,
        }),
        io_lock: Semaphore::new(1),
        appended: WaitList::default(),
        durable: WaitList::default(),
    })
}

/// One batch found by a read, as buffers ready for the socket.
pub(crate) struct ReadBatch {
    pub header: super::BatchHeader,
    pub parts: [Option<Bytes>; 2],
}

impl ReadBatch {
    fn len(&self) -> usize {
        self.parts.iter().flatten().map(|b| b.len()).sum()
    }
}

/// Where a read goes once the state borrow is dropped.
enum ReadPlan {
    Done(Vec<ReadBatch>),
    Disk {
        file: Rc<IoFile>,
        start: u64,
        end: u64,
        chunk: usize,
        path: PathBuf,
    },
}

/// Reads whole batches from the one containing `fetch_offset` (offsets already range-checked by
/// the caller: `log_start <= fetch_offset < high watermark`) up to `max_bytes`, and at least one
/// if `min_one`. Also returns the bytes of the disk read buffers the batches hold (zero from
/// the batch cache). `None` when the data is not in the batch cache and `disk` is false.
pub(crate) async fn read_batches(
    p: &Partition,
    fetch_offset: i64,
    max_bytes: usize,
    min_one: bool,
    disk: bool,
) -> Result<Option<(Vec<ReadBatch>, usize)>, StorageError> {
    let plan = {
        let st = p.state.borrow();
        match st.cache.first_key_value() {
            Some((&first, _)) if fetch_offset >= first => {
                let mut out = Vec::new();
                let mut total = 0;
                let start = st
                    .cache
                    .range(..=fetch_offset)
                    .next_back()
                    .map(|(&k, _)| k)
                    .unwrap_or(first);
                for (_, b) in st.cache.range(start..) {
                    if (!out.is_empty() || !min_one) && total + b.len() > max_bytes {
                        break;
                    }
                    let header = parse_header(&b.header)?;
                    total += b.len();
                    out.push(ReadBatch {
                        header,
                        parts: [Some(b.header.clone()), Some(b.body.clone())],
                    });
                }
                super::report_read(true);
                ReadPlan::Done(out)
            }
            _ if !disk => return Ok(None),
            _ => {
                let Some(seg) = st
                    .segments
                    .range(..=fetch_offset)
                    .next_back()
                    .map(|(_, s)| s)
                else {
                    return Ok(Some((Vec::new(), 0)));
                };
                let Some(file) = seg.file.clone() else {
                    return Ok(Some((Vec::new(), 0)));
                };
                super::report_read(false);
                let rel = (fetch_offset - seg.base_offset).clamp(0, u32::MAX as i64) as u32;
                let (_, pos) = seg.offset_index.lookup(rel);
                ReadPlan::Disk {
                    file,
                    start: pos as u64,
                    end: seg.written_size,
                    chunk: max_bytes
                        .saturating_add(st.config.index_interval_bytes as usize)
                        .min(16 << 20),
                    path: segment_path(&st.dir, seg.base_offset, "log"),
                }
            }
        }
    };
    match plan {
        ReadPlan::Done(v) => Ok(Some((v, 0))),
        ReadPlan::Disk {
            file,
            start,
            end,
            chunk,
            path,
        } => {
            // CRC32C on every batch read from disk: bit rot in a segment that recovery trusted
            // (a clean shutdown, a rolled segment) must end the read, never reach a consumer.
            let mut from = start;
            'scan: loop {
                let mut scanner = BatchScanner::new(&file, from, end, chunk, true);
                let mut out: Vec<ReadBatch> = Vec::new();
                let mut total = 0;
                // Read buffers the returned batches are slices of: (generation, length).
                let mut allocated = 0usize;
                let mut last_buffer = None;
                loop {
                    match scanner.next_batch().await? {
                        ScanItem::End => break,
                        ScanItem::Torn { position, reason } => {
                            if out.is_empty() {
                                if from != 0 {
                                    // The offset index is a hint read from disk: when the batch
                                    // it points at does not parse, scan from the segment start.
                                    tracing::warn!(path = %path.display(), position, %reason, "offset index points at no batch; reading from the segment start");
                                    from = 0;
                                    continue 'scan;
                                }
                                return Err(StorageError::CorruptLog {
                                    path,
                                    reason: format!("at position {position}: {reason}"),
                                });
                            }
                            break;
                        }
                        ScanItem::Batch { header, bytes, .. } => {
                            if out.is_empty() && from != 0 && header.base_offset > fetch_offset {
                                // An index entry past the offset asked for: it lies (see above).
                                tracing::warn!(path = %path.display(), position = from, "offset index points past the fetch offset; reading from the segment start");
                                from = 0;
                                continue 'scan;
                            }
                            if header.last_offset() < fetch_offset {
                                continue;
                            }
                            if (!out.is_empty() || !min_one) && total + bytes.len() > max_bytes {
                                break;
                            }
                            let (generation, len) = scanner.buffer();
                            if last_buffer != Some(generation) {
                                last_buffer = Some(generation);
                                allocated += len;
                            }
                            total += bytes.len();
                            let b = ReadBatch {
                                header,
                                parts: [Some(bytes), None],
                            };
                            debug_assert_eq!(b.len(), header.size_bytes());
                            out.push(b);
                            if total >= max_bytes {
                                break;
                            }
                        }
                    }
                }
                return Ok(Some((out, allocated)));
            }
        }
    }
}
