//! The log start offset moved by DeleteRecords: Kafka's `maybeIncrementLogStartOffset`, its
//! checkpoint file, and deleting the whole segments below it.
//!
//! Durability: the new start is written to `log-start-offset-checkpoint` (atomically and
//! durably) before any segment is deleted and before the caller is answered, so a restart or
//! a kill -9 never moves it back. Recovery takes the larger of the checkpoint and the first
//! segment's base offset (retention moves the start by deleting segments, which needs no
//! checkpoint).

use std::io;
use std::path::Path;

use super::checkpoint::{read_offset_checkpoint, write_offset_checkpoint};
use super::{lock_err, Partition};
use crate::io::FileSystem;
use crate::storage::segment::segment_path;
use crate::storage::StorageError;

/// Name of the log start offset checkpoint inside a partition directory (Kafka's checkpoint
/// format, one entry; Kafka keeps one such file per data directory).
pub(crate) const LOG_START_FILE: &str = "log-start-offset-checkpoint";

/// Writes the log start offset (Kafka's one-entry checkpoint), atomically and durably, off the
/// shard.
pub(super) async fn write_log_start(
    fs: &FileSystem,
    dir: &Path,
    topic: &str,
    partition: i32,
    offset: i64,
) -> io::Result<()> {
    write_offset_checkpoint(fs, dir, LOG_START_FILE, topic, partition, offset).await
}

/// The checkpointed log start offset, if the file exists and parses to a valid offset.
pub(super) fn read_log_start(fs: &FileSystem, dir: &Path) -> io::Result<Option<i64>> {
    Ok(read_offset_checkpoint(fs, dir, LOG_START_FILE)?
        .offset()
        .filter(|&o| o >= 0))
}

impl Partition {
    /// DeleteRecords: moves the log start offset up to `offset` (-1 = the high watermark),
    /// durably, then deletes the whole finished segments below it and the cached batches
    /// ending below it (never unwritten ones). A start at or below the current one changes
    /// nothing. Returns the log start offset after the call (Kafka's low watermark).
    ///
    /// Errors as Kafka's: an offset above the high watermark (or negative, other than -1) is
    /// [`StorageError::OffsetOutOfRange`]; a topic without `delete` in its `cleanup.policy`
    /// is [`StorageError::PolicyViolation`].
    pub(crate) async fn delete_records(
        &self,
        fs: &FileSystem,
        offset: i64,
    ) -> Result<i64, StorageError> {
        let _permit = self.io_lock.acquire_permit(1).await.map_err(lock_err)?;
        let (target, dir) = {
            let st = self.state.borrow();
            if st.deleted {
                return Err(StorageError::UnknownPartition);
            }
            if !st.config.cleanup_delete {
                return Err(StorageError::PolicyViolation(format!(
                    "Records of partition {}-{} can not be deleted due to the configured policy",
                    self.topic, self.partition
                )));
            }
            let hw = st.high_watermark();
            let target = if offset == -1 { hw } else { offset };
            if target < 0 || target > hw {
                return Err(st.out_of_range(offset));
            }
            if target <= st.log_start_offset {
                return Ok(st.log_start_offset);
            }
            (target, st.dir.clone())
        };
        // Durable before anything is deleted or answered.
        write_log_start(fs, &dir, &self.topic, self.partition, target).await?;
        let victims = {
            let mut st = self.state.borrow_mut();
            st.log_start_offset = target;
            // The batch holding the new start stays (a read at the start returns it whole, as
            // Kafka's); batches below it go, unless the flusher still has to write them.
            let keep_from = st
                .cache
                .range(i64::MIN, target + 1)
                .last()
                .map_or(target, |(base, _)| base)
                .min(st.written_offset);
            st.cache.drop_below(keep_from);
            st.producers.drop_aborted_below(target);
            let active_base = st.active().base_offset;
            let bases: Vec<i64> = st.segments.keys().copied().collect();
            let mut victims = Vec::new();
            for pair in bases.windows(2) {
                let (base, next_base) = (pair[0], pair[1]);
                let finished = st.segments.get(&base).is_some_and(|s| s.finished);
                if base == active_base || next_base > target || !finished {
                    break;
                }
                st.segments.remove(&base);
                victims.push(base);
            }
            tracing::info!(topic = %self.topic, partition = self.partition, log_start_offset = target, deleted_segments = ?victims, "log start offset moved by DeleteRecords");
            victims
        };
        for b in victims {
            for ext in ["log", "index", "timeindex"] {
                fs.remove_file(&segment_path(&dir, b, ext))?;
            }
        }
        Ok(target)
    }
}
