//! The leader-epoch cache of one log (Kafka's `LeaderEpochFileCache`): for every leader epoch
//! whose leader appended to this log, the offset of its first batch, and its checkpoint file
//! `leader-epoch-checkpoint` in Kafka's format:
//!
//! ```text
//! 0                      version
//! N                      entries
//! <epoch> <start offset>
//! ```
//!
//! Crash safety (the same rule as the recovery point's): the flusher writes the file, durably,
//! before it moves the recovery point, so every epoch that starts below the recovery point is
//! in the file; at open after an unclean stop, entries from the segment holding the recovery
//! point on are dropped and rebuilt from the `partition_leader_epoch`s recovery's scan of those
//! segments noted (`LogSegment::scanned_epochs`: no second read).

use std::io;
use std::path::Path;

use super::Partition;
use crate::io::FileSystem;
use crate::storage::StorageError;

/// Name of the leader-epoch checkpoint inside a partition directory (Kafka's name).
pub(crate) const LEADER_EPOCH_FILE: &str = "leader-epoch-checkpoint";

/// `(epoch, start offset)` entries, both strictly increasing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct LeaderEpochCache {
    entries: Vec<(i32, i64)>,
}

impl LeaderEpochCache {
    /// The newest epoch, if any batch carried one.
    pub(super) fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.0)
    }

    /// Records that a batch of `epoch` starts at `offset`: a new entry when `epoch` is newer
    /// than the latest (an older or equal one changes nothing: a log's epochs never decrease,
    /// and an epoch starts at its first batch). Returns whether an entry was added.
    pub(super) fn assign(&mut self, epoch: i32, offset: i64) -> bool {
        if epoch < 0 || self.latest_epoch().is_some_and(|e| e >= epoch) {
            return false;
        }
        debug_assert!(self.entries.last().is_none_or(|e| e.1 <= offset));
        // An epoch with no batch left (its data was truncated) is replaced by the one that
        // starts at the same offset.
        if self.entries.last().is_some_and(|e| e.1 >= offset) {
            self.entries.retain(|e| e.1 < offset);
        }
        self.entries.push((epoch, offset));
        true
    }

    /// Drops the entries starting at or past `end` (the log was cut at `end`). Returns whether
    /// anything changed.
    pub(super) fn truncate_from_end(&mut self, end: i64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.1 < end);
        self.entries.len() != before
    }

    /// Drops what lies below the log start `start`: entries wholly before it go, and the first
    /// remaining one is moved up to `start` (Kafka's `truncateFromStart`). Returns whether
    /// anything changed.
    pub(super) fn truncate_from_start(&mut self, start: i64) -> bool {
        let Some(keep) = self.entries.iter().rposition(|e| e.1 <= start) else {
            return false;
        };
        let changed = keep > 0 || self.entries[0].1 != start;
        self.entries.drain(..keep);
        self.entries[0].1 = start;
        changed
    }

    /// Kafka's `endOffsetFor`: `(epoch, end offset)` for a requested epoch, with the log end
    /// `log_end`: the latest epoch ends at the log end; an older one at the start of the first
    /// newer epoch, and the answer names the largest known epoch not above the requested one
    /// (the requested epoch itself when every known epoch is newer); `(-1, -1)` for -1 or an
    /// epoch newer than every known one.
    pub(super) fn end_offset_for(&self, requested: i32, log_end: i64) -> (i32, i64) {
        if requested < 0 {
            return (-1, -1);
        }
        if self.latest_epoch() == Some(requested) {
            return (requested, log_end);
        }
        let Some(higher) = self.entries.iter().find(|e| e.0 > requested) else {
            return (-1, -1);
        };
        match self.entries.iter().rev().find(|e| e.0 <= requested) {
            Some(floor) => (floor.0, higher.1),
            None => (requested, higher.1),
        }
    }

    /// The file's text.
    fn encode(&self) -> String {
        let mut text = format!("0\n{}\n", self.entries.len());
        for (epoch, offset) in &self.entries {
            text.push_str(&format!("{epoch} {offset}\n"));
        }
        text
    }

    /// Parses the file's text; `None` when it is not version 0 with the announced number of
    /// well-formed, increasing entries.
    fn decode(text: &str) -> Option<LeaderEpochCache> {
        let mut lines = text.lines();
        if lines.next()? != "0" {
            return None;
        }
        let n: usize = lines.next()?.trim().parse().ok()?;
        let mut cache = LeaderEpochCache::default();
        for _ in 0..n {
            let mut parts = lines.next()?.split_whitespace();
            let epoch: i32 = parts.next()?.parse().ok()?;
            let offset: i64 = parts.next()?.parse().ok()?;
            let ordered = cache
                .entries
                .last()
                .is_none_or(|e| e.0 < epoch && e.1 <= offset);
            if epoch < 0 || offset < 0 || !ordered || parts.next().is_some() {
                return None;
            }
            cache.entries.push((epoch, offset));
        }
        Some(cache)
    }
}

/// What the checkpoint file held at open.
pub(super) enum StoredEpochs {
    /// No file: the log predates it, or never reached a flush.
    Missing,
    /// A file that does not parse.
    Damaged,
    /// The entries.
    Found(LeaderEpochCache),
}

/// Reads `dir/leader-epoch-checkpoint`.
pub(super) fn read_epochs(fs: &FileSystem, dir: &Path) -> io::Result<StoredEpochs> {
    let Some(bytes) = fs.read_small_file(&dir.join(LEADER_EPOCH_FILE))? else {
        return Ok(StoredEpochs::Missing);
    };
    Ok(
        match LeaderEpochCache::decode(&String::from_utf8_lossy(&bytes)) {
            Some(c) => StoredEpochs::Found(c),
            None => StoredEpochs::Damaged,
        },
    )
}

/// Replaces `dir/leader-epoch-checkpoint` with `cache`, atomically and durably, off the shard.
pub(super) async fn write_epochs(
    fs: &FileSystem,
    dir: &Path,
    cache: &LeaderEpochCache,
) -> io::Result<()> {
    fs.write_small_file_durable_off_shard(&dir.join(LEADER_EPOCH_FILE), cache.encode().into_bytes())
        .await
}

impl Partition {
    /// Loads the leader-epoch cache at open (after recovery cut the log). Recovery re-scanned
    /// the segments from `scanned_from` on (after an unclean stop: the one holding the
    /// recovery point and all later ones; `None` after a clean stop) and noted their epochs;
    /// below that, the checkpoint's entries hold (it is written before the recovery point
    /// moves). Without a readable checkpoint, the batches below are read for their epochs
    /// (once: a log that predates the file). The stamping epoch starts at the latest one.
    pub(super) async fn load_leader_epochs(
        &self,
        fs: &FileSystem,
        scanned_from: Option<i64>,
    ) -> Result<(), StorageError> {
        let (start, end) = self.offsets();
        let dir = self.state.borrow().dir.clone();
        // Below `covered` the epochs come from the checkpoint (or a read), from it on from
        // the recovery scan.
        let covered = scanned_from.map_or(end, |b| b.clamp(start, end));
        let (mut cache, read_from) = match read_epochs(fs, &dir)? {
            StoredEpochs::Found(c) => (c, covered),
            StoredEpochs::Missing => (LeaderEpochCache::default(), start),
            StoredEpochs::Damaged => {
                tracing::warn!(topic = %self.topic, partition = self.partition, "leader-epoch checkpoint damaged; rebuilding it from the log");
                (LeaderEpochCache::default(), start)
            }
        };
        let before = cache.clone();
        cache.truncate_from_end(read_from);
        self.state.borrow_mut().epochs = cache;
        if read_from < covered {
            self.scan_headers(read_from, covered, "leader-epoch cache", |st, b| {
                st.epochs
                    .assign(b.header.partition_leader_epoch, b.header.base_offset);
            })
            .await?;
        }
        let mut st = self.state.borrow_mut();
        let scanned: Vec<(i32, i64)> = st
            .segments
            .range(scanned_from.unwrap_or(i64::MAX)..)
            .flat_map(|(_, s)| s.scanned_epochs.iter().copied())
            .collect();
        for seg in st.segments.values_mut() {
            seg.scanned_epochs = Vec::new();
        }
        for (epoch, offset) in scanned {
            // A batch across `covered` (the log start inside it) starts its epoch there.
            st.epochs.assign(epoch, offset.max(covered));
        }
        st.epochs.truncate_from_start(start);
        if let Some(latest) = st.epochs.latest_epoch() {
            st.leader_epoch = st.leader_epoch.max(latest);
        }
        if st.epochs != before {
            st.epochs_version += 1;
        }
        Ok(())
    }

    /// Sets the leader epoch stamped on the batches appended from now on (this broker's image
    /// of the partition). An older epoch than the current one is ignored: a log's epochs never
    /// decrease.
    pub(crate) fn set_leader_epoch(&self, epoch: i32) {
        let mut st = self.state.borrow_mut();
        st.leader_epoch = st.leader_epoch.max(epoch);
    }

    /// OffsetForLeaderEpoch: `(epoch, end offset)` of `requested` in this log (Kafka's
    /// `endOffsetFor`, with the log end as the latest epoch's end).
    pub(crate) fn end_offset_for_epoch(&self, requested: i32) -> Result<(i32, i64), StorageError> {
        let mut st = self.state.borrow_mut();
        if st.deleted {
            return Err(StorageError::UnknownPartition);
        }
        let start = st.log_start_offset;
        if st.epochs.truncate_from_start(start) {
            st.epochs_version += 1;
        }
        Ok(st.epochs.end_offset_for(requested, st.next_offset))
    }

    /// Writes the leader-epoch checkpoint if the cache changed since the last write (`always`:
    /// even if not). Called before the recovery point moves. Caller holds the I/O lock.
    pub(super) async fn checkpoint_epochs(
        &self,
        fs: &FileSystem,
        always: bool,
    ) -> Result<(), StorageError> {
        let (dir, cache, version) = {
            let mut st = self.state.borrow_mut();
            if st.deleted || (!always && st.epochs_written == st.epochs_version) {
                return Ok(());
            }
            let start = st.log_start_offset;
            if st.epochs.truncate_from_start(start) {
                st.epochs_version += 1;
            }
            (st.dir.clone(), st.epochs.clone(), st.epochs_version)
        };
        write_epochs(fs, &dir, &cache).await?;
        let mut st = self.state.borrow_mut();
        st.epochs_written = st.epochs_written.max(version);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, i64)]) -> LeaderEpochCache {
        LeaderEpochCache {
            entries: entries.to_vec(),
        }
    }

    #[test]
    fn assign_keeps_epochs_and_offsets_increasing() {
        let mut c = LeaderEpochCache::default();
        assert!(c.assign(0, 0));
        assert!(!c.assign(0, 10));
        assert!(c.assign(3, 10));
        assert!(!c.assign(2, 20), "an older epoch never enters");
        assert!(!c.assign(-1, 20));
        assert_eq!(c, cache(&[(0, 0), (3, 10)]));
        // A newer epoch at the same offset replaces an epoch left without batches.
        assert!(c.assign(4, 10));
        assert_eq!(c, cache(&[(0, 0), (4, 10)]));
    }

    #[test]
    fn end_offsets_follow_kafkas_rules() {
        let c = cache(&[(1, 5), (3, 20), (6, 40)]);
        assert_eq!(
            c.end_offset_for(6, 55),
            (6, 55),
            "latest epoch: the log end"
        );
        assert_eq!(c.end_offset_for(3, 55), (3, 40));
        assert_eq!(
            c.end_offset_for(4, 55),
            (3, 40),
            "unknown epoch: the floor one"
        );
        assert_eq!(
            c.end_offset_for(0, 55),
            (0, 5),
            "older than all: first start"
        );
        assert_eq!(c.end_offset_for(7, 55), (-1, -1));
        assert_eq!(c.end_offset_for(-1, 55), (-1, -1));
        assert_eq!(LeaderEpochCache::default().end_offset_for(0, 9), (-1, -1));
    }

    #[test]
    fn truncation_from_both_ends() {
        let mut c = cache(&[(1, 5), (3, 20), (6, 40)]);
        assert!(c.truncate_from_end(40));
        assert_eq!(c, cache(&[(1, 5), (3, 20)]));
        assert!(!c.truncate_from_end(40));
        assert!(c.truncate_from_start(25));
        assert_eq!(c, cache(&[(3, 25)]));
        assert!(!c.truncate_from_start(25));
        assert!(!c.truncate_from_start(10), "nothing below the first entry");
    }

    #[test]
    fn file_format_is_kafkas() {
        let c = cache(&[(0, 0), (2, 17)]);
        assert_eq!(c.encode(), "0\n2\n0 0\n2 17\n");
        assert_eq!(LeaderEpochCache::decode(&c.encode()), Some(c));
        assert_eq!(
            LeaderEpochCache::decode("0\n0\n"),
            Some(LeaderEpochCache::default())
        );
        for bad in [
            "",
            "1\n0\n",
            "0\n2\n0 0\n",
            "0\n2\n2 0\n1 5\n",
            "0\n1\n0 x\n",
        ] {
            assert_eq!(LeaderEpochCache::decode(bad), None, "{bad:?}");
        }
    }
}
