//! TEMPORARY in-memory stand-in with the storage API, replaced by the storage branch merge.
#![allow(missing_docs, dead_code)]
use bytes::Bytes;
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}
#[derive(Clone, Debug)]
pub struct LogConfig {
    pub segment_bytes: u64,
    pub segment_ms: u64,
    pub index_interval_bytes: u32,
    pub flush_messages: u64,
    pub flush_ms: u64,
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub max_message_bytes: u32,
    pub timestamp_type: TimestampType,
}
impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 604_800_000,
            index_interval_bytes: 4096,
            flush_messages: 1,
            flush_ms: 0,
            retention_ms: 604_800_000,
            retention_bytes: -1,
            max_message_bytes: 1_048_588,
            timestamp_type: TimestampType::CreateTime,
        }
    }
}
#[derive(Clone, Debug)]
pub struct LogAppendInfo {
    pub first_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
    pub log_append_time: i64,
    pub log_start_offset: i64,
    pub record_count: u32,
}
#[derive(Debug)]
pub struct FetchDataInfo {
    pub batches: Vec<Bytes>,
    pub high_watermark: i64,
    pub log_start_offset: i64,
}
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("corrupt: {0}")]
    CorruptMessage(String),
    #[error("invalid: {0}")]
    InvalidRecord(String),
    #[error("too large")]
    MessageTooLarge { size: usize, max: u32 },
    #[error("out of range")]
    OffsetOutOfRange { offset: i64 },
    #[error("unknown partition")]
    UnknownPartition,
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}
impl StorageError {
    pub fn kafka_error_code(&self) -> i16 {
        match self {
            Self::CorruptMessage(_) => 2,
            Self::InvalidRecord(_) => 87,
            Self::MessageTooLarge { .. } => 10,
            Self::OffsetOutOfRange { .. } => 1,
            Self::UnknownPartition => 3,
            Self::Io(_) => 56,
        }
    }
}
#[derive(Clone, Debug, Default)]
pub struct StorageOptions {
    pub batch_cache_bytes_max: usize,
    pub buffered_io: bool,
}
#[derive(Default)]
struct Log {
    batches: Vec<(i64, i64, Bytes)>,
    next: i64,
    waiters: Vec<futures_lite::future::Boxed<()>>,
}
pub struct ShardStorage {
    logs: RefCell<HashMap<(String, i32), Log>>,
    notify: RefCell<Vec<std::task::Waker>>,
}
impl ShardStorage {
    pub async fn open(_d: &Path, _o: StorageOptions) -> Result<Rc<Self>, StorageError> {
        Ok(Rc::new(ShardStorage {
            logs: RefCell::new(HashMap::new()),
            notify: RefCell::new(Vec::new()),
        }))
    }
    pub async fn open_partition(&self, t: &str, p: i32, _c: LogConfig) -> Result<(), StorageError> {
        self.logs
            .borrow_mut()
            .entry((t.to_string(), p))
            .or_default();
        Ok(())
    }
    pub fn set_config(&self, _t: &str, _p: i32, _c: LogConfig) {}
    pub async fn delete_partition(&self, t: &str, p: i32) -> Result<(), StorageError> {
        self.logs.borrow_mut().remove(&(t.to_string(), p));
        Ok(())
    }
    pub fn append(&self, t: &str, p: i32, batch: Bytes) -> Result<LogAppendInfo, StorageError> {
        let mut logs = self.logs.borrow_mut();
        let log = logs
            .get_mut(&(t.to_string(), p))
            .ok_or(StorageError::UnknownPartition)?;
        if batch.len() < 61 {
            return Err(StorageError::CorruptMessage("short".into()));
        }
        let count = i32::from_be_bytes([batch[57], batch[58], batch[59], batch[60]]) as i64;
        let mut b = batch.to_vec();
        b[0..8].copy_from_slice(&log.next.to_be_bytes());
        let first = log.next;
        log.next += count;
        log.batches.push((first, log.next - 1, Bytes::from(b)));
        for w in self.notify.borrow_mut().drain(..) {
            w.wake();
        }
        Ok(LogAppendInfo {
            first_offset: first,
            last_offset: log.next - 1,
            max_timestamp: -1,
            log_append_time: -1,
            log_start_offset: 0,
            record_count: count as u32,
        })
    }
    pub async fn wait_durable(&self, _t: &str, _p: i32, _o: i64) -> Result<(), StorageError> {
        Ok(())
    }
    pub async fn read(
        &self,
        t: &str,
        p: i32,
        off: i64,
        max: usize,
    ) -> Result<FetchDataInfo, StorageError> {
        let logs = self.logs.borrow();
        let log = logs
            .get(&(t.to_string(), p))
            .ok_or(StorageError::UnknownPartition)?;
        if off < 0 || off > log.next {
            return Err(StorageError::OffsetOutOfRange { offset: off });
        }
        let mut out = Vec::new();
        let mut n = 0;
        for (_f, l, b) in &log.batches {
            if *l >= off && (out.is_empty() || n + b.len() <= max) {
                n += b.len();
                out.push(b.clone());
            }
        }
        Ok(FetchDataInfo {
            batches: out,
            high_watermark: log.next,
            log_start_offset: 0,
        })
    }
    pub fn offsets(&self, t: &str, p: i32) -> Result<(i64, i64), StorageError> {
        let logs = self.logs.borrow();
        let log = logs
            .get(&(t.to_string(), p))
            .ok_or(StorageError::UnknownPartition)?;
        Ok((0, log.next))
    }
    pub async fn offset_for_timestamp(
        &self,
        _t: &str,
        _p: i32,
        _ts: i64,
    ) -> Result<Option<(i64, i64)>, StorageError> {
        Ok(None)
    }
    pub async fn appended(&self, t: &str, p: i32, after: i64) {
        futures_lite::future::poll_fn(|cx| {
            let n = self.offsets(t, p).map(|o| o.1).unwrap_or(0);
            if n > after {
                std::task::Poll::Ready(())
            } else {
                self.notify.borrow_mut().push(cx.waker().clone());
                std::task::Poll::Pending
            }
        })
        .await
    }
    pub fn spawn_background_tasks(self: &Rc<Self>) {}
    pub async fn shutdown(&self) -> Result<(), StorageError> {
        Ok(())
    }
}
