//! One partition's log, split by concern: `append` (validate, idempotence, offsets, roll),
//! `flush` (write + fdatasync, finishing rolled segments, clean close), `read` (cache or disk,
//! ListOffsets by time), `recover` (open: scan, truncate, load the producer state),
//! `retention` (delete old segments, delete the partition), `start` (DeleteRecords: the log
//! start offset), `clean` (compaction), `checkpoint` (Kafka's one-entry offset checkpoint
//! files: recovery point, log start, cleaner position), `epochs` (the leader-epoch cache and
//! its checkpoint) and `cache` (the batch cache with its own byte count).
//!
//! Only the owning shard touches a [`Partition`]. Its state is private to this module: the
//! shard's storage calls methods that keep the invariants below. `state` is never borrowed
//! across an `.await`; every file-mutating operation (flush, finish, retention, delete,
//! shutdown) holds `io_lock`, so they never interleave with each other. Appends and reads do
//! not take it.
//!
//! Invariants: `log_start_offset <= durable_offset <= written_offset <= next_offset`
//! (durable may trail the start after retention); `segments` is never empty and its last
//! entry is the active segment; every batch in `[written_offset, next_offset)` is in the
//! batch cache.

mod append;
mod cache;
mod checkpoint;
mod clean;
mod epochs;
mod flush;
mod read;
mod recover;
mod replica;
mod retention;
mod start;

#[cfg(test)]
pub(crate) use flush::PREALLOCATE_MIN_BYTES;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::task::Poll;

use glommio::sync::Semaphore;

use crate::io::FileSystem;

use super::producers::ProducerTable;
use super::segment::LogSegment;
use super::wait::{Notify, WaitList};
use super::{LogConfig, PartitionStats, StorageError};

pub(crate) use append::AppendOutcome;
pub(crate) use cache::{CacheBytes, Eviction};
pub use clean::CleanerStats;

use cache::BatchCache;
use epochs::LeaderEpochCache;

/// Name of the clean-shutdown marker inside a partition directory.
pub(crate) const CLEAN_SHUTDOWN_FILE: &str = ".clean_shutdown";
/// Name of the recovery-point checkpoint inside a partition directory (Kafka's format).
pub(crate) const RECOVERY_POINT_FILE: &str = "recovery-point-offset-checkpoint";

/// Mutable state of one partition log.
struct LogState {
    dir: PathBuf,
    config: LogConfig,
    /// By base offset; the last one is the active segment. Never empty.
    segments: BTreeMap<i64, LogSegment>,
    log_start_offset: i64,
    /// High watermark: next offset to assign.
    next_offset: i64,
    /// Every offset below this is written to its file.
    written_offset: i64,
    /// Every offset below this is fdatasynced.
    durable_offset: i64,
    /// The highest offset a `wait_durable` caller needs fdatasynced (-1: none). With
    /// `flush.messages=1` only such a waiter (an acks=all produce, an offset commit) or
    /// `flush.ms` makes the flusher sync; acks=0/1 data alone is written at once and synced
    /// within `flush.ms`.
    sync_wanted: i64,
    /// A contiguous suffix of the log, by base offset. Holds at least `[written_offset, next)`.
    cache: BatchCache,
    /// Idempotent producers of this partition, as of `next_offset`.
    producers: ProducerTable,
    messages_since_sync: u64,
    oldest_unsynced_ms: Option<i64>,
    /// Last flush failure (kind, message); bumped epoch wakes waiters with an error.
    flush_error: Option<(io::ErrorKind, String)>,
    flush_error_epoch: u64,
    deleted: bool,
    /// Blocks allocated to the partition's directory and files (`du`'s figure), as last
    /// sampled by [`Partition::sample_disk_allocated`].
    disk_allocated_bytes: u64,
    /// The log cleaner's progress (compacted topics).
    cleaner: CleanerState,
    /// The leader epoch stamped on appended batches (`partition_leader_epoch`): the
    /// partition's epoch in this broker's image (0 on one node). Never decreases.
    leader_epoch: i32,
    /// Where each leader epoch starts in this log.
    epochs: LeaderEpochCache,
    /// Bumped with every change of `epochs`; `epochs_written` is the value last checkpointed.
    epochs_version: u64,
    epochs_written: u64,
    /// A replicated partition's bound on its high watermark from the other replicas (on a
    /// leader, the smallest fetch offset of the other ISR members; on a follower, the
    /// leader's high watermark); `None`: one replica, the high watermark is the log end.
    replica_floor: Option<i64>,
    /// A replicated partition's high watermark as of the last change of `replica_floor`
    /// (see [`LogState::high_watermark`]); the log start until the replicas say more.
    high_watermark: i64,
}

/// What the log cleaner knows of one log between passes.
#[derive(Clone, Copy, Debug, Default)]
struct CleanerState {
    /// The first dirty (never cleaned) offset, as in `cleaner-offset-checkpoint`; `None`:
    /// never cleaned (then the log has no offset gaps).
    checkpoint: Option<i64>,
    /// When the earliest tombstone a pass kept may go (ms since epoch).
    tombstones_due_ms: Option<i64>,
}

/// One partition: state plus its wait lists and I/O lock.
pub(crate) struct Partition {
    topic: String,
    partition: i32,
    state: RefCell<LogState>,
    io_lock: Semaphore,
    /// Woken when the high watermark moves (fetch long-poll).
    appended: WaitList,
    /// Woken when written/durable offsets move or a flush fails.
    durable: WaitList,
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
    fn sync_on_ack(&self) -> bool {
        self.config.flush_messages <= 1
    }

    /// Whether the flush policy wants an fdatasync now.
    fn sync_due(&self, now: i64) -> bool {
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
    fn sync_deadline(&self) -> Option<i64> {
        if self.durable_offset >= self.written_offset || self.config.flush_ms == u64::MAX {
            return None;
        }
        self.oldest_unsynced_ms
            .map(|t| t.saturating_add(self.config.flush_ms.min(i64::MAX as u64) as i64))
    }

    /// Whether the flusher has writing (or segment finishing) to do.
    fn needs_write(&self) -> bool {
        self.written_offset < self.next_offset
            || self.segments.values().any(|s| s.rolled && !s.finished)
    }

    /// The offset a replica of this log has fsynced up to (written only, when
    /// `flush.messages` > 1 defers syncs by policy): what acks=all waits for here.
    fn reached(&self) -> i64 {
        if self.sync_on_ack() {
            self.durable_offset
        } else {
            self.written_offset
        }
    }

    /// The high watermark: the log end for one replica; for a replicated partition
    /// `max(stored, min(reached here, replica floor))`, never past the log end. Between
    /// changes of the floor both terms only grow (the floor is stored first), so on a leader
    /// it never moves back; only a follower's truncation lowers it.
    fn high_watermark(&self) -> i64 {
        match self.replica_floor {
            None => self.next_offset,
            Some(floor) => self
                .high_watermark
                .max(self.reached().min(floor))
                .min(self.next_offset),
        }
    }

    fn stats(&self) -> PartitionStats {
        PartitionStats {
            log_start_offset: self.log_start_offset,
            high_watermark: self.high_watermark(),
            disk_usage_bytes: self.disk_usage_bytes(),
            disk_allocated_bytes: self.disk_allocated_bytes,
        }
    }

    /// Bytes of record batches written to this log's segment (`.log`) files: the sum of the
    /// segments' written lengths, which is each file's length minus the space reserved ahead
    /// of the data (preallocation, trimmed when a segment is finished). Batches still waiting
    /// for the group commit and the `.index`/`.timeindex` files are not counted. Segments
    /// deleted by retention leave the sum when they are removed from `segments`. O(segments),
    /// no I/O.
    fn disk_usage_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.written_size).sum()
    }

    fn out_of_range(&self, offset: i64) -> StorageError {
        StorageError::OffsetOutOfRange {
            offset,
            log_start_offset: self.log_start_offset,
            high_watermark: self.next_offset,
        }
    }
}

impl Partition {
    /// The topic this log belongs to.
    pub(crate) fn topic(&self) -> &str {
        &self.topic
    }

    /// The partition index of this log.
    pub(crate) fn index(&self) -> i32 {
        self.partition
    }

    /// Replaces the config (takes effect for the next append, flush and retention run).
    pub(crate) fn set_config(&self, config: LogConfig) {
        self.state.borrow_mut().config = config;
    }

    /// Whether the partition was deleted (its handle may outlive it in tasks).
    pub(crate) fn is_deleted(&self) -> bool {
        self.state.borrow().deleted
    }

    /// The last stable offset (see `producers`).
    pub(crate) fn last_stable_offset(&self) -> i64 {
        let st = self.state.borrow();
        let lso = st.producers.last_stable_offset(st.high_watermark());
        debug_assert!(st.log_start_offset <= st.next_offset);
        lso
    }

    /// The aborted transactions overlapping `[from, to)`: `(producer id, first offset)`.
    pub(crate) fn aborted_between(&self, from: i64, to: i64) -> Vec<(i64, i64)> {
        self.state.borrow().producers.aborted_between(from, to)
    }

    /// Every producer with state here (DescribeProducers).
    pub(crate) fn describe_producers(&self) -> Vec<super::ProducerDescription> {
        self.state.borrow().producers.describe()
    }

    /// `(log start offset, log end offset)`.
    pub(crate) fn offsets(&self) -> (i64, i64) {
        let st = self.state.borrow();
        (st.log_start_offset, st.next_offset)
    }

    /// The high watermark (see [`LogState::high_watermark`]).
    pub(crate) fn high_watermark(&self) -> i64 {
        self.state.borrow().high_watermark()
    }

    /// Sets the replica floor (`None`: one replica). The high watermark reached with the old
    /// floor is kept first, so it does not move back. Returns the offset the flusher should
    /// sync up to for the high watermark to move (the floor is past the durable offset).
    pub(crate) fn set_replica_floor(&self, floor: Option<i64>) -> Option<i64> {
        let sync_to = {
            let mut st = self.state.borrow_mut();
            if st.replica_floor.is_some() {
                st.high_watermark = st.high_watermark();
            }
            st.replica_floor = floor;
            let want = floor.map(|f| f.min(st.next_offset).saturating_sub(1));
            match want {
                Some(w) if w >= st.durable_offset && st.sync_on_ack() => {
                    st.sync_wanted = st.sync_wanted.max(w);
                    Some(w)
                }
                _ => None,
            }
        };
        self.appended.wake_all();
        sync_to
    }

    /// Offsets and disk usage for metrics.
    pub(crate) fn stats(&self) -> PartitionStats {
        self.state.borrow().stats()
    }

    /// Re-reads the blocks allocated to the partition's directory and files (one `statx` per
    /// file, on this thread) for [`PartitionStats::disk_allocated_bytes`]. A deleted partition
    /// keeps its last value.
    pub(crate) fn sample_disk_allocated(&self, fs: &FileSystem) -> io::Result<()> {
        let dir = {
            let st = self.state.borrow();
            if st.deleted {
                return Ok(());
            }
            st.dir.clone()
        };
        let bytes = fs.allocated_bytes(&dir)?;
        self.state.borrow_mut().disk_allocated_bytes = bytes;
        Ok(())
    }

    /// Every offset below this is fdatasynced.
    #[cfg(test)]
    pub(crate) fn durable_offset(&self) -> i64 {
        self.state.borrow().durable_offset
    }

    /// `(log start, high watermark, log end)` if `offset` is within `[log start, log end]`.
    pub(crate) fn check_range(&self, offset: i64) -> Result<(i64, i64, i64), StorageError> {
        let st = self.state.borrow();
        if st.deleted {
            return Err(StorageError::UnknownPartition);
        }
        if offset < st.log_start_offset || offset > st.next_offset {
            return Err(st.out_of_range(offset));
        }
        Ok((st.log_start_offset, st.high_watermark(), st.next_offset))
    }

    /// Bytes appended but not yet written: the unwritten tails of the newest segments.
    pub(crate) fn unwritten_bytes(&self) -> u64 {
        self.state
            .borrow()
            .segments
            .values()
            .rev()
            .take_while(|s| s.written_size < s.size)
            .map(|s| s.size - s.written_size)
            .sum()
    }

    /// The last flush failure, if data is still waiting to be written.
    pub(crate) fn pending_flush_error(&self) -> Option<(io::ErrorKind, String)> {
        let st = self.state.borrow();
        (st.written_offset < st.next_offset)
            .then(|| st.flush_error.clone())
            .flatten()
    }

    /// Whether one flusher round has work here: writing, finishing, or a sync the policy (or
    /// `force_sync`, for written but unsynced data) asks for.
    pub(crate) fn needs_flush(&self, force_sync: bool, now: i64) -> bool {
        let st = self.state.borrow();
        st.needs_write()
            || (force_sync && st.durable_offset < st.written_offset)
            || st.sync_due(now)
    }

    /// When the time policy will want a sync, if data is waiting for one.
    pub(crate) fn sync_deadline(&self) -> Option<i64> {
        self.state.borrow().sync_deadline()
    }

    /// Drops the cached batch at `base` if it is already written (the cache's byte count
    /// follows). Never drops unwritten data.
    pub(crate) fn evict_if_written(&self, base: i64) -> Eviction {
        let Ok(mut st) = self.state.try_borrow_mut() else {
            return Eviction::Busy;
        };
        let written = st.written_offset;
        st.cache.evict_if_below(base, written)
    }

    /// Resolves when the high watermark (the log end with `to_log_end`, a follower's
    /// fetch) is `> after_offset` or the partition is deleted.
    pub(crate) async fn wait_appended(&self, after_offset: i64, to_log_end: bool) {
        std::future::poll_fn(|cx| {
            let st = self.state.borrow();
            let end = if to_log_end {
                st.next_offset
            } else {
                st.high_watermark()
            };
            if st.deleted || end > after_offset {
                return Poll::Ready(());
            }
            self.appended.register(cx.waker());
            if st.replica_floor.is_some() {
                // The high watermark also moves with this replica's fsyncs.
                self.durable.register(cx.waker());
            }
            Poll::Pending
        })
        .await
    }

    /// Resolves once the high watermark is past `offset` (acks=all on a replicated
    /// partition: fsynced here and on every ISR member). Fails when the offset was
    /// truncated away ([`StorageError::Truncated`]) or the partition is deleted.
    pub(crate) async fn wait_high_watermark(&self, offset: i64) -> Result<(), StorageError> {
        std::future::poll_fn(|cx| {
            let st = self.state.borrow();
            if st.deleted {
                return Poll::Ready(Err(StorageError::UnknownPartition));
            }
            if offset >= st.next_offset {
                return Poll::Ready(Err(StorageError::Truncated { offset }));
            }
            if st.high_watermark() > offset {
                return Poll::Ready(Ok(()));
            }
            self.appended.register(cx.waker());
            self.durable.register(cx.waker());
            Poll::Pending
        })
        .await
    }

    /// Resolves once `offset` is durable: fdatasynced when `flush.messages` is 1, written
    /// otherwise. Asks the flusher (`wake`) for a sync; fails when a flush attempted while
    /// waiting fails, or the partition is deleted.
    pub(crate) async fn wait_durable(
        &self,
        offset: i64,
        wake: &Notify,
    ) -> Result<(), StorageError> {
        let epoch0 = {
            let mut st = self.state.borrow_mut();
            if offset >= st.next_offset {
                return Err(st.out_of_range(offset));
            }
            if st.sync_on_ack() {
                // Group commit: the next flush round syncs because someone waits for it.
                st.sync_wanted = st.sync_wanted.max(offset);
            }
            st.flush_error_epoch
        };
        std::future::poll_fn(|cx| {
            let st = self.state.borrow();
            if st.deleted {
                return Poll::Ready(Err(StorageError::UnknownPartition));
            }
            if offset >= st.next_offset {
                // A follower's truncation removed it: it was never acknowledged.
                return Poll::Ready(Err(StorageError::Truncated { offset }));
            }
            if st.reached() > offset {
                return Poll::Ready(Ok(()));
            }
            if st.flush_error_epoch != epoch0 {
                let (kind, msg) = st
                    .flush_error
                    .clone()
                    .unwrap_or((io::ErrorKind::Other, "flush failed".into()));
                return Poll::Ready(Err(StorageError::Io(io::Error::new(kind, msg))));
            }
            self.durable.register(cx.waker());
            wake.notify();
            Poll::Pending
        })
        .await
    }
}
