//! Idempotent producer state of one partition: per producer id, the epoch and the sequence
//! ranges of the last five batches (as Kafka keeps them), and its snapshot file format.
//!
//! Checked inside [`super::ShardStorage::append`] after the batch is validated and before it
//! is appended, with no `.await` between: a retried duplicate is answered with its original
//! offsets and not written again, a gap in sequence numbers gets OUT_OF_ORDER_SEQUENCE_NUMBER,
//! an old epoch INVALID_PRODUCER_EPOCH.
//!
//! The state is snapshotted beside the segments (`<topic>-<partition>/producer-state.snapshot`:
//! the state as of an offset, CRC-checked) through [`crate::io`] at clean shutdown and when the
//! broker asks ([`super::ShardStorage::snapshot_producers`]); when a partition opens it loads the
//! snapshot and scans only the batch headers after its offset (the whole log without a usable
//! snapshot).

use std::collections::{HashMap, VecDeque};

use bytes::{Buf, BufMut, BytesMut};

use super::batch::BatchHeader;
use super::StorageError;

/// How many recent batches per producer are remembered for duplicate detection.
const BATCHES_PER_PRODUCER: usize = 5;
/// First bytes of a producer state snapshot file.
const SNAPSHOT_MAGIC: &[u8; 4] = b"SLP1";
/// Name of the producer state snapshot inside a partition directory.
pub(crate) const SNAPSHOT_FILE: &str = "producer-state.snapshot";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct BatchMeta {
    first_seq: i32,
    last_seq: i32,
    first_offset: i64,
    last_offset: i64,
}

#[derive(Debug, Default, PartialEq, Eq)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<BatchMeta>,
}

/// What to do with a validated batch.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// New data (or no producer id): append it.
    Append,
    /// A retry of a batch already stored at these offsets: append nothing.
    Duplicate {
        /// Offset of its first record.
        first_offset: i64,
        /// Offset of its last record.
        last_offset: i64,
    },
}

fn last_seq(h: &BatchHeader) -> i32 {
    h.base_sequence.wrapping_add(h.last_offset_delta) & i32::MAX
}

/// One partition's idempotent producers by id.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ProducerTable {
    producers: HashMap<i64, ProducerEntry>,
}

impl ProducerTable {
    /// Whether no producer has state here.
    pub(crate) fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Decides what to do with a batch whose header passed validation; a sequence or epoch
    /// the table refuses is the error to answer with.
    pub(crate) fn check(&self, h: &BatchHeader) -> Result<Verdict, StorageError> {
        if h.producer_id < 0 {
            return Ok(Verdict::Append);
        }
        let Some(entry) = self.producers.get(&h.producer_id) else {
            return if h.base_sequence == 0 {
                Ok(Verdict::Append)
            } else {
                Err(StorageError::OutOfOrderSequence)
            };
        };
        if h.producer_epoch < entry.epoch {
            return Err(StorageError::InvalidProducerEpoch);
        }
        if h.producer_epoch > entry.epoch {
            return if h.base_sequence == 0 {
                Ok(Verdict::Append)
            } else {
                Err(StorageError::OutOfOrderSequence)
            };
        }
        let last = last_seq(h);
        if let Some(b) = entry
            .batches
            .iter()
            .find(|b| b.first_seq == h.base_sequence && b.last_seq == last)
        {
            return Ok(Verdict::Duplicate {
                first_offset: b.first_offset,
                last_offset: b.last_offset,
            });
        }
        let expected = entry
            .batches
            .back()
            .map_or(0, |b| b.last_seq.wrapping_add(1) & i32::MAX);
        if h.base_sequence != expected {
            return Err(StorageError::OutOfOrderSequence);
        }
        Ok(Verdict::Append)
    }

    /// Records a batch appended at `first_offset..=last_offset` (no-op without producer id).
    pub(crate) fn record(&mut self, h: &BatchHeader, first_offset: i64, last_offset: i64) {
        if h.producer_id < 0 {
            return;
        }
        let entry = self.producers.entry(h.producer_id).or_default();
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

    /// The table as of `covered` (the next offset), as snapshot file bytes: magic, CRC32C of
    /// the body, body.
    pub(crate) fn encode_snapshot(&self, covered: i64) -> Vec<u8> {
        let mut body = BytesMut::new();
        body.put_i64(covered);
        body.put_u32(self.producers.len() as u32);
        for (pid, e) in &self.producers {
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
        let mut file = Vec::with_capacity(body.len() + 8);
        file.extend_from_slice(SNAPSHOT_MAGIC);
        file.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        file.extend_from_slice(&body);
        file
    }

    /// Decodes snapshot file bytes into `(covered offset, table)`; `None` when they are not a
    /// whole, undamaged snapshot.
    pub(crate) fn decode_snapshot(bytes: &[u8]) -> Option<(i64, ProducerTable)> {
        if bytes.len() < 8 || &bytes[..4] != SNAPSHOT_MAGIC {
            return None;
        }
        let crc = u32::from_be_bytes(bytes[4..8].try_into().ok()?);
        let mut body = &bytes[8..];
        if crc32c::crc32c(body) != crc || body.len() < 12 {
            return None;
        }
        let covered = body.get_i64();
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
        Some((covered, ProducerTable { producers }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{build_test_batch, parse_header};

    fn header(pid: i64, epoch: i16, seq: i32, count: i32) -> BatchHeader {
        let mut b = build_test_batch(count, 4, 0).to_vec();
        b[43..51].copy_from_slice(&pid.to_be_bytes());
        b[51..53].copy_from_slice(&epoch.to_be_bytes());
        b[53..57].copy_from_slice(&seq.to_be_bytes());
        parse_header(&b).expect("header")
    }

    fn refused(r: Result<Verdict, StorageError>) -> crate::error_code::ErrorCode {
        match r {
            Err(e) => e.kafka_error_code(),
            Ok(v) => panic!("accepted: {v:?}"),
        }
    }

    #[test]
    fn duplicates_gaps_and_epochs() {
        use crate::error_code::ErrorCode;
        let mut s = ProducerTable::default();
        let h0 = header(7, 0, 0, 5);
        assert_eq!(s.check(&h0).unwrap(), Verdict::Append);
        s.record(&h0, 100, 104);
        assert_eq!(
            s.check(&h0).unwrap(),
            Verdict::Duplicate {
                first_offset: 100,
                last_offset: 104
            }
        );
        let gap = header(7, 0, 6, 1);
        assert_eq!(
            refused(s.check(&gap)),
            ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER
        );
        let next = header(7, 0, 5, 2);
        assert_eq!(s.check(&next).unwrap(), Verdict::Append);
        s.record(&next, 105, 106);
        let old_epoch = header(7, -1, 7, 1);
        assert_eq!(
            refused(s.check(&old_epoch)),
            ErrorCode::INVALID_PRODUCER_EPOCH
        );
        let new_epoch = header(7, 1, 0, 1);
        assert_eq!(s.check(&new_epoch).unwrap(), Verdict::Append);
        let new_epoch_gap = header(7, 1, 3, 1);
        assert_eq!(
            refused(s.check(&new_epoch_gap)),
            ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER
        );
        // Another partition (another table) knows nothing of producer 7.
        assert_eq!(
            refused(ProducerTable::default().check(&header(7, 0, 9, 1))),
            ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER
        );
        // Not idempotent: always appended.
        assert_eq!(s.check(&header(-1, -1, -1, 3)).unwrap(), Verdict::Append);
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        use crate::error_code::ErrorCode;
        let mut s = ProducerTable::default();
        for i in 0..7 {
            let h = header(1, 0, i, 1);
            assert_eq!(s.check(&h).unwrap(), Verdict::Append);
            s.record(&h, i as i64, i as i64);
        }
        assert!(matches!(
            s.check(&header(1, 0, 6, 1)),
            Ok(Verdict::Duplicate { .. })
        ));
        assert!(matches!(
            s.check(&header(1, 0, 2, 1)),
            Ok(Verdict::Duplicate { .. })
        ));
        assert_eq!(
            refused(s.check(&header(1, 0, 1, 1))),
            ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER
        );
    }

    #[test]
    fn snapshot_round_trips_and_damage_is_refused() {
        let mut s = ProducerTable::default();
        for pid in 0..3 {
            for i in 0..7 {
                let h = header(pid, 2, i * 2, 2);
                s.record(&h, i as i64 * 2, i as i64 * 2 + 1);
            }
        }
        let bytes = s.encode_snapshot(77);
        let (covered, back) = ProducerTable::decode_snapshot(&bytes).expect("decodes");
        assert_eq!(covered, 77);
        assert_eq!(back, s);
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x10;
            assert!(
                ProducerTable::decode_snapshot(&damaged).is_none(),
                "byte {i}"
            );
        }
        assert!(ProducerTable::decode_snapshot(&bytes[..bytes.len() - 1]).is_none());
    }
}
