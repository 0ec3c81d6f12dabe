//! The storage engine: per-shard partition logs in Kafka's on-disk layout.
//!
//! What it owns: for each partition a shard opened, `DATA_DIR/<topic>-<partition>/` with
//! `<base offset>.log` segments (v2 record batches byte-for-byte as produced, base offset
//! assigned), their `.index`/`.timeindex`, a `recovery-point-offset-checkpoint` and a
//! `.clean_shutdown` marker; each partition's idempotent producer state and its
//! `producer-state.snapshot`; the shard's batch cache; the group-commit flusher; retention; and
//! Kafka's v2 batch framing (split, parse, validate, patch, count: [`batch`'s functions]).
//! What it may call: [`crate::io`] (the file seam, for every file it touches),
//! [`crate::error_code`], glommio, crc32c. Nothing else in the crate. See `README.md` for the
//! files.
//!
//! [`batch`'s functions]: split_batches
//!
//! # Write path (one copy)
//! [`ShardStorage::append`] is synchronous: validate the batch (length, magic, CRC32C, counts),
//! then check it against the partition's idempotent producer state (a retry of a stored batch
//! is answered with its offsets and not appended), assign offsets, and put it in the batch cache as two `Bytes`: a 61-byte patched header (base
//! offset, leader epoch, log-append time + CRC when the topic asks) and the untouched records
//! slice of the request buffer. The one copy of record bytes happens at flush time, into the
//! aligned DMA buffer. Unwritten batches are never evicted from the cache.
//!
//! # Group commit
//! One flusher task per shard writes every dirty partition (re-writing the partial last 4 KiB
//! page), then `fdatasync`s every written file, advances the durable offset and wakes
//! [`ShardStorage::wait_durable`]. Appends continue while a flush is in flight. With
//! `flush.messages = 1` (default) `wait_durable` resolves only after the `fdatasync`; with
//! `flush.messages > 1` the sync is deferred by policy (`flush.messages`, `flush.ms`) and
//! `wait_durable` resolves once the O_DIRECT write completed (data handed to the device, not
//! yet flushed from its volatile cache) — the same trade Kafka makes with those settings.
//!
//! # Recovery
//! A clean shutdown leaves `.clean_shutdown` and a recovery point = log end. After an unclean
//! stop every segment from the one holding the recovery point on is re-scanned (length, CRC32C,
//! offset continuity); the log is truncated at the first bad batch (logged with
//! `tracing::warn`) and indexes are rebuilt.

mod batch;
mod error;
mod index;
mod log;
mod producers;
mod records;
mod segment;
mod shard;
mod wait;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_compaction;
#[cfg(test)]
mod tests_epochs;
#[cfg(test)]
mod tests_replica;
#[cfg(test)]
mod tests_txn;

pub use batch::{
    build_control_batch, build_test_batch, control_type, parse_header, split_batches,
    validate_batch, BatchHeader, ATTR_CONTROL, ATTR_TRANSACTIONAL, BATCH_HEADER_BYTES,
    CONTROL_ABORT, CONTROL_COMMIT, LEADER_EPOCH,
};
pub use error::StorageError;

/// A function told where a read was served from.
type ReadObserver = Box<dyn Fn(bool)>;

thread_local! {
    /// This thread's (shard's) listener for reads: `true` served from the batch cache,
    /// `false` from disk.
    static READ_OBSERVER: std::cell::RefCell<Option<ReadObserver>> = const { std::cell::RefCell::new(None) };
}

/// Installs, for the calling thread (one shard), a function told whether each read was served
/// from the batch cache (`true`) or from disk (`false`).
pub fn observe_reads(observe: impl Fn(bool) + 'static) {
    READ_OBSERVER.with(|o| *o.borrow_mut() = Some(Box::new(observe)));
}

fn report_read(from_cache: bool) {
    READ_OBSERVER.with(|o| {
        if let Some(observe) = o.borrow().as_ref() {
            observe(from_cache);
        }
    });
}
pub use index::{OffsetIndex, TimeIndex};
pub use log::CleanerStats;
pub use shard::ShardStorage;

/// `message.timestamp.type`: whose clock the batch timestamps are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TimestampType {
    /// The producer's timestamps are kept.
    #[default]
    CreateTime,
    /// The broker stamps the append time as the batch max timestamp.
    LogAppendTime,
}

/// Default `flush.ms`: acks=0/1 data is fdatasynced at most this long after it was written
/// (Redpanda's background flush delay for acks=0/1 is also 100 ms). Syncing it at once cost
/// ~2,200 fdatasyncs/s and 8 % of the broker's CPU with 1,000 acks=1 producers at 10 msg/s
/// each (`perf/profile producers-1000`), for no promise made to those producers.
pub const FLUSH_MS_DEFAULT: u64 = 100;

/// Per-topic log settings, with Kafka's names and defaults.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// `segment.bytes`: roll when the active segment would exceed this (default 1 GiB).
    pub segment_bytes: u64,
    /// `segment.ms`: roll when the active segment is older than this (default 7 days).
    pub segment_ms: u64,
    /// `index.interval.bytes`: bytes between offset index entries (default 4096).
    pub index_interval_bytes: u32,
    /// `flush.messages`: fdatasync after this many messages; 1 (default) = every acks=all
    /// batch is synced before its ack (group commit), and acks=0/1 data by `flush.ms`.
    pub flush_messages: u64,
    /// `flush.ms`: longest time written data stays unsynced (default 100 ms; Kafka's default
    /// is never, leaving it to the OS's writeback).
    pub flush_ms: u64,
    /// `retention.ms`: delete segments older than this; -1 = forever (default 7 days).
    pub retention_ms: i64,
    /// `retention.bytes`: keep the partition under this size; -1 = unlimited (default).
    pub retention_bytes: i64,
    /// `max.message.bytes`: largest batch accepted (default 1048588).
    pub max_message_bytes: u32,
    /// `message.timestamp.type` (default CreateTime).
    pub timestamp_type: TimestampType,
    /// `cleanup.policy` has `delete`: retention deletes old segments and DeleteRecords may
    /// move the log start (default true).
    pub cleanup_delete: bool,
    /// `cleanup.policy` has `compact`: the cleaner keeps the latest record of every key, and
    /// records without a key are refused at produce (default false).
    pub cleanup_compact: bool,
    /// `min.cleanable.dirty.ratio`: the cleaner starts on a log once the dirty (never cleaned)
    /// part is at least this share of its non-active bytes (default 0.5).
    pub min_cleanable_dirty_ratio: f64,
    /// `min.compaction.lag.ms`: a record stays uncompacted at least this long (default 0).
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: a dirty segment older than this is cleaned whatever the dirty
    /// ratio (default `i64::MAX`: never forced).
    pub max_compaction_lag_ms: i64,
    /// `delete.retention.ms`: a tombstone (null value) stays at least this long after the
    /// segment holding it was last written (default 1 day).
    pub delete_retention_ms: i64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            index_interval_bytes: 4096,
            flush_messages: 1,
            flush_ms: FLUSH_MS_DEFAULT,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            max_message_bytes: 1_048_588,
            timestamp_type: TimestampType::CreateTime,
            cleanup_delete: true,
            cleanup_compact: false,
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            delete_retention_ms: 24 * 3600 * 1000,
        }
    }
}

/// Per-shard storage settings.
#[derive(Clone, Debug)]
pub struct StorageOptions {
    /// Soft cap of the batch cache in bytes; only written batches are evicted, so unwritten
    /// data may exceed it until the flusher catches up (default 256 MiB).
    pub batch_cache_bytes_max: usize,
    /// Use the page cache instead of O_DIRECT (fallback for file systems refusing O_DIRECT).
    pub buffered_io: bool,
    /// How often the retention task runs (default 30 s).
    pub retention_check_interval_ms: u64,
    /// Largest step of segment space reserved ahead of the data (capped by `segment.bytes`;
    /// 64 MiB); steps grow with the segment from 4 KiB (see `log::flush`).
    pub preallocate_bytes: u64,
    /// Largest single write issued by the flusher (rounded down to 4 KiB; default 1 MiB).
    pub write_bytes_max: usize,
    /// Writes of one partition in flight at once (default 8): a flush job covers up to
    /// `write_bytes_max * writes_in_flight_max` bytes.
    pub writes_in_flight_max: usize,
    /// Pause after a failed flush round before retrying (default 100 ms).
    pub flush_retry_backoff_ms: u64,
    /// `log.cleaner.enable`: run the log cleaner on compacted topics (default true).
    pub cleaner_enable: bool,
    /// `log.cleaner.backoff.ms`: pause between the cleaner's looks at the shard's logs
    /// (default 15 s, as Kafka).
    pub cleaner_backoff_ms: u64,
    /// `log.cleaner.dedupe.buffer.size`: most bytes of keys one pass maps, per shard (default
    /// 128 MiB, as Kafka's for all its cleaner threads).
    pub cleaner_dedupe_buffer_bytes: usize,
    /// CPU and I/O share of the cleaner's task queue against the shard's default queue
    /// (glommio static shares, default queue 1000): 100 keeps produce and fetch first.
    pub cleaner_shares: usize,
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions {
            batch_cache_bytes_max: 256 << 20,
            buffered_io: false,
            retention_check_interval_ms: 30_000,
            preallocate_bytes: 64 << 20,
            write_bytes_max: 1 << 20,
            writes_in_flight_max: 8,
            flush_retry_backoff_ms: 100,
            cleaner_enable: true,
            cleaner_backoff_ms: 15_000,
            cleaner_dedupe_buffer_bytes: 128 << 20,
            cleaner_shares: 100,
        }
    }
}

/// Result of one append, as Kafka's `LogAppendInfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogAppendInfo {
    /// Offset assigned to the first record.
    pub first_offset: i64,
    /// Offset assigned to the last record.
    pub last_offset: i64,
    /// Largest timestamp of the batch (the append time under LogAppendTime).
    pub max_timestamp: i64,
    /// The broker's append time under LogAppendTime, else -1.
    pub log_append_time: i64,
    /// Log start offset after the append.
    pub log_start_offset: i64,
    /// Records in the batch.
    pub record_count: u32,
    /// The batch retried one of its producer's last five batches: nothing was appended, the
    /// offsets are the original's, `max_timestamp` and `log_append_time` are -1.
    pub duplicate: bool,
}

/// One partition's offsets and size at one instant, for metrics (see
/// [`ShardStorage::partition_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PartitionStats {
    /// First offset still in the log.
    pub log_start_offset: i64,
    /// High watermark: the next offset to be assigned (every appended record is below it).
    pub high_watermark: i64,
    /// Bytes of record batches written to the partition's segment (`.log`) files: the files'
    /// lengths without the space reserved ahead of the data. Batches still waiting for the
    /// group commit, and the index files, are not counted.
    pub disk_usage_bytes: u64,
    /// Blocks allocated to the partition's directory and its files, as `du` counts them
    /// (preallocated space, indexes, snapshots and checkpoints included): sampled when the
    /// partition opens and at every retention check, so it may trail by one interval.
    pub disk_allocated_bytes: u64,
}

/// Result of a read, as Kafka's `FetchDataInfo`.
#[derive(Clone, Debug, Default)]
pub struct FetchDataInfo {
    /// Whole v2 batches from the one containing the fetch offset; concatenated they are valid
    /// Kafka records bytes. At least one batch if any data exists at the offset (even beyond
    /// `max_bytes`), otherwise within `max_bytes`. A batch may span two buffers.
    pub batches: Vec<bytes::Bytes>,
    /// Records in `batches` (from the batch headers the read parsed: nobody re-reads them).
    pub records: u64,
    /// Next offset to be assigned.
    pub high_watermark: i64,
    /// The last stable offset: the first offset of the oldest ongoing transaction, else the
    /// high watermark.
    pub last_stable_offset: i64,
    /// read_committed reads: the aborted transactions overlapping `batches`, as
    /// `(producer id, first offset)`, oldest marker first.
    pub aborted: Vec<(i64, i64)>,
    /// First offset still in the log.
    pub log_start_offset: i64,
    /// Bytes of the disk read buffers `batches` are slices of (whole buffers); zero when all
    /// came from the batch cache.
    pub allocated: usize,
    /// The data at the fetch offset is on disk only and the read was asked not to go there.
    pub needs_disk: bool,
}

impl FetchDataInfo {
    /// Total bytes in `batches`.
    pub fn total_bytes(&self) -> usize {
        self.batches.iter().map(|b| b.len()).sum()
    }
}

/// Who appends a batch, which decides how it is checked (Kafka's `AppendOrigin`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendOrigin {
    /// A client's Produce.
    Client,
    /// The broker's own writes: transaction markers and transactional offset commits
    /// (control batches allowed; the producer epoch is checked, sequence numbers are not).
    Coordinator,
    /// The coordinator's markers of a transactions-v2 transaction (KIP-890): the coordinator
    /// bumped the epoch at the transaction's end, so the marker's epoch must be newer than
    /// the producer's on the partition; a delayed or repeated marker of an earlier
    /// transaction (whose epoch the next transaction's data carries) is refused.
    CoordinatorTransactionV2,
}

/// One producer's state on a partition, as DescribeProducers reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerDescription {
    /// The producer id.
    pub producer_id: i64,
    /// Its current epoch on the partition.
    pub producer_epoch: i16,
    /// The sequence number of its last batch (-1: none, e.g. only markers).
    pub last_sequence: i32,
    /// The first offset of its ongoing transaction here (-1: none).
    pub current_txn_start_offset: i64,
}

/// Milliseconds since the Unix epoch (wall clock, as Kafka timestamps).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
