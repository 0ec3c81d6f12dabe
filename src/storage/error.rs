//! The storage error type and its single mapping to Kafka error codes.

use std::path::PathBuf;

use crate::error_code::ErrorCode;

/// Every error the storage engine reports. [`StorageError::kafka_error_code`] is the only place
/// where storage errors become Kafka error codes.
#[derive(thiserror::Error, Debug)]
pub enum StorageError {
    /// The batch bytes are malformed (length, magic, CRC): the producer sent garbage.
    #[error("corrupt message: {0}")]
    CorruptMessage(&'static str),
    /// The batch is well-formed but breaks a record-level rule (e.g. record count).
    #[error("invalid record: {0}")]
    InvalidRecord(&'static str),
    /// The batch is larger than `max.message.bytes`.
    #[error("batch of {size} bytes exceeds max.message.bytes {max}")]
    MessageTooLarge {
        /// Size of the batch in bytes.
        size: usize,
        /// The topic's `max.message.bytes`.
        max: u32,
    },
    /// An idempotent producer's batch does not continue its sequence (a gap, or a first batch
    /// not starting at 0): nothing was appended.
    #[error("idempotent producer sequence check failed")]
    OutOfOrderSequence,
    /// An idempotent producer's batch carries an epoch older than the one the partition knows
    /// (a fenced producer): nothing was appended.
    #[error("idempotent producer sequence check failed")]
    InvalidProducerEpoch,
    /// The fetch offset is outside `[log_start_offset, high_watermark]`.
    #[error("offset {offset} out of range [{log_start_offset}, {high_watermark}]")]
    OffsetOutOfRange {
        /// The offset asked for.
        offset: i64,
        /// First offset still in the log.
        log_start_offset: i64,
        /// Next offset to be assigned.
        high_watermark: i64,
    },
    /// The topic's policy forbids the operation (DeleteRecords on a topic whose
    /// `cleanup.policy` lacks `delete`); the message says why.
    #[error("{0}")]
    PolicyViolation(String),
    /// The partition is not open on this shard.
    #[error("unknown topic or partition")]
    UnknownPartition,
    /// The disk said no (ENOSPC, EIO, ...). In-memory state stays consistent; retry later.
    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// Data read back from our own log failed its checks (bit rot, bug): not the client's fault.
    #[error("corrupt log data in {path}: {reason}")]
    CorruptLog {
        /// The segment file.
        path: PathBuf,
        /// What check failed.
        reason: String,
    },
    /// The data directory refuses `O_DIRECT` and the buffered fallback was not asked for.
    #[error(
        "data dir {dir} does not support O_DIRECT ({source}); use a file system that does \
         (ext4, XFS) or enable the buffered-io fallback"
    )]
    DirectIoUnsupported {
        /// The data directory.
        dir: PathBuf,
        /// The kernel's answer.
        source: std::io::Error,
    },
    /// The offset waited on was removed by a truncation to the leader's log (a replica that
    /// became a follower): it is not this replica's to acknowledge.
    #[error("offset {offset} was truncated: this replica is no longer the leader of its data")]
    Truncated {
        /// The offset waited on.
        offset: i64,
    },
    /// The storage is shutting down (or shut down); nothing more is accepted.
    #[error("storage is shutting down")]
    ShuttingDown,
}

impl StorageError {
    /// Whether the client's input caused this error (a malformed or refused batch), as opposed
    /// to the broker's state or its disk.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            StorageError::CorruptMessage(_)
                | StorageError::InvalidRecord(_)
                | StorageError::MessageTooLarge { .. }
                | StorageError::OutOfOrderSequence
                | StorageError::InvalidProducerEpoch
        )
    }

    /// The Kafka error code to put in a response for this error.
    pub fn kafka_error_code(&self) -> ErrorCode {
        match self {
            StorageError::CorruptMessage(_) => ErrorCode::CORRUPT_MESSAGE,
            StorageError::InvalidRecord(_) => ErrorCode::INVALID_RECORD,
            StorageError::MessageTooLarge { .. } => ErrorCode::MESSAGE_TOO_LARGE,
            StorageError::OutOfOrderSequence => ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER,
            StorageError::InvalidProducerEpoch => ErrorCode::INVALID_PRODUCER_EPOCH,
            StorageError::OffsetOutOfRange { .. } => ErrorCode::OFFSET_OUT_OF_RANGE,
            StorageError::UnknownPartition => ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
            StorageError::PolicyViolation(_) => ErrorCode::POLICY_VIOLATION,
            StorageError::Truncated { .. } => ErrorCode::NOT_LEADER_OR_FOLLOWER,
            StorageError::Io(_)
            | StorageError::CorruptLog { .. }
            | StorageError::DirectIoUnsupported { .. }
            | StorageError::ShuttingDown => ErrorCode::KAFKA_STORAGE_ERROR,
        }
    }
}
