//! A follower's side of a log (replication step 2): batches fetched from the leader are
//! appended as they are (offsets, epochs and producer ids kept; CRC checked), and the log is
//! truncated where it diverges from the leader's (KIP-101/279: by leader epoch).
//!
//! Truncation is crash-safe by the rules recovery already follows: the cut segment file is
//! trimmed and fdatasynced first, then the leader-epoch checkpoint is rewritten without the
//! epochs past the cut, the producer-state snapshot is dropped if it describes batches past
//! it, and the recovery point moves back to the cut segment's base, all before any new batch
//! can be appended (the I/O lock and the state borrow keep appends out until the log is
//! consistent again). A crash anywhere in between leaves a log that recovery cuts at the same
//! place or keeps whole, never one whose checkpoints describe data it no longer has.

use std::io;

use bytes::Bytes;

use super::recover::write_recovery_point;
use super::{lock_err, Partition};
use crate::io::{align_down, FileSystem};
use crate::storage::batch::{check_batch, control_type, parse_header, BATCH_HEADER_BYTES};
use crate::storage::producers::ProducerTable;
use crate::storage::segment::{scan_segment, segment_path, BatchScanner, LogSegment, ScanItem};
use crate::storage::{LogAppendInfo, StorageError, StorageOptions};

/// Bytes read per step while looking for the cut position in a segment.
const TRUNCATE_SCAN_READ_BYTES: usize = 1 << 20;

impl Partition {
    /// Appends one batch fetched from the leader, as it is: it must start at this log's end
    /// (a follower fetches from its log end), and its CRC must hold. Nothing is patched: the
    /// leader's offsets, leader epoch and timestamps stay; the producer state and the
    /// leader-epoch cache learn from its header, so a follower that becomes leader
    /// deduplicates retries and answers OffsetForLeaderEpoch as the old leader did.
    pub(crate) fn append_replica(
        &self,
        batch: Bytes,
        now: i64,
    ) -> Result<LogAppendInfo, StorageError> {
        let info = {
            let mut st = self.state.borrow_mut();
            if st.deleted {
                return Err(StorageError::UnknownPartition);
            }
            let h = parse_header(&batch)?;
            // As stored: a compacted leader's batch may hold fewer records than its range.
            check_batch(&batch, &h, u32::MAX, true)?;
            if h.base_offset != st.next_offset {
                return Err(StorageError::InvalidRecord(
                    "a replicated batch must start at the follower's log end",
                ));
            }
            st.roll_if_due(
                batch.len() as u64,
                h.last_offset_delta as i64 + 1,
                now,
                self,
            );
            let control = h
                .is_control()
                .then(|| control_type(&batch[BATCH_HEADER_BYTES..]))
                .flatten();
            let header_bytes = batch.slice(..BATCH_HEADER_BYTES);
            let info = st.push_batch(header_bytes, batch, h, now);
            if h.producer_id >= 0 {
                st.producers
                    .record(&h, info.first_offset, info.last_offset, control);
            }
            info
        };
        self.appended.wake_all();
        Ok(info)
    }

    /// The latest leader epoch of this log and its end offset, for a follower's fetch
    /// (`last_fetched_epoch`, `fetch_offset`); epoch -1 for a log without batches.
    pub(crate) fn last_epoch_and_end(&self) -> (i32, i64) {
        let st = self.state.borrow();
        (st.epochs.latest_epoch().unwrap_or(-1), st.next_offset)
    }

    /// Cuts the log so it ends at or before `offset` (at the start of the batch holding it;
    /// Kafka's `truncateTo`): later segments are deleted, the one holding `offset` trimmed,
    /// the batch cache, the leader-epoch cache and the producer state follow. Durable on
    /// return. Waiters for durability of the removed offsets fail. Returns the new log end.
    /// An `offset` below the log start is refused; at or past the log end nothing changes.
    pub(crate) async fn truncate_to(
        &self,
        fs: &FileSystem,
        opts: &StorageOptions,
        offset: i64,
    ) -> Result<i64, StorageError> {
        let _permit = self.io_lock.acquire_permit(1).await.map_err(lock_err)?;
        {
            let st = self.state.borrow();
            if st.deleted {
                return Err(StorageError::UnknownPartition);
            }
            if offset >= st.next_offset {
                return Ok(st.next_offset);
            }
            if offset < st.log_start_offset {
                return Err(st.out_of_range(offset));
            }
        }
        // Everything appended reaches its file, synced, first: the cut is then a file
        // operation only, and what stays is durable.
        if let Err(e) = self.flush_locked(fs, opts, true).await {
            self.record_flush_error(&e);
            return Err(e);
        }
        let (dir, keep_base, victims) = {
            let st = self.state.borrow();
            let first = *st.segments.keys().next().expect("log without segments");
            let keep_base = st
                .segments
                .keys()
                .rev()
                .find(|&&b| b < offset)
                .copied()
                .unwrap_or(first);
            let victims: Vec<i64> = st
                .segments
                .keys()
                .filter(|&&b| b > keep_base)
                .copied()
                .collect();
            (st.dir.clone(), keep_base, victims)
        };
        let new_end = self.cut_segment(fs, &dir, keep_base, offset).await?;
        for base in &victims {
            for ext in ["log", "index", "timeindex"] {
                fs.remove_file(&segment_path(&dir, *base, ext))?;
            }
        }
        {
            let mut st = self.state.borrow_mut();
            for base in &victims {
                st.segments.remove(base);
            }
            st.cache.drop_from(new_end);
            st.next_offset = new_end;
            st.high_watermark = st.high_watermark.min(new_end);
            st.written_offset = new_end;
            st.durable_offset = new_end;
            st.messages_since_sync = 0;
            st.oldest_unsynced_ms = None;
            if st.epochs.truncate_from_end(new_end) {
                st.epochs_version += 1;
            }
            st.producers = ProducerTable::default();
            st.flush_error = Some((io::ErrorKind::Other, "the log was truncated".into()));
            st.flush_error_epoch += 1;
        }
        self.durable.wake_all();
        self.checkpoint_epochs(fs, true).await?;
        self.load_producer_state(fs).await?;
        write_recovery_point(fs, &dir, &self.topic, self.partition, keep_base).await?;
        tracing::info!(topic = %self.topic, partition = self.partition, offset, new_end, "log truncated");
        Ok(new_end)
    }

    /// Cuts segment `base` (written, the I/O lock held) before the batch holding `offset`,
    /// makes it the active segment again (indexes rebuilt from the file, their stale files
    /// removed) and returns its new end offset.
    async fn cut_segment(
        &self,
        fs: &FileSystem,
        dir: &std::path::Path,
        base: i64,
        offset: i64,
    ) -> Result<i64, StorageError> {
        let (file, file_len, interval, gaps, created_ms) = {
            let mut st = self.state.borrow_mut();
            let interval = st.config.index_interval_bytes;
            let gaps = st.cleaner.checkpoint.is_some();
            let seg = st.segments.get_mut(&base).expect("segment to cut");
            let created = seg.created_ms;
            let file = match &seg.file {
                Some(f) => f.clone(),
                // Never written (everything appended was written before the cut): empty.
                None => {
                    *seg = LogSegment::new(base, created);
                    return Ok(base);
                }
            };
            (file, seg.written_size, interval, gaps, created)
        };
        // The position of the first batch that ends at or past `offset`.
        let mut cut = file_len;
        let mut scanner = BatchScanner::new(&file, 0, file_len, TRUNCATE_SCAN_READ_BYTES, false);
        loop {
            match scanner.next_batch().await? {
                ScanItem::Batch {
                    position, header, ..
                } if header.last_offset() >= offset => {
                    cut = position;
                    break;
                }
                ScanItem::Batch { .. } => {}
                ScanItem::End => break,
                ScanItem::Torn { position, reason } => {
                    return Err(StorageError::CorruptLog {
                        path: segment_path(dir, base, "log"),
                        reason: format!("at position {position}: {reason}"),
                    })
                }
            }
        }
        file.truncate(cut).await?;
        file.fdatasync().await?;
        for ext in ["index", "timeindex"] {
            fs.remove_file(&segment_path(dir, base, ext))?;
        }
        let mut seg = LogSegment::new(base, created_ms);
        if let Some(torn) = scan_segment(&mut seg, &file, 0, base, cut, interval, gaps).await? {
            return Err(StorageError::CorruptLog {
                path: segment_path(dir, base, "log"),
                reason: format!("at position {}: {}", torn.0, torn.1),
            });
        }
        let page = align_down(seg.size);
        let want = (seg.size - page) as usize;
        let tail = file.read_at(page, want).await?;
        if tail.len() != want {
            return Err(StorageError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "could not read the last page of the cut segment",
            )));
        }
        seg.tail = tail.to_vec();
        seg.file = Some(file);
        seg.allocated = seg.size;
        seg.written_size = seg.size;
        seg.written_next_offset = seg.next_offset;
        let end = seg.next_offset;
        let mut st = self.state.borrow_mut();
        st.segments.insert(base, seg);
        Ok(end)
    }
}
