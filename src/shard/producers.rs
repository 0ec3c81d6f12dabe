//! Idempotent producer state: per partition, per producer id, the epoch and the sequence
//! ranges of the last five batches (as Kafka keeps them).
//!
//! Checked before every append of a batch that carries a producer id: a retried duplicate is
//! answered with its original offsets and not written again, a gap in sequence numbers gets
//! OUT_OF_ORDER_SEQUENCE_NUMBER, an old epoch INVALID_PRODUCER_EPOCH. The check and the append
//! run without an `.await` between them, so two requests cannot interleave. The state is
//! rebuilt when a partition opens by scanning the headers of its batches.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};

use bytes::BytesMut;

use crate::storage::{parse_header, BatchHeader, ShardStorage, StorageError};

/// How many recent batches per producer are remembered for duplicate detection.
const BATCHES_PER_PRODUCER: usize = 5;
/// Bytes read per step while rebuilding state from a log.
const REBUILD_READ_BYTES: usize = 1 << 20;

/// OUT_OF_ORDER_SEQUENCE_NUMBER.
pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
/// INVALID_PRODUCER_EPOCH.
pub const INVALID_PRODUCER_EPOCH: i16 = 47;

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
    Reject(i16),
}

fn last_seq(h: &BatchHeader) -> i32 {
    h.base_sequence.wrapping_add(h.last_offset_delta) & i32::MAX
}

/// The idempotent producer state of every partition of one shard.
#[derive(Default)]
pub struct ProducerStates {
    parts: RefCell<HashMap<(String, i32), HashMap<i64, ProducerEntry>>>,
}

impl ProducerStates {
    /// Decides what to do with a batch for `(topic, partition)`.
    pub fn check(&self, topic: &str, partition: i32, h: &BatchHeader) -> Verdict {
        if h.producer_id < 0 {
            return Verdict::Append;
        }
        let parts = self.parts.borrow();
        let entry = parts
            .get(&(topic.to_string(), partition))
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
        let entry = parts
            .entry((topic.to_string(), partition))
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
        self.parts
            .borrow_mut()
            .remove(&(topic.to_string(), partition));
    }

    /// Rebuilds a partition's state from the headers of the batches in its log.
    pub async fn rebuild(
        &self,
        storage: &ShardStorage,
        topic: &str,
        partition: i32,
    ) -> Result<usize, StorageError> {
        let (start, end) = storage.offsets(topic, partition)?;
        let mut next = start;
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
