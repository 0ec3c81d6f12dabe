//! One log segment (`<base offset>.log` + its indexes) and the sequential batch scanner used by
//! recovery and disk reads.

use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;

use super::batch::{check_batch, parse_header, BatchHeader, BATCH_HEADER_BYTES, MIN_BATCH_LENGTH};
use super::index::{OffsetIndex, TimeIndex};
use crate::io::{FileSystem, IoFile};

/// Path of a segment file: `dir/<base offset, 20 digits>.<ext>` (Kafka's naming).
pub(crate) fn segment_path(dir: &Path, base_offset: i64, ext: &str) -> PathBuf {
    dir.join(format!("{base_offset:020}.{ext}"))
}

/// In-memory state of one segment.
///
/// Two cursors: the append side (`size`, `next_offset`: everything appended, including bytes
/// still only in the batch cache) and the flush side (`written_size`, `written_next_offset`:
/// bytes already written to the file). Invariant: `written_size <= size`, and every batch in
/// `[written_next_offset, next_offset)` is in the partition's batch cache.
pub(crate) struct LogSegment {
    pub base_offset: i64,
    /// Created lazily by the flusher for a new segment.
    pub file: Option<Rc<IoFile>>,
    pub size: u64,
    pub next_offset: i64,
    pub written_size: u64,
    pub written_next_offset: i64,
    /// Copy of the file bytes `[align_down(written_size), written_size)`: the partial last page,
    /// rewritten by the next flush (O_DIRECT writes whole pages).
    pub tail: Vec<u8>,
    /// File size reserved with fallocate.
    pub allocated: u64,
    pub max_timestamp: i64,
    pub offset_of_max_timestamp: i64,
    pub created_ms: i64,
    pub offset_index: OffsetIndex,
    pub time_index: TimeIndex,
    pub bytes_since_index: u64,
    /// No more appends go here (a newer segment exists).
    pub rolled: bool,
    /// Rolled, fully written, trimmed to size, synced, indexes persisted.
    pub finished: bool,
    /// Written since the last fdatasync.
    pub dirty_since_sync: bool,
    /// `(leader epoch, base offset)` where the epoch grows, among the batches a scan of this
    /// segment read in order (recovery takes them for the leader-epoch cache; empty
    /// otherwise).
    pub scanned_epochs: Vec<(i32, i64)>,
}

impl LogSegment {
    /// An empty segment starting at `base_offset`.
    pub(crate) fn new(base_offset: i64, now_ms: i64) -> Self {
        LogSegment {
            base_offset,
            file: None,
            size: 0,
            next_offset: base_offset,
            written_size: 0,
            written_next_offset: base_offset,
            tail: Vec::new(),
            allocated: 0,
            max_timestamp: -1,
            offset_of_max_timestamp: base_offset,
            created_ms: now_ms,
            offset_index: OffsetIndex::new(),
            time_index: TimeIndex::new(),
            bytes_since_index: 0,
            rolled: false,
            finished: false,
            dirty_since_sync: false,
            scanned_epochs: Vec::new(),
        }
    }

    /// Accounts one batch appended at `position` (must be the current end): indexes, max
    /// timestamp, size, next offset.
    pub(crate) fn record_batch(
        &mut self,
        base_offset: i64,
        last_offset: i64,
        max_timestamp: i64,
        position: u64,
        len: u64,
        index_interval_bytes: u32,
    ) {
        assert_eq!(position, self.size, "segment appends must be contiguous");
        assert_eq!(base_offset, self.next_offset, "offsets must be contiguous");
        if max_timestamp > self.max_timestamp {
            self.max_timestamp = max_timestamp;
            self.offset_of_max_timestamp = last_offset;
        }
        if self.bytes_since_index >= index_interval_bytes as u64 {
            self.offset_index
                .append((base_offset - self.base_offset) as u32, position as u32);
            self.time_index.maybe_append(
                self.max_timestamp,
                (self.offset_of_max_timestamp - self.base_offset) as u32,
            );
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += len;
        self.size = position + len;
        self.next_offset = last_offset + 1;
    }

    /// Accounts one batch read back from a segment file or written by the cleaner, at
    /// `position` (the current end): as [`LogSegment::record_batch`], but its base offset may
    /// be past the segment's next offset (a compacted log's gap); never before it.
    pub(crate) fn record_stored_batch(
        &mut self,
        base_offset: i64,
        last_offset: i64,
        max_timestamp: i64,
        position: u64,
        len: u64,
        index_interval_bytes: u32,
    ) {
        assert!(
            base_offset >= self.next_offset,
            "segment offsets must increase"
        );
        self.next_offset = base_offset;
        self.record_batch(
            base_offset,
            last_offset,
            max_timestamp,
            position,
            len,
            index_interval_bytes,
        );
    }

    /// Adds the final time index entry and takes what the segment's files must now hold (at
    /// a finish or a clean close): taken under the state borrow, written after it.
    pub(crate) fn seal(&mut self) -> SealedSegment {
        self.seal_time_index();
        SealedSegment {
            file: self.file.clone(),
            base_offset: self.base_offset,
            size: self.size,
            allocated: self.allocated,
            next_offset: self.next_offset,
            index: self.offset_index.to_bytes(),
            timeindex: self.time_index.to_bytes(),
        }
    }

    /// Adds the final time index entry (segment's max timestamp), as Kafka does at roll.
    fn seal_time_index(&mut self) {
        if self.max_timestamp >= 0 {
            self.time_index.maybe_append(
                self.max_timestamp,
                (self.offset_of_max_timestamp - self.base_offset) as u32,
            );
        }
    }

    /// Timestamp retention compares against: the largest record timestamp, else creation time.
    pub(crate) fn retention_timestamp(&self) -> i64 {
        if self.max_timestamp >= 0 {
            self.max_timestamp
        } else {
            self.created_ms
        }
    }
}

/// A segment's file and index contents as of a seal (see [`LogSegment::seal`]).
pub(crate) struct SealedSegment {
    /// The segment file, if it was ever written.
    pub file: Option<Rc<IoFile>>,
    pub base_offset: i64,
    /// Bytes of batches in the segment.
    pub size: u64,
    /// File size reserved with fallocate.
    pub allocated: u64,
    /// Offset after the segment's last batch.
    pub next_offset: i64,
    index: Vec<u8>,
    timeindex: Vec<u8>,
}

impl SealedSegment {
    /// Writes the `.index` and `.timeindex` files beside the segment, each atomically and
    /// durably, off the shard (their fsyncs never stall the shard's other partitions).
    pub(crate) async fn write_indexes(&self, fs: &FileSystem, dir: &Path) -> io::Result<()> {
        let index = segment_path(dir, self.base_offset, "index");
        let timeindex = segment_path(dir, self.base_offset, "timeindex");
        fs.write_small_file_durable_off_shard(&index, self.index.clone())
            .await?;
        fs.write_small_file_durable_off_shard(&timeindex, self.timeindex.clone())
            .await
    }

    /// Writes the `.index` and `.timeindex` contents to the given paths, each synced, off the
    /// shard; their names are durable only after a directory sync (the cleaner's copies,
    /// renamed over the segment's files later).
    pub(crate) async fn write_index_copies(
        &self,
        fs: &FileSystem,
        index: &Path,
        timeindex: &Path,
    ) -> io::Result<()> {
        fs.write_file_synced_off_shard(index, self.index.clone())
            .await?;
        fs.write_file_synced_off_shard(timeindex, self.timeindex.clone())
            .await
    }
}

/// What [`BatchScanner::next_batch`] found.
pub(crate) enum ScanItem {
    /// A whole batch at `position`.
    Batch {
        position: u64,
        header: BatchHeader,
        bytes: Bytes,
    },
    /// Clean end: end of range or zero-filled (preallocated) tail.
    End,
    /// Garbage or a partial batch at `position`.
    Torn { position: u64, reason: String },
}

/// Reads consecutive batches from a file range with large reads.
pub(crate) struct BatchScanner<'a> {
    file: &'a IoFile,
    pos: u64,
    end: u64,
    buf: Bytes,
    buf_pos: u64,
    chunk: usize,
    verify_crc: bool,
    /// Buffers read so far (the generation of `buf`).
    reads: u64,
}

impl<'a> BatchScanner<'a> {
    /// Scans `[start, end)` reading `chunk` bytes at a time; `verify_crc` checks every batch.
    pub(crate) fn new(
        file: &'a IoFile,
        start: u64,
        end: u64,
        chunk: usize,
        verify_crc: bool,
    ) -> Self {
        BatchScanner {
            file,
            pos: start,
            end,
            buf: Bytes::new(),
            buf_pos: start,
            chunk: chunk.max(4096),
            verify_crc,
            reads: 0,
        }
    }

    /// Makes the buffer cover `[pos, pos + len)`; `false` if the file is shorter.
    async fn ensure(&mut self, len: usize) -> io::Result<bool> {
        if self.pos >= self.buf_pos && self.pos + len as u64 <= self.buf_pos + self.buf.len() as u64
        {
            return Ok(true);
        }
        let want = (len.max(self.chunk) as u64).min(self.end - self.pos) as usize;
        self.buf = self.file.read_at(self.pos, want).await?;
        self.buf_pos = self.pos;
        self.reads += 1;
        Ok(self.buf.len() >= len)
    }

    /// The buffer the last batch returned is a slice of: (its generation, which changes with
    /// every read, and its length in bytes).
    pub(crate) fn buffer(&self) -> (u64, usize) {
        (self.reads, self.buf.len())
    }

    /// The next batch, or why there is none.
    pub(crate) async fn next_batch(&mut self) -> io::Result<ScanItem> {
        if self.pos >= self.end {
            return Ok(ScanItem::End);
        }
        let position = self.pos;
        let remaining = (self.end - self.pos) as usize;
        let head = remaining.min(BATCH_HEADER_BYTES);
        if !self.ensure(head).await? {
            return Ok(ScanItem::Torn {
                position,
                reason: "short read".into(),
            });
        }
        let off = (self.pos - self.buf_pos) as usize;
        let head_bytes = &self.buf[off..off + head];
        if head_bytes.iter().all(|&b| b == 0) {
            return Ok(ScanItem::End); // preallocated zero tail
        }
        if head < BATCH_HEADER_BYTES {
            return Ok(ScanItem::Torn {
                position,
                reason: format!("{remaining} trailing bytes, less than a batch header"),
            });
        }
        let header = match parse_header(head_bytes) {
            Ok(h) => h,
            Err(e) => {
                return Ok(ScanItem::Torn {
                    position,
                    reason: e.to_string(),
                })
            }
        };
        if header.batch_length < MIN_BATCH_LENGTH || header.magic != 2 {
            return Ok(ScanItem::Torn {
                position,
                reason: format!(
                    "bad header (batch_length {}, magic {})",
                    header.batch_length, header.magic
                ),
            });
        }
        let size = header.size_bytes();
        if size > remaining {
            return Ok(ScanItem::Torn {
                position,
                reason: format!("batch of {size} bytes runs past the end ({remaining} left)"),
            });
        }
        if !self.ensure(size).await? {
            return Ok(ScanItem::Torn {
                position,
                reason: "short read".into(),
            });
        }
        let off = (self.pos - self.buf_pos) as usize;
        let bytes = self.buf.slice(off..off + size);
        if self.verify_crc {
            if let Err(e) = check_batch(&bytes, &header, u32::MAX, true) {
                return Ok(ScanItem::Torn {
                    position,
                    reason: e.to_string(),
                });
            }
        }
        self.pos += size as u64;
        Ok(ScanItem::Batch {
            position,
            header,
            bytes,
        })
    }
}

/// Recovery scan: re-reads `[start_pos, file_len)` of `seg`'s file, checks length, CRC32C and
/// offset continuity of every batch, and accounts each valid one into `seg` (indexes included).
/// `allow_gaps`: a compacted log's batch may start past the previous one's end.
/// `allow_gaps`: a compacted log's batch may start past the previous one's end.
/// Returns `None` at a clean end, or the position and reason of the first bad batch (everything
/// from there on must be dropped).
pub(crate) async fn scan_segment(
    seg: &mut LogSegment,
    file: &IoFile,
    start_pos: u64,
    start_offset: i64,
    file_len: u64,
    index_interval_bytes: u32,
    allow_gaps: bool,
) -> io::Result<Option<(u64, String)>> {
    seg.size = start_pos;
    seg.next_offset = start_offset;
    seg.bytes_since_index = 0;
    seg.scanned_epochs.clear();
    let mut scanner = BatchScanner::new(file, start_pos, file_len, 1 << 20, true);
    loop {
        match scanner.next_batch().await? {
            ScanItem::End => return Ok(None),
            ScanItem::Torn { position, reason } => return Ok(Some((position, reason))),
            ScanItem::Batch {
                position,
                header,
                bytes,
            } => {
                let gap_ok = allow_gaps && header.base_offset > seg.next_offset;
                if header.base_offset != seg.next_offset && !gap_ok {
                    return Ok(Some((
                        position,
                        format!(
                            "offset discontinuity: expected {}, found {}",
                            seg.next_offset, header.base_offset
                        ),
                    )));
                }
                if position > i32::MAX as u64 {
                    return Ok(Some((
                        position,
                        "position beyond the i32 range of the offset index".into(),
                    )));
                }
                seg.record_stored_batch(
                    header.base_offset,
                    header.last_offset(),
                    header.max_timestamp,
                    position,
                    bytes.len() as u64,
                    index_interval_bytes,
                );
                let epoch = header.partition_leader_epoch;
                if seg.scanned_epochs.last().is_none_or(|e| e.0 < epoch) {
                    seg.scanned_epochs.push((epoch, header.base_offset));
                }
            }
        }
    }
}
