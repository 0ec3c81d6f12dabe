//! Idempotent and transactional producer state of one partition: per producer id, the epoch,
//! the sequence ranges of the last five batches (as Kafka keeps them) and the first offset of
//! its ongoing transaction; the partition's aborted transactions (what Kafka keeps in its
//! `.txnindex` files: producer id, first offset, marker offset, last stable offset); and the
//! snapshot file format of both.
//!
//! The last stable offset (LSO) is derived, never stored: the smallest first offset of an
//! ongoing transaction, else the high watermark. A transactional data batch opens its
//! producer's transaction here (its first offset); a marker (control batch, appended only by
//! the broker) closes it, and an ABORT marker records the aborted range.
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

use super::batch::{BatchHeader, CONTROL_ABORT};
use super::StorageError;

/// How many recent batches per producer are remembered for duplicate detection.
const BATCHES_PER_PRODUCER: usize = 5;
/// First bytes of a producer state snapshot file (v2: with transactions).
const SNAPSHOT_MAGIC: &[u8; 4] = b"SLP2";
/// First bytes of a v1 snapshot (before transactions), still read.
const SNAPSHOT_MAGIC_V1: &[u8; 4] = b"SLP1";
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
    /// First offset of the producer's ongoing transaction on this partition.
    txn_first_offset: Option<i64>,
}

/// A transaction aborted on this partition (one entry of Kafka's `.txnindex`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbortedTxn {
    /// The producer whose records in `first_offset..last_offset` are aborted.
    pub producer_id: i64,
    /// Offset of the transaction's first record on this partition.
    pub first_offset: i64,
    /// Offset of the ABORT marker.
    pub last_offset: i64,
    /// The last stable offset once this transaction was closed.
    pub last_stable_offset: i64,
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

/// One partition's idempotent producers by id, and its aborted transactions.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ProducerTable {
    producers: HashMap<i64, ProducerEntry>,
    /// Aborted transactions by marker offset (ascending).
    aborted: Vec<AbortedTxn>,
    /// Producers with an ongoing transaction here (those with `txn_first_offset`): with none,
    /// the LSO is the high watermark without a look at the producers (the Fetch path).
    open_txns: usize,
}

impl ProducerTable {
    /// Whether no producer has state here.
    pub(crate) fn is_empty(&self) -> bool {
        self.producers.is_empty() && self.aborted.is_empty()
    }

    /// The last stable offset given the high watermark `next_offset`: the first offset of the
    /// oldest ongoing transaction, else `next_offset`. O(1) without an ongoing transaction,
    /// else O(producers).
    pub(crate) fn last_stable_offset(&self, next_offset: i64) -> i64 {
        if self.open_txns == 0 {
            return next_offset;
        }
        let lso = self
            .producers
            .values()
            .filter_map(|e| e.txn_first_offset)
            .fold(next_offset, i64::min);
        debug_assert!(lso <= next_offset);
        debug_assert_eq!(
            self.open_txns,
            self.producers
                .values()
                .filter(|e| e.txn_first_offset.is_some())
                .count()
        );
        lso
    }

    /// The aborted transactions overlapping `[from, to)`, as `(producer id, first offset)`,
    /// by marker offset (Kafka's `collectAbortedTxns`).
    pub(crate) fn aborted_between(&self, from: i64, to: i64) -> Vec<(i64, i64)> {
        let start = self.aborted.partition_point(|a| a.last_offset < from);
        self.aborted[start..]
            .iter()
            .filter(|a| a.first_offset < to)
            .map(|a| (a.producer_id, a.first_offset))
            .collect()
    }

    /// The aborted transactions overlapping `[from, to)`, whole (the log cleaner drops their
    /// records).
    pub(crate) fn aborted_txns_between(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        let start = self.aborted.partition_point(|a| a.last_offset < from);
        self.aborted[start..]
            .iter()
            .filter(|a| a.first_offset < to)
            .copied()
            .collect()
    }

    /// Each producer's last batch here: producer id → its first offset. The log cleaner keeps
    /// that batch (empty if need be), so the producer state can be rebuilt from the log.
    pub(crate) fn last_batch_offsets(&self) -> HashMap<i64, i64> {
        self.producers
            .iter()
            .filter_map(|(&pid, e)| e.batches.back().map(|b| (pid, b.first_offset)))
            .collect()
    }

    /// Forgets aborted transactions wholly below `log_start_offset` (retention removed them).
    pub(crate) fn drop_aborted_below(&mut self, log_start_offset: i64) {
        self.aborted.retain(|a| a.last_offset >= log_start_offset);
    }

    /// Every producer with state here, by id (DescribeProducers).
    pub(crate) fn describe(&self) -> Vec<super::ProducerDescription> {
        let mut v: Vec<_> = self
            .producers
            .iter()
            .map(|(pid, e)| super::ProducerDescription {
                producer_id: *pid,
                producer_epoch: e.epoch,
                last_sequence: e.batches.back().map_or(-1, |b| b.last_seq),
                current_txn_start_offset: e.txn_first_offset.unwrap_or(-1),
            })
            .collect();
        v.sort_unstable_by_key(|d| d.producer_id);
        v
    }

    /// Decides what to do with a batch whose header passed validation; a sequence or epoch
    /// the table refuses is the error to answer with. A marker (control batch) is checked
    /// for its epoch only: an older epoch than the producer's is refused
    /// (INVALID_PRODUCER_EPOCH), so a delayed marker of a fenced epoch never closes a later
    /// transaction.
    /// A coordinator's own write (`coordinator`: transactional offset commits, markers) is
    /// checked for its epoch only, as Kafka's `AppendOrigin.COORDINATOR`; a `strict_marker`
    /// (transactions v2) must carry a newer epoch than the producer's.
    pub(crate) fn check(
        &self,
        h: &BatchHeader,
        coordinator: bool,
        strict_marker: bool,
    ) -> Result<Verdict, StorageError> {
        if h.producer_id < 0 {
            return Ok(Verdict::Append);
        }
        if h.is_control() || coordinator {
            return match self.producers.get(&h.producer_id) {
                Some(e) if h.producer_epoch < e.epoch => Err(StorageError::InvalidProducerEpoch),
                // Transactions v2: the coordinator bumps the epoch at every end, so a marker
                // of this epoch belongs to an earlier transaction (delayed or repeated).
                Some(e) if h.is_control() && strict_marker && h.producer_epoch <= e.epoch => {
                    Err(StorageError::InvalidProducerEpoch)
                }
                _ => Ok(Verdict::Append),
            };
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

    /// Records a batch appended at `first_offset..=last_offset` (no-op without producer id);
    /// `control` is a marker's control record type (ABORT 0, COMMIT 1), `None` for data.
    pub(crate) fn record(
        &mut self,
        h: &BatchHeader,
        first_offset: i64,
        last_offset: i64,
        control: Option<i16>,
    ) {
        if h.producer_id < 0 {
            return;
        }
        if h.is_control() {
            let entry = self.producers.entry(h.producer_id).or_default();
            if h.producer_epoch > entry.epoch {
                entry.epoch = h.producer_epoch;
                entry.batches.clear();
            }
            if let Some(first) = entry.txn_first_offset.take() {
                self.open_txns -= 1;
                if control == Some(CONTROL_ABORT) {
                    let lso = self.last_stable_offset(last_offset + 1);
                    debug_assert!(self
                        .aborted
                        .last()
                        .is_none_or(|a| a.last_offset < first_offset));
                    self.aborted.push(AbortedTxn {
                        producer_id: h.producer_id,
                        first_offset: first,
                        last_offset: first_offset,
                        last_stable_offset: lso,
                    });
                }
            }
            return;
        }
        let entry = self.producers.entry(h.producer_id).or_default();
        if h.producer_epoch != entry.epoch {
            entry.epoch = h.producer_epoch;
            entry.batches.clear();
        }
        if h.is_transactional() && entry.txn_first_offset.is_none() {
            entry.txn_first_offset = Some(first_offset);
            self.open_txns += 1;
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
            body.put_i64(e.txn_first_offset.unwrap_or(-1));
            body.put_u8(e.batches.len() as u8);
            for b in &e.batches {
                body.put_i32(b.first_seq);
                body.put_i32(b.last_seq);
                body.put_i64(b.first_offset);
                body.put_i64(b.last_offset);
            }
        }
        body.put_u32(self.aborted.len() as u32);
        for a in &self.aborted {
            body.put_i64(a.producer_id);
            body.put_i64(a.first_offset);
            body.put_i64(a.last_offset);
            body.put_i64(a.last_stable_offset);
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
        if bytes.len() < 8 {
            return None;
        }
        let v2 = match &bytes[..4] {
            m if m == SNAPSHOT_MAGIC => true,
            m if m == SNAPSHOT_MAGIC_V1 => false,
            _ => return None,
        };
        let crc = u32::from_be_bytes(bytes[4..8].try_into().ok()?);
        let mut body = &bytes[8..];
        if crc32c::crc32c(body) != crc || body.len() < 12 {
            return None;
        }
        let covered = body.get_i64();
        let n = body.get_u32();
        let mut producers = HashMap::new();
        for _ in 0..n {
            if body.remaining() < if v2 { 19 } else { 11 } {
                return None;
            }
            let pid = body.get_i64();
            let epoch = body.get_i16();
            let txn_first_offset = if v2 {
                Some(body.get_i64()).filter(|&o| o >= 0)
            } else {
                None
            };
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
            producers.insert(
                pid,
                ProducerEntry {
                    epoch,
                    batches,
                    txn_first_offset,
                },
            );
        }
        let mut aborted = Vec::new();
        if v2 {
            if body.remaining() < 4 {
                return None;
            }
            let n = body.get_u32() as usize;
            if body.remaining() != n.checked_mul(32)? {
                return None;
            }
            for _ in 0..n {
                aborted.push(AbortedTxn {
                    producer_id: body.get_i64(),
                    first_offset: body.get_i64(),
                    last_offset: body.get_i64(),
                    last_stable_offset: body.get_i64(),
                });
            }
        }
        let open_txns = producers
            .values()
            .filter(|e| e.txn_first_offset.is_some())
            .count();
        Some((
            covered,
            ProducerTable {
                producers,
                aborted,
                open_txns,
            },
        ))
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

    fn with_attributes(mut h: BatchHeader, attributes: i16) -> BatchHeader {
        h.attributes = attributes;
        h
    }

    #[test]
    fn transactions_hold_the_lso_and_aborts_are_indexed() {
        use crate::error_code::ErrorCode;
        use crate::storage::batch::{ATTR_CONTROL, ATTR_TRANSACTIONAL, CONTROL_COMMIT};
        let txn = |pid, epoch, seq, count| {
            with_attributes(header(pid, epoch, seq, count), ATTR_TRANSACTIONAL)
        };
        let marker = |pid, epoch| {
            let mut h =
                with_attributes(header(pid, epoch, -1, 1), ATTR_TRANSACTIONAL | ATTR_CONTROL);
            h.base_sequence = -1;
            h
        };
        let mut s = ProducerTable::default();
        assert_eq!(s.last_stable_offset(10), 10);
        // Producer 1 opens a transaction at 10, producer 2 at 12.
        s.record(&txn(1, 0, 0, 2), 10, 11, None);
        s.record(&txn(2, 0, 0, 1), 12, 12, None);
        s.record(&header(3, 0, 0, 1), 13, 13, None);
        assert_eq!(s.last_stable_offset(14), 10);
        let ongoing: Vec<(i64, i64)> = s
            .describe()
            .iter()
            .map(|d| (d.producer_id, d.current_txn_start_offset))
            .collect();
        assert_eq!(ongoing, vec![(1, 10), (2, 12), (3, -1)]);
        // Producer 1 commits at 14: the LSO moves to producer 2's first offset.
        assert_eq!(s.check_client(&marker(1, 0)).unwrap(), Verdict::Append);
        s.record(&marker(1, 0), 14, 14, Some(CONTROL_COMMIT));
        assert_eq!(s.last_stable_offset(15), 12);
        // Producer 2 aborts at 15 with a bumped epoch (TV2, or a fence).
        s.record(&marker(2, 1), 15, 15, Some(CONTROL_ABORT));
        assert_eq!(s.last_stable_offset(16), 16);
        assert_eq!(s.aborted_between(0, 16), vec![(2, 12)]);
        assert_eq!(s.aborted_between(16, 20), vec![]);
        assert_eq!(s.aborted_between(0, 12), vec![]);
        // A delayed marker of producer 2's old epoch is refused; its old-epoch data too.
        assert_eq!(
            refused(s.check_client(&marker(2, 0))),
            ErrorCode::INVALID_PRODUCER_EPOCH
        );
        assert_eq!(
            refused(s.check_client(&txn(2, 0, 1, 1))),
            ErrorCode::INVALID_PRODUCER_EPOCH
        );
        // A snapshot keeps the ongoing transaction and the aborted one.
        s.record(&txn(4, 0, 0, 1), 16, 16, None);
        let (_, back) = ProducerTable::decode_snapshot(&s.encode_snapshot(17)).expect("decodes");
        assert_eq!(back, s);
        assert_eq!(back.last_stable_offset(17), 16);
        s.drop_aborted_below(16);
        assert_eq!(s.aborted_between(0, 17), vec![]);

        // Transactions v2: the coordinator's marker must carry a newer epoch than producer
        // 5's transaction (epoch 3); a delayed marker of epoch 3 (an earlier transaction's)
        // is refused and leaves it open. The same marker through WriteTxnMarkers (not
        // strict, as Kafka's admin abort) would close it.
        s.record(&txn(5, 3, 0, 2), 17, 18, None);
        assert_eq!(
            refused(s.check(&marker(5, 3), true, true)),
            ErrorCode::INVALID_PRODUCER_EPOCH
        );
        assert_eq!(
            s.check(&marker(5, 3), true, false).unwrap(),
            Verdict::Append
        );
        assert_eq!(s.last_stable_offset(19), 16);
        assert_eq!(s.check(&marker(5, 4), true, true).unwrap(), Verdict::Append);
        s.record(&marker(5, 4), 19, 19, Some(CONTROL_COMMIT));
        s.record(&marker(4, 0), 20, 20, Some(CONTROL_COMMIT));
        assert_eq!(s.last_stable_offset(21), 21);
    }

    impl ProducerTable {
        fn check_client(&self, h: &BatchHeader) -> Result<Verdict, StorageError> {
            self.check(h, false, false)
        }
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
        assert_eq!(s.check_client(&h0).unwrap(), Verdict::Append);
        s.record(&h0, 100, 104, None);
        assert_eq!(
            s.check_client(&h0).unwrap(),
            Verdict::Duplicate {
                first_offset: 100,
                last_offset: 104
            }
        );
        let gap = header(7, 0, 6, 1);
        assert_eq!(
            refused(s.check_client(&gap)),
            ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER
        );
        let next = header(7, 0, 5, 2);
        assert_eq!(s.check_client(&next).unwrap(), Verdict::Append);
        s.record(&next, 105, 106, None);
        let old_epoch = header(7, -1, 7, 1);
        assert_eq!(
            refused(s.check_client(&old_epoch)),
            ErrorCode::INVALID_PRODUCER_EPOCH
        );
        let new_epoch = header(7, 1, 0, 1);
        assert_eq!(s.check_client(&new_epoch).unwrap(), Verdict::Append);
        let new_epoch_gap = header(7, 1, 3, 1);
        assert_eq!(
            refused(s.check_client(&new_epoch_gap)),
            ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER
        );
        // Another partition (another table) knows nothing of producer 7.
        assert_eq!(
            refused(ProducerTable::default().check_client(&header(7, 0, 9, 1))),
            ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER
        );
        // Not idempotent: always appended.
        assert_eq!(
            s.check_client(&header(-1, -1, -1, 3)).unwrap(),
            Verdict::Append
        );
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        use crate::error_code::ErrorCode;
        let mut s = ProducerTable::default();
        for i in 0..7 {
            let h = header(1, 0, i, 1);
            assert_eq!(s.check_client(&h).unwrap(), Verdict::Append);
            s.record(&h, i as i64, i as i64, None);
        }
        assert!(matches!(
            s.check_client(&header(1, 0, 6, 1)),
            Ok(Verdict::Duplicate { .. })
        ));
        assert!(matches!(
            s.check_client(&header(1, 0, 2, 1)),
            Ok(Verdict::Duplicate { .. })
        ));
        assert_eq!(
            refused(s.check_client(&header(1, 0, 1, 1))),
            ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER
        );
    }

    #[test]
    fn snapshot_round_trips_and_damage_is_refused() {
        let mut s = ProducerTable::default();
        for pid in 0..3 {
            for i in 0..7 {
                let h = header(pid, 2, i * 2, 2);
                s.record(&h, i as i64 * 2, i as i64 * 2 + 1, None);
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
