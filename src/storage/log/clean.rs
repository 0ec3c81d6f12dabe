//! Log compaction (`cleanup.policy` with `compact`): the cleaner keeps, for every key, the
//! latest record, at its original offset.
//!
//! What one pass does, per partition ([`Partition::clean`]):
//! 1. Picks the cleanable segments: finished, not the active one, wholly below the last
//!    stable offset (no open transaction), every record older than `min.compaction.lag.ms`
//!    (by the segment's largest timestamp). The part from the cleaner
//!    checkpoint (the first dirty offset) on is dirty; the pass runs when the dirty bytes are at
//!    least `min.cleanable.dirty.ratio` of the cleanable bytes, when the first dirty segment is
//!    older than `max.compaction.lag.ms`, or when kept tombstones have expired.
//! 2. Reads the dirty segments (CRC-checked) into a map key → latest offset, at most
//!    `dedupe_bytes_max` of keys (whole segments; at least one).
//! 3. Rewrites every cleanable segment up to the end of the mapped part: a record stays when it
//!    is its key's latest (or its key is not in the map: the clean part is already deduplicated);
//!    records without a key go (as Kafka's cleaner drops them); a latest-value tombstone goes
//!    once its segment's newest record is older than `delete.retention.ms` (Kafka counts that
//!    time from the first pass that cleaned the tombstone, KIP-534; here it is the records'
//!    own time, so a tombstone produced with an old timestamp may go at the first pass). A batch keeps its
//!    base offset and its last offset delta (offsets are preserved; a cleaned batch may have
//!    gaps, as Kafka's do); a batch that loses some records is rebuilt uncompressed, one that
//!    loses all is dropped (a producer's last batch stays, empty, as Kafka's cleaner keeps it); control batches (transaction markers) stay as they are; records of
//!    aborted transactions are neither mapped nor kept (as Kafka's cleaner).
//! 4. Swaps each rewritten segment in, crash-safely (below), and moves the checkpoint.
//!
//! Crash safety: the cleaned copy is written as `<base>.log.cleaned`, cut to size and
//! fdatasynced, its indexes as `<base>.index.cleaned` / `<base>.timeindex.cleaned` (synced),
//! then one directory sync makes the three names durable; all of it off the I/O lock, the
//! fsyncs off the shard. Under the partition's I/O lock there are only three renames (the
//! indexes, then the log, over the segment's files; atomic each, not synced) and the state
//! update; one directory sync after the lock (off the shard) makes them durable. A kill -9
//! before that sync may keep any mix of the renames: recovery, finding any
//! `<base>.*.cleaned` file, first deletes `<base>.index` and `<base>.timeindex` (they may
//! belong to the other version of the `.log`), then the `.cleaned` files, so the segment is
//! the old or the whole new `.log`, re-scanned without indexes; with no `.cleaned` file left
//! all three renames happened, and the indexes match. Before the first swap the checkpoint
//! file exists, and recovery of a log with that file accepts offset gaps (still requiring
//! increasing offsets).
//!
//! The cleaner never holds the I/O lock while reading or writing its copy or syncing: flushes,
//! retention and DeleteRecords go on; a segment they removed meanwhile is not swapped back.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;

use super::checkpoint::{read_offset_checkpoint, write_offset_checkpoint, Checkpoint};
use super::{lock_err, Partition};
use crate::io::{align_down, align_up, alloc_write_buffer, FileSystem, IoFile};
use crate::storage::batch::BatchHeader;
use crate::storage::producers::AbortedTxn;
use crate::storage::records::{batch_records, rebuild_batch, RecordRef};
use crate::storage::segment::{segment_path, BatchScanner, LogSegment, ScanItem};
use crate::storage::StorageError;

/// Name of the cleaner checkpoint (the first dirty offset) inside a partition directory,
/// in Kafka's checkpoint format. Its presence also tells recovery the log may have gaps.
pub(crate) const CLEANER_CHECKPOINT_FILE: &str = "cleaner-offset-checkpoint";
/// Suffix of a segment's cleaned copy and its indexes until they are swapped in
/// (`<base>.log.cleaned`, `<base>.index.cleaned`, `<base>.timeindex.cleaned`).
pub(crate) const CLEANED_SUFFIX: &str = ".cleaned";
/// Bytes per read of a segment being cleaned, and per write of its copy.
const CLEANER_IO_BYTES: usize = 1 << 20;
/// Most CPU time (µs) the cleaner works between yields of its task queue: glommio's own
/// preemption comes every 100 ms by default, far longer than a produce may wait.
const CLEANER_SLICE_US: u128 = 500;

/// Yields the cleaner's task queue once it has worked [`CLEANER_SLICE_US`] since the last
/// yield, so the shard's produce and fetch run in between.
struct Slice(std::time::Instant);

impl Slice {
    fn new() -> Slice {
        Slice(std::time::Instant::now())
    }

    async fn yield_if_spent(&mut self) {
        if self.0.elapsed().as_micros() >= CLEANER_SLICE_US {
            glommio::executor().yield_task_queue_now().await;
            self.0 = std::time::Instant::now();
        }
    }
}

/// Bytes a key costs in the dedupe map beside its own length (map entry, offset, `Bytes`).
const MAP_ENTRY_OVERHEAD_BYTES: usize = 64;

/// What one cleaning pass of one partition did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CleanerStats {
    /// Segments rewritten and swapped in.
    pub segments: usize,
    /// Bytes of log read (dirty map + rewrite).
    pub bytes_read: u64,
    /// Of `bytes_read`, the bytes read to build the dirty map (the rest is the rewrite's,
    /// the figure Kafka's cleaner logs as "MB of log processed").
    pub map_bytes_read: u64,
    /// Bytes of the segments before cleaning.
    pub bytes_before: u64,
    /// Bytes of the same segments after.
    pub bytes_after: u64,
    /// Records removed (older values, expired tombstones, records without key).
    pub records_removed: u64,
}

/// A segment as the pass saw it.
#[derive(Clone)]
struct SegmentRef {
    base: i64,
    /// The next segment's base offset: this segment's offsets are `[base, end)`.
    end: i64,
    file: Rc<IoFile>,
    size: u64,
    /// The newest record's timestamp (the creation time when unknown): the age
    /// `min.compaction.lag.ms`, `max.compaction.lag.ms` and `delete.retention.ms` compare.
    retention_ms: i64,
    created_ms: i64,
}

/// The pass the partition's state asks for.
struct Plan {
    dir: PathBuf,
    segments: Vec<SegmentRef>,
    first_dirty: i64,
    index_interval_bytes: u32,
    delete_retention_ms: i64,
    /// Aborted transactions overlapping the cleanable segments: their records are neither
    /// mapped nor kept (as Kafka's cleaner).
    aborted: Vec<AbortedTxn>,
    /// Each producer's last batch (producer id → first offset): kept, empty if need be, so
    /// a restart that rebuilds the producer state from the log still knows its sequence.
    last_batches: HashMap<i64, i64>,
}

impl Plan {
    /// Whether the transactional batch `h` belongs to an aborted transaction.
    fn aborted(&self, h: &BatchHeader) -> bool {
        h.is_transactional()
            && !h.is_control()
            && self.aborted.iter().any(|a| {
                a.producer_id == h.producer_id
                    && a.first_offset <= h.base_offset
                    && h.base_offset < a.last_offset
            })
    }
}

/// Writes the cleaner checkpoint (Kafka's one-entry checkpoint), durably.
async fn write_checkpoint(
    fs: &FileSystem,
    dir: &Path,
    topic: &str,
    partition: i32,
    offset: i64,
) -> io::Result<()> {
    write_offset_checkpoint(fs, dir, CLEANER_CHECKPOINT_FILE, topic, partition, offset).await
}

/// The cleaner checkpoint: `None` when the log was never cleaned, else the first dirty offset
/// (0 if the file does not parse: everything is dirty, gaps are still allowed).
pub(super) fn read_checkpoint(fs: &FileSystem, dir: &Path) -> io::Result<Option<i64>> {
    Ok(
        match read_offset_checkpoint(fs, dir, CLEANER_CHECKPOINT_FILE)? {
            Checkpoint::Missing => None,
            Checkpoint::Damaged => Some(0),
            Checkpoint::Offset(o) => Some(o.max(0)),
        },
    )
}

/// Deletes what a crash left of a swap (see the module docs): for every segment with a
/// `.cleaned` file, first its `.index` and `.timeindex` (a swap cut between its renames may
/// have left them beside the other version of the `.log`; the segment is then re-scanned at
/// open), then the `.cleaned` files. In this order a crash during it leaves them to the next
/// open.
pub(super) fn remove_cleaned_leftovers(fs: &FileSystem, dir: &Path) -> io::Result<()> {
    let leftovers: Vec<String> = fs
        .list_files(dir)?
        .into_iter()
        .filter(|n| n.ends_with(CLEANED_SUFFIX))
        .collect();
    let bases: std::collections::BTreeSet<i64> = leftovers
        .iter()
        .filter_map(|n| n.get(..20)?.parse().ok())
        .collect();
    for base in bases {
        tracing::info!(dir = %dir.display(), segment = base, "a log cleaner swap was cut short; the segment's indexes will be rebuilt");
        fs.remove_file(&segment_path(dir, base, "index"))?;
        fs.remove_file(&segment_path(dir, base, "timeindex"))?;
    }
    for name in leftovers {
        tracing::info!(dir = %dir.display(), file = %name, "deleting an unfinished cleaned segment copy");
        fs.remove_file(&dir.join(name))?;
    }
    Ok(())
}

/// `<base>.<ext>.cleaned`: the cleaned copy of one of a segment's files.
fn cleaned_path(dir: &Path, base: i64, ext: &str) -> PathBuf {
    dir.join(format!("{base:020}.{ext}{CLEANED_SUFFIX}"))
}

impl Partition {
    /// The cleaner checkpoint: the first offset no pass has cleaned (`None`: never cleaned).
    #[cfg(test)]
    pub(crate) fn cleaner_checkpoint(&self) -> Option<i64> {
        self.state.borrow().cleaner.checkpoint
    }

    /// One cleaning pass if the topic is compacted and the pass is due (see the module docs);
    /// `None` when nothing was due. `now` is the wall clock in ms.
    pub(crate) async fn clean(
        &self,
        fs: &FileSystem,
        now: i64,
        dedupe_bytes_max: usize,
    ) -> Result<Option<CleanerStats>, StorageError> {
        let Some(plan) = self.clean_plan(now) else {
            return Ok(None);
        };
        let started = std::time::Instant::now();
        let mut stats = CleanerStats::default();
        // 2. The dedupe map over the dirty segments, whole segments within the budget.
        let mut map: HashMap<Bytes, i64> = HashMap::new();
        let mut map_bytes = 0usize;
        let mut slice = Slice::new();
        let mut dirty_end = plan.first_dirty;
        for seg in plan.segments.iter().filter(|s| s.end > plan.first_dirty) {
            let mut seg_map: HashMap<Bytes, i64> = HashMap::new();
            let mut scanner = BatchScanner::new(&seg.file, 0, seg.size, CLEANER_IO_BYTES, true);
            loop {
                match scanner.next_batch().await? {
                    ScanItem::End => break,
                    ScanItem::Torn { position, reason } => {
                        return Err(self.corrupt(&plan.dir, seg.base, position, &reason))
                    }
                    ScanItem::Batch { header, bytes, .. } => {
                        stats.bytes_read += bytes.len() as u64;
                        stats.map_bytes_read += bytes.len() as u64;
                        // Batches parse from a buffer without awaiting: give the shard's
                        // produce and fetch their turn when this queue's slice is used.
                        slice.yield_if_spent().await;
                        if header.is_control() || plan.aborted(&header) {
                            continue;
                        }
                        let recs = batch_records(&bytes, &header)
                            .map_err(|r| self.corrupt(&plan.dir, seg.base, 0, r))?;
                        for r in recs {
                            if let Some(k) = r.key {
                                let offset = header.base_offset + r.offset_delta as i64;
                                seg_map.insert(Bytes::copy_from_slice(&k), offset);
                            }
                        }
                    }
                }
            }
            let added: usize = seg_map
                .keys()
                .filter(|k| !map.contains_key(*k))
                .map(|k| k.len() + MAP_ENTRY_OVERHEAD_BYTES)
                .sum();
            if dirty_end > plan.first_dirty && map_bytes + added > dedupe_bytes_max {
                break;
            }
            map_bytes += added;
            map.extend(seg_map);
            dirty_end = seg.end;
        }
        // 3 + 4. Rewrite and swap every cleanable segment below the mapped end.
        let mut tombstone_due: Option<i64> = None;
        for seg in plan.segments.iter().filter(|s| s.base < dirty_end) {
            let expired_tombstones =
                now.saturating_sub(seg.retention_ms) > plan.delete_retention_ms;
            let Some(rewritten) = self
                .rewrite_segment(fs, &plan, seg, &map, expired_tombstones, &mut stats)
                .await?
            else {
                continue;
            };
            if rewritten.kept_tombstones {
                let due = seg
                    .retention_ms
                    .saturating_add(plan.delete_retention_ms)
                    .saturating_add(1);
                tombstone_due = Some(tombstone_due.map_or(due, |d: i64| d.min(due)));
            }
            if self.swap_in(fs, &plan.dir, seg, rewritten.seg).await? {
                stats.segments += 1;
                stats.bytes_before += seg.size;
                stats.bytes_after += rewritten.size;
            }
        }
        let _permit = self.io_lock.acquire_permit(1).await.map_err(lock_err)?;
        if self.state.borrow().deleted {
            return Ok(Some(stats));
        }
        write_checkpoint(fs, &plan.dir, &self.topic, self.partition, dirty_end).await?;
        let mut st = self.state.borrow_mut();
        st.cleaner.checkpoint = Some(dirty_end);
        st.cleaner.tombstones_due_ms = tombstone_due;
        tracing::info!(
            topic = %self.topic, partition = self.partition, segments = stats.segments,
            bytes_before = stats.bytes_before, bytes_after = stats.bytes_after,
            records_removed = stats.records_removed, first_dirty_offset = dirty_end,
            bytes_read = stats.bytes_read, map_bytes_read = stats.map_bytes_read,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "log cleaner pass done"
        );
        Ok(Some(stats))
    }

    fn corrupt(&self, dir: &Path, base: i64, position: u64, reason: &str) -> StorageError {
        StorageError::CorruptLog {
            path: segment_path(dir, base, "log"),
            reason: format!("cleaner at position {position}: {reason}"),
        }
    }

    /// Step 1: the segments to look at and whether a pass is due.
    fn clean_plan(&self, now: i64) -> Option<Plan> {
        let st = self.state.borrow();
        if st.deleted || !st.config.cleanup_compact {
            return None;
        }
        let cfg = &st.config;
        let active_base = st.active().base_offset;
        // Never past an open transaction: its records may still be aborted.
        let last_stable = st.producers.last_stable_offset(st.next_offset);
        let lag_limit = now.saturating_sub(cfg.min_compaction_lag_ms);
        let bases: Vec<i64> = st.segments.keys().copied().collect();
        let mut segments = Vec::new();
        for pair in bases.windows(2) {
            let (base, end) = (pair[0], pair[1]);
            let seg = &st.segments[&base];
            if base == active_base
                || end > last_stable
                || !seg.finished
                || seg.retention_timestamp() > lag_limit
            {
                break;
            }
            let Some(file) = seg.file.clone() else { break };
            segments.push(SegmentRef {
                base,
                end,
                file,
                size: seg.written_size,
                retention_ms: seg.retention_timestamp(),
                created_ms: seg.created_ms,
            });
        }
        let first_dirty = st.cleaner.checkpoint.unwrap_or(0).max(st.log_start_offset);
        let (mut clean, mut dirty) = (0u64, 0u64);
        for s in &segments {
            if s.end <= first_dirty {
                clean += s.size;
            } else {
                dirty += s.size;
            }
        }
        let first_dirty_seg = segments.iter().find(|s| s.end > first_dirty);
        let by_ratio =
            dirty > 0 && dirty as f64 >= cfg.min_cleanable_dirty_ratio * (clean + dirty) as f64;
        let by_lag = first_dirty_seg
            .is_some_and(|s| now.saturating_sub(s.retention_ms) > cfg.max_compaction_lag_ms);
        let by_tombstones = st.cleaner.tombstones_due_ms.is_some_and(|t| now >= t);
        if segments.is_empty() || !(by_ratio || by_lag || by_tombstones) {
            return None;
        }
        let range_start = segments.first().map_or(0, |s| s.base);
        let range_end = segments.last().map_or(0, |s| s.end);
        Some(Plan {
            aborted: st.producers.aborted_txns_between(range_start, range_end),
            last_batches: st.producers.last_batch_offsets(),
            dir: st.dir.clone(),
            segments,
            first_dirty,
            index_interval_bytes: cfg.index_interval_bytes,
            delete_retention_ms: cfg.delete_retention_ms,
        })
    }

    /// Step 3 for one segment: writes its cleaned copy (synced); `None` when nothing would be
    /// removed (no copy is left).
    async fn rewrite_segment(
        &self,
        fs: &FileSystem,
        plan: &Plan,
        seg: &SegmentRef,
        map: &HashMap<Bytes, i64>,
        expired_tombstones: bool,
        stats: &mut CleanerStats,
    ) -> Result<Option<Rewritten>, StorageError> {
        let path = cleaned_path(&plan.dir, seg.base, "log");
        let mut out: Option<CopyWriter> = None;
        let mut new_seg = LogSegment::new(seg.base, seg.created_ms);
        let mut kept_tombstones = false;
        let mut removed_here = 0u64;
        let mut scanner = BatchScanner::new(&seg.file, 0, seg.size, CLEANER_IO_BYTES, true);
        let mut slice = Slice::new();
        // Batches before the first change are copied once the copy starts.
        let mut pending: Vec<(BatchHeader, Bytes)> = Vec::new();
        loop {
            let (header, bytes) = match scanner.next_batch().await? {
                ScanItem::End => break,
                ScanItem::Torn { position, reason } => {
                    if out.is_some() {
                        fs.remove_file(&path)?;
                    }
                    return Err(self.corrupt(&plan.dir, seg.base, position, &reason));
                }
                ScanItem::Batch { header, bytes, .. } => (header, bytes),
            };
            stats.bytes_read += bytes.len() as u64;
            // As in the map: the shard's produce and fetch get their turn between batches.
            slice.yield_if_spent().await;
            let kept = if header.is_control() {
                Kept::All
            } else if plan.aborted(&header) {
                removed_here += header.records_count.max(0) as u64;
                Kept::None
            } else {
                let recs = batch_records(&bytes, &header)
                    .map_err(|r| self.corrupt(&plan.dir, seg.base, 0, r))?;
                let total = recs.len();
                let keep: Vec<RecordRef> = recs
                    .into_iter()
                    .filter(|r| {
                        let Some(k) = &r.key else { return false };
                        let offset = header.base_offset + r.offset_delta as i64;
                        if map.get(k).is_some_and(|&latest| latest != offset) {
                            return false;
                        }
                        if r.tombstone {
                            if expired_tombstones {
                                return false;
                            }
                            kept_tombstones = true;
                        }
                        true
                    })
                    .collect();
                removed_here += (total - keep.len()) as u64;
                let producer_last = header.producer_id >= 0
                    && plan.last_batches.get(&header.producer_id) == Some(&header.base_offset);
                if keep.len() == total {
                    Kept::All
                } else if keep.is_empty() && !producer_last {
                    Kept::None
                } else {
                    Kept::Some(keep)
                }
            };
            let batch = match kept {
                Kept::All => (header, bytes),
                Kept::None => {
                    if out.is_none() {
                        out = Some(CopyWriter::create(fs, &path).await?);
                    }
                    continue;
                }
                Kept::Some(keep) => {
                    let (b, h) = rebuild_batch(&bytes, &header, &keep);
                    if out.is_none() {
                        out = Some(CopyWriter::create(fs, &path).await?);
                    }
                    (h, b)
                }
            };
            match out.as_mut() {
                None => pending.push(batch),
                Some(w) => {
                    for (h, b) in pending.drain(..) {
                        w.put(&mut new_seg, &h, &b, plan.index_interval_bytes)
                            .await?;
                    }
                    w.put(&mut new_seg, &batch.0, &batch.1, plan.index_interval_bytes)
                        .await?;
                }
            }
        }
        let Some(mut w) = out else {
            return Ok(None);
        };
        for (h, b) in pending.drain(..) {
            w.put(&mut new_seg, &h, &b, plan.index_interval_bytes)
                .await?;
        }
        let size = w.finish().await?;
        stats.records_removed += removed_here;
        new_seg.file = Some(Rc::new(w.file));
        Ok(Some(Rewritten {
            seg: new_seg,
            size,
            kept_tombstones,
        }))
    }

    /// Step 4 for one segment (see the module docs): the copy's indexes written beside it and
    /// the three names made durable, then, under the I/O lock, the renames over the segment's
    /// files and the new segment put in the state; the renames made durable after the lock.
    /// `false` (and the copies deleted) when the segment changed meanwhile (retention,
    /// DeleteRecords, the partition deleted).
    async fn swap_in(
        &self,
        fs: &FileSystem,
        dir: &Path,
        old: &SegmentRef,
        mut seg: LogSegment,
    ) -> Result<bool, StorageError> {
        let base = old.base;
        let copies = ["index", "timeindex", "log"].map(|ext| cleaned_path(dir, base, ext));
        let (deleted, marker_needed) = {
            let st = self.state.borrow();
            (st.deleted, st.cleaner.checkpoint.is_none())
        };
        if deleted {
            return Ok(false);
        }
        if marker_needed {
            // Recovery must accept this log's gaps from the first swap on.
            write_checkpoint(fs, dir, &self.topic, self.partition, 0).await?;
            let mut st = self.state.borrow_mut();
            st.cleaner.checkpoint.get_or_insert(0);
        }
        let sealed = seg.seal();
        sealed
            .write_index_copies(fs, &copies[0], &copies[1])
            .await?;
        // The copies' names durable before any rename: a crash then finds each file under
        // its old or its new name, never neither.
        fs.sync_dir_off_shard(dir).await?;
        let permit = self.io_lock.acquire_permit(1).await.map_err(lock_err)?;
        let still_there = {
            let st = self.state.borrow();
            !st.deleted
                && st.segments.get(&base).is_some_and(|s| {
                    s.finished
                        && s.written_size == old.size
                        && s.file.as_ref().is_some_and(|f| Rc::ptr_eq(f, &old.file))
                })
        };
        if !still_there {
            drop(seg);
            for copy in &copies {
                fs.remove_file(copy)?;
            }
            return Ok(false);
        }
        // The log last: a failure between the renames leaves the old segment in use, and
        // its `.log.cleaned` tells recovery to drop the indexes.
        for (copy, ext) in copies.iter().zip(["index", "timeindex", "log"]) {
            fs.rename_unsynced(copy, &segment_path(dir, base, ext))?;
        }
        // `seg.file` is the copy's handle: the renamed file.
        seg.allocated = seg.size;
        seg.written_size = seg.size;
        // The segment still covers [base, end): offsets after its last kept batch are a gap.
        seg.next_offset = old.end;
        seg.written_next_offset = old.end;
        seg.rolled = true;
        seg.finished = true;
        {
            let mut st = self.state.borrow_mut();
            st.segments.insert(base, seg);
            // Cached copies of the old batches would serve removed records.
            let written = st.written_offset;
            st.cache.drop_below(old.end.min(written));
        }
        drop(permit);
        fs.sync_dir_off_shard(dir).await?;
        Ok(true)
    }
}

/// What the rewrite decided for one batch.
enum Kept {
    All,
    None,
    Some(Vec<RecordRef>),
}

/// A segment's cleaned copy, synced, and its in-memory accounting.
struct Rewritten {
    seg: LogSegment,
    size: u64,
    kept_tombstones: bool,
}

/// Writes a cleaned copy sequentially with aligned writes (O_DIRECT), keeping the unaligned
/// tail in memory until the end.
struct CopyWriter {
    file: IoFile,
    /// Bytes not yet written, starting at file position `written`.
    buf: Vec<u8>,
    written: u64,
}

impl CopyWriter {
    async fn create(fs: &FileSystem, path: &Path) -> Result<CopyWriter, StorageError> {
        // A copy left by an earlier failed pass is stale.
        fs.remove_file(path)?;
        Ok(CopyWriter {
            file: fs.open_file(path, true).await?,
            buf: Vec::with_capacity(CLEANER_IO_BYTES * 2),
            written: 0,
        })
    }

    /// Appends one batch and accounts it in `seg` (offset gaps allowed).
    async fn put(
        &mut self,
        seg: &mut LogSegment,
        h: &BatchHeader,
        b: &Bytes,
        index_interval_bytes: u32,
    ) -> Result<(), StorageError> {
        let position = self.written + self.buf.len() as u64;
        seg.record_stored_batch(
            h.base_offset,
            h.last_offset(),
            h.max_timestamp,
            position,
            b.len() as u64,
            index_interval_bytes,
        );
        self.buf.extend_from_slice(b);
        if self.buf.len() >= CLEANER_IO_BYTES {
            let n = align_down(self.buf.len() as u64) as usize;
            self.write(n).await?;
        }
        Ok(())
    }

    /// Writes the first `n` (aligned) bytes of the buffer, padding to a page with zeros.
    async fn write(&mut self, n: usize) -> Result<(), StorageError> {
        let len = align_up(n as u64) as usize;
        if len == 0 {
            return Ok(());
        }
        let mut dma = alloc_write_buffer(len);
        let out = dma.as_bytes_mut();
        out[..n].copy_from_slice(&self.buf[..n]);
        out[n..].fill(0);
        let done = self.file.write_at(dma, self.written).await?;
        if done != len {
            return Err(StorageError::Io(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write of a cleaned segment: {done} of {len} bytes"),
            )));
        }
        self.buf.drain(..n);
        self.written += n as u64;
        Ok(())
    }

    /// Writes the rest, cuts the file to the data's size and fdatasyncs it; returns the size.
    async fn finish(&mut self) -> Result<u64, StorageError> {
        let n = self.buf.len();
        let size = self.written + n as u64;
        self.write(n).await?;
        self.file.truncate(size).await?;
        self.file.fdatasync().await?;
        Ok(size)
    }
}
