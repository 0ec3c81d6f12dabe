//! Recovery: open a partition directory, trust or re-scan its segments, truncate at the first
//! torn or corrupt batch, and load the idempotent producer state (snapshot, then the batch
//! headers after it). Also the recovery-point checkpoint file.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::sync::Semaphore;

use super::cache::{BatchCache, CacheBytes};
use super::checkpoint::{read_offset_checkpoint, write_offset_checkpoint};
use super::clean::{read_checkpoint as read_cleaner_checkpoint, remove_cleaned_leftovers};
use super::read::ReadBatch;
use super::start::read_log_start;
use super::LeaderEpochCache;
use super::{CleanerState, LogState, Partition, CLEAN_SHUTDOWN_FILE, RECOVERY_POINT_FILE};
use crate::io::{align_down, FileSystem, IoFile};
use crate::storage::index::{OffsetIndex, TimeIndex};
use crate::storage::producers::{ProducerTable, SNAPSHOT_FILE};
use crate::storage::segment::{scan_segment, segment_path, LogSegment};
use crate::storage::wait::WaitList;
use crate::storage::{LogConfig, StorageError};

/// Bytes read per step while rebuilding producer state from a log.
const PRODUCER_REBUILD_READ_BYTES: usize = 1 << 20;

/// Writes the recovery point (Kafka's one-entry checkpoint), atomically and durably, off the
/// shard.
pub(super) async fn write_recovery_point(
    fs: &FileSystem,
    dir: &Path,
    topic: &str,
    partition: i32,
    offset: i64,
) -> io::Result<()> {
    write_offset_checkpoint(fs, dir, RECOVERY_POINT_FILE, topic, partition, offset).await
}

/// The recovery point, if the file exists and parses.
fn read_recovery_point(fs: &FileSystem, dir: &Path) -> io::Result<Option<i64>> {
    Ok(read_offset_checkpoint(fs, dir, RECOVERY_POINT_FILE)?.offset())
}

/// Which partition is being recovered (for logs), and whether its log may have offset gaps.
struct Names<'a> {
    topic: &'a str,
    partition: i32,
    /// The cleaner has swapped segments in (its checkpoint exists): batches may start past
    /// the previous batch's end, and a segment may end before the next one's base.
    allow_gaps: bool,
}

/// What recovering one segment found.
struct RecoveredSegment {
    seg: LogSegment,
    /// Position and reason of the first bad batch: the log ends there.
    torn: Option<(u64, String)>,
}

impl Partition {
    /// Opens or creates the log in `dir`, recovering it as described in the storage module
    /// docs, then loads its idempotent producer state. `cache_bytes` is the shard's batch
    /// cache byte count this log's cache counts into.
    pub(crate) async fn open(
        fs: &FileSystem,
        dir: PathBuf,
        topic: &str,
        partition: i32,
        config: LogConfig,
        now: i64,
        cache_bytes: CacheBytes,
    ) -> Result<Partition, StorageError> {
        fs.create_dir_all(&dir)?;
        tracing::debug!(topic, partition, "recovering partition log");
        remove_cleaned_leftovers(fs, &dir)?;
        let cleaner_checkpoint = read_cleaner_checkpoint(fs, &dir)?;
        let names = Names {
            topic,
            partition,
            allow_gaps: cleaner_checkpoint.is_some(),
        };
        let marker = dir.join(CLEAN_SHUTDOWN_FILE);
        let clean = fs.exists(&marker);
        let rp = read_recovery_point(fs, &dir)?;
        let bases = segment_bases(fs, &dir)?;
        let scan_from = first_segment_to_scan(clean, rp, &bases);
        let mut segments =
            recover_segments(fs, &dir, &names, &bases, scan_from, &config, now).await?;
        let start_checkpoint = read_log_start(fs, &dir)?;
        let log_end = segments.values().next_back().map(|s| s.next_offset);
        if let (Some(cp), Some(end)) = (start_checkpoint, log_end) {
            if cp > end {
                // DeleteRecords moved the start past data a crash then took away: nothing
                // below the start may be served, so the log restarts empty at it.
                tracing::warn!(topic, partition, log_start_offset = cp, log_end = end, "log start offset checkpoint is past the recovered log end; starting an empty log there");
                let all: Vec<i64> = segments.keys().copied().collect();
                delete_segments(fs, &dir, &names, &all)?;
                segments.clear();
            }
        }
        if segments.is_empty() {
            let start = rp.unwrap_or(0).max(start_checkpoint.unwrap_or(0)).max(0);
            segments.insert(start, LogSegment::new(start, now));
        }
        let log_start = (*segments.keys().next().unwrap_or(&0)).max(start_checkpoint.unwrap_or(0));
        let next_offset = reopen_active(&mut segments).await?;
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
        let log = Partition {
            topic: topic.to_owned(),
            partition,
            state: RefCell::new(LogState {
                dir,
                config,
                segments,
                log_start_offset: log_start,
                next_offset,
                written_offset: next_offset,
                durable_offset: next_offset,
                sync_wanted: -1,
                cache: BatchCache::new(cache_bytes),
                producers: ProducerTable::default(),
                messages_since_sync: 0,
                oldest_unsynced_ms: None,
                flush_error: None,
                flush_error_epoch: 0,
                deleted: false,
                disk_allocated_bytes: 0,
                cleaner: CleanerState {
                    checkpoint: cleaner_checkpoint,
                    tombstones_due_ms: None,
                },
                leader_epoch: crate::storage::batch::LEADER_EPOCH,
                epochs: LeaderEpochCache::default(),
                epochs_version: 0,
                epochs_written: 0,
                replica_floor: None,
                high_watermark: log_start,
            }),
            io_lock: Semaphore::new(1),
            appended: WaitList::default(),
            durable: WaitList::default(),
        };
        log.load_leader_epochs(fs, scan_from).await?;
        log.load_producer_state(fs).await?;
        log.sample_disk_allocated(fs)?;
        Ok(log)
    }

    /// Loads the producer state: the snapshot if it matches the log, then the headers of the
    /// batches after it (the whole log without one). A snapshot past the log end describes
    /// batches a crash took away: it is deleted, so it cannot describe other batches at the
    /// same offsets later. Returns the number of idempotent batches scanned.
    pub(super) async fn load_producer_state(&self, fs: &FileSystem) -> Result<usize, StorageError> {
        let (start, end) = self.offsets();
        let path = self.state.borrow().dir.join(SNAPSHOT_FILE);
        let snapshot = match fs.read_small_file(&path)? {
            Some(bytes) => match ProducerTable::decode_snapshot(&bytes) {
                Some(s) => Some(s),
                None => {
                    tracing::warn!(
                        topic = %self.topic,
                        partition = self.partition,
                        "producer state snapshot damaged; rebuilding from the log"
                    );
                    None
                }
            },
            None => None,
        };
        let mut next = start;
        match snapshot {
            Some((covered, table)) if covered >= start && covered <= end => {
                self.state.borrow_mut().producers = table;
                next = covered;
            }
            Some((covered, _)) if covered > end => {
                tracing::info!(topic = %self.topic, partition = self.partition, covered, log_end = end, "producer state snapshot is past the recovered log end; deleting it");
                fs.remove_file(&path)?;
            }
            // Retention passed it: rebuild from the log start.
            _ => {}
        }
        self.scan_producer_state(next, end).await
    }

    /// Records every idempotent batch in `[from, end)` into the producer table, from the
    /// headers reads return.
    async fn scan_producer_state(&self, from: i64, end: i64) -> Result<usize, StorageError> {
        let mut seen = 0;
        self.scan_headers(from, end, "producer state", |st, b| {
            let h = &b.header;
            if h.producer_id >= 0 {
                let control = h.is_control().then(|| b.control_type()).flatten();
                st.producers
                    .record(h, h.base_offset, h.last_offset(), control);
                seen += 1;
            }
        })
        .await?;
        Ok(seen)
    }

    /// Calls `visit` with every batch in `[from, end)`, in offset order, from the headers
    /// reads return (`what` names the state being rebuilt, for the log).
    pub(super) async fn scan_headers(
        &self,
        from: i64,
        end: i64,
        what: &str,
        mut visit: impl FnMut(&mut LogState, &ReadBatch),
    ) -> Result<(), StorageError> {
        let mut next = from;
        while next < end {
            let read = match self
                .read(next, PRODUCER_REBUILD_READ_BYTES, true, true)
                .await
            {
                Ok(r) => r.map(|r| r.batches).unwrap_or_default(),
                // Damaged data that recovery trusted (bit rot after a clean shutdown, a rolled
                // segment): reads refuse it, so the rebuilt state ends there, and the broker
                // still starts and serves the valid prefix.
                Err(e @ StorageError::CorruptLog { .. }) => {
                    tracing::warn!(topic = %self.topic, partition = self.partition, offset = next, error = %e, "{what} rebuilt only up to a corrupt batch");
                    break;
                }
                Err(e) => return Err(e),
            };
            let mut advanced = next;
            {
                let mut st = self.state.borrow_mut();
                for b in &read {
                    if b.header.base_offset >= next {
                        visit(&mut st, b);
                    }
                    advanced = advanced.max(b.header.last_offset() + 1);
                }
            }
            if advanced <= next {
                break;
            }
            next = advanced;
        }
        Ok(())
    }
}

/// Segments with a base offset at or past this are re-scanned with CRC checks: after an
/// unclean stop, the one holding the recovery point and all after it (all of them without a
/// recovery point). `None` after a clean shutdown: every segment is trusted.
fn first_segment_to_scan(clean: bool, recovery_point: Option<i64>, bases: &[i64]) -> Option<i64> {
    if clean {
        return None;
    }
    Some(match recovery_point {
        Some(rp) => bases
            .iter()
            .rev()
            .find(|&&b| b <= rp)
            .copied()
            .unwrap_or(i64::MIN),
        None => i64::MIN,
    })
}

/// Recovers the segments in order; at the first torn or corrupt batch the log ends: that
/// segment is cut there and every later one deleted.
async fn recover_segments(
    fs: &FileSystem,
    dir: &Path,
    names: &Names<'_>,
    bases: &[i64],
    scan_from: Option<i64>,
    config: &LogConfig,
    now: i64,
) -> Result<BTreeMap<i64, LogSegment>, StorageError> {
    let mut segments = BTreeMap::new();
    for (i, &base) in bases.iter().enumerate() {
        let full_scan = scan_from.is_some_and(|b| base >= b);
        let next_base = bases.get(i + 1).copied();
        let r = recover_segment(fs, dir, names, base, next_base, full_scan, config, now).await?;
        segments.insert(base, r.seg);
        if r.torn.is_some() {
            delete_segments(fs, dir, names, &bases[i + 1..])?;
            break;
        }
    }
    Ok(segments)
}

/// Base offsets of the segment files in `dir`, ascending.
fn segment_bases(fs: &FileSystem, dir: &Path) -> io::Result<Vec<i64>> {
    let mut bases: Vec<i64> = fs
        .list_files(dir)?
        .iter()
        .filter_map(|n| n.strip_suffix(".log"))
        .filter(|s| s.len() == 20)
        .filter_map(|s| s.parse::<i64>().ok())
        .collect();
    bases.sort_unstable();
    Ok(bases)
}

/// Loads a trusted segment's indexes from their files; `false` when either is missing or
/// does not fit the segment (then it is scanned instead).
fn load_indexes(
    fs: &FileSystem,
    dir: &Path,
    seg: &mut LogSegment,
    file_len: u64,
) -> io::Result<bool> {
    let base = seg.base_offset;
    let idx = fs
        .read_small_file(&segment_path(dir, base, "index"))?
        .and_then(|b| OffsetIndex::from_bytes(&b, file_len));
    let tidx = fs
        .read_small_file(&segment_path(dir, base, "timeindex"))?
        .and_then(|b| TimeIndex::from_bytes(&b));
    match (idx, tidx) {
        (Some(idx), Some(tidx)) => {
            seg.offset_index = idx;
            seg.time_index = tidx;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Recovers one segment: trusted (indexes loaded, only the last segment's tail after its last
/// index entry re-scanned) or fully re-scanned, then truncated at the first bad batch.
#[allow(clippy::too_many_arguments)]
async fn recover_segment(
    fs: &FileSystem,
    dir: &Path,
    names: &Names<'_>,
    base: i64,
    next_base: Option<i64>,
    full_scan: bool,
    config: &LogConfig,
    now: i64,
) -> Result<RecoveredSegment, StorageError> {
    let file = Rc::new(fs.open_file(&segment_path(dir, base, "log"), false).await?);
    let file_len = file.file_size().await?;
    let is_last = next_base.is_none();
    let mut seg = LogSegment::new(base, now);
    let loaded = !full_scan && load_indexes(fs, dir, &mut seg, file_len)?;
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
    if let Some(ts) = seg.time_index.last_timestamp() {
        seg.max_timestamp = ts;
    }
    let mut torn = None;
    match scan_start {
        None => {
            seg.size = file_len;
            seg.next_offset = next_base.unwrap_or(base);
        }
        Some((pos, off)) => {
            let interval = config.index_interval_bytes;
            let gaps = names.allow_gaps;
            torn = scan_segment(&mut seg, &file, pos, off, file_len, interval, gaps).await?;
            if loaded && pos != 0 && torn.is_some() {
                torn = rescan_from_start(&mut seg, &file, names, file_len, interval, &torn).await?;
            }
            let ends_badly = match next_base {
                None => false,
                // A cleaned segment may end before the next one's base (a gap).
                Some(nb) if names.allow_gaps => seg.next_offset > nb,
                Some(nb) => seg.next_offset != nb,
            };
            if torn.is_none() && ends_badly {
                torn = Some((
                    seg.size,
                    format!(
                        "segment ends at offset {} but the next one starts at {:?}",
                        seg.next_offset, next_base
                    ),
                ));
            }
            truncate_at_log_end(&mut seg, &file, names, file_len, &torn).await?;
            if let (None, Some(nb)) = (&torn, next_base) {
                // A cleaned segment's trailing gap still belongs to it.
                seg.next_offset = seg.next_offset.max(nb);
            }
        }
    }
    seg.file = Some(file);
    seg.allocated = seg.size;
    seg.written_size = seg.size;
    seg.written_next_offset = seg.next_offset;
    seg.rolled = true;
    seg.finished = true;
    Ok(RecoveredSegment { seg, torn })
}

/// A trusted index whose last entry leads to a bad batch may be the damaged part: rebuild it
/// from the segment start before cutting data. Returns the new scan's verdict.
async fn rescan_from_start(
    seg: &mut LogSegment,
    file: &IoFile,
    names: &Names<'_>,
    file_len: u64,
    interval: u32,
    torn: &Option<(u64, String)>,
) -> Result<Option<(u64, String)>, StorageError> {
    if let Some((position, reason)) = torn {
        tracing::warn!(
            topic = names.topic, partition = names.partition, segment = seg.base_offset, position, %reason,
            "scan from the last offset index entry failed; rebuilding the index from the segment start"
        );
    }
    let base = seg.base_offset;
    seg.offset_index = OffsetIndex::new();
    seg.time_index = TimeIndex::new();
    seg.max_timestamp = -1;
    seg.offset_of_max_timestamp = base;
    Ok(scan_segment(seg, file, 0, base, file_len, interval, names.allow_gaps).await?)
}

/// Cuts the file at the segment's scanned end: nothing stale may remain behind the log end
/// (torn bytes, preallocated zeros), where a later crash could resurrect it. Trims the indexes
/// to match.
async fn truncate_at_log_end(
    seg: &mut LogSegment,
    file: &IoFile,
    names: &Names<'_>,
    file_len: u64,
    torn: &Option<(u64, String)>,
) -> Result<(), StorageError> {
    if let Some((position, reason)) = torn {
        tracing::warn!(
            topic = names.topic, partition = names.partition, segment = seg.base_offset, position,
            dropped_bytes = file_len - position, %reason,
            "truncating log at the first torn or corrupt batch"
        );
    }
    if file_len > seg.size {
        file.truncate(seg.size).await?;
        file.fdatasync().await?;
    }
    seg.offset_index.truncate_to_position(seg.size as u32);
    seg.time_index
        .truncate_to_offset((seg.next_offset - seg.base_offset).clamp(0, u32::MAX as i64) as u32);
    Ok(())
}

/// Deletes the segments after a truncation point (their data no longer follows the log).
fn delete_segments(
    fs: &FileSystem,
    dir: &Path,
    names: &Names<'_>,
    bases: &[i64],
) -> io::Result<()> {
    for &b in bases {
        tracing::warn!(
            topic = names.topic,
            partition = names.partition,
            segment = b,
            "deleting segment after truncation point"
        );
        for ext in ["log", "index", "timeindex"] {
            fs.remove_file(&segment_path(dir, b, ext))?;
        }
    }
    Ok(())
}

/// Makes the last segment the active one again: not rolled, not finished, its partial last
/// page read back for the next write. Returns the log end offset.
async fn reopen_active(segments: &mut BTreeMap<i64, LogSegment>) -> Result<i64, StorageError> {
    let Some(active) = segments.values_mut().next_back() else {
        return Err(StorageError::Io(io::Error::other("log without segments")));
    };
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
    Ok(active.next_offset)
}
