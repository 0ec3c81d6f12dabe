//! [`ShardStorage`]: the per-shard entry point the broker calls.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};
use std::time::Duration;

use bytes::Bytes;

use super::batch::count_records;
use super::log::{AppendOutcome, CacheBytes, Eviction, Partition};
use super::wait::Notify;

/// Partitions a shard closes at once at clean shutdown (each: a final sync, its indexes,
/// producer snapshot, recovery point and clean-shutdown marker).
const PARTITION_CLOSES_IN_FLIGHT_MAX: usize = 32;
use super::{
    now_ms, AppendOrigin, CleanerStats, FetchDataInfo, LogAppendInfo, LogConfig, PartitionStats,
    ProducerDescription, StorageError, StorageOptions,
};
use crate::io::{prime_iopoll_probe, probe_direct_io, FileSystem};

/// The storage of one shard: its partition logs, batch cache and group-commit flusher.
///
/// Single-threaded: lives inside one glommio `LocalExecutor`. Never scans for partitions on
/// its own: only those passed to [`ShardStorage::open_partition`] exist here.
pub struct ShardStorage {
    data_dir: PathBuf,
    options: StorageOptions,
    fs: FileSystem,
    partitions: RefCell<HashMap<String, HashMap<i32, Rc<Partition>>>>,
    /// Bytes held by the partitions' batch caches (each cache keeps it in step).
    cache_bytes: CacheBytes,
    /// The cached batches in insertion order, for eviction: (partition, base offset).
    cache_fifo: RefCell<VecDeque<(Weak<Partition>, i64)>>,
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
            cache_bytes: CacheBytes::default(),
            cache_fifo: RefCell::new(VecDeque::new()),
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
    /// creating it if missing, else recovering it, and loads its idempotent producer state
    /// (snapshot, then the batch headers after it). Idempotent: if already open, only the
    /// config is updated.
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
            p.set_config(config);
            return Ok(());
        }
        let dir = self.data_dir.join(format!("{topic}-{partition}"));
        let p = Partition::open(
            &self.fs,
            dir,
            topic,
            partition,
            config,
            now_ms(),
            self.cache_bytes.clone(),
        )
        .await?;
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
            p.set_config(config);
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
        p.delete(&self.fs).await?;
        tracing::info!(topic, partition, "deleted partition");
        Ok(())
    }

    /// Validates `batch` (one v2 batch: length, magic, size, CRC32C, counts), then checks it
    /// against the partition's idempotent producer state, then assigns its offsets and appends
    /// it to the in-memory tail and the batch cache. Synchronous: acks=1 may be answered on
    /// return. Nothing is appended on error (a sequence gap or a fenced epoch is an error too).
    /// A retry of one of a producer's last five batches appends nothing and returns the
    /// original offsets with [`LogAppendInfo::duplicate`] set. The batch's bytes are kept as
    /// they are (no copy).
    pub fn append(
        &self,
        topic: &str,
        partition: i32,
        batch: Bytes,
    ) -> Result<LogAppendInfo, StorageError> {
        self.append_origin(topic, partition, batch, AppendOrigin::Client)
    }

    /// [`ShardStorage::append`] for a given origin (a client, or the broker's own writes:
    /// see [`AppendOrigin`]).
    pub fn append_from(
        &self,
        topic: &str,
        partition: i32,
        batch: Bytes,
        origin: AppendOrigin,
    ) -> Result<LogAppendInfo, StorageError> {
        self.append_origin(topic, partition, batch, origin)
    }

    /// Appends a coordinator's own batch as [`ShardStorage::append`] does, but as Kafka's
    /// `AppendOrigin.COORDINATOR`: a transaction marker (a control batch built by
    /// [`crate::storage::build_control_batch`]: its producer's ongoing transaction on the
    /// partition is closed, and an ABORT is indexed for read_committed fetches) or a
    /// transactional offset commit. Only the producer epoch is checked (an older one is
    /// INVALID_PRODUCER_EPOCH), not sequence numbers.
    pub fn append_coordinator(
        &self,
        topic: &str,
        partition: i32,
        batch: Bytes,
    ) -> Result<LogAppendInfo, StorageError> {
        self.append_origin(topic, partition, batch, AppendOrigin::Coordinator)
    }

    fn append_origin(
        &self,
        topic: &str,
        partition: i32,
        batch: Bytes,
        origin: AppendOrigin,
    ) -> Result<LogAppendInfo, StorageError> {
        if self.shutting_down.get() {
            return Err(StorageError::ShuttingDown);
        }
        let p = self.partition(topic, partition)?;
        let info = match p.append(batch, now_ms(), origin)? {
            AppendOutcome::Duplicate(info) => return Ok(info),
            AppendOutcome::Appended(info) => info,
        };
        self.cache_fifo
            .borrow_mut()
            .push_back((Rc::downgrade(&p), info.first_offset));
        self.evict();
        self.flusher_wake.notify();
        Ok(info)
    }

    /// Drops the oldest cached batches that are already written while over the cache cap.
    /// Unwritten batches stop the eviction (they must stay until the flusher wrote them).
    fn evict(&self) {
        let mut fifo = self.cache_fifo.borrow_mut();
        while self.cache_bytes.get() > self.options.batch_cache_bytes_max {
            let Some((weak, base)) = fifo.front().cloned() else {
                break;
            };
            let Some(p) = weak.upgrade() else {
                fifo.pop_front();
                continue;
            };
            match p.evict_if_written(base) {
                Eviction::Gone | Eviction::Evicted => {
                    fifo.pop_front();
                }
                Eviction::Unwritten | Eviction::Busy => break,
            }
        }
    }

    /// Bytes currently held by the batch cache (may exceed the cap while data is unwritten).
    pub fn cache_bytes(&self) -> usize {
        self.cache_bytes.get()
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
            let failed = self
                .all_partitions()
                .iter()
                .find_map(|p| p.pending_flush_error());
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
            .map(|p| p.unwritten_bytes())
            .sum()
    }

    /// The partition's offsets and the bytes its segment files hold (see
    /// [`PartitionStats::disk_usage_bytes`]), from in-memory state: no I/O, O(segments).
    /// [`StorageError::UnknownPartition`] if this shard has not opened it (or deleted it).
    pub fn stats(&self, topic: &str, partition: i32) -> Result<PartitionStats, StorageError> {
        Ok(self.partition(topic, partition)?.stats())
    }

    /// Calls `visit(topic, partition, stats)` once for every partition open on this shard, in
    /// no particular order; the same values as [`ShardStorage::stats`]. No I/O and no
    /// allocation; `visit` must not open or delete partitions (the map is borrowed).
    pub fn partition_stats(&self, mut visit: impl FnMut(&str, i32, PartitionStats)) {
        for (topic, parts) in self.partitions.borrow().iter() {
            for (&partition, p) in parts {
                if !p.is_deleted() {
                    visit(topic, partition, p.stats());
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
        self.partition(topic, partition)?
            .wait_durable(offset, &self.flusher_wake)
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
        self.read_limited(
            topic,
            partition,
            fetch_offset,
            max_bytes,
            true,
            true,
            false,
            false,
        )
        .await
    }

    /// As [`ShardStorage::read`], but with `min_one` false the batches stay within `max_bytes`
    /// even when the first one does not fit (then none is returned, and with `max_bytes == 0`
    /// nothing is read at all: only the range is checked); with `disk` false only the batch
    /// cache is read, and data that is on disk only gives no batches and `needs_disk`.
    /// `allocated` in the result counts the disk read buffers the batches hold.
    /// With `read_committed` the read stops at the last stable offset (no batch at or past it
    /// is returned) and the result lists the aborted transactions overlapping the batches;
    /// the batches themselves are the log's bytes as they are (zero-copy). A consumer reads
    /// below the high watermark; a follower (`to_log_end`) up to the log end.
    #[allow(clippy::too_many_arguments)]
    pub async fn read_limited(
        &self,
        topic: &str,
        partition: i32,
        fetch_offset: i64,
        max_bytes: usize,
        min_one: bool,
        disk: bool,
        read_committed: bool,
        to_log_end: bool,
    ) -> Result<FetchDataInfo, StorageError> {
        let p = self.partition(topic, partition)?;
        let (log_start_offset, high_watermark, log_end) = p.check_range(fetch_offset)?;
        let last_stable_offset = p.last_stable_offset();
        let limit = if to_log_end {
            log_end
        } else if read_committed {
            last_stable_offset
        } else {
            high_watermark
        };
        let mut out = FetchDataInfo {
            batches: Vec::new(),
            records: 0,
            high_watermark,
            last_stable_offset,
            aborted: Vec::new(),
            log_start_offset,
            allocated: 0,
            needs_disk: false,
        };
        if fetch_offset >= limit || (max_bytes == 0 && !min_one) {
            return Ok(out);
        }
        let Some(mut read) = p.read(fetch_offset, max_bytes, min_one, disk).await? else {
            out.needs_disk = true;
            return Ok(out);
        };
        if read_committed {
            // Transactions start at batch boundaries, so the LSO is one: whole batches below it.
            read.batches.retain(|b| b.header.base_offset < limit);
            if let Some(last) = read.batches.last() {
                out.aborted = p.aborted_between(fetch_offset, last.header.last_offset() + 1);
            }
        }
        out.records = count_records(read.batches.iter().map(|b| &b.header));
        out.batches.reserve(read.batches.len() * 2);
        for b in read.batches {
            out.batches.extend(b.parts.into_iter().flatten());
        }
        out.allocated = read.allocated;
        Ok(out)
    }

    /// The last stable offset of a partition: the first offset of its oldest ongoing
    /// transaction, else the high watermark.
    pub fn last_stable_offset(&self, topic: &str, partition: i32) -> Result<i64, StorageError> {
        Ok(self.partition(topic, partition)?.last_stable_offset())
    }

    /// Every producer with state on a partition (DescribeProducers).
    pub fn describe_producers(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Vec<ProducerDescription>, StorageError> {
        Ok(self.partition(topic, partition)?.describe_producers())
    }

    /// OffsetForLeaderEpoch on a partition: `(epoch, end offset)` for the requested leader
    /// epoch (Kafka's rules: the latest epoch ends at the log end, an older one where the next
    /// newer epoch starts; `(-1, -1)` when unknown).
    pub fn end_offset_for_epoch(
        &self,
        topic: &str,
        partition: i32,
        epoch: i32,
    ) -> Result<(i32, i64), StorageError> {
        self.partition(topic, partition)?
            .end_offset_for_epoch(epoch)
    }

    /// Appends one batch fetched from the partition's leader as it is (offsets, leader epoch
    /// and producer ids kept, CRC checked); it must start at this log's end. The producer
    /// state and the leader-epoch cache learn from it. Durability: [`ShardStorage::wait_durable`].
    pub fn append_replica(
        &self,
        topic: &str,
        partition: i32,
        batch: Bytes,
    ) -> Result<LogAppendInfo, StorageError> {
        self.partition(topic, partition)?
            .append_replica(batch, now_ms())
    }

    /// `(latest leader epoch or -1, log end offset)`: what a follower sends as
    /// `last_fetched_epoch` and `fetch_offset`.
    pub fn last_epoch_and_end(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<(i32, i64), StorageError> {
        Ok(self.partition(topic, partition)?.last_epoch_and_end())
    }

    /// Truncates the partition's log at the batch holding `offset` (a follower whose log
    /// diverges from its leader's), durably; returns the new log end. Below the log start:
    /// [`StorageError::OffsetOutOfRange`]; at or past the end: no change.
    pub async fn truncate_to(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<i64, StorageError> {
        self.partition(topic, partition)?
            .truncate_to(&self.fs, &self.options, offset)
            .await
    }

    /// Sets the leader epoch one partition stamps on its next appended batches (ignored when
    /// older than its current one, or when the partition is not open here).
    pub fn set_leader_epoch(&self, topic: &str, partition: i32, epoch: i32) {
        if let Ok(p) = self.partition(topic, partition) {
            p.set_leader_epoch(epoch);
        }
    }

    /// Sets the leader epoch each open partition stamps on its next appended batches:
    /// `epoch_of(topic, partition)`, where it is `Some` and newer than the partition's
    /// (epochs never go back). Synchronous, so no append interleaves.
    pub fn set_leader_epochs(&self, mut epoch_of: impl FnMut(&str, i32) -> Option<i32>) {
        for (topic, parts) in self.partitions.borrow().iter() {
            for (&partition, p) in parts {
                if let Some(e) = epoch_of(topic, partition) {
                    p.set_leader_epoch(e);
                }
            }
        }
    }

    /// `(log start offset, log end offset)`; the log end is the next offset to assign (the
    /// high watermark is [`ShardStorage::high_watermark`]).
    pub fn offsets(&self, topic: &str, partition: i32) -> Result<(i64, i64), StorageError> {
        Ok(self.partition(topic, partition)?.offsets())
    }

    /// DeleteRecords: moves the partition's log start offset up to `offset` (-1 = the high
    /// watermark) durably (it survives a restart and a crash), then deletes the whole
    /// segments below it; reads, ListOffsets earliest and Fetch follow it from the return.
    /// Returns the log start offset after the call (Kafka's low watermark); an offset at or
    /// below the current start changes nothing. Errors: above the high watermark or negative
    /// (not -1) → [`StorageError::OffsetOutOfRange`]; a topic without `delete` in its
    /// `cleanup.policy` → [`StorageError::PolicyViolation`]; not open here →
    /// [`StorageError::UnknownPartition`].
    pub async fn delete_records(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<i64, StorageError> {
        if self.shutting_down.get() {
            return Err(StorageError::ShuttingDown);
        }
        self.partition(topic, partition)?
            .delete_records(&self.fs, offset)
            .await
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
        match timestamp {
            -2 => Ok(Some((p.offsets().0, -1))),
            -1 => Ok(Some((p.high_watermark(), -1))),
            // A batch may straddle the log start (DeleteRecords): never answer below it.
            _ => Ok(p
                .offset_for_timestamp(timestamp)
                .await?
                .map(|(offset, ts)| (offset.max(p.offsets().0), ts))),
        }
    }

    /// Resolves when the high watermark (the log end with `to_log_end`: a follower's fetch)
    /// is `> after_offset` (or the partition is gone). Cancel by dropping the future.
    pub async fn appended(&self, topic: &str, partition: i32, after_offset: i64, to_log_end: bool) {
        if let Ok(p) = self.partition(topic, partition) {
            p.wait_appended(after_offset, to_log_end).await;
        }
    }

    /// Resolves once the partition's high watermark is past `offset`: on a replicated
    /// partition, `offset` is fsynced here and on every ISR member (acks=all); on one
    /// replica, once it is appended (call [`ShardStorage::wait_durable`] first). Fails with
    /// [`StorageError::Truncated`] when a truncation removed the offset.
    pub async fn wait_high_watermark(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<(), StorageError> {
        self.partition(topic, partition)?
            .wait_high_watermark(offset)
            .await
    }

    /// The partition's high watermark: the log end with one replica; with several, what
    /// every ISR member has fsynced (see [`ShardStorage::set_replica_floor`]).
    pub fn high_watermark(&self, topic: &str, partition: i32) -> Result<i64, StorageError> {
        Ok(self.partition(topic, partition)?.high_watermark())
    }

    /// Makes the partition replicated (`Some`) or not (`None`: its high watermark is its log
    /// end). On a leader `floor` is the smallest fetch offset of the other ISR members
    /// (`i64::MAX` when it is alone in the ISR); on a follower the leader's high watermark
    /// (`i64::MIN` keeps the high watermark where it is). The high watermark is then
    /// `min(durable offset here, floor)`, never moving back. A floor past the durable offset
    /// asks the flusher for a sync, so the high watermark follows promptly.
    pub fn set_replica_floor(&self, topic: &str, partition: i32, floor: Option<i64>) {
        if let Ok(p) = self.partition(topic, partition) {
            if p.set_replica_floor(floor).is_some() {
                self.flusher_wake.notify();
            }
        }
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

    /// Test hook: the partition's cleaner checkpoint (first offset never cleaned).
    #[cfg(test)]
    pub(crate) fn cleaner_checkpoint_for_test(&self, topic: &str, partition: i32) -> Option<i64> {
        self.partition(topic, partition)
            .ok()
            .and_then(|p| p.cleaner_checkpoint())
    }

    /// Test hook: the partition's durable (fdatasynced) offset.
    #[cfg(test)]
    pub(crate) fn durable_offset_for_test(&self, topic: &str, partition: i32) -> i64 {
        self.partition(topic, partition)
            .map(|p| p.durable_offset())
            .unwrap_or(-1)
    }

    /// One round: every partition with work flushes in its own task, so their writes and
    /// fdatasyncs are in flight together (one commit round per shard, not one per partition).
    async fn flush_round(&self, force_sync: bool) -> Result<(), StorageError> {
        let now = now_ms();
        let mut tasks = Vec::new();
        for p in self.all_partitions() {
            if !p.needs_flush(force_sync, now) {
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
            if p.needs_flush(false, now) {
                return Ok(());
            }
            if let Some(d) = p.sync_deadline() {
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
        glommio::spawn_local(retention_loop(weak.clone())).detach();
        if self.options.cleaner_enable {
            let shares = glommio::Shares::Static(self.options.cleaner_shares.max(1));
            let queue = glommio::executor().create_task_queue(
                shares,
                glommio::Latency::NotImportant,
                "log-cleaner",
            );
            match glommio::spawn_local_into(cleaner_loop(weak), queue) {
                Ok(t) => {
                    t.detach();
                }
                Err(e) => tracing::error!(error = %e, "cannot start the log cleaner"),
            }
        }
    }

    /// One log cleaner pass over every compacted partition of this shard whose pass is due
    /// (the background cleaner calls this every `log.cleaner.backoff.ms`); returns what each
    /// cleaned partition's pass did. A failing partition is logged and skipped (its log stays
    /// as it was); the first error is returned after the others ran.
    pub async fn clean_logs(&self) -> Result<Vec<(String, i32, CleanerStats)>, StorageError> {
        let now = now_ms();
        let mut out = Vec::new();
        let mut first_err = None;
        for p in self.all_partitions() {
            if self.shutting_down.get() {
                break;
            }
            match p
                .clean(&self.fs, now, self.options.cleaner_dedupe_buffer_bytes)
                .await
            {
                Ok(Some(stats)) => out.push((p.topic().to_owned(), p.index(), stats)),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(topic = %p.topic(), partition = p.index(), error = %e, "log cleaner pass failed; the log is left as it was");
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// Runs retention on every partition now (the background task calls this periodically).
    pub async fn enforce_retention(&self) -> Result<(), StorageError> {
        let now = now_ms();
        let mut first_err = None;
        for p in self.all_partitions() {
            if let Err(e) = p.apply_retention(&self.fs, now).await {
                tracing::warn!(error = %e, "retention failed");
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Re-reads every open partition's allocated blocks
    /// ([`PartitionStats::disk_allocated_bytes`]), yielding between partitions so that a shard
    /// with thousands of them does not hold up its requests. Failures are logged; the old value
    /// stays.
    pub async fn sample_disk_allocated(&self) {
        for p in self.all_partitions() {
            if let Err(e) = p.sample_disk_allocated(&self.fs) {
                tracing::debug!(topic = %p.topic(), partition = p.index(), error = %e, "cannot read allocated blocks");
            }
            glommio::yield_if_needed().await;
        }
    }

    /// Snapshots the idempotent producer state of every partition that has some, beside its
    /// segments (through the file seam, off the shard on the real disk). A failed write is
    /// logged and leaves the previous snapshot; the next open then scans more of the log.
    pub async fn snapshot_producers(&self) {
        for p in self.all_partitions() {
            if let Err(e) = p.snapshot_producers(&self.fs).await {
                tracing::warn!(topic = %p.topic(), partition = p.index(), error = %e, "cannot write producer state snapshot");
            }
        }
    }

    /// Stops accepting appends, flushes and syncs everything, writes every active segment's
    /// indexes, the producer state snapshots, the recovery points and the clean-shutdown
    /// markers. Idempotent.
    pub async fn shutdown(&self) -> Result<(), StorageError> {
        if self.shutting_down.replace(true) {
            return Ok(());
        }
        self.flusher_wake.close();
        let mut first_err = None;
        // Partitions close independently: several at once, so that their fsyncs (on the
        // blocking pool and in the ring) overlap instead of queueing one partition at a time.
        let mut parts = self.all_partitions().into_iter().peekable();
        while parts.peek().is_some() {
            let wave: Vec<_> = parts
                .by_ref()
                .take(PARTITION_CLOSES_IN_FLIGHT_MAX)
                .map(|p| {
                    let (fs, options) = (self.fs.clone(), self.options.clone());
                    glommio::spawn_local(async move {
                        let res = match p.flush(&fs, &options, true).await {
                            Ok(()) => p.close_clean(&fs).await,
                            Err(e) => Err(e),
                        };
                        (p, res)
                    })
                })
                .collect();
            for task in wave {
                let (p, res) = task.await;
                if let Err(e) = res {
                    tracing::error!(topic = %p.topic(), partition = p.index(), error = %e, "unclean close");
                    first_err.get_or_insert(e);
                }
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

async fn cleaner_loop(weak: Weak<ShardStorage>) {
    loop {
        let interval = {
            let Some(s) = weak.upgrade() else { return };
            if s.shutting_down.get() {
                return;
            }
            s.options.cleaner_backoff_ms.max(1)
        };
        glommio::timer::sleep(Duration::from_millis(interval)).await;
        let Some(s) = weak.upgrade() else { return };
        if s.shutting_down.get() {
            return;
        }
        let _ = s.clean_logs().await;
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
        s.sample_disk_allocated().await;
    }
}
