//! Read: whole batches from the batch cache (no copy) or from the segment file (CRC-checked),
//! each with its parsed header; and the batch search behind ListOffsets by time.

use std::path::PathBuf;
use std::rc::Rc;

use bytes::Bytes;

use super::{LogState, Partition};
use crate::io::IoFile;
use crate::storage::batch::{BatchHeader, BATCH_HEADER_BYTES};
use crate::storage::segment::{segment_path, BatchScanner, ScanItem};
use crate::storage::{report_read, StorageError};

/// One batch found by a read: its header's fields and its bytes, as buffers ready for the
/// socket (a cached batch is two: the broker's header and the producer's records).
pub(crate) struct ReadBatch {
    /// The batch's header, as stored.
    pub(crate) header: BatchHeader,
    /// The batch's bytes; concatenated, exactly `header.size_bytes()` of them.
    pub(crate) parts: [Option<Bytes>; 2],
}

impl ReadBatch {
    fn len(&self) -> usize {
        self.parts.iter().flatten().map(|b| b.len()).sum()
    }

    /// A control batch's control record type (ABORT 0, COMMIT 1), from its first record's key.
    pub(crate) fn control_type(&self) -> Option<i16> {
        let mut head = Vec::with_capacity(BATCH_HEADER_BYTES + 32);
        for p in self.parts.iter().flatten() {
            let want = (BATCH_HEADER_BYTES + 32).saturating_sub(head.len());
            head.extend_from_slice(&p[..p.len().min(want)]);
        }
        crate::storage::batch::control_type(head.get(BATCH_HEADER_BYTES..)?)
    }
}

/// Batches a read found, and the bytes of the disk read buffers they are slices of (whole
/// buffers; zero when all came from the batch cache).
pub(crate) struct ReadOut {
    pub(crate) batches: Vec<ReadBatch>,
    pub(crate) allocated: usize,
    /// The segment read has no batch at or after the offset (a compacted segment's
    /// trailing gap): the read goes on in the next segment.
    pub(crate) segment_exhausted: bool,
}

/// A read from a segment file, planned under the state borrow and run after it.
struct DiskRead {
    file: Rc<IoFile>,
    /// Where the offset index says the scan may start.
    start: u64,
    /// The segment's written size.
    end: u64,
    /// Bytes per read.
    chunk: usize,
    path: PathBuf,
}

/// Where a read goes once the state borrow is dropped.
enum ReadPlan {
    Done(Vec<ReadBatch>),
    Disk(DiskRead),
    NotCached,
}

impl Partition {
    /// Reads whole batches from the one containing `fetch_offset` (offsets already
    /// range-checked by the caller: `log_start <= fetch_offset < high watermark`) up to
    /// `max_bytes`, and at least one if `min_one`. `None` when the data is not in the batch
    /// cache and `disk` is false.
    pub(crate) async fn read(
        &self,
        fetch_offset: i64,
        max_bytes: usize,
        min_one: bool,
        disk: bool,
    ) -> Result<Option<ReadOut>, StorageError> {
        let mut at = fetch_offset;
        loop {
            let plan = self.state.borrow().plan_read(at, max_bytes, min_one, disk);
            let out = match plan {
                ReadPlan::NotCached => return Ok(None),
                ReadPlan::Done(batches) => {
                    return Ok(Some(ReadOut {
                        batches,
                        allocated: 0,
                        segment_exhausted: false,
                    }))
                }
                ReadPlan::Disk(d) => d.run(at, max_bytes, min_one).await?,
            };
            // A compacted segment may end in a gap: the data goes on in the next segment.
            if out.segment_exhausted {
                let next = {
                    let st = self.state.borrow();
                    st.segments
                        .range(at + 1..)
                        .next()
                        .map(|(&base, _)| base)
                        .filter(|&base| base < st.next_offset)
                };
                if let Some(next) = next {
                    at = next;
                    continue;
                }
            }
            return Ok(Some(out));
        }
    }

    /// ListOffsets by time: `(base offset, max timestamp)` of the first batch whose max
    /// timestamp is `>= timestamp`, or `None` if there is none. Finds the segment by its max
    /// timestamp, starts at its time index entry, then reads batch headers forward.
    pub(crate) async fn offset_for_timestamp(
        &self,
        timestamp: i64,
    ) -> Result<Option<(i64, i64)>, StorageError> {
        let mut start = {
            let st = self.state.borrow();
            let Some(seg) = st.segments.values().find(|s| s.max_timestamp >= timestamp) else {
                return Ok(None);
            };
            (seg.base_offset + seg.time_index.lookup_scan_start(timestamp) as i64)
                .max(st.log_start_offset)
        };
        loop {
            let hw = match self.check_range(start) {
                Ok((_, hw, _)) => hw,
                // Retention moved the start past us: continue from the new start.
                Err(StorageError::OffsetOutOfRange {
                    log_start_offset,
                    high_watermark,
                    ..
                }) if start < log_start_offset && log_start_offset < high_watermark => {
                    start = log_start_offset;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if start >= hw {
                return Ok(None);
            }
            let batches = self
                .read(start, 1 << 20, true, true)
                .await?
                .map(|r| r.batches)
                .unwrap_or_default();
            let Some(last) = batches.last() else {
                return Ok(None);
            };
            let next = last.header.last_offset() + 1;
            if let Some(b) = batches.iter().find(|b| b.header.max_timestamp >= timestamp) {
                return Ok(Some((b.header.base_offset, b.header.max_timestamp)));
            }
            if next <= start {
                return Ok(None);
            }
            start = next;
        }
    }
}

impl LogState {
    /// Serves the read from the cache when it holds `fetch_offset`, else plans a disk read
    /// from the offset index's entry (or nothing, when `disk` is false).
    fn plan_read(
        &self,
        fetch_offset: i64,
        max_bytes: usize,
        min_one: bool,
        disk: bool,
    ) -> ReadPlan {
        match self.cache.first_offset() {
            Some(first) if fetch_offset >= first => {
                let mut out = Vec::new();
                let mut total = 0;
                for b in self.cache.starting_at(fetch_offset) {
                    if (!out.is_empty() || !min_one) && total + b.len() > max_bytes {
                        break;
                    }
                    total += b.len();
                    out.push(ReadBatch {
                        header: b.header,
                        parts: [Some(b.header_bytes.clone()), Some(b.body.clone())],
                    });
                }
                report_read(true);
                ReadPlan::Done(out)
            }
            _ if !disk => ReadPlan::NotCached,
            _ => {
                let Some(seg) = self
                    .segments
                    .range(..=fetch_offset)
                    .next_back()
                    .map(|(_, s)| s)
                else {
                    return ReadPlan::Done(Vec::new());
                };
                let Some(file) = seg.file.clone() else {
                    return ReadPlan::Done(Vec::new());
                };
                report_read(false);
                let rel = (fetch_offset - seg.base_offset).clamp(0, u32::MAX as i64) as u32;
                let (_, pos) = seg.offset_index.lookup(rel);
                ReadPlan::Disk(DiskRead {
                    file,
                    start: pos as u64,
                    end: seg.written_size,
                    chunk: max_bytes
                        .saturating_add(self.config.index_interval_bytes as usize)
                        .min(16 << 20),
                    path: segment_path(&self.dir, seg.base_offset, "log"),
                })
            }
        }
    }
}

impl DiskRead {
    /// Scans the segment from the index's position, CRC32C-checking every batch: bit rot in a
    /// segment recovery trusted (a clean shutdown, a rolled segment) must end the read, never
    /// reach a consumer. The offset index is a hint read from disk: when the batch it points at
    /// does not parse or lies past the fetch offset, the scan restarts from the segment start
    /// (once: a scan from position 0 never asks to restart).
    async fn run(
        self,
        fetch_offset: i64,
        max_bytes: usize,
        min_one: bool,
    ) -> Result<ReadOut, StorageError> {
        let mut from = self.start;
        loop {
            match self.scan(from, fetch_offset, max_bytes, min_one).await? {
                Some(out) => return Ok(out),
                None => from = 0,
            }
        }
    }

    /// One scan from `from`; `None`: restart from the segment start (only when `from != 0`).
    async fn scan(
        &self,
        from: u64,
        fetch_offset: i64,
        max_bytes: usize,
        min_one: bool,
    ) -> Result<Option<ReadOut>, StorageError> {
        let mut scanner = BatchScanner::new(&self.file, from, self.end, self.chunk, true);
        let mut out: Vec<ReadBatch> = Vec::new();
        let mut total = 0;
        // Read buffers the returned batches are slices of: (generation, length).
        let mut allocated = 0usize;
        let mut last_buffer = None;
        let mut exhausted = false;
        loop {
            match scanner.next_batch().await? {
                ScanItem::End => {
                    exhausted = out.is_empty();
                    break;
                }
                ScanItem::Torn { position, reason } => {
                    if !out.is_empty() {
                        break;
                    }
                    if from != 0 {
                        tracing::warn!(path = %self.path.display(), position, %reason, "offset index points at no batch; reading from the segment start");
                        return Ok(None);
                    }
                    return Err(StorageError::CorruptLog {
                        path: self.path.clone(),
                        reason: format!("at position {position}: {reason}"),
                    });
                }
                ScanItem::Batch { header, bytes, .. } => {
                    if out.is_empty() && from != 0 && header.base_offset > fetch_offset {
                        tracing::warn!(path = %self.path.display(), position = from, "offset index points past the fetch offset; reading from the segment start");
                        return Ok(None);
                    }
                    if header.last_offset() < fetch_offset {
                        continue;
                    }
                    if (!out.is_empty() || !min_one) && total + bytes.len() > max_bytes {
                        break;
                    }
                    let (generation, len) = scanner.buffer();
                    if last_buffer != Some(generation) {
                        last_buffer = Some(generation);
                        allocated += len;
                    }
                    total += bytes.len();
                    let b = ReadBatch {
                        header,
                        parts: [Some(bytes), None],
                    };
                    debug_assert_eq!(b.len(), header.size_bytes());
                    out.push(b);
                    if total >= max_bytes {
                        break;
                    }
                }
            }
        }
        Ok(Some(ReadOut {
            batches: out,
            allocated,
            segment_exhausted: exhausted,
        }))
    }
}
