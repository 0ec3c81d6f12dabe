//! Append: validate the batch, check it against the idempotent producer state, roll the
//! active segment if due, assign offsets and put the batch in the cache.

use bytes::Bytes;

use super::cache::CachedBatch;
use super::{LogState, Partition};
use crate::storage::batch::{
    control_type, patched_header, validate_batch, BatchHeader, BATCH_HEADER_BYTES,
};
use crate::storage::producers::Verdict;
use crate::storage::records::check_keys;
use crate::storage::segment::LogSegment;
use crate::storage::{AppendOrigin, LogAppendInfo, StorageError, TimestampType};

/// What an append did.
pub(crate) enum AppendOutcome {
    /// The batch was appended; the cache now holds it at `info.first_offset`.
    Appended(LogAppendInfo),
    /// The batch retried one already in the log: nothing was appended; `info` carries the
    /// original offsets (timestamps unknown: -1).
    Duplicate(LogAppendInfo),
}

impl Partition {
    /// Validates `batch` (exactly one v2 batch), checks it against the idempotent producer
    /// state (after validation, as Kafka: a corrupt retry is refused, never answered as a
    /// duplicate), and appends it in memory. Nothing changes on error. Wakes fetch waiters.
    /// A control batch (transaction marker) is accepted only from a `coordinator` (the
    /// broker's own writes; Kafka refuses control records from clients) and needs a control
    /// key; a coordinator's batches are checked for their producer epoch only.
    pub(crate) fn append(
        &self,
        batch: Bytes,
        now: i64,
        origin: AppendOrigin,
    ) -> Result<AppendOutcome, StorageError> {
        let coordinator = origin != AppendOrigin::Client;
        let strict_marker = origin == AppendOrigin::CoordinatorTransactionV2;
        let outcome = {
            let mut st = self.state.borrow_mut();
            if st.deleted {
                return Err(StorageError::UnknownPartition);
            }
            let h = validate_batch(&batch, st.config.max_message_bytes)?;
            let control = if h.is_control() {
                if !coordinator {
                    return Err(StorageError::InvalidRecord(
                        "clients may not write control batches",
                    ));
                }
                if h.producer_id < 0 || !h.is_transactional() {
                    return Err(StorageError::InvalidRecord(
                        "a transaction marker needs a producer id and the transactional bit",
                    ));
                }
                Some(control_type(&batch[BATCH_HEADER_BYTES..]).ok_or(
                    StorageError::InvalidRecord("control batch without a control key"),
                )?)
            } else {
                None
            };
            if control.is_none() && st.config.cleanup_compact {
                check_keys(&batch, &h).map_err(StorageError::InvalidRecord)?;
            }
            match st.producers.check(&h, coordinator, strict_marker)? {
                Verdict::Duplicate {
                    first_offset,
                    last_offset,
                } => {
                    return Ok(AppendOutcome::Duplicate(LogAppendInfo {
                        first_offset,
                        last_offset,
                        max_timestamp: -1,
                        log_append_time: -1,
                        log_start_offset: st.log_start_offset,
                        record_count: (last_offset - first_offset + 1).clamp(0, u32::MAX as i64)
                            as u32,
                        duplicate: true,
                    }))
                }
                Verdict::Append => {}
            }
            st.roll_if_due(
                batch.len() as u64,
                h.last_offset_delta as i64 + 1,
                now,
                self,
            );
            let info = st.append_validated(batch, &h, now);
            st.producers
                .record(&h, info.first_offset, info.last_offset, control);
            AppendOutcome::Appended(info)
        };
        self.appended.wake_all();
        Ok(outcome)
    }
}

impl LogState {
    /// Rolls a new active segment at the next offset when the batch (`size` bytes, `count`
    /// records) would not fit the active one by `segment.bytes`, `segment.ms`, or the i32
    /// ranges of relative offsets and positions.
    pub(super) fn roll_if_due(&mut self, size: u64, count: i64, now: i64, log: &Partition) {
        let next = self.next_offset;
        let cfg = &self.config;
        let active = self.active();
        let needs_roll = active.size > 0
            && (active.size + size > cfg.segment_bytes
                || now.saturating_sub(active.created_ms) as u64 >= cfg.segment_ms
                || next + count - active.base_offset > i32::MAX as i64
                || active.size + size > i32::MAX as u64);
        if needs_roll {
            self.active_mut().rolled = true;
            self.segments.insert(next, LogSegment::new(next, now));
            tracing::debug!(topic = %log.topic, partition = log.partition, base_offset = next, "rolled segment");
        }
    }

    /// Assigns offsets to a validated batch (header `h`) and puts it in the active segment's
    /// accounting and the cache: the header patched, the records slice kept as it is.
    fn append_validated(&mut self, batch: Bytes, h: &BatchHeader, now: i64) -> LogAppendInfo {
        let base = self.next_offset;
        let append_time =
            (self.config.timestamp_type == TimestampType::LogAppendTime).then_some(now);
        let (header_bytes, header) =
            patched_header(&batch, h, base, self.leader_epoch, append_time);
        let mut info = self.push_batch(header_bytes, batch, header, now);
        info.log_append_time = append_time.unwrap_or(-1);
        info
    }

    /// Puts a batch whose header is final (`header`, its bytes `header_bytes`; the records
    /// are `batch` past the header) at the log end: the active segment's accounting, the
    /// leader-epoch cache and the batch cache. The batch must start at the log end.
    pub(super) fn push_batch(
        &mut self,
        header_bytes: Bytes,
        batch: Bytes,
        header: BatchHeader,
        now: i64,
    ) -> LogAppendInfo {
        let size = batch.len() as u64;
        let (base, last) = (header.base_offset, header.last_offset());
        assert_eq!(base, self.next_offset, "a batch must start at the log end");
        let count = last - base + 1;
        if self.epochs.assign(header.partition_leader_epoch, base) {
            self.epochs_version += 1;
        }
        let body = batch.slice(BATCH_HEADER_BYTES..);
        let index_interval_bytes = self.config.index_interval_bytes;
        let seg = self.active_mut();
        let pos = seg.size;
        seg.record_batch(
            base,
            last,
            header.max_timestamp,
            pos,
            size,
            index_interval_bytes,
        );
        self.next_offset = last + 1;
        self.messages_since_sync += count as u64;
        self.oldest_unsynced_ms.get_or_insert(now);
        self.cache.insert(
            base,
            CachedBatch {
                header_bytes,
                body,
                header,
            },
        );
        LogAppendInfo {
            first_offset: base,
            last_offset: last,
            max_timestamp: header.max_timestamp,
            log_append_time: -1,
            log_start_offset: self.log_start_offset,
            record_count: header.records_count.max(0) as u32,
            duplicate: false,
        }
    }
}
