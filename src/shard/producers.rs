//! Idempotent producer state: per partition, per producer id, the epoch and the sequence
//! ranges of the last five batches (as Kafka keeps them).
//!
//! Checked before every append of a batch that carries a producer id: a retried duplicate is
//! answered with its original offsets and not written again, a gap in sequence numbers gets
//! OUT_OF_ORDER_SEQUENCE_NUMBER, an old epoch INVALID_PRODUCER_EPOCH. The check and the append
//! run without an `.await` between them, so two requests cannot interleave.
//!
//! The state is snapshotted beside the segments (`<topic>-<partition>/producer-state.snapshot`:
//! the state as of an offset, CRC-checked) at clean shutdown and every minute; when a
//! partition opens it loads the snapshot and scans only the batch headers after its offset
//! (the whole log when there is no usable snapshot).

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::{Buf, BufMut, BytesMut};

use crate::error_code::ErrorCode;
use crate::storage::{parse_header, BatchHeader, ShardStorage, StorageError};

/// How many recent batches per producer are remembered for duplicate detection.
const BATCHES_PER_PRODUCER: usize = 5;
/// Bytes read per step while rebuilding state from a log.
const REBUILD_READ_BYTES: usize = 1 << 20;

/// First bytes of a producer state snapshot file.
const SNAPSHOT_MAGIC: &[u8; 4] = b"SLP1";

/// Where a partition's producer state snapshot lives: beside its segments.
pub fn snapshot_path(data_dir: &Path, topic: &str, partition: i32) -> PathBuf {
    data_dir
        .join(format!("{topic}-{partition}"))
        .join("producer-state.snapshot")
}

/// Writes snapshot bytes durably: temp file, fsync, rename. Blocking: run it off the shard.
pub fn write_snapshot_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("snapshot.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_data()?;
    }
    std::fs::rename(&tmp, path)
}

const OUT_OF_ORDER_SEQUENCE_NUMBER: ErrorCode = ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER;
const INVALID_PRODUCER_EPOCH: ErrorCode = ErrorCode::INVALID_PRODUCER_EPOCH;

#[derive(Clone, Copy, Debug)]
struct BatchMeta {
    first_seq: i32,
    last_seq: i32,
    first_offset: i64,
    last_offset: i64,
}

#[derive(Debug, Default)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<BatchMeta>,
}

/// What to do with a batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// New data: append it.
    Append,
    /// A retry of a batch already stored at these offsets.
    Duplicate {
        /// Offset of its first record.
        first_offset: i64,
        /// Offset of its last record.
        last_offset: i64,
    },
    /// Refuse with this Kafka error code.
    Reject(ErrorCode),
}

fn last_seq(h: &BatchHeader) -> i32 {
    h.base_sequence.wrapping_add(h.last_offset_delta) & i32::MAX
}

/// One partition's producers by id.
type Producers = HashMap<i64, ProducerEntry>;

/// The idempotent producer state of every partition of one shard.
#[derive(Default)]
pub struct ProducerStates {
    /// topic → partition → producer id → entry (keyed by topic first so a lookup by `&str`
    /// allocates nothing).
    parts: RefCell<HashMap<String, HashMap<i32, Producers>>>,
}

impl ProducerStates {
    /// Decides what to do with a batch for `(topic, partition)`.
    pub fn check(&self, topic: &str, partition: i32, h: &BatchHeader) -> Verdict {
        if h.producer_id < 0 {
            return Verdict::Append;
        }
        let parts = self.parts.borrow();
        let entry = parts
            .get(topic)
            .and_then(|t| t.get(&partition))
            .and_then(|p| p.get(&h.producer_id));
        let Some(entry) = entry else {
            return if h.base_sequence == 0 {
                Verdict::Append
            } else {
                Verdict::Reject(OUT_OF_ORDER_SEQUENCE_NUMBER)
            };
        };
        if h.producer_epoch < entry.epoch {
            return Verdict::Reject(INVALID_PRODUCER_EPOCH);
        }
        if h.producer_epoch > entry.epoch {
            return if h.base_sequence == 0 {
                Verdict::Append
            } else {
                Verdict::Reject(OUT_OF_ORDER_SEQUENCE_NUMBER)
            };
        }
        let last = last_seq(h);
        if let Some(b) = entry
            .batches
            .iter()
            .find(|b| b.first_seq == h.base_sequence && b.last_seq == last)
        {
            return Verdict::Duplicate {
                first_offset: b.first_offset,
                last_offset: b.last_offset,
            };
        }
        let expected = entry
            .batches
            .back()
            .map_or(0, |b| b.last_seq.wrapping_add(1) & i32::MAX);
        if h.base_sequence != expected {
            return Verdict::Reject(OUT_OF_ORDER_SEQUENCE_NUMBER);
        }
        Verdict::Append
    }

    /// Records a batch appended at `first_offset..=last_offset`.
    pub fn record(
        &self,
        topic: &str,
        partition: i32,
        h: &BatchHeader,
        first_offset: i64,
        last_offset: i64,
    ) {
        if h.producer_id < 0 {
            return;
        }
        let mut parts = self.parts.borrow_mut();
        if !parts.contains_key(topic) {
            parts.insert(topic.to_string(), HashMap::new());
        }
        let Some(by_partition) = parts.get_mut(topic) else {
            return;
        };
        let entry = by_partition
            .entry(partition)
            .or_default()
            .entry(h.producer_id)
            .or_default();
        if h.producer_epoch != entry.epoch {
            entry.epoch = h.producer_epoch;
            entry.batches.clear();
        }
        entry.batches.push_back(BatchMeta {
            first_seq: h.base_sequence,
            last_seq: last_seq(h),
            first_offset,
            last_offset,
        });
        while entry.batches.len() > BATCHES_PER_PRODUCER {
            entry.batches.pop_front();
        }
    }

    /// Forgets a deleted partition.
    pub fn forget(&self, topic: &str, partition: i32) {
        let mut parts = self.parts.borrow_mut();
        if let Some(t) = parts.get_mut(topic) {
            t.remove(&partition);
            if t.is_empty() {
                parts.remove(topic);
            }
        }
    }

    /// Partitions that have producer state, for snapshots.
    pub fn partitions(&self) -> Vec<(String, i32)> {
        self.parts
            .borrow()
            .iter()
            .flat_map(|(t, ps)| ps.keys().map(move |p| (t.clone(), *p)))
            .collect()
    }

    /// A partition's state as of `covered` (the next offset), as snapshot file bytes.
    pub fn encode_snapshot(&self, topic: &str, partition: i32, covered: i64) -> Vec<u8> {
        let mut body = BytesMut::new();
        body.put_i64(covered);
        {
            let parts = self.parts.borrow();
            let empty = HashMap::new();
            let producers = parts
                .get(topic)
                .and_then(|t| t.get(&partition))
                .unwrap_or(&empty);
            body.put_u32(producers.len() as u32);
            for (pid, e) in producers {
                body.put_i64(*pid);
                body.put_i16(e.epoch);
                body.put_u8(e.batches.len() as u8);
                for b in &e.batches {
                    body.put_i32(b.first_seq);
                    body.put_i32(b.last_seq);
                    body.put_i64(b.first_offset);
                    body.put_i64(b.last_offset);
                }
            }
        }
        let mut file = Vec::with_capacity(body.len() + 8);
        file.extend_from_slice(SNAPSHOT_MAGIC);
        file.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        file.extend_from_slice(&body);
        file
    }

    /// Loads a snapshot into the table; returns the offset it covers, or `None` when there is
    /// no usable snapshot (missing, damaged, or not matching the log `start..=end`).
    fn load_snapshot(
        &self,
        data_dir: &Path,
        topic: &str,
        partition: i32,
        start: i64,
        end: i64,
    ) -> Option<i64> {
        let bytes = std::fs::read(snapshot_path(data_dir, topic, partition)).ok()?;
        if bytes.len() < 8 || &bytes[..4] != SNAPSHOT_MAGIC {
            return None;
        }
        let crc = u32::from_be_bytes(bytes[4..8].try_into().ok()?);
        let mut body = &bytes[8..];
        if crc32c::crc32c(body) != crc || body.len() < 12 {
            tracing::warn!(
                topic,
                partition,
                "producer state snapshot damaged; rebuilding from the log"
            );
            return None;
        }
        let covered = body.get_i64();
        if covered < start || covered > end {
            return None; // the log was truncated below it, or retention passed it
        }
        let n = body.get_u32();
        let mut producers = HashMap::new();
        for _ in 0..n {
            if body.remaining() < 11 {
                return None;
            }
            let pid = body.get_i64();
            let epoch = body.get_i16();
            let count = body.get_u8() as usize;
            if body.remaining() < count * 24 {
                return None;
            }
            let mut batches = VecDeque::with_capacity(count);
            for _ in 0..count {
                batches.push_back(BatchMeta {
                    first_seq: body.get_i32(),
                    last_seq: body.get_i32(),
                    first_offset: body.get_i64(),
                    last_offset: body.get_i64(),
                });
            }
            producers.insert(pid, ProducerEntry { epoch, batches });
        }
        self.parts
            .borrow_mut()
            .entry(topic.to_string())
            .or_default()
            .insert(partition, producers);
        Some(covered)
    }

    /// Rebuilds a partition's state: its snapshot, then the headers of the batches after it
    /// (the whole log without a snapshot). Returns the number of idempotent batches scanned.
    pub async fn rebuild(
        &self,
        storage: &ShardStorage,
        data_dir: &Path,
        topic: &str,
        partition: i32,
    ) -> Result<usize, StorageError> {
        let (start, end) = storage.offsets(topic, partition)?;
        let mut next = self
            .load_snapshot(data_dir, topic, partition, start, end)
            .unwrap_or(start);
        let mut seen = 0;
        while next < end {
            let data = match storage
                .read(topic, partition, next, REBUILD_READ_BYTES)
                .await
            {
                Ok(d) => d,
                // Damaged data that recovery trusted (bit rot after a clean shutdown, a rolled
                // segment): reads refuse it, so the producer state ends there, and the broker
                // still starts and serves the valid prefix.
                Err(e @ StorageError::CorruptLog { .. }) => {
                    tracing::warn!(topic, partition, offset = next, error = %e, "producer state rebuilt only up to a corrupt batch");
                    break;
                }
                Err(e) => return Err(e),
            };
            if data.batches.is_empty() {
                break;
            }
            let mut joined = BytesMut::new();
            for b in &data.batches {
                joined.extend_from_slice(b);
            }
            let mut at = 0;
            let mut advanced = next;
            while joined.len() - at >= crate::storage::BATCH_HEADER_BYTES {
                let h = parse_header(&joined[at..])?;
                let size = h.size_bytes();
                if size < crate::storage::BATCH_HEADER_BYTES || at + size > joined.len() {
                    break;
                }
                if h.producer_id >= 0 {
                    self.record(topic, partition, &h, h.base_offset, h.last_offset());
                    seen += 1;
                }
                advanced = advanced.max(h.last_offset() + 1);
                at += size;
            }
            if advanced <= next {
                break;
            }
            next = advanced;
        }
        Ok(seen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pid: i64, epoch: i16, seq: i32, count: i32) -> BatchHeader {
        let mut b = crate::storage::build_test_batch(count, 4, 0).to_vec();
        b[43..51].copy_from_slice(&pid.to_be_bytes());
        b[51..53].copy_from_slice(&epoch.to_be_bytes());
        b[53..57].copy_from_slice(&seq.to_be_bytes());
        parse_header(&b).expect("header")
    }

    #[test]
    fn duplicates_gaps_and_epochs() {
        let s = ProducerStates::default();
        let h0 = header(7, 0, 0, 5);
        assert_eq!(s.check("t", 0, &h0), Verdict::Append);
        s.record("t", 0, &h0, 100, 104);
        assert_eq!(
            s.check("t", 0, &h0),
            Verdict::Duplicate {
                first_offset: 100,
                last_offset: 104
            }
        );
        let gap = header(7, 0, 6, 1);
        assert_eq!(
            s.check("t", 0, &gap),
            Verdict::Reject(OUT_OF_ORDER_SEQUENCE_NUMBER)
        );
        let next = header(7, 0, 5, 2);
        assert_eq!(s.check("t", 0, &next), Verdict::Append);
        s.record("t", 0, &next, 105, 106);
        let old_epoch = header(7, -1, 7, 1);
        assert_eq!(
            s.check("t", 0, &old_epoch),
            Verdict::Reject(INVALID_PRODUCER_EPOCH)
        );
        let new_epoch = header(7, 1, 0, 1);
        assert_eq!(s.check("t", 0, &new_epoch), Verdict::Append);
        let new_epoch_gap = header(7, 1, 3, 1);
        assert_eq!(
            s.check("t", 0, &new_epoch_gap),
            Verdict::Reject(OUT_OF_ORDER_SEQUENCE_NUMBER)
        );
        // Another partition knows nothing of producer 7.
        assert_eq!(
            s.check("t", 1, &header(7, 0, 9, 1)),
            Verdict::Reject(OUT_OF_ORDER_SEQUENCE_NUMBER)
        );
        // Not idempotent: always appended.
        assert_eq!(s.check("t", 0, &header(-1, -1, -1, 3)), Verdict::Append);
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let s = ProducerStates::default();
        for i in 0..7 {
            let h = header(1, 0, i, 1);
            assert_eq!(s.check("t", 0, &h), Verdict::Append);
            s.record("t", 0, &h, i as i64, i as i64);
        }
        assert!(matches!(
            s.check("t", 0, &header(1, 0, 6, 1)),
            Verdict::Duplicate { .. }
        ));
        assert!(matches!(
            s.check("t", 0, &header(1, 0, 2, 1)),
            Verdict::Duplicate { .. }
        ));
        assert_eq!(
            s.check("t", 0, &header(1, 0, 1, 1)),
            Verdict::Reject(OUT_OF_ORDER_SEQUENCE_NUMBER)
        );
    }
}
