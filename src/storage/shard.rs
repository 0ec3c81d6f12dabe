//! [`ShardStorage`]: the per-shard entry point the broker calls.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;

use super::log::{read_batches, recover, Partition};
use super::wait::Notify;
use super::{
    now_ms, FetchDataInfo, LogAppendInfo, LogConfig, PartitionStats, StorageError, StorageOptions,
};
use crate::io::{prime_iopoll_probe, probe_direct_io, FileSystem};

fn stats_of(st: &super::log::LogState) -> PartitionStats {
    PartitionStats {
        log_start_offset: st.log_start_offset,
        high_watermark: st.next_offset,
        disk_usage_bytes: st.disk_usage_bytes(),
    }
}

/// Accounting of the shard's batch cache: bytes held and insertion order for eviction.
#[derive(Default)]
struct CacheAccounting {
    bytes: usize,
    fifo: VecDeque<(Weak<Partition>, i64)>,
}

/// The storage of one shard: its partition logs, batch cache and group-commit flusher.
///
/// Single-threaded: lives inside one glommio `LocalExecutor`. Never scans for partitions on
/// its own: only those passed to [`ShardStorage::open_partition`] exist here.
pub struct ShardStorage {
    data_dir: PathBuf,
    options: StorageOptions,
    fs: FileSystem,
    partitions: RefCell<HashMap<String, HashMap<i32, Rc<Partition>>>>,
    cache: RefCell<CacheAccounting>,
    flusher_wake: Rc<Notify>,
    shutting_down: Cell<bool>,
    background_started: Cell<bool>,
}

impl Drop for ShardStorage {
    fn drop(&mut self) {
        self.flusher_wake.close();
    }
}

impl ShardStorage {
    /// Opens the shard's storage rooted at `data_dir` (created if missing). Checks that the
    /// directory accepts O_DIRECT and fails with [`StorageError::DirectIoUnsupported`] naming it
    /// if not, unless `options.buffered_io` asks for the (logged) page-cache fallback.
    pub async fn open(
        data_dir: &Path,
        options: StorageOptions,
    ) -> Result<Rc<ShardStorage>, StorageError> {
        std::fs::create_dir_all(data_dir)?;
        let fs = if options.buffered_io {
            tracing::warn!(dir = %data_dir.display(), "buffered I/O fallback: segments go through the page cache, not O_DIRECT");
            FileSystem::Real { buffered: true }
        } else {
            probe_direct_io(data_dir).map_err(|source| StorageError::DirectIoUnsupported {
                dir: data_dir.to_path_buf(),
                source,
            })?;
            prime_iopoll_probe(data_dir).await?;
            FileSystem::Real { buffered: false }
        };
        Self::open_with_fs(data_dir, options, fs).await
    }

    /// Like [`ShardStorage::open`] on an explicit file system (the simulated disk in tests).
    pub async fn open_with_fs(
        data_dir: &Path,
        options: StorageOptions,
        fs: FileSystem,
    ) -> Result<Rc<ShardStorage>, StorageError> {
        fs.create_dir_all(data_dir)?;
        Ok(Rc::new(ShardStorage {
            data_dir: data_dir.to_path_buf(),
            options,
            fs,
            partitions: RefCell::new(HashMap::new()),
            cache: RefCell::new(CacheAccounting::default()),
            flusher_wake: Rc::new(Notify::default()),
            shutting_down: Cell::new(false),
            background_started: Cell::new(false),
        }))
    }

    fn partition(&self, topic: &str, partition: i32) -> Result<Rc<Partition>, StorageError> {
        self.partitions
            .borrow()
            .get(topic)
            .and_then(|m| m.get(&partition))
            .cloned()
            .ok_or(StorageError::UnknownPartition)
    }

    fn all_partitions(&self) -> Vec<Rc<Partition>> {
        self.partitions
            .borrow()
            .values()
            .flat_map(|m| m.values().cloned())
            .collect()
    }

    /// Opens the log of `topic`/`partition` (directory `<data_dir>/<topic>-<partition>`),
    /// creating it if missing, else recovering it. Idempotent: if already open, only the config
    /// is updated.
    pub async fn open_partition(
        &self,
        topic: &str,
        partition: i32,
        config: LogConfig,
    ) -> Result<(), StorageError> {
        if self.shutting_down.get() {
            return Err(StorageError::ShuttingDown);
        }
        if let Ok(p) = self.partition(topic, partition) {
            p.state.borrow_mut().config = config;
            return Ok(());
        }
        let dir = self.data_dir.join(format!("{topic}-{partition}"));
        let p = recover(&self.fs, dir, topic, partition, config, now_ms()).await?;
        let mut parts = self.partitions.borrow_mut();
        // Another task may have opened it while we recovered: keep the first.
        parts
            .entry(topic.to_owned())
            .or_default()
            .entry(partition)
            .or_insert_with(|| Rc::new(p));
        Ok(())
    }

    /// Replaces the partition's config (takes effect for the next append, flush and retention
    /// run). Unknown partitions are ignored.
    pub fn set_config(&self, topic: &str, partition: i32, config: LogConfig) {
        if let Ok(p) = self.partition(topic, partition) {
            p.state.borrow_mut().config = config;
        }
    }

    /// Closes the partition and removes its directory with everything in it. Pending waiters
    /// on it resolve (`wait_durable` with [`StorageError::UnknownPartition`]).
    pub async fn delete_partition(&self, topic: &str, partition: i32) -> Result<(), StorageError> {
        let p = {
            let mut parts = self.partitions.borrow_mut();
            let Some(m) = parts.get_mut(topic) else {
                return Err(StorageError::UnknownPartition);
            };
            let Some(p) = m.remove(&partition) else {
                return Err(StorageError::UnknownPartition);
            };
            if m.is_empty() {
                parts.remove(topic);
            }
            p
        };
        let _permit = p
            .io_lock
            .acquire_permit(1)
            .await
            .map_err(|e| StorageError::Io(io::Error::other(e.to_string())))?;
        let dir = {
            let mut st = p.state.borrow_mut();
            st.deleted = true;
            let released: usize = st.cache.values().map(|b| b.len()).sum();
            st.cache.clear();
            st.segments.clear();
            self.cache.borrow_mut().bytes -= released;
            st.dir.clone()
        };
        p.appended.wake_all();
        p.durable.wake_all();
        self.fs.remove_dir_all(&dir)?;
        tracing::info!(topic, partition, "deleted partition");
        Ok(())
    }

    /// Validates `batch` (one v2 batch), assigns its offsets and appends it to the in-memory
    /// tail and the batch cache. Synchronous: acks=1 may be answered on return. Nothing is
    /// appended on error. The batch's bytes are kept as they are (no copy).
    pub fn append(
        &self,
        topic: &str,
        partition: i32,
        batch: Bytes,
    ) -> Result<LogAppendInfo, StorageError> {
        if self.shutting_down.get() {
            return Err(StorageError::ShuttingDown);
        }
        let p = self.partition(topic, partition)?;
        let (info, len) = p.append(batch, now_ms())?;
        {
            let mut c = self.cache.borrow_mut();
            c.bytes += len;
            c.fifo.push_back((Rc::downgrade(&p), info.first_offset));
        }
        self.evict();
        p.appended.wake_all();
        self.flusher_wake.notify();
        Ok(info)
    }

    /// Drops the oldest cached batches that are already written while over the cache cap.
    /// Unwritten batches stop the eviction (they must stay until the flusher wrote them).
    fn evict(&self) {
        let mut c = self.cache.borrow_mut();
        while c.bytes > self.options.batch_cache_bytes_max {
            let Some((weak, base)) = c.fifo.front().cloned() else {
                break;
            };
            let Some(p) = weak.upgrade() else {
                c.fifo.pop_front();
                continue;
            };
            let Ok(mut st) = p.state.try_borrow_mut() else {
                break;
            };
            match st.cache.get(&base) {
                None => {
                    c.fifo.pop_front();
                }
                Some(b) if b.last_offset < st.written_offset => {
                    let len = b.len();
                    st.cache.remove(&base);
                    c.bytes -= len;
                    c.fifo.pop_front();
                }
                Some(_) => break,
            }
        }
    }

    /// Bytes currently held by the batch cache (may exceed the cap while data is unwritten).
    pub fn cache_bytes(&self) -> usize {
        self.cache.borrow().bytes
    }

    /// Waits while this shard holds more than `limit` bytes appended but not yet written (they
    /// cannot leave memory: producers faster than the disk are slowed to its pace). Fails at
    /// once when a partition's last write failed (a full disk: nothing drains until space is
    /// freed, so acks=0/1 producers get an error instead of filling memory), and at `deadline`.
    pub async fn wait_unwritten_below(
        &self,
        limit: u64,
        deadline: std::time::Instant,
    ) -> Result<(), StorageError> {
        loop {
            if self.unwritten_bytes() <= limit {
                return Ok(());
            }
            let failed = self.all_partitions().iter().find_map(|p| {
                let st = p.state.borrow();
                (st.written_offset < st.next_offset)
                    .then(|| st.flush_error.clone())
                    .flatten()
            });
            if let Some((kind, msg)) = failed {
                return Err(StorageError::Io(io::Error::new(kind, msg)));
            }
            if std::time::Instant::now() >= deadline {
                return Err(StorageError::Io(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "unwritten data did not drain to disk in time",
                )));
            }
            self.flusher_wake.notify();
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Bytes appended on this shard but not yet written to disk: they cannot leave memory, so
    /// this is the backpressure signal ([`ShardStorage::wait_unwritten_below`]).
    /// O(partitions).
    pub fn unwritten_bytes(&self) -> u64 {
        self.all_partitions()
            .iter()
            .map(|p| {
                p.state
                    .borrow()
                    .segments
                    .values()
                    .rev()
                    .take_while(|s| s.written_size < s.size)
                    .map(|s| s.size - s.written_size)
                    .sum::<u64>()
            })
            .sum()
    }

    /// The partition's offsets and the bytes its segment files hold (see
    /// [`PartitionStats::disk_usage_bytes`]), from in-memory state: no I/O, O(segments).
    /// [`StorageError::UnknownPartition`] if this shard has not opened it (or deleted it).
    pub fn stats(&self, topic: &str, partition: i32) -> Result<PartitionStats, StorageError> {
        let p = self.partition(topic, partition)?;
        let st = p.state.borrow();
        Ok(stats_of(&st))
    }

    /// Calls `visit(topic, partition, stats)` once for every partition open on this shard, in
    /// no particular order; the same values as [`ShardStorage::stats`]. No I/O and no
    /// allocation; `visit` must not open or delete partitions (the map is borrowed).
    pub fn partition_stats(&self, mut visit: impl FnMut(&str, i32, PartitionStats)) {
        for (topic, parts) in self.partitions.borrow().iter() {
            for (&partition, p) in parts {
                let st = p.state.borrow();
                if !st.deleted {
                    visit(topic, partition, stats_of(&st));
                }
            }
        }
    }

    /// Resolves once `offset` is durable: fdatasynced (`flush.messages` = 1, default) or
    /// written to the device (`flush.messages` > 1, sync deferred by policy). Returns
    /// [`StorageError::Io`] if a flush attempted while waiting failed (the data stays pending
    /// and is retried; a new wait may succeed later). Needs [`ShardStorage::spawn_background_tasks`]
    /// (or someone calling [`ShardStorage::flush`]).
    pub async fn wait_durable(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<(), StorageError> {
        let p = self.partition(topic, partition)?;
        let epoch0 = {
            let mut st = p.state.borrow_mut();
            if offset >= st.next_offset {
                return Err(StorageError::OffsetOutOfRange {
                    offset,
                    log_start_offset: st.log_start_offset,
                    high_watermark: st.next_offset,
                });
            }
            if st.sync_on_ack() {
                // Group commit: the next flush round syncs because someone waits for it.
                st.sync_wanted = st.sync_wanted.max(offset);
            }
            st.flush_error_epoch
        };
        std::future::poll_fn(|cx| {
            let st = p.state.borrow();
            if st.deleted {
                return Poll::Ready(Err(StorageError::UnknownPartition));
            }
            let reached = if st.sync_on_ack() {
                st.durable_offset
            } else {
                st.written_offset
            };
            if reached > offset {
                return Poll::Ready(Ok(()));
            }
            if st.flush_error_epoch != epoch0 {
                let (kind, msg) = st
                    .flush_error
                    .clone()
                    .unwrap_or((io::ErrorKind::Other, "flush failed".into()));
                return Poll::Ready(Err(StorageError::Io(io::Error::new(kind, msg))));
            }
            p.durable.register(cx.waker());
            self.flusher_wake.notify();
            Poll::Pending
        })
        .await
    }

    /// Reads whole batches starting with the one containing `fetch_offset`: at least one batch
    /// if any data exists there (even if larger than `max_bytes`), otherwise up to `max_bytes`.
    /// Served from the batch cache without copying, or from the segment file (one copy from the
    /// I/O buffer into `Bytes`). `fetch_offset == high watermark` gives no batches;
    /// outside `[log start, high watermark]` gives [`StorageError::OffsetOutOfRange`].
    pub async fn read(
        &self,
        topic: &str,
        partition: i32,
        fetch_offset: i64,
        max_bytes: usize,
    ) -> Result<FetchDataInfo, StorageError> {
        self.read_limited(topic, partition, fetch_offset, max_bytes, true, true)
            .await
    }

    /// As [`ShardStorage::read`], but with `min_one` false the batches stay within `max_bytes`
    /// even when the first one does not fit (then none is returned, and with `max_bytes == 0`
    /// nothing is read at all: only the range is checked); with `disk` false only the batch
    /// cache is read, and data that is on disk only gives no batches and `needs_disk`.
    /// `allocated` in the result counts the disk read buffers the batches hold.
    pub async fn read_limited(
        &self,
        topic: &str,
        partition: i32,
        fetch_offset: i64,
        max_bytes: usize,
        min_one: bool,
        disk: bool,
    ) -> Result<FetchDataInfo, StorageError> {
        let p = self.partition(topic, partition)?;
        let (log_start_offset, high_watermark) = self.check_range(&p, fetch_offset)?;
        let mut out = FetchDataInfo {
            batches: Vec::new(),
            high_watermark,
            log_start_offset,
            allocated: 0,
            needs_disk: false,
        };
        if fetch_offset == high_watermark || (max_bytes == 0 && !min_one) {
            return Ok(out);
        }
        let Some((batches, allocated)) =
            read_batches(&p, fetch_offset, max_bytes, min_one, disk).await?
        else {
            out.needs_disk = true;
            return Ok(out);
        };
        for b in batches {
            out.batches.extend(b.parts.into_iter().flatten());
        }
        out.allocated = allocated;
        Ok(out)
    }

    fn check_range(&self, p: &Partition, offset: i64) -> Result<(i64, i64), StorageError> {
        let st = p.state.borrow();
        if st.deleted {
            return Err(StorageError::UnknownPartition);
        }
        if offset < st.log_start_offset || offset > st.next_offset {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start_offset: st.log_start_offset,
                high_watermark: st.next_offset,
            });
        }
        Ok((st.log_start_offset, st.next_offset))
    }

    /// `(log start offset, high watermark)`; the high watermark is the next offset to assign.
    pub fn offsets(&self, topic: &str, partition: i32) -> Result<(i64, i64), StorageError> {
        let p = self.partition(topic, partition)?;
        let st = p.state.borrow();
        Ok((st.log_start_offset, st.next_offset))
    }

    /// ListOffsets by time: `(base offset, max timestamp)` of the first batch whose max
    /// timestamp is `>= timestamp`, or `None` if there is none. Kafka's special values work
    /// too: -2 (earliest) gives `(log start, -1)`, -1 (latest) gives `(high watermark, -1)`.
    pub async fn offset_for_timestamp(
        &self,
        topic: &str,
        partition: i32,
        timestamp: i64,
    ) -> Result<Option<(i64, i64)>, StorageError> {
        let p = self.partition(topic, partition)?;
        let mut start = {
            let st = p.state.borrow();
            match timestamp {
                -2 => return Ok(Some((st.log_start_offset, -1))),
                -1 => return Ok(Some((st.next_offset, -1))),
                _ => {}
            }
            let Some(seg) = st.segments.values().find(|s| s.max_timestamp >= timestamp) else {
                return Ok(None);
            };
            (seg.base_offset + seg.time_index.lookup_scan_start(timestamp) as i64)
                .max(st.log_start_offset)
        };
        loop {
            let hw = match self.check_range(&p, start) {
                Ok((_, hw)) => hw,
                // Retention moved the start past us: continue from the new start.
                Err(StorageError::OffsetOutOfRange {
                    log_start_offset,
                    high_watermark,
                    ..
                }) if start < log_start_offset && log_start_offset < high_watermark => {
                    start = log_start_offset;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if start >= hw {
                return Ok(None);
            }
            let (batches, _) = read_batches(&p, start, 1 << 20, true, true)
                .await?
                .unwrap_or_default();
            let Some(last) = batches.last() else {
                return Ok(None);
            };
            let next = last.header.last_offset() + 1;
            if let Some(b) = batches.iter().find(|b| b.header.max_timestamp >= timestamp) {
                return Ok(Some((b.header.base_offset, b.header.max_timestamp)));
            }
            if next <= start {
                return Ok(None);
            }
            start = next;
        }
    }

    /// Resolves when the high watermark is `> after_offset` (or the partition is gone).
    /// Cancel by dropping the future.
    pub async fn appended(&self, topic: &str, partition: i32, after_offset: i64) {
        let Ok(p) = self.partition(topic, partition) else {
            return;
        };
        std::future::poll_fn(|cx| {
            let st = p.state.borrow();
            if st.deleted || st.next_offset > after_offset {
                return Poll::Ready(());
            }
            p.appended.register(cx.waker());
            Poll::Pending
        })
        .await
    }

    /// One flush round over every partition: writes all unwritten data and fdatasyncs every
    /// written file (regardless of the flush policy). Returns the first error; the failing
    /// partitions keep their data pending.
    pub async fn flush(&self) -> Result<(), StorageError> {
        self.flush_round(true).await
    }

    /// Test hook: one flusher round (writes everything, syncs per policy).
    #[cfg(test)]
    pub(crate) async fn flush_round_for_test(&self) -> Result<(), StorageError> {
        self.flush_round(false).await
    }

    /// Test hook: the partition's durable (fdatasynced) offset.
    #[cfg(test)]
    pub(crate) fn durable_offset_for_test(&self, topic: &str, partition: i32) -> i64 {
        self.partition(topic, partition)
            .map(|p| p.state.borrow().durable_offset)
            .unwrap_or(-1)
    }

    /// One round: every partition with work flushes in its own task, so their writes and
    /// fdatasyncs are in flight together (one commit round per shard, not one per partition).
    async fn flush_round(&self, force_sync: bool) -> Result<(), StorageError> {
        let now = now_ms();
        let mut tasks = Vec::new();
        for p in self.all_partitions() {
            let work = {
                let st = p.state.borrow();
                st.needs_write()
                    || (force_sync && st.durable_offset < st.written_offset)
                    || st.sync_due(now)
            };
            if !work {
                continue;
            }
            let fs = self.fs.clone();
            let opts = self.options.clone();
            tasks.push(glommio::spawn_local(async move {
                p.flush(&fs, &opts, force_sync).await
            }));
        }
        let mut first_err = None;
        for t in tasks {
            if let Err(e) = t.await {
                first_err.get_or_insert(e);
            }
        }
        // Written batches may now be evicted.
        self.evict();
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// What the flusher should do next: `Ok(())` = work now, `Err(deadline)` = sleep until then
    /// (ms since epoch) or until notified.
    fn flusher_plan(&self, now: i64) -> Result<(), Option<i64>> {
        let mut deadline: Option<i64> = None;
        for p in self.all_partitions() {
            let st = p.state.borrow();
            if st.needs_write() || st.sync_due(now) {
                return Ok(());
            }
            if let Some(d) = st.sync_deadline() {
                deadline = Some(deadline.map_or(d, |x: i64| x.min(d)));
            }
        }
        Err(deadline)
    }

    /// Starts the shard's group-commit flusher and the retention task (once). They stop at
    /// [`ShardStorage::shutdown`] or when the storage is dropped.
    pub fn spawn_background_tasks(self: &Rc<Self>) {
        if self.background_started.replace(true) {
            return;
        }
        let weak = Rc::downgrade(self);
        let wake = self.flusher_wake.clone();
        glommio::spawn_local(flusher_loop(weak.clone(), wake)).detach();
        glommio::spawn_local(retention_loop(weak)).detach();
    }

    /// Runs retention on every partition now (the background task calls this periodically).
    pub async fn enforce_retention(&self) -> Result<(), StorageError> {
        let now = now_ms();
        let mut first_err = None;
        for p in self.all_partitions() {
            match p.apply_retention(&self.fs, now).await {
                Ok(released) => self.cache.borrow_mut().bytes -= released,
                Err(e) => {
                    tracing::warn!(error = %e, "retention failed");
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Stops accepting appends, flushes and syncs everything, writes every active segment's
    /// indexes, the recovery points and the clean-shutdown markers. Idempotent.
    pub async fn shutdown(&self) -> Result<(), StorageError> {
        if self.shutting_down.replace(true) {
            return Ok(());
        }
        self.flusher_wake.close();
        let mut first_err = None;
        for p in self.all_partitions() {
            let res = match p.flush(&self.fs, &self.options, true).await {
                Ok(()) => p.close_clean(&self.fs).await,
                Err(e) => Err(e),
            };
            if let Err(e) = res {
                let st = p.state.borrow();
                tracing::error!(topic = %st.topic, partition = st.partition, error = %e, "unclean close");
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

async fn flusher_loop(weak: Weak<ShardStorage>, wake: Rc<Notify>) {
    loop {
        if wake.is_closed() {
            return;
        }
        let plan = {
            let Some(s) = weak.upgrade() else { return };
            if s.shutting_down.get() {
                return;
            }
            match s.flusher_plan(now_ms()) {
                Ok(()) => {
                    if s.flush_round(false).await.is_err() {
                        let backoff = s.options.flush_retry_backoff_ms;
                        drop(s);
                        glommio::timer::sleep(Duration::from_millis(backoff)).await;
                    }
                    continue;
                }
                Err(deadline) => deadline,
            }
        };
        match plan {
            None => wake.notified().await,
            Some(d) => {
                let ms = (d - now_ms()).max(1) as u64;
                futures_lite::future::or(wake.notified(), async {
                    glommio::timer::sleep(Duration::from_millis(ms)).await;
                })
                .await;
            }
        }
    }
}

async fn retention_loop(weak: Weak<ShardStorage>) {
    loop {
        let interval = {
            let Some(s) = weak.upgrade() else { return };
            if s.shutting_down.get() {
                return;
            }
            s.options.retention_check_interval_ms
        };
        glommio::timer::sleep(Duration::from_millis(interval)).await;
        let Some(s) = weak.upgrade() else { return };
        if s.shutting_down.get() {
            return;
        }
        let _ = s.enforce_retention().await;
    }
}
