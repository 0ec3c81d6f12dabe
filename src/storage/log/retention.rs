//! Retention (delete whole old segments by `retention.ms` / `retention.bytes`) and deleting
//! the partition.

use std::path::PathBuf;

use super::{lock_err, LogState, Partition};
use crate::io::FileSystem;
use crate::storage::segment::segment_path;
use crate::storage::StorageError;

impl Partition {
    /// Deletes whole non-active, finished segments past `retention.ms` / `retention.bytes`,
    /// advances the log start offset and drops the cached batches below it.
    pub(crate) async fn apply_retention(
        &self,
        fs: &FileSystem,
        now: i64,
    ) -> Result<(), StorageError> {
        let _permit = self.io_lock.acquire_permit(1).await.map_err(lock_err)?;
        let (victims, dir) = {
            let mut st = self.state.borrow_mut();
            if st.deleted {
                return Ok(());
            }
            if !st.config.cleanup_delete {
                return Ok(());
            }
            let victims = st.retention_victims(now);
            if victims.is_empty() {
                return Ok(());
            }
            let mut removed = Vec::with_capacity(victims.len());
            for b in &victims {
                if let Some(seg) = st.segments.remove(b) {
                    removed.push((seg.base_offset, seg.next_offset));
                }
            }
            // Invariant: the active segment is never deleted, so a first segment exists.
            // DeleteRecords may have moved it past the first remaining segment's base.
            let first = st
                .active()
                .base_offset
                .min(*st.segments.keys().next().unwrap_or(&i64::MAX));
            st.log_start_offset = st.log_start_offset.max(first);
            let start = st.log_start_offset;
            st.cache.drop_below(start);
            st.producers.drop_aborted_below(start);
            tracing::info!(topic = %self.topic, partition = self.partition, deleted = ?removed, log_start_offset = start, "retention deleted segments");
            (victims, st.dir.clone())
        };
        for b in victims {
            for ext in ["log", "index", "timeindex"] {
                fs.remove_file(&segment_path(&dir, b, ext))?;
            }
        }
        Ok(())
    }

    /// Marks the partition deleted (appends, reads and waits fail from now on), drops its
    /// cache and segments, wakes every waiter, and removes its directory with everything in
    /// it (after any file operation in flight).
    pub(crate) async fn delete(&self, fs: &FileSystem) -> Result<(), StorageError> {
        let _permit = self.io_lock.acquire_permit(1).await.map_err(lock_err)?;
        let dir: PathBuf = {
            let mut st = self.state.borrow_mut();
            st.deleted = true;
            st.cache.clear();
            st.segments.clear();
            st.dir.clone()
        };
        self.appended.wake_all();
        self.durable.wake_all();
        fs.remove_dir_all(&dir)?;
        Ok(())
    }
}

impl LogState {
    /// The oldest segments retention deletes now: a prefix of the finished, non-active ones,
    /// each older than `retention.ms` or leaving the log above `retention.bytes` without it.
    fn retention_victims(&self, now: i64) -> Vec<i64> {
        let cfg = &self.config;
        let mut total: i64 = self.segments.values().map(|s| s.size as i64).sum();
        let active_base = self.active().base_offset;
        let mut victims = Vec::new();
        for seg in self.segments.values() {
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
        victims
    }
}
