//! The batch cache of one partition, and the shard-wide byte count every partition's cache
//! keeps in step by itself (nobody else adds or subtracts).

use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;

use bytes::Bytes;

use crate::storage::batch::BatchHeader;

/// Bytes held by all batch caches of one shard. Cheap to clone (shared); only [`BatchCache`]
/// changes it.
#[derive(Clone, Default)]
pub(crate) struct CacheBytes(Rc<Cell<usize>>);

impl CacheBytes {
    /// Bytes currently cached on the shard.
    pub(crate) fn get(&self) -> usize {
        self.0.get()
    }

    fn add(&self, n: usize) {
        self.0.set(self.0.get() + n);
    }

    fn sub(&self, n: usize) {
        let now = self.0.get();
        assert!(n <= now, "batch cache byte count below zero");
        self.0.set(now - n);
    }
}

/// A batch held in memory: the broker's patched header (bytes and parsed fields) and the
/// producer's records, untouched.
pub(crate) struct CachedBatch {
    pub(crate) header_bytes: Bytes,
    pub(crate) body: Bytes,
    pub(crate) header: BatchHeader,
}

impl CachedBatch {
    pub(crate) fn len(&self) -> usize {
        self.header_bytes.len() + self.body.len()
    }
}

/// What eviction did with one entry of the shard's insertion order.
pub(crate) enum Eviction {
    /// The batch is no longer cached (retention or deletion took it): skip it.
    Gone,
    /// The batch was written and is now dropped.
    Evicted,
    /// The batch is not written yet: it must stay, and eviction stops here.
    Unwritten,
    /// The partition is busy (borrowed): try again later.
    Busy,
}

/// A contiguous suffix of one partition's log by base offset, with its byte count.
pub(crate) struct BatchCache {
    batches: BTreeMap<i64, CachedBatch>,
    bytes: usize,
    shard: CacheBytes,
}

impl BatchCache {
    /// An empty cache counting into `shard`.
    pub(crate) fn new(shard: CacheBytes) -> Self {
        BatchCache {
            batches: BTreeMap::new(),
            bytes: 0,
            shard,
        }
    }

    /// Adds the batch at `base` (the next one of the log).
    pub(crate) fn insert(&mut self, base: i64, batch: CachedBatch) {
        let len = batch.len();
        if let Some(old) = self.batches.insert(base, batch) {
            // Offsets are assigned once: a second batch at one base offset is a bug.
            panic!(
                "batch cache already held a batch at {base} ({} bytes)",
                old.len()
            );
        }
        self.bytes += len;
        self.shard.add(len);
    }

    /// Base offset of the first cached batch.
    pub(crate) fn first_offset(&self) -> Option<i64> {
        self.batches.keys().next().copied()
    }

    /// The cached batches from the one containing `offset` on (`offset` must be at or past
    /// the first cached batch).
    pub(crate) fn starting_at(&self, offset: i64) -> impl Iterator<Item = &CachedBatch> {
        let start = self
            .batches
            .range(..=offset)
            .next_back()
            .map(|(&k, _)| k)
            .unwrap_or(offset);
        self.batches.range(start..).map(|(_, b)| b)
    }

    /// The cached batches with base offsets in `[from, to)`, with their base offsets.
    pub(crate) fn range(&self, from: i64, to: i64) -> impl Iterator<Item = (i64, &CachedBatch)> {
        self.batches.range(from..to).map(|(&k, b)| (k, b))
    }

    /// Drops the batch at `base` if it ends below `written` (written to its file).
    pub(crate) fn evict_if_below(&mut self, base: i64, written: i64) -> Eviction {
        match self.batches.get(&base) {
            None => Eviction::Gone,
            Some(b) if b.header.last_offset() < written => {
                let len = b.len();
                self.batches.remove(&base);
                self.bytes -= len;
                self.shard.sub(len);
                Eviction::Evicted
            }
            Some(_) => Eviction::Unwritten,
        }
    }

    /// Drops every batch with a base offset below `start` (retention moved the log start).
    pub(crate) fn drop_below(&mut self, start: i64) {
        let keep = self.batches.split_off(&start);
        let released: usize = self.batches.values().map(CachedBatch::len).sum();
        self.batches = keep;
        self.bytes -= released;
        self.shard.sub(released);
    }

    /// Drops every batch with a base offset at or past `end` (the log was truncated there).
    pub(crate) fn drop_from(&mut self, end: i64) {
        let gone = self.batches.split_off(&end);
        let released: usize = gone.values().map(CachedBatch::len).sum();
        self.bytes -= released;
        self.shard.sub(released);
    }

    /// Drops everything (the partition is deleted).
    pub(crate) fn clear(&mut self) {
        self.batches.clear();
        self.shard.sub(self.bytes);
        self.bytes = 0;
    }
}

impl Drop for BatchCache {
    fn drop(&mut self) {
        self.shard.sub(self.bytes);
    }
}
