//! Flush: write the unwritten tail of each segment with aligned O_DIRECT writes, finish
//! rolled segments (sync, trim, persist indexes, move the recovery point), fdatasync per the
//! flush policy, and the clean close at shutdown.

use std::io;
use std::rc::Rc;

use super::recover::write_recovery_point;
use super::{lock_err, Partition, CLEAN_SHUTDOWN_FILE};
use crate::io::{align_down, align_up, alloc_write_buffer, FileSystem, IoFile, IO_ALIGNMENT};
use crate::storage::producers::SNAPSHOT_FILE;
use crate::storage::segment::segment_path;
use crate::storage::{now_ms, StorageError, StorageOptions};

/// The first space reservation of a segment, and the smallest step after it (see
/// `reserve_space`): an idle partition holds this much beyond its data, not a whole
/// `log.preallocate.bytes`.
pub(crate) const PREALLOCATE_MIN_BYTES: u64 = 4 << 10;

/// One write the flusher prepared for a segment: the bytes (in page-aligned chunks) and where
/// the segment's flush cursor moves once they are on disk.
struct PreparedWrite {
    chunks: Chunks,
    /// File position of the first chunk (page aligned).
    position: u64,
    /// The segment's written size after this write.
    new_size: u64,
    /// The segment's written next offset after this write.
    new_next: i64,
    /// The new partial last page (see `LogSegment::tail`).
    new_tail: Vec<u8>,
    /// File space reserved before this write.
    allocated: u64,
}

/// What a flush does next.
enum Job {
    Write(i64),
    Finish(i64),
}

impl Partition {
    /// Records a failed flush so waiters see it; in-memory data stays pending for a retry.
    pub(super) fn record_flush_error(&self, e: &StorageError) {
        let mut st = self.state.borrow_mut();
        let (kind, msg) = match e {
            StorageError::Io(io) => (io.kind(), io.to_string()),
            other => (io::ErrorKind::Other, other.to_string()),
        };
        tracing::warn!(topic = %self.topic, partition = self.partition, error = %msg, "flush failed; data stays pending");
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

    pub(super) async fn flush_locked(
        &self,
        fs: &FileSystem,
        opts: &StorageOptions,
        force_sync: bool,
    ) -> Result<(), StorageError> {
        while let Some(job) = self.next_job() {
            match job {
                Job::Write(base) => self.write_segment(fs, opts, base).await?,
                Job::Finish(base) => self.finish_segment(fs, base).await?,
            }
        }
        self.sync_if_due(force_sync).await
    }

    /// The first segment with unwritten batches, or else the first rolled one not finished.
    fn next_job(&self) -> Option<Job> {
        let st = self.state.borrow();
        if st.deleted {
            return None;
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
    }

    /// fdatasyncs every segment written since its last sync when the policy (or `force_sync`)
    /// asks, then moves the durable offset to what was written before the syncs started.
    async fn sync_if_due(&self, force_sync: bool) -> Result<(), StorageError> {
        let (files, target) = {
            let st = self.state.borrow();
            if st.deleted || !(force_sync || st.sync_due(now_ms())) {
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
        st.oldest_unsynced_ms = (st.next_offset > target).then(now_ms);
        st.flush_error = None;
        Ok(())
    }

    /// Writes (part of) the unwritten tail of one segment: the partial last page, then whole
    /// batches, zero padding to a page, in page-aligned chunks written concurrently.
    async fn write_segment(
        &self,
        fs: &FileSystem,
        opts: &StorageOptions,
        base: i64,
    ) -> Result<(), StorageError> {
        let Some(file) = self.segment_file(fs, base).await? else {
            return Ok(());
        };
        let prepared = self.prepare_write(opts, base);
        self.reserve_space(&file, opts, base, &prepared).await?;
        let PreparedWrite {
            chunks,
            position,
            new_size,
            new_next,
            new_tail,
            ..
        } = prepared;
        write_chunks(&file, chunks.bufs, position).await?;
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

    /// The segment's file, created on its first write; `None` if the segment is gone.
    async fn segment_file(
        &self,
        fs: &FileSystem,
        base: i64,
    ) -> Result<Option<Rc<IoFile>>, StorageError> {
        let (file, path) = {
            let st = self.state.borrow();
            let Some(seg) = st.segments.get(&base) else {
                return Ok(None);
            };
            (seg.file.clone(), segment_path(&st.dir, base, "log"))
        };
        if let Some(f) = file {
            return Ok(Some(f));
        }
        let f = Rc::new(fs.open_file(&path, true).await?);
        let mut st = self.state.borrow_mut();
        Ok(st.segments.get_mut(&base).map(|seg| {
            seg.file = Some(f.clone());
            f
        }))
    }

    /// Copies the segment's partial last page and the next unwritten cached batches (up to
    /// `write_bytes_max * writes_in_flight_max` bytes, at least one batch) into aligned
    /// buffers: the one copy of record bytes on the write path.
    fn prepare_write(&self, opts: &StorageOptions, base: i64) -> PreparedWrite {
        let chunk_bytes = (align_down(opts.write_bytes_max as u64).max(IO_ALIGNMENT)) as usize;
        let job_bytes = chunk_bytes * opts.writes_in_flight_max.max(1);
        let st = self.state.borrow();
        let seg = &st.segments[&base];
        let start = align_down(seg.written_size);
        let mut total = seg.tail.len();
        let mut new_next = seg.written_next_offset;
        let mut first = true;
        for (off, b) in st.cache.range(seg.written_next_offset, seg.next_offset) {
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
            new_next = b.header.last_offset() + 1;
        }
        assert!(!first, "unwritten range without cached batches");
        let mut chunks = Chunks::new(total, chunk_bytes);
        chunks.put(&seg.tail);
        for (_, b) in st.cache.range(seg.written_next_offset, new_next) {
            chunks.put(&b.header_bytes);
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
        PreparedWrite {
            chunks,
            position: start,
            new_size,
            new_next,
            new_tail,
            allocated: seg.allocated,
        }
    }

    /// Reserves file space when the write would pass the reserved size, in steps that grow
    /// with the segment: as much again as it holds, at least [`PREALLOCATE_MIN_BYTES`] and at
    /// most `log.preallocate.bytes` (and `segment.bytes`). An idle partition's segment so
    /// reserves one 4 KiB page, not 64 MiB (Kafka's one-record partition takes ~16 KiB), and
    /// the disk holds about twice the data at most (plus one full step for a segment past
    /// 64 MiB); a busy one reaches whole 64 MiB steps after about fourteen reservations, so its flushes still write into reserved (unwritten-extent)
    /// space that needs no block allocation. A full disk may still hold this write but not a
    /// whole step: then the write goes without reserving (the file grows by it) and reports
    /// ENOSPC itself if any.
    async fn reserve_space(
        &self,
        file: &IoFile,
        opts: &StorageOptions,
        base: i64,
        w: &PreparedWrite,
    ) -> Result<(), StorageError> {
        let end = w.position + w.chunks.len as u64;
        if end <= w.allocated {
            return Ok(());
        }
        let step = {
            let st = self.state.borrow();
            let most = opts
                .preallocate_bytes
                .min(align_up(st.config.segment_bytes))
                .max(IO_ALIGNMENT);
            end.max(PREALLOCATE_MIN_BYTES).min(most)
        };
        let target = align_up(end.max(w.allocated + step));
        let reserved = match file.pre_allocate(target).await {
            Ok(()) => target,
            Err(e) if e.kind() == io::ErrorKind::StorageFull => {
                tracing::warn!(error = %e, "cannot preallocate segment space; writing without");
                w.allocated
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(seg) = self.state.borrow_mut().segments.get_mut(&base) {
            seg.allocated = reserved.max(end);
        }
        Ok(())
    }

    /// Finishes a rolled, fully written segment: sync, trim the preallocated tail, persist its
    /// indexes, then move the recovery point past it.
    async fn finish_segment(&self, fs: &FileSystem, base: i64) -> Result<(), StorageError> {
        let (sealed, dir) = {
            let mut st = self.state.borrow_mut();
            let dir = st.dir.clone();
            let Some(seg) = st.segments.get_mut(&base) else {
                return Ok(());
            };
            (seg.seal(), dir)
        };
        let (size, rp) = (sealed.size, sealed.next_offset);
        if let Some(f) = &sealed.file {
            f.fdatasync().await?;
            if sealed.allocated > size {
                f.truncate(size).await?;
                f.fdatasync().await?;
            }
        }
        sealed.write_indexes(fs, &dir).await?;
        // Every epoch starting below the recovery point must be in the checkpoint first.
        self.checkpoint_epochs(fs, false).await?;
        write_recovery_point(fs, &dir, &self.topic, self.partition, rp).await?;
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
    /// its indexes, the producer state snapshot, the recovery point (= log end) and the
    /// clean-shutdown marker.
    pub(crate) async fn close_clean(&self, fs: &FileSystem) -> Result<(), StorageError> {
        let _permit = self.io_lock.acquire_permit(1).await.map_err(lock_err)?;
        let (sealed, dir, rp) = {
            let mut st = self.state.borrow_mut();
            if st.deleted {
                return Ok(());
            }
            let next = st.next_offset;
            let dir = st.dir.clone();
            (st.active_mut().seal(), dir, next)
        };
        let size = sealed.size;
        if let Some(f) = &sealed.file {
            if sealed.allocated > size {
                f.truncate(size).await?;
            }
            f.fdatasync().await?;
            sealed.write_indexes(fs, &dir).await?;
        }
        self.write_producer_snapshot(fs, true).await?;
        self.checkpoint_epochs(fs, true).await?;
        write_recovery_point(fs, &dir, &self.topic, self.partition, rp).await?;
        fs.write_small_file_durable_off_shard(&dir.join(CLEAN_SHUTDOWN_FILE), Vec::new())
            .await?;
        let mut st = self.state.borrow_mut();
        st.active_mut().allocated = size;
        Ok(())
    }
}

impl Partition {
    /// Writes the producer state snapshot (as of the log end) if some producer has state here,
    /// under the I/O lock. The file write runs off the shard ([`FileSystem::write_small_file_durable_off_shard`]).
    pub(crate) async fn snapshot_producers(&self, fs: &FileSystem) -> Result<(), StorageError> {
        let _permit = self.io_lock.acquire_permit(1).await.map_err(lock_err)?;
        self.write_producer_snapshot(fs, false).await
    }

    /// Writes the producer state snapshot as of the log end (`always`: even when no producer
    /// has state, so the next open need not scan the log). Caller holds the I/O lock.
    async fn write_producer_snapshot(
        &self,
        fs: &FileSystem,
        always: bool,
    ) -> Result<(), StorageError> {
        let (path, bytes) = {
            let st = self.state.borrow();
            if st.deleted || (!always && st.producers.is_empty()) {
                return Ok(());
            }
            (
                st.dir.join(SNAPSHOT_FILE),
                st.producers.encode_snapshot(st.next_offset),
            )
        };
        fs.write_small_file_durable_off_shard(&path, bytes).await?;
        Ok(())
    }
}

/// Writes the buffers at consecutive positions from `position`, all in flight at once, and
/// awaits every one before returning (even on error: no write may outlive the flush).
async fn write_chunks(
    file: &Rc<IoFile>,
    bufs: Vec<glommio::io::DmaBuffer>,
    position: u64,
) -> Result<(), StorageError> {
    let mut tasks = Vec::with_capacity(bufs.len());
    let mut pos = position;
    for buf in bufs {
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
    let mut first_err = None;
    for t in tasks {
        if let Err(e) = t.await {
            first_err.get_or_insert(e);
        }
    }
    match first_err {
        Some(e) => Err(StorageError::Io(e)),
        None => Ok(()),
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
